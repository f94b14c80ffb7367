//! Events, as Kubernetes' components record them (`kubectl describe` lists them): a core/v1 Event per
//! (object, reason, message), its count raised when it happens again.

use std::collections::BTreeMap;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

/// The object an event is about.
#[derive(Clone, Debug)]
pub struct Involved {
    pub api_version: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl Involved {
    pub fn of<K: kube::Resource<DynamicType = ()>>(object: &K) -> Involved {
        let meta = object.meta();
        Involved {
            api_version: K::api_version(&()).into_owned(),
            kind: K::kind(&()).into_owned(),
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
            uid: meta.uid.clone().unwrap_or_default(),
        }
    }
}

/// (involved object's uid, reason, message): what makes two events the same one.
type EventKey = (String, String, String);

/// Records events for one component (`deployment-controller`, ...). Failing to record one is logged, never an
/// error of the controller's.
#[allow(missing_debug_implementations)] // kube::Client is not Debug
pub struct Recorder {
    client: kube::Client,
    component: &'static str,
    /// The node a node agent's events come from (`source.host`).
    host: Option<String>,
    /// (uid, reason, message) -> (event name, count) of events this recorder made.
    seen: Mutex<BTreeMap<EventKey, (String, i32)>>,
}

impl Recorder {
    pub fn new(client: kube::Client, component: &'static str) -> Recorder {
        Recorder {
            client,
            component,
            host: None,
            seen: Mutex::new(BTreeMap::new()),
        }
    }

    /// A recorder whose events say they come from `host` (the kubelet's: `source.host` is its node).
    pub fn on_host(client: kube::Client, component: &'static str, host: &str) -> Recorder {
        Recorder {
            host: Some(host.to_string()),
            ..Recorder::new(client, component)
        }
    }

    pub async fn normal(&self, about: &Involved, reason: &str, message: String) {
        self.record(about, "Normal", reason, message).await;
    }

    pub async fn warning(&self, about: &Involved, reason: &str, message: String) {
        self.record(about, "Warning", reason, message).await;
    }

    async fn record(&self, about: &Involved, type_: &str, reason: &str, message: String) {
        // Events about cluster-scoped objects (nodes) live in `default`, as client-go's recorder puts them.
        let namespace = if about.namespace.is_empty() {
            "default"
        } else {
            about.namespace.as_str()
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), namespace);
        let now = time_now();
        let key = (about.uid.clone(), reason.to_string(), message.clone());
        let again = self.seen.lock().ok().and_then(|seen| seen.get(&key).cloned());
        if let Some((name, count)) = again {
            let patch = json!({"count": count + 1, "lastTimestamp": now});
            if api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .is_ok()
            {
                if let Ok(mut seen) = self.seen.lock() {
                    seen.insert(key, (name, count + 1));
                }
                return;
            }
        }
        let event = json!({
            "metadata": {"generateName": format!("{}.", about.name), "namespace": namespace},
            "involvedObject": {"apiVersion": about.api_version, "kind": about.kind, "namespace": about.namespace,
                "name": about.name, "uid": about.uid},
            "reason": reason, "message": message, "type": type_, "count": 1,
            "firstTimestamp": now, "lastTimestamp": now,
            "source": {"component": self.component}, "reportingComponent": self.component,
        });
        let mut event = event;
        if let Some(host) = &self.host {
            event["source"]["host"] = json!(host);
            event["reportingInstance"] = json!(host);
        }
        let Ok(event) = serde_json::from_value::<Event>(event) else {
            return;
        };
        match api.create(&PostParams::default(), &event).await {
            Ok(created) => {
                if let (Ok(mut seen), Some(name)) = (self.seen.lock(), created.metadata.name) {
                    // A bounded memory: old entries only cost a new Event instead of a count.
                    if seen.len() > 4096 {
                        seen.clear();
                    }
                    seen.insert(key, (name, 1));
                }
            }
            Err(e) => tracing::debug!(error = %e, reason, "cannot record an event"),
        }
    }
}

/// Now, as Kubernetes writes times (RFC 3339, seconds).
pub fn time_now() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    k8s_openapi::jiff::Timestamp::from_second(now as i64)
        .map(|t| t.to_string())
        .unwrap_or_default()
}
