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
const BPF_MAP_UPDATE_ELEM: c_long = 2;
const BPF_MAP_TYPE_HASH: u32 = 1;
const BPF_MAP_TYPE_ARRAY: u32 = 2;
const BPF_F_NO_PREALLOC: u32 = 1;

/// Helper ids (`enum bpf_func_id`).
const BPF_FUNC_MAP_LOOKUP_ELEM: i32 = 1;
const BPF_FUNC_GET_PRANDOM_U32: i32 = 7;
const BPF_FUNC_GET_SOCKET_COOKIE: i32 = 46;

/// Key size of the hash maps: the real hook's route key, looked up zeroed
/// (absent from one map, present in the other).
const HASH_KEY: i16 = size_of::<redirector_common::ServiceKey>() as i16;

/// 64-byte values of the array the cold-line operation reads one of at
/// random: 16 MiB, far more than the caches keep between two connects.
const COLD_LINES: u32 = 1 << 18;

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

/// Writes `key -> value` with bpf(2) BPF_MAP_UPDATE_ELEM.
fn update(map: &OwnedFd, key: &[u8], value: &[u8]) -> anyhow::Result<()> {
    /// The BPF_MAP_UPDATE_ELEM part of `union bpf_attr`.
    #[repr(C)]
    struct UpdateAttr {
        map_fd: u32,
        pad: u32,
        key: u64,
        value: u64,
        flags: u64,
    }
    let mut attr = UpdateAttr { map_fd: map.as_raw_fd() as u32, pad: 0, key: key.as_ptr() as u64, value: value.as_ptr() as u64, flags: 0 };
    // SAFETY: the UPDATE_ELEM layout; both buffers are the map's key and value sizes and outlive the call.
    unsafe { bpf(BPF_MAP_UPDATE_ELEM, &mut attr) }.context("bpf(BPF_MAP_UPDATE_ELEM)")?;
    Ok(())
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

/// `r0 &= imm` (BPF_ALU64 | BPF_AND | BPF_K).
const fn and_r0(imm: i32) -> Insn {
    Insn { code: 0x57, regs: 0, off: 0, imm }
}

/// `*(u32 *)(r10 + off) = r0` (BPF_STX | BPF_MEM | BPF_W).
const fn store_r0_w(off: i16) -> Insn {
    Insn { code: 0x63, regs: 10, off, imm: 0 }
}

/// `if r0 == 0 goto +1; r0 = *(u64 *)(r0 + 0)`: read the value found.
const LOAD_FOUND: [Insn; 2] = [Insn { code: 0x15, regs: 0, off: 1, imm: 0 }, Insn { code: 0x79, regs: 0, off: 0, imm: 0 }];

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
    /// The same lookup on a map holding the key: it hits.
    HashHit,
    /// One `bpf_map_lookup_elem` on a BPF_MAP_TYPE_ARRAY (index 0), and an
    /// 8-byte load of the value: the same memory line every run.
    ArrayLookup,
    /// `bpf_get_prandom_u32()`, then one 8-byte load from a random 64-byte
    /// value of a 16 MiB array: a memory line no earlier run left in cache.
    ColdLine,
}

impl Op {
    /// Every operation.
    pub const ALL: [Op; 6] = [Op::SocketCookie, Op::Prandom, Op::HashMiss, Op::HashHit, Op::ArrayLookup, Op::ColdLine];

    /// The program's kernel name (at most 15 bytes).
    pub fn prog_name(self) -> &'static str {
        match self {
            Op::SocketCookie => "rdr_op_cookie",
            Op::Prandom => "rdr_op_prandom",
            Op::HashMiss => "rdr_op_hash",
            Op::HashHit => "rdr_op_hash_hit",
            Op::ArrayLookup => "rdr_op_array",
            Op::ColdLine => "rdr_op_cold",
        }
    }

    /// What the report calls it.
    pub fn describe(self) -> &'static str {
        match self {
            Op::SocketCookie => "bpf_get_socket_cookie(ctx)",
            Op::Prandom => "bpf_get_prandom_u32()",
            Op::HashMiss => "hash map lookup that misses (24-byte key, 131072 entries, no prealloc)",
            Op::HashHit => "the same hash map lookup, that hits (one entry)",
            Op::ArrayLookup => "array map lookup and a load from its value (the same line every run)",
            Op::ColdLine => "bpf_get_prandom_u32(), then a load from a random line of a 16 MiB array (a cache miss: minus the prandom row, one cold memory line)",
        }
    }

    /// The program, and the map it uses (kept open while it loads).
    fn build(self) -> anyhow::Result<(Vec<Insn>, Option<OwnedFd>)> {
        Ok(match self {
            Op::SocketCookie => (vec![call(BPF_FUNC_GET_SOCKET_COOKIE), ALLOW, EXIT], None),
            Op::Prandom => (vec![call(BPF_FUNC_GET_PRANDOM_U32), ALLOW, EXIT], None),
            Op::HashMiss | Op::HashHit => {
                let map = create_map(BPF_MAP_TYPE_HASH, HASH_KEY as u32, 8, redirector_common::MAX_ROUTES, BPF_F_NO_PREALLOC, self.prog_name().as_bytes())?;
                if self == Op::HashHit {
                    update(&map, &[0; HASH_KEY as usize], &[0; 8])?;
                }
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
                insns.push(call(BPF_FUNC_MAP_LOOKUP_ELEM));
                insns.extend(LOAD_FOUND);
                insns.extend([ALLOW, EXIT]);
                (insns, Some(map))
            }
            Op::ColdLine => {
                let map = create_map(BPF_MAP_TYPE_ARRAY, 4, 64, COLD_LINES, 0, b"rdr_op_cold")?;
                let mut insns = vec![call(BPF_FUNC_GET_PRANDOM_U32), and_r0(COLD_LINES as i32 - 1), store_r0_w(-4)];
                insns.extend(key_ptr(-4));
                insns.extend(load_map(&map));
                insns.push(call(BPF_FUNC_MAP_LOOKUP_ELEM));
                insns.extend(LOAD_FOUND);
                insns.extend([ALLOW, EXIT]);
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
