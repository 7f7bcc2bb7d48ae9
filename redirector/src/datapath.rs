//! The kernel side: load the BPF object, attach its hooks to one cgroup, pin
//! and write the maps. Thin by design: everything it writes was computed by
//! `compile`.
//!
//! # Pins and restarts
//!
//! Under the pin directory (default `/sys/fs/bpf/redirector`, mode 0700):
//!
//! ```text
//! layout-v<N>/origins          ORIGINS, kept across restarts (getpeername of old sockets)
//! layout-v<N>/gen-<id>/        one running generation of the datapath:
//!     link-connect4 ...        the pinned cgroup links (keep the hooks attached)
//!     routes tables workloads settings counters   its maps
//! ```
//!
//! Links are pinned, so the hooks stay attached and the maps stay in force
//! when the agent exits or is killed. A starting agent loads a fresh
//! generation, fills it, attaches it next to the running one (both give the
//! same answers), and only then detaches and unpins every other generation
//! and every other layout: there is no moment without a hook. `uninstall`
//! removes all of it.
//!
//! One agent owns a pin directory at a time ([`OwnerLock`]), and an agent
//! refuses a cgroup where another redirector datapath's hooks already run
//! (on it or on an ancestor): both would rewrite the same connects.

use crate::{
    kernel::{self, MappedArray},
    owner::OwnerLock,
};
use anyhow::{Context as _, anyhow, bail};
use redirector_core::{
    compile::{Diff, Generation, Table, Transition},
    filter::ServiceFilter,
};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData},
    programs::{
        CgroupAttachMode, CgroupSockAddr,
        links::{FdLink, PinnedLink},
    },
};
use redirector_common::{
    AGENT_TGID_GLOBAL, BASE_CLASS, CLASS_ROUTED, COUNTERS_MAP, FILTER_MAP, FILTER_WORDS, LAYOUT_VERSION, MAX_ROUTES, PASS_THROUGH, MAX_TABLE_CHUNKS, MAX_WORKLOADS, ORIGINS_MAP, ROUTES_MAP, Route,
    SETTINGS_MAP, ServiceKey, Settings, TABLE_GRACE_MS, TABLES_MAP, TableChunk, TableHeader, TableKey, WORKLOADS_MAP,
};
use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    fs::File,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

/// `statfs` magic of bpffs.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// The hooks, by program name, all `cgroup_sock_addr` programs attached to
/// the same cgroup. There is no release hook: `ORIGINS` needs no delete at
/// close (see redirector-common).
pub const PROGRAMS: [&str; 4] = ["connect4", "connect6", "getpeername4", "getpeername6"];

/// Maps pinned in each generation directory, by their pin file name.
const GENERATION_MAPS: [(&str, &str); 6] = [
    (FILTER_MAP, "filter"),
    (ROUTES_MAP, "routes"),
    (TABLES_MAP, "tables"),
    (WORKLOADS_MAP, "workloads"),
    (SETTINGS_MAP, "settings"),
    (COUNTERS_MAP, "counters"),
];

/// Keys per batched `ROUTES` write (and their tables' chunks per `TABLES`
/// write): a slice's values take about 1 MiB.
const WRITE_SLICE: usize = 4096;

/// The `ROUTES` value of a destination only classes route: the base class
/// connects to it unchanged. It names no table.
const MARKER: Route = Route {
    table: 0,
    header: TableHeader { backend_count: 0, backend_reject: 0, total_weight: 0, weight_reject: 0, counters: 0, flags: PASS_THROUGH | CLASS_ROUTED },
    first: TableChunk::ZERO,
};

/// The BPF object built from `redirector-ebpf`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/redirector"));

/// Reads the BPF programs' log records (aya-log). Must outlive the programs'
/// loading: dropping it closes the log map.
pub type BpfLogger = aya_log::EbpfLogger<&'static dyn log::Log>;

/// The directory of this build's pin layout under the pin root.
pub fn layout_dir(root: &Path) -> PathBuf {
    root.join(format!("layout-v{LAYOUT_VERSION}"))
}

/// The `ROUTES` entries an apply wrote: key -> table id and the flags added
/// to its header ([`CLASS_ROUTED`]).
type Written = BTreeMap<ServiceKey, (u32, u32)>;

/// One write of an apply, as what undoes it.
enum Undo {
    /// `ROUTES` entry and its value before (none: it did not exist).
    Route(ServiceKey, Option<Box<Route>>),
    /// `WORKLOADS` entry and its class before.
    Workload(u64, Option<u32>),
    /// The settings before (none: never written).
    Settings(Option<Settings>),
    /// A table written under a fresh id, and its length in chunks.
    Table(u32, u32),
}

/// One route the kernel holds: what retiring its table needs (the tables
/// themselves are the compiler's; undoing a write reads the value back).
#[derive(Clone, Copy, Debug)]
struct Installed {
    table: u32,
    /// Its chunks in `TABLES` (all but the first).
    chunks: u32,
}

