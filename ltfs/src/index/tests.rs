use super::*;
use proptest::prelude::*;

const T: &str = "2025-01-31T12:40:00.000000001Z";

/// The §4 example, with `T` standing for the times.
fn example_xml() -> String {
    r#"<?xml version="1.0" encoding="UTF-8"?>
<ltfsindex version="2.4.0">
<creator>IBM LTFS 2.4.8.4 (Prelim) - Linux - ltfs - Unmount</creator>
<volumeuuid>0b3c8a54-5c1e-4f7e-9d7e-2f4b1a6c9e10</volumeuuid>
<generationnumber>2</generationnumber>
<updatetime>2025-01-31T12:40:00.000000001Z</updatetime>
<location><partition>a</partition><startblock>5</startblock></location>
<previousgenerationlocation><partition>b</partition><startblock>10</startblock></previousgenerationlocation>
<allowpolicyupdate>true</allowpolicyupdate>
<highestfileuid>2</highestfileuid>
<volumelockstate>unlocked</volumelockstate>
<directory>
<name/>
<readonly>false</readonly>
<creationtime>T</creationtime><changetime>T</changetime><modifytime>T</modifytime>
<accesstime>T</accesstime><backuptime>T</backuptime>
<fileuid>1</fileuid>
<contents>
<file>
<name>hello.txt</name>
<length>1048576</length>
<readonly>false</readonly>
<creationtime>T</creationtime><changetime>T</changetime><modifytime>T</modifytime>
<accesstime>T</accesstime><backuptime>T</backuptime>
<fileuid>2</fileuid>
<extentinfo><extent>
<fileoffset>0</fileoffset><partition>b</partition><startblock>7</startblock>
<byteoffset>0</byteoffset><bytecount>1048576</bytecount>
</extent></extentinfo>
</file>
</contents>
</directory>
</ltfsindex>
"#
    .replace(">T<", &format!(">{T}<"))
}

fn read(xml: &str) -> Result<Index, IndexError> {
    Index::read_xml(xml.as_bytes(), &Limits::default())
}

fn round_trip(ix: &Index) -> Index {
    let xml = ix.to_xml_string().unwrap();
    match read(&xml) {
        Ok(back) => back,
        Err(e) => panic!("{e}\n{xml}"),
    }
}

/// Asserts that `xml` is rejected with an error whose message contains `needle`; returns the message.
#[track_caller]
fn rejects(xml: &str, needle: &str) -> String {
    match read(xml) {
        Ok(_) => panic!("accepted, expected an error containing {needle:?}:\n{xml}"),
        Err(e) => {
            let msg = e.to_string();
            assert!(
                msg.contains(needle),
                "error {msg:?} does not contain {needle:?}"
            );
            msg
        }
    }
}

fn t() -> LtfsTime {
    LtfsTime::parse(T).unwrap()
}

fn sample() -> Index {
    let mut ix = Index::new(
        "rackvault test - Format",
        "0b3c8a54-5c1e-4f7e-9d7e-2f4b1a6c9e10",
        "VOL001",
        t(),
        IndexLocation {
            partition: 'b',
            start_block: 5,
        },
    );
    let times = Times::all(t());
    let mut f = File::new("hello.txt", 2, times);
    f.length = 1 << 20;
    f.content = FileContent::Extents(vec![Extent {
        file_offset: 0,
        partition: 'b',
        start_block: 7,
        byte_offset: 0,
        byte_count: 1 << 20,
    }]);
    ix.root.entries.push(Entry::File(f));
    ix.highest_file_uid = 2;
    ix
}

#[test]
fn spec_example_parses() {
    let ix = read(&example_xml()).unwrap();
    assert_eq!(ix.version, "2.4.0");
    assert_eq!(
        ix.creator,
        "IBM LTFS 2.4.8.4 (Prelim) - Linux - ltfs - Unmount"
    );
    assert_eq!(ix.volume_uuid, "0b3c8a54-5c1e-4f7e-9d7e-2f4b1a6c9e10");
    assert_eq!(ix.generation, 2);
    assert_eq!(ix.update_time, t());
    assert_eq!(
        ix.location,
        IndexLocation {
            partition: 'a',
            start_block: 5
        }
    );
    assert_eq!(
        ix.previous,
        Some(IndexLocation {
            partition: 'b',
            start_block: 10
        })
    );
    assert!(ix.allow_policy_update);
    assert_eq!(ix.highest_file_uid, 2);
    assert_eq!(ix.volume_lock_state, Some(VolumeLockState::Unlocked));
    assert_eq!(ix.root.name, "");
    assert_eq!(ix.root.uid, 1);
    assert_eq!(ix.root.times, Times::all(t()));
    let [Entry::File(f)] = ix.root.entries.as_slice() else {
        panic!("{:?}", ix.root.entries)
    };
    assert_eq!(f.name, "hello.txt");
    assert_eq!(f.length, 1048576);
    assert_eq!(f.uid, 2);
    assert_eq!(
        f.content,
        FileContent::Extents(vec![Extent {
            file_offset: 0,
            partition: 'b',
            start_block: 7,
            byte_offset: 0,
            byte_count: 1048576
        }])
    );
    assert!(ix.unknown.is_empty() && f.unknown.is_empty());
    // And our writer reproduces it.
    assert_eq!(round_trip(&ix), ix);
}

