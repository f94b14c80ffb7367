//! Authorization against the real binary and the real kubectl: RBAC Roles and bindings grant exactly what they
//! say (403s in kube-apiserver's words otherwise), `kubectl auth can-i` (with `--list` and `--as`) answers from
//! the same rules, escalation through Roles and bindings is refused, the bootstrap policy is there from the first
//! start and put back at the next, aggregated ClusterRoles are filled, the scheduler runs as
//! `system:kube-scheduler`, and a node identity reaches only the secrets of its own pods.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use std::process::Output;

use bonsai_e2e::as_node::kubectl_file;
use bonsai_e2e::{Server, fails, ok, text, wait_until};

const JANE: &str = "jane-token";

/// A server whose token file knows `jane` (groups `dev`) and `bob`.
fn server_with_users() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.csv");
    std::fs::write(
        &tokens,
        format!("{JANE},jane,1001,\"developers\"\nbob-token,bob,1002\n"),
    )
    .unwrap();
    let tokens = tokens.display().to_string();
    Server::start_in(bonsai_e2e::NetNs::new(), dir, &["--token-auth-file", &tokens])
}

/// kubectl 1.33 with only `credentials` (`--token=...`, or a client certificate and key).
fn kubectl_with(server: &Server, credentials: &[String], args: &[&str]) -> Output {
    let ca = server.data_dir().join("server/tls/server-ca.crt");
    server
        .netns
        .command(bonsai_e2e::kubectl_bin(33))
        .args([
            "--kubeconfig=/dev/null".to_string(),
            "--server=https://127.0.0.1:6443".to_string(),
            format!("--certificate-authority={}", ca.display()),
            format!("--cache-dir={}", server.dir.path().join("cache-user").display()),
        ])
        .args(credentials)
        .args(args)
        .output()
        .unwrap()
}

fn jane(server: &Server, args: &[&str]) -> Output {
    kubectl_with(server, &[format!("--token={JANE}")], args)
}

