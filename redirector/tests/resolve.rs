//! `redirector::resolve`: which route serves which service address and port,
//! with Kuma's semantics, and which endpoints each backend has.

mod common;

use common::{Triple, check, dataplane, dataplane_in, route, route_in, service, service_in, t, to_backends, triples};
use redirector::{
    model::{Config, Severity},
    resolve::{self, ResolvedBackend, ResolvedRoute},
};
use std::net::{IpAddr, SocketAddr};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn sas(list: &[&str]) -> Vec<SocketAddr> {
    list.iter().map(|s| sa(s)).collect()
}

/// Loads and validates `text` (which must have no errors), then resolves it.
fn resolve_text(text: &str) -> (Vec<ResolvedRoute>, Vec<Triple>, Vec<Triple>) {
    let (config, problems) = check(text);
    let errors = triples(&problems, Severity::Error);
    assert!(errors.is_empty(), "input has errors: {errors:#?}\n{text}");
    let (routes, problems) = resolve::resolve(&config);
    (
        routes,
        triples(&problems, Severity::Error),
        triples(&problems, Severity::Warning),
    )
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
        route.backends.iter().map(|b| (b.name.as_str(), b.weight)).collect(),
    )
}

/// Service `a` (ports 80 `http` and 443, VIP 10.0.0.1) and services `b`, `c`,
/// `d` (port 80, VIPs 10.0.0.2-4), each with one dataplane.
fn four_services() -> String {
    [
        service(
            "a",
            "{app: a}",
            "[{port: 80, name: http}, {port: 443}]",
            "[{ip: 10.0.0.1}]",
        ),
        service("b", "{app: b}", "[{port: 80}]", "[{ip: 10.0.0.2}]"),
        service("c", "{app: c}", "[{port: 80}]", "[{ip: 10.0.0.3}]"),
        service("d", "{app: d}", "[{port: 80}]", "[{ip: 10.0.0.4}]"),
        dataplane(
            "a-1",
            "10.1.0.1",
            "[{port: 80, tags: {app: a}}, {port: 443, tags: {app: a}}]",
        ),
        dataplane("b-1", "10.1.0.2", "[{port: 80, tags: {app: b}}]"),
        dataplane("c-1", "10.1.0.3", "[{port: 80, tags: {app: c}}]"),
        dataplane("d-1", "10.1.0.4", "[{port: 80, tags: {app: d}}]"),
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
            "[{port: 80}, {port: 443, targetPort: 8443}]",
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
    assert!(errors.is_empty() && warnings.is_empty(), "{errors:?} {warnings:?}");
    let expected = |vip: &str, port: u16, endpoints: &[&str]| ResolvedRoute {
        mesh: "default".into(),
        service: "MeshService/a".into(),
        vip: ip(vip),
        port,
        policy: None,
        backends: vec![backend(&format!("MeshService/a:{port}"), 1, endpoints)],
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
        service("novip", "{app: a}", "[{port: 80}]", "[]"),
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
            "[{port: 9000}, {port: 80}]",
            "[{ip: 10.0.0.9}, {ip: \"::1\"}]",
        ),
        service("a", "{app: a}", "[{port: 443}]", "[{ip: 10.0.0.10}, {ip: 10.0.0.2}]"),
    ]
    .concat();
    let got: Vec<SocketAddr> = routes_of(&text)
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
                "[{kind: MeshService, name: b, weight: 3}, {kind: MeshService, name: c}]",
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
    }
    assert_eq!(find(&routes, "10.0.0.2", 80).policy, None);
}

#[test]
fn backends_keep_their_order_and_weights_including_zero() {
    let text = four_services()
        + &route(
            "r",
            &to_backends(
                "{kind: MeshService, name: a}",
                "[{kind: MeshService, name: d, weight: 0}, {kind: MeshService, name: b, weight: 4294967295}, {kind: MeshService, name: c, weight: 0}]",
            ),
        );
    let routes = routes_of(&text);
    let r = find(&routes, "10.0.0.1", 80);
    assert_eq!(
        shape(r),
        (
            Some("MeshTCPRoute/r"),
            vec![
                ("MeshService/d:80", 0),
                ("MeshService/b:80", u32::MAX),
                ("MeshService/c:80", 0)
            ]
        )
    );
}

