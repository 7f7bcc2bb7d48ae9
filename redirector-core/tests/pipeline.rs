//! The agent's incremental pipeline: one changed file costs one changed
//! table, a rejected configuration leaves the generation in force alone and
//! its changes are taken up by the next good one, a generation the kernel
//! did not take is compiled again, and after any of it the tables equal a
//! fresh pipeline's on the same files.

use redirector_common::ServiceKey;
use redirector_core::{
    compile::{Table, Tables},
    pipeline::Pipeline,
    resolve::NoDns,
};
use std::{collections::BTreeMap, path::Path};

fn service(i: u32) -> String {
    format!(
        "--- {{type: MeshService, name: s-{i}, spec: {{selector: {{dataplaneTags: {{app: s-{i}}}}}, ports: [{{port: 80, targetPort: 8080}}]}}, status: {{vips: [{{ip: 10.0.0.{i}}}]}}}}\n--- {{type: Dataplane, name: d-{i}, networking: {{address: 10.1.0.{i}, inbound: [{{port: 8080, tags: {{app: s-{i}}}}}]}}}}\n"
    )
}

fn route(i: u32, w: u32) -> String {
    format!(
        "--- {{type: MeshTCPRoute, name: r-{i}, spec: {{targetRef: {{kind: Mesh}}, to: [{{targetRef: {{kind: MeshService, name: s-{i}}}, rules: [{{default: {{backendRefs: [{{kind: MeshService, name: s-8, port: 80, weight: {w}}}, {{kind: MeshService, name: s-9, port: 80, weight: {}}}]}}}}]}}]}}}}\n",
        100 - w
    )
}

fn write(dir: &Path, name: &str, text: &str) {
    let staging = dir.join(".staging");
    std::fs::write(&staging, text).unwrap();
    std::fs::rename(&staging, dir.join(name)).unwrap();
}

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("redirector-pipeline-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let services: String = (1..10).map(service).collect();
    std::fs::write(dir.join("services.yaml"), services).unwrap();
    for i in 1..8 {
        write(&dir, &format!("route-{i}.yaml"), &route(i, 90));
    }
    dir
}

/// The tables without their counter slots (which depend on history).
fn uncounted(tables: &Tables) -> BTreeMap<ServiceKey, Table> {
    tables
        .iter()
        .map(|(k, t)| {
            let mut t = t.clone();
            t.header.counters = 0;
            t.backends.iter_mut().for_each(|b| b.counter = 0);
            (*k, t)
        })
        .collect()
}

fn fresh(dir: &Path) -> BTreeMap<ServiceKey, Table> {
    let mut p = Pipeline::new(dir);
    let ready = p.update(&NoDns).expect("valid");
    p.commit(&ready.generation);
    uncounted(&p.compiler().tables())
}

#[test]
fn one_changed_file_is_one_changed_table_and_equals_a_fresh_build() {
    let dir = scratch("one");
    let mut p = Pipeline::new(&dir);
    let first = p.update(&NoDns).unwrap();
    assert_eq!(first.generation.tables.len(), 9, "nine services, one table each");
    p.commit(&first.generation);
    write(&dir, "route-3.yaml", &route(3, 50));
    let next = p.update(&NoDns).unwrap();
    assert_eq!(next.stats.read.parsed, 1);
    assert_eq!(next.stats.events, 1);
    assert_eq!(next.stats.resolve.resolved, 1);
    assert_eq!(next.generation.tables.len(), 1);
    assert!(next.generation.removed.is_empty());
    p.commit(&next.generation);
    assert_eq!(uncounted(&p.compiler().tables()), fresh(&dir));
    let again = p.update(&NoDns).unwrap();
    assert!(again.generation.is_empty(), "nothing changed: {:?}", again.generation);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_rejected_config_keeps_the_generation_and_its_changes_come_with_the_next_good_one() {
    let dir = scratch("rejected");
    let mut p = Pipeline::new(&dir);
    let first = p.update(&NoDns).unwrap();
    p.commit(&first.generation);
    // A good edit and a broken file in one read: nothing of it is compiled.
    write(&dir, "route-2.yaml", &route(2, 10));
    write(&dir, "broken.yaml", "--- {type: MeshTCPRoute, name: bad, spec: {to: [{targetRef: {kind: Nonsense}}]}}\n");
    let problems = p.update(&NoDns).expect_err("the broken file is an error");
    assert!(problems.to_string().contains("broken.yaml"), "{problems}");
    assert_eq!(uncounted(&p.compiler().tables()), uncounted(&first.generation.tables), "nothing changed in force");
    std::fs::remove_file(dir.join("broken.yaml")).unwrap();
    let next = p.update(&NoDns).unwrap();
    assert_eq!(next.generation.tables.len(), 1, "route-2's edit, read while the config was broken, is compiled now");
    p.commit(&next.generation);
    assert_eq!(uncounted(&p.compiler().tables()), fresh(&dir));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_generation_the_kernel_did_not_take_is_compiled_again() {
    let dir = scratch("refused");
    let mut p = Pipeline::new(&dir);
    let first = p.update(&NoDns).unwrap();
    p.commit(&first.generation);
    write(&dir, "route-5.yaml", &route(5, 30));
    std::fs::remove_file(dir.join("route-6.yaml")).unwrap();
    let refused = p.update(&NoDns).unwrap();
    assert_eq!(refused.generation.tables.len(), 2, "route-5 edited, s-6 back to its default route");
    // Not committed: the kernel refused it. Nothing changed in the files since.
    let retry = p.update(&NoDns).unwrap();
    assert_eq!(uncounted(&retry.generation.tables), uncounted(&refused.generation.tables));
    p.commit(&retry.generation);
    assert_eq!(uncounted(&p.compiler().tables()), fresh(&dir));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_removed_file_removes_its_resources() {
    let dir = scratch("removed");
    let mut p = Pipeline::new(&dir);
    let first = p.update(&NoDns).unwrap();
    p.commit(&first.generation);
    std::fs::write(dir.join("extra.yaml"), service(20)).unwrap();
    let added = p.update(&NoDns).unwrap();
    assert_eq!(added.generation.tables.len(), 1);
    p.commit(&added.generation);
    std::fs::remove_file(dir.join("extra.yaml")).unwrap();
    let removed = p.update(&NoDns).unwrap();
    assert_eq!(removed.generation.removed.len(), 1);
    assert!(removed.generation.tables.is_empty());
    p.commit(&removed.generation);
    assert_eq!(uncounted(&p.compiler().tables()), fresh(&dir));
    let _ = std::fs::remove_dir_all(&dir);
}
