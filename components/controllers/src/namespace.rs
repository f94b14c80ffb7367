//! The namespace controller (kube-controller-manager's): a namespace being deleted (`Terminating`) is emptied of
//! every namespaced object, of every kind the API serves, and then finalized (its `kubernetes` finalizer removed
//! through `namespaces/{name}/finalize`), after which the API server deletes it. Objects that take time to go
//! (pods finishing gracefully, objects with finalizers) keep it `Terminating` until they are gone.

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, PostParams};
use kube::discovery::{Discovery, Scope, verbs};
use kube::runtime::reflector::{ObjectRef, Store};
use tokio::sync::mpsc;

use crate::work::{self, Change};
use crate::{ControllerError, kube_error};

/// The finalizer the API server puts on every namespace, and this controller removes once it is empty.
pub const FINALIZER: &str = "kubernetes";

struct Context {
    client: kube::Client,
    namespaces: Store<Namespace>,
}

impl Context {
    async fn reconcile(&self, name: String) -> Result<(), ControllerError> {
        let Some(namespace) = self.namespaces.get(&ObjectRef::new(&name)) else {
            return Ok(());
        };
        if namespace.metadata.deletion_timestamp.is_none() {
            return Ok(());
        }
        let finalizers = namespace
            .spec
            .as_ref()
            .and_then(|s| s.finalizers.clone())
            .unwrap_or_default();
        if !finalizers.iter().any(|f| f == FINALIZER) {
            return Ok(());
        }
        let discovery = Discovery::new(self.client.clone())
            .run()
            .await
            .map_err(kube_error("discovering the API's resources"))?;
        // Two passes: the first asks for every delete, the second sees what is still there (most objects go at
        // once, so a namespace usually empties in one reconcile).
        let mut remaining = 0;
        for _pass in 0..2 {
            remaining = self.delete_contents(&discovery, &name).await?;
            if remaining == 0 {
                break;
            }
        }
        if remaining > 0 {
            // A timed retry covers objects that take a while to go (graceful pods, finalizers).
            return Err(ControllerError::Waiting(format!(
                "namespace {name}: {remaining} objects still being deleted"
            )));
        }
        let mut finalized = (*namespace).clone();
        if let Some(spec) = finalized.spec.as_mut() {
            spec.finalizers = Some(finalizers.into_iter().filter(|f| f != FINALIZER).collect());
        }
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        match namespaces
            .replace_subresource("finalize", &name, &PostParams::default(), &finalized)
            .await
        {
            Ok(_) => {
                tracing::info!(namespace = %name, "namespace emptied and finalized");
                Ok(())
            }
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(kube_error(format!("finalizing namespace {name}"))(e)),
        }
    }

    /// Asks for the delete of every object in the namespace; returns how many there were.
    async fn delete_contents(&self, discovery: &Discovery, name: &str) -> Result<usize, ControllerError> {
        let mut remaining = 0;
        for group in discovery.groups() {
            for (resource, capabilities) in group.recommended_resources() {
                if capabilities.scope != Scope::Namespaced
                    || !capabilities.supports_operation(verbs::LIST)
                    || !capabilities.supports_operation(verbs::DELETE)
                {
                    continue;
                }
                let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), name, &resource);
                let objects = api
                    .list(&ListParams::default())
                    .await
                    .map_err(kube_error(format!("listing {} in {name}", resource.plural)))?;
                for object in objects.items {
                    remaining += 1;
                    if object.metadata.deletion_timestamp.is_some() {
                        continue; // already going
                    }
                    let Some(object_name) = object.metadata.name else {
                        continue;
                    };
                    match api.delete(&object_name, &DeleteParams::background()).await {
                        Ok(_) => {}
                        Err(kube::Error::Api(e)) if e.code == 404 => {}
                        Err(e) => {
                            return Err(kube_error(format!(
                                "deleting {} {name}/{object_name}",
                                resource.plural
                            ))(e));
                        }
                    }
                }
            }
        }
        Ok(remaining)
    }
}

/// Runs the controller until its watch ends.
pub async fn run(client: kube::Client) {
    let (tx, rx) = mpsc::unbounded_channel();
    let namespaces = work::reflect(Api::<Namespace>::all(client.clone()), tx);
    let context = Context {
        client,
        namespaces: namespaces.clone(),
    };
    let all = {
        let namespaces = namespaces.clone();
        move || -> Vec<String> {
            namespaces
                .state()
                .iter()
                .filter_map(|n| n.metadata.name.clone())
                .collect()
        }
    };
    let keys_of = {
        let all = all.clone();
        move |change: Change<Namespace>| match change {
            Change::Object(n) => n.metadata.name.into_iter().collect(),
            Change::Relisted => all(),
        }
    };
    let ready = move || work::ready(&namespaces);
    work::run_queue("namespace", rx, keys_of, all, ready, |name| {
        context.reconcile(name)
    })
    .await;
}
