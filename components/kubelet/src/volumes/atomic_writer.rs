//! Kubernetes' `AtomicWriter` (`pkg/volume/util/atomic_writer.go`): a set of files projected into a directory so
//! that a reader sees either all of the old version or all of the new one.
//!
//! The files are written into a new hidden directory `..<UTC timestamp>.<random>`; `..data` is a symlink to the
//! current one, replaced by renaming a new symlink `..data_tmp` over it (rename is atomic); the user-visible
//! names are symlinks through it, `key -> ..data/key` (for `dir/key`, `dir -> ..data/dir`). Names starting with
//! `..` are the writer's.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::BuildHasher;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use super::VolumeError;

const MAX_FILE_NAME_LENGTH: usize = 255;
const MAX_PATH_LENGTH: usize = 4096;
const DATA_DIR_NAME: &str = "..data";
const NEW_DATA_DIR_NAME: &str = "..data_tmp";

/// One file of a projection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileProjection {
    pub data: Vec<u8>,
    pub mode: u32,
    /// The owner to give the file (a service account token, when every container runs as one user).
    pub fs_user: Option<u32>,
    pub fs_group: Option<u32>,
}

impl FileProjection {
    pub fn new(data: impl Into<Vec<u8>>, mode: u32) -> Self {
        Self {
            data: data.into(),
            mode,
            fs_user: None,
            fs_group: None,
        }
    }
}

/// The files of a projection by their path relative to the volume.
pub type Payload = BTreeMap<String, FileProjection>;

/// Ownership and permissions given to the new timestamped directory (by its name) before it is published.
pub type SetPerms<'a> = &'a dyn Fn(&str) -> Result<(), VolumeError>;

/// Projects payloads into one directory; callers serialise writes to the same directory.
#[derive(Debug)]
pub struct AtomicWriter {
    target_dir: PathBuf,
}

impl AtomicWriter {
    /// A writer for `target_dir`, which must exist.
    pub fn new(target_dir: impl Into<PathBuf>) -> Result<Self, VolumeError> {
        let target_dir = target_dir.into();
        std::fs::metadata(&target_dir).map_err(|error| VolumeError::io(&target_dir, error))?;
        Ok(Self { target_dir })
    }

    /// Makes the directory show exactly `payload`, and returns whether a new version was published (`false` when
    /// the files on disk already were the payload). The steps are atomic_writer.go's `Write`.
    pub fn write(&self, payload: &Payload, set_perms: Option<SetPerms<'_>>) -> Result<bool, VolumeError> {
        // (1) Validate, and clean the paths.
        let payload = validate_payload(payload)?;

        // (2) The current timestamped directory.
        let data_dir_path = self.target_dir.join(DATA_DIR_NAME);
        let mut old_ts_dir = match std::fs::read_link(&data_dir_path) {
            Ok(target) => Some(target),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
            Err(error) => return Err(VolumeError::io(&data_dir_path, error)),
        };

        let mut paths_to_remove = BTreeSet::new();
        let mut should_write = true;
        if let Some(old) = &old_ts_dir {
            let old_ts_path = self.target_dir.join(old);
            // (3) What the old version has that the payload no longer has.
            paths_to_remove = paths_to_remove_from(&payload, &old_ts_path)?;
            // (4) Whether the data differs. When nothing changed, the user-visible links are still made (kubernetes
            // #121472) and the current directory is kept.
            if !should_write_payload(&payload, &old_ts_path)? && paths_to_remove.is_empty() {
                should_write = false;
                old_ts_dir = None;
            }
        }

        if should_write {
            // (5) A new timestamped directory.
            let ts_dir = self.new_timestamp_dir()?;
            let ts_dir_name = ts_dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let published = self.publish(&payload, &ts_dir, &ts_dir_name, &data_dir_path, set_perms);
            if published.is_err() {
                let _ = std::fs::remove_dir_all(&ts_dir);
            }
            published?;
        }

        // (10) The user-visible links.
        self.create_user_visible_files(&payload)?;
        // (11) The user-visible names the payload dropped.
        self.remove_user_visible_paths(&paths_to_remove)?;
        // (12) The previous timestamped directory.
        if let Some(old) = old_ts_dir {
            let old_ts_path = self.target_dir.join(old);
            match std::fs::remove_dir_all(&old_ts_path) {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => return Err(VolumeError::io(old_ts_path, error)),
            }
        }
        // Beyond Kubernetes: timestamped directories left by a write that was interrupted (a crash between steps 5
        // and 12) would stay forever; any but the current one goes.
        self.remove_stale_timestamp_dirs()?;
        Ok(should_write)
    }

