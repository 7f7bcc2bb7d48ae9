//! Who gets which route: from validated resources to one route per service
//! address and port, with the backends' weights and endpoints.
//!
//! Semantics follow Kuma with transparent proxying:
//! - every MeshService port that has addresses is served, even with no policy:
//!   traffic goes to the service's own endpoints (Kuma's default route);
//! - a MeshTCPRoute `to` entry replaces that for the destinations it targets:
//!   the whole service, or one port with `sectionName` (a port name or number);
//! - when several entries target the same destination, the one naming a port
//!   beats the one naming the whole service; at equal specificity the policy
//!   whose name sorts first wins (Kuma merges policies in descending name order,
//!   later ones overriding earlier ones);
//! - a `to` entry without rules sends traffic to the destination itself;
//! - a backendRef to a service or port that does not exist is a warning, as in
//!   Kuma, and its share of connections fails (Envoy has no cluster for it).

use crate::model::{
    BackendRef, Config, Dataplane, MeshService, MeshTcpRoute, PortRef, Problem, ServicePort,
    Severity, TargetRef,
};
use std::net::{IpAddr, SocketAddr};

/// The route for one service address and port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedRoute {
    /// Mesh of the destination service.
    pub mesh: String,
    /// `MeshService/name` of the destination.
    pub service: String,
    /// Address clients dial.
    pub vip: IpAddr,
    /// Port clients dial.
    pub port: u16,
    /// The winning MeshTCPRoute, or `None` for Kuma's default route.
    pub policy: Option<String>,
    /// Backends in `backendRefs` order.
    pub backends: Vec<ResolvedBackend>,
}

/// One backendRef with its endpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedBackend {
    /// `MeshService/name:port` for display.
    pub name: String,
    /// Relative weight.
    pub weight: u32,
    /// Where connections go, sorted.
    pub endpoints: Vec<SocketAddr>,
}

/// Resolves every served destination. Returns the routes (sorted by address
/// and port) and the problems met (warnings, or errors for references that
/// cannot be resolved unambiguously).
pub fn resolve(config: &Config) -> (Vec<ResolvedRoute>, Vec<Problem>) {
    let mut problems = Vec::new();
    // Policies in merge order: descending name, so that the first name wins.
    let mut policies: Vec<&MeshTcpRoute> = config.routes.iter().collect();
    policies.sort_by(|a, b| b.origin.name.cmp(&a.origin.name));

    let mut routes = Vec::new();
    for service in &config.services {
        for port in service.spec.ports.as_deref().unwrap_or_default() {
            let winner = winning_entry(&policies, service, port);
            let (policy, backends) = match winner {
                Some((route, to_index)) => {
                    let backends = resolve_backends(config, route, to_index, service, port, &mut problems);
                    (Some(route.origin.display_name()), backends)
                }
                None => (None, vec![own_backend(config, service, port)]),
            };
            for vip in service.status.vips.as_deref().unwrap_or_default() {
                routes.push(ResolvedRoute {
                    mesh: service.origin.mesh.clone(),
                    service: service.origin.display_name(),
                    // `::ffff:a.b.c.d` is the kernel's key for a.b.c.d.
                    vip: vip.ip.to_canonical(),
                    port: port.port,
                    policy: policy.clone(),
                    backends: backends.clone(),
                });
            }
        }
    }
    warn_unmatched_destinations(config, &mut problems);
    routes.sort_by(|a, b| (a.vip, a.port).cmp(&(b.vip, b.port)));
    for pair in routes.windows(2) {
        if (pair[0].vip, pair[0].port) == (pair[1].vip, pair[1].port) {
            let service = config
                .services
                .iter()
                .find(|s| s.origin.display_name() == pair[1].service && s.origin.mesh == pair[1].mesh);
            if let Some(service) = service {
                problems.push(problem(
                    Severity::Error,
                    service,
                    "status.vips",
                    format!(
                        "{} is also an address of {}{}",
                        SocketAddr::new(pair[1].vip, pair[1].port),
                        pair[0].service,
                        if pair[0].mesh == pair[1].mesh { String::new() } else { format!(" in mesh {:?}", pair[0].mesh) }
                    ),
                ));
            }
        }
    }
    // A `to` entry that wins several ports resolves its backends once per
    // port; report each problem once.
    let mut seen = std::collections::HashSet::new();
    problems.retain(|p| seen.insert(p.to_string()));
    (routes, problems)
}

