//! The Kubernetes source's cost, as `run --kubernetes` pays it: N Services
//! (each with an EndpointSlice of two endpoints on other nodes), N
//! MeshTCPRoutes and 100 pods of this node, listed once (printed: the
//! conversion and the first generation), then one EndpointSlice changed
//! (an endpoint moves, as in a rollout) and the next generation computed.
//! At 10,000 and 100,000 Services.
//!
//! `cargo bench -p redirector-core --bench cluster`; `CLUSTER_SIZES=10000`
//! for one size.

use criterion::{Criterion, criterion_group, criterion_main};
use redirector_core::{
    pipeline::Pipeline,
    resolve::NoDns,
    source::kubernetes::{CgroupDriver, Cluster, ClusterSource, Inbox, Kind, Update},
};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

fn ip(net: u8, i: usize) -> String {
    format!("{net}.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256)
}

fn service(i: usize) -> Value {
    json!({
        "metadata": {"name": format!("s-{i}"), "namespace": "shop", "resourceVersion": "1"},
        "spec": {"clusterIP": ip(10, i), "selector": {"app": format!("s-{i}")}, "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]},
    })
}

fn slice(i: usize, moved: bool) -> Value {
    let endpoints: Vec<Value> = (0..2).map(|e| json!({"addresses": [ip(11 + e + 2 * moved as u8, i)], "nodeName": "node-2", "conditions": {"ready": true}})).collect();
    json!({
        "metadata": {"name": format!("s-{i}-abcde"), "namespace": "shop", "labels": {"kubernetes.io/service-name": format!("s-{i}")}, "resourceVersion": "1"},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": endpoints,
    })
}

fn route(i: usize) -> Value {
    let to = |j: usize, w: u32| json!({"kind": "MeshService", "name": format!("s-{j}"), "port": 80, "weight": w});
    json!({
        "apiVersion": "kuma.io/v1alpha1", "kind": "MeshTCPRoute",
        "metadata": {"name": format!("r-{i}"), "namespace": "shop", "labels": {"kuma.io/mesh": "default"}},
        "spec": {"targetRef": {"kind": "Mesh"}, "to": [{"targetRef": {"kind": "MeshService", "name": format!("s-{i}")}, "rules": [{"default": {"backendRefs": [to(i + 1, 90), to(i + 2, 10)]}}]}]},
    })
}

fn pod(i: usize, services: usize) -> Value {
    json!({
        "metadata": {"name": format!("p-{i}"), "namespace": "shop", "uid": format!("0b5f2a4e-7c1d-4d2b-9d8e-{i:012}"), "labels": {"app": format!("s-{}", i * (services / 100))}},
        "spec": {"nodeName": "node-1", "containers": [{"name": "app", "ports": [{"containerPort": 8080}]}]},
        "status": {"phase": "Running", "podIP": ip(12, i), "qosClass": "Burstable", "containerStatuses": [{"name": "app", "ready": true}]},
    })
}

/// The i-th object of a kind, if there is one.
type Nth<'a> = Box<dyn Fn(usize) -> Option<Value> + 'a>;

/// This process's resident memory (the bench holds what the agent holds).
fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok()).unwrap_or(0.0);
    kib / 1024.0
}

/// Heap bytes in use (glibc), in MiB.
fn heap_mib() -> f64 {
    // SAFETY: mallinfo2 only reads the allocator's statistics.
    let info = unsafe { libc::mallinfo2() };
    info.uordblks as f64 / (1024.0 * 1024.0)
}

/// Lists everything once, as the watchers report it.
fn list(inbox: &Inbox, services: usize) {
    let kinds: [(Kind, Nth<'_>); 4] = [
        (Kind::Pod, Box::new(|i| (i < 100).then(|| pod(i, services)))),
        (Kind::Service, Box::new(|i| Some(service(i)))),
        (Kind::EndpointSlice, Box::new(|i| Some(slice(i, false)))),
        (Kind::Kuma("MeshTCPRoute".into()), Box::new(|i| (i + 2 < services).then(|| route(i)))),
    ];
    for (kind, object) in kinds {
        inbox.push(Update::Listing(kind.clone()));
        for i in 0..services {
            if let Some(o) = object(i) {
                inbox.push(Update::Listed(kind.clone(), o));
            }
        }
        inbox.push(Update::ListDone(kind));
    }
}

fn cluster(c: &mut Criterion) {
    let sizes: Vec<usize> = std::env::var("CLUSTER_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![10_000, 100_000]);
    let mut group = c.benchmark_group("one changed EndpointSlice");
    group.sample_size(100).measurement_time(Duration::from_secs(20));
    for services in sizes {
        let (source, inbox) = ClusterSource::new(Cluster::new(CgroupDriver::Systemd, "node-1"));
        let mut pipeline = Pipeline::with_source(Box::new(source));
        list(&inbox, services);
        let started = Instant::now();
        let first = pipeline.update(&NoDns).expect("the bench cluster is valid");
        let took = started.elapsed();
        let routes = first.generation.routes;
        pipeline.commit(&first.generation);
        drop(first);
        // SAFETY: malloc_trim only releases free heap memory.
        unsafe { libc::malloc_trim(0) };
        println!("{services} services: listed, converted, resolved and compiled in {:.2} s ({routes} routes); RSS {:.0} MiB (heap in use {:.0} MiB)", took.as_secs_f64(), rss_mib(), heap_mib());
        let mut moved = false;
        group.bench_function(format!("{services} services"), |b| {
            b.iter(|| {
                moved = !moved;
                inbox.push(Update::Applied(Kind::EndpointSlice, slice(services / 2, moved)));
                let ready = pipeline.update(&NoDns).unwrap();
                assert!(!ready.generation.tables.is_empty(), "the slice's service changed");
                pipeline.commit(&ready.generation);
                ready.generation.tables.len()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, cluster);
criterion_main!(benches);
