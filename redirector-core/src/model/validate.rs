//! Validation of each resource on its own (references between resources are
//! checked by `resolve`).
//!
//! Field paths and messages follow Kuma 2.13's validators:
//! - `mesh.ValidateTargetRef` (`pkg/core/resources/apis/mesh/validators.go`) for
//!   every `targetRef` and `backendRef`, with the kinds MeshTCPRoute's and
//!   MeshHTTPRoute's validators allow in each position and the policy role
//!   (label `kuma.io/policy-role`; missing means `system`);
//! - `validators.ValidateBackendRef` (MeshMultiZoneService needs a `port`);
//! - the rules Kuma leaves to the OpenAPI schema (`to` non-empty when present,
//!   at most one rule, weights within 32 bits), with messages in Kuma's style;
//! - Kuma's `Deprecations()` as warnings;
//! - the MeshExternalService, MeshMultiZoneService and Dataplane validators.
//!
//! A few checks are this project's own (MeshService ports, a Dataplane address,
//! service addresses that no connection is made to, the sum of weights); their
//! messages say what is wrong in the same style.

use crate::model::{Tags, Text};
use super::{
    BackendRef, Config, Dataplane, MeshExternalService, MeshHttpRoute, MeshMultiZoneService,
    MeshService, MeshTcpRoute, Origin, Problem, RefKind, TargetRef,
    problem::Reporter,
    types::{Inbound, MeshServiceStatus, Outbound, PortRef, ServicePort, TargetsOnlySpec},
};
use std::{
    collections::HashSet,
    net::{IpAddr, Ipv4Addr},
};

/// Largest weight, and largest sum of weights of one rule (Envoy's and the
/// datapath's 32 bits).
const MAX_WEIGHT: u64 = u32::MAX as u64;

/// Kuma's label for a policy's role; missing (or `system`) means system.
const POLICY_ROLE_LABEL: &str = "kuma.io/policy-role";

/// The label Kuma takes a resource's display name from.
const DISPLAY_NAME_LABEL: &str = "kuma.io/display-name";

/// `kuma.io/service`.
const SERVICE_TAG: &str = "kuma.io/service";

/// `kuma.io/protocol`.
const PROTOCOL_TAG: &str = "kuma.io/protocol";

/// Kuma's `SupportedProtocols`, in its order.
const SUPPORTED_PROTOCOLS: &[&str] = &["grpc", "http", "http2", "kafka", "tcp"];

/// Protocols `core_meta.ParseProtocol` knows (case-insensitive).
const KNOWN_PROTOCOLS: &[&str] = &["http", "http2", "tcp", "tls", "grpc", "kafka", "mysql"];

/// Protocols a MeshExternalService `match` may use, in Kuma's order.
const EXTERNAL_MATCH_PROTOCOLS: &[&str] = &["tcp", "grpc", "http", "http2"];

/// Warning for a policy whose top-level targetRef is a MeshGateway.
const GATEWAY_WARNING: &str =
    "MeshGateway policies configure builtin gateways; redirector runs no gateway, so this policy has no effect here";

/// Warning for a MeshTCPRoute without `spec.to`.
const NO_TO_WARNING: &str = "no `to` entries: this policy has no effect";

/// Validates every resource of `config`.
pub(super) fn validate(config: &Config) -> Vec<Problem> {
    validate_by_kind(config).into_iter().flatten().collect()
}

/// The problems of [`validate`], by kind, in its order: MeshTCPRoutes,
/// MeshHTTPRoutes, MeshServices, MeshExternalServices, MeshMultiZoneServices,
/// Dataplanes, ignored kinds. Each resource is validated on its own, so the
/// problems of a part of a configuration are that part's problems: a source
/// can validate each file once and keep the result.
pub(crate) fn validate_by_kind(config: &Config) -> [Vec<Problem>; 7] {
    let mut out: [Vec<Problem>; 7] = Default::default();
    for route in &config.routes {
        validate_tcp_route(route, &mut reporter(&route.origin, &mut out[0]));
    }
    for route in &config.http_routes {
        validate_http_route(route, &mut reporter(&route.origin, &mut out[1]));
    }
    for service in &config.services {
        validate_service(service, &mut reporter(&service.origin, &mut out[2]));
    }
    for service in &config.external_services {
        validate_external_service(service, &mut reporter(&service.origin, &mut out[3]));
    }
    for service in &config.multizone_services {
        validate_multizone_service(service, &mut reporter(&service.origin, &mut out[4]));
    }
    for dataplane in &config.dataplanes {
        validate_dataplane(dataplane, &mut reporter(&dataplane.origin, &mut out[5]));
    }
    for ignored in &config.ignored {
        reporter(ignored, &mut out[6]).warning("", format!("{} resources are read but have no effect in this version", ignored.kind));
    }
    out
}

