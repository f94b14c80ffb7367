//! The HTTPS server: TLS with optional client certificates, authentication and authorization in
//! front of every route but the health checks and `/version`, and the routes themselves.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum_server::tls::TlsInfo;
use axum_server::tls_rustls::RustlsConfig;
use embedded_store::Store;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

use crate::authn::Authenticator;
use crate::authn::UserInfo;
use crate::authz::{Authorization, Decision};
use crate::node_proxy;
use crate::pki::Pki;
use crate::request_info::RequestInfo;
use crate::{health, resources, status};

/// The Kubernetes version bonsai serves and reports.
#[derive(Clone, Debug)]
pub struct KubernetesVersion {
    pub major: String,
    pub minor: String,
    pub git_version: String,
    pub git_commit: String,
}

#[derive(Debug)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub authenticator: Authenticator,
    pub authorization: Arc<Authorization>,
    pub version: KubernetesVersion,
    /// The service account token issuer (TokenRequest, OIDC discovery); `None` serves neither.
    pub service_account_tokens: Option<Arc<crate::service_account_tokens::TokenIssuer>>,
    /// Secrets encryption at rest, for `bonsai secrets-encrypt status|rotate-keys` (`store` is already wrapped).
    pub secrets_encryption: Option<crate::encryption::SecretsEncryption>,
    /// The audit log (`--audit-log-path`), if one is kept.
    pub audit: Option<Arc<crate::audit::AuditLog>>,
}

#[derive(Debug)]
pub struct ApiServerConfig {
    pub bind_address: IpAddr,
    pub port: u16,
    pub pki: Pki,
    pub state: AppState,
    pub limits: crate::limits::RequestLimits,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS setup failed: {0}")]
    Tls(String),
}

/// A running API server; dropping it does not stop it, `shutdown` does.
#[derive(Debug)]
pub struct RunningApiServer {
    pub local_addr: SocketAddr,
    handle: axum_server::Handle<SocketAddr>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    watches: Arc<resources::WatchCaches>,
}

impl RunningApiServer {
    /// Stops accepting, lets requests in flight finish for up to `grace`, then returns.
    pub async fn shutdown(self, grace: std::time::Duration) {
        self.handle.graceful_shutdown(Some(grace));
        // Watches never finish by themselves; ended now, they leave only short requests for the grace period.
        self.watches.close();
        match self.task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "API server stopped with an error"),
            Err(e) => tracing::warn!(error = %e, "API server task failed"),
        }
    }
}

fn tls_config(pki: &Pki) -> Result<rustls::ServerConfig, ApiServerError> {
    let tls = |e: &dyn std::fmt::Display| ApiServerError::Tls(e.to_string());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(pki.ca_cert_pem.as_bytes()) {
        roots.add(ca.map_err(|e| tls(&e))?).map_err(|e| tls(&e))?;
    }
    // Client certificates are optional (tokens and health checks come without one), but one that
    // is presented must chain to the cluster CA, as with Go's VerifyClientCertIfGiven.
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .allow_unauthenticated()
            .build()
            .map_err(|e| tls(&e))?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pki.serving_cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| tls(&e))?;
    let key = PrivateKeyDer::from_pem_slice(pki.serving_key_pem.as_bytes()).map_err(|e| tls(&e))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls(&e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| tls(&e))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Paths anyone may call, as kube-apiserver's `system:public-info-viewer` allows.
fn is_public(path: &str) -> bool {
    ["/livez", "/readyz", "/healthz"]
        .iter()
        .any(|p| path == *p || path.starts_with(&format!("{p}/")))
        || path == "/version"
        || path == "/cacerts"
}

