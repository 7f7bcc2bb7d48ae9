//! Kubernetes objects read as kuma-cp reads them: pods as Dataplanes with
//! its inbound tags, Services as its generated MeshServices, and the routes
//! that follow from them.

use redirector_core::{plan, source::kubernetes};
use serde_json::{Value, json};
use std::{net::SocketAddr, path::Path};

fn pod(name: &str, ns: &str, ip: &str, labels: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{name}"), "labels": labels},
        "spec": {"nodeName": "node-1", "containers": [{"name": "app", "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]}]},
        "status": {"phase": "Running", "podIP": ip, "containerStatuses": [{"name": "app", "ready": true}]},
    })
}

fn service(name: &str, ns: &str, vip: &str, selector: Value, target_port: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": ns, "labels": {"team": "shop"}},
        "spec": {"clusterIP": vip, "selector": selector, "ports": [{"name": "web", "port": 80, "targetPort": target_port, "protocol": "TCP"}]},
    })
}

/// The documents, as one YAML stream (JSON is YAML).
fn stream(docs: &[Value]) -> String {
    docs.iter().map(|d| format!("---\n{d}\n")).collect()
}

fn tags(dp: &Value, inbound: usize) -> &serde_json::Map<String, Value> {
    dp["spec"]["networking"]["inbound"][inbound]["tags"].as_object().unwrap()
}

#[test]
fn the_mesh_comes_from_the_object_then_its_namespace_then_default() {
    let ns = json!({"metadata": {"name": "shop", "labels": {"kuma.io/mesh": "ns-mesh"}}});
    let annotated = json!({"metadata": {"annotations": {"kuma.io/mesh": "annotated"}}});
    let labelled = json!({"metadata": {"labels": {"kuma.io/mesh": "own"}, "annotations": {"kuma.io/mesh": "annotated"}}});
    assert_eq!(kubernetes::mesh_of(&labelled, Some(&ns)), "own");
    assert_eq!(kubernetes::mesh_of(&annotated, Some(&ns)), "annotated");
    assert_eq!(kubernetes::mesh_of(&json!({}), Some(&ns)), "ns-mesh");
    assert_eq!(kubernetes::mesh_of(&json!({}), None), "default");
}

#[test]
fn a_pod_gets_the_inbound_tags_kuma_cp_gives_it() {
    let p = pod("web-1", "shop", "10.1.0.5", json!({"app": "web", "version": "v1", "kuma.io/sidecar-injection": "enabled", "empty": ""}));
    let s = service("web", "shop", "10.96.0.10", json!({"app": "web"}), json!("http"));
    let other_ns = service("web", "other", "10.96.0.11", json!({"app": "web"}), json!(8080));
    let dp = kubernetes::dataplane(&p, &[&s, &other_ns], None, &[("redirector.io/cgroup", "kubepods/podx")]).unwrap();
    assert_eq!(dp["metadata"]["name"], "web-1");
    assert_eq!(dp["metadata"]["labels"]["kuma.io/mesh"], "default");
    assert_eq!(dp["metadata"]["labels"]["redirector.io/cgroup"], "kubepods/podx");
    assert_eq!(dp["spec"]["networking"]["inbound"].as_array().unwrap().len(), 1, "{dp:#}");
    let inbound = &dp["spec"]["networking"]["inbound"][0];
    assert_eq!((inbound["port"].clone(), inbound["name"].clone(), inbound["health"]["ready"].clone()), (json!(8080), json!("http"), json!(true)));
    let expected = json!({
        "app": "web", "version": "v1",
        "k8s.kuma.io/namespace": "shop", "k8s.kuma.io/service-name": "web", "k8s.kuma.io/service-port": "80",
        "kuma.io/service": "web_shop_svc_80", "kuma.io/protocol": "tcp",
    });
    assert_eq!(&Value::Object(tags(&dp, 0).clone()), &expected);
}

