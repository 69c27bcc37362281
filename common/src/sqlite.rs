//! Opening a catalog (SQLite in state_dir) the one way every part does: a rollback journal, a busy
//! timeout, and the schema brought up to date by numbered migrations.

use std::path::Path;

use anyhow::{Context, Result};
use rusqlite::Connection;

/// Opens (creating) the database at `path` and applies the migrations of `schema` it lacks
/// (`schema[i]` takes the database from version `i` to `i + 1`; `user_version` records it).
pub fn open(path: &Path, schema: &[&str]) -> Result<Connection> {
    let mut conn = Connection::open(path)
        .with_context(|| format!("cannot open catalog {}", path.display()))?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    // A rollback journal, not WAL: WAL's shared-memory index is a file that is mmapped and grown on
    // demand, so with state_dir's filesystem full every open fails (or dies of SIGBUS on tmpfs),
    // reads included. With a journal, reading needs no space at all, and a write that cannot get
    // space fails with SQLITE_FULL, which callers name. Catalog writes are few, so WAL's speed is
    // not needed. Leaving WAL needs no other connection open: until then (a process of an older
    // build), it stays WAL.
    if let Err(e) = conn.pragma_update(None, "journal_mode", "DELETE") {
        tracing::debug!(error = %e, "catalog stays in its journal mode for now");
    }
    migrate(&mut conn, schema)
        .with_context(|| format!("cannot prepare catalog {}", path.display()))?;
    Ok(conn)
}

/// A consistent copy of the database at `src` in a new file `dest` (SQLite's `VACUUM INTO`: one
/// read transaction, so writers elsewhere never leave it half-changed). `dest` must not exist.
pub fn copy_consistent(src: &Path, dest: &Path) -> Result<()> {
    let conn = Connection::open_with_flags(src, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .with_context(|| format!("cannot open catalog {}", src.display()))?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    let to = dest
        .to_str()
        .with_context(|| format!("{} is not a UTF-8 path", dest.display()))?;
    conn.execute("VACUUM INTO ?1", [to]).with_context(|| {
        format!(
            "cannot copy catalog {} to {}",
            src.display(),
            dest.display()
        )
    })?;
    Ok(())
}

fn migrate(conn: &mut Connection, schema: &[&str]) -> Result<()> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version as usize > schema.len() {
        anyhow::bail!(
            "catalog schema version {version} is newer than this build understands ({})",
            schema.len()
        );
    }
    if version as usize == schema.len() {
        return Ok(());
    }
    // Migrations rebuild tables that others reference (SQLite cannot alter a CHECK): foreign keys
    // are off while they run (the pragma is a no-op inside a transaction) and checked before the
    // commit, as SQLite's documented procedure for table changes says.
    conn.pragma_update(None, "foreign_keys", false)?;
    let result = (|| -> Result<()> {
        let tx = conn.transaction()?;
        for (i, sql) in schema.iter().enumerate().skip(version as usize) {
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        }
        let broken: i64 =
            tx.query_row("SELECT COUNT(*) FROM pragma_foreign_key_check", [], |r| {
                r.get(0)
            })?;
        if broken > 0 {
            anyhow::bail!("{broken} rows would lose their references; nothing was changed");
        }
        tx.commit()?;
        Ok(())
    })();
    conn.pragma_update(None, "foreign_keys", true)?;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_apply_once_and_a_newer_catalog_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("c.sqlite");
        let v1 = ["CREATE TABLE a (x INTEGER);"];
        let v2 = [
            "CREATE TABLE a (x INTEGER);",
            "ALTER TABLE a ADD COLUMN y TEXT;",
        ];
        open(&p, &v1)
            .unwrap()
            .execute("INSERT INTO a VALUES (1)", [])
            .unwrap();
        let c = open(&p, &v2).unwrap();
        let n: i64 = c
            .query_row("SELECT COUNT(*) FROM a WHERE y IS NULL", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1);
        drop(c);
        open(&p, &v2).unwrap();
        let e = open(&p, &v1).unwrap_err();
        assert!(format!("{e:#}").contains("newer than this build"), "{e:#}");
    }

    #[test]
    fn a_consistent_copy_has_the_rows_and_never_overwrites() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("c.sqlite");
        let c = open(&p, &["CREATE TABLE a (x INTEGER);"]).unwrap();
        c.execute("INSERT INTO a VALUES (7)", []).unwrap();
        let copy = d.path().join("copy.sqlite");
        copy_consistent(&p, &copy).unwrap();
        let n: i64 = open(&copy, &["CREATE TABLE a (x INTEGER);"])
            .unwrap()
            .query_row("SELECT x FROM a", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 7);
        assert!(
            copy_consistent(&p, &copy).is_err(),
            "an existing file is not overwritten"
        );
    }
}
