//! cgroup socket-address hooks that enforce MeshTCPRoute before a packet exists.
//!
//! `connect4`/`connect6` run inside connect() for every socket of the cgroup the
//! agent attached them to. A TCP connect to a service address found in `ROUTES`
//! is rewritten to one backend endpoint, chosen per connection by weight; the
//! kernel then connects to that endpoint directly, so there is no NAT state and
//! no per-packet or per-byte cost afterwards. `getpeername4`/`getpeername6`
//! undo the rewrite for the application's view, like Cilium's socket LB.
//!
//! The map layout and the selection method are documented in `redirector-common`.
#![no_std]
#![no_main]
// `atomic_xadd`: the BPF target has no `AtomicU64::fetch_add`, but LLVM
// lowers the intrinsic to BPF's atomic add instruction.
#![feature(core_intrinsics)]
#![allow(internal_features)]

use aya_ebpf::{
    bindings::{BPF_F_MMAPABLE, BPF_F_NO_PREALLOC, bpf_sock_addr},
    btf_maps::{Array, HashMap},
    helpers::generated::{
        bpf_get_current_ancestor_cgroup_id, bpf_get_current_cgroup_id, bpf_get_current_pid_tgid,
        bpf_get_prandom_u32, bpf_get_socket_cookie, bpf_set_retval,
    },
    macros::{btf_map, cgroup_sock_addr},
    programs::SockAddrContext,
};
use aya_log_ebpf::{debug, error};
use core::{
    ptr::{addr_of, addr_of_mut, read_volatile, write_volatile},
    intrinsics::{AtomicOrdering, atomic_xadd},
};
use redirector_common::{
    BASE_CLASS, BackendSlot, CLASS_ROUTED, Endpoint, FILTER_WORDS, MAX_COUNTERS, MAX_ORIGINS, MAX_ROUTES, MAX_TABLE_CHUNKS,
    MAX_WORKLOAD_DEPTH, MAX_WORKLOADS, NO_ENDPOINT_ERRNO, Origin, OriginalDest, PASS_THROUGH, REFUSED,
    Route, ServiceKey, Settings, TABLE_CHUNK, TableChunk, TableEntry, TableKey,
    filter_bit, is_mapped_v4, mapped_v4,
};

/// One "maybe a service" bit per hash of a destination (see redirector-common).
/// Mappable: the agent sets and clears bits as memory.
#[btf_map]
static FILTER: Array<u64, { FILTER_WORDS as usize }, { BPF_F_MMAPABLE as usize }> = Array::new();

/// Class + service address:port -> route table id and header.
#[btf_map]
static ROUTES: HashMap<ServiceKey, Route, { MAX_ROUTES as usize }, { BPF_F_NO_PREALLOC as usize }> =
    HashMap::new();

/// (table id, chunk) -> TABLE_CHUNK table entries, for the chunks after a
/// table's first (see redirector-common for the layout).
#[btf_map]
static TABLES: HashMap<TableKey, TableChunk, { MAX_TABLE_CHUNKS as usize }, { BPF_F_NO_PREALLOC as usize }> =
    HashMap::new();

/// Workload cgroup id -> class.
#[btf_map]
static WORKLOADS: HashMap<u64, u32, { MAX_WORKLOADS as usize }, { BPF_F_NO_PREALLOC as usize }> =
    HashMap::new();

/// Where workload cgroups sit in the hierarchy (see redirector-common).
#[btf_map]
static SETTINGS: Array<Settings, 1> = Array::new();

/// Connects per route table and backend, by slot. An array: its lookup is
/// inlined by the JIT, where a hash lookup hashes the key in a helper call.
/// Mappable: `status` and the metrics read it as memory.
#[btf_map]
static COUNTERS: Array<u64, { MAX_COUNTERS as usize }, { BPF_F_MMAPABLE as usize }> = Array::new();

