//! The root CA certificate publisher (kube-controller-manager's `root-ca-cert-publisher`): every namespace that
//! is not being deleted has the ConfigMap `kube-root-ca.crt` holding the cluster CA as `ca.crt` (what the
//! `kube-api-access-*` volumes project), made again when deleted and put back when changed.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use serde_json::json;
use tokio::sync::mpsc;

use crate::work::{self, Change};
use crate::{ControllerError, kube_error};

pub const NAME: &str = "kube-root-ca.crt";
const DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.";

struct Context {
    client: kube::Client,
    ca: String,
    namespaces: Store<Namespace>,
    maps: Store<ConfigMap>,
}

impl Context {
    async fn reconcile(&self, namespace: String) -> Result<(), ControllerError> {
        let Some(ns) = self.namespaces.get(&ObjectRef::new(&namespace)) else {
            return Ok(());
        };
        if ns.metadata.deletion_timestamp.is_some() {
            return Ok(());
        }
        let data = BTreeMap::from([("ca.crt".to_string(), self.ca.clone())]);
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &namespace);
        let result = match self.maps.get(&ObjectRef::new(NAME).within(&namespace)) {
            Some(map) if map.data.as_ref() == Some(&data) => return Ok(()),
            Some(map) => {
                let mut updated = (*map).clone();
                updated.data = Some(data);
                api.replace(NAME, &PostParams::default(), &updated)
                    .await
                    .map(|_| ())
            }
            None => {
                let map: ConfigMap = serde_json::from_value(json!({
                    "metadata": {"name": NAME, "namespace": namespace,
                                 "annotations": {"kubernetes.io/description": DESCRIPTION}},
                    "data": data,
                }))
                .map_err(|e| ControllerError::Invalid(e.to_string()))?;
                api.create(&PostParams::default(), &map).await.map(|_| ())
            }
        };
        match result {
            Ok(()) => Ok(()),
            // Made meanwhile (the cache was behind), or the namespace started terminating: nothing to do.
            Err(kube::Error::Api(e)) if e.code == 409 || e.code == 403 => Ok(()),
            Err(e) => Err(kube_error(format!("publishing {NAME} in {namespace}"))(e)),
        }
    }
}

enum Seen {
    Namespace(Change<Namespace>),
    Map(Change<ConfigMap>),
}

/// Runs the controller until its watches end; `ca` is the cluster CA's PEM.
pub async fn run(client: kube::Client, ca: String) {
    let (tx, rx) = mpsc::unbounded_channel();
    let namespaces = work::reflect_into(Api::<Namespace>::all(client.clone()), tx.clone(), Seen::Namespace);
    let maps = work::reflect_into(Api::<ConfigMap>::all(client.clone()), tx, Seen::Map);
    let context = Context {
        client,
        ca,
        namespaces: namespaces.clone(),
        maps: maps.clone(),
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
            Seen::Map(Change::Object(m)) if m.metadata.name.as_deref() == Some(NAME) => {
                m.metadata.namespace.into_iter().collect()
            }
            Seen::Map(Change::Object(_)) => Vec::new(),
            Seen::Namespace(Change::Relisted) | Seen::Map(Change::Relisted) => all(),
        }
    };
    let ready = move || work::ready(&namespaces) && work::ready(&maps);
    work::run_queue("root_ca_cert_publisher", rx, keys_of, all, ready, |ns| {
        context.reconcile(ns)
    })
    .await;
}
