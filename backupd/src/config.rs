//! The TOML configuration: store, state directory and jobs. Every error names file:line.

use std::collections::HashSet;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use common::config::{ConfigError, ConfigFile, SharedConfig, StoreConfig};

use crate::select::Selector;

#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub state_dir: PathBuf,
    pub store: StoreConfig,
    /// The file itself and where its shared tables are: errors found after parsing point there.
    file: ConfigFile,
    state_dir_span: Option<Range<usize>>,
    store_span: Range<usize>,
    pub jobs: Vec<Job>,
    /// `backupd serve`: the daemon's API, scheduler limits and shutdown.
    pub serve: ServeConfig,
    /// Where alerts go (none: alerts are only logged).
    pub alerts: Vec<AlertTarget>,
    /// `[[tape_job]]`: snapshots of jobs written to tape on schedules.
    pub tape_jobs: Vec<crate::tape_jobs::TapeJob>,
    /// The tape library (`[library]`, or the embedded virtual library).
    pub library: tapectl::config::Settings,
    /// Pools, `[tape]` and `[rotation]`.
    pub tape: tapectl::pools::TapeSettings,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeConfig {
    /// The HTTP API's address (default 127.0.0.1:8480).
    pub listen: std::net::SocketAddr,
    /// Bearer token for mutating API calls; without one they are refused.
    pub token: Option<String>,
    /// How many jobs may run at once (default 1).
    pub max_concurrent: usize,
    /// On SIGTERM, running jobs get this long to finish before they are aborted (default 60 s).
    pub stop_grace: std::time::Duration,
    /// After downtime, run a job once if a scheduled time was missed (default true; per job too).
    pub catch_up: bool,
    /// Host names the API answers to besides IP addresses and `localhost` (lowercase, no
    /// port): a request whose Host names anything else is refused, against DNS rebinding.
    pub allowed_hosts: Vec<String>,
    /// Where the daemon keeps copies of the catalogs (default `<state_dir>/catalog-backups`).
    pub catalog_backup_dir: Option<PathBuf>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 8480)),
            token: None,
            max_concurrent: 1,
            stop_grace: std::time::Duration::from_secs(60),
            catch_up: true,
            allowed_hosts: Vec::new(),
            catalog_backup_dir: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertEvent {
    /// A run failed.
    Failure,
    /// A job has had no successful run within its `stale_after` window.
    Stale,
    /// A job succeeded again after a failure or staleness.
    Recovery,
    /// A person must act at the library: a tape job waits for a tape to be inserted.
    Attention,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertKind {
    /// A Discord channel webhook (`{"content": …, "embeds": […]}`).
    Discord,
    /// Any HTTP endpoint that accepts a JSON POST (the event as a JSON object).
    Webhook,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertTarget {
    pub kind: AlertKind,
    pub url: String,
    pub events: Vec<AlertEvent>,
}

/// How a job gets a point-in-time view of its source.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Consistency {
    /// Read the live tree (the default; fine for data nobody writes during the run).
    #[default]
    None,
    /// Read the live tree between the `[job.hooks]` pre and post commands.
    Hooks,
    /// Snapshot the datasets atomically (one `zfs snapshot` call) and read through clones.
    ZfsSnapshot {
        datasets: Vec<String>,
        recursive: bool,
    },
    /// A read-only btrfs snapshot of `subvolume`, made in `snapshot_dir`.
    BtrfsSnapshot {
        subvolume: PathBuf,
        snapshot_dir: Option<PathBuf>,
    },
    /// pg_dump (named databases) or pg_dumpall (none named), written as plain SQL.
    Postgres(Postgres),
    /// SQLite's online backup API, one copy per named database file.
    Sqlite { databases: Vec<PathBuf> },
}

impl Consistency {
    pub fn kind(&self) -> &'static str {
        match self {
            Consistency::None => "none",
            Consistency::Hooks => "hooks",
            Consistency::ZfsSnapshot { .. } => "zfs-snapshot",
            Consistency::BtrfsSnapshot { .. } => "btrfs-snapshot",
            Consistency::Postgres(_) => "postgres",
            Consistency::Sqlite { .. } => "sqlite",
        }
    }

    /// Providers that produce dump files: the job's source is their dump directory.
    pub fn makes_dumps(&self) -> bool {
        matches!(self, Consistency::Postgres(_) | Consistency::Sqlite { .. })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Postgres {
    /// Databases dumped with pg_dump, one file each; empty: the whole cluster with pg_dumpall.
    pub databases: Vec<String>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub user: Option<String>,
    /// A libpq password file (PGPASSFILE).
    pub password_file: Option<PathBuf>,
    /// Where pg_dump and pg_dumpall are (default: found on PATH).
    pub bin_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hooks {
    /// Run with `sh -c` before the view is taken; failing fails the run (nothing is published).
    pub pre: Option<String>,
    /// Run with `sh -c` after the view is taken (or after the copy when reading live); always runs.
    pub post: Option<String>,
    /// Each hook is killed after this long (default 10 min).
    pub timeout: std::time::Duration,
}

#[derive(Debug, Clone)]
pub struct Job {
    pub name: String,
    pub source: PathBuf,
    /// Where `source` is in the file (none for dump jobs, whose source is their dump directory).
    source_span: Option<Range<usize>>,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    pub cross_filesystems: bool,
    pub schedule: Option<String>,
    pub retention: Retention,
    pub selector: Selector,
    /// Catch up a missed scheduled run after downtime (default: `[serve] catch_up`).
    pub catch_up: bool,
    /// Alert when the job has had no successful run for this long.
    pub stale_after: Option<std::time::Duration>,
    /// A run still going after this long is stopped and fails (a hung source or dump must not
    /// hold the queue forever).
    pub timeout: Option<std::time::Duration>,
    pub consistency: Consistency,
    pub hooks: Option<Hooks>,
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    /// `state_dir` and `[store]` are read by every part: parsed by `SharedConfig`.
    #[allow(dead_code)]
    state_dir: Option<toml::Value>,
    #[allow(dead_code)]
    store: toml::Value,
    #[serde(default, rename = "job")]
    jobs: Vec<RawJob>,
    serve: Option<Spanned<RawServe>>,
    #[serde(default, rename = "alert")]
    alerts: Vec<Spanned<RawAlert>>,
    /// The tape library; validated by tapectl's own parser below.
    #[allow(dead_code)]
    library: Option<toml::Value>,
    /// Tape pools and `[tape]`: tapectl's, validated by its parser below.
    #[allow(dead_code)]
    pool: Option<toml::Value>,
    #[allow(dead_code)]
    tape: Option<toml::Value>,
    #[allow(dead_code)]
    rotation: Option<toml::Value>,
    #[serde(default, rename = "tape_job")]
    tape_jobs: Vec<Spanned<crate::tape_jobs::config::RawTapeJob>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServe {
    listen: Option<Spanned<String>>,
    token: Option<Spanned<String>>,
    token_file: Option<Spanned<String>>,
    max_concurrent: Option<Spanned<i64>>,
    stop_grace: Option<Spanned<String>>,
    catch_up: Option<bool>,
    allowed_hosts: Option<Vec<Spanned<String>>>,
    catalog_backup_dir: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAlert {
    kind: Spanned<String>,
    url: Option<Spanned<String>>,
    url_file: Option<Spanned<String>>,
    events: Option<Vec<Spanned<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConsistency {
    kind: Spanned<String>,
    datasets: Option<Spanned<Vec<Spanned<String>>>>,
    recursive: Option<Spanned<bool>>,
    subvolume: Option<Spanned<String>>,
    snapshot_dir: Option<Spanned<String>>,
    databases: Option<Spanned<Vec<Spanned<String>>>>,
    host: Option<Spanned<String>>,
    port: Option<Spanned<i64>>,
    user: Option<Spanned<String>>,
    password_file: Option<Spanned<String>>,
    bin_dir: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHooks {
    pre: Option<Spanned<String>>,
    post: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJob {
    name: Spanned<String>,
    source: Option<Spanned<String>>,
    catch_up: Option<bool>,
    stale_after: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    consistency: Option<Spanned<RawConsistency>>,
    hooks: Option<Spanned<RawHooks>>,
    #[serde(default)]
    include: Vec<Spanned<String>>,
    #[serde(default)]
    exclude: Vec<Spanned<String>>,
    #[serde(default)]
    cross_filesystems: bool,
    schedule: Option<Spanned<String>>,
    #[serde(default)]
    retention: Option<Spanned<RawRetention>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRetention {
    keep_last: Option<Spanned<i64>>,
    keep_hourly: Option<Spanned<i64>>,
    keep_daily: Option<Spanned<i64>>,
    keep_weekly: Option<Spanned<i64>>,
    keep_monthly: Option<Spanned<i64>>,
    keep_yearly: Option<Spanned<i64>>,
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::unreadable(path, &e))?;
        Self::parse(&text, path)
    }

    /// Parses `text`; relative paths in it are resolved against the directory of `path`.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let cf = ConfigFile::new(text, path);
        let err_at = |span: Option<Range<usize>>, msg: String| cf.error(span, msg);
        let raw: RawConfig = cf.tables()?;
        let library = tapectl::config::Settings::from_file(&cf)?;
        let tape = tapectl::pools::TapeSettings::from_file(&cf)?;
        let resolve = |p: &str| cf.resolve(p);
        let SharedConfig {
            state_dir,
            store,
            state_dir_span,
            store_span,
        } = SharedConfig::parse(&cf)?;

        let serve = match &raw.serve {
            Some(sv) => parse_serve(sv.get_ref(), &resolve, &err_at)?,
            None => ServeConfig::default(),
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
            let consistency = match &j.consistency {
                Some(c) => parse_consistency(c, &name, &resolve, &err_at)?,
                None => Consistency::None,
            };
            let source = match (&j.source, consistency.makes_dumps()) {
                (Some(s), true) => {
                    return Err(err_at(
                        Some(s.span()),
                        format!(
                            "job {name:?}: a {} job reads its dumps, not a source; remove `source` (back up files in a separate job)",
                            consistency.kind()
                        ),
                    ));
                }
                (None, true) => state_dir.join("dumps").join(&name),
                (Some(s), false) if s.get_ref().is_empty() => {
                    return Err(err_at(
                        Some(s.span()),
                        format!("job {name:?}: source is empty"),
                    ));
                }
                (Some(s), false) => resolve(s.get_ref()),
                (None, false) => {
                    return Err(err_at(
                        Some(j.name.span()),
                        format!("job {name:?} needs `source` (the directory to back up)"),
                    ));
                }
            };
            let hooks = match &j.hooks {
                Some(h) => Some(parse_hooks(h, &name, &err_at)?),
                None => None,
            };
            if consistency == Consistency::Hooks && hooks.is_none() {
                return Err(err_at(
                    j.consistency.as_ref().map(|c| c.span()),
                    format!(
                        "job {name:?}: consistency kind \"hooks\" needs a [job.hooks] table with `pre` and/or `post`"
                    ),
                ));
            }
            let timeout =
                match &j.timeout {
                    Some(d) => Some(parse_duration(d.get_ref()).map_err(|m| {
                        err_at(Some(d.span()), format!("job {name:?}: timeout {m}"))
                    })?),
                    None => None,
                };
            let stale_after = match &j.stale_after {
                Some(d) => Some(parse_duration(d.get_ref()).map_err(|m| {
                    err_at(Some(d.span()), format!("job {name:?}: stale_after {m}"))
                })?),
                None => None,
            };
            let retention = parse_retention(j.retention.map(Spanned::into_inner), &name, &err_at)?;
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
                source_span: j.source.as_ref().map(|s| s.span()),
                include,
                exclude,
                cross_filesystems: j.cross_filesystems,
                schedule: j.schedule.map(|s| s.into_inner()),
                retention,
                selector,
                catch_up: j.catch_up.unwrap_or(serve.catch_up),
                stale_after,
                timeout,
                consistency,
                hooks,
            });
        }
        let backup_jobs: Vec<String> = jobs.iter().map(|j: &Job| j.name.clone()).collect();
        let tape_jobs = crate::tape_jobs::config::parse(
            raw.tape_jobs,
            &backup_jobs,
            &mut names,
            &tape,
            serve.catch_up,
            &err_at,
        )?;
        let mut alerts = Vec::new();
        for a in &raw.alerts {
            alerts.push(parse_alert(a, &resolve, &err_at)?);
        }
        Ok(Config {
            path: path.to_path_buf(),
            state_dir,
            store,
            file: cf.clone(),
            state_dir_span,
            store_span,
            jobs,
            serve,
            alerts,
            tape_jobs,
            library,
            tape,
        })
    }

    /// Checks what a run needs of the machine, before anything is created: the sources of `jobs`
    /// exist and are directories, state_dir can be written, and the store, the sources and state_dir do
    /// not contain each other in a way that breaks (a source inside the store, or the store
    /// itself, would back up the snapshots; a state_dir inside the store would be pruned with it).
    pub fn check_environment<'a>(
        &'a self,
        jobs: impl IntoIterator<Item = &'a Job>,
    ) -> Result<(), ConfigError> {
        let err = |span: Option<Range<usize>>, msg: String| self.file.error(span, msg);
        let store_path = match &self.store {
            StoreConfig::Dir { path, .. } => Some(path.as_path()),
            StoreConfig::Zfs { .. } => None,
        };
        let state_span = || self.state_dir_span.clone().or(Some(0..0));
        if !writable_or_creatable(&self.state_dir) {
            return Err(err(
                state_span(),
                format!(
                    "`state_dir` {} cannot be written by this user: choose another directory or fix its permissions",
                    self.state_dir.display()
                ),
            ));
        }
        if let Some(store) = store_path {
            if !writable_or_creatable(store) {
                return Err(err(
                    Some(self.store_span.clone()),
                    format!(
                        "store `path` {} cannot be written by this user: choose another directory or fix its permissions",
                        store.display()
                    ),
                ));
            }
            if within(&self.state_dir, store) {
                return Err(err(
                    state_span(),
                    format!(
                        "`state_dir` {} is inside the store {}: keep them apart (the catalog must not live among the snapshots)",
                        self.state_dir.display(),
                        store.display()
                    ),
                ));
            }
        }
        for j in jobs {
            if j.consistency.makes_dumps() {
                continue;
            }
            let at = || j.source_span.clone();
            match std::fs::metadata(&j.source) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(err(
                        at(),
                        format!(
                            "job {:?}: `source` {} does not exist",
                            j.name,
                            j.source.display()
                        ),
                    ));
                }
                Err(e) => {
                    return Err(err(
                        at(),
                        format!(
                            "job {:?}: `source` {} cannot be read: {e}",
                            j.name,
                            j.source.display()
                        ),
                    ));
                }
                Ok(m) if !m.is_dir() => {
                    return Err(err(
                        at(),
                        format!(
                            "job {:?}: `source` {} is not a directory (a job backs up a directory; include patterns choose files in it)",
                            j.name,
                            j.source.display()
                        ),
                    ));
                }
                Ok(_) => {}
            }
            if let Some(store) = store_path
                && within(&j.source, store)
            {
                let what = if same_dir(&j.source, store) {
                    "is the store itself"
                } else {
                    "is inside the store"
                };
                return Err(err(
                    at(),
                    format!(
                        "job {:?}: `source` {} {what} ({}): a backup would copy its own snapshots",
                        j.name,
                        j.source.display(),
                        store.display()
                    ),
                ));
            }
        }
        Ok(())
    }

    pub fn tape_job(&self, name: &str) -> Option<&crate::tape_jobs::TapeJob> {
        self.tape_jobs.iter().find(|t| t.name == name)
    }

    pub fn job(&self, name: &str) -> Result<&Job, NoSuchJob> {
        self.jobs
            .iter()
            .find(|j| j.name == name)
            .ok_or_else(|| NoSuchJob {
                name: name.to_string(),
                config: self.path.clone(),
                known: self.jobs.iter().map(|j| j.name.clone()).collect(),
            })
    }
}

/// A job name on the command line that the configuration does not have: a usage error (exit 2).
#[derive(Debug, thiserror::Error)]
#[error("no job named {name:?} in {} (jobs: {})", config.display(), known.join(", "))]
pub struct NoSuchJob {
    pub name: String,
    pub config: PathBuf,
    pub known: Vec<String>,
}

type ErrAt<'a> = dyn Fn(Option<Range<usize>>, String) -> ConfigError + 'a;

/// A duration such as "90s", "36h", "1h 30m", "7d", "2w" (or ISO 8601 "PT5M"); days are 24 h.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let span: jiff::Span = s.parse().map_err(|e| {
        format!("{s:?} is not a duration (e.g. \"90s\", \"36h\", \"1h 30m\", \"7d\"): {e}")
    })?;
    let d = span
        .to_duration(jiff::SpanRelativeTo::days_are_24_hours())
        .map_err(|_| format!("{s:?}: months and years have no fixed length; use days or weeks"))?;
    if d.is_negative() {
        return Err(format!("{s:?} is negative"));
    }
    std::time::Duration::try_from(d).map_err(|e| format!("{s:?}: {e}"))
}