    /// Steps (6) to (9): write the files, set their ownership, and swap `..data` to them.
    fn publish(
        &self,
        payload: &Payload,
        ts_dir: &Path,
        ts_dir_name: &str,
        data_dir_path: &Path,
        set_perms: Option<SetPerms<'_>>,
    ) -> Result<(), VolumeError> {
        // (6)
        write_payload_to_dir(payload, ts_dir)?;
        // (7)
        if let Some(set_perms) = set_perms {
            set_perms(ts_dir_name)?;
        }
        // (8) A `..data_tmp` left by an interrupted write would make the symlink fail forever.
        let new_data_dir_path = self.target_dir.join(NEW_DATA_DIR_NAME);
        if std::fs::symlink_metadata(&new_data_dir_path).is_ok() {
            std::fs::remove_file(&new_data_dir_path)
                .map_err(|error| VolumeError::io(&new_data_dir_path, error))?;
        }
        std::os::unix::fs::symlink(ts_dir_name, &new_data_dir_path)
            .map_err(|error| VolumeError::io(&new_data_dir_path, error))?;
        // (9) The atomic step.
        if let Err(error) = std::fs::rename(&new_data_dir_path, data_dir_path) {
            let _ = std::fs::remove_file(&new_data_dir_path);
            return Err(VolumeError::io(data_dir_path, error));
        }
        Ok(())
    }

    /// `os.MkdirTemp(targetDir, "..2006_01_02_15_04_05.")`, then mode 0755 whatever the umask.
    fn new_timestamp_dir(&self) -> Result<PathBuf, VolumeError> {
        let prefix = format!("..{}.", utc_timestamp(SystemTime::now()));
        let random = std::collections::hash_map::RandomState::new();
        for attempt in 0u32..10_000 {
            let suffix = random.hash_one(attempt) as u32;
            let path = self.target_dir.join(format!("{prefix}{suffix}"));
            match std::fs::create_dir(&path) {
                Ok(()) => {
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                        .map_err(|error| VolumeError::io(&path, error))?;
                    return Ok(path);
                }
                Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(error) => return Err(VolumeError::io(path, error)),
            }
        }
        Err(VolumeError::io(
            &self.target_dir,
            std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "no free timestamped directory name",
            ),
        ))
    }

    /// `createUserVisibleFiles`: for each top-level name of the payload, `name -> ..data/name` unless `name`
    /// already exists (as the link, or as a nested mount point's directory).
    fn create_user_visible_files(&self, payload: &Payload) -> Result<(), VolumeError> {
        for path in payload.keys() {
            let link_name = path.split('/').next().unwrap_or(path);
            let visible = self.target_dir.join(link_name);
            match std::fs::read_link(&visible) {
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                    std::os::unix::fs::symlink(Path::new(DATA_DIR_NAME).join(link_name), &visible)
                        .map_err(|error| VolumeError::io(&visible, error))?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// `removeUserVisiblePaths`: only the top-level names (the links) are removed; deeper paths went with the old
    /// timestamped directory.
    fn remove_user_visible_paths(&self, paths: &BTreeSet<String>) -> Result<(), VolumeError> {
        let mut last_error = None;
        for path in paths.iter().filter(|p| !p.contains('/')) {
            let visible = self.target_dir.join(path);
            let removed = std::fs::remove_file(&visible).or_else(|error| match error.raw_os_error() {
                Some(nix::libc::EISDIR) => std::fs::remove_dir(&visible),
                _ => Err(error),
            });
            if let Err(error) = removed {
                tracing::warn!(path = %visible.display(), %error, "pruning an old user-visible path");
                last_error = Some(VolumeError::io(visible, error));
            }
        }
        last_error.map_or(Ok(()), Err)
    }

    fn remove_stale_timestamp_dirs(&self) -> Result<(), VolumeError> {
        let current = std::fs::read_link(self.target_dir.join(DATA_DIR_NAME)).ok();
        let entries =
            std::fs::read_dir(&self.target_dir).map_err(|error| VolumeError::io(&self.target_dir, error))?;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let is_timestamp_dir = name
                .strip_prefix("..")
                .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()));
            if !is_timestamp_dir || current.as_deref() == Some(Path::new(name.as_ref())) {
                continue;
            }
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                let path = entry.path();
                std::fs::remove_dir_all(&path).map_err(|error| VolumeError::io(path, error))?;
            }
        }
        Ok(())
    }
}

