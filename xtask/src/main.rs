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
    /// connect() latency of the redirector vs direct, iptables, nftables and haproxy (root).
    Bench {
        /// Measured connections per contender.
        #[arg(long, default_value_t = 100_000)]
        connects: u32,
        /// Where the report and plots go.
        #[arg(long, default_value = "docs/bench")]
        out: PathBuf,
    },
    /// The bench's client (internal).
    #[command(hide = true)]
    BenchClient {
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
        Task::Bench { connects, out } => {
            setup::run()?;
            bench::setup()?;
            build()?;
            bench::run(connects, &out)
        }
        Task::BenchClient { target, alt, source, count, warmup, cgroup } => {
            bench::client::run(target, alt, source, count, warmup, cgroup.as_deref())
        }
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
    run(Command::new(std::env::current_exe()?).args(["bench", "--connects", "2000", "--out"]).arg(&smoke))?;
    run(&mut kernel)
}
