//! CustomResourceDefinitions themselves: their defaults and validation (apiextensions-apiserver's
//! `pkg/apis/apiextensions/validation` and registry strategy), and the controller every API server runs over
//! them: it keeps the served kinds in step with the stored CRDs, sets `NamesAccepted` and `Established`
//! (`pkg/controller/status`, `establish`), and, for a CRD being deleted, removes all its objects before it lets
//! the CRD go (`pkg/controller/finalizer`, the `customresourcecleanup.apiextensions.k8s.io` finalizer).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use embedded_store::{DeleteOutcome, EventKind, RangeRequest, Store, StoreError, WatchRequest, WriteOutcome};
use futures_util::StreamExt;
use serde_json::{Value, json};

use super::super::errors::FieldError;
use super::super::objects;
use super::super::validation::{is_dns1123_label, is_dns1123_subdomain};

/// The finalizer a CRD's deletion adds; the controller removes it once the CRD's objects are gone.
pub const CLEANUP_FINALIZER: &str = "customresourcecleanup.apiextensions.k8s.io";
const PREFIX: &str = "/registry/apiextensions.k8s.io/customresourcedefinitions/";

pub fn is_crd(group: &str, kind: &str) -> bool {
    group == "apiextensions.k8s.io" && kind == "CustomResourceDefinition"
}

fn storage_version(crd: &Value) -> Option<String> {
    crd.pointer("/spec/versions")?
        .as_array()?
        .iter()
        .find(|v| v["storage"] == true)?
        .get("name")?
        .as_str()
        .map(String::from)
}

/// `SetDefaults_CustomResourceDefinition` and the strategy's `PrepareForCreate`/`PrepareForUpdate`: the names'
/// singular and listKind, conversion `None`, and the storage version recorded in `status.storedVersions`.
pub fn prepare(crd: &mut Value, old: Option<&Value>) {
    if !crd.get("spec").is_some_and(Value::is_object) {
        return;
    }
    let spec = &mut crd["spec"];
    if let Some(kind) = spec
        .pointer("/names/kind")
        .and_then(Value::as_str)
        .map(String::from)
    {
        if spec
            .pointer("/names/singular")
            .is_none_or(|s| s.as_str().is_none_or(str::is_empty))
        {
            spec["names"]["singular"] = json!(kind.to_lowercase());
        }
        if spec
            .pointer("/names/listKind")
            .is_none_or(|s| s.as_str().is_none_or(str::is_empty))
        {
            spec["names"]["listKind"] = json!(format!("{kind}List"));
        }
    }
    if spec.get("conversion").is_none() {
        spec["conversion"] = json!({"strategy": "None"});
    }
    let mut status = match old {
        None => json!({"conditions": [], "acceptedNames": {"plural": "", "kind": ""}, "storedVersions": []}),
        Some(old) => old.get("status").cloned().unwrap_or_else(|| json!({})),
    };
    if let Some(storage) = storage_version(crd) {
        if !status.get("storedVersions").is_some_and(Value::is_array) {
            status["storedVersions"] = json!([]);
        }
        if let Some(stored) = status["storedVersions"].as_array_mut()
            && !stored.iter().any(|v| v == storage.as_str())
        {
            stored.push(json!(storage));
        }
    }
    crd["status"] = status;
}

fn err(field: impl Into<String>, reason: &'static str, message: impl Into<String>) -> FieldError {
    FieldError {
        field: field.into(),
        reason,
        message: message.into(),
    }
}

