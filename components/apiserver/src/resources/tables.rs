//! Server-side printing: `meta.k8s.io` Tables for clients that ask for them (`Accept: application/json;as=Table;
//! v=v1;g=meta.k8s.io`), which is how `kubectl get` shows columns. The columns and cell values follow
//! kube-apiserver's printers (`pkg/printers/internalversion/printers.go`); the server always fills the wide
//! (priority 1) columns and kubectl hides them unless asked for `-o wide`.

use axum::http::{HeaderMap, header};
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::registry::ResourceType;

/// The Table version the client asks for first (`v1` or `v1beta1`), if it asks for a Table before plain JSON.
pub fn requested_version(headers: &HeaderMap) -> Option<&'static str> {
    let accept = headers.get(header::ACCEPT)?.to_str().ok()?;
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("");
        let params: Vec<(&str, &str)> = parts.filter_map(|p| p.split_once('=')).collect();
        let param = |name: &str| {
            params
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| *v)
        };
        if param("as") == Some("Table") && param("g") == Some("meta.k8s.io") {
            match param("v") {
                Some("v1") => return Some("v1"),
                Some("v1beta1") => return Some("v1beta1"),
                _ => continue,
            }
        }
        if media == "application/json" || media == "*/*" {
            return None;
        }
    }
    None
}

pub(super) fn column(name: &str, kind: &str, priority: u8, description: &str) -> Value {
    let format = if name == "Name" { "name" } else { "" };
    json!({"name": name, "type": kind, "format": format, "description": description, "priority": priority})
}

fn str_at<'a>(o: &'a Value, pointer: &str) -> &'a str {
    o.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn int_at(o: &Value, pointer: &str) -> i64 {
    o.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

fn or_none(s: String) -> String {
    if s.is_empty() { "<none>".into() } else { s }
}

fn len_at(o: &Value, pointer: &str) -> usize {
    match o.pointer(pointer) {
        Some(Value::Array(a)) => a.len(),
        Some(Value::Object(m)) => m.len(),
        _ => 0,
    }
}

/// Kubernetes' `duration.HumanDuration`: `45s`, `3m2s`, `10m`, `2h5m`, `20h`, `4d3h`, `100d`, `2y30d`.
pub fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".into();
    }
    if seconds < 0 {
        return "0s".into();
    }
    if seconds < 120 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let d = (hours / 24) % 365;
        return if d == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{d}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

fn parse_time(text: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()
}

/// `translateTimestampSince`: the age of an RFC 3339 timestamp, `<unknown>` when there is none.
pub(super) fn age(text: &str, now: OffsetDateTime) -> String {
    match parse_time(text) {
        Some(t) => human_duration((now - t).whole_seconds()),
        None => "<unknown>".into(),
    }
}

fn containers_and_images(template_spec: Option<&Value>) -> (String, String) {
    let containers = template_spec
        .and_then(|s| s.get("containers"))
        .and_then(Value::as_array);
    let names: Vec<&str> = containers
        .into_iter()
        .flatten()
        .map(|c| str_at(c, "/name"))
        .collect();
    let images: Vec<&str> = containers
        .into_iter()
        .flatten()
        .map(|c| str_at(c, "/image"))
        .collect();
    (names.join(","), images.join(","))
}

fn label_string(labels: Option<&Value>) -> String {
    let Some(Value::Object(map)) = labels else {
        return String::new();
    };
    let mut pairs: Vec<String> = map
        .iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
        .collect();
    pairs.sort();
    pairs.join(",")
}

/// A label selector as `metav1.FormatLabelSelector` prints it.
fn selector_string(selector: Option<&Value>) -> String {
    let Some(selector) = selector else {
        return "<none>".into();
    };
    let mut parts: Vec<String> = Vec::new();
    if let Some(Value::Object(labels)) = selector.get("matchLabels") {
        let mut keys: Vec<&String> = labels.keys().collect();
        keys.sort();
        parts.extend(
            keys.into_iter()
                .map(|k| format!("{k}={}", labels[k].as_str().unwrap_or(""))),
        );
    }
    for e in selector
        .get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let key = str_at(e, "/key");
        let values: Vec<&str> = e
            .get("values")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        parts.push(match str_at(e, "/operator") {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_string(),
            "DoesNotExist" => format!("!{key}"),
            other => format!("{key} {other}"),
        });
    }
    if parts.is_empty() {
        "<none>".into()
    } else {
        parts.join(",")
    }
}

fn has_condition(o: &Value, kind: &str) -> bool {
    o.pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|c| str_at(c, "/type") == kind && str_at(c, "/status") == "True")
}

