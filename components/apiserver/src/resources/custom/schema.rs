//! Structural schemas (apiextensions-apiserver's `pkg/apiserver/schema` and `pkg/apiserver/validation`): the checks
//! a CRD's `openAPIV3Schema` must pass, and what the schema does to a custom resource: pruning of unknown fields,
//! defaulting from `default`, and validation with Kubernetes' (kube-openapi's) messages.

use serde_json::{Map, Value};

use super::super::errors::FieldError;

fn cause(field: String, reason: &'static str, message: String) -> FieldError {
    FieldError {
        field,
        reason,
        message,
    }
}

/// A value as a field error shows it (Go's `%v`/`%q` of `field.Error`): strings quoted, the rest as JSON.
fn shown(value: &Value) -> String {
    match value {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn flag(schema: &Value, name: &str) -> bool {
    schema.get(name).and_then(Value::as_bool) == Some(true)
}

fn type_of(schema: &Value) -> &str {
    schema.get("type").and_then(Value::as_str).unwrap_or("")
}

/// The JSON type name kube-openapi reports for a value.
fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn is_type(value: &Value, wanted: &str) -> bool {
    match wanted {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        _ => true,
    }
}

// ---- the CRD's schema itself ----

/// The structural schema rules (`ValidateStructural` and the v1 CRD rules) for `schema` at `path`
/// (`spec.versions[0].schema.openAPIV3Schema`).
pub fn check_structural(schema: &Value, path: &str) -> Vec<FieldError> {
    let mut out = Vec::new();
    match schema.get("type").and_then(Value::as_str) {
        None | Some("") if !flag(schema, "x-kubernetes-preserve-unknown-fields") => out.push(cause(
            join(path, "type"),
            "FieldValueRequired",
            "Required value: must not be empty at the root".into(),
        )),
        Some(t) if !t.is_empty() && t != "object" => out.push(cause(
            join(path, "type"),
            "FieldValueInvalid",
            format!("Invalid value: {t:?}: must be object at the root"),
        )),
        _ => {}
    }
    if let Some(meta) = schema.pointer("/properties/metadata") {
        let extra = meta
            .get("properties")
            .and_then(Value::as_object)
            .is_some_and(|p| p.keys().any(|k| k != "name" && k != "generateName"));
        let other = meta.as_object().is_some_and(|m| {
            m.keys()
                .any(|k| !matches!(k.as_str(), "type" | "properties" | "description"))
        });
        if extra || other {
            out.push(cause(
                format!("{path}.properties[metadata]"),
                "FieldValueForbidden",
                "Forbidden: must not specify anything other than name and generateName, but metadata is implicitly specified".into(),
            ));
        }
    }
    check_node(schema, path, true, &mut out);
    out
}

fn check_node(schema: &Value, path: &str, root: bool, out: &mut Vec<FieldError>) {
    let Some(map) = schema.as_object() else {
        out.push(cause(
            path.to_string(),
            "FieldValueInvalid",
            "Invalid value: must be a schema object".into(),
        ));
        return;
    };
    let ty = type_of(schema);
    let int_or_string = flag(schema, "x-kubernetes-int-or-string");
    let preserve = flag(schema, "x-kubernetes-preserve-unknown-fields");
    if map.contains_key("$ref") {
        out.push(cause(
            join(path, "$ref"),
            "FieldValueForbidden",
            "Forbidden: $ref is not supported".into(),
        ));
    }
    if schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(false)) {
        out.push(cause(
            join(path, "x-kubernetes-preserve-unknown-fields"),
            "FieldValueInvalid",
            "Invalid value: false: must be true or undefined".into(),
        ));
    }
    if int_or_string && !ty.is_empty() {
        out.push(cause(
            join(path, "type"),
            "FieldValueForbidden",
            "Forbidden: must be empty if x-kubernetes-int-or-string is true".into(),
        ));
    }
    if !ty.is_empty()
        && !matches!(
            ty,
            "object" | "array" | "string" | "integer" | "number" | "boolean"
        )
    {
        out.push(cause(
            join(path, "type"),
            "FieldValueNotSupported",
            format!("Unsupported value: {ty:?}: supported values: \"array\", \"boolean\", \"integer\", \"number\", \"object\", \"string\""),
        ));
    }
    if map.contains_key("properties") && map.contains_key("additionalProperties") {
        out.push(cause(
            join(path, "additionalProperties"),
            "FieldValueForbidden",
            "Forbidden: additionalProperties and properties are mutual exclusive".into(),
        ));
    }
    if ty == "array" && !map.contains_key("items") {
        out.push(cause(
            join(path, "items"),
            "FieldValueRequired",
            "Required value: must be specified".into(),
        ));
    }
    if let Some(map_type) = schema.get("x-kubernetes-map-type") {
        // apiextensions' ValidateCustomResourceDefinitionOpenAPISchema.
        if ty != "object" {
            out.push(if ty.is_empty() {
                cause(
                    join(path, "type"),
                    "FieldValueRequired",
                    "Required value: must be object if x-kubernetes-map-type is specified".into(),
                )
            } else {
                cause(
                    join(path, "type"),
                    "FieldValueInvalid",
                    format!("Invalid value: {ty:?}: must be object if x-kubernetes-map-type is specified"),
                )
            });
        }
        if !matches!(map_type.as_str(), Some("atomic" | "granular")) {
            out.push(cause(
                join(path, "x-kubernetes-map-type"),
                "FieldValueNotSupported",
                format!("Unsupported value: {map_type}: supported values: \"atomic\", \"granular\""),
            ));
        }
    }
    if let Some(list_type) = schema.get("x-kubernetes-list-type").and_then(Value::as_str) {
        if !matches!(list_type, "atomic" | "set" | "map") {
            out.push(cause(
                join(path, "x-kubernetes-list-type"),
                "FieldValueNotSupported",
                format!("Unsupported value: {list_type:?}: supported values: \"atomic\", \"set\", \"map\""),
            ));
        }
        if list_type == "map"
            && schema
                .get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array)
                .is_none_or(Vec::is_empty)
        {
            out.push(cause(
                join(path, "x-kubernetes-list-map-keys"),
                "FieldValueRequired",
                "Required value: must not be empty if x-kubernetes-list-type is map".into(),
            ));
        }
        if ty != "array" {
            out.push(cause(
                join(path, "x-kubernetes-list-type"),
                "FieldValueInvalid",
                "Invalid value: must only be used on type array".into(),
            ));
        }
    }
    if let Some(properties) = map.get("properties").and_then(Value::as_object) {
        for (name, child) in properties {
            let child_path = format!("{path}.properties[{name}]");
            type_required(child, &child_path, "object fields", out);
            if !(root && matches!(name.as_str(), "metadata")) {
                check_node(child, &child_path, false, out);
            }
        }
    }
    if let Some(child) = map.get("additionalProperties").filter(|c| c.is_object()) {
        let child_path = join(path, "additionalProperties");
        type_required(child, &child_path, "object fields", out);
        check_node(child, &child_path, false, out);
    }
    if let Some(child) = map.get("items") {
        let child_path = join(path, "items");
        if child.is_array() {
            out.push(cause(
                child_path,
                "FieldValueForbidden",
                "Forbidden: items must be a schema object and not an array".into(),
            ));
        } else {
            type_required(child, &child_path, "array items", out);
            check_node(child, &child_path, false, out);
        }
    }
    out.extend(super::cel::check_rules(schema, path));
    if let Some(pattern) = schema.get("pattern").and_then(Value::as_str)
        && regex::Regex::new(pattern).is_err()
    {
        out.push(cause(
            join(path, "pattern"),
            "FieldValueInvalid",
            format!("Invalid value: {pattern:?}: must be a valid regular expression"),
        ));
    }
    if let Some(default) = schema.get("default") {
        let mut pruned = default.clone();
        let mut unknown = Vec::new();
        prune_node(schema, &mut pruned, "", false, &mut unknown);
        if !unknown.is_empty() && !preserve {
            out.push(cause(
                join(path, "default"),
                "FieldValueInvalid",
                format!("Invalid value: {}: must not have unknown fields", shown(default)),
            ));
        }
        let mut errors = Vec::new();
        validate_node(schema, default, "", &mut errors);
        for e in errors {
            out.push(cause(
                join(path, "default"),
                e.reason,
                e.message.replacen(" in body", " in body of default", 1),
            ));
        }
    }
}

