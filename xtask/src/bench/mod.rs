//! `cargo xtask bench`: connect() latency of the redirector against the
//! usual alternatives, on this machine, in one run.
//!
//! Inside a private network namespace it starts two loopback backends and
//! measures one client (`xtask bench-client`, a subprocess) against, in turn:
//! the backends dialled directly; the `redirector run` agent on a throwaway
//! cgroup the client joins; kube-proxy-style iptables DNAT; kube-proxy-style
//! nftables; and haproxy in TCP mode. Every contender splits 90/10 between
//! the same two endpoints. Results go to `<out>/README.md` and two SVG CDFs.
//! Every rule, process, cgroup and pin it creates is removed when it ends
//! (the netfilter rules vanish with the namespace at the latest).

pub mod client;
mod contenders;
mod report;

use anyhow::{Context as _, bail};
use contenders::*;
use integration_tests::{Agent, Backend, ChildCgroup, PinDir, ScratchDir, enter_private_netns};
use report::{Hook, Machine, Sample};
use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Instant},
};

/// Debian packages the bench needs, by the command each provides.
const TOOLS: [(&str, &str); 4] = [("iptables", "iptables"), ("nft", "nftables"), ("haproxy", "haproxy"), ("bpftool", "bpftool")];

/// Contender names, in the order of their client source addresses.
const SOURCES: [&str; 5] = ["direct", "redirector", "haproxy", "iptables", "nftables"];

fn have(cmd: &str) -> bool {
    Command::new("sh").args(["-c", &format!("command -v {cmd}")]).stdout(Stdio::null()).status().is_ok_and(|s| s.success())
}

/// Installs the contenders' tools with apt-get if any is missing (idempotent).
pub fn setup() -> anyhow::Result<()> {
    let missing: Vec<&str> = TOOLS.iter().filter(|(cmd, _)| !have(cmd)).map(|(_, pkg)| *pkg).collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("bench: installing {}", missing.join(" "));
    crate::run(Command::new("apt-get").arg("update").arg("-qq"))?;
    crate::run(Command::new("apt-get").args(["install", "-y", "-qq", "--no-install-recommends"]).args(&missing).env("DEBIAN_FRONTEND", "noninteractive"))?;
    for (cmd, pkg) in TOOLS {
        if !have(cmd) {
            bail!("{cmd} still missing after installing {pkg}");
        }
    }
    Ok(())
}

/// Sets a sysctl of this network namespace.
fn sysctl(path: &str, value: &str) -> anyhow::Result<()> {
    std::fs::write(Path::new("/proc/sys").join(path), value).with_context(|| format!("setting {path}={value}"))
}

/// `kernel.bpf_stats_enabled=1` while alive; the previous value is restored on drop.
struct BpfStats(String);

impl BpfStats {
    const PATH: &str = "/proc/sys/kernel/bpf_stats_enabled";
    fn enable() -> anyhow::Result<Self> {
        let old = std::fs::read_to_string(Self::PATH).context("reading kernel.bpf_stats_enabled")?;
        std::fs::write(Self::PATH, "1").context("enabling kernel.bpf_stats_enabled")?;
        Ok(Self(old.trim().to_string()))
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(Self::PATH, &self.0) {
            eprintln!("warning: restoring kernel.bpf_stats_enabled={}: {e}", self.0);
        }
    }
}

