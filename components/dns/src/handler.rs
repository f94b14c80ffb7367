//! One DNS question in, one answer out: the cluster zone from the index, everything else from the upstream
//! resolvers through hickory's caching resolver. Whatever a query holds, the answer is a DNS message (FORMERR,
//! NOTIMP, SERVFAIL at worst); nothing a client sends ends the server.

use std::sync::{Arc, RwLock};

use hickory_server::net::runtime::Time;
use hickory_server::net::{DnsError, NetError};
use hickory_server::proto::op::{Edns, MessageType, Metadata, OpCode, ResponseCode};
use hickory_server::proto::rr::{Name, Record, RecordType};
use hickory_server::resolver::TokioResolver;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;

use crate::metrics::QueryCounts;
use crate::records::{Answer, ClusterRecords};

/// The cluster zone's current index: swapped whole by the watcher, read by every query.
pub type SharedRecords = Arc<RwLock<Arc<ClusterRecords>>>;

/// hickory's resolver is not `Debug`.
#[allow(missing_debug_implementations)]
pub struct ClusterDnsHandler {
    pub records: SharedRecords,
    /// `None` when there is no upstream: names outside the cluster are SERVFAIL.
    pub upstream: Option<TokioResolver>,
    pub counts: Arc<QueryCounts>,
}

impl ClusterDnsHandler {
    async fn forward(&self, name: &Name, rtype: RecordType) -> Answer {
        let failed = |code| Answer {
            code,
            answers: Vec::new(),
            additionals: Vec::new(),
            soa: None,
            chase: None,
        };
        let Some(resolver) = &self.upstream else {
            return failed(ResponseCode::ServFail);
        };
        match resolver.lookup(name.clone(), rtype).await {
            Ok(lookup) => Answer {
                code: ResponseCode::NoError,
                answers: lookup.answers().to_vec(),
                additionals: Vec::new(),
                soa: None,
                chase: None,
            },
            Err(NetError::Dns(DnsError::NoRecordsFound(none))) => Answer {
                soa: none.soa.map(|soa| soa.into_record_of_rdata()),
                ..failed(none.response_code)
            },
            Err(NetError::Dns(DnsError::ResponseCode(code))) => failed(code),
            Err(e) => {
                tracing::debug!(%name, ?rtype, error = %e, "upstream lookup failed");
                failed(ResponseCode::ServFail)
            }
        }
    }

    /// The index as it is now (one read of the shared pointer per query).
    fn current(&self) -> Option<Arc<ClusterRecords>> {
        self.records.read().ok().map(|r| r.clone())
    }

    async fn resolve(&self, records: Option<&ClusterRecords>, name: &Name, rtype: RecordType) -> Answer {
        let Some(mut answer) = records.and_then(|r| r.answer(name, rtype)) else {
            return self.forward(name, rtype).await;
        };
        if let Some(target) = answer.chase.take() {
            // An ExternalName: the target's records follow the CNAME, as a recursive server gives them.
            let chased = match records.and_then(|r| r.answer(&target, rtype)) {
                Some(inside) => inside,
                None => self.forward(&target, rtype).await,
            };
            answer.answers.extend(chased.answers);
        }
        answer
    }
}

#[async_trait::async_trait]
impl RequestHandler for ClusterDnsHandler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response: R,
    ) -> ResponseInfo {
        let builder = MessageResponseBuilder::from_message_request(request);
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.recursion_available = true;
        let mut edns = None;
        if let Some(asked) = request.edns.as_ref() {
            let mut ours = Edns::new();
            ours.set_max_payload(asked.max_payload().max(512));
            ours.set_version(0);
            edns = Some(ours);
        }
        let code = if request.metadata.message_type != MessageType::Query {
            Some(ResponseCode::FormErr)
        } else if request.metadata.op_code != OpCode::Query {
            Some(ResponseCode::NotImp)
        } else if request.edns.as_ref().is_some_and(|e| e.version() > 0) {
            Some(ResponseCode::BADVERS)
        } else {
            None
        };
        let query = match (code, request.request_info()) {
            (None, Ok(info)) => Some((Name::from(info.query.name().clone()), info.query.query_type())),
            (Some(code), _) => {
                metadata.response_code = code;
                None
            }
            (None, Err(_)) => {
                metadata.response_code = ResponseCode::FormErr;
                None
            }
        };
        let records = self.current();
        let answer = match &query {
            Some((name, rtype)) => Some(self.resolve(records.as_deref(), name, *rtype).await),
            None => None,
        };
        let mut builder = builder;
        if let Some(edns) = &edns {
            builder.edns(edns);
        }
        let empty: Vec<Record> = Vec::new();
        let sent = match &answer {
            Some(answer) => {
                metadata.response_code = answer.code;
                if let Some(records) = &records
                    && let Some((name, _)) = &query
                {
                    metadata.authoritative = records.zone().zone_of(&name.to_lowercase());
                }
                let message = builder.build(
                    metadata,
                    answer.answers.iter(),
                    empty.iter(),
                    answer.soa.iter(),
                    answer.additionals.iter(),
                );
                response.send_response(message).await
            }
            None => response.send_response(builder.build_no_records(metadata)).await,
        };
        self.counts.count(metadata.response_code);
        match sent {
            Ok(info) => info,
            Err(e) => {
                tracing::debug!(error = %e, "cannot send a DNS response");
                let mut failed = Metadata::response_from_request(&request.metadata);
                failed.response_code = ResponseCode::ServFail;
                ResponseInfo::from(hickory_server::proto::op::Header {
                    metadata: failed,
                    counts: Default::default(),
                })
            }
        }
    }
}
