//! A container's environment, as the kubelet makes it (`kubelet_pods.go` `makeEnvironmentVariables`,
//! `pkg/kubelet/envvars`, and the `$(VAR)` expansion of `third_party/forked/golang/expansion`): `envFrom` first,
//! then `env` in order (a later one replacing an earlier one), each value's `$(VAR)` references expanded against
//! what is defined so far and the service variables, `valueFrom` resolved, then the service variables of the
//! pod's namespace (and `default/kubernetes` for every pod) that the container did not define itself.
//!
//! The caller fetches what the pod refers to (`references`) and hands it in: resolution itself makes no calls.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret, Service};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// Why a container's environment cannot be made; the kubelet reports it as `CreateContainerConfigError`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    #[error("configmap \"{0}\" not found")]
    ConfigMapNotFound(String),
    #[error("secret \"{0}\" not found")]
    SecretNotFound(String),
    #[error("couldn't find key {key} in ConfigMap {namespace}/{name}")]
    ConfigMapKeyNotFound {
        namespace: String,
        name: String,
        key: String,
    },
    #[error("couldn't find key {key} in Secret {namespace}/{name}")]
    SecretKeyNotFound {
        namespace: String,
        name: String,
        key: String,
    },
    #[error("unsupported fieldPath: {0}")]
    UnsupportedFieldPath(String),
    /// A resourceFieldRef that cannot be read (an unknown resource or container, a bad divisor).
    #[error("{0}")]
    ResourceField(String),
}

/// The objects a container's environment refers to: ConfigMap and Secret names in the pod's namespace.
pub fn references(container: &Container) -> (Vec<String>, Vec<String>) {
    let mut config_maps = Vec::new();
    let mut secrets = Vec::new();
    for from in container.env_from.iter().flatten() {
        config_maps.extend(from.config_map_ref.as_ref().map(|r| r.name.clone()));
        secrets.extend(from.secret_ref.as_ref().map(|r| r.name.clone()));
    }
    for var in container.env.iter().flatten() {
        let Some(from) = &var.value_from else { continue };
        config_maps.extend(from.config_map_key_ref.as_ref().map(|r| r.name.clone()));
        secrets.extend(from.secret_key_ref.as_ref().map(|r| r.name.clone()));
    }
    config_maps.sort();
    config_maps.dedup();
    secrets.sort();
    secrets.dedup();
    (config_maps, secrets)
}

/// What resolution reads, fetched by the caller.
#[derive(Clone, Debug, Default)]
pub struct EnvInputs {
    /// By name, in the pod's namespace; absent ones are missing.
    pub config_maps: BTreeMap<String, ConfigMap>,
    pub secrets: BTreeMap<String, Secret>,
    /// The Services of the pod's namespace, and `default/kubernetes`.
    pub services: Vec<Service>,
    pub host_ips: Vec<String>,
    pub pod_ips: Vec<String>,
    /// The node's allocatable resources: what a limit that is not set reads as.
    pub node_allocatable: BTreeMap<String, Quantity>,
}

/// `$(VAR)` expansion as Kubernetes does it: a defined name is replaced, an undefined one kept as written,
/// `$$` is a literal `$`, and a `$(` without its `)` is kept.
pub fn expand(input: &str, lookup: &dyn Fn(&str) -> Option<String>) -> String {
    let bytes = input.as_bytes();
    let mut out = String::new();
    let mut checkpoint = 0;
    let mut cursor = 0;
    while cursor < bytes.len() {
        if bytes[cursor] == b'$' && cursor + 1 < bytes.len() {
            out.push_str(&input[checkpoint..cursor]);
            let rest = &input[cursor + 1..];
            let advance = match rest.as_bytes()[0] {
                b'$' => {
                    out.push('$');
                    1
                }
                b'(' => match rest.find(')') {
                    Some(close) => {
                        let name = &rest[1..close];
                        match lookup(name) {
                            Some(value) => out.push_str(&value),
                            None => out.push_str(&format!("$({name})")),
                        }
                        close + 1
                    }
                    None => {
                        out.push_str("$(");
                        1
                    }
                },
                _ => {
                    // Not an expression: the `$` and the character after it, as written.
                    let c = rest.chars().next().unwrap_or_default();
                    out.push('$');
                    out.push(c);
                    c.len_utf8()
                }
            };
            cursor += advance;
            checkpoint = cursor + 1;
        }
        cursor += 1;
    }
    if checkpoint < input.len() {
        out.push_str(&input[checkpoint..]);
    }
    out
}

