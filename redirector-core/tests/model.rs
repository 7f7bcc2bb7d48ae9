//! `redirector_core::model`: reading both YAML forms into typed resources, and every
//! problem reported as `file: Kind/name: field.path: message`.

mod common;

use common::{FILE, Triple, check, errors, t, warnings};
use redirector_core::model::{self, Origin, PortRef, Problem, Problems, RefKind, Severity, Tags};
use std::{
    net::IpAddr,
    path::{Path, PathBuf},
};

fn load_ok(text: &str) -> model::Config {
    let (config, problems) = model::load_str(Path::new(FILE), text);
    assert!(problems.is_empty(), "unexpected load problems: {problems:#?}");
    config
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn labels(pairs: &[(&str, &str)]) -> Tags {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

const UNIVERSAL_ROUTE: &str = r#"
type: MeshTCPRoute
name: split
mesh: payments
labels:
  team: core
creationTime: "2024-01-01T00:00:00Z"
modificationTime: "2024-01-02T00:00:00Z"
spec:
  targetRef:
    kind: Mesh
  to:
    - targetRef:
        kind: MeshService
        name: backend
        sectionName: http
      rules:
        - default:
            backendRefs:
              - kind: MeshService
                name: backend-v1
                port: 8080
                weight: 90
              - kind: MeshService
                name: backend-v2
"#;

#[test]
fn universal_route_reads_envelope_and_spec() {
    let config = load_ok(UNIVERSAL_ROUTE);
    assert_eq!(config.routes.len(), 1);
    let route = &config.routes[0];
    assert_eq!(
        route.origin,
        Origin::new(PathBuf::from(FILE).into(), "MeshTCPRoute", "split".into(), None, "payments".into(), labels(&[("team", "core")]), false)
    );
    assert_eq!(route.origin.display_name(), "MeshTCPRoute/split");
    assert_eq!(route.spec.target_ref.as_ref().unwrap().kind, Some(RefKind::Mesh));
    let to = route.spec.to.as_ref().unwrap();
    assert_eq!(to.len(), 1);
    assert_eq!(to[0].target_ref.kind, Some(RefKind::MeshService));
    assert_eq!(to[0].target_ref.name.as_deref(), Some("backend"));
    assert_eq!(to[0].target_ref.section_name.as_deref(), Some("http"));
    let rules = to[0].rules.as_ref().unwrap();
    let refs = rules[0].default.backend_refs.as_ref().unwrap();
    assert_eq!(refs.len(), 2);
    assert_eq!(refs[0].kind, Some(RefKind::MeshService));
    assert_eq!(refs[0].name.as_deref(), Some("backend-v1"));
    assert_eq!(refs[0].port, Some(8080));
    assert_eq!(refs[0].weight, Some(90));
    assert_eq!(refs[1].port, None);
    assert_eq!(refs[1].weight, None);
    assert!(check(UNIVERSAL_ROUTE).1.is_empty());
}

#[test]
fn universal_resource_without_mesh_is_in_default_mesh() {
    let config = load_ok("type: MeshTCPRoute\nname: r\nspec:\n  to: [{targetRef: {kind: MeshService, name: a}}]\n");
    assert_eq!(config.routes[0].origin.mesh, "default");
    assert!(config.routes[0].origin.labels.is_empty());
}

const KUBERNETES_ROUTE: &str = r#"
apiVersion: kuma.io/v1alpha1
kind: MeshTCPRoute
metadata:
  name: split
  namespace: kuma-demo
  labels:
    kuma.io/mesh: payments
    team: core
  annotations:
    note: ignored
spec:
  targetRef:
    kind: Mesh
  to:
    - targetRef:
        kind: MeshService
        name: backend
        namespace: kuma-demo
        sectionName: "8080"
      rules:
        - default:
            backendRefs:
              - kind: MeshService
                name: backend-v1
                namespace: kuma-demo
                weight: 3
"#;

#[test]
fn kubernetes_route_takes_name_namespace_and_mesh_from_metadata() {
    let config = load_ok(KUBERNETES_ROUTE);
    let origin = &config.routes[0].origin;
    assert_eq!(origin.kind, "MeshTCPRoute");
    assert_eq!(origin.name, "split");
    assert_eq!(origin.namespace.as_deref(), Some("kuma-demo"));
    assert_eq!(origin.mesh, "payments");
    assert_eq!(origin.labels, labels(&[("kuma.io/mesh", "payments"), ("team", "core")]));
    let to = &config.routes[0].spec.to.as_ref().unwrap()[0];
    assert_eq!(to.target_ref.namespace.as_deref(), Some("kuma-demo"));
    assert_eq!(to.target_ref.section_name.as_deref(), Some("8080"));
    let backend = &to.rules.as_ref().unwrap()[0].default.backend_refs.as_ref().unwrap()[0];
    assert_eq!(backend.namespace.as_deref(), Some("kuma-demo"));
    assert_eq!(backend.weight, Some(3));
    assert!(check(KUBERNETES_ROUTE).1.is_empty());
}

#[test]
fn kubernetes_resource_without_mesh_label_is_in_default_mesh() {
    let config = load_ok(
        "apiVersion: kuma.io/v1alpha1\nkind: MeshTCPRoute\nmetadata:\n  name: r\nspec:\n  to: [{targetRef: {kind: MeshService, name: a}}]\n",
    );
    let origin = &config.routes[0].origin;
    assert_eq!(origin.mesh, "default");
    assert_eq!(origin.namespace, None);
}

const UNIVERSAL_SERVICE: &str = r#"
type: MeshService
name: redis
mesh: default
labels:
  kuma.io/origin: zone
spec:
  selector:
    dataplaneTags:
      kuma.io/service: redis
      version: v1
  ports:
    - port: 6379
      targetPort: 6380
      appProtocol: tcp
    - name: admin
      port: 16379
      targetPort: admin-inbound
      appProtocol: http
    - port: 7000
status:
  vips:
    - ip: 10.43.0.10
    - ip: fd00:10:43::a
"#;

#[test]
fn universal_service_reads_selector_ports_and_vips() {
    let config = load_ok(UNIVERSAL_SERVICE);
    let service = &config.services[0];
    assert_eq!(service.origin.display_name(), "MeshService/redis");
    let tags = service.spec.selector.as_ref().unwrap().dataplane_tags.as_ref().unwrap();
    assert_eq!(tags, &labels(&[("kuma.io/service", "redis"), ("version", "v1")]));
    let ports = service.spec.ports.as_ref().unwrap();
    assert_eq!(ports.len(), 3);
    assert_eq!(ports[0].port, 6379);
    assert_eq!(ports[0].target_port, Some(PortRef::Number(6380)));
    assert_eq!(ports[0].app_protocol.as_deref(), Some("tcp"));
    assert_eq!(ports[0].name, None);
    assert_eq!(ports[1].name.as_deref(), Some("admin"));
    assert_eq!(ports[1].target_port, Some(PortRef::Name("admin-inbound".into())));
    assert_eq!(ports[1].app_protocol.as_deref(), Some("http"));
    assert_eq!(ports[2].target_port, None);
    let vips: Vec<IpAddr> = service.status.vips.as_ref().unwrap().iter().map(|v| v.ip).collect();
    assert_eq!(vips, vec![ip("10.43.0.10"), ip("fd00:10:43::a")]);
    assert!(errors(UNIVERSAL_SERVICE).is_empty());
    assert_eq!(
        warnings(UNIVERSAL_SERVICE),
        vec![t(
            "MeshService/redis",
            "spec.ports[2].targetPort",
            "not set: Kuma matches no Dataplane inbound to this port, so it has no endpoints"
        )]
    );
}

const KUBERNETES_SERVICE: &str = r#"
apiVersion: kuma.io/v1alpha1
kind: MeshService
metadata:
  name: redis
  namespace: kuma-demo
  labels:
    kuma.io/mesh: default
spec:
  selector:
    dataplaneTags:
      app: redis
      k8s.kuma.io/namespace: kuma-demo
  ports:
    - port: 6739
      targetPort: 6739
      appProtocol: tcp
    - name: some-port
      port: 16739
      targetPort: target-port-from-container
      appProtocol: tcp
status:
  addresses:
    - hostname: redis.kuma-demo.svc.cluster.local
  vips:
    - ip: 10.43.0.10
    - ip: "2001:db8::10"
  tls:
    state: Ready
"#;

#[test]
fn kubernetes_service_reads_spec_and_status() {
    let config = load_ok(KUBERNETES_SERVICE);
    let service = &config.services[0];
    assert_eq!(service.origin.namespace.as_deref(), Some("kuma-demo"));
    let ports = service.spec.ports.as_ref().unwrap();
    assert_eq!(ports[0].target_port, Some(PortRef::Number(6739)));
    assert_eq!(ports[1].name.as_deref(), Some("some-port"));
    assert_eq!(
        ports[1].target_port,
        Some(PortRef::Name("target-port-from-container".into()))
    );
    let vips: Vec<IpAddr> = service.status.vips.as_ref().unwrap().iter().map(|v| v.ip).collect();
    assert_eq!(vips, vec![ip("10.43.0.10"), ip("2001:db8::10")]);
}

const UNIVERSAL_DATAPLANE: &str = r#"
type: Dataplane
mesh: default
name: web-01
networking:
  address: 192.168.0.1
  advertisedAddress: 203.0.113.1
  inbound:
    - port: 8080
      servicePort: 18080
      tags:
        kuma.io/service: web
        version: v1
    - port: 9090
      name: metrics
      address: 192.168.0.2
      serviceAddress: 127.0.0.1
      tags:
        kuma.io/service: web-metrics
      health:
        ready: true
  transparentProxying:
    redirectPortInbound: 15006
  admin:
    port: 9901
"#;

#[test]
fn universal_dataplane_has_networking_at_top_level() {
    let config = load_ok(UNIVERSAL_DATAPLANE);
    let dp = &config.dataplanes[0];
    assert_eq!(dp.origin.display_name(), "Dataplane/web-01");
    let net = &dp.spec.networking;
    assert_eq!(net.address, Some(ip("192.168.0.1")));
    let inbound = net.inbound.as_ref().unwrap();
    assert_eq!(inbound.len(), 2);
    assert_eq!(inbound[0].port, 8080);
    assert_eq!(inbound[0].service_port, Some(18080));
    assert_eq!(inbound[0].address, None);
    assert_eq!(
        inbound[0].tags.as_ref().unwrap(),
        &labels(&[("kuma.io/service", "web"), ("version", "v1")])
    );
    assert_eq!(inbound[1].name.as_deref(), Some("metrics"));
    assert_eq!(inbound[1].address, Some(ip("192.168.0.2")));
    assert_eq!(inbound[1].service_address, Some(ip("127.0.0.1")));
    assert!(check(UNIVERSAL_DATAPLANE).1.is_empty());
}

const KUBERNETES_DATAPLANE: &str = r#"
apiVersion: kuma.io/v1alpha1
kind: Dataplane
metadata:
  name: web-7d9f-abcde
  namespace: kuma-demo
  labels:
    kuma.io/mesh: default
spec:
  networking:
    address: 10.244.0.7
    inbound:
      - port: 8080
        tags:
          app: web
"#;

#[test]
fn kubernetes_dataplane_has_networking_under_spec() {
    let config = load_ok(KUBERNETES_DATAPLANE);
    let dp = &config.dataplanes[0];
    assert_eq!(dp.origin.namespace.as_deref(), Some("kuma-demo"));
    assert_eq!(dp.spec.networking.address, Some(ip("10.244.0.7")));
    assert_eq!(dp.spec.networking.inbound.as_ref().unwrap()[0].port, 8080);
    assert!(check(KUBERNETES_DATAPLANE).1.is_empty());
}

#[test]
fn kubernetes_dataplane_networking_at_top_level_is_an_unknown_field() {
    let text =
        "apiVersion: kuma.io/v1alpha1\nkind: Dataplane\nmetadata: {name: dp}\nspec: {networking: {}}\nnetworking: {}\n";
    assert_eq!(errors(text), vec![t("Dataplane/dp", "networking", "unknown field")]);
}

#[test]
fn universal_dataplane_spec_key_is_an_unknown_field() {
    let errs = errors("type: Dataplane\nname: dp\nspec:\n  networking: {address: 10.0.0.1}\n");
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].1, "spec");
    assert!(errs[0].2.starts_with("unknown field `spec`"), "{}", errs[0].2);
}

