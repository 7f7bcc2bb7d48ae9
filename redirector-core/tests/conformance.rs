//! Kuma 2.13 conformance: a table of cases, each a set of resources (and
//! optionally DNS answers) and what Kuma would do with them, written as the
//! route every class of client gets for each destination.
//!
//! The behaviour comes from the research notes (`kuma-meshtcproute.md`,
//! sections 3-7) and Kuma's own plugin scenarios (section 6), restated here in
//! our own resources; nothing is copied from Kuma.
//!
//! Expectations are lines of a small language:
//!
//! ```text
//! route WHO DEST -> POLICY | W NAME = EP, EP | W NAME = -   the route of WHO for DEST
//! route WHO DEST -> POLICY | none                           ... with no backend at all
//! absent WHO DEST                                           WHO has no route for DEST
//! why WHO DEST ~ TEXT                                       an explanation line contains TEXT
//! proto WHO DEST = PROTOCOL | none                          the destination's appProtocol
//! class WHO = base | WHO2      class WHO != base | WHO2     class sharing
//! classes = N                                               number of classes
//! warn RESOURCE PATH ~ TEXT    error RESOURCE PATH ~ TEXT   a resolver problem (PATH `-` = empty)
//! ```
//!
//! WHO is `base` (processes outside workloads) or a workload's Dataplane
//! name; POLICY is `default` (Kuma's route to the destination itself) or
//! `MeshTCPRoute/name`. Resolver problems are checked exactly: each must be
//! expected, and each expected one must occur. Validation warnings are not
//! checked here (validation has its own tests); validation errors fail a case.

mod common;

use common::{resolve_checked, static_dns};
use proptest::prelude::*;
use redirector_core::{
    compile::{self, AliasTable, Table, words_ip},
    model::{Problem, Severity},
    resolve::{Resolution, ResolvedRoute, StaticDns, endpoints::inbound_endpoint},
};
use std::{
    collections::BTreeSet,
    fmt::Write as _,
    net::{IpAddr, SocketAddr},
};

// ====================================================================== runner

/// One conformance case.
struct Case {
    name: &'static str,
    yaml: String,
    dns: Vec<(&'static str, Vec<&'static str>)>,
    expect: String,
}

fn case(name: &'static str, yaml: impl Into<String>, expect: &str) -> Case {
    Case {
        name,
        yaml: yaml.into(),
        dns: Vec::new(),
        expect: expect.to_string(),
    }
}

impl Case {
    fn with_dns(mut self, host: &'static str, ips: &[&'static str]) -> Self {
        self.dns.push((host, ips.to_vec()));
        self
    }
}

fn dns_of(case: &Case) -> StaticDns {
    let entries: Vec<(&str, &[&str])> = case
        .dns
        .iter()
        .map(|(h, ips)| (*h, ips.as_slice()))
        .collect();
    static_dns(&entries)
}

/// A route as an expectation line.
fn render(who: &str, r: &ResolvedRoute) -> String {
    let mut line = format!(
        "route {who} {} -> {}",
        SocketAddr::new(r.vip, r.port),
        r.policy.as_deref().unwrap_or("default")
    );
    if r.backends.is_empty() {
        line += " | none";
    }
    for b in &r.backends {
        let eps: Vec<String> = b.endpoints.iter().map(ToString::to_string).collect();
        let eps = if eps.is_empty() {
            "-".to_string()
        } else {
            eps.join(", ")
        };
        let _ = write!(line, " | {} {} = {eps}", b.weight, b.name);
    }
    line
}

fn render_all(res: &Resolution) -> String {
    let mut out = String::new();
    for class in &res.classes {
        let members: Vec<&str> = res
            .workloads
            .iter()
            .filter(|w| w.class == class.id)
            .map(|w| w.dataplane.as_str())
            .collect();
        let _ = writeln!(out, "  class {} [{}]", class.id, members.join(", "));
        for r in &class.routes {
            let _ = writeln!(out, "    {}", render("_", r));
            for why in &r.why {
                let _ = writeln!(out, "      why: {why}");
            }
        }
    }
    out
}

/// The class id of WHO.
fn class_id(res: &Resolution, who: &str) -> Result<u32, String> {
    if who == "base" {
        return Ok(0);
    }
    res.class_of(&format!("Dataplane/{who}"))
        .map(|c| c.id)
        .ok_or_else(|| format!("{who} is not a workload"))
}

fn route_of<'a>(
    res: &'a Resolution,
    who: &str,
    dest: SocketAddr,
) -> Result<Option<&'a ResolvedRoute>, String> {
    let id = class_id(res, who)?;
    let class = res
        .classes
        .iter()
        .find(|c| c.id == id)
        .ok_or_else(|| format!("class {id} missing"))?;
    Ok(class
        .routes
        .iter()
        .find(|r| r.vip == dest.ip() && r.port == dest.port()))
}

fn parse_dest(s: &str) -> Result<SocketAddr, String> {
    s.parse().map_err(|e| format!("bad destination {s:?}: {e}"))
}

/// Normalises an expected route line to the rendered form (sorted endpoints,
/// single spaces).
fn normalise_route(line: &str) -> Result<String, String> {
    let (head, tail) = line.split_once(" -> ").ok_or("route line without ` -> `")?;
    let mut parts = tail.split('|').map(str::trim);
    let policy = parts.next().unwrap_or_default();
    let mut out = format!(
        "{} -> {policy}",
        head.split_whitespace().collect::<Vec<_>>().join(" ")
    );
    for part in parts {
        if part == "none" {
            out += " | none";
            continue;
        }
        let (lhs, eps) = part
            .split_once(" = ")
            .ok_or_else(|| format!("backend {part:?} without ` = `"))?;
        let mut eps: Vec<SocketAddr> = if eps.trim() == "-" {
            Vec::new()
        } else {
            eps.split(',')
                .map(|e| e.trim().parse().map_err(|_| format!("bad endpoint {e:?}")))
                .collect::<Result<_, _>>()?
        };
        eps.sort();
        let eps: Vec<String> = eps.iter().map(ToString::to_string).collect();
        let eps = if eps.is_empty() {
            "-".to_string()
        } else {
            eps.join(", ")
        };
        let _ = write!(out, " | {} = {eps}", lhs.trim());
    }
    Ok(out)
}

fn problem_matches(
    p: &Problem,
    severity: Severity,
    resource: &str,
    path: &str,
    text: &str,
) -> bool {
    let path = if path == "-" { "" } else { path };
    p.severity == severity && p.resource == resource && p.path == path && p.message.contains(text)
}

/// Runs one case; every failed expectation, or nothing.
fn run(case: &Case) -> Result<(), String> {
    let (res, problems) = resolve_checked(&case.yaml, &dns_of(case))
        .map_err(|errors| format!("input has validation errors: {errors:#?}"))?;
    let mut failures = Vec::new();
    let mut expected_problems = Vec::new();
    for raw in case.expect.lines() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        let outcome: Result<(), String> = (|| match words[0] {
            "route" => {
                let expected = normalise_route(line)?;
                let (who, dest) = (words[1], parse_dest(words[2])?);
                match route_of(&res, who, dest)? {
                    Some(r) if render(who, r) == expected => Ok(()),
                    Some(r) => Err(format!(
                        "expected {expected}\n       got {}",
                        render(who, r)
                    )),
                    None => Err(format!("expected {expected}\n       got no route")),
                }
            }
            "absent" => match route_of(&res, words[1], parse_dest(words[2])?)? {
                None => Ok(()),
                Some(r) => Err(format!("expected no route, got {}", render(words[1], r))),
            },
            "why" => {
                let text = line.split_once(" ~ ").ok_or("why without ` ~ `")?.1;
                let r = route_of(&res, words[1], parse_dest(words[2])?)?.ok_or("no route")?;
                if r.why.iter().any(|w| w.contains(text)) {
                    Ok(())
                } else {
                    Err(format!("{line}: why = {:#?}", r.why))
                }
            }
            "proto" => {
                let r = route_of(&res, words[1], parse_dest(words[2])?)?.ok_or("no route")?;
                let got = r.app_protocol.as_deref().unwrap_or("none");
                if got == words[4] {
                    Ok(())
                } else {
                    Err(format!("{line}: got {got}"))
                }
            }
            "class" => {
                let a = class_id(&res, words[1])?;
                let b = class_id(&res, words[3])?;
                match words[2] {
                    "=" if a == b => Ok(()),
                    "!=" if a != b => Ok(()),
                    _ => Err(format!(
                        "{line}: {} is class {a}, {} is class {b}",
                        words[1], words[3]
                    )),
                }
            }
            "classes" => {
                let n: usize = words[2].parse().map_err(|_| "bad count")?;
                if res.classes.len() == n {
                    Ok(())
                } else {
                    Err(format!("{line}: got {}", res.classes.len()))
                }
            }
            "warn" | "error" => {
                let severity = if words[0] == "warn" {
                    Severity::Warning
                } else {
                    Severity::Error
                };
                let text = line.split_once(" ~ ").ok_or("problem without ` ~ `")?.1;
                expected_problems.push((
                    severity,
                    words[1].to_string(),
                    words[2].to_string(),
                    text.to_string(),
                ));
                if problems
                    .iter()
                    .any(|p| problem_matches(p, severity, words[1], words[2], text))
                {
                    Ok(())
                } else {
                    Err(format!("{line}: not reported"))
                }
            }
            other => Err(format!("unknown expectation {other:?}")),
        })();
        if let Err(e) = outcome {
            failures.push(format!("  {line}\n    => {e}"));
        }
    }
    for p in &problems {
        if !expected_problems
            .iter()
            .any(|(s, r, path, text)| problem_matches(p, *s, r, path, text))
        {
            failures.push(format!("  unexpected problem: {p}"));
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{}\n  resolution:\n{}",
            failures.join("\n"),
            render_all(&res)
        ))
    }
}

/// Cases where we knowingly differ from Kuma (see the README): Kuma 2.13
/// ranks a Dataplane targetRef by name above one by labels but ties name with
/// "every Dataplane", which is not a total order; we rank name > labels/all.
const KNOWN_BUGS: &[&str] = &[
    "DEVIATION: Dataplane by name does not outrank Dataplane without name or labels",
];

#[test]
fn conformance_table() {
    let all = cases();
    let mut names = BTreeSet::new();
    for c in &all {
        assert!(names.insert(c.name), "duplicate case name {:?}", c.name);
    }
    for bug in KNOWN_BUGS {
        assert!(names.contains(bug), "KNOWN_BUGS lists unknown case {bug:?}");
    }
    let failures: Vec<String> = all
        .iter()
        .filter(|c| !KNOWN_BUGS.contains(&c.name))
        .filter_map(|c| run(c).err().map(|e| format!("case {:?}:\n{e}", c.name)))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n\n{}",
        failures.len(),
        all.len(),
        failures.join("\n\n")
    );
}

#[test]
fn conformance_table_has_at_least_sixty_passing_cases() {
    let passing = cases()
        .iter()
        .filter(|c| !KNOWN_BUGS.contains(&c.name))
        .count();
    assert!(passing >= 60, "{passing}");
}

#[test]
fn known_bug_cases_still_fail() {
    // When a bug is fixed, its case passes: move it out of KNOWN_BUGS and drop
    // its ignored test.
    for name in KNOWN_BUGS {
        let all = cases();
        let c = all.iter().find(|c| c.name == *name).unwrap();
        assert!(
            run(c).is_err(),
            "{name:?} passes now: the bug is fixed, update KNOWN_BUGS"
        );
    }
}

// ====================================================================== fixtures

/// The shared universe (mesh `default`):
/// - MeshService `backend` (10.0.0.1): port 80 `http` (tcp) -> inbound 8080,
///   port 9090 `metrics` -> inbound 9090; endpoints 10.1.0.1:8080, 10.1.0.2:8080
///   and (9090) 10.1.0.1:9090, whose inbound does not carry the selector tags;
/// - MeshServices `backend-v1` (10.0.0.2), `backend-v2` (10.0.0.3), `other` (10.0.0.4), port 80;
/// - legacy `kuma.io/service: backend` = 10.1.0.1:8080 (version v1), 10.1.0.2:8080 (version v2);
/// - workloads `web` (labels tier=front; inbound tags team=shop, kuma.io/service=web)
///   and `batch` (tier=back; team=data, kuma.io/service=batch).
const UNIVERSE: &str = r#"
---
type: MeshService
name: backend
spec:
  selector: {dataplaneTags: {app: backend}}
  ports:
    - {port: 80, targetPort: 8080, name: http, appProtocol: tcp}
    - {port: 9090, targetPort: 9090, name: metrics}
