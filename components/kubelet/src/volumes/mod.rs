//! Pod volumes, as the kubelet's in-tree volume plugins make them (`pkg/volume/{configmap,secret,downwardapi,
//! projected,emptydir,hostpath}` in kubernetes/kubernetes), without the attaching and mounting of persistent
//! volumes.
//!
//! Every volume but hostPath lives in the kubelet's layout, `<root>/pods/<pod-uid>/volumes/kubernetes.io~<plugin>/
//! <volume-name>`; [`prepare`] makes it and returns the host path the runtime bind-mounts into the containers.
//! configMap, secret, downwardAPI and projected volumes are written by the [`AtomicWriter`] (files in a
//! timestamped directory published through the `..data` symlink), so that [`refresh`], called when the objects
//! they project change, updates what running containers see in one step. [`cleanup`] and [`cleanup_pod`] unmount
//! and remove them.
//!
//! Secrets, downwardAPI and projected volumes are on a tmpfs, as Kubernetes wraps them in a `medium: Memory`
//! emptyDir (configMaps in a disk one), so secret material never reaches the disk.
//!
//! The caller serialises calls for one volume (as the kubelet's volume manager does): the atomic writer offers no
//! concurrency guarantee of its own.

mod atomic_writer;
mod downward_api;
mod empty_dir;
mod host_path;
mod ownership;
mod payload;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Volume};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

pub use atomic_writer::{AtomicWriter, FileProjection, Payload};
pub(crate) use downward_api::extract_resource_value as resource_value;
pub use empty_dir::TmpfsPolicy;

/// The mode of projected files when a volume gives none (the API server defaults `defaultMode` to this).
pub const DEFAULT_MODE: u32 = 0o644;

/// The kinds of volume this node makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VolumeKind {
    ConfigMap,
    Secret,
    DownwardApi,
    Projected,
    EmptyDir,
    HostPath,
}

impl VolumeKind {
    /// The kind of a pod's volume, `None` for the kinds this node does not make (persistent volume claims, CSI,
    /// image volumes, the cloud disks...).
    pub fn of(volume: &Volume) -> Option<Self> {
        if volume.config_map.is_some() {
            Some(Self::ConfigMap)
        } else if volume.secret.is_some() {
            Some(Self::Secret)
        } else if volume.downward_api.is_some() {
            Some(Self::DownwardApi)
        } else if volume.projected.is_some() {
            Some(Self::Projected)
        } else if volume.empty_dir.is_some() {
            Some(Self::EmptyDir)
        } else if volume.host_path.is_some() {
            Some(Self::HostPath)
        } else {
            None
        }
    }

    /// The plugin's directory under a pod's `volumes/`: the plugin name with `/` escaped as `~`
    /// (`utilstrings.EscapeQualifiedName`).
    pub fn plugin_dir(self) -> &'static str {
        match self {
            Self::ConfigMap => "kubernetes.io~configmap",
            Self::Secret => "kubernetes.io~secret",
            Self::DownwardApi => "kubernetes.io~downward-api",
            Self::Projected => "kubernetes.io~projected",
            Self::EmptyDir => "kubernetes.io~empty-dir",
            Self::HostPath => "kubernetes.io~host-path",
        }
    }

    /// Whether the volume is written by the atomic writer from API objects (and so is refreshed, is mounted
    /// read-only into containers, and gets fsGroup's read-only mask): Kubernetes' `Attributes.ReadOnly`.
    pub fn is_projection(self) -> bool {
        matches!(
            self,
            Self::ConfigMap | Self::Secret | Self::DownwardApi | Self::Projected
        )
    }
}

/// What the node tells the volume code about itself.
#[derive(Clone, Debug)]
pub struct VolumeHost {
    /// The kubelet's root directory (kubelet's `--root-dir`, `/var/lib/kubelet`): pod volumes are under
    /// `<root_dir>/pods/`.
    pub root_dir: PathBuf,
    /// The node's allocatable resources: a container's unset limits read through the downward API are the
    /// node's allocatable, and a tmpfs is never larger than the allocatable memory.
    pub node_allocatable: BTreeMap<String, Quantity>,
    /// What to do when a tmpfs cannot be mounted.
    pub tmpfs: TmpfsPolicy,
}

