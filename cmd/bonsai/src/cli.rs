//! The command line. Flag names, short forms and environment variables follow k3s, with bonsai's
//! own names (`BONSAI_*`, `/var/lib/bonsai`).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use embedded_store::EngineKind;

pub const DEFAULT_DATA_DIR: &str = "/var/lib/bonsai";

#[derive(Debug, Parser)]
#[command(name = "bonsai", about = "A whole Kubernetes distribution in one small binary", version = crate::version::SHORT)]
pub struct Cli {
    /// Log format on standard error.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human, env = "BONSAI_LOG_FORMAT")]
    pub log_format: LogFormat,

    /// Turn on debug logs (RUST_LOG, when set, takes precedence).
    #[arg(long, global = true, env = "BONSAI_DEBUG")]
    pub debug: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a server: the cluster's control plane and its node's agent.
    Server(Box<ServerArgs>),
    /// Join this machine to a cluster as a node.
    Agent(AgentArgs),
    /// Manage the node's images (like crictl/ctr): pull, import, list, remove.
    Images(ImagesArgs),
    /// Run, list, stop and remove the node's containers (like crictl/ctr).
    Containers(ContainersArgs),
    /// Manage bootstrap tokens agents join with (on a server, with its admin kubeconfig).
    Token(TokenArgs),
    /// Set up and inspect the node's pod network and overlay by hand (what the node agent does for pods).
    Network(NetworkArgs),
    /// Run a command in a running container, with this terminal's standard input and output.
    Exec {
        #[arg(short = 'd', long, env = "BONSAI_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
        /// Environment variables, `NAME=value`.
        #[arg(short = 'e', long = "env")]
        env: Vec<String>,
        /// Give the command a terminal (this one, in raw mode, when standard input is a terminal).
        #[arg(short = 't', long)]
        tty: bool,
        /// With -t: take the terminal's sizes from this FIFO (lines of `ROWS COLS`, the node agent's relay of
        /// the client's resizes) instead of from this process's terminal.
        #[arg(long, requires = "tty", hide = true)]
        resize_fifo: Option<PathBuf>,
        /// With -t: the terminal's first size, `ROWSxCOLS` (else this process's terminal's).
        #[arg(long, requires = "tty", hide = true, value_parser = parse_terminal_size)]
        terminal_size: Option<(u16, u16)>,
        /// The container's id.
        id: String,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Attach to a running container's standard streams; exits with its exit code when it ends.
    Attach {
        #[arg(short = 'd', long, env = "BONSAI_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
        /// Send this process's standard input to the container's (it must have been run with --interactive).
        #[arg(short = 'i', long = "stdin")]
        stdin: bool,
        /// For a container with a terminal: take its sizes from this FIFO (lines of `ROWS COLS`, the node agent's
        /// relay of the client's resizes) instead of from this process's terminal.
        #[arg(long, hide = true)]
        resize_fifo: Option<PathBuf>,
        /// For a container with a terminal: the size to set at once, `ROWSxCOLS`.
        #[arg(long, hide = true, value_parser = parse_terminal_size)]
        terminal_size: Option<(u16, u16)>,
        /// The container's id.
        id: String,
    },
    /// Print a container's logs.
    Logs {
        #[arg(short = 'd', long, env = "BONSAI_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
        /// The container's id.
        id: String,
    },
    /// The per-container supervisor (started by bonsai itself).
    #[command(hide = true)]
    Shim {
        /// The container's state directory.
        dir: PathBuf,
    },
    /// Save the cluster store to a snapshot file (online), or restore one into a fresh data directory.
    Snapshot(SnapshotArgs),
    /// Show or rotate the keys that encrypt Secrets at rest (`bonsai server --secrets-encryption`).
    SecretsEncrypt {
        /// The running server's admin kubeconfig.
        #[arg(
            long,
            env = "KUBECONFIG",
            default_value = "/etc/bonsai/bonsai.yaml",
            global = true
        )]
        kubeconfig: PathBuf,
        #[command(subcommand)]
        command: SecretsEncryptCommand,
    },
    /// Check that this host can run bonsai: kernel, cgroups, modules, sysctls, free ports.
    ///
    /// A verdict per item, as `k3s check-config` gives; exits 1 when something essential is missing.
    CheckConfig {
        /// The API server's port, checked free.
        #[arg(long, env = "BONSAI_HTTPS_LISTEN_PORT", default_value_t = 6443)]
        https_listen_port: u16,
    },
    /// Run kubectl against the local cluster (`bonsai kubectl get pods -A`).
    ///
    /// The kubeconfig: $KUBECONFIG, else /etc/bonsai/bonsai.yaml when readable, else ~/.kube/config. The kubectl
    /// program: $BONSAI_KUBECTL, else `bonsai-kubectl` next to bonsai (what the install script fetches), else
    /// `kubectl` on PATH (never bonsai itself through a `kubectl` link). `--help` is kubectl's.
    #[command(disable_help_flag = true)]
    Kubectl {
        /// kubectl's arguments, as kubectl takes them (`bonsai kubectl get pods -A`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
    /// Wait until the API server is ready and every node (at least one) is Ready (for scripts and CI).
    WaitReady {
        /// Give up after this long (e.g. 60s, 5m) and exit 1.
        #[arg(long, default_value = "60s", value_parser = parse_duration)]
        timeout: std::time::Duration,
        /// Kubeconfig to reach the API server with (default: as `bonsai kubectl` finds it).
        #[arg(long, env = "KUBECONFIG")]
        kubeconfig: Option<PathBuf>,
    },
    /// Rotate the server's certificates: remove them so the next start issues new ones from the same CA (run it
    /// while bonsai is stopped; certificates within 90 days of expiry are renewed at every start anyway).
    Certificate {
        #[command(subcommand)]
        command: CertificateCommand,
    },
    /// Print the version.
    Version,
    /// Print a shell completion script (e.g. `bonsai completion bash > /etc/bash_completion.d/bonsai`).
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
pub enum CertificateCommand {
    /// Remove the leaf certificates (all, or those of --service) for the next start to issue again.
    Rotate {
        #[arg(short = 'd', long, env = "BONSAI_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
        /// Only these (repeatable): admin, kube-apiserver, scheduler, kubelet, ... (the file names' part after
        /// `client-` or `serving-` in <data-dir>/server/tls).
        #[arg(short = 's', long = "service")]
        services: Vec<String>,
    },
}

#[derive(Debug, Clone, Copy, Subcommand)]
pub enum SecretsEncryptCommand {
    /// Whether encryption is on, the key new writes use, and how many Secrets each key holds.
    Status,
    /// Make a new key the writer, re-encrypt every Secret with it, and drop the old keys.
    RotateKeys,
}

#[derive(Debug, Args)]
pub struct SnapshotArgs {
    /// The server's data directory (restore writes its store and keys there).
    #[arg(short = 'd', long, global = true, env = "BONSAI_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,

    #[command(subcommand)]
    pub command: SnapshotCommand,
}

#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Take a snapshot of the running server's store (every object, at one revision) and the cluster's CA and
    /// keys, into `<dir>/<name>-<host>-<unix time>`.
    Save {
        /// The snapshot's name prefix (k3s's default: on-demand).
        #[arg(long, default_value = "on-demand")]
        name: String,
        /// Where to write it (default: <data-dir>/server/snapshots).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The admin kubeconfig of the running server.
        #[arg(long, env = "KUBECONFIG", default_value = "/etc/bonsai/bonsai.yaml")]
        kubeconfig: PathBuf,
    },
    /// Restore a snapshot into a data directory holding no store (stop the server and move `server/db` aside
    /// first), then start `bonsai server` on it: every object comes back at its resourceVersion.
    Restore {
        /// The snapshot file.
        file: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct ContainersArgs {
    /// Folder holding state (containers live in `<data-dir>/agent/containers`).
    #[arg(short = 'd', long, global = true, env = "BONSAI_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,

    #[command(subcommand)]
    pub command: ContainersCommand,
}

#[derive(Debug, Subcommand)]
pub enum ContainersCommand {
    /// Run a container from an image in the store; without --detach, wait for it and exit with its exit code.
    Run {
        /// The container's id (default: a random one).
        #[arg(long)]
        name: Option<String>,
        /// Memory limit in bytes.
        #[arg(long)]
        memory_limit: Option<i64>,
        /// Most processes the container may have.
        #[arg(long)]
        pids_limit: Option<i64>,
        /// Environment variables, `NAME=value`.
        #[arg(short = 'e', long = "env")]
        env: Vec<String>,
        /// The cgroup to put the container's cgroup under (relative to the cgroup root; removed when left empty).
        #[arg(long, env = "BONSAI_CGROUP_PARENT", default_value = "bonsai")]
        cgroup_parent: String,
        /// Write the CRI log here (the node agent uses `/var/log/pods/<ns>_<pod>_<uid>/<container>/<n>.log`)
        /// instead of the container's state directory.
        #[arg(long)]
        log_path: Option<PathBuf>,
        /// Seccomp: `unconfined` (Kubernetes' default), `runtime-default`, or the path of a profile in the OCI
        /// runtime spec's form.
        #[arg(long, default_value = "unconfined")]
        seccomp: String,
        /// Keep the container's standard input open (attached, this process's input goes there).
        #[arg(short = 'i', long)]
        interactive: bool,
        /// Give the container a terminal.
        #[arg(short = 't', long)]
        tty: bool,
        /// Leave it running and print its id.
        #[arg(long)]
        detach: bool,
        image: String,
        /// The command (replaces the image's entrypoint and cmd).
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// List containers.
    #[command(alias = "list")]
    Ls,
    /// Show what running containers use: CPU time, memory (usage and working set), processes.
    Stats {
        /// Only these containers.
        ids: Vec<String>,
        /// As JSON, one object per container.
        #[arg(long)]
        json: bool,
    },
    /// Stop a container: SIGTERM, then SIGKILL after the grace period.
    Stop {
        id: String,
        #[arg(long, default_value_t = 10)]
        grace_seconds: u64,
    },
    /// Remove containers that have ended.
    Rm {
        /// Kill running ones first (SIGKILL, no grace period).
        #[arg(short = 'f', long)]
        force: bool,
        #[arg(required = true)]
        ids: Vec<String>,
    },
}

#[derive(Debug, Args)]
pub struct ImagesArgs {
    /// Folder holding state (the image store is `<data-dir>/agent/content`).
    #[arg(short = 'd', long, global = true, env = "BONSAI_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,

    /// Registry mirrors, auth and TLS, in k3s's registries.yaml format.
    #[arg(
        long,
        global = true,
        env = "BONSAI_PRIVATE_REGISTRY",
        default_value = "/etc/bonsai/registries.yaml"
    )]
    pub private_registry: PathBuf,

    #[command(subcommand)]
    pub command: ImagesCommand,
}

#[derive(Debug, Subcommand)]
pub enum ImagesCommand {
    /// Pull an image from its registry (or a configured mirror).
    Pull {
        /// An image reference: `busybox`, `registry.example:5000/team/app:1.2`, `…@sha256:…`.
        reference: String,
    },
    /// Import images from `docker save` or OCI-archive tarballs (plain, .gz or .zst).
    Import {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// List images.
    #[command(alias = "list")]
    Ls,
    /// Remove images, then every blob and layer no image uses any more.
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        references: Vec<String>,
    },
}

#[derive(Debug, Args)]
pub struct NetworkArgs {
    /// Folder holding state (leases live in `<data-dir>/agent/network/leases`).
    #[arg(short = 'd', long, global = true, env = "BONSAI_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,

    /// The cluster's pod network.
    #[arg(
        long,
        global = true,
        env = "BONSAI_CLUSTER_CIDR",
        default_value = "10.42.0.0/16"
    )]
    pub cluster_cidr: String,

    /// The cluster's service network (checked against the pod network and the host's networks).
    #[arg(
        long,
        global = true,
        env = "BONSAI_SERVICE_CIDR",
        default_value = "10.43.0.0/16"
    )]
    pub service_cidr: String,

    /// This node's pod subnet (its Node's spec.podCIDR), a /24 of --cluster-cidr.
    #[arg(long, global = true, env = "BONSAI_POD_CIDR")]
    pub pod_cidr: Option<String>,

    /// This node's address for traffic from other nodes (default: the address of the default route's interface).
    #[arg(long, global = true, env = "BONSAI_NODE_IP")]
    pub node_ip: Option<std::net::Ipv4Addr>,

    /// How pod traffic crosses between nodes: vxlan, host-gw, or none.
    #[arg(long, global = true, env = "BONSAI_FLANNEL_BACKEND", default_value = "vxlan")]
    pub flannel_backend: String,

    #[command(subcommand)]
    pub command: NetworkCommand,
}