/// `ValidateCustomResourceDefinition`: the causes of a 422.
pub fn validate(crd: &Value) -> Vec<FieldError> {
    let mut out = Vec::new();
    let spec = &crd["spec"];
    let group = spec["group"].as_str().unwrap_or("");
    let plural = spec
        .pointer("/names/plural")
        .and_then(Value::as_str)
        .unwrap_or("");
    let name = crd
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    if name != format!("{plural}.{group}") {
        out.push(err(
            "metadata.name",
            "FieldValueInvalid",
            format!("Invalid value: {name:?}: must be spec.names.plural+\".\"+spec.group"),
        ));
    }
    if group.is_empty() {
        out.push(err("spec.group", "FieldValueRequired", "Required value"));
    } else if !is_dns1123_subdomain(group) {
        out.push(err("spec.group", "FieldValueInvalid", format!("Invalid value: {group:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")));
    } else if group.split('.').count() < 2 {
        out.push(err(
            "spec.group",
            "FieldValueInvalid",
            format!("Invalid value: {group:?}: should be a domain with at least one dot"),
        ));
    }
    match spec["scope"].as_str() {
        Some("Cluster" | "Namespaced") => {}
        None | Some("") => out.push(err("spec.scope", "FieldValueRequired", "Required value")),
        Some(other) => out.push(err(
            "spec.scope",
            "FieldValueNotSupported",
            format!("Unsupported value: {other:?}: supported values: \"Cluster\", \"Namespaced\""),
        )),
    }
    let names = &spec["names"];
    for (field, value) in [
        ("plural", names["plural"].as_str()),
        ("singular", names["singular"].as_str()),
    ] {
        match value {
            None | Some("") => out.push(err(format!("spec.names.{field}"), "FieldValueRequired", "Required value")),
            Some(v) if !is_dns1123_label(v) => out.push(err(
                format!("spec.names.{field}"),
                "FieldValueInvalid",
                format!("Invalid value: {v:?}: a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"),
            )),
            Some(_) => {}
        }
    }
    for field in ["kind", "listKind"] {
        match names[field].as_str() {
            None | Some("") => out.push(err(format!("spec.names.{field}"), "FieldValueRequired", "Required value")),
            Some(v) if !is_dns1123_label(&v.to_lowercase()) => out.push(err(
                format!("spec.names.{field}"),
                "FieldValueInvalid",
                format!("Invalid value: {v:?}: may have mixed case, but should otherwise match: [a-z0-9]([-a-z0-9]*[a-z0-9])?"),
            )),
            Some(_) => {}
        }
    }
    if names["kind"].is_string() && names["kind"] == names["listKind"] {
        out.push(err(
            "spec.names.listKind",
            "FieldValueInvalid",
            "Invalid value: kind and listKind may not be the same or parsing become ambiguous",
        ));
    }
    for (i, short) in names["shortNames"].as_array().into_iter().flatten().enumerate() {
        let s = short.as_str().unwrap_or("");
        if !is_dns1123_label(s) {
            out.push(err(format!("spec.names.shortNames[{i}]"), "FieldValueInvalid", format!("Invalid value: {s:?}: a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character")));
        }
    }
    let versions = spec["versions"].as_array().cloned().unwrap_or_default();
    if versions.is_empty() {
        out.push(err(
            "spec.versions",
            "FieldValueInvalid",
            "Invalid value: null: must have exactly one version marked as storage version",
        ));
    } else {
        let storage = versions.iter().filter(|v| v["storage"] == true).count();
        if storage != 1 {
            out.push(err(
                "spec.versions",
                "FieldValueInvalid",
                format!(
                    "Invalid value: {}: must have exactly one version marked as storage version",
                    shown_versions(&versions)
                ),
            ));
        }
        if !versions.iter().any(|v| v["served"] == true) {
            out.push(err(
                "spec.versions",
                "FieldValueInvalid",
                format!(
                    "Invalid value: {}: must have at least one version marked as served",
                    shown_versions(&versions)
                ),
            ));
        }
    }
    let mut seen = Vec::new();
    for (i, v) in versions.iter().enumerate() {
        let path = format!("spec.versions[{i}]");
        let vname = v["name"].as_str().unwrap_or("");
        if vname.is_empty() {
            out.push(err(
                format!("{path}.name"),
                "FieldValueRequired",
                "Required value",
            ));
        } else if !is_dns1123_label(vname) || vname.starts_with(|c: char| c.is_ascii_digit()) {
            out.push(err(format!("{path}.name"), "FieldValueInvalid", format!("Invalid value: {vname:?}: a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')")));
        }
        if seen.contains(&vname) {
            out.push(err(
                format!("{path}.name"),
                "FieldValueInvalid",
                format!("Invalid value: {vname:?}: must be unique"),
            ));
        }
        seen.push(vname);
        match v.pointer("/schema/openAPIV3Schema") {
            None => out.push(err(
                format!("{path}.schema.openAPIV3Schema"),
                "FieldValueRequired",
                "Required value: schemas are required",
            )),
            Some(schema) => out.extend(super::schema::check_structural(
                schema,
                &format!("{path}.schema.openAPIV3Schema"),
            )),
        }
        if let Some(scale) = v.pointer("/subresources/scale") {
            for field in ["specReplicasPath", "statusReplicasPath"] {
                match scale[field].as_str() {
                    None | Some("") => out.push(err(
                        format!("{path}.subresources.scale.{field}"),
                        "FieldValueRequired",
                        "Required value",
                    )),
                    Some(p) if !p.starts_with('.') => out.push(err(
                        format!("{path}.subresources.scale.{field}"),
                        "FieldValueInvalid",
                        format!("Invalid value: {p:?}: should be a json path under .spec"),
                    )),
                    Some(_) => {}
                }
            }
        }
        check_selectable_fields(v, &path, &mut out);
        for (j, c) in v["additionalPrinterColumns"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let cpath = format!("{path}.additionalPrinterColumns[{j}]");
            if c["name"].as_str().is_none_or(str::is_empty) {
                out.push(err(
                    format!("{cpath}.name"),
                    "FieldValueRequired",
                    "Required value",
                ));
            }
            match c["type"].as_str() {
                Some("integer" | "number" | "string" | "boolean" | "date") => {}
                None | Some("") => out.push(err(format!("{cpath}.type"), "FieldValueRequired", "Required value")),
                Some(t) => out.push(err(format!("{cpath}.type"), "FieldValueNotSupported", format!("Unsupported value: {t:?}: supported values: \"boolean\", \"date\", \"integer\", \"number\", \"string\""))),
            }
            if c["jsonPath"].as_str().is_none_or(str::is_empty) {
                out.push(err(
                    format!("{cpath}.JSONPath"),
                    "FieldValueRequired",
                    "Required value",
                ));
            }
        }
    }
    if let Some(strategy) = spec.pointer("/conversion/strategy").and_then(Value::as_str)
        && strategy != "None"
    {
        out.push(err("spec.conversion.strategy", "FieldValueNotSupported", format!("Unsupported value: {strategy:?}: supported values: \"None\" (conversion webhooks are not served by bonsai)")));
    }
    out
}

