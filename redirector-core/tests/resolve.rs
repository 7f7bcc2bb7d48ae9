//! `redirector_core::resolve`: which route serves which service address and port,
//! with Kuma 2.13's semantics, and which endpoints each backend has.
//! (The table-driven Kuma conformance suite is in `conformance.rs`.)

mod common;

use common::{
    Triple, check, dataplane, dataplane_in, route, route_in, service, service_in, t, to_backends,
    triples,
};
use redirector_core::{
    model::{Config, Severity},
    resolve::{self, BASE_CLASS, NoDns, Resolution, ResolvedBackend, ResolvedRoute},
};
use std::net::{IpAddr, SocketAddr};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn sas(list: &[&str]) -> std::sync::Arc<[SocketAddr]> {
    list.iter().map(|s| sa(s)).collect()
}

/// Loads and validates `text` (which must have no errors), then resolves it
/// without DNS. The resolution, and the resolver's errors and warnings.
fn resolve_full(text: &str) -> (Resolution, Vec<Triple>, Vec<Triple>) {
    let (config, problems) = check(text);
    let errors = triples(&problems, Severity::Error);
    assert!(errors.is_empty(), "input has errors: {errors:#?}\n{text}");
    let (resolution, problems) = resolve::resolve_with(&config, &NoDns);
    (
        resolution,
        triples(&problems, Severity::Error),
        triples(&problems, Severity::Warning),
    )
}

/// As [`resolve_full`], the base class's routes only.
fn resolve_text(text: &str) -> (Vec<ResolvedRoute>, Vec<Triple>, Vec<Triple>) {
    let (resolution, errors, warnings) = resolve_full(text);
    (resolution.base_routes().to_vec(), errors, warnings)
}

fn routes_of(text: &str) -> Vec<ResolvedRoute> {
    let (routes, errors, _) = resolve_text(text);
    assert!(errors.is_empty(), "resolve errors: {errors:#?}");
    routes
}

fn find<'a>(routes: &'a [ResolvedRoute], vip: &str, port: u16) -> &'a ResolvedRoute {
    routes
        .iter()
        .find(|r| r.vip == ip(vip) && r.port == port)
        .unwrap_or_else(|| panic!("no route for {vip}:{port} in {routes:#?}"))
}

fn backend(name: &str, weight: u32, endpoints: &[&str]) -> ResolvedBackend {
    ResolvedBackend {
        name: name.into(),
        weight,
        endpoints: sas(endpoints),
    }
}

/// `(policy, [(backend name, weight)])` of a route, for compact comparisons.
fn shape(route: &ResolvedRoute) -> (Option<&str>, Vec<(&str, u32)>) {
    (
        route.policy.as_deref(),
        route
            .backends
            .iter()
            .map(|b| (b.name.as_str(), b.weight))
            .collect(),
    )
}

const DEFAULT_WHY: &str = "no MeshTCPRoute targets this destination: default route to itself";

/// Service `a` (ports 80 `http` and 443, VIP 10.0.0.1) and services `b`, `c`,
/// `d` (port 80, VIPs 10.0.0.2-4), each with one dataplane whose inbounds
/// also carry `kuma.io/service: <name>` (so legacy references find them).
fn four_services() -> String {
    [
        service("a", "{app: a}", "[{port: 80, targetPort: 80, name: http}, {port: 443, targetPort: 443}]", "[{ip: 10.0.0.1}]"),
        service("b", "{app: b}", "[{port: 80, targetPort: 80}]", "[{ip: 10.0.0.2}]"),
        service("c", "{app: c}", "[{port: 80, targetPort: 80}]", "[{ip: 10.0.0.3}]"),
        service("d", "{app: d}", "[{port: 80, targetPort: 80}]", "[{ip: 10.0.0.4}]"),
        dataplane(
            "a-1",
            "10.1.0.1",
            "[{port: 80, tags: {app: a, kuma.io/service: a}}, {port: 443, tags: {app: a, kuma.io/service: a}}]",
        ),
        dataplane("b-1", "10.1.0.2", "[{port: 80, tags: {app: b, kuma.io/service: b}}]"),
        dataplane("c-1", "10.1.0.3", "[{port: 80, tags: {app: c, kuma.io/service: c}}]"),
        dataplane("d-1", "10.1.0.4", "[{port: 80, tags: {app: d, kuma.io/service: d}}]"),
    ]
    .concat()
}

// ---------------------------------------------------------------- default route

#[test]
fn every_port_of_every_vip_gets_a_default_route_to_its_own_endpoints() {
    let text = [
        service(
            "a",
            "{app: a}",
            "[{port: 80, targetPort: 80, appProtocol: tcp}, {port: 443, targetPort: 8443}]",
            "[{ip: fd00::1}, {ip: 10.0.0.1}]",
        ),
        dataplane(
            "a-1",
            "10.1.0.1",
            "[{port: 80, tags: {app: a}}, {port: 8443, tags: {app: a}}]",
        ),
        dataplane("a-2", "fd01::2", "[{port: 80, tags: {app: a}}]"),
    ]
    .concat();
    let (routes, errors, warnings) = resolve_text(&text);
    assert!(
        errors.is_empty() && warnings.is_empty(),
        "{errors:?} {warnings:?}"
    );
    let expected = |vip: &str, port: u16, endpoints: &[&str]| ResolvedRoute {
        mesh: "default".into(),
        service: "MeshService/a".into(),
        vip: ip(vip),
        port,
        app_protocol: (port == 80).then(|| "tcp".into()),
        policy: None,
        backends: vec![backend(&format!("MeshService/a:{port}"), 1, endpoints)],
        why: vec![DEFAULT_WHY.to_string()],
    };
    assert_eq!(
        routes,
        vec![
            expected("10.0.0.1", 80, &["10.1.0.1:80", "[fd01::2]:80"]),
            expected("10.0.0.1", 443, &["10.1.0.1:8443"]),
            expected("fd00::1", 80, &["10.1.0.1:80", "[fd01::2]:80"]),
            expected("fd00::1", 443, &["10.1.0.1:8443"]),
        ]
    );
}

