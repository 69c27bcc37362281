//! The tape side's own tables of rackvault.toml: `[[pool]]` (which cartridges a set may be written
//! to) and `[tape]` (how sets are written). Every error names file:line:col.

use common::config::{ConfigError, ConfigFile};
use globset::{Glob, GlobMatcher};
use serde::Deserialize;
use toml::Spanned;

/// A named group of cartridges, chosen by barcode.
#[derive(Debug, Clone)]
pub struct Pool {
    pub name: String,
    /// Barcode patterns (`*`, `?`, `[A-F]`), e.g. `RV00[0-4]?L6`.
    pub barcodes: Vec<String>,
    pub allocation: Allocation,
    /// How long its sets are kept; `None`: for ever (nothing expires).
    pub retention: Option<crate::expiry::Retention>,
    /// Its tapes are encrypted by the drive with this key (docs/encryption.md); `None`: plain LTFS.
    pub encryption: Option<Encryption>,
    matchers: Vec<GlobMatcher>,
}

/// A pool's `encryption = { key_file = "…" }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encryption {
    /// The key file (`tapectl key create FILE`), resolved against the configuration's directory.
    pub key_file: std::path::PathBuf,
}

/// Where a new set starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allocation {
    /// On the pool's current (writable) tape, after the sets it holds: tapes fill up.
    Continue,
    /// On a tape of its own: a set's tapes hold that set alone (they can go offsite or be reused
    /// with it).
    New,
}

impl Pool {
    pub fn new(name: &str, barcodes: &[String]) -> Result<Pool, String> {
        let matchers = barcodes
            .iter()
            .map(|b| {
                Glob::new(b)
                    .map(|g| g.compile_matcher())
                    .map_err(|e| format!("barcode pattern {b:?}: {}", e.kind()))
            })
            .collect::<Result<_, _>>()?;
        Ok(Pool {
            name: name.to_string(),
            barcodes: barcodes.to_vec(),
            allocation: Allocation::Continue,
            retention: None,
            encryption: None,
            matchers,
        })
    }

    pub fn holds(&self, barcode: &str) -> bool {
        self.matchers.iter().any(|m| m.is_match(barcode))
    }
}

#[derive(Debug, Clone)]
pub struct TapeSettings {
    pub pools: Vec<Pool>,
    /// Bytes read ahead of the drives while a set is written.
    pub buffer_bytes: u64,
    /// `[rotation]`: vaults and what goes to them.
    pub rotation: crate::rotation::Policy,
    /// `[tape] keys_dir`: where a key is looked for by fingerprint when a tape needs one (besides
    /// the pools' key files).
    pub keys_dir: Option<std::path::PathBuf>,
}

pub const DEFAULT_POOL: &str = "default";
pub const DEFAULT_BUFFER_MB: u64 = 256;
pub const DEFAULT_TRANSIT_DAYS: i64 = 3;

impl Default for TapeSettings {
    /// Without `[[pool]]`: one pool, `default`, of every cartridge.
    fn default() -> Self {
        TapeSettings {
            pools: vec![Pool::new(DEFAULT_POOL, &["*".to_string()]).expect("valid pattern")],
            buffer_bytes: DEFAULT_BUFFER_MB << 20,
            rotation: crate::rotation::Policy {
                transit: jiff::SignedDuration::from_hours(24 * DEFAULT_TRANSIT_DAYS),
                ..Default::default()
            },
            keys_dir: None,
        }
    }
}

