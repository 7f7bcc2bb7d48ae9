//! Reading files and YAML documents into [`Config`].

use super::{
    Config, Dataplane, MeshExternalService, MeshHttpRoute, MeshMultiZoneService, MeshService,
    MeshTcpRoute, Origin, Problem, Severity,
    Tags, Text,
    fast,
    node::{Declined, Node, Rest},
    yaml::{self, BigNumber, Notes, tag_text},
};
use serde::Deserialize as _;
use serde::de::DeserializeOwned;
use serde_yaml::{Mapping, Value};
use std::{
    sync::Arc,
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
};

/// Largest input file accepted; larger ones are reported, not read.
const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// Kuma kinds that are read and accepted but have no effect here.
const IGNORED_KINDS: &[&str] = &[
    "Mesh",
    "MeshTimeout",
    "MeshRetry",
    "MeshCircuitBreaker",
    "MeshHealthCheck",
    "MeshAccessLog",
    "MeshTrafficPermission",
    "MeshLoadBalancingStrategy",
    "MeshFaultInjection",
    "MeshRateLimit",
    "MeshProxyPatch",
    "MeshTrace",
    "MeshMetric",
    "MeshTLS",
    "MeshPassthrough",
    "MeshIdentity",
    "MeshTrust",
    "MeshGateway",
    "TrafficRoute",
];

/// Reads a file, or every `.yaml`/`.yml` file below a directory (name order).
/// Returns what could be read and every problem met on the way.
pub fn load_path(path: &Path) -> (Config, Vec<Problem>) {
    let mut problems = Vec::new();
    let mut files = Vec::new();
    collect_files(path, &mut files, &mut problems, &mut Vec::new());
    if files.is_empty() && problems.is_empty() {
        problems.push(file_problem(path, "no .yaml or .yml files found"));
    }
    let mut config = Config::default();
    for file in files {
        match read_file(&file) {
            Ok(text) => load_into(&mut config, &file, &text, &mut problems),
            Err(message) => problems.push(file_problem(&file, message)),
        }
    }
    check_duplicates(&config, &mut problems);
    (config, problems)
}

thread_local! {
    /// The arena the fast reader's nodes live in, one per thread, emptied
    /// after each document: reading allocates nothing of its own, and a
    /// stream of one small document (a Kubernetes object) does not pay for a
    /// fresh arena.
    static ARENA: std::cell::Cell<Option<bumpalo::Bump>> = const { std::cell::Cell::new(None) };
}

/// An arena grown past this is not kept for the next stream.
const KEPT_ARENA: usize = 1 << 20;

/// This thread's arena, lent until dropped.
struct Lent(Option<bumpalo::Bump>);

impl Lent {
    fn new() -> Self {
        Self(Some(ARENA.take().unwrap_or_default()))
    }

    fn arena(&mut self) -> &mut bumpalo::Bump {
        self.0.get_or_insert_default()
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        if let Some(mut arena) = self.0.take().filter(|a| a.allocated_bytes() <= KEPT_ARENA) {
            arena.reset();
            ARENA.set(Some(arena));
        }
    }
}

/// Reads a document given as JSON (a Kubernetes object) as if it were the
/// YAML text of `file`: its tree is typed as the fast reader's, without
/// writing and reading text; what that declines is read as text.
pub fn load_json(file: &Path, document: &serde_json::Value) -> (Config, Vec<Problem>) {
    fn node<'a>(v: &'a serde_json::Value, arena: &'a bumpalo::Bump) -> Option<Node<'a>> {
        use serde_json::Value as J;
        Some(match v {
            J::Null => Node::Null,
            J::Bool(b) => Node::Bool(*b),
            J::Number(n) => Node::Int(n.as_u64()?),
            J::String(s) => Node::Str(s),
            J::Array(items) => {
                let mut out = bumpalo::collections::Vec::with_capacity_in(items.len(), arena);
                for item in items {
                    out.push(node(item, arena)?);
                }
                Node::Seq(out)
            }
            J::Object(entries) => {
                let mut out = bumpalo::collections::Vec::with_capacity_in(entries.len(), arena);
                for (k, item) in entries {
                    out.push((k.as_str(), node(item, arena)?));
                }
                Node::Map(out)
            }
        })
    }
    let file: Arc<Path> = Arc::from(file);
    let mut config = Config::default();
    let typed = {
        let mut lent = Lent::new();
        let arena = lent.arena();
        node(document, arena).is_some_and(|n| load_fast(&mut config, &file, &n).is_ok())
    };
    if !typed {
        return load_str(&file, &document.to_string());
    }
    let mut problems = Vec::new();
    check_duplicates(&config, &mut problems);
    (config, problems)
}

/// Reads YAML text as if it came from `file`.
pub fn load_str(file: &Path, text: &str) -> (Config, Vec<Problem>) {
    let mut config = Config::default();
    let mut problems = Vec::new();
    load_into(&mut config, file, text, &mut problems);
    check_duplicates(&config, &mut problems);
    (config, problems)
}

