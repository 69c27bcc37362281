//! docs/tape-sets.md's "Restoring by hand", run as the document writes it, then both snapshots
//! compared with what was backed up. A full set over four 16 MB cartridges: a 42 MiB file (longer
//! than LTFS lets one such volume hold) in three pieces, its last record met early warning, so
//! the fourth tape has an empty piece of it. Then an incremental set on the full set's last tape
//! and the next, with a file across the two. Both snapshots are restored from the tapes with
//! nothing but the recipe's ```sh blocks, bash and shell tools. The only rackvault program the
//! blocks may run is tapectl as an LTFS reader (`load`, `ltfs mount`, `ltfs get`: a `tapectl` on
//! PATH refuses anything else); no catalog, no `tapectl restore`.
//!
//! The blocks are taken from the document verbatim. The test supplies only what the text leaves to
//! the reader: the work area `T=`, the mount point `/mnt/ltfs`, the tapes `TAPES=` and the set
//! wanted `SET=`. The optional check of step 7 is not run: it needs `b3sum`, which scripts/test.sh
//! does not install; the trees are compared here instead, more strictly.
//!
//! The snapshots hold what the recipe has rules for: names that are not UTF-8 or not NFC (stored
//! under `unnamed/`), a name with a quote, a space and a newline, a directory whose name is not
//! UTF-8, symlinks (one with a target that is not UTF-8), an empty file and directory, read-only
//! files and directories, setuid and sticky bits, other owners, xattrs (text and binary), a time
//! before 1970, hard links, and in the incremental: changed, renamed, deleted and new files, two
//! files renamed from copies of one content, a hard link broken, a file that became a directory,
//! changes of metadata alone. Hard links and xattrs are put in the snapshot manifests here (the
//! shared snapshot helper does not record them).
//!
//! Needs root, /dev/fuse, zstd, jq and setfattr (scripts/test.sh installs them); without them the
//! test fails and says which is missing.

mod support;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use common::bytes::Bytes;
use common::manifest::{Header, Kind, MANIFEST_FILE, Manifest, Xattr};
use common::relpath::RelPath;
use support::sets::{Lab, assert_same_tree, make_tree, noise, walk};
use support::{is_mounted, json, require_fuse};

const JOB: &str = "home";
const SNAP1: &str = "20261201T020000Z";
const SNAP2: &str = "20261202T020000Z";
/// big.img: three times what a fresh 16 MB virtual tape takes before early warning.
const BIG_MB: usize = 42;
/// Longest a run of the recipe may take (a few seconds normally).
const DEADLINE: Duration = Duration::from_secs(600);