/// The loaded programs and maps, and what has been written to them.
pub struct Datapath {
    ebpf: Ebpf,
    root: PathBuf,
    generation_dir: PathBuf,
    /// Every route in `ROUTES`: its table's id, header and length.
    installed: BTreeMap<ServiceKey, Installed>,
    /// Last table id handed out.
    last_table: u32,
    /// Replaced tables: when they were replaced, their id and length.
    retired: VecDeque<(Instant, u32, u32)>,
    /// `ROUTES` entries of classes that went away, deleted after the grace
    /// period: when, the key, and the id and length of the table it names.
    retired_routes: VecDeque<(Instant, ServiceKey, u32, u32)>,
    /// `COUNTERS` slots no table names any more, zeroed after twice the grace
    /// period (a retired route entry and then its table may still be read).
    retired_counters: VecDeque<(Instant, Vec<u32>)>,
    /// `TABLES` chunks of the installed tables.
    table_chunks: usize,
    /// `TABLES` chunks of retired tables not deleted yet.
    retired_chunks: usize,
    workloads: BTreeMap<u64, u32>,
    settings: Option<Settings>,
    /// Base keys holding a [`PASS_THROUGH`] entry: destinations that only
    /// classes route (the hooks look under the base class first).
    markers: BTreeSet<ServiceKey>,
    /// Base keys of routes (not markers) flagged [`CLASS_ROUTED`]: some
    /// class has an entry of its own for the destination.
    flagged: BTreeSet<ServiceKey>,
    /// The destinations of the base keys in `ROUTES`, as bits of `FILTER`.
    filter: ServiceFilter,
    /// `FILTER`, mapped for writing.
    filter_words: MappedArray<u64>,
    links: Vec<PinnedLink>,
    _owner: OwnerLock,
}

/// What the kernel should hold: route tables, workload cgroup ids with their
/// classes, and the settings of the class search.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Desired {
    /// Route tables with stable class ids, and the bridge entries of the switch.
    pub routes: Generation,
    /// The order of the writes from the tables in force to `routes`.
    pub transition: Transition,
    /// cgroup id -> class (only classes other than the base one).
    pub workloads: BTreeMap<u64, u32>,
    /// cgroup id -> what is bound to it, for `status` (not written to the kernel).
    pub names: BTreeMap<u64, String>,
    /// Where workload cgroups sit.
    pub settings: Settings,
}

