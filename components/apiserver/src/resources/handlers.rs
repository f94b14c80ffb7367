//! One code path for every kind: parse the URL, then create, get, list, update, patch, delete
//! or watch over the store.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use embedded_store::{DeleteOutcome, RangeRequest, Store, WriteOutcome};
use serde_json::{Value, json};

use super::errors::{ApiError, FieldError};
use super::objects::{self, meta_str, remove_meta, set_meta};
use super::registry::{self, ResourceType};
use super::selectors::{FieldSelector, LabelSelector};
use super::watch_cache::WatchCaches;
use super::{certificates, custom, defaults, discovery, services, tables, validation, watch};
use crate::admission::{webhook, webhook_config};
use crate::patch::managed::{self, Manager};

/// The most a request body may hold, as kube-apiserver allows.
const MAX_BODY: usize = 3 * 1024 * 1024;

/// A request for objects of one resource.
#[derive(Clone, Debug)]
pub struct Target {
    pub resource: &'static ResourceType,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

enum Route {
    Discovery(discovery::Path),
    Resource(Target),
}

fn route(path: &str) -> Option<Route> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api"] => return Some(Route::Discovery(discovery::Path::Core)),
        ["api", v] => {
            return Some(Route::Discovery(discovery::Path::GroupVersion(
                String::new(),
                v.to_string(),
            )));
        }
        ["apis"] => return Some(Route::Discovery(discovery::Path::Groups)),
        ["apis", g] => return Some(Route::Discovery(discovery::Path::Group(g.to_string()))),
        ["apis", g, v] => {
            return Some(Route::Discovery(discovery::Path::GroupVersion(
                g.to_string(),
                v.to_string(),
            )));
        }
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return None,
    };
    let owned = |s: Option<&&str>| s.map(|s| s.to_string());
    let target = match rest {
        ["namespaces", ns, plural, tail @ ..] if !matches!(*plural, "status" | "finalize") => {
            let resource = registry::find(group, version, plural).filter(|r| r.namespaced)?;
            if tail.len() > 2 {
                return None;
            }
            Target {
                resource,
                namespace: Some(ns.to_string()),
                name: owned(tail.first()),
                subresource: owned(tail.get(1)),
            }
        }
        [plural, tail @ ..] => {
            let resource = registry::find(group, version, plural)?;
            if tail.len() > 2 || (resource.namespaced && !tail.is_empty()) {
                return None;
            }
            Target {
                resource,
                namespace: None,
                name: owned(tail.first()),
                subresource: owned(tail.get(1)),
            }
        }
        [] => return None,
    };
    if let Some(sub) = &target.subresource
        && !target.resource.has_subresource(sub)
    {
        return None;
    }
    Some(Route::Resource(target))
}

/// Query parameters, decoded.
#[derive(Debug, Default)]
pub struct Query(Vec<(String, String)>);

impl Query {
    pub fn parse(raw: Option<&str>) -> Query {
        let pairs = form_urlencoded::parse(raw.unwrap_or("").as_bytes()).into_owned();
        Query(pairs.collect())
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    pub fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true" | "1"))
    }
}

/// Serves `/api/...` and `/apis/...`.
#[allow(clippy::too_many_arguments)] // the request's parts and its user, each used by some verb
pub async fn dispatch(
    store: Arc<dyn Store>,
    watches: Arc<WatchCaches>,
    method: Method,
    path: &str,
    raw_query: Option<&str>,
    headers: &HeaderMap,
    body: Body,
    user: Option<&crate::authn::UserInfo>,
) -> Response {
    let query = Query::parse(raw_query);
    let target = match route(path) {
        None => return crate::status::not_found(),
        Some(Route::Discovery(p)) => return discovery::serve(p, headers),
        Some(Route::Resource(target)) => target,
    };
    let deprecation = custom::served(target.resource).and_then(|s| s.deprecation.clone());
    let (result, webhook_warnings) = webhook::collect_warnings(handle(
        &*store,
        store.clone(),
        watches,
        method,
        target,
        query,
        headers,
        body,
        user,
    ))
    .await;
    // Every request for a deprecated custom resource version gets its warning, as kube-apiserver adds it.
    let response = with_warnings(result.unwrap_or_else(|e| e.response()), deprecation.as_slice());
    with_warnings(response, &webhook_warnings)
}

#[allow(clippy::too_many_arguments)] // the request's parts, each used by some verb
async fn handle(
    store: &dyn Store,
    shared: Arc<dyn Store>,
    watches: Arc<WatchCaches>,
    method: Method,
    t: Target,
    q: Query,
    headers: &HeaderMap,
    body: Body,
    user: Option<&crate::authn::UserInfo>,
) -> Result<Response, ApiError> {
    let sub = t.subresource.as_deref();
    if let Some(s @ ("log" | "exec" | "attach" | "portforward" | "proxy")) = sub {
        return Err(ApiError::ServiceUnavailable(format!(
            "{}/{s} is served by the node agent, which this version of bonsai does not run yet",
            t.resource.plural
        )));
    }
    match (&method, sub) {
        (&Method::GET, Some("scale")) => {
            return get(store, &t)
                .await
                .map(|(o, _)| ok(StatusCode::OK, &scale_of(&t, &o)));
        }
        (&Method::PUT | &Method::PATCH, Some("scale")) => {
            return scale(store, &t, &q, &method, headers, body).await;
        }
        (&Method::POST, Some("binding")) => return bind(store, &t, headers, body).await,
        (&Method::PUT, Some("finalize")) if t.resource.kind == "Namespace" => {
            return finalize_namespace(store, &t, headers, body).await;
        }
        (&Method::POST, Some("eviction")) => return evict(store, &t, &q, headers, body).await,
        _ => {}
    }
    if let Some(s @ ("scale" | "binding" | "eviction" | "token" | "finalize")) = sub {
        return Err(ApiError::MethodNotAllowed(format!(
            "{}/{s} is not served by this version of bonsai yet",
            t.resource.plural
        )));
    }
    match (method, t.name.is_some()) {
        (Method::GET, false) if q.flag("watch") => {
            watch::serve(shared, watches, t, q, tables::requested_version(headers)).await
        }
        (Method::GET, false) => list(store, &t, &q, headers).await,
        (Method::GET, true) => {
            let (object, _) = get(store, &t).await?;
            Ok(match tables::requested_version(headers) {
                Some(version) => {
                    let rv = object
                        .pointer("/metadata/resourceVersion")
                        .cloned()
                        .unwrap_or(Value::Null);
                    let list_metadata = json!({"resourceVersion": rv});
                    let table = tables::table(
                        t.resource,
                        version,
                        &[object],
                        list_metadata,
                        q.get("includeObject"),
                    );
                    ok(StatusCode::OK, &table)
                }
                None => ok(StatusCode::OK, &object),
            })
        }
        (Method::POST, false) => create(store, &t, &q, headers, body, user).await,
        (Method::PUT, true) => update(store, &t, &q, headers, body).await,
        (Method::PATCH, true) => patch(store, &t, &q, headers, body).await,
        (Method::DELETE, true) => delete(store, &t, &q, delete_options(headers, body).await?).await,
        (Method::DELETE, false) => delete_collection(store, &t, &q).await,
        (m, _) => Err(ApiError::MethodNotAllowed(format!(
            "the server does not allow this method on the requested resource: {m}"
        ))),
    }
}

/// A 422 with one field cause.
fn invalid_field(t: &Target, field: &str, reason: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::Invalid {
        resource: t.resource,
        name: name_of(t).to_string(),
        causes: vec![FieldError {
            field: field.to_string(),
            reason,
            message: message.into(),
        }],
    }
}

/// The object as written at `revision`.
fn at_revision(mut object: Value, revision: i64) -> Value {
    set_meta(
        &mut object,
        "resourceVersion",
        Value::String(revision.to_string()),
    );
    object
}

pub fn ok(code: StatusCode, object: &Value) -> Response {
    crate::status::json(code, object)
}

fn name_of(t: &Target) -> &str {
    t.name.as_deref().unwrap_or_default()
}

fn key_of(t: &Target, name: &str) -> String {
    objects::key(t.resource, t.namespace.as_deref(), name)
}

/// The object and its mod revision.
pub async fn get(store: &dyn Store, t: &Target) -> Result<(Value, i64), ApiError> {
    let name = name_of(t).to_string();
    let response = store.get(Bytes::from(key_of(t, &name)), 0).await?;
    let kv = response.kv.ok_or(ApiError::NotFound {
        resource: t.resource,
        name: name.clone(),
    })?;
    let mut object = objects::decode(&kv.value, kv.mod_revision)
        .ok_or_else(|| ApiError::Internal(format!("stored {} {name} does not decode", t.resource.kind)))?;
    if let Some(served) = custom::served(t.resource) {
        custom::on_read(&served, &mut object);
    }
    Ok((object, kv.mod_revision))
}

/// The bytes an object is stored as: custom resources in their storage version.
fn stored_bytes(t: &Target, object: &Value) -> Bytes {
    match custom::served(t.resource) {
        Some(served) => Bytes::from(objects::encode(&custom::for_storage(&served, object))),
        None => Bytes::from(objects::encode(object)),
    }
}

async fn read_body(body: Body) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, MAX_BODY)
        .await
        .map_err(|_| ApiError::TooLarge)
}

fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
        .unwrap_or_default()
}

/// Decodes a JSON, YAML or Kubernetes protobuf object body.
fn decode_body(headers: &HeaderMap, bytes: &[u8]) -> Result<Value, ApiError> {
    let value: Value = match content_type(headers).as_str() {
        "" | "application/json" => serde_json::from_slice(bytes)
            .map_err(|e| ApiError::BadRequest(format!("the request body is not valid JSON: {e}")))?,
        "application/yaml" | "application/x-yaml" | "text/yaml" => {
            let text = std::str::from_utf8(bytes)
                .map_err(|_| ApiError::BadRequest("the request body is not UTF-8".into()))?;
            serde_saphyr::from_str(text)
                .map_err(|e| ApiError::BadRequest(format!("the request body is not valid YAML: {e}")))?
        }
        "application/vnd.kubernetes.protobuf" => crate::protobuf::decode(bytes)
            .map_err(|e| ApiError::BadRequest(format!("the request body is not valid protobuf: {e}")))?,
        other => {
            return Err(ApiError::UnsupportedMediaType(format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf (got {other})"
            )));
        }
    };
    if !value.is_object() {
        return Err(ApiError::BadRequest(
            "the request body must be a JSON object".into(),
        ));
    }
    Ok(value)
}

