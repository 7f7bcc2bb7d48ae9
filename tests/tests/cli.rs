//! The `redirector` command line as users meet it: exit codes and messages.

use integration_tests::{AGENT_ATTACH_TYPES, ChildCgroup, PinDir, ScratchDir, attached_programs, redirector_bin, require_root};
use std::{os::unix::process::CommandExt as _, path::Path, process::Command};

fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root")
}

/// Runs `cmd` to completion (killed after 60 s, so a command that should
/// have failed but serves forever fails the test instead of hanging it).
fn output(cmd: &mut Command) -> (i32, String, String) {
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("running redirector");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while child.try_wait().expect("waiting").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("{cmd:?} still running after 60 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("collecting output");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_accepts_the_demo_config() {
    let (code, stdout, stderr) = output(Command::new(redirector_bin()).arg("check").arg(workspace_root().join("examples/canary")));
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("ok: 1 MeshTCPRoutes, 3 MeshServices, 3 Dataplanes; 3 destinations routed"), "{stdout}");
}

#[test]
fn check_prints_every_problem_with_its_location_and_exits_1() {
    let dir = ScratchDir::new("rdr-cli-check").unwrap();
    let file = dir
        .write(
            "bad.yaml",
            "type: MeshTCPRoute\nname: r1\nmesh: default\nspec:\n  targetRef:\n    kind: Mesh\n  to:\n    - targetRef:\n        kind: MeshGateway\n        name: gw\n      rules:\n        - default:\n            backendRefs: []\n---\ntype: MeshTCPRoute\nname: r2\nspec:\n  targetRef:\n    kind: Mesh\n  to:\n    - targetRef:\n        kind: MeshService\n        name: a\n      rules:\n        - default:\n            backendRefs:\n              - kind: MeshService\n                name: b\n                weight: -3\n",
        )
        .unwrap();
    let (code, stdout, _) = output(Command::new(redirector_bin()).arg("check").arg(&file));
    assert_eq!(code, 1, "{stdout}");
    let f = file.display();
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines.contains(&format!("{f}: MeshTCPRoute/r1: spec.to[0].targetRef.kind: value 'MeshGateway' is not supported").as_str()), "{stdout}");
    assert!(lines.contains(&format!("{f}: MeshTCPRoute/r1: spec.to[0].rules[0].default.backendRefs: must be defined").as_str()), "{stdout}");
    assert!(
        lines.iter().any(|l| l.starts_with(&format!("{f}: MeshTCPRoute/r2: spec.to[0].rules[0].default.backendRefs[0].weight: invalid value: integer `-3`"))),
        "{stdout}"
    );
    assert_eq!(lines.len(), 3, "{stdout}");
}

#[test]
fn check_reports_a_missing_path() {
    let (code, stdout, _) = output(Command::new(redirector_bin()).args(["check", "/nonexistent/rdr-config"]));
    assert_eq!(code, 1);
    assert!(stdout.starts_with("/nonexistent/rdr-config: cannot read: No such file or directory"), "{stdout}");
}

#[test]
fn run_refuses_a_directory_that_is_not_a_cgroup2_directory() {
    require_root();
    let pins = PinDir::new("rdr-cli-notcg").unwrap();
    let (code, _, stderr) = output(
        Command::new(redirector_bin())
            .args(["run", "--cgroup", "/tmp", "--bpffs"])
            .arg(pins.path())
            .arg("--config")
            .arg(workspace_root().join("examples/canary")),
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("--cgroup /tmp: not a cgroup2 directory"), "{stderr}");
    assert!(pins.leftovers().is_empty());
}

#[test]
fn run_refuses_without_privileges() {
    require_root();
    let (code, _, stderr) = output(
        Command::new(redirector_bin())
            .args(["run", "--cgroup", "/tmp", "--config"])
            .arg(workspace_root().join("examples/canary"))
            .uid(65534)
            .gid(65534),
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("needs root, or CAP_BPF and CAP_NET_ADMIN"), "{stderr}");
}

#[test]
fn run_with_an_invalid_config_attaches_nothing() {
    require_root();
    let cgroup = ChildCgroup::create_unique("rdr-cli-invalid").unwrap();
    let pins = PinDir::new("rdr-cli-invalid").unwrap();
    let dir = ScratchDir::new("rdr-cli-invalid").unwrap();
    dir.write("bad.yaml", "type: MeshTCPRoute\nname: r\nspec:\n  to: []\n").unwrap();
    let (code, _, stderr) = output(
        Command::new(redirector_bin())
            .arg("run")
            .arg("--config")
            .arg(dir.path())
            .arg("--cgroup")
            .arg(cgroup.path())
            .arg("--bpffs")
            .arg(pins.path()),
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("MeshTCPRoute/r: spec.to: must have at least one element"), "{stderr}");
    for attach_type in AGENT_ATTACH_TYPES {
        assert_eq!(attached_programs(cgroup.path(), attach_type).unwrap(), 0);
    }
    assert!(pins.leftovers().is_empty());
}

