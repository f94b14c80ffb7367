//! Custom resources: the kinds CustomResourceDefinitions (`apiextensions.k8s.io/v1`) define, served by the same
//! generic handlers as the built-in kinds (apiextensions-apiserver's `crdHandler`).
//!
//! The served kinds are kept here, in memory, rebuilt from the stored CRDs by the CRD controller (`crd.rs`, which
//! watches them in the store, so every API server of a cluster serves the same kinds). A CRD's versions are
//! served once it is `Established`. Each served version is a [`ResourceType`] like a built-in one (the handlers,
//! the watch cache and the errors hold `&'static ResourceType`s): these are interned, so the memory kept is one
//! per distinct set of names, scope and subresources ever served, never one per write.
//!
//! Objects are stored, as Kubernetes stores them, at `/registry/<group>/<plural>/[<ns>/]<name>` in the CRD's
//! storage version; conversion is `None` (only `apiVersion` is rewritten), on the way in and out. Schemas prune
//! unknown fields and set defaults on every write and default again on every read, then validate (`schema.rs`).

mod cel;
pub mod crd;
mod openapi;
mod printer;
pub mod schema;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};

use serde_json::{Value, json};

use super::errors::FieldError;
use super::registry::{NameRule, ResourceType};

pub use openapi::{
    document as openapi_document, documents as openapi_documents, index_entries as openapi_index_entries,
};
pub use printer::printer;

/// Where `/scale` reads and writes (`spec.versions[].subresources.scale`), as JSON pointers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScalePaths {
    pub spec_replicas: String,
    pub status_replicas: String,
    pub label_selector: Option<String>,
}

/// One served version of a custom resource.
#[derive(Debug)]
pub struct Served {
    pub resource: &'static ResourceType,
    /// The CRD's name (`<plural>.<group>`).
    pub crd: String,
    pub list_kind: String,
    /// The version objects are stored in.
    pub storage_version: String,
    /// `openAPIV3Schema`, when the version has one.
    pub schema: Option<Value>,
    /// The `Warning` every request for a deprecated version gets.
    pub deprecation: Option<String>,
    pub printer_columns: Vec<Value>,
    pub scale: Option<ScalePaths>,
    /// The fields besides `metadata.name` and `metadata.namespace` a field selector may read
    /// (`selectableFields`, as `spec.color`).
    pub selectable_fields: Vec<String>,
    /// The CRD is being deleted: its objects are being removed and no new ones are accepted.
    pub terminating: bool,
}

/// A version of a group and the resources served in it.
type VersionResources = (String, Vec<Arc<Served>>);

#[derive(Debug, Default)]
struct Kinds {
    /// (group, version, plural) → what is served there.
    served: HashMap<(String, String, String), Arc<Served>>,
    /// group → its served versions, in Kubernetes' priority order, each with its resources.
    groups: BTreeMap<String, Vec<VersionResources>>,
}

fn kinds() -> &'static RwLock<Kinds> {
    static KINDS: std::sync::OnceLock<RwLock<Kinds>> = std::sync::OnceLock::new();
    KINDS.get_or_init(Default::default)
}

/// Counts the changes of the served kinds (for what is built from them, such as the OpenAPI v2 document).
static GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

pub fn generation() -> u64 {
    GENERATION.load(std::sync::atomic::Ordering::SeqCst)
}

fn read() -> std::sync::RwLockReadGuard<'static, Kinds> {
    kinds().read().unwrap_or_else(|p| p.into_inner())
}

/// The custom resource `plural` of `group`/`version`, if a CRD serves it.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static ResourceType> {
    read()
        .served
        .get(&(group.to_string(), version.to_string(), plural.to_string()))
        .map(|s| s.resource)
}

/// What is served for `resource`, if it is a custom resource.
pub fn served(resource: &ResourceType) -> Option<Arc<Served>> {
    read()
        .served
        .get(&(
            resource.group.to_string(),
            resource.version.to_string(),
            resource.plural.to_string(),
        ))
        .cloned()
}

/// The groups custom resources are served in, each with its versions (highest priority first).
pub fn groups() -> Vec<(String, Vec<String>)> {
    read()
        .groups
        .iter()
        .map(|(g, versions)| (g.clone(), versions.iter().map(|(v, _)| v.clone()).collect()))
        .collect()
}

/// The custom resources of `group`/`version`.
pub fn resources(group: &str, version: &str) -> Vec<Arc<Served>> {
    read()
        .groups
        .get(group)
        .and_then(|versions| versions.iter().find(|(v, _)| v == version))
        .map(|(_, r)| r.clone())
        .unwrap_or_default()
}

fn leak_str(s: &str) -> &'static str {
    Box::leak(s.to_string().into_boxed_str())
}

