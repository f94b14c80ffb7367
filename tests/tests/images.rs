//! Images end to end: `bonsai images` against Debian's docker-registry in the test's own network namespace,
//! with busybox images built by umoci and pushed by skopeo: pulls by tag and digest, layers shared and unpacked
//! once with whiteouts in overlay form, a private registry with basic auth, a mirror with a rewrite, imports of
//! `docker save` and OCI archives (and the server's air-gap directory), removal, and bad input.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::process::Output;

use bonsai_e2e::images::{Layout, Registry};
use bonsai_e2e::{NetNs, bonsai_bin, fails, ok};

fn bonsai(netns: &NetNs, data: &Path, args: &[&str]) -> Output {
    netns
        .command(bonsai_bin())
        .args(["images", "-d"])
        .arg(data)
        .args(args)
        .output()
        .unwrap()
}

fn layers(data: &Path) -> Vec<std::path::PathBuf> {
    let mut dirs: Vec<_> = std::fs::read_dir(data.join("agent/content/layers/sha256"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    dirs.sort();
    dirs
}

fn blob_count(data: &Path) -> usize {
    std::fs::read_dir(data.join("agent/content/blobs/sha256"))
        .unwrap()
        .count()
}

#[test]
fn pull_by_tag_and_digest_sharing_layers_with_whiteouts() {
    let dir = tempfile::tempdir().unwrap();
    let netns = NetNs::new();
    let _registry = Registry::start(&netns, &dir.path().join("registry"), None);
    let layout = Layout::busybox(dir.path());
    layout.multi_arch();
    for tag in ["v1", "v2", "multi"] {
        layout.copy(
            &netns,
            tag,
            &format!("docker://{}/test/busybox:{tag}", Registry::ADDR),
            None,
        );
    }
    let data = dir.path().join("data");
    let out = ok(bonsai(&netns, &data, &["pull", "127.0.0.1:5000/test/busybox:v1"]));
    assert!(out.starts_with("127.0.0.1:5000/test/busybox:v1 sha256:"), "{out}");
    assert_eq!(layers(&data).len(), 1);
    let blobs = blob_count(&data);

    // v2 shares v1's layer and adds one with whiteouts.
    let digest = layout.digest("v2");
    let by_digest = format!("127.0.0.1:5000/test/busybox@{digest}");
    ok(bonsai(&netns, &data, &["pull", &by_digest]));
    let dirs = layers(&data);
    assert_eq!(dirs.len(), 2, "the shared layer is unpacked once");
    assert_eq!(
        blob_count(&data),
        blobs + 3,
        "one more layer, config and manifest"
    );
    let top = dirs.iter().find(|d| d.join("var/cache/new").exists()).unwrap();
    assert!(
        std::fs::symlink_metadata(top.join("etc/removed"))
            .unwrap()
            .file_type()
            .is_char_device()
    );
    // umoci writes a removed directory's children as whiteouts (opaque markers are covered by the unit tests).
    assert!(
        std::fs::symlink_metadata(top.join("var/cache/old"))
            .unwrap()
            .file_type()
            .is_char_device()
    );
    let base = dirs.iter().find(|d| d.join("bin/busybox").exists()).unwrap();
    assert!(
        std::fs::symlink_metadata(base.join("bin/sh"))
            .unwrap()
            .file_type()
            .is_symlink()
    );

    // An index resolves to this machine's platform: `multi` is v1 here.
    let multi = ok(bonsai(
        &netns,
        &data,
        &["pull", "127.0.0.1:5000/test/busybox:multi"],
    ));
    assert_eq!(
        multi.split_whitespace().nth(1),
        Some(layout.digest("v1").as_str()),
        "{multi}"
    );

    let listed = ok(bonsai(&netns, &data, &["ls"]));
    assert!(listed.contains("127.0.0.1:5000/test/busybox:v1"), "{listed}");
    assert!(
        listed.contains(&format!("127.0.0.1:5000/test/busybox@{digest}")),
        "{listed}"
    );

    // A wrong digest, a missing tag, a bad reference: clear errors, nothing half-done left.
    let missing = fails(bonsai(
        &netns,
        &data,
        &["pull", "127.0.0.1:5000/test/busybox:nope"],
    ));
    assert!(missing.contains("not found"), "{missing}");
    let wrong = format!("127.0.0.1:5000/test/busybox@sha256:{}", "0".repeat(64));
    fails(bonsai(&netns, &data, &["pull", &wrong]));
    let bad = fails(bonsai(&netns, &data, &["pull", "UPPER/Case::x"]));
    assert!(bad.contains("invalid image reference"), "{bad}");
    assert_eq!(
        std::fs::read_dir(data.join("agent/content/ingest"))
            .unwrap()
            .count(),
        0
    );

    // Removing v1 keeps the layer v2 shares; removing v2 as well frees everything.
    ok(bonsai(
        &netns,
        &data,
        &["rm", "127.0.0.1:5000/test/busybox:multi"],
    ));
    let removed = ok(bonsai(&netns, &data, &["rm", "127.0.0.1:5000/test/busybox:v1"]));
    assert!(
        removed.contains("freed 2 blobs and 0 layers"),
        "v1's manifest and config go: {removed}"
    );
    assert_eq!(layers(&data).len(), 2);
    ok(bonsai(
        &netns,
        &data,
        &["rm", &format!("127.0.0.1:5000/test/busybox@{digest}")],
    ));
    assert_eq!(layers(&data).len(), 0);
    assert_eq!(blob_count(&data), 0);
}

#[test]
fn private_registries_and_mirrors_from_registries_yaml() {
    let dir = tempfile::tempdir().unwrap();
    let netns = NetNs::new();
    let _registry = Registry::start(&netns, &dir.path().join("registry"), Some(("tester", "s3cret")));
    let layout = Layout::busybox(dir.path());
    layout.copy(
        &netns,
        "v1",
        &format!("docker://{}/mirrored/busybox:v1", Registry::ADDR),
        Some("tester:s3cret"),
    );
    let data = dir.path().join("data");
    let config = dir.path().join("registries.yaml");

    let denied = fails(bonsai(
        &netns,
        &data,
        &[
            "--private-registry",
            config.to_str().unwrap(),
            "pull",
            "127.0.0.1:5000/mirrored/busybox:v1",
        ],
    ));
    assert!(
        denied.contains("not authorized") || denied.contains("401") || denied.contains("nauthorized"),
        "{denied}"
    );

    // Credentials for the registry, and docker.io mirrored to it with a rewrite: `busybox:v1` comes from
    // 127.0.0.1:5000/mirrored/busybox:v1. (The namespace has no route anywhere else.)
    std::fs::write(
        &config,
        format!(
            "mirrors:\n  docker.io:\n    endpoint: [\"http://{0}\"]\n    rewrite:\n      \"^library/(.*)\": \"mirrored/$1\"\nconfigs:\n  \"{0}\":\n    auth: {{username: tester, password: s3cret}}\n",
            Registry::ADDR
        ),
    )
    .unwrap();
    let pulled = ok(bonsai(
        &netns,
        &data,
        &[
            "--private-registry",
            config.to_str().unwrap(),
            "pull",
            "busybox:v1",
        ],
    ));
    assert!(
        pulled.starts_with("docker.io/library/busybox:v1 sha256:"),
        "{pulled}"
    );
    let direct = ok(bonsai(
        &netns,
        &data,
        &[
            "--private-registry",
            config.to_str().unwrap(),
            "pull",
            "127.0.0.1:5000/mirrored/busybox:v1",
        ],
    ));
    assert_eq!(
        pulled.split_whitespace().nth(1),
        direct.split_whitespace().nth(1),
        "the same manifest"
    );

    std::fs::write(&config, "mirrors: [not, a, map]\n").unwrap();
    let broken = fails(bonsai(
        &netns,
        &data,
        &[
            "--private-registry",
            config.to_str().unwrap(),
            "pull",
            "busybox:v1",
        ],
    ));
    assert!(broken.contains("registries.yaml"), "{broken}");
}

#[test]
fn docker_save_and_oci_archives_import_and_the_server_imports_its_airgap_directory() {
    let dir = tempfile::tempdir().unwrap();
    let netns = NetNs::new();
    let layout = Layout::busybox(dir.path());
    let docker_archive = dir.path().join("busybox-docker.tar");
    let oci_archive = dir.path().join("busybox-oci.tar");
    layout.copy(
        &netns,
        "v2",
        &format!(
            "docker-archive:{}:example.com/team/busybox:v2",
            docker_archive.display()
        ),
        None,
    );
    layout.copy(
        &netns,
        "v1",
        &format!(
            "oci-archive:{}:docker.io/library/ocibox:v1",
            oci_archive.display()
        ),
        None,
    );
    let data = dir.path().join("data");
    let out = ok(bonsai(
        &netns,
        &data,
        &[
            "import",
            docker_archive.to_str().unwrap(),
            oci_archive.to_str().unwrap(),
        ],
    ));
    assert!(
        out.contains("example.com/team/busybox:v2") && out.contains("docker.io/library/ocibox:v1"),
        "{out}"
    );
    let dirs = layers(&data);
    assert_eq!(
        dirs.len(),
        2,
        "the OCI archive's layer is the docker archive's first: shared"
    );
    assert!(dirs.iter().any(|d| d.join("var/cache/new").exists()));

    let junk = dir.path().join("junk.tar");
    std::fs::write(&junk, b"this is not a tarball").unwrap();
    let refused = fails(bonsai(&netns, &data, &["import", junk.to_str().unwrap()]));
    assert!(refused.contains("not an image archive"), "{refused}");

    // The server imports every tarball in <data-dir>/agent/images/ when it starts.
    let server_data = dir.path().join("server-data");
    std::fs::create_dir_all(server_data.join("agent/images")).unwrap();
    std::fs::copy(&docker_archive, server_data.join("agent/images/busybox.tar")).unwrap();
    let mut server = bonsai_e2e::Running::start_with(
        netns.command(bonsai_bin()),
        &[
            "server",
            "-d",
            server_data.to_str().unwrap(),
            "-o",
            dir.path().join("kubeconfig").to_str().unwrap(),
        ],
    );
    server.wait_for_log("imported images", std::time::Duration::from_secs(30));
    let listed = ok(bonsai(&netns, &server_data, &["ls"]));
    assert!(listed.contains("example.com/team/busybox:v2"), "{listed}");
}
