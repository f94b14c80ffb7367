//! The bootstrap policy (plugin/pkg/auth/authorizer/rbac/bootstrappolicy): the ClusterRoles and
//! ClusterRoleBindings every cluster has, labelled `kubernetes.io/bootstrapping: rbac-defaults` and annotated
//! `rbac.authorization.kubernetes.io/autoupdate: "true"`, reconciled at every start (`reconcile_*`: missing
//! objects created, missing rules, subjects, labels, annotations and aggregation selectors added, unless the
//! object is annotated `autoupdate: "false"`).

use serde_json::{Value, json};

pub const AUTO_UPDATE: &str = "rbac.authorization.kubernetes.io/autoupdate";

const READ: &[&str] = &["get", "list", "watch"];
const WRITE: &[&str] = &["create", "update", "patch", "delete", "deletecollection"];
const READ_WRITE: &[&str] = &[
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
];
const READ_UPDATE: &[&str] = &["get", "list", "watch", "update", "patch"];

fn rule(verbs: &[&str], groups: &[&str], resources: &[&str]) -> Value {
    json!({"verbs": verbs, "apiGroups": groups, "resources": resources})
}

fn named(verbs: &[&str], groups: &[&str], resources: &[&str], names: &[&str]) -> Value {
    json!({"verbs": verbs, "apiGroups": groups, "resources": resources, "resourceNames": names})
}

fn urls(verbs: &[&str], urls: &[&str]) -> Value {
    json!({"verbs": verbs, "nonResourceURLs": urls})
}

/// `eventsRule()`: events in both groups.
fn events() -> Value {
    rule(
        &["create", "update", "patch"],
        &["", "events.k8s.io"],
        &["events"],
    )
}