/// Checks (and fills in) apiVersion and kind against the URL's resource.
fn check_type(t: &Target, object: &mut Value) -> Result<(), ApiError> {
    let expected = t.resource.api_version();
    match object.get("apiVersion").and_then(Value::as_str) {
        Some(v) if v != expected => {
            return Err(ApiError::BadRequest(format!(
                "the API version in the data ({v}) does not match the expected API version ({expected})"
            )));
        }
        _ => object["apiVersion"] = Value::String(expected),
    }
    match object.get("kind").and_then(Value::as_str) {
        Some(k) if k != t.resource.kind => {
            return Err(ApiError::BadRequest(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                t.resource.kind
            )));
        }
        _ => object["kind"] = Value::String(t.resource.kind.into()),
    }
    Ok(())
}

/// Structure (via the kind's type) and metadata rules; 400 for a body of the wrong shape, 422
/// for invalid values.
fn validate(t: &Target, name: &str, object: &Value) -> Result<(), ApiError> {
    (t.resource.check)(object).map_err(|e| {
        ApiError::BadRequest(format!(
            "{} in version \"{}\" cannot be handled as a {}: {e}",
            t.resource.kind, t.resource.version, t.resource.kind
        ))
    })?;
    let mut causes = object
        .get("metadata")
        .map(|m| validation::validate_metadata(t.resource.names, m))
        .unwrap_or_default();
    if t.resource.kind == "CronJob" {
        causes.extend(validation::validate_cronjob_spec(object));
    }
    if let Some(served) = custom::served(t.resource) {
        causes.extend(custom::validate(&served, object));
    }
    if custom::crd::is_crd(t.resource.group, t.resource.kind) {
        causes.extend(custom::crd::validate(object));
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::Invalid {
            resource: t.resource,
            name: name.to_string(),
            causes,
        })
    }
}

/// A webhook configuration's own validation; an update may keep the `sideEffects` v1 no longer accepts when the
/// old object had them (kube's `allowInvalidSideEffects`).
fn validate_webhook_configuration(
    t: &Target,
    name: &str,
    object: &Value,
    old: Option<&Value>,
) -> Result<(), ApiError> {
    if !webhook_config::is_webhook_configuration(t.resource.group, t.resource.kind) {
        return Ok(());
    }
    let causes = webhook_config::validate(t.resource.kind, object, old);
    if causes.is_empty() {
        return Ok(());
    }
    Err(ApiError::Invalid {
        resource: t.resource,
        name: name.to_string(),
        causes,
    })
}

fn dry_run(q: &Query) -> bool {
    q.get("dryRun") == Some("All")
}

/// The write as admission webhooks see it.
fn webhook_request<'a>(
    t: &'a Target,
    name: &'a str,
    operation: &'static str,
    dry: bool,
) -> webhook::Request<'a> {
    webhook::Request {
        resource: t.resource,
        subresource: t.subresource.as_deref().unwrap_or_default(),
        namespace: t.namespace.as_deref().unwrap_or_default(),
        name,
        operation,
        dry_run: dry,
    }
}

async fn namespace_must_accept(store: &dyn Store, namespace: &str) -> Result<(), ApiError> {
    let Some(ns_type) = registry::find("", "v1", "namespaces") else {
        return Ok(());
    };
    let key = objects::key(ns_type, None, namespace);
    let kv = store
        .get(Bytes::from(key), 0)
        .await?
        .kv
        .ok_or_else(|| ApiError::NamespaceNotFound(namespace.to_string()))?;
    let ns: Value = serde_json::from_slice(&kv.value).unwrap_or_default();
    if ns.pointer("/metadata/deletionTimestamp").is_some() {
        return Err(ApiError::Forbidden(format!(
            "unable to create new content in namespace {namespace} because it is being terminated"
        )));
    }
    Ok(())
}

/// Defaults Kubernetes applies at creation that other parts of bonsai rely on.
fn apply_create_defaults(resource: &ResourceType, object: &mut Value) {
    defaults::apply(resource.group, resource.kind, object);
    match resource.kind {
        "Namespace" => {
            // Kubernetes labels every namespace with its own name, so selectors can pick namespaces by name.
            if let Some(name) = meta_str(object, "name").map(String::from) {
                if !object.pointer("/metadata/labels").is_some_and(Value::is_object) {
                    object["metadata"]["labels"] = json!({});
                }
                object["metadata"]["labels"]["kubernetes.io/metadata.name"] = Value::String(name);
            }
            if object.pointer("/spec/finalizers").is_none() {
                object["spec"] = json!({"finalizers": ["kubernetes"]});
            }
            object["status"] = json!({"phase": "Active"});
        }
        "Secret" if object.get("type").is_none() => object["type"] = json!("Opaque"),
        "Pod" => {
            default_toleration_seconds(object);
            if object.pointer("/status/phase").is_none() {
                object["status"] = json!({"phase": "Pending"});
            }
        }
        "Job" => default_job(object),
        "PersistentVolume" | "PersistentVolumeClaim" => default_volume_or_claim(resource.kind, object),
        "StorageClass" => {
            // `SetDefaults_StorageClass`.
            if object.get("reclaimPolicy").is_none() {
                object["reclaimPolicy"] = json!("Delete");
            }
            if object.get("volumeBindingMode").is_none() {
                object["volumeBindingMode"] = json!("Immediate");
            }
        }
        _ => {}
    }
}

/// kube-apiserver's PersistentVolume and PersistentVolumeClaim defaults (`volumeMode: Filesystem`, a PV's
/// `persistentVolumeReclaimPolicy: Retain`), its create strategy (status reset to phase Pending), and the
/// StorageObjectInUseProtection admission plugin's finalizer (`kubernetes.io/pv-protection` or
/// `kubernetes.io/pvc-protection`), which the volume controllers remove once the object is no longer in use.
fn default_volume_or_claim(kind: &str, object: &mut Value) {
    if !object.get("spec").is_some_and(Value::is_object) {
        object["spec"] = json!({});
    }
    let spec = &mut object["spec"];
    if spec.get("volumeMode").is_none() {
        spec["volumeMode"] = json!("Filesystem");
    }
    let finalizer = if kind == "PersistentVolume" {
        if spec.get("persistentVolumeReclaimPolicy").is_none() {
            spec["persistentVolumeReclaimPolicy"] = json!("Retain");
        }
        object["status"] = json!({"phase": "Pending", "lastPhaseTransitionTime": objects::now_rfc3339()});
        "kubernetes.io/pv-protection"
    } else {
        object["status"] = json!({"phase": "Pending"});
        "kubernetes.io/pvc-protection"
    };
    if !object
        .pointer("/metadata/finalizers")
        .is_some_and(Value::is_array)
    {
        object["metadata"]["finalizers"] = json!([]);
    }
    if let Some(finalizers) = object["metadata"]["finalizers"].as_array_mut()
        && !finalizers.iter().any(|f| f == finalizer)
    {
        finalizers.push(json!(finalizer));
    }
}

/// The DefaultStorageClass admission plugin: a claim created without `storageClassName` gets the default
/// StorageClass (annotated `storageclass.kubernetes.io/is-default-class: "true"`, or the beta annotation), the
/// newest one when several are, by name among equals, as `GetDefaultClass` picks.
async fn default_storage_class(store: &dyn Store, object: &mut Value) -> Result<(), ApiError> {
    if object
        .pointer("/spec/storageClassName")
        .is_some_and(|c| !c.is_null())
    {
        return Ok(());
    }
    let classes = store
        .range(RangeRequest {
            prefix: Bytes::from("/registry/storage.k8s.io/storageclasses/"),
            ..RangeRequest::default()
        })
        .await?;
    let is_default = |class: &Value| {
        [
            "storageclass.kubernetes.io/is-default-class",
            "storageclass.beta.kubernetes.io/is-default-class",
        ]
        .iter()
        .any(|a| class.pointer("/metadata/annotations").and_then(|m| m.get(*a)) == Some(&json!("true")))
    };
    let default = classes
        .kvs
        .iter()
        .filter_map(|kv| serde_json::from_slice::<Value>(&kv.value).ok())
        .filter(is_default)
        .map(|class| {
            let created = meta_str(&class, "creationTimestamp")
                .unwrap_or_default()
                .to_string();
            (created, meta_str(&class, "name").unwrap_or_default().to_string())
        })
        // RFC 3339 times in UTC order as text: newest first, then names ascending.
        .min_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    if let Some((_, name)) = default {
        object["spec"]["storageClassName"] = json!(name);
    }
    Ok(())
}

/// kube-apiserver's DefaultTolerationSeconds admission plugin: a pod that does not tolerate
/// `node.kubernetes.io/not-ready:NoExecute` or `node.kubernetes.io/unreachable:NoExecute` (a toleration with that
/// key or none, and that effect or none) gets `Exists` for it with `tolerationSeconds: 300`, so that its node's
/// failure evicts it after five minutes.
fn default_toleration_seconds(pod: &mut Value) {
    let tolerations: Vec<Value> = pod
        .pointer("/spec/tolerations")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let tolerates = |key: &str| {
        tolerations.iter().any(|t| {
            let field = |name: &str| t.get(name).and_then(Value::as_str).unwrap_or("");
            (field("key") == key || field("key").is_empty())
                && (field("effect") == "NoExecute" || field("effect").is_empty())
        })
    };
    let missing: Vec<&str> = ["node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"]
        .into_iter()
        .filter(|key| !tolerates(key))
        .collect();
    if missing.is_empty() || !pod.get("spec").is_some_and(Value::is_object) {
        return;
    }
    let mut all = tolerations;
    for key in missing {
        all.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}));
    }
    pod["spec"]["tolerations"] = Value::Array(all);
}

