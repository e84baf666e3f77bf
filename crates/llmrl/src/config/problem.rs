//! Configuration problems, each with its path and value.

use std::fmt;
use std::path::Path;

/// One thing wrong with a configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Problem {
    /// Where: `models."gpt-4o".tokens_per_minute`, `job_types.summary.ratio.initial`, ...
    pub path: String,
    /// The value at fault as written (empty when the value is missing).
    pub value: String,
    /// What is wrong with it.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.value.is_empty() {
            write!(f, "{}: {}", self.path, self.message)
        } else {
            write!(f, "{} = {}: {}", self.path, self.value, self.message)
        }
    }
}

/// Reading or validating a configuration failed; every problem found is listed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConfigError {
    problems: Vec<Problem>,
}

impl ConfigError {
    pub(crate) fn new(problems: Vec<Problem>) -> Self {
        Self { problems }
    }

    /// Every problem, in the order found.
    #[must_use]
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }

    pub(crate) fn parse<E: fmt::Display>(e: &serde_path_to_error::Error<E>) -> Self {
        let mut path = String::new();
        for segment in e.path().iter() {
            match segment {
                serde_path_to_error::Segment::Map { key } => push_key(&mut path, key),
                serde_path_to_error::Segment::Seq { index } => {
                    path.push_str(&format!("[{index}]"));
                }
                serde_path_to_error::Segment::Enum { variant } => push_key(&mut path, variant),
                serde_path_to_error::Segment::Unknown => push_key(&mut path, "?"),
            }
        }
        if path.is_empty() {
            path.push('.');
        }
        Self::new(vec![Problem {
            path,
            value: String::new(),
            message: e.inner().to_string(),
        }])
    }

    pub(crate) fn io(path: &Path, e: &std::io::Error) -> Self {
        Self::new(vec![Problem {
            path: path.display().to_string(),
            value: String::new(),
            message: format!("cannot read the file: {e}"),
        }])
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.problems.as_slice() {
            [one] => write!(f, "invalid configuration: {one}"),
            many => {
                write!(f, "invalid configuration ({} problems):", many.len())?;
                for problem in many {
                    write!(f, "\n  - {problem}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ConfigError {}

/// Appends `key` to a dotted path, quoting it unless it is a bare TOML-like key.
pub(crate) fn push_key(path: &mut String, key: &str) {
    if !path.is_empty() {
        path.push('.');
    }
    let bare = !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if bare {
        path.push_str(key);
    } else {
        path.push_str(&format!("{key:?}"));
    }
}

/// A dotted path built from keys, quoting those that need it.
pub(crate) fn path_of(keys: &[&str]) -> String {
    let mut path = String::new();
    for key in keys {
        push_key(&mut path, key);
    }
    path
}
