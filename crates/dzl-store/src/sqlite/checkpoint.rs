//! The checkpointer: a thread of its own that copies WAL frames into the
//! database files, PASSIVE, so it never waits for nor blocks the writer,
//! and syncs each database file after a round that copied into it. Under
//! continuous writes a PASSIVE checkpoint never reaches the WAL's end, so
//! the WAL would grow without bound; once a WAL is long, the checkpointer
//! asks the writer to start it over between two transactions
//! ([`restart_wal`]), when only the frames appended since this round are
//! left to copy. The writer's own automatic checkpoints are off, so
//! copying never lands inside a commit. Figures: docs/performance.md.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use rusqlite::Connection;

use super::conn::{identity_db, vault_db};

/// How soon the checkpointer runs again after a round that copied frames:
/// short rounds keep each database file's sync short, and the WALs' own
/// syncs wait behind it on the disk.
pub(super) const CHECKPOINT_BUSY: Duration = Duration::from_millis(10);

/// How soon it runs again after a round that found nothing to copy: an
/// idle vault is not woken a hundred times a second.
pub(super) const CHECKPOINT_IDLE: Duration = Duration::from_millis(250);

/// WAL frames (of 4 KiB pages) past which a WAL is started over (128 MiB).
/// Starting over holds the writer for a few milliseconds, so it should be
/// rare; a crash leaves at most about this much WAL to recover at open.
pub(super) const WAL_RESTART_FRAMES: i64 = 32_768;

/// Frames a round may leave uncopied and still call for a restart.
pub(super) const RESTART_LEFT_FRAMES: i64 = 1_024;

/// The two attached databases, in the order of [`Restarts`]' flags and of
/// the checkpointer's [`DbFile`]s.
pub(super) const SCHEMAS: [&str; 2] = ["main", "ident"];

/// The WALs the checkpointer has found long and copied, for the writer to
/// start over between two of its transactions ([`Round::wants_restart`]).
#[derive(Default)]
pub(super) struct Restarts(pub(super) [AtomicBool; 2]);

/// Checkpoints both WALs until told to stop.
pub(super) fn checkpoint_loop(
    conn: Connection,
    stop: mpsc::Receiver<()>,
    restarts: Arc<Restarts>,
    dir: PathBuf,
) {
    let mut files = [DbFile::new(vault_db(&dir)), DbFile::new(identity_db(&dir))];
    let mut wait = CHECKPOINT_IDLE;
    loop {
        match stop.recv_timeout(wait) {
            Err(mpsc::RecvTimeoutError::Timeout) => {
                wait = CHECKPOINT_IDLE;
                for ((schema, restart), file) in SCHEMAS.iter().zip(&restarts.0).zip(&mut files) {
                    match checkpoint(&conn, schema) {
                        Ok(round) => {
                            if file.sync_after(&round) {
                                wait = CHECKPOINT_BUSY;
                            }
                            if round.wants_restart() {
                                restart.store(true, Ordering::Release);
                            }
                        }
                        Err(e) => {
                            log::warn!("WAL checkpoint of {schema} failed (will retry): {e}")
                        }
                    }
                }
            }
            _ => return,
        }
    }
}

/// What a PASSIVE round found: frames in the WAL, and frames copied into the
/// database file so far.
pub(super) struct Round {
    pub(super) frames: i64,
    pub(super) copied: i64,
}

impl Round {
    /// Whether the WAL should start over now: it is long, and this round
    /// copied nearly all of it (a reader's snapshot may hold a few frames
    /// back), so the writer's RESTART has little left to copy. Past twice
    /// the length it starts over regardless, and the writer waits for what
    /// is left: the WAL's length stays bounded.
    pub(super) fn wants_restart(&self) -> bool {
        self.frames > 2 * WAL_RESTART_FRAMES
            || (self.frames > WAL_RESTART_FRAMES
                && self.frames - self.copied <= RESTART_LEFT_FRAMES)
    }
}

/// One PASSIVE checkpoint of `schema`'s WAL.
pub(super) fn checkpoint(conn: &Connection, schema: &str) -> rusqlite::Result<Round> {
    conn.query_row(
        &format!("PRAGMA {schema}.wal_checkpoint(PASSIVE)"),
        [],
        |r| {
            Ok(Round {
                frames: r.get(1)?,
                copied: r.get(2)?,
            })
        },
    )
}

/// A database file the checkpointer syncs after its rounds. SQLite syncs a
/// database file only once a round has copied the whole WAL, which under
/// continuous writes never happens before the writer's RESTART, and that
/// one sync would then flush everything copied since, while the writer
/// waits. Synced here instead, off the writer, after each round that
/// copied frames.
pub(super) struct DbFile {
    path: PathBuf,
    file: Option<std::fs::File>,
    pub(super) synced: i64,
}

impl DbFile {
    pub(super) fn new(path: PathBuf) -> DbFile {
        DbFile {
            path,
            file: None,
            synced: 0,
        }
    }