/// A specified field, map value or list item must say its type (unless int-or-string or free-form).
fn type_required(child: &Value, child_path: &str, what: &str, out: &mut Vec<FieldError>) {
    if type_of(child).is_empty()
        && !flag(child, "x-kubernetes-int-or-string")
        && !flag(child, "x-kubernetes-preserve-unknown-fields")
    {
        out.push(cause(
            join(child_path, "type"),
            "FieldValueRequired",
            format!("Required value: must not be empty for specified {what}"),
        ));
    }
}

// ---- pruning ----

/// Removes the fields `schema` does not specify (unless `x-kubernetes-preserve-unknown-fields`), returning their
/// paths (`spec.foo`). `apiVersion`, `kind` and `metadata` of the object (and of embedded resources) stay.
pub fn prune(schema: &Value, object: &mut Value) -> Vec<String> {
    let mut found = Vec::new();
    prune_node(schema, object, "", true, &mut found);
    found
}

fn prune_node(schema: &Value, value: &mut Value, path: &str, resource: bool, found: &mut Vec<String>) {
    let embedded = resource || flag(schema, "x-kubernetes-embedded-resource");
    match value {
        Value::Object(map) => {
            let properties = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            let preserve = flag(schema, "x-kubernetes-preserve-unknown-fields")
                || schema.get("additionalProperties") == Some(&Value::Bool(true));
            let keys: Vec<String> = map.keys().cloned().collect();
            for key in keys {
                let child_path = join(path, &key);
                if embedded && matches!(key.as_str(), "apiVersion" | "kind" | "metadata") {
                    continue;
                }
                if let Some(child_schema) = properties.and_then(|p| p.get(&key)) {
                    if let Some(child) = map.get_mut(&key) {
                        prune_node(child_schema, child, &child_path, false, found);
                    }
                } else if let Some(child_schema) = additional {
                    if let Some(child) = map.get_mut(&key) {
                        prune_node(child_schema, child, &child_path, false, found);
                    }
                } else if !preserve {
                    found.push(child_path);
                    map.remove(&key);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    prune_node(item_schema, item, &format!("{path}[{i}]"), false, found);
                }
            }
        }
        _ => {}
    }
}

