//! Records the git commit for `bonsai version`, as k3s prints its own.
use std::process::Command;

fn main() {
    let commit = Command::new("git")
        .args(["rev-parse", "--short=8", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=BONSAI_GIT_COMMIT={commit}");
    // A position-dependent executable, as Go builds k3s: the loader then has no relocations to apply, so each
    // of the many long-lived processes of this binary (one shim per container) neither reads the relocation
    // table nor keeps its own relocated copy of the binary's pointer tables (about 1.2 MB each).
    println!("cargo:rustc-link-arg-bins=-no-pie");
    println!("cargo:rerun-if-changed=../../.git/HEAD");
    println!("cargo:rerun-if-changed=../../.git/refs/heads");
}
