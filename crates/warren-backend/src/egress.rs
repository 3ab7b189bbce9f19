//! What a sandbox may reach outside.
use ipnet::Ipv4Net;

/// What a sandbox may reach outside. Never the host, other sandboxes or metadata addresses,
/// whatever the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EgressPolicy {
    /// Anything outside (through NAT).
    Allow,
    /// Nothing.
    Deny,
    /// Only these networks (and the name servers of its `resolv.conf`, on port 53).
    Only(Vec<Ipv4Net>),
    /// E2B's rules: what `allow` names first, then `deny`, then the rest as `deny_rest` says.
    Rules(EgressRules),
}

/// `allowOut` over `denyOut`, as E2B defines them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EgressRules {
    /// Networks let through whatever `deny` says.
    pub allow: Vec<Ipv4Net>,
    /// Domain names let through at the addresses the sandbox's name servers give for them.
    pub allow_names: Vec<String>,
    /// Networks refused (unless `allow` names them).
    pub deny: Vec<Ipv4Net>,
    /// Whether everything else is refused too (`denyOut: ["0.0.0.0/0"]`).
    pub deny_rest: bool,
}

impl EgressPolicy {
    /// The domain names the policy lets through.
    pub fn names(&self) -> &[String] {
        match self {
            EgressPolicy::Rules(r) => &r.allow_names,
            _ => &[],
        }
    }
}
