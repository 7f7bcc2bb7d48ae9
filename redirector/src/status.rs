//! `redirector status`: what the kernel holds, read straight from the pinned
//! maps (no agent needed): routes per workload class, backends with their
//! exact share, endpoints, and connect counters.

use crate::datapath::layout_dir;
use anyhow::{Context as _, anyhow};
use aya::maps::{Array, HashMap, Map, MapData};
use redirector_common::{MAX_COUNTERS, MAX_TABLE_ENTRIES, PASS_THROUGH, REFUSED, Route, ServiceKey, Settings, TABLE_CHUNK, TableChunk, TableEntry, TableKey};
use redirector_core::compile::{Table, destination, table_len};
use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::SocketAddr,
    path::{Path, PathBuf},
};

/// One backend of a route as the kernel has it.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendStatus {
    /// Exact chance of being chosen, as numerator / denominator.
    pub share: (u64, u64),
    /// Endpoints.
    pub endpoints: Vec<SocketAddr>,
    /// Connects sent to this backend (all CPUs).
    pub connects: u64,
}

/// One route table.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteStatus {
    /// Workload class.
    pub class: u32,
    /// Destination.
    pub destination: SocketAddr,
    /// Backends in table order.
    pub backends: Vec<BackendStatus>,
    /// Connects refused for lack of endpoints.
    pub refused: u64,
}

/// Where the agent keeps files for `status` beside the pins (bpffs holds none).
pub const STATE_DIR: &str = "/run/redirector/state";

/// The file naming the workload cgroups of the agent on pin directory
/// `bpffs`: the Dataplane (a pod, under `--kubernetes`) behind each cgroup id.
pub fn names_path(bpffs: &Path) -> PathBuf {
    let escaped = bpffs.to_string_lossy().trim_matches('/').replace('/', "_");
    Path::new(STATE_DIR).join(format!("{escaped}.workloads.json"))
}

/// Writes the names of the workload cgroups in force (whole, by rename).
pub fn write_names(bpffs: &Path, names: &BTreeMap<u64, String>) -> anyhow::Result<()> {
    let path = names_path(bpffs);
    std::fs::create_dir_all(STATE_DIR).with_context(|| format!("creating {STATE_DIR}"))?;
    let text = serde_json::to_string(&names.iter().map(|(id, name)| (id.to_string(), name)).collect::<BTreeMap<_, _>>())?;
    let partial = path.with_extension("json.partial");
    std::fs::write(&partial, text).with_context(|| format!("writing {}", partial.display()))?;
    std::fs::rename(&partial, &path).with_context(|| format!("renaming {}", partial.display()))
}

/// The names the agent on `bpffs` last wrote (none when it wrote none).
fn read_names(bpffs: &Path) -> BTreeMap<u64, String> {
    let text = std::fs::read_to_string(names_path(bpffs)).unwrap_or_default();
    let names: BTreeMap<String, String> = serde_json::from_str(&text).unwrap_or_default();
    names.into_iter().filter_map(|(id, name)| Some((id.parse().ok()?, name))).collect()
}

/// Everything `status` shows.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    /// The generation directory read.
    pub generation: PathBuf,
    /// Settings of the class search.
    pub settings: Settings,
    /// Workload cgroup id -> class.
    pub workloads: BTreeMap<u64, u32>,
    /// Workload cgroup id -> what the agent bound to it (a pod, a Dataplane).
    pub names: BTreeMap<u64, String>,
    /// Routes, sorted by class and destination.
    pub routes: Vec<RouteStatus>,
}

/// Reads the newest generation pinned under `root`.
pub fn read(root: &Path) -> anyhow::Result<Status> {
    let generation = newest_generation(root)?;
    let pinned = |name: &str| MapData::from_pin(generation.join(name)).with_context(|| format!("opening {}", generation.join(name).display()));

    let settings: Array<MapData, Settings> = Map::Array(pinned("settings")?).try_into()?;
    let settings = settings.get(&0, 0)?;
    let workloads: HashMap<MapData, u64, u32> = Map::HashMap(pinned("workloads")?).try_into()?;
    let workloads = workloads.iter().collect::<Result<BTreeMap<_, _>, _>>()?;
    let counts = read_counters(&generation)?;

    let routes_map: HashMap<MapData, ServiceKey, Route> = Map::HashMap(pinned("routes")?).try_into()?;
    let tables: HashMap<MapData, TableKey, TableChunk> = Map::HashMap(pinned("tables")?).try_into()?;
    let mut routes = Vec::new();
    for route in routes_map.iter() {
        let (key, Route { table: id, header, first }) = route?;
        // A base entry that only says "classes route this": no table.
        if header.flags & PASS_THROUGH != 0 {
            continue;
        }
        let entries = table_entries(|chunk| if chunk == 0 { Some(first) } else { tables.get(&TableKey { table: id, chunk }, 0).ok() });
        routes.push(route_status(&key, &entries, &counts)?);
    }
    routes.sort_by_key(|r| (r.class, r.destination));
    Ok(Status { generation, settings, workloads, names: read_names(root), routes })
}

