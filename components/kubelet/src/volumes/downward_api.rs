//! The downward API's files: downwardapi.go's `CollectData`, `pkg/fieldpath` (`ExtractFieldPathAsString`,
//! `FormatMap`) and `pkg/api/v1/resource` (`ExtractResourceValueByContainerNameAndNodeAllocatable`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, DownwardAPIVolumeFile, Pod, ResourceFieldSelector};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::{FileProjection, Payload, VolumeError, clean_path, mode_or_default};

/// One file per item, each item's failure collected (the volume fails with all of them).
pub(crate) fn collect_data(
    items: &[DownwardAPIVolumeFile],
    pod: &Pod,
    node_allocatable: &BTreeMap<String, Quantity>,
    default_mode: u32,
) -> Result<Payload, VolumeError> {
    let mut errors = Vec::new();
    let mut payload = Payload::new();
    for item in items {
        let mode = item.mode.map_or(default_mode, |mode| mode_or_default(Some(mode)));
        let mut data = Vec::new();
        if let Some(field) = &item.field_ref {
            match extract_field_path_as_string(pod, &field.field_path) {
                Ok(value) => data = sort_lines(&value).into_bytes(),
                Err(error) => errors.push(error),
            }
        } else if let Some(resource) = &item.resource_field_ref {
            let container = resource.container_name.as_deref().unwrap_or_default();
            match extract_resource_value(resource, pod, container, node_allocatable) {
                Ok(value) => data = sort_lines(&value).into_bytes(),
                Err(error) => errors.push(error),
            }
        }
        payload.insert(clean_path(&item.path), FileProjection::new(data, mode));
    }
    match VolumeError::aggregate(errors) {
        Some(error) => Err(error),
        None => Ok(payload),
    }
}

/// `sortLines`: the lines of a value in byte order.
fn sort_lines(value: &str) -> String {
    let mut lines: Vec<&str> = value.split('\n').collect();
    lines.sort_unstable();
    lines.join("\n")
}

/// `fieldpath.ExtractFieldPathAsString` for a pod.
pub(crate) fn extract_field_path_as_string(pod: &Pod, field_path: &str) -> Result<String, VolumeError> {
    let metadata = &pod.metadata;
    if let Some((path, subscript)) = split_maybe_subscripted_path(field_path) {
        return match path {
            "metadata.annotations" => {
                check_qualified_name(field_path, &subscript.to_lowercase())?;
                Ok(metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(subscript))
                    .cloned()
                    .unwrap_or_default())
            }
            "metadata.labels" => {
                check_qualified_name(field_path, subscript)?;
                Ok(metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(subscript))
                    .cloned()
                    .unwrap_or_default())
            }
            _ => Err(VolumeError::DownwardApi(format!(
                "fieldPath {field_path:?} does not support subscript"
            ))),
        };
    }
    match field_path {
        "metadata.annotations" => Ok(format_map(metadata.annotations.as_ref())),
        "metadata.labels" => Ok(format_map(metadata.labels.as_ref())),
        "metadata.name" => Ok(metadata.name.clone().unwrap_or_default()),
        "metadata.namespace" => Ok(metadata.namespace.clone().unwrap_or_default()),
        "metadata.uid" => Ok(metadata.uid.clone().unwrap_or_default()),
        _ => Err(VolumeError::DownwardApi(format!(
            "unsupported fieldPath: {field_path}"
        ))),
    }
}

/// `SplitMaybeSubscriptedPath`: `metadata.labels['key']` is (`metadata.labels`, `key`).
fn split_maybe_subscripted_path(field_path: &str) -> Option<(&str, &str)> {
    let inner = field_path.strip_suffix("']")?;
    let (path, subscript) = inner.split_once("['")?;
    if path.is_empty() {
        return None;
    }
    Some((path, subscript))
}

/// `validation.IsQualifiedName`: `[prefix/]name`, the name 1-63 alphanumerics with `-_.` inside, the prefix a
/// DNS subdomain.
fn check_qualified_name(field_path: &str, key: &str) -> Result<(), VolumeError> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    let prefix_ok = prefix.is_none_or(|prefix| {
        !prefix.is_empty()
            && prefix.len() <= 253
            && prefix.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                    && label.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                    && label
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            })
    });
    if name_ok && prefix_ok {
        return Ok(());
    }
    Err(VolumeError::DownwardApi(format!(
        "invalid key subscript in {field_path}: name part must consist of alphanumeric characters, '-', '_' or \
         '.', and must start and end with an alphanumeric character"
    )))
}

