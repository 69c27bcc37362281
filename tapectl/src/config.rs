//! The `[library]` table of rackvault.toml (shared with backupd): which transport reaches the library
//! and where. Every error names file:line:col.

use std::ops::Range;
use std::path::{Path, PathBuf};

use common::config::{ConfigError, ConfigFile};
use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LibraryConfig {
    /// The virtual TS3200 in a directory (the embedded default: no root, no hardware).
    Virtual { dir: PathBuf },
    /// Linux SCSI generic nodes. Empty `changer`/`drives` mean: discover by device type.
    /// Entries are /dev/sgN paths, /dev/tape/by-id links, or `serial:<serial>`.
    Sgio {
        changer: Option<String>,
        drives: Vec<String>,
    },
    /// An iSCSI target: one LUN for the changer, one per drive.
    Iscsi {
        url: String,
        changer_lun: u16,
        drive_luns: Vec<u16>,
        initiator: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub library: LibraryConfig,
    /// Where per-device lock files live.
    pub lock_dir: PathBuf,
}

#[derive(Deserialize)]
struct RawFile {
    library: Option<Spanned<RawLibrary>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLibrary {
    transport: Spanned<String>,
    dir: Option<Spanned<String>>,
    changer: Option<Spanned<String>>,
    drives: Option<Spanned<Vec<String>>>,
    url: Option<Spanned<String>>,
    changer_lun: Option<Spanned<u16>>,
    drive_luns: Option<Spanned<Vec<u16>>>,
    initiator: Option<Spanned<String>>,
    lock_dir: Option<Spanned<String>>,
}

pub const DEFAULT_INITIATOR: &str = "iqn.2024-01.org.rackvault:tapectl";

/// The embedded default: a virtual library under the user's state directory.
pub fn default_vtl_dir() -> PathBuf {
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("rackvault/vtl")
}

/// Lock files go to $RACKVAULT_LOCK_DIR, else /run/lock/rackvault when writable (root, a service), else
/// the user's runtime dir.
pub fn default_lock_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("RACKVAULT_LOCK_DIR") {
        return PathBuf::from(d);
    }
    let run = Path::new("/run/lock");
    // SAFETY: access(2) with a valid NUL-terminated path only reads.
    let writable = unsafe { libc::access(c"/run/lock".as_ptr(), libc::W_OK) == 0 };
    if run.is_dir() && writable {
        return run.join("rackvault");
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) => PathBuf::from(d).join("rackvault/locks"),
        None => {
            std::env::temp_dir().join(format!("rackvault-locks-{}", unsafe { libc::geteuid() }))
        }
    }
}

impl Settings {
    pub fn embedded_default() -> Settings {
        Settings {
            library: LibraryConfig::Virtual {
                dir: default_vtl_dir(),
            },
            lock_dir: default_lock_dir(),
        }
    }