fn parse_serve(
    sv: &RawServe,
    resolve: &dyn Fn(&str) -> PathBuf,
    err_at: &ErrAt,
) -> Result<ServeConfig, ConfigError> {
    let mut out = ServeConfig::default();
    if let Some(l) = &sv.listen {
        out.listen = l.get_ref().parse().map_err(|_| {
            err_at(
                Some(l.span()),
                format!(
                    "serve.listen {:?} is not an address:port (e.g. \"127.0.0.1:8480\")",
                    l.get_ref()
                ),
            )
        })?;
    }
    out.token = match (&sv.token, &sv.token_file) {
        (Some(_), Some(f)) => {
            return Err(err_at(
                Some(f.span()),
                "give serve.token or serve.token_file, not both".into(),
            ));
        }
        (Some(t), None) => Some(check_token(t.get_ref()).map_err(|m| err_at(Some(t.span()), m))?),
        (None, Some(f)) => {
            let p = resolve(f.get_ref());
            let text = std::fs::read_to_string(&p).map_err(|e| {
                err_at(
                    Some(f.span()),
                    format!("cannot read serve.token_file {}: {e}", p.display()),
                )
            })?;
            Some(
                check_token(text.trim())
                    .map_err(|m| err_at(Some(f.span()), format!("{}: {m}", p.display())))?,
            )
        }
        (None, None) => None,
    };
    if let Some(m) = &sv.max_concurrent {
        let n = *m.get_ref();
        if !(1..=64).contains(&n) {
            return Err(err_at(
                Some(m.span()),
                format!("serve.max_concurrent must be 1..64, not {n}"),
            ));
        }
        out.max_concurrent = n as usize;
    }
    if let Some(g) = &sv.stop_grace {
        out.stop_grace = parse_duration(g.get_ref())
            .map_err(|m| err_at(Some(g.span()), format!("serve.stop_grace {m}")))?;
    }
    if let Some(c) = sv.catch_up {
        out.catch_up = c;
    }
    for h in sv.allowed_hosts.iter().flatten() {
        let name = web::allowed_host_name(h.get_ref())
            .map_err(|m| err_at(Some(h.span()), format!("serve.allowed_hosts: {m}")))?;
        if !out.allowed_hosts.contains(&name) {
            out.allowed_hosts.push(name);
        }
    }
    if let Some(d) = &sv.catalog_backup_dir {
        if d.get_ref().is_empty() {
            return Err(err_at(
                Some(d.span()),
                "serve.catalog_backup_dir is empty".into(),
            ));
        }
        out.catalog_backup_dir = Some(resolve(d.get_ref()));
    }
    Ok(out)
}

