//! Dynamic admission (kube-apiserver's MutatingAdmissionWebhook and ValidatingAdmissionWebhook plugins): each
//! write is sent as an AdmissionReview v1 to the webhooks whose configuration matches it (`webhook_match.rs`),
//! mutating ones in name order of their configurations then webhook order (JSONPatch answers applied, the
//! `IfNeeded` ones called once more when a later one changed the object), validating ones concurrently. A denial
//! is the webhook's Status (403 by default) with kube's `admission webhook "NAME" denied the request: ...`; a
//! failed call is a 500 under failurePolicy Fail and skipped under Ignore. Warnings the webhooks give are
//! collected for the response's `Warning` headers.

use std::sync::Mutex;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use embedded_store::{RangeRequest, Store};
use serde_json::{Value, json};

use super::webhook_client::{self, CallError, Endpoint};
use super::webhook_config::{self, GROUP};
use super::webhook_match::{self, Attributes};
use crate::resources::ApiError;
use crate::resources::registry::{self, ResourceType};

tokio::task_local! {
    static WARNINGS: Mutex<Vec<String>>;
}

/// Runs `f`, returning what it gives and the warnings webhooks gave meanwhile.
pub async fn collect_warnings<F: std::future::Future>(f: F) -> (F::Output, Vec<String>) {
    WARNINGS
        .scope(Mutex::new(Vec::new()), async move {
            let output = f.await;
            let warnings = WARNINGS
                .try_with(|w| w.lock().map(|w| w.clone()).unwrap_or_default())
                .unwrap_or_default();
            (output, warnings)
        })
        .await
}

fn add_warnings(warnings: &[String]) {
    let _ = WARNINGS.try_with(|w| {
        if let Ok(mut w) = w.lock() {
            w.extend(warnings.iter().cloned());
        }
    });
}

/// The write being admitted.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub resource: &'static ResourceType,
    pub subresource: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
    /// `CREATE`, `UPDATE` or `DELETE`.
    pub operation: &'static str,
    pub dry_run: bool,
}

impl Request<'_> {
    fn attributes(&self) -> Attributes<'_> {
        Attributes {
            operation: self.operation,
            group: self.resource.group,
            version: self.resource.version,
            resource: self.resource.plural,
            subresource: self.subresource,
            namespaced: self.resource.namespaced,
        }
    }

    /// Whether webhooks see this request at all: writes by the server itself (no client) and writes of the
    /// webhook configurations are not sent, as kube-apiserver never sends the latter.
    fn is_admitted(&self) -> bool {
        super::current().is_some()
            && !webhook_config::is_webhook_configuration(self.resource.group, self.resource.kind)
    }
}

/// The stored configurations of `kind` (the plural), in name order (their store key order).
async fn configurations(store: &dyn Store, plural: &str) -> Result<Vec<Value>, ApiError> {
    let listed = store
        .range(RangeRequest {
            prefix: Bytes::from(format!("/registry/{GROUP}/{plural}/")),
            ..RangeRequest::default()
        })
        .await?;
    Ok(listed
        .kvs
        .iter()
        .filter_map(|kv| serde_json::from_slice::<Value>(&kv.value).ok())
        .collect())
}

/// One webhook of a configuration that matched the request, with the version it is called in.
#[derive(Debug, Clone)]
struct Matched {
    webhook: Value,
    version: String,
}

async fn namespace_labels_of(store: &dyn Store, namespace: &str) -> Result<Option<Value>, ApiError> {
    let kv = store
        .get(Bytes::from(format!("/registry/core/namespaces/{namespace}")), 0)
        .await?
        .kv;
    Ok(kv.and_then(|kv| serde_json::from_slice(&kv.value).ok()))
}

