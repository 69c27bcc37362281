//! `Volume::check` and `Volume::repair` (ltfsck) on the virtual library, through the real drive
//! command set: a clean volume is consistent; an interrupted write, a missing trailing filemark, a
//! stale index partition and a damaged last data-partition index are each reported with their kind,
//! and repair makes each consistent with every file of the recovered index byte-exact and the mount
//! back on the MAM fast path; a rollback writes an older generation's content as a new, higher
//! generation; and `tapectl ltfs check` exits 0/1.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Output;

use ltfs::coherency::VolumeCoherency;
use ltfs::volume::{
    CheckReport, FileMeta, FormatOptions, ProblemKind, RepairReport, Volume, VolumeError,
};
use tapectl::drive::Drive;
use vtl::Library;

mod support;
use support::{vtl_drive, vtl_with_tape_loaded};

const BARCODE: &str = "RV0001L6";
const UUID: &str = "0b3c8a54-5c1e-4f7e-9d7e-2f4b1a6c9e10";
const BS: usize = 65536;

type Dev = Drive<vtl::VirtualDrive>;

struct Setup {
    _tmp: tempfile::TempDir,
    lib: Library,
    dir: PathBuf,
}

fn setup() -> Setup {
    let (tmp, lib) = vtl_with_tape_loaded(BARCODE, &[]);
    let dir = lib.cartridge_dir(BARCODE);
    Setup {
        _tmp: tmp,
        lib,
        dir,
    }
}

fn drive(lib: &Library) -> Dev {
    vtl_drive(lib)
}

fn opts() -> FormatOptions {
    FormatOptions {
        barcode: Some(BARCODE.into()),
        volume_name: Some("check".into()),
        block_size: BS,
        force: false,
        index_partition_mb: 100,
        uuid: Some(UUID.into()),
    }
}

fn pattern(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2654435761).max(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// The cartridge's files and their contents (to show that check writes nothing).
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("0_") || n.starts_with("1_") || n.starts_with("attr_"))
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|n| {
            let b = std::fs::read(dir.join(&n)).unwrap();
            (n, b)
        })
        .collect()
}

fn check(s: &Setup) -> CheckReport {
    let before = snapshot(&s.dir);
    let mut d = drive(&s.lib);
    let r = Volume::check(&mut d).unwrap();
    drop(d);
    assert_eq!(snapshot(&s.dir), before, "check wrote to the tape");
    r
}

fn kinds(r: &CheckReport) -> BTreeSet<(ProblemKind, Option<u8>)> {
    r.problems.iter().map(|p| (p.kind, p.partition)).collect()
}

fn repair(s: &Setup, to: Option<u64>) -> RepairReport {
    let mut d = drive(&s.lib);
    let r = Volume::repair(&mut d, to).unwrap();
    assert!(
        r.after.consistent,
        "after repair: {:?}\nactions: {:?}",
        r.after.problems, r.actions
    );
    assert!(r.after.notes.is_empty(), "{:?}", r.after.notes);
    r
}

/// A fresh drive: the mount is on the fast path and consistent; every `(path, bytes)` reads back
/// byte-exact and every path in `absent` is not there. Returns the generation list.
fn verify(s: &Setup, present: &[(&str, &[u8])], absent: &[&str]) -> Vec<u64> {
    let r = check(s);
    assert!(r.consistent, "{:?}", r.problems);
    assert!(r.notes.is_empty(), "{:?}", r.notes);
    let mut d = drive(&s.lib);
    let mut vol = Volume::mount(&mut d).unwrap();
    let m = vol.mount_report().clone();
    assert!(m.fast_path && m.is_consistent(), "{m:?}");
    for (p, want) in present {
        let mut out = Vec::new();
        vol.read_file(p, &mut out).unwrap();
        assert!(out == *want, "{p} differs");
    }
    for p in absent {
        assert!(
            matches!(vol.stat(p).unwrap_err(), VolumeError::NotFound { .. }),
            "{p} should not be there"
        );
    }
    let g: Vec<u64> = vol
        .generations()
        .unwrap()
        .iter()
        .map(|g| g.generation)
        .collect();
    for w in g.windows(2) {
        assert!(w[0] >= w[1], "generations decrease going back: {g:?}");
    }
    vol.unmount().unwrap();
    g
}

