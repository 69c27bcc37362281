//! Data encryption on the virtual drives: SECURITY PROTOCOL IN/OUT (protocol 0x20), records sealed
//! with AES-256-GCM on disk, the key in the handle's memory only.

mod common;

use common::*;
use scsi::{SenseKey, Transport};

const KEY: [u8; 32] = [0x5a; 32];
const KAD: &[u8] = b"RVK\x01\x02\x03\x04\x05\x06\x07\x08\x09";

fn set_key(d: &mut dyn Transport, key: Option<&[u8; 32]>, dec: u8) -> scsi::Completion {
    let mut p = vec![0u8; 20];
    p[0..2].copy_from_slice(&0x0010u16.to_be_bytes());
    p[4] = 0x40;
    if let Some(k) = key {
        p[6] = 2;
        p[7] = dec;
        p[8] = 1;
        p[18..20].copy_from_slice(&32u16.to_be_bytes());
        p.extend_from_slice(k);
        p.extend_from_slice(&[0x01, 0, 0, KAD.len() as u8]);
        p.extend_from_slice(KAD);
    }
    let n = (p.len() - 4) as u16;
    p[2..4].copy_from_slice(&n.to_be_bytes());
    let l = (p.len() as u32).to_be_bytes();
    run_out(
        d,
        &[0xb5, 0x20, 0, 0x10, 0, 0, l[0], l[1], l[2], l[3], 0, 0],
        &p,
    )
}

fn spin(d: &mut dyn Transport, proto: u8, page: u16) -> (scsi::Completion, Vec<u8>) {
    let p = page.to_be_bytes();
    run_in(
        d,
        &[0xa2, proto, p[0], p[1], 0, 0, 0, 0, 0x20, 0, 0, 0],
        8192,
    )
}