impl Datapath {
    /// Loads a new generation of the programs into the kernel (not yet
    /// attached) under the pin root `root` on a bpffs. Returns the log reader too.
    pub fn load(root: &Path) -> anyhow::Result<(Self, BpfLogger)> {
        prepare_dir(root, true)?;
        // Before anything under `root` is touched: a second agent stops here.
        let owner = OwnerLock::acquire(root)?;
        let layout = layout_dir(root);
        prepare_dir(&layout, false)?;
        let generation_dir = layout.join(format!(
            "gen-{}-{}",
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0),
            std::process::id()
        ));
        // Debug records (e.g. each refused connect) stay off in the kernel.
        let log_level: u8 = 3; // aya_log_common::Level::Info
        let origins = layout.join("origins");
        let mut ebpf = EbpfLoader::new()
            .map_pin_path(ORIGINS_MAP, origins.as_path())
            .override_global("AYA_LOG_LEVEL", &log_level, false)
            .override_global(AGENT_TGID_GLOBAL, &std::process::id(), true)
            .load(OBJECT)
            .context("loading the BPF object")?;
        let logger = aya_log::EbpfLogger::init(&mut ebpf).context("initialising BPF logs")?;
        for name in PROGRAMS {
            let program = ebpf.program_mut(name).ok_or_else(|| anyhow!("BPF program {name} missing from the object"))?;
            <&mut CgroupSockAddr>::try_from(program)?.load().with_context(|| format!("loading BPF program {name} (verifier)"))?;
        }
        let Some(aya::maps::Map::Array(filter_map)) = ebpf.map(FILTER_MAP) else {
            bail!("array map {FILTER_MAP} missing from the BPF object");
        };
        let filter_words = MappedArray::writable(filter_map, FILTER_WORDS).with_context(|| format!("mapping {FILTER_MAP}"))?;
        Ok((
            Self {
                ebpf,
                root: root.to_path_buf(),
                generation_dir,
                installed: BTreeMap::new(),
                last_table: 0,
                retired: VecDeque::new(),
                retired_routes: VecDeque::new(),
                retired_counters: VecDeque::new(),
                table_chunks: 0,
                retired_chunks: 0,
                workloads: BTreeMap::new(),
                settings: None,
                markers: BTreeSet::new(),
                flagged: BTreeSet::new(),
                filter: ServiceFilter::new(),
                filter_words,
                links: Vec::new(),
                _owner: owner,
            },
            logger,
        ))
    }

    /// Attaches every hook to the cgroup directory `cgroup` (and so to its
    /// descendants), alongside any programs others attached there; pins the
    /// links and maps of this generation; then retires every older
    /// generation and layout. Call after the first [`Datapath::apply`].
    pub fn attach(&mut self, cgroup: &Path) -> anyhow::Result<()> {
        std::fs::create_dir(&self.generation_dir)
            .with_context(|| format!("creating {}", self.generation_dir.display()))?;
        for (map, pin) in GENERATION_MAPS {
            let path = self.generation_dir.join(pin);
            self.ebpf
                .map(map)
                .ok_or_else(|| anyhow!("map {map} missing"))?
                .pin(&path)
                .with_context(|| format!("pinning {map} at {}", path.display()))?;
        }
        self.attach_links(cgroup)?;
        retire(&self.root, Some(&self.generation_dir))?;
        Ok(())
    }

    /// Attaches this generation's hooks again, to `cgroup` as it is now:
    /// for a cgroup directory that was removed (its hooks went with it) and
    /// created again. The old links are unpinned first.
    pub fn reattach(&mut self, cgroup: &Path) -> anyhow::Result<()> {
        for link in self.links.drain(..) {
            drop(link.unpin());
        }
        self.attach_links(cgroup)
    }

    fn attach_links(&mut self, cgroup: &Path) -> anyhow::Result<()> {
        let file = File::open(cgroup).with_context(|| format!("opening cgroup {}", cgroup.display()))?;
        for name in PROGRAMS {
            let program = self.ebpf.program_mut(name).ok_or_else(|| anyhow!("BPF program {name} missing"))?;
            // aya attaches with a bpf_link (kernel >= 5.7). Cgroup links always
            // coexist with other programs and take no attach flags, so the
            // mode must be `Single` (flags 0); `AllowMultiple` is EINVAL here.
            let program = <&mut CgroupSockAddr>::try_from(program)?;
            let id = program
                .attach(&file, CgroupAttachMode::Single)
                .with_context(|| format!("attaching {name} to {}", cgroup.display()))?;
            let link: FdLink = program.take_link(id)?.try_into()?;
            let path = self.generation_dir.join(format!("link-{name}"));
            self.links.push(link.pin(&path).with_context(|| format!("pinning link {}", path.display()))?);
        }
        Ok(())
    }

    /// Redirector datapaths other than this agent's whose connect4 hook is
    /// attached to `cgroup` or one of its ancestors, described for an error
    /// message. Generations of this pin directory (a restart) do not count.
    pub fn foreign_hooks(&self, cgroup: &Path) -> anyhow::Result<Vec<String>> {
        let own = own_origins(&self.root);
        let programs = redirector_programs();
        let mount = crate::cgroup::cgroup2_mount()?;
        let mut found = Vec::new();
        let mut dir = Some(cgroup);
        while let Some(d) = dir.filter(|d| d.starts_with(&mount)) {
            for id in kernel::attached_programs(d, kernel::ATTACH_CONNECT4)? {
                if let Some(origins) = programs.get(&id).filter(|o| !own.contains(o)) {
                    found.push(format!("connect4 program {id} (ORIGINS map {origins}) on {}", d.display()));
                }
            }
            dir = d.parent();
        }
        Ok(found)
    }

    /// Makes the kernel hold `desired`, writing only what changed, in the
    /// order of [`Transition`]: class entries (each table complete before
    /// its `ROUTES` entry is swapped), workloads switching to a class, base
    /// entries, workloads switching to the base class, removals; entries of
    /// classes that went away are deleted after the grace period.
    ///
    /// All or nothing: the maps' capacity is checked first, and if any write
    /// still fails every write before it is undone (in reverse order, so each
    /// step back is as safe as the step forward), and the previous generation
    /// stays fully in force.
    pub fn apply(&mut self, desired: &Desired) -> anyhow::Result<Diff> {
        let next = &desired.routes;
        let t = &desired.transition;
        self.check_capacity(desired, t)?;
        let upsert: Vec<ServiceKey> = t.classes.iter().chain(&t.base).copied().filter(|k| next.tables.contains_key(k)).collect();
        let diff = Diff {
            unchanged: next.routes.saturating_sub(upsert.len()),
            upsert,
            remove: t.remove.iter().chain(&t.retire).copied().filter(|k| self.installed.contains_key(k)).collect(),
        };
        let mut undo = Vec::new();
        let result = self.write(desired, t, &mut undo);
        // Every ROUTES write and delete left an undo step: their base keys
        // are the only ones whose filter bits may have to be cleared.
        let touched: Vec<ServiceKey> = undo.iter().filter_map(|u| if let Undo::Route(k, _) = u { Some(*k) } else { None }).collect();
        match result {
            Ok((written, markers, flagged)) => {
                self.commit(desired, t, written);
                self.markers = markers;
                self.flagged = flagged.into_iter().filter(|k| self.installed.contains_key(k)).collect();
                self.settle_filter(&touched);
                Ok(diff)
            }
            Err(e) => {
                let undone = self.undo(undo);
                if undone.is_ok() {
                    self.settle_filter(&touched);
                }
                Err(match undone {
                    Ok(()) => e.context("nothing of this generation was kept"),
                    Err(u) => e.context(format!("and undoing the writes failed too: {u:#}")),
                })
            }
        }
    }

    /// Fails, before anything is written, when the maps cannot hold the
    /// transition: the new entries come before the old ones go.
    fn check_capacity(&self, desired: &Desired, t: &Transition) -> anyhow::Result<()> {
        let next = &desired.routes;
        let written = || t.classes.iter().chain(&t.base);
        let new_keys = written().filter(|k| !self.installed.contains_key(k)).count();
        let routes = self.installed.len() + new_keys + self.retired_routes.len() + self.markers.len();
        let new_chunks: usize = written().filter_map(|k| Transition::table(next, k)).map(|t| t.chunk_count() as usize - 1).sum();
        let chunks = self.table_chunks + self.retired_chunks + new_chunks;
        let workloads = self.workloads.len() + desired.workloads.keys().filter(|k| !self.workloads.contains_key(k)).count();
        for (map, need, max, what) in [
            (ROUTES_MAP, routes, MAX_ROUTES, "entries"),
            (TABLES_MAP, chunks, MAX_TABLE_CHUNKS, "table chunks"),
            (WORKLOADS_MAP, workloads, MAX_WORKLOADS, "entries"),
        ] {
            if need > max as usize {
                bail!("{map} full: this change needs {need} {what} at once (old and new side by side), the map holds {max}");
            }
        }
        Ok(())
    }

    /// The writes of [`Datapath::apply`], each recorded in `undo` before the
    /// next. Returns the new table id of every key written, and the markers
    /// and flagged base routes in force after it.
    fn write(&mut self, desired: &Desired, t: &Transition, undo: &mut Vec<Undo>) -> anyhow::Result<(Written, BTreeSet<ServiceKey>, BTreeSet<ServiceKey>)> {
        let next = &desired.routes;
        let mut written = BTreeMap::new();
        self.write_routes(&t.classes, |key| Transition::table(next, key).expect("a written key has a table"), |_| 0, &mut written, undo, next)?;
        // Before any workload moves: every destination a class has an entry
        // for (new ones included) is flagged on its base route, so the hooks
        // look the class up.
        let routed = self.class_routed(&written, &[]);
        let mut flagged = self.flagged.clone();
        // (A base route about to change is flagged too: it changes after the switch.)
        let to_flag: Vec<ServiceKey> = routed.iter().filter(|k| self.installed.contains_key(k) && !flagged.contains(k)).copied().collect();
        for key in to_flag {
            self.set_class_flag(&key, true, &mut written, undo, next)?;
            flagged.insert(key);
        }
        let to_class: Vec<(u64, u32)> = desired.workloads.iter().filter(|(id, class)| self.workloads.get(id) != Some(class)).map(|(&i, &c)| (i, c)).collect();
        for (id, class) in to_class {
            undo.push(Undo::Workload(id, self.workloads.get(&id).copied()));
            self.map::<u64, u32>(WORKLOADS_MAP)?.insert(id, class, 0).context("writing a workload")?;
        }
        if self.settings != Some(desired.settings) {
            undo.push(Undo::Settings(self.settings));
            self.write_settings(desired.settings)?;
        }
        self.write_routes(&t.base, |key| &next.tables[key], |key| if routed.contains(key) { CLASS_ROUTED } else { 0 }, &mut written, undo, next)?;
        flagged.extend(t.base.iter().filter(|k| routed.contains(k)));
        // What classes route once the removals are done: it decides the
        // markers and the flags to clear.
        let still = self.class_routed(&written, &t.remove);
        // Markers before removals: a base route that goes while classes still
        // route its destination is overwritten by its marker, not deleted.
        let markers = self.needed_markers(&still, &written, &t.remove);
        let new_markers: Vec<ServiceKey> = markers.difference(&self.markers).copied().collect();
        for key in new_markers {
            undo.push(Undo::Route(key, self.value_before(&key, &written, next)?));
            self.cover(&key);
            self.map::<ServiceKey, Route>(ROUTES_MAP)?.insert(key, MARKER, 0).context("writing a pass-through entry")?;
        }
        let to_base: Vec<(u64, u32)> = self.workloads.iter().filter(|(id, _)| !desired.workloads.contains_key(id)).map(|(&i, &c)| (i, c)).collect();
        for (id, class) in to_base {
            undo.push(Undo::Workload(id, Some(class)));
            self.map::<u64, u32>(WORKLOADS_MAP)?.remove(&id).context("removing a workload")?;
        }
        for key in &t.remove {
            if markers.contains(key) {
                continue;
            }
            if let Some(before) = self.value_before(key, &written, next)? {
                undo.push(Undo::Route(*key, Some(before)));
                self.map::<ServiceKey, Route>(ROUTES_MAP)?.remove(key).context("removing a route")?;
            }
        }
        // Flags no class entry needs any more (entries of classes that went
        // away count until they are deleted).
        let removed: BTreeSet<&ServiceKey> = t.remove.iter().collect();
        let unflag: Vec<ServiceKey> = flagged.iter().filter(|k| !still.contains(k) && !markers.contains(k) && !removed.contains(k)).copied().collect();
        for key in unflag {
            self.set_class_flag(&key, false, &mut written, undo, next)?;
            flagged.remove(&key);
        }
        // Markers no class needs any more, unless a base route took their place.
        let stale: Vec<ServiceKey> = self.markers.difference(&markers).filter(|k| !written.contains_key(k)).copied().collect();
        for key in stale {
            undo.push(Undo::Route(key, Some(Box::new(MARKER))));
            self.map::<ServiceKey, Route>(ROUTES_MAP)?.remove(&key).context("removing a pass-through entry")?;
        }
        Ok((written, markers, flagged))
    }

    /// Rewrites the base route of `key` with [`CLASS_ROUTED`] set or clear
    /// (same table: only the flag changes, in one update).
    fn set_class_flag(&mut self, key: &ServiceKey, on: bool, written: &mut Written, undo: &mut Vec<Undo>, next: &Generation) -> anyhow::Result<()> {
        let before = self.value_before(key, written, next)?.ok_or_else(|| anyhow!("no base route to flag"))?;
        let mut route = *before;
        if on {
            route.header.flags |= CLASS_ROUTED;
        } else {
            route.header.flags &= !CLASS_ROUTED;
        }
        undo.push(Undo::Route(*key, Some(before)));
        self.map::<ServiceKey, Route>(ROUTES_MAP)?.insert(key, route, 0).context("flagging a route")?;
        if let Some(entry) = written.get_mut(key) {
            entry.1 = route.header.flags & CLASS_ROUTED;
        }
        Ok(())
    }

    /// The base keys that need a marker once `written` is in and `removed`
    /// is out: of the destinations classes route then (`routed`, from
    /// [`Datapath::class_routed`] with the same arguments), those without a
    /// base route of their own.
    fn needed_markers(&self, routed: &BTreeSet<ServiceKey>, written: &Written, removed: &[ServiceKey]) -> BTreeSet<ServiceKey> {
        let removed: BTreeSet<&ServiceKey> = removed.iter().collect();
        routed.iter().filter(|k| !(self.installed.contains_key(k) || written.contains_key(k)) || removed.contains(k)).copied().collect()
    }

    /// The base keys of the destinations some class has an entry for once
    /// `written` is in and `removed` is out (entries of classes that went
    /// away count until they are deleted).
    fn class_routed(&self, written: &Written, removed: &[ServiceKey]) -> BTreeSet<ServiceKey> {
        let removed: BTreeSet<&ServiceKey> = removed.iter().collect();
        // Keys order by class first: the class keys are one range after the
        // base keys, so a reload of 100,000 base routes walks none of them.
        let classes = ServiceKey { class: BASE_CLASS + 1, addr: [0; 4], port: 0, pad: 0 }..;
        let class_keys = self.installed.range(classes.clone()).map(|(k, _)| k).chain(written.range(classes).map(|(k, _)| k)).filter(|k| !removed.contains(k));
        class_keys
            .chain(self.retired_routes.iter().map(|(_, k, _, _)| k))
            .map(|k| ServiceKey { class: BASE_CLASS, ..*k })
            .collect()
    }

    /// Writes the table of every key under a fresh id, then points the keys
    /// at them: a table is complete before its `ROUTES` entry names it (its
    /// first chunk goes with the entry). Batched calls, in slices of
    /// [`WRITE_SLICE`] keys (a slice's further chunks, then its entries), so
    /// an install of 100,000 routes is some fifty calls, not 200,000, and
    /// holds few values at a time.
    fn write_routes<'t>(
        &mut self,
        keys: &[ServiceKey],
        table_of: impl Fn(&ServiceKey) -> &'t Table,
        flags_of: impl Fn(&ServiceKey) -> u32,
        written: &mut Written,
        undo: &mut Vec<Undo>,
        next: &Generation,
    ) -> anyhow::Result<()> {
        for keys in keys.chunks(WRITE_SLICE) {
            let (mut table_keys, mut chunks, mut routes) = (Vec::new(), Vec::new(), Vec::with_capacity(keys.len()));
            for key in keys {
                let table = table_of(key);
                let id = self.fresh_table_id();
                let mut table_chunks = table.chunks();
                let first = table_chunks.next().expect("a table has its header");
                let before = chunks.len();
                chunks.extend(table_chunks);
                let len = (chunks.len() - before) as u32;
                undo.push(Undo::Table(id, len));
                table_keys.extend((1..=len).map(|chunk| TableKey { table: id, chunk }));
                let header = TableHeader { flags: table.header.flags | flags_of(key), ..table.header };
                routes.push(Route { table: id, header, first });
            }
            if !chunks.is_empty() {
                self.write_batch(TABLES_MAP, &table_keys, &chunks).context("writing route tables")?;
            }
            for key in keys {
                let before = self.value_before(key, written, next)?;
                undo.push(Undo::Route(*key, before));
                self.cover(key);
            }
            self.write_batch(ROUTES_MAP, keys, &routes).context("writing routes")?;
            written.extend(keys.iter().copied().zip(routes.iter().map(|r| (r.table, r.header.flags & CLASS_ROUTED))));
        }
        Ok(())
    }

    /// The table id of `key`'s `ROUTES` value as the kernel holds it now
    /// (0 for a marker; `written`: the ids this apply wrote so far).
    fn kernel_route(&self, key: &ServiceKey, written: &Written) -> Option<u32> {
        written
            .get(key)
            .map(|&(table, _)| table)
            .or_else(|| self.installed.get(key).map(|i| i.table))
            .or_else(|| self.markers.contains(key).then_some(MARKER.table))
    }

    /// The whole `ROUTES` value of `key` as the kernel holds it now, for
    /// undoing a write: rebuilt when this apply wrote it or it is a marker,
    /// else read back (only keys that are overwritten or deleted, so a first
    /// install reads nothing).
    fn value_before(&mut self, key: &ServiceKey, written: &Written, next: &Generation) -> anyhow::Result<Option<Box<Route>>> {
        let Some(table) = self.kernel_route(key, written) else {
            return Ok(None);
        };
        if let Some(&(id, flags)) = written.get(key) {
            let t = Transition::table(next, key).expect("a written key has a table");
            let first = t.chunks().next().expect("a table has its header");
            let header = TableHeader { flags: t.header.flags | flags, ..t.header };
            return Ok(Some(Box::new(Route { table: id, header, first })));
        }
        if table == MARKER.table {
            return Ok(Some(Box::new(MARKER)));
        }
        let value = self.map::<ServiceKey, Route>(ROUTES_MAP)?.get(key, 0).context("reading a route back")?;
        Ok(Some(Box::new(value)))
    }

    /// Reverts the writes of a failed apply, newest first. Tables written
    /// are deleted after the grace period: a connect may have read them.
    fn undo(&mut self, undo: Vec<Undo>) -> anyhow::Result<()> {
        for step in undo.into_iter().rev() {
            match step {
                Undo::Route(key, Some(route)) => {
                    self.cover(&key);
                    self.map::<ServiceKey, Route>(ROUTES_MAP)?.insert(key, *route, 0)?
                }
                // A failed batch may have stopped before this entry.
                Undo::Route(key, None) => match self.map::<ServiceKey, Route>(ROUTES_MAP)?.remove(&key) {
                    Err(aya::maps::MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(nix::libc::ENOENT) => {}
                    other => other?,
                },
                Undo::Workload(id, Some(class)) => self.map::<u64, u32>(WORKLOADS_MAP)?.insert(id, class, 0)?,
                Undo::Workload(id, None) => self.map::<u64, u32>(WORKLOADS_MAP)?.remove(&id)?,
                Undo::Settings(Some(old)) => self.write_settings(old)?,
                Undo::Settings(None) => {}
                Undo::Table(id, len) => {
                    // Written but never installed, so never counted as live.
                    self.retired.push_back((Instant::now(), id, len));
                    self.retired_chunks += len as usize;
                }
            }
        }
        Ok(())
    }

    /// Records a successful apply.
    fn commit(&mut self, desired: &Desired, t: &Transition, written: Written) {
        let next = &desired.routes;
        let installed = written.into_iter().map(|(key, (table, _))| {
            let chunks = Transition::table(next, &key).expect("a written key has a table").chunk_count() - 1;
            (key, Installed { table, chunks })
        });
        let installed: Vec<(ServiceKey, Installed)> = installed.collect();
        self.table_chunks += installed.iter().map(|(_, i)| i.chunks as usize).sum::<usize>();
        let mut replaced = Vec::new();
        redirector_core::sorted::upsert(&mut self.installed, installed.into_iter(), |old| replaced.push(old));
        for old in replaced {
            self.retire(old.table, old.chunks);
        }
        for key in &t.remove {
            if let Some(old) = self.installed.remove(key) {
                self.retire(old.table, old.chunks);
            }
        }
        let now = Instant::now();
        for key in &t.retire {
            if let Some(old) = self.installed.remove(key) {
                // Its table is queued when the entry is deleted; its chunks count as retired from now.
                self.move_to_retired(old.chunks);
                self.retired_routes.push_back((now, *key, old.table, old.chunks));
            }
        }
        if !next.released_counters.is_empty() {
            self.retired_counters.push_back((now, next.released_counters.clone()));
        }
        self.workloads = desired.workloads.clone();
        self.settings = Some(desired.settings);
    }

    /// Writes the single `SETTINGS` entry.
    fn write_settings(&mut self, value: Settings) -> anyhow::Result<()> {
        let map = self.ebpf.map_mut(SETTINGS_MAP).ok_or_else(|| anyhow!("map {SETTINGS_MAP} missing"))?;
        let mut settings: Array<&mut MapData, Settings> = map.try_into()?;
        settings.set(0, value, 0).context("writing settings")
    }

    /// A typed view of one of this generation's hash maps.
    fn map<K: aya::Pod, V: aya::Pod>(&mut self, name: &str) -> anyhow::Result<HashMap<&mut MapData, K, V>> {
        let map = self.ebpf.map_mut(name).ok_or_else(|| anyhow!("map {name} missing"))?;
        Ok(map.try_into()?)
    }

    /// A table id no table in the kernel has (ids wrap, skipping 0).
    fn fresh_table_id(&mut self) -> u32 {
        self.last_table = self.last_table.checked_add(1).filter(|&id| id != 0).unwrap_or(1);
        self.last_table
    }

    /// Writes `keys[i] -> values[i]` into the hash map `name` in one call,
    /// or one call per entry on kernels without batched hash-map writes
    /// (before 5.6; 524 is the kernel's ENOTSUPP).
    fn write_batch<K: aya::Pod, V: aya::Pod>(&mut self, name: &str, keys: &[K], values: &[V]) -> anyhow::Result<()> {
        let map = self.ebpf.map(name).ok_or_else(|| anyhow!("map {name} missing"))?;
        let aya::maps::Map::HashMap(data) = map else { bail!("map {name} is not a hash map") };
        use std::os::fd::AsFd as _;
        match kernel::update_batch(data.fd().as_fd(), keys, values) {
            Ok(()) => Ok(()),
            Err(e) if matches!(e.raw_os_error(), Some(nix::libc::EINVAL | nix::libc::ENOTSUP | 524)) => {
                let mut map = self.map::<K, V>(name)?;
                for (key, value) in keys.iter().zip(values) {
                    map.insert(key, value, 0)?;
                }
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Queues table `id` of `len` chunks for deletion after the grace period.
    fn retire(&mut self, id: u32, len: u32) {
        self.move_to_retired(len);
        self.retired.push_back((Instant::now(), id, len));
    }

    /// Counts `len` table chunks as retired instead of live.
    fn move_to_retired(&mut self, len: u32) {
        self.table_chunks -= len as usize;
        self.retired_chunks += len as usize;
    }

    /// Deletes the entries of tables replaced more than the grace period ago.
    /// Returns how many tables were deleted.
    pub fn collect_garbage(&mut self) -> anyhow::Result<usize> {
        let grace = Duration::from_millis(TABLE_GRACE_MS);
        let mut deleted = 0;
        while let Some((at, _)) = self.retired_counters.front() {
            if at.elapsed() < 2 * grace {
                break;
            }
            let (_, slots) = self.retired_counters.pop_front().expect("front exists");
            // Zeroed for whoever is handed the slot after the ids wrap around.
            let map = self.ebpf.map_mut(COUNTERS_MAP).ok_or_else(|| anyhow!("map {COUNTERS_MAP} missing"))?;
            let mut counters: Array<&mut MapData, u64> = map.try_into()?;
            for slot in slots {
                counters.set(slot, 0, 0).context("zeroing a released counter")?;
            }
        }
        while let Some(&(at, key, id, len)) = self.retired_routes.front() {
            if at.elapsed() < grace {
                break;
            }
            let _ = self.map::<ServiceKey, Route>(ROUTES_MAP)?.remove(&key);
            // Its table goes after another grace period: a connect may have
            // read the entry just before it was deleted. Its slots are
            // already counted as retired.
            self.retired.push_back((Instant::now(), id, len));
            self.retired_routes.pop_front();
            if self.retired_routes.is_empty() && !(self.markers.is_empty() && self.flagged.is_empty()) {
                self.drop_stale_markers()?;
            }
        }
        while let Some(&(at, id, len)) = self.retired.front() {
            if at.elapsed() < grace {
                break;
            }
            let mut tables = self.map::<TableKey, TableChunk>(TABLES_MAP)?;
            for chunk in 1..=len {
                let _ = tables.remove(&TableKey { table: id, chunk });
            }
            self.retired.pop_front();
            self.retired_chunks -= len as usize;
            deleted += 1;
        }
        Ok(deleted)
    }

    /// Deletes the markers, and clears the flags, no class entry needs any
    /// more (after retired class entries were deleted).
    fn drop_stale_markers(&mut self) -> anyhow::Result<()> {
        let routed = self.class_routed(&BTreeMap::new(), &[]);
        let unflag: Vec<ServiceKey> = self.flagged.difference(&routed).copied().collect();
        for key in unflag {
            let mut routes = self.map::<ServiceKey, Route>(ROUTES_MAP)?;
            let mut route = routes.get(&key, 0).context("reading a route back")?;
            route.header.flags &= !CLASS_ROUTED;
            routes.insert(key, route, 0).context("clearing a route's class flag")?;
            self.flagged.remove(&key);
        }
        let needed = self.needed_markers(&routed, &BTreeMap::new(), &[]);
        let stale: Vec<ServiceKey> = self.markers.difference(&needed).copied().collect();
        for key in &stale {
            self.map::<ServiceKey, Route>(ROUTES_MAP)?.remove(key).context("removing a pass-through entry")?;
            self.markers.remove(key);
        }
        self.settle_filter(&stale);
        Ok(())
    }

    /// Sets the filter bit of a base key's destination, before its `ROUTES`
    /// entry is written (other classes' keys always have a base entry).
    fn cover(&mut self, key: &ServiceKey) {
        if key.class == BASE_CLASS
            && let Some((word, value)) = self.filter.cover(key)
        {
            self.filter_words.set(word, value);
        }
    }

    /// Clears the filter bits of those of `keys` whose base entry is no
    /// longer in `ROUTES` (call after the deletes, with the bookkeeping
    /// updated).
    fn settle_filter(&mut self, keys: &[ServiceKey]) {
        for key in keys {
            if key.class == BASE_CLASS
                && !self.installed.contains_key(key)
                && !self.markers.contains(key)
                && let Some((word, value)) = self.filter.uncover(key)
            {
                self.filter_words.set(word, value);
            }
        }
    }

    /// Whether replaced tables or entries of classes that went away are
    /// waiting for deletion.
    pub fn has_garbage(&self) -> bool {
        !self.retired.is_empty() || !self.retired_routes.is_empty() || !self.retired_counters.is_empty()
    }

    /// How many routes are in `ROUTES`.
    pub fn routes(&self) -> usize {
        self.installed.len()
    }

    /// `TABLES` chunks of the installed tables.
    pub fn table_chunks(&self) -> usize {
        self.table_chunks
    }

    /// Exits the process's hold on the datapath, leaving it in force: the
    /// links and maps stay pinned, and the next agent adopts them.
    pub fn shutdown(self) {
        drop(self);
    }
}

/// What [`uninstall`] removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Uninstalled {
    /// Links detached (hooks removed).
    pub links: usize,
    /// Pin files removed (links included).
    pub pins: usize,
}

/// Removes every generation and layout under the pin root `root`: detaches
/// the pinned links, removes the pins and the directories, and nothing else.
/// Then detaches every hook of these datapaths still attached anywhere
/// (held by a process rather than a pin). Refuses while an agent owns `root`.
pub fn uninstall(root: &Path) -> anyhow::Result<Uninstalled> {
    if !root.exists() {
        return Ok(Uninstalled::default());
    }
    let _owner = OwnerLock::acquire(root).context("not uninstalling while an agent runs")?;
    let own = own_origins(root);
    let programs = redirector_programs();
    let mut removed = retire(root, None)?;
    for link in kernel::cgroup_links()? {
        if programs.get(&link.prog_id).is_some_and(|o| own.contains(o)) && kernel::detach_link(link.id)? {
            removed.links += 1;
        }
    }
    let _ = std::fs::remove_dir(root);
    let _ = std::fs::remove_file(crate::status::names_path(root));
    Ok(removed)
}

/// Ids of the `ORIGINS` maps pinned under `root`, one per layout: the maps
/// every hook of this pin directory uses, whatever its generation.
fn own_origins(root: &Path) -> Vec<u32> {
    subdirs(root, "layout-v")
        .unwrap_or_default()
        .iter()
        .filter_map(|layout| MapData::from_pin(layout.join("origins")).ok()?.info().ok())
        .map(|info| info.id())
        .collect()
}

/// Every redirector hook program loaded in the kernel (one of [`PROGRAMS`]
/// by name, using a map named `ORIGINS`), by program id, with the id of its
/// `ORIGINS` map: which datapath it belongs to.
fn redirector_programs() -> BTreeMap<u32, u32> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| p.name_as_str().is_some_and(|n| PROGRAMS.contains(&n)))
        .filter_map(|p| {
            let origins = p.map_ids().ok()??.into_iter().find(|&id| {
                aya::maps::MapInfo::from_id(id).ok().is_some_and(|m| m.name_as_str() == Some(ORIGINS_MAP))
            })?;
            Some((p.id(), origins))
        })
        .collect()
}

