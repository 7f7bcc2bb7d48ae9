//! The control plane's one-change cost, as the agent pays it: a config
//! directory of N MeshServices (two Dataplanes each) and N MeshTCPRoutes, one
//! route alone in its own file, replaced (renamed into place) with new
//! weights; then the agent's pipeline: the incremental read, the store
//! events, the resolution of what they touch and the next generation. At
//! 10,000 and 100,000 services.
//!
//! `cargo bench -p redirector-core --bench one_change`; `ONE_CHANGE_SIZES=10000`
//! for one size.

use criterion::{Criterion, criterion_group, criterion_main};
use redirector_core::{pipeline::Pipeline, resolve::NoDns};
use std::{fmt::Write as _, path::Path, time::Duration};

/// Services per file (the agent's file size limit is 16 MiB).
const PER_FILE: usize = 5_000;

fn write_config(dir: &Path, services: usize) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    for chunk in 0..services.div_ceil(PER_FILE) {
        let mut y = String::new();
        for i in chunk * PER_FILE..((chunk + 1) * PER_FILE).min(services) {
            let (a, b) = (i / 250, i % 250 + 1);
            let _ = writeln!(
                y,
                "--- {{type: MeshService, name: s-{i}, spec: {{selector: {{dataplaneTags: {{app: s-{i}}}}}, ports: [{{port: 80, targetPort: 8080}}]}}, status: {{vips: [{{ip: 10.{}.{}.{b}}}]}}}}",
                a / 256,
                a % 256
            );
            for e in 0..2 {
                let _ = writeln!(
                    y,
                    "--- {{type: Dataplane, name: d-{i}-{e}, networking: {{address: 11.{}.{}.{b}, inbound: [{{port: 8080, servicePort: {}, tags: {{app: s-{i}}}}}]}}}}",
                    a / 256,
                    a % 256,
                    9000 + e
                );
            }
            if i > 0 {
                let _ = writeln!(y, "{}", route(i, 90));
            }
        }
        std::fs::write(dir.join(format!("chunk-{chunk:03}.yaml")), y).unwrap();
    }
    std::fs::write(dir.join("edited.yaml"), route(0, 90)).unwrap();
}

/// Route `r-i`: s-i split between the next two services.
fn route(i: usize, weight: u32) -> String {
    format!(
        "--- {{type: MeshTCPRoute, name: r-{i}, spec: {{targetRef: {{kind: Mesh}}, to: [{{targetRef: {{kind: MeshService, name: s-{i}}}, rules: [{{default: {{backendRefs: [{{kind: MeshService, name: s-{}, port: 80, weight: {weight}}}, {{kind: MeshService, name: s-{}, port: 80, weight: {}}}]}}}}]}}]}}}}",
        i + 1,
        i + 2,
        100 - weight
    )
}

fn one_change(c: &mut Criterion) {
    let sizes: Vec<usize> = std::env::var("ONE_CHANGE_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![10_000, 100_000]);
    let mut group = c.benchmark_group("one changed route");
    group.sample_size(100).measurement_time(Duration::from_secs(30));
    for services in sizes {
        let dir = std::env::temp_dir().join(format!("redirector-bench-one-change-{services}"));
        write_config(&dir, services);
        let mut pipeline = Pipeline::new(&dir);
        let first = pipeline.update(&NoDns).expect("the bench config is valid");
        pipeline.commit(&first.generation);
        let mut weight = 90;
        group.bench_function(format!("{services} services"), |b| {
            b.iter(|| {
                weight = if weight == 90 { 50 } else { 90 };
                let staging = dir.join(".staging");
                std::fs::write(&staging, route(0, weight)).unwrap();
                std::fs::rename(&staging, dir.join("edited.yaml")).unwrap();
                let ready = pipeline.update(&NoDns).unwrap();
                assert_eq!(ready.generation.tables.len(), 1, "one route changed");
                pipeline.commit(&ready.generation);
                ready.generation.tables.len()
            })
        });
        let _ = std::fs::remove_dir_all(&dir);
    }
    group.finish();
}

criterion_group!(benches, one_change);
criterion_main!(benches);
