//! The tokens controller (kube-controller-manager's `serviceaccount-token`), for legacy token Secrets only when
//! asked: a Secret of type `kubernetes.io/service-account-token` annotated `kubernetes.io/service-account.name`
//! gets `token` (a legacy token of that account, signed by the server's service account key), `ca.crt` and
//! `namespace`, and the account's uid as `kubernetes.io/service-account.uid`; one whose account is gone (or has
//! another uid) is deleted, as kube's `syncSecret` does. No Secret is made for an account unasked.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use tokio::sync::mpsc;

use crate::work::{self, Change};
use crate::{ControllerError, kube_error};

pub const SECRET_TYPE: &str = "kubernetes.io/service-account-token";
pub const NAME_ANNOTATION: &str = "kubernetes.io/service-account.name";
pub const UID_ANNOTATION: &str = "kubernetes.io/service-account.uid";

/// Signs legacy tokens (the API server's service account key; the controllers never hold it themselves).
pub trait LegacyTokenSigner: Send + Sync + std::fmt::Debug {
    fn sign(&self, namespace: &str, account: &str, account_uid: &str, secret: &str) -> Option<String>;
}

struct Context {
    client: kube::Client,
    signer: Arc<dyn LegacyTokenSigner>,
    ca: String,
    secrets: Store<Secret>,
    accounts: Store<ServiceAccount>,
}

impl Context {
    async fn reconcile(&self, (namespace, name): (String, String)) -> Result<(), ControllerError> {
        let Some(secret) = self.secrets.get(&ObjectRef::new(&name).within(&namespace)) else {
            return Ok(());
        };
        if secret.type_.as_deref() != Some(SECRET_TYPE) || secret.metadata.deletion_timestamp.is_some() {
            return Ok(());
        }
        let annotations = secret.metadata.annotations.clone().unwrap_or_default();
        let Some(account_name) = annotations.get(NAME_ANNOTATION).filter(|n| !n.is_empty()) else {
            return Ok(());
        };
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &namespace);
        let account = self
            .accounts
            .get(&ObjectRef::new(account_name).within(&namespace));
        let account_uid = account
            .as_ref()
            .and_then(|a| a.metadata.uid.clone())
            .unwrap_or_default();
        let stale = account.is_none()
            || annotations
                .get(UID_ANNOTATION)
                .is_some_and(|uid| !uid.is_empty() && *uid != account_uid);
        if stale {
            return match api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
                Err(e) => Err(kube_error(format!(
                    "deleting the token secret {namespace}/{name}"
                ))(e)),
            };
        }
        let data = secret.data.clone().unwrap_or_default();
        let filled = ["token", "ca.crt", "namespace"]
            .iter()
            .all(|k| data.get(*k).is_some_and(|v| !v.0.is_empty()));
        if filled && annotations.get(UID_ANNOTATION) == Some(&account_uid) {
            return Ok(());
        }
        let mut updated = (*secret).clone();
        let mut data: BTreeMap<String, ByteString> = data;
        if data.get("token").is_none_or(|v| v.0.is_empty()) {
            let token = self
                .signer
                .sign(&namespace, account_name, &account_uid, &name)
                .ok_or_else(|| ControllerError::Invalid("cannot sign a legacy token".into()))?;
            data.insert("token".into(), ByteString(token.into_bytes()));
        }
        data.insert("ca.crt".into(), ByteString(self.ca.clone().into_bytes()));
        data.insert("namespace".into(), ByteString(namespace.clone().into_bytes()));
        updated.data = Some(data);
        updated
            .metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(UID_ANNOTATION.into(), account_uid);
        match api.replace(&name, &PostParams::default(), &updated).await {
            Ok(_) => Ok(()),
            // Changed meanwhile: the next event brings the new version.
            Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => Ok(()),
            Err(e) => Err(kube_error(format!("filling the token secret {namespace}/{name}"))(e)),
        }
    }
}

enum Seen {
    Secret(Change<Secret>),
    Account(Change<ServiceAccount>),
}

/// Runs the controller until its watches end; `ca` is the cluster CA's PEM.
pub async fn run(client: kube::Client, signer: Arc<dyn LegacyTokenSigner>, ca: String) {
    let (tx, rx) = mpsc::unbounded_channel();
    let secrets = work::reflect_into(Api::<Secret>::all(client.clone()), tx.clone(), Seen::Secret);
    let accounts = work::reflect_into(Api::<ServiceAccount>::all(client.clone()), tx, Seen::Account);
    let context = Context {
        client,
        signer,
        ca,
        secrets: secrets.clone(),
        accounts: accounts.clone(),
    };
    let token_secrets = {
        let secrets = secrets.clone();
        move || -> Vec<(String, String)> {
            secrets
                .state()
                .iter()
                .filter(|s| s.type_.as_deref() == Some(SECRET_TYPE))
                .flat_map(|s| work::key_of(&s.metadata))
                .collect()
        }
    };
    let keys_of = {
        let token_secrets = token_secrets.clone();
        move |seen: Seen| match seen {
            Seen::Secret(Change::Object(s)) => work::key_of(&s.metadata),
            // An account's change (or deletion) concerns the token secrets of its namespace.
            Seen::Account(Change::Object(a)) => token_secrets()
                .into_iter()
                .filter(|(ns, _)| Some(ns) == a.metadata.namespace.as_ref())
                .collect(),
            Seen::Secret(Change::Relisted) | Seen::Account(Change::Relisted) => token_secrets(),
        }
    };
    let ready = move || work::ready(&secrets) && work::ready(&accounts);
    work::run_queue(
        "serviceaccount_tokens",
        rx,
        keys_of,
        token_secrets,
        ready,
        |key| context.reconcile(key),
    )
    .await;
}
