//! cgroup v2 discovery and checks, and throwaway child cgroups for tests and demos.

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

/// A child cgroup this process created; removed on drop after its processes
/// are moved back to the parent. For tests and the demo: never use it to
/// wrap a cgroup you did not create.
#[derive(Debug)]
pub struct ChildCgroup {
    path: PathBuf,
}

impl ChildCgroup {
    /// Creates `parent/name`, failing if it already exists.
    pub fn create(parent: &Path, name: &str) -> anyhow::Result<Self> {
        let path = parent.join(name);
        std::fs::create_dir(&path).with_context(|| format!("creating cgroup {}", path.display()))?;
        Ok(Self { path })
    }

    /// Creates a uniquely named child of the cgroup2 mount root.
    pub fn create_unique(prefix: &str) -> anyhow::Result<Self> {
        let root = cgroup2_mount()?;
        let name = format!("{prefix}-{}-{}", std::process::id(), unique_suffix());
        Self::create(&root, &name)
    }

    /// The cgroup directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Moves process `pid` into this cgroup.
    pub fn add_process(&self, pid: u32) -> anyhow::Result<()> {
        std::fs::write(self.path.join("cgroup.procs"), pid.to_string())
            .with_context(|| format!("moving pid {pid} into {}", self.path.display()))
    }
}

impl Drop for ChildCgroup {
    fn drop(&mut self) {
        // Move any process still inside back to the parent, then remove.
        if let (Ok(procs), Some(parent)) = (std::fs::read_to_string(self.path.join("cgroup.procs")), self.path.parent()) {
            for pid in procs.lines() {
                let _ = std::fs::write(parent.join("cgroup.procs"), pid);
            }
        }
        for _ in 0..50 {
            if std::fs::remove_dir(&self.path).is_ok() || !self.path.exists() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        eprintln!("warning: could not remove cgroup {}", self.path.display());
    }
}

fn unique_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0);
    (nanos << 16) | NEXT.fetch_add(1, Ordering::Relaxed)
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
