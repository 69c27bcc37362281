//! LTFS volumes built by hand from `../shared/reference/ltfs-format.md`, not by this crate's writer:
//! cartridge directories laid out as §7 "Importing a foreign image" says (`<p>_<blk>_R|F|E`, `attr_*`),
//! with the VOL1 record typed out per §2, the XML labels per §3 and the index XML per §4 as literal text
//! with hand-computed extents. They are dropped into a virtual library in place of a cartridge's
//! directory (no `rackvault-cartridge.json`: the library imports them) and read back through the real
//! stack: `tapectl ltfs ls --long` / `get`, and `ltfs::volume::Volume::mount` over `tapectl::drive::Drive`
//! (the MAM fast path with hand-written coherent attributes, the full scan without them).
//!
//! The reverse too: a volume our writer makes (format, put of one 1 MiB file, unmount) has exactly the
//! §1 worked-example layout, and its index carries the §4 elements with the values the example shows.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use ltfs::index::IndexLocation;
use ltfs::scan::CurrentIndex;
use ltfs::volume::{EntryKind, Volume};
use serde_json::Value;
use tapectl::drive::Drive;
use vtl::{Library, LibrarySpec};

mod support;

const UUID: &str = "0b3c8a54-5c1e-4f7e-9d7e-2f4b1a6c9e10";

// ---------------------------------------------------------------------------------------------------
// Hand-written constructs.

/// §2, typed out: `VOL1`, volume identifier (6), accessibility `L`, 13 reserved spaces, implementation
/// `LTFS` + 9 spaces, owner (14 spaces), 28 reserved spaces, label standard version `4`.
fn vol1(serial: &str) -> Vec<u8> {
    assert_eq!(serial.len(), 6);
    let v = format!(
        "{}{}{}{}{}{}{}{}",
        "VOL1",                         // 0..4
        serial,                         // 4..10
        "L",                            // 10
        "             ",                // 11..24 (13)
        "LTFS         ",                // 24..37 (13)
        "              ",               // 37..51 (14)
        "                            ", // 51..79 (28)
        "4"                             // 79
    );
    assert_eq!(v.len(), 80);
    v.into_bytes()
}

/// §3, the label as the reference writes it; only `location` differs between the partitions.
fn xml_label(location: char, block_size: u32) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<ltfslabel version="2.4.0">
    <creator>IBM LTFS 2.4.8.4 (Prelim) - Linux - mkltfs</creator>
    <formattime>2025-01-31T12:34:56.123456789Z</formattime>
    <volumeuuid>0b3c8a54-5c1e-4f7e-9d7e-2f4b1a6c9e10</volumeuuid>
    <location>
        <partition>{location}</partition>
    </location>
    <partitions>
        <index>a</index>
        <data>b</data>
    </partitions>
    <blocksize>{block_size}</blocksize>
    <compression>true</compression>
</ltfslabel>
"#
    )
}

/// The five times of a directory or file (§4: 9 fractional digits, `Z`).
const TIMES: &str = "<creationtime>2025-01-31T12:34:56.123456789Z</creationtime>\
<changetime>2025-01-31T12:35:00.000000001Z</changetime>\
<modifytime>2025-01-31T12:36:00.500000000Z</modifytime>\
<accesstime>2025-01-31T12:37:00.000000000Z</accesstime>\
<backuptime>2025-01-31T12:38:00.000000000Z</backuptime>";

/// §4 index head: everything before the root directory.
fn index_head(
    reason: &str,
    generation: u32,
    location: (char, u32),
    previous: Option<(char, u32)>,
    highest_uid: u32,
) -> String {
    let prev = previous.map_or(String::new(), |(p, b)| {
        format!(
            "<previousgenerationlocation><partition>{p}</partition><startblock>{b}</startblock></previousgenerationlocation>\n"
        )
    });
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<ltfsindex version="2.4.0">
<creator>IBM LTFS 2.4.8.4 (Prelim) - Linux - ltfs - {reason}</creator>
<volumeuuid>0b3c8a54-5c1e-4f7e-9d7e-2f4b1a6c9e10</volumeuuid>
<generationnumber>{generation}</generationnumber>
<updatetime>2025-01-31T12:40:00.000000001Z</updatetime>
<location><partition>{}</partition><startblock>{}</startblock></location>
{prev}<allowpolicyupdate>true</allowpolicyupdate>
<highestfileuid>{highest_uid}</highestfileuid>
<volumelockstate>unlocked</volumelockstate>
"#,
        location.0, location.1
    )
}

