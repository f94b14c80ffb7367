//! A webhook's `clientConfig.service` to an address: the Service's port, then a ready endpoint of its
//! EndpointSlices on the matching port (kube-apiserver's endpoint service resolver, as with
//! `--enable-aggregator-routing`); the API server runs on a node and reaches pod IPs directly. A Service
//! without ready endpoints is reported as kube-apiserver's resolver reports it.

use bytes::Bytes;
use embedded_store::{RangeRequest, Store};
use serde_json::Value;

async fn stored(store: &dyn Store, key: String) -> Result<Option<Value>, String> {
    let kv = store
        .get(Bytes::from(key), 0)
        .await
        .map_err(|e| e.to_string())?
        .kv;
    Ok(kv.and_then(|kv| serde_json::from_slice(&kv.value).ok()))
}

/// The port (name, number) of the endpoints behind service port `port`.
fn service_port(service: &Value, port: i64) -> Option<(String, Option<i64>)> {
    let entry = service
        .pointer("/spec/ports")?
        .as_array()?
        .iter()
        .find(|p| p.get("port").and_then(Value::as_i64) == Some(port))?;
    let name = entry
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let target = match entry.get("targetPort") {
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(_)) => None,
        _ => Some(port),
    };
    Some((name, target))
}

/// A ready endpoint address and port of `slices` for the port named `port_name`.
pub fn ready_endpoint(slices: &[Value], port_name: &str) -> Option<(String, u16)> {
    slices.iter().find_map(|slice| {
        let port = slice
            .get("ports")?
            .as_array()?
            .iter()
            .find(|p| p.get("name").and_then(Value::as_str).unwrap_or_default() == port_name)?
            .get("port")?
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())?;
        let address = slice.get("endpoints")?.as_array()?.iter().find_map(|e| {
            let ready = e.pointer("/conditions/ready").and_then(Value::as_bool) != Some(false);
            ready
                .then(|| {
                    e.get("addresses")?
                        .as_array()?
                        .first()?
                        .as_str()
                        .map(String::from)
                })
                .flatten()
        })?;
        Some((address, port))
    })
}

/// Address and port to call for service `namespace/name` port `port`.
pub async fn resolve(
    store: &dyn Store,
    namespace: &str,
    name: &str,
    port: i64,
) -> Result<(String, u16), String> {
    let service = stored(store, format!("/registry/core/services/{namespace}/{name}"))
        .await?
        .ok_or_else(|| format!("service \"{name}\" not found"))?;
    let (port_name, _) = service_port(&service, port)
        .ok_or_else(|| format!("no service port {port} found for service \"{name}\""))?;
    let listed = store
        .range(RangeRequest {
            prefix: Bytes::from(format!("/registry/discovery.k8s.io/endpointslices/{namespace}/")),
            ..RangeRequest::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    let slices: Vec<Value> = listed
        .kvs
        .iter()
        .filter_map(|kv| serde_json::from_slice::<Value>(&kv.value).ok())
        .filter(|s| {
            s.pointer("/metadata/labels/kubernetes.io~1service-name")
                .and_then(Value::as_str)
                == Some(name)
        })
        .collect();
    ready_endpoint(&slices, &port_name)
        .ok_or_else(|| format!("service \"{namespace}/{name}:{port}\" is not active"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_first_ready_endpoint_on_the_named_port() {
        let service = json!({"spec": {"ports": [{"name": "https", "port": 443, "targetPort": 8443}]}});
        assert_eq!(service_port(&service, 443), Some(("https".into(), Some(8443))));
        assert_eq!(service_port(&service, 80), None);
        let slices = [json!({
            "ports": [{"name": "https", "port": 8443}],
            "endpoints": [
                {"addresses": ["10.42.0.5"], "conditions": {"ready": false}},
                {"addresses": ["10.42.0.6"], "conditions": {"ready": true}},
            ],
        })];
        assert_eq!(ready_endpoint(&slices, "https"), Some(("10.42.0.6".into(), 8443)));
        assert_eq!(ready_endpoint(&slices, "metrics"), None);
    }
}