/// The `to` entry that decides `service`'s `port`, as (policy, index in `to`).
fn winning_entry<'a>(
    policies: &[&'a MeshTcpRoute],
    service: &MeshService,
    port: &ServicePort,
) -> Option<(&'a MeshTcpRoute, usize)> {
    let mut best: Option<(u8, &MeshTcpRoute, usize)> = None;
    for route in policies.iter().copied() {
        if route.origin.mesh != service.origin.mesh {
            continue;
        }
        for (i, to) in route.spec.to.as_deref().unwrap_or_default().iter().enumerate() {
            let Some(specificity) = matches_destination(&to.target_ref, service, port) else {
                continue;
            };
            // Later policies in merge order override earlier ones at equal specificity.
            if best.is_none_or(|(s, _, _)| specificity >= s) {
                best = Some((specificity, route, i));
            }
        }
    }
    best.map(|(_, route, i)| (route, i))
}

/// Whether a `to[].targetRef` selects `service`'s `port`: `Some(1)` when it
/// names the port, `Some(0)` when it names the whole service.
fn matches_destination(target: &TargetRef, service: &MeshService, port: &ServicePort) -> Option<u8> {
    if target.name.as_deref() != Some(service.origin.name.as_str()) {
        return None;
    }
    if target.namespace.is_some() && target.namespace != service.origin.namespace {
        return None;
    }
    match (&target.section_name, target.doc_port) {
        (Some(section), _) => port_matches_section(port, section).then_some(1),
        (None, Some(number)) => (port.port == number).then_some(1),
        (None, None) => Some(0),
    }
}

fn port_matches_section(port: &ServicePort, section: &str) -> bool {
    port.name.as_deref() == Some(section) || section.parse::<u16>() == Ok(port.port)
}

fn resolve_backends(
    config: &Config,
    route: &MeshTcpRoute,
    to_index: usize,
    service: &MeshService,
    port: &ServicePort,
    problems: &mut Vec<Problem>,
) -> Vec<ResolvedBackend> {
    let to = &route.spec.to.as_deref().unwrap_or_default()[to_index];
    let Some(rule) = to.rules.as_deref().and_then(|r| r.first()) else {
        return vec![own_backend(config, service, port)];
    };
    let refs = rule.default.backend_refs.as_deref().unwrap_or_default();
    refs.iter()
        .enumerate()
        .map(|(k, backend)| {
            let path = format!("spec.to[{to_index}].rules[0].default.backendRefs[{k}]");
            resolve_backend(config, route, backend, port, &path, problems)
        })
        .collect()
}

fn resolve_backend(
    config: &Config,
    route: &MeshTcpRoute,
    backend: &BackendRef,
    dest_port: &ServicePort,
    path: &str,
    problems: &mut Vec<Problem>,
) -> ResolvedBackend {
    let name = backend.name.clone().unwrap_or_default();
    let weight = u32::try_from(backend.weight.unwrap_or(1)).unwrap_or(u32::MAX);
    let mut report = |severity, field: &str, message: String| {
        problems.push(Problem {
            severity,
            file: route.origin.file.clone(),
            resource: route.origin.display_name(),
            path: format!("{path}{field}"),
            message,
        });
    };
    let target = config.services.iter().find(|s| {
        s.origin.mesh == route.origin.mesh
            && s.origin.name == name
            && (backend.namespace.is_none() || backend.namespace == s.origin.namespace)
    });
    let Some(target) = target else {
        report(
            Severity::Warning,
            ".name",
            format!("MeshService {name:?} does not exist (yet); its share of connections is refused"),
        );
        return ResolvedBackend { name: format!("MeshService/{name}"), weight, endpoints: Vec::new() };
    };
    let ports = target.spec.ports.as_deref().unwrap_or_default();
    let chosen = match backend.port.or(backend.doc_port) {
        Some(number) => ports.iter().find(|p| u32::from(p.port) == number).ok_or_else(|| {
            (Severity::Warning, format!("MeshService {name:?} has no port {number}; its share of connections is refused"))
        }),
        None => ports
            .iter()
            .find(|p| p.port == dest_port.port)
            .or_else(|| if ports.len() == 1 { ports.first() } else { None })
            .ok_or_else(|| {
                (
                    Severity::Error,
                    format!("must be set: MeshService {name:?} has no port {} and more than one port", dest_port.port),
                )
            }),
    };
    match chosen {
        Ok(port) => own_backend(config, target, port).with_weight(weight),
        Err((severity, message)) => {
            report(severity, ".port", message);
            ResolvedBackend { name: format!("MeshService/{name}"), weight, endpoints: Vec::new() }
        }
    }
}