fn reporter<'a>(origin: &'a Origin, out: &'a mut Vec<Problem>) -> Reporter<'a> {
    Reporter::new(&origin.file, origin.display_name().into(), out)
}

// ---------------------------------------------------------------- policies

/// Whether the policy validates as Kuma's `system` role: universal resources
/// always, Kubernetes ones unless labelled with another role.
fn is_system_role(origin: &Origin) -> bool {
    !origin.kubernetes
        || origin
            .labels
            .get(POLICY_ROLE_LABEL)
            .is_none_or(|role| role.is_empty() || role == "system")
}

/// Kinds a policy's top-level targetRef may have (MeshTCPRoute and MeshHTTPRoute).
fn top_kinds(system: bool) -> &'static [RefKind] {
    use RefKind::*;
    if system {
        &[Mesh, MeshSubset, MeshGateway, MeshService, MeshServiceSubset, Dataplane]
    } else {
        &[Mesh, MeshSubset, MeshService, MeshServiceSubset, Dataplane]
    }
}

/// Kinds a `to[].targetRef` may have: only Mesh under a MeshGateway policy
/// (the effective top-level kind; a missing targetRef is Mesh).
fn to_kinds(top: Option<&TargetRef>) -> &'static [RefKind] {
    use RefKind::*;
    let top_kind = top.map_or(Some(Mesh), |t| t.kind);
    if top_kind == Some(MeshGateway) {
        &[Mesh]
    } else {
        &[MeshService, MeshExternalService, MeshMultiZoneService]
    }
}

/// Kinds a MeshTCPRoute `backendRef` may have.
const BACKEND_KINDS: &[RefKind] = &[
    RefKind::MeshService,
    RefKind::MeshServiceSubset,
    RefKind::MeshExternalService,
    RefKind::MeshMultiZoneService,
];

/// The top-level targetRef of a policy: Kuma's checks for the policy's role,
/// then its deprecations, then a note that gateway policies do nothing here.
fn validate_top(origin: &Origin, target: Option<&TargetRef>, r: &mut Reporter<'_>) {
    let Some(target) = target else { return };
    let system = is_system_role(origin);
    let path = "spec.targetRef";
    check_ref(&RefView::from(target), top_kinds(system), system, path, r);
    match target.kind {
        Some(kind @ (RefKind::MeshService | RefKind::MeshServiceSubset | RefKind::MeshSubset)) => r.warning(
            format!("{path}.kind"),
            format!("{kind} value for 'targetRef.kind' is deprecated, use Dataplane with labels instead"),
        ),
        Some(RefKind::MeshGateway) if system => r.warning(format!("{path}.kind"), GATEWAY_WARNING),
        _ => {}
    }
}

fn validate_tcp_route(route: &MeshTcpRoute, r: &mut Reporter<'_>) {
    let spec = &route.spec;
    let top = spec.target_ref.as_ref();
    validate_top(&route.origin, top, r);
    let Some(to) = &spec.to else {
        r.warning("spec.to", NO_TO_WARNING);
        return;
    };
    if to.is_empty() {
        r.error("spec.to", "must have at least one element");
    }
    let to_kinds = to_kinds(top);
    for (i, item) in to.iter().enumerate() {
        let path = format!("spec.to[{i}]");
        check_ref(&RefView::from(&item.target_ref), to_kinds, false, &format!("{path}.targetRef"), r);
        let Some(rules) = &item.rules else { continue };
        if rules.len() > 1 {
            r.error(format!("{path}.rules"), "must have at most one element");
        }
        for (j, rule) in rules.iter().enumerate() {
            let path = format!("{path}.rules[{j}].default.backendRefs");
            match rule.default.backend_refs.as_deref() {
                None | Some([]) => r.error(&path, "must be defined"),
                Some(refs) => validate_backend_refs(refs, &path, r),
            }
        }
    }
}