/// The last DP index's start block, from the MAM record.
fn dp_last_index(dir: &Path) -> u64 {
    VolumeCoherency::decode(&std::fs::read(dir.join("attr_1_80c")).unwrap())
        .unwrap()
        .set_id
}

/// End of data of physical partition `p` in the cartridge directory.
fn eod_file(dir: &Path, p: u8) -> u64 {
    (0..)
        .find(|b| dir.join(format!("{p}_{b}_E")).exists())
        .unwrap()
}

#[test]
fn a_clean_volume_is_consistent_and_repair_does_nothing() {
    let s = setup();
    let a = pattern(300_000, 1);
    {
        let mut d = drive(&s.lib);
        let mut vol = Volume::format(&mut d, &opts()).unwrap();
        vol.put_file("a", &a[..], &FileMeta::default()).unwrap();
        vol.mkdir_p("empty/dir").unwrap();
        vol.unmount().unwrap();
    }
    let r = check(&s);
    assert!(r.consistent, "{:?}", r.problems);
    assert!(r.problems.is_empty() && r.notes.is_empty(), "{r:?}");
    let c = r.current.as_ref().unwrap();
    assert_eq!((c.generation, c.location.partition), (2, 'a'));
    let g: Vec<(u64, char)> = r
        .generations
        .iter()
        .map(|g| (g.generation, g.location.partition))
        .collect();
    assert_eq!(g, [(2, 'a'), (2, 'b'), (1, 'b')]);
    for p in &r.partitions {
        assert!(p.trailing_filemark && p.extra_blocks == 0, "{p:?}");
    }
    let before = snapshot(&s.dir);
    let rr = repair(&s, None);
    assert!(rr.actions.is_empty(), "{:?}", rr.actions);
    assert!(!rr.rolled_back);
    assert_eq!(
        snapshot(&s.dir),
        before,
        "a consistent volume is not written"
    );
    verify(&s, &[("a", &a)], &[]);
}

#[test]
fn interrupted_write_extra_blocks_are_reported_and_recovered() {
    let s = setup();
    let one = pattern(200_000, 1);
    let two = pattern(150_000, 2);
    {
        let mut d = drive(&s.lib);
        let mut vol = Volume::format(&mut d, &opts()).unwrap();
        vol.put_file("one", &one[..], &FileMeta::default()).unwrap();
        vol.sync().unwrap();
        vol.put_file("two", &two[..], &FileMeta::default()).unwrap();
        let _ = vol.into_device(); // crash
    }
    let r = check(&s);
    assert!(!r.consistent);
    assert_eq!(
        kinds(&r),
        BTreeSet::from([
            (ProblemKind::ExtraBlocks, Some(1)),
            (ProblemKind::StaleIndexPartition, Some(0)),
        ]),
        "{:?}",
        r.problems
    );
    let extra = r
        .problems
        .iter()
        .find(|p| p.kind == ProblemKind::ExtraBlocks)
        .unwrap();
    assert_eq!(extra.block, Some(14), "{extra:?}");
    assert_eq!(r.current.as_ref().unwrap().generation, 2);
    // The unreferenced data stays where it is.
    let data_before: Vec<Vec<u8>> = (14..17)
        .map(|b| std::fs::read(s.dir.join(format!("1_{b}_R"))).unwrap())
        .collect();

    let rr = repair(&s, None);
    assert!(!rr.rolled_back);
    assert_eq!(rr.recovered.generation, 2);
    assert_eq!(rr.current.generation, 3);
    assert_eq!(rr.current.location.partition, 'a');
    let dp_last = rr.after.partitions[1].last_index.as_ref().unwrap();
    assert_eq!(
        (dp_last.generation, dp_last.location.start_block),
        (3, 18),
        "after the extra blocks"
    );
    assert!(
        rr.actions.iter().any(|a| a.contains("unreferenced")),
        "{:?}",
        rr.actions
    );
    let data_after: Vec<Vec<u8>> = (14..17)
        .map(|b| std::fs::read(s.dir.join(format!("1_{b}_R"))).unwrap())
        .collect();
    assert_eq!(data_before, data_after);
    let g = verify(&s, &[("one", &one)], &["two"]);
    assert_eq!(g, [3, 3, 2, 1]);
}

