//! Source generation check (rust-analyzer's "sourcegen" pattern): rebuilds the protobuf descriptor set that the
//! API server decodes request bodies with, and fails if the committed copy differs.
//!
//! Why generated: Kubernetes publishes its wire schema as `generated.proto` files, which no crate ships; `k8s-pb`
//! ships the prost code generated from them, and `k8s-openapi` the JSON field names. This test reads both crates'
//! sources (via `cargo metadata`), rebuilds the `FileDescriptorSet` and compares it with
//! `src/protobuf/k8s-descriptors.bin`. Run with `UPDATE_PROTOBUF_DESCRIPTORS=1` to rewrite the file after a
//! `k8s-pb` or `k8s-openapi` upgrade.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use prost_reflect::prost::Message as _;
use prost_reflect::prost_types::{
    DescriptorProto, FieldDescriptorProto, FileDescriptorProto, FileDescriptorSet, MessageOptions,
    field_descriptor_proto::{Label, Type},
};

/// The k8s-pb module trees whose messages the API server may receive. apiextensions is left out on purpose: its
/// `JSON*` wrapper types have hand-written JSON forms that the generic transcoder does not know.
const MODULE_ROOTS: &[&str] = &[
    "api",
    "apimachinery/pkg/apis/meta/v1",
    "apimachinery/pkg/runtime",
    "apimachinery/pkg/api/resource",
    "apimachinery/pkg/util/intstr",
];

/// Marks a field whose message is inlined into its parent in JSON (Go's `json:",inline"`), such as
/// `Volume.volumeSource`. The transcoder in `src/protobuf` knows this marker.
const INLINE: &str = ",inline";

/// The unpacked source of a registry dependency, at the version Cargo.lock pins. (`cargo metadata` would be the
/// obvious tool, but it wants every platform's manifests, which an offline machine may not have.)
fn crate_dir(name: &str) -> PathBuf {
    let lock =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.lock")).unwrap();
    let marker = format!("name = \"{name}\"\nversion = \"");
    let at = lock
        .find(&marker)
        .unwrap_or_else(|| panic!("{name} not in Cargo.lock"))
        + marker.len();
    let version = &lock[at..at + lock[at..].find('"').unwrap()];
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cargo"));
    let registries = cargo_home.join("registry/src");
    for registry in std::fs::read_dir(&registries).unwrap() {
        let dir = registry.unwrap().path().join(format!("{name}-{version}"));
        if dir.is_dir() {
            return dir;
        }
    }
    panic!("{name}-{version} is not unpacked under {}", registries.display())
}

/// JSON names per k8s-openapi struct, keyed by (module path, lowercased struct name), then by the normalised
/// field name (lowercase, no underscores).
type JsonNames = HashMap<(String, String), HashMap<String, String>>;

fn normalise(name: &str) -> String {
    name.trim_start_matches("r#")
        .chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect()
}

/// Reads every Kubernetes version k8s-openapi models (k8s-pb may be newer than the one the binary serves).
fn openapi_json_names(root: &Path) -> JsonNames {
    let mut names = JsonNames::new();
    let mut versions: Vec<PathBuf> = std::fs::read_dir(root.join("src"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("v1_"))
        })
        .collect();
    versions.sort();
    for base in versions {
        collect_json_names(&base, &mut names);
    }
    names
}

fn collect_json_names(base: &Path, names: &mut JsonNames) {
    let mut stack = vec![base.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let Some(struct_name) = text
                .lines()
                .find_map(|l| l.strip_prefix("pub struct "))
                .map(|rest| {
                    rest.split(|c: char| !c.is_alphanumeric())
                        .next()
                        .unwrap()
                        .to_string()
                })
            else {
                continue;
            };
            let module = path
                .parent()
                .unwrap()
                .strip_prefix(base)
                .unwrap()
                .to_string_lossy()
                .to_string();
            let fields = names.entry((module, struct_name.to_lowercase())).or_default();
            for line in text.lines() {
                let line = line.trim();
                if let Some(rest) = line.strip_prefix('"')
                    && let Some((json, tail)) = rest.split_once('"')
                    && tail.trim_start().starts_with("=> Field::Key_")
                {
                    fields.insert(normalise(json), json.to_string());
                }
            }
        }
    }
}

/// One field as prost-build wrote it.
struct PbField {
    rust_name: String,
    tag: i32,
    kind: String,
    repeated: bool,
    map: Option<(String, String)>,
    /// Full proto name (`k8s.io.api.core.v1.PodSpec`) of the message type, for message fields and map values.
    message: Option<String>,
}