/// kube-apiserver's Job defaults (`SetDefaults_Job`) and, unless `manualSelector`, its generated selector: the
/// Job's uid and name as labels on the pod template, selected by the uid.
fn default_job(object: &mut Value) {
    let uid = meta_str(object, "uid").unwrap_or_default().to_string();
    let name = meta_str(object, "name").unwrap_or_default().to_string();
    if !object.get("spec").is_some_and(Value::is_object) {
        return;
    }
    let spec = &mut object["spec"];
    match (
        spec.get("completions").is_some(),
        spec.get("parallelism").is_some(),
    ) {
        (false, false) => {
            spec["completions"] = json!(1);
            spec["parallelism"] = json!(1);
        }
        (_, false) => spec["parallelism"] = json!(1),
        _ => {}
    }
    if spec.get("backoffLimit").is_none() {
        spec["backoffLimit"] = json!(6);
    }
    if spec.get("completionMode").is_none() {
        spec["completionMode"] = json!("NonIndexed");
    }
    if spec.get("suspend").is_none() {
        spec["suspend"] = json!(false);
    }
    if spec.get("manualSelector") == Some(&json!(true)) {
        return;
    }
    let labels = json!({"batch.kubernetes.io/controller-uid": uid, "batch.kubernetes.io/job-name": name,
        "controller-uid": uid, "job-name": name});
    spec["selector"] = json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}});
    if !spec.pointer("/template/metadata").is_some_and(Value::is_object) {
        spec["template"]["metadata"] = json!({});
    }
    let template_meta = &mut spec["template"]["metadata"];
    if !template_meta.get("labels").is_some_and(Value::is_object) {
        template_meta["labels"] = json!({});
    }
    if let (Some(into), Some(from)) = (template_meta["labels"].as_object_mut(), labels.as_object()) {
        for (k, v) in from {
            into.insert(k.clone(), v.clone());
        }
    }
}

pub async fn create_object(
    store: &dyn Store,
    t: &Target,
    mut object: Value,
    dry: bool,
    manager: Option<&Manager>,
) -> Result<Value, ApiError> {
    check_type(t, &mut object)?;
    if t.resource.namespaced {
        let ns = t
            .namespace
            .clone()
            .ok_or_else(|| ApiError::BadRequest("a namespaced resource is created in a namespace".into()))?;
        match meta_str(&object, "namespace") {
            Some(body_ns) if body_ns != ns => {
                return Err(ApiError::BadRequest(
                    "the namespace of the provided object does not match the namespace sent on the request"
                        .into(),
                ));
            }
            _ => set_meta(&mut object, "namespace", Value::String(ns.clone())),
        }
        namespace_must_accept(store, &ns).await?;
    } else {
        remove_meta(&mut object, "namespace");
    }
    let name = match (meta_str(&object, "name"), meta_str(&object, "generateName")) {
        (Some(n), _) if !n.is_empty() => n.to_string(),
        (_, Some(g)) if !g.is_empty() => format!("{g}{}", objects::name_suffix()),
        _ => {
            return Err(ApiError::Invalid {
                resource: t.resource,
                name: String::new(),
                causes: vec![FieldError {
                    field: "metadata.name".into(),
                    reason: "FieldValueRequired",
                    message: "Required value: name or generateName is required".into(),
                }],
            });
        }
    };
    set_meta(&mut object, "name", Value::String(name.clone()));
    for server_owned in [
        "resourceVersion",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "selfLink",
    ] {
        remove_meta(&mut object, server_owned);
    }
    set_meta(&mut object, "uid", Value::String(objects::new_uid()));
    set_meta(
        &mut object,
        "creationTimestamp",
        Value::String(objects::now_rfc3339()),
    );
    let served = custom::served(t.resource);
    if let Some(served) = &served
        && served.terminating
    {
        return Err(ApiError::MethodNotAllowed(format!(
            "create not allowed while custom resource definition is terminating: {}",
            served.crd
        )));
    }
    if t.resource.has_status() || served.is_some() {
        set_meta(&mut object, "generation", json!(1));
    }
    apply_create_defaults(t.resource, &mut object);
    if custom::crd::is_crd(t.resource.group, t.resource.kind) {
        custom::crd::prepare(&mut object, None);
    }
    if let Some(served) = &served {
        custom::default(served, &mut object);
    }
    if t.resource.kind == "PersistentVolumeClaim" && t.resource.group.is_empty() {
        default_storage_class(store, &mut object).await?;
    }
    if let Some(manager) = manager {
        remove_meta(&mut object, "managedFields");
        managed::record_update(&definition_of(t), None, &mut object, manager);
    }
    admit_mutating(store, t, &mut object, None).await?;
    let request = webhook_request(t, &name, "CREATE", dry);
    webhook::mutate(store, &request, Some(&mut object), None).await?;
    if services::is_service(t.resource) {
        return create_service(store, t, name, object, dry).await;
    }
    admit_validating(t, &object, None)?;
    validate(t, &name, &object)?;
    validate_webhook_configuration(t, &name, &object, None)?;
    webhook::validate(store, &request, Some(&object), None).await?;
    if dry {
        return Ok(object);
    }
    match store
        .create(Bytes::from(key_of(t, &name)), stored_bytes(t, &object))
        .await?
    {
        WriteOutcome::Written { revision, .. } => Ok(at_revision(object, revision)),
        WriteOutcome::Conflict { .. } => Err(ApiError::AlreadyExists {
            resource: t.resource,
            name,
        }),
    }
}

fn service_invalid(t: &Target, name: &str, causes: Vec<FieldError>) -> Result<(), ApiError> {
    if causes.is_empty() {
        return Ok(());
    }
    Err(ApiError::Invalid {
        resource: t.resource,
        name: name.to_string(),
        causes,
    })
}

/// A Service is created together with the cluster IP and node ports it holds, in one transaction.
async fn create_service(
    store: &dyn Store,
    t: &Target,
    name: String,
    mut object: Value,
    dry: bool,
) -> Result<Value, ApiError> {
    // An existing Service is reported as such, not as holding the addresses asked for again.
    if store.get(Bytes::from(key_of(t, &name)), 0).await?.kv.is_some() {
        return Err(ApiError::AlreadyExists {
            resource: t.resource,
            name,
        });
    }
    services::apply_defaults(&mut object, None);
    service_invalid(t, &name, services::validate(&object, None))?;
    webhook::validate(
        store,
        &webhook_request(t, &name, "CREATE", dry),
        Some(&object),
        None,
    )
    .await?;
    let requested = object;
    for _ in 0..services::ALLOCATION_ATTEMPTS {
        let mut object = requested.clone();
        let held = services::allocate(store, t.resource, &name, &mut object, None).await?;
        validate(t, &name, &object)?;
        if dry {
            return Ok(object);
        }
        let owner = services::owner_value(t.namespace.as_deref().unwrap_or(""), &name);
        let value = Bytes::from(objects::encode(&object));
        match services::commit(
            store,
            Bytes::from(key_of(t, &name)),
            None,
            Some(value),
            &Default::default(),
            &held,
            owner,
        )
        .await?
        {
            services::Commit::Written(revision) => return Ok(at_revision(object, revision)),
            services::Commit::ReservationTaken => continue,
            services::Commit::Deleted | services::Commit::ObjectChanged(_) => {
                return Err(ApiError::AlreadyExists {
                    resource: t.resource,
                    name,
                });
            }
        }
    }
    Err(ApiError::Conflict {
        resource: t.resource,
        name,
        message: "the service's addresses were taken while it was being created; please try again".into(),
    })
}

async fn create(
    store: &dyn Store,
    t: &Target,
    q: &Query,
    headers: &HeaderMap,
    body: Body,
    user: Option<&crate::authn::UserInfo>,
) -> Result<Response, ApiError> {
    let bytes = read_body(body).await?;
    let mut object = decode_body(headers, &bytes)?;
    let warnings = validate_fields(t, q, &mut object, &bytes)?;
    if t.resource.kind == certificates::KIND {
        certificates::prepare_create(t.resource, &mut object, user)?;
    }
    let manager = manager_of(t, q, headers)?;
    let created = create_object(store, t, object, dry_run(q), Some(&manager)).await?;
    Ok(with_warnings(ok(StatusCode::CREATED, &created), &warnings))
}

/// The field manager of a write: `fieldManager`, else the client's name from its User-Agent (`kubectl/v1.33.1
/// (linux/amd64) …` is `kubectl`), as kube-apiserver defaults it.
fn manager_of(t: &Target, q: &Query, headers: &HeaderMap) -> Result<Manager, ApiError> {
    let name = match q.get("fieldManager") {
        Some(m) => m.to_string(),
        None => headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .and_then(|ua| ua.split('/').next())
            .filter(|n| !n.is_empty())
            .unwrap_or("unknown")
            .to_string(),
    };
    if name.len() > 128 || name.chars().any(|c| c.is_control()) {
        return Err(ApiError::BadRequest(
            "fieldManager must be at most 128 printable characters".into(),
        ));
    }
    Ok(Manager {
        name,
        api_version: t.resource.api_version(),
        subresource: t.subresource.clone().filter(|s| s == "status"),
    })
}

fn definition_of(t: &Target) -> String {
    let r = t.resource;
    if custom::served(r).is_some() {
        return crate::schema::types::custom_definition(r.group, r.version, r.kind);
    }
    crate::schema::types::kind_definition(r.group, r.version, r.kind)
}

/// `fieldValidation`: fields the kind does not have are rejected with `Strict`, dropped with a warning with `Warn`
/// (the default) and dropped silently with `Ignore`. Kubernetes never stores them for built-in kinds.
fn validate_fields(t: &Target, q: &Query, object: &mut Value, body: &[u8]) -> Result<Vec<String>, ApiError> {
    let mode = q.get("fieldValidation").unwrap_or("Warn");
    if !matches!(mode, "Strict" | "Warn" | "Ignore") {
        return Err(ApiError::BadRequest(format!(
            "fieldValidation must be one of Strict, Warn or Ignore, not {mode:?}"
        )));
    }
    let r = t.resource;
    let definition = crate::schema::types::kind_definition(r.group, r.version, r.kind);
    let types = crate::schema::types::Types::get();
    let unknown = if let Some(served) = custom::served(r) {
        // A custom resource's unknown fields are pruned whatever the mode (Strict refuses them below).
        custom::prune(&served, object)
    } else if !types.is_structured(&definition) {
        return Ok(Vec::new());
    } else {
        types.unknown_fields(&definition, object, mode != "Strict")
    };
    let mut messages: Vec<String> = unknown.iter().map(|f| format!("unknown field \"{f}\"")).collect();
    if mode != "Ignore" {
        let duplicates = validation::duplicate_fields(body);
        messages.extend(duplicates.iter().map(|f| format!("duplicate field \"{f}\"")));
    }
    match mode {
        "Strict" if !messages.is_empty() => Err(ApiError::BadRequest(format!(
            "{} in version \"{}\" cannot be handled as a {}: strict decoding error: {}",
            r.kind,
            r.version,
            r.kind,
            messages.join(", ")
        ))),
        "Warn" => Ok(messages),
        _ => Ok(Vec::new()),
    }
}