#[test]
fn service_without_vips_or_ports_has_no_route() {
    let text = [
        service("novip", "{app: a}", "[{port: 80, targetPort: 80}]", "[]"),
        service("noport", "{app: a}", "[]", "[{ip: 10.0.0.1}]"),
    ]
    .concat();
    assert!(routes_of(&text).is_empty());
}

#[test]
fn routes_are_sorted_by_address_then_port() {
    let text = [
        service(
            "z",
            "{app: z}",
            "[{port: 9000, targetPort: 1}, {port: 80, targetPort: 1}]",
            "[{ip: 10.0.0.9}, {ip: \"::1\"}]",
        ),
        service(
            "a",
            "{app: a}",
            "[{port: 443, targetPort: 1}]",
            "[{ip: 10.0.0.10}, {ip: 10.0.0.2}]",
        ),
    ]
    .concat();
    let got: std::sync::Arc<[SocketAddr]> = routes_of(&text)
        .iter()
        .map(|r| SocketAddr::new(r.vip, r.port))
        .collect();
    assert_eq!(
        got,
        sas(&[
            "10.0.0.2:443",
            "10.0.0.9:80",
            "10.0.0.9:9000",
            "10.0.0.10:443",
            "[::1]:80",
            "[::1]:9000"
        ])
    );
}

// ---------------------------------------------------------------- policies

#[test]
fn route_for_the_whole_service_replaces_every_port() {
    let text = four_services()
        + &route(
            "split",
            &to_backends(
                "{kind: MeshService, name: a}",
                "[{kind: MeshService, name: b, port: 80, weight: 3}, {kind: MeshService, name: c, sectionName: '80'}]",
            ),
        );
    let routes = routes_of(&text);
    for port in [80, 443] {
        let r = find(&routes, "10.0.0.1", port);
        assert_eq!(r.policy.as_deref(), Some("MeshTCPRoute/split"));
        assert_eq!(
            r.backends,
            vec![
                backend("MeshService/b:80", 3, &["10.1.0.2:80"]),
                backend("MeshService/c:80", 1, &["10.1.0.3:80"])
            ],
            "port {port}"
        );
        assert_eq!(r.why, vec!["MeshTCPRoute/split to[0] wins".to_string()]);
    }
    assert_eq!(find(&routes, "10.0.0.2", 80).policy, None);
}

#[test]
fn backends_keep_their_order_and_zero_weights_are_dropped() {
    let text = four_services()
        + &route(
            "r",
            &to_backends(
                "{kind: MeshService, name: a}",
                "[{kind: MeshService, name: d, port: 80, weight: 0}, {kind: MeshService, name: c, port: 80, weight: 7}, {kind: MeshService, name: b, port: 80, weight: 4294967288}, {kind: MeshService, name: d, weight: 0}]",
            ),
        );
    let (routes, _, warnings) = resolve_text(&text);
    let r = find(&routes, "10.0.0.1", 80);
    assert_eq!(
        shape(r),
        (
            Some("MeshTCPRoute/r"),
            vec![("MeshService/c:80", 7), ("MeshService/b:80", u32::MAX - 7)]
        )
    );
    assert_eq!(
        r.why,
        vec![
            "MeshTCPRoute/r to[0] wins".to_string(),
            "MeshService/d:80: dropped, weight 0".to_string(),
            "MeshService/d: dropped, weight 0".to_string(),
        ]
    );
    assert!(
        warnings.is_empty(),
        "a zero weight is valid and silent: {warnings:?}"
    );
}

#[test]
fn section_name_selects_one_port_by_its_name_or_the_number_of_an_unnamed_port() {
    for section in ["http", "'443'", "\"443\""] {
        let text = four_services()
            + &route(
                "r",
                &to_backends(
                    &format!("{{kind: MeshService, name: a, sectionName: {section}}}"),
                    "[{kind: MeshService, name: b, port: 80}]",
                ),
            );
        let routes = routes_of(&text);
        let (hit, miss) = if section == "http" {
            (80, 443)
        } else {
            (443, 80)
        };
        assert_eq!(
            shape(find(&routes, "10.0.0.1", hit)),
            (Some("MeshTCPRoute/r"), vec![("MeshService/b:80", 1)]),
            "{section}"
        );
        let itself = format!("MeshService/a:{miss}");
        assert_eq!(
            shape(find(&routes, "10.0.0.1", miss)),
            (None, vec![(itself.as_str(), 1)]),
            "{section}"
        );
    }
}

#[test]
fn port_hint_selects_one_port_when_section_name_is_absent() {
    let text = four_services()
        + &route(
            "r",
            &to_backends(
                "{kind: MeshService, name: a, _port: 443}",
                "[{kind: MeshService, name: b, port: 80}]",
            ),
        );
    let routes = routes_of(&text);
    assert_eq!(find(&routes, "10.0.0.1", 80).policy, None);
    assert_eq!(
        shape(find(&routes, "10.0.0.1", 443)),
        (Some("MeshTCPRoute/r"), vec![("MeshService/b:80", 1)])
    );
}

#[test]
fn section_name_wins_over_port_hint() {
    let text = four_services()
        + &route(
            "r",
            &to_backends(
                "{kind: MeshService, name: a, sectionName: http, _port: 443}",
                "[{kind: MeshService, name: b, port: 80}]",
            ),
        );
    let routes = routes_of(&text);
    assert_eq!(
        find(&routes, "10.0.0.1", 80).policy.as_deref(),
        Some("MeshTCPRoute/r")
    );
    assert_eq!(find(&routes, "10.0.0.1", 443).policy, None);
}

