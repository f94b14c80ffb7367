//! Services' virtual IPs and node ports, as kube-apiserver's service storage does them: defaults, validation, and
//! allocation of cluster IPs from `--service-cidr` and node ports from `--service-node-port-range`.
//!
//! The ranges themselves are in the cluster state (`/registry/ranges/serviceips` and `…/servicenodeports`, as
//! kube-apiserver keeps its RangeAllocations), written by the server at start. Every address or port a Service
//! holds is a reservation key under its range (`/registry/ranges/serviceips/10.43.0.1`), written, kept or
//! removed in the same store transaction as the Service itself: two Services can never hold one, and a deleted
//! Service frees what it held, even when two API servers share the store.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use bytes::Bytes;
use embedded_store::{RangeRequest, Store};
use serde_json::{Value, json};

use super::errors::{ApiError, FieldError};
use super::registry::ResourceType;
use super::validation::is_dns1123_label;

pub const IP_RANGE_KEY: &str = "/registry/ranges/serviceips";
pub const PORT_RANGE_KEY: &str = "/registry/ranges/servicenodeports";

/// Addresses beyond this many in a (v6) range are never handed out, so that a scan stays short.
const MAX_RANGE_SIZE: u128 = 1 << 20;

pub fn ip_key(ip: IpAddr) -> String {
    format!("{IP_RANGE_KEY}/{ip}")
}

pub fn port_key(port: u16) -> String {
    format!("{PORT_RANGE_KEY}/{port}")
}

pub fn is_service(resource: &ResourceType) -> bool {
    resource.group.is_empty() && resource.kind == "Service"
}

/// A service CIDR: its network address and prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpRange {
    network: IpAddr,
    prefix: u8,
}

impl IpRange {
    pub fn parse(cidr: &str) -> Result<IpRange, String> {
        let (addr, len) = cidr
            .split_once('/')
            .ok_or_else(|| format!("{cidr:?} is not a CIDR (address/length)"))?;
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{cidr:?}: {addr:?} is not an IP address"))?;
        let bits = if addr.is_ipv4() { 32 } else { 128 };
        let prefix: u8 = len
            .parse()
            .ok()
            .filter(|l| *l <= bits)
            .ok_or_else(|| format!("{cidr:?}: {len:?} is not a prefix length"))?;
        if bits - prefix < 2 {
            return Err(format!(
                "{cidr:?}: prefix length {prefix} leaves no room for services"
            ));
        }
        let host_bits = u32::from(bits - prefix);
        let value = Self::as_u128(addr);
        if value & ((1u128 << host_bits) - 1) != 0 {
            return Err(format!("{cidr:?} has host bits set"));
        }
        Ok(IpRange {
            network: addr,
            prefix,
        })
    }

    fn host_bits(&self) -> u32 {
        (if self.network.is_ipv4() { 32 } else { 128 }) - u32::from(self.prefix)
    }

    /// Usable addresses: all but the network address (and, in IPv4, the broadcast address).
    fn size(&self) -> u128 {
        let all = 1u128.checked_shl(self.host_bits()).unwrap_or(u128::MAX);
        let usable = if self.network.is_ipv4() { all - 2 } else { all - 1 };
        usable.min(MAX_RANGE_SIZE)
    }

    fn as_u128(ip: IpAddr) -> u128 {
        match ip {
            IpAddr::V4(v4) => u128::from(u32::from(v4)),
            IpAddr::V6(v6) => u128::from(v6),
        }
    }

    /// The `offset`-th usable address (0 is the network address plus one).
    fn nth(&self, offset: u128) -> IpAddr {
        let n = Self::as_u128(self.network) + 1 + offset;
        match self.network {
            IpAddr::V4(_) => IpAddr::V4((n as u32).into()),
            IpAddr::V6(_) => IpAddr::V6(n.into()),
        }
    }

    /// Where `ip` is in the range (0: the network address), if it is in it at all.
    fn offset_of(&self, ip: IpAddr) -> Option<u128> {
        if ip.is_ipv4() != self.network.is_ipv4() {
            return None;
        }
        let (ip, net) = (Self::as_u128(ip), Self::as_u128(self.network));
        let offset = ip.checked_sub(net)?;
        (self.host_bits() >= 128 || offset < (1u128 << self.host_bits())).then_some(offset)
    }

    /// True when `ip` may be a service's: inside, and neither the network nor the broadcast address.
    pub fn allocatable(&self, ip: IpAddr) -> bool {
        self.offset_of(ip).is_some_and(|o| o >= 1 && o <= self.size())
    }

