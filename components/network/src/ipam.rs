//! Host-local IPAM: one file per leased address, named by the address and holding the pod sandbox's id, in a
//! folder per node subnet under the data directory (the layout of CNI's host-local plugin, so a person can
//! read it with `ls` and `cat`). Leases survive restarts; `reclaim` frees those of sandboxes that are gone.
//!
//! A lease is taken by hard-linking a fully written temporary file to the address's name: the link fails if
//! the address is taken, so two allocators never hand out one address, and a crash never leaves a lease
//! without its owner.

use std::fs;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;

const LAST_RESERVED: &str = "last_reserved_ip";

#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("no free address left in {0}")]
    Exhausted(Ipv4Net),
    #[error("{0:?} is not a usable sandbox id")]
    BadId(String),
    #[error("subnet {0} is too small for pods (it needs a gateway and at least one pod address)")]
    TooSmall(Ipv4Net),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> IpamError + '_ {
    move |source| IpamError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// An address held by a pod sandbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub id: String,
    pub ip: Ipv4Addr,
}

#[derive(Debug)]
pub struct Ipam {
    dir: PathBuf,
    subnet: Ipv4Net,
}

impl Ipam {
    /// The leases of `subnet` under `root` (created if missing).
    pub fn open(root: &Path, subnet: Ipv4Net) -> Result<Self, IpamError> {
        if subnet.prefix_len() > 30 {
            return Err(IpamError::TooSmall(subnet));
        }
        let dir = root.join(format!("{}-{}", subnet.network(), subnet.prefix_len()));
        fs::create_dir_all(&dir).map_err(io(&dir))?;
        Ok(Self { dir, subnet })
    }

