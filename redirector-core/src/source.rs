//! Sources of resources. [`FileSource`]: a file or directory of YAML, kept
//! between reads so that a change costs what changed: only files whose
//! identity, size or times moved are read again, only those whose content
//! changed are parsed again, and the resources of every other file are
//! reused as they are (shared, not copied).
//!
//! [`kubernetes`]: Kubernetes objects as the Kuma resources kuma-cp makes
//! of them, and [`kubernetes::ClusterSource`], the cluster as a source.

pub mod kubernetes;

use crate::{
    model::{
        Config, Problem,
        load::{check_duplicates, collect_files, file_problem, load_into, par_map, read_file},
        validate::validate_by_kind,
    },
    store::{Event, Key, Resource, file_source, resources},
};
use std::{
    collections::{BTreeMap, HashMap},
    hash::{Hash as _, Hasher as _},
    path::{Path, PathBuf},
};

/// Where the pipeline's resources come from.
pub trait Source: Send + std::fmt::Debug {
    /// Names the source in problems about it as a whole.
    fn path(&self) -> &Path;
    /// What changed since the last call, as store events, with every
    /// problem of the resources as they are now.
    fn changes(&mut self) -> Changes;
    /// Whether holding no resource at all is an error (a file caught mid-write).
    fn empty_is_error(&self) -> bool {
        true
    }
}

impl Source for FileSource {
    fn path(&self) -> &Path {
        FileSource::path(self)
    }

    fn changes(&mut self) -> Changes {
        FileSource::changes(self)
    }
}

/// A file or directory of Kuma YAML, read incrementally. Every [`FileSource::read`]
/// gives exactly what [`crate::model::load_path`] gives for the same files.
#[derive(Debug)]
pub struct FileSource {
    path: PathBuf,
    files: HashMap<PathBuf, Cached>,
    /// The files, in reading order.
    order: Vec<PathBuf>,
}

/// One file as last read.
#[derive(Debug)]
struct Cached {
    stamp: Stamp,
    hash: u64,
    /// This file's resources and problems (duplicates across files aside).
    config: Config,
    problems: Vec<Problem>,
    /// Its resources' validation problems, by kind (see `validate_by_kind`).
    validation: [Vec<Problem>; 7],
}

/// What tells a changed file without reading it: device and inode (a rename
/// into place gives a new inode), size, and modification and change times in
/// nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp(u64, u64, u64, i64, i64, i64, i64);

impl Stamp {
    fn of(path: &Path) -> Option<Self> {
        use std::os::unix::fs::MetadataExt as _;
        let m = std::fs::metadata(path).ok()?;
        Some(Self(m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec(), m.ctime(), m.ctime_nsec()))
    }
}

/// What changed in the files since the last read, and what is wrong with them now.
#[derive(Debug, Default)]
pub struct Changes {
    /// Store events, one per key whose resources in a file changed.
    pub events: Vec<Event>,
    /// Problems reading and parsing the files, in file order.
    pub problems: Vec<Problem>,
    /// Problems validating their resources, by kind, then file.
    pub validation: Vec<Problem>,
    /// What the read did.
    pub stats: ReadStats,
}

/// What one read did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReadStats {
    /// Files found.
    pub files: usize,
    /// Files whose content was read again.
    pub read: usize,
    /// Files parsed again (their content changed).
    pub parsed: usize,
}

impl FileSource {
    /// A source for `path` (a file or a directory); nothing is read yet.
    pub fn new(path: &Path) -> Self {
        Self { path: path.to_path_buf(), files: HashMap::new(), order: Vec::new() }
    }

    /// The file or directory read.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The configuration as the files are now, with every problem of
    /// reading it, reading and parsing only what changed since the last call.
    pub fn read(&mut self) -> (Config, Vec<Problem>, ReadStats) {
        let (config, problems, _, stats) = self.read_all();
        (config, problems, stats)
    }

    /// As [`FileSource::read`], with the validation problems after the
    /// reading ones: what `load_path` and then `Config::validate` give. Each
    /// file is validated once, when it is parsed.
    pub fn read_validated(&mut self) -> (Config, Vec<Problem>, ReadStats) {
        let (config, mut problems, validation, stats) = self.read_all();
        problems.extend(validation);
        (config, problems, stats)
    }

    /// What changed since the last read, as store events (one per key whose
    /// resources in a file changed, a deletion for each key a file no longer
    /// has), with every problem of reading and validating the files as they
    /// are now (duplicates across files aside: the store finds those).
    pub fn changes(&mut self) -> Changes {
        let mut old: HashMap<PathBuf, BTreeMap<Key, Vec<Resource>>> = HashMap::new();
        let (problems, validation, stats, changed) = self.scan(&mut old);
        let mut events = Vec::new();
        for path in changed {
            let source = file_source(&path);
            let previous = old.remove(&path).unwrap_or_default();
            let now = self.files.get(&path).map(|c| by_key(&c.config)).unwrap_or_default();
            for key in previous.keys().filter(|k| !now.contains_key(k)) {
                events.push(Event::delete(source.clone(), key.clone()));
            }
            for (key, resources) in now {
                if previous.get(&key) != Some(&resources) {
                    events.push(Event { source: source.clone(), key, resources });
                }
            }
        }
        Changes { events, problems, validation, stats }
    }

