//! `redirector run --kubernetes` end to end: the production kube-rs client
//! against the fake API server (list, watch, bookmarks, 410 Gone, outages),
//! pod cgroups laid out as kubelet lays them out below the test's own
//! cgroup, the real kernel hooks, and `rdr-probe` clients in those pod
//! cgroups (root only, never skipped).

use integration_tests::{Agent, Backend, ChildCgroup, PinDir, ScratchDir, chi_square, enter_private_netns, fake_api::FakeApi, http_get, probe, require_root};
use serde_json::{Value, json};
use std::{
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

const CHI2_P001_DF1: f64 = 10.83;

const NAMESPACES: &str = "/api/v1/namespaces";
const PODS: &str = "/api/v1/pods";
const SERVICES: &str = "/api/v1/services";
const SLICES: &str = "/apis/discovery.k8s.io/v1/endpointslices";
const ROUTES: &str = "/apis/kuma.io/v1alpha1/meshtcproutes";
/// Served kuma.io kinds; MeshHTTPRoute, MeshExternalService and
/// MeshMultiZoneService are left out: their CRDs are "not installed".
const SERVED: [&str; 7] = [NAMESPACES, PODS, SERVICES, SLICES, ROUTES, "/apis/kuma.io/v1alpha1/meshservices", "/apis/kuma.io/v1alpha1/dataplanes"];

/// A pod's layout: how kubelet's driver names its cgroup.
#[derive(Clone, Copy)]
enum Driver {
    Systemd,
    Cgroupfs,
}

/// A pod cgroup and its one container's cgroup, below the test's cgroup.
/// Field order is drop order: the container goes before the pod.
struct PodCgroup {
    _container: ChildCgroup,
    _pod: ChildCgroup,
}

/// The test's fake kubepods tree (created under its own cgroup) and the
/// pods' cgroups in it; everything is removed on drop, innermost first.
struct Kubepods {
    pods: Vec<PodCgroup>,
    qos: Vec<ChildCgroup>,
    _root: ChildCgroup,
    driver: Driver,
}

impl Kubepods {
    fn new(parent: &Path, driver: Driver) -> Self {
        let (root, qos) = match driver {
            Driver::Systemd => ("kubepods.slice", ["kubepods-burstable.slice", "kubepods-besteffort.slice"]),
            Driver::Cgroupfs => ("kubepods", ["burstable", "besteffort"]),
        };
        let root = ChildCgroup::create(parent, root).expect("kubepods cgroup");
        let qos = qos.iter().map(|q| ChildCgroup::create(root.path(), q).expect("qos cgroup")).collect();
        Self { pods: Vec::new(), qos, _root: root, driver }
    }

    /// Creates the cgroup of pod `uid` in QoS class `qos` as kubelet would,
    /// with one container below it; returns the container's cgroup.
    fn add(&mut self, uid: &str, qos: &str) -> PathBuf {
        let parent = match qos {
            "Guaranteed" => self._root.path().to_path_buf(),
            "BestEffort" => self.qos[1].path().to_path_buf(),
            _ => self.qos[0].path().to_path_buf(),
        };
        let q = qos.to_ascii_lowercase();
        let name = match (self.driver, qos) {
            (Driver::Systemd, "Guaranteed") => format!("kubepods-pod{}.slice", uid.replace('-', "_")),
            (Driver::Systemd, _) => format!("kubepods-{q}-pod{}.slice", uid.replace('-', "_")),
            (Driver::Cgroupfs, _) => format!("pod{uid}"),
        };
        let pod = ChildCgroup::create(&parent, &name).expect("pod cgroup");
        let container = ChildCgroup::create(pod.path(), "cri-containerd-0123abcd.scope").expect("container cgroup");
        let path = container.path().to_path_buf();
        self.pods.push(PodCgroup { _container: container, _pod: pod });
        path
    }
}

impl Drop for Kubepods {
    fn drop(&mut self) {
        while self.pods.pop().is_some() {}
        while self.qos.pop().is_some() {}
    }
}

fn uid(n: u8) -> String {
    format!("0b5f2a4e-7c1d-4d2b-9d8e-3f6a1b2c3d{n:02x}")
}

fn pod(name: &str, node: &str, uid: &str, qos: &str, ip: &str, app: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "shop", "uid": uid, "labels": {"app": app}},
        "spec": {"nodeName": node, "containers": [{"name": "app"}]},
        "status": {"phase": "Running", "podIP": ip, "qosClass": qos, "containerStatuses": [{"name": "app", "ready": true}]},
    })
}

