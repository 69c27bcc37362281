//! `check-config` checks what `run` needs, and nothing is created before it passes: errors exit 2
//! with file:line:col and the field's name, in words, not a library's.

mod support;

use std::path::Path;
use std::process::Command;

fn backupd(config: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_backupd"))
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .unwrap()
}

/// Writes `toml` as the config in a fresh directory and runs check-config and run; both must
/// fail with exit 2 naming `line:col` and `needle`, and leave no state_dir or store behind.
fn refused(toml: &str, line_col: &str, needle: &str) {
    let t = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(t.path().join("src/inner")).unwrap();
    std::fs::write(t.path().join("afile"), b"x").unwrap();
    let cfg = t.path().join("rackvault.toml");
    std::fs::write(&cfg, toml).unwrap();
    for args in [&["check-config"][..], &["run", "j"][..]] {
        let o = backupd(&cfg, args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?} {toml}\n{err}");
        assert!(
            err.contains(&format!("rackvault.toml:{line_col}: ")),
            "{args:?}: expected position {line_col}: {err}"
        );
        assert!(err.contains(needle), "{args:?}: expected {needle:?}: {err}");
        assert!(!err.contains(":0:0"), "{err}");
    }
    for made in ["state", "store", "src/j", "src/inner/j"] {
        assert!(
            !t.path().join(made).exists(),
            "{made} was created by a refused config"
        );
    }
}

const HEAD: &str =
    "state_dir = \"state\"\n[store]\nkind = \"dir\"\npath = \"store\"\n[[job]]\nname = \"j\"\n";

#[test]
fn sources_that_cannot_be_backed_up_are_refused() {
    refused(
        &format!("{HEAD}source = \"missing\"\n"),
        "7:10",
        "job \"j\": `source`",
    );
    refused(
        &format!("{HEAD}source = \"missing\"\n"),
        "7:10",
        "does not exist",
    );
    refused(
        &format!("{HEAD}source = \"afile\"\n"),
        "7:10",
        "is not a directory",
    );
}

#[test]
fn store_source_and_state_dir_must_not_contain_each_other() {
    // The source inside the store, and the store as the source.
    refused(
        "state_dir = \"state\"\n[store]\nkind = \"dir\"\npath = \"src\"\n[[job]]\nname = \"j\"\nsource = \"./src\"\n",
        "7:10",
        "is the store itself",
    );
    refused(
        "state_dir = \"state\"\n[store]\nkind = \"dir\"\npath = \"src\"\n[[job]]\nname = \"j\"\nsource = \"src/inner\"\n",
        "7:10",
        "is inside the store",
    );
    // state_dir inside the store.
    refused(
        "state_dir = \"store/state\"\n[store]\nkind = \"dir\"\npath = \"store\"\n[[job]]\nname = \"j\"\nsource = \"src\"\n",
        "1:13",
        "`state_dir`",
    );
    // A state_dir that cannot be written (below a file: nobody can create it, root neither).
    refused(
        "state_dir = \"afile/state\"\n[store]\nkind = \"dir\"\npath = \"store\"\n[[job]]\nname = \"j\"\nsource = \"src\"\n",
        "1:13",
        "cannot be written",
    );
}

#[test]
fn schedules_and_retention_errors_name_the_field_in_words() {
    let job = format!("{HEAD}source = \"src\"\n");
    refused(
        &format!("{job}schedule = \"0 0 30 2 *\"\n"),
        "8:12",
        "never fires",
    );
    refused(
        &format!("{job}schedule = \"61 * * * *\"\n"),
        "8:12",
        "minute 61 is out of range (0-59)",
    );
    refused(
        &format!("{job}schedule = \"0 25 * * *\"\n"),
        "8:12",
        "hour 25 is out of range (0-23)",
    );
    refused(
        &format!("{job}retention = {{ keep_last = -1 }}\n"),
        "8:27",
        "retention.keep_last must be a whole number, 0 or more; found -1",
    );
}

#[test]
fn a_missing_configuration_says_how_to_give_one() {
    let t = tempfile::tempdir().unwrap();
    let o = backupd(&t.path().join("rackvault.toml"), &["snapshots"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(!err.contains(":0:0"), "{err}");
    assert!(err.contains("cannot read configuration"), "{err}");
    assert!(
        err.contains("--config FILE or set RACKVAULT_CONFIG"),
        "{err}"
    );
}

#[test]
fn a_good_configuration_passes() {
    let t = tempfile::tempdir().unwrap();
    std::fs::create_dir(t.path().join("src")).unwrap();
    let cfg = t.path().join("rackvault.toml");
    std::fs::write(
        &cfg,
        format!("{HEAD}source = \"src\"\nschedule = \"0 0 29 2 *\"\n"),
    )
    .unwrap();
    let o = backupd(&cfg, &["check-config"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn with_json_a_failure_is_one_json_line_on_stderr() {
    let t = tempfile::tempdir().unwrap();
    let o = backupd(&t.path().join("rackvault.toml"), &["--json", "snapshots"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(o.stdout.is_empty());
    let err = String::from_utf8_lossy(&o.stderr);
    let v: serde_json::Value = serde_json::from_str(err.trim()).expect("one JSON document");
    assert_eq!(v["message_type"], "exit_error");
    assert_eq!(v["code"], 2);
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("cannot read configuration"),
        "{v}"
    );
}
