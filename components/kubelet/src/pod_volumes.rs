//! A pod's volumes on this node, as the kubelet's volume manager keeps them: made before the pod's containers
//! start, their projections (configMap, secret, downwardAPI, projected) written again while the pod runs so
//! that changed objects reach the running containers, and removed with the pod. The objects come from the
//! Kubernetes API ([`ApiSources`]); what is done on disk is the [`crate::volumes`] module's.
//!
//! A `persistentVolumeClaim` volume is the bound PersistentVolume's `hostPath` or `local` path, as the kubelet's
//! hostPath and local plugins mount them (bonsai's storage is node-local).

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, HostPathVolumeSource, PersistentVolume, PersistentVolumeClaim, Pod, Secret,
    ServiceAccount, Volume,
};
use kube::api::{Api, PostParams};
use runtime::container::BindMount;
use tokio::sync::Mutex;

use crate::volumes::{self, PreparedVolume, SourceError, VolumeError, VolumeHost, VolumeSources};

/// How often a running pod's projections are written again from the current objects. The kubelet re-syncs a
/// pod about once a minute and its object cache lives a minute more; ten seconds keeps the wait short at the
/// cost of a few reads per pod per minute.
pub const REFRESH: Duration = Duration::from_secs(10);

/// Tokens are asked for again once this share of their life is gone (the kubelet's token manager: 80%).
const TOKEN_REFRESH_SHARE: f64 = 0.8;

/// A token's cache key: namespace, service account, and the request's spec.
type TokenKey = (String, String, String);

/// The volumes' objects, read from the API.
#[allow(missing_debug_implementations)] // kube::Client is not Debug
pub struct ApiSources {
    client: kube::Client,
    /// Tokens by (namespace, service account, request), with when to ask again.
    tokens: std::sync::Mutex<BTreeMap<TokenKey, (String, Instant)>>,
}

impl ApiSources {
    pub fn new(client: kube::Client) -> Self {
        Self {
            client,
            tokens: std::sync::Mutex::new(BTreeMap::new()),
        }
    }
}

impl VolumeSources for ApiSources {
    async fn config_map(&self, namespace: &str, name: &str) -> Result<Option<ConfigMap>, SourceError> {
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), namespace);
        Ok(api.get_opt(name).await?)
    }

    async fn secret(&self, namespace: &str, name: &str) -> Result<Option<Secret>, SourceError> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        Ok(api.get_opt(name).await?)
    }

    async fn service_account_token(
        &self,
        namespace: &str,
        service_account: &str,
        request: &TokenRequest,
    ) -> Result<String, SourceError> {
        let key = (
            namespace.to_string(),
            service_account.to_string(),
            serde_json::to_string(&request.spec)?,
        );
        if let Ok(tokens) = self.tokens.lock()
            && let Some((token, renew_at)) = tokens.get(&key)
            && Instant::now() < *renew_at
        {
            return Ok(token.clone());
        }
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), namespace);
        let issued = api
            .create_token_request(service_account, &PostParams::default(), request)
            .await?;
        let status = issued
            .status
            .ok_or("the token request came back without a status")?;
        let lifetime = request.spec.expiration_seconds.unwrap_or(3600).max(1) as f64;
        let renew_at = Instant::now() + Duration::from_secs_f64(lifetime * TOKEN_REFRESH_SHARE);
        if let Ok(mut tokens) = self.tokens.lock() {
            tokens.insert(key, (status.token.clone(), renew_at));
        }
        Ok(status.token)
    }
}

/// Why a pod's volumes could not be made: Kubernetes' `FailedMount` message.
#[derive(Debug, thiserror::Error)]
#[error("MountVolume.SetUp failed for volume \"{volume}\" : {source}")]
pub struct MountError {
    pub volume: String,
    #[source]
    pub source: VolumeError,
}

/// What this node has made of one pod's volumes.
#[derive(Debug)]
struct PodState {
    volumes: BTreeMap<String, PreparedVolume>,
    refreshed: Instant,
}

/// Every pod's volumes on this node.
#[allow(missing_debug_implementations)] // ApiSources holds a kube::Client
pub struct PodVolumes {
    host: VolumeHost,
    sources: ApiSources,
    client: kube::Client,
    pods: Mutex<BTreeMap<String, PodState>>,
}