fn leak_list(list: &[String]) -> &'static [&'static str] {
    Box::leak(
        list.iter()
            .map(|s| leak_str(s))
            .collect::<Vec<_>>()
            .into_boxed_slice(),
    )
}

fn accept_any(_: &Value) -> Result<(), String> {
    Ok(())
}

/// The one `&'static ResourceType` for these names: made (and kept) the first time they are served.
#[allow(clippy::too_many_arguments)] // the names a CRD version is served under
fn intern(
    group: &str,
    version: &str,
    kind: &str,
    plural: &str,
    singular: &str,
    namespaced: bool,
    short_names: &[String],
    categories: &[String],
    subresources: &[String],
) -> &'static ResourceType {
    static INTERNED: Mutex<Vec<&'static ResourceType>> = Mutex::new(Vec::new());
    let mut interned = INTERNED.lock().unwrap_or_else(|p| p.into_inner());
    let same = |r: &&&'static ResourceType| {
        r.group == group
            && r.version == version
            && r.kind == kind
            && r.plural == plural
            && r.singular == singular
            && r.namespaced == namespaced
            && r.short_names.iter().eq(short_names.iter())
            && r.categories.iter().eq(categories.iter())
            && r.subresources.iter().eq(subresources.iter())
    };
    if let Some(found) = interned.iter().find(same) {
        return found;
    }
    let made: &'static ResourceType = Box::leak(Box::new(ResourceType {
        group: leak_str(group),
        version: leak_str(version),
        kind: leak_str(kind),
        plural: leak_str(plural),
        singular: leak_str(singular),
        namespaced,
        short_names: leak_list(short_names),
        categories: leak_list(categories),
        subresources: leak_list(subresources),
        names: NameRule::Subdomain,
        check: accept_any,
    }));
    interned.push(made);
    made
}

fn strings(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(String::from).collect())
        .unwrap_or_default()
}

/// Kubernetes' version priority (`version.CompareKubeAwareVersionStrings`): GA before beta before alpha, higher
/// numbers first, then anything else by name.
pub fn version_priority(a: &str, b: &str) -> std::cmp::Ordering {
    fn parse(v: &str) -> Option<(u64, u8, u64)> {
        let rest = v.strip_prefix('v')?;
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let major = digits.parse().ok()?;
        let tail = &rest[digits.len()..];
        if tail.is_empty() {
            return Some((major, 3, 0));
        }
        let (stage, n) = if let Some(n) = tail.strip_prefix("beta") {
            (2, n)
        } else if let Some(n) = tail.strip_prefix("alpha") {
            (1, n)
        } else {
            return None;
        };
        Some((major, stage, n.parse().ok()?))
    }
    match (parse(a), parse(b)) {
        (Some((ma, sa, na)), Some((mb, sb, nb))) => sb.cmp(&sa).then(mb.cmp(&ma)).then(nb.cmp(&na)),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.cmp(b),
    }
}

fn condition_true(crd: &Value, kind: &str) -> bool {
    crd.pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|c| c["type"] == kind && c["status"] == "True")
}

