//! Percentiles, the Markdown report and the CDF plots.

use super::hooks::{self, Hook};
use anyhow::anyhow;
use plotters::prelude::*;
use std::{fmt::Write as _, path::Path, time::Duration};

/// One contender's raw results.
pub struct Sample {
    pub name: &'static str,
    pub what: String,
    /// connect() latencies, ns, sorted.
    pub connect: Vec<u64>,
    /// connect + first byte latencies, ns, sorted.
    pub first_byte: Vec<u64>,
    /// Connections answered by the 90 % endpoint / the 10 % endpoint.
    pub v1: u64,
    pub v2: u64,
    pub errors: u64,
    /// Failed connects by errno (0: closed without a reply).
    pub errnos: std::collections::BTreeMap<i32, u64>,
    pub elapsed: Duration,
}

/// The `q` quantile (0..=1) of sorted `v`, nearest rank.
pub fn quantile(v: &[u64], q: f64) -> u64 {
    if v.is_empty() {
        return 0;
    }
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

pub struct Machine {
    pub cpu: String,
    pub nproc: usize,
    pub kernel: String,
    pub date: String,
    pub tools: Vec<String>,
}

impl Sample {
    /// Pools another run of the same contender into this one.
    pub fn absorb(&mut self, other: Sample) {
        self.connect.extend(other.connect);
        self.first_byte.extend(other.first_byte);
        self.connect.sort_unstable();
        self.first_byte.sort_unstable();
        self.v1 += other.v1;
        self.v2 += other.v2;
        self.errors += other.errors;
        for (e, n) in other.errnos {
            *self.errnos.entry(e).or_default() += n;
        }
        self.elapsed += other.elapsed;
    }
}

/// The flatness point with many workload classes.
pub struct ClassesPoint {
    /// Workload classes (Dataplanes, each its own cgroup and route set).
    pub classes: u32,
    /// The connects measured with statistics on (client in one class's cgroup).
    pub sample: Sample,
    /// The hooks over that run.
    pub hook: Hook,
}

impl ClassesPoint {
    /// One line for the terminal.
    pub fn summary(&self) -> String {
        format!(
            "{} workload classes: connect p50 {:.1} µs; connect4 {} ns/run (floor {})",
            self.classes,
            us(quantile(&self.sample.connect, 0.5)),
            self.hook.connect4_ns().map_or("-".into(), |n| format!("{n:.0}")),
            self.hook.floor_ns().map_or("-".into(), |n| format!("{n:.0} ns")),
        )
    }
}

/// The hook figures of a run (the "done means"), each with the
/// empty program's floor measured in the same window.
pub struct HookFigures {
    /// (a) redirected connects from the agent's cgroup to the service VIP,
    /// with the one-operation programs attached; pooled over the rounds.
    pub redirected: Option<Hook>,
    /// (b) connects from the agent's cgroup straight to the backend
    /// addresses (no service); its `sock_release` figure is (c).
    pub non_service: Option<Hook>,
    /// (d) with many workload classes.
    pub classes: Option<ClassesPoint>,
}

/// One row of the hook table: what, this run, floor, target, met, before.
struct HookRow {
    operation: String,
    this_run: String,
    floor: String,
    target: String,
    met: bool,
    before: String,
}

fn ns_or_dash(v: Option<f64>) -> String {
    v.map_or("-".into(), |n| format!("{n:.0} ns"))
}

impl HookFigures {
    /// Redirected connect4 ns/run per sweep size, then with the classes.
    fn flatness(&self, sweep: &[SweepPoint]) -> Vec<(String, f64)> {
        let mut points: Vec<(String, f64)> = sweep
            .iter()
            .filter_map(|p| Some((format!("{} services", p.services), p.hook.as_ref()?.connect4_ns()?)))
            .collect();
        if let Some(c) = &self.classes
            && let Some(ns) = c.hook.connect4_ns()
        {
            points.push((format!("{} classes", c.classes), ns));
        }
        points
    }

    fn rows(&self, sweep: &[SweepPoint]) -> Vec<HookRow> {
        let mut rows = Vec::new();
        if let Some(h) = &self.redirected {
            let ns = h.connect4_ns();
            rows.push(HookRow {
                operation: "(a) connect4, redirected connect (client in the agent's cgroup dials the service VIP)".into(),
                this_run: ns_or_dash(ns),
                floor: ns_or_dash(h.floor_ns()),
                target: format!("≤ {:.0} ns", hooks::TARGET_REDIRECTED_NS),
                met: ns.is_some_and(|n| n <= hooks::TARGET_REDIRECTED_NS),
                before: format!("{} ns", thousands(hooks::BEFORE_REDIRECTED_CONNECT4_NS)),
            });
        }
        if let Some(h) = &self.non_service {
            let (ns, floor) = (h.connect4_ns(), h.floor_ns());
            rows.push(HookRow {
                operation: "(b) connect4, connect to an address that is no service (client in the agent's cgroup dials a backend)".into(),
                this_run: ns_or_dash(ns),
                floor: ns_or_dash(floor),
                target: format!("≤ floor + {:.0} ns", hooks::TARGET_NON_SERVICE_ABOVE_FLOOR_NS),
                met: matches!((ns, floor), (Some(n), Some(f)) if n <= f + hooks::TARGET_NON_SERVICE_ABOVE_FLOOR_NS),
                before: format!("{} ns", hooks::BEFORE_NON_SERVICE_CONNECT4_NS),
            });
            let (this_run, met) = if !h.has("sock_release") {
                ("no release hook: 0 ns".to_string(), true)
            } else {
                let ns = h.ns("sock_release");
                (ns_or_dash(ns), matches!((ns, floor), (Some(n), Some(f)) if n <= f + hooks::TARGET_RELEASE_ABOVE_FLOOR_NS))
            };
            rows.push(HookRow {
                operation: "(c) sock_release, close of a never-redirected socket (during b)".into(),
                this_run,
                floor: ns_or_dash(floor),
                target: format!("no release hook, or ≤ floor + {:.0} ns", hooks::TARGET_RELEASE_ABOVE_FLOOR_NS),
                met,
                before: format!("{}–{} ns", hooks::BEFORE_RELEASE_NS.0, hooks::BEFORE_RELEASE_NS.1),
            });
        }
        let flat = self.flatness(sweep);
        if !flat.is_empty() {
            let (lo, hi) = flat.iter().fold((f64::MAX, 0f64), |(lo, hi), (_, ns)| (lo.min(*ns), hi.max(*ns)));
            let spread = hi / lo.max(1.0);
            let floors: Vec<f64> = sweep
                .iter()
                .filter_map(|p| p.hook.as_ref()?.floor_ns())
                .chain(self.classes.as_ref().and_then(|c| c.hook.floor_ns()))
                .collect();
            let floor = if floors.is_empty() {
                "-".to_string()
            } else {
                let (flo, fhi) = floors.iter().fold((f64::MAX, 0f64), |(lo, hi), f| (lo.min(*f), hi.max(*f)));
                format!("{flo:.0}–{fhi:.0} ns")
            };
            rows.push(HookRow {
                operation: "(d) connect4, redirected, flatness across the sweep and with many workload classes".into(),
                this_run: format!(
                    "{}; spread {spread:.2}×",
                    flat.iter().map(|(what, ns)| format!("{what}: {ns:.0} ns")).collect::<Vec<_>>().join(", ")
                ),
                floor,
                target: format!("spread (max/min) < {:.2}×", hooks::TARGET_SPREAD),
                met: spread < hooks::TARGET_SPREAD,
                before: "-".into(),
            });
        }
        if let Some(h) = &self.redirected {
            rows.push(HookRow {
                operation: "empty program (the floor), during (a)".into(),
                this_run: ns_or_dash(h.floor_ns()),
                floor: "-".into(),
                target: "-".into(),
                met: true,
                before: format!("{}–{} ns", hooks::BEFORE_FLOOR_NS.0, hooks::BEFORE_FLOOR_NS.1),
            });
        }
        rows
    }

    /// Lines for the terminal.
    pub fn summary(&self, sweep: &[SweepPoint]) -> Vec<String> {
        self.rows(sweep)
            .into_iter()
            .map(|r| format!("{}: {} (floor {}; target {}: {})", r.operation, r.this_run, r.floor, r.target, if r.met { "met" } else { "NOT met" }))
            .collect()
    }
}

fn thousands(n: u32) -> String {
    if n >= 1000 { format!("{},{:03}", n / 1000, n % 1000) } else { n.to_string() }
}

/// The connection-rate test of one contender.
pub struct Rate {
    pub clients: usize,
    pub answered: u64,
    pub errors: u64,
    pub wall: Duration,
}

impl Rate {
    pub fn per_second(&self) -> f64 {
        self.answered as f64 / self.wall.as_secs_f64()
    }
}

/// Established-connection results of one contender.
pub struct Traffic {
    /// Round-trip times, ns, sorted.
    pub rr: Vec<u64>,
    /// Best bulk throughput of three runs, Gbit/s.
    pub bulk_gbit: f64,
}

/// One contender at one size of the scale sweep.
pub struct SweepPoint {
    pub contender: &'static str,
    pub services: u32,
    pub sample: Option<Sample>,
    /// Rules/routes written until in force (redirector: config write until
    /// the agent logged the generation; netfilter: the restore command).
    pub install: Option<Duration>,
    /// The agent's own rebuild+apply time for that generation.
    pub install_agent_micros: Option<u64>,
    /// One changed route, each time: until in force (redirector: write until
    /// the agent logged the generation, with the agent's own time, µs).
    pub changes: Vec<(Duration, Option<u64>)>,
    pub hook: Option<Hook>,
    pub rss: Option<u64>,
    pub hwm: Option<u64>,
    /// The agent's RSS after the edits.
    pub rss_after_edits: Option<u64>,
    pub maps: Vec<(String, u64)>,
    /// Set when the contender could not load this many services in time.
    pub gave_up: Option<Duration>,
}

impl SweepPoint {
    /// `install`: (until in force, agent µs); `memory`: (RSS, peak, RSS after the edits).
    pub fn redirector(
        services: u32,
        sample: Sample,
        install: (Duration, u64),
        changes: Vec<(Duration, u64)>,
        hook: Hook,
        memory: (u64, u64, u64),
        maps: Vec<(String, u64)>,
    ) -> Self {
        Self {
            contender: "redirector",
            services,
            sample: Some(sample),
            install: Some(install.0),
            install_agent_micros: Some(install.1),
            changes: changes.into_iter().map(|(d, m)| (d, Some(m))).collect(),
            hook: Some(hook),
            rss: Some(memory.0),
            hwm: Some(memory.1),
            rss_after_edits: Some(memory.2),
            maps,
            gave_up: None,
        }
    }

    /// (p50, p99) of the one-change times, with the agent's own p50 (µs).
    pub fn change_quantiles(&self) -> Option<(Duration, Duration, Option<u64>)> {
        if self.changes.is_empty() {
            return None;
        }
        let mut times: Vec<u64> = self.changes.iter().map(|(d, _)| d.as_nanos() as u64).collect();
        times.sort_unstable();
        let mut agent: Vec<u64> = self.changes.iter().filter_map(|(_, m)| *m).collect();
        agent.sort_unstable();
        let agent = (!agent.is_empty()).then(|| quantile(&agent, 0.5));
        Some((Duration::from_nanos(quantile(&times, 0.5)), Duration::from_nanos(quantile(&times, 0.99)), agent))
    }

    pub fn netfilter(contender: &'static str, services: u32, sample: Sample, install: Duration, one: Option<Duration>) -> Self {
        Self {
            contender,
            services,
            sample: Some(sample),
            install: Some(install),
            install_agent_micros: None,
            changes: one.map(|d| (d, None)).into_iter().collect(),
            hook: None,
            rss: None,
            hwm: None,
            rss_after_edits: None,
            maps: Vec::new(),
            gave_up: None,
        }
    }

    pub fn gave_up(contender: &'static str, services: u32, after: Duration) -> Self {
        Self {
            contender,
            services,
            sample: None,
            install: None,
            install_agent_micros: None,
            changes: Vec::new(),
            hook: None,
            rss: None,
            hwm: None,
            rss_after_edits: None,
            maps: Vec::new(),
            gave_up: Some(after),
        }
    }

    fn connect_p50(&self) -> Option<u64> {
        self.sample.as_ref().map(|s| quantile(&s.connect, 0.5))
    }

    pub fn summary(&self) -> String {
        let mut out = format!("{} with {} services:", self.contender, self.services);
        if let Some(after) = self.gave_up {
            let _ = write!(out, " did not load within {} s", after.as_secs());
            return out;
        }
        if let Some(s) = &self.sample {
            let _ = write!(out, " connect p50 {:.1} µs p99 {:.1} µs;", us(quantile(&s.connect, 0.5)), us(quantile(&s.connect, 0.99)));
        }
        if let Some(i) = self.install {
            let _ = write!(out, " install {};", ms(i));
        }
        if let Some((p50, p99, _)) = self.change_quantiles() {
            let _ = write!(out, " one change p50 {} p99 {} ({} edits);", ms(p50), ms(p99), self.changes.len());
        }
        let mut agent: Vec<u64> = self.changes.iter().filter_map(|(_, m)| *m).collect();
        agent.sort_unstable();
        if !agent.is_empty() {
            let _ = write!(out, " agent's own work p50 {} µs p99 {} µs;", quantile(&agent, 0.5), quantile(&agent, 0.99));
        }
        if let (Some(rss), Some(after)) = (self.rss, self.rss_after_edits) {
            let _ = write!(out, " RSS {} MiB after install, {} MiB after the edits;", rss >> 20, after >> 20);
        }
        if let Some(ns) = self.hook.as_ref().and_then(Hook::connect4_ns) {
            let _ = write!(out, " connect4 {ns:.0} ns/run;");
        }
        out
    }
}

/// Everything a run produced.
pub struct Report<'a> {
    pub samples: &'a [Sample],
    pub hooks: &'a HookFigures,
    pub rates: &'a [Rate],
    pub traffic: &'a [Traffic],
    pub sweep: &'a [SweepPoint],
    /// "<contender>: skipped: <tool> not installed", one per contender left out.
    pub skipped: &'a [String],
    pub machine: &'a Machine,
    pub sizes: &'a super::Sizes,
    pub warmup: u32,
    pub total: Duration,
    pub command: &'a str,
}

fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1e3;
    if ms >= 1000.0 { format!("{:.2} s", ms / 1e3) } else { format!("{ms:.1} ms") }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

const PCTS: [(&str, f64); 3] = [("p50", 0.50), ("p90", 0.90), ("p99", 0.99)];

fn table(out: &mut String, samples: &[Sample], pick: fn(&Sample) -> &Vec<u64>) {
    let direct = &samples[0];
    let _ = writeln!(out, "| contender | p50 µs | p90 µs | p99 µs | p50 vs direct | p90 vs direct | p99 vs direct |");
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|");
    for s in samples {
        let v = pick(s);
        let cells: Vec<String> = PCTS.iter().map(|(_, q)| format!("{:.1}", us(quantile(v, *q)))).collect();
        let ratios: Vec<String> = PCTS
            .iter()
            .map(|(_, q)| format!("{:.2}×", quantile(v, *q) as f64 / quantile(pick(direct), *q).max(1) as f64))
            .collect();
        let _ = writeln!(out, "| {} | {} | {} |", s.name, cells.join(" | "), ratios.join(" | "));
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    a as f64 / b.max(1) as f64
}

/// One line per target of the benchmark issue, computed from this run.
fn targets(r: &Report) -> Vec<(String, String, bool)> {
    let mut rows = Vec::new();
    let direct = &r.samples[0];
    if let Some(rd) = r.samples.iter().find(|s| s.name == "redirector") {
        let p50 = ratio(quantile(&rd.first_byte, 0.5), quantile(&direct.first_byte, 0.5));
        let p99 = ratio(quantile(&rd.first_byte, 0.99), quantile(&direct.first_byte, 0.99));
        rows.push(("connect + first byte ≤ 1.05× direct".into(), format!("p50 {p50:.2}×, p99 {p99:.2}×"), p50 <= 1.05));
    }
    for row in r.hooks.rows(r.sweep).into_iter().filter(|row| row.target != "-") {
        rows.push((format!("hook: {}: {}", row.operation, row.target), format!("{} (floor {})", row.this_run, row.floor), row.met));
    }
    let rd_traffic = r.samples.iter().position(|s| s.name == "redirector").and_then(|i| r.traffic.get(i));
    if let (Some(t), Some(d)) = (rd_traffic, r.traffic.first()) {
        let x = t.bulk_gbit / d.bulk_gbit.max(1e-9);
        rows.push(("throughput ≥ 0.98× direct".into(), format!("{:.2} vs {:.2} Gbit/s: {x:.2}×", t.bulk_gbit, d.bulk_gbit), x >= 0.98));
    }
    let at = |name: &str, n: u32| r.sweep.iter().find(|p| p.contender == name && p.services == n);
    if let (Some(rd), Some(ipt)) = (at("redirector", 10_000), at("iptables", 10_000)) {
        match (rd.connect_p50(), ipt.connect_p50()) {
            (Some(a), Some(b)) => rows.push((
                "better than iptables at 10,000 services".into(),
                format!("connect p50 {:.1} µs vs {:.1} µs ({:.2}×)", us(a), us(b), ratio(a, b)),
                a < b,
            )),
            (Some(_), None) => rows.push(("better than iptables at 10,000 services".into(), "iptables did not load 10,000 services".into(), true)),
            _ => {}
        }
    }
    if let Some(i) = at("redirector", 10_000).and_then(|rd| rd.install) {
        rows.push(("10,000 routes live in < 1 s".into(), format!("{} from config write to applied in the kernel", ms(i)), i < Duration::from_secs(1)));
    }
    if let Some(i) = at("redirector", 100_000).and_then(|rd| rd.install) {
        rows.push(("100,000 services installed in < 3 s".into(), format!("{} from config write to applied in the kernel", ms(i)), i < Duration::from_secs(3)));
    }
    for n in [10_000, 100_000] {
        if let Some((p50, p99, agent)) = at("redirector", n).and_then(SweepPoint::change_quantiles) {
            rows.push((
                format!("one change at {n} services: p99 < 10 ms"),
                format!("p50 {}, p99 {} from the write to the generation in force (agent's own p50 {})", ms(p50), ms(p99), agent.map_or("-".into(), |m| format!("{:.1} ms", m as f64 / 1e3))),
                p99 < Duration::from_millis(10),
            ));
        }
    }
    rows
}

/// Lines for the terminal (and the closing note).
pub fn headline(samples: &[Sample], rates: &[Rate], traffic: &[Traffic], sweep: &[SweepPoint]) -> Vec<String> {
    let mut lines = Vec::new();
    let direct = &samples[0];
    for (i, s) in samples.iter().enumerate() {
        let mut line = format!(
            "{:<10} connect p50 {:.2}× p99 {:.2}×; first byte p50 {:.2}× p99 {:.2}×",
            s.name,
            ratio(quantile(&s.connect, 0.5), quantile(&direct.connect, 0.5)),
            ratio(quantile(&s.connect, 0.99), quantile(&direct.connect, 0.99)),
            ratio(quantile(&s.first_byte, 0.5), quantile(&direct.first_byte, 0.5)),
            ratio(quantile(&s.first_byte, 0.99), quantile(&direct.first_byte, 0.99)),
        );
        if let (Some(r), Some(d)) = (rates.get(i), rates.first()) {
            let _ = write!(line, "; rate {:.2}×", r.per_second() / d.per_second().max(1e-9));
        }
        if let (Some(t), Some(d)) = (traffic.get(i), traffic.first()) {
            let _ = write!(
                line,
                "; round trip p50 {:.2}×; bulk {:.2}×",
                ratio(quantile(&t.rr, 0.5), quantile(&d.rr, 0.5)),
                t.bulk_gbit / d.bulk_gbit.max(1e-9)
            );
        }
        lines.push(line);
    }
    for p in sweep {
        lines.push(p.summary());
    }
    lines
}

pub fn markdown(r: &Report) -> String {
    let samples = r.samples;
    let machine = r.machine;
    let mut out = String::new();
    let others: Vec<&str> = samples.iter().map(|s| s.name).filter(|n| *n != "redirector").collect();
    let _ = writeln!(out, "# redirector vs {}\n", others.join(", "));
    let _ = writeln!(
        out,
        "Generated by `{}` (do not edit by hand; rerun it). Everything below was measured in one run of {:.0} s \
inside a private network namespace on loopback, against the same backends, with the same client binary.\n",
        r.command,
        r.total.as_secs_f64()
    );
    let _ = writeln!(out, "## Targets\n");
    let _ = writeln!(out, "| target | this run | met |");
    let _ = writeln!(out, "|---|---|:-:|");
    for (target, value, met) in targets(r) {
        let _ = writeln!(out, "| {target} | {value} | {} |", if met { "yes" } else { "**no**" });
    }
    let _ = writeln!(out, "\nWhy a target is missed, and what was tried, is in [ANALYSIS.md](ANALYSIS.md) (written by hand, not by this tool).\n");
    let _ = writeln!(out, "## Machine\n");
    let _ = writeln!(out, "- CPU: {} ({} CPUs online)", machine.cpu, machine.nproc);
    let _ = writeln!(out, "- kernel: {}", machine.kernel);
    let _ = writeln!(out, "- date: {}", machine.date);
    for t in &machine.tools {
        let _ = writeln!(out, "- {t}");
    }
    let _ = writeln!(out, "\n## Contenders\n");
    for s in samples {
        let _ = writeln!(out, "- **{}**: {}", s.name, s.what);
    }
    for line in r.skipped {
        let _ = writeln!(out, "- {line}");
    }
    let _ = writeln!(
        out,
        "\nEach contender also serves a `traffic` service with a single endpoint (an echo/sink server on {}), used for the established-connection measures.",
        super::contenders::EP_TRAFFIC
    );
    let _ = writeln!(out, "\n## connect() latency\n");
    let _ = writeln!(
        out,
        "{} sequential connections per contender, one client process, to a service split 90/10, pooled over {} rounds (each round brings \
every contender up in turn and starts with {} unmeasured warm-up connections). \
Time from the `connect()` call to its return (the 3-way handshake on loopback, plus whatever rewrites the destination).\n",
        r.sizes.connects, r.sizes.rounds, r.warmup
    );
    table(&mut out, samples, |s| &s.connect);
    let _ = writeln!(out, "\n![connect() latency CDF](connect-latency-cdf.svg)\n");
    let _ = writeln!(out, "## connect() + first byte latency\n");
    let _ = writeln!(out, "Time from the `connect()` call until the first `read()` returns the backend's reply (for haproxy this includes its own connect to the backend).\n");
    table(&mut out, samples, |s| &s.first_byte);
    let _ = writeln!(out, "\n![connect + first byte latency CDF](first-byte-latency-cdf.svg)\n");

    let _ = writeln!(out, "## Connection rate\n");
    let _ = writeln!(
        out,
        "One client process per CPU, all at once, each making {} connections (connect, read the reply, close) as fast as it can. \
Best of {} rounds.\n",
        r.sizes.rate_connects,
        r.sizes.rounds
    );
    let _ = writeln!(out, "| contender | clients | connections/s | vs direct | failed |");
    let _ = writeln!(out, "|---|---:|---:|---:|---:|");
    for (i, rate) in r.rates.iter().enumerate() {
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} | {:.2}× | {} |",
            r.samples[i].name,
            rate.clients,
            rate.per_second(),
            rate.per_second() / r.rates[0].per_second().max(1e-9),
            rate.errors
        );
    }
    let _ = writeln!(out, "\n## Established connections\n");
    let _ = writeln!(
        out,
        "One connection to the `traffic` service: {} request/response round trips of {} bytes (TCP_NODELAY). \
Round trips pooled over the rounds. Bulk: {} MiB sent on one connection and acknowledged by the server, best of {} rounds.\n",
        r.sizes.round_trips,
        super::traffic::RR_BYTES,
        r.sizes.bulk_mib,
        r.sizes.rounds
    );
    let _ = writeln!(out, "| contender | round trip p50 µs | p90 µs | p99 µs | p50 vs direct | bulk Gbit/s | bulk vs direct |");
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|");
    for (i, t) in r.traffic.iter().enumerate() {
        let d = &r.traffic[0];
        let _ = writeln!(
            out,
            "| {} | {:.1} | {:.1} | {:.1} | {:.2}× | {:.2} | {:.2}× |",
            r.samples[i].name,
            us(quantile(&t.rr, 0.5)),
            us(quantile(&t.rr, 0.9)),
            us(quantile(&t.rr, 0.99)),
            ratio(quantile(&t.rr, 0.5), quantile(&d.rr, 0.5)),
            t.bulk_gbit,
            t.bulk_gbit / d.bulk_gbit.max(1e-9)
        );
    }

    hook_section(&mut out, r);

    let _ = writeln!(out, "## Scale sweep\n");
    let _ = writeln!(
        out,
        "N services installed, each split 90/10 over two endpoints (redirector: N MeshServices and N MeshTCPRoutes; iptables and nftables: \
kube-proxy's layout for N ClusterIP services). {} sequential connections to the middle service (index N/2: the average case of \
iptables' linear KUBE-SERVICES list). *install*: redirector from the first config write until the agent logged the generation in force \
(the agent itself was already running on a two-service config; its own rebuild+apply time in brackets); iptables/nftables: the `iptables-restore` / `nft -f` \
run. *one change*: the middle service's weights changed (redirector: the file holding its route alone replaced, {} times, alternating \
80/20 and 90/10, p50 / p99 from the write until the agent logged the generation in force, the agent's own p50 in brackets; iptables: \
kube-proxy's partial restore of that service chain; nftables: one chain flushed and refilled; once each). *agent RSS*: after install \
(peak), and after the edits.\n",
        r.sizes.sweep_connects,
        r.sizes.edits
    );
    let _ = writeln!(out, "| services | contender | connect p50 µs | p99 µs | first byte p50 µs | install | one change | connect4 / sock_release ns/run | agent RSS (peak) | BPF maps |");
    let _ = writeln!(out, "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for p in r.sweep {
        if let Some(after) = p.gave_up {
            let _ = writeln!(out, "| {} | {} | did not load within {} s | | | | | | | |", p.services, p.contender, after.as_secs());
            continue;
        }
        let s = p.sample.as_ref().expect("measured");
        let install = match (p.install, p.install_agent_micros) {
            (Some(i), Some(m)) => format!("{} ({:.1} ms)", ms(i), m as f64 / 1e3),
            (Some(i), None) => ms(i),
            _ => "-".into(),
        };
        let one = match p.change_quantiles() {
            Some((p50, p99, Some(m))) if p.changes.len() > 1 => format!("{} / {} ({:.1} ms)", ms(p50), ms(p99), m as f64 / 1e3),
            Some((p50, _, _)) => ms(p50),
            None => "-".into(),
        };
        let hook = p.hook.as_ref().map_or("-".into(), |h| {
            format!(
                "{} / {}",
                h.connect4_ns().map_or("-".into(), |n| format!("{n:.0}")),
                if h.has("sock_release") { h.ns("sock_release").map_or("-".into(), |n| format!("{n:.0}")) } else { "none attached".into() }
            )
        });
        let rss = match (p.rss, p.hwm, p.rss_after_edits) {
            (Some(a), Some(b), Some(c)) => format!("{} ({}), {} after", mib(a), mib(b), mib(c)),
            (Some(a), Some(b), None) => format!("{} ({})", mib(a), mib(b)),
            _ => "-".into(),
        };
        let maps = if p.maps.is_empty() { "-".into() } else { mib(p.maps.iter().map(|(_, b)| b).sum()) };
        let _ = writeln!(
            out,
            "| {} | {} | {:.1} | {:.1} | {:.1} | {install} | {one} | {hook} | {rss} | {maps} |",
            p.services,
            p.contender,
            us(quantile(&s.connect, 0.5)),
            us(quantile(&s.connect, 0.99)),
            us(quantile(&s.first_byte, 0.5)),
        );
    }
    let _ = writeln!(out, "\n![connect latency vs number of services](sweep-latency.svg)\n");
    if let Some(p) = r.sweep.iter().filter(|p| !p.maps.is_empty()).max_by_key(|p| p.services) {
        let _ = writeln!(out, "BPF map memory with {} services (the kernel's own accounting, `bytes_memlock`):\n", p.services);
        let _ = writeln!(out, "| map | memory |");
        let _ = writeln!(out, "|---|---:|");
        for (name, bytes) in &p.maps {
            let _ = writeln!(out, "| {name} | {} |", mib(*bytes));
        }
        let _ = writeln!(out);
    }

    let _ = writeln!(out, "## Split and errors (latency run)\n");
    let _ = writeln!(out, "| contender | to 90 % endpoint | to 10 % endpoint | failed | wall time |");
    let _ = writeln!(out, "|---|---:|---:|---:|---:|");
    for s in samples {
        let n = (s.v1 + s.v2).max(1) as f64;
        let _ = writeln!(
            out,
            "| {} | {:.2} % | {:.2} % | {} | {:.1} s |",
            s.name,
            100.0 * s.v1 as f64 / n,
            100.0 * s.v2 as f64 / n,
            s.errors,
            s.elapsed.as_secs_f64()
        );
    }
    let _ = writeln!(out, "\n(`direct` dials one endpoint per connection itself, in the same 90/10 proportion, chosen by the client.)\n");
    let _ = writeln!(out, "## Caveats\n");
    let _ = writeln!(
        out,
        "- Loopback only: no NIC, no real network latency; differences are per-connection and per-packet CPU cost.\n\
- The netfilter contenders also pay for connection tracking, which they need for NAT; the redirector and haproxy contenders run with no netfilter rules loaded.\n\
{}- Each contender's client connects from its own source address (latency 127.21.0.N, rate 127.22.N.P, sweep 127.23.N.K): with one shared source, connections NAT'd by iptables/nftables reused 4-tuples still in the backends' TIME_WAIT from earlier runs and stalled ~10 ms each.\n\
- The hook cost is measured with BPF statistics on, which adds the kernel's own timing overhead (two clock reads) to every run: the floor row shows how much.\n\
- Percentiles are nearest-rank; a 2-CPU VM has noisy tails, so compare p99s across runs with care.",
        if samples.iter().any(|s| s.name == "haproxy") {
            "- haproxy's latency to first byte includes a second TCP connection (proxy to backend) and two extra context switches; it is a stand-in for any userspace proxy.\n"
        } else {
            ""
        }
    );
    out
}

