//! The garbage collector (kube-controller-manager's), by `ownerReferences`:
//!
//! - an object all of whose owners are gone is deleted (what a Background delete of the owner leaves to it);
//!   owners that are gone are dropped from an object that still has others;
//! - an owner deleted with `propagationPolicy: Foreground` (the `foregroundDeletion` finalizer) has its dependents
//!   deleted, in the foreground too, and keeps its finalizer until no dependent with `blockOwnerDeletion` is left;
//! - an owner deleted with `propagationPolicy: Orphan` (the `orphan` finalizer) has its reference removed from every
//!   dependent, then loses the finalizer.
//!
//! Reflectors follow every kind the API serves that can be listed, watched and deleted (events excepted, as in
//! Kubernetes). Each burst of changes triggers one sweep over the caches, which acts only where the cluster is not
//! as it should be; an owner that looks absent is confirmed with a live read before anything is deleted, since the
//! caches of different kinds may lag one another.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PropagationPolicy};
use kube::discovery::{Discovery, Scope, verbs};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use tokio::sync::mpsc;

use crate::{ControllerError, kube_error};

pub const FOREGROUND: &str = "foregroundDeletion";
pub const ORPHAN: &str = "orphan";

/// One kind the collector follows.
struct Kind {
    resource: ApiResource,
    namespaced: bool,
    cache: Store<DynamicObject>,
    /// The reflector feeding `cache`, stopped when the kind is no longer served.
    reflector: tokio::task::AbortHandle,
}

/// What a sweep decides for one object.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Delete it (all its owners are gone), in the background.
    Delete,
    /// Delete it in the foreground (its owner is being deleted in the foreground).
    DeleteForeground,
    /// Keep only these owner references.
    KeepOwners(Vec<String>),
    /// Drop this finalizer (its work is done).
    DropFinalizer(&'static str),
}

fn finalizers(o: &DynamicObject) -> &[String] {
    o.metadata.finalizers.as_deref().unwrap_or_default()
}

/// Decides what an owner being deleted needs: `dependents` are the objects referring to it.
pub fn owner_actions(owner: &DynamicObject, dependents: &[&DynamicObject]) -> Vec<(usize, Action)> {
    let mut out = Vec::new();
    let uid = owner.metadata.uid.clone().unwrap_or_default();
    if owner.metadata.deletion_timestamp.is_none() {
        return out;
    }
    if finalizers(owner).iter().any(|f| f == ORPHAN) {
        for (i, d) in dependents.iter().enumerate() {
            let keep: Vec<String> = d
                .metadata
                .owner_references
                .iter()
                .flatten()
                .filter(|r| r.uid != uid)
                .map(|r| r.uid.clone())
                .collect();
            out.push((i, Action::KeepOwners(keep)));
        }
        if dependents.is_empty() {
            out.push((usize::MAX, Action::DropFinalizer(ORPHAN)));
        }
        return out;
    }
    if finalizers(owner).iter().any(|f| f == FOREGROUND) {
        let mut blocking = 0;
        for (i, d) in dependents.iter().enumerate() {
            let blocks = d
                .metadata
                .owner_references
                .iter()
                .flatten()
                .any(|r| r.uid == uid && r.block_owner_deletion == Some(true));
            if blocks {
                blocking += 1;
            }
            if d.metadata.deletion_timestamp.is_none() {
                out.push((i, Action::DeleteForeground));
            }
        }
        if blocking == 0 {
            out.push((usize::MAX, Action::DropFinalizer(FOREGROUND)));
        }
    }
    out
}

struct Collector {
    client: kube::Client,
    discovery: Discovery,
    kinds: Vec<Kind>,
}

impl Collector {
    fn api_for(
        &self,
        resource: &ApiResource,
        namespaced: bool,
        namespace: Option<&str>,
    ) -> Api<DynamicObject> {
        match (namespaced, namespace) {
            (true, Some(ns)) => Api::namespaced_with(self.client.clone(), ns, resource),
            _ => Api::all_with(self.client.clone(), resource),
        }
    }

