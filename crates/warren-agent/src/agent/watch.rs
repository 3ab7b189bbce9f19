//! Directory watches over inotify: one inotify instance per watch, recursive watches that follow
//! new subdirectories, and the two ways a client consumes them (the `WatchDir` stream and the
//! polled `CreateWatcher` / `GetWatcherEvents` / `RemoveWatcher` watchers).

use std::collections::{HashMap, VecDeque};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use futures_util::StreamExt;
use inotify::{Event, EventMask, EventStream, Inotify, WatchDescriptor, WatchMask, Watches};
use tokio::task::JoinHandle;

use warren_agent::connect::{code, ConnectError};
use warren_agent::{EventType, FilesystemEvent, WatchRequest};

use super::entry::entry_info;
use super::fs::{io_error, resolve};
use super::users::{Accounts, Table, User};

/// Events a polled watcher keeps for its client; beyond this the oldest are dropped, so a
/// client that stopped polling cannot grow the agent without bound.
const MAX_BUFFERED: usize = 65_536;

/// One live watch of a directory tree.
pub struct Watcher {
    events: EventStream<Vec<u8>>,
    watches: Watches,
    root: PathBuf,
    recursive: bool,
    include_entry: bool,
    accounts: Accounts,
    dirs: HashMap<i32, (WatchDescriptor, PathBuf)>,
    /// Events found while scanning a new subdirectory, delivered before the next read.
    pending: VecDeque<FilesystemEvent>,
}

fn mask() -> WatchMask {
    WatchMask::CREATE
        | WatchMask::MODIFY
        | WatchMask::DELETE
        | WatchMask::MOVED_FROM
        | WatchMask::MOVED_TO
        | WatchMask::ATTRIB
        | WatchMask::DONT_FOLLOW
}

impl Watcher {
    /// Starts watching the directory `req.path` names.
    pub fn new(
        req: &WatchRequest,
        user: &User,
        accounts: &Accounts,
    ) -> Result<Watcher, ConnectError> {
        let root = resolve(&req.path, user)?;
        let meta = std::fs::metadata(&root).map_err(|e| io_error(&e, "cannot watch", &root))?;
        if !meta.is_dir() {
            return Err(ConnectError::new(
                code::INVALID_ARGUMENT,
                format!("path {} is not a directory", root.display()),
            ));
        }
        let internal = |e: std::io::Error| {
            ConnectError::new(code::INTERNAL, format!("cannot set up inotify: {e}"))
        };
        let inotify = Inotify::init().map_err(internal)?;
        let watches = inotify.watches();
        let mut watcher = Watcher {
            events: inotify
                .into_event_stream(vec![0u8; 64 << 10])
                .map_err(internal)?,
            watches,
            root: root.clone(),
            recursive: req.recursive,
            include_entry: req.include_entry,
            accounts: accounts.clone(),
            dirs: HashMap::new(),
            pending: VecDeque::new(),
        };
        watcher
            .add(&root)
            .map_err(|e| io_error(&e, "cannot watch", &root))?;
        if watcher.recursive {
            // Existing entries are not news: only their watches are wanted.
            watcher.add_tree(&root, false);
        }
        Ok(watcher)
    }

    fn add(&mut self, dir: &Path) -> std::io::Result<()> {
        let wd = self.watches.add(dir, mask())?;
        // The same inode (a directory moved within the tree) keeps its descriptor: update it.
        self.dirs
            .insert(wd.get_watch_descriptor_id(), (wd, dir.to_path_buf()));
        Ok(())
    }

    /// Watches every directory below `dir`; with `report`, queues a create event for every
    /// entry found, since those appeared before the watch could see them.
    fn add_tree(&mut self, dir: &Path, report: bool) {
        let Ok(read) = std::fs::read_dir(dir) else {
            return;
        };
        let mut children: Vec<(PathBuf, bool)> = read
            .flatten()
            .map(|e| (e.path(), e.file_type().is_ok_and(|t| t.is_dir())))
            .collect();
        children.sort();
        for (path, is_dir) in children {
            if report {
                self.queue(&path, EventType::Create, None);
            }
            if is_dir && self.add(&path).is_ok() {
                self.add_tree(&path, report);
            }
        }
    }

