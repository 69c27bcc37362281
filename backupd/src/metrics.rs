//! Prometheus metrics for `backupd serve` (scraped by VictoriaMetrics): per-job run results and
//! volumes, scheduler load, store usage, and the standard `process_*` metrics read from /proc.
//!
//! Job metrics go through the `metrics` crate's global recorder; the process metrics are read
//! and formatted at render time, because the `metrics` crate's counters are integers and
//! `process_cpu_seconds_total` is not.

use std::fmt::Write as _;
use std::sync::Mutex;

use anyhow::Context as _;
use jiff::Timestamp;
use metrics::{Unit, counter, describe_counter, describe_gauge, gauge};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::catalog::Outcome;
use crate::engine::Stats;

const LAST_RUN_DURATION: &str = "backupd_last_run_duration_seconds";
const LAST_RUN_TIMESTAMP: &str = "backupd_last_run_timestamp_seconds";
const LAST_SUCCESS_TIMESTAMP: &str = "backupd_last_success_timestamp_seconds";
const LAST_RUN_SUCCESS: &str = "backupd_last_run_success";
const RUNS: &str = "backupd_runs_total";
const FAILURES: &str = "backupd_failures_total";
const BYTES_WRITTEN: &str = "backupd_bytes_written_total";
const BYTES_READ: &str = "backupd_bytes_read_total";
const FILES_WRITTEN: &str = "backupd_files_written_total";
const SNAPSHOTS: &str = "backupd_snapshots";
const STORE_USED: &str = "backupd_store_used_bytes";
const JOB_STALE: &str = "backupd_job_stale";
const TAPE_JOB_WAITING: &str = "backupd_tape_job_waiting";
const DRIVES_NEEDING_CLEANING: &str = "rackvault_drives_needing_cleaning";
const SCHED_QUEUED: &str = "backupd_scheduler_queued_runs";
const SCHED_RUNNING: &str = "backupd_scheduler_running_runs";
const SCHED_MAX: &str = "backupd_scheduler_max_concurrent";
const BUILD_INFO: &str = "backupd_build_info";

const OUTCOMES: [Outcome; 3] = [Outcome::Succeeded, Outcome::Failed, Outcome::Cancelled];

/// The installed recorder's handle; a process has one global recorder, so one handle.
static INSTALLED: Mutex<Option<PrometheusHandle>> = Mutex::new(None);

/// The daemon's metrics. Cheap to clone; all clones feed the same global recorder.
#[derive(Clone)]
pub struct Metrics {
    handle: PrometheusHandle,
}

/// Install the Prometheus recorder as the process's global `metrics` recorder and describe every
/// metric. Calling it again returns the same recorder (idempotent); it fails only when some other
/// recorder was installed first.
pub fn install() -> anyhow::Result<Metrics> {
    let mut installed = INSTALLED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(handle) = installed.as_ref() {
        return Ok(Metrics {
            handle: handle.clone(),
        });
    }
    let handle = PrometheusBuilder::new()
        .install_recorder()
        .context("installing the Prometheus metrics recorder (another recorder is already set in this process)")?;
    describe_all();
    gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    *installed = Some(handle.clone());
    Ok(Metrics { handle })
}

