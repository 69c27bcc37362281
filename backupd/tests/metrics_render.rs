//! The daemon's /metrics text, parsed as the Prometheus text exposition format (its own process:
//! the global recorder is installed here).

use std::collections::{BTreeMap, HashMap};

use backupd::catalog::Outcome;
use backupd::engine::Stats;
use jiff::Timestamp;

#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

#[derive(Debug, Default)]
struct Exposition {
    help: HashMap<String, String>,
    types: HashMap<String, String>,
    samples: Vec<Sample>,
}

impl Exposition {
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut found = self
            .samples
            .iter()
            .filter(|s| s.name == name && s.labels == want);
        let v = found.next()?.value;
        assert!(found.next().is_none(), "duplicate sample {name}{labels:?}");
        Some(v)
    }

    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels)
            .unwrap_or_else(|| panic!("no sample {name}{labels:?}"))
    }
}

fn valid_name(n: &str) -> bool {
    let mut chars = n.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// A strict-enough parser of the text format (version 0.0.4): comments, samples with escaped
/// label values, float values with an optional timestamp.
fn parse(text: &str) -> Result<Exposition, String> {
    let mut e = Exposition::default();
    for (i, line) in text.lines().enumerate() {
        let err = |m: &str| format!("line {}: {m}: {line:?}", i + 1);
        if line.trim().is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            if !valid_name(name) {
                return Err(err("bad name in HELP"));
            }
            if e.help.insert(name.into(), help.into()).is_some() {
                return Err(err("second HELP"));
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest
                .split_once(' ')
                .ok_or_else(|| err("TYPE without kind"))?;
            if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                return Err(err("unknown type"));
            }
            if e.samples.iter().any(|s| s.name == name) {
                return Err(err("TYPE after its samples"));
            }
            if e.types.insert(name.into(), kind.into()).is_some() {
                return Err(err("second TYPE"));
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let name_end = line.find(['{', ' ']).ok_or_else(|| err("no value"))?;
        let name = &line[..name_end];
        if !valid_name(name) {
            return Err(err("bad metric name"));
        }
        let mut labels = BTreeMap::new();
        let mut rest = &line[name_end..];
        if let Some(r) = rest.strip_prefix('{') {
            let mut chars = r.char_indices().peekable();
            loop {
                // label name
                let start = match chars.peek() {
                    Some((_, '}')) => {
                        chars.next();
                        break;
                    }
                    Some((i, _)) => *i,
                    None => return Err(err("unterminated labels")),
                };
                let mut eq = None;
                for (i, c) in chars.by_ref() {
                    if c == '=' {
                        eq = Some(i);
                        break;
                    }
                }
                let eq = eq.ok_or_else(|| err("label without ="))?;
                let key = &r[start..eq];
                if !valid_name(key) || key.contains(':') {
                    return Err(err("bad label name"));
                }
                if chars.next().map(|(_, c)| c) != Some('"') {
                    return Err(err("label value not quoted"));
                }
                let mut value = String::new();
                loop {
                    match chars.next().map(|(_, c)| c) {
                        Some('"') => break,
                        Some('\\') => match chars.next().map(|(_, c)| c) {
                            Some('\\') => value.push('\\'),
                            Some('"') => value.push('"'),
                            Some('n') => value.push('\n'),
                            _ => return Err(err("bad escape in label value")),
                        },
                        Some('\n') | None => return Err(err("unterminated label value")),
                        Some(c) => value.push(c),
                    }
                }
                if labels.insert(key.to_string(), value).is_some() {
                    return Err(err("repeated label"));
                }
                match chars.next().map(|(_, c)| c) {
                    Some(',') => continue,
                    Some('}') => break,
                    _ => return Err(err("expected , or }")),
                }
            }
            let consumed = chars.peek().map_or(r.len(), |(i, _)| *i);
            rest = &r[consumed..];
        }
        let mut fields = rest.split_whitespace();
        let value = fields.next().ok_or_else(|| err("no value"))?;
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v.parse().map_err(|_| err("value is not a float"))?,
        };
        if let Some(ts) = fields.next() {
            ts.parse::<i64>().map_err(|_| err("bad timestamp"))?;
        }
        if fields.next().is_some() {
            return Err(err("trailing text"));
        }
        e.samples.push(Sample {
            name: name.into(),
            labels,
            value,
        });
    }
    Ok(e)
}

#[test]
fn parser_self_check() {
    let e = parse(
        "# HELP m A help.\n# TYPE m gauge\nm{a=\"x\\\"y\\\\z\\n\",b=\"\"} 1.5 1700000000000\nm 2\n",
    )
    .unwrap();
    assert_eq!(e.value("m", &[("a", "x\"y\\z\n"), ("b", "")]), 1.5);
    assert_eq!(e.value("m", &[]), 2.0);
    assert!(parse("m{a=\"x} 1\n").is_err());
    assert!(parse("m{a=x} 1\n").is_err());
    assert!(parse("m one\n").is_err());
    assert!(parse("9m 1\n").is_err());
}

fn ts(secs: i64, ms: i64) -> Timestamp {
    Timestamp::from_millisecond(secs * 1000 + ms).unwrap()
}

#[test]
fn render_is_valid_exposition_with_the_recorded_values() {
    let m = backupd::metrics::install().expect("install");
    // Idempotent: the daemon (or a test) may call it again.
    backupd::metrics::Metrics::install().expect("second install returns the same recorder");

    let t0 = ts(1_799_000_000, 0);
    let t1 = ts(1_800_000_000, 250);
    let t2 = ts(1_800_000_600, 0);
    m.seed_job("alpha", None, None);
    let seeded = |succeeded| backupd::metrics::LastRun {
        finished: t0,
        duration_secs: 12.5,
        succeeded,
    };
    m.seed_job("beta.db-1", Some(t0), Some(seeded(true)));
    // A restarted daemon exports the last run's outcome before any new run.
    m.seed_job("gamma", None, Some(seeded(false)));

    let stats = Stats {
        new_files: 3,
        changed_files: 2,
        metadata_only: 1,
        unchanged_files: 100,
        bytes_read: 4096,
        bytes_written: 2048,
        ..Stats::default()
    };
    m.run_finished("alpha", Outcome::Succeeded, 42.5, Some(&stats), t1);
    // A cancelled run updates the "last run" gauges but not success.
    m.run_finished("alpha", Outcome::Cancelled, 1.0, None, t2);
    let partial = Stats {
        bytes_read: 100,
        ..Stats::default()
    };
    m.run_finished("beta.db-1", Outcome::Failed, 3.0, Some(&partial), t2);
    m.job_store("alpha", 7, Some(1 << 30));
    m.job_store("beta.db-1", 0, None);
    m.job_stale("beta.db-1", true);
    m.job_stale("alpha", false);
    m.scheduler(2, 1, 3);

    let text = m.render();
    let e = parse(&text).unwrap_or_else(|err| panic!("{err}\n{text}"));

    // Conventions: every sample is typed, counters end in _total, names are snake_case.
    for s in &e.samples {
        let kind = e
            .types
            .get(&s.name)
            .unwrap_or_else(|| panic!("{} has no TYPE line", s.name));
        if kind == "counter" {
            assert!(
                s.name.ends_with("_total"),
                "counter {} lacks _total",
                s.name
            );
        } else {
            assert!(
                !s.name.ends_with("_total"),
                "{} {kind} ends in _total",
                s.name
            );
        }
        assert!(
            s.name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
            "{} is not snake_case",
            s.name
        );
        assert!(e.help.contains_key(&s.name), "{} has no HELP line", s.name);
        for k in s.labels.keys() {
            assert!(
                ["job", "outcome", "version"].contains(&k.as_str()),
                "label {k}"
            );
        }
    }

    let a = [("job", "alpha")];
    let b = [("job", "beta.db-1")];
    let g = [("job", "gamma")];
    let runs = |job: &str, outcome: &str| {
        e.value("backupd_runs_total", &[("job", job), ("outcome", outcome)])
    };
    assert_eq!(runs("alpha", "succeeded"), 1.0);
    assert_eq!(runs("alpha", "failed"), 0.0);
    assert_eq!(runs("alpha", "cancelled"), 1.0);
    assert_eq!(runs("beta.db-1", "failed"), 1.0);
    assert_eq!(runs("beta.db-1", "succeeded"), 0.0);
    // Seeded jobs that never ran still export zeroed counters.
    for outcome in ["succeeded", "failed", "cancelled"] {
        assert_eq!(runs("gamma", outcome), 0.0);
    }
    for name in [
        "backupd_failures_total",
        "backupd_bytes_written_total",
        "backupd_bytes_read_total",
        "backupd_files_written_total",
    ] {
        assert_eq!(e.value(name, &g), 0.0, "{name}");
    }
    assert_eq!(e.value("backupd_failures_total", &a), 0.0);
    assert_eq!(e.value("backupd_failures_total", &b), 1.0);
    assert_eq!(e.value("backupd_bytes_written_total", &a), 2048.0);
    assert_eq!(e.value("backupd_bytes_read_total", &a), 4096.0);
    assert_eq!(e.value("backupd_files_written_total", &a), 6.0);
    assert_eq!(e.value("backupd_bytes_read_total", &b), 100.0);
    assert_eq!(e.value("backupd_bytes_written_total", &b), 0.0);

    assert_eq!(
        e.value("backupd_last_run_success", &a),
        1.0,
        "cancel leaves it"
    );
    assert_eq!(e.value("backupd_last_run_success", &b), 0.0);
    assert_eq!(e.value("backupd_last_run_success", &g), 0.0, "seeded");
    assert_eq!(e.value("backupd_last_run_duration_seconds", &g), 12.5);
    assert_eq!(e.value("backupd_last_run_duration_seconds", &a), 1.0);
    assert_eq!(e.value("backupd_last_run_duration_seconds", &b), 3.0);
    let close = |x: f64, y: f64| (x - y).abs() < 1e-3;
    assert!(close(
        e.value("backupd_last_success_timestamp_seconds", &a),
        1_800_000_000.25
    ));
    // beta's last success is still the seeded one: its run failed.
    assert!(close(
        e.value("backupd_last_success_timestamp_seconds", &b),
        1_799_000_000.0
    ));
    assert_eq!(e.get("backupd_last_success_timestamp_seconds", &g), None);
    assert!(close(
        e.value("backupd_last_run_timestamp_seconds", &a),
        1_800_000_600.0
    ));
    assert!(close(
        e.value("backupd_last_run_timestamp_seconds", &b),
        1_800_000_600.0
    ));

    assert_eq!(e.value("backupd_snapshots", &a), 7.0);
    assert_eq!(e.value("backupd_snapshots", &b), 0.0);
    assert_eq!(e.value("backupd_store_used_bytes", &a), (1u64 << 30) as f64);
    assert_eq!(e.get("backupd_store_used_bytes", &b), None);
    assert_eq!(e.value("backupd_job_stale", &b), 1.0);
    assert_eq!(e.value("backupd_job_stale", &a), 0.0);
    assert_eq!(e.value("backupd_scheduler_queued_runs", &[]), 2.0);
    assert_eq!(e.value("backupd_scheduler_running_runs", &[]), 1.0);
    assert_eq!(e.value("backupd_scheduler_max_concurrent", &[]), 3.0);
    assert_eq!(
        e.value(
            "backupd_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );

    assert_eq!(e.types["backupd_runs_total"], "counter");
    assert_eq!(e.types["backupd_last_run_success"], "gauge");
    assert_eq!(e.types["process_cpu_seconds_total"], "counter");
    assert_eq!(e.types["process_resident_memory_bytes"], "gauge");

    // Process metrics, read from /proc/self at render time.
    let rss = e.value("process_resident_memory_bytes", &[]);
    let vsz = e.value("process_virtual_memory_bytes", &[]);
    assert!(rss > 0.0 && vsz >= rss, "rss {rss} vsz {vsz}");
    let cpu = e.value("process_cpu_seconds_total", &[]);
    assert!(cpu >= 0.0 && cpu.is_finite());
    let fds = e.value("process_open_fds", &[]);
    assert!(fds >= 3.0);
    if let Some(max) = e.get("process_max_fds", &[]) {
        assert!(max >= fds);
    }
    assert!(e.value("process_threads", &[]) >= 1.0);
    let start = e.value("process_start_time_seconds", &[]);
    let now = Timestamp::now().as_millisecond() as f64 / 1000.0;
    // Clock-tick resolution and btime rounding allow a couple of seconds of slack.
    assert!(
        start <= now + 2.0 && start > now - 3600.0,
        "start {start} now {now}"
    );
}