#[test]
fn multi_document_file_loads_every_document_in_order() {
    let text = format!(
        "---\n{UNIVERSAL_SERVICE}\n---\n---\n{UNIVERSAL_DATAPLANE}\n---\n{KUBERNETES_ROUTE}\n---\n{KUBERNETES_DATAPLANE}\n---\n{UNIVERSAL_ROUTE}\n...\n"
    );
    let config = load_ok(&text);
    assert_eq!(config.services.len(), 1);
    let dps: Vec<&str> = config.dataplanes.iter().map(|d| d.origin.name.as_str()).collect();
    assert_eq!(dps, ["web-01", "web-7d9f-abcde"]);
    let routes: Vec<(&str, &str)> = config
        .routes
        .iter()
        .map(|r| (r.origin.name.as_str(), r.origin.mesh.as_str()))
        .collect();
    assert_eq!(routes, [("split", "payments"), ("split", "payments")]);
}

#[test]
fn empty_input_loads_nothing_without_problems() {
    for text in ["", "---\n", "# only a comment\n", "---\n---\n...\n"] {
        let (config, problems) = check(text);
        assert_eq!(config, model::Config::default(), "{text:?}");
        assert!(problems.is_empty(), "{text:?}: {problems:?}");
    }
}

#[test]
fn other_kuma_kinds_are_kept_aside_with_a_warning() {
    let text = "type: Mesh\nname: default\n---\napiVersion: kuma.io/v1alpha1\nkind: MeshTimeout\nmetadata: {name: h, namespace: ns}\nspec: {anything: [1, 2]}\n";
    let (config, problems) = check(text);
    let ignored: Vec<String> = config.ignored.iter().map(|o| o.display_name().into()).collect();
    assert_eq!(ignored, ["Mesh/default", "MeshTimeout/h"]);
    assert!(config.routes.is_empty() && config.services.is_empty() && config.dataplanes.is_empty());
    assert_eq!(
        common::triples(&problems, Severity::Warning),
        vec![
            t(
                "Mesh/default",
                "",
                "Mesh resources are read but have no effect in this version"
            ),
            t(
                "MeshTimeout/h",
                "",
                "MeshTimeout resources are read but have no effect in this version"
            ),
        ]
    );
    assert!(!Problems(problems).has_errors());
}

#[test]
fn mesh_http_route_is_read_for_its_targets_only() {
    let text = "apiVersion: kuma.io/v1alpha1\nkind: MeshHTTPRoute\nmetadata: {name: h, namespace: ns}\nspec:\n  targetRef: {kind: Dataplane, labels: {app: web}}\n  to: [{targetRef: {kind: MeshService, name: api}, rules: [{matches: [{path: {type: PathPrefix, value: /}}], default: {}}]}]\n";
    let (config, problems) = check(text);
    assert!(problems.is_empty(), "{problems:#?}");
    assert!(config.ignored.is_empty());
    let route = &config.http_routes[0];
    assert_eq!(route.origin.display_name(), "MeshHTTPRoute/h");
    assert_eq!(route.spec.target_ref.as_ref().unwrap().kind, Some(RefKind::Dataplane));
    assert_eq!(route.spec.to.as_ref().unwrap()[0].target_ref.name.as_deref(), Some("api"));
}

#[test]
fn documentation_hints_are_read_and_version_hint_is_a_warning() {
    let text = r#"
type: MeshTCPRoute
name: r
spec:
  to:
    - targetRef: {kind: MeshService, name: backend, _port: 3001}
      rules:
        - default:
            backendRefs:
              - {kind: MeshService, name: backend, _port: 8080, _version: v1}
"#;
    let (config, problems) = check(text);
    let to = &config.routes[0].spec.to.as_ref().unwrap()[0];
    assert_eq!(to.target_ref.doc_port, Some(3001));
    let backend = &to.rules.as_ref().unwrap()[0].default.backend_refs.as_ref().unwrap()[0];
    assert_eq!(backend.doc_port, Some(8080));
    assert_eq!(backend.doc_version.as_deref(), Some("v1"));
    assert_eq!(
        common::triples(&problems, Severity::Warning),
        vec![t(
            "MeshTCPRoute/r",
            "spec.to[0].rules[0].default.backendRefs[0]._version",
            "documentation-generator hint; it selects nothing (split with separate MeshServices)"
        )]
    );
    assert!(common::triples(&problems, Severity::Error).is_empty());
}

// ---------------------------------------------------------------- Display

#[test]
fn problem_display_is_file_resource_path_message() {
    let mut p = Problem {
        severity: Severity::Error,
        file: PathBuf::from("conf/routes.yaml"),
        resource: "MeshTCPRoute/r".into(),
        path: "spec.to[0].targetRef.kind".into(),
        message: "must be set".into(),
    };
    assert_eq!(
        p.to_string(),
        "conf/routes.yaml: MeshTCPRoute/r: spec.to[0].targetRef.kind: must be set"
    );
    p.severity = Severity::Warning;
    assert_eq!(
        p.to_string(),
        "warning: conf/routes.yaml: MeshTCPRoute/r: spec.to[0].targetRef.kind: must be set"
    );
    p.path.clear();
    assert_eq!(p.to_string(), "warning: conf/routes.yaml: MeshTCPRoute/r: must be set");
    p.resource.clear();
    assert_eq!(p.to_string(), "warning: conf/routes.yaml: must be set");
}

#[test]
fn problems_display_one_per_line_and_split_by_severity() {
    let error = Problem {
        severity: Severity::Error,
        file: PathBuf::from("a.yaml"),
        resource: "MeshService/s".into(),
        path: "spec.ports[0].port".into(),
        message: "must be in 1..65535".into(),
    };
    let warning = Problem {
        severity: Severity::Warning,
        message: "w".into(),
        ..error.clone()
    };
    let all = Problems(vec![error.clone(), warning.clone(), error.clone()]);
    assert_eq!(all.to_string(), format!("{error}\n{warning}\n{error}"));
    assert!(all.has_errors());
    assert_eq!(all.errors().count(), 2);
    assert_eq!(all.warnings().collect::<Vec<_>>(), vec![&warning]);
    assert!(!Problems(vec![warning]).has_errors());
    assert_eq!(Problems::default().to_string(), "");
}

#[test]
fn wrong_weight_type_is_reported_at_its_field_path() {
    let text = "type: MeshTCPRoute\nname: r\nspec:\n  to:\n    - targetRef: {kind: MeshService, name: a}\n      rules:\n        - default:\n            backendRefs:\n              - {kind: MeshService, name: b}\n              - {kind: MeshService, name: c, weight: abc}\n";
    let (_, problems) = check(text);
    assert_eq!(problems.len(), 1);
    assert_eq!(
        problems[0].to_string(),
        "test.yaml: MeshTCPRoute/r: spec.to[0].rules[0].default.backendRefs[1].weight: invalid type: string \"abc\", expected u64"
    );
}

// ---------------------------------------------------------------- load errors

fn backend_refs_doc(refs: &str) -> String {
    format!(
        "type: MeshTCPRoute\nname: r\nspec:\n  to:\n    - targetRef: {{kind: MeshService, name: a}}\n      rules:\n        - default:\n            backendRefs: {refs}\n"
    )
}

fn single_error(text: &str) -> Triple {
    let errs = errors(text);
    assert_eq!(errs.len(), 1, "expected one error for {text:?}, got {errs:#?}");
    errs.into_iter().next().unwrap()
}

#[test]
fn negative_weight_is_rejected() {
    let (resource, path, message) = single_error(&backend_refs_doc("[{kind: MeshService, name: b, weight: -1}]"));
    assert_eq!(resource, "MeshTCPRoute/r");
    assert_eq!(path, "spec.to[0].rules[0].default.backendRefs[0].weight");
    assert_eq!(message, "invalid value: integer `-1`, expected u64");
}

#[test]
fn fractional_weight_is_rejected() {
    let (_, path, message) = single_error(&backend_refs_doc("[{kind: MeshService, name: b, weight: 1.5}]"));
    assert_eq!(path, "spec.to[0].rules[0].default.backendRefs[0].weight");
    assert!(message.starts_with("invalid type: floating point"), "{message}");
}

#[test]
fn service_port_out_of_range_is_rejected() {
    let (resource, path, message) =
        single_error("type: MeshService\nname: s\nspec:\n  ports:\n    - port: 80\n    - port: 70000\n");
    assert_eq!(resource, "MeshService/s");
    assert_eq!(path, "spec.ports[1].port");
    assert_eq!(message, "invalid value: integer `70000`, expected u16");
}

#[test]
fn service_target_port_neither_number_nor_name_is_rejected() {
    for value in ["70000", "-1", "[1]", "{a: 1}", "true"] {
        let (_, path, _) = single_error(&format!(
            "type: MeshService\nname: s\nspec:\n  ports:\n    - port: 80\n      targetPort: {value}\n"
        ));
        assert_eq!(path, "spec.ports[0].targetPort", "{value}");
    }
}

#[test]
fn invalid_vip_is_rejected_at_its_path() {
    let (_, path, message) = single_error(
        "type: MeshService\nname: s\nspec: {}\nstatus:\n  vips:\n    - ip: 10.0.0.1\n    - ip: 10.0.0.300\n",
    );
    assert_eq!(path, "status.vips[1].ip");
    assert_eq!(message, "invalid IP address syntax");
}

/// Addresses a connection can be made to stay accepted as VIPs and outbound
/// addresses: loopback, private, the last address before broadcast, the class E
/// range (not multicast), and IPv4-mapped forms of these.
#[test]
fn usable_service_addresses_are_accepted() {
    let addresses = ["127.0.0.1", "10.0.0.1", "255.255.255.254", "240.0.0.1", "223.255.255.255", "'::1'", "'fd00::1'", "'::ffff:10.0.0.1'"];
    for address in addresses {
        let service = format!("type: MeshService\nname: s\nspec: {{ports: [{{port: 80}}]}}\nstatus: {{vips: [{{ip: {address}}}]}}\n");
        assert_eq!(errors(&service), vec![], "{address}");
        let dataplane = format!(
            "type: Dataplane\nname: d\nnetworking: {{address: 10.0.0.2, outbound: [{{port: 80, address: {address}, tags: {{kuma.io/service: s}}}}]}}\n"
        );
        assert_eq!(errors(&dataplane), vec![], "{address}");
    }
}

