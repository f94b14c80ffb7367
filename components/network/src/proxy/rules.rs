//! The service proxy's nftables rules, in bonsai's table, in the shape of kube-proxy's nftables mode:
//!
//! - `services` (jumped to from the nat prerouting and output hooks) looks the destination up in the verdict
//!   map `service-ips` (cluster IPs, external and load balancer IPs) and, for addresses of this host,
//!   `service-nodeports`;
//! - a chain per service port (`svc-…`, every usable endpoint; `svl-…`, this node's only; `ext-…`, traffic
//!   from outside, with `externalTrafficPolicy`) picks an endpoint with `numgen random` (after ClientIP
//!   affinity, kept in a dynamic set per endpoint), and a chain per endpoint (`ep-…`) DNATs to it;
//! - packets that need their source rewritten (from outside the cluster, or a pod reaching itself through
//!   its service) get a mark that the nat postrouting hook turns into a masquerade;
//! - the filter hooks reject (or drop) new connections to service ports without endpoints, through
//!   `no-endpoint-services` and `no-endpoint-nodeports`, and to cluster IPs on ports no Service serves.
//!
//! A sync renders the whole desired `Ruleset`, then writes only its difference from the last one applied:
//! chains whose rules changed are flushed and rewritten, map elements added or deleted, chains and sets no
//! longer wanted deleted; all in one `nft -f` transaction. With no last one (start, or after a failure),
//! everything is written and whatever proxy chains exist are replaced.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use ipnet::Ipv4Net;
use sha2::{Digest, Sha256};

use super::model::ServicePort;
use crate::nft::TABLE;

/// The mark bit that asks postrouting to masquerade (kube-proxy's 0x4000).
const MASQUERADE_MARK: &str = "0x00004000";

/// The chains with fixed names (base chains and helpers); per-service chains have the prefixes below.
const FIXED_CHAINS: [&str; 12] = [
    "svc-nat-prerouting",
    "svc-nat-output",
    "svc-nat-postrouting",
    "svc-filter-input",
    "svc-filter-forward",
    "svc-filter-output",
    "services",
    "nodeports",
    "masquerading",
    "mark-for-masquerade",
    "reject-chain",
    "endpoints-check",
];
const MAPS: [&str; 4] = [
    "service-ips",
    "service-nodeports",
    "no-endpoint-services",
    "no-endpoint-nodeports",
];
const CLUSTER_IPS_SET: &str = "cluster-ips";
/// Prefixes of per-service-port and per-endpoint chains, and of affinity sets.
pub const CHAIN_PREFIXES: [&str; 4] = ["svc-", "svl-", "ext-", "ep-"];
pub const SET_PREFIX: &str = "aff-";

/// Everything the proxy programs that depends on Services and endpoints.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ruleset {
    /// Per-service-port and per-endpoint chains and their rules.
    pub chains: BTreeMap<String, Vec<String>>,
    /// Affinity sets, with their timeout in seconds.
    pub sets: BTreeMap<String, u32>,
    /// Map (or set) elements: (map, key) -> verdict ("" for a set element).
    pub elements: BTreeMap<(&'static str, String), String>,
}

impl Ruleset {
    pub fn service_count(&self) -> usize {
        self.chains.keys().filter(|c| c.starts_with("svc-")).count()
    }
}

fn short_hash(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    hex::encode(&hasher.finalize()[..8])
}

/// `numgen random` over `targets` (chain names): one `goto`, or a vmap.
fn spread(targets: &[String]) -> String {
    match targets {
        [one] => format!("goto {one}"),
        many => {
            let arms: Vec<String> = many
                .iter()
                .enumerate()
                .map(|(i, t)| format!("{i} : goto {t}"))
                .collect();
            format!("numgen random mod {} vmap {{ {} }}", many.len(), arms.join(", "))
        }
    }
}

