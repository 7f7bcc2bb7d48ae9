//! "Operations alone": one-operation connect4 programs, built and loaded like
//! the empty calibration program ([`super::calibration`]), attached next to
//! the real hooks while a redirected connect is measured. Each does exactly
//! one thing the real connect4 hook does, then `r0 = 1; exit`, so its ns/run
//! minus the floor is what that one operation costs on this machine: the
//! report uses it to say which operation holds a missed hook target up.

use super::calibration::{ALLOW, EXIT, Insn, RawProgram, owned};
use crate::kernel::bpf;
use anyhow::Context as _;
use std::{
    ffi::c_long,
    os::fd::{AsRawFd as _, OwnedFd},
    path::Path,
};

const BPF_MAP_CREATE: c_long = 0;
const BPF_MAP_TYPE_HASH: u32 = 1;
const BPF_MAP_TYPE_ARRAY: u32 = 2;
const BPF_F_NO_PREALLOC: u32 = 1;

/// Helper ids (`enum bpf_func_id`).
const BPF_FUNC_MAP_LOOKUP_ELEM: i32 = 1;
const BPF_FUNC_GET_PRANDOM_U32: i32 = 7;
const BPF_FUNC_GET_SOCKET_COOKIE: i32 = 46;

/// Key size of the hash map: the real hook's route key, looked up zeroed so
/// that it misses.
const HASH_KEY: i16 = size_of::<redirector_common::ServiceKey>() as i16;

/// The BPF_MAP_CREATE part of `union bpf_attr`, up to `map_name`.
#[repr(C)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; 16],
}

const _: () = assert!(size_of::<MapCreateAttr>() == 44);

/// Creates a map with bpf(2) BPF_MAP_CREATE.
fn create_map(map_type: u32, key_size: u32, value_size: u32, max_entries: u32, flags: u32, name: &[u8]) -> anyhow::Result<OwnedFd> {
    let mut map_name = [0u8; 16];
    let len = name.len().min(15);
    map_name[..len].copy_from_slice(&name[..len]);
    let mut attr = MapCreateAttr { map_type, key_size, value_size, max_entries, map_flags: flags, inner_map_fd: 0, numa_node: 0, map_name };
    // SAFETY: `attr` is the MAP_CREATE layout, fully initialised, no pointers.
    let fd = unsafe { bpf(BPF_MAP_CREATE, &mut attr) }.with_context(|| format!("bpf(BPF_MAP_CREATE) type {map_type}"))?;
    Ok(owned(fd))
}

/// `call helper`.
const fn call(helper: i32) -> Insn {
    Insn { code: 0x85, regs: 0, off: 0, imm: helper }
}

/// `*(u64 *)(r10 + off) = 0` (BPF_ST | BPF_MEM | BPF_DW).
const fn zero_dw(off: i16) -> Insn {
    Insn { code: 0x7a, regs: 10, off, imm: 0 }
}

/// `*(u32 *)(r10 + off) = 0` (BPF_ST | BPF_MEM | BPF_W).
const fn zero_w(off: i16) -> Insn {
    Insn { code: 0x62, regs: 10, off, imm: 0 }
}

/// `r2 = r10 + off`: the key pointer for a lookup.
const fn key_ptr(off: i16) -> [Insn; 2] {
    [Insn { code: 0xbf, regs: 2 | (10 << 4), off: 0, imm: 0 }, Insn { code: 0x07, regs: 2, off: 0, imm: off as i32 }]
}

/// `r1 = map` (BPF_LD | BPF_IMM | BPF_DW with BPF_PSEUDO_MAP_FD): two slots.
fn load_map(map: &OwnedFd) -> [Insn; 2] {
    [Insn { code: 0x18, regs: 1 | (1 << 4), off: 0, imm: map.as_raw_fd() }, Insn { code: 0, regs: 0, off: 0, imm: 0 }]
}

