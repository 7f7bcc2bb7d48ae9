//! Stable class ids and the order of a reload (`compile::Compiler`,
//! `compile::Transition`), checked by simulating the kernel's lookups after
//! every single map write of random sequences of configurations.
//!
//! The kernel's view for a workload is: its class from `WORKLOADS` (none:
//! the base class), then `ROUTES` under that class, falling back to the base
//! class. A connect at any moment must get, for each destination, the route
//! its workload had before the reload or the one it has after it.

use proptest::prelude::*;
use redirector_common::{BASE_CLASS, ServiceKey};
use redirector_core::{
    compile::{Compiler, Generation, Table, Tables, Transition, compile_resolution, compile_route, service_key},
    resolve::{Class, Resolution, ResolvedBackend, ResolvedRoute, Workload},
};
use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, SocketAddr},
};

/// One configuration: per destination, the route variant of the base class
/// and of each workload.
#[derive(Clone, Debug)]
struct Config {
    base: Vec<u8>,
    workloads: Vec<Vec<u8>>,
}

fn vip(d: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, d as u8))
}

fn route(d: usize, variant: u8) -> ResolvedRoute {
    ResolvedRoute {
        mesh: "default".into(),
        service: format!("MeshService/s{d}").into(),
        vip: vip(d),
        port: 80,
        app_protocol: None,
        policy: None,
        backends: vec![ResolvedBackend {
            name: format!("b{variant}").into(),
            weight: 1 + u32::from(variant),
            endpoints: [SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 1, variant, 1)), 8000)].into(),
        }],
        why: vec![],
    }
}

/// The resolution `resolve` would give: workloads with the same routes share
/// a class, those with the base routes get the base class.
fn resolution(config: &Config) -> Resolution {
    let routes = |variants: &[u8]| variants.iter().enumerate().map(|(d, &v)| route(d, v)).collect::<Vec<_>>();
    let mut classes = vec![Class { id: BASE_CLASS, routes: routes(&config.base) }];
    let mut variants_of = vec![config.base.clone()];
    let mut workloads = Vec::new();
    for (w, variants) in config.workloads.iter().enumerate() {
        let class = match variants_of.iter().position(|v| v == variants) {
            Some(i) => i as u32,
            None => {
                variants_of.push(variants.clone());
                classes.push(Class { id: classes.len() as u32, routes: routes(variants) });
                classes.len() as u32 - 1
            }
        };
        workloads.push(Workload { dataplane: format!("Dataplane/w{w}").into(), namespace: None, mesh: "default".into(), cgroup: format!("w{w}").into(), class });
    }
    Resolution { classes, workloads }
}

/// What a workload must get for destination `d` under `config`.
fn expected(config: &Config, w: usize, d: usize) -> Table {
    compile_route(&route(d, config.workloads[w][d])).unwrap()
}

/// What the kernel gives workload class `class` for destination `d`, its
/// counter slots aside.
fn lookup(routes: &Tables, class: u32, d: usize) -> Option<Table> {
    let key = service_key(class, vip(d), 80);
    routes.get(&key).or_else(|| routes.get(&ServiceKey { class: BASE_CLASS, ..key })).map(uncounted)
}

fn uncounted(table: &Table) -> Table {
    let mut t = table.clone();
    t.header.counters = 0;
    t.backends.iter_mut().for_each(|b| b.counter = 0);
    t
}