/// The YAML core schema's tags are resolved by the YAML reader, not kept as
/// tags: they are accepted and mean what they say.
#[test]
fn core_schema_tags_are_resolved_not_rejected() {
    let config = load_ok(&backend_refs_doc(
        "[{kind: MeshService, name: !!str b, sectionName: !!str 8080, weight: !!int 90, port: !!null ~}]",
    ));
    let to = config.routes[0].spec.to.as_ref().unwrap();
    let backend = &to[0].rules.as_ref().unwrap()[0].default.backend_refs.as_ref().unwrap()[0];
    assert_eq!(backend.name.as_deref(), Some("b"));
    assert_eq!(backend.section_name.as_deref(), Some("8080"));
    assert_eq!(backend.weight, Some(90));
    assert_eq!(backend.port, None);
    let config = load_ok("type: Dataplane\nname: d\nnetworking: {address: 10.0.0.2, inbound: [{port: 80, health: {ready: !!bool false}}]}\n");
    assert!(!config.dataplanes[0].spec.networking.inbound.as_ref().unwrap()[0].is_healthy());
}

/// A number beyond 64 bits is an error only where a field is typed; in a
/// field read but unused it is kept (as a float, as Kuma's JSON would).
#[test]
fn numbers_beyond_64_bits_in_unused_fields_are_kept() {
    let config = load_ok("type: Dataplane\nname: d\nnetworking: {address: 10.0.0.2, admin: {port: 18446744073709551616}}\n");
    let admin = config.dataplanes[0].spec.networking.admin.as_ref().unwrap();
    assert_eq!(admin["port"].as_f64(), Some(18_446_744_073_709_551_616.0));
}

#[test]
fn unknown_field_inside_vip_is_rejected() {
    let (_, path, message) =
        single_error("type: MeshService\nname: s\nspec: {}\nstatus:\n  vips:\n    - {ip: 10.0.0.1, zone: z}\n");
    assert_eq!(path, "status.vips[0].zone");
    assert!(message.starts_with("unknown field `zone`"), "{message}");
}

/// Kuma's validator does not range-check a backendRef `port` (a `uint32`); a
/// port no service has is left to resolution, which drops the backend.
#[test]
fn backend_port_out_of_range_is_not_a_validation_error() {
    let (_, problems) = check(&backend_refs_doc(
        "[{kind: MeshService, name: b, port: 70000}, {kind: MeshService, name: c, port: 0}, {kind: MeshService, name: d, _port: 65536}]",
    ));
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn unknown_fields_are_rejected_at_every_level() {
    let cases = [
        (
            "type: MeshTCPRoute\nname: r\nspec:\n  to: []\n  from: []\n",
            "spec.from",
        ),
        (
            "type: MeshTCPRoute\nname: r\nspec:\n  to:\n    - targetRef: {kind: MeshService, name: a, port: 80}\n",
            "spec.to[0].targetRef.port",
        ),
        (
            "type: MeshTCPRoute\nname: r\nspec:\n  to:\n    - targetRef: {kind: MeshService, name: a}\n      default: {}\n",
            "spec.to[0].default",
        ),
        (
            "type: MeshTCPRoute\nname: r\nspec:\n  to:\n    - targetRef: {kind: MeshService, name: a}\n      rules:\n        - matches: []\n          default: {backendRefs: [{kind: MeshService, name: b}]}\n",
            "spec.to[0].rules[0].matches",
        ),
        (
            &backend_refs_doc("[{kind: MeshService, name: b, wieght: 2}]"),
            "spec.to[0].rules[0].default.backendRefs[0].wieght",
        ),
        (
            "type: MeshService\nname: s\nspec:\n  ports:\n    - {port: 80, protocol: tcp}\n",
            "spec.ports[0].protocol",
        ),
        (
            "type: MeshService\nname: s\nspec:\n  selector: {tags: {a: b}}\n",
            "spec.selector.tags",
        ),
        (
            "type: Dataplane\nname: d\nnetworking:\n  address: 10.0.0.1\n  inbound:\n    - {port: 80, bogus: 1}\n",
            "networking.inbound[0].bogus",
        ),
        ("type: Dataplane\nname: d\nnetworkin: {}\n", "networkin"),
    ];
    for (text, path) in cases {
        let (_, got_path, message) = single_error(text);
        assert_eq!(got_path, path, "{text}");
        let field = path.rsplit('.').next().unwrap();
        assert!(
            message.starts_with(&format!("unknown field `{field}`")),
            "{path}: {message}"
        );
    }
}

#[test]
fn unknown_envelope_fields_are_rejected_in_both_forms() {
    assert_eq!(
        errors("type: MeshTCPRoute\nname: r\nspec: {to: []}\nstatus: {}\n"),
        vec![t("MeshTCPRoute/r", "status", "unknown field")]
    );
    assert_eq!(
        errors("apiVersion: kuma.io/v1alpha1\nkind: MeshService\nmetadata: {name: s}\nspec: {}\nextra: 1\n"),
        vec![t("MeshService/s", "extra", "unknown field")]
    );
}

#[test]
fn missing_spec_is_reported() {
    assert_eq!(
        errors("type: MeshTCPRoute\nname: r\n"),
        vec![t("MeshTCPRoute/r", "spec", "missing")]
    );
    assert_eq!(
        errors("apiVersion: kuma.io/v1alpha1\nkind: MeshService\nmetadata: {name: s}\nspec: null\n"),
        vec![t("MeshService/s", "spec", "missing")]
    );
}

#[test]
fn spec_of_wrong_type_is_reported_at_spec() {
    let (_, path, message) = single_error("type: MeshTCPRoute\nname: r\nspec: [1]\n");
    assert_eq!(path, "spec");
    assert!(message.starts_with("invalid type: sequence"), "{message}");
}

#[test]
fn missing_type_is_reported_for_the_document() {
    let errs = errors("type: Mesh\nname: m\n---\nname: x\nspec: {}\n");
    assert_eq!(
        errs,
        vec![t(
            "",
            "",
            "document 2: missing `type` (universal form) or `apiVersion`/`kind` (Kubernetes form)"
        )]
    );
}

#[test]
fn missing_name_is_reported() {
    assert_eq!(
        errors("type: MeshTCPRoute\nspec: {}\n"),
        vec![t("", "name", "MeshTCPRoute: missing")]
    );
    assert_eq!(
        errors("apiVersion: kuma.io/v1alpha1\nkind: MeshService\nmetadata: {namespace: ns}\nspec: {}\n"),
        vec![t("", "metadata.name", "missing")]
    );
}

#[test]
fn kubernetes_envelope_errors_are_reported() {
    let cases = [
        (
            "apiVersion: v1\nkind: Service\nmetadata: {name: x}\n",
            "apiVersion",
            "expected \"kuma.io/v1alpha1\", found Some(\"v1\")",
        ),
        (
            "kind: MeshService\nmetadata: {name: x}\n",
            "apiVersion",
            "expected \"kuma.io/v1alpha1\", found None",
        ),
        ("apiVersion: kuma.io/v1alpha1\nmetadata: {name: x}\n", "kind", "missing"),
        (
            "apiVersion: kuma.io/v1alpha1\nkind: MeshService\n",
            "metadata",
            "missing or not a mapping",
        ),
        (
            "apiVersion: kuma.io/v1alpha1\nkind: MeshService\nmetadata: [x]\n",
            "metadata",
            "missing or not a mapping",
        ),
        (
            "apiVersion: kuma.io/v1alpha1\nkind: 3\nmetadata: {name: x}\n",
            "kind",
            "expected a string, found a number",
        ),
        (
            "apiVersion: kuma.io/v1alpha1\nkind: MeshService\nmetadata: {name: [x]}\n",
            "metadata.name",
            "expected a string, found a list",
        ),
        (
            "apiVersion: kuma.io/v1alpha1\nkind: MeshService\nmetadata: {name: x, namespace: {a: b}}\n",
            "metadata.namespace",
            "expected a string, found a mapping",
        ),
    ];
    for (text, path, message) in cases {
        assert_eq!(errors(text), vec![t("", path, message)], "{text}");
    }
}

#[test]
fn universal_envelope_field_types_are_checked() {
    let cases = [
        ("type: 1\nname: x\n", "type", "expected a string, found a number"),
        ("type: Mesh\nname: true\n", "name", "expected a string, found a boolean"),
        (
            "type: Mesh\nname: x\nmesh: [a]\n",
            "mesh",
            "expected a string, found a list",
        ),
    ];
    for (text, path, message) in cases {
        assert_eq!(errors(text), vec![t("", path, message)], "{text}");
    }
    let (_, path, _) = single_error("type: Mesh\nname: x\nlabels: [a, b]\n");
    assert_eq!(path, "labels");
    let (_, path, _) =
        single_error("apiVersion: kuma.io/v1alpha1\nkind: Mesh\nmetadata: {name: x, labels: {a: [1]}}\n");
    assert_eq!(path, "metadata.labels.a");
}

#[test]
fn unknown_resource_type_is_reported_in_both_forms() {
    assert_eq!(
        errors("type: MeshTcpRoute\nname: r\n"),
        vec![t("MeshTcpRoute/r", "type", "unknown resource type \"MeshTcpRoute\"")]
    );
    assert_eq!(
        errors("apiVersion: kuma.io/v1alpha1\nkind: Service\nmetadata: {name: s}\n"),
        vec![t("Service/s", "kind", "unknown resource type \"Service\"")]
    );
}

#[test]
fn non_mapping_documents_are_reported_with_their_index() {
    let text = "- a\n- b\n---\njust text\n---\n42\n---\n!tag {type: Mesh, name: m}\n---\ntype: Mesh\nname: ok\n";
    let (config, problems) = check(text);
    let expected: Vec<_> = (1..=4)
        .map(|i| {
            t(
                "",
                "",
                &format!("document {i}: expected a mapping with `type` (universal) or `kind` (Kubernetes)"),
            )
        })
        .collect();
    assert_eq!(common::triples(&problems, Severity::Error), expected);
    assert_eq!(config.ignored.len(), 1);
}

#[test]
fn broken_yaml_is_reported_and_earlier_documents_are_kept() {
    let (config, problems) = check("type: Mesh\nname: m\n---\ntype: [unclosed\n---\ntype: Mesh\nname: after\n");
    let errs = common::triples(&problems, Severity::Error);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!((errs[0].0.as_str(), errs[0].1.as_str()), ("", ""));
    assert!(errs[0].2.starts_with("document 2: invalid YAML: "), "{}", errs[0].2);
    let names: Vec<&str> = config.ignored.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, ["m"]);
}