/// "Hook cost per run", "Operations alone" and the per-program detail.
fn hook_section(out: &mut String, r: &Report) {
    let _ = writeln!(out, "## Hook cost per run\n");
    let _ = writeln!(
        out,
        "From the kernel's BPF statistics (`BPF_ENABLE_STATS` on only for runs of their own after each round's latency run, so their \
cost is not in the latency figures; programs found on the bench cgroup with `BPF_PROG_QUERY` and read through aya's program info). \
*floor*: an empty `connect4` program (`r0 = 1; exit`) attached next to the real hooks in the same window: what running and timing any \
program costs on this machine, included in every other figure. *before (issue 11)*: the figures the issue quotes, measured on this VM \
before this work (a cited baseline, not a measurement of this run).\n"
    );
    let _ = writeln!(out, "| operation | this run | floor | target | met | before (issue 11) |");
    let _ = writeln!(out, "|---|---|---:|---|:-:|---:|");
    let rows = r.hooks.rows(r.sweep);
    if rows.is_empty() {
        let _ = writeln!(out, "| not measured | - | - | - | - | - |");
    }
    for row in rows {
        let met = if row.target == "-" { "" } else if row.met { "yes" } else { "**no**" };
        let _ = writeln!(out, "| {} | {} | {} | {} | {met} | {} |", row.operation, row.this_run, row.floor, row.target, row.before);
    }
    let Some(h) = &r.hooks.redirected else { return };
    let _ = writeln!(out, "\n### Operations alone\n");
    let _ = writeln!(
        out,
        "Tiny `connect4` programs built like the floor (raw instructions, no toolchain), each doing one operation then `r0 = 1; exit`, \
attached next to the real hooks during (a). *above the floor*: what that one operation costs; compare with (a) above to see which \
operation holds a missed target up.\n"
    );
    let _ = writeln!(out, "| operation | runs | ns per run | above the floor |");
    let _ = writeln!(out, "|---|---:|---:|---:|");
    let floor = h.floor_ns();
    for (op, p) in &h.ops {
        let above = floor.map_or("-".into(), |f| format!("{:.0} ns", p.ns_per_run() - f));
        let _ = writeln!(out, "| {} | {} | {:.0} ns | {above} |", op.describe(), p.run_cnt, p.ns_per_run());
    }
    let _ = writeln!(out, "\n### Every program during (a) and (b)\n");
    let _ = writeln!(out, "| run | program | attach type | runs | ns per run | above the floor |");
    let _ = writeln!(out, "|---|---|---|---:|---:|---:|");
    for (what, hook) in [("(a) redirected", &r.hooks.redirected), ("(b) no service", &r.hooks.non_service)] {
        let Some(hook) = hook else { continue };
        let floor = hook.floor_ns();
        for p in hook.programs.iter().filter(|p| p.run_cnt > 0) {
            let above = floor.map_or("-".to_string(), |f| format!("{:.0}", p.ns_per_run() - f));
            let _ = writeln!(out, "| {what} | `{}` | {} | {} | **{:.0}** | {above} |", p.prog_name, p.attach_type, p.run_cnt, p.ns_per_run());
        }
        if let Some(f) = hook.floor.as_ref().filter(|f| f.run_cnt > 0) {
            let _ = writeln!(out, "| {what} | floor: empty program | {} | {} | {:.0} | 0 |", f.attach_type, f.run_cnt, f.ns_per_run());
        }
    }
    let _ = writeln!(out, "\nThe sweep below repeats (a) at every size (without the one-operation programs).\n");
}

