//! The store and its indexes: what resolution looks resources up by, kept
//! up to date one change at a time, and the tokens that name each lookup.
//!
//! Every lookup a route's resolution makes is named by a [`Token`]. A route
//! records the tokens of the lookups it made; a change to the store fires the
//! tokens whose answers it may change (for both the old and the new version of
//! the resource). A route none of whose tokens fired would be resolved to the
//! same result, so only the routes of fired tokens are resolved again.

use super::select::{CGROUP_LABEL, Proxy};
use crate::{
    model::{Dataplane, MeshExternalService, MeshHttpRoute, MeshMultiZoneService, MeshService, MeshTcpRoute, Origin, RefKind, TargetRef, Text},
    store::{Change, Key, KeyData, Resource, Store},
};
use std::{
    collections::{BTreeSet, HashMap, HashSet},
    hash::{Hash, Hasher as _},
    net::IpAddr,
};

/// A destination address and port.
pub(crate) type Addr = (IpAddr, u16);

/// A hasher for keys that are hashes already (token ids, [`ix`] keys).
#[derive(Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Maps and sets keyed by hashes.
pub(crate) type IdMap<V> = HashMap<u64, V, std::hash::BuildHasherDefault<IdHasher>>;
/// Sets of hashes.
pub(crate) type IdSet = HashSet<u64, std::hash::BuildHasherDefault<IdHasher>>;

/// The hasher of index keys and token ids: a fast, fixed-seed one. These
/// hashes only name lookups within this process (a collision costs a check
/// or an extra resolution, never a wrong answer), and an install computes
/// millions of them.
fn id_hasher() -> impl std::hash::Hasher {
    use std::hash::BuildHasher as _;
    foldhash::fast::FixedState::with_seed(0x7265_6469_7265_6374).build_hasher()
}

/// An index key: a hash of its parts, so a lookup allocates nothing. Two
/// keys may share a hash: every index user checks what it finds.
pub(crate) fn ix(parts: &[&str]) -> u64 {
    let mut h = id_hasher();
    for part in parts {
        part.hash(&mut h);
    }
    h.finish()
}

