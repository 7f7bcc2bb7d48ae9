//! The map layout shared by the redirector agent (userspace) and its BPF programs.
//!
//! This is the one place the layout is documented. Every type is `#[repr(C)]`, has
//! no implicit padding and is `Copy`, so the bytes the agent writes are exactly the
//! bytes the kernel programs read.
//!
//! # Maps
//!
//! | name          | type                         | key            | value            |
//! |---------------|------------------------------|----------------|------------------|
//! | `FILTER`      | array, mappable              | word of [`filter_bit`] | 64 bits (`u64`) |
//! | `ROUTES`      | hash, no prealloc            | [`ServiceKey`] | [`Route`]        |
//! | `TABLES`      | hash, no prealloc            | [`TableKey`]   | [`TableChunk`]   |
//! | `ORIGINS`     | array, direct-mapped         | socket cookie mod [`MAX_ORIGINS`] | [`Origin`] |
//! | `WORKLOADS`   | hash, no prealloc            | cgroup id      | class (`u32`)    |
//! | `SETTINGS`    | array, one entry             | 0              | [`Settings`]     |
//! | `COUNTERS`    | array                        | counter slot (`u32`) | connects (`u64`) |
//!
//! ## Workload classes
//!
//! Kuma gives each proxy its own set of routes (policies target workloads by
//! labels, tags or name). Here a workload is a cgroup bound to a Dataplane, and
//! every distinct set of routes is a *class*: workloads whose routes are the
//! same share one class, so the maps grow with distinct route sets, not with
//! workloads. Class [`BASE_CLASS`] is what processes in no workload cgroup get
//! (the policies that target the whole mesh).
//!
//! The hooks look the destination up under [`BASE_CLASS`] first: a miss
//! means no class routes it. A hit without [`CLASS_ROUTED`] means no class
//! has an entry of its own for it, so the base entry applies to every
//! caller and nothing about the caller is looked up. Only on a flagged hit
//! do they find the
//! caller's class from its cgroup (the cgroup itself, then its ancestors
//! down to `Settings::max_depth` levels below the cgroup the hooks are
//! attached to, looked up in `WORKLOADS`; the deepest match wins) and look
//! the destination up again under that class. `ROUTES` holds every
//! destination for the base class and, for other classes, only the
//! destinations whose table differs. A destination that only some classes
//! route still has a base entry: a header-only table flagged
//! [`PASS_THROUGH`], which leaves the base class's connects alone.
//!
//! The agent flags a base entry before any workload is switched to a class
//! with an entry of its own for that destination, and clears the flag only
//! once no class entry for it is left (retired ones included), so a
//! workload never misses its class's entry.
//!
//! ## The service filter
//!
//! Before `ROUTES`, the hooks test one bit of `FILTER`: bit
//! [`filter_bit`]`(addr, port)` is set for every destination with a base
//! entry in `ROUTES`, so a clear bit means the destination is no service
//! and the connect goes on untouched. A connect to anything that is not a
//! service therefore costs a multiply-shift hash and one array load, which
//! the JIT inlines; a hash lookup costs its helper call and the hashing of
//! the key, about 150 ns per connect here (see the bench). A set bit is
//! only "maybe": the `ROUTES` lookup decides. With [`FILTER_BITS_LOG2`] = 21
//! and 100,000 services about 5% of other destinations pay that lookup.
//!
//! The agent writes the array through a shared mapping: a bit is set before
//! the first `ROUTES` entry it covers is written, and cleared only after
//! the last one is deleted, so a clear bit is never wrong.
//!
//! `ROUTES` holds one entry per class and service address:port; its value
//! names a route table, whose entries (`1 + backends + endpoints` of them, up
//! to [`MAX_TABLE_ENTRIES`]) come in chunks of [`TABLE_CHUNK`]: entry `i` is
//! `entries[i % TABLE_CHUNK]` of chunk `i / TABLE_CHUNK`. Chunk 0 is in the
//! `ROUTES` value itself ([`Route::first`]); the others are in `TABLES`
//! under `(table id, chunk)`. A route of up to seven backends and endpoints,
//! nearly every route, is chunk 0 alone, so its connect() does one hash
//! lookup: a hash lookup that hits costs about 200 ns here (see the bench),
//! more than everything else a redirected connect does. Larger tables cost
//! one `TABLES` lookup per further chunk they read (at most three: a backend
//! slot, its alias's slot, an endpoint).
//!
//! Chunks, not single entries, because a hash element costs its bookkeeping
//! whatever its size: writing 100,000 two-backend routes is 100,000 element
//! inserts instead of 500,000.
//!
//! ## Original destinations
//!
//! A redirected connect() records the service address it dialled and the
//! endpoint it got, so that getpeername() reports the service. The record
//! goes to slot `cookie % MAX_ORIGINS` of `ORIGINS`, with the socket's
//! cookie, and getpeername() believes a slot only if its cookie is the
//! socket's own. Socket cookies are handed out in increasing order, so
//! consecutive redirected connects write neighbouring slots (warm memory),
//! and a slot is taken over only by a socket whose cookie came
//! [`MAX_ORIGINS`] cookies later: a socket's getpeername() reports the
//! service until that many sockets of the node have been given a cookie
//! after it, then the endpoint (the connection itself is not affected).
//! Cilium's socket LB makes the same trade with an LRU map of the same size.
//!
//! Nothing is deleted when a socket closes, so there is no release hook: a
//! close costs nothing, where deleting a hash entry under its bucket lock
//! cost every close of the node a few hundred ns. A preallocated hash
//! insert at connect, under a lock, in a map far larger than the caches,
//! cost about as much again (measured with kernel BPF statistics; see the
//! bench). Cookies are never reused, so a stale slot can never be taken for
//! another socket's. A writer stores the cookie last and a reader checks it
//! before and after copying the record, so a record taken over while it is
//! read is ignored rather than mixed.
//!
//! ## Make-before-break
//!
//! A table is never modified in place. A changed route gets a fresh table id;
//! its further chunks are written completely, then the `ROUTES` value (with
//! the new id, header and first chunk) replaces the old one in one update,
//! and the old table's chunks are deleted only after a grace period
//! ([`TABLE_GRACE_MS`]), far longer than any program run. A connect
//! therefore reads the whole old table or the whole new one, never a mix:
//! the header, first chunk and id it uses come in the same `ROUTES` value (a
//! hash update replaces the element; it never copies into the old one). Both maps are created with `BPF_F_NO_PREALLOC`: a preallocated hash
//! recycles a replaced element at once, which a concurrent reader could see;
//! without preallocation elements are freed after an RCU grace period.
//!
//! A map of maps (one inner array per table) gives the same guarantee, but
//! the kernel waits for an RCU grace period on every update of an outer map
//! (about 8 ms each here), which makes 10,000 routes take over a minute to
//! install; plain hash updates cost microseconds.
//!
//! ## Counters
//!
//! Connects are counted in `COUNTERS`, an array indexed by slots the agent
//! hands out: one per route (refused connects; the header names it) and one
//! per backend (its backend slot names it). An array lookup is inlined by
//! the JIT (no helper call, no hashing) and the add is one atomic
//! instruction; a per-CPU array would avoid the shared cache line but costs
//! its whole size once per CPU. A slot stays
//! with its route and backend from one generation to the next, whatever the
//! order of the backends, so a count always belongs to the backend it
//! counted; the slots of a route or backend that went away are deleted once
//! no table names them. Ids are not reused before they wrap around.
//!
//! ## Route table layout
//!
//! ```text
//! index 0                : TableEntry::header    (TableHeader, also in the Route)
//! index 1 ..= n          : TableEntry::backend   (BackendSlot, one per backendRef)
//! index n+1 ..           : TableEntry::endpoint  (Endpoint, grouped by backend)
//! ```
//!
//! Backend choice is Walker's alias method with integer thresholds, which
//! reproduces the configured weights exactly: draw a slot `i` uniformly from
//! `0..n` and a number `u` uniformly from `0..total_weight`; the backend is
//! `i` when `u < threshold` and `alias` otherwise. Both come from one
//! uniform draw `d` in `0..n * total_weight` (`i = d / total_weight`, `u = d
//! % total_weight`), which is exact as long as the product fits in 32 bits;
//! otherwise they are two draws. The endpoint is then drawn uniformly among
//! the chosen backend's endpoints (no draw when there is one). Uniform draws
//! use Lemire's multiply-shift with rejection; the rejection bounds of the
//! single ranges are precomputed here, the pair's is one division in the
//! kernel.
//!
//! Addresses are stored in IPv6 form: IPv4 addresses as IPv4-mapped IPv6
//! (`::ffff:a.b.c.d`). The `connect4` hook builds the same mapped key, so a
//! dual-stack IPv6 socket dialling `::ffff:a.b.c.d` finds the IPv4 route.
#![no_std]

