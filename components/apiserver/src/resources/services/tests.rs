use super::*;
use embedded_store::{EmbeddedStore, StoreOptions};

fn service_type_resource() -> &'static ResourceType {
    super::super::registry::find("", "v1", "services").unwrap()
}

fn open() -> (tempfile::TempDir, EmbeddedStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path().join("db"), StoreOptions::default()).unwrap();
    (dir, store)
}

async fn small_ranges(store: &dyn Store) {
    store_ranges(
        store,
        ServiceRanges {
            cluster_ips: IpRange::parse("10.96.0.0/29").unwrap(),
            node_ports: PortRange::parse("30000-30003").unwrap(),
        },
    )
    .await
    .unwrap();
}

/// Allocates and commits like the create handler does.
async fn create(store: &dyn Store, name: &str, mut service: Value) -> Result<Value, ApiError> {
    apply_defaults(&mut service, None);
    let causes = validate(&service, None);
    assert!(causes.is_empty(), "{causes:?}");
    let held = allocate(store, service_type_resource(), name, &mut service, None).await?;
    let key = Bytes::from(format!("/registry/core/services/default/{name}"));
    let outcome = commit(
        store,
        key,
        None,
        Some(Bytes::from(service.to_string())),
        &BTreeSet::new(),
        &held,
        owner_value("default", name),
    )
    .await?;
    assert!(matches!(outcome, Commit::Written(_)), "{outcome:?}");
    Ok(service)
}

fn causes(result: Result<Value, ApiError>) -> Vec<FieldError> {
    match result {
        Err(ApiError::Invalid { causes, .. }) => causes,
        other => panic!("expected 422, got {other:?}"),
    }
}

#[test]
fn ranges_parse_and_exclude_network_and_broadcast() {
    let r = IpRange::parse("10.43.0.0/16").unwrap();
    assert_eq!(r.first(), "10.43.0.1".parse::<IpAddr>().unwrap());
    assert_eq!(r.size(), 65534);
    assert!(!r.allocatable("10.43.0.0".parse().unwrap()));
    assert!(!r.allocatable("10.43.255.255".parse().unwrap()));
    assert!(r.allocatable("10.43.255.254".parse().unwrap()));
    assert!(!r.allocatable("10.44.0.1".parse().unwrap()));
    assert!(!r.allocatable("fd00::1".parse().unwrap()));
    assert!(IpRange::parse("10.43.0.1/16").is_err(), "host bits");
    assert!(IpRange::parse("10.43.0.0/31").is_err());
    assert!(IpRange::parse("nonsense").is_err());
    let v6 = IpRange::parse("fd00:43::/112").unwrap();
    assert_eq!(v6.first(), "fd00:43::1".parse::<IpAddr>().unwrap());
    assert_eq!(PortRange::parse("30000-32767").unwrap().size(), 2768);
    assert!(PortRange::parse("32767-30000").is_err());
    assert!(PortRange::parse("0-10").is_err());
    assert_eq!(static_band(65534, 16, 256), 256);
    assert_eq!(static_band(2768, 32, 128), 86);
    assert_eq!(static_band(6, 16, 256), 6);
}

#[test]
fn defaults_follow_kubernetes() {
    let mut s = json!({"spec": {"ports": [{"port": 80}], "sessionAffinity": "ClientIP"}});
    apply_defaults(&mut s, None);
    assert_eq!(s["spec"]["type"], "ClusterIP");
    assert_eq!(s["spec"]["ports"][0]["protocol"], "TCP");
    assert_eq!(s["spec"]["ports"][0]["targetPort"], 80);
    assert_eq!(s["spec"]["internalTrafficPolicy"], "Cluster");
    assert_eq!(
        s["spec"]["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"],
        10800
    );
    assert!(s["spec"].get("externalTrafficPolicy").is_none());
    let mut lb = json!({"spec": {"type": "LoadBalancer", "ports": [{"port": 80, "targetPort": "http"}]}});
    apply_defaults(&mut lb, None);
    assert_eq!(lb["spec"]["externalTrafficPolicy"], "Cluster");
    assert_eq!(lb["spec"]["allocateLoadBalancerNodePorts"], true);
    assert_eq!(lb["spec"]["ports"][0]["targetPort"], "http");
}

