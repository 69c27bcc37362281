//! `backupd serve`: runs jobs on their schedules through one queue (with catch-up after
//! downtime and a global limit), serves the JSON API and `/metrics`, sends alerts, and stops
//! cleanly on SIGTERM. See docs/daemon.md.
//!
//! Threads: one tokio thread for the scheduler loop and the API (API calls run on tokio's
//! blocking pool), one thread per running job, one for alert delivery.

pub mod client;
pub mod lock;
pub mod notify;
pub mod observe;
pub mod runner;
pub mod scheduler;
pub mod service;
pub mod shared;
pub mod tape_runner;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use jiff::Timestamp;

use crate::catalog::{Catalog, Trigger};
use crate::config::Config;
use crate::schedule::{Schedule, Zone};
use lock::{DaemonInfo, DaemonLock};
use scheduler::{Class, JobPlan, Scheduler};
use shared::{Shared, State};

/// The longest the scheduler sleeps: a changed wall clock is noticed within this time.
const TICK: Duration = Duration::from_secs(30);

pub fn serve(cfg: Config) -> Result<()> {
    let lock = DaemonLock::acquire(&cfg.state_dir)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(16)
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve_async(cfg, lock))
}

async fn serve_async(cfg: Config, lock: DaemonLock) -> Result<()> {
    // Listened for from the start: a SIGTERM sent as soon as the daemon says it is ready
    // (daemon.json, READY=1) must stop it cleanly, not kill it before the scheduler listens.
    let mut signals = StopSignals::listen()?;
    let cfg = Arc::new(cfg);
    let store: Arc<dyn crate::store::Store> = Arc::from(crate::store::open_store(&cfg)?);
    let catalog = Catalog::open(&cfg.state_dir)?;
    let abandoned = catalog.abandon_queued()?;
    if abandoned > 0 {
        tracing::warn!(
            runs = abandoned,
            "runs queued by a daemon that stopped were marked cancelled"
        );
    }
    // What a dead process left, settled now (not only at the job's next run), unless a `backupd
    // run` outside the daemon holds the job right now: a post hook a killed run owed runs first
    // (the application may be frozen), then runs left `running` are recorded as they ended (a
    // published snapshot as succeeded, the others interrupted).
    for j in &cfg.jobs {
        if let Ok(_held) = crate::run::lock_job(&cfg.state_dir, &j.name) {
            if let Some(w) = crate::pending_post::settle(&cfg.state_dir, &j.name) {
                tracing::warn!(job = %j.name, "{w}");
            }
            crate::run::settle_dead_runs(&catalog, store.as_ref(), &j.name)?;
        }
    }
    // A tape run a dead daemon left running: its set is settled by the tape catalog (interrupted).
    for t in &cfg.tape_jobs {
        catalog.mark_interrupted(&t.name)?;
    }
    let now = Timestamp::now();
    let parse = |s: &str| Schedule::parse(s, Zone::Local).map_err(anyhow::Error::msg);
    let mut plans = Vec::new();
    for j in &cfg.jobs {
        plans.push(JobPlan {
            name: j.name.clone(),
            schedules: j.schedule.iter().map(|s| parse(s)).collect::<Result<_>>()?,
            catch_up: j.catch_up,
            class: Class::Backup,
        });
    }
    for t in &cfg.tape_jobs {
        plans.push(JobPlan {
            name: t.name.clone(),
            schedules: t.schedules().map(parse).collect::<Result<_>>()?,
            catch_up: t.catch_up,
            class: Class::Tape,
        });
    }
    let sched = Scheduler::new(plans, cfg.serve.max_concurrent, now);
    let catch_up = sched.catch_up(now, |job| catalog.last_attempt_at(job).ok().flatten());
    let observer = observe::Observer::start(&cfg, &catalog, now)?;
    let shared = Arc::new(Shared {
        cfg: cfg.clone(),
        store,
        catalog: Mutex::new(catalog),
        state: Mutex::new(State {
            sched,
            active: BTreeMap::new(),
            stopping: false,
        }),
        wake: tokio::sync::Notify::new(),
        backing_up: std::sync::atomic::AtomicBool::new(false),
        started_at: now,
        observer,
    });

    let listener = tokio::net::TcpListener::bind(cfg.serve.listen)
        .await
        .with_context(|| format!("cannot listen on {} (serve.listen)", cfg.serve.listen))?;
    let addr = listener.local_addr()?;
    lock.publish(&DaemonInfo {
        pid: std::process::id(),
        listen: addr.to_string(),
        started_at: now.to_string(),
    })?;
    let router = web::router(
        Arc::new(service::Service(shared.clone())),
        web::ApiConfig {
            token: cfg.serve.token.clone(),
            allowed_hosts: cfg.serve.allowed_hosts.clone(),
        },
    );
    let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let http = tokio::spawn(web::serve(listener, router, async move {
        let _ = http_stopped.await;
    }));
    tracing::info!(listen = %addr, jobs = cfg.jobs.len(), tape_jobs = cfg.tape_jobs.len(), "backupd serve is ready");

    for job in catch_up {
        tracing::info!(job = %job, "a scheduled run was missed while the daemon was down: catching up");
        if let Err(e) = shared.enqueue(&job, Trigger::CatchUp, Timestamp::now()) {
            tracing::warn!(job = %job, error = ?e, "cannot queue the catch-up run");
        }
    }
    shared.observer.check_stale(&shared, Timestamp::now());
    shared.observer.check_tapes(Timestamp::now(), true);
    notify::ready(&status_line(&shared));
    if let Some(every) = notify::watchdog_interval() {
        tokio::spawn(async move {
            loop {
                notify::watchdog();
                tokio::time::sleep(every).await;
            }
        });
    }

    scheduler_loop(&shared, &mut signals).await;

    // SIGTERM: nothing new starts; queued runs are dropped; running ones get the grace period.
    notify::stopping();
    let dropped = {
        let mut st = shared.state();
        st.stopping = true;
        st.sched.drain_queue()
    };
    for q in dropped {
        let _ = shared
            .catalog()
            .cancel_queued(q.run_id, "the daemon stopped before the run started");
    }
    drain_runs(&shared).await;
    let _ = stop_http.send(());
    match tokio::time::timeout(Duration::from_secs(5), http).await {
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "the API server stopped with an error"),
        Err(_) => tracing::warn!("the API server did not stop within 5 s"),
        _ => {}
    }
    shared.observer.shutdown(Duration::from_secs(5));
    tracing::info!("backupd serve stopped");
    drop(lock);
    Ok(())
}

