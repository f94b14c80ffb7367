//! Field management: `metadata.managedFields` and server-side apply (`application/apply-patch+yaml`).
//!
//! Every write records which manager set which fields: an `Update` entry for creates, updates and patches, an
//! `Apply` entry for applies. An apply sends the fields its manager wants to own; fields another manager owns
//! with a different value are conflicts (409) unless `force=true`, which moves them to the applier; fields the
//! applier owned before and no longer sends are removed unless someone else owns them. Lists merge by their
//! list type (keyed `map` lists element by element, `set`s by value, the rest atomically).

use serde_json::{Map, Value, json};

use super::fields::{self, FieldSet, ListKind, Path, field_set};
use crate::schema::types::{Shape, Types};

/// Who writes, for which API version, through which subresource.
#[derive(Clone, Debug)]
pub struct Manager {
    pub name: String,
    pub api_version: String,
    /// `status` for writes through the status subresource.
    pub subresource: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ApplyError {
    /// (manager, its apiVersion, path) for each conflicting field.
    #[error("Apply failed with {} conflict(s)", .0.len())]
    Conflicts(Vec<(String, String, String)>),
    #[error("metadata.managedFields must be nil in an apply request")]
    ManagedFieldsInBody,
}

#[derive(Clone, Debug)]
struct Entry {
    manager: String,
    operation: String,
    api_version: String,
    time: String,
    subresource: Option<String>,
    set: FieldSet,
}

fn entries(object: &Value) -> Vec<Entry> {
    object
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|e| Entry {
            manager: e.get("manager").and_then(Value::as_str).unwrap_or("").to_string(),
            operation: e
                .get("operation")
                .and_then(Value::as_str)
                .unwrap_or("Update")
                .to_string(),
            api_version: e
                .get("apiVersion")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            time: e.get("time").and_then(Value::as_str).unwrap_or("").to_string(),
            subresource: e.get("subresource").and_then(Value::as_str).map(String::from),
            set: e.get("fieldsV1").map(fields::from_fields_v1).unwrap_or_default(),
        })
        .collect()
}

fn write_entries(object: &mut Value, entries: Vec<Entry>) {
    let list: Vec<Value> = entries
        .into_iter()
        .filter(|e| !e.set.is_empty())
        .map(|e| {
            let mut v = json!({
                "manager": e.manager,
                "operation": e.operation,
                "apiVersion": e.api_version,
                "time": e.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": fields::to_fields_v1(&e.set),
            });
            if let Some(s) = e.subresource {
                v["subresource"] = Value::String(s);
            }
            v
        })
        .collect();
    if !object.get("metadata").is_some_and(Value::is_object) {
        object["metadata"] = json!({});
    }
    if list.is_empty() {
        if let Some(m) = object["metadata"].as_object_mut() {
            m.remove("managedFields");
        }
    } else {
        object["metadata"]["managedFields"] = Value::Array(list);
    }
}

fn now() -> String {
    crate::resources::now_rfc3339()
}

/// The part of an object a manager of `subresource` manages: status for `status`, the rest otherwise.
fn managed_set(types: &Types, shape: &Shape, object: &Value, subresource: Option<&str>) -> FieldSet {
    match subresource {
        Some("status") => {
            let status = object.get("status").cloned().unwrap_or(Value::Null);
            let mut only = Map::new();
            only.insert("status".into(), status);
            let mut set = FieldSet::new();
            if let Shape::Object(definition) = shape
                && let Some(status_shape) = types.field_shape(definition, "status")
            {
                for mut p in field_set(types, &status_shape, &only["status"], false) {
                    p.insert(0, "f:status".into());
                    set.insert(p);
                }
            }
            set
        }
        _ => field_set(types, shape, object, true),
    }
}

fn same(a: &Value, b: &Value, path: &Path) -> bool {
    fields::value_at(a, path) == fields::value_at(b, path)
}

/// Records an `Update` by `manager` that turned `old` (absent for a create) into `new`, in `new`'s managedFields.
pub fn record_update(definition: &str, old: Option<&Value>, new: &mut Value, manager: &Manager) {
    let old_fields = old.and_then(|o| o.pointer("/metadata/managedFields")).cloned();
    let new_fields = new.pointer("/metadata/managedFields").cloned();
    if new_fields.is_some() && new_fields != old_fields {
        return; // the client rewrote managedFields itself (as kubectl's client-side-apply migration does)
    }
    let types = Types::get();
    let shape = Shape::Object(definition.to_string());
    let sub = manager.subresource.as_deref();
    let empty = json!({});
    let old_object = old.unwrap_or(&empty);
    let old_set = managed_set(types, &shape, old_object, sub);
    let new_set = managed_set(types, &shape, new, sub);
    let changed: FieldSet = new_set
        .iter()
        .filter(|p| !same(old_object, new, p))
        .cloned()
        .collect();
    let removed: FieldSet = old_set.difference(&new_set).cloned().collect();
    let mut list = old.map(entries).unwrap_or_default();
    for e in &mut list {
        e.set.retain(|p| !removed.contains(p));
        let is_this = e.manager == manager.name && e.operation == "Update" && e.subresource.as_deref() == sub;
        if !is_this {
            e.set.retain(|p| !changed.contains(p));
        }
    }
    if !changed.is_empty() {
        match list
            .iter_mut()
            .find(|e| e.manager == manager.name && e.operation == "Update" && e.subresource.as_deref() == sub)
        {
            Some(e) => {
                e.set.extend(changed);
                e.time = now();
                e.api_version = manager.api_version.clone();
            }
            None => list.push(Entry {
                manager: manager.name.clone(),
                operation: "Update".into(),
                api_version: manager.api_version.clone(),
                time: now(),
                subresource: manager.subresource.clone(),
                set: changed,
            }),
        }
    }
    write_entries(new, list);
}