/// `plan --kubernetes` through the production kube-rs client against a fake
/// API server: this node's pods become Dataplanes (a pod of another node is
/// left out by the field selector), the Service becomes its MeshService, a
/// MeshTCPRoute from the API splits it, a Service's endpoint on another node
/// comes from its EndpointSlice, and CRDs that are not installed are
/// warnings.
#[test]
fn plan_reads_the_kubernetes_api_for_this_node() {
    use integration_tests::fake_api::FakeApi;
    use serde_json::json;
    let api = FakeApi::start(&["/api/v1/namespaces", "/api/v1/pods", "/api/v1/services", "/apis/discovery.k8s.io/v1/endpointslices", "/apis/kuma.io/v1alpha1/meshtcproutes"]).unwrap();
    api.add("/api/v1/namespaces", json!({"metadata": {"name": "shop", "resourceVersion": "1"}}));
    let pod = |name: &str, node: &str, ip: &str, version: &str| {
        json!({
            "metadata": {"name": name, "namespace": "shop", "uid": format!("uid-{name}"), "resourceVersion": "1", "labels": {"app": "web", "version": version}},
            "spec": {"nodeName": node, "containers": [{"name": "app", "ports": [{"name": "http", "containerPort": 8080}]}]},
            "status": {"phase": "Running", "podIP": ip, "qosClass": "Burstable", "containerStatuses": [{"name": "app", "ready": true}]},
        })
    };
    api.add("/api/v1/pods", pod("web-v1", "node-1", "10.1.0.5", "v1"));
    api.add("/api/v1/pods", pod("web-v2", "node-1", "10.1.0.6", "v2"));
    api.add("/api/v1/pods", pod("elsewhere", "node-2", "10.2.0.9", "v1"));
    let service = |name: &str, vip: &str, selector: serde_json::Value| {
        json!({"metadata": {"name": name, "namespace": "shop", "resourceVersion": "1"}, "spec": {"clusterIP": vip, "selector": selector, "ports": [{"port": 80, "targetPort": "http", "protocol": "TCP"}]}})
    };
    api.add("/api/v1/services", service("web", "10.96.0.10", json!({"app": "web"})));
    api.add("/api/v1/services", service("web-v1", "10.96.0.11", json!({"app": "web", "version": "v1"})));
    api.add("/api/v1/services", service("web-v2", "10.96.0.12", json!({"app": "web", "version": "v2"})));
    api.add("/apis/discovery.k8s.io/v1/endpointslices", json!({
        "metadata": {"name": "web-v2-abcde", "namespace": "shop", "labels": {"kubernetes.io/service-name": "web-v2"}},
        "addressType": "IPv4",
        "ports": [{"port": 8080, "protocol": "TCP"}],
        "endpoints": [{"addresses": ["10.1.0.6"], "nodeName": "node-1"}, {"addresses": ["10.2.0.7"], "nodeName": "node-2", "conditions": {"ready": true}}],
    }));
    api.add("/apis/kuma.io/v1alpha1/meshtcproutes", json!({
        "apiVersion": "kuma.io/v1alpha1", "kind": "MeshTCPRoute",
        "metadata": {"name": "canary", "namespace": "shop", "resourceVersion": "1"},
        "spec": {"targetRef": {"kind": "Mesh"}, "to": [{"targetRef": {"kind": "MeshService", "name": "web"}, "rules": [{"default": {"backendRefs": [
            {"kind": "MeshService", "name": "web-v1", "port": 80, "weight": 90},
            {"kind": "MeshService", "name": "web-v2", "port": 80, "weight": 10},
        ]}}]}]},
    }));
    let dir = ScratchDir::new("plan-kubernetes").unwrap();
    let kubeconfig = api.kubeconfig(dir.path()).unwrap();
    let (code, stdout, stderr) = output(
        Command::new(redirector_bin()).args(["plan", "--kubernetes", "--node-name", "node-1", "--kubeconfig"]).arg(&kubeconfig).env_remove("HTTPS_PROXY").env_remove("https_proxy"),
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stderr.contains("warning: the MeshHTTPRoute CRD is not installed"), "{stderr}");
    assert!(stdout.contains("Dataplane/web-v1") && stdout.contains("Dataplane/web-v2"), "{stdout}");
    assert!(!stdout.contains("elsewhere"), "a pod of another node: {stdout}");
    let split = stdout.split("10.96.0.10:80").nth(1).unwrap_or_default();
    assert!(split.contains("MeshTCPRoute/canary"), "{stdout}");
    assert!(split.contains("90.000%") && split.contains("10.1.0.5:8080") && split.contains("10.000%") && split.contains("10.1.0.6:8080"), "{stdout}");
    assert!(split.contains("MeshService/web-v2:80  -> 10.1.0.6:8080, 10.2.0.7:8080\n"), "web-v2's endpoint on node-2, and node-1's once: {stdout}");
}

/// A resource from the API that does not validate is reported once, naming
/// its API object, and `plan --kubernetes` exits 1.
#[test]
fn plan_reports_an_invalid_kubernetes_resource_once() {
    use integration_tests::fake_api::FakeApi;
    use serde_json::json;
    let api = FakeApi::start(&["/api/v1/namespaces", "/api/v1/pods", "/api/v1/services", "/apis/discovery.k8s.io/v1/endpointslices", "/apis/kuma.io/v1alpha1/meshservices"]).unwrap();
    api.add("/apis/kuma.io/v1alpha1/meshservices", json!({
        "apiVersion": "kuma.io/v1alpha1", "kind": "MeshService",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"selector": {"dataplaneTags": {"app": "web"}}, "ports": [{"port": 0, "targetPort": 8080}]},
        "status": {"vips": [{"ip": "10.96.0.10"}]},
    }));
    let dir = ScratchDir::new("plan-kubernetes-invalid").unwrap();
    let kubeconfig = api.kubeconfig(dir.path()).unwrap();
    let (code, stdout, stderr) = output(Command::new(redirector_bin()).args(["plan", "--kubernetes", "--node-name", "node-1", "--kubeconfig"]).arg(&kubeconfig));
    assert_eq!(code, 1, "{stdout}{stderr}");
    let reported: Vec<&str> = stdout.lines().filter(|l| l.contains("spec.ports[0].port")).collect();
    assert_eq!(reported.len(), 1, "{stdout}");
    assert!(reported[0].starts_with("kubernetes/meshservices/shop/web: "), "{stdout}");
}
