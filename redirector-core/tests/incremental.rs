//! Incremental resolution equals resolution from scratch: random sequences
//! of upserts and deletions (across two sources, so duplicates come and go)
//! fed to one engine, checked after random updates against a fresh engine
//! built from the store's resources alone.

use proptest::prelude::*;
use redirector_core::{
    model::load_str,
    resolve::{Engine, NoDns, Resolution, ResolvedRoute},
    store::{Event, Key, Resource, file_source, resources},
};
use std::path::Path;

/// A route's `to` entry: target, port, and backends as (service, weight).
type ToSpec = (u8, u8, Vec<(u8, u8)>);

/// One resource of a small universe where names, addresses, tags and
/// cgroups collide often.
#[derive(Clone, Debug)]
enum Spec {
    Service { i: u8, vip: u8, protocol: bool, selects: u8, port_name: bool },
    Dataplane { i: u8, serves: u8, healthy: bool, cgroup: Option<u8>, outbound: Option<u8>, inbounds: bool, mesh_other: bool },
    Route { i: u8, top: u8, on: u8, to: Vec<ToSpec> },
    Http { i: u8, top: u8, target: u8 },
    External { i: u8, vip: u8 },
    MultiZone { i: u8, vip: u8, selects: u8 },
}

fn yaml(spec: &Spec) -> String {
    match spec {
        Spec::Service { i, vip, protocol, selects, port_name } => {
            let protocol = if *protocol { ", appProtocol: http" } else { "" };
            let name = if *port_name { ", name: main" } else { "" };
            format!(
                "type: MeshService\nname: svc-{i}\nlabels: {{group: g{}}}\nspec:\n  selector: {{dataplaneTags: {{app: app-{selects}}}}}\n  ports: [{{port: 80, targetPort: 8080{protocol}{name}}}]\nstatus:\n  vips: [{{ip: 10.0.0.{vip}}}]\n",
                i % 2
            )
        }
        Spec::Dataplane { i, serves, healthy, cgroup, outbound, inbounds, mesh_other } => {
            let labels = cgroup.map(|c| format!("labels: {{redirector.io/cgroup: w{c}, tier: t{}}}\n", i % 2)).unwrap_or_default();
            let mesh = if *mesh_other { "mesh: other\n" } else { "" };
            let health = if *healthy { "" } else { ", health: {ready: false}" };
            let inbound = if *inbounds {
                format!("  inbound: [{{port: 8080, tags: {{kuma.io/service: svc-{serves}, app: app-{serves}}}{health}}}]\n")
            } else {
                String::new()
            };
            let outbound = outbound
                .map(|o| format!("  outbound: [{{port: {}, tags: {{kuma.io/service: svc-{}}}}}]\n", 7000 + u16::from(o % 2), o % 4))
                .unwrap_or_default();
            format!("type: Dataplane\nname: dp-{i}\n{mesh}{labels}networking:\n  address: 10.1.0.{i}\n{inbound}{outbound}")
        }
        Spec::Route { i, top, on, to } => {
            let top = match top % 5 {
                0 | 1 => "{kind: Mesh}".to_string(),
                2 => format!("{{kind: Dataplane, name: dp-{on}}}"),
                3 => format!("{{kind: MeshService, name: svc-{on}}}"),
                _ => format!("{{kind: Dataplane, labels: {{tier: t{}}}}}", on % 2),
            };
            let entries: Vec<String> = to
                .iter()
                .map(|(kind, target, backends)| {
                    let target = match kind % 4 {
                        0 | 1 => format!("{{kind: MeshService, name: svc-{target}}}"),
                        2 => format!("{{kind: MeshService, labels: {{group: g{}}}}}", target % 2),
                        _ => format!("{{kind: MeshService, name: svc-{target}, sectionName: main}}"),
                    };
                    let refs: Vec<String> =
                        backends.iter().map(|(b, w)| format!("{{kind: MeshService, name: svc-{b}, port: 80, weight: {w}}}")).collect();
                    format!("{{targetRef: {target}, rules: [{{default: {{backendRefs: [{}]}}}}]}}", refs.join(", "))
                })
                .collect();
            format!("type: MeshTCPRoute\nname: rt-{i}\nspec:\n  targetRef: {top}\n  to: [{}]\n", entries.join(", "))
        }
        Spec::Http { i, top, target } => {
            let top = if top % 2 == 0 { "{kind: Mesh}".to_string() } else { format!("{{kind: Dataplane, name: dp-{}}}", top % 4) };
            format!(
                "type: MeshHTTPRoute\nname: http-{i}\nspec:\n  targetRef: {top}\n  to:\n    - targetRef: {{kind: MeshService, name: svc-{target}}}\n      rules:\n        - matches: [{{path: {{type: PathPrefix, value: /}}}}]\n          default: {{backendRefs: [{{kind: MeshService, name: svc-0, port: 80}}]}}\n"
            )
        }
        Spec::External { i, vip } => format!(
            "type: MeshExternalService\nname: ext-{i}\nspec: {{match: {{type: HostnameGenerator, port: 80, protocol: tcp}}, endpoints: [{{address: 192.0.2.{i}, port: 80}}]}}\nstatus: {{vip: {{ip: 10.0.0.{vip}}}}}\n"
        ),
        Spec::MultiZone { i, vip, selects } => format!(
            "type: MeshMultiZoneService\nname: mzs-{i}\nspec:\n  selector: {{meshService: {{matchLabels: {{group: g{}}}}}}}\n  ports: [{{port: 80, appProtocol: tcp}}]\nstatus:\n  vips: [{{ip: 10.0.0.{vip}}}]\n",
            selects % 2
        ),
    }
}

