//! The pure pipeline end to end: a config path in, kernel tables out, with
//! every problem found on the way.

use crate::{
    compile::{self, Tables},
    model::{self, Config, Problem, Problems, Severity},
    resolve::{self, ResolvedRoute},
};
use std::path::Path;

/// A configuration ready for the kernel.
#[derive(Debug)]
pub struct Plan {
    /// What was read.
    pub config: Config,
    /// One route per served destination.
    pub routes: Vec<ResolvedRoute>,
    /// The tables to write.
    pub tables: Tables,
    /// Warnings (the plan has no errors).
    pub warnings: Vec<Problem>,
}

/// Reads, validates, resolves and compiles `path`. Either the whole plan, or
/// every problem found (errors and warnings), never a partial result.
pub fn build(path: &Path) -> Result<Plan, Problems> {
    let (config, mut problems) = model::load_path(path);
    problems.extend(config.validate());
    from_parts(path, config, problems)
}

/// As [`build`], for text that came from `file` (tests, fuzzing).
pub fn build_str(file: &Path, text: &str) -> Result<Plan, Problems> {
    let (config, mut problems) = model::load_str(file, text);
    problems.extend(config.validate());
    from_parts(file, config, problems)
}

fn from_parts(path: &Path, config: Config, mut problems: Vec<Problem>) -> Result<Plan, Problems> {
    if problems.iter().any(|p| p.severity == Severity::Error) {
        return Err(Problems(problems));
    }
    let (routes, resolve_problems) = resolve::resolve(&config);
    problems.extend(resolve_problems);
    if problems.iter().any(|p| p.severity == Severity::Error) {
        return Err(Problems(problems));
    }
    match compile::compile(&routes) {
        Ok(tables) => Ok(Plan { config, routes, tables, warnings: problems }),
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

impl Plan {
    /// One line per served destination: address, policy and weighted backends.
    pub fn summary_lines(&self) -> Vec<String> {
        self.routes
            .iter()
            .map(|r| {
                let dest = std::net::SocketAddr::new(r.vip, r.port);
                let total: u64 = r.backends.iter().map(|b| u64::from(b.weight)).sum();
                let backends: Vec<String> = r
                    .backends
                    .iter()
                    .map(|b| {
                        let pct = if total == 0 { 0.0 } else { 100.0 * b.weight as f64 / total as f64 };
                        format!("{} {:.2}% ({} endpoints)", b.name, pct, b.endpoints.len())
                    })
                    .collect();
                format!(
                    "{dest} {} via {}: {}",
                    r.service,
                    r.policy.as_deref().unwrap_or("default route"),
                    backends.join(", ")
                )
            })
            .collect()
    }
}
