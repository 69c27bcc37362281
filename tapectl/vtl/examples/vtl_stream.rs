//! Streams WRITE(6) records through a virtual drive and reports the rate, for comparison with
//! `dd if=/dev/zero of=FILE bs=512k count=N` on the same filesystem.
//!
//! `cargo run --release -p vtl --example vtl_stream -- DIR [MiB] [record KiB]`

use std::time::{Duration, Instant};

use scsi::{DataDir, Status, Transport};
use vtl::{CartridgeOptions, Library, LibrarySpec};

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = std::path::PathBuf::from(
        args.next()
            .expect("usage: vtl_stream DIR [MiB] [record KiB]"),
    );
    let mib: u64 = args.next().map_or(2048, |s| s.parse().expect("MiB"));
    let rec_kib: usize = args.next().map_or(512, |s| s.parse().expect("record KiB"));
    let lib = Library::create(
        &dir,
        &LibrarySpec {
            cartridge_capacity_mb: mib * 2 + 64,
            ..Default::default()
        },
    )
    .expect("create library");
    lib.insert("BENCH1L6", None, &CartridgeOptions::default())
        .unwrap();
    let t = Duration::from_secs(60);
    let mut ch = lib.changer();
    let _ = ch.execute(&[0; 6], DataDir::None, t); // door unit attention
    let c = ch
        .execute(
            &[0xa5, 0, 0, 1, 0, 0x10, 0x01, 0x00, 0, 0, 0, 0],
            DataDir::None,
            t,
        )
        .unwrap();
    assert_eq!(c.status, Status::GOOD);
    let mut d = lib.drive(0).unwrap();
    let _ = d.execute(&[0; 6], DataDir::None, t); // medium changed
    let rec = vec![0xa5u8; rec_kib * 1024];
    let l = (rec.len() as u32).to_be_bytes();
    let cdb = [0x0a, 0, l[1], l[2], l[3], 0];
    let n = mib * 1024 / rec_kib as u64;
    let start = Instant::now();
    for _ in 0..n {
        let c = d.execute(&cdb, DataDir::Out(&rec), t).unwrap();
        assert_eq!(
            c.status,
            Status::GOOD,
            "{:?}",
            scsi::Sense::decode(&c.sense)
        );
    }
    let streamed = start.elapsed();
    let c = d.execute(&[0x10, 0, 0, 0, 1, 0], DataDir::None, t).unwrap();
    assert_eq!(c.status, Status::GOOD);
    let total = start.elapsed();
    let mb = (n * rec.len() as u64) as f64 / 1e6;
    println!(
        "{n} records of {} KiB: streamed in {:.2}s ({:.0} MB/s), with the final filemark (fdatasync) {:.2}s ({:.0} MB/s)",
        rec_kib,
        streamed.as_secs_f64(),
        mb / streamed.as_secs_f64(),
        total.as_secs_f64(),
        mb / total.as_secs_f64()
    );
    // Baseline in the same conditions: the same bytes into one file, like `dd bs=512k`.
    let one = dir.join("baseline.img");
    let t0 = Instant::now();
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&one).unwrap();
        for _ in 0..n {
            f.write_all(&rec).unwrap();
        }
    }
    let base = t0.elapsed();
    let _ = std::fs::remove_file(&one);
    println!(
        "one file (dd-like): {:.2}s ({:.0} MB/s); vtl stream / one file speed ratio: {:.2}",
        base.as_secs_f64(),
        mb / base.as_secs_f64(),
        base.as_secs_f64() / streamed.as_secs_f64()
    );
}
