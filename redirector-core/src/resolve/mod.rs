//! Who gets which route: from validated resources to, for every class of
//! workload, one route per destination address and port, with the backends'
//! weights and endpoints, and why.
//!
//! Semantics follow Kuma 2.13 with transparent proxying (the rules and their
//! sources are summarised in the README's "Kuma semantics" section):
//! - destinations are MeshService, MeshExternalService and MeshMultiZoneService
//!   addresses, plus a workload's own `networking.outbound` entries;
//! - a destination with no MeshTCPRoute goes to itself (Kuma's default route);
//! - the policies that select a proxy are ordered by top-level kind, origin,
//!   role and name (the alphabetically first name wins); the `to` entries that
//!   target a destination are ordered by their policy, then by kind, then an
//!   entry naming a port beats one naming the whole service; the last wins,
//!   and its `backendRefs` replace everything below it;
//! - for HTTP destinations (`http`, `http2`, `grpc`) a matching MeshHTTPRoute
//!   takes precedence and the MeshTCPRoute is ignored;
//! - weight-0 backends and references to real resources (a MeshService with a
//!   port or section, MeshExternalService, MeshMultiZoneService) that do not
//!   exist are dropped; legacy `kuma.io/service` references that match nothing
//!   keep their share, which fails.

pub mod endpoints;
pub mod select;

pub use endpoints::{HostResolver, NoDns, StaticDns, SystemDns};
pub use select::CGROUP_LABEL;

use crate::model::{
    BackendRef, Config, Dataplane, MeshExternalService, MeshMultiZoneService, MeshService,
    MeshTcpRoute, Origin, Problem, RefKind, ServicePort, Severity, TargetRef,
};
use select::{Proxy, kind_rank, ordered_policies, policy_attrs};
use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::{Component, Path, PathBuf},
};

/// The class of processes in no workload cgroup.
pub const BASE_CLASS: u32 = redirector_common::BASE_CLASS;

/// The route for one destination address and port, as seen by one class.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedRoute {
    /// Mesh of the destination.
    pub mesh: String,
    /// `Kind/name` of the destination (`MeshService/backend`, `kuma.io/service backend` ...).
    pub service: String,
    /// Address clients dial.
    pub vip: IpAddr,
    /// Port clients dial.
    pub port: u16,
    /// Protocol of the destination port, if known.
    pub app_protocol: Option<String>,
    /// The winning MeshTCPRoute (`MeshTCPRoute/name`), or `None` for the default route.
    pub policy: Option<String>,
    /// Backends in `backendRefs` order (dropped ones left out).
    pub backends: Vec<ResolvedBackend>,
    /// How the route was decided, lowest precedence first.
    pub why: Vec<String>,
}

/// One backendRef with its endpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedBackend {
    /// What it is, for display (`MeshService/backend-v1:80`).
    pub name: String,
    /// Relative weight.
    pub weight: u32,
    /// Where connections go, sorted.
    pub endpoints: Vec<SocketAddr>,
}

/// A set of routes shared by every workload that gets exactly these routes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Class {
    /// Class id; [`BASE_CLASS`] for processes outside workloads.
    pub id: u32,
    /// Every destination of the class, sorted by address and port.
    pub routes: Vec<ResolvedRoute>,
}

/// A Dataplane bound to a cgroup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workload {
    /// `Dataplane/name`.
    pub dataplane: String,
    /// Its mesh.
    pub mesh: String,
    /// cgroup path relative to the attach point.
    pub cgroup: PathBuf,
    /// The class whose routes it gets.
    pub class: u32,
}

/// Everything the kernel needs, before encoding.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resolution {
    /// Classes; the first is always the base class.
    pub classes: Vec<Class>,
    /// Workloads and their classes.
    pub workloads: Vec<Workload>,
}

impl Resolution {
    /// The base class's routes (what processes outside workloads get).
    pub fn base_routes(&self) -> &[ResolvedRoute] {
        &self.classes[0].routes
    }

