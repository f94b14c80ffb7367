//! The scheduling framework's default plugins, as pure functions over a snapshot of nodes and pods: filters
//! that say why a node cannot take a pod (in kube-scheduler's words, which make up the `FailedScheduling`
//! message), and scores that rank the nodes that can.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{
    Node, NodeSelectorRequirement, NodeSelectorTerm, Pod, PodAffinityTerm, Taint, Toleration,
};

use crate::resources::{Amounts, allocatable, pod_requests};

/// A node with what is already placed on it.
#[derive(Debug)]
pub struct NodeInfo<'a> {
    pub node: &'a Node,
    pub pods: Vec<&'a Pod>,
    pub requested: Amounts,
    pub allocatable: Amounts,
}

impl<'a> NodeInfo<'a> {
    pub fn new(node: &'a Node, pods: Vec<&'a Pod>) -> NodeInfo<'a> {
        let mut requested = Amounts::new();
        for pod in &pods {
            for (k, v) in pod_requests(pod) {
                *requested.entry(k).or_default() += v;
            }
        }
        NodeInfo {
            allocatable: allocatable(node),
            node,
            pods,
            requested,
        }
    }

    pub fn name(&self) -> &str {
        self.node.metadata.name.as_deref().unwrap_or("")
    }

    fn labels(&self) -> Option<&BTreeMap<String, String>> {
        self.node.metadata.labels.as_ref()
    }
}

/// The taints a node effectively has: its own, plus the not-ready/unreachable ones its Ready condition implies
/// (what the node lifecycle controller would add).
fn taints(node: &Node) -> Vec<Taint> {
    let mut out: Vec<Taint> = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.status.clone());
    let implied = match ready.as_deref() {
        Some("False") => Some("node.kubernetes.io/not-ready"),
        Some("Unknown") => Some("node.kubernetes.io/unreachable"),
        _ => None,
    };
    if let Some(key) = implied
        && !out.iter().any(|t| t.key == key)
    {
        out.push(Taint {
            key: key.into(),
            effect: "NoSchedule".into(),
            ..Taint::default()
        });
    }
    out
}

pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    if let Some(effect) = toleration.effect.as_deref().filter(|e| !e.is_empty())
        && effect != taint.effect
    {
        return false;
    }
    match toleration.key.as_deref().filter(|k| !k.is_empty()) {
        None => toleration.operator.as_deref() == Some("Exists"),
        Some(key) if key != taint.key => false,
        Some(_) => match toleration.operator.as_deref().unwrap_or("Equal") {
            "Exists" => true,
            _ => toleration.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        },
    }
}

fn requirement_matches(r: &NodeSelectorRequirement, labels: Option<&BTreeMap<String, String>>) -> bool {
    let value = labels.and_then(|l| l.get(&r.key));
    let values = r.values.as_deref().unwrap_or_default();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.contains(v)),
        "NotIn" => value.is_none_or(|v| !values.contains(v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), Some(bound)) = (
                value.and_then(|v| v.parse::<i64>().ok()),
                values.first().and_then(|b| b.parse::<i64>().ok()),
            ) else {
                return false;
            };
            if r.operator == "Gt" { v > bound } else { v < bound }
        }
        _ => false,
    }
}

/// A node selector term: every match expression holds (match fields: `metadata.name` only).
fn term_matches(term: &NodeSelectorTerm, node: &NodeInfo) -> bool {
    let expressions = term
        .match_expressions
        .iter()
        .flatten()
        .all(|r| requirement_matches(r, node.labels()));
    let fields = term.match_fields.iter().flatten().all(|r| {
        let mut name = BTreeMap::new();
        name.insert("metadata.name".to_string(), node.name().to_string());
        requirement_matches(r, Some(&name))
    });
    let empty = term.match_expressions.as_ref().is_none_or(Vec::is_empty)
        && term.match_fields.as_ref().is_none_or(Vec::is_empty);
    !empty && expressions && fields
}