#[derive(Deserialize)]
struct RawFile {
    #[serde(default)]
    pool: Vec<RawPool>,
    tape: Option<Spanned<RawTape>>,
    rotation: Option<Spanned<RawRotation>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRotation {
    #[serde(default)]
    vaults: Vec<Spanned<String>>,
    #[serde(default)]
    offsite: Vec<Spanned<RawOffsite>>,
    keep_offsite_fulls: Option<Spanned<i64>>,
    transit_days: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOffsite {
    kind: Spanned<String>,
    copy: Spanned<i64>,
    vault: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPool {
    name: Spanned<String>,
    barcodes: Spanned<Vec<String>>,
    allocation: Option<Spanned<String>>,
    retention: Option<Spanned<RawRetention>>,
    encryption: Option<Spanned<RawEncryption>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEncryption {
    key_file: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetention {
    full_days: Spanned<i64>,
    incremental_days: Spanned<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTape {
    buffer_mb: Option<Spanned<i64>>,
    keys_dir: Option<Spanned<String>>,
}

impl TapeSettings {
    pub fn from_file(cf: &ConfigFile) -> Result<TapeSettings, ConfigError> {
        let raw: RawFile = cf.tables()?;
        let mut s = TapeSettings::default();
        if !raw.pool.is_empty() {
            s.pools.clear();
        }
        for p in raw.pool {
            let name = p.name.get_ref();
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(cf.error(
                    Some(p.name.span()),
                    format!("pool name {name:?} must be letters, digits, '-' or '_'"),
                ));
            }
            if s.pools.iter().any(|q| &q.name == name) {
                return Err(cf.error(
                    Some(p.name.span()),
                    format!("pool {name:?} is defined twice"),
                ));
            }
            if p.barcodes.get_ref().is_empty() {
                return Err(cf.error(
                    Some(p.barcodes.span()),
                    format!("pool {name:?} has no barcode patterns (e.g. barcodes = [\"RV00*\"])"),
                ));
            }
            let mut pool = Pool::new(name, p.barcodes.get_ref())
                .map_err(|e| cf.error(Some(p.barcodes.span()), format!("pool {name:?}: {e}")))?;
            if let Some(r) = &p.retention {
                let r = r.get_ref();
                let days = |v: &Spanned<i64>, what: &str| {
                    let d = *v.get_ref();
                    if !(0..=36_500).contains(&d) {
                        return Err(cf.error(
                            Some(v.span()),
                            format!(
                                "pool {name:?}: retention.{what} must be 0 to 36500 days; found {d}"
                            ),
                        ));
                    }
                    Ok(jiff::SignedDuration::from_hours(24 * d))
                };
                pool.retention = Some(crate::expiry::Retention {
                    full: days(&r.full_days, "full_days")?,
                    incremental: days(&r.incremental_days, "incremental_days")?,
                });
            }
            if let Some(e) = &p.encryption {
                let f = e.get_ref().key_file.get_ref();
                if f.is_empty() {
                    return Err(cf.error(
                        Some(e.get_ref().key_file.span()),
                        format!(
                            "pool {name:?}: encryption.key_file is empty; give the key file `tapectl key create FILE` made"
                        ),
                    ));
                }
                pool.encryption = Some(Encryption {
                    key_file: cf.resolve(f),
                });
            }
            if let Some(a) = &p.allocation {
                pool.allocation = match a.get_ref().as_str() {
                    "continue" => Allocation::Continue,
                    "new" => Allocation::New,
                    other => {
                        return Err(cf.error(
                            Some(a.span()),
                            format!(
                                "pool {name:?}: allocation {other:?} is not \"continue\" (the current tape) or \"new\" (a tape per set)"
                            ),
                        ));
                    }
                };
            }
            s.pools.push(pool);
        }
        if let Some(r) = raw.rotation {
            let r = r.into_inner();
            let policy = &mut s.rotation;
            for v in &r.vaults {
                let name = v.get_ref();
                if name.is_empty()
                    || !name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
                {
                    return Err(cf.error(
                        Some(v.span()),
                        format!("vault name {name:?} must be letters, digits, '-', '_' or '.'"),
                    ));
                }
                if policy.vaults.contains(name) {
                    return Err(cf.error(Some(v.span()), format!("vault {name:?} is named twice")));
                }
                policy.vaults.push(name.clone());
            }
            for o in &r.offsite {
                let o = o.get_ref();
                let kind = match o.kind.get_ref().as_str() {
                    "full" => crate::sets::layout::SetKind::Full,
                    "incremental" => crate::sets::layout::SetKind::Incremental,
                    k => {
                        return Err(cf.error(
                            Some(o.kind.span()),
                            format!("offsite kind {k:?} is not \"full\" or \"incremental\""),
                        ));
                    }
                };
                let copy = *o.copy.get_ref();
                if !(1..=16).contains(&copy) {
                    return Err(cf.error(
                        Some(o.copy.span()),
                        format!("offsite copy must be 1 to 16; found {copy}"),
                    ));
                }
                if !policy.vaults.contains(o.vault.get_ref()) {
                    return Err(cf.error(
                        Some(o.vault.span()),
                        format!(
                            "vault {:?} is not in [rotation] vaults ({})",
                            o.vault.get_ref(),
                            policy.vaults.join(", ")
                        ),
                    ));
                }
                policy.offsite.push(crate::rotation::OffsiteRule {
                    kind,
                    copy: copy as u32,
                    vault: o.vault.get_ref().clone(),
                });
            }
            if let Some(k) = &r.keep_offsite_fulls {
                let v = *k.get_ref();
                if !(0..=1000).contains(&v) {
                    return Err(cf.error(
                        Some(k.span()),
                        format!("keep_offsite_fulls must be 0 to 1000; found {v}"),
                    ));
                }
                policy.keep_offsite_fulls = v as u32;
            }
            if let Some(t) = &r.transit_days {
                let v = *t.get_ref();
                if !(1..=365).contains(&v) {
                    return Err(cf.error(
                        Some(t.span()),
                        format!("transit_days must be 1 to 365; found {v}"),
                    ));
                }
                policy.transit = jiff::SignedDuration::from_hours(24 * v);
            }
        }
        if let Some(t) = raw.tape {
            let t = t.into_inner();
            if let Some(b) = t.buffer_mb {
                let v = *b.get_ref();
                if !(1..=65536).contains(&v) {
                    return Err(cf.error(
                        Some(b.span()),
                        format!("[tape] buffer_mb must be 1 to 65536; found {v}"),
                    ));
                }
                s.buffer_bytes = (v as u64) << 20;
            }
            if let Some(d) = &t.keys_dir {
                if d.get_ref().is_empty() {
                    return Err(cf.error(Some(d.span()), "[tape] keys_dir is empty".into()));
                }
                s.keys_dir = Some(cf.resolve(d.get_ref()));
            }
        }
        Ok(s)
    }

    /// Where keys are found by fingerprint: the encrypted pools' key files and `keys_dir`.
    pub fn keyring(&self) -> crate::keys::Keyring {
        crate::keys::Keyring {
            files: self
                .pools
                .iter()
                .filter_map(|p| p.encryption.as_ref().map(|e| e.key_file.clone()))
                .collect(),
            dir: self.keys_dir.clone(),
        }
    }

    /// The pool a set goes to: the one named, or the only one.
    pub fn pool(&self, name: Option<&str>) -> anyhow::Result<&Pool> {
        match name {
            Some(n) => self.pools.iter().find(|p| p.name == n).ok_or_else(|| {
                anyhow::anyhow!(
                    "no pool {n:?} in the configuration (pools: {})",
                    self.pools
                        .iter()
                        .map(|p| p.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }),
            None if self.pools.len() == 1 => Ok(&self.pools[0]),
            None => anyhow::bail!(
                "give --pool: the configuration has {} pools ({})",
                self.pools.len(),
                self.pools
                    .iter()
                    .map(|p| p.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn parse(t: &str) -> Result<TapeSettings, ConfigError> {
        TapeSettings::from_file(&ConfigFile::new(t, Path::new("rackvault.toml")))
    }

    #[test]
    fn pools_parse_and_errors_point_at_the_line() {
        let s = parse(
            "[[pool]]\nname = \"weekly\"\nbarcodes = [\"RV00[0-4]?L6\"]\n[tape]\nbuffer_mb = 64\n",
        )
        .unwrap();
        assert_eq!(s.pools.len(), 1);
        assert!(s.pools[0].holds("RV0001L6"));
        assert!(!s.pools[0].holds("RV0051L6"));
        assert_eq!(s.buffer_bytes, 64 << 20);
        assert_eq!(TapeSettings::default().pool(None).unwrap().name, "default");
        let e = parse("[[pool]]\nname = \"a b\"\nbarcodes = [\"x\"]\n").unwrap_err();
        assert!(e.to_string().contains("rackvault.toml:2"), "{e}");
        let r = parse("[rotation]\nvaults = [\"parents-house\"]\noffsite = [{ kind = \"full\", copy = 2, vault = \"parents-house\" }]\nkeep_offsite_fulls = 1\n").unwrap();
        assert_eq!(r.rotation.offsite[0].copy, 2);
        assert_eq!(r.rotation.transit, jiff::SignedDuration::from_hours(72));
        let e = parse("[rotation]\nvaults = [\"a\"]\noffsite = [{ kind = \"full\", copy = 2, vault = \"b\" }]\n").unwrap_err();
        assert!(
            e.to_string()
                .contains("vault \"b\" is not in [rotation] vaults (a)"),
            "{e}"
        );
        let e = parse("[tape]\nbuffer_mb = 0\n").unwrap_err();
        assert!(e.to_string().contains("buffer_mb must be"), "{e}");
        let e = parse("[[pool]]\nname = \"p\"\nbarcodes = []\n").unwrap_err();
        assert!(e.to_string().contains("no barcode patterns"), "{e}");
        let s = parse("[[pool]]\nname = \"offsite\"\nbarcodes = [\"OFF*\"]\nencryption = { key_file = \"keys/offsite.key\" }\n[[pool]]\nname = \"plain\"\nbarcodes = [\"RV*\"]\n[tape]\nkeys_dir = \"/etc/rackvault/tape-keys\"\n").unwrap();
        assert!(
            s.pools[0]
                .encryption
                .as_ref()
                .unwrap()
                .key_file
                .ends_with("keys/offsite.key")
        );
        assert!(s.pools[1].encryption.is_none());
        let ring = s.keyring();
        assert_eq!(ring.files.len(), 1);
        assert_eq!(
            ring.dir.as_deref(),
            Some(Path::new("/etc/rackvault/tape-keys"))
        );
        let e =
            parse("[[pool]]\nname = \"p\"\nbarcodes = [\"x\"]\nencryption = { key = \"00\" }\n")
                .unwrap_err();
        assert!(e.to_string().contains("rackvault.toml:4"), "{e}");
        let e =
            parse("[[pool]]\nname = \"p\"\nbarcodes = [\"x\"]\nencryption = { key_file = \"\" }\n")
                .unwrap_err();
        assert!(
            e.to_string().contains("encryption.key_file is empty"),
            "{e}"
        );
    }
}
