//! Leader election through a `coordination.k8s.io/v1` Lease, as client-go's `leaderelection` package does it, so
//! that several servers on one datastore run each controller (and the scheduler) once.
//!
//! The rules are client-go's: a Lease held by another identity is taken over only after `lease_duration` has
//! passed *by this process's own clock* since the Lease last changed (the holder's `renewTime` is not trusted:
//! clocks differ between machines); the leader renews every `retry_period` and gives up leadership when no renewal
//! has succeeded for `renew_deadline`. Writes are compare-and-swap on the resourceVersion, so two candidates never
//! both win a round.
//!
//! Unlike kube-controller-manager (whose identity is `hostname_<random uuid>`), a bonsai server's identity is
//! stable across restarts (its data directory can be open in one process only), so a restarted server takes its
//! own Lease back at once instead of waiting for it to expire.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::{ControllerError, kube_error};

/// Where the Lease is, who this process is, and client-go's timings.
#[derive(Clone, Debug)]
pub struct Election {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

impl Election {
    /// kube-controller-manager's and kube-scheduler's defaults: a 15 s lease, renewed within 10 s, tried every 2 s.
    pub fn new(namespace: &str, name: &str, identity: &str) -> Election {
        Election {
            namespace: namespace.into(),
            name: name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// What one round of "acquire or renew" decided, from the Lease as read and this process's observations.
#[derive(Debug, PartialEq)]
enum Round {
    /// Write this spec (create the Lease when there was none).
    Write(LeaseSpec),
    /// Another identity holds a Lease that has not expired.
    HeldByOther(String),
}

/// The acquire-or-renew decision of client-go's `tryAcquireOrRenew`. `observed_for` is how long ago (by the local
/// clock) the Lease was last seen to change; `now` is the time to write.
fn decide(election: &Election, current: Option<&LeaseSpec>, observed_for: Duration, now: MicroTime) -> Round {
    let seconds = i32::try_from(election.lease_duration.as_secs()).unwrap_or(i32::MAX);
    let Some(current) = current else {
        return Round::Write(LeaseSpec {
            holder_identity: Some(election.identity.clone()),
            lease_duration_seconds: Some(seconds),
            acquire_time: Some(now.clone()),
            renew_time: Some(now),
            lease_transitions: Some(0),
            ..LeaseSpec::default()
        });
    };
    let holder = current.holder_identity.clone().unwrap_or_default();
    // The holder's own duration counts (client-go reads it from the record), not ours.
    let duration = current
        .lease_duration_seconds
        .and_then(|s| u64::try_from(s).ok())
        .map_or(election.lease_duration, Duration::from_secs);
    if !holder.is_empty() && holder != election.identity && observed_for < duration {
        return Round::HeldByOther(holder);
    }
    let mut next = current.clone();
    if holder != election.identity {
        next.acquire_time = Some(now.clone());
        next.lease_transitions = Some(current.lease_transitions.unwrap_or(0) + 1);
    }
    next.holder_identity = Some(election.identity.clone());
    next.lease_duration_seconds = Some(seconds);
    next.renew_time = Some(now);
    Round::Write(next)
}

fn micro_now() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

/// One candidate's view of the Lease: the last spec read and when (locally) it last changed.
#[derive(Debug)]
struct Candidate {
    api: Api<Lease>,
    election: Election,
    observed: Option<(LeaseSpec, Instant)>,
}

impl Candidate {
    /// One round: true when this process holds the Lease afterwards.
    async fn try_acquire_or_renew(&mut self) -> Result<bool, ControllerError> {
        let lease = self
            .api
            .get_opt(&self.election.name)
            .await
            .map_err(kube_error(format!(
                "reading lease {}/{}",
                self.election.namespace, self.election.name
            )))?;
        let current = lease.as_ref().and_then(|l| l.spec.clone());
        if let Some(spec) = &current
            && self.observed.as_ref().is_none_or(|(seen, _)| seen != spec)
        {
            self.observed = Some((spec.clone(), Instant::now()));
        }
        let observed_for = self
            .observed
            .as_ref()
            .map_or(Duration::MAX, |(_, at)| at.elapsed());
        let spec = match decide(&self.election, current.as_ref(), observed_for, micro_now()) {
            Round::HeldByOther(holder) => {
                tracing::debug!(lease = %self.election.name, %holder, "lease held by another server");
                return Ok(false);
            }
            Round::Write(spec) => spec,
        };
        let written = match lease {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.election.name.clone()),
                        namespace: Some(self.election.namespace.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(spec.clone()),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            Some(mut lease) => {
                // Replace with the resourceVersion read: a concurrent writer makes this a 409, and we lose the round.
                lease.spec = Some(spec.clone());
                self.api
                    .replace(&self.election.name, &PostParams::default(), &lease)
                    .await
            }
        };
        match written {
            Ok(_) => {
                self.observed = Some((spec, Instant::now()));
                Ok(true)
            }
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(kube_error(format!(
                "writing lease {}/{}",
                self.election.namespace, self.election.name
            ))(e)),
        }
    }
}

/// Runs `start`'s tasks while this process holds the election's Lease, forever: campaigns, starts them on winning,
/// renews, aborts them when leadership is lost (another server took the Lease, or no renewal succeeded within
/// `renew_deadline`), and campaigns again.
pub async fn run_while_leader<F, Fut>(client: kube::Client, election: Election, mut start: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = JoinSet<()>>,
{
    let api: Api<Lease> = Api::namespaced(client, &election.namespace);
    let mut candidate = Candidate {
        api,
        election: election.clone(),
        observed: None,
    };
    loop {
        // Campaign.
        loop {
            match candidate.try_acquire_or_renew().await {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => tracing::warn!(lease = %election.name, error = %e, "leader election"),
            }
            tokio::time::sleep(election.retry_period).await;
        }
        tracing::info!(lease = %election.name, identity = %election.identity, "became leader");
        let mut tasks = start().await;
        // Lead: renew every retry period until a renewal deadline passes without success.
        let mut renewed = Instant::now();
        loop {
            tokio::time::sleep(election.retry_period).await;
            match candidate.try_acquire_or_renew().await {
                Ok(true) => renewed = Instant::now(),
                Ok(false) => {}
                Err(e) => tracing::warn!(lease = %election.name, error = %e, "renewing the lease"),
            }
            if renewed.elapsed() >= election.renew_deadline {
                break;
            }
        }
        tracing::warn!(lease = %election.name, identity = %election.identity, "lost leadership, stopping");
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(second: i64) -> MicroTime {
        MicroTime(k8s_openapi::jiff::Timestamp::from_second(second).unwrap())
    }

    fn held(holder: &str, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(15),
            acquire_time: Some(at(100)),
            renew_time: Some(at(110)),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn no_lease_is_created_with_this_identity() {
        let election = Election::new("kube-system", "kube-scheduler", "me");
        let Round::Write(spec) = decide(&election, None, Duration::MAX, at(200)) else {
            panic!("expected a write");
        };
        assert_eq!(spec.holder_identity.as_deref(), Some("me"));
        assert_eq!(spec.lease_duration_seconds, Some(15));
        assert_eq!(spec.acquire_time, Some(at(200)));
        assert_eq!(spec.lease_transitions, Some(0));
    }

    #[test]
    fn another_holder_is_respected_until_its_lease_expires_by_the_local_clock() {
        let election = Election::new("kube-system", "kube-scheduler", "me");
        let other = held("other", 3);
        assert_eq!(
            decide(&election, Some(&other), Duration::from_secs(14), at(200)),
            Round::HeldByOther("other".into())
        );
        let Round::Write(spec) = decide(&election, Some(&other), Duration::from_secs(15), at(200)) else {
            panic!("an expired lease is taken over");
        };
        assert_eq!(spec.holder_identity.as_deref(), Some("me"));
        assert_eq!(
            spec.acquire_time,
            Some(at(200)),
            "a new holder has a new acquire time"
        );
        assert_eq!(spec.lease_transitions, Some(4));
    }

    #[test]
    fn the_holder_renews_and_a_released_lease_is_free() {
        let election = Election::new("kube-system", "kube-scheduler", "me");
        let mine = held("me", 2);
        let Round::Write(spec) = decide(&election, Some(&mine), Duration::ZERO, at(300)) else {
            panic!("the holder renews");
        };
        assert_eq!(spec.renew_time, Some(at(300)));
        assert_eq!(
            spec.acquire_time,
            Some(at(100)),
            "a renewal keeps the acquire time"
        );
        assert_eq!(spec.lease_transitions, Some(2));
        let released = held("", 2);
        assert!(matches!(
            decide(&election, Some(&released), Duration::ZERO, at(300)),
            Round::Write(_)
        ));
    }
}
