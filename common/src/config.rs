//! rackvault.toml: one file that every binary reads. Each part parses its own tables (backupd its
//! jobs, tapectl its `[library]`) from a [`ConfigFile`] and reports problems as a [`ConfigError`]
//! naming file:line:col; the tables several parts read, `state_dir` and `[store]`, are parsed here.

use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::DeserializeOwned;
use toml::Spanned;

/// `file:line:col: message`; an error about the whole file (it cannot be read) has no position
/// (line 0) and reads `cannot read configuration FILE: cause`.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub col: usize,
    pub msg: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.msg)
        } else {
            write!(f, "{}:{}:{}: {}", self.file, self.line, self.col, self.msg)
        }
    }
}

impl ConfigError {
    /// The configuration file could not be read.
    pub fn unreadable(path: &Path, e: &std::io::Error) -> ConfigError {
        ConfigError {
            file: path.display().to_string(),
            line: 0,
            col: 0,
            msg: format!(
                "cannot read configuration {}: {e}\npass --config FILE or set RACKVAULT_CONFIG",
                path.display()
            ),
        }
    }

    /// An error at the start of `span` in `text` (1:1 when there is no span).
    pub fn at(file: &str, text: &str, span: Option<Range<usize>>, msg: String) -> ConfigError {
        let (line, col) = span.map(|s| line_col(text, s.start)).unwrap_or((1, 1));
        ConfigError {
            file: file.to_string(),
            line,
            col,
            msg,
        }
    }
}

/// One rackvault.toml being parsed: its text, its name in errors, and the directory its relative
/// paths resolve against.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    file: String,
    text: String,
    base: PathBuf,
}

impl ConfigFile {
    pub fn load(path: &Path) -> Result<ConfigFile, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::unreadable(path, &e))?;
        Ok(ConfigFile::new(&text, path))
    }

    pub fn new(text: &str, path: &Path) -> ConfigFile {
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let base = std::path::absolute(base).unwrap_or_else(|_| base.to_path_buf());
        ConfigFile {
            file: path.display().to_string(),
            text: text.to_string(),
            base,
        }
    }

    /// An error at the start of `span` (1:1 when there is no span).
    pub fn error(&self, span: Option<Range<usize>>, msg: String) -> ConfigError {
        ConfigError::at(&self.file, &self.text, span, msg)
    }

    /// The directory of the file: relative paths in it mean paths below this.
    pub fn base(&self) -> &Path {
        &self.base
    }

    pub fn resolve(&self, p: &str) -> PathBuf {
        if Path::new(p).is_absolute() {
            PathBuf::from(p)
        } else {
            self.base.join(p)
        }
    }

    /// Deserializes the whole document into a part's view of it (tables it does not name are
    /// ignored unless `T` denies unknown fields).
    pub fn tables<T: DeserializeOwned>(&self) -> Result<T, ConfigError> {
        toml::from_str(&self.text).map_err(|e| self.error(e.span(), e.message().to_string()))
    }
}

/// The tables every part reads: where state lives and where the snapshots are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedConfig {
    pub state_dir: PathBuf,
    pub store: StoreConfig,
    /// Where `state_dir` and the `[store]` table are in the file, for errors found later
    /// (e.g. `check-config` finding the directory unwritable).
    pub state_dir_span: Option<Range<usize>>,
    pub store_span: Range<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreConfig {
    /// Embedded default: snapshots are directory trees, unchanged files hard-linked.
    Dir { path: PathBuf, sync: bool },
    /// One dataset per job under `parent`, snapshotted after each run.
    Zfs {
        parent: String,
        compression: Option<String>,
    },
}

#[derive(Deserialize)]
struct RawShared {
    state_dir: Option<Spanned<String>>,
    store: Spanned<RawStore>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    kind: Spanned<String>,
    path: Option<Spanned<String>>,
    sync: Option<Spanned<bool>>,
    parent: Option<Spanned<String>>,
    compression: Option<Spanned<String>>,
}

