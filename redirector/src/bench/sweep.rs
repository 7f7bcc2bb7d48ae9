//! The scale sweep: N services installed (each split 90/10 over the two bench
//! endpoints, as kube-proxy would lay out N ClusterIP services with two
//! endpoints each), connect latency measured on the middle one, for the
//! redirector, iptables and nftables; plus the control plane at each size
//! (how long N routes take to reach the kernel, how long one changed route
//! takes, the agent's memory and the BPF maps' memory); and the config of
//! the flatness point with many workload classes.

use super::contenders::{EP_V1, EP_V2, WEIGHT_V1, WEIGHT_V2, redirector_config};
use anyhow::{Context as _, bail};
use std::os::fd::{AsFd as _, AsRawFd as _};
use super::{
    cgroup::ChildCgroup,
    harness::{Agent, PinDir, ScratchDir},
};
use std::{
    fmt::Write as _,
    io::Write as _,
    net::Ipv4Addr,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

/// Services per config file (the agent refuses files over 16 MiB).
const PER_FILE: u32 = 10_000;

/// How long one netfilter rule-set load may take before the contender is
/// reported as not surviving this size.
pub const NETFILTER_TIMEOUT: Duration = Duration::from_secs(120);

/// Service `i`'s address: 127.40.0.1 upwards, 250 per /24, never .0 or .255.
pub fn vip(i: u32) -> Ipv4Addr {
    let block = i / 250;
    Ipv4Addr::new(127, 40 + (block / 256) as u8, (block % 256) as u8, (i % 250 + 1) as u8)
}

/// The service whose latency is measured: the middle one (kube-proxy's
/// iptables KUBE-SERVICES chain is a linear list, so this is its average case).
pub fn measured(n: u32) -> u32 {
    n / 2
}

/// The redirector's sweep config: the bench config (which defines the
/// `bench-v1`/`bench-v2` backends) plus, per service, a MeshService and a
/// MeshTCPRoute splitting it 90/10; the measured service's route alone in
/// [`EDITED`] (what a one-change edit rewrites). Flow style keeps 100,000
/// services under the agent's file size limit when split in [`PER_FILE`] chunks.
pub fn redirector_files(n: u32) -> Vec<(String, String)> {
    let mut files = vec![("bench.yaml".to_string(), redirector_config())];
    for chunk in 0..n.div_ceil(PER_FILE) {
        let mut text = String::with_capacity(PER_FILE as usize * 520);
        for i in chunk * PER_FILE..((chunk + 1) * PER_FILE).min(n) {
            let _ = writeln!(
                text,
                "--- {{type: MeshService, name: s-{i}, mesh: default, spec: {{selector: {{dataplaneTags: {{app: s-{i}}}}}, ports: [{{port: 80, targetPort: 8080, name: main}}]}}, status: {{vips: [{{ip: {}}}]}}}}",
                vip(i)
            );
            if i != measured(n) {
                let _ = writeln!(text, "{}", route(i, (WEIGHT_V1, WEIGHT_V2)));
            }
        }
        files.push((format!("sweep-{chunk:02}.yaml"), text));
    }
    files.push(edited(n, (WEIGHT_V1, WEIGHT_V2)));
    files
}

/// The file holding the measured service's route alone.
pub const EDITED: &str = "edited.yaml";

/// [`EDITED`] with the measured service split `weights`.
pub fn edited(n: u32, weights: (u32, u32)) -> (String, String) {
    (EDITED.to_string(), route(measured(n), weights) + "\n")
}

/// Route `r-i`: service `i` split `w1`/`w2` between the bench backends.
fn route(i: u32, (w1, w2): (u32, u32)) -> String {
    format!(
        "--- {{type: MeshTCPRoute, name: r-{i}, mesh: default, spec: {{targetRef: {{kind: Mesh}}, to: [{{targetRef: {{kind: MeshService, name: s-{i}}}, rules: [{{default: {{backendRefs: [{{kind: MeshService, name: bench-v1, port: 80, weight: {w1}}}, {{kind: MeshService, name: bench-v2, port: 80, weight: {w2}}}]}}}}]}}]}}}}"
    )
}

/// Routes the agent installs for [`redirector_files`] of `n` services: one
/// per sweep service plus the bench config's four services.
pub fn routes(n: u32) -> usize {
    n as usize + 4
}

/// kube-proxy's iptables layout for N services (see `contenders::iptables_rules`).
pub fn iptables_rules(n: u32) -> String {
    let p1 = f64::from(WEIGHT_V1) / f64::from(WEIGHT_V1 + WEIGHT_V2);
    let mut chains = String::with_capacity(n as usize * 120);
    let mut rules = String::with_capacity(n as usize * 700);
    chains.push_str("*nat\n:KUBE-SERVICES - [0:0]\n");
    rules.push_str("-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n");
    for i in 0..n {
        let v = vip(i);
        let _ = writeln!(chains, ":KUBE-SVC-S{i} - [0:0]\n:KUBE-SEP-S{i}A - [0:0]\n:KUBE-SEP-S{i}B - [0:0]");
        let _ = writeln!(
            rules,
            "-A KUBE-SERVICES -d {v}/32 -p tcp -m comment --comment \"sweep/s-{i}:main cluster IP\" -m tcp --dport 80 -j KUBE-SVC-S{i}\n\
-A KUBE-SVC-S{i} -m comment --comment \"sweep/s-{i}:main -> {EP_V1}\" -m statistic --mode random --probability {p1:.11} -j KUBE-SEP-S{i}A\n\
-A KUBE-SVC-S{i} -m comment --comment \"sweep/s-{i}:main -> {EP_V2}\" -j KUBE-SEP-S{i}B\n\
-A KUBE-SEP-S{i}A -p tcp -m comment --comment \"sweep/s-{i}:main\" -m tcp -j DNAT --to-destination {EP_V1}\n\
-A KUBE-SEP-S{i}B -p tcp -m comment --comment \"sweep/s-{i}:main\" -m tcp -j DNAT --to-destination {EP_V2}"
        );
    }
    chains + &rules + "COMMIT\n"
}

/// What kube-proxy's partial sync writes when one service's endpoints
/// change: that service's chain, rewritten (here to 80/20).
pub fn iptables_one_change(i: u32) -> String {
    format!(
        "*nat\n:KUBE-SVC-S{i} - [0:0]\n\
-A KUBE-SVC-S{i} -m comment --comment \"sweep/s-{i}:main -> {EP_V1}\" -m statistic --mode random --probability 0.80000000000 -j KUBE-SEP-S{i}A\n\
-A KUBE-SVC-S{i} -m comment --comment \"sweep/s-{i}:main -> {EP_V2}\" -j KUBE-SEP-S{i}B\n\
COMMIT\n"
    )
}

/// kube-proxy's nftables layout for N services (see `contenders::nftables_rules`).
pub fn nftables_rules(n: u32) -> String {
    let split = WEIGHT_V1 + WEIGHT_V2;
    let mut out = String::with_capacity(n as usize * 400);
    out.push_str("table ip kube-proxy {\n  map service-ips {\n    type ipv4_addr . inet_proto . inet_service : verdict\n");
    if n > 0 {
        out.push_str("    elements = { ");
        for i in 0..n {
            let sep = if i + 1 < n { ", " } else { "" };
            let _ = write!(out, "{} . tcp . 80 : goto service-S{i}{sep}", vip(i));
        }
        out.push_str(" }\n");
    }
    out.push_str("  }\n  chain nat-output {\n    type nat hook output priority -100; policy accept;\n    jump services\n  }\n");
    out.push_str("  chain services {\n    ip daddr . meta l4proto . th dport vmap @service-ips\n  }\n");
    for i in 0..n {
        let _ = write!(
            out,
            "  chain service-S{i} {{\n    numgen random mod {split} vmap {{ 0-{a} : goto endpoint-S{i}A, {WEIGHT_V1}-{b} : goto endpoint-S{i}B }}\n  }}\n\
  chain endpoint-S{i}A {{\n    meta l4proto tcp dnat to {EP_V1}\n  }}\n\
  chain endpoint-S{i}B {{\n    meta l4proto tcp dnat to {EP_V2}\n  }}\n",
            a = WEIGHT_V1 - 1,
            b = split - 1,
        );
    }
    out.push_str("}\n");
    out
}

/// One service's weights changed (to 80/20), as one nft transaction.
pub fn nftables_one_change(i: u32) -> String {
    format!(
        "flush chain ip kube-proxy service-S{i}\n\
add rule ip kube-proxy service-S{i} numgen random mod 100 vmap {{ 0-79 : goto endpoint-S{i}A, 80-99 : goto endpoint-S{i}B }}\n"
    )
}

/// Runs `cmd` with `input` on stdin; `Ok(None)` when it did not finish
/// within `timeout` (it is killed), else its wall time.
pub fn timed_stdin(cmd: &mut Command, input: &str, timeout: Duration) -> anyhow::Result<Option<Duration>> {
    let started = Instant::now();
    let mut child =
        cmd.stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().with_context(|| format!("running {cmd:?}"))?;
    let mut stdin = child.stdin.take().expect("piped");
    let input = input.to_string();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
    });
    loop {
        if let Some(status) = child.try_wait()? {
            let _ = writer.join();
            if !status.success() {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                bail!("{cmd:?} failed ({status}): {}", err.trim().lines().take(5).collect::<Vec<_>>().join("\n"));
            }
            return Ok(Some(started.elapsed()));
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            let _ = writer.join();
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A `redirector run` agent on the bench config, with what it runs on;
/// torn down in field order (agent, config, pins: detaches, then the
/// workload cgroups below its cgroup, then its cgroup).
pub struct RunningAgent {
    pub agent: Agent,
    pub config: ScratchDir,
    _pins: PinDir,
    _children: Vec<ChildCgroup>,
    pub cgroup: ChildCgroup,
}

impl RunningAgent {
    /// An agent on the bench config alone (the bench's four services), its
    /// cgroup, pins and config directory named after `prefix`.
    pub fn start(prefix: &str) -> anyhow::Result<Self> {
        Self::start_with(prefix, &[("bench.yaml".to_string(), redirector_config())], &[])
    }

    /// An agent on `files`, with the cgroups `children` created below its
    /// cgroup before it starts (the workload cgroups its Dataplanes name).
    pub fn start_with(prefix: &str, files: &[(String, String)], children: &[String]) -> anyhow::Result<Self> {
        let pins = PinDir::new(prefix)?;
        let cgroup = ChildCgroup::create_unique(prefix)?;
        let children = children.iter().map(|name| ChildCgroup::create(cgroup.path(), name)).collect::<anyhow::Result<Vec<_>>>()?;
        let config = ScratchDir::new(prefix)?;
        for (name, text) in files {
            config.write(name, text)?;
        }
        let agent = Agent::start(&super::agent_bin()?, config.path(), cgroup.path(), pins.path())?;
        Ok(Self { agent, config, _pins: pins, _children: children, cgroup })
    }

    /// Writes `files` (each atomically) and returns the time from the first
    /// write until the agent logged a generation with `routes` routes in
    /// force, plus the agent's own rebuild+apply time for it (µs). Several
    /// files may be picked up by several reloads; the first generation that
    /// holds all the routes ends the wait.
    pub fn write_and_wait(&self, files: &[(String, String)], routes: usize) -> anyhow::Result<(Duration, u64)> {
        let agent = &self.agent;
        let seen_before = agent.log_lines("applied generation").len();
        let started = Instant::now();
        for (name, text) in files {
            self.config.write(name, text)?;
        }
        let deadline = Instant::now() + Duration::from_secs(600);
        let wanted = format!("routes={routes} ");
        loop {
            let lines = agent.log_lines("applied generation");
            if let Some((t, line)) = lines[seen_before..].iter().find(|(_, l)| l.contains(&wanted)) {
                return Ok((*t - started, field(line, "micros=")));
            }
            let rejected = agent.log_lines("configuration rejected").len() + agent.log_lines("applying failed").len();
            if rejected > 0 {
                bail!("the agent rejected the sweep config:\n{}", tail(&agent.log(), 30));
            }
            if Instant::now() > deadline {
                bail!("the agent did not apply {routes} routes within 600 s:\n{}", tail(&agent.log(), 30));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

fn tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The number after `name` in a log line (0 if absent).
fn field(line: &str, name: &str) -> u64 {
    line.split(name)
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|d| d.parse().ok())
        .unwrap_or(0)
}

/// (VmRSS, VmHWM) of a process, bytes.
pub fn rss(pid: u32) -> anyhow::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|kb| kb.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    Ok((field("VmRSS:"), field("VmHWM:")))
}

/// The kernel's memory accounting (`memlock` in the map's fdinfo: actual
/// use for hash maps on kernels >= 6.4) of every map a program uses, by map
/// name, read through aya's program and map info.
pub fn map_memory(prog_id: u32) -> anyhow::Result<Vec<(String, u64)>> {
    let prog = aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .find(|p| p.id() == prog_id)
        .with_context(|| format!("program {prog_id} is not loaded"))?;
    let mut out = Vec::new();
    for id in prog.map_ids().context("the program's map ids")?.unwrap_or_default() {
        let map = aya::maps::MapInfo::from_id(id).with_context(|| format!("map {id}"))?;
        let name = map.name_as_str().unwrap_or("?").to_string();
        // aya-log's and the loader's own maps are not part of the route state.
        if name.starts_with('.') || name == "AYA_LOGS" || name == "AYA_LOG_BUF" {
            continue;
        }
        let fd = map.fd().with_context(|| format!("opening map {id}"))?;
        let fdinfo = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_fd().as_raw_fd()))?;
        let memlock = fdinfo.lines().find_map(|l| l.strip_prefix("memlock:")).and_then(|v| v.trim().parse().ok()).unwrap_or(0);
        out.push((name, memlock));
    }
    out.sort();
    Ok(out)
}

/// Workload class `i`'s cgroup, relative to the agent's.
pub fn class_cgroup(i: u32) -> String {
    format!("wl-{i}")
}

/// The many-classes config: the bench config plus `n` Dataplanes, each
/// bound to its own cgroup ([`class_cgroup`]) and labelled `app: wl-<i>`,
/// and per Dataplane a MeshTCPRoute targeting its labels that splits the
/// bench service 90/10 (so every class has a route set of its own).
pub fn classes_files(n: u32) -> Vec<(String, String)> {
    let mut text = String::with_capacity(n as usize * 700);
    for i in 0..n {
        let addr = Ipv4Addr::new(127, 30, (i / 250) as u8, (i % 250 + 1) as u8);
        let cg = class_cgroup(i);
        let _ = writeln!(
            text,
            "--- {{type: Dataplane, name: {cg}, mesh: default, labels: {{app: {cg}, redirector.io/cgroup: {cg}}}, networking: {{address: {addr}, inbound: [{{port: 9999, tags: {{kuma.io/service: {cg}}}}}]}}}}"
        );
        let _ = writeln!(
            text,
            "--- {{type: MeshTCPRoute, name: {cg}-route, mesh: default, spec: {{targetRef: {{kind: Dataplane, labels: {{app: {cg}}}}}, to: [{{targetRef: {{kind: MeshService, name: bench}}, rules: [{{default: {{backendRefs: [{{kind: MeshService, name: bench-v1, port: 80, weight: {WEIGHT_V1}}}, {{kind: MeshService, name: bench-v2, port: 80, weight: {WEIGHT_V2}}}]}}}}]}}]}}}}"
        );
    }
    vec![("bench.yaml".to_string(), redirector_config()), ("classes.yaml".to_string(), text)]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plan of a config written to a scratch directory (removed again).
    fn plan_of(tag: &str, files: Vec<(String, String)>) -> redirector_core::plan::Plan {
        let dir = std::env::temp_dir().join(format!("rdr-{tag}-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (name, text) in files {
            std::fs::write(dir.join(name), text).unwrap();
        }
        let plan = redirector_core::plan::build(&dir);
        std::fs::remove_dir_all(&dir).unwrap();
        plan.unwrap_or_else(|p| panic!("{:?}", p.errors().map(|e| e.to_string()).collect::<Vec<_>>()))
    }

    #[test]
    fn service_addresses_are_distinct_and_never_network_or_broadcast() {
        let mut seen = std::collections::HashSet::new();
        for i in 0..100_000 {
            let v = vip(i);
            assert!(v.is_loopback());
            assert!(v.octets()[3] != 0 && v.octets()[3] != 255, "{v}");
            assert!(seen.insert(v), "{v} twice");
        }
    }

    #[test]
    fn the_sweep_config_plans_one_route_per_service_with_the_given_split() {
        let plan = plan_of("sweep", redirector_files(25));
        // 25 sweep services + bench, bench-v1, bench-v2, traffic.
        assert_eq!(plan.tables.len(), 29);
        let text = plan.summary_lines().join("\n");
        assert!(text.contains(&vip(12).to_string()), "{text}");
    }

    #[test]
    fn the_classes_config_gives_each_workload_its_own_routes() {
        let plan = plan_of("classes", classes_files(20));
        assert_eq!(plan.config.dataplanes.len(), 20 + 3);
        assert_eq!(plan.config.routes.len(), 20 + 1);
    }

    #[test]
    fn netfilter_rule_sets_hold_every_service() {
        let ipt = iptables_rules(7);
        assert_eq!(ipt.matches("-j KUBE-SVC-S").count(), 7);
        assert_eq!(ipt.matches("-j DNAT").count(), 14);
        let nft = nftables_rules(7);
        assert_eq!(nft.matches(": goto service-S").count(), 7);
        assert_eq!(nft.matches("dnat to").count(), 14);
    }
}