#[test]
fn restoring_by_hand_as_the_document_writes_it() {
    require_tools();
    let lab = Lab::new(10, 16, "");
    let root = lab.dir.path().canonicalize().unwrap();

    let t1 = root.join("tree1");
    make_tree(&t1, 150, 2, BIG_MB);
    odd_entries(&t1);
    publish(&lab, SNAP1, &t1);
    let r1 = json(&lab.config, &["set", "write", JOB, "--snapshot", SNAP1]);
    assert_eq!(r1["kind"], "full", "{r1}");
    let set1 = r1["set"].as_str().unwrap().to_string();
    let tapes1 = barcodes(&r1);
    assert_eq!(tapes1.len(), 4, "the full set spans 4 tapes: {r1}");
    let big = json(&lab.config, &["catalog", "find", "big.img"]);
    assert_eq!(
        big[0]["tapes"][0][1].as_array().unwrap().len(),
        3,
        "big.img has bytes on three tapes: {big}"
    );

    let t2 = root.join("tree2");
    cp_a(&t1, &t2);
    changes(&t2);
    publish(&lab, SNAP2, &t2);
    let r2 = json(&lab.config, &["set", "write", JOB, "--snapshot", SNAP2]);
    assert_eq!(r2["kind"], "incremental", "{r2}");
    assert_eq!(r2["base"], set1.as_str(), "{r2}");
    let set2 = r2["set"].as_str().unwrap().to_string();
    let tapes2 = barcodes(&r2);
    assert!(
        tapes2.len() >= 2 && tapes2[0] == *tapes1.last().unwrap(),
        "the incremental set continues the full set's last tape and goes on to another: {r1}\n{r2}"
    );
    assert!(r2["renamed"].as_u64().unwrap() >= 3, "{r2}");
    let across = json(&lab.config, &["catalog", "find", "new/big-new.bin"]);
    assert_eq!(
        across[0]["tapes"][0][1].as_array().unwrap().len(),
        2,
        "new/big-new.bin has bytes on two tapes: {across}"
    );

    let recipe = Recipe::load();
    let mnt = root.join("mnt");
    let work = root.join("rv");
    // Every tape once, newest first: the order does not matter to the recipe.
    let mut tapes: Vec<String> = tapes1.iter().chain(&tapes2).cloned().collect();
    tapes.dedup();
    tapes.reverse();
    let bin = reader_only_tapectl(&lab, &root);

    // Steps 1 and 2: every tape copied off, each manifest put together and checked.
    let copy_off = [
        recipe.settings(&work),
        recipe.block_with("tapectl ltfs mount").to_string(),
        recipe.block_with("zstd -q -t").to_string(),
    ]
    .join("\n")
    .replace("/mnt/ltfs", mnt.to_str().unwrap());
    let copy_off = assign(&copy_off, "TAPES", &tapes.join(" "));
    let out = run_bash(&copy_off, &bin, &mnt).ok("steps 1 and 2 (copy off, manifests)");
    for set in [&set1, &set2] {
        assert!(
            out.stdout.contains(&format!("{{\"set\":\"{set}\"")),
            "step 2 shows each set's header:\n{}",
            out.stdout
        );
    }

    let fourth = work.join(format!("tapes/{set1}/0004"));
    let desc: serde_json::Value = serde_json::from_slice(
        &std::fs::read(fourth.join(format!(".rackvault/sets/{set1}/tape-0004.json"))).unwrap(),
    )
    .unwrap();
    assert_eq!(
        desc["continued_from_previous"],
        serde_json::json!({"tape_path": format!("/{JOB}/{SNAP1}/big.img"), "offset": BIG_MB << 20}),
        "big.img was meant to end with the record that met early warning on its third tape (28 \
         records of 512 KiB fit a fresh 16 MB virtual tape), leaving an empty piece on the \
         fourth; has the virtual tape changed? {desc}"
    );
    let empty = fourth.join(format!("{JOB}/{SNAP1}/big.img"));
    assert_eq!(std::fs::metadata(&empty).unwrap().len(), 0);

    // Steps 3 to 6 for each snapshot: the newest first, then the full set's alone.
    for (set, tree, chain) in [
        (&set2, &t2, format!("{set1} {set2}")),
        (&set1, &t1, set1.clone()),
    ] {
        let script = [
            recipe.settings(&work),
            assign(recipe.block_with("CHAIN="), "SET", set),
            recipe.block_with("cat > \"$T/rv.jq\"").to_string(),
            recipe.block_with("build.sh").to_string(),
            recipe.block_with("unlink.tmp").to_string(),
        ]
        .join("\n");
        let out = run_bash(&script, &bin, &mnt).ok(&format!("steps 3 to 6 for set {set}"));
        assert!(
            out.stdout.lines().any(|l| l.trim() == chain),
            "step 3 prints the chain {chain:?}:\n{}",
            out.stdout
        );
        let restored = work.join("tree");
        assert_same_tree(tree, &restored);
        assert_same_metadata(tree, &restored);
    }
}

// ---------------------------------------------------------------------------------------------
// The recipe: the document's blocks.

/// The ```sh and ```bash blocks of docs/tape-sets.md's "Restoring by hand", each found by a
/// command it must contain, so a rewritten recipe fails here by name.
struct Recipe {
    blocks: Vec<String>,
}

/// What identifies each block of the section, in order; the check of step 7 is not run.
const BLOCKS: [&str; 8] = [
    "copy_off()",
    "tapectl ltfs mount",
    "zstd -q -t",
    "CHAIN=",
    "cat > \"$T/rv.jq\"",
    "build.sh",
    "unlink.tmp",
    "b3sum",
];

