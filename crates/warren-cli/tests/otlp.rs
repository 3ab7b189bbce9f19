//! `warren serve --otlp-endpoint`: the server's spans reach an OpenTelemetry collector, here a
//! real OTLP/HTTP receiver on 127.0.0.1 decoding what it is sent with the protocol's own types.
mod common;

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode as AxumStatus;
use axum::routing::post;
use common::TestServer;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use prost::Message;
use reqwest::{Method, StatusCode};
use serde_json::json;

type Received = Arc<Mutex<Vec<ExportTraceServiceRequest>>>;

async fn collect(State(got): State<Received>, body: Bytes) -> AxumStatus {
    match ExportTraceServiceRequest::decode(body) {
        Ok(req) => {
            got.lock().unwrap_or_else(|p| p.into_inner()).push(req);
            AxumStatus::OK
        }
        Err(_) => AxumStatus::BAD_REQUEST,
    }
}

fn text(attrs: &[KeyValue], key: &str) -> Option<String> {
    attrs
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| match a.value.as_ref()?.value.as_ref()? {
            AnyValue::StringValue(s) => Some(s.clone()),
            _ => None,
        })
}

#[tokio::test(flavor = "multi_thread")]
async fn spans_reach_the_collector_with_request_ids() {
    let got: Received = Arc::default();
    let app = axum::Router::new()
        .route("/v1/traces", post(collect))
        .with_state(got.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    let endpoint = format!("http://{addr}");
    let s = TestServer::start_with(&[
        "--otlp-endpoint",
        &endpoint,
        "--otlp-service-name",
        "warren-otlp-test",
    ])
    .await;
    let r = s
        .req(Method::GET, "/v1/sandboxes")
        .header("x-request-id", "otlp-test-list")
        .send()
        .await
        .expect("list");
    assert_eq!(r.status(), StatusCode::OK);
    let sb = s
        .create(json!({"image": "busybox", "runtime": "runc"}))
        .await;
    let id = sb["id"].as_str().expect("id").to_owned();
    s.delete(&id).await;
    // A graceful stop sends what is still queued.
    s.shutdown().await;
    let got = got.lock().unwrap_or_else(|p| p.into_inner());
    assert!(!got.is_empty(), "the collector received nothing");
    let mut requests = Vec::new();
    let mut operations = Vec::new();
    for export in got.iter() {
        for rs in &export.resource_spans {
            let service = rs
                .resource
                .as_ref()
                .and_then(|r| text(&r.attributes, "service.name"));
            assert_eq!(service.as_deref(), Some("warren-otlp-test"));
            for ss in &rs.scope_spans {
                for span in &ss.spans {
                    match span.name.as_str() {
                        "request" => requests.push(span.clone()),
                        "operation" => operations.push(span.clone()),
                        _ => {}
                    }
                }
            }
        }
    }
    // The list's span carries the request id the client sent, and its route.
    let list = requests
        .iter()
        .find(|s| text(&s.attributes, "id").as_deref() == Some("otlp-test-list"))
        .unwrap_or_else(|| panic!("no span of the list among {} requests", requests.len()));
    assert_eq!(
        text(&list.attributes, "path").as_deref(),
        Some("/v1/sandboxes")
    );
    assert!(list.end_time_unix_nano >= list.start_time_unix_nano);
    // The create and the delete ran as operations, each a span of its own kind.
    let kinds: Vec<String> = operations
        .iter()
        .filter_map(|s| text(&s.attributes, "kind"))
        .collect();
    assert!(kinds.iter().any(|k| k == "create"), "{kinds:?}");
    assert!(kinds.iter().any(|k| k == "delete"), "{kinds:?}");
}