/// Collects the files below `path`. `within` holds the directories being
/// walked, by (device, inode), with their paths: a symlink back to one of
/// them is a loop, reported and not followed.
pub(crate) fn collect_files(path: &Path, files: &mut Vec<PathBuf>, problems: &mut Vec<Problem>, within: &mut Vec<((u64, u64), PathBuf)>) {
    use std::os::unix::fs::MetadataExt as _;
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) => {
            problems.push(file_problem(path, format!("cannot read: {e}")));
            return;
        }
    };
    if !meta.is_dir() {
        files.push(path.to_path_buf());
        return;
    }
    let id = (meta.dev(), meta.ino());
    if let Some((_, ancestor)) = within.iter().find(|(dir, _)| *dir == id) {
        problems.push(file_problem(path, format!("symlink loop: leads back to {}; not followed", ancestor.display())));
        return;
    }
    let entries = match std::fs::read_dir(path) {
        Ok(entries) => entries,
        Err(e) => {
            problems.push(file_problem(path, format!("cannot list directory: {e}")));
            return;
        }
    };
    let mut children: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    children.sort();
    for child in children {
        let name = child.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with('.') {
            continue;
        }
        if child.is_dir() {
            within.push((id, path.to_path_buf()));
            collect_files(&child, files, problems, within);
            within.pop();
        } else if name.ends_with(".yaml") || name.ends_with(".yml") {
            files.push(child);
        }
    }
}

pub(crate) fn read_file(file: &Path) -> Result<String, String> {
    use std::io::Read as _;
    let meta = std::fs::metadata(file).map_err(|e| format!("cannot read: {e}"))?;
    // A FIFO or device would block or never end.
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(format!(
            "file is {} bytes, larger than the {MAX_FILE_BYTES}-byte limit",
            meta.len()
        ));
    }
    let mut bytes = Vec::new();
    std::fs::File::open(file)
        .and_then(|f| f.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(format!("file grew past the {MAX_FILE_BYTES}-byte limit while being read"));
    }
    String::from_utf8(bytes).map_err(|e| format!("not UTF-8 text (byte {})", e.utf8_error().valid_up_to()))
}

pub(crate) fn file_problem(file: &Path, message: impl Into<String>) -> Problem {
    Problem {
        severity: Severity::Error,
        file: file.to_path_buf(),
        resource: String::new(),
        path: String::new(),
        message: message.into(),
    }
}

pub(crate) fn load_into(config: &mut Config, file: &Path, text: &str, problems: &mut Vec<Problem>) {
    let file: Arc<Path> = file.into();
    let file = &file;
    // Editors on some systems start UTF-8 files with a byte-order mark.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if !load_in_parallel(config, file, text, problems) {
        load_stream(config, file, text, 0, problems);
    }
}

/// Loads the documents of `text`, the first numbered `first`. Returns how
/// many documents the stream had, and whether it ended in a syntax error.
///
/// Each document is read by the fast reader if it can, else by libyaml on
/// its own; a document libyaml finds broken on its own (a syntax error ends
/// a stream) is read again with the rest of the stream by libyaml. Only a
/// broken stream's messages name lines, so only the rest is read in place.
fn load_stream(config: &mut Config, file: &Arc<Path>, text: &str, first: usize, problems: &mut Vec<Problem>) -> (usize, bool) {
    let Some(documents) = fast::split(text) else {
        if let Err(message) = yaml::check_flow_depth(text, 1) {
            problems.push(file_problem(file, message));
            return (0, true);
        }
        return load_libyaml(config, file, text, first, problems);
    };
    // Lines before an offset, counted on as far as needed.
    let (mut counted, mut lines) = (0, 0);
    let mut line_count = |offset: usize| {
        lines += text[counted..offset].bytes().filter(|&b| b == b'\n').count();
        counted = offset;
        lines
    };
    let mut lent = Lent::new();
    let arena = lent.arena();
    for (k, document) in documents.iter().enumerate() {
        let index = first + k;
        let span = &text[document.span.clone()];
        let loaded = match fast::read(span, document.marked, &*arena) {
            Some(Node::Null) => true,
            Some(node) => load_fast(config, file, &node).is_ok(),
            None => false,
        };
        arena.reset();
        if loaded {
            continue;
        }
        // The fast reader bounds nesting itself; libyaml needs the check.
        let lines_before = line_count(document.span.start);
        if let Err(message) = yaml::check_flow_depth(span, lines_before + 1) {
            problems.push(file_problem(file, message));
            continue;
        }
        let (mut one, mut found) = (Config::default(), Vec::new());
        if load_libyaml(&mut one, file, span, index, &mut found) == (1, false) {
            config.append(one);
            problems.extend(found);
            continue;
        }
        // libyaml's messages name lines: read the rest where it stands.
        let rest = "\n".repeat(lines_before) + &text[document.span.start..];
        let (count, broken) = load_libyaml(config, file, &rest, index, problems);
        return (k + count, broken);
    }
    (documents.len(), false)
}