#[test]
fn section_name_selects_one_port_by_name_or_number() {
    for section in ["http", "'80'", "\"80\""] {
        let text = four_services()
            + &route(
                "r",
                &to_backends(
                    &format!("{{kind: MeshService, name: a, sectionName: {section}}}"),
                    "[{kind: MeshService, name: b}]",
                ),
            );
        let routes = routes_of(&text);
        assert_eq!(
            shape(find(&routes, "10.0.0.1", 80)),
            (Some("MeshTCPRoute/r"), vec![("MeshService/b:80", 1)]),
            "{section}"
        );
        assert_eq!(
            shape(find(&routes, "10.0.0.1", 443)),
            (None, vec![("MeshService/a:443", 1)]),
            "{section}"
        );
    }
    let text = four_services()
        + &route(
            "r",
            &to_backends(
                "{kind: MeshService, name: a, sectionName: '443'}",
                "[{kind: MeshService, name: b}]",
            ),
        );
    let routes = routes_of(&text);
    assert_eq!(find(&routes, "10.0.0.1", 80).policy, None);
    assert_eq!(find(&routes, "10.0.0.1", 443).policy.as_deref(), Some("MeshTCPRoute/r"));
}

#[test]
fn port_hint_selects_one_port_when_section_name_is_absent() {
    let text = four_services()
        + &route(
            "r",
            &to_backends(
                "{kind: MeshService, name: a, _port: 443}",
                "[{kind: MeshService, name: b}]",
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
                "[{kind: MeshService, name: b}]",
            ),
        );
    let routes = routes_of(&text);
    assert_eq!(find(&routes, "10.0.0.1", 80).policy.as_deref(), Some("MeshTCPRoute/r"));
    assert_eq!(find(&routes, "10.0.0.1", 443).policy, None);
}

#[test]
fn port_entry_beats_whole_service_entry_whatever_the_policy_names() {
    let text = four_services()
        + &route(
            "a-whole",
            &to_backends("{kind: MeshService, name: a}", "[{kind: MeshService, name: b}]"),
        )
        + &route(
            "z-port",
            &to_backends(
                "{kind: MeshService, name: a, sectionName: http}",
                "[{kind: MeshService, name: c}]",
            ),
        );
    let routes = routes_of(&text);
    assert_eq!(
        shape(find(&routes, "10.0.0.1", 80)),
        (Some("MeshTCPRoute/z-port"), vec![("MeshService/c:80", 1)])
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
        &to_backends("{kind: MeshService, name: a}", "[{kind: MeshService, name: c}]"),
    );
    let beta = route(
        "beta",
        &to_backends("{kind: MeshService, name: a}", "[{kind: MeshService, name: b}]"),
    );
    let alpha_port = route(
        "alpha-port",
        &to_backends(
            "{kind: MeshService, name: a, sectionName: '443'}",
            "[{kind: MeshService, name: d}]",
        ),
    );
    let beta_port = route(
        "beta-port",
        &to_backends(
            "{kind: MeshService, name: a, sectionName: '443'}",
            "[{kind: MeshService, name: b}]",
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
            (Some("MeshTCPRoute/alpha-port"), vec![("MeshService/d:80", 1)])
        );
    }
}

#[test]
fn to_entry_without_rules_sends_traffic_to_the_destination_itself() {
    for to in [
        "[{targetRef: {kind: MeshService, name: a}}]",
        "[{targetRef: {kind: MeshService, name: a}, rules: []}]",
    ] {
        let text = four_services()
            + &route("a-self", to)
            + &route(
                "b-split",
                &to_backends("{kind: MeshService, name: a}", "[{kind: MeshService, name: b}]"),
            );
        let routes = routes_of(&text);
        let r = find(&routes, "10.0.0.1", 443);
        assert_eq!(r.policy.as_deref(), Some("MeshTCPRoute/a-self"), "{to}");
        assert_eq!(
            r.backends,
            vec![backend("MeshService/a:443", 1, &["10.1.0.1:443"])],
            "{to}"
        );
    }
}

