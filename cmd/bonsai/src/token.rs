//! `bonsai token create|list|delete`: kubeadm's bootstrap tokens (`kubeadm token`, `k3s token`), kept as Secrets
//! `kube-system/bootstrap-token-<id>` of type `bootstrap.kubernetes.io/token` and printed in full with the
//! cluster's CA hash, `K10<hash>::<id>.<secret>`, for `bonsai agent --token`.

use std::collections::BTreeMap;

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, ListParams, PostParams};

use crate::cli::{TokenArgs, TokenCommand};

const NAMESPACE: &str = "kube-system";
const TOKEN_TYPE: &str = "bootstrap.kubernetes.io/token";
/// Groups a joining agent's token puts it in beside `system:bootstrappers` (kubeadm's default extra group
/// is `system:bootstrappers:kubeadm:default-node-token`).
const EXTRA_GROUPS: &str = "system:bootstrappers:bonsai:default-node-token";

pub fn run(args: TokenArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(command(args))
}

fn random_part(len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    // Rejection sampling keeps every character equally likely (252 = 7 × 36).
    std::iter::repeat_with(rand::random::<u8>)
        .filter(|b| *b < 252)
        .take(len)
        .map(|b| ALPHABET[b as usize % ALPHABET.len()] as char)
        .collect()
}

fn data(secret: &Secret, key: &str) -> Option<String> {
    let bytes = secret.data.as_ref()?.get(key)?;
    String::from_utf8(bytes.0.clone()).ok()
}

async fn command(args: TokenArgs) -> anyhow::Result<()> {
    let client = crate::network::kube_client(&args.kubeconfig, None).await?;
    let api: Api<Secret> = Api::namespaced(client, NAMESPACE);
    match args.command {
        TokenCommand::Create {
            ttl,
            description,
            token,
        } => {
            let ca_path = args.data_dir.join("server/tls/server-ca.crt");
            let ca = std::fs::read_to_string(&ca_path).with_context(|| {
                format!(
                    "cannot read the cluster CA {} (run this on the server, with its --data-dir)",
                    ca_path.display()
                )
            })?;
            let (id, secret) = match &token {
                Some(token) => match apiserver::bootstrap_tokens::parse(token) {
                    Some((id, secret)) => (id.to_string(), secret.to_string()),
                    None => bail!(
                        "{token:?} is not a bootstrap token: expected <id>.<secret>, 6 and 16 characters of [a-z0-9]"
                    ),
                },
                None => (random_part(6), random_part(16)),
            };
            let mut fields: BTreeMap<String, String> = [
                ("token-id", id.clone()),
                ("token-secret", secret.clone()),
                ("usage-bootstrap-authentication", "true".into()),
                ("usage-bootstrap-signing", "true".into()),
                ("auth-extra-groups", EXTRA_GROUPS.into()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
            if let Some(description) = description {
                fields.insert("description".into(), description);
            }
            if !ttl.is_zero() {
                let expires = k8s_openapi::jiff::Timestamp::now()
                    + k8s_openapi::jiff::SignedDuration::from_secs(ttl.as_secs() as i64);
                fields.insert(
                    "expiration".into(),
                    expires.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
                );
            }
            let object: Secret = serde_json::from_value(serde_json::json!({
                "metadata": {"name": format!("bootstrap-token-{id}"), "namespace": NAMESPACE},
                "type": TOKEN_TYPE,
                "stringData": fields,
            }))?;
            api.create(&PostParams::default(), &object)
                .await
                .map_err(|e| match e {
                    kube::Error::Api(e) if e.code == 409 => {
                        anyhow::anyhow!("a token with id {id} exists already")
                    }
                    e => anyhow::anyhow!("cannot create the token: {e}"),
                })?;
            println!("{}", apiserver::token::full(&ca, &format!("{id}.{secret}")));
        }
        TokenCommand::List => {
            let secrets = api
                .list(&ListParams::default())
                .await
                .context("cannot list the tokens")?;
            println!("{:<8} {:<22} {:<30} DESCRIPTION", "TOKEN", "EXPIRES", "USAGES");
            for secret in secrets
                .items
                .iter()
                .filter(|s| s.type_.as_deref() == Some(TOKEN_TYPE))
            {
                let usages: Vec<&str> = ["authentication", "signing"]
                    .into_iter()
                    .filter(|u| data(secret, &format!("usage-bootstrap-{u}")).as_deref() == Some("true"))
                    .collect();
                println!(
                    "{:<8} {:<22} {:<30} {}",
                    data(secret, "token-id").unwrap_or_default(),
                    data(secret, "expiration").unwrap_or_else(|| "<forever>".into()),
                    usages.join(","),
                    data(secret, "description").unwrap_or_default(),
                );
            }
        }
        TokenCommand::Delete { tokens } => {
            for token in tokens {
                // A whole token (`K10…::<id>.<secret>`, `<id>.<secret>`) or just its id.
                let credential = apiserver::token::credential(&token).unwrap_or(&token);
                let id = credential.split('.').next().unwrap_or_default();
                if id.len() != 6 || !id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()) {
                    bail!(
                        "{token:?} names no bootstrap token: give its id (6 characters of [a-z0-9]) or the token"
                    );
                }
                match api
                    .delete(&format!("bootstrap-token-{id}"), &DeleteParams::default())
                    .await
                {
                    Ok(_) => println!("bootstrap token {id:?} deleted"),
                    Err(kube::Error::Api(e)) if e.code == 404 => bail!("there is no bootstrap token {id:?}"),
                    Err(e) => bail!("cannot delete bootstrap token {id:?}: {e}"),
                }
            }
        }
    }
    Ok(())
}
