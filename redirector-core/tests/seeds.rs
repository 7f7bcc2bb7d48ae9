//! The YAML examples of the two MeshTCPRoute reference pages (Kuma docs with
//! their `{% ... %}` template tags stripped, and the Kong Mesh 2.4 page with its
//! kubectl and kumactl forms) must load without problems, and validation
//! accepts every one of them: the only problems are warnings (Kuma's
//! deprecations and the documentation generator's `_version` hints).

mod common;

use common::{FILE, Triple, check, plan, t, triples};
use redirector_core::model::{self, Severity};
use std::path::Path;

/// Kuma docs, "Traffic split", versions up to 2.8.
const KUMA_SPLIT_SUBSET: &str = r#"
type: MeshTCPRoute
name: tcp-route-1
mesh: default
spec:
  targetRef:
    kind: MeshSubset
    tags:
      app: frontend
  to:
    - targetRef:
        kind: MeshService
        name: backend
        namespace: kuma-demo
        _port: 3001
      rules:
        - default:
            backendRefs:
              - kind: MeshServiceSubset
                name: backend_kuma-demo_svc_3001
                tags:
                  version: "v0"
                weight: 90
              - kind: MeshServiceSubset
                name: backend_kuma-demo_svc_3001
                tags:
                  version: "v1"
                weight: 10
"#;

/// Kuma docs, "Traffic split", version 2.9.
const KUMA_SPLIT_MESHSERVICE_29: &str = r#"
type: MeshTCPRoute
name: tcp-route-1
mesh: default
spec:
  targetRef:
    kind: MeshSubset
    tags:
      app: frontend
  to:
    - targetRef:
        kind: MeshService
        name: backend
        namespace: kuma-demo
        _port: 3001
        sectionName: http
      rules:
        - default:
            backendRefs:
              - kind: MeshService
                name: backend
                namespace: kuma-demo
                port: 3001
                _version: v0
                weight: 90
              - kind: MeshService
                name: backend
                namespace: kuma-demo
                port: 3001
                _version: v1
                weight: 10
"#;

/// Kuma docs, "Traffic split", versions from 2.10.
const KUMA_SPLIT_MESHSERVICE_210: &str = r#"
type: MeshTCPRoute
name: tcp-route-1
mesh: default
spec:
  targetRef:
    kind: Dataplane
    labels:
      app: frontend
  to:
    - targetRef:
        kind: MeshService
        name: backend
        namespace: kuma-demo
        _port: 3001
        sectionName: http
      rules:
        - default:
            backendRefs:
              - kind: MeshService
                name: backend
                namespace: kuma-demo
                port: 3001
                _version: v0
                weight: 90
              - kind: MeshService
                name: backend
                namespace: kuma-demo
                port: 3001
                _version: v1
                weight: 10
"#;

/// Kuma docs, "Traffic redirection", versions up to 2.8.
const KUMA_REDIRECT_28: &str = r#"
type: MeshTCPRoute
name: tcp-route-1
mesh: default
spec:
  targetRef:
    kind: MeshSubset
    tags:
      app: frontend
  to:
    - targetRef:
        kind: MeshService
        name: backend
        namespace: kuma-demo
        _port: 3001
      rules:
        - default:
            backendRefs:
              - kind: MeshService
                name: external-backend
                namespace: kuma-demo
                port: 8080
                _port: 8080
"#;

/// Kuma docs, "Traffic redirection", version 2.9.
const KUMA_REDIRECT_29: &str = r#"
type: MeshTCPRoute
name: tcp-route-1
mesh: default
spec:
  targetRef:
    kind: MeshSubset
    tags:
      app: frontend
  to:
    - targetRef:
        kind: MeshService
        name: backend
        namespace: kuma-demo
        _port: 3001
        sectionName: http
      rules:
        - default:
            backendRefs:
              - kind: MeshService
                name: external-backend
                namespace: kuma-demo
                port: 8080
                _port: 8080
"#;

/// Kuma docs, "Traffic redirection", versions from 2.10.
const KUMA_REDIRECT_210: &str = r#"
type: MeshTCPRoute
name: tcp-route-1
mesh: default
spec:
  targetRef:
    kind: Dataplane
    labels:
      app: frontend
  to:
    - targetRef:
        kind: MeshService
        name: backend
        namespace: kuma-demo
        _port: 3001
        sectionName: http
      rules:
        - default:
            backendRefs:
              - kind: MeshService
                name: external-backend
                namespace: kuma-demo
                port: 8080
                _port: 8080
"#;