#[test]
fn missing_trailing_filemarks_are_appended() {
    let s = setup();
    let a = pattern(100_000, 3);
    {
        let mut d = drive(&s.lib);
        let mut vol = Volume::format(&mut d, &opts()).unwrap();
        vol.put_file("a", &a[..], &FileMeta::default()).unwrap();
        vol.unmount().unwrap();
    }
    // Cut the trailing FM of both partitions' last index (no drive handle is open).
    for p in [0u8, 1] {
        let eod = eod_file(&s.dir, p);
        let fm = s.dir.join(format!("{p}_{}_F", eod - 1));
        assert!(fm.exists());
        std::fs::remove_file(fm).unwrap();
        std::fs::rename(
            s.dir.join(format!("{p}_{eod}_E")),
            s.dir.join(format!("{p}_{}_E", eod - 1)),
        )
        .unwrap();
    }
    let r = check(&s);
    assert_eq!(
        kinds(&r),
        BTreeSet::from([
            (ProblemKind::MissingTrailingFilemark, Some(0)),
            (ProblemKind::MissingTrailingFilemark, Some(1)),
        ]),
        "{:?}",
        r.problems
    );
    // MAM still names the right indexes, but they are no longer at end of data: a note.
    assert!(
        r.notes.iter().all(|n| n.kind == ProblemKind::Coherency) && !r.notes.is_empty(),
        "{:?}",
        r.notes
    );
    let rr = repair(&s, None);
    assert_eq!(
        rr.current.generation, 2,
        "no new generation: {:?}",
        rr.actions
    );
    assert_eq!(
        rr.actions
            .iter()
            .filter(|a| a.contains("trailing filemark"))
            .count(),
        2,
        "{:?}",
        rr.actions
    );
    let g = verify(&s, &[("a", &a)], &[]);
    assert_eq!(g, [2, 2, 1]);
}

#[test]
fn a_stale_index_partition_is_rewritten() {
    let s = setup();
    let one = pattern(70_000, 4);
    {
        let mut d = drive(&s.lib);
        let mut vol = Volume::format(&mut d, &opts()).unwrap();
        vol.put_file("one", &one[..], &FileMeta::default()).unwrap();
        vol.sync().unwrap();
        let _ = vol.into_device(); // crash after the sync: the IP still has generation 1
    }
    let r = check(&s);
    assert_eq!(
        kinds(&r),
        BTreeSet::from([(ProblemKind::StaleIndexPartition, Some(0))]),
        "{:?}",
        r.problems
    );
    let c = r.current.as_ref().unwrap();
    assert_eq!((c.generation, c.location.partition), (2, 'b'));
    let dp_before = (0..eod_file(&s.dir, 1))
        .map(|b| s.dir.join(format!("1_{b}_R")).exists())
        .collect::<Vec<_>>();
    let rr = repair(&s, None);
    // A clean copy: same generation on the IP, nothing new on the DP.
    assert_eq!(rr.current.generation, 2);
    assert_eq!(rr.current.location.partition, 'a');
    let dp_after = (0..eod_file(&s.dir, 1))
        .map(|b| s.dir.join(format!("1_{b}_R")).exists())
        .collect::<Vec<_>>();
    assert_eq!(dp_before, dp_after);
    let g = verify(&s, &[("one", &one)], &[]);
    assert_eq!(g, [2, 2, 1]);
}

