//! `cargo xtask setup`: everything a fresh machine needs, each step skipped
//! when already done.
//!
//! - the nightly toolchain's `rust-src` (the BPF target builds `core` itself);
//! - bpf-linker 0.13.0 built against the nightly's own LLVM (no system LLVM
//!   needed): a prefix directory whose `lib/libLLVM.so` points at the
//!   nightly's `libLLVM.so.*`;
//! - iproute2 (`ip`), for the tests' network namespaces;
//! - bpffs at /sys/fs/bpf; a cgroup2 mount must already exist.

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
    apt_tools()?;
    bpffs()?;
    redirector::cgroup::cgroup2_mount()?;
    Ok(())
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

fn apt_tools() -> anyhow::Result<()> {
    let missing: Vec<&str> = [("ip", "iproute2")]
        .into_iter()
        .filter(|(tool, _)| Command::new(tool).arg("-V").output().is_err())
        .map(|(_, package)| package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !nix::unistd::geteuid().is_root() {
        bail!("missing packages {missing:?}: install them (apt-get install {})", missing.join(" "));
    }
    eprintln!("setup: apt-get install {}", missing.join(" "));
    crate::run(Command::new("apt-get").arg("update").arg("-q"))?;
    crate::run(Command::new("apt-get").args(["install", "-y", "-q"]).args(&missing).env("DEBIAN_FRONTEND", "noninteractive"))
}

fn bpffs() -> anyhow::Result<()> {
    if nix::unistd::geteuid().is_root() {
        redirector::datapath::ensure_bpffs_mounted()?;
    }
    Ok(())
}
