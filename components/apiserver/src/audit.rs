//! The audit log (`--audit-log-path`): one `audit.k8s.io/v1` `Event` per request at the `Metadata` level, as
//! kube-apiserver writes it with a Metadata policy: who (user, groups, impersonation), what (verb, URI, the
//! object's resource, namespace, name, group, version, subresource), from where (source IPs, user agent), the
//! authorization decision, and the response code, as JSON lines. Requests and responses' bodies are never written
//! (that is the Request level). Long-running requests (watches, exec, logs) are logged when their response starts
//! (`ResponseStarted`), every other one when it completes (`ResponseComplete`). Unauthenticated requests are
//! logged too, with the user `system:anonymous`, as kube-apiserver's filter sees them.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::{Value, json};

use crate::authn::UserInfo;
use crate::request_info::RequestInfo;

#[derive(Debug, thiserror::Error)]
#[error("cannot open the audit log {path}: {source}")]
pub struct AuditError {
    path: PathBuf,
    #[source]
    source: std::io::Error,
}

/// Where events go: a file appended to, or standard output for `-` (as kube-apiserver's `--audit-log-path -`).
pub struct AuditLog {
    out: Mutex<Box<dyn Write + Send>>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog").finish_non_exhaustive()
    }
}

impl AuditLog {
    pub fn open(path: &Path) -> Result<AuditLog, AuditError> {
        let out: Box<dyn Write + Send> = if path == Path::new("-") {
            Box::new(std::io::stdout())
        } else {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).map_err(|source| AuditError {
                    path: path.to_path_buf(),
                    source,
                })?;
            }
            use std::os::unix::fs::OpenOptionsExt;
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(path)
                .map_err(|source| AuditError {
                    path: path.to_path_buf(),
                    source,
                })?;
            Box::new(file)
        };
        Ok(AuditLog { out: Mutex::new(out) })
    }

    /// Writes one event as one line. A failed write is reported in the server's log, never to the client.
    pub(crate) fn write(&self, event: &Value) {
        let mut line = event.to_string();
        line.push('\n');
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = out.write_all(line.as_bytes()).and_then(|()| out.flush()) {
            tracing::warn!(error = %e, "cannot write the audit log");
        }
    }
}

/// What is known of a request when it arrives.
#[derive(Debug, Clone)]
pub(crate) struct AuditRecord {
    pub audit_id: String,
    pub received: String,
    pub request_uri: String,
    pub info: RequestInfo,
    pub user: Option<UserInfo>,
    pub impersonated: Option<UserInfo>,
    pub source_ip: Option<String>,
    pub user_agent: Option<String>,
    pub decision: Option<(bool, String)>,
}

/// Microsecond RFC 3339 time, as audit events carry (`metav1.MicroTime`).
pub(crate) fn micro_now() -> String {
    let now = time::OffsetDateTime::now_utc();
    let micros = now.microsecond();
    let base = now
        .replace_nanosecond(0)
        .unwrap_or(now)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    match base.strip_suffix('Z') {
        Some(seconds) => format!("{seconds}.{micros:06}Z"),
        None => base,
    }
}

fn user_json(user: &UserInfo) -> Value {
    let mut v = json!({"username": user.name, "groups": user.groups});
    if !user.uid.is_empty() {
        v["uid"] = json!(user.uid);
    }
    v
}

impl AuditRecord {
    /// The event at `stage`, with the response `code`.
    pub(crate) fn event(&self, stage: &str, code: u16) -> Value {
        let anonymous = UserInfo {
            name: "system:anonymous".into(),
            uid: String::new(),
            groups: vec!["system:unauthenticated".into()],
        };
        let mut event = json!({
            "kind": "Event",
            "apiVersion": "audit.k8s.io/v1",
            "level": "Metadata",
            "auditID": self.audit_id,
            "stage": stage,
            "requestURI": self.request_uri,
            "verb": self.info.verb,
            "user": user_json(self.user.as_ref().unwrap_or(&anonymous)),
            "sourceIPs": self.source_ip.iter().collect::<Vec<_>>(),
            "responseStatus": {"metadata": {}, "code": code},
            "requestReceivedTimestamp": self.received,
            "stageTimestamp": micro_now(),
        });
        if code >= 400 {
            event["responseStatus"]["status"] = json!("Failure");
        }
        if let Some(agent) = &self.user_agent {
            event["userAgent"] = json!(agent);
        }
        if let Some(impersonated) = &self.impersonated {
            event["impersonatedUser"] = user_json(impersonated);
        }
        if self.info.resource_request {
            let mut object = json!({"resource": self.info.resource, "apiVersion": self.info.version});
            for (field, value) in [
                ("namespace", &self.info.namespace),
                ("name", &self.info.name),
                ("apiGroup", &self.info.group),
                ("subresource", &self.info.subresource),
            ] {
                if !value.is_empty() {
                    object[field] = json!(value);
                }
            }
            event["objectRef"] = object;
        }
        if let Some((allowed, reason)) = &self.decision {
            let mut annotations =
                json!({"authorization.k8s.io/decision": if *allowed { "allow" } else { "forbid" }});
            if !reason.is_empty() {
                annotations["authorization.k8s.io/reason"] = json!(reason);
            }
            event["annotations"] = annotations;
        }
        event
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Method;

    #[test]
    fn events_have_kubes_shape() {
        let record = AuditRecord {
            audit_id: "0b4f".into(),
            received: micro_now(),
            request_uri: "/api/v1/namespaces/shop/secrets/db?timeout=32s".into(),
            info: RequestInfo::of(&Method::GET, "/api/v1/namespaces/shop/secrets/db", None),
            user: Some(UserInfo {
                name: "jane".into(),
                uid: String::new(),
                groups: vec!["dev".into(), "system:authenticated".into()],
            }),
            impersonated: None,
            source_ip: Some("127.0.0.1".into()),
            user_agent: Some("kubectl/v1.33.0".into()),
            decision: Some((false, String::new())),
        };
        let event = record.event("ResponseComplete", 403);
        assert_eq!(event["verb"], "get");
        assert_eq!(
            event["objectRef"],
            json!({"resource": "secrets", "namespace": "shop", "name": "db", "apiVersion": "v1"})
        );
        assert_eq!(event["responseStatus"]["code"], 403);
        assert_eq!(event["annotations"]["authorization.k8s.io/decision"], "forbid");
        assert_eq!(event["user"]["username"], "jane");
        assert!(event["stageTimestamp"].as_str().unwrap().ends_with('Z'));
        assert_eq!(
            event["requestReceivedTimestamp"].as_str().unwrap().len(),
            "2026-12-02T05:00:00.000000Z".len()
        );
    }
}