/// Kuma docs, MeshHTTPRoute next to a MeshTCPRoute (2.9 and 2.10 differ only
/// in the top-level targetRef). The second keeps the page's odd indentation.
const KUMA_HTTP_ROUTES: [&str; 4] = [
    r#"
type: MeshHTTPRoute
name: simple-http
mesh: default
spec:
  targetRef:
    kind: MeshSubset
    tags:
      app: frontend
  to:
    - targetRef:
        kind: MeshService
        name: backend
        namespace: kuma-demo
        _port: 3001
        sectionName: http
      rules:
        - default:
            backendRefs:
              - kind: MeshService
                name: other-tcp-backend
                namespace: kuma-demo
                port: 8080
                _port: 8080
"#,
    r#"
type: MeshHTTPRoute
name: simple-http
mesh: default
spec:
  targetRef:
    kind: MeshSubset
    tags:
      app: frontend
  to:
    - targetRef:
        kind: MeshService
        name: backend
        namespace: kuma-demo
        _port: 3001
        sectionName: http
      rules:
        - matches:
          path:
              type: PathPrefix
              value: "/"
          default:
            backendRefs:
              - kind: MeshService
                name: other-http-backend
                namespace: kuma-demo
                port: 8080
                _port: 8080
"#,
    r#"
type: MeshHTTPRoute
name: simple-http
mesh: default
spec:
  targetRef:
    kind: Dataplane
    labels:
      app: frontend
  to:
    - targetRef:
        kind: MeshService
        name: backend
        namespace: kuma-demo
        _port: 3001
        sectionName: http
      rules:
        - default:
            backendRefs:
              - kind: MeshService
                name: other-tcp-backend
                namespace: kuma-demo
                port: 8080
                _port: 8080
"#,
    r#"
type: MeshHTTPRoute
name: simple-http
mesh: default
spec:
  targetRef:
    kind: Dataplane
    labels:
      app: frontend
  to:
    - targetRef:
        kind: MeshService
        name: backend
        namespace: kuma-demo
        _port: 3001
        sectionName: http
      rules:
        - matches:
          path:
              type: PathPrefix
              value: "/"
          default:
            backendRefs:
              - kind: MeshService
                name: other-http-backend
                namespace: kuma-demo
                port: 8080
                _port: 8080
"#,
];

/// Kuma docs (up to 2.8), the MeshTCPRoute fragment of "Route policies with
/// different types targeting the same destination", under a `spec:` of its own.
const KUMA_FRAGMENT_SPEC: &str = r#"
targetRef:
  kind: MeshSubset
  tags:
    app: frontend
to:
  - targetRef:
      kind: MeshService
      name: backend_kuma-demo_svc_3001
    rules:
      - default:
          backendRefs:
            - kind: MeshService
              name: other-tcp-backend
"#;

/// Kong Mesh 2.4, "Traffic split", Kubernetes form.
const KONG_SPLIT_KUBERNETES: &str = r#"
apiVersion: kuma.io/v1alpha1
kind: MeshTCPRoute
metadata:
  name: tcp-route-1
  namespace: kong-mesh-system
  labels:
    kuma.io/mesh: default
spec:
  targetRef:
    kind: MeshService
    name: frontend_kuma-demo_svc_8080
  to:
    - targetRef:
        kind: MeshService
        name: backend_kuma-demo_svc_3001
      rules:
        - default:
            backendRefs:
              - kind: MeshServiceSubset
                name: backend_kuma-demo_svc_3001
                tags:
                  version: "1.0"
                weight: 90
              - kind: MeshServiceSubset
                name: backend_kuma-demo_svc_3001
                tags:
                  version: "2.0"
                weight: 10
"#;

/// Kong Mesh 2.4, "Traffic split", universal form.
const KONG_SPLIT_UNIVERSAL: &str = r#"
type: MeshTCPRoute
name: tcp-route-1
mesh: default
spec:
  targetRef:
    kind: MeshService
    name: frontend_kuma-demo_svc_8080
  to:
    - targetRef:
        kind: MeshService
        name: backend_kuma-demo_svc_3001
      rules:
        - default:
            backendRefs:
              - kind: MeshServiceSubset
                name: backend_kuma-demo_svc_3001
                tags:
                  version: "1.0"
                weight: 90
              - kind: MeshServiceSubset
                name: backend_kuma-demo_svc_3001
                tags:
                  version: "2.0"
                weight: 10
"#;

/// Kong Mesh 2.4, "Traffic redirection", Kubernetes form.
const KONG_REDIRECT_KUBERNETES: &str = r#"
apiVersion: kuma.io/v1alpha1
kind: MeshTCPRoute
metadata:
  name: tcp-route-1
  namespace: kong-mesh-system
  labels:
    kuma.io/mesh: default
spec:
  targetRef:
    kind: MeshService
    name: frontend_kuma-demo_svc_8080
  to:
    - targetRef:
        kind: MeshService
        name: backend_kuma-demo_svc_3001
      rules:
        - default:
            backendRefs:
              - kind: MeshService
                name: external-backend