struct PbMessage {
    module: String,
    name: String,
    fields: Vec<PbField>,
}

fn proto_package(module: &str) -> String {
    format!("k8s.io.{}", module.replace('/', "."))
}

/// Resolves the message type named by a field's Rust type (`Option<super::super::x::v1::Foo>`, `Vec<Foo>`,
/// `BTreeMap<String, Foo>`, `Option<Box<Foo>>`) to a full proto name.
fn message_type(module: &str, ty: &syn::Type) -> Option<String> {
    let syn::Type::Path(path) = ty else { return None };
    let last = path.path.segments.last()?;
    let ident = last.ident.to_string();
    if matches!(ident.as_str(), "Option" | "Vec" | "Box" | "BTreeMap") {
        let syn::PathArguments::AngleBracketed(args) = &last.arguments else {
            return None;
        };
        let inner = args.args.iter().rev().find_map(|a| match a {
            syn::GenericArgument::Type(t) => Some(t),
            _ => None,
        })?;
        return message_type(module, inner);
    }
    if path.path.leading_colon.is_some() {
        return None; // ::prost::alloc::string::String and friends
    }
    let mut parts: Vec<&str> = module.split('/').collect();
    let segments: Vec<String> = path.path.segments.iter().map(|s| s.ident.to_string()).collect();
    let (name, dirs) = segments.split_last()?;
    for dir in dirs {
        if dir == "super" {
            parts.pop();
        } else {
            parts.push(dir);
        }
    }
    Some(format!("{}.{name}", proto_package(&parts.join("/"))))
}

fn parse_field(module: &str, field: &syn::Field) -> Option<PbField> {
    let attr = field.attrs.iter().find(|a| a.path().is_ident("prost"))?;
    let mut out = PbField {
        rust_name: field
            .ident
            .as_ref()?
            .to_string()
            .trim_start_matches("r#")
            .to_string(),
        tag: 0,
        kind: String::new(),
        repeated: false,
        map: None,
        message: None,
    };
    attr.parse_nested_meta(|meta| {
        let key = meta.path.get_ident().map(|i| i.to_string()).unwrap_or_default();
        let value = if meta.input.peek(syn::Token![=]) {
            Some(meta.value()?.parse::<syn::LitStr>()?.value())
        } else {
            None
        };
        match (key.as_str(), value) {
            ("tag", Some(v)) => out.tag = v.parse().unwrap(),
            ("repeated", None) => out.repeated = true,
            ("optional" | "boxed" | "packed", _) => {}
            ("btree_map" | "map", Some(v)) => {
                let (k, val) = v.split_once(',').unwrap();
                out.map = Some((k.trim().to_string(), val.trim().to_string()));
                out.kind = "map".into();
            }
            ("bytes", _) => out.kind = "bytes".into(),
            (kind, None) => out.kind = kind.to_string(),
            (other, Some(v)) => panic!("unexpected prost attribute {other} = {v}"),
        }
        Ok(())
    })
    .unwrap();
    if out.kind == "message" || out.map.as_ref().is_some_and(|(_, v)| v == "message") {
        out.message = message_type(module, &field.ty);
        assert!(
            out.message.is_some(),
            "no message type for {module} {}",
            out.rust_name
        );
    }
    Some(out)
}

fn k8s_pb_messages(root: &Path) -> Vec<PbMessage> {
    let src = root.join("src");
    let mut files = Vec::new();
    for module_root in MODULE_ROOTS {
        let mut stack = vec![src.join(module_root)];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.file_name().is_some_and(|n| n == "mod.rs") {
                    files.push(path);
                }
            }
        }
    }
    files.sort();
    let mut messages = Vec::new();
    for path in files {
        let module = path
            .parent()
            .unwrap()
            .strip_prefix(&src)
            .unwrap()
            .to_string_lossy()
            .to_string();
        let file = syn::parse_file(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for item in file.items {
            let syn::Item::Struct(item) = item else { continue };
            let is_message = item.attrs.iter().any(|a| {
                a.path().is_ident("derive")
                    && a.meta
                        .require_list()
                        .is_ok_and(|l| l.tokens.to_string().contains("Message"))
            });
            if !is_message {
                continue;
            }
            let fields = item
                .fields
                .iter()
                .filter_map(|f| parse_field(&module, f))
                .collect();
            messages.push(PbMessage {
                module: module.clone(),
                name: item.ident.to_string(),
                fields,
            });
        }
    }
    messages
}

