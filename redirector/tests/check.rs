//! The `redirector check` binary on bad files and directories: exit status 1,
//! one `file: Kind/name: field.path: message` line per problem on stdout, no
//! panic, no hang. The same inputs through the library are in
//! redirector-core's `bad_input` tests.

#[path = "../../redirector-core/tests/common/mod.rs"]
mod common;

use common::{BACKEND_WEIGHT, CANARY, MAX_FILE_BYTES, Scratch, route_with_backend};
use std::{
    os::unix::{fs::PermissionsExt as _, process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Command, Output},
    time::{Duration, Instant},
};

/// The `redirector` binary: `$REDIRECTOR_BIN`, else the one cargo built for
/// these tests (`target/debug/redirector`).
fn redirector_bin() -> PathBuf {
    std::env::var_os("REDIRECTOR_BIN").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_redirector")))
}

/// Runs `redirector check path` (as `uid`/`gid` when given), with a time limit.
fn check_as(path: &Path, ids: Option<(u32, u32)>, bin: &Path) -> std::io::Result<Output> {
    let mut cmd = Command::new(bin);
    cmd.arg("check").arg(path).env("RUST_BACKTRACE", "1");
    if let Some((uid, gid)) = ids {
        cmd.uid(uid).gid(gid);
    }
    let child = cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn()?;
    wait_limited(child, Duration::from_secs(20))
}

fn wait_limited(mut child: std::process::Child, limit: Duration) -> std::io::Result<Output> {
    let start = Instant::now();
    while child.try_wait()?.is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, format!("still running after {limit:?}")));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output()
}

/// Asserts `redirector check` failed cleanly (exit 1, no panic) and printed
/// exactly `lines` (each a prefix of its line) on stdout.
fn assert_check_output(path: &Path, out: &Output, lines: &[String]) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let context = format!("check {}: status {}\nstdout:\n{stdout}stderr:\n{stderr}", path.display(), out.status);
    assert_eq!(out.status.code(), Some(1), "{context}");
    assert!(!stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"), "{context}");
    let got: Vec<&str> = stdout.lines().collect();
    assert_eq!(got.len(), lines.len(), "{context}");
    for (got, want) in got.iter().zip(lines) {
        assert!(got.starts_with(want.as_str()), "line {got:?} does not start with {want:?}\n{context}");
    }
}

fn check(path: &Path, lines: &[String]) {
    let out = check_as(path, None, &redirector_bin()).unwrap_or_else(|e| panic!("running check {}: {e}", path.display()));
    assert_check_output(path, &out, lines);
}

