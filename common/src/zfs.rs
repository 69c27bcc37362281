//! A thin wrapper around the `zfs` command, limited to what zfs-fuse (pool v23) and OpenZFS share:
//! `get -Hp` for numbers (zfs-fuse has no `list -p`), no `diff`, no `written`, no bookmarks.

use std::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum ZfsError {
    #[error("cannot run `zfs`: {0} (is ZFS installed and, for zfs-fuse, is the daemon running?)")]
    Spawn(std::io::Error),
    /// `zfs <op> … <object>` failed; `reason` is the last line zfs printed, and `hint` says what
    /// to check when zfs could not reach ZFS at all. The whole command goes to the debug log.
    #[error("zfs {op} {object}: {reason}{hint}")]
    Failed {
        op: String,
        object: String,
        reason: String,
        hint: &'static str,
        stderr: String,
    },
    #[error("unexpected output from `zfs {args}`: {line:?}")]
    Parse { args: String, line: String },
}

#[derive(Debug, Clone)]
pub struct Zfs {
    program: String,
}

impl Default for Zfs {
    fn default() -> Self {
        Zfs {
            program: std::env::var("RACKVAULT_ZFS").unwrap_or_else(|_| "zfs".into()),
        }
    }
}

/// What a failed `zfs ARGS` said, for people: the operation, the object, zfs's last line, and
/// what to check when ZFS itself is unreachable.
fn failure(args: &[&str], status: &str, stderr: &str) -> ZfsError {
    let mut stderr = stderr.trim().to_string();
    if stderr.is_empty() {
        stderr = status.to_string();
    }
    let reason = stderr
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("failed")
        .trim_start_matches("internal error: ")
        .to_string();
    let unreachable = stderr.contains("failed to initialize ZFS library")
        || stderr.contains("zfs-fuse daemon")
        || stderr.contains("/dev/zfs");
    ZfsError::Failed {
        op: args.first().copied().unwrap_or("").to_string(),
        object: args.last().copied().unwrap_or("").to_string(),
        reason,
        hint: if unreachable {
            "\nis the ZFS module (or the zfs-fuse daemon) running?"
        } else {
            ""
        },
        stderr,
    }
}

/// One `name property value` row of `zfs get -Hp`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prop {
    pub name: String,
    pub property: String,
    pub value: String,
}

