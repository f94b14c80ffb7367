//! kube-controller-manager's certificate controllers for the kubelets' certificates:
//!
//! - approving (`csrapproving`, `pkg/controller/certificates/approver/sarapprove.go`): a client CSR of signer
//!   `kubernetes.io/kube-apiserver-client-kubelet` for `CN=system:node:<name>, O=system:nodes` is approved when it
//!   comes from a bootstrapper (`system:bootstrappers`, kube's `nodeclient` permission, which kubeadm and k3s
//!   grant that group) or from that very node renewing (`selfnodeclient`); a serving CSR of signer
//!   `kubernetes.io/kubelet-serving` is approved when its requester is `system:node:<name>` in `system:nodes`
//!   and its SANs are only that node's name and addresses (as the kubelet-csr-approver add-on decides; kube
//!   itself leaves them to an operator). Nothing is denied: a CSR this controller does not recognise is left for
//!   someone else (`kubectl certificate approve`).
//! - signing (`csrsigning`, `pkg/controller/certificates/signer`): an approved, not failed, not yet issued CSR
//!   of those two signers is checked against the signer's rules (`ValidateKubeletClientCSR`,
//!   `ValidateKubeletServingCSR`) and issued by the cluster CA for the lesser of a year and
//!   `spec.expirationSeconds`, back-dated 5 minutes; one that breaks the rules gets a `Failed` condition.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::certificates::v1::{CertificateSigningRequest, CertificateSigningRequestCondition};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, PostParams};
use kube::runtime::reflector::Store;
use tokio::sync::mpsc;

use crate::work;
use crate::{ControllerError, kube_error};

pub const KUBELET_CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";
pub const KUBELET_SERVING_SIGNER: &str = "kubernetes.io/kubelet-serving";
const NODE_PREFIX: &str = "system:node:";
const NODES_GROUP: &str = "system:nodes";
const BOOTSTRAPPERS: &str = "system:bootstrappers";
/// kube-controller-manager's `--cluster-signing-duration` default.
const SIGNING_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);
/// The signer back-dates certificates so that clocks a little behind accept them.
const BACKDATE: Duration = Duration::from_secs(5 * 60);

/// The cluster CA the signer issues with (kube-controller-manager's `--cluster-signing-cert-file`/`-key-file`).
#[derive(Clone)]
pub struct ClusterSigner {
    pub ca_cert_pem: String,
    pub ca_key_pem: String,
}

impl std::fmt::Debug for ClusterSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterSigner").finish_non_exhaustive()
    }
}

/// What a CSR asks for, read from its PEM request.
#[derive(Debug, Default, PartialEq)]
pub struct Request {
    pub common_name: String,
    pub organizations: Vec<String>,
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<String>,
    /// Email addresses and URIs, which no kubelet certificate may have.
    pub other_names: usize,
}

/// Parses a PEM `CERTIFICATE REQUEST` (checking its self-signature).
pub fn parse_request(pem: &[u8]) -> Result<Request, String> {
    use x509_parser::extensions::{GeneralName, ParsedExtension};
    use x509_parser::prelude::FromDer;
    let (_, block) = x509_parser::pem::parse_x509_pem(pem).map_err(|e| format!("not PEM: {e}"))?;
    let (_, csr) = x509_parser::certification_request::X509CertificationRequest::from_der(&block.contents)
        .map_err(|e| format!("not a certificate request: {e}"))?;
    csr.verify_signature()
        .map_err(|e| format!("the request's signature does not verify: {e}"))?;
    let subject = &csr.certification_request_info.subject;
    let mut request = Request {
        common_name: subject
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .unwrap_or_default()
            .to_string(),
        organizations: subject
            .iter_organization()
            .filter_map(|o| o.as_str().ok().map(String::from))
            .collect(),
        ..Request::default()
    };
    for extension in csr.requested_extensions().into_iter().flatten() {
        if let ParsedExtension::SubjectAlternativeName(sans) = extension {
            for name in &sans.general_names {
                match name {
                    GeneralName::DNSName(d) => request.dns_names.push(d.to_string()),
                    GeneralName::IPAddress(b) => match b.len() {
                        4 => request.ip_addresses.extend(
                            <[u8; 4]>::try_from(*b)
                                .ok()
                                .map(|a| std::net::IpAddr::from(a).to_string()),
                        ),
                        16 => request.ip_addresses.extend(
                            <[u8; 16]>::try_from(*b)
                                .ok()
                                .map(|a| std::net::IpAddr::from(a).to_string()),
                        ),
                        _ => request.other_names += 1,
                    },
                    _ => request.other_names += 1,
                }
            }
        }
    }
    Ok(request)
}