fn service(name: &str, vip: &str, selector: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {"clusterIP": vip, "selector": selector, "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]},
    })
}

/// The EndpointSlice of `service`: ready endpoints at `ips`, on node-2.
fn slice(service: &str, ips: &[&str]) -> Value {
    let endpoints: Vec<Value> = ips.iter().map(|ip| json!({"addresses": [ip], "nodeName": "node-2", "conditions": {"ready": true}})).collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("{service}-x1y2z"), "namespace": "shop", "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": endpoints,
    })
}

/// A MeshTCPRoute for the pods labelled `app`, from web to weighted backends.
fn route(name: &str, app: &str, backends: &[(&str, u32)]) -> Value {
    let refs: Vec<Value> = backends.iter().map(|(b, w)| json!({"kind": "MeshService", "name": b, "port": 80, "weight": w})).collect();
    json!({
        "apiVersion": "kuma.io/v1alpha1", "kind": "MeshTCPRoute",
        "metadata": {"name": name, "namespace": "shop", "labels": {"kuma.io/mesh": "default"}},
        "spec": {
            "targetRef": {"kind": "MeshSubset", "tags": {"app": app}},
            "to": [{"targetRef": {"kind": "MeshService", "name": "web"}, "rules": [{"default": {"backendRefs": refs}}]}],
        },
    })
}

