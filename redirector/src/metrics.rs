//! `--metrics ADDR`: Prometheus text format on `/metrics`, plus `/healthz`
//! and `/readyz` (ready once the first configuration is in the kernel, and
//! while the hooks are attached; otherwise 503 with the reason), served by
//! axum (hyper).
//!
//! Connect counts come from the kernel's counters, read from the
//! pinned maps at scrape time; the agent contributes reload results and the
//! names that label each destination's backends.

use crate::status;
use redirector_core::model::Text;
use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use redirector_common::{MAX_COUNTERS, MAX_ORIGINS, MAX_ROUTES, MAX_TABLE_CHUNKS, MAX_WORKLOADS, REFUSED};
use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
};
use tokio::net::TcpListener;

/// What the agent reports to the metrics endpoint.
#[derive(Debug, Default)]
pub struct AgentState {
    /// The first configuration is in the kernel and the hooks are attached.
    pub ready: bool,
    /// Why the agent is not ready, once it has been (e.g. its cgroup vanished).
    pub not_ready: Option<String>,
    /// Reloads applied.
    pub reloads_ok: u64,
    /// Reloads rejected (invalid config) or failed to apply.
    pub reloads_failed: u64,
    /// Generation in force.
    pub generation: u64,
    /// What each counter slot of the generation in force counts.
    pub slots: Slots,
    /// Entries the generation in force put in the kernel maps.
    pub fill: Fill,
}

/// Entries of the generation in force, per map (what the agent wrote, so a
/// scrape need not walk the kernel maps).
#[derive(Debug, Default, Clone, Copy)]
pub struct Fill {
    /// `ROUTES` entries (one per class and destination).
    pub routes: usize,
    /// `TABLES` chunks of every table in force (see redirector-common).
    pub table_chunks: usize,
    /// `WORKLOADS` entries.
    pub workloads: usize,
}

/// What one `COUNTERS` slot counts: its table's key (class and
/// destination) and the labels, shared (a route's four slots share its
/// service name; backends of one name share it across routes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    /// The route table's key.
    pub key: redirector_common::ServiceKey,
    /// The destination's service (`MeshService/name`).
    pub service: Text,
    /// Which count.
    pub counts: Counts,
}

/// The counts of a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Counts {
    /// Connects sent to this backend.
    Backend(Arc<str>),
    /// Connects refused for lack of endpoints.
    Refused,
}

/// What every counter slot of the generation in force counts.
///
/// A slot names its table by a small handle, and the table's labels are kept
/// once: at 100,000 routes there are 400,000 slots, and a full label set per
/// slot was a tenth of the agent's memory. Slots are kept as runs: a table's
/// slots are handed out together, so most tables are one run of four.
#[derive(Debug, Default)]
pub struct Slots {
    /// First slot of a run -> the run.
    runs: std::collections::BTreeMap<u32, Run>,
    /// Labels of the tables with slots, by handle; `None`: a free handle.
    tables: Vec<Option<TableLabels>>,
    /// Free handles.
    free: Vec<u32>,
    /// Backend names, each stored once.
    names: std::collections::HashSet<Arc<str>>,
}

/// What a slot's table is called.
#[derive(Debug)]
struct TableLabels {
    key: redirector_common::ServiceKey,
    service: Text,
    backends: Box<[Arc<str>]>,
}

/// Consecutive slots of one table that count consecutive things.
#[derive(Debug, Clone, Copy)]
struct Run {
    /// The table's handle.
    handle: u32,
    /// What the run's first slot counts: [`ROUTE_REFUSED`] or `BACKEND + i`
    /// for backend `i`.
    what: u32,
    /// Slots in the run.
    len: u32,
}

const ROUTE_REFUSED: u32 = 0;
const BACKEND: u32 = 1;

/// A table's slots as runs, each with its first slot, in what-they-count order.
fn runs(table: &redirector_core::compile::Table, handle: u32) -> Vec<(u32, Run)> {
    let slots = [table.header.counters + REFUSED].into_iter().chain(table.backends.iter().map(|b| b.counter));
    let mut runs: Vec<(u32, Run)> = Vec::with_capacity(1);
    for (what, slot) in slots.enumerate() {
        match runs.last_mut() {
            Some((first, run)) if first.checked_add(run.len) == Some(slot) => run.len += 1,
            _ => runs.push((slot, Run { handle, what: what as u32, len: 1 })),
        }
    }
    runs
}

