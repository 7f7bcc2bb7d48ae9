//! Kubernetes objects as Kuma reads them: a pod as its Dataplane, a Service
//! as the MeshService kuma-cp generates for it, and the mesh of each.
//!
//! Pure: objects in, Kuma resources (in Kuma's Kubernetes form, as the files
//! a user would write) out. The rules follow kuma-cp 2.14's pod converter
//! (`pkg/plugins/runtime/k8s/controllers/inbound_converter.go`,
//! `InboundTagsForService`), its MeshService generator
//! (`meshservice_controller.go`) and `MeshOfByLabelOrAnnotation`
//! (`pkg/plugins/runtime/k8s/util/util.go`). Where a node agent without
//! sidecars must differ, the item says so.

use serde_json::{Map, Value, json};

/// The label (then annotation) naming a resource's or namespace's mesh.
pub const MESH_LABEL: &str = "kuma.io/mesh";

/// The inbound port kuma-cp gives a pod that no Service selects.
pub const SERVICELESS_PORT: u16 = 49151;

/// Protocols kuma-cp takes from a Service port's `appProtocol`.
const KNOWN_PROTOCOLS: [&str; 5] = ["tcp", "http", "http2", "grpc", "kafka"];

fn str_at<'v>(v: &'v Value, path: &[&str]) -> Option<&'v str> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_str()
}

fn map_at<'v>(v: &'v Value, path: &[&str]) -> Option<&'v Map<String, Value>> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_object()
}

fn labels(v: &Value) -> Option<&Map<String, Value>> {
    map_at(v, &["metadata", "labels"])
}

fn annotation<'v>(v: &'v Value, key: &str) -> Option<&'v str> {
    map_at(v, &["metadata", "annotations"])?.get(key)?.as_str()
}

/// The mesh of an object in `namespace`: its `kuma.io/mesh` label, then
/// annotation, then the namespace's label, then annotation, else `default`.
pub fn mesh_of(object: &Value, namespace: Option<&Value>) -> String {
    let from = |v: &Value| {
        let label = labels(v).and_then(|l| l.get(MESH_LABEL)).and_then(Value::as_str);
        label.or_else(|| annotation(v, MESH_LABEL)).filter(|m| !m.is_empty()).map(str::to_owned)
    };
    from(object).or_else(|| namespace.and_then(from)).unwrap_or_else(|| "default".into())
}

/// Whether a Service selects `pod`: same namespace, a non-empty selector
/// the pod's labels satisfy, not `ExternalName`, not `kuma.io/ignore`d.
fn selects(service: &Value, pod: &Value) -> bool {
    let ns = |v: &'_ Value| str_at(v, &["metadata", "namespace"]).unwrap_or("default").to_owned();
    let Some(selector) = map_at(service, &["spec", "selector"]).filter(|s| !s.is_empty()) else { return false };
    let Some(pod_labels) = labels(pod) else { return false };
    // The selector first: it rules out almost every Service.
    selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v))
        && ns(service) == ns(pod)
        && str_at(service, &["spec", "type"]) != Some("ExternalName")
        && annotation(service, "kuma.io/ignore") != Some("true")
}

/// The container port (and its container) a Service port's `targetPort`
/// names: by name, the pod's TCP container port of that name; by number,
/// that port (its container if one declares it).
fn target<'p>(pod: &'p Value, target_port: &Value) -> Option<(u16, Option<&'p Value>, Option<&'p str>)> {
    let containers = pod.pointer("/spec/containers").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    let ports = || containers.iter().flat_map(|c| c.get("ports").and_then(Value::as_array).into_iter().flatten().map(move |p| (c, p)));
    let tcp = |p: &Value| p.get("protocol").and_then(Value::as_str).is_none_or(|proto| proto == "TCP");
    let number = |p: &Value| p.get("containerPort").and_then(Value::as_u64).and_then(|n| u16::try_from(n).ok());
    match target_port {
        Value::String(name) => {
            let (c, p) = ports().find(|(_, p)| tcp(p) && p.get("name").and_then(Value::as_str) == Some(name))?;
            Some((number(p)?, Some(c), p.get("name").and_then(Value::as_str)))
        }
        Value::Number(n) => {
            let n = u16::try_from(n.as_u64()?).ok()?;
            let found = ports().find(|(_, p)| tcp(p) && number(p) == Some(n));
            Some((n, found.map(|(c, _)| c), found.and_then(|(_, p)| p.get("name").and_then(Value::as_str))))
        }
        _ => None,
    }
}

