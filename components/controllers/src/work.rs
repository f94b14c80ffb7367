//! The machinery every controller shares: reflectors feeding caches and naming changed keys, and a queue that
//! reconciles each key once per burst of changes, retrying failures with a growing delay.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::future::Future;
use std::time::Duration;

use futures_util::StreamExt;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::Value;
use tokio::sync::mpsc;

/// A change seen by a reflector: an object (as it is now, or as it was when deleted), or "the cache was
/// (re)filled", after which everything should be reconciled.
#[derive(Debug)]
pub enum Change<K> {
    Object(K),
    Relisted,
}

/// `reflect` for a controller that follows several kinds on one channel: each change of `K` is wrapped by `wrap`
/// into the channel's type.
pub fn reflect_into<K, S>(api: Api<K>, seen: mpsc::UnboundedSender<S>, wrap: fn(Change<K>) -> S) -> Store<K>
where
    K: kube::Resource + Clone + Debug + Send + Sync + serde::de::DeserializeOwned + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Default,
    S: Send + 'static,
{
    let (tx, mut rx) = mpsc::unbounded_channel();
    let store = reflect(api, tx);
    tokio::spawn(async move {
        while let Some(change) = rx.recv().await {
            if seen.send(wrap(change)).is_err() {
                return;
            }
        }
    });
    store
}

/// Follows every object of `api`'s kind into a cache, and tells `changes` about each change, from a task of its
/// own (so that reconciles never hold the cache back).
pub fn reflect<K>(api: Api<K>, changes: mpsc::UnboundedSender<Change<K>>) -> Store<K>
where
    K: kube::Resource + Clone + Debug + Send + Sync + serde::de::DeserializeOwned + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Default,
{
    let (store, writer) = reflector::store::<K>();
    tokio::spawn(async move {
        let mut events = std::pin::pin!(reflector::reflector(
            writer,
            watcher(api, watcher::Config::default()).default_backoff()
        ));
        while let Some(event) = events.next().await {
            let change = match event {
                Ok(watcher::Event::Apply(o) | watcher::Event::Delete(o)) => Change::Object(o),
                Ok(watcher::Event::InitDone) => Change::Relisted,
                Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => continue,
                Err(e) => {
                    tracing::warn!(kind = %K::kind(&Default::default()), error = %e, "watching");
                    continue;
                }
            };
            if changes.send(change).is_err() {
                return;
            }
        }
    });
    store
}

/// True once a reflector's cache holds the whole initial list.
pub fn ready<K>(cache: &Store<K>) -> bool
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    use futures_util::FutureExt;
    cache.wait_until_ready().now_or_never().is_some_and(|r| r.is_ok())
}

/// client-go's work-queue metrics, by queue name (the controller's).
struct QueueMetrics {
    depth: metrics::GaugeVec<1>,
    adds: metrics::CounterVec<1>,
    retries: metrics::CounterVec<1>,
    work: metrics::HistogramVec<1>,
}

fn queue_metrics() -> &'static QueueMetrics {
    static METRICS: std::sync::OnceLock<QueueMetrics> = std::sync::OnceLock::new();
    METRICS.get_or_init(|| {
        // client-go's buckets: 10 ns to 10 s, by powers of ten.
        const WORK: metrics::Buckets =
            metrics::Buckets(&[1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0]);
        let m = QueueMetrics {
            depth: Default::default(),
            adds: Default::default(),
            retries: Default::default(),
            work: metrics::histogram_vec(WORK),
        };
        let r = metrics::registry();
        r.register("workqueue_depth", "Current depth of workqueue", m.depth.clone());
        r.register(
            "workqueue_adds_total",
            "Total number of adds handled by workqueue",
            m.adds.clone(),
        );
        r.register(
            "workqueue_retries_total",
            "Total number of retries handled by workqueue",
            m.retries.clone(),
        );
        r.register(
            "workqueue_work_duration_seconds",
            "How long in seconds processing an item from workqueue takes",
            m.work.clone(),
        );
        m
    })
}

/// How long the queue waits after a change for more (a burst of changes, one reconcile per key).
const BATCH_DELAY: Duration = Duration::from_millis(50);
/// Every key is reconciled again at least this often, whatever the watches say.
const RESYNC: Duration = Duration::from_secs(300);

