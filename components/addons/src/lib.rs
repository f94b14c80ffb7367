//! The deploy controller (k3s's `pkg/deploy`): every YAML file under `<data-dir>/server/manifests/` is applied
//! at start and again whenever it changes, as `kubectl apply --server-side` would; objects stay when a file is
//! removed, as in k3s.
//!
//! The packaged manifests (the repository's `manifests/`, compiled in) are written into the directory at every
//! start, filled in from the server's flags; one disabled with `--disable NAME` is removed from the directory and
//! its objects deleted. A file next to them named `<name>.yaml.skip` keeps bonsai from writing or applying it.
//!
//! A file that cannot be parsed or applied is reported in the log and as a Warning event in `kube-system` about
//! the file's Addon (k3s's `kind: Addon` reference, named after the file), retried every few seconds, and does
//! not hold up the other files.

pub mod manifest;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::{Discovery, Scope};

use manifest::Manifest;

/// The field manager the applies are made under.
pub const FIELD_MANAGER: &str = "bonsai-deploy";
/// Objects without a namespace in a manifest go here (the namespace of the file's Addon, as in k3s).
pub const DEFAULT_NAMESPACE: &str = "kube-system";
/// How often the directory is looked at for new and changed files (and failed files retried).
const SCAN_EVERY: Duration = Duration::from_secs(2);

/// A manifest bonsai ships, by the name `--disable` uses.
#[derive(Clone, Copy, Debug)]
pub struct Packaged {
    pub name: &'static str,
    pub text: &'static str,
}

/// The packaged manifests, in the order they are written.
pub const PACKAGED: [Packaged; 2] = [
    Packaged {
        name: "coredns",
        text: include_str!("../../../manifests/coredns.yaml"),
    },
    Packaged {
        name: "local-storage",
        text: include_str!("../../../manifests/local-storage.yaml"),
    },
];

#[derive(Debug, thiserror::Error)]
pub enum AddonError {
    #[error("{path}: {message}")]
    Manifest { path: String, message: String },
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{object}: {message}")]
    Apply { object: String, message: String },
    #[error("discovering the API's resources: {0}")]
    Discovery(String),
}

/// The values packaged manifests are filled in with (`%{NAME}%` placeholders, as k3s writes them).
#[derive(Clone, Debug, Default)]
pub struct Template {
    pub values: BTreeMap<String, String>,
}

impl Template {
    pub fn fill(&self, text: &str) -> String {
        self.values.iter().fold(text.to_string(), |text, (name, value)| {
            text.replace(&format!("%{{{name}}}%"), value)
        })
    }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> AddonError + '_ {
    move |source| AddonError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Writes the enabled packaged manifests into `dir` (unless a `.skip` file says not to) and removes the disabled
/// ones. Returns the manifests of the disabled ones, whose objects the caller deletes.
pub fn write_packaged(
    dir: &Path,
    disabled: &[String],
    template: &Template,
) -> Result<Vec<Manifest>, AddonError> {
    std::fs::create_dir_all(dir).map_err(io_error(dir))?;
    let mut removed = Vec::new();
    for packaged in PACKAGED {
        let path = dir.join(format!("{}.yaml", packaged.name));
        let text = template.fill(packaged.text);
        if disabled.iter().any(|d| d == packaged.name) {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_error(&path)(e)),
            }
            removed.push(Manifest::parse(&path, &text)?);
            continue;
        }
        if skipped(&path) {
            continue;
        }
        // Written through a temporary file, so the scanner never reads half a manifest.
        let temporary = dir.join(format!(".{}.yaml.tmp", packaged.name));
        std::fs::write(&temporary, &text)
            .and_then(|()| std::fs::rename(&temporary, &path))
            .map_err(io_error(&path))?;
    }
    Ok(removed)
}

fn skipped(path: &Path) -> bool {
    let mut skip = path.as_os_str().to_owned();
    skip.push(".skip");
    Path::new(&skip).exists()
}

