//! `redirector run`: apply a configuration to one cgroup and keep it in force
//! until SIGINT/SIGTERM, then detach and remove what was created.

use crate::{
    cgroup,
    datapath::{Datapath, Desired},
    plan,
    resolve::BASE_CLASS,
};
use redirector_common::MAX_WORKLOAD_DEPTH;
use anyhow::{Context as _, bail};
use std::path::PathBuf;
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{SignalKind, signal},
};
use tracing::{info, warn};

/// Default directory for pins on bpffs.
pub const DEFAULT_BPFFS_DIR: &str = "/sys/fs/bpf/redirector";

/// What `run` needs.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Config file or directory.
    pub config: PathBuf,
    /// cgroup2 directory to attach to.
    pub cgroup: PathBuf,
    /// Pin directory on bpffs.
    pub bpffs: PathBuf,
}

/// Runs the agent until a termination signal arrives.
pub async fn run(options: RunOptions) -> anyhow::Result<()> {
    preflight()?;
    let cgroup = cgroup::check_cgroup2_dir(&options.cgroup)?;
    let plan = plan::build(&options.config).map_err(|problems| {
        anyhow::anyhow!("{}: configuration rejected:\n{problems}", options.config.display())
    })?;
    for warning in &plan.warnings {
        warn!("{warning}");
    }
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;

    let desired = desired_state(&plan, &cgroup)?;
    let (mut datapath, logger) = Datapath::load(&options.bpffs)?;
    // Tables and workload classes go in before the hooks are attached.
    let diff = datapath.apply(&desired)?;
    datapath.attach(&cgroup)?;
    let endpoints: usize = plan.tables.values().map(|t| t.endpoints.len()).sum();
    info!(
        cgroup = %cgroup.display(),
        routes = plan.tables.len(),
        written = diff.upsert.len(),
        endpoints,
        policies = plan.config.routes.len(),
        classes = plan.resolution.classes.len(),
        workloads = desired.workloads.len(),
        "applied {} routes from {}",
        plan.tables.len(),
        options.config.display()
    );
    for line in plan.summary_lines() {
        info!("route {line}");
    }
    info!("ready");

    // SAFETY: the logger owns its ring buffer fd, and the AsyncFd owns the
    // logger, so the fd stays open for as long as it is registered.
    let mut logs = unsafe { AsyncFd::register(logger) }
        .map_err(|e| e.into_parts().1)
        .context("watching BPF logs")?;
    let signal_name = loop {
        tokio::select! {
            _ = term.recv() => break "SIGTERM",
            _ = int.recv() => break "SIGINT",
            guard = logs.readable_mut() => {
                let mut guard = guard.context("reading BPF logs")?;
                guard.get_inner_mut().flush();
                guard.clear_ready();
            }
        }
    };
    info!("{signal_name}: detaching from {} and removing pins", cgroup.display());
    datapath.shutdown()?;
    info!("stopped");
    Ok(())
}

/// The kernel state for `plan` with hooks attached at `cgroup`: workload
/// cgroup paths become cgroup ids (a cgroup v2 directory's inode number).
/// Workloads whose cgroup does not exist yet are reported and skipped.
fn desired_state(plan: &plan::Plan, cgroup: &std::path::Path) -> anyhow::Result<Desired> {
    use std::os::unix::fs::MetadataExt as _;
    let root = cgroup::cgroup2_mount()?;
    let attach_level = cgroup.strip_prefix(&root).map(|p| p.components().count()).unwrap_or(0) as u32;
    let mut desired = Desired { tables: plan.tables.clone(), ..Default::default() };
    for w in plan.resolution.workloads.iter().filter(|w| w.class != BASE_CLASS) {
        let dir = cgroup.join(&w.cgroup);
        match std::fs::metadata(&dir) {
            Ok(meta) if meta.is_dir() => {
                let depth = w.cgroup.components().count() as u32;
                if depth > MAX_WORKLOAD_DEPTH {
                    bail!("{}: cgroup {} is {depth} levels below --cgroup; at most {MAX_WORKLOAD_DEPTH} are searched", w.dataplane, dir.display());
                }
                desired.workloads.insert(meta.ino(), w.class);
                desired.settings.max_depth = desired.settings.max_depth.max(depth);
            }
            _ => warn!("{}: cgroup {} does not exist; its processes get the base routes", w.dataplane, dir.display()),
        }
    }
    desired.settings.attach_level = attach_level;
    Ok(desired)
}

/// Refuses to start without the privileges to load and attach BPF programs.
fn preflight() -> anyhow::Result<()> {
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_BPF: u32 = 39;
    const CAP_NET_ADMIN: u32 = 12;
    let status = std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let effective = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0);
    let has = |cap: u32| effective & (1u64 << cap) != 0;
    if !(has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_NET_ADMIN))) {
        bail!("redirector run needs root, or CAP_BPF and CAP_NET_ADMIN, to load and attach BPF programs");
    }
    cgroup::cgroup2_mount()?;
    Ok(())
}
