//! Established-connection measures: request/response round trips and bulk
//! throughput, through each contender to one traffic server.
//!
//! Once connect() returns, the redirector is out of the path (the socket is
//! connected to the endpoint itself), netfilter's NAT still translates every
//! packet through conntrack, and a userspace proxy copies every byte twice.
//! These two measures show that difference.
//!
//! The server reads one mode byte per connection: `e` echoes everything back
//! (request/response), `s` swallows everything until end of stream, then
//! answers with the byte count (8 bytes, little endian).

use anyhow::{Context as _, bail};
use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

/// Size of one request and of its response.
pub const RR_BYTES: usize = 64;
/// Size of each write in the bulk test.
const BULK_CHUNK: usize = 256 * 1024;

/// The echo/sink server, one thread per connection; stopped on drop.
pub struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Server {
    pub fn start(addr: &str) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(addr).with_context(|| format!("binding traffic server {addr}"))?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = thread::spawn(move || {
            for stream in listener.incoming() {
                if flag.load(Ordering::Relaxed) {
                    break;
                }
                if let Ok(s) = stream {
                    thread::spawn(move || serve(s));
                }
            }
        });
        Ok(Self { addr, stop, thread: Some(thread) })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(mut s: TcpStream) {
    let _ = s.set_nodelay(true);
    let mut mode = [0u8; 1];
    if s.read_exact(&mut mode).is_err() {
        return;
    }
    let mut buf = vec![0u8; BULK_CHUNK];
    match mode[0] {
        b'e' => loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if s.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            }
        },
        b's' => {
            let mut total = 0u64;
            loop {
                match s.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => total += n as u64,
                    Err(_) => return,
                }
            }
            let _ = s.write_all(&total.to_le_bytes());
        }
        _ => {}
    }
}

fn join(cgroup: Option<&Path>) -> anyhow::Result<()> {
    if let Some(dir) = cgroup {
        std::fs::write(dir.join("cgroup.procs"), "0").with_context(|| format!("joining {}", dir.display()))?;
    }
    Ok(())
}

/// Client: one connection, `count` request/response round trips of
/// [`RR_BYTES`] each (after `warmup`); prints each round trip's ns.
pub fn rr(target: SocketAddr, count: u32, warmup: u32, cgroup: Option<&Path>) -> anyhow::Result<()> {
    join(cgroup)?;
    let mut s = TcpStream::connect(target).with_context(|| format!("connecting to {target}"))?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"e")?;
    let request = [b'x'; RR_BYTES];
    let mut response = [0u8; RR_BYTES];
    let mut times = Vec::with_capacity(count as usize);
    for i in 0..warmup.saturating_add(count) {
        let t0 = Instant::now();
        s.write_all(&request)?;
        s.read_exact(&mut response).context("reading the echo")?;
        if i >= warmup {
            times.push(t0.elapsed().as_nanos() as u64);
        }
    }
    if response != request {
        bail!("the echo came back altered");
    }
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for t in times {
        writeln!(out, "{t}")?;
    }
    out.flush()?;
    Ok(())
}

/// Client: sends `mib` MiB on one connection, waits for the server's count
/// (so every byte was received), prints `<bytes> <ns>`.
pub fn bulk(target: SocketAddr, mib: u32, cgroup: Option<&Path>) -> anyhow::Result<()> {
    join(cgroup)?;
    let chunk = vec![b'y'; BULK_CHUNK];
    let total = u64::from(mib) * 1024 * 1024;
    let mut s = TcpStream::connect(target).with_context(|| format!("connecting to {target}"))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let t0 = Instant::now();
    s.write_all(b"s")?;
    let mut sent = 0u64;
    while sent < total {
        let n = (total - sent).min(BULK_CHUNK as u64) as usize;
        s.write_all(&chunk[..n])?;
        sent += n as u64;
    }
    s.shutdown(std::net::Shutdown::Write)?;
    let mut count = [0u8; 8];
    s.read_exact(&mut count).context("reading the server's byte count")?;
    let elapsed = t0.elapsed();
    let got = u64::from_le_bytes(count);
    if got != total {
        bail!("the server received {got} of {total} bytes");
    }
    println!("{total} {}", elapsed.as_nanos());
    Ok(())
}