#[test]
fn a_damaged_last_data_partition_index_is_recovered_from_the_index_partition() {
    let s = setup();
    let a = pattern(100_000, 5);
    let b = pattern(180_000, 6);
    {
        let mut d = drive(&s.lib);
        let mut vol = Volume::format(&mut d, &opts()).unwrap();
        vol.put_file("a", &a[..], &FileMeta::default()).unwrap();
        vol.sync().unwrap();
        vol.put_file("sub/b", &b[..], &FileMeta::default()).unwrap();
        vol.unmount().unwrap();
    }
    // Damage the last DP index (generation 3): keep the XML declaration, garble the rest.
    let last = dp_last_index(&s.dir);
    let f = s.dir.join(format!("1_{last}_R"));
    let mut bytes = std::fs::read(&f).unwrap();
    for x in &mut bytes[100..] {
        *x = b'#';
    }
    std::fs::write(&f, &bytes).unwrap();

    // The MAM fast path still reads the index partition's (good) index without noticing; check
    // scans and finds the damage.
    let r = check(&s);
    let k = kinds(&r);
    for want in [
        (ProblemKind::InvalidIndex, Some(1)),
        (ProblemKind::ExtraBlocks, Some(1)),
        (ProblemKind::PointerMismatch, Some(0)),
    ] {
        assert!(k.contains(&want), "{want:?} missing: {:?}", r.problems);
    }
    let bad = r
        .problems
        .iter()
        .find(|p| p.kind == ProblemKind::InvalidIndex)
        .unwrap();
    assert_eq!(bad.block, Some(last));
    // The IP's generation 3 is the newest valid index.
    let c = r.current.as_ref().unwrap();
    assert_eq!((c.generation, c.location.partition), (3, 'a'));

    let rr = repair(&s, None);
    assert_eq!(rr.recovered.generation, 3);
    assert_eq!(rr.current.generation, 4);
    let dp_last = rr.after.partitions[1].last_index.as_ref().unwrap();
    assert!(
        dp_last.location.start_block > last + 1,
        "the new DP index goes after the damaged one"
    );
    let g = verify(&s, &[("a", &a), ("sub/b", &b)], &[]);
    assert_eq!(g, [4, 4, 2, 1], "the damaged generation 3 is skipped");
}

#[test]
fn rollback_to_an_older_generation_writes_a_new_generation() {
    let s = setup();
    let a = pattern(90_000, 7);
    let b = pattern(90_000, 8);
    let c = pattern(90_000, 9);
    {
        let mut d = drive(&s.lib);
        let mut vol = Volume::format(&mut d, &opts()).unwrap();
        vol.put_file("a", &a[..], &FileMeta::default()).unwrap();
        vol.sync().unwrap(); // 2
        vol.put_file("b", &b[..], &FileMeta::default()).unwrap();
        vol.sync().unwrap(); // 3
        vol.put_file("c", &c[..], &FileMeta::default()).unwrap();
        vol.unmount().unwrap(); // 4
    }
    let r = check(&s);
    assert!(r.consistent, "{:?}", r.problems);
    let g: Vec<u64> = r.generations.iter().map(|g| g.generation).collect();
    assert_eq!(g, [4, 4, 3, 2, 1]);

    // A generation that is not there.
    {
        let mut d = drive(&s.lib);
        let e = Volume::repair(&mut d, Some(9)).err().unwrap();
        assert!(
            matches!(e, VolumeError::NoSuchGeneration { generation: 9, .. }),
            "{e}"
        );
    }

    let rr = repair(&s, Some(2));
    assert!(rr.rolled_back);
    assert_eq!(rr.recovered.generation, 2);
    assert_eq!(rr.current.generation, 5, "highest on tape + 1");
    let g = verify(&s, &[("a", &a)], &["b", "c"]);
    assert_eq!(g, [5, 5, 4, 3, 2, 1]);

    // And forward again: generation 4's content becomes generation 6; all the data is still there.
    let rr = repair(&s, Some(4));
    assert!(rr.rolled_back);
    assert_eq!(rr.current.generation, 6);
    let g = verify(&s, &[("a", &a), ("b", &b), ("c", &c)], &[]);
    assert_eq!(g, [6, 6, 5, 4, 3, 2, 1]);

    // Rolling back to the current generation is just a check-and-repair.
    let rr = repair(&s, Some(6));
    assert!(!rr.rolled_back && rr.actions.is_empty(), "{:?}", rr.actions);
}

// ------------------------------------------------------------------------------------------------
// The command line.

struct Vtl {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    locks: PathBuf,
}

impl Vtl {
    fn cmd(&self, args: &[&str]) -> Output {
        support::tapectl_on_vtl(&self.dir, &self.locks)
            .args(args)
            .output()
            .unwrap()
    }