/// Socket cookie mod MAX_ORIGINS -> the address a redirected socket dialled
/// (direct-mapped, see redirector-common: no delete at close, no lock).
/// Mappable so that userspace reads it as memory.
#[btf_map]
static ORIGINS: Array<Origin, { MAX_ORIGINS as usize }, { BPF_F_MMAPABLE as usize }> = Array::new();

/// Process id (tgid) of the agent, set by the loader (redirector-common's
/// `AGENT_TGID_GLOBAL`): its own connects are never redirected.
#[unsafe(no_mangle)]
static AGENT_TGID: u32 = 0;

const AF_INET: u32 = 2;
const AF_INET6: u32 = 10;
const IPPROTO_TCP: u32 = 6;

/// Let the syscall proceed (with or without a rewritten address).
const ALLOW: i32 = 1;
/// Fail the syscall; the errno is set with `bpf_set_retval`.
const DENY: i32 = 0;

/// How many times a uniform draw may be rejected before the last draw is used.
/// A rejection has probability below `range / 2^32`, so four in a row do not
/// happen in practice; the bound only keeps the verifier happy.
const DRAW_TRIES: u32 = 4;

#[cgroup_sock_addr(connect4)]
pub fn connect4(ctx: SockAddrContext) -> i32 {
    let sa = ctx.sock_addr;
    // SAFETY: the kernel hands us a valid bpf_sock_addr for the program's life.
    unsafe {
        if read_volatile(addr_of!((*sa).protocol)) != IPPROTO_TCP {
            return ALLOW;
        }
        let key = ServiceKey {
            class: BASE_CLASS,
            addr: mapped_v4(read_volatile(addr_of!((*sa).user_ip4))),
            port: read_volatile(addr_of!((*sa).user_port)) as u16,
            pad: 0,
        };
        redirect(&ctx, &key, AF_INET)
    }
}

#[cgroup_sock_addr(connect6)]
pub fn connect6(ctx: SockAddrContext) -> i32 {
    let sa = ctx.sock_addr;
    // SAFETY: as in connect4.
    unsafe {
        if read_volatile(addr_of!((*sa).protocol)) != IPPROTO_TCP {
            return ALLOW;
        }
        let key = ServiceKey {
            class: BASE_CLASS,
            addr: read_ip6(sa),
            port: read_volatile(addr_of!((*sa).user_port)) as u16,
            pad: 0,
        };
        redirect(&ctx, &key, AF_INET6)
    }
}

#[cgroup_sock_addr(getpeername4)]
pub fn getpeername4(ctx: SockAddrContext) -> i32 {
    let sa = ctx.sock_addr;
    // SAFETY: as in connect4; ORIGINS values are only written by connect hooks.
    unsafe {
        let Some(origin) = origin_of(&ctx) else {
            return ALLOW;
        };
        let peer = mapped_v4(read_volatile(addr_of!((*sa).user_ip4)));
        let port = read_volatile(addr_of!((*sa).user_port)) as u16;
        if peer == origin.backend_addr && port == origin.backend_port {
            write_volatile(addr_of_mut!((*sa).user_ip4), origin.service_addr[3]);
            write_volatile(addr_of_mut!((*sa).user_port), origin.service_port as u32);
        }
    }
    ALLOW
}

#[cgroup_sock_addr(getpeername6)]
pub fn getpeername6(ctx: SockAddrContext) -> i32 {
    let sa = ctx.sock_addr;
    // SAFETY: as in getpeername4.
    unsafe {
        let Some(origin) = origin_of(&ctx) else {
            return ALLOW;
        };
        let port = read_volatile(addr_of!((*sa).user_port)) as u16;
        if read_ip6(sa) == origin.backend_addr && port == origin.backend_port {
            write_ip6(sa, &origin.service_addr);
            write_volatile(addr_of_mut!((*sa).user_port), origin.service_port as u32);
        }
    }
    ALLOW
}

