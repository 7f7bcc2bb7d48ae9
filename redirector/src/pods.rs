//! Pod cgroups as kubelet lays them out below the cgroup2 root: which
//! driver named them, where a pod's cgroup is when its computed name is not
//! there, and a watch on the directories where pod cgroups come and go.

use anyhow::Context as _;
use redirector_core::source::kubernetes::CgroupDriver;
use std::{
    collections::{BTreeSet, HashMap},
    path::{Path, PathBuf},
};
use tokio::sync::mpsc;

/// The directories kubelet creates pod cgroups in, relative to its root,
/// per driver: the kubepods root (Guaranteed pods) and its QoS children.
const POD_PARENTS: [&str; 6] = [
    "kubepods.slice",
    "kubepods.slice/kubepods-burstable.slice",
    "kubepods.slice/kubepods-besteffort.slice",
    "kubepods",
    "kubepods/burstable",
    "kubepods/besteffort",
];

/// The driver whose layout is under `root`: `kubepods.slice` (systemd) or
/// `kubepods` (cgroupfs); `None` when neither exists yet.
pub fn detect_driver(root: &Path) -> Option<CgroupDriver> {
    if root.join("kubepods.slice").is_dir() {
        Some(CgroupDriver::Systemd)
    } else if root.join("kubepods").is_dir() {
        Some(CgroupDriver::Cgroupfs)
    } else {
        None
    }
}

/// A pod UID as a cgroup name carries it (`pod<uid>`, with `_` for `-`
/// under systemd), normalised; `None` for a name that is no pod cgroup.
fn uid_in(name: &str) -> Option<String> {
    let name = name.strip_suffix(".slice").unwrap_or(name);
    let at = name.rfind("pod")?;
    let uid = &name[at + 3..];
    (uid.len() >= 32).then(|| uid.replace('_', "-"))
}

/// Pod cgroups found by scanning the pod directories under `root`, by UID:
/// the fallback for a pod whose cgroup is not where its driver and QoS
/// class put it (another driver, a QoS class changed by a resize).
#[derive(Debug, Default)]
pub struct Scan(HashMap<String, PathBuf>);

impl Scan {
    /// Scans the pod directories under `root`.
    pub fn new(root: &Path) -> Self {
        let mut found = HashMap::new();
        for parent in POD_PARENTS {
            let Ok(entries) = std::fs::read_dir(root.join(parent)) else { continue };
            for entry in entries.flatten() {
                let name = entry.file_name();
                if let Some(uid) = name.to_str().and_then(uid_in)
                    && entry.file_type().is_ok_and(|t| t.is_dir())
                {
                    found.insert(uid, Path::new(parent).join(name));
                }
            }
        }
        Self(found)
    }

    /// Where the pod whose computed cgroup is `expected` really is, if found.
    pub fn find(&self, expected: &Path) -> Option<&Path> {
        let uid = uid_in(expected.file_name()?.to_str()?)?;
        self.0.get(&uid).map(PathBuf::as_path)
    }
}

/// Watches the directories pod cgroups are created and removed in, and
/// `root` itself for the kubepods tree appearing. Each event sends `()`;
/// call [`PodCgroups::rewatch`] after one to take up directories created since.
pub struct PodCgroups {
    root: PathBuf,
    watcher: notify::RecommendedWatcher,
    watched: BTreeSet<PathBuf>,
}

impl PodCgroups {
    /// Starts watching under `root`.
    pub fn watch(root: &Path, events: mpsc::UnboundedSender<()>) -> anyhow::Result<Self> {
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            use notify::EventKind;
            if event.is_ok_and(|e| e.need_rescan() || matches!(e.kind, EventKind::Create(_) | EventKind::Remove(_) | EventKind::Other)) {
                let _ = events.send(());
            }
        })
        .context("starting the pod cgroup watcher")?;
        let mut this = Self { root: root.to_path_buf(), watcher, watched: BTreeSet::new() };
        this.rewatch()?;
        Ok(this)
    }

    /// Watches every pod directory that exists now and is not watched yet,
    /// and forgets those removed.
    pub fn rewatch(&mut self) -> anyhow::Result<()> {
        use notify::Watcher as _;
        let wanted: BTreeSet<PathBuf> =
            std::iter::once(self.root.clone()).chain(POD_PARENTS.iter().map(|p| self.root.join(p))).filter(|p| p.is_dir()).collect();
        for gone in self.watched.difference(&wanted).cloned().collect::<Vec<_>>() {
            let _ = self.watcher.unwatch(&gone);
            self.watched.remove(&gone);
        }
        for path in wanted {
            if !self.watched.contains(&path) {
                self.watcher.watch(&path, notify::RecursiveMode::NonRecursive).with_context(|| format!("watching {}", path.display()))?;
                self.watched.insert(path);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both drivers' pod cgroup names give the pod's UID; others none.
    #[test]
    fn pod_cgroup_names_give_the_uid() {
        let uid = "0b5f2a4e-7c1d-4d2b-9d8e-3f6a1b2c3d4e";
        assert_eq!(uid_in(&format!("kubepods-burstable-pod{}.slice", uid.replace('-', "_"))).as_deref(), Some(uid));
        assert_eq!(uid_in(&format!("kubepods-pod{}.slice", uid.replace('-', "_"))).as_deref(), Some(uid));
        assert_eq!(uid_in(&format!("pod{uid}")).as_deref(), Some(uid));
        assert_eq!(uid_in("kubepods-besteffort.slice"), None);
        assert_eq!(uid_in("burstable"), None);
    }

    /// The driver is told by the tree below the root, and a pod whose cgroup
    /// is not where its QoS class puts it is found by its UID.
    #[test]
    fn the_layout_is_detected_and_a_misplaced_pod_found() {
        let root = std::env::temp_dir().join(format!("redirector-pods-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        assert_eq!(detect_driver(&root), None);
        let uid = "0b5f2a4e-7c1d-4d2b-9d8e-3f6a1b2c3d4e";
        let real = format!("kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice", uid.replace('-', "_"));
        std::fs::create_dir_all(root.join(&real)).unwrap();
        assert_eq!(detect_driver(&root), Some(CgroupDriver::Systemd));
        let expected = format!("kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice", uid.replace('-', "_"));
        let scan = Scan::new(&root);
        assert_eq!(scan.find(Path::new(&expected)), Some(Path::new(&real)));
        assert_eq!(scan.find(Path::new("kubepods.slice/kubepods-pod1b5f2a4e_7c1d_4d2b_9d8e_3f6a1b2c3d4e.slice")), None);
        std::fs::create_dir_all(root.join("kubepods/burstable")).unwrap();
        std::fs::remove_dir_all(root.join("kubepods.slice")).unwrap();
        assert_eq!(detect_driver(&root), Some(CgroupDriver::Cgroupfs));
        std::fs::remove_dir_all(&root).unwrap();
    }
}