#[test]
fn sealed_records_need_the_key() {
    let (dir, lib) = library(&["ENC001L6"]);
    let cart = dir.path().join("lib/cartridges/ENC001L6");
    let mut d = load(&lib, 1, 0);
    // Capabilities: AES-GCM-256, 32-byte key, encrypt and decrypt in hardware.
    let (c, b) = spin(&mut d, 0x20, 0x0010);
    good(&c);
    assert_eq!(&b[0..2], &[0x00, 0x10]);
    assert_eq!(b[20], 1);
    assert_eq!(&b[40..44], &0x0001_0014u32.to_be_bytes());
    assert_eq!(u16::from_be_bytes([b[30], b[31]]), 32);
    // Plain first, then sealed records with the key set.
    good(&write(&mut d, b"plain record one"));
    good(&set_key(&mut d, Some(&KEY), 3));
    let (c, b) = spin(&mut d, 0x20, 0x0020);
    good(&c);
    assert_eq!((b[5], b[6], b[7]), (2, 3, 1));
    assert_eq!(&b[24..28], &[0x01, 0x02, 0, 12]);
    assert_eq!(&b[28..40], KAD);
    good(&write(&mut d, b"secret record two"));
    good(&write(&mut d, b"secret record three"));
    good(&wfm(&mut d, 1));
    // On disk: the first in clear, the others sealed with a sidecar each.
    assert_eq!(
        std::fs::read(cart.join("0_0_R")).unwrap(),
        b"plain record one"
    );
    let r1 = std::fs::read(cart.join("0_1_R")).unwrap();
    assert_eq!(r1.len(), 17 + 16);
    assert!(!r1.windows(6).any(|w| w == b"secret"));
    assert!(cart.join("0_1_K").exists() && !cart.join("0_0_K").exists());
    // Read back with the key (MIXED: the plain record too).
    good(&locate(&mut d, 0, 0));
    let (c, b) = read(&mut d, 100, true);
    good(&c);
    assert_eq!(b, b"plain record one");
    let (c, b) = read(&mut d, 100, true);
    good(&c);
    assert_eq!(b, b"secret record two");
    // Next Block Encryption Status names the key of the next record.
    let (c, b) = spin(&mut d, 0x20, 0x0021);
    good(&c);
    assert_eq!(u64::from_be_bytes(b[4..12].try_into().unwrap()), 2);
    assert_eq!(b[12] & 0x0f, 5);
    assert_eq!(&b[20..32], KAD);
    // Unloading forgets the key.
    good(&run(&mut d, &[0x1b, 0, 0, 0, 0, 0]));
    good(&run(&mut d, &[0x1b, 0, 0, 0, 1, 0]));
    let (c, b) = spin(&mut d, 0x20, 0x0020);
    good(&c);
    assert_eq!((b[5], b[6]), (0, 0));
    good(&locate(&mut d, 0, 1));
    let (c, b) = spin(&mut d, 0x20, 0x0021);
    good(&c);
    assert_eq!(b[12] & 0x0f, 6, "encrypted, key not available");
    assert_eq!(&b[20..32], KAD);
    expect(
        &read(&mut d, 100, true).0,
        SenseKey::DataProtect,
        0x74,
        0x01,
    );
    assert_eq!(
        position(&mut d).1,
        1,
        "a record that cannot be decrypted is not passed"
    );
    // A wrong key: 74/03.
    good(&set_key(&mut d, Some(&[1; 32]), 3));
    expect(
        &read(&mut d, 100, true).0,
        SenseKey::DataProtect,
        0x74,
        0x03,
    );
    // DECRYPT (not MIXED) refuses a record in clear.
    good(&set_key(&mut d, Some(&KEY), 2));
    good(&locate(&mut d, 0, 0));
    expect(
        &read(&mut d, 100, true).0,
        SenseKey::DataProtect,
        0x74,
        0x02,
    );
    good(&locate(&mut d, 0, 1));
    let (c, b) = read(&mut d, 100, true);
    good(&c);
    assert_eq!(b, b"secret record two");
    // ILI with the plain length.
    let (c, b) = read(&mut d, 6, false);
    assert_eq!(b, b"secret");
    let s = sense(&c);
    assert!(s.ili);
    assert_eq!(s.information, Some(6 - 19));
    // Clearing: writes are plain again, and overwriting a sealed record removes its sidecar.
    good(&set_key(&mut d, None, 0));
    good(&locate(&mut d, 0, 1));
    good(&write(&mut d, b"plain again"));
    good(&wfm(&mut d, 0));
    assert!(!cart.join("0_1_K").exists() && !cart.join("0_2_K").exists());
    assert_eq!(std::fs::read(cart.join("0_1_R")).unwrap(), b"plain again");
    // The key is the drive's: another handle on it sees the one set through this one.
    good(&set_key(&mut d, Some(&KEY), 3));
    let mut d2 = lib.drive(0).unwrap();
    let (c, b) = spin(&mut d2, 0x20, 0x0020);
    good(&c);
    assert_eq!(b[5], 2);
    let mut other = lib.drive(1).unwrap();
    let (c, b) = spin(&mut other, 0x20, 0x0020);
    good(&c);
    assert_eq!(b[5], 0, "drive 1 has no key");
    // Moving the cartridge out of the drive forgets it.
    drop((d, d2));
    let mut ch = lib.changer();
    good(&move_medium(&mut ch, 0x100, 0x1000));
    let mut d = lib.drive(0).unwrap();
    let (c, b) = spin(&mut d, 0x20, 0x0020);
    good(&c);
    assert_eq!(b[5], 0);
}