// ---- defaulting ----

/// Sets every `default` of `schema` missing from `value` (and replaces nulls in fields that are not nullable),
/// at every depth, as the structural defaulting algorithm does.
pub fn default(schema: &Value, value: &mut Value) {
    match value {
        Value::Object(map) => {
            if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
                for (key, child_schema) in properties {
                    let missing = match map.get(key) {
                        None => true,
                        Some(Value::Null) => !flag(child_schema, "nullable"),
                        Some(_) => false,
                    };
                    if missing && let Some(d) = child_schema.get("default") {
                        map.insert(key.clone(), d.clone());
                    }
                    if let Some(child) = map.get_mut(key) {
                        default(child_schema, child);
                    }
                }
            }
            if let Some(additional) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                for child in map.values_mut() {
                    default(additional, child);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for item in items {
                    default(item_schema, item);
                }
            }
        }
        _ => {}
    }
}

// ---- validation ----

/// Validates a custom resource against its schema; the root's `apiVersion`, `kind` and `metadata` are checked
/// elsewhere (as ObjectMeta).
pub fn validate(schema: &Value, object: &Value) -> Vec<FieldError> {
    let mut out = Vec::new();
    let Some(map) = object.as_object() else {
        return out;
    };
    let mut rest = Map::new();
    for (k, v) in map {
        if !matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
            rest.insert(k.clone(), v.clone());
        }
    }
    let mut root = schema.clone();
    if let Some(required) = root.get_mut("required").and_then(Value::as_array_mut) {
        required.retain(|r| !matches!(r.as_str(), Some("apiVersion" | "kind" | "metadata")));
    }
    if let Some(props) = root.get_mut("properties").and_then(Value::as_object_mut) {
        props.remove("metadata");
    }
    validate_node(&root, &Value::Object(rest), "", &mut out);
    out
}