/// What one CRD serves: one entry per served version.
fn served_versions(crd: &Value) -> Vec<Served> {
    let spec = &crd["spec"];
    let Some(group) = spec["group"].as_str() else {
        return Vec::new();
    };
    let names = &spec["names"];
    let (Some(kind), Some(plural)) = (names["kind"].as_str(), names["plural"].as_str()) else {
        return Vec::new();
    };
    let singular = names["singular"]
        .as_str()
        .map(String::from)
        .unwrap_or_else(|| kind.to_lowercase());
    let list_kind = names["listKind"]
        .as_str()
        .map(String::from)
        .unwrap_or_else(|| format!("{kind}List"));
    let namespaced = spec["scope"] != "Cluster";
    let short = strings(names.get("shortNames"));
    let categories = strings(names.get("categories"));
    let versions = spec["versions"].as_array().cloned().unwrap_or_default();
    let storage_version = versions
        .iter()
        .find(|v| v["storage"] == true)
        .and_then(|v| v["name"].as_str())
        .unwrap_or_default()
        .to_string();
    let crd_name = crd
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let terminating = crd.pointer("/metadata/deletionTimestamp").is_some();
    versions
        .iter()
        .filter(|v| v["served"] == true)
        .filter_map(|v| {
            let version = v["name"].as_str()?;
            let mut subresources = Vec::new();
            if v.pointer("/subresources/scale").is_some() {
                subresources.push("scale".to_string());
            }
            if v.pointer("/subresources/status").is_some() {
                subresources.push("status".to_string());
            }
            let scale = v.pointer("/subresources/scale").map(|s| ScalePaths {
                spec_replicas: pointer_of(s["specReplicasPath"].as_str().unwrap_or(".spec.replicas")),
                status_replicas: pointer_of(s["statusReplicasPath"].as_str().unwrap_or(".status.replicas")),
                label_selector: s["labelSelectorPath"].as_str().map(pointer_of),
            });
            let deprecation = (v["deprecated"] == true).then(|| {
                v["deprecationWarning"]
                    .as_str()
                    .map(String::from)
                    .unwrap_or_else(|| format!("{group}/{version} {kind} is deprecated"))
            });
            let resource = intern(
                group,
                version,
                kind,
                plural,
                &singular,
                namespaced,
                &short,
                &categories,
                &subresources,
            );
            Some(Served {
                resource,
                crd: crd_name.clone(),
                list_kind: list_kind.clone(),
                storage_version: storage_version.clone(),
                schema: v.pointer("/schema/openAPIV3Schema").cloned(),
                deprecation,
                printer_columns: v["additionalPrinterColumns"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default(),
                scale,
                selectable_fields: v["selectableFields"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|f| f["jsonPath"].as_str())
                    .map(|p| p.trim_start_matches('.').to_string())
                    .collect(),
                terminating,
            })
        })
        .collect()
}

/// `.spec.replicas` → `/spec/replicas`.
fn pointer_of(path: &str) -> String {
    path.trim_start_matches('.')
        .split('.')
        .fold(String::new(), |mut out, part| {
            out.push('/');
            out.push_str(&part.replace('~', "~0").replace('/', "~1"));
            out
        })
}

/// Serves exactly the versions the `Established` CRDs of `crds` define (the CRD controller calls it with every
/// CRD it knows after each change).
pub fn serve_only<'a>(crds: impl Iterator<Item = &'a Value>) {
    let mut next = Kinds::default();
    for crd in crds.filter(|c| condition_true(c, "Established")) {
        for served in served_versions(crd) {
            let served = Arc::new(served);
            let r = served.resource;
            next.served.insert(
                (r.group.to_string(), r.version.to_string(), r.plural.to_string()),
                served.clone(),
            );
            let versions = next.groups.entry(r.group.to_string()).or_default();
            match versions.iter_mut().find(|(v, _)| v == r.version) {
                Some((_, list)) => list.push(served),
                None => versions.push((r.version.to_string(), vec![served])),
            }
        }
    }
    for versions in next.groups.values_mut() {
        versions.sort_by(|a, b| version_priority(&a.0, &b.0));
        for (_, list) in versions.iter_mut() {
            list.sort_by(|a, b| a.resource.plural.cmp(b.resource.plural));
        }
    }
    crate::schema::types::set_custom_schemas(next.served.values().filter_map(|s| {
        let r = s.resource;
        s.schema
            .as_ref()
            .map(|schema| (r.group, r.version, r.kind, schema))
    }));
    *kinds().write().unwrap_or_else(|p| p.into_inner()) = next;
    GENERATION.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
}

// ---- what the handlers call for a custom resource ----

/// Whether a field selector may read `field` of `resource`, a custom resource (its CRD's `selectableFields`).
pub fn selectable(resource: &ResourceType, field: &str) -> bool {
    served(resource).is_some_and(|s| s.selectable_fields.iter().any(|f| f == field))
}

/// Prunes what the schema does not specify: the paths of the fields removed.
pub fn prune(served: &Served, object: &mut Value) -> Vec<String> {
    match &served.schema {
        Some(schema) => schema::prune(schema, object),
        None => Vec::new(),
    }
}

/// Sets the schema's defaults.
pub fn default(served: &Served, object: &mut Value) {
    if let Some(schema) = &served.schema {
        schema::default(schema, object);
    }
}

/// The schema's field errors for `object`, its CEL rules' included.
pub fn validate(served: &Served, object: &Value) -> Vec<FieldError> {
    match &served.schema {
        Some(schema) => {
            let mut errors = schema::validate(schema, object);
            cel::validate(schema, object, None, "", &mut errors);
            errors
        }
        None => Vec::new(),
    }
}

/// The causes of an update that breaks the schema's transition rules (those reading `oldSelf`).
pub fn validate_transition(served: &Served, object: &Value, old: &Value) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if let Some(schema) = &served.schema {
        cel::validate(schema, object, Some(old), "", &mut errors);
    }
    errors
}

/// A stored object as the requested version shows it: `apiVersion` rewritten (conversion `None`), defaults set.
pub fn on_read(served: &Served, object: &mut Value) {
    if object.is_object() {
        object["apiVersion"] = json!(served.resource.api_version());
    }
    default(served, object);
}