/// `attr_0_9`: the volume change reference, `00 09 00 00 04` + BE32 (§7).
fn attr_vcr(v: u32) -> Vec<u8> {
    let mut b = vec![0x00, 0x09, 0x00, 0x00, 0x04];
    b.extend_from_slice(&v.to_be_bytes());
    b
}

/// `attr_<p>_80c`: volume coherency (§6), field by field.
fn attr_coherency(vcr: u64, count: u64, set_id: u64) -> Vec<u8> {
    let mut b = vec![0x08, 0x0c, 0x00, 0x00, 0x46]; // id 0x080C, binary, length 70
    b.push(8); // VCR length
    b.extend_from_slice(&vcr.to_be_bytes());
    b.extend_from_slice(&count.to_be_bytes());
    b.extend_from_slice(&set_id.to_be_bytes());
    b.extend_from_slice(&43u16.to_be_bytes());
    b.extend_from_slice(b"LTFS\0");
    b.extend_from_slice(UUID.as_bytes());
    b.push(0);
    b.push(1); // version
    assert_eq!(b.len(), 75);
    b
}

/// One partition's objects, in order from block 0: `Some(bytes)` a record, `None` a filemark.
type Objects = Vec<Option<Vec<u8>>>;

/// §7 steps 1-2: `p_n_R` / `p_n_F` from n = 0, then `p_N_E`.
fn write_partition(dir: &Path, p: u8, objs: &Objects) {
    for (n, o) in objs.iter().enumerate() {
        match o {
            Some(r) => {
                assert!(!r.is_empty(), "§8 item 2: never a 0-byte record");
                std::fs::write(dir.join(format!("{p}_{n}_R")), r).unwrap();
            }
            None => std::fs::write(dir.join(format!("{p}_{n}_F")), b"").unwrap(),
        }
    }
    std::fs::write(dir.join(format!("{p}_{}_E", objs.len())), b"").unwrap();
}

fn rec(b: impl Into<Vec<u8>>) -> Option<Vec<u8>> {
    Some(b.into())
}

/// Label construct (§1): VOL1, FM, XML label, FM.
fn label_construct(serial: &str, location: char, bs: u32) -> Objects {
    vec![rec(vol1(serial)), None, rec(xml_label(location, bs)), None]
}

// ---------------------------------------------------------------------------------------------------
// Fixture 1: the §1 worked example. Format, one 1 MiB file in two 512 KiB records at b/7, unmount.

const BS1: u32 = 524288;

fn hello_bytes() -> Vec<u8> {
    (0..1048576u32)
        .map(|i| (i % 251) as u8 ^ (i >> 19) as u8)
        .collect()
}

fn empty_root() -> String {
    format!(
        "<directory>\n<name/>\n<readonly>false</readonly>\n{TIMES}\n<fileuid>1</fileuid>\n<contents/>\n</directory>\n</ltfsindex>\n"
    )
}

fn hello_root() -> String {
    format!(
        "<directory>\n<name/>\n<readonly>false</readonly>\n{TIMES}\n<fileuid>1</fileuid>\n<contents>\n\
<file>\n<name>hello.txt</name>\n<length>1048576</length>\n<readonly>false</readonly>\n{TIMES}\n<fileuid>2</fileuid>\n\
<extentinfo><extent>\n<fileoffset>0</fileoffset><partition>b</partition><startblock>7</startblock>\n\
<byteoffset>0</byteoffset><bytecount>1048576</bytecount>\n</extent></extentinfo>\n</file>\n\
</contents>\n</directory>\n</ltfsindex>\n"
    )
}

/// (IP objects, DP objects) of the worked example, block for block as the §1 table.
fn worked_example(serial: &str) -> (Objects, Objects) {
    let data = hello_bytes();
    // DP: labels 0-3, FM 4, index gen 1 at 5 (no back pointer), FM 6, data 7-8, FM 9,
    // index gen 2 at 10 (back pointer b/5), FM 11, EOD 12.
    let mut dp = label_construct(serial, 'b', BS1);
    dp.push(None);
    dp.push(rec(
        index_head("Format", 1, ('b', 5), None, 1) + &empty_root()
    ));
    dp.push(None);
    dp.push(rec(&data[..524288]));
    dp.push(rec(&data[524288..]));
    dp.push(None);
    dp.push(rec(
        index_head("Sync", 2, ('b', 10), Some(('b', 5)), 2) + &hello_root()
    ));
    dp.push(None);
    assert_eq!(dp.len(), 12);
    // IP: labels 0-3, FM 4, index gen 2 at 5 (back pointer b/10), FM 6, EOD 7.
    let mut ip = label_construct(serial, 'a', BS1);
    ip.push(None);
    ip.push(rec(
        index_head("Unmount", 2, ('a', 5), Some(('b', 10)), 2) + &hello_root()
    ));
    ip.push(None);
    assert_eq!(ip.len(), 7);
    (ip, dp)
}

