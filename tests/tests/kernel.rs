//! End-to-end tests against the running kernel (root only, never skipped).
//!
//! Each test runs in its own network namespace (so every address below is
//! private to it), its own child cgroup and its own bpffs pin directory. The
//! agent is the real `redirector run` binary; the client is `rdr-probe`,
//! moved into the test's cgroup before it connects.

use integration_tests::{
    AGENT_ATTACH_TYPES, Agent, Backend, ChildCgroup, PinDir, ScratchDir, add_loopback_v6,
    attached_programs, chi_square, enter_private_netns, probe, require_root,
};
use std::fmt::Write as _;

/// Chi-square critical values at p = 0.001: a correct implementation fails
/// one run in a thousand.
const CHI2_P001_DF1: f64 = 10.83;
const CHI2_P001_DF2: f64 = 13.82;

/// ECONNREFUSED: what connect() returns for a route without endpoints.
const ECONNREFUSED: i32 = 111;

/// One test's private world. Field order is drop order: the pins (and so
/// the attached hooks) go before the cgroup.
struct Env {
    pins: PinDir,
    cgroup: ChildCgroup,
    config: ScratchDir,
}

impl Env {
    fn new(name: &str) -> Self {
        require_root();
        enter_private_netns().expect("network namespace");
        Self {
            pins: PinDir::new(&format!("rdr-test-{name}")).expect("pin dir"),
            cgroup: ChildCgroup::create_unique(&format!("rdr-test-{name}")).expect("cgroup"),
            config: ScratchDir::new(&format!("rdr-test-{name}")).expect("scratch dir"),
        }
    }

    fn start(&self, yaml: &str) -> Agent {
        self.config.write("config.yaml", yaml).expect("writing config");
        Agent::start(&integration_tests::redirector_bin(), self.config.path(), self.cgroup.path(), self.pins.path()).expect("agent start")
    }

    fn probe(&self, target: &str, count: u32) -> integration_tests::ProbeResult {
        probe(target, count, false, Some(self.cgroup.path())).expect("probe")
    }
}

/// A MeshService `name` on `vip:80`, selecting inbounds tagged `app: <app>` (plus `extra` tags).
fn service(name: &str, vip: &str, app: &str, extra: &[(&str, &str)]) -> String {
    let mut tags = format!("      app: {app}\n");
    for (k, v) in extra {
        let _ = writeln!(tags, "      {k}: {v}");
    }
    format!(
        "---\ntype: MeshService\nname: {name}\nmesh: default\nspec:\n  selector:\n    dataplaneTags:\n{tags}  ports:\n    - port: 80\n      targetPort: 8080\n      name: main\nstatus:\n  vips:\n    - ip: {vip}\n"
    )
}

/// A Dataplane at `address` whose application listens on `port`.
fn dataplane(name: &str, address: &str, port: u16, app: &str, extra: &[(&str, &str)]) -> String {
    let mut tags = format!("        app: {app}\n");
    for (k, v) in extra {
        let _ = writeln!(tags, "        {k}: {v}");
    }
    format!(
        "---\ntype: Dataplane\nname: {name}\nmesh: default\nnetworking:\n  address: {address}\n  inbound:\n    - port: 8080\n      servicePort: {port}\n      tags:\n{tags}"
    )
}

/// A Mesh-wide MeshTCPRoute from `to` to weighted MeshService backends.
fn route(name: &str, to: &str, backends: &[(&str, u32)]) -> String {
    let mut refs = String::new();
    for (backend, weight) in backends {
        let _ = write!(
            refs,
            "              - kind: MeshService\n                name: {backend}\n                port: 80\n                weight: {weight}\n"
        );
    }
    format!(
        "---\ntype: MeshTCPRoute\nname: {name}\nmesh: default\nspec:\n  targetRef:\n    kind: Mesh\n  to:\n    - targetRef:\n        kind: MeshService\n        name: {to}\n      rules:\n        - default:\n            backendRefs:\n{refs}"
    )
}

/// backend (127.10.0.1), backend-v1 (127.10.0.2, two instances) and
/// backend-v2 (127.10.0.3), without routes.
fn canary_services() -> String {
    [
        service("backend", "127.10.0.1", "backend", &[]),
        service("backend-v1", "127.10.0.2", "backend", &[("version", "v1")]),
        service("backend-v2", "127.10.0.3", "backend", &[("version", "v2")]),
        dataplane("v1a", "127.10.1.1", 18081, "backend", &[("version", "v1")]),
        dataplane("v1b", "127.10.1.2", 18081, "backend", &[("version", "v1")]),
        dataplane("v2a", "127.10.2.1", 18082, "backend", &[("version", "v2")]),
    ]
    .concat()
}

/// backend split 90/10 between backend-v1 and backend-v2.
fn canary_config() -> String {
    canary_services() + &route("canary", "backend", &[("backend-v1", 90), ("backend-v2", 10)])
}

fn canary_backends() -> Vec<Backend> {
    vec![
        Backend::tcp("127.10.1.1:18081", "v1a").unwrap(),
        Backend::tcp("127.10.1.2:18081", "v1b").unwrap(),
        Backend::tcp("127.10.2.1:18082", "v2a").unwrap(),
    ]
}

#[test]
fn weighted_split_follows_weights_chi_square() {
    let env = Env::new("split");
    let _backends = canary_backends();
    let agent = env.start(&canary_config());
    let n = 3000;
    let result = env.probe("127.10.0.1:80", n);
    assert!(result.errors.is_empty(), "failed connects: {result:?}");
    assert_eq!(result.answered(), n);
    let observed = [result.replies_from("v1a"), result.replies_from("v1b"), result.replies_from("v2a")];
    let chi2 = chi_square(&observed, &[0.45, 0.45, 0.10]);
    eprintln!("split over {n} connects: v1a={} v1b={} v2a={} chi2={chi2:.2}", observed[0], observed[1], observed[2]);
    assert!(chi2 < CHI2_P001_DF2, "split {observed:?} is not 45/45/10 (chi2 {chi2:.2})");
    agent.stop().unwrap();
}

#[test]
fn zero_weight_backend_is_never_chosen() {
    let env = Env::new("zero-weight");
    let _backends = canary_backends();
    let config = canary_config().replace("weight: 90", "weight: 0").replace("weight: 10", "weight: 3");
    let agent = env.start(&config);
    let result = env.probe("127.10.0.1:80", 500);
    assert!(result.errors.is_empty(), "{result:?}");
    assert_eq!(result.replies_from("v1a") + result.replies_from("v1b"), 0, "{result:?}");
    assert_eq!(result.replies_from("v2a"), 500);
    agent.stop().unwrap();
}

/// `backend` (127.10.0.1:80, no endpoints) routed wholly to `other`, whose
/// one endpoint is 127.10.3.1:19000.
fn backend_to_other() -> String {
    [
        service("backend", "127.10.0.1", "backend", &[]),
        service("other", "127.10.0.9", "other", &[]),
        dataplane("other-1", "127.10.3.1", 19000, "other", &[]),
        route("to-other", "backend", &[("other", 1)]),
    ]
    .concat()
}

