//! Conversions between generated protobuf types and the domain model.
//!
//! Generated types never cross into decision code: each service converts at its edge,
//! and a malformed message becomes a typed [`InvalidMessage`].

use crate::decision::{Decision, Denial, PolicyKind};
use crate::flow::{Direction, GrantId};
use crate::pb::{o2m, p2m};
use crate::policy::{Confidentiality, IntegrityLevel, Policy};
use crate::resource::InvalidIdentifier;

/// A protobuf message that does not describe a valid domain value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidMessage {
    /// A required field is missing or unspecified.
    #[error("missing field {0}")]
    Missing(&'static str),
    /// An identifier field does not parse.
    #[error(transparent)]
    Identifier(#[from] InvalidIdentifier),
    /// An enum field carries an unknown value.
    #[error("unknown value {value} for {field}")]
    UnknownEnum {
        /// The field.
        field: &'static str,
        /// The value received.
        value: i32,
    },
    /// A grant id of 0.
    #[error("grant id 0 is never issued")]
    ZeroGrant,
}

impl TryFrom<i32> for Direction {
    type Error = InvalidMessage;
    fn try_from(v: i32) -> Result<Self, Self::Error> {
        match p2m::Direction::try_from(v) {
            Ok(p2m::Direction::Read) => Ok(Self::Read),
            Ok(p2m::Direction::Write) => Ok(Self::Write),
            Ok(p2m::Direction::Unspecified) => Err(InvalidMessage::Missing("direction")),
            Err(_) => Err(InvalidMessage::UnknownEnum { field: "direction", value: v }),
        }
    }
}

impl From<Direction> for p2m::Direction {
    fn from(d: Direction) -> Self {
        match d {
            Direction::Read => Self::Read,
            Direction::Write => Self::Write,
        }
    }
}

impl From<PolicyKind> for p2m::PolicyKind {
    fn from(k: PolicyKind) -> Self {
        match k {
            PolicyKind::Confidentiality => Self::Confidentiality,
            PolicyKind::Integrity => Self::Integrity,
            PolicyKind::Deletion => Self::Deletion,
            PolicyKind::Consent => Self::Consent,
            PolicyKind::Busy => Self::Busy,
            PolicyKind::Unreachable => Self::Unreachable,
            PolicyKind::AuditUnavailable => Self::AuditUnavailable,
        }
    }
}

impl TryFrom<i32> for PolicyKind {
    type Error = InvalidMessage;
    fn try_from(v: i32) -> Result<Self, Self::Error> {
        match p2m::PolicyKind::try_from(v) {
            Ok(p2m::PolicyKind::Confidentiality) => Ok(Self::Confidentiality),
            Ok(p2m::PolicyKind::Integrity) => Ok(Self::Integrity),
            Ok(p2m::PolicyKind::Deletion) => Ok(Self::Deletion),
            Ok(p2m::PolicyKind::Consent) => Ok(Self::Consent),
            Ok(p2m::PolicyKind::Busy) => Ok(Self::Busy),
            Ok(p2m::PolicyKind::Unreachable) => Ok(Self::Unreachable),
            Ok(p2m::PolicyKind::AuditUnavailable) => Ok(Self::AuditUnavailable),
            Ok(p2m::PolicyKind::Unspecified) => Err(InvalidMessage::Missing("policy")),
            Err(_) => Err(InvalidMessage::UnknownEnum { field: "policy", value: v }),
        }
    }
}

impl From<&Denial> for p2m::Denial {
    fn from(d: &Denial) -> Self {
        Self {
            policy: p2m::PolicyKind::from(d.policy) as i32,
            resource: d.resource.to_string(),
            reason: d.reason.clone(),
        }
    }
}

impl TryFrom<p2m::Denial> for Denial {
    type Error = InvalidMessage;
    fn try_from(d: p2m::Denial) -> Result<Self, Self::Error> {
        Ok(Self { policy: d.policy.try_into()?, resource: d.resource.parse()?, reason: d.reason })
    }
}

impl From<&Decision> for p2m::IoDecision {
    fn from(d: &Decision) -> Self {
        let decision = match d {
            Decision::Grant(id) => p2m::io_decision::Decision::Grant(id.0),
            Decision::Denied(denial) => p2m::io_decision::Decision::Denial(denial.into()),
        };
        Self { decision: Some(decision) }
    }
}

impl TryFrom<p2m::IoDecision> for Decision {
    type Error = InvalidMessage;
    fn try_from(d: p2m::IoDecision) -> Result<Self, Self::Error> {
        match d.decision.ok_or(InvalidMessage::Missing("decision"))? {
            p2m::io_decision::Decision::Grant(0) => Err(InvalidMessage::ZeroGrant),
            p2m::io_decision::Decision::Grant(id) => Ok(Self::Grant(GrantId(id))),
            p2m::io_decision::Decision::Denial(d) => Ok(Self::Denied(d.try_into()?)),
        }
    }
}

impl From<Confidentiality> for o2m::Confidentiality {
    fn from(c: Confidentiality) -> Self {
        match c {
            Confidentiality::Public => Self::Public,
            Confidentiality::Secret => Self::Secret,
        }
    }
}

impl TryFrom<i32> for Confidentiality {
    type Error = InvalidMessage;
    fn try_from(v: i32) -> Result<Self, Self::Error> {
        match o2m::Confidentiality::try_from(v) {
            Ok(o2m::Confidentiality::Public) => Ok(Self::Public),
            Ok(o2m::Confidentiality::Secret) => Ok(Self::Secret),
            Ok(o2m::Confidentiality::Unspecified) => Err(InvalidMessage::Missing("confidentiality")),
            Err(_) => Err(InvalidMessage::UnknownEnum { field: "confidentiality", value: v }),
        }
    }
}

impl From<Policy> for o2m::Policy {
    fn from(p: Policy) -> Self {
        Self {
            confidentiality: o2m::Confidentiality::from(p.confidentiality) as i32,
            integrity: p.integrity.0,
            deleted: p.deleted,
            consent: p.consent,
        }
    }
}

impl TryFrom<o2m::Policy> for Policy {
    type Error = InvalidMessage;
    fn try_from(p: o2m::Policy) -> Result<Self, Self::Error> {
        Ok(Self {
            confidentiality: p.confidentiality.try_into()?,
            integrity: IntegrityLevel(p.integrity),
            deleted: p.deleted,
            consent: p.consent,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::{NodeId, Resource};

    #[test]
    fn decisions_round_trip() {
        let node = NodeId::new("n1").unwrap();
        let denial = Denial {
            policy: PolicyKind::Integrity,
            resource: Resource::file("/x").unwrap().at(&node),
            reason: "level 0 < 1".into(),
        };
        for d in [Decision::Grant(GrantId(7)), Decision::Denied(denial)] {
            let pb = p2m::IoDecision::from(&d);
            assert_eq!(Decision::try_from(pb).unwrap(), d);
        }
    }

    #[test]
    fn malformed_messages_are_typed_errors() {
        assert_eq!(Direction::try_from(0), Err(InvalidMessage::Missing("direction")));
        assert!(matches!(Direction::try_from(99), Err(InvalidMessage::UnknownEnum { .. })));
        assert_eq!(Decision::try_from(p2m::IoDecision { decision: None }), Err(InvalidMessage::Missing("decision")));
        let zero = p2m::IoDecision { decision: Some(p2m::io_decision::Decision::Grant(0)) };
        assert_eq!(Decision::try_from(zero), Err(InvalidMessage::ZeroGrant));
    }

    #[test]
    fn policies_round_trip() {
        let p = Policy {
            confidentiality: Confidentiality::Secret,
            integrity: IntegrityLevel(3),
            deleted: true,
            consent: true,
        };
        assert_eq!(Policy::try_from(o2m::Policy::from(p)).unwrap(), p);
    }
}
