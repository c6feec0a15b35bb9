//! Topology: which node owns an IP address.
//!
//! Owns the classification of a TCP peer address as this node's own ([`Owner::Local`]) or
//! an external endpoint without a daemon ([`Owner::External`]). Federation will add
//! managed peer nodes (`Owner::Peer`). It does not know about resources, labels or flows.

use std::net::IpAddr;

use trace2e_proto::NodeId;

/// This node's name and the addresses it owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// This node.
    pub node: NodeId,
    /// The IP addresses that reach this node. Loopback addresses are local only if
    /// listed here (the daemon's configuration normally lists them).
    pub addresses: Vec<IpAddr>,
}

/// Who owns an IP address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Owner {
    /// This node.
    Local,
    /// An endpoint no managed node owns.
    External,
}

impl Topology {
    /// A topology of one node owning `addresses`.
    pub fn new(node: NodeId, addresses: Vec<IpAddr>) -> Self {
        Self { node, addresses }
    }

    /// Who owns `ip`: [`Owner::Local`] iff it is one of [`Topology::addresses`]. An
    /// IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) is treated as the IPv4 address.
    pub fn owner(&self, ip: IpAddr) -> Owner {
        let ip = ip.to_canonical();
        if self.addresses.iter().any(|a| a.to_canonical() == ip) { Owner::Local } else { Owner::External }
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
}
