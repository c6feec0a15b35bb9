//! Topology: which node owns an IP address.
//!
//! Owns the classification of a TCP peer address as this node's own ([`Owner::Local`]),
//! a configured peer node's ([`Owner::Peer`]) or an external endpoint without a daemon
//! ([`Owner::External`]). It does not know about resources, labels, flows, or how to
//! reach a peer (that is `federation`'s).

use std::net::IpAddr;

use trace2e_proto::NodeId;

/// A managed peer node: its name and the IP addresses it owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerNode {
    /// The peer's name.
    pub node: NodeId,
    /// The addresses that reach it.
    pub addresses: Vec<IpAddr>,
}

/// This node's name, the addresses it owns, and its peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// This node.
    pub node: NodeId,
    /// The IP addresses that reach this node. Loopback addresses are local only if
    /// listed here (the daemon's configuration normally lists them).
    pub addresses: Vec<IpAddr>,
    /// The managed peer nodes (federation). Empty for a single node.
    pub peers: Vec<PeerNode>,
}

/// Who owns an IP address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Owner {
    /// This node.
    Local,
    /// A managed peer node.
    Peer(NodeId),
    /// An endpoint no managed node owns.
    External,
}

impl Topology {
    /// A topology of one node owning `addresses`, without peers.
    pub fn new(node: NodeId, addresses: Vec<IpAddr>) -> Self {
        Self { node, addresses, peers: Vec::new() }
    }

    /// Adds a peer owning `addresses` (merged with an earlier entry of the same name).
    pub fn with_peer(mut self, node: NodeId, addresses: Vec<IpAddr>) -> Self {
        match self.peers.iter_mut().find(|p| p.node == node) {
            Some(p) => p.addresses.extend(addresses),
            None => self.peers.push(PeerNode { node, addresses }),
        }
        self
    }

    /// Who owns `ip`: this node if it is one of [`Topology::addresses`], else the peer
    /// that lists it, else nobody managed. An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`)
    /// is treated as the IPv4 address.
    pub fn owner(&self, ip: IpAddr) -> Owner {
        let ip = ip.to_canonical();
        if self.addresses.iter().any(|a| a.to_canonical() == ip) {
            return Owner::Local;
        }
        match self.peers.iter().find(|p| p.addresses.iter().any(|a| a.to_canonical() == ip)) {
            Some(p) => Owner::Peer(p.node.clone()),
            None => Owner::External,
        }
    }

    /// Whether `node` is a configured peer.
    pub fn is_peer(&self, node: &NodeId) -> bool {
        self.peers.iter().any(|p| &p.node == node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topology() -> Topology {
        Topology::new(
            NodeId::new("n1").unwrap(),
            vec!["10.0.0.1".parse().unwrap(), "::ffff:10.0.0.2".parse().unwrap(), "fd00::1".parse().unwrap()],
        )
    }

    #[test]
    fn listed_addresses_are_local() {
        let t = topology();
        assert_eq!(t.owner("10.0.0.1".parse().unwrap()), Owner::Local);
        assert_eq!(t.owner("fd00::1".parse().unwrap()), Owner::Local);
        assert_eq!(t.owner("10.0.0.3".parse().unwrap()), Owner::External);
        assert_eq!(t.owner("127.0.0.1".parse().unwrap()), Owner::External);
    }

    #[test]
    fn ipv4_mapped_addresses_are_ipv4() {
        let t = topology();
        assert_eq!(t.owner("::ffff:10.0.0.1".parse().unwrap()), Owner::Local);
        assert_eq!(t.owner("10.0.0.2".parse().unwrap()), Owner::Local);
    }

    #[test]
    fn peer_addresses_belong_to_their_node() {
        let n2 = NodeId::new("n2").unwrap();
        let t = topology()
            .with_peer(n2.clone(), vec!["10.0.0.3".parse().unwrap()])
            .with_peer(n2.clone(), vec!["fd00::3".parse().unwrap()]);
        assert_eq!(t.peers.len(), 1);
        assert_eq!(t.owner("10.0.0.3".parse().unwrap()), Owner::Peer(n2.clone()));
        assert_eq!(t.owner("::ffff:10.0.0.3".parse().unwrap()), Owner::Peer(n2.clone()));
        assert_eq!(t.owner("fd00::3".parse().unwrap()), Owner::Peer(n2.clone()));
        assert_eq!(t.owner("10.0.0.4".parse().unwrap()), Owner::External);
        assert!(t.is_peer(&n2) && !t.is_peer(&NodeId::new("n3").unwrap()));
    }
}