/// A version's `selectableFields`: at most 8, each the path of a string, integer or boolean field of its schema.
fn check_selectable_fields(v: &Value, path: &str, out: &mut Vec<FieldError>) {
    let selectable = v["selectableFields"].as_array().cloned().unwrap_or_default();
    if selectable.len() > 8 {
        out.push(err(
            format!("{path}.selectableFields"),
            "FieldValueTooMany",
            format!("Too many: {}: must have at most 8 items", selectable.len()),
        ));
    }
    for (j, f) in selectable.iter().enumerate() {
        let field = format!("{path}.selectableFields[{j}].jsonPath");
        let json_path = f["jsonPath"].as_str().unwrap_or("");
        let mut at = v.pointer("/schema/openAPIV3Schema");
        for part in json_path.trim_start_matches('.').split('.') {
            at = at.and_then(|s| s.get("properties")).and_then(|p| p.get(part));
        }
        let kind = at.and_then(|s| s["type"].as_str());
        if json_path.is_empty() {
            out.push(err(field, "FieldValueRequired", "Required value"));
        } else if !json_path.starts_with('.') || at.is_none() {
            out.push(err(
                field,
                "FieldValueInvalid",
                format!("Invalid value: {json_path:?}: is an invalid path: does not refer to a valid field"),
            ));
        } else if !matches!(kind, Some("string" | "integer" | "boolean")) {
            out.push(err(field, "FieldValueInvalid", format!("Invalid value: {json_path:?}: must point to a field of type string, boolean or integer. Enum string fields and strings with formats are allowed.")));
        }
    }
}

/// What `ValidateCustomResourceDefinitionUpdate` adds: the scope is immutable, stored versions stay defined.
pub fn validate_update(crd: &Value, old: &Value) -> Vec<FieldError> {
    let mut out = Vec::new();
    let spec = &crd["spec"];
    let versions = spec["versions"].as_array().cloned().unwrap_or_default();
    if old["spec"]["scope"] != spec["scope"] {
        out.push(err(
            "spec.scope",
            "FieldValueInvalid",
            format!("Invalid value: {}: field is immutable", spec["scope"]),
        ));
    }
    if let Some(stored) = crd.pointer("/status/storedVersions").and_then(Value::as_array) {
        for (i, sv) in stored.iter().enumerate() {
            if !versions.iter().any(|v| v["name"] == *sv) {
                out.push(err(
                    format!("status.storedVersions[{i}]"),
                    "FieldValueInvalid",
                    format!("Invalid value: {sv}: must appear in spec.versions"),
                ));
            }
        }
    }
    out
}

