//! bpf(2) calls aya 0.14 does not expose: the programs attached to a
//! cgroup, every cgroup link in the system with its cgroup, and a forced
//! detach of a link by id (used to find redirector datapaths this agent does
//! not own: another agent's, or hooks whose pins were lost); and batched map
//! writes.

use anyhow::Context as _;
use std::{
    fs::File,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::Path,
};

const BPF_PROG_QUERY: nix::libc::c_long = 16;
const BPF_OBJ_GET_INFO_BY_FD: nix::libc::c_long = 15;
const BPF_LINK_GET_FD_BY_ID: nix::libc::c_long = 30;
const BPF_LINK_GET_NEXT_ID: nix::libc::c_long = 31;
const BPF_LINK_DETACH: nix::libc::c_long = 34;
const BPF_MAP_UPDATE_BATCH: nix::libc::c_long = 26;
const BPF_LINK_TYPE_CGROUP: u32 = 3;

/// `BPF_CGROUP_INET4_CONNECT`: every redirector datapath has a connect4 hook.
pub const ATTACH_CONNECT4: u32 = 10;

/// Runs bpf(2) `cmd` on `attr` (the kernel is told its size), retrying
/// on EINTR/EAGAIN; the non-negative result (an fd for some commands).
///
/// # Safety
/// `attr` must be the `union bpf_attr` layout for `cmd` with every byte
/// initialised, and every pointer in it valid for what the kernel reads or
/// writes during the call.
pub unsafe fn bpf<T>(cmd: nix::libc::c_long, attr: &mut T) -> std::io::Result<nix::libc::c_long> {
    loop {
        // SAFETY: the caller guarantees `attr` is a valid attr for `cmd`, of the size passed.
        let rc = unsafe { nix::libc::syscall(nix::libc::SYS_bpf, cmd, attr as *mut T, size_of::<T>() as u32) };
        if rc >= 0 {
            return Ok(rc);
        }
        let err = std::io::Error::last_os_error();
        // PROG_LOAD may ask for a retry (EAGAIN) after a signal or a transient failure.
        if !matches!(err.raw_os_error(), Some(nix::libc::EINTR | nix::libc::EAGAIN)) {
            return Err(err);
        }
    }
}

/// Writes `keys[i] -> values[i]` into the map `map` in one bpf(2) call
/// (`BPF_MAP_UPDATE_BATCH`; a route table is several entries). `K` and `V`
/// must be the map's key and value types.
pub fn update_batch<K: aya::Pod, V: aya::Pod>(map: std::os::fd::BorrowedFd<'_>, keys: &[K], values: &[V]) -> std::io::Result<()> {
    #[repr(C)]
    struct Batch {
        in_batch: u64,
        out_batch: u64,
        keys: u64,
        values: u64,
        count: u32,
        map_fd: u32,
        elem_flags: u64,
        flags: u64,
    }
    assert_eq!(keys.len(), values.len(), "one value per key");
    let mut attr = Batch {
        in_batch: 0,
        out_batch: 0,
        keys: keys.as_ptr() as u64,
        values: values.as_ptr() as u64,
        count: keys.len() as u32,
        map_fd: map.as_raw_fd() as u32,
        elem_flags: 0,
        flags: 0,
    };
    // SAFETY: `attr` is the batch layout of union bpf_attr, fully initialised;
    // `keys` and `values` hold `count` Pod elements of the map's sizes and
    // outlive the call, which only reads them.
    unsafe { bpf(BPF_MAP_UPDATE_BATCH, &mut attr) }?;
    if attr.count as usize != keys.len() {
        return Err(std::io::Error::other(format!("{} of {} entries written", attr.count, keys.len())));
    }
    Ok(())
}

