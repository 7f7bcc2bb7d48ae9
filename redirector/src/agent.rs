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
    kubernetes::{self, Noted, Report},
    metrics,
    pods::PodCgroups,
};
use redirector_common::MAX_WORKLOAD_DEPTH;
use redirector_core::{
    compile::{InForce, Tables, Transition},
    model::Problems,
    pipeline::{Pipeline, Ready},
    plan,
    resolve::BASE_CLASS,
    source::kubernetes::{CgroupDriver, Cluster, ClusterSource, Inbox},
};
use anyhow::{Context as _, bail};
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{SignalKind, signal},
    sync::mpsc,
};
use tracing::{debug, error, info, warn};

/// How long a config change must be quiet before it is read, unless its
/// last event says a file is complete (renamed into place, closed after
/// writing, removed): editors and `kubectl`-style tools write in several steps.
const SETTLE: Duration = Duration::from_millis(5);
/// Routes listed one per line in the startup log; the rest are summed up.
const MAX_ROUTE_LOG_LINES: usize = 20;

/// Default directory for pins on bpffs.
pub const DEFAULT_BPFFS_DIR: &str = "/sys/fs/bpf/redirector";

/// Where `run` reads Kuma resources.
#[derive(Clone, Debug)]
pub enum Config {
    /// A file or directory of YAML, watched.
    Files(PathBuf),
    /// The Kubernetes API, watched: this node's pods are the workloads.
    Kubernetes {
        /// Kubeconfig (default: in-cluster, the pod's service account).
        kubeconfig: Option<PathBuf>,
        /// This node's name.
        node: String,
        /// How kubelet names pod cgroups, when not detected below `--cgroup`.
        driver: CgroupDriver,
    },
}

