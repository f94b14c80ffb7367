//! The controller: reflectors of claims, volumes and classes feed caches and name the keys a change affects; the
//! house queue (`controllers::work`) reconciles each key once per burst. Every reconcile is idempotent: the
//! volume's name is the claim's uid, so a retry, a restart or a stale cache finds the volume made before, and
//! nothing is removed without a fresh read of the volume saying it is Released.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use controllers::volumebinding::claim_class;
use controllers::work::{self, Change};
use events::{Involved, Recorder};
use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, DeleteParams, PostParams, Preconditions};
use kube::runtime::reflector::{ObjectRef, Store};
use tokio::sync::mpsc;

use crate::volume::{self, HOSTNAME_LABEL, Reclaim};
use crate::{ProvisionerConfig, StorageError, dirs, kube_error};

/// What is reconciled: a volume (to reclaim), or a claim (namespace, name) to provision.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Key {
    Volume(String),
    Claim(String, String),
}

enum Seen {
    Volume(Box<Change<PersistentVolume>>),
    Claim(Box<Change<PersistentVolumeClaim>>),
    Class(Box<Change<StorageClass>>),
}

struct Context {
    client: kube::Client,
    node: String,
    storage: PathBuf,
    volumes: Store<PersistentVolume>,
    claims: Store<PersistentVolumeClaim>,
    classes: Store<StorageClass>,
    events: Recorder,
    /// The node's `kubernetes.io/hostname` label, read once (volumes are pinned by it, as local-path pins them).
    hostname: Mutex<Option<String>>,
}

impl Context {
    async fn reconcile(&self, key: Key) -> Result<(), StorageError> {
        match key {
            Key::Claim(namespace, name) => self.sync_claim(&namespace, &name).await,
            Key::Volume(name) => self.sync_volume(&name).await,
        }
    }

    async fn hostname(&self) -> Result<String, StorageError> {
        if let Some(known) = self.hostname.lock().ok().and_then(|h| h.clone()) {
            return Ok(known);
        }
        let nodes: Api<Node> = Api::all(self.client.clone());
        let node = nodes
            .get_opt(&self.node)
            .await
            .map_err(kube_error(format!("reading node {}", self.node)))?
            .ok_or_else(|| StorageError::Waiting(format!("node {} is not registered yet", self.node)))?;
        let hostname = node
            .metadata
            .labels
            .and_then(|l| l.get(HOSTNAME_LABEL).cloned())
            .unwrap_or_else(|| self.node.clone());
        if let Ok(mut known) = self.hostname.lock() {
            *known = Some(hostname.clone());
        }
        Ok(hostname)
    }

    // --- provisioning ---------------------------------------------------------------------------------------

