//! Records the compiler version and the git commit for `tns bench`'s environment report.

use std::process::Command;

fn main() {
    let output = |cmd: &str, args: &[&str]| {
        Command::new(cmd)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|| "unknown".into())
    };
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    println!(
        "cargo:rustc-env=TNS_RUSTC_VERSION={}",
        output(&rustc, &["--version"])
    );
    println!(
        "cargo:rustc-env=TNS_GIT_SHA={}",
        output("git", &["rev-parse", "--short=12", "HEAD"])
    );
    println!("cargo:rerun-if-changed=../../.git/HEAD");
    // A commit rewrites the file of the branch HEAD names, not HEAD itself (nor the mtime of
    // `refs`), so that file is watched too.
    let head = std::fs::read_to_string("../../.git/HEAD").unwrap_or_default();
    if let Some(branch) = head.trim().strip_prefix("ref: ") {
        println!("cargo:rerun-if-changed=../../.git/{branch}");
    }
    println!("cargo:rerun-if-changed=../../.git/packed-refs");
}