/// What `run` needs.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Where Kuma resources come from.
    pub config: Config,
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
    // Configs are read on the blocking pool, files parsed on one thread per
    // CPU: with glibc's default of up to eight arenas per CPU, memory freed
    // in one thread's arena stays fragmented there and RSS creeps up with
    // every reload. One arena per parsing thread.
    let arenas = std::thread::available_parallelism().map_or(1, |n| n.get()) as i32;
    // SAFETY: mallopt only tunes the allocator; called before other threads.
    unsafe { nix::libc::mallopt(nix::libc::M_ARENA_MAX, arenas) };
    let cgroup = cgroup::check_cgroup2_dir(&options.cgroup)?;
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
    // Subscribed before the first read, so an edit made while it is read is
    // not lost: it comes as a change right after.
    let (changes_tx, mut changes) = mpsc::unbounded_channel();
    let mut _watcher = None;
    let mut kube = None;
    let (mut reports, mut pod_events) = (None, None);
    let first = match &options.config {
        Config::Files(path) => {
            _watcher = Some(watch(path, changes_tx)?);
            let (pipeline, ready) = build(Pipeline::new(path), false).await?;
            let ready = ready.map_err(|problems| anyhow::anyhow!("{}: configuration rejected:\n{problems}", path.display()))?;
            Some((pipeline, ready))
        }
        Config::Kubernetes { kubeconfig, node, driver } => {
            let (mut k, mut r, p) = Kube::start(kubeconfig.as_deref(), node, *driver, &cgroup).await?;
            let first = k.first_generation(&state, &mut r, &mut term, &mut int).await?;
            (kube, reports, pod_events) = (Some(k), Some(r), Some(p));
            first
        }
    };
    let Some((pipeline, ready)) = first else {
        info!("stopped before the first generation was applied");
        return Ok(());
    };
    for warning in &ready.warnings {
        warn!("{warning}");
    }

    let attach_level = cgroup::level(&cgroup)?;
    let desired = desired_state(ready, &Tables::new(), &cgroup, attach_level, kube.is_some())?;
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
    // Written whatever an earlier agent on this pin directory left.
    let mut names = None;
    record_names(&options.bpffs, &desired, &mut names);
    let mut pipeline = pipeline;
    pipeline.commit(&desired.routes);
    datapath.attach(&cgroup)?;
    let endpoints: usize = desired.routes.tables.values().map(|t| t.endpoints.len()).sum();
    info!(
        cgroup = %cgroup.display(),
        routes = desired.routes.routes,
        written = diff.upsert.len(),
        endpoints,
        classes = desired.routes.class_ids.len(),
        workloads = desired.workloads.len(),
        "applied {} routes from {}",
        desired.routes.routes,
        pipeline.path().display()
    );
    // A node may carry many thousands of routes: the log shows the first few,
    // `redirector plan` and `status` show all of them.
    let engine = pipeline.engine();
    for route in engine.base_routes().take(MAX_ROUTE_LOG_LINES) {
        info!("route {}", plan::route_line(route));
    }
    if engine.base_len() > MAX_ROUTE_LOG_LINES {
        info!("... and {} more routes (`redirector status` lists them)", engine.base_len() - MAX_ROUTE_LOG_LINES);
    }
    let mut attached_ino = cgroup_ino(&cgroup);
    {
        let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
        s.ready = true;
        s.not_ready = None;
        if let Some(why) = kube.as_ref().and_then(|k| k.health.not_ready()) {
            s.ready = false;
            s.not_ready = Some(why);
        }
        s.generation = 1;
        s.slots.update(&Tables::new(), &desired.routes, |key| service_of(&pipeline, key));
        s.fill = metrics::Fill { routes: datapath.routes(), table_chunks: datapath.table_chunks(), workloads: desired.workloads.len() };
    }
    info!("ready");
    drop(desired);
    give_back_memory();
    let mut uses_dns = pipeline.engine().has_hostnames();
    let mut node = Node {
        pipeline: Some(pipeline),
        cgroup: cgroup.clone(),
        attach_level,
        datapath,
        generation: 1,
        state: state.clone(),
        pods: kube.is_some(),
        bpffs: options.bpffs.clone(),
        names,
    };
    let source = node.pipeline.as_ref().map(|p| p.path().display().to_string()).unwrap_or_default();
    let mut probe = tokio::time::interval(Duration::from_secs(2));

    // SAFETY: the logger owns its ring buffer fd, and the AsyncFd owns the
    // logger, so the fd stays open for as long as it is registered.
    let mut logs = unsafe { AsyncFd::register(logger) }
        .map_err(|e| e.into_parts().1)
        .context("watching BPF logs")?;
    let mut refresh = tokio::time::interval(options.dns_refresh);
    refresh.tick().await;
    // Replaced tables are deleted once no connect can still be reading them.
    let mut garbage = tokio::time::interval(Duration::from_millis(redirector_common::TABLE_GRACE_MS / 2));
    let signal_name = loop {
        tokio::select! {
            _ = term.recv() => break "SIGTERM",
            _ = int.recv() => break "SIGINT",
            _ = hup.recv() => {
                info!("SIGHUP: reloading {source}");
                if let Some(dns) = node.reload("SIGHUP", false).await? {
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
                        node.reload("cgroup recreated", false).await?;
                        let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
                        s.ready = true;
                        s.not_ready = None;
                    }
                }
                attached_ino = now;
            }
            Some(report) = recv(reports.as_mut()) => {
                let k = kube.as_mut().context("reports come from the Kubernetes watchers")?;
                if k.take(report, reports.as_mut().context("reports")?).await {
                    node.reload("Kubernetes change", false).await?;
                }
                k.report_readiness(&state, attached_ino.is_some());
            }
            Some(()) = recv(pod_events.as_mut()) => {
                let k = kube.as_mut().context("pod cgroup events come with Kubernetes")?;
                if let Some(p) = pod_events.as_mut() {
                    while let Ok(Some(())) = tokio::time::timeout(SETTLE, p.recv()).await {}
                }
                if let Err(e) = k.pods.rewatch() {
                    warn!("watching pod cgroups: {e:#}");
                }
                node.reload("pod cgroups changed", false).await?;
            }
            _ = probe.tick(), if kube.as_ref().is_some_and(|k| k.health.failing()) => {
                let k = kube.as_mut().context("probing the Kubernetes API")?;
                if kubernetes::reachable(&k.client).await {
                    k.health.recovered();
                }
                k.report_readiness(&state, attached_ino.is_some());
            }
            guard = logs.readable_mut() => {
                let mut guard = guard.context("reading BPF logs")?;
                guard.get_inner_mut().flush();
                guard.clear_ready();
            }
            Some(mut complete) = changes.recv() => {
                // Take every queued event; unless the last one completes a
                // file, wait for the writes to settle. Then rebuild once.
                loop {
                    while let Ok(c) = changes.try_recv() {
                        complete = c;
                    }
                    if complete {
                        break;
                    }
                    match tokio::time::timeout(SETTLE, changes.recv()).await {
                        Ok(Some(c)) => complete = c,
                        _ => break,
                    }
                }
                if let Some(dns) = node.reload("config change", false).await? {
                    uses_dns = dns;
                }
            }
            _ = refresh.tick(), if uses_dns => {
                node.reload("DNS refresh", true).await?;
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

/// The next item of `rx`; never, without one.
async fn recv<T>(rx: Option<&mut mpsc::UnboundedReceiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// The Kubernetes side of a running agent: the watchers' reports, their
/// health, and the pod cgroups watched.
struct Kube {
    client: kube::Client,
    health: kubernetes::Health,
    inbox: Inbox,
    pods: PodCgroups,
    /// The pipeline, until the first generation is built from it.
    pipeline: Option<Pipeline>,
}

impl Kube {
    /// Connects, starts the watchers and the pod cgroup watch below
    /// `cgroup`; with the watchers' reports and the pod cgroup events.
    async fn start(
        kubeconfig: Option<&Path>,
        node: &str,
        driver: CgroupDriver,
        cgroup: &Path,
    ) -> anyhow::Result<(Self, mpsc::UnboundedReceiver<Report>, mpsc::UnboundedReceiver<()>)> {
        let client = kubernetes::client(kubeconfig).await?;
        let driver = match crate::pods::detect_driver(cgroup) {
            Some(found) => {
                info!("pod cgroups below {} are named by kubelet's {found:?} cgroup driver", cgroup.display());
                found
            }
            None => {
                info!("no kubepods cgroup below {} yet: assuming kubelet's {driver:?} cgroup driver", cgroup.display());
                driver
            }
        };
        let (source, inbox) = ClusterSource::new(Cluster::new(driver, node));
        let (reports_tx, reports) = mpsc::unbounded_channel();
        kubernetes::watch(&client, node, reports_tx);
        let (pods_tx, pod_events) = mpsc::unbounded_channel();
        let pods = PodCgroups::watch(cgroup, pods_tx)?;
        info!("watching the Kubernetes API: node {node}'s pods are the workloads");
        let health = kubernetes::Health::new(kubernetes::watched_kinds());
        Ok((Self { client, health, inbox, pods, pipeline: Some(Pipeline::with_source(Box::new(source))) }, reports, pod_events))
    }

    /// Takes `report` and the reports that follow it closely (a burst of
    /// changes is one reload, held back at most 100 ms); whether the cluster
    /// changed and every kind has been listed (a reload is due).
    async fn take(&mut self, report: Report, reports: &mut mpsc::UnboundedReceiver<Report>) -> bool {
        let mut updated = self.health.note(report, &self.inbox) == Noted::Update;
        let until = Instant::now() + Duration::from_millis(100);
        loop {
            while let Ok(r) = reports.try_recv() {
                updated |= self.health.note(r, &self.inbox) == Noted::Update;
            }
            match tokio::time::timeout_at(until.min(Instant::now() + SETTLE).into(), reports.recv()).await {
                Ok(Some(r)) => updated |= self.health.note(r, &self.inbox) == Noted::Update,
                _ => break,
            }
        }
        updated && self.health.synced()
    }

    /// Waits until every kind has been listed once, then builds the first
    /// generation; a configuration the cluster gives that is rejected is
    /// logged and waited out. `None` when a signal came first.
    async fn first_generation(
        &mut self,
        state: &metrics::Shared,
        reports: &mut mpsc::UnboundedReceiver<Report>,
        term: &mut tokio::signal::unix::Signal,
        int: &mut tokio::signal::unix::Signal,
    ) -> anyhow::Result<Option<(Pipeline, Ready)>> {
        loop {
            loop {
                self.report_readiness(state, true);
                tokio::select! {
                    _ = term.recv() => return Ok(None),
                    _ = int.recv() => return Ok(None),
                    report = reports.recv() => {
                        if self.take(report.context("the Kubernetes watchers stopped")?, reports).await {
                            break;
                        }
                    }
                }
            }
            info!("Kubernetes API: every kind listed; building the first generation");
            let (pipeline, ready) = build(self.pipeline.take().context("the first generation is being built")?, false).await?;
            match ready {
                Ok(ready) => return Ok(Some((pipeline, ready))),
                Err(problems) => {
                    self.pipeline = Some(pipeline);
                    for p in problems.errors() {
                        error!("{p}");
                    }
                    let why = format!("the Kuma resources in the cluster were rejected ({} errors, logged); nothing is applied until they change", problems.errors().count());
                    warn!("{why}");
                    let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
                    s.not_ready = Some(why);
                    s.reloads_failed += 1;
                }
            }
        }
    }

    /// Puts the API's health into `/readyz` (the cgroup's absence, reported
    /// apart, wins).
    fn report_readiness(&self, state: &metrics::Shared, cgroup_present: bool) {
        let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
        if !cgroup_present {
            return;
        }
        match self.health.not_ready() {
            Some(why) => {
                s.ready = false;
                s.not_ready = Some(why);
            }
            None if s.generation > 0 => {
                s.ready = true;
                s.not_ready = None;
            }
            None => {}
        }
    }
}

/// Reads what changed, resolves and compiles it off the runtime thread, so
/// `/healthz`, metrics and signals are served while a large config is read.
/// The pipeline comes back with the result. A panic in it is a bug the
/// agent cannot recover from with its state intact: it stops (the datapath
/// stays in force).
async fn build(mut pipeline: Pipeline, refresh_dns: bool) -> anyhow::Result<(Pipeline, Result<Ready, Problems>)> {
    tokio::task::spawn_blocking(move || {
        if refresh_dns {
            pipeline.refresh_dns();
        }
        let ready = pipeline.update(&redirector_core::resolve::SystemDns);
        (pipeline, ready)
    })
    .await
    .context("the configuration pipeline failed; stopping (the datapath stays attached)")
}

/// The running agent's datapath and what it needs to reload.
struct Node {
    /// The pipeline, with the generation in force (taken while a read runs).
    pipeline: Option<Pipeline>,
    cgroup: PathBuf,
    attach_level: u32,
    datapath: Datapath,
    generation: u64,
    state: metrics::Shared,
    /// Workloads are pods: one whose cgroup is not where expected is looked for.
    pods: bool,
    bpffs: PathBuf,
    /// The workload names last written for `status`.
    names: Option<BTreeMap<u64, String>>,
}

/// Writes what each workload cgroup in force is, for `status`, unless it
/// is what was `written` last.
fn record_names(bpffs: &Path, desired: &Desired, written: &mut Option<BTreeMap<u64, String>>) {
    if written.as_ref() == Some(&desired.names) {
        return;
    }
    match crate::status::write_names(bpffs, &desired.names) {
        Ok(()) => *written = Some(desired.names.clone()),
        Err(e) => warn!("recording workload names for `redirector status`: {e:#}"),
    }
}

impl Node {
    /// Reads what changed and applies the next generation. On a rejected
    /// config, or a generation the kernel cannot take, nothing is written (or
    /// all of it is undone) and the pipeline stays at the generation in force.
    /// Returns whether the config uses hostnames (`None` when nothing was applied).
    async fn reload(&mut self, cause: &str, refresh_dns: bool) -> anyhow::Result<Option<bool>> {
        let started = Instant::now();
        let generation = self.generation;
        let failed = |state: &metrics::Shared| state.lock().unwrap_or_else(|e| e.into_inner()).reloads_failed += 1;
        let pipeline = self.pipeline.take().context("a reload is already running")?;
        let (mut pipeline, ready) = build(pipeline, refresh_dns).await?;
        let ready = match ready {
            Ok(ready) => ready,
            Err(problems) => {
                self.pipeline = Some(pipeline);
                failed(&self.state);
                for p in problems.errors() {
                    error!("{p}");
                }
                warn!(generation, "{cause}: configuration rejected; generation {generation} stays in force");
                return Ok(None);
            }
        };
        let stats = ready.stats;
        let uses_dns = pipeline.engine().has_hostnames();
        // The compiler's tables are the kernel's: it commits exactly what the kernel took.
        let installed = pipeline.compiler();
        let desired = desired_state(ready, installed, &self.cgroup, self.attach_level, self.pods);
        // The slots the kernel's old tables counted in, for the metrics.
        let before: Tables = desired
            .as_ref()
            .map(|d| d.routes.removed.iter().chain(d.routes.tables.keys()).filter_map(|k| Some((*k, installed.table(k)?))).collect())
            .unwrap_or_default();
        let mut kernel_time = std::time::Duration::ZERO;
        let applied = desired.and_then(|desired| {
            let writing = Instant::now();
            let diff = self.datapath.apply(&desired);
            kernel_time = writing.elapsed();
            Ok((diff?, desired))
        });
        let outcome = match applied {
            Ok((diff, desired)) => {
                pipeline.commit(&desired.routes);
                record_names(&self.bpffs, &desired, &mut self.names);
                let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
                s.fill = metrics::Fill { routes: self.datapath.routes(), table_chunks: self.datapath.table_chunks(), workloads: desired.workloads.len() };
                if diff.is_empty() {
                    // No route changed, but workload cgroups may have.
                    debug!(generation, "{cause}: nothing changed");
                } else {
                    self.generation += 1;
                    let generation = self.generation;
                    s.reloads_ok += 1;
                    s.generation = generation;
                    s.slots.update(&before, &desired.routes, |key| service_of(&pipeline, key));
                    drop(s);
                    info!(
                        generation,
                        routes = desired.routes.routes,
                        written = diff.upsert.len(),
                        removed = diff.remove.len(),
                        events = stats.events,
                        resolved = stats.resolve.resolved,
                        read_us = stats.read_time.as_micros() as u64,
                        resolve_us = stats.resolve_time.as_micros() as u64,
                        compile_us = stats.compile_time.as_micros() as u64,
                        kernel_us = kernel_time.as_micros() as u64,
                        micros = started.elapsed().as_micros() as u64,
                        "{cause}: applied generation {generation}"
                    );
                }
                Some(uses_dns)
            }
            Err(e) => {
                failed(&self.state);
                error!(generation, "{cause}: applying failed, generation {generation} stays in force: {e:#}");
                None
            }
        };
        self.pipeline = Some(pipeline);
        give_back_memory();
        Ok(outcome)
    }
}

/// Gives what a reload freed (parsed text, the generation's tables) back to
/// the system now, not whenever the allocator gets to it; off the runtime
/// thread, since it walks the heap.
fn give_back_memory() {
    tokio::task::spawn_blocking(|| {
        // SAFETY: malloc_trim only releases free heap memory.
        unsafe { nix::libc::malloc_trim(0) };
    });
}

/// The destination service of a table key, for the metrics' labels.
fn service_of(pipeline: &Pipeline, key: &redirector_common::ServiceKey) -> redirector_core::model::Text {
    pipeline.route_of(key).map(|r| r.service.clone()).unwrap_or_default()
}

/// Watches the config (a directory recursively; a file through its
/// directory, since editors replace files by renaming) and signals changes:
/// `true` when the event completes a file (renamed into place, closed after
/// writing, removed), `false` while it may still be written.
fn watch(config: &Path, changes: mpsc::UnboundedSender<bool>) -> anyhow::Result<notify::RecommendedWatcher> {
    use notify::{
        EventKind,
        Watcher as _,
        event::{AccessKind, AccessMode, ModifyKind, RenameMode},
    };
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else {
            let _ = changes.send(false);
            return;
        };
        let complete = match event.kind {
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
            EventKind::Access(_) => return,
            EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Both)) | EventKind::Remove(_) => true,
            _ => false,
        };
        let _ = changes.send(complete);
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

/// The kernel state for `ready` (a generation against the tables
/// `installed`) with hooks attached at `cgroup`: workload
/// cgroup paths become cgroup ids (a cgroup v2 directory's inode number).
/// Workloads whose cgroup does not exist yet are reported and skipped; with
/// `pods`, a pod's cgroup not where its driver puts it is looked for first.
fn desired_state(ready: Ready, installed: &impl InForce, cgroup: &Path, attach_level: u32, pods: bool) -> anyhow::Result<Desired> {
    use std::os::unix::fs::MetadataExt as _;
    let class_ids = ready.generation.class_ids.clone();
    let transition = Transition::between(installed, &ready.generation);
    let mut desired = Desired { routes: ready.generation, transition, ..Default::default() };
    let mut scan = None;
    let mut missing = Vec::new();
    for w in ready.workloads.iter().filter(|w| class_ids[w.class as usize] != BASE_CLASS) {
        let dir_of = |relative: &Path| std::fs::metadata(cgroup.join(relative)).ok().filter(|m| m.is_dir());
        let mut relative = w.cgroup.clone();
        let mut found = dir_of(&relative);
        if found.is_none()
            && pods
            && let Some(elsewhere) = scan.get_or_insert_with(|| crate::pods::Scan::new(cgroup)).find(&w.cgroup)
        {
            relative = elsewhere.to_path_buf();
            found = dir_of(&relative);
        }
        let dir = cgroup.join(&relative);
        match found {
            Some(meta) => {
                let depth = relative.components().count() as u32;
                if depth > MAX_WORKLOAD_DEPTH {
                    bail!("{}: cgroup {} is {depth} levels below --cgroup; at most {MAX_WORKLOAD_DEPTH} are searched", w.dataplane, dir.display());
                }
                desired.workloads.insert(meta.ino(), class_ids[w.class as usize]);
                let name = match &w.namespace {
                    Some(ns) if pods => format!("pod {ns}/{}", w.dataplane.strip_prefix("Dataplane/").unwrap_or(&w.dataplane)),
                    _ => w.dataplane.to_string(),
                };
                desired.names.insert(meta.ino(), name);
                desired.settings.max_depth = desired.settings.max_depth.max(depth);
            }
            None if pods => missing.push(w.dataplane.as_str()),
            None => warn!("{}: cgroup {} does not exist; its processes get the base routes", w.dataplane, dir.display()),
        }
    }
    if !missing.is_empty() {
        // Usual for a pod just scheduled: its cgroup is picked up when created.
        info!("{} pods have no cgroup yet (routed as soon as it is created): {}", missing.len(), missing.join(", "));
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