fn bpftool_json(args: &[&str]) -> anyhow::Result<serde_json::Value> {
    let out = Command::new("bpftool").arg("--json").args(args).output().context("running bpftool")?;
    if !out.status.success() {
        bail!("bpftool {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// The connect4 program attached to `cgroup` (id, name), via `bpftool cgroup show`.
fn connect4_prog(cgroup: &Path) -> anyhow::Result<(u64, String)> {
    let v = bpftool_json(&["cgroup", "show", &cgroup.to_string_lossy()])?;
    let progs = v.as_array().cloned().unwrap_or_default();
    let found: Vec<_> = progs.iter().filter(|p| p["attach_type"] == "connect4" || p["attach_type"] == "cgroup_inet4_connect").collect();
    let [p] = found[..] else { bail!("expected one connect4 program on {}, found {}: {v}", cgroup.display(), found.len()) };
    Ok((p["id"].as_u64().context("prog id")?, p["name"].as_str().unwrap_or("?").to_string()))
}

/// (run_time_ns, run_cnt) of a program (BPF_OBJ_GET_INFO_BY_FD, through bpftool).
fn prog_stats(id: u64) -> anyhow::Result<(u64, u64)> {
    let v = bpftool_json(&["prog", "show", "id", &id.to_string()])?;
    Ok((v["run_time_ns"].as_u64().unwrap_or(0), v["run_cnt"].as_u64().unwrap_or(0)))
}

/// Runs the client subprocess and collects its latencies.
fn measure(
    name: &'static str,
    what: String,
    target: &str,
    alt: Option<&str>,
    connects: u32,
    warmup: u32,
    cgroup: Option<&Path>,
) -> anyhow::Result<Sample> {
    eprintln!("bench: {name}: {connects} connects to {target}");
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args(["bench-client", "--target", target, "--count", &connects.to_string(), "--warmup", &warmup.to_string()]);
    // One source address per contender (127.21.0.N), see client::run.
    let n = SOURCES.iter().position(|s| *s == name).map_or(99, |i| i + 1);
    cmd.args(["--source", &format!("127.21.0.{n}")]);
    if let Some(a) = alt {
        cmd.args(["--alt", a]);
    }
    if let Some(dir) = cgroup {
        cmd.arg("--cgroup").arg(dir);
    }
    let started = Instant::now();
    let out = cmd.stdin(Stdio::null()).stderr(Stdio::inherit()).output().context("running bench-client")?;
    let elapsed = started.elapsed();
    if !out.status.success() {
        bail!("bench-client ({name}) failed: {}", out.status);
    }
    if let Some(dir) = std::env::var_os("BENCH_RAW_DIR") {
        std::fs::write(Path::new(&dir).join(format!("{name}.txt")), &out.stdout)?;
    }
    let mut s = Sample { name, what, connect: Vec::new(), first_byte: Vec::new(), v1: 0, v2: 0, errors: 0, elapsed };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f[..] {
            ["err", _] => s.errors += 1,
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
    s.connect.sort_unstable();
    s.first_byte.sort_unstable();
    let answered = s.v1 + s.v2;
    if s.errors > u64::from(connects) / 100 || answered < u64::from(connects) * 99 / 100 {
        bail!("{name}: {} of {connects} connects failed, {answered} answered by a backend", s.errors);
    }
    let share = s.v1 as f64 / answered.max(1) as f64;
    if !(0.8..=0.97).contains(&share) {
        bail!("{name}: {:.1} % went to the 90 % endpoint: the contender is not splitting 90/10", 100.0 * share);
    }
    eprintln!(
        "bench: {name}: connect p50 {:.1} µs, p99 {:.1} µs; {:.1} s",
        report::quantile(&s.connect, 0.5) as f64 / 1e3,
        report::quantile(&s.connect, 0.99) as f64 / 1e3,
        elapsed.as_secs_f64()
    );
    Ok(s)
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

fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, v)| v.trim().to_string()))
        .unwrap_or_else(|| "unknown".into());
    Machine {
        cpu,
        nproc: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string(),
        date: first_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        tools: vec![
            first_line("iptables", &["-V"]),
            format!("nftables {}", first_line("nft", &["-v"])),
            first_line("haproxy", &["-v"]),
            first_line("bpftool", &["version"]),
            "redirector agent: debug build (`target/debug/redirector`); its BPF programs are built in release mode".into(),
        ],
    }
}

pub fn run(connects: u32, out_dir: &Path) -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("the bench creates a network namespace, a cgroup and netfilter rules, and loads BPF: run it as root");
    }
    if connects < 100 {
        bail!("--connects must be at least 100");
    }
    let out_dir: PathBuf = if out_dir.is_absolute() { out_dir.to_path_buf() } else { std::env::current_dir()?.join(out_dir) };
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let warmup = (connects / 20).clamp(100, 2000);
    let started = Instant::now();
    let machine = machine();

    enter_private_netns().context("creating the bench's network namespace")?;
    // Netns-local: enough ephemeral ports, and NAT'd connections in TIME_WAIT
    // leave conntrack quickly so 100k connects never fill its table.
    sysctl("net/ipv4/ip_local_port_range", "1024 65000")?;
    let _ = sysctl("net/netfilter/nf_conntrack_tcp_timeout_time_wait", "1");
    let _backends = [Backend::tcp(EP_V1, "v1")?, Backend::tcp(EP_V2, "v2")?];
    let mut samples = Vec::new();

    samples.push(measure(
        "direct",
        format!("the client dials {EP_V1} (9 connections in 10) or {EP_V2} itself"),
        EP_V1,
        Some(EP_V2),
        connects,
        warmup,
        None,
    )?);

    // redirector: the real agent on a throwaway cgroup; the client joins it.
    let (hook, hook_error) = {
        let pins = PinDir::new("rdr-bench")?;
        let cgroup = ChildCgroup::create_unique("rdr-bench")?;
        let config = ScratchDir::new("rdr-bench")?;
        config.write("bench.yaml", &redirector_config())?;
        let agent = Agent::start(config.path(), cgroup.path(), pins.path())?;
        let prog = connect4_prog(cgroup.path());
        let stats = BpfStats::enable();
        let before = match (&prog, &stats) {
            (Ok((id, _)), Ok(_)) => prog_stats(*id).ok(),
            _ => None,
        };
        let sample = measure(
            "redirector",
            format!("`redirector run` attached to a child cgroup; the client joins it and dials the MeshService VIP {VIP_REDIRECTOR}, a MeshTCPRoute splits 90/10"),
            VIP_REDIRECTOR,
            None,
            connects,
            warmup,
            Some(cgroup.path()),
        );
        let after = match &prog {
            Ok((id, _)) if before.is_some() => prog_stats(*id).ok(),
            _ => None,
        };
        drop(stats);
        samples.push(sample?);
        agent.stop()?;
        drop(config);
        drop(pins); // detaches before the cgroup goes
        drop(cgroup);
        match (prog, before, after) {
            (Ok((id, name)), Some(b), Some(a)) => {
                (Some(Hook { prog_id: id, prog_name: name, run_time_ns: a.0 - b.0, run_cnt: a.1 - b.1 }), None)
            }
            (Err(e), _, _) => (None, Some(format!("{e:#}"))),
            _ => (None, Some("reading the program's statistics failed".to_string())),
        }
    };
    if let Some(h) = &hook {
        eprintln!("bench: connect4 hook: {} runs, {:.0} ns/run", h.run_cnt, h.run_time_ns as f64 / h.run_cnt.max(1) as f64);
    }
    if let Some(e) = &hook_error {
        eprintln!("bench: warning: hook cost not measured: {e}");
    }

    {
        let scratch = ScratchDir::new("rdr-bench-haproxy")?;
        let cfg = scratch.write("haproxy.cfg", &haproxy_config())?;
        let _haproxy = Haproxy::start(&cfg)?;
        samples.push(measure(
            "haproxy",
            format!("haproxy `mode tcp` on {VIP_HAPROXY}, `balance roundrobin` with server weights 90 and 10"),
            VIP_HAPROXY,
            None,
            connects,
            warmup,
            None,
        )?);
    }

    iptables_up()?;
    let sample = measure(
        "iptables",
        format!(
            "kube-proxy iptables layout for {VIP_IPTABLES}: nat OUTPUT -> KUBE-SERVICES -> KUBE-SVC-* -> `-m statistic --mode random --probability 0.9` -> KUBE-SEP-* DNAT ({})",
            first_line("iptables", &["-V"])
        ),
        VIP_IPTABLES,
        None,
        connects,
        warmup,
        None,
    );
    iptables_down()?;
    samples.push(sample?);

    nftables_up()?;
    let sample = measure(
        "nftables",
        format!("kube-proxy nftables layout for {VIP_NFTABLES}: one `service-ips` verdict-map lookup, then `numgen random mod 100 vmap` -> endpoint chain DNAT"),
        VIP_NFTABLES,
        None,
        connects,
        warmup,
        None,
    );
    nftables_down()?;
    samples.push(sample?);

    let total = started.elapsed();
    let md = report::markdown(&samples, hook.as_ref(), hook_error.as_deref(), &machine, connects, warmup, total);
    std::fs::write(out_dir.join("README.md"), md)?;
    report::cdf_svg(&out_dir.join("connect-latency-cdf.svg"), "connect() latency CDF", &samples, |s| &s.connect)?;
    report::cdf_svg(&out_dir.join("first-byte-latency-cdf.svg"), "connect() + first byte latency CDF", &samples, |s| &s.first_byte)?;
    eprintln!("bench: wrote {} in {:.0} s", out_dir.display(), total.as_secs_f64());
    let direct = &samples[0];
    for s in &samples {
        eprintln!(
            "bench: {:<10} connect p50 {:>5.2}× p99 {:>5.2}×  first byte p50 {:>5.2}× p99 {:>5.2}×",
            s.name,
            report::quantile(&s.connect, 0.5) as f64 / report::quantile(&direct.connect, 0.5).max(1) as f64,
            report::quantile(&s.connect, 0.99) as f64 / report::quantile(&direct.connect, 0.99).max(1) as f64,
            report::quantile(&s.first_byte, 0.5) as f64 / report::quantile(&direct.first_byte, 0.5).max(1) as f64,
            report::quantile(&s.first_byte, 0.99) as f64 / report::quantile(&direct.first_byte, 0.99).max(1) as f64,
        );
    }
    Ok(())
}