/// [`load_stream`] by libyaml alone.
fn load_libyaml(config: &mut Config, file: &Arc<Path>, text: &str, first: usize, problems: &mut Vec<Problem>) -> (usize, bool) {
    let mut count = 0;
    for (i, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let index = first + i;
        count = i + 1;
        let (value, notes) = match yaml::read_document(document) {
            Ok(read) => read,
            Err(e) => {
                problems.push(file_problem(file, format!("document {}: invalid YAML: {e}", index + 1)));
                // The YAML stream cannot be resynchronised after a syntax error.
                return (count, true);
            }
        };
        if value.is_null() {
            continue;
        }
        load_document(config, file, index, value, &notes, problems);
    }
    (count, false)
}

/// The CPUs this process may use, asked once: `available_parallelism`
/// reads the cgroup's CPU quota from files on every call, which costs more
/// than parsing a small document.
pub(crate) fn cpus() -> usize {
    static CPUS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CPUS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// `f` of every item, on up to one thread per CPU, results in the items'
/// order; threads take the next item as they finish one.
pub(crate) fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = cpus().min(items.len());
    if threads <= 1 {
        return items.iter().map(f).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut done: Vec<(usize, R)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut out = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(item) = items.get(i) else { break out };
                        out.push((i, f(item)));
                    }
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))).collect()
    });
    done.sort_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, r)| r).collect()
}

/// `f` of `items` cut into one run per CPU, the runs in parallel, results in
/// order; fewer than `at_least` items are one run on this thread (starting
/// threads would cost more than it saves).
pub(crate) fn par_chunks<T: Sync, R: Send>(items: &[T], at_least: usize, f: impl Fn(&[T]) -> R + Sync) -> Vec<R> {
    let threads = cpus();
    if items.len() < at_least || threads < 2 {
        return vec![f(items)];
    }
    let chunks: Vec<&[T]> = items.chunks(items.len().div_ceil(threads)).collect();
    par_map(&chunks, |chunk| f(chunk))
}

/// Files at least this large are parsed in pieces, one per CPU.
const PARALLEL_BYTES: usize = 256 * 1024;

/// Parses a large file in pieces on one thread per CPU, cut at document
/// start markers (`---` at the start of a line, which ends any node) where
/// [`fast::split`] cuts the stream. Each piece's documents are numbered on
/// from the documents before it; if any piece's count is not what the cut
/// says (a syntax error), nothing of the pieces is kept and `false` says to
/// read the file as one stream. Files with end markers or directives are
/// read as one stream too. Either way the result is the one stream's.
fn load_in_parallel(config: &mut Config, file: &Arc<Path>, text: &str, problems: &mut Vec<Problem>) -> bool {
    let threads = cpus();
    if threads < 2 || text.len() < PARALLEL_BYTES {
        return false;
    }
    // End markers and directives: documents need not start at markers.
    let Some(documents) = fast::split(text) else { return false };
    // Pieces of about equal size, each a run of whole documents (so each,
    // but maybe the first, starts at a marker): (text, first document's
    // number, documents).
    let target = text.len() / threads + 1;
    let mut pieces: Vec<(&str, usize, usize)> = Vec::new();
    let (mut cut, mut first) = (0, 0);
    for (k, document) in documents.iter().enumerate() {
        let start = document.span.start;
        // Only the first document can start at 0, unmarked.
        if start >= cut + target {
            pieces.push((&text[cut..start], first, k - first));
            (cut, first) = (start, k);
        }
    }
    if pieces.is_empty() {
        return false;
    }
    pieces.push((&text[cut..], first, documents.len() - first));
    let loaded: Vec<(Config, Vec<Problem>, usize, bool)> = par_map(&pieces, |&(piece, first, _)| {
        let (mut config, mut problems) = (Config::default(), Vec::new());
        let (count, broken) = load_stream(&mut config, file, piece, first, &mut problems);
        (config, problems, count, broken)
    });
    if loaded.iter().zip(&pieces).any(|((_, _, count, broken), (_, _, want))| *broken || count != want) {
        return false;
    }
    for (piece, piece_problems, _, _) in loaded {
        config.append(piece);
        problems.extend(piece_problems);
    }
    true
}

/// The envelope of one document, in either form, and what is left of it.
struct Envelope {
    origin: Origin,
    rest: Mapping,
}

fn load_document(
    config: &mut Config,
    file: &Arc<Path>,
    index: usize,
    value: Value,
    notes: &Notes,
    problems: &mut Vec<Problem>,
) {
    let problem = |resource: &str, path: &str, message: String| Problem {
        severity: Severity::Error,
        file: file.to_path_buf(),
        resource: resource.to_string(),
        path: path.to_string(),
        message,
    };
    let Value::Mapping(map) = value else {
        let message =
            format!("document {}: expected a mapping with `type` (universal) or `kind` (Kubernetes)", index + 1);
        problems.push(problem("", "", message));
        return;
    };
    let env = match envelope(file, index, map, notes) {
        Ok(env) => env,
        Err((path, message)) => {
            problems.push(problem("", &path, message));
            return;
        }
    };
    // No Kuma field gives a tag a meaning, and the typed fields would drop it
    // without a word: every tag is an error.
    if !notes.tags.is_empty() {
        let resource = env.origin.display_name();
        for (path, tag) in &notes.tags {
            problems.push(problem(&resource, path, format!("unknown YAML tag {tag}")));
        }
        return;
    }
    let resource = env.origin.display_name();
    if let Err((path, message)) = add_resource(config, env.origin, Parsed { rest: env.rest, big: &notes.big_numbers }) {
        problems.push(problem(&resource, &path, message));
    }
}