#[test]
fn port_entry_beats_whole_service_entry_at_equal_policy_attributes_whatever_the_names() {
    let text = four_services()
        + &route(
            "a-whole",
            &to_backends(
                "{kind: MeshService, name: a}",
                "[{kind: MeshService, name: b, port: 80}]",
            ),
        )
        + &route(
            "z-port",
            &to_backends(
                "{kind: MeshService, name: a, sectionName: http}",
                "[{kind: MeshService, name: c, port: 80}]",
            ),
        );
    let routes = routes_of(&text);
    let r80 = find(&routes, "10.0.0.1", 80);
    assert_eq!(
        shape(r80),
        (Some("MeshTCPRoute/z-port"), vec![("MeshService/c:80", 1)])
    );
    assert_eq!(
        r80.why,
        vec![
            "MeshTCPRoute/a-whole to[0] targets this destination but is overridden".to_string(),
            "MeshTCPRoute/z-port to[0] wins".to_string(),
        ]
    );
    assert_eq!(
        shape(find(&routes, "10.0.0.1", 443)),
        (Some("MeshTCPRoute/a-whole"), vec![("MeshService/b:80", 1)])
    );
}

#[test]
fn policy_whose_name_sorts_first_wins_at_equal_specificity() {
    let alpha = route(
        "alpha",
        &to_backends(
            "{kind: MeshService, name: a}",
            "[{kind: MeshService, name: c, port: 80}]",
        ),
    );
    let beta = route(
        "beta",
        &to_backends(
            "{kind: MeshService, name: a}",
            "[{kind: MeshService, name: b, port: 80}]",
        ),
    );
    let alpha_port = route(
        "alpha-port",
        &to_backends(
            "{kind: MeshService, name: a, sectionName: '443'}",
            "[{kind: MeshService, name: d, port: 80}]",
        ),
    );
    let beta_port = route(
        "beta-port",
        &to_backends(
            "{kind: MeshService, name: a, sectionName: '443'}",
            "[{kind: MeshService, name: b, port: 80}]",
        ),
    );
    for order in [
        [&alpha, &beta, &alpha_port, &beta_port],
        [&beta_port, &beta, &alpha_port, &alpha],
        [&beta, &alpha_port, &alpha, &beta_port],
    ] {
        let text = four_services() + &order.iter().map(|s| s.as_str()).collect::<String>();
        let routes = routes_of(&text);
        assert_eq!(
            shape(find(&routes, "10.0.0.1", 80)),
            (Some("MeshTCPRoute/alpha"), vec![("MeshService/c:80", 1)])
        );
        assert_eq!(
            shape(find(&routes, "10.0.0.1", 443)),
            (
                Some("MeshTCPRoute/alpha-port"),
                vec![("MeshService/d:80", 1)]
            )
        );
    }
}

#[test]
fn to_entry_without_rules_and_with_a_section_sends_traffic_to_that_port_itself() {
    for to in [
        "[{targetRef: {kind: MeshService, name: a, sectionName: '443'}}]",
        "[{targetRef: {kind: MeshService, name: a, sectionName: '443'}, rules: []}]",
    ] {
        let text = four_services()
            + &route("a-self", to)
            + &route(
                "b-split",
                &to_backends(
                    "{kind: MeshService, name: a}",
                    "[{kind: MeshService, name: b, port: 80}]",
                ),
            );
        let routes = routes_of(&text);
        let r = find(&routes, "10.0.0.1", 443);
        assert_eq!(r.policy.as_deref(), Some("MeshTCPRoute/a-self"), "{to}");
        assert_eq!(
            r.backends,
            vec![backend("MeshService/a:443", 1, &["10.1.0.1:443"])],
            "{to}"
        );
        assert!(
            r.why
                .contains(&"no rules: traffic goes to the `to` target itself".to_string()),
            "{:?}",
            r.why
        );
        // Port 80 is not named by a-self: b-split applies there.
        assert_eq!(
            find(&routes, "10.0.0.1", 80).policy.as_deref(),
            Some("MeshTCPRoute/b-split")
        );
    }
}

#[test]
fn to_entry_without_rules_or_section_is_a_legacy_kuma_service_reference() {
    // Kuma copies the targetRef into a backendRef; a MeshService without port or
    // sectionName is a legacy `kuma.io/service` reference.
    let text = four_services() + &route("self", "[{targetRef: {kind: MeshService, name: a}}]");
    let routes = routes_of(&text);
    for port in [80, 443] {
        let r = find(&routes, "10.0.0.1", port);
        assert_eq!(r.policy.as_deref(), Some("MeshTCPRoute/self"));
        assert_eq!(
            r.backends,
            vec![backend(
                "kuma.io/service a",
                1,
                &["10.1.0.1:80", "10.1.0.1:443"]
            )]
        );
    }
}

#[test]
fn one_policy_can_route_several_destinations() {
    let text = four_services()
        + &route(
            "r",
            "[{targetRef: {kind: MeshService, name: a}, rules: [{default: {backendRefs: [{kind: MeshService, name: b, port: 80}]}}]},
              {targetRef: {kind: MeshService, name: b}, rules: [{default: {backendRefs: [{kind: MeshService, name: ghost}]}}]}]",
        );
    let (routes, errors, warnings) = resolve_text(&text);
    assert!(errors.is_empty());
    assert_eq!(
        shape(find(&routes, "10.0.0.1", 80)),
        (Some("MeshTCPRoute/r"), vec![("MeshService/b:80", 1)])
    );
    assert_eq!(
        find(&routes, "10.0.0.2", 80).backends,
        vec![backend("kuma.io/service ghost", 1, &[])]
    );
    assert_eq!(
        warnings,
        vec![t(
            "MeshTCPRoute/r",
            "spec.to[1].rules[0].default.backendRefs[0]",
            "no Dataplane inbound has kuma.io/service \"ghost\" (yet); as in Kuma, its share of connections fails"
        )]
    );
}

// ---------------------------------------------------------------- backendRefs

