//! The TOML configuration: store, state directory and jobs. Every error names file:line.

use std::collections::HashSet;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use tapectl::config::line_col;
use toml::Spanned;

use crate::select::Selector;

#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub state_dir: PathBuf,
    pub store: StoreConfig,
    pub jobs: Vec<Job>,
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

#[derive(Debug, Clone)]
pub struct Job {
    pub name: String,
    pub source: PathBuf,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    pub cross_filesystems: bool,
    pub schedule: Option<String>,
    pub retention: Retention,
    pub selector: Selector,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    pub keep_last: Option<u32>,
    pub keep_hourly: Option<u32>,
    pub keep_daily: Option<u32>,
    pub keep_weekly: Option<u32>,
    pub keep_monthly: Option<u32>,
    pub keep_yearly: Option<u32>,
}

impl Retention {
    pub fn is_empty(&self) -> bool {
        *self == Retention::default()
    }
}

/// One error type for the whole rackvault.toml: `file:line:col: message` (the `[library]` table is
/// parsed by tapectl).
pub use tapectl::config::ConfigError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    state_dir: Option<Spanned<String>>,
    store: Spanned<RawStore>,
    #[serde(default, rename = "job")]
    jobs: Vec<RawJob>,
    /// The tape library; validated by tapectl's own parser below.
    #[allow(dead_code)]
    library: Option<toml::Value>,
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJob {
    name: Spanned<String>,
    source: Spanned<String>,
    #[serde(default)]
    include: Vec<Spanned<String>>,
    #[serde(default)]
    exclude: Vec<Spanned<String>>,
    #[serde(default)]
    cross_filesystems: bool,
    schedule: Option<Spanned<String>>,
    #[serde(default)]
    retention: Retention,
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.display().to_string(),
            line: 0,
            col: 0,
            msg: format!("cannot read configuration: {e}"),
        })?;
        Self::parse(&text, path)
    }

    /// Parses `text`; relative paths in it are resolved against the directory of `path`.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let err_at = |span: Option<Range<usize>>, msg: String| {
            let (line, col) = span.map(|s| line_col(text, s.start)).unwrap_or((1, 1));
            ConfigError {
                file: file.clone(),
                line,
                col,
                msg,
            }
        };
        let raw: RawConfig =
            toml::from_str(text).map_err(|e| err_at(e.span(), e.message().to_string()))?;
        if raw.library.is_some() {
            tapectl::config::Settings::parse(text, path)?;
        }
        let base = path
            .parent()
            .map(|p| {
                if p.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    p
                }
            })
            .unwrap_or(Path::new("."));
        let base = std::path::absolute(base).unwrap_or_else(|_| base.to_path_buf());
        let resolve = |p: &str| -> PathBuf {
            if Path::new(p).is_absolute() {
                PathBuf::from(p)
            } else {
                base.join(p)
            }
        };

        let state_dir = match &raw.state_dir {
            Some(s) if s.get_ref().is_empty() => {
                return Err(err_at(Some(s.span()), "state_dir is empty".into()));
            }
            Some(s) => resolve(s.get_ref()),
            None => base.join("var/state"),
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
                validate_dataset(parent.get_ref()).map_err(|m| err_at(Some(parent.span()), m))?;
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

        let mut names = HashSet::new();
        let mut jobs = Vec::new();
        for j in raw.jobs {
            let name = j.name.get_ref().clone();
            validate_job_name(&name).map_err(|m| err_at(Some(j.name.span()), m))?;
            if !names.insert(name.clone()) {
                return Err(err_at(
                    Some(j.name.span()),
                    format!("job {name:?} is defined twice"),
                ));
            }
            if j.source.get_ref().is_empty() {
                return Err(err_at(
                    Some(j.source.span()),
                    format!("job {name:?}: source is empty"),
                ));
            }
            let source = resolve(j.source.get_ref());
            if let Some(s) = &j.schedule {
                validate_schedule(s.get_ref())
                    .map_err(|m| err_at(Some(s.span()), format!("job {name:?}: {m}")))?;
            }
            let mut include = Vec::new();
            for g in &j.include {
                Selector::check_glob(g.get_ref())
                    .map_err(|m| err_at(Some(g.span()), format!("job {name:?}: include {m}")))?;
                include.push(g.get_ref().clone());
            }
            let mut exclude = Vec::new();
            for g in &j.exclude {
                Selector::check_glob(g.get_ref())
                    .map_err(|m| err_at(Some(g.span()), format!("job {name:?}: exclude {m}")))?;
                exclude.push(g.get_ref().clone());
            }
            let selector =
                Selector::new(&include, &exclude).map_err(|m| err_at(Some(j.name.span()), m))?;
            jobs.push(Job {
                name,
                source,
                include,
                exclude,
                cross_filesystems: j.cross_filesystems,
                schedule: j.schedule.map(|s| s.into_inner()),
                retention: j.retention,
                selector,
            });
        }
        Ok(Config {
            path: path.to_path_buf(),
            state_dir,
            store,
            jobs,
        })
    }

    pub fn job(&self, name: &str) -> anyhow::Result<&Job> {
        self.jobs.iter().find(|j| j.name == name).ok_or_else(|| {
            let known: Vec<_> = self.jobs.iter().map(|j| j.name.as_str()).collect();
            anyhow::anyhow!(
                "no job named {name:?} in {} (jobs: {})",
                self.path.display(),
                known.join(", ")
            )
        })
    }
}