/// SIGTERM and SIGINT. Once listened for, they no longer end the process by default; a
/// signal that arrives before the scheduler waits for it is kept until it does.
struct StopSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn listen() -> Result<StopSignals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(StopSignals {
            term: signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?,
        })
    }
}

/// Starts what may start, sleeps until the next fire or a wake-up, queues what is due; returns
/// on SIGTERM or SIGINT.
async fn scheduler_loop(shared: &Arc<Shared>, signals: &mut StopSignals) {
    let mut last_status = std::time::Instant::now();
    loop {
        start_runs(shared);
        let now = Timestamp::now();
        let sleep = {
            let next_fire = shared.state().sched.next_wakeup();
            let next_stale = shared.observer.next_stale_deadline(shared);
            [next_fire, next_stale]
                .into_iter()
                .flatten()
                .min()
                .map(|t| Duration::try_from(t.duration_since(now)).unwrap_or(Duration::ZERO))
                .unwrap_or(TICK)
                .min(TICK)
        };
        tokio::select! {
            _ = tokio::time::sleep(sleep) => {}
            _ = shared.wake.notified() => {}
            _ = signals.term.recv() => { tracing::info!("SIGTERM: stopping"); return; }
            _ = signals.int.recv() => { tracing::info!("SIGINT: stopping"); return; }
        }
        let now = Timestamp::now();
        let due = shared.state().sched.due(now);
        for job in due {
            if let Err(e) = shared.enqueue(&job, Trigger::Schedule, now) {
                tracing::warn!(job = %job, error = ?e, "cannot queue the scheduled run");
            }
        }
        shared.observer.check_stale(shared, now);
        shared.observer.check_tapes(now, false);
        back_up_catalogs_if_due(shared, now);
        if last_status.elapsed() >= TICK {
            last_status = std::time::Instant::now();
            notify::status(&status_line(shared));
        }
    }
}

