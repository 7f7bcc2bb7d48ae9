//! `redirector bench`: the redirector against the usual alternatives, on
//! this node, in one run, from the shipped binary alone (no source tree,
//! cargo or BPF toolchain).
//!
//! Inside a private network namespace it starts two loopback backends and a
//! traffic server, then brings up each contender in turn: the backends
//! dialled directly; the agent (`<this binary> run`) on a throwaway cgroup
//! the client joins; kube-proxy-style iptables DNAT; kube-proxy-style
//! nftables; haproxy in TCP mode (the last three only when their tools are on
//! PATH; the report lists the others as skipped). Against each it measures
//! connect() and first-byte latency (one client, sequential), the connection
//! rate (one client per CPU), request/response latency and bulk throughput
//! on an established connection. The in-kernel hooks' cost per run comes
//! from the kernel's BPF statistics ([`hooks`]), next to an empty program
//! ([`calibration`]) and one-operation programs ([`ops`]). Then the scale
//! sweep installs 1 to 100,000 services in the redirector, iptables and
//! nftables, and one more agent holds 1,000 workload classes. Results go to
//! `<out>/README.md` with SVG plots. Every rule, process, cgroup and pin it
//! creates is removed when it ends (the netfilter rules vanish with the
//! namespace at the latest).
//!
//! The client is this same binary, re-executed as the hidden `bench-client`
//! command ([`client`]).

pub mod calibration;
pub mod cgroup;
mod client;
mod contenders;
pub mod harness;
pub mod hooks;
pub mod ops;
mod report;
mod sweep;
mod traffic;

pub use client::{ClientArgs, client};

use anyhow::{Context as _, bail};
use contenders::*;
use harness::{Backend, ScratchDir, enter_private_netns};
use hooks::{Hook, with_hook_stats};
use report::{ClassesPoint, HookFigures, Machine, Rate, Sample, SweepPoint, Traffic};
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

/// Contender names, in the order of their client source addresses.
const SOURCES: [&str; 5] = ["direct", "redirector", "haproxy", "iptables", "nftables"];

/// The options of `redirector bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Measured sequential connections per contender (latency CDFs).
    #[arg(long, default_value_t = 100_000)]
    pub connects: u32,
    /// Connections per client process in the rate test (one process per CPU).
    #[arg(long, default_value_t = 20_000)]
    pub rate_connects: u32,
    /// Request/response round trips on one established connection.
    #[arg(long, default_value_t = 50_000)]
    pub round_trips: u32,
    /// MiB per bulk throughput run (best of the rounds).
    #[arg(long, default_value_t = 2048)]
    pub bulk_mib: u32,
    /// Rounds over all contenders: latency pooled, rate and bulk best of.
    #[arg(long, default_value_t = 5)]
    pub rounds: u32,
    #[command(flatten)]
    pub points: SweepArgs,
    /// Workload classes of the flatness point (each its own cgroup and route set).
    #[arg(long, default_value_t = 1000)]
    pub classes: u32,
    /// A seconds-long run of every measure (CI): small sizes, no timing claims.
    #[arg(long)]
    pub smoke: bool,
    /// Where the report and plots go.
    #[arg(long, default_value = "redirector-bench")]
    pub out: PathBuf,
    /// The command line the report names as how it was made.
    #[arg(long)]
    pub invoked_as: Option<String>,
    /// The scale sweep alone, printed (no report): install, one change,
    /// memory and connect latency per size.
    #[arg(long)]
    pub sweep_only: bool,
    /// With --sweep-only: leave iptables and nftables out.
    #[arg(long, requires = "sweep_only")]
    pub redirector_only: bool,
}

/// The scale sweep's sizes.
#[derive(clap::Args, Debug)]
pub struct SweepArgs {
    /// Service counts of the scale sweep, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,100,1000,10000,100000")]
    pub sweep: Vec<u32>,
    /// Sequential connections per sweep point.
    #[arg(long, default_value_t = 20_000)]
    pub sweep_connects: u32,
    /// One-route edits per sweep point (redirector), for the p50/p99 of one change.
    #[arg(long, default_value_t = 100)]
    pub edits: u32,
}