impl Recipe {
    fn load() -> Recipe {
        let doc = std::fs::read_to_string(support::repo().join("docs/tape-sets.md")).unwrap();
        let start = doc
            .find("\n## Restoring by hand\n")
            .expect("docs/tape-sets.md has a section \"Restoring by hand\"");
        let section = &doc[start + 1..];
        let section = &section[..section[3..].find("\n## ").map_or(section.len(), |n| n + 3)];
        let blocks = shell_blocks(section);
        let found: Vec<&str> = blocks
            .iter()
            .map(|b| {
                let which: Vec<&str> = BLOCKS.into_iter().filter(|n| b.contains(n)).collect();
                assert_eq!(
                    which.len(),
                    1,
                    "a shell block of \"Restoring by hand\" this test does not know (or cannot tell \
                     apart), update BLOCKS:\n{b}"
                );
                which[0]
            })
            .collect();
        assert_eq!(
            found, BLOCKS,
            "the blocks of \"Restoring by hand\" are not the ones this test runs, in this order"
        );
        Recipe { blocks }
    }

    fn block_with(&self, needle: &str) -> &str {
        let i = BLOCKS.iter().position(|n| *n == needle).unwrap();
        &self.blocks[i]
    }

    /// Step 1's settings and `copy_off`, with the work area `work`; the job is the document's.
    fn settings(&self, work: &Path) -> String {
        let b = self.block_with("copy_off()");
        assert!(
            b.lines().any(|l| l.starts_with(&format!("JOB={JOB} "))),
            "the recipe's job is {JOB}:\n{b}"
        );
        assign(b, "T", work.to_str().unwrap())
    }
}

/// The ```sh (or ```bash) blocks of a Markdown text, in order.
fn shell_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match &mut current {
            None if matches!(line.trim_end(), "```sh" | "```bash") => current = Some(String::new()),
            None => {}
            Some(b) if line.trim_end() == "```" => {
                blocks.push(std::mem::take(b));
                current = None;
            }
            Some(b) => {
                b.push_str(line);
                b.push('\n');
            }
        }
    }
    assert!(current.is_none(), "an unclosed ```sh block");
    blocks
}

/// `script` with the value of its one assignment `VAR=value` (a word, or a "quoted" string)
/// replaced by `value`, quoted; what follows the value on the line (a comment) is kept.
fn assign(script: &str, var: &str, value: &str) -> String {
    let prefix = format!("{var}=");
    let lines: Vec<&str> = script.lines().collect();
    let at: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].starts_with(&prefix))
        .collect();
    assert_eq!(
        at.len(),
        1,
        "expected one line assigning {var} in the block:\n{script}"
    );
    let rest = &lines[at[0]][prefix.len()..];
    let len = if let Some(q) = rest.strip_prefix('"') {
        q.find('"').expect("a closing quote") + 2
    } else {
        rest.find(char::is_whitespace).unwrap_or(rest.len())
    };
    assert!(
        !value.contains('\''),
        "a value this test cannot quote: {value}"
    );
    let line = format!("{prefix}'{value}'{}", &rest[len..]);
    let mut out: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    out[at[0]] = line;
    out.join("\n") + "\n"
}

