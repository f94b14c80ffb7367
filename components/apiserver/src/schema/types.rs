//! The shapes of the built-in types, read once from the served OpenAPI documents: which fields each type has and
//! what each holds (another type, a list, a map, a scalar). Strategic merge patch walks it to find merge keys;
//! field validation walks it to find unknown fields.

use std::collections::HashMap;
use std::sync::{OnceLock, RwLock};

use serde_json::Value;

/// What a field holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Shape {
    /// An object of the named definition (`io.k8s.api.core.v1.PodSpec`).
    Object(String),
    List(Box<Shape>),
    Map(Box<Shape>),
    /// A string, number or boolean.
    Scalar,
    /// Anything (IntOrString, Quantity, RawExtension, free-form objects): not looked into.
    Any,
}

#[derive(Debug, Default)]
pub struct Types {
    /// Definition name → field → shape; definitions without properties are not here (they are `Any`).
    definitions: HashMap<String, HashMap<String, Shape>>,
}

/// The definition name of a built-in kind: `io.k8s.api.<first label of the group, or core>.<version>.<Kind>`
/// (apiextensions' kinds are under `io.k8s.apiextensions-apiserver.pkg.apis.apiextensions`).
pub fn kind_definition(group: &str, version: &str, kind: &str) -> String {
    if group == "apiextensions.k8s.io" {
        return format!("io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.{version}.{kind}");
    }
    let short = if group.is_empty() {
        "core"
    } else {
        group.split('.').next().unwrap_or(group)
    };
    format!("io.k8s.api.{short}.{version}.{kind}")
}

/// The definition name of a custom resource's kind, as its OpenAPI document names it:
/// `example.com`, `v1`, `Widget` → `com.example.v1.Widget`.
pub fn custom_definition(group: &str, version: &str, kind: &str) -> String {
    let reversed: Vec<&str> = group.split('.').rev().collect();
    format!("{}.{version}.{kind}", reversed.join("."))
}

/// The shapes of the custom resources served: each object schema of a CRD version becomes a definition (the
/// kind's, then `<parent>.<field>`, `<parent>.<field>[]` for list items, `<parent>.<field>{}` for map values),
/// so field management and validation walk custom resources as they walk built-in kinds.
#[derive(Debug, Default)]
struct CustomShapes {
    definitions: HashMap<String, HashMap<String, Shape>>,
    /// (definition, field) → (`x-kubernetes-list-type`, `x-kubernetes-list-map-keys`).
    lists: HashMap<(String, String), (String, Vec<String>)>,
}

fn custom_shapes() -> &'static RwLock<CustomShapes> {
    static CUSTOM: OnceLock<RwLock<CustomShapes>> = OnceLock::new();
    CUSTOM.get_or_init(Default::default)
}

fn custom_shape(schema: &Value, name: String, out: &mut CustomShapes) -> Shape {
    let flag = |n: &str| schema.get(n).and_then(Value::as_bool) == Some(true);
    if flag("x-kubernetes-int-or-string") {
        return Shape::Scalar;
    }
    match schema.get("type").and_then(Value::as_str) {
        // `x-kubernetes-map-type: atomic`: the object (a struct or a map) is one value to field management,
        // owned and replaced whole, as structured-merge-diff treats it.
        Some("object") if schema.get("x-kubernetes-map-type").and_then(Value::as_str) == Some("atomic") => {
            Shape::Scalar
        }
        Some("object") => {
            if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
                let mut fields = HashMap::new();
                for (field, child) in properties {
                    if let Some(list_type) = child.get("x-kubernetes-list-type").and_then(Value::as_str) {
                        let keys = child
                            .get("x-kubernetes-list-map-keys")
                            .and_then(Value::as_array)
                            .map(|k| k.iter().filter_map(Value::as_str).map(String::from).collect())
                            .unwrap_or_default();
                        out.lists
                            .insert((name.clone(), field.clone()), (list_type.to_string(), keys));
                    }
                    fields.insert(field.clone(), custom_shape(child, format!("{name}.{field}"), out));
                }
                out.definitions.insert(name.clone(), fields);
                Shape::Object(name)
            } else if let Some(inner) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                Shape::Map(Box::new(custom_shape(inner, format!("{name}{{}}"), out)))
            } else if flag("x-kubernetes-preserve-unknown-fields") || flag("x-kubernetes-embedded-resource") {
                Shape::Any
            } else {
                // An object without fields or a map type is a map of anything (granular, as Kubernetes treats it).
                Shape::Map(Box::new(Shape::Any))
            }
        }
        Some("array") => {
            Shape::List(Box::new(schema.get("items").map_or(Shape::Any, |items| {
                custom_shape(items, format!("{name}[]"), out)
            })))
        }
        Some(_) => Shape::Scalar,
        None => Shape::Any,
    }
}

