//! Kubernetes' validation of names and labels (apimachinery's `validation` package), with its
//! messages, so that `kubectl` shows what it shows against a real cluster.

use serde_json::Value;

use super::errors::FieldError;
use super::registry::NameRule;

const DNS1123_LABEL_MAX: usize = 63;
const DNS1123_SUBDOMAIN_MAX: usize = 253;

fn is_label_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'
}

pub fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= DNS1123_LABEL_MAX
        && s.chars().all(is_label_char)
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

pub fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= DNS1123_SUBDOMAIN_MAX && s.split('.').all(is_dns1123_label)
}

const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";

fn invalid(field: &str, value: &str, message: impl Into<String>) -> FieldError {
    FieldError {
        field: field.to_string(),
        reason: "FieldValueInvalid",
        message: format!("Invalid value: \"{value}\": {}", message.into()),
    }
}

pub fn validate_name(rule: NameRule, field: &str, name: &str) -> Vec<FieldError> {
    let ok = match rule {
        NameRule::Subdomain => is_dns1123_subdomain(name),
        NameRule::Label => is_dns1123_label(name),
        NameRule::PathSegment => {
            !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '%'])
        }
    };
    if ok {
        return vec![];
    }
    let message = match rule {
        NameRule::Subdomain => SUBDOMAIN_MSG,
        NameRule::Label => LABEL_MSG,
        NameRule::PathSegment => "may not be '.' or '..' and may not contain '/' or '%'",
    };
    vec![invalid(field, name, message)]
}

/// A qualified name: `[prefix/]name`, name 1-63 characters of alphanumerics, '-', '_', '.',
/// starting and ending alphanumeric; prefix a DNS subdomain.
fn is_qualified_name(key: &str) -> bool {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    name_ok && prefix.is_none_or(is_dns1123_subdomain)
}

fn is_label_value(v: &str) -> bool {
    v.is_empty() || (v.len() <= 63 && is_qualified_name(v) && !v.contains('/'))
}

/// Validates `metadata`: name (unless generated later), labels and annotations keys.
pub fn validate_metadata(rule: NameRule, metadata: &Value) -> Vec<FieldError> {
    let mut errors = vec![];
    if let Some(name) = metadata.get("name").and_then(Value::as_str) {
        errors.extend(validate_name(rule, "metadata.name", name));
    }
    if let Some(labels) = metadata.get("labels").and_then(Value::as_object) {
        for (k, v) in labels {
            if !is_qualified_name(k) {
                errors.push(invalid("metadata.labels", k, "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"));
            }
            match v.as_str() {
                Some(v) if is_label_value(v) => {}
                Some(v) => errors.push(invalid(&format!("metadata.labels.{k}"), v, "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character")),
                None => errors.push(invalid(&format!("metadata.labels.{k}"), &v.to_string(), "must be a string")),
            }
        }
    }
    if let Some(annotations) = metadata.get("annotations").and_then(Value::as_object) {
        for k in annotations.keys() {
            if !is_qualified_name(k) {
                errors.push(invalid("metadata.annotations", k, "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"));
            }
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_kubernetes_rules() {
        assert!(is_dns1123_subdomain("my-app.v1"));
        assert!(!is_dns1123_subdomain("My_App"));
        assert!(!is_dns1123_subdomain("-a"));
        assert!(!is_dns1123_subdomain(&"a".repeat(254)));
        assert!(is_dns1123_label("kube-system"));
        assert!(!is_dns1123_label("a.b"));
        assert!(validate_name(NameRule::PathSegment, "metadata.name", "system:controller:x").is_empty());
        assert_eq!(
            validate_name(NameRule::PathSegment, "metadata.name", "a/b").len(),
            1
        );
        let e = &validate_name(NameRule::Subdomain, "metadata.name", "Bad_Name")[0];
        assert!(
            e.message
                .starts_with("Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain"),
            "{}",
            e.message
        );
    }

    #[test]
    fn labels_and_annotations() {
        let ok = serde_json::json!({"name": "x", "labels": {"app.kubernetes.io/name": "web", "tier": ""}, "annotations": {"example.com/a": "anything at all"}});
        assert!(validate_metadata(NameRule::Subdomain, &ok).is_empty());
        let bad = serde_json::json!({"labels": {"bad key!": "v", "k": "not a valid value"}});
        assert_eq!(validate_metadata(NameRule::Subdomain, &bad).len(), 2);
    }
}

/// The paths (`spec.replicas`) of keys a JSON document repeats within one object: serde_json keeps the last
/// silently, and `fieldValidation` reports them as Kubernetes' strict decoding does. Not JSON: none.
pub fn duplicate_fields(json: &[u8]) -> Vec<String> {
    use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

    struct Walk<'a> {
        path: String,
        found: &'a mut Vec<String>,
    }

    impl<'de> DeserializeSeed<'de> for Walk<'_> {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Walk<'_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            let mut seen = std::collections::HashSet::new();
            while let Some(key) = map.next_key::<String>()? {
                let path = if self.path.is_empty() {
                    key.clone()
                } else {
                    format!("{}.{key}", self.path)
                };
                if !seen.insert(key) {
                    self.found.push(path.clone());
                }
                map.next_value_seed(Walk {
                    path,
                    found: &mut *self.found,
                })?;
            }
            Ok(())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            let mut i = 0;
            while seq
                .next_element_seed(Walk {
                    path: format!("{}[{i}]", self.path),
                    found: &mut *self.found,
                })?
                .is_some()
            {
                i += 1;
            }
            Ok(())
        }
        fn visit_bool<E>(self, _: bool) -> Result<(), E> {
            Ok(())
        }
        fn visit_i64<E>(self, _: i64) -> Result<(), E> {
            Ok(())
        }
        fn visit_u64<E>(self, _: u64) -> Result<(), E> {
            Ok(())
        }
        fn visit_f64<E>(self, _: f64) -> Result<(), E> {
            Ok(())
        }
        fn visit_str<E>(self, _: &str) -> Result<(), E> {
            Ok(())
        }
        fn visit_unit<E>(self) -> Result<(), E> {
            Ok(())
        }
    }

    let mut found = Vec::new();
    let mut deserializer = serde_json::Deserializer::from_slice(json);
    let walked = Walk {
        path: String::new(),
        found: &mut found,
    }
    .deserialize(&mut deserializer);
    if walked.is_err() {
        return Vec::new();
    }
    found
}