/// Ids of the programs attached directly to `cgroup` for `attach_type`.
pub fn attached_programs(cgroup: &Path, attach_type: u32) -> anyhow::Result<Vec<u32>> {
    #[repr(C)]
    #[derive(Default)]
    struct Query {
        target_fd: u32,
        attach_type: u32,
        query_flags: u32,
        attach_flags: u32,
        prog_ids: u64,
        prog_cnt: u32,
        pad: u32,
    }
    let dir = File::open(cgroup).with_context(|| format!("opening cgroup {}", cgroup.display()))?;
    let mut ids = vec![0u32; 64];
    loop {
        let mut attr = Query {
            target_fd: dir.as_raw_fd() as u32,
            attach_type,
            prog_ids: ids.as_mut_ptr() as u64,
            prog_cnt: ids.len() as u32,
            ..Default::default()
        };
        // SAFETY: the `query` layout; `prog_ids` points at `prog_cnt` writable u32s.
        match unsafe { bpf(BPF_PROG_QUERY, &mut attr) } {
            Ok(_) => {
                ids.truncate(attr.prog_cnt as usize);
                return Ok(ids);
            }
            // ENOSPC: more programs than room; prog_cnt says how many.
            Err(e) if e.raw_os_error() == Some(nix::libc::ENOSPC) => ids = vec![0; attr.prog_cnt as usize + 16],
            Err(e) => return Err(e).with_context(|| format!("BPF_PROG_QUERY on {}", cgroup.display())),
        }
    }
}

/// One cgroup link of the system.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CgroupLink {
    /// Link id.
    pub id: u32,
    /// The attached program's id.
    pub prog_id: u32,
    /// The cgroup's id (its cgroup2 inode number).
    pub cgroup_id: u64,
}

/// Every cgroup link in the system (needs CAP_SYS_ADMIN).
pub fn cgroup_links() -> anyhow::Result<Vec<CgroupLink>> {
    #[repr(C)]
    #[derive(Default)]
    struct NextId {
        start_id: u32,
        next_id: u32,
        open_flags: u32,
    }
    /// The start of `struct bpf_link_info` with its `cgroup` member.
    #[repr(C)]
    #[derive(Default)]
    struct LinkInfo {
        link_type: u32,
        id: u32,
        prog_id: u32,
        pad: u32,
        cgroup_id: u64,
        attach_type: u32,
        pad2: u32,
    }
    let mut out = Vec::new();
    let mut id = 0;
    loop {
        let mut next = NextId { start_id: id, ..Default::default() };
        // SAFETY: the GET_NEXT_ID layout, no pointers.
        match unsafe { bpf(BPF_LINK_GET_NEXT_ID, &mut next) } {
            Ok(_) => id = next.next_id,
            Err(e) if e.raw_os_error() == Some(nix::libc::ENOENT) => return Ok(out),
            Err(e) => return Err(e).context("BPF_LINK_GET_NEXT_ID"),
        }
        // A link may go away between the two calls.
        let Ok(fd) = link_fd(id) else { continue };
        let mut info = LinkInfo::default();
        if get_info(&fd, &mut info).is_ok() && info.link_type == BPF_LINK_TYPE_CGROUP {
            out.push(CgroupLink { id: info.id, prog_id: info.prog_id, cgroup_id: info.cgroup_id });
        }
    }
}

/// Detaches link `id` from its cgroup, whoever holds it open or pinned.
/// `false` when the link is already gone.
pub fn detach_link(id: u32) -> anyhow::Result<bool> {
    #[repr(C)]
    struct Detach {
        link_fd: u32,
    }
    let fd = match link_fd(id) {
        Ok(fd) => fd,
        Err(e) if e.downcast_ref::<std::io::Error>().and_then(std::io::Error::raw_os_error) == Some(nix::libc::ENOENT) => return Ok(false),
        Err(e) => return Err(e),
    };
    // SAFETY: the LINK_DETACH layout, no pointers; the fd is open.
    unsafe { bpf(BPF_LINK_DETACH, &mut Detach { link_fd: fd.as_raw_fd() as u32 }) }.with_context(|| format!("BPF_LINK_DETACH of link {id}"))?;
    Ok(true)
}

