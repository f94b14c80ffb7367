//! The real helm client (v4, which `tests/tools/install-helm.sh` fetches into `tests/.tools/helm`), run against a
//! test server with its own cache, config and data directories so that nothing of the host's is read or written.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::Server;

/// The helm binary: `$BONSAI_TEST_HELM`, else the one `tests/tools/install-helm.sh` installed.
pub fn helm_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("BONSAI_TEST_HELM") {
        return PathBuf::from(path);
    }
    let installed = Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools/helm/helm");
    assert!(
        installed.is_file(),
        "helm is missing: run tests/tools/install-helm.sh (tests/run.sh does)"
    );
    installed
}

/// The directory of a chart under `tests/charts`.
pub fn chart(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("charts").join(name)
}

impl Server {
    /// helm set up for this server, in its network namespace, with its state under the server's directory.
    pub fn helm_command(&self) -> Command {
        let home = self.dir.path().join("helm");
        let mut command = self.netns.command(helm_bin());
        command
            .env("HELM_CACHE_HOME", home.join("cache"))
            .env("HELM_CONFIG_HOME", home.join("config"))
            .env("HELM_DATA_HOME", home.join("data"))
            .env_remove("HELM_DRIVER")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig);
        command
    }

    /// Runs helm with `args` against this server.
    pub fn helm(&self, args: &[&str]) -> Output {
        self.helm_command().args(args).output().unwrap()
    }
}