/// Replaces the custom resources' shapes with those of `schemas`: (group, version, kind, `openAPIV3Schema`).
pub fn set_custom_schemas<'a>(schemas: impl Iterator<Item = (&'a str, &'a str, &'a str, &'a Value)>) {
    let mut next = CustomShapes::default();
    for (group, version, kind, schema) in schemas {
        let name = custom_definition(group, version, kind);
        custom_shape(schema, name.clone(), &mut next);
        let fields = next.definitions.entry(name).or_default();
        fields.insert(
            "metadata".into(),
            Shape::Object("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta".into()),
        );
        fields.insert("apiVersion".into(), Shape::Scalar);
        fields.insert("kind".into(), Shape::Scalar);
    }
    *custom_shapes().write().unwrap_or_else(|p| p.into_inner()) = next;
}

/// A custom resource list's `x-kubernetes-list-type` and map keys, if its schema gives them.
pub fn custom_list_type(definition: &str, field: &str) -> Option<(String, Vec<String>)> {
    custom_shapes()
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .lists
        .get(&(definition.to_string(), field.to_string()))
        .cloned()
}

fn shape_of(schema: &Value) -> Shape {
    let reference = schema
        .get("$ref")
        .or_else(|| schema.pointer("/allOf/0/$ref"))
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix("#/components/schemas/"));
    if let Some(name) = reference {
        return Shape::Object(name.to_string());
    }
    match schema.get("type").and_then(Value::as_str) {
        Some("array") => Shape::List(Box::new(schema.get("items").map_or(Shape::Any, shape_of))),
        Some("object") => match schema.get("additionalProperties") {
            Some(inner) if inner.is_object() => Shape::Map(Box::new(shape_of(inner))),
            _ => Shape::Any,
        },
        Some(_) => Shape::Scalar,
        None => Shape::Any,
    }
}