fn describe_all() {
    describe_gauge!(
        LAST_RUN_DURATION,
        Unit::Seconds,
        "Duration of the job's last finished run."
    );
    describe_gauge!(
        LAST_RUN_TIMESTAMP,
        Unit::Seconds,
        "End of the job's last finished run, Unix time."
    );
    describe_gauge!(
        LAST_SUCCESS_TIMESTAMP,
        Unit::Seconds,
        "End of the job's last successful run, Unix time."
    );
    describe_gauge!(
        LAST_RUN_SUCCESS,
        "1 if the job's last run succeeded, 0 if it failed (cancelled runs leave it)."
    );
    describe_counter!(
        RUNS,
        "Finished runs by outcome (succeeded, failed, cancelled)."
    );
    describe_counter!(FAILURES, "Failed runs.");
    describe_counter!(
        BYTES_WRITTEN,
        Unit::Bytes,
        "Bytes written into the job's target."
    );
    describe_counter!(BYTES_READ, Unit::Bytes, "Bytes read from the job's source.");
    describe_counter!(
        FILES_WRITTEN,
        "Files written into the target: new, changed and metadata-only."
    );
    describe_gauge!(SNAPSHOTS, "Snapshots the job's target holds.");
    describe_gauge!(STORE_USED, Unit::Bytes, "Space the job's target uses.");
    describe_gauge!(
        JOB_STALE,
        "1 if the job has had no successful run within its stale_after window."
    );
    describe_gauge!(
        TAPE_JOB_WAITING,
        "1 while the tape job's run waits for a tape to be inserted (the API says which)."
    );
    describe_gauge!(
        DRIVES_NEEDING_CLEANING,
        "Drives that asked for cleaning after the last tape run and could not be cleaned."
    );
    describe_gauge!(SCHED_QUEUED, "Runs waiting for a free slot.");
    describe_gauge!(SCHED_RUNNING, "Runs in progress.");
    describe_gauge!(
        SCHED_MAX,
        "How many runs may run at once ([serve] max_concurrent)."
    );
    describe_gauge!(
        BUILD_INFO,
        "Always 1; the version label says which backupd is running."
    );
    describe_counter!(
        crate::alerts::sender::METRIC_SENT,
        "Alerts delivered, by target (kind and position in the config) and event."
    );
    describe_counter!(
        crate::alerts::sender::METRIC_FAILED,
        "Alerts given up on (refused, out of attempts, or shutdown), by target and event."
    );
    describe_counter!(
        crate::alerts::sender::METRIC_DROPPED,
        "Alerts dropped because the sender's queue was full."
    );
}

fn unix_seconds(t: Timestamp) -> f64 {
    t.as_millisecond() as f64 / 1000.0
}

/// The last finished (succeeded or failed) run of a job, from the catalog, for a daemon that
/// starts: the gauges about it are there before the next run.
#[derive(Debug, Clone, Copy)]
pub struct LastRun {
    pub finished: Timestamp,
    pub duration_secs: f64,
    pub succeeded: bool,
}

impl Metrics {
    /// Same as the module's [`install`].
    pub fn install() -> anyhow::Result<Metrics> {
        install()
    }

    /// The text exposition format, process metrics refreshed now.
    pub fn render(&self) -> String {
        self.handle.run_upkeep();
        let mut out = self.handle.render();
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(&render_process(&ProcessSnapshot::read()));
        out
    }

    /// Record a finished run. `stats` is whatever the engine got through (partial on failure).
    pub fn run_finished(
        &self,
        job: &str,
        outcome: Outcome,
        duration_secs: f64,
        stats: Option<&Stats>,
        at: Timestamp,
    ) {
        let job = job.to_string();
        gauge!(LAST_RUN_DURATION, "job" => job.clone()).set(duration_secs);
        gauge!(LAST_RUN_TIMESTAMP, "job" => job.clone()).set(unix_seconds(at));
        match outcome {
            Outcome::Succeeded => {
                gauge!(LAST_SUCCESS_TIMESTAMP, "job" => job.clone()).set(unix_seconds(at));
                gauge!(LAST_RUN_SUCCESS, "job" => job.clone()).set(1.0);
            }
            Outcome::Failed => {
                gauge!(LAST_RUN_SUCCESS, "job" => job.clone()).set(0.0);
                counter!(FAILURES, "job" => job.clone()).increment(1);
            }
            Outcome::Cancelled => {}
        }
        counter!(RUNS, "job" => job.clone(), "outcome" => outcome.as_str()).increment(1);
        if let Some(s) = stats {
            counter!(BYTES_WRITTEN, "job" => job.clone()).increment(s.bytes_written);
            counter!(BYTES_READ, "job" => job.clone()).increment(s.bytes_read);
            counter!(FILES_WRITTEN, "job" => job).increment(
                s.new_files
                    .saturating_add(s.changed_files)
                    .saturating_add(s.metadata_only),
            );
        }
    }

