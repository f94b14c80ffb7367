//! Source generation check for the OpenAPI v3 documents the API server serves (rust-analyzer's "sourcegen"
//! pattern): one document per served group/version, with the paths of its resources and the schemas of its kinds,
//! generated from k8s-openapi's `schemars` schemas plus the `x-kubernetes-*` extensions of the project's patch
//! metadata table. The documents are committed gzipped under `src/openapi/v3/` with `src/openapi/documents.rs`
//! listing them; this test regenerates them and fails if they differ. Run with `UPDATE_OPENAPI_DOCUMENTS=1` to
//! rewrite them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use apiserver::resources::registry::{self, ResourceType};
use apiserver::schema::patch_meta;
use k8s_openapi::api;
use schemars::SchemaGenerator;
use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};

/// The Kubernetes release whose API the documents describe.
const KUBERNETES_VERSION: &str = "v1.33.0";

fn root_schema(generator: &mut SchemaGenerator, group: &str, kind: &str) -> Option<schemars::Schema> {
    macro_rules! kinds {
        ($(($g:literal, $k:literal, $t:ty)),* $(,)?) => {
            match (group, kind) {
                $(($g, $k) => Some(generator.subschema_for::<$t>()),)*
                _ => None,
            }
        };
    }
    kinds!(
        ("", "Namespace", api::core::v1::Namespace),
        ("", "Pod", api::core::v1::Pod),
        ("", "Service", api::core::v1::Service),
        ("", "Endpoints", api::core::v1::Endpoints),
        ("", "ConfigMap", api::core::v1::ConfigMap),
        ("", "Secret", api::core::v1::Secret),
        ("", "ServiceAccount", api::core::v1::ServiceAccount),
        ("", "Node", api::core::v1::Node),
        ("", "Event", api::core::v1::Event),
        ("", "PersistentVolume", api::core::v1::PersistentVolume),
        ("", "PersistentVolumeClaim", api::core::v1::PersistentVolumeClaim),
        ("", "LimitRange", api::core::v1::LimitRange),
        ("", "ResourceQuota", api::core::v1::ResourceQuota),
        ("", "Binding", api::core::v1::Binding),
        ("apps", "Deployment", api::apps::v1::Deployment),
        ("apps", "ReplicaSet", api::apps::v1::ReplicaSet),
        ("apps", "StatefulSet", api::apps::v1::StatefulSet),
        ("apps", "DaemonSet", api::apps::v1::DaemonSet),
        ("apps", "ControllerRevision", api::apps::v1::ControllerRevision),
        ("batch", "Job", api::batch::v1::Job),
        ("batch", "CronJob", api::batch::v1::CronJob),
        (
            "discovery.k8s.io",
            "EndpointSlice",
            api::discovery::v1::EndpointSlice
        ),
        ("networking.k8s.io", "Ingress", api::networking::v1::Ingress),
        (
            "networking.k8s.io",
            "IngressClass",
            api::networking::v1::IngressClass
        ),
        (
            "networking.k8s.io",
            "NetworkPolicy",
            api::networking::v1::NetworkPolicy
        ),
        (
            "admissionregistration.k8s.io",
            "MutatingWebhookConfiguration",
            api::admissionregistration::v1::MutatingWebhookConfiguration
        ),
        (
            "admissionregistration.k8s.io",
            "ValidatingWebhookConfiguration",
            api::admissionregistration::v1::ValidatingWebhookConfiguration
        ),
        ("coordination.k8s.io", "Lease", api::coordination::v1::Lease),
        ("rbac.authorization.k8s.io", "Role", api::rbac::v1::Role),
        (
            "rbac.authorization.k8s.io",
            "ClusterRole",
            api::rbac::v1::ClusterRole
        ),
        (
            "rbac.authorization.k8s.io",
            "RoleBinding",
            api::rbac::v1::RoleBinding
        ),
        (
            "rbac.authorization.k8s.io",
            "ClusterRoleBinding",
            api::rbac::v1::ClusterRoleBinding
        ),
        ("storage.k8s.io", "StorageClass", api::storage::v1::StorageClass),
        ("events.k8s.io", "Event", api::events::v1::Event),
        (
            "scheduling.k8s.io",
            "PriorityClass",
            api::scheduling::v1::PriorityClass
        ),
        (
            "apiextensions.k8s.io",
            "CustomResourceDefinition",
            k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition
        ),
        (
            "certificates.k8s.io",
            "CertificateSigningRequest",
            api::certificates::v1::CertificateSigningRequest
        ),
        ("autoscaling", "Scale", api::autoscaling::v1::Scale),
        ("policy", "Eviction", api::policy::v1::Eviction),
    )
}

