//! kube-controller-manager's `--use-service-account-credentials`: the controller manager itself is
//! `system:kube-controller-manager` (its own client certificate), and each controller acts as the ServiceAccount
//! `kube-system/<controller>` with a token the server issues through the TokenRequest API, so that RBAC limits
//! every controller to its `system:controller:<controller>` role.
//!
//! As in kube-controller-manager, where the shared informers run on the root client and the controllers write
//! through their own, a controller's list and watch requests (its caches) go as the controller manager and
//! everything else (gets, writes) as the controller's ServiceAccount.

use std::time::Duration;

use anyhow::Context;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};

/// kube-controller-manager's token lifetime for its controllers (`defaultExpirationSeconds`); tokens are renewed
/// at 80% of it, as its `DynamicControllerClientBuilder` does.
const TOKEN_SECONDS: i64 = 3600;
const RETRY: Duration = Duration::from_secs(5);
const NAMESPACE: &str = "kube-system";

/// Clients of the controllers, each with its own ServiceAccount's token.
#[derive(Clone)]
pub struct ControllerClients {
    /// The controller manager's own client (`system:kube-controller-manager`).
    manager: kube::Client,
    /// A client with no credentials: the cluster URL and CA only; requests get the controller's token added.
    anonymous: kube::Client,
}

impl std::fmt::Debug for ControllerClients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControllerClients").finish_non_exhaustive()
    }
}

impl ControllerClients {
    pub async fn new(kubeconfig: &std::path::Path) -> anyhow::Result<ControllerClients> {
        let manager = crate::network::kube_client(kubeconfig, None).await?;
        let file = kube::config::Kubeconfig::read_from(kubeconfig)
            .with_context(|| format!("cannot read the kubeconfig {}", kubeconfig.display()))?;
        let mut config =
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await
                .with_context(|| format!("the kubeconfig {} is not usable", kubeconfig.display()))?;
        config.auth_info = kube::config::AuthInfo::default();
        let anonymous = kube::Client::try_from(config)?;
        Ok(ControllerClients { manager, anonymous })
    }

    /// The controller manager's own client.
    pub fn manager(&self) -> kube::Client {
        self.manager.clone()
    }

    /// The client of controller `name`: a task keeps a token of `kube-system/<name>` (the ServiceAccount made
    /// if missing) current, until the client and its clones are gone; requests wait for the first one.
    pub fn controller(&self, name: &str) -> kube::Client {
        let (token_tx, token_rx) = tokio::sync::watch::channel(None::<String>);
        tokio::spawn(keep_token(self.manager.clone(), name.to_string(), token_tx));
        let manager = self.manager.clone();
        let anonymous = self.anonymous.clone();
        let service = tower::service_fn(move |mut request: http::Request<kube::client::Body>| {
            let manager = manager.clone();
            let anonymous = anonymous.clone();
            let mut token_rx = token_rx.clone();
            async move {
                if is_list_or_watch(&request) {
                    return manager.send(request).await;
                }
                let token = token_rx
                    .wait_for(Option::is_some)
                    .await
                    .map_err(|_| kube::Error::Service("the controller's token source stopped".into()))?
                    .clone()
                    .unwrap_or_default();
                let value = http::HeaderValue::try_from(format!("Bearer {token}"))
                    .map_err(|e| kube::Error::Service(e.into()))?;
                request.headers_mut().insert(http::header::AUTHORIZATION, value);
                anonymous.send(request).await
            }
        });
        kube::Client::new(service, "default")
    }
}

/// Whether `request` reads a collection (list or watch), what kube-controller-manager's informers do.
fn is_list_or_watch(request: &http::Request<kube::client::Body>) -> bool {
    if request.method() != http::Method::GET {
        return false;
    }
    let segments: Vec<&str> = request
        .uri()
        .path()
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let rest = match segments.first() {
        Some(&"api") => segments.get(2..),
        Some(&"apis") => segments.get(3..),
        _ => None,
    };
    matches!(rest, Some([_resource] | ["namespaces", _, _resource]))
}

/// Keeps `token` holding a current token of `kube-system/<name>`.
async fn keep_token(manager: kube::Client, name: String, token: tokio::sync::watch::Sender<Option<String>>) {
    let accounts: Api<ServiceAccount> = Api::namespaced(manager, NAMESPACE);
    loop {
        let wait = match request_token(&accounts, &name).await {
            Ok(issued) => {
                token.send_replace(Some(issued));
                Duration::from_secs((TOKEN_SECONDS as u64) * 8 / 10)
            }
            Err(e) => {
                tracing::warn!(controller = %name, error = %format!("{e:#}"), "cannot get the controller's token");
                RETRY
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            // Every client of the controller is gone (the controller manager stopped: leadership lost).
            () = token.closed() => return,
        }
    }
}

async fn request_token(accounts: &Api<ServiceAccount>, name: &str) -> anyhow::Result<String> {
    if accounts.get_opt(name).await?.is_none() {
        let account = ServiceAccount {
            metadata: kube::api::ObjectMeta {
                name: Some(name.to_string()),
                namespace: Some(NAMESPACE.to_string()),
                ..Default::default()
            },
            ..Default::default()
        };
        match accounts.create(&PostParams::default(), &account).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e).with_context(|| format!("creating ServiceAccount {NAMESPACE}/{name}")),
        }
    }
    let request = TokenRequest {
        spec: TokenRequestSpec {
            expiration_seconds: Some(TOKEN_SECONDS),
            ..Default::default()
        },
        ..Default::default()
    };
    let issued = accounts
        .create_token_request(name, &PostParams::default(), &request)
        .await
        .with_context(|| format!("requesting a token of {NAMESPACE}/{name}"))?;
    issued
        .status
        .map(|status| status.token)
        .filter(|token| !token.is_empty())
        .context("the TokenRequest's status holds no token")
}