impl Slots {
    /// What `slot` counts.
    pub fn get(&self, slot: &u32) -> Option<Slot> {
        let (first, run) = self.runs.range(..=*slot).next_back()?;
        let offset = slot - first;
        if offset >= run.len {
            return None;
        }
        let (handle, what) = (run.handle, run.what + offset);
        let table = self.tables.get(handle as usize)?.as_ref()?;
        let counts = match what {
            ROUTE_REFUSED => Counts::Refused,
            i => Counts::Backend(table.backends.get((i - BACKEND) as usize)?.clone()),
        };
        Some(Slot { key: table.key, service: table.service.clone(), counts })
    }

    /// The shared copy of a name.
    fn name(&mut self, name: &str) -> Arc<str> {
        if let Some(shared) = self.names.get(name) {
            return shared.clone();
        }
        let shared: Arc<str> = name.into();
        self.names.insert(shared.clone());
        shared
    }

    /// Brings the slots from the tables in `before` (the old versions of the
    /// tables `g` writes or removes) to `g`'s: the old ones' slots go, the
    /// new ones' come, labelled with their destination's service (`service`).
    pub fn update(
        &mut self,
        before: &redirector_core::compile::Tables,
        g: &redirector_core::compile::Generation,
        service: impl Fn(&redirector_common::ServiceKey) -> Text,
    ) {
        for table in before.values() {
            // A table's handle is found through its refused slot.
            let Some(handle) = self.runs.get(&(table.header.counters + REFUSED)).map(|r| r.handle) else { continue };
            for (first, _) in runs(table, handle) {
                self.runs.remove(&first);
            }
            if self.tables[handle as usize].take().is_some() {
                self.free.push(handle);
            }
        }
        let mut new_runs = Vec::with_capacity(g.tables.len());
        let fresh = g.tables.len().saturating_sub(self.free.len());
        if fresh > self.tables.len() / 4 {
            // Many new tables (an install): room for exactly their labels.
            self.tables.reserve_exact(fresh);
        }
        for (key, table) in &g.tables {
            // Not interned: one name per destination (held inline), and the
            // sweep of unused names below would cost every update their number.
            let service = service(key);
            let names = g.backend_names.get(key);
            let backends = (0..table.backends.len())
                .map(|i| match names.and_then(|n| n.get(i)) {
                    Some(name) => self.name(name),
                    None => self.name(&format!("#{i}")),
                })
                .collect();
            let labels = TableLabels { key: *key, service, backends };
            let handle = match self.free.pop() {
                Some(h) => {
                    self.tables[h as usize] = Some(labels);
                    h
                }
                None => {
                    self.tables.push(Some(labels));
                    (self.tables.len() - 1) as u32
                }
            };
            new_runs.extend(runs(table, handle));
        }
        new_runs.sort_unstable_by_key(|(first, _)| *first);
        redirector_core::sorted::upsert(&mut self.runs, new_runs.into_iter(), drop);
        // Names no table uses any more.
        self.names.retain(|n| Arc::strong_count(n) > 1);
    }
}

/// Shared between the agent loop and the HTTP server.
pub type Shared = Arc<Mutex<AgentState>>;

type Labels = Vec<(String, String)>;

