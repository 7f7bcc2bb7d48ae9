//! `redirector_core::plan`: the pure pipeline end to end, from files or text to
//! kernel tables, and its robustness against any input.

mod common;

use common::{
    FILE, dataplane, plan, plan_problems, route, service, t, tempdir, to_backends, triples,
};
use proptest::prelude::*;
use redirector_core::resolve::ResolvedRoute;
use redirector_core::{
    compile::{AliasTable, compile_route, service_key},
    model::Severity,
    plan::{self, Plan},
};
use redirector_common::MAX_ROUTES;
use std::path::Path;

fn base() -> String {
    [
        service(
            "web",
            "{app: web}",
            "[{port: 80, targetPort: 80, name: http}, {port: 443, targetPort: 443}]",
            "[{ip: 10.0.0.1}, {ip: \"fd00::1\"}]",
        ),
        service(
            "api",
            "{app: api}",
            "[{port: 80, targetPort: 80}]",
            "[{ip: 10.0.0.2}]",
        ),
        service(
            "api-v2",
            "{app: api, version: v2}",
            "[{port: 80, targetPort: 80}]",
            "[{ip: 10.0.0.3}]",
        ),
        dataplane(
            "web-1",
            "10.1.0.1",
            "[{port: 80, tags: {app: web}}, {port: 443, tags: {app: web}}]",
        ),
        dataplane("web-2", "fd01::2", "[{port: 80, tags: {app: web}}]"),
        dataplane(
            "api-1",
            "10.1.0.3",
            "[{port: 80, tags: {app: api, version: v1}}]",
        ),
        dataplane(
            "api-2",
            "10.1.0.4",
            "[{port: 80, servicePort: 8080, tags: {app: api, version: v2}}]",
        ),
    ]
    .concat()
}

/// Checks what a successful plan promises: every base route has a table
/// keyed by class 0 and its destination; every other class's route is served
/// by its own table when it differs from the base one, else by the base one;
/// and there is no other table. Every table's alias slots reproduce the
/// route's weights exactly.
fn assert_plan_consistent(plan: &Plan) {
    assert!(
        plan.warnings
            .iter()
            .all(|w| w.severity == Severity::Warning)
    );
    let classes = &plan.resolution.classes;
    assert_eq!(classes[0].id, 0);
    let mut expected_keys = std::collections::BTreeSet::new();
    for class in classes {
        for r in &class.routes {
            let own = service_key(class.id, r.vip, r.port);
            let base = service_key(0, r.vip, r.port);
            let table = match plan.tables.get(&own) {
                Some(table) => {
                    expected_keys.insert(own);
                    table
                }
                None => {
                    assert_ne!(class.id, 0, "base route {}:{} has no table", r.vip, r.port);
                    &plan.tables[&base]
                }
            };
            assert_eq!(*table, compile_route(r).unwrap());
            if class.id != 0 && plan.tables.contains_key(&own) {
                assert_ne!(
                    plan.tables.get(&base),
                    Some(table),
                    "class {} repeats the base table",
                    class.id
                );
            }
            assert_table_matches_route(table, r);
        }
    }
    assert_eq!(
        plan.tables
            .keys()
            .copied()
            .collect::<std::collections::BTreeSet<_>>(),
        expected_keys
    );
    for w in &plan.resolution.workloads {
        assert!(classes.iter().any(|c| c.id == w.class), "{w:?}");
    }
}

fn assert_table_matches_route(table: &redirector_core::compile::Table, r: &ResolvedRoute) {
    let weights: Vec<u32> = r.backends.iter().map(|b| b.weight).collect();
    match AliasTable::new(&weights) {
        None => assert_eq!(table.header.backend_count, 0),
        Some(alias) => {
            assert_eq!(table.header.backend_count as usize, weights.len());
            assert_eq!(table.header.total_weight, alias.total);
            let from_table = AliasTable {
                thresholds: table.backends.iter().map(|b| b.threshold).collect(),
                aliases: table.backends.iter().map(|b| b.alias).collect(),
                total: table.header.total_weight,
            };
            let n = weights.len() as u64;
            let expected: Vec<u64> = weights.iter().map(|&w| u64::from(w) * n).collect();
            assert_eq!(from_table.exact_shares(), expected);
        }
    }
    for (slot, b) in table.backends.iter().zip(&r.backends) {
        let reachable = b
            .endpoints
            .iter()
            .filter(|e| r.vip.is_ipv6() || e.is_ipv4())
            .count();
        assert_eq!(slot.endpoint_count as usize, reachable);
    }
}

