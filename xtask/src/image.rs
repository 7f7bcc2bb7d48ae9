//! `cargo xtask image`: the agent's OCI image, built from scratch with
//! buildah (no container daemon, nothing pulled), then checked.
//!
//! The image holds the release binary at `/redirector`, the shared libraries
//! `ldd` names for it (each at the path the loader looks for) and the dynamic
//! loader; nothing else. Written to `target/image/`:
//!
//! - `redirector/`: an OCI layout, tag `latest`;
//! - `redirector.tar`: the same image as an `oci-archive` named
//!   [`IMAGE_NAME`], for `ctr images import` or `podman load`; it is the
//!   name `image: redirector:latest` in deploy/kubernetes resolves to.
//!
//! [`check`] reads the layout back: the config's entry point and user, the
//! archive's name and manifest, and `redirector --version` run by chroot in
//! the unpacked root filesystem, so only the image's own libraries are used.

use anyhow::{Context as _, anyhow, bail, ensure};
use crate::output;
use serde_json::Value;
use std::{
    path::{Path, PathBuf},
    process::Command,
};

/// The name in the archive: what `redirector:latest` normalises to.
pub const IMAGE_NAME: &str = "docker.io/library/redirector:latest";
/// The layout's tag.
const TAG: &str = "latest";
/// Where the binary sits in the image.
const ENTRYPOINT: &str = "/redirector";
/// Root: loading BPF programs and attaching them to the host's cgroup2 root
/// needs CAP_BPF, CAP_NET_ADMIN and CAP_SYS_ADMIN in the effective set, which a
/// non-root user does not get from a container's capability list (Kubernetes
/// sets no ambient capabilities), and the pin directory is root-only (0700).
const USER: &str = "0:0";
/// The workspace version (xtask inherits it).
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Builds the image of `binary`, or of the release binary built first, then
/// checks it.
pub fn run(binary: Option<&Path>) -> anyhow::Result<()> {
    crate::require_root("`xtask image` (buildah's storage and the chroot check)")?;
    crate::setup::image_tools()?;
    let binary = match binary {
        Some(binary) => binary.to_path_buf(),
        None => crate::build_release()?,
    };
    build(&binary)?;
    check()
}

/// `target/image`.
pub fn image_dir() -> PathBuf {
    crate::target_dir().join("image")
}

/// The OCI layout directory.
pub fn layout() -> PathBuf {
    image_dir().join("redirector")
}

/// The `oci-archive` tarball.
pub fn archive() -> PathBuf {
    image_dir().join("redirector.tar")
}

/// Builds the image of `binary` into [`layout`] and [`archive`], in a
/// buildah storage of its own under `target/image` that is removed after.
fn build(binary: &Path) -> anyhow::Result<()> {
    let dir = image_dir();
    let rootfs = dir.join("rootfs");
    let storage = dir.join("storage");
    for stale in [&rootfs, &storage, &layout(), &archive()] {
        remove(stale)?;
    }
    let files = stage(binary, &rootfs)?;
    let buildah = |args: &[&str]| -> anyhow::Result<String> {
        let mut cmd = Command::new("buildah");
        cmd.arg("--root").arg(storage.join("root")).arg("--runroot").arg(storage.join("run")).args(["--storage-driver", "vfs"]).args(args);
        output(&mut cmd)
    };
    let container = buildah(&["from", "--quiet", "scratch"])?.trim().to_string();
    buildah(&["copy", "--quiet", &container, &rootfs.to_string_lossy(), "/"])?;
    let entrypoint = format!("[\"{ENTRYPOINT}\"]");
    let mut config = vec!["config", "--entrypoint", &entrypoint, "--user", USER, "--created-by", "cargo xtask image"];
    let labels = labels()?;
    for label in &labels {
        config.extend(["--label", label]);
    }
    config.push(&container);
    buildah(&config)?;
    buildah(&["commit", "--quiet", "--rm", &container, IMAGE_NAME])?;
    let to_layout = format!("oci:{}:{TAG}", layout().display());
    let to_archive = format!("oci-archive:{}:{IMAGE_NAME}", archive().display());
    for dest in [&to_layout, &to_archive] {
        buildah(&["push", "--quiet", IMAGE_NAME, dest])?;
    }
    remove(&storage)?;
    remove(&rootfs)?;
    eprintln!("image: {} files in {} and {}", files.len(), layout().display(), archive().display());
    for file in &files {
        eprintln!("image:   {}", file.display());
    }
    Ok(())
}

