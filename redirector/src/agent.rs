//! `redirector run`: apply a configuration to one cgroup and keep it in force
//! until SIGINT/SIGTERM; the datapath stays attached after the agent exits.
//!
//! While running, the config file or directory is watched (and SIGHUP reloads
//! it at once): each change is rebuilt and applied as a diff (only changed
//! routes are written, each swap make-before-break). A change that does not
//! validate is logged with the same messages as `check` and nothing of it is
//! applied: the last good configuration stays in force. MeshExternalService
//! hostnames are resolved again every `dns_refresh`. When the attached cgroup
//! directory is removed (its hooks go with it) the agent reports not ready,
//! and attaches again as soon as the directory is created again.

use crate::{
    cgroup,
    datapath::{Datapath, Desired},
    metrics,
};
use redirector_common::MAX_WORKLOAD_DEPTH;
use redirector_core::{
    compile::{ClassBook, compile_generation},
    plan,
    resolve::BASE_CLASS,
    source::FileSource,
};
use anyhow::{Context as _, bail};
use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{SignalKind, signal},
    sync::mpsc,
};
use tracing::{debug, error, info, warn};

/// How long a config change must be quiet before it is read: editors and
/// `kubectl`-style tools write in several steps.
const SETTLE: Duration = Duration::from_millis(5);
/// Routes listed one per line in the startup log; the rest are summed up.
const MAX_ROUTE_LOG_LINES: usize = 20;

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
    /// How often MeshExternalService hostnames are resolved again.
    pub dns_refresh: Duration,
    /// Where to serve `/metrics`, `/healthz` and `/readyz`.
    pub metrics: Option<std::net::SocketAddr>,
    /// Start even when another redirector datapath is attached to the cgroup
    /// or an ancestor (a warning instead of an error).
    pub allow_other_datapath: bool,
}