fn has_usages(usages: &[String], allowed: &[&str], required: &str) -> Result<(), String> {
    if let Some(bad) = usages.iter().find(|u| !allowed.contains(&u.as_str())) {
        return Err(format!("usages may only be {}; got {bad:?}", allowed.join(", ")));
    }
    if !usages.iter().any(|u| u == required) {
        return Err(format!("usages must include {required:?}"));
    }
    Ok(())
}

fn node_subject(request: &Request) -> Result<&str, String> {
    if request.organizations != [NODES_GROUP] {
        return Err(format!("subject organization is not {NODES_GROUP}"));
    }
    request
        .common_name
        .strip_prefix(NODE_PREFIX)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| format!("subject common name does not begin with {NODE_PREFIX}"))
}

/// `ValidateKubeletClientCSR`: the node's identity, no SANs, client auth.
pub fn validate_kubelet_client(request: &Request, usages: &[String]) -> Result<(), String> {
    node_subject(request)?;
    if !request.dns_names.is_empty() || !request.ip_addresses.is_empty() || request.other_names > 0 {
        return Err("a kubelet client certificate may not have subject alternative names".into());
    }
    has_usages(
        usages,
        &["digital signature", "key encipherment", "client auth"],
        "client auth",
    )
}

/// `ValidateKubeletServingCSR`: the node's identity, at least one DNS name or IP address and nothing else,
/// server auth.
pub fn validate_kubelet_serving(request: &Request, usages: &[String]) -> Result<(), String> {
    node_subject(request)?;
    if request.dns_names.is_empty() && request.ip_addresses.is_empty() {
        return Err("a kubelet serving certificate needs at least one DNS name or IP address".into());
    }
    if request.other_names > 0 {
        return Err("a kubelet serving certificate may not have email or URI names".into());
    }
    has_usages(
        usages,
        &["digital signature", "key encipherment", "server auth"],
        "server auth",
    )
}

fn spec_usages(csr: &CertificateSigningRequest) -> Vec<String> {
    csr.spec.usages.clone().unwrap_or_default()
}

fn request_of(csr: &CertificateSigningRequest) -> Result<Request, String> {
    parse_request(&csr.spec.request.0)
}

fn has_condition(csr: &CertificateSigningRequest, kind: &str) -> bool {
    csr.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == kind && c.status == "True"))
}

fn issued(csr: &CertificateSigningRequest) -> bool {
    csr.status
        .as_ref()
        .and_then(|s| s.certificate.as_ref())
        .is_some_and(|c| !c.0.is_empty())
}

/// Why the approver approves `csr`, or `None` when it leaves it alone. `node_addresses` gives a node's name and
/// addresses (`None`: no such node yet).
pub fn approval(
    csr: &CertificateSigningRequest,
    node_addresses: impl Fn(&str) -> Option<Vec<String>>,
) -> Result<Option<&'static str>, ControllerError> {
    let groups = csr.spec.groups.clone().unwrap_or_default();
    let username = csr.spec.username.as_deref().unwrap_or_default();
    let Ok(request) = request_of(csr) else {
        return Ok(None);
    };
    let usages = spec_usages(csr);
    match csr.spec.signer_name.as_str() {
        KUBELET_CLIENT_SIGNER => {
            if validate_kubelet_client(&request, &usages).is_err() {
                return Ok(None);
            }
            if username == request.common_name && groups.iter().any(|g| g == NODES_GROUP) {
                return Ok(Some(
                    "Auto approving self kubelet client certificate after SubjectAccessReview.",
                ));
            }
            if groups.iter().any(|g| g == BOOTSTRAPPERS) {
                return Ok(Some(
                    "Auto approving kubelet client certificate after SubjectAccessReview.",
                ));
            }
            Ok(None)
        }
        KUBELET_SERVING_SIGNER => {
            if validate_kubelet_serving(&request, &usages).is_err()
                || username != request.common_name
                || !groups.iter().any(|g| g == NODES_GROUP)
            {
                return Ok(None);
            }
            let Ok(node) = node_subject(&request) else {
                return Ok(None);
            };
            let Some(known) = node_addresses(node) else {
                return Err(ControllerError::Waiting(format!(
                    "node {node} is not registered yet"
                )));
            };
            let all_known = request
                .dns_names
                .iter()
                .chain(&request.ip_addresses)
                .all(|n| known.contains(n));
            if all_known {
                Ok(Some(
                    "Auto approving kubelet serving certificate: its names are the node's own.",
                ))
            } else {
                Err(ControllerError::Waiting(format!(
                    "the names asked for are not all node {node}'s (yet)"
                )))
            }
        }
        _ => Ok(None),
    }
}