#[test]
fn writer_form() {
    let mut ix = sample();
    ix.root
        .entries
        .push(Entry::File(File::new("a b:c", 3, Times::all(t()))));
    ix.root.xattrs.push(Xattr {
        key: "user.empty".into(),
        value: vec![],
    });
    ix.root.xattrs.push(Xattr {
        key: "user.bin".into(),
        value: vec![0, 1, 2, 0xff],
    });
    ix.root.xattrs.push(Xattr {
        key: "user.text".into(),
        value: b"a<b&c\r".to_vec(),
    });
    ix.highest_file_uid = 3;
    let xml = ix.to_xml_string().unwrap();
    assert!(xml.starts_with(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ltfsindex version=\"2.4.0\">\n"
    ));
    assert!(
        xml.contains("<name percentencoded=\"true\">a%20b%3Ac</name>"),
        "{xml}"
    );
    assert!(xml.contains("<name>hello.txt</name>"));
    assert!(xml.contains("<value/>"));
    assert!(xml.contains("<value type=\"base64\">AAEC/w==</value>"));
    assert!(xml.contains("<value>a&lt;b&amp;c&#13;</value>"));
    assert!(xml.contains("<readonly>false</readonly>"));
    assert!(xml.contains(&format!("<updatetime>{T}</updatetime>")));
    assert!(!xml.contains("CDATA") && !xml.contains("xmlns"));
    assert!(xml.ends_with("</ltfsindex>\n"));
    assert_eq!(round_trip(&ix), ix);
}

#[test]
fn round_trip_rich() {
    let mut ix = sample();
    ix.comment = Some("a comment with <markup> & \"quotes\"\nand lines".into());
    ix.previous = Some(IndexLocation {
        partition: 'b',
        start_block: 42,
    });
    ix.volume_lock_state = Some(VolumeLockState::PermLocked);
    let times = Times {
        creation: LtfsTime::MIN,
        change: LtfsTime::MAX,
        modify: LtfsTime::new(-1, 999_999_999),
        access: LtfsTime::new(1_700_000_000, 5),
        backup: LtfsTime::UNIX_EPOCH,
    };
    let mut sub = Directory::new("日本語 dir", 3, times);
    sub.read_only = true;
    sub.xattrs.push(Xattr {
        key: "user.k:ey".into(),
        value: "välue\ttab".into(),
    });
    let mut link = File::new("link\u{1}ctl", 4, times);
    link.content = FileContent::Symlink("../a b/c:d/é".into());
    sub.entries.push(Entry::File(link));
    let mut sparse = File::new("sparse", 5, times);
    sparse.length = 10_000_000;
    sparse.content = FileContent::Extents(vec![
        Extent {
            file_offset: 4096,
            partition: 'b',
            start_block: 100,
            byte_offset: 0,
            byte_count: 4096,
        },
        Extent {
            file_offset: 1_000_000,
            partition: 'b',
            start_block: 101,
            byte_offset: 512,
            byte_count: 1000,
        },
    ]);
    sparse.xattrs.push(Xattr {
        key: "user.nul".into(),
        value: b"a\0b".to_vec(),
    });
    sparse.xattrs.push(Xattr {
        key: "user.invalid".into(),
        value: vec![0xc3, 0x28],
    });
    sub.entries.push(Entry::File(sparse));
    sub.entries.push(Entry::File(File::new("empty", 6, times)));
    sub.entries
        .push(Entry::Directory(Directory::new("100% tab\there", 7, times)));
    sub.entries
        .push(Entry::File(File::new("amp&lt<gt>", 8, times)));
    ix.root.entries.push(Entry::Directory(sub));
    ix.highest_file_uid = 100;
    assert_eq!(round_trip(&ix), ix);
}

#[test]
fn unknown_tags_preserved() {
    let xml = example_xml()
        .replace(
            "<highestfileuid>",
            "<dataplacementpolicy><indexpartitioncriteria><size>1048576</size><name>*.txt</name>\
             </indexpartitioncriteria></dataplacementpolicy>\n<highestfileuid>",
        )
        .replace(
            "</ltfsindex>",
            "<futureindex a=\"1\">x &amp; y<sub/></futureindex></ltfsindex>",
        )
        .replace("<contents>", "<ltfs:x>prefixed</ltfs:x><contents>")
        .replace(
            "</file>",
            "<vendortag/><!-- comment --><other><n>1</n></other></file>",
        );
    let ix = read(&xml).unwrap();
    assert_eq!(
        ix.data_placement_policy.as_ref().unwrap().xml,
        "<dataplacementpolicy><indexpartitioncriteria><size>1048576</size><name>*.txt</name>\
         </indexpartitioncriteria></dataplacementpolicy>"
    );
    assert_eq!(
        ix.unknown,
        vec![RawElement {
            xml: "<futureindex a=\"1\">x &amp; y<sub/></futureindex>".into()
        }]
    );
    assert_eq!(ix.unknown[0].name(), "futureindex");
    assert_eq!(
        ix.root.unknown,
        vec![RawElement {
            xml: "<ltfs:x>prefixed</ltfs:x>".into()
        }]
    );
    let Entry::File(f) = &ix.root.entries[0] else {
        panic!()
    };
    assert_eq!(
        f.unknown,
        vec![
            RawElement {
                xml: "<vendortag/>".into()
            },
            RawElement {
                xml: "<other><n>1</n></other>".into()
            }
        ]
    );
    let back = round_trip(&ix);
    assert_eq!(back, ix);
}

