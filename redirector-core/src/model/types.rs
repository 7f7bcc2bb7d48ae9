//! Kuma resource types as they appear in YAML (universal and Kubernetes forms).
//!
//! Field names follow Kuma's API (`camelCase`). Unknown fields are rejected,
//! except the documentation generator's hints (`_port`, `_version`) that the
//! MeshTCPRoute reference pages carry in their examples. Free-form fields that
//! are accepted but not acted on are boxed: most resources lack them, and a
//! YAML value inline is 80 bytes.

use super::Text;
use serde::Deserialize;
use std::{collections::BTreeMap, fmt, net::IpAddr};

/// Labels, tags or a tag selector: a small map kept as a sorted list. Most
/// have one to three entries, where a `BTreeMap` would allocate a node for
/// eleven (over 500 bytes).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tags(Vec<(Text, Text)>);

impl Tags {
    /// No entries.
    pub fn new() -> Self {
        Self::default()
    }

    fn find(&self, key: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| k.as_str().cmp(key))
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&Text> {
        self.find(key).ok().map(|i| &self.0[i].1)
    }

    /// Whether `key` is present.
    pub fn contains_key(&self, key: &str) -> bool {
        self.find(key).is_ok()
    }

    /// Sets `key` to `value`; returns the value it had.
    pub fn insert(&mut self, key: Text, value: Text) -> Option<Text> {
        match self.find(&key) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i].1, value)),
            Err(i) => {
                self.0.insert(i, (key, value));
                None
            }
        }
    }

    /// The entries, by key.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&Text, &Text)> + Clone {
        self.0.iter().map(|(k, v)| (k, v))
    }

    /// The keys, in order.
    pub fn keys(&self) -> impl ExactSizeIterator<Item = &Text> {
        self.0.iter().map(|(k, _)| k)
    }

    /// How many entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<K: Into<Text>, V: Into<Text>> FromIterator<(K, V)> for Tags {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let map: BTreeMap<Text, Text> = iter.into_iter().map(|(k, v)| (k.into(), v.into())).collect();
        Self(map.into_iter().collect())
    }
}

impl<K: Into<Text>, V: Into<Text>, const N: usize> From<[(K, V); N]> for Tags {
    fn from(entries: [(K, V); N]) -> Self {
        entries.into_iter().collect()
    }
}

impl From<BTreeMap<Text, Text>> for Tags {
    fn from(map: BTreeMap<Text, Text>) -> Self {
        Self(map.into_iter().collect())
    }
}

impl<'a> IntoIterator for &'a Tags {
    type Item = (&'a Text, &'a Text);
    type IntoIter = std::iter::Map<std::slice::Iter<'a, (Text, Text)>, fn(&'a (Text, Text)) -> (&'a Text, &'a Text)>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(k, v)| (k, v))
    }
}

impl<'de> Deserialize<'de> for Tags {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        BTreeMap::<Text, Text>::deserialize(d).map(Self::from)
    }
}

/// Every `kind` a Kuma `targetRef` or `backendRef` may name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
pub enum RefKind {
    /// The whole mesh.
    Mesh,
    /// Proxies selected by tags (deprecated in current Kuma).
    MeshSubset,
    /// A service, by name (and namespace / section).
    MeshService,
    /// A service's endpoints filtered by tags.
    MeshServiceSubset,
    /// A service outside the mesh.
    MeshExternalService,
    /// A service spanning zones.
    MeshMultiZoneService,
    /// A gateway (optionally a listener by tags).
    MeshGateway,
    /// An HTTP route.
    MeshHTTPRoute,
    /// Dataplanes, by labels or name.
    Dataplane,
}

impl fmt::Display for RefKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// What a reference names besides its kind and name, which most references
/// leave out: kept out of line ([`TargetRef`] and [`BackendRef`] deref to
/// it), so a plain reference is a few words, not a few hundred bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RefExtra {
    /// Resource namespace (Kubernetes form).
    pub namespace: Option<Text>,
    /// Label selector (Dataplane, MeshService by labels).
    pub labels: Option<Tags>,
    /// Tag selector (MeshSubset, MeshServiceSubset, MeshGateway listeners).
    pub tags: Option<Tags>,
    /// Port name or number of the referenced service.
    pub section_name: Option<Text>,
    /// Mesh of the reference (cross-mesh references; reserved on backendRefs).
    pub mesh: Option<Text>,
    /// Proxy types (`Sidecar`, `Gateway`; not allowed on backendRefs).
    pub proxy_types: Option<Vec<Text>>,
    /// Documentation-generator hint (`_port`): the port.
    pub doc_port: Option<u32>,
    /// Documentation-generator hint (`_version`): a version label.
    pub doc_version: Option<Text>,
}