    /// The class a workload (by `Dataplane/name`) gets.
    pub fn class_of(&self, dataplane: &str) -> Option<&Class> {
        let id = self.workloads.iter().find(|w| w.dataplane == dataplane)?.class;
        self.classes.iter().find(|c| c.id == id)
    }
}

/// Resolves with the system resolver for MeshExternalService hostnames.
pub fn resolve(config: &Config) -> (Resolution, Vec<Problem>) {
    resolve_with(config, &SystemDns)
}

/// Resolves every class. Returns the resolution and the problems met
/// (warnings, or errors for bindings that cannot work).
pub fn resolve_with(config: &Config, dns: &dyn HostResolver) -> (Resolution, Vec<Problem>) {
    let mut services_by_name: HashMap<&str, HashMap<&str, Vec<&MeshService>>> = HashMap::new();
    for s in &config.services {
        services_by_name.entry(s.origin.mesh.as_str()).or_default().entry(s.origin.name.as_str()).or_default().push(s);
    }
    let mut ctx = Ctx {
        config,
        dns,
        index: endpoints::Index::new(config),
        services_by_name,
        problems: Vec::new(),
        endpoint_cache: HashMap::new(),
    };
    let shared = shared_destinations(config);
    ctx.check_address_conflicts(&shared);

    let base = ctx.routes_for(Proxy::Unbound, &shared);
    let mut classes = vec![Class { id: BASE_CLASS, routes: base }];
    let mut workloads = Vec::new();
    let mut cgroups: HashMap<PathBuf, String> = HashMap::new();
    for dp in &config.dataplanes {
        let Some(raw) = dp.origin.labels.get(CGROUP_LABEL) else { continue };
        let Some(cgroup) = ctx.cgroup_path(dp, raw) else { continue };
        if let Some(other) = cgroups.insert(cgroup.clone(), dp.origin.display_name()) {
            ctx.error(&dp.origin, &format!("labels[\"{CGROUP_LABEL}\"]"), format!("cgroup {raw:?} is already bound to {other}"));
            continue;
        }
        let mut destinations = shared.clone();
        destinations.extend(outbound_destinations(config, dp, &shared, &mut ctx));
        let routes = ctx.routes_for(Proxy::Workload(dp), &destinations);
        let id = match classes.iter().find(|c| same_tables(&c.routes, &routes)) {
            Some(class) => class.id,
            None => {
                let id = classes.len() as u32;
                classes.push(Class { id, routes });
                id
            }
        };
        workloads.push(Workload { dataplane: dp.origin.display_name(), mesh: dp.origin.mesh.clone(), cgroup, class: id });
    }
    let mut seen = HashSet::new();
    ctx.problems.retain(|p| seen.insert(p.to_string()));
    (Resolution { classes, workloads }, ctx.problems)
}

/// Whether two route sets give the kernel the same tables (explanations aside).
fn same_tables(a: &[ResolvedRoute], b: &[ResolvedRoute]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| (x.vip, x.port, &x.backends) == (y.vip, y.port, &y.backends))
}

/// What a destination is.
#[derive(Clone, Debug)]
enum Target<'a> {
    Service(&'a MeshService, &'a ServicePort),
    External(&'a MeshExternalService),
    MultiZone(&'a MeshMultiZoneService, &'a ServicePort),
    /// A legacy `kuma.io/service` (tags include it, plus any subset tags).
    Legacy(BTreeMap<String, String>),
}

/// One address:port a client may dial.
#[derive(Clone, Debug)]
struct Destination<'a> {
    mesh: &'a str,
    vip: IpAddr,
    port: u16,
    target: Target<'a>,
    /// Where the address was declared, for problem reports.
    origin: &'a Origin,
}

