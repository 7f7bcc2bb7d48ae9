//! Helpers shared by the integration tests: loading text, listing problems,
//! and small YAML builders (flow style) for resources.
#![allow(dead_code)]

use redirector_core::{
    model::{self, Config, Problem, Severity},
    plan::{self, Plan},
};
use std::path::{Path, PathBuf};

/// The file name every in-memory input pretends to come from.
pub const FILE: &str = "test.yaml";

/// Loads `text` and validates it; the config and every problem (load + validation).
pub fn check(text: &str) -> (Config, Vec<Problem>) {
    let (config, mut problems) = model::load_str(Path::new(FILE), text);
    problems.extend(config.validate());
    (config, problems)
}

/// A problem as `(resource, path, message)`, for comparisons.
pub type Triple = (String, String, String);

/// Problems of one severity as `(resource, path, message)`.
pub fn triples(problems: &[Problem], severity: Severity) -> Vec<Triple> {
    problems
        .iter()
        .filter(|p| p.severity == severity)
        .map(|p| (p.resource.clone(), p.path.clone(), p.message.clone()))
        .collect()
}

/// The errors of `text` (load + validation) as `(resource, path, message)`.
pub fn errors(text: &str) -> Vec<Triple> {
    triples(&check(text).1, Severity::Error)
}

/// The warnings of `text` (load + validation) as `(resource, path, message)`.
pub fn warnings(text: &str) -> Vec<Triple> {
    triples(&check(text).1, Severity::Warning)
}

/// `(resource, path, message)` with owned strings, for comparisons.
pub fn t(resource: &str, path: &str, message: &str) -> Triple {
    (resource.to_string(), path.to_string(), message.to_string())
}

/// The whole pipeline; panics with every problem when it fails.
pub fn plan(text: &str) -> Plan {
    match plan::build_str(Path::new(FILE), text) {
        Ok(plan) => plan,
        Err(problems) => panic!("expected a plan, got:\n{problems}"),
    }
}

/// The whole pipeline; the problems when it fails, panics when it succeeds.
pub fn plan_problems(text: &str) -> Vec<Problem> {
    match plan::build_str(Path::new(FILE), text) {
        Ok(plan) => panic!("expected problems, got a plan:\n{}", plan.summary_lines().join("\n")),
        Err(problems) => problems.0,
    }
}

/// A universal MeshService in mesh `default`. `selector`, `ports` and `vips`
/// are flow-style YAML (`{app: a}`, `[{port: 80}]`, `[{ip: 10.0.0.1}]`).
pub fn service(name: &str, selector: &str, ports: &str, vips: &str) -> String {
    service_in("default", name, selector, ports, vips)
}

/// A universal MeshService in `mesh`.
pub fn service_in(mesh: &str, name: &str, selector: &str, ports: &str, vips: &str) -> String {
    format!(
        "---\ntype: MeshService\nname: {name}\nmesh: {mesh}\nspec:\n  selector:\n    dataplaneTags: {selector}\n  ports: {ports}\nstatus:\n  vips: {vips}\n"
    )
}

/// A universal Dataplane in mesh `default` with `address` and flow-style `inbound`.
pub fn dataplane(name: &str, address: &str, inbound: &str) -> String {
    dataplane_in("default", name, address, inbound)
}

/// A universal Dataplane in `mesh`.
pub fn dataplane_in(mesh: &str, name: &str, address: &str, inbound: &str) -> String {
    format!(
        "---\ntype: Dataplane\nname: {name}\nmesh: {mesh}\nnetworking:\n  address: {address}\n  inbound: {inbound}\n"
    )
}

/// A universal MeshTCPRoute in mesh `default` for kind Mesh with flow-style `to`.
pub fn route(name: &str, to: &str) -> String {
    route_in("default", name, to)
}

/// A universal MeshTCPRoute in `mesh`.
pub fn route_in(mesh: &str, name: &str, to: &str) -> String {
    format!("---\ntype: MeshTCPRoute\nname: {name}\nmesh: {mesh}\nspec:\n  targetRef: {{kind: Mesh}}\n  to: {to}\n")
}

/// A MeshTCPRoute body (`spec.to`) with one destination and its backendRefs.
pub fn to_backends(target: &str, backend_refs: &str) -> String {
    format!("[{{targetRef: {target}, rules: [{{default: {{backendRefs: {backend_refs}}}}}]}}]")
}

/// A fresh, empty directory under the system temp directory, unique to this
/// process and `name`.
pub fn tempdir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("redirector-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Loads and validates `text`, then resolves it with `dns`. The resolution and
/// the resolver's problems, or the load/validation errors when there are any.
pub fn resolve_checked(
    text: &str,
    dns: &dyn redirector_core::resolve::HostResolver,
) -> Result<(redirector_core::resolve::Resolution, Vec<Problem>), Vec<Triple>> {
    let (config, problems) = check(text);
    let errors = triples(&problems, Severity::Error);
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(redirector_core::resolve::resolve_with(&config, dns))
}

/// A fixed DNS for tests: `(hostname, [addresses])`.
pub fn static_dns(entries: &[(&str, &[&str])]) -> redirector_core::resolve::StaticDns {
    redirector_core::resolve::StaticDns(
        entries
            .iter()
            .map(|(host, ips)| {
                (
                    host.to_string(),
                    ips.iter().map(|ip| ip.parse().unwrap()).collect(),
                )
            })
            .collect(),
    )
}

/// `MAX_FILE_BYTES` of `model/load.rs` (private there).
pub const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// A MeshTCPRoute `r` whose only backendRef carries `extra` (flow style).
pub fn route_with_backend(extra: &str) -> String {
    format!(
        "type: MeshTCPRoute\nname: r\nspec:\n  targetRef: {{kind: Mesh}}\n  to:\n    - targetRef: {{kind: MeshService, name: a}}\n      rules:\n        - default:\n            backendRefs:\n              - {{kind: MeshService, name: b, {extra}}}\n"
    )
}

/// The field path of [`route_with_backend`]'s weight.
pub const BACKEND_WEIGHT: &str = "spec.to[0].rules[0].default.backendRefs[0].weight";

/// A fresh directory for one test (the dirs in it are removed when done).
pub struct Scratch(pub PathBuf);

impl Scratch {
    /// `bad-input-<name>` under the temp dir, mode 0755.
    pub fn new(name: &str) -> Self {
        let dir = tempdir(&format!("bad-input-{name}"));
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        Scratch(dir)
    }

    /// Writes `name` (creating its directories); returns its path.
    pub fn write(&self, name: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
        let path = self.0.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The demo config (examples/canary) as one text.
pub const CANARY: &str = concat!(
    include_str!("../../../examples/canary/services.yaml"),
    "\n---\n",
    include_str!("../../../examples/canary/dataplanes.yaml"),
    "\n---\n",
    include_str!("../../../examples/canary/route.yaml"),
    "\n"
);
