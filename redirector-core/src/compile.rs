//! From resolved routes to the kernel's route tables, and diffs between two
//! sets of tables. Pure: no kernel access. The layout is documented in
//! `redirector-common`.

use crate::{
    model::{Text, load::par_chunks},
    resolve::{Resolution, ResolvedRoute},
};
use redirector_common::{
    BASE_CLASS, BackendSlot, Endpoint, MAX_COUNTERS, MAX_ROUTES, MAX_TABLE_ENTRIES, ServiceKey, TABLE_CHUNK, TableChunk, TableEntry, TableHeader,
    mapped_v4, reject_bound,
};
use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    net::{IpAddr, SocketAddr},
};

/// Every route table, by the destination it serves.
pub type Tables = BTreeMap<ServiceKey, Table>;

/// A table with its backends' names, in table order.
type Named = (Table, Vec<Text>);

/// Why a configuration cannot be turned into tables.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CompileError {
    /// More destinations than `ROUTES` holds.
    #[error("{count} service addresses and ports exceed the limit of {MAX_ROUTES}")]
    TooManyRoutes {
        /// Destinations requested.
        count: usize,
    },
    /// One route with more backends and endpoints than a table holds.
    #[error("{service} at {addr}: {entries} table entries exceed the limit of {MAX_TABLE_ENTRIES}")]
    TableTooLarge {
        /// `MeshService/name`.
        service: String,
        /// Destination.
        addr: SocketAddr,
        /// Entries needed.
        entries: usize,
    },
    /// More routes and backends than `COUNTERS` has slots for.
    #[error("routes and backends need more than the {MAX_COUNTERS} connect counters the kernel holds")]
    TooManyCounters,
    /// The weights of one route add up to more than 32 bits.
    #[error("{service} at {addr}: sum of weights exceeds {}", u32::MAX)]
    WeightOverflow {
        /// `MeshService/name`.
        service: String,
        /// Destination.
        addr: SocketAddr,
    },
}

/// One route table: what the kernel reads for one destination.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Table {
    /// Entry 0.
    pub header: TableHeader,
    /// Entries `1..=n`.
    pub backends: Vec<BackendSlot>,
    /// The remaining entries.
    pub endpoints: Vec<Endpoint>,
}

impl Table {
    /// Number of entries: header, backend slots, endpoints.
    pub fn entry_count(&self) -> u32 {
        (1 + self.backends.len() + self.endpoints.len()) as u32
    }

    /// Number of `TABLES` chunks the table takes.
    pub fn chunk_count(&self) -> u32 {
        self.entry_count().div_ceil(TABLE_CHUNK)
    }

    /// The table as the kernel holds it: its entries in chunks of
    /// [`TABLE_CHUNK`], the last one padded with zeros.
    pub fn chunks(&self) -> impl Iterator<Item = TableChunk> + '_ {
        let mut entries = self.entries().into_iter();
        (0..self.chunk_count()).map(move |_| {
            let mut chunk = TableChunk::ZERO;
            for (slot, entry) in chunk.entries.iter_mut().zip(entries.by_ref()) {
                *slot = entry;
            }
            chunk
        })
    }

    /// The table as the array the kernel reads.
    pub fn entries(&self) -> Vec<TableEntry> {
        std::iter::once(TableEntry { header: self.header })
            .chain(self.backends.iter().map(|&backend| TableEntry { backend }))
            .chain(self.endpoints.iter().map(|&endpoint| TableEntry { endpoint }))
            .collect()
    }

    /// The inverse of [`Table::entries`]: a table read back from the kernel,
    /// checked so that every index the BPF program follows stays inside it.
    pub fn decode(entries: &[TableEntry]) -> Result<Self, DecodeError> {
        // SAFETY (all three reads): entry 0 is a header, entries 1..=n backend
        // slots and the rest endpoints (the layout of redirector-common); every
        // variant is plain integers, so any bit pattern is a valid value.
        let header = unsafe { entries.first().ok_or(DecodeError::Empty)?.header };
        let n = header.backend_count as usize;
        let backends: Vec<BackendSlot> = entries.iter().skip(1).take(n).map(|e| unsafe { e.backend }).collect();
        if backends.len() != n {
            return Err(DecodeError::Truncated { needed: 1 + n, got: entries.len() });
        }
        let endpoints: Vec<Endpoint> = entries.iter().skip(1 + n).map(|e| unsafe { e.endpoint }).collect();
        for (i, slot) in backends.iter().enumerate() {
            let end = slot.first_endpoint as usize + slot.endpoint_count as usize;
            if (slot.endpoint_count > 0 && (slot.first_endpoint as usize) < 1 + n) || end > entries.len() {
                return Err(DecodeError::EndpointsOutside { backend: i, first: slot.first_endpoint, count: slot.endpoint_count });
            }
            if slot.alias as usize >= n.max(1) || slot.threshold > header.total_weight {
                return Err(DecodeError::BadSlot { backend: i });
            }
        }
        Ok(Self { header, backends, endpoints })
    }

    /// The endpoints of backend `i`, as socket addresses.
    pub fn backend_endpoints(&self, i: usize) -> Vec<SocketAddr> {
        let Some(slot) = self.backends.get(i) else { return Vec::new() };
        let n = self.backends.len();
        let first = (slot.first_endpoint as usize).saturating_sub(1 + n);
        self.endpoints
            .get(first..first + slot.endpoint_count as usize)
            .unwrap_or_default()
            .iter()
            .map(|e| SocketAddr::new(words_ip(e.addr), u16::from_be(e.port)))
            .collect()
    }

    /// Each backend's exact chance of being chosen, as (numerator,
    /// denominator): what the kernel's draw over this table gives.
    pub fn shares(&self) -> Vec<(u64, u64)> {
        let alias = AliasTable {
            thresholds: self.backends.iter().map(|s| s.threshold).collect(),
            aliases: self.backends.iter().map(|s| s.alias).collect(),
            total: self.header.total_weight,
        };
        let denominator = self.backends.len() as u64 * u64::from(self.header.total_weight);
        let shares = if self.backends.is_empty() { Vec::new() } else { alias.exact_shares() };
        shares.into_iter().map(|s| (s, denominator)).collect()
    }
}

