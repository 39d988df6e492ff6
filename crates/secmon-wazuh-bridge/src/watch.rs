//! File notifications on the database and its journal: wazuh-db's commit touches
//! `global.db` and creates/deletes `global.db-journal` (rollback journal), so an
//! inotify watch on the directory tells the bridge to check `PRAGMA data_version`
//! at once instead of at the next poll.
//!
//! Invariant: notifications only wake the source loop; they never carry data, so a
//! lost or spurious one costs at most one cheap check (the poll is the safety net).

use std::ffi::OsString;
use std::path::Path;
use std::sync::Arc;

use futures::StreamExt;
use inotify::{Inotify, WatchMask};
use tokio::sync::Notify;

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("cannot watch {path} with inotify: {source}")]
    Inotify { path: String, source: std::io::Error },
}

/// Starts watching the directory of `db_path`; `wake` is notified when the db,
/// its `-journal` or `-wal` changes. Returns the task (it ends when the inotify
/// stream fails; the caller logs and keeps polling). `on_event` counts notifications.
pub fn spawn(
    db_path: &Path,
    wake: Arc<Notify>,
    on_event: impl Fn() + Send + 'static,
) -> Result<tokio::task::JoinHandle<()>, WatchError> {
    let dir = match db_path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => ".".into(),
    };
    let err = |source| WatchError::Inotify { path: dir.display().to_string(), source };
    let inotify = Inotify::init().map_err(err)?;
    inotify
        .watches()
        .add(
            &dir,
            WatchMask::MODIFY
                | WatchMask::CLOSE_WRITE
                | WatchMask::CREATE
                | WatchMask::DELETE
                | WatchMask::MOVED_TO
                | WatchMask::MOVED_FROM,
        )
        .map_err(err)?;
    let base: OsString = db_path.file_name().map(ToOwned::to_owned).unwrap_or_default();
    let names: Vec<OsString> = ["", "-journal", "-wal"]
        .iter()
        .map(|suffix| {
            let mut n = base.clone();
            n.push(suffix);
            n
        })
        .collect();
    let mut stream = inotify.into_event_stream([0u8; 4096]).map_err(err)?;
    Ok(tokio::spawn(async move {
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(ev) => {
                    // Events without a name concern the directory itself (or an
                    // overflow): wake too, a check is cheap.
                    if ev.name.as_ref().is_none_or(|n| names.iter().any(|m| m == n)) {
                        on_event();
                        wake.notify_one();
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "inotify stream failed; falling back to polling");
                    return;
                }
            }
        }
    }))
}
