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
            termination_grace_period_seconds: pod
                .spec
                .as_ref()
                .and_then(|spec| spec.termination_grace_period_seconds),
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
    grace_period(
        pod.spec
            .as_ref()
            .and_then(|spec| spec.termination_grace_period_seconds),
        probe_spec,
    )
}

fn grace_period(pod_seconds: Option<i64>, probe: Option<&Probe>) -> i64 {
    match pod_seconds {
        Some(pod_seconds) => probe
            .and_then(|probe| probe.termination_grace_period_seconds)
            .unwrap_or(pod_seconds),
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
            Duration::from_secs(
                value
                    .and_then(|v| u64::try_from(v).ok())
                    .unwrap_or(default)
                    .max(minimum),
            )
        };
        let count = |value: Option<i32>, default: u32| {
            value
                .and_then(|v| u32::try_from(v).ok())
                .unwrap_or(default)
                .max(1)
        };
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
        WorkerLogic {
            kind,
            timing,
            container_id: None,
            last_result: None,
            result_run: 0,
            on_hold: false,
        }
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
                return (
                    if will_restart { Step::Wait } else { Step::Exit },
                    Some(ProbeOutcome::Failure),
                );
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
        if (self.kind == ProbeKind::Liveness && result == ProbeOutcome::Failure)
            || self.kind == ProbeKind::Startup
        {
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
        slot.as_ref()
            .filter(|(id, _)| id == container_id)
            .map(|(_, outcome)| *outcome)
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
                    grace_period_seconds: grace_period(
                        config.termination_grace_period_seconds,
                        config.probe(kind),
                    ),
                })
        });
        ContainerProbeStatus {
            container_id: observed.container_id.clone(),
            started,
            ready,
            restart,
        }
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
        self.observed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn started(&self) -> bool {
        let observed = self.observed();
        self.board
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .started(&observed)
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
        self.update(false, |board| {
            *board.slot(kind) = Some((container_id.to_string(), outcome))
        });
    }

    fn event(&self, container_id: &str, kind: ProbeKind, reason: &'static str, message: String) {
        tracing::debug!(container = %self.config.container_name, probe = kind.as_str(), %message, "probe event");
        if reason == "Unhealthy" {
            let mut board = self.board.lock().unwrap_or_else(PoisonError::into_inner);
            board.last_failure.retain(|(failed, _)| *failed != kind);
            board.last_failure.push((kind, message.clone()));
        }
        let event = ProbeEvent {
            container_id: container_id.to_string(),
            probe: kind,
            reason,
            message,
        };
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
        let board = Board {
            active: kinds.clone(),
            ..Board::default()
        };
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
                let worker = Worker {
                    kind,
                    probe,
                    shared: shared.clone(),
                    exec: exec.clone(),
                    stop: stop.subscribe(),
                };
                Some(tokio::spawn(worker.run()))
            })
            .collect();
        ContainerProber {
            shared,
            stop,
            events,
            tasks,
        }
    }

    /// Tells the workers what the container is doing now (its ID, state, the pod's IP and phase).
    pub fn observe(&self, observed: ContainerObservation) {
        *self
            .shared
            .observed
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = observed;
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
            // Read the level into a value: a watch borrow must not be held across the probe.
            let level = *stop.borrow();
            if self.stops_at(level) || !self.do_probe(&mut logic).await {
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
                self.shared.event(
                    id,
                    self.kind,
                    "ProbeWarning",
                    format!("{kind} probe warning: {output}"),
                );
                Some(ProbeOutcome::Success)
            }
            ProbeResult::Failure(output) => {
                self.shared.event(
                    id,
                    self.kind,
                    "Unhealthy",
                    format!("{kind} probe failed: {output}"),
                );
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::collections::HashMap;

    use tokio::time::sleep;

    use super::super::{ExecError, ExecOutput};
    use super::*;

    fn timing(success_threshold: u32, failure_threshold: u32, initial_delay: u64) -> ProbeTiming {
        ProbeTiming {
            initial_delay: Duration::from_secs(initial_delay),
            period: Duration::from_secs(10),
            success_threshold,
            failure_threshold,
        }
    }

    fn running(container_id: &str, started_at: Instant) -> ContainerObservation {
        ContainerObservation {
            pod_ip: "10.42.0.9".into(),
            container_id: Some(container_id.into()),
            state: ObservedState::Running { started_at },
            pod_finished: false,
            pod_deleting: false,
        }
    }

    #[test]
    fn liveness_failures_count_to_the_threshold_then_hold() {
        let now = Instant::now();
        let mut logic = WorkerLogic::new(ProbeKind::Liveness, timing(1, 3, 0));
        let observed = running("c1", now);
        assert_eq!(
            logic.before_probe(&observed, true, now),
            (Step::Probe("c1".into()), Some(ProbeOutcome::Success))
        );
        assert_eq!(logic.after_probe(ProbeOutcome::Failure), None);
        assert_eq!(logic.after_probe(ProbeOutcome::Failure), None);
        // A success in between starts the count again.
        assert_eq!(
            logic.after_probe(ProbeOutcome::Success),
            Some(ProbeOutcome::Success)
        );
        assert_eq!(logic.after_probe(ProbeOutcome::Failure), None);
        assert_eq!(logic.after_probe(ProbeOutcome::Failure), None);
        assert_eq!(
            logic.after_probe(ProbeOutcome::Failure),
            Some(ProbeOutcome::Failure)
        );
        // On hold until a new container: no more probes of this one.
        assert_eq!(logic.before_probe(&observed, true, now), (Step::Wait, None));
        let restarted = running("c2", now);
        assert_eq!(
            logic.before_probe(&restarted, true, now),
            (Step::Probe("c2".into()), Some(ProbeOutcome::Success))
        );
        // The hold reset the run: one failure does not restart the new container.
        assert_eq!(logic.after_probe(ProbeOutcome::Failure), None);
    }

    #[test]
    fn readiness_needs_consecutive_successes_and_never_holds() {
        let now = Instant::now();
        let mut logic = WorkerLogic::new(ProbeKind::Readiness, timing(2, 1, 0));
        let observed = running("c1", now);
        assert_eq!(
            logic.before_probe(&observed, true, now),
            (Step::Probe("c1".into()), Some(ProbeOutcome::Failure))
        );
        assert_eq!(logic.after_probe(ProbeOutcome::Success), None);
        assert_eq!(
            logic.after_probe(ProbeOutcome::Success),
            Some(ProbeOutcome::Success)
        );
        assert_eq!(
            logic.after_probe(ProbeOutcome::Success),
            Some(ProbeOutcome::Success)
        );
        assert_eq!(
            logic.after_probe(ProbeOutcome::Failure),
            Some(ProbeOutcome::Failure)
        );
        assert_eq!(logic.after_probe(ProbeOutcome::Success), None);
        assert_eq!(
            logic.before_probe(&observed, true, now),
            (Step::Probe("c1".into()), None)
        );
    }

    #[test]
    fn startup_holds_after_its_verdict_and_gates_the_others() {
        let now = Instant::now();
        let observed = running("c1", now);
        let mut startup = WorkerLogic::new(ProbeKind::Startup, timing(1, 2, 0));
        assert_eq!(
            startup.before_probe(&observed, false, now),
            (Step::Probe("c1".into()), Some(ProbeOutcome::Unknown))
        );
        assert_eq!(
            startup.after_probe(ProbeOutcome::Success),
            Some(ProbeOutcome::Success)
        );
        assert_eq!(startup.before_probe(&observed, true, now), (Step::Wait, None));

        let mut readiness = WorkerLogic::new(ProbeKind::Readiness, timing(1, 3, 0));
        assert_eq!(
            readiness.before_probe(&observed, false, now),
            (Step::Wait, Some(ProbeOutcome::Failure))
        );
        assert_eq!(
            readiness.before_probe(&observed, true, now),
            (Step::Probe("c1".into()), None)
        );
        let mut startup = WorkerLogic::new(ProbeKind::Startup, timing(1, 3, 0));
        // A container that already counts as started is not startup-probed.
        assert_eq!(
            startup.before_probe(&observed, true, now),
            (Step::Wait, Some(ProbeOutcome::Unknown))
        );
    }

    #[test]
    fn container_states_and_pod_lifecycle_decide_whether_to_go_on() {
        let now = Instant::now();
        let mut logic = WorkerLogic::new(ProbeKind::Liveness, timing(1, 3, 0));
        let mut observed = running("c1", now);
        observed.container_id = None;
        assert_eq!(logic.before_probe(&observed, true, now), (Step::Wait, None));
        observed.container_id = Some("c1".into());
        observed.state = ObservedState::Waiting;
        assert_eq!(
            logic.before_probe(&observed, true, now),
            (Step::Wait, Some(ProbeOutcome::Failure))
        );
        observed.state = ObservedState::Terminated { will_restart: true };
        assert_eq!(
            logic.before_probe(&observed, true, now),
            (Step::Wait, Some(ProbeOutcome::Failure))
        );
        observed.state = ObservedState::Terminated { will_restart: false };
        assert_eq!(
            logic.before_probe(&observed, true, now),
            (Step::Exit, Some(ProbeOutcome::Failure))
        );

        let deleting = ContainerObservation {
            pod_deleting: true,
            ..running("c1", now)
        };
        let mut liveness = WorkerLogic::new(ProbeKind::Liveness, timing(1, 3, 0));
        assert_eq!(
            liveness.before_probe(&deleting, true, now),
            (Step::Exit, Some(ProbeOutcome::Success))
        );
        let mut readiness = WorkerLogic::new(ProbeKind::Readiness, timing(1, 3, 0));
        assert!(matches!(
            readiness.before_probe(&deleting, true, now),
            (Step::Probe(_), _)
        ));

        let finished = ContainerObservation {
            pod_finished: true,
            ..running("c1", now)
        };
        assert_eq!(readiness.before_probe(&finished, true, now), (Step::Exit, None));
    }

    #[tokio::test(start_paused = true)]
    async fn initial_delay_counts_whole_seconds_of_running() {
        let started_at = Instant::now();
        let mut logic = WorkerLogic::new(ProbeKind::Readiness, timing(1, 3, 5));
        let observed = running("c1", started_at);
        tokio::time::advance(Duration::from_millis(4_999)).await;
        assert_eq!(logic.before_probe(&observed, true, Instant::now()).0, Step::Wait);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(
            logic.before_probe(&observed, true, Instant::now()).0,
            Step::Probe("c1".into())
        );
    }

    #[test]
    fn timing_takes_the_api_defaults() {
        let timing = ProbeTiming::of(&Probe::default());
        assert_eq!(
            timing,
            ProbeTiming {
                initial_delay: Duration::ZERO,
                period: Duration::from_secs(10),
                success_threshold: 1,
                failure_threshold: 3
            }
        );
    }

    fn pod_and_container(json: serde_json::Value) -> (Pod, Container) {
        let pod: Pod = serde_json::from_value(json).unwrap();
        let container = pod.spec.as_ref().unwrap().containers[0].clone();
        (pod, container)
    }

    #[test]
    fn kill_grace_period_prefers_deletion_then_probe_then_pod() {
        let (pod, container) = pod_and_container(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {"terminationGracePeriodSeconds": 30, "containers": [{
                "name": "app",
                "livenessProbe": {"exec": {"command": ["true"]}, "terminationGracePeriodSeconds": 5},
                "startupProbe": {"exec": {"command": ["true"]}}
            }]}
        }));
        assert_eq!(
            probe_kill_grace_period_seconds(&pod, &container, ProbeKind::Liveness),
            5
        );
        assert_eq!(
            probe_kill_grace_period_seconds(&pod, &container, ProbeKind::Startup),
            30
        );
        let mut deleting = pod.clone();
        deleting.metadata.deletion_grace_period_seconds = Some(1);
        assert_eq!(
            probe_kill_grace_period_seconds(&deleting, &container, ProbeKind::Liveness),
            1
        );
        let mut no_pod_grace = pod.clone();
        if let Some(spec) = no_pod_grace.spec.as_mut() {
            spec.termination_grace_period_seconds = None;
        }
        assert_eq!(
            probe_kill_grace_period_seconds(&no_pod_grace, &container, ProbeKind::Liveness),
            2
        );
    }

    /// An exec runner answering per command (its first word), recording when each ran.
    #[derive(Debug, Default)]
    struct Programmable {
        replies: Mutex<HashMap<String, Result<ExecOutput, ExecError>>>,
        calls: Mutex<Vec<(String, Instant)>>,
    }

    impl Programmable {
        fn exit(&self, command: &str, exit_code: i32, output: &str) {
            let reply = Ok(ExecOutput {
                exit_code,
                output: output.as_bytes().to_vec(),
            });
            self.replies.lock().unwrap().insert(command.into(), reply);
        }

        fn cannot_run(&self, command: &str, message: &str) {
            self.replies
                .lock()
                .unwrap()
                .insert(command.into(), Err(ExecError::Failed(message.into())));
        }

        fn calls(&self, command: &str) -> usize {
            self.calls
                .lock()
                .unwrap()
                .iter()
                .filter(|(name, _)| name == command)
                .count()
        }
    }

    impl ExecRunner for Programmable {
        async fn run_in_container(
            &self,
            _container_id: &str,
            command: &[String],
            _timeout: Duration,
        ) -> Result<ExecOutput, ExecError> {
            let name = command.first().cloned().unwrap_or_default();
            self.calls.lock().unwrap().push((name.clone(), Instant::now()));
            let reply = self.replies.lock().unwrap().get(&name).cloned();
            reply.unwrap_or(Ok(ExecOutput {
                exit_code: 0,
                output: Vec::new(),
            }))
        }
    }

    fn exec_probe(command: &str, extra: serde_json::Value) -> Probe {
        let mut json = serde_json::json!({"exec": {"command": [command]}});
        if let (Some(json), serde_json::Value::Object(extra)) = (json.as_object_mut(), extra) {
            json.extend(extra);
        }
        serde_json::from_value(json).unwrap()
    }

    fn config(
        startup: Option<Probe>,
        readiness: Option<Probe>,
        liveness: Option<Probe>,
    ) -> ContainerProbeConfig {
        ContainerProbeConfig {
            container_name: "app".into(),
            startup,
            readiness,
            liveness,
            termination_grace_period_seconds: Some(30),
            ..ContainerProbeConfig::default()
        }
    }

    fn drain(prober: &mut ContainerProber) -> Vec<ProbeEvent> {
        let mut events = Vec::new();
        while let Ok(event) = prober.events().try_recv() {
            events.push(event);
        }
        events
    }

    #[tokio::test(start_paused = true)]
    async fn liveness_failure_past_threshold_asks_for_a_restart_once() {
        let exec = Arc::new(Programmable::default());
        exec.exit("live", 1, "boom");
        let liveness = exec_probe(
            "live",
            serde_json::json!({"periodSeconds": 10, "failureThreshold": 3, "initialDelaySeconds": 5,
                "terminationGracePeriodSeconds": 7}),
        );
        let started_at = Instant::now();
        let mut prober = ContainerProber::spawn(
            config(None, None, Some(liveness)),
            running("c1", started_at),
            exec.clone(),
        );
        let status = prober.status();

        // Nothing during the initial delay; failures at 10 s and 20 s stay below the threshold.
        sleep(Duration::from_secs(29)).await;
        assert_eq!(exec.calls("live"), 2);
        assert_eq!(status.borrow().restart, None);
        assert!(status.borrow().started && status.borrow().ready);

        sleep(Duration::from_secs(2)).await;
        let verdict = status
            .borrow()
            .restart
            .clone()
            .expect("the third failure asks for a restart");
        assert_eq!(
            verdict,
            RestartVerdict {
                container_id: "c1".into(),
                probe: ProbeKind::Liveness,
                message: "Container app failed liveness probe".into(),
                event_message: Some("Liveness probe failed: boom".into()),
                grace_period_seconds: 7,
            }
        );
        let events = drain(&mut prober);
        assert_eq!(events.len(), 3);
        assert!(
            events
                .iter()
                .all(|event| event.reason == "Unhealthy" && event.message == "Liveness probe failed: boom")
        );

        // On hold: the condemned container is not probed again.
        sleep(Duration::from_secs(60)).await;
        assert_eq!(exec.calls("live"), 3);

        // The restarted container starts alive and is probed again after its initial delay.
        exec.exit("live", 0, "");
        prober.observe(running("c2", Instant::now()));
        assert_eq!(prober.current().restart, None);
        sleep(Duration::from_secs(11)).await;
        assert_eq!(exec.calls("live"), 4);
        assert_eq!(prober.current().restart, None);
    }

    #[tokio::test(start_paused = true)]
    async fn startup_probe_gates_readiness_and_liveness() {
        let exec = Arc::new(Programmable::default());
        exec.exit("startup", 1, "starting");
        let startup = exec_probe(
            "startup",
            serde_json::json!({"periodSeconds": 1, "failureThreshold": 30}),
        );
        let readiness = exec_probe("ready", serde_json::json!({"periodSeconds": 10}));
        let liveness = exec_probe("live", serde_json::json!({"periodSeconds": 10}));
        let prober = ContainerProber::spawn(
            config(Some(startup), Some(readiness), Some(liveness)),
            running("c1", Instant::now()),
            exec.clone(),
        );

        sleep(Duration::from_millis(5_500)).await;
        assert!(exec.calls("startup") >= 5);
        assert_eq!(
            (exec.calls("ready"), exec.calls("live")),
            (0, 0),
            "nothing but the startup probe before start"
        );
        let status = prober.current();
        assert!(!status.started && !status.ready && status.restart.is_none());

        // The startup probe passes at 6 s: the container has started, and readiness is probed at once rather
        // than at its next period.
        exec.exit("startup", 0, "");
        sleep(Duration::from_secs(1)).await;
        let status = prober.current();
        assert!(status.started && status.ready, "{status:?}");
        assert_eq!(exec.calls("ready"), 1);
        assert_eq!(exec.calls("live"), 0);
        let startup_calls = exec.calls("startup");

        sleep(Duration::from_secs(4)).await;
        assert_eq!(
            exec.calls("live"),
            1,
            "liveness runs on its own period once started"
        );
        assert_eq!(
            exec.calls("startup"),
            startup_calls,
            "a started container is not startup-probed again"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn startup_failure_past_threshold_asks_for_a_restart() {
        let exec = Arc::new(Programmable::default());
        exec.exit("startup", 1, "");
        let startup = exec_probe(
            "startup",
            serde_json::json!({"periodSeconds": 1, "failureThreshold": 3}),
        );
        let liveness = exec_probe("live", serde_json::json!({"periodSeconds": 1}));
        let prober = ContainerProber::spawn(
            config(Some(startup), None, Some(liveness)),
            running("c1", Instant::now()),
            exec.clone(),
        );
        sleep(Duration::from_millis(1_500)).await;
        assert_eq!(prober.current().restart, None);
        sleep(Duration::from_secs(1)).await;
        let verdict = prober.current().restart.expect("three startup failures");
        assert_eq!(verdict.probe, ProbeKind::Startup);
        assert_eq!(verdict.message, "Container app failed startup probe");
        assert_eq!(verdict.event_message.as_deref(), Some("Startup probe failed: "));
        assert_eq!(
            verdict.grace_period_seconds, 30,
            "no probe-level grace period: the pod's"
        );
        assert!(!prober.current().started);
        assert_eq!(exec.calls("live"), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn probe_errors_are_retried_then_thrown_away() {
        let exec = Arc::new(Programmable::default());
        exec.cannot_run("live", "no such container");
        let liveness = exec_probe(
            "live",
            serde_json::json!({"periodSeconds": 10, "failureThreshold": 1}),
        );
        let mut prober = ContainerProber::spawn(
            config(None, None, Some(liveness)),
            running("c1", Instant::now()),
            exec.clone(),
        );
        sleep(Duration::from_secs(25)).await;
        assert_eq!(exec.calls("live"), 9, "three runs at 0 s, 10 s and 20 s");
        assert_eq!(prober.current().restart, None, "an error is not a failure");
        let events = drain(&mut prober);
        assert_eq!(events.len(), 3);
        assert_eq!(
            events[0].message,
            "Liveness probe errored and resulted in unknown state: no such container"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn deletion_and_stops_end_the_right_workers() {
        let exec = Arc::new(Programmable::default());
        let readiness = exec_probe("ready", serde_json::json!({"periodSeconds": 1}));
        let liveness = exec_probe("live", serde_json::json!({"periodSeconds": 1}));
        let prober = ContainerProber::spawn(
            config(None, Some(readiness), Some(liveness)),
            running("c1", Instant::now()),
            exec.clone(),
        );
        sleep(Duration::from_millis(2_500)).await;
        assert!(prober.current().ready);
        let live_calls = exec.calls("live");

        // The pod is being deleted: liveness answers success and stops; readiness goes on.
        prober.observe(ContainerObservation {
            pod_deleting: true,
            ..running("c1", Instant::now())
        });
        let ready_calls = exec.calls("ready");
        sleep(Duration::from_secs(3)).await;
        assert_eq!(exec.calls("live"), live_calls);
        assert!(exec.calls("ready") >= ready_calls + 3);
        assert_eq!(prober.current().restart, None);

        prober.stop().await;
        let ready_calls = exec.calls("ready");
        sleep(Duration::from_secs(3)).await;
        assert_eq!(exec.calls("ready"), ready_calls, "stopped workers do not probe");
    }

    #[tokio::test(start_paused = true)]
    async fn stop_liveness_and_startup_keeps_readiness_and_drop_stops_all() {
        let exec = Arc::new(Programmable::default());
        let readiness = exec_probe("ready", serde_json::json!({"periodSeconds": 1}));
        let liveness = exec_probe("live", serde_json::json!({"periodSeconds": 1}));
        let prober = ContainerProber::spawn(
            config(None, Some(readiness), Some(liveness)),
            running("c1", Instant::now()),
            exec.clone(),
        );
        sleep(Duration::from_millis(1_500)).await;
        prober.stop_liveness_and_startup();
        sleep(Duration::from_millis(100)).await;
        let (live_calls, ready_calls) = (exec.calls("live"), exec.calls("ready"));
        sleep(Duration::from_secs(3)).await;
        assert_eq!(exec.calls("live"), live_calls);
        assert_eq!(exec.calls("ready"), ready_calls + 3);

        drop(prober);
        sleep(Duration::from_millis(100)).await;
        let ready_calls = exec.calls("ready");
        sleep(Duration::from_secs(3)).await;
        assert_eq!(exec.calls("ready"), ready_calls);
    }

    #[tokio::test(start_paused = true)]
    async fn readiness_follows_thresholds_through_the_worker() {
        let exec = Arc::new(Programmable::default());
        let readiness = exec_probe(
            "ready",
            serde_json::json!({"periodSeconds": 1, "successThreshold": 2, "failureThreshold": 2}),
        );
        let mut prober = ContainerProber::spawn(
            config(None, Some(readiness), None),
            running("c1", Instant::now()),
            exec.clone(),
        );
        let mut status = prober.status();
        // Successes at 0 s and 1 s: ready after the second.
        sleep(Duration::from_millis(500)).await;
        assert!(!prober.current().ready);
        sleep(Duration::from_secs(1)).await;
        assert!(prober.current().ready);
        status.mark_unchanged();

        exec.exit("ready", 1, "not now");
        sleep(Duration::from_secs(1)).await;
        assert!(prober.current().ready, "one failure is below the threshold");
        sleep(Duration::from_secs(1)).await;
        assert!(!prober.current().ready);
        assert!(status.has_changed().unwrap());
        // Two failures made it unready; becoming unready makes the kubelet sync the pod, whose UpdatePodStatus
        // runs the readiness probe again at once: a third failure.
        let events = drain(&mut prober);
        assert_eq!(events.len(), 3);
        assert_eq!(events[0].message, "Readiness probe failed: not now");
        assert_eq!(events[0].probe, ProbeKind::Readiness);
    }
}
