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
    /// Boxed: rare, and it keeps every key's kind one word.
    Other(Box<Text>),
}

/// The identity of a resource, ordered by kind, mesh, namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct KeyData {
    /// Its kind.
    pub kind: Kind,
    /// Its mesh.
    pub mesh: Text,
    /// Its namespace (Kubernetes form), if any.
    pub namespace: Option<Text>,
    /// Its name.
    pub name: Text,
    /// A hash of the parts above, computed once: keys are hashed on every
    /// store lookup and token id. Last, so it never decides an order.
    hash: u64,
}

impl std::hash::Hash for KeyData {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

/// A resource's identity, shared: indexes hold many copies of it.
#[derive(Clone, Eq)]
pub struct Key(Arc<KeyData>);

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0 == other.0
    }
}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Key {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        if Arc::ptr_eq(&self.0, &other.0) { std::cmp::Ordering::Equal } else { self.0.cmp(&other.0) }
    }
}

impl std::hash::Hash for Key {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.0.hash);
    }
}

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
            other => Kind::Other(Box::new(other.into())),
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
        use std::hash::{Hash as _, Hasher as _};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (kind, &mesh, &namespace, &name).hash(&mut h);
        Self(Arc::new(KeyData { kind: Kind::of(kind), mesh, namespace, name, hash: h.finish() }))
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


#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::{BuildHasher as _, RandomState};

    /// Every kind reads back as it was spelled, and keys of equal parts are
    /// equal, hash alike and sort by kind, mesh, namespace and name.
    #[test]
    fn keys_round_trip_and_order_by_their_parts() {
        for kind in ["MeshTCPRoute", "MeshService", "Dataplane", "MeshExternalService", "MeshMultiZoneService", "MeshHTTPRoute", "MeshTimeout"] {
            assert_eq!(Kind::of(kind).as_str(), kind);
        }
        let key = |kind: &str, mesh: &str, ns: Option<&str>, name: &str| Key::new(kind, mesh.into(), ns.map(Text::from), name.into());
        let state = RandomState::new();
        let (a, b) = (key("MeshService", "default", None, "a"), key("MeshService", "default", None, "a"));
        assert!(a == b && !Arc::ptr_eq(&a.0, &b.0));
        assert_eq!(state.hash_one(&a), state.hash_one(&b));
        assert_eq!(state.hash_one(&*a), state.hash_one(&*b));
        let mut keys = [
            key("MeshService", "default", None, "b"),
            key("MeshService", "default", Some("ns"), "a"),
            key("MeshTCPRoute", "zeta", None, "z"),
            key("MeshService", "alpha", None, "z"),
            key("MeshService", "default", None, "a"),
        ];
        keys.sort();
        let names: Vec<String> = keys.iter().map(|k| format!("{k:?}")).collect();
        assert_eq!(names, ["MeshTcpRoute/zeta/z", "MeshService/alpha/z", "MeshService/default/a", "MeshService/default/b", "MeshService/default/ns/a"]);
    }
}