    fn run(&self, args: &[&str]) -> (i32, String, String) {
        let o = self.cmd(args);
        (
            o.status.code().unwrap(),
            String::from_utf8_lossy(&o.stdout).to_string(),
            String::from_utf8_lossy(&o.stderr).to_string(),
        )
    }

    fn ok(&self, args: &[&str]) -> String {
        let (code, out, err) = self.run(args);
        assert_eq!(code, 0, "tapectl {args:?} failed: {err}\n{out}");
        out
    }
}

#[test]
fn cli_check_exit_codes_and_repair() {
    let tmp = tempfile::tempdir().unwrap();
    let v = Vtl {
        dir: tmp.path().join("vtl"),
        locks: tmp.path().join("locks"),
        _tmp: tmp,
    };
    v.ok(&["vtl", "create", "--capacity-mb", "64"]);
    v.ok(&["load", BARCODE]);
    v.ok(&["ltfs", "format", "--block-size", "64K"]);
    let src = v.dir.parent().unwrap().join("f.bin");
    std::fs::write(&src, pattern(200_000, 10)).unwrap();
    v.ok(&["ltfs", "put", src.to_str().unwrap(), "/"]);

    let out = v.ok(&["ltfs", "check"]);
    assert!(out.contains("the volume is consistent"), "{out}");
    let j: serde_json::Value = serde_json::from_str(&v.ok(&["--json", "ltfs", "check"])).unwrap();
    assert_eq!(j["consistent"], true, "{j}");

    // Cut the IP's trailing filemark in the cartridge directory.
    let dir = Library::open(&v.dir).unwrap().cartridge_dir(BARCODE);
    let eod = eod_file(&dir, 0);
    std::fs::remove_file(dir.join(format!("0_{}_F", eod - 1))).unwrap();
    std::fs::rename(
        dir.join(format!("0_{eod}_E")),
        dir.join(format!("0_{}_E", eod - 1)),
    )
    .unwrap();

    let (code, out, err) = v.run(&["--json", "ltfs", "check"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("--repair"), "{err}");
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["consistent"], false);
    assert_eq!(j["problems"][0]["kind"], "missing_trailing_filemark", "{j}");
    assert_eq!(j["problems"][0]["partition"], 0);
    // --generation needs --repair.
    let (code, _, _) = v.run(&["ltfs", "check", "--generation", "1"]);
    assert_eq!(code, 2);

    let out = v.ok(&["ltfs", "check", "--repair"]);
    assert!(
        out.contains("appended the missing trailing filemark"),
        "{out}"
    );
    assert!(
        out.trim_end().ends_with("the volume is consistent"),
        "{out}"
    );
    v.ok(&["ltfs", "check"]);

    // Roll back to the format's generation: the file is gone from the new current index.
    let j: serde_json::Value =
        serde_json::from_str(&v.ok(&["--json", "ltfs", "check", "--repair", "--generation", "1"]))
            .unwrap();
    assert_eq!(j["rolled_back"], true, "{j}");
    assert_eq!(j["recovered"]["generation"], 1);
    assert_eq!(j["current"]["generation"], 3);
    let ls: serde_json::Value = serde_json::from_str(&v.ok(&["--json", "ltfs", "ls"])).unwrap();
    assert_eq!(ls.as_array().unwrap().len(), 0, "{ls}");
    let (code, _, err) = v.run(&["ltfs", "check", "--repair", "--generation", "7"]);
    assert_eq!(code, 1);
    assert!(err.contains("generation 7 is not on the volume"), "{err}");
}

// ------------------------------------------------------------------------------------------------
// What `ltfs put` reports as written can be read back; a hostile tape cannot fill the disk.

impl Vtl {
    /// A virtual library of 64 MB cartridges with an LTFS volume (64 KiB blocks) in drive 0.
    fn formatted() -> Vtl {
        let tmp = tempfile::tempdir().unwrap();
        let v = Vtl {
            dir: tmp.path().join("vtl"),
            locks: tmp.path().join("locks"),
            _tmp: tmp,
        };
        v.ok(&["vtl", "create", "--capacity-mb", "64"]);
        v.ok(&["load", BARCODE]);
        v.ok(&["ltfs", "format", "--block-size", "64K"]);
        v
    }