/// `NodeRules()`: what `system:node` grants; the Node authorizer grants these to kubelets, limited to their own
/// objects.
pub fn node_rules() -> Vec<Value> {
    vec![
        rule(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
        rule(
            &["create"],
            &["authorization.k8s.io"],
            &["subjectaccessreviews", "localsubjectaccessreviews"],
        ),
        rule(READ, &[""], &["services"]),
        rule(&["create", "get", "list", "watch"], &[""], &["nodes"]),
        rule(&["update", "patch"], &[""], &["nodes/status"]),
        rule(&["update", "patch"], &[""], &["nodes"]),
        rule(&["create", "update", "patch"], &[""], &["events"]),
        rule(READ, &[""], &["pods"]),
        rule(&["create", "delete"], &[""], &["pods"]),
        rule(&["update", "patch"], &[""], &["pods/status"]),
        rule(&["create"], &[""], &["pods/eviction"]),
        rule(&["get", "list", "watch"], &[""], &["secrets", "configmaps"]),
        rule(&["get"], &[""], &["persistentvolumeclaims", "persistentvolumes"]),
        rule(&["get"], &[""], &["endpoints"]),
        rule(
            &["create", "get", "list", "watch"],
            &["certificates.k8s.io"],
            &["certificatesigningrequests"],
        ),
        rule(
            &["get", "create", "update", "patch", "delete"],
            &["coordination.k8s.io"],
            &["leases"],
        ),
        rule(&["get"], &["storage.k8s.io"], &["volumeattachments"]),
        rule(&["create"], &[""], &["serviceaccounts/token"]),
        rule(
            &["get", "update", "patch"],
            &[""],
            &["persistentvolumeclaims/status"],
        ),
        rule(&["get", "watch", "list"], &["storage.k8s.io"], &["csidrivers"]),
        rule(
            &["get", "create", "update", "patch", "delete"],
            &["storage.k8s.io"],
            &["csinodes"],
        ),
        rule(&["get", "list", "watch"], &["node.k8s.io"], &["runtimeclasses"]),
    ]
}

fn aggregated(name: &str, labels: Value, selects: &str) -> Value {
    json!({
        "metadata": {"name": name, "labels": labels},
        "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {selects: "true"}}]},
    })
}

fn role(name: &str, labels: Value, rules: Vec<Value>) -> Value {
    json!({"metadata": {"name": name, "labels": labels}, "rules": rules})
}

/// `ClusterRoles()`.
pub fn cluster_roles() -> Vec<Value> {
    let none = json!({});
    let to = |what: &str| json!({format!("rbac.authorization.k8s.io/aggregate-to-{what}"): "true"});
    let mut roles = vec![
        role(
            "cluster-admin",
            none.clone(),
            vec![rule(&["*"], &["*"], &["*"]), urls(&["*"], &["*"])],
        ),
        role(
            "system:discovery",
            none.clone(),
            vec![urls(
                &["get"],
                &[
                    "/livez",
                    "/readyz",
                    "/healthz",
                    "/version",
                    "/version/",
                    "/openapi",
                    "/openapi/*",
                    "/api",
                    "/api/*",
                    "/apis",
                    "/apis/*",
                ],
            )],
        ),
        role(
            "system:monitoring",
            none.clone(),
            vec![urls(
                &["get"],
                &[
                    "/metrics",
                    "/metrics/slis",
                    "/livez",
                    "/readyz",
                    "/healthz",
                    "/livez/*",
                    "/readyz/*",
                    "/healthz/*",
                ],
            )],
        ),
        role(
            "system:basic-user",
            none.clone(),
            vec![
                rule(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                ),
                rule(&["create"], &["authentication.k8s.io"], &["selfsubjectreviews"]),
            ],
        ),
        role(
            "system:public-info-viewer",
            none.clone(),
            vec![urls(
                &["get"],
                &["/livez", "/readyz", "/healthz", "/version", "/version/"],
            )],
        ),
        aggregated(
            "admin",
            none.clone(),
            "rbac.authorization.k8s.io/aggregate-to-admin",
        ),
        aggregated("edit", to("admin"), "rbac.authorization.k8s.io/aggregate-to-edit"),
        aggregated("view", to("edit"), "rbac.authorization.k8s.io/aggregate-to-view"),
        role(
            "system:aggregate-to-admin",
            to("admin"),
            vec![
                rule(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["localsubjectaccessreviews"],
                ),
                rule(
                    READ_WRITE,
                    &["rbac.authorization.k8s.io"],
                    &["roles", "rolebindings"],
                ),
            ],
        ),
        role(
            "system:aggregate-to-edit",
            to("edit"),
            vec![
                rule(
                    READ,
                    &[""],
                    &[
                        "pods/attach",
                        "pods/proxy",
                        "pods/exec",
                        "pods/portforward",
                        "secrets",
                        "services/proxy",
                    ],
                ),
                rule(&["impersonate"], &[""], &["serviceaccounts"]),
                rule(
                    WRITE,
                    &[""],
                    &[
                        "pods",
                        "pods/attach",
                        "pods/proxy",
                        "pods/exec",
                        "pods/portforward",
                    ],
                ),
                rule(&["create"], &[""], &["pods/eviction"]),
                rule(
                    WRITE,
                    &[""],
                    &[
                        "replicationcontrollers",
                        "replicationcontrollers/scale",
                        "serviceaccounts",
                        "services",
                        "services/proxy",
                        "persistentvolumeclaims",
                        "configmaps",
                        "secrets",
                        "events",
                    ],
                ),
                rule(&["create"], &[""], &["serviceaccounts/token"]),
                rule(
                    WRITE,
                    &["apps"],
                    &[
                        "statefulsets",
                        "statefulsets/scale",
                        "daemonsets",
                        "deployments",
                        "deployments/scale",
                        "deployments/rollback",
                        "replicasets",
                        "replicasets/scale",
                    ],
                ),
                rule(WRITE, &["autoscaling"], &["horizontalpodautoscalers"]),
                rule(WRITE, &["batch"], &["jobs", "cronjobs"]),
                rule(
                    WRITE,
                    &["extensions"],
                    &[
                        "daemonsets",
                        "deployments",
                        "deployments/scale",
                        "deployments/rollback",
                        "ingresses",
                        "replicasets",
                        "replicasets/scale",
                        "replicationcontrollers/scale",
                        "networkpolicies",
                    ],
                ),
                rule(WRITE, &["policy"], &["poddisruptionbudgets"]),
                rule(WRITE, &["networking.k8s.io"], &["networkpolicies", "ingresses"]),
            ],
        ),
        role(
            "system:aggregate-to-view",
            to("view"),
            vec![
                rule(
                    READ,
                    &[""],
                    &[
                        "pods",
                        "replicationcontrollers",
                        "replicationcontrollers/scale",
                        "serviceaccounts",
                        "services",
                        "services/status",
                        "endpoints",
                        "persistentvolumeclaims",
                        "persistentvolumeclaims/status",
                        "configmaps",
                    ],
                ),
                rule(
                    READ,
                    &[""],
                    &[
                        "limitranges",
                        "resourcequotas",
                        "bindings",
                        "events",
                        "pods/status",
                        "resourcequotas/status",
                        "namespaces/status",
                        "replicationcontrollers/status",
                        "pods/log",
                    ],
                ),
                rule(READ, &[""], &["namespaces"]),
                rule(READ, &["discovery.k8s.io"], &["endpointslices"]),
                rule(
                    READ,
                    &["apps"],
                    &[
                        "controllerrevisions",
                        "statefulsets",
                        "statefulsets/status",
                        "statefulsets/scale",
                        "daemonsets",
                        "daemonsets/status",
                        "deployments",
                        "deployments/status",
                        "deployments/scale",
                        "replicasets",
                        "replicasets/status",
                        "replicasets/scale",
                    ],
                ),
                rule(
                    READ,
                    &["autoscaling"],
                    &["horizontalpodautoscalers", "horizontalpodautoscalers/status"],
                ),
                rule(
                    READ,
                    &["batch"],
                    &["jobs", "cronjobs", "cronjobs/status", "jobs/status"],
                ),
                rule(
                    READ,
                    &["extensions"],
                    &[
                        "daemonsets",
                        "daemonsets/status",
                        "deployments",
                        "deployments/scale",
                        "deployments/status",
                        "ingresses",
                        "ingresses/status",
                        "replicasets",
                        "replicasets/scale",
                        "replicasets/status",
                        "replicationcontrollers/scale",
                        "networkpolicies",
                    ],
                ),
                rule(
                    READ,
                    &["policy"],
                    &["poddisruptionbudgets", "poddisruptionbudgets/status"],
                ),
                rule(
                    READ,
                    &["networking.k8s.io"],
                    &["networkpolicies", "ingresses", "ingresses/status"],
                ),
            ],
        ),
        role("system:node", none.clone(), node_rules()),
        role(
            "system:node-bootstrapper",
            none.clone(),
            vec![rule(
                &["create", "get", "list", "watch"],
                &["certificates.k8s.io"],
                &["certificatesigningrequests"],
            )],
        ),
        role(
            "system:auth-delegator",
            none.clone(),
            vec![
                rule(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
                rule(&["create"], &["authorization.k8s.io"], &["subjectaccessreviews"]),
            ],
        ),
        role(
            "system:kube-controller-manager",
            none.clone(),
            vec![
                events(),
                rule(&["create"], &["coordination.k8s.io"], &["leases"]),
                named(
                    &["get", "update"],
                    &["coordination.k8s.io"],
                    &["leases"],
                    &["kube-controller-manager"],
                ),
                rule(&["create"], &[""], &["secrets", "serviceaccounts"]),
                rule(&["delete"], &[""], &["secrets"]),
                rule(
                    &["get"],
                    &[""],
                    &["namespaces", "secrets", "serviceaccounts", "configmaps"],
                ),
                rule(&["update"], &[""], &["secrets", "serviceaccounts"]),
                rule(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
                rule(&["create"], &["authorization.k8s.io"], &["subjectaccessreviews"]),
                rule(&["list", "watch"], &["*"], &["*"]),
                rule(&["create"], &[""], &["serviceaccounts/token"]),
            ],
        ),
        role(
            "system:kube-dns",
            none.clone(),
            vec![rule(&["list", "watch"], &[""], &["endpoints", "services"])],
        ),
        role(
            "system:persistent-volume-provisioner",
            none.clone(),
            vec![
                rule(
                    &["get", "list", "watch", "create", "delete"],
                    &[""],
                    &["persistentvolumes"],
                ),
                rule(
                    &["get", "list", "watch", "update"],
                    &[""],
                    &["persistentvolumeclaims"],
                ),
                rule(READ, &["storage.k8s.io"], &["storageclasses"]),
                rule(&["watch"], &[""], &["events"]),
                events(),
            ],
        ),
        role(
            "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
            none.clone(),
            vec![rule(
                &["create"],
                &["certificates.k8s.io"],
                &["certificatesigningrequests/nodeclient"],
            )],
        ),
        role(
            "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
            none.clone(),
            vec![rule(
                &["create"],
                &["certificates.k8s.io"],
                &["certificatesigningrequests/selfnodeclient"],
            )],
        ),
        role(
            "system:volume-scheduler",
            none.clone(),
            vec![
                rule(READ_UPDATE, &[""], &["persistentvolumes"]),
                rule(READ, &["storage.k8s.io"], &["storageclasses"]),
                rule(READ_UPDATE, &[""], &["persistentvolumeclaims"]),
            ],
        ),
        role(
            "system:service-account-issuer-discovery",
            none.clone(),
            vec![urls(
                &["get"],
                &["/.well-known/openid-configuration", "/openid/v1/jwks"],
            )],
        ),
        // What bonsai's node agent does beside the kubelet's job, where k3s uses its `system:k3s-controller`
        // identity: the service proxy and the overlay (kube-proxy's and flannel's reads), the node's cluster DNS
        // (its EndpointSlice `kube-system/kube-dns-<node>`), the local-path provisioner (volumes of the node's
        // claims), and the cluster settings it starts from (`kube-public/bonsai-config`).
        role(
            "system:bonsai-node-agent",
            none.clone(),
            vec![
                rule(READ, &[""], &["services", "endpoints", "namespaces"]),
                // Every node's overlay address (list and watch; a node still gets only its own Node by name).
                rule(&["list", "watch"], &[""], &["nodes"]),
                rule(
                    &["get", "list", "watch", "create", "update", "patch", "delete"],
                    &["discovery.k8s.io"],
                    &["endpointslices"],
                ),
                rule(
                    &["get", "list", "watch", "create", "update", "patch", "delete"],
                    &[""],
                    &["persistentvolumes"],
                ),
                rule(READ_UPDATE, &[""], &["persistentvolumeclaims"]),
                rule(READ, &["storage.k8s.io"], &["storageclasses"]),
                events(),
                named(
                    &["get", "list", "watch"],
                    &[""],
                    &["configmaps"],
                    &["bonsai-config"],
                ),
            ],
        ),
        role(
            "system:node-proxier",
            none.clone(),
            vec![
                rule(&["list", "watch"], &[""], &["services", "endpoints"]),
                rule(&["get", "list", "watch"], &[""], &["nodes"]),
                events(),
                rule(&["list", "watch"], &["discovery.k8s.io"], &["endpointslices"]),
            ],
        ),
        role(
            "system:kube-scheduler",
            none,
            vec![
                events(),
                rule(&["create"], &["coordination.k8s.io"], &["leases"]),
                named(
                    &["get", "update"],
                    &["coordination.k8s.io"],
                    &["leases"],
                    &["kube-scheduler"],
                ),
                rule(READ, &[""], &["nodes"]),
                rule(&["get", "list", "watch", "delete"], &[""], &["pods"]),
                rule(&["create"], &[""], &["pods/binding", "bindings"]),
                rule(&["patch", "update"], &[""], &["pods/status"]),
                rule(READ, &[""], &["services", "replicationcontrollers"]),
                rule(READ, &["apps", "extensions"], &["replicasets"]),
                rule(READ, &["apps"], &["statefulsets"]),
                rule(READ, &["policy"], &["poddisruptionbudgets"]),
                rule(READ, &[""], &["persistentvolumeclaims", "persistentvolumes"]),
                rule(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
                rule(&["create"], &["authorization.k8s.io"], &["subjectaccessreviews"]),
                rule(READ, &["storage.k8s.io"], &["csinodes"]),
                rule(READ, &[""], &["namespaces"]),
                rule(READ, &["storage.k8s.io"], &["csidrivers"]),
                rule(READ, &["storage.k8s.io"], &["csistoragecapacities"]),
            ],
        ),
    ];
    roles.extend(controller_roles());
    for role in &mut roles {
        add_default_metadata(role);
    }
    roles
}

const SA_ROLE_PREFIX: &str = "system:controller:";

/// The ServiceAccount names (in `kube-system`) of the controllers that run with credentials of their own, as
/// kube-controller-manager's `--use-service-account-credentials` does; each is bound to
/// `system:controller:<name>`.
pub fn controller_role_names() -> Vec<String> {
    controller_roles()
        .iter()
        .filter_map(|role| role.pointer("/metadata/name").and_then(Value::as_str))
        .filter_map(|name| name.strip_prefix(SA_ROLE_PREFIX))
        .map(str::to_string)
        .collect()
}

/// `buildControllerRoles()` (controller_policy.go, without the roles of feature-gated alpha/beta controllers),
/// plus the roles of controllers bonsai runs that kube-controller-manager lacks (k3s runs them itself).
fn controller_roles() -> Vec<Value> {
    const LEGACY: &str = "";
    const APPS: &str = "apps";
    const EXTENSIONS: &str = "extensions";
    const BATCH: &str = "batch";
    const STORAGE: &str = "storage.k8s.io";
    const CERTIFICATES: &str = "certificates.k8s.io";
    let none = json!({});
    let controller =
        |name: &str, rules: Vec<Value>| role(&format!("{SA_ROLE_PREFIX}{name}"), none.clone(), rules);
    vec![
        controller(
            "attachdetach-controller",
            vec![
                rule(
                    &["list", "watch"],
                    &[LEGACY],
                    &["persistentvolumes", "persistentvolumeclaims"],
                ),
                rule(&["get", "list", "watch"], &[LEGACY], &["nodes"]),
                rule(&["patch", "update"], &[LEGACY], &["nodes/status"]),
                rule(&["list", "watch"], &[LEGACY], &["pods"]),
                events(),
                rule(
                    &["get", "create", "delete", "list", "watch"],
                    &[STORAGE],
                    &["volumeattachments"],
                ),
                rule(&["get", "watch", "list"], &[STORAGE], &["csidrivers"]),
                rule(&["get", "watch", "list"], &[STORAGE], &["csinodes"]),
            ],
        ),
        controller(
            "clusterrole-aggregation-controller",
            vec![rule(
                &["escalate", "get", "list", "watch", "update", "patch"],
                &["rbac.authorization.k8s.io"],
                &["clusterroles"],
            )],
        ),
        controller(
            "cronjob-controller",
            vec![
                rule(&["get", "list", "watch", "update"], &[BATCH], &["cronjobs"]),
                rule(
                    &["get", "list", "watch", "create", "update", "delete", "patch"],
                    &[BATCH],
                    &["jobs"],
                ),
                rule(&["update"], &[BATCH], &["cronjobs/status"]),
                rule(&["update"], &[BATCH], &["cronjobs/finalizers"]),
                rule(&["list", "watch", "delete"], &[LEGACY], &["pods"]),
                events(),
            ],
        ),
        controller(
            "daemon-set-controller",
            vec![
                rule(READ, &[EXTENSIONS, APPS], &["daemonsets"]),
                rule(&["update"], &[EXTENSIONS, APPS], &["daemonsets/status"]),
                rule(&["update"], &[EXTENSIONS, APPS], &["daemonsets/finalizers"]),
                rule(&["list", "watch"], &[LEGACY], &["nodes"]),
                rule(
                    &["list", "watch", "create", "delete", "patch"],
                    &[LEGACY],
                    &["pods"],
                ),
                rule(&["create"], &[LEGACY], &["pods/binding"]),
                rule(
                    &["get", "list", "watch", "create", "delete", "update", "patch"],
                    &[APPS],
                    &["controllerrevisions"],
                ),
                events(),
            ],
        ),
        controller(
            "deployment-controller",
            vec![
                rule(
                    &["get", "list", "watch", "update"],
                    &[EXTENSIONS, APPS],
                    &["deployments"],
                ),
                rule(&["update"], &[EXTENSIONS, APPS], &["deployments/status"]),
                rule(&["update"], &[EXTENSIONS, APPS], &["deployments/finalizers"]),
                rule(
                    &["get", "list", "watch", "create", "update", "patch", "delete"],
                    &[APPS, EXTENSIONS],
                    &["replicasets"],
                ),
                rule(&["get", "list", "watch", "update"], &[LEGACY], &["pods"]),
                events(),
            ],
        ),
        controller(
            "disruption-controller",
            vec![
                rule(READ, &[EXTENSIONS, APPS], &["deployments"]),
                rule(READ, &[APPS, EXTENSIONS], &["replicasets"]),
                rule(READ, &[LEGACY], &["replicationcontrollers"]),
                rule(READ, &["policy"], &["poddisruptionbudgets"]),
                rule(READ, &[APPS], &["statefulsets"]),
                rule(&["update"], &["policy"], &["poddisruptionbudgets/status"]),
                rule(&["patch", "update"], &[LEGACY], &["pods/status"]),
                rule(&["get"], &["*"], &["*/scale"]),
                events(),
            ],
        ),
        controller(
            "endpoint-controller",
            vec![
                rule(READ, &[LEGACY], &["services", "pods"]),
                rule(
                    &["get", "list", "watch", "create", "update", "delete"],
                    &[LEGACY],
                    &["endpoints"],
                ),
                rule(&["create"], &[LEGACY], &["endpoints/restricted"]),
                events(),
            ],
        ),
        controller(
            "endpointslice-controller",
            vec![
                rule(READ, &[LEGACY], &["services", "pods", "nodes"]),
                rule(&["update"], &[LEGACY], &["services/finalizers"]),
                rule(
                    &["get", "list", "watch", "create", "update", "delete"],
                    &["discovery.k8s.io"],
                    &["endpointslices"],
                ),
                events(),
            ],
        ),
        controller(
            "endpointslicemirroring-controller",
            vec![
                rule(READ, &[LEGACY], &["services", "endpoints"]),
                rule(&["update"], &[LEGACY], &["services/finalizers"]),
                rule(&["update"], &[LEGACY], &["endpoints/finalizers"]),
                rule(
                    &["get", "list", "watch", "create", "update", "delete"],
                    &["discovery.k8s.io"],
                    &["endpointslices"],
                ),
                events(),
            ],
        ),
        controller(
            "expand-controller",
            vec![
                rule(
                    &["get", "list", "watch", "update", "patch"],
                    &[LEGACY],
                    &["persistentvolumes"],
                ),
                rule(
                    &["update", "patch"],
                    &[LEGACY],
                    &["persistentvolumeclaims/status"],
                ),
                rule(READ, &[LEGACY], &["persistentvolumeclaims"]),
                events(),
                rule(&["get"], &[LEGACY], &["services"]),
            ],
        ),
        controller(
            "ephemeral-volume-controller",
            vec![
                rule(READ, &[LEGACY], &["pods"]),
                rule(&["update"], &[LEGACY], &["pods/finalizers"]),
                rule(
                    &["get", "list", "watch", "create"],
                    &[LEGACY],
                    &["persistentvolumeclaims"],
                ),
                events(),
            ],
        ),
        controller(
            "generic-garbage-collector",
            vec![
                rule(
                    &["get", "list", "watch", "patch", "update", "delete"],
                    &["*"],
                    &["*"],
                ),
                events(),
            ],
        ),
        controller(
            "horizontal-pod-autoscaler",
            vec![
                rule(READ, &["autoscaling"], &["horizontalpodautoscalers"]),
                rule(
                    &["update"],
                    &["autoscaling"],
                    &["horizontalpodautoscalers/status"],
                ),
                rule(&["get", "update"], &["*"], &["*/scale"]),
                rule(&["list", "watch"], &[LEGACY], &["pods"]),
                rule(&["list", "watch"], &["metrics.k8s.io"], &["pods"]),
                rule(READ, &["custom.metrics.k8s.io"], &["*"]),
                rule(READ, &["external.metrics.k8s.io"], &["*"]),
                events(),
            ],
        ),
        controller(
            "job-controller",
            vec![
                rule(&["get", "list", "watch", "update", "patch"], &[BATCH], &["jobs"]),
                rule(&["update"], &[BATCH], &["jobs/status"]),
                rule(&["update"], &[BATCH], &["jobs/finalizers"]),
                rule(
                    &["list", "watch", "create", "delete", "patch"],
                    &[LEGACY],
                    &["pods"],
                ),
                events(),
            ],
        ),
        controller(
            "namespace-controller",
            vec![
                rule(&["get", "list", "watch", "delete"], &[LEGACY], &["namespaces"]),
                rule(
                    &["update"],
                    &[LEGACY],
                    &["namespaces/finalize", "namespaces/status"],
                ),
                rule(
                    &["get", "list", "watch", "delete", "deletecollection"],
                    &["*"],
                    &["*"],
                ),
            ],
        ),
        controller(
            "node-controller",
            vec![
                rule(
                    &["get", "list", "watch", "update", "delete", "patch"],
                    &[LEGACY],
                    &["nodes"],
                ),
                rule(&["patch", "update"], &[LEGACY], &["nodes/status"]),
                rule(&["patch", "update"], &[LEGACY], &["pods/status"]),
                rule(&["list", "watch", "get", "delete"], &[LEGACY], &["pods"]),
                events(),
            ],
        ),
        controller(
            "persistent-volume-binder",
            vec![
                rule(
                    &["get", "list", "watch", "update", "create", "delete"],
                    &[LEGACY],
                    &["persistentvolumes"],
                ),
                rule(&["update"], &[LEGACY], &["persistentvolumes/status"]),
                rule(
                    &["get", "list", "watch", "update"],
                    &[LEGACY],
                    &["persistentvolumeclaims"],
                ),
                rule(&["update"], &[LEGACY], &["persistentvolumeclaims/status"]),
                rule(
                    &["list", "watch", "get", "create", "delete"],
                    &[LEGACY],
                    &["pods"],
                ),
                rule(READ, &[STORAGE], &["storageclasses"]),
                rule(&["list", "watch"], &[LEGACY], &["nodes"]),
                events(),
                rule(&["watch"], &[LEGACY], &["events"]),
                rule(&["get"], &[LEGACY], &["services"]),
            ],
        ),
        controller(
            "pod-garbage-collector",
            vec![
                rule(&["list", "watch", "delete"], &[LEGACY], &["pods"]),
                rule(READ, &[LEGACY], &["nodes"]),
                rule(&["patch"], &[LEGACY], &["pods/status"]),
            ],
        ),
        controller(
            "replicaset-controller",
            vec![
                rule(
                    &["get", "list", "watch", "update"],
                    &[APPS, EXTENSIONS],
                    &["replicasets"],
                ),
                rule(&["update"], &[APPS, EXTENSIONS], &["replicasets/status"]),
                rule(&["update"], &[APPS, EXTENSIONS], &["replicasets/finalizers"]),
                rule(
                    &["list", "watch", "patch", "create", "delete"],
                    &[LEGACY],
                    &["pods"],
                ),
                events(),
            ],
        ),
        controller(
            "replication-controller",
            vec![
                rule(
                    &["get", "list", "watch", "update"],
                    &[LEGACY],
                    &["replicationcontrollers"],
                ),
                rule(&["update"], &[LEGACY], &["replicationcontrollers/status"]),
                rule(&["update"], &[LEGACY], &["replicationcontrollers/finalizers"]),
                rule(
                    &["list", "watch", "patch", "create", "delete"],
                    &[LEGACY],
                    &["pods"],
                ),
                events(),
            ],
        ),
        controller(
            "resourcequota-controller",
            vec![
                rule(&["list", "watch"], &["*"], &["*"]),
                rule(&["update"], &[LEGACY], &["resourcequotas/status"]),
                events(),
            ],
        ),
        controller(
            "route-controller",
            vec![
                rule(&["list", "watch"], &[LEGACY], &["nodes"]),
                rule(&["patch"], &[LEGACY], &["nodes/status"]),
                events(),
            ],
        ),
        controller(
            "service-account-controller",
            vec![rule(&["create"], &[LEGACY], &["serviceaccounts"]), events()],
        ),
        controller(
            "service-controller",
            vec![
                rule(READ, &[LEGACY], &["services"]),
                rule(&["patch", "update"], &[LEGACY], &["services/status"]),
                rule(&["list", "watch"], &[LEGACY], &["nodes"]),
                events(),
            ],
        ),
        controller(
            "statefulset-controller",
            vec![
                rule(&["list", "watch"], &[LEGACY], &["pods"]),
                rule(READ, &[APPS], &["statefulsets"]),
                rule(&["update"], &[APPS], &["statefulsets/status"]),
                rule(&["update"], &[APPS], &["statefulsets/finalizers"]),
                rule(
                    &["get", "create", "delete", "update", "patch"],
                    &[LEGACY],
                    &["pods"],
                ),
                rule(
                    &["get", "create", "delete", "update", "patch", "list", "watch"],
                    &[APPS],
                    &["controllerrevisions"],
                ),
                rule(
                    &["get", "create", "list", "watch"],
                    &[LEGACY],
                    &["persistentvolumeclaims"],
                ),
                rule(&["update", "delete"], &[LEGACY], &["persistentvolumeclaims"]),
                rule(&["update"], &[LEGACY], &["pods/finalizers"]),
                events(),
            ],
        ),
        controller(
            "ttl-controller",
            vec![
                rule(&["update", "patch", "list", "watch"], &[LEGACY], &["nodes"]),
                events(),
            ],
        ),
        controller(
            "certificate-controller",
            vec![
                rule(
                    &["get", "list", "watch", "delete"],
                    &[CERTIFICATES],
                    &["certificatesigningrequests"],
                ),
                rule(
                    &["update"],
                    &[CERTIFICATES],
                    &[
                        "certificatesigningrequests/status",
                        "certificatesigningrequests/approval",
                    ],
                ),
                named(
                    &["approve"],
                    &[CERTIFICATES],
                    &["signers"],
                    &["kubernetes.io/kube-apiserver-client-kubelet"],
                ),
                named(
                    &["sign"],
                    &[CERTIFICATES],
                    &["signers"],
                    &[
                        "kubernetes.io/legacy-unknown",
                        "kubernetes.io/kube-apiserver-client",
                        "kubernetes.io/kube-apiserver-client-kubelet",
                        "kubernetes.io/kubelet-serving",
                    ],
                ),
                rule(&["create"], &["authorization.k8s.io"], &["subjectaccessreviews"]),
                events(),
            ],
        ),
        controller(
            "pvc-protection-controller",
            vec![
                rule(
                    &["get", "list", "watch", "update"],
                    &[LEGACY],
                    &["persistentvolumeclaims"],
                ),
                rule(&["list", "watch", "get"], &[LEGACY], &["pods"]),
                events(),
            ],
        ),
        controller(
            "pv-protection-controller",
            vec![
                rule(
                    &["get", "list", "watch", "update"],
                    &[LEGACY],
                    &["persistentvolumes"],
                ),
                events(),
            ],
        ),
        controller(
            "ttl-after-finished-controller",
            vec![
                rule(&["get", "list", "watch", "delete"], &[BATCH], &["jobs"]),
                events(),
            ],
        ),
        controller(
            "root-ca-cert-publisher",
            vec![rule(&["create", "update"], &[LEGACY], &["configmaps"]), events()],
        ),
        controller(
            "validatingadmissionpolicy-status-controller",
            vec![
                rule(
                    READ,
                    &["admissionregistration.k8s.io"],
                    &["validatingadmissionpolicies"],
                ),
                rule(
                    &["get", "patch", "update"],
                    &["admissionregistration.k8s.io"],
                    &["validatingadmissionpolicies/status"],
                ),
                events(),
            ],
        ),
        controller(
            "legacy-service-account-token-cleaner",
            vec![
                named(
                    &["get"],
                    &[LEGACY],
                    &["configmaps"],
                    &["kube-apiserver-legacy-service-account-token-tracking"],
                ),
                rule(&["patch", "delete"], &[LEGACY], &["secrets"]),
            ],
        ),
        // bonsai's own (k3s runs ServiceLB itself): what it writes is the Services' load-balancer status, as
        // the cloud service controller's; it reads Services and Nodes.
        controller(
            "servicelb",
            vec![
                rule(READ, &[LEGACY], &["services"]),
                rule(&["patch", "update"], &[LEGACY], &["services/status"]),
                rule(&["list", "watch"], &[LEGACY], &["nodes"]),
                events(),
            ],
        ),
    ]
}

fn subject(kind: &str, name: &str) -> Value {
    match kind {
        "ServiceAccount" => {
            let (namespace, name) = name.split_once('/').unwrap_or(("", name));
            json!({"kind": kind, "name": name, "namespace": namespace})
        }
        _ => json!({"kind": kind, "apiGroup": "rbac.authorization.k8s.io", "name": name}),
    }
}

fn binding(name: &str, role: &str, subjects: &[(&str, &str)]) -> Value {
    let subjects: Vec<Value> = subjects.iter().map(|(k, n)| subject(k, n)).collect();
    let mut binding = json!({
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
    });
    if !subjects.is_empty() {
        binding["subjects"] = Value::Array(subjects);
    }
    binding
}

/// `ClusterRoleBindings()`, plus `system:node-bootstrapper` for `system:bootstrappers` (what kubeadm and k3s
/// grant bootstrap tokens) and `system:volume-scheduler`.
pub fn cluster_role_bindings() -> Vec<Value> {
    let same = |name: &str, subjects: &[(&str, &str)]| binding(name, name, subjects);
    let mut bindings = vec![
        same("cluster-admin", &[("Group", "system:masters")]),
        same("system:monitoring", &[("Group", "system:monitoring")]),
        same("system:discovery", &[("Group", "system:authenticated")]),
        same("system:basic-user", &[("Group", "system:authenticated")]),
        same(
            "system:public-info-viewer",
            &[
                ("Group", "system:authenticated"),
                ("Group", "system:unauthenticated"),
            ],
        ),
        same("system:node-proxier", &[("User", "system:kube-proxy")]),
        same("system:bonsai-node-agent", &[("Group", "system:nodes")]),
        same(
            "system:kube-controller-manager",
            &[("User", "system:kube-controller-manager")],
        ),
        same("system:kube-dns", &[("ServiceAccount", "kube-system/kube-dns")]),
        same("system:kube-scheduler", &[("User", "system:kube-scheduler")]),
        same("system:volume-scheduler", &[("User", "system:kube-scheduler")]),
        // Deprecated since the Node authorizer: kept without subjects, as upstream keeps it.
        same("system:node", &[]),
        same(
            "system:service-account-issuer-discovery",
            &[("Group", "system:serviceaccounts")],
        ),
        same("system:node-bootstrapper", &[("Group", "system:bootstrappers")]),
        binding(
            "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
            "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
            &[("Group", "system:bootstrappers")],
        ),
        binding(
            "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
            "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
            &[("Group", "system:nodes")],
        ),
    ];
    // `addControllerRole`: each controller role bound to its ServiceAccount in kube-system.
    for name in controller_role_names() {
        let role = format!("{SA_ROLE_PREFIX}{name}");
        bindings.push(binding(
            &role,
            &role,
            &[("ServiceAccount", &format!("kube-system/{name}"))],
        ));
    }
    for binding in &mut bindings {
        add_default_metadata(binding);
    }
    bindings
}

fn add_default_metadata(object: &mut Value) {
    let metadata = &mut object["metadata"];
    if !metadata["labels"].is_object() {
        metadata["labels"] = json!({});
    }
    metadata["labels"]["kubernetes.io/bootstrapping"] = json!("rbac-defaults");
    metadata["annotations"] = json!({AUTO_UPDATE: "true"});
}

/// The reconciled form of an existing bootstrap ClusterRole (`computeReconciledRole` with `Confirm`): `None`
/// when nothing needs to change or the role is protected (`autoupdate: "false"`).
pub fn reconcile_cluster_role(existing: &Value, expected: &Value) -> Option<Value> {
    if protected(existing) {
        return None;
    }
    let mut result = existing.clone();
    merge_metadata(&mut result, expected);
    if let Some(selectors) = expected
        .pointer("/aggregationRule/clusterRoleSelectors")
        .and_then(Value::as_array)
    {
        let have = result
            .pointer("/aggregationRule/clusterRoleSelectors")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut merged = have.clone();
        for s in selectors {
            if !have.contains(s) {
                merged.push(s.clone());
            }
        }
        result["aggregationRule"] = json!({"clusterRoleSelectors": merged});
    } else {
        // Rules the existing role lacks are added (`Covers` over the broken-down rules).
        let have: Vec<k8s_openapi::api::rbac::v1::PolicyRule> =
            serde_json::from_value(existing.get("rules").cloned().unwrap_or(json!([]))).unwrap_or_default();
        let mut rules = existing
            .get("rules")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for wanted in expected
            .get("rules")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let Ok(w) = serde_json::from_value::<k8s_openapi::api::rbac::v1::PolicyRule>(wanted.clone())
            else {
                continue;
            };
            if !super::rbac::covered(&have, &w) {
                rules.push(wanted.clone());
            }
        }
        result["rules"] = Value::Array(rules);
    }
    (result != *existing).then_some(result)
}

/// What reconciling an existing bootstrap binding asks for.
#[derive(Debug, PartialEq)]
pub enum BindingReconciliation {
    Unchanged,
    /// Missing subjects (or labels, annotations) added.
    Update(Value),
    /// Its roleRef differs: it is deleted and created again (roleRef is immutable).
    Recreate,
}

/// The reconciliation of an existing bootstrap binding (`computeReconciledRoleBinding` with `Confirm`).
pub fn reconcile_binding(existing: &Value, expected: &Value) -> BindingReconciliation {
    if protected(existing) {
        return BindingReconciliation::Unchanged;
    }
    if existing.get("roleRef") != expected.get("roleRef") {
        return BindingReconciliation::Recreate;
    }
    let mut result = existing.clone();
    merge_metadata(&mut result, expected);
    let mut subjects = existing
        .get("subjects")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for s in expected
        .get("subjects")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let same = |t: &Value| {
            t.get("kind") == s.get("kind")
                && t.get("name") == s.get("name")
                && t.get("namespace") == s.get("namespace")
        };
        if !subjects.iter().any(same) {
            subjects.push(s.clone());
        }
    }
    if !subjects.is_empty() {
        result["subjects"] = Value::Array(subjects);
    }
    if result == *existing {
        BindingReconciliation::Unchanged
    } else {
        BindingReconciliation::Update(result)
    }
}

fn protected(object: &Value) -> bool {
    object
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(AUTO_UPDATE))
        .and_then(Value::as_str)
        == Some("false")
}

fn merge_metadata(result: &mut Value, expected: &Value) {
    for field in ["labels", "annotations"] {
        let Some(wanted) = expected
            .pointer(&format!("/metadata/{field}"))
            .and_then(Value::as_object)
        else {
            continue;
        };
        if !result["metadata"][field].is_object() {
            result["metadata"][field] = json!({});
        }
        for (k, v) in wanted {
            if result["metadata"][field].get(k).is_none() {
                result["metadata"][field][k] = v.clone();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bootstrap_object_is_well_formed() {
        for role in cluster_roles() {
            let typed: k8s_openapi::api::rbac::v1::ClusterRole =
                serde_json::from_value(role.clone()).unwrap();
            assert_eq!(typed.metadata.annotations.unwrap()[AUTO_UPDATE], "true", "{role}");
        }
        let names: Vec<String> = cluster_roles()
            .iter()
            .map(|r| r["metadata"]["name"].as_str().unwrap().to_string())
            .collect();
        for binding in cluster_role_bindings() {
            let typed: k8s_openapi::api::rbac::v1::ClusterRoleBinding =
                serde_json::from_value(binding).unwrap();
            assert!(names.contains(&typed.role_ref.name), "{}", typed.role_ref.name);
        }
    }

    #[test]
    fn reconciliation_adds_what_is_missing_unless_protected() {
        let expected = cluster_roles()
            .into_iter()
            .find(|r| r["metadata"]["name"] == "system:kube-dns")
            .unwrap();
        let mut trimmed = expected.clone();
        trimmed["rules"] = json!([]);
        let fixed = reconcile_cluster_role(&trimmed, &expected).unwrap();
        assert_eq!(fixed["rules"], expected["rules"]);
        assert_eq!(reconcile_cluster_role(&expected, &expected), None);
        // A user's extra rule stays.
        let mut extra = expected.clone();
        extra["rules"]
            .as_array_mut()
            .unwrap()
            .push(rule(&["get"], &[""], &["pods"]));
        assert_eq!(reconcile_cluster_role(&extra, &expected), None);
        trimmed["metadata"]["annotations"][AUTO_UPDATE] = json!("false");
        assert_eq!(reconcile_cluster_role(&trimmed, &expected), None);

        let binding = cluster_role_bindings()
            .into_iter()
            .find(|b| b["metadata"]["name"] == "system:basic-user")
            .unwrap();
        let mut emptied = binding.clone();
        emptied["subjects"] = json!([]);
        assert_eq!(
            reconcile_binding(&emptied, &binding),
            BindingReconciliation::Update(binding.clone())
        );
        let mut other = binding.clone();
        other["roleRef"]["name"] = json!("view");
        assert_eq!(
            reconcile_binding(&other, &binding),
            BindingReconciliation::Recreate
        );
    }
}
