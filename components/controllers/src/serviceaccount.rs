//! The service account controller (kube-controller-manager's): every namespace that is not being deleted has a
//! `default` ServiceAccount, made again if it is deleted.

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use serde_json::json;
use tokio::sync::mpsc;

use crate::work::{self, Change};
use crate::{ControllerError, kube_error};

pub const DEFAULT: &str = "default";

struct Context {
    client: kube::Client,
    namespaces: Store<Namespace>,
    accounts: Store<ServiceAccount>,
}

impl Context {
    async fn reconcile(&self, namespace: String) -> Result<(), ControllerError> {
        let Some(ns) = self.namespaces.get(&ObjectRef::new(&namespace)) else {
            return Ok(());
        };
        if ns.metadata.deletion_timestamp.is_some()
            || self
                .accounts
                .get(&ObjectRef::new(DEFAULT).within(&namespace))
                .is_some()
        {
            return Ok(());
        }
        let account: ServiceAccount =
            serde_json::from_value(json!({"metadata": {"name": DEFAULT, "namespace": namespace}}))
                .map_err(|e| ControllerError::Invalid(e.to_string()))?;
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), &namespace);
        match api.create(&PostParams::default(), &account).await {
            Ok(_) => Ok(()),
            // Exists (the cache was behind), or the namespace started terminating meanwhile: nothing to do.
            Err(kube::Error::Api(e)) if e.code == 409 || e.code == 403 => Ok(()),
            Err(e) => Err(kube_error(format!(
                "creating the default service account in {namespace}"
            ))(e)),
        }
    }
}

enum Seen {
    Namespace(Change<Namespace>),
    Account(Change<ServiceAccount>),
}

/// Runs the controller until its watches end.
pub async fn run(client: kube::Client) {
    let (namespaces_tx, mut namespaces_rx) = mpsc::unbounded_channel();
    let (accounts_tx, mut accounts_rx) = mpsc::unbounded_channel();
    let namespaces = work::reflect(Api::<Namespace>::all(client.clone()), namespaces_tx);
    let accounts = work::reflect(Api::<ServiceAccount>::all(client.clone()), accounts_tx);
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let seen = tokio::select! {
                Some(c) = namespaces_rx.recv() => Seen::Namespace(c),
                Some(c) = accounts_rx.recv() => Seen::Account(c),
                else => return,
            };
            if tx.send(seen).is_err() {
                return;
            }
        }
    });
    let context = Context {
        client,
        namespaces: namespaces.clone(),
        accounts: accounts.clone(),
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
        move |seen: Seen| match seen {
            Seen::Namespace(Change::Object(n)) => n.metadata.name.into_iter().collect(),
            Seen::Account(Change::Object(a)) => a.metadata.namespace.into_iter().collect(),
            Seen::Namespace(Change::Relisted) | Seen::Account(Change::Relisted) => all(),
        }
    };
    let ready = move || work::ready(&namespaces) && work::ready(&accounts);
    work::run_queue("serviceaccount", rx, keys_of, all, ready, |ns| {
        context.reconcile(ns)
    })
    .await;
}
