//! The postgres and sqlite consistency providers against a real PostgreSQL server and real SQLite
//! databases written by other processes during the backup, through the real `backupd` binary.
//! The PostgreSQL server comes from scripts/test.sh (scripts/pg-test-server.sh).

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use support::*;

/// A job `j` whose consistency table is `consistency` (no `source`: it backs up its dumps).
fn dump_env(consistency: &str) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("rackvault.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = \"state\"\n\n[store]\nkind = \"dir\"\npath = \"store\"\n\n[[job]]\nname = \"j\"\n\n[job.consistency]\n{consistency}\n"
        ),
    )
    .unwrap();
    let source = dir.path().join("state/dumps/j");
    Env {
        dir,
        config,
        source,
    }
}

fn toml_str(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// A run that must fail: returns its error message; checks that no snapshot was made.
fn failed_run(env: &Env) -> String {
    let o = env.run(&["--json", "run", "j"]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "the run should fail:\n{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["ok"], false, "{v}");
    assert!(env.snapshots().is_empty(), "a failed run made a snapshot");
    let runs = env.json(&["runs", "j"]);
    assert_eq!(runs[0]["status"], "failed", "{runs}");
    // Nothing of the dumps is left behind.
    assert!(
        !env.source.exists(),
        "{} was left behind",
        env.source.display()
    );
    v[0]["error"].as_str().unwrap().to_string()
}

fn restore_latest(env: &Env) -> PathBuf {
    let out = env.path("restored");
    env.ok(&["restore", "j", "latest", "--to", out.to_str().unwrap()]);
    out
}

fn warnings(summary: &serde_json::Value) -> Vec<String> {
    summary["stats"]["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap().to_string())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL

/// The tests share one server; pg_dumpall reads every database, so they take turns.
static PG_LOCK: Mutex<()> = Mutex::new(());

struct Pg {
    host: String,
    port: String,
    user: String,
    bin: PathBuf,
}

fn pg() -> Pg {
    let var = |k: &str| {
        std::env::var(k).unwrap_or_else(|_| {
            panic!(
                "{k} is not set: the postgres tests need a PostgreSQL server; run scripts/test.sh \
                 (or: eval \"$(scripts/pg-test-server.sh start /tmp/rv-pg)\")"
            )
        })
    };
    Pg {
        host: var("RACKVAULT_TEST_PG_HOST"),
        port: var("RACKVAULT_TEST_PG_PORT"),
        user: var("RACKVAULT_TEST_PG_USER"),
        bin: PathBuf::from(var("RACKVAULT_TEST_PG_BIN")),
    }
}

impl Pg {
    fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new(self.bin.join(program));
        c.env("PGHOST", &self.host)
            .env("PGPORT", &self.port)
            .env("PGUSER", &self.user)
            .env_remove("PGDATABASE");
        c
    }

    fn psql_args(&self, db: &str, args: &[&str]) -> String {
        let o = self
            .cmd("psql")
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", db])
            .args(args)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "psql {args:?} on {db} failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap().trim().to_string()
    }

    fn sql(&self, db: &str, sql: &str) -> String {
        self.psql_args(db, &["-c", sql])
    }

    /// A fresh database (dropped first if an earlier test run left it).
    fn create_db(&self, name: &str) -> DbGuard<'_> {
        self.sql("postgres", &format!("DROP DATABASE IF EXISTS \"{name}\""));
        self.sql("postgres", &format!("CREATE DATABASE \"{name}\""));
        DbGuard {
            pg: self,
            name: name.to_string(),
        }
    }

    fn consistency(&self, databases: &[&str]) -> String {
        let dbs: Vec<String> = databases.iter().map(|d| toml_str(d)).collect();
        format!(
            "kind = \"postgres\"\ndatabases = [{}]\nhost = {}\nport = {}\nuser = {}\nbin_dir = {}\n",
            dbs.join(", "),
            toml_str(&self.host),
            self.port,
            toml_str(&self.user),
            toml_str(self.bin.to_str().unwrap()),
        )
    }
}

struct DbGuard<'a> {
    pg: &'a Pg,
    name: String,
}

impl Drop for DbGuard<'_> {
    fn drop(&mut self) {
        let _ = self
            .pg
            .cmd("psql")
            .args(["-X", "-q", "-d", "postgres", "-c"])
            .arg(format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            ))
            .output();
    }
}

