//! Where objects live in the store, and the metadata the server owns (uid, timestamps,
//! resourceVersion, generation).

use serde_json::{Map, Value};

use super::registry::ResourceType;

/// `/registry/<group|core>/<plural>/[<namespace>/]<name>`.
pub fn key(resource: &ResourceType, namespace: Option<&str>, name: &str) -> String {
    format!("{}{name}", prefix(resource, namespace))
}

/// The prefix of every object of `resource` (in `namespace`, if given).
pub fn prefix(resource: &ResourceType, namespace: Option<&str>) -> String {
    let group = if resource.group.is_empty() {
        "core"
    } else {
        resource.group
    };
    match namespace {
        Some(ns) if resource.namespaced => format!("/registry/{group}/{}/{ns}/", resource.plural),
        _ => format!("/registry/{group}/{}/", resource.plural),
    }
}

pub fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    let now = now.replace_nanosecond(0).unwrap_or(now);
    now.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// A random (version 4) UUID.
pub fn new_uid() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// The five characters `generateName` gets, from Kubernetes' alphabet (no vowels, no 0/1/3).
pub fn name_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// Sets `metadata.<field>`, making `metadata` if needed. Objects are JSON objects by the time
/// they get here (bodies that are not are refused); anything else is left alone.
pub fn set_meta(object: &mut Value, field: &str, value: Value) {
    let Some(root) = object.as_object_mut() else {
        return;
    };
    let meta = root
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if !meta.is_object() {
        *meta = Value::Object(Map::new());
    }
    if let Some(meta) = meta.as_object_mut() {
        meta.insert(field.to_string(), value);
    }
}

pub fn remove_meta(object: &mut Value, field: &str) -> Option<Value> {
    object.get_mut("metadata")?.as_object_mut()?.remove(field)
}

pub fn meta_str<'a>(object: &'a Value, field: &str) -> Option<&'a str> {
    object.get("metadata")?.get(field)?.as_str()
}

/// Decodes a stored object and stamps the revision it was read at.
pub fn decode(bytes: &[u8], mod_revision: i64) -> Option<Value> {
    let mut object: Value = serde_json::from_slice(bytes).ok()?;
    set_meta(
        &mut object,
        "resourceVersion",
        Value::String(mod_revision.to_string()),
    );
    Some(object)
}

/// A stored object made ready for a list or a watch's initial events without building its JSON tree: the
/// top level is split into raw members and only `metadata` (plus any member a field selector reads) is parsed.
/// Decoding whole objects was most of the cost of a large list.
#[derive(Debug)]
pub struct Listed {
    /// The object's JSON with its resourceVersion stamped, members in the same (sorted) order as `decode`'s.
    pub json: Vec<u8>,
    /// `{"metadata": …}` and the members named in `decode_listed`'s `members`: enough for selectors.
    pub selectable: Value,
}

/// `decode` for lists; `members` are the top-level members selectors need besides `metadata`.
pub fn decode_listed(bytes: &[u8], mod_revision: i64, members: &[String]) -> Option<Listed> {
    use serde_json::value::RawValue;
    use std::collections::BTreeMap;

    let top: BTreeMap<String, &RawValue> = serde_json::from_slice(bytes).ok()?;
    let mut metadata: Map<String, Value> = match top.get("metadata") {
        Some(raw) => serde_json::from_str(raw.get()).ok()?,
        None => Map::new(),
    };
    metadata.insert("resourceVersion".into(), Value::String(mod_revision.to_string()));
    let metadata = Value::Object(metadata);
    let mut json = Vec::with_capacity(bytes.len() + 32);
    json.push(b'{');
    let member = |json: &mut Vec<u8>, key: &str, value: &[u8]| {
        if json.len() > 1 {
            json.push(b',');
        }
        // Keys come from a parsed object, so serialising one cannot fail.
        let _ = serde_json::to_writer(&mut *json, key);
        json.push(b':');
        json.extend_from_slice(value);
    };
    let metadata_json = metadata.to_string();
    let mut wrote_metadata = false;
    for (key, raw) in &top {
        if !wrote_metadata && key.as_str() >= "metadata" {
            member(&mut json, "metadata", metadata_json.as_bytes());
            wrote_metadata = true;
        }
        if key != "metadata" {
            member(&mut json, key, raw.get().as_bytes());
        }
    }
    if !wrote_metadata {
        member(&mut json, "metadata", metadata_json.as_bytes());
    }
    json.push(b'}');
    let mut selectable = Map::new();
    for name in members {
        if let Some(raw) = top.get(name.as_str()) {
            selectable.insert(name.clone(), serde_json::from_str(raw.get()).ok()?);
        }
    }
    selectable.insert("metadata".into(), metadata);
    Some(Listed {
        json,
        selectable: Value::Object(selectable),
    })
}

