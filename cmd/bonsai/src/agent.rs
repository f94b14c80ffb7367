//! `bonsai agent`. Its arguments are checked now so that scripts written against them keep
//! working; joining a cluster arrives with multi-node support.

use anyhow::bail;

use crate::cli::AgentArgs;

pub fn run(args: AgentArgs) -> anyhow::Result<()> {
    let Some(rest) = args.server.strip_prefix("https://") else {
        bail!(
            "--server must be an https:// URL, such as https://10.0.0.1:6443 (got {:?})",
            args.server
        );
    };
    if rest.is_empty() || rest.starts_with('/') {
        bail!("--server {:?} names no host", args.server);
    }
    if args.token.trim().is_empty() {
        bail!("--token is empty");
    }
    bail!("this version of bonsai cannot join a cluster yet: `bonsai agent` arrives with multi-node support")
}