/// The rules of the fixed chains: hooks, lookups, masquerading and the endpoint checks.
pub fn fixed_rules(service_cidr: Ipv4Net) -> BTreeMap<&'static str, Vec<String>> {
    let mut rules: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
    rules.insert("svc-nat-prerouting", vec!["jump services".into()]);
    rules.insert("svc-nat-output", vec!["jump services".into()]);
    rules.insert("svc-nat-postrouting", vec!["jump masquerading".into()]);
    rules.insert(
        "services",
        vec![
            "ip daddr . meta l4proto . th dport vmap @service-ips".into(),
            "ip daddr != 127.0.0.0/8 fib daddr type local jump nodeports".into(),
        ],
    );
    rules.insert(
        "nodeports",
        vec!["meta l4proto . th dport vmap @service-nodeports".into()],
    );
    rules.insert(
        "masquerading",
        vec![
            format!("meta mark & {MASQUERADE_MARK} == 0 return"),
            format!("meta mark set meta mark ^ {MASQUERADE_MARK}"),
            "masquerade fully-random".into(),
        ],
    );
    rules.insert(
        "mark-for-masquerade",
        vec![format!("meta mark set meta mark | {MASQUERADE_MARK}")],
    );
    rules.insert("reject-chain", vec!["reject".into()]);
    rules.insert(
        "endpoints-check",
        vec![
            "ip daddr . meta l4proto . th dport vmap @no-endpoint-services".into(),
            "ip daddr != 127.0.0.0/8 fib daddr type local meta l4proto . th dport vmap @no-endpoint-nodeports".into(),
        ],
    );
    rules.insert(
        "svc-filter-input",
        vec!["ct state new jump endpoints-check".into()],
    );
    rules.insert(
        "svc-filter-forward",
        vec![
            "ct state new jump endpoints-check".into(),
            // What is still addressed to a cluster IP here matched no service port: refuse it, and drop what goes
            // to an address of the service range no Service has (it would otherwise leave by the default route).
            format!("ct state new ip daddr @{CLUSTER_IPS_SET} reject"),
            format!("ct state new ip daddr {service_cidr} drop"),
        ],
    );
    rules.insert(
        "svc-filter-output",
        vec!["ct state new jump endpoints-check".into()],
    );
    rules
}

/// Declarations of the table's fixed objects (no-ops when they exist).
fn declarations() -> String {
    let t = TABLE;
    let mut s = format!("table ip {t} {{\n");
    for (name, hook) in [
        ("svc-nat-prerouting", "type nat hook prerouting priority dstnat"),
        ("svc-nat-output", "type nat hook output priority -100"),
        ("svc-nat-postrouting", "type nat hook postrouting priority srcnat"),
        // The filter checks run before DNAT (-110 < dstnat), while the destination is still the service's.
        ("svc-filter-input", "type filter hook input priority -110"),
        ("svc-filter-forward", "type filter hook forward priority -110"),
        ("svc-filter-output", "type filter hook output priority -110"),
    ] {
        let _ = writeln!(s, "  chain {name} {{ {hook}; policy accept; }}");
    }
    for name in FIXED_CHAINS.iter().skip(6) {
        let _ = writeln!(s, "  chain {name} {{ }}");
    }
    for map in ["service-ips", "no-endpoint-services"] {
        let _ = writeln!(
            s,
            "  map {map} {{ type ipv4_addr . inet_proto . inet_service : verdict; }}"
        );
    }
    for map in ["service-nodeports", "no-endpoint-nodeports"] {
        let _ = writeln!(s, "  map {map} {{ type inet_proto . inet_service : verdict; }}");
    }
    let _ = writeln!(s, "  set {CLUSTER_IPS_SET} {{ type ipv4_addr; }}");
    s.push_str("}\n");
    s
}

