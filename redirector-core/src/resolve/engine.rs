//! Incremental resolution: the routes of every destination for the base
//! class and for each workload, kept from one update to the next, and
//! recomputed only where a change can alter them.
//!
//! A route is a *cell*: one destination address, for the base class or for
//! one workload. A cell records the tokens of every lookup it made
//! ([`super::world`]); a store change fires tokens, and only cells that read
//! a fired token are resolved again. A workload has cells only where its
//! routes may differ from the base class's: the destinations of policies
//! that select it and not the base class (or the reverse), and its own
//! outbounds. Everywhere else a workload's route is the base route, because
//! the same `to` entries apply to both. The result after any sequence of
//! changes equals a fresh engine's on the same resources (property-tested).

use super::{
    BASE_CLASS, Class, HostResolver, Resolution, ResolvedRoute, Workload,
    route::{Cache, Ctx, Destination},
    select::{CGROUP_LABEL, Proxy},
    world::{Addr, Entries, IdMap, IdSet, Token, World, entry_name, in_delta, ix, policy_of},
};
use crate::{
    model::{Config, Problem, load::par_chunks},
    store::{Event, Key, Resource, Store, file_source, resources},
};
use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    hash::{Hash as _, Hasher as _},
    path::{Component, Path, PathBuf},
};

/// One route: of the base class (`owner: None`) or of one workload.
#[derive(Debug)]
struct Cell {
    addr: Addr,
    owner: Option<Key>,
    /// `None` when no destination is declared there (any more).
    route: Option<ResolvedRoute>,
    /// Boxed slices, not vectors: a cell is kept, not grown, and there is one
    /// per destination.
    problems: Box<[Problem]>,
    /// Tokens read, sorted.
    deps: Box<[u64]>,
}

/// A workload: a Dataplane with a cgroup label.
#[derive(Debug, Default)]
struct WorkloadState {
    /// The cgroup, or `None` when the label is not a valid path.
    cgroup: Option<PathBuf>,
    /// The label's problem, when it is not a valid path.
    cgroup_problem: Option<Problem>,
    /// Problems of its outbounds.
    problems: Vec<Problem>,
    /// Tokens its cell set depends on, sorted.
    deps: Vec<u64>,
    /// Its cells, by address.
    cells: BTreeMap<Addr, u32>,
    /// Its cells whose route differs from the base route there.
    overrides: BTreeMap<Addr, u32>,
    /// Hash of its overrides' routes.
    hash: u64,
}

/// What one [`Engine::update`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct UpdateStats {
    /// Cells resolved again.
    pub resolved: usize,
    /// Workloads whose cell set was rebuilt.
    pub workloads_rebuilt: usize,
}

/// The incremental resolver; see the module docs.
#[derive(Debug, Default)]
pub struct Engine {
    world: World,
    cells: Vec<Option<Cell>>,
    free: Vec<u32>,
    base: BTreeMap<Addr, u32>,
    workloads: BTreeMap<Key, WorkloadState>,
    /// Token -> cells that read it (may hold stale entries, checked on use).
    rev: IdMap<Refs>,
    /// Token -> workloads whose cell set depends on it (stale entries as above).
    wrev: IdMap<BTreeSet<Key>>,
    /// Entries in `rev`, stale ones included: when far more than the cells'
    /// tokens (`live_deps`), `rev` is rebuilt.
    rev_entries: usize,
    live_deps: usize,
    fired: IdSet,
    dirty_addrs: BTreeSet<Addr>,
    dirty_workloads: BTreeSet<Key>,
    /// Base addresses whose route changed since [`Engine::take_changed`].
    changed: BTreeSet<Addr>,
    /// Classes other than the base: per class, its members (key order) and
    /// the overrides of its first member.
    classes: Vec<(Vec<Key>, BTreeMap<Addr, u32>)>,
    /// Class of each valid workload (0: the base class).
    class_of: BTreeMap<Key, u32>,
    /// Workloads whose cgroup another workload (earlier in key order) has.
    conflicts: Vec<Problem>,
    /// Whether the classes or workloads changed since [`Engine::take_changed`].
    classes_changed: bool,
    /// The problems of the base cells, counted (so listing them costs their
    /// number, not the number of routes).
    base_problems: BTreeMap<Sorted, usize>,
}

