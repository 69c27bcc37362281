//! `tapectl media …`: the cartridges the tape catalog knows, where they are, and changes of state
//! made by hand (each one kept in the cartridge's history).

use std::collections::HashSet;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use serde::Serialize;

use tapectl::catalog::{Location, MediaChange, MediaRow, MediaState, TapeCatalog};
use tapectl::library::Library;
use tapectl::sets::allocate::{Want, prepare, reconcile};

use crate::cli_set::SetConfig;
use crate::output::Out;

#[derive(Subcommand)]
pub enum MediaCmd {
    /// Cartridges: barcode, pool, state, location, sets on it (the library is read first when it
    /// can be reached, and what it sees is recorded).
    List {
        /// Only this pool's cartridges.
        #[arg(long)]
        pool: Option<String>,
        /// Only cartridges in this state (new, writable, full, expired, damaged, retired, cleaning).
        #[arg(long)]
        state: Option<String>,
        /// Only cartridges here: onsite, offsite, slot, drive, ie, vault, vault:NAME, unknown.
        #[arg(long)]
        location: Option<String>,
    },
    /// Format new cartridges as LTFS volumes named by their barcode, for a pool (never one that
    /// holds data).
    Label {
        /// The cartridges to label.
        barcodes: Vec<String>,
        /// Every cartridge of the pool in the library that the catalog has as new.
        #[arg(long, conflicts_with = "barcodes")]
        all_new: bool,
        /// The pool they join (required when the configuration has several).
        #[arg(long)]
        pool: Option<String>,
        /// The drive to label with (numbered from 0).
        #[arg(long, short, default_value_t = 0)]
        drive: u16,
    },
    /// Take a cartridge out of use for good (it is never written again).
    Retire {
        /// The cartridge's barcode.
        barcode: String,
        /// Why, for its history.
        #[arg(long, default_value = "retired by hand")]
        why: String,
    },
    /// Mark a cartridge damaged (never written; restores use another copy where there is one).
    Damaged {
        /// The cartridge's barcode.
        barcode: String,
        /// Why, for its history.
        #[arg(long, default_value = "marked damaged by hand")]
        why: String,
    },
    /// Clear a damaged mark: the cartridge is writable again (or new, when it was never labelled).
    Undamaged {
        /// The cartridge's barcode.
        barcode: String,
        /// Why, for its history.
        #[arg(long, default_value = "damaged mark cleared by hand")]
        why: String,
    },
    /// Expire the sets their pool's retention lets go (never one a later set builds on) and mark
    /// the tapes whose every set has expired, so new sets may be written over them.
    Expire {
        /// Say what would expire; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Judge at this time instead of now (RFC 3339, e.g. 2027-06-01T00:00:00Z).
        #[arg(long)]
        at: Option<jiff::Timestamp>,
    },
    /// Every recorded change of a cartridge: state, location, pool, volume.
    History {
        /// The cartridge's barcode.
        barcode: String,
    },
}

#[derive(Serialize)]
struct Listed {
    #[serde(flatten)]
    media: MediaRow,
    sets: usize,
}

fn location_matches(l: &Location, want: &str) -> bool {
    match want {
        "onsite" => l.onsite(),
        "offsite" => !l.onsite() && *l != Location::Unknown,
        _ => {
            let db = l.to_db();
            db == want || db.split(':').next() == Some(want)
        }
    }
}