/// Adds a `Warning: 299 - "…"` header per message, which kubectl prints as `Warning: …`.
fn with_warnings(mut response: Response, warnings: &[String]) -> Response {
    for warning in warnings {
        let escaped = warning.replace('\\', "\\\\").replace('"', "\\\"");
        if let Ok(value) = axum::http::HeaderValue::from_str(&format!("299 - \"{escaped}\"")) {
            response.headers_mut().append(header::WARNING, value);
        }
    }
    response
}

/// Admission of a create (`old` = None) or update by the request's user: RBAC escalation prevention and the
/// ServiceAccount admission of pods.
/// The built-in admission that changes objects (kube-apiserver's mutating plugins: ServiceAccount), which runs
/// before the mutating webhooks, so that they see its result as they do on Kubernetes.
async fn admit_mutating(
    store: &dyn Store,
    t: &Target,
    object: &mut Value,
    old: Option<&Value>,
) -> Result<(), ApiError> {
    if old.is_none() && t.resource.group.is_empty() && t.resource.kind == "Pod" {
        let namespace = t.namespace.as_deref().unwrap_or_default();
        super::service_account_admission::admit(store, namespace, object).await?;
    }
    Ok(())
}

/// The built-in admission that only accepts or refuses (RBAC escalation, NodeRestriction): after the mutating
/// webhooks, on the object they made, as kube-apiserver's validating plugins.
fn admit_validating(t: &Target, object: &Value, old: Option<&Value>) -> Result<(), ApiError> {
    if t.resource.group == "rbac.authorization.k8s.io" {
        crate::admission::check_rbac_write(
            t.resource.plural,
            t.namespace.as_deref().unwrap_or(""),
            object,
            old,
        )?;
    }
    if t.resource.group.is_empty() && matches!(t.resource.kind, "Pod" | "Node") {
        crate::admission::check_node_restriction(t.resource.plural, t.subresource.as_deref(), object, old)?;
    }
    Ok(())
}

/// Writes `new` over `current` (read at `current_rev`), keeping what the server owns and honouring
/// the status split; deletes the object when its last finalizer goes during deletion.
pub(super) async fn replace(
    store: &dyn Store,
    t: &Target,
    current: Value,
    current_rev: i64,
    mut new: Value,
    dry: bool,
    manager: Option<&Manager>,
) -> Result<Value, ApiError> {
    let name = name_of(t).to_string();
    check_type(t, &mut new)?;
    if let Some(body_name) = meta_str(&new, "name")
        && body_name != name
    {
        return Err(ApiError::BadRequest(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        )));
    }
    if let Some(rv) = meta_str(&new, "resourceVersion")
        && !rv.is_empty()
        && rv != current_rev.to_string()
    {
        return Err(conflict(t, &name));
    }
    // `/approval` (CertificateSigningRequests) is a status writer too, of the approval conditions only.
    let status_only = matches!(t.subresource.as_deref(), Some("status" | "approval"));
    if status_only {
        // The status subresource changes status only.
        let status = new.get("status").cloned();
        new = current.clone();
        match status {
            Some(s) => new["status"] = s,
            None => {
                if let Some(map) = new.as_object_mut() {
                    map.remove("status");
                }
            }
        }
    } else if t.resource.has_status() {
        match current.get("status") {
            Some(s) => new["status"] = s.clone(),
            None => {
                if let Some(map) = new.as_object_mut() {
                    map.remove("status");
                }
            }
        }
    }
    for owned in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "namespace",
        "generation",
    ] {
        match current.pointer(&format!("/metadata/{owned}")) {
            Some(v) => set_meta(&mut new, owned, v.clone()),
            None => {
                remove_meta(&mut new, owned);
            }
        }
    }
    set_meta(&mut new, "name", Value::String(name.clone()));
    let served = custom::served(t.resource);
    if t.resource.kind == certificates::KIND {
        certificates::prepare_update(t.resource, t.subresource.as_deref(), &current, &mut new)?;
    }
    if !status_only {
        defaults::apply(t.resource.group, t.resource.kind, &mut new);
        if let Some(served) = &served {
            custom::default(served, &mut new);
        }
    }
    if custom::crd::is_crd(t.resource.group, t.resource.kind) && !status_only {
        custom::crd::prepare(&mut new, Some(&current));
        let causes = custom::crd::validate_update(&new, &current);
        if !causes.is_empty() {
            return Err(ApiError::Invalid {
                resource: t.resource,
                name,
                causes,
            });
        }
    }
    // A custom resource without the status subresource counts a generation for any change but to metadata.
    let custom_changed = served.as_ref().is_some_and(|_| !t.resource.has_status())
        && without_metadata(&new) != without_metadata(&current);
    if (t.resource.has_status() && !status_only && objects::spec_of(&new) != objects::spec_of(&current))
        || custom_changed
    {
        let generation = current
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(0)
            + 1;
        set_meta(&mut new, "generation", json!(generation));
    }
    if let Some(manager) = manager {
        managed::record_update(&definition_of(t), Some(&current), &mut new, manager);
    } else if new.pointer("/metadata/managedFields").is_none()
        && let Some(fields) = current.pointer("/metadata/managedFields")
    {
        set_meta(&mut new, "managedFields", fields.clone());
    }
    admit_mutating(store, t, &mut new, Some(&current)).await?;
    let request = webhook_request(t, &name, "UPDATE", dry);
    webhook::mutate(store, &request, Some(&mut new), Some(&current)).await?;
    if services::is_service(t.resource) {
        // A Service's validation is its storage's, in the transaction that holds its addresses: the validating
        // webhooks see it before.
        webhook::validate(store, &request, Some(&new), Some(&current)).await?;
        return replace_service(store, t, name, current, current_rev, new, dry, status_only).await;
    }
    admit_validating(t, &new, Some(&current))?;
    validate(t, &name, &new)?;
    validate_webhook_configuration(t, &name, &new, Some(&current))?;
    if let Some(served) = &served {
        let causes = custom::validate_transition(served, &new, &current);
        if !causes.is_empty() {
            return Err(ApiError::Invalid {
                resource: t.resource,
                name,
                causes,
            });
        }
    }
    webhook::validate(store, &request, Some(&new), Some(&current)).await?;
    if dry {
        return Ok(new);
    }
    let key = Bytes::from(key_of(t, &name));
    if being_finalized(t, &new) {
        return match store.delete(key, Some(current_rev)).await? {
            DeleteOutcome::Deleted { .. } | DeleteOutcome::NotFound => Ok(new),
            DeleteOutcome::Conflict { .. } => Err(conflict(t, &name)),
        };
    }
    if is_no_op(&current, &new) {
        // kube-apiserver skips the write of an update that changes nothing (managed fields' times aside): the
        // resourceVersion stays and no watch event goes out.
        return Ok(at_revision(current, current_rev));
    }
    match store.update(key, stored_bytes(t, &new), current_rev).await? {
        WriteOutcome::Written { revision, .. } => Ok(at_revision(new, revision)),
        WriteOutcome::Conflict { current: None } => Err(ApiError::NotFound {
            resource: t.resource,
            name,
        }),
        WriteOutcome::Conflict { .. } => Err(conflict(t, &name)),
    }
}

/// The object without its metadata (what a custom resource's generation counts changes of).
fn without_metadata(object: &Value) -> Value {
    let mut object = object.clone();
    if let Some(map) = object.as_object_mut() {
        map.remove("metadata");
    }
    object
}

/// True when `new` is `current` but for its resourceVersion and the times of its managed fields
/// (`IgnoreManagedFieldsTimestampsTransformer`).
fn is_no_op(current: &Value, new: &Value) -> bool {
    let comparable = |object: &Value| {
        let mut object = object.clone();
        remove_meta(&mut object, "resourceVersion");
        if let Some(Value::Array(entries)) = object.pointer_mut("/metadata/managedFields") {
            for entry in entries.iter_mut().filter_map(Value::as_object_mut) {
                entry.remove("time");
            }
        }
        object
    };
    comparable(current) == comparable(new)
}

/// True when an update leaves an object marked for deletion with no finalizers left: it is deleted then. A
/// namespace also waits for its `spec.finalizers` (the namespace controller's, removed through `finalize`). An
/// object in a grace period (a terminating pod) is not: its status updates keep it until the node agent deletes
/// it (the registry's `ShouldDeleteDuringUpdate`: no grace period or one of 0).
fn being_finalized(t: &Target, object: &Value) -> bool {
    let left = |pointer: &str| {
        object
            .pointer(pointer)
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty())
    };
    object.pointer("/metadata/deletionTimestamp").is_some()
        && object
            .pointer("/metadata/deletionGracePeriodSeconds")
            .and_then(Value::as_i64)
            .is_none_or(|grace| grace == 0)
        && !left("/metadata/finalizers")
        && (t.resource.kind != "Namespace" || !left("/spec/finalizers"))
}