#[test]
fn the_protocol_is_a_known_app_protocol_then_the_annotation_then_tcp() {
    let p = pod("web-1", "shop", "10.1.0.5", json!({"app": "web"}));
    let mut s = service("web", "shop", "10.96.0.10", json!({"app": "web"}), json!(8080));
    let dp = |s: &Value| kubernetes::dataplane(&p, &[s], None, &[]).unwrap();
    s["spec"]["ports"][0]["appProtocol"] = json!("HTTP");
    assert_eq!(tags(&dp(&s), 0)["kuma.io/protocol"], "http");
    s["spec"]["ports"][0]["appProtocol"] = json!("kubernetes.io/ws");
    s["metadata"]["annotations"] = json!({"80.service.kuma.io/protocol": "GRPC"});
    assert_eq!(tags(&dp(&s), 0)["kuma.io/protocol"], "grpc");
    s["metadata"]["annotations"] = json!({});
    assert_eq!(tags(&dp(&s), 0)["kuma.io/protocol"], "tcp");
}

#[test]
fn pods_without_an_address_of_their_own_are_no_workload() {
    let mut p = pod("web-1", "shop", "10.1.0.5", json!({"app": "web"}));
    p["spec"]["hostNetwork"] = json!(true);
    assert!(kubernetes::dataplane(&p, &[], None, &[]).is_none());
    let mut p = pod("web-1", "shop", "", json!({"app": "web"}));
    assert!(kubernetes::dataplane(&p, &[], None, &[]).is_none(), "no pod IP yet");
    p["status"]["podIP"] = json!("10.1.0.5");
    p["status"]["phase"] = json!("Succeeded");
    assert!(kubernetes::dataplane(&p, &[], None, &[]).is_none());
}

#[test]
fn a_pod_no_service_selects_gets_kuma_cps_serviceless_inbound() {
    let p = pod("job-1", "shop", "10.1.0.6", json!({"app": "job", "kuma.io/x": "kept"}));
    let dp = kubernetes::dataplane(&p, &[], None, &[]).unwrap();
    let inbound = &dp["spec"]["networking"]["inbound"][0];
    assert_eq!(inbound["port"], kubernetes::SERVICELESS_PORT);
    assert_eq!(tags(&dp, 0)["kuma.io/service"], "job-1_shop_svc");
    assert_eq!(tags(&dp, 0)["kuma.io/x"], "kept", "kuma-cp does not filter kuma.io/ labels here");
}

#[test]
fn a_service_becomes_the_mesh_service_kuma_cp_generates() {
    let s = service("web", "shop", "10.96.0.10", json!({"app": "web"}), json!("http"));
    let ms = kubernetes::mesh_service(&s, None).unwrap();
    assert_eq!(ms["metadata"]["name"], "web");
    assert_eq!(ms["spec"]["selector"]["dataplaneTags"], json!({"app": "web", "k8s.kuma.io/namespace": "shop"}));
    assert_eq!(ms["spec"]["ports"], json!([{"name": "web", "port": 80, "targetPort": "http", "appProtocol": "tcp"}]));
    assert_eq!(ms["status"]["vips"], json!([{"ip": "10.96.0.10"}]));
    assert_eq!(ms["metadata"]["labels"]["team"], "shop");
    assert_eq!(ms["metadata"]["labels"]["k8s.kuma.io/service-name"], "web");
    let headless = service("db", "shop", "None", json!({"app": "db"}), json!(5432));
    assert!(kubernetes::mesh_service(&headless, None).is_none());
    let mut selectorless = service("ext", "shop", "10.96.0.12", json!({}), json!(80));
    assert!(kubernetes::mesh_service(&selectorless, None).is_none());
    selectorless["spec"]["selector"] = json!({"app": "x"});
    selectorless["spec"]["ports"][0]["protocol"] = json!("UDP");
    assert!(kubernetes::mesh_service(&selectorless, None).is_none(), "no TCP port");
}

