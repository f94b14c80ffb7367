//! The Job controller (kube-controller-manager's): runs `parallelism` pods at a time until `completions` of them
//! succeed (each index once, for `completionMode: Indexed`), replaces failed pods with an exponential back-off
//! (10 s, doubling, at most 6 minutes) until `backoffLimit` failures, honours `activeDeadlineSeconds`, `suspend`
//! and the basics of `podFailurePolicy` (FailJob, Ignore, Count on exit codes and pod conditions), and deletes a
//! finished Job after `ttlSecondsAfterFinished` (the TTL-after-finished controller's job).
//!
//! Status as Kubernetes writes it: counts, `startTime`, `completionTime`, and `SuccessCriteriaMet` then `Complete`,
//! or `FailureTarget` then `Failed` (with `BackoffLimitExceeded`, `DeadlineExceeded` or `PodFailurePolicy`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::events::{Involved, Recorder, time_now};
use crate::replicaset::is_ready;
use crate::work::{self, Change, controller_of};
use crate::{ControllerError, kube_error};

type Key = (String, String);

pub const INDEX_ANNOTATION: &str = "batch.kubernetes.io/job-completion-index";

fn now_seconds() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

fn index_of(pod: &Pod) -> Option<i32> {
    pod.metadata
        .annotations
        .as_ref()?
        .get(INDEX_ANNOTATION)?
        .parse()
        .ok()
}

/// The back-off before the next pod after `failures` failures: 10 s, doubling, at most 6 minutes.
pub fn backoff(failures: i32) -> Duration {
    if failures <= 0 {
        return Duration::ZERO;
    }
    let exponent = u32::try_from(failures - 1).unwrap_or(0).min(6);
    Duration::from_secs(10 * (1u64 << exponent)).min(Duration::from_secs(360))
}

/// What `podFailurePolicy` says of a failed pod: `FailJob`, `Ignore` or `Count` (also when no rule matches).
pub fn failure_action(job: &Job, pod: &Pod) -> String {
    let Some(policy) = job.spec.as_ref().and_then(|s| s.pod_failure_policy.as_ref()) else {
        return "Count".into();
    };
    let statuses = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.clone())
        .unwrap_or_default();
    for rule in &policy.rules {
        if let Some(codes) = &rule.on_exit_codes {
            // Containers that exited 0 are never matched (Kubernetes' rule), whatever the operator.
            let matched = statuses.iter().any(|c| {
                let exit = c
                    .state
                    .as_ref()
                    .and_then(|s| s.terminated.as_ref())
                    .map(|t| t.exit_code)
                    .filter(|code| *code != 0);
                let container_ok = codes.container_name.as_ref().is_none_or(|n| n == &c.name);
                exit.filter(|_| container_ok).is_some_and(|code| {
                    let listed = codes.values.contains(&code);
                    if codes.operator == "In" { listed } else { !listed }
                })
            });
            if matched {
                return rule.action.clone();
            }
        }
        for pattern in rule.on_pod_conditions.iter().flatten() {
            let conditions = pod.status.as_ref().and_then(|s| s.conditions.as_ref());
            let status = if pattern.status.is_empty() {
                "True"
            } else {
                pattern.status.as_str()
            };
            if conditions.is_some_and(|c| c.iter().any(|c| c.type_ == pattern.type_ && c.status == status)) {
                return rule.action.clone();
            }
        }
    }
    "Count".into()
}

struct Context {
    client: kube::Client,
    /// kube-controller-manager's ttl-after-finished controller's client: deleting finished Jobs is its job,
    /// not the job controller's (whose role has no `delete` of jobs).
    ttl_client: kube::Client,
    jobs: Store<Job>,
    pods: Store<Pod>,
    events: Recorder,
    /// Pods created per Job and not yet seen (the same guard as the ReplicaSet controller's).
    created: std::sync::Mutex<BTreeMap<Key, (BTreeSet<String>, std::time::Instant)>>,
}