/// The webhooks of `plural` that match: rules, then the namespace and object selectors.
async fn matching(
    store: &dyn Store,
    r: &Request<'_>,
    plural: &str,
    object: Option<&Value>,
    old: Option<&Value>,
) -> Result<Vec<Matched>, ApiError> {
    let attributes = r.attributes();
    let served = |version: &str| registry::find(r.resource.group, version, r.resource.plural).is_some();
    let mut namespace_object: Option<Option<Value>> = None;
    let mut matched = Vec::new();
    for configuration in configurations(store, plural).await? {
        for webhook in configuration
            .get("webhooks")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let Some(version) = webhook_match::matching_version(webhook, &attributes, &served) else {
                continue;
            };
            if webhook_match::namespace_selector_applies(&attributes, r.namespace) {
                let is_namespace = r.resource.group.is_empty() && r.resource.plural == "namespaces";
                let own = if is_namespace {
                    object.or(old).cloned()
                } else {
                    None
                };
                let labels_from = match own {
                    Some(own) => Some(own),
                    None => {
                        if namespace_object.is_none() {
                            namespace_object = Some(namespace_labels_of(store, r.namespace).await?);
                        }
                        namespace_object.clone().flatten()
                    }
                };
                if !webhook_match::namespace_selector_matches(webhook, labels_from.as_ref()) {
                    continue;
                }
            }
            if !webhook_match::object_selector_matches(webhook, object, old) {
                continue;
            }
            matched.push(Matched {
                webhook: webhook.clone(),
                version,
            });
        }
    }
    Ok(matched)
}

fn webhook_name(webhook: &Value) -> &str {
    webhook.get("name").and_then(Value::as_str).unwrap_or_default()
}

/// The object as the webhook's version shows it (built-in kinds have one version; a custom resource's other
/// versions differ only in apiVersion, as conversion `None` makes them).
fn in_version(object: Option<&Value>, group: &str, version: &str) -> Value {
    let Some(object) = object else {
        return Value::Null;
    };
    let mut object = object.clone();
    if let Some(map) = object.as_object_mut() {
        let api_version = if group.is_empty() {
            version.to_string()
        } else {
            format!("{group}/{version}")
        };
        map.insert("apiVersion".into(), json!(api_version));
    }
    object
}

fn review(r: &Request<'_>, uid: &str, version: &str, object: Option<&Value>, old: Option<&Value>) -> Value {
    let t = r.resource;
    let user = super::current()
        .map(|c| json!({"username": c.user.name, "uid": c.user.uid, "groups": c.user.groups}))
        .unwrap_or_else(|| json!({}));
    let options_kind = match r.operation {
        "CREATE" => "CreateOptions",
        "UPDATE" => "UpdateOptions",
        _ => "DeleteOptions",
    };
    let mut options = json!({"kind": options_kind, "apiVersion": "meta.k8s.io/v1"});
    if r.dry_run {
        options["dryRun"] = json!(["All"]);
    }
    let mut request = json!({
        "uid": uid,
        "kind": {"group": t.group, "version": version, "kind": t.kind},
        "resource": {"group": t.group, "version": version, "resource": t.plural},
        "requestKind": {"group": t.group, "version": t.version, "kind": t.kind},
        "requestResource": {"group": t.group, "version": t.version, "resource": t.plural},
        "name": r.name,
        "operation": r.operation,
        "userInfo": user,
        "object": in_version(object, t.group, version),
        "oldObject": in_version(old, t.group, version),
        "dryRun": r.dry_run,
        "options": options,
    });
    if !r.namespace.is_empty() {
        request["namespace"] = json!(r.namespace);
    }
    if !r.subresource.is_empty() {
        request["subResource"] = json!(r.subresource);
        request["requestSubResource"] = json!(r.subresource);
    }
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request})
}

