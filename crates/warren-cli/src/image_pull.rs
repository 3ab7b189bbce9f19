//! `warren image pull REF`: progress bars per layer from the server's SSE progress stream, or
//! with `--json` the events as JSON lines and the image last.
use std::collections::HashMap;

use anyhow::{anyhow, bail, Context};
use eventsource_stream::Eventsource;
use futures::StreamExt;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use reqwest::Method;
use warren_api::image::{LayerProgress, LayerStatus, PruneResult};
use warren_api::{Image, PullEvent, PullImage};

use crate::ClientOpts;

fn short(digest: &str) -> &str {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    &hex[..hex.len().min(12)]
}

/// One bar per layer, drawn on stderr (hidden when it is not a terminal).
struct Bars {
    multi: MultiProgress,
    layers: HashMap<String, ProgressBar>,
}

impl Bars {
    fn new() -> Bars {
        Bars {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            layers: HashMap::new(),
        }
    }

    fn add(&mut self, layer: &LayerProgress) {
        let style = ProgressStyle::with_template(
            "{prefix} {msg:<11} [{bar:30}] {bytes:>10}/{total_bytes:<10} {bytes_per_sec}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        let bar = self
            .multi
            .add(ProgressBar::new(layer.total).with_style(style));
        bar.set_prefix(short(&layer.digest).to_owned());
        bar.set_message("waiting");
        self.layers.insert(layer.digest.clone(), bar);
    }

    fn update(&mut self, layer: &LayerProgress) {
        if !self.layers.contains_key(&layer.digest) {
            self.add(layer);
        }
        let Some(bar) = self.layers.get(&layer.digest) else {
            return;
        };
        bar.set_position(layer.current);
        let label = match layer.status {
            LayerStatus::Waiting => "waiting",
            LayerStatus::Downloading => "pulling",
            LayerStatus::Present => "present",
            LayerStatus::Shared => "shared",
            LayerStatus::Done => "done",
        };
        bar.set_message(label);
        if matches!(
            layer.status,
            LayerStatus::Present | LayerStatus::Shared | LayerStatus::Done
        ) {
            bar.finish();
        }
    }
}

pub async fn pull(reference: String, opts: ClientOpts) -> anyhow::Result<()> {
    let client = opts.client();
    let resp = client
        .send(
            client
                .request(Method::POST, "/v1/images/pull")
                .header(reqwest::header::ACCEPT, "text/event-stream")
                .json(&PullImage {
                    reference: reference.clone(),
                }),
        )
        .await?;
    let mut events = resp.bytes_stream().eventsource();
    let mut bars = (!opts.json).then(Bars::new);
    let started = std::time::Instant::now();
    let mut image: Option<Image> = None;
    while let Some(ev) = events.next().await {
        let ev = ev.map_err(|e| anyhow!("reading the pull's progress: {e}"))?;
        let event: PullEvent =
            serde_json::from_str(&ev.data).context("decoding a pull progress event")?;
        if opts.json && !matches!(event, PullEvent::Done { .. }) {
            println!("{}", serde_json::to_string(&event)?);
        }
        match event {
            PullEvent::Resolved {
                reference, layers, ..
            } => {
                if let Some(bars) = bars.as_mut() {
                    let _ = bars
                        .multi
                        .println(format!("pulling {reference} ({} layers)", layers.len()));
                    layers.iter().for_each(|l| bars.add(l));
                }
            }
            PullEvent::Layer(layer) => {
                if let Some(bars) = bars.as_mut() {
                    bars.update(&layer);
                }
            }
            PullEvent::Done { image: done } => {
                image = Some(*done);
                break;
            }
            PullEvent::Error { error } => {
                bail!("pulling {reference}: {} ({})", error.message, error.code)
            }
        }
    }
    let image = image.ok_or_else(|| anyhow!("the server ended the pull without a result"))?;
    if opts.json {
        println!(
            "{}",
            serde_json::to_string(&serde_json::json!({"type": "done", "image": image}))?
        );
    } else {
        if let Some(bars) = bars {
            let _ = bars.multi.clear();
        }
        println!(
            "{} {} ({:.1} MB, {} layers, {:.1}s)",
            image.name,
            image.digest,
            image.size as f64 / 1e6,
            image.layers.len(),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

pub async fn prune(build_cache: bool, opts: ClientOpts) -> anyhow::Result<()> {
    let client = opts.client();
    let path = if build_cache {
        "/v1/images/prune?build_cache=true"
    } else {
        "/v1/images/prune"
    };
    let result: PruneResult = client.json(client.request(Method::POST, path)).await?;
    if opts.json {
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else {
        for l in &result.layers_removed {
            println!("removed layer {l}");
        }
        if build_cache {
            println!("{} build cache entries cleared", result.build_cache_cleared);
        }
        println!(
            "{} layer(s) removed, {:.1} MB freed",
            result.layers_removed.len(),
            result.bytes_freed as f64 / 1e6
        );
    }
    Ok(())
}
