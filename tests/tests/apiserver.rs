//! The API server's serving and identity, end to end: the real bonsai binary in a network
//! namespace of its own, driven by the real kubectl (1.29 and 1.33) and curl.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use bonsai_e2e::{Server, ok, text};
use std::os::unix::fs::PermissionsExt;

#[test]
fn real_kubectl_talks_to_the_server() {
    let server = Server::start(&[]);
    for minor in [29, 33] {
        let version: serde_json::Value =
            serde_json::from_str(&ok(server.kubectl(minor, &["version", "-o", "json"]))).unwrap();
        assert_eq!(version["serverVersion"]["major"], "1", "kubectl 1.{minor}");
        assert_eq!(version["serverVersion"]["minor"], "33", "kubectl 1.{minor}");
        assert!(
            version["serverVersion"]["gitVersion"]
                .as_str()
                .unwrap()
                .starts_with("v1.33.")
        );
        let ready = ok(server.kubectl(minor, &["get", "--raw", "/readyz?verbose"]));
        assert!(
            ready.contains("[+]etcd ok") && ready.contains("readyz check passed"),
            "{ready}"
        );
        assert_eq!(ok(server.kubectl(minor, &["get", "--raw", "/livez"])), "ok");
        assert_eq!(
            ok(server.kubectl(minor, &["get", "--raw", "/healthz/etcd"])),
            "ok"
        );
        // No resources are served yet, and discovery says so without failing.
        ok(server.kubectl(minor, &["api-resources"]));
        let missing = server.kubectl(minor, &["get", "--raw", "/no/such/path"]);
        assert!(!missing.status.success());
        assert!(
            text(&missing).contains("NotFound") || text(&missing).contains("could not find"),
            "{}",
            text(&missing)
        );
    }
}

#[test]
fn the_kubeconfig_appears_once_ready_with_the_mode_asked_for() {
    let server = Server::start(&[]);
    let mode = std::fs::metadata(&server.kubeconfig)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let config = std::fs::read_to_string(&server.kubeconfig).unwrap();
    assert!(config.contains("server: https://127.0.0.1:6443"), "{config}");
    assert!(config.contains("client-certificate-data:") && config.contains("certificate-authority-data:"));
    let readable = Server::start(&["--write-kubeconfig-mode", "644"]);
    let mode = std::fs::metadata(&readable.kubeconfig)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o644);
}

#[test]
fn unauthenticated_requests_get_401_except_health_and_version() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.csv");
    std::fs::write(&tokens, "good-token,alice,1001,\"dev\"\n").unwrap();
    let server = Server::start(&["--token-auth-file", tokens.to_str().unwrap()]);

    let (code, body) = server.curl("/apis", &[]);
    assert_eq!(code, 401, "{body}");
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (
            status["kind"].as_str(),
            status["reason"].as_str(),
            status["code"].as_i64()
        ),
        (Some("Status"), Some("Unauthorized"), Some(401))
    );
    for public in [
        "/version",
        "/livez",
        "/readyz",
        "/healthz?verbose",
        "/readyz/ping",
    ] {
        assert_eq!(server.curl(public, &[]).0, 200, "{public}");
    }
    // Bearer tokens from the token file.
    assert_eq!(
        server
            .curl("/apis", &["-H", "Authorization: Bearer good-token"])
            .0,
        200
    );
    assert_eq!(
        server.curl("/apis", &["-H", "Authorization: Bearer bad-token"]).0,
        401
    );
    // The admin's client certificate.
    let tls = server.data_dir().join("server/tls");
    let cert = tls.join("client-admin.crt");
    let key = tls.join("client-admin.key");
    assert_eq!(
        server
            .curl(
                "/apis",
                &["--cert", cert.to_str().unwrap(), "--key", key.to_str().unwrap()]
            )
            .0,
        200
    );
    // kubectl with only a token, as a service account or CI job would use it.
    let empty = dir.path().join("empty-kubeconfig");
    std::fs::write(&empty, "apiVersion: v1\nkind: Config\n").unwrap();
    let ca = tls.join("server-ca.crt");
    let with_token = |token: &str| {
        server
            .netns
            .command(bonsai_e2e::kubectl_bin(33))
            .args([
                "--kubeconfig",
                empty.to_str().unwrap(),
                "--server",
                "https://127.0.0.1:6443",
            ])
            .args([
                "--certificate-authority",
                ca.to_str().unwrap(),
                "--token",
                token,
                "get",
                "--raw",
                "/apis",
            ])
            .output()
            .unwrap()
    };
    assert!(with_token("good-token").status.success());
    let refused = with_token("bad-token");
    assert!(!refused.status.success());
    assert!(text(&refused).contains("Unauthorized"), "{}", text(&refused));
}