/// The manifest files under `dir` (subdirectories too), by path: `.yaml`, `.yml` and `.json` files not hidden
/// and not skipped.
pub fn manifest_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let hidden = entry.file_name().to_string_lossy().starts_with('.');
            if hidden {
                continue;
            }
            if path.is_dir() {
                pending.push(path);
            } else if matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml" | "json")
            ) && !skipped(&path)
            {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// The API's kinds, found again when a manifest names one not known yet (a CRD applied a moment ago).
struct Kinds {
    client: kube::Client,
    discovery: Option<Discovery>,
}

impl Kinds {
    async fn refresh(&mut self) -> Result<(), AddonError> {
        let discovery = Discovery::new(self.client.clone())
            .run()
            .await
            .map_err(|e| AddonError::Discovery(e.to_string()))?;
        self.discovery = Some(discovery);
        Ok(())
    }

    async fn api_for(
        &mut self,
        gvk: &GroupVersionKind,
        namespace: Option<&str>,
    ) -> Result<Api<DynamicObject>, AddonError> {
        for attempt in 0..2 {
            if attempt == 1 || self.discovery.is_none() {
                self.refresh().await?;
            }
            if let Some((resource, capabilities)) = self.discovery.as_ref().and_then(|d| d.resolve_gvk(gvk)) {
                return Ok(match capabilities.scope {
                    Scope::Namespaced => Api::namespaced_with(
                        self.client.clone(),
                        namespace.unwrap_or(DEFAULT_NAMESPACE),
                        &resource,
                    ),
                    Scope::Cluster => Api::all_with(self.client.clone(), &resource),
                });
            }
        }
        Err(AddonError::Apply {
            object: format!("{}/{}", gvk.api_version(), gvk.kind),
            message: "the server does not serve this kind".into(),
        })
    }
}

/// Applies and deletes manifests' objects.
pub struct Deployer {
    kinds: Kinds,
}

impl std::fmt::Debug for Deployer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Deployer")
    }
}

impl Deployer {
    pub fn new(client: kube::Client) -> Deployer {
        Deployer {
            kinds: Kinds {
                client,
                discovery: None,
            },
        }
    }

    /// Applies every object of `manifest`, in order; the first failure ends it (later objects may need it).
    pub async fn apply(&mut self, manifest: &Manifest) -> Result<usize, AddonError> {
        let params = PatchParams::apply(FIELD_MANAGER).force();
        for object in &manifest.objects {
            let api = self
                .kinds
                .api_for(&object.gvk, object.namespace.as_deref())
                .await?;
            api.patch(&object.name, &params, &Patch::Apply(&object.body))
                .await
                .map_err(|e| AddonError::Apply {
                    object: object.describe(),
                    message: e.to_string(),
                })?;
        }
        Ok(manifest.objects.len())
    }

    /// Deletes every object of `manifest` (those already gone are fine), last first.
    pub async fn delete(&mut self, manifest: &Manifest) -> Result<(), AddonError> {
        for object in manifest.objects.iter().rev() {
            let api = match self.kinds.api_for(&object.gvk, object.namespace.as_deref()).await {
                Ok(api) => api,
                // A kind the server no longer serves has no objects left to delete.
                Err(AddonError::Apply { .. }) => continue,
                Err(e) => return Err(e),
            };
            match api.delete(&object.name, &DeleteParams::background()).await {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(e) => {
                    return Err(AddonError::Apply {
                        object: object.describe(),
                        message: e.to_string(),
                    });
                }
            }
        }
        Ok(())
    }
}

/// The state of one file: the digest last applied (or last failed, with when to retry).
#[derive(Clone, Debug, PartialEq, Eq)]
enum FileState {
    Applied(String),
    Failed(String, tokio::time::Instant),
}