"#;

/// Kong Mesh 2.4, "Traffic redirection", universal form.
const KONG_REDIRECT_UNIVERSAL: &str = r#"
type: MeshTCPRoute
name: tcp-route-1
mesh: default
spec:
  targetRef:
    kind: MeshService
    name: frontend_kuma-demo_svc_8080
  to:
    - targetRef:
        kind: MeshService
        name: backend_kuma-demo_svc_3001
      rules:
        - default:
            backendRefs:
              - kind: MeshService
                name: external-backend
"#;

/// Kong Mesh 2.4, the MeshTCPRoute fragment, under a `spec:` of its own.
const KONG_FRAGMENT_SPEC: &str = r#"
targetRef:
  kind: MeshService
  name: frontend
to:
  - targetRef:
      kind: MeshService
      name: backend
    rules:
      - default:
          backendRefs:
            - kind: MeshService
              name: other-tcp-backend
"#;

const ROUTE: &str = "MeshTCPRoute/tcp-route-1";
const HTTP_ROUTE: &str = "MeshHTTPRoute/simple-http";
const BACKENDS: &str = "spec.to[0].rules[0].default.backendRefs";

/// Kuma's `Deprecations()` warning for a top-level `kind` of `resource`.
fn deprecated(resource: &str, kind: &str) -> Triple {
    t(
        resource,
        "spec.targetRef.kind",
        &format!("{kind} value for 'targetRef.kind' is deprecated, use Dataplane with labels instead"),
    )
}

fn version_hint_warning(index: usize) -> Triple {
    t(
        ROUTE,
        &format!("{BACKENDS}[{index}]._version"),
        "documentation-generator hint; it selects nothing (split with separate MeshServices)",
    )
}

/// The spec of a fragment as a whole universal MeshTCPRoute.
fn wrap_spec(name: &str, spec: &str) -> String {
    let body: String = spec
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| format!("  {l}\n"))
        .collect();
    format!("type: MeshTCPRoute\nname: {name}\nmesh: default\nspec:\n{body}")
}

fn assert_loads(text: &str) {
    let (config, problems) = model::load_str(Path::new(FILE), text);
    assert!(problems.is_empty(), "load problems: {problems:#?}\n{text}");
    assert_eq!(
        config.routes.len() + config.http_routes.len() + config.ignored.len(),
        1,
        "{text}"
    );
}

fn assert_checks(text: &str, errors: &[Triple], warnings: &[Triple]) {
    assert_loads(text);
    let (_, problems) = check(text);
    assert_eq!(triples(&problems, Severity::Error), errors, "{text}");
    assert_eq!(triples(&problems, Severity::Warning), warnings, "{text}");
}

#[test]
fn kuma_subset_split_is_valid_with_a_deprecation_warning() {
    assert_checks(KUMA_SPLIT_SUBSET, &[], &[deprecated(ROUTE, "MeshSubset")]);
}

#[test]
fn kuma_meshservice_split_is_valid_with_version_hint_warnings() {
    assert_checks(
        KUMA_SPLIT_MESHSERVICE_29,
        &[],
        &[deprecated(ROUTE, "MeshSubset"), version_hint_warning(0), version_hint_warning(1)],
    );
    assert_checks(
        KUMA_SPLIT_MESHSERVICE_210,
        &[],
        &[version_hint_warning(0), version_hint_warning(1)],
    );
}

#[test]
fn kuma_redirection_examples_are_valid() {
    assert_checks(KUMA_REDIRECT_28, &[], &[deprecated(ROUTE, "MeshSubset")]);
    assert_checks(KUMA_REDIRECT_29, &[], &[deprecated(ROUTE, "MeshSubset")]);
    assert_checks(KUMA_REDIRECT_210, &[], &[]);
}

/// MeshHTTPRoute examples are read for their targets (the 2.9 ones target a
/// MeshSubset, deprecated since).
#[test]
fn kuma_http_route_examples_are_read_for_their_targets() {
    for (i, text) in KUMA_HTTP_ROUTES.iter().enumerate() {
        let expected = if i < 2 { vec![deprecated(HTTP_ROUTE, "MeshSubset")] } else { vec![] };
        assert_checks(text, &[], &expected);
        let (config, _) = check(text);
        let route = &config.http_routes[0];
        let to = &route.spec.to.as_ref().unwrap()[0].target_ref;
        assert_eq!(to.name.as_deref(), Some("backend"));
        assert_eq!(to.section_name.as_deref(), Some("http"));
    }
}

#[test]
fn kuma_route_fragment_is_valid_as_a_spec() {
    assert_checks(
        &wrap_spec("tcp-route-1", KUMA_FRAGMENT_SPEC),
        &[],
        &[deprecated(ROUTE, "MeshSubset")],
    );
}

