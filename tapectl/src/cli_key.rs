//! `tapectl key`: tape encryption key files (docs/encryption.md).

use std::path::PathBuf;

use anyhow::Result;
use clap::Subcommand;

use crate::output::Out;

#[derive(Subcommand, Debug)]
pub enum KeyCmd {
    /// Make a new key file (32 random bytes, mode 0600) and print its fingerprint. An existing
    /// file is never replaced.
    Create {
        /// The key file to write, e.g. /etc/rackvault/tape-keys/offsite.key.
        file: PathBuf,
    },
    /// Print a key file's fingerprint and its key slip: the page to print and keep away from the
    /// tapes (it holds the key). With --json, the fingerprint only.
    Show {
        /// The key file.
        file: PathBuf,
    },
}

#[derive(serde::Serialize)]
struct KeyInfo {
    file: String,
    fingerprint: tapectl::keys::Fingerprint,
    created: Option<String>,
}

pub fn key_cmd(out: &Out, cmd: &KeyCmd) -> Result<()> {
    let (k, human) = match cmd {
        KeyCmd::Create { file } => {
            let k = tapectl::keys::create_key_file(file, jiff::Timestamp::now())?;
            let h = format!(
                "created tape key {} in {}\nprint its key slip with `tapectl key show {}` and keep it away from the tapes",
                k.fingerprint,
                file.display(),
                file.display()
            );
            (k, h)
        }
        KeyCmd::Show { file } => {
            let k = tapectl::keys::read_key_file(file)?;
            let h = tapectl::keys::slip(&k);
            (k, h)
        }
    };
    out.value(
        &KeyInfo {
            file: k.path.display().to_string(),
            fingerprint: k.fingerprint,
            created: k.created.clone(),
        },
        human.trim_end(),
    )
}