impl Zfs {
    pub fn run(&self, args: &[&str]) -> Result<String, ZfsError> {
        let out = Command::new(&self.program)
            .args(args)
            .output()
            .map_err(ZfsError::Spawn)?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            tracing::debug!(command = %format!("{} {}", self.program, args.join(" ")), %stderr, "zfs failed");
            return Err(failure(args, &out.status.to_string(), &stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub fn exists(&self, name: &str) -> Result<bool, ZfsError> {
        match self.run(&["get", "-Hp", "-o", "value", "name", name]) {
            Ok(_) => Ok(true),
            Err(ZfsError::Failed { stderr, .. }) if stderr.contains("does not exist") => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub fn get(&self, names: &[&str], props: &[&str]) -> Result<Vec<Prop>, ZfsError> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let plist = props.join(",");
        let mut args = vec!["get", "-Hp", "-o", "name,property,value", plist.as_str()];
        args.extend_from_slice(names);
        let out = self.run(&args)?;
        parse_get(&out).map_err(|line| ZfsError::Parse {
            args: args.join(" "),
            line,
        })
    }

    pub fn get_one(&self, name: &str, prop: &str) -> Result<String, ZfsError> {
        let rows = self.get(&[name], &[prop])?;
        rows.into_iter()
            .next()
            .map(|p| p.value)
            .ok_or_else(|| ZfsError::Parse {
                args: format!("get {prop} {name}"),
                line: String::new(),
            })
    }

    /// Runs `zfs VERB -o k=v ... OPERANDS...`.
    fn run_with_props(
        &self,
        verb: &str,
        props: &[(&str, &str)],
        operands: &[&str],
    ) -> Result<(), ZfsError> {
        let opts: Vec<String> = props.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut args = vec![verb];
        for o in &opts {
            args.extend(["-o", o.as_str()]);
        }
        args.extend_from_slice(operands);
        self.run(&args).map(|_| ())
    }

    pub fn create(&self, name: &str, props: &[(&str, &str)]) -> Result<(), ZfsError> {
        self.run_with_props("create", props, &[name])
    }

    pub fn set(&self, name: &str, prop: &str, value: &str) -> Result<(), ZfsError> {
        self.run(&["set", &format!("{prop}={value}"), name])
            .map(|_| ())
    }

    /// Takes one snapshot with user properties (`zfs snapshot -o`).
    pub fn snapshot(&self, full_name: &str, props: &[(&str, &str)]) -> Result<(), ZfsError> {
        self.run_with_props("snapshot", props, &[full_name])
    }

    /// Snapshots of `dataset` (not of its children), oldest first.
    pub fn snapshots(&self, dataset: &str) -> Result<Vec<String>, ZfsError> {
        let out = self.run(&[
            "list", "-H", "-t", "snapshot", "-o", "name", "-s", "creation", "-d", "1", dataset,
        ])?;
        Ok(out
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| l.to_string())
            .collect())
    }

    pub fn destroy(&self, name: &str) -> Result<(), ZfsError> {
        self.run(&["destroy", name]).map(|_| ())
    }

    pub fn clone_snapshot(
        &self,
        snapshot: &str,
        target: &str,
        props: &[(&str, &str)],
    ) -> Result<(), ZfsError> {
        self.run_with_props("clone", props, &[snapshot, target])
    }

    pub fn rollback(&self, snapshot: &str) -> Result<(), ZfsError> {
        self.run(&["rollback", snapshot]).map(|_| ())
    }

    pub fn mount(&self, dataset: &str) -> Result<(), ZfsError> {
        self.run(&["mount", dataset]).map(|_| ())
    }

    /// Child datasets of `parent` (one level).
    pub fn children(&self, parent: &str) -> Result<Vec<String>, ZfsError> {
        let out = self.run(&[
            "list",
            "-H",
            "-t",
            "filesystem",
            "-o",
            "name",
            "-d",
            "1",
            parent,
        ])?;
        Ok(out
            .lines()
            .filter(|l| !l.is_empty() && *l != parent)
            .map(|l| l.to_string())
            .collect())
    }
}

/// Parses `zfs get -Hp -o name,property,value` output (tab-separated).
pub fn parse_get(out: &str) -> Result<Vec<Prop>, String> {
    out.lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let mut it = l.splitn(3, '\t');
            match (it.next(), it.next(), it.next()) {
                (Some(n), Some(p), Some(v)) => Ok(Prop {
                    name: n.into(),
                    property: p.into(),
                    value: v.into(),
                }),
                _ => Err(l.to_string()),
            }
        })
        .collect()
}

/// Checks a dataset name as rackvault.toml may give it.
pub fn validate_dataset(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && !name.starts_with('/')
        && !name.ends_with('/')
        && !name.contains("//")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid ZFS dataset name {name:?} (expected e.g. \"tank/backups\")"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_names_the_operation_and_object_and_says_what_to_check() {
        // What zfs-fuse's zfs prints when its daemon is not running.
        let e = failure(
            &["get", "-Hp", "-o", "value", "name", "tank/backups/x"],
            "exit status: 1",
            "connect: No such file or directory\nPlease make sure that the zfs-fuse daemon is running.\ninternal error: failed to initialize ZFS library\n",
        );
        assert_eq!(
            e.to_string(),
            "zfs get tank/backups/x: failed to initialize ZFS library\nis the ZFS module (or the zfs-fuse daemon) running?"
        );
        let e = failure(
            &["destroy", "tank/x"],
            "exit status: 1",
            "cannot open 'tank/x': dataset does not exist\n",
        );
        assert_eq!(
            e.to_string(),
            "zfs destroy tank/x: cannot open 'tank/x': dataset does not exist"
        );
        let e = failure(&["snapshot", "tank/x@s"], "exit status: 2", "");
        assert_eq!(e.to_string(), "zfs snapshot tank/x@s: exit status: 2");
    }

    #[test]
    fn parses_get_output() {
        let out = "tank/a@s1\tcreation\t1732490000\ntank/a@s1\trackvault:managed\tyes\ntank/a@s1\tused\t-\n";
        let p = parse_get(out).unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!(p[1].property, "rackvault:managed");
        assert_eq!(p[0].value, "1732490000");
        assert!(parse_get("garbage without tabs").is_err());
    }
}