/// The rows of `kubectl auth can-i --list`, each with its columns separated by one space.
fn rows(listing: &str) -> Vec<String> {
    listing
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

#[test]
fn a_namespaced_role_grants_exactly_what_it_says() {
    let server = server_with_users();
    ok(server.kubectl(33, &["create", "namespace", "dev"]));
    ok(server.kubectl(
        33,
        &[
            "create",
            "role",
            "pod-reader",
            "-n",
            "dev",
            "--verb=get,list,watch",
            "--resource=pods",
        ],
    ));
    ok(server.kubectl(
        33,
        &[
            "create",
            "role",
            "config-writer",
            "-n",
            "dev",
            "--verb=create",
            "--resource=configmaps",
        ],
    ));
    for role in ["pod-reader", "config-writer"] {
        ok(server.kubectl(
            33,
            &[
                "create",
                "rolebinding",
                role,
                "-n",
                "dev",
                &format!("--role={role}"),
                "--user=jane",
            ],
        ));
    }

    // Allowed: what the roles grant (the binding reaches the authorizer's copy through its watch).
    wait_until("jane's binding", || {
        jane(&server, &["get", "pods", "-n", "dev"]).status.success()
    });
    ok(jane(
        &server,
        &[
            "create",
            "configmap",
            "settings",
            "-n",
            "dev",
            "--from-literal=a=b",
        ],
    ));
    ok(jane(&server, &["auth", "whoami"]));

    // Denied, in kube-apiserver's words.
    let denied = fails(jane(&server, &["get", "pods", "-n", "default"]));
    assert!(
        denied.contains(r#"Error from server (Forbidden): pods is forbidden: User "jane" cannot list resource "pods" in API group "" in the namespace "default""#),
        "{denied}"
    );
    let denied = fails(jane(&server, &["get", "nodes"]));
    assert!(
        denied.contains(r#"nodes is forbidden: User "jane" cannot list resource "nodes" in API group "" at the cluster scope"#),
        "{denied}"
    );
    let denied = fails(jane(&server, &["get", "secret", "token", "-n", "dev"]));
    assert!(
        denied.contains(r#"secrets "token" is forbidden: User "jane" cannot get resource "secrets" in API group "" in the namespace "dev""#),
        "{denied}"
    );
    let denied = fails(jane(&server, &["delete", "pod", "web", "-n", "dev"]));
    assert!(denied.contains(r#"cannot delete resource "pods""#), "{denied}");
    let denied = fails(jane(&server, &["get", "configmap", "settings", "-n", "dev"]));
    assert!(denied.contains("Forbidden"), "{denied}");
    let denied = fails(jane(&server, &["get", "--raw", "/metrics"]));
    assert!(
        denied.contains(r#"forbidden: User \"jane\" cannot get path \"/metrics\""#)
            || denied.contains(r#"forbidden: User "jane" cannot get path "/metrics""#),
        "{denied}"
    );
    // Discovery is everyone's (system:discovery).
    ok(jane(&server, &["get", "--raw", "/apis"]));

    // `kubectl auth can-i` answers from the same rules.
    assert_eq!(
        ok(jane(&server, &["auth", "can-i", "list", "pods", "-n", "dev"])).trim(),
        "yes"
    );
    let no = jane(&server, &["auth", "can-i", "delete", "pods", "-n", "dev"]);
    assert_eq!(text(&no).trim(), "no");
    assert!(!no.status.success());
    let listing = ok(jane(&server, &["auth", "can-i", "--list", "-n", "dev"]));
    let listing = rows(&listing);
    for row in [
        "Resources Non-Resource URLs Resource Names Verbs",
        "pods [] [] [get list watch]",
        "configmaps [] [] [create]",
        "selfsubjectreviews.authentication.k8s.io [] [] [create]",
        "selfsubjectaccessreviews.authorization.k8s.io [] [] [create]",
        "selfsubjectrulesreviews.authorization.k8s.io [] [] [create]",
        "[/api/*] [] [get]",
        "[/healthz] [] [get]",
        "[/version] [] [get]",
    ] {
        assert!(listing.contains(&row.to_string()), "no {row:?} in {listing:#?}");
    }
    assert!(!listing.iter().any(|r| r.starts_with("secrets ")), "{listing:#?}");
    // In another namespace only the cluster-wide rules are left.
    let elsewhere = rows(&ok(jane(&server, &["auth", "can-i", "--list", "-n", "default"])));
    assert!(
        !elsewhere.iter().any(|r| r.starts_with("pods ")),
        "{elsewhere:#?}"
    );

    // The admin asks for jane (`--as`: impersonation) and gets jane's answers.
    assert_eq!(
        ok(server.kubectl(33, &["auth", "can-i", "list", "pods", "-n", "dev", "--as=jane"])).trim(),
        "yes"
    );
    let as_jane = server.kubectl(33, &["auth", "can-i", "get", "secrets", "-n", "dev", "--as=jane"]);
    assert_eq!(text(&as_jane).trim(), "no");
    let denied = fails(server.kubectl(33, &["get", "pods", "-n", "default", "--as=jane"]));
    assert!(
        denied.contains(r#"User "jane" cannot list resource "pods""#),
        "{denied}"
    );
    // jane may not impersonate.
    let denied = fails(jane(&server, &["get", "pods", "-n", "dev", "--as=bob"]));
    assert!(
        denied.contains(r#"users "bob" is forbidden: User "jane" cannot impersonate resource "users" in API group "" at the cluster scope"#),
        "{denied}"
    );
}

#[test]
fn escalation_through_roles_and_bindings_is_refused() {
    let server = server_with_users();
    ok(server.kubectl(33, &["create", "namespace", "dev"]));
    let role_admin = r#"{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "role-admin", "namespace": "dev"},
        "rules": [{"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles", "rolebindings"], "verbs": ["create", "get", "list"]},
                  {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]}"#;
    kubectl_file(&server, "apply", "role-admin.json", role_admin);
    ok(server.kubectl(
        33,
        &[
            "create",
            "rolebinding",
            "role-admin",
            "-n",
            "dev",
            "--role=role-admin",
            "--group=developers",
        ],
    ));
    wait_until("jane's binding", || {
        jane(&server, &["get", "roles", "-n", "dev"]).status.success()
    });

    // admin is filled by the aggregation controller shortly after the start.
    bonsai_e2e::wait_for(30, "admin aggregated", || {
        rules(&server, "admin").contains("rolebindings")
    });
    // A role with rules jane holds is hers to make, and to bind (once the authorizer's copy has the role).
    ok(jane(
        &server,
        &[
            "create",
            "role",
            "pod-viewer",
            "-n",
            "dev",
            "--verb=get",
            "--resource=pods",
        ],
    ));
    wait_until("jane binds pod-viewer", || {
        jane(
            &server,
            &[
                "create",
                "rolebinding",
                "bob-views",
                "-n",
                "dev",
                "--role=pod-viewer",
                "--user=bob",
            ],
        )
        .status
        .success()
    });
    // One with more is refused, naming what is missing.
    let refused = fails(jane(
        &server,
        &[
            "create",
            "role",
            "secret-reader",
            "-n",
            "dev",
            "--verb=get,delete",
            "--resource=secrets,pods",
        ],
    ));
    assert!(
        refused.contains(r#"roles.rbac.authorization.k8s.io "secret-reader" is forbidden: user "jane" (groups=["developers" "system:authenticated"]) is attempting to grant RBAC permissions not currently held:"#),
        "{refused}"
    );
    assert!(
        refused.contains(r#"{APIGroups:[""], Resources:["pods"], Verbs:["delete"]}"#),
        "{refused}"
    );
    assert!(
        refused.contains(r#"{APIGroups:[""], Resources:["secrets"], Verbs:["get" "delete"]}"#),
        "{refused}"
    );
    // Binding a role with more than jane holds (the admin ClusterRole) is refused too.
    let refused = fails(jane(
        &server,
        &[
            "create",
            "rolebinding",
            "jane-admin",
            "-n",
            "dev",
            "--clusterrole=admin",
            "--user=jane",
        ],
    ));
    assert!(
        refused.contains(r#"rolebindings.rbac.authorization.k8s.io "jane-admin" is forbidden: user "jane""#),
        "{refused}"
    );
    assert!(fails(jane(&server, &["get", "secrets", "-n", "dev"])).contains("Forbidden"));

    // With `bind` on the admin ClusterRole the same binding is allowed, as kube-apiserver allows it.
    let binder = r#"{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "admin-binder", "namespace": "dev"},
        "rules": [{"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles"], "verbs": ["bind"], "resourceNames": ["admin"]}]}"#;
    kubectl_file(&server, "apply", "binder.json", binder);
    ok(server.kubectl(
        33,
        &[
            "create",
            "rolebinding",
            "admin-binder",
            "-n",
            "dev",
            "--role=admin-binder",
            "--user=jane",
        ],
    ));
    wait_until("jane may bind admin", || {
        jane(
            &server,
            &[
                "create",
                "rolebinding",
                "jane-admin",
                "-n",
                "dev",
                "--clusterrole=admin",
                "--user=jane",
            ],
        )
        .status
        .success()
    });
    wait_until("jane is admin of dev", || {
        jane(&server, &["get", "secrets", "-n", "dev"]).status.success()
    });
}

fn rules(server: &Server, role: &str) -> String {
    ok(server.kubectl(33, &["get", "clusterrole", role, "-o", "jsonpath={.rules}"]))
}

#[test]
fn the_bootstrap_policy_is_there_and_put_back_at_restart() {
    let server = Server::start(&[]);
    for role in [
        "cluster-admin",
        "admin",
        "edit",
        "view",
        "system:basic-user",
        "system:discovery",
        "system:public-info-viewer",
        "system:node",
        "system:node-bootstrapper",
        "system:kube-scheduler",
        "system:kube-controller-manager",
        "system:kube-dns",
        "system:monitoring",
        "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
        "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
    ] {
        let labels = ok(server.kubectl(
            33,
            &[
                "get",
                "clusterrole",
                role,
                "-o",
                "jsonpath={.metadata.labels} {.metadata.annotations}",
            ],
        ));
        assert!(
            labels.contains(r#""kubernetes.io/bootstrapping":"rbac-defaults""#),
            "{role}: {labels}"
        );
        assert!(
            labels.contains(r#""rbac.authorization.kubernetes.io/autoupdate":"true""#),
            "{role}: {labels}"
        );
    }
    let subjects = |name: &str| {
        ok(server.kubectl(
            33,
            &[
                "get",
                "clusterrolebinding",
                name,
                "-o",
                "jsonpath={.subjects[*].name}",
            ],
        ))
    };
    assert_eq!(subjects("cluster-admin"), "system:masters");
    assert_eq!(subjects("system:discovery"), "system:authenticated");
    assert_eq!(subjects("system:basic-user"), "system:authenticated");
    assert_eq!(
        subjects("system:public-info-viewer"),
        "system:authenticated system:unauthenticated"
    );
    assert_eq!(subjects("system:node-bootstrapper"), "system:bootstrappers");
    assert_eq!(subjects("system:kube-scheduler"), "system:kube-scheduler");

    // The aggregation controller fills admin, edit and view from the aggregate-to-* roles; a new labelled
    // role joins them.
    bonsai_e2e::wait_for(30, "view aggregated", || {
        rules(&server, "view").contains(r#""pods""#)
    });
    assert!(
        !rules(&server, "view").contains("secrets"),
        "{}",
        rules(&server, "view")
    );
    bonsai_e2e::wait_for(30, "edit aggregated", || {
        rules(&server, "edit").contains("secrets")
    });
    bonsai_e2e::wait_for(30, "admin aggregated", || {
        rules(&server, "admin").contains("rolebindings")
    });
    let widgets = r#"{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "widget-viewer", "labels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}},
        "rules": [{"apiGroups": ["example.com"], "resources": ["widgets"], "verbs": ["get"]}]}"#;
    kubectl_file(&server, "apply", "widgets.json", widgets);
    bonsai_e2e::wait_for(30, "widgets in view", || {
        rules(&server, "view").contains("widgets")
    });
    bonsai_e2e::wait_for(30, "widgets in admin", || {
        rules(&server, "admin").contains("widgets")
    });

    // The scheduler runs as system:kube-scheduler, with its own certificate.
    let scheduler = server.data_dir().join("server/tls/client-scheduler.crt");
    assert!(scheduler.exists(), "{}", scheduler.display());
    assert!(
        server
            .data_dir()
            .join("server/cred/scheduler.kubeconfig")
            .exists()
    );

    // Deleted or trimmed defaults come back at the next start; a protected one is left as it is.
    ok(server.kubectl(33, &["delete", "clusterrole", "system:basic-user"]));
    ok(server.kubectl(33, &["delete", "clusterrolebinding", "system:discovery"]));
    ok(server.kubectl(
        33,
        &[
            "patch",
            "clusterrole",
            "system:kube-dns",
            "--type=merge",
            "-p",
            r#"{"rules": []}"#,
        ],
    ));
    ok(server.kubectl(33, &["patch", "clusterrole", "system:monitoring", "--type=merge", "-p",
        r#"{"metadata": {"annotations": {"rbac.authorization.kubernetes.io/autoupdate": "false"}}, "rules": []}"#]));
    let (netns, dir, status) = server.stop();
    assert!(status.success());
    let server = Server::start_in(netns, dir, &[]);
    ok(server.kubectl(33, &["get", "clusterrole", "system:basic-user"]));
    assert_eq!(
        ok(server.kubectl(
            33,
            &[
                "get",
                "clusterrolebinding",
                "system:discovery",
                "-o",
                "jsonpath={.subjects[*].name}"
            ]
        )),
        "system:authenticated"
    );
    assert!(rules(&server, "system:kube-dns").contains("endpoints"));
    let monitoring = ok(server.kubectl(
        33,
        &[
            "get",
            "clusterrole",
            "system:monitoring",
            "-o",
            "jsonpath={.rules}",
        ],
    ));
    assert!(!monitoring.contains("metrics"), "{monitoring}");
}

/// A client certificate for `user` in `group`, signed with the data directory's CA key (as the agent's would
/// be): the certificate and key files.
fn client_certificate(server: &Server, user: &str, group: &str) -> Vec<String> {
    let tls = server.data_dir().join("server/tls");
    let ca_cert = std::fs::read_to_string(tls.join("server-ca.crt")).unwrap();
    let ca_key =
        rcgen::KeyPair::from_pem(&std::fs::read_to_string(tls.join("server-ca.key")).unwrap()).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_cert, &ca_key).unwrap();
    let mut params = rcgen::CertificateParams::default();
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, user);
    dn.push(rcgen::DnType::OrganizationName, group);
    params.distinguished_name = dn;
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let file = user.replace(':', "-");
    let (cert_path, key_path) = (
        server.dir.path().join(format!("{file}.crt")),
        server.dir.path().join(format!("{file}.key")),
    );
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    vec![
        format!("--client-certificate={}", cert_path.display()),
        format!("--client-key={}", key_path.display()),
    ]
}

#[test]
fn a_node_reaches_only_the_objects_of_its_own_pods() {
    let server = Server::start(&[]);
    wait_until("the default service account", || {
        server
            .kubectl(33, &["get", "serviceaccount", "default"])
            .status
            .success()
    });
    for secret in ["mine", "theirs"] {
        ok(server.kubectl(33, &["create", "secret", "generic", secret, "--from-literal=k=v"]));
    }
    let pod = r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "busybox",
                 "env": [{"name": "K", "valueFrom": {"secretKeyRef": {"name": "mine", "key": "k"}}}]}]}}"#;
    kubectl_file(&server, "apply", "web.json", pod);
    let n1 = client_certificate(&server, "system:node:n1", "system:nodes");
    let n2 = client_certificate(&server, "system:node:n2", "system:nodes");

    wait_until("n1 reads its pod's secret", || {
        kubectl_with(&server, &n1, &["get", "secret", "mine"])
            .status
            .success()
    });
    let denied = fails(kubectl_with(&server, &n1, &["get", "secret", "theirs"]));
    assert!(
        denied.contains(r#"secrets "theirs" is forbidden: User "system:node:n1" cannot get resource "secrets" in API group "" in the namespace "default": no relationship found between node 'n1' and this object"#),
        "{denied}"
    );
    assert!(
        fails(kubectl_with(&server, &n2, &["get", "secret", "mine"]))
            .contains("no relationship found between node 'n2'")
    );
    assert!(fails(kubectl_with(&server, &n1, &["get", "secrets"])).contains("Forbidden"));
    // The pod's account token (for its projected volume) and its service-account root CA.
    ok(kubectl_with(
        &server,
        &n1,
        &[
            "create",
            "token",
            "default",
            "--bound-object-kind=Pod",
            "--bound-object-name=web",
        ],
    ));
    let denied = fails(kubectl_with(&server, &n2, &["create", "token", "default"]));
    assert!(
        denied.contains(r#"serviceaccounts "default" is forbidden: User "system:node:n2""#),
        "{denied}"
    );
    wait_until("kube-root-ca.crt", || {
        server
            .kubectl(33, &["get", "configmap", "kube-root-ca.crt"])
            .status
            .success()
    });
    ok(kubectl_with(
        &server,
        &n1,
        &["get", "configmap", "kube-root-ca.crt"],
    ));
    // Its pods (by the field selector the kubelet watches with), its status, its Node; not other nodes' pods.
    ok(kubectl_with(
        &server,
        &n1,
        &["get", "pods", "-A", "--field-selector=spec.nodeName=n1"],
    ));
    let denied = fails(kubectl_with(&server, &n1, &["get", "pods", "-A"]));
    assert!(
        denied.contains("can only list/watch pods with spec.nodeName field selector"),
        "{denied}"
    );
    ok(kubectl_with(&server, &n1, &["get", "pod", "web"]));
    assert!(fails(kubectl_with(&server, &n2, &["get", "pod", "web"])).contains("Forbidden"));
    // Its pods' status (a PATCH as the kubelet sends it; kubectl's `patch --subresource` reads the status first,
    // which NodeRules() does not grant).
    let cert = |creds: &[String]| -> Vec<String> {
        creds
            .iter()
            .flat_map(|c| {
                let (flag, path) = c.split_once('=').unwrap();
                let flag = if flag == "--client-certificate" {
                    "--cert"
                } else {
                    "--key"
                };
                [flag.to_string(), path.to_string()]
            })
            .collect()
    };
    let patch_status = |creds: &[String]| {
        let mut args = cert(creds);
        args.extend(
            [
                "-X",
                "PATCH",
                "-H",
                "Content-Type: application/merge-patch+json",
                "-d",
                r#"{"status": {"phase": "Running"}}"#,
            ]
            .map(String::from),
        );
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        server.curl("/api/v1/namespaces/default/pods/web/status", &args)
    };
    assert_eq!(patch_status(&n1).0, 200);
    let (code, body) = patch_status(&n2);
    assert_eq!(code, 403, "{body}");
    assert!(
        body.contains(r#"node \"n2\" can only update pod status for pods with spec.nodeName set to itself"#),
        "{body}"
    );
    bonsai_e2e::as_node::add_node(&server, "n1", "2", "");
    ok(kubectl_with(&server, &n1, &["get", "node", "n1"]));
    let denied = fails(kubectl_with(&server, &n2, &["get", "node", "n1"]));
    assert!(
        denied.contains("node 'n2' cannot read 'n1', only its own Node object"),
        "{denied}"
    );
    // What is not the Node authorizer's to subdivide follows NodeRules(): services yes, deployments no.
    ok(kubectl_with(&server, &n1, &["get", "services", "-A"]));
    assert!(fails(kubectl_with(&server, &n1, &["get", "deployments", "-A"])).contains("Forbidden"));
    // `can-i --list` for a node says its list is incomplete, as kube-apiserver's does.
    let listing = text(&kubectl_with(&server, &n1, &["auth", "can-i", "--list"]));
    assert!(
        listing.contains("node authorizer does not support user rule resolution"),
        "{listing}"
    );
}
