//! Kubernetes' defaulting of pods, pod templates and the workloads that carry them (`SetDefaults_*` in
//! `pkg/apis/core/v1/defaults.go` and `pkg/apis/apps/v1/defaults.go`, and the fields `types.go` defaults
//! declaratively). kube-apiserver applies them every time it decodes an object, so they are applied on create and
//! on every update and patch; each is idempotent.

use serde_json::{Value, json};

/// Applies the defaults of `group`/`kind` (with the pod templates it carries) to `object`.
pub fn apply(group: &str, kind: &str, object: &mut Value) {
    match (group, kind) {
        ("", "Pod") => {
            if let Some(spec) = object.get_mut("spec") {
                pod_spec(spec);
                pod_only(spec);
            }
        }
        ("", "PodTemplate") => template(object.get_mut("template")),
        ("", "Secret") => secret_string_data(object),
        ("", "ReplicationController") => {
            replicas(object);
            replication_controller_selector(object);
            template(object.pointer_mut("/spec/template"));
        }
        ("apps", "Deployment") => {
            replicas(object);
            deployment(object);
            template(object.pointer_mut("/spec/template"));
        }
        ("apps", "ReplicaSet") => {
            replicas(object);
            template(object.pointer_mut("/spec/template"));
        }
        ("apps", "StatefulSet") => {
            replicas(object);
            statefulset(object);
            template(object.pointer_mut("/spec/template"));
        }
        ("apps", "DaemonSet") => {
            daemonset(object);
            template(object.pointer_mut("/spec/template"));
        }
        ("batch", "Job") => template(object.pointer_mut("/spec/template")),
        ("admissionregistration.k8s.io", kind) => {
            crate::admission::webhook_config::apply_defaults(kind, object)
        }
        ("batch", "CronJob") => {
            cronjob(object);
            template(object.pointer_mut("/spec/jobTemplate/spec/template"));
        }
        _ => {}
    }
}

/// A Secret's `stringData` is write-only: kube-apiserver folds it into `data` (base64, replacing the same keys)
/// and stores no `stringData`, so readers (the kubelet, `kubectl get -o yaml`) see one map.
fn secret_string_data(object: &mut Value) {
    use base64::Engine;
    let Some(map) = object.as_object_mut() else {
        return;
    };
    let Some(Value::Object(strings)) = map.remove("stringData") else {
        return;
    };
    let data = map.entry("data").or_insert_with(|| json!({}));
    if !data.is_object() {
        *data = json!({});
    }
    for (key, value) in strings {
        let text = value.as_str().unwrap_or_default();
        data[key] = json!(base64::engine::general_purpose::STANDARD.encode(text));
    }
}

fn template(template: Option<&mut Value>) {
    if let Some(spec) = template.and_then(|t| t.get_mut("spec")) {
        pod_spec(spec);
    }
}

/// Sets `map[key]` to `value` when it is absent or null.
fn default(map: &mut Value, key: &str, value: Value) {
    if let Some(object) = map.as_object_mut() {
        let slot = object.entry(key).or_insert(Value::Null);
        if slot.is_null() {
            *slot = value;
        }
    }
}

/// Sets `map[key]` to `value` when it is absent, null or the empty string (Go's zero value of a string field).
fn default_string(map: &mut Value, key: &str, value: &str) {
    if map.get(key).is_none_or(|v| v.is_null() || v.as_str() == Some("")) {
        default_unconditionally(map, key, json!(value));
    }
}

fn default_unconditionally(map: &mut Value, key: &str, value: Value) {
    if let Some(object) = map.as_object_mut() {
        object.insert(key.to_string(), value);
    }
}

fn replicas(object: &mut Value) {
    if let Some(spec) = object.get_mut("spec") {
        default(spec, "replicas", json!(1));
    }
}