#[derive(Debug, Subcommand)]
pub enum NetworkCommand {
    /// Give a pod sandbox (a network namespace) its interface, address and routes; prints them as JSON.
    Add {
        /// The sandbox's id.
        id: String,
        /// Its network namespace (e.g. /var/run/netns/NAME).
        netns: PathBuf,
    },
    /// Remove a pod sandbox's interface and free its address.
    Del { id: String },
    /// List the sandboxes holding addresses.
    Ls,
    /// Program routes to exactly these other nodes (`NAME,POD_CIDR,NODE_IP[,VTEP_MAC]`, repeatable); prints
    /// this node's flannel annotations as JSON.
    Peers {
        #[arg(long = "peer")]
        peers: Vec<String>,
    },
    /// Remove the node's pod network: every sandbox's interface and lease, cni0, flannel.1, bonsai's nft table.
    Cleanup,
    /// Run the node's network against the cluster: publish this node's flannel annotations on its Node, keep
    /// routes to every other node in step with theirs, and proxy Services (ClusterIP, NodePort, LoadBalancer)
    /// to their endpoints, until stopped (SIGTERM or Ctrl-C).
    Run {
        /// Kubeconfig to reach the API server with.
        #[arg(long, env = "BONSAI_KUBECONFIG", default_value = DEFAULT_KUBECONFIG)]
        kubeconfig: PathBuf,
        /// API server URL, replacing the kubeconfig's (e.g. https://10.0.0.1:6443).
        #[arg(long)]
        server: Option<String>,
        /// This node's name (its Node object's).
        #[arg(long, env = "BONSAI_NODE_NAME")]
        node_name: String,
        /// On stop, remove everything the node's network made (routes, devices, rules, leases).
        #[arg(long)]
        cleanup: bool,
        /// Leave Services to another proxy (k3s's flag).
        #[arg(long, env = "BONSAI_DISABLE_KUBE_PROXY")]
        disable_kube_proxy: bool,
    },
}