    fn queue(&mut self, path: &Path, event_type: EventType, table: Option<&Table>) {
        let name = path
            .strip_prefix(&self.root)
            .unwrap_or(path)
            .to_string_lossy()
            .into_owned();
        let entry = if self.include_entry && event_type != EventType::Remove {
            let loaded;
            let table = match table {
                Some(t) => t,
                None => {
                    loaded = Table::load(&self.accounts);
                    &loaded
                }
            };
            entry_info(path, table).ok()
        } else {
            None
        };
        self.pending.push_back(FilesystemEvent {
            name,
            event_type,
            entry,
        });
    }

    fn translate(&mut self, ev: Event<OsString>) {
        let id = ev.wd.get_watch_descriptor_id();
        if ev.mask.contains(EventMask::IGNORED) {
            self.dirs.remove(&id);
            return;
        }
        let (Some((_, dir)), Some(name)) = (self.dirs.get(&id), ev.name.as_ref()) else {
            return;
        };
        let path = dir.join(name);
        let is_dir = ev.mask.contains(EventMask::ISDIR);
        let m = ev.mask;
        // The order inotify reports is the order things happened; map it the way fsnotify (and
        // so envd) does: a move in is a create, a move away is a rename.
        let kind = if m.intersects(EventMask::CREATE | EventMask::MOVED_TO) {
            EventType::Create
        } else if m.contains(EventMask::MODIFY) {
            EventType::Write
        } else if m.contains(EventMask::DELETE) {
            EventType::Remove
        } else if m.contains(EventMask::MOVED_FROM) {
            EventType::Rename
        } else if m.contains(EventMask::ATTRIB) {
            EventType::Chmod
        } else {
            return;
        };
        let table = self.include_entry.then(|| Table::load(&self.accounts));
        self.queue(&path, kind, table.as_ref());
        if self.recursive && is_dir {
            match kind {
                EventType::Create if self.add(&path).is_ok() => self.add_tree(&path, true),
                EventType::Rename => self.forget_tree(&path),
                _ => {}
            }
        }
    }

    /// Drops the watches of a directory moved away: events there would carry stale names.
    fn forget_tree(&mut self, dir: &Path) {
        let gone: Vec<i32> = self
            .dirs
            .iter()
            .filter(|(_, (_, p))| p.starts_with(dir))
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            if let Some((wd, _)) = self.dirs.remove(&id) {
                let _ = self.watches.remove(wd);
            }
        }
    }

    /// The next change, waiting for one.
    pub async fn next(&mut self) -> std::io::Result<FilesystemEvent> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Ok(event);
            }
            match self.events.next().await {
                Some(Ok(event)) => self.translate(event),
                Some(Err(e)) => return Err(e),
                None => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            }
        }
    }
}

struct Polled {
    events: Arc<Mutex<VecDeque<FilesystemEvent>>>,
    task: JoinHandle<()>,
}

/// The polled watchers, by id.
#[derive(Default)]
pub struct Watchers {
    next_id: AtomicU64,
    table: Mutex<HashMap<String, Polled>>,
}

impl Watchers {
    /// `CreateWatcher`: starts a watcher whose events wait for `take`.
    pub fn create(&self, mut watcher: Watcher) -> String {
        let id = format!(
            "w{}-{}",
            std::process::id(),
            self.next_id.fetch_add(1, Ordering::Relaxed)
        );
        let events = Arc::new(Mutex::new(VecDeque::new()));
        let sink = events.clone();
        let task = tokio::spawn(async move {
            while let Ok(event) = watcher.next().await {
                let mut buf = sink.lock().unwrap_or_else(PoisonError::into_inner);
                if buf.len() == MAX_BUFFERED {
                    buf.pop_front();
                }
                buf.push_back(event);
            }
        });
        self.lock().insert(id.clone(), Polled { events, task });
        id
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Polled>> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn not_found(id: &str) -> ConnectError {
        ConnectError::new(code::NOT_FOUND, format!("watcher '{id}' not found"))
    }

    /// `GetWatcherEvents`: everything since the last call, oldest first.
    pub fn take(&self, id: &str) -> Result<Vec<FilesystemEvent>, ConnectError> {
        let table = self.lock();
        let polled = table.get(id).ok_or_else(|| Self::not_found(id))?;
        let mut buf = polled.events.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(buf.drain(..).collect())
    }

    /// `RemoveWatcher`.
    pub fn remove(&self, id: &str) -> Result<(), ConnectError> {
        let polled = self.lock().remove(id).ok_or_else(|| Self::not_found(id))?;
        polled.task.abort();
        Ok(())
    }
}
