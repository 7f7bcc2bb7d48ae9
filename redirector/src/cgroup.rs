//! cgroup v2 discovery and checks.

use anyhow::{Context as _, bail};
use std::path::{Path, PathBuf};

/// `statfs` magic of a cgroup2 filesystem.
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// The cgroup2 mount point, read from `/proc/mounts` (it is not always
/// `/sys/fs/cgroup`: hybrid hosts mount it at `/sys/fs/cgroup/unified`).
pub fn cgroup2_mount() -> anyhow::Result<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/mounts").context("reading /proc/mounts")?;
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (_source, target, fstype) = (fields.next()?, fields.next()?, fields.next()?);
            (fstype == "cgroup2").then(|| PathBuf::from(unescape_mount_path(target)))
        })
        .next()
        .ok_or_else(|| anyhow::anyhow!("no cgroup2 filesystem is mounted (see /proc/mounts); redirector needs cgroup v2"))
}

/// `/proc/mounts` escapes spaces and a few other bytes as `\ooo`.
fn unescape_mount_path(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() && bytes[i + 1..i + 4].iter().all(|b| (b'0'..=b'7').contains(b)) {
            let code = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(code);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Checks that `dir` is a directory of a cgroup2 filesystem; returns it canonicalised.
pub fn check_cgroup2_dir(dir: &Path) -> anyhow::Result<PathBuf> {
    let canonical = dir
        .canonicalize()
        .with_context(|| format!("--cgroup {}: cannot open", dir.display()))?;
    if !canonical.is_dir() {
        bail!("--cgroup {}: not a directory", dir.display());
    }
    let fs = nix::sys::statfs::statfs(&canonical)
        .with_context(|| format!("--cgroup {}: statfs", dir.display()))?;
    if fs.filesystem_type().0 as i64 != CGROUP2_SUPER_MAGIC {
        bail!(
            "--cgroup {}: not a cgroup2 directory (cgroup2 is mounted at {})",
            dir.display(),
            cgroup2_mount().map(|p| p.display().to_string()).unwrap_or_else(|e| e.to_string())
        );
    }
    Ok(canonical)
}

/// The level of the cgroup2 directory `dir` in the whole hierarchy (the
/// root is 0), as the kernel counts it for ancestor lookups. Counted by
/// walking up to the directory without `cgroup.type` (only the root has
/// none), so it holds through a bind mount of the host's hierarchy in a
/// container with its own cgroup namespace, where mount points and
/// `/proc/self/cgroup` are relative to the namespace.
pub fn level(dir: &Path) -> anyhow::Result<u32> {
    let mut at = dir.to_path_buf();
    let mut level = 0;
    while at.join("cgroup.type").exists() {
        match at.parent() {
            Some(parent) if nix::sys::statfs::statfs(parent).is_ok_and(|fs| fs.filesystem_type() == nix::sys::statfs::FsType(CGROUP2_SUPER_MAGIC as _)) => {
                at = parent.to_path_buf();
                level += 1;
            }
            _ => bail!(
                "--cgroup {}: the cgroup2 root is not visible above it (a cgroup namespace, or a bind mount of a child cgroup), so its level is unknown; pass a directory of a mount of the host's whole cgroup2 hierarchy",
                dir.display()
            ),
        }
    }
    Ok(level)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescapes_octal_sequences() {
        assert_eq!(unescape_mount_path(r"/a\040b"), "/a b");
        assert_eq!(unescape_mount_path("/sys/fs/cgroup/unified"), "/sys/fs/cgroup/unified");
        assert_eq!(unescape_mount_path(r"/x\\"), r"/x\\");
    }
}