impl Destination<'_> {
    /// The name `to` entries use for this destination.
    fn name(&self) -> &str {
        match &self.target {
            Target::Legacy(tags) => tags.get("kuma.io/service").map_or("", String::as_str),
            Target::Service(s, _) => &s.origin.name,
            Target::External(s) => &s.origin.name,
            Target::MultiZone(s, _) => &s.origin.name,
        }
    }

    fn display(&self) -> String {
        match &self.target {
            Target::Legacy(tags) => format!("kuma.io/service {}", tags.get("kuma.io/service").map_or("", String::as_str)),
            Target::Service(s, _) => s.origin.display_name(),
            Target::External(s) => s.origin.display_name(),
            Target::MultiZone(s, _) => s.origin.display_name(),
        }
    }

    fn app_protocol(&self, index: &endpoints::Index<'_>) -> Option<String> {
        match &self.target {
            Target::Service(_, p) | Target::MultiZone(_, p) => p.app_protocol.clone(),
            Target::External(s) => s.spec.matcher.as_ref().and_then(|m| m.protocol.clone()),
            Target::Legacy(tags) => index.legacy_protocol(self.mesh, tags.get("kuma.io/service").map_or("", String::as_str)),
        }
    }
}

/// Destinations every proxy has: the VIPs of MeshServices, MeshExternalServices
/// and MeshMultiZoneServices.
fn shared_destinations(config: &Config) -> Vec<Destination<'_>> {
    let mut out = Vec::new();
    for s in &config.services {
        for port in s.spec.ports.as_deref().unwrap_or_default() {
            for vip in s.status.vips.as_deref().unwrap_or_default() {
                out.push(Destination { mesh: &s.origin.mesh, vip: vip.ip.to_canonical(), port: port.port, target: Target::Service(s, port), origin: &s.origin });
            }
        }
    }
    for s in &config.external_services {
        if let (Some(vip), Some(m)) = (&s.status.vip, &s.spec.matcher) {
            out.push(Destination { mesh: &s.origin.mesh, vip: vip.ip.to_canonical(), port: m.port, target: Target::External(s), origin: &s.origin });
        }
    }
    for s in &config.multizone_services {
        for port in s.spec.ports.as_deref().unwrap_or_default() {
            for vip in s.status.vips.as_deref().unwrap_or_default() {
                out.push(Destination { mesh: &s.origin.mesh, vip: vip.ip.to_canonical(), port: port.port, target: Target::MultiZone(s, port), origin: &s.origin });
            }
        }
    }
    out.sort_by_key(|d| (d.vip, d.port));
    out
}

/// A workload's own outbounds (Kuma without transparent proxying): legacy
/// `kuma.io/service` tags, or a MeshService port by backendRef. An outbound on
/// an address:port that is already a service address is left to the service.
fn outbound_destinations<'a>(
    config: &'a Config,
    dp: &'a Dataplane,
    shared: &[Destination<'a>],
    ctx: &mut Ctx<'a>,
) -> Vec<Destination<'a>> {
    let mut out = Vec::new();
    let prefix = dp.origin.body_prefix();
    for (i, ob) in dp.spec.networking.outbound.as_deref().unwrap_or_default().iter().enumerate() {
        let vip = ob.address.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)).to_canonical();
        if shared.iter().any(|d| d.vip == vip && d.port == ob.port) {
            ctx.warn(&dp.origin, &format!("{prefix}networking.outbound[{i}]"), format!("{} is a service address already; the service's route applies", SocketAddr::new(vip, ob.port)));
            continue;
        }
        let target = if let Some(r) = &ob.backend_ref {
            let found = config.services.iter().find(|s| {
                s.origin.mesh == dp.origin.mesh
                    && (r.name.as_ref() == Some(&s.origin.name)
                        || r.labels.as_ref().is_some_and(|l| l.iter().all(|(k, v)| s.origin.labels.get(k) == Some(v))))
            });
            let port = found.and_then(|s| {
                s.spec.ports.as_deref().unwrap_or_default().iter().find(|p| Some(u32::from(p.port)) == r.port).map(|p| (s, p))
            });
            match port {
                Some((s, p)) => Target::Service(s, p),
                None => {
                    ctx.warn(&dp.origin, &format!("{prefix}networking.outbound[{i}].backendRef"), "matches no MeshService port; the outbound is not routed".to_string());
                    continue;
                }
            }
        } else {
            Target::Legacy(ob.tags.clone().unwrap_or_default())
        };
        out.push(Destination { mesh: &dp.origin.mesh, vip, port: ob.port, target, origin: &dp.origin });
    }
    out
}