#[test]
fn single_backend_redirection_and_getpeername_shows_service() {
    let env = Env::new("redirect");
    let _other = Backend::tcp("127.10.3.1:19000", "other").unwrap();
    let agent = env.start(&backend_to_other());
    let result = env.probe("127.10.0.1:80", 200);
    assert_eq!(result.replies_from("other"), 200, "{result:?}");
    let peers: Vec<String> = result.peers.keys().map(|p| p.to_string()).collect();
    assert_eq!(peers, ["127.10.0.1:80"], "getpeername must show the dialled service");
    // Each redirected socket recorded its own slot (its cookie's): none
    // shared, none lost.
    assert_eq!(integration_tests::origins_recorded(env.pins.path()).unwrap(), 200, "ORIGINS records");
    // The backend service's own address keeps Kuma's default route to itself.
    let direct = env.probe("127.10.0.9:80", 20);
    assert_eq!(direct.replies_from("other"), 20, "{direct:?}");
    agent.stop().unwrap();
}

#[test]
fn getpeername_of_a_socket_from_before_an_agent_restart_shows_the_service_and_its_record_is_its_own() {
    use std::io::{BufRead as _, Write as _};
    let env = Env::new("origins-restart");
    let _other = Backend::tcp("127.10.3.1:19000", "other").unwrap();
    let agent = env.start(&backend_to_other());
    let mut held = std::process::Command::new(integration_tests::probe_bin())
        .args(["--connect", "127.10.0.1:80", "--hold", "--cgroup"])
        .arg(env.cgroup.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(held.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "connected");
    assert_eq!(integration_tests::origins_recorded(env.pins.path()).unwrap(), 1);
    // A new generation of the hooks replaces the old one; ORIGINS is kept.
    agent.stop().unwrap();
    let agent = env.start(&backend_to_other());
    held.stdin.take().unwrap().write_all(b"\n").unwrap();
    line.clear();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "peer 127.10.0.1:80", "getpeername after the restart");
    assert!(held.wait().unwrap().success());
    // Its record outlives it (there is no delete at close) but is its own:
    // sockets connected since, redirected or not, see their own peers.
    let direct = env.probe("127.10.3.1:19000", 20);
    let peers: Vec<String> = direct.peers.keys().map(|p| p.to_string()).collect();
    assert_eq!(peers, ["127.10.3.1:19000"], "a direct connect's getpeername");
    let redirected = env.probe("127.10.0.1:80", 20);
    let peers: Vec<String> = redirected.peers.keys().map(|p| p.to_string()).collect();
    assert_eq!(peers, ["127.10.0.1:80"], "getpeername of sockets redirected after the restart");
    assert_eq!(integration_tests::origins_recorded(env.pins.path()).unwrap(), 21);
    agent.stop().unwrap();
}

#[test]
fn ipv6_services_are_redirected() {
    let env = Env::new("ipv6");
    add_loopback_v6("fd00:10::11").unwrap();
    let _v6 = Backend::tcp("[fd00:10::11]:18081", "b6").unwrap();
    let _v4 = Backend::tcp("127.10.1.1:18081", "b4").unwrap();
    let config = [
        service("svc6", "fd00:10::1", "six", &[]),
        dataplane("six-1", "fd00:10::11", 18081, "six", &[]),
        // An IPv6 address whose endpoint is IPv4: reached as ::ffff:127.10.1.1.
        service("svc46", "fd00:10::2", "four", &[]),
        dataplane("four-1", "127.10.1.1", 18081, "four", &[]),
    ]
    .concat();
    let agent = env.start(&config);
    let six = env.probe("[fd00:10::1]:80", 100);
    assert_eq!(six.replies_from("b6"), 100, "{six:?}");
    assert_eq!(six.peers.keys().map(|p| p.to_string()).collect::<Vec<_>>(), ["[fd00:10::1]:80"]);
    let mixed = env.probe("[fd00:10::2]:80", 100);
    assert_eq!(mixed.replies_from("b4"), 100, "{mixed:?}");
    assert_eq!(mixed.peers.keys().map(|p| p.to_string()).collect::<Vec<_>>(), ["[fd00:10::2]:80"]);
    agent.stop().unwrap();
}

#[test]
fn v4_mapped_address_on_dual_stack_socket_is_redirected() {
    let env = Env::new("mapped");
    let _backends = canary_backends();
    let agent = env.start(&canary_config());
    let result = env.probe("[::ffff:127.10.0.2]:80", 200);
    assert!(result.errors.is_empty(), "{result:?}");
    assert_eq!(result.replies_from("v1a") + result.replies_from("v1b"), 200, "{result:?}");
    let peers: Vec<String> = result.peers.keys().map(|p| p.to_string()).collect();
    assert_eq!(peers, ["[::ffff:127.10.0.2]:80"]);
    agent.stop().unwrap();
}

#[test]
fn only_processes_in_the_cgroup_and_its_descendants_are_redirected() {
    let env = Env::new("scope");
    let _backends = canary_backends();
    // Something real at the service address, to see where unredirected connects go.
    let _vip = Backend::tcp("127.10.0.2:80", "vip").unwrap();
    let agent = env.start(&canary_config());
    let outside = probe("127.10.0.2:80", 100, false, None).unwrap();
    assert_eq!(outside.replies_from("vip"), 100, "outside the cgroup: {outside:?}");
    let inside = env.probe("127.10.0.2:80", 100);
    assert_eq!(inside.replies_from("vip"), 0, "inside the cgroup: {inside:?}");
    assert_eq!(inside.answered(), 100);
    let nested = ChildCgroup::create(env.cgroup.path(), "nested").unwrap();
    let below = probe("127.10.0.2:80", 100, false, Some(nested.path())).unwrap();
    assert_eq!(below.replies_from("v1a") + below.replies_from("v1b"), 100, "nested cgroup: {below:?}");
    agent.stop().unwrap();
}

#[test]
fn udp_is_untouched() {
    let env = Env::new("udp");
    let _vip = Backend::udp("127.10.0.2:80", "vip-udp").unwrap();
    let _b1 = Backend::udp("127.10.1.1:18081", "backend-udp").unwrap();
    let _b2 = Backend::udp("127.10.1.2:18081", "backend-udp").unwrap();
    let agent = env.start(&canary_config());
    let result = probe("127.10.0.2:80", 50, true, Some(env.cgroup.path())).unwrap();
    assert_eq!(result.replies_from("vip-udp"), 50, "{result:?}");
    agent.stop().unwrap();
}