/// The cells that read one token: most tokens are read by one cell only,
/// so the list is boxed (an entry is two words, not four).
#[derive(Debug)]
#[expect(clippy::box_collection, reason = "a boxed list keeps the common one-cell entry small")]
enum Refs {
    One(u32),
    Many(Box<Vec<u32>>),
}

impl Refs {
    fn push(&mut self, c: u32) {
        match self {
            Refs::One(x) => *self = Refs::Many(Box::new(vec![*x, c])),
            Refs::Many(v) => v.push(c),
        }
    }

    fn len(&self) -> usize {
        match self {
            Refs::One(_) => 1,
            Refs::Many(v) => v.len(),
        }
    }

    fn to_vec(&self) -> Vec<u32> {
        match self {
            Refs::One(x) => vec![*x],
            Refs::Many(v) => v.to_vec(),
        }
    }

    fn from_vec(mut v: Vec<u32>) -> Option<Self> {
        match v.len() {
            0 => None,
            1 => Some(Refs::One(v[0])),
            _ => {
                v.shrink_to_fit();
                Some(Refs::Many(Box::new(v)))
            }
        }
    }
}

/// A problem ordered by file, resource, field path, message.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Sorted(Problem);

impl Ord for Sorted {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        problem_order(&self.0).cmp(&problem_order(&other.0))
    }
}

impl PartialOrd for Sorted {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Engine {
    /// An engine with no resources.
    pub fn new() -> Self {
        Self::default()
    }

    /// An engine whose routes leave out how they were decided
    /// ([`ResolvedRoute::why`] stays empty): for the agent, which never
    /// shows it, and saves the text of every route.
    pub fn without_explanations() -> Self {
        let mut engine = Self::default();
        engine.world.terse = true;
        engine
    }

    /// An engine holding every resource of `config` (each file a source).
    pub fn from_config(config: &Config) -> Self {
        let mut grouped: BTreeMap<(std::sync::Arc<Path>, Key), Vec<Resource>> = BTreeMap::new();
        for r in resources(config) {
            grouped.entry((file_source(&r.origin().file), r.key())).or_default().push(r);
        }
        let mut engine = Self::new();
        for ((source, key), resources) in grouped {
            engine.apply(Event { source, key, resources });
        }
        engine
    }

    /// The resources.
    pub fn store(&self) -> &Store {
        &self.world.store
    }

    /// Whether any MeshExternalService endpoint is a hostname.
    pub fn has_hostnames(&self) -> bool {
        !self.world.hostnames.is_empty()
    }

    /// Records one event; nothing is resolved until [`Engine::update`].
    pub fn apply(&mut self, event: Event) {
        let Some(change) = self.world.store.apply(event) else { return };
        // A policy may change which destinations a workload has its own routes to.
        let policies: Vec<_> = [&change.old, &change.new].into_iter().flatten().filter_map(policy_of).collect();
        if !policies.is_empty() {
            for w in &self.world.bound {
                let Some(dp) = self.world.dataplane(w) else { continue };
                if policies.iter().any(|(origin, target, _)| in_delta(dp, origin, *target)) {
                    self.dirty_workloads.insert(w.clone());
                }
            }
        }
        if matches!(change.old, Some(Resource::Dataplane(_))) || matches!(change.new, Some(Resource::Dataplane(_))) {
            self.dirty_workloads.insert(change.key.clone());
        }
        // Only tokens something read: at an install nothing has yet, and a
        // set of every token fired was most of an event's cost.
        let (rev, wrev, fired) = (&self.rev, &self.wrev, &mut self.fired);
        let mut fire = |id: u64| {
            if rev.contains_key(&id) || wrev.contains_key(&id) {
                fired.insert(id);
            }
        };
        self.world.apply(&change, &mut fire, &mut self.dirty_addrs);
    }