/// True when `pod` matches a pod affinity term's label selector (and namespaces: its own by default).
fn term_selects(term: &PodAffinityTerm, owner: &Pod, other: &Pod) -> bool {
    let namespaces = term
        .namespaces
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| owner.metadata.namespace.clone().into_iter().collect());
    let in_namespace = namespaces
        .iter()
        .any(|n| Some(n) == other.metadata.namespace.as_ref())
        || term.namespace_selector.is_some();
    in_namespace
        && term
            .label_selector
            .as_ref()
            .is_some_and(|s| controllers::work::label_selector_matches(s, other.metadata.labels.as_ref()))
}

/// Nodes sharing `node`'s value of `key` (its topology domain).
fn same_domain<'a>(key: &str, node: &NodeInfo, all: &'a [NodeInfo<'a>]) -> Vec<&'a NodeInfo<'a>> {
    let Some(value) = node.labels().and_then(|l| l.get(key)) else {
        return vec![];
    };
    all.iter()
        .filter(|n| n.labels().and_then(|l| l.get(key)) == Some(value))
        .collect()
}

/// Why `node` cannot take `pod` (kube-scheduler's reasons), or nothing when it can.
pub fn filter(pod: &Pod, node: &NodeInfo, all: &[NodeInfo]) -> Vec<String> {
    let mut reasons = Vec::new();
    let spec = pod.spec.clone().unwrap_or_default();
    let tolerations = spec.tolerations.clone().unwrap_or_default();
    // NodeUnschedulable (cordon).
    if node
        .node
        .spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false)
    {
        let cordon = Taint {
            key: "node.kubernetes.io/unschedulable".into(),
            effect: "NoSchedule".into(),
            ..Taint::default()
        };
        if !tolerations.iter().any(|t| tolerates(t, &cordon)) {
            reasons.push("node(s) were unschedulable".to_string());
        }
    }
    // TaintToleration: the first untolerated NoSchedule/NoExecute taint is named. The node lifecycle
    // controller's taint for a cordon is NodeUnschedulable's to report (kube-scheduler stops at that filter).
    let cordoned = node
        .node
        .spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false);
    if let Some(taint) = taints(node.node)
        .into_iter()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .filter(|t| !(cordoned && t.key == "node.kubernetes.io/unschedulable"))
        .find(|t| !tolerations.iter().any(|tol| tolerates(tol, t)))
    {
        reasons.push(format!(
            "node(s) had untolerated taint {{{}: {}}}",
            taint.key,
            taint.value.unwrap_or_default()
        ));
    }
    // NodeAffinity: nodeSelector and required node affinity.
    let selector_ok = spec
        .node_selector
        .as_ref()
        .is_none_or(|sel| controllers::work::selects(sel, node.labels()));
    let affinity_ok = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| a.required_during_scheduling_ignored_during_execution.as_ref())
        .is_none_or(|required| required.node_selector_terms.iter().any(|t| term_matches(t, node)));
    if !selector_ok || !affinity_ok {
        reasons.push("node(s) didn't match Pod's node affinity/selector".to_string());
    }
    // NodeResourcesFit.
    let requests = pod_requests(pod);
    let max_pods = node.allocatable.get("pods").copied().unwrap_or(110_000);
    if (node.pods.len() as i128 + 1) * 1000 > max_pods {
        reasons.push("Too many pods".to_string());
    }
    for (resource, amount) in &requests {
        if *amount <= 0 {
            continue;
        }
        let free = node.allocatable.get(resource).copied().unwrap_or(0)
            - node.requested.get(resource).copied().unwrap_or(0);
        if *amount > free {
            reasons.push(format!("Insufficient {resource}"));
        }
    }
    // NodePorts.
    let wanted: BTreeSet<(String, String, i32)> = host_ports(pod);
    if !wanted.is_empty() {
        let used: BTreeSet<(String, String, i32)> = node.pods.iter().flat_map(|p| host_ports(p)).collect();
        let clash = wanted.iter().any(|(ip, proto, port)| {
            used.iter().any(|(uip, uproto, uport)| {
                uport == port && uproto == proto && (uip == ip || uip == "0.0.0.0" || ip == "0.0.0.0")
            })
        });
        if clash {
            reasons.push("node(s) didn't have free ports for the requested pod ports".to_string());
        }
    }
    // InterPodAffinity: required affinity and anti-affinity.
    let affinity = spec.affinity.as_ref();
    for term in affinity
        .and_then(|a| a.pod_affinity.as_ref())
        .and_then(|a| a.required_during_scheduling_ignored_during_execution.as_ref())
        .into_iter()
        .flatten()
    {
        let domain = same_domain(&term.topology_key, node, all);
        let satisfied = domain
            .iter()
            .any(|n| n.pods.iter().any(|p| term_selects(term, pod, p)));
        // A pod may be the first of a group that wants to be together (it matches its own term).
        let first_of_group = term_selects(term, pod, pod)
            && all
                .iter()
                .all(|n| n.pods.iter().all(|p| !term_selects(term, pod, p)));
        if !satisfied && !first_of_group {
            reasons.push("node(s) didn't match pod affinity rules".to_string());
            break;
        }
    }
    let anti_terms: Vec<&PodAffinityTerm> = affinity
        .and_then(|a| a.pod_anti_affinity.as_ref())
        .and_then(|a| a.required_during_scheduling_ignored_during_execution.as_ref())
        .into_iter()
        .flatten()
        .collect();
    let violates_own = anti_terms.iter().any(|term| {
        same_domain(&term.topology_key, node, all)
            .iter()
            .any(|n| n.pods.iter().any(|p| term_selects(term, pod, p)))
    });
    // Existing pods' anti-affinity against this pod counts too.
    let violates_theirs = all.iter().any(|n| {
        n.pods.iter().any(|existing| {
            existing
                .spec
                .as_ref()
                .and_then(|s| s.affinity.as_ref())
                .and_then(|a| a.pod_anti_affinity.as_ref())
                .and_then(|a| a.required_during_scheduling_ignored_during_execution.as_ref())
                .into_iter()
                .flatten()
                .any(|term| {
                    term_selects(term, existing, pod)
                        && same_domain(&term.topology_key, n, all)
                            .iter()
                            .any(|d| d.name() == node.name())
                })
        })
    });
    if violates_own || violates_theirs {
        reasons.push("node(s) didn't match pod anti-affinity rules".to_string());
    }
    reasons
}