    /// The first service IP (the `kubernetes` service's).
    pub fn first(&self) -> IpAddr {
        self.nth(0)
    }
}

impl std::fmt::Display for IpRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// `--service-node-port-range`: `low-high`, inclusive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    pub low: u16,
    pub high: u16,
}

impl PortRange {
    pub fn parse(s: &str) -> Result<PortRange, String> {
        let bad = || format!("{s:?} is not a port range such as 30000-32767");
        let (low, high) = s.split_once('-').ok_or_else(bad)?;
        let low: u16 = low.trim().parse().map_err(|_| bad())?;
        let high: u16 = high.trim().parse().map_err(|_| bad())?;
        if low == 0 || high < low {
            return Err(bad());
        }
        Ok(PortRange { low, high })
    }

    fn contains(&self, port: u16) -> bool {
        (self.low..=self.high).contains(&port)
    }

    fn size(&self) -> u32 {
        u32::from(self.high - self.low) + 1
    }
}

impl std::fmt::Display for PortRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.low, self.high)
    }
}

/// The ranges the cluster hands service IPs and node ports out of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceRanges {
    pub cluster_ips: IpRange,
    pub node_ports: PortRange,
}

impl Default for ServiceRanges {
    /// k3s's defaults, for a store no server has initialised (unit tests).
    fn default() -> Self {
        ServiceRanges {
            cluster_ips: IpRange {
                network: IpAddr::V4([10, 43, 0, 0].into()),
                prefix: 16,
            },
            node_ports: PortRange {
                low: 30000,
                high: 32767,
            },
        }
    }
}

/// Records the ranges in the cluster state (at every start: the flags are the truth).
pub async fn store_ranges(store: &dyn Store, ranges: ServiceRanges) -> Result<(), ApiError> {
    for (key, range) in [
        (IP_RANGE_KEY, ranges.cluster_ips.to_string()),
        (PORT_RANGE_KEY, ranges.node_ports.to_string()),
    ] {
        let value = json!({"range": range}).to_string();
        let current = store.get(Bytes::from(key), 0).await?;
        if current.kv.is_some_and(|kv| kv.value == value.as_bytes()) {
            continue;
        }
        store.put(Bytes::from(key), Bytes::from(value)).await?;
    }
    Ok(())
}

async fn load_ranges(store: &dyn Store) -> Result<ServiceRanges, ApiError> {
    let mut ranges = ServiceRanges::default();
    let read = |bytes: &[u8]| -> Option<String> {
        let v: Value = serde_json::from_slice(bytes).ok()?;
        v.get("range")?.as_str().map(String::from)
    };
    if let Some(kv) = store.get(Bytes::from(IP_RANGE_KEY), 0).await?.kv
        && let Some(range) = read(&kv.value)
    {
        ranges.cluster_ips = IpRange::parse(&range).map_err(ApiError::Internal)?;
    }
    if let Some(kv) = store.get(Bytes::from(PORT_RANGE_KEY), 0).await?.kv
        && let Some(range) = read(&kv.value)
    {
        ranges.node_ports = PortRange::parse(&range).map_err(ApiError::Internal)?;
    }
    Ok(ranges)
}

/// Who holds a reservation: the value of its key.
pub fn owner_value(namespace: &str, name: &str) -> Bytes {
    Bytes::from(json!({"namespace": namespace, "name": name}).to_string())
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn service_type(service: &Value) -> &str {
    str_at(service, "/spec/type")
}

fn wants_node_ports(service: &Value) -> bool {
    match service_type(service) {
        "NodePort" => true,
        "LoadBalancer" => service.pointer("/spec/allocateLoadBalancerNodePorts") != Some(&Value::Bool(false)),
        _ => false,
    }
}

fn needs_health_check(service: &Value) -> bool {
    service_type(service) == "LoadBalancer" && str_at(service, "/spec/externalTrafficPolicy") == "Local"
}

fn ports_of(service: &Value) -> Vec<Value> {
    service
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn node_port_of(port: &Value) -> Option<u16> {
    port.get("nodePort")
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)
}

/// Every reservation key `service` holds, as stored.
pub fn reservations(service: &Value) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    if service_type(service) != "ExternalName" {
        let ips = service.pointer("/spec/clusterIPs").and_then(Value::as_array);
        for ip in ips.into_iter().flatten().filter_map(Value::as_str) {
            if let Ok(ip) = ip.parse::<IpAddr>() {
                keys.insert(ip_key(ip));
            }
        }
    }
    for port in ports_of(service) {
        if let Some(p) = node_port_of(&port) {
            keys.insert(port_key(p));
        }
    }
    if let Some(p) = service
        .pointer("/spec/healthCheckNodePort")
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)
    {
        keys.insert(port_key(p));
    }
    keys
}