/// [`load_document`] for a document the fast reader read: adds its resource
/// when every step goes as it would there. At the first problem it stops
/// with nothing added (`Declined`), and the document is read again by
/// libyaml and [`load_document`], which report the problem.
fn load_fast(config: &mut Config, file: &Arc<Path>, doc: &Node<'_>) -> Result<(), Declined> {
    let Node::Map(entries) = doc else { return Err(Declined) };
    let text = |node: Option<&Node<'_>>| match node {
        None | Some(Node::Null) => Ok(None),
        Some(Node::Str(s)) => Ok(Some(Text::from(*s))),
        Some(_) => Err(Declined),
    };
    let labels = |node: Option<&Node<'_>>| match node {
        None | Some(Node::Null) => Ok(Tags::new()),
        Some(node) => Tags::deserialize(node),
    };
    let named = |name: Option<Text>| name.filter(|n| !n.is_empty()).ok_or(Declined);
    let kubernetes = doc.get("apiVersion").is_some() || doc.get("metadata").is_some();
    let (origin, envelope): (Origin, &[&str]) = if kubernetes {
        if text(doc.get("apiVersion"))?.as_deref() != Some("kuma.io/v1alpha1") {
            return Err(Declined);
        }
        let kind = text(doc.get("kind"))?.ok_or(Declined)?;
        let meta @ Node::Map(_) = doc.get("metadata").ok_or(Declined)? else { return Err(Declined) };
        let name = named(text(meta.get("name"))?)?;
        let namespace = text(meta.get("namespace"))?;
        let labels = labels(meta.get("labels"))?;
        let mesh = text(doc.get("mesh"))?.or_else(|| labels.get("kuma.io/mesh").cloned()).unwrap_or_else(|| "default".into());
        (Origin::new(file.clone(), &kind, name, namespace, mesh, labels, true), &["apiVersion", "kind", "metadata", "mesh"])
    } else {
        let kind = text(doc.get("type"))?.ok_or(Declined)?;
        let name = named(text(doc.get("name"))?)?;
        let mesh = text(doc.get("mesh"))?.unwrap_or_else(|| "default".into());
        let labels = labels(doc.get("labels"))?;
        let origin = Origin::new(file.clone(), &kind, name, None, mesh, labels, false);
        (origin, &["type", "name", "mesh", "labels", "creationTime", "modificationTime"])
    };
    let rest = entries.iter().filter(|(k, _)| !envelope.contains(k)).map(|(k, v)| (*k, v)).collect();
    add_resource(config, origin, Rest(rest))
}

/// A document's body, the envelope taken off, to be typed: read by libyaml
/// ([`Parsed`]: errors name the field) or by the fast reader ([`Rest`]: any
/// problem declines the document).
trait Body: Sized {
    type Error;
    /// `spec` (required) and, where `with_status`, `status` (its default
    /// when absent); nothing else.
    fn spec<S: DeserializeOwned, T: DeserializeOwned + Default>(self, with_status: bool) -> Result<(S, T), Self::Error>;
    /// The whole body as one value (a Dataplane in universal form).
    fn whole<S: DeserializeOwned>(self) -> Result<S, Self::Error>;
    /// The error for a kind this version does not read.
    fn unknown(origin: &Origin) -> Self::Error;
}

/// A body libyaml read, with the numbers beyond 64 bits it noted.
struct Parsed<'b> {
    rest: Mapping,
    big: &'b BigNumbers,
}

impl Body for Parsed<'_> {
    /// The field path and what is wrong there.
    type Error = (String, String);

    fn spec<S: DeserializeOwned, T: DeserializeOwned + Default>(mut self, with_status: bool) -> Result<(S, T), Self::Error> {
        let spec = self.rest.remove("spec");
        let status = if with_status { self.rest.remove("status") } else { None };
        if let Some((key, _)) = self.rest.into_iter().next() {
            let key = key.as_str().map(str::to_string).unwrap_or_else(|| format!("{key:?}"));
            return Err((key, "unknown field".into()));
        }
        let spec = match spec {
            None | Some(Value::Null) => return Err(("spec".into(), "missing".into())),
            Some(v) => typed(v, "spec", self.big)?,
        };
        let status = match status {
            None | Some(Value::Null) => T::default(),
            Some(v) => typed(v, "status", self.big)?,
        };
        Ok((spec, status))
    }

    fn whole<S: DeserializeOwned>(self) -> Result<S, Self::Error> {
        typed(Value::Mapping(self.rest), "", self.big)
    }

    fn unknown(origin: &Origin) -> Self::Error {
        let path = if origin.kubernetes { "kind" } else { "type" };
        (path.into(), format!("unknown resource type {:?}", origin.kind.as_str()))
    }
}