impl VolumeHost {
    /// A host rooted at `root_dir` that knows no allocatable resources and requires tmpfs mounts.
    pub fn new(root_dir: impl Into<PathBuf>) -> Self {
        Self {
            root_dir: root_dir.into(),
            node_allocatable: BTreeMap::new(),
            tmpfs: TmpfsPolicy::Require,
        }
    }

    /// `<root>/pods/<pod-uid>/volumes`.
    pub fn pod_volumes_dir(&self, pod_uid: &str) -> PathBuf {
        self.root_dir.join("pods").join(pod_uid).join("volumes")
    }

    /// `<root>/pods/<pod-uid>/volumes/kubernetes.io~<plugin>/<volume-name>`.
    pub fn volume_dir(&self, pod_uid: &str, kind: VolumeKind, volume_name: &str) -> PathBuf {
        self.pod_volumes_dir(pod_uid)
            .join(kind.plugin_dir())
            .join(volume_name)
    }
}

/// A volume made ready for a pod's containers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreparedVolume {
    pub kind: VolumeKind,
    /// The host path to bind-mount at each of the volume's `volumeMounts`.
    pub host_path: PathBuf,
    /// Whether every mount of it is read-only, whatever the `volumeMount` says (the projections are: kubelet's
    /// `mustMountRO`).
    pub read_only: bool,
}

/// Why a source could not be read (an API error, a lost connection...).
pub type SourceError = Box<dyn std::error::Error + Send + Sync>;

/// Where the volumes' objects come from: the kubelet implements it over the Kubernetes API (with its caches and
/// token manager), tests with maps.
pub trait VolumeSources: Sync {
    /// The ConfigMap, `None` when it does not exist.
    fn config_map(
        &self,
        namespace: &str,
        name: &str,
    ) -> impl Future<Output = Result<Option<ConfigMap>, SourceError>> + Send;

    /// The Secret, `None` when it does not exist.
    fn secret(
        &self,
        namespace: &str,
        name: &str,
    ) -> impl Future<Output = Result<Option<Secret>, SourceError>> + Send;

    /// A token for the service account, from the `serviceaccounts/<name>/token` subresource (the kubelet's token
    /// manager caches them and asks again before they expire).
    fn service_account_token(
        &self,
        namespace: &str,
        service_account: &str,
        request: &TokenRequest,
    ) -> impl Future<Output = Result<String, SourceError>> + Send;
}

/// Why a volume could not be made, refreshed or removed. The messages are Kubernetes' (the kubelet prefixes them
/// with `MountVolume.SetUp failed for volume "<name>" : `).
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// A ConfigMap or Secret that is not optional does not exist (the API's NotFound message).
    #[error("{resource} \"{name}\" not found")]
    NotFound { resource: &'static str, name: String },
    #[error("configmap references non-existent config key: {0}")]
    MissingConfigMapKey(String),
    #[error("references non-existent secret key: {0}")]
    MissingSecretKey(String),
    /// The source failed (the API could not be reached, the token was refused...).
    #[error("couldn't get {what}: {source}")]
    Source {
        what: String,
        #[source]
        source: SourceError,
    },
    /// A projected file's path the atomic writer refuses.
    #[error("invalid path: {0}")]
    InvalidPath(String),
    /// A downward API field or resource that cannot be read.
    #[error("{0}")]
    DownwardApi(String),
    /// A hostPath whose `type` check failed, or which is not a valid path.
    #[error("{0}")]
    HostPath(String),
    #[error(
        "mounting a tmpfs at {path} failed: {source} (secret, downwardAPI, projected and medium: Memory \
             emptyDir volumes are tmpfs mounts: the node agent needs to run as root)"
    )]
    Tmpfs {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("unmounting {path} failed: {source}")]
    Unmount {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A volume this node does not make, or a spec it cannot use.
    #[error("{0}")]
    Unsupported(String),
    /// Several failures of one volume (Kubernetes' `utilerrors.NewAggregate`).
    #[error("{}", aggregate_message(.0))]
    Aggregate(Vec<VolumeError>),
    /// The blocking file work could not be run.
    #[error("volume task failed: {0}")]
    Task(String),
}