impl Types {
    /// Every definition of the served documents.
    pub fn get() -> &'static Types {
        static TYPES: OnceLock<Types> = OnceLock::new();
        TYPES.get_or_init(|| {
            let mut types = Types::default();
            for document in crate::openapi::documents_json() {
                let Some(schemas) = document.pointer("/components/schemas").and_then(Value::as_object) else {
                    continue;
                };
                for (name, schema) in schemas {
                    if types.definitions.contains_key(name) {
                        continue;
                    }
                    let Some(properties) = schema.get("properties").and_then(Value::as_object) else {
                        continue;
                    };
                    let fields = properties.iter().map(|(f, s)| (f.clone(), shape_of(s))).collect();
                    types.definitions.insert(name.clone(), fields);
                }
            }
            types
        })
    }

    /// The shape of `field` in `definition`, if the definition is known and has the field.
    pub fn field(&self, definition: &str, field: &str) -> Option<&Shape> {
        self.definitions.get(definition)?.get(field)
    }

    /// `field`, the shape of a field of a built-in type or of a custom resource's.
    pub fn field_shape(&self, definition: &str, field: &str) -> Option<Shape> {
        if let Some(shape) = self.field(definition, field) {
            return Some(shape.clone());
        }
        custom_shapes()
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .definitions
            .get(definition)?
            .get(field)
            .cloned()
    }

    /// Whether `definition` is a known type with fixed fields (so unknown ones can be told apart).
    pub fn is_structured(&self, definition: &str) -> bool {
        self.definitions.contains_key(definition)
    }

    /// The paths (`spec.foo`, `spec.containers[0].bar`) of fields `value` has that its type does not, removed when
    /// `prune` is set (Kubernetes never stores unknown fields of built-in kinds).
    pub fn unknown_fields(&self, definition: &str, value: &mut Value, prune: bool) -> Vec<String> {
        let mut found = Vec::new();
        self.walk(
            &Shape::Object(definition.to_string()),
            value,
            "",
            prune,
            &mut found,
        );
        found
    }

    fn walk(&self, shape: &Shape, value: &mut Value, path: &str, prune: bool, found: &mut Vec<String>) {
        match (shape, value) {
            (Shape::Object(name), Value::Object(map)) => {
                let Some(fields) = self.definitions.get(name) else {
                    return;
                };
                let join = |key: &str| {
                    if path.is_empty() {
                        key.to_string()
                    } else {
                        format!("{path}.{key}")
                    }
                };
                let unknown: Vec<String> = map.keys().filter(|k| !fields.contains_key(*k)).cloned().collect();
                for key in unknown {
                    found.push(join(&key));
                    if prune {
                        map.remove(&key);
                    }
                }
                for (key, child) in map.iter_mut() {
                    if let Some(shape) = fields.get(key) {
                        self.walk(shape, child, &join(key), prune, found);
                    }
                }
            }
            (Shape::List(inner), Value::Array(items)) => {
                for (i, item) in items.iter_mut().enumerate() {
                    self.walk(inner, item, &format!("{path}[{i}]"), prune, found);
                }
            }
            (Shape::Map(inner), Value::Object(map)) => {
                for (key, child) in map.iter_mut() {
                    self.walk(inner, child, &format!("{path}.{key}"), prune, found);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn shapes_come_from_the_documents() {
        let types = Types::get();
        let pod_spec = kind_definition("", "v1", "Pod").replace(".Pod", ".PodSpec");
        assert_eq!(
            types.field(&pod_spec, "containers"),
            Some(&Shape::List(Box::new(Shape::Object(
                "io.k8s.api.core.v1.Container".into()
            ))))
        );
        assert_eq!(
            types.field("io.k8s.api.core.v1.Container", "image"),
            Some(&Shape::Scalar)
        );
        let labels = types.field("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", "labels");
        assert_eq!(labels, Some(&Shape::Map(Box::new(Shape::Scalar))));
        assert!(types.is_structured(&kind_definition("apps", "v1", "Deployment")));
        assert!(types.is_structured(&kind_definition("rbac.authorization.k8s.io", "v1", "ClusterRole")));
    }

    #[test]
    fn unknown_fields_are_found_at_any_depth_and_pruned() {
        let types = Types::get();
        let mut pod = json!({
            "apiVersion": "v1", "kind": "Pod", "bogus": 1,
            "metadata": {"name": "p", "labels": {"any": "thing"}, "nope": true},
            "spec": {"containers": [{"name": "c", "image": "i", "imagePullPolicy": "Always"}, {"name": "d", "colour": "red",
                     "resources": {"limits": {"cpu": "1"}}}],
                     "nodeSelector": {"disk": "ssd"}},
        });
        let definition = kind_definition("", "v1", "Pod");
        let found = types.unknown_fields(&definition, &mut pod.clone(), false);
        assert_eq!(found, ["bogus", "metadata.nope", "spec.containers[1].colour"]);
        types.unknown_fields(&definition, &mut pod, true);
        assert!(pod.get("bogus").is_none() && pod["metadata"].get("nope").is_none());
        assert!(pod["spec"]["containers"][1].get("colour").is_none());
        assert_eq!(pod["spec"]["containers"][1]["resources"]["limits"]["cpu"], "1");
        assert!(types.unknown_fields(&definition, &mut pod, false).is_empty());
    }
}
