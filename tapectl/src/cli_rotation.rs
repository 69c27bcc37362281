//! `tapectl rotation …`: what goes offsite, what is on its way, what comes back; the moves through
//! the import/export door, and a person's word that tapes reached a vault.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::Subcommand;

use tapectl::catalog::{Location, MediaChange, TapeCatalog};
use tapectl::library::Library;
use tapectl::rotation::{Plan, of_catalog};
use tapectl::sets::allocate::reconcile;

use crate::cli_set::SetConfig;
use crate::output::Out;

#[derive(Subcommand)]
pub enum RotationCmd {
    /// What goes offsite now, what is in transit, what is due back, and what is overdue: lists to
    /// act on, grouped by vault.
    Plan,
    /// Move the tapes due offsite to the import/export slots, for the person who carries them;
    /// when the slots are full, wait for the door to be emptied (or stop and say so).
    Export {
        /// Only the tapes going to this vault.
        #[arg(long)]
        vault: Option<String>,
        /// Seconds to wait for the import/export slots to be emptied when they are full.
        #[arg(long, default_value_t = 0, value_name = "SECONDS")]
        wait_door: u64,
    },
    /// The person who carried them confirms the tapes reached the vault.
    Arrived {
        /// The vault (as named in [rotation] vaults).
        vault: String,
        /// The tapes that arrived.
        #[arg(required = true)]
        barcodes: Vec<String>,
    },
    /// The tapes to bring back (every set on them expired, or a restore needs them), marked in
    /// transit from their vault.
    Recall {
        /// Only list them; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

fn current_plan(cfg: &SetConfig, cat: &TapeCatalog) -> Result<Plan> {
    Ok(of_catalog(cat, &cfg.tape.rotation, jiff::Timestamp::now())?.2)
}

fn plan_human(p: &Plan) -> String {
    let mut s = String::new();
    let group =
        |s: &mut String,
         title: &str,
         by_vault: &std::collections::BTreeMap<String, Vec<tapectl::rotation::Move>>| {
            for (v, moves) in by_vault {
                s.push_str(&format!("{title} {v}:\n"));
                for m in moves {
                    s.push_str(&format!(
                        "  {}  {}{}\n",
                        m.barcode,
                        m.why,
                        if m.overdue { "  OVERDUE" } else { "" }
                    ));
                }
            }
        };
    group(&mut s, "to take to", &p.export);
    if !p.in_transit.is_empty() {
        s.push_str("in transit:\n");
        for m in &p.in_transit {
            s.push_str(&format!(
                "  {}  {}{}\n",
                m.barcode,
                m.why,
                if m.overdue { "  OVERDUE" } else { "" }
            ));
        }
    }
    group(&mut s, "to bring back from", &p.recall);
    s.push_str(&format!("full sets offsite: {}\n", p.offsite_fulls));
    for a in &p.alerts {
        s.push_str(&format!("alert: {a}\n"));
    }
    s.trim_end().to_string()
}

pub fn rotation_cmd(
    out: &Out,
    cfg: &SetConfig,
    cmd: &RotationCmd,
    open: &dyn Fn() -> Result<Library>,
) -> Result<()> {
    let cat = TapeCatalog::open(&cfg.shared.state_dir)?;
    match cmd {
        RotationCmd::Plan => {
            if let Ok(mut lib) = open() {
                reconcile(&cat, &lib.inventory()?, "tapectl rotation plan")?;
            }
            let p = current_plan(cfg, &cat)?;
            out.value(&p, &plan_human(&p))
        }
        RotationCmd::Export { vault, wait_door } => {
            if let Some(v) = vault
                && !cfg.tape.rotation.vaults.contains(v)
            {
                bail!(
                    "no vault {v:?} in [rotation] vaults ({})",
                    cfg.tape.rotation.vaults.join(", ")
                );
            }
            let mut lib = open()?;
            reconcile(&cat, &lib.inventory()?, "tapectl rotation export")?;
            let p = current_plan(cfg, &cat)?;
            let due: Vec<_> = p
                .export
                .iter()
                .filter(|(v, _)| vault.as_ref().is_none_or(|w| w == *v))
                .flat_map(|(_, m)| m.iter().cloned())
                .collect();
            let mut moved = Vec::new();
            for m in &due {
                let started = Instant::now();
                loop {
                    match lib.export(&m.barcode) {
                        Ok(_) => break,
                        Err(e) if e.to_string().contains("every import/export slot is full") => {
                            if started.elapsed() >= Duration::from_secs(*wait_door) {
                                let left: Vec<&str> = due[moved.len()..]
                                    .iter()
                                    .map(|m| m.barcode.as_str())
                                    .collect();
                                reconcile(&cat, &lib.inventory()?, "tapectl rotation export")?;
                                bail!(
                                    "the import/export slots are full; take the tapes out of the door, then run `tapectl rotation export` again ({} left: {}), or pass --wait-door SECONDS",
                                    left.len(),
                                    left.join(", ")
                                );
                            }
                            // The person empties the door; what left is recorded on the way.
                            reconcile(&cat, &lib.inventory()?, "tapectl rotation export")?;
                            std::thread::sleep(Duration::from_millis(500));
                        }
                        Err(e) => return Err(e),
                    }
                }
                cat.set_destination(&m.barcode, Some(&m.vault))?;
                reconcile(&cat, &lib.inventory()?, "tapectl rotation export")?;
                moved.push(m.clone());
            }
            let mut human = format!(
                "{} tape(s) in the import/export slots for their vaults",
                moved.len()
            );
            for m in &moved {
                human.push_str(&format!("\n  {} to {} ({})", m.barcode, m.vault, m.why));
            }
            out.value(&moved, &human)
        }
        RotationCmd::Arrived { vault, barcodes } => {
            if !cfg.tape.rotation.vaults.contains(vault) {
                bail!(
                    "no vault {vault:?} in [rotation] vaults ({})",
                    cfg.tape.rotation.vaults.join(", ")
                );
            }
            for b in barcodes {
                let Some(m) = cat.media(b)? else {
                    bail!("no cartridge {b} in the tape catalog");
                };
                if m.location.onsite() {
                    bail!(
                        "{b} is in the library ({}); it cannot have reached {vault}",
                        m.location
                    );
                }
            }
            let why = format!("arrived at {vault}, as the person who carried it says");
            for b in barcodes {
                cat.set_location(
                    b,
                    &Location::Vault(vault.clone()),
                    &MediaChange {
                        why: &why,
                        actor: "tapectl rotation arrived",
                        at: jiff::Timestamp::now(),
                    },
                )?;
                cat.set_destination(b, None)?;
            }
            out.value(barcodes, &format!("{} tape(s) at {vault}", barcodes.len()))
        }
        RotationCmd::Recall { dry_run } => {
            let p = current_plan(cfg, &cat)?;
            if !dry_run {
                for (v, moves) in &p.recall {
                    for m in moves {
                        let why = format!("recalled from {v}: {}", m.why);
                        cat.set_location(
                            &m.barcode,
                            &Location::InTransitFrom(v.clone()),
                            &MediaChange {
                                why: &why,
                                actor: "tapectl rotation recall",
                                at: jiff::Timestamp::now(),
                            },
                        )?;
                    }
                }
            }
            let mut human = String::new();
            for (v, moves) in &p.recall {
                human.push_str(&format!("to bring back from {v}:\n"));
                for m in moves {
                    human.push_str(&format!("  {}  {}\n", m.barcode, m.why));
                }
            }
            if human.is_empty() {
                human = "nothing to bring back".into();
            } else if !dry_run {
                human.push_str("put them into the import/export door, then run `tapectl import`");
            }
            out.value(&p.recall, human.trim_end())
        }
    }
}