fn db_name(test: &str) -> String {
    format!("rv_{test}_{}", std::process::id())
}

const ACCOUNTS: i64 = 100;
const INITIAL: i64 = 1000;

/// Accounts whose balances are INITIAL plus credits minus debits in the `transfers` ledger.
fn bank(pg: &Pg, db: &str, ledger_rows: u32) {
    pg.sql(
        db,
        &format!(
            "CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL);
             CREATE TABLE transfers (id bigserial PRIMARY KEY, src int NOT NULL, dst int NOT NULL,
                                     amount bigint NOT NULL, note text NOT NULL);
             INSERT INTO transfers (src, dst, amount, note)
               SELECT g % {ACCOUNTS} + 1, (g * 7) % {ACCOUNTS} + 1, g % 50, md5(g::text) || md5((g + 1)::text)
               FROM generate_series(1, {ledger_rows}) g;
             INSERT INTO accounts SELECT a, {INITIAL} FROM generate_series(1, {ACCOUNTS}) a;
             UPDATE accounts a SET balance = {INITIAL}
               + coalesce((SELECT sum(amount) FROM transfers WHERE dst = a.id), 0)
               - coalesce((SELECT sum(amount) FROM transfers WHERE src = a.id), 0);"
        ),
    );
}

/// Checks the bank invariants in `db`; returns the number of ledger rows.
fn check_bank(pg: &Pg, db: &str) -> i64 {
    let total: i64 = pg
        .sql(db, "SELECT sum(balance) FROM accounts")
        .parse()
        .unwrap();
    assert_eq!(total, ACCOUNTS * INITIAL, "the total balance changed");
    let off = pg.sql(
        db,
        &format!(
            "SELECT count(*) FROM accounts a WHERE a.balance <> {INITIAL}
               + coalesce((SELECT sum(amount) FROM transfers WHERE dst = a.id), 0)
               - coalesce((SELECT sum(amount) FROM transfers WHERE src = a.id), 0)"
        ),
    );
    assert_eq!(
        off, "0",
        "accounts whose balance does not match the ledger: the dump is not one state"
    );
    pg.sql(db, "SELECT count(*) FROM transfers")
        .parse()
        .unwrap()
}

