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

fn labels(code: ResponseCode) -> ::metrics::Labels<2> {
    [("server", SERVER.to_string()), ("rcode", rcode_name(code))]
}

/// CoreDNS's rcode names (miekg/dns's `RcodeToString`: `NOERROR`, `NXDOMAIN`, `SERVFAIL`, ...); a code without a
/// name is its number.
fn rcode_name(code: ResponseCode) -> String {
    let value = u16::from(code);
    let name = match value {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        6 => "YXDOMAIN",
        7 => "YXRRSET",
        8 => "NXRRSET",
        9 => "NOTAUTH",
        10 => "NOTZONE",
        16 => "BADSIG",
        17 => "BADKEY",
        18 => "BADTIME",
        19 => "BADMODE",
        20 => "BADNAME",
        21 => "BADALG",
        22 => "BADTRUNC",
        23 => "BADCOOKIE",
        _ => return value.to_string(),
    };
    name.to_string()
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