/// Looks the destination up and, if it is a service, rewrites it to an endpoint.
///
/// # Safety
/// `ctx.sock_addr` must be the context the kernel passed in.
#[inline(always)]
unsafe fn redirect(ctx: &SockAddrContext, dest: &ServiceKey, family: u32) -> i32 {
    // Every destination any class routes has a base entry and its filter
    // bit, so a clear bit is the whole cost of a connect to something that
    // is not a service: an inlined array load instead of a hash lookup.
    let bit = filter_bit(&dest.addr, dest.port);
    if let Some(word) = FILTER.get_ptr(bit >> 6) {
        // SAFETY: an aligned u64 inside the array for the program's life;
        // the agent rewrites it whole through its mapping.
        if unsafe { read_volatile(word) } & (1u64 << (bit & 63)) == 0 {
            return ALLOW;
        }
    }
    // SAFETY: ROUTES values are plain data; an element outlives this program
    // run (no preallocation: freed after an RCU grace period).
    let Some(base) = (unsafe { ROUTES.get(dest) }) else {
        return ALLOW;
    };
    // The agent's own connects (e.g. hostname lookups) are never redirected.
    // SAFETY: a read-only global the loader sets; the helper has no preconditions.
    let agent = unsafe { read_volatile(&AGENT_TGID) };
    if agent != 0 && (unsafe { bpf_get_current_pid_tgid() } >> 32) as u32 == agent {
        return ALLOW;
    }
    // A workload's own table if it has one for this destination, else the
    // base one; without the flag no class has one, and the caller's class
    // is not looked up at all.
    let mut route = base;
    if base.header.flags & CLASS_ROUTED != 0 {
        let Some(settings) = SETTINGS.get(0) else {
            return ALLOW;
        };
        let class = workload_class(settings);
        if class != BASE_CLASS {
            let key = ServiceKey { class, ..*dest };
            // SAFETY: as above.
            if let Some(own) = unsafe { ROUTES.get(&key) } {
                route = own;
            }
        }
    }
    if route.header.flags & PASS_THROUGH != 0 {
        return ALLOW;
    }
    let Some((counter, endpoint)) = (unsafe { pick(route) }) else {
        count(route.header.counters + REFUSED);
        debug!(ctx, "refused connect to a route without endpoints");
        return refuse();
    };
    count(counter);
    // A connect4 can only reach an IPv4 endpoint. The agent never puts another
    // kind in a table keyed by an IPv4 service, so this only guards the kernel
    // against a corrupt table.
    if family == AF_INET && !is_mapped_v4(&endpoint.addr) {
        error!(ctx, "IPv6 endpoint in an IPv4 route table");
        return refuse();
    }
    let sa = ctx.sock_addr;
    // SAFETY: sa is valid for the program's life.
    unsafe {
        if family == AF_INET {
            write_volatile(addr_of_mut!((*sa).user_ip4), endpoint.addr[3]);
        } else {
            write_ip6(sa, &endpoint.addr);
        }
        write_volatile(addr_of_mut!((*sa).user_port), endpoint.port as u32);
    }
    remember(ctx, OriginalDest { service_addr: dest.addr, backend_addr: endpoint.addr, service_port: dest.port, backend_port: endpoint.port });
    ALLOW
}

/// Records what a redirected socket dialled in its `ORIGINS` slot. The
/// cookie is cleared first and written last, and `origin_of` checks it
/// before and after its copy, so a record being taken over by another
/// socket's connect reads as absent, not as a mix of the two (the stores
/// stay in program order; x86 makes them visible to other CPUs in that order).
#[inline(always)]
fn remember(ctx: &SockAddrContext, dest: OriginalDest) {
    // SAFETY: the helper accepts a sock_addr context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.sock_addr.cast()) };
    let Some(slot) = ORIGINS.get_ptr_mut((cookie & (MAX_ORIGINS as u64 - 1)) as u32) else {
        return;
    };
    // Volatile accesses keep their order (the compiler reorders none of
    // them), which is all the BPF JIT is given.
    // SAFETY: slot points into the array for the program's life; a
    // concurrent writer of the same slot is another socket's connect, and
    // a reader believes the record only with its own cookie around it.
    unsafe {
        write_volatile(addr_of_mut!((*slot).cookie), 0);
        write_volatile(addr_of_mut!((*slot).dest), dest);
        write_volatile(addr_of_mut!((*slot).cookie), cookie);
    }
}

