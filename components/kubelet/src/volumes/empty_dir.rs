//! emptyDir volumes (`pkg/volume/emptydir`): a 0777 directory, on a tmpfs for `medium: Memory`; every projection
//! is one too (Kubernetes wraps them in an emptyDir). Tear-down unmounts and removes.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use nix::mount::{MntFlags, MsFlags};

use super::{VolumeError, VolumeHost};

/// emptydir.go's `perm`.
const EMPTY_DIR_MODE: u32 = 0o777;

/// What to do when a tmpfs cannot be mounted (the node agent is not root, or runs in a container without
/// `CAP_SYS_ADMIN`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TmpfsPolicy {
    /// Fail the volume, as the kubelet does.
    #[default]
    Require,
    /// Use a plain directory on disk, with a warning (for development hosts where mounting is not possible;
    /// secret material then reaches the disk).
    FallBackToDisk,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Medium {
    Disk,
    /// A tmpfs of at most this many bytes (`None`: the kernel's default, half the memory).
    Memory {
        size_bytes: Option<u64>,
    },
}

/// `SetUpAt` for a medium: the directory with mode 0777, and for memory a tmpfs mounted on it unless one already
/// is (so that a second set-up, the refresh of a projection, is harmless).
pub(crate) fn set_up(dir: &Path, medium: &Medium, policy: TmpfsPolicy) -> Result<(), VolumeError> {
    set_up_dir(dir)?;
    let Medium::Memory { size_bytes } = medium else {
        return Ok(());
    };
    let canonical = std::fs::canonicalize(dir).map_err(|error| VolumeError::io(dir, error))?;
    if top_mount_type(&canonical)?.as_deref() == Some("tmpfs") {
        return Ok(());
    }
    let options = size_bytes
        .filter(|size| *size > 0)
        .map(|size| format!("size={size}"));
    match nix::mount::mount(
        Some("tmpfs"),
        &canonical,
        Some("tmpfs"),
        MsFlags::empty(),
        options.as_deref(),
    ) {
        Ok(()) => Ok(()),
        Err(error) if policy == TmpfsPolicy::FallBackToDisk => {
            tracing::warn!(dir = %dir.display(), %error, "cannot mount a tmpfs: the volume stays on disk");
            Ok(())
        }
        Err(source) => Err(VolumeError::Tmpfs {
            path: dir.to_path_buf(),
            source,
        }),
    }
}

/// emptydir.go's `setupDir`: made with 0777, whatever the umask.
fn set_up_dir(dir: &Path) -> Result<(), VolumeError> {
    std::fs::create_dir_all(dir).map_err(|error| VolumeError::io(dir, error))?;
    let metadata = std::fs::symlink_metadata(dir).map_err(|error| VolumeError::io(dir, error))?;
    if metadata.permissions().mode() & 0o777 != EMPTY_DIR_MODE {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(EMPTY_DIR_MODE))
            .map_err(|error| VolumeError::io(dir, error))?;
    }
    Ok(())
}

/// Unmounts everything at or below `dir` (deepest first) and removes it. A directory that is not there is fine;
/// nothing is removed while something under it is still mounted.
pub(crate) fn tear_down(dir: &Path) -> Result<(), VolumeError> {
    let canonical = match std::fs::canonicalize(dir) {
        Ok(path) => path,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(VolumeError::io(dir, error)),
    };
    // Stacked mounts show up once per layer: each round unmounts the deepest one left.
    for _ in 0..64 {
        let Some(deepest) = mount_points_under(&canonical)?.into_iter().next() else {
            break;
        };
        nix::mount::umount2(&deepest, MntFlags::empty()).map_err(|source| VolumeError::Unmount {
            path: deepest.clone(),
            source,
        })?;
    }
    if let Some(still) = mount_points_under(&canonical)?.into_iter().next() {
        return Err(VolumeError::Unmount {
            path: still,
            source: nix::Error::EBUSY,
        });
    }
    match std::fs::remove_dir_all(&canonical) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(VolumeError::io(canonical, error)),
    }
}

/// The mount points at or below `dir`, deepest first.
pub(crate) fn mount_points_under(dir: &Path) -> Result<Vec<PathBuf>, VolumeError> {
    let mut points: Vec<PathBuf> = mounts()?
        .into_iter()
        .map(|(point, _)| point)
        .filter(|point| point.starts_with(dir))
        .collect();
    points.sort_by_key(|point| std::cmp::Reverse(point.components().count()));
    points.dedup();
    Ok(points)
}

/// The file-system type of the topmost mount at exactly `path`, `None` when `path` is not a mount point.
fn top_mount_type(path: &Path) -> Result<Option<String>, VolumeError> {
    Ok(mounts()?
        .into_iter()
        .rev()
        .find(|(point, _)| point == path)
        .map(|(_, fs_type)| fs_type))
}

/// (mount point, file-system type) of `/proc/self/mountinfo`, in mount order.
fn mounts() -> Result<Vec<(PathBuf, String)>, VolumeError> {
    let path = Path::new("/proc/self/mountinfo");
    let text = std::fs::read_to_string(path).map_err(|error| VolumeError::io(path, error))?;
    Ok(text.lines().filter_map(parse_mountinfo_line).collect())
}