/// Runs the agent until a termination signal arrives.
pub async fn run(options: RunOptions) -> anyhow::Result<()> {
    preflight()?;
    // Plans are built on the blocking pool and dropped on this thread: with
    // glibc's default of one arena per thread, memory freed here stays
    // fragmented in the builder's arena and RSS creeps up with every reload.
    // SAFETY: mallopt only tunes the allocator; called before other threads.
    unsafe { nix::libc::mallopt(nix::libc::M_ARENA_MAX, 1) };
    let cgroup = cgroup::check_cgroup2_dir(&options.cgroup)?;
    // Subscribed before the first read, so an edit made while it is read is
    // not lost: it comes as a change right after.
    let (changes_tx, mut changes) = mpsc::unbounded_channel();
    let _watcher = watch(&options.config, changes_tx)?;
    let (source, plan) = build(FileSource::new(&options.config)).await;
    let plan = plan.map_err(|problems| anyhow::anyhow!("{}: configuration rejected:\n{problems}", options.config.display()))?;
    for warning in &plan.warnings {
        warn!("{warning}");
    }
    let state: metrics::Shared = Default::default();
    if let Some(addr) = options.metrics {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("--metrics {addr}: cannot listen"))?;
        let (state, bpffs) = (state.clone(), options.bpffs.clone());
        let server = tokio::spawn(metrics::serve(listener, state, bpffs));
        tokio::spawn(async move {
            if let Ok(Err(e)) = server.await {
                error!("metrics server on {addr}: {e:#}");
            }
        });
        info!("serving metrics on http://{addr}/metrics");
    }
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("installing SIGHUP handler")?;

    let attach_level = cgroup_level(&cgroup)?;
    let desired = desired_state(&plan, &cgroup, attach_level, &ClassBook::default())?;
    // A restart loads a new generation next to the running one and retires
    // the old one once the new one is attached: no gap.
    let (mut datapath, logger) = Datapath::load(&options.bpffs)?;
    let foreign = datapath.foreign_hooks(&cgroup)?;
    if !foreign.is_empty() {
        let message = format!(
            "--cgroup {}: another redirector datapath is attached here or above, and both would rewrite the same connects: {}",
            cgroup.display(),
            foreign.join("; ")
        );
        if !options.allow_other_datapath {
            bail!("{message} (stop that agent and run `redirector uninstall` with its --bpffs, or pass --allow-other-datapath)");
        }
        warn!("{message} (--allow-other-datapath)");
    }
    let (cgroup_tx, mut cgroup_events) = mpsc::unbounded_channel();
    let _cgroup_watcher = watch_cgroup(&cgroup, cgroup_tx)?;
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
    // A node may carry many thousands of routes: the log shows the first few,
    // `redirector plan` and `status` show all of them.
    let lines = plan.summary_lines();
    for line in lines.iter().take(MAX_ROUTE_LOG_LINES) {
        info!("route {line}");
    }
    if lines.len() > MAX_ROUTE_LOG_LINES {
        info!("... and {} more routes (`redirector status` lists them)", lines.len() - MAX_ROUTE_LOG_LINES);
    }
    let mut attached_ino = cgroup_ino(&cgroup);
    {
        let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
        s.ready = true;
        s.not_ready = None;
        s.generation = 1;
        s.slots = metrics::Slot::all(&desired, &services(&plan, &desired.routes.class_ids));
        s.fill = metrics::Fill::of(&desired);
    }
    info!("ready");
    let mut node = Node {
        source: Some(source),
        config: options.config.clone(),
        cgroup: cgroup.clone(),
        attach_level,
        datapath,
        book: desired.routes.book,
        generation: 1,
        state: state.clone(),
    };

    // SAFETY: the logger owns its ring buffer fd, and the AsyncFd owns the
    // logger, so the fd stays open for as long as it is registered.
    let mut logs = unsafe { AsyncFd::register(logger) }
        .map_err(|e| e.into_parts().1)
        .context("watching BPF logs")?;
    let mut refresh = tokio::time::interval(options.dns_refresh);
    refresh.tick().await;
    // Replaced tables are deleted once no connect can still be reading them.
    let mut garbage = tokio::time::interval(Duration::from_millis(redirector_common::TABLE_GRACE_MS / 2));
    let mut uses_dns = has_hostnames(&plan);
    drop(plan);
    let signal_name = loop {
        tokio::select! {
            _ = term.recv() => break "SIGTERM",
            _ = int.recv() => break "SIGINT",
            _ = hup.recv() => {
                info!("SIGHUP: reloading {}", options.config.display());
                if let Some(dns) = node.reload("SIGHUP").await {
                    uses_dns = dns;
                }
            }
            Some(()) = cgroup_events.recv() => {
                while let Ok(Some(())) = tokio::time::timeout(SETTLE, cgroup_events.recv()).await {}
                let now = cgroup_ino(&cgroup);
                if now == attached_ino {
                    continue;
                }
                let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
                match now {
                    None => {
                        error!("cgroup {} was removed: its hooks went with it; attaching again when it is created again", cgroup.display());
                        s.ready = false;
                        s.not_ready = Some(format!("cgroup {} was removed; waiting for it to be created again", cgroup.display()));
                    }
                    Some(_) => {
                        drop(s);
                        if let Err(e) = node.datapath.reattach(&cgroup) {
                            error!("cgroup {} is back, attaching to it failed: {e:#}", cgroup.display());
                            continue;
                        }
                        info!("cgroup {} created again: hooks attached", cgroup.display());
                        // Workload cgroups below it are new directories with new ids.
                        node.reload("cgroup recreated").await;
                        let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
                        s.ready = true;
                        s.not_ready = None;
                    }
                }
                attached_ino = now;
            }
            guard = logs.readable_mut() => {
                let mut guard = guard.context("reading BPF logs")?;
                guard.get_inner_mut().flush();
                guard.clear_ready();
            }
            Some(()) = changes.recv() => {
                // Wait for the writes to settle, then rebuild once.
                while let Ok(Some(())) = tokio::time::timeout(SETTLE, changes.recv()).await {}
                if let Some(dns) = node.reload("config change").await {
                    uses_dns = dns;
                }
            }
            _ = refresh.tick(), if uses_dns => {
                node.reload("DNS refresh").await;
            }
            _ = garbage.tick(), if node.datapath.has_garbage() => {
                if let Err(e) = node.datapath.collect_garbage() {
                    warn!("deleting replaced route tables: {e:#}");
                }
            }
        }
    };
    node.datapath.shutdown();
    info!("{signal_name}: stopped; the datapath stays attached to {} (`redirector uninstall` removes it)", cgroup.display());
    Ok(())
}