impl VolumeError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    /// One error for a list of them: itself for one, an aggregate for several, `None` for none.
    pub(crate) fn aggregate(mut errors: Vec<VolumeError>) -> Option<VolumeError> {
        match errors.len() {
            0 => None,
            1 => errors.pop(),
            _ => Some(Self::Aggregate(errors)),
        }
    }
}

/// `utilerrors.NewAggregate(...).Error()`: one message as it is, several as `[a, b]`, repeated messages once.
fn aggregate_message(errors: &[VolumeError]) -> String {
    let mut messages: Vec<String> = Vec::new();
    for error in errors {
        let message = error.to_string();
        if !messages.contains(&message) {
            messages.push(message);
        }
    }
    if messages.len() == 1 {
        messages.remove(0)
    } else {
        format!("[{}]", messages.join(", "))
    }
}

/// Makes a pod's volume ready to be bind-mounted into its containers: the directory (a tmpfs where Kubernetes
/// uses one), the projected files, the nested mount points, fsGroup ownership. Calling it again for a prepared
/// volume is harmless (and refreshes its files). On a failure after the directory was made, it is removed again,
/// as kubelet's plugins tear down a failed set-up.
pub async fn prepare(
    host: &VolumeHost,
    pod: &Pod,
    volume: &Volume,
    sources: &impl VolumeSources,
) -> Result<PreparedVolume, VolumeError> {
    let kind = VolumeKind::of(volume).ok_or_else(|| unsupported(volume))?;
    if kind == VolumeKind::HostPath {
        let Some(source) = volume.host_path.as_ref() else {
            return Err(unsupported(volume));
        };
        let source = source.clone();
        let path = run_blocking(move || host_path::set_up(&source)).await?;
        return Ok(PreparedVolume {
            kind,
            host_path: path,
            read_only: false,
        });
    }
    let dir = pod_volume_dir(host, pod, kind, &volume.name)?;
    let plan = plan_set_up(host, pod, volume, kind, dir.clone(), sources).await?;
    run_blocking(move || {
        let result = plan.apply();
        if result.is_err() {
            // Kubernetes' deferred TearDown on a failed SetUp: nothing half-made stays behind.
            if let Err(error) = empty_dir::tear_down(&plan.dir) {
                tracing::warn!(dir = %plan.dir.display(), %error, "removing a volume whose set-up failed");
            }
        }
        result
    })
    .await?;
    Ok(PreparedVolume {
        kind,
        host_path: dir,
        read_only: kind.is_projection(),
    })
}

/// Writes a prepared configMap, secret, downwardAPI or projected volume again from the current objects: the
/// running containers see the new files at once (through `..data`), or the old ones if this fails. Returns
/// whether anything changed; other kinds never change.
pub async fn refresh(
    host: &VolumeHost,
    pod: &Pod,
    volume: &Volume,
    sources: &impl VolumeSources,
) -> Result<bool, VolumeError> {
    let kind = VolumeKind::of(volume).ok_or_else(|| unsupported(volume))?;
    if !kind.is_projection() {
        return Ok(false);
    }
    let dir = pod_volume_dir(host, pod, kind, &volume.name)?;
    let plan = plan_set_up(host, pod, volume, kind, dir, sources).await?;
    // Unlike a first set-up, a failed refresh leaves the volume as it was: its containers are running on it.
    run_blocking(move || plan.apply()).await
}