impl Context {
    fn in_flight(&self, key: &Key, pods: &[Arc<Pod>]) -> bool {
        let Ok(mut all) = self.created.lock() else {
            return false;
        };
        let Some((names, since)) = all.get_mut(key) else {
            return false;
        };
        names.retain(|n| {
            !pods
                .iter()
                .any(|p| p.metadata.name.as_deref() == Some(n.as_str()))
        });
        if names.is_empty() || since.elapsed() > Duration::from_secs(30) {
            all.remove(key);
            return false;
        }
        true
    }

    async fn reconcile(&self, key: Key) -> Result<(), ControllerError> {
        let (namespace, name) = key.clone();
        let Some(job) = self.jobs.get(&ObjectRef::new(&name).within(&namespace)) else {
            return Ok(());
        };
        if job.metadata.deletion_timestamp.is_some() {
            return Ok(());
        }
        let uid = job.metadata.uid.clone().unwrap_or_default();
        let spec = job.spec.clone().unwrap_or_default();
        let status = job.status.clone().unwrap_or_default();
        let api: Api<Job> = Api::namespaced(self.client.clone(), &namespace);
        let about = Involved::of(job.as_ref());
        let finished_at = status
            .conditions
            .iter()
            .flatten()
            .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
            .and_then(|c| c.last_transition_time.as_ref().map(|t| t.0.as_second()));
        if let Some(at) = finished_at {
            // TTL after finished.
            if let Some(ttl) = spec.ttl_seconds_after_finished {
                let left = at + i64::from(ttl) - now_seconds();
                if left <= 0 {
                    let ttl_api: Api<Job> = Api::namespaced(self.ttl_client.clone(), &namespace);
                    match ttl_api.delete(&name, &DeleteParams::background()).await {
                        Ok(_) => return Ok(()),
                        Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
                        Err(e) => {
                            return Err(kube_error(format!("deleting finished job {namespace}/{name}"))(e));
                        }
                    }
                }
                return Err(ControllerError::Waiting(format!(
                    "job {namespace}/{name}: ttl {left}s left"
                )));
            }
            return Ok(());
        }
        let pods: Vec<Arc<Pod>> = self
            .pods
            .state()
            .into_iter()
            .filter(|p| p.metadata.namespace.as_deref() == Some(namespace.as_str()))
            .filter(|p| controller_of(&p.metadata).is_some_and(|o| o.uid == uid))
            .collect();
        if self.in_flight(&key, &pods) {
            return Err(ControllerError::Waiting(format!(
                "job {namespace}/{name}: pods in flight"
            )));
        }
        let indexed = spec.completion_mode.as_deref() == Some("Indexed");
        let completions = spec.completions;
        let parallelism = spec.parallelism.unwrap_or(1).max(0);
        let active: Vec<&Arc<Pod>> = pods
            .iter()
            .filter(|p| {
                p.metadata.deletion_timestamp.is_none() && !matches!(phase(p), "Succeeded" | "Failed")
            })
            .collect();
        let succeeded_pods: Vec<&Arc<Pod>> = pods.iter().filter(|p| phase(p) == "Succeeded").collect();
        let failed_pods: Vec<&Arc<Pod>> = pods.iter().filter(|p| phase(p) == "Failed").collect();
        let mut fail_reason: Option<(&str, String)> = None;
        let mut counted_failures = 0;
        for pod in &failed_pods {
            match failure_action(&job, pod).as_str() {
                "FailJob" => {
                    fail_reason = Some((
                        "PodFailurePolicy",
                        format!(
                            "Pod {namespace}/{} has condition or exit code matching FailJob rule",
                            pod.metadata.name.clone().unwrap_or_default()
                        ),
                    ));
                }
                "Ignore" => {}
                _ => counted_failures += 1,
            }
        }
        let completed_indexes: BTreeSet<i32> = succeeded_pods.iter().filter_map(|p| index_of(p)).collect();
        let succeeded = if indexed {
            completed_indexes.len() as i32
        } else {
            succeeded_pods.len() as i32
        };
        let complete = match completions {
            Some(c) => succeeded >= c,
            // A work queue: done when one pod succeeded and none is still running.
            None => succeeded > 0 && active.is_empty(),
        };
        let backoff_limit = spec.backoff_limit.unwrap_or(6);
        if fail_reason.is_none() && counted_failures > backoff_limit {
            fail_reason = Some((
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit".into(),
            ));
        }
        let start = status.start_time.as_ref().map(|t| t.0.as_second());
        if let (None, Some(deadline), Some(start)) = (&fail_reason, spec.active_deadline_seconds, start)
            && now_seconds() - start >= deadline
        {
            fail_reason = Some((
                "DeadlineExceeded",
                "Job was active longer than specified deadline".into(),
            ));
        }
        let pods_api: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
        let suspended = spec.suspend.unwrap_or(false);
        let mut created_now = Vec::new();
        let mut waiting_for_backoff = None;
        if fail_reason.is_some() || complete || suspended {
            // Nothing more runs: what is still running is stopped.
            for pod in &active {
                if let Some(pod_name) = &pod.metadata.name {
                    let _ = pods_api.delete(pod_name, &DeleteParams::default()).await;
                }
            }
        } else {
            let remaining = completions.map(|c| (c - succeeded).max(0)).unwrap_or(parallelism);
            let want = parallelism.min(remaining) - active.len() as i32;
            // Failed pods are replaced only after the back-off since the newest failure.
            let last_failure = failed_pods
                .iter()
                .filter_map(|p| {
                    p.status
                        .as_ref()
                        .and_then(|s| s.container_statuses.as_ref())
                        .and_then(|c| {
                            c.iter()
                                .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref())
                                .max()
                        })
                        .map(|t| t.0.as_second())
                        .or_else(|| p.metadata.creation_timestamp.as_ref().map(|t| t.0.as_second()))
                })
                .max();
            let delay = backoff(counted_failures).as_secs() as i64;
            let ready_at = last_failure.map_or(0, |t| t + delay);
            if want > 0 && counted_failures > 0 && now_seconds() < ready_at {
                waiting_for_backoff = Some(ready_at - now_seconds());
            } else if want > 0 {
                let running: BTreeSet<i32> = active.iter().filter_map(|p| index_of(p)).collect();
                let mut free_indexes = (0..completions.unwrap_or(0))
                    .filter(|i| !completed_indexes.contains(i) && !running.contains(i));
                for _ in 0..want {
                    let index = if indexed {
                        match free_indexes.next() {
                            Some(i) => Some(i),
                            None => break,
                        }
                    } else {
                        None
                    };
                    let pod = self.pod_for(&job, index)?;
                    match pods_api.create(&PostParams::default(), &pod).await {
                        Ok(made) => {
                            let made_name = made.metadata.name.unwrap_or_default();
                            self.events
                                .normal(&about, "SuccessfulCreate", format!("Created pod: {made_name}"))
                                .await;
                            created_now.push(made_name);
                        }
                        Err(e) => {
                            self.events
                                .warning(&about, "FailedCreate", format!("Error creating: {e}"))
                                .await;
                            break;
                        }
                    }
                }
            }
        }
        if !created_now.is_empty()
            && let Ok(mut all) = self.created.lock()
        {
            all.insert(
                key.clone(),
                (created_now.iter().cloned().collect(), std::time::Instant::now()),
            );
        }
        // Status.
        let now = time_now();
        let mut new_status = json!({
            "active": active.len() as i32 + created_now.len() as i32,
            "succeeded": succeeded_pods.len(),
            "failed": failed_pods.len(),
            "ready": active.iter().filter(|p| is_ready(p)).count(),
        });
        if start.is_none() && !suspended {
            new_status["startTime"] = json!(now);
        }
        if indexed && !completed_indexes.is_empty() {
            new_status["completedIndexes"] = json!(compress_indexes(&completed_indexes));
        }
        let condition = |type_: &str, reason: &str, message: &str| {
            json!({"type": type_, "status": "True", "reason": reason, "message": message,
                "lastProbeTime": now, "lastTransitionTime": now})
        };
        let mut conditions: Vec<Value> = status
            .conditions
            .iter()
            .flatten()
            .filter_map(|c| serde_json::to_value(c).ok())
            .collect();
        if let Some((reason, message)) = &fail_reason {
            conditions.push(condition("FailureTarget", reason, message));
            conditions.push(condition("Failed", reason, message));
            self.events.warning(&about, reason, message.clone()).await;
        } else if complete {
            conditions.push(condition(
                "SuccessCriteriaMet",
                "CompletionsReached",
                "Reached expected number of succeeded pods",
            ));
            conditions.push(condition(
                "Complete",
                "CompletionsReached",
                "Reached expected number of succeeded pods",
            ));
            new_status["completionTime"] = json!(now);
            self.events
                .normal(&about, "Completed", "Job completed".into())
                .await;
        }
        if fail_reason.is_some() || complete {
            new_status["conditions"] = json!(conditions);
            new_status["active"] = json!(0);
        }
        let current = serde_json::to_value(&status).unwrap_or_default();
        if !work::covers(&current, &new_status) {
            match work::update_status(&api, &name, &json!({"status": new_status})).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => {
                    return Err(kube_error(format!(
                        "writing the status of job {namespace}/{name}"
                    ))(e));
                }
            }
        }
        if let Some(seconds) = waiting_for_backoff {
            return Err(ControllerError::Waiting(format!(
                "job {namespace}/{name}: back-off, {seconds}s left"
            )));
        }
        if let (Some(deadline), Some(start), false) = (
            spec.active_deadline_seconds,
            start,
            complete || fail_reason.is_some(),
        ) {
            let left = start + deadline - now_seconds();
            if left > 0 {
                return Err(ControllerError::Waiting(format!(
                    "job {namespace}/{name}: deadline in {left}s"
                )));
            }
        }
        Ok(())
    }

    /// A pod from the Job's template (for `index`, in Indexed mode).
    fn pod_for(&self, job: &Job, index: Option<i32>) -> Result<Pod, ControllerError> {
        let name = job.metadata.name.clone().unwrap_or_default();
        let namespace = job.metadata.namespace.clone().unwrap_or_default();
        let template = job.spec.as_ref().map(|s| s.template.clone()).unwrap_or_default();
        let mut labels = template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.clone())
            .unwrap_or_default();
        let mut annotations = template
            .metadata
            .as_ref()
            .and_then(|m| m.annotations.clone())
            .unwrap_or_default();
        let mut spec = serde_json::to_value(&template.spec).unwrap_or(json!({}));
        let generate = match index {
            Some(i) => {
                labels.insert(INDEX_ANNOTATION.into(), i.to_string());
                annotations.insert(INDEX_ANNOTATION.into(), i.to_string());
                spec["hostname"] = json!(format!("{name}-{i}"));
                format!("{name}-{i}-")
            }
            None => format!("{name}-"),
        };
        let pod = json!({
            "metadata": {"generateName": generate, "namespace": namespace, "labels": labels, "annotations": annotations,
                "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": job.metadata.uid,
                    "controller": true, "blockOwnerDeletion": true}]},
            "spec": spec,
        });
        serde_json::from_value(pod)
            .map_err(|e| ControllerError::Invalid(format!("pod template of job {namespace}/{name}: {e}")))
    }
}