    /// At startup, per configured job: restore what the catalog knows and create every counter
    /// at 0, so `rate()` and absence alerts see the series before the first run.
    pub fn seed_job(&self, job: &str, last_success: Option<Timestamp>, last_run: Option<LastRun>) {
        let job = job.to_string();
        if let Some(t) = last_success {
            gauge!(LAST_SUCCESS_TIMESTAMP, "job" => job.clone()).set(unix_seconds(t));
        }
        if let Some(r) = last_run {
            gauge!(LAST_RUN_DURATION, "job" => job.clone()).set(r.duration_secs);
            gauge!(LAST_RUN_TIMESTAMP, "job" => job.clone()).set(unix_seconds(r.finished));
            gauge!(LAST_RUN_SUCCESS, "job" => job.clone()).set(if r.succeeded { 1.0 } else { 0.0 });
        }
        for o in OUTCOMES {
            counter!(RUNS, "job" => job.clone(), "outcome" => o.as_str()).increment(0);
        }
        for name in [FAILURES, BYTES_WRITTEN, BYTES_READ, FILES_WRITTEN] {
            counter!(name, "job" => job.clone()).increment(0);
        }
    }

    /// What the job's target holds; `used_bytes` is None when the store cannot tell cheaply.
    pub fn job_store(&self, job: &str, snapshots: u64, used_bytes: Option<u64>) {
        gauge!(SNAPSHOTS, "job" => job.to_string()).set(snapshots as f64);
        if let Some(b) = used_bytes {
            gauge!(STORE_USED, "job" => job.to_string()).set(b as f64);
        }
    }

    pub fn job_stale(&self, job: &str, stale: bool) {
        gauge!(JOB_STALE, "job" => job.to_string()).set(if stale { 1.0 } else { 0.0 });
    }

    pub fn tape_job_waiting(&self, job: &str, waiting: bool) {
        gauge!(TAPE_JOB_WAITING, "job" => job.to_string()).set(if waiting { 1.0 } else { 0.0 });
    }

    pub fn drives_needing_cleaning(&self, n: usize) {
        gauge!(DRIVES_NEEDING_CLEANING).set(n as f64);
    }

    pub fn scheduler(&self, queued: usize, running: usize, max_concurrent: usize) {
        gauge!(SCHED_QUEUED).set(queued as f64);
        gauge!(SCHED_RUNNING).set(running as f64);
        gauge!(SCHED_MAX).set(max_concurrent as f64);
    }
}

/// The fields of /proc/[pid]/stat that the process metrics need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    pub utime_ticks: u64,
    pub stime_ticks: u64,
    pub num_threads: u64,
    /// Process start, in clock ticks after boot.
    pub start_ticks: u64,
    pub vsize_bytes: u64,
    pub rss_pages: u64,
}

/// Parse /proc/[pid]/stat. The command name (field 2) may hold spaces and parentheses, so the
/// fields are counted from the last ')'. None on anything unexpected.
pub fn parse_proc_stat(text: &str) -> Option<ProcStat> {
    let after = &text[text.rfind(')')? + 1..];
    // Field 3 (state) is index 0 here; field N is index N - 3.
    let f: Vec<&str> = after.split_whitespace().collect();
    let num = |field: usize| f.get(field - 3)?.parse::<u64>().ok();
    Some(ProcStat {
        utime_ticks: num(14)?,
        stime_ticks: num(15)?,
        num_threads: num(20)?,
        start_ticks: num(22)?,
        vsize_bytes: num(23)?,
        // rss is signed in the kernel's format; a negative value would be nonsense, not a panic.
        rss_pages: f.get(24 - 3)?.parse::<i64>().ok()?.max(0) as u64,
    })
}

/// Boot time (Unix seconds) from /proc/stat's `btime` line.
pub fn parse_btime(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("btime"))
        .and_then(|v| v.trim().parse().ok())
}

