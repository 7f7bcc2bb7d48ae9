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
//! | `ROUTES`      | hash, no prealloc            | [`ServiceKey`] | [`Route`]        |
//! | `TABLES`      | hash, no prealloc            | [`TableKey`]   | [`TableChunk`]   |
//! | `ORIGINS`     | hash, preallocated           | socket cookie  | [`OriginalDest`] |
//! | `WORKLOADS`   | hash, no prealloc            | cgroup id      | class (`u32`)    |
//! | `SETTINGS`    | array, one entry             | 0              | [`Settings`]     |
//! | `COUNTERS`    | per-CPU hash, no prealloc    | counter slot (`u32`) | connects (`u64`) |
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
//! The hooks find the caller's class from its cgroup: the cgroup itself, then
//! its ancestors down to `Settings::max_depth` levels below the cgroup the
//! hooks are attached to, looked up in `WORKLOADS`; the deepest match wins.
//! `ROUTES` holds every destination for the base class and, for other
//! classes, only the destinations whose table differs; a miss in a class falls
//! back to the base class.
//!
//! `ROUTES` holds one entry per class and service address:port; its value
//! names a route table, whose entries (`1 + backends + endpoints` of them, up
//! to [`MAX_TABLE_ENTRIES`]) live in `TABLES` in chunks of [`TABLE_CHUNK`]:
//! entry `i` is `entries[i % TABLE_CHUNK]` of the chunk under `(table id,
//! i / TABLE_CHUNK)`. The `ROUTES` value carries a copy of the table's header,
//! so a connect() does one `ROUTES` lookup and at most three `TABLES` lookups
//! (a backend slot, its alias's slot, an endpoint), and a route of up to seven
//! backends and endpoints, nearly every route, is one chunk. Entry 0 of the
//! table holds the same header for readers of `TABLES` alone (`redirector
//! status`).
//!
//! Chunks, not single entries, because a hash element costs its bookkeeping
//! whatever its size: writing 100,000 two-backend routes is 100,000 element
//! inserts instead of 500,000, and takes half the kernel memory.
//!
//! ## Original destinations
//!
//! A redirected connect() records, under the socket's cookie in `ORIGINS`,
//! the service address it dialled and the endpoint it got, so that
//! getpeername() reports the service. A `sock_release` program deletes the
//! entry when the socket is closed, so entries live exactly as long as their
//! sockets. The map is preallocated: an insert takes an element from a free
//! list, which costs well under half of allocating socket-local storage
//! (measured with kernel BPF statistics; see the bench). When it is full
//! ([`MAX_ORIGINS`] redirected sockets open at once) the connect is still
//! redirected, getpeername() reports the endpoint, and the connect is counted
//! under [`ORIGINS_FULL`]. Recycling an element at once (preallocation) is
//! safe here: an entry is only read by its own socket's getpeername(), and
//! it is deleted only when that socket is released. The price is paid at
//! close: `sock_release` runs for every TCP socket of the cgroup, redirected
//! or not (a cookie and a hash delete, a few hundred ns in the bench).
//!
//! ## Make-before-break
//!
//! A table is never modified in place. A changed route gets a fresh table id;
//! its entries are written completely, then the `ROUTES` value is swapped to
//! the new id in one update, and the old table's entries are deleted only
//! after a grace period ([`TABLE_GRACE_MS`]), far longer than any program run.
//! A connect therefore reads the whole old table or the whole new one, never a
//! mix: the header it uses comes with the table id in the same `ROUTES`
//! value. Both maps are created with `BPF_F_NO_PREALLOC`: a preallocated hash
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
//! Connects are counted per CPU in `COUNTERS` under slots the agent hands
//! out: two per route (refused, and origin not recorded; the header names
//! the first) and one per backend (its backend slot names it). A slot stays
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
//! `0..n`, then a number `u` uniformly from `0..total_weight`; the backend is `i`
//! when `u < threshold` and `alias` otherwise. The endpoint is then drawn
//! uniformly among the chosen backend's endpoints. Uniform draws use Lemire's
//! multiply-shift with rejection; the rejection bounds are precomputed here so
//! the kernel needs no division.
//!
//! Addresses are stored in IPv6 form: IPv4 addresses as IPv4-mapped IPv6
//! (`::ffff:a.b.c.d`). The `connect4` hook builds the same mapped key, so a
//! dual-stack IPv6 socket dialling `::ffff:a.b.c.d` finds the IPv4 route.
#![no_std]