/// A Service name as an environment variable prefix: upper case, `-` as `_`.
fn env_name(service: &str) -> String {
    service.to_uppercase().replace('-', "_")
}

/// The Docker-link-style variables of one Service (`envvars.FromServices`).
fn service_variables(service: &Service, out: &mut BTreeMap<String, String>) {
    let Some(spec) = &service.spec else { return };
    let Some(ip) = spec
        .cluster_ip
        .as_deref()
        .filter(|ip| !ip.is_empty() && *ip != "None")
    else {
        return;
    };
    let ports = spec.ports.clone().unwrap_or_default();
    let Some(first) = ports.first() else { return };
    let prefix = env_name(service.metadata.name.as_deref().unwrap_or_default());
    out.insert(format!("{prefix}_SERVICE_HOST"), ip.to_string());
    out.insert(format!("{prefix}_SERVICE_PORT"), first.port.to_string());
    for port in &ports {
        if let Some(name) = port.name.as_deref().filter(|n| !n.is_empty()) {
            out.insert(
                format!("{prefix}_SERVICE_PORT_{}", env_name(name)),
                port.port.to_string(),
            );
        }
    }
    let host_port = if ip.contains(':') {
        |ip: &str, port: i32| format!("[{ip}]:{port}")
    } else {
        |ip: &str, port: i32| format!("{ip}:{port}")
    };
    for (i, port) in ports.iter().enumerate() {
        let protocol = port.protocol.clone().unwrap_or_else(|| "TCP".into());
        let lower = protocol.to_lowercase();
        let url = format!("{lower}://{}", host_port(ip, port.port));
        if i == 0 {
            out.insert(format!("{prefix}_PORT"), url.clone());
        }
        let port_prefix = format!("{prefix}_PORT_{}_{}", port.port, protocol.to_uppercase());
        out.insert(port_prefix.clone(), url);
        out.insert(format!("{port_prefix}_PROTO"), lower);
        out.insert(format!("{port_prefix}_PORT"), port.port.to_string());
        out.insert(format!("{port_prefix}_ADDR"), ip.to_string());
    }
}

/// The service variables a pod sees: its namespace's Services when `enableServiceLinks` (default true), and the
/// `kubernetes` Service of `default` always (a Service of the pod's namespace of that name wins).
pub fn service_environment(pod: &Pod, services: &[Service]) -> BTreeMap<String, String> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let links = pod
        .spec
        .as_ref()
        .and_then(|s| s.enable_service_links)
        .unwrap_or(true);
    let mut chosen: BTreeMap<String, &Service> = BTreeMap::new();
    for service in services {
        let name = service.metadata.name.clone().unwrap_or_default();
        let ns = service.metadata.namespace.as_deref().unwrap_or("default");
        if ns == namespace && links {
            chosen.insert(name, service);
        } else if ns == "default" && name == "kubernetes" {
            chosen.entry(name).or_insert(service);
        }
    }
    let mut out = BTreeMap::new();
    for service in chosen.values() {
        service_variables(service, &mut out);
    }
    out
}