/// kube-apiserver's defaults for a Service (`SetDefaults_Service`), and on update the values the server
/// allocated before that the new object leaves out (`patchAllocatedValues`), so that `kubectl apply` of a
/// manifest without a clusterIP keeps the one it has.
pub fn apply_defaults(service: &mut Value, old: Option<&Value>) {
    if !service.get("spec").is_some_and(Value::is_object) {
        service["spec"] = json!({});
    }
    let spec = &mut service["spec"];
    if spec.get("type").is_none_or(|t| t.as_str() == Some("")) {
        spec["type"] = json!("ClusterIP");
    }
    let ty = spec["type"].as_str().unwrap_or_default().to_string();
    if spec.get("sessionAffinity").is_none_or(|t| t.as_str() == Some("")) {
        spec["sessionAffinity"] = json!("None");
    }
    if spec["sessionAffinity"] == "None"
        && let Some(map) = spec.as_object_mut()
    {
        map.remove("sessionAffinityConfig");
    }
    if spec["sessionAffinity"] == "ClientIP"
        && spec
            .pointer("/sessionAffinityConfig/clientIP/timeoutSeconds")
            .is_none()
    {
        spec["sessionAffinityConfig"] = json!({"clientIP": {"timeoutSeconds": 10800}});
    }
    if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
        for port in ports.iter_mut().filter(|p| p.is_object()) {
            if port.get("protocol").is_none_or(|p| p.as_str() == Some("")) {
                port["protocol"] = json!("TCP");
            }
            let unset = match port.get("targetPort") {
                None | Some(Value::Null) => true,
                Some(Value::Number(n)) => n.as_i64() == Some(0),
                Some(Value::String(s)) => s.is_empty(),
                _ => false,
            };
            if unset && let Some(p) = port.get("port").cloned() {
                port["targetPort"] = p;
            }
        }
    }
    if ty != "ExternalName" && spec.get("internalTrafficPolicy").is_none() {
        spec["internalTrafficPolicy"] = json!("Cluster");
    }
    if (ty == "NodePort" || ty == "LoadBalancer") && spec.get("externalTrafficPolicy").is_none_or(|p| p == "")
    {
        spec["externalTrafficPolicy"] = json!("Cluster");
    }
    if ty == "LoadBalancer" && spec.get("allocateLoadBalancerNodePorts").is_none() {
        spec["allocateLoadBalancerNodePorts"] = json!(true);
    }
    // clusterIP and clusterIPs say the same thing; whichever the client set fills the other.
    let ip = spec
        .get("clusterIP")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let first = spec
        .pointer("/clusterIPs/0")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if !ip.is_empty() && first.is_empty() {
        spec["clusterIPs"] = json!([ip]);
    } else if ip.is_empty() && !first.is_empty() {
        spec["clusterIP"] = json!(first);
    }
    if let Some(old) = old {
        patch_allocated_values(service, old);
    }
}

fn patch_allocated_values(service: &mut Value, old: &Value) {
    let ty = service_type(service).to_string();
    let old_ty = service_type(old).to_string();
    let spec = &mut service["spec"];
    if ty != "ExternalName" && old_ty != "ExternalName" && spec.get("clusterIP").is_none_or(|ip| ip == "") {
        for field in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
            if let Some(v) = old.pointer(&format!("/spec/{field}")) {
                spec[field] = v.clone();
            }
        }
    }
    let old_ports = ports_of(old);
    let needs_ports = ty == "NodePort" || ty == "LoadBalancer";
    if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
        for port in ports.iter_mut().filter(|p| p.is_object()) {
            let matching = old_ports
                .iter()
                .find(|o| o.get("port") == port.get("port") && o.get("protocol") == port.get("protocol"));
            let Some(old_node_port) = matching.and_then(node_port_of) else {
                continue;
            };
            if needs_ports && node_port_of(port).is_none() {
                port["nodePort"] = json!(old_node_port);
            } else if !needs_ports && node_port_of(port) == Some(old_node_port) {
                // Changing the type away from NodePort drops the ports the server gave (`dropTypeDependentFields`).
                if let Some(map) = port.as_object_mut() {
                    map.remove("nodePort");
                }
            }
        }
    }
    let old_check = old.pointer("/spec/healthCheckNodePort").cloned();
    let unset = spec.get("healthCheckNodePort").is_none_or(|p| p == 0);
    if needs_health_check(service) {
        if unset && let Some(p) = old_check {
            service["spec"]["healthCheckNodePort"] = p;
        }
    } else if old_check.is_some()
        && service.pointer("/spec/healthCheckNodePort") == old_check.as_ref()
        && let Some(spec) = service["spec"].as_object_mut()
    {
        spec.remove("healthCheckNodePort");
    }
    if ty != "LoadBalancer" && old_ty == "LoadBalancer" {
        for field in ["allocateLoadBalancerNodePorts", "loadBalancerClass"] {
            if service.pointer(&format!("/spec/{field}")) == old.pointer(&format!("/spec/{field}"))
                && let Some(spec) = service["spec"].as_object_mut()
            {
                spec.remove(field);
            }
        }
    }
    if ty != "NodePort"
        && ty != "LoadBalancer"
        && service.pointer("/spec/externalTrafficPolicy") == old.pointer("/spec/externalTrafficPolicy")
        && let Some(spec) = service["spec"].as_object_mut()
    {
        spec.remove("externalTrafficPolicy");
    }
}

