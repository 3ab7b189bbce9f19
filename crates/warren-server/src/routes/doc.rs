//! The OpenAPI document's shared parts: the error answers every route may give, the path and
//! header parameters many routes share, and the document's frame (title, key scheme, tags).
//! Each route's own part sits on its handler (`#[utoipa::path]`), and the router is built
//! from those handlers, so a route cannot be served without being described.
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, IntoResponses, Modify, OpenApi};
use warren_api::ErrorBody;

/// The errors of `/v1`: every answer that is not a success has the body
/// `{"error": {"code": ..., "message": ...}}`.
#[derive(IntoResponses)]
#[allow(dead_code)] // Only its description is used.
pub enum Errors {
    /// `bad_request`: the request could not be read (malformed JSON, a bad query parameter,
    /// an unknown field).
    #[response(status = 400)]
    BadRequest(ErrorBody),
    /// `unauthorized`: no key, or a key that is unknown, revoked or expired.
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// `forbidden`: the key's scope does not allow this call (or `registry_denied`).
    #[response(status = 403)]
    Forbidden(ErrorBody),
    /// `not_found`: no such thing for this key's team.
    #[response(status = 404)]
    NotFound(ErrorBody),
    /// `method_not_allowed`: the route does not take this method; `Allow` names those it does.
    #[response(status = 405)]
    MethodNotAllowed(ErrorBody),
    /// `conflict`: the thing exists already, or is in a state that does not allow the call.
    #[response(status = 409)]
    Conflict(ErrorBody),
    /// `too_large`: the body or the file is over a limit.
    #[response(status = 413)]
    TooLarge(ErrorBody),
    /// `misdirected`: the sandbox belongs to another server; `Warren-Server-Url` names it.
    #[response(status = 421)]
    Misdirected(ErrorBody),
    /// `invalid`: well-formed, but a value is not acceptable.
    #[response(status = 422)]
    Invalid(ErrorBody),
    /// `rate_limited` (with `Retry-After`) or `quota_exceeded` (naming the quota).
    #[response(status = 429)]
    TooMany(ErrorBody),
    /// `internal`: a fault of the server; the message names a reference in its log.
    #[response(status = 500)]
    Internal(ErrorBody),
    /// `bad_gateway`: the sandbox's agent or a registry failed.
    #[response(status = 502)]
    BadGateway(ErrorBody),
    /// `unavailable`: the server is stopping, or the sandbox's server is not answering.
    #[response(status = 503)]
    Unavailable(ErrorBody),
    /// `insufficient_storage`: a disk (the sandbox's or the host's) is full.
    #[response(status = 507)]
    InsufficientStorage(ErrorBody),
}

/// A sandbox named in the path.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub struct SandboxPath {
    /// The sandbox's id.
    #[param(value_type = warren_api::SandboxId)]
    id: String,
}

/// A thing named in the path (a volume, snapshot, pool, team, image).
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub struct NamePath {
    /// Its name.
    name: String,
}

/// The headers of calls carried out as operations.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub struct OperationHeaders {
    /// Makes a retried call the same operation: the same key answers with the first call's
    /// result (1 to 255 printable ASCII characters).
    #[param(rename = "Idempotency-Key")]
    idempotency_key: Option<String>,
    /// `respond-async`: answer at once with `202 Accepted` and the operation.
    #[param(rename = "Prefer")]
    prefer: Option<String>,
}

/// The document: `GET /openapi.json`, and the page at `/docs`.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Warren",
        description = "Isolated sandboxes for untrusted code: create them, run commands in them, \
                       move files, reach their ports. Every call takes an API key as a bearer \
                       token (`Authorization: Bearer wk_...`).",
        license(name = "Apache-2.0")
    ),
    modifiers(&BearerKey),
    paths(super::images::import, super::images::delete),
    security(("api_key" = [])),
    components(schemas(ErrorBody)),
    tags(
        (name = "sandboxes", description = "Create, list, stop, start, pause, resume, fork and delete sandboxes"),
        (name = "processes", description = "Commands, history, logs, files and terminals inside a sandbox"),
        (name = "images", description = "Images: pulls, imports, builds, pruning"),
        (name = "storage", description = "Volumes and snapshots"),
        (name = "pools", description = "Warm pools of ready sandboxes"),
        (name = "operations", description = "Durable operations and the event stream"),
        (name = "access", description = "Teams, API keys and the audit log"),
    )
)]
pub struct ApiDoc;

/// The API key scheme.
struct BearerKey;

impl Modify for BearerKey {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API key (`warren key create`)"))
                    .build(),
            ),
        );
    }
}

/// `202 Accepted` of a create: the sandbox as recorded (`wait: false`) or the operation
/// (`Prefer: respond-async`).
pub struct SandboxOrOperation;

impl utoipa::PartialSchema for SandboxOrOperation {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{AnyOfBuilder, Ref};
        AnyOfBuilder::new()
            .item(Ref::from_schema_name("Sandbox"))
            .item(Ref::from_schema_name("Operation"))
            .into()
    }
}

impl utoipa::ToSchema for SandboxOrOperation {
    fn schemas(
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        use utoipa::PartialSchema;
        schemas.push(("Sandbox".into(), warren_api::Sandbox::schema()));
        schemas.push(("Operation".into(), warren_api::Operation::schema()));
        <warren_api::Sandbox as utoipa::ToSchema>::schemas(schemas);
        <warren_api::Operation as utoipa::ToSchema>::schemas(schemas);
    }
}

/// The whole document: `/v1`'s routes under [`ApiDoc`]'s frame, with the bounds of unsigned
/// integers spelled out.
pub fn document(v1: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    let api = ApiDoc::openapi().nest("/v1", v1);
    let Ok(mut value) = serde_json::to_value(&api) else {
        return api;
    };
    crate::body_schema::bound_unsigned(&mut value);
    serde_json::from_value(value).unwrap_or(api)
}

/// Bytes, as they are (files, image archives).
pub struct Binary;

impl utoipa::PartialSchema for Binary {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Binary)))
            .into()
    }
}

impl utoipa::ToSchema for Binary {}