/// A pgbench client moving money between two accounts and recording it, until killed.
fn start_bank_writer(pg: &Pg, db: &str, dir: &Path) -> Child {
    let script = dir.join("transfer.sql");
    std::fs::write(
        &script,
        "\\set a random(1, 100)\n\\set b random(1, 100)\n\\set amt random(1, 20)\n\
         BEGIN;\n\
         UPDATE accounts SET balance = balance - :amt WHERE id = :a;\n\
         UPDATE accounts SET balance = balance + :amt WHERE id = :b;\n\
         INSERT INTO transfers (src, dst, amount, note) VALUES (:a, :b, :amt, 'during backup');\n\
         END;\n",
    )
    .unwrap();
    // One client: two would deadlock on opposite transfers and abort.
    pg.cmd("pgbench")
        .args(["-n", "-c", "1", "-T", "600", "-f"])
        .arg(&script)
        .arg(db)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn ledger_count(pg: &Pg, db: &str) -> i64 {
    pg.sql(db, "SELECT count(*) FROM transfers")
        .parse()
        .unwrap()
}

#[test]
fn postgres_dump_is_one_transaction_state_under_writes() {
    let pg = pg();
    let _turn = PG_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let db = db_name("bank");
    let _guard = pg.create_db(&db);
    bank(&pg, &db, 200_000);
    let env = dump_env(&pg.consistency(&[&db]));

    let mut writer = KillOnDrop(start_bank_writer(&pg, &db, env.dir.path()));
    let before_start = Instant::now();
    // The writer is running before the backup starts.
    let mut before = ledger_count(&pg, &db);
    while before <= 200_000 {
        assert!(
            before_start.elapsed() < Duration::from_secs(30),
            "pgbench does not write"
        );
        std::thread::sleep(Duration::from_millis(20));
        before = ledger_count(&pg, &db);
    }
    let started = Instant::now();
    let summary = env.backup();
    let backup_secs = started.elapsed().as_secs_f64();
    let after = ledger_count(&pg, &db);
    assert!(
        writer.0.try_wait().unwrap().is_none(),
        "pgbench stopped early"
    );
    drop(writer);
    eprintln!(
        "postgres: backup of a {} MB database took {backup_secs:.2}s; the writer committed {} transfers meanwhile",
        pg.sql(&db, &format!("SELECT pg_database_size('{db}') / 1000000")),
        after - before
    );
    assert!(warnings(&summary).is_empty(), "{summary}");
    // The dumps were only on their way into the snapshot.
    assert!(!env.source.exists());

    let out = restore_latest(&env);
    let dump = out.join(format!("{db}.sql"));
    assert!(out.join("globals.sql").is_file());
    let globals = std::fs::read_to_string(out.join("globals.sql")).unwrap();
    assert!(globals.contains("CREATE ROLE postgres"), "{globals}");
    let snap = env.path("store/j/snapshots").join(&env.snapshots()[0]);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(snap.join(format!("{db}.sql")))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );

    let copy = db_name("bank_restored");
    let _copy_guard = pg.create_db(&copy);
    pg.psql_args(&copy, &["-f", dump.to_str().unwrap()]);
    let dumped = check_bank(&pg, &copy);
    // Writes went on before, during and after the dump's snapshot.
    assert!(
        before < dumped && dumped < after,
        "ledger rows: {before} before the run, {dumped} in the dump, {after} after"
    );
}

#[test]
fn postgres_missing_database_fails_naming_it() {
    let pg = pg();
    let _turn = PG_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let good = db_name("present");
    let _guard = pg.create_db(&good);
    let missing = db_name("missing");
    let env = dump_env(&pg.consistency(&[&good, &missing]));
    let err = failed_run(&env);
    assert!(
        err.contains(&format!("pg_dump of database \"{missing}\" failed"))
            && err.contains("does not exist"),
        "{err}"
    );
    let runs = env.json(&["runs", "j"]);
    assert!(
        runs[0]["error"].as_str().unwrap().contains(&missing),
        "{runs}"
    );
}

#[test]
fn postgres_without_databases_dumps_the_cluster_with_a_warning() {
    let pg = pg();
    let _turn = PG_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let db = db_name("cluster");
    let _guard = pg.create_db(&db);
    pg.sql(
        &db,
        "CREATE TABLE marker (v text); INSERT INTO marker VALUES ('in the cluster dump')",
    );
    let env = dump_env(&pg.consistency(&[]));
    let summary = env.backup();
    let w = warnings(&summary);
    assert!(
        w.iter()
            .any(|w| w.contains("pg_dumpall") && w.contains("own transaction")),
        "{w:?}"
    );
    let out = restore_latest(&env);
    let names: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != ".rackvault")
        .collect();
    assert_eq!(names, ["all.sql"]);
    let all = std::fs::read_to_string(out.join("all.sql")).unwrap();
    assert!(
        all.contains(&format!("CREATE DATABASE {db}")) && all.contains("in the cluster dump"),
        "all.sql lacks the test database"
    );
}

#[test]
fn postgres_missing_client_says_what_to_do() {
    let env =
        dump_env("kind = \"postgres\"\ndatabases = [\"app\"]\nbin_dir = \"/nonexistent/pgbin\"\n");
    let err = failed_run(&env);
    assert!(
        err.contains("/nonexistent/pgbin/pg_dump") && err.contains("bin_dir"),
        "{err}"
    );
}

/// Drops a role when the test ends (declare it before the databases it owns).
struct RoleGuard<'a>(&'a Pg, String);

impl Drop for RoleGuard<'_> {
    fn drop(&mut self) {
        let _ = self
            .0
            .cmd("psql")
            .args(["-X", "-q", "-d", "postgres", "-c"])
            .arg(format!("DROP ROLE IF EXISTS \"{}\"", self.1))
            .output();
    }
}