impl Body for Rest<'_, '_> {
    type Error = Declined;

    fn spec<S: DeserializeOwned, T: DeserializeOwned + Default>(self, with_status: bool) -> Result<(S, T), Declined> {
        let (mut spec, mut status) = (None, None);
        for (key, value) in self.0 {
            match key {
                "spec" => spec = Some(value),
                "status" if with_status => status = Some(value),
                _ => return Err(Declined),
            }
        }
        let spec = spec.filter(|s| !matches!(s, Node::Null)).ok_or(Declined)?;
        let status = match status {
            None | Some(Node::Null) => T::default(),
            Some(node) => T::deserialize(node)?,
        };
        Ok((S::deserialize(spec)?, status))
    }

    fn whole<S: DeserializeOwned>(self) -> Result<S, Declined> {
        S::deserialize(self)
    }

    fn unknown(_: &Origin) -> Declined {
        Declined
    }
}

/// Types `body` as the kind `origin` names and adds the resource to `config`.
fn add_resource<B: Body>(config: &mut Config, origin: Origin, body: B) -> Result<(), B::Error> {
    match origin.kind.as_str() {
        "MeshTCPRoute" => {
            let (spec, ()) = body.spec(false)?;
            config.routes.push(Arc::new(MeshTcpRoute { origin, spec }));
        }
        "MeshService" => {
            let (spec, status) = body.spec(true)?;
            config.services.push(Arc::new(MeshService { origin, spec, status }));
        }
        "Dataplane" => {
            let spec = if origin.kubernetes { body.spec::<_, ()>(false)?.0 } else { body.whole()? };
            config.dataplanes.push(Arc::new(Dataplane { origin, spec }));
        }
        "MeshExternalService" => {
            let (spec, status) = body.spec(true)?;
            config.external_services.push(Arc::new(MeshExternalService { origin, spec, status }));
        }
        "MeshMultiZoneService" => {
            let (spec, status) = body.spec(true)?;
            config.multizone_services.push(Arc::new(MeshMultiZoneService { origin, spec, status }));
        }
        "MeshHTTPRoute" => {
            let (spec, ()) = body.spec(false)?;
            config.http_routes.push(Arc::new(MeshHttpRoute { origin, spec }));
        }
        kind if IGNORED_KINDS.contains(&kind) => config.ignored.push(origin),
        _ => return Err(B::unknown(&origin)),
    }
    Ok(())
}

/// Numbers beyond 64 bits, by field path.
type BigNumbers = HashMap<String, BigNumber>;

fn envelope(file: &Arc<Path>, index: usize, mut map: Mapping, notes: &Notes) -> Result<Envelope, (String, String)> {
    let take_str = |map: &mut Mapping, key: &str, path: &str| -> Result<Option<String>, (String, String)> {
        match map.remove(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(Value::Tagged(t)) => Err((
                path.to_string(),
                format!("expected a string, found a tagged value (unknown YAML tag {})", tag_text(&t.tag)),
            )),
            Some(other) => Err((path.to_string(), format!("expected a string, found {}", kind_of(&other)))),
        }
    };
    let take_labels = |value: Option<Value>, path: &str| -> Result<BTreeMap<Text, Text>, (String, String)> {
        match value {
            None | Some(Value::Null) => Ok(BTreeMap::new()),
            Some(v) => typed(v, path, &notes.big_numbers),
        }
    };
    // Kuma's `ValidateMeta`: the name "cannot be empty".
    let non_empty = |name: String, kind: &str, path: &str| {
        if name.is_empty() { Err((path.to_string(), format!("{kind}: cannot be empty"))) } else { Ok(name) }
    };
    if map.contains_key("apiVersion") || map.contains_key("metadata") {
        let api = take_str(&mut map, "apiVersion", "apiVersion")?;
        if api.as_deref() != Some("kuma.io/v1alpha1") {
            return Err(("apiVersion".into(), format!("expected \"kuma.io/v1alpha1\", found {api:?}")));
        }
        let kind = take_str(&mut map, "kind", "kind")?
            .ok_or_else(|| ("kind".to_string(), "missing".to_string()))?;
        let mut meta = match map.remove("metadata") {
            Some(Value::Mapping(meta)) => meta,
            Some(Value::Tagged(t)) => {
                return Err(("metadata".into(), format!("unknown YAML tag {}", tag_text(&t.tag))));
            }
            _ => return Err(("metadata".into(), "missing or not a mapping".into())),
        };
        let name = take_str(&mut meta, "name", "metadata.name")?
            .ok_or_else(|| ("metadata.name".to_string(), "missing".to_string()))?;
        let name = non_empty(name, &kind, "metadata.name")?;
        let namespace = take_str(&mut meta, "namespace", "metadata.namespace")?;
        let labels = take_labels(meta.remove("labels"), "metadata.labels")?;
        // Dataplane objects carry `mesh` at top level; others use the label.
        let mesh = take_str(&mut map, "mesh", "mesh")?
            .map(Text::from)
            .or_else(|| labels.get("kuma.io/mesh").cloned())
            .unwrap_or_else(|| "default".into());
        let origin = Origin::new(file.clone(), &kind, name.into(), namespace.map(Text::from), mesh, labels.into(), true);
        return Ok(Envelope { origin, rest: map });
    }
    let kind = take_str(&mut map, "type", "type")?.ok_or_else(|| {
        (String::new(), format!("document {}: missing `type` (universal form) or `apiVersion`/`kind` (Kubernetes form)", index + 1))
    })?;
    let name = take_str(&mut map, "name", "name")?
        .ok_or_else(|| ("name".to_string(), format!("{kind}: missing")))?;
    let name = non_empty(name, &kind, "name")?;
    let mesh = take_str(&mut map, "mesh", "mesh")?.unwrap_or_else(|| "default".into());
    let labels = take_labels(map.remove("labels"), "labels")?;
    for key in ["creationTime", "modificationTime"] {
        map.remove(key);
    }
    let origin = Origin::new(file.clone(), &kind, name.into(), None, mesh.into(), labels.into(), false);
    Ok(Envelope { origin, rest: map })
}