/// What a reference without extras derefs to.
static NO_EXTRA: RefExtra = RefExtra {
    namespace: None,
    labels: None,
    tags: None,
    section_name: None,
    mesh: None,
    proxy_types: None,
    doc_port: None,
    doc_version: None,
};

impl RefExtra {
    /// `None` when nothing is set, so equal references compare equal.
    fn boxed(self) -> Option<Box<Self>> {
        (self != NO_EXTRA).then(|| Box::new(self))
    }
}

/// A top-level or `to[]` target reference.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(from = "TargetRefFields")]
pub struct TargetRef {
    /// What is targeted.
    pub kind: Option<RefKind>,
    /// Resource name.
    pub name: Option<Text>,
    /// The rest, when any of it is given.
    pub extra: Option<Box<RefExtra>>,
}

impl std::ops::Deref for TargetRef {
    type Target = RefExtra;
    fn deref(&self) -> &RefExtra {
        self.extra.as_deref().unwrap_or(&NO_EXTRA)
    }
}

/// [`TargetRef`] as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct TargetRefFields {
    kind: Option<RefKind>,
    name: Option<Text>,
    namespace: Option<Text>,
    labels: Option<Tags>,
    tags: Option<Tags>,
    section_name: Option<Text>,
    mesh: Option<Text>,
    proxy_types: Option<Vec<Text>>,
    #[serde(rename = "_port")]
    doc_port: Option<u16>,
}

impl From<TargetRefFields> for TargetRef {
    fn from(f: TargetRefFields) -> Self {
        let extra = RefExtra {
            namespace: f.namespace,
            labels: f.labels,
            tags: f.tags,
            section_name: f.section_name,
            mesh: f.mesh,
            proxy_types: f.proxy_types,
            doc_port: f.doc_port.map(u32::from),
            doc_version: None,
        };
        Self { kind: f.kind, name: f.name, extra: extra.boxed() }
    }
}

/// One entry of `rules[].default.backendRefs`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(from = "BackendRefFields")]
pub struct BackendRef {
    /// Backend kind.
    pub kind: Option<RefKind>,
    /// Backend name.
    pub name: Option<Text>,
    /// Service port of the backend.
    pub port: Option<u32>,
    /// Relative weight; Kuma's default is 1.
    pub weight: Option<u64>,
    /// The rest, when any of it is given.
    pub extra: Option<Box<RefExtra>>,
}

impl std::ops::Deref for BackendRef {
    type Target = RefExtra;
    fn deref(&self) -> &RefExtra {
        self.extra.as_deref().unwrap_or(&NO_EXTRA)
    }
}

/// [`BackendRef`] as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct BackendRefFields {
    kind: Option<RefKind>,
    name: Option<Text>,
    namespace: Option<Text>,
    labels: Option<Tags>,
    tags: Option<Tags>,
    section_name: Option<Text>,
    mesh: Option<Text>,
    proxy_types: Option<Vec<Text>>,
    port: Option<u32>,
    weight: Option<u64>,
    #[serde(rename = "_port")]
    doc_port: Option<u32>,
    #[serde(rename = "_version")]
    doc_version: Option<Text>,
}

impl From<BackendRefFields> for BackendRef {
    fn from(f: BackendRefFields) -> Self {
        let extra = RefExtra {
            namespace: f.namespace,
            labels: f.labels,
            tags: f.tags,
            section_name: f.section_name,
            mesh: f.mesh,
            proxy_types: f.proxy_types,
            doc_port: f.doc_port,
            doc_version: f.doc_version,
        };
        Self { kind: f.kind, name: f.name, port: f.port, weight: f.weight, extra: extra.boxed() }
    }
}