/// Renders the metrics text for the datapath pinned under `bpffs`.
pub fn render(state: &AgentState, bpffs: &std::path::Path) -> String {
    let mut registry = Registry::with_prefix("redirector");
    let connects = Family::<Labels, Counter>::default();
    let refused = Family::<Labels, Counter>::default();
    let entries = Family::<Labels, Gauge>::default();
    let capacity = Family::<Labels, Gauge>::default();
    let reloads = Family::<Labels, Counter>::default();
    let generation = Gauge::<i64>::default();
    let ready = Gauge::<i64>::default();
    ready.set(i64::from(state.ready));
    generation.set(state.generation as i64);
    reloads.get_or_create(&vec![("result".into(), "ok".into())]).inc_by(state.reloads_ok);
    reloads.get_or_create(&vec![("result".into(), "failed".into())]).inc_by(state.reloads_failed);
    // Only (route, backend) pairs that counted a connect have a kernel
    // counter; reading just those keeps a scrape small with 100,000 routes.
    // Until this agent's generation is in force the pinned counters may be a
    // previous agent's, which this one cannot name: export none.
    let counts = if state.ready { status::counters(bpffs).ok() } else { None };
    if let Some(counts) = counts {
        for (slot, &n) in &counts {
            // Slots of routes no longer in force are not exported (their
            // counters are deleted once no table names them).
            let Some(slot) = state.slots.get(slot) else { continue };
            let mut labels: Labels = vec![
                ("class".into(), slot.key.class.to_string()),
                ("destination".into(), redirector_core::compile::destination(&slot.key).to_string()),
                ("service".into(), slot.service.to_string()),
            ];
            match &slot.counts {
                Counts::Refused => {
                    refused.get_or_create(&labels).inc_by(n);
                }
                Counts::Backend(name) => {
                    labels.push(("backend".into(), name.to_string()));
                    connects.get_or_create(&labels).inc_by(n);
                }
            }
        }
        let fill = state.fill;
        for (map, used, max) in [
            ("routes", fill.routes, MAX_ROUTES),
            ("tables", fill.table_chunks, MAX_TABLE_CHUNKS),
            ("workloads", fill.workloads, MAX_WORKLOADS),
            ("counters", counts.len(), MAX_COUNTERS),
        ] {
            entries.get_or_create(&vec![("map".into(), map.into())]).set(used as i64);
            capacity.get_or_create(&vec![("map".into(), map.into())]).set(i64::from(max));
        }
        capacity.get_or_create(&vec![("map".into(), "origins".into())]).set(i64::from(MAX_ORIGINS));
    }
    registry.register("connects_redirected", "Connects sent to a backend, per destination and backend", connects);
    registry.register("connects_refused", "Connects refused for lack of endpoints, per destination", refused);
    registry.register("config_reloads", "Configuration reloads, by result", reloads);
    registry.register("config_generation", "Generation of the configuration in force", generation);
    registry.register("ready", "1 once the first configuration is in the kernel", ready);
    registry.register("map_entries", "Entries in use per BPF map (tables: live tables only)", entries);
    registry.register("map_capacity", "Maximum entries per BPF map", capacity);
    let mut out = String::new();
    let _ = encode(&mut out, &registry);
    out
}

/// Serves `/metrics`, `/healthz` and `/readyz` on a bound `listener` until
/// the task is dropped. Binding first (before `ready`) means a client that
/// saw `ready` can connect.
pub async fn serve(listener: TcpListener, state: Shared, bpffs: PathBuf) -> anyhow::Result<()> {
    use axum::{Router, routing::get};
    let app = Router::new()
        .route("/metrics", get(metrics_page))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(Server { state, bpffs: Arc::new(bpffs) });
    axum::serve(listener, app).await.map_err(Into::into)
}

/// What the handlers share.
#[derive(Clone)]
struct Server {
    state: Shared,
    bpffs: Arc<PathBuf>,
}