/// The `kuma.io/protocol` of a Service port: a known `appProtocol`, else
/// the `<port>.service.kuma.io/protocol` annotation, else `tcp`; lowercase.
fn protocol(service: &Value, port: &Value) -> String {
    let known = port.get("appProtocol").and_then(Value::as_str).map(str::to_ascii_lowercase).filter(|p| KNOWN_PROTOCOLS.contains(&p.as_str()));
    let number = port.get("port").and_then(Value::as_u64).unwrap_or(0);
    known
        .or_else(|| annotation(service, &format!("{number}.service.kuma.io/protocol")).map(str::to_ascii_lowercase))
        .unwrap_or_else(|| "tcp".into())
}

/// Whether container `c` of `pod` is ready (no container: the pod's
/// readiness is not consulted, as in kuma-cp).
fn container_ready(pod: &Value, c: Option<&Value>) -> bool {
    let Some(name) = c.and_then(|c| c.get("name")).and_then(Value::as_str) else { return true };
    let statuses = pod.pointer("/status/containerStatuses").and_then(Value::as_array);
    statuses.into_iter().flatten().find(|s| s.get("name").and_then(Value::as_str) == Some(name)).and_then(|s| s.get("ready")).and_then(Value::as_bool).unwrap_or(false)
}

/// The pod's labels as inbound tags: non-empty values, without keys that
/// contain `kuma.io/` (kuma-cp sets those itself).
fn pod_tags(pod: &Value, filtered: bool) -> Map<String, Value> {
    labels(pod)
        .into_iter()
        .flatten()
        .filter(|(k, v)| v.as_str().is_some_and(|v| !v.is_empty()) && !(filtered && k.contains("kuma.io/")))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The Dataplane kuma-cp would make of `pod`, given the Services of the
/// cluster and the pod's namespace, or `None` for a pod that has none: not
/// running on an address of its own (host network, no pod IP yet, finished,
/// evicted). `extra_labels` go on the Dataplane (the agent's cgroup binding).
///
/// Differs from kuma-cp in one respect: kuma-cp converts only pods with an
/// injected sidecar; here every pod of the node is a workload.
pub fn dataplane(pod: &Value, services: &[&Value], namespace: Option<&Value>, extra_labels: &[(&str, &str)]) -> Option<Value> {
    let name = str_at(pod, &["metadata", "name"])?;
    let ns = str_at(pod, &["metadata", "namespace"]).unwrap_or("default");
    let ip = str_at(pod, &["status", "podIP"]).filter(|ip| !ip.is_empty())?;
    let phase = str_at(pod, &["status", "phase"]);
    if pod.pointer("/spec/hostNetwork").and_then(Value::as_bool) == Some(true)
        || matches!(phase, Some("Succeeded" | "Failed"))
        || str_at(pod, &["status", "reason"]) == Some("Evicted")
    {
        return None;
    }
    let deleting = pod.pointer("/metadata/deletionTimestamp").is_some_and(|t| !t.is_null());
    let mesh = mesh_of(pod, namespace);
    let mut matching: Vec<&Value> = services.iter().copied().filter(|s| selects(s, pod)).collect();
    matching.sort_by_key(|s| str_at(s, &["metadata", "name"]).unwrap_or_default().to_owned());
    let mut inbounds = Vec::new();
    for svc in matching {
        let svc_name = str_at(svc, &["metadata", "name"]).unwrap_or_default();
        let headless = str_at(svc, &["spec", "clusterIP"]) == Some("None");
        for port in svc.pointer("/spec/ports").and_then(Value::as_array).into_iter().flatten() {
            if port.get("protocol").and_then(Value::as_str).is_some_and(|p| p != "TCP") {
                continue;
            }
            let Some(number) = port.get("port").and_then(Value::as_u64) else { continue };
            let target_port = port.get("targetPort").cloned().unwrap_or(json!(number));
            let Some((inbound_port, container, port_name)) = target(pod, &target_port) else { continue };
            let mut tags = pod_tags(pod, true);
            tags.insert("k8s.kuma.io/namespace".into(), json!(ns));
            tags.insert("k8s.kuma.io/service-name".into(), json!(svc_name));
            tags.insert("k8s.kuma.io/service-port".into(), json!(number.to_string()));
            tags.insert("kuma.io/service".into(), json!(format!("{svc_name}_{ns}_svc_{number}")));
            tags.insert("kuma.io/protocol".into(), json!(protocol(svc, port)));
            if headless {
                tags.insert("kuma.io/instance".into(), json!(name));
            }
            let ready = !deleting && container_ready(pod, container);
            let mut inbound = json!({"port": inbound_port, "tags": tags, "health": {"ready": ready}});
            if let Some(port_name) = port_name {
                inbound["name"] = json!(port_name);
            }
            inbounds.push(inbound);
        }
    }
    if inbounds.is_empty() {
        // kuma-cp names a serviceless pod's service after its workload
        // (deployment, job, ...); the pod's name stands for it here.
        let mut tags = pod_tags(pod, false);
        tags.insert("k8s.kuma.io/namespace".into(), json!(ns));
        tags.insert("kuma.io/service".into(), json!(format!("{name}_{ns}_svc")));
        tags.insert("kuma.io/protocol".into(), json!("tcp"));
        tags.insert("kuma.io/instance".into(), json!(name));
        inbounds.push(json!({"port": SERVICELESS_PORT, "tags": tags, "health": {"ready": !deleting}}));
    }
    let mut meta_labels: Map<String, Value> = labels(pod).cloned().unwrap_or_default();
    meta_labels.insert(MESH_LABEL.into(), json!(mesh));
    meta_labels.insert("k8s.kuma.io/namespace".into(), json!(ns));
    meta_labels.insert("kuma.io/env".into(), json!("kubernetes"));
    for (k, v) in extra_labels {
        meta_labels.insert((*k).into(), json!(v));
    }
    Some(json!({
        "apiVersion": "kuma.io/v1alpha1",
        "kind": "Dataplane",
        "metadata": {"name": name, "namespace": ns, "labels": meta_labels},
        "spec": {"networking": {"address": ip, "inbound": inbounds}},
    }))
}

/// The MeshService kuma-cp generates for `service`, or `None` where it
/// generates none (no cluster IP: headless or `ExternalName`; ignored;
/// no selector; no TCP port).
///
/// Differs from kuma-cp: kuma-cp generates MeshServices only for meshes in
/// a `meshServices` mode and Services of injected namespaces; a user of this
/// agent has no sidecars, so it derives one for every such Service that has
/// no MeshService of its own. Headless Services (one MeshService per pod in
/// kuma-cp) are left out.
pub fn mesh_service(service: &Value, namespace: Option<&Value>) -> Option<Value> {
    let name = str_at(service, &["metadata", "name"])?;
    let ns = str_at(service, &["metadata", "namespace"]).unwrap_or("default");
    let vip = str_at(service, &["spec", "clusterIP"]).filter(|ip| !ip.is_empty() && *ip != "None")?;
    if annotation(service, "kuma.io/ignore") == Some("true") || annotation(service, "kuma.io/gateway").is_some() {
        return None;
    }
    let mut selector = map_at(service, &["spec", "selector"]).filter(|s| !s.is_empty())?.clone();
    selector.insert("k8s.kuma.io/namespace".into(), json!(ns));
    let ports: Vec<Value> = service
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|p| p.get("protocol").and_then(Value::as_str).is_none_or(|p| p == "TCP"))
        .filter_map(|p| {
            let number = p.get("port")?.as_u64()?;
            let port_name = p.get("name").and_then(Value::as_str).filter(|n| !n.is_empty()).map_or_else(|| number.to_string(), str::to_owned);
            Some(json!({
                "name": port_name,
                "port": number,
                "targetPort": p.get("targetPort").cloned().unwrap_or(json!(number)),
                "appProtocol": p.get("appProtocol").and_then(Value::as_str).unwrap_or("tcp"),
            }))
        })
        .collect();
    if ports.is_empty() {
        return None;
    }
    let mut meta_labels: Map<String, Value> = labels(service).cloned().unwrap_or_default();
    meta_labels.insert(MESH_LABEL.into(), json!(mesh_of(service, namespace)));
    meta_labels.insert("k8s.kuma.io/service-name".into(), json!(name));
    meta_labels.insert("k8s.kuma.io/namespace".into(), json!(ns));
    meta_labels.insert("kuma.io/managed-by".into(), json!("k8s-controller"));
    meta_labels.insert("kuma.io/env".into(), json!("kubernetes"));
    meta_labels.insert("kuma.io/origin".into(), json!("zone"));
    meta_labels.insert("k8s.kuma.io/is-headless-service".into(), json!("false"));
    Some(json!({
        "apiVersion": "kuma.io/v1alpha1",
        "kind": "MeshService",
        "metadata": {"name": name, "namespace": ns, "labels": meta_labels},
        "spec": {"selector": {"dataplaneTags": selector}, "ports": ports},
        "status": {"vips": [{"ip": vip}]},
    }))
}

