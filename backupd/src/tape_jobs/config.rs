//! `[[tape_job]]` in rackvault.toml. Tape jobs share the namespace of backup jobs (their runs,
//! alerts and metrics are kept by name), so a name is used once across both.

use std::ops::Range;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use common::config::ConfigError;
use tapectl::pools::TapeSettings;
use tapectl::sets::layout::SetKind;

use crate::config::{parse_duration, validate_job_name, validate_schedule};

/// How long a run waits for a tape by default before it fails.
pub const DEFAULT_WAIT_FOR_TAPE: Duration = Duration::from_secs(12 * 3600);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapeJob {
    pub name: String,
    /// Backup jobs whose latest snapshot each run writes, one set per job, in this order.
    pub jobs: Vec<String>,
    /// The pool (`None`: the only one).
    pub pool: Option<String>,
    /// When full sets are written (cron); the other runs write incrementals.
    pub full: Option<String>,
    /// When incremental sets are written (cron).
    pub incremental: Option<String>,
    /// Copies of an incremental set.
    pub copies: u32,
    /// Copies of a full set (e.g. 2: one stays, one goes offsite by `[rotation] offsite`).
    pub full_copies: u32,
    /// Drives to write with (default: all of the library's).
    pub drives: Vec<u16>,
    /// A run with no tape to write on waits this long for one before it fails.
    pub wait_for_tape: Duration,
    pub catch_up: bool,
    pub stale_after: Option<Duration>,
}

impl TapeJob {
    pub fn copies_of(&self, kind: SetKind) -> u32 {
        match kind {
            SetKind::Full => self.full_copies,
            SetKind::Incremental => self.copies,
        }
    }

    /// The schedules that start runs (full and incremental).
    pub fn schedules(&self) -> impl Iterator<Item = &str> {
        self.full
            .iter()
            .chain(&self.incremental)
            .map(String::as_str)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTapeJob {
    name: Spanned<String>,
    jobs: Spanned<Vec<Spanned<String>>>,
    pool: Option<Spanned<String>>,
    full: Option<Spanned<String>>,
    incremental: Option<Spanned<String>>,
    copies: Option<Spanned<i64>>,
    full_copies: Option<Spanned<i64>>,
    drives: Option<Spanned<Vec<i64>>>,
    wait_for_tape: Option<Spanned<String>>,
    catch_up: Option<bool>,
    stale_after: Option<Spanned<String>>,
}

type ErrAt<'a> = dyn Fn(Option<Range<usize>>, String) -> ConfigError + 'a;

/// Parses the `[[tape_job]]` tables. `names` holds the backup jobs' names (a tape job's name must
/// differ from them and each other); `backup_jobs` the ones a tape job may name.
pub(crate) fn parse(
    raw: Vec<Spanned<RawTapeJob>>,
    backup_jobs: &[String],
    names: &mut std::collections::HashSet<String>,
    tape: &TapeSettings,
    default_catch_up: bool,
    err_at: &ErrAt,
) -> Result<Vec<TapeJob>, ConfigError> {
    let mut out = Vec::new();
    for t in raw {
        let span = t.span();
        let t = t.into_inner();
        let name = t.name.get_ref().clone();
        validate_job_name(&name).map_err(|m| err_at(Some(t.name.span()), m))?;
        if !names.insert(name.clone()) {
            return Err(err_at(
                Some(t.name.span()),
                format!(
                    "tape job {name:?}: the name is taken by another job or tape job (runs and alerts are kept by name)"
                ),
            ));
        }
        let at = |s: Range<usize>, m: String| err_at(Some(s), format!("tape job {name:?}: {m}"));
        if t.jobs.get_ref().is_empty() {
            return Err(at(
                t.jobs.span(),
                "`jobs` is empty; name the backup jobs whose snapshots go to tape".into(),
            ));
        }
        let mut jobs = Vec::new();
        for j in t.jobs.get_ref() {
            if !backup_jobs.contains(j.get_ref()) {
                return Err(at(
                    j.span(),
                    format!(
                        "no backup job named {:?} (jobs: {})",
                        j.get_ref(),
                        backup_jobs.join(", ")
                    ),
                ));
            }
            if jobs.contains(j.get_ref()) {
                return Err(at(
                    j.span(),
                    format!("job {:?} is named twice", j.get_ref()),
                ));
            }
            jobs.push(j.get_ref().clone());
        }
        let pool = t.pool.as_ref().map(|p| p.get_ref().clone());
        if let Err(e) = tape.pool(pool.as_deref()) {
            let s = t.pool.as_ref().map_or(span.clone(), |p| p.span());
            return Err(at(s, format!("{e:#}")));
        }
        for s in [&t.full, &t.incremental].into_iter().flatten() {
            validate_schedule(s.get_ref()).map_err(|m| at(s.span(), m))?;
        }
        let count = |v: &Option<Spanned<i64>>, what: &str, default: u32| match v {
            None => Ok(default),
            Some(c) if (1..=8).contains(c.get_ref()) => Ok(*c.get_ref() as u32),
            Some(c) => Err(at(c.span(), format!("{what} must be 1 to 8"))),
        };
        let copies = count(&t.copies, "copies", 1)?;
        let full_copies = count(&t.full_copies, "full_copies", copies)?;
        // A rotation rule that sends copy N of full sets offsite needs N copies of them.
        for r in &tape.rotation.offsite {
            let written = match r.kind {
                SetKind::Full => full_copies,
                SetKind::Incremental => copies,
            };
            if r.copy > written {
                let (key, s) = match r.kind {
                    SetKind::Full => ("full_copies", t.full_copies.as_ref()),
                    SetKind::Incremental => ("copies", t.copies.as_ref()),
                };
                return Err(at(
                    s.map_or(span.clone(), |s| s.span()),
                    format!(
                        "[rotation] sends copy {} of {} sets to vault {:?}, but this job writes {written} copy(ies) of them; set {key} = {}",
                        r.copy,
                        r.kind.as_str(),
                        r.vault,
                        r.copy
                    ),
                ));
            }
        }
        let drives = match &t.drives {
            None => Vec::new(),
            Some(d) => d
                .get_ref()
                .iter()
                .map(|&n| u16::try_from(n).map_err(|_| at(d.span(), format!("no drive {n}"))))
                .collect::<Result<_, _>>()?,
        };
        let duration = |v: &Option<Spanned<String>>, what: &str| {
            v.as_ref()
                .map(|d| {
                    parse_duration(d.get_ref()).map_err(|m| at(d.span(), format!("{what} {m}")))
                })
                .transpose()
        };
        out.push(TapeJob {
            wait_for_tape: duration(&t.wait_for_tape, "wait_for_tape")?
                .unwrap_or(DEFAULT_WAIT_FOR_TAPE),
            stale_after: duration(&t.stale_after, "stale_after")?,
            name,
            jobs,
            pool,
            full: t.full.map(Spanned::into_inner),
            incremental: t.incremental.map(Spanned::into_inner),
            copies,
            full_copies,
            drives,
            catch_up: t.catch_up.unwrap_or(default_catch_up),
        });
    }
    Ok(out)
}
