//! `backupd`: the command line of rackvault's backup engine.
//!
//! Exit codes: 0 success; 1 failure; 2 bad usage or configuration; 3 verification found
//! problems (verify, or a restore whose content did not match its manifest).

use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use backupd::catalog::Catalog;
use backupd::config::Config;

use backupd::progress::Progress;
use backupd::store;
use backupd::{diff, prune, restore, run, verify};
use common::config::ConfigError;
use common::manifest::Kind;
use common::relpath::RelPath;

mod output;
use common::human::bytes as human_bytes;
use output::print_json;

#[derive(Parser)]
#[command(
    name = "backupd",
    version,
    about = "rackvault backups: selective, incremental, into ZFS or a directory store",
    after_help = "EXIT STATUS: 0 success, 1 failure, 2 bad usage or configuration, 3 verification found problems"
)]
struct Cli {
    /// Configuration file.
    #[arg(
        long,
        short,
        global = true,
        env = "RACKVAULT_CONFIG",
        default_value = "rackvault.toml"
    )]
    config: PathBuf,
    /// Machine-readable JSON on stdout.
    #[arg(long, global = true)]
    json: bool,
    /// More log output (repeat for debug).
    #[arg(long, short, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Back up one job (or all) now, then apply its retention rules.
    Run {
        /// The job to back up (a `[[job]]` name in the configuration).
        job: Option<String>,
        /// Back up every job, one after the other.
        #[arg(long, conflicts_with = "job")]
        all: bool,
        /// Do not apply retention after the run.
        #[arg(long)]
        no_prune: bool,
    },
    /// List snapshots.
    Snapshots {
        /// Only this job's snapshots (default: every job's).
        job: Option<String>,
    },
    /// List the contents of a snapshot (from its manifest).
    Ls {
        /// The job whose snapshot to list.
        job: String,
        /// A snapshot name from `backupd snapshots JOB`, a unique prefix of one, or "latest".
        snapshot: String,
        /// A directory or file inside the snapshot, relative to its root (default: the root).
        path: Option<std::ffi::OsString>,
        /// Everything below PATH, not only its direct children.
        #[arg(long, short = 'R')]
        recursive: bool,
    },
    /// Restore a snapshot, or paths in it, into a directory.
    Restore {
        /// The job whose snapshot to restore.
        job: String,
        /// A snapshot name from `backupd snapshots JOB`, a unique prefix of one, or "latest".
        snapshot: String,
        /// Files or directories inside the snapshot to restore (default: everything); each keeps
        /// its place below --to.
        paths: Vec<std::ffi::OsString>,
        /// Directory to restore into (created if missing); nothing outside it is touched.
        #[arg(long, value_name = "DIR")]
        to: PathBuf,
        /// Replace existing files in the target.
        #[arg(long)]
        overwrite: bool,
    },
    /// Re-read a snapshot (default: the latest) and check it against its manifest.
    Verify {
        /// The job whose snapshot to verify.
        job: String,
        /// A snapshot name, a unique prefix of one, or "latest" (the default).
        snapshot: Option<String>,
        /// Verify every snapshot of the job.
        #[arg(long, conflicts_with = "snapshot")]
        all: bool,
    },
    /// Show what changed between two snapshots.
    Diff {
        /// The job whose snapshots to compare.
        job: String,
        /// The older snapshot: a name from `backupd snapshots JOB`, a unique prefix, or "latest".
        a: String,
        /// The newer snapshot, named the same ways.
        b: String,
    },
    /// Delete snapshots that no retention rule keeps.
    Prune {
        /// Only this job (default: every job).
        job: Option<String>,
        /// Show decisions without deleting.
        #[arg(long)]
        dry_run: bool,
    },
    /// Past runs from the catalog.
    Runs {
        /// Only this job's runs (default: every job's).
        job: Option<String>,
        /// How many runs to show, newest first.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Only runs with this status (queued, running, succeeded, failed, cancelled, interrupted).
        #[arg(long)]
        status: Option<String>,
    },
    /// Check the configuration and exit.
    CheckConfig,
    /// Run the daemon: scheduled runs, the HTTP API and /metrics, alerts (see docs/daemon.md).
    Serve,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Serve) {
        // Rust ignores SIGPIPE, so `backupd ls --json | head` would panic in println!; a command
        // whose reader went away ends quietly, as other Unix tools do. The daemon keeps it
        // ignored: a client closing its connection must not kill it.
        // SAFETY: setting a signal's disposition to the default before any thread starts.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RACKVAULT_LOG")
                .unwrap_or_else(|_| level.into()),
        )
        .with_writer(std::io::stderr)
        // Colour only on a terminal: not in a log file or the journal.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
    match dispatch(&cli) {
        Ok(code) => code,
        Err(e) => {
            let usage = e.downcast_ref::<ConfigError>().is_some()
                || e.downcast_ref::<backupd::config::NoSuchJob>().is_some();
            let code = if usage { 2 } else { 1 };
            common::report::print_exit_error("backupd", &e, code, cli.json);
            ExitCode::from(code)
        }
    }
}

