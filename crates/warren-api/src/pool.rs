//! Warm pools: sandboxes kept ready so that a matching create takes one at once.
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::CreateSandbox;

/// `POST /v1/pools`: `{"name", "size", "image", "runtime", ...}`; any other field is refused,
/// as a create refuses it.
#[derive(Debug, Clone, Serialize)]
pub struct CreatePool {
    /// Its name (a-z, 0-9, '-', '_').
    pub name: String,
    /// Sandboxes kept ready.
    pub size: u32,
    /// What they are: `image`, `runtime`, `cpu`, `memory_mb`, `disk_mb`, `pids`, `env`,
    /// `cmd`, `cwd`, `user`, as at create. A create asking for exactly this (and no volumes
    /// or snapshot) takes one of them; its `metadata`, `timeout_s`, `on_timeout`,
    /// `auto_resume`, `egress` and `public` are its own.
    #[serde(flatten)]
    pub sandbox: CreateSandbox,
}

/// A pool.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Pool {
    /// Its name.
    pub name: String,
    /// Sandboxes it keeps ready.
    pub size: u32,
    /// What they are.
    pub sandbox: CreateSandbox,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// Sandboxes ready now.
    pub ready: u32,
    /// Sandboxes taken from it so far (by this server since it started).
    pub claimed: u64,
}

/// `GET /v1/pools`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PoolList {
    /// Every pool, by name.
    pub pools: Vec<Pool>,
}

impl<'de> Deserialize<'de> for CreatePool {
    // By hand: serde's `flatten` would let a misspelt field through unnoticed.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let mut map = serde_json::Map::<String, serde_json::Value>::deserialize(d)?;
        let name = map
            .remove("name")
            .ok_or_else(|| D::Error::missing_field("name"))?;
        let size = map
            .remove("size")
            .ok_or_else(|| D::Error::missing_field("size"))?;
        Ok(CreatePool {
            name: serde_json::from_value(name).map_err(D::Error::custom)?,
            size: serde_json::from_value(size).map_err(D::Error::custom)?,
            sandbox: serde_json::from_value(serde_json::Value::Object(map))
                .map_err(D::Error::custom)?,
        })
    }
}

// By hand: a derived schema would be `allOf: [CreateSandbox, {name, size}]`, which nothing
// satisfies (CreateSandbox refuses fields it does not know, `name` and `size` among them).
// On the wire it is one object: `name` and `size`, then CreateSandbox's fields, no others.
impl utoipa::PartialSchema for CreatePool {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, Schema, SchemaFormat, Type};
        use utoipa::openapi::RefOr;
        let RefOr::T(Schema::Object(sandbox)) = <CreateSandbox as utoipa::PartialSchema>::schema()
        else {
            unreachable!("CreateSandbox's schema is an object")
        };
        let mut pool = ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some(
                "`POST /v1/pools`: `{\"name\", \"size\", \"image\", \"runtime\", ...}`; any other \
                 field is refused, as a create refuses it.\n\nBesides `name` and `size`, the fields \
                 of a create say what its sandboxes are: `image`, `runtime`, `cpu`, `memory_mb`, \
                 `disk_mb`, `pids`, `env`, `cmd`, `cwd`, `user`. A create asking for exactly this \
                 (and no volumes or snapshot) takes one of them; its `metadata`, `timeout_s`, \
                 `on_timeout`, `auto_resume`, `egress` and `public` are its own.",
            ))
            .property(
                "name",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .description(Some("Its name (a-z, 0-9, '-', '_').")),
            )
            .property(
                "size",
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int32)))
                    .minimum(Some(0))
                    .description(Some("Sandboxes kept ready.")),
            )
            .required("name")
            .required("size")
            .additional_properties(sandbox.additional_properties.map(|a| *a));
        for (field, schema) in sandbox.properties {
            pool = pool.property(field, schema);
        }
        for field in sandbox.required {
            pool = pool.required(field);
        }
        pool.into()
    }
}

impl utoipa::ToSchema for CreatePool {
    fn schemas(
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        // What CreateSandbox's fields refer to (Runtime, Egress, VolumeMount, ...).
        <CreateSandbox as utoipa::ToSchema>::schemas(schemas);
    }
}