    /// Looks every hostname up again at the next update.
    pub fn refresh_dns(&mut self) {
        self.fired.insert(Token::Dns.id());
    }

    /// Resolves what the events since the last update may have changed.
    pub fn update(&mut self, dns: &dyn HostResolver) -> UpdateStats {
        let mut stats = UpdateStats::default();
        let mut cache = Cache::default();
        let mut dirty: BTreeSet<u32> = BTreeSet::new();
        for token in std::mem::take(&mut self.fired) {
            if let Some(refs) = self.rev.get(&token) {
                let cells = &self.cells;
                let before = refs.len();
                let mut list = refs.to_vec();
                list.retain(|&c| cells[c as usize].as_ref().is_some_and(|cell| cell.deps.binary_search(&token).is_ok()));
                list.sort_unstable();
                list.dedup();
                self.rev_entries -= before - list.len();
                dirty.extend(list.iter().copied());
                match Refs::from_vec(list) {
                    Some(refs) => {
                        self.rev.insert(token, refs);
                    }
                    None => {
                        self.rev.remove(&token);
                    }
                }
            }
            if let Some(list) = self.wrev.get_mut(&token) {
                let workloads = &self.workloads;
                list.retain(|w| workloads.get(w).is_some_and(|s| s.deps.binary_search(&token).is_ok()));
                self.dirty_workloads.extend(list.iter().cloned());
                if list.is_empty() {
                    self.wrev.remove(&token);
                }
            }
        }
        let mut base_changed = BTreeSet::new();
        if self.dirty_addrs.len() > self.cells.len() / 4 {
            // Many new destinations (an install): room for exactly their
            // cells, not twice as many.
            let fresh = self.dirty_addrs.iter().filter(|a| !self.base.contains_key(*a) && self.world.destinations.contains_key(*a)).count();
            self.cells.reserve_exact(fresh.saturating_sub(self.free.len()));
        }
        for addr in std::mem::take(&mut self.dirty_addrs) {
            match (self.world.destinations.contains_key(&addr), self.base.get(&addr).copied()) {
                (true, Some(c)) => {
                    dirty.insert(c);
                }
                (true, None) => {
                    let c = self.new_cell(addr, None);
                    self.base.insert(addr, c);
                    dirty.insert(c);
                }
                (false, Some(c)) => {
                    self.free_cell(c);
                    self.base.remove(&addr);
                    base_changed.insert(addr);
                }
                (false, None) => {}
            }
        }
        // Base cells first: workloads compare their routes with them.
        let (base_cells, workload_cells): (Vec<u32>, Vec<u32>) =
            dirty.into_iter().partition(|&c| self.cells[c as usize].as_ref().is_some_and(|cell| cell.owner.is_none()));
        stats.resolved += base_cells.len();
        self.resolve_base_cells(&base_cells, dns, &mut base_changed);
        self.compact();
        let mut touched: BTreeSet<Key> = BTreeSet::new();
        let rebuilt = std::mem::take(&mut self.dirty_workloads);
        for w in &rebuilt {
            stats.workloads_rebuilt += 1;
            stats.resolved += self.rebuild_workload(w, dns, &mut cache);
            touched.insert(w.clone());
        }
        for c in workload_cells {
            let Some(owner) = self.cells[c as usize].as_ref().and_then(|cell| cell.owner.clone()) else { continue };
            if rebuilt.contains(&owner) {
                continue;
            }
            stats.resolved += 1;
            self.resolve_cell(c, dns, &mut cache);
            touched.insert(owner);
        }
        // Where the base route changed, a workload's route may now equal it or differ.
        if !base_changed.is_empty() {
            for (key, state) in &self.workloads {
                if base_changed.iter().any(|a| state.cells.contains_key(a)) {
                    touched.insert(key.clone());
                }
            }
        }
        let mut regroup = !rebuilt.is_empty();
        for w in &touched {
            regroup |= self.refresh_overrides(w);
        }
        if regroup {
            self.regroup();
        }
        self.changed.extend(base_changed);
        stats
    }