#[test]
fn broken_yaml_in_first_document_is_one_problem() {
    for text in [
        "a: [\n",
        "key: \"unterminated\n",
        "a: b: c\n",
        "\t- x\n",
        "{a: 1\n",
        "a:\n  - b\n c: d\n",
    ] {
        let errs = errors(text);
        assert_eq!(errs.len(), 1, "{text:?}: {errs:?}");
        assert!(
            errs[0].2.starts_with("document 1: invalid YAML: "),
            "{text:?}: {}",
            errs[0].2
        );
    }
}

#[test]
fn duplicate_yaml_keys_are_rejected() {
    let errs = errors("type: Mesh\nname: a\nname: b\n");
    assert_eq!(errs.len(), 1);
    assert!(errs[0].2.contains("duplicate"), "{}", errs[0].2);
}

#[test]
fn duplicate_resources_are_reported_once_per_extra_copy() {
    let svc = "type: MeshService\nname: s\nspec: {ports: [{port: 80}], selector: {dataplaneTags: {a: b}}}\nstatus: {vips: [{ip: 10.0.0.1}]}\n";
    let text = format!("---\n{svc}---\n{svc}---\n{svc}");
    let errs = errors(&text);
    let dup = t(
        "MeshService/s",
        "name",
        "duplicate resource: MeshService/s in mesh \"default\" is also defined in test.yaml",
    );
    assert_eq!(errs, vec![dup.clone(), dup]);
}

#[test]
fn same_name_in_another_kind_mesh_or_namespace_is_not_a_duplicate() {
    let text = r#"
type: MeshService
name: s
spec: {ports: [{port: 80}], selector: {dataplaneTags: {a: b}}}
status: {vips: [{ip: 10.0.0.1}]}
---
type: MeshService
name: s
mesh: other
spec: {ports: [{port: 80}], selector: {dataplaneTags: {a: b}}}
status: {vips: [{ip: 10.0.0.2}]}
---
apiVersion: kuma.io/v1alpha1
kind: MeshService
metadata: {name: s, namespace: ns}
spec: {ports: [{port: 80}], selector: {dataplaneTags: {a: b}}}
status: {vips: [{ip: 10.0.0.3}]}
---
type: Dataplane
name: s
networking: {address: 10.1.0.1}
---
type: Mesh
name: s
"#;
    assert!(errors(text).is_empty());
}

#[test]
fn kubernetes_and_universal_copies_of_one_resource_are_duplicates() {
    let text = "type: Mesh\nname: m\n---\napiVersion: kuma.io/v1alpha1\nkind: Mesh\nmetadata: {name: m}\n";
    assert_eq!(
        errors(text),
        vec![t(
            "Mesh/m",
            "name",
            "duplicate resource: Mesh/m in mesh \"default\" is also defined in test.yaml"
        )]
    );
}

// ---------------------------------------------------------------- validation

fn route_with_to(to: &str) -> String {
    format!("type: MeshTCPRoute\nname: r\nspec:\n  targetRef: {{kind: Mesh}}\n  to: {to}\n")
}

#[test]
fn missing_to_is_a_warning_and_empty_to_an_error() {
    let none = "no `to` entries: this policy has no effect";
    assert_eq!(
        check("type: MeshTCPRoute\nname: r\nspec: {targetRef: {kind: Mesh}}\n").1,
        vec![Problem {
            severity: Severity::Warning,
            file: PathBuf::from(FILE),
            resource: "MeshTCPRoute/r".into(),
            path: "spec.to".into(),
            message: none.into(),
        }]
    );
    assert_eq!(warnings(&route_with_to("null")), vec![t("MeshTCPRoute/r", "spec.to", none)]);
    assert!(errors(&route_with_to("null")).is_empty());
    assert_eq!(
        errors(&route_with_to("[]")),
        vec![t("MeshTCPRoute/r", "spec.to", "must have at least one element")]
    );
    assert!(warnings(&route_with_to("[]")).is_empty());
}

#[test]
fn missing_top_level_target_ref_is_allowed() {
    assert!(
        check("type: MeshTCPRoute\nname: r\nspec:\n  to: [{targetRef: {kind: MeshService, name: a}}]\n")
            .1
            .is_empty()
    );
}

#[test]
fn empty_or_missing_backend_refs_must_be_defined() {
    let path = "spec.to[0].rules[0].default.backendRefs";
    for rules in [
        "[{default: {backendRefs: []}}]",
        "[{default: {}}]",
        "[{default: {backendRefs: null}}]",
    ] {
        let text = route_with_to(&format!(
            "[{{targetRef: {{kind: MeshService, name: a}}, rules: {rules}}}]"
        ));
        assert_eq!(errors(&text), vec![t("MeshTCPRoute/r", path, "must be defined")], "{rules}");
    }
}

#[test]
fn rule_without_default_is_a_load_error() {
    let (_, path, message) = single_error(&route_with_to(
        "[{targetRef: {kind: MeshService, name: a}, rules: [{}]}]",
    ));
    assert_eq!(path, "spec.to[0].rules[0]");
    assert_eq!(message, "missing field `default`");
}

#[test]
fn more_than_one_rule_is_rejected() {
    let text = route_with_to(
        "[{targetRef: {kind: MeshService, name: a}, rules: [{default: {backendRefs: [{kind: MeshService, name: b}]}}, {default: {backendRefs: [{kind: MeshService, name: c}]}}]}]",
    );
    assert_eq!(
        errors(&text),
        vec![t("MeshTCPRoute/r", "spec.to[0].rules", "must have at most one element")]
    );
}

#[test]
fn empty_rules_list_means_the_destination_itself() {
    assert!(check(&route_with_to("[{targetRef: {kind: MeshService, name: a}, rules: []}]")).1.is_empty());
}

#[test]
fn unknown_ref_kind_is_a_load_error_at_its_path() {
    let (_, path, message) = single_error(&backend_refs_doc("[{kind: meshservice, name: b}]"));
    assert_eq!(path, "spec.to[0].rules[0].default.backendRefs[0].kind");
    assert!(message.starts_with("unknown variant `meshservice`"), "{message}");
}

#[test]
fn weights_and_their_sum_must_fit_32_bits() {
    let max = u32::MAX;
    let refs = "spec.to[0].rules[0].default.backendRefs";
    assert!(
        errors(&backend_refs_doc(&format!(
            "[{{kind: MeshService, name: b, weight: {max}}}, {{kind: MeshService, name: c, weight: 0}}]"
        )))
        .is_empty()
    );
    assert_eq!(
        errors(&backend_refs_doc(&format!(
            "[{{kind: MeshService, name: b, weight: {max}}}, {{kind: MeshService, name: c}}]"
        ))),
        vec![t(
            "MeshTCPRoute/r",
            refs,
            &format!("sum of weights {} exceeds {max}", u64::from(max) + 1)
        )]
    );
    // Each weight out of range is reported; the sum then is not.
    assert_eq!(
        errors(&backend_refs_doc(&format!(
            "[{{kind: MeshService, name: b, weight: {}}}, {{kind: MeshService, name: c, weight: {}}}]",
            u64::MAX,
            u64::from(max) + 1
        ))),
        vec![
            t(
                "MeshTCPRoute/r",
                &format!("{refs}[0].weight"),
                "must be in inclusive range [0, 4294967295]"
            ),
            t(
                "MeshTCPRoute/r",
                &format!("{refs}[1].weight"),
                "must be in inclusive range [0, 4294967295]"
            ),
        ]
    );
}

// ------------------------------------------------ validation conformance table
//
// Kuma 2.13's validators (MeshTCPRoute, MeshHTTPRoute targets, `mesh.ValidateTargetRef`,
// MeshExternalService, MeshMultiZoneService, Dataplane), the schema rules this
// project enforces, and this project's own warnings: each input gives exactly
// the listed problems (path, message, severity), in order.

/// One expected problem: (path, message, severity).
type Expect = (String, String, Severity);

fn e(path: &str, message: &str) -> Expect {
    (path.to_string(), message.to_string(), Severity::Error)
}

fn w(path: &str, message: &str) -> Expect {
    (path.to_string(), message.to_string(), Severity::Warning)
}

/// A universal MeshTCPRoute with a flow-style `spec`.
fn tcp(spec: &str) -> String {
    format!("type: MeshTCPRoute\nname: r\nmesh: mesh-1\nspec: {spec}\n")
}

/// A Kubernetes MeshTCPRoute with flow-style metadata `labels` and `spec`.
fn tcp_k8s(labels: &str, spec: &str) -> String {
    format!(
        "apiVersion: kuma.io/v1alpha1\nkind: MeshTCPRoute\nmetadata: {{name: r, namespace: kuma-demo, labels: {labels}}}\nspec: {spec}\n"
    )
}

/// A universal MeshHTTPRoute with a flow-style `spec`.
fn http(spec: &str) -> String {
    format!("type: MeshHTTPRoute\nname: h\nspec: {spec}\n")
}

/// `spec` with a top-level targetRef and one `to` item for MeshService `backend`.
fn top(target: &str) -> String {
    format!("{{targetRef: {target}, to: [{{targetRef: {{kind: MeshService, name: backend}}}}]}}")
}

/// `spec` with top-level Mesh and one `to` item with this targetRef.
fn to_target(target: &str) -> String {
    format!("{{targetRef: {{kind: Mesh}}, to: [{{targetRef: {target}}}]}}")
}

/// `spec` with top-level Mesh and one rule with these backendRefs for MeshService `backend`.
fn backends(refs: &str) -> String {
    format!(
        "{{targetRef: {{kind: Mesh}}, to: [{{targetRef: {{kind: MeshService, name: backend}}, rules: [{{default: {{backendRefs: {refs}}}}}]}}]}}"
    )
}

fn deprecated(kind: &str) -> Expect {
    w(
        "spec.targetRef.kind",
        &format!("{kind} value for 'targetRef.kind' is deprecated, use Dataplane with labels instead"),
    )
}

fn gateway_warning() -> Expect {
    w(
        "spec.targetRef.kind",
        "MeshGateway policies configure builtin gateways; redirector runs no gateway, so this policy has no effect here",
    )
}

const NAME_CHARSET: &str =
    "invalid characters: must consist of lower case alphanumeric characters, '-', '.' and '_'.";
const BACKEND0: &str = "spec.to[0].rules[0].default.backendRefs[0]";
const NO_TARGET_PORT: &str = "not set: Kuma matches no Dataplane inbound to this port, so it has no endpoints";
const PORT_RANGE: &str = "port must be in the range [1, 65535]";

