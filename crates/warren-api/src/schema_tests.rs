//! The OpenAPI schemas (`utoipa::ToSchema`) against what serde really puts on the wire: real
//! values serialized with serde_json must validate against the schema of their type, and for
//! the hand-written schemas (and a few derived ones) the schema must accept exactly what serde
//! accepts. Every schema is checked as JSON Schema 2020-12, as OpenAPI 3.1 reads it.
use std::collections::BTreeSet;

use serde_json::{json, Value};

use crate::build::Instruction;
use crate::image::{LayerProgress, LayerStatus, PruneResult};
use crate::*;

mod harness;
mod samples;
use harness::*;
use samples::*;

#[test]
fn every_public_type_has_a_schema_and_each_schema_brings_what_it_refers_to() {
    let types = wire_types();
    let names: BTreeSet<String> = types.iter().map(|(n, _, _)| n.clone()).collect();
    assert_eq!(names.len(), types.len(), "two types share a schema name");

    // Each public struct and enum of the crate is a wire type or named as not one.
    let sources = [
        include_str!("audit.rs"),
        include_str!("build.rs"),
        include_str!("egress.rs"),
        include_str!("error.rs"),
        include_str!("exec.rs"),
        include_str!("files.rs"),
        include_str!("id.rs"),
        include_str!("image.rs"),
        include_str!("key.rs"),
        include_str!("operation.rs"),
        include_str!("pause.rs"),
        include_str!("pool.rs"),
        include_str!("sandbox.rs"),
        include_str!("volume.rs"),
    ];
    for line in sources.iter().flat_map(|s| s.lines()) {
        let Some(rest) = line
            .strip_prefix("pub struct ")
            .or_else(|| line.strip_prefix("pub enum "))
        else {
            continue;
        };
        let ty: String = rest.chars().take_while(|c| c.is_alphanumeric()).collect();
        assert!(
            names.contains(&ty) || NOT_WIRE.contains(&ty.as_str()),
            "pub type {ty} has no schema (add it to wire_types! or NOT_WIRE)"
        );
    }

    // What one type's `schemas()` collects is enough to resolve its refs, so a document that
    // names only the types its routes use is complete.
    for (name, schema, deps) in &types {
        let mut have: BTreeSet<String> = deps.iter().map(|(n, _)| n.clone()).collect();
        have.insert(name.clone());
        let mut wanted = BTreeSet::new();
        refs(
            &serde_json::to_value(schema).expect("serializes"),
            &mut wanted,
        );
        for (_, dep) in deps {
            refs(&serde_json::to_value(dep).expect("serializes"), &mut wanted);
        }
        let missing: Vec<_> = wanted.difference(&have).collect();
        assert!(
            missing.is_empty(),
            "{name} refers to {missing:?} it does not bring"
        );
        // And every schema compiles.
        validator(name);
    }
}

#[test]
fn sandboxes_fit_their_schema() {
    assert_fits(&sandbox());
    assert_fits(&bare_sandbox());
    assert_fits(&SandboxList {
        sandboxes: vec![sandbox(), bare_sandbox()],
    });
    assert_required_matches_serde(&sandbox());
    // What an older server wrote (no user, team, public, on_timeout...) still reads, and fits.
    let mut old = serde_json::to_value(bare_sandbox()).expect("serializes");
    for gone in [
        "user",
        "team",
        "public",
        "on_timeout",
        "auto_resume",
        "server",
    ] {
        old.as_object_mut().expect("an object").remove(gone);
    }
    assert_same_verdicts::<Sandbox>(&[old]);
}

