//! The route of one destination for one proxy: which `to` entry wins, and
//! where its backends' connections go. Every lookup goes through the store's
//! indexes and records its token (see [`super::world`]).

use crate::model::{Tags, Text};
use compact_str::{ToCompactString as _, format_compact};
use super::{
    HostResolver, ResolvedBackend, ResolvedRoute,
    endpoints::{self, Lookup},
    select::{Proxy, display_name, kind_rank, policy_attrs},
    world::{Addr, DestRef, Token, World, ix},
};
use crate::{
    model::{
        BackendRef, Dataplane, RefExtra, MeshExternalService, MeshMultiZoneService, MeshService, MeshTcpRoute, Origin, Problem, RefKind, ServicePort,
        Severity, TargetRef,
    },
    store::Key,
};
use std::{
    borrow::Cow,
    cmp::Reverse,
    fmt,
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::Arc,
};

/// What a destination is.
#[derive(Clone, Debug)]
pub(crate) enum Target<'a> {
    Service(&'a MeshService, &'a ServicePort),
    External(&'a MeshExternalService),
    MultiZone(&'a MeshMultiZoneService, &'a ServicePort),
    /// A legacy `kuma.io/service` (tags include it, plus any subset tags).
    Legacy(Tags),
}

/// One address:port a client may dial.
#[derive(Clone, Debug)]
pub(crate) struct Destination<'a> {
    pub mesh: &'a str,
    pub vip: IpAddr,
    pub port: u16,
    pub target: Target<'a>,
    /// Where the address was declared, for problem reports.
    pub origin: &'a Origin,
}

impl<'a> Destination<'a> {
    /// The name `to` entries use for this destination.
    fn name(&self) -> &str {
        match &self.target {
            Target::Legacy(tags) => tags.get("kuma.io/service").map_or("", Text::as_str),
            Target::Service(s, _) => &s.origin.name,
            Target::External(s) => &s.origin.name,
            Target::MultiZone(s, _) => &s.origin.name,
        }
    }

    fn display(&self) -> Text {
        match &self.target {
            Target::Legacy(tags) => format_compact!("kuma.io/service {}", tags.get("kuma.io/service").map_or("", Text::as_str)),
            Target::Service(s, _) => s.origin.display_name(),
            Target::External(s) => s.origin.display_name(),
            Target::MultiZone(s, _) => s.origin.display_name(),
        }
    }

    fn app_protocol(&self, lookup: &mut Lookup<'_, '_>) -> Option<Text> {
        match &self.target {
            Target::Service(_, p) | Target::MultiZone(_, p) => p.app_protocol.clone(),
            Target::External(s) => s.spec.matcher.as_ref().and_then(|m| m.protocol.clone()),
            Target::Legacy(tags) => lookup.legacy_protocol(self.mesh, tags.get("kuma.io/service").map_or("", Text::as_str)),
        }
    }

    /// The destination `d` declares at `addr`.
    pub fn declared(world: &'a World, addr: Addr, d: &DestRef) -> Option<Self> {
        let (vip, port) = addr;
        Some(match d {
            DestRef::Service(key, i) => {
                let s = world.service(key)?;
                Self { mesh: &s.origin.mesh, vip, port, target: Target::Service(s, s.spec.ports.as_ref()?.get(*i)?), origin: &s.origin }
            }
            DestRef::External(key) => {
                let s = world.external(key)?;
                Self { mesh: &s.origin.mesh, vip, port, target: Target::External(s), origin: &s.origin }
            }
            DestRef::MultiZone(key, i) => {
                let s = world.multizone(key)?;
                Self { mesh: &s.origin.mesh, vip, port, target: Target::MultiZone(s, s.spec.ports.as_ref()?.get(*i)?), origin: &s.origin }
            }
        })
    }
}

/// Endpoint sets computed once per update, with what computing them read
/// and reported (given again to every route that uses them).
#[derive(Default)]
pub(crate) struct Cache {
    entries: HashMap<CacheKey, Cached>,
}