#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Read flags from this YAML file (keys are the long flags' names) and its `<file>.d/*.yaml` drop-ins;
    /// flags and environment variables given take precedence over it.
    #[arg(short = 'c', long, env = "BONSAI_CONFIG_FILE", default_value = DEFAULT_CONFIG_FILE)]
    pub config: PathBuf,

    /// A throwaway cluster (for CI): state in a new temporary directory, and everything torn down on exit (pods,
    /// mounts, links, nft tables, cgroups, the state). The kubeconfig goes to the temporary directory unless
    /// -o is given.
    #[arg(long, env = "BONSAI_EPHEMERAL", conflicts_with = "data_dir")]
    pub ephemeral: bool,

    /// Folder to hold state.
    #[arg(short = 'd', long, env = "BONSAI_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,

    /// Engine for a new embedded store; an existing store keeps the engine it was made with.
    #[arg(long, env = "BONSAI_STORE_ENGINE", value_parser = parse_engine)]
    pub store_engine: Option<EngineKind>,

    /// Page cache of the embedded store, in MiB.
    #[arg(long, env = "BONSAI_STORE_CACHE_MB", default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub store_cache_mb: u32,

    /// How often history is compacted (e.g. 5m, 30s, 500ms); kube-apiserver's --etcd-compaction-interval.
    #[arg(long, env = "BONSAI_STORE_COMPACTION_INTERVAL", default_value = "5m", value_parser = parse_duration)]
    pub store_compaction_interval: std::time::Duration,

    /// Revisions always kept behind the current one when compacting (k3s keeps 1000).
    #[arg(long, env = "BONSAI_STORE_COMPACTION_RETAIN", default_value_t = 1000, value_parser = clap::value_parser!(i64).range(0..))]
    pub store_compaction_retain: i64,

    /// An etcd v3 cluster to keep cluster state in instead of the embedded store, as k3s's
    /// `--datastore-endpoint`: `https://10.0.0.5:2379,https://10.0.0.6:2379` (or `http://` on loopback).
    /// Servers sharing one etcd and one --token form one highly available control plane.
    #[arg(long, env = "BONSAI_DATASTORE_ENDPOINT")]
    pub datastore_endpoint: Option<String>,

    /// The CA that signed etcd's serving certificates.
    #[arg(long, env = "BONSAI_DATASTORE_CAFILE", requires = "datastore_endpoint")]
    pub datastore_cafile: Option<PathBuf>,

    /// A client certificate for etcd (with --datastore-keyfile).
    #[arg(long, env = "BONSAI_DATASTORE_CERTFILE", requires_all = ["datastore_endpoint", "datastore_keyfile"])]
    pub datastore_certfile: Option<PathBuf>,

    /// The client certificate's key.
    #[arg(long, env = "BONSAI_DATASTORE_KEYFILE", requires_all = ["datastore_endpoint", "datastore_certfile"])]
    pub datastore_keyfile: Option<PathBuf>,

    /// Encrypt Secrets at rest (AES-GCM, the key in <data-dir>/server/cred/encryption-config.json, kube-apiserver's
    /// EncryptionConfiguration); `bonsai secrets-encrypt status|rotate-keys` manage it.
    #[arg(long, env = "BONSAI_SECRETS_ENCRYPTION")]
    pub secrets_encryption: bool,

    /// The cluster's shared secret (k3s's --token): the full `K10...::server:<secret>` token or the secret alone.
    /// A server joining an external datastore needs the first server's; by default one is made and kept in
    /// <data-dir>/server/token.
    #[arg(short = 't', long, env = "BONSAI_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// HTTPS listen port of the API server.
    #[arg(long, env = "BONSAI_HTTPS_LISTEN_PORT", default_value_t = 6443)]
    pub https_listen_port: u16,

    /// Address the API server listens on.
    #[arg(long, env = "BONSAI_BIND_ADDRESS", default_value = "0.0.0.0")]
    pub bind_address: std::net::IpAddr,

    /// Extra names or addresses for the API server's certificate (repeatable).
    #[arg(long = "tls-san", env = "BONSAI_TLS_SAN", value_delimiter = ',')]
    pub tls_sans: Vec<String>,

    /// Write the admin kubeconfig here once the API answers [default: /etc/bonsai/bonsai.yaml; with
    /// --ephemeral, kubeconfig.yaml in its temporary directory].
    #[arg(short = 'o', long, env = "BONSAI_KUBECONFIG_OUTPUT")]
    pub write_kubeconfig: Option<PathBuf>,

    /// File mode of the kubeconfig, in octal (e.g. 644).
    #[arg(long, env = "BONSAI_KUBECONFIG_MODE", default_value = "0600", value_parser = parse_mode)]
    pub write_kubeconfig_mode: u32,

    /// Static bearer tokens, in kube-apiserver's token file format: token,user,uid,"group1,group2".
    #[arg(long, env = "BONSAI_TOKEN_AUTH_FILE")]
    pub token_auth_file: Option<PathBuf>,

    /// Network CIDR for service IPs; its first address is the `kubernetes` service's.
    #[arg(long, env = "BONSAI_SERVICE_CIDR", default_value = "10.43.0.0/16")]
    pub service_cidr: String,

    /// Port range for NodePort services (inclusive).
    #[arg(long, env = "BONSAI_SERVICE_NODE_PORT_RANGE", default_value = "30000-32767")]
    pub service_node_port_range: String,

    /// Network CIDR for pod IPs; each node gets a /24 of it as its Node's spec.podCIDR.
    #[arg(long, env = "BONSAI_CLUSTER_CIDR", default_value = "10.42.0.0/16")]
    pub cluster_cidr: String,

    /// Cluster domain.
    #[arg(long, env = "BONSAI_CLUSTER_DOMAIN", default_value = "cluster.local")]
    pub cluster_domain: String,

    /// Run no controllers (endpoints, namespaces, garbage collection, workloads, node IPAM, ServiceLB): the API
    /// alone, as with k3s's flag.
    #[arg(long, env = "BONSAI_DISABLE_CONTROLLER_MANAGER")]
    pub disable_controller_manager: bool,

    /// Run no scheduler (pods stay pending unless something else binds them).
    #[arg(long, env = "BONSAI_DISABLE_SCHEDULER")]
    pub disable_scheduler: bool,

    /// Do not run these packaged components (k3s's names): coredns (the cluster DNS and the kube-dns Service),
    /// servicelb, local-storage (the local-path StorageClass and provisioner); traefik, metrics-server and
    /// runtimes are accepted for k3s configurations' sake.
    #[arg(long, env = "BONSAI_DISABLE", value_delimiter = ',', value_parser = parse_component)]
    pub disable: Vec<String>,

    /// Run no node agent in the server: the control plane alone (k3s's flag of the same name).
    #[arg(long, env = "BONSAI_DISABLE_AGENT")]
    pub disable_agent: bool,

    /// The name this server's node registers under (default: the host name).
    #[arg(long, env = "BONSAI_NODE_NAME")]
    pub node_name: Option<String>,

    /// The address the node advertises (default: the host's first address).
    #[arg(long, env = "BONSAI_NODE_IP")]
    pub node_ip: Option<std::net::IpAddr>,

    /// How pod traffic crosses between nodes: vxlan, host-gw, or none (k3s's --flannel-backend).
    #[arg(long, env = "BONSAI_FLANNEL_BACKEND", default_value = "vxlan")]
    pub flannel_backend: String,

    /// Leave Services to another proxy (k3s's flag).
    #[arg(long, env = "BONSAI_DISABLE_KUBE_PROXY")]
    pub disable_kube_proxy: bool,

    /// The cluster DNS address written into pods' resolv.conf (k3s's --cluster-dns).
    #[arg(long, env = "BONSAI_CLUSTER_DNS", default_value = "10.43.0.10")]
    pub cluster_dns: std::net::IpAddr,

    /// The resolver configuration for names outside the cluster, and for pods with `dnsPolicy: Default` (k3s's
    /// --resolv-conf; default /etc/resolv.conf, or systemd-resolved's upstream list when that names only
    /// loopback resolvers).
    #[arg(long, env = "BONSAI_RESOLV_CONF")]
    pub resolv_conf: Option<PathBuf>,

    /// Registry mirrors, auth and TLS for the node's image pulls, in k3s's registries.yaml format.
    #[arg(
        long,
        env = "BONSAI_PRIVATE_REGISTRY",
        default_value = "/etc/bonsai/registries.yaml"
    )]
    pub private_registry: PathBuf,

    /// Where containers' logs are written, in the kubelet's `<ns>_<pod>_<uid>/<container>/<n>.log` layout.
    #[arg(long, env = "BONSAI_POD_LOGS_DIR", default_value = "/var/log/pods")]
    pub pod_logs_dir: PathBuf,

    /// A label for the node, `KEY=VALUE` (repeatable), applied at registration as k3s's --node-label.
    #[arg(long = "node-label", env = "BONSAI_NODE_LABEL", value_delimiter = ',', value_parser = parse_label)]
    pub node_labels: Vec<(String, String)>,

    /// A kube-apiserver flag as k3s passes it, `NAME=VALUE` (repeatable): max-requests-inflight (default 400),
    /// max-mutating-requests-inflight (200), request-timeout (60s; 0 values of the first two mean no limit), and
    /// audit-log-path.
    #[arg(long = "kube-apiserver-arg", value_parser = parse_apiserver_arg)]
    pub kube_apiserver_args: Vec<ApiServerArg>,

    /// Write an audit log (audit.k8s.io/v1 Events at the Metadata level, JSON lines) to this file (`-`: standard
    /// output), as kube-apiserver's --audit-log-path.
    #[arg(long, env = "BONSAI_AUDIT_LOG_PATH")]
    pub audit_log_path: Option<PathBuf>,

    /// A kube-controller-manager flag as k3s passes it, `NAME=VALUE` (repeatable): node-monitor-grace-period
    /// (default 50s) and terminated-pod-gc-threshold (default 12500; 0 keeps every terminated pod).
    #[arg(long = "kube-controller-manager-arg", value_parser = parse_controller_manager_arg)]
    pub kube_controller_manager_args: Vec<ControllerManagerArg>,

    /// A kubelet flag as k3s passes it, `NAME=VALUE` (repeatable): eviction-hard (default
    /// memory.available<100Mi,nodefs.available<10%,nodefs.inodesFree<5%,imagefs.available<15%), eviction-soft
    /// (none by default), eviction-soft-grace-period (signal=duration for each soft threshold),
    /// eviction-max-pod-grace-period (seconds, default 0).
    #[arg(long = "kubelet-arg", value_parser = parse_kubelet_arg)]
    pub kubelet_args: Vec<KubeletArg>,
}