/// Where the webhook is called: its url, or its service at one of the service's ready endpoints.
async fn endpoint_of(store: &dyn Store, webhook: &Value) -> Result<Endpoint, String> {
    let client = webhook.get("clientConfig").cloned().unwrap_or(Value::Null);
    if let Some(url) = client.get("url").and_then(Value::as_str) {
        return Endpoint::from_url(url);
    }
    let service = client.get("service").cloned().unwrap_or(Value::Null);
    let text = |field: &str| {
        service
            .get(field)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let (namespace, name, path) = (text("namespace"), text("name"), text("path"));
    let port = service.get("port").and_then(Value::as_i64).unwrap_or(443);
    let server_name = format!("{name}.{namespace}.svc");
    let url = format!(
        "https://{server_name}:{port}{}",
        if path.is_empty() { "/" } else { &path }
    );
    let (address, target_port) = super::webhook_service::resolve(store, &namespace, &name, port).await?;
    Ok(Endpoint {
        connect_host: address,
        port: target_port,
        server_name,
        path: if path.is_empty() { "/".into() } else { path },
        url,
    })
}

/// What a webhook answered.
#[derive(Debug)]
struct Answer {
    allowed: bool,
    status: Value,
    patch: Option<json_patch::Patch>,
    warnings: Vec<String>,
}

async fn call(
    store: &dyn Store,
    r: &Request<'_>,
    hook: &Matched,
    object: Option<&Value>,
    old: Option<&Value>,
) -> Result<Answer, CallError> {
    let webhook = &hook.webhook;
    let uid = crate::resources::new_uid();
    let review = review(r, &uid, &hook.version, object, old);
    let invalid = |detail: String| CallError::Response(detail);
    let endpoint = endpoint_of(store, webhook)
        .await
        .map_err(|detail| CallError::Call {
            url: String::new(),
            detail,
        })?;
    let ca_bundle = match webhook.pointer("/clientConfig/caBundle").and_then(Value::as_str) {
        Some(b64) => Some(
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|e| invalid(format!("invalid caBundle: {e}")))?,
        ),
        None => None,
    };
    let timeout = webhook
        .get("timeoutSeconds")
        .and_then(Value::as_u64)
        .unwrap_or(10);
    let answer = webhook_client::post(
        &endpoint,
        ca_bundle.as_deref(),
        &review,
        Duration::from_secs(timeout),
    )
    .await?;
    if answer.get("apiVersion").and_then(Value::as_str) != Some("admission.k8s.io/v1")
        || answer.get("kind").and_then(Value::as_str) != Some("AdmissionReview")
    {
        return Err(invalid(format!(
            "expected webhook response of admission.k8s.io/v1, Kind=AdmissionReview, got {}, Kind={}",
            answer
                .get("apiVersion")
                .and_then(Value::as_str)
                .unwrap_or_default(),
            answer.get("kind").and_then(Value::as_str).unwrap_or_default()
        )));
    }
    let response = answer
        .get("response")
        .ok_or_else(|| invalid("webhook response was absent".into()))?;
    let got_uid = response.get("uid").and_then(Value::as_str).unwrap_or_default();
    if got_uid != uid {
        return Err(invalid(format!(
            "expected response.uid=\"{uid}\", got \"{got_uid}\""
        )));
    }
    let patch = match response.get("patch").and_then(Value::as_str) {
        Some(b64) => {
            if response.get("patchType").and_then(Value::as_str) != Some("JSONPatch") {
                return Err(invalid(format!(
                    "expected patchType \"JSONPatch\", got {:?}",
                    response
                        .get("patchType")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                )));
            }
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|e| invalid(e.to_string()))?;
            Some(serde_json::from_slice(&bytes).map_err(|e| invalid(e.to_string()))?)
        }
        None => None,
    };
    Ok(Answer {
        allowed: response.get("allowed").and_then(Value::as_bool).unwrap_or(false),
        status: response.get("status").cloned().unwrap_or(Value::Null),
        patch,
        warnings: response
            .get("warnings")
            .and_then(Value::as_array)
            .map(|w| w.iter().filter_map(Value::as_str).map(String::from).collect())
            .unwrap_or_default(),
    })
}

