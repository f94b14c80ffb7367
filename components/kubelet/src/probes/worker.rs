//! A container's probe workers (`pkg/kubelet/prober/worker.go`, `prober_manager.go`, `prober.go`): one task per
//! configured probe, each on its own period, with the kubelet's decisions: nothing before `initialDelaySeconds`,
//! results counted against `successThreshold`/`failureThreshold`, startup probes gating liveness and readiness,
//! a worker on hold after a liveness failure (or a startup verdict) until a new container appears, and
//! liveness/startup answering success once the pod is being deleted.
//!
//! The kubelet tells the workers what the container is doing ([`ContainerProber::observe`]) and reads back,
//! through a `tokio::sync::watch`, whether the container has started, whether it is ready, and whether a probe
//! wants it restarted ([`ContainerProbeStatus`]); the `Unhealthy`/`ProbeWarning` events to record come on a
//! channel ([`ProbeEvent`]).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod, Probe};
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use super::{ExecRunner, ProbeResult, ProbeTarget, container_refs, probe_once};

/// The kubelet retries a probe that could not be run this many times before throwing the run away
/// (`maxProbeRetries`).
const MAX_PROBE_RETRIES: usize = 3;
/// Events waiting for the kubelet beyond this are dropped, as client-go's event broadcaster drops them.
const EVENT_QUEUE: usize = 64;
/// `minimumGracePeriodInSeconds` of the kubelet's container killer.
const MINIMUM_GRACE_PERIOD_SECONDS: i64 = 2;

/// Which of a container's probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    Startup,
    Readiness,
    Liveness,
}

impl ProbeKind {
    /// The word the kubelet's messages start with (`probeType.String()`).
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeKind::Startup => "Startup",
            ProbeKind::Readiness => "Readiness",
            ProbeKind::Liveness => "Liveness",
        }
    }
}

/// A probe's standing result, as the kubelet's results manager keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeOutcome {
    Success,
    Failure,
    /// Only a startup probe's value before its first verdict.
    Unknown,
}

/// What of the pod and container the workers need, taken when the container's workers start.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContainerProbeConfig {
    pub container_name: String,
    pub startup: Option<Probe>,
    pub readiness: Option<Probe>,
    pub liveness: Option<Probe>,
    /// See [`ProbeTarget::named_ports`].
    pub named_ports: Vec<(String, i32)>,
    /// See [`ProbeTarget::static_env`].
    pub static_env: Vec<(String, String)>,
    /// The pod's `spec.terminationGracePeriodSeconds`.
    pub termination_grace_period_seconds: Option<i64>,
}

impl ContainerProbeConfig {
    /// The probes of `container` (a regular container or a restartable init container) of `pod`.
    pub fn new(pod: &Pod, container: &Container) -> Self {
        let (named_ports, static_env) = container_refs(container);
        ContainerProbeConfig {
            container_name: container.name.clone(),
            startup: container.startup_probe.clone(),
            readiness: container.readiness_probe.clone(),
            liveness: container.liveness_probe.clone(),
            named_ports,
            static_env,
            termination_grace_period_seconds: pod.spec.as_ref().and_then(|spec| spec.termination_grace_period_seconds),
        }
    }

    fn probe(&self, kind: ProbeKind) -> Option<&Probe> {
        match kind {
            ProbeKind::Startup => self.startup.as_ref(),
            ProbeKind::Readiness => self.readiness.as_ref(),
            ProbeKind::Liveness => self.liveness.as_ref(),
        }
    }
}

/// What the kubelet currently knows of the container (the status manager's view that `worker.doProbe` reads).
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerObservation {
    pub pod_ip: String,
    /// The current container's ID; `None` before it is created.
    pub container_id: Option<String>,
    pub state: ObservedState,
    /// The pod reached Succeeded or Failed: the workers end.
    pub pod_finished: bool,
    /// The pod has a deletionTimestamp: liveness and startup answer success and end, for a quiet shutdown.
    pub pod_deleting: bool,
}

/// The container's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObservedState {
    Waiting,
    /// Running since `started_at` (the kubelet's clock), from which `initialDelaySeconds` counts.
    Running {
        started_at: Instant,
    },
    /// Exited; `will_restart` when the restart policy (or a restartable init container) brings it back, else
    /// the workers end.
    Terminated {
        will_restart: bool,
    },
}

