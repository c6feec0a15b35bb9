//! Consent: owners deciding, per destination, whether their data may flow there.
//!
//! Owns the consent vocabulary ([`ConsentDestination`], [`ConsentRequest`]) and the
//! transient registry of flows waiting for a decision ([`ConsentWaiters`]). It does not
//! store decisions (they are durable state: `state::State`), evaluate them (`compliance`)
//! or hold reservations.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::oneshot;
use trace2e_proto::{InvalidIdentifier, LocalizedResource, NodeId};

/// Where a consent decision applies: one destination resource, or every resource of a
/// destination node. A resource decision is more specific and wins over a node decision.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ConsentDestination {
    /// One destination resource.
    Resource(LocalizedResource),
    /// Every resource on a node.
    Node(NodeId),
}

impl fmt::Display for ConsentDestination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Resource(r) => r.fmt(f),
            Self::Node(n) => write!(f, "node:{n}"),
        }
    }
}

impl FromStr for ConsentDestination {
    type Err = InvalidIdentifier;
    /// `node:NAME` or a localized resource `RES@NODE`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.strip_prefix("node:") {
            Some(name) => Ok(Self::Node(name.parse()?)),
            None => Ok(Self::Resource(s.parse()?)),
        }
    }
}

/// A flow waiting for its source's owner to decide.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConsentRequest {
    /// The source whose owner enforces consent.
    pub source: LocalizedResource,
    /// Where its data would go.
    pub destination: ConsentDestination,
}

#[derive(Debug)]
struct Pending {
    source: LocalizedResource,
    destination: LocalizedResource,
    wake: Option<oneshot::Sender<()>>,
}

#[derive(Debug, Default)]
struct Registry {
    pending: HashMap<u64, Pending>,
    next: u64,
}

/// Flows waiting for a consent decision. Cheap to clone (shared).
#[derive(Debug, Clone, Default)]
pub struct ConsentWaiters {
    registry: Arc<Mutex<Registry>>,
}

impl ConsentWaiters {
    /// Registers a flow of `source` data to `destination` as waiting. Register while the
    /// absence of a remembered decision is still known to hold (the engine does it under
    /// its state lock), so that a decision recorded afterwards always finds the waiter.
    pub fn register(&self, source: LocalizedResource, destination: LocalizedResource) -> ConsentWait {
        let (tx, rx) = oneshot::channel();
        let mut r = self.registry.lock();
        let id = r.next;
        r.next += 1;
        r.pending.insert(id, Pending { source, destination, wake: Some(tx) });
        ConsentWait { registry: self.registry.clone(), id, rx: Some(rx) }
    }

    /// Wakes every waiter the decision applies to; returns how many.
    pub fn decided(&self, source: &LocalizedResource, destination: &ConsentDestination) -> usize {
        let mut r = self.registry.lock();
        let mut woken = 0;
        for p in r.pending.values_mut() {
            let applies = &p.source == source
                && match destination {
                    ConsentDestination::Resource(d) => &p.destination == d,
                    ConsentDestination::Node(n) => &p.destination.node == n,
                };
            if applies && let Some(tx) = p.wake.take() {
                let _ = tx.send(());
                woken += 1;
            }
        }
        woken
    }

    /// The distinct requests still waiting, sorted.
    pub fn pending(&self) -> Vec<ConsentRequest> {
        let r = self.registry.lock();
        let set: BTreeSet<ConsentRequest> = r
            .pending
            .values()
            .filter(|p| p.wake.is_some())
            .map(|p| ConsentRequest {
                source: p.source.clone(),
                destination: ConsentDestination::Resource(p.destination.clone()),
            })
            .collect();
        set.into_iter().collect()
    }

    /// Number of registered waiters.
    pub fn len(&self) -> usize {
        self.registry.lock().pending.len()
    }

    /// Whether nobody waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One registered waiter; dropping it unregisters.
#[derive(Debug)]
pub struct ConsentWait {
    registry: Arc<Mutex<Registry>>,
    id: u64,
    rx: Option<oneshot::Receiver<()>>,
}

impl ConsentWait {
    /// Waits until a decision that applies is recorded, at most `timeout`. Returns whether
    /// one was (the caller then reads the remembered decision).
    pub async fn wait(mut self, timeout: Duration) -> bool {
        let Some(rx) = self.rx.take() else {
            return false;
        };
        matches!(tokio::time::timeout(timeout, rx).await, Ok(Ok(())))
    }
}

impl Drop for ConsentWait {
    fn drop(&mut self) {
        self.registry.lock().pending.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> LocalizedResource {
        s.parse().unwrap()
    }

    #[test]
    fn destinations_round_trip() {
        for text in ["node:n2", "file:///x@n1", "tcp://10.0.0.1:80/10.0.0.2:9000@n2"] {
            let d: ConsentDestination = text.parse().unwrap();
            assert_eq!(d.to_string(), text);
        }
        assert!(matches!("node:n2".parse(), Ok(ConsentDestination::Node(_))));
        assert!("node:".parse::<ConsentDestination>().is_err());
        assert!("file:///x".parse::<ConsentDestination>().is_err());
    }

    #[tokio::test]
    async fn a_decision_wakes_matching_waiters_only() {
        let w = ConsentWaiters::default();
        let src = r("file:///s@n1");
        let a = w.register(src.clone(), r("file:///a@n1"));
        let b = w.register(src.clone(), r("file:///b@n2"));
        let c = w.register(r("file:///other@n1"), r("file:///a@n1"));
        assert_eq!(w.pending().len(), 3);
        assert_eq!(w.decided(&src, &ConsentDestination::Resource(r("file:///a@n1"))), 1);
        assert!(a.wait(Duration::from_secs(10)).await);
        assert_eq!(w.decided(&src, &ConsentDestination::Node(NodeId::new("n2").unwrap())), 1);
        assert!(b.wait(Duration::from_secs(10)).await);
        assert!(!c.wait(Duration::from_millis(10)).await);
        assert!(w.is_empty(), "dropped waiters unregister");
    }
}