/// The OpenAPI definition name of a kind: `io.k8s.api.<group's first label, or core>.<version>.<Kind>`.
fn definition_of(group: &str, version: &str, kind: &str) -> String {
    if group == "apiextensions.k8s.io" {
        return format!("io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.{version}.{kind}");
    }
    let short = if group.is_empty() {
        "core"
    } else {
        group.split('.').next().unwrap()
    };
    format!("io.k8s.api.{short}.{version}.{kind}")
}

const META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1";

fn gvk(group: &str, version: &str, kind: &str) -> Value {
    json!({"group": group, "kind": kind, "version": version})
}

fn query(name: &str, description: &str, schema: Value) -> Value {
    json!({"name": name, "in": "query", "description": description, "schema": schema, "uniqueItems": true})
}

fn string() -> Value {
    json!({"type": "string"})
}

/// The query parameters of writes: kubectl looks for `fieldValidation` on the PATCH operation to decide that the
/// server validates fields itself.
fn write_parameters() -> Vec<Value> {
    vec![
        query(
            "dryRun",
            "When present, indicates that modifications should not be persisted. Valid values: All.",
            string(),
        ),
        query(
            "fieldManager",
            "The name of the actor or entity making these changes.",
            string(),
        ),
        query(
            "fieldValidation",
            "How the server treats unknown or duplicate fields in the request body: Ignore, Warn (the default) or Strict.",
            string(),
        ),
    ]
}

fn list_parameters() -> Vec<Value> {
    let int = json!({"type": "integer", "uniqueItems": true});
    let boolean = json!({"type": "boolean", "uniqueItems": true});
    vec![
        query(
            "allowWatchBookmarks",
            "Ask for BOOKMARK watch events.",
            boolean.clone(),
        ),
        query("continue", "The continue token of the previous page.", string()),
        query("fieldSelector", "Restrict the list by fields.", string()),
        query("labelSelector", "Restrict the list by labels.", string()),
        query("limit", "The largest number of items to return.", int.clone()),
        query(
            "resourceVersion",
            "The resourceVersion to read at or watch from.",
            string(),
        ),
        query(
            "resourceVersionMatch",
            "How resourceVersion applies: Exact or NotOlderThan.",
            string(),
        ),
        query(
            "sendInitialEvents",
            "Begin a watch with the current state as ADDED events.",
            boolean.clone(),
        ),
        query("timeoutSeconds", "How long a list or watch may take.", int),
        query("watch", "Watch for changes instead of listing.", boolean),
    ]
}

fn schema_ref(definition: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{definition}")})
}

fn body(content_types: &[&str], schema: Value) -> Value {
    let content: Map<String, Value> = content_types
        .iter()
        .map(|t| (t.to_string(), json!({"schema": schema})))
        .collect();
    json!({"content": content, "required": true})
}

fn responses(codes: &[&str], schema: Value) -> Value {
    let content = json!({
        "application/json": {"schema": schema},
        "application/yaml": {"schema": schema},
        "application/vnd.kubernetes.protobuf": {"schema": schema},
    });
    let mut out: Map<String, Value> = codes
        .iter()
        .map(|c| (c.to_string(), json!({"description": "OK", "content": content})))
        .collect();
    out.insert("401".into(), json!({"description": "Unauthorized"}));
    Value::Object(out)
}