async fn authenticate(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    if is_public(request.uri().path()) {
        return next.run(request).await;
    }
    let Some(audit_log) = state.audit.clone() else {
        return authenticated(&state, request, next, None).await;
    };
    let info = RequestInfo::of(request.method(), request.uri().path(), request.uri().query());
    let long_running = crate::limits::is_long_running(&info, request.uri().query());
    let mut record = crate::audit::AuditRecord {
        audit_id: crate::resources::new_uid(),
        received: crate::audit::micro_now(),
        request_uri: request
            .uri()
            .path_and_query()
            .map_or_else(|| request.uri().path().to_string(), |p| p.as_str().to_string()),
        info,
        user: None,
        impersonated: None,
        source_ip: request
            .extensions()
            .get::<axum::extract::ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip().to_string()),
        user_agent: request
            .headers()
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(String::from),
        decision: None,
    };
    let response = authenticated(&state, request, next, Some(&mut record)).await;
    let stage = if long_running && response.status().is_success() {
        "ResponseStarted"
    } else {
        "ResponseComplete"
    };
    audit_log.write(&record.event(stage, response.status().as_u16()));
    response
}

/// Authentication, impersonation and authorization, then the request; what they found goes into `audit`.
async fn authenticated(
    state: &AppState,
    mut request: Request,
    next: Next,
    mut audit: Option<&mut crate::audit::AuditRecord>,
) -> Response {
    let peer = request
        .extensions()
        .get::<Arc<TlsInfo>>()
        .map(|i| i.peer_certificates.clone())
        .unwrap_or_default();
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let authenticated = match state.authenticator.authenticate_with_claims(&peer, authorization) {
        Some(found) => Some(found),
        // Bootstrap tokens live in Secrets: looked up in the store, after every other way failed.
        None => match authorization.and_then(|a| a.strip_prefix("Bearer ")) {
            Some(token) => {
                let now = crate::service_account_tokens::unix_now();
                crate::bootstrap_tokens::authenticate(&*state.store, token.trim(), now)
                    .await
                    .map(|user| (user, None))
            }
            None => None,
        },
    };
    let Some((mut user, claims)) = authenticated else {
        return status::unauthorized();
    };
    if let Some(claims) = claims
        && let Err(reason) = crate::service_account_tokens::still_bound(
            &*state.store,
            &claims,
            authorization
                .and_then(|a| a.strip_prefix("Bearer "))
                .unwrap_or_default()
                .trim(),
        )
        .await
    {
        tracing::info!(user = %user.name, reason = %reason, "service account token refused");
        return status::unauthorized();
    }
    if let Some(audit) = audit.as_deref_mut() {
        audit.user = Some(user.clone());
    }
    match impersonate(&state.authorization, &user, request.headers()) {
        Ok(Some(impersonated)) => {
            if let Some(audit) = audit.as_deref_mut() {
                audit.impersonated = Some(impersonated.clone());
            }
            user = impersonated
        }
        Ok(None) => {}
        Err(response) => return *response,
    }
    for name in IMPERSONATION_HEADERS {
        request.headers_mut().remove(*name);
    }
    let info = RequestInfo::of(request.method(), request.uri().path(), request.uri().query());
    let (allowed, reason) = match state.authorization.authorize(&user, &info) {
        Decision::Allow(reason) => (true, reason),
        Decision::Deny(reason) | Decision::NoOpinion(reason) => (false, reason),
    };
    if let Some(audit) = audit {
        audit.decision = Some((allowed, reason.clone()));
    }
    if !allowed {
        let message = crate::authz::forbidden_message(&user.name, &info, &reason);
        return crate::authz::forbidden_response(&info.group, &info.resource, &info.name, message);
    }
    request.extensions_mut().insert(user.clone());
    let context = Arc::new(crate::admission::RequestContext {
        user,
        authorization: state.authorization.clone(),
    });
    crate::admission::scope(context, next.run(request)).await
}

const IMPERSONATE_USER: &str = "impersonate-user";
const IMPERSONATE_GROUP: &str = "impersonate-group";
const IMPERSONATE_UID: &str = "impersonate-uid";
const IMPERSONATION_HEADERS: &[&str] = &[IMPERSONATE_USER, IMPERSONATE_GROUP, IMPERSONATE_UID];