#[test]
fn backend_to_missing_real_service_is_dropped_with_a_warning() {
    let text = four_services()
        + &route(
            "r",
            &to_backends(
                "{kind: MeshService, name: a, sectionName: http}",
                "[{kind: MeshService, name: b, port: 80, weight: 9}, {kind: MeshService, name: ghost, port: 80, weight: 1}]",
            ),
        );
    let (routes, errors, warnings) = resolve_text(&text);
    assert!(errors.is_empty());
    let r = find(&routes, "10.0.0.1", 80);
    assert_eq!(
        r.backends,
        vec![backend("MeshService/b:80", 9, &["10.1.0.2:80"])]
    );
    let message = "MeshService/ghost:80 does not exist; its share is dropped and the other backends share the traffic";
    assert_eq!(
        warnings,
        vec![t(
            "MeshTCPRoute/r",
            "spec.to[0].rules[0].default.backendRefs[1]",
            message
        )]
    );
    assert!(
        r.why.contains(&format!("MeshService/ghost:80: {message}")),
        "{:?}",
        r.why
    );
}

#[test]
fn backend_to_missing_legacy_service_keeps_its_share_with_no_endpoints() {
    let text = four_services()
        + &route(
            "r",
            &to_backends(
                "{kind: MeshService, name: a, sectionName: http}",
                "[{kind: MeshService, name: b, port: 80, weight: 9}, {kind: MeshService, name: ghost, weight: 1}]",
            ),
        );
    let (routes, errors, warnings) = resolve_text(&text);
    assert!(errors.is_empty());
    assert_eq!(
        find(&routes, "10.0.0.1", 80).backends,
        vec![
            backend("MeshService/b:80", 9, &["10.1.0.2:80"]),
            backend("kuma.io/service ghost", 1, &[])
        ]
    );
    assert_eq!(
        warnings,
        vec![t(
            "MeshTCPRoute/r",
            "spec.to[0].rules[0].default.backendRefs[1]",
            "no Dataplane inbound has kuma.io/service \"ghost\" (yet); as in Kuma, its share of connections fails"
        )]
    );
}

#[test]
fn backend_without_port_or_section_uses_the_kuma_service_tag_not_the_meshservice() {
    // MeshService `b` selects app=b (10.1.0.2); kuma.io/service=b is on 10.1.0.9.
    let text = [
        service("a", "{app: a}", "[{port: 80, targetPort: 80}]", "[{ip: 10.0.0.1}]"),
        service("b", "{app: b}", "[{port: 80, targetPort: 80}]", "[{ip: 10.0.0.2}]"),
        dataplane("b-1", "10.1.0.2", "[{port: 80, tags: {app: b}}]"),
        dataplane("legacy-b", "10.1.0.9", "[{port: 8080, servicePort: 8081, tags: {kuma.io/service: b, version: v1}}]"),
        dataplane("legacy-b-2", "10.1.0.10", "[{port: 8080, tags: {kuma.io/service: b, version: v2}}]"),
        route(
            "r",
            &to_backends(
                "{kind: MeshService, name: a}",
                "[{kind: MeshService, name: b}, {kind: MeshService, name: b, port: 80}, {kind: MeshServiceSubset, name: b, tags: {version: v2}}]",
            ),
        ),
    ]
    .concat();
    assert_eq!(
        find(&routes_of(&text), "10.0.0.1", 80).backends,
        vec![
            backend("kuma.io/service b", 1, &["10.1.0.9:8081", "10.1.0.10:8080"]),
            backend("MeshService/b:80", 1, &["10.1.0.2:80"]),
            backend("kuma.io/service b {version=v2}", 1, &["10.1.0.10:8080"]),
        ]
    );
}

#[test]
fn backend_port_selects_that_port_and_its_target() {
    let text = [
        service(
            "a",
            "{app: a}",
            "[{port: 80, targetPort: 80}]",
            "[{ip: 10.0.0.1}]",
        ),
        service(
            "b",
            "{app: b}",
            "[{port: 80, targetPort: 80}, {port: 9000, targetPort: admin}]",
            "[{ip: 10.0.0.2}]",
        ),
        dataplane(
            "b-1",
            "10.1.0.2",
            "[{port: 80, tags: {app: b}}, {port: 19000, name: admin, tags: {app: b}}]",
        ),
    ]
    .concat();
    for port in ["port: 9000", "_port: 9000", "sectionName: '9000'"] {
        let text = text.clone()
            + &route(
                "r",
                &to_backends(
                    "{kind: MeshService, name: a}",
                    &format!("[{{kind: MeshService, name: b, {port}}}]"),
                ),
            );
        assert_eq!(
            find(&routes_of(&text), "10.0.0.1", 80).backends,
            vec![backend("MeshService/b:9000", 1, &["10.1.0.2:19000"])],
            "{port}"
        );
    }
}

#[test]
fn backend_port_that_does_not_exist_is_dropped_with_a_warning() {
    let text = four_services()
        + &route(
            "r",
            &to_backends(
                "{kind: MeshService, name: a, sectionName: http}",
                "[{kind: MeshService, name: b, port: 81, weight: 2}]",
            ),
        );
    let (routes, errors, warnings) = resolve_text(&text);
    assert!(errors.is_empty());
    let r = find(&routes, "10.0.0.1", 80);
    assert_eq!(shape(r), (Some("MeshTCPRoute/r"), vec![]));
    assert_eq!(
        r.why.last().map(String::as_str),
        Some("every backend was dropped: connections are refused")
    );
    assert_eq!(
        warnings,
        vec![t(
            "MeshTCPRoute/r",
            "spec.to[0].rules[0].default.backendRefs[0]",
            "MeshService/b:81 has no port 81; its share is dropped and the other backends share the traffic"
        )]
    );
}

#[test]
fn backend_warning_is_reported_once_for_a_multi_port_destination() {
    let text = four_services()
        + &route(
            "r",
            &to_backends(
                "{kind: MeshService, name: a}",
                "[{kind: MeshService, name: ghost}, {kind: MeshService, name: b, port: 81}]",
            ),
        );
    let (_, _, warnings) = resolve_text(&text);
    assert_eq!(warnings.len(), 2, "{warnings:#?}");
}

