//! What the schema tests check with: every wire type's schema, a validator for each, and the
//! checks of a value or a verdict against them.
use std::collections::BTreeSet;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use utoipa::openapi::schema::{ComponentsBuilder, Schema};
use utoipa::openapi::RefOr;
use utoipa::ToSchema;

use crate::build::{BuildEvent, Instruction, LogLevel};
use crate::image::{LayerProgress, LayerStatus, PruneResult};
use crate::*;

/// A type's schema name, its schema, and what its `schemas()` says it refers to.
pub(super) type Entry = (String, RefOr<Schema>, Vec<(String, RefOr<Schema>)>);

pub(super) fn entry<T: ToSchema>() -> Entry {
    let mut deps = Vec::new();
    T::schemas(&mut deps);
    (T::name().into_owned(), T::schema(), deps)
}

macro_rules! wire_types {
    ($($t:ty),* $(,)?) => {
        /// Every wire type of the crate.
        pub(super) fn wire_types() -> Vec<Entry> {
            vec![$(entry::<$t>()),*]
        }
    };
}

wire_types!(
    AuditEntry,
    AuditList,
    Instruction,
    LogLevel,
    BuildEvent,
    Egress,
    ErrorBody,
    ErrorDetail,
    ExecRequest,
    ExecResult,
    ExecExit,
    ExecKind,
    ExecRecord,
    ExecList,
    FileKind,
    FileEntry,
    FileList,
    SandboxId,
    Image,
    ImageConfig,
    PullImage,
    TagImage,
    PullPolicy,
    PullEvent,
    LayerProgress,
    LayerStatus,
    PruneResult,
    ImageList,
    Scope,
    CreateApiKey,
    ApiKey,
    CreatedApiKey,
    ApiKeyList,
    Quotas,
    TeamUsage,
    CreateTeam,
    UpdateTeam,
    Team,
    TeamList,
    OperationKind,
    OperationState,
    Operation,
    OperationList,
    ImagePart,
    PauseReceipt,
    CreateSnapshot,
    Snapshot,
    SnapshotList,
    CreatePool,
    Pool,
    PoolList,
    Runtime,
    SandboxState,
    SetNetwork,
    ListeningPort,
    OnTimeout,
    CreateSandbox,
    Sandbox,
    SandboxList,
    ResumeSandbox,
    ForkSandbox,
    SetTimeout,
    LogStream,
    LogLine,
    LogList,
    SandboxMetrics,
    CreateVolume,
    Volume,
    VolumeBackup,
    VolumeList,
    VolumeMount,
);

/// Public types of the crate that never cross the wire (no serde), so have no schema.
pub(super) const NOT_WIRE: [&str; 2] = ["DockerfileError", "InvalidId"];

/// `{"schemas": {...}}` of every wire type, as an OpenAPI document's `components`.
pub(super) fn components() -> Value {
    let mut builder = ComponentsBuilder::new();
    for (name, schema, deps) in wire_types() {
        builder = builder.schema(name, schema).schemas_from_iter(deps);
    }
    serde_json::to_value(builder.build()).expect("components serialize")
}

pub(super) fn schema_of(name: &str) -> Value {
    components()["schemas"][name].clone()
}

pub(super) fn validator(name: &str) -> jsonschema::Validator {
    let root = json!({"$ref": format!("#/components/schemas/{name}"), "components": components()});
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(&root)
        .unwrap_or_else(|e| panic!("schema of {name} does not compile: {e}"))
}

/// Why `value` does not fit `name`'s schema (empty when it does).
pub(super) fn errors(name: &str, value: &Value) -> Vec<String> {
    validator(name)
        .iter_errors(value)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

/// `value`, serialized as the server sends it, fits the schema of its type.
pub(super) fn assert_fits<T: Serialize + ToSchema>(value: &T) {
    let name = T::name();
    let json = serde_json::to_value(value).expect("serializes");
    let errors = errors(&name, &json);
    assert!(
        errors.is_empty(),
        "{name}: {json:#} does not fit its schema: {errors:#?}\nschema: {:#}",
        schema_of(&name)
    );
}

/// For each JSON value, the schema of `T` accepts it exactly when serde does.
pub(super) fn assert_same_verdicts<T: DeserializeOwned + ToSchema>(cases: &[Value]) {
    assert_verdicts_against::<T>(&T::name(), cases);
}

/// As [`assert_same_verdicts`], against the schema called `name`.
pub(super) fn assert_verdicts_against<T: DeserializeOwned>(name: &str, cases: &[Value]) {
    let validator = validator(name);
    for case in cases {
        let serde = serde_json::from_value::<T>(case.clone());
        let schema = validator.is_valid(case);
        assert_eq!(
            serde.is_ok(),
            schema,
            "{name}: serde says {:?}, the schema says {} for {case}",
            serde.err().map(|e| e.to_string()),
            if schema { "valid" } else { "invalid" }
        );
    }
}

/// `required` in `T`'s (object) schema names exactly the fields serde cannot do without:
/// dropping a required field from a full value makes serde refuse it, dropping any other
/// field does not (and the schema agrees both times).
pub(super) fn assert_required_matches_serde<T: Serialize + DeserializeOwned + ToSchema>(full: &T) {
    assert_required_against(&T::name(), full);
}

/// As [`assert_required_matches_serde`], against the schema called `name`.
pub(super) fn assert_required_against<T: Serialize + DeserializeOwned>(name: &str, full: &T) {
    let schema = schema_of(name);
    let required: BTreeSet<&str> = schema["required"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let json = serde_json::to_value(full).expect("serializes");
    let fields = json.as_object().expect("an object");
    for field in required.iter() {
        assert!(
            fields.contains_key(*field),
            "{name}: {field} missing in the sample"
        );
    }
    let mut cases = Vec::new();
    for field in fields.keys() {
        let mut less = fields.clone();
        less.remove(field);
        let less = Value::Object(less);
        let serde_ok = serde_json::from_value::<T>(less.clone()).is_ok();
        assert_eq!(
            serde_ok,
            !required.contains(field.as_str()),
            "{name}: serde {} it without {field}, the schema has it {}",
            if serde_ok { "takes" } else { "refuses" },
            if required.contains(field.as_str()) {
                "required"
            } else {
                "optional"
            }
        );
        cases.push(less);
    }
    assert_verdicts_against::<T>(name, &cases);
}

/// Every `$ref` target under `v`.
pub(super) fn refs(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("$ref", Value::String(r)) => {
                        let name = r.strip_prefix("#/components/schemas/");
                        out.insert(name.unwrap_or(r).to_owned());
                    }
                    _ => refs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}