/// `validatePayload`: every path valid, then cleaned.
fn validate_payload(payload: &Payload) -> Result<Payload, VolumeError> {
    let mut clean = Payload::new();
    for (path, file) in payload {
        validate_path(path)?;
        clean.insert(super::clean_path(path), file.clone());
    }
    Ok(clean)
}

/// `validatePath`: not empty, relative, at most 4096 bytes, no `..` element, no element over 255 bytes, not
/// starting with `..`.
pub(crate) fn validate_path(path: &str) -> Result<(), VolumeError> {
    if path.is_empty() {
        return Err(VolumeError::InvalidPath(format!("must not be empty: {path:?}")));
    }
    if path.starts_with('/') {
        return Err(VolumeError::InvalidPath(format!("must be relative path: {path}")));
    }
    if path.len() > MAX_PATH_LENGTH {
        return Err(VolumeError::InvalidPath(format!(
            "must be less than or equal to {MAX_PATH_LENGTH} characters"
        )));
    }
    let items: Vec<&str> = path.split('/').collect();
    for item in &items {
        if *item == ".." {
            return Err(VolumeError::InvalidPath(format!("must not contain '..': {path}")));
        }
        if item.len() > MAX_FILE_NAME_LENGTH {
            return Err(VolumeError::InvalidPath(format!(
                "filenames must be less than or equal to {MAX_FILE_NAME_LENGTH} characters"
            )));
        }
    }
    if items[0].starts_with("..") && items[0].len() > 2 {
        return Err(VolumeError::InvalidPath(format!(
            "must not start with '..': {path}"
        )));
    }
    Ok(())
}

/// `shouldWritePayload`: whether any file is missing from the old version or has other content (modes are not
/// compared, as in Kubernetes).
fn should_write_payload(payload: &Payload, old_ts_dir: &Path) -> Result<bool, VolumeError> {
    for (path, file) in payload {
        let on_disk = old_ts_dir.join(path);
        if std::fs::symlink_metadata(&on_disk).is_err() {
            return Ok(true);
        }
        let content = std::fs::read(&on_disk).map_err(|error| VolumeError::io(&on_disk, error))?;
        if content != file.data {
            return Ok(true);
        }
    }
    Ok(false)
}

/// `pathsToRemove`: the paths of the old version (files and directories) that are neither in the payload nor a
/// parent of one of its paths.
fn paths_to_remove_from(payload: &Payload, old_ts_dir: &Path) -> Result<BTreeSet<String>, VolumeError> {
    let mut paths = BTreeSet::new();
    match walk_relative(old_ts_dir, old_ts_dir, &mut paths) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeSet::new()),
        Err(error) => return Err(VolumeError::io(old_ts_dir, error)),
    }
    let mut new_paths = BTreeSet::new();
    for path in payload.keys() {
        let mut sub_path = path.as_str();
        loop {
            new_paths.insert(sub_path.to_string());
            match sub_path.rfind('/') {
                Some(slash) => sub_path = &sub_path[..slash],
                None => break,
            }
        }
    }
    Ok(paths.difference(&new_paths).cloned().collect())
}

/// `filepath.Walk` (no following of symlinks), collecting paths relative to `base`.
fn walk_relative(base: &Path, dir: &Path, into: &mut BTreeSet<String>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if let Ok(relative) = path.strip_prefix(base) {
            into.insert(relative.to_string_lossy().into_owned());
        }
        if entry.file_type()?.is_dir() {
            walk_relative(base, &path, into)?;
        }
    }
    Ok(())
}