#[test]
fn names_are_decoded_and_normalised() {
    let xml = example_xml().replace(
        "<name>hello.txt</name>",
        "<name percentencoded=\"true\">e%CC%81t%C3%A9%3A%2F/x%00</name>",
    );
    let ix = read(&xml).unwrap();
    assert_eq!(ix.root.entries[0].name(), "été:%2F_x%00");
    // Without the attribute the text is literal (and validated).
    let ix = read(&example_xml().replace("hello.txt", "a%20b")).unwrap();
    assert_eq!(ix.root.entries[0].name(), "a%20b");
}

#[test]
fn hostile_names() {
    let with = |name: &str| example_xml().replace("<name>hello.txt</name>", name);
    rejects(&with("<name>..</name>"), "'.' or '..'");
    rejects(&with("<name>.</name>"), "'.' or '..'");
    rejects(&with("<name>a/b</name>"), "contains '/'");
    rejects(&with("<name/>"), "empty name");
    rejects(&with("<name>a&#0;</name>"), "unknown entity");
    rejects(&with("<name>a\u{1f}</name>"), "XML 1.0 does not allow");
    rejects(&with("<name>\u{ffff}</name>"), "XML 1.0 does not allow");
    rejects(&with("<name>a&#1;</name>"), "unknown entity");
    rejects(
        &with("<name percentencoded=\"true\">%EF%BF%BF</name>"),
        "U+FFFF",
    );
    rejects(
        &with("<name percentencoded=\"true\">..</name>"),
        "'.' or '..'",
    );
    rejects(&with(&format!("<name>{}</name>", "x".repeat(256))), "255");
    rejects(&with("<name>a</name><name>b</name>"), "duplicate name");
    rejects(&with("<name percentencoded=\"true\">%C3</name>"), "UTF-8");
    rejects(&with("<name><![CDATA[x]]></name>"), "CDATA");
    let msg = rejects(&with("<name>a/b</name>"), "contains '/'");
    assert!(
        msg.contains("ltfsindex/directory/contents/file[1]/name"),
        "{msg}"
    );
}

#[test]
fn duplicate_names_after_normalisation() {
    let mut ix = sample();
    ix.root
        .entries
        .push(Entry::File(File::new("e\u{301}", 3, Times::all(t()))));
    ix.root
        .entries
        .push(Entry::File(File::new("\u{e9}", 4, Times::all(t()))));
    ix.highest_file_uid = 4;
    // The writer does not write it; the same XML typed out is refused by the reader.
    let e = ix.to_xml_string().unwrap_err();
    assert!(matches!(e.kind(), Some(ErrorKind::DuplicateName(_))), "{e}");
    let Entry::File(f) = &mut ix.root.entries[2] else {
        panic!()
    };
    f.name = "x".into();
    let xml = ix
        .to_xml_string()
        .unwrap()
        .replace("<name>x</name>", "<name>e\u{301}</name>");
    rejects(&xml, "duplicate name");
}

