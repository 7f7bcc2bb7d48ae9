//! The Kubernetes API as a source, through kube-rs: the objects the agent
//! reads (namespaces, this node's pods, Services, EndpointSlices, the
//! kuma.io resources), listed once for `plan` or watched for `run`, handed
//! to [`Cluster`], which turns them into Kuma resources.

use anyhow::Context as _;
use futures_util::StreamExt as _;
use k8s_openapi::api::{
    core::v1::{Namespace, Pod, Service},
    discovery::v1::EndpointSlice,
};
use kube::{
    Client, Config,
    api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams},
    config::{KubeConfigOptions, Kubeconfig},
    runtime::{WatchStreamExt as _, watcher},
};
use redirector_core::{
    model::Problem,
    source::kubernetes::{Cluster, Kind, Update},
    store::Event,
};
use std::path::Path;
use tokio::sync::mpsc;

/// The kuma.io/v1alpha1 kinds read, with their resource names.
pub const KUMA_KINDS: [(&str, &str); 6] = [
    ("MeshTCPRoute", "meshtcproutes"),
    ("MeshHTTPRoute", "meshhttproutes"),
    ("MeshService", "meshservices"),
    ("MeshExternalService", "meshexternalservices"),
    ("MeshMultiZoneService", "meshmultizoneservices"),
    ("Dataplane", "dataplanes"),
];

/// A client from `kubeconfig`, or from the pod's service account (in-cluster).
pub async fn client(kubeconfig: Option<&Path>) -> anyhow::Result<Client> {
    let config = match kubeconfig {
        Some(path) => {
            let file = Kubeconfig::read_from(path).with_context(|| format!("reading kubeconfig {}", path.display()))?;
            Config::from_custom_kubeconfig(file, &KubeConfigOptions::default()).await.with_context(|| format!("kubeconfig {}", path.display()))?
        }
        None => Config::incluster().context("no in-cluster configuration (outside a pod, pass --kubeconfig)")?,
    };
    Client::try_from(config).context("building the Kubernetes client")
}

/// The `ApiResource` of a kuma.io kind.
pub fn kuma_resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("kuma.io", "v1alpha1", kind), plural)
}

/// What one listing of the cluster gave.
#[derive(Default)]
pub struct Listed {
    /// Store events of everything listed.
    pub events: Vec<Event>,
    /// Problems of the Kuma resources the objects became.
    pub problems: Vec<Problem>,
    /// kuma.io kinds whose CRD is not installed (not an error: nothing of that kind exists).
    pub missing: Vec<String>,
}

/// Lists every kind [`watch`] watches once into `cluster`: what
/// `plan --kubernetes` shows for `node`.
pub async fn list(client: &Client, node: &str, cluster: &mut Cluster) -> anyhow::Result<Listed> {
    let mut listed = Listed::default();
    for (kind, resource, fields) in watched(node) {
        let api = Api::<DynamicObject>::all_with(client.clone(), &resource);
        let params = match &fields {
            Some(fields) => ListParams::default().fields(fields),
            None => ListParams::default(),
        };
        match api.list(&params).await {
            Ok(objects) => {
                for o in objects {
                    cluster.put(kind.clone(), serde_json::to_value(o)?);
                }
            }
            // An uninstalled CRD: 404, often as plain text (so not a NotFound reason).
            Err(kube::Error::Api(status)) if status.code == 404 && matches!(kind, Kind::Kuma(_)) => {
                listed.missing.push(resource.kind);
            }
            Err(e) => return Err(e).with_context(|| format!("listing {}", kind.plural())),
        }
    }
    listed.events = cluster.flush();
    listed.problems = cluster.problems();
    Ok(listed)
}

/// What a watcher reports to the agent.
#[derive(Debug)]
pub enum Report {
    /// A step of the kind's list/watch, for the cluster source.
    Update(Update),
    /// The kind's list or watch failed; the watcher retries with backoff
    /// (what is in force stays).
    Failed(Kind, String),
}

/// How often a kind whose CRD is not installed is looked for again.
const ABSENT_RETRY: std::time::Duration = std::time::Duration::from_secs(60);

/// Every kind the agent reads for `node`, with its field selector.
fn watched(node: &str) -> Vec<(Kind, ApiResource, Option<String>)> {
    let mut kinds = vec![
        (Kind::Namespace, ApiResource::erase::<Namespace>(&()), None),
        (Kind::Pod, ApiResource::erase::<Pod>(&()), Some(format!("spec.nodeName={node}"))),
        (Kind::Service, ApiResource::erase::<Service>(&()), None),
        (Kind::EndpointSlice, ApiResource::erase::<EndpointSlice>(&()), None),
    ];
    kinds.extend(KUMA_KINDS.iter().map(|(kind, plural)| (Kind::Kuma((*kind).into()), kuma_resource(kind, plural), None)));
    kinds
}

