//! Include/exclude selection with `**` globs, matched against paths relative to the source root.
//!
//! A pattern containing `/` is anchored at the source root (`data/**/*.db`); a pattern without
//! `/` matches the file name at any depth (`*.tmp`), as in rsync and .gitignore. `*` never
//! crosses `/`; `**` does. An excluded directory is pruned: nothing below it is read.

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use common::relpath::RelPath;

#[derive(Debug, Clone)]
pub struct Selector {
    include: Option<GlobSet>,
    exclude: GlobSet,
}

fn build(pattern: &str) -> Result<globset::Glob, String> {
    let p = pattern.trim_start_matches("./");
    let p = if p.contains('/') {
        p.trim_start_matches('/').to_string()
    } else {
        format!("**/{p}")
    };
    GlobBuilder::new(&p)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
        .map_err(|e| format!("glob {pattern:?} is invalid: {}", e.kind()))
}

impl Selector {
    pub fn check_glob(pattern: &str) -> Result<(), String> {
        if pattern.is_empty() {
            return Err("glob is empty".into());
        }
        build(pattern).map(|_| ())
    }

    /// No include patterns means "everything".
    pub fn new(include: &[String], exclude: &[String]) -> Result<Self, String> {
        let set = |pats: &[String]| -> Result<GlobSet, String> {
            let mut b = GlobSetBuilder::new();
            for p in pats {
                b.add(build(p)?);
            }
            b.build().map_err(|e| e.to_string())
        };
        let include = if include.is_empty() || include.iter().any(|p| p == "**") {
            None
        } else {
            Some(set(include)?)
        };
        Ok(Selector {
            include,
            exclude: set(exclude)?,
        })
    }

    pub fn everything() -> Self {
        Selector::new(&[], &[]).expect("empty selector builds")
    }

    pub fn is_excluded(&self, path: &RelPath) -> bool {
        !path.is_root() && self.exclude.is_match(path.as_path())
    }

    /// Whether a non-directory (or an empty directory) at `path` is selected on its own.
    pub fn is_included(&self, path: &RelPath) -> bool {
        match &self.include {
            None => true,
            Some(set) => set.is_match(path.as_path()),
        }
    }

    pub fn includes_everything(&self) -> bool {
        self.include.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> RelPath {
        RelPath::parse(s.as_bytes()).unwrap()
    }

    #[test]
    fn anchored_and_basename_patterns() {
        let s = Selector::new(
            &["docs/**".into(), "*.toml".into()],
            &["*.tmp".into(), "docs/private".into()],
        )
        .unwrap();
        assert!(s.is_included(&p("docs/a/b.md")));
        assert!(s.is_included(&p("x/y/Cargo.toml")));
        assert!(!s.is_included(&p("src/main.rs")));
        assert!(s.is_excluded(&p("a/b/c.tmp")));
        assert!(s.is_excluded(&p("docs/private")));
        assert!(!s.is_excluded(&p("docs/private2")));
        assert!(!s.is_excluded(&RelPath::root()));
    }

    #[test]
    fn star_does_not_cross_directories() {
        let s = Selector::new(&["data/*.db".into()], &[]).unwrap();
        assert!(s.is_included(&p("data/a.db")));
        assert!(!s.is_included(&p("data/sub/a.db")));
        let s = Selector::new(&["data/**/*.db".into()], &[]).unwrap();
        assert!(s.is_included(&p("data/sub/deeper/a.db")));
        assert!(s.is_included(&p("data/a.db")));
    }

    #[test]
    fn bad_glob_is_reported() {
        assert!(Selector::check_glob("a/[b").unwrap_err().contains("a/[b"));
    }
}
