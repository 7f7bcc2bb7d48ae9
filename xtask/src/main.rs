//! Developer tasks: `cargo xtask <task>`.
//!
//! xtask depends on nothing that needs the BPF toolchain, so it compiles on a
//! machine `setup` has not prepared yet; every build and test run is a cargo
//! subprocess. `demo`, `test`, `fuzz` and `bench` run `setup` first.

mod fuzz;
mod image;
mod manifests;
mod setup;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use std::{
    ffi::OsString,
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
    /// Build the agent (with its BPF programs and `redirector bench`), the test client and the demo.
    Build,
    /// Unit, property, 30 s of fuzzing, a bench smoke run, kernel tests (root; never skipped),
    /// then the Kubernetes manifests validated and the image built and checked.
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
    /// The redirector vs direct, iptables, nftables and haproxy (root). Installs
    /// the comparators, builds the release agent, then runs its `redirector
    /// bench` with these arguments in the workspace root, the report going to
    /// docs/bench unless --out says otherwise (`cargo xtask bench -- --help`
    /// lists them).
    Bench {
        /// Arguments for `redirector bench`, e.g. `--smoke` or `--rounds 3`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build the agent's OCI image from scratch with buildah (no daemon) into
    /// target/image/ (OCI layout and oci-archive), then check it (root).
    Image {
        /// Package this agent binary instead of building the release one.
        #[arg(long)]
        binary: Option<PathBuf>,
    },
    /// Validate every manifest under deploy/kubernetes/ offline against the
    /// Kubernetes API schemas (kubernetes-validate, strict) and its kustomize build.
    ValidateManifests,
}

fn main() -> anyhow::Result<()> {
    setup::cargo_bin_on_path();
    match Cli::parse().task {
        Task::Setup => setup::run(),
        Task::Build => build(),
        Task::Test { args } => {
            require_root("the kernel tests (they are never skipped)")?;
            setup::run()?;
            setup::bench_tools()?;
            test(&args)?;
            // A filtered run is for one test; the whole run checks what ships.
            if args.is_empty() {
                manifests::validate()?;
                image::run(None)?;
            }
            Ok(())
        }
        Task::Demo { connects } => {
            require_root("the demo (it loads BPF programs and creates a cgroup)")?;
            setup::run()?;
            build()?;
            run(Command::new(bin_dir().join("rdr-demo"))
                .arg(workspace_root().join("examples/canary"))
                .args(["--connects", &connects.to_string()])
                .env("REDIRECTOR_BIN", bin_dir().join("redirector")))
        }
        Task::Fuzz { seconds } => {
            setup::run()?;
            fuzz::run(seconds)
        }
        Task::Bench { args } => {
            require_root("the bench (network namespace, cgroup, netfilter rules, BPF)")?;
            setup::run()?;
            setup::bench_tools()?;
            // The agent's timings are part of the report: measure a release build.
            let agent = build_release()?;
            let invoked_as: Vec<OsString> = std::env::args_os().skip(1).collect();
            let invoked_as = format!("cargo xtask {}", invoked_as.iter().map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" "));
            let mut cmd = Command::new(agent);
            cmd.arg("bench").args(["--invoked-as", &invoked_as]);
            if !args.iter().any(|a| a == "--out" || a.starts_with("--out=")) {
                cmd.args(["--out", "docs/bench"]);
            }
            run(cmd.args(&args).current_dir(workspace_root()))
        }
        Task::Image { binary } => image::run(binary.as_deref()),
        Task::ValidateManifests => manifests::validate(),
    }
}

fn require_root(what: &str) -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("{what} needs root: run it with `sudo -E cargo xtask ...`");
    }
    Ok(())
}

/// Every `.yaml`/`.yml` file below `dir` (none when it does not exist).
pub(crate) fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(()) };
    for entry in entries {
        let path = entry?.path();
        if path.is_dir() {
            yaml_files(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
    Ok(())
}

/// The workspace root (parent of this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

/// The cargo target directory.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| workspace_root().join("target"))
}

/// `target/debug`, where `build` puts the binaries.
pub fn bin_dir() -> PathBuf {
    target_dir().join("debug")
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

/// Runs `cmd`; its stdout, or an error with everything it printed.
pub(crate) fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}\n--- stdout\n{}--- stderr\n{}", out.status, String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }
    String::from_utf8(out.stdout).with_context(|| format!("{cmd:?}: output is not UTF-8"))
}

/// Builds the release agent; returns its path.
fn build_release() -> anyhow::Result<PathBuf> {
    run(cargo().args(["build", "--release", "--package", "redirector", "--bin", "redirector"]))?;
    Ok(release_dir().join("redirector"))
}

fn build() -> anyhow::Result<()> {
    run(cargo().args(["build", "--package", "redirector", "--package", "integration-tests", "--bins"]))
}

fn test(args: &[String]) -> anyhow::Result<()> {
    // The pure crates first, with nothing of the BPF toolchain: if they fail,
    // the rest would not tell more.
    let mut pure = cargo();
    pure.args(["test", "--package", "redirector-core", "--package", "redirector-common", "--package", "xtask"]);
    let bins = bin_dir();
    let mut agent = cargo();
    agent.args(["test", "--package", "redirector", "--lib", "--bins", "--tests"]);
    // Kernel tests last (and on their own), so the run ends with their result line.
    let mut kernel = cargo();
    kernel
        .args(["test", "--package", "integration-tests", "--lib", "--bins", "--tests"])
        .env("REDIRECTOR_BIN", bins.join("redirector"))
        .env("RDR_PROBE_BIN", bins.join("rdr-probe"));
    if !args.is_empty() {
        for cmd in [&mut pure, &mut agent, &mut kernel] {
            cmd.arg("--").args(args);
        }
    }
    run(&mut pure)?;
    build()?;
    run(&mut agent)?;
    fuzz::run(30)?;
    // A seconds-long smoke run of every measure of the bench, no timing claims.
    let smoke = std::env::temp_dir().join("redirector-bench-smoke");
    run(Command::new(bins.join("redirector")).args(["bench", "--smoke", "--out"]).arg(&smoke))?;
    run(&mut kernel)
}