/// A directory holding only a `tapectl` that runs the test's binary with the lab's configuration
/// and refuses everything but the LTFS reader's commands.
fn reader_only_tapectl(lab: &Lab, root: &Path) -> PathBuf {
    let bin = root.join("bin");
    std::fs::create_dir(&bin).unwrap();
    let wrapper = bin.join("tapectl");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\n\
             case \"$1 $2\" in\n\
             \"load \"*|\"ltfs mount\"|\"ltfs get\") ;;\n\
             *) echo \"sets_recipe: the recipe may use tapectl only as an LTFS reader (load, ltfs mount, ltfs get), not: tapectl $*\" >&2; exit 99 ;;\n\
             esac\n\
             exec '{}' --config '{}' \"$@\"\n",
            env!("CARGO_BIN_EXE_tapectl"),
            lab.config.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

struct Ran {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Ran {
    #[track_caller]
    fn ok(self, what: &str) -> Ran {
        assert!(
            self.status.success(),
            "{what} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
            self.status,
            self.stdout,
            self.stderr
        );
        self
    }
}

/// Runs `script` with `bash -e -x`, `bin` first on PATH, in a process group of its own. Not with
/// pipefail: the recipe's `zstdcat ... | head -1` may end zstdcat with SIGPIPE, as in a terminal.
fn run_bash(script: &str, bin: &Path, mnt: &Path) -> Ran {
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let mut child = Command::new("bash")
        .args(["-e", "-x", "-c", script])
        .env("PATH", path)
        .env_remove("RACKVAULT_CONFIG")
        .env_remove("RACKVAULT_VTL")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let guard = Group {
        pgid: child.id() as i32,
        mnt: mnt.to_path_buf(),
    };
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            String::from_utf8_lossy(&v).into_owned()
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    let status = match rx.recv_timeout(DEADLINE) {
        Ok(st) => st.unwrap(),
        Err(_) => {
            drop(guard);
            panic!(
                "the recipe did not finish within {DEADLINE:?}:\n--- stdout\n{}\n--- stderr\n{}",
                out.join().unwrap(),
                err.join().unwrap()
            );
        }
    };
    // What it left running (a mount, when it failed) goes now, before stdout and stderr can end.
    drop(guard);
    Ran {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// The recipe's process group and its mount point: on drop (the test failing included) the mount
/// point is lazily unmounted and whatever is left of the group is killed.
struct Group {
    pgid: i32,
    mnt: PathBuf,
}

impl Drop for Group {
    fn drop(&mut self) {
        if is_mounted(&self.mnt) {
            let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
        }
        // SAFETY: signalling the process group this test created; ESRCH when it is gone is fine.
        unsafe { libc::kill(-self.pgid, libc::SIGKILL) };
    }
}

fn require_tools() {
    require_fuse("the restore-by-hand test");
    for (tool, package) in [
        ("zstd", "zstd"),
        ("zstdcat", "zstd"),
        ("jq", "jq"),
        ("setfattr", "attr"),
        ("mountpoint", "util-linux"),
        ("umount", "util-linux"),
        ("tac", "coreutils"),
        ("find", "findutils"),
    ] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .unwrap()
            .success();
        assert!(
            found,
            "{tool} not found: the restore-by-hand recipe needs it (Debian package {package}; scripts/test.sh installs zstd, jq and attr)"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The snapshots.

/// Publishes `tree` as snapshot `name` of the job, as backupd's directory store lays it out: a
/// copy of the tree and its manifest, with hard links (`link`, to the first path of the inode) and
/// xattrs, which the shared helper leaves out.
fn publish(lab: &Lab, name: &str, tree: &Path) {
    let root = lab.path(&format!("store/{JOB}/snapshots/{name}"));
    std::fs::create_dir_all(root.parent().unwrap()).unwrap();
    cp_a(tree, &root);
    let mut entries = Vec::new();
    walk(&root, &root, &mut entries);
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    let mut first: HashMap<(u64, u64), RelPath> = HashMap::new();
    for e in &mut entries {
        let p = e.path.under(&root);
        if e.kind != Kind::Symlink {
            e.xattrs = xattrs(&p);
        }
        let md = std::fs::symlink_metadata(&p).unwrap();
        if e.kind == Kind::File && md.nlink() > 1 {
            match first.entry((md.dev(), md.ino())) {
                std::collections::hash_map::Entry::Occupied(o) => e.link = Some(o.get().clone()),
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(e.path.clone());
                }
            }
        }
    }
    let m = Manifest::new(
        Header::new(
            JOB,
            name,
            "2026-12-07T00:00:00Z",
            &tree.display().to_string(),
        ),
        entries,
    );
    m.save(&root.join(MANIFEST_FILE)).unwrap();
}

fn xattrs(p: &Path) -> Vec<Xattr> {
    let mut v: Vec<Xattr> = xattr::list(p)
        .unwrap()
        .map(|n| Xattr {
            value: Bytes(xattr::get(p, &n).unwrap().unwrap_or_default()),
            name: Bytes(n.as_bytes().to_vec()),
        })
        .collect();
    v.sort_by(|a, b| a.name.0.cmp(&b.name.0));
    v
}

fn cp_a(from: &Path, to: &Path) {
    let st = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success(), "cp -a {} {}", from.display(), to.display());
}

fn barcodes(report: &serde_json::Value) -> Vec<String> {
    report["copies"][0]["tapes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["barcode"].as_str().unwrap().to_string())
        .collect()
}

fn p(dir: &Path, name: &[u8]) -> PathBuf {
    dir.join(OsStr::from_bytes(name))
}

fn write(dir: &Path, name: &[u8], data: &[u8]) -> PathBuf {
    let f = p(dir, name);
    std::fs::create_dir_all(f.parent().unwrap()).unwrap();
    std::fs::write(&f, data).unwrap();
    f
}

fn chmod(f: &Path, mode: u32) {
    std::fs::set_permissions(f, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn chown(f: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(f, Some(uid), Some(gid)).unwrap();
}

/// Sets the modification time (of a symlink itself, not its target).
fn set_mtime(f: &Path, secs: i64, nanos: i64) {
    let c = std::ffi::CString::new(f.as_os_str().as_bytes()).unwrap();
    let times = [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        libc::timespec {
            tv_sec: secs,
            tv_nsec: nanos,
        },
    ];
    // SAFETY: a valid C string and two timespecs.
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    assert_eq!(r, 0, "utimensat {}", f.display());
}

fn set_xattr(f: &Path, name: &str, value: &[u8]) {
    xattr::set(f, name, value).unwrap_or_else(|e| {
        panic!(
            "setting xattr {name} on {}: {e} (the test's temporary directory must take user xattrs)",
            f.display()
        )
    });
}

/// What make_tree has not: the names, types and metadata the recipe has rules for.
fn odd_entries(t: &Path) {
    write(t, b"names/bad\xffname", b"not UTF-8");
    write(t, "names/cafe\u{301}.txt".as_bytes(), b"not NFC");
    write(t, b"names/it's a \"name\"\nover two lines", b"quotes");
    write(t, b"names/a:b.txt", b"colon");
    write(t, b"names/dir\xe9/inner.txt", b"in a directory not UTF-8");
    std::os::unix::fs::symlink(
        OsStr::from_bytes(b"\xfe\xfdtarget"),
        t.join("names/raw-target"),
    )
    .unwrap();
    std::os::unix::fs::symlink(OsStr::from_bytes(b"bad\xffname"), p(t, b"names/link\xff")).unwrap();
    write(t, b"empty", b"");
    std::fs::create_dir(t.join("emptydir")).unwrap();

    // Hard links: three names of one file.
    let a = write(t, b"hl/a", &noise(3000, 11));
    std::fs::hard_link(&a, t.join("hl/b")).unwrap();
    std::fs::hard_link(&a, t.join("hl/c")).unwrap();
    // Two files with the same content, renamed in the incremental.
    write(t, b"dup1", &noise(7000, 12));
    write(t, b"dup2", &noise(7000, 12));
    // A file that becomes a directory.
    write(t, b"swap.txt", &noise(5000, 13));

    let owned = write(t, b"owned.txt", b"someone else's");
    chown(&owned, 1234, 5678);
    chmod(&owned, 0o640);
    let suid = write(t, b"setuid-bin", b"#!/bin/sh\n");
    chmod(&suid, 0o4755);
    std::fs::create_dir(t.join("sticky")).unwrap();
    chmod(&t.join("sticky"), 0o1777);
    let inside = write(t, b"locked/inside.txt", b"behind a read-only directory");
    chmod(&inside, 0o600);
    chmod(&t.join("locked"), 0o555);
    let x = write(t, b"xattrs.txt", b"with xattrs");
    set_xattr(&x, "user.comment", b"hello, world");
    set_xattr(&x, "user.bin", &[0, 1, 0xff, 0xfe]);
    set_xattr(&t.join("names"), "user.dir", b"yes");
    let old = write(t, b"old.txt", b"from before 1970");
    set_mtime(&old, -999_999_999, 750_000_000);
    set_mtime(&t.join("names/raw-target"), 1_000_000_000, 5);
    chown(&t.join("docs/latest.tex"), 42, 43);
}

/// A day later.
fn changes(t: &Path) {
    std::fs::write(t.join("d01/f00001.txt"), b"changed").unwrap();
    std::fs::write(t.join("mid01.bin"), noise(4 << 20, 55)).unwrap();
    std::fs::create_dir(t.join("renamed")).unwrap();
    std::fs::rename(t.join("mid00.bin"), t.join("renamed/mid00.bin")).unwrap();
    std::fs::remove_file(t.join("d02/f00002.txt")).unwrap();
    std::fs::remove_dir_all(p(t, b"names/dir\xe9")).unwrap();
    write(t, b"new/big-new.bin", &noise(12 << 20, 56));
    write(t, b"names/new\xfe.bin", b"new, not UTF-8");
    // Both copies of one content move: both come from the same base path.
    std::fs::create_dir(t.join("moved")).unwrap();
    std::fs::rename(t.join("dup1"), t.join("moved/dupA")).unwrap();
    std::fs::rename(t.join("dup2"), t.join("moved/dupB")).unwrap();
    // hl/b goes, hl/c becomes a file of its own with the same content, hl/d is a new link.
    std::fs::remove_file(t.join("hl/b")).unwrap();
    std::fs::remove_file(t.join("hl/c")).unwrap();
    std::fs::write(t.join("hl/c"), noise(3000, 11)).unwrap();
    std::fs::hard_link(t.join("d05/f00005.txt"), t.join("hl/d")).unwrap();
    // The file becomes a directory; its content is kept under another name.
    let content = std::fs::read(t.join("swap.txt")).unwrap();
    std::fs::remove_file(t.join("swap.txt")).unwrap();
    write(t, b"swap.txt/inner", b"now a directory");
    write(t, b"swapped.txt", &content);
    // Metadata alone.
    chmod(&t.join("d03/f00003.txt"), 0o600);
    set_mtime(&t.join("d04/f00004.txt"), 1_700_000_000, 123_456_789);
    chown(&t.join("owned.txt"), 4321, 8765);
    set_xattr(&t.join("xattrs.txt"), "user.comment", b"changed");
    std::fs::remove_file(t.join("docs/latest.tex")).unwrap();
    std::os::unix::fs::symlink("thesis/other.tex", t.join("docs/latest.tex")).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Comparing trees: what assert_same_tree leaves out.

#[derive(Debug, PartialEq)]
struct Meta {
    path: Vec<u8>,
    uid: u32,
    gid: u32,
    mode: u32,
    mtime: (i64, i64),
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// A file: the first path (in path order) of its inode.
    inode_of: Option<Vec<u8>>,
}

/// Owners, modes, times of every entry (directories and symlinks too), xattrs, and which files
/// are one inode.
fn assert_same_metadata(want: &Path, got: &Path) {
    let (a, b) = (metadata(want), metadata(got));
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(
            x,
            y,
            "{} differs from the original",
            String::from_utf8_lossy(&x.path)
        );
    }
}

fn metadata(root: &Path) -> Vec<Meta> {
    let mut entries = Vec::new();
    walk(root, root, &mut entries);
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    let mut first: HashMap<(u64, u64), Vec<u8>> = HashMap::new();
    entries
        .iter()
        .map(|e| {
            let p = e.path.under(root);
            let md = std::fs::symlink_metadata(&p).unwrap();
            let symlink = e.kind == Kind::Symlink;
            Meta {
                path: e.path.as_bytes().to_vec(),
                uid: md.uid(),
                gid: md.gid(),
                mode: if symlink { 0 } else { md.mode() & 0o7777 },
                mtime: (md.mtime(), md.mtime_nsec()),
                xattrs: if symlink {
                    Vec::new()
                } else {
                    xattrs(&p)
                        .into_iter()
                        .map(|x| (x.name.0, x.value.0))
                        .collect()
                },
                inode_of: (e.kind == Kind::File).then(|| {
                    first
                        .entry((md.dev(), md.ino()))
                        .or_insert_with(|| e.path.as_bytes().to_vec())
                        .clone()
                }),
            }
        })
        .collect()
}
