//! Responses sent, by response code, as CoreDNS counts them (`coredns_dns_responses_total{rcode}`): a counter
//! family in the process's metrics registry, served on the node's `/metrics`.

use hickory_server::proto::op::ResponseCode;

/// The `server` label: the one server block, as CoreDNS names the default one.
const SERVER: &str = "dns://:53";

#[derive(Debug, Clone, Default)]
pub struct QueryCounts {
    by_code: ::metrics::CounterVec<2>,
}

impl QueryCounts {
    /// The process's counts, registered in its metrics registry (once, however often this is called).
    pub fn registered() -> QueryCounts {
        static REGISTERED: std::sync::OnceLock<QueryCounts> = std::sync::OnceLock::new();
        REGISTERED
            .get_or_init(|| {
                let counts = QueryCounts::default();
                ::metrics::registry().register(
                    "coredns_dns_responses_total",
                    "Counter of response status codes",
                    counts.by_code.clone(),
                );
                counts
            })
            .clone()
    }

    pub fn count(&self, code: ResponseCode) {
        self.by_code.get_or_create(&labels(code)).inc();
    }

    /// Responses sent with `code`.
    pub fn get(&self, code: ResponseCode) -> u64 {
        self.by_code.get_or_create(&labels(code)).get()
    }
}

/// CoreDNS's rcode names: `NOERROR`, `NXDOMAIN`, `SERVFAIL`, ...
fn labels(code: ResponseCode) -> ::metrics::Labels<2> {
    [
        ("server", SERVER.to_string()),
        ("rcode", code.to_str().to_ascii_uppercase()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_are_counted_by_rcode_in_the_process_registry() {
        let counts = QueryCounts::registered();
        counts.count(ResponseCode::NXDomain);
        counts.count(ResponseCode::NoError);
        counts.count(ResponseCode::NXDomain);
        assert!(counts.get(ResponseCode::NXDomain) >= 2);
        let text = ::metrics::registry().encode().unwrap();
        assert!(
            text.contains("# TYPE coredns_dns_responses_total counter"),
            "{text}"
        );
        assert!(
            text.contains("coredns_dns_responses_total{server=\"dns://:53\",rcode=\"NXDOMAIN\"}"),
            "{text}"
        );
    }
}