fn invalid(
    field: impl Into<String>,
    value: impl std::fmt::Display,
    message: impl std::fmt::Display,
) -> FieldError {
    FieldError {
        field: field.into(),
        reason: "FieldValueInvalid",
        message: format!("Invalid value: {value}: {message}"),
    }
}

fn required(field: impl Into<String>, detail: &str) -> FieldError {
    FieldError {
        field: field.into(),
        reason: "FieldValueRequired",
        message: if detail.is_empty() {
            "Required value".into()
        } else {
            format!("Required value: {detail}")
        },
    }
}

fn forbidden(field: impl Into<String>, message: &str) -> FieldError {
    FieldError {
        field: field.into(),
        reason: "FieldValueForbidden",
        message: format!("Forbidden: {message}"),
    }
}

fn not_supported(field: impl Into<String>, value: &Value, supported: &[&str]) -> FieldError {
    let list = supported
        .iter()
        .map(|s| format!("\"{s}\""))
        .collect::<Vec<_>>()
        .join(", ");
    FieldError {
        field: field.into(),
        reason: "FieldValueNotSupported",
        message: format!("Unsupported value: {value}: supported values: {list}"),
    }
}

fn duplicate(field: impl Into<String>, value: impl std::fmt::Display) -> FieldError {
    FieldError {
        field: field.into(),
        reason: "FieldValueDuplicate",
        message: format!("Duplicate value: {value}"),
    }
}

/// Go's `%#v` of a `[]string`, as kube-apiserver prints `spec.clusterIPs` in its messages.
fn go_strings(values: &[String]) -> String {
    let quoted: Vec<String> = values.iter().map(|v| format!("{v:?}")).collect();
    format!("[]string{{{}}}", quoted.join(", "))
}