/// End to end through the pipeline: the generated MeshService finds the
/// pod's Dataplane by its tags and the named target port, a not-ready
/// container is no endpoint, and a MeshTCPRoute selecting pods by their
/// labels (MeshSubset) applies to exactly those pods.
#[test]
fn generated_resources_route_as_kuma_routes_them() {
    let v1 = pod("web-1", "shop", "10.1.0.5", json!({"app": "web", "version": "v1"}));
    let mut v2 = pod("web-2", "shop", "10.1.0.6", json!({"app": "web", "version": "v2"}));
    let mut unready = pod("web-3", "shop", "10.1.0.7", json!({"app": "web", "version": "v1"}));
    unready["status"]["containerStatuses"][0]["ready"] = json!(false);
    v2["metadata"]["labels"]["role"] = json!("client");
    let web = service("web", "shop", "10.96.0.10", json!({"app": "web"}), json!("http"));
    let v2_svc = service("web-v2", "shop", "10.96.0.20", json!({"app": "web", "version": "v2"}), json!(8080));
    let services = [&web, &v2_svc];
    let cgroup = |p: &str| format!("kubepods/{p}");
    let mut docs: Vec<Value> = [(&v1, "web-1"), (&v2, "web-2"), (&unready, "web-3")]
        .iter()
        .map(|(p, n)| kubernetes::dataplane(p, &services, None, &[("redirector.io/cgroup", &cgroup(n))]).unwrap())
        .collect();
    docs.extend(services.iter().map(|s| kubernetes::mesh_service(s, None).unwrap()));
    docs.push(json!({
        "apiVersion": "kuma.io/v1alpha1", "kind": "MeshTCPRoute",
        "metadata": {"name": "clients-to-v2", "namespace": "shop", "labels": {"kuma.io/mesh": "default"}},
        "spec": {
            "targetRef": {"kind": "MeshSubset", "tags": {"role": "client"}},
            "to": [{"targetRef": {"kind": "MeshService", "name": "web"}, "rules": [{"default": {"backendRefs": [{"kind": "MeshService", "name": "web-v2", "port": 80}]}}]}],
        },
    }));
    let plan = plan::build_str(Path::new("kubernetes"), &stream(&docs)).unwrap_or_else(|p| panic!("{p:?}"));
    let vip: SocketAddr = "10.96.0.10:80".parse().unwrap();
    let route_of = |class: usize| plan.resolution.classes[class].routes.iter().find(|r| SocketAddr::new(r.vip, r.port) == vip).cloned().unwrap();
    // Outside the MeshSubset: the service itself, its two ready pods on the named port.
    let base = route_of(0);
    let endpoints: Vec<SocketAddr> = base.backends.iter().flat_map(|b| b.endpoints.iter().copied()).collect();
    assert_eq!(endpoints, ["10.1.0.5:8080".parse().unwrap(), "10.1.0.6:8080".parse::<SocketAddr>().unwrap()], "{base:#?}");
    // The client pod's class goes to web-v2.
    let client = plan.resolution.workloads.iter().find(|w| w.dataplane.ends_with("web-2")).unwrap();
    let routed = route_of(client.class as usize);
    assert_eq!(routed.policy.as_deref(), Some("MeshTCPRoute/clients-to-v2"), "{routed:#?}");
    assert_eq!(routed.backends.iter().flat_map(|b| b.endpoints.iter().copied()).collect::<Vec<_>>(), ["10.1.0.6:8080".parse::<SocketAddr>().unwrap()]);
    let other = plan.resolution.workloads.iter().find(|w| w.dataplane.ends_with("web-1")).unwrap();
    assert_eq!(route_of(other.class as usize), base, "a pod outside the subset keeps the base route");
}

#[test]
fn pod_cgroups_are_named_as_kubelet_names_them() {
    use kubernetes::{CgroupDriver::*, pod_cgroup};
    let mut p = pod("web-1", "shop", "10.1.0.5", json!({}));
    p["metadata"]["uid"] = json!("8d5b-11aa");
    for (qos, systemd, cgroupfs) in [
        ("Guaranteed", "kubepods.slice/kubepods-pod8d5b_11aa.slice", "kubepods/pod8d5b-11aa"),
        ("Burstable", "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod8d5b_11aa.slice", "kubepods/burstable/pod8d5b-11aa"),
        ("BestEffort", "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod8d5b_11aa.slice", "kubepods/besteffort/pod8d5b-11aa"),
    ] {
        p["status"]["qosClass"] = json!(qos);
        assert_eq!(pod_cgroup(&p, Systemd).as_deref(), Some(systemd));
        assert_eq!(pod_cgroup(&p, Cgroupfs).as_deref(), Some(cgroupfs));
    }
    p["metadata"]["uid"] = json!("");
    assert_eq!(pod_cgroup(&p, Systemd), None);
}