    /// True when the owner `reference` names is gone (checked live: absent, or a different object by that name).
    async fn owner_gone(
        &self,
        reference: &k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference,
        namespace: Option<&str>,
    ) -> Result<bool, ControllerError> {
        let (group, version) = match reference.api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", reference.api_version.as_str()),
        };
        let gvk = kube::api::GroupVersionKind::gvk(group, version, &reference.kind);
        let (resource, capabilities) = match self.discovery.resolve_gvk(&gvk) {
            Some(found) => found,
            // A kind served since the collector started (a CustomResourceDefinition's) is looked up now. One the
            // API does not serve is not taken as a gone owner: as kube-controller-manager's collector, which
            // requeues an owner it cannot map rather than delete its dependents, it waits.
            None => match kube::discovery::pinned_kind(&self.client, &gvk).await {
                Ok(found) => found,
                Err(_) => return Ok(false),
            },
        };
        let api = self.api_for(&resource, capabilities.scope == Scope::Namespaced, namespace);
        match api.get_opt(&reference.name).await {
            Ok(Some(owner)) => Ok(owner.metadata.uid.as_deref() != Some(reference.uid.as_str())),
            Ok(None) => Ok(true),
            Err(e) => Err(kube_error(format!(
                "reading owner {} {}",
                reference.kind, reference.name
            ))(e)),
        }
    }

    async fn act(&self, kind: &Kind, object: &DynamicObject, action: Action) -> Result<(), ControllerError> {
        let name = object.metadata.name.clone().unwrap_or_default();
        let api = self.api_for(
            &kind.resource,
            kind.namespaced,
            object.metadata.namespace.as_deref(),
        );
        let what = format!("{} {}", kind.resource.plural, name);
        let result = match action {
            Action::Delete | Action::DeleteForeground => {
                let policy = if action == Action::Delete {
                    PropagationPolicy::Background
                } else {
                    PropagationPolicy::Foreground
                };
                let mut params = DeleteParams {
                    propagation_policy: Some(policy.clone()),
                    ..DeleteParams::default()
                };
                // Only this object, as it was seen: not one made again under its name since.
                params.preconditions = object.metadata.uid.clone().map(|uid| kube::api::Preconditions {
                    uid: Some(uid),
                    resource_version: None,
                });
                tracing::info!(object = %what, ?policy, "garbage collecting");
                api.delete(&name, &params).await.map(|_| ())
            }
            Action::KeepOwners(uids) => {
                let keep: Vec<_> = object
                    .metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .filter(|r| uids.contains(&r.uid))
                    .cloned()
                    .collect();
                let patch = json!({"metadata": {"ownerReferences": keep, "resourceVersion": object.metadata.resource_version}});
                api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map(|_| ())
            }
            Action::DropFinalizer(finalizer) => {
                let keep: Vec<&String> = finalizers(object).iter().filter(|f| *f != finalizer).collect();
                let patch = json!({"metadata": {"finalizers": keep, "resourceVersion": object.metadata.resource_version}});
                api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map(|_| ())
            }
        };
        match result {
            Ok(()) => Ok(()),
            // Gone already, or changed since the caches saw it: the next sweep looks again.
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
            Err(e) => Err(kube_error(what)(e)),
        }
    }

    /// One pass over every cached object. Returns whether anything failed (the caller sweeps again later).
    async fn sweep(&self) -> bool {
        let all: Vec<(usize, Arc<DynamicObject>)> = self
            .kinds
            .iter()
            .enumerate()
            .flat_map(|(i, k)| k.cache.state().into_iter().map(move |o| (i, o)))
            .collect();
        let uids: BTreeSet<String> = all.iter().filter_map(|(_, o)| o.metadata.uid.clone()).collect();
        let mut dependents: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (n, (_, o)) in all.iter().enumerate() {
            for r in o.metadata.owner_references.iter().flatten() {
                dependents.entry(r.uid.clone()).or_default().push(n);
            }
        }
        let mut failed = false;
        for (kind_index, object) in &all {
            let kind = &self.kinds[*kind_index];
            // Owners being deleted with Foreground or Orphan.
            if object.metadata.deletion_timestamp.is_some() {
                let uid = object.metadata.uid.clone().unwrap_or_default();
                let deps: Vec<usize> = dependents.get(&uid).cloned().unwrap_or_default();
                let dep_objects: Vec<&DynamicObject> = deps.iter().map(|n| all[*n].1.as_ref()).collect();
                for (i, action) in owner_actions(object, &dep_objects) {
                    let result = if i == usize::MAX {
                        self.act(kind, object, action).await
                    } else {
                        let (dep_kind, dep) = &all[deps[i]];
                        self.act(&self.kinds[*dep_kind], dep, action).await
                    };
                    if let Err(e) = result {
                        tracing::warn!(error = %e, "garbage collector");
                        failed = true;
                    }
                }
            }
            // Dependents whose owners are gone.
            let references: Vec<_> = object
                .metadata
                .owner_references
                .iter()
                .flatten()
                .cloned()
                .collect();
            if references.is_empty() || object.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let mut gone = Vec::new();
            for r in &references {
                if uids.contains(&r.uid) {
                    continue;
                }
                match self.owner_gone(r, object.metadata.namespace.as_deref()).await {
                    Ok(true) => gone.push(r.uid.clone()),
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "garbage collector");
                        failed = true;
                    }
                }
            }
            if gone.is_empty() {
                continue;
            }
            let action = if gone.len() == references.len() {
                Action::Delete
            } else {
                Action::KeepOwners(
                    references
                        .iter()
                        .filter(|r| !gone.contains(&r.uid))
                        .map(|r| r.uid.clone())
                        .collect(),
                )
            };
            if let Err(e) = self.act(kind, object, action).await {
                tracing::warn!(error = %e, "garbage collector");
                failed = true;
            }
        }
        failed
    }
}