#[test]
fn routes_without_endpoints_refuse_with_econnrefused() {
    let env = Env::new("no-endpoints");
    let _v1 = Backend::tcp("127.10.1.1:18081", "v1a").unwrap();
    let config = [
        service("backend", "127.10.0.1", "backend", &[]),
        service("backend-v1", "127.10.0.2", "backend", &[("version", "v1")]),
        service("empty", "127.10.0.5", "nobody", &[]),
        dataplane("v1a", "127.10.1.1", 18081, "backend", &[("version", "v1")]),
        route("to-empty", "backend-v1", &[("empty", 1)]),
        route("half-empty", "backend", &[("backend-v1", 1), ("empty", 1)]),
    ]
    .concat();
    let agent = env.start(&config);
    let all = env.probe("127.10.0.2:80", 100);
    assert_eq!(all.errors.get(&ECONNREFUSED), Some(&100), "{all:?}");
    // As with Envoy's weighted clusters, a backend without endpoints keeps its
    // share and that share fails.
    let n = 2000;
    let half = env.probe("127.10.0.1:80", n);
    let refused = half.errors.get(&ECONNREFUSED).copied().unwrap_or(0);
    assert_eq!(half.replies_from("v1a") + refused, n, "{half:?}");
    let chi2 = chi_square(&[half.replies_from("v1a"), refused], &[0.5, 0.5]);
    assert!(chi2 < CHI2_P001_DF1, "{half:?} is not 50/50 (chi2 {chi2:.2})");
    agent.stop().unwrap();
}

#[test]
fn agent_exit_leaves_the_route_in_force_and_uninstall_removes_everything() {
    let env = Env::new("lifecycle");
    let _backends = canary_backends();
    let _vip = Backend::tcp("127.10.0.2:80", "vip").unwrap();
    let agent = env.start(&canary_config());
    for attach_type in AGENT_ATTACH_TYPES {
        assert_eq!(attached_programs(env.cgroup.path(), attach_type).unwrap(), 1, "attach type {attach_type}");
    }
    // A close costs nothing: no release hook.
    assert_eq!(attached_programs(env.cgroup.path(), integration_tests::SOCK_RELEASE_ATTACH_TYPE).unwrap(), 0);
    agent.stop().unwrap();
    for attach_type in AGENT_ATTACH_TYPES {
        assert_eq!(attached_programs(env.cgroup.path(), attach_type).unwrap(), 1, "after exit, attach type {attach_type}");
    }
    let down = env.probe("127.10.0.2:80", 50);
    assert_eq!(down.replies_from("v1a") + down.replies_from("v1b"), 50, "route not in force while the agent is down: {down:?}");

    let out = std::process::Command::new(integration_tests::redirector_bin())
        .args(["uninstall", "--bpffs"])
        .arg(env.pins.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("detached 4 links"), "{}", String::from_utf8_lossy(&out.stdout));
    for attach_type in AGENT_ATTACH_TYPES {
        assert_eq!(attached_programs(env.cgroup.path(), attach_type).unwrap(), 0, "after uninstall, attach type {attach_type}");
    }
    assert_eq!(env.pins.leftovers(), Vec::<std::path::PathBuf>::new());
    let after = env.probe("127.10.0.2:80", 20);
    assert_eq!(after.replies_from("vip"), 20, "still redirected after uninstall: {after:?}");
}

/// A Dataplane bound to the cgroup `cgroup` (relative to the attach point),
/// labelled `app: <app>`, with one inbound.
fn workload(name: &str, cgroup: &str, app: &str) -> String {
    format!(
        "---\ntype: Dataplane\nname: {name}\nmesh: default\nlabels:\n  app: {app}\n  redirector.io/cgroup: {cgroup}\nnetworking:\n  address: 127.10.9.9\n  inbound:\n    - port: 9999\n      tags:\n        kuma.io/service: {app}\n"
    )
}

/// A MeshTCPRoute for Dataplanes labelled `app: <app>`, sending `to` to `backend`.
fn workload_route(name: &str, app: &str, to: &str, backend: &str) -> String {
    format!(
        "---\ntype: MeshTCPRoute\nname: {name}\nmesh: default\nspec:\n  targetRef:\n    kind: Dataplane\n    labels:\n      app: {app}\n  to:\n    - targetRef:\n        kind: MeshService\n        name: {to}\n      rules:\n        - default:\n            backendRefs:\n              - kind: MeshService\n                name: {backend}\n                port: 80\n"
    )
}

#[test]
fn sibling_workloads_get_the_routes_their_dataplane_labels_select() {
    let env = Env::new("workloads");
    let _backends = canary_backends();
    let a = ChildCgroup::create(env.cgroup.path(), "wl-a").unwrap();
    let b = ChildCgroup::create(env.cgroup.path(), "wl-b").unwrap();
    let a_nested = ChildCgroup::create(a.path(), "worker").unwrap();
    let config = [
        canary_config(),
        workload("client-a", "wl-a", "client-a"),
        workload("client-b", "wl-b", "client-b"),
        workload_route("a-to-v1", "client-a", "backend", "backend-v1"),
        workload_route("b-to-v2", "client-b", "backend", "backend-v2"),
    ]
    .concat();
    let agent = env.start(&config);
    let from_a = probe("127.10.0.1:80", 200, false, Some(a.path())).unwrap();
    assert_eq!(from_a.replies_from("v1a") + from_a.replies_from("v1b"), 200, "workload a: {from_a:?}");
    let from_b = probe("127.10.0.1:80", 200, false, Some(b.path())).unwrap();
    assert_eq!(from_b.replies_from("v2a"), 200, "workload b: {from_b:?}");
    // A process in a sub-cgroup of a workload belongs to that workload.
    let from_nested = probe("127.10.0.1:80", 200, false, Some(a_nested.path())).unwrap();
    assert_eq!(from_nested.replies_from("v1a") + from_nested.replies_from("v1b"), 200, "below a: {from_nested:?}");
    // Processes in no workload cgroup keep the mesh-wide 90/10 canary.
    let base = env.probe("127.10.0.1:80", 2000);
    let v1 = base.replies_from("v1a") + base.replies_from("v1b");
    let chi2 = chi_square(&[v1, base.replies_from("v2a")], &[0.9, 0.1]);
    assert!(chi2 < CHI2_P001_DF1, "base class {base:?} is not 90/10 (chi2 {chi2:.2})");
    // Destinations a workload's policies do not touch fall back to the base routes.
    let other = probe("127.10.0.3:80", 50, false, Some(a.path())).unwrap();
    assert_eq!(other.replies_from("v2a"), 50, "{other:?}");
    agent.stop().unwrap();
}

