//! Relative paths inside a backup, validated so that no name from a source, a manifest or a store
//! can ever address something outside the directory it is joined to.

use std::ffi::OsStr;
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// A normalised relative path: `/`-separated components, none empty, `.` or `..`, no NUL byte.
/// The empty path is the root of the tree.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct RelPath(Vec<u8>);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RelPathError {
    #[error("path {0:?} is absolute; only paths relative to the snapshot root are allowed")]
    Absolute(String),
    #[error("path {0:?} contains a '..' or '.' component")]
    DotComponent(String),
    #[error("path {0:?} contains an empty component")]
    EmptyComponent(String),
    #[error("path {0:?} contains a NUL byte")]
    Nul(String),
}

impl RelPath {
    pub fn root() -> Self {
        RelPath(Vec::new())
    }

    /// Parses untrusted bytes (from a manifest, a command line or an index).
    pub fn parse(bytes: &[u8]) -> Result<Self, RelPathError> {
        let shown = || String::from_utf8_lossy(bytes).into_owned();
        if bytes.is_empty() {
            return Ok(Self::root());
        }
        if bytes.contains(&0) {
            return Err(RelPathError::Nul(shown()));
        }
        if bytes[0] == b'/' {
            return Err(RelPathError::Absolute(shown()));
        }
        for comp in bytes.split(|b| *b == b'/') {
            match comp {
                b"" => return Err(RelPathError::EmptyComponent(shown())),
                b"." | b".." => return Err(RelPathError::DotComponent(shown())),
                _ => {}
            }
        }
        Ok(RelPath(bytes.to_vec()))
    }

    /// Like `parse`, but forgiving for user input: strips leading `/`, `./` and trailing `/`.
    /// Any bytes a command line can carry (an OsString), so every name a listing shows can be given
    /// back.
    pub fn parse_user(s: impl AsRef<[u8]>) -> Result<Self, RelPathError> {
        let mut t = s.as_ref();
        while let Some(r) = t.strip_suffix(b"/") {
            t = r;
        }
        loop {
            if let Some(r) = t.strip_prefix(b"./") {
                t = r;
            } else if let Some(r) = t.strip_prefix(b"/") {
                t = r;
            } else {
                break;
            }
        }
        if t == b"." {
            t = b"";
        }
        Self::parse(t)
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Appends one file name as read from a directory (never contains '/').
    pub fn join_name(&self, name: &OsStr) -> Self {
        let mut v = Vec::with_capacity(self.0.len() + 1 + name.len());
        v.extend_from_slice(&self.0);
        if !v.is_empty() {
            v.push(b'/');
        }
        v.extend_from_slice(name.as_bytes());
        RelPath(v)
    }

    pub fn parent(&self) -> Option<RelPath> {
        if self.0.is_empty() {
            return None;
        }
        match self.0.iter().rposition(|b| *b == b'/') {
            Some(i) => Some(RelPath(self.0[..i].to_vec())),
            None => Some(RelPath::root()),
        }
    }

    pub fn file_name(&self) -> &[u8] {
        match self.0.iter().rposition(|b| *b == b'/') {
            Some(i) => &self.0[i + 1..],
            None => &self.0,
        }
    }

    pub fn depth(&self) -> usize {
        if self.0.is_empty() {
            0
        } else {
            self.0.iter().filter(|b| **b == b'/').count() + 1
        }
    }

    /// True when `self` is `other` or lies below it.
    pub fn starts_with(&self, other: &RelPath) -> bool {
        other.0.is_empty()
            || (self.0.starts_with(&other.0)
                && (self.0.len() == other.0.len() || self.0[other.0.len()] == b'/'))
    }

    /// All proper ancestors, root excluded, outermost first.
    pub fn ancestors(&self) -> Vec<RelPath> {
        let mut out = Vec::new();
        let mut cur = self.parent();
        while let Some(p) = cur {
            if p.is_root() {
                break;
            }
            cur = p.parent();
            out.push(p);
        }
        out.reverse();
        out
    }

    pub fn as_path(&self) -> &Path {
        Path::new(OsStr::from_bytes(&self.0))
    }

    /// `root` joined with this path. Safe because the path was validated: it cannot climb out.
    pub fn under(&self, root: &Path) -> PathBuf {
        if self.0.is_empty() {
            root.to_path_buf()
        } else {
            root.join(self.as_path())
        }
    }

    /// The path for people: control characters and invalid UTF-8 escaped (see `crate::escape`),
    /// so a hostile name cannot drive the terminal. Machines get the bytes (JSON, `as_bytes`).
    pub fn display(&self) -> String {
        if self.0.is_empty() {
            "/".to_string()
        } else {
            crate::escape::escape_bytes(&self.0).into_owned()
        }
    }
}

impl fmt::Debug for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(&self.0))
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rejects_escapes() {
        for bad in [
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a//b",
            "a/./b",
            "a/",
            "a\0b",
            "..",
            ".",
        ] {
            assert!(RelPath::parse(bad.as_bytes()).is_err(), "{bad:?} accepted");
        }
        assert!(RelPath::parse(b"a/b c/d..e").is_ok());
    }

    #[test]
    fn user_paths_are_normalised() {
        assert_eq!(RelPath::parse_user("/a/b/").unwrap().display(), "a/b");
        assert_eq!(RelPath::parse_user("./a").unwrap().display(), "a");
        assert!(RelPath::parse_user(".").unwrap().is_root());
        assert!(RelPath::parse_user("a/../b").is_err());
    }

    #[test]
    fn prefix_relation_respects_components() {
        let a = RelPath::parse(b"a/b").unwrap();
        assert!(a.starts_with(&RelPath::parse(b"a").unwrap()));
        assert!(!RelPath::parse(b"a/bc").unwrap().starts_with(&a));
        assert!(a.starts_with(&RelPath::root()));
        assert_eq!(a.ancestors(), vec![RelPath::parse(b"a").unwrap()]);
    }

    proptest! {
        #[test]
        fn parsed_paths_never_escape(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(p) = RelPath::parse(&bytes) {
                let joined = p.under(Path::new("/root"));
                prop_assert!(joined.starts_with("/root"));
                for c in joined.strip_prefix("/root").unwrap().components() {
                    prop_assert!(matches!(c, std::path::Component::Normal(_)));
                }
            }
        }
    }
}
