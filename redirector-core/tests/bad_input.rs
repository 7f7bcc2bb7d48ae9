//! Bad input, catalogued: malformed YAML, wrong types, out-of-range numbers,
//! unknown kinds and fields, duplicates, files that cannot be read, binary
//! junk, nesting and alias bombs. Every case must end in a clear error, never
//! a panic, a hang or a partial plan: `Err` with the errors expected, each
//! naming its file and shown as `file: Kind/name: field.path: message`.
//! Through `plan::build_str` (text), `plan::build` (files and directories) and
//! the `redirector check` binary (exit status 1, the same lines on stdout).

mod common;

use common::{BACKEND_WEIGHT, CANARY, MAX_FILE_BYTES, Scratch, route_with_backend};

use redirector_core::{
    model::{Problem, Severity},
    plan::{self, Plan},
};
use std::{
    panic::AssertUnwindSafe,
    path::Path,
    time::{Duration, Instant},
};

/// The file every in-memory input pretends to come from.
const FILE: &str = "bad.yaml";


/// One expected error: `(resource, field path, message substring)`.
type Want = (&'static str, &'static str, &'static str);

/// A named input and the errors it must produce (all of them, no others).
struct Case {
    name: &'static str,
    text: String,
    want: Vec<Want>,
}

fn case(name: &'static str, text: impl Into<String>, want: &[Want]) -> Case {
    Case { name, text: text.into(), want: want.to_vec() }
}

/// Runs `f`, turning a panic into an `Err` that says where it happened.
fn no_panic<T>(what: &str, f: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(AssertUnwindSafe(f)).map_err(|e| {
        let msg = e
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        format!("{what}: panicked: {msg}")
    })
}

/// The problems of a failed build; an `Err(description)` when the build
/// panicked, succeeded, failed without an error, or named another file.
fn failed(what: &str, file: &Path, result: Result<Result<Plan, redirector_core::model::Problems>, String>) -> Result<Vec<Problem>, String> {
    let problems = match result? {
        Ok(plan) => return Err(format!("{what}: expected errors, got a plan: {:?}", plan.summary_lines())),
        Err(problems) => problems.0,
    };
    if !problems.iter().any(|p| p.severity == Severity::Error) {
        return Err(format!("{what}: Err without an error: {problems:?}"));
    }
    for p in &problems {
        let shown = p.to_string();
        let shown = shown.strip_prefix("warning: ").unwrap_or(&shown);
        if !p.file.starts_with(file) || !shown.starts_with(&file.display().to_string()) {
            return Err(format!("{what}: problem does not name {}: {shown}", file.display()));
        }
    }
    Ok(problems)
}

/// Whether `errors` are exactly `want`: as many, each matching one by
/// resource, path and message substring.
fn matches(errors: &[&Problem], want: &[Want]) -> bool {
    errors.len() == want.len()
        && want.iter().all(|(resource, path, message)| {
            errors.iter().any(|p| p.resource == *resource && p.path == *path && p.message.contains(message))
        })
}

fn describe(problems: &[Problem]) -> String {
    problems.iter().map(|p| format!("    {:?} {p}\n", p.severity)).collect()
}

/// Runs every case through `plan::build_str`; fails listing every case that
/// did not give exactly its errors.
fn run_cases(cases: Vec<Case>) {
    assert!(!cases.is_empty());
    let mut failures = Vec::new();
    for c in &cases {
        let start = Instant::now();
        let result = no_panic(c.name, || plan::build_str(Path::new(FILE), &c.text));
        let elapsed = start.elapsed();
        match failed(c.name, Path::new(FILE), result) {
            Err(e) => failures.push(e),
            Ok(problems) => {
                let errors: Vec<&Problem> = problems.iter().filter(|p| p.severity == Severity::Error).collect();
                if !matches(&errors, &c.want) {
                    failures.push(format!("{}: expected {:?}, got:\n{}", c.name, c.want, describe(&problems)));
                }
            }
        }
        if elapsed > Duration::from_secs(5) {
            failures.push(format!("{}: took {elapsed:?}", c.name));
        }
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
}


/// A MeshService `a` with one port given in flow style.
fn service_with_port(port: &str) -> String {
    format!("type: MeshService\nname: a\nspec:\n  selector: {{dataplaneTags: {{app: a}}}}\n  ports: [{port}]\nstatus: {{vips: [{{ip: 10.0.0.1}}]}}\n")
}

/// A Dataplane `d` with the given `networking` (flow style).
fn dataplane_with(networking: &str) -> String {
    format!("type: Dataplane\nname: d\nnetworking: {networking}\n")
}


#[test]
fn broken_yaml_is_reported_with_its_position() {
    run_cases(vec![
        case(
            "tab indentation",
            "type: MeshTCPRoute\nname: r\nspec:\n\ttargetRef: {kind: Mesh}\n",
            &[("", "", "document 1: invalid YAML: found character that cannot start any token at line 4 column 1")],
        ),
        case(
            "unclosed double quote",
            "type: \"MeshTCPRoute\nname: r\n",
            &[("", "", "document 1: invalid YAML: found unexpected end of stream at line 3 column 1, while scanning a quoted scalar at line 1 column 7")],
        ),
        case(
            "unclosed single quote",
            "type: MeshService\nname: 'a\n",
            &[("", "", "invalid YAML: found unexpected end of stream at line 3 column 1, while scanning a quoted scalar at line 2 column 7")],
        ),
        case(
            "unclosed bracket",
            "type: MeshTCPRoute\nname: r\nspec:\n  to: [ {targetRef: {kind: Mesh}}\n",
            &[("", "", "invalid YAML: did not find expected ',' or ']' at line 5 column 1, while parsing a flow sequence at line 4 column 7")],
        ),
        case(
            "unclosed brace",
            "type: MeshTCPRoute\nname: {r\n",
            &[("", "", "invalid YAML: did not find expected ',' or '}' at line 3 column 1, while parsing a flow mapping at line 2 column 7")],
        ),
        case(
            "stray closing bracket",
            "type: MeshTCPRoute\nname: r\n]\n",
            &[("", "", "document 1: invalid YAML: did not find expected key at line 3 column 1")],
        ),
        case(
            "bad indentation",
            "type: MeshTCPRoute\nname: r\nspec:\n  targetRef:\n    kind: Mesh\n   to: []\n",
            &[("", "", "invalid YAML: did not find expected key at line 6 column 4, while parsing a block mapping at line 4 column 3")],
        ),
        case(
            "value after a value",
            "type: MeshTCPRoute: x\nname: r\n",
            &[("", "", "invalid YAML: mapping values are not allowed in this context at line 1 column 19")],
        ),
        case(
            "duplicate key",
            "type: MeshTCPRoute\nname: r\nname: s\nspec: {}\n",
            &[("", "", "invalid YAML: duplicate entry with key \"name\"")],
        ),
        case(
            "duplicate %YAML directive",
            "%YAML 1.1\n%YAML 1.1\n---\ntype: Mesh\nname: m\n",
            &[("", "", "invalid YAML: found duplicate %YAML directive at line 2 column 1")],
        ),
        case("undefined alias", "type: Mesh\nname: *x\n", &[("", "", "invalid YAML: unknown anchor at line 2 column 7")]),
        case(
            "unterminated block in a later document",
            "type: Mesh\nname: m\n---\ntype: Mesh\nname: [n\n",
            &[("", "", "document 2: invalid YAML: did not find expected ',' or ']'")],
        ),
        case(
            "sequence item in a mapping",
            "type: Mesh\nname: m\n- x\n",
            &[("", "", "invalid YAML: did not find expected key at line 3 column 1")],
        ),
    ]);
}

#[test]
fn wrong_types_are_reported_at_their_field() {
    let to = |to: &str| format!("type: MeshTCPRoute\nname: r\nspec:\n  targetRef: {{kind: Mesh}}\n  to: {to}\n");
    run_cases(vec![
        case("type is a number", "type: 5\nname: r\n", &[("", "type", "expected a string, found a number")]),
        case("type is tagged", "type: !custom Mesh\nname: m\n", &[("", "type", "expected a string, found a tagged value")]),
        case("name is a list", "type: MeshService\nname: [a]\n", &[("", "name", "expected a string, found a list")]),
        case("name is a boolean", "type: MeshService\nname: true\n", &[("", "name", "expected a string, found a boolean")]),
        case("mesh is a mapping", "type: MeshService\nname: a\nmesh: {x: 1}\n", &[("", "mesh", "expected a string, found a mapping")]),
        case("labels is a string", "type: MeshService\nname: a\nlabels: foo\nspec: {}\n", &[("", "labels", "invalid type: string \"foo\", expected a map")]),
        case("label value is a list", "type: MeshService\nname: a\nlabels: {a: [1]}\nspec: {}\n", &[("", "labels.a", "invalid type: sequence, expected a string")]),
        case("spec is a list", "type: MeshTCPRoute\nname: r\nspec: [1]\n", &[("MeshTCPRoute/r", "spec", "invalid type: sequence, expected struct MeshTcpRouteSpec")]),
        case("spec is a string", "type: MeshService\nname: a\nspec: hello\n", &[("MeshService/a", "spec", "invalid type: string \"hello\", expected struct MeshServiceSpec")]),
        case("to is a mapping", to("{a: 1}"), &[("MeshTCPRoute/r", "spec.to", "invalid type: map, expected a sequence")]),
        case("to targetRef is a string", to("[{targetRef: Mesh}]"), &[("MeshTCPRoute/r", "spec.to[0].targetRef", "invalid type: string \"Mesh\", expected struct TargetRef")]),
        case("rules is a mapping", to("[{targetRef: {kind: Mesh}, rules: {default: {}}}]"), &[("MeshTCPRoute/r", "spec.to[0].rules", "invalid type: map, expected a sequence")]),
        case(
            "backendRefs is a string",
            to("[{targetRef: {kind: MeshService, name: a}, rules: [{default: {backendRefs: b}}]}]"),
            &[("MeshTCPRoute/r", "spec.to[0].rules[0].default.backendRefs", "invalid type: string \"b\", expected a sequence")],
        ),
        case("weight is a word", route_with_backend("weight: ten"), &[("MeshTCPRoute/r", BACKEND_WEIGHT, "invalid type: string \"ten\", expected u64")]),
        case("weight is a fraction", route_with_backend("weight: 1.5"), &[("MeshTCPRoute/r", BACKEND_WEIGHT, "invalid type: floating point `1.5`, expected u64")]),
        case("weight is a list", route_with_backend("weight: [1]"), &[("MeshTCPRoute/r", BACKEND_WEIGHT, "invalid type: sequence, expected u64")]),
        case("proxyTypes is a string", to("[{targetRef: {kind: MeshService, name: a, proxyTypes: Sidecar}}]"), &[("MeshTCPRoute/r", "spec.to[0].targetRef.proxyTypes", "invalid type: string \"Sidecar\", expected a sequence")]),
        case("service port is a word", service_with_port("{port: eighty}"), &[("MeshService/a", "spec.ports[0].port", "invalid type: string \"eighty\", expected u16")]),
        case("targetPort is a list", service_with_port("{port: 80, targetPort: [1]}"), &[("MeshService/a", "spec.ports[0].targetPort", "did not match any variant of untagged enum PortRef")]),
        case("appProtocol is a mapping", service_with_port("{port: 80, appProtocol: {a: b}}"), &[("MeshService/a", "spec.ports[0].appProtocol", "invalid type: map, expected a string")]),
        case(
            "vips is a mapping",
            "type: MeshService\nname: a\nspec: {ports: [{port: 80}]}\nstatus: {vips: {ip: 10.0.0.1}}\n",
            &[("MeshService/a", "status.vips", "invalid type: map, expected a sequence")],
        ),
        case(
            "vip is not an address",
            "type: MeshService\nname: a\nspec: {ports: [{port: 80}]}\nstatus: {vips: [{ip: not-an-ip}]}\n",
            &[("MeshService/a", "status.vips[0].ip", "invalid IP address syntax")],
        ),
        case("networking is a list", dataplane_with("[1]"), &[("Dataplane/d", "networking", "invalid type: sequence, expected struct Networking")]),
        case("dataplane address out of range", dataplane_with("{address: 999.1.1.1, inbound: [{port: 1}]}"), &[("Dataplane/d", "networking.address", "invalid IP address syntax")]),
        case("inbound tags is a list", dataplane_with("{address: 10.0.0.2, inbound: [{port: 1, tags: [a]}]}"), &[("Dataplane/d", "networking.inbound[0].tags", "invalid type: sequence, expected a map")]),
        case("health.ready is a word", dataplane_with("{address: 10.0.0.2, inbound: [{port: 1, health: {ready: maybe}}]}"), &[("Dataplane/d", "networking.inbound[0].health.ready", "invalid type: string \"maybe\", expected a boolean")]),
        case("outbound address is a boolean", dataplane_with("{address: 10.0.0.2, outbound: [{port: 1, address: true}]}"), &[("Dataplane/d", "networking.outbound[0].address", "invalid type: boolean `true`")]),
        case(
            "external endpoint port is a word",
            "type: MeshExternalService\nname: e\nspec:\n  match: {type: HostnameGenerator, port: 443, protocol: tcp}\n  endpoints: [{address: 1.2.3.4, port: https}]\n",
            &[("MeshExternalService/e", "spec.endpoints[0].port", "invalid type: string \"https\", expected u16")],
        ),
        case(
            "multizone selector is a string",
            "type: MeshMultiZoneService\nname: m\nspec: {selector: all, ports: [{port: 80}]}\n",
            &[("MeshMultiZoneService/m", "spec.selector", "invalid type: string \"all\", expected struct MultiZoneSelector")],
        ),
    ]);
}

#[test]
fn huge_and_out_of_range_numbers_are_rejected() {
    run_cases(vec![
        // Beyond 64 bits: out of range for every field, reported in the resource.
        case(
            "weight 2^64",
            route_with_backend("weight: 18446744073709551616"),
            &[("MeshTCPRoute/r", BACKEND_WEIGHT, "number out of range: 18446744073709551616 does not fit in 64 bits")],
        ),
        case(
            "port -2^64-1",
            service_with_port("{port: -18446744073709551617}"),
            &[("MeshService/a", "spec.ports[0].port", "number out of range: -18446744073709551617 does not fit in 64 bits")],
        ),
        case("weight 2^32", route_with_backend("weight: 4294967296"), &[("MeshTCPRoute/r", BACKEND_WEIGHT, "must be in inclusive range [0, 4294967295]")]),
        case("weight 2^64-1", route_with_backend("weight: 18446744073709551615"), &[("MeshTCPRoute/r", BACKEND_WEIGHT, "must be in inclusive range [0, 4294967295]")]),
        case("weight -1", route_with_backend("weight: -1"), &[("MeshTCPRoute/r", BACKEND_WEIGHT, "invalid value: integer `-1`, expected u64")]),
        case("weight 1e400", route_with_backend("weight: 1e400"), &[("MeshTCPRoute/r", BACKEND_WEIGHT, "invalid type: string \"1e400\", expected u64")]),
        case("weight .inf", route_with_backend("weight: .inf"), &[("MeshTCPRoute/r", BACKEND_WEIGHT, "invalid type: floating point `inf`, expected u64")]),
        case("weight .nan", route_with_backend("weight: .nan"), &[("MeshTCPRoute/r", BACKEND_WEIGHT, "invalid type: floating point `NaN`, expected u64")]),
        case(
            "weights summing past 32 bits",
            format!("{}              - {{kind: MeshService, name: c, weight: 4294967295}}\n", route_with_backend("weight: 2")),
            &[("MeshTCPRoute/r", "spec.to[0].rules[0].default.backendRefs", "sum of weights 4294967297 exceeds 4294967295")],
        ),
        case("service port 70000", service_with_port("{port: 70000, targetPort: 80}"), &[("MeshService/a", "spec.ports[0].port", "invalid value: integer `70000`, expected u16")]),
        case("service port 1e400", service_with_port("{port: 1e400}"), &[("MeshService/a", "spec.ports[0].port", "invalid type: string \"1e400\", expected u16")]),
        case("service port 0", service_with_port("{port: 0, targetPort: 80}"), &[("MeshService/a", "spec.ports[0].port", "must be in 1..65535")]),
        case("service port -1", service_with_port("{port: -1}"), &[("MeshService/a", "spec.ports[0].port", "invalid value: integer `-1`, expected u16")]),
        case("targetPort 70000", service_with_port("{port: 80, targetPort: 70000}"), &[("MeshService/a", "spec.ports[0].targetPort", "did not match any variant of untagged enum PortRef")]),
        case("inbound port 70000", dataplane_with("{address: 10.0.0.2, inbound: [{port: 70000}]}"), &[("Dataplane/d", "networking.inbound[0].port", "invalid value: integer `70000`, expected u16")]),
        case("inbound servicePort 99999", dataplane_with("{address: 10.0.0.2, inbound: [{port: 80, servicePort: 99999}]}"), &[("Dataplane/d", "networking.inbound[0].servicePort", "invalid value: integer `99999`, expected u16")]),
        case("outbound port 99999", dataplane_with("{address: 10.0.0.2, outbound: [{port: 99999}]}"), &[("Dataplane/d", "networking.outbound[0].port", "invalid value: integer `99999`, expected u16")]),
        case(
            "external match port 65536",
            "type: MeshExternalService\nname: e\nspec:\n  match: {type: HostnameGenerator, port: 65536, protocol: tcp}\n  endpoints: [{address: 1.2.3.4, port: 443}]\n",
            &[("MeshExternalService/e", "spec.match.port", "invalid value: integer `65536`, expected u16")],
        ),
    ]);
}

#[test]
fn numbers_beyond_64_bits_name_their_resource_and_field() {
    run_cases(vec![
        // Beyond 128 bits libyaml reads a float: the value is kept, not the digits.
        case(
            "weight of 43 digits",
            route_with_backend("weight: 1000000000000000000000000000000000000000000"),
            &[("MeshTCPRoute/r", BACKEND_WEIGHT, "number out of range: 1e42 does not fit in 64 bits")],
        ),
        case(
            "port of -43 digits",
            service_with_port("{port: -1000000000000000000000000000000000000000000}"),
            &[("MeshService/a", "spec.ports[0].port", "number out of range: -1e42 does not fit in 64 bits")],
        ),
        case(
            "weight 2^128-1",
            route_with_backend("weight: 340282366920938463463374607431768211455"),
            &[("MeshTCPRoute/r", BACKEND_WEIGHT, "number out of range: 340282366920938463463374607431768211455 does not fit in 64 bits")],
        ),
        case(
            "weight tagged !!int",
            route_with_backend("weight: !!int 18446744073709551616"),
            &[("MeshTCPRoute/r", BACKEND_WEIGHT, "number out of range: 18446744073709551616")],
        ),
        case(
            "targetPort 2^64 (a number or a name)",
            service_with_port("{port: 80, targetPort: 18446744073709551616}"),
            &[("MeshService/a", "spec.ports[0].targetPort", "number out of range: 18446744073709551616")],
        ),
        case(
            "a later document is still read",
            format!("{}---
type: MeshFoo
name: z
", route_with_backend("weight: 18446744073709551616")),
            &[("MeshTCPRoute/r", BACKEND_WEIGHT, "number out of range"), ("MeshFoo/z", "type", "unknown resource type")],
        ),
        // Where no number goes, the type is what is wrong, shown with the digits written.
        case(
            "backendRef sectionName 2^64",
            route_with_backend("sectionName: 18446744073709551616"),
            &[("MeshTCPRoute/r", "spec.to[0].rules[0].default.backendRefs[0].sectionName", "invalid type: integer `18446744073709551616`, expected a string")],
        ),
        case(
            "label value 2^64",
            "type: Mesh\nname: m\nlabels: {a: 18446744073709551616}\n",
            &[("", "labels.a", "invalid type: integer `18446744073709551616`, expected a string")],
        ),
    ]);
}

#[test]
fn empty_names_are_rejected_in_both_forms() {
    run_cases(vec![
        case("universal MeshService", service_with_port("{port: 80, targetPort: 80}").replace("name: a", "name: ''"), &[("", "name", "MeshService: cannot be empty")]),
        case("universal MeshTCPRoute", "type: MeshTCPRoute\nname: \"\"\nspec: {targetRef: {kind: Mesh}}\n", &[("", "name", "MeshTCPRoute: cannot be empty")]),
        case("universal Dataplane", "type: Dataplane\nname: ''\nnetworking: {address: 10.0.0.2}\n", &[("", "name", "Dataplane: cannot be empty")]),
        case("kind read but not acted on", "type: Mesh\nname: ''\n", &[("", "name", "Mesh: cannot be empty")]),
        case(
            "Kubernetes MeshTCPRoute",
            "apiVersion: kuma.io/v1alpha1\nkind: MeshTCPRoute\nmetadata: {name: ''}\nspec: {targetRef: {kind: Mesh}}\n",
            &[("", "metadata.name", "MeshTCPRoute: cannot be empty")],
        ),
        case(
            "Kubernetes MeshService with a namespace",
            "apiVersion: kuma.io/v1alpha1\nkind: MeshService\nmetadata: {name: '', namespace: ns}\nspec: {ports: [{port: 80}]}\n",
            &[("", "metadata.name", "MeshService: cannot be empty")],
        ),
        case(
            "empty name beside a good document",
            "type: Mesh\nname: m\n---\ntype: Mesh\nname: ''\n",
            &[("", "name", "Mesh: cannot be empty")],
        ),
    ]);
}

#[test]
fn addresses_no_connection_is_made_to_are_not_service_addresses() {
    let vips = |vips: &str| service_with_port("{port: 80, targetPort: 80}").replace("[{ip: 10.0.0.1}]", vips);
    let external = |vip: &str| {
        format!(
            "type: MeshExternalService\nname: e\nspec:\n  match: {{type: HostnameGenerator, port: 443, protocol: tcp}}\n  endpoints: [{{address: 1.2.3.4, port: 443}}]\nstatus: {{vip: {{ip: '{vip}'}}}}\n"
        )
    };
    let multizone = |vips: &str| {
        format!("type: MeshMultiZoneService\nname: m\nspec: {{selector: {{meshService: {{matchLabels: {{app: a}}}}}}, ports: [{{port: 80}}]}}\nstatus: {{vips: {vips}}}\n")
    };
    let outbound = |address: &str| dataplane_with(&format!("{{address: 10.0.0.2, outbound: [{{port: 80, address: '{address}', tags: {{kuma.io/service: a}}}}]}}"));
    let vip0 = "status.vips[0].ip";
    run_cases(vec![
        case("MeshService 0.0.0.0", vips("[{ip: 0.0.0.0}]"), &[("MeshService/a", vip0, "0.0.0.0 is the unspecified address, not a service address")]),
        case("MeshService ::", vips("[{ip: '::'}]"), &[("MeshService/a", vip0, ":: is the unspecified address, not a service address")]),
        case("MeshService 224.0.0.1", vips("[{ip: 224.0.0.1}]"), &[("MeshService/a", vip0, "224.0.0.1 is a multicast address, not a service address")]),
        case("MeshService 239.255.255.250", vips("[{ip: 239.255.255.250}]"), &[("MeshService/a", vip0, "239.255.255.250 is a multicast address")]),
        case("MeshService ff02::1", vips("[{ip: 'ff02::1'}]"), &[("MeshService/a", vip0, "ff02::1 is a multicast address, not a service address")]),
        case("MeshService 255.255.255.255", vips("[{ip: 255.255.255.255}]"), &[("MeshService/a", vip0, "255.255.255.255 is the broadcast address, not a service address")]),
        case(
            "MeshService IPv4-mapped multicast",
            vips("[{ip: '::ffff:224.0.0.1'}]"),
            &[("MeshService/a", vip0, "::ffff:224.0.0.1 (IPv4 224.0.0.1) is a multicast address, not a service address")],
        ),
        case("MeshService IPv4-mapped 0.0.0.0", vips("[{ip: '::ffff:0.0.0.0'}]"), &[("MeshService/a", vip0, "(IPv4 0.0.0.0) is the unspecified address")]),
        case(
            "MeshService second VIP",
            vips("[{ip: 10.0.0.1}, {ip: 224.0.0.5}]"),
            &[("MeshService/a", "status.vips[1].ip", "224.0.0.5 is a multicast address")],
        ),
        case("MeshExternalService 0.0.0.0", external("0.0.0.0"), &[("MeshExternalService/e", "status.vip.ip", "0.0.0.0 is the unspecified address, not a service address")]),
        case("MeshExternalService ff05::2", external("ff05::2"), &[("MeshExternalService/e", "status.vip.ip", "ff05::2 is a multicast address")]),
        case("MeshMultiZoneService 255.255.255.255", multizone("[{ip: 255.255.255.255}]"), &[("MeshMultiZoneService/m", vip0, "255.255.255.255 is the broadcast address")]),
        case("MeshMultiZoneService ::", multizone("[{ip: '::'}]"), &[("MeshMultiZoneService/m", vip0, ":: is the unspecified address")]),
        case("outbound 0.0.0.0", outbound("0.0.0.0"), &[("Dataplane/d", "networking.outbound[0].address", "0.0.0.0 is the unspecified address, not a service address")]),
        case("outbound 224.0.0.1", outbound("224.0.0.1"), &[("Dataplane/d", "networking.outbound[0].address", "224.0.0.1 is a multicast address")]),
        case("outbound ::ffff:255.255.255.255", outbound("::ffff:255.255.255.255"), &[("Dataplane/d", "networking.outbound[0].address", "(IPv4 255.255.255.255) is the broadcast address")]),
        case(
            "Kubernetes outbound ff02::1",
            "apiVersion: kuma.io/v1alpha1\nkind: Dataplane\nmetadata: {name: d}\nspec: {networking: {address: 10.0.0.2, outbound: [{port: 80, address: 'ff02::1', tags: {kuma.io/service: a}}]}}\n",
            &[("Dataplane/d", "spec.networking.outbound[0].address", "ff02::1 is a multicast address")],
        ),
    ]);
}

#[test]
fn unknown_yaml_tags_are_rejected_at_their_field() {
    let tcp = |spec: &str| format!("type: MeshTCPRoute\nname: r\nspec: {spec}\n");
    run_cases(vec![
        case("tagged weight", route_with_backend("weight: !foo 90"), &[("MeshTCPRoute/r", BACKEND_WEIGHT, "unknown YAML tag !foo")]),
        case("tagged spec", tcp("!bar {targetRef: {kind: Mesh}}"), &[("MeshTCPRoute/r", "spec", "unknown YAML tag !bar")]),
        case("tagged list", tcp("{targetRef: {kind: Mesh}, to: !l [{targetRef: {kind: MeshService, name: a}}]}"), &[("MeshTCPRoute/r", "spec.to", "unknown YAML tag !l")]),
        case("tagged targetRef kind", tcp("{targetRef: {kind: !k Mesh}}"), &[("MeshTCPRoute/r", "spec.targetRef.kind", "unknown YAML tag !k")]),
        case("tagged key", tcp("{!k targetRef: {kind: Mesh}}"), &[("MeshTCPRoute/r", "spec.targetRef", "unknown YAML tag !k")]),
        case("non-specific tag", route_with_backend("weight: ! 90"), &[("MeshTCPRoute/r", BACKEND_WEIGHT, "unknown YAML tag !")]),
        case(
            "tag handle from a %TAG directive",
            format!("%TAG !e! !example-\n---\n{}", route_with_backend("weight: !e!w 90")),
            &[("MeshTCPRoute/r", BACKEND_WEIGHT, "unknown YAML tag !example-w")],
        ),
        case(
            "two tags",
            tcp("{targetRef: !t {kind: Mesh}, to: [{targetRef: {kind: MeshService, name: !n a}}]}"),
            &[("MeshTCPRoute/r", "spec.targetRef", "unknown YAML tag !t"), ("MeshTCPRoute/r", "spec.to[0].targetRef.name", "unknown YAML tag !n")],
        ),
        case("tagged label value", "type: Mesh\nname: m\nlabels: {team: !t core}\n", &[("Mesh/m", "labels.team", "unknown YAML tag !t")]),
        case("tagged field of a kind read but not acted on", "type: Mesh\nname: m\nspec: !s {}\n", &[("Mesh/m", "spec", "unknown YAML tag !s")]),
        case("tagged field accepted but unused", dataplane_with("{address: 10.0.0.2, admin: !a {port: 9901}}"), &[("Dataplane/d", "networking.admin", "unknown YAML tag !a")]),
        case(
            "tagged Kubernetes VIP",
            "apiVersion: kuma.io/v1alpha1\nkind: MeshService\nmetadata: {name: a, labels: {x: !l y}}\nspec: {ports: [{port: 80}]}\nstatus: {vips: [{ip: !ip 10.0.0.1}]}\n",
            &[("MeshService/a", "metadata.labels.x", "unknown YAML tag !l"), ("MeshService/a", "status.vips[0].ip", "unknown YAML tag !ip")],
        ),
        case("tagged universal name", "type: Mesh\nname: !n m\n", &[("", "name", "unknown YAML tag !n")]),
        case("tagged metadata", "apiVersion: kuma.io/v1alpha1\nkind: Mesh\nmetadata: !m {name: m}\n", &[("", "metadata", "unknown YAML tag !m")]),
    ]);
}

#[test]
fn unknown_kinds_and_fields_are_rejected() {
    run_cases(vec![
        case("unknown universal type", "type: MeshFoo\nname: x\n", &[("MeshFoo/x", "type", "unknown resource type \"MeshFoo\"")]),
        case("kind in the wrong case", "type: meshtcproute\nname: x\nspec: {}\n", &[("meshtcproute/x", "type", "unknown resource type \"meshtcproute\"")]),
        case(
            "unknown Kubernetes kind",
            "apiVersion: kuma.io/v1alpha1\nkind: Service\nmetadata: {name: x}\nspec: {}\n",
            &[("Service/x", "kind", "unknown resource type \"Service\"")],
        ),
        case("unknown top-level field", "type: MeshTCPRoute\nname: r\nspek: {}\nspec: {targetRef: {kind: Mesh}}\n", &[("MeshTCPRoute/r", "spek", "unknown field")]),
        case("non-string top-level key", "type: MeshTCPRoute\nname: r\n1: x\nspec: {targetRef: {kind: Mesh}}\n", &[("MeshTCPRoute/r", "Number(1)", "unknown field")]),
        case(
            "unknown targetRef field",
            "type: MeshTCPRoute\nname: r\nspec: {targetRef: {kind: Mesh, nmae: x}}\n",
            &[("MeshTCPRoute/r", "spec.targetRef.nmae", "unknown field `nmae`, expected one of `kind`, `name`")],
        ),
        case(
            "unknown targetRef kind",
            "type: MeshTCPRoute\nname: r\nspec: {targetRef: {kind: Nope}}\n",
            &[("MeshTCPRoute/r", "spec.targetRef.kind", "unknown variant `Nope`, expected one of `Mesh`")],
        ),
        case("unknown backendRef field", route_with_backend("wieght: 1"), &[("MeshTCPRoute/r", "spec.to[0].rules[0].default.backendRefs[0].wieght", "unknown field `wieght`")]),
        case("unknown Dataplane field", dataplane_with("{address: 10.0.0.2, inbounds: []}"), &[("Dataplane/d", "networking.inbounds", "unknown field `inbounds`")]),
        case("unknown Dataplane top-level field", "type: Dataplane\nname: d\nnetwork: {}\n", &[("Dataplane/d", "network", "unknown field `network`, expected one of `networking`")]),
        case("unknown MeshService port field", service_with_port("{port: 80, protocol: tcp}"), &[("MeshService/a", "spec.ports[0].protocol", "unknown field `protocol`")]),
        case(
            "status on a MeshTCPRoute",
            "apiVersion: kuma.io/v1alpha1\nkind: MeshTCPRoute\nmetadata: {name: a}\nspec: {targetRef: {kind: Mesh}}\nstatus: {}\n",
            &[("MeshTCPRoute/a", "status", "unknown field")],
        ),
    ]);
}

#[test]
fn duplicate_names_are_rejected() {
    let dup = |what: &'static str, text: &str, resource: &'static str, message: &'static str| case(what, text, &[(resource, "name", message)]);
    run_cases(vec![
        dup("same Mesh twice", "type: Mesh\nname: m\n---\ntype: Mesh\nname: m\n", "Mesh/m", "duplicate resource: Mesh/m in mesh \"default\" is also defined in bad.yaml"),
        dup(
            "same MeshService twice",
            &format!("{}---\n{}", service_with_port("{port: 80, targetPort: 80}"), service_with_port("{port: 81, targetPort: 81}")),
            "MeshService/a",
            "duplicate resource: MeshService/a in mesh \"default\"",
        ),
        dup(
            "same name in both forms",
            "type: MeshTCPRoute\nname: r\nspec: {targetRef: {kind: Mesh}}\n---\napiVersion: kuma.io/v1alpha1\nkind: MeshTCPRoute\nmetadata: {name: r}\nspec: {targetRef: {kind: Mesh}}\n",
            "MeshTCPRoute/r",
            "duplicate resource: MeshTCPRoute/r",
        ),
        dup(
            "same name and namespace",
            "apiVersion: kuma.io/v1alpha1\nkind: Dataplane\nmetadata: {name: d, namespace: ns}\nspec: {networking: {address: 10.0.0.2}}\n---\napiVersion: kuma.io/v1alpha1\nkind: Dataplane\nmetadata: {name: d, namespace: ns}\nspec: {networking: {address: 10.0.0.3}}\n",
            "Dataplane/d",
            "duplicate resource: Dataplane/d",
        ),
    ]);
}

#[test]
fn envelopes_of_both_forms_are_checked() {
    run_cases(vec![
        case("scalar document", "hello\n", &[("", "", "document 1: expected a mapping with `type` (universal) or `kind` (Kubernetes)")]),
        case("list document", "- a\n- b\n", &[("", "", "document 1: expected a mapping with `type`")]),
        case("no type", "name: r\nspec: {}\n", &[("", "", "document 1: missing `type` (universal form) or `apiVersion`/`kind` (Kubernetes form)")]),
        case("no name", "type: MeshService\nspec: {}\n", &[("", "name", "MeshService: missing")]),
        case(
            "wrong apiVersion",
            "apiVersion: v1\nkind: MeshService\nmetadata: {name: a}\nspec: {}\n",
            &[("", "apiVersion", "expected \"kuma.io/v1alpha1\", found Some(\"v1\")")],
        ),
        case("no apiVersion", "kind: MeshService\nmetadata: {name: a}\nspec: {}\n", &[("", "apiVersion", "expected \"kuma.io/v1alpha1\", found None")]),
        case("apiVersion is a number", "apiVersion: 1\nkind: MeshService\nmetadata: {name: a}\n", &[("", "apiVersion", "expected a string, found a number")]),
        case("no metadata", "apiVersion: kuma.io/v1alpha1\nkind: MeshService\nspec: {}\n", &[("", "metadata", "missing or not a mapping")]),
        case("metadata is a list", "apiVersion: kuma.io/v1alpha1\nkind: MeshService\nmetadata: [a]\nspec: {}\n", &[("", "metadata", "missing or not a mapping")]),
        case("no metadata.name", "apiVersion: kuma.io/v1alpha1\nkind: MeshService\nmetadata: {namespace: x}\nspec: {}\n", &[("", "metadata.name", "missing")]),
        case("metadata.name is a mapping", "apiVersion: kuma.io/v1alpha1\nkind: MeshService\nmetadata: {name: {a: b}}\n", &[("", "metadata.name", "expected a string, found a mapping")]),
        case("metadata.namespace is a number", "apiVersion: kuma.io/v1alpha1\nkind: MeshService\nmetadata: {name: a, namespace: 7}\nspec: {}\n", &[("", "metadata.namespace", "expected a string, found a number")]),
        case("metadata.labels is a list", "apiVersion: kuma.io/v1alpha1\nkind: MeshService\nmetadata: {name: a, labels: [x]}\nspec: {}\n", &[("", "metadata.labels", "invalid type: sequence, expected a map")]),
        case("no kind", "apiVersion: kuma.io/v1alpha1\nmetadata: {name: a}\nspec: {}\n", &[("", "kind", "missing")]),
        case("kind is a list", "apiVersion: kuma.io/v1alpha1\nkind: [MeshService]\nmetadata: {name: a}\n", &[("", "kind", "expected a string, found a list")]),
        case("no spec", "apiVersion: kuma.io/v1alpha1\nkind: MeshTCPRoute\nmetadata: {name: a}\n", &[("MeshTCPRoute/a", "spec", "missing")]),
        case(
            "universal field in Kubernetes form",
            "apiVersion: kuma.io/v1alpha1\nkind: MeshTCPRoute\nmetadata: {name: a}\nname: a\nspec: {targetRef: {kind: Mesh}}\n",
            &[("MeshTCPRoute/a", "name", "unknown field")],
        ),
    ]);
}

#[test]
fn binary_junk_is_rejected() {
    // Deterministic pseudo-random bytes (a 64-bit LCG), made text the way the
    // fuzz target does (invalid UTF-8 becomes U+FFFD).
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let junk: Vec<u8> = (0..4096)
        .map(|_| {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (x >> 56) as u8
        })
        .collect();
    run_cases(vec![
        case("random bytes", String::from_utf8_lossy(&junk).into_owned(), &[("", "", "document 1: invalid YAML: control characters are not allowed")]),
        case("NUL bytes", "\0".repeat(64), &[("", "", "invalid YAML: control characters are not allowed")]),
        case("NUL inside a document", "type: Mesh\nname: m\0\n", &[("", "", "invalid YAML: control characters are not allowed at position 18")]),
        case("bell character", "type: Mesh\x07\nname: m\n", &[("", "", "invalid YAML: control characters are not allowed at position 10")]),
        case(
            "junk after a good document",
            "type: Mesh\nname: m\n---\n\u{1}\u{2}\u{3}",
            &[("", "", "invalid YAML: control characters are not allowed")],
        ),
        case("replacement characters", "\u{fffd}".repeat(100), &[("", "", "document 1: expected a mapping")]),
    ]);
}

#[test]
fn deep_nesting_ends_in_an_error_not_a_stack_overflow() {
    const DEPTH: usize = 10_000;
    run_cases(vec![
        case("10,000 nested flow lists", "[".repeat(DEPTH) + &"]".repeat(DEPTH), &[("", "", "YAML nesting deeper than 64 levels at line 1 column 65")]),
        case("10,000 unclosed flow lists", "[".repeat(DEPTH), &[("", "", "YAML nesting deeper than 64 levels at line 1 column 65")]),
        case("80,000 nested flow lists (160 KB)", "[".repeat(80_000) + &"]".repeat(80_000), &[("", "", "YAML nesting deeper than 64 levels")]),
        case("10,000 nested block lists", format!("{}x\n", "- ".repeat(DEPTH)), &[("", "", "invalid YAML: recursion limit exceeded at line 1 column 257")]),
        case("10,000 nested flow mappings", "{a: ".repeat(DEPTH) + "1" + &"}".repeat(DEPTH), &[("", "", "YAML nesting deeper than 64 levels at line 1 column 257")]),
        case(
            "10,000 nested lists inside a spec",
            format!("type: MeshService\nname: a\nspec: {{ports: [{{port: 80}}], identities: {}}}\n", "[".repeat(DEPTH) + &"]".repeat(DEPTH)),
            &[("", "", "YAML nesting deeper than 64 levels at line 3")],
        ),
    ]);
}

/// Brackets that do not open a flow collection (inside plain or quoted
/// scalars, comments, or after other text) do not count towards the limit.
#[test]
fn brackets_inside_scalars_and_comments_do_not_count_as_nesting() {
    let many = "[".repeat(100);
    let text = format!(
        "type: MeshService\nname: a # {many}\nlabels:\n  plain: a{many}\n  single: '{many}'\n  double: \"{many}\\\"\"\nspec:\n  selector: {{dataplaneTags: {{app: a}}}}\n  ports: [{{port: 80, targetPort: 80}}]\nstatus: {{vips: [{{ip: 10.0.0.1}}]}}\n"
    );
    if let Err(problems) = plan::build_str(Path::new(FILE), &text) {
        panic!("brackets inside scalars must not count:\n{problems}");
    }
}

#[test]
fn alias_bombs_end_quickly() {
    // Billion laughs: 10^9 "lol"s if expanded.
    let mut lol = String::from("type: MeshService\nname: a\nspec:\n  ports: [{port: 80}]\n  identities:\n");
    lol.push_str("    - &a [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"];
    for w in names.windows(2) {
        lol.push_str(&format!("    - &{1} [*{0}, *{0}, *{0}, *{0}, *{0}, *{0}, *{0}, *{0}, *{0}, *{0}]\n", w[0], w[1]));
    }
    // The same bomb where the envelope reads it (labels are typed).
    let mut labels = String::from("type: Mesh\nname: m\nx: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n");
    for w in names.windows(2) {
        labels.push_str(&format!("{1}: &{1} [*{0}, *{0}, *{0}, *{0}, *{0}, *{0}, *{0}, *{0}, *{0}, *{0}]\n", w[0], w[1]));
    }
    run_cases(vec![
        case("billion laughs in a spec", lol, &[("", "", "document 1: invalid YAML: repetition limit exceeded")]),
        case("billion laughs at top level", labels, &[("", "", "document 1: invalid YAML: repetition limit exceeded")]),
    ]);
}

#[test]
fn every_bad_document_is_reported_and_nothing_is_applied() {
    let good = "type: Mesh\nname: m\n---\n".to_string() + &service_with_port("{port: 80, targetPort: 80}");
    run_cases(vec![
        case(
            "one bad document among good ones",
            format!("{good}---\n{}---\ntype: Mesh\nname: n\n", route_with_backend("weight: ten")),
            &[("MeshTCPRoute/r", BACKEND_WEIGHT, "expected u64")],
        ),
        case(
            "three bad documents among good ones",
            format!(
                "{good}---\ntype: MeshFoo\nname: z\n---\n{}---\ntype: Mesh\nname: n\n---\n{}",
                service_with_port("{port: 70000}").replace("name: a", "name: b"),
                route_with_backend("weight: -1"),
            ),
            &[
                ("MeshFoo/z", "type", "unknown resource type \"MeshFoo\""),
                ("MeshService/b", "spec.ports[0].port", "invalid value: integer `70000`"),
                ("MeshTCPRoute/r", BACKEND_WEIGHT, "invalid value: integer `-1`"),
            ],
        ),
        case(
            "load and validation errors together",
            format!("{good}---\ntype: MeshFoo\nname: z\n---\n{}", route_with_backend("weight: 4294967296")),
            &[("MeshFoo/z", "type", "unknown resource type"), ("MeshTCPRoute/r", BACKEND_WEIGHT, "must be in inclusive range")],
        ),
        case(
            "a syntax error after good documents",
            format!("{good}---\ntype: [\n"),
            &[("", "", "document 3: invalid YAML:")],
        ),
    ]);
}

#[test]
fn input_without_resources_is_an_error() {
    run_cases(vec![
        case("empty", "", &[("", "", "contains no Kuma resources")]),
        case("only comments", "# nothing\n# here\n", &[("", "", "contains no Kuma resources")]),
        case("only whitespace", "  \n\n   \n", &[("", "", "contains no Kuma resources")]),
        case("only document markers", "---\n---\n...\n", &[("", "", "contains no Kuma resources")]),
        case("null documents", "~\n---\nnull\n", &[("", "", "contains no Kuma resources")]),
    ]);
}

// --- files and directories: plan::build ---------------------------------


/// The problems of `plan::build(path)`, which must fail; every problem must
/// name `path` or a file below it.
fn build_problems(path: &Path) -> Vec<Problem> {
    let what = path.display().to_string();
    failed(&what, path, no_panic(&what, || plan::build(path))).unwrap_or_else(|e| panic!("{e}"))
}

/// Asserts the errors of `plan::build(path)` are exactly `want`, as
/// `(file, resource, path, message substring)`.
fn assert_build_errors(path: &Path, want: &[(&Path, &str, &str, &str)]) {
    let problems = build_problems(path);
    let errors: Vec<&Problem> = problems.iter().filter(|p| p.severity == Severity::Error).collect();
    let ok = errors.len() == want.len()
        && want.iter().all(|(file, resource, field, message)| {
            errors.iter().any(|p| p.file == *file && p.resource == *resource && p.path == *field && p.message.contains(message))
        });
    assert!(ok, "{}: expected {want:?}, got:\n{}", path.display(), describe(&problems));
}


#[test]
fn files_over_the_size_limit_are_not_read_and_the_limit_itself_is_fine() {
    let dir = Scratch::new("size");
    // Exactly at the limit: the canary config padded with comments. Legal.
    let mut text = String::with_capacity(MAX_FILE_BYTES as usize);
    text.push_str(CANARY);
    let line = format!("# {}\n", "padding ".repeat(12));
    while text.len() + line.len() <= MAX_FILE_BYTES as usize {
        text.push_str(&line);
    }
    text.push_str(&"#".repeat(MAX_FILE_BYTES as usize - text.len() - 1));
    text.push('\n');
    assert_eq!(text.len() as u64, MAX_FILE_BYTES);
    let at_limit = dir.write("at-limit.yaml", &text);
    let start = Instant::now();
    let plan = match no_panic("at-limit", || plan::build(&at_limit)).unwrap() {
        Ok(plan) => plan,
        Err(problems) => panic!("a file of exactly {MAX_FILE_BYTES} bytes must be read:\n{problems}"),
    };
    assert_eq!(plan.config.routes.len(), 1);
    assert!(!plan.tables.is_empty());
    assert!(start.elapsed() < Duration::from_secs(10), "16 MiB took {:?}", start.elapsed());

    // One byte more: reported, not read.
    text.push('\n');
    let over = dir.write("over.yaml", &text);
    let message = format!("file is {} bytes, larger than the {MAX_FILE_BYTES}-byte limit", MAX_FILE_BYTES + 1);
    assert_build_errors(&over, &[(&over, "", "", &message)]);

    // Far over (sparse, so no disk is used): never read into memory.
    let huge = dir.0.join("huge.yaml");
    std::fs::File::create(&huge).unwrap().set_len(1 << 40).unwrap();
    assert_build_errors(&huge, &[(&huge, "", "", "file is 1099511627776 bytes, larger than the 16777216-byte limit")]);

    // In a directory, the big file is reported and the others still checked.
    let tree = Scratch::new("size-tree");
    let big = tree.0.join("a-big.yaml");
    std::fs::File::create(&big).unwrap().set_len(MAX_FILE_BYTES + 1).unwrap();
    let other = tree.write("b.yaml", "type: MeshFoo\nname: z\n");
    assert_build_errors(
        &tree.0,
        &[(&big, "", "", "larger than the 16777216-byte limit"), (&other, "MeshFoo/z", "type", "unknown resource type")],
    );
}

#[test]
fn files_that_are_not_utf8_text_are_rejected() {
    let dir = Scratch::new("binary");
    let latin1 = dir.write("latin1.yaml", b"type: Mesh\nname: caf\xe9\n");
    assert_build_errors(&latin1, &[(&latin1, "", "", "not UTF-8 text (byte 20)")]);

    let mut x: u32 = 12345;
    let random: Vec<u8> = (0..65536)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    let random = dir.write("random.yaml", random);
    assert_build_errors(&random, &[(&random, "", "", "not UTF-8 text (byte ")]);

    let nul = dir.write("nul.yaml", vec![0u8; 4096]);
    assert_build_errors(&nul, &[(&nul, "", "", "invalid YAML: control characters are not allowed")]);

    let utf16 = dir.write("utf16.yaml", "type: Mesh\n".encode_utf16().flat_map(u16::to_le_bytes).collect::<Vec<u8>>());
    assert_build_errors(&utf16, &[(&utf16, "", "", "invalid YAML: control characters are not allowed")]);
}

#[test]
fn empty_and_comment_only_files_are_errors() {
    let dir = Scratch::new("empty");
    let empty = dir.write("empty.yaml", "");
    assert_build_errors(&empty, &[(&empty, "", "", "contains no Kuma resources")]);
    let comments = dir.write("comments.yml", "# just\n# comments\n");
    assert_build_errors(&comments, &[(&comments, "", "", "contains no Kuma resources")]);
}

#[test]
fn directories_without_yaml_files_are_errors() {
    let empty = Scratch::new("no-files");
    assert_build_errors(&empty.0, &[(&empty.0, "", "", "no .yaml or .yml files found")]);

    // Other extensions and hidden files are not read: junk in them is no problem.
    let other = Scratch::new("no-yaml");
    other.write("notes.txt", "type: [");
    other.write("config.json", "{\"type\": \"Mesh\"}");
    other.write(".hidden.yaml", b"\xff\xfe junk");
    other.write(".git/config.yaml", "type: [");
    other.write("yaml/README", "not yaml");
    assert_build_errors(&other.0, &[(&other.0, "", "", "no .yaml or .yml files found")]);
}

#[test]
fn missing_paths_and_dangling_symlinks_are_reported() {
    let dir = Scratch::new("missing");
    let missing = dir.0.join("does-not-exist.yaml");
    assert_build_errors(&missing, &[(&missing, "", "", "cannot read: No such file or directory (os error 2)")]);
    let missing_dir = dir.0.join("no/such/dir");
    assert_build_errors(&missing_dir, &[(&missing_dir, "", "", "cannot read: No such file or directory")]);

    let dangling = dir.0.join("dangling.yaml");
    std::os::unix::fs::symlink(dir.0.join("gone.yaml"), &dangling).unwrap();
    assert_build_errors(&dangling, &[(&dangling, "", "", "cannot read: No such file or directory (os error 2)")]);

    // Inside a directory: the dangling link is reported, the good file read.
    let tree = Scratch::new("dangling-tree");
    tree.write("good.yaml", CANARY);
    let link = tree.0.join("link.yaml");
    std::os::unix::fs::symlink("/nonexistent/redirector/target.yaml", &link).unwrap();
    assert_build_errors(&tree.0, &[(&link, "", "", "cannot read: No such file or directory (os error 2)")]);

    // A symlink loop.
    let looped = dir.0.join("loop.yaml");
    std::os::unix::fs::symlink(&looped, &looped).unwrap();
    assert_build_errors(&looped, &[(&looped, "", "", "cannot read: Too many levels of symbolic links")]);
}

/// Directory symlinks back to `.` or to an ancestor are loops: each is
/// reported once and not followed, so the walk ends (it used to recurse
/// without end, growing without bound).
#[test]
fn directory_symlink_loops_are_reported_not_followed() {
    let tree = Scratch::new("dir-loops");
    tree.write("good.yaml", CANARY);
    tree.write("sub/more.yaml", "type: Mesh\nname: default\n");
    for (link, to) in [("self-a", "."), ("self-b", "."), ("sub/up", "..")] {
        std::os::unix::fs::symlink(to, tree.0.join(link)).unwrap();
    }
    let message = format!("symlink loop: leads back to {}; not followed", tree.0.display());
    assert_build_errors(
        &tree.0,
        &[
            (&tree.0.join("self-a"), "", "", &message),
            (&tree.0.join("self-b"), "", "", &message),
            (&tree.0.join("sub/up"), "", "", &message),
        ],
    );
}

#[test]
fn duplicates_across_files_name_both_files() {
    let dir = Scratch::new("dup-files");
    let a = dir.write("a.yaml", service_with_port("{port: 80, targetPort: 80}"));
    let b = dir.write("sub/b.yaml", service_with_port("{port: 81, targetPort: 81}"));
    let message = format!("duplicate resource: MeshService/a in mesh \"default\" is also defined in {}", a.display());
    assert_build_errors(&dir.0, &[(&b, "MeshService/a", "name", &message)]);
}

#[test]
fn every_file_of_a_directory_is_checked() {
    let dir = Scratch::new("many-files");
    dir.write("1-good.yaml", CANARY);
    let syntax = dir.write("2-syntax.yaml", "type: Mesh\nname: [m\n");
    let types = dir.write("3-types.yml", route_with_backend("weight: ten"));
    let binary = dir.write("deeper/4-binary.yaml", b"\xc3\x28");
    assert_build_errors(
        &dir.0,
        &[
            (&syntax, "", "", "document 1: invalid YAML"),
            (&types, "MeshTCPRoute/r", BACKEND_WEIGHT, "expected u64"),
            (&binary, "", "", "not UTF-8 text (byte 0)"),
        ],
    );
}

// --- known gaps: the behaviour these should have -----------------------------


/// A UTF-8 byte order mark (as some editors write) must not change the
/// meaning of the file. libyaml, told the input is UTF-8, counts the BOM as a
/// column, so the first line is indented past the others.
#[test]
fn a_byte_order_mark_is_ignored() {
    let text = format!("\u{feff}{}", service_with_port("{port: 80, targetPort: 80}"));
    if let Err(problems) = plan::build_str(Path::new(FILE), &text) {
        panic!("a BOM must be ignored, got:\n{problems}");
    }
}

/// A number beyond 64 bits is an error of its own document; the documents
/// after it are still checked.
#[test]
fn a_huge_number_does_not_hide_later_documents() {
    let text = format!("{}---\ntype: MeshFoo\nname: z\n", service_with_port("{port: 18446744073709551616}"));
    let problems = plan::build_str(Path::new(FILE), &text).unwrap_err().0;
    assert!(problems.iter().any(|p| p.resource == "MeshFoo/z"), "the second document was not checked:\n{}", describe(&problems));
}