#[test]
fn postgres_role_without_superuser_gets_globals_without_passwords() {
    let pg = pg();
    let _turn = PG_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let role = db_name("owner");
    pg.sql("postgres", &format!("DROP ROLE IF EXISTS \"{role}\""));
    pg.sql("postgres", &format!("CREATE ROLE \"{role}\" LOGIN"));
    let _role = RoleGuard(&pg, role.clone());
    let db = db_name("owned");
    let _guard = pg.create_db(&db);
    pg.sql(&db, &format!("CREATE TABLE t (v text); INSERT INTO t VALUES ('owned data'); ALTER TABLE t OWNER TO \"{role}\""));
    let consistency = pg.consistency(&[&db]).replace(
        &format!("user = {}", toml_str(&pg.user)),
        &format!("user = {}", toml_str(&role)),
    );
    let env = dump_env(&consistency);
    let summary = env.backup();
    let w = warnings(&summary);
    assert!(
        w.len() == 1 && w[0].contains("without their passwords"),
        "{w:?}"
    );
    let out = restore_latest(&env);
    let globals = std::fs::read_to_string(out.join("globals.sql")).unwrap();
    assert!(
        globals.contains(&format!("CREATE ROLE {role}")),
        "{globals}"
    );
    assert!(!globals.contains("PASSWORD"), "{globals}");
    let dump = std::fs::read_to_string(out.join(format!("{db}.sql"))).unwrap();
    assert!(dump.contains("owned data"));
}