    async fn sync_claim(&self, namespace: &str, name: &str) -> Result<(), StorageError> {
        let Some(cached) = self.claims.get(&ObjectRef::new(name).within(namespace)) else {
            return Ok(());
        };
        let class = self.classes.get(&ObjectRef::new(&claim_class(&cached)));
        let Some(class) = class.filter(|c| volume::is_ours(&cached, Some(c), &self.node)) else {
            return Ok(());
        };
        let Some(volume_name) = volume::volume_name(&cached) else {
            return Ok(());
        };
        if self.volumes.get(&ObjectRef::new(&volume_name)).is_some() {
            // Made already (sig-storage-lib-external-provisioner: "PersistentVolume already exists, skipping").
            return Ok(());
        }
        // The cache may be behind a claim that was bound or deleted meanwhile: decide on a fresh read, so that a
        // directory is never made for a claim that no longer wants one.
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), namespace);
        let Some(claim) = claims
            .get_opt(name)
            .await
            .map_err(kube_error(format!("reading claim {namespace}/{name}")))?
        else {
            return Ok(());
        };
        if claim.metadata.uid != cached.metadata.uid || !volume::is_ours(&claim, Some(&class), &self.node) {
            return Ok(());
        }
        let about = Involved::of(&claim);
        if let Some(why) = volume::refusal(&claim) {
            // Nothing changes by trying again: the claim's next change (or the resync) looks again.
            self.events.warning(&about, "ProvisioningFailed", why).await;
            return Ok(());
        }
        let hostname = self.hostname().await?;
        let (Some(dir), class_name) = (volume::volume_dir(&self.storage, &claim), claim_class(&claim)) else {
            return Ok(());
        };
        let Some(desired) = volume::desired_volume(&claim, &class, &hostname, &dir) else {
            let why = format!(
                "failed to provision volume with StorageClass {class_name:?}: {} is not a valid volume path",
                dir.display()
            );
            self.events.warning(&about, "ProvisioningFailed", why).await;
            return Ok(());
        };
        self.events
            .normal(
                &about,
                "Provisioning",
                format!("External provisioner is provisioning volume for claim \"{namespace}/{name}\""),
            )
            .await;
        if let Err(e) = self.make_dir(dir).await {
            let why = format!("failed to provision volume with StorageClass {class_name:?}: {e}");
            self.events.warning(&about, "ProvisioningFailed", why).await;
            return Err(e);
        }
        let volumes: Api<PersistentVolume> = Api::all(self.client.clone());
        match volumes.create(&PostParams::default(), &desired).await {
            Ok(_) => {}
            // An earlier attempt made it (the cache had not shown it yet): the same volume, by its name.
            Err(kube::Error::Api(s)) if s.code == 409 => return Ok(()),
            Err(e) => {
                let why = format!("failed to provision volume with StorageClass {class_name:?}: {e}");
                self.events.warning(&about, "ProvisioningFailed", why).await;
                return Err(kube_error(format!("creating volume {volume_name}"))(e));
            }
        }
        tracing::info!(volume = %volume_name, claim = %format!("{namespace}/{name}"), "provisioned");
        self.events
            .normal(
                &about,
                "ProvisioningSucceeded",
                format!("Successfully provisioned volume {volume_name}"),
            )
            .await;
        Ok(())
    }

    async fn make_dir(&self, dir: PathBuf) -> Result<(), StorageError> {
        let storage = self.storage.clone();
        tokio::task::spawn_blocking(move || dirs::create(&storage, &dir)).await?
    }

    // --- reclaiming -----------------------------------------------------------------------------------------

    async fn sync_volume(&self, name: &str) -> Result<(), StorageError> {
        let Some(cached) = self.volumes.get(&ObjectRef::new(name)) else {
            return Ok(());
        };
        // Only a Released Delete volume of ours is worth asking anything about.
        let Some((_, pinned)) = volume::path_and_node(&cached) else {
            return Ok(());
        };
        if volume::reclaim(&cached, &[&pinned]) == Reclaim::Nothing {
            return Ok(());
        }
        let hostname = self.hostname().await?;
        let names = [self.node.as_str(), hostname.as_str()];
        if volume::reclaim(&cached, &names) == Reclaim::Nothing {
            return Ok(());
        }
        // Kubernetes' deleteVolumeOperation reads the volume again before deleting anything: so does this.
        let volumes: Api<PersistentVolume> = Api::all(self.client.clone());
        let Some(live) = volumes
            .get_opt(name)
            .await
            .map_err(kube_error(format!("reading volume {name}")))?
        else {
            return Ok(());
        };
        let Reclaim::Delete { path } = volume::reclaim(&live, &names) else {
            return Ok(());
        };
        let about = Involved::of(&live);
        if !dirs::is_volume_dir(&self.storage, &path) {
            // Not a directory this provisioner makes: the volume stays, for an administrator to look at.
            let why = StorageError::OutsideStorage {
                path,
                storage: self.storage.clone(),
            };
            self.events
                .warning(
                    &about,
                    "VolumeFailedDelete",
                    format!("failed to delete volume {name}: {why}"),
                )
                .await;
            return Ok(());
        }
        if let Err(e) = self.remove_dir(path).await {
            self.events
                .warning(
                    &about,
                    "VolumeFailedDelete",
                    format!("failed to delete volume {name}: {e}"),
                )
                .await;
            return Err(e);
        }
        // Only the volume that was read: one made again under the same name is not this one.
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: live.metadata.uid.clone(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match volumes.delete(name, &params).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(e) => return Err(kube_error(format!("deleting volume {name}"))(e)),
        }
        tracing::info!(volume = %name, "deleted a released volume and its directory");
        Ok(())
    }

    async fn remove_dir(&self, path: PathBuf) -> Result<(), StorageError> {
        let storage = self.storage.clone();
        tokio::task::spawn_blocking(move || dirs::remove(&storage, &path)).await?
    }
}

