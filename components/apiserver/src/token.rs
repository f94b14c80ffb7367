//! The join token agents present, in k3s's format: `K10<sha256 of the CA bundle>::server:<secret>` (the
//! server's own) or `K10<sha256 of the CA bundle>::<id>.<secret>` (a bootstrap token, `bonsai token create`).
//! The hash lets an agent check the server's CA before it sends the secret; the secret stays the
//! same across restarts (and across a CA change, which only changes the hash).

use std::path::Path;

use sha2::{Digest, Sha256};

use crate::pki::{PkiError, write_file};

const PREFIX: &str = "K10";
const SEPARATOR: &str = "::server:";

/// The CA hash part of a join token.
pub fn ca_hash(ca_bundle_pem: &str) -> String {
    hex::encode(Sha256::digest(ca_bundle_pem.as_bytes()))
}

/// Splits a full token of either form into its CA hash and its credential (`server:<secret>` or
/// `<id>.<secret>`, what an agent sends as its bearer token once the CA is checked).
pub fn split(token: &str) -> Option<(&str, &str)> {
    let rest = token.trim().strip_prefix(PREFIX)?;
    let (hash, credential) = rest.split_once("::")?;
    (hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()) && !credential.is_empty())
        .then_some((hash, credential))
}

/// The credential part of a full token.
pub fn credential(token: &str) -> Option<&str> {
    split(token).map(|(_, credential)| credential)
}

/// The full token for `credential` on the cluster whose CA bundle is `ca_bundle_pem`.
pub fn full(ca_bundle_pem: &str, credential: &str) -> String {
    format!("{PREFIX}{}::{credential}", ca_hash(ca_bundle_pem))
}

/// Splits a full server token into its CA hash and secret.
pub fn parse(token: &str) -> Option<(&str, &str)> {
    let rest = token.trim().strip_prefix(PREFIX)?;
    let (hash, secret) = rest.split_once(SEPARATOR)?;
    (hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()) && !secret.is_empty())
        .then_some((hash, secret))
}

/// Loads the token kept at `path`, making it on first start.
pub fn load_or_create(path: &Path, ca_bundle_pem: &str) -> Result<String, PkiError> {
    load_or_create_with(path, ca_bundle_pem, None)
}

/// `load_or_create`, with the secret given (by `--token`) when `given` is set: the token file then holds it.
pub fn load_or_create_with(
    path: &Path,
    ca_bundle_pem: &str,
    given: Option<&str>,
) -> Result<String, PkiError> {
    let hash = ca_hash(ca_bundle_pem);
    let existing = std::fs::read_to_string(path).ok();
    let secret = match (given, existing.as_deref().and_then(parse)) {
        (None, Some((old_hash, secret))) if old_hash == hash => {
            return Ok(format!("{PREFIX}{hash}{SEPARATOR}{secret}"));
        }
        (Some(given), Some((old_hash, secret))) if old_hash == hash && secret == given => {
            return Ok(format!("{PREFIX}{hash}{SEPARATOR}{secret}"));
        }
        (Some(given), _) => given.to_string(),
        (None, Some((_, secret))) => secret.to_string(),
        (None, None) => new_secret(),
    };
    let token = format!("{PREFIX}{hash}{SEPARATOR}{secret}");
    write_file(path, format!("{token}\n").as_bytes(), 0o600)?;
    Ok(token)
}

/// A fresh random secret.
pub fn new_secret() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

/// The secret of the token kept at `path`, if there is one.
pub fn stored_secret(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    parse(&text).map(|(_, secret)| secret.to_string())
}

/// The secret a `--token` value carries: the full `K10<hash>::server:<secret>` form, or a bare secret, as k3s
/// accepts both. `None` for an empty value, whitespace inside, or a malformed `K10` token.
pub fn secret_of(token: &str) -> Option<&str> {
    let token = token.trim();
    if let Some((_, secret)) = parse(token) {
        return Some(secret);
    }
    let bare = !token.is_empty() && !token.starts_with("K10") && !token.contains(char::is_whitespace);
    bare.then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_stable_and_follow_the_ca() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        let t1 = load_or_create(&path, "CA one").unwrap();
        assert!(t1.starts_with("K10") && t1.contains("::server:"), "{t1}");
        assert_eq!(parse(&t1).unwrap().0, ca_hash("CA one"));
        assert_eq!(load_or_create(&path, "CA one").unwrap(), t1);
        let t2 = load_or_create(&path, "CA two").unwrap();
        assert_eq!(
            parse(&t2).unwrap().1,
            parse(&t1).unwrap().1,
            "the secret survives a CA change"
        );
        assert_eq!(parse(&t2).unwrap().0, ca_hash("CA two"));
        assert!(parse("K10abc::server:x").is_none());
        assert!(parse("hello").is_none());
        assert_eq!(
            credential(&t2),
            Some(&*format!("server:{}", parse(&t2).unwrap().1))
        );
        let bootstrap = full("CA two", "abcdef.0123456789abcdef");
        assert_eq!(
            split(&bootstrap),
            Some((&*ca_hash("CA two"), "abcdef.0123456789abcdef"))
        );
        assert!(split("K10abc::abcdef.x").is_none());
    }

    #[test]
    fn a_given_secret_is_kept_and_either_token_form_gives_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        let t = load_or_create_with(&path, "CA", Some("shared-secret")).unwrap();
        assert_eq!(parse(&t).unwrap().1, "shared-secret");
        assert_eq!(stored_secret(&path).as_deref(), Some("shared-secret"));
        assert_eq!(load_or_create(&path, "CA").unwrap(), t);
        assert_eq!(secret_of(&t), Some("shared-secret"));
        assert_eq!(secret_of(" plain "), Some("plain"));
        for bad in ["", "two words", "K10abc::server:x"] {
            assert_eq!(secret_of(bad), None, "{bad:?}");
        }
    }
}
