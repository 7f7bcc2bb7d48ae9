//! Endpoint sets: where a backend's connections go.
//!
//! With no sidecar, a connection goes straight to the application: an
//! inbound's `servicePort` when set, else its `port`, at the inbound's address
//! (else the Dataplane's). Only healthy inbounds count, as in Kuma.

use crate::model::{Config, Dataplane, Inbound, MeshService, PortRef, ServicePort};
use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, SocketAddr},
};

/// Looks hostnames up (MeshExternalService endpoints). Never called from the kernel side.
pub trait HostResolver {
    /// The addresses of `host`, or why there are none.
    fn lookup(&self, host: &str) -> Result<Vec<IpAddr>, String>;
}

/// Resolves nothing: every hostname is an error. For pure tests.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoDns;

impl HostResolver for NoDns {
    fn lookup(&self, host: &str) -> Result<Vec<IpAddr>, String> {
        Err(format!("hostname {host:?} not resolved (DNS disabled)"))
    }
}

/// The system resolver (getaddrinfo).
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemDns;

impl HostResolver for SystemDns {
    fn lookup(&self, host: &str) -> Result<Vec<IpAddr>, String> {
        use std::net::ToSocketAddrs as _;
        let addrs = (host, 0).to_socket_addrs().map_err(|e| format!("resolving {host:?}: {e}"))?;
        let mut ips: Vec<IpAddr> = addrs.map(|a| a.ip().to_canonical()).collect();
        ips.sort();
        ips.dedup();
        Ok(ips)
    }
}

/// Fixed answers, for tests.
#[derive(Debug, Default, Clone)]
pub struct StaticDns(pub BTreeMap<String, Vec<IpAddr>>);

impl HostResolver for StaticDns {
    fn lookup(&self, host: &str) -> Result<Vec<IpAddr>, String> {
        self.0.get(host).cloned().ok_or_else(|| format!("hostname {host:?} not found"))
    }
}

/// Where a connection to `inbound` of `dp` goes.
pub fn inbound_endpoint(dp: &Dataplane, inbound: &Inbound) -> Option<SocketAddr> {
    let address = inbound.address.or(dp.spec.networking.address)?.to_canonical();
    Some(SocketAddr::new(address, inbound.service_port.unwrap_or(inbound.port)))
}

/// Dataplanes indexed by inbound tag and by name, so endpoint sets cost
/// the size of the answer, not of the whole config.
pub struct Index<'a> {
    config: &'a Config,
    /// mesh -> tag key -> tag value -> Dataplanes with an inbound carrying it.
    by_tag: HashMap<&'a str, HashMap<&'a str, HashMap<&'a str, Vec<usize>>>>,
    by_mesh: HashMap<&'a str, Vec<usize>>,
    /// mesh -> name -> Dataplanes.
    by_name: HashMap<&'a str, HashMap<&'a str, Vec<usize>>>,
}

impl<'a> Index<'a> {
    /// Indexes every Dataplane of `config`.
    pub fn new(config: &'a Config) -> Self {
        let mut index = Self { config, by_tag: HashMap::new(), by_mesh: HashMap::new(), by_name: HashMap::new() };
        for (i, dp) in config.dataplanes.iter().enumerate() {
            let mesh = dp.origin.mesh.as_str();
            index.by_mesh.entry(mesh).or_default().push(i);
            index.by_name.entry(mesh).or_default().entry(dp.origin.name.as_str()).or_default().push(i);
            let mut keys: Vec<(&str, &str)> = dp
                .spec
                .networking
                .inbound
                .as_deref()
                .unwrap_or_default()
                .iter()
                .flat_map(|ib| ib.tags.iter().flatten())
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            keys.sort_unstable();
            keys.dedup();
            let tags = index.by_tag.entry(mesh).or_default();
            for (k, v) in keys {
                tags.entry(k).or_default().entry(v).or_default().push(i);
            }
        }
        index
    }

    /// Dataplanes that may match `selector` in `mesh` (a superset; callers check).
    fn tagged(&self, mesh: &str, key: &str, value: &str) -> &[usize] {
        self.by_tag.get(mesh).and_then(|t| t.get(key)).and_then(|v| v.get(value)).map_or(&[][..], Vec::as_slice)
    }

    fn candidates(&self, mesh: &str, selector: &BTreeMap<String, String>) -> &[usize] {
        selector
            .iter()
            .map(|(k, v)| self.tagged(mesh, k, v))
            .min_by_key(|c| c.len())
            .unwrap_or_else(|| self.by_mesh.get(mesh).map_or(&[][..], Vec::as_slice))
    }

