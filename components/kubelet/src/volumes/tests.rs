#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::sync::Mutex;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{
    ConfigMapProjection, ConfigMapVolumeSource, Container, DownwardAPIProjection, DownwardAPIVolumeFile,
    DownwardAPIVolumeSource, EmptyDirVolumeSource, HostPathVolumeSource, KeyToPath, ObjectFieldSelector,
    PersistentVolumeClaimVolumeSource, PodSecurityContext, PodSpec, ProjectedVolumeSource, SecretProjection,
    SecretVolumeSource, SecurityContext, ServiceAccountTokenProjection, VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use nix::mount::MntFlags;

use super::*;

/// The API, in memory.
#[derive(Default)]
struct FakeSources {
    config_maps: Mutex<BTreeMap<String, ConfigMap>>,
    secrets: Mutex<BTreeMap<String, Secret>>,
    token_requests: Mutex<Vec<(String, String, TokenRequest)>>,
}

impl FakeSources {
    fn set_config_map(&self, name: &str, data: &[(&str, &str)]) {
        let config_map = ConfigMap {
            data: Some(data.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
            ..ConfigMap::default()
        };
        self.config_maps
            .lock()
            .unwrap()
            .insert(name.to_string(), config_map);
    }

    fn set_secret(&self, name: &str, data: &[(&str, &str)]) {
        let secret = Secret {
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                    .collect(),
            ),
            ..Secret::default()
        };
        self.secrets.lock().unwrap().insert(name.to_string(), secret);
    }
}

impl VolumeSources for FakeSources {
    async fn config_map(&self, _namespace: &str, name: &str) -> Result<Option<ConfigMap>, SourceError> {
        Ok(self.config_maps.lock().unwrap().get(name).cloned())
    }

    async fn secret(&self, _namespace: &str, name: &str) -> Result<Option<Secret>, SourceError> {
        if name == "unreachable" {
            return Err("connection refused".into());
        }
        Ok(self.secrets.lock().unwrap().get(name).cloned())
    }

    async fn service_account_token(
        &self,
        namespace: &str,
        service_account: &str,
        request: &TokenRequest,
    ) -> Result<String, SourceError> {
        self.token_requests.lock().unwrap().push((
            namespace.to_string(),
            service_account.to_string(),
            request.clone(),
        ));
        Ok(format!("token-for-{service_account}"))
    }
}

/// A kubelet root in a temporary directory that unmounts whatever a test left mounted in it, even when the test
/// fails (the guard is dropped while unwinding), before the directory is removed.
struct TestRoot {
    dir: tempfile::TempDir,
    host: VolumeHost,
}

impl TestRoot {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let host = VolumeHost::new(std::fs::canonicalize(dir.path()).unwrap());
        Self { dir, host }
    }
}

impl Drop for TestRoot {
    fn drop(&mut self) {
        let root = std::fs::canonicalize(self.dir.path()).unwrap_or_else(|_| self.dir.path().to_path_buf());
        if let Ok(points) = empty_dir::mount_points_under(&root) {
            for point in points {
                let _ = nix::mount::umount2(&point, MntFlags::MNT_DETACH);
            }
        }
    }
}

fn is_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        true
    } else {
        eprintln!("skipped: mounting tmpfs and chown need root");
        false
    }
}

fn is_tmpfs_mount(path: &Path) -> bool {
    let canonical = std::fs::canonicalize(path).unwrap();
    empty_dir::mount_points_under(&canonical)
        .unwrap()
        .contains(&canonical)
}

fn pod(volumes: Vec<Volume>) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some("web".into()),
            namespace: Some("shop".into()),
            uid: Some("8f0e-uid".into()),
            labels: Some(BTreeMap::from([("app".to_string(), "web".to_string())])),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "app".into(),
                ..Container::default()
            }],
            volumes: Some(volumes),
            ..PodSpec::default()
        }),
        ..Pod::default()
    }
}

fn config_map_volume(
    name: &str,
    config_map: &str,
    items: Option<Vec<KeyToPath>>,
    optional: Option<bool>,
) -> Volume {
    Volume {
        name: name.into(),
        config_map: Some(ConfigMapVolumeSource {
            name: config_map.into(),
            items,
            optional,
            ..ConfigMapVolumeSource::default()
        }),
        ..Volume::default()
    }
}