    fn read_all(&mut self) -> (Config, Vec<Problem>, Vec<Problem>, ReadStats) {
        let (mut problems, validation, stats, _) = self.scan(&mut HashMap::new());
        let mut config = Config::default();
        for path in &self.order {
            extend(&mut config, &self.files[path].config);
        }
        check_duplicates(&config, &mut problems);
        (config, problems, validation, stats)
    }

    /// Walks the files, reading and parsing only what changed. Returns the
    /// reading problems and the validation problems (by kind, then file),
    /// and the files whose resources may have changed, with the resources
    /// they had before put in `old`.
    fn scan(&mut self, old: &mut HashMap<PathBuf, BTreeMap<Key, Vec<Resource>>>) -> (Vec<Problem>, Vec<Problem>, ReadStats, Vec<PathBuf>) {
        let mut problems = Vec::new();
        let mut paths = Vec::new();
        collect_files(&self.path, &mut paths, &mut problems, &mut Vec::new());
        if paths.is_empty() && problems.is_empty() {
            problems.push(file_problem(&self.path, "no .yaml or .yml files found"));
        }
        let mut stats = ReadStats { files: paths.len(), ..ReadStats::default() };
        let mut files = HashMap::with_capacity(paths.len());
        let mut order = Vec::with_capacity(paths.len());
        let mut changed = Vec::new();
        // Which files to read again; those are read and parsed in parallel.
        let stamps: Vec<(PathBuf, Option<Stamp>, Option<Cached>)> = paths
            .into_iter()
            .map(|path| {
                let stamp = Stamp::of(&path);
                let cached = self.files.remove(&path);
                (path, stamp, cached)
            })
            .collect();
        let todo: Vec<(&Path, Option<u64>)> = stamps
            .iter()
            .filter(|(_, stamp, cached)| !matches!((cached, stamp), (Some(c), Some(s)) if c.stamp == *s))
            .map(|(path, _, cached)| (path.as_path(), cached.as_ref().map(|c| c.hash)))
            .collect();
        // Parsing is most of an install's time: one thread per CPU.
        let mut outcomes = par_map(&todo, |(path, last)| read_one(path, *last)).into_iter();
        for (path, stamp, cached) in stamps {
            let entry = match (cached, stamp) {
                (Some(c), Some(s)) if c.stamp == s => Some(c),
                (cached, stamp) => {
                    stats.read += 1;
                    let stamp = stamp.unwrap_or(Stamp(0, 0, 0, 0, 0, 0, 0));
                    match outcomes.next().expect("one outcome per file read") {
                        Outcome::Failed(message) => {
                            problems.push(file_problem(&path, message));
                            if let Some(c) = cached {
                                old.insert(path.clone(), by_key(&c.config));
                                changed.push(path.clone());
                            }
                            None
                        }
                        Outcome::Same => cached.map(|c| Cached { stamp, ..c }),
                        Outcome::Parsed(parsed) => {
                            stats.parsed += 1;
                            old.insert(path.clone(), cached.map(|c| by_key(&c.config)).unwrap_or_default());
                            changed.push(path.clone());
                            Some(Cached { stamp, ..*parsed })
                        }
                    }
                }
            };
            if let Some(entry) = entry {
                problems.extend(entry.problems.iter().cloned());
                order.push(path.clone());
                files.insert(path, entry);
            }
        }
        let mut validation = Vec::new();
        for kind in 0..7 {
            for path in &order {
                validation.extend(files[path].validation[kind].iter().cloned());
            }
        }
        // Files that went away take their resources with them.
        for (path, gone) in self.files.drain() {
            old.insert(path.clone(), by_key(&gone.config));
            changed.push(path);
        }
        self.files = files;
        self.order = order;
        (problems, validation, stats, changed)
    }
}

/// What reading one file again gave.
enum Outcome {
    /// It could not be read.
    Failed(String),
    /// Its content is what was parsed last time.
    Same,
    /// New content, parsed and validated (its stamp not yet set).
    Parsed(Box<Cached>),
}

/// Reads, hashes and (when the hash is not `last`) parses and validates a file.
fn read_one(path: &Path, last: Option<u64>) -> Outcome {
    let text = match read_file(path) {
        Ok(text) => text,
        Err(message) => return Outcome::Failed(message),
    };
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut hasher);
    let hash = hasher.finish();
    if last == Some(hash) {
        return Outcome::Same;
    }
    let (mut config, mut problems) = (Config::default(), Vec::new());
    load_into(&mut config, path, &text, &mut problems);
    let validation = validate_by_kind(&config);
    Outcome::Parsed(Box::new(Cached { stamp: Stamp(0, 0, 0, 0, 0, 0, 0), hash, config, problems, validation }))
}

/// A file's resources by key, in file order within a key.
fn by_key(config: &Config) -> BTreeMap<Key, Vec<Resource>> {
    let mut out: BTreeMap<Key, Vec<Resource>> = BTreeMap::new();
    for r in resources(config) {
        // Nearly every key has one resource: no room for more up front.
        out.entry(r.key()).or_insert_with(|| Vec::with_capacity(1)).push(r);
    }
    out
}

/// Appends `more`'s resources (shared) to `config`.
fn extend(config: &mut Config, more: &Config) {
    config.services.extend(more.services.iter().cloned());
    config.dataplanes.extend(more.dataplanes.iter().cloned());
    config.routes.extend(more.routes.iter().cloned());
    config.external_services.extend(more.external_services.iter().cloned());
    config.multizone_services.extend(more.multizone_services.iter().cloned());
    config.http_routes.extend(more.http_routes.iter().cloned());
    config.ignored.extend(more.ignored.iter().cloned());
}