fn jobs_for<'c>(cfg: &'c Config, job: &Option<String>) -> Result<Vec<&'c backupd::config::Job>> {
    match job {
        Some(j) => Ok(vec![cfg.job(j)?]),
        None => Ok(cfg.jobs.iter().collect()),
    }
}

/// `restore` of a snapshot only a tape set still holds.
fn restore_from_tape(
    cli: &Cli,
    cfg: &Config,
    set: &tapectl::catalog::SetRow,
    tapes: &[String],
    sel: &[RelPath],
    to: &std::path::Path,
    overwrite: bool,
) -> Result<ExitCode> {
    eprintln!(
        "backupd: snapshot {} of job {} is not in the store; restoring it from tape set {} (tapes {})",
        set.snapshot,
        set.job,
        set.uuid,
        tapes.join(", ")
    );
    let r = backupd::tape_restore::restore(cfg, set, sel, to, overwrite)?;
    Ok(report_restore(
        cli,
        &set.snapshot,
        Some(serde_json::json!({"set": set.uuid, "tapes": r.tapes})),
        to,
        &r.restored,
    ))
}

/// Says what a restore did (warnings and mismatches on stderr); exit code 3 when content did not
/// match the manifest. `from_tape` names the set and tapes when it came from tape.
fn report_restore(
    cli: &Cli,
    snapshot: &str,
    from_tape: Option<serde_json::Value>,
    to: &std::path::Path,
    report: &restore::RestoreReport,
) -> ExitCode {
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    for w in &report.mismatches {
        eprintln!("MISMATCH: {w}");
    }
    if cli.json {
        let mut v = serde_json::json!({"snapshot": snapshot, "report": report});
        if let Some(t) = from_tape {
            v["from_tape"] = t;
        }
        print_json(&v);
    } else {
        println!(
            "restored {snapshot}{} into {}: {} files ({}), {} directories, {} symlinks",
            if from_tape.is_some() {
                " from tape"
            } else {
                ""
            },
            to.display(),
            report.files,
            human_bytes(report.bytes),
            report.dirs,
            report.symlinks
        );
    }
    if report.mismatches.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    }
}

fn dispatch(cli: &Cli) -> Result<ExitCode> {
    let cfg = Config::load(&cli.config)?;
    let state_dir = cfg.state_dir.clone();
    dispatch_with(cli, cfg).map_err(|e| backupd::catalog::explain_full(e, &state_dir))
}