pub fn media_cmd(
    out: &Out,
    cfg: &SetConfig,
    cmd: &MediaCmd,
    open: &dyn Fn() -> Result<Library>,
) -> Result<()> {
    let state_dir = &cfg.shared.state_dir;
    let cat = TapeCatalog::open(state_dir)?;
    match cmd {
        MediaCmd::List {
            pool,
            state,
            location,
        } => {
            if let Some(s) = state
                && MediaState::parse(s).is_none()
            {
                bail!(
                    "unknown state {s:?} (new, writable, full, expired, damaged, retired, cleaning)"
                );
            }
            match open() {
                Ok(mut lib) => reconcile(&cat, &lib.inventory()?, "tapectl media list")?,
                Err(e) => eprintln!(
                    "tapectl: warning: the library cannot be reached ({e:#}); locations are as last seen"
                ),
            }
            let mut rows = Vec::new();
            let mut human = String::from(
                "barcode    pool        state      location                 sets  written    encryption\n",
            );
            for m in cat.all_media()? {
                if pool
                    .as_deref()
                    .is_some_and(|p| m.pool.as_deref() != Some(p))
                    || state.as_deref().is_some_and(|s| m.state.as_str() != s)
                    || location
                        .as_deref()
                        .is_some_and(|l| !location_matches(&m.location, l))
                {
                    continue;
                }
                let sets = cat.sets_on_tape(&m.barcode)?.len();
                human.push_str(&format!(
                    "{:<10} {:<11} {:<10} {:<24} {:>4}  {}\n",
                    m.barcode,
                    m.pool.as_deref().unwrap_or("-"),
                    m.state.as_str(),
                    m.location.to_string(),
                    sets,
                    // The key an encrypted tape needs, by fingerprint (docs/encryption.md).
                    match m.key_fingerprint.as_deref() {
                        Some(k) => format!("{:<9}  key {k}", common::human::bytes(m.bytes_written)),
                        None => common::human::bytes(m.bytes_written),
                    }
                ));
                rows.push(Listed { media: m, sets });
            }
            if rows.is_empty() {
                human =
                    "no cartridge matches (the catalog learns cartridges when the library is read)"
                        .into();
            }
            out.value(&rows, human.trim_end())
        }
        MediaCmd::Label {
            barcodes,
            all_new,
            pool,
            drive,
        } => {
            let pool = cfg.tape.pool(pool.as_deref())?;
            let key = match &pool.encryption {
                Some(e) => Some(tapectl::keys::read_key_file(&e.key_file).with_context(|| {
                    format!("pool {} encrypts its tapes with this key file", pool.name)
                })?),
                None => None,
            };
            let mut lib = open()?;
            lib.keys = cfg.tape.keyring();
            reconcile(&cat, &lib.inventory()?, "tapectl media label")?;
            let wanted: Vec<String> = if *all_new {
                cat.all_media()?
                    .into_iter()
                    .filter(|m| {
                        m.state == MediaState::New && m.location.onsite() && pool.holds(&m.barcode)
                    })
                    .map(|m| m.barcode)
                    .collect()
            } else if barcodes.is_empty() {
                bail!("name the cartridges to label, or pass --all-new");
            } else {
                barcodes.clone()
            };
            let want = Want {
                pool,
                drive: *drive,
                data_root: None,
                actor: "tapectl media label",
                block_size: 512 * 1024,
                key: key.as_ref(),
            };
            let mut done = Vec::new();
            let mut problems = Vec::new();
            let mut seen = HashSet::new();
            for b in wanted {
                if !seen.insert(b.clone()) {
                    continue;
                }
                if !pool.holds(&b) {
                    problems.push(format!(
                        "{b}: pool {} does not take this barcode ({})",
                        pool.name,
                        pool.barcodes.join(", ")
                    ));
                    continue;
                }
                match cat.media(&b)?.map(|m| m.state) {
                    None => problems.push(format!("{b}: not in the library")),
                    Some(MediaState::New | MediaState::Writable) => {
                        match prepare(&mut lib, &cat, &want, &b)? {
                            Ok(uuid) => {
                                done.push(serde_json::json!({ "barcode": b, "volume_uuid": uuid }))
                            }
                            Err(why) => problems.push(format!("{b}: {why}")),
                        }
                    }
                    Some(s) => problems.push(format!(
                        "{b}: it is {}; only new cartridges are labelled",
                        s.as_str()
                    )),
                }
            }
            let _ = lib.unload(*drive);
            reconcile(&cat, &lib.inventory()?, "tapectl media label")?;
            let mut human = format!(
                "labelled {} cartridge(s) for pool {}",
                done.len(),
                pool.name
            );
            for d in &done {
                human.push_str(&format!(
                    "\n  {}  {}",
                    d["barcode"].as_str().unwrap_or(""),
                    d["volume_uuid"].as_str().unwrap_or("")
                ));
            }
            out.value(
                &serde_json::json!({ "labelled": done, "problems": problems }),
                &human,
            )?;
            if !problems.is_empty() {
                for p in &problems {
                    eprintln!("tapectl: {p}");
                }
                bail!("{} cartridge(s) not labelled", problems.len());
            }
            Ok(())
        }
        MediaCmd::Retire { barcode, why }
        | MediaCmd::Damaged { barcode, why }
        | MediaCmd::Undamaged { barcode, why } => {
            let (to, actor) = match cmd {
                MediaCmd::Retire { .. } => (MediaState::Retired, "tapectl media retire"),
                MediaCmd::Damaged { .. } => (MediaState::Damaged, "tapectl media damaged"),
                _ => {
                    let m = cat.media(barcode)?;
                    let s = match m {
                        Some(m) if m.state != MediaState::Damaged => {
                            bail!("{barcode} is {}, not damaged", m.state.as_str())
                        }
                        Some(m) if m.volume_uuid.is_some() => MediaState::Writable,
                        _ => MediaState::New,
                    };
                    (s, "tapectl media undamaged")
                }
            };
            cat.set_state(
                barcode,
                to,
                &MediaChange {
                    why,
                    actor,
                    at: jiff::Timestamp::now(),
                },
            )?;
            out.value(
                &serde_json::json!({ "barcode": barcode, "state": to }),
                &format!("{barcode} is {}", to.as_str()),
            )
        }
        MediaCmd::Expire { dry_run, at } => {
            let now = at.unwrap_or_else(jiff::Timestamp::now);
            let facts = cat.set_facts()?;
            let retention = |pool: &str| {
                cfg.tape
                    .pools
                    .iter()
                    .find(|p| p.name == pool)
                    .and_then(|p| p.retention)
            };
            let ids = tapectl::expiry::expiring(&facts, &retention, now);
            let mut expired: HashSet<i64> =
                facts.iter().filter(|f| f.expired).map(|f| f.id).collect();
            expired.extend(ids.iter().copied());
            let tapes: Vec<String> =
                tapectl::expiry::reusable_tapes(&cat.sets_by_tape()?, &expired)
                    .into_iter()
                    .filter(|b| {
                        cat.media(b).ok().flatten().is_some_and(|m| {
                            matches!(m.state, MediaState::Writable | MediaState::Full)
                        })
                    })
                    .collect();
            let sets: Vec<_> = ids
                .iter()
                .map(|id| cat.set_by_id(*id))
                .collect::<Result<_>>()?;
            if !dry_run {
                cat.expire_sets(&ids)?;
                for b in &tapes {
                    cat.set_state(
                        b,
                        MediaState::Expired,
                        &MediaChange {
                            why: "every set on it has expired",
                            actor: "tapectl media expire",
                            at: jiff::Timestamp::now(),
                        },
                    )?;
                }
            }
            let verb = if *dry_run { "would expire" } else { "expired" };
            let mut human = format!(
                "{verb} {} set(s); {} tape(s) {} written anew",
                sets.len(),
                tapes.len(),
                if *dry_run {
                    "could then be"
                } else {
                    "may now be"
                }
            );
            for s in &sets {
                human.push_str(&format!(
                    "\n  set {}  {} {} ({})",
                    &s.uuid[..8.min(s.uuid.len())],
                    s.job,
                    s.snapshot,
                    s.kind.as_str()
                ));
            }
            if !tapes.is_empty() {
                human.push_str(&format!("\n  tapes: {}", tapes.join(", ")));
            }
            out.value(
                &serde_json::json!({ "dry_run": dry_run, "sets": sets, "tapes": tapes }),
                &human,
            )
        }
        MediaCmd::History { barcode } => {
            let h = cat.history(barcode)?;
            if h.is_empty() && cat.media(barcode)?.is_none() {
                bail!("no cartridge {barcode} in the tape catalog (see `tapectl media list`)");
            }
            let human = h
                .iter()
                .map(|r| {
                    format!(
                        "{}  {:<8} {} -> {}  ({}; {})",
                        r.at,
                        r.what,
                        r.old.as_deref().unwrap_or("-"),
                        r.new.as_deref().unwrap_or("-"),
                        r.why,
                        r.actor
                    )
                })
                .collect::<Vec<_>>()
                .join("\n");
            out.value(&h, &human)
        }
    }
}