fn secret_volume(name: &str, secret: &str, default_mode: Option<i32>) -> Volume {
    Volume {
        name: name.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.into()),
            default_mode,
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

#[tokio::test]
async fn config_map_is_laid_out_and_updates_in_place() {
    let root = TestRoot::new();
    let sources = FakeSources::default();
    sources.set_config_map("settings", &[("color", "blue"), ("size", "L")]);
    let volume = config_map_volume("cfg", "settings", None, None);
    let pod = pod(vec![volume.clone()]);

    let prepared = prepare(&root.host, &pod, &volume, &sources).await.unwrap();
    let expected = root
        .host
        .root_dir
        .join("pods/8f0e-uid/volumes/kubernetes.io~configmap/cfg");
    assert_eq!(
        prepared,
        PreparedVolume {
            kind: VolumeKind::ConfigMap,
            host_path: expected.clone(),
            read_only: true
        }
    );
    assert_eq!(read(&expected.join("color")), "blue");
    assert_eq!(mode(&expected.join("color")), DEFAULT_MODE);
    assert_eq!(mode(&expected), 0o777);
    assert_eq!(
        std::fs::read_link(expected.join("color")).unwrap(),
        Path::new("..data/color")
    );

    // The object changes: the same path shows the new content, a dropped key goes.
    sources.set_config_map("settings", &[("color", "red")]);
    assert!(refresh(&root.host, &pod, &volume, &sources).await.unwrap());
    assert_eq!(read(&expected.join("color")), "red");
    assert!(std::fs::symlink_metadata(expected.join("size")).is_err());
    assert!(!refresh(&root.host, &pod, &volume, &sources).await.unwrap());

    // A refresh that fails (the object is gone) leaves what the containers see.
    sources.config_maps.lock().unwrap().clear();
    let error = refresh(&root.host, &pod, &volume, &sources).await.unwrap_err();
    assert_eq!(error.to_string(), "configmap \"settings\" not found");
    assert_eq!(read(&expected.join("color")), "red");

    cleanup(&root.host, "8f0e-uid", &volume).unwrap();
    assert!(!expected.exists());
    cleanup(&root.host, "8f0e-uid", &volume).unwrap();
}

#[tokio::test]
async fn items_choose_paths_and_modes() {
    let root = TestRoot::new();
    let sources = FakeSources::default();
    sources.set_config_map("settings", &[("color", "blue"), ("size", "L")]);
    let items = vec![
        KeyToPath {
            key: "color".into(),
            path: "ui/color.txt".into(),
            mode: Some(0o400),
        },
        KeyToPath {
            key: "size".into(),
            path: "size".into(),
            mode: None,
        },
    ];
    let mut volume = config_map_volume("cfg", "settings", Some(items), None);
    if let Some(source) = volume.config_map.as_mut() {
        source.default_mode = Some(0o640);
    }
    let pod = pod(vec![volume.clone()]);
    let dir = prepare(&root.host, &pod, &volume, &sources)
        .await
        .unwrap()
        .host_path;
    assert_eq!(read(&dir.join("ui/color.txt")), "blue");
    assert_eq!(mode(&dir.join("ui/color.txt")), 0o400);
    assert_eq!(mode(&dir.join("size")), 0o640);
    assert_eq!(
        std::fs::read_link(dir.join("ui")).unwrap(),
        Path::new("..data/ui")
    );
    assert!(std::fs::symlink_metadata(dir.join("color")).is_err());
}

#[tokio::test]
async fn optional_objects_and_keys() {
    let root = TestRoot::new();
    let sources = FakeSources::default();
    let missing_key = vec![KeyToPath {
        key: "absent".into(),
        path: "absent".into(),
        mode: None,
    }];

    // Required and missing: the API's message, and nothing left on disk.
    let volume = config_map_volume("cfg", "nowhere", None, None);
    let the_pod = pod(vec![volume.clone()]);
    let error = prepare(&root.host, &the_pod, &volume, &sources)
        .await
        .unwrap_err();
    assert_eq!(error.to_string(), "configmap \"nowhere\" not found");
    assert!(
        !root
            .host
            .volume_dir("8f0e-uid", VolumeKind::ConfigMap, "cfg")
            .exists()
    );

    // Optional and missing: an empty volume.
    let volume = config_map_volume("cfg", "nowhere", Some(missing_key.clone()), Some(true));
    let dir = prepare(&root.host, &the_pod, &volume, &sources)
        .await
        .unwrap()
        .host_path;
    let visible: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with(".."))
        .collect();
    assert!(visible.is_empty(), "{visible:?}");

    // A missing key of an existing object.
    sources.set_config_map("present", &[("other", "x")]);
    let volume = config_map_volume("cfg2", "present", Some(missing_key), None);
    let error = prepare(&root.host, &the_pod, &volume, &sources)
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "configmap references non-existent config key: absent"
    );

    // A source that cannot be reached is not "missing", even for an optional volume.
    let mut volume = secret_volume("s", "unreachable", None);
    if let Some(source) = volume.secret.as_mut() {
        source.optional = Some(true);
    }
    let error = prepare(&root.host, &the_pod, &volume, &sources)
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "couldn't get secret shop/unreachable: connection refused"
    );
}