#[test]
fn check_reports_bad_files_one_line_each() {
    let dir = Scratch::new("check");
    let d = dir.0.display();

    let missing = dir.0.join("missing.yaml");
    check(&missing, &[format!("{d}/missing.yaml: cannot read: No such file or directory (os error 2)")]);

    let dangling = dir.0.join("dangling.yaml");
    std::os::unix::fs::symlink(dir.0.join("nowhere"), &dangling).unwrap();
    check(&dangling, &[format!("{d}/dangling.yaml: cannot read: No such file or directory (os error 2)")]);

    let tab = dir.write("tab.yaml", "type: MeshTCPRoute\nname: r\nspec:\n\ttargetRef: {kind: Mesh}\n");
    check(&tab, &[format!("{d}/tab.yaml: document 1: invalid YAML: found character that cannot start any token at line 4 column 1")]);

    let latin1 = dir.write("latin1.yaml", b"name: caf\xe9\n");
    check(&latin1, &[format!("{d}/latin1.yaml: not UTF-8 text (byte 9)")]);

    let big = dir.0.join("big.yaml");
    std::fs::File::create(&big).unwrap().set_len(MAX_FILE_BYTES + 1).unwrap();
    check(&big, &[format!("{d}/big.yaml: file is 16777217 bytes, larger than the 16777216-byte limit")]);

    let types = dir.write("types.yaml", route_with_backend("weight: 18446744073709551615, port: x"));
    check(
        &types,
        &[format!("{d}/types.yaml: MeshTCPRoute/r: spec.to[0].rules[0].default.backendRefs[0].port: invalid type: string \"x\", expected u32")],
    );

    let range = dir.write("range.yaml", route_with_backend("weight: 18446744073709551615"));
    check(&range, &[format!("{d}/range.yaml: MeshTCPRoute/r: {BACKEND_WEIGHT}: must be in inclusive range [0, 4294967295]")]);

    // Deep nesting on the binary's main thread, and an alias bomb.
    let deep = dir.write("deep.yaml", "[".repeat(10_000) + &"]".repeat(10_000));
    check(&deep, &[format!("{d}/deep.yaml: YAML nesting deeper than 64 levels at line 1 column 65 (flow collections nest at most 64 deep)")]);
    let mut lol = String::from("a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for w in ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"].windows(2) {
        lol.push_str(&format!("{1}: &{1} [*{0}, *{0}, *{0}, *{0}, *{0}, *{0}, *{0}, *{0}, *{0}, *{0}]\n", w[0], w[1]));
    }
    let bomb = dir.write("bomb.yaml", lol);
    check(&bomb, &[format!("{d}/bomb.yaml: document 1: invalid YAML: repetition limit exceeded")]);

    let empty = Scratch::new("check-empty-dir");
    check(&empty.0, &[format!("{}: no .yaml or .yml files found", empty.0.display())]);

    // A directory: each file's problems (files in name order), then duplicates.
    let tree = Scratch::new("check-tree");
    let t = tree.0.display();
    tree.write("a.yaml", CANARY);
    tree.write("b/dup.yaml", "type: MeshService\nname: backend\nspec: {ports: [{port: 1, targetPort: 1}]}\n");
    tree.write("c.yaml", "type: MeshFoo\nname: z\n");
    check(
        &tree.0,
        &[
            format!("{t}/c.yaml: MeshFoo/z: type: unknown resource type \"MeshFoo\""),
            format!("{t}/b/dup.yaml: MeshService/backend: name: duplicate resource: MeshService/backend in mesh \"default\" is also defined in {t}/a.yaml"),
        ],
    );
}

/// Root bypasses file permissions, so the unreadable file is checked by
/// `redirector check` running as nobody (uid/gid 65534); without root, as
/// this user, on a file of mode 0.
#[test]
fn check_reports_permission_denied() {
    let root = nix::unistd::geteuid().is_root();
    let ids = root.then_some((65534, 65534));
    let dir = Scratch::new("perm");
    let d = dir.0.display();
    let secret = dir.write("secret.yaml", CANARY);
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(if root { 0o600 } else { 0 })).unwrap();
    let locked = dir.0.join("locked");
    std::fs::create_dir(&locked).unwrap();
    std::fs::write(locked.join("inner.yaml"), CANARY).unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(if root { 0o700 } else { 0 })).unwrap();

    // The binary may sit where nobody cannot reach it: then run a copy.
    let mut bin = redirector_bin();
    let mut run = |path: &Path| match check_as(path, ids, &bin) {
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            let copy = dir.0.join("redirector");
            std::fs::copy(&bin, &copy).unwrap();
            std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
            bin = copy;
            check_as(path, ids, &bin).unwrap()
        }
        other => other.unwrap(),
    };
    let out = run(&secret);
    assert_check_output(&secret, &out, &[format!("{d}/secret.yaml: cannot read: Permission denied (os error 13)")]);
    let out = run(&locked);
    assert_check_output(&locked, &out, &[format!("{d}/locked: cannot list directory: Permission denied (os error 13)")]);
    let out = run(&dir.0);
    assert_check_output(
        &dir.0,
        &out,
        &[
            format!("{d}/locked: cannot list directory: Permission denied (os error 13)"),
            format!("{d}/secret.yaml: cannot read: Permission denied (os error 13)"),
        ],
    );
    let _ = std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o755));
}

/// A FIFO (or /dev/zero, a socket...) among the inputs: `check` must refuse
/// it, not block on it forever (or read without end).
#[test]
fn check_refuses_non_regular_files() {
    let dir = Scratch::new("fifo");
    let fifo = dir.0.join("pipe.yaml");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    let mut cmd = Command::new(redirector_bin());
    cmd.arg("check").arg(&dir.0).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    let out = wait_limited(cmd.spawn().unwrap(), Duration::from_secs(5)).expect("check must not block on a FIFO");
    assert_check_output(&dir.0, &out, &[format!("{}: not a regular file", fifo.display())]);
}
