//! Tape encryption keys: key files, their fingerprints, the printable key slip, and finding a key by
//! fingerprint (docs/encryption.md).
//!
//! A key is 32 random bytes (AES-256), kept in a small text file outside the catalog. Its
//! **fingerprint** (9 bytes, shown as `3f:a1:…`) names it everywhere else: in the catalog, in each
//! tape's self-description, in messages, and on the tape itself, where each encrypted block carries
//! the drive KAD `RVK` + fingerprint (12 bytes: IBM LTFS's DKi format, 3 ASCII characters and 9
//! bytes). The key itself is never logged, never in the catalog, never in `--json` output and never
//! in an error message: [`TapeKey`] has no `Debug` or `Serialize`, and its bytes are wiped when it
//! is dropped.
//!
//! The key file (`tapectl key create FILE` writes one, mode 0600):
//!
//! ```text
//! # rackvault tape key (AES-256). Secret: ...
//! # fingerprint 3f:a1:09:bc:77:d2:0e:11:4a
//! # created 2026-12-07T03:00:00Z
//! key 1: 3fa1 09bc 77d2 0e11 4a4a 0000 1111 2222 (check 5c)
//! key 2: ....                                     (check 9e)
//! ```
//!
//! Lines starting with `#` are comments. Each `key N:` line holds 16 bytes as 32 hex digits (spaces
//! anywhere); `(check XX)` is optional and, when present, must match: it finds a typing error in a
//! key recreated from its printed slip. The fingerprint line is informative: the fingerprint is
//! always computed from the key.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

pub const KEY_LEN: usize = 32;
pub const FINGERPRINT_LEN: usize = 9;
/// The KAD prefix: with the 9 fingerprint bytes, a 12-byte IBM LTFS DKi.
pub const KAD_PREFIX: &[u8; 3] = b"RVK";
const FINGERPRINT_CONTEXT: &str = "rackvault 2026-12 tape encryption key fingerprint";
const CHECK_CONTEXT: &str = "rackvault 2026-12 tape key slip line check";

/// A key's name: the first 9 bytes of BLAKE3 in key-derivation mode over the key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(pub [u8; FINGERPRINT_LEN]);

impl Fingerprint {
    pub fn of(key: &[u8; KEY_LEN]) -> Fingerprint {
        let h = blake3::derive_key(FINGERPRINT_CONTEXT, key);
        let mut f = [0u8; FINGERPRINT_LEN];
        f.copy_from_slice(&h[..FINGERPRINT_LEN]);
        Fingerprint(f)
    }

    /// The KAD the drive stores with every block: `RVK` + the fingerprint.
    pub fn kad(&self) -> [u8; 12] {
        let mut k = [0u8; 12];
        k[..3].copy_from_slice(KAD_PREFIX);
        k[3..].copy_from_slice(&self.0);
        k
    }

    /// The fingerprint a KAD names, when it is one of rackvault's.
    pub fn from_kad(kad: &[u8]) -> Option<Fingerprint> {
        if kad.len() != 12 || &kad[..3] != KAD_PREFIX {
            return None;
        }
        let mut f = [0u8; FINGERPRINT_LEN];
        f.copy_from_slice(&kad[3..]);
        Some(Fingerprint(f))
    }

    /// Parses `3f:a1:…` (colons optional, any case).
    pub fn parse(s: &str) -> Option<Fingerprint> {
        let hex: String = s.chars().filter(|c| *c != ':').collect();
        let b = decode_hex(&hex)?;
        Some(Fingerprint(b.try_into().ok()?))
    }