    /// Syncs the file if `round` copied frames since the last sync. True
    /// if it had copied any (whether or not the sync succeeded).
    pub(super) fn sync_after(&mut self, round: &Round) -> bool {
        if round.copied == self.synced {
            return false;
        }
        let file = match &self.file {
            Some(f) => f,
            None => match std::fs::File::open(&self.path) {
                Ok(f) => self.file.insert(f),
                Err(e) => {
                    log::warn!("opening {} to sync it: {e}", self.path.display());
                    return true;
                }
            },
        };
        match file.sync_data() {
            Ok(()) => self.synced = round.copied,
            Err(e) => log::warn!("syncing {}: {e}", self.path.display()),
        }
        true
    }
}

/// Starts `schema`'s WAL over, on the writer's connection between two
/// transactions: a RESTART checkpoint copies the few frames the last
/// PASSIVE round left, syncs the database file (synchronous is FULL for
/// it, as on the checkpointer's connection), and waits for readers; the
/// next transaction then writes from the start of the WAL. False if it
/// could not (the checkpointer was mid-round, or an error, logged): the WAL
/// stays as it was, to be started over later.
pub(super) fn restart_wal(conn: &Connection, schema: &str) -> bool {
    let restarted = conn
        .execute_batch(&format!("PRAGMA {schema}.synchronous = FULL"))
        .and_then(|()| {
            conn.query_row(
                &format!("PRAGMA {schema}.wal_checkpoint(RESTART)"),
                [],
                |r| r.get::<_, i64>(0),
            )
        });
    if let Err(e) = conn.execute_batch(&format!("PRAGMA {schema}.synchronous = OFF")) {
        log::warn!("setting synchronous = OFF on {schema} again failed: {e}");
    }
    match restarted {
        Ok(busy) => busy == 0,
        Err(e) => {
            log::warn!("starting the WAL of {schema} over failed (will retry): {e}");
            false
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::sqlite::{conn::open_connection, schema};
    use rusqlite::params;

    #[test]
    fn a_database_file_is_synced_once_per_round_that_copied_frames() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        std::fs::write(&path, b"pages").unwrap();
        let mut file = DbFile::new(path);
        let round = |copied| Round {
            frames: 100,
            copied,
        };
        assert!(!file.sync_after(&round(0)), "nothing copied yet");
        assert!(
            file.sync_after(&round(40)),
            "frames copied: the next round comes soon"
        );
        assert_eq!(file.synced, 40);
        assert!(
            !file.sync_after(&round(40)),
            "the same frames are not synced twice"
        );
        // After the WAL starts over, its frames are counted from zero.
        assert!(file.sync_after(&round(3)));
        assert_eq!(file.synced, 3);
    }

    #[test]
    fn a_long_wal_starts_over_once_nearly_copied_or_once_twice_too_long() {
        let long = WAL_RESTART_FRAMES + 1;
        let cases = [
            (WAL_RESTART_FRAMES, WAL_RESTART_FRAMES, false),
            (long, long, true),
            (long, long - RESTART_LEFT_FRAMES, true),
            (long, long - RESTART_LEFT_FRAMES - 1, false),
            (2 * WAL_RESTART_FRAMES, 0, false),
            (2 * WAL_RESTART_FRAMES + 1, 0, true),
        ];
        for (frames, copied, restart) in cases {
            assert_eq!(
                Round { frames, copied }.wants_restart(),
                restart,
                "{frames} frames, {copied} copied"
            );
        }
    }

    #[test]
    fn the_writer_starts_a_wal_over_and_stays_unsynchronised() {
        let dir = tempfile::tempdir().unwrap();
        let writer = open_connection(dir.path()).unwrap();
        schema::migrate(&writer).unwrap();
        writer
            .execute_batch("PRAGMA main.wal_autocheckpoint = 0; PRAGMA main.synchronous = OFF;")
            .unwrap();
        let checkpointer = open_connection(dir.path()).unwrap();
        let frames = |w: &Connection| {
            for i in 0..200 {
                w.execute(
                    "INSERT INTO meta (key, value) VALUES (?1, ?2)",
                    params![format!("k{i:04}-{}", "x".repeat(900)), i],
                )
                .unwrap();
            }
            let round = checkpoint(&checkpointer, "main").unwrap();
            assert_eq!(round.copied, round.frames, "nothing reads: all copied");
            round.frames
        };
        let before = frames(&writer);
        assert!(before > 200, "each commit appends frames: {before}");

        assert!(restart_wal(&writer, "main"));
        let synchronous: i64 = writer
            .query_row("PRAGMA main.synchronous", [], |r| r.get(0))
            .unwrap();
        assert_eq!(synchronous, 0, "the writer's commits stay unsynchronised");
        writer
            .execute("INSERT INTO meta (key, value) VALUES ('after', 1)", [])
            .unwrap();
        let after = checkpoint(&checkpointer, "main").unwrap().frames;
        assert!(
            (1..=4).contains(&after),
            "the WAL started over: {after} frames after one small commit, {before} before"
        );
    }
}
