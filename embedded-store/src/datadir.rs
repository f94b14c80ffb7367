//! The store's directory: an exclusive lock, a marker that says which engine holds the data, and
//! an initialisation that a crash cannot leave half done.
//!
//! Layout: `LOCK` (flock'd while open), `STORE` (the marker), `<engine>/` (the engine's files).
//! A new store is built in `<engine>.init/`; the marker is written next, and the rename to
//! `<engine>/` comes last. Whatever step a crash interrupts, the next open either finishes the job
//! or starts again from an empty directory, and never mistakes foreign files for a store.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::StoreError;
use crate::engine::{self, Engine, EngineError, EngineKind, EngineTuning};

const LOCK_FILE: &str = "LOCK";
const MARKER_FILE: &str = "STORE";
const MARKER_HEADER: &str = "bonsai-store format 1";
const INIT_SUFFIX: &str = ".init";

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug)]
pub(crate) struct OpenedDir {
    pub(crate) lock: File,
    pub(crate) engine: Box<dyn Engine>,
    pub(crate) fresh: bool,
}

pub(crate) fn open(
    dir: &Path,
    requested: Option<EngineKind>,
    tuning: EngineTuning,
) -> Result<OpenedDir, StoreError> {
    fs::create_dir_all(dir).map_err(io_error(dir))?;
    let lock_path = dir.join(LOCK_FILE);
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io_error(&lock_path))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            return Err(StoreError::InUse {
                path: dir.to_path_buf(),
            });
        }
        Err(TryLockError::Error(e)) => {
            return Err(StoreError::Io {
                path: lock_path,
                source: e,
            });
        }
    }
    let marker_path = dir.join(MARKER_FILE);
    match fs::read_to_string(&marker_path) {
        Ok(text) => {
            let kind = parse_marker(&text).ok_or_else(|| StoreError::NotAStore {
                path: dir.to_path_buf(),
                reason: format!("{} is not a bonsai store marker", marker_path.display()),
            })?;
            if let Some(requested) = requested
                && requested != kind
            {
                return Err(StoreError::EngineMismatch {
                    path: dir.to_path_buf(),
                    found: kind,
                    requested,
                });
            }
            let engine_dir = dir.join(kind.name());
            let init_dir = dir.join(format!("{}{INIT_SUFFIX}", kind.name()));
            if !engine_dir.exists() {
                if !init_dir.is_dir() {
                    return Err(StoreError::Corrupt {
                        path: dir.to_path_buf(),
                        detail: format!("the marker names {kind}, but {} is missing", engine_dir.display()),
                    });
                }
                // A crash came between writing the marker and the final rename: finish it.
                fs::rename(&init_dir, &engine_dir).map_err(io_error(&engine_dir))?;
                sync_dir(dir)?;
            }
            let engine = engine::open(kind, &engine_dir, tuning).map_err(|e| engine_error(dir, e))?;
            Ok(OpenedDir {
                lock,
                engine,
                fresh: false,
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let kind = requested.unwrap_or(EngineKind::DEFAULT);
            clear_unfinished_init(dir)?;
            let init_dir = dir.join(format!("{}{INIT_SUFFIX}", kind.name()));
            fs::create_dir(&init_dir).map_err(io_error(&init_dir))?;
            // Build it, close it (sled must not keep writing under the old name), then publish it.
            drop(engine::create(kind, &init_dir, tuning).map_err(|e| engine_error(dir, e))?);
            write_marker(dir, kind)?;
            let engine_dir = dir.join(kind.name());
            fs::rename(&init_dir, &engine_dir).map_err(io_error(&engine_dir))?;
            sync_dir(dir)?;
            let engine = engine::open(kind, &engine_dir, tuning).map_err(|e| engine_error(dir, e))?;
            Ok(OpenedDir {
                lock,
                engine,
                fresh: true,
            })
        }
        Err(e) => Err(StoreError::Io {
            path: marker_path,
            source: e,
        }),
    }
}

fn engine_error(dir: &Path, e: EngineError) -> StoreError {
    match e {
        EngineError::Corrupt { detail, .. } => StoreError::Corrupt {
            path: dir.to_path_buf(),
            detail,
        },
        other => StoreError::Engine(other),
    }
}

fn parse_marker(text: &str) -> Option<EngineKind> {
    let mut lines = text.lines();
    if lines.next()? != MARKER_HEADER {
        return None;
    }
    lines.next()?.strip_prefix("engine ")?.parse().ok()
}

/// A directory without a marker may hold only the lock and unfinished initialisations; anything
/// else means it belongs to someone else, and is left alone.
fn clear_unfinished_init(dir: &Path) -> Result<(), StoreError> {
    let mut unfinished: Vec<PathBuf> = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_error(dir))? {
        let entry = entry.map_err(io_error(dir))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name == LOCK_FILE {
            continue;
        }
        let is_init = name
            .strip_suffix(INIT_SUFFIX)
            .is_some_and(|engine| engine.parse::<EngineKind>().is_ok());
        if is_init && entry.path().is_dir() {
            unfinished.push(entry.path());
        } else {
            return Err(StoreError::NotAStore {
                path: dir.to_path_buf(),
                reason: format!("it holds {name:?} but no {MARKER_FILE} marker"),
            });
        }
    }
    for path in unfinished {
        fs::remove_dir_all(&path).map_err(io_error(&path))?;
    }
    Ok(())
}

