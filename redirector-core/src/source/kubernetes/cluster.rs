//! The cluster as the store sees it: watched objects in, store events out,
//! incrementally, with the list/watch protocol's relists folded in.

use super::{CgroupDriver, dataplane, mesh_service, pod_cgroup, slice_dataplane, str_at};
use crate::{
    model::{Problem, load_str},
    source::{Changes, ReadStats, Source},
    store::{Event, Key, Resource, file_source, resources},
};
use serde_json::Value;
use std::{
    collections::{BTreeMap, HashMap},
    path::Path,
    sync::{Arc, Mutex},
};

/// What the source watches, by API kind.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// core/v1 Namespace (its labels give the mesh of what is in it).
    Namespace,
    /// core/v1 Pod of this node.
    Pod,
    /// core/v1 Service.
    Service,
    /// discovery.k8s.io/v1 EndpointSlice (endpoints on other nodes).
    EndpointSlice,
    /// A kuma.io/v1alpha1 resource, read as it is (`MeshTCPRoute`, `MeshService`, ...).
    Kuma(String),
}

impl Kind {
    /// The API's plural name, as a source's path names it.
    pub fn plural(&self) -> String {
        match self {
            Kind::Namespace => "namespaces".into(),
            Kind::Pod => "pods".into(),
            Kind::Service => "services".into(),
            Kind::EndpointSlice => "endpointslices".into(),
            Kind::Kuma(k) => format!("{}s", k.to_ascii_lowercase()),
        }
    }
}

/// An object by kind, namespace and name.
type Id = (Kind, String, String);

fn id_of(kind: Kind, object: &Value) -> Id {
    let part = |k| str_at(object, &["metadata", k]).unwrap_or_default().to_owned();
    (kind, part("namespace"), part("name"))
}

/// The watched objects, turned into Kuma resources incrementally. A pod
/// change converts that pod again; a Service change its MeshService, its
/// EndpointSlices and the Dataplanes of the node's pods in its namespace; a
/// namespace change everything in it. An object stored again unchanged
/// converts nothing. Each object is a source of its own
/// (`kubernetes/<kind>/<namespace>/<name>`), so problems name it.
#[derive(Debug)]
pub struct Cluster {
    driver: CgroupDriver,
    node: String,
    objects: BTreeMap<Id, Value>,
    /// Per source: the resources its last conversion gave, by key.
    emitted: HashMap<Arc<Path>, BTreeMap<Key, Vec<Resource>>>,
    /// Per source: the problems of what it converts to now.
    problems: BTreeMap<Arc<Path>, Vec<Problem>>,
}

impl Cluster {
    /// An empty cluster seen from `node`, whose pods sit in cgroups named by `driver`.
    pub fn new(driver: CgroupDriver, node: &str) -> Self {
        Self { driver, node: node.to_owned(), objects: Default::default(), emitted: Default::default(), problems: Default::default() }
    }

    /// Records `object` of `kind` (added or changed); returns the store
    /// events of what changed in what it converts to.
    pub fn apply(&mut self, kind: Kind, object: Value) -> Vec<Event> {
        let id = id_of(kind, &object);
        if self.objects.get(&id) == Some(&object) {
            return Vec::new();
        }
        self.objects.insert(id.clone(), object);
        self.convert_around(&id)
    }

    /// Forgets the object of `kind` called `name` in `namespace`.
    pub fn delete(&mut self, kind: Kind, namespace: &str, name: &str) -> Vec<Event> {
        let id = (kind, namespace.to_owned(), name.to_owned());
        if self.objects.remove(&id).is_none() {
            return Vec::new();
        }
        self.convert_around(&id)
    }