/// Unmounts and removes a pod's volume (hostPath volumes are the host's and are left alone). A volume that is
/// already gone is not an error.
pub fn cleanup(host: &VolumeHost, pod_uid: &str, volume: &Volume) -> Result<(), VolumeError> {
    let kind = VolumeKind::of(volume).ok_or_else(|| unsupported(volume))?;
    if kind == VolumeKind::HostPath {
        return Ok(());
    }
    check_path_component("pod uid", pod_uid)?;
    check_path_component("volume name", &volume.name)?;
    empty_dir::tear_down(&host.volume_dir(pod_uid, kind, &volume.name))
}

/// Unmounts and removes every volume of a pod found on disk, then its `volumes/` directory: what the kubelet does
/// for a pod that is gone, when only its uid is left.
pub fn cleanup_pod(host: &VolumeHost, pod_uid: &str) -> Result<(), VolumeError> {
    check_path_component("pod uid", pod_uid)?;
    let volumes_dir = host.pod_volumes_dir(pod_uid);
    let plugins = match std::fs::read_dir(&volumes_dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(VolumeError::io(volumes_dir, error)),
    };
    let mut errors = Vec::new();
    for plugin in plugins {
        let plugin = plugin.map_err(|error| VolumeError::io(&volumes_dir, error))?;
        let plugin_dir = plugin.path();
        let volumes = std::fs::read_dir(&plugin_dir).map_err(|error| VolumeError::io(&plugin_dir, error))?;
        for volume in volumes {
            let volume = volume.map_err(|error| VolumeError::io(&plugin_dir, error))?;
            if let Err(error) = empty_dir::tear_down(&volume.path()) {
                errors.push(error);
            }
        }
        if let Err(error) = remove_empty_dir(&plugin_dir) {
            errors.push(error);
        }
    }
    if let Some(error) = VolumeError::aggregate(errors) {
        return Err(error);
    }
    remove_empty_dir(&volumes_dir)
}

fn remove_empty_dir(dir: &Path) -> Result<(), VolumeError> {
    match std::fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(VolumeError::io(dir, error)),
    }
}

fn unsupported(volume: &Volume) -> VolumeError {
    VolumeError::Unsupported(format!(
        "volume {:?}: no volume plugin matched (this node makes configMap, secret, downwardAPI, projected, \
         emptyDir and hostPath volumes)",
        volume.name
    ))
}

/// A uid or volume name becomes a path component: one that could leave the pod's directory is refused.
fn check_path_component(what: &str, value: &str) -> Result<(), VolumeError> {
    if value.is_empty() || value == "." || value == ".." || value.contains('/') || value.contains('\0') {
        return Err(VolumeError::Unsupported(format!("invalid {what} {value:?}")));
    }
    Ok(())
}

fn pod_volume_dir(
    host: &VolumeHost,
    pod: &Pod,
    kind: VolumeKind,
    volume_name: &str,
) -> Result<PathBuf, VolumeError> {
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    check_path_component("pod uid", uid)?;
    check_path_component("volume name", volume_name)?;
    Ok(host.volume_dir(uid, kind, volume_name))
}

/// Runs file-system work off the async executor.
async fn run_blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, VolumeError> + Send + 'static,
) -> Result<T, VolumeError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| VolumeError::Task(error.to_string()))?
}

/// Everything a set-up does on disk, gathered (from the API and the pod) before any of it is done, so that a
/// missing object or key leaves nothing behind.
#[derive(Debug)]
struct SetUpPlan {
    dir: PathBuf,
    medium: empty_dir::Medium,
    tmpfs: TmpfsPolicy,
    /// The files of a projection; `None` for an emptyDir.
    payload: Option<Payload>,
    /// Directories for other volumes mounted inside this one (`volumeutil.MakeNestedMountpoints`).
    nested_mount_points: Vec<String>,
    fs_group: Option<u32>,
}

