//! bonsai's configuration file, as k3s reads its own: `config.yaml` (a map whose keys are the long flags'
//! names, without the dashes), then every `config.yaml.d/*.yaml` drop-in in name order. A key set again replaces
//! the earlier value; a key written `name+` appends to it instead (for lists, and for strings joined with a comma,
//! k3s's rule). What the settings mean (which flags exist, which take lists) is the command line's business: this
//! crate only reads and merges.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the config file {} is not YAML: {message}", path.display())]
    Yaml { path: PathBuf, message: String },
    #[error("the config file {} is not a map of flag names to values", path.display())]
    NotAMap { path: PathBuf },
    #[error("key {key:?} in {}: {problem}", path.display())]
    BadValue {
        key: String,
        path: PathBuf,
        problem: String,
    },
}

/// One merged key: its values (one for a scalar, any number for a list) and the file that last set it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    pub key: String,
    pub values: Vec<String>,
    /// The value was written as a list (or appended to), not a single scalar.
    pub list: bool,
    pub file: PathBuf,
}

/// The files read for `main`, in order: `main` itself when it exists, then `<main>.d/*.yaml` (and `*.yml`) by name.
pub fn files(main: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let mut files = Vec::new();
    if main.is_file() {
        files.push(main.to_path_buf());
    }
    let mut dropins = PathBuf::from(main);
    dropins.as_mut_os_string().push(".d");
    match std::fs::read_dir(&dropins) {
        Ok(entries) => {
            let mut found: Vec<PathBuf> = entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.is_file() && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
                })
                .collect();
            found.sort();
            files.extend(found);
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(ConfigError::Read {
                path: dropins,
                source,
            });
        }
    }
    Ok(files)
}

/// Reads and merges `main` and its drop-ins. A missing `main` is an error only when `required` (given on the
/// command line or in the environment rather than the default).
pub fn load(main: &Path, required: bool) -> Result<Vec<Setting>, ConfigError> {
    if required && !main.is_file() {
        return Err(ConfigError::Read {
            path: main.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        });
    }
    let mut merged: Vec<Setting> = Vec::new();
    for file in files(main)? {
        let text = std::fs::read_to_string(&file).map_err(|source| ConfigError::Read {
            path: file.clone(),
            source,
        })?;
        merge(&mut merged, &file, &text)?;
    }
    Ok(merged)
}

/// Merges one file's text into `merged`, in k3s's way.
pub fn merge(merged: &mut Vec<Setting>, file: &Path, text: &str) -> Result<(), ConfigError> {
    if text.trim().is_empty() {
        return Ok(());
    }
    let document: serde_json::Value = serde_saphyr::from_str(text).map_err(|e| ConfigError::Yaml {
        path: file.to_path_buf(),
        message: e.to_string(),
    })?;
    let map = match document {
        serde_json::Value::Null => return Ok(()),
        serde_json::Value::Object(map) => map,
        _ => {
            return Err(ConfigError::NotAMap {
                path: file.to_path_buf(),
            });
        }
    };
    for (raw_key, value) in map {
        let (key, append) = match raw_key.strip_suffix('+') {
            Some(key) => (key.trim_start_matches("--").to_string(), true),
            None => (raw_key.trim_start_matches("--").to_string(), false),
        };
        let bad = |problem: &str| ConfigError::BadValue {
            key: raw_key.clone(),
            path: file.to_path_buf(),
            problem: problem.to_string(),
        };
        let (values, list) = match value {
            serde_json::Value::Array(items) => (
                items
                    .into_iter()
                    .map(|v| {
                        scalar(v).ok_or_else(|| bad("a list's items must be strings, numbers or booleans"))
                    })
                    .collect::<Result<Vec<_>, _>>()?,
                true,
            ),
            v => {
                (
                    vec![scalar(v).ok_or_else(|| {
                        bad("the value must be a string, number, boolean or a list of them")
                    })?],
                    false,
                )
            }
        };
        match merged.iter_mut().find(|s| s.key == key) {
            Some(existing) if append => {
                if existing.list || list {
                    existing.values.extend(values);
                    existing.list = true;
                } else {
                    // Strings append with a comma, as k3s does for `key+: value` on a string.
                    let joined = format!("{},{}", existing.values.join(","), values.join(","));
                    existing.values = vec![joined];
                }
                existing.file = file.to_path_buf();
            }
            Some(existing) => {
                existing.values = values;
                existing.list = list;
                existing.file = file.to_path_buf();
            }
            None => merged.push(Setting {
                key,
                values,
                list: list || append,
                file: file.to_path_buf(),
            }),
        }
    }
    Ok(())
}

fn scalar(value: serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(s) => Some(s),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn get<'a>(settings: &'a [Setting], key: &str) -> &'a Setting {
        settings.iter().find(|s| s.key == key).unwrap()
    }

    #[test]
    fn a_file_and_its_dropins_merge_in_name_order() {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("config.yaml");
        std::fs::write(
            &main,
            "write-kubeconfig-mode: \"0644\"\nnode-label:\n  - tier=edge\n  - zone=a\ndisable-agent: true\n\
             https-listen-port: 7443\n",
        )
        .unwrap();
        let d = dir.path().join("config.yaml.d");
        std::fs::create_dir(&d).unwrap();
        std::fs::write(
            d.join("20-more.yaml"),
            "node-label+: [rack=3]\nhttps-listen-port: 8443\n",
        )
        .unwrap();
        std::fs::write(d.join("10-first.yaml"), "node-label: [only=this]\n").unwrap();
        std::fs::write(d.join("README.txt"), "not: read\n").unwrap();
        let settings = load(&main, true).unwrap();
        // 10-first replaced the labels, 20-more appended to them.
        assert_eq!(get(&settings, "node-label").values, ["only=this", "rack=3"]);
        assert_eq!(get(&settings, "node-label").file, d.join("20-more.yaml"));
        assert_eq!(get(&settings, "https-listen-port").values, ["8443"]);
        assert!(!get(&settings, "https-listen-port").list);
        assert_eq!(get(&settings, "write-kubeconfig-mode").values, ["0644"]);
        assert_eq!(get(&settings, "disable-agent").values, ["true"]);
        assert!(settings.iter().all(|s| s.key != "not"));
    }

    #[test]
    fn appending_to_a_string_joins_with_a_comma() {
        let mut merged = Vec::new();
        merge(&mut merged, Path::new("a.yaml"), "disable: servicelb\n").unwrap();
        merge(&mut merged, Path::new("b.yaml"), "disable+: coredns\n").unwrap();
        assert_eq!(merged[0].values, ["servicelb,coredns"]);
    }

    #[test]
    fn a_missing_default_file_is_no_settings_but_a_missing_named_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("config.yaml");
        assert!(load(&main, false).unwrap().is_empty());
        let err = load(&main, true).unwrap_err().to_string();
        assert!(err.contains("config.yaml"), "{err}");
    }

    #[test]
    fn bad_files_name_the_file_and_key() {
        let file = Path::new("/etc/bonsai/config.yaml");
        let err = merge(&mut Vec::new(), file, "node-label: {a: b}\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("\"node-label\"") && err.contains("/etc/bonsai/config.yaml"),
            "{err}"
        );
        let err = merge(&mut Vec::new(), file, "- a\n- b\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a map"), "{err}");
        let err = merge(&mut Vec::new(), file, "a: [\n").unwrap_err().to_string();
        assert!(err.contains("not YAML"), "{err}");
        assert!(merge(&mut Vec::new(), file, "# only a comment\n").is_ok());
    }
}