/// Why entries read back from the kernel are not a table this build wrote.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// No header entry.
    #[error("empty table")]
    Empty,
    /// Fewer entries than the header's backend count needs.
    #[error("truncated table: {got} entries, the header needs {needed}")]
    Truncated {
        /// Entries the header and backend slots need.
        needed: usize,
        /// Entries present.
        got: usize,
    },
    /// A backend's endpoint range leaves the table.
    #[error("backend {backend}: endpoints {first}..+{count} outside the table")]
    EndpointsOutside {
        /// Backend index.
        backend: usize,
        /// First endpoint entry.
        first: u32,
        /// Endpoint count.
        count: u32,
    },
    /// A backend slot's alias or threshold is out of range.
    #[error("backend {backend}: alias or threshold out of range")]
    BadSlot {
        /// Backend index.
        backend: usize,
    },
}

/// The number of entries of a table, from `get(index)`: the header, the
/// backend slots it counts, and the endpoints those slots count.
pub fn table_len(get: impl Fn(u32) -> Option<TableEntry>) -> u32 {
    let Some(header) = get(0) else { return 0 };
    // SAFETY: entry 0 is a header, entries 1..=n backend slots (redirector-common).
    let n = unsafe { header.header }.backend_count;
    let endpoints: u32 = (1..=n).filter_map(&get).map(|e| unsafe { e.backend }.endpoint_count).sum();
    1 + n + endpoints
}

/// Walker's alias table over integer weights, with integer thresholds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AliasTable {
    /// Per slot: keep the slot's own index when the weight draw is below this.
    pub thresholds: Vec<u32>,
    /// Per slot: the index chosen otherwise.
    pub aliases: Vec<u32>,
    /// Sum of the weights (range of the weight draw).
    pub total: u32,
}

impl AliasTable {
    /// Builds the table with Vose's method in exact integer arithmetic.
    /// Each weight is scaled by `n` so that every slot holds exactly `total`.
    /// Returns `None` when the weights sum to zero or to more than `u32::MAX`.
    pub fn new(weights: &[u32]) -> Option<Self> {
        let n = weights.len() as u64;
        let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
        let total_u32 = u32::try_from(total).ok().filter(|&t| t > 0)?;
        let mut scaled: Vec<u64> = weights.iter().map(|&w| u64::from(w) * n).collect();
        let mut thresholds = vec![total_u32; weights.len()];
        let mut aliases: Vec<u32> = (0..weights.len() as u32).collect();
        let (mut small, mut large): (Vec<usize>, Vec<usize>) =
            (0..weights.len()).partition(|&i| scaled[i] < total);
        small.reverse();
        large.reverse();
        while let (Some(&l), Some(&g)) = (small.last(), large.last()) {
            small.pop();
            // scaled[l] < total, so it fits in u32.
            thresholds[l] = scaled[l] as u32;
            aliases[l] = g as u32;
            scaled[g] -= total - scaled[l];
            if scaled[g] < total {
                large.pop();
                small.push(g);
            }
        }
        // Exact arithmetic leaves every remaining slot exactly full, so they
        // keep the defaults (threshold = total, alias = self).
        Some(Self { thresholds, aliases, total: total_u32 })
    }

    /// For each index `i`, the count `c_i` such that the chance of choosing
    /// `i` is exactly `c_i / (n * total)`. Equals `weight_i * n` when the table
    /// reproduces the weights.
    pub fn exact_shares(&self) -> Vec<u64> {
        let mut shares = vec![0u64; self.thresholds.len()];
        for (slot, (&t, &a)) in self.thresholds.iter().zip(&self.aliases).enumerate() {
            shares[slot] += u64::from(t);
            shares[a as usize] += u64::from(self.total - t);
        }
        shares
    }
}

/// The `ROUTES` key of a destination for a workload class.
pub fn service_key(class: u32, addr: IpAddr, port: u16) -> ServiceKey {
    ServiceKey { class, addr: ip_words(addr), port: port.to_be(), pad: 0 }
}

/// An address in the kernel's IPv6 form: four network-order words, IPv4 mapped.
pub fn ip_words(addr: IpAddr) -> [u32; 4] {
    match addr {
        IpAddr::V4(v4) => mapped_v4(u32::from(v4).to_be()),
        IpAddr::V6(v6) => {
            let o = v6.octets();
            std::array::from_fn(|i| u32::from_ne_bytes([o[4 * i], o[4 * i + 1], o[4 * i + 2], o[4 * i + 3]]))
        }
    }
}