/// An object as it is stored: in the storage version.
pub fn for_storage(served: &Served, object: &Value) -> Value {
    let mut stored = object.clone();
    if stored.is_object() {
        stored["apiVersion"] = json!(format!("{}/{}", served.resource.group, served.storage_version));
    }
    stored
}

/// `on_read` for an object's JSON (lists and watches hold JSON); unchanged when it does not parse.
pub fn on_read_json(served: &Served, json: &[u8]) -> Vec<u8> {
    match serde_json::from_slice::<Value>(json) {
        Ok(mut object) => {
            on_read(served, &mut object);
            serde_json::to_vec(&object).unwrap_or_else(|_| json.to_vec())
        }
        Err(_) => json.to_vec(),
    }
}

/// The `autoscaling/v1` Scale of a custom resource, from the CRD's scale paths.
pub fn to_scale(paths: &ScalePaths, namespace: Option<&str>, object: &Value) -> Value {
    let meta = |f: &str| {
        object
            .pointer(&format!("/metadata/{f}"))
            .cloned()
            .unwrap_or(Value::Null)
    };
    let mut status =
        json!({"replicas": object.pointer(&paths.status_replicas).and_then(Value::as_i64).unwrap_or(0)});
    if let Some(selector) = paths
        .label_selector
        .as_deref()
        .and_then(|p| object.pointer(p))
        .and_then(Value::as_str)
    {
        status["selector"] = json!(selector);
    }
    json!({
        "kind": "Scale", "apiVersion": "autoscaling/v1",
        "metadata": {"name": meta("name"), "namespace": namespace, "uid": meta("uid"), "resourceVersion": meta("resourceVersion"), "creationTimestamp": meta("creationTimestamp")},
        "spec": {"replicas": object.pointer(&paths.spec_replicas).and_then(Value::as_i64).unwrap_or(0)},
        "status": status,
    })
}

/// Sets `replicas` at the CRD's spec replicas path, making the objects on the way.
pub fn set_replicas(paths: &ScalePaths, object: &mut Value, replicas: i64) {
    let mut at = object;
    let parts: Vec<String> = paths
        .spec_replicas
        .split('/')
        .skip(1)
        .map(|p| p.replace("~1", "/").replace("~0", "~"))
        .collect();
    for (i, part) in parts.iter().enumerate() {
        if !at.is_object() {
            *at = json!({});
        }
        if i + 1 == parts.len() {
            at[part.as_str()] = json!(replicas);
            return;
        }
        at = &mut at[part.as_str()];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_sort_as_kubernetes_sorts_them() {
        let mut v = vec![
            "v1alpha1", "foo", "v2beta1", "v1", "v2", "v1beta2", "v1beta1", "bar",
        ];
        v.sort_by(|a, b| version_priority(a, b));
        assert_eq!(
            v,
            [
                "v2", "v1", "v2beta1", "v1beta2", "v1beta1", "v1alpha1", "bar", "foo"
            ]
        );
    }

    #[test]
    fn scale_paths_read_and_write_the_object() {
        let paths = ScalePaths {
            spec_replicas: pointer_of(".spec.size"),
            status_replicas: pointer_of(".status.size"),
            label_selector: Some(pointer_of(".status.selector")),
        };
        let mut object = json!({"metadata": {"name": "w"}, "spec": {"size": 2}, "status": {"size": 1, "selector": "app=w"}});
        let scale = to_scale(&paths, Some("default"), &object);
        assert_eq!(scale["spec"]["replicas"], 2);
        assert_eq!(scale["status"], json!({"replicas": 1, "selector": "app=w"}));
        set_replicas(&paths, &mut object, 5);
        assert_eq!(object["spec"]["size"], 5);
    }

    #[test]
    fn established_crds_serve_their_served_versions() {
        let crd = json!({"metadata": {"name": "widgets.example.com"}, "spec": {"group": "example.com", "scope": "Namespaced",
            "names": {"plural": "widgets", "kind": "Widget", "shortNames": ["wd"]},
            "versions": [{"name": "v1", "served": true, "storage": true, "subresources": {"status": {}}},
                         {"name": "v1beta1", "served": true, "storage": false, "deprecated": true},
                         {"name": "v0", "served": false, "storage": false}]},
            "status": {"conditions": [{"type": "Established", "status": "True"}]}});
        let served = served_versions(&crd);
        assert_eq!(served.len(), 2);
        assert!(served[0].resource.has_status());
        assert_eq!(
            served[1].deprecation.as_deref(),
            Some("example.com/v1beta1 Widget is deprecated")
        );
        // The same names give the same interned type.
        assert!(std::ptr::eq(
            served[0].resource,
            served_versions(&crd)[0].resource
        ));
    }
}
