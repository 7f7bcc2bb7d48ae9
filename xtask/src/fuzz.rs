//! `cargo xtask fuzz --seconds N`: runs the cargo-fuzz target
//! `parse_resolve_compile` (fuzz/) for N seconds, after installing cargo-fuzz
//! if it is missing and writing a seed corpus.
//!
//! Seeds are written at run time into `fuzz/corpus/parse_resolve_compile/`
//! (git-ignored, like everything libFuzzer adds there): every YAML file under
//! `examples/` and `redirector-core/tests/`, each example directory as one
//! multi-document file, and the Kuma YAML held in raw string literals of
//! `redirector-core/tests/*.rs`. A crash leaves its input in
//! `fuzz/artifacts/parse_resolve_compile/` and fails the task.

use anyhow::{Context as _, bail};
use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

const TARGET: &str = "parse_resolve_compile";
/// Installed when `cargo fuzz` is missing.
const CARGO_FUZZ_VERSION: &str = "0.13.2";
/// Longest input the fuzzer generates (the seeds are shorter).
const MAX_LEN: usize = 16 * 1024;

/// Runs the target for `seconds` seconds (after building it).
pub fn run(seconds: u64) -> anyhow::Result<()> {
    cargo_fuzz()?;
    let root = crate::workspace_root();
    let corpus = root.join("fuzz/corpus").join(TARGET);
    let seeds = write_seeds(&root, &corpus)?;
    eprintln!("fuzz: {seeds} seeds in {}; running {TARGET} for {seconds} s", corpus.display());
    let start = Instant::now();
    let status = nightly_cargo()
        .current_dir(&root)
        .args(["fuzz", "run", TARGET])
        .arg(&corpus)
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-max_len={MAX_LEN}"))
        // One input must not take long: a hang is a finding too.
        .arg("-timeout=10")
        .arg("-print_final_stats=1")
        .arg("-print_funcs=0")
        .status()
        .context("running cargo +nightly fuzz")?;
    if !status.success() {
        bail!(
            "fuzz target {TARGET} failed ({status}); the input is in {}",
            root.join("fuzz/artifacts").join(TARGET).display()
        );
    }
    eprintln!("fuzz: {TARGET} ok ({:.0?} with the build)", start.elapsed());
    Ok(())
}

/// `cargo +nightly` (the rustup proxy: `$CARGO` is the toolchain's own cargo,
/// which does not take `+toolchain`). The nested cargo that cargo-fuzz and
/// the BPF build start must be nightly too, whatever toolchain runs xtask.
fn nightly_cargo() -> Command {
    let mut cmd = Command::new("cargo");
    cmd.arg(format!("+{}", crate::setup::NIGHTLY)).env("RUSTUP_TOOLCHAIN", crate::setup::NIGHTLY);
    for key in ["CARGO", "RUSTC", "RUSTDOC", "RUSTC_WRAPPER", "RUSTC_WORKSPACE_WRAPPER"] {
        cmd.env_remove(key);
    }
    cmd
}

/// Installs cargo-fuzz unless `cargo fuzz` already runs.
fn cargo_fuzz() -> anyhow::Result<()> {
    let installed = nightly_cargo().args(["fuzz", "--version"]).output().is_ok_and(|o| o.status.success());
    if installed {
        return Ok(());
    }
    eprintln!("fuzz: installing cargo-fuzz {CARGO_FUZZ_VERSION} (a minute or two, once)");
    crate::run(Command::new("cargo").args(["install", "cargo-fuzz", "--locked", "--version", CARGO_FUZZ_VERSION]))
}

/// Writes the seeds into `corpus` (replacing earlier seeds, keeping what
/// libFuzzer added); returns how many.
fn write_seeds(root: &Path, corpus: &Path) -> anyhow::Result<usize> {
    std::fs::create_dir_all(corpus).with_context(|| format!("creating {}", corpus.display()))?;
    let mut seeds: Vec<(String, String)> = Vec::new();
    for dir in ["examples", "redirector-core/tests"] {
        let mut files = Vec::new();
        crate::yaml_files(&root.join(dir), &mut files)?;
        files.sort();
        for file in &files {
            let rel = file.strip_prefix(root).unwrap_or(file).display().to_string();
            seeds.push((rel, std::fs::read_to_string(file)?));
        }
        // Each directory's files as one multi-document input: a whole config.
        let mut by_dir: Vec<(PathBuf, String)> = Vec::new();
        for file in &files {
            let parent = file.parent().unwrap_or(root).to_path_buf();
            let text = std::fs::read_to_string(file)?;
            match by_dir.last_mut() {
                Some((d, all)) if *d == parent => {
                    all.push_str("\n---\n");
                    all.push_str(&text);
                }
                _ => by_dir.push((parent, text)),
            }
        }
        for (d, all) in by_dir {
            let rel = d.strip_prefix(root).unwrap_or(&d).display().to_string();
            seeds.push((format!("{rel}/all"), all));
        }
    }
    let tests = root.join("redirector-core/tests");
    let mut sources: Vec<PathBuf> = std::fs::read_dir(&tests)
        .with_context(|| format!("listing {}", tests.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .collect();
    sources.sort();
    for source in sources {
        let text = std::fs::read_to_string(&source)?;
        let name = source.file_stem().unwrap_or_default().to_string_lossy().into_owned();
        for (i, yaml) in raw_yaml_literals(&text).into_iter().enumerate() {
            seeds.push((format!("{name}.rs/{i}"), yaml.to_string()));
        }
    }
    // Replace the seeds of earlier runs (the sources may have changed).
    for entry in std::fs::read_dir(corpus)? {
        let path = entry?.path();
        if path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("seed-")) {
            std::fs::remove_file(&path)?;
        }
    }
    let mut count = 0;
    for (name, text) in seeds {
        if text.len() > MAX_LEN {
            continue;
        }
        let file = format!("seed-{}", name.replace(['/', '.'], "_"));
        std::fs::write(corpus.join(file), text)?;
        count += 1;
    }
    Ok(count)
}

/// The `r#"..."#` literals of a Rust source that hold Kuma YAML.
fn raw_yaml_literals(source: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = source;
    while let Some(start) = rest.find("r#\"") {
        let body = &rest[start + 3..];
        let Some(end) = body.find("\"#") else { break };
        let literal = &body[..end];
        if literal.lines().any(|l| l.starts_with("type:") || l.starts_with("apiVersion:")) {
            out.push(literal);
        }
        rest = &body[end + 2..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::raw_yaml_literals;

    #[test]
    fn finds_kuma_yaml_in_raw_strings() {
        let src = "const A: &str = r#\"\ntype: Mesh\nname: m\n\"#;\nconst B: &str = r#\"not yaml\"#;\nlet c = r#\"\napiVersion: kuma.io/v1alpha1\n\"#;";
        assert_eq!(raw_yaml_literals(src), vec!["\ntype: Mesh\nname: m\n", "\napiVersion: kuma.io/v1alpha1\n"]);
    }
}