/// How kubelet names pod cgroups (its `--cgroup-driver`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CgroupDriver {
    /// `kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<uid, `-` as `_`>.slice`.
    Systemd,
    /// `kubepods/<qos>/pod<uid>`.
    Cgroupfs,
}

/// The pod's cgroup below the cgroup2 root kubelet uses, from its UID and
/// QoS class (Guaranteed pods sit directly under `kubepods`), or `None`
/// without a UID. Its containers' cgroups are below it, so they inherit the
/// pod's binding.
pub fn pod_cgroup(pod: &Value, driver: CgroupDriver) -> Option<String> {
    let uid = str_at(pod, &["metadata", "uid"]).filter(|u| !u.is_empty())?;
    let qos = match str_at(pod, &["status", "qosClass"]) {
        Some("Guaranteed") => None,
        Some("BestEffort") => Some("besteffort"),
        _ => Some("burstable"),
    };
    Some(match (driver, qos) {
        (CgroupDriver::Systemd, Some(q)) => format!("kubepods.slice/kubepods-{q}.slice/kubepods-{q}-pod{}.slice", uid.replace('-', "_")),
        (CgroupDriver::Systemd, None) => format!("kubepods.slice/kubepods-pod{}.slice", uid.replace('-', "_")),
        (CgroupDriver::Cgroupfs, Some(q)) => format!("kubepods/{q}/pod{uid}"),
        (CgroupDriver::Cgroupfs, None) => format!("kubepods/pod{uid}"),
    })
}