impl SharedConfig {
    pub fn parse(cf: &ConfigFile) -> Result<SharedConfig, ConfigError> {
        let err_at = |span: Option<Range<usize>>, msg: String| cf.error(span, msg);
        let resolve = |p: &str| cf.resolve(p);
        let raw: RawShared = cf.tables()?;
        let state_dir = match &raw.state_dir {
            Some(s) if s.get_ref().is_empty() => {
                return Err(err_at(Some(s.span()), "state_dir is empty".into()));
            }
            Some(s) => resolve(s.get_ref()),
            None => cf.base().join("var/state"),
        };
        let store_span = raw.store.span();
        let rs = raw.store.into_inner();
        let only =
            |kind: &str, fields: &[(&str, Option<Range<usize>>)]| -> Result<(), ConfigError> {
                match fields.iter().find(|(_, s)| s.is_some()) {
                    Some((f, s)) => Err(err_at(
                        s.clone(),
                        format!("store option `{f}` does not apply to kind = \"{kind}\""),
                    )),
                    None => Ok(()),
                }
            };
        let store = match rs.kind.get_ref().as_str() {
            "dir" => {
                only(
                    "dir",
                    &[
                        ("parent", rs.parent.as_ref().map(|p| p.span())),
                        ("compression", rs.compression.as_ref().map(|p| p.span())),
                    ],
                )?;
                let path = rs.path.ok_or_else(|| {
                    err_at(
                        Some(store_span.clone()),
                        "store of kind \"dir\" needs `path`".into(),
                    )
                })?;
                if path.get_ref().is_empty() {
                    return Err(err_at(Some(path.span()), "store path is empty".into()));
                }
                StoreConfig::Dir {
                    path: resolve(path.get_ref()),
                    sync: rs.sync.map(|s| s.into_inner()).unwrap_or(true),
                }
            }
            "zfs" => {
                only(
                    "zfs",
                    &[
                        ("path", rs.path.as_ref().map(|p| p.span())),
                        ("sync", rs.sync.as_ref().map(|p| p.span())),
                    ],
                )?;
                let parent = rs.parent.ok_or_else(|| {
                    err_at(
                        Some(store_span.clone()),
                        "store of kind \"zfs\" needs `parent` (a dataset, e.g. \"tank/backups\")"
                            .into(),
                    )
                })?;
                crate::zfs::validate_dataset(parent.get_ref())
                    .map_err(|m| err_at(Some(parent.span()), m))?;
                let compression = match rs.compression {
                    Some(c) => {
                        let v = c.get_ref();
                        let ok = ["on", "off", "lzjb", "gzip", "zle", "lz4", "zstd"]
                            .contains(&v.as_str())
                            || v.strip_prefix("gzip-").is_some_and(|n| {
                                matches!(n, "1" | "2" | "3" | "4" | "5" | "6" | "7" | "8" | "9")
                            })
                            || v.strip_prefix("zstd-").is_some_and(|n| {
                                n.parse::<u32>().is_ok_and(|n| (1..=19).contains(&n))
                            });
                        if !ok {
                            return Err(err_at(
                                Some(c.span()),
                                format!(
                                    "unknown compression {v:?} (use zstd, lz4, gzip[-N], lzjb, zle, on or off)"
                                ),
                            ));
                        }
                        Some(v.clone())
                    }
                    None => None,
                };
                StoreConfig::Zfs {
                    parent: parent.into_inner(),
                    compression,
                }
            }
            other => {
                return Err(err_at(
                    Some(rs.kind.span()),
                    format!("unknown store kind {other:?} (use \"dir\" or \"zfs\")"),
                ));
            }
        };
        Ok(SharedConfig {
            state_dir,
            store,
            state_dir_span: raw.state_dir.as_ref().map(|s| s.span()),
            store_span,
        })
    }
}

/// 1-based line and column (in characters) of a byte offset, as config errors report them. Shared with
/// backupd's configuration.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text.as_bytes()[..offset.min(text.len())];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let col = String::from_utf8_lossy(&before[line_start..])
        .chars()
        .count()
        + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_characters_and_survives_any_offset() {
        let t = "a\n\u{e9}t\u{e9} = x\n";
        assert_eq!(line_col(t, 0), (1, 1));
        assert_eq!(line_col(t, 2), (2, 1));
        assert_eq!(line_col(t, 7), (2, 4));
        for off in 0..=t.len() + 3 {
            let _ = line_col(t, off);
        }
    }
}
