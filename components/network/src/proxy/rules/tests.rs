use super::*;
use crate::proxy::model::{Endpoint, Protocol};
use std::net::Ipv4Addr;

fn cidr() -> Ipv4Net {
    "10.42.0.0/16".parse().unwrap()
}

fn endpoint(last: u8, local: bool) -> Endpoint {
    Endpoint {
        ip: Ipv4Addr::new(10, 42, 0, last),
        port: 8080,
        local,
        ready: true,
        serving: true,
        terminating: false,
    }
}

fn web(endpoints: Vec<Endpoint>) -> ServicePort {
    ServicePort {
        name: "default/web".into(),
        protocol: Protocol::Tcp,
        cluster_ip: Ipv4Addr::new(10, 43, 0, 20),
        port: 80,
        node_port: Some(30080),
        external_ips: vec![],
        affinity_seconds: None,
        external_local: false,
        internal_local: false,
        endpoints,
    }
}

fn verdict(r: &Ruleset, map: &'static str, key: &str) -> Option<String> {
    r.elements.get(&(map, key.to_string())).cloned()
}

#[test]
fn a_service_balances_over_its_endpoints() {
    let r = render(&[web(vec![endpoint(5, true), endpoint(6, false)])], cidr());
    let target = verdict(&r, "service-ips", "10.43.0.20 . tcp . 80").unwrap();
    let svc = target.strip_prefix("goto ").unwrap();
    let rules = &r.chains[svc];
    assert!(rules[0].contains("ip saddr != 10.42.0.0/16 jump mark-for-masquerade"));
    assert!(rules[1].starts_with("numgen random mod 2 vmap"), "{rules:?}");
    let ext = verdict(&r, "service-nodeports", "tcp . 30080").unwrap();
    let ext_rules = &r.chains[ext.strip_prefix("goto ").unwrap()];
    assert_eq!(
        ext_rules,
        &vec!["jump mark-for-masquerade".to_string(), format!("goto {svc}")]
    );
    let dnats: Vec<&String> = r
        .chains
        .values()
        .flatten()
        .filter(|l| l.contains("dnat to"))
        .collect();
    assert_eq!(dnats.len(), 2);
    assert!(dnats.iter().any(|l| l.ends_with("dnat to 10.42.0.5:8080")));
    assert_eq!(verdict(&r, "cluster-ips", "10.43.0.20").as_deref(), Some(""));
}

#[test]
fn no_endpoints_reject_and_local_policies_drop() {
    let r = render(&[web(vec![])], cidr());
    assert_eq!(
        verdict(&r, "no-endpoint-services", "10.43.0.20 . tcp . 80").as_deref(),
        Some("goto reject-chain")
    );
    assert_eq!(
        verdict(&r, "no-endpoint-nodeports", "tcp . 30080").as_deref(),
        Some("goto reject-chain")
    );
    assert!(r.chains.is_empty());

    let mut internal = web(vec![endpoint(6, false)]);
    internal.internal_local = true;
    let r = render(&[internal], cidr());
    assert_eq!(
        verdict(&r, "no-endpoint-services", "10.43.0.20 . tcp . 80").as_deref(),
        Some("drop")
    );

    let mut external = web(vec![endpoint(5, true), endpoint(6, false)]);
    external.external_local = true;
    external.external_ips = vec![Ipv4Addr::new(192, 168, 5, 1)];
    let r = render(&[external], cidr());
    let ext = verdict(&r, "service-ips", "192.168.5.1 . tcp . 80").unwrap();
    let ext_rules = &r.chains[ext.strip_prefix("goto ").unwrap()];
    assert!(ext_rules[0].starts_with("ip saddr 10.42.0.0/16 goto svc-"));
    let local = ext_rules.last().unwrap().strip_prefix("goto ").unwrap();
    assert!(local.starts_with("svl-"));
    assert_eq!(
        r.chains[local].len(),
        1,
        "one local endpoint: {:?}",
        r.chains[local]
    );
    assert!(
        !ext_rules.iter().any(|l| l == "jump mark-for-masquerade"),
        "source kept for outside traffic"
    );
}

#[test]
fn terminating_endpoints_are_used_only_as_a_fallback() {
    let mut terminating = endpoint(7, true);
    terminating.ready = false;
    terminating.terminating = true;
    let r = render(&[web(vec![terminating.clone(), endpoint(5, true)])], cidr());
    assert!(!r.chains.values().flatten().any(|l| l.contains("10.42.0.7:8080")));
    let r = render(&[web(vec![terminating])], cidr());
    assert!(r.chains.values().flatten().any(|l| l.contains("10.42.0.7:8080")));
}

#[test]
fn affinity_sends_a_known_client_to_its_endpoint() {
    let mut sp = web(vec![endpoint(5, true), endpoint(6, true)]);
    sp.affinity_seconds = Some(600);
    let r = render(&[sp], cidr());
    assert_eq!(r.sets.len(), 2);
    assert!(r.sets.values().all(|t| *t == 600));
    let svc = r.chains.iter().find(|(k, _)| k.starts_with("svc-")).unwrap().1;
    assert_eq!(svc.iter().filter(|l| l.starts_with("ip saddr @aff-")).count(), 2);
    assert!(r.chains.values().flatten().any(|l| l.starts_with("update @aff-")));
}

#[test]
fn a_sync_writes_only_what_changed() {
    let fixed = fixed_rules("10.43.0.0/16".parse().unwrap());
    let before = render(&[web(vec![endpoint(5, true), endpoint(6, true)])], cidr());
    let leftovers =
        Existing::parse("table ip bonsai {\n\tchain ep-0000 {\n\t}\n\tchain pod-forward {\n\t}\n}\n");
    let full = script(None, &before, &fixed, &leftovers);
    assert!(full.contains("flush map ip bonsai service-ips"));
    assert!(
        full.contains("delete chain ip bonsai ep-0000"),
        "a leftover from before is removed"
    );
    assert!(
        !full.contains("pod-forward"),
        "other parts of the table are left alone"
    );
    let after = render(&[web(vec![endpoint(5, true)])], cidr());
    let delta = script(Some(&before), &after, &fixed, &Existing::default());
    assert!(!delta.contains("flush map"));
    assert!(
        !delta.contains("svc-nat-prerouting jump"),
        "fixed chains are not rewritten"
    );
    assert_eq!(
        delta.matches("delete chain").count(),
        1,
        "the removed endpoint's chain: {delta}"
    );
    assert_eq!(
        delta.matches("flush chain").count(),
        2,
        "the service chain, and the removed one: {delta}"
    );
    assert!(!delta.contains("add element"), "the map entry did not change");
    let same = script(Some(&after), &after, &fixed, &Existing::default());
    assert!(
        !same.contains("flush") && !same.contains("add rule") && !same.contains("element"),
        "{same}"
    );
}

#[test]
fn listing_finds_only_the_proxys_objects() {
    let listing = "table ip bonsai {\n\tset aff-12-60 {\n\t}\n\tmap service-ips {\n\t}\n\tchain svc-nat-output {\n\t}\n\tchain svc-ab {\n\t}\n\tchain pod-postrouting {\n\t}\n}\n";
    let e = Existing::parse(listing);
    assert_eq!(e.chains.into_iter().collect::<Vec<_>>(), ["svc-ab"]);
    assert_eq!(e.sets.into_iter().collect::<Vec<_>>(), ["aff-12-60"]);
}