/// `PUT namespaces/{name}/finalize`: sets the namespace's `spec.finalizers` (only); a namespace being deleted
/// that has no finalizers left is deleted.
async fn finalize_namespace(
    store: &dyn Store,
    t: &Target,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = read_body(body).await?;
    let requested = decode_body(headers, &bytes)?;
    let name = name_of(t).to_string();
    let one = Target {
        subresource: None,
        ..t.clone()
    };
    let (current, rev) = get(store, &one).await?;
    let mut new = current.clone();
    if !new.get("spec").is_some_and(Value::is_object) {
        new["spec"] = json!({});
    }
    new["spec"]["finalizers"] = requested
        .pointer("/spec/finalizers")
        .cloned()
        .unwrap_or(json!([]));
    let key = Bytes::from(key_of(&one, &name));
    if being_finalized(&one, &new) {
        return match store.delete(key, Some(rev)).await? {
            DeleteOutcome::Deleted { .. } | DeleteOutcome::NotFound => Ok(ok(StatusCode::OK, &new)),
            DeleteOutcome::Conflict { .. } => Err(conflict(t, &name)),
        };
    }
    match store.update(key, Bytes::from(objects::encode(&new)), rev).await? {
        WriteOutcome::Written { revision, .. } => Ok(ok(StatusCode::OK, &at_revision(new, revision))),
        WriteOutcome::Conflict { .. } => Err(conflict(t, &name)),
    }
}

/// `replace` for a Service: its cluster IP and node ports change (are taken or freed) in the same transaction.
#[allow(clippy::too_many_arguments)] // replace's arguments, and whether only the status changes
async fn replace_service(
    store: &dyn Store,
    t: &Target,
    name: String,
    current: Value,
    current_rev: i64,
    new: Value,
    dry: bool,
    status_only: bool,
) -> Result<Value, ApiError> {
    let requested = new;
    let before = services::reservations(&current);
    for _ in 0..services::ALLOCATION_ATTEMPTS {
        let mut new = requested.clone();
        let after = if status_only {
            before.clone()
        } else {
            services::apply_defaults(&mut new, Some(&current));
            service_invalid(t, &name, services::validate(&new, Some(&current)))?;
            services::allocate(store, t.resource, &name, &mut new, Some(&current)).await?
        };
        validate(t, &name, &new)?;
        if dry {
            return Ok(new);
        }
        let key = Bytes::from(key_of(t, &name));
        let owner = services::owner_value(t.namespace.as_deref().unwrap_or(""), &name);
        let finalized = being_finalized(t, &new);
        if !finalized && before == after && is_no_op(&current, &new) {
            // As for every kind: an update that changes nothing is not written.
            return Ok(at_revision(current, current_rev));
        }
        let (value, after) = if finalized {
            (None, Default::default())
        } else {
            (Some(Bytes::from(objects::encode(&new))), after)
        };
        match services::commit(store, key, Some(current_rev), value, &before, &after, owner).await? {
            services::Commit::Written(revision) => return Ok(at_revision(new, revision)),
            services::Commit::Deleted => return Ok(new),
            services::Commit::ReservationTaken => continue,
            services::Commit::ObjectChanged(None) if finalized => return Ok(new),
            services::Commit::ObjectChanged(None) => {
                return Err(ApiError::NotFound {
                    resource: t.resource,
                    name,
                });
            }
            services::Commit::ObjectChanged(Some(_)) => return Err(conflict(t, &name)),
        }
    }
    Err(conflict(t, &name))
}

fn conflict(t: &Target, name: &str) -> ApiError {
    ApiError::Conflict {
        resource: t.resource,
        name: name.to_string(),
        message: OBJECT_MODIFIED.into(),
    }
}

/// What a write that lost a race with another write says (kube-apiserver's `OptimisticLockErrorMsg`).
const OBJECT_MODIFIED: &str =
    "the object has been modified; please apply your changes to the latest version and try again";

async fn update(
    store: &dyn Store,
    t: &Target,
    q: &Query,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = read_body(body).await?;
    let mut new = decode_body(headers, &bytes)?;
    let warnings = validate_fields(t, q, &mut new, &bytes)?;
    let manager = manager_of(t, q, headers)?;
    let (current, rev) = get(store, t).await?;
    let updated = replace(store, t, current, rev, new, dry_run(q), Some(&manager)).await?;
    Ok(with_warnings(ok(StatusCode::OK, &updated), &warnings))
}

/// Applies a JSON patch, merge patch or strategic merge patch body to `target`, an object of the OpenAPI
/// definition `definition`.
fn apply_patch(
    t: &Target,
    headers: &HeaderMap,
    bytes: &[u8],
    target: &mut Value,
    definition: &str,
) -> Result<(), ApiError> {
    match content_type(headers).as_str() {
        "application/strategic-merge-patch+json" if custom::served(t.resource).is_some() => {
            Err(ApiError::UnsupportedMediaType(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml".into(),
            ))
        }
        "application/strategic-merge-patch+json" => {
            let p: Value = serde_json::from_slice(bytes)
                .map_err(|e| ApiError::BadRequest(format!("invalid strategic merge patch: {e}")))?;
            crate::patch::strategic::apply(definition, target, p)
                .map_err(|e| ApiError::BadRequest(e.to_string()))
        }
        "application/merge-patch+json" => {
            let p: Value = serde_json::from_slice(bytes)
                .map_err(|e| ApiError::BadRequest(format!("invalid merge patch: {e}")))?;
            json_patch::merge(target, &p);
            Ok(())
        }
        "application/json-patch+json" => {
            let p: json_patch::Patch = serde_json::from_slice(bytes)
                .map_err(|e| ApiError::BadRequest(format!("invalid JSON patch: {e}")))?;
            json_patch::patch(target, &p)
                .map_err(|e| invalid_field(t, "patch", "FieldValueInvalid", e.to_string()))
        }
        other => Err(ApiError::UnsupportedMediaType(format!(
            "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json (got {other}; server-side apply is not served yet)"
        ))),
    }
}

async fn patch(
    store: &dyn Store,
    t: &Target,
    q: &Query,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = read_body(body).await?;
    if content_type(headers) == "application/apply-patch+yaml" {
        return server_side_apply(store, t, q, headers, &bytes).await;
    }
    let manager = manager_of(t, q, headers)?;
    let definition = definition_of(t);
    // As kube-apiserver does, a patch that does not pin a resourceVersion is applied again to the object as it
    // is now when another write got in between the read and the write.
    const ATTEMPTS: usize = 5;
    for attempt in 1..=ATTEMPTS {
        let (current, rev) = get(store, t).await?;
        let mut patched = current.clone();
        apply_patch(t, headers, &bytes, &mut patched, &definition)?;
        let warnings = validate_fields(t, q, &mut patched, &bytes)?;
        match replace(store, t, current, rev, patched, dry_run(q), Some(&manager)).await {
            Err(ApiError::Conflict { .. }) if attempt < ATTEMPTS => continue,
            Err(e) => return Err(e),
            Ok(updated) => return Ok(with_warnings(ok(StatusCode::OK, &updated), &warnings)),
        }
    }
    Err(conflict(t, name_of(t)))
}

/// `PATCH` with `application/apply-patch+yaml`: server-side apply, creating the object when it does not exist.
async fn server_side_apply(
    store: &dyn Store,
    t: &Target,
    q: &Query,
    headers: &HeaderMap,
    bytes: &[u8],
) -> Result<Response, ApiError> {
    if q.get("fieldManager").is_none_or(str::is_empty) {
        return Err(ApiError::BadRequest(
            "PATCH with application/apply-patch+yaml requires the fieldManager query parameter".into(),
        ));
    }
    let force = match q.get("force") {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "force must be true or false, not {other:?}"
            )));
        }
    };
    let manager = manager_of(t, q, headers)?;
    let text = std::str::from_utf8(bytes)
        .map_err(|_| ApiError::BadRequest("the apply configuration is not UTF-8".into()))?;
    let mut applied: Value = serde_saphyr::from_str(text).map_err(|e| {
        ApiError::BadRequest(format!("the apply configuration is not valid YAML or JSON: {e}"))
    })?;
    if !applied.is_object() {
        return Err(ApiError::BadRequest(
            "the apply configuration must be an object".into(),
        ));
    }
    check_type(t, &mut applied)?;
    if t.subresource.is_none() && meta_str(&applied, "name") != Some(name_of(t)) {
        return Err(ApiError::BadRequest(format!(
            "the name of the object ({}) does not match the name on the URL ({})",
            meta_str(&applied, "name").unwrap_or(""),
            name_of(t)
        )));
    }
    let warnings = validate_fields(t, q, &mut applied, bytes)?;
    let definition = definition_of(t);
    let to_conflict = |e: managed::ApplyError| match e {
        managed::ApplyError::Conflicts(c) => ApiError::ApplyConflict(c),
        other => ApiError::BadRequest(other.to_string()),
    };
    // As a patch, an apply that does not pin a resourceVersion is applied again to the object as it is now when
    // another write (a controller's) got in between its read and its write (kube-apiserver's GuaranteedUpdate).
    let pinned = meta_str(&applied, "resourceVersion").is_some_and(|rv| !rv.is_empty());
    let mut attempts = 0;
    let found = loop {
        attempts += 1;
        let (current, rev) = match get(store, t).await {
            Ok(found) => found,
            Err(e) => break Err(e),
        };
        let merged =
            managed::apply(&definition, Some(&current), &applied, &manager, force).map_err(to_conflict)?;
        match replace(store, t, current, rev, merged, dry_run(q), None).await {
            Err(ApiError::Conflict { .. }) if !pinned && attempts < 5 => continue,
            Err(e) => return Err(e),
            Ok(updated) => break Ok(updated),
        }
    };
    match found {
        Ok(updated) => Ok(with_warnings(ok(StatusCode::OK, &updated), &warnings)),
        Err(ApiError::NotFound { .. }) if t.subresource.is_none() => {
            let object = managed::apply(&definition, None, &applied, &manager, force).map_err(to_conflict)?;
            let collection = Target {
                name: None,
                ..t.clone()
            };
            let created = create_object(store, &collection, object, dry_run(q), None).await?;
            Ok(with_warnings(ok(StatusCode::CREATED, &created), &warnings))
        }
        Err(e) => Err(e),
    }
}

/// The `autoscaling/v1` Scale view of a scalable object: a custom resource's from its CRD's scale paths.
fn scale_of(t: &Target, object: &Value) -> Value {
    match custom::served(t.resource).and_then(|s| s.scale.clone()) {
        Some(paths) => custom::to_scale(&paths, t.namespace.as_deref(), object),
        None => to_scale(t, object),
    }
}

