//! `--metrics ADDR`: Prometheus text format on `/metrics`, plus `/healthz`
//! and `/readyz` (ready once the first configuration is in the kernel, and
//! while the hooks are attached; otherwise 503 with the reason), served by
//! axum (hyper).
//!
//! Connect counts come from the kernel's per-CPU counters, read from the
//! pinned maps at scrape time; the agent contributes reload results and the
//! names that label each destination's backends.

use crate::status;
use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use redirector_common::{MAX_COUNTERS, MAX_ORIGINS, MAX_ROUTES, MAX_TABLE_SLOTS, MAX_WORKLOADS, ORIGINS_FULL, REFUSED};
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
    /// `TABLES` entries (header, backend slots and endpoints of every table).
    pub table_slots: usize,
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
    pub service: Arc<str>,
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
    /// Redirected connects whose dialled address was not recorded.
    OriginsFull,
}

/// What every counter slot of the generation in force counts.
#[derive(Debug, Default)]
pub struct Slots {
    slots: std::collections::HashMap<u32, Slot>,
    /// Backend names, each stored once.
    names: std::collections::HashSet<Arc<str>>,
}

impl Slots {
    /// What `slot` counts.
    pub fn get(&self, slot: &u32) -> Option<&Slot> {
        self.slots.get(slot)
    }

    /// The shared copy of a backend name.
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
        service: impl Fn(&redirector_common::ServiceKey) -> String,
    ) {
        for table in before.values() {
            self.slots.remove(&(table.header.counters + REFUSED));
            self.slots.remove(&(table.header.counters + ORIGINS_FULL));
            for backend in &table.backends {
                self.slots.remove(&backend.counter);
            }
        }
        self.slots.reserve(g.tables.values().map(|t| t.backends.len() + 2).sum());
        for (key, table) in &g.tables {
            let service: Arc<str> = service(key).into();
            let slot = |counts| Slot { key: *key, service: service.clone(), counts };
            self.slots.insert(table.header.counters + REFUSED, slot(Counts::Refused));
            self.slots.insert(table.header.counters + ORIGINS_FULL, slot(Counts::OriginsFull));
            let names = g.backend_names.get(key);
            for (i, backend) in table.backends.iter().enumerate() {
                let name = match names.and_then(|n| n.get(i)) {
                    Some(name) => self.name(name),
                    None => self.name(&format!("#{i}")),
                };
                self.slots.insert(backend.counter, slot(Counts::Backend(name)));
            }
        }
        // Names no slot uses any more.
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
    let origins_full = Family::<Labels, Counter>::default();
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
                Counts::OriginsFull => {
                    origins_full.get_or_create(&labels).inc_by(n);
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
            ("tables", fill.table_slots, MAX_TABLE_SLOTS),
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
    registry.register(
        "connects_origin_unrecorded",
        "Redirected connects whose dialled address was not recorded (ORIGINS full): getpeername() shows the endpoint",
        origins_full,
    );
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
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

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