/// Server-side apply of `applied` by `manager` onto `live` (absent: the object is created). Returns the object
/// to store, managedFields included.
pub fn apply(
    definition: &str,
    live: Option<&Value>,
    applied: &Value,
    manager: &Manager,
    force: bool,
) -> Result<Value, ApplyError> {
    if applied
        .pointer("/metadata/managedFields")
        .is_some_and(|m| !m.is_null())
    {
        return Err(ApplyError::ManagedFieldsInBody);
    }
    let types = Types::get();
    let shape = Shape::Object(definition.to_string());
    let sub = manager.subresource.as_deref();
    let base = live.cloned().unwrap_or_else(|| json!({}));
    let mut list = entries(&base);
    let is_this =
        |e: &Entry| e.manager == manager.name && e.operation == "Apply" && e.subresource.as_deref() == sub;
    let applied_set = managed_set(types, &shape, applied, sub);
    let previous = list
        .iter()
        .find(|e| is_this(e))
        .map(|e| e.set.clone())
        .unwrap_or_default();

    let mut conflicts = Vec::new();
    for e in list.iter().filter(|e| !is_this(e)) {
        for p in e.set.intersection(&applied_set) {
            if !same(&base, applied, p) {
                conflicts.push((e.manager.clone(), e.api_version.clone(), fields::display(p)));
            }
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(ApplyError::Conflicts(conflicts));
    }

    let others: FieldSet = list
        .iter()
        .filter(|e| !is_this(e))
        .flat_map(|e| e.set.iter().cloned())
        .collect();
    let mut result = base.clone();
    // Fields this manager applied before and no longer does, and nobody else owns, go. Deepest first, so a
    // removed element takes its fields with it.
    let mut dropped: Vec<&Path> = previous
        .iter()
        .filter(|p| !applied_set.contains(*p) && !others.contains(*p))
        .collect();
    dropped.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in dropped {
        fields::remove_at(&mut result, p);
    }
    merge(types, &shape, &mut result, applied);

    // Fields whose value this apply changed leave their other owners (the forced conflicts).
    let taken: FieldSet = applied_set
        .iter()
        .filter(|p| !same(&base, applied, p))
        .cloned()
        .collect();
    for e in list.iter_mut().filter(|e| !is_this(e)) {
        e.set.retain(|p| !taken.contains(p));
    }
    list.retain(|e| !is_this(e));
    list.push(Entry {
        manager: manager.name.clone(),
        operation: "Apply".into(),
        api_version: manager.api_version.clone(),
        time: now(),
        subresource: manager.subresource.clone(),
        set: applied_set,
    });
    write_entries(&mut result, list);
    Ok(result)
}

/// Merges an applied configuration into an object: maps by key, keyed lists by element, sets by value; atomic
/// lists and scalars are replaced.
fn merge(types: &Types, shape: &Shape, target: &mut Value, applied: &Value) {
    let (Value::Object(target_map), Value::Object(applied_map)) = (&mut *target, applied) else {
        *target = applied.clone();
        return;
    };
    for (key, value) in applied_map {
        if value.is_null() {
            target_map.remove(key);
            continue;
        }
        let child = fields::child_shape(types, shape, key);
        let Some(existing) = target_map.get_mut(key) else {
            target_map.insert(key.clone(), value.clone());
            continue;
        };
        match (existing, value) {
            (existing @ Value::Array(_), Value::Array(items)) => {
                let Value::Array(current) = existing else { continue };
                match fields::list_kind(shape, key) {
                    ListKind::Map(keys) => {
                        let element_shape = match &child {
                            Shape::List(inner) => (**inner).clone(),
                            _ => Shape::Any,
                        };
                        for item in items {
                            let id = fields::key_element(item, &keys);
                            let found = current
                                .iter_mut()
                                .find(|e| id.is_some() && fields::key_element(e, &keys) == id);
                            match found {
                                Some(element) => merge(types, &element_shape, element, item),
                                None => current.push(item.clone()),
                            }
                        }
                    }
                    ListKind::Set => {
                        for item in items {
                            if !current.contains(item) {
                                current.push(item.clone());
                            }
                        }
                    }
                    ListKind::Atomic => *current = items.clone(),
                }
            }
            (existing @ Value::Object(_), Value::Object(_))
                if matches!(child, Shape::Object(_) | Shape::Map(_) | Shape::Any) =>
            {
                merge(types, &child, existing, value);
            }
            (existing, _) => *existing = value.clone(),
        }
    }
}

#[cfg(test)]
mod tests;