#[test]
fn hostile_structure() {
    let x = example_xml();
    rejects(
        &x.replace("<startblock>7</startblock>", ""),
        "ltfsindex/directory/contents/file[1]/extentinfo/extent[1]: missing startblock",
    );
    rejects(
        &x.replace("<length>1048576</length>", "<length>1048575</length>"),
        "past the file length",
    );
    rejects(
        &x.replace(
            "<length>1048576</length>",
            "<length>99999999999999999999</length>",
        ),
        "invalid length",
    );
    rejects(
        &x.replace("<length>1048576</length>", "<length>+1048576</length>"),
        "invalid length",
    );
    rejects(
        &x.replace("<length>1048576</length>", "<length> 1048576</length>"),
        "invalid length",
    );
    rejects(
        &x.replace(
            "<length>1048576</length>",
            "<length>18446744073709551615</length>",
        ),
        "invalid length",
    );
    rejects(
        &x.replace("<length>1048576</length>", "<length>-1</length>"),
        "invalid length",
    );
    rejects(
        &x.replace("<length>1048576</length>", ""),
        "file[1]: missing length",
    );
    rejects(
        &x.replace(
            "<readonly>false</readonly>\n<creationtime>",
            "<creationtime>",
        ),
        "missing readonly",
    );
    rejects(
        &x.replace("<generationnumber>2</generationnumber>", ""),
        "ltfsindex: missing generationnumber",
    );
    rejects(
        &x.replace(
            "<generationnumber>2</generationnumber>",
            "<generationnumber>2</generationnumber><generationnumber>2</generationnumber>",
        ),
        "duplicate generationnumber",
    );
    rejects(
        &x.replace("<fileuid>2</fileuid>", "<fileuid>1</fileuid>"),
        "fileuid 1",
    );
    rejects(
        &x.replace("<fileuid>1</fileuid>", "<fileuid>3</fileuid>"),
        "root directory",
    );
    rejects(
        &x.replace(
            "<highestfileuid>2</highestfileuid>",
            "<highestfileuid>1</highestfileuid>",
        ),
        "highestfileuid 1",
    );
    rejects(
        &x.replace("version=\"2.4.0\"", "version=\"3.0.0\""),
        "unsupported index version",
    );
    rejects(
        &x.replace("version=\"2.4.0\"", "version=\"0.9.0\""),
        "unsupported index version",
    );
    rejects(&x.replace(" version=\"2.4.0\"", ""), "missing version");
    rejects(
        &x.replace("encoding=\"UTF-8\"", "encoding=\"ISO-8859-1\""),
        "UTF-8",
    );
    rejects(
        &x.replace("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n", ""),
        "missing <?xml",
    );
    rejects(&x.replace("ltfsindex", "ltfs:ltfsindex"), "root element");
    rejects(
        &x.replace(
            "<partition>b</partition><startblock>7",
            "<partition>B</partition><startblock>7",
        ),
        "partition",
    );
    rejects(&x.replace("</ltfsindex>", ""), "truncated");
    rejects(&x[..x.len() / 2], "");
    rejects(
        &x.replace(
            "<updatetime>2025-01-31T12:40:00.000000001Z",
            "<updatetime>2025-01-31T12:40:00Z",
        ),
        "invalid time",
    );
    rejects(
        &x.replace("<volumeuuid>0b3c8a54", "<volumeuuid>zz3c8a54"),
        "volumeuuid",
    );
    rejects(&x.replace("<name/>", "<name/>&foo;"), "unknown entity");
    rejects(
        &x.replace(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>",
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><!DOCTYPE x [<!ENTITY a \"b\">]>",
        ),
        "DOCTYPE",
    );
    rejects(
        &x.replace("</ltfsindex>", "</ltfsindex><ltfsindex/>"),
        "after </ltfsindex>",
    );
    rejects(
        &x.replace("<contents>", "<contents>stray text"),
        "unexpected text",
    );
    rejects(
        &x.replace("</extentinfo>", "</extentinfo><symlink>x</symlink>"),
        "both extentinfo and symlink",
    );
    rejects(
        &x.replace("<contents>", "<contents/><contents>"),
        "duplicate contents",
    );
    rejects(
        &x.replace("<contents>\n", "").replace("</contents>\n", ""),
        "missing contents",
    );
    rejects("", "empty input");
    rejects(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>",
        "no <ltfsindex>",
    );
}

#[test]
fn hostile_extents() {
    let ext = |fo: u64, sb: u64, bc: u64| {
        format!(
            "<extent><fileoffset>{fo}</fileoffset><partition>b</partition><startblock>{sb}</startblock>\
             <byteoffset>0</byteoffset><bytecount>{bc}</bytecount></extent>"
        )
    };
    let with = |exts: String| {
        let x = example_xml();
        let a = x.find("<extentinfo>").unwrap();
        let b = x.find("</extentinfo>").unwrap();
        format!("{}<extentinfo>{exts}{}", &x[..a], &x[b..])
    };
    // Unsorted extents are sorted.
    let ix = read(&with(ext(1000, 8, 10) + &ext(0, 7, 100))).unwrap();
    let Entry::File(f) = &ix.root.entries[0] else {
        panic!()
    };
    let FileContent::Extents(e) = &f.content else {
        panic!()
    };
    assert_eq!((e[0].file_offset, e[1].file_offset), (0, 1000));
    rejects(
        &with(ext(0, 7, 100) + &ext(50, 8, 100)),
        "overlap at file offset 50",
    );
    rejects(&with(ext(0, 7, 2_000_000)), "past the file length");
    rejects(&with(ext(u64::MAX / 2 + 1, 7, 1)), "invalid fileoffset");
    rejects(&with(ext(i64::MAX as u64, 7, 1)), "extent end");
    // The caller-side checks.
    let ix = read(&with(ext(0, 3, 100))).unwrap();
    assert!(matches!(
        ix.validate_extents(512 * 1024, |_| None),
        Err(IndexError::Extent { .. })
    ));
    let ix = read(&example_xml()).unwrap();
    ix.validate_extents(512 * 1024, |p| (p == 'b').then_some(10))
        .unwrap();
    assert!(
        ix.validate_extents(512 * 1024, |p| (p == 'b').then_some(9))
            .is_ok()
    );
    let err = ix
        .validate_extents(4096, |p| (p == 'b').then_some(100))
        .unwrap_err();
    assert!(err.to_string().contains("EOD 100"), "{err}");
}

/// `levels` directories nested below the root, the deepest holding a file with an extent and an xattr
/// (the deepest elements an index has).
fn nested(levels: usize) -> Index {
    let mut ix = sample();
    let mut f = File::new("leaf", 2000, Times::all(t()));
    f.length = 10;
    f.xattrs.push(Xattr {
        key: "k".into(),
        value: b"v".to_vec(),
    });
    f.content = FileContent::Extents(vec![Extent {
        file_offset: 0,
        partition: 'b',
        start_block: 7,
        byte_offset: 0,
        byte_count: 10,
    }]);
    let mut d = Directory::new("d", 10, Times::all(t()));
    d.entries.push(Entry::File(f));
    for i in 1..levels {
        let mut up = Directory::new(format!("d{i}"), 10 + i as u64, Times::all(t()));
        up.entries.push(Entry::Directory(d));
        d = up;
    }
    if levels > 0 {
        ix.root.entries.push(Entry::Directory(d));
    }
    ix.highest_file_uid = 2000;
    ix
}

/// The deepest element nesting of a document (the root element counts 1).
fn xml_depth(xml: &str) -> usize {
    let mut r = quick_xml::Reader::from_str(xml);
    let (mut depth, mut max) = (0usize, 0usize);
    loop {
        match r.read_event().unwrap() {
            quick_xml::events::Event::Start(_) => {
                depth += 1;
                max = max.max(depth);
            }
            quick_xml::events::Event::Empty(_) => max = max.max(depth + 1),
            quick_xml::events::Event::End(_) => depth -= 1,
            quick_xml::events::Event::Eof => return max,
            _ => {}
        }
    }
}

#[test]
fn deep_nesting_is_a_limit_not_a_stack_overflow() {
    let head = example_xml();
    let (pre, post) = head.split_at(head.find("<file>").unwrap());
    let dir_open = format!(
        "<directory><name>d</name><readonly>false</readonly><creationtime>{T}</creationtime>\
         <changetime>{T}</changetime><modifytime>{T}</modifytime><accesstime>{T}</accesstime>\
         <backuptime>{T}</backuptime><fileuid>9</fileuid><contents>"
    );
    let deep = format!("{pre}{}{post}", dir_open.repeat(10_000));
    rejects(&deep, "directories nested deeper than 1000");
    let deep = head.replace("<contents>", &format!("{}<contents>", "<x>".repeat(10_000)));
    rejects(&deep, "XML nesting deeper than 2048");
}

#[test]
fn the_writer_and_the_reader_share_one_depth_limit_within_libxml2s() {
    // At the limit: written, read back, and no deeper than libxml2 reads with XML_PARSE_HUGE.
    let ix = nested(MAX_DIR_DEPTH);
    let xml = ix.to_xml_string().unwrap();
    assert_eq!(xml_depth(&xml), 2 * MAX_DIR_DEPTH + 7);
    assert!(xml_depth(&xml) <= MAX_XML_DEPTH);
    assert_eq!(round_trip(&ix), ix);
    // One more: the writer refuses it (naming the directory), and so would the reader.
    let ix = nested(MAX_DIR_DEPTH + 1);
    let e = ix.write_xml(std::io::sink()).unwrap_err();
    assert!(matches!(e, IndexError::Unwritable { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("directories nested deeper than 1000") && msg.contains("/d1000/d999/"),
        "{msg}"
    );
    // The same tree, one directory deeper, is what the reader refuses.
    let xml = nested(MAX_DIR_DEPTH).to_xml_string().unwrap();
    let root = xml.find("<directory>").unwrap() + 1;
    let first = root + xml[root..].find("<directory>").unwrap();
    let last = xml.rfind("</contents>").unwrap();
    let up = format!(
        "<directory><name>up</name><readonly>false</readonly><creationtime>{T}</creationtime>\
         <changetime>{T}</changetime><modifytime>{T}</modifytime><accesstime>{T}</accesstime>\
         <backuptime>{T}</backuptime><fileuid>5000</fileuid><contents>"
    );
    let xml = format!(
        "{}{up}{}</contents></directory>{}",
        &xml[..first],
        &xml[first..last],
        &xml[last..]
    )
    .replace(
        "<highestfileuid>2000</highestfileuid>",
        "<highestfileuid>5000</highestfileuid>",
    );
    rejects(&xml, "directories nested deeper than 1000");

    // Unknown elements count: kept where they were read, refused where they would go too deep.
    let mut ix = nested(MAX_DIR_DEPTH);
    let Some(Entry::File(f)) = d_of(&mut ix).entries.first_mut() else {
        panic!()
    };
    // The file is element 2004: 44 levels fit below it, 45 do not.
    f.unknown.push(RawElement {
        xml: format!("{}{}", "<u>".repeat(44), "</u>".repeat(44)),
    });
    let xml = ix.to_xml_string().unwrap();
    assert_eq!(xml_depth(&xml), MAX_XML_DEPTH);
    assert_eq!(round_trip(&ix), ix);
    let Some(Entry::File(f)) = d_of(&mut ix).entries.first_mut() else {
        panic!()
    };
    f.unknown[0].xml = format!("{}<v/>{}", "<u>".repeat(44), "</u>".repeat(44));
    let e = ix.write_xml(std::io::sink()).unwrap_err();
    assert!(
        e.to_string().contains("XML nesting deeper than 2048"),
        "{e}"
    );
    let xml = xml.replace(&"<u>".repeat(44), &format!("{}<v/>", "<u>".repeat(44)));
    rejects(&xml, "XML nesting deeper than 2048");
}

/// The deepest directory of [`nested`].
fn d_of(ix: &mut Index) -> &mut Directory {
    let mut d = &mut ix.root;
    while let Some(k) = d
        .entries
        .iter()
        .position(|e| matches!(e, Entry::Directory(_)))
    {
        let Entry::Directory(sub) = &mut d.entries[k] else {
            unreachable!()
        };
        d = sub;
    }
    d
}

#[test]
fn limits() {
    let x = example_xml();
    let huge = "a".repeat(5 << 20);
    rejects(
        &x.replace("<name>hello.txt</name>", &format!("<name>{huge}</name>")),
        "limit exceeded",
    );
    rejects(
        &x.replace("</file>", &format!("<big>{huge}</big></file>")),
        "limit exceeded",
    );
    rejects(
        &x.replace("</file>", &format!("<big {huge}=\"1\"/></file>")),
        "limit exceeded",
    );
    rejects(
        &x.replace("<name/>", &format!("<name/><!--{huge}-->")),
        "limit exceeded",
    );
    rejects(
        &x.replace(
            "<creator>",
            &format!("<comment>{}</comment><creator>", "c".repeat(70_000)),
        ),
        "limit exceeded",
    );
    let small = Limits {
        max_entries: 1,
        ..Limits::default()
    };
    let e = Index::read_xml(x.as_bytes(), &small).unwrap_err();
    assert!(e.to_string().contains("more than 1 entries"), "{e}");
    let xa = format!(
        "<extendedattributes><xattr><key>k</key><value>{}</value></xattr></extendedattributes><contents>",
        "v".repeat(70_000)
    );
    rejects(&x.replace("<contents>", &xa), "xattr value longer");
}

#[test]
fn xattr_forms() {
    let xa = "<extendedattributes><xattr><key>user.a</key><value type=\"text\">t</value></xattr>\
              <xattr><key>user.b</key><value type=\"base64\">AAEC\n/w==</value></xattr>\
              <xattr><key>user.c</key><value/></xattr><xattr><key>user.d</key><value>x</value></xattr>\
              </extendedattributes><contents>";
    let ix = read(&example_xml().replace("<contents>", xa)).unwrap();
    let v: Vec<(&str, &[u8])> = ix
        .root
        .xattrs
        .iter()
        .map(|x| (x.key.as_str(), x.value.as_slice()))
        .collect();
    assert_eq!(
        v,
        vec![
            ("user.a", &b"t"[..]),
            ("user.b", &[0, 1, 2, 255][..]),
            ("user.c", &b""[..]),
            ("user.d", b"x")
        ]
    );
    rejects(
        &example_xml().replace("<contents>", &xa.replace("user.b", "user.a")),
        "duplicate xattr key",
    );
    rejects(
        &example_xml().replace("<contents>", &xa.replace("AAEC", "!!")),
        "base64",
    );
    rejects(
        &example_xml().replace("<contents>", &xa.replace("<value/>", "")),
        "missing value",
    );
}

#[test]
fn any_element_order() {
    // Reverse the order of the index's header lines and of a file's leaves.
    let x = example_xml();
    let lines: Vec<&str> = x.lines().collect();
    let mut header: Vec<&str> = lines[2..11].to_vec();
    header.reverse();
    let reordered = format!(
        "{}\n{}\n{}\n{}",
        lines[0],
        lines[1],
        header.join("\n"),
        lines[11..].join("\n")
    )
    .replace(
        "<name>hello.txt</name>\n<length>1048576</length>",
        "<length>1048576</length><name>hello.txt</name>",
    );
    assert_eq!(read(&reordered).unwrap(), read(&x).unwrap());
}

// ---- property tests ----

fn arb_name() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            4 => prop::char::range('a', 'z'),
            1 => prop::sample::select(vec![' ', ':', '%', '&', '<', '>', '"', '\'', '\t', '\n', '\r', '\u{1}', '\u{7f}', 'é', '日', '😀', '.', '\u{e9}']),
        ],
        1..12,
    )
    .prop_map(|v| v.into_iter().collect::<String>())
    .prop_filter("not . or ..", |s| s != "." && s != "..")
}