// ---------------------------------------------------------------------------------------------------
// Fixture 2: names, a symlink, a sparse file, xattrs; block size 64 KiB.

const BS2: u32 = 65536;

fn sparse_head() -> Vec<u8> {
    (0..100_000u32).map(|i| (i * 7 % 253) as u8 + 1).collect()
}
fn sparse_mid() -> Vec<u8> {
    (0..50_000u32).map(|i| (i * 13 % 241) as u8 + 1).collect()
}
/// `sparse.bin` as a reader must return it: data, a hole (zeros), data, a tail (zeros) to `length`.
fn sparse_expected() -> Vec<u8> {
    let mut v = sparse_head();
    v.resize(200_000, 0);
    v.extend_from_slice(&sparse_mid());
    v.resize(300_000, 0);
    v
}

/// The root directory of fixture 2, as literal index text. UIDs: root 1, dir 2, the rest 3..8.
/// DP data (hand-computed): sparse head at b/7-8 (65536 + 34464 bytes), sparse middle at b/9 (50000 B)
/// followed in the same record by `packed.txt` (10 B at byteoffset 50000, the spec's packing through
/// `byteoffset`), `a b:c` at b/10, `café:1` at b/11, `Café.txt` at b/12, `attrs.txt` at b/13.
fn names_root() -> String {
    let nfd = "Cafe\u{301}.txt"; // NFD on tape; readers normalise to NFC (§4, §8 item 28)
    format!(
        r#"<directory>
<name>fixture-two</name>
<readonly>false</readonly>
{TIMES}
<fileuid>1</fileuid>
<contents>
<directory>
<name>dir</name>
<readonly>false</readonly>
{TIMES}
<fileuid>2</fileuid>
<contents>
<file>
<name>sparse.bin</name>
<length>300000</length>
<readonly>false</readonly>
{TIMES}
<fileuid>3</fileuid>
<extentinfo>
<extent><fileoffset>200000</fileoffset><partition>b</partition><startblock>9</startblock><byteoffset>0</byteoffset><bytecount>50000</bytecount></extent>
<extent><fileoffset>0</fileoffset><partition>b</partition><startblock>7</startblock><byteoffset>0</byteoffset><bytecount>100000</bytecount></extent>
</extentinfo>
</file>
<file>
<name>packed.txt</name>
<length>10</length>
<readonly>true</readonly>
{TIMES}
<fileuid>4</fileuid>
<extentinfo><extent><fileoffset>0</fileoffset><partition>b</partition><startblock>9</startblock><byteoffset>50000</byteoffset><bytecount>10</bytecount></extent></extentinfo>
</file>
</contents>
</directory>
<file>
<name percentencoded="true">a%20b%3Ac</name>
<length>6</length>
<readonly>false</readonly>
{TIMES}
<fileuid>5</fileuid>
<extentinfo><extent><fileoffset>0</fileoffset><partition>b</partition><startblock>10</startblock><byteoffset>0</byteoffset><bytecount>6</bytecount></extent></extentinfo>
</file>
<file>
<name percentencoded="true">caf%C3%A9%3A1</name>
<length>5</length>
<readonly>false</readonly>
{TIMES}
<fileuid>6</fileuid>
<extentinfo><extent><fileoffset>0</fileoffset><partition>b</partition><startblock>11</startblock><byteoffset>0</byteoffset><bytecount>5</bytecount></extent></extentinfo>
</file>
<file>
<name>{nfd}</name>
<length>4</length>
<readonly>false</readonly>
{TIMES}
<fileuid>7</fileuid>
<extentinfo><extent><fileoffset>0</fileoffset><partition>b</partition><startblock>12</startblock><byteoffset>0</byteoffset><bytecount>4</bytecount></extent></extentinfo>
</file>
<file>
<name>link</name>
<length>0</length>
<readonly>false</readonly>
{TIMES}
<fileuid>8</fileuid>
<symlink>dir/sparse.bin</symlink>
</file>
<file>
<name>attrs.txt</name>
<length>3</length>
<readonly>false</readonly>
{TIMES}
<fileuid>9</fileuid>
<extendedattributes>
<xattr><key>user.comment</key><value>tape &amp; &lt;disk&gt;</value></xattr>
<xattr><key>user.typed</key><value type="text">plain</value></xattr>
<xattr><key>user.bin</key><value type="base64">/wAf</value></xattr>
<xattr><key>user.empty</key><value/></xattr>
</extendedattributes>
<extentinfo><extent><fileoffset>0</fileoffset><partition>b</partition><startblock>13</startblock><byteoffset>0</byteoffset><bytecount>3</bytecount></extent></extentinfo>
</file>
</contents>
</directory>
</ltfsindex>
"#
    )
}

