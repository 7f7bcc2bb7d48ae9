//! From resolved routes to the kernel's route tables, and diffs between two
//! sets of tables. Pure: no kernel access. The layout is documented in
//! `redirector-common`.

use crate::resolve::{Resolution, ResolvedRoute};
use redirector_common::{
    BASE_CLASS, BackendSlot, Endpoint, MAX_ROUTES, MAX_TABLE_ENTRIES, ServiceKey, TableEntry, TableHeader,
    mapped_v4, reject_bound,
};
use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, SocketAddr},
};

/// Every route table, by the destination it serves.
pub type Tables = BTreeMap<ServiceKey, Table>;

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
        return Err(CompileError::WeightOverflow { service: route.service.clone(), addr });
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
        return Err(CompileError::TableTooLarge { service: route.service.clone(), addr, entries });
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
        reserved: 0,
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
/// next, so a reload never shows one workload another's routes.
///
/// The kernel finds a connect's class in `WORKLOADS`, then its route in
/// `ROUTES` under that class (falling back to the base class). If ids were
/// handed out afresh each generation, a class's new entries could be written
/// under an id other workloads still map to. Here a class keeps its id
/// exactly when its routes (every destination, base fallbacks included) are
/// unchanged; a changed class gets an id no workload maps to yet, so its
/// entries can be written before any workload is switched to it. Ids of
/// classes that go away are not handed out again while the book lives.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClassBook {
    /// The base class's tables (keys of class [`BASE_CLASS`]).
    base: Tables,
    /// Per live class: its override tables (keys of that class) and a hash
    /// of its whole route set (a quick first test before the exact one).
    classes: BTreeMap<u32, (u64, Tables)>,
    /// Last id handed out.
    last: u32,
    /// `COUNTERS` slots in use, by what they count.
    counters: HashMap<Counted, u32>,
    /// Last counter slot handed out.
    last_counter: u32,
}

/// What a `COUNTERS` slot counts: a route's two slots (refused, origin not
/// recorded), or one backend of a route, by its name and how many backends
/// of the same name come before it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Counted {
    Route(ServiceKey),
    Backend(ServiceKey, String, u32),
}

/// One generation's tables with stable class ids, and what to hold in the
/// kernel while workloads switch classes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Generation {
    /// The tables in force once the generation is applied: every base
    /// destination, and each class's destinations where it differs from base.
    pub tables: Tables,
    /// Entries of new classes to hold while the base entries are still the
    /// previous generation's: where a new class has no override because its
    /// route equals the new base route, but the old base route differs. Written
    /// before the switch, removed once the base entries are updated.
    pub bridge: Tables,
    /// Stable id of each class of the resolution, by its position.
    pub class_ids: Vec<u32>,
    /// Per table of [`Generation::tables`]: the backends' names in table order.
    pub backend_names: BTreeMap<ServiceKey, Vec<String>>,
    /// `COUNTERS` slots of the previous generation that no table of this one
    /// names: delete them once the previous generation's tables are gone.
    pub released_counters: Vec<u32>,
    /// The book after this generation (commit it once the kernel took it).
    pub book: ClassBook,
}

/// Compiles `resolution` with class ids that follow `previous`: see [`ClassBook`].
pub fn compile_generation(resolution: &Resolution, previous: &ClassBook) -> Result<Generation, CompileError> {
    let names_of = |route: &ResolvedRoute| route.backends.iter().map(|b| b.name.clone()).collect::<Vec<_>>();
    let mut backend_names = BTreeMap::new();
    let mut base = Tables::new();
    for route in resolution.classes.first().map(|c| c.routes.as_slice()).unwrap_or_default() {
        let key = service_key(BASE_CLASS, route.vip, route.port);
        base.insert(key, compile_route(route)?);
        backend_names.insert(key, names_of(route));
    }
    // Base destinations whose table changed, appeared or went away.
    let changed_base: Vec<ServiceKey> = base
        .iter()
        .filter(|(k, t)| previous.base.get(k) != Some(t))
        .map(|(k, _)| *k)
        .chain(previous.base.keys().filter(|k| !base.contains_key(k)).copied())
        .collect();
    let mut book = ClassBook { base, classes: BTreeMap::new(), last: previous.last, counters: HashMap::new(), last_counter: previous.last_counter };
    let mut class_ids = vec![BASE_CLASS];
    // Bridge entries, by key: each holds its base destination's table.
    let mut bridge_keys = Vec::new();
    for class in resolution.classes.iter().skip(1) {
        let mut overrides = Tables::new();
        let mut names = BTreeMap::new();
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        for route in &class.routes {
            let key = service_key(BASE_CLASS, route.vip, route.port);
            let table = compile_route(route)?;
            std::hash::Hash::hash(&(key, &table), &mut hasher);
            if book.base.get(&key) != Some(&table) {
                overrides.insert(key, table);
                names.insert(key, names_of(route));
            }
        }
        let hash = std::hash::Hasher::finish(&hasher);
        if overrides.is_empty() {
            // Exactly the base routes: these workloads need no class.
            class_ids.push(BASE_CLASS);
            continue;
        }
        if let Some(&id) = book.classes.iter().find(|(_, (h, o))| *h == hash && *o == overrides).map(|(id, _)| id) {
            // Same routes as a class of this generation already has.
            class_ids.push(id);
            continue;
        }
        let kept = previous
            .classes
            .iter()
            .filter(|(id, (h, _))| *h == hash && !book.classes.contains_key(id))
            .find(|(_, (_, old))| same_routes(&overrides, &book.base, old, &previous.base, &changed_base))
            .map(|(id, _)| *id);
        let id = match kept {
            Some(id) => id,
            None => {
                let id = fresh_id(&mut book.last, |id| previous.classes.contains_key(&id) || book.classes.contains_key(&id));
                for key in &changed_base {
                    if book.base.contains_key(key) && previous.base.contains_key(key) && !overrides.contains_key(key) {
                        bridge_keys.push(ServiceKey { class: id, ..*key });
                    }
                }
                id
            }
        };
        backend_names.extend(names.into_iter().map(|(k, n)| (ServiceKey { class: id, ..k }, n)));
        book.classes.insert(id, (hash, overrides));
        class_ids.push(id);
    }
    let mut tables = book.base.clone();
    for (&id, (_, overrides)) in &book.classes {
        tables.extend(overrides.iter().map(|(k, t)| (ServiceKey { class: id, ..*k }, t.clone())));
    }
    if tables.len() + bridge_keys.len() > MAX_ROUTES as usize {
        return Err(CompileError::TooManyRoutes { count: tables.len() + bridge_keys.len() });
    }
    let released_counters = assign_counters(&mut tables, &backend_names, previous, &mut book);
    // A bridge entry is the base table itself, counters included.
    let bridge = bridge_keys.into_iter().map(|key| (key, tables[&ServiceKey { class: BASE_CLASS, ..key }].clone())).collect();
    Ok(Generation { tables, bridge, class_ids, backend_names, released_counters, book })
}