fn spec() -> impl Strategy<Value = Spec> {
    let backends = prop::collection::vec((0u8..5, 0u8..4), 0..3);
    prop_oneof![
        3 => (0u8..5, 0u8..7, any::<bool>(), 0u8..5, any::<bool>())
            .prop_map(|(i, vip, protocol, selects, port_name)| Spec::Service { i, vip, protocol, selects, port_name }),
        4 => (0u8..7, 0u8..5, prop::bool::weighted(0.8), prop::option::weighted(0.5, 0u8..3), prop::option::weighted(0.3, 0u8..4), prop::bool::weighted(0.85), prop::bool::weighted(0.1))
            .prop_map(|(i, serves, healthy, cgroup, outbound, inbounds, mesh_other)| Spec::Dataplane { i, serves, healthy, cgroup, outbound, inbounds, mesh_other }),
        4 => (0u8..6, 0u8..5, 0u8..7, prop::collection::vec((0u8..4, 0u8..5, backends), 1..3))
            .prop_map(|(i, top, on, to)| Spec::Route { i, top, on, to }),
        1 => (0u8..2, 0u8..4, 0u8..5).prop_map(|(i, top, target)| Spec::Http { i, top, target }),
        1 => (0u8..2, 0u8..8).prop_map(|(i, vip)| Spec::External { i, vip }),
        1 => (0u8..2, 0u8..8, 0u8..2).prop_map(|(i, vip, selects)| Spec::MultiZone { i, vip, selects }),
    ]
}

/// One step: a source holds a resource now, or holds nothing of a
/// resource's key any more; then maybe an update.
#[derive(Clone, Debug)]
struct Step {
    source: bool,
    spec: Spec,
    delete: bool,
    update: bool,
}

fn step() -> impl Strategy<Value = Step> {
    (any::<bool>(), spec(), prop::bool::weighted(0.25), prop::bool::weighted(0.3))
        .prop_map(|(source, spec, delete, update)| Step { source, spec, delete, update })
}

fn resource(file: &Path, spec: &Spec) -> Resource {
    let (config, problems) = load_str(file, &yaml(spec));
    let mut all: Vec<Resource> = resources(&config).collect();
    assert_eq!(all.len(), 1, "{}\n{problems:?}", yaml(spec));
    all.remove(0)
}

fn fresh(engine: &Engine) -> (Resolution, Vec<String>) {
    let mut scratch = Engine::from_config(&engine.store().to_config());
    scratch.update(&NoDns);
    (scratch.resolution(), scratch.problems().iter().map(|p| p.to_string()).collect())
}

/// The routes each workload (and the base class) gets, without explanations.
fn routes_seen(resolution: &Resolution) -> Vec<(String, Vec<ResolvedRoute>)> {
    let unexplained = |class: usize| {
        let mut routes = resolution.classes[class].routes.clone();
        routes.iter_mut().for_each(|r| r.why.clear());
        routes
    };
    let mut seen = vec![(String::new(), unexplained(0))];
    seen.extend(resolution.workloads.iter().map(|w| (w.dataplane.to_string(), unexplained(w.class as usize))));
    seen
}

fn current(engine: &Engine) -> (Resolution, Vec<String>) {
    (engine.resolution(), engine.problems().iter().map(|p| p.to_string()).collect())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 600, ..ProptestConfig::default() })]

    #[test]
    fn any_event_sequence_resolves_as_from_scratch(steps in prop::collection::vec(step(), 1..40)) {
        let mut engine = Engine::new();
        // The agent's engine: the same routes, without their explanations.
        let mut terse = Engine::without_explanations();
        for (n, s) in steps.iter().enumerate() {
            let file = Path::new(if s.source { "b.yaml" } else { "a.yaml" });
            let r = resource(file, &s.spec);
            let event = if s.delete { Event::delete(file_source(file), Key::of(r.origin())) } else { Event::upsert(file_source(file), r) };
            terse.apply(event.clone());
            engine.apply(event);
            if s.update || n + 1 == steps.len() {
                engine.update(&NoDns);
                terse.update(&NoDns);
                let (got, want) = (current(&engine), fresh(&engine));
                prop_assert_eq!(&got.1, &want.1, "problems after step {}", n);
                prop_assert_eq!(&got.0, &want.0, "resolution after step {}", n);
                // Classes may merge where routes differed only in their explanation.
                prop_assert_eq!(routes_seen(&terse.resolution()), routes_seen(&got.0), "terse routes after step {}", n);
                prop_assert_eq!(&current(&terse).1, &got.1, "terse problems after step {}", n);
            }
        }
    }
}

#[test]
fn an_unchanged_resource_resolves_nothing_again() {
    let mut engine = Engine::new();
    let file = Path::new("a.yaml");
    for i in 0..5 {
        let spec = Spec::Service { i, vip: i, protocol: false, selects: i, port_name: false };
        engine.apply(Event::upsert(file_source(file), resource(file, &spec)));
    }
    let route = Spec::Route { i: 0, top: 0, on: 0, to: vec![(0, 1, vec![(2, 1), (3, 1)])] };
    engine.apply(Event::upsert(file_source(file), resource(file, &route)));
    let first = engine.update(&NoDns);
    assert_eq!(first.resolved, 5);
    engine.apply(Event::upsert(file_source(file), resource(file, &route)));
    assert_eq!(engine.update(&NoDns).resolved, 0, "the same route again changes nothing");
    let edited = Spec::Route { i: 0, top: 0, on: 0, to: vec![(0, 1, vec![(2, 3), (3, 1)])] };
    engine.apply(Event::upsert(file_source(file), resource(file, &edited)));
    assert_eq!(engine.update(&NoDns).resolved, 1, "an edit of one route resolves only its destination");
}