    /// Makes `objects` all there is of `kind` (a relist): what it lacks is
    /// deleted, what it holds applied.
    pub fn replace(&mut self, kind: Kind, objects: Vec<Value>) -> Vec<Event> {
        let listed: std::collections::HashSet<Id> = objects.iter().map(|o| id_of(kind.clone(), o)).collect();
        let gone: Vec<Id> = self.objects.keys().filter(|id| id.0 == kind && !listed.contains(*id)).cloned().collect();
        let mut events = Vec::new();
        for (kind, ns, name) in gone {
            events.extend(self.delete(kind, &ns, &name));
        }
        for object in objects {
            events.extend(self.apply(kind.clone(), object));
        }
        events
    }

    /// Objects held.
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    /// Whether no object is held.
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// Every problem of what the objects convert to now, by source.
    pub fn problems(&self) -> Vec<Problem> {
        self.problems.values().flatten().cloned().collect()
    }

    /// Converts `id` and what depends on it.
    fn convert_around(&mut self, id: &Id) -> Vec<Event> {
        let (kind, ns, name) = id;
        let mut todo = vec![id.clone()];
        let slices_of = |o: &Id, v: &Value, service: &str| {
            o.0 == Kind::EndpointSlice && o.1 == *ns && str_at(v, &["metadata", "labels", "kubernetes.io/service-name"]) == Some(service)
        };
        match kind {
            Kind::Namespace => todo.extend(self.objects.keys().filter(|o| o.1 == *name && matches!(o.0, Kind::Pod | Kind::Service | Kind::EndpointSlice)).cloned()),
            Kind::Service => {
                todo.extend(self.objects.keys().filter(|o| o.0 == Kind::Pod && o.1 == *ns).cloned());
                todo.extend(self.objects.iter().filter(|(o, v)| slices_of(o, v, name)).map(|(o, _)| o.clone()));
            }
            // The Service's own MeshService goes (or comes back) first: one key, one source at a time.
            Kind::Kuma(k) if k == "MeshService" => todo.insert(0, (Kind::Service, ns.clone(), name.clone())),
            _ => {}
        }
        let mut events = Vec::new();
        for id in todo {
            self.convert(&id, &mut events);
        }
        events
    }

    /// The source an object's resources come from.
    fn source(id: &Id) -> Arc<Path> {
        file_source(Path::new(&format!("kubernetes/{}/{}/{}", id.0.plural(), id.1, id.2)))
    }

    /// The Kuma document `id` stands for now, if any.
    fn document(&self, id: &Id) -> Option<Value> {
        let object = self.objects.get(id)?;
        let namespace = self.objects.get(&(Kind::Namespace, String::new(), id.1.clone()));
        match &id.0 {
            Kind::Namespace => None,
            Kind::Pod => {
                let services: Vec<&Value> = self.objects.range((Kind::Service, id.1.clone(), String::new())..).take_while(|(k, _)| k.0 == Kind::Service && k.1 == id.1).map(|(_, v)| v).collect();
                let cgroup = pod_cgroup(object, self.driver)?;
                dataplane(object, &services, namespace, &[(crate::resolve::CGROUP_LABEL, &cgroup)])
            }
            Kind::Service => {
                // A MeshService of the same name and namespace stands for the Service itself.
                let own = (Kind::Kuma("MeshService".into()), id.1.clone(), id.2.clone());
                if self.objects.contains_key(&own) { None } else { mesh_service(object, namespace) }
            }
            Kind::EndpointSlice => {
                let service = str_at(object, &["metadata", "labels", "kubernetes.io/service-name"])?;
                let service = self.objects.get(&(Kind::Service, id.1.clone(), service.to_owned()))?;
                slice_dataplane(object, service, namespace, &self.node)
            }
            Kind::Kuma(_) => Some(object.clone()),
        }
    }