fn operation(id: String, action: &str, tag: &str, gvk: &Value, extra: Map<String, Value>) -> Value {
    let mut op = json!({
        "operationId": id,
        "tags": [tag],
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": gvk,
    });
    op.as_object_mut().unwrap().extend(extra);
    op
}

fn fields(pairs: Vec<(&str, Value)>) -> Map<String, Value> {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// The paths of one resource, as kube-apiserver lays them out (collection, item, status and scale).
fn resource_paths(r: &ResourceType, paths: &mut Map<String, Value>) {
    let prefix = if r.group.is_empty() {
        "/api/v1".to_string()
    } else {
        format!("/apis/{}/{}", r.group, r.version)
    };
    let tag = if r.group.is_empty() {
        "core_v1".to_string()
    } else {
        format!("{}_{}", r.group.split('.').next().unwrap(), r.version)
    };
    let scope = if r.namespaced { "Namespaced" } else { "" };
    let id = |verb: &str, suffix: &str| {
        let group = if r.group.is_empty() {
            "Core".to_string()
        } else {
            upper_first(r.group.split('.').next().unwrap())
        };
        format!("{verb}{group}{}{scope}{}{suffix}", upper_first(r.version), r.kind)
    };
    let object = schema_ref(&definition_of(r.group, r.version, r.kind));
    let gvk = gvk(r.group, r.version, r.kind);
    let collection = if r.namespaced {
        format!("{prefix}/namespaces/{{namespace}}/{}", r.plural)
    } else {
        format!("{prefix}/{}", r.plural)
    };
    let mut common = vec![];
    if r.namespaced {
        common.push(json!({"name": "namespace", "in": "path", "required": true, "description": "object name and auth scope, such as for teams and projects", "schema": string(), "uniqueItems": true}));
    }
    let list_schema =
        json!({"type": "object", "description": format!("{}List is a list of {}.", r.kind, r.kind)});
    let status = schema_ref(&format!("{META}.Status"));
    let delete_options = schema_ref(&format!("{META}.DeleteOptions"));
    let json_types: &[&str] = &[
        "application/json",
        "application/yaml",
        "application/vnd.kubernetes.protobuf",
    ];
    let patch_types: &[&str] = &[
        "application/json-patch+json",
        "application/merge-patch+json",
        "application/strategic-merge-patch+json",
    ];

    paths.insert(
        collection.clone(),
        json!({
            "parameters": common,
            "get": operation(id("list", ""), "list", &tag, &gvk, fields(vec![
                ("parameters", Value::Array(list_parameters())),
                ("responses", responses(&["200"], list_schema.clone())),
            ])),
            "post": operation(id("create", ""), "post", &tag, &gvk, fields(vec![
                ("parameters", Value::Array(write_parameters())),
                ("requestBody", body(json_types, object.clone())),
                ("responses", responses(&["200", "201", "202"], object.clone())),
            ])),
            "delete": operation(id("deletecollection", ""), "deletecollection", &tag, &gvk, fields(vec![
                ("parameters", Value::Array(list_parameters())),
                ("requestBody", body(json_types, delete_options.clone())),
                ("responses", responses(&["200"], status.clone())),
            ])),
        }),
    );
    if r.namespaced {
        paths.insert(
            format!("{prefix}/{}", r.plural),
            json!({
                "get": operation(id("list", "ForAllNamespaces").replace("Namespaced", ""), "list", &tag, &gvk, fields(vec![
                    ("parameters", Value::Array(list_parameters())),
                    ("responses", responses(&["200"], list_schema)),
                ])),
            }),
        );
    }
    let mut item_parameters = common.clone();
    item_parameters.insert(0, json!({"name": "name", "in": "path", "required": true, "description": format!("name of the {}", r.kind), "schema": string(), "uniqueItems": true}));
    let item = |suffix: &str, subject: &Value, kind_gvk: &Value| {
        json!({
            "parameters": item_parameters,
            "get": operation(id("read", suffix), "get", &tag, kind_gvk, fields(vec![
                ("responses", responses(&["200"], subject.clone())),
            ])),
            "put": operation(id("replace", suffix), "put", &tag, kind_gvk, fields(vec![
                ("parameters", Value::Array(write_parameters())),
                ("requestBody", body(json_types, subject.clone())),
                ("responses", responses(&["200", "201"], subject.clone())),
            ])),
            "patch": operation(id("patch", suffix), "patch", &tag, kind_gvk, fields(vec![
                ("parameters", Value::Array({
                    let mut p = write_parameters();
                    p.push(query("force", "Force is going to \"force\" Apply requests.", json!({"type": "boolean", "uniqueItems": true})));
                    p
                })),
                ("requestBody", body(patch_types, json!({"type": "object", "description": "Patch is provided to give a concrete name and type to the Kubernetes PATCH request body."}))),
                ("responses", responses(&["200", "201"], subject.clone())),
            ])),
        })
    };
    let mut one = item("", &object, &gvk);
    one.as_object_mut().unwrap().insert(
        "delete".into(),
        operation(id("delete", ""), "delete", &tag, &gvk, fields(vec![
            ("parameters", Value::Array(vec![
                query("dryRun", "When present, indicates that modifications should not be persisted.", string()),
                query("gracePeriodSeconds", "The duration in seconds before the object should be deleted.", json!({"type": "integer", "uniqueItems": true})),
                query("propagationPolicy", "Whether and how garbage collection will be performed: Orphan, Background or Foreground.", string()),
            ])),
            ("requestBody", body(json_types, delete_options)),
            ("responses", responses(&["200", "202"], object.clone())),
        ])),
    );
    paths.insert(format!("{collection}/{{name}}"), one);
    if r.has_subresource("status") {
        paths.insert(
            format!("{collection}/{{name}}/status"),
            item("Status", &object, &gvk),
        );
    }
    if r.has_subresource("approval") {
        paths.insert(
            format!("{collection}/{{name}}/approval"),
            item("Approval", &object, &gvk),
        );
    }
    if r.has_subresource("scale") {
        let scale = schema_ref("io.k8s.api.autoscaling.v1.Scale");
        paths.insert(
            format!("{collection}/{{name}}/scale"),
            item("Scale", &scale, &self::gvk("autoscaling", "v1", "Scale")),
        );
    }
}

fn upper_first(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

/// Adds the patch metadata table's extensions to the properties of every definition.
fn add_patch_extensions(definitions: &mut Map<String, Value>) {
    for (name, field, meta) in patch_meta::all() {
        let Some(property) = definitions
            .get_mut(&name)
            .and_then(|d| d.pointer_mut(&format!("/properties/{field}")))
        else {
            continue;
        };
        let property = property.as_object_mut().unwrap();
        if !meta.strategy.is_empty() {
            property.insert("x-kubernetes-patch-strategy".into(), json!(meta.strategy));
        }
        if let Some(key) = meta.merge_key {
            property.insert("x-kubernetes-patch-merge-key".into(), json!(key));
        }
        if let Some(list_type) = meta.list_type {
            property.insert("x-kubernetes-list-type".into(), json!(list_type));
        }
        if !meta.map_keys.is_empty() {
            property.insert("x-kubernetes-list-map-keys".into(), json!(meta.map_keys));
        }
    }
}

/// Every served group/version's document, keyed by its path under `/openapi/v3/` (`api/v1`, `apis/apps/v1`).
fn documents() -> BTreeMap<String, Value> {
    let mut by_gv: BTreeMap<String, Vec<&ResourceType>> = BTreeMap::new();
    for r in registry::RESOURCES {
        let key = if r.group.is_empty() {
            "api/v1".to_string()
        } else {
            format!("apis/{}/{}", r.group, r.version)
        };
        by_gv.entry(key).or_default().push(r);
    }
    let mut out = BTreeMap::new();
    for (key, resources) in by_gv {
        let mut generator = SchemaSettings::openapi3().into_generator();
        let mut roots = BTreeSet::new();
        for r in &resources {
            root_schema(&mut generator, r.group, r.kind).unwrap_or_else(|| {
                panic!(
                    "no schema for {} {}: add it to root_schema",
                    r.api_version(),
                    r.kind
                )
            });
            roots.insert((r.group, r.version, r.kind));
            if r.has_subresource("scale") {
                root_schema(&mut generator, "autoscaling", "Scale").unwrap();
                roots.insert(("autoscaling", "v1", "Scale"));
            }
            if r.has_subresource("binding") {
                root_schema(&mut generator, "", "Binding").unwrap();
                roots.insert(("", "v1", "Binding"));
            }
            if r.has_subresource("eviction") {
                root_schema(&mut generator, "policy", "Eviction").unwrap();
                roots.insert(("policy", "v1", "Eviction"));
            }
        }
        generator.subschema_for::<k8s_openapi::apimachinery::pkg::apis::meta::v1::Status>();
        generator.subschema_for::<k8s_openapi::apimachinery::pkg::apis::meta::v1::DeleteOptions>();
        let mut definitions: Map<String, Value> = generator.take_definitions(true).into_iter().collect();
        for (group, version, kind) in roots {
            let definition = definitions.get_mut(&definition_of(group, version, kind)).unwrap();
            definition["x-kubernetes-group-version-kind"] = json!([gvk(group, version, kind)]);
        }
        add_patch_extensions(&mut definitions);
        let mut paths = Map::new();
        for r in resources {
            resource_paths(r, &mut paths);
        }
        out.insert(
            key,
            json!({
                "openapi": "3.0.0",
                "info": {"title": "Kubernetes", "version": KUBERNETES_VERSION},
                "paths": paths,
                "components": {"schemas": definitions},
            }),
        );
    }
    out
}

fn file_name(key: &str) -> String {
    format!("{}.json.gz", key.replace('/', "__"))
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::best());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes).read_to_end(&mut out).unwrap();
    out
}