/// What the kubelet reads back (`prober_manager.UpdatePodStatus` and the liveness/startup results
/// `computePodActions` acts on), about the container of the last observation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContainerProbeStatus {
    pub container_id: Option<String>,
    /// `containerStatuses[].started`: running, and its startup probe (if any) has passed.
    pub started: bool,
    /// `containerStatuses[].ready`: started, and its readiness probe (if any) passes.
    pub ready: bool,
    /// A liveness (or startup) probe failed past its threshold: the container must be killed (and restarted as
    /// its restart policy says).
    pub restart: Option<RestartVerdict>,
}

/// The kubelet's decision to kill a container for a failed probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestartVerdict {
    pub container_id: String,
    /// Liveness or Startup.
    pub probe: ProbeKind,
    /// `Container <name> failed liveness probe` (the kubelet adds `, will be restarted` when it restarts it).
    pub message: String,
    /// The last failure's event message, e.g. `Liveness probe failed: HTTP probe failed with statuscode: 500`.
    pub event_message: Option<String>,
    /// The grace period to kill with: the probe's `terminationGracePeriodSeconds` when set, else the pod's.
    pub grace_period_seconds: i64,
}

/// An event for the kubelet to record on the container (type Warning).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeEvent {
    pub container_id: String,
    pub probe: ProbeKind,
    /// `Unhealthy`, or `ProbeWarning` for a success with a warning.
    pub reason: &'static str,
    /// E.g. `Readiness probe failed: dial tcp 10.42.0.7:8080: connect: connection refused`.
    pub message: String,
}

/// The kubelet's `setTerminationGracePeriod` for a container killed because `probe` failed: the pod's
/// deletionGracePeriodSeconds when it is being deleted, else the probe's own terminationGracePeriodSeconds, else
/// the pod's terminationGracePeriodSeconds, else 2 s.
pub fn probe_kill_grace_period_seconds(pod: &Pod, container: &Container, probe: ProbeKind) -> i64 {
    if let Some(seconds) = pod.metadata.deletion_grace_period_seconds {
        return seconds;
    }
    let probe_spec = match probe {
        ProbeKind::Liveness => container.liveness_probe.as_ref(),
        ProbeKind::Startup => container.startup_probe.as_ref(),
        ProbeKind::Readiness => None,
    };
    grace_period(pod.spec.as_ref().and_then(|spec| spec.termination_grace_period_seconds), probe_spec)
}

fn grace_period(pod_seconds: Option<i64>, probe: Option<&Probe>) -> i64 {
    match pod_seconds {
        Some(pod_seconds) => probe.and_then(|probe| probe.termination_grace_period_seconds).unwrap_or(pod_seconds),
        None => MINIMUM_GRACE_PERIOD_SECONDS,
    }
}

/// A probe's timing and thresholds, with the API's defaults for unset fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProbeTiming {
    pub initial_delay: Duration,
    pub period: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

impl ProbeTiming {
    pub(crate) fn of(probe: &Probe) -> Self {
        let seconds = |value: Option<i32>, default: u64, minimum: u64| {
            Duration::from_secs(value.and_then(|v| u64::try_from(v).ok()).unwrap_or(default).max(minimum))
        };
        let count = |value: Option<i32>, default: u32| value.and_then(|v| u32::try_from(v).ok()).unwrap_or(default).max(1);
        ProbeTiming {
            initial_delay: seconds(probe.initial_delay_seconds, 0, 0),
            period: seconds(probe.period_seconds, 10, 1),
            success_threshold: count(probe.success_threshold, 1),
            failure_threshold: count(probe.failure_threshold, 3),
        }
    }
}

/// What a worker does after looking at the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    /// Nothing to probe now; look again at the next tick.
    Wait,
    /// The worker ends.
    Exit,
    /// Probe this container.
    Probe(String),
}

/// `worker.doProbe`'s bookkeeping, without the probing: the decisions are pure, so they are tested alone.
#[derive(Debug, Clone)]
pub(crate) struct WorkerLogic {
    kind: ProbeKind,
    timing: ProbeTiming,
    container_id: Option<String>,
    last_result: Option<ProbeOutcome>,
    /// How many times in a row the probe returned `last_result`.
    result_run: u32,
    /// After a liveness failure or a startup verdict: no probing until a new container.
    on_hold: bool,
}