fn check_token(t: &str) -> Result<String, String> {
    if t.len() < 16 {
        return Err(
            "the API token must be at least 16 characters (e.g. `openssl rand -hex 32`)".into(),
        );
    }
    if !t.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("the API token must be printable ASCII without spaces".into());
    }
    Ok(t.to_string())
}

fn parse_alert(
    a: &Spanned<RawAlert>,
    resolve: &dyn Fn(&str) -> PathBuf,
    err_at: &ErrAt,
) -> Result<AlertTarget, ConfigError> {
    let r = a.get_ref();
    let kind = match r.kind.get_ref().as_str() {
        "discord" => AlertKind::Discord,
        "webhook" => AlertKind::Webhook,
        other => {
            return Err(err_at(
                Some(r.kind.span()),
                format!("unknown alert kind {other:?} (use \"discord\" or \"webhook\")"),
            ));
        }
    };
    let (url, span) = match (&r.url, &r.url_file) {
        (Some(_), Some(f)) => {
            return Err(err_at(
                Some(f.span()),
                "give url or url_file, not both".into(),
            ));
        }
        (Some(u), None) => (u.get_ref().clone(), u.span()),
        (None, Some(f)) => {
            let p = resolve(f.get_ref());
            let text = std::fs::read_to_string(&p).map_err(|e| {
                err_at(
                    Some(f.span()),
                    format!("cannot read alert url_file {}: {e}", p.display()),
                )
            })?;
            (text.trim().to_string(), f.span())
        }
        (None, None) => {
            return Err(err_at(
                Some(a.span()),
                "an [[alert]] needs `url` or `url_file`".into(),
            ));
        }
    };
    if !(url.starts_with("http://") || url.starts_with("https://")) || url.len() < 10 {
        return Err(err_at(
            Some(span),
            "alert url must start with http:// or https://".into(),
        ));
    }
    let events = match &r.events {
        None => vec![
            AlertEvent::Failure,
            AlertEvent::Stale,
            AlertEvent::Recovery,
            AlertEvent::Attention,
        ],
        Some(list) => {
            let mut out = Vec::new();
            for e in list {
                out.push(match e.get_ref().as_str() {
                    "failure" => AlertEvent::Failure,
                    "stale" => AlertEvent::Stale,
                    "recovery" => AlertEvent::Recovery,
                    "attention" => AlertEvent::Attention,
                    other => {
                        return Err(err_at(
                            Some(e.span()),
                            format!(
                                "unknown alert event {other:?} (use failure, stale, recovery, attention)"
                            ),
                        ));
                    }
                });
            }
            out
        }
    };
    Ok(AlertTarget { kind, url, events })
}