/// Every counter slot of `tables`, with what it counts (key, backend index or
/// `None` for the route's pair).
fn slots(tables: &Tables) -> Vec<(u32, ServiceKey, Option<usize>)> {
    tables
        .iter()
        .flat_map(|(k, t)| {
            [(t.header.counters, *k, None)]
                .into_iter()
                .chain(t.backends.iter().enumerate().map(|(i, b)| (b.counter, *k, Some(i))))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Checks every workload's view of every destination against its old and
/// new routes (`old` is `None` for the first configuration).
fn check(routes: &Tables, workloads: &[u32], old: Option<&Config>, new: &Config, step: &str) -> Result<(), TestCaseError> {
    for (w, &class) in workloads.iter().enumerate() {
        for d in 0..new.base.len() {
            let got = lookup(routes, class, d);
            // Before the first generation nothing is routed.
            let before = old.map_or(got.is_none(), |old| got.as_ref() == Some(&expected(old, w, d)));
            let ok = got.as_ref() == Some(&expected(new, w, d)) || before;
            prop_assert!(ok, "{step}: workload {w} (class {class}) destination {d} got {got:?}");
        }
    }
    Ok(())
}

/// Applies `next` to the simulated kernel in the agent's order, checking
/// after every write. Returns the retired keys (deleted later).
fn apply(routes: &mut Tables, workloads: &mut [u32], next: &Generation, old: Option<&Config>, new: &Config) -> Result<Vec<ServiceKey>, TestCaseError> {
    let t = Transition::between(routes, next);
    let new_class = |w: usize| next.class_ids[resolution(new).workloads[w].class as usize];
    for key in &t.classes {
        routes.insert(*key, Transition::table(next, key).unwrap().clone());
        check(routes, workloads, old, new, "class entries")?;
    }
    for w in 0..workloads.len() {
        if new_class(w) != BASE_CLASS {
            workloads[w] = new_class(w);
            check(routes, workloads, old, new, "switch to a class")?;
        }
    }
    for key in &t.base {
        routes.insert(*key, next.tables[key].clone());
        check(routes, workloads, old, new, "base entries")?;
    }
    for w in 0..workloads.len() {
        if new_class(w) == BASE_CLASS {
            workloads[w] = BASE_CLASS;
            check(routes, workloads, old, new, "switch to the base class")?;
        }
    }
    for key in &t.remove {
        routes.remove(key);
        check(routes, workloads, old, new, "removals")?;
    }
    Ok(t.retire)
}

fn configs() -> impl Strategy<Value = Vec<Config>> {
    (1usize..5, 0usize..6).prop_flat_map(|(dests, workloads)| {
        let config = (prop::collection::vec(0u8..3, dests), prop::collection::vec(prop::collection::vec(0u8..3, dests), workloads))
            .prop_map(|(base, workloads)| Config { base, workloads });
        prop::collection::vec(config, 1..8)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Every generation's tables give every workload exactly its routes, and
    /// during each reload every write leaves every workload seeing its old or
    /// its new route; class ids of classes that went away are never reused.
    #[test]
    fn reloads_never_show_a_workload_another_route(sequence in configs()) {
        let mut compiler = Compiler::new();
        let mut routes = Tables::new();
        let mut workloads = vec![BASE_CLASS; sequence[0].workloads.len()];
        let mut retired_ids = BTreeMap::new();
        let mut old: Option<&Config> = None;
        for (i, config) in sequence.iter().enumerate() {
            let next = compile_resolution(&mut compiler, &resolution(config)).unwrap();
            // The tables in force after it: the previous ones with its changes.
            let mut after = compiler.tables();
            for key in &next.removed {
                after.remove(key);
            }
            after.extend(next.tables.clone());
            prop_assert_eq!(after.len(), next.routes);
            // Counter slots: one use each; a route kept under the same key
            // keeps its slots; released slots were in use and are no more.
            let mut uses = slots(&after);
            uses.sort();
            prop_assert!(uses.windows(2).all(|w| w[0].0 != w[1].0), "a counter slot counts two things: {:?}", uses);
            for (key, table) in &after {
                if let Some(old) = routes.get(key).filter(|_| i > 0) {
                    prop_assert_eq!(old.header.counters, table.header.counters, "route {:?} lost its counters", key);
                }
            }
            let live: Vec<u32> = uses.iter().map(|u| u.0).collect();
            prop_assert!(next.released_counters.iter().all(|s| !live.contains(s)), "released slots still in use");
            for id in next.class_ids.iter().filter(|&&id| id != BASE_CLASS) {
                prop_assert!(!retired_ids.contains_key(id), "generation {i} reuses class id {id} retired in generation {:?}", retired_ids.get(id));
            }
            let retire = apply(&mut routes, &mut workloads, &next, old, config)?;
            for key in retire {
                routes.remove(&key);
                retired_ids.insert(key.class, i);
            }
            prop_assert_eq!(&routes, &after, "generation {} left other entries in ROUTES", i);
            check(&routes, &workloads, None, config, "after the reload")?;
            compiler.commit(&next);
            prop_assert_eq!(compiler.tables(), after);
            old = Some(config);
        }
    }
}

/// A class whose routes did not change keeps its id, whatever else changed.
#[test]
fn an_unchanged_class_keeps_its_id_when_others_come_and_go() {
    let with_a = Config { base: vec![0, 0], workloads: vec![vec![1, 0], vec![2, 0]] };
    let without_a = Config { base: vec![0, 0], workloads: vec![vec![0, 0], vec![2, 0]] };
    let mut compiler = Compiler::new();
    let first = compile_resolution(&mut compiler, &resolution(&with_a)).unwrap();
    compiler.commit(&first);
    let second = compile_resolution(&mut compiler, &resolution(&without_a)).unwrap();
    compiler.commit(&second);
    let class_of = |g: &Generation, c: &Config, w: usize| g.class_ids[resolution(c).workloads[w].class as usize];
    assert_eq!(class_of(&second, &without_a, 1), class_of(&first, &with_a, 1), "b's class id moved");
    assert_eq!(class_of(&second, &without_a, 0), BASE_CLASS);
    let third = compile_resolution(&mut compiler, &resolution(&with_a)).unwrap();
    assert_ne!(class_of(&third, &with_a, 0), class_of(&first, &with_a, 0), "a retired id came back");
    assert_eq!(class_of(&third, &with_a, 1), class_of(&first, &with_a, 1));
}

/// A backend's counter slot follows the backend when the backends are
/// reordered, and a removed backend's slot is released.
#[test]
fn counter_slots_follow_their_backends() {
    let with = |names: &[&str]| {
        let mut r = route(0, 0);
        r.backends = names
            .iter()
            .enumerate()
            .map(|(i, n)| ResolvedBackend { name: (*n).into(), weight: 1 + i as u32, endpoints: [SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 2, 0, i as u8)), 80)].into() })
            .collect();
        Resolution { classes: vec![Class { id: BASE_CLASS, routes: vec![r] }], workloads: vec![] }
    };
    let key = service_key(BASE_CLASS, vip(0), 80);
    let mut compiler = Compiler::new();
    let first = compile_resolution(&mut compiler, &with(&["v1", "v2", "v3"])).unwrap();
    compiler.commit(&first);
    let slot = |g: &Generation, i: usize| g.tables[&key].backends[i].counter;
    let second = compile_resolution(&mut compiler, &with(&["v3", "v1"])).unwrap();
    assert_eq!(slot(&second, 0), slot(&first, 2), "v3 moved and lost its count");
    assert_eq!(slot(&second, 1), slot(&first, 0), "v1 moved and lost its count");
    assert_eq!(second.tables[&key].header.counters, first.tables[&key].header.counters);
    assert_eq!(second.released_counters, vec![slot(&first, 1)], "v2's slot is released");
}