impl WorkerLogic {
    pub(crate) fn new(kind: ProbeKind, timing: ProbeTiming) -> Self {
        WorkerLogic { kind, timing, container_id: None, last_result: None, result_run: 0, on_hold: false }
    }

    /// The result a new container starts with: not ready, alive, not yet started.
    fn initial_value(&self) -> ProbeOutcome {
        match self.kind {
            ProbeKind::Readiness => ProbeOutcome::Failure,
            ProbeKind::Liveness => ProbeOutcome::Success,
            ProbeKind::Startup => ProbeOutcome::Unknown,
        }
    }

    /// The checks before a probe. `started` is whether the container counts as started now; the returned
    /// outcome, if any, is the result to record for the observed container.
    pub(crate) fn before_probe(
        &mut self,
        observed: &ContainerObservation,
        started: bool,
        now: Instant,
    ) -> (Step, Option<ProbeOutcome>) {
        if observed.pod_finished {
            return (Step::Exit, None);
        }
        let Some(container_id) = observed.container_id.clone() else {
            // Not created yet (or deleted): wait for more information.
            return (Step::Wait, None);
        };
        let mut record = None;
        if self.container_id.as_deref() != Some(container_id.as_str()) {
            self.container_id = Some(container_id.clone());
            record = Some(self.initial_value());
            // A new container: resume probing.
            self.on_hold = false;
        }
        if self.on_hold {
            return (Step::Wait, record);
        }
        let started_at = match observed.state {
            ObservedState::Running { started_at } => started_at,
            ObservedState::Waiting => return (Step::Wait, Some(ProbeOutcome::Failure)),
            // Abort if the container will not be restarted.
            ObservedState::Terminated { will_restart } => {
                return (if will_restart { Step::Wait } else { Step::Exit }, Some(ProbeOutcome::Failure));
            }
        };
        if observed.pod_deleting && matches!(self.kind, ProbeKind::Liveness | ProbeKind::Startup) {
            // Graceful shutdown: a last success for a quiet end, then stop probing.
            return (Step::Exit, Some(ProbeOutcome::Success));
        }
        // Whole seconds, as the kubelet's `int32(time.Since(startedAt).Seconds())`.
        let running_for = Duration::from_secs(now.saturating_duration_since(started_at).as_secs());
        if running_for < self.timing.initial_delay {
            return (Step::Wait, record);
        }
        // Startup probes stop once the container has started (the worker stays for a restarted container);
        // the other probes wait for it.
        if started == (self.kind == ProbeKind::Startup) {
            return (Step::Wait, record);
        }
        (Step::Probe(container_id), record)
    }

    /// Counts a probe's result; returns the result to record once it reaches its threshold.
    pub(crate) fn after_probe(&mut self, result: ProbeOutcome) -> Option<ProbeOutcome> {
        if self.last_result == Some(result) {
            self.result_run = self.result_run.saturating_add(1);
        } else {
            self.last_result = Some(result);
            self.result_run = 1;
        }
        let below_threshold = match result {
            ProbeOutcome::Failure => self.result_run < self.timing.failure_threshold,
            ProbeOutcome::Success => self.result_run < self.timing.success_threshold,
            ProbeOutcome::Unknown => false,
        };
        if below_threshold {
            return None;
        }
        if (self.kind == ProbeKind::Liveness && result == ProbeOutcome::Failure) || self.kind == ProbeKind::Startup {
            // The container will be restarted (or has started): no more probes until a new container.
            self.on_hold = true;
            self.result_run = 0;
        }
        Some(result)
    }
}

/// The results of one container's workers, keyed by container ID as the kubelet's results managers are.
#[derive(Debug, Default)]
struct Board {
    startup: Option<(String, ProbeOutcome)>,
    readiness: Option<(String, ProbeOutcome)>,
    liveness: Option<(String, ProbeOutcome)>,
    /// Workers still running, by kind (a probe without a worker does not gate anything).
    active: Vec<ProbeKind>,
    last_failure: Vec<(ProbeKind, String)>,
}

