//! Resource identifiers: the one place that parses and prints them.
//!
//! Forms (see ARCHITECTURE.md, "Identifiers"):
//! - file: `file:///abs/canonical/path`
//! - stream: `tcp://LOCAL_IP:PORT/PEER_IP:PORT` (IPv6 in brackets)
//! - process: `process://PID.STARTTIME`
//! - executable: `exe:///usr/bin/server`
//! - localized: `<resource>@<node>`
//!
//! Paths are printed with `%`, `@`, ASCII control characters and bytes that are not UTF-8
//! percent-encoded (`%40` for `@`), so that every path round-trips and the `@node` suffix
//! is never ambiguous.

use std::ffi::OsString;
use std::fmt;
use std::net::SocketAddr;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// An identifier that does not parse, with what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid identifier {input:?}: {problem}")]
pub struct InvalidIdentifier {
    /// The text that was given.
    pub input: String,
    /// What is wrong with it.
    pub problem: &'static str,
}

fn invalid(input: &str, problem: &'static str) -> InvalidIdentifier {
    InvalidIdentifier { input: input.to_owned(), problem }
}

/// A node's name (`node-a`): ASCII letters, digits, `.`, `_` and `-`, 1 to 253 characters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NodeId(String);

impl NodeId {
    /// Validates a node name.
    pub fn new(name: impl Into<String>) -> Result<Self, InvalidIdentifier> {
        let name = name.into();
        if name.is_empty() || name.len() > 253 {
            return Err(invalid(&name, "a node name has 1 to 253 characters"));
        }
        if !name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')) {
            return Err(invalid(&name, "a node name uses only ASCII letters, digits, '.', '_' and '-'"));
        }
        Ok(Self(name))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for NodeId {
    type Error = InvalidIdentifier;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl From<NodeId> for String {
    fn from(n: NodeId) -> Self {
        n.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for NodeId {
    type Err = InvalidIdentifier;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

/// A process instance: pid plus its start time (clock ticks since boot, field 22 of
/// `/proc/PID/stat`), so that a reused pid is a different process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct ProcessId {
    /// Kernel process id (thread-group id).
    pub pid: u32,
    /// Start time in clock ticks since boot.
    pub starttime: u64,
}

impl fmt::Display for ProcessId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.pid, self.starttime)
    }
}

/// One TCP connection as seen from one end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct StreamId {
    /// This end's address.
    pub local: SocketAddr,
    /// The other end's address.
    pub peer: SocketAddr,
}

impl StreamId {
    /// The same connection seen from the other end.
    pub fn mirrored(self) -> Self {
        Self { local: self.peer, peer: self.local }
    }
}

/// Something data flows from or into, on one node.
///
/// The derived order is the global reservation order: reservations of one flow are
/// taken sorted by it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub enum Resource {
    /// A process instance.
    Process(ProcessId),
    /// A regular file, by absolute canonical path.
    File(PathBuf),
    /// A TCP stream, from the local end's point of view.
    Stream(StreamId),
    /// An executable: a policy holder that applies to every process running it.
    /// Never a flow endpoint.
    Executable(PathBuf),
}

impl Resource {
    /// A file resource; the path must be absolute.
    pub fn file(path: impl Into<PathBuf>) -> Result<Self, InvalidIdentifier> {
        let path = path.into();
        if !path.is_absolute() {
            return Err(invalid(&path.to_string_lossy(), "a file path must be absolute"));
        }
        Ok(Self::File(path))
    }

    /// A stream resource.
    pub fn stream(local: SocketAddr, peer: SocketAddr) -> Self {
        Self::Stream(StreamId { local, peer })
    }

    /// Localizes this resource on `node`.
    pub fn at(self, node: &NodeId) -> LocalizedResource {
        LocalizedResource { resource: self, node: node.clone() }
    }

    /// Whether this resource is a stream.
    pub fn is_stream(&self) -> bool {
        matches!(self, Self::Stream(_))
    }
}