#[tokio::test]
async fn secrets_are_on_a_tmpfs_that_cleanup_unmounts() {
    if !is_root() {
        return;
    }
    let root = TestRoot::new();
    let sources = FakeSources::default();
    sources.set_secret("db", &[("password", "hunter2")]);
    let volume = secret_volume("creds", "db", Some(0o400));
    let pod = pod(vec![volume.clone()]);
    let prepared = prepare(&root.host, &pod, &volume, &sources).await.unwrap();
    assert!(prepared.host_path.ends_with("volumes/kubernetes.io~secret/creds"));
    assert!(is_tmpfs_mount(&prepared.host_path));
    assert_eq!(read(&prepared.host_path.join("password")), "hunter2");
    assert_eq!(mode(&prepared.host_path.join("password")), 0o400);

    // A second set-up (the kubelet's remount) mounts nothing more.
    sources.set_secret("db", &[("password", "correct horse")]);
    prepare(&root.host, &pod, &volume, &sources).await.unwrap();
    let canonical = std::fs::canonicalize(&prepared.host_path).unwrap();
    assert_eq!(empty_dir::mount_points_under(&canonical).unwrap().len(), 1);
    assert_eq!(read(&prepared.host_path.join("password")), "correct horse");

    cleanup_pod(&root.host, "8f0e-uid").unwrap();
    assert!(
        empty_dir::mount_points_under(&root.host.root_dir)
            .unwrap()
            .is_empty()
    );
    assert!(!root.host.pod_volumes_dir("8f0e-uid").exists());
}

#[tokio::test]
async fn downward_api_volume() {
    if !is_root() {
        return;
    }
    let root = TestRoot::new();
    let volume = Volume {
        name: "info".into(),
        downward_api: Some(DownwardAPIVolumeSource {
            items: Some(vec![
                DownwardAPIVolumeFile {
                    path: "labels".into(),
                    field_ref: Some(ObjectFieldSelector {
                        field_path: "metadata.labels".into(),
                        ..ObjectFieldSelector::default()
                    }),
                    ..DownwardAPIVolumeFile::default()
                },
                DownwardAPIVolumeFile {
                    path: "name".into(),
                    field_ref: Some(ObjectFieldSelector {
                        field_path: "metadata.name".into(),
                        ..ObjectFieldSelector::default()
                    }),
                    mode: Some(0o600),
                    ..DownwardAPIVolumeFile::default()
                },
            ]),
            ..DownwardAPIVolumeSource::default()
        }),
        ..Volume::default()
    };
    let mut the_pod = pod(vec![volume.clone()]);
    let dir = prepare(&root.host, &the_pod, &volume, &FakeSources::default())
        .await
        .unwrap()
        .host_path;
    assert!(dir.ends_with("kubernetes.io~downward-api/info"));
    assert!(is_tmpfs_mount(&dir));
    assert_eq!(read(&dir.join("labels")), "app=\"web\"");
    assert_eq!(mode(&dir.join("name")), 0o600);

    // New labels show on refresh.
    the_pod.metadata.labels = Some(BTreeMap::from([
        ("app".to_string(), "web".to_string()),
        ("version".to_string(), "2".to_string()),
    ]));
    assert!(
        refresh(&root.host, &the_pod, &volume, &FakeSources::default())
            .await
            .unwrap()
    );
    assert_eq!(read(&dir.join("labels")), "app=\"web\"\nversion=\"2\"");
    cleanup(&root.host, "8f0e-uid", &volume).unwrap();
    assert!(!dir.exists());
}