/// Runs `redirector bench` (as root).
pub fn main(args: BenchArgs) -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("the bench creates a network namespace, a cgroup and netfilter rules, and loads BPF: run it as root");
    }
    let BenchArgs { connects, rate_connects, round_trips, bulk_mib, rounds, points: SweepArgs { sweep, sweep_connects, edits }, classes, smoke, out, invoked_as, sweep_only, redirector_only } = args;
    if sweep_only {
        let sizes = Sizes { connects: 0, rate_connects: 0, round_trips: 0, bulk_mib: 0, rounds: 1, sweep, sweep_connects, edits, classes: 0 };
        enter_private_netns().context("creating the bench's network namespace")?;
        sysctl("net/ipv4/ip_local_port_range", "1024 65000")?;
        let _ = sysctl("net/netfilter/nf_conntrack_tcp_timeout_time_wait", "1");
        let _backends = [Backend::tcp(EP_V1, "v1")?, Backend::tcp(EP_V2, "v2")?];
        for name in ["iptables", "nftables"] {
            if let Some(tool) = missing_tool(name).filter(|_| !redirector_only) {
                eprintln!("bench: {name}: skipped: {tool} not installed");
            }
        }
        let points = run_sweep(&sizes, redirector_only)?;
        for point in &points {
            println!("{}", point.summary());
        }
        return Ok(());
    }
    let sizes = if smoke {
        Sizes { connects: 2000, rate_connects: 300, round_trips: 1000, bulk_mib: 64, rounds: 2, sweep: vec![1, 100], sweep_connects: 300, edits: 5, classes: 1000 }
    } else {
        Sizes { connects, rate_connects, round_trips, bulk_mib, rounds, sweep, sweep_connects, edits, classes }
    };
    let command = invoked_as.unwrap_or_else(|| std::env::args().collect::<Vec<_>>().join(" "));
    run(&sizes, &out, &command)
}

/// How much of each measure a run does.
struct Sizes {
    /// Sequential connects per contender for the latency CDFs.
    pub connects: u32,
    /// Connects per client process in the rate test (one process per CPU).
    pub rate_connects: u32,
    /// Request/response round trips on one connection.
    pub round_trips: u32,
    /// MiB sent in the bulk test (per run; best of the rounds).
    pub bulk_mib: u32,
    /// Rounds over all contenders (latency pooled, rate and bulk best of).
    pub rounds: u32,
    /// Service counts of the scale sweep.
    pub sweep: Vec<u32>,
    /// Sequential connects per sweep point.
    pub sweep_connects: u32,
    /// One-route edits per sweep point.
    pub edits: u32,
    /// Workload classes of the flatness point (0: none).
    pub classes: u32,
}

/// The agent binary the redirector contender runs: `$REDIRECTOR_BIN` when
/// set (an override), else this very binary.
pub fn agent_bin() -> anyhow::Result<PathBuf> {
    match std::env::var_os("REDIRECTOR_BIN") {
        Some(path) => Ok(PathBuf::from(path)),
        None => std::env::current_exe().context("finding this binary (current_exe)"),
    }
}