fn arb_time() -> impl Strategy<Value = LtfsTime> {
    (LtfsTime::MIN.secs..=LtfsTime::MAX.secs, 0u32..1_000_000_000)
        .prop_map(|(s, n)| LtfsTime { secs: s, nanos: n })
}

fn arb_times() -> impl Strategy<Value = Times> {
    (arb_time(), arb_time(), arb_time(), arb_time(), arb_time()).prop_map(
        |(creation, change, modify, access, backup)| Times {
            creation,
            change,
            modify,
            access,
            backup,
        },
    )
}

fn arb_xattrs() -> impl Strategy<Value = Vec<Xattr>> {
    prop::collection::vec(
        (arb_name(), prop::collection::vec(any::<u8>(), 0..16)),
        0..3,
    )
    .prop_map(|v| {
        let mut seen = std::collections::HashSet::new();
        v.into_iter()
            .filter(|(k, _)| seen.insert(k.clone()))
            .map(|(key, value)| Xattr { key, value })
            .collect()
    })
}

#[derive(Debug, Clone)]
enum Shape {
    File {
        name: String,
        times: Times,
        xattrs: Vec<Xattr>,
        ro: bool,
        content: u8,
        gaps: Vec<(u16, u16)>,
    },
    Dir {
        name: String,
        times: Times,
        xattrs: Vec<Xattr>,
        ro: bool,
        children: Vec<Shape>,
    },
}

