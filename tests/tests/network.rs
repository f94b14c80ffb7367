//! The pod network for real: network namespaces made by the test play the node, its pods, an "upstream"
//! host and a second node; `bonsai network` programs them; TCP connections opened inside the namespaces
//! show who reaches whom and with which source address.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Output};
use std::time::Duration;

use bonsai_e2e::{NetNs, bonsai_bin, fails, ok, wait_until};

fn ip(ns: &NetNs, args: &[&str]) -> String {
    let out = Command::new("ip")
        .arg("-n")
        .arg(&ns.name)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Links two namespaces with a veth pair and gives each end an address in a /24.
fn link(a: &NetNs, a_ip: &str, b: &NetNs, b_ip: &str) {
    a.link_to(a_ip, b, b_ip);
}

/// `bonsai network ARGS` run inside the node's namespace, with its own data directory.
fn network(node: &NetNs, data: &std::path::Path, args: &[&str]) -> Output {
    node.net_command(bonsai_bin())
        .arg("network")
        .arg("-d")
        .arg(data)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn json(out: Output) -> serde_json::Value {
    serde_json::from_str(&ok(out)).unwrap()
}

/// Runs `f` on a thread that has entered `ns`; sockets it makes stay in `ns`.
fn in_ns<T: Send + 'static>(ns: &NetNs, f: impl FnOnce() -> T + Send + 'static) -> T {
    let name = ns.name.clone();
    std::thread::spawn(move || {
        let file = std::fs::File::open(format!("/var/run/netns/{name}")).unwrap();
        nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        f()
    })
    .join()
    .unwrap()
}

/// Connects from `from` to a listener in `to` at `addr`; returns the source address the listener saw, or None
/// if no connection could be made within a second.
fn seen_source(from: &NetNs, to: &NetNs, addr: Ipv4Addr) -> Option<Ipv4Addr> {
    let listener = in_ns(to, || TcpListener::bind("0.0.0.0:0").unwrap());
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let target = SocketAddr::from((addr, port));
    let client = in_ns(from, move || {
        TcpStream::connect_timeout(&target, Duration::from_secs(1))
    });
    let mut client = client.ok()?;
    client.write_all(b"hi").unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    loop {
        match listener.accept() {
            Ok((mut stream, peer)) => {
                stream.set_nonblocking(false).unwrap();
                let mut buf = [0u8; 2];
                stream.read_exact(&mut buf).unwrap();
                assert_eq!(&buf, b"hi");
                return match peer.ip() {
                    std::net::IpAddr::V4(v4) => Some(v4),
                    std::net::IpAddr::V6(_) => None,
                };
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
}

fn netns_path(ns: &NetNs) -> String {
    format!("/var/run/netns/{}", ns.name)
}

fn pod_ip(value: &serde_json::Value) -> Ipv4Addr {
    value["ip"].as_str().unwrap().parse().unwrap()
}

fn links(ns: &NetNs) -> String {
    ip(ns, &["-o", "link", "show"])
}

#[test]
fn pods_on_one_node_reach_each_other_and_the_outside_through_masquerade() {
    let node = NetNs::new();
    let upstream = NetNs::new();
    let pod1 = NetNs::new();
    let pod2 = NetNs::new();
    link(&node, "192.168.201.1", &upstream, "192.168.201.2");
    ip(&node, &["route", "add", "default", "via", "192.168.201.2"]);
    let data = tempfile::tempdir().unwrap();
    let d = data.path();
    let cidr = ["--pod-cidr", "10.42.0.0/24"];

    let a = json(network(
        &node,
        d,
        &[&cidr[..], &["add", "sandbox-1", &netns_path(&pod1)]].concat(),
    ));
    let b = json(network(
        &node,
        d,
        &[&cidr[..], &["add", "sandbox-2", &netns_path(&pod2)]].concat(),
    ));
    let (ip1, ip2) = (pod_ip(&a), pod_ip(&b));
    assert_eq!(ip1, Ipv4Addr::new(10, 42, 0, 2));
    assert_eq!(ip2, Ipv4Addr::new(10, 42, 0, 3));
    assert_eq!(a["gateway"], "10.42.0.1");
    // Inside the pod: eth0 with the uplink's MTU less VXLAN's 50 bytes, a default route via the bridge.
    assert!(ip(&pod1, &["-o", "link", "show", "eth0"]).contains("mtu 1450"));
    assert!(ip(&pod1, &["route"]).contains("default via 10.42.0.1 dev eth0"));
    assert!(ip(&node, &["-o", "addr", "show", "cni0"]).contains("10.42.0.1/24"));

    // Pod to pod: direct, addresses kept. Pod to outside: masqueraded to the node's address.
    assert_eq!(seen_source(&pod1, &pod2, ip2), Some(ip1));
    assert_eq!(seen_source(&pod2, &pod1, ip1), Some(ip2));
    assert_eq!(
        seen_source(&pod1, &upstream, Ipv4Addr::new(192, 168, 201, 2)),
        Some(Ipv4Addr::new(192, 168, 201, 1))
    );

    // Setting a sandbox up again gives the same address; leases are listed.
    let again = json(network(
        &node,
        d,
        &[&cidr[..], &["add", "sandbox-1", &netns_path(&pod1)]].concat(),
    ));
    assert_eq!(pod_ip(&again), ip1);
    assert_eq!(seen_source(&pod1, &pod2, ip2), Some(ip1));
    let listed = ok(network(&node, d, &[&cidr[..], &["ls"]].concat()));
    assert!(
        listed.contains("sandbox-1") && listed.contains("10.42.0.3"),
        "{listed}"
    );

    // Teardown: the veth pair goes (from the node and from the pod), the address is free again.
    ok(network(&node, d, &[&cidr[..], &["del", "sandbox-2"]].concat()));
    let host_veth = b["hostInterface"].as_str().unwrap();
    assert!(!links(&node).contains(host_veth));
    assert!(!links(&pod2).contains("eth0"));
    assert!(!ok(network(&node, d, &[&cidr[..], &["ls"]].concat())).contains("sandbox-2"));
    assert_eq!(seen_source(&pod1, &pod2, ip2), None);
    // Deleting what is gone is not an error.
    ok(network(&node, d, &[&cidr[..], &["del", "sandbox-2"]].concat()));

    // Cleanup removes everything bonsai made on the node.
    ok(network(&node, d, &["cleanup"]));
    let left = links(&node);
    for name in ["cni0", "flannel.1", "veth"] {
        assert!(!left.contains(name), "{name} left: {left}");
    }
    assert!(!links(&pod1).contains("eth0"));
    let tables = ok(node.net_command("nft").args(["list", "tables"]).output().unwrap());
    assert!(!tables.contains("bonsai"), "{tables}");
    assert_eq!(
        std::fs::read_dir(d.join("agent/network/leases")).unwrap().count(),
        0
    );
    ok(network(&node, d, &["cleanup"]));
}

#[test]
fn bad_plans_are_refused_before_anything_is_programmed() {
    let node = NetNs::new();
    let upstream = NetNs::new();
    let pod = NetNs::new();
    link(&node, "192.168.203.1", &upstream, "192.168.203.2");
    let data = tempfile::tempdir().unwrap();
    let d = data.path();
    let add = ["add", "s", &netns_path(&pod)];
    for (flags, expected) in [
        (
            vec![
                "--cluster-cidr",
                "10.42.0.0/16",
                "--service-cidr",
                "10.42.128.0/17",
            ],
            "overlaps --cluster-cidr",
        ),
        (vec!["--cluster-cidr", "10.42.0.1/16"], "host bits"),
        (vec!["--cluster-cidr", "ten.42/16"], "not an IPv4 CIDR"),
        (vec!["--pod-cidr", "10.99.0.0/24"], "not inside --cluster-cidr"),
        (vec![], "--pod-cidr is required"),
        (
            vec![
                "--pod-cidr",
                "10.42.0.0/24",
                "--service-cidr",
                "192.168.0.0/16",
                "--node-ip",
                "192.168.203.1",
            ],
            "overlaps the host's network 192.168.203.0/24 (on uplink)",
        ),
        (
            vec!["--pod-cidr", "10.42.0.0/24", "--node-ip", "192.0.2.9"],
            "not an address of this host",
        ),
        (
            vec!["--pod-cidr", "10.42.0.0/24", "--flannel-backend", "ipsec"],
            "not one of vxlan, host-gw, none",
        ),
    ] {
        let err = fails(network(&node, d, &[&flags[..], &add[..]].concat()));
        assert!(err.contains(expected), "{flags:?}: {err}");
    }
    let err = fails(network(
        &node,
        d,
        &[
            "--pod-cidr",
            "10.42.0.0/24",
            "--node-ip",
            "192.168.203.1",
            "peers",
            "--peer",
            "n2,10.42.1.0/24,192.168.203.2",
        ],
    ));
    assert!(err.contains("VTEP MAC"), "{err}");
    // Nothing was made by any of them.
    let left = links(&node);
    assert!(!left.contains("cni0") && !left.contains("flannel.1"), "{left}");
    assert!(!links(&pod).contains("eth0"));
    let tables = ok(node.net_command("nft").args(["list", "tables"]).output().unwrap());
    assert!(!tables.contains("bonsai"), "{tables}");
}

#[test]
fn two_nodes_carry_pod_traffic_over_vxlan_and_host_gw() {
    let node1 = NetNs::new();
    let node2 = NetNs::new();
    let pod1 = NetNs::new();
    let pod2 = NetNs::new();
    link(&node1, "192.168.202.1", &node2, "192.168.202.2");
    let (data1, data2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let flags1 = ["--pod-cidr", "10.42.0.0/24", "--node-ip", "192.168.202.1"];
    let flags2 = ["--pod-cidr", "10.42.1.0/24", "--node-ip", "192.168.202.2"];

    for backend in ["vxlan", "host-gw"] {
        let b = ["--flannel-backend", backend];
        let annotations1 = json(network(
            &node1,
            data1.path(),
            &[&flags1[..], &b, &["peers"]].concat(),
        ));
        let annotations2 = json(network(
            &node2,
            data2.path(),
            &[&flags2[..], &b, &["peers"]].concat(),
        ));
        assert_eq!(annotations1["flannel.alpha.coreos.com/backend-type"], backend);
        assert_eq!(
            annotations1["flannel.alpha.coreos.com/public-ip"],
            "192.168.202.1"
        );
        let peer = |annotations: &serde_json::Value, name: &str, cidr: &str, ip: &str| {
            let data: serde_json::Value = serde_json::from_str(
                annotations["flannel.alpha.coreos.com/backend-data"]
                    .as_str()
                    .unwrap(),
            )
            .unwrap();
            match data["VtepMAC"].as_str() {
                Some(mac) => format!("{name},{cidr},{ip},{mac}"),
                None => format!("{name},{cidr},{ip}"),
            }
        };
        let to_node2 = peer(&annotations2, "node2", "10.42.1.0/24", "192.168.202.2");
        let to_node1 = peer(&annotations1, "node1", "10.42.0.0/24", "192.168.202.1");
        ok(network(
            &node1,
            data1.path(),
            &[&flags1[..], &b, &["peers", "--peer", &to_node2]].concat(),
        ));
        ok(network(
            &node2,
            data2.path(),
            &[&flags2[..], &b, &["peers", "--peer", &to_node1]].concat(),
        ));
        let a = json(network(
            &node1,
            data1.path(),
            &[&flags1[..], &b, &["add", "p1", &netns_path(&pod1)]].concat(),
        ));
        let c = json(network(
            &node2,
            data2.path(),
            &[&flags2[..], &b, &["add", "p2", &netns_path(&pod2)]].concat(),
        ));
        let (ip1, ip2) = (pod_ip(&a), pod_ip(&c));
        assert_eq!(ip2, Ipv4Addr::new(10, 42, 1, 2));

        let routes = ip(&node1, &["route"]);
        match backend {
            "vxlan" => {
                assert!(
                    routes.contains("10.42.1.0/24 via 10.42.1.0 dev flannel.1"),
                    "{routes}"
                );
                let mac = to_node2.rsplit(',').next().unwrap();
                assert!(ip(&node1, &["neigh", "show", "dev", "flannel.1"]).contains(mac));
                let fdb = ok(Command::new("bridge")
                    .args(["-n", &node1.name, "fdb", "show", "dev", "flannel.1"])
                    .output()
                    .unwrap());
                assert!(fdb.contains(&format!("{mac} dst 192.168.202.2")), "{fdb}");
                assert!(ip(&pod1, &["-o", "link", "show", "eth0"]).contains("mtu 1450"));
            }
            _ => {
                assert!(
                    routes.contains("10.42.1.0/24 via 192.168.202.2 dev uplink"),
                    "{routes}"
                );
                assert!(ip(&pod1, &["-o", "link", "show", "eth0"]).contains("mtu 1500"));
            }
        }
        // Pod to pod across nodes, both ways, addresses kept.
        assert_eq!(seen_source(&pod1, &pod2, ip2), Some(ip1), "{backend}");
        assert_eq!(seen_source(&pod2, &pod1, ip1), Some(ip2), "{backend}");

        // node2 leaves: node1's route (and VXLAN entries) to it go, and so does the traffic.
        ok(network(
            &node1,
            data1.path(),
            &[&flags1[..], &b, &["peers"]].concat(),
        ));
        assert!(!ip(&node1, &["route"]).contains("10.42.1.0/24"));
        if backend == "vxlan" {
            assert!(!ip(&node1, &["neigh", "show", "dev", "flannel.1"]).contains("lladdr"));
        }
        assert_eq!(seen_source(&pod1, &pod2, ip2), None, "{backend}");

        for (node, data) in [(&node1, &data1), (&node2, &data2)] {
            ok(network(node, data.path(), &["cleanup"]));
            let left = links(node);
            assert!(
                !left.contains("cni0") && !left.contains("flannel.1") && !left.contains("veth"),
                "{left}"
            );
            assert!(!ip(node, &["route"]).contains("10.42."), "{backend}");
        }
    }
}

#[test]
fn nodes_find_each_other_through_their_node_objects() {
    use bonsai_e2e::{Running, Server};
    // The server's namespace is node1; node2 reaches its API over the link between them.
    let server = Server::start(&["--tls-san", "192.168.204.1"]);
    let node1 = &server.netns;
    let node2 = NetNs::new();
    let (pod1, pod2) = (NetNs::new(), NetNs::new());
    link(node1, "192.168.204.1", &node2, "192.168.204.2");
    let nodes = r#"{"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}, "spec": {"podCIDR": "10.42.0.0/24"}},
        {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n2"}, "spec": {"podCIDR": "10.42.1.0/24"}}]}"#;
    let mut apply = server.kubectl_command(33);
    let mut child = apply
        .args(["apply", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(nodes.as_bytes()).unwrap();
    ok(child.wait_with_output().unwrap());

    let (data1, data2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let kubeconfig = server.kubeconfig.display().to_string();
    let daemon = |ns: &NetNs, data: &tempfile::TempDir, node_ip: &str, name: &str| {
        let args = [
            "network",
            "-d",
            &data.path().display().to_string(),
            "--node-ip",
            node_ip,
            "run",
            "--kubeconfig",
            &kubeconfig,
            "--server",
            "https://192.168.204.1:6443",
            "--node-name",
            name,
            "--cleanup",
        ]
        .map(String::from);
        let mut running = Running::start_with(ns.net_command(bonsai_bin()), &args);
        running.wait_for_log("node network ready", Duration::from_secs(30));
        running
    };
    let mut daemon1 = daemon(node1, &data1, "192.168.204.1", "n1");
    let mut daemon2 = daemon(&node2, &data2, "192.168.204.2", "n2");

    // Each node publishes its VTEP and address, and routes to the other's pod subnet.
    wait_until("node1's route to n2", || {
        ip(node1, &["route"]).contains("10.42.1.0/24 via 10.42.1.0 dev flannel.1")
    });
    wait_until("node2's route to n1", || {
        ip(&node2, &["route"]).contains("10.42.0.0/24 via 10.42.0.0 dev flannel.1")
    });
    let annotations = ok(server.kubectl(
        33,
        &["get", "node", "n2", "-o", "jsonpath={.metadata.annotations}"],
    ));
    let annotations: serde_json::Value = serde_json::from_str(&annotations).unwrap();
    assert_eq!(annotations["flannel.alpha.coreos.com/public-ip"], "192.168.204.2");
    assert_eq!(annotations["flannel.alpha.coreos.com/backend-type"], "vxlan");
    let mac = ip(&node2, &["-o", "link", "show", "flannel.1"]);
    let data: serde_json::Value = serde_json::from_str(
        annotations["flannel.alpha.coreos.com/backend-data"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert!(mac.contains(data["VtepMAC"].as_str().unwrap()), "{mac} {data}");

    let flags1 = ["--pod-cidr", "10.42.0.0/24", "--node-ip", "192.168.204.1"];
    let flags2 = ["--pod-cidr", "10.42.1.0/24", "--node-ip", "192.168.204.2"];
    let ip1 = pod_ip(&json(network(
        node1,
        data1.path(),
        &[&flags1[..], &["add", "p1", &netns_path(&pod1)]].concat(),
    )));
    let ip2 = pod_ip(&json(network(
        &node2,
        data2.path(),
        &[&flags2[..], &["add", "p2", &netns_path(&pod2)]].concat(),
    )));
    assert_eq!(seen_source(&pod1, &pod2, ip2), Some(ip1));

    // n2 leaves the cluster: node1 forgets it.
    ok(server.kubectl(33, &["delete", "node", "n2"]));
    wait_until("node1 to drop its route to n2", || {
        !ip(node1, &["route"]).contains("10.42.1.0/24")
    });
    assert_eq!(seen_source(&pod1, &pod2, ip2), None);

    // Stopped with --cleanup, each daemon removes what its node's network made.
    for (daemon, ns) in [(&mut daemon1, node1), (&mut daemon2, &node2)] {
        daemon.signal(libc::SIGTERM);
        assert!(daemon.wait(Duration::from_secs(10)).success());
        let left = links(ns);
        assert!(
            !left.contains("cni0") && !left.contains("flannel.1") && !left.contains("veth"),
            "{left}"
        );
        let tables = ok(ns.net_command("nft").args(["list", "tables"]).output().unwrap());
        assert!(!tables.contains("bonsai"), "{tables}");
    }
}

/// A TCP server in `ns` on `port`, answering each connection with its name and the source address it saw, until
/// dropped.
struct Backend {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Backend {
    fn start(ns: &NetNs, port: u16, name: &'static str) -> Backend {
        use std::sync::atomic::Ordering;
        let listener = in_ns(ns, move || TcpListener::bind(("0.0.0.0", port)).unwrap());
        listener.set_nonblocking(true).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut stream, peer)) => {
                        let _ = stream.write_all(format!("{name} {}", peer.ip()).as_bytes());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Backend {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Connects from `from` to `addr:port` and returns the answer (`name source`), or why no connection was made.
fn ask(from: &NetNs, addr: Ipv4Addr, port: u16) -> Result<String, std::io::ErrorKind> {
    in_ns(from, move || {
        let target = SocketAddr::from((addr, port));
        let mut stream = TcpStream::connect_timeout(&target, Duration::from_secs(1)).map_err(|e| e.kind())?;
        stream.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).map_err(|e| e.kind())?;
        Ok(answer)
    })
}

/// The backends that answered `times` connections (names only), or the first failure.
fn answering(
    from: &NetNs,
    addr: Ipv4Addr,
    port: u16,
    times: usize,
) -> Result<std::collections::BTreeSet<String>, std::io::ErrorKind> {
    (0..times)
        .map(|_| ask(from, addr, port).map(|a| a.split(' ').next().unwrap_or_default().to_string()))
        .collect()
}

fn apply(server: &bonsai_e2e::Server, manifest: &str) {
    let mut child = server
        .kubectl_command(33)
        .args(["apply", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(manifest.as_bytes())
        .unwrap();
    ok(child.wait_with_output().unwrap());
}

fn endpoint_slice(ips: &[Ipv4Addr]) -> String {
    let endpoints: Vec<String> = ips
        .iter()
        .map(|ip| format!(r#"{{"addresses": ["{ip}"], "nodeName": "n1", "conditions": {{"ready": true}}}}"#))
        .collect();
    format!(
        r#"{{"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {{"name": "web-1", "namespace": "default", "labels": {{"kubernetes.io/service-name": "web"}}}},
            "addressType": "IPv4", "ports": [{{"name": "", "port": 8080, "protocol": "TCP"}}],
            "endpoints": [{}]}}"#,
        endpoints.join(",")
    )
}

#[test]
fn services_balance_over_their_endpoints_and_follow_endpoint_slices() {
    use bonsai_e2e::{Running, Server};
    // The node has its address and, like a real node, a default route (service addresses are routed nowhere
    // else) before the server starts, so that the `kubernetes` service points at that address.
    let (node, upstream) = (NetNs::new(), NetNs::new());
    link(&node, "192.168.205.1", &upstream, "192.168.205.2");
    ip(&node, &["route", "add", "default", "via", "192.168.205.2"]);
    let server = Server::start_in(node, tempfile::tempdir().unwrap(), &[]);
    let node = &server.netns;
    let (b1, b2, client) = (NetNs::new(), NetNs::new(), NetNs::new());

    // The Node gets its pod subnet from the server's node IPAM, and its address is what ServiceLB hands out.
    apply(
        &server,
        r#"{"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}}"#,
    );
    wait_until("node IPAM to give n1 a pod subnet", || {
        ok(server.kubectl(33, &["get", "node", "n1", "-o", "jsonpath={.spec.podCIDR}"])) == "10.42.0.0/24"
    });
    ok(server.kubectl(
        33,
        &[
            "patch",
            "node",
            "n1",
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status": {"addresses": [{"type": "InternalIP", "address": "192.168.205.1"}]}}"#,
        ],
    ));
    let data = tempfile::tempdir().unwrap();
    let kubeconfig = server.kubeconfig.display().to_string();
    let args = [
        "network",
        "-d",
        &data.path().display().to_string(),
        "--node-ip",
        "192.168.205.1",
        "run",
        "--kubeconfig",
        &kubeconfig,
        "--node-name",
        "n1",
        "--cleanup",
    ];
    let mut daemon = Running::start_with(node.net_command(bonsai_bin()), &args);
    daemon.wait_for_log("node network ready", Duration::from_secs(30));
    let flags = ["--pod-cidr", "10.42.0.0/24", "--node-ip", "192.168.205.1"];
    let add = |id: &str, ns: &NetNs| {
        pod_ip(&json(network(
            node,
            data.path(),
            &[&flags[..], &["add", id, &netns_path(ns)]].concat(),
        )))
    };
    let (ip1, ip2, _client_ip) = (add("b1", &b1), add("b2", &b2), add("client", &client));
    let _backends = (Backend::start(&b1, 8080, "b1"), Backend::start(&b2, 8080, "b2"));

    apply(
        &server,
        r#"{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
            "spec": {"type": "NodePort", "ports": [{"port": 80, "targetPort": 8080, "nodePort": 30080}]}}"#,
    );
    apply(&server, &endpoint_slice(&[ip1, ip2]));
    let cluster_ip: Ipv4Addr =
        ok(server.kubectl(33, &["get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}"]))
            .parse()
            .unwrap();
    assert!(cluster_ip.octets()[..2] == [10, 43], "{cluster_ip}");

    // A ClusterIP from a pod and a NodePort from outside both spread over the two backends.
    let both: std::collections::BTreeSet<String> = ["b1", "b2"].map(String::from).into();
    wait_until("the ClusterIP to answer", || ask(&client, cluster_ip, 80).is_ok());
    assert_eq!(answering(&client, cluster_ip, 80, 40), Ok(both.clone()));
    assert_eq!(
        answering(&upstream, "192.168.205.1".parse().unwrap(), 30080, 40),
        Ok(both)
    );
    let answer = ask(&upstream, "192.168.205.1".parse().unwrap(), 30080).unwrap();
    assert!(
        answer.ends_with(" 10.42.0.1"),
        "outside traffic is masqueraded with externalTrafficPolicy Cluster: {answer}"
    );

    // The `kubernetes` service reaches the API server from a pod.
    let version = ok(client
        .command("curl")
        .args(["-sk", "--max-time", "5", "https://10.43.0.1/version"])
        .output()
        .unwrap());
    assert!(version.contains("gitVersion"), "{version}");

    // A headless service has no virtual IP and nothing to program.
    apply(
        &server,
        r#"{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "headless", "namespace": "default"},
            "spec": {"clusterIP": "None", "ports": [{"port": 80}]}}"#,
    );
    assert_eq!(
        ok(server.kubectl(
            33,
            &["get", "svc", "headless", "-o", "jsonpath={.spec.clusterIPs}"]
        )),
        r#"["None"]"#
    );

    // A backend taken out of the EndpointSlice stops getting traffic.
    apply(&server, &endpoint_slice(&[ip1]));
    wait_until("b2 to stop getting traffic", || {
        answering(&client, cluster_ip, 80, 20).is_ok_and(|b| b.len() == 1)
    });
    assert_eq!(
        answering(&client, cluster_ip, 80, 30),
        Ok(["b1".to_string()].into())
    );

    // With no endpoints, connections are refused at once rather than left to time out.
    apply(&server, &endpoint_slice(&[]));
    wait_until("the service to refuse connections", || {
        ask(&client, cluster_ip, 80) == Err(std::io::ErrorKind::ConnectionRefused)
    });

    // ClientIP affinity: one client, one backend.
    apply(&server, &endpoint_slice(&[ip1, ip2]));
    ok(server.kubectl(
        33,
        &[
            "patch",
            "svc",
            "web",
            "-p",
            r#"{"spec": {"sessionAffinity": "ClientIP"}}"#,
        ],
    ));
    wait_until("affinity to hold", || {
        answering(&client, cluster_ip, 80, 20).is_ok_and(|b| b.len() == 1)
    });
    assert_eq!(answering(&client, cluster_ip, 80, 30).map(|b| b.len()), Ok(1));

    // internalTrafficPolicy Local only uses endpoints on this node: none here is one, so traffic is dropped.
    apply(
        &server,
        &endpoint_slice(&[ip1, ip2]).replace("\"nodeName\": \"n1\"", "\"nodeName\": \"n2\""),
    );
    ok(server.kubectl(
        33,
        &[
            "patch",
            "svc",
            "web",
            "-p",
            r#"{"spec": {"internalTrafficPolicy": "Local", "sessionAffinity": "None"}}"#,
        ],
    ));
    wait_until("traffic to other nodes' endpoints to be dropped", || {
        ask(&client, cluster_ip, 80) == Err(std::io::ErrorKind::TimedOut)
    });
    apply(&server, &endpoint_slice(&[ip1, ip2]));
    wait_until("local endpoints to get traffic again", || {
        ask(&client, cluster_ip, 80).is_ok()
    });
    ok(server.kubectl(
        33,
        &[
            "patch",
            "svc",
            "web",
            "-p",
            r#"{"spec": {"internalTrafficPolicy": "Cluster"}}"#,
        ],
    ));

    // externalTrafficPolicy Local keeps the client's address.
    ok(server.kubectl(
        33,
        &[
            "patch",
            "svc",
            "web",
            "-p",
            r#"{"spec": {"externalTrafficPolicy": "Local", "sessionAffinity": "None"}}"#,
        ],
    ));
    wait_until("the node port to keep source addresses", || {
        ask(&upstream, "192.168.205.1".parse().unwrap(), 30080).is_ok_and(|a| a.ends_with(" 192.168.205.2"))
    });

    // A LoadBalancer gets the node's address from ServiceLB, and its port answers there.
    apply(
        &server,
        r#"{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "lb", "namespace": "default"},
            "spec": {"type": "LoadBalancer", "ports": [{"port": 8081, "targetPort": 8080}]}}"#,
    );
    apply(
        &server,
        &endpoint_slice(&[ip1, ip2])
            .replace("web-1", "lb-1")
            .replace("service-name\": \"web", "service-name\": \"lb"),
    );
    wait_until("ServiceLB to give lb the node's address", || {
        ok(server.kubectl(
            33,
            &[
                "get",
                "svc",
                "lb",
                "-o",
                "jsonpath={.status.loadBalancer.ingress[0].ip}",
            ],
        )) == "192.168.205.1"
    });
    wait_until("the load balancer's port to answer", || {
        ask(&upstream, "192.168.205.1".parse().unwrap(), 8081).is_ok()
    });

    // Addresses and ports that are taken, or outside their range, are refused by the API with a 422.
    let manifest = |ip: &str, node_port: u32| {
        format!(
            r#"{{"apiVersion": "v1", "kind": "Service", "metadata": {{"name": "clash"}},
                "spec": {{"type": "NodePort", "clusterIP": "{ip}", "ports": [{{"port": 1, "nodePort": {node_port}}}]}}}}"#
        )
    };
    for (ip, port, message) in [
        (cluster_ip.to_string(), 30081, "provided IP is already allocated"),
        (
            "10.99.0.1".to_string(),
            30081,
            "The range of valid IPs is 10.43.0.0/16",
        ),
        ("".to_string(), 30080, "provided port is already allocated"),
        ("".to_string(), 40000, "The range of valid ports is 30000-32767"),
    ] {
        let mut child = server
            .kubectl_command(27)
            .args(["create", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(manifest(&ip, port).as_bytes())
            .unwrap();
        let error = fails(child.wait_with_output().unwrap());
        assert!(error.contains("is invalid") && error.contains(message), "{error}");
    }

    // Deleted, the service stops answering; stopped with --cleanup, the proxy's rules are gone.
    ok(server.kubectl(33, &["delete", "svc", "web"]));
    wait_until("the deleted service to stop answering", || {
        ask(&client, cluster_ip, 80).is_err()
    });
    daemon.signal(libc::SIGTERM);
    assert!(daemon.wait(Duration::from_secs(10)).success());
    let tables = ok(node.net_command("nft").args(["list", "tables"]).output().unwrap());
    assert!(!tables.contains("bonsai"), "{tables}");
}