/// The cluster adapter turns watch events into store events: a Service and
/// a pod give a MeshService and a Dataplane the engine routes to; a
/// MeshService of the Service's name replaces the generated one; deleting
/// the Service leaves the pod a serviceless inbound; every resource's source
/// names its API object.
#[test]
fn the_cluster_feeds_the_store_incrementally() {
    use redirector_core::{
        resolve::{Engine, NoDns},
        source::kubernetes::{CgroupDriver, Cluster, Kind},
    };
    let mut cluster = Cluster::new(CgroupDriver::Systemd, "node-1");
    let mut engine = Engine::new();
    let apply = |engine: &mut Engine, events: Vec<redirector_core::store::Event>| {
        let n = events.len();
        for e in events {
            engine.apply(e);
        }
        engine.update(&NoDns);
        n
    };
    let endpoints_at = |engine: &Engine, port: u16| -> Vec<String> {
        engine.base_routes().filter(|r| r.port == port).flat_map(|r| r.backends.iter().flat_map(|b| b.endpoints.iter().map(|e| e.to_string()))).collect()
    };
    let endpoints = |engine: &Engine| endpoints_at(engine, 80);
    let mut p = pod("web-1", "shop", "10.1.0.5", json!({"app": "web"}));
    p["status"]["qosClass"] = json!("BestEffort");
    apply(&mut engine, cluster.apply(Kind::Namespace, json!({"metadata": {"name": "shop", "labels": {"kuma.io/mesh": "default"}}})));
    apply(&mut engine, cluster.apply(Kind::Pod, p.clone()));
    assert_eq!(apply(&mut engine, cluster.apply(Kind::Service, service("web", "shop", "10.96.0.10", json!({"app": "web"}), json!("http")))), 2, "the MeshService and the pod's Dataplane again");
    assert_eq!(endpoints(&engine), ["10.1.0.5:8080"]);
    let workloads = engine.workloads();
    assert_eq!(workloads.len(), 1);
    assert_eq!(workloads[0].cgroup, std::path::PathBuf::from("kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-poduid_web_1.slice").join(""), "{workloads:?}");
    // A MeshService of its own: the generated one goes (port 80), this one serves port 8000.
    let own = json!({
        "apiVersion": "kuma.io/v1alpha1", "kind": "MeshService",
        "metadata": {"name": "web", "namespace": "shop", "labels": {"kuma.io/mesh": "default"}},
        "spec": {"selector": {"dataplaneTags": {"app": "web"}}, "ports": [{"port": 8000, "targetPort": "http"}]},
        "status": {"vips": [{"ip": "10.96.0.10"}]},
    });
    apply(&mut engine, cluster.apply(Kind::Kuma("MeshService".into()), own));
    assert!(engine.store().duplicate_problems().is_empty());
    assert!(cluster.problems().is_empty(), "{:?}", cluster.problems());
    assert!(endpoints(&engine).is_empty());
    assert_eq!(endpoints_at(&engine, 8000), ["10.1.0.5:8080"]);
    apply(&mut engine, cluster.delete(Kind::Kuma("MeshService".into()), "shop", "web"));
    assert_eq!(endpoints(&engine), ["10.1.0.5:8080"], "the generated MeshService is back");
    apply(&mut engine, cluster.delete(Kind::Service, "shop", "web"));
    assert!(endpoints(&engine).is_empty());
    let dp = engine.store().iter().find(|(k, _)| k.kind == redirector_core::store::Kind::Dataplane).map(|(_, r)| r.clone()).unwrap();
    assert_eq!(dp.origin().file.to_str(), Some("kubernetes/pods/shop/web-1"));
    apply(&mut engine, cluster.delete(Kind::Pod, "shop", "web-1"));
    assert_eq!(engine.store().iter().count(), 0, "nothing left once every object is gone");
}

