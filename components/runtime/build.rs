//! Builds the container monitor (`components/shim-monitor`) as its own small static binary, for the runtime to
//! embed (`container::monitor_binary`): a nested `cargo build` of that one crate, with a profile of its own
//! (`[profile.shim-monitor]`: size over speed, LTO, no unwinding) and glibc linked in statically, into a target
//! directory under OUT_DIR. Where that cannot be built (no static libc for the target, say), the runtime gets an
//! empty image and its shims fall back to monitoring from the bonsai binary itself; cargo prints a warning.

use std::path::{Path, PathBuf};
use std::process::Command;

const BINARY: &str = "bonsai-shim-monitor";

fn main() -> Result<(), String> {
    println!("cargo:rerun-if-changed=../shim-monitor");
    println!("cargo:rerun-if-changed=../../Cargo.lock");
    println!("cargo:rerun-if-changed=../../Cargo.toml");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default());
    let image = match build(&out) {
        Ok(path) => std::fs::read(&path).unwrap_or_default(),
        Err(why) => {
            println!(
                "cargo:warning=the small shim monitor was not built ({why}); shims will monitor from the bonsai binary"
            );
            Vec::new()
        }
    };
    let embedded = out.join(BINARY);
    std::fs::write(&embedded, &image).map_err(|e| format!("writing {}: {e}", embedded.display()))?;
    println!("cargo:rustc-env=BONSAI_SHIM_MONITOR_HASH={:016x}", fnv1a(&image));
    Ok(())
}

fn build(out: &Path) -> Result<PathBuf, String> {
    let cargo = std::env::var_os("CARGO").ok_or("CARGO is not set")?;
    let target = std::env::var("TARGET").map_err(|_| "TARGET is not set")?;
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").ok_or("no CARGO_MANIFEST_DIR")?);
    let workspace = manifest_dir.join("../..");
    let target_dir = out.join("shim-monitor-target");
    let mut command = Command::new(cargo);
    command
        .current_dir(&workspace)
        .args([
            "build",
            "--quiet",
            "--locked",
            "--offline",
            "-p",
            "shim-monitor",
            "--bin",
            BINARY,
        ])
        .args(["--profile", "shim-monitor", "--target", &target])
        .arg("--target-dir")
        .arg(&target_dir)
        // This build's own flags only: none of the outer build's (clippy's wrapper, coverage or sanitizer flags).
        .env("CARGO_ENCODED_RUSTFLAGS", "-Ctarget-feature=+crt-static")
        .env_remove("RUSTFLAGS")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET_DIR")
        .env_remove("CLIPPY_ARGS");
    let output = command.output().map_err(|e| format!("running cargo: {e}"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        let tail = lines[lines.len().saturating_sub(6)..].join(" | ");
        return Err(format!("cargo build failed: {tail}"));
    }
    let binary = target_dir.join(&target).join("shim-monitor").join(BINARY);
    if binary.is_file() {
        Ok(binary)
    } else {
        Err(format!("{} is missing after the build", binary.display()))
    }
}

/// FNV-1a, 64 bits: names the extracted binary by its content, so that a new bonsai never runs an old monitor.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}