/// Runs the collector until the server stops.
/// How often the collector looks for kinds served since it started (kube-controller-manager resyncs its
/// monitors every 30 s), such as those CustomResourceDefinitions add.
const REDISCOVER_EVERY: Duration = Duration::from_secs(30);

/// Starts a reflector (feeding `tx` a tick per change) for every kind of `discovery` the collector can follow and
/// is not following yet.
fn follow_new_kinds(
    client: &kube::Client,
    discovery: &Discovery,
    kinds: &mut Vec<Kind>,
    tx: &mpsc::UnboundedSender<()>,
) {
    for group in discovery.groups() {
        for (resource, capabilities) in group.recommended_resources() {
            let ignored = resource.plural == "events";
            if ignored
                || !capabilities.supports_operation(verbs::LIST)
                || !capabilities.supports_operation(verbs::WATCH)
                || !capabilities.supports_operation(verbs::DELETE)
                || kinds
                    .iter()
                    .any(|k| k.resource.group == resource.group && k.resource.plural == resource.plural)
            {
                continue;
            }
            let writer = reflector::store::Writer::<DynamicObject>::new(resource.clone());
            let cache = writer.as_reader();
            let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
            let tx = tx.clone();
            let reflector = tokio::spawn(async move {
                let stream =
                    reflector::reflector(writer, watcher(api, watcher::Config::default()).default_backoff());
                let mut stream = std::pin::pin!(stream);
                while let Some(event) = stream.next().await {
                    if event.is_ok() && tx.send(()).is_err() {
                        return;
                    }
                }
            });
            kinds.push(Kind {
                namespaced: capabilities.scope == Scope::Namespaced,
                resource,
                cache,
                reflector: reflector.abort_handle(),
            });
        }
    }
}