/// Resolution state: inputs, problems, and endpoint sets computed once.
struct Ctx<'a> {
    config: &'a Config,
    dns: &'a dyn HostResolver,
    index: endpoints::Index<'a>,
    /// mesh -> name -> MeshServices (several across namespaces).
    services_by_name: HashMap<&'a str, HashMap<&'a str, Vec<&'a MeshService>>>,
    problems: Vec<Problem>,
    endpoint_cache: HashMap<String, Vec<SocketAddr>>,
}

impl<'a> Ctx<'a> {
    fn push(&mut self, severity: Severity, origin: &Origin, path: &str, message: String) {
        self.problems.push(Problem { severity, file: origin.file.clone(), resource: origin.display_name(), path: path.to_string(), message });
    }

    fn warn(&mut self, origin: &Origin, path: &str, message: String) {
        self.push(Severity::Warning, origin, path, message);
    }

    fn error(&mut self, origin: &Origin, path: &str, message: String) {
        self.push(Severity::Error, origin, path, message);
    }

    /// The workload cgroup path: relative, without `..`.
    fn cgroup_path(&mut self, dp: &Dataplane, raw: &str) -> Option<PathBuf> {
        let path = Path::new(raw);
        let ok = !raw.is_empty() && path.components().all(|c| matches!(c, Component::Normal(_)));
        if !ok {
            self.error(&dp.origin, &format!("labels[\"{CGROUP_LABEL}\"]"), format!("{raw:?} must be a relative path below the --cgroup directory, without `..`"));
            return None;
        }
        Some(path.to_path_buf())
    }

