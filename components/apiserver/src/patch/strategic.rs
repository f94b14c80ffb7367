//! Strategic merge patch (`application/strategic-merge-patch+json`), applied as Kubernetes' `strategicpatch`
//! package applies it: maps merge, `null` deletes, lists with a patch merge key merge element by element, lists
//! with the merge strategy and no key merge as sets, every other list is replaced; and the directives `$patch`
//! (`replace`, `delete`, `merge`), `$retainKeys`, `$setElementOrder/<list>` and `$deleteFromPrimitiveList/<list>`.
//! Merge keys come from the patch metadata table, found by walking the object's type.

use serde_json::{Map, Value};

use crate::schema::patch_meta::{PatchMeta, patch_meta};
use crate::schema::types::{Shape, Types};

const PATCH: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ELEMENT_ORDER: &str = "$setElementOrder/";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList/";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StrategicPatchError {
    #[error("a strategic merge patch must be a JSON object")]
    NotAnObject,
    #[error("invalid patch: unknown $patch directive {0:?}")]
    UnknownDirective(String),
    #[error("invalid patch: {0} must be a list")]
    NotAList(String),
    #[error("invalid patch: an element of {list} has no merge key {key:?}")]
    MissingMergeKey { list: String, key: String },
}

/// Applies `patch` to `original`, an object of the definition `definition`
/// (`io.k8s.api.core.v1.Pod`).
pub fn apply(definition: &str, original: &mut Value, patch: Value) -> Result<(), StrategicPatchError> {
    let Value::Object(patch) = patch else {
        return Err(StrategicPatchError::NotAnObject);
    };
    let shape = Shape::Object(definition.to_string());
    if !original.is_object() {
        *original = Value::Object(Map::new());
    }
    match merge_map(Types::get(), &shape, original, patch, "")? {
        Merged::Keep => Ok(()),
        Merged::Delete => {
            *original = Value::Object(Map::new());
            Ok(())
        }
    }
}

enum Merged {
    Keep,
    /// The map asked for its own deletion (`$patch: delete`).
    Delete,
}

fn definition_of(shape: &Shape) -> Option<&str> {
    match shape {
        Shape::Object(name) => Some(name),
        _ => None,
    }
}

/// The shape of `key` inside a value of `shape`.
fn child<'a>(types: &'a Types, shape: &'a Shape, key: &str) -> Shape {
    match shape {
        Shape::Object(name) => types.field(name, key).cloned().unwrap_or(Shape::Any),
        Shape::Map(inner) => (**inner).clone(),
        _ => Shape::Any,
    }
}

fn merge_map(
    types: &Types,
    shape: &Shape,
    original: &mut Value,
    mut patch: Map<String, Value>,
    path: &str,
) -> Result<Merged, StrategicPatchError> {
    match patch.remove(PATCH) {
        None => {}
        Some(Value::String(d)) if d == "merge" => {}
        Some(Value::String(d)) if d == "delete" => return Ok(Merged::Delete),
        Some(Value::String(d)) if d == "replace" => {
            *original = strip_directives(Value::Object(patch));
            return Ok(Merged::Keep);
        }
        Some(other) => return Err(StrategicPatchError::UnknownDirective(other.to_string())),
    }
    let retain = match patch.remove(RETAIN_KEYS) {
        Some(Value::Array(keys)) => Some(
            keys.into_iter()
                .filter_map(|k| k.as_str().map(String::from))
                .collect::<Vec<_>>(),
        ),
        Some(_) => return Err(StrategicPatchError::NotAList(format!("{path}.{RETAIN_KEYS}"))),
        None => None,
    };
    let mut orders = Vec::new();
    let mut primitive_deletes = Vec::new();
    let directive_keys: Vec<String> = patch.keys().filter(|k| k.starts_with('$')).cloned().collect();
    for key in directive_keys {
        let value = patch.remove(&key).unwrap_or(Value::Null);
        let list = |prefix: &str| key.strip_prefix(prefix).map(String::from);
        if let Some(field) = list(SET_ELEMENT_ORDER) {
            orders.push((field, value));
        } else if let Some(field) = list(DELETE_FROM_PRIMITIVE_LIST) {
            primitive_deletes.push((field, value));
        }
    }
    if !original.is_object() {
        *original = Value::Object(Map::new());
    }
    let Value::Object(target) = original else {
        return Ok(Merged::Keep);
    };
    for (key, value) in patch {
        let field_path = format!("{path}.{key}");
        let meta = definition_of(shape).and_then(|d| patch_meta(d, &key));
        let child_shape = child(types, shape, &key);
        match (target.get_mut(&key), value) {
            (_, Value::Null) => {
                target.remove(&key);
            }
            (Some(existing @ Value::Object(_)), Value::Object(p)) => {
                if let Merged::Delete = merge_map(types, &child_shape, existing, p, &field_path)? {
                    target.remove(&key);
                }
            }
            (Some(Value::Array(existing)), Value::Array(p)) => {
                let merged = merge_list(
                    types,
                    &child_shape,
                    meta,
                    std::mem::take(existing),
                    p,
                    &field_path,
                )?;
                target.insert(key, Value::Array(merged));
            }
            (_, Value::Array(p)) => {
                // A new list: merge it into nothing, which applies (and drops) its element directives.
                let merged = merge_list(types, &child_shape, meta, Vec::new(), p, &field_path)?;
                target.insert(key, Value::Array(merged));
            }
            (_, Value::Object(p)) => {
                let mut fresh = Value::Object(Map::new());
                if let Merged::Keep = merge_map(types, &child_shape, &mut fresh, p, &field_path)? {
                    target.insert(key, fresh);
                }
            }
            (_, scalar) => {
                target.insert(key, scalar);
            }
        }
    }
    for (field, values) in primitive_deletes {
        let Value::Array(values) = values else {
            return Err(StrategicPatchError::NotAList(format!(
                "{path}.{DELETE_FROM_PRIMITIVE_LIST}{field}"
            )));
        };
        if let Some(Value::Array(list)) = target.get_mut(&field) {
            list.retain(|v| !values.contains(v));
        }
    }
    for (field, order) in orders {
        let Value::Array(order) = order else {
            return Err(StrategicPatchError::NotAList(format!(
                "{path}.{SET_ELEMENT_ORDER}{field}"
            )));
        };
        let key = definition_of(shape)
            .and_then(|d| patch_meta(d, &field))
            .and_then(|m| m.merge_key);
        if let Some(Value::Array(list)) = target.get_mut(&field) {
            reorder(list, &order, key);
        }
    }
    if let Some(retain) = retain {
        target.retain(|k, _| retain.iter().any(|r| r == k));
    }
    Ok(Merged::Keep)
}