fn projected_volume() -> Volume {
    Volume {
        name: "kube-api-access".into(),
        projected: Some(ProjectedVolumeSource {
            default_mode: Some(0o644),
            sources: Some(vec![
                VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        path: "token".into(),
                        expiration_seconds: Some(3607),
                        audience: None,
                    }),
                    ..VolumeProjection::default()
                },
                VolumeProjection {
                    config_map: Some(ConfigMapProjection {
                        name: "kube-root-ca.crt".into(),
                        items: Some(vec![KeyToPath {
                            key: "ca.crt".into(),
                            path: "ca.crt".into(),
                            mode: None,
                        }]),
                        optional: None,
                    }),
                    ..VolumeProjection::default()
                },
                VolumeProjection {
                    downward_api: Some(DownwardAPIProjection {
                        items: Some(vec![DownwardAPIVolumeFile {
                            path: "namespace".into(),
                            field_ref: Some(ObjectFieldSelector {
                                field_path: "metadata.namespace".into(),
                                ..ObjectFieldSelector::default()
                            }),
                            ..DownwardAPIVolumeFile::default()
                        }]),
                    }),
                    ..VolumeProjection::default()
                },
                VolumeProjection {
                    secret: Some(SecretProjection {
                        name: "extra".into(),
                        optional: Some(true),
                        items: None,
                    }),
                    ..VolumeProjection::default()
                },
            ]),
        }),
        ..Volume::default()
    }
}

#[tokio::test]
async fn projected_sources_share_one_directory() {
    if !is_root() {
        return;
    }
    let root = TestRoot::new();
    let sources = FakeSources::default();
    sources.set_config_map("kube-root-ca.crt", &[("ca.crt", "-----BEGIN CERTIFICATE-----")]);
    let volume = projected_volume();
    let mut the_pod = pod(vec![volume.clone()]);
    if let Some(spec) = the_pod.spec.as_mut() {
        spec.service_account_name = Some("builder".into());
    }
    let prepared = prepare(&root.host, &the_pod, &volume, &sources).await.unwrap();
    let dir = &prepared.host_path;
    assert!(dir.ends_with("kubernetes.io~projected/kube-api-access"));
    assert!(prepared.read_only);
    assert!(is_tmpfs_mount(dir));
    assert_eq!(read(&dir.join("token")), "token-for-builder");
    assert_eq!(read(&dir.join("ca.crt")), "-----BEGIN CERTIFICATE-----");
    assert_eq!(read(&dir.join("namespace")), "shop");
    // No fsGroup and no common user: the token gets the default mode.
    assert_eq!(mode(&dir.join("token")), 0o644);

    let requests = sources.token_requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 1);
    let (namespace, account, request) = &requests[0];
    assert_eq!((namespace.as_str(), account.as_str()), ("shop", "builder"));
    assert_eq!(request.spec.expiration_seconds, Some(3607));
    assert!(request.spec.audiences.is_empty());
    let bound = request.spec.bound_object_ref.as_ref().unwrap();
    assert_eq!(bound.kind.as_deref(), Some("Pod"));
    assert_eq!(bound.name.as_deref(), Some("web"));
    assert_eq!(bound.uid.as_deref(), Some("8f0e-uid"));

    // The optional secret appears when it is made.
    sources.set_secret("extra", &[("key", "value")]);
    assert!(refresh(&root.host, &the_pod, &volume, &sources).await.unwrap());
    assert_eq!(read(&dir.join("key")), "value");
    assert_eq!(read(&dir.join("token")), "token-for-builder");
}

#[tokio::test]
async fn projected_failures_are_aggregated() {
    let root = TestRoot::new();
    let sources = FakeSources::default();
    let volume = projected_volume();
    let mut the_pod = pod(vec![volume.clone()]);
    if let Some(spec) = the_pod.spec.as_mut()
        && let Some(source) = spec.volumes.as_mut().and_then(|v| v[0].projected.as_mut())
    {
        source.sources.as_mut().unwrap().push(VolumeProjection {
            secret: Some(SecretProjection {
                name: "required".into(),
                ..SecretProjection::default()
            }),
            ..VolumeProjection::default()
        });
    }
    let volume = the_pod.spec.as_ref().unwrap().volumes.as_ref().unwrap()[0].clone();
    let error = prepare(&root.host, &the_pod, &volume, &sources)
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "[configmap \"kube-root-ca.crt\" not found, secret \"required\" not found]"
    );
    assert!(
        !root
            .host
            .volume_dir("8f0e-uid", VolumeKind::Projected, "kube-api-access")
            .exists()
    );
}

