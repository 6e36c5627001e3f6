//! Links the `tns` binary with packed relative relocations (`DT_RELR`) where the toolchain and
//! the C library support them.
//!
//! Why: `tns` is a position-independent executable, and its 1.3 MB of `.rela.dyn` (one 24-byte
//! entry per pointer in its tables) are read by the loader at every start, so a serving process
//! had them resident for nothing. Packed, they take a few kilobytes; the loader applies the same
//! relocations, so the program is unchanged, and it stays position-independent (ASLR intact).
//! Measured with `bash bench/rss/ab.sh` (`results/rss/`).
//!
//! The flag needs GNU ld ≥ 2.38 (or lld/mold) and glibc ≥ 2.36. Rather than guess from version
//! strings, the script links and runs a small C program with it, and adds the flag only if that
//! works: elsewhere (older toolchains, cross builds, other C libraries) the binary links as
//! before.

use std::path::Path;
use std::process::Command;

const FLAG: &str = "-Wl,-z,pack-relative-relocs";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=RUSTC_LINKER");
    let target = |key: &str| std::env::var(key).unwrap_or_default();
    let native = target("TARGET") == target("HOST");
    if native
        && target("CARGO_CFG_TARGET_OS") == "linux"
        && target("CARGO_CFG_TARGET_ENV") == "gnu"
        && links_and_runs_with_packed_relocations()
    {
        println!("cargo:rustc-link-arg-bins={FLAG}");
    }
}

/// Whether the linker rustc uses accepts the flag without a warning (an old GNU ld only warns
/// about an unknown `-z` option) and the C library's loader runs the result.
fn links_and_runs_with_packed_relocations() -> bool {
    let Some(out_dir) = std::env::var_os("OUT_DIR") else {
        return false;
    };
    let dir = Path::new(&out_dir);
    let source = dir.join("relr_probe.c");
    let program = dir.join("relr_probe");
    // A pointer in writable data, so the probe has a relative relocation to pack.
    let code = "static int x; int *p = &x; int main(void) { return *p; }\n";
    if std::fs::write(&source, code).is_err() {
        return false;
    }
    let linker = std::env::var("RUSTC_LINKER").unwrap_or_else(|_| "cc".into());
    let linked = Command::new(linker)
        .args(["-fPIE", "-pie", FLAG, "-Wl,--fatal-warnings", "-o"])
        .arg(&program)
        .arg(&source)
        .output()
        .is_ok_and(|o| o.status.success());
    linked && Command::new(&program).status().is_ok_and(|s| s.success())
}