/// One operation, in the order the report lists them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `bpf_get_socket_cookie(ctx)` (helper 46).
    SocketCookie,
    /// `bpf_get_prandom_u32()` (helper 7).
    Prandom,
    /// One `bpf_map_lookup_elem` on a BPF_MAP_TYPE_HASH (24-byte key, 8-byte
    /// value, 131072 entries, BPF_F_NO_PREALLOC) that misses.
    HashMiss,
    /// One `bpf_map_lookup_elem` on a BPF_MAP_TYPE_ARRAY (index 0).
    ArrayLookup,
}

impl Op {
    /// Every operation.
    pub const ALL: [Op; 4] = [Op::SocketCookie, Op::Prandom, Op::HashMiss, Op::ArrayLookup];

    /// The program's kernel name (at most 15 bytes).
    pub fn prog_name(self) -> &'static str {
        match self {
            Op::SocketCookie => "rdr_op_cookie",
            Op::Prandom => "rdr_op_prandom",
            Op::HashMiss => "rdr_op_hash",
            Op::ArrayLookup => "rdr_op_array",
        }
    }

    /// What the report calls it.
    pub fn describe(self) -> &'static str {
        match self {
            Op::SocketCookie => "bpf_get_socket_cookie(ctx)",
            Op::Prandom => "bpf_get_prandom_u32()",
            Op::HashMiss => "hash map lookup that misses (24-byte key, 131072 entries, no prealloc)",
            Op::ArrayLookup => "array map lookup",
        }
    }

    /// The program, and the map it uses (kept open while it loads).
    fn build(self) -> anyhow::Result<(Vec<Insn>, Option<OwnedFd>)> {
        Ok(match self {
            Op::SocketCookie => (vec![call(BPF_FUNC_GET_SOCKET_COOKIE), ALLOW, EXIT], None),
            Op::Prandom => (vec![call(BPF_FUNC_GET_PRANDOM_U32), ALLOW, EXIT], None),
            Op::HashMiss => {
                let map = create_map(BPF_MAP_TYPE_HASH, HASH_KEY as u32, 8, redirector_common::MAX_ROUTES, BPF_F_NO_PREALLOC, b"rdr_op_hash")?;
                let mut insns = vec![zero_dw(-8), zero_dw(-16), zero_dw(-24)];
                insns.extend(key_ptr(-HASH_KEY));
                insns.extend(load_map(&map));
                insns.extend([call(BPF_FUNC_MAP_LOOKUP_ELEM), ALLOW, EXIT]);
                (insns, Some(map))
            }
            Op::ArrayLookup => {
                let map = create_map(BPF_MAP_TYPE_ARRAY, 4, 8, 1, 0, b"rdr_op_array")?;
                let mut insns = vec![zero_w(-4)];
                insns.extend(key_ptr(-4));
                insns.extend(load_map(&map));
                insns.extend([call(BPF_FUNC_MAP_LOOKUP_ELEM), ALLOW, EXIT]);
                (insns, Some(map))
            }
        })
    }
}

/// Every [`Op`] program attached to one cgroup; detached on drop.
#[derive(Debug)]
pub struct Operations {
    programs: Vec<(Op, RawProgram)>,
}

impl Operations {
    /// Loads every operation's program and attaches it to `cgroup` (a cgroup
    /// the bench created).
    pub fn attach(cgroup: &Path) -> anyhow::Result<Self> {
        let mut programs = Vec::new();
        for op in Op::ALL {
            // The program holds its own reference to the map once loaded.
            let (insns, _map) = op.build()?;
            programs.push((op, RawProgram::attach(cgroup, op.prog_name(), &insns)?));
        }
        Ok(Self { programs })
    }

    /// (operation, kernel program id) of each.
    pub fn ids(&self) -> Vec<(Op, u32)> {
        self.programs.iter().map(|(op, p)| (*op, p.id)).collect()
    }
}
