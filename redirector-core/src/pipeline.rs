//! The agent's pipeline, kept between reloads: the source's changes
//! become store events, the engine resolves what they touch, the compiler
//! turns the changed routes into the next generation. Each stage costs what
//! changed; a rejected configuration changes nothing that is in force, and
//! what it changed is taken up by the next good one.

use crate::{
    compile::{CompileError, Compiler, Generation},
    model::{Problem, Problems, Severity},
    resolve::{Engine, HostResolver, ResolvedRoute, UpdateStats, Workload},
    source::{FileSource, ReadStats, Source},
};
use std::{
    path::Path,
    time::{Duration, Instant},
};

/// A configuration read, resolved and compiled incrementally.
#[derive(Debug)]
pub struct Pipeline {
    source: Box<dyn Source>,
    engine: Engine,
    compiler: Compiler,
}

/// A generation ready for the kernel.
#[derive(Debug)]
pub struct Ready {
    /// What to write.
    pub generation: Generation,
    /// Workloads, with their class in the resolution (map it through
    /// [`Generation::class_ids`] for the kernel's id).
    pub workloads: Vec<Workload>,
    /// Warnings (the configuration has no errors).
    pub warnings: Vec<Problem>,
    /// What each stage did.
    pub stats: Stats,
}

/// What one update did, stage by stage.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    /// Files found, read and parsed.
    pub read: ReadStats,
    /// Store events applied.
    pub events: usize,
    /// Routes resolved again.
    pub resolve: UpdateStats,
    /// Time reading and parsing.
    pub read_time: Duration,
    /// Time resolving.
    pub resolve_time: Duration,
    /// Time compiling.
    pub compile_time: Duration,
}

fn whole(path: &Path, message: String) -> Problem {
    Problem { severity: Severity::Error, file: path.to_path_buf(), resource: String::new(), path: String::new(), message }
}

impl Pipeline {
    /// A pipeline for the file or directory `path`; nothing is read yet.
    pub fn new(path: &Path) -> Self {
        Self::with_source(Box::new(FileSource::new(path)))
    }

    /// A pipeline over `source`; nothing is read yet.
    pub fn with_source(source: Box<dyn Source>) -> Self {
        Self { source, engine: Engine::without_explanations(), compiler: Compiler::new() }
    }

    /// The source read (its path names it in problems).
    pub fn path(&self) -> &Path {
        self.source.path()
    }

    /// The resolution as it stands.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The compiler (the tables in force).
    pub fn compiler(&self) -> &Compiler {
        &self.compiler
    }

    /// Looks every MeshExternalService hostname up again at the next update.
    pub fn refresh_dns(&mut self) {
        self.engine.refresh_dns();
    }

    /// Reads what changed and computes the next generation against the one
    /// committed last; or every problem (errors and warnings) of the
    /// configuration as it is now.
    pub fn update(&mut self, dns: &dyn HostResolver) -> Result<Ready, Problems> {
        let mut stats = Stats::default();
        let started = Instant::now();
        let changes = self.source.changes();
        stats.read = changes.stats;
        stats.events = changes.events.len();
        for event in changes.events {
            self.engine.apply(event);
        }
        let mut problems = changes.problems;
        problems.extend(self.engine.store().duplicate_problems());
        problems.extend(changes.validation);
        if self.source.empty_is_error() && self.engine.store().is_empty() && problems.is_empty() {
            // Most likely a file caught mid-write: applying it would drop every route.
            problems.push(whole(self.path(), "contains no Kuma resources".into()));
        }
        stats.read_time = started.elapsed();
        let failed = |problems: &[Problem]| problems.iter().any(|p| p.severity == Severity::Error);
        if failed(&problems) {
            return Err(Problems(problems));
        }
        let resolving = Instant::now();
        stats.resolve = self.engine.update(dns);
        problems.extend(self.engine.problems());
        stats.resolve_time = resolving.elapsed();
        if failed(&problems) {
            return Err(Problems(problems));
        }
        let compiling = Instant::now();
        let (changed, _) = self.engine.take_changed();
        let engine = &self.engine;
        let generation = self
            .compiler
            .compile(changed, |addr| engine.base_route(addr), &engine.class_overrides())
            .map_err(|e: CompileError| {
                problems.push(whole(self.source.path(), e.to_string()));
                Problems(problems.clone())
            })?;
        stats.compile_time = compiling.elapsed();
        Ok(Ready { generation, workloads: self.engine.workloads(), warnings: problems, stats })
    }

    /// Records that the kernel holds `generation` (of the last [`Pipeline::update`]).
    pub fn commit(&mut self, generation: &Generation) {
        self.compiler.commit(generation);
    }

    /// The route of a table key's destination for its class, for labels.
    pub fn route_of(&self, key: &redirector_common::ServiceKey) -> Option<&ResolvedRoute> {
        let d = crate::compile::destination(key);
        self.engine.base_route((d.ip(), d.port()))
    }
}