/// Copies `binary` to `/redirector` under `rootfs`, and every library `ldd`
/// lists for it (the loader included) to the path it names. Returns the
/// paths in the image.
fn stage(binary: &Path, rootfs: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = vec![(binary.to_path_buf(), PathBuf::from(ENTRYPOINT))];
    files.extend(libraries(binary)?.into_iter().map(|lib| (lib.clone(), lib)));
    for (from, to) in &files {
        let dest = rootfs.join(to.strip_prefix("/").unwrap_or(to));
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        // Through symlinks (e.g. /lib64/ld-linux-x86-64.so.2): the content, at the path the loader uses.
        std::fs::copy(from, &dest).with_context(|| format!("copying {} to {}", from.display(), dest.display()))?;
    }
    Ok(files.into_iter().map(|(_, to)| to).collect())
}

/// The absolute paths `ldd` resolves for `binary`'s libraries, and its
/// loader (the one absolute path without `=>`); none for a static binary. The
/// vDSO has no path and is skipped.
fn libraries(binary: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let listing = output(Command::new("ldd").arg(binary))?;
    if listing.trim() == "statically linked" {
        return Ok(Vec::new());
    }
    let (mut libs, mut loader) = (Vec::new(), false);
    for line in listing.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line.contains("not found") {
            bail!("ldd {}: a library is missing: {line}", binary.display());
        }
        let path = match line.split_once("=>") {
            Some((_, resolved)) => resolved.split_whitespace().next(),
            None => line.split_whitespace().next().inspect(|p| loader |= p.starts_with('/')),
        };
        if let Some(path) = path.filter(|p| p.starts_with('/')) {
            libs.push(PathBuf::from(path));
        }
    }
    ensure!(loader, "ldd {}: no dynamic loader in its output:\n{listing}", binary.display());
    Ok(libs)
}

/// OCI annotations as image labels: title, version, revision, and source
/// when the repository has an `origin` remote.
fn labels() -> anyhow::Result<Vec<String>> {
    let git = |args: &[&str]| output(Command::new("git").arg("-C").arg(crate::workspace_root()).args(args));
    let mut labels = vec![
        "org.opencontainers.image.title=redirector".to_string(),
        "org.opencontainers.image.description=Sidecarless, in-kernel enforcement of Kuma MeshTCPRoute".to_string(),
        format!("org.opencontainers.image.version={VERSION}"),
        format!("org.opencontainers.image.revision={}", git(&["rev-parse", "HEAD"])?.trim()),
    ];
    if let Ok(url) = git(&["remote", "get-url", "origin"]) {
        labels.push(format!("org.opencontainers.image.source={}", url.trim()));
    }
    Ok(labels)
}