fn condition(kind: &str, reason: &str, message: &str) -> CertificateSigningRequestCondition {
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    CertificateSigningRequestCondition {
        type_: kind.to_string(),
        status: "True".to_string(),
        reason: Some(reason.to_string()),
        message: Some(message.to_string()),
        last_update_time: Some(now.clone()),
        last_transition_time: Some(now),
    }
}

fn with_condition(
    mut csr: CertificateSigningRequest,
    c: CertificateSigningRequestCondition,
) -> CertificateSigningRequest {
    let status = csr.status.get_or_insert_with(Default::default);
    status.conditions.get_or_insert_with(Vec::new).push(c);
    csr
}

impl ClusterSigner {
    /// Issues `request_pem` (already validated) for `usages`, for `duration`, as the cluster CA.
    pub fn sign(&self, request_pem: &[u8], usages: &[String], duration: Duration) -> Result<String, String> {
        use rcgen::{ExtendedKeyUsagePurpose, KeyUsagePurpose};
        let key = rcgen::KeyPair::from_pem(&self.ca_key_pem).map_err(|e| format!("the CA key: {e}"))?;
        let issuer =
            rcgen::Issuer::from_ca_cert_pem(&self.ca_cert_pem, &key).map_err(|e| format!("the CA: {e}"))?;
        let text = std::str::from_utf8(request_pem).map_err(|_| "the request is not PEM text".to_string())?;
        let mut csr = rcgen::CertificateSigningRequestParams::from_pem(text)
            .map_err(|e| format!("the request: {e}"))?;
        let now = time::OffsetDateTime::now_utc();
        let params = &mut csr.params;
        params.not_before = now - BACKDATE;
        params.not_after = now + duration;
        params.is_ca = rcgen::IsCa::ExplicitNoCa;
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&rand_serial()));
        params.use_authority_key_identifier_extension = true;
        params.key_usages = usages
            .iter()
            .filter_map(|u| match u.as_str() {
                "digital signature" => Some(KeyUsagePurpose::DigitalSignature),
                "key encipherment" => Some(KeyUsagePurpose::KeyEncipherment),
                _ => None,
            })
            .collect();
        params.extended_key_usages = usages
            .iter()
            .filter_map(|u| match u.as_str() {
                "client auth" => Some(ExtendedKeyUsagePurpose::ClientAuth),
                "server auth" => Some(ExtendedKeyUsagePurpose::ServerAuth),
                _ => None,
            })
            .collect();
        let cert = csr.signed_by(&issuer).map_err(|e| format!("signing: {e}"))?;
        Ok(cert.pem())
    }
}

/// A random positive serial number of 16 bytes.
fn rand_serial() -> [u8; 16] {
    let mut serial: [u8; 16] = rand::random();
    serial[0] &= 0x7f;
    serial
}

/// How long a CSR's certificate lasts: the signer's duration, shortened by `spec.expirationSeconds` (which the
/// API server keeps at 10 minutes or more).
pub fn duration_of(csr: &CertificateSigningRequest) -> Duration {
    match csr.spec.expiration_seconds {
        Some(seconds) if seconds > 0 => {
            SIGNING_DURATION.min(Duration::from_secs(u64::from(seconds.unsigned_abs().max(600))))
        }
        _ => SIGNING_DURATION,
    }
}

struct Controller {
    client: kube::Client,
    csrs: Store<CertificateSigningRequest>,
    nodes: Store<Node>,
    signer: Arc<ClusterSigner>,
}

impl Controller {
    fn node_addresses(&self, name: &str) -> Option<Vec<String>> {
        let node = self.nodes.get(&kube::runtime::reflector::ObjectRef::new(name))?;
        let mut names = vec![name.to_string()];
        for address in node.status.as_ref()?.addresses.as_ref()? {
            names.push(address.address.clone());
        }
        Some(names)
    }

