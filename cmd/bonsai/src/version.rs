pub const SHORT: &str = concat!(
    "v",
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("BONSAI_GIT_COMMIT"),
    ")"
);

/// What `bonsai version` prints, in k3s's shape.
pub fn long() -> String {
    format!("bonsai version {SHORT}\n")
}
