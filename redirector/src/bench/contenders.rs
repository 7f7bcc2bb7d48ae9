//! How each contender is set up (and torn down) inside the bench's private
//! network namespace. Every contender splits 90/10 between the same two
//! backend endpoints, [`EP_V1`] and [`EP_V2`].

use anyhow::{Context as _, bail};
use std::{
    io::Write as _,
    net::{SocketAddr, TcpStream},
    path::Path,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

/// The 90 % endpoint (answers `v1`).
pub const EP_V1: &str = "127.20.1.1:18081";
/// The 10 % endpoint (answers `v2`).
pub const EP_V2: &str = "127.20.2.1:18082";
pub const WEIGHT_V1: u32 = 90;
pub const WEIGHT_V2: u32 = 10;

/// Service addresses, one per contender.
pub const VIP_REDIRECTOR: &str = "127.20.0.1:80";
pub const VIP_IPTABLES: &str = "127.20.0.2:80";
pub const VIP_NFTABLES: &str = "127.20.0.3:80";
pub const VIP_HAPROXY: &str = "127.20.0.4:80";

/// The traffic server (echo and sink, see `traffic`), the one endpoint of
/// the `traffic` service: established-connection tests need every
/// connection of a run to reach the same server.
pub const EP_TRAFFIC: &str = "127.20.3.1:18083";

/// The `traffic` service's address, one per contender.
pub const TRAFFIC_REDIRECTOR: &str = "127.20.0.21:80";
pub const TRAFFIC_IPTABLES: &str = "127.20.0.22:80";
pub const TRAFFIC_NFTABLES: &str = "127.20.0.23:80";
pub const TRAFFIC_HAPROXY: &str = "127.20.0.24:80";

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd.stdin(Stdio::null()).output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

fn run_stdin(cmd: &mut Command, input: &str) -> anyhow::Result<()> {
    let mut child =
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().with_context(|| format!("running {cmd:?}"))?;
    child.stdin.take().expect("piped").write_all(input.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("{cmd:?} failed ({}): {}\ninput:\n{input}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// The redirector's config: service `bench` on [`VIP_REDIRECTOR`] routed 90/10
/// to `bench-v1` / `bench-v2`, one Dataplane each.
pub fn redirector_config() -> String {
    let service = |name: &str, vip: &str, tags: &str| {
        format!(
            "---\ntype: MeshService\nname: {name}\nmesh: default\nspec:\n  selector:\n    dataplaneTags:\n{tags}  ports:\n    - port: 80\n      targetPort: 8080\n      name: main\nstatus:\n  vips:\n    - ip: {vip}\n"
        )
    };
    let dataplane = |name: &str, ep: &str, version: &str| {
        let (addr, port) = ep.split_once(':').expect("ip:port");
        format!(
            "---\ntype: Dataplane\nname: {name}\nmesh: default\nnetworking:\n  address: {addr}\n  inbound:\n    - port: 8080\n      servicePort: {port}\n      tags:\n        app: bench\n        version: {version}\n"
        )
    };
    let vip = VIP_REDIRECTOR.split_once(':').expect("ip:port").0;
    let traffic_vip = TRAFFIC_REDIRECTOR.split_once(':').expect("ip:port").0;
    let (traffic_addr, traffic_port) = EP_TRAFFIC.split_once(':').expect("ip:port");
    [
        // No route targets `traffic`: Kuma's default route sends it to itself.
        service("traffic", traffic_vip, "      app: traffic\n"),
        format!(
            "---\ntype: Dataplane\nname: traffic-a\nmesh: default\nnetworking:\n  address: {traffic_addr}\n  inbound:\n    - port: 8080\n      servicePort: {traffic_port}\n      tags:\n        app: traffic\n"
        ),
        service("bench", vip, "      app: bench\n"),
        service("bench-v1", "127.20.0.11", "      app: bench\n      version: v1\n"),
        service("bench-v2", "127.20.0.12", "      app: bench\n      version: v2\n"),
        dataplane("bench-v1-a", EP_V1, "v1"),
        dataplane("bench-v2-a", EP_V2, "v2"),
        format!(
            "---\ntype: MeshTCPRoute\nname: bench-split\nmesh: default\nspec:\n  targetRef:\n    kind: Mesh\n  to:\n    - targetRef:\n        kind: MeshService\n        name: bench\n      rules:\n        - default:\n            backendRefs:\n              - kind: MeshService\n                name: bench-v1\n                port: 80\n                weight: {WEIGHT_V1}\n              - kind: MeshService\n                name: bench-v2\n                port: 80\n                weight: {WEIGHT_V2}\n"
        ),
    ]
    .concat()
}

/// kube-proxy's iptables layout for one ClusterIP service with two endpoints:
/// `OUTPUT -> KUBE-SERVICES -> KUBE-SVC-* -> KUBE-SEP-* (DNAT)`, the endpoint
/// picked by `-m statistic --mode random --probability` (the last endpoint
/// takes what is left, as kube-proxy writes it).
pub fn iptables_rules() -> String {
    let (vip, port) = VIP_IPTABLES.split_once(':').expect("ip:port");
    let (tvip, tport) = TRAFFIC_IPTABLES.split_once(':').expect("ip:port");
    let p1 = f64::from(WEIGHT_V1) / f64::from(WEIGHT_V1 + WEIGHT_V2);
    format!(
        "*nat\n\
:KUBE-SERVICES - [0:0]\n\
:KUBE-SVC-BENCH - [0:0]\n\
:KUBE-SEP-BENCHV1 - [0:0]\n\
:KUBE-SEP-BENCHV2 - [0:0]\n\
:KUBE-SVC-TRAFFIC - [0:0]\n\
:KUBE-SEP-TRAFFIC - [0:0]\n\
-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
-A KUBE-SERVICES -d {tvip}/32 -p tcp -m comment --comment \"bench/traffic cluster IP\" -m tcp --dport {tport} -j KUBE-SVC-TRAFFIC\n\
-A KUBE-SVC-TRAFFIC -m comment --comment \"bench/traffic -> {EP_TRAFFIC}\" -j KUBE-SEP-TRAFFIC\n\
-A KUBE-SEP-TRAFFIC -p tcp -m comment --comment \"bench/traffic\" -m tcp -j DNAT --to-destination {EP_TRAFFIC}\n\
-A KUBE-SERVICES -d {vip}/32 -p tcp -m comment --comment \"bench/bench:main cluster IP\" -m tcp --dport {port} -j KUBE-SVC-BENCH\n\
-A KUBE-SVC-BENCH -m comment --comment \"bench/bench:main -> {EP_V1}\" -m statistic --mode random --probability {p1:.11} -j KUBE-SEP-BENCHV1\n\
-A KUBE-SVC-BENCH -m comment --comment \"bench/bench:main -> {EP_V2}\" -j KUBE-SEP-BENCHV2\n\
-A KUBE-SEP-BENCHV1 -p tcp -m comment --comment \"bench/bench:main\" -m tcp -j DNAT --to-destination {EP_V1}\n\
-A KUBE-SEP-BENCHV2 -p tcp -m comment --comment \"bench/bench:main\" -m tcp -j DNAT --to-destination {EP_V2}\n\
COMMIT\n"
    )
}

/// Installs [`iptables_rules`] with `iptables-restore --noflush`.
pub fn iptables_up() -> anyhow::Result<()> {
    run_stdin(Command::new("iptables-restore").arg("--noflush"), &iptables_rules())
}

/// Removes the nat table's rules and chains, then the table itself (the
/// namespace is the bench's own). Flushing alone leaves the table and its
/// hooks registered, which keeps connection tracking on for every later
/// contender in the namespace.
pub fn iptables_down() -> anyhow::Result<()> {
    run(Command::new("iptables").args(["-t", "nat", "-F"]))?;
    run(Command::new("iptables").args(["-t", "nat", "-X"]))?;
    // iptables-nft keeps its tables in nftables (without nft, iptables is
    // the legacy one: flushed is all there is to do).
    if super::missing_tool("nftables").is_some() {
        return Ok(());
    }
    run(Command::new("nft").args(["delete", "table", "ip", "nat"]))
}

/// kube-proxy's nftables layout: one `service-ips` verdict map lookup on
/// `daddr . l4proto . dport`, then the service chain picks an endpoint with
/// `numgen random mod N vmap` (here mod 100 with ranges for the 90/10 weights;
/// kube-proxy itself writes one element per equal-weight endpoint).
pub fn nftables_rules() -> String {
    let (vip, port) = VIP_NFTABLES.split_once(':').expect("ip:port");
    let (tvip, tport) = TRAFFIC_NFTABLES.split_once(':').expect("ip:port");
    let split = WEIGHT_V1 + WEIGHT_V2;
    format!(
        "table ip kube-proxy {{\n\
  map service-ips {{\n\
    type ipv4_addr . inet_proto . inet_service : verdict\n\
    elements = {{ {vip} . tcp . {port} : goto service-BENCH, {tvip} . tcp . {tport} : goto service-TRAFFIC }}\n\
  }}\n\
  chain service-TRAFFIC {{\n\
    meta l4proto tcp dnat to {EP_TRAFFIC}\n\
  }}\n\
  chain nat-output {{\n\
    type nat hook output priority -100; policy accept;\n\
    jump services\n\
  }}\n\
  chain services {{\n\
    ip daddr . meta l4proto . th dport vmap @service-ips\n\
  }}\n\
  chain service-BENCH {{\n\
    numgen random mod {split} vmap {{ 0-{a} : goto endpoint-BENCHV1, {WEIGHT_V1}-{b} : goto endpoint-BENCHV2 }}\n\
  }}\n\
  chain endpoint-BENCHV1 {{\n\
    meta l4proto tcp dnat to {EP_V1}\n\
  }}\n\
  chain endpoint-BENCHV2 {{\n\
    meta l4proto tcp dnat to {EP_V2}\n\
  }}\n\
}}\n",
        a = WEIGHT_V1 - 1,
        b = split - 1,
    )
}

pub fn nftables_up() -> anyhow::Result<()> {
    run_stdin(Command::new("nft").args(["-f", "-"]), &nftables_rules())
}

pub fn nftables_down() -> anyhow::Result<()> {
    run(Command::new("nft").args(["delete", "table", "ip", "kube-proxy"]))
}

/// haproxy in TCP mode on [`VIP_HAPROXY`], weighted round robin over the two endpoints.
pub fn haproxy_config() -> String {
    format!(
        "global\n  maxconn 4096\n  log stderr format short local0 err\n\
defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n\
frontend bench\n  bind {VIP_HAPROXY}\n  default_backend bench\n\
backend bench\n  balance roundrobin\n  server v1 {EP_V1} weight {WEIGHT_V1}\n  server v2 {EP_V2} weight {WEIGHT_V2}\n\
frontend traffic\n  bind {TRAFFIC_HAPROXY}\n  default_backend traffic\n\
backend traffic\n  server t {EP_TRAFFIC}\n"
    )
}

/// A running haproxy (foreground, `-db`), killed and reaped on drop.
pub struct Haproxy(Child);

impl Haproxy {
    pub fn start(config: &Path) -> anyhow::Result<Self> {
        run(Command::new("haproxy").arg("-c").arg("-q").arg("-f").arg(config))?;
        let child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .context("starting haproxy")?;
        let mut me = Self(child);
        let addr: SocketAddr = VIP_HAPROXY.parse()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(me);
            }
            if let Some(status) = me.0.try_wait()? {
                bail!("haproxy exited with {status}");
            }
            if Instant::now() > deadline {
                bail!("haproxy not listening on {VIP_HAPROXY} after 10 s");
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
