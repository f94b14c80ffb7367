//! The ClusterRole aggregation controller (kube-controller-manager's `clusterrole-aggregation`): a ClusterRole
//! with an `aggregationRule` gets as its `rules` the rules of every other ClusterRole its selectors match, in name
//! order, each rule once, as `syncClusterRole` computes them.

use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use serde_json::json;
use tokio::sync::mpsc;

use crate::work::{self, Change};
use crate::{ControllerError, kube_error};

/// The rules an aggregated ClusterRole should have, from `roles` (all ClusterRoles).
pub fn aggregate(role: &ClusterRole, roles: &[std::sync::Arc<ClusterRole>]) -> Option<Vec<PolicyRule>> {
    let rule = role.aggregation_rule.as_ref()?;
    let mut sorted: Vec<&ClusterRole> = roles.iter().map(|r| &**r).collect();
    sorted.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let mut rules: Vec<PolicyRule> = Vec::new();
    for selector in rule.cluster_role_selectors.iter().flatten() {
        for other in &sorted {
            if other.metadata.name == role.metadata.name
                || !work::label_selector_matches(selector, other.metadata.labels.as_ref())
            {
                continue;
            }
            for r in other.rules.iter().flatten() {
                if !rules.contains(r) {
                    rules.push(r.clone());
                }
            }
        }
    }
    Some(rules)
}

struct Context {
    client: kube::Client,
    roles: Store<ClusterRole>,
}

impl Context {
    async fn reconcile(&self, name: String) -> Result<(), ControllerError> {
        let Some(role) = self.roles.get(&ObjectRef::new(&name)) else {
            return Ok(());
        };
        let Some(rules) = aggregate(&role, &self.roles.state()) else {
            return Ok(());
        };
        if role.rules.as_deref().unwrap_or_default() == rules.as_slice() {
            return Ok(());
        }
        let api: Api<ClusterRole> = Api::all(self.client.clone());
        api.patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"rules": rules})),
        )
        .await
        .map_err(kube_error(format!("aggregating the rules of ClusterRole {name}")))?;
        Ok(())
    }
}

/// Runs the controller until its watch ends.
pub async fn run(client: kube::Client) {
    let (tx, rx) = mpsc::unbounded_channel();
    let roles = work::reflect(Api::<ClusterRole>::all(client.clone()), tx);
    let context = Context {
        client,
        roles: roles.clone(),
    };
    let aggregated = {
        let roles = roles.clone();
        move || -> Vec<String> {
            roles
                .state()
                .iter()
                .filter(|r| r.aggregation_rule.is_some())
                .filter_map(|r| r.metadata.name.clone())
                .collect()
        }
    };
    // Any change to any ClusterRole may change what an aggregated one selects: all of them are looked at again.
    let keys_of = {
        let aggregated = aggregated.clone();
        move |_: Change<ClusterRole>| aggregated()
    };
    let ready = move || work::ready(&roles);
    work::run_queue(
        "clusterrole_aggregation",
        rx,
        keys_of,
        aggregated,
        ready,
        |name| context.reconcile(name),
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn role(value: serde_json::Value) -> Arc<ClusterRole> {
        Arc::new(serde_json::from_value(value).unwrap())
    }

    #[test]
    fn aggregated_roles_get_the_selected_rules_in_name_order_once() {
        let view = role(json!({"metadata": {"name": "view"},
            "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"agg": "view"}}]}}));
        let pods = json!({"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]});
        let svcs = json!({"verbs": ["get"], "apiGroups": [""], "resources": ["services"]});
        let roles = vec![
            view.clone(),
            role(json!({"metadata": {"name": "z", "labels": {"agg": "view"}}, "rules": [svcs, pods]})),
            role(json!({"metadata": {"name": "a", "labels": {"agg": "view"}}, "rules": [pods]})),
            role(
                json!({"metadata": {"name": "other"}, "rules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}]}),
            ),
        ];
        let rules = aggregate(&view, &roles).unwrap();
        assert_eq!(serde_json::to_value(rules).unwrap(), json!([pods, svcs]));
        assert!(aggregate(&roles[1], &roles).is_none());
    }
}
