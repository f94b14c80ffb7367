//! kube-apiserver's CertificateSigningRequest strategy (`pkg/registry/certificates/certificates/strategy.go`) and
//! its validation: the requester's identity is recorded from the authenticated user at create (never from the
//! body), the spec never changes after, `/approval` writes only the Approved/Denied/Failed conditions, and
//! `/status` writes the certificate and the other conditions, never approval.

use base64::Engine;
use serde_json::{Value, json};

use super::errors::{ApiError, FieldError};
use super::registry::ResourceType;
use crate::authn::UserInfo;

pub const KIND: &str = "CertificateSigningRequest";

/// The condition types only `/approval` may write.
const APPROVAL_CONDITIONS: [&str; 2] = ["Approved", "Denied"];

fn invalid(resource: &'static ResourceType, name: &str, causes: Vec<FieldError>) -> ApiError {
    ApiError::Invalid {
        resource,
        name: name.to_string(),
        causes,
    }
}

fn cause(field: &str, reason: &'static str, message: impl Into<String>) -> FieldError {
    FieldError {
        field: field.to_string(),
        reason,
        message: message.into(),
    }
}

fn name_of(object: &Value) -> &str {
    object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// `PrepareForCreate` and `ValidateCertificateSigningRequestCreate`: the requester from the request's user, no
/// status, and a spec that can be signed.
pub fn prepare_create(
    resource: &'static ResourceType,
    object: &mut Value,
    user: Option<&UserInfo>,
) -> Result<(), ApiError> {
    if let Some(map) = object.as_object_mut() {
        map.remove("status");
    }
    if !object.get("spec").is_some_and(Value::is_object) {
        object["spec"] = json!({});
    }
    let spec = &mut object["spec"];
    match user {
        Some(user) => {
            spec["username"] = json!(user.name);
            spec["groups"] = json!(user.groups);
            if user.uid.is_empty() {
                if let Some(map) = spec.as_object_mut() {
                    map.remove("uid");
                }
            } else {
                spec["uid"] = json!(user.uid);
            }
        }
        None => {
            if let Some(map) = spec.as_object_mut() {
                for field in ["username", "uid", "groups", "extra"] {
                    map.remove(field);
                }
            }
        }
    }
    let mut causes = Vec::new();
    match spec.get("request").and_then(Value::as_str) {
        None | Some("") => causes.push(cause("spec.request", "FieldValueRequired", "Required value")),
        Some(encoded) => {
            if let Err(problem) = request_der(encoded) {
                causes.push(cause(
                    "spec.request",
                    "FieldValueInvalid",
                    format!("Invalid value: \"<binary>\": {problem}"),
                ));
            }
        }
    }
    match spec.get("signerName").and_then(Value::as_str) {
        None | Some("") => causes.push(cause("spec.signerName", "FieldValueRequired", "Required value")),
        Some(signer) if !signer.contains('/') => causes.push(cause(
            "spec.signerName",
            "FieldValueInvalid",
            format!("Invalid value: {signer:?}: must be a fully qualified domain and path of the form 'example.com/signer-name'"),
        )),
        Some(_) => {}
    }
    match spec.get("usages").and_then(Value::as_array) {
        Some(usages) if !usages.is_empty() => {}
        _ => causes.push(cause("spec.usages", "FieldValueRequired", "Required value")),
    }
    if let Some(seconds) = spec.get("expirationSeconds").and_then(Value::as_i64)
        && seconds < 600
    {
        causes.push(cause(
            "spec.expirationSeconds",
            "FieldValueInvalid",
            format!(
                "Invalid value: {seconds}: may not specify a duration less than 600 seconds (10 minutes)"
            ),
        ));
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(invalid(resource, name_of(object), causes))
    }
}

/// The DER of the PEM `CERTIFICATE REQUEST` in `spec.request` (base64 of the PEM, as JSON carries `[]byte`).
pub fn request_der(encoded: &str) -> Result<Vec<u8>, String> {
    let pem = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|_| "not base64".to_string())?;
    let (_, block) =
        x509_parser::pem::parse_x509_pem(&pem).map_err(|_| "PEM block type must be CERTIFICATE REQUEST")?;
    if block.label != "CERTIFICATE REQUEST" && block.label != "NEW CERTIFICATE REQUEST" {
        return Err("PEM block type must be CERTIFICATE REQUEST".into());
    }
    Ok(block.contents)
}

