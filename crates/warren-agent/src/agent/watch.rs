//! Directory watches over inotify: one inotify instance per watch, recursive watches that follow
//! new subdirectories, and the two ways a client consumes them (the `WatchDir` stream and the
//! polled `CreateWatcher` / `GetWatcherEvents` / `RemoveWatcher` watchers). Directories are
//! watched and scanned with the acting user's credentials, so a user sees changes only in the
//! directories it may read.

use std::collections::{HashMap, VecDeque};
use std::ffi::OsString;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use futures_util::StreamExt;
use inotify::{Event, EventMask, EventStream, Inotify, WatchDescriptor, WatchMask, Watches};
use tokio::task::JoinHandle;

use warren_agent::connect::{code, ConnectError};
use warren_agent::{EventType, FilesystemEvent, WatchRequest};

use super::as_user;
use super::entry::entry_info;
use super::fs::resolve;
use super::fs_error::{io_error, shown};
use super::users::{Accounts, Table, User};

/// Events a polled watcher keeps for its client; beyond this the oldest are dropped, so a
/// client that stopped polling cannot grow the agent without bound.
const MAX_BUFFERED: usize = 65_536;

/// Directories a scan put watches on, and with `report`, every entry it found below its root.
#[derive(Default)]
struct Scan {
    dirs: Vec<(WatchDescriptor, PathBuf)>,
    found: Vec<PathBuf>,
}

type ScanTask = Pin<Box<dyn Future<Output = Result<Scan, ConnectError>> + Send>>;

/// One live watch of a directory tree.
pub struct Watcher {
    events: EventStream<Vec<u8>>,
    watches: Watches,
    root: PathBuf,
    recursive: bool,
    include_entry: bool,
    accounts: Accounts,
    user: User,
    dirs: HashMap<i32, (WatchDescriptor, PathBuf)>,
    /// Events found while scanning a new subdirectory, delivered before the next read.
    pending: VecDeque<FilesystemEvent>,
    /// New subdirectories of a recursive watch still to scan, in the order they appeared.
    unscanned: VecDeque<PathBuf>,
    /// The scan under way. Kept here, not in a local of `next`, so that `next` can be dropped
    /// in a `select!` without losing what the scan found.
    scanning: Option<ScanTask>,
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

/// Puts a watch on `dir` and, with `recursive`, on every directory below it. Runs as the
/// acting user: a directory the user may not read is not watched.
fn scan(watches: &mut Watches, dir: &Path, recursive: bool, report: bool) -> std::io::Result<Scan> {
    let mut out = Scan::default();
    out.dirs
        .push((watches.add(dir, mask())?, dir.to_path_buf()));
    if recursive {
        scan_below(watches, dir, report, &mut out);
    }
    Ok(out)
}

fn scan_below(watches: &mut Watches, dir: &Path, report: bool, out: &mut Scan) {
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
            out.found.push(path.clone());
        }
        if is_dir {
            if let Ok(wd) = watches.add(&path, mask()) {
                out.dirs.push((wd, path.clone()));
                scan_below(watches, &path, report, out);
            }
        }
    }
}

/// Whether `dir` is on NFS, CIFS, SMB or FUSE, where inotify may miss changes made elsewhere
/// (envd refuses to watch those unless asked to).
fn on_network_mount(dir: &Path) -> Result<bool, ConnectError> {
    const NETWORK: [i64; 5] = [0x6969, 0xFF53_4D42, 0x517B, 0xFE53_4D42, 0x6573_5546];
    let fs = nix::sys::statfs::statfs(dir).map_err(|e| {
        ConnectError::new(
            code::INTERNAL,
            format!("error checking mount status of {}: {e}", shown(dir)),
        )
    })?;
    #[allow(clippy::unnecessary_cast)] // the field's type differs between targets
    let magic = fs.filesystem_type().0 as i64;
    Ok(NETWORK.contains(&magic))
}