/// Upper bound on the number of service address:port entries in `ROUTES`
/// (all classes together). Without preallocation the map costs its bucket
/// array (16 bytes per possible entry, 2 MiB) plus what is in use.
pub const MAX_ROUTES: u32 = 131_072;

/// Name of the service filter map in the BPF object.
pub const FILTER_MAP: &str = "FILTER";

/// `FILTER` has 2^FILTER_BITS_LOG2 bits (256 KiB).
pub const FILTER_BITS_LOG2: u32 = 21;

/// 64-bit words of `FILTER`.
pub const FILTER_WORDS: u32 = 1 << (FILTER_BITS_LOG2 - 6);

/// The `FILTER` bit of a destination (address in IPv6 form and port, both
/// in network byte order, as in [`ServiceKey`]): word `bit / 64`, bit `bit
/// % 64`. Multiply-shift hashing: the top bits of each product depend on
/// every bit folded in so far; for an IPv4 address the first product is a
/// constant.
#[inline(always)]
pub const fn filter_bit(addr: &[u32; 4], port: u16) -> u32 {
    let mut h = (addr[0] as u64 | (addr[1] as u64) << 32).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    h = (h ^ (addr[2] as u64 | (addr[3] as u64) << 32)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ port as u64).wrapping_mul(0x94d0_49bb_1331_11eb);
    (h >> (64 - FILTER_BITS_LOG2)) as u32
}