/// Whether an executable named `tool` is on PATH.
fn on_path(tool: &str) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).any(|dir| {
        std::fs::metadata(dir.join(tool)).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// The first tool contender `name` needs that is not on PATH (`None`: it can run).
fn missing_tool(name: &str) -> Option<&'static str> {
    let needs: &[&'static str] = match name {
        "iptables" => &["iptables", "iptables-restore"],
        "nftables" => &["nft"],
        "haproxy" => &["haproxy"],
        _ => &[],
    };
    needs.iter().copied().find(|t| !on_path(t))
}

/// Sets a sysctl of this network namespace.
fn sysctl(path: &str, value: &str) -> anyhow::Result<()> {
    std::fs::write(Path::new("/proc/sys").join(path), value).with_context(|| format!("setting {path}={value}"))
}

/// One bench-client subprocess for `target` from `source`.
fn client_cmd(mode: &str, target: &str, source: &str, cgroup: Option<&Path>) -> anyhow::Result<Command> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args(["bench-client", "--mode", mode, "--target", target, "--source", source]);
    if let Some(dir) = cgroup {
        cmd.arg("--cgroup").arg(dir);
    }
    cmd.stdin(Stdio::null()).stderr(Stdio::inherit());
    Ok(cmd)
}

/// Connect latencies parsed from the client's lines.
fn parse_connects(s: &mut Sample, stdout: &[u8]) -> anyhow::Result<()> {
    for line in String::from_utf8_lossy(stdout).lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f[..] {
            ["err", e] => {
                s.errors += 1;
                *s.errnos.entry(e.parse()?).or_default() += 1;
            }
            [c, fb, tag] => {
                s.connect.push(c.parse()?);
                s.first_byte.push(fb.parse()?);
                match tag {
                    "1" => s.v1 += 1,
                    "2" => s.v2 += 1,
                    _ => {}
                }
            }
            _ => bail!("unexpected bench-client output {line:?}"),
        }
    }
    Ok(())
}

/// Fails unless most connects were answered and split 90/10.
fn check_split(name: &str, s: &Sample, connects: u32) -> anyhow::Result<()> {
    let answered = s.v1 + s.v2;
    if s.errors > u64::from(connects) / 100 || answered < u64::from(connects) * 99 / 100 {
        bail!("{name}: {} of {connects} connects failed (by errno: {:?}), {answered} answered by a backend", s.errors, s.errnos);
    }
    let share = s.v1 as f64 / answered.max(1) as f64;
    // Wide enough for a 200-connect smoke run (5 sigma), narrow enough to
    // catch a contender that does not split (or sends everything to one side).
    if !(0.8..=0.97).contains(&share) {
        bail!("{name}: {:.1} % went to the 90 % endpoint: the contender is not splitting 90/10", 100.0 * share);
    }
    Ok(())
}

/// Sequential connects from one client; the latency sample.
fn latency(c: &Contender, source: &str, connects: u32, warmup: u32) -> anyhow::Result<Sample> {
    let mut cmd = client_cmd("connect", &c.target, source, c.cgroup.as_deref())?;
    cmd.args(["--count", &connects.to_string(), "--warmup", &warmup.to_string()]);
    if let Some(a) = &c.alt {
        cmd.args(["--alt", a]);
    }
    let started = Instant::now();
    let out = cmd.output().context("running bench-client")?;
    if !out.status.success() {
        bail!("bench-client ({}) failed: {}", c.name, out.status);
    }
    let mut s = Sample { name: c.name, what: c.what.clone(), connect: Vec::new(), first_byte: Vec::new(), v1: 0, v2: 0, errors: 0, errnos: Default::default(), elapsed: started.elapsed() };
    parse_connects(&mut s, &out.stdout)?;
    s.connect.sort_unstable();
    s.first_byte.sort_unstable();
    check_split(c.name, &s, connects)?;
    Ok(s)
}