fn to_scale(t: &Target, object: &Value) -> Value {
    let selector = object
        .pointer("/spec/selector/matchLabels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    let meta = |f: &str| {
        object
            .pointer(&format!("/metadata/{f}"))
            .cloned()
            .unwrap_or(Value::Null)
    };
    json!({
        "kind": "Scale", "apiVersion": "autoscaling/v1",
        "metadata": {"name": meta("name"), "namespace": t.namespace, "uid": meta("uid"), "resourceVersion": meta("resourceVersion"), "creationTimestamp": meta("creationTimestamp")},
        "spec": {"replicas": object.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1)},
        "status": {"replicas": object.pointer("/status/replicas").and_then(Value::as_i64).unwrap_or(0), "selector": selector},
    })
}

/// PUT or PATCH of `scale`: only `spec.replicas` of the object changes.
async fn scale(
    store: &dyn Store,
    t: &Target,
    q: &Query,
    method: &Method,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = read_body(body).await?;
    let (current, rev) = get(store, t).await?;
    let mut wanted = scale_of(t, &current);
    if *method == Method::PATCH {
        let main = Target {
            subresource: None,
            ..t.clone()
        };
        let plain = if content_type(headers) == "application/strategic-merge-patch+json" {
            // A Scale is a built-in kind: strategic merge patches of it are served for custom resources too.
            Target {
                resource: registry::find("apps", "v1", "deployments").unwrap_or(t.resource),
                ..main
            }
        } else {
            main
        };
        apply_patch(
            &plain,
            headers,
            &bytes,
            &mut wanted,
            "io.k8s.api.autoscaling.v1.Scale",
        )?;
    } else {
        wanted = decode_body(headers, &bytes)?;
    }
    if let Some(rv) = wanted
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        && !rv.is_empty()
        && rv != rev.to_string()
    {
        return Err(conflict(t, name_of(t)));
    }
    let replicas = wanted
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(-1);
    if replicas < 0 {
        return Err(invalid_field(
            t,
            "spec.replicas",
            "FieldValueInvalid",
            format!("Invalid value: {replicas}: must be greater than or equal to 0"),
        ));
    }
    let mut new = current.clone();
    match custom::served(t.resource).and_then(|s| s.scale.clone()) {
        Some(paths) => custom::set_replicas(&paths, &mut new, replicas),
        None => new["spec"]["replicas"] = json!(replicas),
    }
    let main = Target {
        resource: t.resource,
        namespace: t.namespace.clone(),
        name: t.name.clone(),
        subresource: None,
    };
    let mut manager = manager_of(&main, q, headers)?;
    manager.subresource = Some("scale".into());
    let updated = replace(store, &main, current, rev, new, dry_run(q), Some(&manager)).await?;
    Ok(ok(StatusCode::OK, &scale_of(t, &updated)))
}

/// `pods/<name>/eviction`, as `kubectl drain` sends it. No PodDisruptionBudgets are served yet,
/// so an eviction is the pod's graceful deletion with the eviction's delete options.
async fn evict(
    store: &dyn Store,
    t: &Target,
    q: &Query,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let eviction = decode_body(headers, &read_body(body).await?)?;
    let options = eviction
        .get("deleteOptions")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let pod = Target {
        resource: t.resource,
        namespace: t.namespace.clone(),
        name: t.name.clone(),
        subresource: None,
    };
    delete(store, &pod, q, options).await?;
    Ok(ok(
        StatusCode::CREATED,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
    ))
}

/// `pods/<name>/binding`: assigns an unbound pod to a node, as the scheduler does.
async fn bind(store: &dyn Store, t: &Target, headers: &HeaderMap, body: Body) -> Result<Response, ApiError> {
    let binding = decode_body(headers, &read_body(body).await?)?;
    let node = binding
        .pointer("/target/name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| invalid_field(t, "target.name", "FieldValueRequired", "Required value"))?;
    let pod = Target {
        resource: t.resource,
        namespace: t.namespace.clone(),
        name: t.name.clone(),
        subresource: None,
    };
    // As kube-apiserver's `assignPod` (a GuaranteedUpdate), a binding is applied again to the pod as it is now
    // when another write (a status update, a label) got in between its read and its write.
    const ATTEMPTS: usize = 5;
    for attempt in 1..=ATTEMPTS {
        match bind_once(store, t, &pod, node).await {
            Err(ApiError::Conflict { message, .. }) if attempt < ATTEMPTS && message == OBJECT_MODIFIED => {
                continue;
            }
            Err(e) => return Err(e),
            Ok(()) => break,
        }
    }
    Ok(ok(
        StatusCode::CREATED,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
    ))
}

/// One read-check-write of a binding; a lost race is the revision conflict `replace` reports.
async fn bind_once(store: &dyn Store, t: &Target, pod: &Target, node: &str) -> Result<(), ApiError> {
    let (current, rev) = get(store, pod).await?;
    if let Some(bound) = current
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
    {
        return Err(ApiError::Conflict {
            resource: t.resource,
            name: name_of(t).to_string(),
            message: format!("pod {} is already assigned to node \"{bound}\"", name_of(t)),
        });
    }
    if current.pointer("/metadata/deletionTimestamp").is_some() {
        return Err(ApiError::Conflict {
            resource: t.resource,
            name: name_of(t).to_string(),
            message: "pod is being deleted, cannot be assigned to a host".into(),
        });
    }
    // Binding also marks the pod scheduled (kube-apiserver's `assignPod`). `replace` keeps the stored status on
    // a spec write, so the condition goes into the status it keeps: one write, at one revision.
    let mut current = current;
    let conditions = current["status"]
        .as_object_mut()
        .map(|status| status.entry("conditions").or_insert_with(|| json!([])));
    if let Some(Value::Array(conditions)) = conditions {
        conditions.retain(|c| c["type"] != "PodScheduled");
        conditions.push(
            json!({"type": "PodScheduled", "status": "True", "lastTransitionTime": objects::now_rfc3339()}),
        );
    }
    let mut new = current.clone();
    new["spec"]["nodeName"] = json!(node);
    replace(store, pod, current, rev, new, false, None).await?;
    Ok(())
}

/// DeleteOptions from a DELETE body: kubectl sends JSON, helm v4 protobuf, and either may send none.
async fn delete_options(headers: &HeaderMap, body: Body) -> Result<Value, ApiError> {
    let bytes = read_body(body).await?;
    if bytes.is_empty() {
        Ok(json!({}))
    } else {
        decode_body(headers, &bytes)
    }
}

/// How one attempt at a delete ended: done (either way), or lost a race with another write.
enum DeleteAttempt {
    Done(Result<Response, ApiError>),
    Raced,
}

/// A delete retries when another write changes the object between its read and its write, as kube-apiserver's
/// `GuaranteedUpdate` does, unless the client pinned a resourceVersion (then the race is the client's 409).
async fn delete(store: &dyn Store, t: &Target, q: &Query, options: Value) -> Result<Response, ApiError> {
    let pinned = options.pointer("/preconditions/resourceVersion").is_some();
    for _ in 0..16 {
        match delete_once(store, t, q, &options).await? {
            DeleteAttempt::Done(result) => return result,
            DeleteAttempt::Raced if pinned => break,
            DeleteAttempt::Raced => continue,
        }
    }
    Err(conflict(t, name_of(t)))
}

async fn delete_once(
    store: &dyn Store,
    t: &Target,
    q: &Query,
    options: &Value,
) -> Result<DeleteAttempt, ApiError> {
    let name = name_of(t).to_string();
    let (current, rev) = get(store, t).await?;
    if let Some(uid) = options.pointer("/preconditions/uid").and_then(Value::as_str)
        && Some(uid) != meta_str(&current, "uid")
    {
        return Err(ApiError::Conflict {
            resource: t.resource,
            name,
            message: format!(
                "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                meta_str(&current, "uid").unwrap_or("")
            ),
        });
    }
    if let Some(want) = options
        .pointer("/preconditions/resourceVersion")
        .and_then(Value::as_str)
        && want != rev.to_string()
    {
        return Err(ApiError::Conflict {
            resource: t.resource,
            name,
            message: format!(
                "Precondition failed: ResourceVersion in precondition: {want}, ResourceVersion in object meta: {rev}"
            ),
        });
    }
    let dry = dry_run(q)
        || options
            .get("dryRun")
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().any(|v| v == "All"));
    let grace = q
        .get("gracePeriodSeconds")
        .and_then(|g| g.parse::<i64>().ok())
        .or_else(|| options.get("gracePeriodSeconds").and_then(Value::as_i64));
    if current.pointer("/metadata/deletionTimestamp").is_none() {
        let request = webhook_request(t, &name, "DELETE", dry);
        webhook::mutate(store, &request, None, Some(&current)).await?;
        webhook::validate(store, &request, None, Some(&current)).await?;
    }
    // A pod already terminating goes at once when deleted again with a grace period of 0 (a force delete, as
    // `kubectl delete --force` and the pod garbage collector send) unless finalizers hold it.
    let force_pod = t.resource.kind == "Pod"
        && grace == Some(0)
        && current
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_none_or(|f| f.is_empty());
    if current.pointer("/metadata/deletionTimestamp").is_some() && !force_pod {
        // A grace period of 0 on a terminating pod that finalizers hold shortens its grace period to 0, so that
        // it goes once they are removed (the registry's BeforeDelete shortens a pending graceful deletion).
        let shortens = t.resource.kind == "Pod"
            && grace == Some(0)
            && current
                .pointer("/metadata/deletionGracePeriodSeconds")
                .and_then(Value::as_i64)
                != Some(0);
        if !shortens || dry {
            return Ok(DeleteAttempt::Done(Ok(ok(StatusCode::OK, &current)))); // already being deleted
        }
        let mut shortened = current.clone();
        set_meta(&mut shortened, "deletionGracePeriodSeconds", json!(0));
        return write_marked(store, t, &name, shortened, rev).await;
    }
    // Foreground and Orphan propagation are finalizers the garbage collector acts on (it removes them once the
    // dependents are gone or released); Background deletes now and leaves the dependents to it.
    let policy = options
        .get("propagationPolicy")
        .and_then(Value::as_str)
        .map(String::from)
        .or_else(|| q.get("propagationPolicy").map(String::from))
        .or_else(|| match options.get("orphanDependents") {
            Some(Value::Bool(true)) => Some("Orphan".into()),
            _ => q
                .get("orphanDependents")
                .filter(|v| *v == "true")
                .map(|_| "Orphan".into()),
        });
    let propagation_finalizer = match policy.as_deref() {
        None | Some("Background") => None,
        Some("Foreground") => Some("foregroundDeletion"),
        Some("Orphan") => Some("orphan"),
        Some(other) => {
            return Err(invalid_field(
                t,
                "propagationPolicy",
                "FieldValueNotSupported",
                format!(
                    "Unsupported value: \"{other}\": supported values: \"Foreground\", \"Background\", \"Orphan\""
                ),
            ));
        }
    };
    let mut current = current;
    if custom::crd::is_crd(t.resource.group, t.resource.kind) {
        // A CRD goes only once the controller has removed its objects (the cleanup finalizer).
        custom::crd::mark_for_deletion(&mut current);
    }
    if let Some(finalizer) = propagation_finalizer
        && t.resource.kind != "Namespace"
    {
        let list = current["metadata"]
            .as_object_mut()
            .map(|m| m.entry("finalizers").or_insert_with(|| json!([])));
        if let Some(Value::Array(list)) = list
            && !list.iter().any(|f| f == finalizer)
        {
            list.push(json!(finalizer));
        }
    }
    let has_finalizers = current
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty());
    let graceful_pod =
        t.resource.kind == "Pod" && current.pointer("/spec/nodeName").is_some() && grace != Some(0);
    if t.resource.kind == "Namespace" || has_finalizers || graceful_pod {
        // Kept, marked for deletion: finalizers, the namespace controller or the node agent finish it.
        let mut marked = current.clone();
        let grace = if graceful_pod {
            grace
                .or_else(|| {
                    current
                        .pointer("/spec/terminationGracePeriodSeconds")
                        .and_then(Value::as_i64)
                })
                .unwrap_or(30)
        } else {
            0
        };
        let when = time::OffsetDateTime::now_utc() + time::Duration::seconds(grace);
        let when = when.replace_nanosecond(0).unwrap_or(when);
        set_meta(
            &mut marked,
            "deletionTimestamp",
            json!(
                when.format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default()
            ),
        );
        set_meta(&mut marked, "deletionGracePeriodSeconds", json!(grace));
        if t.resource.kind == "Namespace" {
            marked["status"] = json!({"phase": "Terminating"});
        }
        if dry {
            return Ok(DeleteAttempt::Done(Ok(ok(StatusCode::OK, &marked))));
        }
        return write_marked(store, t, &name, marked, rev).await;
    }
    if dry {
        return Ok(DeleteAttempt::Done(Ok(ok(StatusCode::OK, &current))));
    }
    if services::is_service(t.resource) {
        let owner = services::owner_value(t.namespace.as_deref().unwrap_or(""), &name);
        let held = services::reservations(&current);
        let key = Bytes::from(key_of(t, &name));
        return match services::commit(store, key, Some(rev), None, &held, &Default::default(), owner).await? {
            services::Commit::Deleted | services::Commit::Written(_) => {
                Ok(DeleteAttempt::Done(Ok(ok(StatusCode::OK, &current))))
            }
            services::Commit::ObjectChanged(None) => Err(ApiError::NotFound {
                resource: t.resource,
                name,
            }),
            services::Commit::ObjectChanged(Some(_)) => Ok(DeleteAttempt::Raced),
            services::Commit::ReservationTaken => Err(conflict(t, &name)),
        };
    }
    match store.delete(Bytes::from(key_of(t, &name)), Some(rev)).await? {
        DeleteOutcome::Deleted { .. } => Ok(DeleteAttempt::Done(Ok(ok(StatusCode::OK, &current)))),
        DeleteOutcome::NotFound => Err(ApiError::NotFound {
            resource: t.resource,
            name,
        }),
        DeleteOutcome::Conflict { .. } => Ok(DeleteAttempt::Raced),
    }
}