/// Upper bound on the entries of one route table (header + backends + endpoints).
pub const MAX_TABLE_ENTRIES: u32 = 65_536;

/// Name of the route map in the BPF object.
pub const ROUTES_MAP: &str = "ROUTES";

/// Name of the table map in the BPF object.
pub const TABLES_MAP: &str = "TABLES";

/// Entries per `TABLES` element (a power of two, so the kernel splits an
/// index with a shift and a mask).
pub const TABLE_CHUNK: u32 = 8;

/// Upper bound on the chunks after the first (those are in `ROUTES`) of all
/// tables together in `TABLES`: as many as every route of [`MAX_ROUTES`]
/// with two, twice (a generation's new tables are written before the old
/// ones go). Without preallocation the map costs its bucket array (4 MiB)
/// plus what is in use, about 256 bytes per chunk.
pub const MAX_TABLE_CHUNKS: u32 = 2 * MAX_ROUTES;

/// How long a replaced table stays readable before its entries are deleted.
pub const TABLE_GRACE_MS: u64 = 1_000;

/// Key of `TABLES`: one chunk of one route table.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableKey {
    /// Table id (never 0).
    pub table: u32,
    /// Chunk number, from 1 (chunk 0 is [`Route::first`]): it holds entries
    /// `chunk * TABLE_CHUNK ..` (entry 0 is the header, `1..=n` backend
    /// slots, then endpoints).
    pub chunk: u32,
}

/// Name of the map that remembers the dialled address of each redirected socket.
pub const ORIGINS_MAP: &str = "ORIGINS";

/// Slots of `ORIGINS` (a power of two): how many sockets may be given a
/// cookie after a redirected one before its record is taken over. 48 bytes
/// each, 12 MiB in all, allocated when the agent first loads a layout.
pub const MAX_ORIGINS: u32 = 1 << 18;

/// errno returned to connect() when the chosen backend has no endpoints, or the
/// route can select no backend at all (every weight is zero). `ECONNREFUSED` is
/// what kube-proxy's REJECT rule gives a client of a service without endpoints,
/// so applications already handle it.
pub const NO_ENDPOINT_ERRNO: i32 = 111;

/// Upper bound on the number of workload cgroups in `WORKLOADS`.
pub const MAX_WORKLOADS: u32 = 65_536;

/// How many cgroup levels below the attach point the hooks search for a
/// workload cgroup.
pub const MAX_WORKLOAD_DEPTH: u32 = 8;

/// The class of processes outside every workload cgroup.
pub const BASE_CLASS: u32 = 0;

/// Name of the workload map in the BPF object.
pub const WORKLOADS_MAP: &str = "WORKLOADS";

/// Name of the settings map in the BPF object.
pub const SETTINGS_MAP: &str = "SETTINGS";