/// The inverse of [`service_key`]: the destination address and port a
/// `ROUTES` key stands for.
pub fn destination(key: &ServiceKey) -> std::net::SocketAddr {
    std::net::SocketAddr::new(words_ip(key.addr), u16::from_be(key.port))
}

/// The inverse of [`ip_words`]: IPv4-mapped addresses come back as IPv4.
pub fn words_ip(words: [u32; 4]) -> IpAddr {
    let mut o = [0u8; 16];
    for (i, w) in words.iter().enumerate() {
        o[4 * i..4 * i + 4].copy_from_slice(&w.to_ne_bytes());
    }
    let v6 = std::net::Ipv6Addr::from(o);
    v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
}

/// Builds the table for one route. Endpoints a connect to this address
/// family cannot reach are left out: an IPv4 service address gets only IPv4
/// endpoints (a `connect4` cannot be turned into an IPv6 connection), an IPv6
/// one gets both (IPv4 endpoints as IPv4-mapped addresses, reachable from
/// dual-stack sockets).
pub fn compile_route(route: &ResolvedRoute) -> Result<Table, CompileError> {
    let addr = SocketAddr::new(route.vip, route.port);
    let ipv6_service = route.vip.to_canonical().is_ipv6();
    let weights: Vec<u32> = route.backends.iter().map(|b| b.weight).collect();
    let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
    if total > u64::from(u32::MAX) {
        return Err(CompileError::WeightOverflow { service: route.service.to_string(), addr });
    }
    let Some(alias) = AliasTable::new(&weights) else {
        // Every weight is zero (or there is no backend): nothing can be chosen.
        return Ok(Table { header: header(0, 0), backends: Vec::new(), endpoints: Vec::new() });
    };
    let n = route.backends.len();
    let mut backends = Vec::with_capacity(n);
    let mut endpoints = Vec::new();
    for (i, backend) in route.backends.iter().enumerate() {
        let first = (1 + n + endpoints.len()) as u32;
        let reachable = backend.endpoints.iter().filter(|e| ipv6_service || e.ip().to_canonical().is_ipv4());
        endpoints.extend(reachable.map(|e| Endpoint { addr: ip_words(e.ip()), port: e.port().to_be(), pad: 0, reserved: 0 }));
        let count = (1 + n + endpoints.len()) as u32 - first;
        backends.push(BackendSlot {
            threshold: alias.thresholds[i],
            alias: alias.aliases[i],
            first_endpoint: first,
            endpoint_count: count,
            endpoint_reject: reject_bound(count),
            counter: 0,
        });
    }
    let entries = 1 + n + endpoints.len();
    if entries > MAX_TABLE_ENTRIES as usize {
        return Err(CompileError::TableTooLarge { service: route.service.to_string(), addr, entries });
    }
    Ok(Table { header: header(n as u32, alias.total), backends, endpoints })
}

fn header(backend_count: u32, total_weight: u32) -> TableHeader {
    TableHeader {
        backend_count,
        backend_reject: reject_bound(backend_count),
        total_weight,
        weight_reject: reject_bound(total_weight),
        counters: 0,
        flags: 0,
    }
}

/// Builds every table: all destinations of the base class, and for each
/// other class the destinations whose table differs from the base one (the
/// kernel falls back to the base class on a miss).
pub fn compile(resolution: &Resolution) -> Result<Tables, CompileError> {
    let mut tables = Tables::new();
    let base = resolution.classes.first().map(|c| c.routes.as_slice()).unwrap_or_default();
    for route in base {
        tables.insert(service_key(BASE_CLASS, route.vip, route.port), compile_route(route)?);
    }
    for class in resolution.classes.iter().skip(1) {
        for route in &class.routes {
            let table = compile_route(route)?;
            if tables.get(&service_key(BASE_CLASS, route.vip, route.port)) != Some(&table) {
                tables.insert(service_key(class.id, route.vip, route.port), table);
            }
        }
    }
    if tables.len() > MAX_ROUTES as usize {
        return Err(CompileError::TooManyRoutes { count: tables.len() });
    }
    Ok(tables)
}

/// Builds the base-class tables of a plain list of routes.
pub fn compile_routes(routes: &[ResolvedRoute]) -> Result<Tables, CompileError> {
    if routes.len() > MAX_ROUTES as usize {
        return Err(CompileError::TooManyRoutes { count: routes.len() });
    }
    routes
        .iter()
        .map(|route| Ok((service_key(BASE_CLASS, route.vip, route.port), compile_route(route)?)))
        .collect()
}

/// What must change in the kernel to go from one set of tables to another.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Diff {
    /// Destinations whose table is new or different.
    pub upsert: Vec<ServiceKey>,
    /// Destinations that are no longer served.
    pub remove: Vec<ServiceKey>,
    /// Destinations whose table is the same.
    pub unchanged: usize,
}

