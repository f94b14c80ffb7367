//! `/openapi/v2`: the Swagger 2.0 document in gnostic's protobuf encoding, which kubectl before 1.29 reads for
//! validation, strategic merge patches and `explain` (later kubectl reads `/openapi/v3`). It is converted once,
//! on first request, from the v3 documents: the same schemas with `#/definitions/` references, the same
//! operations with Swagger parameters.
//!
//! Written by hand: no crate ships gnostic's `openapi_v2` messages, so the subset used here is declared with
//! prost's derive, field numbers as in gnostic's `OpenAPIv2.proto`.

use std::sync::OnceLock;

use prost::Message;
use serde_json::Value;

#[derive(Clone, PartialEq, prost::Message)]
struct Document {
    #[prost(string, tag = "1")]
    swagger: String,
    #[prost(message, optional, tag = "2")]
    info: Option<Info>,
    #[prost(message, optional, tag = "8")]
    paths: Option<Paths>,
    #[prost(message, optional, tag = "9")]
    definitions: Option<Definitions>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Info {
    #[prost(string, tag = "1")]
    title: String,
    #[prost(string, tag = "2")]
    version: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Paths {
    #[prost(message, repeated, tag = "2")]
    path: Vec<NamedPathItem>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct NamedPathItem {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, optional, tag = "2")]
    value: Option<PathItem>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct PathItem {
    #[prost(message, optional, tag = "2")]
    get: Option<Operation>,
    #[prost(message, optional, tag = "3")]
    put: Option<Operation>,
    #[prost(message, optional, tag = "4")]
    post: Option<Operation>,
    #[prost(message, optional, tag = "5")]
    delete: Option<Operation>,
    #[prost(message, optional, tag = "8")]
    patch: Option<Operation>,
    #[prost(message, repeated, tag = "9")]
    parameters: Vec<ParametersItem>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Operation {
    #[prost(string, repeated, tag = "1")]
    tags: Vec<String>,
    #[prost(string, tag = "5")]
    operation_id: String,
    #[prost(string, repeated, tag = "6")]
    produces: Vec<String>,
    #[prost(string, repeated, tag = "7")]
    consumes: Vec<String>,
    #[prost(message, repeated, tag = "8")]
    parameters: Vec<ParametersItem>,
    #[prost(message, optional, tag = "9")]
    responses: Option<Responses>,
    #[prost(message, repeated, tag = "13")]
    vendor_extension: Vec<NamedAny>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ParametersItem {
    #[prost(message, optional, tag = "1")]
    parameter: Option<Parameter>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Parameter {
    #[prost(message, optional, tag = "1")]
    body_parameter: Option<BodyParameter>,
    #[prost(message, optional, tag = "2")]
    non_body_parameter: Option<NonBodyParameter>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct BodyParameter {
    #[prost(string, tag = "2")]
    name: String,
    #[prost(string, tag = "3")]
    r#in: String,
    #[prost(bool, tag = "4")]
    required: bool,
    #[prost(message, optional, tag = "5")]
    schema: Option<Schema>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct NonBodyParameter {
    #[prost(message, optional, tag = "3")]
    query_parameter_sub_schema: Option<QueryParameter>,
    #[prost(message, optional, tag = "4")]
    path_parameter_sub_schema: Option<PathParameter>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct QueryParameter {
    #[prost(bool, tag = "1")]
    required: bool,
    #[prost(string, tag = "2")]
    r#in: String,
    #[prost(string, tag = "3")]
    description: String,
    #[prost(string, tag = "4")]
    name: String,
    #[prost(string, tag = "6")]
    r#type: String,
    #[prost(bool, tag = "20")]
    unique_items: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
struct PathParameter {
    #[prost(bool, tag = "1")]
    required: bool,
    #[prost(string, tag = "2")]
    r#in: String,
    #[prost(string, tag = "3")]
    description: String,
    #[prost(string, tag = "4")]
    name: String,
    #[prost(string, tag = "5")]
    r#type: String,
    #[prost(bool, tag = "19")]
    unique_items: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Responses {
    #[prost(message, repeated, tag = "1")]
    response_code: Vec<NamedResponseValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct NamedResponseValue {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, optional, tag = "2")]
    value: Option<ResponseValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ResponseValue {
    #[prost(message, optional, tag = "1")]
    response: Option<Response>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Response {
    #[prost(string, tag = "1")]
    description: String,
    #[prost(message, optional, tag = "2")]
    schema: Option<SchemaItem>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct SchemaItem {
    #[prost(message, optional, tag = "1")]
    schema: Option<Schema>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Definitions {
    #[prost(message, repeated, tag = "1")]
    additional_properties: Vec<NamedSchema>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct NamedSchema {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, optional, tag = "2")]
    value: Option<Schema>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Schema {
    #[prost(string, tag = "1")]
    reference: String,
    #[prost(string, tag = "2")]
    format: String,
    #[prost(string, tag = "4")]
    description: String,
    #[prost(string, repeated, tag = "19")]
    required: Vec<String>,
    #[prost(message, optional, boxed, tag = "21")]
    additional_properties: Option<Box<AdditionalPropertiesItem>>,
    #[prost(message, optional, tag = "22")]
    r#type: Option<TypeItem>,
    #[prost(message, optional, tag = "23")]
    items: Option<ItemsItem>,
    #[prost(message, optional, tag = "25")]
    properties: Option<Properties>,
    #[prost(message, repeated, tag = "31")]
    vendor_extension: Vec<NamedAny>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct AdditionalPropertiesItem {
    #[prost(message, optional, tag = "1")]
    schema: Option<Schema>,
    #[prost(bool, optional, tag = "2")]
    boolean: Option<bool>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct TypeItem {
    #[prost(string, repeated, tag = "1")]
    value: Vec<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ItemsItem {
    #[prost(message, repeated, tag = "1")]
    schema: Vec<Schema>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Properties {
    #[prost(message, repeated, tag = "1")]
    additional_properties: Vec<NamedSchema>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct NamedAny {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, optional, tag = "2")]
    value: Option<Any>,
}

/// gnostic keeps extension values as YAML text; JSON is YAML.
#[derive(Clone, PartialEq, prost::Message)]
struct Any {
    #[prost(string, tag = "2")]
    yaml: String,
}

fn text(v: &Value, key: &str) -> String {
    v.get(key).and_then(Value::as_str).unwrap_or("").to_string()
}

fn extensions(v: &Value) -> Vec<NamedAny> {
    v.as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| k.starts_with("x-"))
        .map(|(k, value)| NamedAny {
            name: k.clone(),
            value: Some(Any {
                yaml: value.to_string(),
            }),
        })
        .collect()
}

fn schema(v: &Value) -> Schema {
    // OpenAPI 3's `allOf: [{$ref}]` (a reference with a description beside it) is Swagger 2's plain `$ref`.
    let reference = v
        .get("$ref")
        .or_else(|| v.pointer("/allOf/0/$ref"))
        .and_then(Value::as_str)
        .map(|r| r.replace("#/components/schemas/", "#/definitions/"))
        .unwrap_or_default();
    let named = |map: &Value| -> Vec<NamedSchema> {
        map.as_object()
            .into_iter()
            .flatten()
            .map(|(name, s)| NamedSchema {
                name: name.clone(),
                value: Some(schema(s)),
            })
            .collect()
    };
    Schema {
        reference,
        format: text(v, "format"),
        description: text(v, "description"),
        required: v
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|r| r.as_str().map(String::from))
            .collect(),
        additional_properties: match v.get("additionalProperties") {
            Some(Value::Bool(b)) => Some(Box::new(AdditionalPropertiesItem {
                schema: None,
                boolean: Some(*b),
            })),
            Some(s @ Value::Object(_)) => Some(Box::new(AdditionalPropertiesItem {
                schema: Some(schema(s)),
                boolean: None,
            })),
            _ => None,
        },
        r#type: v.get("type").and_then(Value::as_str).map(|t| TypeItem {
            value: vec![t.to_string()],
        }),
        items: v.get("items").map(|i| ItemsItem {
            schema: vec![schema(i)],
        }),
        properties: v.get("properties").map(|p| Properties {
            additional_properties: named(p),
        }),
        vendor_extension: extensions(v),
    }
}

fn parameter(p: &Value) -> ParametersItem {
    let kind = p
        .pointer("/schema/type")
        .and_then(Value::as_str)
        .unwrap_or("string")
        .to_string();
    let unique_items = p.get("uniqueItems") == Some(&Value::Bool(true));
    let required = p.get("required") == Some(&Value::Bool(true));
    let non_body = if text(p, "in") == "path" {
        NonBodyParameter {
            query_parameter_sub_schema: None,
            path_parameter_sub_schema: Some(PathParameter {
                required,
                r#in: "path".into(),
                description: text(p, "description"),
                name: text(p, "name"),
                r#type: kind,
                unique_items,
            }),
        }
    } else {
        NonBodyParameter {
            query_parameter_sub_schema: Some(QueryParameter {
                required,
                r#in: text(p, "in"),
                description: text(p, "description"),
                name: text(p, "name"),
                r#type: kind,
                unique_items,
            }),
            path_parameter_sub_schema: None,
        }
    };
    ParametersItem {
        parameter: Some(Parameter {
            body_parameter: None,
            non_body_parameter: Some(non_body),
        }),
    }
}

fn operation(op: &Value) -> Operation {
    let mut parameters: Vec<ParametersItem> = op
        .get("parameters")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(parameter)
        .collect();
    let content = op.pointer("/requestBody/content").and_then(Value::as_object);
    if let Some(content) = content {
        let body_schema = content.values().next().and_then(|c| c.get("schema")).map(schema);
        parameters.push(ParametersItem {
            parameter: Some(Parameter {
                body_parameter: Some(BodyParameter {
                    name: "body".into(),
                    r#in: "body".into(),
                    required: true,
                    schema: body_schema,
                }),
                non_body_parameter: None,
            }),
        });
    }
    let responses = op
        .get("responses")
        .and_then(Value::as_object)
        .map(|codes| Responses {
            response_code: codes
                .iter()
                .map(|(code, r)| NamedResponseValue {
                    name: code.clone(),
                    value: Some(ResponseValue {
                        response: Some(Response {
                            description: text(r, "description"),
                            schema: r
                                .pointer("/content/application~1json/schema")
                                .map(|s| SchemaItem {
                                    schema: Some(schema(s)),
                                }),
                        }),
                    }),
                })
                .collect(),
        });
    let tags = op.get("tags").and_then(Value::as_array).into_iter().flatten();
    Operation {
        tags: tags.filter_map(|t| t.as_str().map(String::from)).collect(),
        operation_id: text(op, "operationId"),
        produces: vec!["application/json".into(), "application/yaml".into()],
        consumes: content.map(|c| c.keys().cloned().collect()).unwrap_or_default(),
        parameters,
        responses,
        vendor_extension: extensions(op),
    }
}

fn build(custom: Vec<Value>) -> Vec<u8> {
    let mut definitions: std::collections::BTreeMap<String, Schema> = Default::default();
    let mut paths: std::collections::BTreeMap<String, PathItem> = Default::default();
    for document in super::documents_json().chain(custom) {
        for (name, s) in document
            .pointer("/components/schemas")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            definitions.entry(name.clone()).or_insert_with(|| schema(s));
        }
        for (path, item) in document
            .get("paths")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            let op = |method: &str| item.get(method).map(operation);
            paths.insert(
                path.clone(),
                PathItem {
                    get: op("get"),
                    put: op("put"),
                    post: op("post"),
                    delete: op("delete"),
                    patch: op("patch"),
                    parameters: item
                        .get("parameters")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .map(parameter)
                        .collect(),
                },
            );
        }
    }
    Document {
        swagger: "2.0".into(),
        info: Some(Info {
            title: "Kubernetes".into(),
            version: "v1.33.0".into(),
        }),
        paths: Some(Paths {
            path: paths
                .into_iter()
                .map(|(name, value)| NamedPathItem {
                    name,
                    value: Some(value),
                })
                .collect(),
        }),
        definitions: Some(Definitions {
            additional_properties: definitions
                .into_iter()
                .map(|(name, value)| NamedSchema {
                    name,
                    value: Some(value),
                })
                .collect(),
        }),
    }
    .encode_to_vec()
}

/// The encoded document, built on first use; with custom resources, built again each time the served kinds
/// change (their documents come from `resources::custom`).
pub fn document() -> std::sync::Arc<Vec<u8>> {
    static BUILT_IN: OnceLock<std::sync::Arc<Vec<u8>>> = OnceLock::new();
    static WITH_CUSTOM: std::sync::Mutex<Option<(u64, std::sync::Arc<Vec<u8>>)>> =
        std::sync::Mutex::new(None);
    let (generation, documents) = crate::resources::custom::openapi_documents();
    if documents.is_empty() {
        return BUILT_IN
            .get_or_init(|| std::sync::Arc::new(build(Vec::new())))
            .clone();
    }
    let mut cached = WITH_CUSTOM.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((built_for, bytes)) = cached.as_ref()
        && *built_for == generation
    {
        return bytes.clone();
    }
    let bytes = std::sync::Arc::new(build(documents));
    *cached = Some((generation, bytes.clone()));
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_decodes_with_definitions_extensions_and_patch_operations() {
        let doc = Document::decode(document().as_slice()).unwrap();
        assert_eq!(doc.swagger, "2.0");
        let definitions = doc.definitions.unwrap().additional_properties;
        let pod_spec = definitions
            .iter()
            .find(|d| d.name == "io.k8s.api.core.v1.PodSpec")
            .unwrap()
            .value
            .clone()
            .unwrap();
        let containers = pod_spec
            .properties
            .unwrap()
            .additional_properties
            .into_iter()
            .find(|p| p.name == "containers")
            .unwrap()
            .value
            .unwrap();
        let merge_key = containers
            .vendor_extension
            .iter()
            .find(|e| e.name == "x-kubernetes-patch-merge-key")
            .unwrap();
        assert_eq!(merge_key.value.as_ref().unwrap().yaml, "\"name\"");
        assert_eq!(
            containers.items.unwrap().schema[0].reference,
            "#/definitions/io.k8s.api.core.v1.Container"
        );
        let pod = definitions
            .iter()
            .find(|d| d.name == "io.k8s.api.core.v1.Pod")
            .unwrap()
            .value
            .clone()
            .unwrap();
        assert!(
            pod.vendor_extension
                .iter()
                .any(|e| e.name == "x-kubernetes-group-version-kind")
        );
        let paths = doc.paths.unwrap().path;
        let item = paths
            .iter()
            .find(|p| p.name == "/api/v1/namespaces/{namespace}/pods/{name}")
            .unwrap();
        let patch = item.value.as_ref().unwrap().patch.as_ref().unwrap();
        let names: Vec<String> = patch
            .parameters
            .iter()
            .filter_map(|p| {
                p.parameter
                    .as_ref()?
                    .non_body_parameter
                    .as_ref()?
                    .query_parameter_sub_schema
                    .as_ref()
            })
            .map(|q| q.name.clone())
            .collect();
        assert!(names.contains(&"fieldValidation".to_string()), "{names:?}");
    }
}