fn parse_hooks(h: &Spanned<RawHooks>, job: &str, err_at: &ErrAt) -> Result<Hooks, ConfigError> {
    let r = h.get_ref();
    for c in [&r.pre, &r.post].into_iter().flatten() {
        if c.get_ref().trim().is_empty() {
            return Err(err_at(
                Some(c.span()),
                format!("job {job:?}: hook command is empty"),
            ));
        }
    }
    if r.pre.is_none() && r.post.is_none() {
        return Err(err_at(
            Some(h.span()),
            format!("job {job:?}: [job.hooks] needs `pre` and/or `post`"),
        ));
    }
    let timeout = match &r.timeout {
        Some(t) => parse_duration(t.get_ref())
            .map_err(|m| err_at(Some(t.span()), format!("job {job:?}: hooks.timeout {m}")))?,
        None => std::time::Duration::from_secs(600),
    };
    Ok(Hooks {
        pre: r.pre.as_ref().map(|c| c.get_ref().clone()),
        post: r.post.as_ref().map(|c| c.get_ref().clone()),
        timeout,
    })
}

fn parse_consistency(
    c: &Spanned<RawConsistency>,
    job: &str,
    resolve: &dyn Fn(&str) -> PathBuf,
    err_at: &ErrAt,
) -> Result<Consistency, ConfigError> {
    let r = c.get_ref();
    let kind = r.kind.get_ref().as_str();
    // Options that belong to other kinds are errors, so a typo'd kind is not silently ignored.
    let present: [(&str, Option<Range<usize>>); 10] = [
        ("datasets", r.datasets.as_ref().map(|v| v.span())),
        ("recursive", r.recursive.as_ref().map(|v| v.span())),
        ("subvolume", r.subvolume.as_ref().map(|v| v.span())),
        ("snapshot_dir", r.snapshot_dir.as_ref().map(|v| v.span())),
        ("databases", r.databases.as_ref().map(|v| v.span())),
        ("host", r.host.as_ref().map(|v| v.span())),
        ("port", r.port.as_ref().map(|v| v.span())),
        ("user", r.user.as_ref().map(|v| v.span())),
        ("password_file", r.password_file.as_ref().map(|v| v.span())),
        ("bin_dir", r.bin_dir.as_ref().map(|v| v.span())),
    ];
    let allowed: &[&str] = match kind {
        "none" | "hooks" => &[],
        "zfs-snapshot" => &["datasets", "recursive"],
        "btrfs-snapshot" => &["subvolume", "snapshot_dir"],
        "postgres" => &[
            "databases",
            "host",
            "port",
            "user",
            "password_file",
            "bin_dir",
        ],
        "sqlite" => &["databases"],
        other => {
            return Err(err_at(
                Some(r.kind.span()),
                format!(
                    "job {job:?}: unknown consistency kind {other:?} (use none, hooks, zfs-snapshot, btrfs-snapshot, postgres or sqlite)"
                ),
            ));
        }
    };
    if let Some((name, span)) = present
        .iter()
        .find(|(n, s)| s.is_some() && !allowed.contains(n))
    {
        return Err(err_at(
            span.clone(),
            format!("job {job:?}: consistency option `{name}` does not apply to kind = \"{kind}\""),
        ));
    }
    let strings = |v: &Option<Spanned<Vec<Spanned<String>>>>| -> Vec<(String, Range<usize>)> {
        v.as_ref()
            .map(|l| {
                l.get_ref()
                    .iter()
                    .map(|s| (s.get_ref().clone(), s.span()))
                    .collect()
            })
            .unwrap_or_default()
    };
    Ok(match kind {
        "none" => Consistency::None,
        "hooks" => Consistency::Hooks,
        "zfs-snapshot" => {
            let datasets = strings(&r.datasets);
            if datasets.is_empty() {
                return Err(err_at(
                    Some(c.span()),
                    format!("job {job:?}: zfs-snapshot needs `datasets` (e.g. [\"tank/apps\"])"),
                ));
            }
            let mut seen = HashSet::new();
            for (d, span) in &datasets {
                common::zfs::validate_dataset(d)
                    .map_err(|m| err_at(Some(span.clone()), format!("job {job:?}: {m}")))?;
                if !seen.insert(d.clone()) {
                    return Err(err_at(
                        Some(span.clone()),
                        format!("job {job:?}: dataset {d:?} is listed twice"),
                    ));
                }
            }
            Consistency::ZfsSnapshot {
                datasets: datasets.into_iter().map(|(d, _)| d).collect(),
                recursive: r.recursive.as_ref().map(|b| *b.get_ref()).unwrap_or(true),
            }
        }
        "btrfs-snapshot" => {
            let subvolume = r.subvolume.as_ref().ok_or_else(|| {
                err_at(Some(c.span()), format!("job {job:?}: btrfs-snapshot needs `subvolume` (the subvolume holding the source)"))
            })?;
            Consistency::BtrfsSnapshot {
                subvolume: resolve(subvolume.get_ref()),
                snapshot_dir: r.snapshot_dir.as_ref().map(|d| resolve(d.get_ref())),
            }
        }
        "postgres" => {
            let mut databases = Vec::new();
            for (d, span) in strings(&r.databases) {
                if d.is_empty() || d.contains('\0') {
                    return Err(err_at(
                        Some(span),
                        format!("job {job:?}: bad database name {d:?}"),
                    ));
                }
                databases.push(d);
            }
            let port = match &r.port {
                Some(p) => Some(
                    u16::try_from(*p.get_ref())
                        .ok()
                        .filter(|p| *p > 0)
                        .ok_or_else(|| {
                            err_at(
                                Some(p.span()),
                                format!("job {job:?}: port {} is not 1..65535", p.get_ref()),
                            )
                        })?,
                ),
                None => None,
            };
            Consistency::Postgres(Postgres {
                databases,
                host: r.host.as_ref().map(|h| h.get_ref().clone()),
                port,
                user: r.user.as_ref().map(|u| u.get_ref().clone()),
                password_file: r.password_file.as_ref().map(|p| resolve(p.get_ref())),
                bin_dir: r.bin_dir.as_ref().map(|p| resolve(p.get_ref())),
            })
        }
        "sqlite" => {
            let list = strings(&r.databases);
            if list.is_empty() {
                return Err(err_at(
                    Some(c.span()),
                    format!("job {job:?}: sqlite needs `databases` (the database files to copy)"),
                ));
            }
            let mut names = HashSet::new();
            let mut databases = Vec::new();
            for (d, span) in list {
                let p = resolve(&d);
                let Some(base) = p.file_name().map(|n| n.to_os_string()) else {
                    return Err(err_at(
                        Some(span),
                        format!("job {job:?}: {d:?} is not a file path"),
                    ));
                };
                if !names.insert(base) {
                    return Err(err_at(
                        Some(span),
                        format!(
                            "job {job:?}: two databases are named {:?}; their copies would collide",
                            p.file_name().unwrap_or_default()
                        ),
                    ));
                }
                databases.push(p);
            }
            Consistency::Sqlite { databases }
        }
        _ => unreachable!("kinds checked above"),
    })
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

fn parse_retention(
    raw: Option<RawRetention>,
    job: &str,
    err_at: &ErrAt,
) -> Result<Retention, ConfigError> {
    let r = raw.unwrap_or_default();
    let count = |v: Option<Spanned<i64>>, key: &str| -> Result<Option<u32>, ConfigError> {
        match v {
            None => Ok(None),
            Some(v) => u32::try_from(*v.get_ref()).map(Some).map_err(|_| {
                err_at(
                    Some(v.span()),
                    format!(
                        "job {job:?}: retention.{key} must be a whole number, 0 or more; found {}",
                        v.get_ref()
                    ),
                )
            }),
        }
    };
    Ok(Retention {
        keep_last: count(r.keep_last, "keep_last")?,
        keep_hourly: count(r.keep_hourly, "keep_hourly")?,
        keep_daily: count(r.keep_daily, "keep_daily")?,
        keep_weekly: count(r.keep_weekly, "keep_weekly")?,
        keep_monthly: count(r.keep_monthly, "keep_monthly")?,
        keep_yearly: count(r.keep_yearly, "keep_yearly")?,
    })
}

/// Checks a cron expression (the daemon uses it to schedule runs).
pub fn validate_schedule(s: &str) -> Result<(), String> {
    let schedule = crate::schedule::Schedule::parse(s, crate::schedule::Zone::Utc)?;
    if !schedule.ever_fires(jiff::Timestamp::now()) {
        return Err(format!(
            "schedule {s:?} never fires (no such date, e.g. February 30)"
        ));
    }
    Ok(())
}

/// `dir` exists and is writable, or can be created (its nearest existing ancestor is writable).
fn writable_or_creatable(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let mut p = dir;
    loop {
        if p.exists() {
            let Ok(c) = std::ffi::CString::new(p.as_os_str().as_bytes()) else {
                return false;
            };
            // SAFETY: access(2) with a valid NUL-terminated path only reads.
            return p.is_dir() && unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) } == 0;
        }
        match p.parent() {
            Some(parent) => p = parent,
            None => return false,
        }
    }
}