/// Deserializes `value`, reporting the exact field path on failure. A number
/// beyond 64 bits (one of `big`) where a number may go is out of range.
fn typed<T: DeserializeOwned>(value: Value, prefix: &str, big: &BigNumbers) -> Result<T, (String, String)> {
    // Tracking the path costs; only a failure needs it.
    if let Ok(typed) = T::deserialize(&value) {
        return Ok(typed);
    }
    let error = match serde_path_to_error::deserialize(&value) {
        Ok(typed) => return Ok(typed),
        Err(e) => e,
    };
    let path = full_path(prefix, error.path());
    let Some(number) = big.get(&path) else {
        return Err((path, error.into_inner().to_string()));
    };
    // The number is held as a float. Would an integer do there? Try 0: if it
    // would, the number is out of range; if not, the type is what is wrong,
    // and serde's message for an integer is shown with the digits written.
    let mut retry = value;
    if let Some(slot) = value_at_mut(&mut retry, error.path()) {
        *slot = Value::from(0);
    }
    match serde_path_to_error::deserialize::<_, T>(&retry) {
        Err(again) if again.path().to_string() == error.path().to_string() => {
            let message = match number {
                BigNumber::Integer(text) => {
                    again.into_inner().to_string().replacen("integer `0`", &format!("integer `{text}`"), 1)
                }
                BigNumber::Float(_) => error.into_inner().to_string(),
            };
            Err((path, message))
        }
        _ => Err((path, format!("number out of range: {number} does not fit in 64 bits"))),
    }
}

/// `inner` (a path inside a value read at `prefix`) as a path in the document.
fn full_path(prefix: &str, inner: &serde_path_to_error::Path) -> String {
    let inner = inner.to_string();
    match (prefix.is_empty(), inner == ".") {
        (_, true) => prefix.to_string(),
        (true, false) => inner,
        (false, false) => format!("{prefix}.{inner}"),
    }
}

/// The node of `value` at `path`, if the path leads to one.
fn value_at_mut<'v>(value: &'v mut Value, path: &serde_path_to_error::Path) -> Option<&'v mut Value> {
    use serde_path_to_error::Segment;
    let mut node = value;
    for segment in path {
        node = match segment {
            Segment::Seq { index } => node.as_sequence_mut()?.get_mut(*index)?,
            Segment::Map { key } => node.as_mapping_mut()?.get_mut(key.as_str())?,
            Segment::Enum { .. } => node,
            Segment::Unknown => return None,
        };
    }
    Some(node)
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

pub(crate) fn check_duplicates(config: &Config, problems: &mut Vec<Problem>) {
    type Key<'a> = (&'a str, &'a str, Option<&'a str>, &'a str);
    let mut seen: HashMap<Key<'_>, &Origin> = HashMap::with_capacity(config.services.len() + config.dataplanes.len() + config.routes.len());
    let origins = config
        .routes
        .iter()
        .map(|r| &r.origin)
        .chain(config.services.iter().map(|s| &s.origin))
        .chain(config.dataplanes.iter().map(|d| &d.origin))
        .chain(config.external_services.iter().map(|s| &s.origin))
        .chain(config.multizone_services.iter().map(|s| &s.origin))
        .chain(config.http_routes.iter().map(|r| &r.origin))
        .chain(config.ignored.iter());
    for origin in origins {
        let key = (origin.kind.as_str(), origin.name.as_str(), origin.namespace.as_deref(), origin.mesh.as_str());
        if let Some(first) = seen.get(&key) {
            problems.push(duplicate(origin, &first.file));
        } else {
            seen.insert(key, origin);
        }
    }
}