fn write_path(f: &mut fmt::Formatter<'_>, path: &Path) -> fmt::Result {
    let bytes = path.as_os_str().as_bytes();
    let mut rest = bytes;
    while !rest.is_empty() {
        let (valid, bad) = match std::str::from_utf8(rest) {
            Ok(s) => (s, &[][..]),
            Err(e) => {
                let (v, b) = rest.split_at(e.valid_up_to());
                // SAFETY-free: `valid_up_to` guarantees `v` is UTF-8.
                (std::str::from_utf8(v).unwrap_or_default(), b)
            }
        };
        for c in valid.chars() {
            if c == '%' || c == '@' || c.is_ascii_control() {
                write!(f, "%{:02X}", c as u32)?;
            } else {
                write!(f, "{c}")?;
            }
        }
        if let Some((&b, tail)) = bad.split_first() {
            write!(f, "%{b:02X}")?;
            rest = tail;
        } else {
            rest = &[];
        }
    }
    Ok(())
}

fn parse_path(input: &str, encoded: &str) -> Result<PathBuf, InvalidIdentifier> {
    let raw = encoded.as_bytes();
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'%' {
            let hex = raw.get(i + 1..i + 3).ok_or_else(|| invalid(input, "truncated %-escape in path"))?;
            let hex = std::str::from_utf8(hex).map_err(|_| invalid(input, "bad %-escape in path"))?;
            let b = u8::from_str_radix(hex, 16).map_err(|_| invalid(input, "bad %-escape in path"))?;
            out.push(b);
            i += 3;
        } else {
            out.push(raw[i]);
            i += 1;
        }
    }
    if out.first() != Some(&b'/') {
        return Err(invalid(input, "path must be absolute"));
    }
    if out.contains(&0) {
        return Err(invalid(input, "path must not contain NUL"));
    }
    Ok(PathBuf::from(OsString::from_vec(out)))
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(p) => {
                f.write_str("file://")?;
                write_path(f, p)
            }
            Self::Executable(p) => {
                f.write_str("exe://")?;
                write_path(f, p)
            }
            Self::Stream(s) => write!(f, "tcp://{}/{}", s.local, s.peer),
            Self::Process(p) => write!(f, "process://{p}"),
        }
    }
}

impl FromStr for Resource {
    type Err = InvalidIdentifier;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(rest) = s.strip_prefix("file://") {
            return Ok(Self::File(parse_path(s, rest)?));
        }
        if let Some(rest) = s.strip_prefix("exe://") {
            return Ok(Self::Executable(parse_path(s, rest)?));
        }
        if let Some(rest) = s.strip_prefix("tcp://") {
            // The local address never contains '/', so the first '/' separates them.
            let (local, peer) = rest.split_once('/').ok_or_else(|| invalid(s, "a stream is tcp://LOCAL/PEER"))?;
            let local = local.parse().map_err(|_| invalid(s, "bad local socket address"))?;
            let peer = peer.parse().map_err(|_| invalid(s, "bad peer socket address"))?;
            return Ok(Self::stream(local, peer));
        }
        if let Some(rest) = s.strip_prefix("process://") {
            let (pid, start) =
                rest.split_once('.').ok_or_else(|| invalid(s, "a process is process://PID.STARTTIME"))?;
            let pid = pid.parse().map_err(|_| invalid(s, "bad pid"))?;
            let starttime = start.parse().map_err(|_| invalid(s, "bad start time"))?;
            return Ok(Self::Process(ProcessId { pid, starttime }));
        }
        Err(invalid(s, "unknown scheme (expected file://, tcp://, process:// or exe://)"))
    }
}

/// A resource together with the node it lives on: `file:///data/cv.txt@node-a`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct LocalizedResource {
    /// The resource.
    pub resource: Resource,
    /// The node that owns it.
    pub node: NodeId,
}

impl LocalizedResource {
    /// Pairs a resource with its node.
    pub fn new(resource: Resource, node: NodeId) -> Self {
        Self { resource, node }
    }

    /// Parses `RES@node`, or a bare `RES` localized on `default_node`.
    pub fn parse_with_default(s: &str, default_node: &NodeId) -> Result<Self, InvalidIdentifier> {
        match s.rsplit_once('@') {
            Some((res, node)) if !node.contains('/') => Ok(Self { resource: res.parse()?, node: node.parse()? }),
            _ => Ok(Self { resource: s.parse()?, node: default_node.clone() }),
        }
    }
}

impl fmt::Display for LocalizedResource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.resource, self.node)
    }
}