impl Board {
    fn slot(&mut self, kind: ProbeKind) -> &mut Option<(String, ProbeOutcome)> {
        match kind {
            ProbeKind::Startup => &mut self.startup,
            ProbeKind::Readiness => &mut self.readiness,
            ProbeKind::Liveness => &mut self.liveness,
        }
    }

    fn result(&self, kind: ProbeKind, container_id: &str) -> Option<ProbeOutcome> {
        let slot = match kind {
            ProbeKind::Startup => &self.startup,
            ProbeKind::Readiness => &self.readiness,
            ProbeKind::Liveness => &self.liveness,
        };
        slot.as_ref().filter(|(id, _)| id == container_id).map(|(_, outcome)| *outcome)
    }

    /// `isContainerStarted`.
    fn started(&self, observed: &ContainerObservation) -> bool {
        let (Some(id), ObservedState::Running { .. }) = (&observed.container_id, observed.state) else {
            return false;
        };
        match self.result(ProbeKind::Startup, id) {
            Some(outcome) => outcome == ProbeOutcome::Success,
            // A startup probe that has not run yet holds the container back; no startup probe, no gate.
            None => !self.active.contains(&ProbeKind::Startup),
        }
    }

    fn status(&self, config: &ContainerProbeConfig, observed: &ContainerObservation) -> ContainerProbeStatus {
        let started = self.started(observed);
        let running_id = match observed.state {
            ObservedState::Running { .. } => observed.container_id.as_deref(),
            _ => None,
        };
        let ready = started
            && running_id.is_some_and(|id| match self.result(ProbeKind::Readiness, id) {
                Some(outcome) => outcome == ProbeOutcome::Success,
                None => !self.active.contains(&ProbeKind::Readiness),
            });
        let restart = running_id.and_then(|id| {
            [ProbeKind::Liveness, ProbeKind::Startup]
                .into_iter()
                .find(|kind| self.result(*kind, id) == Some(ProbeOutcome::Failure))
                .map(|kind| RestartVerdict {
                    container_id: id.to_string(),
                    probe: kind,
                    message: format!(
                        "Container {} failed {} probe",
                        config.container_name,
                        kind.as_str().to_ascii_lowercase()
                    ),
                    event_message: self
                        .last_failure
                        .iter()
                        .find(|(failed, _)| *failed == kind)
                        .map(|(_, message)| message.clone()),
                    grace_period_seconds: grace_period(config.termination_grace_period_seconds, config.probe(kind)),
                })
        });
        ContainerProbeStatus { container_id: observed.container_id.clone(), started, ready, restart }
    }
}

/// State shared by a container's workers and its handle.
#[derive(Debug)]
struct Shared {
    config: ContainerProbeConfig,
    observed: Mutex<ContainerObservation>,
    board: Mutex<Board>,
    status: watch::Sender<ContainerProbeStatus>,
    events: mpsc::Sender<ProbeEvent>,
    readiness_trigger: Notify,
}

impl Shared {
    fn observed(&self) -> ContainerObservation {
        self.observed.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn started(&self) -> bool {
        let observed = self.observed();
        self.board.lock().unwrap_or_else(PoisonError::into_inner).started(&observed)
    }

    /// Applies `change` to the results and publishes the new status. `kubelet_sync` is a call from the kubelet's
    /// pod sync ([`ContainerProber::observe`]).
    fn update(&self, kubelet_sync: bool, change: impl FnOnce(&mut Board)) {
        let observed = self.observed();
        let status = {
            let mut board = self.board.lock().unwrap_or_else(PoisonError::into_inner);
            change(&mut board);
            board.status(&self.config, &observed)
        };
        let not_ready = status.started && !status.ready;
        let changed = self.status.send_if_modified(|current| {
            if *current == status {
                return false;
            }
            *current = status;
            true
        });
        // The kubelet syncs the pod on each change of a result (and periodically), and its UpdatePodStatus
        // triggers an immediate readiness probe of a started container that is not ready: a restarted or newly
        // started container does not wait a whole period to become ready.
        if (changed || kubelet_sync) && not_ready && self.config.readiness.is_some() {
            self.readiness_trigger.notify_one();
        }
    }

    fn record(&self, kind: ProbeKind, container_id: &str, outcome: ProbeOutcome) {
        self.update(false, |board| *board.slot(kind) = Some((container_id.to_string(), outcome)));
    }

    fn event(&self, container_id: &str, kind: ProbeKind, reason: &'static str, message: String) {
        tracing::debug!(container = %self.config.container_name, probe = kind.as_str(), %message, "probe event");
        if reason == "Unhealthy" {
            let mut board = self.board.lock().unwrap_or_else(PoisonError::into_inner);
            board.last_failure.retain(|(failed, _)| *failed != kind);
            board.last_failure.push((kind, message.clone()));
        }
        let event = ProbeEvent { container_id: container_id.to_string(), probe: kind, reason, message };
        if self.events.try_send(event).is_err() {
            tracing::debug!(container = %self.config.container_name, "probe event dropped: the kubelet is not reading them");
        }
    }
}

/// How far the workers are told to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum StopLevel {
    Run,
    /// `StopLivenessAndStartup`: the pod is terminating; readiness goes on.
    LivenessAndStartup,
    All,
}