fn validate_backend_refs(refs: &[BackendRef], path: &str, r: &mut Reporter<'_>) {
    let mut total: u64 = 0;
    let mut weights_ok = true;
    for (k, backend) in refs.iter().enumerate() {
        let path = format!("{path}[{k}]");
        check_ref(&RefView::from(backend), BACKEND_KINDS, false, &path, r);
        if backend.kind == Some(RefKind::MeshMultiZoneService) && backend.port.is_none() {
            r.error(format!("{path}.port"), "must be defined with kind MeshMultiZoneService");
        }
        let weight = backend.weight.unwrap_or(1);
        if weight > MAX_WEIGHT {
            r.error(format!("{path}.weight"), format!("must be in inclusive range [0, {MAX_WEIGHT}]"));
            weights_ok = false;
        }
        if backend.doc_version.is_some() {
            r.warning(
                format!("{path}._version"),
                "documentation-generator hint; it selects nothing (split with separate MeshServices)",
            );
        }
        total = total.saturating_add(weight);
    }
    if weights_ok && total > MAX_WEIGHT {
        r.error(path, format!("sum of weights {total} exceeds {MAX_WEIGHT}"));
    }
}

/// MeshHTTPRoute, targets only: its top-level and `to[].targetRef`s are checked
/// as Kuma's MeshHTTPRoute validator does (the same kinds as MeshTCPRoute).
fn validate_http_route(route: &MeshHttpRoute, r: &mut Reporter<'_>) {
    let TargetsOnlySpec { target_ref, to } = &route.spec;
    let top = target_ref.as_ref();
    validate_top(&route.origin, top, r);
    let to_kinds = to_kinds(top);
    for (i, item) in to.as_deref().unwrap_or_default().iter().enumerate() {
        check_ref(&RefView::from(&item.target_ref), to_kinds, false, &format!("spec.to[{i}].targetRef"), r);
    }
}

// ---------------------------------------------------------------- targetRef

/// The fields of a `targetRef` or `backendRef` that Kuma's checks look at;
/// empty strings and maps count as unset, as in Kuma.
struct RefView<'a> {
    kind: Option<RefKind>,
    name: &'a str,
    namespace: &'a str,
    labels: Option<&'a Tags>,
    tags: Option<&'a Tags>,
    section_name: &'a str,
    mesh: &'a str,
    proxy_types: Option<&'a [Text]>,
}

impl<'a> From<&'a TargetRef> for RefView<'a> {
    fn from(t: &'a TargetRef) -> Self {
        Self {
            kind: t.kind,
            name: t.name.as_deref().unwrap_or(""),
            namespace: t.namespace.as_deref().unwrap_or(""),
            labels: t.labels.as_ref(),
            tags: t.tags.as_ref(),
            section_name: t.section_name.as_deref().unwrap_or(""),
            mesh: t.mesh.as_deref().unwrap_or(""),
            proxy_types: t.proxy_types.as_deref(),
        }
    }
}

impl<'a> From<&'a BackendRef> for RefView<'a> {
    fn from(b: &'a BackendRef) -> Self {
        Self {
            kind: b.kind,
            name: b.name.as_deref().unwrap_or(""),
            namespace: b.namespace.as_deref().unwrap_or(""),
            labels: b.labels.as_ref(),
            tags: b.tags.as_ref(),
            section_name: b.section_name.as_deref().unwrap_or(""),
            mesh: b.mesh.as_deref().unwrap_or(""),
            proxy_types: b.proxy_types.as_deref(),
        }
    }
}

fn has_entries(map: Option<&Tags>) -> bool {
    map.is_some_and(|m| !m.is_empty())
}