impl PodVolumes {
    pub fn new(host: VolumeHost, client: kube::Client) -> Self {
        Self {
            host,
            sources: ApiSources::new(client.clone()),
            client,
            pods: Mutex::new(BTreeMap::new()),
        }
    }

    /// The pod's volumes, made when they are not yet (after an agent restart, again: a set-up of a made volume
    /// keeps its contents), their projections written again every [`REFRESH`]. The caller runs one pass per pod
    /// at a time.
    pub async fn ensure(&self, pod: &Pod) -> Result<BTreeMap<String, PreparedVolume>, MountError> {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let wanted: Vec<Volume> = pod
            .spec
            .as_ref()
            .and_then(|s| s.volumes.clone())
            .unwrap_or_default();
        let (mut made, due) = {
            let pods = self.pods.lock().await;
            match pods.get(&uid) {
                Some(state) => (state.volumes.clone(), state.refreshed.elapsed() >= REFRESH),
                None => (BTreeMap::new(), false),
            }
        };
        for volume in &wanted {
            let failed = |source| MountError {
                volume: volume.name.clone(),
                source,
            };
            if let Some(prepared) = made.get(&volume.name) {
                if due && prepared.kind.is_projection() {
                    // A failed refresh leaves the files as they were; the next one tries again.
                    if let Err(error) = volumes::refresh(&self.host, pod, volume, &self.sources).await {
                        tracing::warn!(pod = ?pod.metadata.name, volume = %volume.name, %error,
                            "refreshing a volume");
                    }
                }
                continue;
            }
            let resolved = self.resolve_claim(pod, volume).await.map_err(failed)?;
            let mut prepared = volumes::prepare(&self.host, pod, &resolved.volume, &self.sources)
                .await
                .map_err(failed)?;
            prepared.read_only |= resolved.read_only;
            made.insert(volume.name.clone(), prepared);
        }
        let mut pods = self.pods.lock().await;
        let state = pods.entry(uid).or_insert_with(|| PodState {
            volumes: BTreeMap::new(),
            refreshed: Instant::now(),
        });
        if due {
            state.refreshed = Instant::now();
        }
        state.volumes = made.clone();
        Ok(made)
    }

    /// Unmounts and removes every volume of the pod on this node (hostPath and claimed paths are the host's and
    /// stay). Called before the pod's directory is removed: a tmpfs still mounted in it would stop that.
    pub async fn remove(&self, uid: &str) -> Result<(), VolumeError> {
        self.pods.lock().await.remove(uid);
        let host = self.host.clone();
        let uid = uid.to_string();
        tokio::task::spawn_blocking(move || volumes::cleanup_pod(&host, &uid))
            .await
            .map_err(|error| VolumeError::Task(error.to_string()))?
    }

    /// A `persistentVolumeClaim` volume as the hostPath volume of its bound PersistentVolume; other volumes as
    /// they are.
    async fn resolve_claim(&self, pod: &Pod, volume: &Volume) -> Result<ResolvedVolume, VolumeError> {
        let Some(claim) = &volume.persistent_volume_claim else {
            return Ok(ResolvedVolume {
                volume: volume.clone(),
                read_only: false,
            });
        };
        let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
        let source = |what: String| {
            move |error: kube::Error| VolumeError::Source {
                what,
                source: Box::new(error),
            }
        };
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), namespace);
        let found = claims
            .get_opt(&claim.claim_name)
            .await
            .map_err(source(format!("persistentvolumeclaim {:?}", claim.claim_name)))?
            .ok_or_else(|| VolumeError::NotFound {
                resource: "persistentvolumeclaim",
                name: claim.claim_name.clone(),
            })?;
        let bound = found
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.clone())
            .filter(|name| !name.is_empty())
            .filter(|_| found.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound"))
            .ok_or_else(|| {
                VolumeError::Unsupported(format!(
                    "persistentvolumeclaim \"{}\" is not bound",
                    claim.claim_name
                ))
            })?;
        let volumes: Api<PersistentVolume> = Api::all(self.client.clone());
        let persistent = volumes
            .get_opt(&bound)
            .await
            .map_err(source(format!("persistentvolume {bound:?}")))?
            .ok_or_else(|| VolumeError::NotFound {
                resource: "persistentvolume",
                name: bound.clone(),
            })?;
        let spec = persistent.spec.unwrap_or_default();
        let host_path = match (spec.host_path, spec.local) {
            (Some(host_path), _) => HostPathVolumeSource {
                path: host_path.path,
                type_: host_path.type_,
            },
            // A local volume's path must exist already (the local plugin mounts it, it does not make it).
            (None, Some(local)) => HostPathVolumeSource {
                path: local.path,
                type_: Some("Directory".into()),
            },
            (None, None) => {
                return Err(VolumeError::Unsupported(format!(
                    "persistentvolume \"{bound}\" is neither a hostPath nor a local volume, the only kinds this \
                     node mounts"
                )));
            }
        };
        Ok(ResolvedVolume {
            volume: Volume {
                name: volume.name.clone(),
                host_path: Some(host_path),
                ..Volume::default()
            },
            read_only: claim.read_only.unwrap_or(false)
                || spec
                    .access_modes
                    .is_some_and(|modes| modes.len() == 1 && modes[0] == "ReadOnlyMany"),
        })
    }
}