    async fn reconcile(&self, name: String) -> Result<(), ControllerError> {
        let Some(csr) = self.csrs.get(&kube::runtime::reflector::ObjectRef::new(&name)) else {
            return Ok(());
        };
        let csr = (*csr).clone();
        let api: Api<CertificateSigningRequest> = Api::all(self.client.clone());
        if has_condition(&csr, "Denied") || has_condition(&csr, "Failed") || issued(&csr) {
            return Ok(());
        }
        if !has_condition(&csr, "Approved") {
            let Some(message) = approval(&csr, |n| self.node_addresses(n))? else {
                return Ok(());
            };
            let approved = with_condition(csr, condition("Approved", "AutoApproved", message));
            let written = api
                .replace_subresource("approval", &name, &PostParams::default(), &approved)
                .await
                .map_err(kube_error(format!("approving CSR {name}")))?;
            tracing::info!(csr = %name, "approved");
            return self.sign(&api, written).await;
        }
        self.sign(&api, csr).await
    }

    async fn sign(
        &self,
        api: &Api<CertificateSigningRequest>,
        csr: CertificateSigningRequest,
    ) -> Result<(), ControllerError> {
        let name = csr.metadata.name.clone().unwrap_or_default();
        let signer = csr.spec.signer_name.as_str();
        if signer != KUBELET_CLIENT_SIGNER && signer != KUBELET_SERVING_SIGNER {
            return Ok(());
        }
        let usages = spec_usages(&csr);
        let checked = request_of(&csr).and_then(|request| {
            if signer == KUBELET_CLIENT_SIGNER {
                validate_kubelet_client(&request, &usages)
            } else {
                validate_kubelet_serving(&request, &usages)
            }
        });
        let updated =
            match checked.and_then(|()| self.signer.sign(&csr.spec.request.0, &usages, duration_of(&csr))) {
                Ok(pem) => {
                    let mut csr = csr;
                    csr.status.get_or_insert_with(Default::default).certificate =
                        Some(k8s_openapi::ByteString(pem.into_bytes()));
                    csr
                }
                Err(problem) => {
                    tracing::warn!(csr = %name, %problem, "not signing");
                    with_condition(csr, condition("Failed", "SignerValidationFailure", &problem))
                }
            };
        api.replace_subresource("status", &name, &PostParams::default(), &updated)
            .await
            .map_err(kube_error(format!("issuing CSR {name}")))?;
        tracing::info!(csr = %name, "issued");
        Ok(())
    }
}

enum Seen {
    Csr(Box<work::Change<CertificateSigningRequest>>),
    /// A node changed (its addresses decide serving CSRs waiting for it).
    Node,
}