/// kube-apiserver's `ValidateService` (and `ValidateServiceUpdate` with `old`), for the fields bonsai serves.
pub fn validate(service: &Value, old: Option<&Value>) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let ty = service_type(service);
    let cluster_ip = str_at(service, "/spec/clusterIP");
    let headless = cluster_ip == "None";
    let ports = ports_of(service);
    const TYPES: [&str; 4] = ["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];
    if !TYPES.contains(&ty) {
        errors.push(not_supported("spec.type", &json!(ty), &TYPES));
    }
    if ports.is_empty() && !headless && ty != "ExternalName" {
        errors.push(required("spec.ports", ""));
    }
    match ty {
        "LoadBalancer" | "NodePort" if headless => {
            errors.push(invalid(
                "spec.clusterIPs[0]",
                "\"None\"",
                format!("may not be set to 'None' for {ty} services"),
            ));
        }
        "ExternalName" => {
            if !cluster_ip.is_empty() {
                errors.push(forbidden(
                    "spec.clusterIP",
                    "may not be set for type 'ExternalName'",
                ));
            }
            let name = str_at(service, "/spec/externalName");
            if name.is_empty() {
                errors.push(required("spec.externalName", ""));
            } else if !super::validation::is_dns1123_subdomain(name.trim_end_matches('.')) {
                errors.push(invalid(
                    "spec.externalName",
                    format!("{name:?}"),
                    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
                ));
            }
        }
        _ => {}
    }
    if !cluster_ip.is_empty() && !headless && cluster_ip.parse::<IpAddr>().is_err() {
        errors.push(invalid(
            "spec.clusterIPs[0]",
            format!("{cluster_ip:?}"),
            "must be empty, 'None', or a valid IP address",
        ));
    }
    let mut names = BTreeSet::new();
    let mut seen_ports = BTreeSet::new();
    let mut seen_node_ports = BTreeSet::new();
    for (i, port) in ports.iter().enumerate() {
        let path = format!("spec.ports[{i}]");
        let name = port.get("name").and_then(Value::as_str).unwrap_or("");
        if ports.len() > 1 && name.is_empty() {
            errors.push(required(format!("{path}.name"), ""));
        } else if !name.is_empty() {
            if !is_dns1123_label(name) {
                errors.push(invalid(
                    format!("{path}.name"),
                    format!("{name:?}"),
                    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character",
                ));
            }
            if !names.insert(name.to_string()) {
                errors.push(duplicate(format!("{path}.name"), format!("{name:?}")));
            }
        }
        let number = port.get("port").and_then(Value::as_i64).unwrap_or(0);
        if !(1..=65535).contains(&number) {
            errors.push(invalid(
                format!("{path}.port"),
                number,
                "must be between 1 and 65535, inclusive",
            ));
        }
        let protocol = port.get("protocol").and_then(Value::as_str).unwrap_or("");
        const PROTOCOLS: [&str; 3] = ["SCTP", "TCP", "UDP"];
        if !PROTOCOLS.contains(&protocol) {
            errors.push(not_supported(
                format!("{path}.protocol"),
                &json!(protocol),
                &PROTOCOLS,
            ));
        }
        match port.get("targetPort") {
            Some(Value::Number(n)) if !(1..=65535).contains(&n.as_i64().unwrap_or(0)) => {
                errors.push(invalid(
                    format!("{path}.targetPort"),
                    n,
                    "must be between 1 and 65535, inclusive",
                ));
            }
            Some(Value::String(s))
                if s.len() > 15 || !is_dns1123_label(s) || s.chars().all(|c| c.is_ascii_digit()) =>
            {
                errors.push(invalid(
                    format!("{path}.targetPort"),
                    format!("{s:?}"),
                    "must be a valid port name (at most 15 lower case alphanumeric characters or '-', with at least one letter)",
                ));
            }
            _ => {}
        }
        if !seen_ports.insert((protocol.to_string(), number)) {
            errors.push(duplicate(
                path.clone(),
                format!("core.ServicePort{{Protocol:{protocol:?}, Port:{number}}}"),
            ));
        }
        let node_port = port.get("nodePort").and_then(Value::as_i64).unwrap_or(0);
        if node_port != 0 {
            if ty == "ClusterIP" || ty == "ExternalName" {
                errors.push(forbidden(
                    format!("{path}.nodePort"),
                    &format!("may not be used when `type` is '{ty}'"),
                ));
            } else if !(1..=65535).contains(&node_port) {
                errors.push(invalid(
                    format!("{path}.nodePort"),
                    node_port,
                    "must be between 1 and 65535, inclusive",
                ));
            } else if !seen_node_ports.insert((protocol.to_string(), node_port)) {
                errors.push(duplicate(format!("{path}.nodePort"), node_port));
            }
        }
    }
    let affinity = str_at(service, "/spec/sessionAffinity");
    match affinity {
        "ClientIP" => {
            let timeout = service
                .pointer("/spec/sessionAffinityConfig/clientIP/timeoutSeconds")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            if !(1..=86400).contains(&timeout) {
                errors.push(invalid(
                    "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                    timeout,
                    "must be greater than 0 and less than 86400",
                ));
            }
        }
        "None" => {
            if service
                .pointer("/spec/sessionAffinityConfig")
                .is_some_and(|c| !c.is_null())
            {
                errors.push(forbidden(
                    "spec.sessionAffinityConfig",
                    "must not be set when session affinity is None",
                ));
            }
        }
        other => errors.push(not_supported(
            "spec.sessionAffinity",
            &json!(other),
            &["ClientIP", "None"],
        )),
    }
    for field in ["internalTrafficPolicy", "externalTrafficPolicy"] {
        if let Some(v) = service.pointer(&format!("/spec/{field}"))
            && !matches!(v.as_str(), Some("Cluster" | "Local"))
        {
            errors.push(not_supported(format!("spec.{field}"), v, &["Cluster", "Local"]));
        }
    }
    if ty != "NodePort" && ty != "LoadBalancer" && service.pointer("/spec/externalTrafficPolicy").is_some() {
        errors.push(invalid(
            "spec.externalTrafficPolicy",
            format!("{:?}", str_at(service, "/spec/externalTrafficPolicy")),
            "may only be set for externally-accessible services",
        ));
    }
    if !needs_health_check(service)
        && service
            .pointer("/spec/healthCheckNodePort")
            .is_some_and(|p| p != 0)
    {
        errors.push(invalid(
            "spec.healthCheckNodePort",
            service
                .pointer("/spec/healthCheckNodePort")
                .cloned()
                .unwrap_or_default(),
            "may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'",
        ));
    }
    for (i, ip) in service
        .pointer("/spec/externalIPs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        if ip.as_str().and_then(|s| s.parse::<IpAddr>().ok()).is_none() {
            errors.push(invalid(
                format!("spec.externalIPs[{i}]"),
                ip,
                "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
            ));
        }
    }
    if let Some(old) = old {
        let old_ip = str_at(old, "/spec/clusterIP");
        if ty != "ExternalName"
            && service_type(old) != "ExternalName"
            && !old_ip.is_empty()
            && old_ip != cluster_ip
        {
            errors.push(invalid(
                "spec.clusterIPs[0]",
                format!("{cluster_ip:?}"),
                "may not change once set",
            ));
        }
    }
    errors
}