/// Kuma's `mesh.ValidateTargetRef` (2.13): the kind must be set and one of
/// `supported`; then the fields each kind allows, requires or forbids.
fn check_ref(
    v: &RefView<'_>,
    supported: &[RefKind],
    gateway_listener_tags_allowed: bool,
    path: &str,
    r: &mut Reporter<'_>,
) {
    use RefKind::*;
    let at = |field: &str| format!("{path}.{field}");
    let Some(kind) = v.kind else {
        r.error(at("kind"), "must be defined");
        return;
    };
    if !supported.contains(&kind) {
        r.error(at("kind"), format!("value '{kind}' is not supported"));
        return;
    }
    let labels = has_entries(v.labels);
    let tags = has_entries(v.tags);
    let proxy_types = v.proxy_types.is_some_and(|p| !p.is_empty());
    let forbid = |r: &mut Reporter<'_>, field: &str, set: bool| {
        if set {
            r.error(at(field), format!("must not be set with kind {kind}"));
        }
    };
    let require_name = |r: &mut Reporter<'_>| {
        if v.name.is_empty() {
            r.error(at("name"), format!("must be set with kind {kind}"));
        }
    };
    let name_charset = |r: &mut Reporter<'_>| {
        if !v.name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'z' | b'.' | b'-' | b'_')) {
            r.error(
                at("name"),
                "invalid characters: must consist of lower case alphanumeric characters, '-', '.' and '_'.",
            );
        }
    };
    match kind {
        Mesh => {
            if !v.name.is_empty() {
                r.error(at("name"), "using name with kind Mesh is not yet supported");
            }
            forbid(r, "mesh", !v.mesh.is_empty());
            forbid(r, "tags", tags);
            forbid(r, "labels", labels);
            forbid(r, "namespace", !v.namespace.is_empty());
            forbid(r, "sectionName", !v.section_name.is_empty());
            check_proxy_types(v.proxy_types, &at("proxyTypes"), r);
        }
        Dataplane => {
            forbid(r, "tags", tags);
            forbid(r, "mesh", !v.mesh.is_empty());
            forbid(r, "proxyTypes", proxy_types);
            if labels && (!v.name.is_empty() || !v.namespace.is_empty()) {
                r.error(at("labels"), "either labels or name and namespace must be specified");
            }
            // MeshTCPRoute and MeshHTTPRoute are never inbound policies.
            if !v.section_name.is_empty() {
                r.error(at("sectionName"), "can only be used with inbound policies");
            }
        }
        MeshSubset => {
            forbid(r, "name", !v.name.is_empty());
            forbid(r, "mesh", !v.mesh.is_empty());
            check_tags(v.tags, &at("tags"), TagRules::TAGS, r);
            forbid(r, "labels", labels);
            forbid(r, "namespace", !v.namespace.is_empty());
            forbid(r, "sectionName", !v.section_name.is_empty());
            check_proxy_types(v.proxy_types, &at("proxyTypes"), r);
        }
        MeshService | MeshHTTPRoute => {
            name_charset(r);
            forbid(r, "mesh", !v.mesh.is_empty());
            forbid(r, "tags", tags);
            forbid(r, "proxyTypes", proxy_types);
            if kind == MeshHTTPRoute {
                forbid(r, "sectionName", !v.section_name.is_empty());
            }
            if !labels {
                require_name(r);
            }
            if labels && (!v.name.is_empty() || !v.namespace.is_empty()) {
                r.error(at("labels"), "either labels or name and namespace must be specified");
            }
        }
        MeshServiceSubset | MeshGateway => {
            require_name(r);
            name_charset(r);
            forbid(r, "mesh", !v.mesh.is_empty());
            forbid(r, "proxyTypes", proxy_types);
            check_tags(v.tags, &at("tags"), TagRules::SELECTOR, r);
            if kind == MeshGateway && !gateway_listener_tags_allowed {
                forbid(r, "tags", tags);
            }
            forbid(r, "labels", labels);
            forbid(r, "namespace", !v.namespace.is_empty());
            forbid(r, "sectionName", !v.section_name.is_empty());
        }
        MeshExternalService => {
            name_charset(r);
            forbid(r, "mesh", !v.mesh.is_empty());
            forbid(r, "tags", tags);
            forbid(r, "proxyTypes", proxy_types);
            if !labels {
                require_name(r);
            }
            if labels && (!v.name.is_empty() || !v.namespace.is_empty()) {
                r.error(at("labels"), "either labels or name must be specified");
            }
            forbid(r, "sectionName", !v.section_name.is_empty());
        }
        // Kuma 2.13 checks no field of a MeshMultiZoneService reference.
        MeshMultiZoneService => {}
    }
}

/// `proxyTypes` may be left out but not empty; its values are the schema's enum.
fn check_proxy_types(proxy_types: Option<&[Text]>, path: &str, r: &mut Reporter<'_>) {
    let Some(types) = proxy_types else { return };
    if types.is_empty() {
        r.error(path, "must be undefined or have at least one element");
    }
    for (i, t) in types.iter().enumerate() {
        if t != "Sidecar" && t != "Gateway" {
            r.error(format!("{path}[{i}]"), format!("value '{t}' is not supported: must be one of: Sidecar, Gateway"));
        }
    }
}

