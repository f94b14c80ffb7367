//! Bodies built with k8s-pb's typed messages and encoded by prost, exactly as client-go frames them, decoded
//! through the generated descriptors.

use std::collections::BTreeMap;

use k8s_pb::api::apps::v1 as apps;
use k8s_pb::api::core::v1 as core;
use k8s_pb::apimachinery::pkg::api::resource::Quantity;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::apimachinery::pkg::runtime::{RawExtension, TypeMeta, Unknown};
use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
use prost_reflect::prost::Message;
use serde_json::json;

use super::{ProtobufError, decode, json::go_duration};

fn s(v: &str) -> Option<String> {
    Some(v.to_string())
}

fn framed(api_version: &str, kind: &str, object: &impl Message) -> Vec<u8> {
    let envelope = Unknown {
        type_meta: Some(TypeMeta {
            api_version: s(api_version),
            kind: s(kind),
        }),
        raw: Some(object.encode_to_vec()),
        content_encoding: s(""),
        content_type: s(""),
    };
    let mut body = b"k8s\0".to_vec();
    body.extend(envelope.encode_to_vec());
    body
}

/// What client-go writes for an object's unset non-pointer metadata: empty strings and Go's zero time.
fn go_metadata(name: &str) -> meta::ObjectMeta {
    meta::ObjectMeta {
        name: s(name),
        generate_name: s(""),
        namespace: s(""),
        resource_version: s(""),
        creation_timestamp: Some(meta::Time {
            seconds: Some(-62_135_596_800),
            nanos: Some(0),
        }),
        ..Default::default()
    }
}