/// One client process per CPU, each making `per_client` connects at once;
/// answered connects per second of wall time.
fn rate(c: &Contender, index: usize, round: usize, per_client: u32) -> anyhow::Result<Rate> {
    let clients = std::thread::available_parallelism().map_or(1, |n| n.get());
    // Sources 127.22.<round, contender>.<client>: one octet each.
    if clients > 254 || (round + 1) * SOURCES.len() > 254 {
        bail!("{clients} CPUs or round {} do not fit the rate test's source addresses", round + 1);
    }
    let started = Instant::now();
    let children: Vec<_> = (0..clients)
        .map(|p| {
            let mut cmd = client_cmd("connect", &c.target, &format!("127.22.{}.{}", round * SOURCES.len() + index + 1, p + 1), c.cgroup.as_deref())?;
            cmd.args(["--count", &per_client.to_string(), "--warmup", "0"]);
            if let Some(a) = &c.alt {
                cmd.args(["--alt", a]);
            }
            Ok(cmd.stdout(Stdio::piped()).spawn()?)
        })
        .collect::<anyhow::Result<_>>()?;
    let mut s = Sample { name: c.name, what: String::new(), connect: Vec::new(), first_byte: Vec::new(), v1: 0, v2: 0, errors: 0, errnos: Default::default(), elapsed: Duration::ZERO };
    for child in children {
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!("bench-client ({} rate) failed: {}", c.name, out.status);
        }
        parse_connects(&mut s, &out.stdout)?;
    }
    let wall = started.elapsed();
    check_split(c.name, &s, per_client * clients as u32)?;
    Ok(Rate { clients, answered: s.v1 + s.v2, errors: s.errors, wall })
}

/// Request/response latencies on one connection (sorted, ns).
fn round_trips(c: &Contender, round_trips: u32) -> anyhow::Result<Vec<u64>> {
    let mut cmd = client_cmd("rr", &c.traffic, "127.0.0.1", c.cgroup.as_deref())?;
    cmd.args(["--count", &round_trips.to_string(), "--warmup", &(round_trips / 10).to_string()]);
    let out = cmd.output()?;
    if !out.status.success() {
        bail!("bench-client ({} rr) failed: {}", c.name, out.status);
    }
    let mut rr: Vec<u64> = String::from_utf8_lossy(&out.stdout).lines().map(str::parse).collect::<Result<_, _>>()?;
    rr.sort_unstable();
    Ok(rr)
}