/// The caller's workload class: its cgroup or the deepest ancestor (at most
/// `max_depth` levels below the attach point) found in `WORKLOADS`.
#[inline(always)]
fn workload_class(settings: &Settings) -> u32 {
    if settings.max_depth == 0 {
        return BASE_CLASS;
    }
    // SAFETY: the helper has no preconditions.
    let own = unsafe { bpf_get_current_cgroup_id() };
    // SAFETY: WORKLOADS values are plain u32s.
    if let Some(class) = unsafe { WORKLOADS.get(&own) } {
        return *class;
    }
    let mut depth = MAX_WORKLOAD_DEPTH;
    while depth > 0 {
        if depth <= settings.max_depth {
            let level = (settings.attach_level + depth) as i32;
            // SAFETY: returns 0 when the caller's cgroup is shallower than `level`.
            let id = unsafe { bpf_get_current_ancestor_cgroup_id(level) };
            if id != 0 && id != own {
                if let Some(class) = unsafe { WORKLOADS.get(&id) } {
                    return *class;
                }
            }
        }
        depth -= 1;
    }
    BASE_CLASS
}

/// Adds one to the connect counter in `slot`.
#[inline(always)]
fn count(slot: u32) {
    if let Some(n) = COUNTERS.get_ptr_mut(slot) {
        // SAFETY: an aligned u64 inside the array for the program's life;
        // the add is one atomic instruction (other CPUs count the same slot).
        unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(n, 1) };
    }
}

/// Chooses a backend and an endpoint: alias slot and weight draw (one draw
/// when their ranges' product fits in 32 bits), then a uniform endpoint.
/// Returns the chosen backend's counter slot and the endpoint, or `None`
/// when the chosen backend has no endpoints (or none can be chosen).
///
/// # Safety
/// The table of `route` must follow the redirector-common layout.
#[inline(always)]
unsafe fn pick(route: &'static Route) -> Option<(u32, Endpoint)> {
    let header = &route.header;
    let (n, total) = (header.backend_count, header.total_weight);
    if n == 0 || total == 0 {
        return None;
    }
    let pair = n as u64 * total as u64;
    let (slot_index, u) = if pair <= u32::MAX as u64 {
        // Checked: a plain division would bring a panic path the verifier
        // refuses (neither divisor is zero here).
        let pair = pair as u32;
        let d = uniform(pair, pair.wrapping_neg().checked_rem(pair)?);
        (d.checked_div(total)?, d.checked_rem(total)?)
    } else {
        (uniform(n, header.backend_reject), uniform(total, header.weight_reject))
    };
    let mut chunk = Chunk::new(route);
    let slot = chunk.backend(slot_index)?;
    let chosen = if u < slot.threshold { slot } else { chunk.backend(slot.alias)? };
    let k = match chosen.endpoint_count {
        0 => return None,
        1 => 0,
        m => uniform(m, chosen.endpoint_reject),
    };
    let found = chunk.entry(chosen.first_endpoint + k)?;
    // SAFETY: indices from first_endpoint on hold endpoints.
    Some((chosen.counter, unsafe { found.endpoint }))
}

/// Reads one route table's entries through the chunk last used: chunk 0
/// from the `ROUTES` value, the others looked up in `TABLES`, each once for
/// consecutive entries of the same chunk.
struct Chunk {
    route: &'static Route,
    index: u32,
    entries: Option<&'static TableChunk>,
}

