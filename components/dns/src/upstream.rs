//! Which resolvers names outside the cluster go to, chosen from the host's `resolv.conf` as k3s chooses them
//! (`pkg/agent/config`: a resolv.conf naming only loopback resolvers, such as systemd-resolved's stub
//! 127.0.0.53, is replaced by `/run/systemd/resolve/resolv.conf` when that names real ones). The same choice is
//! what pods with `dnsPolicy: Default` get, where a loopback resolver would be the pod's own loopback.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// systemd-resolved's list of the real upstream servers.
pub const SYSTEMD_RESOLV_CONF: &str = "/run/systemd/resolve/resolv.conf";

/// The `nameserver` addresses of a resolv.conf (malformed lines skipped, as the C library skips them).
pub fn nameservers(resolv_conf: &str) -> Vec<IpAddr> {
    resolv_conf
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => words.next()?.split('%').next()?.parse().ok(),
                _ => None,
            }
        })
        .collect()
}

fn only_loopback(resolv_conf: &str) -> bool {
    let servers = nameservers(resolv_conf);
    !servers.is_empty() && servers.iter().all(IpAddr::is_loopback)
}

/// The resolv.conf to use: `explicit` (`--resolv-conf`) as given; else `/etc/resolv.conf`, unless it names only
/// loopback resolvers and systemd-resolved's file names others. Returns the path and its text (empty when
/// unreadable: names outside the cluster then fail, and the caller says so).
pub fn host_resolv_conf(explicit: Option<&Path>) -> (PathBuf, String) {
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    if let Some(path) = explicit {
        return (path.to_path_buf(), read(path));
    }
    let etc = PathBuf::from("/etc/resolv.conf");
    let text = read(&etc);
    if only_loopback(&text) {
        let systemd = PathBuf::from(SYSTEMD_RESOLV_CONF);
        let real = read(&systemd);
        if !nameservers(&real).is_empty() && !only_loopback(&real) {
            return (systemd, real);
        }
    }
    (etc, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nameservers_are_read_and_bad_lines_skipped() {
        let text = "# comment\nsearch example.test\nnameserver 10.0.0.2\nnameserver fe80::1%eth0\nnameserver bogus\noptions ndots:2\n";
        assert_eq!(
            nameservers(text),
            vec![
                "10.0.0.2".parse::<IpAddr>().expect("ip"),
                "fe80::1".parse().expect("ip")
            ]
        );
        assert!(only_loopback("nameserver 127.0.0.53\n"));
        assert!(!only_loopback("nameserver 127.0.0.53\nnameserver 10.0.0.2\n"));
        assert!(!only_loopback(""));
    }
}