/// The kubelet flags bonsai takes, by their kubelet names (all eviction settings so far).
#[allow(clippy::enum_variant_names)]
#[derive(Clone, Debug)]
pub enum KubeletArg {
    EvictionHard(Vec<kubelet::eviction::Threshold>),
    EvictionSoft(Vec<kubelet::eviction::Threshold>),
    EvictionSoftGracePeriod(std::collections::BTreeMap<kubelet::eviction::Signal, std::time::Duration>),
    EvictionMaxPodGracePeriod(i64),
}

/// A component flag as k3s passes it on: `NAME=VALUE`, with or without the leading `--`.
fn flag_pair<'a>(s: &'a str, example: &str) -> Result<(&'a str, &'a str), String> {
    s.trim_start_matches("--")
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not NAME=VALUE, such as {example}"))
}

fn parse_kubelet_arg(s: &str) -> Result<KubeletArg, String> {
    let (name, value) = flag_pair(s, "eviction-hard=memory.available<200Mi")?;
    match name {
        "eviction-hard" => kubelet::eviction::parse_thresholds(value).map(KubeletArg::EvictionHard),
        "eviction-soft" => kubelet::eviction::parse_thresholds(value).map(KubeletArg::EvictionSoft),
        "eviction-soft-grace-period" => {
            kubelet::eviction::parse_grace_periods(value).map(KubeletArg::EvictionSoftGracePeriod)
        }
        "eviction-max-pod-grace-period" => value
            .parse::<i64>()
            .ok()
            .filter(|seconds| *seconds >= 0)
            .map(KubeletArg::EvictionMaxPodGracePeriod)
            .ok_or_else(|| {
                format!("eviction-max-pod-grace-period: {value:?} is not a number of seconds (0 or more)")
            }),
        _ => Err(format!(
            "{name:?} is not a kubelet flag bonsai takes: eviction-hard, eviction-soft, eviction-soft-grace-period, \
             eviction-max-pod-grace-period"
        )),
    }
}

