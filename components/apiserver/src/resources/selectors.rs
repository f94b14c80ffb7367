//! Label selectors (`=`, `==`, `!=`, `in`, `notin`, exists, `!`exists) and field selectors
//! (`=`, `==`, `!=` on a field path such as `metadata.name`, `spec.nodeName`, `status.phase`).

use serde_json::Value;

use super::registry::ResourceType;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector(Vec<Requirement>);

/// Splits at commas that are not inside parentheses.
fn split_top_level(s: &str) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut depth = 0i32;
    for c in s.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            _ => {}
        }
        if c == ',' && depth == 0 {
            parts.push(String::new());
        } else if let Some(last) = parts.last_mut() {
            last.push(c);
        }
    }
    parts
        .into_iter()
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

fn parse_set(rest: &str) -> Option<Vec<String>> {
    let inner = rest.trim().strip_prefix('(')?.strip_suffix(')')?;
    Some(
        inner
            .split(',')
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .collect(),
    )
}

impl LabelSelector {
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut reqs = vec![];
        for part in split_top_level(s) {
            let req = if let Some(key) = part.strip_prefix('!') {
                Requirement::NotExists(key.trim().to_string())
            } else if let Some((k, v)) = part.split_once("!=") {
                Requirement::NotEquals(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = part.split_once("==") {
                Requirement::Equals(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = part.split_once('=') {
                Requirement::Equals(k.trim().into(), v.trim().into())
            } else if let Some((k, rest)) = part.split_once(" notin ") {
                Requirement::NotIn(
                    k.trim().into(),
                    parse_set(rest).ok_or_else(|| format!("unable to parse requirement: {part:?}"))?,
                )
            } else if let Some((k, rest)) = part.split_once(" in ") {
                Requirement::In(
                    k.trim().into(),
                    parse_set(rest).ok_or_else(|| format!("unable to parse requirement: {part:?}"))?,
                )
            } else if part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
            {
                Requirement::Exists(part.clone())
            } else {
                return Err(format!("unable to parse requirement: {part:?}"));
            };
            reqs.push(req);
        }
        Ok(LabelSelector(reqs))
    }

    pub fn matches(&self, object: &Value) -> bool {
        let labels = object.pointer("/metadata/labels").and_then(Value::as_object);
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            Requirement::Equals(k, v) => get(k) == Some(v.as_str()),
            Requirement::NotEquals(k, v) => get(k) != Some(v.as_str()),
            Requirement::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Requirement::NotIn(k, vs) => get(k).is_none_or(|x| !vs.iter().any(|v| v == x)),
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::NotExists(k) => get(k).is_none(),
        })
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSelector(Vec<(String, bool, String)>);

/// The field labels a kind may be selected on, as kube-apiserver's field label conversion functions allow them
/// (`pkg/apis/*/v1/conversion.go`); every other kind allows `metadata.name` and `metadata.namespace`.
fn field_labels(resource: &ResourceType) -> &'static [&'static str] {
    match (resource.group, resource.kind) {
        ("", "Pod") => &[
            "metadata.name",
            "metadata.namespace",
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.podIPs",
            "status.nominatedNodeName",
        ],
        ("", "Node") => &["metadata.name", "spec.unschedulable"],
        ("", "Namespace") => &["metadata.name", "status.phase"],
        ("", "Secret") => &["metadata.name", "metadata.namespace", "type"],
        ("", "Service") => &[
            "metadata.name",
            "metadata.namespace",
            "spec.clusterIP",
            "spec.type",
        ],
        ("", "Event") => &[
            "metadata.name",
            "metadata.namespace",
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        ("apps", "ReplicaSet") => &["metadata.name", "metadata.namespace", "status.replicas"],
        ("batch", "Job") => &["metadata.name", "metadata.namespace", "status.successful"],
        _ => &["metadata.name", "metadata.namespace"],
    }
}

/// Where a field label's value lives in the object, where that is not the label read as a path.
fn field_path(resource: &ResourceType, label: &str) -> String {
    let path = match (resource.group, resource.kind, label) {
        ("", "Event", "source") => "source.component",
        ("", "Pod", "spec.host") => "spec.nodeName", // what v1.0 clients sent
        _ => label,
    };
    path.to_string()
}

impl FieldSelector {
    /// Parses a field selector for `resource`, rejecting fields the kind cannot be selected on as
    /// kube-apiserver does (`field label not supported: …`).
    pub fn parse_for(resource: &ResourceType, s: &str) -> Result<Self, String> {
        let mut selector = FieldSelector::parse(s)?;
        for (field, _, _) in &mut selector.0 {
            let aliased = resource.kind == "Pod" && resource.group.is_empty() && field == "spec.host";
            if !aliased
                && !field_labels(resource).contains(&field.as_str())
                && !crate::resources::custom::selectable(resource, field)
            {
                return Err(format!(
                    "Unable to find \"{}\" that match label selector \"\", field selector \"{s}\": field label not supported: {field}",
                    resource.qualified_plural()
                ));
            }
            *field = field_path(resource, field);
        }
        Ok(selector)
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        let mut reqs = vec![];
        for part in split_top_level(s) {
            let (field, equal, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, true, v)
            } else {
                return Err(format!("invalid selector: '{part}'; can't understand '{part}'"));
            };
            reqs.push((field.trim().to_string(), equal, value.trim().to_string()));
        }
        Ok(FieldSelector(reqs))
    }

    /// The top-level members (other than `metadata`) this selector reads.
    pub fn members(&self) -> Vec<String> {
        let mut members: Vec<String> = self
            .0
            .iter()
            .filter_map(|(field, _, _)| field.split('.').next())
            .filter(|m| *m != "metadata")
            .map(String::from)
            .collect();
        members.sort();
        members.dedup();
        members
    }

    pub fn matches(&self, object: &Value) -> bool {
        self.0.iter().all(|(field, equal, value)| {
            let pointer = format!("/{}", field.replace('.', "/"));
            let actual = match object.pointer(&pointer) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Bool(b)) => b.to_string(),
                Some(Value::Number(n)) => n.to_string(),
                _ => String::new(),
            };
            (actual == *value) == *equal
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_selectors_as_kubectl_writes_them() {
        let o = json!({"metadata": {"labels": {"app": "web", "tier": "front"}}});
        for (s, want) in [
            ("app=web", true),
            ("app==web", true),
            ("app!=web", false),
            ("app in (web, api)", true),
            ("app notin (web)", false),
            ("tier", true),
            ("!tier", false),
            ("!missing", true),
            ("app=web,tier in (front,back)", true),
            ("app=web,tier=back", false),
            ("", true),
        ] {
            assert_eq!(LabelSelector::parse(s).unwrap().matches(&o), want, "{s}");
        }
        assert!(LabelSelector::parse("app in web").is_err());
        assert!(LabelSelector::parse("a b c").is_err());
    }

    #[test]
    fn field_selectors_on_paths() {
        let o = json!({"metadata": {"name": "p", "namespace": "default"}, "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}});
        assert!(FieldSelector::parse("metadata.name=p").unwrap().matches(&o));
        assert!(
            FieldSelector::parse("spec.nodeName=n1,status.phase!=Pending")
                .unwrap()
                .matches(&o)
        );
        assert!(!FieldSelector::parse("spec.nodeName=").unwrap().matches(&o));
        assert!(FieldSelector::parse("nonsense").is_err());
    }

    #[test]
    fn field_selectors_are_limited_to_each_kinds_labels() {
        let find = |group, plural| crate::resources::registry::find(group, "v1", plural).unwrap();
        let pods = find("", "pods");
        let o = json!({"metadata": {"name": "p"}, "spec": {"nodeName": "n1", "hostNetwork": true}});
        assert!(
            FieldSelector::parse_for(pods, "spec.nodeName=n1,spec.hostNetwork=true")
                .unwrap()
                .matches(&o)
        );
        assert!(
            FieldSelector::parse_for(pods, "spec.host=n1")
                .unwrap()
                .matches(&o),
            "the v1.0 alias"
        );
        let err = FieldSelector::parse_for(pods, "status.hostIP=10.0.0.1").unwrap_err();
        assert!(err.ends_with("field label not supported: status.hostIP"), "{err}");
        let configmaps = find("", "configmaps");
        assert!(FieldSelector::parse_for(configmaps, "metadata.name=x,metadata.namespace=y").is_ok());
        assert!(FieldSelector::parse_for(configmaps, "data.k=v").is_err());
        assert!(FieldSelector::parse_for(find("", "secrets"), "type=Opaque").is_ok());
        assert!(FieldSelector::parse_for(find("", "nodes"), "spec.unschedulable=false").is_ok());
        assert!(FieldSelector::parse_for(find("", "nodes"), "metadata.namespace=x").is_err());
        assert!(FieldSelector::parse_for(find("apps", "replicasets"), "status.replicas=0").is_ok());
        assert!(FieldSelector::parse_for(find("batch", "jobs"), "status.successful=1").is_ok());
        let events = find("", "events");
        let e = json!({"source": {"component": "kubelet"}, "involvedObject": {"kind": "Pod"}});
        assert!(
            FieldSelector::parse_for(events, "source=kubelet,involvedObject.kind=Pod")
                .unwrap()
                .matches(&e)
        );
    }
}
