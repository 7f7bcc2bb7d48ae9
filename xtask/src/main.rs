//! Developer tasks. `cargo xtask <task>`; `demo`, `fuzz` and `test` run `setup` first.

mod bench;
mod demo;
mod fuzz;
mod setup;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use std::{
    path::{Path, PathBuf},
    process::Command,
};

#[derive(Parser)]
#[command(about = "redirector developer tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Make this machine ready: nightly rust-src, bpf-linker, iproute2, bpffs. Idempotent.
    Setup,
    /// Build the agent (with its BPF programs) and the test client.
    Build,
    /// Unit, property, 30 s of fuzzing, a bench smoke run, and kernel tests (root; never skipped).
    Test {
        /// Extra arguments for the test binaries (e.g. a test name filter).
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Run the agent on the demo config (examples/canary) against local backends
    /// and show the observed split next to the configured weights.
    Demo {
        /// Connections per destination.
        #[arg(long, default_value_t = 10_000)]
        connects: u32,
    },
    /// Fuzz the pure pipeline (`plan::build_str`) with cargo-fuzz for a while.
    Fuzz {
        /// How long to fuzz, after the build.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
    /// The redirector vs direct, iptables, nftables and haproxy: latency,
    /// connection rate, established traffic and a 1..100,000-service sweep (root).
    Bench {
        /// Measured sequential connections per contender (latency CDFs).
        #[arg(long, default_value_t = 100_000)]
        connects: u32,
        /// Connections per client process in the rate test (one process per CPU).
        #[arg(long, default_value_t = 20_000)]
        rate_connects: u32,
        /// Request/response round trips on one established connection.
        #[arg(long, default_value_t = 50_000)]
        round_trips: u32,
        /// MiB per bulk throughput run (best of the rounds).
        #[arg(long, default_value_t = 2048)]
        bulk_mib: u32,
        /// Rounds over all contenders: latency pooled, rate and bulk best of.
        #[arg(long, default_value_t = 5)]
        rounds: u32,
        /// Service counts of the scale sweep, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1,100,1000,10000,100000")]
        sweep: Vec<u32>,
        /// Sequential connections per sweep point.
        #[arg(long, default_value_t = 20_000)]
        sweep_connects: u32,
        /// A seconds-long run of every measure (CI): small sizes, debug agent.
        #[arg(long)]
        smoke: bool,
        /// Where the report and plots go.
        #[arg(long, default_value = "docs/bench")]
        out: PathBuf,
    },
    /// The bench's client (internal).
    #[command(hide = true)]
    BenchClient {
        /// connect (latency lines), rr (round trips) or bulk (MiB in --count).
        #[arg(long, default_value = "connect")]
        mode: String,
        #[arg(long)]
        target: std::net::SocketAddr,
        #[arg(long)]
        alt: Option<std::net::SocketAddr>,
        #[arg(long, default_value = "127.0.0.1")]
        source: std::net::Ipv4Addr,
        #[arg(long)]
        count: u32,
        #[arg(long, default_value_t = 0)]
        warmup: u32,
        #[arg(long)]
        cgroup: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().task {
        Task::Setup => setup::run(),
        Task::Build => build(),
        Task::Test { args } => {
            setup::run()?;
            test(&args)
        }
        Task::Demo { connects } => {
            setup::run()?;
            build()?;
            demo::run(&workspace_root().join("examples/canary"), connects)
        }
        Task::Fuzz { seconds } => {
            setup::run()?;
            fuzz::run(seconds)
        }
        Task::Bench { connects, rate_connects, round_trips, bulk_mib, rounds, sweep, sweep_connects, smoke, out } => {
            setup::run()?;
            bench::setup()?;
            build()?;
            let command = std::env::args().skip(1).collect::<Vec<_>>().join(" ");
            let sizes = if smoke {
                bench::Sizes { connects: 2000, rate_connects: 300, round_trips: 1000, bulk_mib: 64, rounds: 2, sweep: vec![1, 100], sweep_connects: 300 }
            } else {
                // The agent's timings are part of the report: measure a release build.
                run(cargo().args(["build", "--release", "--package", "redirector", "--bin", "redirector"]))?;
                // SAFETY: single-threaded here; read by the bench's Agent::start.
                unsafe { std::env::set_var("REDIRECTOR_BIN", release_dir().join("redirector")) };
                bench::Sizes { connects, rate_connects, round_trips, bulk_mib, rounds, sweep, sweep_connects }
            };
            bench::run(&sizes, &out, &format!("cargo xtask {command}"))
        }
        Task::BenchClient { mode, target, alt, source, count, warmup, cgroup } => match mode.as_str() {
            "connect" => bench::client::run(target, alt, source, count, warmup, cgroup.as_deref()),
            "rr" => bench::traffic::rr(target, count, warmup, cgroup.as_deref()),
            "bulk" => bench::traffic::bulk(target, count, cgroup.as_deref()),
            other => bail!("unknown bench-client mode {other}"),
        },
    }
}

/// The workspace root (parent of this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

/// `target/debug`, where `build` puts the binaries.
pub fn bin_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
        .join("debug")
}

/// `target/release`.
fn release_dir() -> PathBuf {
    bin_dir().with_file_name("release")
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(workspace_root());
    cmd
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

fn build() -> anyhow::Result<()> {
    run(cargo().args(["build", "--package", "redirector", "--package", "integration-tests", "--bins"]))
}

fn test(args: &[String]) -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("the kernel tests need root: run `sudo -E cargo xtask test` (they are never skipped)");
    }
    build()?;
    let bins = bin_dir();
    // Unit and property tests first, the kernel tests last (and on their own),
    // so the run ends with the kernel tests' result line.
    let mut unit = cargo();
    unit.args(["test", "--lib", "--bins", "--tests"]);
    for p in ["redirector", "redirector-common", "xtask"] {
        unit.args(["--package", p]);
    }
    let mut kernel = cargo();
    kernel
        .args(["test", "--package", "integration-tests", "--lib", "--bins", "--tests"])
        .env("REDIRECTOR_BIN", bins.join("redirector"))
        .env("RDR_PROBE_BIN", bins.join("rdr-probe"));
    if !args.is_empty() {
        unit.arg("--").args(args);
        kernel.arg("--").args(args);
    }
    run(&mut unit)?;
    fuzz::run(30)?;
    // A seconds-long smoke run of the benchmark (its own process: it enters a
    // private network namespace), no timing assertions.
    let smoke = std::env::temp_dir().join("redirector-bench-smoke");
    run(Command::new(std::env::current_exe()?).args(["bench", "--smoke", "--out"]).arg(&smoke))?;
    run(&mut kernel)
}
