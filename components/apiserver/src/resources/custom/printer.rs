//! Server-side Tables of custom resources (apiextensions-apiserver's `tableconvertor`): Name, then the version's
//! `additionalPrinterColumns` (a JSONPath each, typed, `priority` > 0 only in `-o wide`), or Age when it has none.

use jsonpath_rust::JsonPath;
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::super::registry::ResourceType;
use super::super::tables::{Cells, age, column};

/// A column's JSONPath (`.spec.replicas`, `{.spec.replicas}`) as RFC 9535 JSONPath (`$.spec.replicas`).
fn json_path(path: &str) -> String {
    let inner = path.trim().trim_start_matches('{').trim_end_matches('}').trim();
    let inner = inner.strip_prefix('$').unwrap_or(inner);
    if inner.starts_with('[') {
        format!("${inner}")
    } else {
        format!("$.{}", inner.trim_start_matches('.'))
    }
}

fn cell(kind: &str, values: &[&Value], now: OffsetDateTime) -> Value {
    match values {
        [] => Value::Null,
        [one] => match (kind, one) {
            ("date", Value::String(s)) => json!(age(s, now)),
            ("integer", Value::Number(n)) => json!(n),
            ("number", Value::Number(n)) => json!(n),
            ("boolean", Value::Bool(b)) => json!(b),
            (_, Value::String(s)) => json!(s),
            (_, other) => json!(other.to_string()),
        },
        many => json!(
            many.iter()
                .map(|v| match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect::<Vec<_>>()
                .join(",")
        ),
    }
}

/// The columns and cells of a custom resource's Table; `None` for built-in kinds.
pub fn printer(resource: &ResourceType, now: OffsetDateTime) -> Option<(Vec<Value>, Cells)> {
    let served = super::served(resource)?;
    let mut columns = vec![column(
        "Name",
        "string",
        0,
        "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names",
    )];
    let mut paths: Vec<(String, String)> = Vec::new();
    if served.printer_columns.is_empty() {
        columns.push(column(
            "Age",
            "date",
            0,
            "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists.\n\nMore info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata",
        ));
        paths.push(("date".into(), "$.metadata.creationTimestamp".into()));
    }
    for c in &served.printer_columns {
        let kind = c["type"].as_str().unwrap_or("string");
        let mut col = json!({
            "name": c["name"].as_str().unwrap_or(""),
            "type": kind,
            "format": c["format"].as_str().unwrap_or(""),
            "description": c["description"].as_str().unwrap_or(""),
            "priority": c["priority"].as_i64().unwrap_or(0),
        });
        if kind == "date" {
            col["format"] = json!("");
        }
        columns.push(col);
        paths.push((kind.to_string(), json_path(c["jsonPath"].as_str().unwrap_or(""))));
    }
    let cells: Cells = Box::new(move |o: &Value| {
        let mut row = vec![json!(
            o.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("")
        )];
        for (kind, path) in &paths {
            let values = o.query(path).unwrap_or_default();
            row.push(cell(kind, &values, now));
        }
        row
    });
    Some((columns, cells))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_json_paths_are_evaluated() {
        let o = json!({"spec": {"replicas": 3}, "status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "Other", "status": "False"}]},
            "metadata": {"creationTimestamp": "2026-01-01T00:00:00Z"}});
        let now = OffsetDateTime::parse(
            "2026-01-01T00:05:00Z",
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        let eval = |kind: &str, p: &str| cell(kind, &o.query(&json_path(p)).unwrap_or_default(), now);
        assert_eq!(eval("integer", ".spec.replicas"), json!(3));
        assert_eq!(
            eval("string", ".status.conditions[?(@.type==\"Ready\")].status"),
            json!("True")
        );
        assert_eq!(
            eval("string", "{.status.conditions[*].type}"),
            json!("Ready,Other")
        );
        assert_eq!(eval("date", ".metadata.creationTimestamp"), json!("5m"));
        assert_eq!(eval("string", ".spec.missing"), Value::Null);
    }
}