fn slice(name: &str, service: &str, endpoints: Value) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": "shop", "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "ports": [{"name": "web", "port": 8080, "protocol": "TCP"}],
        "endpoints": endpoints,
    })
}

fn feed(engine: &mut redirector_core::resolve::Engine, events: Vec<redirector_core::store::Event>) -> usize {
    let n = events.len();
    for e in events {
        engine.apply(e);
    }
    engine.update(&redirector_core::resolve::NoDns);
    n
}

fn endpoints_of(engine: &redirector_core::resolve::Engine) -> Vec<String> {
    let mut all: Vec<String> = engine.base_routes().filter(|r| r.port == 80).flat_map(|r| r.backends.iter().flat_map(|b| b.endpoints.iter().map(|e| e.to_string()))).collect();
    all.sort();
    all
}

/// A Service's endpoints on other nodes come from its EndpointSlices (ready
/// ones, by targetPort number or name); an endpoint on this node comes from
/// its pod's Dataplane, not twice; a slice of another Service, or one whose
/// Service is gone, gives nothing.
#[test]
fn endpoints_on_other_nodes_come_from_endpoint_slices() {
    use redirector_core::{resolve::Engine, source::kubernetes::{CgroupDriver, Cluster, Kind}};
    for target in [json!(8080), json!("http")] {
        let mut cluster = Cluster::new(CgroupDriver::Systemd, "node-1");
        let mut engine = Engine::new();
        feed(&mut engine, cluster.apply(Kind::Pod, pod("web-1", "shop", "10.1.0.5", json!({"app": "web"}))));
        feed(&mut engine, cluster.apply(Kind::Service, service("web", "shop", "10.96.0.10", json!({"app": "web"}), target.clone())));
        let endpoints = json!([
            {"addresses": ["10.1.0.5"], "nodeName": "node-1", "conditions": {"ready": true}},
            {"addresses": ["10.2.0.7"], "nodeName": "node-2", "conditions": {"ready": true}},
            {"addresses": ["10.2.0.8"], "nodeName": "node-2", "conditions": {"ready": false}},
            {"addresses": ["10.3.0.9"], "nodeName": "node-3"},
        ]);
        feed(&mut engine, cluster.apply(Kind::EndpointSlice, slice("web-abcde", "web", endpoints.clone())));
        assert!(cluster.problems().is_empty(), "{:?}", cluster.problems());
        assert_eq!(endpoints_of(&engine), ["10.1.0.5:8080", "10.2.0.7:8080", "10.3.0.9:8080"], "targetPort {target}");
        assert_eq!(feed(&mut engine, cluster.apply(Kind::EndpointSlice, slice("web-abcde", "web", endpoints.clone()))), 0, "the same slice again changes nothing");
        feed(&mut engine, cluster.apply(Kind::EndpointSlice, slice("other-abcde", "other", endpoints)));
        assert_eq!(endpoints_of(&engine).len(), 3, "another Service's slice");
        feed(&mut engine, cluster.delete(Kind::Service, "shop", "web"));
        assert!(endpoints_of(&engine).is_empty());
        let left: Vec<_> = engine.store().iter().map(|(k, _)| k.name.to_string()).collect();
        assert_eq!(left, ["web-1"], "only the pod's Dataplane: slices of no Service stand for nothing");
    }
}

