//! Kuma resources: reading YAML files into typed resources, and validating them.
//!
//! Input is a file or a directory (its `.yaml`/`.yml` files, recursively, in
//! name order), each holding one or more YAML documents in Kuma's universal form
//! (`type`, `name`, `mesh`, `labels`) or Kubernetes form (`apiVersion`, `kind`,
//! `metadata`). Reading never stops at the first problem: every problem of every
//! file is collected, so one `check` shows them all.

mod fast;
mod key;
pub(crate) mod load;
mod node;
mod problem;
mod types;
pub(crate) mod validate;
mod yaml;

pub use key::{Key, KeyData, Kind};
pub use load::{load_json, load_path, load_str};
pub use problem::{Problem, Problems, Severity};
pub use types::*;

use std::{path::Path, sync::Arc};

/// Text of a resource field: names, kinds, meshes, tags, addresses. Up to 24
/// bytes are held inline, which covers nearly all of them, so most need no
/// allocation of their own (at 100,000 services, a string allocation per
/// field was a fifth of the agent's heap).
pub type Text = compact_str::CompactString;

/// Where a resource came from and what it is called. It derefs to its
/// key's parts (`kind`, `mesh`, `namespace`, `name`), which it shares with
/// the store and the indexes rather than holding a copy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    /// Source file (shared by the resources of one file).
    pub file: Arc<Path>,
    /// Kind, mesh (`default` when not given), Kubernetes namespace and name.
    pub key: Key,
    /// Resource labels.
    pub labels: Tags,
    /// Read in Kubernetes form (fields under `spec`), not universal form.
    pub kubernetes: bool,
}

impl std::ops::Deref for Origin {
    type Target = KeyData;
    fn deref(&self) -> &KeyData {
        &self.key
    }
}

impl Origin {
    /// The origin of a resource of `kind` called `name` in `mesh` (and
    /// `namespace`), read from `file`.
    pub fn new(file: Arc<Path>, kind: &str, name: Text, namespace: Option<Text>, mesh: Text, labels: Tags, kubernetes: bool) -> Self {
        Self { file, key: Key::new(kind, mesh, namespace, name), labels, kubernetes }
    }

    /// `Kind/name`, as used in problem reports.
    pub fn display_name(&self) -> Text {
        compact_str::format_compact!("{}/{}", self.kind, self.name)
    }

    /// The field-path prefix of a Dataplane's body: `spec.` in Kubernetes
    /// form, nothing in universal form (where `networking` is top level).
    pub fn body_prefix(&self) -> &'static str {
        if self.kubernetes { "spec." } else { "" }
    }
}

/// A MeshService: addresses clients dial and the dataplanes behind them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeshService {
    /// Identity and source.
    pub origin: Origin,
    /// Selector and ports.
    pub spec: MeshServiceSpec,
    /// Virtual addresses.
    pub status: MeshServiceStatus,
}

/// A Dataplane: one workload's addresses and inbound ports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dataplane {
    /// Identity and source.
    pub origin: Origin,
    /// Networking.
    pub spec: DataplaneSpec,
}

/// A MeshTCPRoute policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeshTcpRoute {
    /// Identity and source.
    pub origin: Origin,
    /// The policy.
    pub spec: MeshTcpRouteSpec,
}

/// A MeshExternalService: a VIP for a destination outside the mesh.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeshExternalService {
    /// Identity and source.
    pub origin: Origin,
    /// Match and endpoints.
    pub spec: MeshExternalServiceSpec,
    /// VIP.
    pub status: ExternalStatus,
}

/// A MeshMultiZoneService: one VIP over several MeshServices.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeshMultiZoneService {
    /// Identity and source.
    pub origin: Origin,
    /// Selector and ports.
    pub spec: MeshMultiZoneServiceSpec,
    /// VIPs.
    pub status: MeshServiceStatus,
}

/// A MeshHTTPRoute, read for its targets only: where it applies, a
/// MeshTCPRoute does not (for HTTP destinations).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeshHttpRoute {
    /// Identity and source.
    pub origin: Origin,
    /// Targets.
    pub spec: TargetsOnlySpec,
}

/// Everything read from the input, typed but not yet validated. Resources
/// are shared (`Arc`): a source that keeps what it read builds each new
/// configuration from the resources it already has, without copying them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// MeshServices.
    pub services: Vec<Arc<MeshService>>,
    /// Dataplanes.
    pub dataplanes: Vec<Arc<Dataplane>>,
    /// MeshTCPRoutes.
    pub routes: Vec<Arc<MeshTcpRoute>>,
    /// MeshExternalServices.
    pub external_services: Vec<Arc<MeshExternalService>>,
    /// MeshMultiZoneServices.
    pub multizone_services: Vec<Arc<MeshMultiZoneService>>,
    /// MeshHTTPRoutes (targets only).
    pub http_routes: Vec<Arc<MeshHttpRoute>>,
    /// Kuma resources this version reads but does not act on (Mesh, other policies).
    pub ignored: Vec<Origin>,
}

impl Config {
    /// Moves every resource of `other` to the end of this one's lists.
    pub(crate) fn append(&mut self, other: Config) {
        self.services.extend(other.services);
        self.dataplanes.extend(other.dataplanes);
        self.routes.extend(other.routes);
        self.external_services.extend(other.external_services);
        self.multizone_services.extend(other.multizone_services);
        self.http_routes.extend(other.http_routes);
        self.ignored.extend(other.ignored);
    }

    /// Validates the configuration; returns every problem found (errors and warnings).
    pub fn validate(&self) -> Vec<Problem> {
        validate::validate(self)
    }
}

/// Reads and validates `path`: the configuration when it has no errors (the
/// warnings come along), or every problem.
pub fn read(path: &std::path::Path) -> Result<(Config, Vec<Problem>), Problems> {
    let (config, mut problems) = load_path(path);
    problems.extend(config.validate());
    let problems = Problems(problems);
    if problems.has_errors() {
        Err(problems)
    } else {
        Ok((config, problems.0))
    }
}
