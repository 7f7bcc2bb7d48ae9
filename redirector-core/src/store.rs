//! The resource store: every Kuma resource the sources gave, keyed by
//! (kind, mesh, namespace, name), changed only by [`Event`]s.
//!
//! A source (the files, the Kubernetes API) says, per key, what it holds
//! now: one resource, several (a duplicate), or none (a deletion). The store
//! keeps what each source said, so one source's deletion never hides
//! another's definition, and tells the caller how the key's resource in
//! force changed. Two definitions of one key are an error (a duplicate); the
//! one in force is then the first by source name.

pub use crate::model::{Key, KeyData, Kind};
use crate::model::{
    Config, Dataplane, MeshExternalService, MeshHttpRoute, MeshMultiZoneService, MeshService, MeshTcpRoute, Origin, Problem,
    load::duplicate,
};
use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    sync::Arc,
};

/// One resource, shared.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resource {
    /// A MeshService.
    Service(Arc<MeshService>),
    /// A Dataplane.
    Dataplane(Arc<Dataplane>),
    /// A MeshTCPRoute.
    Route(Arc<MeshTcpRoute>),
    /// A MeshExternalService.
    External(Arc<MeshExternalService>),
    /// A MeshMultiZoneService.
    MultiZone(Arc<MeshMultiZoneService>),
    /// A MeshHTTPRoute.
    Http(Arc<MeshHttpRoute>),
    /// A resource read but not acted on.
    Other(Arc<Origin>),
}

impl Resource {
    /// Where it came from and what it is called.
    pub fn origin(&self) -> &Origin {
        match self {
            Self::Service(r) => &r.origin,
            Self::Dataplane(r) => &r.origin,
            Self::Route(r) => &r.origin,
            Self::External(r) => &r.origin,
            Self::MultiZone(r) => &r.origin,
            Self::Http(r) => &r.origin,
            Self::Other(o) => o,
        }
    }

    /// Its key.
    pub fn key(&self) -> Key {
        Key::of(self.origin())
    }

    /// Whether both are the same shared value (cheaper than equality, and
    /// implies it).
    fn same(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Service(a), Self::Service(b)) => Arc::ptr_eq(a, b),
            (Self::Dataplane(a), Self::Dataplane(b)) => Arc::ptr_eq(a, b),
            (Self::Route(a), Self::Route(b)) => Arc::ptr_eq(a, b),
            (Self::External(a), Self::External(b)) => Arc::ptr_eq(a, b),
            (Self::MultiZone(a), Self::MultiZone(b)) => Arc::ptr_eq(a, b),
            (Self::Http(a), Self::Http(b)) => Arc::ptr_eq(a, b),
            (Self::Other(a), Self::Other(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

/// Every resource of `config`, in its order.
pub fn resources(config: &Config) -> impl Iterator<Item = Resource> + '_ {
    config
        .routes
        .iter()
        .cloned()
        .map(Resource::Route)
        .chain(config.services.iter().cloned().map(Resource::Service))
        .chain(config.dataplanes.iter().cloned().map(Resource::Dataplane))
        .chain(config.external_services.iter().cloned().map(Resource::External))
        .chain(config.multizone_services.iter().cloned().map(Resource::MultiZone))
        .chain(config.http_routes.iter().cloned().map(Resource::Http))
        .chain(config.ignored.iter().cloned().map(|o| Resource::Other(Arc::new(o))))
}

/// What one source holds for one key now: nothing (a deletion), one
/// resource, or several (a duplicate within the source).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// The source (a file path, or `kubernetes`); orders duplicates.
    pub source: Arc<Path>,
    /// The key.
    pub key: Key,
    /// The source's resources of that key, in its order.
    pub resources: Vec<Resource>,
}

impl Event {
    /// `source` holds `resource`.
    pub fn upsert(source: Arc<Path>, resource: Resource) -> Self {
        Self { source, key: resource.key(), resources: vec![resource] }
    }

    /// `source` holds nothing of `key` any more.
    pub fn delete(source: Arc<Path>, key: Key) -> Self {
        Self { source, key, resources: Vec::new() }
    }
}

/// How the resource in force of one key changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// The key.
    pub key: Key,
    /// The resource before.
    pub old: Option<Resource>,
    /// The resource now.
    pub new: Option<Resource>,
}

/// What one source defines under a key.
type Definition = (Arc<Path>, Vec<Resource>);

/// The resources of every source, by key.
#[derive(Debug, Default)]
pub struct Store {
    /// Keys with more than one definition: per source (sorted by source),
    /// its definitions. A key defined once is only in `live`.
    duplicated: BTreeMap<Key, Vec<Definition>>,
    /// The resource in force of every key, and its source. Hashed: resolution
    /// looks resources up by key all the time; [`Store::iter`] sorts.
    live: HashMap<Key, (Arc<Path>, Resource)>,
}