/// The kinds [`watch`] reports on.
pub fn watched_kinds() -> Vec<Kind> {
    watched("").into_iter().map(|(kind, ..)| kind).collect()
}

/// Starts one kube-rs watcher per kind (list, then watch from the listed
/// resourceVersion; a relist after 410 Gone or a lost watch window), each
/// reporting to `reports` until the receiver is dropped. Errors back off
/// with [`Retry`].
pub fn watch(client: &Client, node: &str, reports: mpsc::UnboundedSender<Report>) {
    for (kind, resource, fields) in watched(node) {
        let api = Api::<DynamicObject>::all_with(client.clone(), &resource);
        let mut config = watcher::Config::default().page_size(500);
        if let Some(fields) = &fields {
            config = config.fields(fields);
        }
        let reports = reports.clone();
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(watcher::watcher(api, config).backoff(Retry::default()));
            while let Some(item) = stream.next().await {
                let value = |o: DynamicObject| serde_json::to_value(o).unwrap_or_default();
                let report = match item {
                    Ok(watcher::Event::Init) => Report::Update(Update::Listing(kind.clone())),
                    Ok(watcher::Event::InitApply(o)) => Report::Update(Update::Listed(kind.clone(), value(o))),
                    Ok(watcher::Event::InitDone) => Report::Update(Update::ListDone(kind.clone())),
                    Ok(watcher::Event::Apply(o)) => Report::Update(Update::Applied(kind.clone(), value(o))),
                    Ok(watcher::Event::Delete(o)) => Report::Update(Update::Deleted(kind.clone(), value(o))),
                    // An uninstalled CRD: 404, often as plain text (so not a NotFound reason).
                    Err(watcher::Error::InitialListFailed(kube::Error::Api(status))) if status.code == 404 => Report::Update(Update::Absent(kind.clone())),
                    Err(e) => Report::Failed(kind.clone(), e.to_string()),
                };
                let absent = matches!(report, Report::Update(Update::Absent(_)));
                if reports.send(report).is_err() {
                    return;
                }
                if absent {
                    // Looked for again, not hammered: a CRD is rarely installed twice a minute.
                    tokio::time::sleep(ABSENT_RETRY).await;
                }
            }
        });
    }
}

/// How a watcher waits between failed attempts: 0.5 s doubling to 5 s,
/// each wait jittered by up to a quarter (so nodes that lost the API
/// together do not come back in step), from the start again after any
/// success. client-go's reflectors go up to 30 s; a node agent's routes
/// follow the API, so it retries sooner.
#[derive(Debug, Default)]
pub struct Retry {
    failures: u32,
}

impl Iterator for Retry {
    type Item = std::time::Duration;

    fn next(&mut self) -> Option<Self::Item> {
        let base = (500u64 << self.failures.min(4)).min(5_000);
        self.failures += 1;
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos() as u64);
        Some(std::time::Duration::from_millis(base - base / 4 * (nanos % 1000) / 1000))
    }
}

impl kube::runtime::utils::Backoff for Retry {
    fn reset(&mut self) {
        self.failures = 0;
    }
}

/// Whether the API server answers (a one-item list of namespaces).
pub async fn reachable(client: &Client) -> bool {
    Api::<Namespace>::all(client.clone()).list(&ListParams::default().limit(1)).await.is_ok()
}

/// The watchers' health as the agent reports it: which kinds have not been
/// listed once yet, and which are failing now.
#[derive(Debug)]
pub struct Health {
    unlisted: std::collections::BTreeSet<Kind>,
    failing: std::collections::BTreeMap<Kind, Failure>,
    absent: std::collections::BTreeSet<Kind>,
}

/// A kind's list or watch failing.
#[derive(Debug)]
struct Failure {
    since: std::time::Instant,
    logged: std::time::Instant,
    error: String,
}

/// What the agent should do after a report.
#[derive(Debug, PartialEq, Eq)]
pub enum Noted {
    /// An update for the cluster source.
    Update,
    /// Nothing new (a kind found not installed again).
    Nothing,
    /// A failure (logged when new, then every 30 s).
    Failure,
}

impl Health {
    /// Nothing listed yet of `kinds`.
    pub fn new(kinds: impl IntoIterator<Item = Kind>) -> Self {
        Self { unlisted: kinds.into_iter().collect(), failing: Default::default(), absent: Default::default() }
    }

