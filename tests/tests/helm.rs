//! The real helm v4 client against the real binary: a chart written for the tests (a Deployment serving a
//! ConfigMap's page, its Service, a Secret, a `helm test` pod that fetches the page through the Service's DNS
//! name) installed, tested, upgraded, rolled back and uninstalled, with the release history in Secrets as helm
//! keeps it. helm v4 applies server-side by default; the client-side (three-way merge) path is run too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use bonsai_e2e::helm::chart;
use bonsai_e2e::images::AgentNode;
use bonsai_e2e::{Server, ok, text};
use serde_json::Value;

fn helm_ok(server: &Server, args: &[&str]) -> String {
    let out = server.helm(args);
    assert!(
        out.status.success(),
        "helm {args:?}: {}\n{}\n{}",
        text(&out),
        text(&server.kubectl(33, &["get", "all,cm,secrets", "-o", "wide"])),
        text(&server.kubectl(33, &["get", "events"])),
    );
    text(&out)
}

fn json(server: &Server, args: &[&str]) -> Value {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    all.extend(["-o", "json"]);
    serde_json::from_str(&ok(server.kubectl(33, &all))).unwrap()
}

/// The release's revisions as helm's Secrets driver keeps them: `sh.helm.release.v1.<name>.v<N>`, labelled with
/// the revision's status.
fn release_secrets(server: &Server, release: &str) -> Vec<(String, String)> {
    let list = json(server, &["secrets", "-l", &format!("owner=helm,name={release}")]);
    let mut revisions: Vec<(String, String)> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            assert_eq!(s["type"], "helm.sh/release.v1");
            (
                s["metadata"]["name"].as_str().unwrap().to_string(),
                s["metadata"]["labels"]["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    revisions.sort();
    revisions
}

fn page(server: &Server, release: &str) -> String {
    json(server, &["configmap", &format!("{release}-page")])["data"]["index.html"]
        .as_str()
        .unwrap()
        .to_string()
}

/// install → test → upgrade (a value changed, a label dropped, replicas up) → rollback → uninstall, with
/// `--wait` each time, in helm v4's default server-side apply mode or in its client-side mode.
fn release_lifecycle(node: &AgentNode, release: &str, server_side: &str) {
    let server = &node.server;
    let chart = chart("demo");
    let chart = chart.to_str().unwrap();
    let image = format!("image={}", node.image());
    let side = format!("--server-side={server_side}");

    helm_ok(
        server,
        &[
            "install",
            release,
            chart,
            "--set",
            &image,
            "--set",
            "extraLabel=first",
            &side,
            "--wait",
            "--timeout",
            "120s",
        ],
    );
    assert_eq!(page(server, release), "one");
    let deployment = json(server, &["deployment", &format!("{release}-web")]);
    assert_eq!(deployment["metadata"]["labels"]["extra"], "first");
    assert_eq!(
        deployment["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "Helm"
    );
    assert_eq!(
        deployment["metadata"]["annotations"]["meta.helm.sh/release-name"],
        release
    );
    assert_eq!(deployment["status"]["readyReplicas"], 1);
    let secret = json(server, &["secret", &format!("{release}-credentials")]);
    assert_eq!(secret["data"]["password"], "b25lLXNlY3JldA=="); // "one-secret"
    assert_eq!(
        release_secrets(server, release),
        vec![(format!("sh.helm.release.v1.{release}.v1"), "deployed".into())]
    );

    // `helm test`: the hook pod reads the page through the Service's name (cluster DNS, the proxy) and succeeds.
    let tested = helm_ok(server, &["test", release, "--logs", "--timeout", "120s"]);
    assert!(tested.contains("Succeeded"), "{tested}");

    helm_ok(
        server,
        &[
            "upgrade",
            release,
            chart,
            "--set",
            &image,
            "--set",
            "message=two",
            "--set",
            "replicas=2",
            &side,
            "--wait",
            "--timeout",
            "120s",
        ],
    );
    assert_eq!(page(server, release), "two");
    let deployment = json(server, &["deployment", &format!("{release}-web")]);
    assert_eq!(deployment["spec"]["replicas"], 2);
    assert_eq!(deployment["status"]["readyReplicas"], 2);
    // The label only the first revision had is gone from the live object, as on Kubernetes.
    assert!(
        deployment["metadata"]["labels"].get("extra").is_none(),
        "{}",
        deployment["metadata"]
    );
    let tested = helm_ok(server, &["test", release, "--logs", "--timeout", "120s"]);
    assert!(tested.contains("Succeeded"), "{tested}");

    helm_ok(server, &["rollback", release, "1", "--wait", "--timeout", "120s"]);
    assert_eq!(page(server, release), "one");
    let deployment = json(server, &["deployment", &format!("{release}-web")]);
    assert_eq!(deployment["spec"]["replicas"], 1);
    assert_eq!(deployment["metadata"]["labels"]["extra"], "first");
    assert_eq!(
        release_secrets(server, release),
        vec![
            (format!("sh.helm.release.v1.{release}.v1"), "superseded".into()),
            (format!("sh.helm.release.v1.{release}.v2"), "superseded".into()),
            (format!("sh.helm.release.v1.{release}.v3"), "deployed".into()),
        ]
    );
    let history = helm_ok(server, &["history", release, "-o", "json"]);
    let history: Value = serde_json::from_str(&history).unwrap();
    let descriptions: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["description"].as_str().unwrap())
        .collect();
    assert_eq!(
        descriptions,
        ["Install complete", "Upgrade complete", "Rollback to 1"],
        "{history}"
    );
    let listed = helm_ok(server, &["list", "-o", "json"]);
    let listed: Value = serde_json::from_str(&listed).unwrap();
    let entry = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == release)
        .unwrap_or_else(|| panic!("{release} not listed: {listed}"));
    assert_eq!(entry["status"], "deployed");
    assert_eq!(entry["revision"], "3");

    helm_ok(server, &["uninstall", release, "--wait", "--timeout", "120s"]);
    for kind in ["deployment", "service", "configmap", "secret"] {
        let name = match kind {
            "configmap" => format!("{release}-page"),
            "secret" => format!("{release}-credentials"),
            _ => format!("{release}-web"),
        };
        let out = server.kubectl(33, &["get", kind, &name]);
        assert!(!out.status.success(), "{kind}/{name} outlived the release");
    }
    assert_eq!(release_secrets(server, release), vec![]);
    for filter in ["--all-namespaces", "--uninstalled"] {
        let listed = helm_ok(server, &["list", filter, "-q"]);
        assert!(!listed.lines().any(|l| l == release), "{filter}: {listed}");
    }
}

#[test]
fn a_chart_installs_tests_upgrades_rolls_back_and_uninstalls_with_server_side_apply() {
    let node = AgentNode::with_busybox();
    release_lifecycle(&node, "ssa", "true");
}

#[test]
fn a_chart_installs_tests_upgrades_rolls_back_and_uninstalls_with_client_side_apply() {
    let node = AgentNode::with_busybox();
    release_lifecycle(&node, "csa", "false");
}

/// `helm template | kubectl apply -f -`, with the oldest and the newest kubectl: the rendered chart applies,
/// re-applies unchanged, and a changed value reaches the objects.
#[test]
fn a_rendered_chart_applies_with_kubectl() {
    let server = Server::start(&[]);
    let chart = chart("demo");
    for (minor, release) in [(27, "old"), (33, "new")] {
        let render = |message: &str| {
            let out = server
                .helm_command()
                .args([
                    "template",
                    release,
                    chart.to_str().unwrap(),
                    "--skip-tests",
                    "--set",
                ])
                .arg(format!("message={message}"))
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", text(&out));
            out.stdout
        };
        let apply = |manifest: Vec<u8>| {
            let mut child = server
                .kubectl_command(minor)
                .args(["apply", "-f", "-"])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            use std::io::Write;
            child.stdin.take().unwrap().write_all(&manifest).unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success() && out.stderr.is_empty(),
                "kubectl 1.{minor} apply: {}",
                text(&out)
            );
            String::from_utf8(out.stdout).unwrap()
        };
        let created = apply(render("one"));
        for object in [
            format!("configmap/{release}-page created"),
            format!("secret/{release}-credentials created"),
            format!("service/{release}-web created"),
            format!("deployment.apps/{release}-web created"),
        ] {
            assert!(created.contains(&object), "1.{minor}: {created}");
        }
        // `--skip-tests` leaves the `helm test` pod out.
        assert!(!created.contains("pod/"), "{created}");
        // As on Kubernetes, a Secret written with `stringData` is "configured" at every apply (the live object
        // holds only `data`; kubernetes/kubernetes#87736); everything else is unchanged.
        let again = apply(render("one"));
        for line in again.lines() {
            let expected = if line.starts_with("secret/") {
                " configured"
            } else {
                " unchanged"
            };
            assert!(line.ends_with(expected), "1.{minor}: {again}");
        }
        let changed = apply(render("two"));
        assert!(
            changed.contains(&format!("configmap/{release}-page configured")),
            "1.{minor}: {changed}"
        );
        assert_eq!(page(&server, release), "two");
        let deployment = json(&server, &["deployment", &format!("{release}-web")]);
        assert_eq!(
            deployment["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"],
            8080
        );
    }
}