#[test]
fn kong_split_is_valid_in_both_forms() {
    let warnings = [deprecated(ROUTE, "MeshService")];
    assert_checks(KONG_SPLIT_KUBERNETES, &[], &warnings);
    assert_checks(KONG_SPLIT_UNIVERSAL, &[], &warnings);
}

#[test]
fn kong_redirection_is_valid_in_both_forms() {
    let warnings = [deprecated(ROUTE, "MeshService")];
    assert_checks(KONG_REDIRECT_KUBERNETES, &[], &warnings);
    assert_checks(KONG_REDIRECT_UNIVERSAL, &[], &warnings);
    assert_checks(&wrap_spec("tcp-route-1", KONG_FRAGMENT_SPEC), &[], &warnings);
}

#[test]
fn kong_kubernetes_and_universal_forms_read_the_same_policy() {
    for (kubernetes, universal) in [
        (KONG_SPLIT_KUBERNETES, KONG_SPLIT_UNIVERSAL),
        (KONG_REDIRECT_KUBERNETES, KONG_REDIRECT_UNIVERSAL),
    ] {
        let (k, _) = check(kubernetes);
        let (u, _) = check(universal);
        assert_eq!(k.routes[0].spec, u.routes[0].spec);
        assert_eq!(k.routes[0].origin.mesh, u.routes[0].origin.mesh);
        assert_eq!(k.routes[0].origin.namespace.as_deref(), Some("kong-mesh-system"));
        assert_eq!(u.routes[0].origin.namespace, None);
    }
}

#[test]
fn examples_in_one_file_clash_only_when_name_mesh_and_namespace_match() {
    let mut text = String::new();
    for doc in [
        KUMA_SPLIT_SUBSET,
        KONG_SPLIT_KUBERNETES,
        KUMA_HTTP_ROUTES[0],
        KUMA_REDIRECT_28,
    ] {
        text.push_str("---\n");
        text.push_str(doc);
    }
    let (config, problems) = model::load_str(Path::new(FILE), &text);
    assert_eq!(config.routes.len(), 3);
    assert_eq!(config.http_routes.len(), 1);
    assert!(config.ignored.is_empty());
    assert_eq!(
        triples(&problems, Severity::Error),
        vec![t(
            ROUTE,
            "name",
            "duplicate resource: MeshTCPRoute/tcp-route-1 in mesh \"default\" is also defined in test.yaml"
        )]
    );
    assert_eq!(problems.len(), 1);
}

/// The 2.10 redirection example with a supported top-level targetRef, against
/// Kubernetes MeshServices in `kuma-demo`: port `http` (3001) of `backend` goes
/// to `external-backend`'s port 8080.
#[test]
fn kuma_redirection_with_mesh_target_routes_to_external_backend() {
    let route = KUMA_REDIRECT_210.replace(
        "    kind: Dataplane\n    labels:\n      app: frontend\n",
        "    kind: Mesh\n",
    );
    assert_ne!(route, KUMA_REDIRECT_210);
    let services = r#"
---
apiVersion: kuma.io/v1alpha1
kind: MeshService
metadata: {name: backend, namespace: kuma-demo, labels: {kuma.io/mesh: default}}
spec:
  selector: {dataplaneTags: {app: backend}}
  ports:
    - {name: http, port: 3001, targetPort: 3001, appProtocol: tcp}
    - {name: admin, port: 9000, targetPort: 9000}
status: {vips: [{ip: 10.96.0.10}]}
---
apiVersion: kuma.io/v1alpha1
kind: MeshService
metadata: {name: external-backend, namespace: kuma-demo, labels: {kuma.io/mesh: default}}
spec:
  selector: {dataplaneTags: {app: external-backend}}
  ports: [{port: 8080, targetPort: 8080}]
status: {vips: [{ip: 10.96.0.20}]}
---
type: Dataplane
name: backend-1
networking: {address: 10.0.0.1, inbound: [{port: 3001, tags: {app: backend}}, {port: 9000, tags: {app: backend}}]}
---
type: Dataplane
name: external-1
networking: {address: 10.0.0.2, inbound: [{port: 8080, tags: {app: external-backend}}]}
"#;
    let plan = plan(&format!("{route}{services}"));
    assert!(plan.warnings.is_empty(), "{:#?}", plan.warnings);
    assert_eq!(
        plan.summary_lines(),
        vec![
            "10.96.0.10:3001 MeshService/backend via MeshTCPRoute/tcp-route-1: MeshService/external-backend:8080 100.00% (1 endpoints)",
            "10.96.0.10:9000 MeshService/backend via default route: MeshService/backend:9000 100.00% (1 endpoints)",
            "10.96.0.20:8080 MeshService/external-backend via default route: MeshService/external-backend:8080 100.00% (1 endpoints)",
        ]
    );
}
