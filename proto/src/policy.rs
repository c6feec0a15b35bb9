//! The compliance vocabulary: what an owner can say about a resource.
//! The rules that use it live in the daemon's `compliance` module.

use std::fmt;
use std::str::FromStr;

/// Whether data derived from a resource may leave its node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Confidentiality {
    /// May flow anywhere (the default).
    #[default]
    Public,
    /// May flow only to resources on its own node, or to resources marked secret on other
    /// managed nodes; never to an external peer.
    Secret,
}

impl fmt::Display for Confidentiality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Public => "public",
            Self::Secret => "secret",
        })
    }
}

impl FromStr for Confidentiality {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "public" => Ok(Self::Public),
            "secret" => Ok(Self::Secret),
            other => Err(format!("unknown confidentiality {other:?} (expected public or secret)")),
        }
    }
}

/// An integrity level: a destination of level `d` accepts data only from sources of level ≥ `d`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct IntegrityLevel(pub u32);

impl fmt::Display for IntegrityLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The policy of one resource, decided by its owner node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Policy {
    /// Where derived data may go.
    pub confidentiality: Confidentiality,
    /// Integrity level.
    pub integrity: IntegrityLevel,
    /// Marked deleted by its owner: nothing derived from it flows anywhere, nothing flows
    /// into it. Final: a deleted resource cannot be undeleted.
    pub deleted: bool,
    /// The owner wants to decide each destination of data derived from it.
    pub consent: bool,
}
