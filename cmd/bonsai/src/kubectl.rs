//! `bonsai kubectl` (and bonsai run through a `kubectl` link): kubectl against the local cluster. bonsai cannot
//! embed kubectl (it is Go), so it runs a real one: `$BONSAI_KUBECTL`, else `bonsai-kubectl` next to the bonsai
//! binary (where the install script puts the kubectl release it fetches), else the first `kubectl` on PATH that is
//! not bonsai itself (the install script's `kubectl` link to bonsai must not loop back).

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// The kubeconfig for this user, as k3s finds it: `$KUBECONFIG`, else the server's `/etc/bonsai/bonsai.yaml` when
/// this user can read it, else `~/.kube/config`.
pub fn kubeconfig() -> PathBuf {
    if let Some(k) = std::env::var_os("KUBECONFIG").filter(|k| !k.is_empty()) {
        return PathBuf::from(k);
    }
    let server = Path::new(crate::cli::DEFAULT_KUBECONFIG);
    if std::fs::File::open(server).is_ok() {
        return server.to_path_buf();
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
    home.join(".kube/config")
}

/// The kubectl program to run, never bonsai itself.
pub fn find_kubectl() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe()
        .and_then(std::fs::canonicalize)
        .context("cannot find the bonsai binary")?;
    let is_me = |p: &Path| std::fs::canonicalize(p).is_ok_and(|c| c == me);
    if let Some(named) = std::env::var_os("BONSAI_KUBECTL").filter(|k| !k.is_empty()) {
        let named = PathBuf::from(named);
        if !named.is_file() {
            bail!("BONSAI_KUBECTL={} is not a file", named.display());
        }
        if is_me(&named) {
            bail!("BONSAI_KUBECTL={} is bonsai itself, not kubectl", named.display());
        }
        return Ok(named);
    }
    let beside = me.with_file_name("bonsai-kubectl");
    if beside.is_file() && !is_me(&beside) {
        return Ok(beside);
    }
    let mut links_to_me = Vec::new();
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        let candidate = dir.join("kubectl");
        if !candidate.is_file() {
            continue;
        }
        if is_me(&candidate) {
            links_to_me.push(candidate.display().to_string());
            continue;
        }
        return Ok(candidate);
    }
    let links = if links_to_me.is_empty() {
        String::new()
    } else {
        format!(" ({} is a link to bonsai itself)", links_to_me.join(", "))
    };
    bail!(
        "no kubectl program found{links}: bonsai runs a real kubectl. Install one \
         (https://kubernetes.io/docs/tasks/tools/), put it at {}, or set BONSAI_KUBECTL to its path",
        beside.display()
    )
}

/// Replaces this process with kubectl, `args` passed on and the kubeconfig in `KUBECONFIG`.
pub fn run(args: Vec<OsString>) -> anyhow::Result<()> {
    let kubectl = find_kubectl()?;
    let kubeconfig = kubeconfig();
    let error = std::process::Command::new(&kubectl)
        .args(args)
        .env("KUBECONFIG", &kubeconfig)
        .exec();
    Err(error).with_context(|| format!("cannot run {}", kubectl.display()))
}