fn parse_terminal_size(s: &str) -> Result<(u16, u16), String> {
    let (rows, cols) = s
        .split_once('x')
        .ok_or_else(|| format!("{s:?} is not ROWSxCOLS, such as 24x80"))?;
    match (rows.parse(), cols.parse()) {
        (Ok(rows), Ok(cols)) => Ok((rows, cols)),
        _ => Err(format!("{s:?} is not ROWSxCOLS, such as 24x80")),
    }
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    let (key, value) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE, such as tier=edge"))?;
    if key.is_empty() {
        return Err(format!("{s:?} has an empty label key"));
    }
    Ok((key.to_string(), value.to_string()))
}

/// A kube-controller-manager flag bonsai's controllers take.
#[derive(Clone, Debug, PartialEq)]
pub enum ControllerManagerArg {
    NodeMonitorGracePeriod(std::time::Duration),
    TerminatedPodGcThreshold(i32),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApiServerArg {
    MaxRequestsInflight(usize),
    MaxMutatingRequestsInflight(usize),
    RequestTimeout(std::time::Duration),
    AuditLogPath(PathBuf),
}

fn parse_apiserver_arg(s: &str) -> Result<ApiServerArg, String> {
    let (name, value) = flag_pair(s, "max-requests-inflight=800")?;
    let count = |value: &str| {
        value
            .parse::<usize>()
            .map_err(|_| format!("{value:?} is not a number of requests"))
    };
    match name {
        "max-requests-inflight" => count(value).map(ApiServerArg::MaxRequestsInflight),
        "max-mutating-requests-inflight" => count(value).map(ApiServerArg::MaxMutatingRequestsInflight),
        "request-timeout" => match parse_duration(value)? {
            d if d.is_zero() => Err("request-timeout must be more than 0".into()),
            d => Ok(ApiServerArg::RequestTimeout(d)),
        },
        "audit-log-path" => Ok(ApiServerArg::AuditLogPath(PathBuf::from(value))),
        _ => Err(format!(
            "{name:?} is not a kube-apiserver flag bonsai takes: max-requests-inflight, \
             max-mutating-requests-inflight, request-timeout, audit-log-path"
        )),
    }
}

fn parse_controller_manager_arg(s: &str) -> Result<ControllerManagerArg, String> {
    let (name, value) = flag_pair(s, "node-monitor-grace-period=20s")?;
    match name {
        "node-monitor-grace-period" => {
            parse_duration(value).map(ControllerManagerArg::NodeMonitorGracePeriod)
        }
        "terminated-pod-gc-threshold" => value
            .parse()
            .map(ControllerManagerArg::TerminatedPodGcThreshold)
            .map_err(|_| format!("{value:?} is not a number of pods")),
        _ => Err(format!(
            "{name:?} is not a kube-controller-manager flag bonsai takes: node-monitor-grace-period, \
             terminated-pod-gc-threshold"
        )),
    }
}

/// The node agent's eviction thresholds: the kubelet's defaults, each `--kubelet-arg` eviction flag replacing
/// its part (the last one given wins), checked as the kubelet checks them.
pub fn eviction(kubelet_args: &[KubeletArg]) -> Result<kubelet::eviction::EvictionConfig, String> {
    let mut config = kubelet::eviction::EvictionConfig::default();
    for arg in kubelet_args {
        match arg {
            KubeletArg::EvictionHard(hard) => config.hard = hard.clone(),
            KubeletArg::EvictionSoft(soft) => config.soft = soft.clone(),
            KubeletArg::EvictionSoftGracePeriod(periods) => config.soft_grace = periods.clone(),
            KubeletArg::EvictionMaxPodGracePeriod(seconds) => config.max_pod_grace_seconds = *seconds,
        }
    }
    config
        .validate()
        .map(|()| config)
        .map_err(|e| format!("--kubelet-arg: {e}"))
}

impl ServerArgs {
    /// The node agent's eviction thresholds (see `eviction`).
    pub fn eviction(&self) -> Result<kubelet::eviction::EvictionConfig, String> {
        eviction(&self.kubelet_args)
    }

