//! A client for the kernel tests and the demo: makes a bounded number of TCP
//! connects (or UDP exchanges) to one address and reports, per line, which
//! backend answered (`ok <id> <count>`), which errors occurred
//! (`err <errno> <count>`) and which peer addresses getpeername() returned
//! (`peer <addr> <count>`).
//!
//! `--cgroup DIR` moves the probe into that cgroup before the first connect.
//!
//! `--hold` makes one TCP connect, prints `connected`, waits for a line on
//! stdin, then prints `peer <addr>` (getpeername() at that moment) and exits.

use std::{
    collections::BTreeMap,
    io::Read,
    net::{SocketAddr, TcpStream, UdpSocket},
    time::Duration,
};

fn main() {
    let mut args = std::env::args().skip(1);
    let mut target: Option<SocketAddr> = None;
    let mut count: u32 = 1;
    let mut udp = false;
    let mut cgroup: Option<String> = None;
    let mut hold = false;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--connect" => target = args.next().and_then(|a| a.parse().ok()),
            "--count" => count = args.next().and_then(|c| c.parse().ok()).unwrap_or_else(|| usage()),
            "--udp" => udp = true,
            "--cgroup" => cgroup = args.next(),
            "--hold" => hold = true,
            _ => usage(),
        }
    }
    let target = target.unwrap_or_else(|| usage());
    assert!(count <= 1_000_000, "--count is bounded to 1,000,000");
    if let Some(dir) = cgroup {
        std::fs::write(format!("{dir}/cgroup.procs"), "0").expect("joining the cgroup");
    }
    if hold {
        return hold_one(target);
    }
    let mut replies: BTreeMap<String, u32> = BTreeMap::new();
    let mut errors: BTreeMap<i32, u32> = BTreeMap::new();
    let mut peers: BTreeMap<SocketAddr, u32> = BTreeMap::new();
    for _ in 0..count {
        let outcome = if udp { udp_once(target) } else { tcp_once(target) };
        match outcome {
            Ok((id, peer)) => {
                *replies.entry(id).or_default() += 1;
                *peers.entry(peer).or_default() += 1;
            }
            Err(e) => *errors.entry(e.raw_os_error().unwrap_or(-1)).or_default() += 1,
        }
    }
    for (id, n) in replies {
        println!("ok {id} {n}");
    }
    for (errno, n) in errors {
        println!("err {errno} {n}");
    }
    for (peer, n) in peers {
        println!("peer {peer} {n}");
    }
}

fn hold_one(target: SocketAddr) {
    let stream = TcpStream::connect_timeout(&target, Duration::from_secs(5)).expect("connect");
    println!("connected");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).expect("reading stdin");
    println!("peer {}", stream.peer_addr().expect("getpeername"));
}

fn tcp_once(target: SocketAddr) -> std::io::Result<(String, SocketAddr)> {
    let mut stream = TcpStream::connect_timeout(&target, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let peer = stream.peer_addr()?;
    let mut id = String::new();
    stream.read_to_string(&mut id)?;
    Ok((id.trim().to_string(), peer))
}

fn udp_once(target: SocketAddr) -> std::io::Result<(String, SocketAddr)> {
    let bind: SocketAddr = if target.is_ipv4() { "0.0.0.0:0".parse() } else { "[::]:0".parse() }
        .expect("literal address");
    let socket = UdpSocket::bind(bind)?;
    socket.set_read_timeout(Some(Duration::from_secs(5)))?;
    socket.connect(target)?;
    socket.send(b"ping")?;
    let mut buf = [0u8; 64];
    let n = socket.recv(&mut buf)?;
    Ok((String::from_utf8_lossy(&buf[..n]).trim().to_string(), socket.peer_addr()?))
}

fn usage() -> ! {
    eprintln!("usage: rdr-probe --connect ADDR:PORT [--count N] [--udp] [--hold] [--cgroup DIR]");
    std::process::exit(2)
}
