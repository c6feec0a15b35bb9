//! The `RES` argument of the CLI: a resource identifier or a plain path, with an optional
//! `@node` suffix.
//!
//! - A URI (`file://`, `tcp://`, `process://`, `exe://`) is checked with the shared parser
//!   ([`Resource`], [`LocalizedResource`]) and sent in its printed form.
//! - Anything else is a path: it becomes `file://` of its canonical form. A path that no
//!   longer exists (a deleted file is a normal thing to ask about) is made absolute against
//!   the current directory instead, through its canonical parent when that exists, and
//!   [`ResourceArg::unresolved`] says so, for a note when the daemon does not know it.
//! - `PATH@node` names a node when `PATH@node` itself is not an existing path.
//!
//! A bare identifier (no `@node`) is sent bare: the daemon localizes it on its own node.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use trace2e_proto::{InvalidIdentifier, LocalizedResource, NodeId, Resource};

/// A parsed `RES` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceArg {
    /// The identifier sent to the daemon: `RESOURCE` or `RESOURCE@NODE`.
    pub id: String,
    /// The path as given, when it did not exist and was made absolute without being
    /// canonicalized (so it may not be the name the daemon knows).
    pub unresolved: Option<PathBuf>,
}

impl ResourceArg {
    /// Parses `arg`, resolving a relative path against the current directory.
    pub fn parse(arg: &str) -> Result<Self, InvalidResourceArg> {
        let cwd = std::env::current_dir().map_err(InvalidResourceArg::Cwd)?;
        Self::parse_in(arg, &cwd)
    }

    /// Parses `arg`, resolving a relative path against `cwd`.
    pub fn parse_in(arg: &str, cwd: &Path) -> Result<Self, InvalidResourceArg> {
        if arg.is_empty() {
            return Err(InvalidResourceArg::Empty);
        }
        if has_scheme(arg) {
            let id = match arg.rsplit_once('@') {
                Some((_, node)) if !node.contains('/') => arg.parse::<LocalizedResource>()?.to_string(),
                _ => arg.parse::<Resource>()?.to_string(),
            };
            return Ok(Self { id, unresolved: None });
        }
        let whole = cwd.join(arg);
        let (path, node) = match arg.rsplit_once('@') {
            Some((path, node)) if !path.is_empty() && !whole.exists() && !node.contains('/') => {
                (path, Some(node.parse::<NodeId>()?))
            }
            _ => (arg, None),
        };
        let (path, resolved) = absolute_file(&cwd.join(path));
        let resource = Resource::file(path)?;
        let id = match node {
            Some(node) => resource.at(&node).to_string(),
            None => resource.to_string(),
        };
        Ok(Self { id, unresolved: (!resolved).then(|| PathBuf::from(arg)) })
    }
}

