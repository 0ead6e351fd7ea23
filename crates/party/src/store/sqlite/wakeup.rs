//! Wake-ups across processes: a watcher thread notices other processes' commits to the file.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::Notify;

/// How often the watcher asks SQLite whether another process committed.
pub(super) const WATCH_INTERVAL: Duration = Duration::from_millis(20);

/// Wake this process's workers when another process commits to the file: `PRAGMA
/// data_version` changes exactly then. It is a cheap read of a counter; the thread ends when
/// the store is dropped. It opens the file the store made and never creates one: a store
/// dropped and its file removed before the thread got to open it left an empty file behind.
pub(super) fn watch_other_processes(path: &Path, wakeups: std::sync::Weak<Notify>) {
    let path = path.to_path_buf();
    let _ = std::thread::Builder::new()
        .name("party-sqlite-watch".into())
        .spawn(move || {
            if wakeups.strong_count() == 0 {
                return;
            }
            let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_URI
                | OpenFlags::SQLITE_OPEN_NO_MUTEX;
            let Ok(conn) = Connection::open_with_flags(&path, flags) else {
                return;
            };
            let version = |c: &Connection| {
                c.query_row("PRAGMA data_version", [], |r| r.get::<_, i64>(0))
                    .ok()
            };
            let mut last = version(&conn);
            loop {
                std::thread::sleep(WATCH_INTERVAL);
                let Some(notify) = wakeups.upgrade() else {
                    return;
                };
                let now = version(&conn);
                if now != last {
                    last = now;
                    notify.notify_waiters();
                }
            }
        });
}
