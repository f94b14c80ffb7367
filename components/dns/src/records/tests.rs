use super::*;
use serde_json::json;

fn service(value: serde_json::Value) -> Service {
    serde_json::from_value(value).expect("a service")
}

fn slice(value: serde_json::Value) -> EndpointSlice {
    serde_json::from_value(value).expect("a slice")
}

fn name(s: &str) -> Name {
    Name::from_ascii(s).expect("a name")
}

fn index() -> ClusterRecords {
    let services = vec![
        service(
            json!({"metadata": {"name": "web", "namespace": "default"}, "spec": {
            "clusterIP": "10.43.0.20", "clusterIPs": ["10.43.0.20"],
            "ports": [{"name": "http", "port": 80, "protocol": "TCP"}, {"port": 81}]}}),
        ),
        service(json!({"metadata": {"name": "db", "namespace": "prod"}, "spec": {
            "clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}})),
        service(
            json!({"metadata": {"name": "ext", "namespace": "default"}, "spec": {
            "type": "ExternalName", "externalName": "example.test"}}),
        ),
        service(
            json!({"metadata": {"name": "dual", "namespace": "default"}, "spec": {
            "clusterIP": "10.43.0.21", "clusterIPs": ["10.43.0.21", "fd00:43::21"]}}),
        ),
    ];
    let slices = vec![
        slice(
            json!({"metadata": {"name": "db-1", "namespace": "prod", "labels": {"kubernetes.io/service-name": "db"}},
            "addressType": "IPv4",
            "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}],
            "endpoints": [
                {"addresses": ["10.42.0.5"], "hostname": "db-0", "conditions": {"ready": true}},
                {"addresses": ["10.42.0.6"], "conditions": {}},
                {"addresses": ["10.42.0.7"], "conditions": {"ready": false}},
            ]}),
        ),
        // A ClusterIP service's endpoints are not its A records.
        slice(
            json!({"metadata": {"name": "web-1", "namespace": "default", "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4", "endpoints": [{"addresses": ["10.42.0.9"]}]}),
        ),
    ];
    ClusterRecords::build(
        "cluster.local",
        "10.43.0.10".parse().expect("ip"),
        7,
        &services,
        &slices,
    )
    .expect("index")
}

fn addresses(answer: &Answer) -> Vec<String> {
    answer
        .answers
        .iter()
        .map(|r| match &r.data {
            RData::A(a) => a.0.to_string(),
            RData::AAAA(a) => a.0.to_string(),
            other => format!("{other}"),
        })
        .collect()
}

#[test]
fn a_cluster_ip_service_answers_its_address_and_nodata_for_the_other_family() {
    let records = index();
    let a = records
        .answer(&name("web.default.svc.cluster.local."), RecordType::A)
        .expect("ours");
    assert_eq!(
        (a.code, addresses(&a)),
        (ResponseCode::NoError, vec!["10.43.0.20".to_string()])
    );
    assert_eq!(a.answers[0].ttl, TTL);
    let aaaa = records
        .answer(&name("web.default.svc.cluster.local."), RecordType::AAAA)
        .expect("ours");
    assert_eq!(aaaa.code, ResponseCode::NoError);
    assert!(aaaa.answers.is_empty());
    assert_eq!(aaaa.soa.as_ref().map(|s| s.record_type()), Some(RecordType::SOA));
    let dual = records
        .answer(&name("DUAL.default.svc.cluster.local."), RecordType::AAAA)
        .expect("ours");
    assert_eq!(addresses(&dual), vec!["fd00:43::21".to_string()]);
}

#[test]
fn missing_names_are_nxdomain_and_existing_parents_nodata() {
    let records = index();
    for missing in [
        "nope.default.svc.cluster.local.",
        "web.nope.svc.cluster.local.",
        "nope.cluster.local.",
        "x.y.web.default.svc.cluster.local.",
    ] {
        let answer = records.answer(&name(missing), RecordType::A).expect("ours");
        assert_eq!(answer.code, ResponseCode::NXDomain, "{missing}");
        assert!(answer.soa.is_some());
    }
    for existing in [
        "cluster.local.",
        "svc.cluster.local.",
        "default.svc.cluster.local.",
        "_tcp.web.default.svc.cluster.local.",
    ] {
        let answer = records.answer(&name(existing), RecordType::A).expect("ours");
        assert_eq!(
            (answer.code, answer.answers.len()),
            (ResponseCode::NoError, 0),
            "{existing}"
        );
    }
}

#[test]
fn a_headless_service_answers_its_ready_endpoints_and_their_hostnames() {
    let records = index();
    let all = records
        .answer(&name("db.prod.svc.cluster.local."), RecordType::A)
        .expect("ours");
    assert_eq!(
        addresses(&all),
        vec!["10.42.0.5".to_string(), "10.42.0.6".to_string()]
    );
    let host = records
        .answer(&name("db-0.db.prod.svc.cluster.local."), RecordType::A)
        .expect("ours");
    assert_eq!(addresses(&host), vec!["10.42.0.5".to_string()]);
    let by_address = records
        .answer(&name("10-42-0-6.db.prod.svc.cluster.local."), RecordType::A)
        .expect("ours");
    assert_eq!(addresses(&by_address), vec!["10.42.0.6".to_string()]);
    let not_ready = records
        .answer(&name("10-42-0-7.db.prod.svc.cluster.local."), RecordType::A)
        .expect("ours");
    assert_eq!(not_ready.code, ResponseCode::NXDomain);
}

#[test]
fn srv_records_name_the_service_or_each_endpoint_with_addresses_as_additionals() {
    let records = index();
    let cluster_ip = records
        .answer(
            &name("_http._tcp.web.default.svc.cluster.local."),
            RecordType::SRV,
        )
        .expect("ours");
    let RData::SRV(srv) = &cluster_ip.answers[0].data else {
        panic!("an SRV")
    };
    assert_eq!(
        (srv.port, srv.target.to_string()),
        (80, "web.default.svc.cluster.local.".to_string())
    );
    assert_eq!(cluster_ip.additionals.len(), 1);
    let headless = records
        .answer(&name("_pg._tcp.db.prod.svc.cluster.local."), RecordType::SRV)
        .expect("ours");
    let targets: Vec<String> = headless
        .answers
        .iter()
        .map(|r| match &r.data {
            RData::SRV(s) => format!("{} {} {}", s.weight, s.port, s.target),
            _ => String::new(),
        })
        .collect();
    assert_eq!(
        targets,
        vec![
            "50 5432 db-0.db.prod.svc.cluster.local.",
            "50 5432 10-42-0-6.db.prod.svc.cluster.local."
        ]
    );
    let wrong_protocol = records
        .answer(
            &name("_http._udp.web.default.svc.cluster.local."),
            RecordType::SRV,
        )
        .expect("ours");
    assert_eq!(wrong_protocol.code, ResponseCode::NXDomain);
    let a_of_srv_name = records
        .answer(&name("_http._tcp.web.default.svc.cluster.local."), RecordType::A)
        .expect("ours");
    assert_eq!(
        (a_of_srv_name.code, a_of_srv_name.answers.len()),
        (ResponseCode::NoError, 0)
    );
}

#[test]
fn external_names_are_cnames_to_chase_and_pods_answer_their_dashed_address() {
    let records = index();
    let ext = records
        .answer(&name("ext.default.svc.cluster.local."), RecordType::A)
        .expect("ours");
    assert!(matches!(&ext.answers[0].data, RData::CNAME(c) if c.0.to_string() == "example.test."));
    assert_eq!(ext.chase, Some(name("example.test.")));
    let pod = records
        .answer(&name("10-42-0-99.anything.pod.cluster.local."), RecordType::A)
        .expect("ours");
    assert_eq!(addresses(&pod), vec!["10.42.0.99".to_string()]);
    let bad = records
        .answer(&name("not-an-ip.default.pod.cluster.local."), RecordType::A)
        .expect("ours");
    assert_eq!(bad.code, ResponseCode::NXDomain);
    let version = records
        .answer(&name("dns-version.cluster.local."), RecordType::TXT)
        .expect("ours");
    assert_eq!(version.answers.len(), 1);
}

#[test]
fn reverse_lookups_answer_known_addresses_and_leave_the_rest_to_the_upstream() {
    let records = index();
    let service = records
        .answer(&name("20.0.43.10.in-addr.arpa."), RecordType::PTR)
        .expect("ours");
    assert!(
        matches!(&service.answers[0].data, RData::PTR(p) if p.0.to_string() == "web.default.svc.cluster.local.")
    );
    let endpoint = records
        .answer(&name("5.0.42.10.in-addr.arpa."), RecordType::PTR)
        .expect("ours");
    assert!(
        matches!(&endpoint.answers[0].data, RData::PTR(p) if p.0.to_string() == "db-0.db.prod.svc.cluster.local.")
    );
    assert!(
        records
            .answer(&name("1.1.168.192.in-addr.arpa."), RecordType::PTR)
            .is_none()
    );
    assert!(records.answer(&name("example.test."), RecordType::A).is_none());
}

#[test]
fn a_bad_domain_is_refused() {
    assert!(ClusterRecords::build("bad..domain", "10.43.0.10".parse().expect("ip"), 1, &[], &[]).is_err());
}