/// The real path of `p`, or of its nearest existing ancestor joined with the rest.
fn real(p: &Path) -> PathBuf {
    let mut rest = Vec::new();
    let mut cur = p;
    loop {
        if let Ok(r) = std::fs::canonicalize(cur) {
            return rest.iter().rev().fold(r, |acc: PathBuf, c| acc.join(c));
        }
        match (cur.parent(), cur.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_owned());
                cur = parent;
            }
            _ => return p.to_path_buf(),
        }
    }
}

/// `inner` is `outer` or below it (symlinks resolved).
fn within(inner: &Path, outer: &Path) -> bool {
    real(inner).starts_with(real(outer))
}

fn same_dir(a: &Path, b: &Path) -> bool {
    real(a) == real(b)
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
    fn the_tape_sides_pools_are_accepted_and_checked() {
        parse(&format!(
            "{GOOD}\n[[pool]]\nname = \"weekly\"\nbarcodes = [\"RV00*\"]\n[tape]\nbuffer_mb = 64\n"
        ))
        .unwrap();
        let e = parse(&format!(
            "{GOOD}\n[[pool]]\nname = \"weekly\"\nbarcodes = []\n"
        ))
        .unwrap_err();
        assert!(e.to_string().contains("no barcode patterns"), "{e}");
        // An encrypted pool and the keys directory (docs/encryption.md); a mistyped key is refused
        // at its line.
        parse(&format!(
            "{GOOD}\n[[pool]]\nname = \"offsite\"\nbarcodes = [\"OFF*\"]\nencryption = {{ key_file = \"/etc/rv/offsite.key\" }}\n[tape]\nkeys_dir = \"/etc/rv/keys\"\n"
        ))
        .unwrap();
        let e = parse(&format!(
            "{GOOD}\n[[pool]]\nname = \"offsite\"\nbarcodes = [\"OFF*\"]\nencryption = {{ keyfile = \"k\" }}\n"
        ))
        .unwrap_err();
        assert!(e.to_string().contains("keyfile"), "{e}");
    }

    #[test]
    fn a_valid_library_table_is_accepted() {
        parse(&format!(
            "{GOOD}\n[library]\ntransport = \"virtual\"\ndir = \"vtl\"\n"
        ))
        .unwrap();
    }

    #[test]
    fn serve_allowed_hosts_are_host_names() {
        let c = parse(&format!(
            "{GOOD}\n[serve]\nallowed_hosts = [\"NAS.example.lan\", \"backup.example.com.\", \"nas.example.lan\"]\n"
        ))
        .unwrap();
        assert_eq!(
            c.serve.allowed_hosts,
            ["nas.example.lan", "backup.example.com"]
        );
        assert!(parse(GOOD).unwrap().serve.allowed_hosts.is_empty());
        for (bad, says) in [
            ("nas.lan:8480", "without scheme or port"),
            ("*.lan", "wildcards"),
            ("nas/x", "not a host name"),
        ] {
            let e = parse(&format!("{GOOD}\n[serve]\nallowed_hosts = [\"{bad}\"]\n"))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("serve.allowed_hosts") && e.contains(says),
                "{bad}: {e}"
            );
            assert!(e.contains(":16:"), "{bad}: names the line: {e}");
        }
    }

    #[test]
    fn durations_in_days_weeks_and_smaller_units() {
        let d = |s| parse_duration(s).map(|d| d.as_secs());
        assert_eq!(d("90s"), Ok(90));
        assert_eq!(d("1h 30m"), Ok(5400));
        assert_eq!(d("7d"), Ok(7 * 86400));
        assert_eq!(d("2w"), Ok(14 * 86400));
        assert_eq!(d("PT5M"), Ok(300));
        assert!(d("1 month").unwrap_err().contains("months"));
        assert!(d("-5s").is_err());
        assert!(d("soon").is_err());
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