fn arb_shape() -> impl Strategy<Value = Shape> {
    let file = (
        arb_name(),
        arb_times(),
        arb_xattrs(),
        any::<bool>(),
        0u8..3,
        prop::collection::vec((any::<u16>(), 1u16..1000), 0..4),
    )
        .prop_map(|(name, times, xattrs, ro, content, gaps)| Shape::File {
            name,
            times,
            xattrs,
            ro,
            content,
            gaps,
        });
    file.prop_recursive(4, 40, 6, |inner| {
        (
            arb_name(),
            arb_times(),
            arb_xattrs(),
            any::<bool>(),
            prop::collection::vec(inner, 0..6),
        )
            .prop_map(|(name, times, xattrs, ro, children)| Shape::Dir {
                name,
                times,
                xattrs,
                ro,
                children,
            })
    })
}

/// Builds a valid tree: unique NFC names per directory, fresh UIDs.
fn build(shapes: Vec<Shape>, dir: &mut Directory, uid: &mut u64) {
    let mut seen = std::collections::HashSet::new();
    for s in shapes {
        *uid += 1;
        match s {
            Shape::File {
                name,
                times,
                xattrs,
                ro,
                content,
                gaps,
            } => {
                let name = names::nfc(&name).into_owned();
                if !seen.insert(name.clone()) {
                    continue;
                }
                let mut f = File::new(name, *uid, times);
                f.read_only = ro;
                f.xattrs = xattrs;
                match content {
                    0 => {}
                    1 => f.content = FileContent::Symlink(format!("../{}/x:y", f.name)),
                    _ => {
                        let mut off = 0u64;
                        let mut exts = Vec::new();
                        for (i, (gap, len)) in gaps.into_iter().enumerate() {
                            off += u64::from(gap);
                            exts.push(Extent {
                                file_offset: off,
                                partition: 'b',
                                start_block: 5 + i as u64,
                                byte_offset: u64::from(gap % 7),
                                byte_count: u64::from(len),
                            });
                            off += u64::from(len);
                        }
                        f.length = off + 3;
                        f.content = FileContent::Extents(exts);
                    }
                }
                dir.entries.push(Entry::File(f));
            }
            Shape::Dir {
                name,
                times,
                xattrs,
                ro,
                children,
            } => {
                let name = names::nfc(&name).into_owned();
                if !seen.insert(name.clone()) {
                    continue;
                }
                let mut d = Directory::new(name, *uid, times);
                d.read_only = ro;
                d.xattrs = xattrs;
                build(children, &mut d, uid);
                dir.entries.push(Entry::Directory(d));
            }
        }
    }
}