/// How tag keys and values are checked (Kuma's `ValidateTags` and `ValidateSelector`).
#[derive(Clone, Copy)]
struct TagRules {
    /// Values may contain `/` or be `*` (a selector).
    selector: bool,
    /// `kuma.io/service` must be present.
    require_service: bool,
    /// `kuma.io/protocol`, when present, must be a known protocol.
    protocol: bool,
}

impl TagRules {
    const TAGS: Self = Self { selector: false, require_service: false, protocol: false };
    const SELECTOR: Self = Self { selector: true, require_service: false, protocol: false };
}

fn check_tags(tags: Option<&Tags>, path: &str, rules: TagRules, r: &mut Reporter<'_>) {
    let empty = Tags::new();
    let tags = tags.unwrap_or(&empty);
    if rules.protocol
        && let Some(value) = tags.get(PROTOCOL_TAG)
        && !KNOWN_PROTOCOLS.contains(&value.to_ascii_lowercase().as_str())
    {
        r.error(
            format!("{path}[{PROTOCOL_TAG:?}]"),
            format!(
                "tag {PROTOCOL_TAG:?} has an invalid value {value:?}. Allowed values: {}",
                SUPPORTED_PROTOCOLS.join(", ")
            ),
        );
    }
    for (key, value) in tags {
        let at = format!("{path}[{key:?}]");
        if key.is_empty() {
            r.error(path, "tag name must be non-empty");
        }
        if !key.bytes().all(|b| b.is_ascii_alphanumeric() || b".-_:/".contains(&b)) {
            r.error(&at, "tag name must consist of alphanumeric characters, dots, dashes, slashes and underscores");
        }
        if value.is_empty() {
            r.error(&at, "tag value must be non-empty");
        }
        if rules.selector {
            if value != "*" && !value.bytes().all(|b| b.is_ascii_alphanumeric() || b".-_:/".contains(&b)) {
                r.error(
                    &at,
                    "tag value must consist of alphanumeric characters, dots, dashes, slashes and underscores or be \"*\"",
                );
            }
        } else if !value.bytes().all(|b| b.is_ascii_alphanumeric() || b".-_:".contains(&b)) {
            r.error(&at, "tag value must consist of alphanumeric characters, dots, dashes and underscores");
        }
    }
    if rules.require_service && !tags.contains_key(SERVICE_TAG) {
        r.error(path, format!("mandatory tag {SERVICE_TAG:?} is missing"));
    }
}

// ---------------------------------------------------------------- services

/// Kuma limits MeshService and MeshExternalService display names to 63 characters.
fn check_name_length(origin: &Origin, r: &mut Reporter<'_>) {
    let name = origin.labels.get(DISPLAY_NAME_LABEL).unwrap_or(&origin.name);
    if name.len() > 63 {
        r.error("name", "must not be longer than 63 characters");
    }
}

fn validate_service(service: &MeshService, r: &mut Reporter<'_>) {
    check_name_length(&service.origin, r);
    let ports = service.spec.ports.as_deref().unwrap_or_default();
    if ports.is_empty() {
        r.warning("spec.ports", "no ports: the service cannot be dialled");
    }
    let mut numbers = HashSet::new();
    let mut names = HashSet::new();
    for (i, port) in ports.iter().enumerate() {
        if port.port == 0 {
            r.error(format!("spec.ports[{i}].port"), "must be in 1..65535");
        }
        if !numbers.insert(port.port) {
            r.error(format!("spec.ports[{i}].port"), format!("port {} is listed twice", port.port));
        }
        if let Some(name) = &port.name
            && !names.insert(name.clone())
        {
            r.error(format!("spec.ports[{i}].name"), format!("name {name:?} is listed twice"));
        }
        match &port.target_port {
            Some(PortRef::Number(0)) => r.error(format!("spec.ports[{i}].targetPort"), "must be in 1..65535"),
            None => r.warning(
                format!("spec.ports[{i}].targetPort"),
                "not set: Kuma matches no Dataplane inbound to this port, so it has no endpoints",
            ),
            Some(_) => {}
        }
    }
    let selector = service.spec.selector.as_ref();
    let by_ref = selector.and_then(|s| s.dataplane_ref.as_ref());
    match by_ref {
        Some(dp_ref) if dp_ref.name.as_deref().unwrap_or("").is_empty() => r.warning(
            "spec.selector.dataplaneRef.name",
            "not set: the service has no endpoints here",
        ),
        Some(_) => {}
        None => {
            if !has_entries(selector.and_then(|s| s.dataplane_tags.as_ref())) {
                r.warning("spec.selector.dataplaneTags", "not set: the service has no endpoints here");
            }
        }
    }
    check_vips(&service.status, r);
}

