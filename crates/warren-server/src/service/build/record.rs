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
    events: Mutex<Vec<BuildEvent>>,
    count: watch::Sender<usize>,
}

impl Build {
    pub(crate) fn new(id: String, name: String) -> Self {
        Build {
            id,
            name,
            created_at: Utc::now(),
            events: Mutex::default(),
            count: watch::channel(0).0,
        }
    }

    pub(crate) fn push(&self, event: BuildEvent) {
        let n = {
            let mut events = self.events.lock().unwrap_or_else(|p| p.into_inner());
            events.push(event);
            events.len()
        };
        self.count.send_replace(n);
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
        let events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        events.get(from..).map(<[_]>::to_vec).unwrap_or_default()
    }

    /// Wakes when events are added (its value: how many there are).
    pub fn subscribe(&self) -> watch::Receiver<usize> {
        self.count.subscribe()
    }

    /// Where it stands: the last event says.
    pub fn outcome(&self) -> Outcome {
        let events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        match events.last() {
            Some(BuildEvent::Done { image }) => Outcome::Done(image.clone()),
            Some(BuildEvent::Error { step, error }) => Outcome::Failed {
                step: *step,
                message: error.message.clone(),
            },
            _ => Outcome::Running,
        }
    }
}