/// The desired per-service state for `ports`.
pub fn render(ports: &[ServicePort], cluster_cidr: Ipv4Net) -> Ruleset {
    let mut out = Ruleset::default();
    for sp in ports {
        let proto = sp.protocol.nft();
        let id = short_hash(&[&sp.name, proto]);
        let svc = format!("svc-{id}");
        let svl = format!("svl-{id}");
        let ext = format!("ext-{id}");
        out.elements
            .insert((CLUSTER_IPS_SET, sp.cluster_ip.to_string()), String::new());

        // One chain per endpoint (of either set), shared by the cluster and the local chain.
        let endpoint_chain = |e: &super::model::Endpoint, out: &mut Ruleset| -> (String, Option<String>) {
            let eid = short_hash(&[&sp.name, proto, &e.ip.to_string(), &e.port.to_string()]);
            let chain = format!("ep-{eid}");
            let mut rules = vec![format!("ip saddr {} jump mark-for-masquerade", e.ip)];
            let set = sp.affinity_seconds.map(|seconds| {
                let set = format!("{SET_PREFIX}{eid}-{seconds}");
                rules.push(format!("update @{set} {{ ip saddr }}"));
                out.sets.insert(set.clone(), seconds);
                set
            });
            rules.push(format!("meta l4proto {proto} dnat to {}:{}", e.ip, e.port));
            out.chains.insert(chain.clone(), rules);
            (chain, set)
        };
        let balance = |endpoints: &[&super::model::Endpoint], out: &mut Ruleset| -> Vec<String> {
            let mut rules = Vec::new();
            let mut targets = Vec::new();
            for e in endpoints {
                let (chain, set) = endpoint_chain(e, out);
                if let Some(set) = set {
                    rules.push(format!("ip saddr @{set} goto {chain}"));
                }
                targets.push(chain);
            }
            rules.push(spread(&targets));
            rules
        };

        let cluster = sp.usable(false);
        let local = sp.usable(true);
        let key = format!("{} . {proto} . {}", sp.cluster_ip, sp.port);
        if cluster.is_empty() {
            // No endpoint anywhere: refuse connections at once rather than let them time out.
            out.elements
                .insert(("no-endpoint-services", key), "goto reject-chain".into());
            for ip in &sp.external_ips {
                out.elements.insert(
                    ("no-endpoint-services", format!("{ip} . {proto} . {}", sp.port)),
                    "goto reject-chain".into(),
                );
            }
            if let Some(np) = sp.node_port {
                out.elements.insert(
                    ("no-endpoint-nodeports", format!("{proto} . {np}")),
                    "goto reject-chain".into(),
                );
            }
            continue;
        }
        let mut svc_rules = vec![format!(
            "ip daddr {} meta l4proto {proto} th dport {} ip saddr != {cluster_cidr} jump mark-for-masquerade",
            sp.cluster_ip, sp.port
        )];
        svc_rules.extend(balance(&cluster, &mut out));
        out.chains.insert(svc.clone(), svc_rules);
        let wants_local_chain = (sp.internal_local || sp.external_local) && !local.is_empty();
        if wants_local_chain {
            let rules = balance(&local, &mut out);
            out.chains.insert(svl.clone(), rules);
        }
        if sp.internal_local && local.is_empty() {
            // internalTrafficPolicy Local with no endpoint here: dropped, as kube-proxy does.
            out.elements.insert(("no-endpoint-services", key), "drop".into());
        } else {
            let target = if sp.internal_local { &svl } else { &svc };
            out.elements
                .insert(("service-ips", key), format!("goto {target}"));
        }
        if sp.external_ips.is_empty() && sp.node_port.is_none() {
            continue;
        }
        let ext_rules = if sp.external_local {
            // Source addresses are kept (no masquerade) for traffic from outside, which only goes to endpoints on
            // this node; pods and the node itself reach the service as they would its cluster IP.
            let mut rules = vec![
                format!("ip saddr {cluster_cidr} goto {svc}"),
                "fib saddr type local jump mark-for-masquerade".into(),
                format!("fib saddr type local goto {svc}"),
            ];
            rules.push(if local.is_empty() {
                "drop".into()
            } else {
                format!("goto {svl}")
            });
            rules
        } else {
            vec!["jump mark-for-masquerade".into(), format!("goto {svc}")]
        };
        out.chains.insert(ext.clone(), ext_rules);
        for ip in &sp.external_ips {
            out.elements.insert(
                ("service-ips", format!("{ip} . {proto} . {}", sp.port)),
                format!("goto {ext}"),
            );
        }
        if let Some(np) = sp.node_port {
            out.elements.insert(
                ("service-nodeports", format!("{proto} . {np}")),
                format!("goto {ext}"),
            );
        }
    }
    out
}

fn element(map: &str, key: &str, verdict: &str) -> String {
    if verdict.is_empty() {
        format!("{{ {key} }}")
    } else {
        let _ = map;
        format!("{{ {key} : {verdict} }}")
    }
}

