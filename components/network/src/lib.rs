//! bonsai's networking: the pod network of a node (`pod`), the overlay between nodes (`overlay`), and the
//! address plan they share (`config`, `ipam`). Everything is programmed in the calling thread's network
//! namespace, so a test (or a node) is a namespace of its own.

pub mod config;
pub mod controllers;
pub mod flannel;
pub mod hostports;
pub mod ipam;
pub mod netlink;
pub mod nft;
pub mod node;
pub mod overlay;
pub mod pod;
pub mod proxy;
pub mod sysctl;

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Cidr(#[from] config::CidrError),
    #[error(transparent)]
    Ipam(#[from] ipam::IpamError),
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("{what}: {source}")]
    Netlink { what: String, source: rtnetlink::Error },
    #[error("{0} is missing")]
    Missing(String),
    #[error("{what}: {source}")]
    Kube { what: String, source: kube::Error },
    #[error("nft: {0}")]
    Nft(String),
}
