//! A build as its followers see it: the events so far (kept whole, so a late reader, E2B's
//! status poll with its offset or a second `warren image build` stream, replays them) and a
//! counter that wakes readers when one is added.
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use tokio::sync::watch;
use warren_api::build::{BuildEvent, LogLevel};
use warren_api::Image;

/// How a build ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Still running.
    Running,
    /// The image is recorded.
    Done(Box<Image>),
    /// It failed at step (1-based) `step`, or before or after the steps.
    Failed {
        /// The step.
        step: Option<usize>,
        /// Why.
        message: String,
    },
}

/// One build.
#[derive(Debug)]
pub struct Build {
    /// Its id.
    pub id: String,
    /// The image it makes.
    pub name: String,
    /// When it was asked for.
    pub created_at: DateTime<Utc>,
    /// The team that asked for it (only its keys follow it).
    pub team: String,
    events: Mutex<Events>,
    count: watch::Sender<usize>,
}

/// The events, and what was left out of them.
#[derive(Debug, Default)]
struct Events {
    list: Vec<BuildEvent>,
    /// Bytes of log messages kept.
    log_bytes: usize,
    /// Log lines not kept once [`MAX_LOG_BYTES`] was reached.
    dropped: u64,
    ended: Option<DateTime<Utc>>,
}

/// Most bytes of log lines one build keeps (a step that prints without end cannot fill the
/// server's memory): later lines are counted, and the count is logged when the build ends.
pub const MAX_LOG_BYTES: usize = 8 << 20;
/// What one kept log event costs besides its text.
const EVENT_OVERHEAD: usize = 96;
/// Longest log line kept (a longer one is cut, and marked so).
pub const MAX_LINE: usize = 8 << 10;

impl Build {
    pub(crate) fn new(id: String, name: String, team: String) -> Self {
        Build {
            id,
            name,
            team,
            created_at: Utc::now(),
            events: Mutex::default(),
            count: watch::channel(0).0,
        }
    }

    pub(crate) fn push(&self, mut event: BuildEvent) {
        let n = {
            let mut events = crate::lock(&self.events);
            match &mut event {
                BuildEvent::Log { message, .. } => {
                    if message.len() > MAX_LINE {
                        let mut cut = MAX_LINE;
                        while !message.is_char_boundary(cut) {
                            cut -= 1;
                        }
                        message.truncate(cut);
                        message.push_str(" [line cut]");
                    }
                    // An event's own keep counts too: a million one-byte lines are not free.
                    let cost = message.len() + EVENT_OVERHEAD;
                    if events.log_bytes + cost > MAX_LOG_BYTES {
                        events.dropped += 1;
                        return;
                    }
                    events.log_bytes += cost;
                }
                BuildEvent::Done { .. } | BuildEvent::Error { .. } => {
                    if events.dropped > 0 {
                        let note = BuildEvent::Log {
                            at: Utc::now(),
                            level: LogLevel::Warn,
                            message: format!(
                                "{} more lines of output were not kept (a build keeps {} MiB of its log)",
                                events.dropped,
                                MAX_LOG_BYTES >> 20
                            ),
                        };
                        events.list.push(note);
                    }
                    events.ended = Some(Utc::now());
                }
                BuildEvent::Step { .. } => {}
            }
            events.list.push(event);
            events.list.len()
        };
        self.count.send_replace(n);
    }

    /// When it ended, if it has.
    pub fn ended_at(&self) -> Option<DateTime<Utc>> {
        crate::lock(&self.events).ended
    }

    pub(crate) fn log(&self, level: LogLevel, message: impl Into<String>) {
        self.push(BuildEvent::Log {
            at: Utc::now(),
            level,
            message: message.into(),
        });
    }

    /// The events from index `from` on.
    pub fn events_from(&self, from: usize) -> Vec<BuildEvent> {
        let events = crate::lock(&self.events);
        events
            .list
            .get(from..)
            .map(<[_]>::to_vec)
            .unwrap_or_default()
    }

    /// Wakes when events are added (its value: how many there are).
    pub fn subscribe(&self) -> watch::Receiver<usize> {
        self.count.subscribe()
    }

    /// Where it stands: the last event says.
    pub fn outcome(&self) -> Outcome {
        let events = crate::lock(&self.events);
        match events.list.last() {
            Some(BuildEvent::Done { image }) => Outcome::Done(image.clone()),
            Some(BuildEvent::Error { step, error }) => Outcome::Failed {
                step: *step,
                message: error.message.clone(),
            },
            _ => Outcome::Running,
        }
    }
}
