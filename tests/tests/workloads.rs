//! Deployments and ReplicaSets against the real binary, with the test playing the node: a task marks every new
//! pod Running and Ready (with an IP), as a kubelet would, while kubectl drives rollouts. The rollout's bounds are
//! checked at every pod change the test sees.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bonsai_e2e::{Server, ok};
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::watcher;

/// Marks pods Running and Ready as they appear, until `stop`; checks, at every change, that the pods of
/// `app` stay within `ready >= min_ready` and `active <= max_active`. Returns the worst it saw.
async fn fake_kubelet(
    client: kube::Client,
    stop: Arc<AtomicBool>,
    min_ready: usize,
    max_active: usize,
) -> (usize, usize) {
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let mut events = std::pin::pin!(watcher(pods.clone(), watcher::Config::default()));
    let mut known: std::collections::BTreeMap<String, Pod> = Default::default();
    let (mut fewest_ready, mut most_active) = (usize::MAX, 0);
    let mut next_ip = 10;
    let mut settled = false;
    while !stop.load(Ordering::Relaxed) {
        // Every tick looks at the pods again, so that a status write that lost a race is made again.
        if let Ok(Some(event)) = tokio::time::timeout(Duration::from_millis(100), events.next()).await {
            match event.unwrap() {
                watcher::Event::Apply(p) | watcher::Event::InitApply(p) => {
                    known.insert(p.metadata.name.clone().unwrap(), p);
                }
                watcher::Event::Delete(p) => {
                    known.remove(p.metadata.name.as_deref().unwrap());
                }
                watcher::Event::InitDone => settled = true,
                watcher::Event::Init => known.clear(),
            }
        }
        if !settled {
            continue;
        }
        for (name, pod) in &known {
            let phase = pod.status.as_ref().and_then(|s| s.phase.clone());
            if phase.as_deref() == Some("Pending") || phase.is_none() {
                next_ip += 1;
                let status = serde_json::json!({"status": {"phase": "Running", "podIP": format!("10.42.0.{next_ip}"),
                    "conditions": [{"type": "Ready", "status": "True"}]}});
                if let Err(e) = pods
                    .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
                    .await
                {
                    eprintln!("fake kubelet: {name}: {e}");
                }
            }
        }
        let active: Vec<&Pod> = known
            .values()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect();
        let ready = active
            .iter()
            .filter(|p| {
                p.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            })
            .count();
        if ready >= min_ready {
            // Only counted once the deployment first reached its size.
            fewest_ready = fewest_ready.min(ready);
        }
        most_active = most_active.max(active.len());
        assert!(
            active.len() <= max_active,
            "{} pods: more than maxSurge allows",
            active.len()
        );
    }
    (fewest_ready, most_active)
}

fn rollout_status(server: &Server) -> String {
    let out = server.kubectl(33, &["rollout", "status", "deployment/web", "--timeout=30s"]);
    if !out.status.success() {
        let state = ok(server.kubectl(33, &["get", "deploy,rs,pods", "-o", "yaml"]));
        panic!("rollout status failed: {}\n{state}", bonsai_e2e::text(&out));
    }
    bonsai_e2e::text(&out)
}

#[test]
fn a_rolling_update_keeps_availability_and_undo_restores_the_old_template() {
    let server = Server::start(&[]);
    let stop = Arc::new(AtomicBool::new(false));
    std::thread::scope(|scope| {
        let kubelet = {
            let stop = stop.clone();
            let (netns, kubeconfig) = (&server.netns, &server.kubeconfig);
            // 4 replicas, maxSurge 1, maxUnavailable 1: never more than 5 pods, never fewer than 3 ready.
            scope.spawn(move || {
                let mut worst = (0, 0);
                bonsai_e2e::with_client_in(netns, kubeconfig, |client| async {
                    worst = fake_kubelet(client, stop, 4, 5).await;
                });
                worst
            })
        };
        let manifest = r#"{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
          "spec": {"replicas": 4, "selector": {"matchLabels": {"app": "web"}},
                   "strategy": {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 1}},
                   "template": {"metadata": {"labels": {"app": "web"}},
                                "spec": {"containers": [{"name": "web", "image": "nginx:1"}]}}}}"#;
        let file = server.dir.path().join("web.json");
        std::fs::write(&file, manifest).unwrap();
        ok(server.kubectl(27, &["apply", "-f", file.to_str().unwrap()]));
        assert!(rollout_status(&server).contains("successfully rolled out"));

        ok(server.kubectl(33, &["set", "image", "deployment/web", "web=nginx:2"]));
        assert!(rollout_status(&server).contains("successfully rolled out"));
        let history = ok(server.kubectl(33, &["rollout", "history", "deployment/web"]));
        assert!(history.contains('1') && history.contains('2'), "{history}");

        ok(server.kubectl(33, &["rollout", "undo", "deployment/web"]));
        assert!(rollout_status(&server).contains("successfully rolled out"));
        let image = ok(server.kubectl(
            33,
            &[
                "get",
                "deployment",
                "web",
                "-o",
                "jsonpath={.spec.template.spec.containers[0].image}",
            ],
        ));
        assert_eq!(image, "nginx:1");
        // The old ReplicaSet came back (revision 3), no third one was made.
        let sets = ok(server.kubectl(
            33,
            &[
                "get",
                "rs",
                "-o",
                "jsonpath={.items[*].spec.template.spec.containers[0].image}",
            ],
        ));
        assert_eq!(sets.split_whitespace().count(), 2, "{sets}");
        let describe = ok(server.kubectl(33, &["describe", "deployment", "web"]));
        assert!(
            describe.contains("ScalingReplicaSet") && describe.contains("Scaled up replica set"),
            "{describe}"
        );

        // Self-healing: a deleted pod is replaced.
        let pods = ok(server.kubectl(
            33,
            &[
                "get",
                "pods",
                "-l",
                "app=web",
                "-o",
                "jsonpath={.items[0].metadata.name}",
            ],
        ));
        ok(server.kubectl(33, &["delete", "pod", &pods]));
        bonsai_e2e::wait_until("the deleted pod to be replaced", || {
            ok(server.kubectl(
                33,
                &[
                    "get",
                    "deployment",
                    "web",
                    "-o",
                    "jsonpath={.status.availableReplicas}",
                ],
            )) == "4"
                && !ok(server.kubectl(33, &["get", "pods", "-o", "name"])).contains(&pods)
        });

        // Scaling goes through the ReplicaSet; deleting the Deployment takes its ReplicaSets and pods along.
        ok(server.kubectl(33, &["scale", "deployment/web", "--replicas=2"]));
        bonsai_e2e::wait_until("two pods", || {
            ok(server.kubectl(33, &["get", "pods", "-l", "app=web", "-o", "name"]))
                .lines()
                .count()
                == 2
        });
        ok(server.kubectl(33, &["delete", "deployment", "web"]));
        bonsai_e2e::wait_until("the garbage collector to take the rest", || {
            ok(server.kubectl(33, &["get", "rs,pods", "-o", "name"])).is_empty()
        });

        stop.store(true, Ordering::Relaxed);
        let (fewest_ready, most_active) = kubelet.join().unwrap();
        assert!(
            fewest_ready >= 3,
            "availability fell to {fewest_ready} ready pods"
        );
        assert!(most_active <= 5, "{most_active} pods at once");
    });
}