/// Probes until every answer comes from `ids` (or 10 s pass); returns the last result.
fn eventually_all_from(env: &Env, target: &str, ids: &[&str]) -> integration_tests::ProbeResult {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let result = env.probe(target, 20);
        let from_ids: u32 = ids.iter().map(|id| result.replies_from(id)).sum();
        if from_ids == 20 || std::time::Instant::now() > deadline {
            return result;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn config_changes_apply_live_and_a_bad_edit_under_load_keeps_the_last_good_config() {
    let env = Env::new("reload");
    let _backends = canary_backends();
    let services = canary_services();
    let to_v1 = services.clone() + &route("switch", "backend", &[("backend-v1", 1)]);
    let to_v2 = services.clone() + &route("switch", "backend", &[("backend-v2", 1)]);
    env.config.write("config.yaml", &to_v1).unwrap();
    let metrics = "127.0.0.1:19090";
    let agent = integration_tests::Agent::start_with(
        &integration_tests::redirector_bin(),
        env.config.path(),
        env.cgroup.path(),
        env.pins.path(),
        &["--metrics", metrics],
    )
    .expect("agent start");
    assert_eq!(integration_tests::http_get(metrics, "/readyz").unwrap().0, "HTTP/1.1 200 OK");
    assert_eq!(env.probe("127.10.0.1:80", 50).replies_from("v2a"), 0);

    env.config.write("config.yaml", &to_v2).unwrap();
    let after = eventually_all_from(&env, "127.10.0.1:80", &["v2a"]);
    assert_eq!(after.replies_from("v2a"), 20, "the edit was not applied: {after:?}\n{}", agent.log());

    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = load_until(&env, "127.10.0.1:80", 4000, done.clone());
    env.config.write("config.yaml", &to_v1.replace("weight: 1", "weight: -1")).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let kept = load.join().unwrap();
    assert!(kept.errors.is_empty(), "failed connects around a bad edit: {kept:?}");
    assert_eq!(kept.replies_from("v2a"), kept.answered(), "a rejected edit changed the routes: {kept:?}");
    let log = agent.log();
    assert!(log.contains("configuration rejected"), "{log}");
    assert!(log.contains("weight: invalid value: integer `-1`"), "{log}");
    let (status, body) = integration_tests::http_get(metrics, "/metrics").unwrap();
    assert_eq!(status, "HTTP/1.1 200 OK");
    // Every reload of the bad files counts: one per file event the agent
    // did not coalesce (usually one; a late second event reads them again).
    let failed = metric(&body, "redirector_config_reloads_total{result=\"failed\"}");
    assert!(failed.is_some_and(|n| n >= 1), "no failed reload counted in\n{body}");
    assert!(body.contains("redirector_config_reloads_total{result=\"ok\"} 1"), "{body}");
    let routes = metric(&body, "redirector_map_entries{map=\"routes\"}");
    assert!(routes.is_some_and(|n| n > 0), "no route count in\n{body}");
    let served: u64 = body
        .lines()
        .filter(|l| l.starts_with("redirector_connects_redirected_total{") && l.contains("destination=\"127.10.0.1:80\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert!(served >= u64::from(kept.answered()), "kernel counters {served} < {} connects seen\n{body}", kept.answered());

    env.config.write("config.yaml", &to_v1).unwrap();
    let back = eventually_all_from(&env, "127.10.0.1:80", &["v1a", "v1b"]);
    assert_eq!(back.replies_from("v1a") + back.replies_from("v1b"), 20, "{back:?}\n{}", agent.log());
    agent.stop().unwrap();
}

/// The value of the metric series `series` (name and labels) in a scrape.
fn metric(body: &str, series: &str) -> Option<u64> {
    body.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Runs probes of `chunk` connects from the test's cgroup in a thread until
/// `done` is set (and at least `minimum` connects were made); returns the
/// summed result.
fn load_until(
    env: &Env,
    target: &'static str,
    minimum: u32,
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<integration_tests::ProbeResult> {
    load_from(env.cgroup.path().to_path_buf(), target, minimum, done)
}

/// As [`load_until`], from the cgroup `cgroup`.
fn load_from(
    cgroup: std::path::PathBuf,
    target: &'static str,
    minimum: u32,
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<integration_tests::ProbeResult> {
    std::thread::spawn(move || {
        let mut total = integration_tests::ProbeResult::default();
        let mut made = 0;
        while made < minimum || !done.load(std::sync::atomic::Ordering::Relaxed) {
            let r = probe(target, 2000, false, Some(&cgroup)).expect("probe");
            made += 2000;
            for (k, v) in r.replies {
                *total.replies.entry(k).or_default() += v;
            }
            for (k, v) in r.errors {
                *total.errors.entry(k).or_default() += v;
            }
            assert!(made <= 1_000_000, "load loop bound");
        }
        total
    })
}

#[test]
fn route_swaps_under_load_never_fail_a_connect() {
    let env = Env::new("churn");
    let _backends = canary_backends();
    let _vip = Backend::tcp("127.10.0.1:80", "vip").unwrap();
    let services = canary_services();
    let configs = [
        services.clone() + &route("swap", "backend", &[("backend-v1", 1)]),
        services.clone() + &route("swap", "backend", &[("backend-v2", 1)]),
    ];
    let agent = env.start(&configs[0]);
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = load_until(&env, "127.10.0.1:80", 20_000, done.clone());

    let swaps = 500;
    let mut latencies = Vec::with_capacity(swaps);
    for i in 1..=swaps {
        let before = agent.log_times("applied generation").len();
        let written = std::time::Instant::now();
        env.config.write("config.yaml", &configs[i % 2]).unwrap();
        let deadline = written + std::time::Duration::from_secs(5);
        let applied = loop {
            let times = agent.log_times("applied generation");
            if times.len() > before {
                break times[before];
            }
            assert!(std::time::Instant::now() < deadline, "swap {i} not applied:\n{}", agent.log());
            std::thread::sleep(std::time::Duration::from_micros(200));
        };
        latencies.push(applied.duration_since(written));
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let total = load.join().unwrap();
    latencies.sort();
    let p = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    let mut work: Vec<u64> = agent
        .log()
        .lines()
        .filter_map(|l| l.split("micros=").nth(1)?.split_whitespace().next()?.parse().ok())
        .collect();
    work.sort_unstable();
    if !work.is_empty() {
        eprintln!(
            "churn: agent rebuild+apply time p50 {} us, p99 {} us",
            work[work.len() / 2],
            work[(work.len() * 99 / 100).min(work.len() - 1)]
        );
    }
    eprintln!(
        "churn: {swaps} swaps, {} connects; write-to-applied p50 {:?} p99 {:?} max {:?} (includes the 5 ms settle)",
        total.answered() + total.errors.values().sum::<u32>(),
        p(0.5),
        p(0.99),
        latencies.last().unwrap()
    );
    assert!(total.errors.is_empty(), "failed connects during churn: {total:?}");
    assert!(total.answered() >= 20_000, "{total:?}");
    let inside = total.replies_from("v1a") + total.replies_from("v1b") + total.replies_from("v2a");
    assert_eq!(inside, total.answered(), "connects outside both backend sets: {total:?}");
    assert!(total.replies_from("v2a") > 0 && total.replies_from("v1a") + total.replies_from("v1b") > 0, "{total:?}");
    agent.stop().unwrap();
}

fn restart_under_load(name: &str, kill: bool) {
    let env = Env::new(name);
    let _backends = canary_backends();
    let _vip = Backend::tcp("127.10.0.1:80", "vip").unwrap();
    let agent = env.start(&canary_config());
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = load_until(&env, "127.10.0.1:80", 20_000, done.clone());
    std::thread::sleep(std::time::Duration::from_millis(300));
    if kill {
        agent.kill().unwrap();
    } else {
        agent.stop().unwrap();
    }
    // Down for a while: the pinned datapath keeps serving.
    std::thread::sleep(std::time::Duration::from_millis(500));
    for attach_type in AGENT_ATTACH_TYPES {
        assert_eq!(attached_programs(env.cgroup.path(), attach_type).unwrap(), 1);
    }
    let agent = Agent::start(&integration_tests::redirector_bin(), env.config.path(), env.cgroup.path(), env.pins.path()).expect("restart");
    // The old generation is retired once the new one is attached.
    for attach_type in AGENT_ATTACH_TYPES {
        assert_eq!(attached_programs(env.cgroup.path(), attach_type).unwrap(), 1, "after restart");
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let total = load.join().unwrap();
    eprintln!("{name}: {} connects across the restart, {:?} failed", total.answered(), total.errors);
    assert!(total.errors.is_empty(), "failed connects across the restart: {total:?}");
    assert_eq!(total.replies_from("vip"), 0, "connects escaped the route: {total:?}");
    assert!(total.answered() >= 20_000);
    let v1 = total.replies_from("v1a") + total.replies_from("v1b");
    let chi2 = chi_square(&[v1, total.replies_from("v2a")], &[0.9, 0.1]);
    assert!(chi2 < CHI2_P001_DF1, "split across the restart is not 90/10: {total:?} (chi2 {chi2:.2})");
    agent.stop().unwrap();
}

#[test]
fn sigterm_and_restart_under_load_never_fail_a_connect() {
    restart_under_load("restart-term", false);
}

#[test]
fn kill_9_and_restart_under_load_never_fail_a_connect() {
    restart_under_load("restart-kill", true);
}

#[test]
fn a_pinned_datapath_of_another_layout_is_replaced_not_reused() {
    let env = Env::new("layout");
    let _backends = canary_backends();
    let agent = env.start(&canary_config());
    agent.stop().unwrap();
    // Pretend the pins are from an older, incompatible layout.
    let current = redirector::datapath::layout_dir(env.pins.path());
    let older = env.pins.path().join("layout-v0");
    std::fs::rename(&current, &older).unwrap();
    let agent = env.start(&canary_config());
    assert!(!older.exists(), "the old layout is still pinned");
    for attach_type in AGENT_ATTACH_TYPES {
        assert_eq!(attached_programs(env.cgroup.path(), attach_type).unwrap(), 1, "attach type {attach_type}");
    }
    let result = env.probe("127.10.0.1:80", 200);
    assert_eq!(result.answered(), 200, "{result:?}");

    let status = std::process::Command::new(integration_tests::redirector_bin())
        .args(["status", "--output", "json", "--bpffs"])
        .arg(env.pins.path())
        .output()
        .unwrap();
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    let text = String::from_utf8_lossy(&status.stdout);
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let route = json["routes"].as_array().unwrap().iter().find(|r| r["destination"] == "127.10.0.1:80").expect("route in status");
    let connects: u64 = route["backends"].as_array().unwrap().iter().map(|b| b["connects"].as_u64().unwrap()).sum();
    assert_eq!(connects, 200, "{text}");
    let shares: Vec<f64> = route["backends"].as_array().unwrap().iter().map(|b| b["probability"].as_f64().unwrap()).collect();
    assert_eq!(shares, [0.9, 0.1], "{text}");
    agent.stop().unwrap();
}

// --- one owner per datapath -------------------------------------------------

/// Runs `redirector <args>` to completion (at most 60 s): (exit code, stderr + stdout).
fn redirector(args: &[&std::ffi::OsStr]) -> (i32, String) {
    let mut child = std::process::Command::new(integration_tests::redirector_bin())
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("running redirector");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("redirector {args:?} still running after 60 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout))
}

/// `redirector run` with the env's config on `cgroup` and `pins`, expected to exit.
fn run_expecting_exit(env: &Env, cgroup: &std::path::Path, pins: &std::path::Path, extra: &[&str]) -> (i32, String) {
    let mut args: Vec<&std::ffi::OsStr> = vec!["run".as_ref(), "--config".as_ref(), env.config.path().as_os_str()];
    args.extend(["--cgroup".as_ref(), cgroup.as_os_str(), "--bpffs".as_ref(), pins.as_os_str()]);
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    redirector(&args)
}

fn connect4_programs(cgroup: &std::path::Path) -> u32 {
    attached_programs(cgroup, AGENT_ATTACH_TYPES[0]).unwrap()
}

#[test]
fn a_second_agent_on_the_same_pins_is_refused_and_uninstall_waits_for_the_first() {
    let env = Env::new("owner");
    let _backends = canary_backends();
    let agent = env.start(&canary_config());
    let (code, out) = run_expecting_exit(&env, env.cgroup.path(), env.pins.path(), &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&format!("another redirector agent (pid {}) owns this pin directory", agent.pid())), "{out}");
    assert_eq!(connect4_programs(env.cgroup.path()), 1, "the refused agent attached a hook");

    let (code, out) = redirector(&["uninstall".as_ref(), "--bpffs".as_ref(), env.pins.path().as_os_str()]);
    assert_eq!(code, 1, "uninstall ran under a live agent: {out}");
    assert!(out.contains(&format!("pid {}", agent.pid())), "{out}");
    let result = env.probe("127.10.0.1:80", 100);
    assert_eq!(result.replies_from("v1a") + result.replies_from("v1b") + result.replies_from("v2a"), 100, "{result:?}");

    agent.stop().unwrap();
    let (code, out) = redirector(&["uninstall".as_ref(), "--bpffs".as_ref(), env.pins.path().as_os_str()]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("detached 4 links"), "{out}");
    for attach_type in AGENT_ATTACH_TYPES {
        assert_eq!(attached_programs(env.cgroup.path(), attach_type).unwrap(), 0);
    }
}

#[test]
fn an_agent_is_refused_where_another_datapath_already_hooks_the_cgroup_or_an_ancestor() {
    let env = Env::new("foreign");
    let _backends = canary_backends();
    let agent = env.start(&canary_config());
    let other = PinDir::new("rdr-test-foreign-other").unwrap();
    let child = ChildCgroup::create(env.cgroup.path(), "child").unwrap();
    for cgroup in [env.cgroup.path(), child.path()] {
        let (code, out) = run_expecting_exit(&env, cgroup, other.path(), &[]);
        assert_eq!(code, 1, "{}: {out}", cgroup.display());
        assert!(out.contains("another redirector datapath is attached here or above"), "{out}");
        assert!(out.contains(&format!("on {}", env.cgroup.path().display())), "{out}");
        assert_eq!(connect4_programs(cgroup), u32::from(cgroup == env.cgroup.path()), "{}", cgroup.display());
    }
    let second = Agent::start_with(&integration_tests::redirector_bin(), env.config.path(), child.path(), other.path(), &["--allow-other-datapath"]).expect("override");
    assert!(second.log().contains("--allow-other-datapath"), "{}", second.log());
    second.stop().unwrap();
    drop(other);
    drop(child);
    agent.stop().unwrap();
}

#[test]
fn a_removed_cgroup_is_reported_and_hooked_again_when_it_returns() {
    let env = Env::new("vanish");
    let _backends = canary_backends();
    let to_v2 = canary_services() + &route("switch", "backend", &[("backend-v2", 1)]);
    env.config.write("config.yaml", &to_v2).unwrap();
    let metrics = "127.0.0.1:19091";
    let agent = Agent::start_with(&integration_tests::redirector_bin(), env.config.path(), env.cgroup.path(), env.pins.path(), &["--metrics", metrics]).expect("agent start");
    assert_eq!(env.probe("127.10.0.1:80", 20).replies_from("v2a"), 20);

    std::fs::remove_dir(env.cgroup.path()).expect("removing the attached cgroup");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let (status, body) = loop {
        let (status, body) = integration_tests::http_get(metrics, "/readyz").unwrap();
        if status.contains("503") || std::time::Instant::now() > deadline {
            break (status, body);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(status, "HTTP/1.1 503 Service Unavailable", "{body}\n{}", agent.log());
    assert!(body.contains("was removed"), "{body}");
    assert!(agent.log().contains("was removed: its hooks went with it"), "{}", agent.log());

    std::fs::create_dir(env.cgroup.path()).expect("creating the cgroup again");
    let back = eventually_all_from(&env, "127.10.0.1:80", &["v2a"]);
    assert_eq!(back.replies_from("v2a"), 20, "not redirected after the cgroup came back: {back:?}\n{}", agent.log());
    // Readiness follows the attach (the probes may see the hooks first).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while integration_tests::http_get(metrics, "/readyz").unwrap().0 != "HTTP/1.1 200 OK" {
        assert!(std::time::Instant::now() < deadline, "not ready after the cgroup came back:\n{}", agent.log());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(connect4_programs(env.cgroup.path()), 1);
    agent.stop().unwrap();
}

#[test]
fn sighup_reloads_a_change_the_watcher_cannot_see() {
    let env = Env::new("sighup");
    let _backends = canary_backends();
    // The agent watches the directory of the config path, a symlink here;
    // edits to the file it points to happen elsewhere, unseen.
    let real = ScratchDir::new("rdr-test-sighup-real").unwrap();
    let to_v1 = canary_services() + &route("switch", "backend", &[("backend-v1", 1)]);
    let target = real.write("real.yaml", &to_v1).unwrap();
    let link = env.config.path().join("config.yaml");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let agent = Agent::start(&integration_tests::redirector_bin(), &link, env.cgroup.path(), env.pins.path()).expect("agent start");
    assert_eq!(env.probe("127.10.0.1:80", 20).replies_from("v2a"), 0);

    real.write("real.yaml", &(canary_services() + &route("switch", "backend", &[("backend-v2", 1)]))).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(env.probe("127.10.0.1:80", 20).replies_from("v2a"), 0, "the watcher saw the edit; the test proves nothing");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(agent.pid() as i32), nix::sys::signal::Signal::SIGHUP).unwrap();
    let after = eventually_all_from(&env, "127.10.0.1:80", &["v2a"]);
    assert_eq!(after.replies_from("v2a"), 20, "SIGHUP did not reload: {after:?}\n{}", agent.log());
    assert!(agent.log().contains("SIGHUP: reloading"), "{}", agent.log());
    agent.stop().unwrap();
}

/// A private bpffs instance mounted by the test; unmounted on drop.
struct BpffsMount(std::path::PathBuf);

impl Drop for BpffsMount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
fn the_root_of_a_bpffs_is_a_valid_pin_directory() {
    let env = Env::new("bpffs-root");
    let _backends = canary_backends();
    let root = std::env::temp_dir().join(format!("rdr-private-bpffs-{}", std::process::id()));
    std::fs::create_dir_all(&root).unwrap();
    let mount = BpffsMount(root);
    nix::mount::mount(Some("bpf"), &mount.0, Some("bpf"), nix::mount::MsFlags::empty(), None::<&str>).expect("mounting a private bpffs");
    env.config.write("config.yaml", &canary_config()).unwrap();
    let agent = Agent::start(&integration_tests::redirector_bin(), env.config.path(), env.cgroup.path(), &mount.0).expect("agent with --bpffs at a bpffs root");
    let result = env.probe("127.10.0.1:80", 50);
    assert_eq!(result.answered(), 50, "{result:?}");
    agent.stop().unwrap();
    let (code, out) = redirector(&["uninstall".as_ref(), "--bpffs".as_ref(), mount.0.as_os_str()]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(connect4_programs(env.cgroup.path()), 0);
}

#[test]
fn uninstall_detaches_hooks_whose_pins_are_gone() {
    let env = Env::new("unpinned");
    let _backends = canary_backends();
    let agent = env.start(&canary_config());
    agent.kill().unwrap();
    // Hold the connect4 link open, then remove its pin: only a live fd keeps
    // the hook attached now, and no pin leads to it.
    let pin = std::fs::read_dir(redirector::datapath::layout_dir(env.pins.path()))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("gen-")))
        .expect("a generation")
        .join("link-connect4");
    let held = aya::programs::links::PinnedLink::from_pin(&pin).expect("opening the pinned link");
    std::fs::remove_file(&pin).unwrap();
    assert_eq!(connect4_programs(env.cgroup.path()), 1);
    let (code, out) = redirector(&["uninstall".as_ref(), "--bpffs".as_ref(), env.pins.path().as_os_str()]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("detached 4 links"), "{out}");
    assert_eq!(connect4_programs(env.cgroup.path()), 0, "a hook without a pin stayed attached");
    drop(held);
}

// --- atomic reloads -----------------------------------------------------------

/// Waits (up to 10 s) until the agent has logged `count` lines containing `needle`.
fn wait_for_log(agent: &Agent, needle: &str, count: usize) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while agent.log_lines(needle).len() < count {
        assert!(std::time::Instant::now() < deadline, "no {count}th {needle:?} in:\n{}", agent.log());
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

#[test]
fn workloads_switching_classes_under_load_never_get_each_others_routes() {
    let env = Env::new("class-shift");
    let _backends = canary_backends();
    // `target` alone goes to its own endpoint t; a's route sends it to
    // backend-v1, b's to backend-v2: three disjoint backend sets.
    let _t = Backend::tcp("127.10.3.1:18083", "t").unwrap();
    let a = ChildCgroup::create(env.cgroup.path(), "wl-a").unwrap();
    let b = ChildCgroup::create(env.cgroup.path(), "wl-b").unwrap();
    let common = [
        canary_services(),
        service("target", "127.10.0.5", "target", &[]),
        dataplane("t", "127.10.3.1", 18083, "target", &[]),
        workload("client-a", "wl-a", "client-a"),
        workload("client-b", "wl-b", "client-b"),
        workload_route("b-to-v2", "client-b", "target", "backend-v2"),
    ]
    .concat();
    // With a's route, a and b are classes 1 and 2 in Dataplane order; without
    // it, b alone is the first class: a naive id assignment moves b's routes
    // under a's old class id.
    let with_a = common.clone() + &workload_route("a-to-v1", "client-a", "target", "backend-v1");
    let agent = env.start(&with_a);
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load_a = load_from(a.path().to_path_buf(), "127.10.0.5:80", 4000, done.clone());
    let load_b = load_from(b.path().to_path_buf(), "127.10.0.5:80", 4000, done.clone());
    for i in 0..200 {
        env.config.write("config.yaml", if i % 2 == 0 { &common } else { &with_a }).unwrap();
        wait_for_log(&agent, "applied generation", i + 1);
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let (from_a, from_b) = (load_a.join().unwrap(), load_b.join().unwrap());
    eprintln!("class shifts: a {from_a:?}, b {from_b:?}");
    assert!(from_a.errors.is_empty() && from_b.errors.is_empty(), "failed connects: a {from_a:?}, b {from_b:?}");
    assert_eq!(from_a.replies_from("v2a"), 0, "workload a reached b's backend: {from_a:?}");
    assert_eq!(from_b.answered(), from_b.replies_from("v2a"), "workload b left its backend: {from_b:?}");
    assert!(from_a.replies_from("v1a") + from_a.replies_from("v1b") > 0 && from_a.replies_from("t") > 0, "a never saw both configs: {from_a:?}");
    agent.stop().unwrap();
}

/// `n` MeshServices selecting the same `m` Dataplanes: `n * (m + 2)` table
/// entries, in `n * ceil((m + 2) / TABLE_CHUNK)` chunks.
fn table_filler(n: u32, m: u32) -> String {
    let mut out = String::new();
    for i in 0..m {
        let _ = write!(
            out,
            "---\n{{type: Dataplane, name: fill-{i}, networking: {{address: 127.20.{}.{}, inbound: [{{port: 7000, tags: {{app: fill}}}}]}}}}\n",
            i / 250,
            1 + i % 250
        );
    }
    for i in 0..n {
        let _ = write!(
            out,
            "---\n{{type: MeshService, name: filler-{i}, spec: {{selector: {{dataplaneTags: {{app: fill}}}}, ports: [{{port: 80, targetPort: 7000}}]}}, status: {{vips: [{{ip: 127.21.{}.{}}}]}}}}\n",
            i / 250,
            1 + i % 250
        );
    }
    out
}

#[test]
fn a_generation_the_kernel_cannot_hold_leaves_nothing_behind() {
    let env = Env::new("too-big");
    let _backends = canary_backends();
    let metrics = "127.0.0.1:19092";
    env.config.write("config.yaml", &canary_config()).unwrap();
    let agent = Agent::start_with(&integration_tests::redirector_bin(), env.config.path(), env.cgroup.path(), env.pins.path(), &["--metrics", metrics]).expect("agent start");
    let before = redirector::status::read(env.pins.path()).unwrap();

    // One edit: the canary goes 50/50, and 2,100 services of 1,002 entries
    // (126 chunks, the first in ROUTES) each overflow TABLES.
    let filler = 2100;
    assert!(filler * (1002u32.div_ceil(redirector_common::TABLE_CHUNK) - 1) > redirector_common::MAX_TABLE_CHUNKS);
    let too_big = canary_config().replace("weight: 90", "weight: 50").replace("weight: 10", "weight: 50") + &table_filler(filler, 1000);
    env.config.write("config.yaml", &too_big).unwrap();
    wait_for_log(&agent, "applying failed", 1);
    let log = agent.log();
    assert!(log.contains("TABLES full"), "{log}");
    assert!(log.contains("generation 1 stays in force"), "{log}");
    let after = redirector::status::read(env.pins.path()).unwrap();
    // Compared whole, reported short: a failure here would list a million endpoints.
    let summary = |s: &redirector::status::Status| s.routes.iter().map(|r| format!("{} {:?}", r.destination, r.backends.iter().map(|b| b.share).collect::<Vec<_>>())).take(8).collect::<Vec<_>>();
    assert!(after.routes == before.routes, "the kernel's routes changed: {} routes now, {} before; first: {:?}", after.routes.len(), before.routes.len(), summary(&after));
    assert_eq!(after.workloads, before.workloads);
    let result = env.probe("127.10.0.1:80", 2000);
    let v1 = result.replies_from("v1a") + result.replies_from("v1b");
    let chi2 = chi_square(&[v1, result.replies_from("v2a")], &[0.9, 0.1]);
    assert!(chi2 < CHI2_P001_DF1, "the canary is no longer 90/10: {result:?} (chi2 {chi2:.2})");
    let (_, body) = integration_tests::http_get(metrics, "/metrics").unwrap();
    assert!(body.contains("redirector_config_generation 1"), "{body}");
    let failed = metric(&body, "redirector_config_reloads_total{result=\"failed\"}");
    assert!(failed.is_some_and(|n| n >= 1), "no failed reload counted in\n{body}");

    // Back to a good config: after the grace periods TABLES holds exactly
    // the further chunks of the tables ROUTES names.
    let fifty = canary_config().replace("weight: 90", "weight: 50").replace("weight: 10", "weight: 50");
    env.config.write("config.yaml", &fifty).unwrap();
    wait_for_log(&agent, "applied generation 2", 1);
    std::thread::sleep(std::time::Duration::from_millis(2 * redirector_common::TABLE_GRACE_MS + 500));
    let status = redirector::status::read(env.pins.path()).unwrap();
    let chunks = |entries: usize| entries.div_ceil(redirector_common::TABLE_CHUNK as usize) - 1;
    let named: usize = status.routes.iter().map(|r| chunks(1 + r.backends.len() + r.backends.iter().map(|b| b.endpoints.len()).sum::<usize>())).sum();
    assert_eq!(integration_tests::map_entries(&status.generation.join("tables")).unwrap(), named, "orphan TABLES entries");
    agent.stop().unwrap();
}

#[test]
fn connect_counts_follow_their_backend_and_go_with_their_route() {
    let env = Env::new("counters");
    let _backends = canary_backends();
    let v1_then_v2 = canary_services() + &route("split", "backend", &[("backend-v1", 1), ("backend-v2", 1)]);
    let agent = env.start(&v1_then_v2);
    let result = env.probe("127.10.0.1:80", 400);
    let v1 = result.replies_from("v1a") + result.replies_from("v1b");
    let v2 = result.replies_from("v2a");
    let counts_by_endpoint = || {
        let status = redirector::status::read(env.pins.path()).unwrap();
        let route = status.routes.iter().find(|r| r.destination.to_string() == "127.10.0.1:80").expect("route").clone();
        route.backends.iter().map(|b| (b.endpoints[0].to_string(), b.connects)).collect::<std::collections::BTreeMap<_, _>>()
    };
    let before = counts_by_endpoint();
    assert_eq!(before["127.10.1.1:18081"], u64::from(v1), "{before:?}");
    assert_eq!(before["127.10.2.1:18082"], u64::from(v2), "{before:?}");

    // The same backends in the other order: each count stays with its backend.
    let v2_then_v1 = canary_services() + &route("split", "backend", &[("backend-v2", 1), ("backend-v1", 1)]);
    env.config.write("config.yaml", &v2_then_v1).unwrap();
    wait_for_log(&agent, "applied generation 2", 1);
    assert_eq!(counts_by_endpoint(), before, "counts moved to other backends when the backends were reordered");

    // Without the route (the destination goes back to the service's own
    // endpoints, a new table): the route's counters are deleted after the
    // grace periods.
    // Slots that counted something (released slots are zeroed).
    let counters = || redirector::status::counters(env.pins.path()).unwrap().len();
    let with_route = counters();
    env.config.write("config.yaml", &canary_services()).unwrap();
    wait_for_log(&agent, "applied generation 3", 1);
    std::thread::sleep(std::time::Duration::from_millis(3 * redirector_common::TABLE_GRACE_MS + 500));
    assert!(counters() < with_route, "the removed route's counters stayed ({with_route} before, {} now)\n{}", counters(), agent.log());
    agent.stop().unwrap();
}

#[test]
fn the_service_filter_and_the_class_flags_follow_the_routes_and_a_shared_filter_bit_costs_only_a_lookup() {
    use redirector_common::{BASE_CLASS, ServiceKey, filter_bit, mapped_v4};
    let env = Env::new("filter");
    let _backends = canary_backends();
    let _a = ChildCgroup::create(env.cgroup.path(), "wl-a").unwrap();
    let config = [
        canary_config(),
        workload("client-a", "wl-a", "client-a"),
        workload_route("a-to-v1", "client-a", "backend", "backend-v1"),
    ]
    .concat();
    env.config.write("config.yaml", &config).unwrap();
    let agent = Agent::start_with(&integration_tests::redirector_bin(), env.config.path(), env.cgroup.path(), env.pins.path(), &[]).expect("agent start");
    let generation = || redirector::status::read(env.pins.path()).unwrap().generation;
    let check = || integration_tests::filter_check(&generation()).unwrap();
    let first = check();
    assert!(first.services >= 3 && first.missing == 0 && first.extra == 0, "{first:?}");
    // Only the destination a class routes its own way makes the hooks look the class up.
    assert_eq!(integration_tests::class_routed_entries(&generation()).unwrap(), ["127.10.0.1:80"]);

    // A destination that is no service but hashes to the canary VIP's bit
    // goes through the ROUTES lookup, misses, and connects unchanged.
    let key = |ip: std::net::Ipv4Addr, port: u16| ServiceKey { class: BASE_CLASS, addr: mapped_v4(u32::from(ip).to_be()), port: port.to_be(), pad: 0 };
    let vip = key(std::net::Ipv4Addr::new(127, 10, 0, 1), 80);
    let bit = filter_bit(&vip.addr, vip.port);
    let twin = (20_000u16..30_000)
        .flat_map(|port| (0..=u16::MAX).map(move |host| (std::net::Ipv4Addr::new(127, 30, (host >> 8) as u8, host as u8), port)))
        .find(|&(ip, port)| filter_bit(&key(ip, port).addr, key(ip, port).port) == bit)
        .expect("2^21 bits: a collision within a few million destinations");
    let twin = format!("{}:{}", twin.0, twin.1);
    let _twin = Backend::tcp(&twin, "twin").unwrap();
    let through = env.probe(&twin, 50);
    assert_eq!(through.replies_from("twin"), 50, "{twin}: {through:?}");
    let routed = env.probe("127.10.0.1:80", 50);
    assert_eq!(routed.replies_from("v1a") + routed.replies_from("v1b") + routed.replies_from("v2a"), 50, "{routed:?}");

    // Services and the workload route go: their bits are cleared once the
    // last entry they covered is deleted (class entries after the grace period).
    let fewer = [
        service("backend", "127.10.0.1", "backend", &[]),
        service("backend-v1", "127.10.0.2", "backend", &[("version", "v1")]),
        dataplane("v1a", "127.10.1.1", 18081, "backend", &[("version", "v1")]),
        route("canary", "backend", &[("backend-v1", 1)]),
    ]
    .concat();
    env.config.write("config.yaml", &fewer).unwrap();
    wait_for_log(&agent, "applied generation 2", 1);
    std::thread::sleep(std::time::Duration::from_millis(2 * redirector_common::TABLE_GRACE_MS + 500));
    let after = check();
    assert!(after.services < first.services && after.missing == 0 && after.extra == 0, "before {first:?}, after {after:?}");
    assert_eq!(integration_tests::class_routed_entries(&generation()).unwrap(), Vec::<String>::new(), "flags left after the class went");
    let gone = env.probe("127.10.0.3:80", 5);
    assert_eq!(gone.answered(), 0, "a removed service still redirected: {gone:?}");
    let kept = env.probe("127.10.0.1:80", 20);
    assert_eq!(kept.replies_from("v1a"), 20, "{kept:?}");
    agent.stop().unwrap();
}

/// Chi-square critical value at p = 0.001 with 12 degrees of freedom.
const CHI2_P001_DF12: f64 = 32.91;

#[test]
fn a_table_larger_than_its_first_chunk_splits_by_weight_and_is_replaced_whole() {
    let env = Env::new("wide");
    // 1 header + 2 backend slots + 13 endpoints: 16 entries, two chunks, so
    // some endpoints are read from the ROUTES value and some from TABLES.
    let mut config = vec![
        service("backend", "127.10.0.1", "backend", &[]),
        service("narrow", "127.10.0.2", "narrow", &[]),
        service("wide", "127.10.0.3", "wide", &[]),
        dataplane("narrow-1", "127.10.1.1", 18081, "narrow", &[]),
    ];
    let mut backends = vec![Backend::tcp("127.10.1.1:18081", "narrow-1").unwrap()];
    for i in 1..=12 {
        config.push(dataplane(&format!("wide-{i}"), &format!("127.10.2.{i}"), 18082, "wide", &[]));
        backends.push(Backend::tcp(&format!("127.10.2.{i}:18082"), &format!("wide-{i}")).unwrap());
    }
    let services = config.concat();
    let split = |narrow: u32, wide: u32| services.clone() + &route("split", "backend", &[("narrow", narrow), ("wide", wide)]);
    let check = |result: &integration_tests::ProbeResult, narrow_share: f64| {
        let ids: Vec<String> = std::iter::once("narrow-1".to_string()).chain((1..=12).map(|i| format!("wide-{i}"))).collect();
        let observed: Vec<u32> = ids.iter().map(|id| result.replies_from(id)).collect();
        assert_eq!(observed.iter().sum::<u32>(), 2600, "{result:?}");
        let shares: Vec<f64> = std::iter::once(narrow_share).chain(std::iter::repeat_n((1.0 - narrow_share) / 12.0, 12)).collect();
        let chi2 = chi_square(&observed, &shares);
        assert!(chi2 < CHI2_P001_DF12, "{observed:?} against {shares:?} (chi2 {chi2:.2})");
    };
    let agent = env.start(&split(1, 3));
    check(&env.probe("127.10.0.1:80", 2600), 0.25);

    env.config.write("config.yaml", &split(3, 1)).unwrap();
    wait_for_log(&agent, "applied generation 2", 1);
    check(&env.probe("127.10.0.1:80", 2600), 0.75);
    // After the grace periods TABLES holds the second chunks of the tables
    // in force only: the new split's and the one of `wide` itself (Kuma's
    // default route of a service to itself, 14 entries).
    std::thread::sleep(std::time::Duration::from_millis(2 * redirector_common::TABLE_GRACE_MS + 500));
    let status = redirector::status::read(env.pins.path()).unwrap();
    let sizes: Vec<usize> = status.routes.iter().map(|r| 1 + r.backends.len() + r.backends.iter().map(|b| b.endpoints.len()).sum::<usize>()).collect();
    assert_eq!(sizes.iter().filter(|&&n| n > redirector_common::TABLE_CHUNK as usize).count(), 2, "{sizes:?}");
    assert_eq!(integration_tests::map_entries(&status.generation.join("tables")).unwrap(), 2, "TABLES entries");
    drop(backends);
    agent.stop().unwrap();
}