/// Reservation keys (under one of the ranges) that are held now, and by whom.
async fn held(store: &dyn Store, prefix: &str) -> Result<BTreeMap<String, Bytes>, ApiError> {
    let response = store
        .range(RangeRequest {
            prefix: Bytes::from(format!("{prefix}/")),
            ..RangeRequest::default()
        })
        .await?;
    Ok(response
        .kvs
        .into_iter()
        .map(|kv| (String::from_utf8_lossy(&kv.key).into_owned(), kv.value))
        .collect())
}

/// kube-apiserver's allocators keep the low part of each range for addresses and ports users ask for, and
/// hand out the rest first: `min(max(16, size/16), 256)` addresses, `min(max(16, size/32), 128)` ports.
fn static_band(size: u128, divisor: u128, cap: u128) -> u128 {
    (size / divisor).clamp(16, cap).min(size)
}

/// A free offset in `0..size`: first from the dynamic band (from a random point, wrapping), then the static one.
fn pick_free(size: u128, band: u128, taken: &dyn Fn(u128) -> bool) -> Option<u128> {
    let dynamic = size - band;
    if dynamic > 0 {
        let start = rand::random_range(0..dynamic);
        for i in 0..dynamic {
            let offset = band + (start + i) % dynamic;
            if !taken(offset) {
                return Some(offset);
            }
        }
    }
    (0..band).find(|o| !taken(*o))
}

