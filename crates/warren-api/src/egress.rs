//! The outbound network policy of a sandbox, and its wire form: a string or an object, read
//! and written by hand (and so described by hand to OpenAPI).
use serde::{Deserialize, Serialize};

/// Outbound network policy: `"allow"` (the default: anything outside, through NAT), `"deny"`
/// (nothing), `{"allow": [...]}` (only those), or `{"allow": [...], "deny": [...]}` (E2B's
/// `allowOut`/`denyOut`: what `allow` names always passes, then what `deny` names is refused,
/// then the rest passes; `"0.0.0.0/0"` in `deny` refuses the rest). `allow` entries are IPv4
/// networks (`a.b.c.d/len`), addresses, or domain names (let through at the addresses the
/// sandbox's name servers give for them, resolved again every 30 s); `deny` entries are
/// networks or addresses. Whatever the policy, a sandbox never reaches the host, other
/// sandboxes or link-local (metadata) addresses.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Egress {
    /// Outbound traffic allowed.
    #[default]
    Allow,
    /// No outbound traffic.
    Deny,
    /// Only to these networks, addresses and domain names.
    Only(Vec<String>),
    /// `allow` over `deny`, the rest open (unless `deny` holds `0.0.0.0/0`).
    Rules {
        /// Networks, addresses and domain names that always pass.
        allow: Vec<String>,
        /// Networks and addresses refused.
        deny: Vec<String>,
    },
}

impl std::fmt::Display for Egress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Egress::Allow => f.write_str("allow"),
            Egress::Deny => f.write_str("deny"),
            Egress::Only(nets) => write!(f, "allow only {}", nets.join(", ")),
            Egress::Rules { allow, deny } if allow.is_empty() => {
                write!(f, "deny {}", deny.join(", "))
            }
            Egress::Rules { allow, deny } => {
                write!(
                    f,
                    "allow {} over deny {}",
                    allow.join(", "),
                    deny.join(", ")
                )
            }
        }
    }
}

impl Serialize for Egress {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match self {
            Egress::Allow => s.serialize_str("allow"),
            Egress::Deny => s.serialize_str("deny"),
            Egress::Only(nets) => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("allow", nets)?;
                m.end()
            }
            Egress::Rules { allow, deny } => {
                let mut m = s.serialize_map(Some(2))?;
                m.serialize_entry("allow", allow)?;
                m.serialize_entry("deny", deny)?;
                m.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Egress {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        const SHAPE: &str = r#"egress must be "allow", "deny" or {"allow": [...], "deny": [...]}"#;
        fn strings<E: serde::de::Error>(
            field: &str,
            v: Option<serde_json::Value>,
        ) -> Result<Vec<String>, E> {
            match v {
                None => Ok(Vec::new()),
                Some(serde_json::Value::Array(items)) => items
                    .into_iter()
                    .map(|i| match i {
                        serde_json::Value::String(s) => Ok(s),
                        other => Err(E::custom(format!(
                            "egress.{field} entries are strings, got {other}"
                        ))),
                    })
                    .collect(),
                Some(_) => Err(E::custom(format!("egress.{field} must be a list"))),
            }
        }
        let value = serde_json::Value::deserialize(d)?;
        match value {
            serde_json::Value::String(s) if s == "allow" => Ok(Egress::Allow),
            serde_json::Value::String(s) if s == "deny" => Ok(Egress::Deny),
            serde_json::Value::Object(mut m)
                if !m.is_empty() && m.keys().all(|k| k == "allow" || k == "deny") =>
            {
                let has_deny = m.contains_key("deny");
                let allow = strings("allow", m.remove("allow"))?;
                if has_deny {
                    let deny = strings("deny", m.remove("deny"))?;
                    Ok(Egress::Rules { allow, deny })
                } else {
                    Ok(Egress::Only(allow))
                }
            }
            _ => Err(serde::de::Error::custom(SHAPE)),
        }
    }
}

// By hand, as the serde impls above are: a string (`"allow"`, `"deny"`) or an object of one or
// both lists of strings and nothing else. The object is what the server also takes; it always
// writes `allow` (`{"deny": [...]}` comes back as `{"allow": [], "deny": [...]}`).
impl utoipa::PartialSchema for Egress {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{
            AdditionalProperties, ArrayBuilder, ObjectBuilder, OneOfBuilder, Type,
        };
        let list = |what: &str| {
            ArrayBuilder::new()
                .items(ObjectBuilder::new().schema_type(Type::String))
                .description(Some(what))
        };
        let word = ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(["allow", "deny"]))
            .description(Some(
                "`allow`: anything outside, through NAT (the default); `deny`: nothing.",
            ));
        let rules = ObjectBuilder::new()
            .schema_type(Type::Object)
            .property(
                "allow",
                list(
                    "IPv4 networks (`a.b.c.d/len`), addresses or domain names that always pass. \
                     Alone (no `deny`): only these pass.",
                ),
            )
            .property(
                "deny",
                list(
                    "IPv4 networks or addresses refused after `allow`; the rest passes \
                     (`0.0.0.0/0` refuses the rest).",
                ),
            )
            .min_properties(Some(1))
            .additional_properties(Some(
                AdditionalProperties::<utoipa::openapi::schema::Schema>::FreeForm(false),
            ))
            .description(Some("Only `allow`, or `allow` over `deny`."));
        OneOfBuilder::new()
            .item(word)
            .item(rules)
            // The type's doc comment, as a derive would take it.
            .description(Some(
                "Outbound network policy: `\"allow\"` (the default: anything outside, through \
                 NAT), `\"deny\"` (nothing), `{\"allow\": [...]}` (only those), or \
                 `{\"allow\": [...], \"deny\": [...]}` (E2B's `allowOut`/`denyOut`: what `allow` \
                 names always passes, then what `deny` names is refused, then the rest passes; \
                 `\"0.0.0.0/0\"` in `deny` refuses the rest). `allow` entries are IPv4 networks \
                 (`a.b.c.d/len`), addresses, or domain names (let through at the addresses the \
                 sandbox's name servers give for them, resolved again every 30 s); `deny` entries \
                 are networks or addresses. Whatever the policy, a sandbox never reaches the \
                 host, other sandboxes or link-local (metadata) addresses.",
            ))
            .examples([
                serde_json::json!("allow"),
                serde_json::json!({"allow": ["10.1.0.0/16", "pypi.org"]}),
                serde_json::json!({"allow": ["1.1.1.1"], "deny": ["0.0.0.0/0"]}),
            ])
            .into()
    }
}

impl utoipa::ToSchema for Egress {}
