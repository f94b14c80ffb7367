//! The controller manager's identities against the real binary: it runs as `system:kube-controller-manager`
//! (`server/cred/controller.kubeconfig`), and each controller as its ServiceAccount `kube-system/<controller>`
//! (kube-controller-manager's `--use-service-account-credentials`), bound to `system:controller:<controller>`;
//! the audit log names them, and a controller's token cannot read Secrets.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use bonsai_e2e::{Server, ok};
use serde_json::Value;

#[test]
fn controllers_act_as_their_service_accounts_and_only_within_their_roles() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.log");
    let server = Server::start(&["--audit-log-path", audit.to_str().unwrap()]);

    ok(server.kubectl(
        33,
        &[
            "create",
            "deployment",
            "web",
            "--image=registry.invalid/web:1",
            "--replicas=2",
        ],
    ));
    // The deployment controller makes the ReplicaSet, the replicaset controller its pods and its status: both
    // writes need their own roles (no agent runs, so the pods stay Pending).
    bonsai_e2e::wait_until("the replica set's status counting its pods", || {
        let out = server.kubectl(
            33,
            &[
                "get",
                "replicasets",
                "-l",
                "app=web",
                "-o",
                "jsonpath={.items[0].status.replicas}",
            ],
        );
        String::from_utf8_lossy(&out.stdout).trim() == "2"
    });

    let kubeconfig =
        std::fs::read_to_string(server.data_dir().join("server/cred/controller.kubeconfig")).unwrap();
    assert!(kubeconfig.contains("client-certificate-data"), "{kubeconfig}");

    let log = std::fs::read_to_string(&audit).unwrap();
    let events: Vec<Value> = log.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let by = |user: &str, verb: &str, resource: &str, subresource: Option<&str>| {
        events.iter().any(|e| {
            e["user"]["username"] == user
                && e["verb"] == verb
                && e["objectRef"]["resource"] == resource
                && e["objectRef"]["subresource"].as_str() == subresource
                && e["responseStatus"]["code"].as_u64().is_some_and(|c| c < 300)
        })
    };
    let replicaset_controller = "system:serviceaccount:kube-system:replicaset-controller";
    let deployment_controller = "system:serviceaccount:kube-system:deployment-controller";
    assert!(by(replicaset_controller, "create", "pods", None), "{log}");
    assert!(
        by(replicaset_controller, "update", "replicasets", Some("status")),
        "{log}"
    );
    assert!(by(deployment_controller, "create", "replicasets", None), "{log}");
    // The caches (list and watch) are the controller manager's, as kube-controller-manager's shared informers.
    assert!(
        by("system:kube-controller-manager", "watch", "pods", None),
        "{log}"
    );
    // It looks up each controller's ServiceAccount (a 404 when it comes first: then it creates it).
    assert!(
        events
            .iter()
            .any(|e| e["user"]["username"] == "system:kube-controller-manager"
                && e["verb"] == "get"
                && e["objectRef"]["resource"] == "serviceaccounts"
                && e["objectRef"]["name"] == "replicaset-controller"),
        "{log}"
    );
    // No controller writes as the cluster admin.
    assert!(
        !events.iter().any(|e| e["user"]["username"] == "system:admin"
            && e["objectRef"]["resource"] == "pods"
            && e["verb"] == "create"),
        "{log}"
    );

    // A token of the replicaset controller's ServiceAccount: its role reaches pods, not Secrets.
    let token = ok(server.kubectl(
        33,
        &["create", "token", "replicaset-controller", "-n", "kube-system"],
    ));
    let bearer = format!("Authorization: Bearer {}", token.trim());
    let (code, body) = server.curl("/api/v1/namespaces/default/pods", &["-H", &bearer]);
    assert_eq!(code, 200, "{body}");
    let (code, body) = server.curl("/api/v1/namespaces/kube-system/secrets", &["-H", &bearer]);
    assert_eq!(code, 403, "{body}");
    let message: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        message["message"],
        "secrets is forbidden: User \"system:serviceaccount:kube-system:replicaset-controller\" cannot list \
         resource \"secrets\" in API group \"\" in the namespace \"kube-system\"",
    );
    let (code, body) = server.curl("/api/v1/namespaces/default/secrets/anything", &["-H", &bearer]);
    assert_eq!(code, 403, "{body}");
}