/// A relist is held until it is complete, then replaces the kind: what it
/// did not list is deleted, what it listed unchanged emits nothing, and a
/// kind whose CRD is absent holds nothing.
#[test]
fn a_relist_replaces_its_kind_once_complete() {
    use redirector_core::{
        resolve::Engine,
        source::{Source as _, kubernetes::{CgroupDriver, Cluster, ClusterSource, Kind, Update}},
    };
    let (mut source, inbox) = ClusterSource::new(Cluster::new(CgroupDriver::Systemd, "node-1"));
    let mut engine = Engine::new();
    let mut step = |engine: &mut Engine, updates: Vec<Update>| {
        for u in updates {
            inbox.push(u);
        }
        feed(engine, source.changes().events)
    };
    let svc = |name: &str, vip: &str| service(name, "shop", vip, json!({"app": name}), json!(8080));
    assert_eq!(step(&mut engine, vec![Update::Listing(Kind::Service), Update::Listed(Kind::Service, svc("a", "10.96.0.1")), Update::Listed(Kind::Service, svc("b", "10.96.0.2"))]), 0, "nothing until the list is done");
    assert_eq!(step(&mut engine, vec![Update::ListDone(Kind::Service)]), 2);
    // A write that changes only what no conversion reads converts nothing.
    let mut touched = svc("a", "10.96.0.1");
    touched["metadata"]["resourceVersion"] = json!("77");
    touched["metadata"]["managedFields"] = json!([{"manager": "kubectl", "operation": "Update"}]);
    touched["metadata"]["annotations"] = json!({"kubectl.kubernetes.io/last-applied-configuration": "{}"});
    assert_eq!(step(&mut engine, vec![Update::Applied(Kind::Service, touched)]), 0);
    assert_eq!(step(&mut engine, vec![Update::Applied(Kind::Service, svc("c", "10.96.0.3"))]), 1);
    // The watch broke and its resource version expired: relist without b, c.
    let events = step(&mut engine, vec![Update::Listing(Kind::Service), Update::Listed(Kind::Service, svc("a", "10.96.0.1")), Update::Listed(Kind::Service, svc("d", "10.96.0.4"))]);
    assert_eq!(events, 0);
    assert_eq!(step(&mut engine, vec![Update::ListDone(Kind::Service)]), 3, "b and c deleted, d added, a unchanged");
    let names: Vec<_> = engine.store().iter().map(|(k, _)| k.name.to_string()).collect();
    assert_eq!(names, ["a", "d"]);
    assert_eq!(step(&mut engine, vec![Update::Deleted(Kind::Service, svc("d", "10.96.0.4")), Update::Absent(Kind::Kuma("MeshTCPRoute".into()))]), 1);
    assert_eq!(engine.store().iter().count(), 1);
}

/// A Kubernetes object typed from its JSON tree reads as its text does:
/// the same resources, the same problems (a negative port is declined by
/// the tree and read as text).
#[test]
fn json_documents_load_as_their_text_does() {
    use redirector_core::model::{load_json, load_str};
    let web = service("web", "shop", "10.96.0.10", json!({"app": "web"}), json!("http"));
    let mut docs = vec![
        kubernetes::dataplane(&pod("web-1", "shop", "10.1.0.5", json!({"app": "web"})), &[&web], None, &[]).unwrap(),
        kubernetes::mesh_service(&web, None).unwrap(),
        kubernetes::slice_dataplane(
            &json!({"metadata": {"name": "web-x", "namespace": "shop", "labels": {"kubernetes.io/service-name": "web"}}, "addressType": "IPv4", "ports": [{"name": "web", "port": 8080}], "endpoints": [{"addresses": ["10.2.0.7"]}]}),
            &service("web", "shop", "10.96.0.10", json!({"app": "web"}), json!(8080)),
            None,
            "node-1",
        )
        .unwrap(),
    ];
    let mut bad = kubernetes::mesh_service(&web, None).unwrap();
    bad["spec"]["ports"][0]["port"] = json!(-1);
    docs.push(bad);
    let mut route = json!({"apiVersion": "kuma.io/v1alpha1", "kind": "MeshTCPRoute", "metadata": {"name": "r", "namespace": "shop"}, "spec": {"targetRef": {"kind": "Mesh"}, "to": []}});
    docs.push(route.clone());
    route["spec"]["to"] = json!("not a list");
    docs.push(route);
    let file = Path::new("kubernetes/x");
    for doc in &docs {
        let (config, problems) = load_json(file, doc);
        let (want_config, want_problems) = load_str(file, &doc.to_string());
        assert_eq!(format!("{config:?}"), format!("{want_config:?}"), "{doc}");
        assert_eq!(problems, want_problems, "{doc}");
    }
}
