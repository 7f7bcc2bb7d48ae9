//! The kernel side: load the BPF object, attach its hooks to one cgroup, pin
//! and write the route maps. Thin by design: everything it writes was
//! computed by `compile`.

use crate::compile::{Diff, Tables};
use anyhow::{Context as _, anyhow, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, HashOfMaps, Map, MapData},
    programs::{CgroupAttachMode, CgroupSockAddr},
};
use redirector_common::{
    ROUTES_MAP, SETTINGS_MAP, ServiceKey, Settings, TableEntry, WORKLOADS_MAP,
};
use std::collections::BTreeMap;
use std::{
    fs::File,
    path::{Path, PathBuf},
};

/// `statfs` magic of bpffs.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
/// `BPF_F_INNER_MAP`: inner arrays of one outer map may differ in size.
const BPF_F_INNER_MAP: u32 = 1 << 12;
/// `BPF_MAP_TYPE_ARRAY`.
const BPF_MAP_TYPE_ARRAY: u32 = 2;

/// The hooks, by program name. All four are attached to the same cgroup.
pub const PROGRAMS: [&str; 4] = ["connect4", "connect6", "getpeername4", "getpeername6"];

/// The BPF object built from `redirector-ebpf`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/redirector"));

/// Reads the BPF programs' log records (aya-log). Must outlive the programs'
/// loading: dropping it closes the log map.
pub type BpfLogger = aya_log::EbpfLogger<&'static dyn log::Log>;

/// The loaded programs and maps, and what has been written to them.
pub struct Datapath {
    ebpf: Ebpf,
    pin_dir: PathBuf,
    created_pin_dir: bool,
    installed: Tables,
    workloads: BTreeMap<u64, u32>,
    attached_to: Option<PathBuf>,
}

/// What the kernel should hold: route tables, workload cgroup ids with their
/// classes, and the settings of the class search.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Desired {
    /// Route tables.
    pub tables: Tables,
    /// cgroup id -> class (only classes other than the base one).
    pub workloads: BTreeMap<u64, u32>,
    /// Where workload cgroups sit.
    pub settings: Settings,
}

impl Datapath {
    /// Loads the programs into the kernel (not yet attached) and pins the
    /// route map under `pin_dir` on a bpffs. Returns the log reader too.
    pub fn load(pin_dir: &Path) -> anyhow::Result<(Self, BpfLogger)> {
        let created_pin_dir = prepare_pin_dir(pin_dir)?;
        let routes_pin = pin_dir.join("routes");
        if routes_pin.exists() {
            bail!(
                "{} already exists: another redirector agent uses --bpffs {} (or one was killed; remove the pin after checking)",
                routes_pin.display(),
                pin_dir.display()
            );
        }
        // Debug records (e.g. each refused connect) stay off in the kernel.
        let log_level: u8 = 3; // aya_log_common::Level::Info
        let mut ebpf = EbpfLoader::new()
            .override_global("AYA_LOG_LEVEL", &log_level, false)
            .load(OBJECT)
            .context("loading the BPF object")?;
        let logger = aya_log::EbpfLogger::init(&mut ebpf).context("initialising BPF logs")?;
        for name in PROGRAMS {
            let program: &mut CgroupSockAddr = ebpf
                .program_mut(name)
                .ok_or_else(|| anyhow!("BPF program {name} missing from the object"))?
                .try_into()?;
            program.load().with_context(|| format!("loading BPF program {name} (verifier)"))?;
        }
        let routes = ebpf.map(ROUTES_MAP).ok_or_else(|| anyhow!("map {ROUTES_MAP} missing"))?;
        routes
            .pin(&routes_pin)
            .with_context(|| format!("pinning {ROUTES_MAP} at {}", routes_pin.display()))?;
        Ok((
            Self {
                ebpf,
                pin_dir: pin_dir.to_path_buf(),
                created_pin_dir,
                installed: Tables::new(),
                workloads: BTreeMap::new(),
                attached_to: None,
            },
            logger,
        ))
    }

    /// Attaches every hook to the cgroup directory `cgroup` (and so to its
    /// descendants), alongside any programs others attached there.
    pub fn attach(&mut self, cgroup: &Path) -> anyhow::Result<()> {
        let file = File::open(cgroup).with_context(|| format!("opening cgroup {}", cgroup.display()))?;
        for name in PROGRAMS {
            let program: &mut CgroupSockAddr = self
                .ebpf
                .program_mut(name)
                .ok_or_else(|| anyhow!("BPF program {name} missing"))?
                .try_into()?;
            // aya attaches with a bpf_link (kernel >= 5.7). Cgroup links always
            // coexist with other programs and take no attach flags, so the
            // mode must be `Single` (flags 0); `AllowMultiple` is EINVAL here.
            program
                .attach(&file, CgroupAttachMode::Single)
                .with_context(|| format!("attaching {name} to {}", cgroup.display()))?;
        }
        self.attached_to = Some(cgroup.to_path_buf());
        Ok(())
    }

