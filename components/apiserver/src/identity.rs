//! The names the API server answers to, for its serving certificate: loopback, the node's
//! addresses and hostname, the in-cluster service names, the first service IP, and any `--tls-san`.

use std::net::IpAddr;

/// The node's own addresses: every address of an interface that is up, except loopback and
/// link-local ones.
pub fn node_addresses() -> Vec<IpAddr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return vec![];
    };
    let mut out: Vec<IpAddr> = addrs
        .filter(|a| a.flags.contains(nix::net::if_::InterfaceFlags::IFF_UP))
        // The pod network's own devices (the cni0 bridge, flannel's VXLAN device, pods' veths) carry cluster
        // addresses, not the node's.
        .filter(|a| {
            !matches!(a.interface_name.as_str(), "cni0" | "flannel.1")
                && !a.interface_name.starts_with("veth")
        })
        .filter_map(|a| {
            let addr = a.address?;
            if let Some(v4) = addr.as_sockaddr_in() {
                return Some(IpAddr::V4(v4.ip()));
            }
            addr.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
        })
        .filter(|ip| !ip.is_loopback() && !is_link_local(ip))
        .collect();
    out.sort();
    out.dedup();
    out
}

fn is_link_local(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    }
}

pub fn hostname() -> Option<String> {
    nix::unistd::gethostname()
        .ok()?
        .into_string()
        .ok()
        .filter(|h| !h.is_empty())
}

/// Every name the serving certificate must carry, without duplicates, in a stable order.
pub fn serving_names(first_service_ip: IpAddr, cluster_domain: &str, extra: &[String]) -> Vec<String> {
    let mut names: Vec<String> = vec!["127.0.0.1".into(), "::1".into(), "localhost".into()];
    names.extend(node_addresses().iter().map(IpAddr::to_string));
    names.extend(hostname());
    names.extend(
        ["kubernetes", "kubernetes.default", "kubernetes.default.svc"]
            .iter()
            .map(|s| s.to_string()),
    );
    names.push(format!("kubernetes.default.svc.{cluster_domain}"));
    names.push(first_service_ip.to_string());
    names.extend(extra.iter().cloned());
    let mut seen = std::collections::HashSet::new();
    names.retain(|n| seen.insert(n.clone()));
    names
}

/// The first address of a CIDR, which Kubernetes gives the `kubernetes` service (10.43.0.1 for
/// k3s's default 10.43.0.0/16).
pub fn first_ip(cidr: &str) -> Result<IpAddr, String> {
    let (addr, len) = cidr
        .split_once('/')
        .ok_or_else(|| format!("{cidr:?} is not a CIDR (address/length)"))?;
    let addr: IpAddr = addr
        .parse()
        .map_err(|_| format!("{cidr:?}: {addr:?} is not an IP address"))?;
    let len: u32 = len
        .parse()
        .map_err(|_| format!("{cidr:?}: {len:?} is not a prefix length"))?;
    match addr {
        IpAddr::V4(v4) if len <= 30 => {
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            Ok(IpAddr::V4((u32::from(v4) & mask).wrapping_add(1).into()))
        }
        IpAddr::V6(v6) if len <= 126 => {
            let mask = if len == 0 { 0 } else { u128::MAX << (128 - len) };
            Ok(IpAddr::V6((u128::from(v6) & mask).wrapping_add(1).into()))
        }
        _ => Err(format!(
            "{cidr:?}: prefix length {len} leaves no room for services"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_service_ip_of_a_cidr() {
        assert_eq!(first_ip("10.43.0.0/16").unwrap().to_string(), "10.43.0.1");
        assert_eq!(first_ip("10.43.7.9/16").unwrap().to_string(), "10.43.0.1");
        assert_eq!(first_ip("fd00:43::/112").unwrap().to_string(), "fd00:43::1");
        assert!(first_ip("10.43.0.0").is_err());
        assert!(first_ip("10.43.0.0/31").is_err());
        assert!(first_ip("banana/16").is_err());
    }

    #[test]
    fn serving_names_cover_loopback_and_the_service_names() {
        let names = serving_names(
            "10.43.0.1".parse().unwrap(),
            "cluster.local",
            &["edge.example".into()],
        );
        for n in [
            "127.0.0.1",
            "localhost",
            "kubernetes.default.svc.cluster.local",
            "10.43.0.1",
            "edge.example",
        ] {
            assert!(names.contains(&n.to_string()), "{n} missing from {names:?}");
        }
    }
}
