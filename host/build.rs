//! Release builds of the broker binary on x86_64 Linux link its hot functions together: the
//! list in `link-order.txt` (written by `bench/link_order.sh` from a profile of the standard
//! benchmark scenarios) goes to the linker as lld's `--symbol-ordering-file`, so the code one
//! message runs occupies a few hundred contiguous KiB instead of pages all over the binary:
//! fewer instruction-cache and TLB misses per message (docs/benchmarks.md, "Link order").
//!
//! Only where rustc links with lld by default (x86_64 Linux, rustc 1.90 and later; the
//! workspace's toolchain is newer) and only for the `plugboard` binary in a release build;
//! names the list has that the binary lacks are skipped without a warning, so a stale list
//! costs nothing but its effect. `PLUGBOARD_LINK_ORDER=0` turns it off (e.g. with another
//! linker set through `RUSTFLAGS`).

use std::env;
use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=link-order.txt");
    println!("cargo:rerun-if-env-changed=PLUGBOARD_LINK_ORDER");
    let release = env::var("PROFILE").is_ok_and(|p| p == "release");
    let lld_by_default = env::var("CARGO_CFG_TARGET_ARCH").is_ok_and(|a| a == "x86_64")
        && env::var("CARGO_CFG_TARGET_OS").is_ok_and(|o| o == "linux")
        && env::var("CARGO_CFG_TARGET_ENV").is_ok_and(|e| e == "gnu");
    let wanted = env::var("PLUGBOARD_LINK_ORDER").map_or(true, |v| v != "0");
    let list =
        Path::new(&env::var("CARGO_MANIFEST_DIR").expect("set by cargo")).join("link-order.txt");
    if release && lld_by_default && wanted && list.is_file() {
        println!(
            "cargo:rustc-link-arg-bin=plugboard=-Wl,--symbol-ordering-file={}",
            list.display()
        );
        println!("cargo:rustc-link-arg-bin=plugboard=-Wl,--no-warn-symbol-ordering");
    }
}