/// Gives every table its `COUNTERS` slots: the slots a route and each of its
/// backends (by name) had in `previous`, or fresh ones. Returns the slots of
/// `previous` no table names any more.
fn assign_counters(tables: &mut Tables, names: &BTreeMap<ServiceKey, Vec<String>>, previous: &ClassBook, book: &mut ClassBook) -> Vec<u32> {
    let in_use: std::collections::HashSet<u32> = previous.counters.values().copied().collect();
    let fresh = |book: &mut ClassBook, width: u32| -> u32 {
        loop {
            let first = book.last_counter.wrapping_add(1);
            book.last_counter = book.last_counter.wrapping_add(width);
            if (first..first.saturating_add(width)).all(|s| !in_use.contains(&s)) && first.checked_add(width).is_some() {
                return first;
            }
        }
    };
    for (key, table) in tables.iter_mut() {
        let route = Counted::Route(*key);
        let slot = match previous.counters.get(&route) {
            Some(&slot) => slot,
            None => fresh(book, 2),
        };
        table.header.counters = slot;
        book.counters.insert(route, slot);
        let empty = Vec::new();
        let names = names.get(key).unwrap_or(&empty);
        for (i, backend) in table.backends.iter_mut().enumerate() {
            let name = names.get(i).cloned().unwrap_or_default();
            let occurrence = names[..i.min(names.len())].iter().filter(|n| **n == name).count() as u32;
            let counted = Counted::Backend(*key, name, occurrence);
            let slot = match previous.counters.get(&counted) {
                Some(&slot) => slot,
                None => fresh(book, 1),
            };
            backend.counter = slot;
            book.counters.insert(counted, slot);
        }
    }
    let live: std::collections::HashSet<u32> = book.counters.values().copied().collect();
    let mut released: Vec<u32> = previous.counters.values().copied().filter(|s| !live.contains(s)).collect();
    released.sort_unstable();
    released
}

/// Whether a class with `new` overrides over `new_base` has exactly the
/// routes of one with `old` overrides over `old_base`. Only the keys either
/// overrides, or where the bases differ, can tell them apart.
fn same_routes(new: &Tables, new_base: &Tables, old: &Tables, old_base: &Tables, changed_base: &[ServiceKey]) -> bool {
    let route = |overrides: &Tables, base: &Tables, key: &ServiceKey| overrides.get(key).or_else(|| base.get(key)).cloned();
    new.keys()
        .chain(old.keys())
        .chain(changed_base)
        .all(|k| route(new, new_base, k) == route(old, old_base, k))
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
    pub fn between(installed: &Tables, next: &Generation) -> Self {
        let live = |class: u32| class == BASE_CLASS || next.class_ids.contains(&class) || next.book.classes.contains_key(&class);
        let mut t = Self::default();
        for (key, table) in next.tables.iter().chain(&next.bridge) {
            if installed.get(key) == Some(table) {
                continue;
            }
            if key.class == BASE_CLASS { t.base.push(*key) } else { t.classes.push(*key) }
        }
        t.classes.sort_unstable();
        t.classes.dedup();
        for key in installed.keys().chain(next.bridge.keys()) {
            if next.tables.contains_key(key) {
                continue;
            }
            if live(key.class) { t.remove.push(*key) } else { t.retire.push(*key) }
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
