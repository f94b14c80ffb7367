//! The CronJob controller (kube-controller-manager's `cronjob_controllerv2.go` and `utils.go`): at each time of
//! `spec.schedule` (robfig/cron's standard syntax, read in `spec.timeZone` or the controller's zone) it creates
//! the Job `<cronjob>-<scheduled time in minutes since the epoch>` from `jobTemplate`, which the Job controller
//! runs. Only the most recent missed time is started, and not when it is older than `startingDeadlineSeconds`;
//! `concurrencyPolicy` Forbid skips a time while a Job is active, Replace deletes the active ones first;
//! `suspend` stops new Jobs; finished Jobs past `successfulJobsHistoryLimit`/`failedJobsHistoryLimit` are
//! deleted, oldest first. Status: `active`, `lastScheduleTime`, `lastSuccessfulTime`.
//!
//! What to do is decided by [`plan`], a pure function of (CronJob, its Jobs, now); the reconcile carries the
//! plan out through the API and asks to be woken at the next scheduled time, not before.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use cron_schedule::{Schedule, load_location};
use k8s_openapi::api::batch::v1::{CronJob, CronJobStatus, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use k8s_openapi::jiff::tz::TimeZone;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use serde_json::json;
use tokio::sync::mpsc;

use crate::events::{Involved, Recorder};
use crate::work::{self, Change, controller_of};
use crate::{ControllerError, kube_error};

type Key = (String, String);

/// The annotation on each Job with the time it was scheduled for (RFC 3339, in the CronJob's zone).
pub const SCHEDULED_TIMESTAMP_ANNOTATION: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";

/// Kubernetes' `nextScheduleDelta`: wake a little after the scheduled time, so clock skew never wakes us before.
const NEXT_SCHEDULE_DELTA: Duration = Duration::from_millis(100);

/// More missed times than this since the last one started is Kubernetes' "too many missed start times".
const TOO_MANY_MISSED: i64 = 100;

/// An event the plan asks for, on the CronJob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedEvent {
    pub warning: bool,
    pub reason: &'static str,
    pub message: String,
}

fn normal(reason: &'static str, message: String) -> PlannedEvent {
    PlannedEvent {
        warning: false,
        reason,
        message,
    }
}

fn warning(reason: &'static str, message: String) -> PlannedEvent {
    PlannedEvent {
        warning: true,
        reason,
        message,
    }
}

/// What one sync of a CronJob does.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// Events to record, in order.
    pub events: Vec<PlannedEvent>,
    /// `status.active` once finished and vanished Jobs are dropped (before any start or replace).
    pub active: Vec<ObjectReference>,
    pub last_successful_time: Option<Timestamp>,
    /// Finished Jobs past the history limits, oldest first: deleted (background propagation).
    pub prune: Vec<String>,
    /// A Job to create, for this scheduled time.
    pub start: Option<Timestamp>,
    /// Delete the active Jobs before starting (`concurrencyPolicy: Replace`).
    pub replace_active: bool,
    /// When to look again: just after the next scheduled time (none when the schedule cannot say).
    pub requeue_after: Option<Duration>,
}

/// `Complete` or `Failed`, when the Job has finished.
fn finished_condition(job: &Job) -> Option<&str> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        .map(|c| c.type_.as_str())
}

/// The name of the Job for a scheduled time: minutes, as the v2 controller never schedules finer than that.
pub fn job_name(cronjob_name: &str, scheduled: Timestamp) -> String {
    format!("{cronjob_name}-{}", scheduled.as_second().div_euclid(60))
}