#[test]
fn default_routes_end_to_end() {
    let plan = plan(&base());
    assert_plan_consistent(&plan);
    assert!(plan.warnings.is_empty(), "{:#?}", plan.warnings);
    assert_eq!(
        plan.summary_lines(),
        vec![
            "10.0.0.1:80 MeshService/web via default route: MeshService/web:80 100.00% (2 endpoints)",
            "10.0.0.1:443 MeshService/web via default route: MeshService/web:443 100.00% (1 endpoints)",
            "10.0.0.2:80 MeshService/api via default route: MeshService/api:80 100.00% (2 endpoints)",
            "10.0.0.3:80 MeshService/api-v2 via default route: MeshService/api-v2:80 100.00% (1 endpoints)",
            "[fd00::1]:80 MeshService/web via default route: MeshService/web:80 100.00% (2 endpoints)",
            "[fd00::1]:443 MeshService/web via default route: MeshService/web:443 100.00% (1 endpoints)",
        ]
    );
    let v4 = &plan.tables[&service_key(0, "10.0.0.1".parse().unwrap(), 80)];
    assert_eq!(
        v4.backends[0].endpoint_count, 1,
        "the IPv6 endpoint is left out of the IPv4 table"
    );
    let v6 = &plan.tables[&service_key(0, "fd00::1".parse().unwrap(), 80)];
    assert_eq!(v6.backends[0].endpoint_count, 2);
}

#[test]
fn split_route_end_to_end() {
    let text = base()
        + &route(
            "canary",
            &to_backends(
                "{kind: MeshService, name: web, sectionName: http}",
                "[{kind: MeshService, name: api, port: 80, weight: 2}, {kind: MeshService, name: api-v2, port: 80, weight: 1}, {kind: MeshService, name: gone, port: 80, weight: 5}, {kind: MeshService, name: api, port: 80, weight: 0}]",
            ),
        );
    let plan = plan(&text);
    assert_plan_consistent(&plan);
    let lines = plan.summary_lines();
    assert_eq!(
        lines[0],
        "10.0.0.1:80 MeshService/web via MeshTCPRoute/canary: MeshService/api:80 66.67% (2 endpoints), MeshService/api-v2:80 33.33% (1 endpoints)"
    );
    assert!(lines[1].starts_with("10.0.0.1:443 MeshService/web via default route"));
    assert_eq!(
        triples(&plan.warnings, Severity::Warning),
        vec![t(
            "MeshTCPRoute/canary",
            "spec.to[0].rules[0].default.backendRefs[2]",
            "MeshService/gone:80 does not exist; its share is dropped and the other backends share the traffic"
        )]
    );
}

#[test]
fn all_zero_weights_give_an_empty_table() {
    let text = base()
        + &route(
            "off",
            &to_backends(
                "{kind: MeshService, name: api}",
                "[{kind: MeshService, name: api-v2, port: 80, weight: 0}]",
            ),
        );
    let plan = plan(&text);
    assert_plan_consistent(&plan);
    let table = &plan.tables[&service_key(0, "10.0.0.2".parse().unwrap(), 80)];
    assert_eq!((table.header.backend_count, table.entries().len()), (0, 1));
    assert_eq!(
        plan.summary_lines()[2],
        "10.0.0.2:80 MeshService/api via MeshTCPRoute/off: "
    );
    let text = plan.render_table(None).unwrap();
    assert!(
        text.contains("no backend: connect() fails with ECONNREFUSED"),
        "{text}"
    );
}

#[test]
fn warnings_ride_along_with_a_plan() {
    let plan = plan(&(base() + "---\ntype: Mesh\nname: default\n"));
    assert_eq!(
        triples(&plan.warnings, Severity::Warning),
        vec![t(
            "Mesh/default",
            "",
            "Mesh resources are read but have no effect in this version"
        )]
    );
}