#[test]
fn a_create_with_every_field_absent_fits_and_each_field_is_optional() {
    assert_fits(&CreateSandbox::default());
    assert_eq!(
        serde_json::to_value(CreateSandbox::default()).ok(),
        Some(json!({}))
    );
    assert_fits(&full_create());
    assert_required_matches_serde(&full_create());
    assert_same_verdicts::<CreateSandbox>(&[
        json!({}),
        json!({"image": null, "cpu": null, "egress": null}),
        json!({"image": "alpine", "runtime": "runc", "cpu": 0.5, "pull": "always"}),
        json!({"runtime": "kvm"}),
        json!({"cpu": "1"}),
        json!({"memory_mb": -1}),
        json!({"volumes": [{"name": "v", "path": "/data"}]}),
        json!({"volumes": [{"name": "v"}]}),
        json!({"egress": {"allow": ["1.1.1.1"]}}),
        json!({"egress": "sometimes"}),
        json!({"imag": "typo"}),
        // (Not `[]`: serde also reads a struct from an array of its fields in order, which is
        // no part of the API and so not in its schema.)
        json!("image"),
    ]);
}

#[test]
fn egress_schema_takes_what_serde_takes() {
    for egress in [
        Egress::Allow,
        Egress::Deny,
        Egress::Only(vec!["10.0.0.0/8".into(), "pypi.org".into()]),
        Egress::Only(vec![]),
        Egress::Rules {
            allow: vec!["1.1.1.1".into()],
            deny: vec!["0.0.0.0/0".into()],
        },
        Egress::Rules {
            allow: vec![],
            deny: vec!["192.0.2.0/24".into()],
        },
    ] {
        assert_fits(&egress);
        assert_fits(&SetNetwork { egress });
    }
    assert_same_verdicts::<Egress>(&[
        json!("allow"),
        json!("deny"),
        json!("Allow"),
        json!("maybe"),
        json!({"allow": []}),
        json!({"allow": ["a.example", "10.0.0.0/8"]}),
        json!({"deny": ["0.0.0.0/0"]}),
        json!({"allow": ["1.1.1.1"], "deny": []}),
        json!({}),
        json!({"allow": [1]}),
        json!({"allow": "1.1.1.1"}),
        json!({"allow": null}),
        json!({"deny": [null]}),
        json!({"allow": [], "block": []}),
        json!({"block": []}),
        json!(["allow"]),
        json!(null),
        json!(true),
        json!(1),
    ]);
    // The examples it shows are ones the server takes.
    let schema =
        serde_json::to_value(<Egress as utoipa::PartialSchema>::schema()).expect("serializes");
    let examples = schema["examples"].as_array().expect("has examples");
    assert_same_verdicts::<Egress>(examples);
    for example in examples {
        assert!(serde_json::from_value::<Egress>(example.clone()).is_ok());
    }
}

#[test]
fn a_sandbox_id_is_a_string_of_its_form() {
    for _ in 0..20 {
        assert_fits(&SandboxId::generate());
    }
    let schema =
        serde_json::to_value(<SandboxId as utoipa::PartialSchema>::schema()).expect("serializes");
    assert_eq!(schema["type"], "string");
    let examples = schema["examples"].as_array().expect("has examples").clone();
    assert_same_verdicts::<SandboxId>(&examples);
    assert_same_verdicts::<SandboxId>(&[
        json!("abcdefghijklmnop"),
        json!("a2345672abcdefgh"),
        json!("ABCDEFGHIJKLMNOP"),
        json!("abcdefghijklmno1"),
        json!("abcdefgh-jklmnop"),
        json!("abcdefghijklmnopq"),
        json!("abc"),
        json!(""),
        json!(12),
        json!(null),
    ]);
}

#[test]
fn the_error_body_fits_its_schema() {
    let body = ErrorBody::new("not_found", "no sandbox abcdefghijklmnop");
    assert_fits(&body);
    assert_eq!(
        serde_json::to_value(&body).ok(),
        Some(json!({"error": {"code": "not_found", "message": "no sandbox abcdefghijklmnop"}}))
    );
    assert_required_matches_serde(&body);
    assert_required_matches_serde(&body.error);
    assert_same_verdicts::<ErrorBody>(&[
        json!({"error": {"code": "conflict", "message": "busy"}}),
        json!({"error": {"code": "conflict"}}),
        json!({"error": {"code": 409, "message": "busy"}}),
        json!({"code": "conflict", "message": "busy"}),
        json!({"error": "conflict"}),
    ]);
}