    /// IBM LTFS's DKi for this key: `RVK` and 18 hex digits (its `kmi_dki` option).
    pub fn ibm_dki(&self) -> String {
        format!("RVK{}", hex(&self.0))
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|b| format!("{b:02x}")).collect();
        f.write_str(&parts.join(":"))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

impl serde::Serialize for Fingerprint {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A tape key read from its file. No `Debug`, no `Serialize`: it cannot reach a log or JSON.
pub struct TapeKey {
    key: [u8; KEY_LEN],
    pub fingerprint: Fingerprint,
    /// The `# created` line, when the file has one.
    pub created: Option<String>,
    pub path: PathBuf,
}

impl Drop for TapeKey {
    fn drop(&mut self) {
        for b in self.key.iter_mut() {
            // SAFETY: a volatile write to a byte we own, so the wipe is not optimised away.
            unsafe { std::ptr::write_volatile(b, 0) };
        }
    }
}

impl TapeKey {
    /// The key bytes, for the drive's SECURITY PROTOCOL OUT only.
    pub fn bytes(&self) -> &[u8; KEY_LEN] {
        &self.key
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    // Hex digits only (from_str_radix alone would take a sign).
    if !s.len().is_multiple_of(2) || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The check of slip line `n` (1 or 2) holding `bytes`: one byte, two hex digits.
fn line_check(n: usize, bytes: &[u8]) -> u8 {
    let mut h = blake3::Hasher::new_derive_key(CHECK_CONTEXT);
    h.update(&[n as u8]);
    h.update(bytes);
    h.finalize().as_bytes()[0]
}

/// The two `key N:` lines of a key file and of its slip.
fn key_lines(key: &[u8; KEY_LEN]) -> [String; 2] {
    [0, 1].map(|i| {
        let half = &key[i * 16..i * 16 + 16];
        let groups: Vec<String> = half.chunks(2).map(hex).collect();
        format!(
            "key {}: {} (check {:02x})",
            i + 1,
            groups.join(" "),
            line_check(i + 1, half)
        )
    })
}

/// The text of a key file.
fn file_text(key: &[u8; KEY_LEN], created: &str) -> String {
    let [l1, l2] = key_lines(key);
    format!(
        "# rackvault tape key (AES-256 for the tape drive's encryption). Secret: keep this file\n\
         # mode 0600, out of backups that go offsite with the tapes, and its printed slip\n\
         # (`tapectl key show FILE`) in a safe place away from the tapes. See docs/encryption.md.\n\
         # fingerprint {}\n\
         # created {created}\n\
         {l1}\n\
         {l2}\n",
        Fingerprint::of(key)
    )
}

/// Parses a key file's text. Errors name the file and line, never the key.
pub fn parse_key_text(text: &str, path: &Path) -> Result<TapeKey> {
    let mut key = Vec::with_capacity(KEY_LEN);
    let mut created = None;
    let mut lines_seen = 0;
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if let Some(c) = line.strip_prefix('#') {
            if let Some(v) = c.trim().strip_prefix("created ") {
                created = Some(v.trim().to_string());
            }
            continue;
        }
        if line.is_empty() {
            continue;
        }
        let at = format!("{}:{}", path.display(), i + 1);
        let Some(rest) = line.strip_prefix("key ") else {
            bail!("{at}: expected a `key N: …` line or a `#` comment");
        };
        let Some((n, rest)) = rest.split_once(':') else {
            bail!("{at}: expected `key N: ` before the hex digits");
        };
        let n: usize = match n.trim().parse() {
            Ok(n @ 1..=2) if n == lines_seen + 1 => n,
            _ => bail!("{at}: expected key line {}", lines_seen + 1),
        };
        let (digits, check) = match rest.split_once('(') {
            Some((d, c)) => (d, Some(c)),
            None => (rest, None),
        };
        let hexs: String = digits.chars().filter(|c| !c.is_whitespace()).collect();
        let Some(bytes) = decode_hex(&hexs).filter(|b| b.len() == 16) else {
            bail!(
                "{at}: key line {n} must be 32 hex digits (16 bytes); it has {} characters",
                hexs.len()
            );
        };
        if let Some(c) = check {
            let want = c
                .trim()
                .trim_end_matches(')')
                .trim()
                .strip_prefix("check")
                .map(str::trim)
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            match want {
                Some(w) if w == line_check(n, &bytes) => {}
                Some(_) => bail!(
                    "{at}: key line {n} does not match its check: a digit was mistyped (compare it with the key slip)"
                ),
                None => bail!("{at}: expected `(check XX)` after key line {n}"),
            }
        }
        key.extend_from_slice(&bytes);
        lines_seen = n;
    }
    if lines_seen != 2 {
        bail!(
            "{}: a key file has two lines `key 1: …` and `key 2: …`; found {lines_seen}",
            path.display()
        );
    }
    let mut k = [0u8; KEY_LEN];
    k.copy_from_slice(&key);
    key.iter_mut().for_each(|b| *b = 0);
    Ok(TapeKey {
        fingerprint: Fingerprint::of(&k),
        key: k,
        created,
        path: path.to_path_buf(),
    })
}

/// Reads a key file. A key file others can read is refused (its key may have leaked).
pub fn read_key_file(path: &Path) -> Result<TapeKey> {
    use std::os::unix::fs::PermissionsExt;
    let md = std::fs::metadata(path).with_context(|| {
        format!(
            "cannot read tape key file {} (create one with `tapectl key create FILE`, or recreate it from its key slip: docs/encryption.md)",
            path.display()
        )
    })?;
    if md.permissions().mode() & 0o077 != 0 {
        bail!(
            "tape key file {} can be read by others (mode {:o}); make it private with `chmod 600 {}`",
            path.display(),
            md.permissions().mode() & 0o777,
            path.display()
        );
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read tape key file {}", path.display()))?;
    parse_key_text(&text, path)
}

fn random_key() -> Result<[u8; KEY_LEN]> {
    let mut k = [0u8; KEY_LEN];
    let mut done = 0;
    while done < KEY_LEN {
        // SAFETY: getrandom writes at most the length we pass into the buffer we own.
        let n = unsafe { libc::getrandom(k[done..].as_mut_ptr().cast(), KEY_LEN - done, 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e).context("cannot get random bytes for a key");
        }
        done += n as usize;
    }
    Ok(k)
}

/// Writes a new key file (mode 0600, never over an existing file) and returns its key.
pub fn create_key_file(path: &Path, now: jiff::Timestamp) -> Result<TapeKey> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut key = random_key()?;
    let text = file_text(&key, &now.to_string());
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| {
            format!(
                "cannot create tape key file {} (an existing key file is never replaced)",
                path.display()
            )
        })?;
    if let Err(e) = f.write_all(text.as_bytes()).and_then(|()| f.sync_all()) {
        // A half-written key file would refuse every retry.
        drop(f);
        let _ = std::fs::remove_file(path);
        return Err(
            anyhow::Error::new(e).context(format!("cannot write tape key file {}", path.display()))
        );
    }
    let k = TapeKey {
        fingerprint: Fingerprint::of(&key),
        key,
        created: Some(now.to_string()),
        path: path.to_path_buf(),
    };
    key.iter_mut().for_each(|b| *b = 0);
    Ok(k)
}

/// The printable key slip: everything needed to read the tapes again with nothing but the slip.
pub fn slip(k: &TapeKey) -> String {
    use base64_lite::encode;
    let [l1, l2] = key_lines(&k.key);
    format!(
        "RACKVAULT TAPE KEY SLIP: SECRET. Store it away from the tapes (a safe, a bank box).\n\
         \n\
         fingerprint  {fp}\n\
         created      {created}\n\
         file         {path}\n\
         \n\
         {l1}\n\
         {l2}\n\
         \n\
         Every tape written with this key names it by the fingerprint above.\n\
         \n\
         To recreate the key file from this slip:\n\
         1. Type the two `key` lines above into a text file, e.g. /root/tape-key (the `(check ..)`\n\
            parts may be left out; with them, a mistyped line is found).\n\
         2. chmod 600 /root/tape-key\n\
         3. tapectl key show /root/tape-key  must print fingerprint {fp}.\n\
         4. Put the file where rackvault.toml's [tape] keys_dir or the pool's\n\
            encryption.key_file says, and restore (docs/encryption.md, \"Recovery\").\n\
         \n\
         Other LTFS readers (IBM LTFS, simple key manager):\n\
           -o kmi=simple -o kmi_dk={b64} -o kmi_dki={dki}\n",
        fp = k.fingerprint,
        created = k.created.as_deref().unwrap_or("unknown"),
        path = k.path.display(),
        b64 = encode(&k.key),
        dki = k.fingerprint.ibm_dki(),
    )
}

/// Standard base64 (with padding), for IBM LTFS's `kmi_dk`; small enough to keep here.
mod base64_lite {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    pub fn encode(b: &[u8]) -> String {
        let mut out = String::with_capacity(b.len().div_ceil(3) * 4);
        for c in b.chunks(3) {
            let n = (c[0] as u32) << 16
                | (*c.get(1).unwrap_or(&0) as u32) << 8
                | *c.get(2).unwrap_or(&0) as u32;
            for i in 0..4 {
                if i <= c.len() {
                    out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }
}

/// Where keys are found by fingerprint: the encrypted pools' key files, then every file in
/// `[tape] keys_dir`.
#[derive(Debug, Clone, Default)]
pub struct Keyring {
    pub files: Vec<PathBuf>,
    pub dir: Option<PathBuf>,
}

impl Keyring {
    /// The key whose fingerprint is `fp`, if a key file has it. Files that are not key files (or
    /// cannot be read) are passed over with a debug log naming the file.
    pub fn find(&self, fp: &Fingerprint) -> Option<TapeKey> {
        let mut paths = self.files.clone();
        if let Some(d) = &self.dir
            && let Ok(rd) = std::fs::read_dir(d)
        {
            let mut more: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
            more.sort();
            paths.extend(more.into_iter().filter(|p| p.is_file()));
        }
        for p in paths {
            match read_key_file(&p) {
                Ok(k) if k.fingerprint == *fp => return Some(k),
                Ok(_) => {}
                Err(e) => tracing::debug!(path = %p.display(), "not a usable key file: {e:#}"),
            }
        }
        None
    }

    /// What to do when a tape's key is not found: where to put its key file.
    pub fn missing(&self, barcode: &str, fp: &Fingerprint) -> String {
        let whereto = match &self.dir {
            Some(d) => format!("put its key file in {}", d.display()),
            None => {
                "put its key file in a directory and name it in rackvault.toml's [tape] keys_dir"
                    .to_string()
            }
        };
        format!(
            "tape {barcode} is encrypted with key {fp}, and no key file here has that key; {whereto} (recreate it from the key slip if it is lost: see docs/encryption.md)"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_round_trip_and_slip() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("k");
        let now: jiff::Timestamp = "2026-12-07T03:00:00Z".parse().unwrap();
        let k = create_key_file(&p, now).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let again = read_key_file(&p).unwrap();
        assert_eq!(again.fingerprint, k.fingerprint);
        assert_eq!(again.bytes(), k.bytes());
        assert_eq!(again.created.as_deref(), Some("2026-12-07T03:00:00Z"));
        assert!(create_key_file(&p, now).is_err(), "never replaced");
        // The slip's key lines, typed without checks, make the same key.
        let s = slip(&k);
        let typed: String = s
            .lines()
            .filter(|l| l.starts_with("key "))
            .map(|l| l.split('(').next().unwrap().to_string() + "\n")
            .collect();
        let back = parse_key_text(&typed, Path::new("typed")).unwrap();
        assert_eq!(back.fingerprint, k.fingerprint);
        assert!(s.contains(&k.fingerprint.to_string()));
        // A mistyped digit is found by the line's check.
        let line = s.lines().find(|l| l.starts_with("key 2:")).unwrap();
        let digit = line.chars().nth(7).unwrap();
        let other = if digit == '0' { '1' } else { '0' };
        let bad = format!(
            "{}\n{}{}{}\n",
            s.lines().find(|l| l.starts_with("key 1:")).unwrap(),
            &line[..7],
            other,
            &line[8..]
        );
        let e = parse_key_text(&bad, Path::new("typed")).err().unwrap();
        assert!(
            e.to_string()
                .contains("typed:2: key line 2 does not match its check"),
            "{e}"
        );
        // Mode 0644 is refused.
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = read_key_file(&p).err().unwrap().to_string();
        assert!(e.contains("chmod 600"), "{e}");
    }

    #[test]
    fn errors_never_show_the_key_and_never_panic() {
        let k = [0x11u8; 32];
        let text = file_text(&k, "now");
        for n in 0..text.len() {
            if let Err(e) = parse_key_text(&text[..n], Path::new("f")) {
                assert!(!format!("{e:#}").contains("1111"), "{e:#}");
            }
        }
        for junk in [
            "key 3: 00",
            "key 1: zz",
            "key x",
            "hello",
            "key 1: 00 (check",
            "key 2: 00",
        ] {
            assert!(parse_key_text(junk, Path::new("f")).is_err());
        }
    }

    #[test]
    fn fingerprints_and_kads() {
        let k = [7u8; 32];
        let f = Fingerprint::of(&k);
        let s = f.to_string();
        assert_eq!(s.len(), 26);
        assert_eq!(Fingerprint::parse(&s), Some(f));
        assert_eq!(Fingerprint::from_kad(&f.kad()), Some(f));
        assert_eq!(Fingerprint::from_kad(b"XYZ123456789"), None);
        assert_eq!(Fingerprint::from_kad(b"RVK"), None);
        assert_eq!(f.ibm_dki().len(), 3 + 18);
        assert_eq!(
            base64_lite::encode(b"any carnal pleas"),
            "YW55IGNhcm5hbCBwbGVhcw=="
        );
        assert_eq!(
            base64_lite::encode(b"any carnal pleasu"),
            "YW55IGNhcm5hbCBwbGVhc3U="
        );
        assert_eq!(base64_lite::encode(&[0; 32]).len(), 44);
    }

    #[test]
    fn keyring_finds_by_fingerprint() {
        let d = tempfile::tempdir().unwrap();
        let now = jiff::Timestamp::now();
        let a = create_key_file(&d.path().join("a.key"), now).unwrap();
        let b = create_key_file(&d.path().join("b.key"), now).unwrap();
        std::fs::write(d.path().join("README"), "not a key").unwrap();
        let ring = Keyring {
            files: vec![],
            dir: Some(d.path().to_path_buf()),
        };
        assert_eq!(ring.find(&b.fingerprint).unwrap().bytes(), b.bytes());
        assert_eq!(ring.find(&a.fingerprint).unwrap().bytes(), a.bytes());
        let none = Fingerprint([0; 9]);
        assert!(ring.find(&none).is_none());
        let msg = ring.missing("RV0003L6", &none);
        assert!(
            msg.starts_with("tape RV0003L6 is encrypted with key 00:00:"),
            "{msg}"
        );
        assert!(msg.contains(&d.path().display().to_string()));
    }
}
