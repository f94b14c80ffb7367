//! `x-kubernetes-validations`: a CRD schema's CEL rules (apiextensions-apiserver's `pkg/apiserver/schema/cel`),
//! evaluated with the `cel` crate. Each rule sees its node as `self` (and, for transition rules on an update, the
//! previous value as `oldSelf`); one that is false is a 422 cause at the node (or the rule's `fieldPath`) with the
//! rule's `message`, its `messageExpression`'s result, or `failed rule: <rule>`.

use std::sync::{Arc, OnceLock};

use cel::{Context, Env, Program};
use serde_json::Value;

use super::super::errors::FieldError;

fn env() -> Option<Arc<Env>> {
    static ENV: OnceLock<Option<Arc<Env>>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Env::stdlib();
        // Kubernetes' CEL environment has the strings and lists libraries.
        for extension in [cel::extensions::strings, cel::extensions::lists] {
            if let Err(e) = env.add_extension(extension) {
                tracing::error!(error = %e, "the CEL environment does not build");
                return None;
            }
        }
        Some(Arc::new(env))
    })
    .clone()
}

fn compile(rule: &str) -> Result<(Arc<Env>, Program), String> {
    let env = env().ok_or("the CEL environment is not available")?;
    let program = env.compile(rule).map_err(|e| e.to_string())?;
    Ok((env, program))
}

/// The compilation errors of the rules at one schema node, as CRD validation causes (`<path>.x-kubernetes-validations[i].rule`).
pub fn check_rules(schema: &Value, path: &str) -> Vec<FieldError> {
    let mut out = Vec::new();
    for (i, rule) in rules(schema).iter().enumerate() {
        let text = rule.get("rule").and_then(Value::as_str).unwrap_or("");
        let field = format!("{path}.x-kubernetes-validations[{i}].rule");
        if text.is_empty() {
            out.push(FieldError {
                field,
                reason: "FieldValueRequired",
                message: "Required value".into(),
            });
        } else if let Err(e) = compile(text) {
            out.push(FieldError {
                field,
                reason: "FieldValueInvalid",
                message: format!("Invalid value: {text:?}: compilation failed: {}", e.trim()),
            });
        }
    }
    out
}

fn rules(schema: &Value) -> Vec<Value> {
    schema
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Evaluates every rule of `schema` over `value` (at every depth). With `old`, only transition rules (those that
/// read `oldSelf`) run, on the nodes that existed before; without it, only the others.
pub fn validate(schema: &Value, value: &Value, old: Option<&Value>, path: &str, out: &mut Vec<FieldError>) {
    for rule in rules(schema) {
        let text = rule.get("rule").and_then(Value::as_str).unwrap_or("");
        let transition = text.contains("oldSelf");
        if transition != old.is_some() {
            continue;
        }
        let at = match rule.get("fieldPath").and_then(Value::as_str) {
            Some(p) => join(path, p.trim_start_matches('.')),
            None if path.is_empty() => "<root>".to_string(),
            None => path.to_string(),
        };
        let shown = schema.get("type").and_then(Value::as_str).unwrap_or("object");
        let failure = match evaluate(text, value, old) {
            Ok(true) => continue,
            Ok(false) => message(&rule, value, old, text),
            Err(e) => format!("rule evaluation error: {e}"),
        };
        let reason = match rule.get("reason").and_then(Value::as_str) {
            Some("FieldValueForbidden") => "FieldValueForbidden",
            Some("FieldValueRequired") => "FieldValueRequired",
            Some("FieldValueDuplicate") => "FieldValueDuplicate",
            _ => "FieldValueInvalid",
        };
        out.push(FieldError {
            field: at,
            reason,
            message: format!("Invalid value: {shown:?}: {failure}"),
        });
    }
    match value {
        Value::Object(map) => {
            let properties = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            for (key, child) in map {
                let child_schema = properties.and_then(|p| p.get(key)).or(additional);
                let child_old = old.and_then(|o| o.get(key));
                if let Some(child_schema) = child_schema
                    && (old.is_none() || child_old.is_some())
                {
                    validate(child_schema, child, child_old, &join(path, key), out);
                }
            }
        }
        // List items are not correlated with the old list (Kubernetes does it only for map lists): transition
        // rules on items are not run.
        Value::Array(items) if old.is_none() => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    validate(item_schema, item, None, &format!("{path}[{i}]"), out);
                }
            }
        }
        _ => {}
    }
}

