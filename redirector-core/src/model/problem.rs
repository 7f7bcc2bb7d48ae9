//! Problems found in user input, reported as `file: Kind/name: field.path: message`.

use std::{fmt, path::PathBuf};

/// Whether a problem stops the configuration from being applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// The configuration is rejected.
    Error,
    /// The configuration is applied; the user should know.
    Warning,
}

/// One problem, located by file, resource and field path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Error or warning.
    pub severity: Severity,
    /// The file the resource came from.
    pub file: PathBuf,
    /// `Kind/name`, or empty when the problem is not inside a resource.
    pub resource: String,
    /// Field path in Kuma's notation (`spec.to[0].targetRef.kind`); may be empty.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.severity == Severity::Warning {
            f.write_str("warning: ")?;
        }
        write!(f, "{}", self.file.display())?;
        if !self.resource.is_empty() {
            write!(f, ": {}", self.resource)?;
        }
        if !self.path.is_empty() {
            write!(f, ": {}", self.path)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// All problems found in one pass; errors and warnings together.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Problems(pub Vec<Problem>);

impl Problems {
    /// Whether any problem is an error.
    pub fn has_errors(&self) -> bool {
        self.0.iter().any(|p| p.severity == Severity::Error)
    }

    /// The errors only.
    pub fn errors(&self) -> impl Iterator<Item = &Problem> {
        self.0.iter().filter(|p| p.severity == Severity::Error)
    }

    /// The warnings only.
    pub fn warnings(&self) -> impl Iterator<Item = &Problem> {
        self.0.iter().filter(|p| p.severity == Severity::Warning)
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

/// Collects problems for one resource.
#[derive(Debug)]
pub(crate) struct Reporter<'a> {
    file: &'a std::path::Path,
    resource: String,
    pub(crate) out: &'a mut Vec<Problem>,
}

impl<'a> Reporter<'a> {
    pub(crate) fn new(file: &'a std::path::Path, resource: String, out: &'a mut Vec<Problem>) -> Self {
        Self { file, resource, out }
    }

    pub(crate) fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.push(Severity::Error, path.into(), message.into());
    }

    pub(crate) fn warning(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.push(Severity::Warning, path.into(), message.into());
    }

    fn push(&mut self, severity: Severity, path: String, message: String) {
        self.out.push(Problem {
            severity,
            file: self.file.to_path_buf(),
            resource: self.resource.clone(),
            path,
            message,
        });
    }
}