/// The soft "Max open files" limit from /proc/[pid]/limits; None when unlimited or unreadable.
pub fn parse_max_open_files(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Process metrics at one moment; a field is None when it could not be read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcessSnapshot {
    pub cpu_seconds: Option<f64>,
    pub resident_bytes: Option<u64>,
    pub virtual_bytes: Option<u64>,
    pub open_fds: Option<u64>,
    pub max_fds: Option<u64>,
    pub start_time_seconds: Option<f64>,
    pub threads: Option<u64>,
}

impl ProcessSnapshot {
    /// Read /proc/self (I/O; failures leave fields out and are logged at debug level).
    pub fn read() -> ProcessSnapshot {
        let read = |path: &str| match std::fs::read_to_string(path) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::debug!(path, error = %e, "cannot read process metrics");
                None
            }
        };
        // SAFETY: sysconf only reads a configuration value.
        let (ticks, page) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        let ticks = (ticks > 0).then_some(ticks as f64);
        let page = (page > 0).then_some(page as u64);
        let stat = read("/proc/self/stat").as_deref().and_then(parse_proc_stat);
        let btime = read("/proc/stat").as_deref().and_then(parse_btime);
        let open_fds = std::fs::read_dir("/proc/self/fd")
            .map(|d| d.count() as u64)
            .map_err(|e| tracing::debug!(error = %e, "cannot list /proc/self/fd"))
            .ok();
        ProcessSnapshot {
            cpu_seconds: stat
                .zip(ticks)
                .map(|(s, t)| (s.utime_ticks + s.stime_ticks) as f64 / t),
            resident_bytes: stat.zip(page).map(|(s, p)| s.rss_pages.saturating_mul(p)),
            virtual_bytes: stat.map(|s| s.vsize_bytes),
            open_fds,
            max_fds: read("/proc/self/limits")
                .as_deref()
                .and_then(parse_max_open_files),
            start_time_seconds: match (stat, btime, ticks) {
                (Some(s), Some(b), Some(t)) => Some(b as f64 + s.start_ticks as f64 / t),
                _ => None,
            },
            threads: stat.map(|s| s.num_threads),
        }
    }
}

/// The process metrics in the text exposition format, with the names and types the official
/// Prometheus clients use.
use tapectl::catalog::CLEANER_LIFE;

/// The tape figures in the text exposition format (no series when there is no tape catalog).
pub fn render_tapes(f: &tapectl::rotation::TapeFigures) -> String {
    let mut out = String::new();
    let mut family = |name: &str, help: &str, samples: Vec<(String, f64)>| {
        if samples.is_empty() {
            return;
        }
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (labels, v) in samples {
            let _ = writeln!(out, "{name}{labels} {v}");
        }
        out.push('\n');
    };
    let q = |v: &str| {
        v.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
    };
    family(
        "rackvault_tapes",
        "Cartridges the tape catalog knows, by pool, state and place.",
        f.media
            .iter()
            .map(|((pool, state, place), n)| {
                (
                    format!(
                        "{{pool=\"{}\",state=\"{}\",place=\"{}\"}}",
                        q(pool),
                        q(state),
                        q(place)
                    ),
                    *n as f64,
                )
            })
            .collect(),
    );
    family(
        "rackvault_tapes_awaiting_offsite",
        "Tapes the rotation policy sends to a vault that are still onsite.",
        vec![(String::new(), f.awaiting_offsite as f64)],
    );
    family(
        "rackvault_last_offsite_full_timestamp_seconds",
        "Completion time of the newest full set with a copy wholly in a vault.",
        f.last_offsite_full
            .map(|t| vec![(String::new(), t.as_millisecond() as f64 / 1000.0)])
            .unwrap_or_default(),
    );
    family(
        "rackvault_cleaning_cartridge_uses_left",
        "Cleanings a cleaning cartridge has left (of 50).",
        f.cleaning_uses
            .iter()
            .map(|(b, u)| {
                (
                    format!("{{barcode=\"{}\"}}", q(b)),
                    CLEANER_LIFE.saturating_sub(*u) as f64,
                )
            })
            .collect(),
    );
    family(
        "rackvault_tape_write_errors",
        "Write errors (medium errors while writing) counted against a cartridge.",
        f.write_errors
            .iter()
            .map(|(b, n)| (format!("{{barcode=\"{}\"}}", q(b)), *n as f64))
            .collect(),
    );
    out
}