    /// Where the admin kubeconfig is written.
    pub fn kubeconfig(&self) -> PathBuf {
        self.write_kubeconfig
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_KUBECONFIG))
    }

    /// Whether `--disable` names this packaged component.
    pub fn disabled(&self, component: &str) -> bool {
        self.disable.iter().any(|c| c == component)
    }

    /// The API server's request limits: kube-apiserver's defaults, then each `--kube-apiserver-arg`.
    pub fn request_limits(&self) -> apiserver::limits::RequestLimits {
        let mut limits = apiserver::limits::RequestLimits::default();
        for arg in &self.kube_apiserver_args {
            match arg {
                ApiServerArg::MaxRequestsInflight(n) => limits.max_in_flight = *n,
                ApiServerArg::MaxMutatingRequestsInflight(n) => limits.max_mutating_in_flight = *n,
                ApiServerArg::RequestTimeout(d) => limits.request_timeout = *d,
                ApiServerArg::AuditLogPath(_) => {}
            }
        }
        limits
    }

    /// `--audit-log-path`, else the last `--kube-apiserver-arg audit-log-path=`.
    pub fn audit_log_path(&self) -> Option<PathBuf> {
        self.audit_log_path.clone().or_else(|| {
            self.kube_apiserver_args.iter().rev().find_map(|a| match a {
                ApiServerArg::AuditLogPath(p) => Some(p.clone()),
                _ => None,
            })
        })
    }

    /// The controllers' options: kube-controller-manager's defaults, then each `--kube-controller-manager-arg`.
    pub fn controller_options(&self) -> controllers::ControllerOptions {
        let mut options = controllers::ControllerOptions::default();
        for arg in &self.kube_controller_manager_args {
            match arg {
                ControllerManagerArg::NodeMonitorGracePeriod(d) => options.node_monitor_grace_period = *d,
                ControllerManagerArg::TerminatedPodGcThreshold(n) => options.terminated_pod_gc_threshold = *n,
            }
        }
        options
    }
}