/// `printPod`: READY, STATUS (the reason a person wants to see) and RESTARTS.
fn pod_cells(o: &Value, now: OffsetDateTime) -> Vec<Value> {
    let total = len_at(o, "/spec/containers");
    let mut ready = 0;
    let mut restarts = 0;
    let mut reason = str_at(o, "/status/phase").to_string();
    if !str_at(o, "/status/reason").is_empty() {
        reason = str_at(o, "/status/reason").to_string();
    }
    let conditions = o.pointer("/status/conditions").and_then(Value::as_array);
    if conditions
        .into_iter()
        .flatten()
        .any(|c| str_at(c, "/type") == "PodScheduled" && str_at(c, "/reason") == "SchedulingGated")
    {
        reason = "SchedulingGated".into();
    }
    let init_total = len_at(o, "/spec/initContainers");
    let mut initializing = false;
    for (i, c) in o
        .pointer("/status/initContainerStatuses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        restarts += int_at(c, "/restartCount");
        let terminated = c.pointer("/state/terminated");
        let waiting_reason = str_at(c, "/state/waiting/reason");
        match terminated {
            Some(t) if int_at(t, "/exitCode") == 0 => continue,
            Some(t) => {
                reason = match (str_at(t, "/reason"), int_at(t, "/signal")) {
                    ("", 0) => format!("Init:ExitCode:{}", int_at(t, "/exitCode")),
                    ("", signal) => format!("Init:Signal:{signal}"),
                    (r, _) => format!("Init:{r}"),
                };
            }
            None if !waiting_reason.is_empty() && waiting_reason != "PodInitializing" => {
                reason = format!("Init:{waiting_reason}");
            }
            None => reason = format!("Init:{i}/{init_total}"),
        }
        initializing = true;
        break;
    }
    if !initializing {
        let mut running = false;
        for c in o
            .pointer("/status/containerStatuses")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .rev()
        {
            restarts += int_at(c, "/restartCount");
            let waiting = str_at(c, "/state/waiting/reason");
            let terminated = c.pointer("/state/terminated");
            if !waiting.is_empty() {
                reason = waiting.to_string();
            } else if let Some(t) = terminated {
                reason = match (str_at(t, "/reason"), int_at(t, "/signal")) {
                    ("", 0) => format!("ExitCode:{}", int_at(t, "/exitCode")),
                    ("", signal) => format!("Signal:{signal}"),
                    (r, _) => r.to_string(),
                };
            } else if c.get("ready") == Some(&Value::Bool(true)) && c.pointer("/state/running").is_some() {
                running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && running {
            reason = if has_condition(o, "Ready") {
                "Running".into()
            } else {
                "NotReady".into()
            };
        }
    }
    let phase = str_at(o, "/status/phase");
    if o.pointer("/metadata/deletionTimestamp").is_some() {
        if str_at(o, "/status/reason") == "NodeLost" {
            reason = "Unknown".into();
        } else if phase != "Succeeded" && phase != "Failed" {
            reason = "Terminating".into();
        }
    }
    let ip = o
        .pointer("/status/podIPs/0/ip")
        .and_then(Value::as_str)
        .or_else(|| o.pointer("/status/podIP").and_then(Value::as_str))
        .unwrap_or("");
    let gates = o.pointer("/spec/readinessGates").and_then(Value::as_array);
    let readiness_gates = match gates {
        Some(gates) if !gates.is_empty() => {
            let passed = gates
                .iter()
                .filter(|g| has_condition(o, str_at(g, "/conditionType")))
                .count();
            format!("{passed}/{}", gates.len())
        }
        _ => "<none>".into(),
    };
    vec![
        json!(str_at(o, "/metadata/name")),
        json!(format!("{ready}/{total}")),
        json!(reason),
        json!(restarts.to_string()),
        json!(age(str_at(o, "/metadata/creationTimestamp"), now)),
        json!(or_none(ip.to_string())),
        json!(or_none(str_at(o, "/spec/nodeName").to_string())),
        json!(or_none(str_at(o, "/status/nominatedNodeName").to_string())),
        json!(readiness_gates),
    ]
}

fn service_cells(o: &Value) -> Vec<Value> {
    let kind = match str_at(o, "/spec/type") {
        "" => "ClusterIP",
        t => t,
    };
    let external: Vec<&str> = o
        .pointer("/spec/externalIPs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let balancers: Vec<&str> = o
        .pointer("/status/loadBalancer/ingress")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|i| {
            if str_at(i, "/ip").is_empty() {
                str_at(i, "/hostname")
            } else {
                str_at(i, "/ip")
            }
        })
        .filter(|s| !s.is_empty())
        .collect();
    let external_ip = match kind {
        "ClusterIP" | "NodePort" => or_none(external.join(",")),
        "LoadBalancer" => {
            let all: Vec<&str> = balancers.iter().chain(external.iter()).copied().collect();
            if all.is_empty() {
                "<pending>".into()
            } else {
                all.join(",")
            }
        }
        "ExternalName" => str_at(o, "/spec/externalName").to_string(),
        _ => "<unknown>".into(),
    };
    let ports: Vec<String> = o
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|p| {
            let protocol = match str_at(p, "/protocol") {
                "" => "TCP",
                x => x,
            };
            match int_at(p, "/nodePort") {
                0 => format!("{}/{protocol}", int_at(p, "/port")),
                node => format!("{}:{node}/{protocol}", int_at(p, "/port")),
            }
        })
        .collect();
    vec![
        json!(kind),
        json!(or_none(str_at(o, "/spec/clusterIP").to_string())),
        json!(external_ip),
        json!(or_none(ports.join(","))),
    ]
}

fn endpoints_cell(o: &Value) -> String {
    let mut all = Vec::new();
    for subset in o.get("subsets").and_then(Value::as_array).into_iter().flatten() {
        let ports: Vec<i64> = subset
            .get("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|p| int_at(p, "/port"))
            .collect();
        for address in subset
            .get("addresses")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let ip = str_at(address, "/ip");
            if ports.is_empty() {
                all.push(ip.to_string());
            }
            for port in &ports {
                all.push(format!("{ip}:{port}"));
            }
        }
    }
    match all.len() {
        0 => "<none>".into(),
        n if n > 3 => format!("{} + {} more...", all[..3].join(","), n - 3),
        _ => all.join(","),
    }
}

fn node_cells(o: &Value, now: OffsetDateTime) -> Vec<Value> {
    let ready = o
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|c| str_at(c, "/type") == "Ready")
        .map(|c| match str_at(c, "/status") {
            "True" => "Ready",
            "False" => "NotReady",
            _ => "Unknown",
        })
        .unwrap_or("Unknown");
    let mut status = ready.to_string();
    if o.pointer("/spec/unschedulable") == Some(&Value::Bool(true)) {
        status.push_str(",SchedulingDisabled");
    }
    let mut roles: Vec<&str> = o
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(k, _)| k.strip_prefix("node-role.kubernetes.io/"))
        .filter(|r| !r.is_empty())
        .collect();
    roles.sort();
    let address = |kind: &str| {
        o.pointer("/status/addresses")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|a| str_at(a, "/type") == kind)
            .map(|a| str_at(a, "/address").to_string())
            .unwrap_or_default()
    };
    vec![
        json!(str_at(o, "/metadata/name")),
        json!(status),
        json!(or_none(roles.join(","))),
        json!(age(str_at(o, "/metadata/creationTimestamp"), now)),
        json!(str_at(o, "/status/nodeInfo/kubeletVersion")),
        json!(or_none(address("InternalIP"))),
        json!(or_none(address("ExternalIP"))),
        json!(or_none(str_at(o, "/status/nodeInfo/osImage").to_string())),
        json!(or_none(str_at(o, "/status/nodeInfo/kernelVersion").to_string())),
        json!(or_none(
            str_at(o, "/status/nodeInfo/containerRuntimeVersion").to_string()
        )),
    ]
}