fn conformance_cases() -> Vec<(&'static str, String, Vec<Expect>)> {
    let b = |field: &str| format!("{BACKEND0}.{field}");
    vec![
        // ---- MeshTCPRoute: spec.to (schema) and the top-level default
        ("valid: no top-level targetRef means Mesh", tcp("{to: [{targetRef: {kind: MeshService, name: a}}]}"), vec![]),
        ("to absent", tcp("{targetRef: {kind: Mesh}}"), vec![w("spec.to", "no `to` entries: this policy has no effect")]),
        ("to empty", tcp("{to: []}"), vec![e("spec.to", "must have at least one element")]),
        // ---- top-level targetRef
        ("top kind missing", tcp(&top("{name: frontend}")), vec![e("spec.targetRef.kind", "must be defined")]),
        ("top Mesh with name", tcp(&top("{kind: Mesh, name: x}")), vec![e("spec.targetRef.name", "using name with kind Mesh is not yet supported")]),
        (
            "top Mesh with every forbidden field",
            tcp(&top("{kind: Mesh, mesh: m, tags: {a: b}, labels: {a: b}, namespace: ns, sectionName: http}")),
            vec![
                e("spec.targetRef.mesh", "must not be set with kind Mesh"),
                e("spec.targetRef.tags", "must not be set with kind Mesh"),
                e("spec.targetRef.labels", "must not be set with kind Mesh"),
                e("spec.targetRef.namespace", "must not be set with kind Mesh"),
                e("spec.targetRef.sectionName", "must not be set with kind Mesh"),
            ],
        ),
        ("top Mesh with empty tags and labels (unset)", tcp(&top("{kind: Mesh, tags: {}, labels: {}}")), vec![]),
        ("top Mesh proxyTypes empty", tcp(&top("{kind: Mesh, proxyTypes: []}")), vec![e("spec.targetRef.proxyTypes", "must be undefined or have at least one element")]),
        ("top Mesh proxyTypes Sidecar and Gateway", tcp(&top("{kind: Mesh, proxyTypes: [Sidecar, Gateway]}")), vec![]),
        ("top Mesh proxyTypes unknown value", tcp(&top("{kind: Mesh, proxyTypes: [Ingress]}")), vec![e("spec.targetRef.proxyTypes[0]", "value 'Ingress' is not supported: must be one of: Sidecar, Gateway")]),
        ("top MeshSubset: deprecated", tcp(&top("{kind: MeshSubset, tags: {app: frontend}}")), vec![deprecated("MeshSubset")]),
        ("top MeshSubset without tags", tcp(&top("{kind: MeshSubset}")), vec![deprecated("MeshSubset")]),
        (
            "top MeshSubset with forbidden fields",
            tcp(&top("{kind: MeshSubset, name: x, labels: {a: b}, namespace: ns, sectionName: s, proxyTypes: []}")),
            vec![
                e("spec.targetRef.name", "must not be set with kind MeshSubset"),
                e("spec.targetRef.labels", "must not be set with kind MeshSubset"),
                e("spec.targetRef.namespace", "must not be set with kind MeshSubset"),
                e("spec.targetRef.sectionName", "must not be set with kind MeshSubset"),
                e("spec.targetRef.proxyTypes", "must be undefined or have at least one element"),
                deprecated("MeshSubset"),
            ],
        ),
        (
            "top MeshSubset with invalid tags",
            tcp(&top("{kind: MeshSubset, tags: {'': x, 'a b': v, k: '', v: a/b, w: '*'}}")),
            vec![
                e("spec.targetRef.tags", "tag name must be non-empty"),
                e("spec.targetRef.tags[\"a b\"]", "tag name must consist of alphanumeric characters, dots, dashes, slashes and underscores"),
                e("spec.targetRef.tags[\"k\"]", "tag value must be non-empty"),
                e("spec.targetRef.tags[\"v\"]", "tag value must consist of alphanumeric characters, dots, dashes and underscores"),
                e("spec.targetRef.tags[\"w\"]", "tag value must consist of alphanumeric characters, dots, dashes and underscores"),
                deprecated("MeshSubset"),
            ],
        ),
        ("top MeshService: legacy name, deprecated", tcp(&top("{kind: MeshService, name: frontend_kuma-demo_svc_8080}")), vec![deprecated("MeshService")]),
        ("top MeshService by labels with sectionName", tcp(&top("{kind: MeshService, labels: {app: web}, sectionName: http}")), vec![deprecated("MeshService")]),
        ("top MeshService name charset", tcp(&top("{kind: MeshService, name: Frontend}")), vec![e("spec.targetRef.name", NAME_CHARSET), deprecated("MeshService")]),
        ("top MeshService without name or labels", tcp(&top("{kind: MeshService, namespace: ns}")), vec![e("spec.targetRef.name", "must be set with kind MeshService"), deprecated("MeshService")]),
        (
            "top MeshService labels with name",
            tcp(&top("{kind: MeshService, name: web, labels: {app: web}}")),
            vec![e("spec.targetRef.labels", "either labels or name and namespace must be specified"), deprecated("MeshService")],
        ),
        (
            "top MeshService with mesh, tags and proxyTypes",
            tcp(&top("{kind: MeshService, name: web, mesh: m, tags: {a: b}, proxyTypes: [Sidecar]}")),
            vec![
                e("spec.targetRef.mesh", "must not be set with kind MeshService"),
                e("spec.targetRef.tags", "must not be set with kind MeshService"),
                e("spec.targetRef.proxyTypes", "must not be set with kind MeshService"),
                deprecated("MeshService"),
            ],
        ),
        ("top MeshServiceSubset with wildcard tag", tcp(&top("{kind: MeshServiceSubset, name: web, tags: {version: '*', zone: a/b}}")), vec![deprecated("MeshServiceSubset")]),
        ("top MeshServiceSubset without tags", tcp(&top("{kind: MeshServiceSubset, name: web}")), vec![deprecated("MeshServiceSubset")]),
        (
            "top MeshServiceSubset without name",
            tcp(&top("{kind: MeshServiceSubset, tags: {version: v1}}")),
            vec![e("spec.targetRef.name", "must be set with kind MeshServiceSubset"), deprecated("MeshServiceSubset")],
        ),
        (
            "top MeshServiceSubset with forbidden fields and a bad selector value",
            tcp(&top("{kind: MeshServiceSubset, name: Web, tags: {v: 'a b'}, labels: {a: b}, namespace: ns, sectionName: s, proxyTypes: [Sidecar]}")),
            vec![
                e("spec.targetRef.name", NAME_CHARSET),
                e("spec.targetRef.proxyTypes", "must not be set with kind MeshServiceSubset"),
                e("spec.targetRef.tags[\"v\"]", "tag value must consist of alphanumeric characters, dots, dashes, slashes and underscores or be \"*\""),
                e("spec.targetRef.labels", "must not be set with kind MeshServiceSubset"),
                e("spec.targetRef.namespace", "must not be set with kind MeshServiceSubset"),
                e("spec.targetRef.sectionName", "must not be set with kind MeshServiceSubset"),
                deprecated("MeshServiceSubset"),
            ],
        ),
        ("top Dataplane by labels", tcp(&top("{kind: Dataplane, labels: {app: frontend}}")), vec![]),
        ("top Dataplane by name and namespace", tcp(&top("{kind: Dataplane, name: web-1, namespace: kuma-demo}")), vec![]),
        ("top Dataplane with nothing selects every proxy", tcp(&top("{kind: Dataplane}")), vec![]),
        ("top Dataplane labels with namespace", tcp(&top("{kind: Dataplane, namespace: ns, labels: {app: a}}")), vec![e("spec.targetRef.labels", "either labels or name and namespace must be specified")]),
        ("top Dataplane sectionName", tcp(&top("{kind: Dataplane, name: web-1, sectionName: http}")), vec![e("spec.targetRef.sectionName", "can only be used with inbound policies")]),
        (
            "top Dataplane with tags, mesh and proxyTypes",
            tcp(&top("{kind: Dataplane, tags: {a: b}, mesh: m, proxyTypes: [Sidecar]}")),
            vec![
                e("spec.targetRef.tags", "must not be set with kind Dataplane"),
                e("spec.targetRef.mesh", "must not be set with kind Dataplane"),
                e("spec.targetRef.proxyTypes", "must not be set with kind Dataplane"),
            ],
        ),
        ("top MeshHTTPRoute", tcp(&top("{kind: MeshHTTPRoute, name: h}")), vec![e("spec.targetRef.kind", "value 'MeshHTTPRoute' is not supported")]),
        ("top MeshExternalService", tcp(&top("{kind: MeshExternalService, name: x}")), vec![e("spec.targetRef.kind", "value 'MeshExternalService' is not supported")]),
        ("top MeshMultiZoneService", tcp(&top("{kind: MeshMultiZoneService, name: x}")), vec![e("spec.targetRef.kind", "value 'MeshMultiZoneService' is not supported")]),
        // ---- MeshGateway and the policy role
        (
            "Kuma valid: MeshGateway with listener tags (universal = system role)",
            tcp("{targetRef: {kind: MeshGateway, name: edge, tags: {port: '6000'}}, to: [{targetRef: {kind: Mesh}, rules: [{default: {backendRefs: [{kind: MeshService, name: other}]}}]}]}"),
            vec![gateway_warning()],
        ),
        (
            "MeshGateway on Kubernetes without a role label is system",
            tcp_k8s("{kuma.io/mesh: default}", "{targetRef: {kind: MeshGateway, name: edge}, to: [{targetRef: {kind: Mesh}}]}"),
            vec![gateway_warning()],
        ),
        (
            "MeshGateway on Kubernetes with role system",
            tcp_k8s("{kuma.io/policy-role: system}", "{targetRef: {kind: MeshGateway, name: edge, tags: {port: '80'}}, to: [{targetRef: {kind: Mesh}}]}"),
            vec![gateway_warning()],
        ),
        (
            "MeshGateway on Kubernetes with role consumer",
            tcp_k8s("{kuma.io/policy-role: consumer}", "{targetRef: {kind: MeshGateway, name: edge}, to: [{targetRef: {kind: Mesh}}]}"),
            vec![e("spec.targetRef.kind", "value 'MeshGateway' is not supported")],
        ),
        (
            "Dataplane on Kubernetes with role workload-owner",
            tcp_k8s("{kuma.io/policy-role: workload-owner}", &top("{kind: Dataplane, labels: {app: web}}")),
            vec![],
        ),
        (
            "MeshGateway without name",
            tcp("{targetRef: {kind: MeshGateway}, to: [{targetRef: {kind: Mesh}}]}"),
            vec![e("spec.targetRef.name", "must be set with kind MeshGateway"), gateway_warning()],
        ),
        (
            "Kuma error: MeshGateway top-level, to MeshService",
            tcp("{targetRef: {kind: MeshGateway, name: edge}, to: [{targetRef: {kind: MeshService, name: backend}}]}"),
            vec![gateway_warning(), e("spec.to[0].targetRef.kind", "value 'MeshService' is not supported")],
        ),
        (
            "MeshGateway top-level, to Mesh with name",
            tcp("{targetRef: {kind: MeshGateway, name: edge}, to: [{targetRef: {kind: Mesh, name: x}}]}"),
            vec![gateway_warning(), e("spec.to[0].targetRef.name", "using name with kind Mesh is not yet supported")],
        ),
        // ---- to[].targetRef
        ("to kind missing", tcp(&to_target("{name: a}")), vec![e("spec.to[0].targetRef.kind", "must be defined")]),
        (
            "Kuma error: MeshService top-level, to Mesh",
            tcp("{targetRef: {kind: MeshService, name: frontend}, to: [{targetRef: {kind: Mesh}}]}"),
            vec![deprecated("MeshService"), e("spec.to[0].targetRef.kind", "value 'Mesh' is not supported")],
        ),
        ("to Mesh without top-level targetRef", tcp("{to: [{targetRef: {kind: Mesh}}]}"), vec![e("spec.to[0].targetRef.kind", "value 'Mesh' is not supported")]),
        ("to Dataplane", tcp(&to_target("{kind: Dataplane, name: a}")), vec![e("spec.to[0].targetRef.kind", "value 'Dataplane' is not supported")]),
        ("to MeshSubset", tcp(&to_target("{kind: MeshSubset, tags: {a: b}}")), vec![e("spec.to[0].targetRef.kind", "value 'MeshSubset' is not supported")]),
        ("to MeshServiceSubset", tcp(&to_target("{kind: MeshServiceSubset, name: a}")), vec![e("spec.to[0].targetRef.kind", "value 'MeshServiceSubset' is not supported")]),
        ("to MeshGateway", tcp(&to_target("{kind: MeshGateway, name: a}")), vec![e("spec.to[0].targetRef.kind", "value 'MeshGateway' is not supported")]),
        ("to MeshHTTPRoute", tcp(&to_target("{kind: MeshHTTPRoute, name: a}")), vec![e("spec.to[0].targetRef.kind", "value 'MeshHTTPRoute' is not supported")]),
        ("to MeshService with namespace and sectionName", tcp(&to_target("{kind: MeshService, name: a, namespace: ns, sectionName: http}")), vec![]),
        ("to MeshService by labels with sectionName", tcp(&to_target("{kind: MeshService, labels: {app: a}, sectionName: '8080'}")), vec![]),
        ("to MeshService without name", tcp(&to_target("{kind: MeshService}")), vec![e("spec.to[0].targetRef.name", "must be set with kind MeshService")]),
        ("to MeshService empty name", tcp(&to_target("{kind: MeshService, name: ''}")), vec![e("spec.to[0].targetRef.name", "must be set with kind MeshService")]),
        ("to MeshService name charset", tcp(&to_target("{kind: MeshService, name: api/v1}")), vec![e("spec.to[0].targetRef.name", NAME_CHARSET)]),
        (
            "to MeshService labels with namespace",
            tcp(&to_target("{kind: MeshService, namespace: ns, labels: {app: a}}")),
            vec![e("spec.to[0].targetRef.labels", "either labels or name and namespace must be specified")],
        ),
        (
            "to MeshService with tags and no name",
            tcp(&to_target("{kind: MeshService, tags: {v: '1'}}")),
            vec![
                e("spec.to[0].targetRef.tags", "must not be set with kind MeshService"),
                e("spec.to[0].targetRef.name", "must be set with kind MeshService"),
            ],
        ),
        ("to MeshExternalService", tcp(&to_target("{kind: MeshExternalService, name: httpbin}")), vec![]),
        ("to MeshExternalService by labels", tcp(&to_target("{kind: MeshExternalService, labels: {team: x}}")), vec![]),
        ("to MeshExternalService without name", tcp(&to_target("{kind: MeshExternalService}")), vec![e("spec.to[0].targetRef.name", "must be set with kind MeshExternalService")]),
        (
            "to MeshExternalService labels with name, and sectionName",
            tcp(&to_target("{kind: MeshExternalService, name: x, labels: {a: b}, sectionName: s}")),
            vec![
                e("spec.to[0].targetRef.labels", "either labels or name must be specified"),
                e("spec.to[0].targetRef.sectionName", "must not be set with kind MeshExternalService"),
            ],
        ),
        (
            "to MeshMultiZoneService: no field is checked",
            tcp(&to_target("{kind: MeshMultiZoneService, name: Other, labels: {a: b}, tags: {c: d}, sectionName: '8080'}")),
            vec![],
        ),
        (
            "errors in several to items",
            tcp("{to: [{targetRef: {kind: MeshService, name: a}}, {targetRef: {kind: Mesh}}, {targetRef: {kind: MeshService}}]}"),
            vec![
                e("spec.to[1].targetRef.kind", "value 'Mesh' is not supported"),
                e("spec.to[2].targetRef.name", "must be set with kind MeshService"),
            ],
        ),
        // ---- rules
        ("Kuma valid: to without rules (MeshService top-level)", tcp("{targetRef: {kind: MeshService, name: frontend}, to: [{targetRef: {kind: MeshService, name: backend}}]}"), vec![deprecated("MeshService")]),
        (
            "Kuma valid: to with rules (MeshService top-level)",
            tcp("{targetRef: {kind: MeshService, name: frontend}, to: [{targetRef: {kind: MeshService, name: backend}, rules: [{default: {backendRefs: [{kind: MeshService, name: other}]}}]}]}"),
            vec![deprecated("MeshService")],
        ),
        ("rules empty", tcp("{to: [{targetRef: {kind: MeshService, name: a}, rules: []}]}"), vec![]),
        (
            "two rules",
            tcp("{to: [{targetRef: {kind: MeshService, name: a}, rules: [{default: {backendRefs: [{kind: MeshService, name: b}]}}, {default: {backendRefs: []}}]}]}"),
            vec![
                e("spec.to[0].rules", "must have at most one element"),
                e("spec.to[0].rules[1].default.backendRefs", "must be defined"),
            ],
        ),
        ("backendRefs empty", tcp(&backends("[]")), vec![e("spec.to[0].rules[0].default.backendRefs", "must be defined")]),
        ("backendRefs missing", tcp("{to: [{targetRef: {kind: MeshService, name: a}, rules: [{default: {}}]}]}"), vec![e("spec.to[0].rules[0].default.backendRefs", "must be defined")]),
        // ---- backendRefs
        (
            "Kuma error: MeshServiceSubset backendRef without name",
            tcp("{targetRef: {kind: MeshService, name: frontend}, to: [{targetRef: {kind: MeshService, name: backend}, rules: [{default: {backendRefs: [{kind: MeshServiceSubset, tags: {version: v1}}]}}]}]}"),
            vec![deprecated("MeshService"), e(&b("name"), "must be set with kind MeshServiceSubset")],
        ),
        (
            "Kuma error: MeshMultiZoneService backendRef without port",
            tcp("{targetRef: {kind: MeshService, name: frontend}, to: [{targetRef: {kind: MeshService, name: backend}, rules: [{default: {backendRefs: [{kind: MeshMultiZoneService, name: test-server}]}}]}]}"),
            vec![deprecated("MeshService"), e(&b("port"), "must be defined with kind MeshMultiZoneService")],
        ),
        (
            "Kuma valid: MeshService and MeshMultiZoneService",
            tcp("{targetRef: {kind: Mesh}, to: [{targetRef: {kind: MeshService, name: backend, sectionName: '8080'}, rules: [{default: {backendRefs: [{kind: MeshMultiZoneService, name: other, port: 8080}]}}]}, {targetRef: {kind: MeshMultiZoneService, name: other, sectionName: '8080'}, rules: [{default: {backendRefs: [{kind: MeshService, name: backend, port: 8080}]}}]}]}"),
            vec![],
        ),
        ("backendRef MeshServiceSubset with tags", tcp(&backends("[{kind: MeshServiceSubset, name: backend, tags: {version: v1}, weight: 90}, {kind: MeshServiceSubset, name: backend, tags: {version: '*'}, weight: 10}]")), vec![]),
        ("backendRef MeshServiceSubset bad tag value", tcp(&backends("[{kind: MeshServiceSubset, name: backend, tags: {version: 'v 1'}}]")), vec![e(&format!("{BACKEND0}.tags[\"version\"]"), "tag value must consist of alphanumeric characters, dots, dashes, slashes and underscores or be \"*\"")]),
        ("backendRef MeshExternalService", tcp(&backends("[{kind: MeshExternalService, name: httpbin}]")), vec![]),
        ("backendRef MeshExternalService with sectionName", tcp(&backends("[{kind: MeshExternalService, name: httpbin, sectionName: s}]")), vec![e(&b("sectionName"), "must not be set with kind MeshExternalService")]),
        ("backendRef MeshService by labels with port", tcp(&backends("[{kind: MeshService, labels: {app: b}, port: 80}]")), vec![]),
        ("backendRef MeshService with sectionName", tcp(&backends("[{kind: MeshService, name: b, namespace: ns, sectionName: http}]")), vec![]),
        ("backendRef kind missing", tcp(&backends("[{name: b}]")), vec![e(&b("kind"), "must be defined")]),
        ("backendRef Mesh", tcp(&backends("[{kind: Mesh}]")), vec![e(&b("kind"), "value 'Mesh' is not supported")]),
        ("backendRef MeshSubset", tcp(&backends("[{kind: MeshSubset, tags: {a: b}}]")), vec![e(&b("kind"), "value 'MeshSubset' is not supported")]),
        ("backendRef Dataplane", tcp(&backends("[{kind: Dataplane, name: b}]")), vec![e(&b("kind"), "value 'Dataplane' is not supported")]),
        ("backendRef MeshGateway", tcp(&backends("[{kind: MeshGateway, name: b}]")), vec![e(&b("kind"), "value 'MeshGateway' is not supported")]),
        ("backendRef MeshHTTPRoute", tcp(&backends("[{kind: MeshHTTPRoute, name: b}]")), vec![e(&b("kind"), "value 'MeshHTTPRoute' is not supported")]),
        (
            "backendRef MeshService with mesh, tags and proxyTypes",
            tcp(&backends("[{kind: MeshService, name: b, mesh: m, tags: {a: b}, proxyTypes: [Sidecar]}]")),
            vec![
                e(&b("mesh"), "must not be set with kind MeshService"),
                e(&b("tags"), "must not be set with kind MeshService"),
                e(&b("proxyTypes"), "must not be set with kind MeshService"),
            ],
        ),
        ("backendRef without name or kind", tcp(&backends("[{weight: 1}]")), vec![e(&b("kind"), "must be defined")]),
        ("backendRef MeshService without name", tcp(&backends("[{kind: MeshService, port: 80}]")), vec![e(&b("name"), "must be set with kind MeshService")]),
        ("backendRef weight 0", tcp(&backends("[{kind: MeshService, name: b, weight: 0}]")), vec![]),
        ("backendRef weight above 32 bits", tcp(&backends("[{kind: MeshService, name: b, weight: 4294967296}]")), vec![e(&b("weight"), "must be in inclusive range [0, 4294967295]")]),
        (
            "sum of weights above 32 bits",
            tcp(&backends("[{kind: MeshService, name: b, weight: 4294967295}, {kind: MeshService, name: c}]")),
            vec![e("spec.to[0].rules[0].default.backendRefs", "sum of weights 4294967296 exceeds 4294967295")],
        ),
        (
            "documentation _version hint",
            tcp(&backends("[{kind: MeshService, name: b, port: 80, _version: v1}]")),
            vec![w(&b("_version"), "documentation-generator hint; it selects nothing (split with separate MeshServices)")],
        ),
        // ---- MeshHTTPRoute (targets only)
        ("MeshHTTPRoute valid", http("{targetRef: {kind: Dataplane, labels: {app: web}}, to: [{targetRef: {kind: MeshService, name: api, sectionName: http}}]}"), vec![]),
        ("MeshHTTPRoute without targetRef or to", http("{}"), vec![]),
        ("MeshHTTPRoute top MeshSubset: deprecated", http("{targetRef: {kind: MeshSubset, tags: {app: web}}, to: [{targetRef: {kind: MeshService, name: api}}]}"), vec![deprecated("MeshSubset")]),
        ("MeshHTTPRoute top MeshHTTPRoute", http("{targetRef: {kind: MeshHTTPRoute, name: x}}"), vec![e("spec.targetRef.kind", "value 'MeshHTTPRoute' is not supported")]),
        ("MeshHTTPRoute to Mesh", http("{to: [{targetRef: {kind: Mesh}}]}"), vec![e("spec.to[0].targetRef.kind", "value 'Mesh' is not supported")]),
        ("MeshHTTPRoute to MeshMultiZoneService and MeshExternalService", http("{to: [{targetRef: {kind: MeshMultiZoneService, name: m}}, {targetRef: {kind: MeshExternalService, name: x}}]}"), vec![]),
        (
            "MeshHTTPRoute top MeshGateway: to must be Mesh",
            http("{targetRef: {kind: MeshGateway, name: edge}, to: [{targetRef: {kind: Mesh}}, {targetRef: {kind: MeshService, name: api}}]}"),
            vec![gateway_warning(), e("spec.to[1].targetRef.kind", "value 'MeshService' is not supported")],
        ),
        (
            "MeshHTTPRoute Kubernetes consumer role: no MeshGateway",
            "apiVersion: kuma.io/v1alpha1\nkind: MeshHTTPRoute\nmetadata: {name: h, namespace: ns, labels: {kuma.io/policy-role: consumer}}\nspec: {targetRef: {kind: MeshGateway, name: edge}}\n".to_string(),
            vec![e("spec.targetRef.kind", "value 'MeshGateway' is not supported")],
        ),
        // ---- MeshService
        (
            "MeshService valid",
            "type: MeshService\nname: s\nspec: {selector: {dataplaneTags: {app: s}}, ports: [{port: 80, targetPort: 8080, name: http}, {port: 81, targetPort: admin}]}\nstatus: {vips: [{ip: 10.0.0.1}]}\n".to_string(),
            vec![],
        ),
        (
            "MeshService by dataplaneRef, a port without targetPort",
            "type: MeshService\nname: s\nspec: {selector: {dataplaneRef: {name: dp-1}}, ports: [{port: 80}]}\nstatus: {vips: [{ip: 10.0.0.1}]}\n".to_string(),
            vec![w("spec.ports[0].targetPort", NO_TARGET_PORT)],
        ),
        (
            "MeshService port errors",
            "type: MeshService\nname: s\nspec: {selector: {dataplaneTags: {app: s}}, ports: [{port: 0, targetPort: 1}, {port: 80, name: web, targetPort: 80}, {port: 80, name: web, targetPort: 0}]}\nstatus: {vips: [{ip: 10.0.0.1}]}\n".to_string(),
            vec![
                e("spec.ports[0].port", "must be in 1..65535"),
                e("spec.ports[2].port", "port 80 is listed twice"),
                e("spec.ports[2].name", "name \"web\" is listed twice"),
                e("spec.ports[2].targetPort", "must be in 1..65535"),
            ],
        ),
        (
            "MeshService without ports, selector or vips",
            "type: MeshService\nname: s\nspec: {}\n".to_string(),
            vec![
                w("spec.ports", "no ports: the service cannot be dialled"),
                w("spec.selector.dataplaneTags", "not set: the service has no endpoints here"),
                w("status.vips", "no addresses: connections to this service cannot be redirected"),
            ],
        ),
        (
            "MeshService dataplaneRef without name",
            "type: MeshService\nname: s\nspec: {selector: {dataplaneRef: {}}, ports: [{port: 80, targetPort: 80}]}\nstatus: {vips: [{ip: 10.0.0.1}]}\n".to_string(),
            vec![w("spec.selector.dataplaneRef.name", "not set: the service has no endpoints here")],
        ),
        (
            "MeshService display name longer than 63",
            format!(
                "type: MeshService\nname: s\nlabels: {{kuma.io/display-name: {}}}\nspec: {{selector: {{dataplaneTags: {{app: s}}}}, ports: [{{port: 80, targetPort: 80}}]}}\nstatus: {{vips: [{{ip: 10.0.0.1}}]}}\n",
                "a".repeat(64)
            ),
            vec![e("name", "must not be longer than 63 characters")],
        ),
        // ---- MeshExternalService
        (
            "MeshExternalService valid with an IP and a hostname",
            "type: MeshExternalService\nname: x\nspec: {match: {type: HostnameGenerator, port: 443, protocol: tcp}, endpoints: [{address: 192.168.0.7, port: 8007}, {address: httpbin.org, port: 443}], tls: {enabled: true}}\nstatus: {vip: {ip: 242.0.0.1}}\n".to_string(),
            vec![],
        ),
        (
            "MeshExternalService without match or vip",
            "type: MeshExternalService\nname: x\nspec: {endpoints: [{address: example.com, port: 80}]}\n".to_string(),
            vec![
                w("spec.match", "not set: the service cannot be dialled"),
                w("status.vip", "not set: the service cannot be dialled"),
            ],
        ),
        (
            "MeshExternalService match errors",
            "type: MeshExternalService\nname: x\nspec: {match: {type: Other, port: 0, protocol: kafka}, endpoints: [{address: example.com, port: 80}]}\nstatus: {vip: {ip: 242.0.0.1}}\n".to_string(),
            vec![
                e("spec.match.type", "unrecognized type 'Other' - only 'HostnameGenerator' is supported"),
                e("spec.match.port", "port must be a valid (1-65535)"),
                e("spec.match.protocol", "\"protocol\" must be one of [\"tcp\", \"grpc\", \"http\", \"http2\"]"),
            ],
        ),
        (
            "MeshExternalService without endpoints",
            "type: MeshExternalService\nname: x\nspec: {match: {port: 80}}\nstatus: {vip: {ip: 242.0.0.1}}\n".to_string(),
            vec![e("spec.endpoints", "must be defined")],
        ),
        (
            "MeshExternalService empty endpoints",
            "type: MeshExternalService\nname: x\nspec: {match: {port: 80}, endpoints: []}\nstatus: {vip: {ip: 242.0.0.1}}\n".to_string(),
            vec![e("spec.endpoints", "must be defined")],
        ),
        (
            "MeshExternalService endpoint errors",
            "type: MeshExternalService\nname: x\nspec: {match: {port: 80}, endpoints: [{address: 10.0.0.1, port: 0}, {address: '', port: 80}, {address: 'not a host', port: 0}, {address: db.internal, port: 0}]}\nstatus: {vip: {ip: 242.0.0.1}}\n".to_string(),
            vec![
                e("spec.endpoints[0].port", "port must be a valid (1-65535)"),
                e("spec.endpoints[1].address", "address has to be a valid IP or hostname"),
                e("spec.endpoints[2].address", "address has to be a valid IP or hostname"),
                e("spec.endpoints[3].port", "port must be a valid (1-65535)"),
            ],
        ),
        // ---- MeshMultiZoneService
        (
            "MeshMultiZoneService valid",
            "type: MeshMultiZoneService\nname: m\nspec: {selector: {meshService: {matchLabels: {app: a}}}, ports: [{port: 80, appProtocol: http, name: web}]}\nstatus: {vips: [{ip: 243.0.0.1}]}\n".to_string(),
            vec![],
        ),
        (
            "MeshMultiZoneService without selector, ports or vips",
            "type: MeshMultiZoneService\nname: m\nspec: {selector: {meshService: {matchLabels: {}}}}\n".to_string(),
            vec![
                e("spec.selector.meshService.matchLabels", "cannot be empty"),
                e("spec.ports", "cannot be empty"),
                w("status.vips", "no addresses: connections to this service cannot be redirected"),
            ],
        ),
        (
            "MeshMultiZoneService port errors",
            "type: MeshMultiZoneService\nname: m\nspec: {selector: {meshService: {matchLabels: {app: a}}}, ports: [{port: 0, name: '', appProtocol: tls}]}\nstatus: {vips: [{ip: 243.0.0.1}]}\n".to_string(),
            vec![
                e("spec.ports[0].port", "must be in 1..65535"),
                e("spec.ports[0].name", "must not be empty"),
                e("spec.ports[0].appProtocol", "appProtocol must be one of: grpc, http, http2, kafka, tcp"),
            ],
        ),
        // ---- Dataplane
        (
            "Dataplane valid: inbound health and state, legacy and backendRef outbounds",
            "type: Dataplane\nname: d\nnetworking: {address: 10.0.0.1, inbound: [{port: 80, tags: {kuma.io/service: web, kuma.io/protocol: HTTP}, health: {ready: false}, state: NotReady}, {port: 81, state: Ignored}], outbound: [{port: 10001, tags: {kuma.io/service: backend, version: v1}}, {address: 127.0.0.2, port: 10002, backendRef: {kind: MeshService, labels: {app: api}, port: 80}}]}\n".to_string(),
            vec![],
        ),
        (
            "Dataplane inbound errors",
            "type: Dataplane\nname: d\nnetworking: {address: 10.0.0.1, inbound: [{port: 0, servicePort: 0, tags: {app: a/b, kuma.io/protocol: smtp}, state: Down}]}\n".to_string(),
            vec![
                e("networking.inbound[0].port", PORT_RANGE),
                e("networking.inbound[0].servicePort", PORT_RANGE),
                e("networking.inbound[0].tags[\"kuma.io/protocol\"]", "tag \"kuma.io/protocol\" has an invalid value \"smtp\". Allowed values: grpc, http, http2, kafka, tcp"),
                e("networking.inbound[0].tags[\"app\"]", "tag value must consist of alphanumeric characters, dots, dashes and underscores"),
                e("networking.inbound[0].state", "state must be one of: Ready, NotReady, Ignored"),
            ],
        ),
        (
            "Dataplane address missing (reported once) or unspecified",
            "type: Dataplane\nname: d\nnetworking: {inbound: [{port: 80}, {port: 81}]}\n---\ntype: Dataplane\nname: e\nnetworking: {address: '::', inbound: [{port: 80}]}\n".to_string(),
            vec![
                e("networking.address", "must be set (or an address on every inbound)"),
                e("networking.address", "must not be 0.0.0.0 or ::"),
            ],
        ),
        (
            "Dataplane outbound without tags or backendRef",
            "type: Dataplane\nname: d\nnetworking: {address: 10.0.0.1, outbound: [{port: 10001}, {port: 10002, tags: {}}]}\n".to_string(),
            vec![
                e("networking.outbound[0].tags", "mandatory tag \"kuma.io/service\" is missing"),
                e("networking.outbound[1].tags", "mandatory tag \"kuma.io/service\" is missing"),
            ],
        ),
        (
            "Dataplane outbound tags without kuma.io/service",
            "type: Dataplane\nname: d\nnetworking: {address: 10.0.0.1, outbound: [{port: 0, tags: {app: 'x y'}}]}\n".to_string(),
            vec![
                e("networking.outbound[0].port", PORT_RANGE),
                e("networking.outbound[0].tags[\"app\"]", "tag value must consist of alphanumeric characters, dots, dashes and underscores"),
                e("networking.outbound[0].tags", "mandatory tag \"kuma.io/service\" is missing"),
            ],
        ),
        (
            "Dataplane outbound backendRef errors",
            "type: Dataplane\nname: d\nnetworking: {address: 10.0.0.1, outbound: [{port: 10001, backendRef: {kind: MeshExternalService}}, {port: 10002, backendRef: {kind: MeshService, name: api, port: 70000}, tags: {kuma.io/service: api}}]}\n".to_string(),
            vec![
                e("networking.outbound[0].backendRef.kind", "invalid value. Available values are: MeshService"),
                e("networking.outbound[0].backendRef", "either 'name' or 'labels' should be specified"),
                e("networking.outbound[0].backendRef.port", PORT_RANGE),
                e("networking.outbound[1].backendRef.port", PORT_RANGE),
                e("networking.outbound[1].backendRef", "both backendRef and tags/service cannot be defined"),
            ],
        ),
        (
            "Kubernetes Dataplane paths start with spec",
            "apiVersion: kuma.io/v1alpha1\nkind: Dataplane\nmetadata: {name: dp, namespace: ns}\nspec: {networking: {address: 10.0.0.1, inbound: [{port: 0}], outbound: [{port: 80, backendRef: {kind: MeshService, name: a}}]}}\n".to_string(),
            vec![
                e("spec.networking.inbound[0].port", PORT_RANGE),
                e("spec.networking.outbound[0].backendRef.port", PORT_RANGE),
            ],
        ),
    ]
}

