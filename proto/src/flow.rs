//! Flows: the direction of one I/O, its grant, its outcome.

use std::fmt;

/// The direction of one mediated I/O, seen from the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Direction {
    /// fd resource → process.
    Read,
    /// process → fd resource.
    Write,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Read => "read",
            Self::Write => "write",
        })
    }
}

/// A file descriptor number in a client process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct Fd(pub i32);

impl fmt::Display for Fd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The identifier of one granted flow, unique within a daemon's lifetime (never 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct GrantId(pub u64);

impl fmt::Display for GrantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// What a process reports after performing a granted I/O.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IoOutcome {
    /// The I/O succeeded.
    pub ok: bool,
    /// Bytes actually transferred (0 when it failed).
    pub bytes: u64,
}
