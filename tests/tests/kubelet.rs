//! The node agent against the real binary: `bonsai server` runs its node's agent, which registers the Node as
//! the kubelet does and keeps its Lease and status fresh.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use bonsai_e2e::as_node::get;
use bonsai_e2e::{Server, ok, wait_until};

#[test]
fn the_server_registers_its_node_and_keeps_its_lease_fresh() {
    let server = Server::start_with_agent(&["--node-name", "Edge-1", "--node-label", "tier=edge"]);
    wait_until("the node to register and turn Ready", || {
        let out = server.kubectl(33, &["get", "node", "edge-1", "-o", "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}"]);
        out.status.success() && String::from_utf8_lossy(&out.stdout) == "True"
    });
    let node = get(&server, &["node", "edge-1"]);
    let labels = &node["metadata"]["labels"];
    assert_eq!(labels["kubernetes.io/hostname"], "edge-1", "{node}");
    assert_eq!(labels["kubernetes.io/os"], "linux");
    assert_eq!(labels["node-role.kubernetes.io/control-plane"], "true");
    assert_eq!(labels["tier"], "edge");
    let status = &node["status"];
    let cpus = std::thread::available_parallelism().unwrap().get().to_string();
    assert_eq!(status["capacity"]["cpu"], cpus.as_str());
    assert_eq!(status["capacity"]["pods"], "110");
    assert!(status["capacity"]["memory"].as_str().unwrap().ends_with("Ki"), "{status}");
    assert!(status["allocatable"]["ephemeral-storage"].is_string());
    assert!(
        status["nodeInfo"]["containerRuntimeVersion"]
            .as_str()
            .unwrap()
            .starts_with("bonsai://"),
        "{status}"
    );
    assert!(status["nodeInfo"]["kubeletVersion"].as_str().unwrap().starts_with("v1.33."));
    assert_eq!(status["nodeInfo"]["operatingSystem"], "linux");
    assert_eq!(status["addresses"][1], serde_json::json!({"type": "Hostname", "address": "edge-1"}));
    assert_eq!(status["daemonEndpoints"]["kubeletEndpoint"]["Port"], 10250);
    let types: Vec<&str> = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["MemoryPressure", "DiskPressure", "PIDPressure", "Ready"]);
    // The node IPAM controller gives the registered node its pod subnet.
    wait_until("the node's pod CIDR", || {
        get(&server, &["node", "edge-1"])["spec"]["podCIDR"].is_string()
    });

    // The Lease in kube-node-lease is owned by the Node and renewed every 10 s.
    let lease = |server: &Server| get(server, &["-n", "kube-node-lease", "lease", "edge-1"]);
    wait_until("the node's lease", || {
        server
            .kubectl(33, &["-n", "kube-node-lease", "get", "lease", "edge-1"])
            .status
            .success()
    });
    let first = lease(&server);
    assert_eq!(first["spec"]["holderIdentity"], "edge-1");
    assert_eq!(first["spec"]["leaseDurationSeconds"], 40);
    assert_eq!(first["metadata"]["ownerReferences"][0]["kind"], "Node");
    let renewed = std::time::Instant::now();
    loop {
        std::thread::sleep(std::time::Duration::from_millis(500));
        if lease(&server)["spec"]["renewTime"] != first["spec"]["renewTime"] {
            break;
        }
        assert!(renewed.elapsed().as_secs() < 15, "the lease was not renewed");
    }
}
