//! The `redirector` command line.

use clap::{Parser, Subcommand};
use redirector::agent;
use redirector_core::{model::Severity, plan};
use std::{path::PathBuf, process::ExitCode};

/// Sidecarless, in-kernel enforcement of Kuma's MeshTCPRoute.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a config file or directory: exit 0, or print each problem and exit 1.
    Check {
        /// File or directory of Kuma YAML resources.
        path: PathBuf,
    },
    /// Explain, per workload class and destination, which policy wins and where connections go.
    Plan {
        /// File or directory of Kuma YAML resources.
        #[arg(required_unless_present = "kubernetes")]
        path: Option<PathBuf>,
        /// Read the Kubernetes API instead: this node's pods as Dataplanes,
        /// Services as MeshServices, and the kuma.io resources.
        #[arg(long, conflicts_with = "path")]
        kubernetes: bool,
        #[command(flatten)]
        cluster: ClusterArgs,
        /// Only the class of this workload (Dataplane name).
        #[arg(long)]
        workload: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Show what the kernel holds, from the pinned maps (no agent needed).
    Status {
        /// Pin directory on bpffs.
        #[arg(long, default_value = agent::DEFAULT_BPFFS_DIR)]
        bpffs: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Detach every hook and remove every pin the agent created under --bpffs, and nothing else.
    Uninstall {
        /// Pin directory on bpffs.
        #[arg(long, default_value = agent::DEFAULT_BPFFS_DIR)]
        bpffs: PathBuf,
    },
    /// Apply a config to a cgroup, keep it in step with the config, and leave it in force on exit.
    Run {
        /// File or directory of Kuma YAML resources.
        #[arg(long, required_unless_present = "kubernetes")]
        config: Option<PathBuf>,
        /// Watch the Kubernetes API instead: this node's pods are the
        /// workloads, Services and EndpointSlices give MeshServices, and the
        /// kuma.io resources are read as they are.
        #[arg(long, conflicts_with = "config")]
        kubernetes: bool,
        #[command(flatten)]
        cluster: ClusterArgs,
        /// cgroup2 directory whose processes (and descendants) are redirected;
        /// default: the cgroup2 mount root (the whole node).
        #[arg(long)]
        cgroup: Option<PathBuf>,
        /// Directory on bpffs for pins.
        #[arg(long, default_value = agent::DEFAULT_BPFFS_DIR)]
        bpffs: PathBuf,
        /// Seconds between resolutions of MeshExternalService hostnames.
        #[arg(long, default_value_t = 30)]
        dns_refresh: u64,
        /// Serve Prometheus metrics, /healthz and /readyz on this address.
        #[arg(long)]
        metrics: Option<std::net::SocketAddr>,
        /// Log format.
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
        /// Start even when another redirector datapath is attached to --cgroup
        /// or an ancestor (both would rewrite the same connects).
        #[arg(long)]
        allow_other_datapath: bool,
    },
    /// Measure this node (root): the redirector vs direct, iptables, nftables and haproxy.
    ///
    /// Runs in a private network namespace and a child cgroup it creates;
    /// iptables, nftables and haproxy only when installed (else reported as
    /// skipped). Writes a Markdown report with SVG plots to --out and leaves
    /// nothing else behind.
    Bench(Box<redirector::bench::BenchArgs>),
    /// The bench's own client, re-executed by `bench` (internal).
    #[command(hide = true)]
    BenchClient(redirector::bench::ClientArgs),
}

/// How `--kubernetes` connects, and whose pods it takes.
#[derive(clap::Args)]
struct ClusterArgs {
    /// Kubeconfig to use (default: the pod's service account); only with --kubernetes.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// The node whose pods are the workloads.
    #[arg(long, env = "NODE_NAME")]
    node_name: Option<String>,
    /// How kubelet names pod cgroups, when no kubepods cgroup below
    /// --cgroup tells (`run` detects it when there is one).
    #[arg(long, value_enum, default_value_t = CgroupDriver::Systemd)]
    cgroup_driver: CgroupDriver,
}

/// kubelet's `--cgroup-driver`.
#[derive(Clone, Copy, clap::ValueEnum)]
enum CgroupDriver {
    /// `kubepods.slice/...` (systemd slices).
    Systemd,
    /// `kubepods/...`.
    Cgroupfs,
}

impl From<CgroupDriver> for redirector_core::source::kubernetes::CgroupDriver {
    fn from(d: CgroupDriver) -> Self {
        match d {
            CgroupDriver::Systemd => Self::Systemd,
            CgroupDriver::Cgroupfs => Self::Cgroupfs,
        }
    }
}

/// Log formats of `run`.
#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `plan` output formats.
#[derive(Clone, Copy, clap::ValueEnum)]
enum Output {
    /// Human-readable text.
    Table,
    /// JSON.
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `requires` would not do: clap counts a flag's default as present.
    if let Command::Plan { kubernetes: false, cluster: ClusterArgs { kubeconfig: Some(_), .. }, .. }
    | Command::Run { kubernetes: false, cluster: ClusterArgs { kubeconfig: Some(_), .. }, .. } = &cli.command
    {
        eprintln!("error: --kubeconfig needs --kubernetes");
        return ExitCode::from(2);
    }
    match cli.command {
        Command::Check { path } => check(&path),
        Command::Bench(args) => report_error(redirector::bench::main(*args)),
        Command::BenchClient(args) => report_error(redirector::bench::client(args)),
        Command::Status { bpffs, output } => match redirector::status::read(&bpffs) {
            Ok(status) => {
                let text = match output {
                    Output::Table => status.render_table(),
                    Output::Json => status.render_json() + "\n",
                };
                emit(&text)
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Uninstall { bpffs } => match redirector::datapath::uninstall(&bpffs) {
            Ok(removed) => {
                println!("{}: detached {} links, removed {} pins", bpffs.display(), removed.links, removed.pins);
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Plan { path: Some(path), workload, output, .. } => plan_command(plan::build(&path), workload.as_deref(), output),
        Command::Plan { path: None, cluster: ClusterArgs { kubeconfig, node_name, cgroup_driver }, workload, output, .. } => {
            let Some(node) = node_name else {
                eprintln!("error: --kubernetes needs --node-name (or NODE_NAME)");
                return ExitCode::FAILURE;
            };
            match kubernetes_plan(kubeconfig.as_deref(), &node, cgroup_driver.into()) {
                Ok(built) => plan_command(built, workload.as_deref(), output),
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Run { config, kubernetes, cluster: ClusterArgs { kubeconfig, node_name, cgroup_driver }, cgroup, bpffs, dns_refresh, metrics, log_format, allow_other_datapath } => {
            let config = match (config, kubernetes, node_name) {
                (Some(path), _, _) => agent::Config::Files(path),
                (None, true, Some(node)) => agent::Config::Kubernetes { kubeconfig, node, driver: cgroup_driver.into() },
                _ => {
                    eprintln!("error: --kubernetes needs --node-name (or NODE_NAME)");
                    return ExitCode::FAILURE;
                }
            };
            let filter = tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
            let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
            match log_format {
                LogFormat::Text => logs.init(),
                LogFormat::Json => logs.json().init(),
            }
            let cgroup = match cgroup.map_or_else(redirector::cgroup::cgroup2_mount, Ok) {
                Ok(cgroup) => cgroup,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    return ExitCode::FAILURE;
                }
            };
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: starting the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(agent::run(agent::RunOptions {
                config,
                cgroup,
                bpffs,
                dns_refresh: std::time::Duration::from_secs(dns_refresh.max(1)),
                metrics,
                allow_other_datapath,
            })) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    match plan::build(path) {
        Ok(plan) => {
            for w in &plan.warnings {
                eprintln!("{w}");
            }
            println!(
                "{}: ok: {} MeshTCPRoutes, {} MeshServices, {} Dataplanes; {} destinations routed",
                path.display(),
                plan.config.routes.len(),
                plan.config.services.len(),
                plan.config.dataplanes.len(),
                plan.tables.len()
            );
            ExitCode::SUCCESS
        }
        Err(problems) => {
            for p in &problems.0 {
                if p.severity == Severity::Error {
                    println!("{p}");
                } else {
                    eprintln!("{p}");
                }
            }
            ExitCode::FAILURE
        }
    }
}

/// The plan of what the Kubernetes API holds now, for `node`.
fn kubernetes_plan(
    kubeconfig: Option<&std::path::Path>,
    node: &str,
    driver: redirector_core::source::kubernetes::CgroupDriver,
) -> anyhow::Result<Result<plan::Plan, redirector_core::model::Problems>> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut cluster = redirector_core::source::kubernetes::Cluster::new(driver, node);
    let listed = runtime.block_on(async {
        let client = redirector::kubernetes::client(kubeconfig).await?;
        redirector::kubernetes::list(&client, node, &mut cluster).await
    })?;
    for kind in &listed.missing {
        eprintln!("warning: the {kind} CRD is not installed; there are none");
    }
    // A store alone: the plan resolves the resources itself.
    let mut store = redirector_core::store::Store::new();
    for event in listed.events {
        store.apply(event);
    }
    let mut problems = listed.problems;
    problems.extend(store.duplicate_problems());
    Ok(plan::build_config(std::path::Path::new("kubernetes"), store.to_config(), problems))
}

fn plan_command(built: Result<plan::Plan, redirector_core::model::Problems>, workload: Option<&str>, output: Output) -> ExitCode {
    let plan = match built {
        Ok(plan) => plan,
        Err(problems) => {
            for p in &problems.0 {
                println!("{p}");
            }
            return ExitCode::FAILURE;
        }
    };
    for w in &plan.warnings {
        eprintln!("{w}");
    }
    let rendered = match output {
        Output::Table => plan.render_table(workload),
        Output::Json => plan.render_json(workload),
    };
    match rendered {
        Ok(text) => emit(&(text + if matches!(output, Output::Json) { "\n" } else { "" })),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Exit status of a command that returns an error: printed with its causes.
fn report_error(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Writes a report to stdout; a closed pipe (`| head`) is not an error.
fn emit(text: &str) -> ExitCode {
    use std::io::Write as _;
    match std::io::stdout().write_all(text.as_bytes()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: writing the report: {e}");
            ExitCode::FAILURE
        }
    }
}
