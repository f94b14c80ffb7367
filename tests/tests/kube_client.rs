//! kube-rs, the Rust client library, against the real bonsai binary: list then watch resumed from a
//! resourceVersion, the 410 Gone path and the relist that recovers from it, and kube-runtime's watcher in both its
//! list+watch and streaming-list (`sendInitialEvents`) modes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use bonsai_e2e::Server;
use futures_util::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, VersionMatch, WatchEvent, WatchParams,
};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};

fn with_client<F, Fut>(server: &Server, test: F)
where
    F: FnOnce(Client) -> Fut + Send,
    Fut: Future<Output = ()>,
{
    server.with_client(test)
}

/// The ConfigMaps API of `default`, once the root CA publisher has put `kube-root-ca.crt` there (as in every
/// namespace), so that its creation is not among the events a test watches for.
async fn default_configmaps(client: kube::Client) -> Api<ConfigMap> {
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    for _ in 0..300 {
        if api.get_opt("kube-root-ca.crt").await.unwrap().is_some() {
            return api;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("kube-root-ca.crt did not appear in default");
}

/// The test's own ConfigMaps of a list (without the published `kube-root-ca.crt`).
fn own(list: &kube::core::ObjectList<ConfigMap>) -> Vec<&ConfigMap> {
    list.items
        .iter()
        .filter(|c| c.name_any() != "kube-root-ca.crt")
        .collect()
}

fn configmap(name: &str, value: &str) -> ConfigMap {
    ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([("k".to_string(), value.to_string())])),
        ..Default::default()
    }
}

