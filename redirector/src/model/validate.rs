//! Validation of each resource on its own (references between resources are
//! checked by `resolve`). Messages and field paths follow Kuma's validators.

use super::{
    Config, Dataplane, MeshService, MeshTcpRoute, Problem, RefKind, TargetRef,
    problem::Reporter, types::PortRef,
};
use std::collections::HashSet;

/// Validates every resource of `config`.
pub(super) fn validate(config: &Config) -> Vec<Problem> {
    let mut out = Vec::new();
    for route in &config.routes {
        let mut r = Reporter::new(&route.origin.file, route.origin.display_name(), &mut out);
        validate_route(route, &mut r);
    }
    for service in &config.services {
        let mut r = Reporter::new(&service.origin.file, service.origin.display_name(), &mut out);
        validate_service(service, &mut r);
    }
    for dataplane in &config.dataplanes {
        let mut r = Reporter::new(&dataplane.origin.file, dataplane.origin.display_name(), &mut out);
        validate_dataplane(dataplane, &mut r);
    }
    for ignored in &config.ignored {
        let mut r = Reporter::new(&ignored.file, ignored.display_name(), &mut out);
        r.warning("", format!("{} resources are read but have no effect in this version", ignored.kind));
    }
    out
}

fn validate_route(route: &MeshTcpRoute, r: &mut Reporter<'_>) {
    let spec = &route.spec;
    match &spec.target_ref {
        None => {}
        Some(target) => validate_top_target(target, r),
    }
    let Some(to) = spec.to.as_ref().filter(|to| !to.is_empty()) else {
        r.error("spec.to", "needs at least one item");
        return;
    };
    for (i, item) in to.iter().enumerate() {
        let path = format!("spec.to[{i}]");
        validate_to_target(&item.target_ref, &format!("{path}.targetRef"), r);
        let Some(rules) = &item.rules else { continue };
        if rules.len() > 1 {
            r.error(format!("{path}.rules"), "must have at most one element");
        }
        for (j, rule) in rules.iter().enumerate() {
            let path = format!("{path}.rules[{j}].default.backendRefs");
            let refs = rule.default.backend_refs.as_deref().unwrap_or_default();
            if refs.is_empty() {
                r.error(&path, "must not be empty");
                continue;
            }
            let mut total: u64 = 0;
            for (k, backend) in refs.iter().enumerate() {
                let path = format!("{path}[{k}]");
                match backend.kind {
                    None => r.error(format!("{path}.kind"), "must be set"),
                    Some(RefKind::MeshService) => {}
                    Some(kind @ (RefKind::MeshServiceSubset | RefKind::MeshExternalService)) => r.error(
                        format!("{path}.kind"),
                        format!("{kind} backends are not supported yet; use MeshService"),
                    ),
                    Some(kind) => r.error(format!("{path}.kind"), format!("value {kind} is not supported")),
                }
                if backend.name.as_deref().unwrap_or("").is_empty() {
                    r.error(format!("{path}.name"), "must be set");
                }
                if let Some(port) = backend.port.or(backend.doc_port)
                    && !(1..=65535).contains(&port)
                {
                    r.error(format!("{path}.port"), format!("must be in 1..65535, got {port}"));
                }
                if backend.doc_version.is_some() {
                    r.warning(
                        format!("{path}._version"),
                        "documentation-generator hint; it selects nothing (split with separate MeshServices)",
                    );
                }
                total = total.saturating_add(backend.weight.unwrap_or(1));
            }
            if total > u64::from(u32::MAX) {
                r.error(&path, format!("sum of weights {total} exceeds {}", u32::MAX));
            }
        }
    }
}

fn validate_top_target(target: &TargetRef, r: &mut Reporter<'_>) {
    let path = "spec.targetRef";
    match target.kind {
        None => r.error(format!("{path}.kind"), "must be set"),
        Some(RefKind::Mesh) => {
            if target.name.is_some() {
                r.error(format!("{path}.name"), "must not be set with kind Mesh");
            }
            if target.tags.is_some() {
                r.error(format!("{path}.tags"), "must not be set with kind Mesh");
            }
        }
        Some(
            kind @ (RefKind::MeshSubset
            | RefKind::MeshService
            | RefKind::MeshServiceSubset
            | RefKind::Dataplane
            | RefKind::MeshGateway),
        ) => r.error(
            format!("{path}.kind"),
            format!("{kind} sources are not supported yet; this version routes for kind Mesh only"),
        ),
        Some(kind) => r.error(format!("{path}.kind"), format!("value {kind} is not supported")),
    }
}

fn validate_to_target(target: &TargetRef, path: &str, r: &mut Reporter<'_>) {
    match target.kind {
        None => r.error(format!("{path}.kind"), "must be set"),
        Some(RefKind::MeshService) => {
            if target.name.as_deref().unwrap_or("").is_empty() {
                r.error(format!("{path}.name"), "must be set");
            }
            if target.tags.is_some() {
                r.error(format!("{path}.tags"), "must not be set with kind MeshService");
            }
        }
        Some(kind @ (RefKind::MeshExternalService | RefKind::MeshMultiZoneService)) => r.error(
            format!("{path}.kind"),
            format!("{kind} destinations are not supported yet; use MeshService"),
        ),
        Some(kind) => r.error(format!("{path}.kind"), format!("value {kind} is not supported")),
    }
}

fn validate_service(service: &MeshService, r: &mut Reporter<'_>) {
    let ports = service.spec.ports.as_deref().unwrap_or_default();
    if ports.is_empty() {
        r.warning("spec.ports", "no ports: the service cannot be dialled");
    }
    let mut numbers = HashSet::new();
    let mut names = HashSet::new();
    for (i, port) in ports.iter().enumerate() {
        if port.port == 0 {
            r.error(format!("spec.ports[{i}].port"), "must be in 1..65535");
        }
        if !numbers.insert(port.port) {
            r.error(format!("spec.ports[{i}].port"), format!("port {} is listed twice", port.port));
        }
        if let Some(name) = &port.name
            && !names.insert(name.clone())
        {
            r.error(format!("spec.ports[{i}].name"), format!("name {name:?} is listed twice"));
        }
        if let Some(PortRef::Number(0)) = port.target_port {
            r.error(format!("spec.ports[{i}].targetPort"), "must be in 1..65535");
        }
    }
    let tags = service.spec.selector.as_ref().and_then(|s| s.dataplane_tags.as_ref());
    if tags.is_none_or(|t| t.is_empty()) {
        r.warning("spec.selector.dataplaneTags", "not set: the service has no endpoints here");
    }
    if service.status.vips.as_deref().unwrap_or_default().is_empty() {
        r.warning("status.vips", "no addresses: connections to this service cannot be redirected");
    }
}

fn validate_dataplane(dataplane: &Dataplane, r: &mut Reporter<'_>) {
    let prefix = dataplane.origin.body_prefix();
    let net = &dataplane.spec.networking;
    let inbound = net.inbound.as_deref().unwrap_or_default();
    if net.address.is_none() && inbound.iter().any(|ib| ib.address.is_none()) {
        r.error(format!("{prefix}networking.address"), "must be set (or an address on every inbound)");
    }
    for (i, ib) in inbound.iter().enumerate() {
        if ib.port == 0 {
            r.error(format!("{prefix}networking.inbound[{i}].port"), "must be in 1..65535");
        }
        if ib.service_port == Some(0) {
            r.error(format!("{prefix}networking.inbound[{i}].servicePort"), "must be in 1..65535");
        }
    }
}