/// Runs the deploy controller: deletes the disabled packaged manifests' objects, then applies the directory's
/// files at start and on every change, until the process ends.
pub async fn run(client: kube::Client, dir: PathBuf, removed: Vec<Manifest>) {
    let recorder = events::Recorder::new(client.clone(), "deploy");
    let mut deployer = Deployer::new(client);
    for manifest in &removed {
        loop {
            match deployer.delete(manifest).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot remove a disabled component's objects; retrying");
                    tokio::time::sleep(SCAN_EVERY).await;
                }
            }
        }
    }
    let mut states: BTreeMap<PathBuf, FileState> = BTreeMap::new();
    loop {
        let files = manifest_files(&dir);
        states.retain(|path, _| files.contains(path));
        for path in files {
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            let digest = manifest::digest(&text);
            let due = match states.get(&path) {
                Some(FileState::Applied(applied)) => *applied != digest,
                Some(FileState::Failed(failed, retry)) => {
                    *failed != digest || tokio::time::Instant::now() >= *retry
                }
                None => true,
            };
            if !due {
                continue;
            }
            let addon = addon_reference(&path);
            let result = match Manifest::parse(&path, &text) {
                Ok(manifest) => deployer.apply(&manifest).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(count) => {
                    tracing::info!(file = %path.display(), objects = count, "applied manifest");
                    recorder
                        .normal(
                            &addon,
                            "AppliedManifest",
                            format!("Applied manifest at \"{}\"", path.display()),
                        )
                        .await;
                    states.insert(path, FileState::Applied(digest));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot apply manifest");
                    recorder
                        .warning(
                            &addon,
                            "ApplyManifestFailed",
                            format!("Failed to apply manifest at \"{}\": {e}", path.display()),
                        )
                        .await;
                    let retry = tokio::time::Instant::now() + Duration::from_secs(10);
                    states.insert(path, FileState::Failed(digest, retry));
                }
            }
        }
        tokio::time::sleep(SCAN_EVERY).await;
    }
}

/// The Addon a file's events are about: k3s's `k3s.cattle.io/v1` Addon in kube-system named after the file.
fn addon_reference(path: &Path) -> events::Involved {
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    events::Involved {
        api_version: "k3s.cattle.io/v1".into(),
        kind: "Addon".into(),
        namespace: DEFAULT_NAMESPACE.into(),
        name,
        uid: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template() -> Template {
        Template {
            values: [
                ("CLUSTER_DNS".to_string(), "10.43.0.10".to_string()),
                ("CLUSTER_DOMAIN".to_string(), "cluster.local".to_string()),
            ]
            .into(),
        }
    }

    #[test]
    fn packaged_manifests_are_written_filled_in_and_disabled_ones_removed() {
        let dir = tempfile::tempdir().expect("a directory");
        let removed = write_packaged(dir.path(), &[], &template()).expect("written");
        assert!(removed.is_empty());
        let coredns = std::fs::read_to_string(dir.path().join("coredns.yaml")).expect("coredns");
        assert!(coredns.contains("clusterIP: 10.43.0.10"), "{coredns}");
        assert!(!coredns.contains("%{"));
        for packaged in PACKAGED {
            let manifest =
                Manifest::parse(Path::new(packaged.name), &template().fill(packaged.text)).expect("parses");
            assert!(!manifest.objects.is_empty());
        }
        let removed = write_packaged(dir.path(), &["coredns".to_string()], &template()).expect("written");
        assert!(!dir.path().join("coredns.yaml").exists());
        assert_eq!(removed.len(), 1);
        assert_eq!(removed[0].objects[0].name, "kube-dns");
    }

    #[test]
    fn skip_files_hidden_files_and_other_extensions_are_left_alone() {
        let dir = tempfile::tempdir().expect("a directory");
        std::fs::write(dir.path().join("local-storage.yaml.skip"), "").expect("skip");
        write_packaged(dir.path(), &[], &template()).expect("written");
        assert!(!dir.path().join("local-storage.yaml").exists());
        std::fs::create_dir(dir.path().join("apps")).expect("subdirectory");
        std::fs::write(dir.path().join("apps/web.yml"), "").expect("file");
        std::fs::write(dir.path().join("notes.txt"), "").expect("file");
        std::fs::write(dir.path().join(".hidden.yaml"), "").expect("file");
        let names: Vec<String> = manifest_files(dir.path())
            .iter()
            .map(|p| p.strip_prefix(dir.path()).expect("inside").display().to_string())
            .collect();
        assert_eq!(names, vec!["apps/web.yml", "coredns.yaml"]);
    }
}
