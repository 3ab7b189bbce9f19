//! The binary's tracing: log lines on stderr (`WARREN_LOG`), and for `warren serve
//! --otlp-endpoint` the server's spans (each request, each operation, and what they did)
//! sent to an OpenTelemetry collector over OTLP/HTTP.
use anyhow::Context;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing::Level;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Where spans go.
pub struct Otlp {
    /// The collector's OTLP/HTTP base URL (`http://HOST:4318`); spans go to `/v1/traces`.
    pub endpoint: String,
    /// `service.name` of the spans.
    pub service_name: String,
}

/// Flushes what is still queued for the collector when dropped (at the server's end).
pub struct Guard(Option<SdkTracerProvider>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            if let Err(e) = p.shutdown() {
                eprintln!("warren: sending the last spans to the collector: {e}");
            }
        }
    }
}

/// Sets the process's tracing up.
pub fn init(otlp: Option<Otlp>) -> anyhow::Result<Guard> {
    let log = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        // Colours only on a terminal: a log file keeps plain text to grep.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_filter(
            EnvFilter::try_from_env("WARREN_LOG").unwrap_or_else(|_| EnvFilter::new("warn")),
        );
    let Some(otlp) = otlp else {
        tracing_subscriber::registry().with(log).init();
        return Ok(Guard(None));
    };
    let url = format!("{}/v1/traces", otlp.endpoint.trim_end_matches('/'));
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(&url)
        .with_timeout(std::time::Duration::from_secs(10))
        .with_headers(Default::default())
        .build()
        .with_context(|| format!("setting up the OTLP exporter to {url}"))?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            Resource::builder()
                .with_service_name(otlp.service_name)
                .build(),
        )
        .build();
    // Warren's own spans at info and above: requests, operations, their steps.
    let spans = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("warren"))
        .with_filter(
            Targets::new()
                .with_target("warren_server", Level::INFO)
                .with_target("warren_local", Level::INFO)
                .with_target("warren_store", Level::INFO)
                .with_target("tower_http", Level::INFO),
        );
    tracing_subscriber::registry().with(log).with(spans).init();
    Ok(Guard(Some(provider)))
}
