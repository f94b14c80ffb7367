//! The OpenAPI v3 document of a custom resource group/version, built from the CRDs' schemas as
//! apiextensions-apiserver's `builder` does: the kind and its list as `<reversed group>.<version>.<Kind>`
//! with `x-kubernetes-group-version-kind`, the meta types they refer to, and the paths with their parameters
//! (`fieldValidation`, `dryRun`, `fieldManager`: kubectl checks the PATCH operation for them).

use std::sync::OnceLock;

use serde_json::{Map, Value, json};
use sha2::Digest;

use super::Served;

const META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1";

use crate::schema::types::custom_definition as definition_name;

/// The meta types (`ObjectMeta`, `ListMeta`, `Status`, `DeleteOptions`, ...) from the built-in documents.
fn meta_schemas() -> &'static Map<String, Value> {
    static META_SCHEMAS: OnceLock<Map<String, Value>> = OnceLock::new();
    META_SCHEMAS.get_or_init(|| {
        let mut out = Map::new();
        for document in crate::openapi::documents_json() {
            if let Some(schemas) = document.pointer("/components/schemas").and_then(Value::as_object) {
                for (name, schema) in schemas {
                    if name.starts_with("io.k8s.apimachinery.") {
                        out.insert(name.clone(), schema.clone());
                    }
                }
            }
            if out.contains_key(&format!("{META}.ObjectMeta")) {
                break;
            }
        }
        out
    })
}

fn gvk(group: &str, version: &str, kind: &str) -> Value {
    json!([{"group": group, "kind": kind, "version": version}])
}

fn reference(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn param(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "query", "description": description, "schema": {"type": "string", "uniqueItems": true}})
}

fn write_params() -> Vec<Value> {
    vec![
        param(
            "dryRun",
            "When present, indicates that modifications should not be persisted.",
        ),
        param(
            "fieldManager",
            "fieldManager is a name associated with the actor or entity that is making these changes.",
        ),
        param(
            "fieldValidation",
            "fieldValidation instructs the server on how to handle objects in the request (POST/PUT/PATCH) containing unknown or duplicate fields. Valid values are: - Ignore - Warn (default) - Strict",
        ),
    ]
}

fn operation(
    id: String,
    action: &str,
    served: &Served,
    params: Vec<Value>,
    body: Option<Value>,
    response: Value,
) -> Value {
    let r = served.resource;
    let mut op = json!({
        "operationId": id,
        "tags": [format!("{}_{}", r.group.replace('.', "_"), r.version)],
        "parameters": params,
        "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": response}}}, "401": {"description": "Unauthorized"}},
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": gvk(r.group, r.version, r.kind)[0],
    });
    if let Some(body) = body {
        op["requestBody"] = body;
    }
    op
}

fn body(types: &[&str], schema: &Value) -> Value {
    let content: Map<String, Value> = types
        .iter()
        .map(|t| (t.to_string(), json!({"schema": schema})))
        .collect();
    json!({"content": content, "required": true})
}

fn paths_of(served: &Served, paths: &mut Map<String, Value>) {
    let r = served.resource;
    let object = reference(&definition_name(r.group, r.version, r.kind));
    let list = reference(&definition_name(r.group, r.version, &served.list_kind));
    let status = reference(&format!("{META}.Status"));
    let patch = json!({"type": "object", "description": "Patch is provided to give a concrete name and type to the Kubernetes PATCH request body."});
    let scope = if r.namespaced { "Namespaced" } else { "" };
    let id = |verb: &str, suffix: &str| format!("{verb}{scope}{}{suffix}", r.kind);
    let base = if r.namespaced {
        format!(
            "/apis/{}/{}/namespaces/{{namespace}}/{}",
            r.group, r.version, r.plural
        )
    } else {
        format!("/apis/{}/{}/{}", r.group, r.version, r.plural)
    };
    let mut common = Vec::new();
    if r.namespaced {
        common.push(json!({"name": "namespace", "in": "path", "required": true, "description": "object name and auth scope, such as for teams and projects", "schema": {"type": "string", "uniqueItems": true}}));
    }
    let list_params: Vec<Value> = [
        "labelSelector",
        "fieldSelector",
        "limit",
        "continue",
        "resourceVersion",
        "watch",
        "timeoutSeconds",
    ]
    .iter()
    .map(|p| param(p, ""))
    .collect();
    let json_types = ["application/json", "application/yaml"];
    let patch_types = [
        "application/json-patch+json",
        "application/merge-patch+json",
        "application/apply-patch+yaml",
    ];
    let mut collection = Map::new();
    collection.insert(
        "get".into(),
        operation(id("list", ""), "list", served, list_params, None, list.clone()),
    );
    collection.insert(
        "post".into(),
        operation(
            id("create", ""),
            "post",
            served,
            write_params(),
            Some(body(&json_types, &object)),
            object.clone(),
        ),
    );
    collection.insert(
        "delete".into(),
        operation(
            id("deletecollection", ""),
            "deletecollection",
            served,
            vec![],
            None,
            status.clone(),
        ),
    );
    collection.insert("parameters".into(), json!(common));
    paths.insert(base.clone(), Value::Object(collection));
    let mut item_common = common.clone();
    item_common.push(json!({"name": "name", "in": "path", "required": true, "description": format!("name of the {}", r.kind), "schema": {"type": "string", "uniqueItems": true}}));
    let item = |suffix: &str, sub: &str, schema: &Value| {
        let mut ops = Map::new();
        ops.insert(
            "get".into(),
            operation(id("read", sub), "get", served, vec![], None, schema.clone()),
        );
        ops.insert(
            "put".into(),
            operation(
                id("replace", sub),
                "put",
                served,
                write_params(),
                Some(body(&json_types, schema)),
                schema.clone(),
            ),
        );
        let mut patch_params = write_params();
        patch_params.push(param("force", "Force is going to \"force\" Apply requests."));
        ops.insert(
            "patch".into(),
            operation(
                id("patch", sub),
                "patch",
                served,
                patch_params,
                Some(body(&patch_types, &patch)),
                schema.clone(),
            ),
        );
        if suffix.is_empty() {
            ops.insert(
                "delete".into(),
                operation(id("delete", ""), "delete", served, vec![], None, status.clone()),
            );
        }
        ops.insert("parameters".into(), json!(item_common));
        (format!("{base}/{{name}}{suffix}"), Value::Object(ops))
    };
    let (p, v) = item("", "", &object);
    paths.insert(p, v);
    if r.has_subresource("status") {
        let (p, v) = item("/status", "Status", &object);
        paths.insert(p, v);
    }
    if r.has_subresource("scale") {
        let (p, v) = item("/scale", "Scale", &reference("io.k8s.api.autoscaling.v1.Scale"));
        paths.insert(p, v);
    }
}