/// Approves and signs the kubelets' CSRs until the client's watches end.
pub async fn run(client: kube::Client, signer: ClusterSigner) {
    let (tx, rx) = mpsc::unbounded_channel();
    let csrs = work::reflect_into(Api::all(client.clone()), tx.clone(), |c| Seen::Csr(Box::new(c)));
    let nodes = work::reflect_into(Api::all(client.clone()), tx, |_: work::Change<Node>| Seen::Node);
    let controller = Arc::new(Controller {
        client,
        csrs: csrs.clone(),
        nodes: nodes.clone(),
        signer: Arc::new(signer),
    });
    let all = {
        let csrs = csrs.clone();
        move || {
            csrs.state()
                .iter()
                .filter_map(|c| c.metadata.name.clone())
                .collect::<Vec<_>>()
        }
    };
    let all_for_keys = all.clone();
    let keys_of = move |seen: Seen| match seen {
        Seen::Csr(change) => match *change {
            work::Change::Object(csr) => csr.metadata.name.into_iter().collect(),
            work::Change::Relisted => all_for_keys(),
        },
        // Serving CSRs may wait for a node's addresses: look at every CSR again.
        Seen::Node => all_for_keys(),
    };
    let ready = move || work::ready(&csrs) && work::ready(&nodes);
    work::run_queue("csrsigning", rx, keys_of, all, ready, |name| {
        let controller = controller.clone();
        async move { controller.reconcile(name).await }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(cn: &str, o: &str, sans: &[&str]) -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, cn);
        params.distinguished_name.push(rcgen::DnType::OrganizationName, o);
        params.serialize_request(&key).unwrap().pem().unwrap()
    }

    fn csr(
        pem: &str,
        signer: &str,
        usages: &[&str],
        user: &str,
        groups: &[&str],
    ) -> CertificateSigningRequest {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "c"},
            "spec": {"request": k8s_openapi::ByteString(pem.as_bytes().to_vec()), "signerName": signer, "usages": usages, "username": user, "groups": groups}
        }))
        .unwrap()
    }

    #[test]
    fn client_csrs_from_bootstrappers_and_renewing_nodes_are_approved() {
        let pem = request("system:node:n2", "system:nodes", &[]);
        let none = |_: &str| None;
        let from_bootstrap = csr(
            &pem,
            KUBELET_CLIENT_SIGNER,
            &["client auth", "digital signature"],
            "system:bootstrap:abcdef",
            &["system:bootstrappers", "system:authenticated"],
        );
        assert!(approval(&from_bootstrap, none).unwrap().is_some());
        let renewal = csr(
            &pem,
            KUBELET_CLIENT_SIGNER,
            &["client auth"],
            "system:node:n2",
            &["system:nodes"],
        );
        assert!(approval(&renewal, none).unwrap().is_some());
        let other_node = csr(
            &pem,
            KUBELET_CLIENT_SIGNER,
            &["client auth"],
            "system:node:n3",
            &["system:nodes"],
        );
        assert!(approval(&other_node, none).unwrap().is_none());
        let stranger = csr(
            &pem,
            KUBELET_CLIENT_SIGNER,
            &["client auth"],
            "alice",
            &["system:authenticated"],
        );
        assert!(approval(&stranger, none).unwrap().is_none());
        let admin_subject = request("system:admin", "system:masters", &[]);
        let escalation = csr(
            &admin_subject,
            KUBELET_CLIENT_SIGNER,
            &["client auth"],
            "system:bootstrap:abcdef",
            &["system:bootstrappers"],
        );
        assert!(approval(&escalation, none).unwrap().is_none());
        let server_usage = csr(
            &pem,
            KUBELET_CLIENT_SIGNER,
            &["server auth"],
            "system:bootstrap:abcdef",
            &["system:bootstrappers"],
        );
        assert!(approval(&server_usage, none).unwrap().is_none());
    }

    #[test]
    fn serving_csrs_are_approved_for_the_nodes_own_names() {
        let addresses = |n: &str| (n == "n2").then(|| vec!["n2".to_string(), "10.0.0.2".to_string()]);
        let own = csr(
            &request("system:node:n2", "system:nodes", &["n2", "10.0.0.2"]),
            KUBELET_SERVING_SIGNER,
            &["server auth", "digital signature"],
            "system:node:n2",
            &["system:nodes"],
        );
        assert!(approval(&own, addresses).unwrap().is_some());
        let foreign = csr(
            &request("system:node:n2", "system:nodes", &["n2", "10.0.0.9"]),
            KUBELET_SERVING_SIGNER,
            &["server auth"],
            "system:node:n2",
            &["system:nodes"],
        );
        assert!(
            approval(&foreign, addresses).is_err(),
            "waits: the node may yet report the address"
        );
        let by_other = csr(
            &request("system:node:n2", "system:nodes", &["n2"]),
            KUBELET_SERVING_SIGNER,
            &["server auth"],
            "system:node:n3",
            &["system:nodes"],
        );
        assert!(approval(&by_other, addresses).unwrap().is_none());
    }

    #[test]
    fn signing_honours_the_usages_and_expiration() {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::default();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let signer = ClusterSigner {
            ca_cert_pem: ca_cert.pem(),
            ca_key_pem: ca_key.serialize_pem(),
        };
        let pem = request("system:node:n2", "system:nodes", &[]);
        let issued = signer
            .sign(pem.as_bytes(), &["client auth".into()], Duration::from_secs(3600))
            .unwrap();
        let (_, block) = x509_parser::pem::parse_x509_pem(issued.as_bytes()).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&block.contents).unwrap();
        assert_eq!(
            cert.subject()
                .iter_common_name()
                .next()
                .unwrap()
                .as_str()
                .unwrap(),
            "system:node:n2"
        );
        let lifetime = cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
        assert_eq!(lifetime, 3600 + 300);
        let mut with_expiry = csr(&pem, KUBELET_CLIENT_SIGNER, &["client auth"], "u", &[]);
        with_expiry.spec.expiration_seconds = Some(1200);
        assert_eq!(duration_of(&with_expiry), Duration::from_secs(1200));
    }
}