#[test]
fn backend_can_be_the_destination_itself() {
    let text = four_services()
        + &route(
            "r",
            &to_backends(
                "{kind: MeshService, name: a}",
                "[{kind: MeshService, name: a, port: 443, weight: 1}, {kind: MeshService, name: b, port: 80, weight: 1}]",
            ),
        );
    let routes = routes_of(&text);
    let r = find(&routes, "10.0.0.1", 443);
    assert_eq!(
        r.backends,
        vec![
            backend("MeshService/a:443", 1, &["10.1.0.1:443"]),
            backend("MeshService/b:80", 1, &["10.1.0.2:80"])
        ]
    );
}

// ---------------------------------------------------------------- endpoints

#[test]
fn endpoints_need_a_dataplane_with_every_selector_tag_and_the_target_port() {
    let text = [
        service("a", "{app: a, version: v1}", "[{port: 80, targetPort: 80}]", "[{ip: 10.0.0.1}]"),
        dataplane("yes", "10.1.0.1", "[{port: 80, tags: {app: a, version: v1, zone: z}}]"),
        dataplane("no-version", "10.1.0.2", "[{port: 80, tags: {app: a}}]"),
        dataplane("other-version", "10.1.0.3", "[{port: 80, tags: {app: a, version: v2}}]"),
        dataplane("no-tags", "10.1.0.4", "[{port: 80}]"),
        dataplane("other-port", "10.1.0.5", "[{port: 81, tags: {app: a, version: v1}}]"),
        dataplane("second-inbound", "10.1.0.6", "[{port: 81, tags: {app: b}}, {port: 80, tags: {app: a, version: v1}}]"),
        // Selected through its first inbound; the untagged inbound on the target port serves.
        dataplane("other-inbound-serves", "10.1.0.7", "[{port: 81, tags: {app: a, version: v1}}, {port: 80, tags: {app: c}}]"),
        // Selected, but the only inbound on the target port is not ready.
        dataplane(
            "unhealthy",
            "10.1.0.8",
            "[{port: 81, tags: {app: a, version: v1}}, {port: 80, tags: {app: a, version: v1}, health: {ready: false}}]",
        ),
    ]
    .concat();
    assert_eq!(
        find(&routes_of(&text), "10.0.0.1", 80).backends[0].endpoints,
        sas(&["10.1.0.1:80", "10.1.0.6:80", "10.1.0.7:80"])
    );
}

#[test]
fn endpoint_address_and_port_come_from_the_inbound_first() {
    let text = [
        service("a", "{app: a}", "[{port: 80, targetPort: 80}]", "[{ip: 10.0.0.1}]"),
        dataplane("dp-address", "10.1.0.1", "[{port: 80, tags: {app: a}}]"),
        dataplane("inbound-address", "10.1.0.2", "[{port: 80, address: 10.2.0.2, serviceAddress: 127.0.0.1, tags: {app: a}}]"),
        dataplane("service-port", "10.1.0.3", "[{port: 80, servicePort: 8080, tags: {app: a}}]"),
        "---\ntype: Dataplane\nname: only-inbound-address\nnetworking:\n  inbound: [{port: 80, address: \"fd00::4\", tags: {app: a}}]\n"
            .to_string(),
    ]
    .concat();
    assert_eq!(
        find(&routes_of(&text), "10.0.0.1", 80).backends[0].endpoints,
        sas(&[
            "10.1.0.1:80",
            "10.1.0.3:8080",
            "10.2.0.2:80",
            "[fd00::4]:80"
        ])
    );
}

#[test]
fn target_port_matches_inbound_port_number_or_inbound_name_and_absent_matches_nothing() {
    let text = [
        service("a", "{app: a}", "[{port: 80, targetPort: 8080}, {port: 81, targetPort: web}, {port: 82}]", "[{ip: 10.0.0.1}]"),
        dataplane(
            "dp",
            "10.1.0.1",
            "[{port: 8080, tags: {app: a}}, {port: 9090, name: web, servicePort: 9999, tags: {app: a}}, {port: 82, name: '8080', tags: {app: a}}, {port: 80, tags: {app: a}}]",
        ),
    ]
    .concat();
    let routes = routes_of(&text);
    assert_eq!(
        find(&routes, "10.0.0.1", 80).backends[0].endpoints,
        sas(&["10.1.0.1:8080"])
    );
    assert_eq!(
        find(&routes, "10.0.0.1", 81).backends[0].endpoints,
        sas(&["10.1.0.1:9999"])
    );
    // Kuma compares a missing targetPort as 0: no inbound matches.
    assert_eq!(
        find(&routes, "10.0.0.1", 82).backends[0].endpoints,
        sas(&[])
    );
}

#[test]
fn endpoints_are_sorted_and_deduplicated() {
    let text = [
        service(
            "a",
            "{app: a}",
            "[{port: 80, targetPort: 80}]",
            "[{ip: 10.0.0.1}]",
        ),
        dataplane("dp-3", "10.1.0.3", "[{port: 80, tags: {app: a}}]"),
        dataplane("dp-1", "10.1.0.1", "[{port: 80, tags: {app: a}}]"),
        dataplane("dp-1-again", "10.1.0.1", "[{port: 80, tags: {app: a}}]"),
        dataplane(
            "dp-2",
            "10.1.0.2",
            "[{port: 80, tags: {app: a}}, {port: 80, tags: {app: a}}]",
        ),
    ]
    .concat();
    assert_eq!(
        find(&routes_of(&text), "10.0.0.1", 80).backends[0].endpoints,
        sas(&["10.1.0.1:80", "10.1.0.2:80", "10.1.0.3:80"])
    );
}

#[test]
fn service_without_selector_tags_has_no_endpoints() {
    for selector in ["{}", "null"] {
        let text = [
            service(
                "a",
                selector,
                "[{port: 80, targetPort: 80}]",
                "[{ip: 10.0.0.1}]",
            ),
            dataplane("dp", "10.1.0.1", "[{port: 80, tags: {app: a}}]"),
        ]
        .concat();
        let (routes, _, warnings) = resolve_text(&text);
        assert!(
            find(&routes, "10.0.0.1", 80).backends[0]
                .endpoints
                .is_empty(),
            "{selector}"
        );
        assert!(warnings.is_empty());
    }
}

