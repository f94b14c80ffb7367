//! Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`), transcoded to the JSON form every
//! other layer of the API server works with.
//!
//! The wire format is the `k8s\0` magic followed by a `runtime.Unknown` whose `typeMeta` names the kind and whose
//! `raw` holds the object's own message. Decoding is driven by a descriptor set generated from `k8s-pb` (see
//! `tests/protobuf_descriptors.rs`) and done by `prost-reflect`; this module only maps the decoded message to JSON,
//! including the apimachinery types whose JSON form is not their message shape (Time, Quantity, IntOrString, …).

mod json;

use std::collections::HashMap;
use std::sync::OnceLock;

use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, Value as PbValue};
use serde_json::Value;

/// The four bytes that open every Kubernetes protobuf body.
const MAGIC: &[u8; 4] = b"k8s\0";
const UNKNOWN: &str = "k8s.io.apimachinery.pkg.runtime.Unknown";
const META_PACKAGE: &str = "k8s.io.apimachinery.pkg.apis.meta.v1";

/// Generated from k8s-pb by `tests/protobuf_descriptors.rs`, which also checks that it is current.
static DESCRIPTOR_SET: &[u8] = include_bytes!("k8s-descriptors.bin");

#[derive(Debug, thiserror::Error)]
pub enum ProtobufError {
    #[error("the body does not start with the Kubernetes protobuf magic number")]
    NoMagic,
    #[error("the protobuf body is malformed: {0}")]
    Malformed(#[from] prost_reflect::prost::DecodeError),
    #[error("the protobuf envelope names no apiVersion or kind")]
    NoTypeMeta,
    #[error("no kind {kind:?} is registered for version {api_version:?}")]
    UnknownKind { api_version: String, kind: String },
    #[error("unsupported protobuf content encoding {0:?}")]
    ContentEncoding(String),
    #[error("field {field} holds {what}")]
    BadValue { field: String, what: String },
    #[error("the built-in protobuf descriptors do not load: {0}")]
    Descriptors(String),
}

struct Descriptors {
    pool: DescriptorPool,
    /// Lowercased full names, because prost spells kinds in its own case (`CSIDriver` is `CsiDriver`).
    by_lower_name: HashMap<String, MessageDescriptor>,
}

fn descriptors() -> Result<&'static Descriptors, ProtobufError> {
    static LOADED: OnceLock<Result<Descriptors, String>> = OnceLock::new();
    LOADED
        .get_or_init(|| {
            let pool = DescriptorPool::decode(DESCRIPTOR_SET).map_err(|e| e.to_string())?;
            let by_lower_name = pool
                .all_messages()
                .map(|m| (m.full_name().to_ascii_lowercase(), m))
                .collect();
            Ok(Descriptors { pool, by_lower_name })
        })
        .as_ref()
        .map_err(|e| ProtobufError::Descriptors(e.clone()))
}

/// The proto package holding a group/version's kinds: `apps/v1` → `k8s.io.api.apps.v1`,
/// `rbac.authorization.k8s.io/v1` → `k8s.io.api.rbac.v1`, `v1` → `k8s.io.api.core.v1`.
fn package_of(api_version: &str) -> String {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let short = match group.split('.').next() {
        Some("") | None => "core",
        Some(first) => first,
    };
    format!("k8s.io.api.{short}.{version}")
}

fn message_for(d: &Descriptors, api_version: &str, kind: &str) -> Option<MessageDescriptor> {
    let lookup = |package: &str| {
        d.by_lower_name
            .get(&format!("{package}.{kind}").to_ascii_lowercase())
            .cloned()
    };
    // Options and Status types (DeleteOptions, Status, …) live in meta/v1 but are sent under every group version.
    lookup(&package_of(api_version)).or_else(|| lookup(META_PACKAGE))
}

fn string_field(message: &DynamicMessage, name: &str) -> String {
    match message.get_field_by_name(name).as_deref() {
        Some(PbValue::String(s)) => s.clone(),
        _ => String::new(),
    }
}

/// Decodes a `k8s\0`-framed protobuf body into the object's JSON, with `apiVersion` and `kind` filled in from the
/// envelope.
pub fn decode(body: &[u8]) -> Result<Value, ProtobufError> {
    let raw_envelope = body
        .strip_prefix(MAGIC.as_slice())
        .ok_or(ProtobufError::NoMagic)?;
    let d = descriptors()?;
    let unknown = d
        .pool
        .get_message_by_name(UNKNOWN)
        .ok_or_else(|| ProtobufError::Descriptors(format!("{UNKNOWN} is missing")))?;
    let envelope = DynamicMessage::decode(unknown, raw_envelope)?;
    let encoding = string_field(&envelope, "content_encoding");
    if !encoding.is_empty() {
        return Err(ProtobufError::ContentEncoding(encoding));
    }
    let (api_version, kind) = match envelope.get_field_by_name("type_meta").as_deref() {
        Some(PbValue::Message(tm)) => (string_field(tm, "api_version"), string_field(tm, "kind")),
        _ => (String::new(), String::new()),
    };
    if api_version.is_empty() || kind.is_empty() {
        return Err(ProtobufError::NoTypeMeta);
    }
    let descriptor = message_for(d, &api_version, &kind).ok_or_else(|| ProtobufError::UnknownKind {
        api_version: api_version.clone(),
        kind: kind.clone(),
    })?;
    let raw = match envelope.get_field_by_name("raw").as_deref() {
        Some(PbValue::Bytes(b)) => b.clone(),
        _ => Default::default(),
    };
    let object = DynamicMessage::decode(descriptor, raw)?;
    let mut json = json::message(&object)?;
    if let Value::Object(map) = &mut json {
        map.insert("apiVersion".into(), Value::String(api_version));
        map.insert("kind".into(), Value::String(kind));
    }
    Ok(json)
}

#[cfg(test)]
mod tests;