fn validate_node(schema: &Value, value: &Value, path: &str, out: &mut Vec<FieldError>) {
    let at = if path.is_empty() { "<root>" } else { path };
    let ty = type_of(schema);
    let invalid = |out: &mut Vec<FieldError>, message: String| {
        out.push(cause(
            at.to_string(),
            "FieldValueInvalid",
            format!("Invalid value: {}: {message}", shown(value)),
        ))
    };
    if value.is_null() {
        if flag(schema, "nullable") || (ty.is_empty() && !flag(schema, "x-kubernetes-int-or-string")) {
            return;
        }
        let wanted = if ty.is_empty() { "integer,string" } else { ty };
        out.push(cause(
            at.to_string(),
            "FieldValueTypeInvalid",
            format!("Invalid value: \"null\": {at} in body must be of type {wanted}: \"null\""),
        ));
        return;
    }
    if flag(schema, "x-kubernetes-int-or-string") && !(value.is_string() || value.is_i64() || value.is_u64())
    {
        let actual = type_name(value);
        out.push(cause(
            at.to_string(),
            "FieldValueTypeInvalid",
            format!("Invalid value: {actual:?}: {at} in body must be of type integer,string: {actual:?}"),
        ));
        return;
    }
    if !ty.is_empty() && !is_type(value, ty) {
        let actual = type_name(value);
        out.push(cause(
            at.to_string(),
            "FieldValueTypeInvalid",
            format!("Invalid value: {actual:?}: {at} in body must be of type {ty}: {actual:?}"),
        ));
        return;
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        let list: Vec<String> = allowed.iter().map(shown).collect();
        out.push(cause(
            at.to_string(),
            "FieldValueNotSupported",
            format!(
                "Unsupported value: {}: supported values: {}",
                shown(value),
                list.join(", ")
            ),
        ));
    }
    match value {
        Value::String(s) => {
            let chars = s.chars().count() as u64;
            if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
                && chars > max
            {
                out.push(cause(
                    at.to_string(),
                    "FieldValueTooLong",
                    format!("Too long: may not be more than {max} bytes"),
                ));
            }
            if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
                && chars < min
            {
                invalid(out, format!("{at} in body should be at least {min} chars long"));
            }
            if let Some(pattern) = schema.get("pattern").and_then(Value::as_str)
                && let Ok(re) = regex::Regex::new(pattern)
                && !re.is_match(s)
            {
                invalid(out, format!("{at} in body should match '{pattern}'"));
            }
            if let Some(format) = schema.get("format").and_then(Value::as_str)
                && !format_ok(format, s)
            {
                invalid(out, format!("{at} in body must be of type {format}: {s:?}"));
            }
        }
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or_default();
            if let Some(max) = schema.get("maximum").and_then(Value::as_f64) {
                if flag(schema, "exclusiveMaximum") && x >= max {
                    invalid(out, format!("{at} in body should be less than {}", num(max)));
                } else if x > max {
                    invalid(
                        out,
                        format!("{at} in body should be less than or equal to {}", num(max)),
                    );
                }
            }
            if let Some(min) = schema.get("minimum").and_then(Value::as_f64) {
                if flag(schema, "exclusiveMinimum") && x <= min {
                    invalid(out, format!("{at} in body should be greater than {}", num(min)));
                } else if x < min {
                    invalid(
                        out,
                        format!("{at} in body should be greater than or equal to {}", num(min)),
                    );
                }
            }
            if let Some(m) = schema.get("multipleOf").and_then(Value::as_f64)
                && m > 0.0
                && (x / m).fract().abs() > f64::EPSILON
            {
                invalid(out, format!("{at} in body should be a multiple of {}", num(m)));
            }
        }
        Value::Array(items) => {
            let len = items.len() as u64;
            too_many(out, at, len, schema.get("maxItems").and_then(Value::as_u64));
            if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
                && len < min
            {
                invalid(out, format!("{at} in body should have at least {min} items"));
            }
            let list_type = schema.get("x-kubernetes-list-type").and_then(Value::as_str);
            if flag(schema, "uniqueItems") || list_type == Some("set") {
                for (i, item) in items.iter().enumerate() {
                    if items[..i].contains(item) {
                        out.push(cause(
                            format!("{at}[{i}]"),
                            "FieldValueDuplicate",
                            format!("Duplicate value: {}", shown(item)),
                        ));
                    }
                }
            }
            if list_type == Some("map") {
                let keys: Vec<&str> = schema
                    .get("x-kubernetes-list-map-keys")
                    .and_then(Value::as_array)
                    .map(|k| k.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                let key_of = |item: &Value| -> Map<String, Value> {
                    keys.iter()
                        .filter_map(|k| item.get(*k).map(|v| (k.to_string(), v.clone())))
                        .collect()
                };
                for (i, item) in items.iter().enumerate() {
                    let key = key_of(item);
                    if items[..i].iter().any(|other| key_of(other) == key) {
                        out.push(cause(
                            format!("{at}[{i}]"),
                            "FieldValueDuplicate",
                            format!("Duplicate value: {}", Value::Object(key)),
                        ));
                    }
                }
            }
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    validate_node(item_schema, item, &format!("{path}[{i}]"), out);
                }
            }
        }
        Value::Object(map) => {
            let len = map.len() as u64;
            too_many(out, at, len, schema.get("maxProperties").and_then(Value::as_u64));
            if let Some(min) = schema.get("minProperties").and_then(Value::as_u64)
                && len < min
            {
                invalid(out, format!("{at} in body should have at least {min} properties"));
            }
            if flag(schema, "x-kubernetes-embedded-resource") {
                for field in ["apiVersion", "kind"] {
                    if map.get(field).and_then(Value::as_str).is_none_or(str::is_empty) {
                        out.push(cause(
                            join(path, field),
                            "FieldValueRequired",
                            "Required value: must not be empty".into(),
                        ));
                    }
                }
            }
            for required in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                if !map.contains_key(required) {
                    out.push(cause(
                        join(path, required),
                        "FieldValueRequired",
                        "Required value".into(),
                    ));
                }
            }
            let properties = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            for (key, child) in map {
                let child_path = join(path, key);
                if let Some(child_schema) = properties.and_then(|p| p.get(key)) {
                    validate_node(child_schema, child, &child_path, out);
                } else if let Some(child_schema) = additional {
                    validate_node(child_schema, child, &child_path, out);
                }
            }
        }
        Value::Bool(_) | Value::Null => {}
    }
}

