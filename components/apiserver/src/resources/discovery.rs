//! Discovery, from the registry: legacy (`/api`, `/api/v1`, `/apis`, `/apis/<g>`, `/apis/<g>/<v>`)
//! and aggregated (`apidiscovery.k8s.io` v2 and v2beta1, chosen from the Accept header and
//! answered with the exact Content-Type client-go checks).

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};

use super::registry::{self, ResourceType};

#[derive(Debug)]
pub enum Path {
    Core,
    Groups,
    Group(String),
    GroupVersion(String, String),
}

/// A resource the API server serves itself rather than from the store, read-only: `metrics.k8s.io`'s
/// (`crate::metrics_api`, the job of metrics-server). Not in the registry, so the generic layer never stores it.
struct Unstored {
    plural: &'static str,
    singular: &'static str,
    kind: &'static str,
    namespaced: bool,
}

const METRICS: (&str, &str) = (crate::metrics_api::GROUP, crate::metrics_api::VERSION);
const UNSTORED: &[Unstored] = &[
    Unstored {
        plural: "nodes",
        singular: "",
        kind: "NodeMetrics",
        namespaced: false,
    },
    Unstored {
        plural: "pods",
        singular: "",
        kind: "PodMetrics",
        namespaced: true,
    },
];

/// Every served group and version: the registry's, then the unstored one.
fn groups() -> Vec<(&'static str, &'static str)> {
    let mut groups = registry::groups();
    groups.push(METRICS);
    groups
}

fn unstored_resource_list() -> Value {
    let resources: Vec<Value> = UNSTORED
        .iter()
        .map(|r| json!({"name": r.plural, "singularName": r.singular, "namespaced": r.namespaced, "kind": r.kind, "verbs": ["get", "list"]}))
        .collect();
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": format!("{}/{}", METRICS.0, METRICS.1), "resources": resources})
}

fn unstored_aggregated_group() -> Value {
    let resources: Vec<Value> = UNSTORED
        .iter()
        .map(|r| {
            json!({
                "resource": r.plural,
                "responseKind": {"group": METRICS.0, "version": METRICS.1, "kind": r.kind},
                "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
                "singularResource": r.singular,
                "verbs": ["get", "list"],
            })
        })
        .collect();
    json!({"metadata": {"name": METRICS.0, "creationTimestamp": null},
        "versions": [{"version": METRICS.1, "freshness": "Current", "resources": resources}]})
}

fn resource_entry(r: &ResourceType) -> Vec<Value> {
    let mut out = vec![json!({
        "name": r.plural, "singularName": r.singular, "namespaced": r.namespaced, "kind": r.kind,
        "verbs": registry::verbs(), "shortNames": r.short_names, "categories": r.categories,
    })];
    for sub in r.subresources {
        out.push(json!({"name": format!("{}/{sub}", r.plural), "singularName": "", "namespaced": r.namespaced, "kind": r.kind, "verbs": ["get", "patch", "update"]}));
    }
    out
}

fn resource_list(group: &str, version: &str) -> Option<Value> {
    if (group, version) == METRICS {
        return Some(unstored_resource_list());
    }
    let resources: Vec<Value> = registry::RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .flat_map(resource_entry)
        .collect();
    if resources.is_empty() {
        return None;
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}))
}

/// A group of custom resources, with all its served versions (the first is preferred).
fn custom_group_entry(group: &str, versions: &[String]) -> Value {
    let gvs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    json!({"name": group, "versions": gvs, "preferredVersion": gvs.first()})
}

fn custom_resource_list(group: &str, version: &str) -> Option<Value> {
    let served = super::custom::resources(group, version);
    if served.is_empty() {
        return None;
    }
    let resources: Vec<Value> = served.iter().flat_map(|s| resource_entry(s.resource)).collect();
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": format!("{group}/{version}"), "resources": resources}),
    )
}

fn aggregated_resource(r: &ResourceType) -> Value {
    let subresources: Vec<Value> = r
        .subresources
        .iter()
        .map(|s| json!({"subresource": s, "responseKind": {"group": r.group, "version": r.version, "kind": r.kind}, "verbs": ["get", "patch", "update"]}))
        .collect();
    json!({
        "resource": r.plural,
        "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
        "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": r.singular,
        "verbs": registry::verbs(),
        "shortNames": r.short_names,
        "categories": r.categories,
        "subresources": subresources,
    })
}

fn custom_aggregated_group(group: &str, versions: &[String]) -> Value {
    let versions: Vec<Value> = versions
        .iter()
        .map(|v| {
            let resources: Vec<Value> = super::custom::resources(group, v)
                .iter()
                .map(|s| aggregated_resource(s.resource))
                .collect();
            json!({"version": v, "freshness": "Current", "resources": resources})
        })
        .collect();
    json!({"metadata": {"name": group, "creationTimestamp": null}, "versions": versions})
}

fn group_entry(group: &str, version: &str) -> Value {
    let gv = json!({"groupVersion": format!("{group}/{version}"), "version": version});
    json!({"name": group, "versions": [gv], "preferredVersion": gv})
}

