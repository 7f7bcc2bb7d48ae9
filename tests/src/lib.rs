//! Harness for end-to-end runs against the real kernel: private network
//! namespaces, throwaway cgroups, tiny backends, the agent as a child process
//! and the `rdr-probe` client. Used by the kernel tests, `rdr-demo` and `rdr-bench`.
//!
//! Everything here creates its own resources and removes them on drop; nothing
//! attaches to a cgroup it did not create, and all traffic stays on loopback
//! inside a namespace the caller made.

use anyhow::{Context as _, anyhow, bail};
use std::{
    collections::BTreeMap,
    ffi::OsStr,
    io::{BufRead as _, BufReader, Write as _},
    net::{SocketAddr, TcpListener, UdpSocket},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex, Once,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

pub mod calibration;
pub mod fake_api;
mod cgroup;

pub use cgroup::ChildCgroup;

/// Fails loudly unless running as root: kernel tests must never be skipped.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "kernel tests need root (run `cargo xtask test`); refusing to skip them"
    );
}

/// Moves the calling thread into a new network namespace with loopback up.
/// Threads and processes it starts afterwards inherit the namespace.
pub fn enter_private_netns() -> anyhow::Result<()> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).context("unshare(CLONE_NEWNET)")?;
    run_ip(&["link", "set", "lo", "up"])
}

/// Adds an IPv6 address to loopback in the current namespace.
pub fn add_loopback_v6(addr: &str) -> anyhow::Result<()> {
    run_ip(&["-6", "addr", "add", &format!("{addr}/128"), "dev", "lo", "nodad"])
}

fn run_ip(args: &[&str]) -> anyhow::Result<()> {
    let status = Command::new("ip").args(args).status().context("running ip (iproute2)")?;
    if !status.success() {
        bail!("ip {} failed: {status}", args.join(" "));
    }
    Ok(())
}

/// Mounts bpffs at /sys/fs/bpf once per process if nothing is mounted there,
/// before any agent starts (two agents racing to mount would stack mounts).
pub fn ensure_bpffs() -> anyhow::Result<()> {
    static ONCE: Once = Once::new();
    static RESULT: Mutex<Option<String>> = Mutex::new(None);
    ONCE.call_once(|| {
        let outcome = redirector::datapath::ensure_bpffs_mounted();
        *RESULT.lock().unwrap() = outcome.err().map(|e| format!("{e:#}"));
    });
    match RESULT.lock().unwrap().as_ref() {
        Some(e) => Err(anyhow!("mounting bpffs: {e}")),
        None => Ok(()),
    }
}

/// A unique, not-yet-existing pin directory on bpffs, removed on drop if left behind.
#[derive(Debug)]
pub struct PinDir(PathBuf);

impl PinDir {
    /// `/sys/fs/bpf/<prefix>-<pid>`.
    pub fn new(prefix: &str) -> anyhow::Result<Self> {
        ensure_bpffs()?;
        let name = format!("{prefix}-{}", std::process::id());
        Ok(Self(Path::new(redirector::datapath::DEFAULT_BPFFS).join(name)))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Everything left below it (and the directory itself), recursively.
    pub fn leftovers(&self) -> Vec<PathBuf> {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let path = e.path();
                if path.is_dir() {
                    walk(&path, out);
                }
                out.push(path);
            }
        }
        let mut out = Vec::new();
        walk(&self.0, &mut out);
        if self.0.exists() {
            out.push(self.0.clone());
        }
        out
    }
}

impl Drop for PinDir {
    /// Detaches whatever an agent left pinned here (agents leave their
    /// datapath in force on exit), then removes the directory.
    fn drop(&mut self) {
        if let Err(e) = redirector::datapath::uninstall(&self.0) {
            eprintln!("warning: uninstalling {}: {e:#}", self.0.display());
        }
    }
}

/// A TCP server that answers every connection with its id and closes it.
pub struct Backend {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Backend {
    /// Listens on `addr` and answers with `id`.
    pub fn tcp(addr: &str, id: &str) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(addr).with_context(|| format!("binding backend {addr}"))?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, reply) = (stop.clone(), format!("{id}\n"));
        let thread = thread::spawn(move || {
            for stream in listener.incoming() {
                if flag.load(Ordering::Relaxed) {
                    break;
                }
                if let Ok(mut s) = stream {
                    let _ = s.write_all(reply.as_bytes());
                }
            }
        });
        Ok(Self { addr, stop, thread: Some(thread) })
    }

    /// A UDP server on `addr` answering each datagram with `id`.
    pub fn udp(addr: &str, id: &str) -> anyhow::Result<Self> {
        let socket = UdpSocket::bind(addr).with_context(|| format!("binding UDP backend {addr}"))?;
        socket.set_read_timeout(Some(Duration::from_millis(100)))?;
        let addr = socket.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, reply) = (stop.clone(), id.to_string());
        let thread = thread::spawn(move || {
            let mut buf = [0u8; 64];
            while !flag.load(Ordering::Relaxed) {
                if let Ok((_, from)) = socket.recv_from(&mut buf) {
                    let _ = socket.send_to(reply.as_bytes(), from);
                }
            }
        });
        Ok(Self { addr, stop, thread: Some(thread) })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake a blocking accept(); UDP servers poll the flag.
        let _ = std::net::TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
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