status: {vips: [{ip: 10.0.0.1}]}
---
type: MeshService
name: backend-v1
spec:
  selector: {dataplaneTags: {app: backend, version: v1}}
  ports: [{port: 80, targetPort: 8080}]
status: {vips: [{ip: 10.0.0.2}]}
---
type: MeshService
name: backend-v2
spec:
  selector: {dataplaneTags: {app: backend, version: v2}}
  ports: [{port: 80, targetPort: 8080}]
status: {vips: [{ip: 10.0.0.3}]}
---
type: MeshService
name: other
spec:
  selector: {dataplaneTags: {app: other}}
  ports: [{port: 80, targetPort: 8080}]
status: {vips: [{ip: 10.0.0.4}]}
---
type: Dataplane
name: backend-1
networking:
  address: 10.1.0.1
  inbound:
    - {port: 8080, tags: {kuma.io/service: backend, app: backend, version: v1}}
    - {port: 9090, name: metrics, tags: {kuma.io/service: backend-metrics}}
---
type: Dataplane
name: backend-2
networking:
  address: 10.1.0.2
  inbound:
    - {port: 8080, tags: {kuma.io/service: backend, app: backend, version: v2}}
---
type: Dataplane
name: other-1
networking:
  address: 10.1.0.4
  inbound:
    - {port: 8080, tags: {kuma.io/service: other, app: other}}
---
type: Dataplane
name: web
labels: {redirector.io/cgroup: web.slice, tier: front}
networking:
  address: 10.2.0.1
  inbound:
    - {port: 8000, tags: {kuma.io/service: web, app: web, team: shop}}
---
type: Dataplane
name: batch
labels: {redirector.io/cgroup: batch.slice, tier: back}
networking:
  address: 10.2.0.2
  inbound:
    - {port: 7000, tags: {kuma.io/service: batch, app: batch, team: data}}
"#;

/// A workload in Kubernetes namespace `shop` (label `k8s.kuma.io/namespace`).
const SHOPPER: &str = "---\ntype: Dataplane\nname: shopper\nlabels: {redirector.io/cgroup: shopper.slice, k8s.kuma.io/namespace: shop}\nnetworking:\n  address: 10.2.0.3\n  inbound: [{port: 8000, tags: {kuma.io/service: shopper, k8s.kuma.io/namespace: shop}}]\n";

fn u(extra: &str) -> String {
    format!("{UNIVERSE}{extra}")
}

/// A MeshTCPRoute. `labels` and `top` are flow YAML (`""` leaves them out);
/// `to` is a flow list.
fn tcp(name: &str, labels: &str, top: &str, to: &str) -> String {
    let mut s = format!("---\ntype: MeshTCPRoute\nname: {name}\n");
    if !labels.is_empty() {
        s += &format!("labels: {labels}\n");
    }
    s += "spec:\n";
    if !top.is_empty() {
        s += &format!("  targetRef: {top}\n");
    }
    s + &format!("  to: {to}\n")
}

/// One `to` entry with one rule.
fn to(target: &str, backends: &str) -> String {
    format!("{{targetRef: {target}, rules: [{{default: {{backendRefs: {backends}}}}}]}}")
}

/// `tcp` with a single `to` entry for `target`.
fn tcp1(name: &str, labels: &str, top: &str, target: &str, backends: &str) -> String {
    tcp(name, labels, top, &format!("[{}]", to(target, backends)))
}

const MESH: &str = "{kind: Mesh}";
const BACKEND: &str = "{kind: MeshService, name: backend}";
const BACKEND_HTTP: &str = "{kind: MeshService, name: backend, sectionName: http}";
const TO_V1: &str = "[{kind: MeshService, name: backend-v1, port: 80}]";
const TO_V2: &str = "[{kind: MeshService, name: backend-v2, port: 80}]";
const TO_OTHER: &str = "[{kind: MeshService, name: other, port: 80}]";

/// A workload Dataplane bound to cgroup `<name>.slice`, with flow-style
/// inbounds and outbounds (`""` for none).
fn workload(name: &str, address: &str, inbound: &str, outbound: &str) -> String {
    let mut s = format!(
        "---\ntype: Dataplane\nname: {name}\nlabels: {{redirector.io/cgroup: {name}.slice}}\nnetworking:\n  address: {address}\n  inbound: {inbound}\n"
    );
    if !outbound.is_empty() {
        s += &format!("  outbound: {outbound}\n");
    }
    s
}

/// A MeshHTTPRoute (only its targets matter to redirector).
fn http_route(name: &str, top: &str, target: &str) -> String {
    format!(
        "---\ntype: MeshHTTPRoute\nname: {name}\nspec:\n  targetRef: {top}\n  to:\n    - targetRef: {target}\n      rules:\n        - matches: [{{path: {{type: PathPrefix, value: /}}}}]\n          default: {{backendRefs: [{{kind: MeshService, name: somewhere, port: 80}}]}}\n"
    )
}

// Frequently expected route tails.
const BACKEND_SELF: &str = "1 MeshService/backend:80 = 10.1.0.1:8080, 10.1.0.2:8080";
const V1: &str = "1 MeshService/backend-v1:80 = 10.1.0.1:8080";
const V2: &str = "1 MeshService/backend-v2:80 = 10.1.0.2:8080";
const OTHER: &str = "1 MeshService/other:80 = 10.1.0.4:8080";
const LEGACY_BACKEND: &str = "1 kuma.io/service backend = 10.1.0.1:8080, 10.1.0.2:8080";

/// `route WHO 10.0.0.1:80 -> POLICY | TAIL`.
fn r80(who: &str, policy: &str, tail: &str) -> String {
    format!("route {who} 10.0.0.1:80 -> {policy} | {tail}\n")
}

/// `r80` for several workloads at once.
fn r80s(whos: &[&str], policy: &str, tail: &str) -> String {
    whos.iter().map(|w| r80(w, policy, tail)).collect()
}

fn lines(parts: &[&str]) -> String {
    parts.join("\n")
}

// MeshMultiZoneService fixture: east-api and west-api carry label global=api,
// south-api carries global=other.
const MULTIZONE: &str = r#"
---
type: MeshService
name: east-api
labels: {global: api}
spec:
  selector: {dataplaneTags: {app: api, zone: east}}
  ports: [{port: 80, targetPort: 8080}]
status: {vips: [{ip: 10.0.8.1}]}
---
type: MeshService
name: west-api
labels: {global: api}
spec:
  selector: {dataplaneTags: {app: api, zone: west}}
  ports: [{port: 80, targetPort: 8080}, {port: 81, targetPort: 8081}]
status: {vips: [{ip: 10.0.8.2}]}
---
type: MeshService
name: south-api
labels: {global: other}
spec:
  selector: {dataplaneTags: {app: api, zone: south}}
  ports: [{port: 80, targetPort: 8080}]
status: {vips: [{ip: 10.0.8.3}]}
---
type: Dataplane
name: api-east
networking: {address: 10.3.0.1, inbound: [{port: 8080, tags: {app: api, zone: east}}]}
---
type: Dataplane
name: api-west
networking: {address: 10.3.0.2, inbound: [{port: 8080, tags: {app: api, zone: west}}, {port: 8081, tags: {app: api, zone: west}}]}
---
type: Dataplane
name: api-south
networking: {address: 10.3.0.3, inbound: [{port: 8080, tags: {app: api, zone: south}}]}
---
type: MeshMultiZoneService
name: api
spec:
  selector: {meshService: {matchLabels: {global: api}}}
  ports: [{port: 80, name: http, appProtocol: tcp}, {port: 81}]
status: {vips: [{ip: 10.0.9.1}]}
"#;

/// An `app` MeshService (10.0.10.1:80 -> 10.4.0.1:8080) whose port has
/// `appProtocol` (or none), with a mesh-wide MeshTCPRoute sending it to
/// `backend-v1` and a mesh-wide MeshHTTPRoute targeting it.
fn http_fixture(app_protocol: Option<&str>, with_http_route: bool) -> String {
    let protocol = app_protocol
        .map(|p| format!(", appProtocol: {p}"))
        .unwrap_or_default();
    let mut s = u(&format!(
        "---\ntype: MeshService\nname: app\nspec:\n  selector: {{dataplaneTags: {{app: app}}}}\n  ports: [{{port: 80, targetPort: 8080{protocol}}}]\nstatus: {{vips: [{{ip: 10.0.10.1}}]}}\n---\ntype: Dataplane\nname: app-1\nnetworking: {{address: 10.4.0.1, inbound: [{{port: 8080, tags: {{app: app}}}}]}}\n"
    ));
    s += &tcp1("tcp", "", MESH, "{kind: MeshService, name: app}", TO_V1);
    if with_http_route {
        s += &http_route("http", MESH, "{kind: MeshService, name: app}");
    }
    s
}

const APP_SELF: &str = "route base 10.0.10.1:80 -> default | 1 MeshService/app:80 = 10.4.0.1:8080";
const APP_TCP: &str =
    "route base 10.0.10.1:80 -> MeshTCPRoute/tcp | 1 MeshService/backend-v1:80 = 10.1.0.1:8080";

/// A Kubernetes-form MeshService `backend` in namespace kuma-demo (10.0.11.1,
/// ports 3001 `http` and 3002), with one Dataplane.
const KUBE_DEMO: &str = r#"
---
apiVersion: kuma.io/v1alpha1
kind: MeshService
metadata:
  name: backend
  namespace: kuma-demo
  labels: {kuma.io/display-name: backend, k8s.kuma.io/namespace: kuma-demo, kuma.io/mesh: default}
spec:
  selector: {dataplaneTags: {app: demo-backend}}
  ports: [{port: 3001, targetPort: 3001, name: http}, {port: 3002, targetPort: 3002}]
status: {vips: [{ip: 10.0.11.1}]}
---
type: Dataplane
name: demo-1
networking: {address: 10.5.0.1, inbound: [{port: 3001, tags: {app: demo-backend}}, {port: 3002, tags: {app: demo-backend}}]}
"#;

/// Two Kubernetes-form MeshServices `web`, in namespaces blue and green.
const BLUE_GREEN: &str = r#"
---
apiVersion: kuma.io/v1alpha1
kind: MeshService
metadata: {name: web, namespace: blue}
spec: {selector: {dataplaneTags: {app: web, ns: blue}}, ports: [{port: 80, targetPort: 80}]}
status: {vips: [{ip: 10.0.1.1}]}
---
apiVersion: kuma.io/v1alpha1
kind: MeshService
metadata: {name: web, namespace: green}
spec: {selector: {dataplaneTags: {app: web, ns: green}}, ports: [{port: 80, targetPort: 80}]}
status: {vips: [{ip: 10.0.2.1}]}
---
type: Dataplane
name: blue-1
networking: {address: 10.1.1.1, inbound: [{port: 80, tags: {app: web, ns: blue}}]}
---
type: Dataplane
name: green-1
networking: {address: 10.1.2.1, inbound: [{port: 80, tags: {app: web, ns: green}}]}
"#;

/// A MeshExternalService.
fn mes(name: &str, vip: &str, port: u16, protocol: &str, endpoints: &str) -> String {
    format!(
        "---\ntype: MeshExternalService\nname: {name}\nspec:\n  match: {{type: HostnameGenerator, port: {port}, protocol: {protocol}}}\n  endpoints: {endpoints}\nstatus: {{vip: {{ip: {vip}}}}}\n"
    )
}

// ====================================================================== cases

