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
mod engine;
mod route;
pub mod select;
mod world;

pub use endpoints::{HostResolver, NoDns, StaticDns, SystemDns};
pub use engine::{Engine, UpdateStats};
pub use select::CGROUP_LABEL;

use crate::model::{Config, Problem, Text};
use std::{net::IpAddr, net::SocketAddr, path::PathBuf, sync::Arc};

/// The class of processes in no workload cgroup.
pub const BASE_CLASS: u32 = redirector_common::BASE_CLASS;

/// The route for one destination address and port, as seen by one class.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ResolvedRoute {
    /// Mesh of the destination.
    pub mesh: Text,
    /// `Kind/name` of the destination (`MeshService/backend`, `kuma.io/service backend` ...).
    pub service: Text,
    /// Address clients dial.
    pub vip: IpAddr,
    /// Port clients dial.
    pub port: u16,
    /// Protocol of the destination port, if known.
    pub app_protocol: Option<Text>,
    /// The winning MeshTCPRoute (`MeshTCPRoute/name`), or `None` for the default route.
    pub policy: Option<Text>,
    /// Backends in `backendRefs` order (dropped ones left out).
    pub backends: Vec<ResolvedBackend>,
    /// How the route was decided, lowest precedence first (empty from an
    /// engine built [`Engine::without_explanations`]).
    pub why: Vec<String>,
}

/// One backendRef with its endpoints.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ResolvedBackend {
    /// What it is, for display (`MeshService/backend-v1:80`).
    pub name: Text,
    /// Relative weight.
    pub weight: u32,
    /// Where connections go, sorted.
    pub endpoints: Arc<[SocketAddr]>,
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
    pub dataplane: Text,
    /// Its namespace (Kubernetes form: a pod's Dataplane is in the pod's).
    pub namespace: Option<Text>,
    /// Its mesh.
    pub mesh: Text,
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

/// Resolves every class from scratch. Returns the resolution and the
/// problems met (warnings, or errors for bindings that cannot work), sorted.
pub fn resolve_with(config: &Config, dns: &dyn HostResolver) -> (Resolution, Vec<Problem>) {
    let mut engine = Engine::from_config(config);
    engine.update(dns);
    (engine.resolution(), engine.problems())
}