impl Store {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records what `event.source` holds for `event.key`. Returns how the
    /// resource in force changed, if it did.
    pub fn apply(&mut self, event: Event) -> Option<Change> {
        let Event { source, key, mut resources } = event;
        // The common case: one source, one definition (or none left).
        if resources.len() <= 1 && !self.duplicated.contains_key(&key) {
            use std::collections::hash_map::Entry;
            let new = resources.pop();
            let old = match (self.live.entry(key.clone()), new.clone()) {
                (Entry::Occupied(mut e), Some(r)) if e.get().0 == source => Some(std::mem::replace(e.get_mut(), (source, r)).1),
                (Entry::Occupied(e), None) if e.get().0 == source => Some(e.remove().1),
                // Another source defines the key too (or still does).
                (Entry::Occupied(_), Some(r)) => return self.apply_slow(Event { source, key, resources: vec![r] }),
                (Entry::Occupied(_), None) => return self.apply_slow(Event { source, key, resources: Vec::new() }),
                (Entry::Vacant(v), Some(r)) => {
                    v.insert((source, r));
                    None
                }
                (Entry::Vacant(_), None) => None,
            };
            let unchanged = match (&old, &new) {
                (Some(a), Some(b)) => a.same(b) || a == b,
                (None, None) => true,
                _ => false,
            };
            return (!unchanged).then_some(Change { key, old, new });
        }
        self.apply_slow(Event { source, key, resources })
    }

    /// [`Store::apply`] for keys with several definitions (or about to have).
    fn apply_slow(&mut self, event: Event) -> Option<Change> {
        let Event { source, key, resources } = event;
        let mut defs = match self.duplicated.remove(&key) {
            Some(defs) => defs,
            None => self.live.get(&key).map(|(s, r)| vec![(s.clone(), vec![r.clone()])]).unwrap_or_default(),
        };
        match (defs.binary_search_by(|(s, _)| s.cmp(&source)), resources.is_empty()) {
            (Ok(i), true) => {
                defs.remove(i);
            }
            (Ok(i), false) => defs[i].1 = resources,
            (Err(_), true) => {}
            (Err(i), false) => defs.insert(i, (source, resources)),
        }
        let count: usize = defs.iter().map(|(_, r)| r.len()).sum();
        let first = defs.iter().find_map(|(s, r)| Some((s.clone(), r.first()?.clone())));
        if count > 1 {
            self.duplicated.insert(key.clone(), defs);
        }
        let old = match &first {
            Some(r) => self.live.insert(key.clone(), r.clone()),
            None => self.live.remove(&key),
        }
        .map(|(_, r)| r);
        let first = first.map(|(_, r)| r);
        let unchanged = match (&old, &first) {
            (Some(a), Some(b)) => a.same(b) || a == b,
            (None, None) => true,
            _ => false,
        };
        (!unchanged).then_some(Change { key, old, new: first })
    }

    /// The resource in force of `key`.
    pub fn get(&self, key: &Key) -> Option<&Resource> {
        self.live.get(key).map(|(_, r)| r)
    }

    /// Every resource in force, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&Key, &Resource)> {
        let mut all: Vec<(&Key, &Resource)> = self.live.iter().map(|(k, (_, r))| (k, r)).collect();
        all.sort_unstable_by(|a, b| a.0.cmp(b.0));
        all.into_iter()
    }

    /// How many resources are in force.
    pub fn len(&self) -> usize {
        self.live.len()
    }

    /// Whether no resource is in force.
    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// An error for every definition of a key after its first, in kind
    /// order, then by file.
    pub fn duplicate_problems(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        for (key, defs) in &self.duplicated {
            let mut defs = defs.iter().flat_map(|(_, r)| r);
            let Some(first) = defs.next() else { continue };
            for other in defs {
                let origin = other.origin();
                out.push((key.kind.clone(), origin.file.to_path_buf(), duplicate(origin, &first.origin().file)));
            }
        }
        out.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        out.into_iter().map(|(_, _, p)| p).collect()
    }

    /// The resources in force as a [`Config`], each kind in key order.
    pub fn to_config(&self) -> Config {
        let mut config = Config::default();
        for (_, resource) in self.iter() {
            match resource {
                Resource::Service(r) => config.services.push(r.clone()),
                Resource::Dataplane(r) => config.dataplanes.push(r.clone()),
                Resource::Route(r) => config.routes.push(r.clone()),
                Resource::External(r) => config.external_services.push(r.clone()),
                Resource::MultiZone(r) => config.multizone_services.push(r.clone()),
                Resource::Http(r) => config.http_routes.push(r.clone()),
                Resource::Other(o) => config.ignored.push((**o).clone()),
            }
        }
        config
    }
}

/// The source name of a file.
pub fn file_source(path: &Path) -> Arc<Path> {
    Arc::from(PathBuf::from(path).into_boxed_path())
}
