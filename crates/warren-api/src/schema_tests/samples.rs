//! Real values of the wire types, with every optional field set where a test drops them one by
//! one (`full_*`, and the plain ones unless named `bare_*`).
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::json;

use crate::build::{BuildEvent, LogLevel};
use crate::*;

pub fn at() -> DateTime<Utc> {
    "2025-01-02T03:04:05.678Z".parse().expect("a date")
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn receipt() -> PauseReceipt {
    PauseReceipt {
        version: 1,
        paused_at: at(),
        took_ms: 812,
        runtime: Runtime::Gvisor,
        runtime_version: "runsc release-20250101.0".into(),
        memory: ImagePart {
            bytes: 1 << 20,
            sha256: "ab".repeat(32),
        },
        filesystem: ImagePart {
            bytes: 4096,
            sha256: "cd".repeat(32),
        },
        stored: Some("s3://bucket/pauses/x".into()),
    }
}

fn mount() -> VolumeMount {
    VolumeMount {
        name: "data".into(),
        path: "/data".into(),
        read_only: true,
    }
}

/// A sandbox with every field set.
pub fn sandbox() -> Sandbox {
    Sandbox {
        id: SandboxId::generate(),
        state: SandboxState::Paused,
        image: "python".into(),
        image_digest: format!("sha256:{}", "0".repeat(64)),
        runtime: Runtime::Runc,
        cpu: 1.5,
        memory_mb: 1024,
        disk_mb: 4096,
        pids: 256,
        env: map(&[("A", "1")]),
        cmd: strings(&["python", "-m", "http.server"]),
        cwd: "/srv".into(),
        user: "app".into(),
        metadata: map(&[("owner", "ci")]),
        volumes: vec![mount()],
        egress: Egress::Rules {
            allow: strings(&["pypi.org"]),
            deny: strings(&["0.0.0.0/0"]),
        },
        public: true,
        traffic_token: Some("tok".into()),
        request_host: Some("localhost:${PORT}".into()),
        ip: Some("10.88.0.7".into()),
        created_at: at(),
        started_at: Some(at()),
        expires_at: Some(at()),
        on_timeout: OnTimeout::Pause,
        auto_resume: true,
        error: Some("it broke".into()),
        urls: map(&[("8000", "https://8000-x.example")]),
        exposed_ports: vec![8000],
        ports: vec![ListeningPort {
            port: 8000,
            address: "0.0.0.0".into(),
            url: Some("https://8000-x.example".into()),
        }],
        pause: Some(receipt()),
        pool: Some("warm".into()),
        team: "blue".into(),
        server: "host-a".into(),
    }
}

/// A sandbox with nothing optional set.
pub fn bare_sandbox() -> Sandbox {
    Sandbox {
        state: SandboxState::Pending,
        env: BTreeMap::new(),
        cmd: vec![],
        metadata: BTreeMap::new(),
        volumes: vec![],
        egress: Egress::Allow,
        public: false,
        traffic_token: None,
        request_host: None,
        ip: None,
        started_at: None,
        expires_at: None,
        on_timeout: OnTimeout::Delete,
        auto_resume: false,
        error: None,
        urls: BTreeMap::new(),
        exposed_ports: vec![],
        ports: vec![],
        pause: None,
        pool: None,
        server: String::new(),
        ..sandbox()
    }
}

/// A create request with every field set.
pub fn full_create() -> CreateSandbox {
    CreateSandbox {
        image: Some("python".into()),
        pull: Some(crate::PullPolicy::Always),
        runtime: Some(Runtime::Gvisor),
        cpu: Some(0.5),
        memory_mb: Some(256),
        disk_mb: Some(1024),
        pids: Some(64),
        env: map(&[("A", "1")]),
        cmd: strings(&["sleep", "infinity"]),
        cwd: Some("/".into()),
        user: Some("root".into()),
        timeout_s: Some(0),
        on_timeout: Some(OnTimeout::Stop),
        auto_resume: Some(true),
        volumes: vec![mount()],
        snapshot: Some("snap".into()),
        metadata: map(&[("k", "v")]),
        egress: Some(Egress::Only(strings(&["10.0.0.0/8"]))),
        public: Some(false),
        request_host: Some("localhost:${PORT}".into()),
        wait: Some(false),
    }
}

pub fn image() -> Image {
    Image {
        name: "docker.io/library/alpine:3.20".into(),
        digest: "sha256:ef".into(),
        size: 3 << 20,
        created_at: at(),
        source: Some("alpine:3.20".into()),
        layers: strings(&["sha256:01", "sha256:02"]),
        config: ImageConfig {
            env: strings(&["PATH=/bin"]),
            entrypoint: strings(&["/init"]),
            cmd: strings(&["sh"]),
            working_dir: Some("/".into()),
            user: Some("1000:1000".into()),
            exposed_ports: vec![80],
            ready_cmd: Some("true".into()),
        },
        team: "blue".into(),
    }
}

pub fn build_events() -> Vec<BuildEvent> {
    let error = ErrorBody::new("invalid", "step 2 failed").error;
    vec![
        BuildEvent::Step {
            index: 1,
            total: 2,
            text: "RUN true".into(),
            cached: false,
        },
        BuildEvent::Log {
            at: at(),
            level: LogLevel::Warn,
            message: "careful".into(),
        },
        BuildEvent::Done {
            image: Box::new(image()),
        },
        BuildEvent::Error {
            step: Some(2),
            error: error.clone(),
        },
        BuildEvent::Error { step: None, error },
    ]
}

pub fn api_key() -> ApiKey {
    ApiKey {
        id: "k1".into(),
        name: "ci".into(),
        team: "blue".into(),
        scope: Scope::Read,
        created_at: at(),
        expires_at: Some(at()),
        revoked_at: Some(at()),
        last_used_at: Some(at()),
        rate_limit: Some(10),
    }
}

pub fn operation() -> Operation {
    Operation {
        id: format!("op-{}", "a".repeat(20)),
        kind: OperationKind::Create,
        target: "abcdefghijklmnop".into(),
        state: OperationState::Failed,
        priority: 2,
        attempts: 1,
        error: Some(ErrorBody::new("internal", "no").error),
        result: Some(json!({"id": "abcdefghijklmnop"})),
        created_at: at(),
        started_at: Some(at()),
        ended_at: Some(at()),
        team: "blue".into(),
    }
}

pub fn exec_request() -> ExecRequest {
    ExecRequest {
        cmd: strings(&["cat"]),
        env: map(&[("A", "1")]),
        cwd: Some("/tmp".into()),
        stdin: Some("hello".into()),
        timeout_s: Some(5),
        label: Some("read".into()),
        user: Some("app".into()),
    }
}

pub fn exec_result() -> ExecResult {
    ExecResult {
        id: "e1".into(),
        exit_code: -1,
        stdout: "out".into(),
        stderr: "err".into(),
        duration_ms: 12,
        timed_out: true,
        truncated: true,
        stdout_dropped: 5,
        stderr_dropped: 6,
    }
}

pub fn exec_list() -> ExecList {
    ExecList {
        execs: vec![ExecRecord {
            id: "e1".into(),
            cmd: strings(&["true"]),
            label: None,
            kind: ExecKind::System,
            exit_code: None,
            stdout: String::new(),
            stderr: String::new(),
            started_at: at(),
            duration_ms: 0,
        }],
    }
}

pub fn log_list() -> LogList {
    LogList {
        lines: vec![LogLine {
            seq: 1,
            ts: at(),
            stream: LogStream::Event,
            text: "started".into(),
        }],
        next: 1,
        more: true,
        dropped: 3,
    }
}

pub fn metrics() -> SandboxMetrics {
    SandboxMetrics {
        timestamp: at(),
        cpu_count: 2.0,
        cpu_used_pct: 12.5,
        mem_used: 1 << 20,
        mem_cache: 1 << 10,
        mem_total: 1 << 30,
        disk_used: 0,
        disk_total: 1 << 31,
    }
}

pub fn snapshot_list() -> SnapshotList {
    SnapshotList {
        snapshots: vec![Snapshot {
            name: "snap".into(),
            source: "abcdefghijklmnop".into(),
            created_at: at(),
            memory: true,
            image: "python".into(),
            runtime: Runtime::Gvisor,
            receipt: receipt(),
        }],
    }
}

pub fn teams() -> Vec<(Team, CreateTeam, UpdateTeam)> {
    let quotas = Quotas {
        sandboxes: Some(10),
        cpu: Some(4.5),
        memory_mb: Some(8192),
        disk_mb: Some(1 << 16),
    };
    let team = Team {
        name: "blue".into(),
        quotas: quotas.clone(),
        rate_limit: Some(50),
        usage: TeamUsage {
            sandboxes: 1,
            cpu: 0.5,
            memory_mb: 512,
            disk_mb: 2048,
        },
        created_at: at(),
    };
    let create = CreateTeam {
        name: "blue".into(),
        quotas: quotas.clone(),
        rate_limit: Some(50),
    };
    let update = UpdateTeam {
        quotas: Some(quotas),
        rate_limit: Some(0),
    };
    let unlimited = Team {
        quotas: Quotas::default(),
        rate_limit: None,
        ..team.clone()
    };
    vec![
        (team, create, update),
        (unlimited, CreateTeam::default(), UpdateTeam::default()),
    ]
}

pub fn volume_list() -> VolumeList {
    VolumeList {
        volumes: vec![Volume {
            name: "data".into(),
            size_mb: 1024,
            created_at: at(),
            used_bytes: Some(4096),
            used_by: strings(&["abcdefghijklmnop"]),
        }],
    }
}

pub fn volume_backup() -> VolumeBackup {
    VolumeBackup {
        name: "data".into(),
        stored: "s3://bucket/volumes/data".into(),
        bytes: 1 << 20,
        backed_up_at: at(),
        took_ms: 30,
    }
}

pub fn audit_list() -> AuditList {
    AuditList {
        entries: vec![AuditEntry {
            seq: 9,
            at: at(),
            key_id: "k1".into(),
            team: "blue".into(),
            method: "POST".into(),
            path: "/v1/sandboxes".into(),
            route: "/v1/sandboxes".into(),
            target: "abcdefghijklmnop".into(),
            status: 201,
            client: "127.0.0.1".into(),
            request_id: "r1".into(),
        }],
    }
}