fn scalar_type(kind: &str) -> Type {
    match kind {
        "string" => Type::String,
        "bytes" => Type::Bytes,
        "bool" => Type::Bool,
        "int32" => Type::Int32,
        "int64" => Type::Int64,
        "uint32" => Type::Uint32,
        "uint64" => Type::Uint64,
        "double" => Type::Double,
        "float" => Type::Float,
        "message" => Type::Message,
        other => panic!("unexpected prost field kind {other}"),
    }
}

fn upper_camel(snake: &str) -> String {
    snake
        .split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_uppercase().chain(c).collect::<String>())
                .unwrap_or_default()
        })
        .collect()
}

fn lower_camel(snake: &str) -> String {
    let upper = upper_camel(snake);
    let mut c = upper.chars();
    c.next()
        .map(|f| f.to_lowercase().chain(c).collect())
        .unwrap_or_default()
}

fn build_descriptor_set() -> FileDescriptorSet {
    let pb = k8s_pb_messages(&crate_dir("k8s-pb"));
    let json = openapi_json_names(&crate_dir("k8s-openapi"));
    // Every normalised name with exactly one JSON spelling across k8s-openapi: the fallback for messages that
    // k8s-openapi models differently (lists, for one).
    let mut global: HashMap<String, Option<String>> = HashMap::new();
    for fields in json.values() {
        for (norm, name) in fields {
            global
                .entry(norm.clone())
                .and_modify(|e| {
                    if e.as_deref() != Some(name) {
                        *e = None
                    }
                })
                .or_insert_with(|| Some(name.clone()));
        }
    }
    let by_full_name: HashMap<String, &PbMessage> = pb
        .iter()
        .map(|m| (format!("{}.{}", proto_package(&m.module), m.name), m))
        .collect();

    let mut files: BTreeMap<String, FileDescriptorProto> = BTreeMap::new();
    for message in &pb {
        let package = proto_package(&message.module);
        let known = json.get(&(message.module.clone(), message.name.to_lowercase()));
        let mut proto = DescriptorProto {
            name: Some(message.name.clone()),
            ..Default::default()
        };
        for field in &message.fields {
            let norm = normalise(&field.rust_name);
            let json_name = match known.and_then(|k| k.get(&norm)) {
                Some(name) => name.clone(),
                None => {
                    // Go's `json:",inline"`: a message field whose own fields are all JSON fields of the parent.
                    if known.is_some_and(|k| inlines_into(field, k, &by_full_name)) {
                        INLINE.to_string()
                    } else {
                        global
                            .get(&norm)
                            .cloned()
                            .flatten()
                            .unwrap_or_else(|| lower_camel(&field.rust_name))
                    }
                }
            };
            let mut fd = FieldDescriptorProto {
                name: Some(field.rust_name.clone()),
                number: Some(field.tag),
                json_name: Some(json_name),
                ..Default::default()
            };
            if let Some((key, value)) = &field.map {
                let entry_name = format!("{}Entry", upper_camel(&field.rust_name));
                let mut value_field = FieldDescriptorProto {
                    name: Some("value".into()),
                    number: Some(2),
                    label: Some(Label::Optional as i32),
                    r#type: Some(scalar_type(value) as i32),
                    json_name: Some("value".into()),
                    ..Default::default()
                };
                if value == "message" {
                    value_field.type_name = Some(format!(".{}", field.message.clone().unwrap()));
                }
                proto.nested_type.push(DescriptorProto {
                    name: Some(entry_name.clone()),
                    field: vec![
                        FieldDescriptorProto {
                            name: Some("key".into()),
                            number: Some(1),
                            label: Some(Label::Optional as i32),
                            r#type: Some(scalar_type(key) as i32),
                            json_name: Some("key".into()),
                            ..Default::default()
                        },
                        value_field,
                    ],
                    options: Some(MessageOptions {
                        map_entry: Some(true),
                        ..Default::default()
                    }),
                    ..Default::default()
                });
                fd.label = Some(Label::Repeated as i32);
                fd.r#type = Some(Type::Message as i32);
                fd.type_name = Some(format!(".{package}.{}.{entry_name}", message.name));
            } else {
                fd.label = Some(if field.repeated {
                    Label::Repeated
                } else {
                    Label::Optional
                } as i32);
                fd.r#type = Some(scalar_type(&field.kind) as i32);
                if let Some(m) = &field.message {
                    fd.type_name = Some(format!(".{m}"));
                }
            }
            proto.field.push(fd);
        }
        files
            .entry(package.clone())
            .or_insert_with(|| FileDescriptorProto {
                name: Some(format!("{}/generated.proto", package.replace('.', "/"))),
                package: Some(package.clone()),
                syntax: Some("proto2".into()),
                ..Default::default()
            })
            .message_type
            .push(proto);
    }
    // Every file may refer to any other; declare the dependencies a descriptor pool needs to resolve them.
    let names: Vec<String> = files.values().map(|f| f.name.clone().unwrap()).collect();
    for file in files.values_mut() {
        let own = file.name.clone().unwrap();
        let used: Vec<String> = names
            .iter()
            .filter(|n| **n != own)
            .filter(|n| {
                let pkg = n.trim_end_matches("/generated.proto").replace('/', ".");
                file.message_type.iter().any(|m| {
                    m.field
                        .iter()
                        .chain(m.nested_type.iter().flat_map(|n| n.field.iter()))
                        .any(|f| {
                            f.type_name.as_deref().is_some_and(|t| {
                                t.rsplit_once('.').is_some_and(|(p, _)| p == format!(".{pkg}"))
                            })
                        })
                })
            })
            .cloned()
            .collect();
        file.dependency = used;
    }
    FileDescriptorSet {
        file: files.into_values().collect(),
    }
}

