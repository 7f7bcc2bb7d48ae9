//! A resource's identity: (kind, mesh, namespace, name), shared by the
//! resource's [`Origin`], the store and every index that names it.

use super::{Origin, Text};
use std::{fmt, sync::Arc};

/// What kind of resource a key names, in the order duplicates are reported.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// MeshTCPRoute.
    MeshTcpRoute,
    /// MeshService.
    MeshService,
    /// Dataplane.
    Dataplane,
    /// MeshExternalService.
    MeshExternalService,
    /// MeshMultiZoneService.
    MeshMultiZoneService,
    /// MeshHTTPRoute.
    MeshHttpRoute,
    /// A Kuma kind read but not acted on (Mesh, other policies), by name.
    Other(Text),
}

/// The identity of a resource.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyData {
    /// Its kind.
    pub kind: Kind,
    /// Its mesh.
    pub mesh: Text,
    /// Its namespace (Kubernetes form), if any.
    pub namespace: Option<Text>,
    /// Its name.
    pub name: Text,
}

/// A resource's identity, shared: indexes hold many copies of it.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key(Arc<KeyData>);

impl Kind {
    /// The kind as Kuma spells it (`MeshTCPRoute`, ...).
    pub fn as_str(&self) -> &str {
        match self {
            Kind::MeshTcpRoute => "MeshTCPRoute",
            Kind::MeshService => "MeshService",
            Kind::Dataplane => "Dataplane",
            Kind::MeshExternalService => "MeshExternalService",
            Kind::MeshMultiZoneService => "MeshMultiZoneService",
            Kind::MeshHttpRoute => "MeshHTTPRoute",
            Kind::Other(kind) => kind,
        }
    }

    /// The kind Kuma spells `kind`.
    pub fn of(kind: &str) -> Self {
        match kind {
            "MeshTCPRoute" => Kind::MeshTcpRoute,
            "MeshService" => Kind::MeshService,
            "Dataplane" => Kind::Dataplane,
            "MeshExternalService" => Kind::MeshExternalService,
            "MeshMultiZoneService" => Kind::MeshMultiZoneService,
            "MeshHTTPRoute" => Kind::MeshHttpRoute,
            other => Kind::Other(other.into()),
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<str> for Kind {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Kind {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl Key {
    /// The key of a resource of `kind` called `name` in `mesh` (and `namespace`).
    pub fn new(kind: &str, mesh: Text, namespace: Option<Text>, name: Text) -> Self {
        Self(Arc::new(KeyData { kind: Kind::of(kind), mesh, namespace, name }))
    }

    /// The key of the resource `origin` describes.
    pub fn of(origin: &Origin) -> Self {
        origin.key.clone()
    }
}

impl std::ops::Deref for Key {
    type Target = KeyData;
    fn deref(&self) -> &KeyData {
        &self.0
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{:?}/{}/{ns}/{}", self.kind, self.mesh, self.name),
            None => write!(f, "{:?}/{}/{}", self.kind, self.mesh, self.name),
        }
    }
}