/// The error for a second definition (`origin`) of a resource first defined in `first`.
pub(crate) fn duplicate(origin: &Origin, first: &Path) -> Problem {
    Problem {
        severity: Severity::Error,
        file: origin.file.to_path_buf(),
        resource: origin.display_name().into(),
        path: "name".into(),
        message: format!("duplicate resource: {} in mesh {:?} is also defined in {}", origin.display_name(), origin.mesh, first.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sequential(text: &str) -> (Config, Vec<Problem>) {
        let (mut config, mut problems) = (Config::default(), Vec::new());
        load_stream(&mut config, &Arc::from(Path::new("f.yaml")), text, 0, &mut problems);
        (config, problems)
    }

    fn parallel(text: &str) -> Option<(Config, Vec<Problem>)> {
        let (mut config, mut problems) = (Config::default(), Vec::new());
        load_in_parallel(&mut config, &Arc::from(Path::new("f.yaml")), text, &mut problems).then_some((config, problems))
    }

    /// A large stream with comments, empty documents, a bare first document,
    /// block scalars and documents with errors (numbered in the messages).
    fn big(first_bare: bool, broken_at: Option<usize>) -> String {
        let mut text = String::new();
        if first_bare {
            text.push_str("type: Mesh\nname: bare\n");
        } else {
            text.push_str("# a comment before the first marker\n");
        }
        for i in 0..8000 {
            text.push_str("---\n");
            match i % 7 {
                0 => text.push_str("# only a comment\n"),
                1 => text.push_str(&format!("type: MeshService\nname: s-{i}\nspec: {{ports: [{{port: 80, targetPort: 8080}}]}}\nlabels: {{note: x}}\n")),
                2 => text.push_str(&format!("type: Dataplane\nname: d-{i}\nnetworking: {{address: 10.0.0.1, inbound: [{{port: 1, tags: {{app: a}}}}]}}\n")),
                3 => text.push_str(&format!("type: MeshService\nname: t-{i}\nspec: {{unknownField: 1}}\n")),
                4 => text.push_str(&format!("type: Mesh\nname: m-{i}\nmeta: |\n  ---\n  not a marker\n")),
                5 => text.push_str("name: without-a-type\n"),
                _ => text.push_str(&format!("type: MeshTCPRoute\nname: r-{i}\nspec: {{targetRef: {{kind: Mesh}}, to: []}}\n")),
            }
            if broken_at == Some(i) {
                text.push_str("key: [unclosed\n");
            }
        }
        text
    }

    #[test]
    fn a_large_stream_loads_in_pieces_as_in_one() {
        for first_bare in [false, true] {
            let text = big(first_bare, None);
            assert!(text.len() >= PARALLEL_BYTES);
            let want = sequential(&text);
            assert!(want.1.iter().any(|p| p.message.starts_with("document 3")), "the stream has problems numbered by document: {:?}", &want.1[..3]);
            if std::thread::available_parallelism().map_or(1, |n| n.get()) > 1 {
                let got = parallel(&text).expect("read in pieces");
                assert_eq!(got, want);
            }
        }
    }

    #[test]
    fn the_fast_reader_loads_a_stream_as_libyaml_does() {
        for (first_bare, broken_at) in [(false, None), (true, None), (false, Some(3000)), (true, Some(0))] {
            let text = big(first_bare, broken_at);
            let (mut fast, mut fast_problems) = (Config::default(), Vec::new());
            let fast_count = load_stream(&mut fast, &Arc::from(Path::new("f.yaml")), &text, 5, &mut fast_problems);
            let (mut slow, mut slow_problems) = (Config::default(), Vec::new());
            let slow_count = load_libyaml(&mut slow, &Arc::from(Path::new("f.yaml")), &text, 5, &mut slow_problems);
            assert_eq!(fast_count, slow_count);
            assert_eq!((fast, fast_problems), (slow, slow_problems));
        }
    }

    /// Resource documents of every kind and form, each slot filled from a
    /// pool of right and wrong values (wrong types, out of range, empty,
    /// missing, unknown fields).
    fn resource_document() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        // Mostly right values, so that many documents are typed at all.
        let pick = |good: &'static [&'static str], bad: &'static [&'static str]| prop_oneof![12 => prop::sample::select(good), 1 => prop::sample::select(bad)];
        let name = pick(&["s-1", "a", "\"q\""], &["''", "null", "80", "[x]"]);
        let port = pick(&["80", "8080", "'80'"], &["0", "70000", "-1", "x", "null", "4294967296"]);
        let ip = pick(&["10.0.0.1", "127.40.0.1", "'10.0.0.2'"], &["x", "1.2", "null"]);
        let kind = pick(&["Mesh", "MeshService", "MeshSubset", "Dataplane"], &["Nope", "meshservice", "null"]);
        let extra = pick(&["", "", ", labels: {a: b}", ", namespace: ns", ", sectionName: main", ", _port: 80", ", _version: v1", ", weight: 5"], &[", unknown: 1", ", labels: {a: 1}"]);
        let body = (name.clone(), port.clone(), ip, kind, extra, port, name.clone()).prop_map(|(name, port, ip, kind, extra, port2, name2)| {
            [
                format!("type: MeshService\nname: {name}\nspec: {{selector: {{dataplaneTags: {{app: {name2}}}}}, ports: [{{port: {port}, targetPort: {port2}{extra}}}]}}\nstatus: {{vips: [{{ip: {ip}}}]}}\n"),
                format!("type: MeshTCPRoute\nname: {name}\nspec:\n  targetRef: {{kind: {kind}{extra}}}\n  to:\n  - targetRef: {{kind: MeshService, name: {name2}}}\n    rules:\n    - default:\n        backendRefs:\n        - {{kind: {kind}, name: {name2}, port: {port}{extra}}}\n"),
                format!("type: Dataplane\nname: {name}\nnetworking:\n  address: {ip}\n  inbound:\n  - port: {port}\n    tags: {{kuma.io/service: {name2}{extra}}}\n"),
                format!("apiVersion: kuma.io/v1alpha1\nkind: MeshService\nmetadata:\n  name: {name}\n  namespace: {name2}\n  labels: {{kuma.io/mesh: {name2}}}\nspec:\n  ports:\n  - port: {port}\n    targetPort: {port2}{}\n", extra.replace(", ", "\n    ")),
                format!("apiVersion: v1\nkind: MeshService\nmetadata: {{name: {name}}}\nspec: {{}}\n"),
                format!("type: MeshExternalService\nname: {name}\nspec: {{match: {{type: HostnameGenerator, port: {port}, protocol: tcp}}, endpoints: [{{address: {ip}, port: {port2}}}]}}\nstatus: {{vip: {{ip: {ip}}}}}\n"),
                format!("type: MeshMultiZoneService\nname: {name}\nspec: {{selector: {{meshService: {{matchLabels: {{app: {name2}}}}}}}, ports: [{{port: {port}{extra}}}]}}\n"),
                format!("type: MeshHTTPRoute\nname: {name}\nspec: {{targetRef: {{kind: {kind}}}, to: [{{targetRef: {{kind: MeshService, name: {name2}}}}}]}}\n"),
                format!("type: {kind}\nname: {name}\nmesh: {name2}\nspec: {{}}\n"),
                format!("type: MeshService\nname: {name}\nspec: {{ports: [{{port: {port}}}]}}\nstatus: {{}}\nextra: {port2}\n"),
                format!("type: MeshTCPRoute\nname: {name}\nspec: {{targetRef: {{kind: Mesh}}, to: {name2}}}\nstatus: {{}}\n"),
                format!("type: MeshTCPRoute\nname: {name}\nspec: {{targetRef: {{kind: Mesh}}, to: {name2}}}\n"),
            ]
        });
        (body, 0..12usize).prop_map(|(docs, i)| docs[i].clone())
    }

    /// A document typed by the fast path gives what libyaml and the slow
    /// path give, problems included; a fifth of them at least must go the
    /// fast way, or the test proves nothing.
    #[test]
    fn the_fast_path_types_resources_as_the_slow_path() {
        use proptest::strategy::{Strategy as _, ValueTree as _};
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let strategy = resource_document();
        let file: Arc<Path> = Arc::from(Path::new("f.yaml"));
        let (mut cases, mut fast_typed) = (0, 0);
        for _ in 0..4000 {
            let text = format!("---\n{}", strategy.new_tree(&mut runner).unwrap().current());
            cases += 1;
            if let Some(node) = fast::read(&text, true, &bumpalo::Bump::new()) {
                let mut scratch = Config::default();
                fast_typed += usize::from(load_fast(&mut scratch, &file, &node).is_ok());
            }
            let (mut fast, mut fast_problems) = (Config::default(), Vec::new());
            let fast_count = load_stream(&mut fast, &file, &text, 0, &mut fast_problems);
            let (mut slow, mut slow_problems) = (Config::default(), Vec::new());
            let slow_count = load_libyaml(&mut slow, &file, &text, 0, &mut slow_problems);
            assert_eq!((fast_count, &fast, &fast_problems), (slow_count, &slow, &slow_problems), "document:\n{text}");
        }
        assert!(fast_typed * 5 > cases, "{fast_typed} of {cases} documents typed fast");
    }

    #[test]
    fn a_syntax_error_falls_back_to_one_stream() {
        let text = big(false, Some(7000));
        assert!(parallel(&text).is_none(), "a piece ended in a syntax error");
        let mut config = Config::default();
        let mut problems = Vec::new();
        load_into(&mut config, Path::new("f.yaml"), &text, &mut problems);
        assert_eq!((config, problems), sequential(&text));
    }

    #[test]
    fn end_markers_and_directives_are_read_as_one_stream() {
        let text = big(false, None) + "...\n";
        assert!(parallel(&text).is_none());
        let text = "%YAML 1.2\n".to_string() + &big(false, None);
        assert!(parallel(&text).is_none());
    }
}