    fn convert(&mut self, id: &Id, events: &mut Vec<Event>) {
        let source = Self::source(id);
        let mut now: BTreeMap<Key, Vec<Resource>> = BTreeMap::new();
        let mut problems = Vec::new();
        if let Some(doc) = self.document(id) {
            let (config, found) = load_str(&source, &doc.to_string());
            problems.extend(found);
            problems.extend(config.validate());
            for r in resources(&config) {
                now.entry(r.key()).or_default().push(r);
            }
        }
        if problems.is_empty() {
            self.problems.remove(&source);
        } else {
            self.problems.insert(source.clone(), problems);
        }
        let before = self.emitted.remove(&source).unwrap_or_default();
        events.extend(before.keys().filter(|k| !now.contains_key(*k)).map(|k| Event::delete(source.clone(), k.clone())));
        for (key, resources) in &now {
            if before.get(key) != Some(resources) {
                events.push(Event { source: source.clone(), key: key.clone(), resources: resources.clone() });
            }
        }
        if !now.is_empty() {
            self.emitted.insert(source, now);
        }
    }
}

/// One step of a kind's list/watch, as a watcher reports it.
#[derive(Clone, Debug)]
pub enum Update {
    /// A (re)list of the kind started.
    Listing(Kind),
    /// An object of the listing under way.
    Listed(Kind, Value),
    /// The listing is complete: what it did not list is gone.
    ListDone(Kind),
    /// An object was added or changed.
    Applied(Kind, Value),
    /// An object was deleted.
    Deleted(Kind, Value),
    /// The kind is not served (its CRD is not installed): none exist.
    Absent(Kind),
}

/// Where watchers hand their updates to a [`ClusterSource`]; cheap to
/// clone, taken in order at the pipeline's next update.
#[derive(Clone, Debug, Default)]
pub struct Inbox(Arc<Mutex<Vec<Update>>>);

impl Inbox {
    /// Queues `update`.
    pub fn push(&self, update: Update) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(update);
    }
}

/// The cluster as a pipeline source: updates queued in its [`Inbox`] are
/// applied at each [`Source::changes`]. A relist's objects are held until
/// it is complete, then replace the kind's objects at once, so a
/// generation never sees half a relist.
#[derive(Debug)]
pub struct ClusterSource {
    cluster: Cluster,
    inbox: Inbox,
    listing: HashMap<Kind, Vec<Value>>,
}

impl ClusterSource {
    /// A source over `cluster`, and the inbox that feeds it.
    pub fn new(cluster: Cluster) -> (Self, Inbox) {
        let inbox = Inbox::default();
        (Self { cluster, inbox: inbox.clone(), listing: HashMap::new() }, inbox)
    }

    /// The cluster as applied so far.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// Applies one update; returns its store events.
    pub fn apply(&mut self, update: Update) -> Vec<Event> {
        match update {
            Update::Listing(kind) => {
                self.listing.insert(kind, Vec::new());
                Vec::new()
            }
            Update::Listed(kind, object) => match self.listing.get_mut(&kind) {
                Some(buffer) => {
                    buffer.push(object);
                    Vec::new()
                }
                None => self.cluster.apply(kind, object),
            },
            Update::ListDone(kind) => {
                let objects = self.listing.remove(&kind).unwrap_or_default();
                self.cluster.replace(kind, objects)
            }
            Update::Absent(kind) => {
                self.listing.remove(&kind);
                self.cluster.replace(kind, Vec::new())
            }
            Update::Applied(kind, object) => self.cluster.apply(kind, object),
            Update::Deleted(kind, object) => {
                let (kind, ns, name) = id_of(kind, &object);
                self.cluster.delete(kind, &ns, &name)
            }
        }
    }
}

impl Source for ClusterSource {
    fn path(&self) -> &Path {
        Path::new("kubernetes")
    }

    fn changes(&mut self) -> Changes {
        let updates = std::mem::take(&mut *self.inbox.0.lock().unwrap_or_else(|e| e.into_inner()));
        let read = updates.len();
        let mut events = Vec::new();
        for update in updates {
            events.extend(self.apply(update));
        }
        let parsed = events.len();
        Changes { events, problems: self.cluster.problems(), validation: Vec::new(), stats: ReadStats { files: self.cluster.len(), read, parsed } }
    }

    fn empty_is_error(&self) -> bool {
        false
    }
}