struct ResolvedVolume {
    volume: Volume,
    read_only: bool,
}

/// Why a container's mounts could not be made: Kubernetes' `CreateContainerConfigError` messages.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MountsError {
    #[error("cannot find volume \"{volume}\" to mount into container \"{container}\"")]
    NoSuchVolume { volume: String, container: String },
    #[error("subPath {0:?} must be a relative path without '..'")]
    InvalidSubPath(String),
    #[error("failed to prepare subPath for volumeMount \"{volume}\" of container \"{container}\": {message}")]
    SubPath {
        volume: String,
        container: String,
        message: String,
    },
}

/// The bind mounts of a container's `volumeMounts`, parents before what is mounted inside them. `env` is the
/// container's environment, for `subPathExpr`.
pub fn container_mounts(
    container: &Container,
    prepared: &BTreeMap<String, PreparedVolume>,
    env: &[(String, String)],
) -> Result<Vec<BindMount>, MountsError> {
    let mut mounts = Vec::new();
    for mount in container.volume_mounts.iter().flatten() {
        let Some(volume) = prepared.get(&mount.name) else {
            return Err(MountsError::NoSuchVolume {
                volume: mount.name.clone(),
                container: container.name.clone(),
            });
        };
        let sub_path = match (&mount.sub_path, &mount.sub_path_expr) {
            (Some(path), _) if !path.is_empty() => Some(path.clone()),
            (_, Some(expr)) if !expr.is_empty() => Some(expand(expr, env)),
            _ => None,
        };
        let source = match sub_path {
            Some(sub_path) => {
                let path = sub_path_in(&volume.host_path, &sub_path)?;
                make_sub_path(&path).map_err(|message| MountsError::SubPath {
                    volume: mount.name.clone(),
                    container: container.name.clone(),
                    message,
                })?;
                path
            }
            None => volume.host_path.clone(),
        };
        mounts.push(BindMount {
            source,
            destination: mount.mount_path.clone(),
            readonly: volume.read_only || mount.read_only.unwrap_or(false),
        });
    }
    // containerd's sortMounts: a mount inside another is made after it, or the outer one would hide it.
    mounts.sort_by_key(|m| Path::new(&m.destination).components().count());
    Ok(mounts)
}