impl FromStr for ResourceArg {
    type Err = InvalidResourceArg;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for ResourceArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

/// Why a `RES` argument was refused.
#[derive(Debug, thiserror::Error)]
pub enum InvalidResourceArg {
    /// An empty argument.
    #[error("empty resource")]
    Empty,
    /// A URI or node name that does not parse.
    #[error(transparent)]
    Identifier(#[from] InvalidIdentifier),
    /// The current directory is needed to resolve a relative path and is unavailable.
    #[error("cannot resolve a relative path: current directory unavailable: {0}")]
    Cwd(#[source] io::Error),
}

/// `scheme://…`, with a scheme of ASCII letters: never a plain path in practice.
fn has_scheme(arg: &str) -> bool {
    arg.split_once("://")
        .is_some_and(|(scheme, _)| !scheme.is_empty() && scheme.bytes().all(|b| b.is_ascii_alphabetic()))
}

/// The canonical form of `path` (absolute), and whether it could be canonicalized.
///
/// A missing file keeps its name under its canonical parent: that is the name the daemon
/// recorded while the file existed.
fn absolute_file(path: &Path) -> (PathBuf, bool) {
    if let Ok(canonical) = std::fs::canonicalize(path) {
        return (canonical, true);
    }
    // `absolute` drops `.` components but keeps `..` (resolving it lexically could be wrong
    // across symlinks); the parent's canonical form resolves both when the parent exists.
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    if let (Some(parent), Some(name)) = (absolute.parent(), absolute.file_name())
        && let Ok(parent) = std::fs::canonicalize(parent)
    {
        return (parent.join(name), false);
    }
    (absolute, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(arg: &str, cwd: &Path) -> ResourceArg {
        ResourceArg::parse_in(arg, cwd).unwrap_or_else(|e| panic!("{arg:?}: {e}"))
    }

    #[test]
    fn uris_are_checked_and_normalized() {
        let cwd = Path::new("/");
        assert_eq!(parse("file:///data/cv.txt", cwd).id, "file:///data/cv.txt");
        assert_eq!(parse("file:///data/cv.txt@node-b", cwd).id, "file:///data/cv.txt@node-b");
        assert_eq!(parse("exe:///usr/bin/server", cwd).id, "exe:///usr/bin/server");
        assert_eq!(parse("tcp://10.0.0.1:4000/[::1]:80", cwd).id, "tcp://10.0.0.1:4000/[::1]:80");
        assert_eq!(parse("tcp://10.0.0.1:4000/10.0.0.2:80@node-a", cwd).id, "tcp://10.0.0.1:4000/10.0.0.2:80@node-a");
        assert_eq!(parse("process://42.1234", cwd).id, "process://42.1234");
        assert_eq!(parse("file:///a%40b", cwd).id, "file:///a%40b");
        assert_eq!(parse("file:///missing", cwd).unresolved, None);
    }

    #[test]
    fn bad_uris_are_refused() {
        let cwd = Path::new("/");
        for bad in ["", "file://relative", "ftp:///x", "process://12", "tcp://x/y", "file:///x@bad node", "file:///x@"]
        {
            assert!(ResourceArg::parse_in(bad, cwd).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn existing_paths_become_canonical_file_ids() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::create_dir(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/a.txt"), b"x").unwrap();
        std::os::unix::fs::symlink(root.join("sub"), root.join("link")).unwrap();
        let want = format!("file://{}/sub/a.txt", root.display());
        for arg in ["sub/a.txt", "./sub/../sub/a.txt", "link/a.txt"] {
            let r = parse(arg, &root);
            assert_eq!(r.id, want, "{arg}");
            assert_eq!(r.unresolved, None);
        }
        let absolute = root.join("link/a.txt");
        assert_eq!(parse(absolute.to_str().unwrap(), Path::new("/")).id, want);
        assert_eq!(parse("sub/a.txt@node-b", &root).id, format!("{want}@node-b"));
    }

    #[test]
    fn missing_paths_are_made_absolute_through_their_parent() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::create_dir(root.join("sub")).unwrap();
        std::os::unix::fs::symlink(root.join("sub"), root.join("link")).unwrap();
        let r = parse("link/gone.txt", &root);
        assert_eq!(r.id, format!("file://{}/sub/gone.txt", root.display()));
        assert_eq!(r.unresolved, Some(PathBuf::from("link/gone.txt")));
        let r = parse("nodir/./gone.txt", &root);
        assert_eq!(r.id, format!("file://{}/nodir/gone.txt", root.display()));
        assert!(r.unresolved.is_some());
    }

    #[test]
    fn at_sign_in_an_existing_path_is_part_of_the_name() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::write(root.join("me@home"), b"x").unwrap();
        let r = parse("me@home", &root);
        assert_eq!(r.id, format!("file://{}/me%40home", root.display()));
        // Not existing: the suffix names a node.
        let r = parse("you@node-b", &root);
        assert_eq!(r.id, format!("file://{}/you@node-b", root.display()));
        assert!(ResourceArg::parse_in("you@bad node", &root).is_err());
    }
}