impl Diff {
    /// Compares `old` (what the kernel has) with `new` (what it should have).
    pub fn between(old: &Tables, new: &Tables) -> Self {
        let mut diff = Diff::default();
        for (key, table) in new {
            if old.get(key) == Some(table) {
                diff.unchanged += 1;
            } else {
                diff.upsert.push(*key);
            }
        }
        diff.remove = old.keys().filter(|k| !new.contains_key(k)).copied().collect();
        diff
    }

    /// Whether nothing changes.
    pub fn is_empty(&self) -> bool {
        self.upsert.is_empty() && self.remove.is_empty()
    }
}

/// Class ids that stay with a class's routes from one generation to the
/// next, so a reload never shows one workload another's routes; counter
/// slots that stay with what they count; and each generation computed from
/// what changed, not from everything.
///
/// The kernel finds a connect's class in `WORKLOADS`, then its route in
/// `ROUTES` under that class (falling back to the base class). If ids were
/// handed out afresh each generation, a class's new entries could be written
/// under an id other workloads still map to. Here a class keeps its id
/// exactly when its routes (every destination, base fallbacks included) are
/// unchanged; a changed class gets an id no workload maps to yet, so its
/// entries can be written before any workload is switched to it. Ids of
/// classes that go away are not handed out again while the compiler lives.
///
/// [`Compiler::compile`] gives the next [`Generation`] without changing the
/// compiler; [`Compiler::commit`] records it once the kernel holds it. A
/// generation never committed (the kernel refused it) leaves the compiler
/// at the one in force, and what it covered is compiled again next time.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Compiler {
    /// Every table in force, counters included: the base class's under
    /// [`BASE_CLASS`], each class's overrides under its id.
    tables: BTreeMap<ServiceKey, Kept>,
    /// Per live class id: the destinations (base keys) it overrides.
    classes: BTreeMap<u32, BTreeSet<ServiceKey>>,
    /// Last class id handed out.
    last: u32,
    /// Whether slot numbers have wrapped around: until then every fresh
    /// slot is above every slot in use.
    wrapped: bool,
    /// Last counter slot handed out.
    last_counter: u32,
    /// Base destinations changed since the last commit.
    pending: BTreeSet<(IpAddr, u16)>,
}

/// The `COUNTERS` slots of one table: the route's (refused) and one per backend, with a hash of the backend's name (two
/// names of one route sharing a hash would only trade their counts).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Slots {
    route: u32,
    backends: Vec<(u64, u32)>,
}

fn name_hash(name: &str) -> u64 {
    use std::hash::{Hash as _, Hasher as _};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    name.hash(&mut h);
    h.finish()
}

/// A table in force as the compiler keeps it: the kernel's entries, counter
/// slots included, in one allocation, and a hash of each backend's name
/// (its counter slot follows the name). A fraction of a [`Table`] with its
/// slots beside it: 100,000 routes are kept in about 20 MiB.
#[derive(Clone)]
struct Kept {
    entries: Box<[TableEntry]>,
    names: Box<[u64]>,
}

impl Kept {
    fn new(table: &Table, names: &[Text]) -> Self {
        Self { entries: table.entries().into_boxed_slice(), names: names.iter().map(|n| name_hash(n)).collect() }
    }

    /// The table, as compiled.
    fn table(&self) -> Table {
        Table::decode(&self.entries).expect("a kept table is one this build compiled")
    }

    fn header(&self) -> TableHeader {
        // SAFETY: entry 0 is the header (see redirector-common); every view is plain integers.
        unsafe { self.entries[0].header }
    }

    /// Number of backend slots (zero when every weight is zero, whatever the names).
    fn backend_count(&self) -> usize {
        self.header().backend_count as usize
    }

    fn slot(&self, i: usize) -> BackendSlot {
        // SAFETY: entries 1..=n are backend slots.
        unsafe { self.entries[1 + i].backend }
    }

    /// The counter slots, each backend slot's with its name's hash.
    fn slots(&self) -> Slots {
        let backends = self.names.iter().zip(0..self.backend_count()).map(|(h, i)| (*h, self.slot(i).counter)).collect();
        Slots { route: self.header().counters, backends }
    }

    /// Every counter slot it names: the route's, then each backend slot's.
    fn counter_slots(&self) -> impl Iterator<Item = u32> + '_ {
        let route = self.header().counters;
        [route].into_iter().chain((0..self.backend_count()).map(|i| self.slot(i).counter))
    }

    /// Whether its backends are named `names`, in this order.
    fn same_names(&self, names: &[Text]) -> bool {
        self.names.len() == names.len() && self.names.iter().zip(names).all(|(h, n)| *h == name_hash(n))
    }
}

impl PartialEq for Kept {
    fn eq(&self, other: &Self) -> bool {
        self.names == other.names && self.table() == other.table()
    }
}

impl Eq for Kept {}

impl std::fmt::Debug for Kept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kept").field("table", &self.table()).field("names", &self.names).finish()
    }
}