    /// Rebuilds `rev` from the cells when stale entries outnumber live ones.
    fn compact(&mut self) {
        let live = self.live_deps;
        if self.rev_entries <= 2 * live + 4096 {
            return;
        }
        self.rev.clear();
        for (c, cell) in self.cells.iter().enumerate() {
            for &t in cell.iter().flat_map(|cell| &cell.deps) {
                self.rev.entry(t).and_modify(|r| r.push(c as u32)).or_insert(Refs::One(c as u32));
            }
        }
        self.rev_entries = live;
        self.wrev.retain(|_, set| !set.is_empty());
    }

    fn new_cell(&mut self, addr: Addr, owner: Option<Key>) -> u32 {
        let cell = Cell { addr, owner, route: None, problems: Box::default(), deps: Box::default() };
        match self.free.pop() {
            Some(c) => {
                self.cells[c as usize] = Some(cell);
                c
            }
            None => {
                self.cells.push(Some(cell));
                (self.cells.len() - 1) as u32
            }
        }
    }

    fn free_cell(&mut self, c: u32) {
        if let Some(cell) = self.cells[c as usize].take() {
            self.live_deps -= cell.deps.len();
            if cell.owner.is_none() {
                self.count_problems(&cell.problems, false);
            }
        }
        self.free.push(c);
    }

