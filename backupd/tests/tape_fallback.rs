//! `backupd restore` of a pruned snapshot comes from its tape set: written with tapectl's library
//! to the virtual library, then pruned from the store, then restored by backupd, which says so and
//! which tapes it uses.

mod support;

use std::time::Duration;

use support::{Env, assert_same_tree, noise, write};

#[test]
fn a_pruned_snapshot_is_restored_from_its_tape_set() {
    let env = Env::dir_store("retention = { keep_last = 1 }\n");
    let extra = "\n[library]\ntransport = \"virtual\"\ndir = \"vtl\"\nlock_dir = \"locks\"\n";
    let mut text = std::fs::read_to_string(&env.config).unwrap();
    text.push_str(extra);
    std::fs::write(&env.config, text).unwrap();
    for i in 0..40 {
        write(
            &env.source.join(format!("d{}/f{i}.bin", i % 4)),
            &noise(50_000 + i * 1000, i as u64),
        );
    }
    write(&env.source.join("big.bin"), &noise(70 << 20, 99));
    env.backup();
    let first = env.snapshots()[0].clone();
    let original = env.path("original");
    assert!(
        std::process::Command::new("cp")
            .args([
                "-a",
                env.source.to_str().unwrap(),
                original.to_str().unwrap()
            ])
            .status()
            .unwrap()
            .success()
    );

    // The snapshot goes to tape (two 64 MB cartridges: big.bin spans them).
    let spec = vtl::LibrarySpec {
        cartridge_capacity_mb: 64,
        barcodes: (1..=4).map(|i| format!("RV{i:04}L6")).collect(),
        ..Default::default()
    };
    vtl::Library::create(&env.path("vtl"), &spec).unwrap();
    let cf = common::config::ConfigFile::load(&env.config).unwrap();
    let shared = common::config::SharedConfig::parse(&cf).unwrap();
    let settings = tapectl::config::Settings::from_file(&cf).unwrap();
    let lib = tapectl::library::Library::open(settings, Duration::ZERO, "test").unwrap();
    let cat = tapectl::catalog::TapeCatalog::open(&shared.state_dir).unwrap();
    let snaps = common::snapshots::open(&shared);
    let view = snaps.open("j", &first).unwrap();
    let manifest = view.root.join(common::manifest::MANIFEST_FILE);
    let pool = tapectl::pools::TapeSettings::default();
    let r = tapectl::sets::write::write_set(
        lib,
        cat,
        &tapectl::sets::write::SetRequest {
            job: "j",
            snapshot: &first,
            root: &view.root,
            full: false,
            copies: 1,
            pool: pool.pool(None).unwrap(),
            drives: vec![0],
            buffer_bytes: 16 << 20,
            state_dir: &shared.state_dir,
            actor: "test",
            block_size: 512 * 1024,
            wait_for_tape: None,
        },
        &manifest,
        &tapectl::sets::write::NoProgress,
    )
    .unwrap();
    drop(view);
    let tapes: Vec<String> = r.copies[0]
        .tapes
        .iter()
        .map(|t| t.barcode.clone())
        .collect();
    assert!(tapes.len() >= 2, "{tapes:?}");

    // A new snapshot, and retention prunes the first from the store.
    write(&env.source.join("d0/f0.bin"), b"changed");
    env.backup();
    env.ok(&["prune"]);
    assert!(!env.snapshots().contains(&first));

    let out = env.path("restored");
    let o = env.run(&["restore", "j", &first, "--to", out.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains(&format!(
            "snapshot {first} of job j is not in the store; restoring it from tape set {}",
            r.set
        )),
        "{err}"
    );
    assert!(err.contains(&tapes.join(", ")), "{err}");
    assert_same_tree(&original, &out);

    // A snapshot neither in the store nor on tape is still an error naming it.
    let o = env.run(&[
        "restore",
        "j",
        "20200101T000000Z",
        "--to",
        out.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("has no snapshot"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