/// A table freshly compiled or one in force, for comparing contents.
#[derive(Clone, Copy)]
enum View<'a> {
    New(&'a Table),
    Kept(&'a Kept),
}

impl View<'_> {
    fn header(&self) -> TableHeader {
        match self {
            View::New(t) => t.header,
            View::Kept(k) => k.header(),
        }
    }

    fn slot(&self, i: usize) -> BackendSlot {
        match self {
            View::New(t) => t.backends[i],
            View::Kept(k) => k.slot(i),
        }
    }

    fn len(&self) -> usize {
        match self {
            View::New(t) => t.entry_count() as usize,
            View::Kept(k) => k.entries.len(),
        }
    }

    /// Endpoint `i`, counting from the first endpoint entry.
    fn endpoint(&self, i: usize) -> Endpoint {
        match self {
            View::New(t) => t.endpoints[i],
            // SAFETY: entries after the backend slots are endpoints.
            View::Kept(k) => unsafe { k.entries[1 + k.backend_count() + i].endpoint },
        }
    }
}

/// What `ROUTES` holds, as [`Transition::between`] asks it: the compiler's
/// tables in force, or (in tests) a simulated kernel.
pub trait InForce {
    /// Whether `key` has a table.
    fn has(&self, key: &ServiceKey) -> bool;
    /// Whether `key`'s table is exactly `table`, counter slots included.
    fn holds(&self, key: &ServiceKey, table: &Table) -> bool;
}

impl InForce for Tables {
    fn has(&self, key: &ServiceKey) -> bool {
        self.contains_key(key)
    }

    fn holds(&self, key: &ServiceKey, table: &Table) -> bool {
        self.get(key) == Some(table)
    }
}

impl InForce for Compiler {
    fn has(&self, key: &ServiceKey) -> bool {
        self.tables.contains_key(key)
    }

    fn holds(&self, key: &ServiceKey, table: &Table) -> bool {
        self.tables.get(key).is_some_and(|k| {
            let (old, new) = (View::Kept(k), View::New(table));
            old.header() == new.header() && same_content(old, new) && (0..k.backend_count()).all(|i| old.slot(i) == new.slot(i))
        })
    }
}

/// One generation: what to write and remove to go from the tables in force
/// to the next ones, with stable class ids.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Generation {
    /// Tables that are new or changed, counters assigned.
    pub tables: Tables,
    /// Tables that go away.
    pub removed: Vec<ServiceKey>,
    /// Entries of new classes to hold while the base entries are still the
    /// previous generation's: where a new class has no override because its
    /// route equals the new base route, but the old base route differs. Written
    /// before the switch, removed once the base entries are updated.
    pub bridge: Tables,
    /// Kernel id of each class of the resolution, by position (0: base).
    pub class_ids: Vec<u32>,
    /// Class ids in force after this generation, [`BASE_CLASS`] included.
    pub live_classes: BTreeSet<u32>,
    /// Per table of [`Generation::tables`]: the backends' names in table order.
    pub backend_names: BTreeMap<ServiceKey, Vec<Text>>,
    /// `COUNTERS` slots of the previous generation that no table of this one
    /// names: delete them once the previous generation's tables are gone.
    pub released_counters: Vec<u32>,
    /// Tables in force after this generation.
    pub routes: usize,
    /// The compiler's state after it, for [`Compiler::commit`].
    classes: BTreeMap<u32, BTreeSet<ServiceKey>>,
    last: u32,
    last_counter: u32,
    wrapped: bool,
}

impl Generation {
    /// Whether nothing changes in `ROUTES`.
    pub fn is_empty(&self) -> bool {
        self.tables.is_empty() && self.removed.is_empty() && self.bridge.is_empty()
    }
}

/// Whether two tables are the same but for their counter slots.
fn same_content(a: View<'_>, b: View<'_>) -> bool {
    let (ha, hb) = (a.header(), b.header());
    let slot = |s: BackendSlot| BackendSlot { counter: 0, ..s };
    let n = ha.backend_count as usize;
    TableHeader { counters: 0, ..ha } == TableHeader { counters: 0, ..hb }
        && a.len() == b.len()
        && (0..n).all(|i| slot(a.slot(i)) == slot(b.slot(i)))
        && (0..a.len() - 1 - n).all(|i| a.endpoint(i) == b.endpoint(i))
}

/// Whether two freshly compiled tables are the same but for their counter slots.
fn same_tables(a: &Table, b: &Table) -> bool {
    same_content(View::New(a), View::New(b))
}

fn base_key(addr: (IpAddr, u16)) -> ServiceKey {
    service_key(BASE_CLASS, addr.0, addr.1)
}

impl Compiler {
    /// A compiler with nothing in force.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every table in force (built on each call: the compiler keeps them
    /// in a compact form).
    pub fn tables(&self) -> Tables {
        self.tables.iter().map(|(k, t)| (*k, t.table())).collect()
    }

    /// The table in force for `key`.
    pub fn table(&self, key: &ServiceKey) -> Option<Table> {
        self.tables.get(key).map(Kept::table)
    }

