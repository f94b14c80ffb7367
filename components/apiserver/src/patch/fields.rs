//! Field paths and field sets as server-side apply uses them (structured-merge-diff's `fieldpath`): a path is a
//! list of elements, `f:<field>`, `k:<key fields as JSON>` for an element of a keyed list, `v:<value as JSON>` for
//! a member of a set, `i:<index>` elsewhere, and `.` for "the element itself". A set of paths is written to
//! `managedFields[].fieldsV1` as a tree of those elements.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use crate::schema::patch_meta::patch_meta;
use crate::schema::types::{Shape, Types};

pub type Path = Vec<String>;
pub type FieldSet = BTreeSet<Path>;

/// Top-level and metadata fields that nobody "manages": the server owns them.
const UNTRACKED_METADATA: &[&str] = &[
    "name",
    "namespace",
    "generateName",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
];

/// How a list field is keyed, from the patch metadata table: `map` lists by their keys, `set`s by value; all
/// other lists are atomic.
pub enum ListKind {
    Map(Vec<String>),
    Set,
    Atomic,
}

pub fn list_kind(parent: &Shape, field: &str) -> ListKind {
    let Shape::Object(definition) = parent else {
        return ListKind::Atomic;
    };
    if let Some((list_type, keys)) = crate::schema::types::custom_list_type(definition, field) {
        // A custom resource's list, as its CRD's schema types it.
        return match list_type.as_str() {
            "map" => ListKind::Map(keys),
            "set" => ListKind::Set,
            _ => ListKind::Atomic,
        };
    }
    match patch_meta(definition, field) {
        Some(m) if m.list_type == Some("map") => {
            let keys = if m.map_keys.is_empty() {
                m.merge_key.into_iter().map(String::from).collect()
            } else {
                m.map_keys.iter().map(|k| k.to_string()).collect()
            };
            ListKind::Map(keys)
        }
        Some(m) if m.list_type == Some("set") => ListKind::Set,
        _ => ListKind::Atomic,
    }
}

pub fn child_shape(types: &Types, shape: &Shape, key: &str) -> Shape {
    match shape {
        Shape::Object(name) => types.field_shape(name, key).unwrap_or(Shape::Any),
        Shape::Map(inner) => (**inner).clone(),
        _ => Shape::Any,
    }
}

/// The `k:` element of a keyed list's element: its key fields as a JSON object (keys in name order).
pub fn key_element(element: &Value, keys: &[String]) -> Option<String> {
    let mut map = Map::new();
    for key in keys {
        if let Some(v) = element.get(key) {
            map.insert(key.clone(), v.clone());
        } else if key == "protocol" && !map.is_empty() {
            // A key field left out takes its OpenAPI default, as structured-merge-diff does; `protocol` (of
            // container, service and endpoint ports) is the only defaulted key field of the built-in types.
            map.insert("protocol".into(), Value::String("TCP".into()));
        }
    }
    if map.is_empty() {
        return None;
    }
    Some(format!("k:{}", Value::Object(map)))
}

/// Every leaf path of `value` (an object of `shape`): the fields it sets.
pub fn field_set(types: &Types, shape: &Shape, value: &Value, tracked_only: bool) -> FieldSet {
    let mut out = FieldSet::new();
    let mut prefix = Vec::new();
    collect(types, shape, value, &mut prefix, &mut out, tracked_only);
    out
}

fn collect(types: &Types, shape: &Shape, value: &Value, prefix: &mut Path, out: &mut FieldSet, top: bool) {
    let Value::Object(map) = value else {
        out.insert(prefix.clone());
        return;
    };
    if map.is_empty() && !prefix.is_empty() {
        out.insert(prefix.clone());
        return;
    }
    for (key, child) in map {
        if top && prefix.is_empty() && matches!(key.as_str(), "apiVersion" | "kind" | "status") {
            continue;
        }
        if top && prefix.len() == 1 && prefix[0] == "f:metadata" && UNTRACKED_METADATA.contains(&key.as_str())
        {
            continue;
        }
        if child.is_null() {
            continue;
        }
        let shape_of_child = child_shape(types, shape, key);
        prefix.push(format!("f:{key}"));
        match child {
            Value::Array(items) => match list_kind(shape, key) {
                ListKind::Map(keys) => {
                    let element_shape = match &shape_of_child {
                        Shape::List(inner) => (**inner).clone(),
                        _ => Shape::Any,
                    };
                    for item in items {
                        match key_element(item, &keys) {
                            Some(k) => {
                                prefix.push(k);
                                prefix.push(".".into());
                                out.insert(prefix.clone());
                                prefix.pop();
                                collect(types, &element_shape, item, prefix, out, top);
                                prefix.pop();
                            }
                            None => {
                                out.insert(prefix.clone());
                            }
                        }
                    }
                    if items.is_empty() {
                        out.insert(prefix.clone());
                    }
                }
                ListKind::Set => {
                    for item in items {
                        prefix.push(format!("v:{item}"));
                        out.insert(prefix.clone());
                        prefix.pop();
                    }
                    if items.is_empty() {
                        out.insert(prefix.clone());
                    }
                }
                ListKind::Atomic => {
                    out.insert(prefix.clone());
                }
            },
            Value::Object(_) if matches!(shape_of_child, Shape::Object(_) | Shape::Map(_)) => {
                collect(types, &shape_of_child, child, prefix, out, top);
            }
            _ => {
                out.insert(prefix.clone());
            }
        }
        prefix.pop();
    }
}

