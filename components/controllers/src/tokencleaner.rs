//! kube-controller-manager's `tokencleaner` (`pkg/controller/bootstrap/tokencleaner.go`): deletes bootstrap token
//! Secrets (`kube-system`, type `bootstrap.kubernetes.io/token`) once their `expiration` has passed, at that
//! moment (the queue looks at a Secret again when it is due).

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, Preconditions};
use kube::runtime::reflector::{ObjectRef, Store};
use tokio::sync::mpsc;

use crate::work;
use crate::{ControllerError, kube_error};

const NAMESPACE: &str = "kube-system";
const TOKEN_TYPE: &str = "bootstrap.kubernetes.io/token";

/// When a bootstrap token Secret expires, `None` when it never does (or is not one).
pub fn expiration(secret: &Secret) -> Option<k8s_openapi::jiff::Timestamp> {
    if secret.type_.as_deref() != Some(TOKEN_TYPE) {
        return None;
    }
    let raw = secret.data.as_ref()?.get("expiration")?;
    std::str::from_utf8(&raw.0).ok()?.parse().ok()
}

async fn reconcile(
    client: &kube::Client,
    secrets: &Store<Secret>,
    name: String,
) -> Result<(), ControllerError> {
    let Some(secret) = secrets.get(&ObjectRef::new(&name).within(NAMESPACE)) else {
        return Ok(());
    };
    let Some(expires) = expiration(&secret) else {
        return Ok(());
    };
    let now = k8s_openapi::jiff::Timestamp::now();
    if expires > now {
        // Looked at again soon; the queue's Waiting retry is quick, so wait here for tokens about to expire.
        let left = Duration::try_from(expires - now).unwrap_or_default();
        if left > Duration::from_secs(2) {
            return Err(ControllerError::Waiting(format!(
                "expires in {}s",
                left.as_secs()
            )));
        }
        tokio::time::sleep(left).await;
    }
    let api: Api<Secret> = Api::namespaced(client.clone(), NAMESPACE);
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: secret.metadata.uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(&name, &params).await {
        Ok(_) => {
            tracing::info!(secret = %name, "deleted an expired bootstrap token");
            Ok(())
        }
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
        Err(e) => Err(kube_error(format!("deleting {name}"))(e)),
    }
}

/// Deletes expired bootstrap tokens until the client's watches end.
pub async fn run(client: kube::Client) {
    let (tx, rx) = mpsc::unbounded_channel();
    let api: Api<Secret> = Api::namespaced(client.clone(), NAMESPACE);
    let secrets = work::reflect(api, tx);
    let all = {
        let secrets = secrets.clone();
        move || {
            secrets
                .state()
                .iter()
                .filter(|s| expiration(s).is_some())
                .filter_map(|s| s.metadata.name.clone())
                .collect::<Vec<_>>()
        }
    };
    let all_for_keys = all.clone();
    let keys_of = move |change: work::Change<Secret>| match change {
        work::Change::Object(s) if expiration(&s).is_some() => s.metadata.name.into_iter().collect(),
        work::Change::Object(_) => Vec::new(),
        work::Change::Relisted => all_for_keys(),
    };
    let ready = {
        let secrets = secrets.clone();
        move || work::ready(&secrets)
    };
    work::run_queue("tokencleaner", rx, keys_of, all, ready, |name| {
        let (client, secrets) = (client.clone(), secrets.clone());
        async move { reconcile(&client, &secrets, name).await }
    })
    .await;
}