/// The components k3s lets `--disable` name.
const COMPONENTS: [&str; 6] = [
    "coredns",
    "servicelb",
    "traefik",
    "local-storage",
    "metrics-server",
    "runtimes",
];

fn parse_component(s: &str) -> Result<String, String> {
    if COMPONENTS.contains(&s) {
        Ok(s.to_string())
    } else {
        Err(format!(
            "{s:?} is not a component: expected one of {}",
            COMPONENTS.join(", ")
        ))
    }
}

pub const DEFAULT_KUBECONFIG: &str = "/etc/bonsai/bonsai.yaml";
pub const DEFAULT_CONFIG_FILE: &str = "/etc/bonsai/config.yaml";

/// Durations as Kubernetes flags write them: a number and a unit (ms, s, m, h), at least 100 ms.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a duration such as 5m, 30s or 500ms"))?;
    let d = match unit {
        "ms" => std::time::Duration::from_millis(n),
        "s" => std::time::Duration::from_secs(n),
        "m" => std::time::Duration::from_secs(n * 60),
        "h" => std::time::Duration::from_secs(n * 3600),
        _ => return Err(format!("{s:?} is not a duration such as 5m, 30s or 500ms")),
    };
    if d < std::time::Duration::from_millis(100) {
        return Err(format!("{s:?} is too short: at least 100ms"));
    }
    Ok(d)
}

