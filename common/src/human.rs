//! Sizes and durations for people, one formatter for every binary. Sizes: powers of 1024, one
//! decimal ("600.0 MiB"), whole bytes below 1 KiB. Durations: the two largest whole units
//! ("2 h 30 min"). JSON carries exact bytes and seconds.

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

pub fn duration(d: std::time::Duration) -> String {
    const UNITS: [(u64, &str); 4] = [(86_400, "d"), (3_600, "h"), (60, "min"), (1, "s")];
    let secs = d.as_secs();
    if secs == 0 {
        return format!("{} ms", d.as_millis());
    }
    let mut parts = Vec::new();
    let mut rest = secs;
    for (size, name) in UNITS {
        if rest >= size {
            parts.push(format!("{} {name}", rest / size));
            rest %= size;
        } else if !parts.is_empty() {
            break;
        }
        if parts.len() == 2 {
            break;
        }
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations() {
        use std::time::Duration;
        let d = |s| super::duration(Duration::from_secs(s));
        assert_eq!(super::duration(Duration::from_millis(250)), "250 ms");
        assert_eq!(d(45), "45 s");
        assert_eq!(d(90), "1 min 30 s");
        assert_eq!(d(9000), "2 h 30 min");
        assert_eq!(d(86_400 + 7_200 + 5), "1 d 2 h");
        assert_eq!(d(86_400 + 5), "1 d");
    }

    #[test]
    fn sizes() {
        assert_eq!(super::bytes(0), "0 B");
        assert_eq!(super::bytes(1023), "1023 B");
        assert_eq!(super::bytes(629_145_600), "600.0 MiB");
        assert_eq!(super::bytes(3 << 30), "3.0 GiB");
    }
}