/// Runs `reconcile` for keys as `keys_of` names them, until `changes` ends. `all_keys` lists every key (after a
/// relist and at each resync); `ready` says whether the caches are filled yet. A failed reconcile is retried
/// after 1 s, doubling up to a minute.
pub async fn run_queue<C, Key, Fut>(
    name: &'static str,
    mut changes: mpsc::UnboundedReceiver<C>,
    keys_of: impl Fn(C) -> Vec<Key>,
    all_keys: impl Fn() -> Vec<Key>,
    ready: impl Fn() -> bool,
    mut reconcile: impl FnMut(Key) -> Fut,
) where
    Key: Ord + Clone + Debug,
    Fut: Future<Output = Result<(), crate::ControllerError>>,
{
    let mut pending: BTreeSet<Key> = BTreeSet::new();
    let mut failures: BTreeMap<Key, (u32, tokio::time::Instant)> = BTreeMap::new();
    let mut due: Option<tokio::time::Instant> = None;
    let mut resync = tokio::time::Instant::now() + RESYNC;
    let m = queue_metrics();
    let queue: metrics::Labels<1> = [("name", name.to_string())];
    let depth = m.depth.get_or_create(&queue).clone();
    let adds = m.adds.get_or_create(&queue).clone();
    let retried = m.retries.get_or_create(&queue).clone();
    let work = m.work.get_or_create(&queue).clone();
    let add = |pending: &mut BTreeSet<Key>, keys: Vec<Key>| {
        for key in keys {
            if pending.insert(key) {
                adds.inc();
            }
        }
        depth.set(i64::try_from(pending.len()).unwrap_or(i64::MAX));
    };
    loop {
        let retry_at = failures.values().map(|(_, at)| *at).min();
        let wake = [due, retry_at, Some(resync)]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(resync);
        tokio::select! {
            change = changes.recv() => match change {
                None => return,
                Some(change) => {
                    add(&mut pending, keys_of(change));
                    due.get_or_insert_with(|| tokio::time::Instant::now() + BATCH_DELAY);
                }
            },
            () = tokio::time::sleep_until(wake) => {
                let now = tokio::time::Instant::now();
                if now >= resync {
                    add(&mut pending, all_keys());
                    resync = now + RESYNC;
                }
                if !ready() {
                    due = Some(now + BATCH_DELAY);
                    continue;
                }
                let retries: Vec<Key> = failures.iter().filter(|(_, (_, at))| *at <= now).map(|(k, _)| k.clone()).collect();
                retried.inc_by(retries.len() as u64);
                add(&mut pending, retries);
                due = None;
                let batch = std::mem::take(&mut pending);
                let mut left = batch.len();
                for key in batch {
                    left -= 1;
                    depth.set(i64::try_from(left).unwrap_or(i64::MAX));
                    let began = std::time::Instant::now();
                    let outcome = reconcile(key.clone()).await;
                    work.observe(metrics::seconds_since(began));
                    match outcome {
                        Ok(()) => {
                            failures.remove(&key);
                        }
                        Err(crate::ControllerError::Waiting(why)) => {
                            tracing::debug!(controller = name, ?key, %why, "waiting");
                            failures.insert(key, (0, tokio::time::Instant::now() + Duration::from_millis(500)));
                        }
                        Err(e) => {
                            let attempts = failures.get(&key).map_or(0, |(n, _)| *n) + 1;
                            let delay = Duration::from_secs(1u64 << attempts.min(6)).min(Duration::from_secs(60));
                            tracing::warn!(controller = name, ?key, error = %e, retry_in = ?delay, "reconcile failed");
                            failures.insert(key, (attempts, tokio::time::Instant::now() + delay));
                        }
                    }
                }
            }
        }
    }
}

/// The (namespace, name) key of a namespaced object, as queues of namespaced kinds hold them.
pub fn key_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Vec<(String, String)> {
    meta.namespace
        .clone()
        .zip(meta.name.clone())
        .into_iter()
        .collect()
}

/// Every (namespace, name) key in a cache of namespaced objects.
pub fn all_keys<K>(cache: &Store<K>) -> Vec<(String, String)>
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    cache.state().iter().flat_map(|o| key_of(o.meta())).collect()
}

