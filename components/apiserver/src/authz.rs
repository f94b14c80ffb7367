//! The authorization seam. RBAC plugs in here (a later issue); until then every authenticated
//! user may do everything, which is what `system:masters` gets under RBAC anyway.

use crate::authn::UserInfo;

/// What a request asks to do. Grows with resource requests (verb, resource, namespace, name).
#[derive(Clone, Debug)]
pub struct RequestAttributes<'a> {
    pub method: &'a str,
    pub path: &'a str,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Denied, with the reason shown to the client.
    Deny(String),
}

pub trait Authorizer: Send + Sync + std::fmt::Debug {
    fn authorize(&self, user: &UserInfo, request: &RequestAttributes<'_>) -> Decision;
}

/// Allows every authenticated request.
#[derive(Debug, Default)]
pub struct AllowAuthenticated;

impl Authorizer for AllowAuthenticated {
    fn authorize(&self, _user: &UserInfo, _request: &RequestAttributes<'_>) -> Decision {
        Decision::Allow
    }
}
