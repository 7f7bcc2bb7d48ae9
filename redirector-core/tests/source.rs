//! `source::FileSource` against `model::load_path` and `Config::validate`:
//! after any sequence of file writes, renames and deletions, an incremental
//! read gives exactly the configuration and problems (in order) that reading
//! and validating everything from scratch gives, and reads only what changed.

mod common;

use proptest::prelude::*;
use redirector_core::{model, source::FileSource};
use std::path::{Path, PathBuf};

/// Documents a file may hold: valid resources, a duplicate of another
/// file's name, a validation error, broken YAML.
const DOCUMENTS: [&str; 6] = [
    "type: MeshService\nname: a\nspec: {selector: {dataplaneTags: {app: a}}, ports: [{port: 80, targetPort: 80}]}\nstatus: {vips: [{ip: 10.0.0.1}]}\n",
    "type: MeshService\nname: b\nspec: {selector: {dataplaneTags: {app: b}}, ports: [{port: 80, targetPort: 80}]}\nstatus: {vips: [{ip: 10.0.0.2}]}\n",
    "type: Dataplane\nname: d1\nnetworking: {address: 10.1.0.1, inbound: [{port: 80, tags: {app: b}}]}\n",
    "type: MeshTCPRoute\nname: r\nspec: {targetRef: {kind: Mesh}, to: [{targetRef: {kind: MeshService, name: a}, rules: [{default: {backendRefs: [{kind: MeshService, name: b, port: 80, weight: 7}]}}]}]}\n",
    "type: MeshTCPRoute\nname: bad\nspec: {to: []}\n",
    "type: MeshService\nname: [unclosed\n",
];

const FILES: [&str; 5] = ["a.yaml", "b.yml", "sub/c.yaml", "sub/deeper/d.yaml", "e.yaml"];

#[derive(Clone, Debug)]
enum Step {
    /// Write (atomically, by rename) these documents to file `n`.
    Write(usize, Vec<usize>),
    /// Overwrite file `n` in place with the same length (a different inode is not taken).
    Rewrite(usize, Vec<usize>),
    Delete(usize),
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    let docs = prop::collection::vec(0..DOCUMENTS.len(), 0..3);
    let step = prop_oneof![
        (0..FILES.len(), docs.clone()).prop_map(|(f, d)| Step::Write(f, d)),
        (0..FILES.len(), docs).prop_map(|(f, d)| Step::Rewrite(f, d)),
        (0..FILES.len()).prop_map(Step::Delete),
    ];
    prop::collection::vec(step, 1..12)
}

fn text(docs: &[usize]) -> String {
    docs.iter().map(|&d| DOCUMENTS[d]).collect::<Vec<_>>().join("---\n")
}

fn apply(root: &Path, step: &Step) {
    match step {
        Step::Write(f, docs) => {
            let path = root.join(FILES[*f]);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            let staging = root.join(".staging");
            std::fs::write(&staging, text(docs)).unwrap();
            std::fs::rename(&staging, &path).unwrap();
        }
        Step::Rewrite(f, docs) => {
            let path = root.join(FILES[*f]);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, text(docs)).unwrap();
        }
        Step::Delete(f) => {
            let _ = std::fs::remove_file(root.join(FILES[*f]));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn an_incremental_read_equals_a_read_from_scratch(sequence in steps()) {
        let dir = common::Scratch::new("source-prop");
        let root: PathBuf = dir.0.clone();
        let mut source = FileSource::new(&root);
        for step in &sequence {
            apply(&root, step);
            let (config, problems, _) = source.read_validated();
            let (want_config, mut want_problems) = model::load_path(&root);
            want_problems.extend(want_config.validate());
            prop_assert_eq!(&config, &want_config, "after {:?}", step);
            let (got, want): (Vec<String>, Vec<String>) = (problems.iter().map(|p| p.to_string()).collect(), want_problems.iter().map(|p| p.to_string()).collect());
            prop_assert_eq!(got, want, "after {:?}", step);
        }
    }
}

#[test]
fn only_changed_files_are_parsed_again() {
    let dir = common::Scratch::new("source-stats");
    dir.write("a.yaml", DOCUMENTS[0]);
    dir.write("sub/b.yaml", DOCUMENTS[1]);
    let mut source = FileSource::new(&dir.0);
    let (_, _, first) = source.read();
    assert_eq!((first.files, first.read, first.parsed), (2, 2, 2));
    let (_, _, again) = source.read();
    assert_eq!((again.read, again.parsed), (0, 0), "nothing changed");
    apply(&dir.0, &Step::Write(0, vec![3]));
    let (config, _, edit) = source.read();
    assert_eq!((edit.files, edit.read, edit.parsed), (2, 1, 1), "one file replaced");
    assert_eq!(config.routes.len(), 1);
    // Same content under a new inode: read, not parsed.
    apply(&dir.0, &Step::Write(0, vec![3]));
    let (_, _, same) = source.read();
    assert_eq!((same.read, same.parsed), (1, 0));
    std::fs::remove_file(dir.0.join("sub/b.yaml")).unwrap();
    let (config, _, gone) = source.read();
    assert_eq!((gone.files, config.services.len(), config.routes.len()), (1, 0, 1), "a removed file's resources are gone");
}