/// A label selector's `matchLabels` (a Service's `spec.selector`) against labels.
pub fn selects(selector: &BTreeMap<String, String>, labels: Option<&BTreeMap<String, String>>) -> bool {
    selector
        .iter()
        .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

/// A `LabelSelector` (matchLabels and matchExpressions: In, NotIn, Exists, DoesNotExist) against labels. An empty
/// selector selects everything, as in Kubernetes.
pub fn label_selector_matches(
    selector: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    let value = |k: &str| labels.and_then(|l| l.get(k));
    if let Some(match_labels) = &selector.match_labels
        && !selects(match_labels, labels)
    {
        return false;
    }
    selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        match e.operator.as_str() {
            "In" => value(&e.key).is_some_and(|v| values.contains(v)),
            "NotIn" => value(&e.key).is_none_or(|v| !values.contains(v)),
            "Exists" => value(&e.key).is_some(),
            "DoesNotExist" => value(&e.key).is_none(),
            _ => false,
        }
    })
}

/// The owner reference that controls `meta`'s object, if any.
pub fn controller_of(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
}

/// True when an object's JSON form equals `desired` in every member `desired` sets (server defaults and metadata
/// the server owns are ignored).
pub fn covers(current: &Value, desired: &Value) -> bool {
    match (current, desired) {
        (Value::Object(c), Value::Object(d)) => {
            d.iter().all(|(k, v)| c.get(k).is_some_and(|cv| covers(cv, v)))
        }
        (Value::Array(c), Value::Array(d)) => {
            c.len() == d.len() && c.iter().zip(d).all(|(c, d)| covers(c, d))
        }
        (c, d) => c == d,
    }
}

/// RFC 7386 JSON merge patch of `patch` onto `target`.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(fields) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(serde_json::Map::new());
    }
    if let Value::Object(target_fields) = target {
        for (key, value) in fields {
            if value.is_null() {
                target_fields.remove(key);
            } else {
                merge_patch(target_fields.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

/// `patch` (a merge patch) written as an update of the object (`status`: of its status subresource), read
/// first: kube-controller-manager's controllers update, and their roles (`system:controller:*`) grant
/// `update`, not `patch`, of what they own. A write that races another fails with 409 and is retried.
async fn update_merged<K>(api: &Api<K>, name: &str, patch: &Value, status: bool) -> Result<K, kube::Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + Debug,
{
    let current = api.get(name).await?;
    let mut value = serde_json::to_value(&current).map_err(kube::Error::SerdeError)?;
    merge_patch(&mut value, patch);
    let updated: K = serde_json::from_value(value).map_err(kube::Error::SerdeError)?;
    let params = kube::api::PostParams::default();
    if status {
        api.replace_status(name, &params, &updated).await
    } else {
        api.replace(name, &params, &updated).await
    }
}

/// [`update_merged`] of the object.
pub async fn update<K>(api: &Api<K>, name: &str, patch: &Value) -> Result<K, kube::Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + Debug,
{
    update_merged(api, name, patch, false).await
}

/// [`update_merged`] of the object's status.
pub async fn update_status<K>(api: &Api<K>, name: &str, patch: &Value) -> Result<K, kube::Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + Debug,
{
    update_merged(api, name, patch, true).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn selectors_and_coverage() {
        let sel: BTreeMap<String, String> = [("app".to_string(), "web".to_string())].into();
        let labels: BTreeMap<String, String> =
            [("app".into(), "web".into()), ("x".into(), "y".into())].into();
        assert!(selects(&sel, Some(&labels)));
        assert!(!selects(&sel, None));
        assert!(selects(&BTreeMap::new(), None));
        assert!(covers(
            &json!({"a": 1, "b": {"c": 2, "d": 3}}),
            &json!({"b": {"c": 2}})
        ));
        assert!(!covers(&json!({"a": [1, 2]}), &json!({"a": [1]})));
        assert!(!covers(&json!({"a": 1}), &json!({"b": null})));
    }

    #[test]
    fn merge_patches_merge_as_rfc_7386_says() {
        let mut target = serde_json::json!({"a": {"b": 1, "c": 2}, "d": [1], "e": "x"});
        super::merge_patch(
            &mut target,
            &serde_json::json!({"a": {"b": 3, "c": null}, "d": [2], "f": {"g": 1}}),
        );
        assert_eq!(
            target,
            serde_json::json!({"a": {"b": 3}, "d": [2], "e": "x", "f": {"g": 1}})
        );
    }
}