/// Detaches and removes every generation under `root` except `keep`, and
/// every layout other than the current one; with `keep == None`, everything.
fn retire(root: &Path, keep: Option<&Path>) -> anyhow::Result<Uninstalled> {
    let mut removed = Uninstalled::default();
    let current = layout_dir(root);
    for layout in subdirs(root, "layout-v")? {
        for generation in subdirs(&layout, "gen-")? {
            if Some(generation.as_path()) == keep {
                continue;
            }
            remove_generation(&generation, &mut removed)?;
        }
        if keep.is_none() || layout != current {
            let origins = layout.join("origins");
            if origins.exists() {
                std::fs::remove_file(&origins).with_context(|| format!("removing {}", origins.display()))?;
                removed.pins += 1;
            }
            std::fs::remove_dir(&layout).with_context(|| format!("removing {}", layout.display()))?;
        }
    }
    Ok(removed)
}

fn remove_generation(dir: &Path, removed: &mut Uninstalled) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        let is_link = path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("link-"));
        if is_link {
            // Unpinning hands back the last reference; dropping it detaches.
            let link = PinnedLink::from_pin(&path).with_context(|| format!("opening {}", path.display()))?;
            drop(link.unpin().with_context(|| format!("unpinning {}", path.display()))?);
            removed.links += 1;
        } else {
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        }
        removed.pins += 1;
    }
    std::fs::remove_dir(dir).with_context(|| format!("removing {}", dir.display()))
}

