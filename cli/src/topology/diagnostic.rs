//! Errors of a topology file, each at a place in the file:
//! `FILE:LINE:COL: field.path: reason`, all of them listed together.

use std::fmt;
use std::path::{Path, PathBuf};

use marked_yaml::Span;

/// A position in the file (1-based line and column); 0 when unknown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1.
    pub col: usize,
}

impl Pos {
    /// The start of `span` (unknown positions become 0:0).
    pub fn of(span: &Span) -> Pos {
        span.start()
            .map(|m| Pos {
                line: m.line(),
                col: m.column(),
            })
            .unwrap_or_default()
    }
}

/// One problem of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Where.
    pub pos: Pos,
    /// Which field, as a dotted path (`vnets.app.subnets.web.cidr`).
    pub path: String,
    /// Why it is refused.
    pub reason: String,
}

impl Diagnostic {
    /// A problem at `span`.
    pub fn at(span: &Span, path: impl Into<String>, reason: impl Into<String>) -> Self {
        Diagnostic {
            pos: Pos::of(span),
            path: path.into(),
            reason: reason.into(),
        }
    }
}

/// Every problem found in one file; the file is refused as a whole.
#[derive(Debug, thiserror::Error)]
pub struct Diagnostics {
    /// The file.
    pub file: PathBuf,
    /// Problems in file order.
    pub items: Vec<Diagnostic>,
}

impl Diagnostics {
    /// Collects `items` for `file`, sorted by position.
    pub fn new(file: &Path, mut items: Vec<Diagnostic>) -> Self {
        items.sort_by(|a, b| (a.pos, &a.path).cmp(&(b.pos, &b.path)));
        items.dedup();
        Diagnostics {
            file: file.to_path_buf(),
            items,
        }
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.items.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}:{}:{}: ", self.file.display(), d.pos.line, d.pos.col)?;
            if !d.path.is_empty() {
                write!(f, "{}: ", d.path)?;
            }
            f.write_str(&d.reason)?;
        }
        let n = self.items.len();
        write!(
            f,
            "\n{}: {n} error{}; nothing was changed",
            self.file.display(),
            if n == 1 { "" } else { "s" }
        )
    }
}