    fn check_address_conflicts(&mut self, shared: &[Destination<'_>]) {
        for pair in shared.windows(2) {
            if (pair[0].vip, pair[0].port) == (pair[1].vip, pair[1].port) {
                let other_mesh = if pair[0].mesh == pair[1].mesh { String::new() } else { format!(" in mesh {:?}", pair[0].mesh) };
                let path = if matches!(pair[1].target, Target::External(_)) { "status.vip" } else { "status.vips" };
                self.error(
                    pair[1].origin,
                    path,
                    format!("{} is also an address of {}{other_mesh}", SocketAddr::new(pair[1].vip, pair[1].port), pair[0].display()),
                );
            }
        }
    }

    /// Every destination's route for one proxy.
    fn routes_for(&mut self, proxy: Proxy<'_>, destinations: &[Destination<'a>]) -> Vec<ResolvedRoute> {
        let policies = ordered_policies(&self.config.routes, &proxy);
        let entries: Vec<Entry<'a>> = policies
            .iter()
            .flat_map(|p| {
                p.spec.to.as_deref().unwrap_or_default().iter().enumerate().map(move |(i, to)| Entry { policy: p, index: i, target: &to.target_ref })
            })
            .collect();
        // Most entries name their destination: index them by name, and scan
        // only the others (label selectors, Kuma's `name_ns_svc_port` form).
        let mut by_name: HashMap<&str, Vec<usize>> = HashMap::new();
        let mut scanned = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            match &e.target.name {
                Some(name) if !name.contains("_svc") => by_name.entry(name.as_str()).or_default().push(i),
                _ => scanned.push(i),
            }
        }
        let http = self.http_routes_for(&proxy);
        let mut routes: Vec<ResolvedRoute> = destinations
            .iter()
            .map(|d| {
                let mut candidates: Vec<usize> = by_name.get(d.name()).cloned().unwrap_or_default();
                candidates.extend(&scanned);
                candidates.sort_unstable();
                let relevant: Vec<&Entry<'a>> = candidates.iter().map(|&i| &entries[i]).collect();
                self.route(d, &relevant, &http)
            })
            .collect();
        routes.sort_by_key(|r| (r.vip, r.port));
        routes
    }

    /// `to` targets of the MeshHTTPRoutes that select `proxy`.
    fn http_routes_for(&self, proxy: &Proxy<'_>) -> Vec<(&'a Origin, &'a TargetRef)> {
        self.config
            .http_routes
            .iter()
            .filter(|r| proxy.selected_by(&r.origin, r.spec.target_ref.as_ref()))
            .flat_map(|r| r.spec.to.as_deref().unwrap_or_default().iter().map(move |t| (&r.origin, &t.target_ref)))
            .collect()
    }

    /// The route of one destination; `entries` are the candidate `to` entries in policy order.
    fn route(&mut self, dest: &Destination<'a>, entries: &[&Entry<'a>], http: &[(&'a Origin, &'a TargetRef)]) -> ResolvedRoute {
        let mut why = Vec::new();
        let mut relevant: Vec<(&Entry<'a>, bool)> = entries
            .iter()
            .copied()
            .filter(|e| e.policy.origin.mesh == dest.mesh)
            .filter_map(|e| targets(&e.policy.origin, e.target, dest).map(|section| (e, section)))
            .collect();
        if !matches!(dest.target, Target::Legacy(_)) {
            // Stable: equal keys keep policy order (names descending) and `to` order.
            // Kuma ranks a literal sectionName, and only on MeshService entries.
            relevant.sort_by_key(|(e, _)| {
                let section = e.target.kind == Some(RefKind::MeshService) && e.target.section_name.is_some();
                (policy_attrs(&e.policy.origin, e.policy.spec.target_ref.as_ref()), kind_rank(e.target.kind), section)
            });
        }
        for (e, _) in relevant.iter().rev().skip(1).rev() {
            why.push(format!("{} to[{}] targets this destination but is overridden", e.policy.origin.display_name(), e.index));
        }
        let app_protocol = dest.app_protocol(&self.index);
        let http_based = app_protocol.as_deref().is_some_and(|p| matches!(p.to_ascii_lowercase().as_str(), "http" | "http2" | "grpc"));
        let http_route = http.iter().find(|(o, t)| o.mesh == dest.mesh && targets(o, t, dest).is_some());
        let winner = relevant.last().map(|(e, _)| *e);
        let (policy, backends) = match (http_based, http_route, winner) {
            (true, Some((origin, _)), _) => {
                why.push(format!(
                    "{} targets this {} destination and takes precedence over MeshTCPRoute; redirector does not route HTTP, so connections go to the destination itself",
                    origin.display_name(),
                    app_protocol.as_deref().unwrap_or("")
                ));
                (None, vec![self.default_backend(dest)])
            }
            (_, _, Some(e)) => {
                let to = &e.policy.spec.to.as_deref().unwrap_or_default()[e.index];
                why.push(format!("{} to[{}] wins", e.policy.origin.display_name(), e.index));
                let refs: Vec<(String, BackendRef)> = match to.rules.as_deref().and_then(|r| r.first()) {
                    Some(rule) => rule
                        .default
                        .backend_refs
                        .as_deref()
                        .unwrap_or_default()
                        .iter()
                        .enumerate()
                        .map(|(k, r)| (format!("spec.to[{}].rules[0].default.backendRefs[{k}]", e.index), r.clone()))
                        .collect(),
                    None => {
                        why.push("no rules: traffic goes to the `to` target itself".into());
                        let copy = self_ref(e.target);
                        // A copy naming a section is a real reference: the very
                        // resource this entry matched. Without a section it is a
                        // legacy `kuma.io/service` reference, as in Kuma.
                        if copy.section_name.is_some() && !matches!(dest.target, Target::Legacy(_)) {
                            let own = self.default_backend(dest);
                            return ResolvedRoute {
                                mesh: dest.mesh.to_string(),
                                service: dest.display(),
                                vip: dest.vip,
                                port: dest.port,
                                app_protocol,
                                policy: Some(e.policy.origin.display_name()),
                                backends: vec![own],
                                why,
                            };
                        }
                        vec![(format!("spec.to[{}].targetRef", e.index), copy)]
                    }
                };
                let mut backends = Vec::new();
                for (path, r) in refs {
                    match self.backend(e.policy, &path, &r) {
                        Ok(b) => backends.push(b),
                        Err(reason) => why.push(reason),
                    }
                }
                if backends.is_empty() {
                    why.push("every backend was dropped: connections are refused".into());
                }
                (Some(e.policy.origin.display_name()), backends)
            }
            (_, _, None) => {
                why.push("no MeshTCPRoute targets this destination: default route to itself".into());
                (None, vec![self.default_backend(dest)])
            }
        };
        ResolvedRoute { mesh: dest.mesh.to_string(), service: dest.display(), vip: dest.vip, port: dest.port, app_protocol, policy, backends, why }
    }

    /// The destination itself as a backend of weight 1.
    fn default_backend(&mut self, dest: &Destination<'a>) -> ResolvedBackend {
        match &dest.target {
            Target::Service(s, p) => self.service_backend(s, p, 1),
            Target::External(s) => self.external_backend(s, 1),
            Target::MultiZone(s, p) => self.multizone_backend(s, p, 1),
            Target::Legacy(tags) => self.legacy_backend(dest.mesh, tags.clone(), 1),
        }
    }

    /// Resolves one backendRef; `Err` says why it was dropped.
    fn backend(&mut self, policy: &'a MeshTcpRoute, path: &str, r: &BackendRef) -> Result<ResolvedBackend, String> {
        let weight = r.weight.unwrap_or(1);
        let label = describe_ref(r);
        if weight == 0 {
            return Err(format!("{label}: dropped, weight 0"));
        }
        let weight = u32::try_from(weight).unwrap_or(u32::MAX);
        let origin = &policy.origin;
        let mesh = origin.mesh.as_str();
        let namespace = r.namespace.as_ref().or(origin.namespace.as_ref());
        let by_ref = |o: &Origin| -> bool {
            o.mesh == mesh
                && match (&r.name, &r.labels) {
                    (Some(name), _) => name == &o.name && (namespace.is_none() || namespace == o.namespace.as_ref()),
                    (None, Some(labels)) => labels.iter().all(|(k, v)| o.labels.get(k) == Some(v)),
                    (None, None) => false,
                }
        };
        let section = r.section_name.clone().or(r.port.or(r.doc_port).map(|p| p.to_string()));
        let drop = |ctx: &mut Self, what: String| {
            let message = format!("{what}; its share is dropped and the other backends share the traffic");
            ctx.warn(origin, path, message.clone());
            Err(format!("{label}: {message}"))
        };
        match r.kind {
            Some(RefKind::MeshService) if section.is_some() => {
                let section = section.unwrap_or_default();
                let found = match &r.name {
                    Some(name) => self
                        .services_by_name
                        .get(mesh)
                        .and_then(|m| m.get(name.as_str()))
                        .and_then(|list| list.iter().copied().find(|s| by_ref(&s.origin))),
                    None => self.config.services.iter().map(|s| &**s).find(|s| by_ref(&s.origin)),
                };
                let Some(s) = found else {
                    return drop(self, format!("{label} does not exist"));
                };
                match s.spec.ports.as_deref().unwrap_or_default().iter().find(|p| port_matches(p, &section)) {
                    Some(p) => Ok(self.service_backend(s, p, weight)),
                    None => drop(self, format!("{label} has no port {section}")),
                }
            }
            Some(RefKind::MeshService | RefKind::MeshServiceSubset) => {
                let name = r.name.clone().unwrap_or_default();
                let mut tags = r.tags.clone().unwrap_or_default();
                tags.insert("kuma.io/service".into(), name.clone());
                if !self.index.legacy_service_exists(mesh, &name) {
                    self.warn(origin, path, format!("no Dataplane inbound has kuma.io/service {name:?} (yet); as in Kuma, its share of connections fails"));
                }
                Ok(self.legacy_backend(mesh, tags, weight))
            }
            Some(RefKind::MeshExternalService) => match self.config.external_services.iter().find(|s| by_ref(&s.origin)) {
                Some(s) => Ok(self.external_backend(s, weight)),
                None => drop(self, format!("{label} does not exist")),
            },
            Some(RefKind::MeshMultiZoneService) => {
                let section = section.unwrap_or_default();
                let Some(s) = self.config.multizone_services.iter().find(|s| by_ref(&s.origin)) else {
                    return drop(self, format!("{label} does not exist"));
                };
                match s.spec.ports.as_deref().unwrap_or_default().iter().find(|p| port_matches(p, &section)) {
                    Some(p) => Ok(self.multizone_backend(s, p, weight)),
                    None => drop(self, format!("{label} has no port {section}")),
                }
            }
            _ => Err(format!("{label}: not a backend kind")),
        }
    }

    fn cached(&mut self, key: String, compute: impl FnOnce(&mut Self) -> Vec<SocketAddr>) -> Vec<SocketAddr> {
        if let Some(hit) = self.endpoint_cache.get(&key) {
            return hit.clone();
        }
        let value = compute(self);
        self.endpoint_cache.insert(key, value.clone());
        value
    }

    fn service_backend(&mut self, s: &'a MeshService, p: &'a ServicePort, weight: u32) -> ResolvedBackend {
        let name = format!("{}:{}", s.origin.display_name(), p.port);
        let endpoints = self.cached(format!("svc\0{:p}\0{:p}", s, p), |ctx| ctx.index.mesh_service(s, p));
        ResolvedBackend { name, weight, endpoints }
    }

    fn legacy_backend(&mut self, mesh: &str, tags: BTreeMap<String, String>, weight: u32) -> ResolvedBackend {
        let service = tags.get("kuma.io/service").cloned().unwrap_or_default();
        let extra: Vec<String> = tags.iter().filter(|(k, _)| *k != "kuma.io/service").map(|(k, v)| format!("{k}={v}")).collect();
        let name = if extra.is_empty() { format!("kuma.io/service {service}") } else { format!("kuma.io/service {service} {{{}}}", extra.join(",")) };
        let endpoints = self.cached(format!("{mesh}\0{name}"), |ctx| ctx.index.legacy_service(mesh, &tags));
        ResolvedBackend { name, weight, endpoints }
    }

    fn external_backend(&mut self, s: &'a MeshExternalService, weight: u32) -> ResolvedBackend {
        let name = s.origin.display_name();
        let endpoints = self.cached(format!("mes\0{:p}", s), |ctx| {
            let mut out = Vec::new();
            for (i, e) in s.spec.endpoints.as_deref().unwrap_or_default().iter().enumerate() {
                match e.address.parse::<IpAddr>() {
                    Ok(ip) => out.push(SocketAddr::new(ip.to_canonical(), e.port)),
                    Err(_) => match ctx.dns.lookup(&e.address) {
                        Ok(ips) => out.extend(ips.into_iter().map(|ip| SocketAddr::new(ip, e.port))),
                        Err(reason) => ctx.warn(&s.origin, &format!("spec.endpoints[{i}].address"), reason),
                    },
                }
            }
            endpoints::sorted(out.into_iter())
        });
        ResolvedBackend { name, weight, endpoints }
    }

    fn multizone_backend(&mut self, s: &'a MeshMultiZoneService, p: &'a ServicePort, weight: u32) -> ResolvedBackend {
        let name = format!("{}:{}", s.origin.display_name(), p.port);
        let labels = s.spec.selector.as_ref().and_then(|x| x.mesh_service.as_ref()).and_then(|x| x.match_labels.clone()).unwrap_or_default();
        let config = self.config;
        let key = format!("mzs\0{:p}\0{:p}", s, p);
        let endpoints = self.cached(key, |ctx| {
            let mut all = Vec::new();
            for svc in config.services.iter().filter(|m| {
                m.origin.mesh == s.origin.mesh && !labels.is_empty() && labels.iter().all(|(k, v)| m.origin.labels.get(k) == Some(v))
            }) {
                if let Some(port) = svc.spec.ports.as_deref().unwrap_or_default().iter().find(|x| x.port == p.port) {
                    all.extend(ctx.service_backend(svc, port, 1).endpoints);
                }
            }
            endpoints::sorted(all.into_iter())
        });
        ResolvedBackend { name, weight, endpoints }
    }
}

