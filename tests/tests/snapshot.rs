//! `bonsai snapshot save|restore` against the real binary: a snapshot taken while the server runs, restored into
//! a fresh data directory, gives back every object exactly (uids, resourceVersions, managed fields), nothing
//! written after it, and the same CA and keys, so that the old admin kubeconfig and service account tokens still
//! work; damaged files and occupied data directories are refused.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use std::collections::BTreeMap;

use bonsai_e2e::{Server, bonsai, fails, kubectl_bin, ok, text};
use serde_json::Value;

/// The server's controllers stay off, so that nothing but the test writes while it compares.
const FROZEN: &[&str] = &["--disable-controller-manager", "--disable-scheduler"];

/// Every object of every listable kind, by kind, namespace and name.
fn every_object(server: &Server) -> BTreeMap<String, Value> {
    let kinds = ok(server.kubectl(33, &["api-resources", "--verbs=list", "-o", "name"]));
    let mut all = BTreeMap::new();
    for kind in kinds.lines() {
        let list: Value =
            serde_json::from_str(&ok(server.kubectl(33, &["get", kind, "-A", "-o", "json"]))).unwrap();
        for item in list["items"].as_array().unwrap() {
            let id = format!(
                "{kind} {}/{}",
                item["metadata"]["namespace"].as_str().unwrap_or(""),
                item["metadata"]["name"].as_str().unwrap()
            );
            all.insert(id, item.clone());
        }
    }
    all
}

#[test]
fn a_snapshot_restores_every_object_and_the_clusters_keys() {
    let server = Server::start(FROZEN);
    ok(server.kubectl(33, &["create", "namespace", "shop"]));
    ok(server.kubectl(
        33,
        &[
            "-n",
            "shop",
            "create",
            "configmap",
            "settings",
            "--from-literal=color=blue",
        ],
    ));
    ok(server.kubectl(
        33,
        &[
            "-n",
            "shop",
            "create",
            "secret",
            "generic",
            "db",
            "--from-literal=password=hunter2",
        ],
    ));
    ok(server.kubectl(
        33,
        &[
            "-n",
            "shop",
            "create",
            "deployment",
            "web",
            "--image=registry.invalid/web:1",
        ],
    ));
    ok(server.kubectl(
        33,
        &[
            "-n",
            "shop",
            "create",
            "service",
            "clusterip",
            "web",
            "--tcp=80:8080",
        ],
    ));
    ok(server.kubectl(33, &["-n", "shop", "create", "serviceaccount", "robot"]));
    ok(server.kubectl(
        33,
        &["-n", "shop", "label", "configmap", "settings", "tier=front"],
    ));
    let token = ok(server.kubectl(33, &["-n", "shop", "create", "token", "robot", "--duration=1h"]));
    let before = every_object(&server);
    assert!(before.len() > 10, "{:?}", before.keys());

    let snapshots = tempfile::tempdir().unwrap();
    let saved = server
        .netns
        .command(bonsai_e2e::bonsai_bin())
        .args(["snapshot", "save", "--name", "before-upgrade", "--data-dir"])
        .arg(server.data_dir())
        .arg("--kubeconfig")
        .arg(&server.kubeconfig)
        .arg("--dir")
        .arg(snapshots.path())
        .output()
        .unwrap();
    let file = ok(saved).trim().to_string();
    assert!(file.contains("before-upgrade-"), "{file}");
    // Written after the snapshot: not restored.
    ok(server.kubectl(33, &["-n", "shop", "create", "configmap", "later"]));
    let old_kubeconfig = server.kubeconfig.clone();
    let (netns, old_dir, _) = server.stop();

    // A restore refuses a data directory that holds a store.
    let refused = fails(bonsai(&[
        "snapshot",
        "restore",
        &file,
        "--data-dir",
        old_dir.path().join("data").to_str().unwrap(),
    ]));
    assert!(refused.contains("holds a store already"), "{refused}");
    // A damaged snapshot is refused by name.
    let damaged = snapshots.path().join("damaged");
    let mut bytes = std::fs::read(&file).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&damaged, bytes).unwrap();
    let fresh = tempfile::tempdir().unwrap();
    let data = fresh.path().join("data");
    let refused = fails(bonsai(&[
        "snapshot",
        "restore",
        damaged.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ]));
    assert!(refused.contains("damaged"), "{refused}");

    let restored = ok(bonsai(&[
        "snapshot",
        "restore",
        &file,
        "--data-dir",
        data.to_str().unwrap(),
    ]));
    assert!(restored.contains("restored"), "{restored}");
    for key in [
        "tls/server-ca.crt",
        "tls/server-ca.key",
        "tls/service.key",
        "token",
    ] {
        assert_eq!(
            std::fs::read(old_dir.path().join("data/server").join(key)).unwrap(),
            std::fs::read(data.join("server").join(key)).unwrap(),
            "{key}"
        );
    }
    let server = Server::start_in(netns, fresh, FROZEN);
    let after = every_object(&server);
    let missing: Vec<&String> = before.keys().filter(|k| !after.contains_key(*k)).collect();
    // (The deploy controller records fresh events of its add-ons at every start.)
    let extra: Vec<&String> = after
        .keys()
        .filter(|k| !before.contains_key(*k) && !k.starts_with("events"))
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:?}, extra {extra:?}"
    );
    for (id, object) in &before {
        assert_eq!(object, &after[id], "{id} changed in the round trip");
    }
    let later = server.kubectl(33, &["-n", "shop", "get", "configmap", "later"]);
    assert!(!later.status.success(), "a write after the snapshot came back");

    // The old credentials: the admin kubeconfig of the old data directory and a service account token.
    let old = server
        .netns
        .command(kubectl_bin(33))
        .arg("--kubeconfig")
        .arg(&old_kubeconfig)
        .args([
            "-n",
            "shop",
            "get",
            "secret",
            "db",
            "-o",
            "jsonpath={.data.password}",
        ])
        .output()
        .unwrap();
    assert_eq!(ok(old), "aHVudGVyMg==");
    let whoami = server
        .netns
        .command(kubectl_bin(33))
        .args(["--kubeconfig", "/dev/null", "--server", "https://127.0.0.1:6443"])
        .arg("--certificate-authority")
        .arg(data.join("server/tls/server-ca.crt"))
        .args([
            "--token",
            token.trim(),
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ])
        .output()
        .unwrap();
    assert_eq!(text(&whoami), "system:serviceaccount:shop:robot");
    // And the restored cluster takes writes, with resourceVersions after the snapshot's.
    ok(server.kubectl(33, &["-n", "shop", "create", "configmap", "new"]));
}