/// One bulk transfer of `mib` MiB; Gbit/s.
fn bulk(c: &Contender, mib: u32) -> anyhow::Result<f64> {
    let mut cmd = client_cmd("bulk", &c.traffic, "127.0.0.1", c.cgroup.as_deref())?;
    cmd.args(["--count", &mib.to_string()]);
    let out = cmd.output()?;
    if !out.status.success() {
        bail!("bench-client ({} bulk) failed: {}", c.name, out.status);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let (bytes, ns) = text.trim().split_once(' ').context("bulk output")?;
    Ok(bytes.parse::<f64>()? * 8.0 / ns.parse::<f64>()?)
}

/// A contender that is up: where its clients dial, and what keeps it up
/// (dropped in field order).
struct Contender {
    name: &'static str,
    what: String,
    /// The 90/10 service (or, for `direct`, the 90 % endpoint).
    target: String,
    /// `direct` only: the 10 % endpoint, dialled by every tenth connect.
    alt: Option<String>,
    /// The single-endpoint `traffic` service (or the traffic server itself).
    traffic: String,
    /// The redirector only: the cgroup its hooks are attached to, which the
    /// clients join.
    cgroup: Option<PathBuf>,
    _up: Vec<Box<dyn std::any::Any>>,
}

/// Removes the netfilter rules on drop.
struct Netfilter(fn() -> anyhow::Result<()>);

impl Drop for Netfilter {
    fn drop(&mut self) {
        if let Err(e) = (self.0)() {
            eprintln!("warning: removing netfilter rules: {e:#}");
        }
    }
}

impl Contender {
    /// A contender dialled at `target`, from inside `cgroup` if given (only
    /// the redirector has one: its hooks are attached there).
    fn new(name: &'static str, target: &str, cgroup: Option<&Path>) -> Self {
        Contender {
            name,
            what: String::new(),
            target: target.to_string(),
            alt: None,
            traffic: String::new(),
            cgroup: cgroup.map(Path::to_path_buf),
            _up: Vec::new(),
        }
    }
}

fn up(name: &'static str) -> anyhow::Result<Contender> {
    let mut c = Contender::new(name, "", None);
    match name {
        "direct" => {
            c.what = format!("the client dials {EP_V1} (9 connections in 10) or {EP_V2} itself");
            c.target = EP_V1.into();
            c.alt = Some(EP_V2.into());
            c.traffic = EP_TRAFFIC.into();
        }
        "redirector" => {
            let agent = sweep::RunningAgent::start("rdr-bench")?;
            c.what = format!("the agent (`redirector run`) attached to a child cgroup; the client joins it and dials the MeshService VIP {VIP_REDIRECTOR}, a MeshTCPRoute splits 90/10");
            c.target = VIP_REDIRECTOR.into();
            c.traffic = TRAFFIC_REDIRECTOR.into();
            c.cgroup = Some(agent.cgroup.path().to_path_buf());
            c._up.push(Box::new(agent));
        }
        "haproxy" => {
            let scratch = ScratchDir::new("rdr-bench-haproxy")?;
            let cfg = scratch.write("haproxy.cfg", &haproxy_config())?;
            let haproxy = Haproxy::start(&cfg)?;
            c.what = format!("haproxy `mode tcp` on {VIP_HAPROXY}, `balance roundrobin` with server weights 90 and 10");
            c.target = VIP_HAPROXY.into();
            c.traffic = TRAFFIC_HAPROXY.into();
            c._up.push(Box::new(haproxy));
            c._up.push(Box::new(scratch));
        }
        "iptables" => {
            iptables_up()?;
            c._up.push(Box::new(Netfilter(iptables_down)));
            c.what = format!(
                "kube-proxy iptables layout for {VIP_IPTABLES}: nat OUTPUT -> KUBE-SERVICES -> KUBE-SVC-* -> `-m statistic --mode random --probability 0.9` -> KUBE-SEP-* DNAT ({})",
                first_line("iptables", &["-V"])
            );
            c.target = VIP_IPTABLES.into();
            c.traffic = TRAFFIC_IPTABLES.into();
        }
        "nftables" => {
            nftables_up()?;
            c._up.push(Box::new(Netfilter(nftables_down)));
            c.what = format!("kube-proxy nftables layout for {VIP_NFTABLES}: one `service-ips` verdict-map lookup, then `numgen random mod 100 vmap` -> endpoint chain DNAT");
            c.target = VIP_NFTABLES.into();
            c.traffic = TRAFFIC_NFTABLES.into();
        }
        _ => bail!("unknown contender {name}"),
    }
    Ok(c)
}

fn first_line(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .map(|o| {
            let text = if o.stdout.is_empty() { o.stderr } else { o.stdout };
            String::from_utf8_lossy(&text).lines().next().unwrap_or("").trim().to_string()
        })
        .unwrap_or_default()
}

fn machine(agent: &Path) -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, v)| v.trim().to_string()))
        .unwrap_or_else(|| "unknown".into());
    let profile = if agent.components().any(|c| c.as_os_str() == "debug") { "debug build" } else { "release build (or installed binary)" };
    let mut tools: Vec<String> = [
        first_line("iptables", &["-V"]),
        Some(first_line("nft", &["-v"])).filter(|v| !v.is_empty()).map(|v| format!("nftables {v}")).unwrap_or_default(),
        first_line("haproxy", &["-v"]),
        first_line("bpftool", &["version"]),
    ]
    .into_iter()
    .filter(|t| !t.is_empty())
    .collect();
    tools.push(format!("redirector agent: {profile} (`{}`); its BPF programs are always built in release mode", agent.display()));
    Machine {
        cpu,
        nproc: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string(),
        date: first_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        tools,
    }
}