/// `status.vips` of a MeshService or MeshMultiZoneService.
fn check_vips(status: &MeshServiceStatus, r: &mut Reporter<'_>) {
    let vips = status.vips.as_deref().unwrap_or_default();
    if vips.is_empty() {
        r.warning("status.vips", "no addresses: connections to this service cannot be redirected");
    }
    for (i, vip) in vips.iter().enumerate() {
        check_service_address(vip.ip, &format!("status.vips[{i}].ip"), r);
    }
}

/// An address clients dial (a VIP, an outbound) must be one a connection can
/// be made to: not the unspecified address, a multicast address or the IPv4
/// broadcast address. An IPv4-mapped IPv6 address is judged as its IPv4
/// address, as the datapath sees it.
fn check_service_address(ip: IpAddr, path: &str, r: &mut Reporter<'_>) {
    let ipv4 = ip.to_canonical();
    let why = if ipv4.is_unspecified() {
        "the unspecified address"
    } else if ipv4.is_multicast() {
        "a multicast address"
    } else if ipv4 == IpAddr::V4(Ipv4Addr::BROADCAST) {
        "the broadcast address"
    } else {
        return;
    };
    let shown = if ipv4 == ip { ip.to_string() } else { format!("{ip} (IPv4 {ipv4})") };
    r.error(path, format!("{shown} is {why}, not a service address"));
}

fn validate_external_service(service: &MeshExternalService, r: &mut Reporter<'_>) {
    check_name_length(&service.origin, r);
    let spec = &service.spec;
    match &spec.matcher {
        None => r.warning("spec.match", "not set: the service cannot be dialled"),
        Some(m) => {
            if let Some(kind) = m.kind.as_deref()
                && kind != "HostnameGenerator"
                && !kind.is_empty()
            {
                r.error(
                    "spec.match.type",
                    format!("unrecognized type '{kind}' - only 'HostnameGenerator' is supported"),
                );
            }
            if m.port == 0 {
                r.error("spec.match.port", "port must be a valid (1-65535)");
            }
            if let Some(protocol) = m.protocol.as_deref()
                && !EXTERNAL_MATCH_PROTOCOLS.contains(&protocol)
            {
                let allowed: Vec<String> = EXTERNAL_MATCH_PROTOCOLS.iter().map(|p| format!("{p:?}")).collect();
                r.error("spec.match.protocol", format!("\"protocol\" must be one of [{}]", allowed.join(", ")));
            }
        }
    }
    let endpoints = spec.endpoints.as_deref().unwrap_or_default();
    if endpoints.is_empty() {
        r.error("spec.endpoints", "must be defined");
    }
    for (i, endpoint) in endpoints.iter().enumerate() {
        let address = endpoint.address.as_str();
        if address.parse::<IpAddr>().is_ok() || is_dns_name(address) {
            if endpoint.port == 0 {
                r.error(format!("spec.endpoints[{i}].port"), "port must be a valid (1-65535)");
            }
        } else {
            r.error(format!("spec.endpoints[{i}].address"), "address has to be a valid IP or hostname");
        }
    }
    match &service.status.vip {
        None => r.warning("status.vip", "not set: the service cannot be dialled"),
        Some(vip) => check_service_address(vip.ip, "status.vip.ip", r),
    }
}

/// `govalidator.IsDNSName`: dot-separated labels of letters, digits, `_` and
/// `-` (not first), at most 63 characters each, an optional trailing dot.
fn is_dns_name(s: &str) -> bool {
    if s.is_empty() || s.bytes().filter(|&b| b != b'.').count() > 255 || s.parse::<IpAddr>().is_ok() {
        return false;
    }
    let s = s.strip_suffix('.').unwrap_or(s);
    !s.is_empty()
        && s.split('.').all(|label| {
            let bytes = label.as_bytes();
            !bytes.is_empty()
                && bytes.len() <= 63
                && (bytes[0].is_ascii_alphanumeric() || bytes[0] == b'_')
                && bytes.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        })
}