#[tokio::test]
async fn memory_empty_dir_is_a_sized_tmpfs_and_cleanup_unmounts_it() {
    if !is_root() {
        return;
    }
    let root = TestRoot::new();
    let volume = Volume {
        name: "scratch".into(),
        empty_dir: Some(EmptyDirVolumeSource {
            medium: Some("Memory".into()),
            size_limit: Some(Quantity("8Mi".into())),
        }),
        ..Volume::default()
    };
    let the_pod = pod(vec![volume.clone()]);
    let prepared = prepare(&root.host, &the_pod, &volume, &FakeSources::default())
        .await
        .unwrap();
    assert!(!prepared.read_only);
    let dir = prepared.host_path;
    assert!(dir.ends_with("kubernetes.io~empty-dir/scratch"));
    assert!(is_tmpfs_mount(&dir));
    let stat = nix::sys::statvfs::statvfs(&dir).unwrap();
    assert_eq!(stat.blocks() * stat.fragment_size(), 8 << 20);
    std::fs::write(dir.join("data"), "x").unwrap();

    cleanup(&root.host, "8f0e-uid", &volume).unwrap();
    assert!(!dir.exists());
    assert!(
        empty_dir::mount_points_under(&root.host.root_dir)
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn disk_empty_dir_and_unsupported_kinds() {
    let root = TestRoot::new();
    let volume = Volume {
        name: "cache".into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    };
    let the_pod = pod(vec![volume.clone()]);
    let dir = prepare(&root.host, &the_pod, &volume, &FakeSources::default())
        .await
        .unwrap()
        .host_path;
    assert!(dir.is_dir());
    assert_eq!(mode(&dir), 0o777);
    assert!(!is_tmpfs_mount(&dir));

    let claim = Volume {
        name: "data".into(),
        persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
            claim_name: "data".into(),
            read_only: None,
        }),
        ..Volume::default()
    };
    let error = prepare(&root.host, &the_pod, &claim, &FakeSources::default())
        .await
        .unwrap_err();
    assert!(matches!(error, VolumeError::Unsupported(_)), "{error}");

    let huge = Volume {
        name: "huge".into(),
        empty_dir: Some(EmptyDirVolumeSource {
            medium: Some("Tape".into()),
            size_limit: None,
        }),
        ..Volume::default()
    };
    let error = prepare(&root.host, &the_pod, &huge, &FakeSources::default())
        .await
        .unwrap_err();
    assert_eq!(error.to_string(), "unknown storage medium \"Tape\"");
}

#[tokio::test]
async fn host_path_is_checked_and_returned_as_it_is() {
    let root = TestRoot::new();
    let target = root.host.root_dir.join("host-data");
    let volume = Volume {
        name: "host".into(),
        host_path: Some(HostPathVolumeSource {
            path: target.to_string_lossy().into_owned(),
            type_: Some("DirectoryOrCreate".into()),
        }),
        ..Volume::default()
    };
    let the_pod = pod(vec![volume.clone()]);
    let prepared = prepare(&root.host, &the_pod, &volume, &FakeSources::default())
        .await
        .unwrap();
    assert_eq!(prepared.host_path, target);
    assert!(!prepared.read_only);
    assert!(target.is_dir());
    // Cleanup never touches the host's path.
    cleanup(&root.host, "8f0e-uid", &volume).unwrap();
    assert!(target.is_dir());
}