/// kube-apiserver's impersonation filter: `Impersonate-User`, `Impersonate-Group` and `Impersonate-Uid` each
/// need the `impersonate` verb on `users`/`serviceaccounts`, `groups` or `uids` for the named value; the request
/// then runs as the impersonated user (with `system:authenticated`, and a service account's groups when no group
/// is given). `Impersonate-Extra-*` is refused: bonsai's users carry no extra fields.
fn impersonate(
    authorization: &Authorization,
    user: &UserInfo,
    headers: &axum::http::HeaderMap,
) -> Result<Option<UserInfo>, Box<Response>> {
    let values = |name: &str| -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::to_string)
            .collect()
    };
    let users = values(IMPERSONATE_USER);
    let groups = values(IMPERSONATE_GROUP);
    let uids = values(IMPERSONATE_UID);
    let extra = headers
        .keys()
        .any(|k| k.as_str().starts_with("impersonate-extra-"));
    if users.is_empty() {
        if groups.is_empty() && uids.is_empty() && !extra {
            return Ok(None);
        }
        return Err(Box::new(status::failure(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            "Internal error occurred: requested impersonation without a user to impersonate",
        )));
    }
    if extra {
        return Err(Box::new(status::failure(
            axum::http::StatusCode::BAD_REQUEST,
            "BadRequest",
            "impersonating user extra fields is not supported by this server",
        )));
    }
    let name = users[0].clone();
    let check = |group: &str, resource: &str, namespace: &str, object: &str| -> Result<(), Box<Response>> {
        let info = RequestInfo {
            verb: "impersonate".into(),
            resource_request: true,
            group: group.into(),
            resource: resource.into(),
            namespace: namespace.into(),
            name: object.into(),
            ..RequestInfo::default()
        };
        match authorization.authorize(user, &info) {
            Decision::Allow(_) => Ok(()),
            Decision::Deny(reason) | Decision::NoOpinion(reason) => {
                let message = crate::authz::forbidden_message(&user.name, &info, &reason);
                Err(Box::new(crate::authz::forbidden_response(
                    group, resource, object, message,
                )))
            }
        }
    };
    let service_account = name
        .strip_prefix("system:serviceaccount:")
        .and_then(|rest| rest.split_once(':'));
    match service_account {
        Some((namespace, account)) => check("", "serviceaccounts", namespace, account)?,
        None => check("", "users", "", &name)?,
    }
    for group in &groups {
        check("", "groups", "", group)?;
    }
    for uid in &uids {
        check("authentication.k8s.io", "uids", "", uid)?;
    }
    let mut impersonated_groups = groups.clone();
    if groups.is_empty()
        && let Some((namespace, _)) = service_account
    {
        impersonated_groups = vec![
            "system:serviceaccounts".to_string(),
            format!("system:serviceaccounts:{namespace}"),
        ];
    }
    if name != "system:anonymous"
        && !impersonated_groups
            .iter()
            .any(|g| g == "system:authenticated" || g == "system:unauthenticated")
    {
        impersonated_groups.push("system:authenticated".into());
    }
    Ok(Some(UserInfo {
        name,
        uid: uids.first().cloned().unwrap_or_default(),
        groups: impersonated_groups,
    }))
}

async fn version(State(state): State<Arc<AppState>>) -> Response {
    let v = &state.version;
    let info = k8s_openapi::apimachinery::pkg::version::Info {
        major: v.major.clone(),
        minor: v.minor.clone(),
        git_version: v.git_version.clone(),
        git_commit: v.git_commit.clone(),
        git_tree_state: "clean".into(),
        build_date: String::new(),
        go_version: "n/a (bonsai is written in Rust)".into(),
        compiler: "rustc".into(),
        platform: format!("linux/{}", go_arch()),
        emulation_major: None,
        emulation_minor: None,
        min_compatibility_major: None,
        min_compatibility_minor: None,
    };
    status::json(
        axum::http::StatusCode::OK,
        &serde_json::to_value(info).unwrap_or_default(),
    )
}