fn write_marker(dir: &Path, kind: EngineKind) -> Result<(), StoreError> {
    let tmp = dir.join(format!("{MARKER_FILE}.tmp"));
    let mut file = File::create(&tmp).map_err(io_error(&tmp))?;
    file.write_all(format!("{MARKER_HEADER}\nengine {kind}\n").as_bytes())
        .map_err(io_error(&tmp))?;
    file.sync_all().map_err(io_error(&tmp))?;
    let marker = dir.join(MARKER_FILE);
    fs::rename(&tmp, &marker).map_err(io_error(&marker))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_error(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TUNING: EngineTuning = EngineTuning { cache_bytes: 1 << 20 };

    #[test]
    fn marker_round_trips_and_rejects_foreign_text() {
        assert_eq!(
            parse_marker(&format!("{MARKER_HEADER}\nengine sled\n")),
            Some(EngineKind::Sled)
        );
        assert_eq!(parse_marker("hello\nengine sled\n"), None);
        assert_eq!(parse_marker(&format!("{MARKER_HEADER}\nengine mongo\n")), None);
    }

    #[test]
    fn a_crash_between_marker_and_rename_is_finished_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let opened = open(dir.path(), Some(EngineKind::Redb), TUNING).unwrap();
        drop(opened);
        // Put the directory back in the state of a crash right after the marker was written.
        fs::rename(dir.path().join("redb"), dir.path().join("redb.init")).unwrap();
        let opened = open(dir.path(), None, TUNING).unwrap();
        assert!(!opened.fresh);
        assert!(dir.path().join("redb").is_dir());
    }

    #[test]
    fn a_crash_before_the_marker_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("sled.init")).unwrap();
        fs::write(dir.path().join("sled.init/junk"), b"half-built").unwrap();
        let opened = open(dir.path(), Some(EngineKind::Sled), TUNING).unwrap();
        assert!(opened.fresh);
        assert!(!dir.path().join("sled.init").exists());
    }

    #[test]
    fn foreign_directories_are_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("member"), b"etcd was here").unwrap();
        let err = open(dir.path(), None, TUNING).unwrap_err();
        assert!(matches!(err, StoreError::NotAStore { .. }), "{err}");
        assert!(err.to_string().contains("member"), "{err}");
        assert_eq!(fs::read(dir.path().join("member")).unwrap(), b"etcd was here");
    }

    #[test]
    fn a_missing_engine_directory_is_corruption_not_a_fresh_start() {
        let dir = tempfile::tempdir().unwrap();
        drop(open(dir.path(), Some(EngineKind::Redb), TUNING).unwrap());
        fs::remove_dir_all(dir.path().join("redb")).unwrap();
        let err = open(dir.path(), None, TUNING).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    }

    #[test]
    fn engine_mismatch_is_named() {
        let dir = tempfile::tempdir().unwrap();
        drop(open(dir.path(), Some(EngineKind::Sled), TUNING).unwrap());
        let err = open(dir.path(), Some(EngineKind::Redb), TUNING).unwrap_err();
        assert!(err.to_string().contains("holds sled data"), "{err}");
    }
}