fn host_ports(pod: &Pod) -> BTreeSet<(String, String, i32)> {
    pod.spec
        .iter()
        .flat_map(|s| s.containers.iter().chain(s.init_containers.iter().flatten()))
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let host = p.host_port.filter(|h| *h > 0)?;
            Some((
                p.host_ip
                    .clone()
                    .filter(|i| !i.is_empty())
                    .unwrap_or_else(|| "0.0.0.0".into()),
                p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                host,
            ))
        })
        .collect()
}

/// Scores in 0..=100 per plugin, summed: least allocated, balanced allocation, preferred node affinity, preferred
/// pod affinity, spreading pods of one owner, and image locality.
pub fn score(pod: &Pod, node: &NodeInfo, all: &[NodeInfo]) -> i64 {
    let requests = pod_requests(pod);
    // Kubernetes scores pods without requests as if they asked for 100m cpu and 200Mi memory.
    let ask = |r: &str, default: i128| requests.get(r).copied().filter(|v| *v > 0).unwrap_or(default);
    let fraction = |r: &str, default: i128| -> f64 {
        let capacity = node.allocatable.get(r).copied().unwrap_or(0);
        if capacity <= 0 {
            return 1.0;
        }
        let used = node.requested.get(r).copied().unwrap_or(0) + ask(r, default);
        (used as f64 / capacity as f64).min(1.0)
    };
    let cpu = fraction("cpu", 100);
    let memory = fraction("memory", 200 * 1024 * 1024 * 1000);
    let least_allocated = ((1.0 - cpu) * 50.0 + (1.0 - memory) * 50.0) as i64;
    let balanced = ((1.0 - (cpu - memory).abs()) * 100.0) as i64;
    let spec = pod.spec.clone().unwrap_or_default();
    let preferred_nodes: i64 = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| a.preferred_during_scheduling_ignored_during_execution.as_ref())
        .into_iter()
        .flatten()
        .filter(|p| term_matches(&p.preference, node))
        .map(|p| i64::from(p.weight))
        .sum();
    let preferred_pods: i64 = spec
        .affinity
        .as_ref()
        .and_then(|a| a.pod_affinity.as_ref())
        .and_then(|a| a.preferred_during_scheduling_ignored_during_execution.as_ref())
        .into_iter()
        .flatten()
        .filter(|w| {
            same_domain(&w.pod_affinity_term.topology_key, node, all)
                .iter()
                .any(|n| n.pods.iter().any(|p| term_selects(&w.pod_affinity_term, pod, p)))
        })
        .map(|w| i64::from(w.weight))
        .sum::<i64>()
        - spec
            .affinity
            .as_ref()
            .and_then(|a| a.pod_anti_affinity.as_ref())
            .and_then(|a| a.preferred_during_scheduling_ignored_during_execution.as_ref())
            .into_iter()
            .flatten()
            .filter(|w| {
                same_domain(&w.pod_affinity_term.topology_key, node, all)
                    .iter()
                    .any(|n| n.pods.iter().any(|p| term_selects(&w.pod_affinity_term, pod, p)))
            })
            .map(|w| i64::from(w.weight))
            .sum::<i64>();
    // Spreading: fewer pods of the same owner on the node is better.
    let owner = controllers::work::controller_of(&pod.metadata).map(|o| o.uid.clone());
    let siblings = owner.map_or(0, |uid| {
        node.pods
            .iter()
            .filter(|p| controllers::work::controller_of(&p.metadata).is_some_and(|o| o.uid == uid))
            .count()
    });
    let most_siblings = owner_counts(pod, all).max(1);
    let spread = 100 - (siblings as i64 * 100 / most_siblings as i64);
    // Image locality: the node already has the pod's images.
    let images: BTreeSet<&str> = node
        .node
        .status
        .iter()
        .flat_map(|s| s.images.iter().flatten())
        .flat_map(|i| i.names.iter().flatten())
        .map(String::as_str)
        .collect();
    let local_images = spec
        .containers
        .iter()
        .filter(|c| c.image.as_deref().is_some_and(|i| images.contains(i)))
        .count();
    let locality = if spec.containers.is_empty() {
        0
    } else {
        local_images as i64 * 100 / spec.containers.len() as i64
    };
    least_allocated + balanced + preferred_nodes + preferred_pods + spread * 2 + locality / 2
}

fn owner_counts(pod: &Pod, all: &[NodeInfo]) -> usize {
    let Some(uid) = controllers::work::controller_of(&pod.metadata).map(|o| o.uid.clone()) else {
        return 0;
    };
    all.iter()
        .map(|n| {
            n.pods
                .iter()
                .filter(|p| controllers::work::controller_of(&p.metadata).is_some_and(|o| o.uid == uid))
                .count()
        })
        .max()
        .unwrap_or(0)
}

/// kube-scheduler's message for a pod no node can take: `0/3 nodes are available: 1 Insufficient cpu, 2
/// node(s) had untolerated taint {…}. preemption: …`.
pub fn unschedulable_message(nodes: usize, reasons: &BTreeMap<String, usize>) -> String {
    if nodes == 0 {
        return "no nodes available to schedule pods".to_string();
    }
    let mut parts: Vec<String> = reasons
        .iter()
        .map(|(reason, count)| format!("{count} {reason}"))
        .collect();
    parts.sort();
    let listed = parts.join(", ");
    format!(
        "0/{nodes} nodes are available: {listed}. preemption: 0/{nodes} nodes are available: {nodes} Preemption is not helpful for scheduling."
    )
}

#[cfg(test)]
mod tests;