/// Reads (what changed), validates, resolves and compiles the config off the
/// runtime thread, so `/healthz`, metrics and signals are served while a
/// large config is read. The source comes back with the result.
async fn build(mut source: FileSource) -> (FileSource, Result<plan::Plan, redirector_core::model::Problems>) {
    let path = source.path().to_path_buf();
    match tokio::task::spawn_blocking(move || {
        let plan = plan::build_from(&mut source, &redirector_core::resolve::SystemDns);
        (source, plan)
    })
    .await
    {
        Ok(done) => done,
        Err(e) => (
            FileSource::new(&path),
            Err(redirector_core::model::Problems(vec![redirector_core::model::Problem {
                severity: redirector_core::model::Severity::Error,
                file: path.clone(),
                resource: String::new(),
                path: String::new(),
                message: format!("reading the configuration failed: {e}"),
            }])),
        ),
    }
}

/// The running agent's datapath and what it needs to reload.
struct Node {
    /// The config's files as last read (taken while a read runs).
    source: Option<FileSource>,
    config: PathBuf,
    cgroup: PathBuf,
    attach_level: u32,
    datapath: Datapath,
    /// Class ids of the generation in force.
    book: ClassBook,
    generation: u64,
    state: metrics::Shared,
}

impl Node {
    /// Rebuilds the plan and applies what changed. On a rejected config, or a
    /// generation the kernel cannot take, nothing is written (or all of it is
    /// undone). Returns whether the applied config uses hostnames (`None`
    /// when nothing was applied).
    async fn reload(&mut self, cause: &str) -> Option<bool> {
        let started = Instant::now();
        let generation = self.generation;
        let failed = |state: &metrics::Shared| state.lock().unwrap_or_else(|e| e.into_inner()).reloads_failed += 1;
        let source = self.source.take().unwrap_or_else(|| FileSource::new(&self.config));
        let (source, plan) = build(source).await;
        self.source = Some(source);
        let plan = match plan {
            Ok(plan) => plan,
            Err(problems) => {
                failed(&self.state);
                for p in problems.errors() {
                    error!("{p}");
                }
                warn!(generation, "{cause}: configuration rejected; generation {generation} stays in force");
                return None;
            }
        };
        let applied = desired_state(&plan, &self.cgroup, self.attach_level, &self.book)
            .and_then(|desired| Ok((self.datapath.apply(&desired)?, desired)));
        let outcome = match applied {
            Ok((diff, desired)) if diff.is_empty() => {
                // No route changed, but workload cgroups may have.
                self.state.lock().unwrap_or_else(|e| e.into_inner()).fill = metrics::Fill::of(&desired);
                self.book = desired.routes.book;
                debug!(generation, "{cause}: nothing changed");
                Some(has_hostnames(&plan))
            }
            Ok((diff, desired)) => {
                self.generation += 1;
                let generation = self.generation;
                {
                    let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
                    s.reloads_ok += 1;
                    s.generation = generation;
                    s.slots = metrics::Slot::all(&desired, &services(&plan, &desired.routes.class_ids));
                    s.fill = metrics::Fill::of(&desired);
                }
                info!(
                    generation,
                    routes = desired.routes.tables.len(),
                    written = diff.upsert.len(),
                    removed = diff.remove.len(),
                    unchanged = diff.unchanged,
                    micros = started.elapsed().as_micros() as u64,
                    "{cause}: applied generation {generation}"
                );
                self.book = desired.routes.book;
                Some(has_hostnames(&plan))
            }
            Err(e) => {
                failed(&self.state);
                error!(generation, "{cause}: applying failed, generation {generation} stays in force: {e:#}");
                None
            }
        };
        // The plan is large at node scale: freed, and the freed memory given
        // back to the system, off the runtime thread.
        tokio::task::spawn_blocking(move || {
            drop(plan);
            // SAFETY: malloc_trim only releases free heap memory.
            unsafe { nix::libc::malloc_trim(0) };
        });
        outcome
    }
}

/// The destination service of every route of every class (by table key),
/// for the metrics' labels.
fn services(plan: &plan::Plan, class_ids: &[u32]) -> std::collections::BTreeMap<redirector_common::ServiceKey, String> {
    plan.resolution
        .classes
        .iter()
        .enumerate()
        .flat_map(|(i, c)| c.routes.iter().map(move |r| (redirector_core::compile::service_key(class_ids[i], r.vip, r.port), r.service.clone())))
        .collect()
}

