//! Which policies apply to which proxy, and in which order they override
//! each other (Kuma 2.13: `SortByTargetRef` and the outbound `to` sort).

use crate::model::{Tags, Text};
use crate::model::{Dataplane, Origin, RefKind, TargetRef};

/// Label binding a Dataplane to a cgroup (path relative to `--cgroup`).
pub const CGROUP_LABEL: &str = "redirector.io/cgroup";

/// Who is connecting: a workload (a Dataplane bound to a cgroup) or any other
/// process under the attach point, which gets only mesh-wide policies.
#[derive(Clone, Copy, Debug)]
pub enum Proxy<'a> {
    /// Processes in no workload cgroup.
    Unbound,
    /// A workload.
    Workload(&'a Dataplane),
}

impl Proxy<'_> {
    /// Whether the policy `origin` with top-level `target` applies to this proxy.
    pub fn selected_by(&self, origin: &Origin, target: Option<&TargetRef>) -> bool {
        let default = TargetRef { kind: Some(RefKind::Mesh), ..Default::default() };
        let target = target.unwrap_or(&default);
        if let Some(types) = &target.proxy_types
            && !types.iter().any(|t| t == "Sidecar")
        {
            return false;
        }
        if origin.labels.get("kuma.io/effect").is_some_and(|e| e == "shadow") {
            return false;
        }
        let role = origin.labels.get("kuma.io/policy-role").map(Text::as_str);
        let namespaced = matches!(role, Some("consumer" | "workload-owner"));
        let dp = match self {
            Proxy::Unbound => return target.kind == Some(RefKind::Mesh) && !namespaced,
            Proxy::Workload(dp) => dp,
        };
        if dp.origin.mesh != origin.mesh {
            return false;
        }
        // Kuma: consumer and workload-owner policies stay in their namespace;
        // zone-originated ones (except producer policies) in their zone.
        let namespace_of = |o: &Origin| o.labels.get("k8s.kuma.io/namespace").or(o.namespace.as_ref()).cloned();
        if namespaced && namespace_of(&dp.origin) != namespace_of(origin) {
            return false;
        }
        if role != Some("producer")
            && origin.labels.get("kuma.io/origin").is_some_and(|o| o == "zone")
            && let Some(zone) = origin.labels.get("kuma.io/zone")
            && dp.origin.labels.get("kuma.io/zone").is_some_and(|z| z != zone)
        {
            return false;
        }
        let inbounds = dp.spec.networking.inbound.as_deref().unwrap_or_default();
        // Kuma applies a policy through the inbounds it selects: none, no policy.
        if inbounds.is_empty() {
            return false;
        }
        let any_inbound = |pred: &dyn Fn(&Tags) -> bool| {
            inbounds.iter().any(|ib| ib.tags.as_ref().is_some_and(pred))
        };
        let empty = Tags::new();
        let tags = target.tags.as_ref().unwrap_or(&empty);
        match target.kind {
            Some(RefKind::Mesh) => true,
            Some(RefKind::MeshSubset) => any_inbound(&|t| tags_match(tags, t)),
            Some(RefKind::MeshService) => {
                any_inbound(&|t| t.get("kuma.io/service") == target.name.as_ref())
            }
            Some(RefKind::MeshServiceSubset) => any_inbound(&|t| {
                t.get("kuma.io/service") == target.name.as_ref() && tags_match(tags, t)
            }),
            Some(RefKind::Dataplane) => {
                if let Some(labels) = &target.labels {
                    return labels.iter().all(|(k, v)| dp.origin.labels.get(k) == Some(v));
                }
                let Some(name) = &target.name else { return true };
                let namespace = target.namespace.as_ref().or(origin.namespace.as_ref());
                *name == dp.origin.name && (namespace.is_none() || namespace == dp.origin.namespace.as_ref())
            }
            _ => false,
        }
    }
}

/// Kuma's tag selector: every selector key present with an equal value, `*` matching any value.
pub fn tags_match(selector: &Tags, tags: &Tags) -> bool {
    selector.iter().all(|(k, v)| tags.get(k).is_some_and(|t| v == "*" || t == v))
}

/// Precedence rank of a targetRef kind (Kuma 2.10+; higher is more specific).
pub fn kind_rank(kind: Option<RefKind>) -> u8 {
    match kind {
        None | Some(RefKind::Mesh) => 1,
        Some(RefKind::Dataplane) => 2,
        Some(RefKind::MeshSubset) => 3,
        Some(RefKind::MeshGateway) => 4,
        Some(RefKind::MeshService) => 5,
        Some(RefKind::MeshExternalService) => 6,
        Some(RefKind::MeshMultiZoneService) => 7,
        Some(RefKind::MeshServiceSubset) => 8,
        Some(RefKind::MeshHTTPRoute) => 9,
    }
}

/// The attributes Kuma compares before names: top-level kind, Dataplane
/// specificity, origin, role. Lower sorts first; the last policy wins.
pub type PolicyAttrs = (u8, u8, u8, u8);

/// [`PolicyAttrs`] of a policy.
pub fn policy_attrs(origin: &Origin, target: Option<&TargetRef>) -> PolicyAttrs {
    let kind = target.and_then(|t| t.kind);
    let dataplane = match (kind, target) {
        (Some(RefKind::Dataplane), Some(t)) => 2 * u8::from(t.name.is_some()) + u8::from(t.section_name.is_some()),
        _ => 0,
    };
    let origin_rank = match origin.labels.get("kuma.io/origin").map(Text::as_str) {
        Some("global") => 0,
        Some("zone") => 2,
        _ => 1,
    };
    let role = match origin.labels.get("kuma.io/policy-role").map(Text::as_str) {
        Some("producer") => 1,
        Some("consumer") => 2,
        Some("workload-owner") => 3,
        _ => 0,
    };
    (kind_rank(kind), dataplane, origin_rank, role)
}

/// The name Kuma compares last: `kuma.io/display-name`, else the resource name.
pub fn display_name(origin: &Origin) -> &str {
    origin.labels.get("kuma.io/display-name").unwrap_or(&origin.name)
}
