//! The empty calibration program, and the loader for every tiny program the
//! bench builds itself: cgroup connect4 hooks written as raw instructions and
//! loaded with the bare bpf(2) syscall, so no BPF toolchain, object file or
//! loader library is needed, and the program type and attach type are
//! exactly those of the real connect4 hook.
//!
//! The empty program (`r0 = 1; exit`) allows every connect and does nothing
//! else. Attached next to the real hooks, it gives the per-run floor cost
//! (hook dispatch and the statistics' own overhead) of a program of the same
//! type on the same path. [`super::ops`] builds its one-operation programs
//! with the same loader.

use anyhow::{Context as _, anyhow, bail};
use crate::kernel::bpf;
use std::{
    ffi::{c_int, c_long},
    fs::OpenOptions,
    io,
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
        unix::fs::OpenOptionsExt as _,
    },
    path::Path,
};

const BPF_PROG_LOAD: c_long = 5;
const BPF_OBJ_GET_INFO_BY_FD: c_long = 15;
const BPF_LINK_CREATE: c_long = 28;

const BPF_PROG_TYPE_CGROUP_SOCK_ADDR: u32 = 18;
/// `BPF_CGROUP_INET4_CONNECT`, the attach type of every program built here.
pub const BPF_CGROUP_INET4_CONNECT: u32 = 10;

/// NUL-terminated, at most 16 bytes with the NUL (BPF_OBJ_NAME_LEN).
const PROG_NAME: &[u8] = b"rdr_calibration\0";
static LICENSE: [u8; 4] = *b"GPL\0";
const LOG_SIZE: usize = 64 * 1024;

const _: () = assert!(PROG_NAME.len() <= 16);

/// One `struct bpf_insn`: opcode, dst/src registers (4 bits each: dst low,
/// src high), offset, immediate.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Insn {
    /// Opcode.
    pub code: u8,
    /// `dst | src << 4`.
    pub regs: u8,
    /// Offset.
    pub off: i16,
    /// Immediate.
    pub imm: i32,
}

/// `r0 = 1` (BPF_ALU64 | BPF_MOV | BPF_K): allow the connect.
pub const ALLOW: Insn = Insn { code: 0xb7, regs: 0, off: 0, imm: 1 };
/// `exit`.
pub const EXIT: Insn = Insn { code: 0x95, regs: 0, off: 0, imm: 0 };

/// `r0 = 1; exit`: allow every connect.
static PROGRAM: [Insn; 2] = [ALLOW, EXIT];

/// The BPF_PROG_LOAD part of `union bpf_attr`, up to `expected_attach_type`.
#[repr(C)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// The BPF_LINK_CREATE part of `union bpf_attr`, up to `flags`.
#[repr(C)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_fd: u32,
    attach_type: u32,
    flags: u32,
}

/// The BPF_OBJ_GET_INFO_BY_FD part of `union bpf_attr`.
#[repr(C)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

// No implicit padding: every byte passed to the kernel is initialised.
const _: () = assert!(size_of::<ProgLoadAttr>() == 72);
const _: () = assert!(size_of::<LinkCreateAttr>() == 16);
const _: () = assert!(size_of::<InfoAttr>() == 16);

/// Wraps a file descriptor that bpf(2) just returned.
pub(crate) fn owned(fd: c_long) -> OwnedFd {
    // SAFETY: `fd` was just returned by a successful bpf(2) call, so it is open
    // and owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(fd as c_int) }
}

/// BPF_PROG_LOAD of `insns` named `name`, optionally with a verifier log.
fn load(insns: &[Insn], name: &[u8], log: Option<&mut [u8]>) -> io::Result<OwnedFd> {
    let mut prog_name = [0u8; 16];
    let len = name.len().min(15);
    prog_name[..len].copy_from_slice(&name[..len]);
    let (log_level, log_size, log_buf) = match log {
        Some(buf) => (1, buf.len() as u32, buf.as_mut_ptr() as u64),
        None => (0, 0, 0),
    };
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_SOCK_ADDR,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: LICENSE.as_ptr() as u64,
        log_level,
        log_size,
        log_buf,
        kern_version: 0,
        prog_flags: 0,
        prog_name,
        prog_ifindex: 0,
        expected_attach_type: BPF_CGROUP_INET4_CONNECT,
    };
    // SAFETY: `attr` is the PROG_LOAD layout; the instructions and license
    // outlive the call, and the log buffer (if any) is a live mutable slice
    // of `log_size` bytes.
    unsafe { bpf(BPF_PROG_LOAD, &mut attr) }.map(owned)
}

/// Loads the program; on failure, loads again with a verifier log to explain why.
fn load_with_log_on_failure(insns: &[Insn], name: &[u8]) -> anyhow::Result<OwnedFd> {
    let first = match load(insns, name, None) {
        Ok(fd) => return Ok(fd),
        Err(e) => e,
    };
    let mut log = vec![0u8; LOG_SIZE];
    match load(insns, name, Some(&mut log)) {
        Ok(fd) => Ok(fd),
        Err(_) => {
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            let text = String::from_utf8_lossy(&log[..end]);
            let text = text.trim();
            let text = if text.is_empty() { "(empty)" } else { text };
            Err(anyhow!("{first}; verifier log:\n{text}"))
        }
    }
}