    /// The next generation: base destinations `changed` (and any of an
    /// uncommitted generation) recompiled from `base`, and the classes'
    /// overrides (`classes[i]` is class `i + 1` of the resolution) compared
    /// with the tables in force.
    pub fn compile<'r>(
        &mut self,
        changed: BTreeSet<(IpAddr, u16)>,
        base: impl Fn((IpAddr, u16)) -> Option<&'r ResolvedRoute> + Sync,
        classes: &[BTreeMap<(IpAddr, u16), &ResolvedRoute>],
    ) -> Result<Generation, CompileError> {
        /// Below this many destinations, starting threads costs more than it saves.
        const PARALLEL_ROUTES: usize = 512;
        self.pending.extend(changed);
        let names_of = |route: &ResolvedRoute| route.backends.iter().map(|b| b.name.clone()).collect::<Vec<_>>();
        let mut g = Generation { last: self.last, last_counter: self.last_counter, ..Generation::default() };
        // Base destinations: what changed, appeared or went away.
        // Each destination on its own: on one thread per CPU when there are many.
        let one = |addr: (IpAddr, u16)| -> Result<Option<(ServiceKey, Option<Named>)>, CompileError> {
            let key = base_key(addr);
            let new = base(addr).map(|r| Ok::<_, CompileError>((compile_route(r)?, names_of(r)))).transpose()?;
            let same = match (self.tables.get(&key), &new) {
                (Some(old), Some((t, names))) => same_content(View::Kept(old), View::New(t)) && old.same_names(names),
                (None, None) => true,
                _ => false,
            };
            Ok((!same).then_some((key, new)))
        };
        let pending: Vec<(IpAddr, u16)> = self.pending.iter().copied().collect();
        let compiled = par_chunks(&pending, PARALLEL_ROUTES, |run| run.iter().map(|&a| one(a)).collect::<Vec<_>>());
        // Collected, not inserted one by one: a bulk build is faster and
        // leaves full nodes (the same below).
        let base_new: BTreeMap<ServiceKey, Option<Named>> = compiled.into_iter().flatten().filter_map(Result::transpose).collect::<Result<_, _>>()?;
        let new_base = |key: &ServiceKey| match base_new.get(key) {
            Some(t) => t.as_ref().map(|(t, _)| View::New(t)),
            None => self.tables.get(key).map(View::Kept),
        };
        let changed_base: Vec<ServiceKey> = base_new.keys().copied().collect();
        // Classes: overrides against the new base, ids kept where the routes are the same.
        let mut wanted: Vec<(u32, BTreeMap<ServiceKey, Named>)> = Vec::new();
        let mut bridge_keys = Vec::new();
        g.class_ids.push(BASE_CLASS);
        for class in classes {
            let mut overrides = BTreeMap::new();
            for (&addr, route) in class {
                let table = compile_route(route)?;
                let key = base_key(addr);
                if !new_base(&key).is_some_and(|b| same_content(b, View::New(&table))) {
                    overrides.insert(key, (table, names_of(route)));
                }
            }
            if overrides.is_empty() {
                // Exactly the base routes: these workloads need no class.
                g.class_ids.push(BASE_CLASS);
                continue;
            }
            if let Some((id, _)) = wanted.iter().find(|(_, o)| same_overrides(o, &overrides)) {
                // Same routes as a class of this generation already has.
                g.class_ids.push(*id);
                continue;
            }
            let route_new = |key: &ServiceKey| overrides.get(key).map(|(t, _)| View::New(t)).or_else(|| new_base(key));
            let kept = self.classes.iter().find(|(id, old_keys)| {
                !wanted.iter().any(|(w, _)| w == *id)
                    && old_keys.iter().chain(overrides.keys()).chain(&changed_base).all(|k| {
                        let old = self.tables.get(&ServiceKey { class: **id, ..*k }).or_else(|| self.tables.get(k));
                        match (old, route_new(k)) {
                            (Some(a), Some(b)) => same_content(View::Kept(a), b),
                            (None, None) => true,
                            _ => false,
                        }
                    })
            });
            let id = match kept {
                Some((id, _)) => *id,
                None => {
                    let id = fresh_id(&mut g.last, |id| self.classes.contains_key(&id) || wanted.iter().any(|(w, _)| *w == id));
                    for key in &changed_base {
                        let before_and_after = self.tables.contains_key(key) && base_new[key].is_some();
                        if before_and_after && !overrides.contains_key(key) {
                            bridge_keys.push(ServiceKey { class: id, ..*key });
                        }
                    }
                    id
                }
            };
            g.class_ids.push(id);
            wanted.push((id, overrides));
        }
        // What to write and remove.
        let mut writes: Vec<(ServiceKey, Named)> = Vec::with_capacity(base_new.len());
        for (key, new) in base_new {
            match new {
                Some(t) => writes.push((key, t)),
                None => g.removed.push(key),
            }
        }
        for (id, overrides) in &wanted {
            let old_keys = self.classes.get(id);
            for (key, (table, names)) in overrides {
                let class_key = ServiceKey { class: *id, ..*key };
                let same = self.tables.get(&class_key).is_some_and(|old| same_content(View::Kept(old), View::New(table)) && old.same_names(names));
                if !same {
                    writes.push((class_key, (table.clone(), names.clone())));
                }
            }
            for key in old_keys.into_iter().flatten().filter(|k| !overrides.contains_key(k)) {
                g.removed.push(ServiceKey { class: *id, ..*key });
            }
            g.classes.insert(*id, overrides.keys().copied().collect());
        }
        for (id, keys) in &self.classes {
            if !g.classes.contains_key(id) {
                g.removed.extend(keys.iter().map(|k| ServiceKey { class: *id, ..*k }));
            }
        }
        g.removed.sort_unstable();
        // In key order, so fresh slots are handed out in it.
        writes.sort_unstable_by_key(|(k, _)| *k);
        let added = writes.iter().filter(|(k, _)| !self.tables.contains_key(k)).count();
        g.routes = self.tables.len() + added - g.removed.len();
        if g.routes + bridge_keys.len() > MAX_ROUTES as usize {
            return Err(CompileError::TooManyRoutes { count: g.routes + bridge_keys.len() });
        }
        // Counter slots: kept by what they count, fresh for what is new.
        // Fresh slots count up to MAX_COUNTERS (the size of the kernel's
        // array); once they wrap around, each is checked against the slots
        // in use. Until they wrap, this generation's fresh slots are one
        // range (`unwrapped`); after, each is recorded.
        let mut fresh_used: HashSet<u32> = HashSet::new();
        let mut unwrapped: Option<std::ops::Range<u32>> = None;
        let mut in_use: Option<HashSet<u32>> = None;
        let kept = &self.tables;
        let mut wrapped = self.wrapped;
        let mut fresh = |last: &mut u32, width: u32| -> Result<u32, CompileError> {
            // Every start is tried at most once per wrap: then all are taken.
            let mut tries = 0u32;
            loop {
                tries += 1;
                if tries > 2 * MAX_COUNTERS {
                    return Err(CompileError::TooManyCounters);
                }
                let first = last.wrapping_add(1);
                if first.checked_add(width).is_none_or(|end| end > MAX_COUNTERS) {
                    wrapped = true;
                    // The next start is 0.
                    *last = u32::MAX;
                    continue;
                }
                *last = first + width - 1;
                if !wrapped {
                    let range = unwrapped.get_or_insert(first..first);
                    range.end = first + width;
                    return Ok(first);
                }
                let used = in_use.get_or_insert_with(|| kept.values().flat_map(Kept::counter_slots).collect());
                let taken = |s: u32| used.contains(&s) || fresh_used.contains(&s) || unwrapped.as_ref().is_some_and(|r| r.contains(&s));
                if (first..first + width).all(|s| !taken(s)) {
                    fresh_used.extend(first..first + width);
                    return Ok(first);
                }
            }
        };
        let mut released = Vec::new();
        let (mut backend_names, mut tables) = (Vec::with_capacity(writes.len()), Vec::with_capacity(writes.len()));
        for (key, (mut table, names)) in writes {
            let old = self.tables.get(&key).map(Kept::slots);
            let old = old.as_ref();
            let route = match old {
                Some(s) => s.route,
                None => fresh(&mut g.last_counter, 1)?,
            };
            let mut taken = vec![false; old.map_or(0, |s| s.backends.len())];
            let mut backends = Vec::with_capacity(names.len());
            for name in &names {
                let hash = name_hash(name);
                let reuse = old.and_then(|s| s.backends.iter().enumerate().find(|(i, (n, _))| !taken[*i] && *n == hash));
                let slot = match reuse {
                    Some((i, (_, slot))) => {
                        taken[i] = true;
                        *slot
                    }
                    None => fresh(&mut g.last_counter, 1)?,
                };
                backends.push((hash, slot));
            }
            if let Some(old) = old {
                released.extend(old.backends.iter().zip(&taken).filter(|(_, t)| !**t).map(|((_, s), _)| *s));
            }
            table.header.counters = route;
            for (slot, (_, counter)) in table.backends.iter_mut().zip(&backends) {
                slot.counter = *counter;
            }
            backend_names.push((key, names));
            tables.push((key, table));
        }
        for key in &g.removed {
            if let Some(old) = self.tables.get(key) {
                released.extend(old.counter_slots());
            }
        }
        g.backend_names = backend_names.into_iter().collect();
        g.tables = tables.into_iter().collect();
        g.wrapped = wrapped;
        released.sort_unstable();
        released.dedup();
        g.released_counters = released;
        // A bridge entry is the new base table itself, counters included.
        g.bridge = bridge_keys.into_iter().map(|key| (key, g.tables[&ServiceKey { class: BASE_CLASS, ..key }].clone())).collect();
        g.live_classes = g.classes.keys().copied().chain([BASE_CLASS]).collect();
        Ok(g)
    }

    /// Records that the kernel holds `g` now.
    pub fn commit(&mut self, g: &Generation) {
        for key in &g.removed {
            self.tables.remove(key);
        }
        let kept = |(key, table): (&ServiceKey, &Table)| (*key, Kept::new(table, &g.backend_names[key]));
        crate::sorted::upsert(&mut self.tables, g.tables.iter().map(kept), drop);
        self.classes = g.classes.clone();
        self.last = g.last;
        self.last_counter = g.last_counter;
        self.wrapped = g.wrapped;
        self.pending.clear();
    }
}