fn run(sizes: &Sizes, out_dir: &Path, command: &str) -> anyhow::Result<()> {
    if sizes.connects < 100 {
        bail!("--connects must be at least 100");
    }
    let out_dir: PathBuf = if out_dir.is_absolute() { out_dir.to_path_buf() } else { std::env::current_dir()?.join(out_dir) };
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let warmup = (sizes.connects / 20).clamp(100, 2000);
    let started = Instant::now();
    let machine = machine(&agent_bin()?);
    // Contenders whose tools are missing are left out, and listed as such.
    let active: Vec<(usize, &'static str)> = SOURCES.iter().copied().enumerate().filter(|(_, n)| missing_tool(n).is_none()).collect();
    let skipped: Vec<String> = SOURCES.iter().filter_map(|n| missing_tool(n).map(|t| format!("{n}: skipped: {t} not installed"))).collect();
    for line in &skipped {
        eprintln!("bench: {line}");
    }

    enter_private_netns().context("creating the bench's network namespace")?;
    // Netns-local: enough ephemeral ports, and NAT'd connections in TIME_WAIT
    // leave conntrack quickly so 100k connects never fill its table.
    sysctl("net/ipv4/ip_local_port_range", "1024 65000")?;
    let _ = sysctl("net/netfilter/nf_conntrack_tcp_timeout_time_wait", "1");
    let _backends = [Backend::tcp(EP_V1, "v1")?, Backend::tcp(EP_V2, "v2")?];
    let _traffic = traffic::Server::start(EP_TRAFFIC)?;

    // Every measure runs in rounds; each round brings every contender up in
    // turn, so the VM's slow phases (it has neighbours) hit all of them
    // alike. Latencies are pooled over the rounds; rate and bulk keep the
    // best round.
    let rounds = sizes.rounds.max(1);
    let per_round = sizes.connects.div_ceil(rounds);
    let warmup = (warmup / rounds).max(50);
    let mut samples: Vec<Option<Sample>> = active.iter().map(|_| None).collect();
    let mut rrs: Vec<Vec<u64>> = active.iter().map(|_| Vec::new()).collect();
    let mut rates: Vec<Option<Rate>> = active.iter().map(|_| None).collect();
    let mut best_bulk = vec![0f64; active.len()];
    let (mut redirected, mut non_service) = (Vec::new(), Vec::new());
    for round in 0..rounds as usize {
        for (slot, &(index, name)) in active.iter().enumerate() {
            let c = up(name)?;
            let sample = latency(&c, &format!("127.21.{round}.{}", index + 1), per_round, warmup)?;
            eprintln!(
                "bench: {name}: round {}: connect p50 {:.1} µs, p99 {:.1} µs over {per_round}",
                round + 1,
                report::quantile(&sample.connect, 0.5) as f64 / 1e3,
                report::quantile(&sample.connect, 0.99) as f64 / 1e3,
            );
            match &mut samples[slot] {
                Some(pooled) => pooled.absorb(sample),
                slot => *slot = Some(sample),
            }
            // The hook cost in runs of their own: statistics, the
            // calibration program and the one-operation programs stay out
            // of the latency figures.
            if let Some(cgroup) = &c.cgroup {
                let runs = (per_round / 5).max(100);
                let (redirected_hook, non_service_hook) = hook_runs(&c, cgroup, round, runs)?;
                redirected.push(redirected_hook);
                non_service.push(non_service_hook);
            }
            rrs[slot].extend(round_trips(&c, sizes.round_trips.div_ceil(rounds))?);
            let r = rate(&c, index, round, sizes.rate_connects)?;
            let g = bulk(&c, sizes.bulk_mib)?;
            eprintln!("bench: {name}: round {}: {:.0} connects/s with {} clients, bulk {g:.2} Gbit/s", round + 1, r.per_second(), r.clients);
            if rates[slot].as_ref().is_none_or(|best| r.per_second() > best.per_second()) {
                rates[slot] = Some(r);
            }
            best_bulk[slot] = best_bulk[slot].max(g);
        }
    }
    let samples: Vec<Sample> = samples.into_iter().map(|s| s.expect("measured")).collect();
    let rates: Vec<Rate> = rates.into_iter().map(|r| r.expect("measured")).collect();
    let traffics: Vec<Traffic> = rrs
        .into_iter()
        .zip(best_bulk)
        .map(|(mut rr, bulk_gbit)| {
            rr.sort_unstable();
            Traffic { rr, bulk_gbit }
        })
        .collect();

    let points = run_sweep(sizes, false)?;
    let classes = if sizes.classes > 0 { Some(run_classes(sizes)?) } else { None };
    let hooks = HookFigures { redirected: Hook::pooled(redirected), non_service: Hook::pooled(non_service), classes };
    for line in hooks.summary(&points) {
        eprintln!("bench: {line}");
    }

    let total = started.elapsed();
    let md = report::markdown(&report::Report {
        samples: &samples,
        hooks: &hooks,
        rates: &rates,
        traffic: &traffics,
        sweep: &points,
        skipped: &skipped,
        machine: &machine,
        sizes,
        warmup,
        total,
        command,
    });
    std::fs::write(out_dir.join("README.md"), md)?;
    report::cdf_svg(&out_dir.join("connect-latency-cdf.svg"), "connect() latency CDF", &samples, |s| &s.connect)?;
    report::cdf_svg(&out_dir.join("first-byte-latency-cdf.svg"), "connect() + first byte latency CDF", &samples, |s| &s.first_byte)?;
    report::sweep_svg(&out_dir.join("sweep-latency.svg"), &points)?;
    eprintln!("bench: wrote {} in {:.0} s", out_dir.display(), total.as_secs_f64());
    for line in report::headline(&samples, &rates, &traffics, &points) {
        eprintln!("bench: {line}");
    }
    Ok(())
}

/// The hook measurements of one round of the redirector contender `c`
/// (clients in `cgroup`): (a) redirected connects to the service VIP, with
/// the one-operation programs attached next to the real hooks; (b) connects
/// from the same cgroup straight to the backend addresses (no service),
/// during which the `sock_release` cost is that of never-redirected closes.
fn hook_runs(c: &Contender, cgroup: &Path, round: usize, runs: u32) -> anyhow::Result<(Hook, Hook)> {
    let (_, redirected) = with_hook_stats(cgroup, true, || latency(c, &format!("127.25.{round}.1"), runs, 50))?;
    for line in redirected.lines() {
        eprintln!("bench: redirected connect: {line}");
    }
    let mut plain = Contender::new("redirector", EP_V1, Some(cgroup));
    plain.alt = Some(EP_V2.into());
    let (_, non_service) = with_hook_stats(cgroup, false, || latency(&plain, &format!("127.25.{round}.2"), runs, 50))?;
    for line in non_service.lines() {
        eprintln!("bench: non-service connect: {line}");
    }
    Ok((redirected, non_service))
}

/// Sweep sources: 127.23.<contender>.<point>, so no point meets another's
/// TIME_WAIT 4-tuples.
fn sweep_source(contender: usize, point: usize) -> String {
    format!("127.23.{}.{}", contender + 1, point + 1)
}

/// The flatness point with many workload classes: an agent holding
/// `sizes.classes` Dataplanes, each bound to its own cgroup below the agent's
/// with its own MeshTCPRoute for the bench service; the client joins the
/// middle one and dials the service VIP.
fn run_classes(sizes: &Sizes) -> anyhow::Result<ClassesPoint> {
    let n = sizes.classes;
    let names: Vec<String> = (0..n).map(sweep::class_cgroup).collect();
    let sa = sweep::RunningAgent::start_with("rdr-classes", &sweep::classes_files(n), &names)?;
    let cgroup = sa.cgroup.path().join(sweep::class_cgroup(n / 2));
    let c = Contender::new("redirector", VIP_REDIRECTOR, Some(&cgroup));
    let runs = sizes.sweep_connects.max(100);
    let (sample, hook) = with_hook_stats(sa.cgroup.path(), false, || latency(&c, "127.24.1.1", runs, 50))?;
    let point = ClassesPoint { classes: n, sample, hook };
    eprintln!("bench: {}", point.summary());
    Ok(point)
}

fn run_sweep(sizes: &Sizes, redirector_only: bool) -> anyhow::Result<Vec<SweepPoint>> {
    let mut points = Vec::new();
    let warmup = (sizes.sweep_connects / 20).clamp(50, 1000);
    for (k, &n) in sizes.sweep.iter().enumerate() {
        let target = SocketAddr::from((sweep::vip(sweep::measured(n)), 80)).to_string();
        // redirector: one agent, the N services written live, then one change.
        {
            let sa = sweep::RunningAgent::start("rdr-sweep")?;
            let files = sweep::redirector_files(n);
            let (install, install_micros) = sa.write_and_wait(&files, sweep::routes(n))?;
            for (_, line) in sa.agent.log_lines("applied generation") {
                eprintln!("bench: sweep {n}: install: {line}");
            }
            let prog = hooks::connect4_prog(sa.cgroup.path())?;
            let c = Contender::new("redirector", &target, Some(sa.cgroup.path()));
            let sample = latency(&c, &sweep_source(1, k), sizes.sweep_connects, warmup)?;
            let runs = (sizes.sweep_connects / 2).max(100);
            let (_, hook) = with_hook_stats(sa.cgroup.path(), false, || latency(&c, &format!("127.24.0.{}", k + 1), runs, 50))?;
            let (rss, hwm) = sweep::rss(sa.agent.pid())?;
            let maps = sweep::map_memory(prog)?;
            // One route changed, again and again: its file replaced with new weights.
            let mut changes = Vec::new();
            for e in 0..sizes.edits {
                let weights = if e % 2 == 0 { (80, 20) } else { (WEIGHT_V1, WEIGHT_V2) };
                changes.push(sa.write_and_wait(&[sweep::edited(n, weights)], sweep::routes(n))?);
            }
            let (rss_after, _) = sweep::rss(sa.agent.pid())?;
            let point = SweepPoint::redirector(n, sample, (install, install_micros), changes, hook, (rss, hwm, rss_after), maps);
            eprintln!("bench: sweep {n}: {}", point.summary());
            points.push(point);
        }
        let netfilter = [(3usize, "iptables"), (4, "nftables")].into_iter().filter(|(_, name)| !redirector_only && missing_tool(name).is_none());
        for (ci, name) in netfilter {
            let (full, change, down, mut cmd): (String, String, fn() -> anyhow::Result<()>, Command) = match name {
                "iptables" => {
                    let mut cmd = Command::new("iptables-restore");
                    cmd.arg("--noflush");
                    (sweep::iptables_rules(n), sweep::iptables_one_change(sweep::measured(n)), iptables_down, cmd)
                }
                _ => {
                    let mut cmd = Command::new("nft");
                    cmd.args(["-f", "-"]);
                    (sweep::nftables_rules(n), sweep::nftables_one_change(sweep::measured(n)), nftables_down, cmd)
                }
            };
            let Some(install) = sweep::timed_stdin(&mut cmd, &full, sweep::NETFILTER_TIMEOUT)? else {
                eprintln!("bench: sweep {n}: {name} did not load its rules within {:?}", sweep::NETFILTER_TIMEOUT);
                let _ = down();
                points.push(SweepPoint::gave_up(name, n, sweep::NETFILTER_TIMEOUT));
                continue;
            };
            let _guard = Netfilter(down);
            let c = Contender::new(name, &target, None);
            let sample = latency(&c, &sweep_source(ci, k), sizes.sweep_connects, warmup)?;
            let one = sweep::timed_stdin(&mut cmd, &change, sweep::NETFILTER_TIMEOUT)?;
            let point = SweepPoint::netfilter(name, n, sample, install, one);
            eprintln!("bench: sweep {n}: {}", point.summary());
            points.push(point);
        }
    }
    Ok(points)
}
