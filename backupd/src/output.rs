//! Human-readable output for the CLI (JSON output is serde's).

use backupd::prune::PruneReport;
use backupd::run::RunSummary;
use common::human::bytes as human_bytes;
use common::manifest::{Entry, Kind};

pub fn print_json<T: serde::Serialize>(v: &T) {
    println!("{}", serde_json::to_string_pretty(v).expect("serialisable"));
}

pub fn run_summary(s: &RunSummary) {
    let st = &s.stats;
    let rate = if s.duration_secs > 0.0 {
        st.bytes_read as f64 / s.duration_secs
    } else {
        0.0
    };
    println!(
        "{}: snapshot {} made in {:.2}s",
        s.job, s.snapshot, s.duration_secs
    );
    println!(
        "  scanned     {} files, {} dirs, {}",
        st.scanned_files,
        st.scanned_dirs,
        human_bytes(st.scanned_bytes)
    );
    println!(
        "  files       {} new, {} changed, {} metadata only, {} unchanged, {} deleted",
        st.new_files, st.changed_files, st.metadata_only, st.unchanged_files, st.deleted
    );
    println!(
        "  data        {} read, {} written ({}/s)",
        human_bytes(st.bytes_read),
        human_bytes(st.bytes_written),
        human_bytes(rate as u64)
    );
    if !st.warnings.is_empty() {
        println!("  warnings    {}", st.warnings.len());
        for w in st.warnings.iter().take(20) {
            println!("    {w}");
        }
        if st.warnings.len() > 20 {
            println!("    ... (`backupd runs --json` has them all)");
        }
    }
}

pub fn snapshots_table(rows: &[serde_json::Value]) {
    println!(
        "{:<12} {:<20} {:>9} {:>11} {:>11}",
        "JOB", "SNAPSHOT", "FILES", "SIZE", "WRITTEN"
    );
    for r in rows {
        let n = |k: &str| r[k].as_u64();
        println!(
            "{:<12} {:<20} {:>9} {:>11} {:>11}",
            r["job"].as_str().unwrap_or(""),
            r["name"].as_str().unwrap_or(""),
            n("files").map(|v| v.to_string()).unwrap_or("-".into()),
            n("bytes").map(human_bytes).unwrap_or("-".into()),
            n("bytes_written").map(human_bytes).unwrap_or("-".into()),
        );
    }
}

pub fn ls_line(e: &Entry) {
    let t = match e.kind {
        Kind::Dir => 'd',
        Kind::File => '-',
        Kind::Symlink => 'l',
    };
    let time = jiff::Timestamp::from_second(e.mtime)
        .map(|t| t.strftime("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_default();
    let target = e
        .target
        .as_ref()
        .map(|t| format!(" -> {}", common::escape::escape_bytes(&t.0)))
        .unwrap_or_default();
    println!(
        "{t}{:04o} {:>6} {:>6} {:>12} {time} {}{target}",
        e.mode, e.uid, e.gid, e.size, e.path
    );
}

pub fn prune_report(r: &PruneReport) {
    for d in &r.decisions {
        let verb = if d.keep {
            "keep  "
        } else if r.dry_run {
            "would delete"
        } else {
            "delete"
        };
        println!("{}: {verb} {}  ({})", r.job, d.name, d.reasons.join(", "));
    }
}