/// A running `redirector run`.
pub struct Agent {
    child: Option<Child>,
    log: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl Agent {
    /// Starts the agent and waits (up to 60 s) for its `ready` line.
    pub fn start(config: &Path, cgroup: &Path, bpffs: &Path) -> anyhow::Result<Self> {
        Self::start_with(config, cgroup, bpffs, &[])
    }

    /// As [`Agent::start`], with extra command-line arguments.
    pub fn start_with(config: &Path, cgroup: &Path, bpffs: &Path, extra: &[&str]) -> anyhow::Result<Self> {
        Self::spawn(&[OsStr::new("--config"), config.as_os_str()], cgroup, bpffs, extra)
    }

    /// Starts `run --kubernetes` against the API server of `kubeconfig` as
    /// node `node`, and waits for its first generation to be ready.
    pub fn start_kubernetes(kubeconfig: &Path, node: &str, cgroup: &Path, bpffs: &Path, extra: &[&str]) -> anyhow::Result<Self> {
        let source = [OsStr::new("--kubernetes"), OsStr::new("--kubeconfig"), kubeconfig.as_os_str(), OsStr::new("--node-name"), OsStr::new(node)];
        Self::spawn(&source, cgroup, bpffs, extra)
    }

    fn spawn(source: &[&OsStr], cgroup: &Path, bpffs: &Path, extra: &[&str]) -> anyhow::Result<Self> {
        let mut child = Command::new(redirector_bin())
            .arg("run")
            .args(source)
            .arg("--cgroup")
            .arg(cgroup)
            .arg("--bpffs")
            .arg(bpffs)
            .args(extra)
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting redirector run")?;
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = mpsc::channel();
        let sink = log.clone();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.trim_end().ends_with("ready") {
                    let _ = ready_tx.send(());
                }
                sink.lock().unwrap().push((Instant::now(), line));
            }
        });
        let mut agent = Self { child: Some(child), log };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if ready_rx.recv_timeout(Duration::from_millis(50)).is_ok() {
                return Ok(agent);
            }
            if let Some(status) = agent.child.as_mut().unwrap().try_wait()? {
                thread::sleep(Duration::from_millis(100));
                bail!("agent exited with {status} before ready:\n{}", agent.log());
            }
            if Instant::now() > deadline {
                bail!("agent not ready after 60 s:\n{}", agent.log());
            }
        }
    }

    /// The agent's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Everything the agent logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().iter().map(|(_, l)| l.as_str()).collect::<Vec<_>>().join("\n")
    }

    /// Each log line containing `needle`, with when it arrived.
    pub fn log_lines(&self, needle: &str) -> Vec<(Instant, String)> {
        self.log.lock().unwrap().iter().filter(|(_, l)| l.contains(needle)).cloned().collect()
    }

    /// When each log line containing `needle` arrived.
    pub fn log_times(&self, needle: &str) -> Vec<Instant> {
        self.log.lock().unwrap().iter().filter(|(_, l)| l.contains(needle)).map(|(t, _)| *t).collect()
    }

    /// Kills the agent with SIGKILL (no chance to clean up) and reaps it.
    pub fn kill(mut self) -> anyhow::Result<()> {
        let mut child = self.child.take().expect("running");
        // Reaped whatever the kill says (it fails only when the agent already exited).
        let killed = child.kill();
        child.wait()?;
        Ok(killed?)
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub fn stop(mut self) -> anyhow::Result<()> {
        let mut child = self.child.take().expect("running");
        if let Err(e) = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM) {
            let _ = child.kill();
            child.wait()?;
            return Err(e.into());
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait()? {
                thread::sleep(Duration::from_millis(50));
                if !status.success() {
                    bail!("agent exited with {status}:\n{}", self.log());
                }
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                child.wait()?;
                bail!("agent did not stop within 30 s of SIGTERM:\n{}", self.log());
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = child.wait();
        }
    }
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

/// A scratch directory for config files, removed on drop.
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    /// Creates a fresh directory under the system temp dir.
    pub fn new(prefix: &str) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("{prefix}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        Ok(Self(dir))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes `name` with `text`, atomically: a temporary file outside the
    /// directory, renamed into place (how config tools should write).
    pub fn write(&self, name: &str, text: &str) -> anyhow::Result<PathBuf> {
        let path = self.0.join(name);
        let staging = self.0.with_extension(format!("{name}.staging"));
        std::fs::write(&staging, text)?;
        std::fs::rename(&staging, &path)?;
        Ok(path)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

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
