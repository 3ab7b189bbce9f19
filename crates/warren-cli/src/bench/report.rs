//! The numbers of `warren bench`: percentiles, the targets of the issue, the table and JSON.
use std::time::Duration;

use serde::Serialize;
use warren_api::Runtime;

/// Create p50 may be at most this many times the raw runtime's `run` p50.
pub const CREATE_MAX_RATIO: f64 = 1.5;

/// Exec round trip p50 target, in ms.
fn exec_target_ms(rt: Runtime) -> f64 {
    match rt {
        Runtime::Runc => 3.0,
        // Issue #13's, for a current gVisor (was 15 ms).
        Runtime::Gvisor => 5.0,
    }
}

/// Summary of one series of timings, in milliseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Stats {
    /// Timed samples (warm-up excluded).
    pub n: usize,
    /// Median (nearest rank).
    pub p50_ms: f64,
    /// 95th percentile (nearest rank).
    pub p95_ms: f64,
    /// 99th percentile (nearest rank).
    pub p99_ms: f64,
    /// Fastest.
    pub min_ms: f64,
    /// Slowest.
    pub max_ms: f64,
}

/// The nearest-rank percentile `p` (0-100] of `sorted`.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

impl Stats {
    /// Summarises `samples`.
    pub fn of(samples: &[Duration]) -> Stats {
        let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
        ms.sort_by(f64::total_cmp);
        Stats {
            n: ms.len(),
            p50_ms: percentile(&ms, 50.0),
            p95_ms: percentile(&ms, 95.0),
            p99_ms: percentile(&ms, 99.0),
            min_ms: ms.first().copied().unwrap_or(f64::NAN),
            max_ms: ms.last().copied().unwrap_or(f64::NAN),
        }
    }
}

/// What a row measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Measure {
    /// `POST /v1/sandboxes` until running, against the raw runtime's `run` of `true`.
    Create,
    /// `POST /v1/sandboxes/{id}/exec` of `true`, against the raw runtime's `exec`.
    Exec,
}

/// One line of the table.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// What is measured.
    pub measure: Measure,
    /// Under which runtime.
    pub runtime: Runtime,
    /// Through Warren's API.
    pub warren: Stats,
    /// The raw command it is compared with (`crun run`, `runsc exec`, ...).
    pub raw_command: &'static str,
    /// That command's timings.
    pub raw: Stats,
    /// Warren p50 / raw p50.
    pub ratio: f64,
    /// The target, in words.
    pub target: String,
    /// Whether Warren's p50 meets it.
    pub ok: bool,
}

impl Row {
    /// A row, with its ratio and verdict worked out.
    pub fn new(
        measure: Measure,
        runtime: Runtime,
        warren: Stats,
        raw_command: &'static str,
        raw: Stats,
    ) -> Row {
        let ratio = warren.p50_ms / raw.p50_ms;
        let (target, ok) = match measure {
            Measure::Create => (
                format!("p50 <= {CREATE_MAX_RATIO}x raw p50"),
                ratio <= CREATE_MAX_RATIO,
            ),
            Measure::Exec => {
                let t = exec_target_ms(runtime);
                (format!("p50 <= {t} ms"), warren.p50_ms <= t)
            }
        };
        Row {
            measure,
            runtime,
            warren,
            raw_command,
            raw,
            ratio,
            target,
            ok,
        }
    }

    /// What the row measures, in words.
    pub fn measure_label(&self) -> &'static str {
        match self.measure {
            Measure::Create => "create → running",
            Measure::Exec => "exec round trip (API)",
        }
    }

    /// The target, short.
    pub fn target_cell(&self) -> String {
        match self.measure {
            Measure::Create => format!("≤{CREATE_MAX_RATIO}× raw"),
            Measure::Exec => format!("≤{} ms", exec_target_ms(self.runtime)),
        }
    }
}

/// Everything one run of `warren bench` found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The image every measurement used.
    pub image: &'static str,
    /// The root filesystem the raw runtimes ran on.
    pub raw_rootfs: String,
    /// CPUs of this host.
    pub cores: usize,
    /// The kernel's `rcu_expedited` during the run (raw and Warren alike).
    pub rcu_expedited: bool,
    /// Whether the cgroup2 hierarchy had `favordynmods` during the run (raw and Warren alike).
    pub favordynmods: bool,
    /// Timed creates (and raw runs) per runtime.
    pub iterations: u32,
    /// Timed exec round trips per runtime.
    pub exec_iterations: u32,
    /// The results.
    pub rows: Vec<Row>,
}