fn job_status(o: &Value) -> &'static str {
    if has_condition(o, "Complete") {
        "Complete"
    } else if has_condition(o, "Failed") {
        "Failed"
    } else if o.pointer("/metadata/deletionTimestamp").is_some() {
        "Terminating"
    } else if has_condition(o, "Suspended") {
        "Suspended"
    } else if has_condition(o, "FailureTarget") {
        "FailureTarget"
    } else if has_condition(o, "SuccessCriteriaMet") {
        "SuccessCriteriaMet"
    } else {
        "Running"
    }
}

fn job_cells(o: &Value, now: OffsetDateTime) -> Vec<Value> {
    let succeeded = int_at(o, "/status/succeeded");
    let completions = match o.pointer("/spec/completions").and_then(Value::as_i64) {
        Some(c) => format!("{succeeded}/{c}"),
        None => match int_at(o, "/spec/parallelism") {
            p if p > 1 => format!("{succeeded}/1 of {p}"),
            _ => format!("{succeeded}/1"),
        },
    };
    let duration = match (
        parse_time(str_at(o, "/status/startTime")),
        parse_time(str_at(o, "/status/completionTime")),
    ) {
        (None, _) => String::new(),
        (Some(start), None) => human_duration((now - start).whole_seconds()),
        (Some(start), Some(end)) => human_duration((end - start).whole_seconds()),
    };
    vec![json!(job_status(o)), json!(completions), json!(duration)]
}