async fn set(api: &Api<ConfigMap>, name: &str, value: &str) -> ConfigMap {
    let patch = serde_json::json!({"data": {"k": value}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap()
}

async fn next_event(
    stream: &mut (impl futures_util::Stream<Item = kube::Result<WatchEvent<ConfigMap>>> + Unpin),
) -> WatchEvent<ConfigMap> {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("no watch event within 10 s")
        .expect("the watch ended")
        .unwrap()
}

fn describe(event: &WatchEvent<ConfigMap>) -> (String, String, String) {
    let (kind, object) = match event {
        WatchEvent::Added(o) => ("ADDED", o),
        WatchEvent::Modified(o) => ("MODIFIED", o),
        WatchEvent::Deleted(o) => ("DELETED", o),
        other => panic!("unexpected {other:?}"),
    };
    (
        kind.to_string(),
        object.name_any(),
        object.resource_version().unwrap(),
    )
}

#[test]
fn list_then_watch_resumes_from_any_resource_version() {
    let server = Server::start(&[]);
    with_client(&server, |client| async move {
        let api = default_configmaps(client).await;
        api.create(&PostParams::default(), &configmap("a", "1"))
            .await
            .unwrap();
        let list = api.list(&ListParams::default()).await.unwrap();
        assert_eq!(own(&list).iter().map(|c| c.name_any()).collect::<Vec<_>>(), ["a"]);
        let listed_at = list.metadata.resource_version.unwrap();

        // Changes after the list, then a watch from the list's resourceVersion sees exactly them, in order.
        let b = api
            .create(&PostParams::default(), &configmap("b", "1"))
            .await
            .unwrap();
        let a2 = set(&api, "a", "2").await;
        api.delete("b", &DeleteParams::default()).await.unwrap();
        let params = WatchParams::default().timeout(30);
        let mut watch = api.watch(&params, &listed_at).await.unwrap().boxed();
        let first = describe(&next_event(&mut watch).await);
        assert_eq!(first, ("ADDED".into(), "b".into(), b.resource_version().unwrap()));
        let second = describe(&next_event(&mut watch).await);
        assert_eq!(
            second,
            ("MODIFIED".into(), "a".into(), a2.resource_version().unwrap())
        );
        let third = describe(&next_event(&mut watch).await);
        assert_eq!((third.0.as_str(), third.1.as_str()), ("DELETED", "b"));
        assert!(third.2.parse::<i64>().unwrap() > second.2.parse::<i64>().unwrap());

        // Resuming from the first event's resourceVersion replays what came after it, then goes live.
        let mut resumed = api.watch(&params, &first.2).await.unwrap().boxed();
        assert_eq!(describe(&next_event(&mut resumed).await), second);
        assert_eq!(describe(&next_event(&mut resumed).await), third);
        let a3 = set(&api, "a", "3").await;
        let live = describe(&next_event(&mut resumed).await);
        assert_eq!(
            live,
            ("MODIFIED".into(), "a".into(), a3.resource_version().unwrap())
        );
        // The first watch sees the same live event.
        assert_eq!(describe(&next_event(&mut watch).await), live);

        // A label selector turns a change that leaves the selection into DELETED for that watcher.
        let labelled = WatchParams::default().labels("team=x").timeout(30);
        let now = api
            .list(&ListParams::default())
            .await
            .unwrap()
            .metadata
            .resource_version
            .unwrap();
        let mut selected = api.watch(&labelled, &now).await.unwrap().boxed();
        let label = |v: Option<&str>| serde_json::json!({"metadata": {"labels": {"team": v}}});
        api.patch("a", &PatchParams::default(), &Patch::Merge(&label(Some("x"))))
            .await
            .unwrap();
        api.patch("a", &PatchParams::default(), &Patch::Merge(&label(None)))
            .await
            .unwrap();
        assert_eq!(describe(&next_event(&mut selected).await).0, "ADDED");
        assert_eq!(describe(&next_event(&mut selected).await).0, "DELETED");
    });
}

#[test]
fn a_compacted_resource_version_is_410_and_a_relist_recovers() {
    let server = Server::start(&[
        "--store-compaction-interval",
        "200ms",
        "--store-compaction-retain",
        "1",
    ]);
    with_client(&server, |client| async move {
        let api = default_configmaps(client).await;
        let old = api
            .create(&PostParams::default(), &configmap("old", "0"))
            .await
            .unwrap();
        let old_rv = old.resource_version().unwrap();
        for i in 1..=5 {
            set(&api, "old", &i.to_string()).await;
        }
        // Wait for compaction to pass old_rv + 1, then the exact list there is 410 Expired.
        let after = (old_rv.parse::<i64>().unwrap() + 1).to_string();
        let exact = ListParams::default().at(&after).matching(VersionMatch::Exact);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            match api.list(&exact).await {
                Err(kube::Error::Api(status)) => {
                    assert_eq!(
                        (status.code, status.reason.as_str()),
                        (410, "Expired"),
                        "{status:?}"
                    );
                    break;
                }
                Ok(_) => assert!(
                    tokio::time::Instant::now() < deadline,
                    "history was never compacted"
                ),
                Err(e) => panic!("{e}"),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // A watch from the compacted resourceVersion: one ERROR event carrying 410, as client-go expects.
        let mut watch = api
            .watch(&WatchParams::default().timeout(10), &old_rv)
            .await
            .unwrap()
            .boxed();
        match next_event(&mut watch).await {
            WatchEvent::Error(status) => {
                assert_eq!(
                    (status.code, status.reason.as_str()),
                    (410, "Expired"),
                    "{status:?}"
                )
            }
            other => panic!("expected a 410 ERROR event, got {other:?}"),
        }
        // The recovery every informer performs: relist, then watch from the new list's resourceVersion.
        let list = api.list(&ListParams::default()).await.unwrap();
        assert_eq!(own(&list)[0].data.as_ref().unwrap()["k"], "5");
        let mut watch = api
            .watch(
                &WatchParams::default().timeout(10),
                &list.metadata.resource_version.unwrap(),
            )
            .await
            .unwrap()
            .boxed();
        let fresh = api
            .create(&PostParams::default(), &configmap("fresh", "1"))
            .await
            .unwrap();
        let event = describe(&next_event(&mut watch).await);
        assert_eq!(
            event,
            ("ADDED".into(), "fresh".into(), fresh.resource_version().unwrap())
        );
    });
}

#[test]
fn kube_runtime_watcher_with_list_watch_and_streaming_lists() {
    let server = Server::start(&[]);
    with_client(&server, |client| async move {
        let api = default_configmaps(client).await;
        for name in ["x", "y"] {
            api.create(&PostParams::default(), &configmap(name, "1"))
                .await
                .unwrap();
        }
        for config in [
            watcher::Config::default(),
            watcher::Config::default().streaming_lists(),
        ] {
            let streaming = config.initial_list_strategy == watcher::InitialListStrategy::StreamingList;
            let mut events = watcher(api.clone(), config).boxed();
            let mut next = async || {
                tokio::time::timeout(Duration::from_secs(10), events.try_next())
                    .await
                    .expect("no watcher event within 10 s")
                    .unwrap()
                    .unwrap()
            };
            assert!(
                matches!(next().await, watcher::Event::Init),
                "streaming={streaming}"
            );
            let mut initial = Vec::new();
            loop {
                match next().await {
                    watcher::Event::InitApply(cm) => initial.push(cm.name_any()),
                    watcher::Event::InitDone => break,
                    other => panic!("streaming={streaming}: {other:?}"),
                }
            }
            initial.sort();
            assert!(
                initial.contains(&"x".to_string()) && initial.contains(&"y".to_string()),
                "{initial:?}"
            );
            let name = if streaming { "z2" } else { "z1" };
            api.create(&PostParams::default(), &configmap(name, "1"))
                .await
                .unwrap();
            match next().await {
                watcher::Event::Apply(cm) => assert_eq!(cm.name_any(), name),
                other => panic!("streaming={streaming}: {other:?}"),
            }
            api.delete(name, &DeleteParams::default()).await.unwrap();
            match next().await {
                watcher::Event::Delete(cm) => assert_eq!(cm.name_any(), name),
                other => panic!("streaming={streaming}: {other:?}"),
            }
        }
    });
}