/// Upper bound on the number of service address:port entries in `ROUTES`
/// (all classes together). Without preallocation the map costs its bucket
/// array (16 bytes per possible entry, 2 MiB) plus what is in use.
pub const MAX_ROUTES: u32 = 131_072;

/// Upper bound on the entries of one route table (header + backends + endpoints).
pub const MAX_TABLE_ENTRIES: u32 = 65_536;

/// Name of the route map in the BPF object.
pub const ROUTES_MAP: &str = "ROUTES";

/// Name of the table map in the BPF object.
pub const TABLES_MAP: &str = "TABLES";

/// Entries per `TABLES` element (a power of two, so the kernel splits an
/// index with a shift and a mask).
pub const TABLE_CHUNK: u32 = 8;

/// Upper bound on the chunks of all tables together in `TABLES`: every route
/// of [`MAX_ROUTES`] in one chunk, twice (a generation's new tables are
/// written before the old ones go). Without preallocation the map costs its
/// bucket array (4 MiB) plus what is in use, about 256 bytes per chunk.
pub const MAX_TABLE_CHUNKS: u32 = 2 * MAX_ROUTES;

/// How long a replaced table stays readable before its entries are deleted.
pub const TABLE_GRACE_MS: u64 = 1_000;

/// Key of `TABLES`: one chunk of one route table.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableKey {
    /// Table id (never 0).
    pub table: u32,
    /// Chunk number: it holds entries `chunk * TABLE_CHUNK ..` (entry 0 the
    /// header, `1..=n` backend slots, then endpoints).
    pub chunk: u32,
}

/// Name of the map that remembers the dialled address of each redirected socket.
pub const ORIGINS_MAP: &str = "ORIGINS";

/// Upper bound on the redirected sockets open at once whose original
/// destination is remembered. The map is preallocated: about 100 bytes per
/// entry, some 25 MiB in all, allocated when the agent first loads a layout.
pub const MAX_ORIGINS: u32 = 262_144;

/// Offset from [`TableHeader::counters`] of the slot counting redirected
/// connects whose original destination could not be remembered because
/// `ORIGINS` was full (getpeername() then reports the endpoint). The connect
/// itself is not affected.
pub const ORIGINS_FULL: u32 = 1;

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
pub const LAYOUT_VERSION: u32 = 4;

/// Name of the connect counter map in the BPF object.
pub const COUNTERS_MAP: &str = "COUNTERS";

/// Upper bound on the entries of `COUNTERS` (only slots that counted a
/// connect have one: a route's two and one per backend).
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
    /// Process id (tgid) of the agent, whose own connects are never redirected.
    pub agent_tgid: u32,
    /// Always zero.
    pub pad: u32,
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

/// Value of `ROUTES`: the route table's id and a copy of its header, so a
/// connect() needs no `TABLES` lookup for the header.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Route {
    /// Table id in `TABLES` (never 0).
    pub table: u32,
    /// Copy of the table's entry 0.
    pub header: TableHeader,
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
    /// The first of this route's two `COUNTERS` slots: [`REFUSED`] and
    /// [`ORIGINS_FULL`] are offsets from it.
    pub counters: u32,
    /// Always zero; keeps the union's views the same size.
    pub reserved: u32,
}

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
    assert!(TABLE_CHUNK.is_power_of_two());
    assert!(core::mem::size_of::<OriginalDest>() == 36);
    assert!(core::mem::size_of::<Route>() == 28);
};