/// The first scan of a watch: `root` must be a directory the user may watch.
fn scan_root(
    watches: &mut Watches,
    root: &Path,
    recursive: bool,
    allow_network_mounts: bool,
) -> Result<Scan, ConnectError> {
    let meta = std::fs::metadata(root).map_err(|e| io_error(&e, "cannot watch", root))?;
    if !meta.is_dir() {
        return Err(ConnectError::new(
            code::INVALID_ARGUMENT,
            format!("path {} is not a directory", shown(root)),
        ));
    }
    if !allow_network_mounts && on_network_mount(root)? {
        return Err(ConnectError::new(
            code::INVALID_ARGUMENT,
            format!("cannot watch path on network filesystem: {}", shown(root)),
        ));
    }
    // Existing entries are not news: only their watches are wanted.
    scan(watches, root, recursive, false).map_err(|e| io_error(&e, "cannot watch", root))
}

impl Watcher {
    /// Starts watching the directory `req.path` names.
    pub async fn new(
        req: &WatchRequest,
        user: &User,
        accounts: &Accounts,
    ) -> Result<Watcher, ConnectError> {
        let root = resolve(&req.path, user)?;
        let internal = |e: std::io::Error| {
            ConnectError::new(code::INTERNAL, format!("cannot set up inotify: {e}"))
        };
        let inotify = Inotify::init().map_err(internal)?;
        let watches = inotify.watches();
        let (mut scanning, dir, recursive) = (watches.clone(), root.clone(), req.recursive);
        let allow = req.allow_network_mounts;
        let first = as_user::run(user, move || {
            scan_root(&mut scanning, &dir, recursive, allow)
        })
        .await??;
        let mut watcher = Watcher {
            events: inotify
                .into_event_stream(vec![0u8; 64 << 10])
                .map_err(internal)?,
            watches,
            root,
            recursive: req.recursive,
            include_entry: req.include_entry,
            accounts: accounts.clone(),
            user: user.clone(),
            dirs: HashMap::new(),
            pending: VecDeque::new(),
            unscanned: VecDeque::new(),
            scanning: None,
        };
        watcher.merge(first);
        Ok(watcher)
    }

    /// Takes in a scan's watches, and queues a create event for each entry it found, since
    /// those appeared before the watch could see them.
    fn merge(&mut self, scan: Scan) {
        for (wd, dir) in scan.dirs {
            // The same inode (a directory moved within the tree) keeps its descriptor: update it.
            self.dirs.insert(wd.get_watch_descriptor_id(), (wd, dir));
        }
        if scan.found.is_empty() {
            return;
        }
        let table = self.include_entry.then(|| Table::load(&self.accounts));
        for path in scan.found {
            self.queue(&path, EventType::Create, table.as_ref());
        }
    }

    fn start_scan(&self, dir: PathBuf) -> ScanTask {
        let mut watches = self.watches.clone();
        let user = self.user.clone();
        Box::pin(async move {
            let scanned = as_user::run(&user, move || scan(&mut watches, &dir, true, true)).await?;
            // A directory gone or unreadable by now has nothing to watch.
            Ok(scanned.unwrap_or_default())
        })
    }

    fn queue(&mut self, path: &Path, event_type: EventType, table: Option<&Table>) {
        let name = path
            .strip_prefix(&self.root)
            .unwrap_or(path)
            .to_string_lossy()
            .into_owned();
        // Only an entry still at its path: a remove or a rename away names one that is gone
        // (a stat could find a new entry made there since).
        let carries_entry = matches!(
            event_type,
            EventType::Create | EventType::Write | EventType::Chmod
        );
        let entry = if self.include_entry && carries_entry {
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
                EventType::Create => self.unscanned.push_back(path),
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
            // A new directory's scan finishes before its create event goes out: a client that
            // acts on the event (writes into the directory) must find it watched already.
            if let Some(task) = self.scanning.as_mut() {
                let scanned = task.await;
                self.scanning = None;
                // A scan that could not run loses only that subtree's watches, not the watch.
                self.merge(scanned.unwrap_or_default());
                continue;
            }
            if let Some(dir) = self.unscanned.pop_front() {
                self.scanning = Some(self.start_scan(dir));
                continue;
            }
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