/// Whether two override sets give the same tables.
fn same_overrides(a: &BTreeMap<ServiceKey, Named>, b: &BTreeMap<ServiceKey, Named>) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|((ka, (ta, na)), (kb, (tb, nb)))| ka == kb && na == nb && same_tables(ta, tb))
}

/// The next id after `last` that is neither [`BASE_CLASS`] nor `taken`.
fn fresh_id(last: &mut u32, taken: impl Fn(u32) -> bool) -> u32 {
    loop {
        *last = last.wrapping_add(1);
        if *last != BASE_CLASS && !taken(*last) {
            return *last;
        }
    }
}

/// The order in which the kernel's `ROUTES` go from `installed` to a
/// [`Generation`], so that every connect sees its workload's old routes or
/// its new ones and nothing else. Between [`Transition::classes`] and
/// [`Transition::base`] the caller switches `WORKLOADS` to the new class ids.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Transition {
    /// First: entries of non-base classes that are new or changed, bridges
    /// included. No workload maps to a new class yet, and a kept class only
    /// gains entries equal to the routes it already has.
    pub classes: Vec<ServiceKey>,
    /// Then, after the workload switch: base entries that are new or changed.
    pub base: Vec<ServiceKey>,
    /// Then: entries no workload can reach any more (bridges, entries of kept
    /// classes that now equal the base, base destinations that went away).
    pub remove: Vec<ServiceKey>,
    /// Last, after a grace period: entries of classes that went away, which a
    /// connect that read the old `WORKLOADS` entry may still look up.
    pub retire: Vec<ServiceKey>,
}