/// One `to` entry of an applicable policy.
struct Entry<'a> {
    policy: &'a MeshTcpRoute,
    index: usize,
    target: &'a TargetRef,
}

/// Whether a `to[].targetRef` of the policy `origin` targets `dest`;
/// `Some(true)` when it names the destination's port, `Some(false)` when it
/// names the whole service.
fn targets(origin: &Origin, to: &TargetRef, dest: &Destination<'_>) -> Option<bool> {
    let namespace = to.namespace.as_ref().or(origin.namespace.as_ref());
    let names = |o: &Origin| match (&to.name, &to.labels) {
        (Some(name), _) => name == &o.name && (namespace.is_none() || namespace == o.namespace.as_ref()),
        (None, Some(labels)) => labels.iter().all(|(k, v)| o.labels.get(k) == Some(v)),
        (None, None) => false,
    };
    let section = to.section_name.clone().or(to.doc_port.map(|p| p.to_string()));
    // Kuma resolves a `to` section by port name, by number only for unnamed ports.
    let with_section = |port: &ServicePort| match &section {
        Some(s) => match &port.name {
            Some(name) => (name == s).then_some(true),
            None => (s.parse::<u16>() == Ok(port.port)).then_some(true),
        },
        None => Some(false),
    };
    match (&dest.target, to.kind) {
        (Target::Service(s, port), Some(RefKind::MeshService)) => {
            if names(&s.origin) {
                return with_section(port);
            }
            legacy_name_targets(to, s, port)
        }
        (Target::External(s), Some(RefKind::MeshExternalService)) => names(&s.origin).then_some(false),
        (Target::MultiZone(s, port), Some(RefKind::MeshMultiZoneService)) => {
            if names(&s.origin) { with_section(port) } else { None }
        }
        (Target::Legacy(tags), Some(RefKind::MeshService)) => {
            (to.name.is_some() && to.name.as_ref() == tags.get("kuma.io/service")).then_some(false)
        }
        _ => None,
    }
}