/// The architecture as Go (and so Kubernetes) names it.
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        other => other,
    }
}

/// Everything under `/api` and `/apis` goes to the resource layer.
async fn api(
    state: Arc<AppState>,
    watches: Arc<resources::WatchCaches>,
    kubelet: Arc<node_proxy::KubeletClient>,
    request: Request,
) -> Response {
    let path = request.uri().path().to_string();
    if let Some(target) = crate::metrics_api::target(&path) {
        let (method, query) = (
            request.method().clone(),
            request.uri().query().map(str::to_string),
        );
        return crate::metrics_api::serve(&*state.store, &kubelet, target, &method, query.as_deref()).await;
    }
    if let Some(target) = node_proxy::node_subresource(&path) {
        return node_proxy::serve(&*state.store, &kubelet, target, request).await;
    }
    let (parts, body) = request.into_parts();
    if parts.method == axum::http::Method::POST
        && let Some((namespace, name)) = token_request_target(parts.uri.path())
    {
        return match &state.service_account_tokens {
            Some(issuer) => {
                resources::token_request(&*state.store, issuer, namespace, name, &parts.headers, body).await
            }
            None => status::failure(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "this server issues no service account tokens",
            ),
        };
    }
    if parts.method == axum::http::Method::POST
        && let Some((kind, namespace)) = crate::authz::reviews::review_target(parts.uri.path())
    {
        let Some(user) = parts.extensions.get::<UserInfo>() else {
            return status::unauthorized();
        };
        let Ok(bytes) = axum::body::to_bytes(body, 1 << 20).await else {
            return status::failure(
                axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                "RequestEntityTooLarge",
                "the review is too large",
            );
        };
        return crate::authz::reviews::serve(&state.authorization, user, kind, namespace, &bytes);
    }
    if let Some(version) = self_subject_review_version(parts.uri.path())
        && parts.method == axum::http::Method::POST
    {
        return self_subject_review(version, parts.extensions.get::<crate::authn::UserInfo>());
    }
    resources::dispatch(
        state.store.clone(),
        watches,
        parts.method,
        parts.uri.path(),
        parts.uri.query(),
        &parts.headers,
        body,
        parts.extensions.get::<crate::authn::UserInfo>(),
    )
    .await
}

/// `/api/v1/namespaces/<ns>/serviceaccounts/<name>/token`: (namespace, name).
fn token_request_target(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("/api/v1/namespaces/")?;
    let mut parts = rest.trim_end_matches('/').split('/');
    match (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) {
        (Some(namespace), Some("serviceaccounts"), Some(name), Some("token"), None)
            if !namespace.is_empty() && !name.is_empty() =>
        {
            Some((namespace, name))
        }
        _ => None,
    }
}

/// `/.well-known/openid-configuration` and `/openid/v1/jwks`: what verifies this server's service account tokens.
async fn openid(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let Some(issuer) = &state.service_account_tokens else {
        return status::not_found();
    };
    match request.uri().path() {
        "/.well-known/openid-configuration" => status::json(
            axum::http::StatusCode::OK,
            &crate::service_account_tokens::openid_configuration(),
        ),
        _ => status::json(axum::http::StatusCode::OK, &issuer.jwks()),
    }
}

/// Where `bonsai snapshot save` fetches a snapshot of the cluster store, taken online (bonsai's own path, as
/// k3s serves its own under `/v1-k3s/`).
pub const SNAPSHOT_PATH: &str = "/bonsai/v1/snapshot";

/// `bonsai secrets-encrypt status` (GET) and `rotate-keys` (POST `.../rotate-keys`), as k3s's supervisor serves
/// its `/v1-k3s/encrypt/...`.
pub const SECRETS_ENCRYPTION_PATH: &str = "/bonsai/v1/secrets-encryption";

fn is_masters(request: &Request) -> bool {
    request
        .extensions()
        .get::<crate::authn::UserInfo>()
        .is_some_and(|u| u.groups.iter().any(|g| g == "system:masters"))
}

