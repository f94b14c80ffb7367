//! The deploy controller against the real binary: the packaged manifests written and applied at start, a file
//! dropped into `<data-dir>/server/manifests/` applied and re-applied when it changes, broken files reported as
//! events without holding up the others, and a packaged component disabled at a restart removed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use std::time::Duration;

use bonsai_e2e::{Server, ok, text, wait_for};

fn value(server: &Server, args: &[&str]) -> Option<String> {
    let out = server.kubectl(33, args);
    out.status.success().then(|| text(&out))
}

#[test]
fn manifests_are_applied_at_start_and_on_change_and_broken_ones_reported() {
    let server = Server::start(&[]);
    let manifests = server.data_dir().join("server/manifests");

    // The packaged ones: written, filled in, applied.
    wait_for(30, "the packaged objects", || {
        value(
            &server,
            &[
                "get",
                "svc",
                "-n",
                "kube-system",
                "kube-dns",
                "-o",
                "jsonpath={.spec.clusterIP}",
            ],
        )
        .as_deref()
            == Some("10.43.0.10")
            && value(
                &server,
                &[
                    "get",
                    "storageclass",
                    "local-path",
                    "-o",
                    "jsonpath={.provisioner}",
                ],
            )
            .as_deref()
                == Some("rancher.io/local-path")
    });
    let coredns = std::fs::read_to_string(manifests.join("coredns.yaml")).unwrap();
    assert!(
        coredns.contains("clusterIP: 10.43.0.10") && !coredns.contains("%{"),
        "{coredns}"
    );
    // `kubectl get storageclass` marks it the default.
    assert!(ok(server.kubectl(33, &["get", "storageclass"])).contains("local-path (default)"));

    // A user's file, in a subdirectory: a namespace, an object in it, and one without a namespace (kube-system).
    std::fs::create_dir_all(manifests.join("apps")).unwrap();
    let user = |colour: &str| {
        format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n---\napiVersion: v1\nkind: ConfigMap\n\
             metadata:\n  name: settings\n  namespace: shop\ndata:\n  colour: {colour}\n---\napiVersion: v1\n\
             kind: ConfigMap\nmetadata:\n  name: cluster-wide\ndata:\n  a: b\n"
        )
    };
    std::fs::write(manifests.join("apps/shop.yaml"), user("green")).unwrap();
    wait_for(30, "the user's objects", || {
        value(
            &server,
            &[
                "get",
                "cm",
                "-n",
                "shop",
                "settings",
                "-o",
                "jsonpath={.data.colour}",
            ],
        )
        .as_deref()
            == Some("green")
            && value(&server, &["get", "cm", "-n", "kube-system", "cluster-wide"]).is_some()
    });
    // Changed on disk: applied again.
    std::fs::write(manifests.join("apps/shop.yaml"), user("blue")).unwrap();
    wait_for(30, "the change", || {
        value(
            &server,
            &[
                "get",
                "cm",
                "-n",
                "shop",
                "settings",
                "-o",
                "jsonpath={.data.colour}",
            ],
        )
        .as_deref()
            == Some("blue")
    });
    // Applied under bonsai's field manager, as a server-side apply.
    let managers = ok(server.kubectl(
        33,
        &[
            "get",
            "cm",
            "-n",
            "shop",
            "settings",
            "--show-managed-fields",
            "-o",
            "jsonpath={.metadata.managedFields[*].manager}",
        ],
    ));
    assert!(managers.contains("bonsai-deploy"), "{managers}");

    // Broken files are reported and do not hold up a good one dropped at the same time.
    std::fs::write(
        manifests.join("broken.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: [oops\n",
    )
    .unwrap();
    std::fs::write(
        manifests.join("unknown.yaml"),
        "apiVersion: example.test/v1\nkind: Widget\nmetadata:\n  name: w\n",
    )
    .unwrap();
    std::fs::write(
        manifests.join("good.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: good\n  namespace: default\n",
    )
    .unwrap();
    wait_for(30, "the good file's object", || {
        value(&server, &["get", "cm", "good"]).is_some()
    });
    wait_for(30, "the broken files' events", || {
        let events = value(&server, &[
            "get", "events", "-n", "kube-system", "--field-selector", "reason=ApplyManifestFailed",
            "-o", "jsonpath={range .items[*]}{.involvedObject.kind}/{.involvedObject.name}: {.message}{\"\\n\"}{end}",
        ])
        .unwrap_or_default();
        events.contains("Addon/broken: Failed to apply manifest")
            && events.contains("Addon/unknown: Failed to apply manifest")
    });
    let unknown = ok(server.kubectl(
        33,
        &[
            "get",
            "events",
            "-n",
            "kube-system",
            "--field-selector",
            "involvedObject.name=unknown",
        ],
    ));
    assert!(unknown.contains("does not serve"), "{unknown}");

    // A file removed leaves its objects, as in k3s.
    std::fs::remove_file(manifests.join("apps/shop.yaml")).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert!(value(&server, &["get", "cm", "-n", "shop", "settings"]).is_some());

    // Restarted with coredns disabled: its file and its objects go; the others stay.
    let (netns, dir, status) = server.stop();
    assert!(status.success());
    let server = Server::start_in(netns, dir, &["--disable", "coredns"]);
    wait_for(30, "the disabled component's objects to go", || {
        value(&server, &["get", "svc", "-n", "kube-system", "kube-dns"]).is_none()
    });
    assert!(!manifests.join("coredns.yaml").exists());
    assert!(value(&server, &["get", "storageclass", "local-path"]).is_some());
    assert!(value(&server, &["get", "cm", "good"]).is_some());
}