/// A lookup whose answer a resolution depends on; see the module docs.
#[derive(Hash)]
pub(crate) enum Token<'a> {
    /// The destinations declared at an address.
    Addr(IpAddr, u16),
    /// One resource, by key.
    Resource(&'a KeyData),
    /// MeshTCPRoute `to` entries naming a destination, by mesh and name.
    EntryName(&'a str, &'a str),
    /// MeshTCPRoute `to` entries of a mesh that do not name a destination plainly.
    EntryScan(&'a str),
    /// MeshHTTPRoute `to` entries naming a destination.
    HttpName(&'a str, &'a str),
    /// MeshHTTPRoute `to` entries of a mesh that do not name a destination plainly.
    HttpScan(&'a str),
    /// MeshServices of a mesh with a name (any namespace).
    ServiceName(&'a str, &'a str),
    /// Every MeshService of a mesh.
    AllServices(&'a str),
    /// Every MeshExternalService of a mesh.
    AllExternal(&'a str),
    /// Every MeshMultiZoneService of a mesh.
    AllMultiZone(&'a str),
    /// Dataplanes of a mesh with a name.
    DpName(&'a str, &'a str),
    /// Dataplanes of a mesh with an inbound carrying a tag.
    DpTag(&'a str, &'a str, &'a str),
    /// Every Dataplane of a mesh.
    DpMesh(&'a str),
    /// The addresses of the destinations of a mesh with a name.
    DestName(&'a str, &'a str),
    /// The addresses of every destination of a mesh.
    DestMesh(&'a str),
    /// Hostnames looked up.
    Dns,
}

impl Token<'_> {
    /// The token's id. Ids are hashes: two tokens sharing one only make more
    /// routes resolve again, never fewer.
    pub(crate) fn id(&self) -> u64 {
        let mut h = id_hasher();
        self.hash(&mut h);
        h.finish()
    }
}

/// Which destination declares an address: a MeshService port (by index), a
/// MeshExternalService, or a MeshMultiZoneService port. In this order the
/// first declaration of an address is the one in force.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum DestRef {
    Service(Key, usize),
    External(Key),
    MultiZone(Key, usize),
}

/// Whether a `to` entry is looked up by its name (the usual case) or
/// considered for every destination of its mesh (label selectors, Kuma's
/// `name_namespace_svc_port` names).
pub(crate) fn entry_name(target: &TargetRef) -> Option<&str> {
    target.name.as_deref().filter(|n| !n.contains("_svc"))
}

/// Whether a policy selects exactly the base class (processes outside
/// workloads) and every workload of its mesh with inbounds: a `Mesh` target
/// without filters, roles or zone limits.
pub(crate) fn is_plain(origin: &Origin, target: Option<&TargetRef>) -> bool {
    let mesh_wide = target.is_none_or(|t| t.kind == Some(RefKind::Mesh));
    let sidecars = target.and_then(|t| t.proxy_types.as_ref()).is_none_or(|types| types.iter().any(|t| t == "Sidecar"));
    let label = |k: &str| origin.labels.get(k).map(Text::as_str);
    let role = label("kuma.io/policy-role");
    mesh_wide
        && sidecars
        && label("kuma.io/effect") != Some("shadow")
        && !matches!(role, Some("consumer" | "workload-owner"))
        && !(role != Some("producer") && label("kuma.io/origin") == Some("zone") && origin.labels.contains_key("kuma.io/zone"))
}

/// A policy's origin and top-level target, for MeshTCPRoutes and MeshHTTPRoutes alike.
pub(crate) fn policy_of(r: &Resource) -> Option<(&Origin, Option<&TargetRef>, Vec<&TargetRef>)> {
    match r {
        Resource::Route(r) => Some((&r.origin, r.spec.target_ref.as_ref(), r.spec.to.iter().flatten().map(|t| &t.target_ref).collect())),
        Resource::Http(r) => Some((&r.origin, r.spec.target_ref.as_ref(), r.spec.to.iter().flatten().map(|t| &t.target_ref).collect())),
        _ => None,
    }
}

/// Whether a policy may select a workload differently from the base class:
/// then the workload's routes to the policy's destinations are its own.
pub(crate) fn in_delta(dp: &Dataplane, origin: &Origin, target: Option<&TargetRef>) -> bool {
    if is_plain(origin, target) {
        let inbounds = dp.spec.networking.inbound.as_deref().is_some_and(|i| !i.is_empty());
        !(inbounds && dp.origin.mesh == origin.mesh)
    } else {
        Proxy::Workload(dp).selected_by(origin, target) != Proxy::Unbound.selected_by(origin, target)
    }
}

/// An ordered set that holds its first element inline: most index entries
/// (a name, an address) have exactly one member, and a `BTreeSet` node for
/// one element costs hundreds of bytes.
#[derive(Debug, Clone)]
#[expect(clippy::box_collection, reason = "a boxed set keeps the common one-element entry small")]
pub(crate) enum Set<T> {
    One(T),
    /// Boxed: most sets hold one element, and an index holds a set per
    /// name, so the set's own size counts.
    Many(Box<BTreeSet<T>>),
}

impl<T: Ord + Clone> Set<T> {
    fn insert(&mut self, v: T) {
        match self {
            Set::One(x) if *x == v => {}
            Set::One(x) => *self = Set::Many(Box::new(BTreeSet::from([x.clone(), v]))),
            Set::Many(set) => {
                set.insert(v);
            }
        }
    }

    /// Removes `v`; returns whether the set is empty now.
    fn remove(&mut self, v: &T) -> bool {
        match self {
            Set::One(x) => x == v,
            Set::Many(set) => {
                set.remove(v);
                if set.len() == 1 {
                    *self = Set::One(set.pop_first().expect("one element"));
                }
                false
            }
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Set::One(_) => 1,
            Set::Many(set) => set.len(),
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &T> {
        let (one, many) = match self {
            Set::One(x) => (Some(x), None),
            Set::Many(set) => (None, Some(set.iter())),
        };
        one.into_iter().chain(many.into_iter().flatten())
    }
}

impl<'a, T: Ord + Clone> IntoIterator for &'a Set<T> {
    type Item = &'a T;
    type IntoIter = Box<dyn Iterator<Item = &'a T> + 'a>;
    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

/// Index of `to` entries: by (mesh, name), and the scanned ones by mesh.
#[derive(Debug, Default)]
pub(crate) struct Entries {
    pub by_name: IdMap<Set<(Key, usize)>>,
    pub scanned: IdMap<Set<(Key, usize)>>,
    /// Policies that select every workload of their mesh like the base class,
    /// by mesh. Hashed: only ever walked whole, in no particular order, and
    /// an install adds every route here.
    pub plain: HashMap<Text, HashSet<Key>>,
    /// The others.
    pub other: HashSet<Key>,
}

impl Entries {
    fn update(&mut self, key: &Key, r: &Resource, add: bool) {
        let Some((origin, target, tos)) = policy_of(r) else { return };
        let mesh = &origin.mesh;
        for (i, to) in tos.into_iter().enumerate() {
            match entry_name(to) {
                Some(name) => set_op(&mut self.by_name, ix(&[mesh, name]), (key.clone(), i), add),
                None => set_op(&mut self.scanned, ix(&[mesh]), (key.clone(), i), add),
            }
        }
        if !is_plain(origin, target) {
            if add {
                self.other.insert(key.clone());
            } else {
                self.other.remove(key);
            }
        } else if add {
            self.plain.entry(mesh.clone()).or_default().insert(key.clone());
        } else if let Some(set) = self.plain.get_mut(mesh) {
            set.remove(key);
            if set.is_empty() {
                self.plain.remove(mesh);
            }
        }
    }
}

/// The store and everything resolution looks up in it.
#[derive(Debug, Default)]
pub(crate) struct World {
    pub store: Store,
    pub services_by_name: IdMap<Set<Key>>,
    pub services_by_mesh: IdMap<Set<Key>>,
    pub external_by_mesh: IdMap<Set<Key>>,
    pub multizone_by_mesh: IdMap<Set<Key>>,
    pub dp_by_tag: IdMap<Set<Key>>,
    pub dp_by_name: IdMap<Set<Key>>,
    pub routes: Entries,
    pub http: Entries,
    /// Every declared destination address, and who declares it (hashed:
    /// only ever looked up).
    pub destinations: HashMap<Addr, Set<DestRef>, foldhash::fast::FixedState>,
    pub dest_by_name: IdMap<Set<Addr>>,
    pub dest_by_mesh: IdMap<Set<Addr>>,
    /// Dataplanes with a cgroup label.
    pub bound: BTreeSet<Key>,
    /// MeshExternalServices with a hostname endpoint.
    pub hostnames: BTreeSet<Key>,
    /// Whether routes leave out how they were decided (`why`).
    pub terse: bool,
}

fn set_op<V: Ord + Clone>(map: &mut IdMap<Set<V>>, k: u64, v: V, add: bool) {
    if add {
        match map.entry(k) {
            std::collections::hash_map::Entry::Occupied(mut e) => e.get_mut().insert(v),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(Set::One(v));
            }
        }
    } else if let Some(set) = map.get_mut(&k)
        && set.remove(&v)
    {
        map.remove(&k);
    }
}

/// The addresses a destination resource declares, canonical.
pub(crate) fn declared(r: &Resource) -> Vec<(Addr, DestRef)> {
    let key = || r.key();
    let mut out = Vec::new();
    match r {
        Resource::Service(s) => {
            for (i, port) in s.spec.ports.iter().flatten().enumerate() {
                for vip in s.status.vips.iter().flatten() {
                    out.push(((vip.ip.to_canonical(), port.port), DestRef::Service(key(), i)));
                }
            }
        }
        Resource::External(s) => {
            if let (Some(vip), Some(m)) = (&s.status.vip, &s.spec.matcher) {
                out.push(((vip.ip.to_canonical(), m.port), DestRef::External(key())));
            }
        }
        Resource::MultiZone(s) => {
            for (i, port) in s.spec.ports.iter().flatten().enumerate() {
                for vip in s.status.vips.iter().flatten() {
                    out.push(((vip.ip.to_canonical(), port.port), DestRef::MultiZone(key(), i)));
                }
            }
        }
        _ => {}
    }
    out
}

impl World {
    /// Records one change; gives `fire` the id of every token it fires and
    /// returns the addresses whose declarations it touches.
    pub fn apply(&mut self, change: &Change, fire: &mut dyn FnMut(u64), addrs: &mut BTreeSet<Addr>) {
        for (r, add) in [(&change.old, false), (&change.new, true)] {
            let Some(r) = r else { continue };
            self.index(&change.key, r, add, fire, addrs);
        }
    }

    fn index(&mut self, key: &Key, r: &Resource, add: bool, fire: &mut dyn FnMut(u64), addrs: &mut BTreeSet<Addr>) {
        let o = r.origin();
        let (mesh, name) = (o.mesh.as_str(), o.name.as_str());
        fire(Token::Resource(key).id());
        match r {
            Resource::Service(_) | Resource::External(_) | Resource::MultiZone(_) => {
                let by_mesh = match r {
                    Resource::Service(_) => {
                        set_op(&mut self.services_by_name, ix(&[mesh, name]), key.clone(), add);
                        fire(Token::ServiceName(mesh, name).id());
                        fire(Token::AllServices(mesh).id());
                        &mut self.services_by_mesh
                    }
                    Resource::External(s) => {
                        fire(Token::AllExternal(mesh).id());
                        let hostname = s.spec.endpoints.iter().flatten().any(|e| e.address.parse::<IpAddr>().is_err());
                        if add && hostname {
                            self.hostnames.insert(key.clone());
                        } else if !add {
                            self.hostnames.remove(key);
                        }
                        &mut self.external_by_mesh
                    }
                    _ => {
                        fire(Token::AllMultiZone(mesh).id());
                        &mut self.multizone_by_mesh
                    }
                };
                set_op(by_mesh, ix(&[mesh]), key.clone(), add);
                fire(Token::DestName(mesh, name).id());
                fire(Token::DestMesh(mesh).id());
                for (addr, dest) in declared(r) {
                    fire(Token::Addr(addr.0, addr.1).id());
                    addrs.insert(addr);
                    if add {
                        match self.destinations.entry(addr) {
                            std::collections::hash_map::Entry::Occupied(mut e) => e.get_mut().insert(dest),
                            std::collections::hash_map::Entry::Vacant(e) => {
                                e.insert(Set::One(dest));
                            }
                        }
                        set_op(&mut self.dest_by_name, ix(&[mesh, name]), addr, true);
                        set_op(&mut self.dest_by_mesh, ix(&[mesh]), addr, true);
                    } else {
                        if let Some(set) = self.destinations.get_mut(&addr)
                            && set.remove(&dest)
                        {
                            self.destinations.remove(&addr);
                        }
                        // Another port of the same resource, or another resource of
                        // the same name, may still declare the address.
                        let still = |w: &World, by: &dyn Fn(&DestRef) -> bool| {
                            w.destinations.get(&addr).is_some_and(|s| s.iter().any(by))
                        };
                        let named = |d: &DestRef| {
                            let k = match d {
                                DestRef::Service(k, _) | DestRef::External(k) | DestRef::MultiZone(k, _) => k,
                            };
                            k.mesh == mesh && k.name == name
                        };
                        if !still(self, &named) {
                            set_op(&mut self.dest_by_name, ix(&[mesh, name]), addr, false);
                        }
                        let meshed = |d: &DestRef| match d {
                            DestRef::Service(k, _) | DestRef::External(k) | DestRef::MultiZone(k, _) => k.mesh == mesh,
                        };
                        if !still(self, &meshed) {
                            set_op(&mut self.dest_by_mesh, ix(&[mesh]), addr, false);
                        }
                    }
                }
            }
            Resource::Dataplane(dp) => {
                set_op(&mut self.dp_by_name, ix(&[mesh, name]), key.clone(), add);
                fire(Token::DpName(mesh, name).id());
                fire(Token::DpMesh(mesh).id());
                let mut tags: Vec<(&str, &str)> = dp
                    .spec
                    .networking
                    .inbound
                    .iter()
                    .flatten()
                    .flat_map(|ib| ib.tags.iter().flatten())
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                tags.sort_unstable();
                tags.dedup();
                for (k, v) in tags {
                    set_op(&mut self.dp_by_tag, ix(&[mesh, k, v]), key.clone(), add);
                    fire(Token::DpTag(mesh, k, v).id());
                }
                if add && o.labels.contains_key(CGROUP_LABEL) {
                    self.bound.insert(key.clone());
                } else if !add {
                    self.bound.remove(key);
                }
            }
            Resource::Route(_) | Resource::Http(_) => {
                let http = matches!(r, Resource::Http(_));
                let Some((_, _, tos)) = policy_of(r) else { return };
                for to in tos {
                    let token = match (entry_name(to), http) {
                        (Some(n), false) => Token::EntryName(mesh, n),
                        (None, false) => Token::EntryScan(mesh),
                        (Some(n), true) => Token::HttpName(mesh, n),
                        (None, true) => Token::HttpScan(mesh),
                    };
                    fire(token.id());
                }
                if http { self.http.update(key, r, add) } else { self.routes.update(key, r, add) }
            }
            Resource::Other(_) => {}
        }
    }

    pub fn service(&self, key: &Key) -> Option<&MeshService> {
        match self.store.get(key)? {
            Resource::Service(s) => Some(s),
            _ => None,
        }
    }

    pub fn dataplane(&self, key: &Key) -> Option<&Dataplane> {
        match self.store.get(key)? {
            Resource::Dataplane(d) => Some(d),
            _ => None,
        }
    }

    pub fn route(&self, key: &Key) -> Option<&MeshTcpRoute> {
        match self.store.get(key)? {
            Resource::Route(r) => Some(r),
            _ => None,
        }
    }

    pub fn http_route(&self, key: &Key) -> Option<&MeshHttpRoute> {
        match self.store.get(key)? {
            Resource::Http(r) => Some(r),
            _ => None,
        }
    }

    pub fn external(&self, key: &Key) -> Option<&MeshExternalService> {
        match self.store.get(key)? {
            Resource::External(s) => Some(s),
            _ => None,
        }
    }

    pub fn multizone(&self, key: &Key) -> Option<&MeshMultiZoneService> {
        match self.store.get(key)? {
            Resource::MultiZone(s) => Some(s),
            _ => None,
        }
    }

    /// The keys of `map[k]`, in key order.
    pub fn keys(map: &IdMap<Set<Key>>, k: u64) -> impl Iterator<Item = &Key> {
        map.get(&k).into_iter().flat_map(Set::iter)
    }
}