/// `field.TooMany`, when a list or map holds more than `max` entries.
fn too_many(out: &mut Vec<FieldError>, at: &str, len: u64, max: Option<u64>) {
    if let Some(max) = max.filter(|max| len > *max) {
        out.push(cause(
            at.to_string(),
            "FieldValueTooMany",
            format!("Too many: {len}: must have at most {max} items"),
        ));
    }
}

/// A number as Go's `%v` prints it: `10`, not `10.0`.
fn num(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        x.to_string()
    }
}

/// The string formats of kube-openapi's `strfmt` registry that CRDs use; unknown formats pass, as they do there.
fn format_ok(format: &str, s: &str) -> bool {
    use time::format_description::well_known::Rfc3339;
    match format {
        "date-time" | "datetime" => time::OffsetDateTime::parse(s, &Rfc3339).is_ok(),
        "date" => {
            let fmt = time::macros::format_description!("[year]-[month]-[day]");
            time::Date::parse(s, &fmt).is_ok()
        }
        "email" => {
            let mut parts = s.splitn(2, '@');
            matches!((parts.next(), parts.next()), (Some(l), Some(d)) if !l.is_empty() && d.contains('.') && !d.starts_with('.') && !d.ends_with('.'))
        }
        "ipv4" => s.parse::<std::net::Ipv4Addr>().is_ok(),
        "ipv6" => s.parse::<std::net::Ipv6Addr>().is_ok(),
        "cidr" => s
            .split_once('/')
            .is_some_and(|(ip, len)| ip.parse::<std::net::IpAddr>().is_ok() && len.parse::<u8>().is_ok()),
        "uuid" => {
            let b = s.as_bytes();
            b.len() == 36
                && b.iter().enumerate().all(|(i, c)| match i {
                    8 | 13 | 18 | 23 => *c == b'-',
                    _ => c.is_ascii_hexdigit(),
                })
        }
        "hostname" => {
            !s.is_empty()
                && s.len() <= 253
                && s.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                        && !l.starts_with('-')
                        && !l.ends_with('-')
                })
        }
        "byte" => {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.decode(s).is_ok()
        }
        "uri" => s.split_once(':').is_some_and(|(scheme, _)| {
            !scheme.is_empty()
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        }),
        "mac" => {
            let parts: Vec<&str> = s.split([':', '-']).collect();
            parts.len() == 6
                && parts
                    .iter()
                    .all(|p| p.len() == 2 && u8::from_str_radix(p, 16).is_ok())
        }
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn widget_schema() -> Value {
        json!({"type": "object", "properties": {
            "spec": {"type": "object", "required": ["size"], "properties": {
                "size": {"type": "string", "enum": ["small", "large"]},
                "replicas": {"type": "integer", "minimum": 0, "maximum": 10, "default": 1},
                "name": {"type": "string", "maxLength": 5, "pattern": "^[a-z]+$"},
                "email": {"type": "string", "format": "email"},
                "port": {"x-kubernetes-int-or-string": true},
                "tags": {"type": "array", "maxItems": 2, "items": {"type": "string"}, "x-kubernetes-list-type": "set"},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                "note": {"type": "string", "nullable": true},
            }},
            "status": {"type": "object", "properties": {"ready": {"type": "boolean"}}},
        }})
    }

    fn messages(errors: &[FieldError]) -> Vec<String> {
        errors
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect()
    }

    #[test]
    fn values_are_checked_with_kubernetes_messages() {
        let schema = widget_schema();
        let ok = json!({"apiVersion": "x/v1", "kind": "W", "metadata": {"name": "w"},
            "spec": {"size": "small", "replicas": 3, "port": "http", "tags": ["a"], "free": {"x": 1}, "note": null}});
        assert!(validate(&schema, &ok).is_empty(), "{:?}", validate(&schema, &ok));
        let bad = json!({"spec": {"replicas": "3", "name": "ABCDEFG", "email": "nope", "port": 1.5, "tags": ["a", "a", "b"]}});
        assert_eq!(
            messages(&validate(&schema, &bad)),
            [
                "spec.size: Required value",
                "spec.email: Invalid value: \"nope\": spec.email in body must be of type email: \"nope\"",
                "spec.name: Too long: may not be more than 5 bytes",
                "spec.name: Invalid value: \"ABCDEFG\": spec.name in body should match '^[a-z]+$'",
                "spec.port: Invalid value: \"number\": spec.port in body must be of type integer,string: \"number\"",
                "spec.replicas: Invalid value: \"string\": spec.replicas in body must be of type integer: \"string\"",
                "spec.tags: Too many: 3: must have at most 2 items",
                "spec.tags[1]: Duplicate value: \"a\"",
            ]
        );
        let out = json!({"spec": {"size": "medium", "replicas": 11}});
        assert_eq!(
            messages(&validate(&schema, &out)),
            [
                "spec.replicas: Invalid value: 11: spec.replicas in body should be less than or equal to 10",
                "spec.size: Unsupported value: \"medium\": supported values: \"small\", \"large\"",
            ]
        );
    }

    #[test]
    fn unknown_fields_are_pruned_and_defaults_set() {
        let schema = widget_schema();
        let mut object = json!({"apiVersion": "x/v1", "kind": "W", "metadata": {"name": "w"}, "extra": 1,
            "spec": {"size": "small", "bogus": true, "free": {"anything": {"goes": 1}}}, "status": {"ready": true, "x": 1}});
        assert_eq!(prune(&schema, &mut object), ["extra", "spec.bogus", "status.x"]);
        default(&schema, &mut object);
        assert_eq!(
            object,
            json!({"apiVersion": "x/v1", "kind": "W", "metadata": {"name": "w"},
            "spec": {"size": "small", "replicas": 1, "free": {"anything": {"goes": 1}}}, "status": {"ready": true}})
        );
    }

    #[test]
    fn schemas_must_be_structural() {
        let p = "spec.versions[0].schema.openAPIV3Schema";
        let bad = json!({"type": "object", "properties": {"spec": {"properties": {"a": {"type": "string"}}},
            "list": {"type": "array"}, "m": {"type": "object", "properties": {}, "additionalProperties": {"type": "string"}}}});
        assert_eq!(
            messages(&check_structural(&bad, p)),
            [
                format!("{p}.properties[list].items: Required value: must be specified"),
                format!(
                    "{p}.properties[m].additionalProperties: Forbidden: additionalProperties and properties are mutual exclusive"
                ),
                format!(
                    "{p}.properties[spec].type: Required value: must not be empty for specified object fields"
                ),
            ]
        );
        assert!(check_structural(&widget_schema(), p).is_empty());
        assert_eq!(
            messages(&check_structural(&json!({"type": "string"}), p)),
            [format!(
                "{p}.type: Invalid value: \"string\": must be object at the root"
            )]
        );
        // x-kubernetes-map-type: atomic or granular, on objects only.
        let map_types = json!({"type": "object", "properties": {
            "a": {"type": "object", "x-kubernetes-map-type": "atomic", "additionalProperties": {"type": "string"}},
            "g": {"type": "object", "x-kubernetes-map-type": "granular", "properties": {"x": {"type": "string"}}},
            "s": {"type": "string", "x-kubernetes-map-type": "atomic"},
            "u": {"type": "object", "x-kubernetes-map-type": "loose"},
        }});
        assert_eq!(
            messages(&check_structural(&map_types, p)),
            [
                format!(
                    "{p}.properties[s].type: Invalid value: \"string\": must be object if x-kubernetes-map-type is specified"
                ),
                format!(
                    "{p}.properties[u].x-kubernetes-map-type: Unsupported value: \"loose\": supported values: \"atomic\", \"granular\""
                ),
            ]
        );
    }
}