/// Fills in the Service's cluster IP and node ports (choosing free ones where none is asked for) and checks
/// what was asked for: in range and not held by another Service (422 otherwise). Returns the reservation keys
/// the Service holds once written. `old` is the stored Service of an update.
pub async fn allocate(
    store: &dyn Store,
    resource: &'static ResourceType,
    name: &str,
    service: &mut Value,
    old: Option<&Value>,
) -> Result<BTreeSet<String>, ApiError> {
    let ranges = load_ranges(store).await?;
    let ours = old.map(reservations).unwrap_or_default();
    let invalid_one = |cause: FieldError| ApiError::Invalid {
        resource,
        name: name.to_string(),
        causes: vec![cause],
    };
    let ty = service_type(service).to_string();
    if ty != "ExternalName" && str_at(service, "/spec/clusterIP") != "None" {
        let requested = str_at(service, "/spec/clusterIP").to_string();
        let ip = if requested.is_empty() {
            let taken = held(store, IP_RANGE_KEY).await?;
            let range = ranges.cluster_ips;
            let size = range.size();
            let band = static_band(size, 16, 256);
            let offset = pick_free(size, band, &|o| taken.contains_key(&ip_key(range.nth(o))))
                .ok_or_else(|| ApiError::Internal("failed to allocate a serviceIP: range is full".into()))?;
            range.nth(offset)
        } else {
            let ip: IpAddr = requested
                .parse()
                .map_err(|_| ApiError::Internal(format!("{requested:?} is not an IP address")))?;
            let fail = |why: String| {
                invalid_one(invalid(
                    "spec.clusterIPs",
                    go_strings(std::slice::from_ref(&requested)),
                    format!("failed to allocate IP {requested}: {why}"),
                ))
            };
            let key = ip_key(ip);
            if !ours.contains(&key) {
                if !ranges.cluster_ips.allocatable(ip) {
                    return Err(fail(format!(
                        "the provided IP ({ip}) is not in the valid range. The range of valid IPs is {}",
                        ranges.cluster_ips
                    )));
                }
                if store.get(Bytes::from(key), 0).await?.kv.is_some() {
                    return Err(fail("provided IP is already allocated".into()));
                }
            }
            ip
        };
        let spec = &mut service["spec"];
        spec["clusterIP"] = json!(ip.to_string());
        spec["clusterIPs"] = json!([ip.to_string()]);
        spec["ipFamilies"] = json!([if ip.is_ipv4() { "IPv4" } else { "IPv6" }]);
        if spec.get("ipFamilyPolicy").is_none() {
            spec["ipFamilyPolicy"] = json!("SingleStack");
        }
    } else if ty != "ExternalName" {
        let spec = &mut service["spec"];
        spec["clusterIPs"] = json!(["None"]);
        if spec.get("ipFamilies").is_none() {
            spec["ipFamilies"] = json!([if ranges.cluster_ips.first().is_ipv4() {
                "IPv4"
            } else {
                "IPv6"
            }]);
        }
        if spec.get("ipFamilyPolicy").is_none() {
            spec["ipFamilyPolicy"] = json!("SingleStack");
        }
    }

    // Node ports: what is asked for must be free (or already this Service's); the rest are chosen. Ports of one
    // number (TCP and UDP of one service port) share a node port, as in kube-apiserver.
    let wants = wants_node_ports(service);
    let needs_check = needs_health_check(service);
    let mut ports = ports_of(service);
    if ports.iter().any(|p| node_port_of(p).is_some()) || wants || needs_check {
        let taken = held(store, PORT_RANGE_KEY).await?;
        let mut chosen: BTreeSet<u16> = BTreeSet::new();
        let mut by_number: BTreeMap<i64, u16> = BTreeMap::new();
        let range = ranges.node_ports;
        let check = |port: u16, field: String, chosen: &BTreeSet<u16>| -> Result<(), ApiError> {
            let key = port_key(port);
            if ours.contains(&key) {
                return Ok(());
            }
            if !range.contains(port) {
                return Err(invalid_one(invalid(
                    field,
                    port,
                    format!("provided port is not in the valid range. The range of valid ports is {range}"),
                )));
            }
            if taken.contains_key(&key) || chosen.contains(&port) {
                return Err(invalid_one(invalid(
                    field,
                    port,
                    "provided port is already allocated",
                )));
            }
            Ok(())
        };
        // The ports asked for first, so that a chosen one never takes a requested one.
        for (i, port) in ports.iter().enumerate() {
            if let Some(p) = node_port_of(port) {
                let number = port.get("port").and_then(Value::as_i64).unwrap_or(0);
                if by_number.get(&number) != Some(&p) {
                    check(p, format!("spec.ports[{i}].nodePort"), &chosen)?;
                }
                chosen.insert(p);
                by_number.entry(number).or_insert(p);
            }
        }
        let size = u128::from(range.size());
        let band = static_band(size, 32, 128);
        let next = |chosen: &BTreeSet<u16>| -> Result<u16, ApiError> {
            let offset = pick_free(size, band, &|o| {
                let port = range.low + o as u16;
                taken.contains_key(&port_key(port)) || chosen.contains(&port)
            })
            .ok_or_else(|| ApiError::Internal("failed to allocate a nodePort: range is full".into()))?;
            Ok(range.low + offset as u16)
        };
        if wants {
            for port in ports.iter_mut().filter(|p| p.is_object()) {
                if node_port_of(port).is_some() {
                    continue;
                }
                let number = port.get("port").and_then(Value::as_i64).unwrap_or(0);
                let p = match by_number.get(&number) {
                    Some(p) => *p,
                    None => {
                        let p = next(&chosen)?;
                        chosen.insert(p);
                        by_number.insert(number, p);
                        p
                    }
                };
                port["nodePort"] = json!(p);
            }
            service["spec"]["ports"] = Value::Array(ports);
        }
        if needs_check {
            let requested = service
                .pointer("/spec/healthCheckNodePort")
                .and_then(Value::as_u64)
                .and_then(|p| u16::try_from(p).ok())
                .filter(|p| *p != 0);
            let p = match requested {
                Some(p) => {
                    check(p, "spec.healthCheckNodePort".into(), &chosen)?;
                    p
                }
                None => next(&chosen)?,
            };
            service["spec"]["healthCheckNodePort"] = json!(p);
        }
    }
    Ok(reservations(service))
}

