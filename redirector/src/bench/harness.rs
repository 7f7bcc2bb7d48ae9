//! What the bench (and the kernel tests, through `integration-tests`) run
//! on: a private network namespace, bpffs, pin directories, tiny TCP/UDP
//! backends, scratch config directories and the agent as a child process.
//!
//! Everything here creates its own resources and removes them on drop;
//! nothing attaches to a cgroup it did not create, and all traffic stays on
//! loopback inside a namespace the caller made.

use anyhow::{Context as _, anyhow, bail};
use std::{
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
        let outcome = crate::datapath::ensure_bpffs_mounted();
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
        Ok(Self(Path::new(crate::datapath::DEFAULT_BPFFS).join(name)))
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
        if let Err(e) = crate::datapath::uninstall(&self.0) {
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

/// A running `redirector run` (its stderr collected, with arrival times);
/// SIGTERM and reaped on drop.
pub struct Agent {
    child: Option<Child>,
    log: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl Agent {
    /// Starts `bin run --config <config>` and waits (up to 60 s) for its `ready` line.
    pub fn start(bin: &Path, config: &Path, cgroup: &Path, bpffs: &Path) -> anyhow::Result<Self> {
        Self::start_with(bin, config, cgroup, bpffs, &[])
    }

    /// As [`Agent::start`], with extra command-line arguments.
    pub fn start_with(bin: &Path, config: &Path, cgroup: &Path, bpffs: &Path, extra: &[&str]) -> anyhow::Result<Self> {
        Self::spawn(bin, &[OsStr::new("--config"), config.as_os_str()], cgroup, bpffs, extra)
    }

    /// Starts `bin run --kubernetes` against the API server of `kubeconfig`
    /// as node `node`, and waits for its first generation to be ready.
    pub fn start_kubernetes(bin: &Path, kubeconfig: &Path, node: &str, cgroup: &Path, bpffs: &Path, extra: &[&str]) -> anyhow::Result<Self> {
        let source = [OsStr::new("--kubernetes"), OsStr::new("--kubeconfig"), kubeconfig.as_os_str(), OsStr::new("--node-name"), OsStr::new(node)];
        Self::spawn(bin, &source, cgroup, bpffs, extra)
    }

    fn spawn(bin: &Path, source: &[&OsStr], cgroup: &Path, bpffs: &Path, extra: &[&str]) -> anyhow::Result<Self> {
        let mut child = Command::new(bin)
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
            .with_context(|| format!("starting {} run", bin.display()))?;
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