impl ResolvedBackend {
    fn with_weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }
}

/// `service`'s `port` itself as a backend of weight 1.
fn own_backend(config: &Config, service: &MeshService, port: &ServicePort) -> ResolvedBackend {
    ResolvedBackend {
        name: format!("{}:{}", service.origin.display_name(), port.port),
        weight: 1,
        endpoints: endpoints(&config.dataplanes, service, port),
    }
}

/// The endpoints of a service port: every inbound, of a Dataplane in the same
/// mesh, whose tags include the service's `dataplaneTags` and which the port's
/// `targetPort` names. With no sidecar, the connection goes straight to the
/// application: the inbound's `servicePort` when set, else its `port`.
pub fn endpoints(dataplanes: &[Dataplane], service: &MeshService, port: &ServicePort) -> Vec<SocketAddr> {
    let Some(selector) = service.spec.selector.as_ref().and_then(|s| s.dataplane_tags.as_ref()) else {
        return Vec::new();
    };
    if selector.is_empty() {
        return Vec::new();
    }
    let target = &port.target_port.clone().unwrap_or(PortRef::Number(port.port));
    let mut out: Vec<SocketAddr> = dataplanes
        .iter()
        .filter(|dp| dp.origin.mesh == service.origin.mesh)
        .flat_map(|dp| {
            let net = &dp.spec.networking;
            net.inbound.as_deref().unwrap_or_default().iter().filter_map(move |inbound| {
                let tags = inbound.tags.as_ref()?;
                let selected = selector.iter().all(|(k, v)| tags.get(k) == Some(v));
                let named = match target {
                    PortRef::Number(n) => inbound.port == *n,
                    PortRef::Name(name) => inbound.name.as_deref() == Some(name.as_str()),
                };
                let address = inbound.address.or(net.address)?.to_canonical();
                (selected && named).then(|| SocketAddr::new(address, inbound.service_port.unwrap_or(inbound.port)))
            })
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

fn warn_unmatched_destinations(config: &Config, problems: &mut Vec<Problem>) {
    for route in &config.routes {
        for (i, to) in route.spec.to.as_deref().unwrap_or_default().iter().enumerate() {
            let Some(name) = &to.target_ref.name else { continue };
            let services: Vec<&MeshService> = config
                .services
                .iter()
                .filter(|s| s.origin.mesh == route.origin.mesh && &s.origin.name == name)
                .collect();
            let message = if services.is_empty() {
                format!("MeshService {name:?} does not exist (yet); this entry has no effect")
            } else if !services.iter().any(|s| {
                s.spec.ports.as_deref().unwrap_or_default().iter().any(|p| matches_destination(&to.target_ref, s, p).is_some())
            }) {
                format!("no port of MeshService {name:?} matches this targetRef; this entry has no effect")
            } else {
                continue;
            };
            problems.push(Problem {
                severity: Severity::Warning,
                file: route.origin.file.clone(),
                resource: route.origin.display_name(),
                path: format!("spec.to[{i}].targetRef"),
                message,
            });
        }
    }
}

fn problem(severity: Severity, service: &MeshService, path: &str, message: String) -> Problem {
    Problem {
        severity,
        file: service.origin.file.clone(),
        resource: service.origin.display_name(),
        path: path.into(),
        message,
    }
}