#[test]
fn a_pool_request_is_one_object_of_its_own_fields_and_a_create() {
    let pool = CreatePool {
        name: "py".into(),
        size: 3,
        sandbox: CreateSandbox {
            image: Some("python".into()),
            runtime: Some(Runtime::Runc),
            memory_mb: Some(1024),
            ..CreateSandbox::default()
        },
    };
    assert_fits(&pool);
    assert_required_matches_serde(&pool);
    assert_same_verdicts::<CreatePool>(&[
        json!({"name": "py", "size": 2}),
        json!({"name": "py", "size": 2, "image": "python", "cpu": 2}),
        json!({"name": "py", "size": 2, "egress": "deny", "metadata": {"a": "b"}}),
        json!({"name": "py"}),
        json!({"size": 2}),
        json!({"name": "py", "size": -1}),
        json!({"name": "py", "size": 2, "sizes": 3}),
        json!({"name": "py", "size": 2, "runtime": "kvm"}),
    ]);
    assert_fits(&Pool {
        name: "py".into(),
        size: 3,
        sandbox: pool.sandbox.clone(),
        created_at: at(),
        ready: 2,
        claimed: 7,
    });
}

#[test]
fn tagged_and_flattened_types_fit_their_schemas() {
    let layer = LayerProgress {
        digest: "sha256:ab".into(),
        status: LayerStatus::Downloading,
        current: 10,
        total: 20,
    };
    for event in [
        PullEvent::Resolved {
            reference: "docker.io/library/alpine:3.20".into(),
            digest: "sha256:cd".into(),
            layers: vec![layer.clone()],
        },
        PullEvent::Layer(layer),
        PullEvent::Done {
            image: Box::new(image()),
        },
        PullEvent::Error {
            error: ErrorBody::new("bad_gateway", "registry down").error,
        },
    ] {
        assert_fits(&event);
    }
    assert_same_verdicts::<PullEvent>(&[
        json!({"type": "layer", "digest": "d", "status": "present", "current": 0, "total": 1}),
        json!({"type": "layer", "digest": "d", "status": "gone", "current": 0, "total": 1}),
        json!({"type": "layer", "digest": "d"}),
        json!({"type": "lair", "digest": "d", "status": "present", "current": 0, "total": 1}),
        json!({"type": "error", "error": {"code": "internal", "message": "m"}}),
    ]);
    for event in build_events() {
        assert_fits(&event);
    }
    let steps = crate::build::parse_dockerfile(
        "FROM base\nRUN true\nCOPY --chown=u a /b/\nENV A=1 B=2\nWORKDIR /w\nUSER u\n\
         CMD [\"x\"]\nENTRYPOINT [\"y\"]\nEXPOSE 80\n",
    )
    .expect("parses");
    for step in &steps {
        assert_fits(step);
    }
    assert_same_verdicts::<Instruction>(&[
        json!({"type": "ENV", "vars": [["A", "1"], ["B", "2"]]}),
        json!({"type": "ENV", "vars": [["A", "1", "2"]]}),
        json!({"type": "ENV", "vars": [["A"]]}),
        json!({"type": "COPY", "sources": ["a"], "dest": "/b", "mode": 420}),
        json!({"type": "RUN", "command": "true", "user": "u"}),
        json!({"type": "RUN"}),
        json!({"type": "run", "command": "true"}),
    ]);
    let key = api_key();
    assert_fits(&CreatedApiKey {
        key: key.clone(),
        secret: "wk_secret".into(),
        e2b_secret: format!("e2b_{}", "0".repeat(40)),
    });
    assert_fits(&ApiKeyList { keys: vec![key] });
    assert_fits(&FileList {
        entries: vec![FileEntry {
            name: "a".into(),
            path: "/a".into(),
            kind: FileKind::Symlink,
            size: 1,
            mode: 0o777,
            modified_at: None,
        }],
    });
}

