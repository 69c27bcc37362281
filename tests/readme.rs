//! The README's commands, run as it writes them, in a private copy of the repository: a README that
//! stops working fails here. The edit between the two backup runs and the older snapshot's name are
//! the two things the README leaves to the reader; this test supplies them.

mod support;

use std::path::Path;
use std::time::Duration;

use support::{Checkout, Readme, bash, scenario_target_dir};

/// The first run builds the release binaries (minutes on a cold target directory).
const FIRST_BUILD: Duration = Duration::from_secs(40 * 60);
const STEP: Duration = Duration::from_secs(10 * 60);

fn env(co: &Checkout) -> Vec<(&'static str, std::path::PathBuf)> {
    vec![
        ("CARGO_TARGET_DIR", scenario_target_dir()),
        // The virtual library's default home (~/.local/state/rackvault/vtl) goes to the scratch dir.
        ("XDG_STATE_HOME", co.scratch.path().join("state")),
    ]
}

fn run(co: &Checkout, script: &str, deadline: Duration) -> support::Ran {
    let env = env(co);
    let env: Vec<(&str, &Path)> = env.iter().map(|(k, v)| (*k, v.as_path())).collect();
    bash(&co.dir, &env, script, deadline)
}

fn snapshot_names(co: &Checkout) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(co.dir.join("var/store/quickstart/snapshots"))
        .expect("the quickstart's snapshots directory")
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[test]
fn backup_quickstart_edit_rerun_browse_restore_verify_and_serve() {
    let readme = Readme::load();
    let first = readme.block_with("--config examples/quickstart.toml run quickstart");
    let browse = readme.block_with("$B restore quickstart");
    let serve = readme.block_with("$B serve &");
    let co = Checkout::new("readme");

    let r = run(&co, first, FIRST_BUILD).ok("the README's first backup");
    assert!(r.stdout.contains("quickstart: snapshot "), "{}", r.stdout);
    assert!(r.stdout.contains(" 0 changed,"), "{}", r.stdout);
    assert_eq!(snapshot_names(&co).len(), 1);

    // "Run it again after editing a file: only that file is copied."
    let edited = co.dir.join("docs/operator-guide.md");
    let mut text = std::fs::read_to_string(&edited).unwrap();
    text.push_str("\nAn edit between two runs.\n");
    std::fs::write(&edited, &text).unwrap();
    let r = run(&co, first, STEP).ok("the README's second backup");
    assert!(
        r.stdout.contains("files       0 new, 1 changed,"),
        "{}",
        r.stdout
    );
    let names = snapshot_names(&co);
    assert_eq!(names.len(), 2);

    let browse = browse.replace("<older-snapshot>", &names[0]);
    assert!(
        !browse.contains('<'),
        "the README has a placeholder this test does not know: {browse}"
    );
    // The browse block and the serve block use the same $B: one terminal session.
    let script = format!("{browse}\n{serve}\nwait %1\n");
    let r = run(&co, &script, STEP).ok("the README's browse, restore, verify and serve commands");
    assert!(
        r.stdout.contains("operator-guide.md"),
        "diff names the edited file:\n{}",
        r.stdout
    );
    let restored = co.dir.join("var/restored/docs/operator-guide.md");
    assert_eq!(
        std::fs::read_to_string(&restored).unwrap(),
        text,
        "restore gives the edited file back"
    );
    assert!(
        r.stdout.contains("\"name\": \"quickstart\"")
            || r.stdout.contains("\"name\":\"quickstart\""),
        "the API lists the job:\n{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("backupd_last_success"),
        "the metrics line:\n{}",
        r.stdout
    );
    assert_eq!(
        snapshot_names(&co).len(),
        3,
        "the run handed to the daemon made a snapshot"
    );
}

#[test]
fn tape_quickstart_on_the_virtual_library() {
    let readme = Readme::load();
    let tape = readme.block_with("$T vtl create");
    let co = Checkout::new("readme");
    let r = run(&co, tape, FIRST_BUILD).ok("the README's tape commands");
    assert!(r.stdout.contains("RV0001L6"), "{}", r.stdout);
    let after = format!(
        "{}\n$T library status --json\n",
        tape.lines()
            .find(|l| l.starts_with("T="))
            .expect("the README defines $T")
    );
    let r = run(&co, &after, STEP).ok("library status after the README's commands");
    let status: serde_json::Value = serde_json::from_str(&r.stdout).expect("library status --json");
    let text = status.to_string();
    assert!(text.contains("RV0001L6"), "{text}");
    // The exported tape is in an import/export slot, not in a drive or storage slot.
    let ie = status["import_export"].to_string();
    assert!(
        ie.contains("RV0001L6"),
        "RV0001L6 should be in an import/export slot: {text}"
    );
}

#[test]
fn tape_sets_quickstart_writes_verifies_and_restores_a_snapshot() {
    let readme = Readme::load();
    let tape = readme.block_with("$T vtl create");
    let sets = readme.block_with("$S set write quickstart");
    let co = Checkout::new("readme");
    // The library the tape block makes (its first tape written raw and exported), then the sets.
    run(&co, tape, FIRST_BUILD).ok("the README's tape commands");
    let r = run(&co, sets, FIRST_BUILD).ok("the README's tape set commands");
    assert!(
        r.stdout.contains("full set of quickstart snapshot"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("RV0002L6"),
        "the raw-written tape is passed over: {}",
        r.stdout
    );
    assert!(r.stdout.contains(": all match"), "{}", r.stdout);
    assert!(
        r.stdout.contains("docs/tape-sets.md"),
        "catalog find lists the docs: {}",
        r.stdout
    );
    let restored = co.dir.join("var/from-tape/docs/tape-sets.md");
    assert_eq!(
        std::fs::read(&restored).unwrap(),
        std::fs::read(co.dir.join("docs/tape-sets.md")).unwrap(),
        "restored from tape"
    );
}

#[test]
fn the_readme_names_the_test_command_ci_runs() {
    let readme = Readme::load();
    // Not run here (it runs this test); CI runs exactly this file.
    assert!(
        readme
            .block_with("scripts/test.sh")
            .contains("sudo scripts/test.sh")
    );
    let ci = std::fs::read_to_string(support::repo().join(".ci/run")).unwrap();
    assert!(ci.contains("exec scripts/test.sh"), "{ci}");
}
