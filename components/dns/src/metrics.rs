//! Queries answered, by response code: read by the metrics endpoint (and by tests) without a lock on the path
//! of a query beyond one short critical section.

use std::collections::BTreeMap;
use std::sync::Mutex;

use hickory_server::proto::op::ResponseCode;

#[derive(Debug, Default)]
pub struct QueryCounts {
    by_code: Mutex<BTreeMap<String, u64>>,
}

impl QueryCounts {
    pub fn count(&self, code: ResponseCode) {
        if let Ok(mut counts) = self.by_code.lock() {
            *counts.entry(code.to_str().to_ascii_uppercase()).or_default() += 1;
        }
    }

    /// (rcode name such as `NOERROR` or `NXDOMAIN`, queries), in name order.
    pub fn snapshot(&self) -> Vec<(String, u64)> {
        self.by_code
            .lock()
            .map(|c| c.iter().map(|(k, v)| (k.clone(), *v)).collect())
            .unwrap_or_default()
    }
}