#[test]
fn one_policy_can_route_several_destinations() {
    let text = four_services()
        + &route(
            "r",
            "[{targetRef: {kind: MeshService, name: a}, rules: [{default: {backendRefs: [{kind: MeshService, name: b}]}}]},
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
        vec![backend("MeshService/ghost", 1, &[])]
    );
    assert_eq!(
        warnings,
        vec![t(
            "MeshTCPRoute/r",
            "spec.to[1].rules[0].default.backendRefs[0].name",
            "MeshService \"ghost\" does not exist (yet); its share of connections is refused"
        )]
    );
}

// ---------------------------------------------------------------- backendRefs

#[test]
fn backend_to_missing_service_is_a_warning_and_has_no_endpoints() {
    let text = four_services()
        + &route(
            "r",
            &to_backends(
                "{kind: MeshService, name: a, sectionName: http}",
                "[{kind: MeshService, name: b, weight: 9}, {kind: MeshService, name: ghost, weight: 1}]",
            ),
        );
    let (routes, errors, warnings) = resolve_text(&text);
    assert!(errors.is_empty());
    assert_eq!(
        find(&routes, "10.0.0.1", 80).backends,
        vec![
            backend("MeshService/b:80", 9, &["10.1.0.2:80"]),
            backend("MeshService/ghost", 1, &[])
        ]
    );
    assert_eq!(
        warnings,
        vec![t(
            "MeshTCPRoute/r",
            "spec.to[0].rules[0].default.backendRefs[1].name",
            "MeshService \"ghost\" does not exist (yet); its share of connections is refused"
        )]
    );
}

#[test]
fn backend_port_absent_uses_the_same_port_number() {
    let text = [
        service("a", "{app: a}", "[{port: 443}]", "[{ip: 10.0.0.1}]"),
        service(
            "b",
            "{app: b}",
            "[{port: 80}, {port: 443, targetPort: 8443}]",
            "[{ip: 10.0.0.2}]",
        ),
        dataplane(
            "b-1",
            "10.1.0.2",
            "[{port: 80, tags: {app: b}}, {port: 8443, tags: {app: b}}]",
        ),
        route(
            "r",
            &to_backends("{kind: MeshService, name: a}", "[{kind: MeshService, name: b}]"),
        ),
    ]
    .concat();
    assert_eq!(
        find(&routes_of(&text), "10.0.0.1", 443).backends,
        vec![backend("MeshService/b:443", 1, &["10.1.0.2:8443"])]
    );
}

#[test]
fn backend_port_absent_uses_the_only_port() {
    let text = four_services()
        + &route(
            "r",
            &to_backends(
                "{kind: MeshService, name: a, sectionName: '443'}",
                "[{kind: MeshService, name: b}]",
            ),
        );
    assert_eq!(
        find(&routes_of(&text), "10.0.0.1", 443).backends,
        vec![backend("MeshService/b:80", 1, &["10.1.0.2:80"])]
    );
}

#[test]
fn backend_port_absent_prefers_the_same_number_among_several_ports() {
    let text = four_services()
        + &route(
            "r",
            &to_backends("{kind: MeshService, name: b}", "[{kind: MeshService, name: a}]"),
        );
    assert_eq!(
        find(&routes_of(&text), "10.0.0.2", 80).backends,
        vec![backend("MeshService/a:80", 1, &["10.1.0.1:80"])]
    );
}

#[test]
fn backend_port_absent_is_an_error_when_ambiguous() {
    let text = [
        service("a", "{app: a}", "[{port: 8080}, {port: 443}]", "[{ip: 10.0.0.1}]"),
        service("b", "{app: b}", "[{port: 80}]", "[{ip: 10.0.0.2}]"),
        route(
            "r",
            &to_backends(
                "{kind: MeshService, name: b}",
                "[{kind: MeshService, name: b}, {kind: MeshService, name: a}]",
            ),
        ),
    ]
    .concat();
    let (routes, errors, _) = resolve_text(&text);
    assert_eq!(
        errors,
        vec![t(
            "MeshTCPRoute/r",
            "spec.to[0].rules[0].default.backendRefs[1].port",
            "must be set: MeshService \"a\" has no port 80 and more than one port"
        )]
    );
    assert_eq!(
        find(&routes, "10.0.0.2", 80).backends[1],
        backend("MeshService/a", 1, &[])
    );
}

