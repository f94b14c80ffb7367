//! Pods' host ports (`containerPort` with `hostPort`), as the CNI `portmap` plugin maps them: traffic to one of
//! the node's own addresses (or to the `hostIP` given) on the host port is DNATed to the pod's address and
//! container port, both when it arrives from outside (prerouting) and when the node itself sends it (output).
//!
//! The mappings live in two chains of bonsai's table that only this module writes; each change rewrites both in
//! one `nft -f` transaction, so a reader never sees half a set.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use crate::NetworkError;
use crate::nft::{self, TABLE};

const PREROUTING: &str = "hostports-prerouting";
const OUTPUT: &str = "hostports-output";

/// One host port of one pod.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct HostPort {
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
    /// Only traffic to this address of the node; `None` (or 0.0.0.0 in the pod spec): any of its addresses.
    pub host_ip: Option<Ipv4Addr>,
    pub host_port: u16,
    pub pod_ip: Ipv4Addr,
    pub container_port: u16,
}

/// The nft script that makes the chains hold exactly `ports`.
pub fn script(ports: &[HostPort]) -> String {
    // The chains run just before the service proxy's (dstnat, -100), as portmap's do before kube-proxy's. (nft
    // takes the `dstnat` keyword only in prerouting: the numbers say the same for both hooks.)
    let mut out = format!(
        "table ip {TABLE} {{\n  chain {PREROUTING} {{ type nat hook prerouting priority -110; }}\n  chain {OUTPUT} \
         {{ type nat hook output priority -110; }}\n}}\nflush chain ip {TABLE} {PREROUTING}\nflush chain ip \
         {TABLE} {OUTPUT}\n"
    );
    for port in ports {
        let destination = match port.host_ip {
            Some(ip) if !ip.is_unspecified() => format!("ip daddr {ip}"),
            _ => "fib daddr type local".to_string(),
        };
        let protocol = port.protocol.to_lowercase();
        for chain in [PREROUTING, OUTPUT] {
            let _ = writeln!(
                out,
                "add rule ip {TABLE} {chain} {destination} {protocol} dport {} dnat to {}:{}",
                port.host_port, port.pod_ip, port.container_port
            );
        }
    }
    out
}

/// Makes the node's host-port chains hold exactly `ports`.
pub fn apply(ports: &[HostPort]) -> Result<(), NetworkError> {
    nft::apply(&script(ports))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_port_is_mapped_from_outside_and_from_the_node() {
        let ports = [
            HostPort {
                protocol: "TCP".into(),
                host_ip: None,
                host_port: 8080,
                pod_ip: Ipv4Addr::new(10, 42, 0, 5),
                container_port: 80,
            },
            HostPort {
                protocol: "UDP".into(),
                host_ip: Some(Ipv4Addr::new(192, 168, 1, 10)),
                host_port: 5353,
                pod_ip: Ipv4Addr::new(10, 42, 0, 6),
                container_port: 53,
            },
        ];
        let script = script(&ports);
        assert!(script.contains("flush chain ip bonsai hostports-prerouting\n"));
        for chain in ["hostports-prerouting", "hostports-output"] {
            assert!(
                script.contains(&format!(
                    "add rule ip bonsai {chain} fib daddr type local tcp dport 8080 dnat to 10.42.0.5:80\n"
                )),
                "{script}"
            );
            assert!(script.contains(&format!(
                "add rule ip bonsai {chain} ip daddr 192.168.1.10 udp dport 5353 dnat to 10.42.0.6:53\n"
            )));
        }
        // No ports: the chains stay, empty.
        assert!(!super::script(&[]).contains("add rule"));
    }
}