#[test]
fn the_other_wire_types_fit_their_schemas() {
    let op = operation();
    assert_fits(&op);
    assert_required_matches_serde(&op);
    assert_fits(&Operation {
        result: Some(Value::Null),
        ..op.clone()
    });
    assert_fits(&OperationList {
        operations: vec![op],
    });
    assert_fits(&image());
    assert_required_matches_serde(&image());
    assert_fits(&ImageList {
        images: vec![image()],
    });
    assert_fits(&PruneResult::default());
    assert_fits(&PullImage {
        reference: "alpine".into(),
    });
    let tag = TagImage {
        source: "alpine".into(),
        name: "mine:v1".into(),
    };
    assert_fits(&tag);
    assert_required_matches_serde(&tag);
    assert_fits(&exec_request());
    assert_required_matches_serde(&exec_request());
    assert_fits(&exec_result());
    assert_required_matches_serde(&exec_result());
    assert_fits(&exec_list());
    assert_fits(&log_list());
    assert_required_matches_serde(&log_list());
    assert_fits(&metrics());
    assert_fits(&snapshot_list());
    assert_fits(&CreateSnapshot {
        name: "s".into(),
        memory: Some(false),
    });
    for (team, create, update) in teams() {
        assert_fits(&team);
        assert_required_matches_serde(&team);
        assert_fits(&create);
        assert_required_matches_serde(&create);
        assert_fits(&update);
        assert_fits(&TeamList { teams: vec![team] });
    }
    assert_fits(&CreateApiKey::default());
    assert_fits(&volume_list());
    assert_fits(&volume_backup());
    assert_fits(&CreateVolume {
        name: "v".into(),
        size_mb: None,
    });
    assert_fits(&audit_list());
    assert_fits(&ResumeSandbox::default());
    assert_fits(&ForkSandbox {
        metadata: Some([("a".to_owned(), "b".to_owned())].into()),
        timeout_s: Some(0),
    });
    assert_fits(&SetTimeout { timeout_s: 60 });
}

#[test]
fn these_checks_fail_on_an_unfaithful_schema() {
    // Held against the wrong schema, each check fails: the harness can tell.
    let fails = |check: fn()| std::panic::catch_unwind(check).is_err();
    // A create without `name` is fine for serde, not for a pool's schema.
    assert!(fails(|| assert_verdicts_against::<CreateSandbox>(
        "CreatePool",
        &[json!({})]
    )));
    // `{"deny": [...]}` is an Egress, not an id.
    assert!(fails(|| assert_verdicts_against::<Egress>(
        "SandboxId",
        &[json!({"deny": []})]
    )));
    // Some fields of a create are optional in a sandbox, others missing there.
    assert!(fails(|| assert_required_against(
        "CreateSandbox",
        &sandbox()
    )));
    // A value whose date is no date, or whose id is no id, does not fit.
    let mut bad = serde_json::to_value(sandbox()).expect("serializes");
    bad["created_at"] = json!("yesterday");
    assert!(!errors("Sandbox", &bad).is_empty());
    bad["created_at"] = json!("2025-01-02T03:04:05Z");
    assert!(errors("Sandbox", &bad).is_empty());
    bad["id"] = json!("ABCDEFGHIJKLMNOP");
    assert!(!errors("Sandbox", &bad).is_empty());
    assert!(!errors("CreatePool", &json!({"name": "p", "size": 1, "x": 1})).is_empty());
    assert!(!errors("Egress", &json!({"allow": [1]})).is_empty());
    assert!(!errors("ErrorBody", &json!({"error": {"code": "x"}})).is_empty());
}
