//! `postgres`: plain-SQL dumps written into the job's dump directory, which the engine then backs
//! up, so a snapshot holds `.sql` files anyone can load with `psql -f`.
//!
//! - databases named: `pg_dump --format=plain` of each into `<db>.sql` (one transaction per
//!   database: each file is one consistent state), then `pg_dumpall --globals-only` into
//!   `globals.sql` (roles, tablespaces);
//! - none named: `pg_dumpall` of the whole cluster into `all.sql` (each database in its own
//!   transaction: consistent per database, not across databases; the run says so in a warning).
//!
//! Connection settings come from the config (PGHOST, PGPORT, PGUSER, PGPASSFILE) on top of the
//! process environment, so anything libpq reads from it (PGSSLMODE, PGSERVICE...) still applies.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};

use super::{Context, View};
use crate::config::Postgres;
use crate::progress::Cancelled;

/// The file a database is dumped to (without the directory).
pub fn dump_file_name(db: &str) -> String {
    format!("{}.sql", file_stem(db))
}

/// Database names may hold any character but NUL; file names may not hold `/`. Escape `%`, `/`,
/// control characters and a leading `.` as `%XX`, and the name `globals` too, so that no database
/// collides with `globals.sql` or a temporary file.
fn file_stem(db: &str) -> String {
    if db == "globals" {
        return "%67lobals".into();
    }
    let mut out = String::with_capacity(db.len());
    for (i, c) in db.chars().enumerate() {
        if c == '%' || c == '/' || c.is_control() || (i == 0 && c == '.') {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

pub fn prepare(ctx: &Context, pg: &Postgres) -> Result<View> {
    let dir = ctx.job.source.clone();
    create_dump_dir(&dir)?;
    let mut view = View::point_in_time(dir.clone());
    // The dumps are a copy of the data in plain text: keep them only until the snapshot has them.
    let d = dir.clone();
    view.on_release(move || crate::store::remove_path(&d));

    if pg.databases.is_empty() {
        ctx.progress.phase("dumping postgres cluster (pg_dumpall)");
        dump(ctx, pg, Dump::Cluster, &[], &dir.join("all.sql"))
            .context("pg_dumpall of the whole cluster failed")?;
        view.warnings.push(
            "postgres: no databases named, so pg_dumpall dumped the cluster; it dumps each database in \
             its own transaction (consistent per database, not across databases); name the databases \
             in `databases` for pg_dump's per-database files"
                .into(),
        );
        return Ok(view);
    }

    for db in &pg.databases {
        ctx.progress.phase(&format!("dumping postgres {db}"));
        let started = std::time::Instant::now();
        // PGDATABASE, not `--dbname`: pg_dump would read a name holding `=` as a connection string.
        dump(
            ctx,
            pg,
            Dump::Database,
            &[("PGDATABASE", db)],
            &dir.join(dump_file_name(db)),
        )
        .with_context(|| {
            format!("pg_dump of database {db:?} failed; check that it exists and that the role may read it")
        })?;
        tracing::info!(job = %ctx.job.name, database = %db, secs = started.elapsed().as_secs_f64(), "dumped postgres database");
    }

    // Roles and tablespaces are not in a pg_dump file. Reading role passwords (pg_authid) needs a
    // superuser, while a role that can read the databases is enough (and advisable) for the rest:
    // without the privilege, fall back to roles without passwords, and failing that, do without
    // globals.sql and say so; the database dumps are what matters. Other failures fail the run.
    ctx.progress.phase("dumping postgres globals");
    let globals = dir.join("globals.sql");
    let first = dump(ctx, pg, Dump::Globals, &[], &globals);
    if let Err(e) = first {
        if !is_permission_denied(&e) {
            return Err(e.context("pg_dumpall --globals-only (roles, tablespaces) failed"));
        }
        match dump(ctx, pg, Dump::GlobalsNoPasswords, &[], &globals) {
            Ok(()) => view.warnings.push(
                "postgres: globals.sql holds roles without their passwords: the backup role may not read \
                 pg_authid (use a superuser to include them)"
                    .into(),
            ),
            Err(e2) if is_permission_denied(&e2) => view.warnings.push(format!(
                "postgres: no globals.sql (roles, tablespaces): the backup role lacks the privilege: {e2:#}"
            )),
            Err(e2) => {
                return Err(e2.context("pg_dumpall --globals-only (roles, tablespaces) failed"));
            }
        }
    }
    Ok(view)
}

fn is_permission_denied(e: &anyhow::Error) -> bool {
    format!("{e:#}").contains("permission denied")
}

/// The dump directory, readable by its owner only: the dumps hold the data.
pub(super) fn create_dump_dir(dir: &Path) -> Result<()> {
    if let Some(parent) = dir.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create the dump directory {}", dir.display()))
}

/// Makes a finished temporary file durable under its final name.
pub(super) fn publish_file(file: &File, tmp: &Path, dest: &Path) -> Result<()> {
    file.sync_all()
        .with_context(|| format!("cannot write {} to disk", tmp.display()))?;
    std::fs::rename(tmp, dest)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), dest.display()))?;
    if let Some(dir) = dest.parent() {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("cannot write {} to disk", dir.display()))?;
    }
    Ok(())
}