/// A `fieldRef` of the downward API, as `podFieldSelectorRuntimeValue` reads it.
pub fn field_value(pod: &Pod, path: &str, inputs: &EnvInputs) -> Result<String, EnvError> {
    let meta = &pod.metadata;
    let spec = pod.spec.clone().unwrap_or_default();
    let quoted = |prefix: &str| {
        path.strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix("['"))
            .and_then(|rest| rest.strip_suffix("']"))
            .map(String::from)
    };
    Ok(match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "spec.nodeName" => spec.node_name.unwrap_or_default(),
        "spec.serviceAccountName" => spec.service_account_name.unwrap_or_default(),
        "status.hostIP" => inputs.host_ips.first().cloned().unwrap_or_default(),
        "status.hostIPs" => inputs.host_ips.join(","),
        "status.podIP" => inputs.pod_ips.first().cloned().unwrap_or_default(),
        "status.podIPs" => inputs.pod_ips.join(","),
        _ => {
            if let Some(key) = quoted("metadata.labels") {
                meta.labels
                    .as_ref()
                    .and_then(|l| l.get(&key))
                    .cloned()
                    .unwrap_or_default()
            } else if let Some(key) = quoted("metadata.annotations") {
                meta.annotations
                    .as_ref()
                    .and_then(|a| a.get(&key))
                    .cloned()
                    .unwrap_or_default()
            } else {
                return Err(EnvError::UnsupportedFieldPath(path.to_string()));
            }
        }
    })
}

fn secret_value(secret: &Secret, key: &str) -> Option<String> {
    if let Some(value) = secret.data.as_ref().and_then(|d| d.get(key)) {
        return Some(String::from_utf8_lossy(&value.0).into_owned());
    }
    secret.string_data.as_ref().and_then(|d| d.get(key)).cloned()
}

fn config_map_value(config_map: &ConfigMap, key: &str) -> Option<String> {
    config_map.data.as_ref().and_then(|d| d.get(key)).cloned()
}