/// `SetDefaults_Deployment`: RollingUpdate with 25% surge and unavailability, 10 revisions, a 600 s deadline.
fn deployment(object: &mut Value) {
    let Some(spec) = object.get_mut("spec").filter(|s| s.is_object()) else {
        return;
    };
    default(spec, "strategy", json!({}));
    let strategy = &mut spec["strategy"];
    default_string(strategy, "type", "RollingUpdate");
    if strategy["type"] == "RollingUpdate" {
        default(strategy, "rollingUpdate", json!({}));
        let rolling = &mut strategy["rollingUpdate"];
        default(rolling, "maxUnavailable", json!("25%"));
        default(rolling, "maxSurge", json!("25%"));
    }
    default(spec, "revisionHistoryLimit", json!(10));
    default(spec, "progressDeadlineSeconds", json!(600));
}

/// `SetDefaults_StatefulSet` (with `StatefulSetAutoDeletePVC`, on by default since 1.32): OrderedReady, RollingUpdate
/// from partition 0, claims retained when the set is deleted or scaled, 10 revisions.
fn statefulset(object: &mut Value) {
    let Some(spec) = object.get_mut("spec").filter(|s| s.is_object()) else {
        return;
    };
    default_string(spec, "podManagementPolicy", "OrderedReady");
    default(spec, "updateStrategy", json!({}));
    let strategy = &mut spec["updateStrategy"];
    if strategy
        .get("type")
        .is_none_or(|t| t.is_null() || t.as_str() == Some(""))
    {
        default_unconditionally(strategy, "type", json!("RollingUpdate"));
        default(strategy, "rollingUpdate", json!({}));
    }
    if strategy["type"] == "RollingUpdate" && strategy.get("rollingUpdate").is_some_and(Value::is_object) {
        default(&mut strategy["rollingUpdate"], "partition", json!(0));
    }
    default(spec, "persistentVolumeClaimRetentionPolicy", json!({}));
    let retention = &mut spec["persistentVolumeClaimRetentionPolicy"];
    default_string(retention, "whenDeleted", "Retain");
    default_string(retention, "whenScaled", "Retain");
    default(spec, "revisionHistoryLimit", json!(10));
}

/// kube-apiserver's DaemonSet defaults (`SetDefaults_DaemonSet`): RollingUpdate with maxUnavailable 1 and
/// maxSurge 0, and 10 revisions kept. kubectl's `rollout status` refuses a daemon set without a strategy type.
fn daemonset(object: &mut Value) {
    let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let strategy = spec.entry("updateStrategy").or_insert_with(|| json!({}));
    if strategy.get("type").is_none_or(|t| t.as_str() == Some("")) {
        strategy["type"] = json!("RollingUpdate");
    }
    if strategy["type"] == "RollingUpdate" {
        if strategy.get("rollingUpdate").is_none_or(Value::is_null) {
            strategy["rollingUpdate"] = json!({});
        }
        if let Some(rolling) = strategy.get_mut("rollingUpdate").and_then(Value::as_object_mut) {
            rolling.entry("maxUnavailable").or_insert_with(|| json!(1));
            rolling.entry("maxSurge").or_insert_with(|| json!(0));
        }
    }
    spec.entry("revisionHistoryLimit").or_insert_with(|| json!(10));
}

/// kube-apiserver's CronJob defaults (`SetDefaults_CronJob`).
fn cronjob(object: &mut Value) {
    let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    for (field, default) in [
        ("concurrencyPolicy", json!("Allow")),
        ("suspend", json!(false)),
        ("successfulJobsHistoryLimit", json!(3)),
        ("failedJobsHistoryLimit", json!(1)),
    ] {
        if spec.get(field).is_none_or(|v| v.is_null() || v == "") {
            spec.insert(field.into(), default);
        }
    }
}

/// `SetDefaults_ReplicationController`: the selector and the controller's labels come from the template's labels.
fn replication_controller_selector(object: &mut Value) {
    let Some(labels) = object
        .pointer("/spec/template/metadata/labels")
        .filter(|l| l.as_object().is_some_and(|m| !m.is_empty()))
        .cloned()
    else {
        return;
    };
    if object
        .pointer("/spec/selector")
        .is_none_or(|s| s.as_object().is_none_or(|m| m.is_empty()))
    {
        object["spec"]["selector"] = labels.clone();
    }
    if object
        .pointer("/metadata/labels")
        .is_none_or(|s| s.as_object().is_none_or(|m| m.is_empty()))
        && object.get("metadata").is_some_and(Value::is_object)
    {
        object["metadata"]["labels"] = labels;
    }
}

