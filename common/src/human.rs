//! Sizes for people, one formatter for every binary: powers of 1024, one decimal ("600.0 MiB"),
//! whole bytes below 1 KiB. JSON carries exact bytes.

pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes() {
        assert_eq!(super::bytes(0), "0 B");
        assert_eq!(super::bytes(1023), "1023 B");
        assert_eq!(super::bytes(629_145_600), "600.0 MiB");
        assert_eq!(super::bytes(3 << 30), "3.0 GiB");
    }
}