fn validate_multizone_service(service: &MeshMultiZoneService, r: &mut Reporter<'_>) {
    let spec = &service.spec;
    let labels = spec
        .selector
        .as_ref()
        .and_then(|s| s.mesh_service.as_ref())
        .and_then(|m| m.match_labels.as_ref());
    if !has_entries(labels) {
        r.error("spec.selector.meshService.matchLabels", "cannot be empty");
    }
    let ports: &[ServicePort] = spec.ports.as_deref().unwrap_or_default();
    if ports.is_empty() {
        r.error("spec.ports", "cannot be empty");
    }
    for (i, port) in ports.iter().enumerate() {
        if port.port == 0 {
            r.error(format!("spec.ports[{i}].port"), "must be in 1..65535");
        }
        if port.name.as_deref() == Some("") {
            r.error(format!("spec.ports[{i}].name"), "must not be empty");
        }
        if let Some(protocol) = port.app_protocol.as_deref()
            && !SUPPORTED_PROTOCOLS.contains(&protocol)
        {
            r.error(
                format!("spec.ports[{i}].appProtocol"),
                format!("appProtocol must be one of: {}", SUPPORTED_PROTOCOLS.join(", ")),
            );
        }
    }
    check_vips(&service.status, r);
}

// ---------------------------------------------------------------- dataplanes

const PORT_RANGE: &str = "port must be in the range [1, 65535]";

fn validate_dataplane(dataplane: &Dataplane, r: &mut Reporter<'_>) {
    let prefix = dataplane.origin.body_prefix();
    let net = &dataplane.spec.networking;
    let inbound = net.inbound.as_deref().unwrap_or_default();
    if net.address.is_none() && inbound.iter().any(|ib| ib.address.is_none()) {
        r.error(format!("{prefix}networking.address"), "must be set (or an address on every inbound)");
    }
    if net.address.is_some_and(|a| a.is_unspecified()) {
        r.error(format!("{prefix}networking.address"), "must not be 0.0.0.0 or ::");
    }
    for (i, ib) in inbound.iter().enumerate() {
        validate_inbound(ib, &format!("{prefix}networking.inbound[{i}]"), r);
    }
    for (i, ob) in net.outbound.as_deref().unwrap_or_default().iter().enumerate() {
        validate_outbound(ob, &format!("{prefix}networking.outbound[{i}]"), r);
    }
}

fn validate_inbound(ib: &Inbound, path: &str, r: &mut Reporter<'_>) {
    if ib.port == 0 {
        r.error(format!("{path}.port"), PORT_RANGE);
    }
    if ib.service_port == Some(0) {
        r.error(format!("{path}.servicePort"), PORT_RANGE);
    }
    let rules = TagRules { selector: false, require_service: false, protocol: true };
    check_tags(ib.tags.as_ref(), &format!("{path}.tags"), rules, r);
    if let Some(state) = ib.state.as_deref()
        && !["Ready", "NotReady", "Ignored"].contains(&state)
    {
        r.error(format!("{path}.state"), "state must be one of: Ready, NotReady, Ignored");
    }
}

/// Kuma's `validateOutbound`, with the one backendRef kind redirector reads.
fn validate_outbound(ob: &Outbound, path: &str, r: &mut Reporter<'_>) {
    if ob.port == 0 {
        r.error(format!("{path}.port"), PORT_RANGE);
    }
    if let Some(address) = ob.address {
        check_service_address(address, &format!("{path}.address"), r);
    }
    let tags = ob.tags.as_ref();
    match &ob.backend_ref {
        Some(backend) => {
            if backend.kind != Some(RefKind::MeshService) {
                r.error(format!("{path}.backendRef.kind"), "invalid value. Available values are: MeshService");
            }
            if backend.name.as_deref().unwrap_or("").is_empty() && !has_entries(backend.labels.as_ref()) {
                r.error(format!("{path}.backendRef"), "either 'name' or 'labels' should be specified");
            }
            if !backend.port.is_some_and(|p| (1..=65535).contains(&p)) {
                r.error(format!("{path}.backendRef.port"), PORT_RANGE);
            }
            if has_entries(tags) {
                r.error(format!("{path}.backendRef"), "both backendRef and tags/service cannot be defined");
            }
        }
        None if !has_entries(tags) => {
            r.error(format!("{path}.tags"), format!("mandatory tag {SERVICE_TAG:?} is missing"));
        }
        None => {
            let rules = TagRules { selector: false, require_service: true, protocol: false };
            check_tags(tags, &format!("{path}.tags"), rules, r);
        }
    }
}