#[test]
fn validation_conformance_table() {
    let cases = conformance_cases();
    assert!(cases.len() >= 40, "{} cases", cases.len());
    let mut names = std::collections::HashSet::new();
    let mut failures = Vec::new();
    for (name, yaml, expected) in &cases {
        assert!(names.insert(*name), "duplicate case name {name:?}");
        let (_, problems) = check(yaml);
        let got: Vec<Expect> = problems
            .iter()
            .map(|p| (p.path.clone(), p.message.clone(), p.severity))
            .collect();
        if &got != expected {
            failures.push(format!("{name}\n{yaml}\n  expected: {expected:#?}\n  got:      {got:#?}"));
        }
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n\n"));
}

/// Kuma's "spec.targetRef error" case (kind `BlahBlah`) is rejected when the
/// YAML is read: the path is Kuma's, the message names the known kinds.
#[test]
fn unknown_top_level_kind_is_rejected_at_kumas_path() {
    let (_, problems) = check(&tcp("{targetRef: {kind: BlahBlah, name: frontend}, to: [{targetRef: {kind: MeshService, name: backend}}]}"));
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert_eq!(problems[0].severity, Severity::Error);
    assert_eq!(problems[0].path, "spec.targetRef.kind");
    assert_eq!(
        problems[0].message,
        "unknown variant `BlahBlah`, expected one of `Mesh`, `MeshSubset`, `MeshService`, `MeshServiceSubset`, `MeshExternalService`, `MeshMultiZoneService`, `MeshGateway`, `MeshHTTPRoute`, `Dataplane`"
    );
}

#[test]
fn kubernetes_policy_paths_and_role_label() {
    // The role label decides MeshGateway; a universal resource with the same
    // label is still system.
    let universal = "type: MeshTCPRoute\nname: r\nlabels: {kuma.io/policy-role: consumer}\nspec: {targetRef: {kind: MeshGateway, name: edge}, to: [{targetRef: {kind: Mesh}}]}\n";
    assert!(errors(universal).is_empty());
    let kubernetes = tcp_k8s("{kuma.io/policy-role: producer}", "{targetRef: {kind: MeshGateway, name: edge}, to: [{targetRef: {kind: Mesh}}]}");
    assert_eq!(
        check(&kubernetes).1.iter().map(ToString::to_string).collect::<Vec<_>>(),
        vec!["test.yaml: MeshTCPRoute/r: spec.targetRef.kind: value 'MeshGateway' is not supported"]
    );
}

#[test]
fn service_validation_errors() {
    let text = r#"
type: MeshService
name: s
spec:
  selector: {dataplaneTags: {app: s}}
  ports:
    - {port: 0}
    - {port: 80, name: web}
    - {port: 80, name: web, targetPort: 0}
status: {vips: [{ip: 10.0.0.1}]}
"#;
    assert_eq!(
        errors(text),
        vec![
            t("MeshService/s", "spec.ports[0].port", "must be in 1..65535"),
            t("MeshService/s", "spec.ports[2].port", "port 80 is listed twice"),
            t("MeshService/s", "spec.ports[2].name", "name \"web\" is listed twice"),
            t("MeshService/s", "spec.ports[2].targetPort", "must be in 1..65535"),
        ]
    );
}

#[test]
fn service_without_ports_selector_or_vips_gets_warnings_only() {
    let text = "type: MeshService\nname: s\nspec: {selector: {dataplaneTags: {}}}\n";
    assert!(errors(text).is_empty());
    assert_eq!(
        warnings(text),
        vec![
            t("MeshService/s", "spec.ports", "no ports: the service cannot be dialled"),
            t(
                "MeshService/s",
                "spec.selector.dataplaneTags",
                "not set: the service has no endpoints here"
            ),
            t(
                "MeshService/s",
                "status.vips",
                "no addresses: connections to this service cannot be redirected"
            ),
        ]
    );
}

#[test]
fn dataplane_validation_errors() {
    let text = r#"
type: Dataplane
name: d
networking:
  inbound:
    - {port: 0, address: 10.0.0.1}
    - {port: 80, servicePort: 0, address: 10.0.0.1}
"#;
    assert_eq!(
        errors(text),
        vec![
            t("Dataplane/d", "networking.inbound[0].port", "port must be in the range [1, 65535]"),
            t(
                "Dataplane/d",
                "networking.inbound[1].servicePort",
                "port must be in the range [1, 65535]"
            ),
        ]
    );
    assert_eq!(
        errors("type: Dataplane\nname: d\nnetworking:\n  inbound: [{port: 80}]\n"),
        vec![t(
            "Dataplane/d",
            "networking.address",
            "must be set (or an address on every inbound)"
        )]
    );
    assert!(errors("type: Dataplane\nname: d\nnetworking: {}\n").is_empty());
}

#[test]
fn dataplane_missing_address_is_reported_once() {
    let errs = errors("type: Dataplane\nname: d\nnetworking:\n  inbound: [{port: 80}, {port: 81}]\n");
    assert_eq!(errs.len(), 1, "{errs:#?}");
}

#[test]
fn universal_dataplane_root_error_has_no_dot_path() {
    let (_, problems) = check("type: Dataplane\nname: dp\n");
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].message, "missing field `networking`");
    assert_ne!(problems[0].path, ".");
    assert!(!problems[0].to_string().contains(": .:"), "{}", problems[0]);
}