/// Go's `json:",inline"`: a message field whose own fields are all JSON fields of the parent, directly or through
/// further inlined messages (`NamedRuleWithOperations` → `RuleWithOperations` → `Rule`).
fn inlines_into(
    field: &PbField,
    parent: &HashMap<String, String>,
    messages: &HashMap<String, &PbMessage>,
) -> bool {
    field
        .message
        .as_ref()
        .and_then(|m| messages.get(m))
        .is_some_and(|inner| {
            !field.repeated
                && field.map.is_none()
                && !inner.fields.is_empty()
                && inner.fields.iter().all(|f| {
                    parent.contains_key(&normalise(&f.rust_name)) || inlines_into(f, parent, messages)
                })
        })
}

#[test]
fn committed_descriptors_match_k8s_pb() {
    let set = build_descriptor_set();
    // The set must load: every type reference resolves.
    prost_reflect::DescriptorPool::from_file_descriptor_set(set.clone()).expect("descriptor set loads");
    let bytes = set.encode_to_vec();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/protobuf/k8s-descriptors.bin");
    let committed = std::fs::read(&path).unwrap_or_default();
    if committed != bytes {
        if std::env::var_os("UPDATE_PROTOBUF_DESCRIPTORS").is_some() {
            std::fs::write(&path, &bytes).unwrap();
        } else {
            panic!(
                "{} is stale; rerun with UPDATE_PROTOBUF_DESCRIPTORS=1 and commit the result",
                path.display()
            );
        }
    }
}

#[test]
fn json_names_follow_kubernetes() {
    let pool = prost_reflect::DescriptorPool::from_file_descriptor_set(build_descriptor_set()).unwrap();
    let json = |message: &str, field: &str| {
        pool.get_message_by_name(message)
            .unwrap_or_else(|| panic!("{message}"))
            .get_field_by_name(field)
            .unwrap_or_else(|| panic!("{message}.{field}"))
            .json_name()
            .to_string()
    };
    assert_eq!(
        json("k8s.io.api.core.v1.AwsElasticBlockStoreVolumeSource", "volume_id"),
        "volumeID"
    );
    assert_eq!(
        json("k8s.io.api.core.v1.ServiceSpec", "external_ips"),
        "externalIPs"
    );
    assert_eq!(json("k8s.io.api.core.v1.PodSpec", "host_ipc"), "hostIPC");
    assert_eq!(json("k8s.io.api.core.v1.Volume", "volume_source"), INLINE);
    assert_eq!(
        json(
            "k8s.io.api.core.v1.PersistentVolumeSpec",
            "persistent_volume_source"
        ),
        INLINE
    );
    assert_eq!(json("k8s.io.api.core.v1.PodList", "items"), "items");
    assert_eq!(json("k8s.io.api.core.v1.Probe", "handler"), INLINE);
    assert_eq!(
        json("k8s.io.api.core.v1.SecretKeySelector", "local_object_reference"),
        INLINE
    );
    assert_eq!(
        json(
            "k8s.io.api.core.v1.EphemeralContainer",
            "ephemeral_container_common"
        ),
        INLINE
    );
    assert_eq!(
        json(
            "k8s.io.api.admissionregistration.v1.NamedRuleWithOperations",
            "rule_with_operations"
        ),
        INLINE
    );
    assert_eq!(
        json(
            "k8s.io.apimachinery.pkg.apis.meta.v1.ObjectMeta",
            "creation_timestamp"
        ),
        "creationTimestamp"
    );
    assert_eq!(json("k8s.io.api.core.v1.AppArmorProfile", "type"), "type");
}
