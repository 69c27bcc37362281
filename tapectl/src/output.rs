//! Human tables and --json output.

use anyhow::Result;
use serde::Serialize;

use tapectl::backend::FoundDevice;
use tapectl::drive::status::DriveStatus;
use tapectl::library::{LibraryStatus, Move, NamedElement};

pub struct Out {
    pub json: bool,
}

impl Out {
    pub fn value<T: Serialize + ?Sized>(&self, v: &T, human: &str) -> Result<()> {
        if self.json {
            println!("{}", serde_json::to_string_pretty(v)?);
        } else {
            println!("{human}");
        }
        Ok(())
    }

    pub fn done(&self, msg: &str) -> Result<()> {
        self.value(&serde_json::json!({ "ok": true, "message": msg }), msg)
    }
}

pub fn print_devices(out: &Out, devs: &[FoundDevice]) -> Result<()> {
    let mut s = String::new();
    if devs.is_empty() {
        s.push_str("no changers or tape drives found");
    }
    for d in devs {
        match &d.error {
            Some(e) => s.push_str(&format!("{:<40} {:<15} error: {e}\n", d.path, d.kind)),
            None => s.push_str(&format!(
                "{:<40} {:<15} {} {} {} serial {}\n",
                d.path,
                d.kind,
                d.vendor,
                d.product,
                d.revision,
                d.serial.as_deref().unwrap_or("-")
            )),
        }
    }
    out.value(devs, s.trim_end())
}

fn element_line(e: &NamedElement) -> String {
    let el = &e.element;
    let mut s = format!("  {:<9} @{:<5} ", e.place.to_string(), el.address);
    if el.full {
        s.push_str(el.volume_tag.as_deref().unwrap_or("(no barcode)"));
        if e.cleaning {
            s.push_str(" [cleaning]");
        }
    } else {
        s.push_str("empty");
    }
    if let Some(id) = &el.drive_id {
        s.push_str(&format!("  serial {}", id.serial));
    }
    if let Some(src) = el.source.filter(|_| el.full) {
        s.push_str(&format!("  (from @{src})"));
    }
    if let Some((asc, ascq)) = el.exception {
        s.push_str(&format!(
            "  EXCEPTION {asc:02X}/{ascq:02X} {}",
            scsi::sense::asc_description(asc, ascq)
        ));
    }
    s
}

pub fn print_library_status(out: &Out, st: &LibraryStatus) -> Result<()> {
    let mut s = format!(
        "changer {} {} {} serial {} ({})\n",
        st.changer.vendor,
        st.changer.product,
        st.changer.revision,
        st.changer.serial.as_deref().unwrap_or("-"),
        st.changer.device
    );
    for (title, list) in [
        ("drives", &st.drives),
        ("import/export", &st.import_export),
        ("storage", &st.slots),
    ] {
        let full = list.iter().filter(|e| e.element.full).count();
        s.push_str(&format!("{title} ({full}/{} full):\n", list.len()));
        for e in list {
            s.push_str(&element_line(e));
            s.push('\n');
        }
    }
    for n in &st.notes {
        s.push_str(&format!("note: {n}\n"));
    }
    out.value(st, s.trim_end())
}

pub fn print_moves(out: &Out, moves: &[Move]) -> Result<()> {
    let s = if moves.is_empty() {
        "nothing to move".to_string()
    } else {
        moves
            .iter()
            .map(|m| {
                format!(
                    "{}: {} -> {}",
                    m.barcode.as_deref().unwrap_or("(no barcode)"),
                    m.from,
                    m.to
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    out.value(moves, &s)
}

pub fn print_drive_status(out: &Out, st: &DriveStatus) -> Result<()> {
    let mut s = format!(
        "drive {} {} {} serial {} ({})\n",
        st.vendor,
        st.product,
        st.revision,
        st.serial.as_deref().unwrap_or("-"),
        st.device
    );
    let opt = |v: Option<String>| v.unwrap_or_else(|| "unknown".into());
    s.push_str(&format!(
        "  generation   LTO-{}\n",
        opt(st.drive_generation.map(|g| g.to_string()))
    ));
    s.push_str(&format!(
        "  ready        {}\n",
        if st.ready { "yes" } else { "no" }
    ));
    match st.medium_present {
        Some(false) => s.push_str("  medium       none\n"),
        _ => {
            s.push_str(&format!("  medium       {}", opt(st.barcode.clone())));
            if let Some(g) = st.medium_generation {
                s.push_str(&format!(" (LTO-{g}"));
                if let Some(n) = st.density_name.filter(|n| *n != format!("LTO-{g}")) {
                    s.push_str(&format!(", {n}"));
                }
                s.push(')');
            }
            if st.write_protected == Some(true) {
                s.push_str(" write-protected");
            }
            s.push('\n');
            if let Some(p) = st.partitions {
                s.push_str(&format!("  partitions   {p}\n"));
            }
            if let Some(p) = &st.position {
                s.push_str(&format!(
                    "  position     partition {} block {}",
                    p.partition, p.block
                ));
                if let Some(f) = p.file {
                    s.push_str(&format!(" file {f}"));
                }
                if p.source != "drive" {
                    s.push_str(&format!(" ({})", p.source));
                }
                s.push('\n');
            }
            for c in &st.capacity {
                let size =
                    |mib: Option<u64>| mib.map(|v| common::human::bytes(v.saturating_mul(1 << 20)));
                s.push_str(&format!(
                    "  capacity p{}  {} free of {}\n",
                    c.partition,
                    opt(size(c.remaining_mib)),
                    opt(size(c.maximum_mib))
                ));
            }
        }
    }
    if let Some(c) = st.compression {
        s.push_str(&format!(
            "  compression  {}\n",
            if c { "on" } else { "off" }
        ));
    }
    match &st.tape_alerts {
        None => s.push_str("  TapeAlert    not available\n"),
        Some(flags) if flags.is_empty() => s.push_str("  TapeAlert    none\n"),
        Some(flags) => {
            for f in flags {
                s.push_str(&format!(
                    "  TapeAlert    {:02X} {} ({})\n",
                    f.number, f.name, f.severity
                ));
            }
        }
    }
    if st.needs_cleaning {
        s.push_str("  ** the drive asks for cleaning: tapectl clean --drive N **\n");
    }
    for v in &st.volume_statistics {
        s.push_str(&format!(
            "  stat {:04X}    {} = {}\n",
            v.code,
            v.name.unwrap_or("?"),
            v.value
        ));
    }
    for a in &st.attributes {
        s.push_str(&format!(
            "  MAM {:04X}     {} = {}\n",
            a.id,
            a.name.unwrap_or("?"),
            a.value
        ));
    }
    for q in &st.quirks {
        s.push_str(&format!("  quirk        {q}\n"));
    }
    for n in &st.notes {
        s.push_str(&format!("  note         {n}\n"));
    }
    out.value(st, s.trim_end())
}