#[test]
fn failed_plan_reports_errors_and_warnings_together() {
    let problems = plan_problems(
        &(base()
            + "---\ntype: Mesh\nname: default\n---\ntype: MeshService\nname: bad\nspec: {ports: [{port: 0}]}\n"),
    );
    assert_eq!(
        triples(&problems, Severity::Error),
        vec![t(
            "MeshService/bad",
            "spec.ports[0].port",
            "must be in 1..65535"
        )]
    );
    assert_eq!(
        triples(&problems, Severity::Warning),
        vec![
            t(
                "MeshService/bad",
                "spec.ports[0].targetPort",
                "not set: Kuma matches no Dataplane inbound to this port, so it has no endpoints"
            ),
            t(
                "MeshService/bad",
                "spec.selector.dataplaneTags",
                "not set: the service has no endpoints here"
            ),
            t(
                "MeshService/bad",
                "status.vips",
                "no addresses: connections to this service cannot be redirected"
            ),
            t(
                "Mesh/default",
                "",
                "Mesh resources are read but have no effect in this version"
            ),
        ]
    );
}

#[test]
fn resolve_errors_fail_the_plan() {
    let workload = |name: &str, address: &str| {
        format!(
            "---\ntype: Dataplane\nname: {name}\nlabels: {{redirector.io/cgroup: shared.slice}}\nnetworking: {{address: {address}, inbound: [{{port: 1, tags: {{kuma.io/service: {name}}}}}]}}\n"
        )
    };
    let text = base() + &workload("one", "10.3.0.1") + &workload("two", "10.3.0.2");
    let problems = plan_problems(&text);
    assert_eq!(
        triples(&problems, Severity::Error),
        vec![t(
            "Dataplane/two",
            "labels[\"redirector.io/cgroup\"]",
            "cgroup \"shared.slice\" is already bound to Dataplane/one"
        )]
    );
}

#[test]
fn address_conflict_fails_the_plan() {
    let text = base() + &service("clash", "{app: c}", "[{port: 80}]", "[{ip: 10.0.0.2}]");
    let problems = plan_problems(&text);
    assert_eq!(
        triples(&problems, Severity::Error),
        vec![t(
            "MeshService/clash",
            "status.vips",
            "10.0.0.2:80 is also an address of MeshService/api"
        )]
    );
}

#[test]
fn compile_errors_are_reported_for_the_input_file() {
    // Four addresses times (limit / 4 + 1) ports: ports stay below 65536.
    let ports: Vec<String> = (1..=MAX_ROUTES / 4 + 1)
        .map(|p| format!("{{port: {p}}}"))
        .collect();
    let text = service(
        "wide",
        "{app: w}",
        &format!("[{}]", ports.join(", ")),
        "[{ip: 10.0.0.1}, {ip: 10.0.0.2}, {ip: 10.0.0.3}, {ip: 10.0.0.4}]",
    );
    let problems = plan_problems(&text);
    let errors: Vec<String> = problems
        .iter()
        .filter(|p| p.severity == Severity::Error)
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        errors,
        vec![format!(
            "test.yaml: {} service addresses and ports exceed the limit of {MAX_ROUTES}",
            MAX_ROUTES + 4
        )]
    );
}

// ---------------------------------------------------------------- files and directories

