//! The cluster as the store sees it: watched objects in, store events out,
//! incrementally, with the list/watch protocol's relists folded in.

use super::{CgroupDriver, dataplane, mesh_service, pod_cgroup, selects, slice_dataplane, str_at};
use crate::{
    model::{Problem, load::par_chunks, load_json},
    source::{Changes, ReadStats, Source},
    store::{Event, Key, Resource, file_source, resources},
};
use serde_json::Value;
use std::{
    borrow::Cow,
    collections::{BTreeMap, BTreeSet, HashMap},
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
/// EndpointSlices and the Dataplanes of the node's pods it selected or
/// selects; a namespace change everything in it. An object stored again unchanged
/// converts nothing. Each object is a source of its own
/// (`kubernetes/<kind>/<namespace>/<name>`), so problems name it.
#[derive(Debug)]
pub struct Cluster {
    driver: CgroupDriver,
    node: String,
    objects: BTreeMap<Id, Stored>,
    /// EndpointSlice names by the (namespace, Service) they belong to.
    slices: Index,
    /// Service names by namespace and the first label of their selector
    /// (a pod they select carries it).
    selectors: Index,
    /// Objects to convert again at the next [`Cluster::flush`].
    dirty: BTreeSet<Id>,
    /// Per source: the resources its last conversion gave, by key.
    emitted: HashMap<Arc<Path>, BTreeMap<Key, Vec<Resource>>>,
    /// Per source: the problems of what it converts to now.
    problems: BTreeMap<Arc<Path>, Vec<Problem>>,
}

impl Cluster {
    /// An empty cluster seen from `node`, whose pods sit in cgroups named by `driver`.
    pub fn new(driver: CgroupDriver, node: &str) -> Self {
        Self {
            driver,
            node: node.to_owned(),
            objects: Default::default(),
            slices: Default::default(),
            selectors: Default::default(),
            dirty: Default::default(),
            emitted: Default::default(),
            problems: Default::default(),
        }
    }

    /// Records `object` of `kind` (added or changed); returns the store
    /// events of what changed in what it converts to.
    pub fn apply(&mut self, kind: Kind, object: Value) -> Vec<Event> {
        self.put(kind, object);
        self.flush()
    }

    /// Forgets the object of `kind` called `name` in `namespace`.
    pub fn delete(&mut self, kind: Kind, namespace: &str, name: &str) -> Vec<Event> {
        self.remove(kind, namespace, name);
        self.flush()
    }

    /// Makes `objects` all there is of `kind` (a relist): what it lacks is
    /// deleted, what it holds applied.
    pub fn replace(&mut self, kind: Kind, objects: Vec<Value>) -> Vec<Event> {
        self.put_all(kind, objects);
        self.flush()
    }

    /// [`Cluster::apply`], converting nothing until the next [`Cluster::flush`].
    pub fn put(&mut self, kind: Kind, mut object: Value) {
        trim(&mut object);
        self.insert(kind, object, None);
    }

    /// Stores `object` (trimmed; `text` its JSON when already written) and
    /// marks what it touches; returns its id.
    fn insert(&mut self, kind: Kind, object: Value, text: Option<Box<str>>) -> Id {
        let id = id_of(kind, &object);
        let (slice, selector) = (slice_key(&id, &object), selector_key(&id, &object));
        // The tree of a kind held as text stays at hand for `mark`.
        let (stored, tree) = if Stored::as_tree(&id.0) {
            (Stored::Tree(object), None)
        } else {
            (Stored::Text(text.unwrap_or_else(|| object.to_string().into_boxed_str())), Some(object))
        };
        if self.objects.get(&id) == Some(&stored) {
            return id;
        }
        let old = self.objects.insert(id.clone(), stored).and_then(|old| old.if_indexed(&id.0));
        if let Some(old) = &old {
            self.unindex(&id, old);
        }
        if let Some(key) = slice {
            self.slices.entry(key).or_default().insert(id.2.clone());
        }
        if let Some(key) = selector {
            self.selectors.entry(key).or_default().insert(id.2.clone());
        }
        self.mark(&id, old.as_ref(), tree.as_ref());
        id
    }

    /// [`Cluster::delete`], converting nothing until the next [`Cluster::flush`].
    pub fn remove(&mut self, kind: Kind, namespace: &str, name: &str) {
        self.remove_id((kind, namespace.to_owned(), name.to_owned()));
    }

    fn remove_id(&mut self, id: Id) {
        let Some(old) = self.objects.remove(&id) else { return };
        let old = old.if_indexed(&id.0);
        if let Some(old) = &old {
            self.unindex(&id, old);
        }
        self.mark(&id, old.as_ref(), None);
    }

    /// [`Cluster::replace`], converting nothing until the next [`Cluster::flush`].
    pub fn put_all(&mut self, kind: Kind, objects: impl IntoIterator<Item = Value>) {
        let objects = objects.into_iter().map(|mut object| {
            trim(&mut object);
            (object, None)
        });
        self.insert_all(kind, objects);
    }

    /// [`Cluster::put_all`] of trimmed objects, each with its text if written.
    fn insert_all(&mut self, kind: Kind, objects: impl IntoIterator<Item = (Value, Option<Box<str>>)>) {
        let mut listed = std::collections::HashSet::new();
        for (object, text) in objects {
            listed.insert(self.insert(kind.clone(), object, text));
        }
        let gone: Vec<Id> = self.objects.keys().filter(|id| id.0 == kind && !listed.contains(*id)).cloned().collect();
        for id in gone {
            self.remove_id(id);
        }
    }

    /// Converts what changed since the last flush, each object once (on
    /// one thread per CPU when there are many); returns the store events.
    pub fn flush(&mut self) -> Vec<Event> {
        let dirty: Vec<Id> = std::mem::take(&mut self.dirty).into_iter().collect();
        let this = &*self;
        let converted = par_chunks(&dirty, 256, |ids| ids.iter().map(|id| this.convert(id)).collect::<Vec<_>>());
        let mut events = Vec::new();
        for (source, now, problems) in converted.into_iter().flatten() {
            self.record(source, now, problems, &mut events);
        }
        events
    }

    fn unindex(&mut self, id: &Id, old: &Value) {
        for (index, key) in [(&mut self.slices, slice_key(id, old)), (&mut self.selectors, selector_key(id, old))] {
            let Some(key) = key else { continue };
            if let Some(names) = index.get_mut(&key) {
                names.remove(&id.2);
                if names.is_empty() {
                    index.remove(&key);
                }
            }
        }
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

    /// The objects of `kind` in namespace `ns`, in name order.
    fn in_namespace<'a>(&'a self, kind: &'a Kind, ns: &'a str) -> impl Iterator<Item = (&'a Id, &'a Stored)> + 'a {
        self.objects.range((kind.clone(), ns.to_owned(), String::new())..).take_while(move |(o, _)| o.0 == *kind && o.1 == ns)
    }

    /// Marks `id` and what depends on it for conversion. `old` and `new` are
    /// the object before and after, where what it touches depends on them
    /// (a Service: the pods it selects).
    fn mark(&mut self, id: &Id, old: Option<&Value>, new: Option<&Value>) {
        let (kind, ns, name) = id;
        let mut todo = vec![id.clone()];
        match kind {
            Kind::Namespace => {
                for k in [Kind::Pod, Kind::Service, Kind::EndpointSlice] {
                    todo.extend(self.in_namespace(&k, name).map(|(o, _)| o.clone()));
                }
            }
            Kind::Service => {
                // The pods it selected or selects: no other pod's Dataplane names it.
                let touched = |pod: &Value| old.is_some_and(|s| selects(s, pod)) || new.is_some_and(|s| selects(s, pod));
                todo.extend(self.in_namespace(&Kind::Pod, ns).filter(|(_, v)| touched(&v.value())).map(|(o, _)| o.clone()));
                let slices = self.slices.get(&(ns.clone(), name.clone(), String::new())).into_iter().flatten();
                todo.extend(slices.map(|slice| (Kind::EndpointSlice, ns.clone(), slice.clone())));
            }
            // The Service's own MeshService replaces (or gives back) the derived one.
            Kind::Kuma(k) if k == "MeshService" => todo.push((Kind::Service, ns.clone(), name.clone())),
            _ => {}
        }
        self.dirty.extend(todo);
    }

    /// The source an object's resources come from.
    fn source(id: &Id) -> Arc<Path> {
        file_source(Path::new(&format!("kubernetes/{}/{}/{}", id.0.plural(), id.1, id.2)))
    }

    /// The Kuma document `id` stands for now, if any.
    fn document(&self, id: &Id) -> Option<Value> {
        let object = self.objects.get(id)?.value();
        let object = object.as_ref();
        let namespace = self.objects.get(&(Kind::Namespace, String::new(), id.1.clone())).map(Stored::value);
        let namespace = namespace.as_deref();
        match &id.0 {
            Kind::Namespace => None,
            Kind::Pod => {
                // Candidates: the Services whose first selector label the pod carries.
                let pod_labels = object.pointer("/metadata/labels").and_then(Value::as_object).into_iter().flatten();
                let names: BTreeSet<&String> = pod_labels
                    .filter_map(|(k, v)| self.selectors.get(&(id.1.clone(), k.clone(), v.as_str()?.to_owned())))
                    .flatten()
                    .collect();
                let services: Vec<Cow<'_, Value>> = names.into_iter().filter_map(|n| Some(self.objects.get(&(Kind::Service, id.1.clone(), n.clone()))?.value())).collect();
                let services: Vec<&Value> = services.iter().map(Cow::as_ref).collect();
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
                let service = self.objects.get(&(Kind::Service, id.1.clone(), service.to_owned()))?.value();
                slice_dataplane(object, &service, namespace, &self.node)
            }
            Kind::Kuma(_) => Some(object.clone()),
        }
    }

    /// What `id` converts to now: its source, resources by key, problems.
    fn convert(&self, id: &Id) -> (Arc<Path>, BTreeMap<Key, Vec<Resource>>, Vec<Problem>) {
        let source = Self::source(id);
        let mut now: BTreeMap<Key, Vec<Resource>> = BTreeMap::new();
        let mut problems = Vec::new();
        if let Some(doc) = self.document(id) {
            let (config, found) = load_json(&source, &doc);
            problems.extend(found);
            problems.extend(config.validate());
            for r in resources(&config) {
                now.entry(r.key()).or_default().push(r);
            }
        }
        (source, now, problems)
    }

    /// Records what a source converts to now; the store events of what changed.
    fn record(&mut self, source: Arc<Path>, now: BTreeMap<Key, Vec<Resource>>, problems: Vec<Problem>, events: &mut Vec<Event>) {
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

/// An object as held: this node's pods and the namespaces (few, and read
/// for every conversion) as trees; the cluster-wide kinds as their JSON
/// text, a tenth of a tree's memory, parsed when converted.
#[derive(Debug, PartialEq)]
enum Stored {
    Tree(Value),
    Text(Box<str>),
}

impl Stored {
    /// Whether objects of `kind` are held as trees.
    fn as_tree(kind: &Kind) -> bool {
        matches!(kind, Kind::Pod | Kind::Namespace)
    }

    /// The object, if it is of a kind whose old value is indexed (only
    /// those are read back when replaced or removed).
    fn if_indexed(self, kind: &Kind) -> Option<Value> {
        matches!(kind, Kind::Service | Kind::EndpointSlice).then(|| self.into_value())
    }

    /// The object (text written from a tree always parses).
    fn value(&self) -> Cow<'_, Value> {
        match self {
            Stored::Tree(v) => Cow::Borrowed(v),
            Stored::Text(text) => Cow::Owned(serde_json::from_str(text).unwrap_or_default()),
        }
    }

    fn into_value(self) -> Value {
        match self {
            Stored::Tree(v) => v,
            Stored::Text(text) => serde_json::from_str(&text).unwrap_or_default(),
        }
    }
}

/// Drops what no conversion reads and what changes on writes that matter
/// to none: `managedFields` and `kubectl apply`'s copy of the object (often
/// most of its size, held for every Service and EndpointSlice of the
/// cluster), and the resourceVersion (so a write that changes nothing else
/// converts nothing).
fn trim(object: &mut Value) {
    let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) else { return };
    metadata.remove("managedFields");
    metadata.remove("resourceVersion");
    if let Some(annotations) = metadata.get_mut("annotations").and_then(Value::as_object_mut) {
        annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

/// Object names by namespace and two strings that find them.
type Index = HashMap<(String, String, String), BTreeSet<String>>;

/// Where EndpointSlice `id` is in the slices index: its namespace and Service.
fn slice_key(id: &Id, slice: &Value) -> Option<(String, String, String)> {
    let service = str_at(slice, &["metadata", "labels", "kubernetes.io/service-name"]).filter(|_| id.0 == Kind::EndpointSlice)?;
    Some((id.1.clone(), service.to_owned(), String::new()))
}

/// Where Service `id` is in the selectors index: its namespace and its
/// selector's first label and value.
fn selector_key(id: &Id, service: &Value) -> Option<(String, String, String)> {
    let selector = service.pointer("/spec/selector").and_then(Value::as_object).filter(|_| id.0 == Kind::Service)?;
    let (k, v) = selector.iter().next()?;
    Some((id.1.clone(), k.clone(), v.as_str()?.to_owned()))
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
/// clone, taken in order at the pipeline's next update. Objects wait as
/// their trimmed JSON text: a first list of the whole cluster queues here
/// before the first generation, and trees would take ten times the memory
/// (and leave it fragmented once freed).
#[derive(Clone, Debug, Default)]
pub struct Inbox(Arc<Mutex<Vec<Queued>>>);

/// An [`Update`] as queued: its object as text.
#[derive(Debug)]
enum Queued {
    Listing(Kind),
    Listed(Kind, Box<str>),
    ListDone(Kind),
    Applied(Kind, Box<str>),
    Deleted(Id),
    Absent(Kind),
}

/// An object's trimmed JSON text.
fn text(mut object: Value) -> Box<str> {
    trim(&mut object);
    object.to_string().into_boxed_str()
}

/// The object of a queued text (written from a tree, so it parses).
fn tree(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_default()
}

impl Inbox {
    /// Queues `update`.
    pub fn push(&self, update: Update) {
        let queued = match update {
            Update::Listing(k) => Queued::Listing(k),
            Update::Listed(k, o) => Queued::Listed(k, text(o)),
            Update::ListDone(k) => Queued::ListDone(k),
            Update::Applied(k, o) => Queued::Applied(k, text(o)),
            Update::Deleted(k, o) => Queued::Deleted(id_of(k, &o)),
            Update::Absent(k) => Queued::Absent(k),
        };
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(queued);
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
    listing: HashMap<Kind, Vec<Box<str>>>,
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

    /// Takes one update into the cluster (converted at the next flush).
    fn take(&mut self, update: Queued) {
        match update {
            Queued::Listing(kind) => {
                self.listing.insert(kind, Vec::new());
            }
            Queued::Listed(kind, text) => match self.listing.get_mut(&kind) {
                Some(buffer) => buffer.push(text),
                None => {
                    self.cluster.insert(kind, tree(&text), Some(text));
                }
            },
            Queued::ListDone(kind) => {
                let objects = self.listing.remove(&kind).unwrap_or_default();
                self.cluster.insert_all(kind, objects.into_iter().map(|text| (tree(&text), Some(text))));
            }
            Queued::Absent(kind) => {
                self.listing.remove(&kind);
                self.cluster.insert_all(kind, []);
            }
            Queued::Applied(kind, text) => {
                self.cluster.insert(kind, tree(&text), Some(text));
            }
            Queued::Deleted(id) => self.cluster.remove_id(id),
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
        for update in updates {
            self.take(update);
        }
        let events = self.cluster.flush();
        let parsed = events.len();
        Changes { events, problems: self.cluster.problems(), validation: Vec::new(), stats: ReadStats { files: self.cluster.len(), read, parsed } }
    }

    fn empty_is_error(&self) -> bool {
        false
    }
}