    pub fn load(path: &Path) -> Result<Settings, ConfigError> {
        Self::from_file(&ConfigFile::load(path)?)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Settings, ConfigError> {
        Self::from_file(&ConfigFile::new(text, path))
    }

    /// Parses the `[library]` table of a rackvault.toml; other tables belong to other parts. A file
    /// without `[library]` gives the embedded default. Relative paths resolve against the file's directory.
    pub fn from_file(cf: &ConfigFile) -> Result<Settings, ConfigError> {
        let err_at = |span: Option<Range<usize>>, msg: String| cf.error(span, msg);
        let raw: RawFile = cf.tables()?;
        let Some(lib) = raw.library else {
            return Ok(Self::embedded_default());
        };
        let lib_span = lib.span();
        let r = lib.into_inner();
        let resolve = |p: &str| cf.resolve(p);
        let kind = r.transport.get_ref().as_str();
        let not_for = |fields: &[(&str, Option<Range<usize>>)]| -> Result<(), ConfigError> {
            match fields.iter().find(|(_, s)| s.is_some()) {
                Some((f, s)) => Err(err_at(
                    s.clone(),
                    format!("[library] `{f}` does not apply to transport = \"{kind}\""),
                )),
                None => Ok(()),
            }
        };
        let span = |o: &Option<Spanned<String>>| o.as_ref().map(|s| s.span());
        let library = match kind {
            "virtual" => {
                not_for(&[
                    ("changer", span(&r.changer)),
                    ("drives", r.drives.as_ref().map(|s| s.span())),
                    ("url", span(&r.url)),
                    ("changer_lun", r.changer_lun.as_ref().map(|s| s.span())),
                    ("drive_luns", r.drive_luns.as_ref().map(|s| s.span())),
                    ("initiator", span(&r.initiator)),
                ])?;
                let dir = match &r.dir {
                    Some(d) if d.get_ref().is_empty() => {
                        return Err(err_at(Some(d.span()), "[library] dir is empty".into()));
                    }
                    Some(d) => resolve(d.get_ref()),
                    None => default_vtl_dir(),
                };
                LibraryConfig::Virtual { dir }
            }
            "sgio" => {
                not_for(&[
                    ("dir", span(&r.dir)),
                    ("url", span(&r.url)),
                    ("changer_lun", r.changer_lun.as_ref().map(|s| s.span())),
                    ("drive_luns", r.drive_luns.as_ref().map(|s| s.span())),
                    ("initiator", span(&r.initiator)),
                ])?;
                LibraryConfig::Sgio {
                    changer: r.changer.map(Spanned::into_inner),
                    drives: r.drives.map(Spanned::into_inner).unwrap_or_default(),
                }
            }
            "iscsi" => {
                not_for(&[
                    ("dir", span(&r.dir)),
                    ("changer", span(&r.changer)),
                    ("drives", r.drives.as_ref().map(|s| s.span())),
                ])?;
                let url = r.url.ok_or_else(|| {
                    err_at(
                        Some(lib_span.clone()),
                        "[library] transport = \"iscsi\" needs `url` (iscsi://HOST[:PORT]/IQN)"
                            .into(),
                    )
                })?;
                if !url.get_ref().starts_with("iscsi://") {
                    return Err(err_at(
                        Some(url.span()),
                        format!("[library] url {:?} must start with iscsi://", url.get_ref()),
                    ));
                }
                let changer_lun = r.changer_lun.ok_or_else(|| {
                    err_at(
                        Some(lib_span.clone()),
                        "[library] transport = \"iscsi\" needs `changer_lun`".into(),
                    )
                })?;
                let drive_luns = r.drive_luns.ok_or_else(|| {
                    err_at(
                        Some(lib_span.clone()),
                        "[library] transport = \"iscsi\" needs `drive_luns`".into(),
                    )
                })?;
                LibraryConfig::Iscsi {
                    url: url.into_inner().trim_end_matches('/').to_string(),
                    changer_lun: changer_lun.into_inner(),
                    drive_luns: drive_luns.into_inner(),
                    initiator: r
                        .initiator
                        .map(Spanned::into_inner)
                        .unwrap_or_else(|| DEFAULT_INITIATOR.into()),
                }
            }
            other => {
                return Err(err_at(
                    Some(r.transport.span()),
                    format!(
                        "unknown [library] transport {other:?} (use \"virtual\", \"sgio\" or \"iscsi\")"
                    ),
                ));
            }
        };
        let lock_dir = r
            .lock_dir
            .map(|d| resolve(d.get_ref()))
            .unwrap_or_else(default_lock_dir);
        Ok(Settings { library, lock_dir })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(t: &str) -> Result<Settings, ConfigError> {
        Settings::parse(t, Path::new("/etc/rackvault/rackvault.toml"))
    }

    #[test]
    fn transports_parse() {
        let s = parse("[store]\nkind='dir'\n[library]\ntransport = \"virtual\"\ndir = \"vtl\"\n")
            .unwrap();
        assert_eq!(
            s.library,
            LibraryConfig::Virtual {
                dir: "/etc/rackvault/vtl".into()
            }
        );
        let s = parse("[library]\ntransport = \"sgio\"\ndrives = [\"serial:10WT1\"]\n").unwrap();
        assert_eq!(
            s.library,
            LibraryConfig::Sgio {
                changer: None,
                drives: vec!["serial:10WT1".into()]
            }
        );
        let s = parse("[library]\ntransport='iscsi'\nurl='iscsi://127.0.0.1:3260/iqn.x:vtl/'\nchanger_lun=3\ndrive_luns=[1,2]\n").unwrap();
        assert_eq!(
            s.library,
            LibraryConfig::Iscsi {
                url: "iscsi://127.0.0.1:3260/iqn.x:vtl".into(),
                changer_lun: 3,
                drive_luns: vec![1, 2],
                initiator: DEFAULT_INITIATOR.into()
            }
        );
        assert!(matches!(
            parse("x = 1\n").unwrap().library,
            LibraryConfig::Virtual { .. }
        ));
    }

    #[test]
    fn errors_point_at_the_line() {
        let e = parse("[library]\ntransport = \"sgio\"\ndir = \"x\"\n").unwrap_err();
        assert_eq!((e.line, e.col), (3, 7), "{e}");
        assert!(e.msg.contains("`dir` does not apply"), "{e}");
        let e = parse("[library]\ntransport = \"fc\"\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.msg.contains("unknown [library] transport \"fc\""), "{e}");
        let e = parse("[library]\ntransport = \"iscsi\"\nurl = \"http://x\"\n").unwrap_err();
        assert!(e.msg.contains("must start with iscsi://"), "{e}");
        let e = parse("[library]\ntransport = \"virtual\"\nbogus = 1\n").unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
        assert_eq!(e.line, 3);
    }
}