    fn count_problems(&mut self, problems: &[Problem], add: bool) {
        for p in problems {
            let key = Sorted(p.clone());
            if add {
                *self.base_problems.entry(key).or_default() += 1;
            } else if let Some(n) = self.base_problems.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    self.base_problems.remove(&key);
                }
            }
        }
    }

    /// Resolves one cell again; returns whether its route changed.
    fn resolve_cell(&mut self, c: u32, dns: &dyn HostResolver, cache: &mut Cache) -> bool {
        match compute_cell(&self.world, &self.cells, c, dns, cache) {
            Some(computed) => self.store_cell(c, computed),
            None => false,
        }
    }

    /// Resolves `cells` (the base class's), on one thread per CPU when there
    /// are many: each cell reads only the world, so they are independent.
    /// Adds the addresses whose route changed to `changed`.
    fn resolve_base_cells(&mut self, cells: &[u32], dns: &dyn HostResolver, changed: &mut BTreeSet<Addr>) {
        /// Below this, starting threads costs more than it saves.
        const PARALLEL_CELLS: usize = 512;
        let (world, all) = (&self.world, &self.cells);
        // Each run its own endpoint cache: entries are pure, so a second
        // copy only costs the lookup again.
        let computed = par_chunks(cells, PARALLEL_CELLS, |run| {
            let mut cache = Cache::default();
            run.iter().map(|&c| (c, compute_cell(world, all, c, dns, &mut cache))).collect::<Vec<_>>()
        });
        for (c, computed) in computed.into_iter().flatten() {
            if let Some(computed) = computed
                && self.store_cell(c, computed)
            {
                changed.insert(self.cells[c as usize].as_ref().map(|cell| cell.addr).expect("live cell"));
            }
        }
    }

    /// Records a cell's new resolution: its tokens in the reverse index, its
    /// problems counted. Returns whether its route changed.
    fn store_cell(&mut self, c: u32, Computed { route, mut deps, problems }: Computed) -> bool {
        deps.sort_unstable();
        deps.dedup();
        let cell = self.cells[c as usize].as_mut().expect("live cell");
        for &t in &deps {
            if cell.deps.binary_search(&t).is_err() {
                self.rev.entry(t).and_modify(|r| r.push(c)).or_insert(Refs::One(c));
                self.rev_entries += 1;
            }
        }
        self.live_deps = self.live_deps + deps.len() - cell.deps.len();
        cell.deps = deps.into_boxed_slice();
        let old_problems = std::mem::replace(&mut cell.problems, problems.into_boxed_slice());
        let changed = cell.route != route;
        cell.route = route;
        if cell.owner.is_none() {
            let new_problems = cell.problems.clone();
            self.count_problems(&old_problems, false);
            self.count_problems(&new_problems, true);
        }
        changed
    }

    /// Recomputes a workload's cell set and resolves its cells; returns how
    /// many cells were resolved.
    fn rebuild_workload(&mut self, key: &Key, dns: &dyn HostResolver, cache: &mut Cache) -> usize {
        if let Some(old) = self.workloads.remove(key) {
            for &c in old.cells.values() {
                self.free_cell(c);
            }
            self.classes_changed = true;
        }
        let world = &self.world;
        let Some(dp) = world.dataplane(key).filter(|_| world.bound.contains(key)) else { return 0 };
        let raw = dp.origin.labels.get(CGROUP_LABEL).cloned().unwrap_or_default();
        let mut ctx = Ctx { world, dns, cache, deps: vec![Token::Resource(key).id()], problems: Vec::new() };
        let mut state = WorkloadState::default();
        let path = Path::new(&raw);
        if raw.is_empty() || !path.components().all(|c| matches!(c, Component::Normal(_))) {
            ctx.error(&dp.origin, &format!("labels[\"{CGROUP_LABEL}\"]"), format!("{raw:?} must be a relative path below the --cgroup directory, without `..`"));
            state.cgroup_problem = ctx.problems.pop();
        } else {
            state.cgroup = Some(path.to_path_buf());
        }
        let mut addrs: BTreeSet<Addr> = BTreeSet::new();
        let mut outbound: Vec<Addr> = Vec::new();
        if state.cgroup.is_some() {
            for d in ctx.outbounds(dp) {
                outbound.push((d.vip, d.port));
            }
            for entries in [&world.routes, &world.http] {
                delta_destinations(world, entries, dp, &mut ctx.deps, &mut addrs);
            }
        }
        state.problems = ctx.problems;
        let mut deps = ctx.deps;
        deps.sort_unstable();
        deps.dedup();
        for &t in &deps {
            self.wrev.entry(t).or_default().insert(key.clone());
        }
        state.deps = deps;
        addrs.extend(outbound);
        let mut resolved = 0;
        for addr in addrs {
            let c = self.new_cell(addr, Some(key.clone()));
            state.cells.insert(addr, c);
        }
        let cells: Vec<u32> = state.cells.values().copied().collect();
        self.workloads.insert(key.clone(), state);
        for c in cells {
            self.resolve_cell(c, dns, cache);
            resolved += 1;
        }
        self.classes_changed = true;
        resolved
    }

    /// Recomputes which of a workload's cells differ from the base; returns
    /// whether that changed.
    fn refresh_overrides(&mut self, key: &Key) -> bool {
        let Some(state) = self.workloads.get(key) else { return true };
        let mut overrides = BTreeMap::new();
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        for (&addr, &c) in &state.cells {
            let Some(route) = self.cells[c as usize].as_ref().and_then(|cell| cell.route.as_ref()) else { continue };
            let base = self.base.get(&addr).and_then(|&b| self.cells[b as usize].as_ref()).and_then(|cell| cell.route.as_ref());
            if base != Some(route) {
                overrides.insert(addr, c);
                (addr, route).hash(&mut hasher);
            }
        }
        let hash = hasher.finish();
        let state = self.workloads.get_mut(key).expect("present");
        // Routes of kept cells may have changed in place: compare by hash too.
        let changed = state.overrides != overrides || state.hash != hash;
        state.overrides = overrides;
        state.hash = hash;
        changed
    }

    /// Groups valid workloads into classes by their overrides, in key order.
    fn regroup(&mut self) {
        self.classes.clear();
        self.class_of.clear();
        self.conflicts.clear();
        let mut cgroups: HashMap<&Path, &Key> = HashMap::new();
        let route = |c: u32| self.cells[c as usize].as_ref().and_then(|cell| cell.route.as_ref());
        let mut by_hash: HashMap<u64, Vec<usize>> = HashMap::new();
        for (key, state) in &self.workloads {
            let Some(cgroup) = &state.cgroup else { continue };
            if let Some(other) = cgroups.get(cgroup.as_path()) {
                let dp = self.world.dataplane(key).expect("a workload's Dataplane");
                let raw = dp.origin.labels.get(CGROUP_LABEL).cloned().unwrap_or_default();
                let first = self.world.dataplane(other).map(|d| d.origin.display_name()).unwrap_or_default();
                self.conflicts.push(Problem {
                    severity: crate::model::Severity::Error,
                    file: dp.origin.file.to_path_buf(),
                    resource: dp.origin.display_name().into(),
                    path: format!("labels[\"{CGROUP_LABEL}\"]"),
                    message: format!("cgroup {raw:?} is already bound to {first}"),
                });
                continue;
            }
            cgroups.insert(cgroup, key);
            if state.overrides.is_empty() {
                self.class_of.insert(key.clone(), BASE_CLASS);
                continue;
            }
            let same = |(_, other): &(Vec<Key>, BTreeMap<Addr, u32>)| {
                other.len() == state.overrides.len()
                    && other.iter().zip(&state.overrides).all(|((a, &x), (b, &y))| a == b && route(x) == route(y))
            };
            let found = by_hash.get(&state.hash).and_then(|list| list.iter().copied().find(|&i| same(&self.classes[i])));
            let i = match found {
                Some(i) => i,
                None => {
                    self.classes.push((Vec::new(), state.overrides.clone()));
                    by_hash.entry(state.hash).or_default().push(self.classes.len() - 1);
                    self.classes.len() - 1
                }
            };
            self.classes[i].0.push(key.clone());
            self.class_of.insert(key.clone(), i as u32 + 1);
        }
        self.classes_changed = true;
    }

    /// The base route at `addr`.
    pub fn base_route(&self, addr: Addr) -> Option<&ResolvedRoute> {
        self.cells[*self.base.get(&addr)? as usize].as_ref()?.route.as_ref()
    }

    /// Every base route, by address.
    pub fn base_routes(&self) -> impl Iterator<Item = &ResolvedRoute> {
        self.base.values().filter_map(|&c| self.cells[c as usize].as_ref()?.route.as_ref())
    }

    /// How many base routes there are.
    pub fn base_len(&self) -> usize {
        self.base.len()
    }

    /// Base addresses whose route changed since the last call, and whether
    /// the classes or workloads changed.
    pub fn take_changed(&mut self) -> (BTreeSet<Addr>, bool) {
        (std::mem::take(&mut self.changed), std::mem::take(&mut self.classes_changed))
    }

    /// The classes other than the base (class `i + 1` at index `i`): each
    /// one's routes where they differ from the base routes.
    pub fn class_overrides(&self) -> Vec<BTreeMap<Addr, &ResolvedRoute>> {
        self.classes
            .iter()
            .map(|(_, overrides)| {
                overrides.iter().filter_map(|(&a, &c)| Some((a, self.cells[c as usize].as_ref()?.route.as_ref()?))).collect()
            })
            .collect()
    }

    /// The workloads with a valid, unshared cgroup, in key order, with their class.
    pub fn workloads(&self) -> Vec<Workload> {
        self.class_of
            .iter()
            .filter_map(|(key, &class)| {
                let dp = self.world.dataplane(key)?;
                let cgroup = self.workloads.get(key)?.cgroup.clone()?;
                Some(Workload { dataplane: dp.origin.display_name(), namespace: dp.origin.namespace.clone(), mesh: dp.origin.mesh.clone(), cgroup, class })
            })
            .collect()
    }

    /// Every problem resolution met, sorted, without repeats.
    pub fn problems(&self) -> Vec<Problem> {
        let mut out: Vec<&Problem> = self.base_problems.keys().map(|p| &p.0).collect();
        for (key, state) in &self.workloads {
            out.extend(&state.cgroup_problem);
            if !self.class_of.contains_key(key) {
                continue;
            }
            out.extend(&state.problems);
            for &c in state.cells.values() {
                out.extend(self.cells[c as usize].iter().flat_map(|cell| &cell.problems));
            }
        }
        out.extend(&self.conflicts);
        let mut out: Vec<Problem> = out.into_iter().cloned().collect();
        out.sort_by(|a, b| problem_order(a).cmp(&problem_order(b)));
        out.dedup();
        out
    }

    /// The whole resolution, materialized: every class with every route.
    pub fn resolution(&self) -> Resolution {
        let base: Vec<ResolvedRoute> = self.base_routes().cloned().collect();
        let mut classes = vec![Class { id: BASE_CLASS, routes: base.clone() }];
        for (i, overrides) in self.class_overrides().into_iter().enumerate() {
            let mut routes: BTreeMap<Addr, ResolvedRoute> = base.iter().map(|r| ((r.vip, r.port), r.clone())).collect();
            routes.extend(overrides.into_iter().map(|(a, r)| (a, r.clone())));
            classes.push(Class { id: i as u32 + 1, routes: routes.into_values().collect() });
        }
        Resolution { classes, workloads: self.workloads() }
    }
}