fn listing(docs: &BTreeMap<String, Vec<u8>>) -> String {
    use sha2::Digest;
    let mut text = String::from(
        "// @generated by tests/openapi_documents.rs (UPDATE_OPENAPI_DOCUMENTS=1 rewrites it); do not edit.\n\n\
         /// (path under /openapi/v3/, SHA-256 of the JSON, the JSON gzipped)\n\
         pub(super) static DOCUMENTS: &[(&str, &str, &[u8])] = &[\n",
    );
    for (key, json) in docs {
        let hash = hex(&sha2::Sha256::digest(json));
        // rustfmt's own layout, so that `cargo fmt` leaves the file as generated.
        text.push_str(&format!(
            "    (\n        \"{key}\",\n        \"{hash}\",\n        include_bytes!(\"v3/{}\"),\n    ),\n",
            file_name(key)
        ));
    }
    text.push_str("];\n");
    text
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

fn openapi_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src/openapi")
}

#[test]
fn committed_documents_are_current() {
    let docs: BTreeMap<String, Vec<u8>> = documents()
        .into_iter()
        .map(|(k, v)| (k, serde_json::to_vec(&v).unwrap()))
        .collect();
    let dir = openapi_dir();
    let update = std::env::var_os("UPDATE_OPENAPI_DOCUMENTS").is_some();
    let mut stale = vec![];
    for (key, json) in &docs {
        let path = dir.join("v3").join(file_name(key));
        let committed = std::fs::read(&path).map(|b| gunzip(&b)).unwrap_or_default();
        if committed != *json {
            if update {
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(&path, gzip(json)).unwrap();
            } else {
                stale.push(path.display().to_string());
            }
        }
    }
    let listing_path = dir.join("documents.rs");
    let text = listing(&docs);
    if std::fs::read_to_string(&listing_path).unwrap_or_default() != text {
        if update {
            std::fs::write(&listing_path, text).unwrap();
        } else {
            stale.push(listing_path.display().to_string());
        }
    }
    assert!(
        stale.is_empty(),
        "stale (rerun with UPDATE_OPENAPI_DOCUMENTS=1 and commit): {stale:?}"
    );
}