impl SetUpPlan {
    /// Returns whether a projection's files changed (always `false` for an emptyDir).
    fn apply(&self) -> Result<bool, VolumeError> {
        empty_dir::set_up(&self.dir, &self.medium, self.tmpfs)?;
        let Some(payload) = &self.payload else {
            // emptyDir: `SetVolumeOwnership(ed, dir, fsGroup, nil)`, read-write.
            ownership::set_volume_ownership(&self.dir, self.fs_group, false)?;
            return Ok(false);
        };
        make_nested_mount_points(&self.dir, &self.nested_mount_points)?;
        let writer = AtomicWriter::new(&self.dir)?;
        // The projections change ownership of the whole volume, before the new files are published, as the
        // `setPerms` they give the writer does.
        let set_perms = |_: &str| ownership::set_volume_ownership(&self.dir, self.fs_group, true);
        writer.write(payload, Some(&set_perms))
    }
}

async fn plan_set_up(
    host: &VolumeHost,
    pod: &Pod,
    volume: &Volume,
    kind: VolumeKind,
    dir: PathBuf,
    sources: &impl VolumeSources,
) -> Result<SetUpPlan, VolumeError> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let fs_group = pod_fs_group(pod);
    let memory = || empty_dir::Medium::Memory {
        size_bytes: empty_dir::tmpfs_size(host, pod, None),
    };
    let (medium, payload) = match kind {
        VolumeKind::ConfigMap => {
            let Some(source) = volume.config_map.as_ref() else {
                return Err(unsupported(volume));
            };
            let optional = source.optional.unwrap_or(false);
            let config_map = fetch_config_map(sources, namespace, &source.name, optional).await?;
            let payload = payload::config_map_payload(
                source.items.as_deref(),
                &config_map,
                mode_or_default(source.default_mode),
                optional,
            )?;
            // configmap.go's wrappedVolumeSpec: an emptyDir on disk.
            (empty_dir::Medium::Disk, Some(payload))
        }
        VolumeKind::Secret => {
            let Some(source) = volume.secret.as_ref() else {
                return Err(unsupported(volume));
            };
            let optional = source.optional.unwrap_or(false);
            let name = source.secret_name.as_deref().unwrap_or_default();
            let secret = fetch_secret(sources, namespace, name, optional).await?;
            let payload = payload::secret_payload(
                source.items.as_deref(),
                &secret,
                mode_or_default(source.default_mode),
                optional,
            )?;
            (memory(), Some(payload))
        }
        VolumeKind::DownwardApi => {
            let Some(source) = volume.downward_api.as_ref() else {
                return Err(unsupported(volume));
            };
            let payload = downward_api::collect_data(
                source.items.as_deref().unwrap_or_default(),
                pod,
                &host.node_allocatable,
                mode_or_default(source.default_mode),
            )?;
            (memory(), Some(payload))
        }
        VolumeKind::Projected => {
            let payload = collect_projected(host, pod, volume, sources, fs_group).await?;
            (memory(), Some(payload))
        }
        VolumeKind::EmptyDir => {
            let Some(source) = volume.empty_dir.as_ref() else {
                return Err(unsupported(volume));
            };
            let medium = match source.medium.as_deref().unwrap_or_default() {
                "" => empty_dir::Medium::Disk,
                "Memory" => empty_dir::Medium::Memory {
                    size_bytes: empty_dir::tmpfs_size(host, pod, source.size_limit.as_ref()),
                },
                medium if medium.starts_with("HugePages") => {
                    return Err(VolumeError::Unsupported(format!(
                        "emptyDir medium {medium:?} is not supported by this node"
                    )));
                }
                medium => {
                    return Err(VolumeError::Unsupported(format!(
                        "unknown storage medium {medium:?}"
                    )));
                }
            };
            (medium, None)
        }
        VolumeKind::HostPath => return Err(unsupported(volume)),
    };
    let nested_mount_points = if payload.is_some() {
        nested_mount_points(&volume.name, pod)?
    } else {
        Vec::new()
    };
    Ok(SetUpPlan {
        dir,
        medium,
        tmpfs: host.tmpfs,
        payload,
        nested_mount_points,
        fs_group,
    })
}

fn mode_or_default(mode: Option<i32>) -> u32 {
    mode.and_then(|mode| u32::try_from(mode).ok())
        .map_or(DEFAULT_MODE, |mode| mode & 0o7777)
}