/// `writePayloadToDir`: each file with its exact mode (whatever the umask), parents made as needed, owned by its
/// `fs_user` when it has one.
fn write_payload_to_dir(payload: &Payload, dir: &Path) -> Result<(), VolumeError> {
    for (path, file) in payload {
        let full_path = dir.join(path);
        if let Some(parent) = full_path.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o777)
                .create(parent)
                .map_err(|error| VolumeError::io(parent, error))?;
        }
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(file.mode)
            .open(&full_path)
            .map_err(|error| VolumeError::io(&full_path, error))?;
        out.write_all(&file.data)
            .map_err(|error| VolumeError::io(&full_path, error))?;
        drop(out);
        std::fs::set_permissions(&full_path, std::fs::Permissions::from_mode(file.mode))
            .map_err(|error| VolumeError::io(&full_path, error))?;
        if let Some(user) = file.fs_user {
            std::os::unix::fs::chown(&full_path, Some(user), file.fs_group)
                .map_err(|error| VolumeError::io(&full_path, error))?;
        }
    }
    Ok(())
}

use std::os::unix::fs::DirBuilderExt;

/// `2006_01_02_15_04_05` in UTC.
fn utc_timestamp(now: SystemTime) -> String {
    let seconds = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = (seconds / 86_400) as i64;
    let of_day = seconds % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}_{month:02}_{day:02}_{:02}_{:02}_{:02}",
        of_day / 3600,
        (of_day / 60) % 60,
        of_day % 60
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn payload(files: &[(&str, &str)]) -> Payload {
        files
            .iter()
            .map(|(path, data)| (path.to_string(), FileProjection::new(data.as_bytes(), 0o644)))
            .collect()
    }

    fn timestamp_dirs(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("..") && n != DATA_DIR_NAME)
            .collect();
        names.sort();
        names
    }

    #[test]
    fn timestamps_are_go_layout_in_utc() {
        let at = UNIX_EPOCH + std::time::Duration::from_secs(1_454_339_045); // 2016-02-01T15:04:05Z
        assert_eq!(utc_timestamp(at), "2016_02_01_15_04_05");
        assert_eq!(utc_timestamp(UNIX_EPOCH), "1970_01_01_00_00_00");
        let leap = UNIX_EPOCH + std::time::Duration::from_secs(951_782_400); // 2000-02-29T00:00:00Z
        assert_eq!(utc_timestamp(leap), "2000_02_29_00_00_00");
    }

    #[test]
    fn paths_are_validated_with_kubernetes_messages() {
        let message = |p: &str| validate_path(p).unwrap_err().to_string();
        assert_eq!(message(""), "invalid path: must not be empty: \"\"");
        assert_eq!(message("/etc/x"), "invalid path: must be relative path: /etc/x");
        assert_eq!(message("a/../b"), "invalid path: must not contain '..': a/../b");
        assert_eq!(
            message("..data"),
            "invalid path: must not start with '..': ..data"
        );
        assert_eq!(
            message(&"x".repeat(256)),
            "invalid path: filenames must be less than or equal to 255 characters"
        );
        assert!(validate_path("a/b/c").is_ok());
        assert!(validate_path("..").is_err());
        assert!(validate_path(".hidden").is_ok());
    }

    #[test]
    fn an_update_is_seen_through_the_same_path_and_the_old_directory_goes() {
        let dir = tempfile::tempdir().unwrap();
        let writer = AtomicWriter::new(dir.path()).unwrap();
        assert!(
            writer
                .write(&payload(&[("key", "one"), ("sub/nested", "n")]), None)
                .unwrap()
        );
        let visible = dir.path().join("key");
        assert_eq!(std::fs::read_link(&visible).unwrap(), Path::new("..data/key"));
        assert_eq!(
            std::fs::read_link(dir.path().join("sub")).unwrap(),
            Path::new("..data/sub")
        );
        assert_eq!(std::fs::read_to_string(&visible).unwrap(), "one");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("sub/nested")).unwrap(),
            "n"
        );
        let first = std::fs::read_link(dir.path().join(DATA_DIR_NAME)).unwrap();
        assert!(first.to_string_lossy().starts_with(".."), "{first:?}");
        assert_eq!(
            timestamp_dirs(dir.path()),
            vec![first.to_string_lossy().into_owned()]
        );

        // A file opened before the update keeps the old content; the path shows the new one.
        let open_before = std::fs::File::open(&visible).unwrap();
        assert!(
            writer
                .write(&payload(&[("key", "two"), ("sub/nested", "n")]), None)
                .unwrap()
        );
        assert_eq!(std::fs::read_to_string(&visible).unwrap(), "two");
        let second = std::fs::read_link(dir.path().join(DATA_DIR_NAME)).unwrap();
        assert_ne!(first, second);
        assert_eq!(
            timestamp_dirs(dir.path()),
            vec![second.to_string_lossy().into_owned()]
        );
        drop(open_before);

        // The same payload again publishes nothing.
        assert!(
            !writer
                .write(&payload(&[("key", "two"), ("sub/nested", "n")]), None)
                .unwrap()
        );
        assert_eq!(
            std::fs::read_link(dir.path().join(DATA_DIR_NAME)).unwrap(),
            second
        );
    }

    #[test]
    fn a_removed_key_disappears() {
        let dir = tempfile::tempdir().unwrap();
        let writer = AtomicWriter::new(dir.path()).unwrap();
        writer
            .write(&payload(&[("a", "1"), ("b", "2"), ("d/x", "3")]), None)
            .unwrap();
        assert!(writer.write(&payload(&[("a", "1")]), None).unwrap());
        assert!(dir.path().join("a").exists());
        assert!(std::fs::symlink_metadata(dir.path().join("b")).is_err());
        assert!(std::fs::symlink_metadata(dir.path().join("d")).is_err());
        let mut visible: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with(".."))
            .collect();
        visible.sort();
        assert_eq!(visible, vec!["a"]);
    }

    #[test]
    fn modes_are_exact_whatever_the_umask() {
        let dir = tempfile::tempdir().unwrap();
        let writer = AtomicWriter::new(dir.path()).unwrap();
        let mut files = Payload::new();
        files.insert("open".into(), FileProjection::new("x", 0o777));
        files.insert("private".into(), FileProjection::new("y", 0o400));
        writer.write(&files, None).unwrap();
        let mode = |name: &str| {
            std::fs::metadata(dir.path().join(name))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777
        };
        assert_eq!(mode("open"), 0o777);
        assert_eq!(mode("private"), 0o400);
        let ts = std::fs::read_link(dir.path().join(DATA_DIR_NAME)).unwrap();
        assert_eq!(
            std::fs::metadata(dir.path().join(ts))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o755
        );
    }

    #[test]
    fn leftovers_of_an_interrupted_write_are_cleaned_up() {
        let dir = tempfile::tempdir().unwrap();
        let writer = AtomicWriter::new(dir.path()).unwrap();
        writer.write(&payload(&[("a", "1")]), None).unwrap();
        std::fs::create_dir(dir.path().join("..2020_01_01_00_00_00.123")).unwrap();
        std::os::unix::fs::symlink("..2020_01_01_00_00_00.123", dir.path().join(NEW_DATA_DIR_NAME)).unwrap();
        writer.write(&payload(&[("a", "2")]), None).unwrap();
        let current = std::fs::read_link(dir.path().join(DATA_DIR_NAME)).unwrap();
        assert_eq!(
            timestamp_dirs(dir.path()),
            vec![current.to_string_lossy().into_owned()]
        );
        assert_eq!(std::fs::read_to_string(dir.path().join("a")).unwrap(), "2");
    }

    #[test]
    fn a_failing_set_perms_publishes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let writer = AtomicWriter::new(dir.path()).unwrap();
        writer.write(&payload(&[("a", "1")]), None).unwrap();
        let refuse = |_: &str| Err(VolumeError::Unsupported("no".into()));
        assert!(writer.write(&payload(&[("a", "2")]), Some(&refuse)).is_err());
        assert_eq!(std::fs::read_to_string(dir.path().join("a")).unwrap(), "1");
        assert_eq!(timestamp_dirs(dir.path()).len(), 1);
    }
}