fn shown_versions(versions: &[Value]) -> String {
    let parts: Vec<String> = versions
        .iter()
        .map(|v| {
            format!(
                "apiextensions.CustomResourceDefinitionVersion{{Name:{:?}, Served:{}, Storage:{}}}",
                v["name"].as_str().unwrap_or(""),
                v["served"] == true,
                v["storage"] == true
            )
        })
        .collect();
    format!(
        "[]apiextensions.CustomResourceDefinitionVersion{{{}}}",
        parts.join(", ")
    )
}

/// What a delete of a CRD does first (the CRD REST's `Delete`): the cleanup finalizer and the Terminating condition.
pub fn mark_for_deletion(crd: &mut Value) {
    let finalizers = crd["metadata"]
        .as_object_mut()
        .map(|m| m.entry("finalizers").or_insert_with(|| json!([])));
    if let Some(Value::Array(list)) = finalizers
        && !list.iter().any(|f| f == CLEANUP_FINALIZER)
    {
        list.push(json!(CLEANUP_FINALIZER));
    }
    set_condition(
        crd,
        "Terminating",
        "True",
        "InstanceDeletionPending",
        "CustomResourceDefinition marked for deletion; CustomResource deletion will begin soon",
    );
}

/// Sets a status condition, keeping its transition time when its status does not change. True when it changed.
fn set_condition(crd: &mut Value, kind: &str, status: &str, reason: &str, message: &str) -> bool {
    if !crd.get("status").is_some_and(Value::is_object) {
        crd["status"] = json!({});
    }
    if !crd["status"].get("conditions").is_some_and(Value::is_array) {
        crd["status"]["conditions"] = json!([]);
    }
    let Some(conditions) = crd["status"]["conditions"].as_array_mut() else {
        return false;
    };
    let now = objects::now_rfc3339();
    match conditions.iter_mut().find(|c| c["type"] == kind) {
        Some(c) if c["status"] == status && c["reason"] == reason && c["message"] == message => false,
        Some(c) => {
            if c["status"] != status {
                c["lastTransitionTime"] = json!(now);
            }
            c["status"] = json!(status);
            c["reason"] = json!(reason);
            c["message"] = json!(message);
            true
        }
        None => {
            conditions.push(json!({"type": kind, "status": status, "reason": reason, "message": message, "lastTransitionTime": now}));
            true
        }
    }
}

/// The names the other CRDs of the group already have (`pkg/controller/status`'s naming check): a message
/// for the first one this CRD's names collide with.
fn name_conflict(crd: &Value, all: &BTreeMap<String, (Value, i64)>) -> Option<String> {
    let group = &crd["spec"]["group"];
    let me = crd.pointer("/metadata/name");
    let names = &crd["spec"]["names"];
    let mine_plural: Vec<&Value> = [&names["plural"], &names["singular"]]
        .into_iter()
        .chain(names["shortNames"].as_array().into_iter().flatten())
        .filter(|v| v.is_string())
        .collect();
    for (other, _) in all.values() {
        if other.pointer("/metadata/name") == me || &other["spec"]["group"] != group {
            continue;
        }
        let accepted = &other["status"]["acceptedNames"];
        let theirs: Vec<&Value> = [&accepted["plural"], &accepted["singular"]]
            .into_iter()
            .chain(accepted["shortNames"].as_array().into_iter().flatten())
            .filter(|v| v.as_str().is_some_and(|s| !s.is_empty()))
            .collect();
        if let Some(taken) = mine_plural.iter().find(|n| theirs.contains(n)) {
            return Some(format!("{taken} is already in use"));
        }
        if accepted["kind"] == names["kind"] || accepted["listKind"] == names["listKind"] {
            return Some(format!("{} is already in use", names["kind"]));
        }
    }
    None
}