fn link_fd(id: u32) -> anyhow::Result<OwnedFd> {
    #[repr(C)]
    struct ById {
        link_id: u32,
        next_id: u32,
        open_flags: u32,
    }
    // SAFETY: the GET_FD_BY_ID layout, no pointers.
    let fd = unsafe { bpf(BPF_LINK_GET_FD_BY_ID, &mut ById { link_id: id, next_id: 0, open_flags: 0 }) }
        .with_context(|| format!("BPF_LINK_GET_FD_BY_ID {id}"))?;
    // SAFETY: the kernel just returned this fd to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn get_info<T>(fd: &OwnedFd, info: &mut T) -> std::io::Result<()> {
    #[repr(C)]
    struct GetInfo {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    let mut attr = GetInfo { bpf_fd: fd.as_raw_fd() as u32, info_len: size_of::<T>() as u32, info: info as *mut T as u64 };
    // SAFETY: the OBJ_GET_INFO_BY_FD layout; `info` points at a live `T` of `info_len` bytes.
    unsafe { bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr) }.map(|_| ())
}

/// A view of a `BPF_F_MMAPABLE` array map's values, mapped into this
/// process: reading 500,000 counters is a memory scan, not 500,000 lookups,
/// and writing a value is a store, not a syscall.
pub struct MappedArray<T> {
    ptr: std::ptr::NonNull<T>,
    len: usize,
    writable: bool,
}

impl<T: aya::Pod> MappedArray<T> {
    /// Maps the first `len` values of `map` (its max_entries or fewer) to read.
    pub fn read_only(map: &aya::maps::MapData, len: u32) -> std::io::Result<Self> {
        Self::map(map, len, false)
    }

    /// Maps the first `len` values of `map` to read and write.
    pub fn writable(map: &aya::maps::MapData, len: u32) -> std::io::Result<Self> {
        Self::map(map, len, true)
    }

    fn map(map: &aya::maps::MapData, len: u32, writable: bool) -> std::io::Result<Self> {
        use std::os::fd::AsFd as _;
        let bytes = (len as usize * size_of::<T>()).max(1);
        let fd = map.fd().as_fd().as_raw_fd();
        let prot = if writable { nix::libc::PROT_READ | nix::libc::PROT_WRITE } else { nix::libc::PROT_READ };
        // SAFETY: a fresh shared mapping of the map's fd; the kernel checks
        // the length against the map and fails otherwise.
        let ptr = unsafe { nix::libc::mmap(std::ptr::null_mut(), bytes, prot, nix::libc::MAP_SHARED, fd, 0) };
        if ptr == nix::libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let ptr = std::ptr::NonNull::new(ptr.cast()).ok_or_else(|| std::io::Error::other("mmap returned null"))?;
        Ok(Self { ptr, len: len as usize, writable })
    }

    /// Stores `value` at `index`, visible to BPF programs at once (a volatile
    /// store, so it is neither merged nor moved across the syscalls around it).
    ///
    /// # Panics
    /// If the view is read-only or `index` is out of range.
    pub fn set(&mut self, index: u32, value: T) {
        assert!(self.writable && (index as usize) < self.len, "store {index} outside a writable view of {}", self.len);
        // SAFETY: in range of a writable mapping, page aligned; BPF programs
        // read the value concurrently and, for u64 words, whole.
        unsafe { std::ptr::write_volatile(self.ptr.as_ptr().add(index as usize), value) }
    }

    /// The values, as the kernel holds them now (they may change while read).
    pub fn iter(&self) -> impl Iterator<Item = T> + '_ {
        // SAFETY: `len` values of T are mapped, page aligned; the kernel may
        // write them concurrently, so each is read as a volatile copy.
        (0..self.len).map(|i| unsafe { std::ptr::read_volatile(self.ptr.as_ptr().add(i)) })
    }
}

impl<T> Drop for MappedArray<T> {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, of this length.
        unsafe { nix::libc::munmap(self.ptr.as_ptr().cast(), (self.len * size_of::<T>()).max(1)) };
    }
}