/// The temporary name a file is written under before its rename.
pub(super) fn tmp_name(dest: &Path) -> PathBuf {
    let name = dest.file_name().unwrap_or_default().to_string_lossy();
    dest.with_file_name(format!(".{name}.tmp"))
}

#[derive(Clone, Copy)]
enum Dump {
    /// pg_dump of the database in PGDATABASE.
    Database,
    /// pg_dumpall of everything.
    Cluster,
    /// pg_dumpall --globals-only.
    Globals,
    /// pg_dumpall --globals-only --no-role-passwords (no pg_authid access needed).
    GlobalsNoPasswords,
}

/// Runs the dump program with its output going to `dest` (through a temporary file).
fn dump(
    ctx: &Context,
    pg: &Postgres,
    what: Dump,
    extra_env: &[(&str, &str)],
    dest: &Path,
) -> Result<()> {
    let (program, args): (&str, &[&str]) = match what {
        Dump::Database => ("pg_dump", &["--format=plain", "--no-password"]),
        Dump::Cluster => ("pg_dumpall", &["--no-password"]),
        Dump::Globals => ("pg_dumpall", &["--globals-only", "--no-password"]),
        Dump::GlobalsNoPasswords => (
            "pg_dumpall",
            &["--globals-only", "--no-role-passwords", "--no-password"],
        ),
    };
    let exe = match &pg.bin_dir {
        Some(d) => d.join(program),
        None => PathBuf::from(program),
    };
    let mut cmd = Command::new(&exe);
    cmd.args(args);
    crate::interrupt::unblock_signals(&mut cmd);
    if let Some(h) = &pg.host {
        cmd.env("PGHOST", h);
    }
    if let Some(p) = pg.port {
        cmd.env("PGPORT", p.to_string());
    }
    if let Some(u) = &pg.user {
        cmd.env("PGUSER", u);
    }
    if let Some(f) = &pg.password_file {
        cmd.env("PGPASSFILE", f);
    }
    for (k, v) in extra_env {
        cmd.env(k, v);
    }

    let tmp = tmp_name(dest);
    let out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    let result = (|| -> Result<()> {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                let hint = match &pg.bin_dir {
                    Some(d) => format!("is the PostgreSQL client installed in bin_dir {}?", d.display()),
                    None => "install the PostgreSQL client (e.g. apt-get install postgresql-client) or set bin_dir".into(),
                };
                anyhow!("cannot run {}: {e}; {hint}", exe.display())
            })?;
        // Keep the tail of stderr for the error message; reading it on a thread keeps the child
        // from blocking on a full pipe.
        let stderr = child.stderr.take().expect("piped");
        let reader = std::thread::spawn(move || {
            let mut tail = VecDeque::new();
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tail.len() == 20 {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
            tail.into_iter().collect::<Vec<_>>().join("\n")
        });
        let status = loop {
            if let Some(s) = child.try_wait()? {
                break s;
            }
            if ctx.progress.is_cancelled() {
                stop(&mut child);
                let _ = reader.join();
                return Err(anyhow::Error::new(Cancelled).context(format!("{program} was stopped")));
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let stderr = reader.join().unwrap_or_default();
        if !status.success() {
            bail!(
                "{} exited with {status}: {}",
                exe.display(),
                if stderr.trim().is_empty() {
                    "(no message)"
                } else {
                    stderr.trim()
                }
            );
        }
        if !stderr.trim().is_empty() {
            tracing::warn!(program, stderr = %stderr.trim(), "postgres dump succeeded with messages");
        }
        publish_file(&out, &tmp, dest)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Stops a dump program. SIGTERM first: pg_dump and pg_dumpall then send the server a cancel
/// request before they exit. A plain kill would leave the server session running, e.g. waiting
/// for a table lock, and holding up everyone queued behind it until it gets the lock.
fn stop(child: &mut std::process::Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: kill(2) on our own child, which has not been reaped yet.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        for _ in 0..100 {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_safe_and_distinct() {
        assert_eq!(dump_file_name("app"), "app.sql");
        assert_eq!(dump_file_name("a/b"), "a%2Fb.sql");
        assert_eq!(dump_file_name("50%"), "50%25.sql");
        assert_eq!(dump_file_name(".hidden"), "%2Ehidden.sql");
        assert_eq!(dump_file_name("globals"), "%67lobals.sql");
        assert_eq!(dump_file_name("Grüße db"), "Grüße db.sql");
        assert_ne!(dump_file_name("a%2Fb"), dump_file_name("a/b"));
    }
}