/// Writes an object a delete marked (deletion timestamp, grace period) at `rev`: done with it, or raced.
async fn write_marked(
    store: &dyn Store,
    t: &Target,
    name: &str,
    marked: Value,
    rev: i64,
) -> Result<DeleteAttempt, ApiError> {
    match store
        .update(Bytes::from(key_of(t, name)), stored_bytes(t, &marked), rev)
        .await?
    {
        WriteOutcome::Written { revision, .. } => Ok(DeleteAttempt::Done(Ok(ok(
            StatusCode::OK,
            &at_revision(marked, revision),
        )))),
        WriteOutcome::Conflict { .. } => Ok(DeleteAttempt::Raced),
    }
}

async fn delete_collection(store: &dyn Store, t: &Target, q: &Query) -> Result<Response, ApiError> {
    let (items, _) = list_items(store, t, q, 0, None).await?;
    for item in &items {
        let Some(name) = meta_str(&item.selectable, "name") else {
            continue;
        };
        let one = Target {
            resource: t.resource,
            namespace: meta_str(&item.selectable, "namespace")
                .map(String::from)
                .or(t.namespace.clone()),
            name: Some(name.to_string()),
            subresource: None,
        };
        match delete(store, &one, q, json!({})).await {
            Ok(_) | Err(ApiError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(ok(
        StatusCode::OK,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}),
    ))
}

/// A continue token: where the next page starts and the revision the list is read at.
fn encode_continue(revision: i64, start: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(json!({"v": "meta.k8s.io/v1", "rv": revision, "start": start}).to_string())
}

fn decode_continue(token: &str) -> Option<(i64, String)> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.trim_end_matches('='))
        .ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    Some((v.get("rv")?.as_i64()?, v.get("start")?.as_str()?.to_string()))
}

/// Matching items, at most `limit` (0: all); with the revision read at and the continue token.
pub async fn list_items(
    store: &dyn Store,
    t: &Target,
    q: &Query,
    limit: usize,
    start_token: Option<&str>,
) -> Result<(Vec<objects::Listed>, (i64, Option<String>)), ApiError> {
    let labels = LabelSelector::parse(q.get("labelSelector").unwrap_or("")).map_err(ApiError::BadRequest)?;
    let fields = FieldSelector::parse_for(t.resource, q.get("fieldSelector").unwrap_or(""))
        .map_err(ApiError::BadRequest)?;
    let members = fields.members();
    let served = custom::served(t.resource);
    let prefix = objects::prefix(t.resource, t.namespace.as_deref());
    let (mut revision, mut start) = match start_token {
        Some(token) => {
            let (rv, start) = decode_continue(token)
                .ok_or_else(|| ApiError::BadRequest("continue key is not valid".into()))?;
            (rv, Some(Bytes::from(start)))
        }
        None => (requested_revision(q)?, None),
    };
    let mut items = Vec::new();
    loop {
        let page = store
            .range(RangeRequest {
                prefix: Bytes::from(prefix.clone()),
                start: start.clone(),
                limit: if limit == 0 { 0 } else { limit.max(64) },
                revision,
            })
            .await?;
        revision = page.revision;
        for kv in &page.kvs {
            if limit != 0 && items.len() == limit {
                // More matching items may follow: the next page starts here.
                let token = encode_continue(revision, &String::from_utf8_lossy(&kv.key));
                return Ok((items, (revision, Some(token))));
            }
            let Some(mut object) = objects::decode_listed(&kv.value, kv.mod_revision, &members) else {
                continue;
            };
            if let Some(served) = &served {
                object.json = custom::on_read_json(served, &object.json);
            }
            if labels.matches(&object.selectable) && fields.matches(&object.selectable) {
                items.push(object);
            }
        }
        match page.kvs.last() {
            Some(last) if page.more => {
                let mut next = last.key.to_vec();
                next.push(0);
                start = Some(Bytes::from(next));
            }
            _ => return Ok((items, (revision, None))),
        }
    }
}

/// The revision a list reads at: `resourceVersion` with `resourceVersionMatch=Exact`, else now.
fn requested_revision(q: &Query) -> Result<i64, ApiError> {
    match (q.get("resourceVersion"), q.get("resourceVersionMatch")) {
        (Some(rv), Some("Exact")) => rv
            .parse()
            .map_err(|_| ApiError::BadRequest(format!("invalid resourceVersion {rv:?}"))),
        (Some(rv), _) if !rv.is_empty() && rv.parse::<i64>().is_err() => {
            Err(ApiError::BadRequest(format!("invalid resourceVersion {rv:?}")))
        }
        _ => Ok(0),
    }
}

async fn list(store: &dyn Store, t: &Target, q: &Query, headers: &HeaderMap) -> Result<Response, ApiError> {
    let limit = q.get("limit").and_then(|l| l.parse::<usize>().ok()).unwrap_or(0);
    let (items, (revision, token)) =
        list_items(store, t, q, limit, q.get("continue").filter(|c| !c.is_empty())).await?;
    let mut metadata = json!({"resourceVersion": revision.to_string()});
    if let Some(token) = token {
        metadata["continue"] = Value::String(token);
    }
    if let Some(version) = tables::requested_version(headers) {
        let objects: Vec<Value> = items
            .iter()
            .filter_map(|i| serde_json::from_slice(&i.json).ok())
            .collect();
        let table = tables::table(t.resource, version, &objects, metadata, q.get("includeObject"));
        return Ok(ok(StatusCode::OK, &table));
    }
    // The list is written around the items' own JSON rather than built as one tree and serialised.
    let head = json!({
        "kind": format!("{}List", t.resource.kind),
        "apiVersion": t.resource.api_version(),
        "metadata": metadata,
    })
    .to_string();
    let size = items.iter().map(|i| i.json.len() + 1).sum::<usize>();
    let mut body = Vec::with_capacity(head.len() + size + 16);
    body.extend_from_slice(&head.as_bytes()[..head.len() - 1]);
    body.extend_from_slice(b",\"items\":[");
    for (n, item) in items.iter().enumerate() {
        if n > 0 {
            body.push(b',');
        }
        body.extend_from_slice(&item.json);
    }
    body.extend_from_slice(b"]}");
    drop(items);
    Ok(crate::status::json_bytes(StatusCode::OK, body))
}