/// `webhookerrors.ToStatusErr`: the webhook's Status, at least 400 (403 when it gave none), its message
/// prefixed with who denied the request.
fn denial(name: &str, status: &Value) -> ApiError {
    let mut status = match status {
        Value::Object(_) => status.clone(),
        _ => json!({}),
    };
    let code = status
        .get("code")
        .and_then(Value::as_u64)
        .filter(|c| *c >= 400)
        .unwrap_or(403);
    let denied_by = format!("admission webhook \"{name}\" denied the request");
    let message = status
        .get("message")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty());
    let reason = status
        .get("reason")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty());
    let message = match (message, reason) {
        (Some(m), _) | (None, Some(m)) => format!("{denied_by}: {m}"),
        _ => format!("{denied_by} without explanation"),
    };
    status["kind"] = json!("Status");
    status["apiVersion"] = json!("v1");
    status["status"] = json!("Failure");
    status["code"] = json!(code);
    status["message"] = json!(message);
    if status.get("metadata").is_none() {
        status["metadata"] = json!({});
    }
    ApiError::Status(status)
}

/// A failed call: `failed calling webhook "NAME": ...` as a 500 under failurePolicy Fail, nothing under Ignore.
fn failure(webhook: &Value, error: &CallError) -> Option<ApiError> {
    let message = format!("failed calling webhook \"{}\": {error}", webhook_name(webhook));
    if webhook.get("failurePolicy").and_then(Value::as_str) == Some("Ignore") {
        tracing::warn!(%message, "webhook failed, ignored (failurePolicy Ignore)");
        return None;
    }
    Some(ApiError::Status(json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": format!("Internal error occurred: {message}"), "reason": "InternalError",
        "details": {"causes": [{"message": message}]}, "code": 500,
    })))
}

/// A dry run reaches only webhooks without side effects (`NewDryRunUnsupportedErr`).
fn check_dry_run(r: &Request<'_>, webhook: &Value) -> Result<(), ApiError> {
    let side_effects = webhook.get("sideEffects").and_then(Value::as_str);
    if r.dry_run && !matches!(side_effects, Some("None" | "NoneOnDryRun")) {
        return Err(ApiError::BadRequest(format!(
            "admission webhook \"{}\" does not support dry run",
            webhook_name(webhook)
        )));
    }
    Ok(())
}

/// One mutating call: the object patched as the webhook says.
async fn mutate_once(
    store: &dyn Store,
    r: &Request<'_>,
    hook: &Matched,
    object: &mut Option<Value>,
    old: Option<&Value>,
) -> Result<bool, ApiError> {
    check_dry_run(r, &hook.webhook)?;
    let answer = match call(store, r, hook, object.as_ref(), old).await {
        Ok(answer) => answer,
        Err(e) => return failure(&hook.webhook, &e).map_or(Ok(false), Err),
    };
    add_warnings(&answer.warnings);
    if !answer.allowed {
        return Err(denial(webhook_name(&hook.webhook), &answer.status));
    }
    let (Some(patch), Some(current)) = (answer.patch, object.as_mut()) else {
        return Ok(false);
    };
    let mut patched = current.clone();
    if let Err(e) = json_patch::patch(&mut patched, &patch) {
        let error = CallError::Response(format!("JSON patch: {e}"));
        return failure(&hook.webhook, &error).map_or(Ok(false), Err);
    }
    let changed = patched != *current;
    *current = patched;
    Ok(changed)
}