async fn secrets_encryption(State(state): State<Arc<AppState>>, request: Request) -> Response {
    if !is_masters(&request) {
        return status::failure(
            axum::http::StatusCode::FORBIDDEN,
            "Forbidden",
            format!(
                "forbidden: only system:masters may manage secrets encryption ({SECRETS_ENCRYPTION_PATH})"
            ),
        );
    }
    let Some(encryption) = &state.secrets_encryption else {
        return status::not_found();
    };
    let result = if request.method() == axum::http::Method::POST {
        encryption.rotate_keys(state.store.as_ref()).await
    } else {
        encryption.current_status().await
    };
    match result {
        Ok(status) => status::json(
            axum::http::StatusCode::OK,
            &serde_json::to_value(status).unwrap_or_default(),
        ),
        Err(e) => status::failure(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            e.to_string(),
        ),
    }
}

/// `GET /bonsai/v1/snapshot`: every key of the store at one revision, in `embedded_store::Snapshot`'s file
/// format. Only for `system:masters`: a snapshot holds every Secret.
async fn snapshot(State(state): State<Arc<AppState>>, request: Request) -> Response {
    if !is_masters(&request) {
        return status::failure(
            axum::http::StatusCode::FORBIDDEN,
            "Forbidden",
            format!(
                "forbidden: only system:masters may take a snapshot of the cluster store ({SNAPSHOT_PATH})"
            ),
        );
    }
    // Secrets as they are stored (encrypted, when encryption is on), as an etcd snapshot holds them.
    let store = state
        .secrets_encryption
        .as_ref()
        .and_then(|e| e.raw_store())
        .unwrap_or_else(|| state.store.clone());
    match embedded_store::Snapshot::take(store.as_ref()).await {
        Ok(snapshot) => (
            [(header::CONTENT_TYPE, "application/octet-stream")],
            snapshot.encode(),
        )
            .into_response(),
        Err(e) => resources::ApiError::from(e).response(),
    }
}

/// `POST /apis/authentication.k8s.io/<v1|v1beta1>/selfsubjectreviews` (`kubectl auth whoami`).
fn self_subject_review_version(path: &str) -> Option<&'static str> {
    match path.trim_end_matches('/') {
        "/apis/authentication.k8s.io/v1/selfsubjectreviews" => Some("v1"),
        "/apis/authentication.k8s.io/v1beta1/selfsubjectreviews" => Some("v1beta1"),
        _ => None,
    }
}

/// Tells the caller who the server takes it to be: the request body is not needed (it has no fields).
fn self_subject_review(version: &str, user: Option<&crate::authn::UserInfo>) -> Response {
    let Some(user) = user else {
        return status::unauthorized();
    };
    let mut user_info = serde_json::json!({"username": user.name, "groups": user.groups});
    if !user.uid.is_empty() {
        user_info["uid"] = serde_json::Value::String(user.uid.clone());
    }
    let review = serde_json::json!({
        "kind": "SelfSubjectReview",
        "apiVersion": format!("authentication.k8s.io/{version}"),
        "metadata": {"creationTimestamp": resources::now_rfc3339()},
        "status": {"userInfo": user_info},
    });
    status::json(axum::http::StatusCode::CREATED, &review)
}