/// Kuma's backward compatibility: a MeshService `to` named
/// `name_namespace_svc_port` (or `name_namespace_svc`) targets MeshService
/// `name` in `namespace` (and that port).
fn legacy_name_targets(to: &TargetRef, s: &MeshService, port: &ServicePort) -> Option<bool> {
    if to.section_name.is_some() {
        return None;
    }
    let name = to.name.as_deref()?;
    let parts: Vec<&str> = name.split('_').collect();
    let (svc, ns, wanted) = match parts[..] {
        [svc, ns, "svc", p] => (svc, ns, Some(p.parse::<u16>().ok()?)),
        [svc, ns, "svc"] => (svc, ns, None),
        _ => return None,
    };
    let display = s.origin.labels.get("kuma.io/display-name").unwrap_or(&s.origin.name);
    let namespace = s.origin.labels.get("k8s.kuma.io/namespace").or(s.origin.namespace.as_ref());
    if display != svc || namespace.map(String::as_str) != Some(ns) {
        return None;
    }
    match wanted {
        Some(p) => (p == port.port).then_some(true),
        None => Some(false),
    }
}

/// A port matches a section by name or by number.
fn port_matches(port: &ServicePort, section: &str) -> bool {
    port.name.as_deref() == Some(section) || section.parse::<u16>() == Ok(port.port)
}

/// The backendRef a `to` entry without rules stands for: its own target, weight 1.
fn self_ref(target: &TargetRef) -> BackendRef {
    BackendRef {
        kind: target.kind,
        name: target.name.clone(),
        namespace: target.namespace.clone(),
        labels: target.labels.clone(),
        tags: target.tags.clone(),
        section_name: target.section_name.clone().or(target.doc_port.map(|p| p.to_string())),
        mesh: None,
        proxy_types: None,
        port: None,
        weight: Some(1),
        doc_port: None,
        doc_version: None,
    }
}

fn describe_ref(r: &BackendRef) -> String {
    let kind = r.kind.map_or_else(|| "?".to_string(), |k| k.to_string());
    let name = r.name.clone().unwrap_or_else(|| format!("{:?}", r.labels.clone().unwrap_or_default()));
    match r.section_name.clone().or(r.port.or(r.doc_port).map(|p| p.to_string())) {
        Some(section) => format!("{kind}/{name}:{section}"),
        None => format!("{kind}/{name}"),
    }
}
