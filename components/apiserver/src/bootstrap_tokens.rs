//! Bootstrap tokens, as kube-apiserver's `--enable-bootstrap-token-auth` (`plugin/pkg/auth/authenticator/token/
//! bootstrap`): a bearer `<id>.<secret>` (6 and 16 characters of `[a-z0-9]`) is checked against the Secret
//! `kube-system/bootstrap-token-<id>` of type `bootstrap.kubernetes.io/token`, which must allow authentication
//! (`usage-bootstrap-authentication: true`), not be expired nor being deleted; the user is
//! `system:bootstrap:<id>` in `system:bootstrappers` and the Secret's `auth-extra-groups`.
//!
//! The server's own join token (`K10<hash>::server:<secret>`) authenticates the same way, as
//! `system:bootstrap:server`, so that agents join with it as k3s agents do.

use base64::Engine;
use bytes::Bytes;
use embedded_store::Store;
use serde_json::Value;

use crate::authn::UserInfo;

pub const SECRET_TYPE: &str = "bootstrap.kubernetes.io/token";
pub const SECRET_PREFIX: &str = "bootstrap-token-";
pub const BOOTSTRAPPERS: &str = "system:bootstrappers";
pub const USER_PREFIX: &str = "system:bootstrap:";

/// `<id>.<secret>` split, when the token has that form.
pub fn parse(token: &str) -> Option<(&str, &str)> {
    let (id, secret) = token.split_once('.')?;
    let ok = |s: &str, len: usize| {
        s.len() == len && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    (ok(id, 6) && ok(secret, 16)).then_some((id, secret))
}

/// The user of a bootstrap token's Secret, `None` when it does not authenticate `secret` at `now` (Unix seconds).
pub fn user_of_secret(secret_object: &Value, id: &str, secret: &str, now: i64) -> Option<UserInfo> {
    if secret_object.get("type").and_then(Value::as_str) != Some(SECRET_TYPE) {
        return None;
    }
    if secret_object
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|v| !v.is_null())
    {
        return None;
    }
    let data = |key: &str| -> Option<String> {
        let encoded = secret_object.pointer(&format!("/data/{key}"))?.as_str()?;
        let bytes = base64::engine::general_purpose::STANDARD.decode(encoded).ok()?;
        String::from_utf8(bytes).ok()
    };
    if data("token-id")? != id {
        return None;
    }
    let stored = data("token-secret")?;
    // Compared in constant time, as kube's `subtle.ConstantTimeCompare`.
    if stored.len() != secret.len()
        || stored
            .bytes()
            .zip(secret.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            != 0
    {
        return None;
    }
    if data("usage-bootstrap-authentication").as_deref() != Some("true") {
        return None;
    }
    if let Some(expiration) = data("expiration") {
        let expires =
            time::OffsetDateTime::parse(&expiration, &time::format_description::well_known::Rfc3339)
                .ok()?
                .unix_timestamp();
        if expires <= now {
            return None;
        }
    }
    let mut groups = vec![BOOTSTRAPPERS.to_string()];
    if let Some(extra) = data("auth-extra-groups") {
        for group in extra.split(',').map(str::trim).filter(|g| !g.is_empty()) {
            // kube refuses the token when a group is outside `system:bootstrappers:`.
            if !group.starts_with("system:bootstrappers:") {
                return None;
            }
            groups.push(group.to_string());
        }
    }
    groups.push("system:authenticated".to_string());
    Some(UserInfo {
        name: format!("{USER_PREFIX}{id}"),
        uid: String::new(),
        groups,
    })
}

/// Authenticates a bearer `<id>.<secret>` against its Secret in the store.
pub async fn authenticate(store: &dyn Store, token: &str, now: i64) -> Option<UserInfo> {
    let (id, secret) = parse(token)?;
    let key = format!("/registry/core/secrets/kube-system/{SECRET_PREFIX}{id}");
    let kv = store.get(Bytes::from(key), 0).await.ok()?.kv?;
    let object: Value = serde_json::from_slice(&kv.value).ok()?;
    user_of_secret(&object, id, secret, now)
}

/// The user the server's own join token authenticates as.
pub fn server_token_user() -> UserInfo {
    UserInfo {
        name: format!("{USER_PREFIX}server"),
        uid: String::new(),
        groups: vec![BOOTSTRAPPERS.to_string(), "system:authenticated".to_string()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    fn secret(expiration: Option<&str>) -> Value {
        let mut data = serde_json::json!({
            "token-id": b64("abcdef"), "token-secret": b64("0123456789abcdef"),
            "usage-bootstrap-authentication": b64("true"), "auth-extra-groups": b64("system:bootstrappers:bonsai"),
        });
        if let Some(e) = expiration {
            data["expiration"] = Value::String(b64(e));
        }
        serde_json::json!({"type": SECRET_TYPE, "metadata": {"name": "bootstrap-token-abcdef"}, "data": data})
    }

    #[test]
    fn tokens_authenticate_as_bootstrappers_until_they_expire() {
        assert_eq!(
            parse("abcdef.0123456789abcdef"),
            Some(("abcdef", "0123456789abcdef"))
        );
        assert_eq!(parse("ABCDEF.0123456789abcdef"), None);
        assert_eq!(parse("abcdef.short"), None);
        let user = user_of_secret(&secret(None), "abcdef", "0123456789abcdef", 0).unwrap();
        assert_eq!(user.name, "system:bootstrap:abcdef");
        assert_eq!(
            user.groups,
            [
                "system:bootstrappers",
                "system:bootstrappers:bonsai",
                "system:authenticated"
            ]
        );
        assert!(user_of_secret(&secret(None), "abcdef", "0123456789abcdeX", 0).is_none());
        let expiring = secret(Some("2030-01-01T00:00:00Z"));
        assert!(user_of_secret(&expiring, "abcdef", "0123456789abcdef", 1_800_000_000).is_some());
        assert!(user_of_secret(&expiring, "abcdef", "0123456789abcdef", 1_900_000_000).is_none());
        let mut wrong_type = secret(None);
        wrong_type["type"] = Value::String("Opaque".into());
        assert!(user_of_secret(&wrong_type, "abcdef", "0123456789abcdef", 0).is_none());
    }
}