/// How problems are sorted: by file, resource, field path, message.
fn problem_order(p: &Problem) -> (&Path, &str, &str, &str, crate::model::Severity) {
    (&p.file, &p.resource, &p.path, &p.message, p.severity)
}

/// The destinations of the policies that may select `dp` differently from
/// the base class: there the workload's routes may be its own.
fn delta_destinations(world: &World, entries: &Entries, dp: &crate::model::Dataplane, deps: &mut Vec<u64>, out: &mut BTreeSet<Addr>) {
    let inbounds = dp.spec.networking.inbound.as_deref().is_some_and(|i| !i.is_empty());
    let plain = entries.plain.iter().filter(|(mesh, _)| !(inbounds && **mesh == dp.origin.mesh)).flat_map(|(_, keys)| keys);
    let other = entries.other.iter().filter(|k| {
        world.store.get(k).and_then(policy_of).is_some_and(|(origin, target, _)| in_delta(dp, origin, target))
    });
    for key in plain.chain(other) {
        let Some((origin, _, tos)) = world.store.get(key).and_then(policy_of) else { continue };
        let mesh = origin.mesh.as_str();
        for to in tos {
            match entry_name(to) {
                Some(name) => {
                    deps.push(Token::DestName(mesh, name).id());
                    out.extend(world.dest_by_name.get(&ix(&[mesh, name])).into_iter().flatten());
                }
                None => {
                    deps.push(Token::DestMesh(mesh).id());
                    out.extend(world.dest_by_mesh.get(&ix(&[mesh])).into_iter().flatten());
                }
            }
        }
    }
}