/// The probe workers of one container. Dropping it stops them.
#[derive(Debug)]
pub struct ContainerProber {
    shared: Arc<Shared>,
    stop: watch::Sender<StopLevel>,
    events: mpsc::Receiver<ProbeEvent>,
    tasks: Vec<JoinHandle<()>>,
}

impl ContainerProber {
    /// Starts a worker for each probe `config` has, as `AddPod` does (on the current tokio runtime).
    pub fn spawn<E: ExecRunner + 'static>(
        config: ContainerProbeConfig,
        observed: ContainerObservation,
        exec: Arc<E>,
    ) -> Self {
        let kinds: Vec<ProbeKind> = [ProbeKind::Startup, ProbeKind::Readiness, ProbeKind::Liveness]
            .into_iter()
            .filter(|kind| config.probe(*kind).is_some())
            .collect();
        let board = Board { active: kinds.clone(), ..Board::default() };
        let status = board.status(&config, &observed);
        let (status, _) = watch::channel(status);
        let (events_tx, events) = mpsc::channel(EVENT_QUEUE);
        let shared = Arc::new(Shared {
            config,
            observed: Mutex::new(observed),
            board: Mutex::new(board),
            status,
            events: events_tx,
            readiness_trigger: Notify::new(),
        });
        let (stop, _) = watch::channel(StopLevel::Run);
        let tasks = kinds
            .into_iter()
            .filter_map(|kind| {
                let probe = shared.config.probe(kind)?.clone();
                let worker = Worker { kind, probe, shared: shared.clone(), exec: exec.clone(), stop: stop.subscribe() };
                Some(tokio::spawn(worker.run()))
            })
            .collect();
        ContainerProber { shared, stop, events, tasks }
    }

    /// Tells the workers what the container is doing now (its ID, state, the pod's IP and phase).
    pub fn observe(&self, observed: ContainerObservation) {
        *self.shared.observed.lock().unwrap_or_else(PoisonError::into_inner) = observed;
        self.shared.update(true, |_| {});
    }

    /// The status, updated as results come in.
    pub fn status(&self) -> watch::Receiver<ContainerProbeStatus> {
        self.shared.status.subscribe()
    }

    /// The status now.
    pub fn current(&self) -> ContainerProbeStatus {
        self.shared.status.borrow().clone()
    }

    /// The events to record (Warning `Unhealthy` / `ProbeWarning` on the container).
    pub fn events(&mut self) -> &mut mpsc::Receiver<ProbeEvent> {
        &mut self.events
    }

    /// Runs the readiness probe now instead of at its next period (the kubelet's manual trigger).
    pub fn trigger_readiness(&self) {
        self.shared.readiness_trigger.notify_one();
    }

    /// Stops the liveness and startup workers: the pod is terminating and only readiness still matters.
    pub fn stop_liveness_and_startup(&self) {
        self.stop.send_if_modified(|level| {
            let raise = *level < StopLevel::LivenessAndStartup;
            if raise {
                *level = StopLevel::LivenessAndStartup;
            }
            raise
        });
    }

    /// Stops every worker (the container is gone) and waits for them to end.
    pub async fn stop(mut self) {
        self.stop.send_replace(StopLevel::All);
        for task in std::mem::take(&mut self.tasks) {
            let _ = task.await;
        }
    }
}