fn pod_fs_group(pod: &Pod) -> Option<u32> {
    let group = pod.spec.as_ref()?.security_context.as_ref()?.fs_group?;
    u32::try_from(group).ok()
}

async fn fetch_config_map(
    sources: &impl VolumeSources,
    namespace: &str,
    name: &str,
    optional: bool,
) -> Result<ConfigMap, VolumeError> {
    match sources.config_map(namespace, name).await {
        Ok(Some(config_map)) => Ok(config_map),
        // An optional ConfigMap that does not exist projects as an empty one.
        Ok(None) if optional => Ok(ConfigMap::default()),
        Ok(None) => Err(VolumeError::NotFound {
            resource: "configmap",
            name: name.to_string(),
        }),
        Err(source) => Err(VolumeError::Source {
            what: format!("configMap {namespace}/{name}"),
            source,
        }),
    }
}

async fn fetch_secret(
    sources: &impl VolumeSources,
    namespace: &str,
    name: &str,
    optional: bool,
) -> Result<Secret, VolumeError> {
    match sources.secret(namespace, name).await {
        Ok(Some(secret)) => Ok(secret),
        Ok(None) if optional => Ok(Secret::default()),
        Ok(None) => Err(VolumeError::NotFound {
            resource: "secret",
            name: name.to_string(),
        }),
        Err(source) => Err(VolumeError::Source {
            what: format!("secret {namespace}/{name}"),
            source,
        }),
    }
}

/// projected.go's `collectData`: one payload from every source, the failures of all of them aggregated.
async fn collect_projected(
    host: &VolumeHost,
    pod: &Pod,
    volume: &Volume,
    sources: &impl VolumeSources,
    fs_group: Option<u32>,
) -> Result<Payload, VolumeError> {
    let Some(projected) = volume.projected.as_ref() else {
        return Err(unsupported(volume));
    };
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let default_mode = mode_or_default(projected.default_mode);
    let fs_user = fs_user_from(pod);
    let mut errors = Vec::new();
    let mut payload = Payload::new();
    for source in projected.sources.as_deref().unwrap_or_default() {
        let part = if let Some(secret) = &source.secret {
            let optional = secret.optional.unwrap_or(false);
            match fetch_secret(sources, namespace, &secret.name, optional).await {
                Ok(object) => {
                    payload::secret_payload(secret.items.as_deref(), &object, default_mode, optional)
                }
                Err(error) => Err(error),
            }
        } else if let Some(config_map) = &source.config_map {
            let optional = config_map.optional.unwrap_or(false);
            match fetch_config_map(sources, namespace, &config_map.name, optional).await {
                Ok(object) => {
                    payload::config_map_payload(config_map.items.as_deref(), &object, default_mode, optional)
                }
                Err(error) => Err(error),
            }
        } else if let Some(downward) = &source.downward_api {
            downward_api::collect_data(
                downward.items.as_deref().unwrap_or_default(),
                pod,
                &host.node_allocatable,
                default_mode,
            )
        } else if let Some(token) = &source.service_account_token {
            service_account_token(pod, namespace, token, sources, default_mode, fs_user, fs_group).await
        } else if source.cluster_trust_bundle.is_some() {
            Err(VolumeError::Unsupported(
                "clusterTrustBundle projections are not supported by this node".to_string(),
            ))
        } else {
            Ok(Payload::new())
        };
        match part {
            Ok(part) => payload.extend(part),
            Err(error) => errors.push(error),
        }
    }
    match VolumeError::aggregate(errors) {
        Some(error) => Err(error),
        None => Ok(payload),
    }
}