/// The entries of one table, read chunk by chunk until its header and
/// backend slots say it is complete (or a chunk is missing).
fn table_entries(chunk: impl Fn(u32) -> Option<TableChunk>) -> Vec<TableEntry> {
    let mut entries: Vec<TableEntry> = Vec::new();
    let len = |entries: &[TableEntry]| table_len(|i| entries.get(i as usize).copied()) as usize;
    for c in 0..MAX_TABLE_ENTRIES.div_ceil(TABLE_CHUNK) {
        let Some(next) = chunk(c) else { break };
        entries.extend_from_slice(&next.entries);
        if entries.len() >= len(&entries) {
            break;
        }
    }
    entries.truncate(len(&entries));
    entries
}

/// The connect counters of the generation in force: counter slot ->
/// connects, for the slots that counted one, so this stays small however
/// many routes are installed.
pub fn counters(root: &Path) -> anyhow::Result<BTreeMap<u32, u64>> {
    read_counters(&newest_generation(root)?)
}

fn read_counters(generation: &Path) -> anyhow::Result<BTreeMap<u32, u64>> {
    let path = generation.join("counters");
    let map = MapData::from_pin(&path).with_context(|| format!("opening {}", path.display()))?;
    let counts = crate::kernel::MappedArray::<u64>::read_only(&map, MAX_COUNTERS).with_context(|| format!("mapping {}", path.display()))?;
    Ok(counts.iter().enumerate().filter(|(_, n)| *n != 0).map(|(slot, n)| (slot as u32, n)).collect())
}

/// The pin directory of the newest generation under `root`.
fn newest_generation(root: &Path) -> anyhow::Result<PathBuf> {
    let layout = layout_dir(root);
    let mut generations: Vec<PathBuf> = std::fs::read_dir(&layout)
        .with_context(|| format!("{}: no redirector datapath is installed here", layout.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("gen-")))
        .collect();
    generations.sort();
    generations.pop().ok_or_else(|| anyhow!("{}: no generation pinned (the agent never attached)", layout.display()))
}

fn route_status(key: &ServiceKey, entries: &[TableEntry], counts: &BTreeMap<u32, u64>) -> anyhow::Result<RouteStatus> {
    let destination = destination(key);
    let table = Table::decode(entries).map_err(|e| anyhow!("class {} {destination}: {e}", key.class))?;
    let count = |slot: u32| counts.get(&slot).copied().unwrap_or(0);
    let backends = table
        .shares()
        .into_iter()
        .enumerate()
        .map(|(i, share)| BackendStatus { share, endpoints: table.backend_endpoints(i), connects: count(table.backends[i].counter) })
        .collect();
    let first = table.header.counters;
    Ok(RouteStatus { class: key.class, destination, backends, refused: count(first + REFUSED) })
}

impl Status {
    /// Human-readable report.
    pub fn render_table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "generation {}", self.generation.display());
        let _ = writeln!(
            out,
            "attach level {}, workload depth {}, {} workload cgroups",
            self.settings.attach_level,
            self.settings.max_depth,
            self.workloads.len()
        );
        let mut classes: BTreeMap<u32, Vec<&str>> = BTreeMap::new();
        for (id, class) in &self.workloads {
            let name = self.names.get(id).map_or("", String::as_str);
            let _ = writeln!(out, "  cgroup id {id} -> class {class}  {name}");
            classes.entry(*class).or_default().push(name);
        }
        for (class, names) in &classes {
            let named: Vec<&str> = names.iter().copied().filter(|n| !n.is_empty()).collect();
            let _ = writeln!(out, "class {class}: {} workloads: {}", names.len(), named.join(", "));
        }
        for r in &self.routes {
            let _ = writeln!(out, "class {} {}  refused {}", r.class, r.destination, r.refused);
            for b in &r.backends {
                let pct = if b.share.1 == 0 { 0.0 } else { 100.0 * b.share.0 as f64 / b.share.1 as f64 };
                let eps: Vec<String> = b.endpoints.iter().map(|e| e.to_string()).collect();
                let _ = writeln!(out, "  {pct:>7.3}%  connects {:>10}  -> {}", b.connects, eps.join(", "));
            }
        }
        out
    }

    /// JSON report.
    pub fn render_json(&self) -> String {
        let routes: Vec<serde_json::Value> = self
            .routes
            .iter()
            .map(|r| {
                serde_json::json!({
                    "class": r.class,
                    "destination": r.destination.to_string(),
                    "refused": r.refused,
                    "backends": r.backends.iter().map(|b| serde_json::json!({
                        "probability": if b.share.1 == 0 { 0.0 } else { b.share.0 as f64 / b.share.1 as f64 },
                        "endpoints": b.endpoints.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
                        "connects": b.connects,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        serde_json::to_string_pretty(&serde_json::json!({
            "generation": self.generation.display().to_string(),
            "attachLevel": self.settings.attach_level,
            "workloadDepth": self.settings.max_depth,
            "workloads": self.workloads.iter().map(|(id, class)| serde_json::json!({"cgroupId": id, "class": class, "name": self.names.get(id)})).collect::<Vec<_>>(),
            "routes": routes,
        }))
        .unwrap_or_default()
    }
}
