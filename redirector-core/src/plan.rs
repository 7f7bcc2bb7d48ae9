//! The pure pipeline end to end: a config path in, kernel tables out, with
//! every problem found on the way; and the `plan` report.

use crate::{
    compile::{self, Tables},
    model::{self, Config, Problem, Problems, Severity},
    resolve::{self, HostResolver, Resolution, ResolvedRoute, SystemDns},
};
use std::{fmt::Write as _, net::SocketAddr, path::Path};

/// A configuration ready for the kernel.
#[derive(Debug)]
pub struct Plan {
    /// What was read.
    pub config: Config,
    /// Classes, their routes and the workloads bound to them.
    pub resolution: Resolution,
    /// The tables to write.
    pub tables: Tables,
    /// Warnings (the plan has no errors).
    pub warnings: Vec<Problem>,
}

/// Reads, validates, resolves and compiles `path` (hostnames through the
/// system resolver). Either the whole plan, or every problem found (errors
/// and warnings), never a partial result.
pub fn build(path: &Path) -> Result<Plan, Problems> {
    build_with(path, &SystemDns)
}

/// As [`build`], with a given hostname resolver.
pub fn build_with(path: &Path, dns: &dyn HostResolver) -> Result<Plan, Problems> {
    let (config, mut problems) = model::load_path(path);
    problems.extend(config.validate());
    from_parts(path, config, problems, dns)
}

/// As [`build`], for text that came from `file`; hostnames are not resolved.
pub fn build_str(file: &Path, text: &str) -> Result<Plan, Problems> {
    let (config, mut problems) = model::load_str(file, text);
    problems.extend(config.validate());
    from_parts(file, config, problems, &resolve::NoDns)
}

/// As [`build`], for resources read elsewhere (the Kubernetes API) under
/// the name `source`, with the problems found reading and validating them
/// (validation is per resource: the source validated each as it read it).
pub fn build_config(source: &Path, config: Config, problems: Vec<Problem>) -> Result<Plan, Problems> {
    from_parts(source, config, problems, &SystemDns)
}

fn from_parts(path: &Path, config: Config, mut problems: Vec<Problem>, dns: &dyn HostResolver) -> Result<Plan, Problems> {
    let empty = config.services.is_empty()
        && config.dataplanes.is_empty()
        && config.routes.is_empty()
        && config.external_services.is_empty()
        && config.multizone_services.is_empty()
        && config.http_routes.is_empty()
        && config.ignored.is_empty();
    if empty && problems.is_empty() {
        // Most likely a file caught mid-write: applying it would drop every route.
        problems.push(Problem {
            severity: Severity::Error,
            file: path.to_path_buf(),
            resource: String::new(),
            path: String::new(),
            message: "contains no Kuma resources".into(),
        });
    }
    if problems.iter().any(|p| p.severity == Severity::Error) {
        return Err(Problems(problems));
    }
    let (resolution, resolve_problems) = resolve::resolve_with(&config, dns);
    problems.extend(resolve_problems);
    if problems.iter().any(|p| p.severity == Severity::Error) {
        return Err(Problems(problems));
    }
    match compile::compile(&resolution) {
        Ok(tables) => Ok(Plan { config, resolution, tables, warnings: problems }),
        Err(e) => {
            problems.push(Problem {
                severity: Severity::Error,
                file: path.to_path_buf(),
                resource: String::new(),
                path: String::new(),
                message: e.to_string(),
            });
            Err(Problems(problems))
        }
    }
}

/// The chance of each backend, as `(numerator, denominator)` of the weights.
fn shares(route: &ResolvedRoute) -> (Vec<u64>, u64) {
    let weights: Vec<u64> = route.backends.iter().map(|b| u64::from(b.weight)).collect();
    let total = weights.iter().sum();
    (weights, total)
}

fn percent(num: u64, den: u64) -> f64 {
    if den == 0 { 0.0 } else { 100.0 * num as f64 / den as f64 }
}

impl Plan {
    /// The base class's routes, one line each.
    pub fn summary_lines(&self) -> Vec<String> {
        self.resolution.base_routes().iter().map(route_line).collect()
    }