/// The container's environment, in the order the kubelet hands it to the runtime: `envFrom` and `env` names in
/// first-defined order, then the service variables not already defined.
pub fn container_environment(
    pod: &Pod,
    container: &Container,
    inputs: &EnvInputs,
) -> Result<Vec<(String, String)>, EnvError> {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let services = service_environment(pod, &inputs.services);
    let mut order: Vec<String> = Vec::new();
    let mut values: BTreeMap<String, String> = BTreeMap::new();
    fn define(name: String, value: String, order: &mut Vec<String>, values: &mut BTreeMap<String, String>) {
        if !values.contains_key(&name) {
            order.push(name.clone());
        }
        values.insert(name, value);
    }
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        if let Some(reference) = &from.config_map_ref {
            match inputs.config_maps.get(&reference.name) {
                Some(config_map) => {
                    for (key, value) in config_map.data.iter().flatten() {
                        define(format!("{prefix}{key}"), value.clone(), &mut order, &mut values);
                    }
                }
                None if reference.optional == Some(true) => {}
                None => return Err(EnvError::ConfigMapNotFound(reference.name.clone())),
            }
        }
        if let Some(reference) = &from.secret_ref {
            match inputs.secrets.get(&reference.name) {
                Some(secret) => {
                    for (key, value) in secret.data.iter().flatten() {
                        define(
                            format!("{prefix}{key}"),
                            String::from_utf8_lossy(&value.0).into_owned(),
                            &mut order,
                            &mut values,
                        );
                    }
                }
                None if reference.optional == Some(true) => {}
                None => return Err(EnvError::SecretNotFound(reference.name.clone())),
            }
        }
    }
    for var in container.env.iter().flatten() {
        let value = match (&var.value, &var.value_from) {
            (Some(value), _) if !value.is_empty() => {
                let defined = |name: &str| values.get(name).cloned().or_else(|| services.get(name).cloned());
                expand(value, &defined)
            }
            (_, Some(from)) => {
                if let Some(field) = &from.field_ref {
                    field_value(pod, &field.field_path, inputs)?
                } else if let Some(resource) = &from.resource_field_ref {
                    // The container itself unless the selector names another of the pod's (kubelet's
                    // containerResourceRuntimeValue).
                    let value = match resource.container_name.as_deref().filter(|n| !n.is_empty()) {
                        Some(name) => {
                            crate::volumes::resource_value(resource, pod, name, &inputs.node_allocatable)
                        }
                        None => {
                            let mut alone = Pod::default();
                            alone.spec.get_or_insert_default().containers = vec![container.clone()];
                            crate::volumes::resource_value(
                                resource,
                                &alone,
                                &container.name,
                                &inputs.node_allocatable,
                            )
                        }
                    };
                    value.map_err(|e| EnvError::ResourceField(e.to_string()))?
                } else if let Some(key_ref) = &from.config_map_key_ref {
                    let optional = key_ref.optional == Some(true);
                    match inputs.config_maps.get(&key_ref.name) {
                        None if optional => continue,
                        None => return Err(EnvError::ConfigMapNotFound(key_ref.name.clone())),
                        Some(config_map) => match config_map_value(config_map, &key_ref.key) {
                            Some(value) => value,
                            None if optional => continue,
                            None => {
                                return Err(EnvError::ConfigMapKeyNotFound {
                                    namespace: namespace.clone(),
                                    name: key_ref.name.clone(),
                                    key: key_ref.key.clone(),
                                });
                            }
                        },
                    }
                } else if let Some(key_ref) = &from.secret_key_ref {
                    let optional = key_ref.optional == Some(true);
                    match inputs.secrets.get(&key_ref.name) {
                        None if optional => continue,
                        None => return Err(EnvError::SecretNotFound(key_ref.name.clone())),
                        Some(secret) => match secret_value(secret, &key_ref.key) {
                            Some(value) => value,
                            None if optional => continue,
                            None => {
                                return Err(EnvError::SecretKeyNotFound {
                                    namespace: namespace.clone(),
                                    name: key_ref.name.clone(),
                                    key: key_ref.key.clone(),
                                });
                            }
                        },
                    }
                } else {
                    String::new()
                }
            }
            _ => String::new(),
        };
        define(var.name.clone(), value, &mut order, &mut values);
    }
    let mut out: Vec<(String, String)> = order
        .into_iter()
        .map(|name| {
            let value = values.get(&name).cloned().unwrap_or_default();
            (name, value)
        })
        .collect();
    for (name, value) in services {
        if !values.contains_key(&name) {
            out.push((name, value));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn lookup(name: &str) -> Option<String> {
        match name {
            "A" => Some("alpha".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expansion_follows_kubernetes() {
        assert_eq!(expand("$(A)-x", &lookup), "alpha-x");
        assert_eq!(expand("$(B)", &lookup), "$(B)", "undefined stays as written");
        assert_eq!(expand("$$(A)", &lookup), "$(A)", "$$ escapes");
        assert_eq!(expand("a$b", &lookup), "a$b");
        assert_eq!(expand("$(A", &lookup), "$(A", "unclosed");
        assert_eq!(expand("x$", &lookup), "x$");
        assert_eq!(expand("$(EMPTY)!", &lookup), "!");
        assert_eq!(expand("$(A)$(A)", &lookup), "alphaalpha");
        assert_eq!(expand("é$(A)é", &lookup), "éalphaé");
    }

    fn service(ns: &str, name: &str, ip: &str, ports: serde_json::Value) -> Service {
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": ns},
            "spec": {"clusterIP": ip, "ports": ports}}))
        .unwrap()
    }

    fn pod(ns: &str, extra: serde_json::Value) -> Pod {
        let mut spec = json!({"containers": [{"name": "c", "image": "busybox"}]});
        if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
            s.extend(e.clone());
        }
        serde_json::from_value(json!({"metadata": {"name": "p", "namespace": ns, "uid": "u-1",
            "labels": {"app": "web"}}, "spec": spec}))
        .unwrap()
    }

    #[test]
    fn service_variables_as_docker_links() {
        let services = vec![
            service(
                "shop",
                "redis-main",
                "10.43.0.20",
                json!([{"name": "db", "port": 6379}]),
            ),
            service("shop", "headless", "None", json!([{"port": 80}])),
            service(
                "default",
                "kubernetes",
                "10.43.0.1",
                json!([{"name": "https", "port": 443}]),
            ),
            service("other", "elsewhere", "10.43.0.30", json!([{"port": 80}])),
        ];
        let env = service_environment(&pod("shop", json!({})), &services);
        assert_eq!(env["REDIS_MAIN_SERVICE_HOST"], "10.43.0.20");
        assert_eq!(env["REDIS_MAIN_SERVICE_PORT"], "6379");
        assert_eq!(env["REDIS_MAIN_SERVICE_PORT_DB"], "6379");
        assert_eq!(env["REDIS_MAIN_PORT"], "tcp://10.43.0.20:6379");
        assert_eq!(env["REDIS_MAIN_PORT_6379_TCP_ADDR"], "10.43.0.20");
        assert_eq!(env["KUBERNETES_SERVICE_HOST"], "10.43.0.1");
        assert!(!env.contains_key("HEADLESS_SERVICE_HOST"));
        assert!(!env.contains_key("ELSEWHERE_SERVICE_HOST"));
        let no_links = service_environment(&pod("shop", json!({"enableServiceLinks": false})), &services);
        assert_eq!(
            no_links.keys().filter(|k| k.starts_with("KUBERNETES_")).count(),
            no_links.len()
        );
        assert!(no_links.contains_key("KUBERNETES_PORT_443_TCP"));
    }

    #[test]
    fn env_from_env_and_value_from_in_order() {
        let p = pod("shop", json!({"nodeName": "n1"}));
        let container: Container = serde_json::from_value(json!({"name": "c", "image": "busybox",
            "envFrom": [{"configMapRef": {"name": "settings"}, "prefix": "CFG_"}],
            "env": [
                {"name": "GREETING", "value": "hi $(CFG_who) on $(NODE) at $(KUBERNETES_SERVICE_HOST)"},
                {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                {"name": "LATE", "value": "$(NODE)"},
                {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
                {"name": "MAYBE", "valueFrom": {"configMapKeyRef": {"name": "absent", "key": "k", "optional": true}}},
                {"name": "CFG_who", "value": "again"},
                {"name": "MEM_MI", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
                {"name": "CPUS", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}}],
            "resources": {"limits": {"memory": "64Mi"}}}))
        .unwrap();
        let mut inputs = EnvInputs {
            services: vec![service(
                "default",
                "kubernetes",
                "10.43.0.1",
                json!([{"name": "https", "port": 443}]),
            )],
            node_allocatable: [("cpu".to_string(), Quantity("2".into()))].into(),
            ..EnvInputs::default()
        };
        inputs.config_maps.insert(
            "settings".into(),
            serde_json::from_value(json!({"data": {"who": "world"}})).unwrap(),
        );
        inputs.secrets.insert(
            "creds".into(),
            serde_json::from_value(json!({"data": {"password": "czNjcjN0"}})).unwrap(),
        );
        assert_eq!(
            references(&container),
            (
                vec!["absent".to_string(), "settings".into()],
                vec!["creds".to_string()]
            )
        );
        let env = container_environment(&p, &container, &inputs).unwrap();
        let get = |name: &str| env.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
        assert_eq!(
            get("GREETING"),
            Some("hi world on $(NODE) at 10.43.0.1"),
            "only what is defined before expands"
        );
        assert_eq!(get("LATE"), Some("n1"));
        assert_eq!(get("APP"), Some("web"));
        assert_eq!(get("PASSWORD"), Some("s3cr3t"));
        assert_eq!(
            get("MAYBE"),
            None,
            "an optional missing reference defines nothing"
        );
        assert_eq!(get("CFG_who"), Some("again"), "env replaces envFrom");
        assert_eq!(get("MEM_MI"), Some("64"));
        assert_eq!(
            get("CPUS"),
            Some("2"),
            "an unset limit reads as the node's allocatable"
        );
        assert_eq!(env[0].0, "CFG_who", "first-defined order");
        assert!(env.iter().any(|(n, _)| n == "KUBERNETES_PORT"));

        let missing: Container = serde_json::from_value(json!({"name": "c", "image": "busybox",
            "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "nope"}}}]}))
        .unwrap();
        assert_eq!(
            container_environment(&p, &missing, &inputs)
                .unwrap_err()
                .to_string(),
            "couldn't find key nope in Secret shop/creds"
        );
    }
}