    /// Takes `report` into account, queueing its update in `inbox`.
    pub fn note(&mut self, report: Report, inbox: &redirector_core::source::kubernetes::Inbox) -> Noted {
        use tracing::{info, warn};
        match report {
            Report::Update(update) => {
                let kind = match &update {
                    Update::Listing(k) | Update::Listed(k, _) | Update::ListDone(k) | Update::Applied(k, _) | Update::Deleted(k, _) | Update::Absent(k) => k.clone(),
                };
                match &update {
                    Update::ListDone(_) => {
                        self.unlisted.remove(&kind);
                        self.absent.remove(&kind);
                    }
                    Update::Absent(_) => {
                        self.unlisted.remove(&kind);
                        if !self.absent.insert(kind.clone()) {
                            return Noted::Nothing;
                        }
                        warn!("kuma.io {}: the CRD is not installed; there are none (looked for again every {} s)", kind.plural(), ABSENT_RETRY.as_secs());
                    }
                    _ => {}
                }
                if let Some(failure) = self.failing.remove(&kind) {
                    info!("Kubernetes API: {} watched again after {:.1} s", kind.plural(), failure.since.elapsed().as_secs_f64());
                }
                inbox.push(update);
                Noted::Update
            }
            Report::Failed(kind, error) => {
                let now = std::time::Instant::now();
                let failure = self.failing.entry(kind.clone()).or_insert_with(|| {
                    warn!("Kubernetes API: {}: {error}; retrying with backoff, the state in force stays", kind.plural());
                    Failure { since: now, logged: now, error: error.clone() }
                });
                if now.duration_since(failure.logged) >= std::time::Duration::from_secs(30) {
                    warn!("Kubernetes API: {} failing for {:.0} s: {error}", kind.plural(), failure.since.elapsed().as_secs_f64());
                    failure.logged = now;
                }
                failure.error = error;
                Noted::Failure
            }
        }
    }

    /// Whether every kind has been listed once (or found not installed).
    pub fn synced(&self) -> bool {
        self.unlisted.is_empty()
    }

    /// Whether some kind is failing now.
    pub fn failing(&self) -> bool {
        !self.failing.is_empty()
    }

    /// The API answers again: what was failing is taken as recovered (a
    /// watcher that still fails reports it again).
    pub fn recovered(&mut self) {
        if !self.failing.is_empty() {
            let since = self.failing.values().map(|f| f.since).min().map(|s| s.elapsed().as_secs_f64()).unwrap_or_default();
            tracing::info!("Kubernetes API: reachable again after {since:.1} s");
            self.failing.clear();
        }
    }

    /// Why the agent is not ready on the API's account, if it is not.
    pub fn not_ready(&self) -> Option<String> {
        let errors = || self.failing.iter().map(|(k, f)| format!("{}: {}", k.plural(), f.error)).collect::<Vec<_>>().join("; ");
        if !self.unlisted.is_empty() {
            let kinds: Vec<String> = self.unlisted.iter().map(Kind::plural).collect();
            let mut why = format!("waiting for the first list of {} from the Kubernetes API", kinds.join(", "));
            if self.failing() {
                why += &format!(" ({})", errors());
            }
            return Some(why);
        }
        let oldest = self.failing.values().map(|f| f.since).min()?;
        Some(format!("Kubernetes API unreachable for {:.0} s ({}); the last state it gave stays in force", oldest.elapsed().as_secs_f64(), errors()))
    }
}

#[cfg(test)]
mod tests {
    /// The ClusterRole grants get/list/watch on exactly the kinds watched.
    #[test]
    fn the_cluster_role_grants_what_is_watched_and_nothing_else() {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/kubernetes/rbac.yaml")).unwrap();
        let role = serde_yaml::Deserializer::from_str(&text)
            .map(|d| <serde_yaml::Value as serde::Deserialize>::deserialize(d).unwrap())
            .find(|d| d["kind"] == "ClusterRole")
            .expect("a ClusterRole");
        let mut granted: Vec<String> = Vec::new();
        for rule in role["rules"].as_sequence().unwrap() {
            assert_eq!(rule["verbs"], serde_yaml::to_value(["get", "list", "watch"]).unwrap(), "{rule:?}");
            granted.extend(rule["resources"].as_sequence().unwrap().iter().map(|r| r.as_str().unwrap().to_owned()));
        }
        granted.sort();
        let mut watched: Vec<String> = super::watched_kinds().iter().map(|k| k.plural()).collect();
        watched.sort();
        assert_eq!(granted, watched);
    }
}