fn parse_mode(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s, 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| format!("{s:?} is not a file mode: give octal digits such as 600 or 644"))
}

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// Server to connect to, e.g. https://10.0.0.1:6443.
    #[arg(short = 's', long, env = "BONSAI_URL")]
    pub server: String,

    /// Join token (the server keeps it in <data-dir>/server/token).
    #[arg(short = 't', long, env = "BONSAI_TOKEN", hide_env_values = true)]
    pub token: String,

    /// Folder to hold state (the node's credentials are kept in `<data-dir>/agent/`).
    #[arg(short = 'd', long, env = "BONSAI_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,

    /// The name this node registers under (default: the host name).
    #[arg(long, env = "BONSAI_NODE_NAME")]
    pub node_name: Option<String>,

    /// The address the node advertises to the cluster (default: the host's first address).
    #[arg(long, env = "BONSAI_NODE_IP")]
    pub node_ip: Option<std::net::IpAddr>,

    /// A label for the node, `KEY=VALUE` (repeatable), applied at registration as k3s's --node-label.
    #[arg(long = "node-label", env = "BONSAI_NODE_LABEL", value_delimiter = ',', value_parser = parse_label)]
    pub node_labels: Vec<(String, String)>,

    /// A kubelet flag as k3s passes it, `NAME=VALUE` (repeatable): the eviction flags `bonsai server` takes.
    #[arg(long = "kubelet-arg", value_parser = parse_kubelet_arg)]
    pub kubelet_args: Vec<KubeletArg>,

    /// Where containers' logs are written, in the kubelet's `<ns>_<pod>_<uid>/<container>/<n>.log` layout.
    #[arg(long, env = "BONSAI_POD_LOGS_DIR", default_value = "/var/log/pods")]
    pub pod_logs_dir: PathBuf,

    /// The resolver configuration for names outside the cluster (k3s's --resolv-conf).
    #[arg(long, env = "BONSAI_RESOLV_CONF")]
    pub resolv_conf: Option<PathBuf>,

    /// Registry mirrors, auth and TLS for the node's image pulls, in k3s's registries.yaml format.
    #[arg(
        long,
        env = "BONSAI_PRIVATE_REGISTRY",
        default_value = "/etc/bonsai/registries.yaml"
    )]
    pub private_registry: PathBuf,
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The server's data folder (the token's CA hash is of `<data-dir>/server/tls/server-ca.crt`).
    #[arg(short = 'd', long, global = true, env = "BONSAI_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,

    /// The admin kubeconfig to reach the API server with.
    #[arg(long, global = true, env = "BONSAI_KUBECONFIG", default_value = DEFAULT_KUBECONFIG)]
    pub kubeconfig: PathBuf,

    #[command(subcommand)]
    pub command: TokenCommand,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make a bootstrap token agents can join with, and print it in full (`K10<CA hash>::<id>.<secret>`).
    Create {
        /// How long the token is valid (e.g. 24h, 30m); 0 never expires.
        #[arg(long, default_value = "24h", value_parser = parse_ttl)]
        ttl: std::time::Duration,
        /// A description kept with the token.
        #[arg(long)]
        description: Option<String>,
        /// The token to create, `<id>.<secret>` (6 and 16 characters of [a-z0-9]); default: a random one.
        token: Option<String>,
    },
    /// List the bootstrap tokens.
    #[command(alias = "ls")]
    List,
    /// Delete bootstrap tokens, by id or whole token.
    #[command(alias = "rm")]
    Delete {
        #[arg(required = true)]
        tokens: Vec<String>,
    },
}

/// A token's lifetime: a duration, or 0 for none.
fn parse_ttl(s: &str) -> Result<std::time::Duration, String> {
    if s == "0" || s == "0s" {
        return Ok(std::time::Duration::ZERO);
    }
    parse_duration(s)
}

fn parse_engine(s: &str) -> Result<EngineKind, String> {
    s.parse()
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn server_defaults_follow_the_k3s_layout() {
        let cli = Cli::try_parse_from(["bonsai", "server"]).unwrap();
        let Command::Server(args) = cli.command else {
            panic!("not a server command")
        };
        assert_eq!(args.data_dir, PathBuf::from("/var/lib/bonsai"));
        assert_eq!(args.store_engine, None);
        assert_eq!(cli.log_format, LogFormat::Human);
    }

    #[test]
    fn kube_controller_manager_args_as_k3s_passes_them() {
        let cli = Cli::try_parse_from([
            "bonsai",
            "server",
            "--kube-controller-manager-arg",
            "node-monitor-grace-period=20s",
            "--kube-controller-manager-arg=--terminated-pod-gc-threshold=10",
        ])
        .unwrap();
        let Command::Server(args) = cli.command else {
            panic!("not a server command")
        };
        let options = args.controller_options();
        assert_eq!(
            options.node_monitor_grace_period,
            std::time::Duration::from_secs(20)
        );
        assert_eq!(options.terminated_pod_gc_threshold, 10);
        let defaults = Cli::try_parse_from(["bonsai", "server"]).unwrap();
        let Command::Server(args) = defaults.command else {
            panic!("not a server command")
        };
        assert_eq!(
            args.controller_options().node_monitor_grace_period,
            std::time::Duration::from_secs(50)
        );
        assert!(parse_controller_manager_arg("node-cidr-mask-size=24").is_err());
        assert!(parse_controller_manager_arg("node-monitor-grace-period").is_err());
    }

    #[test]
    fn durations_as_kubernetes_flags_write_them() {
        assert_eq!(parse_duration("5m"), Ok(std::time::Duration::from_secs(300)));
        assert_eq!(parse_duration("250ms"), Ok(std::time::Duration::from_millis(250)));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("10ms").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn kubeconfig_modes_are_octal() {
        assert_eq!(parse_mode("644"), Ok(0o644));
        assert_eq!(parse_mode("0600"), Ok(0o600));
        assert!(parse_mode("999").is_err());
        assert!(parse_mode("rw-r--r--").is_err());
    }

    #[test]
    fn an_unknown_engine_is_refused_by_name() {
        let err = Cli::try_parse_from(["bonsai", "server", "--store-engine", "rocksdb"]).unwrap_err();
        assert!(err.to_string().contains("rocksdb"), "{err}");
    }
}