/// What resolving one cell found.
struct Computed {
    route: Option<ResolvedRoute>,
    /// Tokens read, unsorted.
    deps: Vec<u64>,
    problems: Vec<Problem>,
}

/// Resolves cell `c` of `cells` against `world`, changing nothing but the
/// endpoint cache; `None` for a freed cell.
fn compute_cell(world: &World, cells: &[Option<Cell>], c: u32, dns: &dyn HostResolver, cache: &mut Cache) -> Option<Computed> {
    let cell = cells[c as usize].as_ref()?;
    let (addr, owner) = (cell.addr, cell.owner.as_ref());
    let mut ctx = Ctx { world, dns, cache, deps: vec![Token::Addr(addr.0, addr.1).id()], problems: Vec::new() };
    let dp = owner.and_then(|k| world.dataplane(k));
    let proxy = dp.map_or(Proxy::Unbound, Proxy::Workload);
    let dest = match world.destinations.get(&addr) {
        Some(declared) => {
            let declared: Vec<Destination<'_>> = declared.iter().filter_map(|d| Destination::declared(world, addr, d)).collect();
            if owner.is_none() {
                ctx.address_conflicts(addr, &declared);
            }
            declared.into_iter().next()
        }
        None => dp.and_then(|dp| {
            // The outbound is recomputed here; the workload's own tokens cover its inputs.
            let mut scratch = Ctx { world, dns, cache: ctx.cache, deps: Vec::new(), problems: Vec::new() };
            scratch.outbounds(dp).into_iter().find(|d| (d.vip, d.port) == addr)
        }),
    };
    let route = dest.map(|d| ctx.route_for(proxy, &d));
    Some(Computed { route, deps: ctx.deps, problems: ctx.problems })
}
