//! Throwaway child cgroups for the bench, the kernel tests and the demo.

use anyhow::Context as _;
use std::path::{Path, PathBuf};

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
        let root = crate::cgroup::cgroup2_mount()?;
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