impl Drop for ContainerProber {
    fn drop(&mut self) {
        self.stop.send_replace(StopLevel::All);
    }
}

/// One probe's loop (`worker.run`).
struct Worker<E> {
    kind: ProbeKind,
    probe: Probe,
    shared: Arc<Shared>,
    exec: Arc<E>,
    stop: watch::Receiver<StopLevel>,
}

impl<E: ExecRunner + 'static> Worker<E> {
    fn stops_at(&self, level: StopLevel) -> bool {
        match level {
            StopLevel::Run => false,
            StopLevel::LivenessAndStartup => self.kind != ProbeKind::Readiness,
            StopLevel::All => true,
        }
    }

    async fn run(self) {
        let timing = ProbeTiming::of(&self.probe);
        let mut logic = WorkerLogic::new(self.kind, timing);
        let mut ticker = tokio::time::interval_at(Instant::now() + timing.period, timing.period);
        // As Go's ticker: ticks missed during a slow probe collapse into one, then the period's rhythm resumes.
        ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let mut stop = self.stop.clone();
        loop {
            if self.stops_at(*stop.borrow()) || !self.do_probe(&mut logic).await {
                break;
            }
            tokio::select! {
                // Told to stop, or the handle is gone (an error): both end the worker.
                _ = stop.wait_for(|level| self.stops_at(*level)) => break,
                _ = ticker.tick() => {}
                _ = self.shared.readiness_trigger.notified(), if self.kind == ProbeKind::Readiness => {
                    // The next periodic run counts from this manual one.
                    ticker.reset();
                }
            }
        }
        // Clean up: the worker's result goes, and without a worker the probe gates nothing.
        let kind = self.kind;
        self.shared.update(false, |board| {
            *board.slot(kind) = None;
            board.active.retain(|active| *active != kind);
        });
    }

    /// `doProbe`: returns whether the worker should go on.
    async fn do_probe(&self, logic: &mut WorkerLogic) -> bool {
        let observed = self.shared.observed();
        let (step, record) = logic.before_probe(&observed, self.shared.started(), Instant::now());
        if let (Some(outcome), Some(id)) = (record, &observed.container_id) {
            self.shared.record(self.kind, id, outcome);
        }
        let container_id = match step {
            Step::Wait => return true,
            Step::Exit => return false,
            Step::Probe(container_id) => container_id,
        };
        let target = ProbeTarget {
            pod_ip: observed.pod_ip.clone(),
            container_id: container_id.clone(),
            named_ports: self.shared.config.named_ports.clone(),
            static_env: self.shared.config.static_env.clone(),
        };
        let Some(outcome) = self.probe_with_retries(&target).await else {
            // A probe error: the result is thrown away.
            return true;
        };
        if let Some(outcome) = logic.after_probe(outcome) {
            self.shared.record(self.kind, &container_id, outcome);
        }
        true
    }

    /// `prober.probe`: runs the probe (again, up to three times, while it cannot be run), records its event,
    /// and maps it to the outcome the worker counts; `None` for an error.
    async fn probe_with_retries(&self, target: &ProbeTarget) -> Option<ProbeOutcome> {
        let mut result = ProbeResult::Unknown(String::new());
        for _ in 0..MAX_PROBE_RETRIES {
            result = probe_once(&self.probe, target, &*self.exec).await;
            if !matches!(result, ProbeResult::Unknown(_)) {
                break;
            }
        }
        let kind = self.kind.as_str();
        let id = &target.container_id;
        match result {
            ProbeResult::Success => Some(ProbeOutcome::Success),
            ProbeResult::Warning(output) => {
                self.shared.event(id, self.kind, "ProbeWarning", format!("{kind} probe warning: {output}"));
                Some(ProbeOutcome::Success)
            }
            ProbeResult::Failure(output) => {
                self.shared.event(id, self.kind, "Unhealthy", format!("{kind} probe failed: {output}"));
                Some(ProbeOutcome::Failure)
            }
            ProbeResult::Unknown(error) => {
                self.shared.event(
                    id,
                    self.kind,
                    "Unhealthy",
                    format!("{kind} probe errored and resulted in unknown state: {error}"),
                );
                None
            }
        }
    }
}
