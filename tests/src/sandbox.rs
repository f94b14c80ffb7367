//! A throwaway host for scripts that install bonsai (packaging/install.sh, the Vagrantfile's provisioners): a
//! network namespace of the test's, and a mount, PID and UTS namespace (`unshare --mount --pid --uts --fork
//! --mount-proc`) in which /etc, /usr/local and /var/log are overlays whose writes land in the test's directory,
//! /var/lib an empty folder of the test's and /run a new tmpfs. Nothing the script writes reaches the real host,
//! and every process it starts dies with the PID namespace.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::{NetNs, bonsai_bin};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// The sandbox's set-up, then `body`, as one shell script run in the namespaces. `$T` is the test's directory,
/// `$OUT` a folder in it for results, `$SRC` the checkout, `$BIN` the bonsai binary under test.
pub const PRELUDE: &str = r##"set -eu
mount --make-rprivate /
mkdir -p "$T/ov"
mount -t tmpfs sandbox "$T/ov"
# /var/lib is a plain empty folder, not an overlay: bonsai's containers mount overlays whose upper layers are in
# its data directory, and an overlay's upper layer cannot be on an overlay.
mkdir -p "$T/var-lib"
mount --bind "$T/var-lib" /var/lib
for d in /etc /usr/local /var/log; do
  mkdir -p "$T/ov$d/upper" "$T/ov$d/work"
  mount -t overlay overlay -o "lowerdir=$d,upperdir=$T/ov$d/upper,workdir=$T/ov$d/work" "$d"
done
mount -t tmpfs run /run
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
snapshot() {
  { echo "# links"; ip -o link show | awk -F': ' '{print $2}' | cut -d@ -f1 | sort
    echo "# nft tables"; nft list tables | sort
    # Other tests' mounts (their folders in /tmp, their namespaces in /run/netns) come and go meanwhile: the
    # kernel detaches a copy whose mount point is deleted in another namespace.
    echo "# mounts"; awk '{print $5}' /proc/self/mountinfo | grep -v -E '^/tmp/|^/run/netns/' | sort; } >"$1"
}
"##;

/// The sandbox running `body` after the set-up, as a command to run or spawn. `$T` is `dir`, `$OUT` a folder in
/// it for results (`dir/out`), `$SRC` the checkout, `$BIN` the bonsai binary under test.
pub fn sandbox_command(netns: &NetNs, dir: &Path, body: &str) -> Command {
    let script = dir.join("sandbox.sh");
    std::fs::write(&script, format!("{PRELUDE}\n{body}")).unwrap();
    std::fs::create_dir_all(dir.join("out")).unwrap();
    let mut command = netns.net_command("unshare");
    command
        .args(["--mount", "--pid", "--uts", "--fork", "--mount-proc", "sh"])
        .arg(&script)
        .env("T", dir)
        .env("OUT", dir.join("out"))
        .env("SRC", workspace())
        .env("BIN", bonsai_bin())
        .env_remove("KUBECONFIG")
        .env_remove("RUST_LOG");
    command
}

/// Runs `body` in a sandbox to its end.
pub fn sandbox(netns: &NetNs, dir: &Path, body: &str) -> Output {
    sandbox_command(netns, dir, body).output().unwrap()
}