pub fn render_process(p: &ProcessSnapshot) -> String {
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: Option<f64>| {
        if let Some(v) = value {
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n\n"
            );
        }
    };
    metric(
        "process_cpu_seconds_total",
        "counter",
        "Total user and system CPU time spent in seconds.",
        p.cpu_seconds,
    );
    metric(
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory size in bytes.",
        p.resident_bytes.map(|v| v as f64),
    );
    metric(
        "process_virtual_memory_bytes",
        "gauge",
        "Virtual memory size in bytes.",
        p.virtual_bytes.map(|v| v as f64),
    );
    metric(
        "process_open_fds",
        "gauge",
        "Number of open file descriptors.",
        p.open_fds.map(|v| v as f64),
    );
    metric(
        "process_max_fds",
        "gauge",
        "Maximum number of open file descriptors.",
        p.max_fds.map(|v| v as f64),
    );
    metric(
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since unix epoch in seconds.",
        p.start_time_seconds,
    );
    metric(
        "process_threads",
        "gauge",
        "Number of OS threads in the process.",
        p.threads.map(|v| v as f64),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // A real line from a process named "a) b (c" (comm may contain anything but NUL).
    const STAT: &str = "4242 (a) b (c) S 1 4242 4242 0 -1 4194560 1573 0 0 0 250 75 0 0 20 0 \
                        7 0 123456 104857600 2560 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 \
                        0 17 3 0 0 0 0 0\n";

    #[test]
    fn tape_figures_are_gauges_with_escaped_labels() {
        let mut f = tapectl::rotation::TapeFigures::default();
        f.media
            .insert(("we\"ird".into(), "full".into(), "vault".into()), 2);
        f.cleaning_uses.insert("CLN001L1".into(), 3);
        f.awaiting_offsite = 1;
        let text = render_tapes(&f);
        assert!(text.contains("# TYPE rackvault_tapes gauge\n"), "{text}");
        assert!(
            text.contains("rackvault_tapes{pool=\"we\\\"ird\",state=\"full\",place=\"vault\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("rackvault_cleaning_cartridge_uses_left{barcode=\"CLN001L1\"} 47\n"),
            "{text}"
        );
        assert!(
            text.contains("rackvault_tapes_awaiting_offsite 1\n"),
            "{text}"
        );
        assert!(
            !text.contains("last_offsite_full"),
            "no series without a value: {text}"
        );
        assert!(render_tapes(&Default::default()).contains("rackvault_tapes_awaiting_offsite 0"));
    }

    #[test]
    fn stat_fields_after_the_last_paren() {
        let s = parse_proc_stat(STAT).unwrap();
        assert_eq!(
            s,
            ProcStat {
                utime_ticks: 250,
                stime_ticks: 75,
                num_threads: 7,
                start_ticks: 123456,
                vsize_bytes: 104857600,
                rss_pages: 2560,
            }
        );
    }

    #[test]
    fn stat_odd_input_is_none_not_panic() {
        for bad in [
            "",
            ")",
            "1 (x",
            "1 (x) S 1 2",
            "1 (x) S a b c d e f g h i j k l m n o p q r s t u v w",
            "))))))",
            "1 (é) S",
        ] {
            assert_eq!(parse_proc_stat(bad), None, "{bad:?}");
        }
        // Negative rss (never seen, but the field is signed) clamps to 0.
        let neg = STAT.replace(" 2560 ", " -5 ");
        assert_eq!(parse_proc_stat(&neg).unwrap().rss_pages, 0);
    }

    #[test]
    fn btime_and_limits() {
        let stat = "cpu  1 2 3 4\nintr 5\nctxt 9\nbtime 1764000000\nprocesses 77\n";
        assert_eq!(parse_btime(stat), Some(1_764_000_000));
        assert_eq!(parse_btime("cpu 1\n"), None);
        assert_eq!(parse_btime("btime x\n"), None);
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max cpu time              unlimited            unlimited            seconds   \n\
                      Max open files            1024                 524288               files     \n";
        assert_eq!(parse_max_open_files(limits), Some(1024));
        assert_eq!(
            parse_max_open_files(
                "Max open files            unlimited            unlimited   files\n"
            ),
            None
        );
        assert_eq!(parse_max_open_files(""), None);
    }

    #[test]
    fn process_text_skips_unknown_values() {
        let p = ProcessSnapshot {
            cpu_seconds: Some(1.5),
            threads: Some(3),
            ..Default::default()
        };
        let text = render_process(&p);
        assert!(
            text.contains(
                "# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 1.5\n"
            )
        );
        assert!(text.contains("process_threads 3\n"));
        assert!(!text.contains("process_open_fds"));
    }

    #[test]
    fn reads_this_process() {
        let p = ProcessSnapshot::read();
        assert!(p.resident_bytes.unwrap() > 0);
        assert!(p.threads.unwrap() >= 1);
        assert!(p.open_fds.unwrap() >= 3);
        assert!(p.start_time_seconds.unwrap() > 1.6e9);
    }
}
