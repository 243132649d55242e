//! When a commit is durable. The writer commits with `synchronous=OFF`
//! and hands the transaction's completions to the sync thread, which
//! `fdatasync`s `identity.db`'s WAL, then `vault.db`'s, and only then
//! answers — while the writer already runs the next transaction. A commit
//! is answered only once its frames, and every earlier frame, are on disk:
//! `synchronous=FULL`'s guarantee, pipelined. If an `fdatasync` fails, the
//! store refuses every later write until it is reopened: after a failed
//! flush the kernel may have dropped pages, and writing on would build on
//! a hole. The ordered list of syncs and why each is needed:
//! docs/reliability.md.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};

use super::conn::{identity_db, vault_db, wal_of};
use crate::writer::Completion;
use crate::StoreError;

/// Why a poisoned store refuses writes.
pub(super) const POISONED: &str = "the store could not make a write durable (fdatasync failed); \
    check the disk, then restart the vault";

/// The two WAL files, each opened once it exists (SQLite keeps a WAL while
/// any connection is open, so a handle stays valid).
pub(super) struct Wals {
    dir: PathBuf,
    paths: [PathBuf; 2],
    files: [Option<std::fs::File>; 2],
}

impl Wals {
    pub(super) fn new(dir: &Path) -> Wals {
        Wals {
            dir: dir.to_owned(),
            // `identity.db` first: a power cut between the two syncs then
            // loses the deposits of `vault.db`'s unsynced commits and keeps
            // identity rows nothing points to, which `recover` deletes as
            // the store opens. The other order would keep deposits whose
            // identity rows were lost; `recover` voids those too, but a
            // deposit stays on record, erased.
            paths: [wal_of(identity_db(dir)), wal_of(vault_db(dir))],
            files: [None, None],
        }
    }

    /// `fdatasync`s both WAL files. A WAL that does not exist yet holds no
    /// commit; when one is first opened, the directory is synced too, so
    /// its entry is as durable as its frames.
    pub(super) fn sync(&mut self) -> std::io::Result<()> {
        for (slot, path) in self.files.iter_mut().zip(&self.paths) {
            if slot.is_none() {
                match std::fs::File::open(path) {
                    Ok(f) => {
                        std::fs::File::open(&self.dir)?.sync_all()?;
                        *slot = Some(f);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                }
            }
            if let Some(f) = slot {
                f.sync_data()?;
            }
        }
        Ok(())
    }
}

/// Answers committed transactions once both WAL files are on disk, as
/// many transactions per `fdatasync` as have queued up meanwhile.
pub(super) fn sync_loop(
    mut wals: Wals,
    rx: mpsc::Receiver<Vec<Completion>>,
    poisoned: Arc<AtomicBool>,
) {
    while let Ok(first) = rx.recv() {
        let mut batches = vec![first];
        while let Ok(more) = rx.try_recv() {
            batches.push(more);
        }
        let err = if poisoned.load(Ordering::Acquire) {
            Some(StoreError::Unavailable(POISONED.into()))
        } else {
            match wals.sync() {
                Ok(()) => None,
                Err(e) => {
                    log::error!(
                        "fdatasync of the WAL failed: {e}; the store refuses writes until it is reopened"
                    );
                    poisoned.store(true, Ordering::Release);
                    Some(StoreError::Unavailable(POISONED.into()))
                }
            }
        };
        for c in batches.into_iter().flatten() {
            c(err.clone());
        }
    }
}