fn event_cells(o: &Value, now: OffsetDateTime) -> Vec<Value> {
    let last = [
        str_at(o, "/series/lastObservedTime"),
        str_at(o, "/lastTimestamp"),
        str_at(o, "/eventTime"),
    ]
    .into_iter()
    .find(|t| !t.is_empty())
    .unwrap_or("");
    let first = [str_at(o, "/firstTimestamp"), str_at(o, "/eventTime")]
        .into_iter()
        .find(|t| !t.is_empty())
        .unwrap_or("");
    let last_seen = if last.is_empty() {
        "<unknown>".to_string()
    } else {
        age(last, now)
    };
    let object = format!(
        "{}/{}",
        str_at(o, "/involvedObject/kind").to_ascii_lowercase(),
        str_at(o, "/involvedObject/name")
    );
    let mut source = str_at(o, "/source/component").to_string();
    if !str_at(o, "/source/host").is_empty() {
        source = format!("{source}, {}", str_at(o, "/source/host"));
    }
    if source.is_empty() {
        source = str_at(o, "/reportingComponent").to_string();
    }
    let count = o.get("count").and_then(Value::as_i64).unwrap_or(1);
    vec![
        json!(last_seen),
        json!(str_at(o, "/type")),
        json!(str_at(o, "/reason")),
        json!(object),
        json!(str_at(o, "/involvedObject/fieldPath")),
        json!(source),
        json!(str_at(o, "/message").trim()),
        json!(if first.is_empty() {
            "<unknown>".to_string()
        } else {
            age(first, now)
        }),
        json!(count),
        json!(str_at(o, "/metadata/name")),
    ]
}

fn access_modes(o: &Value, pointer: &str) -> String {
    fn short(m: &str) -> &str {
        match m {
            "ReadWriteOnce" => "RWO",
            "ReadOnlyMany" => "ROX",
            "ReadWriteMany" => "RWX",
            "ReadWriteOncePod" => "RWOP",
            other => other,
        }
    }
    let modes: Vec<&str> = o
        .pointer(pointer)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(short)
        .collect();
    modes.join(",")
}

/// One object's cells.
pub(super) type Cells = Box<dyn Fn(&Value) -> Vec<Value>>;