#[allow(clippy::too_many_lines)]
fn cases() -> Vec<Case> {
    let mut v = Vec::new();

    // ------------------------------------------------------------ no policy
    v.push(case(
        "no policy: every destination goes to itself",
        u(""),
        &lines(&[
            &r80("base", "default", BACKEND_SELF),
            "route base 10.0.0.1:9090 -> default | 1 MeshService/backend:9090 = 10.1.0.1:9090",
            "route base 10.0.0.2:80 -> default | 1 MeshService/backend-v1:80 = 10.1.0.1:8080",
            "route base 10.0.0.3:80 -> default | 1 MeshService/backend-v2:80 = 10.1.0.2:8080",
            "route base 10.0.0.4:80 -> default | 1 MeshService/other:80 = 10.1.0.4:8080",
            "why base 10.0.0.1:80 ~ no MeshTCPRoute targets this destination",
            "proto base 10.0.0.1:80 = tcp",
            "proto base 10.0.0.1:9090 = none",
            "class web = base",
            "class batch = base",
            "classes = 1",
        ]),
    ));

    // ------------------------------------------------------------ selection by top-level kind
    v.push(case(
        "Mesh applies to the base class and every workload",
        u(&tcp1("r", "", MESH, BACKEND, TO_V1)),
        &(r80s(&["base", "web", "batch"], "MeshTCPRoute/r", V1)
            + "route base 10.0.0.1:9090 -> MeshTCPRoute/r | 1 MeshService/backend-v1:80 = 10.1.0.1:8080\n"
            + "route base 10.0.0.2:80 -> default | 1 MeshService/backend-v1:80 = 10.1.0.1:8080\n"
            + "class web = base\nclass batch = base\nclasses = 1\nwhy base 10.0.0.1:80 ~ MeshTCPRoute/r to[0] wins"),
    ));
    v.push(case(
        "a missing top-level targetRef means Mesh",
        u(&tcp1("r", "", "", BACKEND, TO_V1)),
        &(r80s(&["base", "web", "batch"], "MeshTCPRoute/r", V1) + "classes = 1"),
    ));
    v.push(case(
        "MeshSubset selects workloads by inbound tags, never the base class",
        u(&tcp1(
            "r",
            "",
            "{kind: MeshSubset, tags: {team: shop}}",
            BACKEND,
            TO_V2,
        )),
        &(r80s(&["base", "batch"], "default", BACKEND_SELF)
            + &r80("web", "MeshTCPRoute/r", V2)
            + "class web != base\nclass batch = base\nclasses = 2"),
    ));
    v.push(case(
        "a * tag selector matches any value but the key must exist",
        // Kuma's validator allows `*` in MeshServiceSubset tags (a selector), not in MeshSubset tags.
        u(&(tcp1(
            "r",
            "",
            "{kind: MeshServiceSubset, name: web, tags: {team: '*'}}",
            BACKEND,
            TO_V2,
        ) + &workload(
            "web-2",
            "10.2.0.8",
            "[{port: 1, tags: {kuma.io/service: web, team: ops}}]",
            "",
        ) + &workload(
            "web-3",
            "10.2.0.9",
            "[{port: 1, tags: {kuma.io/service: web}}]",
            "",
        ))),
        &(r80s(&["web", "web-2"], "MeshTCPRoute/r", V2)
            + &r80s(&["base", "web-3", "batch"], "default", BACKEND_SELF)
            + "class web = web-2\nclass web-3 = base\nclasses = 2"),
    ));
    v.push(case(
        "MeshSubset whose tags no inbound carries selects nobody",
        u(&tcp1(
            "r",
            "",
            "{kind: MeshSubset, tags: {team: ops}}",
            BACKEND,
            TO_V2,
        )),
        &(r80s(&["base", "web", "batch"], "default", BACKEND_SELF) + "classes = 1"),
    ));
    v.push(case(
        "MeshService top level selects workloads whose inbound has that kuma.io/service",
        u(&tcp1(
            "r",
            "",
            "{kind: MeshService, name: batch}",
            BACKEND,
            TO_V2,
        )),
        &(r80s(&["base", "web"], "default", BACKEND_SELF)
            + &r80("batch", "MeshTCPRoute/r", V2)
            + "class web = base"),
    ));
    v.push(case(
        "MeshServiceSubset top level needs the service and every tag",
        u(&(tcp1(
            "shop",
            "",
            "{kind: MeshServiceSubset, name: web, tags: {team: shop}}",
            BACKEND,
            TO_V1,
        ) + &tcp1(
            "data",
            "",
            "{kind: MeshServiceSubset, name: web, tags: {team: data}}",
            BACKEND,
            TO_V2,
        ))),
        &(r80("web", "MeshTCPRoute/shop", V1) + &r80s(&["base", "batch"], "default", BACKEND_SELF)),
    ));
    v.push(case(
        "Dataplane by labels looks at resource labels, not inbound tags",
        u(&(tcp1(
            "by-label",
            "",
            "{kind: Dataplane, labels: {tier: back}}",
            BACKEND,
            TO_V1,
        ) + &tcp1(
            "by-tag",
            "",
            "{kind: Dataplane, labels: {team: shop}}",
            BACKEND,
            TO_V2,
        ))),
        &(r80("batch", "MeshTCPRoute/by-label", V1)
            + &r80s(&["base", "web"], "default", BACKEND_SELF)),
    ));
    v.push(case(
        "Dataplane by name selects that workload only",
        u(&tcp1(
            "r",
            "",
            "{kind: Dataplane, name: web}",
            BACKEND,
            TO_V1,
        )),
        &(r80("web", "MeshTCPRoute/r", V1) + &r80s(&["base", "batch"], "default", BACKEND_SELF)),
    ));
    v.push(case(
        "Dataplane without name or labels selects every workload but not the base class",
        u(&tcp1("r", "", "{kind: Dataplane}", BACKEND, TO_V1)),
        &(r80s(&["web", "batch"], "MeshTCPRoute/r", V1)
            + &r80("base", "default", BACKEND_SELF)
            + "class web = batch\nclasses = 2"),
    ));
    v.push(case(
        "a workload without inbounds is selected by no Mesh policy (Kuma matches proxies by inbound)",
        u(&(tcp1("r", "", MESH, BACKEND, TO_V1)
            + "---\ntype: Dataplane\nname: bare\nlabels: {redirector.io/cgroup: bare.slice}\nnetworking: {address: 10.2.0.4}\n")),
        &(r80("bare", "default", BACKEND_SELF) + &r80("base", "MeshTCPRoute/r", V1) + "class bare != base"),
    ));
    v.push(case(
        "MeshGateway policies never apply to sidecarless workloads",
        u(&tcp1(
            "gw",
            "",
            "{kind: MeshGateway, name: edge}",
            MESH,
            TO_V1,
        )),
        &(r80s(&["base", "web", "batch"], "default", BACKEND_SELF) + "classes = 1"),
    ));
    v.push(case(
        "proxyTypes including Sidecar applies",
        u(&(tcp1("sidecar", "", "{kind: Mesh, proxyTypes: [Sidecar]}", BACKEND_HTTP, TO_V1)
            + &tcp1("both", "", "{kind: Mesh, proxyTypes: [Gateway, Sidecar]}", "{kind: MeshService, name: other}", TO_V2))),
        &(r80s(&["base", "web"], "MeshTCPRoute/sidecar", V1)
            + "route base 10.0.0.4:80 -> MeshTCPRoute/both | 1 MeshService/backend-v2:80 = 10.1.0.2:8080\nclasses = 1"),
    ));
    v.push(case(
        "proxyTypes without Sidecar never applies",
        u(&tcp1(
            "gateways",
            "",
            "{kind: Mesh, proxyTypes: [Gateway]}",
            BACKEND,
            TO_V1,
        )),
        &(r80s(&["base", "web", "batch"], "default", BACKEND_SELF) + "classes = 1"),
    ));

    // ------------------------------------------------------------ policy order
    v.push(case(
        "kind rank: MeshSubset beats Mesh whatever the names",
        u(&(tcp1("a-mesh", "", MESH, BACKEND, TO_V1) + &tcp1("z-subset", "", "{kind: MeshSubset, tags: {team: shop}}", BACKEND, TO_V2))),
        &(r80s(&["base", "batch"], "MeshTCPRoute/a-mesh", V1)
            + &r80("web", "MeshTCPRoute/z-subset", V2)
            + "why web 10.0.0.1:80 ~ MeshTCPRoute/a-mesh to[0] targets this destination but is overridden\n"
            + "why web 10.0.0.1:80 ~ MeshTCPRoute/z-subset to[0] wins"),
    ));
    v.push(case(
        "kind rank: Dataplane ranks below MeshSubset",
        u(
            &(tcp1("a-dp", "", "{kind: Dataplane, name: web}", BACKEND, TO_V2)
                + &tcp1(
                    "z-subset",
                    "",
                    "{kind: MeshSubset, tags: {team: shop}}",
                    BACKEND,
                    TO_V1,
                )),
        ),
        &r80("web", "MeshTCPRoute/z-subset", V1),
    ));
    v.push(case(
        "kind rank: Dataplane beats Mesh",
        u(&(tcp1("a-mesh", "", MESH, BACKEND, TO_V2)
            + &tcp1(
                "z-dp",
                "",
                "{kind: Dataplane, labels: {tier: front}}",
                BACKEND,
                TO_V1,
            ))),
        &(r80("web", "MeshTCPRoute/z-dp", V1) + &r80("base", "MeshTCPRoute/a-mesh", V2)),
    ));
    v.push(case(
        "kind rank: MeshService beats MeshSubset and Dataplane",
        u(&(tcp1(
            "a-subset",
            "",
            "{kind: MeshSubset, tags: {team: shop}}",
            BACKEND,
            TO_V1,
        ) + &tcp1("a-dp", "", "{kind: Dataplane, name: web}", BACKEND, TO_V1)
            + &tcp1(
                "z-svc",
                "",
                "{kind: MeshService, name: web}",
                BACKEND,
                TO_V2,
            ))),
        &r80("web", "MeshTCPRoute/z-svc", V2),
    ));
    v.push(case(
        "kind rank: MeshServiceSubset beats MeshService",
        u(&(tcp1(
            "a-svc",
            "",
            "{kind: MeshService, name: web}",
            BACKEND,
            TO_V1,
        ) + &tcp1(
            "z-sub",
            "",
            "{kind: MeshServiceSubset, name: web, tags: {team: shop}}",
            BACKEND,
            TO_V2,
        ))),
        &r80("web", "MeshTCPRoute/z-sub", V2),
    ));
    v.push(case(
        "origin: zone beats no origin beats global",
        u(
            &(tcp1("a-global", "{kuma.io/origin: global}", MESH, BACKEND, TO_V1)
                + &tcp1("b-none", "", MESH, BACKEND, TO_V2)
                + &tcp1("c-zone", "{kuma.io/origin: zone}", MESH, BACKEND, TO_OTHER)),
        ),
        &r80s(&["base", "web"], "MeshTCPRoute/c-zone", OTHER),
    ));
    v.push(case(
        "origin: no origin beats global",
        u(
            &(tcp1("a-global", "{kuma.io/origin: global}", MESH, BACKEND, TO_V1)
                + &tcp1("b-none", "", MESH, BACKEND, TO_V2)),
        ),
        &r80("base", "MeshTCPRoute/b-none", V2),
    ));
    // Consumer and workload-owner policies apply only to proxies of their own
    // namespace (label k8s.kuma.io/namespace): the `shopper` workload is in `shop`.
    v.push(case(
        "role: consumer beats producer beats system",
        u(&(SHOPPER.to_string()
            + &tcp1(
                "a-producer",
                "{kuma.io/policy-role: producer}",
                MESH,
                BACKEND,
                TO_V1,
            )
            + &tcp1(
                "b-system",
                "{kuma.io/policy-role: system}",
                MESH,
                BACKEND,
                TO_OTHER,
            )
            + &tcp1(
                "c-consumer",
                "{kuma.io/policy-role: consumer, k8s.kuma.io/namespace: shop}",
                MESH,
                BACKEND,
                TO_V2,
            ))),
        &r80("shopper", "MeshTCPRoute/c-consumer", V2),
    ));
    v.push(case(
        "role: producer beats system (no label)",
        u(&(tcp1("a-system", "", MESH, BACKEND, TO_V1)
            + &tcp1(
                "b-producer",
                "{kuma.io/policy-role: producer}",
                MESH,
                BACKEND,
                TO_V2,
            ))),
        &r80("base", "MeshTCPRoute/b-producer", V2),
    ));
    v.push(case(
        "role: workload-owner beats consumer",
        u(&(SHOPPER.to_string()
            + &tcp1(
                "a-consumer",
                "{kuma.io/policy-role: consumer, k8s.kuma.io/namespace: shop}",
                MESH,
                BACKEND,
                TO_V1,
            )
            + &tcp1(
                "b-owner",
                "{kuma.io/policy-role: workload-owner, k8s.kuma.io/namespace: shop}",
                MESH,
                BACKEND,
                TO_V2,
            ))),
        &r80("shopper", "MeshTCPRoute/b-owner", V2),
    ));
    v.push(case(
        "origin is compared before role",
        u(&(SHOPPER.to_string()
            + &tcp1(
                "a-global-owner",
                "{kuma.io/origin: global, kuma.io/policy-role: workload-owner, k8s.kuma.io/namespace: shop}",
                MESH,
                BACKEND,
                TO_V1,
            )
            + &tcp1("b-zone-system", "{kuma.io/origin: zone}", MESH, BACKEND, TO_V2))),
        &r80s(&["shopper", "base"], "MeshTCPRoute/b-zone-system", V2),
    ));
    v.push(case(
        "kind is compared before origin",
        u(&(tcp1(
            "a-zone-mesh",
            "{kuma.io/origin: zone}",
            MESH,
            BACKEND,
            TO_V1,
        ) + &tcp1(
            "b-global-subset",
            "{kuma.io/origin: global}",
            "{kind: MeshSubset, tags: {team: shop}}",
            BACKEND,
            TO_V2,
        ))),
        &(r80("web", "MeshTCPRoute/b-global-subset", V2)
            + &r80("base", "MeshTCPRoute/a-zone-mesh", V1)),
    ));
    v.push(case(
        "name: the alphabetically first wins (listed first)",
        u(&(tcp1("alpha", "", MESH, BACKEND, TO_V1) + &tcp1("beta", "", MESH, BACKEND, TO_V2))),
        &r80s(&["base", "web"], "MeshTCPRoute/alpha", V1),
    ));
    v.push(case(
        "name: the alphabetically first wins (listed last)",
        u(&(tcp1("beta", "", MESH, BACKEND, TO_V2) + &tcp1("alpha", "", MESH, BACKEND, TO_V1))),
        &r80s(&["base", "web"], "MeshTCPRoute/alpha", V1),
    ));
    v.push(case(
        "name: kuma.io/display-name is the name compared",
        u(
            &(tcp1("zzz", "{kuma.io/display-name: aaa}", MESH, BACKEND, TO_V1)
                + &tcp1("mmm", "", MESH, BACKEND, TO_V2)),
        ),
        &r80("base", "MeshTCPRoute/zzz", V1),
    ));

    // ------------------------------------------------------------ to-entry order
    v.push(case(
        "sectionName beats sectionless at equal policy attributes whatever the names",
        u(&(tcp1("a-whole", "", MESH, BACKEND, TO_V1) + &tcp1("z-port", "", MESH, BACKEND_HTTP, TO_V2))),
        &(r80("base", "MeshTCPRoute/z-port", V2)
            + "route base 10.0.0.1:9090 -> MeshTCPRoute/a-whole | 1 MeshService/backend-v1:80 = 10.1.0.1:8080"),
    ));
    v.push(case(
        "policy attributes beat sectionName",
        u(&(tcp1("a-mesh-port", "", MESH, BACKEND_HTTP, TO_V1)
            + &tcp1("z-subset-whole", "", "{kind: MeshSubset, tags: {team: shop}}", BACKEND, TO_V2))),
        &(r80("web", "MeshTCPRoute/z-subset-whole", V2)
            + "route web 10.0.0.1:9090 -> MeshTCPRoute/z-subset-whole | 1 MeshService/backend-v2:80 = 10.1.0.2:8080\n"
            + &r80("base", "MeshTCPRoute/a-mesh-port", V1)
            + "route base 10.0.0.1:9090 -> default | 1 MeshService/backend:9090 = 10.1.0.1:9090"),
    ));
    v.push(case(
        "origin beats sectionName",
        u(&(tcp1(
            "a-zone-whole",
            "{kuma.io/origin: zone}",
            MESH,
            BACKEND,
            TO_V1,
        ) + &tcp1("b-port", "", MESH, BACKEND_HTTP, TO_V2))),
        &r80("base", "MeshTCPRoute/a-zone-whole", V1),
    ));
    v.push(case(
        "a later to[] entry beats an earlier one in the same policy",
        u(&tcp("r", "", MESH, &format!("[{}, {}]", to(BACKEND, TO_V1), to(BACKEND, TO_V2)))),
        &(r80("base", "MeshTCPRoute/r", V2)
            + "why base 10.0.0.1:80 ~ MeshTCPRoute/r to[0] targets this destination but is overridden\nwhy base 10.0.0.1:80 ~ MeshTCPRoute/r to[1] wins"),
    ));
    v.push(case(
        "a sectioned entry beats a later sectionless one in the same policy",
        u(&tcp("r", "", MESH, &format!("[{}, {}]", to(BACKEND_HTTP, TO_V1), to(BACKEND, TO_V2)))),
        &(r80("base", "MeshTCPRoute/r", V1)
            + "route base 10.0.0.1:9090 -> MeshTCPRoute/r | 1 MeshService/backend-v2:80 = 10.1.0.2:8080"),
    ));
    v.push(case(
        "to by labels targets every MeshService carrying them",
        u(&(String::from(
            "---\ntype: MeshService\nname: canary\nlabels: {track: canary}\nspec:\n  selector: {dataplaneTags: {app: backend, version: v2}}\n  ports: [{port: 80, targetPort: 8080}]\nstatus: {vips: [{ip: 10.0.0.5}]}\n",
        ) + &tcp1("r", "", MESH, "{kind: MeshService, labels: {track: canary}}", TO_V1))),
        "route base 10.0.0.5:80 -> MeshTCPRoute/r | 1 MeshService/backend-v1:80 = 10.1.0.1:8080\n\
         route base 10.0.0.1:80 -> default | 1 MeshService/backend:80 = 10.1.0.1:8080, 10.1.0.2:8080",
    ));

    // ------------------------------------------------------------ to without rules
    v.push(case(
        "to without rules with a sectionName goes to that port of the service itself",
        u(&tcp("r", "", MESH, "[{targetRef: {kind: MeshService, name: backend, sectionName: metrics}}]")),
        "route base 10.0.0.1:9090 -> MeshTCPRoute/r | 1 MeshService/backend:9090 = 10.1.0.1:9090\n\
         route base 10.0.0.1:80 -> default | 1 MeshService/backend:80 = 10.1.0.1:8080, 10.1.0.2:8080\n\
         why base 10.0.0.1:9090 ~ no rules: traffic goes to the `to` target itself",
    ));
    v.push(case(
        "to without rules or sectionName is a legacy kuma.io/service reference",
        u(&tcp(
            "r",
            "",
            MESH,
            "[{targetRef: {kind: MeshService, name: backend}}]",
        )),
        &format!(
            "{}route base 10.0.0.1:9090 -> MeshTCPRoute/r | {LEGACY_BACKEND}",
            r80("base", "MeshTCPRoute/r", LEGACY_BACKEND)
        ),
    ));
    v.push(case(
        "to without rules overrides a less specific policy's split",
        u(&(tcp1(
            "a-mesh",
            "",
            MESH,
            BACKEND,
            "[{kind: MeshService, name: backend-v1, port: 80, weight: 50}, {kind: MeshService, name: backend-v2, port: 80, weight: 50}]",
        ) + &tcp("z-dp", "", "{kind: Dataplane, name: web}", "[{targetRef: {kind: MeshService, name: backend, sectionName: http}}]"))),
        &(r80("web", "MeshTCPRoute/z-dp", BACKEND_SELF)
            + &r80("base", "MeshTCPRoute/a-mesh", "50 MeshService/backend-v1:80 = 10.1.0.1:8080 | 50 MeshService/backend-v2:80 = 10.1.0.2:8080")
            + "route web 10.0.0.1:9090 -> MeshTCPRoute/a-mesh | 50 MeshService/backend-v1:80 = 10.1.0.1:8080 | 50 MeshService/backend-v2:80 = 10.1.0.2:8080"),
    ));

    // ------------------------------------------------------------ backendRefs
    v.push(case(
        "weight 0 drops a backend; a missing weight is 1",
        u(&tcp1(
            "r",
            "",
            MESH,
            BACKEND_HTTP,
            "[{kind: MeshService, name: backend-v1, port: 80, weight: 0}, {kind: MeshService, name: backend-v2, port: 80}, {kind: MeshService, name: other, port: 80, weight: 3}]",
        )),
        &(r80("base", "MeshTCPRoute/r", "1 MeshService/backend-v2:80 = 10.1.0.2:8080 | 3 MeshService/other:80 = 10.1.0.4:8080")
            + "why base 10.0.0.1:80 ~ MeshService/backend-v1:80: dropped, weight 0"),
    ));
    v.push(case(
        "a missing real MeshService backend is dropped and the others share the traffic",
        u(&tcp1(
            "r",
            "",
            MESH,
            BACKEND_HTTP,
            "[{kind: MeshService, name: backend-v1, port: 80}, {kind: MeshService, name: ghost, port: 80, weight: 5}]",
        )),
        &(r80("base", "MeshTCPRoute/r", V1)
            + "warn MeshTCPRoute/r spec.to[0].rules[0].default.backendRefs[1] ~ MeshService/ghost:80 does not exist; its share is dropped"),
    ));
    v.push(case(
        "a real backend on a port its MeshService lacks is dropped",
        u(&tcp1(
            "r",
            "",
            MESH,
            BACKEND_HTTP,
            "[{kind: MeshService, name: backend, port: 81}, {kind: MeshService, name: backend-v2, sectionName: '80'}]",
        )),
        &(r80("base", "MeshTCPRoute/r", V2)
            + "warn MeshTCPRoute/r spec.to[0].rules[0].default.backendRefs[0] ~ MeshService/backend:81 has no port 81"),
    ));
    v.push(case(
        "a legacy backend nobody serves keeps its share, which fails",
        u(&tcp1("r", "", MESH, BACKEND_HTTP, "[{kind: MeshService, name: backend-v1, port: 80}, {kind: MeshService, name: ghost}]")),
        &(r80("base", "MeshTCPRoute/r", "1 MeshService/backend-v1:80 = 10.1.0.1:8080 | 1 kuma.io/service ghost = -")
            + "warn MeshTCPRoute/r spec.to[0].rules[0].default.backendRefs[1] ~ no Dataplane inbound has kuma.io/service \"ghost\""),
    ));
    v.push(case(
        "when every backend is dropped there is none: connections are refused",
        u(&tcp1("r", "", MESH, BACKEND_HTTP, "[{kind: MeshService, name: ghost, port: 80}, {kind: MeshService, name: backend-v1, port: 80, weight: 0}]")),
        "route base 10.0.0.1:80 -> MeshTCPRoute/r | none\n\
         why base 10.0.0.1:80 ~ every backend was dropped: connections are refused\n\
         warn MeshTCPRoute/r spec.to[0].rules[0].default.backendRefs[0] ~ does not exist",
    ));
    v.push(case(
        "MeshServiceSubset keeps the endpoints carrying every tag, compared exactly",
        u(&tcp1(
            "r",
            "",
            MESH,
            BACKEND_HTTP,
            "[{kind: MeshServiceSubset, name: backend, tags: {version: v1}}, {kind: MeshServiceSubset, name: backend, tags: {version: v3}}, {kind: MeshServiceSubset, name: backend, tags: {version: '*'}}]",
        )),
        &r80(
            "base",
            "MeshTCPRoute/r",
            "1 kuma.io/service backend {version=v1} = 10.1.0.1:8080 | 1 kuma.io/service backend {version=v3} = - | 1 kuma.io/service backend {version=*} = -",
        ),
    ));
    v.push(case(
        "a backend port is named by sectionName or given by number",
        u(&tcp1(
            "r",
            "",
            MESH,
            "{kind: MeshService, name: other}",
            "[{kind: MeshService, name: backend, sectionName: metrics, weight: 2}, {kind: MeshService, name: backend, port: 80, weight: 3}, {kind: MeshService, name: backend, sectionName: '9090'}]",
        )),
        "route base 10.0.0.4:80 -> MeshTCPRoute/r | 2 MeshService/backend:9090 = 10.1.0.1:9090 | 3 MeshService/backend:80 = 10.1.0.1:8080, 10.1.0.2:8080 | 1 MeshService/backend:9090 = 10.1.0.1:9090",
    ));
    v.push(case(
        "a backend can name its MeshService by labels",
        u(&(String::from(
            "---\ntype: MeshService\nname: canary\nlabels: {track: canary}\nspec:\n  selector: {dataplaneTags: {app: backend, version: v2}}\n  ports: [{port: 80, targetPort: 8080}]\nstatus: {vips: [{ip: 10.0.0.5}]}\n",
        ) + &tcp1("r", "", MESH, BACKEND_HTTP, "[{kind: MeshService, labels: {track: canary}, port: 80}]"))),
        &r80("base", "MeshTCPRoute/r", "1 MeshService/canary:80 = 10.1.0.2:8080"),
    ));

    // ------------------------------------------------------------ MeshExternalService
    let db_ips = mes(
        "db",
        "10.0.5.1",
        5432,
        "tcp",
        "[{address: 192.0.2.10, port: 5432}, {address: 192.0.2.11, port: 6432}]",
    );
    v.push(case(
        "MeshExternalService is a destination whose default goes to its endpoints",
        u(&db_ips),
        "route base 10.0.5.1:5432 -> default | 1 MeshExternalService/db = 192.0.2.10:5432, 192.0.2.11:6432\nproto base 10.0.5.1:5432 = tcp",
    ));
    v.push(
        case(
            "MeshExternalService hostnames are resolved by the agent",
            u(&mes("db", "10.0.5.1", 5432, "tcp", "[{address: db.example.com, port: 5432}]")),
            "route base 10.0.5.1:5432 -> default | 1 MeshExternalService/db = 192.0.2.20:5432, [2001:db8::20]:5432",
        )
        .with_dns("db.example.com", &["192.0.2.20", "2001:db8::20"]),
    );
    v.push(case(
        "an unresolvable MeshExternalService hostname contributes no endpoint",
        u(&mes(
            "db",
            "10.0.5.1",
            5432,
            "tcp",
            "[{address: gone.example.com, port: 5432}, {address: 192.0.2.10, port: 5432}]",
        )),
        "route base 10.0.5.1:5432 -> default | 1 MeshExternalService/db = 192.0.2.10:5432\n\
         warn MeshExternalService/db spec.endpoints[0].address ~ \"gone.example.com\" not found",
    ));
    v.push(case(
        "MeshExternalService as a backend",
        u(&(db_ips.clone()
            + &tcp1("r", "", MESH, BACKEND_HTTP, "[{kind: MeshExternalService, name: db}, {kind: MeshService, name: backend-v1, port: 80, weight: 3}]"))),
        &r80("base", "MeshTCPRoute/r", "1 MeshExternalService/db = 192.0.2.10:5432, 192.0.2.11:6432 | 3 MeshService/backend-v1:80 = 10.1.0.1:8080"),
    ));
    v.push(case(
        "a missing MeshExternalService backend is dropped",
        u(&tcp1("r", "", MESH, BACKEND_HTTP, "[{kind: MeshExternalService, name: nope}, {kind: MeshService, name: backend-v1, port: 80}]")),
        &(r80("base", "MeshTCPRoute/r", V1)
            + "warn MeshTCPRoute/r spec.to[0].rules[0].default.backendRefs[0] ~ MeshExternalService/nope does not exist"),
    ));
    // Kuma plugin scenario "tcproute-meshexternalservice", in our resources.
    v.push(case(
        "Kuma tcproute-meshexternalservice: a MeshExternalService routed to another",
        mes("example", "10.20.20.1", 9090, "tcp", "[{address: 192.0.2.1, port: 443}]")
            + &mes("example2", "10.20.20.2", 9090, "tcp", "[{address: 192.0.2.2, port: 443}]")
            + &tcp1("r", "", MESH, "{kind: MeshExternalService, name: example}", "[{kind: MeshExternalService, name: example2, weight: 100}]"),
        "route base 10.20.20.1:9090 -> MeshTCPRoute/r | 100 MeshExternalService/example2 = 192.0.2.2:443\n\
         route base 10.20.20.2:9090 -> default | 1 MeshExternalService/example2 = 192.0.2.2:443",
    ));
    // Kuma plugin scenario "default-meshexternalservice".
    v.push(
        case(
            "Kuma default-meshexternalservice: no policy, MES by hostname, an unserved legacy outbound",
            mes("example", "10.20.20.1", 9090, "tcp", "[{address: example.com, port: 443}]")
                + &workload("client", "10.2.0.5", "[{port: 1, tags: {kuma.io/service: client}}]", "[{port: 10001, tags: {kuma.io/service: backend}}]"),
            "route base 10.20.20.1:9090 -> default | 1 MeshExternalService/example = 93.184.215.14:443\n\
             route client 127.0.0.1:10001 -> default | 1 kuma.io/service backend = -\n\
             absent base 127.0.0.1:10001",
        )
        .with_dns("example.com", &["93.184.215.14"]),
    );

    // ------------------------------------------------------------ MeshMultiZoneService
    v.push(case(
        "MeshMultiZoneService destination: union of the selected MeshServices' endpoints on the same port",
        MULTIZONE.to_string(),
        "route base 10.0.9.1:80 -> default | 1 MeshMultiZoneService/api:80 = 10.3.0.1:8080, 10.3.0.2:8080\n\
         route base 10.0.9.1:81 -> default | 1 MeshMultiZoneService/api:81 = 10.3.0.2:8081\n\
         proto base 10.0.9.1:80 = tcp",
    ));
    v.push(case(
        "MeshMultiZoneService as a backend",
        MULTIZONE.to_string() + &tcp1("r", "", MESH, "{kind: MeshService, name: south-api}", "[{kind: MeshMultiZoneService, name: api, port: 80}]"),
        "route base 10.0.8.3:80 -> MeshTCPRoute/r | 1 MeshMultiZoneService/api:80 = 10.3.0.1:8080, 10.3.0.2:8080",
    ));
    v.push(case(
        "MeshMultiZoneService as a to with a sectionName",
        MULTIZONE.to_string()
            + &tcp1(
                "r",
                "",
                MESH,
                "{kind: MeshMultiZoneService, name: api, sectionName: http}",
                "[{kind: MeshService, name: south-api, port: 80}]",
            ),
        "route base 10.0.9.1:80 -> MeshTCPRoute/r | 1 MeshService/south-api:80 = 10.3.0.3:8080\n\
         route base 10.0.9.1:81 -> default | 1 MeshMultiZoneService/api:81 = 10.3.0.2:8081",
    ));
    v.push(case(
        "a MeshMultiZoneService backend on a port it lacks is dropped",
        MULTIZONE.to_string()
            + &tcp1(
                "r",
                "",
                MESH,
                "{kind: MeshService, name: south-api}",
                "[{kind: MeshMultiZoneService, name: api, port: 82}, {kind: MeshService, name: east-api, port: 80}]",
            ),
        "route base 10.0.8.3:80 -> MeshTCPRoute/r | 1 MeshService/east-api:80 = 10.3.0.1:8080\n\
         warn MeshTCPRoute/r spec.to[0].rules[0].default.backendRefs[0] ~ MeshMultiZoneService/api:82 has no port 82",
    ));

    // ------------------------------------------------------------ workload outbounds
    let client_outbound = |outbound: &str| {
        workload(
            "client",
            "10.2.0.5",
            "[{port: 1, tags: {kuma.io/service: client}}]",
            outbound,
        )
    };
    v.push(case(
        "a legacy outbound is a destination of its workload only, served by kuma.io/service endpoints",
        u(&client_outbound("[{port: 10001, tags: {kuma.io/service: backend}}]")),
        &format!(
            "route client 127.0.0.1:10001 -> default | {LEGACY_BACKEND}\nabsent base 127.0.0.1:10001\nabsent web 127.0.0.1:10001\nclass client != base\nproto client 127.0.0.1:10001 = none"
        ),
    ));
    v.push(case(
        "a legacy outbound with an address and extra tags goes to that subset",
        u(&client_outbound("[{address: 10.9.9.9, port: 5000, tags: {kuma.io/service: backend, version: v2}}]")),
        "route client 10.9.9.9:5000 -> default | 1 kuma.io/service backend {version=v2} = 10.1.0.2:8080",
    ));
    v.push(case(
        "a legacy destination follows policy order only: sectionName neither helps nor restricts",
        u(&(client_outbound("[{port: 10001, tags: {kuma.io/service: backend}}]")
            + &tcp1("a-whole", "", MESH, BACKEND, TO_V1)
            + &tcp1("b-port", "", MESH, BACKEND_HTTP, TO_V2))),
        &(r80("client", "MeshTCPRoute/b-port", V2)
            + &format!("route client 127.0.0.1:10001 -> MeshTCPRoute/a-whole | {V1}\n")
            + "why client 127.0.0.1:10001 ~ MeshTCPRoute/b-port to[0] targets this destination but is overridden"),
    ));
    v.push(case(
        "a legacy destination: a later policy in order wins even when it names a port",
        u(
            &(client_outbound("[{port: 10001, tags: {kuma.io/service: backend}}]")
                + &tcp1("b-whole", "", MESH, BACKEND, TO_V1)
                + &tcp1("a-port", "", MESH, BACKEND_HTTP, TO_V2)),
        ),
        &format!("route client 127.0.0.1:10001 -> MeshTCPRoute/a-port | {V2}"),
    ));
    v.push(case(
        "an outbound on a service address is left to the service",
        u(&client_outbound("[{address: 10.0.0.1, port: 80, tags: {kuma.io/service: other}}]")),
        &(r80("client", "default", BACKEND_SELF)
            + "class client = base\nwarn Dataplane/client networking.outbound[0] ~ 10.0.0.1:80 is a service address already"),
    ));
    v.push(case(
        "workloads with the same routes share a class; one like the base is class 0",
        u(&(workload("client-a", "10.2.0.6", "[{port: 1, tags: {kuma.io/service: a}}]", "[{port: 10001, tags: {kuma.io/service: backend}}]")
            + &workload("client-b", "10.2.0.7", "[{port: 1, tags: {kuma.io/service: b}}]", "[{port: 10001, tags: {kuma.io/service: backend}}]")
            + &workload("client-c", "10.2.0.8", "[{port: 1, tags: {kuma.io/service: c}}]", "[{port: 10001, tags: {kuma.io/service: other}}]"))),
        "class client-a = client-b\nclass client-a != base\nclass client-c != client-a\nclass web = base\nclass batch = base\nclasses = 3\n\
         route client-c 127.0.0.1:10001 -> default | 1 kuma.io/service other = 10.1.0.4:8080",
    ));
    v.push(case(
        "an outbound backendRef is that MeshService port, with its routes",
        u(&(client_outbound("[{port: 10002, backendRef: {kind: MeshService, name: backend, port: 80}}]") + &tcp1("r", "", MESH, BACKEND_HTTP, TO_V1))),
        &format!("route client 127.0.0.1:10002 -> MeshTCPRoute/r | {V1}\nproto client 127.0.0.1:10002 = tcp\n{}", r80("client", "MeshTCPRoute/r", V1)),
    ));
    v.push(case(
        "an outbound backendRef to a missing port is not routed",
        u(&client_outbound("[{port: 10002, backendRef: {kind: MeshService, name: backend, port: 81}}]")),
        "absent client 127.0.0.1:10002\nclass client = base\nwarn Dataplane/client networking.outbound[0].backendRef ~ matches no MeshService port",
    ));

    // ------------------------------------------------------------ MeshHTTPRoute precedence
    for protocol in ["http", "http2", "grpc"] {
        let name: &'static str = match protocol {
            "http" => {
                "HTTP precedence: http destination with a MeshHTTPRoute ignores the MeshTCPRoute"
            }
            "http2" => {
                "HTTP precedence: http2 destination with a MeshHTTPRoute ignores the MeshTCPRoute"
            }
            _ => "HTTP precedence: grpc destination with a MeshHTTPRoute ignores the MeshTCPRoute",
        };
        v.push(case(
            name,
            http_fixture(Some(protocol), true),
            &format!("{APP_SELF}\nwhy base 10.0.10.1:80 ~ MeshHTTPRoute/http targets this {protocol} destination and takes precedence over MeshTCPRoute\nproto base 10.0.10.1:80 = {protocol}"),
        ));
    }
    for (protocol, name) in [
        (
            Some("tcp"),
            "HTTP precedence: tcp destination keeps the MeshTCPRoute despite a MeshHTTPRoute",
        ),
        (
            Some("kafka"),
            "HTTP precedence: kafka destination keeps the MeshTCPRoute despite a MeshHTTPRoute",
        ),
        (
            None,
            "HTTP precedence: a destination without appProtocol keeps the MeshTCPRoute",
        ),
    ] {
        v.push(case(name, http_fixture(protocol, true), APP_TCP));
    }
    v.push(case(
        "HTTP precedence: an http destination without MeshHTTPRoute is routed by MeshTCPRoute",
        http_fixture(Some("http"), false),
        APP_TCP,
    ));
    v.push(case(
        "HTTP precedence: only for the proxies the MeshHTTPRoute selects",
        http_fixture(Some("http"), false)
            + &http_route(
                "http",
                "{kind: Dataplane, name: web}",
                "{kind: MeshService, name: app}",
            ),
        &format!(
            "{APP_TCP}\n{}\nclass web != base\nclass batch = base",
            APP_SELF.replace("route base", "route web")
        ),
    ));
    v.push(case(
        "HTTP precedence: a MeshHTTPRoute to another destination changes nothing",
        http_fixture(Some("http"), false)
            + &http_route("http", MESH, "{kind: MeshService, name: other}"),
        APP_TCP,
    ));

    // ------------------------------------------------------------ Kuma's back-compat names
    v.push(case(
        "back-compat name_namespace_svc_port targets that port of the MeshService",
        KUBE_DEMO.to_string()
            + &tcp1(
                "r",
                "",
                MESH,
                "{kind: MeshService, name: backend_kuma-demo_svc_3001}",
                "[{kind: MeshService, name: backend, namespace: kuma-demo, port: 3002}]",
            ),
        "route base 10.0.11.1:3001 -> MeshTCPRoute/r | 1 MeshService/backend:3002 = 10.5.0.1:3002\n\
         route base 10.0.11.1:3002 -> default | 1 MeshService/backend:3002 = 10.5.0.1:3002",
    ));
    v.push(case(
        "back-compat name_namespace_svc targets every port",
        KUBE_DEMO.to_string()
            + &tcp1(
                "r",
                "",
                MESH,
                "{kind: MeshService, name: backend_kuma-demo_svc}",
                "[{kind: MeshService, name: backend, namespace: kuma-demo, port: 3002}]",
            ),
        "route base 10.0.11.1:3001 -> MeshTCPRoute/r | 1 MeshService/backend:3002 = 10.5.0.1:3002\n\
         route base 10.0.11.1:3002 -> MeshTCPRoute/r | 1 MeshService/backend:3002 = 10.5.0.1:3002",
    ));
    v.push(case(
        "back-compat names in another namespace or port target nothing",
        KUBE_DEMO.to_string()
            + &tcp(
                "r",
                "",
                MESH,
                &format!(
                    "[{}, {}]",
                    to(
                        "{kind: MeshService, name: backend_other_svc_3001}",
                        "[{kind: MeshService, name: ghost}]"
                    ),
                    to(
                        "{kind: MeshService, name: backend_kuma-demo_svc_3003}",
                        "[{kind: MeshService, name: ghost}]"
                    )
                ),
            ),
        "route base 10.0.11.1:3001 -> default | 1 MeshService/backend:3001 = 10.5.0.1:3001\n\
         route base 10.0.11.1:3002 -> default | 1 MeshService/backend:3002 = 10.5.0.1:3002",
    ));

    // ------------------------------------------------------------ endpoint selection
    v.push(case(
        "only ready inbounds are endpoints (health.ready and state)",
        r#"
type: MeshService
name: pool
spec:
  selector: {dataplaneTags: {app: pool}}
  ports: [{port: 80, targetPort: 8080}]
status: {vips: [{ip: 10.0.12.1}]}
---
type: Dataplane
name: ready
networking: {address: 10.6.0.1, inbound: [{port: 8080, health: {ready: true}, tags: {app: pool, kuma.io/service: pool}}]}
---
type: Dataplane
name: not-ready
networking: {address: 10.6.0.2, inbound: [{port: 8080, health: {ready: false}, tags: {app: pool, kuma.io/service: pool}}]}
---
type: Dataplane
name: state-not-ready
networking: {address: 10.6.0.3, inbound: [{port: 8080, state: NotReady, tags: {app: pool, kuma.io/service: pool}}]}
---
type: Dataplane
name: state-ignored
networking: {address: 10.6.0.4, inbound: [{port: 8080, state: Ignored, tags: {app: pool, kuma.io/service: pool}}]}
---
type: Dataplane
name: state-ready
networking: {address: 10.6.0.5, inbound: [{port: 8080, state: Ready, tags: {app: pool, kuma.io/service: pool}}]}
---
type: Dataplane
name: plain
networking: {address: 10.6.0.6, inbound: [{port: 8080, tags: {app: pool, kuma.io/service: pool}}]}
---
type: MeshTCPRoute
name: legacy
spec:
  targetRef: {kind: Mesh}
  to: [{targetRef: {kind: MeshService, name: pool, sectionName: '80'}, rules: [{default: {backendRefs: [{kind: MeshService, name: pool, weight: 1}, {kind: MeshService, name: pool, port: 80, weight: 1}]}}]}]
"#,
        "route base 10.0.12.1:80 -> MeshTCPRoute/legacy | 1 kuma.io/service pool = 10.6.0.1:8080, 10.6.0.5:8080, 10.6.0.6:8080 | 1 MeshService/pool:80 = 10.6.0.1:8080, 10.6.0.5:8080, 10.6.0.6:8080",
    ));
    v.push(case(
        "targetPort by name matches the inbound name; the endpoint is address:servicePort",
        r#"
type: MeshService
name: named
spec:
  selector: {dataplaneTags: {app: named}}
  ports: [{port: 80, targetPort: web}, {port: 81, targetPort: admin}]
status: {vips: [{ip: 10.0.12.2}]}
---
type: Dataplane
name: named-1
networking:
  address: 10.6.1.1
  inbound:
    - {port: 9000, name: web, servicePort: 9001, tags: {app: named}}
    - {port: 9100, name: admin, address: 10.6.1.9, tags: {app: named}}
"#,
        "route base 10.0.12.2:80 -> default | 1 MeshService/named:80 = 10.6.1.1:9001\n\
         route base 10.0.12.2:81 -> default | 1 MeshService/named:81 = 10.6.1.9:9100",
    ));
    v.push(case(
        "a port without targetPort matches no inbound",
        "type: MeshService\nname: bare\nspec:\n  selector: {dataplaneTags: {app: bare}}\n  ports: [{port: 80}]\nstatus: {vips: [{ip: 10.0.12.3}]}\n---\ntype: Dataplane\nname: bare-1\nnetworking: {address: 10.6.2.1, inbound: [{port: 80, tags: {app: bare}}]}\n",
        "route base 10.0.12.3:80 -> default | 1 MeshService/bare:80 = -",
    ));
    v.push(case(
        "dataplaneRef selects one Dataplane by name",
        u("---\ntype: MeshService\nname: pinned\nspec:\n  selector: {dataplaneRef: {name: backend-2}}\n  ports: [{port: 80, targetPort: 8080}]\nstatus: {vips: [{ip: 10.0.12.4}]}\n"),
        "route base 10.0.12.4:80 -> default | 1 MeshService/pinned:80 = 10.1.0.2:8080",
    ));
    v.push(case(
        "a Dataplane is selected through any inbound; its other inbounds serve other ports",
        u(""),
        "route base 10.0.0.1:9090 -> default | 1 MeshService/backend:9090 = 10.1.0.1:9090",
    ));

    // ------------------------------------------------------------ addresses
    v.push(case(
        "IPv6 VIPs; IPv4-mapped VIPs and endpoints are canonicalised to IPv4",
        r#"
type: MeshService
name: dual
spec:
  selector: {dataplaneTags: {app: dual}}
  ports: [{port: 80, targetPort: 8080}]
status: {vips: [{ip: "fd00::10"}, {ip: "::ffff:10.0.13.1"}]}
---
type: Dataplane
name: dual-6
networking: {address: "fd01::1", inbound: [{port: 8080, tags: {app: dual}}]}
---
type: Dataplane
name: dual-mapped
networking: {address: "::ffff:10.8.0.2", inbound: [{port: 8080, tags: {app: dual}}]}
---
type: MeshTCPRoute
name: r
spec:
  to: [{targetRef: {kind: MeshService, name: dual}, rules: [{default: {backendRefs: [{kind: MeshService, name: dual, port: 80, weight: 2}]}}]}]
"#,
        "route base [fd00::10]:80 -> MeshTCPRoute/r | 2 MeshService/dual:80 = 10.8.0.2:8080, [fd01::1]:8080\n\
         route base 10.0.13.1:80 -> MeshTCPRoute/r | 2 MeshService/dual:80 = 10.8.0.2:8080, [fd01::1]:8080\n\
         absent base [::ffff:10.0.13.1]:80",
    ));

    // ------------------------------------------------------------ meshes
    v.push(case(
        "meshes are isolated: policies, selection, backends and endpoints stay in their mesh",
        u(&(tcp1("d", "", MESH, BACKEND_HTTP, TO_V2)
            + r#"
---
type: MeshService
name: backend
mesh: other
spec:
  selector: {dataplaneTags: {app: backend}}
  ports: [{port: 80, targetPort: 8080}]
status: {vips: [{ip: 10.0.14.1}]}
---
type: Dataplane
name: o-backend
mesh: other
networking: {address: 10.9.0.1, inbound: [{port: 8080, tags: {app: backend, version: v2, kuma.io/service: backend}}]}
---
type: Dataplane
name: o-web
mesh: other
labels: {redirector.io/cgroup: o-web.slice}
networking: {address: 10.9.0.2, inbound: [{port: 1, tags: {kuma.io/service: o-web, team: shop}}]}
---
type: MeshTCPRoute
name: o
mesh: other
spec:
  targetRef: {kind: Mesh}
  to: [{targetRef: {kind: MeshService, name: backend}, rules: [{default: {backendRefs: [{kind: MeshService, name: backend-v2, port: 80}, {kind: MeshService, name: backend}]}}]}]
---
type: MeshTCPRoute
name: d-shop
spec:
  targetRef: {kind: MeshSubset, tags: {team: shop}}
  to: [{targetRef: {kind: MeshService, name: backend}, rules: [{default: {backendRefs: [{kind: MeshService, name: other, port: 80}]}}]}]
"#)),
        &(r80("base", "MeshTCPRoute/d", V2)
            + &r80("web", "MeshTCPRoute/d-shop", OTHER)
            + "route base 10.0.14.1:80 -> MeshTCPRoute/o | 1 kuma.io/service backend = 10.9.0.1:8080\n"
            + "route o-web 10.0.14.1:80 -> MeshTCPRoute/o | 1 kuma.io/service backend = 10.9.0.1:8080\n"
            // o-web carries team=shop but d-shop is another mesh's policy: it does not select o-web.
            + "route o-web 10.0.0.1:80 -> default | 1 MeshService/backend:80 = 10.1.0.1:8080, 10.1.0.2:8080\n"
            + "warn MeshTCPRoute/o spec.to[0].rules[0].default.backendRefs[0] ~ MeshService/backend-v2:80 does not exist"),
    ));

    // ------------------------------------------------------------ Kuma plugin scenarios (notes section 6)
    v.push(case(
        "Kuma basic: the more specific policy's split replaces the rule-less default",
        u(&(workload("shop", "10.2.0.9", "[{port: 8000, tags: {kuma.io/service: shop}}]", "[{port: 10001, tags: {kuma.io/service: backend}}]")
            + &tcp("route-1", "", MESH, "[{targetRef: {kind: MeshService, name: backend}}]")
            + &tcp1(
                "route-2",
                "",
                "{kind: MeshService, name: shop}",
                BACKEND,
                "[{kind: MeshServiceSubset, name: backend, tags: {version: v1}, weight: 50}, {kind: MeshServiceSubset, name: backend, tags: {version: v2}, weight: 50}]",
            ))),
        "route shop 127.0.0.1:10001 -> MeshTCPRoute/route-2 | 50 kuma.io/service backend {version=v1} = 10.1.0.1:8080 | 50 kuma.io/service backend {version=v2} = 10.1.0.2:8080\n\
         route shop 10.0.0.1:80 -> MeshTCPRoute/route-2 | 50 kuma.io/service backend {version=v1} = 10.1.0.1:8080 | 50 kuma.io/service backend {version=v2} = 10.1.0.2:8080\n\
         route base 10.0.0.1:80 -> MeshTCPRoute/route-1 | 1 kuma.io/service backend = 10.1.0.1:8080, 10.1.0.2:8080",
    ));
    let split_world = r#"
---
type: Dataplane
name: backend-eu
networking: {address: 192.168.0.4, inbound: [{port: 8004, tags: {kuma.io/service: backend, region: eu, kuma.io/protocol: tcp}}]}
---
type: Dataplane
name: backend-us
networking: {address: 192.168.0.5, inbound: [{port: 8005, tags: {kuma.io/service: backend, region: us, kuma.io/protocol: http}}]}
---
type: Dataplane
name: other-backend-1
networking: {address: 192.168.0.6, inbound: [{port: 8006, tags: {kuma.io/service: other-backend, kuma.io/protocol: http}}]}
---
type: MeshExternalService
name: externalservice
spec:
  match: {type: HostnameGenerator, port: 8007, protocol: http2}
  endpoints: [{address: 192.168.0.7, port: 8007}]
status: {vip: {ip: 10.0.15.1}}
"#;
    v.push(case(
        "Kuma split-traffic: a legacy destination split across subsets, another service and an external one",
        split_world.to_string()
            + &workload(
                "client",
                "10.2.0.5",
                "[{port: 1, tags: {kuma.io/service: client}}]",
                "[{port: 10001, tags: {kuma.io/service: backend}}, {port: 10002, tags: {kuma.io/service: other-backend}}]",
            )
            + &tcp1(
                "split",
                "",
                "{kind: Dataplane, name: client}",
                BACKEND,
                "[{kind: MeshServiceSubset, name: backend, tags: {region: eu}, weight: 40}, {kind: MeshServiceSubset, name: backend, tags: {region: us}, weight: 15}, {kind: MeshService, name: other-backend, weight: 15}, {kind: MeshExternalService, name: externalservice, weight: 15}]",
            ),
        "route client 127.0.0.1:10001 -> MeshTCPRoute/split | 40 kuma.io/service backend {region=eu} = 192.168.0.4:8004 | 15 kuma.io/service backend {region=us} = 192.168.0.5:8005 | 15 kuma.io/service other-backend = 192.168.0.6:8006 | 15 MeshExternalService/externalservice = 192.168.0.7:8007\n\
         route client 127.0.0.1:10002 -> default | 1 kuma.io/service other-backend = 192.168.0.6:8006\n\
         route client 10.0.15.1:8007 -> default | 1 MeshExternalService/externalservice = 192.168.0.7:8007\n\
         proto client 127.0.0.1:10001 = tcp\n\
         proto client 127.0.0.1:10002 = http\n\
         proto client 10.0.15.1:8007 = http2",
    ));
    let redirect_world = r#"
---
type: Dataplane
name: backend-1
networking: {address: 192.168.0.4, inbound: [{port: 8004, tags: {kuma.io/service: backend, kuma.io/protocol: PROTO}}]}
---
type: Dataplane
name: tcp-backend-1
networking: {address: 192.168.0.5, inbound: [{port: 8005, tags: {kuma.io/service: tcp-backend, kuma.io/protocol: tcp}}]}
---
type: Dataplane
name: http-backend-1
networking: {address: 192.168.0.6, inbound: [{port: 8006, tags: {kuma.io/service: http-backend, kuma.io/protocol: http}}]}
---
type: Dataplane
name: client
labels: {redirector.io/cgroup: client.slice}
networking:
  address: 10.2.0.5
  inbound: [{port: 1, tags: {kuma.io/service: client}}]
  outbound:
    - {port: 10001, tags: {kuma.io/service: backend}}
    - {port: 10002, tags: {kuma.io/service: tcp-backend}}
    - {port: 10003, tags: {kuma.io/service: http-backend}}
---
type: MeshTCPRoute
name: to-tcp
spec:
  targetRef: {kind: Mesh}
  to: [{targetRef: {kind: MeshService, name: backend}, rules: [{default: {backendRefs: [{kind: MeshService, name: tcp-backend}]}}]}]
"#;
    let http_clash = http_route("to-http", MESH, "{kind: MeshService, name: backend}");
    v.push(case(
        "Kuma redirect-traffic: an http destination without MeshHTTPRoute follows the MeshTCPRoute",
        redirect_world.replace("PROTO", "http"),
        "route client 127.0.0.1:10001 -> MeshTCPRoute/to-tcp | 1 kuma.io/service tcp-backend = 192.168.0.5:8005\n\
         route client 127.0.0.1:10002 -> default | 1 kuma.io/service tcp-backend = 192.168.0.5:8005\n\
         proto client 127.0.0.1:10001 = http",
    ));
    v.push(case(
        "Kuma meshhttproute-clash-http-destination: the MeshHTTPRoute wins, redirector leaves it to itself",
        redirect_world.replace("PROTO", "http") + &http_clash,
        "route client 127.0.0.1:10001 -> default | 1 kuma.io/service backend = 192.168.0.4:8004\n\
         why client 127.0.0.1:10001 ~ MeshHTTPRoute/to-http targets this http destination\n\
         route client 127.0.0.1:10002 -> default | 1 kuma.io/service tcp-backend = 192.168.0.5:8005\n\
         route client 127.0.0.1:10003 -> default | 1 kuma.io/service http-backend = 192.168.0.6:8006",
    ));
    v.push(case(
        "Kuma meshhttproute-clash-tcp-destination: the MeshTCPRoute wins for a tcp destination",
        redirect_world.replace("PROTO", "tcp") + &http_clash,
        "route client 127.0.0.1:10001 -> MeshTCPRoute/to-tcp | 1 kuma.io/service tcp-backend = 192.168.0.5:8005\n\
         route client 127.0.0.1:10002 -> default | 1 kuma.io/service tcp-backend = 192.168.0.5:8005",
    ));
    v.push(case(
        "Kuma basic-real-meshservice: a sectionless rule applies to a named http port without MeshHTTPRoute",
        r#"
type: MeshService
name: backend
spec:
  selector: {dataplaneTags: {app: backend}}
  ports: [{port: 80, name: test-port, targetPort: 8084, appProtocol: http}]
status: {vips: [{ip: 10.0.0.1}]}
---
type: Dataplane
name: backend-1
networking: {address: 192.168.0.4, inbound: [{port: 8084, tags: {app: backend}}]}
---
type: Dataplane
name: client
labels: {redirector.io/cgroup: client.slice}
networking:
  address: 10.2.0.5
  inbound: [{port: 1, tags: {kuma.io/service: client}}]
  outbound: [{port: 10001, backendRef: {kind: MeshService, name: backend, port: 80}}]
---
type: MeshTCPRoute
name: r
spec:
  to: [{targetRef: {kind: MeshService, name: backend}, rules: [{default: {backendRefs: [{kind: MeshService, name: backend, port: 80, weight: 100}]}}]}]
"#,
        "route client 127.0.0.1:10001 -> MeshTCPRoute/r | 100 MeshService/backend:80 = 192.168.0.4:8084\n\
         route base 10.0.0.1:80 -> MeshTCPRoute/r | 100 MeshService/backend:80 = 192.168.0.4:8084\n\
         proto client 127.0.0.1:10001 = http",
    ));

    // ------------------------------------------------------------ cases that once diverged, and the one known deviation (KNOWN_BUGS)
    v.push(case(
        "to sectionName names a port by its name, not the number of a named port",
            u(&tcp1(
            "r",
            "",
            MESH,
            "{kind: MeshService, name: backend, sectionName: '80'}",
            TO_V1,
        )),
        &r80("base", "default", BACKEND_SELF),
    ));
    v.push(case(
        "MeshMultiZoneService to entries are not ranked by sectionName",
            MULTIZONE.to_string()
            + &tcp1("a-whole", "", MESH, "{kind: MeshMultiZoneService, name: api}", "[{kind: MeshService, name: east-api, port: 80}]")
            + &tcp1("z-port", "", MESH, "{kind: MeshMultiZoneService, name: api, sectionName: http}", "[{kind: MeshService, name: south-api, port: 80}]"),
        "route base 10.0.9.1:80 -> MeshTCPRoute/a-whole | 1 MeshService/east-api:80 = 10.3.0.1:8080",
    ));
    v.push(case(
        "back-compat name_namespace_svc_port entries rank as sectionless",
            KUBE_DEMO.to_string()
            + &tcp1("a-whole", "", MESH, "{kind: MeshService, name: backend, namespace: kuma-demo}", "[{kind: MeshService, name: backend, namespace: kuma-demo, port: 3002, weight: 1}]")
            + &tcp1("z-compat", "", MESH, "{kind: MeshService, name: backend_kuma-demo_svc_3001}", "[{kind: MeshService, name: backend, namespace: kuma-demo, port: 3002, weight: 2}]"),
        "route base 10.0.11.1:3001 -> MeshTCPRoute/a-whole | 1 MeshService/backend:3002 = 10.5.0.1:3002",
    ));
    v.push(case(
        "DEVIATION: Dataplane by name does not outrank Dataplane without name or labels",
        u(&(tcp1("a-all", "", "{kind: Dataplane}", BACKEND, TO_V1)
            + &tcp1(
                "z-named",
                "",
                "{kind: Dataplane, name: web}",
                BACKEND,
                TO_V2,
            ))),
        &r80("web", "MeshTCPRoute/a-all", V1),
    ));
    v.push(case(
        "same-named MeshServices in two namespaces keep their own endpoints",
            BLUE_GREEN.to_string(),
        "route base 10.0.1.1:80 -> default | 1 MeshService/web:80 = 10.1.1.1:80\n\
         route base 10.0.2.1:80 -> default | 1 MeshService/web:80 = 10.1.2.1:80",
    ));
    v.push(case(
        "to without rules routes to the destination itself when its name is ambiguous",
            BLUE_GREEN.to_string()
            + &tcp(
                "r",
                "",
                MESH,
                "[{targetRef: {kind: MeshService, name: web, sectionName: '80'}}]",
            ),
        "route base 10.0.1.1:80 -> MeshTCPRoute/r | 1 MeshService/web:80 = 10.1.1.1:80\n\
         route base 10.0.2.1:80 -> MeshTCPRoute/r | 1 MeshService/web:80 = 10.1.2.1:80",
    ));
    v.push(case(
        "consumer and workload-owner policies apply only in their namespace",
            u(&(SHOPPER.to_string()
            + &tcp1(
                "a-consumer-shop",
                "{kuma.io/policy-role: consumer, k8s.kuma.io/namespace: shop}",
                MESH,
                BACKEND,
                TO_V1,
            )
            + &tcp1(
                "b-owner-ops",
                "{kuma.io/policy-role: workload-owner, k8s.kuma.io/namespace: ops}",
                MESH,
                BACKEND,
                TO_OTHER,
            )
            + &tcp1("c-system", "", MESH, BACKEND, TO_V2))),
        &(r80("shopper", "MeshTCPRoute/a-consumer-shop", V1)
            + &r80s(&["base", "web"], "MeshTCPRoute/c-system", V2)),
    ));
    v.push(case(
        "shadow policies are skipped",
            u(
            &(tcp1("a-shadow", "{kuma.io/effect: shadow}", MESH, BACKEND, TO_V1)
                + &tcp1("b-real", "", MESH, BACKEND, TO_V2)),
        ),
        &r80s(&["base", "web"], "MeshTCPRoute/b-real", V2),
    ));
    v.push(case(
        "Dataplane policies select no workload without inbounds",
            u(&(tcp1("r", "", "{kind: Dataplane, name: bare}", BACKEND, TO_V1)
            + "---\ntype: Dataplane\nname: bare\nlabels: {redirector.io/cgroup: bare.slice}\nnetworking: {address: 10.2.0.4}\n")),
        &(r80s(&["bare", "base"], "default", BACKEND_SELF) + "class bare = base"),
    ));
    v.push(case(
        "MeshService selection only looks at healthy inbounds",
            "type: MeshService\nname: svc\nspec:\n  selector: {dataplaneTags: {app: svc}}\n  ports: [{port: 80, targetPort: 8080}]\nstatus: {vips: [{ip: 10.0.16.1}]}\n---\ntype: Dataplane\nname: half\nnetworking:\n  address: 10.6.3.1\n  inbound:\n    - {port: 9000, health: {ready: false}, tags: {app: svc}}\n    - {port: 8080, tags: {app: sidekick}}\n",
        "route base 10.0.16.1:80 -> default | 1 MeshService/svc:80 = -",
    ));

    v
}

// ====================================================================== property

/// A random but valid mesh over a small universe: services `s0..s2` (ports
/// 80/81, some IPv6 VIPs), dataplanes with random tags, health and workload
/// bindings, a MeshExternalService (IP and hostname endpoints), a
/// MeshMultiZoneService, and policies with random top levels, destinations,
/// sections, backends and weights.
fn random_mesh() -> impl Strategy<Value = String> {
    let port = prop::sample::select(vec![80u16, 81]);
    let services = prop::collection::vec(
        (
            prop::collection::btree_set(port.clone(), 1..=2),
            any::<bool>(),
            any::<bool>(),
        ),
        3,
    );
    let dataplanes = prop::collection::vec(
        (
            0usize..3,
            prop::sample::select(vec!["v1", "v2"]),
            any::<bool>(),
            0u8..4,
            prop::collection::vec((port.clone(), any::<bool>()), 1..=2),
        ),
        1..=6,
    );
    let backend = (
        0u8..6,
        0usize..3,
        prop::option::of(port.clone()),
        prop::option::of(0u64..5),
    );
    let to = (
        0u8..4,
        0usize..3,
        prop::option::of(port.clone()),
        prop::option::of(prop::collection::vec(backend, 1..=3)),
    );
    let policies = prop::collection::vec(
        (
            0u8..5,
            prop::sample::select(vec![
                "",
                "{kuma.io/origin: zone}",
                "{kuma.io/origin: global}",
                "{kuma.io/policy-role: consumer}",
            ]),
            prop::collection::vec(to, 1..=3),
        ),
        1..=4,
    );
    (services, dataplanes, policies).prop_map(|(services, dataplanes, policies)| {
        let mut text = String::new();
        for (i, (ports, v4, v6)) in services.iter().enumerate() {
            let ports: Vec<String> = ports.iter().map(|p| format!("{{port: {p}, targetPort: {}, name: p{p}}}", p + 8000)).collect();
            let mut vips = Vec::new();
            if *v4 || !*v6 {
                vips.push(format!("{{ip: 10.0.{i}.1}}"));
            }
            if *v6 {
                vips.push(format!("{{ip: \"fd00::{i}:1\"}}"));
            }
            text += &format!(
                "---\ntype: MeshService\nname: s{i}\nlabels: {{group: g{}}}\nspec:\n  selector: {{dataplaneTags: {{app: s{i}}}}}\n  ports: [{}]\nstatus: {{vips: [{}]}}\n",
                i % 2,
                ports.join(", "),
                vips.join(", ")
            );
        }
        text += "---\ntype: MeshExternalService\nname: ext\nspec:\n  match: {type: HostnameGenerator, port: 443, protocol: tcp}\n  endpoints: [{address: 192.0.2.1, port: 443}, {address: ext.example.com, port: 8443}]\nstatus: {vip: {ip: 10.0.5.1}}\n";
        text += "---\ntype: MeshMultiZoneService\nname: mz\nspec:\n  selector: {meshService: {matchLabels: {group: g0}}}\n  ports: [{port: 80, name: p80}, {port: 81}]\nstatus: {vips: [{ip: 10.0.6.1}]}\n";
        for (i, (app, version, v6, kind, inbounds)) in dataplanes.iter().enumerate() {
            let address = if *v6 { format!("\"fd01::{i}\"") } else { format!("10.1.0.{i}") };
            let inbounds: Vec<String> = inbounds
                .iter()
                .map(|(p, ready)| {
                    format!(
                        "{{port: {}, health: {{ready: {ready}}}, tags: {{app: s{app}, kuma.io/service: s{app}, version: {version}}}}}",
                        p + 8000
                    )
                })
                .collect();
            // kind: 0 plain, 1 workload, 2 workload with a legacy outbound, 3 with a backendRef outbound.
            let labels = if *kind > 0 { format!("labels: {{redirector.io/cgroup: w{i}}}\n") } else { String::new() };
            let outbound = match kind {
                2 => format!("  outbound: [{{port: {}, tags: {{kuma.io/service: s{app}}}}}]\n", 10000 + i),
                3 => format!("  outbound: [{{port: {}, backendRef: {{kind: MeshService, name: s{app}, port: 80}}}}]\n", 10000 + i),
                _ => String::new(),
            };
            text += &format!(
                "---\ntype: Dataplane\nname: dp{i}\n{labels}networking:\n  address: {address}\n  inbound: [{}]\n{outbound}",
                inbounds.join(", ")
            );
        }
        for (n, (top, labels, tos)) in policies.iter().enumerate() {
            let top = match top {
                0 => "{kind: Mesh}",
                1 => "{kind: MeshSubset, tags: {version: v1}}",
                2 => "{kind: MeshService, name: s0}",
                3 => "{kind: Dataplane, name: dp0}",
                _ => "{kind: MeshServiceSubset, name: s1, tags: {version: v2}}",
            };
            let tos: Vec<String> = tos
                .iter()
                .map(|(kind, svc, section, refs)| {
                    let section = section.map(|p| format!(", sectionName: p{p}")).unwrap_or_default();
                    let target = match kind {
                        0 | 1 => format!("{{kind: MeshService, name: s{svc}{section}}}"),
                        2 => "{kind: MeshExternalService, name: ext}".to_string(),
                        _ => format!("{{kind: MeshMultiZoneService, name: mz{section}}}"),
                    };
                    let Some(refs) = refs else { return format!("{{targetRef: {target}}}") };
                    let refs: Vec<String> = refs
                        .iter()
                        .map(|(kind, svc, port, weight)| {
                            let weight = weight.map(|w| format!(", weight: {w}")).unwrap_or_default();
                            match kind {
                                0 => format!("{{kind: MeshService, name: s{svc}{}{weight}}}", port.map(|p| format!(", port: {p}")).unwrap_or_default()),
                                1 => format!("{{kind: MeshService, name: s{svc}, sectionName: p{}{weight}}}", port.unwrap_or(80)),
                                2 => format!("{{kind: MeshServiceSubset, name: s{svc}, tags: {{version: v1}}{weight}}}"),
                                3 => format!("{{kind: MeshExternalService, name: ext{weight}}}"),
                                4 => format!("{{kind: MeshMultiZoneService, name: mz, port: {}{weight}}}", port.unwrap_or(80)),
                                _ => format!("{{kind: MeshService, name: ghost{}{weight}}}", port.map(|p| format!(", port: {p}")).unwrap_or_default()),
                            }
                        })
                        .collect();
                    format!("{{targetRef: {target}, rules: [{{default: {{backendRefs: [{}]}}}}]}}", refs.join(", "))
                })
                .collect();
            let labels = if labels.is_empty() { String::new() } else { format!("labels: {labels}\n") };
            text += &format!("---\ntype: MeshTCPRoute\nname: p{n}\n{labels}spec:\n  targetRef: {top}\n  to: [{}]\n", tos.join(", "));
        }
        text
    })
}

/// Every address a table may legitimately send a connection to: the
/// Dataplane inbounds' endpoints and the MeshExternalService endpoints.
fn input_endpoints(config: &redirector_core::model::Config, dns: &StaticDns) -> BTreeSet<SocketAddr> {
    let mut out = BTreeSet::new();
    for dp in &config.dataplanes {
        for ib in dp.spec.networking.inbound.as_deref().unwrap_or_default() {
            out.extend(inbound_endpoint(dp, ib));
        }
    }
    for s in &config.external_services {
        for e in s.spec.endpoints.as_deref().unwrap_or_default() {
            match e.address.parse::<IpAddr>() {
                Ok(ip) => {
                    out.insert(SocketAddr::new(ip.to_canonical(), e.port));
                }
                Err(_) => {
                    for ip in dns.0.get(e.address.as_str()).into_iter().flatten() {
                        out.insert(SocketAddr::new(ip.to_canonical(), e.port));
                    }
                }
            }
        }
    }
    out
}

/// The exact probability of each backend of a table, as numerators over
/// `n * total` (from the kernel's two draws over the alias slots).
fn table_shares(table: &Table) -> (Vec<u64>, u64) {
    let n = table.backends.len() as u64;
    let alias = AliasTable {
        thresholds: table.backends.iter().map(|b| b.threshold).collect(),
        aliases: table.backends.iter().map(|b| b.alias).collect(),
        total: table.header.total_weight,
    };
    (
        alias.exact_shares(),
        n * u64::from(table.header.total_weight),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn random_policy_sets_compile_to_exact_distributions_over_input_endpoints(text in random_mesh()) {
        let dns = static_dns(&[("ext.example.com", &["192.0.2.50", "2001:db8::50"])]);
        let (config, problems) = common::check(&text);
        let errors: Vec<String> = problems.iter().filter(|p| p.severity == Severity::Error).map(ToString::to_string).collect();
        prop_assert!(errors.is_empty(), "generated input is invalid: {:?}\n{}", errors, text);
        let (resolution, problems) = redirector_core::resolve::resolve_with(&config, &dns);
        let errors: Vec<String> = problems.iter().filter(|p| p.severity == Severity::Error).map(ToString::to_string).collect();
        prop_assert!(errors.is_empty(), "{:?}\n{}", errors, text);
        let tables = compile::compile(&resolution).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        let allowed = input_endpoints(&config, &dns);
        for (key, table) in &tables {
            let n = table.backends.len();
            prop_assert_eq!(table.header.backend_count as usize, n);
            if n > 0 {
                // Probabilities are shares / denominator: they sum to exactly 1.
                let (shares, denominator) = table_shares(table);
                prop_assert!(denominator > 0);
                prop_assert_eq!(shares.iter().sum::<u64>(), denominator, "key {:?}", key);
            }
            for e in &table.endpoints {
                let addr = SocketAddr::new(words_ip(e.addr), u16::from_be(e.port));
                prop_assert!(allowed.contains(&addr), "{} is no input endpoint\n{}", addr, text);
            }
        }
        // And each table reproduces its route's weights exactly.
        for class in &resolution.classes {
            for r in &class.routes {
                let key = compile::service_key(class.id, r.vip, r.port);
                let table = tables.get(&key).or_else(|| tables.get(&compile::service_key(0, r.vip, r.port)));
                let table = table.ok_or_else(|| TestCaseError::fail(format!("no table for {key:?}")))?;
                let weights: Vec<u64> = r.backends.iter().map(|b| u64::from(b.weight)).collect();
                let total: u64 = weights.iter().sum();
                prop_assert!(r.backends.iter().all(|b| b.weight > 0), "dropped backends are left out");
                if weights.is_empty() {
                    prop_assert_eq!(table.header.backend_count, 0);
                    continue;
                }
                let (shares, denominator) = table_shares(table);
                let n = weights.len() as u64;
                prop_assert_eq!(denominator, n * total);
                let expected: Vec<u64> = weights.iter().map(|w| w * n).collect();
                prop_assert_eq!(shares, expected);
            }
        }
    }
}

#[test]
fn render_and_normalise_agree() {
    let line = "route base 10.0.0.1:80 -> MeshTCPRoute/r | 2 kuma.io/service b {version=v2} = 10.1.0.2:80,10.1.0.1:80 | 1 X = -";
    assert_eq!(
        normalise_route(line).unwrap(),
        "route base 10.0.0.1:80 -> MeshTCPRoute/r | 2 kuma.io/service b {version=v2} = 10.1.0.1:80, 10.1.0.2:80 | 1 X = -"
    );
}