#[test]
fn inbounds_without_any_address_are_no_endpoints() {
    // Validation rejects such a Dataplane; the resolver still must not invent an address.
    let text = [
        service(
            "a",
            "{app: a}",
            "[{port: 80, targetPort: 80}]",
            "[{ip: 10.0.0.1}]",
        ),
        "---\ntype: Dataplane\nname: none\nnetworking:\n  inbound: [{port: 80, tags: {app: a}}]\n"
            .to_string(),
        dataplane("ok", "10.1.0.1", "[{port: 80, tags: {app: a}}]"),
    ]
    .concat();
    let (config, _) = redirector_core::model::load_str(std::path::Path::new("x.yaml"), &text);
    let (resolution, _) = resolve::resolve_with(&config, &NoDns);
    assert_eq!(
        find(resolution.base_routes(), "10.0.0.1", 80).backends[0].endpoints,
        sas(&["10.1.0.1:80"])
    );
}

#[test]
fn legacy_outbound_protocol_is_the_common_protocol_tag_or_tcp_when_mixed() {
    let text = [
        dataplane("h1", "10.1.0.1", "[{port: 80, tags: {kuma.io/service: h, kuma.io/protocol: http}}]"),
        dataplane("h2", "10.1.0.2", "[{port: 80, tags: {kuma.io/service: h, kuma.io/protocol: http}}]"),
        dataplane("m1", "10.1.0.3", "[{port: 80, tags: {kuma.io/service: m, kuma.io/protocol: http}}]"),
        dataplane("m2", "10.1.0.4", "[{port: 80, tags: {kuma.io/service: m, kuma.io/protocol: http2}}]"),
        dataplane("n1", "10.1.0.5", "[{port: 80, tags: {kuma.io/service: n}}]"),
        "---\ntype: Dataplane\nname: client\nlabels: {redirector.io/cgroup: client}\nnetworking:\n  address: 10.2.0.1\n  inbound: [{port: 1, tags: {kuma.io/service: client}}]\n  outbound:\n    - {port: 10001, tags: {kuma.io/service: h}}\n    - {port: 10002, tags: {kuma.io/service: m}}\n    - {port: 10003, tags: {kuma.io/service: n}}\n    - {port: 10004, tags: {kuma.io/service: ghost}}\n".to_string(),
    ]
    .concat();
    let (resolution, errors, _) = resolve_full(&text);
    assert!(errors.is_empty(), "{errors:?}");
    let routes = &resolution.class_of("Dataplane/client").unwrap().routes;
    let protocols: Vec<(u16, Option<&str>)> = routes
        .iter()
        .map(|r| (r.port, r.app_protocol.as_deref()))
        .collect();
    assert_eq!(
        protocols,
        vec![
            (10001, Some("http")),
            (10002, Some("tcp")),
            (10003, None),
            (10004, None)
        ]
    );
    assert!(routes.iter().all(|r| r.vip == ip("127.0.0.1")));
}

// ---------------------------------------------------------------- meshes and namespaces

#[test]
fn meshes_do_not_mix() {
    let text = [
        service(
            "a",
            "{app: a}",
            "[{port: 80, targetPort: 80}]",
            "[{ip: 10.0.0.1}]",
        ),
        service(
            "b",
            "{app: b}",
            "[{port: 80, targetPort: 80}]",
            "[{ip: 10.0.0.2}]",
        ),
        service_in(
            "other",
            "a",
            "{app: a}",
            "[{port: 80, targetPort: 80}]",
            "[{ip: 10.9.0.1}]",
        ),
        service_in(
            "other",
            "c",
            "{app: c}",
            "[{port: 80, targetPort: 80}]",
            "[{ip: 10.9.0.3}]",
        ),
        dataplane("a-default", "10.1.0.1", "[{port: 80, tags: {app: a}}]"),
        dataplane_in(
            "other",
            "a-other",
            "10.9.1.1",
            "[{port: 80, tags: {app: a}}]",
        ),
        dataplane_in(
            "other",
            "b-other",
            "10.9.1.2",
            "[{port: 80, tags: {app: b}}]",
        ),
        route_in(
            "other",
            "r",
            &to_backends(
                "{kind: MeshService, name: a}",
                "[{kind: MeshService, name: b, port: 80}, {kind: MeshService, name: c, port: 80}]",
            ),
        ),
    ]
    .concat();
    let (routes, errors, warnings) = resolve_text(&text);
    assert!(errors.is_empty());
    let default_a = find(&routes, "10.0.0.1", 80);
    assert_eq!(
        (default_a.mesh.as_str(), default_a.policy.as_deref()),
        ("default", None)
    );
    assert_eq!(
        default_a.backends,
        vec![backend("MeshService/a:80", 1, &["10.1.0.1:80"])]
    );
    // b-other is in mesh `other`: not an endpoint of default's b.
    assert!(
        find(&routes, "10.0.0.2", 80).backends[0]
            .endpoints
            .is_empty()
    );
    let other_a = find(&routes, "10.9.0.1", 80);
    assert_eq!(
        (other_a.mesh.as_str(), other_a.policy.as_deref()),
        ("other", Some("MeshTCPRoute/r"))
    );
    // `b` exists only in mesh default: dropped; `c` exists in `other`, without endpoints.
    assert_eq!(other_a.backends, vec![backend("MeshService/c:80", 1, &[])]);
    assert_eq!(
        warnings,
        vec![t(
            "MeshTCPRoute/r",
            "spec.to[0].rules[0].default.backendRefs[0]",
            "MeshService/b:80 does not exist; its share is dropped and the other backends share the traffic"
        )]
    );
}