#[test]
fn validation_names_the_field() {
    let fields = |s: Value| -> Vec<String> {
        let mut s = s;
        apply_defaults(&mut s, None);
        validate(&s, None).into_iter().map(|c| c.field).collect()
    };
    assert_eq!(fields(json!({"spec": {}})), ["spec.ports"]);
    assert!(
        fields(json!({"spec": {"clusterIP": "None"}})).is_empty(),
        "headless needs no ports"
    );
    assert_eq!(
        fields(json!({"spec": {"type": "Bogus", "ports": [{"port": 1}]}})),
        ["spec.type"]
    );
    assert_eq!(
        fields(json!({"spec": {"ports": [{"port": 70000}]}})),
        ["spec.ports[0].port", "spec.ports[0].targetPort"]
    );
    assert_eq!(
        fields(json!({"spec": {"ports": [{"port": 80}, {"port": 81}]}})),
        ["spec.ports[0].name", "spec.ports[1].name"]
    );
    assert_eq!(
        fields(json!({"spec": {"ports": [{"port": 80, "nodePort": 30001}]}})),
        ["spec.ports[0].nodePort"]
    );
    assert_eq!(
        fields(json!({"spec": {"type": "NodePort", "clusterIP": "None", "ports": [{"port": 80}]}})),
        ["spec.clusterIPs[0]"]
    );
    assert_eq!(
        fields(json!({"spec": {"type": "ExternalName"}})),
        ["spec.externalName"]
    );
    assert!(fields(json!({"spec": {"type": "ExternalName", "externalName": "example.com"}})).is_empty());
    assert_eq!(
        fields(json!({"spec": {"clusterIP": "banana", "ports": [{"port": 80}]}})),
        ["spec.clusterIPs[0]"]
    );
    let old = json!({"spec": {"type": "ClusterIP", "clusterIP": "10.43.0.5", "ports": [{"port": 80}]}});
    let mut new = json!({"spec": {"clusterIP": "10.43.0.6", "ports": [{"port": 80}]}});
    apply_defaults(&mut new, Some(&old));
    let causes = validate(&new, Some(&old));
    assert_eq!(causes.len(), 1);
    assert!(causes[0].message.contains("may not change once set"));
}

#[tokio::test]
async fn addresses_and_ports_are_unique_and_freed_with_the_service() {
    let (_dir, store) = open();
    small_ranges(&store).await;
    // A /29 has six usable addresses; the static band is all of them, so they are handed out in order.
    let mut ips = BTreeSet::new();
    for i in 0..6 {
        let s = create(
            &store,
            &format!("s{i}"),
            json!({"spec": {"ports": [{"port": 80}]}}),
        )
        .await
        .unwrap();
        assert_eq!(s["spec"]["clusterIPs"][0], s["spec"]["clusterIP"]);
        assert_eq!(s["spec"]["ipFamilies"][0], "IPv4");
        assert!(ips.insert(s["spec"]["clusterIP"].as_str().unwrap().to_string()));
    }
    let full = create(&store, "s6", json!({"spec": {"ports": [{"port": 80}]}})).await;
    assert!(
        matches!(full, Err(ApiError::Internal(ref m)) if m.contains("range is full")),
        "{full:?}"
    );

    // Asking for a held address, or one outside the range: 422 on spec.clusterIPs, with Kubernetes' words.
    let taken = causes(
        create(
            &store,
            "t",
            json!({"spec": {"clusterIP": "10.96.0.1", "ports": [{"port": 80}]}}),
        )
        .await,
    );
    assert_eq!(taken[0].field, "spec.clusterIPs");
    assert!(
        taken[0]
            .message
            .ends_with("failed to allocate IP 10.96.0.1: provided IP is already allocated"),
        "{}",
        taken[0].message
    );
    let outside = causes(
        create(
            &store,
            "t",
            json!({"spec": {"clusterIP": "10.0.0.5", "ports": [{"port": 80}]}}),
        )
        .await,
    );
    assert!(
        outside[0]
            .message
            .contains("The range of valid IPs is 10.96.0.0/29"),
        "{}",
        outside[0].message
    );
    let broadcast = causes(
        create(
            &store,
            "t",
            json!({"spec": {"clusterIP": "10.96.0.7", "ports": [{"port": 80}]}}),
        )
        .await,
    );
    assert!(broadcast[0].message.contains("not in the valid range"));

    // Deleting a service frees its address in the same transaction.
    let s0 = json!({"spec": {"type": "ClusterIP", "clusterIP": "10.96.0.1", "clusterIPs": ["10.96.0.1"]}});
    let held = reservations(&s0);
    let key = Bytes::from("/registry/core/services/default/s0");
    let rev = store.get(key.clone(), 0).await.unwrap().kv.unwrap().mod_revision;
    let outcome = commit(
        &store,
        key,
        Some(rev),
        None,
        &held,
        &BTreeSet::new(),
        owner_value("default", "s0"),
    )
    .await
    .unwrap();
    assert!(matches!(outcome, Commit::Deleted));
    let again = create(
        &store,
        "again",
        json!({"spec": {"clusterIP": "10.96.0.1", "ports": [{"port": 80}]}}),
    )
    .await
    .unwrap();
    assert_eq!(again["spec"]["clusterIP"], "10.96.0.1");
}