/// Checks the image in [`layout`] and [`archive`]: the entry point is
/// `["/redirector"]`, the user `0:0`, the version label the workspace's, the
/// archive holds the same manifest under [`IMAGE_NAME`], and `/redirector
/// --version`, run by chroot in the unpacked root filesystem, prints the
/// workspace version.
pub fn check() -> anyhow::Result<()> {
    let layout = layout();
    let index = read_json(&layout.join("index.json"))?;
    let manifest_desc = descriptor(&index, TAG).with_context(|| format!("{}/index.json", layout.display()))?;
    let manifest = read_blob(&layout, &manifest_desc)?;
    let config = read_blob(&layout, &manifest["config"])?;
    let image_config = &config["config"];
    let entrypoint = &image_config["Entrypoint"];
    ensure!(*entrypoint == serde_json::json!([ENTRYPOINT]), "image config: Entrypoint is {entrypoint}, not [\"{ENTRYPOINT}\"]");
    let user = &image_config["User"];
    ensure!(user.as_str() == Some(USER), "image config: User is {user}, not \"{USER}\"");
    let version = &image_config["Labels"]["org.opencontainers.image.version"];
    ensure!(version.as_str() == Some(VERSION), "image config: version label is {version}, not \"{VERSION}\"");
    ensure!(config["os"] == "linux", "image config: os is {}, not \"linux\"", config["os"]);

    let archive = archive();
    let archived = output(Command::new("tar").arg("-xOf").arg(&archive).arg("index.json"))?;
    let archived: Value = serde_json::from_str(&archived).with_context(|| format!("{}: index.json is not JSON", archive.display()))?;
    let archived = descriptor(&archived, IMAGE_NAME).with_context(|| format!("{}: index.json", archive.display()))?;
    ensure!(
        archived["digest"] == manifest_desc["digest"],
        "{} holds manifest {}, the layout {}",
        archive.display(),
        archived["digest"],
        manifest_desc["digest"]
    );

    let bundle = image_dir().join("check");
    remove(&bundle)?;
    output(Command::new("umoci").arg("unpack").arg("--image").arg(format!("{}:{TAG}", layout.display())).arg(&bundle))?;
    let rootfs = bundle.join("rootfs");
    let printed = output(Command::new("chroot").arg(&rootfs).arg(ENTRYPOINT).arg("--version"))?;
    let (files, bytes) = tree_size(&rootfs)?;
    remove(&bundle)?;
    ensure!(
        printed.contains(&format!("redirector {VERSION}")),
        "chroot {} {ENTRYPOINT} --version printed {printed:?}, not \"redirector {VERSION}\"",
        rootfs.display()
    );
    let layers: u64 = manifest["layers"].as_array().into_iter().flatten().filter_map(|l| l["size"].as_u64()).sum();
    eprintln!(
        "image check: Entrypoint {entrypoint}, User {user}, {} (chroot in the unpacked rootfs: {files} files, {:.1} MiB; layer {:.1} MiB compressed), {} named {IMAGE_NAME}: ok",
        printed.trim(),
        bytes as f64 / (1 << 20) as f64,
        layers as f64 / (1 << 20) as f64,
        archive.display()
    );
    Ok(())
}

/// The manifest descriptor of `index` whose `org.opencontainers.image.ref.name` is `name`.
fn descriptor(index: &Value, name: &str) -> anyhow::Result<Value> {
    index["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == name)
        .cloned()
        .ok_or_else(|| anyhow!("no manifest named {name:?} in {index}"))
}

/// The blob a descriptor points at, parsed.
fn read_blob(layout: &Path, desc: &Value) -> anyhow::Result<Value> {
    let digest = desc["digest"].as_str().ok_or_else(|| anyhow!("descriptor without a digest: {desc}"))?;
    let (algorithm, hex) = digest.split_once(':').ok_or_else(|| anyhow!("malformed digest {digest:?}"))?;
    read_json(&layout.join("blobs").join(algorithm).join(hex))
}

fn read_json(path: &Path) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))
}

/// Regular files under `dir` and their total size.
fn tree_size(dir: &Path) -> anyhow::Result<(usize, u64)> {
    let (mut files, mut bytes) = (0, 0);
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            let (f, b) = tree_size(&entry.path())?;
            (files, bytes) = (files + f, bytes + b);
        } else if kind.is_file() {
            (files, bytes) = (files + 1, bytes + entry.metadata()?.len());
        }
    }
    Ok((files, bytes))
}

fn remove(path: &Path) -> anyhow::Result<()> {
    let result = if path.is_dir() { std::fs::remove_dir_all(path) } else { std::fs::remove_file(path) };
    match result {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e).with_context(|| format!("removing {}", path.display())),
        _ => Ok(()),
    }
}
