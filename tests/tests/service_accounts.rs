//! Service account tokens against the real binary: a pod's projected serviceAccountToken volume holds a token
//! the API takes as the pod's service account (through the `kubernetes` Service's address, as in-cluster clients
//! reach it), `kubectl create token` uses the TokenRequest API, and forged or too-short-lived tokens are refused.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use bonsai_e2e::as_node::kubectl_file;
use bonsai_e2e::images::AgentNode;
use bonsai_e2e::{Server, ok, text};

/// `kubectl auth whoami` with only `token` for credentials.
fn whoami(server: &Server, token: &str) -> std::process::Output {
    let ca = server.data_dir().join("server/tls/server-ca.crt");
    server
        .netns
        .command(bonsai_e2e::kubectl_bin(33))
        .args([
            "--kubeconfig=/dev/null",
            "--server=https://127.0.0.1:6443",
            &format!("--certificate-authority={}", ca.display()),
            &format!("--token={token}"),
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username} {.status.userInfo.groups}",
        ])
        .output()
        .unwrap()
}

#[test]
fn projected_tokens_and_token_requests_authenticate_as_the_service_account() {
    let node = AgentNode::with_busybox();
    let server = &node.server;
    let image = node.image();
    let manifest = format!(
        r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "client"}},
       "spec": {{"terminationGracePeriodSeconds": 0,
         "containers": [{{"name": "c", "image": "{image}", "command": ["sleep", "3600"],
           "volumeMounts": [{{"name": "token", "mountPath": "/var/run/secrets/tokens"}}]}}],
         "volumes": [{{"name": "token", "projected": {{"sources": [
           {{"serviceAccountToken": {{"path": "api-token", "expirationSeconds": 3600}}}}]}}}}]}}}}"#
    );
    // The default service account is made by its controller shortly after the namespace.
    bonsai_e2e::wait_until("the default service account", || {
        server
            .kubectl(33, &["get", "serviceaccount", "default"])
            .status
            .success()
    });
    kubectl_file(server, "apply", "client.json", &manifest);
    ok(server.kubectl(
        33,
        &["wait", "--for=condition=Ready", "pod/client", "--timeout=60s"],
    ));
    let token = ok(server.kubectl(
        33,
        &["exec", "client", "--", "cat", "/var/run/secrets/tokens/api-token"],
    ));
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");

    // The token speaks for the pod's service account.
    let me = whoami(server, &token);
    assert!(me.status.success(), "{}", text(&me));
    assert_eq!(
        text(&me),
        r#"system:serviceaccount:default:default ["system:serviceaccounts","system:serviceaccounts:default","system:authenticated"]"#
    );
    // From the node, through the `kubernetes` Service's cluster IP and the serving certificate's name for it, as
    // an in-cluster client calls: the account may list pods only once RBAC grants it.
    let ca = server.data_dir().join("server/tls/server-ca.crt");
    let list_pods = |token: &str| {
        let out = server
            .netns
            .net_command("curl")
            .args([
                "-s",
                "-w",
                "\n%{http_code}",
                "--cacert",
                ca.to_str().unwrap(),
                "--resolve",
                "kubernetes.default.svc:443:10.43.0.1",
                "-H",
                &format!("Authorization: Bearer {token}"),
                "https://kubernetes.default.svc/api/v1/namespaces/default/pods",
            ])
            .output()
            .unwrap();
        let all = text(&out);
        let (body, code) = all.trim_end().rsplit_once('\n').unwrap_or(("", ""));
        (code.to_string(), body.to_string())
    };
    let (code, body) = list_pods(&token);
    assert_eq!(code, "403", "{body}");
    assert!(
        body.contains(r#"pods is forbidden: User \"system:serviceaccount:default:default\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\""#),
        "{body}"
    );
    ok(server.kubectl(
        33,
        &[
            "create",
            "rolebinding",
            "default-view",
            "--clusterrole=view",
            "--serviceaccount=default:default",
        ],
    ));
    bonsai_e2e::wait_until("the account may list pods", || list_pods(&token).0 == "200");

    // The ServiceAccount admission's kube-api-access volume: a token, the cluster CA and the namespace at
    // /var/run/secrets/kubernetes.io/serviceaccount, and the token reaches the API from inside the pod.
    let spec = ok(server.kubectl(
        33,
        &[
            "get",
            "pod",
            "client",
            "-o",
            "jsonpath={.spec.volumes[*].name} {.spec.containers[0].volumeMounts[*].mountPath}",
        ],
    ));
    assert!(spec.contains(" kube-api-access-"), "{spec}");
    assert!(
        spec.ends_with("/var/run/secrets/tokens /var/run/secrets/kubernetes.io/serviceaccount"),
        "{spec}"
    );
    let mounted = |file: &str| {
        ok(server.kubectl(
            33,
            &[
                "exec",
                "client",
                "--",
                "cat",
                &format!("/var/run/secrets/kubernetes.io/serviceaccount/{file}"),
            ],
        ))
    };
    assert_eq!(mounted("namespace"), "default");
    assert_eq!(mounted("ca.crt"), std::fs::read_to_string(&ca).unwrap());
    let auto_token = mounted("token");
    assert_eq!(
        text(&whoami(server, &auto_token)).split(' ').next(),
        Some("system:serviceaccount:default:default")
    );
    // busybox's wget cannot reach the API from inside the pod (its TLS client and rustls share no handshake:
    // alert 40), so the mounted token is used as the existing check above uses one: from the node, through the
    // `kubernetes` Service, limited by the account's RBAC (view lists pods, reads no secrets).
    assert_eq!(list_pods(&auto_token).0, "200");
    let secrets = server
        .netns
        .net_command("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--cacert",
            ca.to_str().unwrap(),
            "--resolve",
            "kubernetes.default.svc:443:10.43.0.1",
            "-H",
            &format!("Authorization: Bearer {auto_token}"),
            "https://kubernetes.default.svc/api/v1/namespaces/default/secrets",
        ])
        .output()
        .unwrap();
    assert_eq!(text(&secrets), "403");

    // A pod (or account) that opts out gets no volume.
    let opted_out = r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "quiet"},
        "spec": {"automountServiceAccountToken": false, "containers": [{"name": "c", "image": "busybox"}]}}"#;
    kubectl_file(server, "apply", "quiet.json", opted_out);
    let volumes = ok(server.kubectl(33, &["get", "pod", "quiet", "-o", "jsonpath={.spec.volumes}"]));
    assert!(!volumes.contains("kube-api-access"), "{volumes}");
    // A pod of an account that does not exist is refused, as the admission plugin refuses it.
    let nobody = r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "nobody"},
        "spec": {"serviceAccountName": "nobody", "containers": [{"name": "c", "image": "busybox"}]}}"#;
    let file = server.dir.path().join("nobody.json");
    std::fs::write(&file, nobody).unwrap();
    let refused = bonsai_e2e::fails(server.kubectl(33, &["apply", "-f", file.to_str().unwrap()]));
    assert!(
        refused.contains(r#"pods "nobody" is forbidden: error looking up service account default/nobody: serviceaccount "nobody" not found"#),
        "{refused}"
    );

    // A forged token (its claims changed, the signature kept) and a token of no issuer are refused.
    let mut parts: Vec<&str> = token.split('.').collect();
    let forged_claims = "eyJpc3MiOiJodHRwczovL2t1YmVybmV0ZXMuZGVmYXVsdC5zdmMuY2x1c3Rlci5sb2NhbCIsInN1YiI6InN5c3RlbTpzZXJ2aWNlYWNjb3VudDprdWJlLXN5c3RlbTphZG1pbiJ9";
    parts[1] = forged_claims;
    for bad in [parts.join("."), "not-a-token".to_string()] {
        let refused = whoami(server, &bad);
        assert!(!refused.status.success());
        assert!(text(&refused).contains("Unauthorized"), "{}", text(&refused));
    }

    // `kubectl create token` (TokenRequest): audiences and lifetime as asked; under ten minutes is refused.
    let requested = ok(server.kubectl(33, &["create", "token", "default", "--duration=15m"]));
    let me = whoami(server, requested.trim());
    assert!(
        text(&me).starts_with("system:serviceaccount:default:default "),
        "{}",
        text(&me)
    );
    let short = server.kubectl(33, &["create", "token", "default", "--duration=5m"]);
    assert!(!short.status.success());
    assert!(
        text(&short).contains("may not specify a duration less than 10 minutes"),
        "{}",
        text(&short)
    );
    let missing = server.kubectl(33, &["create", "token", "nobody"]);
    assert!(text(&missing).contains("not found"), "{}", text(&missing));
    // A token bound to the pod names it.
    let bound = ok(server.kubectl(
        33,
        &[
            "create",
            "token",
            "default",
            "--bound-object-kind=Pod",
            "--bound-object-name=client",
        ],
    ));
    assert!(whoami(server, bound.trim()).status.success());
    // Tokens bound to the pod (the one it was given too) stop working once it is gone, as kube-apiserver's check
    // of a token's bound objects refuses them.
    ok(server.kubectl(33, &["delete", "pod", "client", "--grace-period=0", "--force"]));
    bonsai_e2e::wait_for(60, "the pod gone", || {
        !server.kubectl(33, &["get", "pod", "client"]).status.success()
    });
    for gone in [bound.trim(), auto_token.as_str()] {
        let refused = whoami(server, gone);
        assert!(text(&refused).contains("Unauthorized"), "{}", text(&refused));
    }
    // The account's own tokens still work.
    assert!(whoami(server, requested.trim()).status.success());

    // The OIDC discovery documents that verify the tokens.
    let mut admin = server.admin_credentials();
    admin.push("-s".into());
    let admin: Vec<&str> = admin.iter().map(String::as_str).collect();
    let (code, discovery) = server.curl("/.well-known/openid-configuration", &admin);
    assert_eq!(code, 200);
    assert!(
        discovery.contains(r#""issuer":"https://kubernetes.default.svc.cluster.local""#),
        "{discovery}"
    );
    let (code, jwks) = server.curl("/openid/v1/jwks", &admin);
    assert_eq!(code, 200);
    assert!(jwks.contains(r#""kty":"EC""#), "{jwks}");
}

#[test]
fn legacy_token_secrets_are_filled_only_when_asked_and_die_with_their_secret() {
    let server = Server::start(&[]);
    bonsai_e2e::wait_until("the default service account", || {
        server
            .kubectl(33, &["get", "serviceaccount", "default"])
            .status
            .success()
    });
    // No token Secret is made unasked.
    let secrets = ok(server.kubectl(33, &["get", "secrets", "-o", "name"]));
    assert_eq!(secrets.trim(), "");
    let secret = |name: &str, account: &str| {
        format!(
            r#"{{"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
               "metadata": {{"name": "{name}", "annotations": {{"kubernetes.io/service-account.name": "{account}"}}}}}}"#
        )
    };
    kubectl_file(&server, "apply", "legacy.json", &secret("legacy", "default"));
    kubectl_file(&server, "apply", "ghost.json", &secret("ghost", "nobody"));
    let field = |name: &str, path: &str| {
        text(&server.kubectl(33, &["get", "secret", name, "-o", &format!("jsonpath={path}")]))
    };
    bonsai_e2e::wait_for(30, "the token filled in", || {
        !field("legacy", "{.data.token}").is_empty()
    });
    let decode = |b64: String| {
        let out = std::process::Command::new("base64")
            .arg("-d")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        out.stdin.as_ref().unwrap().write_all(b64.as_bytes()).unwrap();
        String::from_utf8(out.wait_with_output().unwrap().stdout).unwrap()
    };
    let token = decode(field("legacy", "{.data.token}"));
    let ca = std::fs::read_to_string(server.data_dir().join("server/tls/server-ca.crt")).unwrap();
    assert_eq!(decode(field("legacy", "{.data.ca\\.crt}")), ca);
    assert_eq!(decode(field("legacy", "{.data.namespace}")), "default");
    let uid = ok(server.kubectl(33, &["get", "sa", "default", "-o", "jsonpath={.metadata.uid}"]));
    assert_eq!(
        field(
            "legacy",
            "{.metadata.annotations.kubernetes\\.io/service-account\\.uid}"
        ),
        uid
    );
    // The Secret of an account that does not exist is deleted.
    bonsai_e2e::wait_for(30, "the ghost's secret deleted", || {
        !server.kubectl(33, &["get", "secret", "ghost"]).status.success()
    });
    // The token speaks for the account while the Secret holds it.
    let me = whoami(&server, &token);
    assert_eq!(
        text(&me).split(' ').next(),
        Some("system:serviceaccount:default:default"),
        "{}",
        text(&me)
    );
    ok(server.kubectl(33, &["delete", "secret", "legacy"]));
    let refused = whoami(&server, &token);
    assert!(text(&refused).contains("Unauthorized"), "{}", text(&refused));
}

/// `claims` signed ES256 with the server's own service account key (`server/tls/service.key`, PKCS#8 PEM), under
/// `header` (the encoded header of a token the server issued: its `alg` and `kid`).
fn signed_with_server_key(server: &Server, header: &str, claims: &serde_json::Value) -> String {
    use base64::Engine;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    let pem = std::fs::read_to_string(server.data_dir().join("server/tls/service.key")).unwrap();
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = STANDARD.decode(body).unwrap();
    let rng = ring::rand::SystemRandom::new();
    let key = ring::signature::EcdsaKeyPair::from_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &der,
        &rng,
    )
    .unwrap();
    let input = format!("{header}.{}", URL_SAFE_NO_PAD.encode(claims.to_string()));
    let signature = key.sign(&rng, input.as_bytes()).unwrap();
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()))
}