/// `SetDefaults_PodSpec` and the defaults of what a pod spec holds (containers, probes, volumes).
fn pod_spec(spec: &mut Value) {
    if !spec.is_object() {
        return;
    }
    default_string(spec, "dnsPolicy", "ClusterFirst");
    default_string(spec, "restartPolicy", "Always");
    default(spec, "securityContext", json!({}));
    default(spec, "terminationGracePeriodSeconds", json!(30));
    default_string(spec, "schedulerName", "default-scheduler");
    for list in ["initContainers", "containers", "ephemeralContainers"] {
        for container in spec
            .get_mut(list)
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            self::container(container);
        }
    }
    for volume in spec
        .get_mut("volumes")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        self::volume(volume);
    }
}

/// `SetDefaults_Pod`: what only Pod objects (not templates) get.
fn pod_only(spec: &mut Value) {
    if !spec.is_object() {
        return;
    }
    let host_network = spec.get("hostNetwork") == Some(&json!(true));
    for list in ["initContainers", "containers"] {
        for container in spec
            .get_mut(list)
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            // Requests default to limits, resource by resource.
            if let Some(limits) = container
                .pointer("/resources/limits")
                .and_then(Value::as_object)
                .cloned()
            {
                default(&mut container["resources"], "requests", json!({}));
                let requests = &mut container["resources"]["requests"];
                for (resource, quantity) in limits {
                    default(requests, &resource, quantity);
                }
            }
            // With the host's network, every container port is a host port.
            if host_network {
                for port in container
                    .get_mut("ports")
                    .and_then(Value::as_array_mut)
                    .into_iter()
                    .flatten()
                {
                    if port.get("hostPort").is_none_or(|p| p.is_null() || p == 0) {
                        let container_port = port.get("containerPort").cloned().unwrap_or(Value::Null);
                        default_unconditionally(port, "hostPort", container_port);
                    }
                }
            }
        }
    }
    default(spec, "enableServiceLinks", json!(true));
}

/// The tag `parsers.ParseImageName` finds: the one after the last `:` of the last path part, before any digest;
/// "latest" when there is neither a tag nor a digest.
fn image_tag(image: &str) -> &str {
    let (name, digest) = match image.split_once('@') {
        Some((name, digest)) => (name, Some(digest)),
        None => (image, None),
    };
    let last = name.rsplit('/').next().unwrap_or(name);
    match last.rsplit_once(':') {
        Some((_, tag)) => tag,
        None if digest.is_none() => "latest",
        None => "",
    }
}

/// `SetDefaults_Container`, the ports' declarative protocol, probes and field references.
fn container(container: &mut Value) {
    if !container.is_object() {
        return;
    }
    if container
        .get("imagePullPolicy")
        .is_none_or(|p| p.is_null() || p == "")
    {
        let image = container.get("image").and_then(Value::as_str).unwrap_or("");
        let policy = if image_tag(image) == "latest" {
            "Always"
        } else {
            "IfNotPresent"
        };
        default_unconditionally(container, "imagePullPolicy", json!(policy));
    }
    default_string(container, "terminationMessagePath", "/dev/termination-log");
    default_string(container, "terminationMessagePolicy", "File");
    for port in container
        .get_mut("ports")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        default_string(port, "protocol", "TCP");
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(probe) = container.get_mut(probe).filter(|p| p.is_object()) {
            for (field, value) in [
                ("timeoutSeconds", 1),
                ("periodSeconds", 10),
                ("successThreshold", 1),
                ("failureThreshold", 3),
            ] {
                if probe.get(field).is_none_or(|v| v.is_null() || v == 0) {
                    default_unconditionally(probe, field, json!(value));
                }
            }
            http_get(probe.get_mut("httpGet"));
        }
    }
    for hook in ["postStart", "preStop"] {
        http_get(container.pointer_mut(&format!("/lifecycle/{hook}/httpGet")));
    }
    for env in container
        .get_mut("env")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        if let Some(field_ref) = env.pointer_mut("/valueFrom/fieldRef") {
            default_string(field_ref, "apiVersion", "v1");
        }
    }
}