fn merge_list(
    types: &Types,
    shape: &Shape,
    meta: Option<PatchMeta>,
    original: Vec<Value>,
    patch: Vec<Value>,
    path: &str,
) -> Result<Vec<Value>, StrategicPatchError> {
    let element = match shape {
        Shape::List(inner) => (**inner).clone(),
        _ => Shape::Any,
    };
    let merging = meta.is_some_and(|m| m.strategy.split(',').any(|s| s == "merge"));
    // `{"$patch": "replace"}` as an element replaces the whole list with the other elements.
    let replace_all = patch
        .iter()
        .any(|e| e.get(PATCH).and_then(Value::as_str) == Some("replace"));
    if !merging || replace_all {
        let kept = patch
            .into_iter()
            .filter(|e| e.get(PATCH).is_none())
            .map(strip_directives)
            .collect();
        return Ok(kept);
    }
    let Some(key) = meta.and_then(|m| m.merge_key) else {
        // A merged list of scalars: a set union, in the original's order then the patch's.
        let mut out = original;
        for value in patch {
            if !out.contains(&value) {
                out.push(value);
            }
        }
        return Ok(out);
    };
    let mut out = original;
    for element_patch in patch {
        let Value::Object(mut element_patch) = element_patch else {
            // A scalar in a keyed list: nothing to key it by; keep it as Kubernetes does (appended).
            out.push(element_patch);
            continue;
        };
        let Some(key_value) = element_patch.get(key).cloned() else {
            return Err(StrategicPatchError::MissingMergeKey {
                list: path.to_string(),
                key: key.to_string(),
            });
        };
        let position = out.iter().position(|e| e.get(key) == Some(&key_value));
        match element_patch.get(PATCH).and_then(Value::as_str) {
            Some("delete") => {
                out.retain(|e| e.get(key) != Some(&key_value));
                continue;
            }
            Some("merge") | None => {}
            Some(other) => return Err(StrategicPatchError::UnknownDirective(other.to_string())),
        }
        match position {
            Some(i) => {
                if let Merged::Delete = merge_map(types, &element, &mut out[i], element_patch, path)? {
                    out.remove(i);
                }
            }
            None => {
                element_patch.remove(PATCH);
                let mut fresh = Value::Object(Map::new());
                if let Merged::Keep = merge_map(types, &element, &mut fresh, element_patch, path)? {
                    out.push(fresh);
                }
            }
        }
    }
    Ok(out)
}

/// `$setElementOrder`: the listed elements first, in the given order; the others after, in their own order.
fn reorder(list: &mut Vec<Value>, order: &[Value], key: Option<&str>) {
    let id = |v: &Value| match key {
        Some(k) => v.get(k).cloned(),
        None => Some(v.clone()),
    };
    let wanted: Vec<Value> = order.iter().filter_map(id).collect();
    let mut ordered = Vec::with_capacity(list.len());
    let mut rest = std::mem::take(list);
    for want in &wanted {
        if let Some(i) = rest.iter().position(|v| id(v).as_ref() == Some(want)) {
            ordered.push(rest.remove(i));
        }
    }
    ordered.extend(rest);
    *list = ordered;
}

/// Removes directives from a value that is being inserted as a whole.
fn strip_directives(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k, strip_directives(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .filter(|e| e.get(PATCH).and_then(Value::as_str) != Some("delete"))
                .map(strip_directives)
                .collect(),
        ),
        other => other,
    }
}

#[cfg(test)]
mod tests;
