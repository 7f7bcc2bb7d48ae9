//! `redirector bench-client` (hidden): the one client every contender is
//! measured with, this binary re-executed by the bench.
//!
//! In `connect` mode it optionally joins a cgroup (the redirector contender needs the client inside
//! the agent's cgroup), then makes `warmup + count` sequential TCP connections
//! to `target`. For each measured connection it prints one line to stdout:
//! `<connect ns> <connect+first byte ns> <second reply byte>` (the backends
//! answer `v1\n` or `v2\n`, so the last field tells which endpoint answered).
//! Failed connections print `err <errno>`.

use anyhow::{Context as _, bail};
use std::{
    io::{BufWriter, Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, TcpStream},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

/// The options of `redirector bench-client` (internal: the bench runs it).
#[derive(clap::Args, Debug)]
pub struct ClientArgs {
    /// connect (latency lines), rr (round trips) or bulk (MiB in --count).
    #[arg(long, default_value = "connect")]
    pub mode: String,
    /// Where to connect.
    #[arg(long)]
    pub target: SocketAddr,
    /// connect mode: every tenth connection dials this instead.
    #[arg(long)]
    pub alt: Option<SocketAddr>,
    /// connect mode: the source address of every connection.
    #[arg(long, default_value = "127.0.0.1")]
    pub source: Ipv4Addr,
    /// Measured connections, round trips, or MiB.
    #[arg(long)]
    pub count: u32,
    /// Unmeasured connections or round trips first.
    #[arg(long, default_value_t = 0)]
    pub warmup: u32,
    /// Join this cgroup first.
    #[arg(long)]
    pub cgroup: Option<PathBuf>,
}

/// Runs one bench client and prints what it measured to stdout.
pub fn client(args: ClientArgs) -> anyhow::Result<()> {
    let ClientArgs { mode, target, alt, source, count, warmup, cgroup } = args;
    match mode.as_str() {
        "connect" => connects(target, alt, source, count, warmup, cgroup.as_deref()),
        "rr" => super::traffic::rr(target, count, warmup, cgroup.as_deref()),
        "bulk" => super::traffic::bulk(target, count, cgroup.as_deref()),
        other => bail!("unknown client mode {other}"),
    }
}

/// With `alt`, every tenth connection dials `alt` instead of `target` (the
/// `direct` contender's own 90/10 split).
/// Every connection is made from `source` (port chosen at connect time), so
/// each contender has its own 4-tuples and never meets the backends'
/// TIME_WAIT sockets left by another contender.
pub fn connects(target: SocketAddr, alt: Option<SocketAddr>, source: Ipv4Addr, count: u32, warmup: u32, cgroup: Option<&Path>) -> anyhow::Result<()> {
    if let Some(dir) = cgroup {
        std::fs::write(dir.join("cgroup.procs"), "0").with_context(|| format!("joining {}", dir.display()))?;
    }
    let stdout = std::io::stdout();
    let mut out = BufWriter::with_capacity(1 << 20, stdout.lock());
    let mut buf = [0u8; 16];
    for i in 0..warmup.saturating_add(count) {
        let dest = match alt {
            Some(a) if i % 10 == 9 => a,
            _ => target,
        };
        let sock = bound_socket(source)?;
        let t0 = Instant::now();
        let stream = connect(sock, dest);
        let t1 = Instant::now();
        let mut stream = match stream {
            Ok(s) => s,
            Err(e) => {
                if i >= warmup {
                    writeln!(out, "err {}", e.raw_os_error().unwrap_or(0))?;
                }
                continue;
            }
        };
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let n = stream.read(&mut buf);
        let t2 = Instant::now();
        match n {
            Ok(n) if n > 0 => {
                if i >= warmup {
                    let tag = if n > 1 { buf[1] as char } else { '?' };
                    writeln!(out, "{} {} {tag}", (t1 - t0).as_nanos(), (t2 - t0).as_nanos())?;
                }
            }
            Ok(_) => {
                if i >= warmup {
                    writeln!(out, "err 0")?;
                }
            }
            Err(e) => {
                if i >= warmup {
                    writeln!(out, "err {}", e.raw_os_error().unwrap_or(0))?;
                }
            }
        }
    }
    out.flush()?;
    Ok(())
}

/// A TCP socket bound to `source` with IP_BIND_ADDRESS_NO_PORT (port picked by connect()).
fn bound_socket(source: Ipv4Addr) -> anyhow::Result<std::os::fd::OwnedFd> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, SockaddrIn, bind, socket};
    use std::os::fd::AsRawFd as _;
    let fd = socket(AddressFamily::Inet, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    let one: nix::libc::c_int = 1;
    // SAFETY: a valid socket and a c_int option value of the size passed.
    let rc = unsafe {
        nix::libc::setsockopt(
            fd.as_raw_fd(),
            nix::libc::IPPROTO_IP,
            nix::libc::IP_BIND_ADDRESS_NO_PORT,
            &one as *const _ as *const nix::libc::c_void,
            size_of::<nix::libc::c_int>() as u32,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    bind(fd.as_raw_fd(), &SockaddrIn::from(std::net::SocketAddrV4::new(source, 0)))?;
    Ok(fd)
}

fn connect(fd: std::os::fd::OwnedFd, dest: SocketAddr) -> std::io::Result<TcpStream> {
    use std::os::fd::AsRawFd as _;
    let SocketAddr::V4(v4) = dest else { return Err(std::io::Error::other("IPv4 only")) };
    nix::sys::socket::connect(fd.as_raw_fd(), &nix::sys::socket::SockaddrIn::from(v4))
        .map_err(|e| std::io::Error::from_raw_os_error(e as i32))?;
    Ok(TcpStream::from(fd))
}