#[test]
fn kubernetes_dataplane_accepts_top_level_mesh() {
    let text = "apiVersion: kuma.io/v1alpha1\nkind: Dataplane\nmesh: payments\nmetadata: {name: dp, namespace: ns}\nspec:\n  networking:\n    address: 10.244.0.7\n    inbound: [{port: 8080, tags: {app: web}}]\n";
    let (config, problems) = check(text);
    assert!(problems.is_empty(), "{problems:#?}");
    assert_eq!(config.dataplanes[0].origin.mesh, "payments");
}

#[test]
fn kubernetes_dataplane_validation_paths_start_with_spec() {
    let text = "apiVersion: kuma.io/v1alpha1\nkind: Dataplane\nmetadata: {name: dp}\nspec:\n  networking:\n    address: 10.0.0.1\n    inbound: [{port: 0}]\n";
    assert_eq!(
        errors(text),
        vec![t(
            "Dataplane/dp",
            "spec.networking.inbound[0].port",
            "port must be in the range [1, 65535]"
        )]
    );
}

#[test]
fn kubernetes_dataplane_load_errors_have_spec_prefix() {
    let text = "apiVersion: kuma.io/v1alpha1\nkind: Dataplane\nmetadata: {name: dp}\nspec:\n  networking:\n    address: 10.0.0.1\n    inbound: [{port: x}]\n";
    let (_, path, _) = single_error(text);
    assert_eq!(path, "spec.networking.inbound[0].port");
}