    /// Every subnet with a lease folder under `root` (a node keeps its old subnet's leases until cleanup).
    pub fn open_all(root: &Path) -> Result<Vec<Self>, IpamError> {
        let entries = match fs::read_dir(root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(root)(e)),
        };
        let mut all = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io(root))?;
            let name = entry.file_name().to_string_lossy().replacen('-', "/", 1);
            if let Ok(subnet) = name.parse::<Ipv4Net>() {
                all.push(Self::open(root, subnet)?);
            }
        }
        Ok(all)
    }

    /// Deletes this subnet's lease folder.
    pub fn destroy(self) -> Result<(), IpamError> {
        match fs::remove_dir_all(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(&self.dir)(e)),
        }
    }

    pub fn subnet(&self) -> Ipv4Net {
        self.subnet
    }

    /// The bridge's address: the subnet's first host (10.42.0.1).
    pub fn gateway(&self) -> Ipv4Addr {
        crate::config::nth_host(self.subnet, 1).unwrap_or(self.subnet.network())
    }

    /// The address leased to `id`: the one it already holds, or the next free one after the last handed out
    /// (so a released address is not reused at once, as host-local does).
    pub fn allocate(&self, id: &str) -> Result<Ipv4Addr, IpamError> {
        if id.is_empty() || id.contains(['\n', '/', '\0']) {
            return Err(IpamError::BadId(id.to_string()));
        }
        if let Some(lease) = self.leases()?.into_iter().find(|l| l.id == id) {
            return Ok(lease.ip);
        }
        let first = u32::from(self.gateway()) + 1;
        let last = u32::from(self.subnet.broadcast()) - 1;
        let count = last - first + 1;
        let start = self
            .last_reserved()
            .map(u32::from)
            .filter(|ip| (first..=last).contains(ip))
            .map_or(first, |ip| if ip == last { first } else { ip + 1 });

        // Unique per allocation in flight: other processes (the pid) and other threads (the counter).
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = self.dir.join(format!(".lease-{}-{n}", std::process::id()));
        {
            let mut file = fs::File::create(&tmp).map_err(io(&tmp))?;
            file.write_all(id.as_bytes()).map_err(io(&tmp))?;
            file.sync_all().map_err(io(&tmp))?;
        }
        let mut result = Err(IpamError::Exhausted(self.subnet));
        for offset in 0..count {
            let candidate = first + (start - first + offset) % count;
            let ip = Ipv4Addr::from(candidate);
            let path = self.dir.join(ip.to_string());
            match fs::hard_link(&tmp, &path) {
                Ok(()) => {
                    self.set_last_reserved(ip)?;
                    result = Ok(ip);
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    result = Err(io(&path)(e));
                    break;
                }
            }
        }
        fs::remove_file(&tmp).map_err(io(&tmp))?;
        result
    }

    /// Frees every address `id` holds; returns them.
    pub fn release(&self, id: &str) -> Result<Vec<Ipv4Addr>, IpamError> {
        let mut freed = Vec::new();
        for lease in self.leases()?.into_iter().filter(|l| l.id == id) {
            let path = self.dir.join(lease.ip.to_string());
            match fs::remove_file(&path) {
                Ok(()) => freed.push(lease.ip),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(&path)(e)),
            }
        }
        Ok(freed)
    }

    /// Every lease, in address order.
    pub fn leases(&self) -> Result<Vec<Lease>, IpamError> {
        let mut leases = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io(&self.dir))? {
            let entry = entry.map_err(io(&self.dir))?;
            let Some(ip) = entry
                .file_name()
                .to_str()
                .and_then(|name| name.parse::<Ipv4Addr>().ok())
            else {
                continue;
            };
            let path = entry.path();
            let id = match fs::read_to_string(&path) {
                Ok(id) => id.trim().to_string(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io(&path)(e)),
            };
            leases.push(Lease { id, ip });
        }
        leases.sort_by_key(|l| l.ip);
        Ok(leases)
    }

    /// Frees the leases of sandboxes not in `live` (after a crash, or a sandbox removed while bonsai was
    /// down); returns what was freed.
    pub fn reclaim(&self, live: &dyn Fn(&str) -> bool) -> Result<Vec<Lease>, IpamError> {
        let mut freed = Vec::new();
        for lease in self.leases()? {
            if !live(&lease.id) {
                let path = self.dir.join(lease.ip.to_string());
                match fs::remove_file(&path) {
                    Ok(()) => freed.push(lease),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io(&path)(e)),
                }
            }
        }
        Ok(freed)
    }

    fn last_reserved(&self) -> Option<Ipv4Addr> {
        fs::read_to_string(self.dir.join(LAST_RESERVED))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    fn set_last_reserved(&self, ip: Ipv4Addr) -> Result<(), IpamError> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = self
            .dir
            .join(format!(".{LAST_RESERVED}-{}-{n}", std::process::id()));
        fs::write(&tmp, ip.to_string()).map_err(io(&tmp))?;
        let path = self.dir.join(LAST_RESERVED);
        fs::rename(&tmp, &path).map_err(io(&path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_are_unique_sticky_released_and_not_reused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let ipam = Ipam::open(dir.path(), "10.42.3.0/24".parse().unwrap()).unwrap();
        assert_eq!(ipam.gateway(), Ipv4Addr::new(10, 42, 3, 1));
        let a = ipam.allocate("a").unwrap();
        let b = ipam.allocate("b").unwrap();
        assert_eq!(a, Ipv4Addr::new(10, 42, 3, 2));
        assert_eq!(b, Ipv4Addr::new(10, 42, 3, 3));
        assert_eq!(ipam.allocate("a").unwrap(), a, "a sandbox keeps its address");
        assert_eq!(ipam.release("a").unwrap(), vec![a]);
        assert_eq!(ipam.allocate("c").unwrap(), Ipv4Addr::new(10, 42, 3, 4));
        // Reopened (a restart), the leases are still there.
        let ipam = Ipam::open(dir.path(), "10.42.3.0/24".parse().unwrap()).unwrap();
        let ids: Vec<_> = ipam.leases().unwrap().into_iter().map(|l| l.id).collect();
        assert_eq!(ids, ["b", "c"]);
        let freed = ipam.reclaim(&|id| id == "c").unwrap();
        assert_eq!(
            freed,
            vec![Lease {
                id: "b".into(),
                ip: b
            }]
        );
        assert!(matches!(ipam.allocate("x/y"), Err(IpamError::BadId(_))));
    }

    #[test]
    fn a_full_subnet_is_an_error_and_wraps_around_once_freed() {
        let dir = tempfile::tempdir().unwrap();
        let ipam = Ipam::open(dir.path(), "10.42.0.0/29".parse().unwrap()).unwrap();
        // .0 network, .1 gateway, .7 broadcast: .2 to .6 for pods.
        for i in 0..5 {
            ipam.allocate(&format!("p{i}")).unwrap();
        }
        assert!(matches!(ipam.allocate("p5"), Err(IpamError::Exhausted(_))));
        ipam.release("p1").unwrap();
        assert_eq!(ipam.allocate("p5").unwrap(), Ipv4Addr::new(10, 42, 0, 3));
        assert!(matches!(
            Ipam::open(dir.path(), "10.42.0.0/31".parse().unwrap()),
            Err(IpamError::TooSmall(_))
        ));
    }

    #[test]
    fn concurrent_allocators_never_share_an_address() {
        let dir = tempfile::tempdir().unwrap();
        let subnet: Ipv4Net = "10.42.9.0/24".parse().unwrap();
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let root = dir.path().to_path_buf();
                std::thread::spawn(move || {
                    let ipam = Ipam::open(&root, subnet).unwrap();
                    (0..20)
                        .map(|i| ipam.allocate(&format!("t{t}-{i}")).unwrap())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all: Vec<_> = handles.into_iter().flat_map(|h| h.join().unwrap()).collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 80);
    }
}