#[test]
fn pod_with_inlined_sources_quantities_and_int_or_string() {
    let pod = core::Pod {
        metadata: Some(meta::ObjectMeta {
            labels: BTreeMap::from([("app".into(), "web".into())]),
            ..go_metadata("web")
        }),
        spec: Some(core::PodSpec {
            containers: vec![core::Container {
                name: s("c"),
                image: s("busybox"),
                command: vec!["sleep".into(), "3600".into()],
                ports: vec![core::ContainerPort {
                    container_port: Some(80),
                    host_port: Some(0),
                    protocol: s("TCP"),
                    ..Default::default()
                }],
                resources: Some(core::ResourceRequirements {
                    limits: BTreeMap::from([("cpu".into(), Quantity { string: s("500m") })]),
                    ..Default::default()
                }),
                liveness_probe: Some(core::Probe {
                    handler: Some(core::ProbeHandler {
                        http_get: Some(core::HttpGetAction {
                            path: s("/healthz"),
                            port: Some(IntOrString {
                                r#type: Some(1),
                                int_val: Some(0),
                                str_val: s("http"),
                            }),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    period_seconds: Some(5),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            volumes: vec![core::Volume {
                name: s("data"),
                volume_source: Some(core::VolumeSource {
                    empty_dir: Some(core::EmptyDirVolumeSource::default()),
                    ..Default::default()
                }),
            }],
            termination_grace_period_seconds: Some(0),
            host_ipc: Some(false),
            ..Default::default()
        }),
        status: Some(core::PodStatus::default()),
    };
    let decoded = decode(&framed("v1", "Pod", &pod)).unwrap();
    assert_eq!(
        decoded,
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {
                "containers": [{
                    "name": "c",
                    "image": "busybox",
                    "command": ["sleep", "3600"],
                    "ports": [{"containerPort": 80, "hostPort": 0, "protocol": "TCP"}],
                    "resources": {"limits": {"cpu": "500m"}},
                    "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 5},
                }],
                "volumes": [{"name": "data", "emptyDir": {}}],
                "terminationGracePeriodSeconds": 0,
                "hostIPC": false,
            },
            "status": {},
        })
    );
    // And it is a valid Pod to k8s-openapi.
    serde_json::from_value::<k8s_openapi::api::core::v1::Pod>(decoded).unwrap();
}

#[test]
fn secret_bytes_are_base64_and_int_or_string_numbers_stay_numbers() {
    let secret = core::Secret {
        metadata: Some(go_metadata("release.v1")),
        data: BTreeMap::from([("release".into(), vec![0u8, 1, 2, 255]), ("empty".into(), vec![])]),
        r#type: s("helm.sh/release.v1"),
        ..Default::default()
    };
    let decoded = decode(&framed("v1", "Secret", &secret)).unwrap();
    assert_eq!(decoded["data"], json!({"release": "AAEC/w==", "empty": ""}));
    assert_eq!(decoded["type"], "helm.sh/release.v1");

    let service = core::Service {
        metadata: Some(go_metadata("web")),
        spec: Some(core::ServiceSpec {
            ports: vec![core::ServicePort {
                port: Some(80),
                target_port: Some(IntOrString {
                    r#type: Some(0),
                    int_val: Some(8080),
                    str_val: s(""),
                }),
                ..Default::default()
            }],
            external_ips: vec!["192.0.2.1".into()],
            ..Default::default()
        }),
        status: None,
    };
    let decoded = decode(&framed("v1", "Service", &service)).unwrap();
    assert_eq!(
        decoded["spec"],
        json!({"ports": [{"port": 80, "targetPort": 8080}], "externalIPs": ["192.0.2.1"]})
    );
}

#[test]
fn zero_replicas_survive_and_raw_extensions_are_json() {
    let deployment = apps::Deployment {
        metadata: Some(go_metadata("web")),
        spec: Some(apps::DeploymentSpec {
            replicas: Some(0),
            ..Default::default()
        }),
        status: None,
    };
    let decoded = decode(&framed("apps/v1", "Deployment", &deployment)).unwrap();
    assert_eq!(decoded["apiVersion"], "apps/v1");
    assert_eq!(decoded["spec"], json!({"replicas": 0}));

    let revision = apps::ControllerRevision {
        metadata: Some(go_metadata("web-1")),
        data: Some(RawExtension {
            raw: Some(br#"{"spec":{"x":1}}"#.to_vec()),
        }),
        revision: Some(1),
    };
    let decoded = decode(&framed("apps/v1", "ControllerRevision", &revision)).unwrap();
    assert_eq!(decoded["data"], json!({"spec": {"x": 1}}));
    assert_eq!(decoded["revision"], 1);
}

#[test]
fn delete_options_come_from_meta_under_any_group_version() {
    let options = meta::DeleteOptions {
        grace_period_seconds: Some(0),
        preconditions: Some(meta::Preconditions {
            uid: s("1234"),
            resource_version: None,
        }),
        propagation_policy: s("Foreground"),
        dry_run: vec!["All".into()],
        ..Default::default()
    };
    for api_version in ["v1", "apps/v1", "meta.k8s.io/v1"] {
        let decoded = decode(&framed(api_version, "DeleteOptions", &options)).unwrap();
        assert_eq!(decoded["gracePeriodSeconds"], 0);
        assert_eq!(decoded["preconditions"], json!({"uid": "1234"}));
        assert_eq!(decoded["propagationPolicy"], "Foreground");
        assert_eq!(decoded["dryRun"], json!(["All"]));
    }
}

#[test]
fn times_micro_times_and_durations() {
    let event = k8s_pb::api::events::v1::Event {
        metadata: Some(go_metadata("e")),
        event_time: Some(meta::MicroTime {
            seconds: Some(1_700_000_000),
            nanos: Some(123_456_000),
        }),
        deprecated_first_timestamp: Some(meta::Time {
            seconds: Some(1_700_000_000),
            nanos: Some(0),
        }),
        ..Default::default()
    };
    let decoded = decode(&framed("events.k8s.io/v1", "Event", &event)).unwrap();
    assert_eq!(decoded["eventTime"], "2023-11-14T22:13:20.123456Z");
    assert_eq!(decoded["deprecatedFirstTimestamp"], "2023-11-14T22:13:20Z");
    assert_eq!(go_duration(0), "0s");
    assert_eq!(go_duration(1_500), "1.5µs");
    assert_eq!(go_duration(150_000_000), "150ms");
    assert_eq!(go_duration(3_723_500_000_000), "1h2m3.5s");
    assert_eq!(go_duration(60_000_000_000), "1m0s");
    assert_eq!(go_duration(-2_000_000_000), "-2s");
}

#[test]
fn every_served_kind_has_a_message() {
    let d = super::descriptors().unwrap();
    // apiextensions' kinds are left out of the descriptors (tests/protobuf_descriptors.rs says why); kubectl and
    // helm send CRDs as JSON.
    for r in crate::resources::registry::RESOURCES
        .iter()
        .filter(|r| r.group != "apiextensions.k8s.io")
    {
        let api_version = r.api_version();
        assert!(
            super::message_for(d, &api_version, r.kind).is_some(),
            "no protobuf message for {api_version} {}",
            r.kind
        );
    }
}

#[test]
fn bad_bodies_are_errors_not_panics() {
    assert!(matches!(
        decode(b"{\"kind\":\"Pod\"}"),
        Err(ProtobufError::NoMagic)
    ));
    assert!(matches!(
        decode(b"k8s\0\xff\xff\xff"),
        Err(ProtobufError::Malformed(_))
    ));
    let nothing = meta::Status::default();
    assert!(matches!(
        decode(&framed("v1", "Nope", &nothing)),
        Err(ProtobufError::UnknownKind { .. })
    ));
    assert!(matches!(
        decode(&framed("", "", &nothing)),
        Err(ProtobufError::NoTypeMeta)
    ));
    let mut gzip = Unknown::decode(&framed("v1", "Pod", &nothing)[4..]).unwrap();
    gzip.content_encoding = s("gzip");
    let mut body = b"k8s\0".to_vec();
    body.extend(gzip.encode_to_vec());
    assert!(matches!(decode(&body), Err(ProtobufError::ContentEncoding(_))));
    let revision = apps::ControllerRevision {
        data: Some(RawExtension {
            raw: Some(b"\x00not json".to_vec()),
        }),
        ..Default::default()
    };
    assert!(matches!(
        decode(&framed("apps/v1", "ControllerRevision", &revision)),
        Err(ProtobufError::BadValue { .. })
    ));
    // Truncated and random inputs never panic.
    let pod = framed(
        "v1",
        "Pod",
        &core::Pod {
            metadata: Some(go_metadata("x")),
            ..Default::default()
        },
    );
    for end in 0..pod.len() {
        let _ = decode(&pod[..end]);
    }
}