/// `SetDefaults_HTTPGetAction`.
fn http_get(action: Option<&mut Value>) {
    if let Some(action) = action.filter(|a| a.is_object()) {
        default_string(action, "path", "/");
        default_string(action, "scheme", "HTTP");
    }
}

/// `SetDefaults_Volume` and the defaults of the volume sources (modes 0644 = 420, a token's hour).
fn volume(volume: &mut Value) {
    let Some(object) = volume.as_object() else {
        return;
    };
    if object.keys().all(|k| k == "name") {
        default_unconditionally(volume, "emptyDir", json!({}));
    }
    for source in ["secret", "configMap", "downwardAPI", "projected"] {
        if let Some(source) = volume.get_mut(source).filter(|s| s.is_object()) {
            default(source, "defaultMode", json!(420));
        }
    }
    if let Some(host_path) = volume.get_mut("hostPath").filter(|s| s.is_object()) {
        default(host_path, "type", json!(""));
    }
    for projection in volume
        .pointer_mut("/projected/sources")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        if let Some(token) = projection
            .get_mut("serviceAccountToken")
            .filter(|t| t.is_object())
        {
            default(token, "expirationSeconds", json!(3600));
        }
        for item in projection
            .pointer_mut("/downwardAPI/items")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            if let Some(field_ref) = item.get_mut("fieldRef") {
                default_string(field_ref, "apiVersion", "v1");
            }
        }
    }
    for item in volume
        .pointer_mut("/downwardAPI/items")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        if let Some(field_ref) = item.get_mut("fieldRef") {
            default_string(field_ref, "apiVersion", "v1");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_tags_as_kubernetes_parses_them() {
        assert_eq!(image_tag("busybox"), "latest");
        assert_eq!(image_tag("busybox:1.36"), "1.36");
        assert_eq!(image_tag("127.0.0.1:5000/busybox"), "latest");
        assert_eq!(image_tag("127.0.0.1:5000/busybox:latest"), "latest");
        assert_eq!(image_tag("busybox@sha256:abc"), "");
        assert_eq!(image_tag("busybox:1@sha256:abc"), "1");
    }

    #[test]
    fn a_pod_gets_kubernetes_defaults_once() {
        let mut pod = json!({"spec": {
            "containers": [{"name": "c", "image": "busybox", "ports": [{"containerPort": 80}],
                "resources": {"limits": {"cpu": "1"}, "requests": {"memory": "1Mi"}},
                "readinessProbe": {"httpGet": {"port": 80}},
                "env": [{"name": "N", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]}],
            "volumes": [{"name": "scratch"}, {"name": "cfg", "configMap": {"name": "cfg"}}]}});
        apply("", "Pod", &mut pod);
        let once = pod.clone();
        apply("", "Pod", &mut pod);
        assert_eq!(pod, once, "defaulting is idempotent");
        let spec = &pod["spec"];
        assert_eq!(spec["restartPolicy"], "Always");
        assert_eq!(spec["dnsPolicy"], "ClusterFirst");
        assert_eq!(spec["terminationGracePeriodSeconds"], 30);
        assert_eq!(spec["schedulerName"], "default-scheduler");
        assert_eq!(spec["enableServiceLinks"], true);
        let c = &spec["containers"][0];
        assert_eq!(c["imagePullPolicy"], "Always");
        assert_eq!(c["terminationMessagePath"], "/dev/termination-log");
        assert_eq!(c["ports"][0]["protocol"], "TCP");
        assert_eq!(c["resources"]["requests"], json!({"cpu": "1", "memory": "1Mi"}));
        assert_eq!(
            c["readinessProbe"],
            json!({"httpGet": {"port": 80, "path": "/", "scheme": "HTTP"}, "timeoutSeconds": 1,
                "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3})
        );
        assert_eq!(c["env"][0]["valueFrom"]["fieldRef"]["apiVersion"], "v1");
        assert_eq!(spec["volumes"][0]["emptyDir"], json!({}));
        assert_eq!(spec["volumes"][1]["configMap"]["defaultMode"], 420);
    }

    #[test]
    fn templates_get_pod_spec_defaults_but_not_the_pods_own() {
        let mut deployment = json!({"metadata": {"name": "web"}, "spec": {"template": {"spec": {
            "containers": [{"name": "c", "image": "busybox:1", "resources": {"limits": {"cpu": "1"}}}]}}}});
        apply("apps", "Deployment", &mut deployment);
        let spec = &deployment["spec"];
        assert_eq!(spec["replicas"], 1);
        assert_eq!(
            spec["strategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
        );
        assert_eq!(spec["revisionHistoryLimit"], 10);
        assert_eq!(spec["progressDeadlineSeconds"], 600);
        let pod = &spec["template"]["spec"];
        assert_eq!(pod["restartPolicy"], "Always");
        assert_eq!(pod["containers"][0]["imagePullPolicy"], "IfNotPresent");
        assert!(pod["containers"][0]["resources"].get("requests").is_none());
        assert!(pod.get("enableServiceLinks").is_none());

        let mut recreate = json!({"spec": {"strategy": {"type": "Recreate"}, "template": {}}});
        apply("apps", "Deployment", &mut recreate);
        assert_eq!(recreate["spec"]["strategy"], json!({"type": "Recreate"}));

        let mut cronjob = json!({"spec": {"jobTemplate": {"spec": {"template": {"spec": {
            "restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox:1"}]}}}}}});
        apply("batch", "CronJob", &mut cronjob);
        let pod = &cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"];
        assert_eq!(pod["restartPolicy"], "Never");
        assert_eq!(pod["dnsPolicy"], "ClusterFirst");
    }

    #[test]
    fn secret_string_data_is_folded_into_data() {
        let mut secret =
            json!({"data": {"a": "MQ==", "b": "Mg=="}, "stringData": {"b": "two", "c": "three"}});
        apply("", "Secret", &mut secret);
        assert_eq!(
            secret,
            json!({"data": {"a": "MQ==", "b": "dHdv", "c": "dGhyZWU="}})
        );
    }

    #[test]
    fn replication_controllers_take_their_selector_from_the_template() {
        let mut rc = json!({"metadata": {"name": "rc"}, "spec": {"template": {"metadata": {"labels": {"app": "x"}},
            "spec": {"containers": []}}}});
        apply("", "ReplicationController", &mut rc);
        assert_eq!(rc["spec"]["selector"], json!({"app": "x"}));
        assert_eq!(rc["metadata"]["labels"], json!({"app": "x"}));
        assert_eq!(rc["spec"]["replicas"], 1);
    }

    #[test]
    fn stateful_sets_get_kubernetes_defaults_and_keep_their_own() {
        let mut set = json!({"spec": {"template": {"spec": {"containers": []}}}});
        apply("apps", "StatefulSet", &mut set);
        let spec = &set["spec"];
        assert_eq!(spec["replicas"], 1);
        assert_eq!(spec["podManagementPolicy"], "OrderedReady");
        assert_eq!(
            spec["updateStrategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}})
        );
        assert_eq!(
            spec["persistentVolumeClaimRetentionPolicy"],
            json!({"whenDeleted": "Retain", "whenScaled": "Retain"})
        );
        assert_eq!(spec["revisionHistoryLimit"], 10);
        let mut on_delete = json!({"spec": {"updateStrategy": {"type": "OnDelete"}, "podManagementPolicy": "Parallel",
            "persistentVolumeClaimRetentionPolicy": {"whenScaled": "Delete"}}});
        apply("apps", "StatefulSet", &mut on_delete);
        let spec = &on_delete["spec"];
        assert_eq!(
            spec["updateStrategy"],
            json!({"type": "OnDelete"}),
            "no rollingUpdate for OnDelete"
        );
        assert_eq!(spec["podManagementPolicy"], "Parallel");
        assert_eq!(
            spec["persistentVolumeClaimRetentionPolicy"],
            json!({"whenDeleted": "Retain", "whenScaled": "Delete"})
        );
    }
}