    fn base(&self) -> PathBuf {
        self.dir.parent().unwrap().to_path_buf()
    }

    fn cartridge(&self) -> PathBuf {
        Library::open(&self.dir).unwrap().cartridge_dir(BARCODE)
    }

    /// Runs `args`, which must fail; returns stderr.
    fn fails(&self, args: &[&str]) -> String {
        let (code, out, err) = self.run(args);
        assert_ne!(code, 0, "tapectl {args:?} should fail: {out}");
        err
    }

    /// Runs `f` on the drive holding the cartridge (the library closed again before returning).
    fn with_drive<T>(&self, f: impl FnOnce(&mut Dev) -> T) -> T {
        let lib = Library::open(&self.dir).unwrap();
        let mut d = drive(&lib);
        f(&mut d)
    }
}

/// `depth` directories `d` nested in `root`, with `f` (4 bytes) in the deepest; returns its path below
/// `root`'s parent, as the volume will have it under `/`.
fn deep_tree(root: &Path, depth: usize) -> String {
    let rel = vec!["d"; depth].join("/");
    std::fs::create_dir_all(root.join(&rel)).unwrap();
    std::fs::write(root.join(&rel).join("f"), b"deep").unwrap();
    format!("/{}/{rel}/f", root.file_name().unwrap().to_str().unwrap())
}

#[test]
fn cli_put_copies_what_can_be_read_back_or_refuses_before_writing_anything() {
    let v = Vtl::formatted();
    let base = v.base();
    let cart = v.cartridge();

    // 300 levels (more than the 256 the reader used to take): put, then read back.
    let deep = deep_tree(&base.join("t300"), 300);
    v.ok(&["ltfs", "put", base.join("t300").to_str().unwrap(), "/"]);
    let ls: serde_json::Value =
        serde_json::from_str(&v.ok(&["--json", "ltfs", "ls", &deep])).unwrap();
    assert_eq!(ls[0]["length"], 4, "{ls}");
    let out = base.join("out");
    v.ok(&["ltfs", "get", &deep, "--to", out.to_str().unwrap()]);
    assert_eq!(std::fs::read(out.join("f")).unwrap(), b"deep");

    // Deeper than an index can hold (what the reference reads): refused, nothing written.
    let before = snapshot(&cart);
    deep_tree(&base.join("t1001"), 1000);
    let err = v.fails(&["ltfs", "put", base.join("t1001").to_str().unwrap(), "/"]);
    assert!(
        err.contains("1001 directories deep, deeper than an LTFS index can hold (1000")
            && err.contains("nothing was written"),
        "{err}"
    );
    assert_eq!(snapshot(&cart), before, "the refused put wrote to the tape");

    // A name that is not UTF-8, after two that are: found before the first byte is written.
    let odd = base.join("odd");
    std::fs::create_dir_all(&odd).unwrap();
    std::fs::write(odd.join("a"), b"a").unwrap();
    std::fs::write(odd.join("b"), b"b").unwrap();
    use std::os::unix::ffi::OsStrExt;
    let bad = odd.join(std::ffi::OsStr::from_bytes(b"c\xff"));
    std::fs::write(&bad, b"c").unwrap();
    let err = v.fails(&["ltfs", "put", odd.to_str().unwrap(), "/"]);
    assert!(
        err.contains("not UTF-8") && err.contains("nothing was written"),
        "{err}"
    );
    assert_eq!(snapshot(&cart), before, "the refused put wrote to the tape");
    // Two local names that are one name in LTFS (NFC): refused the same way.
    std::fs::remove_file(&bad).unwrap();
    std::fs::write(odd.join("e\u{301}"), b"1").unwrap();
    std::fs::write(odd.join("\u{e9}"), b"2").unwrap();
    let err = v.fails(&["ltfs", "put", odd.to_str().unwrap(), "/"]);
    assert!(err.contains("names are compared in NFC"), "{err}");
    assert_eq!(snapshot(&cart), before, "the refused put wrote to the tape");
    // And a name the volume already has.
    let err = v.fails(&["ltfs", "put", base.join("t300").to_str().unwrap(), "/"]);
    assert!(err.contains("already exists on the volume"), "{err}");
    assert_eq!(snapshot(&cart), before);
}

