//! `rdr-demo` (run by `cargo xtask demo`): the agent on the demo config, end
//! to end, on this machine.
//!
//! Inside a private network namespace it starts one tiny TCP server per
//! endpoint of the config, creates a throwaway cgroup, runs `redirector run`
//! attached to it, drives connections from a client inside the cgroup to
//! every service address, and prints the observed split next to the
//! configured weights. Everything it created is removed at the end.

use anyhow::{Context as _, bail};
use integration_tests::{Agent, Backend, ChildCgroup, PinDir, chi_square, enter_private_netns, probe};
use clap::Parser;
use std::{
    collections::BTreeSet,
    net::SocketAddr,
    path::{Path, PathBuf},
};

/// Chi-square critical values at p = 0.001 for 1..=8 degrees of freedom.
const CHI2_P001: [f64; 8] = [10.83, 13.82, 16.27, 18.47, 20.52, 22.46, 24.32, 26.12];

#[derive(Parser)]
#[command(about = "Run the agent on a config against local backends and show the observed split (root)")]
struct Cli {
    /// The configuration (file or directory).
    config: PathBuf,
    /// Connections per destination.
    #[arg(long, default_value_t = 10_000)]
    connects: u32,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    run(&cli.config, cli.connects)
}

fn run(config: &Path, connects: u32) -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("the demo loads BPF programs and creates a cgroup: run it as root");
    }
    let plan = redirector_core::plan::build(config).map_err(|p| anyhow::anyhow!("{}:\n{p}", config.display()))?;
    enter_private_netns().context("creating the demo's network namespace")?;
    let endpoints: BTreeSet<SocketAddr> =
        plan.resolution.base_routes().iter().flat_map(|r| r.backends.iter().flat_map(|b| b.endpoints.iter().copied())).collect();
    let _servers: Vec<Backend> = endpoints
        .iter()
        .map(|e| Backend::tcp(&e.to_string(), &e.to_string()))
        .collect::<anyhow::Result<_>>()?;
    let cgroup = ChildCgroup::create_unique("rdr-demo")?;
    let pins = PinDir::new("rdr-demo")?;
    println!("demo: {} endpoints serving on loopback in a private network namespace", endpoints.len());
    println!("demo: agent attached to {}", cgroup.path().display());
    let agent = Agent::start(&integration_tests::redirector_bin(), config, cgroup.path(), pins.path())?;

    let mut consistent = true;
    for route in plan.resolution.base_routes() {
        let target = SocketAddr::new(route.vip, route.port);
        let result = probe(&target.to_string(), connects, false, Some(cgroup.path()))?;
        let total_weight: u64 = route.backends.iter().map(|b| u64::from(b.weight)).sum();
        println!();
        println!(
            "{target}  {} via {}  ({connects} connects from inside the cgroup)",
            route.service,
            route.policy.as_deref().unwrap_or("default route")
        );
        println!("  {:<34} {:>7} {:>10} {:>10}", "backend", "weight", "expected", "observed");
        let mut observed = Vec::new();
        let mut expected = Vec::new();
        for backend in &route.backends {
            let got: u32 = backend.endpoints.iter().map(|e| result.replies_from(&e.to_string())).sum();
            let share = backend.weight as f64 / total_weight.max(1) as f64;
            println!(
                "  {:<34} {:>7} {:>9.2}% {:>9.2}%",
                backend.name,
                backend.weight,
                100.0 * share,
                100.0 * f64::from(got) / f64::from(connects)
            );
            observed.push(got);
            expected.push(share);
        }
        for (errno, n) in &result.errors {
            println!("  refused/failed (errno {errno}): {n}");
        }
        let peers: Vec<String> = result.peers.keys().map(|p| p.to_string()).collect();
        println!("  getpeername() seen by the client: {}", peers.join(", "));
        let cells: Vec<(u32, f64)> = observed.iter().copied().zip(expected.iter().copied()).filter(|(_, p)| *p > 0.0).collect();
        if cells.len() > 1 {
            let (o, p): (Vec<u32>, Vec<f64>) = cells.into_iter().unzip();
            let chi2 = chi_square(&o, &p);
            let critical = CHI2_P001[(o.len() - 2).min(CHI2_P001.len() - 1)];
            let verdict = if chi2 < critical { "consistent with the weights" } else { "NOT consistent" };
            println!("  chi-square {chi2:.2} (df {}, p=0.001 critical {critical}): {verdict}", o.len() - 1);
            consistent &= chi2 < critical;
        }
        consistent &= result.errors.is_empty();
    }
    agent.stop()?;
    println!();
    println!("demo: agent stopped; cgroup, pins and backends removed on exit");
    if !consistent {
        bail!("the observed split did not match the configuration");
    }
    Ok(())
}
