//! Request bodies are held to the schemas `/openapi.json` publishes before serde reads them:
//! serde alone is laxer than the document in places (it takes a struct written as an array
//! of its fields, at any depth), and a client should be refused by the rules it was shown.
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::{json, Value};
use utoipa::ToSchema;

use crate::error::ApiError;

/// Bytes of the refusal's own words a 422 quotes.
const MAX_MESSAGE: usize = 300;

/// `value` fits `T`'s schema, or the first place it does not, as a 422.
pub fn check<T: ToSchema>(value: &Value) -> Result<(), ApiError> {
    let validator = validator::<T>()?;
    // `validate` stops at the first error (`iter_errors` would find them all: a body of a
    // million wrong items would cost a million errors), and the error quotes what it refused,
    // so the message is cut.
    match validator.validate(value) {
        Ok(()) => Ok(()),
        Err(e) => {
            let at = e.instance_path().to_string();
            let at = if at.is_empty() { "the body".into() } else { at };
            let mut what = e.to_string();
            if what.len() > MAX_MESSAGE {
                let mut end = MAX_MESSAGE;
                while !what.is_char_boundary(end) {
                    end -= 1;
                }
                what.truncate(end);
                what.push('…');
            }
            Err(ApiError::Invalid(format!("invalid request: {at}: {what}")))
        }
    }
}

fn validator<T: ToSchema>() -> Result<Arc<jsonschema::Validator>, ApiError> {
    static CACHE: OnceLock<Mutex<HashMap<String, Arc<jsonschema::Validator>>>> = OnceLock::new();
    let name = T::name().into_owned();
    let cache = CACHE.get_or_init(Mutex::default);
    if let Some(v) = crate::lock(cache).get(&name) {
        return Ok(v.clone());
    }
    let mut schemas = Vec::new();
    T::schemas(&mut schemas);
    schemas.push((name.clone(), T::schema()));
    let mut components = serde_json::Map::new();
    for (n, s) in schemas {
        let s = serde_json::to_value(s)
            .map_err(|e| ApiError::Internal(format!("the schema of {n}: {e}")))?;
        components.insert(n, s);
    }
    let mut root = json!({
        "$ref": format!("#/components/schemas/{name}"),
        "components": {"schemas": components},
    });
    bound_unsigned(&mut root);
    let v = jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(&root)
        .map_err(|e| ApiError::Internal(format!("the schema of {name} does not compile: {e}")))?;
    let v = Arc::new(v);
    crate::lock(cache).insert(name, v.clone());
    Ok(v)
}

/// Spells out the bounds of unsigned integers: utoipa names them by a format (`u-int32`)
/// that validators do not know, so a `u32` would read as any integer at all.
pub fn bound_unsigned(v: &mut Value) {
    match v {
        Value::Object(map) => {
            let max = match map.get("format").and_then(|f| f.as_str()) {
                Some("uint8" | "u-int8") => Some(u64::from(u8::MAX)),
                Some("uint16" | "u-int16") => Some(u64::from(u16::MAX)),
                Some("uint32" | "u-int32") => Some(u64::from(u32::MAX)),
                Some("uint64" | "u-int64") => Some(u64::MAX),
                _ => None,
            };
            if let Some(max) = max {
                map.remove("format");
                map.insert("minimum".into(), 0.into());
                map.insert("maximum".into(), max.into());
            }
            map.values_mut().for_each(bound_unsigned);
        }
        Value::Array(items) => items.iter_mut().for_each(bound_unsigned),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_struct_written_as_an_array_is_refused_at_any_depth() {
        let ok = json!({"quotas": {"sandboxes": 3}});
        assert!(check::<warren_api::UpdateTeam>(&ok).is_ok());
        for bad in [json!([null, null]), json!({"quotas": [null, null]})] {
            let e = check::<warren_api::UpdateTeam>(&bad).expect_err("refused");
            assert!(matches!(e, ApiError::Invalid(_)), "{e}");
        }
    }

    #[test]
    fn a_huge_wrong_body_costs_one_short_error() {
        let many = json!({"cmd": vec![1; 100_000]});
        let e = check::<warren_api::ExecRequest>(&many).expect_err("refused");
        assert!(e.to_string().len() < 2 * MAX_MESSAGE, "{e}");
    }

    #[test]
    fn unsigned_integers_keep_their_bounds() {
        // `rate_limit` is a u32.
        let fits = json!({"rate_limit": u32::MAX});
        assert!(check::<warren_api::UpdateTeam>(&fits).is_ok());
        let over = json!({"rate_limit": u64::from(u32::MAX) + 1});
        assert!(check::<warren_api::UpdateTeam>(&over).is_err());
        assert!(check::<warren_api::UpdateTeam>(&json!({"rate_limit": -1})).is_err());
    }
}