/// `$(VAR)` replaced by the container's variable (`subPathExpr` expands like `command`, without escapes).
fn expand(expr: &str, env: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = expr;
    while let Some(start) = rest.find("$(") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find(')') {
            Some(end) => {
                let name = &after[..end];
                match env.iter().rev().find(|(k, _)| k == name) {
                    Some((_, value)) => out.push_str(value),
                    None => {
                        out.push_str("$(");
                        out.push_str(name);
                        out.push(')');
                    }
                }
                rest = &after[end + 1..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// The host path of a subPath inside a volume; one that could leave the volume is refused (the API server
/// refuses them too, this guards `subPathExpr`, which is expanded only here).
fn sub_path_in(volume: &Path, sub_path: &str) -> Result<PathBuf, MountsError> {
    let relative = Path::new(sub_path);
    if relative.is_absolute()
        || relative.components().any(|c| {
            matches!(
                c,
                Component::ParentDir | Component::RootDir | Component::Prefix(_)
            )
        })
    {
        return Err(MountsError::InvalidSubPath(sub_path.to_string()));
    }
    Ok(volume.join(relative))
}

/// A missing subPath is made as a directory (the kubelet's `doSafeMakeDir`, mode 0750); one that exists (a
/// projected file, say) is mounted as it is. A symlink leaving the volume is not followed by the bind mount's
/// source check here: the runtime resolves sources on the host, which is why `..` is refused above.
fn make_sub_path(path: &Path) -> Result<(), String> {
    if std::fs::symlink_metadata(path).is_ok() {
        return Ok(());
    }
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(path)
        .map_err(|error| format!("{}: {error}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volumes::VolumeKind;
    use serde_json::json;

    fn prepared(dir: &Path, kind: VolumeKind, read_only: bool) -> PreparedVolume {
        PreparedVolume {
            kind,
            host_path: dir.to_path_buf(),
            read_only,
        }
    }

    fn container(mounts: serde_json::Value) -> Container {
        serde_json::from_value(json!({"name": "app", "volumeMounts": mounts})).unwrap()
    }

    #[test]
    fn mounts_follow_volume_mounts_parents_first_projections_read_only() {
        let dir = tempfile::tempdir().unwrap();
        let volumes = BTreeMap::from([
            (
                "config".to_string(),
                prepared(&dir.path().join("c"), VolumeKind::ConfigMap, true),
            ),
            (
                "data".to_string(),
                prepared(&dir.path().join("d"), VolumeKind::EmptyDir, false),
            ),
        ]);
        let c = container(json!([
            {"name": "config", "mountPath": "/data/config"},
            {"name": "data", "mountPath": "/data"},
            {"name": "data", "mountPath": "/ro", "readOnly": true},
        ]));
        let mounts = container_mounts(&c, &volumes, &[]).unwrap();
        let seen: Vec<(&str, bool)> = mounts
            .iter()
            .map(|m| (m.destination.as_str(), m.readonly))
            .collect();
        assert_eq!(seen, [("/data", false), ("/ro", true), ("/data/config", true)]);
    }

    #[test]
    fn sub_paths_are_made_inside_the_volume_and_expanded_from_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let volumes = BTreeMap::from([(
            "data".to_string(),
            prepared(dir.path(), VolumeKind::EmptyDir, false),
        )]);
        let c = container(json!([
            {"name": "data", "mountPath": "/a", "subPath": "one/two"},
            {"name": "data", "mountPath": "/b", "subPathExpr": "pods/$(POD_NAME)"},
        ]));
        let env = vec![("POD_NAME".to_string(), "web-0".to_string())];
        let mounts = container_mounts(&c, &volumes, &env).unwrap();
        assert_eq!(mounts[0].source, dir.path().join("one/two"));
        assert_eq!(mounts[1].source, dir.path().join("pods/web-0"));
        assert!(dir.path().join("one/two").is_dir());
        assert!(dir.path().join("pods/web-0").is_dir());
    }

    #[test]
    fn sub_paths_leaving_the_volume_and_unknown_volumes_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let volumes = BTreeMap::from([(
            "data".to_string(),
            prepared(dir.path(), VolumeKind::EmptyDir, false),
        )]);
        let escape = container(json!([{"name": "data", "mountPath": "/a", "subPathExpr": "$(UP)/etc"}]));
        let env = vec![("UP".to_string(), "..".to_string())];
        assert_eq!(
            container_mounts(&escape, &volumes, &env),
            Err(MountsError::InvalidSubPath("../etc".into()))
        );
        let unknown = container(json!([{"name": "cache", "mountPath": "/cache"}]));
        assert_eq!(
            container_mounts(&unknown, &volumes, &[]).unwrap_err().to_string(),
            "cannot find volume \"cache\" to mount into container \"app\""
        );
    }

    #[test]
    fn unknown_variables_stay_as_written() {
        assert_eq!(expand("$(A)-$(B)-$(", &[("A".into(), "x".into())]), "x-$(B)-$(");
    }
}
