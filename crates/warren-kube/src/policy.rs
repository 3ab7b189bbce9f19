//! A sandbox's egress policy as a NetworkPolicy on its Pod. NetworkPolicy only allows (their
//! union), so "everything but" is an `ipBlock` of 0.0.0.0/0 with exceptions; the cluster's
//! own networks and link-local metadata addresses are always among them. Enforcement is the
//! CNI plugin's: a cluster whose CNI ignores NetworkPolicy enforces nothing (README says so).
use std::collections::BTreeMap;

use ipnet::Ipv4Net;
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyPeer, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use warren_backend::{BackendError, EgressPolicy};

use crate::objects::{MANAGED_BY, SANDBOX_LABEL};

/// The NetworkPolicy's name for sandbox `id`.
pub fn policy_name(id: &str) -> String {
    format!("warren-{id}-egress")
}

fn block(cidr: Ipv4Net, except: &[Ipv4Net]) -> NetworkPolicyPeer {
    let except: Vec<String> = except
        .iter()
        .filter(|e| cidr.contains(*e) && **e != cidr)
        .map(|e| e.to_string())
        .collect();
    NetworkPolicyPeer {
        ip_block: Some(IPBlock {
            cidr: cidr.to_string(),
            except: (!except.is_empty()).then_some(except),
        }),
        ..Default::default()
    }
}

/// The peers `policy` lets the sandbox reach, never any of `blocked` (the cluster's networks,
/// metadata addresses); an empty list lets it reach nothing.
fn peers(
    policy: &EgressPolicy,
    blocked: &[Ipv4Net],
) -> Result<Vec<NetworkPolicyPeer>, BackendError> {
    let everything: Ipv4Net = "0.0.0.0/0".parse().unwrap_or_default();
    let allowed = |nets: &[Ipv4Net]| -> Vec<NetworkPolicyPeer> {
        nets.iter()
            .filter(|n| !blocked.iter().any(|b| b.contains(*n)))
            .map(|n| block(*n, blocked))
            .collect()
    };
    Ok(match policy {
        EgressPolicy::Allow => vec![block(everything, blocked)],
        EgressPolicy::Deny => Vec::new(),
        EgressPolicy::Only(nets) => allowed(nets),
        EgressPolicy::Rules(rules) => {
            if !rules.allow_names.is_empty() {
                return Err(BackendError::Unsupported(
                    "egress rules naming domains need DNS-aware filtering, which a Kubernetes \
                     NetworkPolicy cannot express: name networks (CIDRs) instead"
                        .into(),
                ));
            }
            let mut peers = allowed(&rules.allow);
            if !rules.deny_rest {
                let mut except: Vec<Ipv4Net> = blocked.to_vec();
                except.extend(&rules.deny);
                peers.push(block(everything, &except));
            }
            peers
        }
    })
}

/// The NetworkPolicy holding sandbox `id`'s egress to `policy` (ingress is left alone: the
/// server reaches the agent and preview ports).
pub fn network_policy(
    id: &str,
    ns: &str,
    policy: &EgressPolicy,
    blocked: &[Ipv4Net],
) -> Result<NetworkPolicy, BackendError> {
    let peers = peers(policy, blocked)?;
    let egress = if peers.is_empty() {
        Vec::new()
    } else {
        vec![NetworkPolicyEgressRule {
            to: Some(peers),
            ..Default::default()
        }]
    };
    Ok(NetworkPolicy {
        metadata: ObjectMeta {
            name: Some(policy_name(id)),
            namespace: Some(ns.to_owned()),
            labels: Some(BTreeMap::from([
                (MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned()),
                (SANDBOX_LABEL.to_owned(), id.to_owned()),
            ])),
            ..Default::default()
        },
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(SANDBOX_LABEL.to_owned(), id.to_owned())])),
                ..Default::default()
            }),
            policy_types: Some(vec!["Egress".to_owned()]),
            egress: Some(egress),
            ..Default::default()
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_backend::EgressRules;

    fn nets(list: &[&str]) -> Vec<Ipv4Net> {
        list.iter().filter_map(|n| n.parse().ok()).collect()
    }

    fn egress_json(policy: &EgressPolicy) -> serde_json::Value {
        let blocked = nets(&["10.244.0.0/16", "169.254.0.0/16"]);
        let p = network_policy("sb", "ns", policy, &blocked).expect("policy");
        serde_json::to_value(p).expect("json")["spec"]["egress"].clone()
    }

    #[test]
    fn each_policy_becomes_the_egress_it_allows_never_the_blocked_networks() {
        assert_eq!(egress_json(&EgressPolicy::Deny), serde_json::json!([]));
        assert_eq!(
            egress_json(&EgressPolicy::Allow),
            serde_json::json!([{"to": [{"ipBlock": {
                "cidr": "0.0.0.0/0", "except": ["10.244.0.0/16", "169.254.0.0/16"]}}]}])
        );
        // A network inside a blocked one is dropped; one holding a blocked one excepts it.
        assert_eq!(
            egress_json(&EgressPolicy::Only(nets(&["10.244.1.0/24", "10.0.0.0/8"]))),
            serde_json::json!([{"to": [{"ipBlock": {
                "cidr": "10.0.0.0/8", "except": ["10.244.0.0/16"]}}]}])
        );
        let rules = EgressPolicy::Rules(EgressRules {
            allow: nets(&["203.0.113.0/24"]),
            deny: nets(&["198.51.100.0/24"]),
            ..Default::default()
        });
        assert_eq!(
            egress_json(&rules),
            serde_json::json!([{"to": [
                {"ipBlock": {"cidr": "203.0.113.0/24"}},
                {"ipBlock": {"cidr": "0.0.0.0/0",
                    "except": ["10.244.0.0/16", "169.254.0.0/16", "198.51.100.0/24"]}}]}])
        );
        let named = EgressPolicy::Rules(EgressRules {
            allow_names: vec!["example.com".into()],
            deny_rest: true,
            ..Default::default()
        });
        assert!(matches!(
            network_policy("sb", "ns", &named, &[]),
            Err(BackendError::Unsupported(_))
        ));
    }
}