/// Where the daemon keeps its copies of the catalogs.
pub fn catalog_backup_dir(cfg: &crate::config::Config) -> std::path::PathBuf {
    cfg.serve
        .catalog_backup_dir
        .clone()
        .unwrap_or_else(|| cfg.state_dir.join("catalog-backups"))
}

/// Copies the catalogs (off the async thread) when the newest copy is a day old.
fn back_up_catalogs_if_due(shared: &Arc<Shared>, now: Timestamp) {
    let dest = catalog_backup_dir(&shared.cfg);
    let due = crate::catalog_backup::newest(&dest).is_none_or(|t| {
        now.duration_since(t).as_secs() as u64 >= crate::catalog_backup::EVERY.as_secs()
    });
    if due && !shared.backing_up.load(std::sync::atomic::Ordering::SeqCst) {
        let shared = shared.clone();
        tokio::task::spawn_blocking(move || back_up_catalogs(&shared));
    }
}

/// Copies the catalogs now (after a tape run, or daily); one copy at a time.
pub fn back_up_catalogs(shared: &Shared) {
    use std::sync::atomic::Ordering::SeqCst;
    if shared.backing_up.swap(true, SeqCst) {
        return;
    }
    let dest = catalog_backup_dir(&shared.cfg);
    match crate::catalog_backup::back_up(&shared.cfg.state_dir, &dest, Timestamp::now()) {
        Ok(dir) => tracing::info!(copy = %dir.display(), "catalogs copied"),
        Err(e) => tracing::warn!("the catalogs were not copied: {e:#}"),
    }
    shared.backing_up.store(false, SeqCst);
}

fn start_runs(shared: &Arc<Shared>) {
    loop {
        let next = {
            let mut st = shared.state();
            if st.stopping {
                None
            } else {
                st.sched.start_next()
            }
        };
        let Some(q) = next else { break };
        runner::start(shared, q);
    }
    let st = shared.state();
    shared.observer.scheduler(
        st.sched.queue_len(),
        st.sched.running_len(),
        st.sched.max_concurrent(),
    );
}

/// Waits for running runs: up to `stop_grace` for them to finish, then cancels them and waits
/// for them to stop (they stop at the next block and publish nothing). A second signal cancels
/// at once.
async fn drain_runs(shared: &Arc<Shared>) {
    let running = || shared.state().active.len();
    if running() == 0 {
        return;
    }
    let grace = shared.cfg.serve.stop_grace;
    tracing::info!(
        runs = running(),
        grace_secs = grace.as_secs(),
        "waiting for running jobs to finish"
    );
    let deadline = tokio::time::Instant::now() + grace;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    loop {
        if running() == 0 {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => break,
            _ = shared.wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    {
        let st = shared.state();
        for (id, a) in &st.active {
            tracing::warn!(run = id, job = %a.job, "cancelling the run: the daemon is stopping");
            a.progress.cancel();
        }
    }
    while running() > 0 {
        tokio::select! {
            _ = shared.wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
}

fn status_line(shared: &Shared) -> String {
    let st = shared.state();
    let next = st.sched.next_wakeup().map(|t| t.to_string());
    format!(
        "{} jobs, {} running, {} queued{}",
        shared.cfg.jobs.len() + shared.cfg.tape_jobs.len(),
        st.sched.running_len(),
        st.sched.queue_len(),
        next.map(|n| format!(", next run {n}")).unwrap_or_default()
    )
}
