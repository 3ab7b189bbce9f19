//! `GET /metrics`: what the server counts, in Prometheus' text format. Counters and
//! histograms are kept as things happen; sandbox counts, the store's round trip and the host's
//! headroom are read when scraped.
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

/// A store call, by its method's name (`get_sandbox`): a label taken without allocating.
#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct StoreCall {
    /// The method.
    pub call: &'static str,
}

/// Histograms of store calls, by call.
pub type StoreSeconds = Family<StoreCall, Histogram, fn() -> Histogram>;

/// Seconds from 1 ms to ~70 min, doubling (pulls and builds take minutes).
fn latency_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.001, 2.0, 23)
}

fn new_histogram() -> Histogram {
    Histogram::new(latency_buckets())
}

/// Seconds from 50 µs to ~26 s, doubling: store calls take well under a millisecond on
/// SQLite and a network round trip or more on PostgreSQL.
fn new_store_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.00005, 2.0, 20))
}

/// The server's metrics.
pub struct Metrics {
    registry: Registry,
    operations: Family<Labels, Counter>,
    operation_seconds: Family<Labels, Histogram, fn() -> Histogram>,
    exec_seconds: Histogram,
    sandboxes: Family<Labels, Gauge>,
    store_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    store_calls: StoreSeconds,
    memory_available: Gauge,
    disk_available: Gauge,
    cpus: Gauge,
    load1: Gauge<f64, std::sync::atomic::AtomicU64>,
    // Preview proxy answers by target (app port, agent) and status class (1xx..5xx), and the
    // bytes of their bodies: handles taken once, so a proxied request costs an atomic add.
    proxied: [[Counter; 5]; 2],
    proxied_bytes: [Counter; 2],
    // One scrape at a time refreshes the read-at-scrape values.
    scraping: Mutex<()>,
}

/// What a proxied request reached.
#[derive(Debug, Clone, Copy)]
pub enum Proxied {
    /// A port of the sandbox's apps.
    App = 0,
    /// The sandbox's agent (E2B's SDKs' own traffic).
    Agent = 1,
}

const PROXIED: [&str; 2] = ["app", "agent"];

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("warren");
        let operations = Family::<Labels, Counter>::default();
        let operation_seconds =
            Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(new_histogram);
        let exec_seconds = new_histogram();
        let sandboxes = Family::<Labels, Gauge>::default();
        let store_seconds = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        let (memory_available, disk_available, cpus) =
            (Gauge::default(), Gauge::default(), Gauge::default());
        let load1 = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "operations",
            "Operations ended, by kind and outcome (succeeded, failed)",
            operations.clone(),
        );
        registry.register(
            "operation_duration_seconds",
            "How long operations took from queued to ended, by kind (create, pause, ...)",
            operation_seconds.clone(),
        );
        registry.register(
            "exec_duration_seconds",
            "How long plain execs took, from the call to the command's exit",
            exec_seconds.clone(),
        );
        registry.register(
            "sandboxes",
            "Sandboxes recorded now, by state and runtime",
            sandboxes.clone(),
        );
        let store_calls = StoreSeconds::new_with_constructor(new_store_histogram);
        registry.register(
            "store_call_duration_seconds",
            "How long the server's calls to its database took, by call (get_sandbox, ...)",
            store_calls.clone(),
        );
        registry.register(
            "store_round_trip_seconds",
            "One trivial query to the database, timed at the scrape",
            store_seconds.clone(),
        );
        registry.register(
            "host_memory_available_bytes",
            "The host's MemAvailable",
            memory_available.clone(),
        );
        registry.register(
            "host_disk_available_bytes",
            "Free space of the filesystem holding the data directory",
            disk_available.clone(),
        );
        registry.register("host_cpus", "CPUs of the host", cpus.clone());
        let requests = Family::<Labels, Counter>::default();
        let bytes = Family::<Labels, Counter>::default();
        registry.register(
            "proxy_requests",
            "Requests the preview proxy answered, by target (app, agent) and status class",
            requests.clone(),
        );
        registry.register(
            "proxy_response_bytes",
            "Bytes of the bodies the preview proxy answered with, by target",
            bytes.clone(),
        );
        let proxied = PROXIED.map(|target| {
            ["1xx", "2xx", "3xx", "4xx", "5xx"].map(|class| {
                requests
                    .get_or_create(&vec![("target", target.into()), ("class", class.into())])
                    .clone()
            })
        });
        let proxied_bytes = PROXIED.map(|target| {
            bytes
                .get_or_create(&vec![("target", target.into())])
                .clone()
        });
        registry.register(
            "host_load1",
            "The host's one-minute load average",
            load1.clone(),
        );
        Metrics {
            registry,
            operations,
            operation_seconds,
            exec_seconds,
            sandboxes,
            store_seconds,
            store_calls,
            memory_available,
            disk_available,
            cpus,
            load1,
            proxied,
            proxied_bytes,
            scraping: Mutex::default(),
        }
    }
}

impl Metrics {
    /// An operation ended.
    pub fn operation_ended(&self, kind: &str, succeeded: bool, took: Duration) {
        let outcome = if succeeded { "succeeded" } else { "failed" };
        self.operations
            .get_or_create(&vec![
                ("kind", kind.to_owned()),
                ("outcome", outcome.into()),
            ])
            .inc();
        self.operation_seconds
            .get_or_create(&vec![("kind", kind.to_owned())])
            .observe(took.as_secs_f64());
    }

    /// The preview proxy answered `status` for `target`; the counter its body's bytes go to.
    pub fn proxied(&self, target: Proxied, status: u16) -> Counter {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.proxied[target as usize][class].inc();
        self.proxied_bytes[target as usize].clone()
    }

    /// The histograms a [`crate::timed_store::TimedStore`] times into.
    pub fn store_calls(&self) -> StoreSeconds {
        self.store_calls.clone()
    }

    /// A plain exec answered.
    pub fn exec_ended(&self, took: Duration) {
        self.exec_seconds.observe(took.as_secs_f64());
    }

    /// The text a scrape answers, after reading what is read at scrapes.
    pub async fn scrape(
        &self,
        store: &dyn warren_store::Store,
        data_dir: &std::path::Path,
    ) -> Result<String, crate::error::ApiError> {
        let counts = store.count_sandboxes().await?;
        let t = Instant::now();
        store.ping().await?;
        let round_trip = t.elapsed();
        let _one = crate::lock(&self.scraping);
        self.sandboxes.clear();
        for (state, runtime, n) in counts {
            self.sandboxes
                .get_or_create(&vec![("state", state), ("runtime", runtime)])
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        self.store_seconds.set(round_trip.as_secs_f64());
        let available_kib = crate::meminfo_kib("MemAvailable").unwrap_or(0);
        self.memory_available
            .set(i64::try_from(available_kib * 1024).unwrap_or(i64::MAX));
        if let Ok(fs) = nix::sys::statvfs::statvfs(data_dir) {
            let free = fs.blocks_available() * fs.fragment_size();
            self.disk_available
                .set(i64::try_from(free).unwrap_or(i64::MAX));
        }
        self.cpus.set(
            std::thread::available_parallelism()
                .map(|n| n.get() as i64)
                .unwrap_or(1),
        );
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        self.load1.set(
            load.split_whitespace()
                .next()
                .and_then(|l| l.parse().ok())
                .unwrap_or(0.0),
        );
        let mut out = String::new();
        encode(&mut out, &self.registry)
            .map_err(|e| crate::error::ApiError::Internal(format!("encoding metrics: {e}")))?;
        Ok(out)
    }
}
