//! The files of configMap and secret volumes and projections: configmap.go's and secret.go's `MakePayload`.

use k8s_openapi::api::core::v1::{ConfigMap, KeyToPath, Secret};

use super::{FileProjection, Payload, VolumeError, mode_or_default};

/// Every key of the ConfigMap (`data` and `binaryData`) with `default_mode`, or only the `items`, each at its
/// path with its mode. A missing item key is an error unless the volume is optional.
pub(crate) fn config_map_payload(
    items: Option<&[KeyToPath]>,
    config_map: &ConfigMap,
    default_mode: u32,
    optional: bool,
) -> Result<Payload, VolumeError> {
    let data = config_map.data.as_ref();
    let binary = config_map.binary_data.as_ref();
    let mut payload = Payload::new();
    match items {
        None | Some([]) => {
            for (key, value) in data.into_iter().flatten() {
                payload.insert(key.clone(), FileProjection::new(value.as_bytes(), default_mode));
            }
            for (key, value) in binary.into_iter().flatten() {
                payload.insert(key.clone(), FileProjection::new(value.0.clone(), default_mode));
            }
        }
        Some(items) => {
            for item in items {
                let content = if let Some(value) = data.and_then(|d| d.get(&item.key)) {
                    value.as_bytes().to_vec()
                } else if let Some(value) = binary.and_then(|b| b.get(&item.key)) {
                    value.0.clone()
                } else if optional {
                    continue;
                } else {
                    return Err(VolumeError::MissingConfigMapKey(item.key.clone()));
                };
                let mode = item.mode.map_or(default_mode, |mode| mode_or_default(Some(mode)));
                payload.insert(item.path.clone(), FileProjection::new(content, mode));
            }
        }
    }
    Ok(payload)
}

/// The same for a Secret's `data` (the kubelet reads only `data`: the API server folds `stringData` into it).
pub(crate) fn secret_payload(
    items: Option<&[KeyToPath]>,
    secret: &Secret,
    default_mode: u32,
    optional: bool,
) -> Result<Payload, VolumeError> {
    let data = secret.data.as_ref();
    let mut payload = Payload::new();
    match items {
        None | Some([]) => {
            for (key, value) in data.into_iter().flatten() {
                payload.insert(key.clone(), FileProjection::new(value.0.clone(), default_mode));
            }
        }
        Some(items) => {
            for item in items {
                let Some(value) = data.and_then(|d| d.get(&item.key)) else {
                    if optional {
                        continue;
                    }
                    return Err(VolumeError::MissingSecretKey(item.key.clone()));
                };
                let mode = item.mode.map_or(default_mode, |mode| mode_or_default(Some(mode)));
                payload.insert(item.path.clone(), FileProjection::new(value.0.clone(), mode));
            }
        }
    }
    Ok(payload)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::collections::BTreeMap;

    use k8s_openapi::ByteString;

    use super::*;

    fn config_map() -> ConfigMap {
        ConfigMap {
            data: Some(BTreeMap::from([
                ("a".to_string(), "1".to_string()),
                ("b".to_string(), "2".to_string()),
            ])),
            binary_data: Some(BTreeMap::from([("bin".to_string(), ByteString(vec![0, 255]))])),
            ..ConfigMap::default()
        }
    }

    fn item(key: &str, path: &str, mode: Option<i32>) -> KeyToPath {
        KeyToPath {
            key: key.into(),
            path: path.into(),
            mode,
        }
    }

    #[test]
    fn all_keys_with_the_default_mode() {
        let payload = config_map_payload(None, &config_map(), 0o644, false).unwrap();
        assert_eq!(payload.keys().collect::<Vec<_>>(), vec!["a", "b", "bin"]);
        assert_eq!(payload["bin"].data, vec![0, 255]);
        assert!(payload.values().all(|f| f.mode == 0o644));
    }

    #[test]
    fn items_choose_keys_paths_and_modes() {
        let items = [item("a", "dir/first", Some(0o400)), item("bin", "b.bin", None)];
        let payload = config_map_payload(Some(&items), &config_map(), 0o640, false).unwrap();
        assert_eq!(payload.len(), 2);
        assert_eq!(payload["dir/first"], FileProjection::new("1", 0o400));
        assert_eq!(payload["b.bin"], FileProjection::new(vec![0, 255], 0o640));
    }

    #[test]
    fn a_missing_key_fails_unless_optional() {
        let items = [item("a", "a", None), item("nope", "n", None)];
        let error = config_map_payload(Some(&items), &config_map(), 0o644, false).unwrap_err();
        assert_eq!(
            error.to_string(),
            "configmap references non-existent config key: nope"
        );
        let payload = config_map_payload(Some(&items), &config_map(), 0o644, true).unwrap();
        assert_eq!(payload.keys().collect::<Vec<_>>(), vec!["a"]);

        let secret = Secret {
            data: Some(BTreeMap::from([(
                "token".to_string(),
                ByteString(b"s3cr3t".to_vec()),
            )])),
            ..Secret::default()
        };
        let error = secret_payload(Some(&items), &secret, 0o644, false).unwrap_err();
        assert_eq!(error.to_string(), "references non-existent secret key: a");
        assert!(
            secret_payload(Some(&items), &secret, 0o644, true)
                .unwrap()
                .is_empty()
        );
        let all = secret_payload(None, &secret, 0o600, false).unwrap();
        assert_eq!(all["token"], FileProjection::new("s3cr3t", 0o600));
    }
}