/// The name of the Dataplane that stands for an EndpointSlice's endpoints
/// (`:` cannot occur in a pod's name, so it never meets a pod's Dataplane).
pub fn slice_dataplane_name(slice: &str) -> String {
    format!("endpointslice:{slice}")
}

/// A Dataplane standing for the ready endpoints of `slice` that are not on
/// `node`, or `None` when there are none to stand for: not an IP slice, or
/// not of `service` (its `kubernetes.io/service-name`). Each endpoint and
/// port is an inbound at the endpoint's address, tagged as kuma-cp tags the
/// pod's inbound for that Service, so the Service's MeshService and legacy
/// `kuma.io/service` references select it. An inbound is named after the
/// Service port's targetPort when that is a name, so MeshService ports by
/// name match it.
///
/// Differs from kuma-cp, which makes every pod of the cluster a Dataplane:
/// the agent watches only its own node's pods (which become Dataplanes
/// themselves, so their endpoints are skipped here). Of another node's pod
/// it knows what the slice says, not the pod's labels: a selector on labels
/// other than the Service's own selector finds only this node's pods.
pub fn slice_dataplane(slice: &Value, service: &Value, namespace: Option<&Value>, node: &str) -> Option<Value> {
    let name = str_at(slice, &["metadata", "name"])?;
    let ns = str_at(slice, &["metadata", "namespace"]).unwrap_or("default");
    let svc_name = str_at(service, &["metadata", "name"])?;
    if labels(slice).and_then(|l| l.get("kubernetes.io/service-name")).and_then(Value::as_str) != Some(svc_name) {
        return None;
    }
    if !matches!(str_at(slice, &["addressType"]), Some("IPv4" | "IPv6")) {
        return None;
    }
    let selector = map_at(service, &["spec", "selector"]).cloned().unwrap_or_default();
    let service_ports: Vec<&Value> = service.pointer("/spec/ports").and_then(Value::as_array).into_iter().flatten().collect();
    let mut inbounds = Vec::new();
    let mut first_address = None;
    for endpoint in slice.get("endpoints").and_then(Value::as_array).into_iter().flatten() {
        if str_at(endpoint, &["nodeName"]) == Some(node) {
            continue;
        }
        let Some(address) = endpoint.pointer("/addresses/0").and_then(Value::as_str) else { continue };
        // The API: a missing `ready` condition means ready.
        let ready = endpoint.pointer("/conditions/ready").and_then(Value::as_bool).unwrap_or(true);
        first_address.get_or_insert(address);
        for port in slice.get("ports").and_then(Value::as_array).into_iter().flatten() {
            if port.get("protocol").and_then(Value::as_str).is_some_and(|p| p != "TCP") {
                continue;
            }
            let Some(number) = port.get("port").and_then(Value::as_u64) else { continue };
            let port_name = port.get("name").and_then(Value::as_str).unwrap_or_default();
            let Some(svc_port) = service_ports.iter().find(|p| p.get("name").and_then(Value::as_str).unwrap_or_default() == port_name) else { continue };
            let Some(svc_number) = svc_port.get("port").and_then(Value::as_u64) else { continue };
            let mut tags: Map<String, Value> = selector.clone();
            tags.insert("k8s.kuma.io/namespace".into(), json!(ns));
            tags.insert("k8s.kuma.io/service-name".into(), json!(svc_name));
            tags.insert("k8s.kuma.io/service-port".into(), json!(svc_number.to_string()));
            tags.insert("kuma.io/service".into(), json!(format!("{svc_name}_{ns}_svc_{svc_number}")));
            tags.insert("kuma.io/protocol".into(), json!(protocol(service, svc_port)));
            let mut inbound = json!({"port": number, "address": address, "tags": tags, "health": {"ready": ready}});
            if let Some(target) = svc_port.get("targetPort").and_then(Value::as_str) {
                inbound["name"] = json!(target);
            }
            inbounds.push(inbound);
        }
    }
    let address = first_address?;
    if inbounds.is_empty() {
        return None;
    }
    let mut meta_labels = Map::new();
    meta_labels.insert(MESH_LABEL.into(), json!(mesh_of(service, namespace)));
    meta_labels.insert("k8s.kuma.io/namespace".into(), json!(ns));
    meta_labels.insert("kuma.io/env".into(), json!("kubernetes"));
    Some(json!({
        "apiVersion": "kuma.io/v1alpha1",
        "kind": "Dataplane",
        "metadata": {"name": slice_dataplane_name(name), "namespace": ns, "labels": meta_labels},
        "spec": {"networking": {"address": address, "inbound": inbounds}},
    }))
}

mod cluster;

pub use cluster::{Cluster, ClusterSource, Inbox, Kind, Update};