pub async fn run(client: kube::Client) {
    let discovery = loop {
        match Discovery::new(client.clone()).run().await {
            Ok(d) => break d,
            Err(e) => {
                tracing::warn!(error = %e, "garbage collector: discovering the API; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let mut kinds = Vec::new();
    follow_new_kinds(&client, &discovery, &mut kinds, &tx);
    let mut collector = Collector {
        client,
        discovery,
        kinds,
    };
    let mut retry = false;
    let mut next_discovery = tokio::time::Instant::now() + REDISCOVER_EVERY;
    loop {
        let wait = if retry {
            Duration::from_secs(1)
        } else {
            REDISCOVER_EVERY
        };
        if let Ok(None) = tokio::time::timeout(wait, rx.recv()).await {
            return;
        }
        if tokio::time::Instant::now() >= next_discovery {
            next_discovery = tokio::time::Instant::now() + REDISCOVER_EVERY;
            match Discovery::new(collector.client.clone()).run().await {
                Ok(discovery) => {
                    // Kinds no longer served (a deleted CRD's) are dropped, so their caches never hold a sweep.
                    collector.kinds.retain(|k| {
                        let served = discovery
                            .groups()
                            .flat_map(|g| g.recommended_resources())
                            .any(|(r, _)| r.group == k.resource.group && r.plural == k.resource.plural);
                        if !served {
                            k.reflector.abort();
                        }
                        served
                    });
                    follow_new_kinds(&collector.client, &discovery, &mut collector.kinds, &tx);
                    collector.discovery = discovery;
                }
                Err(e) => tracing::warn!(error = %e, "garbage collector: discovering the API again"),
            }
        }
        // A burst of changes is one sweep.
        tokio::time::sleep(Duration::from_millis(50)).await;
        while rx.try_recv().is_ok() {}
        if !collector.kinds.iter().all(|k| crate::work::ready(&k.cache)) {
            retry = true;
            continue;
        }
        retry = collector.sweep().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(v: serde_json::Value) -> DynamicObject {
        serde_json::from_value(v).unwrap()
    }

    fn owned_by(uid: &str, block: bool) -> DynamicObject {
        object(
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "d", "uid": format!("d-{uid}"),
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "o", "uid": uid, "blockOwnerDeletion": block}]}}),
        )
    }

    #[test]
    fn foreground_deletes_dependents_then_drops_its_finalizer() {
        let owner = object(
            json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "o", "uid": "u1",
            "deletionTimestamp": "2026-01-01T00:00:00Z", "finalizers": ["foregroundDeletion"]}}),
        );
        let blocking = owned_by("u1", true);
        let actions = owner_actions(&owner, &[&blocking]);
        assert_eq!(
            actions,
            vec![(0, Action::DeleteForeground)],
            "waits for the blocking dependent"
        );
        let loose = owned_by("u1", false);
        let actions = owner_actions(&owner, &[&loose]);
        assert!(actions.contains(&(usize::MAX, Action::DropFinalizer(FOREGROUND))));
        assert_eq!(
            owner_actions(&owner, &[]),
            vec![(usize::MAX, Action::DropFinalizer(FOREGROUND))]
        );
    }

    #[test]
    fn orphan_releases_dependents_then_drops_its_finalizer() {
        let owner = object(
            json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "o", "uid": "u1",
            "deletionTimestamp": "2026-01-01T00:00:00Z", "finalizers": ["orphan"]}}),
        );
        let dep = owned_by("u1", true);
        assert_eq!(
            owner_actions(&owner, &[&dep]),
            vec![(0, Action::KeepOwners(vec![]))]
        );
        assert_eq!(
            owner_actions(&owner, &[]),
            vec![(usize::MAX, Action::DropFinalizer(ORPHAN))]
        );
        let alive =
            object(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "o", "uid": "u2"}}));
        assert!(owner_actions(&alive, &[&dep]).is_empty());
    }
}