/// robfig/cron's schedule string for the CronJob (Kubernetes' `formatSchedule`): the time zone, when set and
/// known, as a `TZ=` prefix; a `TZ` already in the schedule is kept, with a warning.
fn format_schedule(cronjob: &CronJob, events: &mut Vec<PlannedEvent>) -> String {
    let spec = cronjob.spec.as_ref();
    let schedule = spec.map(|s| s.schedule.clone()).unwrap_or_default();
    if schedule.contains("TZ") {
        events.push(warning(
            "UnsupportedSchedule",
            format!(
                "CRON_TZ or TZ used in schedule {schedule:?} is not officially supported, see https://kubernetes.io/docs/concepts/workloads/controllers/cron-jobs/ for more details"
            ),
        ));
        return schedule;
    }
    match spec.and_then(|s| s.time_zone.as_deref()) {
        Some(zone) if load_location(zone).is_ok() => format!("TZ={zone} {schedule}"),
        _ => schedule,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Missed {
    None,
    Few,
    Many,
}

/// Kubernetes' `mostRecentScheduleTime`: (the time counted from, the most recent scheduled time in
/// (that, now], how many were missed). It counts from the last scheduled time or the creation, or from
/// `now - startingDeadlineSeconds` when that is later, and estimates the number missed from the interval
/// between two consecutive times, so that a CronJob that missed years of minutes costs a few steps.
fn most_recent_schedule_time(
    created: Timestamp,
    last_scheduled: Option<Timestamp>,
    starting_deadline: Option<i64>,
    now: Timestamp,
    schedule: &Schedule,
) -> Result<(Timestamp, Option<Timestamp>, Missed), String> {
    let mut earliest = last_scheduled.unwrap_or(created);
    if let Some(deadline) = starting_deadline {
        let limit = now
            .saturating_sub(SignedDuration::from_secs(deadline))
            .unwrap_or(now);
        if limit > earliest {
            earliest = limit;
        }
    }
    let too_close = || "time difference between two schedules is less than 1 second".to_string();
    let Some(t1) = schedule.next(earliest) else {
        return Err(too_close());
    };
    if now < t1 {
        return Ok((earliest, None, Missed::None));
    }
    let Some(t2) = schedule.next(t1) else {
        return Err(too_close());
    };
    if now < t2 {
        return Ok((earliest, Some(t1), Missed::None));
    }
    let nanos = |a: Timestamp, b: Timestamp| a.as_nanosecond() - b.as_nanosecond();
    // Go: t2.Sub(t1).Round(time.Second), then whole seconds; the elapsed time truncated.
    let between = (nanos(t2, t1) + 500_000_000).div_euclid(1_000_000_000) as i64;
    if between < 1 {
        return Err(too_close());
    }
    let elapsed = (nanos(now, t1) / 1_000_000_000) as i64;
    let missed_count = elapsed / between + 1;
    // One interval further back than the estimate, and let the schedule walk forward from there (irregular
    // schedules such as "30 6-16/4 * * 1-5" are not evenly spaced).
    let back = (missed_count - 2).saturating_mul(between);
    let mut walk = t1.saturating_add(SignedDuration::from_secs(back)).unwrap_or(t1);
    let mut most_recent = None;
    for _ in 0..10_000 {
        match schedule.next(walk) {
            Some(t) if t <= now => {
                most_recent = Some(t);
                walk = t;
            }
            _ => break,
        }
    }
    let missed = if missed_count > TOO_MANY_MISSED {
        Missed::Many
    } else {
        Missed::Few
    };
    Ok((earliest, most_recent, missed))
}

/// Kubernetes' `nextScheduleTimeDuration`: how long until just after the next scheduled time.
fn next_schedule_delay(
    created: Timestamp,
    last_scheduled: Option<Timestamp>,
    now: Timestamp,
    schedule: &Schedule,
) -> Option<Duration> {
    let from = match most_recent_schedule_time(created, last_scheduled, None, now, schedule) {
        Err(_) => now,
        Ok((_, Some(t), _)) => t,
        Ok((earliest, None, Missed::None)) => earliest,
        Ok((_, None, _)) => now,
    };
    let next = schedule.next(from)?;
    let wait = next.as_nanosecond() - now.as_nanosecond();
    let wait = Duration::from_nanos(u64::try_from(wait.max(0)).unwrap_or(u64::MAX));
    Some(wait + NEXT_SCHEDULE_DELTA)
}

/// Finished Jobs past the history limits (Kubernetes' `cleanupFinishedJobs`): per kind of ending, all but
/// the newest `limit`, by start time (Jobs never started last), then name.
fn jobs_to_prune(cronjob: &CronJob, jobs: &[Arc<Job>]) -> Vec<Arc<Job>> {
    let spec = cronjob.spec.clone().unwrap_or_default();
    let mut prune = Vec::new();
    for (condition, limit) in [
        ("Complete", spec.successful_jobs_history_limit),
        ("Failed", spec.failed_jobs_history_limit),
    ] {
        let Some(limit) = limit else { continue };
        let mut finished: Vec<&Arc<Job>> = jobs
            .iter()
            .filter(|j| finished_condition(j) == Some(condition))
            .collect();
        finished.sort_by_key(|j| {
            let start = j.status.as_ref().and_then(|s| s.start_time.as_ref()).map(|t| t.0);
            (start.is_none(), start, j.metadata.name.clone())
        });
        let excess = finished
            .len()
            .saturating_sub(usize::try_from(limit.max(0)).unwrap_or(0));
        prune.extend(finished.into_iter().take(excess).cloned());
    }
    prune
}

/// What to do for `cronjob`, given the Jobs it controls, at `now`, with `local` as the zone for schedules
/// without one (Kubernetes' `cleanupFinishedJobs` then `syncCronJob`, without their API calls).
pub fn plan(cronjob: &CronJob, jobs: &[Arc<Job>], now: Timestamp, local: &TimeZone) -> Plan {
    let spec = cronjob.spec.clone().unwrap_or_default();
    let status = cronjob.status.clone().unwrap_or_default();
    let mut events = Vec::new();
    let mut active = status.active.clone().unwrap_or_default();
    let mut last_successful = status.last_successful_time.as_ref().map(|t| t.0);

    let pruned = jobs_to_prune(cronjob, jobs);
    let uid_of = |j: &Job| j.metadata.uid.clone().unwrap_or_default();
    active.retain(|r| !pruned.iter().any(|j| r.uid.as_ref() == Some(&uid_of(j))));

    for job in jobs {
        let uid = uid_of(job);
        let name = job.metadata.name.clone().unwrap_or_default();
        let found = active.iter().any(|r| r.uid.as_ref() == Some(&uid));
        match finished_condition(job) {
            None if !found => events.push(warning(
                "UnexpectedJob",
                format!("Saw a job that the controller did not create or forgot: {name}"),
            )),
            None => {}
            Some(condition) => {
                if found {
                    active.retain(|r| r.uid.as_ref() != Some(&uid));
                    events.push(normal(
                        "SawCompletedJob",
                        format!("Saw completed job: {name}, condition: {condition}"),
                    ));
                }
                // A Job need not be active to count: any that succeeded moves lastSuccessfulTime on.
                let completed = job.status.as_ref().and_then(|s| s.completion_time.as_ref());
                if condition == "Complete"
                    && let Some(done) = completed
                    && last_successful.is_none_or(|t| done.0 > t)
                {
                    last_successful = Some(done.0);
                }
            }
        }
    }
    // A Job in the list that is gone (the reconcile read the API for any the cache lacks).
    active.retain(|r| {
        let known = jobs.iter().any(|j| r.uid.as_ref() == Some(&uid_of(j)));
        if !known {
            events.push(normal(
                "MissingJob",
                format!("Active job went missing: {}", r.name.clone().unwrap_or_default()),
            ));
        }
        known
    });

    let mut plan = Plan {
        events,
        active,
        last_successful_time: last_successful,
        prune: pruned.iter().filter_map(|j| j.metadata.name.clone()).collect(),
        ..Plan::default()
    };
    if cronjob.metadata.deletion_timestamp.is_some() {
        return plan;
    }
    if let Some(zone) = &spec.time_zone
        && let Err(e) = load_location(zone)
    {
        plan.events.push(warning(
            "UnknownTimeZone",
            format!("invalid timeZone: {zone:?}: {e}"),
        ));
        return plan;
    }
    if spec.suspend == Some(true) {
        return plan;
    }
    let formatted = format_schedule(cronjob, &mut plan.events);
    let schedule = match Schedule::parse(&formatted, local) {
        Ok(s) => s,
        Err(e) => {
            plan.events.push(warning(
                "UnparseableSchedule",
                format!("unparseable schedule: {:?} : {e}", spec.schedule),
            ));
            return plan;
        }
    };
    let created = cronjob.metadata.creation_timestamp.as_ref().map_or(now, |t| t.0);
    let last_scheduled = status.last_schedule_time.as_ref().map(|t| t.0);
    let requeue = |last: Option<Timestamp>| next_schedule_delay(created, last, now, &schedule);
    let scheduled = match most_recent_schedule_time(
        created,
        last_scheduled,
        spec.starting_deadline_seconds,
        now,
        &schedule,
    ) {
        Err(e) => {
            plan.events.push(warning(
                "InvalidSchedule",
                format!("invalid schedule: {} : {e}", spec.schedule),
            ));
            return plan;
        }
        Ok((_, None, _)) => None,
        Ok((_, Some(t), missed)) => {
            if missed == Missed::Many {
                plan.events.push(warning(
                    "TooManyMissedTimes",
                    "too many missed start times. Set or decrease .spec.startingDeadlineSeconds or check clock skew"
                        .into(),
                ));
            }
            Some(t)
        }
    };
    plan.requeue_after = requeue(last_scheduled);
    let Some(scheduled) = scheduled else {
        return plan;
    };
    if let Some(deadline) = spec.starting_deadline_seconds
        && scheduled
            .saturating_add(SignedDuration::from_secs(deadline))
            .is_ok_and(|late| late < now)
    {
        plan.events.push(warning(
            "MissSchedule",
            format!("Missed scheduled time to start a job: {}", rfc1123z(scheduled)),
        ));
        return plan;
    }
    let name = job_name(cronjob.metadata.name.as_deref().unwrap_or_default(), scheduled);
    if plan.active.iter().any(|r| r.name.as_ref() == Some(&name)) || last_scheduled == Some(scheduled) {
        return plan;
    }
    let policy = spec.concurrency_policy.as_deref().unwrap_or("Allow");
    if policy == "Forbid" && !plan.active.is_empty() {
        plan.events.push(normal(
            "JobAlreadyActive",
            "Not starting job because prior execution is running and concurrency policy is Forbid".into(),
        ));
        return plan;
    }
    plan.replace_active = policy == "Replace" && !plan.active.is_empty();
    plan.start = Some(scheduled);
    plan.requeue_after = requeue(Some(scheduled));
    plan
}

/// Go's `time.RFC1123Z` of `at` in UTC, as the MissSchedule event prints it.
fn rfc1123z(at: Timestamp) -> String {
    at.strftime("%a, %d %b %Y %H:%M:%S %z").to_string()
}

/// Go's `time.RFC3339` of `at` in `zone`: `Z` for UTC, else the offset.
fn rfc3339_in(at: Timestamp, zone: &TimeZone) -> String {
    let zoned = at.to_zoned(zone.clone());
    if zoned.offset().seconds() == 0 {
        zoned.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
    } else {
        zoned.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string()
    }
}

/// The Job for a scheduled time (Kubernetes' `getJobFromTemplate2`): the template's labels, annotations and
/// spec, the scheduled-timestamp annotation (in `spec.timeZone`, UTC without one), and the CronJob as its
/// controller.
pub fn job_for(cronjob: &CronJob, scheduled: Timestamp) -> Job {
    let spec = cronjob.spec.clone().unwrap_or_default();
    let template_meta = spec.job_template.metadata.clone().unwrap_or_default();
    let mut annotations = template_meta.annotations.unwrap_or_default();
    let zone = spec
        .time_zone
        .as_deref()
        .and_then(|z| load_location(z).ok())
        .unwrap_or(TimeZone::UTC);
    annotations.insert(
        SCHEDULED_TIMESTAMP_ANNOTATION.into(),
        rfc3339_in(scheduled, &zone),
    );
    let name = cronjob.metadata.name.clone().unwrap_or_default();
    Job {
        metadata: ObjectMeta {
            name: Some(job_name(&name, scheduled)),
            namespace: cronjob.metadata.namespace.clone(),
            labels: template_meta.labels,
            annotations: Some(annotations),
            owner_references: Some(vec![OwnerReference {
                api_version: "batch/v1".into(),
                kind: "CronJob".into(),
                name,
                uid: cronjob.metadata.uid.clone().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..ObjectMeta::default()
        },
        spec: Some(spec.job_template.spec.unwrap_or_default()),
        status: None,
    }
}

fn reference_to(job: &Job) -> ObjectReference {
    ObjectReference {
        api_version: Some("batch/v1".into()),
        kind: Some("Job".into()),
        name: job.metadata.name.clone(),
        namespace: job.metadata.namespace.clone(),
        uid: job.metadata.uid.clone(),
        resource_version: job.metadata.resource_version.clone(),
        ..ObjectReference::default()
    }
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

struct Context {
    client: kube::Client,
    cronjobs: Store<CronJob>,
    jobs: Store<Job>,
    events: Recorder,
    local: TimeZone,
    /// Asks the timer to reconcile a key again at an instant.
    wake: mpsc::UnboundedSender<(Key, tokio::time::Instant)>,
}

impl Context {
    async fn reconcile(&self, key: Key) -> Result<(), ControllerError> {
        let (namespace, name) = key.clone();
        let Some(cached) = self.cronjobs.get(&ObjectRef::new(&name).within(&namespace)) else {
            return Ok(());
        };
        let cronjobs: Api<CronJob> = Api::namespaced(self.client.clone(), &namespace);
        let jobs_api: Api<Job> = Api::namespaced(self.client.clone(), &namespace);
        let uid = cached.metadata.uid.clone().unwrap_or_default();
        let mut jobs: Vec<Arc<Job>> = self
            .jobs
            .state()
            .into_iter()
            .filter(|j| j.metadata.namespace.as_deref() == Some(namespace.as_str()))
            .filter(|j| controller_of(&j.metadata).is_some_and(|o| o.kind == "CronJob" && o.uid == uid))
            .collect();
        let in_active = |cj: &CronJob, job: &Job| {
            cj.status
                .as_ref()
                .and_then(|s| s.active.as_ref())
                .is_some_and(|a| a.iter().any(|r| r.uid == job.metadata.uid))
        };
        // A running Job missing from the cached status may be one this controller just made, with the status
        // that lists it not seen yet: the live CronJob says (Kubernetes reads it again too).
        let mut cronjob: CronJob = (*cached).clone();
        if jobs
            .iter()
            .any(|j| finished_condition(j).is_none() && !in_active(&cronjob, j))
        {
            match cronjobs.get(&name).await {
                Ok(live) => cronjob = live,
                Err(e) if is_not_found(&e) => return Ok(()),
                Err(e) => return Err(kube_error(format!("reading cronjob {namespace}/{name}"))(e)),
            }
        }
        // Active Jobs the cache lacks are looked up, so that a lagging watch is not taken for a deletion.
        let active = cronjob
            .status
            .as_ref()
            .and_then(|s| s.active.clone())
            .unwrap_or_default();
        for reference in &active {
            if jobs.iter().any(|j| j.metadata.uid == reference.uid) {
                continue;
            }
            let Some(job_name) = &reference.name else { continue };
            match jobs_api.get(job_name).await {
                Ok(job) if job.metadata.uid == reference.uid => jobs.push(Arc::new(job)),
                Ok(_) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(kube_error(format!("reading job {namespace}/{job_name}"))(e)),
            }
        }

        let plan = plan(&cronjob, &jobs, Timestamp::now(), &self.local);
        let about = Involved::of(&cronjob);
        let mut active = plan.active.clone();
        for job_name in &plan.prune {
            self.delete_job(&jobs_api, &about, job_name).await;
        }
        for event in &plan.events {
            if event.warning {
                self.events
                    .warning(&about, event.reason, event.message.clone())
                    .await;
            } else {
                self.events
                    .normal(&about, event.reason, event.message.clone())
                    .await;
            }
        }
        let mut last_scheduled = cronjob
            .status
            .as_ref()
            .and_then(|s| s.last_schedule_time.as_ref())
            .map(|t| t.0);
        let mut failure = None;
        if let Some(scheduled) = plan.start {
            match self
                .start(
                    &cronjob,
                    &jobs_api,
                    &about,
                    scheduled,
                    plan.replace_active,
                    &mut active,
                )
                .await
            {
                Ok(true) => last_scheduled = Some(scheduled),
                Ok(false) => {}
                Err(e) => failure = Some(e),
            }
        }
        let new_status = CronJobStatus {
            active: (!active.is_empty()).then_some(active),
            last_schedule_time: last_scheduled.map(Time),
            last_successful_time: plan.last_successful_time.map(Time),
        };
        let old_status = cronjob.status.clone().unwrap_or_default();
        if new_status != old_status {
            let patch = json!({"status": {
                "active": new_status.active,
                "lastScheduleTime": new_status.last_schedule_time,
                "lastSuccessfulTime": new_status.last_successful_time,
            }});
            match work::update_status(&cronjobs, &name, &patch).await {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => return Ok(()),
                Err(e) => {
                    return Err(kube_error(format!(
                        "writing the status of cronjob {namespace}/{name}"
                    ))(e));
                }
            }
        }
        if let Some(e) = failure {
            return Err(e);
        }
        if let Some(after) = plan.requeue_after {
            let _ = self.wake.send((key, tokio::time::Instant::now() + after));
        }
        Ok(())
    }

    /// Deletes a Job with background propagation (the garbage collector takes its pods), with Kubernetes'
    /// events; true when it is gone.
    async fn delete_job(&self, jobs_api: &Api<Job>, about: &Involved, job_name: &str) -> bool {
        match jobs_api.delete(job_name, &DeleteParams::background()).await {
            Ok(_) => {
                self.events
                    .normal(about, "SuccessfulDelete", format!("Deleted job {job_name}"))
                    .await;
                true
            }
            // Already gone (a cache behind its own delete): nothing to say.
            Err(e) if is_not_found(&e) => true,
            Err(e) => {
                self.events
                    .warning(about, "FailedDelete", format!("Deleted job: {e}"))
                    .await;
                false
            }
        }
    }

    /// Starts the Job for `scheduled` (after deleting the active ones, for Replace), and lists it in `active`.
    /// True when the scheduled time counts as started.
    async fn start(
        &self,
        cronjob: &CronJob,
        jobs_api: &Api<Job>,
        about: &Involved,
        scheduled: Timestamp,
        replace_active: bool,
        active: &mut Vec<ObjectReference>,
    ) -> Result<bool, ControllerError> {
        let namespace = cronjob.metadata.namespace.clone().unwrap_or_default();
        if replace_active {
            for reference in active.clone() {
                let job_name = reference.name.clone().unwrap_or_default();
                if let Err(e) = jobs_api.get(&job_name).await
                    && !is_not_found(&e)
                {
                    self.events
                        .warning(about, "FailedGet", format!("Get job: {e}"))
                        .await;
                    return Err(kube_error(format!("reading job {namespace}/{job_name}"))(e));
                }
                if !self.delete_job(jobs_api, about, &job_name).await {
                    return Err(ControllerError::Invalid(format!(
                        "could not replace job {namespace}/{job_name}"
                    )));
                }
                active.retain(|r| r.uid != reference.uid);
            }
        }
        let wanted = job_for(cronjob, scheduled);
        let job_name = wanted.metadata.name.clone().unwrap_or_default();
        match jobs_api.create(&PostParams::default(), &wanted).await {
            Ok(made) => {
                self.events
                    .normal(about, "SuccessfulCreate", format!("Created job {job_name}"))
                    .await;
                active.push(reference_to(&made));
                Ok(true)
            }
            Err(kube::Error::Api(e)) if e.code == 409 => {
                // Made before, by us, with the status write lost; or by someone else, who keeps the status.
                let existing = jobs_api
                    .get(&job_name)
                    .await
                    .map_err(kube_error(format!("reading job {namespace}/{job_name}")))?;
                let ours = controller_of(&existing.metadata)
                    .is_some_and(|o| Some(&o.uid) == cronjob.metadata.uid.as_ref());
                if !ours {
                    return Ok(false);
                }
                if !active.iter().any(|r| r.uid == existing.metadata.uid) {
                    active.push(reference_to(&existing));
                }
                Ok(true)
            }
            Err(e) => {
                self.events
                    .warning(about, "FailedCreate", format!("Error creating job: {e}"))
                    .await;
                Err(kube_error(format!("creating job {namespace}/{job_name}"))(e))
            }
        }
    }
}

enum Seen {
    CronJob(Box<Change<CronJob>>),
    Job(Box<Change<Job>>),
    /// A scheduled time came.
    Due(Key),
}

/// Wakes keys at the instants asked for (the earliest per key), as a delaying queue's `AddAfter` does.
async fn run_timer(
    mut asks: mpsc::UnboundedReceiver<(Key, tokio::time::Instant)>,
    due: mpsc::UnboundedSender<Seen>,
) {
    let mut pending: BTreeMap<Key, tokio::time::Instant> = BTreeMap::new();
    loop {
        let next = pending.values().min().copied();
        let sleep = async {
            match next {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            ask = asks.recv() => match ask {
                None => return,
                Some((key, at)) => {
                    let entry = pending.entry(key).or_insert(at);
                    if at < *entry {
                        *entry = at;
                    }
                }
            },
            () = sleep => {
                let now = tokio::time::Instant::now();
                let ready: Vec<Key> = pending.iter().filter(|(_, at)| **at <= now).map(|(k, _)| k.clone()).collect();
                for key in ready {
                    pending.remove(&key);
                    if due.send(Seen::Due(key)).is_err() {
                        return;
                    }
                }
            }
        }
    }
}

/// Runs the controller until its watches end.
pub async fn run(client: kube::Client) {
    let (cronjobs_tx, mut cronjobs_rx) = mpsc::unbounded_channel();
    let (jobs_tx, mut jobs_rx) = mpsc::unbounded_channel();
    let cronjobs = work::reflect(Api::<CronJob>::all(client.clone()), cronjobs_tx);
    let jobs = work::reflect(Api::<Job>::all(client.clone()), jobs_tx);
    let (tx, rx) = mpsc::unbounded_channel();
    let (wake, asks) = mpsc::unbounded_channel();
    tokio::spawn(run_timer(asks, tx.clone()));
    tokio::spawn(async move {
        loop {
            let seen = tokio::select! {
                Some(c) = cronjobs_rx.recv() => Seen::CronJob(Box::new(c)),
                Some(c) = jobs_rx.recv() => Seen::Job(Box::new(c)),
                else => return,
            };
            if tx.send(seen).is_err() {
                return;
            }
        }
    });
    let context = Context {
        events: Recorder::new(client.clone(), "cronjob-controller"),
        client,
        cronjobs: cronjobs.clone(),
        jobs: jobs.clone(),
        local: cron_schedule::local_time_zone(),
        wake,
    };
    let all = {
        let cronjobs = cronjobs.clone();
        move || -> Vec<Key> {
            cronjobs
                .state()
                .iter()
                .filter_map(|c| Some((c.metadata.namespace.clone()?, c.metadata.name.clone()?)))
                .collect()
        }
    };
    let keys_of = {
        let all = all.clone();
        move |seen: Seen| -> Vec<Key> {
            match seen {
                Seen::Due(key) => vec![key],
                Seen::CronJob(c) => match *c {
                    Change::Object(cj) => cj
                        .metadata
                        .namespace
                        .clone()
                        .zip(cj.metadata.name.clone())
                        .into_iter()
                        .collect(),
                    Change::Relisted => all(),
                },
                Seen::Job(c) => match *c {
                    Change::Object(j) => match (controller_of(&j.metadata), j.metadata.namespace.clone()) {
                        (Some(o), Some(ns)) if o.kind == "CronJob" => vec![(ns, o.name.clone())],
                        _ => vec![],
                    },
                    Change::Relisted => all(),
                },
            }
        }
    };
    let ready = move || work::ready(&cronjobs) && work::ready(&jobs);
    work::run_queue("cronjob", rx, keys_of, all, ready, |key| context.reconcile(key)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    /// A CronJob created at `created`, with `spec` members over the defaults the API server sets.
    fn cronjob(created: &str, spec: serde_json::Value, status: serde_json::Value) -> CronJob {
        let mut full = json!({"schedule": "* * * * *", "concurrencyPolicy": "Allow", "suspend": false,
            "successfulJobsHistoryLimit": 3, "failedJobsHistoryLimit": 1,
            "jobTemplate": {"metadata": {"labels": {"app": "report"}, "annotations": {"team": "ops"}},
                "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "busybox:1"}]}}}}});
        for (k, v) in spec.as_object().unwrap() {
            full[k] = v.clone();
        }
        serde_json::from_value(json!({
            "metadata": {"name": "report", "namespace": "default", "uid": "cj-uid", "creationTimestamp": created},
            "spec": full, "status": status}))
        .unwrap()
    }

    /// A Job of the CronJob's: `condition` Complete/Failed/None, started and completed at the given times.
    fn job(name: &str, condition: Option<&str>, started: &str, completed: Option<&str>) -> Arc<Job> {
        let mut status = json!({"startTime": started});
        if let Some(c) = condition {
            status["conditions"] = json!([{"type": c, "status": "True"}]);
        }
        if let Some(t) = completed {
            status["completionTime"] = json!(t);
        }
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "default", "uid": format!("{name}-uid"),
                    "ownerReferences": [{"apiVersion": "batch/v1", "kind": "CronJob", "name": "report",
                        "uid": "cj-uid", "controller": true}]},
                "status": status}))
            .unwrap(),
        )
    }

    fn active_ref(name: &str) -> serde_json::Value {
        json!({"apiVersion": "batch/v1", "kind": "Job", "namespace": "default", "name": name, "uid": format!("{name}-uid")})
    }

    fn reasons(plan: &Plan) -> Vec<&str> {
        plan.events.iter().map(|e| e.reason).collect()
    }

    #[test]
    fn nothing_is_started_before_the_first_scheduled_time_and_the_wake_up_is_just_after_it() {
        let cj = cronjob("2026-01-01T10:00:20Z", json!({}), json!({}));
        let plan = plan(&cj, &[], at("2026-01-01T10:00:30Z"), &TimeZone::UTC);
        assert_eq!(plan.start, None);
        assert_eq!(plan.requeue_after, Some(Duration::from_millis(30_100)));
        assert!(plan.events.is_empty());
    }

    #[test]
    fn a_due_time_starts_one_job_named_after_its_minute() {
        let cj = cronjob("2026-01-01T10:00:20Z", json!({}), json!({}));
        let now = at("2026-01-01T10:01:00.1Z");
        let plan = plan(&cj, &[], now, &TimeZone::UTC);
        assert_eq!(plan.start, Some(at("2026-01-01T10:01:00Z")));
        assert_eq!(plan.requeue_after, Some(Duration::from_millis(60_000)));
        let job = job_for(&cj, at("2026-01-01T10:01:00Z"));
        assert_eq!(job.metadata.name.as_deref(), Some("report-29454361"));
        assert_eq!(29_454_361 * 60, at("2026-01-01T10:01:00Z").as_second());
        let annotations = job.metadata.annotations.unwrap();
        assert_eq!(
            annotations[SCHEDULED_TIMESTAMP_ANNOTATION],
            "2026-01-01T10:01:00Z"
        );
        assert_eq!(annotations["team"], "ops");
        assert_eq!(job.metadata.labels.unwrap()["app"], "report");
        let owner = &job.metadata.owner_references.unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
            ("CronJob", "cj-uid", Some(true))
        );
        assert!(job.spec.unwrap().template.spec.is_some());
        // The same minute again (status written) starts nothing.
        let started = cronjob(
            "2026-01-01T10:00:20Z",
            json!({}),
            json!({"lastScheduleTime": "2026-01-01T10:01:00Z", "active": [active_ref("report-29454361")]}),
        );
        let again = super::plan(&started, &[job_in_flight("report-29454361")], now, &TimeZone::UTC);
        assert_eq!(again.start, None);
        assert!(again.events.is_empty(), "{:?}", again.events);
    }

    fn job_in_flight(name: &str) -> Arc<Job> {
        job(name, None, "2026-01-01T10:01:01Z", None)
    }

    #[test]
    fn only_the_most_recent_missed_time_is_started() {
        // Hourly, last run at 05:00, the controller back at 09:30: 06:00..09:00 missed, 09:00 started.
        let cj = cronjob(
            "2026-01-01T00:00:00Z",
            json!({"schedule": "0 * * * *"}),
            json!({"lastScheduleTime": "2026-01-01T05:00:00Z"}),
        );
        let plan = plan(&cj, &[], at("2026-01-01T09:30:00Z"), &TimeZone::UTC);
        assert_eq!(plan.start, Some(at("2026-01-01T09:00:00Z")));
        assert_eq!(
            plan.requeue_after,
            Some(Duration::from_secs(1800) + NEXT_SCHEDULE_DELTA)
        );
        assert!(!reasons(&plan).contains(&"TooManyMissedTimes"));
    }

    #[test]
    fn more_than_a_hundred_missed_times_warn_but_still_start_the_latest() {
        let cj = cronjob("2026-01-01T00:00:00Z", json!({}), json!({}));
        let plan = plan(&cj, &[], at("2026-01-01T03:00:30Z"), &TimeZone::UTC);
        assert_eq!(reasons(&plan), ["TooManyMissedTimes"]);
        assert_eq!(
            plan.events[0].message,
            "too many missed start times. Set or decrease .spec.startingDeadlineSeconds or check clock skew"
        );
        assert_eq!(plan.start, Some(at("2026-01-01T03:00:00Z")));
        // A starting deadline bounds what counts as missed: no warning then.
        let bounded = cronjob(
            "2026-01-01T00:00:00Z",
            json!({"startingDeadlineSeconds": 120}),
            json!({}),
        );
        let plan = super::plan(&bounded, &[], at("2026-01-01T03:00:30Z"), &TimeZone::UTC);
        assert!(plan.events.is_empty(), "{:?}", plan.events);
        assert_eq!(plan.start, Some(at("2026-01-01T03:00:00Z")));
    }

    #[test]
    fn a_start_later_than_the_deadline_is_skipped() {
        // Daily at midnight, deadline 10 minutes: at 00:05 it starts, at 00:30 it is missed.
        let spec = json!({"schedule": "0 0 * * *", "startingDeadlineSeconds": 600});
        let cj = cronjob("2025-12-31T12:00:00Z", spec.clone(), json!({}));
        let plan_in_time = plan(&cj, &[], at("2026-01-01T00:05:00Z"), &TimeZone::UTC);
        assert_eq!(plan_in_time.start, Some(at("2026-01-01T00:00:00Z")));
        let late = plan(&cj, &[], at("2026-01-01T00:30:00Z"), &TimeZone::UTC);
        assert_eq!(late.start, None);
        assert!(
            late.events.is_empty(),
            "outside the deadline the time is not even looked at"
        );
        assert_eq!(
            late.requeue_after,
            Some(Duration::from_secs(23 * 3600 + 1800) + NEXT_SCHEDULE_DELTA)
        );
    }

    #[test]
    fn forbid_waits_for_the_active_job_and_replace_deletes_it() {
        let status =
            json!({"lastScheduleTime": "2026-01-01T10:00:00Z", "active": [active_ref("report-29454360")]});
        let running = [job("report-29454360", None, "2026-01-01T10:00:01Z", None)];
        let now = at("2026-01-01T10:01:00.2Z");
        let forbid = cronjob(
            "2026-01-01T09:00:00Z",
            json!({"concurrencyPolicy": "Forbid"}),
            status.clone(),
        );
        let plan_forbid = plan(&forbid, &running, now, &TimeZone::UTC);
        assert_eq!(plan_forbid.start, None);
        assert_eq!(reasons(&plan_forbid), ["JobAlreadyActive"]);
        assert_eq!(plan_forbid.active.len(), 1);
        assert!(plan_forbid.requeue_after.is_some());
        let replace = cronjob(
            "2026-01-01T09:00:00Z",
            json!({"concurrencyPolicy": "Replace"}),
            status.clone(),
        );
        let plan_replace = plan(&replace, &running, now, &TimeZone::UTC);
        assert_eq!(plan_replace.start, Some(at("2026-01-01T10:01:00Z")));
        assert!(plan_replace.replace_active);
        let allow = cronjob("2026-01-01T09:00:00Z", json!({}), status);
        let plan_allow = plan(&allow, &running, now, &TimeZone::UTC);
        assert_eq!(plan_allow.start, Some(at("2026-01-01T10:01:00Z")));
        assert!(!plan_allow.replace_active);
        assert_eq!(
            plan_allow.active.len(),
            1,
            "the running one stays listed beside the new one"
        );
    }

    #[test]
    fn finished_and_vanished_jobs_leave_the_active_list() {
        let status = json!({"lastScheduleTime": "2026-01-01T10:01:00Z",
            "active": [active_ref("report-29454360"), active_ref("report-29454361")]});
        let cj = cronjob("2026-01-01T09:00:00Z", json!({}), status);
        let done = job(
            "report-29454360",
            Some("Complete"),
            "2026-01-01T10:00:01Z",
            Some("2026-01-01T10:00:40Z"),
        );
        let plan = plan(&cj, &[done], at("2026-01-01T10:01:30Z"), &TimeZone::UTC);
        assert!(plan.active.is_empty());
        assert_eq!(reasons(&plan), ["SawCompletedJob", "MissingJob"]);
        assert_eq!(
            plan.events[0].message,
            "Saw completed job: report-29454360, condition: Complete"
        );
        assert_eq!(plan.events[1].message, "Active job went missing: report-29454361");
        assert_eq!(plan.last_successful_time, Some(at("2026-01-01T10:00:40Z")));
        assert_eq!(plan.start, None);
    }

    #[test]
    fn a_job_it_did_not_list_is_reported() {
        let cj = cronjob(
            "2026-01-01T09:00:00Z",
            json!({}),
            json!({"lastScheduleTime": "2026-01-01T10:01:00Z"}),
        );
        let manual = job("report-manual-x", None, "2026-01-01T10:01:10Z", None);
        let plan = plan(&cj, &[manual], at("2026-01-01T10:01:30Z"), &TimeZone::UTC);
        assert_eq!(reasons(&plan), ["UnexpectedJob"]);
    }

    #[test]
    fn history_limits_prune_the_oldest_finished_jobs() {
        let cj = cronjob(
            "2026-01-01T09:00:00Z",
            json!({"successfulJobsHistoryLimit": 2, "failedJobsHistoryLimit": 0}),
            json!({"lastScheduleTime": "2026-01-01T10:05:00Z"}),
        );
        let jobs = [
            job(
                "c",
                Some("Complete"),
                "2026-01-01T10:03:00Z",
                Some("2026-01-01T10:03:30Z"),
            ),
            job(
                "a",
                Some("Complete"),
                "2026-01-01T10:01:00Z",
                Some("2026-01-01T10:01:30Z"),
            ),
            job(
                "b",
                Some("Complete"),
                "2026-01-01T10:02:00Z",
                Some("2026-01-01T10:02:30Z"),
            ),
            job("f", Some("Failed"), "2026-01-01T10:04:00Z", None),
            job("r", None, "2026-01-01T10:05:00Z", None),
        ];
        let cj_with_r = {
            let mut cj = cj;
            cj.status.as_mut().unwrap().active = Some(vec![serde_json::from_value(active_ref("r")).unwrap()]);
            cj
        };
        let plan = plan(&cj_with_r, &jobs, at("2026-01-01T10:05:30Z"), &TimeZone::UTC);
        assert_eq!(plan.prune, ["a", "f"]);
        assert_eq!(plan.last_successful_time, Some(at("2026-01-01T10:03:30Z")));
    }

    #[test]
    fn suspended_deleted_and_broken_cronjobs_start_nothing() {
        let now = at("2026-01-01T10:01:00.1Z");
        let suspended = cronjob("2026-01-01T10:00:00Z", json!({"suspend": true}), json!({}));
        let plan_suspended = plan(&suspended, &[], now, &TimeZone::UTC);
        assert_eq!((plan_suspended.start, plan_suspended.requeue_after), (None, None));
        let unparseable = cronjob(
            "2026-01-01T10:00:00Z",
            json!({"schedule": "61 * * * *"}),
            json!({}),
        );
        let plan_bad = plan(&unparseable, &[], now, &TimeZone::UTC);
        assert_eq!(reasons(&plan_bad), ["UnparseableSchedule"]);
        assert_eq!(
            plan_bad.events[0].message,
            "unparseable schedule: \"61 * * * *\" : end of range (61) above maximum (59): 61"
        );
        let unknown_zone = cronjob(
            "2026-01-01T10:00:00Z",
            json!({"timeZone": "Mars/Olympus"}),
            json!({}),
        );
        assert_eq!(
            reasons(&plan(&unknown_zone, &[], now, &TimeZone::UTC)),
            ["UnknownTimeZone"]
        );
        let never = cronjob(
            "2026-01-01T10:00:00Z",
            json!({"schedule": "0 0 30 2 *"}),
            json!({}),
        );
        assert_eq!(
            reasons(&plan(&never, &[], now, &TimeZone::UTC)),
            ["InvalidSchedule"]
        );
        let mut deleting = cronjob("2026-01-01T10:00:00Z", json!({}), json!({}));
        deleting.metadata.deletion_timestamp = Some(Time(now));
        assert_eq!(plan(&deleting, &[], now, &TimeZone::UTC).start, None);
    }

    #[test]
    fn time_zones_move_the_schedule_and_the_annotation() {
        // 09:00 in Tokyo is 00:00 UTC.
        let cj = cronjob(
            "2026-01-01T12:00:00Z",
            json!({"schedule": "0 9 * * *", "timeZone": "Asia/Tokyo"}),
            json!({}),
        );
        let plan_tokyo = plan(&cj, &[], at("2026-01-02T00:00:01Z"), &TimeZone::UTC);
        assert_eq!(plan_tokyo.start, Some(at("2026-01-02T00:00:00Z")));
        let job = job_for(&cj, at("2026-01-02T00:00:00Z"));
        assert_eq!(
            job.metadata.annotations.unwrap()[SCHEDULED_TIMESTAMP_ANNOTATION],
            "2026-01-02T09:00:00+09:00"
        );
        // Without a time zone the controller's own zone reads the fields.
        let local = cronjob(
            "2026-01-01T12:00:00Z",
            json!({"schedule": "0 9 * * *"}),
            json!({}),
        );
        let new_york = load_location("America/New_York").unwrap();
        let plan_local = plan(&local, &[], at("2026-01-02T14:00:01Z"), &new_york);
        assert_eq!(plan_local.start, Some(at("2026-01-02T14:00:00Z")));
    }

    #[test]
    fn macros_schedule_as_their_fields() {
        let cj = cronjob("2026-01-01T00:30:00Z", json!({"schedule": "@hourly"}), json!({}));
        let plan_hourly = plan(&cj, &[], at("2026-01-01T01:00:00.5Z"), &TimeZone::UTC);
        assert_eq!(plan_hourly.start, Some(at("2026-01-01T01:00:00Z")));
        let weekly = cronjob("2026-01-01T00:30:00Z", json!({"schedule": "@weekly"}), json!({}));
        // 2026-01-04 is the first Sunday.
        let plan_weekly = plan(&weekly, &[], at("2026-01-02T00:00:00Z"), &TimeZone::UTC);
        assert_eq!(
            plan_weekly.requeue_after,
            Some(Duration::from_secs(2 * 86_400) + NEXT_SCHEDULE_DELTA)
        );
    }

    #[test]
    fn the_missed_schedule_event_prints_the_time_as_go_s_rfc1123z() {
        assert_eq!(
            rfc1123z(at("2026-01-01T00:10:00Z")),
            "Thu, 01 Jan 2026 00:10:00 +0000"
        );
    }
}
