//! A pod's `/etc/resolv.conf` and `/etc/hosts`, as the kubelet makes them (`pkg/kubelet/network/dns/dns.go`,
//! `kubelet_pods.go` `managedHostsFileContent`) and containerd's CRI writes them: `dnsPolicy` ClusterFirst,
//! ClusterFirstWithHostNet, Default and None, `dnsConfig` merged in, Kubernetes' limits on name servers and
//! search paths, and the managed hosts file with the pod's own names and `hostAliases`.

use k8s_openapi::api::core::v1::Pod;

/// At most this many name servers are used (glibc reads no more).
pub const MAX_NAMESERVERS: usize = 3;
/// At most this many search domains (kubelet's `MaxDNSSearchPaths`).
pub const MAX_SEARCH_PATHS: usize = 32;
/// At most this many characters of search domains (kubelet's `MaxDNSSearchListChars`).
pub const MAX_SEARCH_CHARS: usize = 2048;

/// The resolver configuration: what `resolv.conf` holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResolvConf {
    pub nameservers: Vec<String>,
    pub searches: Vec<String>,
    pub options: Vec<String>,
}

impl ResolvConf {
    /// Parses a `resolv.conf` (the node's): `nameserver`, `search` (and `domain`), `options` lines.
    pub fn parse(text: &str) -> ResolvConf {
        let mut conf = ResolvConf::default();
        for line in text.lines() {
            let line = line.split(['#', ';']).next().unwrap_or("");
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => conf.nameservers.extend(words.next().map(String::from)),
                // The last search or domain line wins, as in glibc.
                Some("search") | Some("domain") => conf.searches = words.map(String::from).collect(),
                Some("options") => conf.options.extend(words.map(String::from)),
                _ => {}
            }
        }
        conf
    }

    /// The file, as containerd's CRI writes it: search, then name servers, then options.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if !self.searches.is_empty() {
            out.push_str(&format!("search {}\n", self.searches.join(" ")));
        }
        for server in &self.nameservers {
            out.push_str(&format!("nameserver {server}\n"));
        }
        if !self.options.is_empty() {
            out.push_str(&format!("options {}\n", self.options.join(" ")));
        }
        out
    }
}

/// What the node knows about cluster DNS.
#[derive(Clone, Debug)]
pub struct ClusterDns {
    /// `--cluster-dns` (10.43.0.10 by default).
    pub nameservers: Vec<String>,
    /// `--cluster-domain` (cluster.local).
    pub domain: String,
    /// The node's own resolver configuration (`--resolv-conf`).
    pub host: ResolvConf,
}

/// Appends what is not there yet, keeping order.
fn merge_unique(into: &mut Vec<String>, more: impl IntoIterator<Item = String>) {
    for item in more {
        if !into.contains(&item) {
            into.push(item);
        }
    }
}

/// Merges options by name (`ndots:2` replaces `ndots:5`), as kubelet's `mergeDNSOptions`.
fn merge_options(into: &mut Vec<String>, more: impl IntoIterator<Item = String>) {
    for option in more {
        let name = option.split(':').next().unwrap_or("").to_string();
        match into
            .iter_mut()
            .find(|o| o.split(':').next() == Some(name.as_str()))
        {
            Some(existing) => *existing = option,
            None => into.push(option),
        }
    }
}

/// Kubernetes' limits: three name servers; search paths cut to 32 domains and 2048 characters.
fn fit_limits(conf: &mut ResolvConf) {
    conf.nameservers.truncate(MAX_NAMESERVERS);
    conf.searches.truncate(MAX_SEARCH_PATHS);
    let mut total = 0;
    let mut keep = 0;
    for search in &conf.searches {
        // Joined by single spaces.
        let cost = search.len() + usize::from(keep > 0);
        if total + cost > MAX_SEARCH_CHARS {
            break;
        }
        total += cost;
        keep += 1;
    }
    conf.searches.truncate(keep);
}