/// Runs the CRD controller until the store closes.
pub async fn run(store: Arc<dyn Store>) {
    loop {
        match follow(&*store).await {
            Err(StoreError::Closed) => return,
            Err(e) => tracing::warn!(error = %e, "the CRD controller lost its store watch; restarting it"),
            Ok(()) => {}
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn follow(store: &dyn Store) -> Result<(), StoreError> {
    let page = store
        .range(RangeRequest {
            prefix: Bytes::from(PREFIX),
            ..RangeRequest::default()
        })
        .await?;
    let mut all: BTreeMap<String, (Value, i64)> = BTreeMap::new();
    for kv in &page.kvs {
        if let Ok(crd) = serde_json::from_slice::<Value>(&kv.value) {
            all.insert(
                String::from_utf8_lossy(&kv.key).into_owned(),
                (crd, kv.mod_revision),
            );
        }
    }
    super::serve_only(all.values().map(|(c, _)| c));
    let keys: Vec<String> = all.keys().cloned().collect();
    for key in keys {
        reconcile(store, &key, &mut all).await?;
    }
    let mut stream = store
        .watch(WatchRequest {
            prefix: Bytes::from(PREFIX),
            start_revision: page.revision + 1,
        })
        .await?;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            event = stream.next() => {
                let Some(event) = event else { return Ok(()) };
                let event = event?;
                let key = String::from_utf8_lossy(&event.kv.key).into_owned();
                match event.kind {
                    EventKind::Put => {
                        let Ok(crd) = serde_json::from_slice::<Value>(&event.kv.value) else { continue };
                        all.insert(key.clone(), (crd, event.kv.mod_revision));
                        super::serve_only(all.values().map(|(c, _)| c));
                        reconcile(store, &key, &mut all).await?;
                    }
                    EventKind::Delete => {
                        all.remove(&key);
                        super::serve_only(all.values().map(|(c, _)| c));
                    }
                }
            }
            _ = tick.tick() => {
                // CRDs being deleted are finished off as their objects' finalizers let those go.
                let terminating: Vec<String> = all.iter().filter(|(_, (c, _))| c.pointer("/metadata/deletionTimestamp").is_some()).map(|(k, _)| k.clone()).collect();
                for key in terminating {
                    reconcile(store, &key, &mut all).await?;
                }
            }
        }
    }
}

/// Brings one CRD's status (and, when it is being deleted, its objects) to where they should be.
async fn reconcile(
    store: &dyn Store,
    key: &str,
    all: &mut BTreeMap<String, (Value, i64)>,
) -> Result<(), StoreError> {
    let Some((crd, rev)) = all.get(key).cloned() else {
        return Ok(());
    };
    let mut next = crd.clone();
    if crd.pointer("/metadata/deletionTimestamp").is_some() {
        let has_finalizer = crd
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| f.iter().any(|f| f == CLEANUP_FINALIZER));
        if !has_finalizer {
            return Ok(());
        }
        set_condition(
            &mut next,
            "Terminating",
            "True",
            "InstanceDeletionInProgress",
            "CustomResource deletion is in progress",
        );
        let left = delete_objects(store, &crd).await?;
        if left > 0 {
            set_condition(
                &mut next,
                "Terminating",
                "True",
                "InstanceDeletionInProgress",
                &format!("CustomResource deletion is in progress: {left} left"),
            );
        } else {
            set_condition(
                &mut next,
                "Terminating",
                "True",
                "InstanceDeletionCompleted",
                "removed all instances",
            );
            if let Some(list) = next["metadata"]["finalizers"].as_array_mut() {
                list.retain(|f| f != CLEANUP_FINALIZER);
            }
            let none_left = next
                .pointer("/metadata/finalizers")
                .and_then(Value::as_array)
                .is_none_or(Vec::is_empty);
            if none_left {
                if let DeleteOutcome::Deleted { .. } =
                    store.delete(Bytes::from(key.to_string()), Some(rev)).await?
                {
                    all.remove(key);
                    super::serve_only(all.values().map(|(c, _)| c));
                }
                return Ok(());
            }
        }
    } else {
        match name_conflict(&crd, all) {
            Some(message) => {
                set_condition(&mut next, "NamesAccepted", "False", "NameConflict", &message);
                if !super::condition_true(&crd, "Established") {
                    set_condition(
                        &mut next,
                        "Established",
                        "False",
                        "NotAccepted",
                        "not all names are accepted",
                    );
                }
            }
            None => {
                next["status"]["acceptedNames"] = crd["spec"]["names"].clone();
                set_condition(
                    &mut next,
                    "NamesAccepted",
                    "True",
                    "NoConflicts",
                    "no conflicts found",
                );
                set_condition(
                    &mut next,
                    "Established",
                    "True",
                    "InitialNamesAccepted",
                    "the initial names have been accepted",
                );
            }
        }
    }
    if next == crd {
        return Ok(());
    }
    let value = Bytes::from(objects::encode(&next));
    if let WriteOutcome::Written { revision, .. } =
        store.update(Bytes::from(key.to_string()), value, rev).await?
    {
        // Served at once, before this write's watch event comes back, so that a client that sees the CRD
        // Established finds its resources.
        all.insert(key.to_string(), (next, revision));
        super::serve_only(all.values().map(|(c, _)| c));
    }
    Ok(())
}

