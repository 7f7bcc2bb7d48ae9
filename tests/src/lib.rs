//! Harness for end-to-end runs against the real kernel, used by the kernel
//! tests and `rdr-demo`. What the shipped `redirector bench` also needs
//! (private network namespaces, throwaway cgroups, pin directories, tiny
//! backends, the agent as a child process, the empty calibration program)
//! lives in `redirector::bench` and is re-exported here; this crate adds the
//! `rdr-probe` client and what only tests use.
//!
//! Everything here creates its own resources and removes them on drop; nothing
//! attaches to a cgroup it did not create, and all traffic stays on loopback
//! inside a namespace the caller made.

use anyhow::{Context as _, bail};
use std::{
    collections::BTreeMap,
    io::Write as _,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

pub mod fake_api;

pub use redirector::bench::calibration;
pub use redirector::bench::cgroup::ChildCgroup;
pub use redirector::bench::harness::{Agent, Backend, PinDir, ScratchDir, add_loopback_v6, ensure_bpffs, enter_private_netns};

/// Fails loudly unless running as root: kernel tests must never be skipped.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "kernel tests need root (run `cargo xtask test`); refusing to skip them"
    );
}

/// The `redirector` binary: `$REDIRECTOR_BIN`, else next to the running test binary's directory.
pub fn redirector_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("REDIRECTOR_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().expect("exe dir");
    let dir = if dir.ends_with("deps") { dir.parent().expect("target dir") } else { dir };
    let bin = dir.join("redirector");
    assert!(bin.exists(), "{} not built; run `cargo xtask test` or set REDIRECTOR_BIN", bin.display());
    bin
}

/// The `rdr-probe` binary next to the `redirector` binary (or `$RDR_PROBE_BIN`).
pub fn probe_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("RDR_PROBE_BIN") {
        return PathBuf::from(path);
    }
    redirector_bin().with_file_name("rdr-probe")
}

/// What one `rdr-probe` run observed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ProbeResult {
    /// Backend id -> connections it answered.
    pub replies: BTreeMap<String, u32>,
    /// errno -> failed connections.
    pub errors: BTreeMap<i32, u32>,
    /// getpeername() result -> connections.
    pub peers: BTreeMap<SocketAddr, u32>,
}

impl ProbeResult {
    /// Connections answered by `id`.
    pub fn replies_from(&self, id: &str) -> u32 {
        self.replies.get(id).copied().unwrap_or(0)
    }

    /// Total answered connections.
    pub fn answered(&self) -> u32 {
        self.replies.values().sum()
    }
}

/// Runs `rdr-probe` against `target`, `count` times, from inside `cgroup`
/// (or from outside any test cgroup when `None`).
pub fn probe(target: &str, count: u32, udp: bool, cgroup: Option<&Path>) -> anyhow::Result<ProbeResult> {
    let mut cmd = Command::new(probe_bin());
    cmd.args(["--connect", target, "--count", &count.to_string()]);
    if udp {
        cmd.arg("--udp");
    }
    if let Some(dir) = cgroup {
        cmd.arg("--cgroup").arg(dir);
    }
    let out = cmd.stderr(Stdio::inherit()).output().context("running rdr-probe")?;
    if !out.status.success() {
        bail!("rdr-probe failed: {}", out.status);
    }
    let mut result = ProbeResult::default();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [tag, what, n] = fields[..] else { bail!("unexpected probe output {line:?}") };
        let n: u32 = n.parse()?;
        match tag {
            "ok" => {
                result.replies.insert(what.to_string(), n);
            }
            "err" => {
                result.errors.insert(what.parse()?, n);
            }
            "peer" => {
                result.peers.insert(what.parse()?, n);
            }
            _ => bail!("unexpected probe output {line:?}"),
        }
    }
    Ok(result)
}

/// Pearson's chi-square statistic of observed counts against expected shares.
pub fn chi_square(observed: &[u32], expected_shares: &[f64]) -> f64 {
    let total: f64 = observed.iter().map(|&o| f64::from(o)).sum();
    observed
        .iter()
        .zip(expected_shares)
        .map(|(&o, &p)| {
            let e = total * p;
            (f64::from(o) - e).powi(2) / e
        })
        .sum()
}

/// Number of programs attached directly to `cgroup` for a BPF attach type
/// (e.g. `BPF_CGROUP_INET4_CONNECT`), via `BPF_PROG_QUERY`.
pub fn attached_programs(cgroup: &Path, attach_type: u32) -> anyhow::Result<u32> {
    Ok(redirector::kernel::attached_programs(cgroup, attach_type)?.len() as u32)
}

/// The cgroup attach types the agent uses: connect4, connect6, getpeername4,
/// getpeername6.
pub const AGENT_ATTACH_TYPES: [u32; 4] = [10, 11, 29, 30];

/// `BPF_CGROUP_INET_SOCK_RELEASE`: the agent attaches nothing there.
pub const SOCK_RELEASE_ATTACH_TYPE: u32 = 34;