/// What each figure of the table includes.
const NOTES: [&str; 14] = [
    "create → running: POST /v1/sandboxes (wait) until its 201 answer, client-side: database",
    "  records, overlay rootfs, network namespace + veth + addresses, bundle, `run --detach`, then",
    "  polling until the in-sandbox agent answers. Deletes are untimed; one warm-up create first.",
    "crun run / runsc run: `crun run` / `runsc --network=none --platform=systrap run` of /bin/true",
    "  in the foreground on a `crun spec` bundle of the image's busybox tree: create + start + exit",
    "  + delete in one process; fresh pid/ipc/uts/mount/network namespaces (the network one empty:",
    "  no veth, no addresses), read-only root (no overlay), no resource limits, no agent.",
    "exec round trip (API): POST /v1/sandboxes/{id}/exec {\"cmd\":[\"true\"]}, JSON answer, one",
    "  keep-alive connection: HTTP + auth + the agent's spawn of `true` in the sandbox and its",
    "  answer; one sandbox per runtime, after one warm-up exec.",
    "crun exec / runsc exec: `crun exec` / `runsc exec` of /bin/true into a detached container of",
    "  the same bundle running `sleep`, timed from spawning the runtime's CLI to its exit.",
    "ratio: Warren p50 / raw p50. Targets (p50): create ≤1.5× the raw run; exec ≤3 ms under runc,",
    "  ≤5 ms under gvisor.",
];

/// Milliseconds with 2 decimals below 100 ms, 1 above.
pub fn ms(v: f64) -> String {
    if v < 100.0 {
        format!("{v:.2} ms")
    } else {
        format!("{v:.1} ms")
    }
}

impl Report {
    /// The human table, with footnotes saying what each figure includes.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let raw_exec_n: Vec<String> = self
            .rows
            .iter()
            .filter(|r| r.measure == Measure::Exec)
            .map(|r| format!("{} {}", r.raw_command, r.raw.n))
            .collect();
        out.push_str(&format!(
            "warren bench — busybox, N={} creates, M={} execs (raw: {}), {} cores, rcu_expedited={}, cgroup favordynmods={}\n",
            self.iterations,
            self.exec_iterations,
            if raw_exec_n.is_empty() {
                "-".to_owned()
            } else {
                raw_exec_n.join(", ")
            },
            self.cores,
            u8::from(self.rcu_expedited),
            u8::from(self.favordynmods)
        ));
        let line = |c: [&str; 10]| {
            format!(
                "{:<22} {:<7} {:>10} {:>10}  {:<11} {:>10} {:>10} {:>7}  {:<10} {}\n",
                c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8], c[9]
            )
        };
        out.push_str(&line([
            "measure", "runtime", "p50", "p95", "raw", "raw p50", "raw p95", "ratio", "target",
            "result",
        ]));
        for r in &self.rows {
            out.push_str(&line([
                r.measure_label(),
                r.runtime.as_str(),
                &ms(r.warren.p50_ms),
                &ms(r.warren.p95_ms),
                r.raw_command,
                &ms(r.raw.p50_ms),
                &ms(r.raw.p95_ms),
                &format!("{:.2}x", r.ratio),
                &r.target_cell(),
                if r.ok { "ok" } else { "MISS" },
            ]));
        }
        out.push('\n');
        for note in NOTES {
            out.push_str(note);
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let samples: Vec<Duration> = (1..=20).map(Duration::from_millis).collect();
        let s = Stats::of(&samples);
        assert_eq!(s.n, 20);
        assert!((s.p50_ms - 10.0).abs() < 1e-9);
        assert!((s.p95_ms - 19.0).abs() < 1e-9);
        let one = Stats::of(&[Duration::from_millis(7)]);
        assert!((one.p50_ms - 7.0).abs() < 1e-9 && (one.p95_ms - 7.0).abs() < 1e-9);
        assert!(Stats::of(&[]).p50_ms.is_nan());
    }

    #[test]
    fn verdicts() {
        let s = |ms: u64| Stats::of(&[Duration::from_millis(ms)]);
        assert!(Row::new(Measure::Create, Runtime::Runc, s(15), "crun run", s(10)).ok);
        assert!(!Row::new(Measure::Create, Runtime::Runc, s(16), "crun run", s(10)).ok);
        assert!(Row::new(Measure::Exec, Runtime::Runc, s(3), "crun exec", s(8)).ok);
        assert!(!Row::new(Measure::Exec, Runtime::Gvisor, s(16), "runsc exec", s(35)).ok);
    }
}