/// `fieldpath.FormatMap`: `key="value"` lines in key order, the value quoted as Go's `%q` does.
pub(crate) fn format_map(map: Option<&BTreeMap<String, String>>) -> String {
    map.into_iter()
        .flatten()
        .map(|(key, value)| format!("{key}={}", go_quote(value)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Go's `strconv.Quote`.
fn go_quote(value: &str) -> String {
    let mut quoted = String::with_capacity(value.len() + 2);
    quoted.push('"');
    for c in value.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            '\u{7}' => quoted.push_str("\\a"),
            '\u{8}' => quoted.push_str("\\b"),
            '\u{c}' => quoted.push_str("\\f"),
            '\n' => quoted.push_str("\\n"),
            '\r' => quoted.push_str("\\r"),
            '\t' => quoted.push_str("\\t"),
            '\u{b}' => quoted.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => quoted.push_str(&format!("\\x{:02x}", c as u32)),
            c if c.is_control() || matches!(c, '\u{ad}' | '\u{2028}' | '\u{2029}' | '\u{feff}') => {
                if (c as u32) <= 0xffff {
                    quoted.push_str(&format!("\\u{:04x}", c as u32));
                } else {
                    quoted.push_str(&format!("\\U{:08x}", c as u32));
                }
            }
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

/// `ExtractResourceValueByContainerNameAndNodeAllocatable`: the container's unset cpu, memory and
/// ephemeral-storage limits are the node's allocatable.
pub(crate) fn extract_resource_value(
    selector: &ResourceFieldSelector,
    pod: &Pod,
    container_name: &str,
    node_allocatable: &BTreeMap<String, Quantity>,
) -> Result<String, VolumeError> {
    let container = find_container(pod, container_name)
        .ok_or_else(|| VolumeError::DownwardApi(format!("container {container_name} not found")))?;
    let resources = container.resources.as_ref();
    let mut limits = resources.and_then(|r| r.limits.clone()).unwrap_or_default();
    for name in ["cpu", "memory", "ephemeral-storage"] {
        let unset = limits
            .get(name)
            .is_none_or(|q| quantity::nanos(&q.0).is_none_or(|n| n == 0));
        if unset && let Some(allocatable) = node_allocatable.get(name) {
            limits.insert(name.to_string(), allocatable.clone());
        }
    }
    let requests = resources.and_then(|r| r.requests.clone()).unwrap_or_default();
    extract_container_resource_value(selector, &limits, &requests)
}

fn find_container<'a>(pod: &'a Pod, name: &str) -> Option<&'a Container> {
    let spec = pod.spec.as_ref()?;
    spec.containers
        .iter()
        .find(|c| c.name == name)
        .or_else(|| spec.init_containers.iter().flatten().find(|c| c.name == name))
}

/// `ExtractContainerResourceValue`: the value divided by the divisor (1 when unset or zero), rounded up; cpu in
/// millis.
fn extract_container_resource_value(
    selector: &ResourceFieldSelector,
    limits: &BTreeMap<String, Quantity>,
    requests: &BTreeMap<String, Quantity>,
) -> Result<String, VolumeError> {
    let divisor = selector
        .divisor
        .as_ref()
        .and_then(|d| quantity::nanos(&d.0))
        .filter(|n| *n != 0)
        .unwrap_or(1_000_000_000);
    let unsupported =
        || VolumeError::DownwardApi(format!("unsupported container resource : {}", selector.resource));
    let (list, name) = if let Some(name) = selector.resource.strip_prefix("limits.") {
        (limits, name)
    } else if let Some(name) = selector.resource.strip_prefix("requests.") {
        (requests, name)
    } else {
        return Err(unsupported());
    };
    let amount = list.get(name).map(|q| q.0.as_str()).unwrap_or("0");
    let invalid =
        || VolumeError::DownwardApi(format!("invalid quantity {amount:?} for {}", selector.resource));
    match name {
        "cpu" => {
            let millis = quantity::milli_value(amount).ok_or_else(invalid)?;
            let divisor_millis = quantity::ceil_div(divisor, 1_000_000).max(1);
            Ok(quantity::ceil_div(millis, divisor_millis).to_string())
        }
        "memory" | "ephemeral-storage" => bytes_over(amount, divisor).ok_or_else(invalid),
        name if name.starts_with("hugepages-") => bytes_over(amount, divisor).ok_or_else(invalid),
        _ => Err(unsupported()),
    }
}

fn bytes_over(amount: &str, divisor_nanos: i128) -> Option<String> {
    let value = quantity::value(amount)?;
    let divisor = quantity::ceil_div(divisor_nanos, 1_000_000_000).max(1);
    Some(quantity::ceil_div(value, divisor).to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use k8s_openapi::api::core::v1::{ObjectFieldSelector, PodSpec, ResourceRequirements};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn pod() -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("web-0".into()),
                namespace: Some("shop".into()),
                uid: Some("1234-abcd".into()),
                labels: Some(BTreeMap::from([
                    ("tier".to_string(), "front".to_string()),
                    ("app".to_string(), "web".to_string()),
                ])),
                annotations: Some(BTreeMap::from([
                    ("note".to_string(), "say \"hi\"\nbye".to_string()),
                    ("example.com/x".to_string(), "ü".to_string()),
                ])),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "app".into(),
                    resources: Some(ResourceRequirements {
                        limits: Some(BTreeMap::from([("memory".to_string(), Quantity("64Mi".into()))])),
                        requests: Some(BTreeMap::from([
                            ("cpu".to_string(), Quantity("250m".into())),
                            ("memory".to_string(), Quantity("32Mi".into())),
                        ])),
                        ..ResourceRequirements::default()
                    }),
                    ..Container::default()
                }],
                ..PodSpec::default()
            }),
            ..Pod::default()
        }
    }

    fn field(path: &str, field_path: &str) -> DownwardAPIVolumeFile {
        DownwardAPIVolumeFile {
            path: path.into(),
            field_ref: Some(ObjectFieldSelector {
                field_path: field_path.into(),
                ..ObjectFieldSelector::default()
            }),
            ..DownwardAPIVolumeFile::default()
        }
    }

    fn resource(path: &str, resource: &str, divisor: Option<&str>) -> DownwardAPIVolumeFile {
        DownwardAPIVolumeFile {
            path: path.into(),
            resource_field_ref: Some(ResourceFieldSelector {
                container_name: Some("app".into()),
                resource: resource.into(),
                divisor: divisor.map(|d| Quantity(d.into())),
            }),
            ..DownwardAPIVolumeFile::default()
        }
    }

    fn text(payload: &Payload, path: &str) -> String {
        String::from_utf8(payload[path].data.clone()).unwrap()
    }

    #[test]
    fn metadata_fields_in_kubelet_formats() {
        let items = [
            field("name", "metadata.name"),
            field("namespace", "metadata.namespace"),
            field("uid", "metadata.uid"),
            field("labels", "metadata.labels"),
            field("annotations", "metadata.annotations"),
            field("tier", "metadata.labels['tier']"),
            field("./dir//note", "metadata.annotations['note']"),
        ];
        let payload = collect_data(&items, &pod(), &BTreeMap::new(), 0o644).unwrap();
        assert_eq!(text(&payload, "name"), "web-0");
        assert_eq!(text(&payload, "namespace"), "shop");
        assert_eq!(text(&payload, "uid"), "1234-abcd");
        assert_eq!(text(&payload, "labels"), "app=\"web\"\ntier=\"front\"");
        assert_eq!(
            text(&payload, "annotations"),
            "example.com/x=\"ü\"\nnote=\"say \\\"hi\\\"\\nbye\""
        );
        assert_eq!(text(&payload, "tier"), "front");
        // A subscripted value is written as it is, its lines sorted (sortLines applies to every value).
        assert_eq!(text(&payload, "dir/note"), "bye\nsay \"hi\"");
        assert!(payload.values().all(|f| f.mode == 0o644));
    }

    #[test]
    fn unsupported_fields_fail_together() {
        let items = [
            field("a", "spec.nodeName"),
            field("b", "metadata.name['x']"),
            field("c", "metadata.name"),
        ];
        let error = collect_data(&items, &pod(), &BTreeMap::new(), 0o644).unwrap_err();
        assert_eq!(
            error.to_string(),
            "[unsupported fieldPath: spec.nodeName, fieldPath \"metadata.name['x']\" does not support subscript]"
        );
    }

    #[test]
    fn resources_with_divisors_and_node_allocatable_for_unset_limits() {
        let allocatable = BTreeMap::from([
            ("cpu".to_string(), Quantity("4".into())),
            ("memory".to_string(), Quantity("8Gi".into())),
        ]);
        let items = [
            resource("cpu_limit", "limits.cpu", None),
            resource("cpu_limit_m", "limits.cpu", Some("1m")),
            resource("cpu_request", "requests.cpu", None),
            resource("cpu_request_m", "requests.cpu", Some("1m")),
            resource("mem_limit", "limits.memory", None),
            resource("mem_limit_mi", "limits.memory", Some("1Mi")),
            resource("mem_request_k", "requests.memory", Some("1k")),
            resource("storage_request", "requests.ephemeral-storage", None),
        ];
        let payload = collect_data(&items, &pod(), &allocatable, 0o644).unwrap();
        assert_eq!(text(&payload, "cpu_limit"), "4");
        assert_eq!(text(&payload, "cpu_limit_m"), "4000");
        assert_eq!(text(&payload, "cpu_request"), "1"); // 250m rounds up to a whole cpu
        assert_eq!(text(&payload, "cpu_request_m"), "250");
        assert_eq!(text(&payload, "mem_limit"), "67108864");
        assert_eq!(text(&payload, "mem_limit_mi"), "64");
        assert_eq!(text(&payload, "mem_request_k"), "33555"); // 33554432 / 1000, rounded up
        assert_eq!(text(&payload, "storage_request"), "0");

        let wrong = [DownwardAPIVolumeFile {
            resource_field_ref: Some(ResourceFieldSelector {
                container_name: Some("nope".into()),
                resource: "limits.cpu".into(),
                divisor: None,
            }),
            ..resource("x", "limits.cpu", None)
        }];
        let error = collect_data(&wrong, &pod(), &allocatable, 0o644).unwrap_err();
        assert_eq!(error.to_string(), "container nope not found");
        let error =
            collect_data(&[resource("x", "limits.gpu", None)], &pod(), &allocatable, 0o644).unwrap_err();
        assert_eq!(error.to_string(), "unsupported container resource : limits.gpu");
    }
}