#[test]
fn build_reads_a_file() {
    let dir = tempdir("plan-file");
    let file = dir.join("mesh.yaml");
    std::fs::write(&file, base()).unwrap();
    let plan = plan::build(&file).unwrap();
    assert_eq!(plan.resolution.base_routes().len(), 6);
    assert!(plan.config.services.iter().all(|s| *s.origin.file == *file));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn build_reads_yaml_files_below_a_directory_in_name_order() {
    let dir = tempdir("plan-dir");
    std::fs::create_dir_all(dir.join("b/nested")).unwrap();
    std::fs::create_dir_all(dir.join(".git")).unwrap();
    std::fs::write(
        dir.join("a.yaml"),
        service(
            "one",
            "{app: a}",
            "[{port: 80, targetPort: 80}]",
            "[{ip: 10.0.0.1}]",
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("b/nested/c.yml"),
        dataplane("dp", "10.1.0.1", "[{port: 80, tags: {app: a}}]"),
    )
    .unwrap();
    std::fs::write(dir.join("b/a.yaml"), "type: Mesh\nname: m\n").unwrap();
    std::fs::write(dir.join("c.yaml"), "type: Mesh\nname: m\n").unwrap();
    std::fs::write(dir.join("notes.txt"), "not: [yaml").unwrap();
    std::fs::write(dir.join(".hidden.yaml"), "not: [yaml").unwrap();
    std::fs::write(dir.join(".git/x.yaml"), "not: [yaml").unwrap();
    let problems = plan::build(&dir).unwrap_err().0;
    let first = dir.join("b/a.yaml");
    let second = dir.join("c.yaml");
    let errors: Vec<_> = problems
        .iter()
        .filter(|p| p.severity == Severity::Error)
        .collect();
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(errors[0].file, second);
    assert_eq!(
        errors[0].message,
        format!(
            "duplicate resource: Mesh/m in mesh \"default\" is also defined in {}",
            first.display()
        )
    );

    std::fs::remove_file(&second).unwrap();
    let plan = plan::build(&dir).unwrap();
    assert_eq!(
        plan.resolution.base_routes()[0].backends[0].endpoints,
        vec!["10.1.0.1:80".parse().unwrap()].into()
    );
    assert_eq!(
        *plan.config.dataplanes[0].origin.file,
        *dir.join("b/nested/c.yml")
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn build_reports_unreadable_inputs() {
    let dir = tempdir("plan-unreadable");
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::write(empty.join("readme.md"), "nothing").unwrap();
    let problems = plan::build(&empty).unwrap_err().0;
    assert_eq!(problems.len(), 1);
    assert_eq!(
        problems[0].to_string(),
        format!("{}: no .yaml or .yml files found", empty.display())
    );

    let missing = dir.join("missing.yaml");
    let problems = plan::build(&missing).unwrap_err().0;
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].file, missing);
    assert!(
        problems[0].message.starts_with("cannot read: "),
        "{}",
        problems[0].message
    );

    let binary = dir.join("binary.yaml");
    std::fs::write(&binary, b"type:\xff\xfe Mesh\n").unwrap();
    let problems = plan::build(&binary).unwrap_err().0;
    assert_eq!(problems.len(), 1);
    assert_eq!(
        problems[0].to_string(),
        format!("{}: not UTF-8 text (byte 5)", binary.display())
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn build_reports_every_file_of_a_directory() {
    let dir = tempdir("plan-every-file");
    std::fs::write(dir.join("1.yaml"), "type: Nope\nname: a\n").unwrap();
    std::fs::write(dir.join("2.yaml"), "a: [\n").unwrap();
    std::fs::write(
        dir.join("3.yaml"),
        "type: MeshService\nname: s\nspec: {ports: [{port: 0}]}\n",
    )
    .unwrap();
    let problems = plan::build(&dir).unwrap_err().0;
    let errors: Vec<(String, &str)> = problems
        .iter()
        .filter(|p| p.severity == Severity::Error)
        .map(|p| {
            (
                p.file.file_name().unwrap().to_string_lossy().into_owned(),
                p.resource.as_str(),
            )
        })
        .collect();
    assert_eq!(
        errors,
        vec![
            ("1.yaml".into(), "Nope/a"),
            ("2.yaml".into(), ""),
            ("3.yaml".into(), "MeshService/s")
        ]
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn shipped_canary_example_splits_ninety_ten() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/canary");
    let plan = plan::build(&dir).unwrap_or_else(|p| panic!("{p}"));
    assert_plan_consistent(&plan);
    let canary: Vec<_> = plan
        .resolution
        .base_routes()
        .iter()
        .filter(|r| r.policy.as_deref() == Some("MeshTCPRoute/backend-canary"))
        .collect();
    assert!(!canary.is_empty());
    for r in canary {
        let weights: Vec<u32> = r.backends.iter().map(|b| b.weight).collect();
        assert_eq!(weights, [90, 10]);
        assert!(r.backends.iter().all(|b| !b.endpoints.is_empty()));
    }
}

// ---------------------------------------------------------------- robustness

fn build(text: &str) -> Result<Plan, redirector_core::model::Problems> {
    plan::build_str(Path::new(FILE), text)
}

/// Whatever the input, a plan is consistent, and a failure carries an error.
fn assert_sound(text: &str) {
    match build(text) {
        Ok(plan) => assert_plan_consistent(&plan),
        Err(problems) => {
            assert!(problems.has_errors(), "Err without an error for {text:?}");
            assert!(problems.0.iter().all(|p| p.file == Path::new(FILE)));
        }
    }
}

proptest! {
    #[test]
    fn arbitrary_text_never_panics(text in any::<String>()) {
        assert_sound(&text);
    }

    #[test]
    fn yaml_like_text_never_panics(text in "[a-zA-Z0-9 :,{}\\[\\]\\-\\n\"'#&*!|>.?%@`]{0,200}") {
        assert_sound(&text);
    }

    #[test]
    fn spliced_documents_never_panic(
        pos in 0usize..10_000,
        cut in 0usize..20,
        insert in "[a-z0-9 :,{}\\[\\]\\-\\n\"'&*!]{0,12}",
    ) {
        let text = base()
            + &route("r", &to_backends("{kind: MeshService, name: web, sectionName: http}", "[{kind: MeshService, name: api, weight: 3}, {kind: MeshService, name: api-v2}]"));
        let pos = pos % text.len();
        let end = (pos + cut).min(text.len());
        let spliced = format!("{}{}{}", &text[..pos], insert, &text[end..]);
        assert_sound(&spliced);
    }
}

/// Values that are wrong (or right) in interesting ways, for any field.
const VALUES: &[&str] = &[
    "0",
    "1",
    "-1",
    "80",
    "65535",
    "65536",
    "70000",
    "4294967295",
    "4294967296",
    "18446744073709551616",
    "1.5",
    "abc",
    "''",
    "null",
    "true",
    "[]",
    "{}",
    "[1]",
    "{a: b}",
    "10.0.0.1",
    "\"fd00::1\"",
    "\"::ffff:10.0.0.1\"",
    "Mesh",
    "MeshService",
    "MeshServiceSubset",
    "http",
    "web",
    "api",
    "!tag x",
    "&a 1",
    "*a",
];

proptest! {
    #[test]
    fn any_value_in_any_field_never_panics(picks in prop::collection::vec(0..VALUES.len(), 24)) {
        let v = |i: usize| VALUES[picks[i]];
        let text = format!(
            r#"
type: MeshService
name: {}
spec:
  selector: {{dataplaneTags: {{app: {}}}}}
  ports: [{{port: {}, targetPort: {}, name: {}, appProtocol: {}}}, {{port: 443}}]
status:
  vips: [{{ip: {}}}, {{ip: 10.0.0.1}}]
---
type: Dataplane
name: dp
mesh: {}
networking:
  address: {}
  inbound: [{{port: {}, servicePort: {}, address: {}, name: {}, tags: {{app: {}}}}}]
---
type: MeshTCPRoute
name: r
spec:
  targetRef: {{kind: {}}}
  to:
    - targetRef: {{kind: {}, name: {}, sectionName: {}, _port: {}}}
      rules:
        - default:
            backendRefs:
              - {{kind: {}, name: {}, port: {}, weight: {}}}
              - {{kind: MeshService, name: web, weight: {}}}
"#,
            v(0), v(1), v(2), v(3), v(4), v(5), v(6), v(7), v(8), v(9), v(10), v(11), v(12), v(13), v(14), v(15),
            v(16), v(17), v(18), v(19), v(20), v(21), v(22), v(23)
        );
        assert_sound(&text);
    }
}

/// A random but well-formed mesh: services `s0..`, dataplanes, and policies
/// with random destinations, sections, backends, ports and weights.
fn random_mesh() -> impl Strategy<Value = String> {
    let port = prop::sample::select(vec![80u16, 81, 443]);
    let services = prop::collection::vec(
        (
            prop::collection::btree_set(port.clone(), 1..=3),
            any::<bool>(),
            any::<bool>(),
        ),
        1..=4,
    );
    let dataplanes = prop::collection::vec(
        (
            0usize..5,
            any::<bool>(),
            prop::collection::vec((port.clone(), prop::option::of(1u16..=3)), 1..=3),
        ),
        0..=6,
    );
    let backend_ref = (
        0usize..5,
        prop::option::of(port.clone()),
        prop::option::of(0u32..100),
    );
    let to = (
        0usize..5,
        prop::option::of(prop::sample::select(vec!["'80'", "'443'", "http", "x"])),
        prop::option::of(prop::collection::vec(backend_ref, 1..=4)),
    );
    let policies = prop::collection::vec(
        (
            prop::sample::select(vec!["a", "b", "c", "d"]),
            prop::collection::vec(to, 1..=3),
        ),
        0..=3,
    );
    (services, dataplanes, policies).prop_map(|(services, dataplanes, policies)| {
        let mut text = String::new();
        for (i, (ports, v4, v6)) in services.iter().enumerate() {
            let ports: Vec<String> = ports
                .iter()
                .enumerate()
                .map(|(j, p)| {
                    if j == 0 {
                        format!("{{port: {p}, targetPort: {p}, name: http}}")
                    } else {
                        format!("{{port: {p}, targetPort: {p}}}")
                    }
                })
                .collect();
            let mut vips = Vec::new();
            if *v4 || !*v6 {
                vips.push(format!("{{ip: 10.0.{i}.1}}"));
            }
            if *v6 {
                vips.push(format!("{{ip: \"fd00::{i}:1\"}}"));
            }
            text += &service(
                &format!("s{i}"),
                &format!("{{app: s{i}}}"),
                &format!("[{}]", ports.join(", ")),
                &format!("[{}]", vips.join(", ")),
            );
        }
        for (i, (app, v6, inbounds)) in dataplanes.iter().enumerate() {
            let address = if *v6 {
                format!("\"fd01::{i}\"")
            } else {
                format!("10.1.0.{i}")
            };
            let inbounds: Vec<String> = inbounds
                .iter()
                .map(|(p, sp)| match sp {
                    Some(sp) => format!("{{port: {p}, servicePort: {}, tags: {{app: s{app}, kuma.io/service: s{app}}}}}", 9000 + sp),
                    None => format!("{{port: {p}, tags: {{app: s{app}, kuma.io/service: s{app}}}}}"),
                })
                .collect();
            let mut dp = dataplane(&format!("dp{i}"), &address, &format!("[{}]", inbounds.join(", ")));
            if *app % 2 == 0 {
                // Half of the dataplanes are workloads (bound to a cgroup).
                dp = dp.replacen("\nnetworking:", &format!("\nlabels: {{redirector.io/cgroup: w{i}}}\nnetworking:"), 1);
            }
            text += &dp;
        }
        let mut seen = std::collections::BTreeSet::new();
        for (name, tos) in policies {
            if !seen.insert(name) {
                continue;
            }
            let tos: Vec<String> = tos
                .iter()
                .map(|(dest, section, refs)| {
                    let section = section.map(|s| format!(", sectionName: {s}")).unwrap_or_default();
                    let target = format!("{{kind: MeshService, name: s{dest}{section}}}");
                    match refs {
                        None => format!("{{targetRef: {target}}}"),
                        Some(refs) => {
                            let refs: Vec<String> = refs
                                .iter()
                                .map(|(svc, port, weight)| {
                                    let port = port.map(|p| format!(", port: {p}")).unwrap_or_default();
                                    let weight = weight.map(|w| format!(", weight: {w}")).unwrap_or_default();
                                    format!("{{kind: MeshService, name: s{svc}{port}{weight}}}")
                                })
                                .collect();
                            format!(
                                "{{targetRef: {target}, rules: [{{default: {{backendRefs: [{}]}}}}]}}",
                                refs.join(", ")
                            )
                        }
                    }
                })
                .collect();
            // The top level selects differently by name: everything, one service's
            // workloads, or one Dataplane.
            let top = match name {
                "a" | "b" => "{kind: Mesh}".to_string(),
                "c" => "{kind: MeshService, name: s0}".to_string(),
                _ => "{kind: Dataplane, name: dp0}".to_string(),
            };
            text += &format!("---\ntype: MeshTCPRoute\nname: {name}\nspec:\n  targetRef: {top}\n  to: [{}]\n", tos.join(", "));
        }
        text
    })
}

proptest! {
    #[test]
    fn random_meshes_plan_consistently(text in random_mesh()) {
        let (config, load_problems) = redirector_core::model::load_str(Path::new(FILE), &text);
        prop_assert!(load_problems.is_empty(), "{:?}\n{}", load_problems, text);
        match build(&text) {
            Ok(plan) => {
                assert_plan_consistent(&plan);
                let expected: usize = config
                    .services
                    .iter()
                    .map(|s| s.spec.ports.as_ref().unwrap().len() * s.status.vips.as_ref().unwrap().len())
                    .sum();
                prop_assert_eq!(plan.resolution.base_routes().len(), expected);
                for class in &plan.resolution.classes {
                    prop_assert_eq!(class.routes.len(), expected, "no outbounds: every class has the same destinations");
                }
            }
            Err(problems) => prop_assert!(false, "unexpected problems {} in\n{}", problems, text),
        }
    }
}