#[cfg(test)]
mod duplicate_tests {
    use super::duplicate_fields;

    #[test]
    fn repeated_keys_are_found_at_their_paths() {
        let json = br#"{"spec": {"replicas": 1, "replicas": 2, "template": {"spec": {"containers": [{"name": "a", "name": "b"}]}}}, "kind": "x"}"#;
        assert_eq!(
            duplicate_fields(json),
            ["spec.replicas", "spec.template.spec.containers[0].name"]
        );
        assert!(duplicate_fields(br#"{"a": {"b": 1}, "c": {"b": 2}}"#).is_empty());
        assert!(duplicate_fields(b"not json").is_empty());
    }
}

/// kube-apiserver's `validateCronJobSpec` for what bonsai checks: the schedule (robfig/cron's standard parser,
/// through the same `cron-schedule` crate the controller schedules with), the time zone, the concurrency
/// policy and the non-negative counts, in its order.
pub fn validate_cronjob_spec(object: &Value) -> Vec<FieldError> {
    let Some(spec) = object.get("spec") else {
        return vec![];
    };
    let mut errors = vec![];
    let time_zone = spec.get("timeZone").and_then(Value::as_str);
    match spec.get("schedule").and_then(Value::as_str) {
        None | Some("") => errors.push(FieldError {
            field: "spec.schedule".into(),
            reason: "FieldValueRequired",
            message: "Required value".into(),
        }),
        Some(schedule) => {
            for message in cron_schedule::schedule_errors(schedule, time_zone) {
                errors.push(invalid("spec.schedule", schedule, message));
            }
        }
    }
    errors.extend(non_negative(spec, "startingDeadlineSeconds"));
    if let Some(message) = time_zone.and_then(cron_schedule::time_zone_error) {
        errors.push(invalid("spec.timeZone", time_zone.unwrap_or_default(), message));
    }
    if let Some(policy) = spec.get("concurrencyPolicy").and_then(Value::as_str)
        && !matches!(policy, "Allow" | "Forbid" | "Replace")
    {
        errors.push(FieldError {
            field: "spec.concurrencyPolicy".into(),
            reason: "FieldValueNotSupported",
            message: format!(
                "Unsupported value: \"{policy}\": supported values: \"Allow\", \"Forbid\", \"Replace\""
            ),
        });
    }
    errors.extend(non_negative(spec, "successfulJobsHistoryLimit"));
    errors.extend(non_negative(spec, "failedJobsHistoryLimit"));
    errors
}

/// `ValidateNonnegativeField` on `spec.<field>`.
fn non_negative(spec: &Value, field: &str) -> Option<FieldError> {
    let n = spec.get(field).and_then(Value::as_i64).filter(|n| *n < 0)?;
    Some(FieldError {
        field: format!("spec.{field}"),
        reason: "FieldValueInvalid",
        message: format!("Invalid value: {n}: must be greater than or equal to 0"),
    })
}

#[cfg(test)]
mod cronjob_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cronjobs_are_defaulted_and_their_schedule_and_zone_checked() {
        let mut cronjob = json!({"spec": {"schedule": "*/5 * * * *", "jobTemplate": {}}});
        crate::resources::defaults::apply("batch", "CronJob", &mut cronjob);
        assert_eq!(
            cronjob["spec"],
            json!({"schedule": "*/5 * * * *", "jobTemplate": {}, "concurrencyPolicy": "Allow",
                "suspend": false, "successfulJobsHistoryLimit": 3, "failedJobsHistoryLimit": 1})
        );
        assert!(validate_cronjob_spec(&cronjob).is_empty());
        let bad = json!({"spec": {"schedule": "every minute", "timeZone": "Mars/Olympus",
            "concurrencyPolicy": "Sometimes", "failedJobsHistoryLimit": -1}});
        let errors = validate_cronjob_spec(&bad);
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.schedule",
                "spec.timeZone",
                "spec.concurrencyPolicy",
                "spec.failedJobsHistoryLimit"
            ]
        );
        assert_eq!(
            errors[0].message,
            "Invalid value: \"every minute\": expected exactly 5 fields, found 2: [every minute]"
        );
        assert_eq!(
            errors[1].message,
            "Invalid value: \"Mars/Olympus\": unknown time zone Mars/Olympus"
        );
    }
}
