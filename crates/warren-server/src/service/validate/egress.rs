//! Egress settings checked and turned into the firewall's policy: networks, addresses and
//! domain names (E2B's `allowOut`/`denyOut` rules).
use ipnet::Ipv4Net;
use warren_api::Egress;
use warren_backend::{EgressPolicy, EgressRules};

use super::invalid;
use crate::error::ApiError;

/// Most entries an egress policy may name (each is one set element, or a name to resolve).
const MAX_EGRESS_NETS: usize = 256;

/// One `allow`/`deny` entry: an IPv4 network or address, or a domain name.
enum Target {
    Net(Ipv4Net),
    Name(String),
}

fn target(field: &str, raw: &str) -> Result<Target, ApiError> {
    let t = raw.trim();
    if let Ok(net) = t
        .parse::<Ipv4Net>()
        .or_else(|_| t.parse::<std::net::Ipv4Addr>().map(Ipv4Net::from))
    {
        return Ok(Target::Net(net.trunc()));
    }
    if t.starts_with("*.") || t == "*" {
        return Err(invalid(format!(
            "egress.{field}: {t:?}: wildcard names are not supported (Warren lets a name \
             through at the addresses it resolves to, which a wildcard has none of)"
        )));
    }
    let name = t.trim_end_matches('.').to_ascii_lowercase();
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    let is_name = name.len() <= 253
        && name.split('.').all(label_ok)
        && !name
            .split('.')
            .next_back()
            .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()));
    if !is_name {
        return Err(invalid(format!(
            "egress.{field}: {t:?} is neither an IPv4 network (a.b.c.d/len or a.b.c.d) nor a \
             domain name; sandboxes have no IPv6"
        )));
    }
    Ok(Target::Name(name))
}

/// The firewall policy of an egress setting; 422 naming the first entry that is not an IPv4
/// network, address or (in `allow`) domain name.
pub fn egress(e: &Egress) -> Result<EgressPolicy, ApiError> {
    let (allow, deny) = match e {
        Egress::Allow => return Ok(EgressPolicy::Allow),
        Egress::Deny => return Ok(EgressPolicy::Deny),
        Egress::Only(allow) => (allow, None),
        Egress::Rules { allow, deny } => (allow, Some(deny)),
    };
    let total = allow.len() + deny.map_or(0, Vec::len);
    if total > MAX_EGRESS_NETS {
        return Err(invalid(format!(
            "egress may name at most {MAX_EGRESS_NETS} networks and names, got {total}"
        )));
    }
    let mut rules = EgressRules {
        deny_rest: deny.is_none(),
        ..EgressRules::default()
    };
    for raw in allow {
        match target("allow", raw)? {
            Target::Net(n) => rules.allow.push(n),
            Target::Name(n) => rules.allow_names.push(n),
        }
    }
    for raw in deny.into_iter().flatten() {
        match target("deny", raw)? {
            Target::Net(n) if n.prefix_len() == 0 => rules.deny_rest = true,
            Target::Net(n) => rules.deny.push(n),
            Target::Name(n) => {
                return Err(invalid(format!(
                    "egress.deny: {n:?}: deny takes networks and addresses only (as E2B's \
                     denyOut)"
                )))
            }
        }
    }
    Ok(match rules {
        EgressRules {
            allow_names,
            deny,
            deny_rest: true,
            allow,
        } if allow_names.is_empty() && deny.is_empty() => EgressPolicy::Only(allow),
        EgressRules {
            allow_names,
            deny,
            deny_rest: false,
            ..
        } if allow_names.is_empty() && deny.is_empty() => EgressPolicy::Allow,
        rules => EgressPolicy::Rules(rules),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn egress_rules_take_networks_and_names_as_e2b_does() {
        let net = |s: &str| s.parse::<Ipv4Net>().expect("net");
        let rules = |allow: &[&str], deny: &[&str]| Egress::Rules {
            allow: allow.iter().map(|s| (*s).to_owned()).collect(),
            deny: deny.iter().map(|s| (*s).to_owned()).collect(),
        };
        // Specific denies leave the rest open; names in allow are kept to resolve.
        assert_eq!(
            egress(&rules(
                &["Api.Example.com.", "198.18.0.9"],
                &["198.18.0.0/24"]
            ))
            .expect("ok"),
            EgressPolicy::Rules(EgressRules {
                allow: vec![net("198.18.0.9/32")],
                allow_names: vec!["api.example.com".into()],
                deny: vec![net("198.18.0.0/24")],
                deny_rest: false,
            })
        );
        // Everything denied with networks allowed is the plain allow-list; nothing allowed
        // and nothing denied is open.
        assert_eq!(
            egress(&rules(&["10.1.0.0/16"], &["0.0.0.0/0"])).expect("ok"),
            EgressPolicy::Only(vec![net("10.1.0.0/16")])
        );
        assert_eq!(egress(&rules(&[], &[])).expect("ok"), EgressPolicy::Allow);
        assert!(matches!(
            egress(&Egress::Only(vec!["pypi.org".into()])).expect("ok"),
            EgressPolicy::Rules(EgressRules {
                deny_rest: true,
                ..
            })
        ));
        for bad in [
            rules(&["*.example.com"], &["0.0.0.0/0"]),
            rules(&[], &["example.com"]),
            rules(&["bad_name!"], &[]),
            rules(&["1.2.3.999"], &[]),
        ] {
            assert!(egress(&bad).is_err(), "{bad:?}");
        }
    }
}
