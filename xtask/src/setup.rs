//! `cargo xtask setup`: everything a fresh machine needs, each step skipped
//! when already done.
//!
//! - the nightly toolchain's `rust-src` (the BPF target builds `core` itself);
//! - bpf-linker 0.13.0 built against the nightly's own LLVM (no system LLVM
//!   needed): a prefix directory whose `lib/libLLVM.so` points at the
//!   nightly's `libLLVM.so.*`;
//! - iproute2 (`ip`), for the tests' network namespaces;
//! - bpffs at /sys/fs/bpf; a cgroup2 mount must already exist.
//!
//! `image` and `validate-manifests` install their own tools the same way
//! ([`image_tools`], [`apt_tools`]).
//!
//! It needs nothing but rustup: no crate of the workspace, which is what lets
//! it run on a machine where the BPF programs cannot be built yet.

use anyhow::{Context as _, anyhow, bail};
use std::{
    path::{Path, PathBuf},
    process::Command,
};

const BPF_LINKER_VERSION: &str = "0.13.0";
pub(crate) const NIGHTLY: &str = "nightly";

/// Runs every step.
pub fn run() -> anyhow::Result<()> {
    let sysroot = nightly_sysroot()?;
    rust_src(&sysroot)?;
    bpf_linker(&sysroot)?;
    apt_tools(&[("ip", "iproute2")])?;
    bpffs()?;
    cgroup2()
}

/// The bench's comparators, by the command each package provides
/// (`redirector bench` skips a comparator whose tool is missing; here all
/// of them are installed so the report compares against every one).
pub fn bench_tools() -> anyhow::Result<()> {
    apt_tools(&[("iptables", "iptables"), ("nft", "nftables"), ("haproxy", "haproxy")])
}

/// buildah (builds the image from scratch, no daemon) and umoci (unpacks it
/// for the check).
pub fn image_tools() -> anyhow::Result<()> {
    apt_tools(&[("buildah", "buildah"), ("umoci", "umoci")])
}

/// Puts `$CARGO_HOME/bin` on this process's PATH (and so on every child's)
/// when it is not there: `cargo install` puts bpf-linker and cargo-fuzz there,
/// and the BPF build and `cargo fuzz` must find them.
pub fn cargo_bin_on_path() {
    let Some(home) = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
    else {
        return;
    };
    let bin = home.join("bin");
    let path = std::env::var_os("PATH").unwrap_or_default();
    if std::env::split_paths(&path).any(|p| p == bin) {
        return;
    }
    let joined = std::env::join_paths(std::iter::once(bin).chain(std::env::split_paths(&path)));
    if let Ok(joined) = joined {
        // SAFETY: called first thing in main, before any thread exists.
        unsafe { std::env::set_var("PATH", joined) };
    }
}

fn nightly_sysroot() -> anyhow::Result<PathBuf> {
    let out = Command::new("rustc")
        .args([&format!("+{NIGHTLY}"), "--print", "sysroot"])
        .output()
        .context("running rustc +nightly (is rustup installed?)")?;
    if !out.status.success() {
        eprintln!("setup: installing the {NIGHTLY} toolchain");
        crate::run(Command::new("rustup").args(["toolchain", "install", NIGHTLY, "--profile", "minimal"]))?;
        return nightly_sysroot();
    }
    Ok(PathBuf::from(String::from_utf8(out.stdout)?.trim()))
}

fn rust_src(sysroot: &Path) -> anyhow::Result<()> {
    if sysroot.join("lib/rustlib/src/rust/library/core").is_dir() {
        return Ok(());
    }
    eprintln!("setup: adding rust-src to {NIGHTLY}");
    crate::run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", NIGHTLY]))
}

fn bpf_linker(sysroot: &Path) -> anyhow::Result<()> {
    // bpf-linker loads the nightly's libLLVM, which `rustup run` puts on the
    // library path (aya-build runs it the same way).
    let installed = Command::new("rustup")
        .args(["run", NIGHTLY, "bpf-linker", "--version"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER_VERSION))
        .unwrap_or(false);
    if installed {
        return Ok(());
    }
    let lib_dir = sysroot.join("lib");
    let libllvm = std::fs::read_dir(&lib_dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("libLLVM.so.")))
        .ok_or_else(|| anyhow!("no libLLVM.so.* in {}", lib_dir.display()))?;
    let major = libllvm
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("libLLVM.so."))
        .and_then(|v| v.split('.').next())
        .ok_or_else(|| anyhow!("cannot read the LLVM version from {}", libllvm.display()))?
        .to_string();
    let prefix = cache_dir().join(format!("llvm-{major}"));
    std::fs::create_dir_all(prefix.join("lib"))?;
    let link = prefix.join("lib/libLLVM.so");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&libllvm, &link)?;
    eprintln!("setup: building bpf-linker {BPF_LINKER_VERSION} against {} (a few minutes, once)", libllvm.display());
    crate::run(
        Command::new("cargo")
            .args([&format!("+{NIGHTLY}"), "install", "bpf-linker", "--version", BPF_LINKER_VERSION])
            .args(["--no-default-features", "--features", &format!("llvm-{major}")])
            .env("LLVM_PREFIX", &prefix),
    )
}

fn cache_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/tmp"))
        .join("redirector")
}

/// Installs the Debian package of every command in `tools` that is not on PATH.
pub(crate) fn apt_tools(tools: &[(&str, &'static str)]) -> anyhow::Result<()> {
    let missing: Vec<&str> = tools.iter().filter(|(tool, _)| !on_path(tool)).map(|(_, package)| *package).collect();
    apt_install(&missing)
}

/// Installs these Debian packages (none: nothing to do).
pub(crate) fn apt_install(missing: &[&str]) -> anyhow::Result<()> {
    if missing.is_empty() {
        return Ok(());
    }
    if !nix::unistd::geteuid().is_root() {
        bail!("missing packages {missing:?}: install them (apt-get install {})", missing.join(" "));
    }
    eprintln!("setup: apt-get install {}", missing.join(" "));
    crate::run(Command::new("apt-get").arg("update").arg("-q"))?;
    crate::run(Command::new("apt-get").args(["install", "-y", "-q"]).args(missing).env("DEBIAN_FRONTEND", "noninteractive"))
}

fn on_path(cmd: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).any(|dir| dir.join(cmd).is_file())
}

/// bpffs at /sys/fs/bpf, where the agent pins by default (root only).
fn bpffs() -> anyhow::Result<()> {
    const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
    let path = Path::new("/sys/fs/bpf");
    if !nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    let fs = nix::sys::statfs::statfs(path).with_context(|| format!("statfs {}", path.display()))?;
    if fs.filesystem_type().0 as i64 == BPF_FS_MAGIC {
        return Ok(());
    }
    eprintln!("setup: mounting bpffs at {}", path.display());
    nix::mount::mount(Some("bpf"), path, Some("bpf"), nix::mount::MsFlags::empty(), None::<&str>)
        .with_context(|| format!("mounting bpffs at {}", path.display()))
}

/// A cgroup2 filesystem must be mounted somewhere (`/proc/mounts`).
fn cgroup2() -> anyhow::Result<()> {
    let mounts = std::fs::read_to_string("/proc/mounts").context("reading /proc/mounts")?;
    if mounts.lines().any(|l| l.split_whitespace().nth(2) == Some("cgroup2")) {
        return Ok(());
    }
    bail!("no cgroup2 filesystem is mounted (see /proc/mounts): redirector needs cgroup v2")
}
