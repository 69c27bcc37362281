//! Compiles csrc/shim.c against libiscsi and links `-liscsi`.
//!
//! Machines without libiscsi-dev still build the crate: it gets `cfg(no_libiscsi)` and
//! `IscsiDevice::connect` reports that iSCSI support is missing. With `RACKVAULT_REQUIRE_ISCSI=1`
//! (the project's test script sets it) a missing libiscsi fails the build instead.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(no_libiscsi)");
    println!("cargo::rerun-if-changed=csrc/shim.c");
    println!("cargo::rerun-if-env-changed=RACKVAULT_REQUIRE_ISCSI");
    println!("cargo::rerun-if-env-changed=PKG_CONFIG_PATH");

    let Some(include) = find_libiscsi() else {
        let msg = "libiscsi not found (no iscsi/iscsi.h, no pkg-config libiscsi): building without iSCSI \
                   support; install libiscsi-dev (Debian) and rebuild";
        if std::env::var("RACKVAULT_REQUIRE_ISCSI").is_ok_and(|v| v == "1") {
            eprintln!("error: RACKVAULT_REQUIRE_ISCSI=1 but {msg}");
            std::process::exit(1);
        }
        println!("cargo::warning={msg}");
        println!("cargo::rustc-cfg=no_libiscsi");
        return;
    };

    let mut build = cc::Build::new();
    build
        .file("csrc/shim.c")
        .warnings(true)
        .extra_warnings(true);
    if let Some(dir) = include {
        build.include(dir);
    }
    build.compile("rackvault_iscsi_shim");
    println!("cargo::rustc-link-lib=iscsi");
}

/// `Some(extra include dir)` when libiscsi's headers are usable: pkg-config first (it also tells
/// the library directory), then the Debian path.
fn find_libiscsi() -> Option<Option<PathBuf>> {
    if let Ok(out) = Command::new("pkg-config")
        .args(["--cflags-only-I", "--libs-only-L", "libiscsi"])
        .output()
        && out.status.success()
    {
        let flags = String::from_utf8_lossy(&out.stdout);
        let mut include = None;
        for f in flags.split_whitespace() {
            if let Some(dir) = f.strip_prefix("-I") {
                include = Some(PathBuf::from(dir));
            } else if let Some(dir) = f.strip_prefix("-L") {
                println!("cargo::rustc-link-search=native={dir}");
            }
        }
        let header_ok = include
            .as_ref()
            .is_some_and(|d| d.join("iscsi/iscsi.h").exists())
            || PathBuf::from("/usr/include/iscsi/iscsi.h").exists();
        if header_ok {
            return Some(include);
        }
    }
    for dir in ["/usr/include", "/usr/local/include"] {
        if PathBuf::from(dir).join("iscsi/iscsi.h").exists() {
            return Some(Some(PathBuf::from(dir)));
        }
    }
    None
}