/// `GET path` on a local HTTP server; returns the status line and the body.
pub fn http_get(addr: &str, path: &str) -> anyhow::Result<(String, String)> {
    use std::io::Read as _;
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n").as_bytes())?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    Ok((head.lines().next().unwrap_or("").to_string(), body.to_string()))
}

/// How many slots of the pinned `ORIGINS` map under `root` hold a record
/// (one per redirected socket, until a later cookie takes its slot over).
pub fn origins_recorded(root: &Path) -> anyhow::Result<usize> {
    let path = redirector::datapath::layout_dir(root).join("origins");
    let map = aya::maps::MapData::from_pin(&path).with_context(|| format!("opening {}", path.display()))?;
    let slots = redirector::kernel::MappedArray::<redirector_common::Origin>::read_only(&map, redirector_common::MAX_ORIGINS)?;
    Ok(slots.iter().filter(|o| o.cookie != 0).count())
}

/// The pinned `ROUTES` of the generation directory `generation`.
fn pinned_routes(generation: &Path) -> anyhow::Result<aya::maps::HashMap<aya::maps::MapData, redirector_common::ServiceKey, redirector_common::Route>> {
    let path = generation.join("routes");
    let map = aya::maps::MapData::from_pin(&path).with_context(|| format!("opening {}", path.display()))?;
    Ok(aya::maps::Map::HashMap(map).try_into()?)
}

/// How the pinned `FILTER` of a generation compares with its `ROUTES`.
#[derive(Debug, PartialEq, Eq)]
pub struct FilterCheck {
    /// Destinations with a base entry in `ROUTES`.
    pub services: usize,
    /// Bits those destinations need that are clear (each one a service the
    /// hooks would not redirect).
    pub missing: usize,
    /// Bits set that no destination needs (harmless, but a leak).
    pub extra: usize,
}

/// Compares the pinned `FILTER` of the generation directory `generation`
/// with the bits of the base keys in its `ROUTES`.
pub fn filter_check(generation: &Path) -> anyhow::Result<FilterCheck> {
    use redirector_common::{FILTER_WORDS, filter_bit};
    let mut expected = vec![0u64; FILTER_WORDS as usize];
    let mut services = 0;
    for key in pinned_routes(generation)?.keys() {
        let key = key?;
        if key.class == redirector_common::BASE_CLASS {
            services += 1;
            let bit = filter_bit(&key.addr, key.port);
            expected[(bit >> 6) as usize] |= 1 << (bit & 63);
        }
    }
    let path = generation.join("filter");
    let map = aya::maps::MapData::from_pin(&path).with_context(|| format!("opening {}", path.display()))?;
    let actual = redirector::kernel::MappedArray::<u64>::read_only(&map, FILTER_WORDS)?;
    let (mut missing, mut extra) = (0, 0);
    for (want, have) in expected.iter().zip(actual.iter()) {
        missing += (want & !have).count_ones() as usize;
        extra += (have & !want).count_ones() as usize;
    }
    Ok(FilterCheck { services, missing, extra })
}

/// The base entries of the generation directory `generation` flagged
/// `CLASS_ROUTED`: destinations the hooks look the caller's class up for.
pub fn class_routed_entries(generation: &Path) -> anyhow::Result<Vec<String>> {
    use redirector_common::{BASE_CLASS, CLASS_ROUTED};
    let mut flagged = Vec::new();
    for entry in pinned_routes(generation)?.iter() {
        let (key, route) = entry?;
        if key.class == BASE_CLASS && route.header.flags & CLASS_ROUTED != 0 {
            flagged.push(redirector_core::compile::destination(&key).to_string());
        }
    }
    flagged.sort();
    Ok(flagged)
}

/// How many entries the pinned hash map at `path` holds (walks every key).
pub fn map_entries(path: &Path) -> anyhow::Result<usize> {
    let map = aya::maps::MapData::from_pin(path).with_context(|| format!("opening {}", path.display()))?;
    let info = map.info()?;
    let key_size = info.key_size() as usize;
    let fd = map.fd();
    let mut count = 0;
    let mut key: Option<Vec<u8>> = None;
    loop {
        let mut next = vec![0u8; key_size];
        /// `BPF_MAP_GET_NEXT_KEY` attr.
        #[repr(C)]
        struct NextKey {
            map_fd: u32,
            pad: u32,
            key: u64,
            next_key: u64,
        }
        use std::os::fd::{AsFd as _, AsRawFd as _};
        let mut attr = NextKey {
            map_fd: fd.as_fd().as_raw_fd() as u32,
            pad: 0,
            key: key.as_ref().map_or(0, |k| k.as_ptr() as u64),
            next_key: next.as_mut_ptr() as u64,
        };
        const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;
        // SAFETY: the GET_NEXT_KEY layout; both pointers are buffers of the map's key size that outlive the call.
        if let Err(err) = unsafe { redirector::kernel::bpf(BPF_MAP_GET_NEXT_KEY, &mut attr) } {
            if err.raw_os_error() == Some(libc::ENOENT) {
                return Ok(count);
            }
            return Err(err).context("BPF_MAP_GET_NEXT_KEY");
        }
        count += 1;
        key = Some(next);
    }
}