/// The mutating webhooks, before the built-in admission: `object` (None for a delete) is patched in place.
pub async fn mutate(
    store: &dyn Store,
    r: &Request<'_>,
    object: Option<&mut Value>,
    old: Option<&Value>,
) -> Result<(), ApiError> {
    if !r.is_admitted() {
        return Ok(());
    }
    let mut current = object.as_deref().cloned();
    let hooks = matching(store, r, "mutatingwebhookconfigurations", current.as_ref(), old).await?;
    let mut last_change = None;
    for (i, hook) in hooks.iter().enumerate() {
        if mutate_once(store, r, hook, &mut current, old).await? {
            last_change = Some(i);
        }
    }
    // Reinvocation: an IfNeeded webhook called before the last change sees the object once more.
    if let Some(last) = last_change {
        for hook in hooks.iter().take(last) {
            if hook.webhook.get("reinvocationPolicy").and_then(Value::as_str) == Some("IfNeeded") {
                mutate_once(store, r, hook, &mut current, old).await?;
            }
        }
    }
    if let (Some(object), Some(current)) = (object, current) {
        *object = current;
    }
    Ok(())
}

/// The validating webhooks, after validation: all called concurrently, the first denial or failure (in
/// webhook order) returned.
pub async fn validate(
    store: &dyn Store,
    r: &Request<'_>,
    object: Option<&Value>,
    old: Option<&Value>,
) -> Result<(), ApiError> {
    if !r.is_admitted() {
        return Ok(());
    }
    let hooks = matching(store, r, "validatingwebhookconfigurations", object, old).await?;
    for hook in &hooks {
        check_dry_run(r, &hook.webhook)?;
    }
    let answers =
        futures_util::future::join_all(hooks.iter().map(|hook| call(store, r, hook, object, old))).await;
    for (hook, answer) in hooks.iter().zip(answers) {
        match answer {
            Ok(answer) => {
                add_warnings(&answer.warnings);
                if !answer.allowed {
                    return Err(denial(webhook_name(&hook.webhook), &answer.status));
                }
            }
            Err(e) => {
                if let Some(error) = failure(&hook.webhook, &e) {
                    return Err(error);
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denials_carry_the_webhooks_status() {
        let ApiError::Status(s) = denial("deny.example.com", &json!({"message": "no labels", "code": 400}))
        else {
            panic!("not a Status");
        };
        assert_eq!(s["code"], 400);
        assert_eq!(
            s["message"],
            "admission webhook \"deny.example.com\" denied the request: no labels"
        );
        let ApiError::Status(s) = denial("deny.example.com", &Value::Null) else {
            panic!("not a Status");
        };
        assert_eq!(s["code"], 403);
        assert_eq!(
            s["message"],
            "admission webhook \"deny.example.com\" denied the request without explanation"
        );
    }

    #[test]
    fn failures_follow_the_failure_policy() {
        let error = CallError::Call {
            url: "https://127.0.0.1:1/".into(),
            detail: "dial tcp 127.0.0.1:1: connection refused".into(),
        };
        assert!(failure(&json!({"name": "a.b.c", "failurePolicy": "Ignore"}), &error).is_none());
        let Some(ApiError::Status(s)) = failure(&json!({"name": "a.b.c", "failurePolicy": "Fail"}), &error)
        else {
            panic!("not a failure");
        };
        assert_eq!(s["code"], 500);
        assert_eq!(
            s["message"],
            "Internal error occurred: failed calling webhook \"a.b.c\": failed to call webhook: Post \"https://127.0.0.1:1/\": dial tcp 127.0.0.1:1: connection refused"
        );
    }

    #[test]
    fn dry_runs_need_webhooks_without_side_effects() {
        let r = Request {
            resource: &registry::RESOURCES[0],
            subresource: "",
            namespace: "",
            name: "x",
            operation: "CREATE",
            dry_run: true,
        };
        assert!(check_dry_run(&r, &json!({"name": "a.b.c", "sideEffects": "None"})).is_ok());
        assert!(check_dry_run(&r, &json!({"name": "a.b.c", "sideEffects": "NoneOnDryRun"})).is_ok());
        let Err(e) = check_dry_run(&r, &json!({"name": "a.b.c", "sideEffects": "Some"})) else {
            panic!("allowed");
        };
        assert_eq!(
            e.status()["message"],
            "admission webhook \"a.b.c\" does not support dry run"
        );
        assert_eq!(e.code().as_u16(), 400);
    }
}