/// Version of the pinned layout (maps, their types, the programs' use of
/// them). An agent never adopts pins of another layout: it replaces them.
pub const LAYOUT_VERSION: u32 = 6;

/// Name of the connect counter map in the BPF object.
pub const COUNTERS_MAP: &str = "COUNTERS";

/// Slots of `COUNTERS`: a route's one and one per backend (4 MiB).
pub const MAX_COUNTERS: u32 = 1 << 19;

/// Offset from [`TableHeader::counters`] of the slot counting connects
/// refused because the chosen backend had no endpoints (or no backend could
/// be chosen).
pub const REFUSED: u32 = 0;

/// The single entry of `SETTINGS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// cgroup level of the directory the hooks are attached to (root is 0).
    pub attach_level: u32,
    /// Deepest workload cgroup, in levels below the attach point (0: no
    /// workloads, so every process is in the base class and nothing is looked up).
    pub max_depth: u32,
    /// Always zero.
    pub pad: [u32; 2],
}

/// Key of `ROUTES`: the class of the caller and the destination it dials.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKey {
    /// Workload class ([`BASE_CLASS`] for processes outside workloads).
    pub class: u32,
    /// Destination address, IPv6 form, as four words in network byte order.
    pub addr: [u32; 4],
    /// Destination port in network byte order.
    pub port: u16,
    /// Always zero; makes the padding explicit so keys hash identically.
    pub pad: u16,
}

/// Value of `ROUTES`: the route table's id, its header, and its first
/// chunk, so a connect() to a route of up to seven backends and endpoints
/// needs no `TABLES` lookup.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Route {
    /// Table id, the key of its further chunks in `TABLES` (0 for a
    /// [`PASS_THROUGH`] entry, which names no table).
    pub table: u32,
    /// Copy of the table's entry 0, next to the id.
    pub header: TableHeader,
    /// The table's entries `0..TABLE_CHUNK` (zero past its end).
    pub first: TableChunk,
}

/// Entry 0 of a route table.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TableHeader {
    /// Number of backend slots (entries `1..=backend_count`). Zero means no
    /// backend can be chosen and connect() fails with [`NO_ENDPOINT_ERRNO`].
    pub backend_count: u32,
    /// Lemire rejection bound for a uniform draw in `0..backend_count`:
    /// `2^32 mod backend_count`.
    pub backend_reject: u32,
    /// Sum of the backend weights; the range of the alias threshold draw.
    pub total_weight: u32,
    /// Lemire rejection bound for a uniform draw in `0..total_weight`.
    pub weight_reject: u32,
    /// This route's `COUNTERS` slot ([`REFUSED`] is an offset from it).
    pub counters: u32,
    /// [`PASS_THROUGH`] and [`CLASS_ROUTED`] bits (in the `ROUTES` value;
    /// zero in the table's entry 0).
    pub flags: u32,
}

/// [`TableHeader::flags`]: the table routes nothing; a connect that finds it
/// goes to the address it dialled. The base entry of a destination that only
/// some classes route (see Workload classes above).
pub const PASS_THROUGH: u32 = 1;

/// [`TableHeader::flags`] of a base entry: some class has its own entry for
/// this destination, so the hooks look the caller's class up (see Workload
/// classes above). Every [`PASS_THROUGH`] entry has it.
pub const CLASS_ROUTED: u32 = 2;

/// Name of the BPF programs' read-only global holding the agent's process
/// id (tgid), set when the programs are loaded: its own connects are never
/// redirected.
pub const AGENT_TGID_GLOBAL: &str = "AGENT_TGID";

/// Entries `1..=n` of a route table: one alias slot per backendRef.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BackendSlot {
    /// The slot keeps its own backend when the weight draw is below this.
    pub threshold: u32,
    /// Backend index (0-based) chosen when the draw is at or above `threshold`.
    pub alias: u32,
    /// Table index of this backend's first endpoint.
    pub first_endpoint: u32,
    /// Number of endpoints; zero makes connect() fail with [`NO_ENDPOINT_ERRNO`].
    pub endpoint_count: u32,
    /// Lemire rejection bound for a uniform draw in `0..endpoint_count`.
    pub endpoint_reject: u32,
    /// `COUNTERS` slot of this backend's connects.
    pub counter: u32,
}

