//! Control-plane cost at node scale: 10,000 MeshServices with 10 endpoints
//! each (100,000 Dataplanes) and 10,000 MeshTCPRoutes, resolved and compiled
//! into kernel tables. Target: well under 1 s per run on a 2-core machine.

use criterion::{Criterion, criterion_group, criterion_main};
use redirector_core::{compile, model, resolve};
use std::{fmt::Write as _, hint::black_box, path::Path, time::Duration};

const SERVICES: usize = 10_000;
const ENDPOINTS: usize = 10;

fn config_text() -> String {
    let mut y = String::with_capacity(64 * 1024 * 1024);
    for i in 0..SERVICES {
        let (a, b) = (i / 250, i % 250);
        let _ = write!(
            y,
            "---\ntype: MeshService\nname: svc-{i}\nspec:\n  selector: {{dataplaneTags: {{app: svc-{i}}}}}\n  ports: [{{port: 80, targetPort: 8080, appProtocol: tcp}}]\nstatus: {{vips: [{{ip: 10.{a}.{b}.1}}]}}\n"
        );
        for e in 0..ENDPOINTS {
            let _ = write!(
                y,
                "---\ntype: Dataplane\nname: svc-{i}-{e}\nnetworking:\n  address: 10.{}.{b}.{}\n  inbound: [{{port: 8080, tags: {{kuma.io/service: svc-{i}, app: svc-{i}}}}}]\n",
                100 + a,
                10 + e
            );
        }
        let _ = write!(
            y,
            "---\ntype: MeshTCPRoute\nname: route-{i}\nspec:\n  targetRef: {{kind: Mesh}}\n  to:\n    - targetRef: {{kind: MeshService, name: svc-{i}}}\n      rules:\n        - default:\n            backendRefs:\n              - {{kind: MeshService, name: svc-{}, port: 80, weight: 90}}\n              - {{kind: MeshService, name: svc-{}, port: 80, weight: 10}}\n",
            (i + 1) % SERVICES,
            (i + 2) % SERVICES
        );
    }
    y
}

fn pipeline(c: &mut Criterion) {
    let text = config_text();
    let (config, problems) = model::load_str(Path::new("bench.yaml"), &text);
    assert!(problems.is_empty(), "{:?}", &problems[..problems.len().min(3)]);
    assert_eq!((config.services.len(), config.dataplanes.len(), config.routes.len()), (SERVICES, SERVICES * ENDPOINTS, SERVICES));

    let mut group = c.benchmark_group("10k services x 10 endpoints, 10k routes");
    group.sample_size(10).measurement_time(Duration::from_secs(20));
    group.bench_function("resolve + compile", |b| {
        b.iter(|| {
            let (resolution, _) = resolve::resolve_with(black_box(&config), &resolve::NoDns);
            let tables = compile::compile(&resolution).expect("compiles");
            assert_eq!(tables.len(), SERVICES);
            tables
        })
    });
    group.bench_function("validate", |b| b.iter(|| black_box(&config).validate()));
    group.finish();
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