/// The cluster every test starts from: web (127.96.0.10) and its two
/// versions, their endpoints on node-2 (127.40.1.1 is v1, 127.40.2.1 is
/// v2), no routes yet.
fn cluster() -> FakeApi {
    let api = FakeApi::start(&SERVED).expect("fake API server");
    api.add(NAMESPACES, json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop", "labels": {"kuma.io/mesh": "default"}}}));
    api.add(SERVICES, service("web", "127.96.0.10", json!({"app": "web"})));
    api.add(SERVICES, service("web-v1", "127.96.0.11", json!({"app": "web", "version": "v1"})));
    api.add(SERVICES, service("web-v2", "127.96.0.12", json!({"app": "web", "version": "v2"})));
    api.add(SLICES, slice("web", &["127.40.1.1", "127.40.2.1"]));
    api.add(SLICES, slice("web-v1", &["127.40.1.1"]));
    api.add(SLICES, slice("web-v2", &["127.40.2.1"]));
    api
}

/// One test's private world; field order is drop order (the pins, and so
/// the hooks, go before the cgroups).
struct Env {
    pins: PinDir,
    kubepods: Kubepods,
    cgroup: ChildCgroup,
    scratch: ScratchDir,
    api: FakeApi,
}

impl Env {
    fn new(name: &str, driver: Driver) -> Self {
        require_root();
        enter_private_netns().expect("network namespace");
        let cgroup = ChildCgroup::create_unique(&format!("rdr-test-{name}")).expect("cgroup");
        Self {
            pins: PinDir::new(&format!("rdr-test-{name}")).expect("pin dir"),
            kubepods: Kubepods::new(cgroup.path(), driver),
            cgroup,
            scratch: ScratchDir::new(&format!("rdr-test-{name}")).expect("scratch dir"),
            api: cluster(),
        }
    }

    fn start(&self, extra: &[&str]) -> Agent {
        let kubeconfig = self.api.kubeconfig(self.scratch.path()).expect("kubeconfig");
        Agent::start_kubernetes(&integration_tests::redirector_bin(), &kubeconfig, "node-1", self.cgroup.path(), self.pins.path(), extra).expect("agent start")
    }
}

fn web(count: u32, cgroup: &Path) -> integration_tests::ProbeResult {
    probe("127.96.0.10:80", count, false, Some(cgroup)).expect("probe")
}

/// Probes web from `cgroup` every 20 ms until `done` holds of a 20-connect
/// probe (at most `limit`); how long it took.
fn until(cgroup: &Path, limit: Duration, what: &str, done: impl Fn(&integration_tests::ProbeResult) -> bool) -> Duration {
    let started = Instant::now();
    loop {
        let seen = web(20, cgroup);
        if done(&seen) {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "{what}: not seen within {limit:?}; last probe {seen:?}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `count` connects to web from `cgroup` on a thread while `change` runs.
fn under_load(cgroup: &Path, count: u32, change: impl FnOnce()) -> integration_tests::ProbeResult {
    let cgroup = cgroup.to_path_buf();
    let load = thread::spawn(move || web(count, &cgroup));
    thread::sleep(Duration::from_millis(100));
    change();
    load.join().expect("load thread")
}

/// The whole story on kubelet's systemd layout: routes applied through the
/// API split a pod's connects by weight; two pods with different labels
/// get different routes; a pod of another node and the node's other
/// processes get the base route; a pod whose cgroup appears after its Pod
/// event is routed once it appears, and again once recreated; route and
/// EndpointSlice changes under load (after the watches broke) fail no
/// connect; a relist after 410 Gone converges; the API down
/// for 10 s leaves routing in force and `/readyz` says why; `status` names
/// the pods of each class.
#[test]
fn pods_are_routed_from_the_kubernetes_api() {
    let mut env = Env::new("k8s-systemd", Driver::Systemd);
    let _backends = [Backend::tcp("127.40.1.1:8080", "v1").unwrap(), Backend::tcp("127.40.2.1:8080", "v2").unwrap(), Backend::tcp("127.40.2.2:8080", "v2b").unwrap()];
    let a = env.kubepods.add(&uid(1), "Burstable");
    let b = env.kubepods.add(&uid(2), "Guaranteed");
    let other = env.kubepods.add(&uid(4), "Burstable");
    env.api.add(PODS, pod("client-a", "node-1", &uid(1), "Burstable", "127.30.0.1", "client-a"));
    env.api.add(PODS, pod("client-b", "node-1", &uid(2), "Guaranteed", "127.30.0.2", "client-b"));
    env.api.add(PODS, pod("client-late", "node-1", &uid(3), "Burstable", "127.30.0.3", "client-a"));
    // Labelled as client-a and with a cgroup here, but scheduled on node-2.
    env.api.add(PODS, pod("client-elsewhere", "node-2", &uid(4), "Burstable", "127.30.0.4", "client-a"));
    env.api.add(ROUTES, route("split-a", "client-a", &[("web-v1", 80), ("web-v2", 20)]));
    env.api.add(ROUTES, route("only-v2", "client-b", &[("web-v2", 1)]));
    let agent = env.start(&["--metrics", "127.0.0.1:19190"]);
    assert!(agent.log().contains("Systemd cgroup driver"), "{}", agent.log());
    assert!(agent.log().contains("meshhttproutes: the CRD is not installed"), "{}", agent.log());

    // Weighted split for pod A's container.
    let n = 2000;
    let split = web(n, &a);
    assert!(split.errors.is_empty(), "{split:?}");
    let (v1, v2) = (split.replies_from("v1"), split.replies_from("v2"));
    assert_eq!(v1 + v2, n, "{split:?}");
    let chi2 = chi_square(&[v1, v2], &[0.8, 0.2]);
    assert!(chi2 < CHI2_P001_DF1, "pod A: v1 {v1}, v2 {v2} for 80/20: chi2 {chi2:.2}");
    // Pod B's own route; the other node's pod and the test's cgroup: web itself.
    let only_b = web(200, &b);
    assert_eq!(only_b.replies_from("v2"), 200, "{only_b:?}");
    for (who, cgroup) in [("another node's pod", other.as_path()), ("a process outside every pod", env.cgroup.path())] {
        let base = web(400, cgroup);
        assert!(base.replies_from("v1") > 100 && base.replies_from("v2") > 100 && base.errors.is_empty(), "{who}: {base:?}");
    }

    // `status` names the pods of each class: A and B, not the other node's.
    let status = std::process::Command::new(integration_tests::redirector_bin()).arg("status").arg("--bpffs").arg(env.pins.path()).output().expect("status");
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(status.contains("pod shop/client-a") && status.contains("pod shop/client-b") && !status.contains("elsewhere"), "{status}");
    assert!(status.lines().filter(|l| l.starts_with("class ") && l.contains("1 workloads: pod shop/client-")).count() == 2, "{status}");

    // The late pod's cgroup appears now: routed without any API change.
    let late = env.kubepods.add(&uid(3), "Burstable");
    let took = until(&late, Duration::from_secs(5), "the late pod's route", |p| p.replies_from("v1") + p.replies_from("v2") == 20 && p.replies_from("v1") > 10);
    let shifted = web(400, &late);
    assert!(shifted.replies_from("v1") > 250, "the late pod gets split-a: {shifted:?}");
    eprintln!("late pod cgroup routed {took:?} after it was created");
    // Recreated (a new cgroup id): picked up again.
    drop(late);
    env.kubepods.pods.pop();
    let late = env.kubepods.add(&uid(3), "Burstable");
    let took = until(&late, Duration::from_secs(5), "the recreated pod cgroup's route", |p| p.replies_from("v1") > 10);
    eprintln!("recreated pod cgroup routed {took:?} after it was created");

    // The watches break (the client resumes from its resourceVersion).
    env.api.drop_watches();

    // A route change under load: pod A moves to v2 entirely, no connect fails.
    let loaded = under_load(&a, 3000, || env.api.add(ROUTES, route("split-a", "client-a", &[("web-v2", 1)])));
    assert!(loaded.errors.is_empty(), "route change under load: {loaded:?}");
    until(&a, Duration::from_secs(5), "pod A moved to v2", |p| p.replies_from("v2") == 20);
    // An EndpointSlice change under load: web-v2 gains 127.40.2.2, then loses 127.40.2.1.
    let loaded = under_load(&b, 3000, || {
        env.api.add(SLICES, slice("web-v2", &["127.40.2.1", "127.40.2.2"]));
        thread::sleep(Duration::from_millis(300));
        env.api.add(SLICES, slice("web-v2", &["127.40.2.2"]));
    });
    assert!(loaded.errors.is_empty(), "EndpointSlice change under load: {loaded:?}");
    assert!(loaded.replies_from("v2b") > 0, "{loaded:?}");
    until(&b, Duration::from_secs(5), "web-v2 only at 127.40.2.2", |p| p.replies_from("v2b") == 20);

    // A relist: the watches break, a route is deleted and the history
    // compacted meanwhile, so only a relist (after 410 Gone) shows it.
    env.api.set_down(true);
    env.api.delete(ROUTES, "shop", "only-v2");
    env.api.compact();
    env.api.set_down(false);
    let took = until(&b, Duration::from_secs(30), "pod B back on web after the relist", |p| p.replies_from("v1") > 0);
    eprintln!("relist converged in {took:?}");

    // The API down for 10 s: routing stays, /readyz says why, then recovers.
    env.api.set_down(true);
    let down = Instant::now();
    let mut said = String::new();
    while down.elapsed() < Duration::from_secs(10) {
        let during = web(50, &a);
        assert_eq!(during.replies_from("v2b"), 50, "pod A's route (web-v2, now at 127.40.2.2) in force with the API down: {during:?}");
        if let Ok((status, body)) = http_get("127.0.0.1:19190", "/readyz")
            && status.contains("503")
        {
            said = body;
        }
        thread::sleep(Duration::from_millis(250));
    }
    assert!(said.contains("Kubernetes API unreachable"), "/readyz during the outage said {said:?}");
    env.api.set_down(false);
    env.api.add(ROUTES, route("split-a", "client-a", &[("web-v1", 1)]));
    let took = until(&a, Duration::from_secs(45), "a change after the outage", |p| p.replies_from("v1") == 20);
    eprintln!("first change after the outage applied {took:?} after the API came back");
    let ready = Instant::now();
    loop {
        let (status, body) = http_get("127.0.0.1:19190", "/readyz").expect("readyz");
        if status.contains("200") {
            break;
        }
        assert!(ready.elapsed() < Duration::from_secs(10), "/readyz after the outage: {status} {body}");
        thread::sleep(Duration::from_millis(100));
    }
    agent.stop().expect("agent stop");
}

/// kubelet's cgroupfs layout is detected and a pod's connects follow its
/// route; a pod deleted through the API loses its route.
#[test]
fn the_cgroupfs_layout_is_detected_and_routed() {
    let mut env = Env::new("k8s-cgroupfs", Driver::Cgroupfs);
    let _backends = [Backend::tcp("127.40.1.1:8080", "v1").unwrap(), Backend::tcp("127.40.2.1:8080", "v2").unwrap()];
    let a = env.kubepods.add(&uid(1), "BestEffort");
    env.api.add(PODS, pod("client-a", "node-1", &uid(1), "BestEffort", "127.30.0.1", "client-a"));
    env.api.add(ROUTES, route("to-v1", "client-a", &[("web-v1", 1)]));
    let agent = env.start(&[]);
    assert!(agent.log().contains("Cgroupfs cgroup driver"), "{}", agent.log());
    let routed = web(200, &a);
    assert_eq!(routed.replies_from("v1"), 200, "{routed:?}");
    env.api.delete(PODS, "shop", "client-a");
    until(&a, Duration::from_secs(5), "the deleted pod's base route", |p| p.replies_from("v2") > 0);
    agent.stop().expect("agent stop");
}