const KUBERNETES_SERVICES: &str = r#"
---
apiVersion: kuma.io/v1alpha1
kind: MeshService
metadata: {name: web, namespace: blue}
spec: {selector: {dataplaneTags: {app: web, ns: blue}}, ports: [{port: 80, targetPort: 80}]}
status: {vips: [{ip: 10.0.1.1}]}
---
apiVersion: kuma.io/v1alpha1
kind: MeshService
metadata: {name: web, namespace: green}
spec: {selector: {dataplaneTags: {app: web, ns: green}}, ports: [{port: 80, targetPort: 80}]}
status: {vips: [{ip: 10.0.2.1}]}
---
type: Dataplane
name: blue-1
networking: {address: 10.1.1.1, inbound: [{port: 80, tags: {app: web, ns: blue}}]}
---
type: Dataplane
name: green-1
networking: {address: 10.1.2.1, inbound: [{port: 80, tags: {app: web, ns: green}}]}
"#;

#[test]
fn destination_namespace_must_match_when_given() {
    let text = KUBERNETES_SERVICES.to_string()
        + &route(
            "r",
            &to_backends(
                "{kind: MeshService, name: web, namespace: blue}",
                "[{kind: MeshService, name: web, namespace: green, port: 80}]",
            ),
        );
    let routes = routes_of(&text);
    assert_eq!(
        find(&routes, "10.0.1.1", 80).backends,
        vec![backend("MeshService/web:80", 1, &["10.1.2.1:80"])]
    );
    assert_eq!(
        find(&routes, "10.0.1.1", 80).policy.as_deref(),
        Some("MeshTCPRoute/r")
    );
    assert_eq!(find(&routes, "10.0.2.1", 80).policy, None);
}

#[test]
fn destination_without_namespace_matches_every_namespace() {
    let text = KUBERNETES_SERVICES.to_string()
        + &route(
            "r",
            &to_backends(
                "{kind: MeshService, name: web}",
                "[{kind: MeshService, name: web, namespace: green, port: 80}]",
            ),
        );
    let routes = routes_of(&text);
    for vip in ["10.0.1.1", "10.0.2.1"] {
        assert_eq!(
            find(&routes, vip, 80).policy.as_deref(),
            Some("MeshTCPRoute/r")
        );
        assert_eq!(
            find(&routes, vip, 80).backends[0].endpoints,
            sas(&["10.1.2.1:80"])
        );
    }
}

#[test]
fn same_named_services_in_two_namespaces_keep_their_own_endpoints() {
    let routes = routes_of(KUBERNETES_SERVICES);
    assert_eq!(
        find(&routes, "10.0.1.1", 80).backends[0].endpoints,
        sas(&["10.1.1.1:80"])
    );
    assert_eq!(
        find(&routes, "10.0.2.1", 80).backends[0].endpoints,
        sas(&["10.1.2.1:80"])
    );
}

// ---------------------------------------------------------------- entries that match nothing

#[test]
fn destination_that_matches_nothing_has_no_effect() {
    let text = four_services()
        + &route(
            "r",
            "[{targetRef: {kind: MeshService, name: ghost}},
              {targetRef: {kind: MeshService, name: a, sectionName: grpc}},
              {targetRef: {kind: MeshService, name: a, sectionName: '8080'}},
              {targetRef: {kind: MeshService, name: a, _port: 8080}},
              {targetRef: {kind: MeshService, name: b, sectionName: '80'}, rules: [{default: {backendRefs: [{kind: MeshService, name: c, port: 80}]}}]}]",
        );
    let (routes, errors, _) = resolve_text(&text);
    assert!(errors.is_empty());
    for (vip, port) in [
        ("10.0.0.1", 80),
        ("10.0.0.1", 443),
        ("10.0.0.3", 80),
        ("10.0.0.4", 80),
    ] {
        assert_eq!(find(&routes, vip, port).policy, None, "{vip}:{port}");
    }
    assert_eq!(
        shape(find(&routes, "10.0.0.2", 80)),
        (Some("MeshTCPRoute/r"), vec![("MeshService/c:80", 1)])
    );
}

#[test]
fn policy_in_another_mesh_has_no_effect() {
    let text = four_services()
        + &route_in(
            "other",
            "r",
            "[{targetRef: {kind: MeshService, name: a, sectionName: http}}]",
        );
    let routes = routes_of(&text);
    assert!(routes.iter().all(|r| r.policy.is_none()), "{routes:#?}");
}

// ---------------------------------------------------------------- address conflicts

#[test]
fn shared_address_and_port_is_an_error() {
    let text = [
        service(
            "a",
            "{app: a}",
            "[{port: 80, targetPort: 80}, {port: 81, targetPort: 81}]",
            "[{ip: 10.0.0.1}]",
        ),
        service(
            "b",
            "{app: b}",
            "[{port: 80, targetPort: 80}]",
            "[{ip: 10.0.0.1}]",
        ),
        service(
            "c",
            "{app: c}",
            "[{port: 81, targetPort: 81}]",
            "[{ip: 10.0.0.2}]",
        ),
    ]
    .concat();
    let (_, errors, _) = resolve_text(&text);
    assert_eq!(
        errors,
        vec![t(
            "MeshService/b",
            "status.vips",
            "10.0.0.1:80 is also an address of MeshService/a"
        )]
    );
}

#[test]
fn shared_address_across_meshes_is_an_error() {
    let text = [
        service(
            "a",
            "{app: a}",
            "[{port: 80, targetPort: 80}]",
            "[{ip: \"fd00::1\"}]",
        ),
        service_in(
            "other",
            "b",
            "{app: b}",
            "[{port: 80, targetPort: 80}]",
            "[{ip: \"fd00::1\"}]",
        ),
    ]
    .concat();
    let (_, errors, _) = resolve_text(&text);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].1, "status.vips");
    assert!(errors[0].2.ends_with("in mesh \"default\""), "{errors:?}");
}

#[test]
fn ipv6_address_conflict_names_the_destination_in_brackets() {
    let text = [
        service(
            "a",
            "{app: a}",
            "[{port: 443, targetPort: 443}]",
            "[{ip: \"fd00::1\"}]",
        ),
        service(
            "b",
            "{app: b}",
            "[{port: 443, targetPort: 443}]",
            "[{ip: \"fd00::1\"}]",
        ),
    ]
    .concat();
    let (_, errors, _) = resolve_text(&text);
    assert_eq!(
        errors,
        vec![t(
            "MeshService/b",
            "status.vips",
            "[fd00::1]:443 is also an address of MeshService/a"
        )]
    );
}