/// The pod's resolver configuration for its `dnsPolicy` and `dnsConfig`.
pub fn pod_resolv_conf(pod: &Pod, dns: &ClusterDns) -> ResolvConf {
    let spec = pod.spec.clone().unwrap_or_default();
    let namespace = pod.metadata.namespace.clone().unwrap_or_else(|| "default".into());
    let host_network = spec.host_network.unwrap_or(false);
    let policy = spec.dns_policy.as_deref().unwrap_or("ClusterFirst");
    // ClusterFirst on the host's network is Default (the pod sees the node's DNS); ClusterFirstWithHostNet is
    // how a host-network pod asks for cluster DNS. Without a cluster DNS address, ClusterFirst falls back too.
    let cluster = match policy {
        "ClusterFirstWithHostNet" => true,
        "ClusterFirst" => !host_network,
        _ => false,
    } && !dns.nameservers.is_empty();
    let mut conf = match policy {
        "None" => ResolvConf::default(),
        _ if cluster => {
            let domain = &dns.domain;
            let mut searches = vec![
                format!("{namespace}.svc.{domain}"),
                format!("svc.{domain}"),
                domain.clone(),
            ];
            merge_unique(&mut searches, dns.host.searches.iter().cloned());
            ResolvConf {
                nameservers: dns.nameservers.clone(),
                searches,
                options: vec!["ndots:5".into()],
            }
        }
        _ => dns.host.clone(),
    };
    if let Some(config) = &spec.dns_config {
        merge_unique(
            &mut conf.nameservers,
            config.nameservers.clone().unwrap_or_default(),
        );
        merge_unique(&mut conf.searches, config.searches.clone().unwrap_or_default());
        merge_options(
            &mut conf.options,
            config.options.iter().flatten().filter_map(|o| {
                let name = o.name.clone()?;
                Some(match &o.value {
                    Some(value) => format!("{name}:{value}"),
                    None => name,
                })
            }),
        );
    }
    fit_limits(&mut conf);
    conf
}

/// The pod's host name: `spec.hostname`, else its name (cut to 63 characters as the kubelet does, without a
/// trailing `-` or `.`); and its fully qualified name when it has a subdomain.
pub fn pod_hostname(pod: &Pod, cluster_domain: &str) -> (String, Option<String>) {
    let spec = pod.spec.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let mut hostname = spec.hostname.filter(|h| !h.is_empty()).unwrap_or(name);
    if hostname.len() > 63 {
        hostname.truncate(63);
        while hostname.ends_with(['-', '.']) {
            hostname.pop();
        }
    }
    let namespace = pod.metadata.namespace.clone().unwrap_or_else(|| "default".into());
    let fqdn = spec
        .subdomain
        .filter(|s| !s.is_empty())
        .map(|sub| format!("{hostname}.{sub}.{namespace}.svc.{cluster_domain}"));
    (hostname, fqdn)
}

