//! Arbitrary bytes through the whole pure pipeline: `plan::build_str` reads
//! (YAML, both resource forms), validates, resolves and compiles them.
//!
//! Must hold for every input: no panic, no hang; a failure reports at least
//! one error and every problem names the input file; a plan's kernel tables
//! are well formed and agree with the resolution they were compiled from
//! (each table's alias thresholds are at most its total weight, its
//! backend count is the number of backend slots, and the alias table gives
//! every backend exactly its weight's share).

#![no_main]

use libfuzzer_sys::fuzz_target;
use redirector_core::{
    compile::{self, AliasTable, Table},
    model::Severity,
    plan::{self, Plan},
};
use redirector_common::{BASE_CLASS, MAX_ROUTES};
use std::path::Path;

const FILE: &str = "fuzz.yaml";

fuzz_target!(|data: &[u8]| {
    // Invalid UTF-8 cannot reach `build_str` (files are checked for UTF-8 by
    // the loader); replacing it keeps the rest of the input useful.
    let text = String::from_utf8_lossy(data);
    match plan::build_str(Path::new(FILE), &text) {
        Ok(plan) => check_plan(&plan),
        Err(problems) => {
            assert!(problems.has_errors(), "Err without an error: {problems:?}");
            for p in &problems.0 {
                assert_eq!(p.file, Path::new(FILE), "problem names another file: {p:?}");
                let shown = p.to_string();
                let shown = shown.strip_prefix("warning: ").unwrap_or(&shown);
                assert!(shown.starts_with(FILE), "problem does not start with the file: {shown}");
            }
        }
    }
});

fn check_plan(plan: &Plan) {
    assert!(plan.warnings.iter().all(|w| w.severity == Severity::Warning), "a plan carries an error");
    assert!(plan.tables.len() <= MAX_ROUTES as usize);
    for (key, table) in &plan.tables {
        check_table(table).unwrap_or_else(|e| panic!("table {key:?}: {e}: {table:?}"));
    }
    // Every table is what its route compiles to; the base class has a table
    // for each destination, other classes only where they differ from it.
    let mut classes = plan.resolution.classes.iter();
    if let Some(base) = classes.next() {
        for route in &base.routes {
            let key = compile::service_key(BASE_CLASS, route.vip, route.port);
            let table = plan.tables.get(&key).unwrap_or_else(|| panic!("no base table for {key:?}"));
            check_route_table(route, table);
        }
    }
    for class in classes {
        for route in &class.routes {
            let own = compile::service_key(class.id, route.vip, route.port);
            let base = compile::service_key(BASE_CLASS, route.vip, route.port);
            let table = plan.tables.get(&own).or_else(|| plan.tables.get(&base));
            let table = table.unwrap_or_else(|| panic!("class {}: no table for {own:?}", class.id));
            check_route_table(route, table);
        }
    }
    // The reports render for every class.
    plan.render_table(None).expect("plan table");
    plan.render_json(None).expect("plan json");
    let _ = plan.summary_lines();
}

/// Layout invariants of one table, as the BPF program relies on them.
fn check_table(table: &Table) -> Result<(), String> {
    let h = &table.header;
    let n = table.backends.len();
    if h.backend_count as usize != n {
        return Err(format!("backend_count {} != {n} backend slots", h.backend_count));
    }
    if n == 0 && (h.total_weight != 0 || !table.endpoints.is_empty()) {
        return Err("a table without backends has a weight or endpoints".into());
    }
    let entries = 1 + n + table.endpoints.len();
    for (i, b) in table.backends.iter().enumerate() {
        if b.threshold > h.total_weight {
            return Err(format!("backend {i}: threshold {} > total weight {}", b.threshold, h.total_weight));
        }
        if b.alias as usize >= n {
            return Err(format!("backend {i}: alias {} out of range", b.alias));
        }
        let (first, count) = (b.first_endpoint as usize, b.endpoint_count as usize);
        if first < 1 + n || first + count > entries {
            return Err(format!("backend {i}: endpoints {first}+{count} outside 1+{n}..{entries}"));
        }
    }
    Ok(())
}

/// `table` is the compilation of `route`, and its alias table reproduces the
/// route's weights exactly.
fn check_route_table(route: &redirector_core::resolve::ResolvedRoute, table: &Table) {
    let compiled = compile::compile_route(route).expect("a plan's routes compile");
    assert_eq!(&compiled, table, "table differs from its route's compilation");
    let weights: Vec<u64> = route.backends.iter().map(|b| u64::from(b.weight)).collect();
    let total: u64 = weights.iter().sum();
    if total == 0 {
        assert!(table.backends.is_empty(), "all-zero weights but backend slots");
        return;
    }
    assert_eq!(u64::from(table.header.total_weight), total, "total weight");
    let alias = AliasTable {
        thresholds: table.backends.iter().map(|b| b.threshold).collect(),
        aliases: table.backends.iter().map(|b| b.alias).collect(),
        total: table.header.total_weight,
    };
    let n = weights.len() as u64;
    let expected: Vec<u64> = weights.iter().map(|w| w * n).collect();
    assert_eq!(alias.exact_shares(), expected, "alias table shares differ from the weights");
}
