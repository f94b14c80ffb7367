//! A manifest file: YAML documents (or a JSON one), each an object or a `kind: List` of them, checked before
//! anything is applied so a broken file changes nothing.

use std::path::Path;

use kube::core::GroupVersionKind;
use serde_json::Value;
use sha2::Digest;

use crate::AddonError;

/// One object of a manifest, ready to apply.
#[derive(Clone, Debug, PartialEq)]
pub struct ManifestObject {
    pub gvk: GroupVersionKind,
    pub name: String,
    pub namespace: Option<String>,
    pub body: Value,
}

impl ManifestObject {
    pub fn describe(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{} {ns}/{}", self.gvk.kind, self.name),
            None => format!("{} {}", self.gvk.kind, self.name),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Manifest {
    pub objects: Vec<ManifestObject>,
}

/// The digest a file's contents are compared by.
pub fn digest(text: &str) -> String {
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

impl Manifest {
    pub fn parse(path: &Path, text: &str) -> Result<Manifest, AddonError> {
        let failed = |message: String| AddonError::Manifest {
            path: path.display().to_string(),
            message,
        };
        let documents: Vec<Value> = if path.extension().and_then(|e| e.to_str()) == Some("json") {
            vec![serde_json::from_str(text).map_err(|e| failed(format!("not JSON: {e}")))?]
        } else {
            serde_saphyr::from_multiple(text).map_err(|e| failed(format!("not YAML: {e}")))?
        };
        let mut objects = Vec::new();
        for (index, document) in documents.into_iter().enumerate() {
            if document.is_null() {
                continue;
            }
            let items = match document.get("kind").and_then(Value::as_str) {
                Some(kind) if kind.ends_with("List") && document.get("items").is_some() => document
                    .get("items")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default(),
                _ => vec![document],
            };
            for item in items {
                objects.push(object(item).map_err(|m| failed(format!("document {}: {m}", index + 1)))?);
            }
        }
        Ok(Manifest { objects })
    }
}

fn object(body: Value) -> Result<ManifestObject, String> {
    if !body.is_object() {
        return Err("not an object".into());
    }
    let text = |field: &str| body.get(field).and_then(Value::as_str).filter(|s| !s.is_empty());
    let api_version = text("apiVersion").ok_or("apiVersion is missing")?;
    let kind = text("kind").ok_or("kind is missing")?;
    let metadata = body.get("metadata");
    let name = metadata
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| format!("{kind} has no metadata.name (generateName cannot be applied)"))?
        .to_string();
    let namespace = metadata
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    let (group, version) = match api_version.split_once('/') {
        Some((group, version)) => (group, version),
        None => ("", api_version),
    };
    Ok(ManifestObject {
        gvk: GroupVersionKind::gvk(group, version, kind),
        name,
        namespace,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_and_lists_become_objects_and_broken_ones_name_the_problem() {
        let text = "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, namespace: web}\n---\n# only a comment\n---\napiVersion: v1\nkind: List\nitems:\n- apiVersion: apps/v1\n  kind: Deployment\n  metadata: {name: b}\n";
        let manifest = Manifest::parse(Path::new("x.yaml"), text).expect("parses");
        let described: Vec<String> = manifest.objects.iter().map(ManifestObject::describe).collect();
        assert_eq!(described, vec!["ConfigMap web/a", "Deployment b"]);
        assert_eq!(manifest.objects[1].gvk.group, "apps");
        let broken =
            Manifest::parse(Path::new("x.yaml"), "apiVersion: v1\nkind: ConfigMap\n").expect_err("no name");
        assert!(broken.to_string().contains("no metadata.name"), "{broken}");
        let not_yaml = Manifest::parse(Path::new("x.yaml"), "a: [b\n").expect_err("bad");
        assert!(not_yaml.to_string().starts_with("x.yaml: not YAML"), "{not_yaml}");
        assert_ne!(digest("a"), digest("b"));
    }
}