/// The volume's current index (from a fresh mount).
fn current_index(v: &Vtl) -> ltfs::index::Index {
    v.with_drive(|d| Volume::mount(d).unwrap().index().clone())
}

/// Writes `ix` as the next generation, as a session would at unmount: a data-partition index at
/// its end of data, then the index partition's index rewritten in place pointing back to it. MAM
/// coherency is left stale (mount then scans).
fn write_generation(v: &Vtl, mut ix: ltfs::index::Index, xml_edit: impl Fn(String) -> String) {
    use ltfs::construct::write_index_construct;
    use ltfs::index::IndexLocation;
    use ltfs::{Position, TapeDevice};
    let cart = v.cartridge();
    v.with_drive(|d| {
        let dp_last = dp_last_index(&cart);
        let dp_eod = eod_file(&cart, 1);
        ix.generation += 1;
        ix.previous = Some(IndexLocation {
            partition: 'b',
            start_block: dp_last,
        });
        ix.location = IndexLocation {
            partition: 'b',
            start_block: dp_eod + 1,
        };
        d.locate_eod(1).unwrap();
        let xml = xml_edit(ix.to_xml_string().unwrap());
        write_index_construct(d, xml.as_bytes(), BS).unwrap();
        ix.previous = Some(ix.location);
        ix.location = IndexLocation {
            partition: 'a',
            start_block: 5,
        };
        d.locate(Position {
            partition: 0,
            block: 4,
        })
        .unwrap();
        let xml = xml_edit(ix.to_xml_string().unwrap());
        write_index_construct(d, xml.as_bytes(), BS).unwrap();
        d.write_filemarks(0).unwrap();
    });
}

#[test]
fn cli_a_newest_index_that_cannot_be_used_is_an_error_with_the_way_back() {
    let v = Vtl::formatted();
    let src = v.base().join("f.bin");
    std::fs::write(&src, pattern(100_000, 11)).unwrap();
    v.ok(&["ltfs", "put", src.to_str().unwrap(), "/"]);
    let mut ix = current_index(&v);
    let g = ix.generation;
    // The next generation adds `x`, written as a second `f.bin`: complete, but refused by the reader.
    ix.highest_file_uid += 1;
    ix.root
        .entries
        .push(ltfs::index::Entry::File(ltfs::index::File::new(
            "x",
            ix.highest_file_uid,
            ix.root.times,
        )));
    write_generation(&v, ix, |xml| {
        xml.replace("<name>x</name>", "<name>f.bin</name>")
    });

    let out = v.base().join("out");
    for args in [
        vec!["ltfs", "ls"],
        vec!["ltfs", "get", "/", "--to", out.to_str().unwrap()],
    ] {
        let err = v.fails(&args);
        assert!(
            err.contains("the newest index on the volume cannot be used")
                && err.contains("duplicate name \"f.bin\"")
                && err.contains(&format!(
                    "the newest index that can be read is generation {g}"
                ))
                && err.contains(&format!("tapectl ltfs check --repair --generation {g}")),
            "{args:?}: {err}"
        );
    }
    assert!(!out.join("f.bin").exists());
    // Rolling back as it says gives the volume back.
    let (code, _, _) = v.run(&["ltfs", "check"]);
    assert_eq!(code, 1);
    v.ok(&["ltfs", "check", "--repair", "--generation", &g.to_string()]);
    v.ok(&["ltfs", "get", "/f.bin", "--to", out.to_str().unwrap()]);
    assert_eq!(
        std::fs::read(out.join("f.bin")).unwrap(),
        pattern(100_000, 11)
    );
}