/// `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw`: the fifth field and the one after `-`.
fn parse_mountinfo_line(line: &str) -> Option<(PathBuf, String)> {
    let (before, after) = line.split_once(" - ")?;
    let mount_point = before.split(' ').nth(4)?;
    let fs_type = after.split(' ').next()?;
    Some((PathBuf::from(unescape_octal(mount_point)), fs_type.to_string()))
}

/// mountinfo writes space, tab, newline and backslash as `\040`, `\011`, `\012`, `\134`.
fn unescape_octal(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && bytes
                .get(i + 1..i + 4)
                .is_some_and(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)))
        {
            let value = bytes[i + 1..i + 4]
                .iter()
                .fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
            out.push(value as u8);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// emptydir.go's `calculateEmptyDirMemorySize`: the node's allocatable memory, lowered to the pod's memory limit
/// and then to the volume's `sizeLimit` (each only when set and smaller).
pub(crate) fn tmpfs_size(host: &VolumeHost, pod: &Pod, size_limit: Option<&Quantity>) -> Option<u64> {
    let positive = |bytes: i128| u64::try_from(bytes).ok().filter(|b| *b > 0);
    let mut size = host
        .node_allocatable
        .get("memory")
        .and_then(|q| quantity::value(&q.0))
        .and_then(positive);
    for candidate in [
        pod_memory_limit(pod),
        size_limit.and_then(|q| quantity::value(&q.0)).and_then(positive),
    ]
    .into_iter()
    .flatten()
    {
        if size.is_none_or(|current| candidate <= current) {
            size = Some(candidate);
        }
    }
    size
}

/// The pod's memory limit as its cgroup gets it (`ResourceConfigForPod`): declared only when every container has
/// one; the sum of the app containers' (and sidecars') limits or the largest init container's, plus the overhead.
fn pod_memory_limit(pod: &Pod) -> Option<u64> {
    let spec = pod.spec.as_ref()?;
    let limit = |container: &Container| {
        let quantity = container.resources.as_ref()?.limits.as_ref()?.get("memory")?;
        quantity::value(&quantity.0).and_then(|bytes| u64::try_from(bytes).ok())
    };
    let mut sum: u64 = 0;
    for container in &spec.containers {
        sum = sum.saturating_add(limit(container)?);
    }
    let mut largest_init: u64 = 0;
    for container in spec.init_containers.iter().flatten() {
        let bytes = limit(container)?;
        if container.restart_policy.as_deref() == Some("Always") {
            sum = sum.saturating_add(bytes);
        } else {
            largest_init = largest_init.max(bytes);
        }
    }
    let overhead = spec
        .overhead
        .as_ref()
        .and_then(|o| o.get("memory"))
        .and_then(|q| quantity::value(&q.0))
        .and_then(|bytes| u64::try_from(bytes).ok())
        .unwrap_or(0);
    Some(sum.max(largest_init).saturating_add(overhead))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::collections::BTreeMap;

    use k8s_openapi::api::core::v1::{PodSpec, ResourceRequirements};

    use super::*;

    #[test]
    fn mountinfo_lines_are_parsed_with_escapes() {
        let line = "36 35 98:0 / /var/lib/my\\040dir rw,noatime shared:1 - tmpfs tmpfs rw,size=1024k";
        assert_eq!(
            parse_mountinfo_line(line),
            Some((PathBuf::from("/var/lib/my dir"), "tmpfs".to_string()))
        );
        assert_eq!(parse_mountinfo_line("garbage"), None);
    }

    fn pod_with_limits(limits: &[Option<&str>]) -> Pod {
        let containers = limits
            .iter()
            .enumerate()
            .map(|(i, limit)| Container {
                name: format!("c{i}"),
                resources: limit.map(|l| ResourceRequirements {
                    limits: Some(BTreeMap::from([("memory".to_string(), Quantity(l.into()))])),
                    ..ResourceRequirements::default()
                }),
                ..Container::default()
            })
            .collect();
        Pod {
            spec: Some(PodSpec {
                containers,
                ..PodSpec::default()
            }),
            ..Pod::default()
        }
    }

    #[test]
    fn tmpfs_size_is_the_smallest_of_allocatable_pod_limit_and_size_limit() {
        let mut host = VolumeHost::new("/unused");
        host.node_allocatable
            .insert("memory".into(), Quantity("1Gi".into()));
        let limited = pod_with_limits(&[Some("64Mi"), Some("64Mi")]);
        let unlimited = pod_with_limits(&[Some("64Mi"), None]);
        assert_eq!(tmpfs_size(&host, &limited, None), Some(128 << 20));
        assert_eq!(tmpfs_size(&host, &unlimited, None), Some(1 << 30));
        assert_eq!(
            tmpfs_size(&host, &limited, Some(&Quantity("16Mi".into()))),
            Some(16 << 20)
        );
        // A sizeLimit above what the pod may use does not raise it; zero is no limit.
        assert_eq!(
            tmpfs_size(&host, &limited, Some(&Quantity("4Gi".into()))),
            Some(128 << 20)
        );
        assert_eq!(
            tmpfs_size(&host, &limited, Some(&Quantity("0".into()))),
            Some(128 << 20)
        );
        let nothing_known = VolumeHost::new("/unused");
        assert_eq!(tmpfs_size(&nothing_known, &unlimited, None), None);
        assert_eq!(
            tmpfs_size(&nothing_known, &unlimited, Some(&Quantity("1Mi".into()))),
            Some(1 << 20)
        );
    }
}