/// The root schema of a kind: the CRD's, with `apiVersion`, `kind` and `metadata` as Kubernetes adds them.
fn kind_schema(served: &Served) -> Value {
    let r = served.resource;
    let mut schema = served
        .schema
        .clone()
        .unwrap_or_else(|| json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}));
    if !schema.get("properties").is_some_and(Value::is_object) {
        schema["properties"] = json!({});
    }
    schema["properties"]["apiVersion"] = json!({"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources"});
    schema["properties"]["kind"] = json!({"type": "string", "description": "Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds"});
    schema["properties"]["metadata"] = json!({"allOf": [reference(&format!("{META}.ObjectMeta"))], "description": "Standard object's metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata"});
    schema["x-kubernetes-group-version-kind"] = gvk(r.group, r.version, r.kind);
    schema
}

fn build(group: &str, version: &str) -> Option<Value> {
    let served = super::resources(group, version);
    if served.is_empty() {
        return None;
    }
    let mut schemas = meta_schemas().clone();
    let mut paths = Map::new();
    for s in &served {
        let r = s.resource;
        schemas.insert(definition_name(group, version, r.kind), kind_schema(s));
        schemas.insert(
            definition_name(group, version, &s.list_kind),
            json!({
                "type": "object", "required": ["items"],
                "description": format!("{} is a list of {}", s.list_kind, r.kind),
                "properties": {
                    "apiVersion": {"type": "string"}, "kind": {"type": "string"},
                    "items": {"type": "array", "items": reference(&definition_name(group, version, r.kind))},
                    "metadata": {"allOf": [reference(&format!("{META}.ListMeta"))]},
                },
                "x-kubernetes-group-version-kind": gvk(group, version, &s.list_kind),
            }),
        );
        if r.has_subresource("scale") {
            schemas.insert("io.k8s.api.autoscaling.v1.Scale".into(), json!({"type": "object", "properties": {
                "apiVersion": {"type": "string"}, "kind": {"type": "string"},
                "metadata": {"allOf": [reference(&format!("{META}.ObjectMeta"))]},
                "spec": {"type": "object", "properties": {"replicas": {"type": "integer", "format": "int32"}}},
                "status": {"type": "object", "properties": {"replicas": {"type": "integer", "format": "int32"}, "selector": {"type": "string"}}}},
                "x-kubernetes-group-version-kind": gvk("autoscaling", "v1", "Scale")}));
        }
        paths_of(s, &mut paths);
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes CRD Swagger", "version": "v0.1.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    }))
}

/// The document at `apis/<group>/<version>`, if custom resources are served there.
pub fn document(path: &str) -> Option<Value> {
    let rest = path.strip_prefix("apis/")?;
    let (group, version) = rest.split_once('/')?;
    build(group, version)
}

/// (path, hash) of every custom group/version's document, for `/openapi/v3`.
pub fn index_entries() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (group, versions) in super::groups() {
        for version in versions {
            if let Some(doc) = build(&group, &version) {
                let hash = hex::encode_upper(sha2::Sha256::digest(doc.to_string().as_bytes()));
                out.push((format!("apis/{group}/{version}"), hash));
            }
        }
    }
    out
}

/// The documents of every custom group/version, with the generation of the served kinds they were built for.
pub fn documents() -> (u64, Vec<Value>) {
    let generation = super::generation();
    let mut out = Vec::new();
    for (group, versions) in super::groups() {
        for version in versions {
            out.extend(build(&group, &version));
        }
    }
    (generation, out)
}
