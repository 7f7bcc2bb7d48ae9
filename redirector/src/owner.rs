//! One agent per pin directory: an exclusive `flock` on the `--bpffs`
//! directory itself, held for the agent's lifetime.
//!
//! Two agents on one pin directory would each retire the other's generation
//! (unpinning links the other still holds open), leaving hooks attached that
//! neither `status` nor `uninstall` can see. bpffs holds no regular files, so
//! the lock is taken on the directory; the kernel drops it when the process
//! exits, however it exits, so a crashed agent never leaves a stale lock.

use anyhow::{Context as _, bail};
use std::{
    fs::File,
    os::{fd::AsRawFd as _, unix::fs::MetadataExt as _},
    path::Path,
};

/// The held lock; released on drop (or when the process ends).
#[derive(Debug)]
pub struct OwnerLock {
    _dir: File,
}

impl OwnerLock {
    /// Takes the lock on `root` (which must exist) without waiting. Fails,
    /// naming the holder's pid, when another process holds it.
    pub fn acquire(root: &Path) -> anyhow::Result<Self> {
        let dir = File::open(root).with_context(|| format!("--bpffs {}: opening", root.display()))?;
        // SAFETY: flock on an fd this function owns; no memory is passed.
        let rc = unsafe { nix::libc::flock(dir.as_raw_fd(), nix::libc::LOCK_EX | nix::libc::LOCK_NB) };
        if rc == 0 {
            return Ok(Self { _dir: dir });
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(nix::libc::EWOULDBLOCK) {
            return Err(err).with_context(|| format!("--bpffs {}: flock", root.display()));
        }
        let holder = holder(root).map_or_else(|| "another process".to_string(), |pid| format!("pid {pid}"));
        bail!(
            "--bpffs {}: another redirector agent ({holder}) owns this pin directory; stop it first \
             (two agents on one pin directory would retire each other's hooks)",
            root.display()
        )
    }
}

/// The pid holding an flock on `path`, from `/proc/locks` (whose lines read
/// `1: FLOCK  ADVISORY  WRITE <pid> <major>:<minor>:<inode> 0 EOF`).
fn holder(path: &Path) -> Option<u32> {
    let meta = std::fs::metadata(path).ok()?;
    let dev = meta.dev();
    let (major, minor) = (nix::sys::stat::major(dev), nix::sys::stat::minor(dev));
    let id = format!("{major:02x}:{minor:02x}:{}", meta.ino());
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    locks.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.get(1) == Some(&"FLOCK") && fields.get(5) == Some(&id.as_str())).then(|| fields.get(4)?.parse().ok())?
    })
}