#[test]
fn every_problem_of_every_document_is_reported_at_once() {
    let text = r#"
type: MeshTCPRoute
name: bad-weight
spec:
  to:
    - targetRef: {kind: MeshService, name: a}
      rules: [{default: {backendRefs: [{kind: MeshService, name: b, weight: abc}]}}]
---
type: MeshTCPRoute
name: bad-kinds
spec:
  targetRef: {kind: MeshSubset, tags: {app: ""}}
  to:
    - targetRef: {kind: Mesh}
      rules:
        - default: {backendRefs: []}
        - default: {backendRefs: [{kind: MeshServiceSubset, tags: {v: "1"}}, {name: ""}]}
---
- not a mapping
---
type: Nope
name: n
---
type: MeshService
name: s
spec: {ports: [{port: 0}]}
---
type: Dataplane
name: d
networking: {inbound: [{port: 0, address: 10.0.0.1}]}
"#;
    let (_, problems) = check(text);
    let errs: Vec<String> = problems
        .iter()
        .filter(|p| p.severity == Severity::Error)
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        errs,
        vec![
            "test.yaml: MeshTCPRoute/bad-weight: spec.to[0].rules[0].default.backendRefs[0].weight: invalid type: string \"abc\", expected u64",
            "test.yaml: document 3: expected a mapping with `type` (universal) or `kind` (Kubernetes)",
            "test.yaml: Nope/n: type: unknown resource type \"Nope\"",
            "test.yaml: MeshTCPRoute/bad-kinds: spec.targetRef.tags[\"app\"]: tag value must be non-empty",
            "test.yaml: MeshTCPRoute/bad-kinds: spec.to[0].targetRef.kind: value 'Mesh' is not supported",
            "test.yaml: MeshTCPRoute/bad-kinds: spec.to[0].rules: must have at most one element",
            "test.yaml: MeshTCPRoute/bad-kinds: spec.to[0].rules[0].default.backendRefs: must be defined",
            "test.yaml: MeshTCPRoute/bad-kinds: spec.to[0].rules[1].default.backendRefs[0].name: must be set with kind MeshServiceSubset",
            "test.yaml: MeshTCPRoute/bad-kinds: spec.to[0].rules[1].default.backendRefs[1].kind: must be defined",
            "test.yaml: MeshService/s: spec.ports[0].port: must be in 1..65535",
            "test.yaml: Dataplane/d: networking.inbound[0].port: port must be in the range [1, 65535]",
        ]
    );
}

#[test]
fn read_returns_config_with_warnings_or_every_problem() {
    let dir = common::tempdir("model-read");
    let good = dir.join("good.yaml");
    std::fs::write(&good, "type: Mesh\nname: m\n").unwrap();
    let (config, warnings) = model::read(&good).unwrap();
    assert_eq!(config.ignored.len(), 1);
    assert_eq!(warnings.len(), 1);
    assert_eq!(warnings[0].severity, Severity::Warning);

    let bad = dir.join("bad.yaml");
    std::fs::write(&bad, "type: Mesh\nname: m\n---\ntype: X\nname: y\n").unwrap();
    let problems = model::read(&bad).unwrap_err();
    assert_eq!(problems.errors().count(), 1);
    assert_eq!(problems.warnings().count(), 1);
    assert_eq!(problems.errors().next().unwrap().file, bad);
    std::fs::remove_dir_all(&dir).unwrap();
}