fn context<'a>(env: Arc<Env>, value: &Value, old: Option<&Value>) -> Result<Context<'a, 'a>, String> {
    let mut context = Context::with_env(env);
    context
        .add_variable("self", value.clone())
        .map_err(|e| e.to_string())?;
    if let Some(old) = old {
        context
            .add_variable("oldSelf", old.clone())
            .map_err(|e| e.to_string())?;
    }
    Ok(context)
}

fn evaluate(rule: &str, value: &Value, old: Option<&Value>) -> Result<bool, String> {
    let (env, program) = compile(rule)?;
    let context = context(env, value, old)?;
    match program.execute(&context).map_err(|e| e.to_string())? {
        cel::Value::Bool(b) => Ok(b),
        other => Err(format!("rule did not evaluate to a bool: {other:?}")),
    }
}

/// The message of a failed rule: its `messageExpression`'s result, else `message`, else `failed rule: <rule>`.
fn message(rule: &Value, value: &Value, old: Option<&Value>, text: &str) -> String {
    if let Some(expression) = rule.get("messageExpression").and_then(Value::as_str) {
        let result = compile(expression).and_then(|(env, program)| {
            let context = context(env, value, old)?;
            program.execute(&context).map_err(|e| e.to_string())
        });
        if let Ok(cel::Value::String(s)) = result {
            return s.to_string();
        }
    }
    match rule.get("message").and_then(Value::as_str) {
        Some(m) if !m.is_empty() => m.to_string(),
        _ => format!("failed rule: {text}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rules_run_on_their_nodes_with_their_messages() {
        let schema = json!({"type": "object", "properties": {"spec": {"type": "object",
            "x-kubernetes-validations": [
                {"rule": "self.min <= self.max", "message": "min must not exceed max"},
                {"rule": "self.name.startsWith('w')", "fieldPath": ".name", "reason": "FieldValueForbidden"},
                {"rule": "self.max <= oldSelf.max", "message": "max may only shrink"},
            ],
            "properties": {"min": {"type": "integer"}, "max": {"type": "integer"}, "name": {"type": "string"},
                "tags": {"type": "array", "items": {"type": "string", "x-kubernetes-validations": [{"rule": "size(self) < 4"}]}}}}}});
        let mut out = Vec::new();
        let object = json!({"spec": {"min": 5, "max": 3, "name": "x", "tags": ["ok", "toolong"]}});
        validate(&schema, &object, None, "", &mut out);
        let shown: Vec<String> = out
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect();
        assert_eq!(
            shown,
            [
                "spec: Invalid value: \"object\": min must not exceed max",
                "spec.name: Invalid value: \"object\": failed rule: self.name.startsWith('w')",
                "spec.tags[1]: Invalid value: \"string\": failed rule: size(self) < 4",
            ]
        );
        let mut out = Vec::new();
        let old = json!({"spec": {"min": 1, "max": 2, "name": "w"}});
        validate(&schema, &object, Some(&old), "", &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].message, "Invalid value: \"object\": max may only shrink");
        assert!(check_rules(&schema["properties"]["spec"], "s").is_empty());
        let broken = json!({"x-kubernetes-validations": [{"rule": "self.a >"}]});
        assert_eq!(
            check_rules(&broken, "s")[0].field,
            "s.x-kubernetes-validations[0].rule"
        );
    }
}