/// Kubernetes' `completedIndexes` form: "1,3-5,7".
pub fn compress_indexes(indexes: &BTreeSet<i32>) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut run: Option<(i32, i32)> = None;
    for &i in indexes {
        run = match run {
            Some((a, b)) if i == b + 1 => Some((a, i)),
            Some((a, b)) => {
                out.push(if a == b { a.to_string() } else { format!("{a}-{b}") });
                Some((i, i))
            }
            None => Some((i, i)),
        };
    }
    if let Some((a, b)) = run {
        out.push(if a == b { a.to_string() } else { format!("{a}-{b}") });
    }
    out.join(",")
}

enum Seen {
    Job(Box<Change<Job>>),
    Pod(Box<Change<Pod>>),
}

/// Runs the controller (and the TTL-after-finished one, with `ttl_client`) until its watches end.
pub async fn run(client: kube::Client, ttl_client: kube::Client) {
    let (jobs_tx, mut jobs_rx) = mpsc::unbounded_channel();
    let (pods_tx, mut pods_rx) = mpsc::unbounded_channel();
    let jobs = work::reflect(Api::<Job>::all(client.clone()), jobs_tx);
    let pods = work::reflect(Api::<Pod>::all(client.clone()), pods_tx);
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let seen = tokio::select! {
                Some(c) = jobs_rx.recv() => Seen::Job(Box::new(c)),
                Some(c) = pods_rx.recv() => Seen::Pod(Box::new(c)),
                else => return,
            };
            if tx.send(seen).is_err() {
                return;
            }
        }
    });
    let context = Context {
        events: Recorder::new(client.clone(), "job-controller"),
        client,
        ttl_client,
        jobs: jobs.clone(),
        pods: pods.clone(),
        created: std::sync::Mutex::new(BTreeMap::new()),
    };
    let all = {
        let jobs = jobs.clone();
        move || -> Vec<Key> { work::all_keys(&jobs) }
    };
    let keys_of = {
        let all = all.clone();
        move |seen: Seen| -> Vec<Key> {
            match seen {
                Seen::Job(c) => match *c {
                    Change::Object(j) => work::key_of(&j.metadata),
                    Change::Relisted => all(),
                },
                Seen::Pod(c) => match *c {
                    Change::Object(p) => match (controller_of(&p.metadata), p.metadata.namespace.clone()) {
                        (Some(o), Some(ns)) if o.kind == "Job" => vec![(ns, o.name.clone())],
                        _ => vec![],
                    },
                    Change::Relisted => all(),
                },
            }
        }
    };
    let ready = move || work::ready(&jobs) && work::ready(&pods);
    work::run_queue("job", rx, keys_of, all, ready, |key| context.reconcile(key)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_ten_seconds_to_six_minutes() {
        assert_eq!(backoff(0), Duration::ZERO);
        assert_eq!(backoff(1), Duration::from_secs(10));
        assert_eq!(backoff(3), Duration::from_secs(40));
        assert_eq!(backoff(20), Duration::from_secs(360));
    }

    #[test]
    fn completed_indexes_are_compressed_as_kubernetes_writes_them() {
        assert_eq!(compress_indexes(&[1, 3, 4, 5, 7].into()), "1,3-5,7");
        assert_eq!(compress_indexes(&BTreeSet::new()), "");
    }

    #[test]
    fn pod_failure_policy_picks_the_first_matching_rule() {
        let job: Job = serde_json::from_value(
            json!({"metadata": {"name": "j"}, "spec": {"template": {"spec": {"containers": []}},
            "podFailurePolicy": {"rules": [
                {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [42]}},
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}]}}}),
        )
        .unwrap();
        let exited = |code: i32| -> Pod {
            serde_json::from_value(
                json!({"metadata": {"name": "p"}, "status": {"phase": "Failed", "containerStatuses": [
                {"name": "c", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                 "state": {"terminated": {"exitCode": code}}}]}}),
            )
            .unwrap()
        };
        assert_eq!(failure_action(&job, &exited(42)), "FailJob");
        assert_eq!(failure_action(&job, &exited(1)), "Count");
        let disrupted: Pod =
            serde_json::from_value(json!({"metadata": {"name": "p"}, "status": {"phase": "Failed",
            "conditions": [{"type": "DisruptionTarget", "status": "True"}]}}))
            .unwrap();
        assert_eq!(failure_action(&job, &disrupted), "Ignore");
    }
}