fn plot_err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("plotting: {e:?}")
}

/// One line of a plot: legend label, colour, points, and whether each point
/// gets a marker.
struct Line {
    label: String,
    color: RGBColor,
    points: Vec<(f64, f64)>,
    markers: bool,
}

/// Draws `lines` on a log-scale x axis as SVG (text as SVG <text>, no fonts
/// needed), legend in the lower right.
fn plot(path: &Path, title: &str, x: (f64, f64), y_max: f64, desc: (&str, &str), lines: Vec<Line>) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(55)
        .build_cartesian_2d((x.0..x.1).log_scale(), 0f64..y_max)
        .map_err(plot_err)?;
    chart.configure_mesh().x_desc(desc.0).y_desc(desc.1).draw().map_err(plot_err)?;
    for line in lines {
        let color = line.color;
        if line.markers {
            chart.draw_series(line.points.iter().map(|&(x, y)| Circle::new((x, y), 4, color.filled()))).map_err(plot_err)?;
        }
        chart
            .draw_series(LineSeries::new(line.points, color.stroke_width(2)))
            .map_err(plot_err)?
            .label(line.label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(plot_err)?;
    root.present().map_err(plot_err)?;
    Ok(())
}

/// A CDF per contender, log-scale x in µs (p0.1 to p99.9).
pub fn cdf_svg(path: &Path, title: &str, samples: &[Sample], pick: fn(&Sample) -> &Vec<u64>) -> anyhow::Result<()> {
    let lo = samples.iter().map(|s| quantile(pick(s), 0.001)).min().unwrap_or(1).max(1);
    let hi = samples.iter().map(|s| quantile(pick(s), 0.999)).max().unwrap_or(2).max(lo + 1);
    let (lo, hi) = (us(lo) * 0.9, us(hi) * 1.1);
    let colors = [BLACK, RED, BLUE, GREEN, MAGENTA, CYAN];
    let steps = 1000;
    let lines = samples
        .iter()
        .enumerate()
        .map(|(i, s)| Line {
            label: s.name.to_string(),
            color: colors[i % colors.len()],
            points: (0..=steps)
                .map(|k| {
                    let q = k as f64 / steps as f64;
                    (us(quantile(pick(s), q)).clamp(lo, hi), q)
                })
                .collect(),
            markers: false,
        })
        .collect();
    plot(path, title, (lo, hi), 1.0, ("latency, µs (log scale; p0.1 to p99.9)", "fraction of connections"), lines)
}

/// Connect p50 vs number of services (log x), one line per contender.
pub fn sweep_svg(path: &Path, points: &[SweepPoint]) -> anyhow::Result<()> {
    let measured: Vec<&SweepPoint> = points.iter().filter(|p| p.sample.is_some()).collect();
    let max_n = measured.iter().map(|p| p.services).max().unwrap_or(1).max(2) as f64;
    let max_us = measured.iter().filter_map(|p| p.connect_p50()).max().unwrap_or(1) as f64 / 1e3 * 1.3;
    let lines = ["redirector", "iptables", "nftables"]
        .iter()
        .zip([RED, GREEN, MAGENTA])
        .map(|(name, color)| Line {
            label: name.to_string(),
            color,
            points: measured
                .iter()
                .filter(|p| p.contender == *name)
                .filter_map(|p| Some((f64::from(p.services), p.connect_p50()? as f64 / 1e3)))
                .collect(),
            markers: true,
        })
        .filter(|line| !line.points.is_empty())
        .collect();
    plot(path, "connect() p50 vs services installed", (1.0, max_n * 1.5), max_us, ("services installed (log scale)", "connect() p50, µs"), lines)
}