#[test]
fn postgres_cancel_kills_a_waiting_pg_dump() {
    let pg = pg();
    let _turn = PG_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let db = db_name("cancel");
    let _guard = pg.create_db(&db);
    pg.sql(&db, "CREATE TABLE t (v int)");
    // Another session holds a lock that makes pg_dump wait (for as long as the session lives).
    let mut holder = KillOnDrop(
        pg.cmd("psql")
            .args(["-X", "-q", "-d", &db])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut holder_in = holder.0.stdin.take().unwrap();
    holder_in
        .write_all(b"BEGIN;\nLOCK TABLE t IN ACCESS EXCLUSIVE MODE;\n")
        .unwrap();
    holder_in.flush().unwrap();
    let t = Instant::now();
    while pg.sql(
        &db,
        "SELECT count(*) FROM pg_locks WHERE relation = 't'::regclass AND mode = 'AccessExclusiveLock' AND granted",
    ) != "1"
    {
        assert!(t.elapsed() < Duration::from_secs(30), "the lock was not taken");
        std::thread::sleep(Duration::from_millis(20));
    }

    let env = dump_env(&pg.consistency(&[&db]));
    let cfg = backupd::config::Config::load(&env.config).unwrap();
    let job = cfg.job("j").unwrap();
    let progress = backupd::progress::Progress::hidden();
    let started = Instant::now();
    let result = std::thread::scope(|s| {
        let ctx = backupd::consistency::Context {
            job,
            snapshot: "20261125T000000Z",
            state_dir: &cfg.state_dir,
            progress: &progress,
        };
        let dumping = s.spawn(move || backupd::consistency::prepare(&ctx).map(|_| ()));
        // pg_dump is waiting for the lock.
        while pg.sql(
            "postgres",
            &format!("SELECT count(*) FROM pg_stat_activity WHERE datname = '{db}' AND application_name = 'pg_dump'"),
        ) != "1"
        {
            assert!(started.elapsed() < Duration::from_secs(30), "pg_dump did not connect");
            std::thread::sleep(Duration::from_millis(20));
        }
        progress.cancel();
        dumping.join().unwrap()
    });
    let err = result.expect_err("a cancelled dump must fail");
    assert!(
        err.downcast_ref::<backupd::progress::Cancelled>().is_some(),
        "{err:#}"
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    // The killed pg_dump's session goes away; the half-written dump is gone.
    let t = Instant::now();
    while pg.sql(
        "postgres",
        &format!("SELECT count(*) FROM pg_stat_activity WHERE datname = '{db}' AND application_name = 'pg_dump'"),
    ) != "0"
    {
        assert!(t.elapsed() < Duration::from_secs(30), "pg_dump still runs");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!env.source.exists(), "the dump directory was left behind");
    drop(holder_in);
    holder.0.wait().unwrap();
}

/// A helper process that must not outlive a failed test.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// SQLite

const SQLITE3: &str = "/usr/bin/sqlite3";

/// A database whose `totals` row always sums the `ledger` (rows of ~1 KB, so it has some size).
fn ledger_db(path: &Path, journal_mode: &str, rows: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let c = rusqlite::Connection::open(path).unwrap();
    let mode: String = c
        .query_row(&format!("PRAGMA journal_mode={journal_mode}"), [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(mode, journal_mode.to_lowercase());
    c.execute_batch(&format!(
        "CREATE TABLE ledger (id INTEGER PRIMARY KEY, amount INTEGER NOT NULL, pad BLOB);
         CREATE TABLE totals (total INTEGER NOT NULL, n INTEGER NOT NULL);
         WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g WHERE i < {rows})
           INSERT INTO ledger (amount, pad) SELECT i % 7 - 3, randomblob(1000) FROM g;
         INSERT INTO totals SELECT sum(amount), count(*) FROM ledger;"
    ))
    .unwrap();
}

/// Checks the invariant and integrity of a database file; returns its row count.
fn check_ledger(path: &Path) -> i64 {
    let c = rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap();
    c.busy_timeout(Duration::from_secs(30)).unwrap();
    let ok: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok", "{}", path.display());
    let (total, n, sum, count): (i64, i64, i64, i64) = c
        .query_row(
            "SELECT t.total, t.n, (SELECT sum(amount) FROM ledger), (SELECT count(*) FROM ledger) FROM totals t",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    assert_eq!(
        (total, n),
        (sum, count),
        "totals do not match the ledger in {}",
        path.display()
    );
    n
}

fn ledger_n(path: &Path) -> i64 {
    let c = rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap();
    c.busy_timeout(Duration::from_secs(30)).unwrap();
    c.query_row("SELECT n FROM totals", [], |r| r.get(0))
        .unwrap()
}

/// Another process (the sqlite3 shell) committing ledger transactions as fast as it can until
/// `stop`; `-bail` makes it exit at the first error, which the test notices.
struct SqliteWriter {
    child: Child,
    feeder: Option<std::thread::JoinHandle<()>>,
    stop: Arc<AtomicBool>,
}

impl SqliteWriter {
    fn start(db: &Path) -> SqliteWriter {
        let mut child = Command::new(SQLITE3)
            .args(["-bail", "-batch", "-cmd", ".timeout 60000"])
            .arg(db)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run {SQLITE3}: {e}; run scripts/test.sh (it installs sqlite3)")
            });
        let mut stdin = child.stdin.take().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let feeder = std::thread::spawn(move || {
            let txn = "BEGIN IMMEDIATE;\n\
                       INSERT INTO ledger (amount, pad) VALUES (abs(random()) % 7 - 3, randomblob(1000));\n\
                       UPDATE totals SET total = total + (SELECT amount FROM ledger WHERE id = last_insert_rowid()), n = n + 1;\n\
                       COMMIT;\n";
            while !s.load(Ordering::Relaxed) {
                if stdin.write_all(txn.as_bytes()).is_err() {
                    break;
                }
            }
        });
        SqliteWriter {
            child,
            feeder: Some(feeder),
            stop,
        }
    }

    fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            let mut err = String::new();
            use std::io::Read;
            self.child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            panic!("the sqlite3 writer stopped ({status}): {err}");
        }
    }

    /// Stops feeding; the shell finishes its current transaction and exits at EOF.
    fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.feeder.take().unwrap().join().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for SqliteWriter {
    fn drop(&mut self) {
        if self.feeder.is_some() {
            self.stop.store(true, Ordering::Relaxed);
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn sqlite_under_writes(journal_mode: &str) {
    let env = dump_env("kind = \"sqlite\"\ndatabases = [\"app/app.db\"]\n");
    let db = env.path("app/app.db");
    ledger_db(&db, journal_mode, 30_000);
    let mut writer = SqliteWriter::start(&db);
    let t = Instant::now();
    let mut before = ledger_n(&db);
    while before < 30_100 {
        writer.assert_running();
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the writer does not write"
        );
        std::thread::sleep(Duration::from_millis(10));
        before = ledger_n(&db);
    }
    let started = Instant::now();
    let summary = env.backup();
    let secs = started.elapsed().as_secs_f64();
    writer.assert_running();
    let after = ledger_n(&db);
    writer.stop();
    eprintln!(
        "sqlite {journal_mode}: backup of a {} MB database took {secs:.2}s; the writer committed {} transactions meanwhile",
        std::fs::metadata(&db).unwrap().len() / 1_000_000,
        after - before
    );
    assert!(warnings(&summary).is_empty(), "{summary}");
    assert!(!env.source.exists());
    assert!(
        after > before,
        "the writer made no progress during the backup"
    );

    let out = restore_latest(&env);
    let copy = out.join("app.db");
    // One self-contained file in rollback-journal mode.
    let mut header = [0u8; 20];
    use std::io::Read;
    std::fs::File::open(&copy)
        .unwrap()
        .read_exact(&mut header)
        .unwrap();
    assert_eq!(&header[..16], b"SQLite format 3\0");
    assert_eq!(
        (header[18], header[19]),
        (1, 1),
        "the copy is not in rollback-journal mode"
    );
    let names: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != ".rackvault")
        .collect();
    assert_eq!(names, ["app.db"]);
    let copied = check_ledger(&copy);
    assert!(
        before <= copied && copied <= after,
        "rows: {before} before the run, {copied} in the copy, {after} after"
    );
    // The source is intact too.
    check_ledger(&db);
}

#[test]
fn sqlite_wal_database_copied_consistently_under_writes() {
    sqlite_under_writes("WAL");
}

#[test]
fn sqlite_rollback_journal_database_copied_consistently_under_writes() {
    sqlite_under_writes("DELETE");
}

#[test]
fn sqlite_missing_database_fails_naming_it() {
    let env = dump_env("kind = \"sqlite\"\ndatabases = [\"app/present.db\", \"app/missing.db\"]\n");
    ledger_db(&env.path("app/present.db"), "WAL", 10);
    let err = failed_run(&env);
    let missing = env.path("app/missing.db");
    assert!(
        err.contains(&format!(
            "database file {} does not exist",
            missing.display()
        )),
        "{err}"
    );
}

#[test]
fn sqlite_unchanged_database_is_shared_with_the_previous_snapshot() {
    let env = dump_env("kind = \"sqlite\"\ndatabases = [\"app/app.db\"]\n");
    let db = env.path("app/app.db");
    ledger_db(&db, "WAL", 2_000);
    let first = env.backup();
    assert_eq!(first["stats"]["new_files"], 1, "{first}");
    let second = env.backup();
    eprintln!("second run of an unchanged database: {}", second["stats"]);
    // The copy is a new file each run, so the engine reads it, but finds it identical, data and
    // metadata (the copy takes the source's mtime), and writes nothing.
    assert_eq!(second["stats"]["unchanged_files"], 1, "{second}");
    assert_eq!(second["stats"]["bytes_written"], 0, "{second}");
    let snaps = env.snapshots();
    assert_eq!(snaps.len(), 2);
    let s = env.path("store/j/snapshots");
    assert_eq!(
        ino(&s.join(&snaps[0]).join("app.db")),
        ino(&s.join(&snaps[1]).join("app.db")),
        "the unchanged copy is not shared between snapshots"
    );
    // A change makes a changed file.
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch(
            "BEGIN; INSERT INTO ledger (amount) VALUES (5); UPDATE totals SET total = total + 5, n = n + 1; COMMIT;",
        )
        .unwrap();
    let third = env.backup();
    assert_eq!(third["stats"]["changed_files"], 1, "{third}");
    check_ledger(&restore_latest(&env).join("app.db"));
}
