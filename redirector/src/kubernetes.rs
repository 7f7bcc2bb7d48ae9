//! The Kubernetes API as a source, through kube-rs: the objects the agent
//! reads (namespaces, this node's pods, Services, the kuma.io resources),
//! handed to [`Cluster`], which turns them into Kuma resources.

use anyhow::Context as _;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use kube::{
    Client, Config,
    api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams},
    config::{KubeConfigOptions, Kubeconfig},
};
use redirector_core::{
    model::Problem,
    source::kubernetes::{Cluster, Kind},
    store::Event,
};
use std::path::Path;

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
    /// Store events, in the order the objects came.
    pub events: Vec<Event>,
    /// Problems of the Kuma resources the objects became.
    pub problems: Vec<Problem>,
    /// kuma.io kinds whose CRD is not installed (not an error: nothing of that kind exists).
    pub missing: Vec<&'static str>,
}

/// Lists every object once into `cluster`: what `plan --kubernetes` shows
/// for `node`.
pub async fn list(client: &Client, node: &str, cluster: &mut Cluster) -> anyhow::Result<Listed> {
    let mut listed = Listed::default();
    let all = ListParams::default();
    let take = |listed: &mut Listed, events: Vec<Event>| listed.events.extend(events);
    for ns in Api::<Namespace>::all(client.clone()).list(&all).await.context("listing namespaces")? {
        take(&mut listed, cluster.apply(Kind::Namespace, serde_json::to_value(ns)?));
    }
    let on_node = ListParams::default().fields(&format!("spec.nodeName={node}"));
    for pod in Api::<Pod>::all(client.clone()).list(&on_node).await.context("listing this node's pods")? {
        take(&mut listed, cluster.apply(Kind::Pod, serde_json::to_value(pod)?));
    }
    for svc in Api::<Service>::all(client.clone()).list(&all).await.context("listing services")? {
        take(&mut listed, cluster.apply(Kind::Service, serde_json::to_value(svc)?));
    }
    for (kind, plural) in KUMA_KINDS {
        let api = Api::<DynamicObject>::all_with(client.clone(), &kuma_resource(kind, plural));
        match api.list(&all).await {
            Ok(objects) => {
                for o in objects {
                    take(&mut listed, cluster.apply(Kind::Kuma(kind.into()), serde_json::to_value(o)?));
                }
            }
            // An uninstalled CRD: 404, often as plain text (so not a NotFound reason).
            Err(kube::Error::Api(status)) if status.code == 404 => listed.missing.push(kind),
            Err(e) => return Err(e).with_context(|| format!("listing kuma.io {plural}")),
        }
    }
    listed.problems = cluster.problems();
    Ok(listed)
}