impl Transition {
    /// The steps from `installed` (what `ROUTES` holds) to `next`.
    pub fn between(installed: &impl InForce, next: &Generation) -> Self {
        let mut t = Self::default();
        for (key, table) in next.tables.iter().chain(&next.bridge) {
            if installed.holds(key, table) {
                continue;
            }
            if key.class == BASE_CLASS { t.base.push(*key) } else { t.classes.push(*key) }
        }
        t.classes.sort_unstable();
        t.classes.dedup();
        for key in next.removed.iter().chain(next.bridge.keys().filter(|k| !next.tables.contains_key(k))) {
            if !installed.has(key) && !next.bridge.contains_key(key) {
                continue;
            }
            if next.live_classes.contains(&key.class) { t.remove.push(*key) } else { t.retire.push(*key) }
        }
        t.remove.sort_unstable();
        t.remove.dedup();
        t
    }

    /// The table `key` gets in step [`Transition::classes`] or [`Transition::base`].
    pub fn table<'a>(next: &'a Generation, key: &ServiceKey) -> Option<&'a Table> {
        next.tables.get(key).or_else(|| next.bridge.get(key))
    }

    /// Whether nothing changes in `ROUTES`.
    pub fn is_empty(&self) -> bool {
        self.classes.is_empty() && self.base.is_empty() && self.remove.is_empty() && self.retire.is_empty()
    }
}

/// The generation that brings `compiler` to the whole of `resolution`:
/// every base destination it has or had is compiled again (the tests'
/// entry to the compiler, from a materialized resolution).
pub fn compile_resolution(compiler: &mut Compiler, resolution: &Resolution) -> Result<Generation, CompileError> {
    let base: BTreeMap<(IpAddr, u16), &ResolvedRoute> =
        resolution.classes.first().map(|c| c.routes.iter().map(|r| ((r.vip, r.port), r)).collect()).unwrap_or_default();
    let mut changed: BTreeSet<(IpAddr, u16)> = base.keys().copied().collect();
    changed.extend(compiler.tables.keys().filter(|k| k.class == BASE_CLASS).map(|k| {
        let d = destination(k);
        (d.ip(), d.port())
    }));
    let classes: Vec<BTreeMap<(IpAddr, u16), &ResolvedRoute>> = resolution
        .classes
        .iter()
        .skip(1)
        .map(|c| c.routes.iter().filter(|r| base.get(&(r.vip, r.port)) != Some(r)).map(|r| ((r.vip, r.port), r)).collect())
        .collect();
    compiler.compile(changed, |a| base.get(&a).copied(), &classes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resolve::ResolvedBackend;

    fn route(i: u8, backends: &[&str]) -> ResolvedRoute {
        ResolvedRoute {
            mesh: "default".into(),
            service: format!("MeshService/s{i}").into(),
            vip: IpAddr::from([10, 0, 0, i]),
            port: 80,
            app_protocol: None,
            policy: None,
            backends: backends
                .iter()
                .map(|b| ResolvedBackend { name: (*b).into(), weight: 1, endpoints: [SocketAddr::from(([10, 1, 0, i], 80))].into() })
                .collect(),
            why: Vec::new(),
        }
    }

    /// Counter slots handed out after the numbers wrap around skip every slot in use.
    #[test]
    fn counter_slots_stay_unique_when_their_numbers_wrap() {
        let mut compiler = Compiler { last_counter: MAX_COUNTERS - 5, ..Compiler::default() };
        let mut routes: BTreeMap<(IpAddr, u16), ResolvedRoute> = BTreeMap::new();
        for round in 0..6u8 {
            let r = route(round, &["a", "b", "c"]);
            routes.insert((r.vip, r.port), r);
            let changed = routes.keys().copied().collect();
            let g = compiler.compile(changed, |a| routes.get(&a), &[]).unwrap();
            compiler.commit(&g);
            let mut slots: Vec<u32> = compiler
                .tables()
                .values()
                .flat_map(|t| [t.header.counters].into_iter().chain(t.backends.iter().map(|b| b.counter)))
                .collect();
            let n = slots.len();
            slots.sort_unstable();
            slots.dedup();
            assert_eq!(slots.len(), n, "round {round}: a slot counts two things");
        }
        assert!(compiler.wrapped);
    }
}