#[test]
fn sealed_records_survive_a_reload_of_the_directory() {
    let (_dir, lib) = library(&["ENC002L6"]);
    let mut d = load(&lib, 1, 0);
    good(&set_key(&mut d, Some(&KEY), 3));
    for i in 0..5u8 {
        good(&write(&mut d, &[i; 1000]));
    }
    good(&wfm(&mut d, 1));
    // Unloaded and loaded again: the key is gone, and the directory is read anew (the sealed
    // records are known by their sidecars).
    good(&run(&mut d, &[0x1b, 0, 0, 0, 0, 0]));
    drop(d);
    let mut d = lib.drive(0).unwrap();
    good(&run(&mut d, &[0x1b, 0, 0, 0, 1, 0]));
    good(&locate(&mut d, 0, 0));
    expect(
        &read(&mut d, 1000, true).0,
        SenseKey::DataProtect,
        0x74,
        0x01,
    );
    good(&set_key(&mut d, Some(&KEY), 3));
    for i in 0..5u8 {
        let (c, b) = read(&mut d, 1000, false);
        good(&c);
        assert_eq!(b, vec![i; 1000]);
    }
}

#[test]
fn security_pages_refuse_garbage() {
    let (_dir, lib) = library(&["ENC003L6"]);
    let mut d = lib.drive(0).unwrap();
    // No cartridge: setting a key and Next Block Encryption Status need one; the other pages do not.
    expect(&set_key(&mut d, Some(&KEY), 3), SenseKey::NotReady, 0x3a, 0);
    // Clearing needs none.
    good(&set_key(&mut d, None, 0));
    let (c, b) = spin(&mut d, 0x00, 0x0000);
    good(&c);
    assert_eq!(&b[6..10], &[0, 2, 0x00, 0x20]);
    let (c, b) = spin(&mut d, 0x20, 0x0000);
    good(&c);
    assert!(b[4..].chunks(2).any(|c| c == [0x00, 0x21]));
    good(&spin(&mut d, 0x20, 0x0011).0);
    expect(&spin(&mut d, 0x20, 0x0021).0, SenseKey::NotReady, 0x3a, 0);
    expect(
        &spin(&mut d, 0x20, 0x0099).0,
        SenseKey::IllegalRequest,
        0x24,
        0,
    );
    drop(d);
    let mut d = load(&lib, 1, 0);
    // Truncated and hostile parameter lists.
    let mut good_page = vec![0u8; 20];
    good_page[0..2].copy_from_slice(&0x0010u16.to_be_bytes());
    good_page[2..4].copy_from_slice(&16u16.to_be_bytes());
    good_page[6] = 2;
    good_page[7] = 3;
    good_page[8] = 1;
    good_page[18..20].copy_from_slice(&32u16.to_be_bytes());
    good_page.extend_from_slice(&KEY);
    for cut in 0..good_page.len() {
        let mut p = good_page[..cut].to_vec();
        if p.len() >= 4 {
            let n = (p.len() - 4) as u16;
            p[2..4].copy_from_slice(&n.to_be_bytes());
        }
        let l = (p.len() as u32).to_be_bytes();
        let c = run_out(
            &mut d,
            &[0xb5, 0x20, 0, 0x10, 0, 0, l[0], l[1], l[2], l[3], 0, 0],
            &p,
        );
        expect(&c, SenseKey::IllegalRequest, 0x26, 0);
    }
    // A KAD whose length runs past the end.
    let mut p = good_page.clone();
    p.extend_from_slice(&[0x01, 0, 0xff, 0xff, 1, 2]);
    let n = (p.len() - 4) as u16;
    p[2..4].copy_from_slice(&n.to_be_bytes());
    let l = (p.len() as u32).to_be_bytes();
    let c = run_out(
        &mut d,
        &[0xb5, 0x20, 0, 0x10, 0, 0, l[0], l[1], l[2], l[3], 0, 0],
        &p,
    );
    expect(&c, SenseKey::IllegalRequest, 0x26, 0);
    // The whole page without a KAD is fine.
    let mut p = good_page.clone();
    let n = (p.len() - 4) as u16;
    p[2..4].copy_from_slice(&n.to_be_bytes());
    let l = (p.len() as u32).to_be_bytes();
    good(&run_out(
        &mut d,
        &[0xb5, 0x20, 0, 0x10, 0, 0, l[0], l[1], l[2], l[3], 0, 0],
        &p,
    ));
}