/// Job names become directory names and ZFS dataset names: keep them to a safe alphabet.
pub fn validate_job_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid job name {name:?}: use 1-64 letters, digits, '-', '_' or '.', starting with a letter or digit"
        ))
    }
}

fn validate_dataset(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && !name.starts_with('/')
        && !name.ends_with('/')
        && !name.contains("//")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid ZFS dataset name {name:?} (expected e.g. \"tank/backups\")"
        ))
    }
}

/// Checks a five-field cron expression (the daemon uses it to schedule runs).
pub fn validate_schedule(s: &str) -> Result<(), String> {
    use std::str::FromStr;
    let fields = s.split_whitespace().count();
    if fields != 5 {
        return Err(format!(
            "schedule {s:?} must have 5 fields (minute hour day-of-month month day-of-week), found {fields}"
        ));
    }
    croner::Cron::from_str(s)
        .map(|_| ())
        .map_err(|e| format!("invalid schedule {s:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(t: &str) -> Result<Config, ConfigError> {
        Config::parse(t, Path::new("/etc/rv/rackvault.toml"))
    }

    const GOOD: &str = r#"
state_dir = "state"
[store]
kind = "dir"
path = "/srv/backup"

[[job]]
name = "docs"
source = "../docs"
include = ["**/*.md", "img/**"]
exclude = ["*.tmp"]
schedule = "15 3 * * *"
retention = { keep_last = 3, keep_daily = 7 }
"#;

    #[test]
    fn parses_and_resolves_relative_paths() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.state_dir, PathBuf::from("/etc/rv/state"));
        assert_eq!(
            c.store,
            StoreConfig::Dir {
                path: "/srv/backup".into(),
                sync: true
            }
        );
        let j = &c.jobs[0];
        assert_eq!(j.source, PathBuf::from("/etc/rv/../docs"));
        assert_eq!(j.retention.keep_daily, Some(7));
        assert!(!j.cross_filesystems);
    }

    #[test]
    fn errors_name_the_line() {
        let cases = [
            (GOOD.replace("15 3 * * *", "61 3 * * *"), 12, "schedule"),
            (GOOD.replace("15 3 * * *", "every day"), 12, "5 fields"),
            (GOOD.replace("\"img/**\"", "\"img/[**\""), 10, "include"),
            (
                GOOD.replace("name = \"docs\"", "name = \"../x\""),
                8,
                "invalid job name",
            ),
            (GOOD.replace("keep_daily", "keep_dayly"), 13, "keep_dayly"),
            (GOOD.replace("kind = \"dir\"", "kind = \"tape\""), 4, "tape"),
            (GOOD.replace("schedule", "schedul"), 12, "schedul"),
            (
                format!("{GOOD}\n[[job]]\nname = \"docs\"\nsource = \"/x\"\n"),
                16,
                "twice",
            ),
            ("[store\nkind=1".to_string(), 1, ""),
            (
                format!("{GOOD}\n[library]\ntransport = \"sgio\"\nurl = \"x\"\n"),
                17,
                "`url` does not apply",
            ),
        ];
        for (text, line, needle) in cases {
            let e = parse(&text).unwrap_err();
            assert_eq!(e.line, line, "{e}");
            assert!(e.to_string().contains(needle), "{e}");
            assert!(e.to_string().starts_with("/etc/rv/rackvault.toml:"), "{e}");
        }
    }

    #[test]
    fn a_valid_library_table_is_accepted() {
        parse(&format!(
            "{GOOD}\n[library]\ntransport = \"virtual\"\ndir = \"vtl\"\n"
        ))
        .unwrap();
    }

    #[test]
    fn zfs_store_and_compression() {
        let t = "[store]\nkind = \"zfs\"\nparent = \"tank/backups\"\ncompression = \"gzip-9\"\n";
        let c = parse(t).unwrap();
        assert_eq!(
            c.store,
            StoreConfig::Zfs {
                parent: "tank/backups".into(),
                compression: Some("gzip-9".into())
            }
        );
        let e = parse(&t.replace("gzip-9", "brotli")).unwrap_err();
        assert_eq!(e.line, 4);
        let e = parse(&t.replace("tank/backups", "/tank")).unwrap_err();
        assert_eq!(e.line, 3);
    }
}