/// The table's merge keys against the ones k8s-openapi's generator took from Kubernetes' own OpenAPI (its
/// `DeepMerge` impls merge lists by `x-kubernetes-patch-merge-key` and sets by `x-kubernetes-list-type: set`),
/// for every type a served document contains.
#[test]
fn patch_metadata_matches_kubernetes() {
    let reachable: BTreeSet<String> = documents()
        .values()
        .flat_map(|d| {
            d["components"]["schemas"]
                .as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect::<Vec<_>>()
        })
        .collect();
    let root = k8s_openapi_src().join("v1_33");
    let mut upstream = BTreeMap::new();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let Some(name) = text.lines().find_map(|l| l.strip_prefix("pub struct ")) else {
                continue;
            };
            let name: String = name.chars().take_while(|c| c.is_alphanumeric()).collect();
            let module = path
                .parent()
                .unwrap()
                .strip_prefix(&root)
                .unwrap()
                .to_string_lossy()
                .replace('/', ".");
            let definition = format!("io.k8s.{module}.{name}");
            if !reachable.contains(&definition) {
                continue;
            }
            let json_name = |rust: &str| {
                let needle = format!("=> Field::Key_{rust},");
                text.lines()
                    .find(|l| l.trim_end().ends_with(&needle))
                    .and_then(|l| l.split('"').nth(1))
                    .map(String::from)
                    .unwrap_or_else(|| panic!("{definition}: no JSON name for {rust}"))
            };
            let compact: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
            for (marker, is_set) in [
                ("crate::merge_strategies::list::map( &mut self.", false),
                ("crate::merge_strategies::list::set(&mut self.", true),
            ] {
                for rest in compact.split(marker).skip(1) {
                    let field: String = rest
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    let key = if is_set {
                        None
                    } else {
                        let after = rest.split("|lhs, rhs| lhs.").nth(1).unwrap();
                        let key: String = after
                            .chars()
                            .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '.')
                            .collect();
                        if key.contains('.') {
                            continue; // volumeClaimTemplates by metadata.name: atomic in Kubernetes
                        }
                        Some(key)
                    };
                    upstream.insert((definition.clone(), json_name(&field)), key);
                }
            }
        }
    }
    assert!(
        upstream.len() > 30,
        "found only {} merge keys upstream",
        upstream.len()
    );
    let ours: BTreeMap<(String, String), Option<String>> = patch_meta::all()
        .filter(|(d, _, m)| reachable.contains(d) && (m.merge_key.is_some() || m.list_type == Some("set")))
        .map(|(d, f, m)| ((d, f.to_string()), m.merge_key.map(String::from)))
        .collect();
    for ((definition, field), key) in &upstream {
        let ours = ours.get(&(definition.clone(), field.clone()));
        let upstream_key = key.as_deref().map(|k| json_name_of_key(definition, field, k));
        assert_eq!(
            ours.map(|k| k.as_deref()),
            Some(upstream_key.as_deref()),
            "{definition}.{field}"
        );
    }
    for (definition, field) in ours.keys() {
        assert!(
            upstream.contains_key(&(definition.clone(), field.clone())),
            "{definition}.{field} is not upstream"
        );
    }
}

/// Upstream keys are Rust field names (`container_port`, `type_`); the table has JSON names.
fn json_name_of_key(_definition: &str, _field: &str, rust: &str) -> String {
    let trimmed = rust.trim_end_matches('_');
    let mut out = String::new();
    let mut upper = false;
    for c in trimmed.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    // The one key whose JSON name is not plain camelCase.
    if out == "resourceId" {
        "resourceID".into()
    } else {
        out
    }
}

fn k8s_openapi_src() -> PathBuf {
    let lock =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.lock")).unwrap();
    let marker = "name = \"k8s-openapi\"\nversion = \"";
    let at = lock.find(marker).unwrap() + marker.len();
    let version = &lock[at..at + lock[at..].find('"').unwrap()];
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cargo"));
    for registry in std::fs::read_dir(home.join("registry/src")).unwrap() {
        let dir = registry
            .unwrap()
            .path()
            .join(format!("k8s-openapi-{version}/src"));
        if dir.is_dir() {
            return dir;
        }
    }
    panic!("k8s-openapi-{version} is not unpacked")
}