    fn dataplane(&self, i: usize) -> &'a Dataplane {
        &self.config.dataplanes[i]
    }

    /// Endpoints of one MeshService port: Dataplanes selected by
    /// `dataplaneTags` (any inbound carrying them) or `dataplaneRef`, then each
    /// of their healthy inbounds that the port's `targetPort` names (a number
    /// matches the inbound port, a name the inbound name; no targetPort matches
    /// nothing, as in Kuma).
    pub fn mesh_service(&self, service: &MeshService, port: &ServicePort) -> Vec<SocketAddr> {
        let mesh = service.origin.mesh.as_str();
        let selector = service.spec.selector.as_ref();
        // As Kuma: a dataplaneRef wins over dataplaneTags, and tags select a
        // Dataplane through its healthy inbounds only.
        let mut dps: Vec<usize> = Vec::new();
        if let Some(name) = selector.and_then(|s| s.dataplane_ref.as_ref()).and_then(|r| r.name.as_ref()) {
            dps.extend(self.by_name.get(mesh).and_then(|n| n.get(name.as_str())).into_iter().flatten().copied());
        } else if let Some(tags) = selector.and_then(|s| s.dataplane_tags.as_ref()).filter(|t| !t.is_empty()) {
            // Exact values: Kuma looks MeshService selectors up by value, so `*` is literal.
            dps.extend(self.candidates(mesh, tags).iter().copied().filter(|&i| {
                inbounds(self.dataplane(i)).any(|ib| ib.is_healthy() && carries(ib, tags))
            }));
        }
        sorted(dps.into_iter().flat_map(|i| {
            let dp = self.dataplane(i);
            inbounds(dp)
                .filter(|ib| {
                    ib.is_healthy()
                        && match &port.target_port {
                            Some(PortRef::Number(n)) => ib.port == *n,
                            Some(PortRef::Name(name)) => ib.name.as_deref() == Some(name.as_str()),
                            None => false,
                        }
                })
                .filter_map(move |ib| inbound_endpoint(dp, ib))
        }))
    }

    /// Healthy inbounds in `mesh` carrying every tag of `tags` (exact values).
    fn inbounds_with(&self, mesh: &str, tags: &BTreeMap<String, String>) -> impl Iterator<Item = (&'a Dataplane, &'a Inbound)> {
        let tags = tags.clone();
        self.candidates(mesh, &tags).to_vec().into_iter().flat_map(move |i| {
            let dp = self.dataplane(i);
            let tags = tags.clone();
            inbounds(dp).filter(move |ib| ib.is_healthy() && carries(ib, &tags)).map(move |ib| (dp, ib))
        })
    }

    /// Endpoints of a legacy `kuma.io/service` (with optional subset tags,
    /// which must all be present and equal): every healthy inbound carrying them.
    pub fn legacy_service(&self, mesh: &str, tags: &BTreeMap<String, String>) -> Vec<SocketAddr> {
        sorted(self.inbounds_with(mesh, tags).filter_map(|(dp, ib)| inbound_endpoint(dp, ib)))
    }

    /// Whether any inbound carries `kuma.io/service: name`.
    pub fn legacy_service_exists(&self, mesh: &str, name: &str) -> bool {
        !self.tagged(mesh, "kuma.io/service", name).is_empty()
    }

    /// The protocol Kuma infers for a legacy service: the endpoints' common
    /// `kuma.io/protocol`, `tcp` when they differ, none when there is no tag.
    pub fn legacy_protocol(&self, mesh: &str, name: &str) -> Option<String> {
        let selector = BTreeMap::from([("kuma.io/service".to_string(), name.to_string())]);
        let mut protocols = self.inbounds_with(mesh, &selector).map(|(_, ib)| ib.tags.as_ref().and_then(|t| t.get("kuma.io/protocol")).cloned());
        let first = protocols.next()??;
        if protocols.all(|p| p.as_deref() == Some(first.as_str())) { Some(first) } else { Some("tcp".into()) }
    }
}

/// The inbounds of a Dataplane.
fn inbounds(dp: &Dataplane) -> std::slice::Iter<'_, Inbound> {
    dp.spec.networking.inbound.as_deref().unwrap_or_default().iter()
}

/// Whether an inbound carries every tag of `tags` with exactly that value.
fn carries(ib: &Inbound, tags: &BTreeMap<String, String>) -> bool {
    ib.tags.as_ref().is_some_and(|t| tags.iter().all(|(k, v)| t.get(k) == Some(v)))
}

pub(super) fn sorted(it: impl Iterator<Item = SocketAddr>) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = it.collect();
    out.sort();
    out.dedup();
    out
}