/// The columns and each object's cells for `resource`.
fn printer(resource: &ResourceType, now: OffsetDateTime) -> (Vec<Value>, Cells) {
    if let Some(custom) = super::custom::printer(resource, now) {
        return custom;
    }
    let name_col = column("Name", "string", 0, "Name must be unique within a namespace.");
    let age_col = column(
        "Age",
        "string",
        0,
        "CreationTimestamp is a timestamp representing the server time when this object was created.",
    );
    let name = |o: &Value| json!(str_at(o, "/metadata/name"));
    let created = move |o: &Value| json!(age(str_at(o, "/metadata/creationTimestamp"), now));
    let workload = |o: &Value| {
        let (c, i) = containers_and_images(o.pointer("/spec/template/spec"));
        (
            json!(c),
            json!(i),
            json!(selector_string(o.pointer("/spec/selector"))),
        )
    };
    match (resource.group, resource.kind) {
        ("", "Pod") => (
            vec![
                name_col,
                column(
                    "Ready",
                    "string",
                    0,
                    "The aggregate readiness state of this pod for accepting traffic.",
                ),
                column(
                    "Status",
                    "string",
                    0,
                    "The aggregate status of the containers in this pod.",
                ),
                column(
                    "Restarts",
                    "string",
                    0,
                    "The number of times the containers in this pod have been restarted.",
                ),
                age_col,
                column("IP", "string", 1, "IP address allocated to the pod."),
                column("Node", "string", 1, "The node the pod is bound to."),
                column(
                    "Nominated Node",
                    "string",
                    1,
                    "The node the scheduler nominated for the pod.",
                ),
                column(
                    "Readiness Gates",
                    "string",
                    1,
                    "The pod's readiness gates that are met.",
                ),
            ],
            Box::new(move |o| pod_cells(o, now)),
        ),
        ("apps", "Deployment") => (
            vec![
                name_col,
                column(
                    "Ready",
                    "string",
                    0,
                    "Number of ready pods out of the desired number.",
                ),
                column(
                    "Up-to-date",
                    "integer",
                    0,
                    "Total number of non-terminated pods targeted by this deployment that have the desired template spec.",
                ),
                column(
                    "Available",
                    "integer",
                    0,
                    "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.",
                ),
                age_col,
                column(
                    "Containers",
                    "string",
                    1,
                    "Names of each container in the template.",
                ),
                column(
                    "Images",
                    "string",
                    1,
                    "Images referenced by each container in the template.",
                ),
                column("Selector", "string", 1, "Label selector for pods."),
            ],
            Box::new(move |o| {
                let (c, i, s) = workload(o);
                let desired = o.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1);
                vec![
                    name(o),
                    json!(format!("{}/{desired}", int_at(o, "/status/readyReplicas"))),
                    json!(int_at(o, "/status/updatedReplicas")),
                    json!(int_at(o, "/status/availableReplicas")),
                    created(o),
                    c,
                    i,
                    s,
                ]
            }),
        ),
        ("apps", "ReplicaSet") => (
            vec![
                name_col,
                column("Desired", "integer", 0, "Number of desired pods."),
                column("Current", "integer", 0, "Number of actual replicas."),
                column("Ready", "integer", 0, "The number of ready replicas."),
                age_col,
                column(
                    "Containers",
                    "string",
                    1,
                    "Names of each container in the template.",
                ),
                column(
                    "Images",
                    "string",
                    1,
                    "Images referenced by each container in the template.",
                ),
                column("Selector", "string", 1, "Label selector for pods."),
            ],
            Box::new(move |o| {
                let (c, i, s) = workload(o);
                vec![
                    name(o),
                    json!(o.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1)),
                    json!(int_at(o, "/status/replicas")),
                    json!(int_at(o, "/status/readyReplicas")),
                    created(o),
                    c,
                    i,
                    s,
                ]
            }),
        ),
        ("apps", "StatefulSet") => (
            vec![
                name_col,
                column(
                    "Ready",
                    "string",
                    0,
                    "Number of ready pods out of the desired number.",
                ),
                age_col,
                column(
                    "Containers",
                    "string",
                    1,
                    "Names of each container in the template.",
                ),
                column(
                    "Images",
                    "string",
                    1,
                    "Images referenced by each container in the template.",
                ),
            ],
            Box::new(move |o| {
                let (c, i, _) = workload(o);
                let desired = o.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1);
                vec![
                    name(o),
                    json!(format!("{}/{desired}", int_at(o, "/status/readyReplicas"))),
                    created(o),
                    c,
                    i,
                ]
            }),
        ),
        ("apps", "DaemonSet") => (
            vec![
                name_col,
                column(
                    "Desired",
                    "integer",
                    0,
                    "The total number of nodes that should be running the daemon pod.",
                ),
                column(
                    "Current",
                    "integer",
                    0,
                    "The number of nodes running at least one daemon pod.",
                ),
                column(
                    "Ready",
                    "integer",
                    0,
                    "The number of nodes with a ready daemon pod.",
                ),
                column(
                    "Up-to-date",
                    "integer",
                    0,
                    "The number of nodes running the updated daemon pod.",
                ),
                column(
                    "Available",
                    "integer",
                    0,
                    "The number of nodes with an available daemon pod.",
                ),
                column(
                    "Node Selector",
                    "string",
                    0,
                    "The node selector of the daemon pods.",
                ),
                age_col,
                column(
                    "Containers",
                    "string",
                    1,
                    "Names of each container in the template.",
                ),
                column(
                    "Images",
                    "string",
                    1,
                    "Images referenced by each container in the template.",
                ),
                column("Selector", "string", 1, "Label selector for pods."),
            ],
            Box::new(move |o| {
                let (c, i, s) = workload(o);
                vec![
                    name(o),
                    json!(int_at(o, "/status/desiredNumberScheduled")),
                    json!(int_at(o, "/status/currentNumberScheduled")),
                    json!(int_at(o, "/status/numberReady")),
                    json!(int_at(o, "/status/updatedNumberScheduled")),
                    json!(int_at(o, "/status/numberAvailable")),
                    json!(or_none(label_string(
                        o.pointer("/spec/template/spec/nodeSelector")
                    ))),
                    created(o),
                    c,
                    i,
                    s,
                ]
            }),
        ),
        ("batch", "Job") => (
            vec![
                name_col,
                column("Status", "string", 0, "Status of the job."),
                column("Completions", "string", 0, "The completion status of the job."),
                column("Duration", "string", 0, "Time required to complete the job."),
                age_col,
                column(
                    "Containers",
                    "string",
                    1,
                    "Names of each container in the template.",
                ),
                column(
                    "Images",
                    "string",
                    1,
                    "Images referenced by each container in the template.",
                ),
                column("Selector", "string", 1, "Label selector for pods."),
            ],
            Box::new(move |o| {
                let (c, i, s) = workload(o);
                let mut cells = vec![name(o)];
                cells.extend(job_cells(o, now));
                cells.extend([created(o), c, i, s]);
                cells
            }),
        ),
        ("batch", "CronJob") => (
            vec![
                name_col,
                column("Schedule", "string", 0, "The schedule in Cron format."),
                column("Timezone", "string", 0, "The time zone of the schedule."),
                column(
                    "Suspend",
                    "boolean",
                    0,
                    "Whether subsequent executions are suspended.",
                ),
                column("Active", "integer", 0, "Pointers to currently running jobs."),
                column("Last Schedule", "string", 0, "When the job was last scheduled."),
                age_col,
                column(
                    "Containers",
                    "string",
                    1,
                    "Names of each container in the template.",
                ),
                column(
                    "Images",
                    "string",
                    1,
                    "Images referenced by each container in the template.",
                ),
                column("Selector", "string", 1, "Label selector for pods."),
            ],
            Box::new(move |o| {
                let (c, i) = containers_and_images(o.pointer("/spec/jobTemplate/spec/template/spec"));
                let suspend = match o.pointer("/spec/suspend") {
                    Some(Value::Bool(true)) => "True",
                    Some(Value::Bool(false)) => "False",
                    _ => "<unset>",
                };
                let last = str_at(o, "/status/lastScheduleTime");
                vec![
                    name(o),
                    json!(str_at(o, "/spec/schedule")),
                    json!(or_none(str_at(o, "/spec/timeZone").to_string())),
                    json!(suspend),
                    json!(len_at(o, "/status/active")),
                    json!(if last.is_empty() {
                        "<none>".to_string()
                    } else {
                        age(last, now)
                    }),
                    created(o),
                    json!(c),
                    json!(i),
                    json!(selector_string(o.pointer("/spec/jobTemplate/spec/selector"))),
                ]
            }),
        ),
        ("", "Service") => (
            vec![
                name_col,
                column("Type", "string", 0, "The type of the service."),
                column("Cluster-IP", "string", 0, "The IP address of the service."),
                column(
                    "External-IP",
                    "string",
                    0,
                    "External IP addresses of the service.",
                ),
                column("Port(s)", "string", 0, "The ports the service exposes."),
                age_col,
                column(
                    "Selector",
                    "string",
                    1,
                    "Route service traffic to pods with label keys and values matching this selector.",
                ),
            ],
            Box::new(move |o| {
                let mut cells = vec![name(o)];
                cells.extend(service_cells(o));
                cells.push(created(o));
                cells.push(json!(or_none(label_string(o.pointer("/spec/selector")))));
                cells
            }),
        ),
        ("", "Endpoints") => (
            vec![
                name_col,
                column("Endpoints", "string", 0, "Endpoints of the service."),
                age_col,
            ],
            Box::new(move |o| vec![name(o), json!(endpoints_cell(o)), created(o)]),
        ),
        ("", "Node") => (
            vec![
                name_col,
                column("Status", "string", 0, "The status of the node."),
                column("Roles", "string", 0, "The roles of the node."),
                age_col,
                column("Version", "string", 0, "Kubelet version."),
                column("Internal-IP", "string", 1, "The node's internal address."),
                column("External-IP", "string", 1, "The node's external address."),
                column("OS-Image", "string", 1, "OS image reported by the node."),
                column(
                    "Kernel-Version",
                    "string",
                    1,
                    "Kernel version reported by the node.",
                ),
                column(
                    "Container-Runtime",
                    "string",
                    1,
                    "Container runtime version reported by the node.",
                ),
            ],
            Box::new(move |o| node_cells(o, now)),
        ),
        ("", "Namespace") => (
            vec![
                name_col,
                column("Status", "string", 0, "The status of the namespace."),
                age_col,
            ],
            Box::new(move |o| vec![name(o), json!(str_at(o, "/status/phase")), created(o)]),
        ),
        ("", "ConfigMap") => (
            vec![
                name_col,
                column("Data", "string", 0, "Number of entries."),
                age_col,
            ],
            Box::new(move |o| {
                vec![
                    name(o),
                    json!(len_at(o, "/data") + len_at(o, "/binaryData")),
                    created(o),
                ]
            }),
        ),
        ("", "Secret") => (
            vec![
                name_col,
                column("Type", "string", 0, "The type of the secret."),
                column("Data", "string", 0, "Number of entries."),
                age_col,
            ],
            Box::new(move |o| {
                vec![
                    name(o),
                    json!(str_at(o, "/type")),
                    json!(len_at(o, "/data")),
                    created(o),
                ]
            }),
        ),
        ("", "ServiceAccount") => (
            vec![
                name_col,
                column("Secrets", "string", 0, "Number of secrets."),
                age_col,
            ],
            Box::new(move |o| vec![name(o), json!(len_at(o, "/secrets")), created(o)]),
        ),
        ("", "Event") => (
            vec![
                column("Last Seen", "string", 0, "The last time the event was seen."),
                column("Type", "string", 0, "The type of the event."),
                column("Reason", "string", 0, "The reason for the event."),
                column("Object", "string", 0, "The object the event is about."),
                column(
                    "Subobject",
                    "string",
                    1,
                    "The part of the object the event is about.",
                ),
                column("Source", "string", 1, "The component reporting the event."),
                column("Message", "string", 0, "A description of the event."),
                column("First Seen", "string", 1, "The first time the event was seen."),
                column("Count", "string", 1, "The number of times the event occurred."),
                column("Name", "string", 1, "The event's name."),
            ],
            Box::new(move |o| event_cells(o, now)),
        ),
        ("", "PersistentVolume") => (
            vec![
                name_col,
                column("Capacity", "string", 0, "Capacity of the volume."),
                column("Access Modes", "string", 0, "Access modes of the volume."),
                column(
                    "Reclaim Policy",
                    "string",
                    0,
                    "What happens to the volume when released.",
                ),
                column("Status", "string", 0, "Phase of the volume."),
                column("Claim", "string", 0, "The claim bound to the volume."),
                column("StorageClass", "string", 0, "Storage class of the volume."),
                column(
                    "VolumeAttributesClass",
                    "string",
                    0,
                    "Volume attributes class of the volume.",
                ),
                column("Reason", "string", 0, "Reason for the volume's phase."),
                age_col,
                column("VolumeMode", "string", 1, "Volume mode."),
            ],
            Box::new(move |o| {
                let claim = match (
                    str_at(o, "/spec/claimRef/namespace"),
                    str_at(o, "/spec/claimRef/name"),
                ) {
                    (_, "") => String::new(),
                    (ns, n) => format!("{ns}/{n}"),
                };
                vec![
                    name(o),
                    json!(str_at(o, "/spec/capacity/storage")),
                    json!(access_modes(o, "/spec/accessModes")),
                    json!(str_at(o, "/spec/persistentVolumeReclaimPolicy")),
                    json!(str_at(o, "/status/phase")),
                    json!(claim),
                    json!(str_at(o, "/spec/storageClassName")),
                    json!(or_none(str_at(o, "/spec/volumeAttributesClassName").to_string())),
                    json!(str_at(o, "/status/reason")),
                    created(o),
                    json!(or_none(str_at(o, "/spec/volumeMode").to_string())),
                ]
            }),
        ),
        ("", "PersistentVolumeClaim") => (
            vec![
                name_col,
                column("Status", "string", 0, "Phase of the claim."),
                column("Volume", "string", 0, "The volume bound to the claim."),
                column("Capacity", "string", 0, "Capacity of the bound volume."),
                column("Access Modes", "string", 0, "Access modes of the bound volume."),
                column("StorageClass", "string", 0, "Storage class of the claim."),
                column(
                    "VolumeAttributesClass",
                    "string",
                    0,
                    "Volume attributes class of the claim.",
                ),
                age_col,
                column("VolumeMode", "string", 1, "Volume mode."),
            ],
            Box::new(move |o| {
                vec![
                    name(o),
                    json!(str_at(o, "/status/phase")),
                    json!(str_at(o, "/spec/volumeName")),
                    json!(str_at(o, "/status/capacity/storage")),
                    json!(access_modes(o, "/status/accessModes")),
                    json!(str_at(o, "/spec/storageClassName")),
                    json!(or_none(str_at(o, "/spec/volumeAttributesClassName").to_string())),
                    created(o),
                    json!(or_none(str_at(o, "/spec/volumeMode").to_string())),
                ]
            }),
        ),
        // printMutatingWebhook / printValidatingWebhook: the number of webhooks.
        (
            "admissionregistration.k8s.io",
            "MutatingWebhookConfiguration" | "ValidatingWebhookConfiguration",
        ) => (
            vec![
                name_col,
                column(
                    "Webhooks",
                    "integer",
                    0,
                    "Webhooks indicates the number of webhooks.",
                ),
                age_col,
            ],
            Box::new(move |o| {
                let webhooks = o.get("webhooks").and_then(Value::as_array).map_or(0, Vec::len);
                vec![json!(str_at(o, "/metadata/name")), json!(webhooks), created(o)]
            }),
        ),
        // printStorageClass: the default class's name says so.
        ("storage.k8s.io", "StorageClass") => (
            vec![
                name_col,
                column(
                    "Provisioner",
                    "string",
                    0,
                    "Indicates the type of the provisioner.",
                ),
                column(
                    "ReclaimPolicy",
                    "string",
                    0,
                    "Indicates the type of the reclaim policy.",
                ),
                column(
                    "VolumeBindingMode",
                    "string",
                    0,
                    "Indicates when volume binding and dynamic provisioning should occur",
                ),
                column(
                    "AllowVolumeExpansion",
                    "string",
                    0,
                    "Indicates whether the storage class allow volume expand",
                ),
                age_col,
            ],
            Box::new(move |o| {
                let default = [
                    "storageclass.kubernetes.io/is-default-class",
                    "storageclass.beta.kubernetes.io/is-default-class",
                ]
                .iter()
                .any(|a| {
                    o.pointer("/metadata/annotations")
                        .and_then(|m| m.get(*a))
                        .and_then(Value::as_str)
                        == Some("true")
                });
                let mut class = str_at(o, "/metadata/name").to_string();
                if default {
                    class.push_str(" (default)");
                }
                let or = |path: &str, fallback: &str| match str_at(o, path) {
                    "" => fallback.to_string(),
                    v => v.to_string(),
                };
                vec![
                    json!(class),
                    json!(str_at(o, "/provisioner")),
                    json!(or("/reclaimPolicy", "Delete")),
                    json!(or("/volumeBindingMode", "Immediate")),
                    json!(
                        o.pointer("/allowVolumeExpansion")
                            .and_then(Value::as_bool)
                            .unwrap_or(false)
                    ),
                    created(o),
                ]
            }),
        ),
        ("networking.k8s.io", "Ingress") => (
            vec![
                name_col,
                column("Class", "string", 0, "The ingress class."),
                column(
                    "Hosts",
                    "string",
                    0,
                    "Hosts that incoming requests are matched against.",
                ),
                column("Address", "string", 0, "Address of the load balancer."),
                column("Ports", "string", 0, "Ports of the load balancer."),
                age_col,
            ],
            Box::new(move |o| {
                let hosts: Vec<&str> = o
                    .pointer("/spec/rules")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .map(|r| str_at(r, "/host"))
                    .filter(|h| !h.is_empty())
                    .collect();
                let hosts = match hosts.len() {
                    0 => "*".to_string(),
                    n if n > 4 => format!("{} + {} more...", hosts[..4].join(","), n - 4),
                    _ => hosts.join(","),
                };
                let address: Vec<&str> = o
                    .pointer("/status/loadBalancer/ingress")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .map(|i| {
                        if str_at(i, "/ip").is_empty() {
                            str_at(i, "/hostname")
                        } else {
                            str_at(i, "/ip")
                        }
                    })
                    .collect();
                let ports = if len_at(o, "/spec/tls") > 0 {
                    "80, 443"
                } else {
                    "80"
                };
                vec![
                    name(o),
                    json!(or_none(str_at(o, "/spec/ingressClassName").to_string())),
                    json!(hosts),
                    json!(address.join(",")),
                    json!(ports),
                    created(o),
                ]
            }),
        ),
        // kube's printCertificateSigningRequest: conditions as `Approved,Issued`, `Pending`, ...
        ("certificates.k8s.io", "CertificateSigningRequest") => (
            vec![
                name_col,
                age_col,
                column("SignerName", "string", 0, "The name of the signer."),
                column(
                    "Requestor",
                    "string",
                    0,
                    "The user who requested the certificate.",
                ),
                column(
                    "RequestedDuration",
                    "string",
                    0,
                    "The requested duration of the certificate.",
                ),
                column("Condition", "string", 0, "The state of the request."),
            ],
            Box::new(move |o| {
                let mut conditions: Vec<String> = o
                    .pointer("/status/conditions")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|c| c.get("type").and_then(Value::as_str).map(String::from))
                    .collect();
                if conditions.is_empty() {
                    conditions.push("Pending".into());
                }
                if o.pointer("/status/certificate")
                    .and_then(Value::as_str)
                    .is_some_and(|c| !c.is_empty())
                {
                    conditions.push("Issued".into());
                }
                let duration = o
                    .pointer("/spec/expirationSeconds")
                    .and_then(Value::as_i64)
                    .map_or_else(
                        || "<none>".to_string(),
                        |s| {
                            if s % 3600 == 0 {
                                format!("{}h", s / 3600)
                            } else if s % 60 == 0 {
                                format!("{}m", s / 60)
                            } else {
                                format!("{s}s")
                            }
                        },
                    );
                vec![
                    name(o),
                    created(o),
                    json!(str_at(o, "/spec/signerName")),
                    json!(str_at(o, "/spec/username")),
                    json!(duration),
                    json!(conditions.join(",")),
                ]
            }),
        ),
        ("coordination.k8s.io", "Lease") => (
            vec![
                name_col,
                column("Holder", "string", 0, "The holder of the lease."),
                age_col,
            ],
            Box::new(move |o| vec![name(o), json!(str_at(o, "/spec/holderIdentity")), created(o)]),
        ),
        _ => (
            vec![
                name_col,
                column(
                    "Created At",
                    "date",
                    0,
                    "CreationTimestamp is a timestamp representing the server time when this object was created.",
                ),
            ],
            Box::new(|o| {
                vec![
                    json!(str_at(o, "/metadata/name")),
                    json!(str_at(o, "/metadata/creationTimestamp")),
                ]
            }),
        ),
    }
}

/// A Table of `objects`; `list_metadata` is the list's (resourceVersion, continue). Rows carry the objects'
/// metadata (`includeObject=Metadata`, the default), the whole object (`Object`) or nothing (`None`).
pub fn table(
    resource: &ResourceType,
    version: &str,
    objects: &[Value],
    list_metadata: Value,
    include_object: Option<&str>,
) -> Value {
    let now = OffsetDateTime::now_utc();
    let (columns, cells) = printer(resource, now);
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let mut row = json!({"cells": cells(o)});
            match include_object {
                Some("None") => {}
                Some("Object") => row["object"] = o.clone(),
                _ => {
                    let mut metadata = o.get("metadata").cloned().unwrap_or_else(|| json!({}));
                    if let Some(m) = metadata.as_object_mut() {
                        m.remove("managedFields");
                    }
                    row["object"] = json!({"kind": "PartialObjectMetadata", "apiVersion": format!("meta.k8s.io/{version}"), "metadata": metadata});
                }
            }
            row
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": format!("meta.k8s.io/{version}"),
        "metadata": list_metadata,
        "columnDefinitions": columns,
        "rows": rows,
    })
}

#[cfg(test)]
mod tests;