fn router(
    state: Arc<AppState>,
    watches: Arc<resources::WatchCaches>,
    kubelet: Arc<node_proxy::KubeletClient>,
    ca_bundle: String,
    limits: crate::limits::RequestLimits,
) -> Router {
    let api = move |State(state): State<Arc<AppState>>, request: Request| {
        api(state, watches.clone(), kubelet.clone(), request)
    };
    let router =
        Router::new()
            .route("/version", get(version))
            // k3s's `/cacerts`: the CA bundle, to anyone; a joining agent checks it against its token's hash
            // before it sends the token's secret.
            .route(
                "/cacerts",
                get(move || {
                    let ca_bundle = ca_bundle.clone();
                    async move { ([(header::CONTENT_TYPE, "application/x-pem-file")], ca_bundle) }
                }),
            )
            .route("/openapi/v2", get(|| async { crate::openapi::v2_document() }))
            .route("/openapi/v3", get(|| async { crate::openapi::index() }))
            .route(
                "/openapi/v3/{*path}",
                get(
                    |axum::extract::Path(path): axum::extract::Path<String>,
                     headers: axum::http::HeaderMap| async move {
                        crate::openapi::document(&path, &headers)
                    },
                ),
            );
    let router = health::routes(router)
        .route("/api", axum::routing::any(api.clone()))
        .route("/api/{*rest}", axum::routing::any(api.clone()))
        .route("/apis", axum::routing::any(api.clone()))
        .route("/apis/{*rest}", axum::routing::any(api))
        .route("/metrics", get(crate::metrics::serve))
        .route("/.well-known/openid-configuration", get(openid))
        .route("/openid/v1/jwks", get(openid))
        .route(SNAPSHOT_PATH, get(snapshot))
        .route(SECRETS_ENCRYPTION_PATH, get(secrets_encryption))
        .route(
            &format!("{SECRETS_ENCRYPTION_PATH}/rotate-keys"),
            axum::routing::post(secrets_encryption),
        );
    // Instrumentation sits inside authentication: what is counted is what was served.
    router
        .fallback(|| async { status::not_found() })
        .layer(axum::middleware::from_fn(crate::metrics::instrument))
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(crate::limits::Limiter::new(limits)),
            crate::limits::limit,
        ))
        .layer(axum::middleware::from_fn_with_state(state.clone(), authenticate))
        .with_state(state)
}

/// Binds the port (failing at once if it is taken) and serves in the background.
pub async fn start(mut config: ApiServerConfig) -> Result<RunningApiServer, ApiServerError> {
    let addr = SocketAddr::new(config.bind_address, config.port);
    let listener =
        std::net::TcpListener::bind(addr).map_err(|source| ApiServerError::Bind { addr, source })?;
    listener
        .set_nonblocking(true)
        .map_err(|source| ApiServerError::Bind { addr, source })?;
    let local_addr = listener
        .local_addr()
        .map_err(|source| ApiServerError::Bind { addr, source })?;
    let tls = RustlsConfig::from_config(Arc::new(tls_config(&config.pki)?));
    // Every store operation the server makes is timed (`etcd_request_duration_seconds`).
    crate::metrics::register();
    config.state.store = Arc::new(crate::metrics::InstrumentedStore::new(config.state.store.clone()));
    let handle = axum_server::Handle::new();
    // One watch cache per server: every HTTP watch of a resource type shares its store watch. Every cache starts
    // before the first request, as kube-apiserver's do, so that any resourceVersion a client reads from this
    // server can be watched from (until the window or compaction passes it).
    let watches = Arc::new(resources::WatchCaches::new(config.state.store.clone()));
    watches.start_all().await;
    // The kinds CustomResourceDefinitions define, kept in step with the stored CRDs by this server's controller.
    tokio::spawn(resources::custom::crd::run(config.state.store.clone()));
    let kubelet = Arc::new(node_proxy::KubeletClient::new(&config.pki).map_err(ApiServerError::Tls)?);
    let app = router(
        Arc::new(config.state),
        watches.clone(),
        kubelet,
        config.pki.ca_cert_pem.clone(),
        config.limits,
    );
    let mut server = axum_server::from_tcp_rustls(listener, tls)
        .map_err(|source| ApiServerError::Bind { addr, source })?
        .handle(handle.clone());
    // A client that sends its request headers slowly (or not at all) is let go after 30 s, so that many of them
    // hold no more than their connections.
    server
        .http_builder()
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30));
    let task = tokio::spawn(async move {
        server
            .serve(app.into_make_service_with_connect_info::<SocketAddr>())
            .await
    });
    Ok(RunningApiServer {
        local_addr,
        handle,
        task,
        watches,
    })
}