    /// The classes `plan` shows: every class, or the one of `workload`
    /// (a Dataplane name, with or without `Dataplane/`).
    fn selected(&self, workload: Option<&str>) -> Result<Vec<(String, &resolve::Class)>, String> {
        let label = |id: u32| {
            let names: Vec<&str> = self
                .resolution
                .workloads
                .iter()
                .filter(|w| w.class == id)
                .map(|w| w.dataplane.as_str())
                .collect();
            match (id, names.is_empty()) {
                (0, true) => "processes outside workload cgroups".to_string(),
                (0, false) => format!("processes outside workload cgroups, and {}", names.join(", ")),
                _ => names.join(", "),
            }
        };
        match workload {
            None => Ok(self.resolution.classes.iter().map(|c| (label(c.id), c)).collect()),
            Some(name) => {
                let full = if name.contains('/') { name.to_string() } else { format!("Dataplane/{name}") };
                let class = self
                    .resolution
                    .class_of(&full)
                    .ok_or_else(|| format!("{name}: no Dataplane of that name is bound to a cgroup (label redirector.io/cgroup)"))?;
                Ok(vec![(full, class)])
            }
        }
    }

    /// The `plan` report as text: per class, per destination, the winning
    /// policy, each backend with weight, exact probability and endpoints, and why.
    pub fn render_table(&self, workload: Option<&str>) -> Result<String, String> {
        let mut out = String::new();
        for (label, class) in self.selected(workload)? {
            let _ = writeln!(out, "class {} — {label}", class.id);
            for route in &class.routes {
                let dest = SocketAddr::new(route.vip, route.port);
                let proto = route.app_protocol.as_deref().unwrap_or("tcp");
                let _ = writeln!(out, "  {dest} ({proto})  {}", route.service);
                let _ = writeln!(out, "    route: {}", route.policy.as_deref().unwrap_or("default (to itself)"));
                let (weights, total) = shares(route);
                if route.backends.is_empty() {
                    let _ = writeln!(out, "    no backend: connect() fails with ECONNREFUSED");
                }
                for (b, w) in route.backends.iter().zip(&weights) {
                    let eps: Vec<String> = b.endpoints.iter().map(|e| e.to_string()).collect();
                    let eps = if eps.is_empty() { "no endpoints: its connects fail with ECONNREFUSED".to_string() } else { eps.join(", ") };
                    let _ = writeln!(out, "    {:>7.3}%  {w}/{total}  {}  -> {eps}", percent(*w, total), b.name);
                }
                for line in &route.why {
                    let _ = writeln!(out, "    why: {line}");
                }
            }
            out.push('\n');
        }
        Ok(out)
    }

    /// The `plan` report as JSON.
    pub fn render_json(&self, workload: Option<&str>) -> Result<String, String> {
        let classes: Vec<serde_json::Value> = self
            .selected(workload)?
            .into_iter()
            .map(|(label, class)| {
                let routes: Vec<serde_json::Value> = class
                    .routes
                    .iter()
                    .map(|r| {
                        let (weights, total) = shares(r);
                        serde_json::json!({
                            "destination": SocketAddr::new(r.vip, r.port).to_string(),
                            "mesh": r.mesh,
                            "service": r.service,
                            "appProtocol": r.app_protocol,
                            "policy": r.policy,
                            "backends": r.backends.iter().zip(&weights).map(|(b, w)| serde_json::json!({
                                "name": b.name,
                                "weight": b.weight,
                                "probability": if total == 0 { 0.0 } else { *w as f64 / total as f64 },
                                "probabilityExact": format!("{w}/{total}"),
                                "endpoints": b.endpoints.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
                            })).collect::<Vec<_>>(),
                            "why": r.why,
                        })
                    })
                    .collect();
                serde_json::json!({
                    "class": class.id,
                    "workloads": label,
                    "routes": routes,
                })
            })
            .collect();
        serde_json::to_string_pretty(&serde_json::json!({ "classes": classes })).map_err(|e| e.to_string())
    }
}

/// One route on one line: destination, service, policy, backends with shares.
pub fn route_line(r: &ResolvedRoute) -> String {
    let dest = SocketAddr::new(r.vip, r.port);
    let (weights, total) = shares(r);
    let backends: Vec<String> = r
        .backends
        .iter()
        .zip(&weights)
        .map(|(b, w)| format!("{} {:.2}% ({} endpoints)", b.name, percent(*w, total), b.endpoints.len()))
        .collect();
    format!("{dest} {} via {}: {}", r.service, r.policy.as_deref().unwrap_or("default route"), backends.join(", "))
}