#[tokio::test]
async fn node_ports_are_allocated_checked_and_shared_by_protocols_of_one_port() {
    let (_dir, store) = open();
    small_ranges(&store).await;
    let dns = create(
        &store,
        "dns",
        json!({"spec": {"type": "NodePort", "ports": [
            {"name": "dns", "port": 53, "protocol": "UDP"},
            {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
        ]}}),
    )
    .await
    .unwrap();
    let (udp, tcp) = (
        &dns["spec"]["ports"][0]["nodePort"],
        &dns["spec"]["ports"][1]["nodePort"],
    );
    assert_eq!(udp, tcp, "one node port for both protocols of port 53");
    let taken = udp.as_u64().unwrap();
    let clash = causes(
        create(
            &store,
            "x",
            json!({"spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": taken}]}}),
        )
        .await,
    );
    assert_eq!(clash[0].field, "spec.ports[0].nodePort");
    assert_eq!(
        clash[0].message,
        format!("Invalid value: {taken}: provided port is already allocated")
    );
    let outside = causes(
        create(
            &store,
            "x",
            json!({"spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": 40000}]}}),
        )
        .await,
    );
    assert_eq!(
        outside[0].message,
        "Invalid value: 40000: provided port is not in the valid range. The range of valid ports is 30000-30003"
    );
    // LoadBalancer with externalTrafficPolicy Local also holds a health check node port.
    let lb = create(
        &store,
        "lb",
        json!({"spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local", "ports": [{"port": 80}]}}),
    )
    .await
    .unwrap();
    let held = reservations(&lb);
    assert_eq!(
        held.iter().filter(|k| k.starts_with(PORT_RANGE_KEY)).count(),
        2,
        "{held:?}"
    );
    let full = create(&store, "y", json!({"spec": {"type": "NodePort", "ports": [{"name": "a", "port": 80}, {"name": "b", "port": 81}]}})).await;
    assert!(
        matches!(full, Err(ApiError::Invalid { .. }) | Err(ApiError::Internal(_))),
        "{full:?}"
    );
}

#[tokio::test]
async fn updates_keep_what_was_allocated_and_type_changes_free_node_ports() {
    let (_dir, store) = open();
    small_ranges(&store).await;
    let old = create(
        &store,
        "web",
        json!({"spec": {"type": "NodePort", "ports": [{"port": 80}]}}),
    )
    .await
    .unwrap();
    // A manifest without clusterIP or nodePort (kubectl apply) keeps both.
    let mut new = json!({"spec": {"type": "NodePort", "ports": [{"port": 80}]}});
    apply_defaults(&mut new, Some(&old));
    let held = allocate(&store, service_type_resource(), "web", &mut new, Some(&old))
        .await
        .unwrap();
    assert_eq!(new["spec"]["clusterIP"], old["spec"]["clusterIP"]);
    assert_eq!(
        new["spec"]["ports"][0]["nodePort"],
        old["spec"]["ports"][0]["nodePort"]
    );
    assert_eq!(held, reservations(&old));
    // Back to ClusterIP: the node port goes.
    let mut back = old.clone();
    back["spec"]["type"] = json!("ClusterIP");
    apply_defaults(&mut back, Some(&old));
    assert!(
        validate(&back, Some(&old)).is_empty(),
        "{:?}",
        validate(&back, Some(&old))
    );
    let held = allocate(&store, service_type_resource(), "web", &mut back, Some(&old))
        .await
        .unwrap();
    assert!(back["spec"]["ports"][0].get("nodePort").is_none());
    assert!(back["spec"].get("externalTrafficPolicy").is_none());
    assert_eq!(held.len(), 1, "only the cluster IP: {held:?}");
}

#[tokio::test]
async fn a_reservation_taken_between_allocation_and_write_fails_the_transaction() {
    let (_dir, store) = open();
    small_ranges(&store).await;
    let mut a = json!({"spec": {"clusterIP": "10.96.0.3", "ports": [{"port": 80}]}});
    apply_defaults(&mut a, None);
    let held = allocate(&store, service_type_resource(), "a", &mut a, None)
        .await
        .unwrap();
    // Someone else commits the same address first.
    create(
        &store,
        "b",
        json!({"spec": {"clusterIP": "10.96.0.3", "ports": [{"port": 80}]}}),
    )
    .await
    .unwrap();
    let outcome = commit(
        &store,
        Bytes::from("/registry/core/services/default/a"),
        None,
        Some(Bytes::from(a.to_string())),
        &BTreeSet::new(),
        &held,
        owner_value("default", "a"),
    )
    .await
    .unwrap();
    assert!(matches!(outcome, Commit::ReservationTaken), "{outcome:?}");
    assert!(
        store
            .get(Bytes::from("/registry/core/services/default/a"), 0)
            .await
            .unwrap()
            .kv
            .is_none()
    );
}