/// Makes the reservations match the stored Services (kube-apiserver's repair loops, run at start): a Service
/// stored before reservations existed gets them, and a reservation no Service holds is freed.
pub async fn repair_reservations(store: &dyn Store) -> Result<(), ApiError> {
    use embedded_store::{Compare, Txn, TxnOp};
    let services = store
        .range(RangeRequest {
            prefix: Bytes::from("/registry/core/services/"),
            ..RangeRequest::default()
        })
        .await?;
    let mut wanted: BTreeMap<String, Bytes> = BTreeMap::new();
    for kv in &services.kvs {
        let Ok(service) = serde_json::from_slice::<Value>(&kv.value) else {
            continue;
        };
        let owner = owner_value(
            str_at(&service, "/metadata/namespace"),
            str_at(&service, "/metadata/name"),
        );
        for key in reservations(&service) {
            if wanted.contains_key(&key) {
                tracing::warn!(%key, service = %String::from_utf8_lossy(&owner), "two services hold one reservation");
                continue;
            }
            wanted.insert(key, owner.clone());
        }
    }
    let mut present = held(store, IP_RANGE_KEY).await?;
    present.extend(held(store, PORT_RANGE_KEY).await?);
    for (key, owner) in &wanted {
        if present.get(key) != Some(owner) {
            store.put(Bytes::from(key.clone()), owner.clone()).await?;
        }
    }
    for key in present.keys().filter(|k| !wanted.contains_key(*k)) {
        store
            .txn(Txn {
                compares: vec![Compare::exists(Bytes::from(key.clone()))],
                success: vec![TxnOp::Delete {
                    key: Bytes::from(key.clone()),
                }],
                failure: vec![],
            })
            .await?;
    }
    Ok(())
}

/// What became of a write of a Service with its reservations.
#[derive(Debug)]
pub enum Commit {
    Written(i64),
    Deleted,
    /// The Service was not as expected (exists, or changed since read): what it is now.
    ObjectChanged(Option<embedded_store::KeyValue>),
    /// Another Service took one of the reservations between the allocation and the write.
    ReservationTaken,
}

/// Writes (`value`) or deletes (`None`) the Service at `key` and, in the same transaction, takes the
/// reservations in `after` it did not hold `before` and frees those it no longer holds. `expected` is the
/// revision the Service was read at, or `None` for a create.
pub async fn commit(
    store: &dyn Store,
    key: Bytes,
    expected: Option<i64>,
    value: Option<Bytes>,
    before: &BTreeSet<String>,
    after: &BTreeSet<String>,
    owner: Bytes,
) -> Result<Commit, ApiError> {
    use embedded_store::{Compare, Txn, TxnOp, TxnOpResult};
    let mut compares = vec![match expected {
        Some(revision) => Compare::mod_revision_is(key.clone(), revision),
        None => Compare::absent(key.clone()),
    }];
    let deleting = value.is_none();
    let mut success = vec![match value {
        Some(value) => TxnOp::Put {
            key: key.clone(),
            value,
        },
        None => TxnOp::Delete { key: key.clone() },
    }];
    for taken in after.difference(before) {
        compares.push(Compare::absent(Bytes::from(taken.clone())));
        success.push(TxnOp::Put {
            key: Bytes::from(taken.clone()),
            value: owner.clone(),
        });
    }
    for freed in before.difference(after) {
        success.push(TxnOp::Delete {
            key: Bytes::from(freed.clone()),
        });
    }
    let response = store
        .txn(Txn {
            compares,
            success,
            failure: vec![TxnOp::Get { key }],
        })
        .await?;
    if response.succeeded {
        return Ok(if deleting {
            Commit::Deleted
        } else {
            Commit::Written(response.revision)
        });
    }
    let current = match response.results.into_iter().next() {
        Some(TxnOpResult::Get { kv }) => kv,
        _ => None,
    };
    let as_expected = match (&current, expected) {
        (None, None) => true,
        (Some(kv), Some(revision)) => kv.mod_revision == revision,
        _ => false,
    };
    Ok(if as_expected {
        Commit::ReservationTaken
    } else {
        Commit::ObjectChanged(current)
    })
}

/// How often a write whose chosen address or port another Service took meanwhile chooses again.
pub const ALLOCATION_ATTEMPTS: usize = 5;

#[cfg(test)]
mod tests;