async fn service_account_token(
    pod: &Pod,
    namespace: &str,
    projection: &k8s_openapi::api::core::v1::ServiceAccountTokenProjection,
    sources: &impl VolumeSources,
    default_mode: u32,
    fs_user: Option<u32>,
    fs_group: Option<u32>,
) -> Result<Payload, VolumeError> {
    let service_account = pod
        .spec
        .as_ref()
        .and_then(|spec| spec.service_account_name.as_deref())
        .unwrap_or("default");
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: projection
                .audience
                .iter()
                .filter(|a| !a.is_empty())
                .cloned()
                .collect(),
            expiration_seconds: projection.expiration_seconds,
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".to_string()),
                kind: Some("Pod".to_string()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
        },
        ..TokenRequest::default()
    };
    let token = sources
        .service_account_token(namespace, service_account, &request)
        .await
        .map_err(|source| VolumeError::Source {
            what: format!("a token for service account {namespace}/{service_account}"),
            source,
        })?;
    // projected.go: "When FsGroup is set, we depend on SetVolumeOwnership to change from 0600 to 0640."
    let mode = if fs_user.is_some() || fs_group.is_some() {
        0o600
    } else {
        default_mode
    };
    let mut payload = Payload::new();
    payload.insert(
        projection.path.clone(),
        FileProjection {
            data: token.into_bytes(),
            mode,
            fs_user,
            fs_group,
        },
    );
    Ok(payload)
}

/// `volumeutil.FsUserFrom`: the user every container runs as, when they all set the same one (container's
/// `runAsUser` over the pod's); the token file is then owned by it.
fn fs_user_from(pod: &Pod) -> Option<u32> {
    let spec = pod.spec.as_ref()?;
    let pod_user = spec
        .security_context
        .as_ref()
        .and_then(|context| context.run_as_user);
    let init = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| c.security_context.as_ref());
    let main = spec.containers.iter().map(|c| c.security_context.as_ref());
    let ephemeral = spec
        .ephemeral_containers
        .iter()
        .flatten()
        .map(|c| c.security_context.as_ref());
    let mut user = None;
    for context in init.chain(main).chain(ephemeral) {
        let effective = context.and_then(|context| context.run_as_user).or(pod_user)?;
        match user {
            Some(previous) if previous != effective => return None,
            _ => user = Some(effective),
        }
    }
    u32::try_from(user?).ok()
}

/// `getNestedMountpoints`: where other volumes are mounted inside this one (only the outermost of them), relative
/// to it, so that their mount points exist in a read-only volume.
fn nested_mount_points(volume_name: &str, pod: &Pod) -> Result<Vec<String>, VolumeError> {
    let Some(spec) = pod.spec.as_ref() else {
        return Ok(Vec::new());
    };
    let mut nested = Vec::new();
    for container in spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
    {
        let mounts = container.volume_mounts.as_deref().unwrap_or_default();
        let mut all: Vec<String> = mounts.iter().map(|m| clean_path(&m.mount_path)).collect();
        all.sort();
        for mine in mounts.iter().filter(|m| m.name == volume_name) {
            let mine = clean_path(&mine.mount_path);
            if mine.starts_with("../") {
                return Err(VolumeError::Unsupported(format!(
                    "invalid container mount point {mine}"
                )));
            }
            let prefix = format!("{mine}/");
            let mut previous: Option<String> = None;
            for mount_point in &all {
                let Some(relative) = mount_point.strip_prefix(&prefix) else {
                    continue;
                };
                if previous
                    .as_ref()
                    .is_some_and(|p| mount_point.starts_with(p.as_str()))
                {
                    continue;
                }
                previous = Some(format!("{mount_point}/"));
                nested.push(relative.to_string());
            }
        }
    }
    Ok(nested)
}

fn make_nested_mount_points(dir: &Path, nested: &[String]) -> Result<(), VolumeError> {
    for relative in nested {
        let path = dir.join(relative);
        std::fs::DirBuilder::new()
            .recursive(true)
            .create(&path)
            .map_err(|error| VolumeError::io(path, error))?;
    }
    Ok(())
}

/// Go's `path.Clean` for slash-separated paths.
pub(crate) fn clean_path(path: &str) -> String {
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|last| *last != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            part => parts.push(part),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

#[cfg(test)]
mod tests;