fn claim_key(claim: &PersistentVolumeClaim) -> Option<Key> {
    Some(Key::Claim(
        claim.metadata.namespace.clone()?,
        claim.metadata.name.clone()?,
    ))
}

/// The storage directory of a data directory, absolute (a volume's path must be, and `-d` may be relative).
fn storage_dir(data_dir: &Path) -> PathBuf {
    std::path::absolute(data_dir)
        .unwrap_or_else(|_| data_dir.to_path_buf())
        .join("storage")
}

/// Runs the provisioner for `config.node_name` until its watches end.
pub async fn run(client: kube::Client, config: ProvisionerConfig) {
    let (tx, rx) = mpsc::unbounded_channel();
    let volumes = work::reflect_into(Api::<PersistentVolume>::all(client.clone()), tx.clone(), |c| {
        Seen::Volume(Box::new(c))
    });
    let claims = work::reflect_into(
        Api::<PersistentVolumeClaim>::all(client.clone()),
        tx.clone(),
        |c| Seen::Claim(Box::new(c)),
    );
    let classes = work::reflect_into(Api::<StorageClass>::all(client.clone()), tx, |c| {
        Seen::Class(Box::new(c))
    });
    let context = Context {
        events: Recorder::on_host(client.clone(), volume::PROVISIONER, &config.node_name),
        client,
        node: config.node_name.clone(),
        storage: storage_dir(&config.data_dir),
        volumes: volumes.clone(),
        claims: claims.clone(),
        classes: classes.clone(),
        hostname: Mutex::new(None),
    };
    let all = {
        let (volumes, claims) = (volumes.clone(), claims.clone());
        move || -> Vec<Key> {
            let volume_keys: Vec<Key> = volumes
                .state()
                .iter()
                .filter_map(|v| v.metadata.name.clone().map(Key::Volume))
                .collect();
            volume_keys
                .into_iter()
                .chain(claims.state().iter().filter_map(|c| claim_key(c)))
                .collect()
        }
    };
    let keys_of = {
        let all = all.clone();
        let claims = claims.clone();
        move |seen: Seen| -> Vec<Key> {
            match seen {
                Seen::Volume(c) => match *c {
                    Change::Relisted => all(),
                    Change::Object(v) => {
                        let mut keys: Vec<Key> =
                            v.metadata.name.clone().map(Key::Volume).into_iter().collect();
                        // A volume gone (or changed) may be what its claim waits for.
                        if let Some(r) = v.spec.as_ref().and_then(|s| s.claim_ref.as_ref())
                            && let (Some(ns), Some(name)) = (r.namespace.clone(), r.name.clone())
                        {
                            keys.push(Key::Claim(ns, name));
                        }
                        keys
                    }
                },
                Seen::Claim(c) => match *c {
                    Change::Relisted => all(),
                    Change::Object(c) => claim_key(&c).into_iter().collect(),
                },
                // A class made or changed: the claims of any class may now be ours.
                Seen::Class(c) => match *c {
                    Change::Relisted => all(),
                    Change::Object(_) => claims.state().iter().filter_map(|c| claim_key(c)).collect(),
                },
            }
        }
    };
    let ready = move || work::ready(&volumes) && work::ready(&claims) && work::ready(&classes);
    tracing::info!(node = %config.node_name, storage = %context.storage.display(), "local-path provisioner started");
    work::run_queue("local-path-provisioner", rx, keys_of, all, ready, |key| {
        let context = &context;
        async move { context.reconcile(key).await.map_err(Into::into) }
    })
    .await;
}