/// An endpoint set in the cache: a resource (and port) by address, which is
/// stable while the world it was read from is, or a legacy tag selector.
#[derive(Clone, PartialEq, Eq, Hash)]
enum CacheKey {
    Service(usize, usize),
    External(usize),
    MultiZone(usize, usize),
    Legacy(String),
}

fn address<T>(r: &T) -> usize {
    std::ptr::from_ref(r) as usize
}

/// Where a backend reference is in its policy, formatted only for a problem.
#[derive(Clone, Copy)]
enum RefPath {
    /// `spec.to[i].rules[0].default.backendRefs[k]`.
    Backend(usize, usize),
    /// `spec.to[i].targetRef`, standing for itself when there are no rules.
    Target(usize),
}

impl fmt::Display for RefPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RefPath::Backend(i, k) => write!(f, "spec.to[{i}].rules[0].default.backendRefs[{k}]"),
            RefPath::Target(i) => write!(f, "spec.to[{i}].targetRef"),
        }
    }
}

struct Cached {
    endpoints: Arc<[SocketAddr]>,
    deps: Vec<u64>,
    problems: Vec<Problem>,
}

/// Resolution of one route (or of one workload's outbounds): its inputs,
/// the tokens of what it read, and the problems it met.
pub(crate) struct Ctx<'a, 'c> {
    pub world: &'a World,
    pub dns: &'a dyn HostResolver,
    pub cache: &'c mut Cache,
    pub deps: Vec<u64>,
    pub problems: Vec<Problem>,
}