#[test]
fn backend_port_selects_that_port_and_its_target() {
    let text = [
        service("a", "{app: a}", "[{port: 80}]", "[{ip: 10.0.0.1}]"),
        service(
            "b",
            "{app: b}",
            "[{port: 80}, {port: 9000, targetPort: admin}]",
            "[{ip: 10.0.0.2}]",
        ),
        dataplane(
            "b-1",
            "10.1.0.2",
            "[{port: 80, tags: {app: b}}, {port: 19000, name: admin, tags: {app: b}}]",
        ),
    ]
    .concat();
    for port in ["port: 9000", "_port: 9000"] {
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
fn backend_port_that_does_not_exist_is_a_warning_and_has_no_endpoints() {
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
    assert_eq!(
        find(&routes, "10.0.0.1", 80).backends,
        vec![backend("MeshService/b", 2, &[])]
    );
    assert_eq!(
        warnings,
        vec![t(
            "MeshTCPRoute/r",
            "spec.to[0].rules[0].default.backendRefs[0].port",
            "MeshService \"b\" has no port 81; its share of connections is refused"
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
                "[{kind: MeshService, name: a, weight: 1}, {kind: MeshService, name: b, weight: 1}]",
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
fn endpoints_need_every_selector_tag_and_the_target_port() {
    let text = [
        service("a", "{app: a, version: v1}", "[{port: 80}]", "[{ip: 10.0.0.1}]"),
        dataplane("yes", "10.1.0.1", "[{port: 80, tags: {app: a, version: v1, zone: z}}]"),
        dataplane("no-version", "10.1.0.2", "[{port: 80, tags: {app: a}}]"),
        dataplane("other-version", "10.1.0.3", "[{port: 80, tags: {app: a, version: v2}}]"),
        dataplane("no-tags", "10.1.0.4", "[{port: 80}]"),
        dataplane("other-port", "10.1.0.5", "[{port: 81, tags: {app: a, version: v1}}]"),
        dataplane(
            "second-inbound",
            "10.1.0.6",
            "[{port: 81, tags: {app: b}}, {port: 80, tags: {app: a, version: v1}}]",
        ),
    ]
    .concat();
    assert_eq!(
        find(&routes_of(&text), "10.0.0.1", 80).backends[0].endpoints,
        sas(&["10.1.0.1:80", "10.1.0.6:80"])
    );
}

#[test]
fn endpoint_address_and_port_come_from_the_inbound_first() {
    let text = [
        service("a", "{app: a}", "[{port: 80}]", "[{ip: 10.0.0.1}]"),
        dataplane("dp-address", "10.1.0.1", "[{port: 80, tags: {app: a}}]"),
        dataplane("inbound-address", "10.1.0.2", "[{port: 80, address: 10.2.0.2, serviceAddress: 127.0.0.1, tags: {app: a}}]"),
        dataplane("service-port", "10.1.0.3", "[{port: 80, servicePort: 8080, tags: {app: a}}]"),
        "---\ntype: Dataplane\nname: only-inbound-address\nnetworking:\n  inbound: [{port: 80, address: \"fd00::4\", tags: {app: a}}]\n".to_string(),
    ]
    .concat();
    assert_eq!(
        find(&routes_of(&text), "10.0.0.1", 80).backends[0].endpoints,
        sas(&["10.1.0.1:80", "10.1.0.3:8080", "10.2.0.2:80", "[fd00::4]:80"])
    );
}

#[test]
fn target_port_matches_inbound_port_number_or_inbound_name() {
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
    assert_eq!(
        find(&routes, "10.0.0.1", 82).backends[0].endpoints,
        sas(&["10.1.0.1:82"])
    );
}

#[test]
fn endpoints_are_sorted_and_deduplicated() {
    let text = [
        service("a", "{app: a}", "[{port: 80}]", "[{ip: 10.0.0.1}]"),
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
            service("a", selector, "[{port: 80}]", "[{ip: 10.0.0.1}]"),
            dataplane("dp", "10.1.0.1", "[{port: 80, tags: {app: a}}]"),
        ]
        .concat();
        let (routes, _, warnings) = resolve_text(&text);
        assert!(
            find(&routes, "10.0.0.1", 80).backends[0].endpoints.is_empty(),
            "{selector}"
        );
        assert!(warnings.is_empty());
    }
}

#[test]
fn endpoints_function_skips_inbounds_without_any_address() {
    let text = [
        service("a", "{app: a}", "[{port: 80}]", "[{ip: 10.0.0.1}]"),
        "---\ntype: Dataplane\nname: none\nnetworking:\n  inbound: [{port: 80, tags: {app: a}}]\n".to_string(),
        dataplane("ok", "10.1.0.1", "[{port: 80, tags: {app: a}}]"),
    ]
    .concat();
    let (config, _) = redirector::model::load_str(std::path::Path::new("x.yaml"), &text);
    let svc = &config.services[0];
    let port = &svc.spec.ports.as_ref().unwrap()[0];
    assert_eq!(resolve::endpoints(&config.dataplanes, svc, port), sas(&["10.1.0.1:80"]));
    assert!(resolve::endpoints(&[], svc, port).is_empty());
}

// ---------------------------------------------------------------- meshes and namespaces

#[test]
fn meshes_do_not_mix() {
    let text = [
        service("a", "{app: a}", "[{port: 80}]", "[{ip: 10.0.0.1}]"),
        service("b", "{app: b}", "[{port: 80}]", "[{ip: 10.0.0.2}]"),
        service_in("other", "a", "{app: a}", "[{port: 80}]", "[{ip: 10.9.0.1}]"),
        service_in("other", "c", "{app: c}", "[{port: 80}]", "[{ip: 10.9.0.3}]"),
        dataplane("a-default", "10.1.0.1", "[{port: 80, tags: {app: a}}]"),
        dataplane_in("other", "a-other", "10.9.1.1", "[{port: 80, tags: {app: a}}]"),
        dataplane_in("other", "b-other", "10.9.1.2", "[{port: 80, tags: {app: b}}]"),
        route_in(
            "other",
            "r",
            &to_backends(
                "{kind: MeshService, name: a}",
                "[{kind: MeshService, name: b}, {kind: MeshService, name: c}]",
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
    assert!(find(&routes, "10.0.0.2", 80).backends[0].endpoints.is_empty());
    let other_a = find(&routes, "10.9.0.1", 80);
    assert_eq!(
        (other_a.mesh.as_str(), other_a.policy.as_deref()),
        ("other", Some("MeshTCPRoute/r"))
    );
    assert_eq!(
        other_a.backends,
        vec![backend("MeshService/b", 1, &[]), backend("MeshService/c:80", 1, &[])]
    );
    assert_eq!(
        warnings,
        vec![t(
            "MeshTCPRoute/r",
            "spec.to[0].rules[0].default.backendRefs[0].name",
            "MeshService \"b\" does not exist (yet); its share of connections is refused"
        )]
    );
}

const KUBERNETES_SERVICES: &str = r#"
---
apiVersion: kuma.io/v1alpha1
kind: MeshService
metadata: {name: web, namespace: blue}
spec: {selector: {dataplaneTags: {app: web, ns: blue}}, ports: [{port: 80}]}
status: {vips: [{ip: 10.0.1.1}]}
---
apiVersion: kuma.io/v1alpha1
kind: MeshService
metadata: {name: web, namespace: green}
spec: {selector: {dataplaneTags: {app: web, ns: green}}, ports: [{port: 80}]}
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
                "[{kind: MeshService, name: web, namespace: green}]",
            ),
        );
    let routes = routes_of(&text);
    assert_eq!(
        find(&routes, "10.0.1.1", 80).backends,
        vec![backend("MeshService/web:80", 1, &["10.1.2.1:80"])]
    );
    assert_eq!(find(&routes, "10.0.1.1", 80).policy.as_deref(), Some("MeshTCPRoute/r"));
    assert_eq!(find(&routes, "10.0.2.1", 80).policy, None);
}

#[test]
fn destination_without_namespace_matches_every_namespace() {
    let text = KUBERNETES_SERVICES.to_string() + &route("r", "[{targetRef: {kind: MeshService, name: web}}]");
    let routes = routes_of(&text);
    assert_eq!(find(&routes, "10.0.1.1", 80).policy.as_deref(), Some("MeshTCPRoute/r"));
    assert_eq!(find(&routes, "10.0.2.1", 80).policy.as_deref(), Some("MeshTCPRoute/r"));
    assert_eq!(
        find(&routes, "10.0.2.1", 80).backends[0].endpoints,
        sas(&["10.1.2.1:80"])
    );
}

// ---------------------------------------------------------------- warnings and errors

#[test]
fn destination_that_matches_nothing_is_a_warning() {
    let text = four_services()
        + &route(
            "r",
            "[{targetRef: {kind: MeshService, name: ghost}},
              {targetRef: {kind: MeshService, name: a, sectionName: grpc}},
              {targetRef: {kind: MeshService, name: a, sectionName: '8080'}},
              {targetRef: {kind: MeshService, name: a, _port: 8080}},
              {targetRef: {kind: MeshService, name: a, sectionName: http}}]",
        );
    let (_, errors, warnings) = resolve_text(&text);
    assert!(errors.is_empty());
    let no_port = "no port of MeshService \"a\" matches this targetRef; this entry has no effect";
    assert_eq!(
        warnings,
        vec![
            t(
                "MeshTCPRoute/r",
                "spec.to[0].targetRef",
                "MeshService \"ghost\" does not exist (yet); this entry has no effect"
            ),
            t("MeshTCPRoute/r", "spec.to[1].targetRef", no_port),
            t("MeshTCPRoute/r", "spec.to[2].targetRef", no_port),
            t("MeshTCPRoute/r", "spec.to[3].targetRef", no_port),
        ]
    );
}

#[test]
fn destination_in_another_mesh_is_a_warning() {
    let text = four_services() + &route_in("other", "r", "[{targetRef: {kind: MeshService, name: a}}]");
    let (_, _, warnings) = resolve_text(&text);
    assert_eq!(
        warnings,
        vec![t(
            "MeshTCPRoute/r",
            "spec.to[0].targetRef",
            "MeshService \"a\" does not exist (yet); this entry has no effect"
        )]
    );
}

#[test]
fn shared_address_and_port_is_an_error() {
    let text = [
        service("a", "{app: a}", "[{port: 80}, {port: 81}]", "[{ip: 10.0.0.1}]"),
        service("b", "{app: b}", "[{port: 80}]", "[{ip: 10.0.0.1}]"),
        service("c", "{app: c}", "[{port: 81}]", "[{ip: 10.0.0.2}]"),
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
        service("a", "{app: a}", "[{port: 80}]", "[{ip: \"fd00::1\"}]"),
        service_in("other", "b", "{app: b}", "[{port: 80}]", "[{ip: \"fd00::1\"}]"),
    ]
    .concat();
    let (_, errors, _) = resolve_text(&text);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].1, "status.vips");
}

#[test]
fn ipv6_address_conflict_names_the_destination_in_brackets() {
    let text = [
        service("a", "{app: a}", "[{port: 443}]", "[{ip: \"fd00::1\"}]"),
        service("b", "{app: b}", "[{port: 443}]", "[{ip: \"fd00::1\"}]"),
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
        service("a", "{app: a}", "[{port: 80}]", "[{ip: 10.0.0.1}]"),
        service("b", "{app: b}", "[{port: 80}]", "[{ip: \"::ffff:10.0.0.1\"}]"),
    ]
    .concat();
    let (_, errors, _) = resolve_text(&text);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].1, "status.vips");
}

#[test]
fn resolve_of_empty_config_is_empty() {
    let (routes, problems) = resolve::resolve(&Config::default());
    assert!(routes.is_empty() && problems.is_empty());
}