/// Subdirectories of `dir` whose names start with `prefix`, sorted.
fn subdirs(dir: &Path, prefix: &str) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() && path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(prefix)) {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

/// Ensures `dir` exists with root-only permissions; with `check_fs`, that
/// it is on a bpffs (mounting the default one if needed).
fn prepare_dir(dir: &Path, check_fs: bool) -> anyhow::Result<()> {
    if check_fs {
        // The directory itself may be a bpffs mount point (e.g. /sys/fs/bpf).
        let parent = dir.parent().unwrap_or(Path::new("/"));
        mount_default_bpffs_if_needed(if dir.exists() { dir } else { parent })?;
        let on = if dir.exists() { dir } else { parent };
        if !is_bpffs(on).with_context(|| format!("--bpffs {}", dir.display()))? {
            bail!("--bpffs {}: {} is not on a bpf filesystem (mount -t bpf bpf /sys/fs/bpf)", dir.display(), on.display());
        }
    }
    if dir.exists() {
        return Ok(());
    }
    std::fs::create_dir(dir).with_context(|| format!("creating {}", dir.display()))?;
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    Ok(())
}

/// Mounts bpffs at `/sys/fs/bpf` when that is where pins go and nothing is mounted there.
fn mount_default_bpffs_if_needed(dir: &Path) -> anyhow::Result<()> {
    if dir.starts_with(DEFAULT_BPFFS) {
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