    /// Makes the kernel hold `desired`, writing only what changed, in an
    /// order that never lets a connect see a dangling reference: new and
    /// changed tables first (each complete before its `ROUTES` entry is
    /// swapped), then workload classes and settings, then removals.
    pub fn apply(&mut self, desired: &Desired) -> anyhow::Result<Diff> {
        let diff = Diff::between(&self.installed, &desired.tables);
        {
            let map = self.ebpf.map_mut(ROUTES_MAP).ok_or_else(|| anyhow!("map {ROUTES_MAP} missing"))?;
            let mut routes: HashOfMaps<&mut MapData, ServiceKey> = map.try_into()?;
            for key in &diff.upsert {
                let table = &desired.tables[key];
                let inner = new_table_map(&table.entries())?;
                routes.insert(key, &inner, 0).context("writing a route")?;
                self.installed.insert(*key, table.clone());
            }
        }
        {
            let map = self.ebpf.map_mut(WORKLOADS_MAP).ok_or_else(|| anyhow!("map {WORKLOADS_MAP} missing"))?;
            let mut workloads: HashMap<&mut MapData, u64, u32> = map.try_into()?;
            for (id, class) in &desired.workloads {
                if self.workloads.get(id) != Some(class) {
                    workloads.insert(id, class, 0).context("writing a workload")?;
                }
            }
        }
        {
            let map = self.ebpf.map_mut(SETTINGS_MAP).ok_or_else(|| anyhow!("map {SETTINGS_MAP} missing"))?;
            let mut settings: Array<&mut MapData, Settings> = map.try_into()?;
            settings.set(0, desired.settings, 0).context("writing settings")?;
        }
        {
            let map = self.ebpf.map_mut(WORKLOADS_MAP).ok_or_else(|| anyhow!("map {WORKLOADS_MAP} missing"))?;
            let mut workloads: HashMap<&mut MapData, u64, u32> = map.try_into()?;
            for id in self.workloads.keys().filter(|id| !desired.workloads.contains_key(id)) {
                workloads.remove(id).context("removing a workload")?;
            }
            self.workloads = desired.workloads.clone();
        }
        let map = self.ebpf.map_mut(ROUTES_MAP).ok_or_else(|| anyhow!("map {ROUTES_MAP} missing"))?;
        let mut routes: HashOfMaps<&mut MapData, ServiceKey> = map.try_into()?;
        for key in &diff.remove {
            routes.remove(key).context("removing a route")?;
            self.installed.remove(key);
        }
        Ok(diff)
    }

    /// The tables currently in the kernel.
    pub fn installed(&self) -> &Tables {
        &self.installed
    }

    /// The cgroup the hooks are attached to.
    pub fn attached_to(&self) -> Option<&Path> {
        self.attached_to.as_deref()
    }

    /// Detaches the hooks and removes the pins this datapath created.
    pub fn shutdown(self) -> anyhow::Result<()> {
        // Dropping does the work; this spells out that it happened.
        drop(self);
        Ok(())
    }
}

impl Drop for Datapath {
    fn drop(&mut self) {
        // Links are bpf_link fds owned by `ebpf`: dropping it detaches the
        // hooks. The pin keeps the route map alive, so remove it as well.
        let _ = std::fs::remove_file(self.pin_dir.join("routes"));
        if self.created_pin_dir {
            let _ = std::fs::remove_dir(&self.pin_dir);
        }
    }
}

/// Creates an inner route table sized exactly to `entries` and fills it.
fn new_table_map(entries: &[TableEntry]) -> anyhow::Result<MapData> {
    let len = u32::try_from(entries.len()).context("table too large")?;
    let obj = aya_obj::Map::new_from_params(
        BPF_MAP_TYPE_ARRAY,
        size_of::<u32>() as u32,
        size_of::<TableEntry>() as u32,
        len,
        BPF_F_INNER_MAP,
    );
    let data = MapData::create(obj, "rdr_table", None).context("creating a route table map")?;
    let mut map = Map::Array(data);
    {
        let mut array: Array<&mut MapData, TableEntry> = (&mut map).try_into()?;
        for (i, entry) in entries.iter().enumerate() {
            array.set(i as u32, entry, 0).context("writing a route table")?;
        }
    }
    match map {
        Map::Array(data) => Ok(data),
        _ => unreachable!("constructed as Map::Array above"),
    }
}

/// Ensures `dir` exists on a bpffs with root-only permissions; returns whether it was created.
fn prepare_pin_dir(dir: &Path) -> anyhow::Result<bool> {
    let parent = dir.parent().unwrap_or(Path::new("/"));
    mount_default_bpffs_if_needed(parent)?;
    if !is_bpffs(parent).with_context(|| format!("--bpffs {}", dir.display()))? {
        bail!("--bpffs {}: {} is not on a bpf filesystem (mount -t bpf bpf /sys/fs/bpf)", dir.display(), parent.display());
    }
    if dir.exists() {
        return Ok(false);
    }
    std::fs::create_dir(dir).with_context(|| format!("creating {}", dir.display()))?;
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    Ok(true)
}

/// Mounts bpffs at `/sys/fs/bpf` when that is where pins go and nothing is mounted there.
fn mount_default_bpffs_if_needed(parent: &Path) -> anyhow::Result<()> {
    if parent.starts_with(DEFAULT_BPFFS) {
        ensure_bpffs_mounted()?;
    }
    Ok(())
}

/// Where bpffs is conventionally mounted.
pub const DEFAULT_BPFFS: &str = "/sys/fs/bpf";

/// Whether `path` is on a bpf filesystem.
pub fn is_bpffs(path: &Path) -> anyhow::Result<bool> {
    let fs = nix::sys::statfs::statfs(path).with_context(|| format!("statfs {}", path.display()))?;
    Ok(fs.filesystem_type().0 as i64 == BPF_FS_MAGIC)
}

/// Mounts bpffs at [`DEFAULT_BPFFS`] unless one is mounted there already.
pub fn ensure_bpffs_mounted() -> anyhow::Result<()> {
    let path = Path::new(DEFAULT_BPFFS);
    if is_bpffs(path)? {
        return Ok(());
    }
    nix::mount::mount(Some("bpf"), path, Some("bpf"), nix::mount::MsFlags::empty(), None::<&str>)
        .with_context(|| format!("mounting bpffs at {DEFAULT_BPFFS}"))
}