fn fixture_two(serial: &str) -> (Objects, Objects) {
    let head = sparse_head();
    let mut mid_and_packed = sparse_mid();
    mid_and_packed.extend_from_slice(b"packed!!\n\n");
    let mut dp = label_construct(serial, 'b', BS2);
    dp.push(None);
    dp.push(rec(
        index_head("Format", 1, ('b', 5), None, 1) + &empty_root()
    ));
    dp.push(None);
    dp.push(rec(&head[..65536])); // 7
    dp.push(rec(&head[65536..])); // 8
    dp.push(rec(mid_and_packed)); // 9
    dp.push(rec(&b"colon\n"[..])); // 10
    dp.push(rec(&b"cafe\n"[..])); // 11
    dp.push(rec(&b"nfd\n"[..])); // 12
    dp.push(rec(&b"xa\n"[..])); // 13
    dp.push(None); // 14
    dp.push(rec(
        index_head("Sync", 2, ('b', 15), Some(('b', 5)), 9) + &names_root()
    ));
    dp.push(None);
    let mut ip = label_construct(serial, 'a', BS2);
    ip.push(None);
    ip.push(rec(
        index_head("Unmount", 2, ('a', 5), Some(('b', 15)), 9) + &names_root()
    ));
    ip.push(None);
    (ip, dp)
}

/// The reference backend's `filedebug_tc_conf.xml` (optional per §7; fixture 2 carries one).
const CONF_L5: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<filedebug_cartridge_config>
    <dummy_io>false</dummy_io>
    <emulate_readonly>false</emulate_readonly>
    <capacity_mb>3072</capacity_mb>
    <cart_type>L5</cart_type>
    <density_code>58</density_code>
    <delay_mode>None</delay_mode>
    <wraps>40</wraps>
    <eot_to_bot_sec>12</eot_to_bot_sec>
    <change_direction_us>2000000</change_direction_us>
    <change_track_us>10000</change_track_us>
    <threading_sec>12</threading_sec>
</filedebug_cartridge_config>
"#;

// ---------------------------------------------------------------------------------------------------
// The library and the CLI.

struct Lib {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    locks: PathBuf,
    lib: Library,
}

fn library(barcodes: &[&str]) -> Lib {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("vtl");
    let spec = LibrarySpec {
        barcodes: barcodes.iter().map(|b| b.to_string()).collect(),
        ..LibrarySpec::default()
    };
    let lib = Library::create(&dir, &spec).unwrap();
    Lib {
        locks: tmp.path().join("locks"),
        _tmp: tmp,
        dir,
        lib,
    }
}

impl Lib {
    /// Replaces the cartridge's directory contents with the hand-built files (nothing of the
    /// library's own: no `rackvault-cartridge.json`, and no conf unless given).
    fn install(&self, barcode: &str, ip: &Objects, dp: &Objects, conf: Option<&str>) -> PathBuf {
        let cart = self.lib.cartridge_dir(barcode);
        std::fs::remove_dir_all(&cart).unwrap();
        std::fs::create_dir(&cart).unwrap();
        write_partition(&cart, 0, ip);
        write_partition(&cart, 1, dp);
        if let Some(c) = conf {
            std::fs::write(cart.join("filedebug_tc_conf.xml"), c).unwrap();
        }
        cart
    }

