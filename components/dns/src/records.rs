//! The cluster's names, as Kubernetes' DNS specification defines them
//! (<https://github.com/kubernetes/dns/blob/master/docs/specification.md>, schema 1.1.0), answered from an index
//! built from Services and EndpointSlices. Pure: no sockets, no API; the handler asks, the watcher rebuilds.
//!
//! - `<svc>.<ns>.svc.<zone>`: A/AAAA of a ClusterIP service's cluster IPs; of a headless service's ready
//!   endpoints; a CNAME for an ExternalName service.
//! - `<hostname>.<svc>.<ns>.svc.<zone>`: a headless service's endpoint by its `hostname` (or, as CoreDNS does, by
//!   its dashed address when it has none).
//! - `_<port>._<proto>.<svc>.<ns>.svc.<zone>`: SRV for named ports, the targets' addresses as additional records.
//! - `<a-b-c-d>.<ns>.pod.<zone>`: the address the name spells (CoreDNS's `pods insecure`, k3s's setting).
//! - PTR for cluster IPs and headless endpoints; `dns-version.<zone>` TXT.
//!
//! A name that exists with no record of the asked type is NODATA (NOERROR, empty, the zone's SOA); a name that does
//! not exist is NXDOMAIN. Both carry the SOA so resolvers cache the denial for its minimum (5 s).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_server::proto::op::ResponseCode;
use hickory_server::proto::rr::rdata::{A, AAAA, CNAME, NS, PTR, SOA, SRV, TXT};
use hickory_server::proto::rr::{Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// Every record's TTL (CoreDNS's kubernetes plugin default, and the specification's example).
pub const TTL: u32 = 5;
/// The schema version of the specification this follows, answered at `dns-version.<zone>`.
pub const SCHEMA_VERSION: &str = "1.1.0";
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// What the cluster zone says to one question.
#[derive(Clone, Debug, PartialEq)]
pub struct Answer {
    pub code: ResponseCode,
    pub answers: Vec<Record>,
    pub additionals: Vec<Record>,
    /// For negative answers: the zone's SOA, for the authority section.
    pub soa: Option<Record>,
    /// An ExternalName's target, which the server resolves upstream and appends (as CoreDNS does), so stub
    /// resolvers that do not chase CNAMEs still get addresses.
    pub chase: Option<Name>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct NamedPort {
    name: String,
    /// `tcp`, `udp` or `sctp`: the SRV label without its underscore.
    protocol: String,
    port: u16,
}

#[derive(Clone, Debug)]
enum Kind {
    ClusterIp(Vec<IpAddr>),
    Headless,
    ExternalName(Name),
}

#[derive(Clone, Debug)]
struct EndpointRecord {
    ip: IpAddr,
    /// The endpoint's `hostname`, or its dashed address when it has none.
    label: String,
    ports: Vec<NamedPort>,
}

#[derive(Clone, Debug)]
struct ServiceRecord {
    kind: Kind,
    ports: Vec<NamedPort>,
    /// Ready endpoints, in a stable order.
    endpoints: Vec<EndpointRecord>,
}

/// The index of the cluster zone.
#[derive(Clone, Debug)]
pub struct ClusterRecords {
    zone: Name,
    dns_ip: IpAddr,
    serial: u32,
    /// By (namespace, name), both lower case.
    services: HashMap<(String, String), ServiceRecord>,
    namespaces: BTreeSet<String>,
    reverse: HashMap<IpAddr, Name>,
}

/// `1.2.3.4` as `1-2-3-4`, `fd00::1` as `fd00--1` (CoreDNS's endpoint and pod names).
pub fn dashed(ip: IpAddr) -> String {
    ip.to_string().replace(['.', ':'], "-")
}

fn undashed(label: &str) -> Option<IpAddr> {
    if let Ok(v4) = label.replace('-', ".").parse::<Ipv4Addr>() {
        return Some(IpAddr::V4(v4));
    }
    label.replace('-', ":").parse::<Ipv6Addr>().ok().map(IpAddr::V6)
}

fn record(name: &Name, rdata: RData) -> Record {
    Record::from_rdata(name.clone(), TTL, rdata)
}

fn address_record(name: &Name, ip: IpAddr) -> Record {
    match ip {
        IpAddr::V4(v4) => record(name, RData::A(A(v4))),
        IpAddr::V6(v6) => record(name, RData::AAAA(AAAA(v6))),
    }
}

fn matches_type(ip: IpAddr, rtype: RecordType) -> bool {
    matches!(
        (ip, rtype),
        (IpAddr::V4(_), RecordType::A | RecordType::ANY)
            | (IpAddr::V6(_), RecordType::AAAA | RecordType::ANY)
    )
}

impl NamedPort {
    /// A port as SRV names see it; unnamed ones (and impossible numbers) have no SRV record.
    fn new(name: Option<&str>, protocol: Option<&str>, port: i32) -> Option<NamedPort> {
        Some(NamedPort {
            name: name.filter(|n| !n.is_empty())?.to_ascii_lowercase(),
            protocol: protocol.unwrap_or("TCP").to_ascii_lowercase(),
            port: u16::try_from(port).ok()?,
        })
    }
}

impl ClusterRecords {
    /// The index of `services` and `slices` for the zone `domain` (such as `cluster.local`); `dns_ip` is the
    /// cluster DNS address, the zone's name server; `serial` the SOA serial (changes with every rebuild).
    pub fn build(
        domain: &str,
        dns_ip: IpAddr,
        serial: u32,
        services: &[Service],
        slices: &[EndpointSlice],
    ) -> Result<ClusterRecords, String> {
        let zone = Name::from_ascii(format!("{}.", domain.trim_end_matches('.')))
            .map_err(|e| format!("{domain:?} is not a DNS domain: {e}"))?
            .to_lowercase();
        let mut records = ClusterRecords {
            zone,
            dns_ip,
            serial,
            services: HashMap::new(),
            namespaces: BTreeSet::new(),
            reverse: HashMap::new(),
        };
        let mut endpoints: HashMap<(String, String), BTreeMap<IpAddr, EndpointRecord>> = HashMap::new();
        for slice in slices {
            let (Some(namespace), Some(service)) = (
                slice.metadata.namespace.as_deref(),
                slice
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(SERVICE_NAME_LABEL)),
            ) else {
                continue;
            };
            if slice.address_type == "FQDN" {
                continue;
            }
            let ports: Vec<NamedPort> = slice
                .ports
                .iter()
                .flatten()
                .filter_map(|p| NamedPort::new(p.name.as_deref(), p.protocol.as_deref(), p.port?))
                .collect();
            let known = endpoints
                .entry((namespace.to_ascii_lowercase(), service.to_ascii_lowercase()))
                .or_default();
            for endpoint in &slice.endpoints {
                if endpoint.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                    continue;
                }
                for address in &endpoint.addresses {
                    let Ok(ip) = address.parse::<IpAddr>() else {
                        continue;
                    };
                    let label = endpoint
                        .hostname
                        .clone()
                        .filter(|h| !h.is_empty())
                        .map(|h| h.to_ascii_lowercase())
                        .unwrap_or_else(|| dashed(ip));
                    let entry = known.entry(ip).or_insert_with(|| EndpointRecord {
                        ip,
                        label,
                        ports: Vec::new(),
                    });
                    for port in &ports {
                        if !entry.ports.contains(port) {
                            entry.ports.push(port.clone());
                        }
                    }
                }
            }
        }
        for service in services {
            let (Some(namespace), Some(name), Some(spec)) = (
                service.metadata.namespace.as_deref(),
                service.metadata.name.as_deref(),
                service.spec.as_ref(),
            ) else {
                continue;
            };
            let key = (namespace.to_ascii_lowercase(), name.to_ascii_lowercase());
            let kind = if spec.type_.as_deref() == Some("ExternalName") {
                let Some(target) = spec
                    .external_name
                    .as_deref()
                    .and_then(|n| Name::from_ascii(format!("{}.", n.trim_end_matches('.'))).ok())
                else {
                    continue;
                };
                Kind::ExternalName(target)
            } else if spec.cluster_ip.as_deref() == Some("None") {
                Kind::Headless
            } else {
                let ips: Vec<IpAddr> = match &spec.cluster_ips {
                    Some(ips) if !ips.is_empty() => ips.iter().filter_map(|ip| ip.parse().ok()).collect(),
                    _ => spec.cluster_ip.iter().filter_map(|ip| ip.parse().ok()).collect(),
                };
                if ips.is_empty() {
                    continue;
                }
                Kind::ClusterIp(ips)
            };
            let ports = spec
                .ports
                .iter()
                .flatten()
                .filter_map(|p| NamedPort::new(p.name.as_deref(), p.protocol.as_deref(), p.port))
                .collect();
            let endpoints: Vec<EndpointRecord> = match kind {
                Kind::Headless => endpoints.remove(&key).unwrap_or_default().into_values().collect(),
                _ => Vec::new(),
            };
            let service_name = records.service_name(&key.0, &key.1);
            match &kind {
                Kind::ClusterIp(ips) => {
                    for ip in ips {
                        if let Some(name) = &service_name {
                            records.reverse.entry(*ip).or_insert_with(|| name.clone());
                        }
                    }
                }
                Kind::Headless => {
                    for endpoint in &endpoints {
                        if let Some(name) = service_name
                            .as_ref()
                            .and_then(|n| n.prepend_label(endpoint.label.as_str()).ok())
                        {
                            records.reverse.entry(endpoint.ip).or_insert(name);
                        }
                    }
                }
                Kind::ExternalName(_) => {}
            }
            records.namespaces.insert(key.0.clone());
            records.services.insert(
                key,
                ServiceRecord {
                    kind,
                    ports,
                    endpoints,
                },
            );
        }
        Ok(records)
    }

    pub fn zone(&self) -> &Name {
        &self.zone
    }

    fn service_name(&self, namespace: &str, service: &str) -> Option<Name> {
        Name::from_ascii(format!("{service}.{namespace}.svc.{}", self.zone)).ok()
    }

    fn soa(&self) -> Record {
        let ns = self.ns_name();
        let hostmaster = self
            .zone
            .prepend_label("hostmaster")
            .unwrap_or_else(|_| self.zone.clone());
        record(
            &self.zone,
            RData::SOA(SOA::new(ns, hostmaster, self.serial, 7200, 1800, 86400, TTL)),
        )
    }

    fn ns_name(&self) -> Name {
        Name::from_ascii(format!("ns.dns.{}", self.zone)).unwrap_or_else(|_| self.zone.clone())
    }

    fn positive(&self, answers: Vec<Record>, additionals: Vec<Record>) -> Answer {
        if answers.is_empty() {
            return self.negative(ResponseCode::NoError);
        }
        Answer {
            code: ResponseCode::NoError,
            answers,
            additionals,
            soa: None,
            chase: None,
        }
    }

    fn negative(&self, code: ResponseCode) -> Answer {
        Answer {
            code,
            answers: Vec::new(),
            additionals: Vec::new(),
            soa: Some(self.soa()),
            chase: None,
        }
    }

    /// The answer to `name`/`rtype`, or `None` when the question is not the cluster's (forward it): names outside
    /// the zone, and reverse names of addresses the cluster does not know.
    pub fn answer(&self, name: &Name, rtype: RecordType) -> Option<Answer> {
        let name = name.to_lowercase();
        if rtype == RecordType::PTR && !self.zone.zone_of(&name) {
            let ip = name.parse_arpa_name().ok()?;
            let full = match ip {
                ipnet::IpNet::V4(n) if n.prefix_len() == 32 => ip.addr(),
                ipnet::IpNet::V6(n) if n.prefix_len() == 128 => ip.addr(),
                _ => return None,
            };
            let target = self.reverse.get(&full)?;
            return Some(self.positive(vec![record(&name, RData::PTR(PTR(target.clone())))], Vec::new()));
        }
        if !self.zone.zone_of(&name) {
            return None;
        }
        // The labels below the zone, nearest the zone first: `web.default.svc` -> [svc, default, web].
        let depth = usize::from(name.num_labels()) - usize::from(self.zone.num_labels());
        let labels: Vec<String> = name
            .iter()
            .take(depth)
            .map(|l| String::from_utf8_lossy(l).to_ascii_lowercase())
            .rev()
            .collect();
        let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
        Some(match labels.as_slice() {
            [] => match rtype {
                RecordType::SOA => self.positive(vec![self.soa()], Vec::new()),
                RecordType::NS => self.positive(
                    vec![record(&name, RData::NS(NS(self.ns_name())))],
                    vec![address_record(&self.ns_name(), self.dns_ip)],
                ),
                _ => self.negative(ResponseCode::NoError),
            },
            ["dns-version"] => match rtype {
                RecordType::TXT | RecordType::ANY => self.positive(
                    vec![record(
                        &name,
                        RData::TXT(TXT::new(vec![SCHEMA_VERSION.to_string()])),
                    )],
                    Vec::new(),
                ),
                _ => self.negative(ResponseCode::NoError),
            },
            ["dns"] => self.negative(ResponseCode::NoError),
            ["dns", "ns"] => {
                let answers = if matches_type(self.dns_ip, rtype) {
                    vec![address_record(&name, self.dns_ip)]
                } else {
                    Vec::new()
                };
                self.positive(answers, Vec::new())
            }
            ["svc"] | ["pod"] => self.negative(ResponseCode::NoError),
            ["svc", namespace] | ["pod", namespace] => {
                if self.namespaces.contains(*namespace) {
                    self.negative(ResponseCode::NoError)
                } else {
                    self.negative(ResponseCode::NXDomain)
                }
            }
            ["pod", _namespace, dashed_ip] => match undashed(dashed_ip) {
                Some(ip) => {
                    let answers = if matches_type(ip, rtype) {
                        vec![address_record(&name, ip)]
                    } else {
                        Vec::new()
                    };
                    self.positive(answers, Vec::new())
                }
                None => self.negative(ResponseCode::NXDomain),
            },
            ["svc", namespace, service] => self.service(&name, namespace, service, rtype),
            ["svc", namespace, service, protocol] if protocol.starts_with('_') => {
                // `_tcp.<svc>...` exists (it has SRV names below it) when a port of that protocol does.
                match self.services.get(&(namespace.to_string(), service.to_string())) {
                    Some(s) if s.ports.iter().any(|p| protocol[1..] == p.protocol) => {
                        self.negative(ResponseCode::NoError)
                    }
                    _ => self.negative(ResponseCode::NXDomain),
                }
            }
            ["svc", namespace, service, endpoint] => {
                self.endpoint(&name, namespace, service, endpoint, rtype)
            }
            ["svc", namespace, service, protocol, port]
                if protocol.starts_with('_') && port.starts_with('_') =>
            {
                self.srv(&name, namespace, service, &protocol[1..], &port[1..], rtype)
            }
            _ => self.negative(ResponseCode::NXDomain),
        })
    }

    fn service(&self, name: &Name, namespace: &str, service: &str, rtype: RecordType) -> Answer {
        let Some(record_of) = self.services.get(&(namespace.to_string(), service.to_string())) else {
            return self.negative(ResponseCode::NXDomain);
        };
        match &record_of.kind {
            Kind::ClusterIp(ips) => {
                let answers = ips
                    .iter()
                    .filter(|ip| matches_type(**ip, rtype))
                    .map(|ip| address_record(name, *ip))
                    .collect();
                self.positive(answers, Vec::new())
            }
            Kind::Headless => {
                let answers = record_of
                    .endpoints
                    .iter()
                    .filter(|e| matches_type(e.ip, rtype))
                    .map(|e| address_record(name, e.ip))
                    .collect();
                self.positive(answers, Vec::new())
            }
            Kind::ExternalName(target) => {
                let mut answer = self.positive(
                    vec![record(name, RData::CNAME(CNAME(target.clone())))],
                    Vec::new(),
                );
                if !matches!(rtype, RecordType::CNAME | RecordType::ANY) {
                    answer.chase = Some(target.clone());
                }
                answer
            }
        }
    }

    fn endpoint(
        &self,
        name: &Name,
        namespace: &str,
        service: &str,
        label: &str,
        rtype: RecordType,
    ) -> Answer {
        let found = self
            .services
            .get(&(namespace.to_string(), service.to_string()))
            .and_then(|s| s.endpoints.iter().find(|e| e.label == label));
        match found {
            Some(endpoint) => {
                let answers = if matches_type(endpoint.ip, rtype) {
                    vec![address_record(name, endpoint.ip)]
                } else {
                    Vec::new()
                };
                self.positive(answers, Vec::new())
            }
            None => self.negative(ResponseCode::NXDomain),
        }
    }

    fn srv(
        &self,
        name: &Name,
        namespace: &str,
        service: &str,
        protocol: &str,
        port: &str,
        rtype: RecordType,
    ) -> Answer {
        let Some(record_of) = self.services.get(&(namespace.to_string(), service.to_string())) else {
            return self.negative(ResponseCode::NXDomain);
        };
        let Some(service_name) = self.service_name(namespace, service) else {
            return self.negative(ResponseCode::NXDomain);
        };
        let wanted = |p: &NamedPort| p.name == port && p.protocol == protocol;
        // (target, port, target's addresses)
        let mut targets: Vec<(Name, u16, Vec<IpAddr>)> = Vec::new();
        match &record_of.kind {
            Kind::ClusterIp(ips) => {
                for p in record_of.ports.iter().filter(|p| wanted(p)) {
                    targets.push((service_name.clone(), p.port, ips.clone()));
                }
            }
            Kind::Headless => {
                for endpoint in &record_of.endpoints {
                    for p in endpoint.ports.iter().filter(|p| wanted(p)) {
                        if let Ok(target) = service_name.prepend_label(endpoint.label.as_str()) {
                            targets.push((target, p.port, vec![endpoint.ip]));
                        }
                    }
                }
            }
            Kind::ExternalName(_) => {}
        }
        if targets.is_empty() {
            return self.negative(ResponseCode::NXDomain);
        }
        if !matches!(rtype, RecordType::SRV | RecordType::ANY) {
            return self.negative(ResponseCode::NoError);
        }
        // CoreDNS's weights: the 100 shared out among the records.
        let weight = u16::try_from(100 / targets.len()).unwrap_or(1).max(1);
        let mut answers = Vec::new();
        let mut additionals = Vec::new();
        for (target, port, ips) in targets {
            answers.push(record(
                name,
                RData::SRV(SRV::new(0, weight, port, target.clone())),
            ));
            additionals.extend(ips.into_iter().map(|ip| address_record(&target, ip)));
        }
        self.positive(answers, additionals)
    }
}

#[cfg(test)]
mod tests;