fn aggregated_group(group: &str, version: &str) -> Value {
    if (group, version) == METRICS {
        return unstored_aggregated_group();
    }
    let resources: Vec<Value> = registry::RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .map(aggregated_resource)
        .collect();
    let mut metadata = json!({"creationTimestamp": null});
    if !group.is_empty() {
        metadata["name"] = json!(group);
    }
    json!({"metadata": metadata, "versions": [{"version": version, "freshness": "Current", "resources": resources}]})
}

/// Which aggregated discovery version the client accepts, in its order of preference.
fn aggregated_version(headers: &HeaderMap) -> Option<&'static str> {
    let accept = headers.get(header::ACCEPT)?.to_str().ok()?;
    for part in accept.split(',') {
        let params: Vec<&str> = part.split(';').map(str::trim).collect();
        if params.first() != Some(&"application/json")
            || !params.contains(&"g=apidiscovery.k8s.io")
            || !params.contains(&"as=APIGroupDiscoveryList")
        {
            if params.first() == Some(&"application/json") && params.len() == 1 {
                return None; // plain JSON ranks before any aggregated form that follows
            }
            continue;
        }
        if params.contains(&"v=v2") {
            return Some("v2");
        }
        if params.contains(&"v=v2beta1") {
            return Some("v2beta1");
        }
    }
    None
}

fn respond(body: &Value, content_type: &str) -> Response {
    let mut response = crate::status::json(StatusCode::OK, body);
    if let Ok(v) = HeaderValue::from_str(content_type) {
        response.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    response
}

fn aggregated(items: Vec<Value>, version: &str) -> Response {
    let body = json!({"kind": "APIGroupDiscoveryList", "apiVersion": format!("apidiscovery.k8s.io/{version}"), "metadata": {}, "items": items});
    respond(
        &body,
        &format!("application/json;g=apidiscovery.k8s.io;v={version};as=APIGroupDiscoveryList"),
    )
}

pub fn serve(path: Path, headers: &HeaderMap) -> Response {
    let agg = aggregated_version(headers);
    match path {
        Path::Core => match agg {
            Some(v) => aggregated(vec![aggregated_group("", "v1")], v),
            None => respond(
                &json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}),
                "application/json",
            ),
        },
        Path::Groups => {
            let groups = groups();
            let custom = super::custom::groups();
            match agg {
                Some(v) => aggregated(
                    groups
                        .iter()
                        .map(|(g, ver)| aggregated_group(g, ver))
                        .chain(custom.iter().map(|(g, vs)| custom_aggregated_group(g, vs)))
                        .collect(),
                    v,
                ),
                None => {
                    let list: Vec<Value> = groups
                        .iter()
                        .map(|(g, v)| group_entry(g, v))
                        .chain(custom.iter().map(|(g, vs)| custom_group_entry(g, vs)))
                        .collect();
                    respond(
                        &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": list}),
                        "application/json",
                    )
                }
            }
        }
        Path::Group(group) => match groups().into_iter().find(|(g, _)| *g == group) {
            Some((g, v)) => {
                let mut body = group_entry(g, v);
                body["kind"] = json!("APIGroup");
                body["apiVersion"] = json!("v1");
                respond(&body, "application/json")
            }
            None => match super::custom::groups().into_iter().find(|(g, _)| *g == group) {
                Some((g, versions)) => {
                    let mut body = custom_group_entry(&g, &versions);
                    body["kind"] = json!("APIGroup");
                    body["apiVersion"] = json!("v1");
                    respond(&body, "application/json")
                }
                None => crate::status::not_found(),
            },
        },
        Path::GroupVersion(group, version) => {
            match resource_list(&group, &version).or_else(|| custom_resource_list(&group, &version)) {
                Some(list) => respond(&list, "application/json"),
                None => crate::status::not_found(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn aggregated_discovery_is_negotiated_as_client_go_asks() {
        let kubectl_133 = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        assert_eq!(aggregated_version(&accept(kubectl_133)), Some("v2"));
        let kubectl_129 =
            "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        assert_eq!(aggregated_version(&accept(kubectl_129)), Some("v2beta1"));
        assert_eq!(aggregated_version(&accept("application/json, */*")), None);
        assert_eq!(aggregated_version(&HeaderMap::new()), None);
    }

    #[test]
    fn every_group_version_lists_its_resources() {
        for (g, v) in groups() {
            assert!(resource_list(g, v).is_some(), "{g}/{v}");
        }
        let metrics = resource_list("metrics.k8s.io", "v1beta1").unwrap();
        assert_eq!(metrics["resources"][1]["kind"], "PodMetrics");
        assert_eq!(
            aggregated_group("metrics.k8s.io", "v1beta1")["versions"][0]["resources"][0]["resource"],
            "nodes"
        );
        let core = resource_list("", "v1").unwrap();
        let names: Vec<&str> = core["resources"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|r| r["name"].as_str())
            .collect();
        assert!(names.contains(&"pods") && names.contains(&"pods/status") && names.contains(&"configmaps"));
    }
}