fn conditions(object: &Value) -> Vec<Value> {
    object
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn condition_type(condition: &Value) -> &str {
    condition.get("type").and_then(Value::as_str).unwrap_or_default()
}

fn is_approval(condition: &Value) -> bool {
    APPROVAL_CONDITIONS.contains(&condition_type(condition))
}

/// An update of a CertificateSigningRequest: `subresource` is `None` for the object itself (whose spec and
/// status are kept: only metadata changes), `status` or `approval`. `new` already holds `current`'s spec (the
/// caller's status split) or is rewritten here to.
pub fn prepare_update(
    resource: &'static ResourceType,
    subresource: Option<&str>,
    current: &Value,
    new: &mut Value,
) -> Result<(), ApiError> {
    new["spec"] = current.get("spec").cloned().unwrap_or(json!({}));
    let now = super::objects::now_rfc3339();
    let old_conditions = conditions(current);
    let mut new_conditions = conditions(new);
    for condition in &mut new_conditions {
        for field in ["lastUpdateTime", "lastTransitionTime"] {
            if condition.get(field).is_none_or(Value::is_null) {
                condition[field] = json!(now);
            }
        }
    }
    match subresource {
        Some("approval") => {
            // Approval writes conditions only; the certificate stays what it was.
            let mut status = current.get("status").cloned().unwrap_or(json!({}));
            status["conditions"] = json!(new_conditions);
            new["status"] = status;
        }
        Some("status") => {
            // The status writer may not approve or deny: those conditions stay as they were.
            let mut merged: Vec<Value> = new_conditions.into_iter().filter(|c| !is_approval(c)).collect();
            merged.extend(old_conditions.iter().filter(|c| is_approval(c)).cloned());
            if !new.get("status").is_some_and(Value::is_object) {
                new["status"] = json!({});
            }
            new["status"]["conditions"] = json!(merged);
        }
        _ => {
            new["status"] = current.get("status").cloned().unwrap_or(json!({}));
        }
    }
    validate_status(resource, current, new)
}

/// `validateCertificateSigningRequestStatus` and the update rules: Approved and Denied exclude each other, are
/// only `True`, and are never removed; a certificate needs approval and never changes once issued.
fn validate_status(resource: &'static ResourceType, current: &Value, new: &Value) -> Result<(), ApiError> {
    let mut causes = Vec::new();
    let new_conditions = conditions(new);
    let has = |list: &[Value], kind: &str| list.iter().any(|c| condition_type(c) == kind);
    for (i, condition) in new_conditions.iter().enumerate() {
        if condition_type(condition).is_empty() {
            causes.push(cause(
                &format!("status.conditions[{i}].type"),
                "FieldValueRequired",
                "Required value",
            ));
        }
        if is_approval(condition) && condition.get("status").and_then(Value::as_str) != Some("True") {
            causes.push(cause(
                &format!("status.conditions[{i}].status"),
                "FieldValueNotSupported",
                format!(
                    "Unsupported value: {}: supported values: \"True\"",
                    condition.get("status").unwrap_or(&Value::Null)
                ),
            ));
        }
    }
    if has(&new_conditions, "Approved") && has(&new_conditions, "Denied") {
        causes.push(cause(
            "status.conditions",
            "FieldValueInvalid",
            "Invalid value: \"Approved\": Approved and Denied conditions are mutually exclusive",
        ));
    }
    for kind in APPROVAL_CONDITIONS {
        if has(&conditions(current), kind) && !has(&new_conditions, kind) {
            causes.push(cause(
                "status.conditions",
                "FieldValueForbidden",
                format!("Forbidden: updates may not remove a condition of type {kind:?}"),
            ));
        }
    }
    let old_certificate = current.pointer("/status/certificate").and_then(Value::as_str);
    let new_certificate = new.pointer("/status/certificate").and_then(Value::as_str);
    if let Some(certificate) = new_certificate.filter(|c| !c.is_empty()) {
        if !has(&new_conditions, "Approved") || has(&new_conditions, "Failed") {
            causes.push(cause(
                "status.certificate",
                "FieldValueInvalid",
                "Invalid value: \"<certificate data>\": certificate may only be set if the Approved condition is true and Failed is not",
            ));
        }
        if old_certificate.is_some_and(|old| !old.is_empty() && old != certificate) {
            causes.push(cause(
                "status.certificate",
                "FieldValueForbidden",
                "Forbidden: updates may not modify existing certificate content",
            ));
        }
    } else if old_certificate.is_some_and(|old| !old.is_empty()) {
        causes.push(cause(
            "status.certificate",
            "FieldValueForbidden",
            "Forbidden: updates may not modify existing certificate content",
        ));
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(invalid(resource, name_of(current), causes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource() -> &'static ResourceType {
        super::super::registry::find("certificates.k8s.io", "v1", "certificatesigningrequests").unwrap()
    }

    fn request() -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["n1".to_string()]).unwrap();
        let pem = params.serialize_request(&key).unwrap().pem().unwrap();
        base64::engine::general_purpose::STANDARD.encode(pem)
    }

    fn user() -> UserInfo {
        UserInfo {
            name: "system:bootstrap:abcdef".into(),
            uid: String::new(),
            groups: vec!["system:bootstrappers".into(), "system:authenticated".into()],
        }
    }

    #[test]
    fn the_requester_comes_from_the_user_not_the_body() {
        let mut csr = json!({"metadata": {"name": "c"}, "spec": {"request": request(), "signerName": "kubernetes.io/kube-apiserver-client-kubelet", "usages": ["client auth"], "username": "system:admin", "groups": ["system:masters"]}, "status": {"certificate": "eA=="}});
        prepare_create(resource(), &mut csr, Some(&user())).unwrap();
        assert_eq!(csr["spec"]["username"], "system:bootstrap:abcdef");
        assert_eq!(csr["spec"]["groups"][0], "system:bootstrappers");
        assert!(csr.get("status").is_none());
        let mut bad = json!({"metadata": {"name": "c"}, "spec": {"request": "bm90IGEgcmVxdWVzdA==", "expirationSeconds": 60}});
        let Err(ApiError::Invalid { causes, .. }) = prepare_create(resource(), &mut bad, Some(&user()))
        else {
            panic!("accepted")
        };
        let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.request",
                "spec.signerName",
                "spec.usages",
                "spec.expirationSeconds"
            ]
        );
    }

    #[test]
    fn approval_and_status_write_their_own_parts() {
        let current = json!({"metadata": {"name": "c"}, "spec": {"request": "x", "usages": ["client auth"]}});
        // The status writer cannot approve, nor issue before approval.
        let mut new = json!({"metadata": {"name": "c"}, "spec": {"request": "changed"}, "status": {"conditions": [{"type": "Approved", "status": "True"}], "certificate": "Y2VydA=="}});
        assert!(prepare_update(resource(), Some("status"), &current, &mut new).is_err());
        // Approval writes conditions, never the spec or the certificate.
        let mut approved = json!({"metadata": {"name": "c"}, "spec": {"request": "changed"}, "status": {"conditions": [{"type": "Approved", "status": "True", "reason": "AutoApproved"}], "certificate": "Y2VydA=="}});
        prepare_update(resource(), Some("approval"), &current, &mut approved).unwrap();
        assert_eq!(approved["spec"]["request"], "x");
        assert!(approved["status"].get("certificate").is_none());
        assert!(approved["status"]["conditions"][0]["lastUpdateTime"].is_string());
        // Once approved, a certificate may be issued, and then never changed; approval is never taken back.
        let mut issued = approved.clone();
        issued["status"]["certificate"] = json!("Y2VydA==");
        prepare_update(resource(), Some("status"), &approved, &mut issued).unwrap();
        let mut changed = issued.clone();
        changed["status"]["certificate"] = json!("b3RoZXI=");
        assert!(prepare_update(resource(), Some("status"), &issued, &mut changed).is_err());
        let mut denied = issued.clone();
        denied["status"]["conditions"] = json!([{"type": "Denied", "status": "True"}]);
        assert!(prepare_update(resource(), Some("approval"), &issued, &mut denied).is_err());
    }
}