#[test]
fn cli_a_hostile_length_is_found_by_check_and_refused_by_the_reader() {
    let v = Vtl::formatted();
    let src = v.base().join("f.bin");
    std::fs::write(&src, pattern(1000, 12)).unwrap();
    v.ok(&["ltfs", "put", src.to_str().unwrap(), "/"]);
    let mut ix = current_index(&v);
    let g = ix.generation;
    // A consistent next generation (both partitions, pointers right) claiming a 2^62-byte file.
    ix.highest_file_uid += 1;
    let mut f = ltfs::index::File::new("huge", ix.highest_file_uid, ix.root.times);
    f.length = 1 << 62;
    ix.root.entries.push(ltfs::index::Entry::File(f));
    write_generation(&v, ix, |xml| xml);

    // Nothing below may write the file: the assertions come first, `get` last.
    let (code, out, err) = v.run(&["--json", "ltfs", "check"]);
    assert_eq!(code, 1, "check passed a 2^62-byte file: {out}");
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    let problems = j["problems"].as_array().unwrap();
    assert!(
        problems.iter().any(|p| p["kind"] == "bad_extent"
            && p["message"].as_str().unwrap().contains(
                "/huge: a length of 4611686018427387904 bytes, more than the volume can hold"
            )),
        "{j} {err}"
    );
    let err = v.fails(&["ltfs", "ls"]);
    assert!(
        err.contains("/huge: a length of 4611686018427387904 bytes")
            && err.contains(&format!("generation {g}")),
        "{err}"
    );
    let out = v.base().join("out");
    let err = v.fails(&["ltfs", "get", "/huge", "--to", out.to_str().unwrap()]);
    assert!(err.contains("/huge"), "{err}");
    assert!(!out.join("huge").exists());
}

#[test]
fn cli_sparse_files_go_to_tape_as_extents_and_come_back_sparse() {
    use std::io::{Seek, SeekFrom, Write};
    use std::os::unix::fs::MetadataExt;
    let v = Vtl::formatted();
    let src = v.base().join("sparse.img");
    let a = pattern(100 * 1024, 13);
    let b = pattern(48 * 1024, 14);
    {
        let mut f = std::fs::File::create(&src).unwrap();
        f.set_len(16 << 20).unwrap();
        f.seek(SeekFrom::Start(1 << 20)).unwrap();
        f.write_all(&a).unwrap();
        f.seek(SeekFrom::Start(9 << 20)).unwrap();
        f.write_all(&b).unwrap();
    }
    assert!(
        std::fs::metadata(&src).unwrap().blocks() * 512 < 1 << 20,
        "the test file system keeps holes"
    );
    let cart = v.cartridge();
    let records = |c: &Path| {
        std::fs::read_dir(c)
            .unwrap()
            .filter(|e| {
                let n = e.as_ref().unwrap().file_name().into_string().unwrap();
                n.starts_with("1_") && n.ends_with("_R")
            })
            .count()
    };
    let before = records(&cart);
    v.ok(&["ltfs", "put", src.to_str().unwrap(), "/"]);
    // Two extents at the data's offsets; only their records on tape (2 + 1, and one index record).
    let ls: serde_json::Value =
        serde_json::from_str(&v.ok(&["--json", "ltfs", "ls", "/sparse.img", "--long"])).unwrap();
    let e = &ls[0]["extents"];
    assert_eq!(ls[0]["length"], 16 << 20, "{ls}");
    assert_eq!(
        (e[0]["file_offset"].as_u64(), e[0]["byte_count"].as_u64()),
        (Some(1 << 20), Some(a.len() as u64)),
        "{ls}"
    );
    assert_eq!(
        (e[1]["file_offset"].as_u64(), e[1]["byte_count"].as_u64()),
        (Some(9 << 20), Some(b.len() as u64)),
        "{ls}"
    );
    assert_eq!(records(&cart) - before, 3 + 1);

    let out = v.base().join("out");
    v.ok(&["ltfs", "get", "/sparse.img", "--to", out.to_str().unwrap()]);
    let got = out.join("sparse.img");
    let m = std::fs::metadata(&got).unwrap();
    assert_eq!(m.len(), 16 << 20);
    assert!(
        m.blocks() * 512 < 1 << 20,
        "holes were written as zeros: {} blocks",
        m.blocks()
    );
    assert!(std::fs::read(&got).unwrap() == std::fs::read(&src).unwrap());
}
