//! The EndpointSlice and Endpoints controllers (kube-controller-manager's): for every Service with a selector, the
//! Pods it selects become endpoints, in EndpointSlices labelled with the Service's name and owned by it, and in
//! the Endpoints object of the same name. Pods without an IP yet, and finished ones, are left out.
//!
//! Endpoint conditions follow Kubernetes: `serving` is the Pod's readiness, `terminating` is its deletion, and
//! `ready` is serving and not terminating (`publishNotReadyAddresses` makes every endpoint ready and serving).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::work::{self, Change, covers, selects};
use crate::{ControllerError, kube_error};

pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";
/// Kubernetes' limit of endpoints per slice (the controller's `--max-endpoints-per-slice` default).
const MAX_ENDPOINTS_PER_SLICE: usize = 100;

type Key = (String, String);

/// What the queue hears about (boxed: pods are large).
enum Seen {
    Service(Box<Service>),
    Pod(Box<Pod>),
    Slice(Box<EndpointSlice>),
    Relisted,
}

/// A port set as one pod resolves a service's ports: (name, port, protocol) each.
type PortSet = Vec<(String, i32, String)>;

fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn finished(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// A service port's target in one pod: a number, or the container port of that name (none: the pod does not
/// serve it).
fn target_port(port: &k8s_openapi::api::core::v1::ServicePort, pod: &Pod) -> Option<i32> {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    match &port.target_port {
        None => Some(port.port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(name)) => pod.spec.as_ref()?.containers.iter().find_map(|c| {
            c.ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .map(|p| p.container_port)
        }),
    }
}

/// The slices a Service should have: (ports, endpoints) groups, in JSON, one per distinct port resolution, at most
/// 100 endpoints each; a Service selecting nothing has one empty slice, as Kubernetes keeps.
pub fn desired_slices(service: &Service, pods: &[&Pod]) -> Vec<(Value, Vec<Value>)> {
    let Some(spec) = service.spec.as_ref() else {
        return vec![];
    };
    let publish = spec.publish_not_ready_addresses.unwrap_or(false);
    let service_name = service.metadata.name.clone().unwrap_or_default();
    let mut groups: BTreeMap<PortSet, Vec<(String, Value)>> = BTreeMap::new();
    for pod in pods {
        let Some(ip) = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .filter(|ip| ip.parse::<std::net::Ipv4Addr>().is_ok())
        else {
            continue;
        };
        if finished(pod) {
            continue;
        }
        let ports: PortSet = spec
            .ports
            .iter()
            .flatten()
            .filter_map(|p| {
                Some((
                    p.name.clone().unwrap_or_default(),
                    target_port(p, pod)?,
                    p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                ))
            })
            .collect();
        let serving = publish || pod_ready(pod);
        let terminating = pod.metadata.deletion_timestamp.is_some();
        let mut endpoint = json!({
            "addresses": [ip],
            "conditions": {"ready": publish || (serving && !terminating), "serving": serving, "terminating": terminating},
            "targetRef": {"kind": "Pod", "namespace": pod.metadata.namespace, "name": pod.metadata.name, "uid": pod.metadata.uid},
        });
        let pod_spec = pod.spec.as_ref();
        if let Some(node) = pod_spec.and_then(|s| s.node_name.clone()) {
            endpoint["nodeName"] = json!(node);
        }
        if let (Some(hostname), Some(subdomain)) = (
            pod_spec.and_then(|s| s.hostname.clone()),
            pod_spec.and_then(|s| s.subdomain.clone()),
        ) && subdomain == service_name
        {
            endpoint["hostname"] = json!(hostname);
        }
        groups
            .entry(ports)
            .or_default()
            .push((pod.metadata.name.clone().unwrap_or_default(), endpoint));
    }
    let mut out = Vec::new();
    for (ports, mut endpoints) in groups {
        endpoints.sort_by(|a, b| a.0.cmp(&b.0));
        let ports: Vec<Value> = ports
            .into_iter()
            .map(|(name, port, protocol)| json!({"name": name, "port": port, "protocol": protocol}))
            .collect();
        let endpoints: Vec<Value> = endpoints.into_iter().map(|(_, e)| e).collect();
        for chunk in endpoints.chunks(MAX_ENDPOINTS_PER_SLICE) {
            out.push((Value::Array(ports.clone()), chunk.to_vec()));
        }
    }
    if out.is_empty() {
        out.push((json!([]), vec![]));
    }
    out
}

/// The Endpoints object's subsets for the same pods: ready addresses and not-ready ones, per port set.
pub fn desired_subsets(slices: &[(Value, Vec<Value>)]) -> Value {
    let mut subsets = Vec::new();
    for (ports, endpoints) in slices {
        if endpoints.is_empty() {
            continue;
        }
        let address = |e: &Value| {
            let mut a = json!({"ip": e["addresses"][0], "targetRef": e["targetRef"]});
            if let Some(node) = e.get("nodeName") {
                a["nodeName"] = node.clone();
            }
            if let Some(host) = e.get("hostname") {
                a["hostname"] = host.clone();
            }
            a
        };
        let ready: Vec<Value> = endpoints
            .iter()
            .filter(|e| e["conditions"]["ready"] == true)
            .map(address)
            .collect();
        let not_ready: Vec<Value> = endpoints
            .iter()
            .filter(|e| e["conditions"]["ready"] != true)
            .map(address)
            .collect();
        let mut subset = json!({"ports": ports});
        if !ready.is_empty() {
            subset["addresses"] = json!(ready);
        }
        if !not_ready.is_empty() {
            subset["notReadyAddresses"] = json!(not_ready);
        }
        subsets.push(subset);
    }
    Value::Array(subsets)
}

struct Context {
    client: kube::Client,
    /// kube-controller-manager's endpoint controller's client: the Endpoints are its job, not the
    /// endpointslice controller's (whose role has no access to them).
    endpoints_client: kube::Client,
    services: Store<Service>,
    pods: Store<Pod>,
}

impl Context {
    async fn reconcile(&self, (namespace, name): Key) -> Result<(), ControllerError> {
        let service = self.services.get(&ObjectRef::new(&name).within(&namespace));
        let slices: Api<EndpointSlice> = Api::namespaced(self.client.clone(), &namespace);
        let selector = format!("{SERVICE_NAME_LABEL}={name},{MANAGED_BY_LABEL}={MANAGED_BY}");
        let mut existing = slices
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(kube_error(format!(
                "listing the endpoint slices of {namespace}/{name}"
            )))?
            .items;
        existing.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        let selector_of = |s: &Service| {
            s.spec
                .as_ref()
                .and_then(|s| s.selector.clone())
                .filter(|s| !s.is_empty())
        };
        let managed = service.as_ref().filter(|s| {
            s.metadata.deletion_timestamp.is_none()
                && selector_of(s).is_some()
                && s.spec.as_ref().and_then(|s| s.type_.as_deref()) != Some("ExternalName")
        });
        let Some(service) = managed else {
            // Gone, or no selector (its endpoints are someone else's): the slices this controller made go.
            for slice in existing {
                if let Some(slice_name) = slice.metadata.name {
                    delete_ignoring_absent(&slices, &slice_name).await?;
                }
            }
            return Ok(());
        };
        let selector = selector_of(service).unwrap_or_default();
        let pods: Vec<std::sync::Arc<Pod>> = self
            .pods
            .state()
            .into_iter()
            .filter(|p| {
                p.metadata.namespace.as_deref() == Some(namespace.as_str())
                    && selects(&selector, p.metadata.labels.as_ref())
            })
            .collect();
        let pods: Vec<&Pod> = pods.iter().map(|p| p.as_ref()).collect();
        let desired = desired_slices(service, &pods);
        let mut labels: BTreeMap<String, String> = service.metadata.labels.clone().unwrap_or_default();
        labels.insert(SERVICE_NAME_LABEL.into(), name.clone());
        labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
        let owner = json!([{"apiVersion": "v1", "kind": "Service", "name": name, "uid": service.metadata.uid,
            "controller": true, "blockOwnerDeletion": true}]);
        for (i, (ports, endpoints)) in desired.iter().enumerate() {
            let content = json!({"addressType": "IPv4", "ports": ports, "endpoints": endpoints,
                "metadata": {"labels": labels, "ownerReferences": owner}});
            match existing.get(i) {
                Some(current) => {
                    let current_json = serde_json::to_value(current).unwrap_or_default();
                    // Endpoint lists and ports are compared whole: an endpoint that went must go.
                    let same = covers(&current_json, &content)
                        && current_json
                            .get("endpoints")
                            .map_or(0, |e| e.as_array().map_or(0, Vec::len))
                            == endpoints.len();
                    if same {
                        continue;
                    }
                    let mut updated = current_json;
                    updated["addressType"] = json!("IPv4");
                    updated["ports"] = ports.clone();
                    updated["endpoints"] = Value::Array(endpoints.clone());
                    updated["metadata"]["labels"] = json!(labels);
                    updated["metadata"]["ownerReferences"] = owner.clone();
                    let slice: EndpointSlice = serde_json::from_value(updated).map_err(|e| {
                        ControllerError::Invalid(format!("endpoint slice for {namespace}/{name}: {e}"))
                    })?;
                    let slice_name = slice.metadata.name.clone().unwrap_or_default();
                    slices
                        .replace(&slice_name, &PostParams::default(), &slice)
                        .await
                        .map_err(kube_error(format!(
                            "updating endpoint slice {namespace}/{slice_name}"
                        )))?;
                }
                None => {
                    let mut new = content.clone();
                    new["apiVersion"] = json!("discovery.k8s.io/v1");
                    new["kind"] = json!("EndpointSlice");
                    new["metadata"]["generateName"] = json!(format!("{name}-"));
                    new["metadata"]["namespace"] = json!(namespace);
                    let slice: EndpointSlice = serde_json::from_value(new).map_err(|e| {
                        ControllerError::Invalid(format!("endpoint slice for {namespace}/{name}: {e}"))
                    })?;
                    slices
                        .create(&PostParams::default(), &slice)
                        .await
                        .map_err(kube_error(format!(
                            "creating an endpoint slice for {namespace}/{name}"
                        )))?;
                }
            }
        }
        for extra in existing.iter().skip(desired.len()) {
            if let Some(slice_name) = &extra.metadata.name {
                delete_ignoring_absent(&slices, slice_name).await?;
            }
        }
        self.write_endpoints(&namespace, &name, service, &desired).await
    }

    async fn write_endpoints(
        &self,
        namespace: &str,
        name: &str,
        service: &Service,
        desired: &[(Value, Vec<Value>)],
    ) -> Result<(), ControllerError> {
        let api: Api<Endpoints> = Api::namespaced(self.endpoints_client.clone(), namespace);
        let mut labels: BTreeMap<String, String> = service.metadata.labels.clone().unwrap_or_default();
        labels.insert("endpointslice.kubernetes.io/skip-mirror".into(), "true".into());
        let subsets = desired_subsets(desired);
        let current = api
            .get_opt(name)
            .await
            .map_err(kube_error(format!("reading endpoints {namespace}/{name}")))?;
        let mut object = match &current {
            Some(c) => serde_json::to_value(c).unwrap_or_default(),
            None => {
                json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": name, "namespace": namespace}})
            }
        };
        let current_subsets = object.get("subsets").cloned().unwrap_or(json!([]));
        let current_labels = object.pointer("/metadata/labels").cloned().unwrap_or(json!({}));
        if current.is_some() && current_subsets == subsets && current_labels == json!(labels) {
            return Ok(());
        }
        object["subsets"] = subsets;
        object["metadata"]["labels"] = json!(labels);
        let endpoints: Endpoints = serde_json::from_value(object)
            .map_err(|e| ControllerError::Invalid(format!("endpoints {namespace}/{name}: {e}")))?;
        match current {
            Some(_) => api
                .replace(name, &PostParams::default(), &endpoints)
                .await
                .map(|_| ()),
            None => api.create(&PostParams::default(), &endpoints).await.map(|_| ()),
        }
        .map_err(kube_error(format!("writing endpoints {namespace}/{name}")))
    }
}

async fn delete_ignoring_absent(slices: &Api<EndpointSlice>, name: &str) -> Result<(), ControllerError> {
    match slices.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(kube_error(format!("deleting endpoint slice {name}"))(e)),
    }
}