#[tokio::test]
async fn fs_group_owns_projections_read_only_and_empty_dirs_read_write() {
    if !is_root() {
        return;
    }
    let root = TestRoot::new();
    let sources = FakeSources::default();
    sources.set_secret("db", &[("password", "hunter2")]);
    sources.set_config_map("kube-root-ca.crt", &[("ca.crt", "CA")]);
    let secret = secret_volume("creds", "db", Some(0o400));
    let projected = projected_volume();
    let scratch = Volume {
        name: "scratch".into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    };
    let mut the_pod = pod(vec![secret.clone(), projected.clone(), scratch.clone()]);
    if let Some(spec) = the_pod.spec.as_mut() {
        spec.security_context = Some(PodSecurityContext {
            fs_group: Some(4321),
            run_as_user: Some(1000),
            ..PodSecurityContext::default()
        });
        spec.containers[0].security_context = Some(SecurityContext::default());
    }

    let dir = prepare(&root.host, &the_pod, &secret, &sources)
        .await
        .unwrap()
        .host_path;
    let file = std::fs::metadata(dir.join("password")).unwrap();
    assert_eq!(file.gid(), 4321);
    assert_eq!(file.mode() & 0o7777, 0o440);
    let data_dir = std::fs::metadata(dir.join("..data")).unwrap();
    assert_eq!(data_dir.gid(), 4321);
    assert_eq!(data_dir.mode() & 0o2000, 0o2000, "setgid on directories");
    assert_eq!(std::fs::metadata(&dir).unwrap().gid(), 4321);

    // The token belongs to the pod's one user, group-readable through fsGroup (0600 | 0440).
    let dir = prepare(&root.host, &the_pod, &projected, &sources)
        .await
        .unwrap()
        .host_path;
    let token = std::fs::metadata(dir.join("token")).unwrap();
    assert_eq!(
        (token.uid(), token.gid(), token.mode() & 0o7777),
        (1000, 4321, 0o640)
    );
    let ca = std::fs::metadata(dir.join("ca.crt")).unwrap();
    assert_eq!((ca.uid(), ca.gid(), ca.mode() & 0o7777), (0, 4321, 0o644));

    let dir = prepare(&root.host, &the_pod, &scratch, &sources)
        .await
        .unwrap()
        .host_path;
    let meta = std::fs::metadata(&dir).unwrap();
    assert_eq!(meta.gid(), 4321);
    assert_eq!(meta.mode() & 0o7777, 0o2777);

    cleanup_pod(&root.host, "8f0e-uid").unwrap();
    assert!(
        empty_dir::mount_points_under(&root.host.root_dir)
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn nested_mount_points_exist_in_read_only_volumes() {
    let root = TestRoot::new();
    let sources = FakeSources::default();
    sources.set_config_map("settings", &[("color", "blue")]);
    let volume = config_map_volume("cfg", "settings", None, None);
    let mut the_pod = pod(vec![volume.clone()]);
    if let Some(spec) = the_pod.spec.as_mut() {
        let mount = |name: &str, path: &str| VolumeMount {
            name: name.into(),
            mount_path: path.into(),
            ..VolumeMount::default()
        };
        spec.containers[0].volume_mounts = Some(vec![
            mount("cfg", "/etc/app"),
            mount("certs", "/etc/app/certs"),
            mount("deeper", "/etc/app/certs/more"),
            mount("other", "/var/other"),
        ]);
    }
    let dir = prepare(&root.host, &the_pod, &volume, &sources)
        .await
        .unwrap()
        .host_path;
    assert!(dir.join("certs").is_dir());
    assert!(!dir.join("certs/more").exists());
    assert_eq!(read(&dir.join("color")), "blue");
}

#[test]
fn paths_are_cleaned_as_go_does() {
    assert_eq!(clean_path("a//b/./c/"), "a/b/c");
    assert_eq!(clean_path("/etc/../x"), "/x");
    assert_eq!(clean_path("./"), ".");
    assert_eq!(clean_path("../a"), "../a");
}

#[test]
fn names_that_would_leave_the_pod_directory_are_refused() {
    let host = VolumeHost::new("/unused");
    let volume = config_map_volume("..", "x", None, None);
    assert!(cleanup(&host, "uid", &volume).is_err());
    let volume = config_map_volume("ok", "x", None, None);
    assert!(cleanup(&host, "../../etc", &volume).is_err());
}

#[test]
fn fs_user_is_the_one_user_every_container_runs_as() {
    let mut the_pod = pod(Vec::new());
    assert_eq!(fs_user_from(&the_pod), None);
    let spec = the_pod.spec.as_mut().unwrap();
    spec.security_context = Some(PodSecurityContext {
        run_as_user: Some(1000),
        ..PodSecurityContext::default()
    });
    spec.containers.push(Container {
        name: "sidecar".into(),
        security_context: Some(SecurityContext {
            run_as_user: Some(1000),
            ..SecurityContext::default()
        }),
        ..Container::default()
    });
    assert_eq!(fs_user_from(&the_pod), Some(1000));
    the_pod.spec.as_mut().unwrap().containers[1].security_context = Some(SecurityContext {
        run_as_user: Some(2000),
        ..SecurityContext::default()
    });
    assert_eq!(fs_user_from(&the_pod), None);
}

#[test]
fn set_ups_can_be_spawned_on_a_multi_threaded_runtime() {
    fn assert_send<T: Send>(_: &T) {}
    let host = VolumeHost::new("/unused");
    let sources = FakeSources::default();
    let volume = config_map_volume("cfg", "settings", None, None);
    let the_pod = pod(vec![volume.clone()]);
    let set_up = prepare(&host, &the_pod, &volume, &sources);
    assert_send(&set_up);
    let update = refresh(&host, &the_pod, &volume, &sources);
    assert_send(&update);
}