impl FromStr for LocalizedResource {
    type Err = InvalidIdentifier;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (res, node) = s.rsplit_once('@').ok_or_else(|| invalid(s, "a localized resource is RESOURCE@NODE"))?;
        Ok(Self { resource: res.parse()?, node: node.parse()? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn node() -> NodeId {
        NodeId::new("node-a").unwrap()
    }

    #[test]
    fn forms_print_as_documented() {
        let f = Resource::file("/data/cv.txt").unwrap();
        assert_eq!(f.to_string(), "file:///data/cv.txt");
        let s = Resource::stream("127.0.0.2:4000".parse().unwrap(), "[::1]:80".parse().unwrap());
        assert_eq!(s.to_string(), "tcp://127.0.0.2:4000/[::1]:80");
        let p = Resource::Process(ProcessId { pid: 42, starttime: 1234 });
        assert_eq!(p.to_string(), "process://42.1234");
        let e = Resource::Executable("/usr/bin/server".into());
        assert_eq!(e.to_string(), "exe:///usr/bin/server");
        assert_eq!(f.at(&node()).to_string(), "file:///data/cv.txt@node-a");
    }

    #[test]
    fn at_sign_and_percent_in_paths_round_trip() {
        let f = Resource::file("/data/a@b%c d").unwrap();
        let text = f.clone().at(&node()).to_string();
        assert_eq!(text, "file:///data/a%40b%25c d@node-a");
        let back: LocalizedResource = text.parse().unwrap();
        assert_eq!(back.resource, f);
        assert_eq!(back.node, node());
    }

    #[test]
    fn non_utf8_paths_round_trip() {
        let path = PathBuf::from(OsString::from_vec(vec![b'/', b'x', 0xff, b'y']));
        let f = Resource::File(path);
        let text = f.to_string();
        assert_eq!(text, "file:///x%FFy");
        assert_eq!(text.parse::<Resource>().unwrap(), f);
    }

    #[test]
    fn rejects_bad_identifiers() {
        for bad in [
            "",
            "file://relative",
            "tcp://1.2.3.4:5",
            "tcp://x/y",
            "process://12",
            "process://a.b",
            "ftp:///x",
            "file:///x%4",
            "file:///x%zz",
            "file:///a%00b",
        ] {
            assert!(bad.parse::<Resource>().is_err(), "{bad:?} parsed");
        }
        assert!("file:///x".parse::<LocalizedResource>().is_err());
        assert!("file:///x@".parse::<LocalizedResource>().is_err());
        assert!("file:///x@no de".parse::<LocalizedResource>().is_err());
        assert!(NodeId::new("a/b").is_err());
    }

    #[test]
    fn parse_with_default_node() {
        let l = LocalizedResource::parse_with_default("file:///x", &node()).unwrap();
        assert_eq!(l.node, node());
        let l = LocalizedResource::parse_with_default("file:///x@node-b", &node()).unwrap();
        assert_eq!(l.node.as_str(), "node-b");
    }

    fn arb_resource() -> impl Strategy<Value = Resource> {
        let path =
            proptest::collection::vec(any::<u8>().prop_filter("no NUL", |b| *b != 0), 0..40).prop_map(|mut v| {
                v.insert(0, b'/');
                PathBuf::from(OsString::from_vec(v))
            });
        let addr =
            (any::<[u8; 4]>(), any::<u16>(), any::<[u16; 8]>(), any::<bool>()).prop_map(|(v4, port, v6, six)| {
                if six {
                    SocketAddr::from((std::net::Ipv6Addr::from(v6), port))
                } else {
                    SocketAddr::from((std::net::Ipv4Addr::from(v4), port))
                }
            });
        prop_oneof![
            path.clone().prop_map(Resource::File),
            path.prop_map(Resource::Executable),
            (addr.clone(), addr).prop_map(|(l, p)| Resource::stream(l, p)),
            (any::<u32>(), any::<u64>()).prop_map(|(pid, starttime)| Resource::Process(ProcessId { pid, starttime })),
        ]
    }

    proptest! {
        #[test]
        fn every_resource_round_trips(r in arb_resource(), n in "[a-z0-9._-]{1,20}") {
            let text = r.to_string();
            prop_assert_eq!(text.parse::<Resource>().unwrap(), r.clone());
            let l = r.at(&NodeId::new(n).unwrap());
            prop_assert_eq!(l.to_string().parse::<LocalizedResource>().unwrap(), l);
        }
    }
}
