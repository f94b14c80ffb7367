//! Secrets encryption at rest against the real binary: with `--secrets-encryption` a Secret's value is nowhere
//! in the data directory's files (while without it, the same search finds it: the search works), it reads back
//! through the API, survives `bonsai secrets-encrypt rotate-keys` (every Secret then under the new key only) and
//! a restart.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use std::path::Path;

use bonsai_e2e::{Server, ok};

/// A value no other byte string of the cluster holds, and its base64 (a Secret's `data` is base64 in JSON).
const VALUE: &str = "correct-horse-battery-staple-5b1f";
const VALUE_BASE64: &str = "Y29ycmVjdC1ob3JzZS1iYXR0ZXJ5LXN0YXBsZS01YjFm";

/// Whether any file under `dir` contains `needle`.
fn found_in_files(dir: &Path, needle: &[u8]) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|entry| {
        let path = entry.path();
        if path.is_dir() {
            found_in_files(&path, needle)
        } else {
            std::fs::read(&path).is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
        }
    })
}

fn create_secret(server: &Server, name: &str) {
    ok(server.kubectl(
        33,
        &[
            "create",
            "secret",
            "generic",
            name,
            &format!("--from-literal=password={VALUE}"),
        ],
    ));
}

fn read_secret(server: &Server, name: &str) -> String {
    ok(server.kubectl(33, &["get", "secret", name, "-o", "jsonpath={.data.password}"]))
}

fn secrets_encrypt(server: &Server, command: &str) -> String {
    ok(server
        .netns
        .command(bonsai_e2e::bonsai_bin())
        .args(["secrets-encrypt", command, "--kubeconfig"])
        .arg(&server.kubeconfig)
        .output()
        .unwrap())
}

#[test]
fn without_encryption_the_search_finds_the_secret() {
    let server = Server::start(&[]);
    create_secret(&server, "plain");
    let db = server.data_dir().join("server/db");
    assert!(
        found_in_files(&db, VALUE.as_bytes()) || found_in_files(&db, VALUE_BASE64.as_bytes()),
        "the value is not in the store's files: the search below would prove nothing"
    );
    let status = secrets_encrypt(&server, "status");
    assert!(status.contains("Encryption Status: Disabled"), "{status}");
}

#[test]
fn encrypted_secrets_are_unreadable_on_disk_and_survive_rotation_and_restart() {
    let server = Server::start(&["--secrets-encryption"]);
    create_secret(&server, "one");
    create_secret(&server, "two");
    assert_eq!(read_secret(&server, "one"), VALUE_BASE64);
    let data = server.data_dir();
    for needle in [VALUE, VALUE_BASE64] {
        assert!(
            !found_in_files(&data.join("server/db"), needle.as_bytes()),
            "{needle} is in the store's files"
        );
    }
    let config = std::fs::read_to_string(data.join("server/cred/encryption-config.json")).unwrap();
    assert!(
        config.contains("EncryptionConfiguration") && config.contains("aesgcm"),
        "{config}"
    );

    let before = secrets_encrypt(&server, "status");
    assert!(before.contains("Encryption Status: Enabled"), "{before}");
    let first_key = before
        .lines()
        .find_map(|l| l.strip_prefix("Current Key: "))
        .unwrap()
        .to_string();
    std::thread::sleep(std::time::Duration::from_millis(1100)); // key names carry the second
    let rotated = secrets_encrypt(&server, "rotate-keys");
    let second_key = rotated
        .lines()
        .find_map(|l| l.strip_prefix("Current Key: "))
        .unwrap()
        .to_string();
    assert_ne!(first_key, second_key, "{rotated}");
    assert!(rotated.contains(&format!("Keys: {second_key}\n")), "{rotated}");
    assert!(
        !rotated.contains(&format!("Secrets stored with {first_key}")),
        "{rotated}"
    );
    assert!(!rotated.contains("Secrets stored with identity"), "{rotated}");
    assert_eq!(read_secret(&server, "one"), VALUE_BASE64);
    assert_eq!(read_secret(&server, "two"), VALUE_BASE64);

    // A restart reads them with the key kept in the data directory.
    let (netns, dir, _) = server.stop();
    let server = Server::start_in(netns, dir, &["--secrets-encryption"]);
    assert_eq!(read_secret(&server, "one"), VALUE_BASE64);
    for needle in [VALUE, VALUE_BASE64] {
        assert!(!found_in_files(
            &server.data_dir().join("server/db"),
            needle.as_bytes()
        ));
    }
    // Only the admin manages encryption.
    let denied = server.curl("/bonsai/v1/secrets-encryption", &[]);
    assert_eq!(denied.0, 401, "{denied:?}");
}