/// Deletes the objects of a CRD being deleted: those without finalizers at once, the rest marked for deletion.
/// The number still there.
async fn delete_objects(store: &dyn Store, crd: &Value) -> Result<usize, StoreError> {
    let (Some(group), Some(plural)) = (
        crd["spec"]["group"].as_str(),
        crd.pointer("/spec/names/plural").and_then(Value::as_str),
    ) else {
        return Ok(0);
    };
    let prefix = format!("/registry/{group}/{plural}/");
    let page = store
        .range(RangeRequest {
            prefix: Bytes::from(prefix),
            ..RangeRequest::default()
        })
        .await?;
    let mut left = 0;
    for kv in page.kvs {
        let Ok(mut object) = serde_json::from_slice::<Value>(&kv.value) else {
            store.delete(kv.key.clone(), Some(kv.mod_revision)).await?;
            continue;
        };
        let held = object
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty());
        if !held {
            store.delete(kv.key.clone(), Some(kv.mod_revision)).await?;
            continue;
        }
        left += 1;
        if object.pointer("/metadata/deletionTimestamp").is_none() {
            objects::set_meta(&mut object, "deletionTimestamp", json!(objects::now_rfc3339()));
            objects::set_meta(&mut object, "deletionGracePeriodSeconds", json!(0));
            store
                .update(
                    kv.key.clone(),
                    Bytes::from(objects::encode(&object)),
                    kv.mod_revision,
                )
                .await?;
        }
    }
    Ok(left)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crd() -> Value {
        json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "widgets.example.com"},
            "spec": {"group": "example.com", "scope": "Namespaced", "names": {"plural": "widgets", "kind": "Widget"},
                "versions": [{"name": "v1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": {"type": "object"}}}}}]}})
    }

    #[test]
    fn defaults_and_a_valid_crd() {
        let mut c = crd();
        prepare(&mut c, None);
        assert_eq!(c["spec"]["names"]["singular"], "widget");
        assert_eq!(c["spec"]["names"]["listKind"], "WidgetList");
        assert_eq!(c["spec"]["conversion"]["strategy"], "None");
        assert_eq!(c["status"]["storedVersions"], json!(["v1"]));
        assert!(validate(&c).is_empty(), "{:?}", validate(&c));
    }

    #[test]
    fn invalid_crds_name_their_fields() {
        let mut c = crd();
        c["metadata"]["name"] = json!("widgets");
        c["spec"]["group"] = json!("example");
        c["spec"]["versions"][0]["storage"] = json!(false);
        c["spec"]["versions"][0]["schema"] = json!(null);
        prepare(&mut c, None);
        let fields: Vec<String> = validate(&c).into_iter().map(|e| e.field).collect();
        assert_eq!(
            fields,
            [
                "metadata.name",
                "spec.group",
                "spec.versions",
                "spec.versions[0].schema.openAPIV3Schema"
            ]
        );
    }

    #[test]
    fn selectable_fields_name_scalar_fields() {
        let mut c = crd();
        c["spec"]["versions"][0]["selectableFields"] =
            json!([{"jsonPath": ".spec"}, {"jsonPath": ".spec.nope"}]);
        prepare(&mut c, None);
        let messages: Vec<String> = validate(&c)
            .into_iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect();
        assert_eq!(messages.len(), 2, "{messages:?}");
        assert!(messages[0].starts_with("spec.versions[0].selectableFields[0].jsonPath: Invalid value: \".spec\": must point to a field of type string"));
        assert!(messages[1].contains("does not refer to a valid field"));
    }

    #[test]
    fn deletion_adds_the_cleanup_finalizer() {
        let mut c = crd();
        mark_for_deletion(&mut c);
        assert_eq!(c["metadata"]["finalizers"], json!([CLEANUP_FINALIZER]));
        assert_eq!(c["status"]["conditions"][0]["type"], "Terminating");
    }
}