impl<'a> Ctx<'a, '_> {
    fn push(&mut self, severity: Severity, origin: &Origin, path: &str, message: String) {
        self.problems.push(Problem { severity, file: origin.file.to_path_buf(), resource: origin.display_name().into(), path: path.to_string(), message });
    }

    fn warn(&mut self, origin: &Origin, path: &str, message: String) {
        self.push(Severity::Warning, origin, path, message);
    }

    pub fn error(&mut self, origin: &Origin, path: &str, message: String) {
        self.push(Severity::Error, origin, path, message);
    }

    fn lookup(&mut self) -> Lookup<'a, '_> {
        Lookup { world: self.world, deps: &mut self.deps }
    }

    /// Errors for every declaration of `addr` after the first (two
    /// destinations on one address cannot both be routed).
    pub fn address_conflicts(&mut self, addr: Addr, declared: &[Destination<'a>]) {
        for pair in declared.windows(2) {
            let other_mesh = if pair[0].mesh == pair[1].mesh { String::new() } else { format!(" in mesh {:?}", pair[0].mesh) };
            let path = if matches!(pair[1].target, Target::External(_)) { "status.vip" } else { "status.vips" };
            self.error(pair[1].origin, path, format!("{} is also an address of {}{other_mesh}", SocketAddr::new(addr.0, addr.1), pair[0].display()));
        }
    }

    /// A workload's own outbounds (Kuma without transparent proxying):
    /// legacy `kuma.io/service` tags, or a MeshService port by backendRef. An
    /// outbound on an address:port that is already a service address is left
    /// to the service.
    pub fn outbounds(&mut self, dp: &'a Dataplane) -> Vec<Destination<'a>> {
        let mut out = Vec::new();
        let prefix = dp.origin.body_prefix();
        let mesh = dp.origin.mesh.as_str();
        for (i, ob) in dp.spec.networking.outbound.as_deref().unwrap_or_default().iter().enumerate() {
            let vip = ob.address.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)).to_canonical();
            self.deps.push(Token::Addr(vip, ob.port).id());
            if self.world.destinations.contains_key(&(vip, ob.port)) {
                self.warn(&dp.origin, &format!("{prefix}networking.outbound[{i}]"), format!("{} is a service address already; the service's route applies", SocketAddr::new(vip, ob.port)));
                continue;
            }
            let target = if let Some(r) = &ob.backend_ref {
                self.deps.push(Token::AllServices(mesh).id());
                let world = self.world;
                let found = World::keys(&world.services_by_mesh, ix(&[mesh])).filter_map(|k| world.service(k)).filter(|s| s.origin.mesh == mesh).find(|s| {
                    r.name.as_ref() == Some(&s.origin.name)
                        || r.labels.as_ref().is_some_and(|l| l.iter().all(|(k, v)| s.origin.labels.get(k) == Some(v)))
                });
                let port = found.and_then(|s| {
                    s.spec.ports.as_deref().unwrap_or_default().iter().find(|p| Some(u32::from(p.port)) == r.port).map(|p| (s, p))
                });
                match port {
                    Some((s, p)) => Target::Service(s, p),
                    None => {
                        self.warn(&dp.origin, &format!("{prefix}networking.outbound[{i}].backendRef"), "matches no MeshService port; the outbound is not routed".to_string());
                        continue;
                    }
                }
            } else {
                Target::Legacy(ob.tags.clone().unwrap_or_default())
            };
            out.push(Destination { mesh, vip, port: ob.port, target, origin: &dp.origin });
        }
        out
    }

    /// The route of `dest` for `proxy`: the MeshTCPRoute `to` entries that
    /// name it (or may, for label selectors) and select the proxy, in policy
    /// order (names descending; equal names by key), then `to` order.
    pub fn route_for(&mut self, proxy: Proxy<'_>, dest: &Destination<'a>) -> ResolvedRoute {
        let world = self.world;
        let name = dest.name();
        self.deps.push(Token::EntryName(dest.mesh, name).id());
        self.deps.push(Token::EntryScan(dest.mesh).id());
        let named = world.routes.by_name.get(&ix(&[dest.mesh, name]));
        let scanned = world.routes.scanned.get(&ix(&[dest.mesh]));
        let mut entries: Vec<(&'a Key, Entry<'a>)> = named
            .into_iter()
            .flatten()
            .chain(scanned.into_iter().flatten())
            .filter_map(|(key, i)| {
                let policy = world.route(key)?;
                let to = policy.spec.to.as_ref()?.get(*i)?;
                proxy.selected_by(&policy.origin, policy.spec.target_ref.as_ref()).then_some((key, Entry { policy, index: *i, target: &to.target_ref }))
            })
            .collect();
        entries.sort_by(|(ka, a), (kb, b)| {
            fn rank<'e>(e: &Entry<'e>) -> ((u8, u8, u8, u8), Reverse<&'e str>) {
                (policy_attrs(&e.policy.origin, e.policy.spec.target_ref.as_ref()), Reverse(display_name(&e.policy.origin)))
            }
            rank(a).cmp(&rank(b)).then_with(|| ka.cmp(kb)).then(a.index.cmp(&b.index))
        });
        let entries: Vec<&Entry<'a>> = entries.iter().map(|(_, e)| e).collect();
        self.route(proxy, dest, &entries)
    }

    /// The first MeshHTTPRoute `to` entry (in key, then `to` order) that
    /// selects `proxy` and targets `dest`.
    fn http_route(&mut self, proxy: Proxy<'_>, dest: &Destination<'a>) -> Option<&'a Origin> {
        let world = self.world;
        let name = dest.name();
        self.deps.push(Token::HttpName(dest.mesh, name).id());
        self.deps.push(Token::HttpScan(dest.mesh).id());
        let mut found: Vec<&(Key, usize)> = world
            .http
            .by_name
            .get(&ix(&[dest.mesh, name]))
            .into_iter()
            .flatten()
            .chain(world.http.scanned.get(&ix(&[dest.mesh])).into_iter().flatten())
            .collect();
        found.sort();
        found.into_iter().find_map(|(key, i)| {
            let r = world.http_route(key)?;
            let to = r.spec.to.as_ref()?.get(*i)?;
            let applies = r.origin.mesh == dest.mesh && proxy.selected_by(&r.origin, r.spec.target_ref.as_ref()) && targets(&r.origin, &to.target_ref, dest).is_some();
            applies.then_some(&r.origin)
        })
    }

    /// The route of one destination; `entries` are the candidate `to` entries in policy order.
    fn route(&mut self, proxy: Proxy<'_>, dest: &Destination<'a>, entries: &[&Entry<'a>]) -> ResolvedRoute {
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
        let explain = !self.world.terse;
        for (e, _) in relevant.iter().rev().skip(1).rev().filter(|_| explain) {
            why.push(format!("{} to[{}] targets this destination but is overridden", e.policy.origin.display_name(), e.index));
        }
        let app_protocol = dest.app_protocol(&mut self.lookup());
        let http_based = app_protocol.as_deref().is_some_and(|p| matches!(p.to_ascii_lowercase().as_str(), "http" | "http2" | "grpc"));
        let http_route = if http_based { self.http_route(proxy, dest) } else { None };
        let winner = relevant.last().map(|(e, _)| *e);
        let (policy, backends) = match (http_based, http_route, winner) {
            (true, Some(origin), _) => {
                why.push(format!(
                    "{} targets this {} destination and takes precedence over MeshTCPRoute; redirector does not route HTTP, so connections go to the destination itself",
                    origin.display_name(),
                    app_protocol.as_deref().unwrap_or("")
                ));
                (None, vec![self.default_backend(dest)])
            }
            (_, _, Some(e)) => {
                let to = &e.policy.spec.to.as_deref().unwrap_or_default()[e.index];
                if explain {
                    why.push(format!("{} to[{}] wins", e.policy.origin.display_name(), e.index));
                }
                let refs: Vec<(RefPath, Cow<'_, BackendRef>)> = match to.rules.as_deref().and_then(|r| r.first()) {
                    Some(rule) => rule
                        .default
                        .backend_refs
                        .as_deref()
                        .unwrap_or_default()
                        .iter()
                        .enumerate()
                        .map(|(k, r)| (RefPath::Backend(e.index, k), Cow::Borrowed(r)))
                        .collect(),
                    None => {
                        why.push("no rules: traffic goes to the `to` target itself".into());
                        let copy = self_ref(e.target);
                        // A copy naming a section is a real reference: the very
                        // resource this entry matched. Without a section it is a
                        // legacy `kuma.io/service` reference, as in Kuma.
                        if copy.section_name.is_some() && !matches!(dest.target, Target::Legacy(_)) {
                            let own = self.default_backend(dest);
                            if !explain {
                                why = Vec::new();
                            }
                            return ResolvedRoute {
                                mesh: dest.mesh.into(),
                                service: dest.display(),
                                vip: dest.vip,
                                port: dest.port,
                                app_protocol,
                                policy: Some(e.policy.origin.display_name()),
                                backends: vec![own],
                                why,
                            };
                        }
                        vec![(RefPath::Target(e.index), Cow::Owned(copy))]
                    }
                };
                let mut backends = Vec::with_capacity(refs.len());
                for (path, r) in refs {
                    match self.backend(e.policy, path, &r) {
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
        if explain {
            why.shrink_to_fit();
        } else {
            why = Vec::new();
        }
        ResolvedRoute { mesh: dest.mesh.into(), service: dest.display(), vip: dest.vip, port: dest.port, app_protocol, policy, backends, why }
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
    fn backend(&mut self, policy: &'a MeshTcpRoute, path: RefPath, r: &BackendRef) -> Result<ResolvedBackend, String> {
        let weight = r.weight.unwrap_or(1);
        let label = || describe_ref(r);
        if weight == 0 {
            return Err(format!("{}: dropped, weight 0", label()));
        }
        let weight = u32::try_from(weight).unwrap_or(u32::MAX);
        let origin = &policy.origin;
        let mesh = origin.mesh.as_str();
        let namespace = r.namespace.as_ref().or(origin.namespace.as_ref());
        let by_ref = |o: &Origin| -> bool {
            o.mesh == mesh
                && match (&r.name, &r.labels) {
                    (Some(name), _) => *name == o.name && (namespace.is_none() || namespace == o.namespace.as_ref()),
                    (None, Some(labels)) => labels.iter().all(|(k, v)| o.labels.get(k) == Some(v)),
                    (None, None) => false,
                }
        };
        let section = r.section_name.clone().or(r.port.or(r.doc_port).map(|p| p.to_compact_string()));
        let drop = |ctx: &mut Self, what: String| {
            let message = format!("{what}; its share is dropped and the other backends share the traffic");
            ctx.warn(origin, &path.to_string(), message.clone());
            Err(format!("{}: {message}", label()))
        };
        match r.kind {
            Some(RefKind::MeshService) if section.is_some() => {
                let section = section.unwrap_or_default();
                let world = self.world;
                let found = match &r.name {
                    Some(name) => {
                        self.deps.push(Token::ServiceName(mesh, name).id());
                        World::keys(&world.services_by_name, ix(&[mesh, name])).filter_map(|k| world.service(k)).find(|s| by_ref(&s.origin))
                    }
                    None => {
                        self.deps.push(Token::AllServices(mesh).id());
                        World::keys(&world.services_by_mesh, ix(&[mesh])).filter_map(|k| world.service(k)).find(|s| by_ref(&s.origin))
                    }
                };
                let Some(s) = found else {
                    return drop(self, format!("{} does not exist", label()));
                };
                match s.spec.ports.as_deref().unwrap_or_default().iter().find(|p| port_matches(p, &section)) {
                    Some(p) => Ok(self.service_backend(s, p, weight)),
                    None => drop(self, format!("{} has no port {section}", label())),
                }
            }
            Some(RefKind::MeshService | RefKind::MeshServiceSubset) => {
                let name = r.name.clone().unwrap_or_default();
                let mut tags = r.tags.clone().unwrap_or_default();
                tags.insert("kuma.io/service".into(), name.clone());
                if !self.lookup().legacy_service_exists(mesh, &name) {
                    self.warn(origin, &path.to_string(), format!("no Dataplane inbound has kuma.io/service {name:?} (yet); as in Kuma, its share of connections fails"));
                }
                Ok(self.legacy_backend(mesh, tags, weight))
            }
            Some(RefKind::MeshExternalService) => {
                self.deps.push(Token::AllExternal(mesh).id());
                let world = self.world;
                match World::keys(&world.external_by_mesh, ix(&[mesh])).filter_map(|k| world.external(k)).find(|s| by_ref(&s.origin)) {
                    Some(s) => Ok(self.external_backend(s, weight)),
                    None => drop(self, format!("{} does not exist", label())),
                }
            }
            Some(RefKind::MeshMultiZoneService) => {
                let section = section.unwrap_or_default();
                self.deps.push(Token::AllMultiZone(mesh).id());
                let world = self.world;
                let Some(s) = World::keys(&world.multizone_by_mesh, ix(&[mesh])).filter_map(|k| world.multizone(k)).find(|s| by_ref(&s.origin)) else {
                    return drop(self, format!("{} does not exist", label()));
                };
                match s.spec.ports.as_deref().unwrap_or_default().iter().find(|p| port_matches(p, &section)) {
                    Some(p) => Ok(self.multizone_backend(s, p, weight)),
                    None => drop(self, format!("{} has no port {section}", label())),
                }
            }
            _ => Err(format!("{}: not a backend kind", label())),
        }
    }

    /// An endpoint set computed once per update; a route that uses it gets
    /// the tokens and problems of computing it too.
    fn cached(&mut self, key: CacheKey, compute: impl FnOnce(&mut Self) -> Vec<SocketAddr>) -> Arc<[SocketAddr]> {
        if !self.cache.entries.contains_key(&key) {
            let deps = std::mem::take(&mut self.deps);
            let problems = std::mem::take(&mut self.problems);
            let endpoints = compute(self).into();
            let entry = Cached { endpoints, deps: std::mem::replace(&mut self.deps, deps), problems: std::mem::replace(&mut self.problems, problems) };
            self.cache.entries.insert(key.clone(), entry);
        }
        let hit = &self.cache.entries[&key];
        self.deps.extend_from_slice(&hit.deps);
        self.problems.extend(hit.problems.iter().cloned());
        hit.endpoints.clone()
    }

    fn service_backend(&mut self, s: &'a MeshService, p: &'a ServicePort, weight: u32) -> ResolvedBackend {
        let name = format_compact!("{}:{}", s.origin.display_name(), p.port);
        let endpoints = self.cached(CacheKey::Service(address(s), address(p)), |ctx| ctx.lookup().mesh_service(s, p));
        ResolvedBackend { name, weight, endpoints }
    }

    fn legacy_backend(&mut self, mesh: &str, tags: Tags, weight: u32) -> ResolvedBackend {
        let service = tags.get("kuma.io/service").cloned().unwrap_or_default();
        let extra: Vec<String> = tags.iter().filter(|(k, _)| *k != "kuma.io/service").map(|(k, v)| format!("{k}={v}")).collect();
        let name = if extra.is_empty() { format_compact!("kuma.io/service {service}") } else { format_compact!("kuma.io/service {service} {{{}}}", extra.join(",")) };
        let endpoints = self.cached(CacheKey::Legacy(format!("{mesh}\0{name}")), |ctx| ctx.lookup().legacy_service(mesh, &tags));
        ResolvedBackend { name, weight, endpoints }
    }

    fn external_backend(&mut self, s: &'a MeshExternalService, weight: u32) -> ResolvedBackend {
        let name = s.origin.display_name();
        let endpoints = self.cached(CacheKey::External(address(s)), |ctx| {
            let mut out = Vec::new();
            for (i, e) in s.spec.endpoints.as_deref().unwrap_or_default().iter().enumerate() {
                match e.address.parse::<IpAddr>() {
                    Ok(ip) => out.push(SocketAddr::new(ip.to_canonical(), e.port)),
                    Err(_) => {
                        ctx.deps.push(Token::Dns.id());
                        match ctx.dns.lookup(&e.address) {
                            Ok(ips) => out.extend(ips.into_iter().map(|ip| SocketAddr::new(ip, e.port))),
                            Err(reason) => ctx.warn(&s.origin, &format!("spec.endpoints[{i}].address"), reason),
                        }
                    }
                }
            }
            endpoints::sorted(out.into_iter())
        });
        ResolvedBackend { name, weight, endpoints }
    }

    fn multizone_backend(&mut self, s: &'a MeshMultiZoneService, p: &'a ServicePort, weight: u32) -> ResolvedBackend {
        let name = format_compact!("{}:{}", s.origin.display_name(), p.port);
        let labels = s.spec.selector.as_ref().and_then(|x| x.mesh_service.as_ref()).and_then(|x| x.match_labels.clone()).unwrap_or_default();
        let world = self.world;
        let key = CacheKey::MultiZone(address(s), address(p));
        let endpoints = self.cached(key, |ctx| {
            let mut all = Vec::new();
            ctx.deps.push(Token::AllServices(&s.origin.mesh).id());
            for svc in World::keys(&world.services_by_mesh, ix(&[&s.origin.mesh])).filter_map(|k| world.service(k)).filter(|m| {
                m.origin.mesh == s.origin.mesh && !labels.is_empty() && labels.iter().all(|(k, v)| m.origin.labels.get(k) == Some(v))
            }) {
                if let Some(port) = svc.spec.ports.as_deref().unwrap_or_default().iter().find(|x| x.port == p.port) {
                    all.extend(ctx.service_backend(svc, port, 1).endpoints.iter().copied());
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
        (Some(name), _) => *name == o.name && (namespace.is_none() || namespace == o.namespace.as_ref()),
        (None, Some(labels)) => labels.iter().all(|(k, v)| o.labels.get(k) == Some(v)),
        (None, None) => false,
    };
    let section = to.section_name.clone().or(to.doc_port.map(|p| p.to_compact_string()));
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
    if display != svc || namespace.map(Text::as_str) != Some(ns) {
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
    let extra = RefExtra {
        namespace: target.namespace.clone(),
        labels: target.labels.clone(),
        tags: target.tags.clone(),
        section_name: target.section_name.clone().or(target.doc_port.map(|p| p.to_compact_string())),
        ..RefExtra::default()
    };
    BackendRef::new(target.kind, target.name.clone(), None, Some(1), extra)
}

fn describe_ref(r: &BackendRef) -> String {
    let kind = r.kind.map_or_else(|| "?".to_string(), |k| k.to_string());
    let name = r.name.clone().unwrap_or_else(|| format_compact!("{:?}", r.labels.clone().unwrap_or_default()));
    match r.section_name.clone().or(r.port.or(r.doc_port).map(|p| p.to_compact_string())) {
        Some(section) => format!("{kind}/{name}:{section}"),
        None => format!("{kind}/{name}"),
    }
}