/// Whether any MeshExternalService endpoint is a hostname.
fn has_hostnames(plan: &plan::Plan) -> bool {
    plan.config.external_services.iter().any(|s| {
        s.spec.endpoints.iter().flatten().any(|e| e.address.parse::<std::net::IpAddr>().is_err())
    })
}

/// Watches the config (a directory recursively; a file through its
/// directory, since editors replace files by renaming) and signals changes.
fn watch(config: &Path, changes: mpsc::UnboundedSender<()>) -> anyhow::Result<notify::RecommendedWatcher> {
    use notify::Watcher as _;
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|e| !e.kind.is_access()) {
            let _ = changes.send(());
        }
    })
    .context("starting the config watcher")?;
    let (path, mode) = if config.is_dir() {
        (config.to_path_buf(), notify::RecursiveMode::Recursive)
    } else {
        (config.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf(), notify::RecursiveMode::NonRecursive)
    };
    watcher.watch(&path, mode).with_context(|| format!("watching {}", path.display()))?;
    Ok(watcher)
}

/// Watches the directory that holds `cgroup` for the cgroup's removal and
/// re-creation (cgroupfs reports rmdir and mkdir like any filesystem). The
/// cgroup2 root cannot be removed and is not watched.
fn watch_cgroup(cgroup: &Path, changes: mpsc::UnboundedSender<()>) -> anyhow::Result<Option<notify::RecommendedWatcher>> {
    use notify::Watcher as _;
    let Some(parent) = cgroup.parent().filter(|p| p.starts_with(cgroup::cgroup2_mount().unwrap_or_default())) else {
        return Ok(None);
    };
    let target = cgroup.to_path_buf();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|e| e.need_rescan() || e.paths.contains(&target)) {
            let _ = changes.send(());
        }
    })
    .context("starting the cgroup watcher")?;
    watcher
        .watch(parent, notify::RecursiveMode::NonRecursive)
        .with_context(|| format!("watching {}", parent.display()))?;
    Ok(Some(watcher))
}

/// The inode (cgroup id) of the cgroup directory, `None` when it is gone.
fn cgroup_ino(cgroup: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(cgroup).ok().filter(|m| m.is_dir()).map(|m| m.ino())
}

/// The cgroup level of `cgroup` (the cgroup2 root is level 0).
fn cgroup_level(cgroup: &Path) -> anyhow::Result<u32> {
    let root = cgroup::cgroup2_mount()?;
    Ok(cgroup.strip_prefix(&root).map(|p| p.components().count()).unwrap_or(0) as u32)
}

/// The kernel state for `plan` with hooks attached at `cgroup`: workload
/// cgroup paths become cgroup ids (a cgroup v2 directory's inode number).
/// Workloads whose cgroup does not exist yet are reported and skipped.
fn desired_state(plan: &plan::Plan, cgroup: &Path, attach_level: u32, book: &ClassBook) -> anyhow::Result<Desired> {
    use std::os::unix::fs::MetadataExt as _;
    let routes = compile_generation(&plan.resolution, book)?;
    let class_ids = routes.class_ids.clone();
    let mut desired = Desired { routes, ..Default::default() };
    for w in plan.resolution.workloads.iter().filter(|w| class_ids[w.class as usize] != BASE_CLASS) {
        let dir = cgroup.join(&w.cgroup);
        match std::fs::metadata(&dir) {
            Ok(meta) if meta.is_dir() => {
                let depth = w.cgroup.components().count() as u32;
                if depth > MAX_WORKLOAD_DEPTH {
                    bail!("{}: cgroup {} is {depth} levels below --cgroup; at most {MAX_WORKLOAD_DEPTH} are searched", w.dataplane, dir.display());
                }
                desired.workloads.insert(meta.ino(), class_ids[w.class as usize]);
                desired.settings.max_depth = desired.settings.max_depth.max(depth);
            }
            _ => warn!("{}: cgroup {} does not exist; its processes get the base routes", w.dataplane, dir.display()),
        }
    }
    desired.settings.attach_level = attach_level;
    desired.settings.agent_tgid = std::process::id();
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