/// Endpoint entries of a route table: where a connect() is sent.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// Address, IPv6 form, network byte order words (IPv4 as IPv4-mapped).
    pub addr: [u32; 4],
    /// Port in network byte order.
    pub port: u16,
    /// Always zero.
    pub pad: u16,
    /// Always zero; keeps the union's views the same size.
    pub reserved: u32,
}

/// One element of a route table; which view applies depends on the index.
#[repr(C)]
#[derive(Clone, Copy)]
pub union TableEntry {
    /// Index 0.
    pub header: TableHeader,
    /// Indices `1..=backend_count`.
    pub backend: BackendSlot,
    /// Indices after the backend slots.
    pub endpoint: Endpoint,
}

/// Value of `TABLES`: [`TABLE_CHUNK`] consecutive entries of one route table
/// (entries past the table's end are zero).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct TableChunk {
    /// The entries, in table order.
    pub entries: [TableEntry; TABLE_CHUNK as usize],
}

impl TableChunk {
    /// A chunk of zero entries.
    pub const ZERO: Self = Self { entries: [TableEntry { endpoint: Endpoint { addr: [0; 4], port: 0, pad: 0, reserved: 0 } }; TABLE_CHUNK as usize] };
}

/// Per-socket memory of a redirected connect(), kept in `ORIGINS` for the
/// socket's lifetime so getpeername() can report what the application dialled.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OriginalDest {
    /// The service address the application dialled, IPv6 form, network order.
    pub service_addr: [u32; 4],
    /// The backend address the socket was connected to instead.
    pub backend_addr: [u32; 4],
    /// Service port, network byte order.
    pub service_port: u16,
    /// Backend port, network byte order.
    pub backend_port: u16,
}

/// Value of `ORIGINS`: one redirected socket's [`OriginalDest`], under its
/// cookie.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Origin {
    /// Cookie of the socket the record belongs to (zero: the slot was never written).
    pub cookie: u64,
    /// What it dialled and what it got.
    pub dest: OriginalDest,
    /// Always zero.
    pub pad: u32,
}

/// The IPv4-mapped IPv6 form of an IPv4 address given in network byte order.
#[inline(always)]
pub const fn mapped_v4(addr_be: u32) -> [u32; 4] {
    [0, 0, u32::to_be(0x0000_ffff), addr_be]
}

/// Whether an IPv6-form address is IPv4-mapped.
#[inline(always)]
pub const fn is_mapped_v4(addr: &[u32; 4]) -> bool {
    addr[0] == 0 && addr[1] == 0 && addr[2] == u32::to_be(0x0000_ffff)
}

/// The Lemire rejection bound for uniform draws in `0..range`: `2^32 mod range`
/// (zero for an empty range, which is never drawn from).
#[inline(always)]
pub const fn reject_bound(range: u32) -> u32 {
    if range == 0 { 0 } else { range.wrapping_neg() % range }
}

#[cfg(feature = "user")]
mod pod {
    use super::*;

    // SAFETY: all types are repr(C), Copy, and have no implicit padding.
    unsafe impl aya::Pod for ServiceKey {}
    unsafe impl aya::Pod for TableEntry {}
    unsafe impl aya::Pod for TableChunk {}
    unsafe impl aya::Pod for OriginalDest {}
    unsafe impl aya::Pod for Origin {}
    unsafe impl aya::Pod for Settings {}
    unsafe impl aya::Pod for TableKey {}
    unsafe impl aya::Pod for Route {}
}

const _: () = {
    assert!(core::mem::size_of::<ServiceKey>() == 24);
    assert!(core::mem::size_of::<Settings>() == 16);
    assert!(core::mem::size_of::<TableHeader>() == 24);
    assert!(core::mem::size_of::<BackendSlot>() == 24);
    assert!(core::mem::size_of::<Endpoint>() == 24);
    assert!(core::mem::size_of::<TableEntry>() == 24);
    assert!(core::mem::size_of::<TableChunk>() == 24 * TABLE_CHUNK as usize);
    assert!(core::mem::size_of::<Origin>() == 48);
    assert!(MAX_ORIGINS.is_power_of_two());
    assert!(TABLE_CHUNK.is_power_of_two());
    assert!(core::mem::size_of::<OriginalDest>() == 36);
    assert!(core::mem::size_of::<Route>() == 28 + 24 * TABLE_CHUNK as usize);
    assert!(FILTER_BITS_LOG2 >= 6 && FILTER_BITS_LOG2 <= 32);
};