/// The nft script that takes the kernel from `previous` (what the last successful sync applied; `None`: not
/// known) to `next`. `existing` lists the proxy chains and sets that exist now, needed only without `previous`.
pub fn script(
    previous: Option<&Ruleset>,
    next: &Ruleset,
    fixed: &BTreeMap<&'static str, Vec<String>>,
    existing: &Existing,
) -> String {
    let t = TABLE;
    let mut s = declarations();
    let empty = Ruleset::default();
    let (previous, full) = match previous {
        Some(p) => (p, false),
        None => (&empty, true),
    };
    if full {
        for (chain, rules) in fixed {
            let _ = writeln!(s, "flush chain ip {t} {chain}");
            for rule in rules {
                let _ = writeln!(s, "add rule ip {t} {chain} {rule}");
            }
        }
        for map in MAPS {
            let _ = writeln!(s, "flush map ip {t} {map}");
        }
        let _ = writeln!(s, "flush set ip {t} {CLUSTER_IPS_SET}");
    }
    for (set, seconds) in &next.sets {
        if !previous.sets.contains_key(set) {
            let _ = writeln!(
                s,
                "add set ip {t} {set} {{ type ipv4_addr; flags dynamic,timeout; timeout {seconds}s; }}"
            );
        }
    }
    // Chains first declared, then written: rules may jump to chains written later in the script.
    for chain in next.chains.keys() {
        if !previous.chains.contains_key(chain) {
            let _ = writeln!(s, "add chain ip {t} {chain}");
        }
    }
    for (chain, rules) in &next.chains {
        if previous.chains.get(chain) == Some(rules) {
            continue;
        }
        let _ = writeln!(s, "flush chain ip {t} {chain}");
        for rule in rules {
            let _ = writeln!(s, "add rule ip {t} {chain} {rule}");
        }
    }
    for ((map, key), verdict) in &previous.elements {
        if next.elements.get(&(*map, key.clone())) != Some(verdict) {
            let _ = writeln!(s, "delete element ip {t} {map} {{ {key} }}");
        }
    }
    for ((map, key), verdict) in &next.elements {
        if full || previous.elements.get(&(*map, key.clone())) != Some(verdict) {
            let _ = writeln!(s, "add element ip {t} {map} {}", element(map, key, verdict));
        }
    }
    // Chains and sets no longer wanted: emptied first (they may refer to each other), then deleted.
    let stale_chains: BTreeSet<&String> = if full {
        existing
            .chains
            .iter()
            .filter(|c| !next.chains.contains_key(*c))
            .collect()
    } else {
        previous
            .chains
            .keys()
            .filter(|c| !next.chains.contains_key(*c))
            .collect()
    };
    for chain in &stale_chains {
        let _ = writeln!(s, "flush chain ip {t} {chain}");
    }
    for chain in &stale_chains {
        let _ = writeln!(s, "delete chain ip {t} {chain}");
    }
    let stale_sets: BTreeSet<&String> = if full {
        existing
            .sets
            .iter()
            .filter(|c| !next.sets.contains_key(*c))
            .collect()
    } else {
        previous
            .sets
            .keys()
            .filter(|c| !next.sets.contains_key(*c))
            .collect()
    };
    for set in stale_sets {
        let _ = writeln!(s, "delete set ip {t} {set}");
    }
    s
}

/// The proxy's chains and sets that exist in the kernel, from `nft list table`'s output.
#[derive(Debug, Default)]
pub struct Existing {
    pub chains: BTreeSet<String>,
    pub sets: BTreeSet<String>,
}

impl Existing {
    pub fn parse(listing: &str) -> Existing {
        let mut out = Existing::default();
        for line in listing.lines() {
            let mut words = line.split_whitespace();
            match (words.next(), words.next()) {
                (Some("chain"), Some(name))
                    if CHAIN_PREFIXES.iter().any(|p| name.starts_with(p))
                        && !FIXED_CHAINS.contains(&name) =>
                {
                    out.chains.insert(name.to_string());
                }
                (Some("set"), Some(name)) if name.starts_with(SET_PREFIX) => {
                    out.sets.insert(name.to_string());
                }
                _ => {}
            }
        }
        out
    }
}

/// Removes everything the proxy made from bonsai's table, leaving the rest of the table alone.
pub fn removal_script(existing: &Existing) -> String {
    let t = TABLE;
    let mut s = declarations();
    for chain in FIXED_CHAINS
        .iter()
        .map(|c| c.to_string())
        .chain(existing.chains.iter().cloned())
    {
        let _ = writeln!(s, "flush chain ip {t} {chain}");
    }
    for map in MAPS {
        let _ = writeln!(s, "delete map ip {t} {map}");
    }
    let _ = writeln!(s, "delete set ip {t} {CLUSTER_IPS_SET}");
    for chain in FIXED_CHAINS
        .iter()
        .map(|c| c.to_string())
        .chain(existing.chains.iter().cloned())
    {
        let _ = writeln!(s, "delete chain ip {t} {chain}");
    }
    for set in &existing.sets {
        let _ = writeln!(s, "delete set ip {t} {set}");
    }
    s
}

#[cfg(test)]
mod tests;