/// A chart with a CRD in `crds/` and an object of it beside a Deployment, Service, ConfigMap and Secret: helm
/// installs the CRD first (and waits for it to be Established), then the rest; upgrade, rollback and uninstall
/// reach the custom object as any other; the CRD stays after uninstall, as helm leaves CRDs. Both of helm v4's
/// apply modes; no node is needed (nothing waits for pods).
#[test]
fn a_chart_with_a_crd_installs_upgrades_rolls_back_and_uninstalls() {
    let server = Server::start(&[]);
    let chart = chart("with-crd");
    let chart = chart.to_str().unwrap();
    for (release, server_side) in [("gz-ssa", "true"), ("gz-csa", "false")] {
        let side = format!("--server-side={server_side}");
        let gizmo = format!("{release}-gizmo");
        helm_ok(&server, &["install", release, chart, &side]);
        let crd = json(&server, &["crd", "gizmos.charts.example.com"]);
        assert!(
            crd["status"]["conditions"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["type"] == "Established" && c["status"] == "True"),
            "{crd}"
        );
        let object = json(&server, &["gizmo", &gizmo]);
        assert_eq!(object["spec"]["size"], "small");
        assert_eq!(object["spec"]["colour"], "red");
        assert_eq!(
            object["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            "Helm"
        );
        for (kind, name) in [
            ("deployment", format!("{release}-api")),
            ("service", format!("{release}-api")),
            ("configmap", format!("{release}-settings")),
            ("secret", format!("{release}-token")),
        ] {
            json(&server, &[kind, &name]);
        }
        let table = ok(server.kubectl(33, &["get", "gz"]));
        assert!(
            table
                .lines()
                .any(|l| l.starts_with(&gizmo) && l.contains("small")),
            "{table}"
        );

        // The upgrade changes the custom object and drops a field helm set before (the schema's default comes
        // back in its place); the rollback restores the first revision.
        helm_ok(
            &server,
            &[
                "upgrade",
                release,
                chart,
                "--set",
                "size=large",
                "--set",
                "colour=",
                &side,
            ],
        );
        let object = json(&server, &["gizmo", &gizmo]);
        assert_eq!(object["spec"]["size"], "large");
        assert_eq!(object["spec"]["colour"], "green", "{object}");
        assert_eq!(
            json(&server, &["configmap", &format!("{release}-settings")])["data"]["size"],
            "large"
        );
        helm_ok(&server, &["rollback", release, "1"]);
        let object = json(&server, &["gizmo", &gizmo]);
        assert_eq!(
            (object["spec"]["size"].as_str(), object["spec"]["colour"].as_str()),
            (Some("small"), Some("red"))
        );
        assert_eq!(release_secrets(&server, release).len(), 3);

        helm_ok(&server, &["uninstall", release, "--wait", "--timeout", "60s"]);
        assert!(!server.kubectl(33, &["get", "gizmo", &gizmo]).status.success());
        assert!(
            !server
                .kubectl(33, &["get", "deployment", &format!("{release}-api")])
                .status
                .success()
        );
        json(&server, &["crd", "gizmos.charts.example.com"]);
    }
}