fn arb_index() -> impl Strategy<Value = Index> {
    (
        prop::collection::vec(arb_shape(), 0..6),
        arb_time(),
        any::<u32>(),
        prop::option::of("[ -~]{0,40}"),
        any::<bool>(),
        prop::option::of(5u64..1000),
    )
        .prop_map(|(shapes, time, generation, comment, allow, prev)| {
            let mut ix = Index::new(
                "rackvault proptest",
                "0b3c8a54-5c1e-4f7e-9d7e-2f4b1a6c9e10",
                "",
                time,
                IndexLocation {
                    partition: 'a',
                    start_block: 5,
                },
            );
            ix.generation = u64::from(generation);
            ix.comment = comment;
            ix.allow_policy_update = allow;
            ix.previous = prev.map(|b| IndexLocation {
                partition: 'b',
                start_block: b,
            });
            let mut uid = 1;
            build(shapes, &mut ix.root, &mut uid);
            ix.highest_file_uid = uid + u64::from(generation % 3);
            ix
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn prop_round_trip(ix in arb_index()) {
        let xml = ix.to_xml_string().unwrap();
        let back = Index::read_xml(xml.as_bytes(), &Limits::default());
        prop_assert!(back.is_ok(), "{:?}\n{}", back.err(), xml);
        prop_assert_eq!(back.unwrap(), ix);
    }
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Truncate(usize),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Splice(usize, usize),
}

fn arb_mutation() -> impl Strategy<Value = Mutation> {
    let snippets: Vec<Vec<u8>> = [
        "<",
        ">",
        "</",
        "/>",
        "&",
        "&amp;",
        "&#0;",
        "&#x110000;",
        "<![CDATA[x]]>",
        "<!--",
        "-->",
        "<?pi?>",
        "<directory>",
        "</directory>",
        "<file>",
        "</file>",
        "<contents>",
        "</contents>",
        "<name>..</name>",
        "<extent>",
        "%",
        "percentencoded=\"true\"",
        "\"",
        "'",
        "=",
        "\u{0}",
        "\u{1f}",
        "\u{ffff}",
        "99999999999999999999999",
        "-1",
        "<x:y>",
        "<!DOCTYPE a>",
        "\u{e9}",
        "\r\n",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        any::<usize>().prop_map(Mutation::Truncate),
        (
            any::<usize>(),
            prop_oneof![
                prop::sample::select(snippets),
                prop::collection::vec(any::<u8>(), 1..8)
            ]
        )
            .prop_map(|(i, s)| Mutation::Insert(i, s)),
        (any::<usize>(), 1usize..64).prop_map(|(i, n)| Mutation::Delete(i, n)),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::Splice(a, b)),
    ]
}

fn rich_xml() -> Vec<u8> {
    let mut ix = sample();
    let mut d = Directory::new("sub:dir", 3, Times::all(t()));
    d.xattrs.push(Xattr {
        key: "user.x".into(),
        value: vec![0, 1, 2],
    });
    let mut l = File::new("link", 4, Times::all(t()));
    l.content = FileContent::Symlink("../hello.txt".into());
    d.entries.push(Entry::File(l));
    ix.root.entries.push(Entry::Directory(d));
    ix.unknown.push(RawElement {
        xml: "<future>1</future>".into(),
    });
    ix.highest_file_uid = 4;
    ix.to_xml_string().unwrap().into_bytes()
}

proptest! {
    // LTFS_FUZZ_CASES=200000 for a longer campaign.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("LTFS_FUZZ_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(2000),
        ..ProptestConfig::default()
    })]

    /// A bounded fuzzer: mutated indexes are accepted or rejected, never a panic.
    #[test]
    fn prop_fuzz_never_panics(muts in prop::collection::vec(arb_mutation(), 1..5)) {
        let mut xml = rich_xml();
        for m in muts {
            let n = xml.len().max(1);
            match m {
                Mutation::Flip(i, b) => { let i = i % n; if i < xml.len() { xml[i] ^= b | 1; } }
                Mutation::Truncate(i) => xml.truncate(i % n),
                Mutation::Insert(i, s) => { let i = i % (xml.len() + 1); xml.splice(i..i, s); }
                Mutation::Delete(i, k) => { let i = i % n; let e = (i + k).min(xml.len()); if i < e { xml.drain(i..e); } }
                Mutation::Splice(a, b) => {
                    // Duplicate a slice of the document somewhere else.
                    let (a, b) = (a % n, b % n);
                    let (s, e) = (a.min(b), a.max(b).min(s_min(a, b) + 400));
                    if e <= xml.len() { let part = xml[s..e].to_vec(); let at = e.min(xml.len()); xml.splice(at..at, part); }
                }
            }
        }
        let r = Index::read_xml(&xml[..], &Limits::default());
        if let Ok(mut ix) = r {
            ix.version = INDEX_VERSION.to_string();
            // Whatever is accepted must be writable and read back the same.
            let out = ix.to_xml_string();
            prop_assert!(out.is_ok(), "{:?}", out.err());
            let back = Index::read_xml(out.unwrap().as_bytes(), &Limits::default());
            prop_assert!(back.is_ok(), "{:?}", back.err());
            prop_assert_eq!(back.unwrap(), ix);
        }
    }
}