#[test]
fn the_certificate_names_the_server_as_clients_will_call_it() {
    let server = Server::start(&["--tls-san", "edge.example"]);
    for name in [
        "localhost",
        "kubernetes",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
        "edge.example",
    ] {
        let resolve = format!("{name}:6443:127.0.0.1");
        let ca = server.data_dir().join("server/tls/server-ca.crt");
        let out = server
            .netns
            .command("curl")
            .args(["-sf", "--cacert", ca.to_str().unwrap(), "--resolve", &resolve])
            .arg(format!("https://{name}:6443/livez"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{name}: {}", text(&out));
    }
    // A name the certificate does not carry is refused by the client.
    let ca = server.data_dir().join("server/tls/server-ca.crt");
    let out = server
        .netns
        .command("curl")
        .args([
            "-sf",
            "--cacert",
            ca.to_str().unwrap(),
            "--resolve",
            "impostor.example:6443:127.0.0.1",
        ])
        .arg("https://impostor.example:6443/livez")
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn pki_join_token_and_kubeconfig_survive_a_restart() {
    let server = Server::start(&[]);
    let tls = server.data_dir().join("server/tls");
    let read = |name: &str| std::fs::read_to_string(tls.join(name)).unwrap();
    let (ca, serving, admin) = (
        read("server-ca.crt"),
        read("serving-kube-apiserver.crt"),
        read("client-admin.crt"),
    );
    let token_path = server.data_dir().join("server/token");
    let token = std::fs::read_to_string(&token_path).unwrap();
    assert_eq!(
        std::fs::metadata(&token_path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // K10<sha256 of the CA bundle>::server:<secret>, as k3s.
    let sha = std::process::Command::new("sha256sum")
        .arg(tls.join("server-ca.crt"))
        .output()
        .unwrap();
    let sha = String::from_utf8(sha.stdout).unwrap();
    let hash = sha.split_whitespace().next().unwrap();
    assert!(
        token.trim().starts_with(&format!("K10{hash}::server:")),
        "{token}"
    );
    let old_kubeconfig = std::fs::read(&server.kubeconfig).unwrap();

    let (netns, dir, status) = server.stop();
    assert!(status.success());
    let again = Server::start_in(netns, dir, &[]);
    assert_eq!(
        (
            read("server-ca.crt"),
            read("serving-kube-apiserver.crt"),
            read("client-admin.crt")
        ),
        (ca, serving, admin)
    );
    assert_eq!(std::fs::read_to_string(&token_path).unwrap(), token);
    // The kubeconfig written before the restart still works.
    std::fs::write(&again.kubeconfig, old_kubeconfig).unwrap();
    ok(again.kubectl(33, &["get", "--raw", "/apis"]));
}

#[test]
fn a_taken_port_is_named_in_the_error() {
    let server = Server::start(&[]);
    let other = tempfile::tempdir().unwrap();
    let out = server
        .netns
        .command(bonsai_e2e::bonsai_bin())
        .args([
            "server",
            "-d",
            other.path().to_str().unwrap(),
            "-o",
            other.path().join("k").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("cannot listen on 0.0.0.0:6443"),
        "{}",
        text(&out)
    );
}