/// The kernel's id of the program behind `prog`, checking it is a sock_addr program.
fn prog_id(prog: &OwnedFd) -> anyhow::Result<u32> {
    // Zeroed and larger than today's `struct bpf_prog_info`; `type` is at 0, `id` at 4.
    let mut info = [0u32; 64];
    let mut attr = InfoAttr {
        bpf_fd: prog.as_raw_fd() as u32,
        info_len: size_of_val(&info) as u32,
        info: info.as_mut_ptr() as u64,
    };
    // SAFETY: `attr` is the OBJ_GET_INFO_BY_FD layout and `info` points to a
    // live, zeroed buffer of `info_len` bytes that the kernel writes into.
    unsafe { bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr) }?;
    if attr.info_len < 8 {
        bail!("kernel returned only {} bytes of bpf_prog_info", attr.info_len);
    }
    let (prog_type, id) = (info[0], info[1]);
    if prog_type != BPF_PROG_TYPE_CGROUP_SOCK_ADDR {
        bail!("loaded program has type {prog_type}, expected {BPF_PROG_TYPE_CGROUP_SOCK_ADDR}");
    }
    Ok(id)
}

/// A raw connect4 program attached to a cgroup through an unpinned bpf_link;
/// detached on drop.
#[derive(Debug)]
pub struct RawProgram {
    /// Dropped first: closing the only reference to the link detaches the program.
    #[allow(dead_code, reason = "held only so that dropping it detaches the program")]
    link: OwnedFd,
    _prog: OwnedFd,
    /// The kernel's program id.
    pub id: u32,
}

impl RawProgram {
    /// Loads `insns` as a connect4 program named `name` (at most 15 bytes are
    /// kept) and attaches it to `cgroup`.
    pub fn attach(cgroup: &Path, name: &str, insns: &[Insn]) -> anyhow::Result<Self> {
        let at = cgroup.display();
        let dir = OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_DIRECTORY)
            .open(cgroup)
            .with_context(|| format!("opening cgroup directory {at}"))?;
        let prog = load_with_log_on_failure(insns, name.as_bytes())
            .with_context(|| format!("bpf(BPF_PROG_LOAD) of the {name} program for cgroup {at}"))?;
        let id = prog_id(&prog).with_context(|| format!("bpf(BPF_OBJ_GET_INFO_BY_FD) on the {name} program for cgroup {at}"))?;
        let mut attr = LinkCreateAttr {
            prog_fd: prog.as_raw_fd() as u32,
            target_fd: dir.as_raw_fd() as u32,
            attach_type: BPF_CGROUP_INET4_CONNECT,
            flags: 0,
        };
        // SAFETY: `attr` is the LINK_CREATE layout and holds no pointers; both fds are open.
        let link = unsafe { bpf(BPF_LINK_CREATE, &mut attr) }
            .map(owned)
            .with_context(|| format!("bpf(BPF_LINK_CREATE) attaching the {name} program (id {id}) to cgroup {at}"))?;
        Ok(Self { link, _prog: prog, id })
    }
}

/// An empty connect4 program attached to a cgroup through an unpinned bpf_link; detached on drop.
#[derive(Debug)]
pub struct Calibration(#[allow(dead_code, reason = "held only so that dropping it detaches the program")] RawProgram);

impl Calibration {
    /// Loads the empty program and attaches it to `cgroup`; returns it with its kernel program id.
    pub fn attach(cgroup: &Path) -> anyhow::Result<(Self, u32)> {
        let name = std::str::from_utf8(&PROG_NAME[..PROG_NAME.len() - 1]).expect("ASCII");
        let prog = RawProgram::attach(cgroup, name, &PROGRAM).context("the empty calibration program")?;
        let id = prog.id;
        Ok((Self(prog), id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{bench::cgroup::ChildCgroup, kernel::attached_programs};

    #[test]
    fn attaches_to_its_own_cgroup_and_detaches_on_drop() {
        assert!(nix::unistd::geteuid().is_root(), "this test loads BPF: run it as root (`cargo xtask test`); refusing to skip it");
        let cgroup = ChildCgroup::create_unique("rdr-calib").unwrap();
        let (calibration, id) = Calibration::attach(cgroup.path()).expect("attaching the calibration program");
        assert!(id > 0, "kernel program id must be positive");
        assert_eq!(attached_programs(cgroup.path(), BPF_CGROUP_INET4_CONNECT).unwrap(), [id]);
        drop(calibration);
        assert!(attached_programs(cgroup.path(), BPF_CGROUP_INET4_CONNECT).unwrap().is_empty(), "dropping the link must detach the program");
    }
}