fn s_min(a: usize, b: usize) -> usize {
    a.min(b)
}

#[test]
fn writer_refuses_invalid_models() {
    let unwritable = |ix: &Index, needle: &str| {
        let e = ix.write_xml(std::io::sink()).unwrap_err();
        assert!(matches!(e, IndexError::Unwritable { .. }), "{e}");
        assert!(e.to_string().contains(needle), "{e}");
    };
    let mut ix = sample();
    ix.root
        .entries
        .push(Entry::File(File::new("a/b", 3, Times::all(t()))));
    unwritable(&ix, "/a/b");
    let mut ix = sample();
    ix.root
        .entries
        .push(Entry::Directory(Directory::new("..", 3, Times::all(t()))));
    unwritable(&ix, "'.' or '..'");
    let mut ix = sample();
    ix.volume_uuid = "0B3C8A54-5C1E-4F7E-9D7E-2F4B1A6C9E10".into();
    unwritable(&ix, "volumeuuid");
    let mut ix = sample();
    ix.creator = "bell\u{7}".into();
    unwritable(&ix, "creator");
    let mut ix = sample();
    let Entry::File(f) = &mut ix.root.entries[0] else {
        panic!()
    };
    let FileContent::Extents(e) = &mut f.content else {
        panic!()
    };
    e[0].partition = 'B';
    unwritable(&ix, "extent partition");
    // What the reader would refuse is not written either.
    fn file(ix: &mut Index) -> &mut File {
        match &mut ix.root.entries[0] {
            Entry::File(f) => f,
            _ => panic!(),
        }
    }
    let mut ix = sample();
    file(&mut ix).length = 10;
    unwritable(&ix, "past the file length 10");
    let mut ix = sample();
    let f = file(&mut ix);
    f.length = 3 << 20;
    let FileContent::Extents(e) = &mut f.content else {
        panic!()
    };
    e.push(Extent {
        file_offset: 100,
        ..e[0]
    });
    unwritable(&ix, "extents overlap at file offset 100");
    let mut ix = sample();
    file(&mut ix).xattrs.push(Xattr {
        key: "big".into(),
        value: vec![b'x'; MAX_XATTR_VALUE + 1],
    });
    unwritable(
        &ix,
        "/hello.txt (xattr \"big\"): limit exceeded: xattr value",
    );
    let mut ix = sample();
    ix.highest_file_uid = 1;
    unwritable(&ix, "highestfileuid 1 is lower than fileuid 2");
    let mut ix = sample();
    ix.comment = Some("c".repeat(65537));
    unwritable(&ix, "<comment> longer than 65536 characters");
    let mut ix = sample();
    file(&mut ix).unknown.push(RawElement {
        xml: "<a><b></a>".into(),
    });
    unwritable(&ix, "not one well-formed element");
    let mut ix = sample();
    ix.root
        .entries
        .push(Entry::File(File::new("hello.txt", 3, Times::all(t()))));
    ix.highest_file_uid = 3;
    unwritable(&ix, "duplicate name \"hello.txt\"");
    let mut ix = sample();
    ix.root
        .entries
        .push(Entry::File(File::new("other", 2, Times::all(t()))));
    unwritable(&ix, "fileuid 2: used more than once");
    let mut ix = sample();
    for _ in 0..2 {
        file(&mut ix).xattrs.push(Xattr {
            key: "k".into(),
            value: b"v".to_vec(),
        });
    }
    unwritable(&ix, "duplicate xattr key \"k\"");
}

#[test]
fn writer_normalises_to_nfc() {
    let mut ix = sample();
    ix.root
        .entries
        .push(Entry::File(File::new("e\u{301}", 3, Times::all(t()))));
    ix.highest_file_uid = 3;
    let xml = ix.to_xml_string().unwrap();
    assert!(xml.contains("<name>\u{e9}</name>"));
    assert_eq!(read(&xml).unwrap().root.entries[1].name(), "\u{e9}");
}

#[test]
fn times_and_system_time() {
    let now = std::time::SystemTime::now();
    let t = LtfsTime::from(now);
    assert_eq!(std::time::SystemTime::from(t), now);
}