    fn cmd(&self, args: &[&str]) -> Output {
        support::tapectl_on_vtl(&self.dir, &self.locks)
            .args(args)
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.cmd(args);
        assert!(
            o.status.success(),
            "tapectl {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&o.stderr),
            String::from_utf8_lossy(&o.stdout)
        );
        assert!(
            o.stderr.is_empty() || !String::from_utf8_lossy(&o.stderr).contains("not consistent"),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        serde_json::from_str(&self.ok(&a)).unwrap()
    }

    fn drive(&self) -> Drive<vtl::VirtualDrive> {
        let mut d = Drive::new(self.lib.drive(0).unwrap()).unwrap();
        d.set_poll_interval(Duration::from_millis(10));
        d.wait_until_ready(Duration::from_secs(10)).unwrap();
        d.set_default_modes().unwrap();
        d
    }
}

fn all_files(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect()
}

/// The record/filemark/EOD file names of a cartridge (what §7 lists per block).
fn layout(dir: &Path) -> BTreeSet<String> {
    all_files(dir)
        .into_iter()
        .filter(|f| f.starts_with("0_") || f.starts_with("1_"))
        .collect()
}

fn names(v: &[&str]) -> BTreeSet<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// The §1 worked-example tree, block by block.
fn worked_example_layout() -> BTreeSet<String> {
    names(&[
        "0_0_R", "0_1_F", "0_2_R", "0_3_F", "0_4_F", "0_5_R", "0_6_F", "0_7_E", //
        "1_0_R", "1_1_F", "1_2_R", "1_3_F", "1_4_F", "1_5_R", "1_6_F", "1_7_R", "1_8_R", "1_9_F",
        "1_10_R", "1_11_F", "1_12_E",
    ])
}

fn loc(partition: char, start_block: u64) -> IndexLocation {
    IndexLocation {
        partition,
        start_block,
    }
}

// ---------------------------------------------------------------------------------------------------

#[test]
fn the_worked_example_built_by_hand_reads_back() {
    let l = library(&["FIX001L5"]);
    let (ip, dp) = worked_example("FIX001");
    let cart = l.install("FIX001L5", &ip, &dp, None);
    // §7 step 3: coherent MAM for the fast path. VCR 3; IP count 2 at a/5, DP count 2 at b/10.
    std::fs::write(cart.join("attr_0_9"), attr_vcr(3)).unwrap();
    std::fs::write(cart.join("attr_0_80c"), attr_coherency(3, 2, 5)).unwrap();
    std::fs::write(cart.join("attr_1_80c"), attr_coherency(3, 2, 10)).unwrap();
    assert_eq!(layout(&cart), worked_example_layout());
    let before: Vec<(String, Vec<u8>)> = all_files(&cart)
        .into_iter()
        .map(|f| (f.clone(), std::fs::read(cart.join(&f)).unwrap()))
        .collect();

    // The CLI: ls --long shows the hand-computed extent; get returns the bytes.
    l.ok(&["load", "FIX001L5"]);
    let ls = l.json(&["ltfs", "ls", "--long"]);
    let rows = ls.as_array().unwrap();
    assert_eq!(rows.len(), 1, "{ls}");
    assert_eq!(rows[0]["name"], "hello.txt");
    assert_eq!(rows[0]["kind"], "file");
    assert_eq!(rows[0]["length"], 1048576);
    assert_eq!(rows[0]["modified"], "2025-01-31T12:36:00.500000000Z");
    assert_eq!(
        rows[0]["extents"],
        serde_json::json!([{"file_offset": 0, "partition": "b", "start_block": 7, "byte_offset": 0, "byte_count": 1048576}])
    );
    let human = l.ok(&["ltfs", "ls", "--long"]);
    assert!(
        human.contains("extent at 0: b/7 +0 bytes 1048576"),
        "{human}"
    );
    let gens = l.json(&["ltfs", "generations"]);
    let g: Vec<(u64, String, u64)> = gens
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["generation"].as_u64().unwrap(),
                g["partition"].as_str().unwrap().to_string(),
                g["block"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        g,
        vec![(2, "a".into(), 5), (2, "b".into(), 10), (1, "b".into(), 5)]
    );
    let out = l.dir.parent().unwrap().join("out1");
    std::fs::create_dir(&out).unwrap();
    l.ok(&["ltfs", "get", "/hello.txt", "--to", out.to_str().unwrap()]);
    assert!(std::fs::read(out.join("hello.txt")).unwrap() == hello_bytes());

    // The library API: the fast path picked the IP index a/5, generation 2.
    let mut d = l.drive();
    {
        let mut vol = Volume::mount(&mut d).unwrap();
        let r = vol.mount_report().clone();
        assert!(r.fast_path, "{r:?}");
        assert!(r.is_consistent(), "{r:?}");
        assert_eq!(r.current, CurrentIndex::IndexPartition);
        let ix = vol.index();
        assert_eq!(
            (ix.generation, ix.location, ix.previous),
            (2, loc('a', 5), Some(loc('b', 10)))
        );
        assert_eq!(ix.volume_uuid, UUID);
        assert_eq!(vol.block_size(), BS1 as usize);
        let mut got = Vec::new();
        vol.read_file("hello.txt", &mut got).unwrap();
        assert!(got == hello_bytes());
        vol.unmount().unwrap();
    }
    drop(d);
    // Reading wrote nothing: every hand-made file is as it was, and only the library's own meta/conf
    // were added (the import).
    let after: BTreeSet<String> = all_files(&cart);
    for (f, bytes) in &before {
        assert!(
            std::fs::read(cart.join(f)).unwrap() == *bytes,
            "{f} changed by a read-only session"
        );
    }
    let added: BTreeSet<String> = after
        .difference(&before.iter().map(|(f, _)| f.clone()).collect())
        .cloned()
        .collect();
    assert_eq!(
        added,
        names(&["filedebug_tc_conf.xml", "rackvault-cartridge.json"])
    );

    // Without attr_*: the full scan finds the same index (§5, §8 item 30).
    for f in all_files(&cart) {
        if f.starts_with("attr_") {
            std::fs::remove_file(cart.join(f)).unwrap();
        }
    }
    let mut d = l.drive();
    let mut vol = Volume::mount(&mut d).unwrap();
    let r = vol.mount_report().clone();
    assert!(!r.fast_path, "{r:?}");
    assert!(r.is_consistent(), "{r:?}");
    assert_eq!(r.current, CurrentIndex::IndexPartition);
    assert_eq!(
        (vol.index().generation, vol.index().location),
        (2, loc('a', 5))
    );
    let mut got = Vec::new();
    vol.read_file("/hello.txt", &mut got).unwrap();
    assert!(got == hello_bytes());
}

#[test]
fn stale_hand_written_mam_is_not_trusted() {
    // §5/§7: coherency whose VCR is not the tape's (attr_0_9 says 3, the records say 2) must not be
    // used; the scan still finds a/5 gen 2.
    let l = library(&["FIX003L5"]);
    let (ip, dp) = worked_example("FIX003");
    let cart = l.install("FIX003L5", &ip, &dp, None);
    std::fs::write(cart.join("attr_0_9"), attr_vcr(3)).unwrap();
    std::fs::write(cart.join("attr_0_80c"), attr_coherency(2, 2, 5)).unwrap();
    std::fs::write(cart.join("attr_1_80c"), attr_coherency(2, 2, 10)).unwrap();
    l.ok(&["load", "FIX003L5"]);
    let mut d = l.drive();
    let vol = Volume::mount(&mut d).unwrap();
    assert!(!vol.mount_report().fast_path);
    assert_eq!(
        (vol.index().generation, vol.index().location),
        (2, loc('a', 5))
    );
}

#[test]
fn names_symlink_sparse_file_and_xattrs_built_by_hand_read_back() {
    let l = library(&["FIX002L5"]);
    let (ip, dp) = fixture_two("FIX002");
    let cart = l.install("FIX002L5", &ip, &dp, Some(CONF_L5));
    l.ok(&["load", "FIX002L5"]);

    // ls: decoded and NFC names, the symlink, the sparse file's two extents in file order.
    let ls = l.json(&["ltfs", "ls", "--long"]);
    let mut got: Vec<(String, String)> = ls
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_string(),
                r["kind"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    got.sort();
    let want: Vec<(String, String)> = [
        ("Café.txt", "file"),
        ("a b:c", "file"),
        ("attrs.txt", "file"),
        ("café:1", "file"),
        ("dir", "directory"),
        ("link", "symlink"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(got, want, "{ls}");
    let link = ls
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "link")
        .unwrap();
    assert_eq!(link["symlink"], "dir/sparse.bin");
    let sp = l.json(&["ltfs", "ls", "--long", "/dir/sparse.bin"]);
    assert_eq!(sp[0]["length"], 300000);
    let ext: Vec<(u64, u64, u64)> = sp[0]["extents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["file_offset"].as_u64().unwrap(),
                x["start_block"].as_u64().unwrap(),
                x["byte_count"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(ext, vec![(0, 7, 100000), (200000, 9, 50000)]);

    // get everything: bytes, the hole and tail zero-filled, the byteoffset-packed file, the symlink.
    let out = l.dir.parent().unwrap().join("out2");
    std::fs::create_dir(&out).unwrap();
    l.ok(&["ltfs", "get", "/", "--to", out.to_str().unwrap()]);
    let root = if out.join("dir").exists() {
        out.clone()
    } else {
        // `get /` may name the root after the volume.
        let sub: Vec<_> = std::fs::read_dir(&out).unwrap().collect();
        assert_eq!(sub.len(), 1, "{:?}", all_files(&out));
        sub[0].as_ref().unwrap().path()
    };
    assert!(std::fs::read(root.join("dir/sparse.bin")).unwrap() == sparse_expected());
    assert_eq!(
        std::fs::read(root.join("dir/packed.txt")).unwrap(),
        b"packed!!\n\n"
    );
    assert_eq!(std::fs::read(root.join("a b:c")).unwrap(), b"colon\n");
    assert_eq!(std::fs::read(root.join("café:1")).unwrap(), b"cafe\n");
    assert_eq!(std::fs::read(root.join("Café.txt")).unwrap(), b"nfd\n");
    assert_eq!(std::fs::read(root.join("attrs.txt")).unwrap(), b"xa\n");
    assert_eq!(
        std::fs::read_link(root.join("link")).unwrap(),
        Path::new("dir/sparse.bin")
    );

    // Volume API: the full scan (no attr_*) picks a/5 gen 2; xattrs decoded; NFD lookup works.
    assert!(!all_files(&cart).iter().any(|f| f.starts_with("attr_0_80c")));
    let mut d = l.drive();
    let mut vol = Volume::mount(&mut d).unwrap();
    let r = vol.mount_report().clone();
    assert!(!r.fast_path && r.is_consistent(), "{r:?}");
    assert_eq!(
        (
            vol.index().generation,
            vol.index().location,
            vol.index().previous
        ),
        (2, loc('a', 5), Some(loc('b', 15)))
    );
    assert_eq!(vol.index().root.name, "fixture-two");
    assert_eq!(vol.index().highest_file_uid, 9);
    let st = vol.stat("attrs.txt").unwrap();
    let xv: Vec<(String, Vec<u8>)> = st.xattrs.into_iter().map(|x| (x.key, x.value)).collect();
    assert_eq!(
        xv,
        vec![
            ("user.comment".into(), b"tape & <disk>".to_vec()),
            ("user.typed".into(), b"plain".to_vec()),
            ("user.bin".into(), vec![0xff, 0x00, 0x1f]),
            ("user.empty".into(), vec![]),
        ]
    );
    assert_eq!(
        st.times.modify.to_string(),
        "2025-01-31T12:36:00.500000000Z"
    );
    assert!(vol.stat("dir/packed.txt").unwrap().read_only);
    assert_eq!(
        vol.stat("link").unwrap().kind,
        EntryKind::Symlink("dir/sparse.bin".into())
    );
    let mut got = Vec::new();
    vol.read_file("Cafe\u{301}.txt", &mut got).unwrap();
    assert_eq!(got, b"nfd\n");
    let mut got = Vec::new();
    vol.read_file("dir/sparse.bin", &mut got).unwrap();
    assert!(got == sparse_expected());
}

// ---------------------------------------------------------------------------------------------------
// The reverse: our writer produces the worked example.

/// Records (`Some`) and filemarks (`None`) of a partition up to its `_E`.
fn objects(dir: &Path, p: u8) -> Objects {
    let mut v = Vec::new();
    for b in 0.. {
        let f = |k: char| dir.join(format!("{p}_{b}_{k}"));
        if f('F').exists() {
            v.push(None);
        } else if f('R').exists() {
            v.push(Some(std::fs::read(f('R')).unwrap()));
        } else {
            assert!(f('E').exists(), "partition {p}: gap at block {b}");
            break;
        }
    }
    v
}

/// The XML with the whitespace between tags removed (libxml2 puts each element on a line of its own;
/// §4 says whitespace does not matter).
fn squeeze(xml: &[u8]) -> String {
    let s = String::from_utf8(xml.to_vec()).unwrap();
    let mut out = String::new();
    for line in s.lines() {
        out.push_str(line.trim());
    }
    out
}

#[test]
fn our_writer_makes_the_worked_example_layout() {
    let l = library(&["RVW001L6"]);
    l.ok(&["load", "RVW001L6"]);
    l.ok(&["ltfs", "format", "--block-size", "512K"]);
    let src = l.dir.parent().unwrap().join("hello.txt");
    std::fs::write(&src, hello_bytes()).unwrap();
    l.ok(&["ltfs", "put", src.to_str().unwrap(), "/"]);
    let cart = l.lib.cartridge_dir("RVW001L6");

    // §1 table, name for name (and the §7 per-block file names).
    assert_eq!(layout(&cart), worked_example_layout());
    let ip = objects(&cart, 0);
    let dp = objects(&cart, 1);
    assert_eq!(dp[7].as_ref().unwrap().len(), 524288);
    assert_eq!(dp[8].as_ref().unwrap().len(), 524288);
    assert!(
        [dp[7].clone().unwrap(), dp[8].clone().unwrap()].concat() == hello_bytes(),
        "data records"
    );
    // §2: VOL1 is the 80 bytes typed out above (serial = the barcode's first six characters).
    assert_eq!(ip[0].as_deref().unwrap(), &vol1("RVW001")[..]);
    assert_eq!(dp[0].as_deref().unwrap(), &vol1("RVW001")[..]);
    // §3: the labels, literally in the fields that are fixed.
    for (objs, p) in [(&ip, 'a'), (&dp, 'b')] {
        let lab = squeeze(objs[2].as_deref().unwrap());
        assert!(lab.len() <= 4096);
        assert!(
            lab.starts_with(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?><ltfslabel version=\"2.4.0\">"
            ),
            "{lab}"
        );
        for want in [
            format!("<location><partition>{p}</partition></location>"),
            "<partitions><index>a</index><data>b</data></partitions>".to_string(),
            "<blocksize>524288</blocksize>".to_string(),
        ] {
            assert!(lab.contains(&want), "label {p} lacks {want}: {lab}");
        }
    }

    // §4: the IP index has the required elements with the worked example's values.
    let ipx = squeeze(ip[5].as_deref().unwrap());
    let dpx = squeeze(dp[10].as_deref().unwrap());
    let fmt_x = squeeze(dp[5].as_deref().unwrap());
    assert!(
        ipx.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?><ltfsindex version=\"2.4.0\">"),
        "{ipx}"
    );
    assert!(!ipx.contains("ltfs:") && !ipx.contains("CDATA"));
    for (x, want) in [
        (&ipx, "<generationnumber>2</generationnumber>"),
        (
            &ipx,
            "<location><partition>a</partition><startblock>5</startblock></location>",
        ),
        (
            &ipx,
            "<previousgenerationlocation><partition>b</partition><startblock>10</startblock></previousgenerationlocation>",
        ),
        (&ipx, "<allowpolicyupdate>true</allowpolicyupdate>"),
        (&ipx, "<highestfileuid>2</highestfileuid>"),
        (&ipx, "<volumelockstate>unlocked</volumelockstate>"),
        (&ipx, "<fileuid>1</fileuid>"),
        (
            &ipx,
            "<name>hello.txt</name><length>1048576</length><readonly>false</readonly>",
        ),
        (&ipx, "<fileuid>2</fileuid>"),
        (
            &ipx,
            "<extentinfo><extent><fileoffset>0</fileoffset><partition>b</partition><startblock>7</startblock><byteoffset>0</byteoffset><bytecount>1048576</bytecount></extent></extentinfo>",
        ),
        (&dpx, "<generationnumber>2</generationnumber>"),
        (
            &dpx,
            "<location><partition>b</partition><startblock>10</startblock></location>",
        ),
        (
            &dpx,
            "<previousgenerationlocation><partition>b</partition><startblock>5</startblock></previousgenerationlocation>",
        ),
        (&fmt_x, "<generationnumber>1</generationnumber>"),
        (
            &fmt_x,
            "<location><partition>b</partition><startblock>5</startblock></location>",
        ),
        (&fmt_x, "<highestfileuid>1</highestfileuid>"),
    ] {
        assert!(x.contains(want), "index lacks {want}:\n{x}");
    }
    assert!(!fmt_x.contains("previousgenerationlocation"), "{fmt_x}");
    // Required elements exactly once, in the §4 order, each time with 9 digits and Z.
    let order = [
        "<creator>",
        "<volumeuuid>",
        "<generationnumber>",
        "<updatetime>",
        "<location>",
        "<previousgenerationlocation>",
        "<allowpolicyupdate>",
        "<highestfileuid>",
        "<volumelockstate>",
        "<directory>",
    ];
    let mut at = 0;
    for tag in order {
        assert_eq!(ipx.matches(tag).count(), 1, "{tag}");
        let p = ipx.find(tag).unwrap();
        assert!(p > at, "{tag} out of order");
        at = p;
    }
    assert!(ipx.contains(&format!("<volumeuuid>{}</volumeuuid>", {
        let la = squeeze(ip[2].as_deref().unwrap());
        let s = la.find("<volumeuuid>").unwrap() + 12;
        la[s..s + 36].to_string()
    })));
    for t in [
        "updatetime",
        "creationtime",
        "changetime",
        "modifytime",
        "accesstime",
        "backuptime",
    ] {
        let open = format!("<{t}>");
        let mut rest = ipx.as_str();
        while let Some(p) = rest.find(&open) {
            let v = &rest[p + open.len()..p + open.len() + 30];
            assert!(
                v.as_bytes()[19] == b'.'
                    && v.ends_with('Z')
                    && v[20..29].bytes().all(|c| c.is_ascii_digit()),
                "{t}: {v}"
            );
            rest = &rest[p + 1..];
        }
    }
    // The hand-built reading of the same layout agrees: mount it and compare with the fixture's index.
    let mut d = l.drive();
    let vol = Volume::mount(&mut d).unwrap();
    assert!(vol.mount_report().fast_path);
    assert_eq!(
        (
            vol.index().generation,
            vol.index().location,
            vol.index().previous
        ),
        (2, loc('a', 5), Some(loc('b', 10)))
    );
}