impl BackendRef {
    /// A backendRef of `kind` and `name` with `extra`.
    pub fn new(kind: Option<RefKind>, name: Option<Text>, port: Option<u32>, weight: Option<u64>, extra: RefExtra) -> Self {
        Self { kind, name, port, weight, extra: extra.boxed() }
    }
}

/// `rules[].default`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RuleConf {
    /// Where matching traffic goes.
    pub backend_refs: Option<Vec<BackendRef>>,
}

/// One element of `to[].rules`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// The configuration of the rule.
    pub default: RuleConf,
}

/// One element of `spec.to`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct To {
    /// The destination.
    pub target_ref: TargetRef,
    /// At most one rule; absent means "to the destination itself".
    pub rules: Option<Vec<Rule>>,
}

/// `MeshTCPRoute.spec`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MeshTcpRouteSpec {
    /// Which proxies (here: workloads) the policy applies to.
    pub target_ref: Option<TargetRef>,
    /// Per-destination rules.
    pub to: Option<Vec<To>>,
}

/// `MeshService.spec.selector`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Selector {
    /// Tags a Dataplane inbound must carry to be an endpoint.
    pub dataplane_tags: Option<Tags>,
    /// Selects one Dataplane by name.
    pub dataplane_ref: Option<DataplaneRef>,
}

/// `MeshService.spec.selector.dataplaneRef`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataplaneRef {
    /// Dataplane name.
    pub name: Option<Text>,
}

/// A MeshService `targetPort`: a number or an inbound's name.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum PortRef {
    /// Inbound port number.
    Number(u16),
    /// Inbound name.
    Name(Text),
}

/// One element of `MeshService.spec.ports`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServicePort {
    /// Service port (what clients dial on the VIP).
    pub port: u16,
    /// Dataplane inbound the port maps to; defaults to `port`.
    pub target_port: Option<PortRef>,
    /// Protocol (`tcp`, `http`, ...).
    pub app_protocol: Option<Text>,
    /// Port name (a `sectionName` may refer to it).
    pub name: Option<Text>,
}

/// `MeshService.spec`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MeshServiceSpec {
    /// Which dataplanes are the service's endpoints.
    pub selector: Option<Selector>,
    /// Service ports.
    pub ports: Option<Vec<ServicePort>>,
    /// Identities (accepted, unused here).
    pub identities: Option<Box<serde_yaml::Value>>,
    /// Session state (accepted, unused here).
    pub state: Option<Text>,
}

/// One element of `MeshService.status.vips`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vip {
    /// Virtual address clients dial.
    pub ip: IpAddr,
}

/// `MeshService.status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MeshServiceStatus {
    /// Service addresses.
    pub vips: Option<Vec<Vip>>,
}

/// Inbound health as reported by Kuma (`health.ready`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Health {
    /// `false` takes the inbound out of every endpoint set.
    pub ready: Option<bool>,
}

/// One element of `Dataplane.networking.inbound`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Inbound {
    /// Port the inbound listens on.
    pub port: u16,
    /// Port the application listens on (defaults to `port`). With no sidecar,
    /// connections go here directly.
    pub service_port: Option<u16>,
    /// Address of the inbound (defaults to `networking.address`).
    pub address: Option<IpAddr>,
    /// Address of the application (accepted; the inbound address is used).
    pub service_address: Option<IpAddr>,
    /// Inbound name (a MeshService `targetPort` may refer to it).
    pub name: Option<Text>,
    /// Tags of the inbound.
    pub tags: Option<Tags>,
    /// Health; an inbound with `ready: false` is not an endpoint.
    pub health: Option<Health>,
    /// Inbound state (`Ready`, `NotReady`, `Ignored`); only `Ready` (or unset) serves.
    pub state: Option<Text>,
}

impl Inbound {
    /// Whether Kuma would send traffic to this inbound.
    pub fn is_healthy(&self) -> bool {
        self.health.as_ref().and_then(|h| h.ready) != Some(false)
            && self.state.as_deref().is_none_or(|s| s == "Ready")
    }
}

