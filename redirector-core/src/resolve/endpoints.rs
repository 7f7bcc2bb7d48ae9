//! Endpoint sets: where a backend's connections go.
//!
//! With no sidecar, a connection goes straight to the application: an
//! inbound's `servicePort` when set, else its `port`, at the inbound's address
//! (else the Dataplane's). Only healthy inbounds count, as in Kuma.

use crate::model::{Tags, Text};
use super::world::{Token, World, ix};
use crate::{
    model::{Dataplane, Inbound, MeshService, PortRef, ServicePort},
    store::Resource,
};
use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
};

/// Looks hostnames up (MeshExternalService endpoints). Never called from the kernel side.
pub trait HostResolver: Sync {
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

/// Endpoint lookups over the store's indexes, recording the tokens of what
/// they read (see [`super::world`]).
pub(crate) struct Lookup<'a, 'd> {
    pub world: &'a World,
    pub deps: &'d mut Vec<u64>,
}

impl<'a> Lookup<'a, '_> {
    /// Dataplanes of `mesh` that may carry every tag of `selector` (a
    /// superset; callers check). The smallest tag list is enough: a
    /// Dataplane that carries every tag is in each of them, so a change to
    /// it fires that list's token.
    fn candidates(&mut self, mesh: &str, selector: &Tags) -> Vec<&'a Dataplane> {
        let w = self.world;
        let smallest = selector
            .iter()
            .map(|(k, v)| ((k, v), w.dp_by_tag.get(&ix(&[mesh, k, v]))))
            .min_by_key(|(_, set)| set.map_or(0, |s| s.len()));
        match smallest {
            Some(((k, v), set)) => {
                self.deps.push(Token::DpTag(mesh, k, v).id());
                set.into_iter().flatten().filter_map(|key| w.dataplane(key)).filter(|dp| dp.origin.mesh == mesh).collect()
            }
            None => {
                self.deps.push(Token::DpMesh(mesh).id());
                w.store
                    .iter()
                    .filter_map(|(_, r)| match r {
                        Resource::Dataplane(d) if d.origin.mesh == mesh => Some(&**d),
                        _ => None,
                    })
                    .collect()
            }
        }
    }

    /// Endpoints of one MeshService port: Dataplanes selected by
    /// `dataplaneTags` (any inbound carrying them) or `dataplaneRef`, then each
    /// of their healthy inbounds that the port's `targetPort` names (a number
    /// matches the inbound port, a name the inbound name; no targetPort matches
    /// nothing, as in Kuma).
    pub fn mesh_service(&mut self, service: &MeshService, port: &ServicePort) -> Vec<SocketAddr> {
        let mesh = service.origin.mesh.as_str();
        let selector = service.spec.selector.as_ref();
        // As Kuma: a dataplaneRef wins over dataplaneTags, and tags select a
        // Dataplane through its healthy inbounds only.
        let mut dps: Vec<&Dataplane> = Vec::new();
        if let Some(name) = selector.and_then(|s| s.dataplane_ref.as_ref()).and_then(|r| r.name.as_ref()) {
            self.deps.push(Token::DpName(mesh, name).id());
            let w = self.world;
            dps.extend(World::keys(&w.dp_by_name, ix(&[mesh, name])).filter_map(|k| w.dataplane(k)).filter(|dp| dp.origin.mesh == mesh && dp.origin.name == *name));
        } else if let Some(tags) = selector.and_then(|s| s.dataplane_tags.as_ref()).filter(|t| !t.is_empty()) {
            // Exact values: Kuma looks MeshService selectors up by value, so `*` is literal.
            dps.extend(self.candidates(mesh, tags).into_iter().filter(|dp| inbounds(dp).any(|ib| ib.is_healthy() && carries(ib, tags))));
        }
        sorted(dps.into_iter().flat_map(|dp| {
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
    fn inbounds_with(&mut self, mesh: &str, tags: &Tags) -> Vec<(&'a Dataplane, &'a Inbound)> {
        self.candidates(mesh, tags)
            .into_iter()
            .flat_map(|dp| inbounds(dp).filter(|ib| ib.is_healthy() && carries(ib, tags)).map(move |ib| (dp, ib)))
            .collect()
    }

    /// Endpoints of a legacy `kuma.io/service` (with optional subset tags,
    /// which must all be present and equal): every healthy inbound carrying them.
    pub fn legacy_service(&mut self, mesh: &str, tags: &Tags) -> Vec<SocketAddr> {
        sorted(self.inbounds_with(mesh, tags).into_iter().filter_map(|(dp, ib)| inbound_endpoint(dp, ib)))
    }

    /// Whether any inbound carries `kuma.io/service: name`.
    pub fn legacy_service_exists(&mut self, mesh: &str, name: &str) -> bool {
        self.deps.push(Token::DpTag(mesh, "kuma.io/service", name).id());
        let w = self.world;
        World::keys(&w.dp_by_tag, ix(&[mesh, "kuma.io/service", name]))
            .filter_map(|k| w.dataplane(k))
            .any(|dp| dp.origin.mesh == mesh && inbounds(dp).any(|ib| ib.tags.as_ref().and_then(|t| t.get("kuma.io/service")).is_some_and(|s| s == name)))
    }

    /// The protocol Kuma infers for a legacy service: the endpoints' common
    /// `kuma.io/protocol`, `tcp` when they differ, none when there is no tag.
    pub fn legacy_protocol(&mut self, mesh: &str, name: &str) -> Option<Text> {
        let selector = Tags::from([("kuma.io/service", name)]);
        let found = self.inbounds_with(mesh, &selector);
        let mut protocols = found.iter().map(|(_, ib)| ib.tags.as_ref().and_then(|t| t.get("kuma.io/protocol")).cloned());
        let first = protocols.next()??;
        if protocols.all(|p| p.as_deref() == Some(first.as_str())) { Some(first) } else { Some("tcp".into()) }
    }
}

/// The inbounds of a Dataplane.
fn inbounds(dp: &Dataplane) -> std::slice::Iter<'_, Inbound> {
    dp.spec.networking.inbound.as_deref().unwrap_or_default().iter()
}

/// Whether an inbound carries every tag of `tags` with exactly that value.
fn carries(ib: &Inbound, tags: &Tags) -> bool {
    ib.tags.as_ref().is_some_and(|t| tags.iter().all(|(k, v)| t.get(k) == Some(v)))
}

pub(super) fn sorted(it: impl Iterator<Item = SocketAddr>) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = it.collect();
    out.sort();
    out.dedup();
    out
}