#[test]
fn ipv4_and_ipv4_mapped_vips_are_the_same_address() {
    let text = [
        service(
            "a",
            "{app: a}",
            "[{port: 80, targetPort: 80}]",
            "[{ip: 10.0.0.1}]",
        ),
        service(
            "b",
            "{app: b}",
            "[{port: 80, targetPort: 80}]",
            "[{ip: \"::ffff:10.0.0.1\"}]",
        ),
    ]
    .concat();
    let (_, errors, _) = resolve_text(&text);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].1, "status.vips");
}

#[test]
fn external_service_address_conflict_is_reported_on_its_vip() {
    let text = service(
        "a",
        "{app: a}",
        "[{port: 80, targetPort: 80}]",
        "[{ip: 10.0.0.1}]",
    ) + "---\ntype: MeshExternalService\nname: ext\nspec: {match: {type: HostnameGenerator, port: 80, protocol: tcp}, endpoints: [{address: 192.0.2.1, port: 80}]}\nstatus: {vip: {ip: 10.0.0.1}}\n";
    let (_, errors, _) = resolve_text(&text);
    assert_eq!(
        errors,
        vec![t(
            "MeshExternalService/ext",
            "status.vip",
            "10.0.0.1:80 is also an address of MeshService/a"
        )]
    );
}

// ---------------------------------------------------------------- workloads and classes

fn workload(name: &str, cgroup: &str, address: &str, inbound: &str) -> String {
    format!(
        "---\ntype: Dataplane\nname: {name}\nlabels: {{redirector.io/cgroup: {cgroup}}}\nnetworking:\n  address: {address}\n  inbound: {inbound}\n"
    )
}

#[test]
fn workloads_get_their_own_class_only_when_their_routes_differ() {
    let text = four_services()
        + &workload(
            "plain",
            "plain.slice",
            "10.2.0.1",
            "[{port: 9000, tags: {kuma.io/service: plain}}]",
        )
        + &workload(
            "front-1",
            "front/1",
            "10.2.0.2",
            "[{port: 9000, tags: {kuma.io/service: front}}]",
        )
        + &workload(
            "front-2",
            "front/2",
            "10.2.0.3",
            "[{port: 9000, tags: {kuma.io/service: front}}]",
        )
        + "---\ntype: MeshTCPRoute\nname: front\nspec:\n  targetRef: {kind: MeshService, name: front}\n  to: [{targetRef: {kind: MeshService, name: a, sectionName: http}, rules: [{default: {backendRefs: [{kind: MeshService, name: b, port: 80}]}}]}]\n";
    let (resolution, errors, _) = resolve_full(&text);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(resolution.classes.len(), 2);
    assert_eq!(resolution.classes[0].id, BASE_CLASS);
    let classes: Vec<(&str, &str, u32)> = resolution
        .workloads
        .iter()
        .map(|w| (w.dataplane.as_str(), w.cgroup.to_str().unwrap(), w.class))
        .collect();
    assert_eq!(
        classes,
        // In key order (kind, mesh, namespace, name), not file order.
        vec![
            ("Dataplane/front-1", "front/1", 1),
            ("Dataplane/front-2", "front/2", 1),
            ("Dataplane/plain", "plain.slice", 0)
        ]
    );
    assert_eq!(resolution.class_of("Dataplane/front-2").unwrap().id, 1);
    assert_eq!(resolution.class_of("Dataplane/plain").unwrap().id, 0);
    assert!(
        resolution.class_of("Dataplane/a-1").is_none(),
        "a Dataplane without the cgroup label is no workload"
    );
    let front = resolution.class_of("Dataplane/front-1").unwrap();
    assert_eq!(
        shape(find(&front.routes, "10.0.0.1", 80)),
        (Some("MeshTCPRoute/front"), vec![("MeshService/b:80", 1)])
    );
    assert_eq!(find(resolution.base_routes(), "10.0.0.1", 80).policy, None);
}

#[test]
fn workload_cgroup_must_be_relative_and_unique() {
    let text = four_services()
        + &workload(
            "abs",
            "/sys/fs/cgroup/x",
            "10.2.0.1",
            "[{port: 1, tags: {app: x}}]",
        )
        + &workload("up", "a/../b", "10.2.0.2", "[{port: 1, tags: {app: x}}]")
        + &workload("first", "same", "10.2.0.3", "[{port: 1, tags: {app: x}}]")
        + &workload("second", "same", "10.2.0.4", "[{port: 1, tags: {app: x}}]");
    let (resolution, errors, _) = resolve_full(&text);
    let path = "labels[\"redirector.io/cgroup\"]";
    assert_eq!(
        errors,
        // Sorted by file, resource, path and message.
        vec![
            t(
                "Dataplane/abs",
                path,
                "\"/sys/fs/cgroup/x\" must be a relative path below the --cgroup directory, without `..`"
            ),
            t(
                "Dataplane/second",
                path,
                "cgroup \"same\" is already bound to Dataplane/first"
            ),
            t(
                "Dataplane/up",
                path,
                "\"a/../b\" must be a relative path below the --cgroup directory, without `..`"
            ),
        ]
    );
    let bound: Vec<&str> = resolution
        .workloads
        .iter()
        .map(|w| w.dataplane.as_str())
        .collect();
    assert_eq!(bound, vec!["Dataplane/first"]);
}

#[test]
fn resolve_of_empty_config_is_one_empty_base_class() {
    let (resolution, problems) = resolve::resolve_with(&Config::default(), &NoDns);
    assert!(problems.is_empty());
    assert_eq!(resolution.classes.len(), 1);
    assert_eq!(resolution.classes[0].id, BASE_CLASS);
    assert!(resolution.base_routes().is_empty() && resolution.workloads.is_empty());
}