/// The bytes stored: the object without its resourceVersion (the store's revision is the truth).
pub fn encode(object: &Value) -> Vec<u8> {
    let mut copy = object.clone();
    remove_meta(&mut copy, "resourceVersion");
    serde_json::to_vec(&copy).unwrap_or_default()
}

/// Everything but metadata and status: a change here is a new generation.
pub fn spec_of(object: &Value) -> Value {
    let mut copy = object.clone();
    if let Some(map) = copy.as_object_mut() {
        map.remove("metadata");
        map.remove("status");
    }
    copy
}

#[cfg(test)]
mod listed_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn listed_objects_are_byte_for_byte_what_decode_gives() {
        let objects = [
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "labels": {"x": "y"}}, "data": {"k": "v\"q\u{00e9}"}}),
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {}, "spec": {"nodeName": "n"}, "status": {"phase": "Running"}}),
            json!({"kind": "Weird", "a\"b": 1, "zzz": [1, 2, {"metadata": {"nested": true}}]}),
            json!({}),
        ];
        for object in objects {
            let bytes = encode(&object);
            let listed = decode_listed(&bytes, 42, &["spec".to_string(), "absent".to_string()]).unwrap();
            let decoded = decode(&bytes, 42).unwrap();
            assert_eq!(String::from_utf8(listed.json).unwrap(), decoded.to_string());
            assert_eq!(listed.selectable["metadata"], decoded["metadata"]);
            assert_eq!(listed.selectable.get("spec"), decoded.get("spec"));
            assert!(
                listed.selectable.get("status").is_none(),
                "only the members asked for"
            );
        }
        assert!(decode_listed(b"not json", 1, &[]).is_none());
        assert!(decode_listed(b"[1,2]", 1, &[]).is_none());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_separate_groups_namespaces_and_scopes() {
        let cm = super::super::registry::find("", "v1", "configmaps").unwrap();
        let ns = super::super::registry::find("", "v1", "namespaces").unwrap();
        let dep = super::super::registry::find("apps", "v1", "deployments").unwrap();
        assert_eq!(
            key(cm, Some("default"), "a"),
            "/registry/core/configmaps/default/a"
        );
        assert_eq!(prefix(cm, None), "/registry/core/configmaps/");
        assert_eq!(
            key(ns, Some("ignored"), "kube-system"),
            "/registry/core/namespaces/kube-system"
        );
        assert_eq!(prefix(dep, Some("x")), "/registry/apps/deployments/x/");
    }

    #[test]
    fn uids_and_suffixes_look_like_kubernetes_ones() {
        let uid = new_uid();
        assert_eq!(uid.len(), 36);
        assert_eq!(&uid[14..15], "4");
        assert_eq!(name_suffix().len(), 5);
        assert!(now_rfc3339().ends_with('Z'));
    }

    #[test]
    fn the_stored_form_carries_no_resource_version() {
        let o = serde_json::json!({"metadata": {"name": "a", "resourceVersion": "7"}});
        let back = decode(&encode(&o), 9).unwrap();
        assert_eq!(back["metadata"]["resourceVersion"], "9");
    }
}