/// A reference from a Dataplane outbound to a MeshService port.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OutboundBackendRef {
    /// Always `MeshService`.
    pub kind: Option<RefKind>,
    /// MeshService name.
    pub name: Option<Text>,
    /// MeshService labels (instead of a name).
    pub labels: Option<Tags>,
    /// MeshService port.
    pub port: Option<u32>,
}

/// One element of `Dataplane.networking.outbound`: an address:port the
/// workload dials for a service (Kuma without transparent proxying).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Outbound {
    /// Address the workload dials (default 127.0.0.1).
    pub address: Option<IpAddr>,
    /// Port the workload dials.
    pub port: u16,
    /// Legacy form: `kuma.io/service` (and optional subset tags).
    pub tags: Option<Tags>,
    /// Current form: a MeshService port.
    pub backend_ref: Option<OutboundBackendRef>,
}

/// `Dataplane.networking`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Networking {
    /// Address of the dataplane.
    pub address: Option<IpAddr>,
    /// Advertised address (accepted, unused).
    pub advertised_address: Option<IpAddr>,
    /// Inbounds.
    pub inbound: Option<Vec<Inbound>>,
    /// Outbounds: service addresses this workload dials (legacy `kuma.io/service` form too).
    pub outbound: Option<Vec<Outbound>>,
    /// Transparent proxying settings (accepted, unused).
    pub transparent_proxying: Option<Box<serde_yaml::Value>>,
    /// Gateway settings (accepted, unused).
    pub gateway: Option<Box<serde_yaml::Value>>,
    /// Admin port (accepted, unused).
    pub admin: Option<Box<serde_yaml::Value>>,
}

/// `Dataplane` body (top level in universal form, `spec` in Kubernetes form).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DataplaneSpec {
    /// Network settings.
    pub networking: Networking,
    /// Metrics settings (accepted, unused).
    pub metrics: Option<Box<serde_yaml::Value>>,
    /// Probes (accepted, unused).
    pub probes: Option<Box<serde_yaml::Value>>,
}

/// `MeshExternalService.spec.match`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ExternalMatch {
    /// `HostnameGenerator` (the only type).
    #[serde(rename = "type")]
    pub kind: Option<Text>,
    /// Port clients dial on the VIP.
    pub port: u16,
    /// Protocol (`tcp`, `http`, ...).
    pub protocol: Option<Text>,
}

/// One element of `MeshExternalService.spec.endpoints`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalEndpoint {
    /// IP address or hostname (resolved by the agent, never in the kernel).
    pub address: Text,
    /// Port.
    pub port: u16,
}

/// `MeshExternalService.spec`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MeshExternalServiceSpec {
    /// What clients dial.
    #[serde(rename = "match")]
    pub matcher: Option<ExternalMatch>,
    /// Where connections go.
    pub endpoints: Option<Vec<ExternalEndpoint>>,
    /// TLS settings (accepted; TLS origination needs a proxy and is not done here).
    pub tls: Option<Box<serde_yaml::Value>>,
    /// Extension (accepted, unused).
    pub extension: Option<Box<serde_yaml::Value>>,
}

/// `status.vip` of a MeshExternalService.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExternalStatus {
    /// The address clients dial.
    pub vip: Option<Vip>,
}

/// `MeshMultiZoneService.spec.selector.meshService`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MeshServiceSelector {
    /// Labels a MeshService must carry.
    pub match_labels: Option<Tags>,
}

/// `MeshMultiZoneService.spec.selector`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MultiZoneSelector {
    /// Which MeshServices are aggregated.
    pub mesh_service: Option<MeshServiceSelector>,
}

/// `MeshMultiZoneService.spec`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MeshMultiZoneServiceSpec {
    /// Aggregated MeshServices.
    pub selector: Option<MultiZoneSelector>,
    /// Ports.
    pub ports: Option<Vec<ServicePort>>,
}

/// A policy read only for its targets (MeshHTTPRoute, for precedence).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetsOnlySpec {
    /// Which proxies.
    pub target_ref: Option<TargetRef>,
    /// Destinations; everything but the targetRef is ignored.
    pub to: Option<Vec<TargetsOnlyTo>>,
}

/// One `to` entry of a [`TargetsOnlySpec`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetsOnlyTo {
    /// The destination.
    pub target_ref: TargetRef,
}