/// `fieldsV1`: the set as a tree of elements, `{}` at each leaf.
pub fn to_fields_v1(set: &FieldSet) -> Value {
    let mut root = Map::new();
    for path in set {
        let mut node = &mut root;
        for element in path {
            let entry = node
                .entry(element.clone())
                .or_insert_with(|| Value::Object(Map::new()));
            let Value::Object(next) = entry else { break };
            node = next;
        }
    }
    Value::Object(root)
}

/// The inverse of `to_fields_v1`.
pub fn from_fields_v1(tree: &Value) -> FieldSet {
    let mut out = FieldSet::new();
    let mut prefix = Vec::new();
    walk_tree(tree, &mut prefix, &mut out);
    out
}

fn walk_tree(tree: &Value, prefix: &mut Path, out: &mut FieldSet) {
    match tree {
        Value::Object(map) if !map.is_empty() => {
            for (element, child) in map {
                prefix.push(element.clone());
                walk_tree(child, prefix, out);
                prefix.pop();
            }
        }
        _ if !prefix.is_empty() => {
            out.insert(prefix.clone());
        }
        _ => {}
    }
}

/// A path as Kubernetes prints it in conflicts: `.spec.containers[name="nginx"].image`.
pub fn display(path: &Path) -> String {
    let mut out = String::new();
    for element in path {
        if let Some(field) = element.strip_prefix("f:") {
            out.push('.');
            out.push_str(field);
        } else if let Some(key) = element.strip_prefix("k:") {
            let parsed: Value = serde_json::from_str(key).unwrap_or(Value::Null);
            let parts: Vec<String> = parsed
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            out.push_str(&format!("[{}]", parts.join(",")));
        } else if let Some(value) = element.strip_prefix("v:") {
            out.push_str(&format!("[={value}]"));
        } else if let Some(index) = element.strip_prefix("i:") {
            out.push_str(&format!("[{index}]"));
        }
    }
    out
}

/// The value at `path` in `object`, if there is one (`.` and `v:` elements yield `true` when present).
pub fn value_at<'a>(object: &'a Value, path: &Path) -> Option<std::borrow::Cow<'a, Value>> {
    let mut current = object;
    for element in path {
        if element == "." {
            return Some(std::borrow::Cow::Owned(Value::Bool(true)));
        }
        if let Some(field) = element.strip_prefix("f:") {
            current = current.get(field)?;
        } else if let Some(key) = element.strip_prefix("k:") {
            let wanted: Map<String, Value> = serde_json::from_str(key).ok()?;
            current = current
                .as_array()?
                .iter()
                .find(|e| wanted.iter().all(|(k, v)| e.get(k) == Some(v)))?;
        } else if let Some(value) = element.strip_prefix("v:") {
            let wanted: Value = serde_json::from_str(value).ok()?;
            return current
                .as_array()?
                .contains(&wanted)
                .then_some(std::borrow::Cow::Owned(Value::Bool(true)));
        } else {
            return None;
        }
    }
    Some(std::borrow::Cow::Borrowed(current))
}

/// Removes what `path` names from `object`: a field, a keyed element (its `.` path) or a set member.
pub fn remove_at(object: &mut Value, path: &Path) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    if last == "." {
        // The element itself: remove it from its list.
        let Some((key, list_path)) = parents.split_last() else {
            return;
        };
        let Some(wanted) = key
            .strip_prefix("k:")
            .and_then(|k| serde_json::from_str::<Map<String, Value>>(k).ok())
        else {
            return;
        };
        if let Some(Value::Array(items)) = navigate(object, list_path) {
            items.retain(|e| !wanted.iter().all(|(k, v)| e.get(k) == Some(v)));
        }
        return;
    }
    let Some(parent) = navigate(object, parents) else {
        return;
    };
    if let Some(field) = last.strip_prefix("f:") {
        if let Value::Object(map) = parent {
            map.remove(field);
        }
    } else if let Some(value) = last.strip_prefix("v:")
        && let Ok(wanted) = serde_json::from_str::<Value>(value)
        && let Value::Array(items) = parent
    {
        items.retain(|e| *e != wanted);
    }
}

fn navigate<'a>(object: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
    let mut current = object;
    for element in path {
        if let Some(field) = element.strip_prefix("f:") {
            current = current.get_mut(field)?;
        } else if let Some(key) = element.strip_prefix("k:") {
            let wanted: Map<String, Value> = serde_json::from_str(key).ok()?;
            current = current
                .as_array_mut()?
                .iter_mut()
                .find(|e| wanted.iter().all(|(k, v)| e.get(k) == Some(v)))?;
        } else {
            return None;
        }
    }
    Some(current)
}