/// The kubelet-managed `/etc/hosts` of a pod on its own network: localhost, the IPv6 names, the pod's IPs with its
/// names, and `hostAliases`. A host-network pod gets the node's file (`host_file`) with the aliases appended.
pub fn pod_hosts_file(pod: &Pod, pod_ips: &[String], cluster_domain: &str, host_file: &str) -> String {
    let spec = pod.spec.clone().unwrap_or_default();
    let mut out = if spec.host_network.unwrap_or(false) {
        host_file.to_string()
    } else {
        let mut out = String::from("# Kubernetes-managed hosts file.\n");
        out.push_str("127.0.0.1\tlocalhost\n");
        out.push_str("::1\tlocalhost ip6-localhost ip6-loopback\n");
        out.push_str("fe00::0\tip6-localnet\n");
        out.push_str("fe00::0\tip6-mcastprefix\n");
        out.push_str("fe00::1\tip6-allnodes\n");
        out.push_str("fe00::2\tip6-allrouters\n");
        let (hostname, fqdn) = pod_hostname(pod, cluster_domain);
        for ip in pod_ips {
            match &fqdn {
                Some(fqdn) => out.push_str(&format!("{ip}\t{fqdn}\t{hostname}\n")),
                None => out.push_str(&format!("{ip}\t{hostname}\n")),
            }
        }
        out
    };
    let aliases = spec.host_aliases.unwrap_or_default();
    if !aliases.is_empty() {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str("\n# Entries added by HostAliases.\n");
        for alias in aliases {
            let names = alias.hostnames.unwrap_or_default();
            out.push_str(&format!("{}\t{}\n", alias.ip, names.join("\t")));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "web-0", "namespace": "shop"}, "spec": spec}))
            .unwrap()
    }

    fn dns() -> ClusterDns {
        ClusterDns {
            nameservers: vec!["10.43.0.10".into()],
            domain: "cluster.local".into(),
            host: ResolvConf::parse("# from DHCP\nnameserver 192.168.1.1\nsearch lan\noptions edns0\n"),
        }
    }

    #[test]
    fn cluster_first_uses_cluster_dns_with_the_namespace_searches_and_ndots_5() {
        let conf = pod_resolv_conf(&pod(json!({"containers": []})), &dns());
        assert_eq!(
            conf.render(),
            "search shop.svc.cluster.local svc.cluster.local cluster.local lan\nnameserver 10.43.0.10\noptions ndots:5\n"
        );
    }

    #[test]
    fn host_network_default_and_none_policies() {
        let host = pod_resolv_conf(&pod(json!({"hostNetwork": true, "containers": []})), &dns());
        assert_eq!(
            host,
            dns().host,
            "ClusterFirst on the host network is the node's DNS"
        );
        let with_host_net = pod_resolv_conf(
            &pod(json!({"hostNetwork": true, "dnsPolicy": "ClusterFirstWithHostNet", "containers": []})),
            &dns(),
        );
        assert_eq!(with_host_net.nameservers, ["10.43.0.10"]);
        let default = pod_resolv_conf(&pod(json!({"dnsPolicy": "Default", "containers": []})), &dns());
        assert_eq!(default.nameservers, ["192.168.1.1"]);
        let none = pod_resolv_conf(
            &pod(json!({"dnsPolicy": "None", "containers": [], "dnsConfig": {
                "nameservers": ["1.1.1.1"], "searches": ["a.example"], "options": [{"name": "ndots", "value": "2"}, {"name": "rotate"}]}})),
            &dns(),
        );
        assert_eq!(
            none.render(),
            "search a.example\nnameserver 1.1.1.1\noptions ndots:2 rotate\n"
        );
    }

    #[test]
    fn dns_config_merges_and_limits_apply() {
        let merged = pod_resolv_conf(
            &pod(
                json!({"containers": [], "dnsConfig": {"nameservers": ["10.43.0.10", "8.8.8.8", "9.9.9.9", "1.1.1.1"],
                "searches": ["extra.example"], "options": [{"name": "ndots", "value": "1"}]}}),
            ),
            &dns(),
        );
        assert_eq!(
            merged.nameservers,
            ["10.43.0.10", "8.8.8.8", "9.9.9.9"],
            "three at most, no duplicate"
        );
        assert_eq!(merged.searches.last().unwrap(), "extra.example");
        assert_eq!(
            merged.options,
            ["ndots:1"],
            "an option given again replaces the default"
        );
        let many: Vec<String> = (0..40).map(|i| format!("d{i}.example")).collect();
        let limited = pod_resolv_conf(
            &pod(json!({"dnsPolicy": "None", "containers": [], "dnsConfig": {"searches": many}})),
            &dns(),
        );
        assert_eq!(limited.searches.len(), 32);
    }

    #[test]
    fn the_managed_hosts_file_names_the_pod_and_its_aliases() {
        let p = pod(json!({"hostname": "db", "subdomain": "cluster", "containers": [],
            "hostAliases": [{"ip": "10.0.0.9", "hostnames": ["foo.local", "bar.local"]}]}));
        let hosts = pod_hosts_file(&p, &["10.42.0.7".into()], "cluster.local", "");
        assert!(
            hosts.starts_with("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n"),
            "{hosts}"
        );
        assert!(
            hosts.contains("10.42.0.7\tdb.cluster.shop.svc.cluster.local\tdb\n"),
            "{hosts}"
        );
        assert!(
            hosts.ends_with("\n# Entries added by HostAliases.\n10.0.0.9\tfoo.local\tbar.local\n"),
            "{hosts}"
        );
        let plain = pod_hosts_file(
            &pod(json!({"containers": []})),
            &["10.42.0.8".into()],
            "cluster.local",
            "",
        );
        assert!(plain.contains("10.42.0.8\tweb-0\n"));
        let host_net = pod_hosts_file(
            &pod(json!({"hostNetwork": true, "containers": []})),
            &[],
            "cluster.local",
            "127.0.0.1 localhost\n",
        );
        assert_eq!(host_net, "127.0.0.1 localhost\n");
    }

    #[test]
    fn long_pod_names_are_cut_to_a_valid_host_name() {
        let long = format!("{}-x", "a".repeat(62));
        let p: Pod =
            serde_json::from_value(json!({"metadata": {"name": long}, "spec": {"containers": []}})).unwrap();
        let (hostname, fqdn) = pod_hostname(&p, "cluster.local");
        assert_eq!(
            hostname,
            "a".repeat(62),
            "cut to 63, then the trailing '-' dropped"
        );
        assert!(fqdn.is_none());
    }
}