/// Runs the controller until its watches end.
pub async fn run(client: kube::Client, endpoints_client: kube::Client) {
    let (tx, rx) = mpsc::unbounded_channel::<Seen>();
    let (services_tx, mut services_rx) = mpsc::unbounded_channel();
    let (pods_tx, mut pods_rx) = mpsc::unbounded_channel();
    let (slices_tx, mut slices_rx) = mpsc::unbounded_channel();
    let services = work::reflect(Api::<Service>::all(client.clone()), services_tx);
    let pods = work::reflect(Api::<Pod>::all(client.clone()), pods_tx);
    let _slices = work::reflect(Api::<EndpointSlice>::all(client.clone()), slices_tx);
    // One stream of changes for the queue.
    tokio::spawn(async move {
        loop {
            let seen = tokio::select! {
                Some(c) = services_rx.recv() => match c { Change::Object(s) => Seen::Service(Box::new(s)), Change::Relisted => Seen::Relisted },
                Some(c) = pods_rx.recv() => match c { Change::Object(p) => Seen::Pod(Box::new(p)), Change::Relisted => Seen::Relisted },
                Some(c) = slices_rx.recv() => match c { Change::Object(s) => Seen::Slice(Box::new(s)), Change::Relisted => Seen::Relisted },
                else => return,
            };
            if tx.send(seen).is_err() {
                return;
            }
        }
    });
    let context = Context {
        client,
        endpoints_client,
        services: services.clone(),
        pods: pods.clone(),
    };
    let all_services = {
        let services = services.clone();
        move || -> Vec<Key> {
            services
                .state()
                .iter()
                .filter_map(|s| Some((s.metadata.namespace.clone()?, s.metadata.name.clone()?)))
                .collect()
        }
    };
    let keys_of = {
        let all = all_services.clone();
        let services = services.clone();
        move |seen: Seen| -> Vec<Key> {
            match seen {
                Seen::Service(s) => s
                    .metadata
                    .namespace
                    .clone()
                    .zip(s.metadata.name.clone())
                    .into_iter()
                    .collect(),
                // A pod may have left a service's selector: every service of its namespace is looked at again.
                Seen::Pod(p) => services
                    .state()
                    .iter()
                    .filter(|s| s.metadata.namespace == p.metadata.namespace)
                    .filter_map(|s| Some((s.metadata.namespace.clone()?, s.metadata.name.clone()?)))
                    .collect(),
                Seen::Slice(s) => {
                    let service = s
                        .metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get(SERVICE_NAME_LABEL))
                        .cloned();
                    let managed = s
                        .metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get(MANAGED_BY_LABEL))
                        .map(String::as_str)
                        == Some(MANAGED_BY);
                    match (managed, s.metadata.namespace.clone(), service) {
                        (true, Some(ns), Some(service)) => vec![(ns, service)],
                        _ => vec![],
                    }
                }
                Seen::Relisted => all(),
            }
        }
    };
    let ready = move || work::ready(&services) && work::ready(&pods);
    work::run_queue("endpointslice", rx, keys_of, all_services, ready, |key| {
        context.reconcile(key)
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(v: Value) -> Service {
        serde_json::from_value(v).unwrap()
    }

    fn pod(name: &str, ip: Option<&str>, ready: bool, extra: Value) -> Pod {
        let mut p = json!({
            "metadata": {"name": name, "namespace": "d", "uid": format!("uid-{name}"), "labels": {"app": "web"}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "ports": [{"name": "http", "containerPort": 8080}]}]},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]},
        });
        if let Some(ip) = ip {
            p["status"]["podIP"] = json!(ip);
        }
        if let Value::Object(extra) = extra {
            for (k, v) in extra {
                p["metadata"][k] = v;
            }
        }
        serde_json::from_value(p).unwrap()
    }

    fn web() -> Service {
        service(json!({"metadata": {"name": "web", "namespace": "d"},
            "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]}}))
    }

    #[test]
    fn endpoints_carry_kubernetes_conditions() {
        let pods = [
            pod("a", Some("10.42.0.5"), true, json!({})),
            pod("b", Some("10.42.0.6"), false, json!({})),
            pod(
                "c",
                Some("10.42.0.7"),
                true,
                json!({"deletionTimestamp": "2026-01-01T00:00:00Z"}),
            ),
            pod("d", None, true, json!({})),
        ];
        let refs: Vec<&Pod> = pods.iter().collect();
        let slices = desired_slices(&web(), &refs);
        assert_eq!(slices.len(), 1);
        let (ports, endpoints) = &slices[0];
        assert_eq!(
            ports,
            &json!([{"name": "http", "port": 8080, "protocol": "TCP"}]),
            "named target port resolved"
        );
        assert_eq!(endpoints.len(), 3, "the pod without an IP is left out");
        let conditions: Vec<&Value> = endpoints.iter().map(|e| &e["conditions"]).collect();
        assert_eq!(
            conditions[0],
            &json!({"ready": true, "serving": true, "terminating": false})
        );
        assert_eq!(
            conditions[1],
            &json!({"ready": false, "serving": false, "terminating": false})
        );
        assert_eq!(
            conditions[2],
            &json!({"ready": false, "serving": true, "terminating": true})
        );
        assert_eq!(endpoints[0]["targetRef"]["name"], "a");
        assert_eq!(endpoints[0]["nodeName"], "n1");
        let subsets = desired_subsets(&slices);
        assert_eq!(subsets[0]["addresses"].as_array().unwrap().len(), 1);
        assert_eq!(subsets[0]["notReadyAddresses"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn nothing_selected_is_one_empty_slice_and_big_sets_are_split() {
        assert_eq!(desired_slices(&web(), &[]), vec![(json!([]), vec![])]);
        let pods: Vec<Pod> = (0..250)
            .map(|i| {
                pod(
                    &format!("p{i:03}"),
                    Some(&format!("10.42.{}.{}", i / 200, i % 200 + 1)),
                    true,
                    json!({}),
                )
            })
            .collect();
        let refs: Vec<&Pod> = pods.iter().collect();
        let slices = desired_slices(&web(), &refs);
        assert_eq!(
            slices.iter().map(|s| s.1.len()).collect::<Vec<_>>(),
            [100, 100, 50]
        );
    }
}