/// TokenRequest clamps `expirationSeconds` to at least 10 minutes, so the test makes the expired token itself:
/// the claims of a token the server issued, re-signed with the server's real key, once unchanged (accepted: the
/// signing is the server's) and once with `exp` an hour past (beyond the verifier's 60 s leeway): refused with
/// 401 as kube-apiserver refuses it.
#[test]
fn a_token_past_its_expiry_is_refused() {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let server = Server::start(&[]);
    bonsai_e2e::wait_until("the default service account", || {
        server
            .kubectl(33, &["get", "serviceaccount", "default"])
            .status
            .success()
    });
    let token = ok(server.kubectl(33, &["create", "token", "default"]));
    let parts: Vec<&str> = token.trim().split('.').collect();
    assert_eq!(parts.len(), 3, "{token}");
    let mut claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();

    let resigned = signed_with_server_key(&server, parts[0], &claims);
    let out = whoami(&server, &resigned);
    assert_eq!(
        text(&out).trim(),
        "system:serviceaccount:default:default \
         [\"system:serviceaccounts\",\"system:serviceaccounts:default\",\"system:authenticated\"]"
    );

    let iat = claims["iat"].as_i64().unwrap();
    claims["iat"] = (iat - 7200).into();
    claims["nbf"] = (iat - 7200).into();
    claims["exp"] = (iat - 3600).into();
    let expired = signed_with_server_key(&server, parts[0], &claims);
    let out = whoami(&server, &expired);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("Unauthorized"), "{}", text(&out));
    let bearer = format!("Authorization: Bearer {expired}");
    let (code, body) = server.curl("/api/v1/namespaces/default/pods", &["-H", &bearer]);
    assert_eq!(code, 401, "{body}");
}
