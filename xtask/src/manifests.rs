//! `cargo xtask validate-manifests`: every YAML file under deploy/kubernetes/,
//! checked offline against the Kubernetes API's OpenAPI schemas.
//!
//! - kubernetes-validate (PyPI, pinned) in a venv of its own under `target/`,
//!   created on first use; `--strict` rejects unknown fields too;
//! - every resource file against each of [`KUBERNETES_VERSIONS`]; a kind
//!   without a schema (e.g. a mistyped apiVersion) fails, as does a warning;
//! - every resource file listed in `kustomization.yaml`, and the output of
//!   `kubectl kustomize` validated the same way (kubectl is installed when
//!   missing).

use anyhow::{Context as _, bail, ensure};
use std::{
    path::{Path, PathBuf},
    process::Command,
};

/// The validator, pinned: its schemas are bundled, nothing is fetched at run time.
const KUBERNETES_VALIDATE: &str = "kubernetes-validate==1.37.0";
/// The Kubernetes versions validated against: a widely deployed one and the
/// newest the pinned validator knows.
const KUBERNETES_VERSIONS: &[&str] = &["1.32.0", "1.37.0"];

/// Validates deploy/kubernetes/; fails with every problem found.
pub fn validate() -> anyhow::Result<()> {
    let dir = crate::workspace_root().join("deploy/kubernetes");
    let validator = validator()?;
    let mut yaml = Vec::new();
    crate::yaml_files(&dir, &mut yaml)?;
    yaml.sort();
    let (kustomizations, resources): (Vec<PathBuf>, Vec<PathBuf>) = yaml.into_iter().partition(|p| p.file_name().is_some_and(|n| n == "kustomization.yaml"));
    ensure!(kustomizations.len() == 1, "{}: expected one kustomization.yaml, found {kustomizations:?}", dir.display());
    ensure!(!resources.is_empty(), "{}: no manifests", dir.display());

    let mut problems = Vec::new();
    let listed = listed_resources(&kustomizations[0])?;
    for file in &resources {
        let relative = file.strip_prefix(&dir).unwrap_or(file).to_string_lossy().into_owned();
        if !listed.contains(&relative) {
            problems.push(format!("{}: not listed in kustomization.yaml's resources", file.display()));
        }
    }
    let objects = check(&validator, &resources, &mut problems)?;

    crate::setup::apt_tools(&[("kubectl", "kubernetes-client")])?;
    let rendered = venv_dir().join("kustomize-build.yaml");
    let built = crate::output(Command::new("kubectl").arg("kustomize").arg(&dir))?;
    std::fs::write(&rendered, built).with_context(|| format!("writing {}", rendered.display()))?;
    let built = check(&validator, std::slice::from_ref(&rendered), &mut problems)?;

    if !problems.is_empty() {
        bail!("deploy/kubernetes does not validate:\n{}", problems.join("\n"));
    }
    ensure!(built == objects, "kubectl kustomize built {built} objects, the files hold {objects}");
    eprintln!(
        "manifests: {} files, {objects} objects valid (strict) against Kubernetes {}; `kubectl kustomize` builds all {built}",
        resources.len(),
        KUBERNETES_VERSIONS.join(" and ")
    );
    Ok(())
}

/// Runs the validator on `files` for each version; returns how many objects
/// passed per version, pushing every failure or warning to `problems`.
fn check(validator: &Path, files: &[PathBuf], problems: &mut Vec<String>) -> anyhow::Result<usize> {
    let mut passed = 0;
    for version in KUBERNETES_VERSIONS {
        let mut cmd = Command::new(validator);
        cmd.args(["--strict", "--kubernetes-version", version]).args(files);
        let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        let before = problems.len();
        passed = 0;
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            if line.starts_with("INFO") && line.contains(" passed ") {
                passed += 1;
            } else {
                problems.push(format!("[{version}] {line}"));
            }
        }
        if !out.status.success() && problems.len() == before {
            problems.push(format!("[{version}] {cmd:?} failed: {}", out.status));
        }
    }
    Ok(passed)
}

/// The `resources:` entries of a kustomization (one `- path` per line).
fn listed_resources(kustomization: &Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(kustomization).with_context(|| format!("reading {}", kustomization.display()))?;
    let mut in_resources = false;
    let mut listed = Vec::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if !line.starts_with([' ', '-']) {
            in_resources = trimmed == "resources:";
        } else if in_resources && let Some(entry) = trimmed.strip_prefix("- ") {
            listed.push(entry.trim().to_string());
        }
    }
    Ok(listed)
}

/// `target/kubernetes-validate`: the venv.
fn venv_dir() -> PathBuf {
    crate::target_dir().join("kubernetes-validate")
}

/// The venv's `kubernetes-validate`, installing the pinned version when it
/// is not there (python3 and its venv module come from Debian when missing).
fn validator() -> anyhow::Result<PathBuf> {
    let venv = venv_dir();
    let bin = venv.join("bin/kubernetes-validate");
    let pinned = KUBERNETES_VALIDATE.rsplit("==").next().unwrap_or_default();
    let installed = Command::new(&bin).arg("--version").output().is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == pinned);
    if installed {
        return Ok(bin);
    }
    crate::setup::apt_tools(&[("python3", "python3")])?;
    eprintln!("manifests: installing {KUBERNETES_VALIDATE} into {}", venv.display());
    let create = || Command::new("python3").args(["-m", "venv", "--clear"]).arg(&venv).output();
    if !create().is_ok_and(|o| o.status.success()) {
        // Debian's python3 has no ensurepip without this package.
        crate::setup::apt_install(&["python3-venv"])?;
        crate::run(Command::new("python3").args(["-m", "venv", "--clear"]).arg(&venv))?;
    }
    crate::run(Command::new(venv.join("bin/pip")).args(["install", "--quiet", "--disable-pip-version-check", KUBERNETES_VALIDATE]))?;
    Ok(bin)
}