fn dispatch_with(cli: &Cli, cfg: Config) -> Result<ExitCode> {
    // What a run needs of the machine, before anything (state_dir, the store, a catalog) is made.
    match &cli.command {
        Command::CheckConfig => cfg.check_environment(&cfg.jobs)?,
        Command::Serve => cfg.check_environment([])?,
        Command::Run { job: Some(j), .. } if cfg.tape_job(j).is_some() => {}
        Command::Run { job: Some(j), .. } => cfg.check_environment([cfg.job(j)?])?,
        Command::Run { all: true, .. } => cfg.check_environment(&cfg.jobs)?,
        _ => {}
    }
    if let Command::CheckConfig = cli.command {
        if cli.json {
            print_json(&serde_json::json!({
                "ok": true,
                "jobs": cfg.jobs.iter().map(|j| &j.name).collect::<Vec<_>>(),
                "tape_jobs": cfg.tape_jobs.iter().map(|t| &t.name).collect::<Vec<_>>(),
            }));
        } else if cfg.tape_jobs.is_empty() {
            println!("{}: OK ({} job(s))", cfg.path.display(), cfg.jobs.len());
        } else {
            println!(
                "{}: OK ({} job(s), {} tape job(s))",
                cfg.path.display(),
                cfg.jobs.len(),
                cfg.tape_jobs.len()
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    if let Command::Serve = cli.command {
        backupd::daemon::serve(cfg)?;
        return Ok(ExitCode::SUCCESS);
    }
    if let Command::Run { job, all, .. } = &cli.command
        && let Some(client) = backupd::daemon::client::Client::for_running_daemon(&cfg)
    {
        let names: Vec<String> = match (job, all) {
            (Some(j), _) if cfg.tape_job(j).is_some() => vec![j.clone()],
            (Some(j), _) => vec![cfg.job(j)?.name.clone()],
            (None, true) => cfg.jobs.iter().map(|j| j.name.clone()).collect(),
            (None, false) => anyhow::bail!("name a job or pass --all"),
        };
        return run_through_daemon(&client, &names, cli.json);
    }
    if let Command::Run { job: Some(j), .. } = &cli.command
        && let Some(tj) = cfg.tape_job(j)
    {
        return run_tape_job(&cfg, tj, cli.json);
    }
    let store = store::open_store(&cfg)?;
    let catalog = Catalog::open(&cfg.state_dir)?;
    let now = jiff::Timestamp::now();
    match &cli.command {
        Command::CheckConfig | Command::Serve => unreachable!("handled above"),
        Command::Run { job, all, no_prune } => {
            if job.is_none() && !all {
                anyhow::bail!(
                    "name a job or pass --all (jobs: {})",
                    cfg.jobs
                        .iter()
                        .map(|j| j.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            let interrupts = backupd::interrupt::Interrupts::install()
                .context("cannot set up Ctrl-C handling")?;
            let mut failed = 0;
            let mut results = Vec::new();
            for j in jobs_for(&cfg, job)? {
                if interrupts.stopped() {
                    break;
                }
                let progress = std::sync::Arc::new(Progress::new(!cli.json));
                interrupts.watch(progress.clone());
                let req = run::RunRequest {
                    trigger: backupd::catalog::Trigger::Cli,
                    queued: None,
                    progress: &progress,
                };
                match run::run_job(
                    &cfg,
                    store.as_ref(),
                    &catalog,
                    j,
                    &req,
                    jiff::Timestamp::now(),
                ) {
                    Ok(s) => {
                        let pruned = if *no_prune || j.retention.is_empty() {
                            None
                        } else {
                            Some(prune::prune_job(
                                store.as_ref(),
                                &catalog,
                                &cfg.state_dir,
                                j,
                                jiff::Timestamp::now(),
                                false,
                            )?)
                        };
                        if !cli.json {
                            output::run_summary(&s);
                            if let Some(p) = &pruned
                                && !p.deleted.is_empty()
                            {
                                println!("  pruned      {}", p.deleted.join(", "));
                            }
                        }
                        results.push(serde_json::json!({"ok": true, "summary": s, "pruned": pruned.map(|p| p.deleted)}));
                    }
                    Err(e) => {
                        failed += 1;
                        // A name in the message may hold control characters: escaped, line breaks kept.
                        let msg = format!("{e:#}");
                        let msg: Vec<_> = msg.lines().map(common::escape::escape).collect();
                        eprintln!("error: {}", msg.join("\n"));
                        results.push(serde_json::json!({"ok": false, "job": j.name, "error": format!("{e:#}")}));
                    }
                }
            }
            if cli.json {
                print_json(&results);
            }
            Ok(if failed > 0 {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Snapshots { job } => {
            let mut all = Vec::new();
            for j in jobs_for(&cfg, job)? {
                for s in store.snapshots(&j.name)? {
                    let cat = catalog.snapshot(&j.name, &s.name)?;
                    all.push(serde_json::json!({
                        "job": j.name, "name": s.name, "time": s.time.map(|t| t.to_string()),
                        "used_bytes": s.used_bytes, "referenced_bytes": s.referenced_bytes,
                        "files": cat.as_ref().map(|c| c.files), "bytes": cat.as_ref().map(|c| c.bytes),
                        "bytes_written": cat.as_ref().map(|c| c.bytes_written),
                    }));
                }
            }
            if cli.json {
                print_json(&all);
            } else {
                output::snapshots_table(&all);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Ls {
            job,
            snapshot,
            path,
            recursive,
        } => {
            let name =
                common::snapshots::resolve(store.as_ref(), cfg.job(job)?.name.as_str(), snapshot)?;
            let view = store.open(job, &name)?;
            let m = view.manifest()?;
            let base = RelPath::parse_user(path.as_deref().map(OsStrExt::as_bytes).unwrap_or(b""))
                .context("bad path")?;
            let base_entry = m
                .get(&base)
                .ok_or_else(|| anyhow::anyhow!("{base} is not in snapshot {name}"))?;
            let list: Vec<_> = m
                .entries
                .iter()
                .filter(|e| {
                    if base_entry.kind != Kind::Dir {
                        return e.path == base;
                    }
                    e.path != base
                        && e.path.starts_with(&base)
                        && (*recursive || e.path.parent().as_ref() == Some(&base))
                })
                .collect();
            if cli.json {
                print_json(&list);
            } else {
                for e in list {
                    output::ls_line(e);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Restore {
            job,
            snapshot,
            paths,
            to,
            overwrite,
        } => {
            let sel = paths
                .iter()
                .map(|p| RelPath::parse_user(p.as_bytes()).map_err(anyhow::Error::from))
                .collect::<Result<Vec<_>>>()?;
            let name = match common::snapshots::resolve(
                store.as_ref(),
                cfg.job(job)?.name.as_str(),
                snapshot,
            ) {
                Ok(n) => n,
                // Not in the store (pruned): a tape set may hold it.
                Err(e) => match backupd::tape_restore::set_on_tape(&cfg, job, snapshot) {
                    Some((set, tapes)) => {
                        return restore_from_tape(cli, &cfg, &set, &tapes, &sel, to, *overwrite);
                    }
                    None => return Err(e),
                },
            };
            let view = store.open(job, &name)?;
            let m = view.manifest()?;
            let progress = Progress::new(!cli.json);
            let report = restore::restore(&view.root, &m, &sel, to, *overwrite, &progress);
            progress.finish();
            let report = report?;
            Ok(report_restore(cli, &name, None, to, &report))
        }
        Command::Verify { job, snapshot, all } => {
            let j = cfg.job(job)?;
            let names: Vec<String> = if *all {
                store
                    .snapshots(&j.name)?
                    .into_iter()
                    .map(|s| s.name)
                    .collect()
            } else {
                vec![common::snapshots::resolve(
                    store.as_ref(),
                    &j.name,
                    snapshot.as_deref().unwrap_or("latest"),
                )?]
            };
            let mut bad = 0;
            let mut out = Vec::new();
            for name in names {
                let view = store.open(&j.name, &name)?;
                let report = match view.manifest() {
                    Ok(m) => verify::verify(&view.root, &m, &Progress::new(!cli.json)),
                    Err(e) => verify::VerifyReport {
                        problems: vec![format!("manifest: {e:#}")],
                        ..Default::default()
                    },
                };
                if !report.problems.is_empty() {
                    bad += 1;
                }
                if !cli.json {
                    if report.problems.is_empty() {
                        println!(
                            "{}/{name}: OK ({} entries, {} files, {})",
                            j.name,
                            report.entries,
                            report.files,
                            human_bytes(report.bytes)
                        );
                    } else {
                        println!("{}/{name}: {} problem(s)", j.name, report.problems.len());
                        for p in &report.problems {
                            println!("  {p}");
                        }
                    }
                }
                out.push(serde_json::json!({"snapshot": name, "ok": report.problems.is_empty(), "report": report}));
            }
            if cli.json {
                print_json(&out);
            }
            Ok(if bad > 0 {
                ExitCode::from(3)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Diff { job, a, b } => {
            let j = cfg.job(job)?;
            let (na, nb) = (
                common::snapshots::resolve(store.as_ref(), &j.name, a)?,
                common::snapshots::resolve(store.as_ref(), &j.name, b)?,
            );
            let ma = store.open(&j.name, &na)?.manifest()?;
            let mb = store.open(&j.name, &nb)?.manifest()?;
            let d = diff::diff(&ma, &mb);
            if cli.json {
                print_json(&d);
            } else {
                for x in &d {
                    println!("{} {}", x.change.symbol(), x.path);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Prune { job, dry_run } => {
            let mut reports = Vec::new();
            for j in jobs_for(&cfg, job)? {
                let r =
                    prune::prune_job(store.as_ref(), &catalog, &cfg.state_dir, j, now, *dry_run)?;
                if !cli.json {
                    output::prune_report(&r);
                }
                reports.push(r);
            }
            if cli.json {
                print_json(&reports);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Runs { job, limit, status } => {
            let runs = catalog.runs_filtered(&backupd::catalog::RunFilter {
                job: job.clone(),
                status: status.clone(),
                before: None,
                limit: *limit,
            })?;
            if cli.json {
                print_json(&runs);
            } else {
                for r in runs {
                    let warned = match r.warnings {
                        0 => String::new(),
                        1 => "  with 1 warning".to_string(),
                        n => format!("  with {n} warnings"),
                    };
                    println!(
                        "{:>5}  {:<12} {:<20} {:<11} {}{warned}{}",
                        r.id,
                        r.job,
                        r.snapshot.unwrap_or_default(),
                        r.status,
                        r.started_at.or(r.queued_at).unwrap_or_default(),
                        r.error.map(|e| format!("  {e}")).unwrap_or_default()
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `backupd run` while `backupd serve` runs: the run goes through the daemon's queue; we wait
/// for it and report it as a local run would.
/// A tape job's run without a daemon: recorded in the catalog like a daemon's, progress on the
/// terminal, waiting for tapes as the daemon would.
fn run_tape_job(cfg: &Config, tj: &backupd::tape_jobs::TapeJob, json: bool) -> Result<ExitCode> {
    use backupd::tape_jobs::run as tape;
    let snapshots = tape::latest_snapshots(cfg, tj)?;
    let catalog = Catalog::open(&cfg.state_dir)?;
    let names: Vec<&str> = snapshots.iter().map(|(_, s)| s.as_str()).collect();
    let id = catalog.start_run(
        &tj.name,
        &names.join(", "),
        jiff::Timestamp::now(),
        backupd::catalog::Trigger::Cli,
    )?;
    let interrupts =
        backupd::interrupt::Interrupts::install().context("cannot set up Ctrl-C handling")?;
    let progress = std::sync::Arc::new(Progress::new(!json));
    interrupts.watch(progress.clone());
    let on_wait = |what: Option<&str>| {
        if let Some(w) = what {
            eprintln!("{}: {w}; waiting for it", tj.name);
        }
    };
    let r = tape::run(cfg, tj, &snapshots, &progress, &on_wait);
    progress.finish();
    match r {
        Ok(report) => {
            catalog.finish_run_report(id, backupd::catalog::Outcome::Succeeded, None, &report)?;
            if json {
                print_json(&report);
            } else {
                println!("{} (run {id})", report.summary(&tj.name));
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            let outcome = if progress.is_cancelled() {
                backupd::catalog::Outcome::Cancelled
            } else {
                backupd::catalog::Outcome::Failed
            };
            let msg = format!("{e:#}");
            catalog.finish_run_report(id, outcome, Some(&msg), &tape::TapeRunReport::default())?;
            Err(e)
        }
    }
}

fn run_through_daemon(
    client: &backupd::daemon::client::Client,
    jobs: &[String],
    json: bool,
) -> Result<ExitCode> {
    let mut failed = 0;
    let mut results = Vec::new();
    for job in jobs {
        let t = client.trigger(job)?;
        if !json {
            eprintln!(
                "{job}: handed to backupd serve (pid {}) as run {} ({})",
                client.daemon.pid, t.run_id, t.state
            );
        }
        let mut said = None;
        let r = client.wait(t.run_id, &mut |r| {
            // A tape run waiting for a tape: what to insert, once per wait.
            let waiting = r.progress.as_ref().and_then(|p| p.waiting.clone());
            if waiting.is_some() && waiting != said {
                eprintln!("{job}: {}", waiting.as_deref().unwrap_or_default());
            }
            said = waiting;
        })?;
        if r.status != "succeeded" {
            failed += 1;
            eprintln!(
                "error: run {} of job {job} {}: {}",
                r.id,
                r.status,
                r.error.clone().unwrap_or_default()
            );
        } else if !json {
            // A tape job's run has its sets as statistics.
            let tape = r.stats.clone().and_then(|s| {
                serde_json::from_value::<backupd::tape_jobs::run::TapeRunReport>(s).ok()
            });
            match tape {
                Some(report) => println!("{} (run {})", report.summary(job), r.id),
                None => println!(
                    "{job}: snapshot {} (run {})",
                    r.snapshot.clone().unwrap_or_default(),
                    r.id
                ),
            }
        }
        results.push(r);
    }
    if json {
        print_json(&results);
    }
    Ok(if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