/// `POST /api/v1/namespaces/<ns>/serviceaccounts/<name>/token` (the TokenRequest API): a token for the service
/// account, for the audiences asked (the API's by default), for `expirationSeconds` (1 h by default, at least
/// 10 min), bound to a pod, secret or node that must exist (with its uid, when given).
pub async fn token_request(
    store: &dyn Store,
    issuer: &crate::service_account_tokens::TokenIssuer,
    namespace: &str,
    name: &str,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    token_request_inner(store, issuer, namespace, name, headers, body)
        .await
        .unwrap_or_else(|e| e.response())
}

async fn token_request_inner(
    store: &dyn Store,
    issuer: &crate::service_account_tokens::TokenIssuer,
    namespace: &str,
    name: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let resource = |plural: &str| {
        registry::find("", "v1", plural).ok_or_else(|| ApiError::Internal(format!("no {plural} resource")))
    };
    let account = Target {
        resource: resource("serviceaccounts")?,
        namespace: Some(namespace.to_string()),
        name: Some(name.to_string()),
        subresource: None,
    };
    let (service_account, _) = get(store, &account).await?;
    let request = decode_body(headers, &read_body(body).await?)?;
    let spec = request.get("spec").cloned().unwrap_or_else(|| json!({}));
    let expiration = spec
        .get("expirationSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(3600);
    if expiration < 600 {
        return Err(invalid_field(
            &account,
            "spec.expirationSeconds",
            "FieldValueInvalid",
            format!("Invalid value: {expiration}: may not specify a duration less than 10 minutes"),
        ));
    }
    if expiration > 1 << 32 {
        return Err(invalid_field(
            &account,
            "spec.expirationSeconds",
            "FieldValueInvalid",
            format!("Invalid value: {expiration}: may not specify a duration larger than 2^32 seconds"),
        ));
    }
    let audiences: Vec<String> = match spec.get("audiences").and_then(Value::as_array) {
        Some(list) if !list.is_empty() => list.iter().filter_map(Value::as_str).map(String::from).collect(),
        _ => crate::service_account_tokens::AUDIENCES
            .iter()
            .map(|a| a.to_string())
            .collect(),
    };
    let mut private = json!({
        "namespace": namespace,
        "serviceaccount": {"name": name, "uid": service_account.pointer("/metadata/uid").cloned().unwrap_or(Value::Null)},
    });
    if let Some(bound) = spec.get("boundObjectRef").filter(|b| !b.is_null()) {
        let kind = bound.get("kind").and_then(Value::as_str).unwrap_or_default();
        let plural = match kind {
            "Pod" => "pods",
            "Secret" => "secrets",
            "Node" => "nodes",
            _ => {
                return Err(invalid_field(
                    &account,
                    "spec.boundObjectRef.kind",
                    "FieldValueNotSupported",
                    format!("Unsupported value: {kind:?}: supported values: \"Pod\", \"Secret\", \"Node\""),
                ));
            }
        };
        let bound_name = bound.get("name").and_then(Value::as_str).unwrap_or_default();
        let bound_target = Target {
            resource: resource(plural)?,
            namespace: (plural != "nodes").then(|| namespace.to_string()),
            name: Some(bound_name.to_string()),
            subresource: None,
        };
        let (object, _) = get(store, &bound_target).await?;
        let uid = object
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if let Some(wanted) = bound.get("uid").and_then(Value::as_str).filter(|u| !u.is_empty())
            && wanted != uid
        {
            return Err(ApiError::Conflict {
                resource: bound_target.resource,
                name: bound_name.to_string(),
                message: format!(
                    "the UID in the bound object reference ({wanted}) does not match the {kind}'s ({uid})"
                ),
            });
        }
        private[kind.to_lowercase()] = json!({"name": bound_name, "uid": uid});
    }
    let now = crate::service_account_tokens::unix_now();
    let claims = json!({
        "iss": crate::service_account_tokens::ISSUER,
        "sub": format!("system:serviceaccount:{namespace}:{name}"),
        "aud": audiences,
        "exp": now + expiration,
        "iat": now,
        "nbf": now,
        "jti": objects::new_uid(),
        "kubernetes.io": private,
    });
    let token = issuer
        .sign(&claims)
        .ok_or_else(|| ApiError::Internal("cannot sign the token".into()))?;
    let expires = time::OffsetDateTime::from_unix_timestamp(now + expiration)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default();
    let mut spec = spec;
    spec["audiences"] = json!(claims["aud"]);
    spec["expirationSeconds"] = json!(expiration);
    Ok(ok(
        StatusCode::CREATED,
        &json!({
            "kind": "TokenRequest",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": name, "namespace": namespace, "creationTimestamp": objects::now_rfc3339()},
            "spec": spec,
            "status": {"token": token, "expirationTimestamp": expires},
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (plural, namespace, name, subresource)
    type Parts = (String, Option<String>, Option<String>, Option<String>);

    fn target(path: &str) -> Option<Parts> {
        match route(path)? {
            Route::Resource(t) => Some((t.resource.plural.to_string(), t.namespace, t.name, t.subresource)),
            Route::Discovery(_) => None,
        }
    }

    #[test]
    fn urls_map_to_resources() {
        let s = |x: &str| Some(x.to_string());
        assert_eq!(
            target("/api/v1/namespaces/default/pods"),
            Some(("pods".into(), s("default"), None, None))
        );
        assert_eq!(
            target("/api/v1/namespaces/default/pods/p/status"),
            Some(("pods".into(), s("default"), s("p"), s("status")))
        );
        assert_eq!(target("/api/v1/pods"), Some(("pods".into(), None, None, None)));
        assert_eq!(
            target("/api/v1/namespaces"),
            Some(("namespaces".into(), None, None, None))
        );
        assert_eq!(
            target("/api/v1/namespaces/kube-system"),
            Some(("namespaces".into(), None, s("kube-system"), None))
        );
        assert_eq!(
            target("/api/v1/namespaces/x/status"),
            Some(("namespaces".into(), None, s("x"), s("status")))
        );
        assert_eq!(
            target("/apis/apps/v1/namespaces/a/deployments/d/scale"),
            Some(("deployments".into(), s("a"), s("d"), s("scale")))
        );
        assert_eq!(
            target("/api/v1/pods/p"),
            None,
            "a namespaced object needs its namespace"
        );
        assert_eq!(
            target("/api/v1/namespaces/a/nodes"),
            None,
            "nodes are not namespaced"
        );
        assert_eq!(
            target("/api/v1/namespaces/a/configmaps/c/status"),
            None,
            "configmaps have no status"
        );
        assert_eq!(target("/api/v2/pods"), None);
        assert!(matches!(route("/apis/apps/v1"), Some(Route::Discovery(_))));
    }

    #[test]
    fn updates_that_change_nothing_but_versions_and_times_are_no_ops() {
        let current = json!({"metadata": {"name": "p", "resourceVersion": "7",
            "managedFields": [{"manager": "kubelet", "time": "2026-12-01T00:00:00Z"}]}, "status": {"phase": "Running"}});
        let mut same = current.clone();
        same["metadata"]["resourceVersion"] = json!("8");
        same["metadata"]["managedFields"][0]["time"] = json!("2026-12-01T00:00:09Z");
        assert!(is_no_op(&current, &same));
        let mut changed = same.clone();
        changed["status"]["phase"] = json!("Succeeded");
        assert!(!is_no_op(&current, &changed));
        let mut other_manager = same;
        other_manager["metadata"]["managedFields"][0]["manager"] = json!("kubectl");
        assert!(!is_no_op(&current, &other_manager));
    }

    #[test]
    fn only_objects_without_a_pending_grace_period_go_when_their_finalizers_do() {
        let Some(Route::Resource(pods)) = route("/api/v1/namespaces/default/pods/p") else {
            panic!("no route for pods");
        };
        let object = |grace: Option<i64>, finalizers: serde_json::Value| {
            let mut o = json!({"metadata": {"name": "p", "deletionTimestamp": "2026-12-01T00:00:00Z",
                "finalizers": finalizers}});
            if let Some(grace) = grace {
                o["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
            }
            o
        };
        assert!(being_finalized(&pods, &object(Some(0), json!([]))));
        assert!(being_finalized(&pods, &object(None, json!([]))));
        // A terminating pod's status updates (the node agent's) must not delete it before its containers stop.
        assert!(!being_finalized(&pods, &object(Some(30), json!([]))));
        assert!(!being_finalized(
            &pods,
            &object(Some(0), json!(["example.com/hold"]))
        ));
    }

    #[test]
    fn queries_decode_and_continue_tokens_round_trip() {
        let q = Query::parse(Some(
            "labelSelector=app%3Dweb%2Ctier+in+%28a%29&watch=true&limit=5",
        ));
        assert_eq!(q.get("labelSelector"), Some("app=web,tier in (a)"));
        assert!(q.flag("watch"));
        let token = encode_continue(42, "/registry/core/pods/a/b\u{0}");
        assert_eq!(
            decode_continue(&token),
            Some((42, "/registry/core/pods/a/b\u{0}".to_string()))
        );
        assert_eq!(decode_continue("garbage!"), None);
    }

    #[test]
    fn pods_get_kubernetes_default_toleration_seconds() {
        let defaulted = |spec: Value| -> Value {
            let mut pod = json!({"metadata": {"name": "p"}, "spec": spec});
            default_toleration_seconds(&mut pod);
            pod["spec"]["tolerations"].clone()
        };
        let five_minutes = |key: &str| json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300});
        assert_eq!(
            defaulted(json!({"containers": []})),
            json!([
                five_minutes("node.kubernetes.io/not-ready"),
                five_minutes("node.kubernetes.io/unreachable")
            ])
        );
        // One already tolerated (any effect counts when none is named) is left as it is.
        let own =
            json!({"key": "node.kubernetes.io/unreachable", "operator": "Exists", "tolerationSeconds": 5});
        assert_eq!(
            defaulted(json!({"tolerations": [own.clone()]})),
            json!([own, five_minutes("node.kubernetes.io/not-ready")])
        );
        // A toleration of every key with NoExecute covers both; a NoSchedule one covers neither.
        let all = json!({"operator": "Exists", "effect": "NoExecute"});
        assert_eq!(defaulted(json!({"tolerations": [all.clone()]})), json!([all]));
        let no_schedule =
            json!({"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoSchedule"});
        assert_eq!(
            defaulted(json!({"tolerations": [no_schedule]}))
                .as_array()
                .map(Vec::len),
            Some(3)
        );
    }
}