async fn metrics_page(axum::extract::State(server): axum::extract::State<Server>) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    // Reading the pinned counters is a few syscalls per entry: off the
    // agent's runtime thread.
    let text = tokio::task::spawn_blocking(move || {
        let s = server.state.lock().unwrap_or_else(|e| e.into_inner());
        render(&s, &server.bpffs)
    })
    .await
    .unwrap_or_default();
    ([(axum::http::header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text).into_response()
}

async fn readyz(axum::extract::State(server): axum::extract::State<Server>) -> (axum::http::StatusCode, String) {
    let s = server.state.lock().unwrap_or_else(|e| e.into_inner());
    match (s.ready, &s.not_ready) {
        (true, _) => (axum::http::StatusCode::OK, "ready\n".into()),
        (false, Some(why)) => (axum::http::StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n")),
        (false, None) => (axum::http::StatusCode::SERVICE_UNAVAILABLE, "not ready: the first configuration is not in the kernel yet\n".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redirector_core::{
        compile::{Compiler, Tables, compile_resolution},
        resolve::{BASE_CLASS, Class, Resolution, ResolvedBackend, ResolvedRoute},
    };
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    fn route(vip: u8, backends: &[&str]) -> ResolvedRoute {
        ResolvedRoute {
            mesh: "default".into(),
            service: format!("MeshService/s{vip}").into(),
            vip: std::net::IpAddr::from([10, 0, 0, vip]),
            port: 80,
            app_protocol: None,
            policy: None,
            backends: backends
                .iter()
                .enumerate()
                .map(|(i, b)| ResolvedBackend { name: (*b).into(), weight: 1, endpoints: [std::net::SocketAddr::from(([10, 1, vip, i as u8], 80))].into() })
                .collect(),
            why: Vec::new(),
        }
    }

    fn resolution(routes: Vec<ResolvedRoute>) -> Resolution {
        Resolution { classes: vec![Class { id: BASE_CLASS, routes }], workloads: Vec::new() }
    }

    /// Every slot of `tables`, with what `slots` says it counts.
    fn labelled(slots: &Slots, tables: &Tables) -> Vec<(u32, String, String)> {
        let mut out = Vec::new();
        for table in tables.values() {
            let mut all = vec![table.header.counters + REFUSED];
            all.extend(table.backends.iter().map(|b| b.counter));
            for slot in all {
                let s = slots.get(&slot).expect("every slot of a table in force is known");
                out.push((slot, s.service.to_string(), format!("{:?}", s.counts)));
            }
        }
        out.sort();
        out
    }

    /// Slots follow the tables through a change and a removal: a backend
    /// kept keeps its slot and name, a removed route's slots are gone, and
    /// handles freed by one table serve the next without mixing labels.
    #[test]
    fn slots_follow_their_tables_and_backends() {
        let mut compiler = Compiler::new();
        let mut slots = Slots::default();
        let g1 = compile_resolution(&mut compiler, &resolution(vec![route(1, &["x", "y"]), route(2, &["z"])])).unwrap();
        slots.update(&Tables::new(), &g1, |k| format!("MeshService/s{}", k.addr[3].to_be() & 0xff).into());
        compiler.commit(&g1);
        let first = labelled(&slots, &compiler.tables());
        assert_eq!(first.len(), 5);
        assert!(first.iter().any(|(_, s, c)| s == "MeshService/s1" && c == "Backend(\"y\")"), "{first:?}");
        assert!(first.iter().any(|(_, s, c)| s == "MeshService/s2" && c == "Refused"), "{first:?}");
        let y = first.iter().find(|(_, s, c)| s == "MeshService/s1" && c == "Backend(\"y\")").unwrap().0;
        let s2: Vec<u32> = first.iter().filter(|(_, s, _)| s == "MeshService/s2").map(|x| x.0).collect();

        let g2 = compile_resolution(&mut compiler, &resolution(vec![route(1, &["y", "w"]), route(3, &["v"])])).unwrap();
        let before: Tables = g2.removed.iter().chain(g2.tables.keys()).filter_map(|k| Some((*k, compiler.table(k)?))).collect();
        slots.update(&before, &g2, |k| format!("MeshService/s{}", k.addr[3].to_be() & 0xff).into());
        compiler.commit(&g2);
        let second = labelled(&slots, &compiler.tables());
        assert_eq!(second.len(), 5);
        assert!(second.iter().any(|&(slot, ref s, ref c)| slot == y && s == "MeshService/s1" && c == "Backend(\"y\")"), "{second:?}");
        assert!(second.iter().all(|(_, s, _)| s != "MeshService/s2"), "{second:?}");
        for slot in s2 {
            let reused = second.iter().any(|x| x.0 == slot);
            assert!(reused || slots.get(&slot).is_none(), "slot {slot} of a removed route still counts");
        }
    }

    /// A request head sent in several segments is answered once it is
    /// complete, and the client reads the whole response (no reset).
    #[tokio::test]
    async fn a_head_split_across_segments_is_read_whole() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Shared::default();
        state.lock().unwrap().ready = true;
        let server = tokio::spawn(serve(listener, state, PathBuf::from("/nonexistent")));
        let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
        for part in ["GET ", "/readyz", " HTTP/1.1\r\n", "host: x\r\n", "connection: close\r\n", "\r\n"] {
            client.write_all(part.as_bytes()).await.unwrap();
            client.flush().await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let mut response = String::new();
        client.read_to_string(&mut response).await.unwrap();
        assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
        assert!(response.ends_with("\r\n\r\nready\n"), "{response}");
        server.abort();
    }

    /// `/readyz` says why the agent is not ready; unknown paths are 404.
    #[tokio::test]
    async fn readyz_gives_the_reason_and_unknown_paths_are_not_found() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Shared::default();
        state.lock().unwrap().not_ready = Some("cgroup /x was removed".into());
        let server = tokio::spawn(serve(listener, state, PathBuf::from("/nonexistent")));
        for (path, status, body) in [
            ("/readyz", "HTTP/1.1 503 Service Unavailable\r\n", "not ready: cgroup /x was removed\n"),
            ("/healthz", "HTTP/1.1 200 OK\r\n", "ok\n"),
            ("/nope", "HTTP/1.1 404 Not Found\r\n", ""),
        ] {
            let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
            client.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes()).await.unwrap();
            let mut response = String::new();
            client.read_to_string(&mut response).await.unwrap();
            assert!(response.starts_with(status), "{path}: {response}");
            assert!(response.ends_with(&format!("\r\n\r\n{body}")), "{path}: {response}");
        }
        server.abort();
    }
}