impl Chunk {
    #[inline(always)]
    fn new(route: &'static Route) -> Self {
        Self { route, index: 0, entries: Some(&route.first) }
    }

    /// Entry `index` of the table, copied out of its chunk.
    #[inline(always)]
    fn entry(&mut self, index: u32) -> Option<TableEntry> {
        let chunk = index / TABLE_CHUNK;
        if chunk != self.index {
            self.entries = if chunk == 0 {
                Some(&self.route.first)
            } else {
                let key = TableKey { table: self.route.table, chunk };
                // SAFETY: TABLES values are plain data; the element outlives this
                // program run (no preallocation: freed after an RCU grace period).
                unsafe { TABLES.get(&key) }
            };
            self.index = chunk;
        }
        // The mask keeps the index inside the chunk for the verifier.
        self.entries?.entries.get((index & (TABLE_CHUNK - 1)) as usize).copied()
    }

    /// Backend slot `index` (0-based).
    #[inline(always)]
    fn backend(&mut self, index: u32) -> Option<BackendSlot> {
        // SAFETY: indices 1..=backend_count hold backend slots.
        self.entry(index + 1).map(|e| unsafe { e.backend })
    }
}

/// A uniform draw in `0..range` (Lemire's multiply-shift with rejection).
#[inline(always)]
fn uniform(range: u32, reject: u32) -> u32 {
    let mut product = 0u64;
    for _ in 0..DRAW_TRIES {
        // SAFETY: bpf_get_prandom_u32 has no preconditions.
        let r = unsafe { bpf_get_prandom_u32() };
        product = r as u64 * range as u64;
        if product as u32 >= reject {
            break;
        }
    }
    (product >> 32) as u32
}

/// Fails the connect() with [`NO_ENDPOINT_ERRNO`] instead of the default EPERM.
#[inline(always)]
fn refuse() -> i32 {
    // SAFETY: bpf_set_retval is allowed in cgroup sock_addr programs.
    unsafe { bpf_set_retval(-NO_ENDPOINT_ERRNO) };
    DENY
}

/// The original destination remembered for this socket, if it was
/// redirected and its record has not been taken over since.
#[inline(always)]
unsafe fn origin_of(ctx: &SockAddrContext) -> Option<OriginalDest> {
    // SAFETY: the helper accepts a sock_addr context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.sock_addr.cast()) };
    let slot = ORIGINS.get_ptr((cookie & (MAX_ORIGINS as u64 - 1)) as u32)?;
    // SAFETY: slot points into the array for the program's life. The record
    // is the socket's only if its cookie is there before and after the copy.
    unsafe {
        if read_volatile(addr_of!((*slot).cookie)) != cookie {
            return None;
        }
        let dest = read_volatile(addr_of!((*slot).dest));
        (read_volatile(addr_of!((*slot).cookie)) == cookie).then_some(dest)
    }
}

/// Reads `user_ip6` one word at a time: the verifier only allows 4-byte
/// (or aligned 8-byte) context accesses there.
#[inline(always)]
unsafe fn read_ip6(sa: *mut bpf_sock_addr) -> [u32; 4] {
    unsafe {
        [
            read_volatile(addr_of!((*sa).user_ip6[0])),
            read_volatile(addr_of!((*sa).user_ip6[1])),
            read_volatile(addr_of!((*sa).user_ip6[2])),
            read_volatile(addr_of!((*sa).user_ip6[3])),
        ]
    }
}

#[inline(always)]
unsafe fn write_ip6(sa: *mut bpf_sock_addr, addr: &[u32; 4]) {
    unsafe {
        write_volatile(addr_of_mut!((*sa).user_ip6[0]), addr[0]);
        write_volatile(addr_of_mut!((*sa).user_ip6[1]), addr[1]);
        write_volatile(addr_of_mut!((*sa).user_ip6[2]), addr[2]);
        write_volatile(addr_of_mut!((*sa).user_ip6[3]), addr[3]);
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
