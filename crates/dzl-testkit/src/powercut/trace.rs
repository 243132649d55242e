//! The trace `tracefs.c` writes, and the files a power cut at its end
//! leaves: what was flushed, and (in [`CutMode::Reordered`]) a random part
//! of what was not.
//!
//! The model is the one of CrashMonkey and ALICE: a write reaches the disk
//! for sure only once an `fsync`/`fdatasync` of its file has returned; a
//! file's creation, removal or renaming only once an `fsync` of its
//! directory has. Anything not yet flushed may be lost — all of it, or any
//! part of it: the disk writes back pages in any order.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::Context as _;
use rand::Rng;
use serde::Serialize;

/// The size of the pieces unflushed writes are cut into: the page the
/// kernel writes back, the unit a disk may or may not have stored.
pub const PIECE: u64 = 4096;

const MAGIC: u32 = 0x4350_5a44;
const HEADER: usize = 24;

/// One change the traced process made, in the order it was recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op<'a> {
    /// `data` written at `offset` of `name`.
    Write {
        /// The file.
        name: &'a str,
        /// Where.
        offset: u64,
        /// What.
        data: &'a [u8],
    },
    /// `name` cut (or grown) to `len` bytes.
    Truncate {
        /// The file.
        name: &'a str,
        /// Its new length.
        len: u64,
    },
    /// An `fsync` or `fdatasync` of `name` returned.
    Sync {
        /// The file.
        name: &'a str,
    },
    /// An `fsync` of the directory returned.
    DirSync,
    /// `name` was created.
    Create {
        /// The file.
        name: &'a str,
    },
    /// `name` was removed.
    Unlink {
        /// The file.
        name: &'a str,
    },
    /// `from` was renamed to `to`.
    Rename {
        /// The old name.
        from: &'a str,
        /// The new name.
        to: &'a str,
    },
    /// The harness armed the sync counter (the server was ready).
    Armed,
    /// A change the library could not trace (a writable shared mapping, a
    /// rename across the directory's boundary).
    Untraceable {
        /// The file.
        name: &'a str,
        /// What was done.
        what: &'a str,
    },
}

/// A parsed trace.
#[derive(Debug, Default)]
pub struct Trace<'a> {
    /// The changes, in order.
    pub ops: Vec<Op<'a>>,
    /// Whether the last record was cut short by the kill (and left out).
    pub torn_tail: bool,
}

fn str_at(bytes: &[u8]) -> anyhow::Result<&str> {
    std::str::from_utf8(bytes).context("a file name in the trace is not UTF-8")
}

/// Parses a trace. A record cut short at the end is the kill's doing and
/// is left out; anything else malformed is an error.
pub fn parse(bytes: &[u8]) -> anyhow::Result<Trace<'_>> {
    let mut trace = Trace::default();
    let mut at = 0usize;
    while at < bytes.len() {
        let Some(h) = bytes.get(at..at + HEADER) else {
            trace.torn_tail = true;
            break;
        };
        let word = |i: usize| -> [u8; 8] {
            let mut w = [0u8; 8];
            w.copy_from_slice(&h[i..i + 8]);
            w
        };
        let magic = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
        anyhow::ensure!(magic == MAGIC, "trace record at byte {at} has no magic");
        let (kind, n1, n2) = (h[4], h[5] as usize, h[6] as usize);
        let offset = u64::from_le_bytes(word(8));
        let len = u64::from_le_bytes(word(16));
        let data_len = if kind == 1 { len as usize } else { 0 };
        let end = at + HEADER + n1 + n2 + data_len;
        if end > bytes.len() {
            trace.torn_tail = true;
            break;
        }
        let body = &bytes[at + HEADER..end];
        let name = str_at(&body[..n1])?;
        let name2 = str_at(&body[n1..n1 + n2])?;
        let data = &body[n1 + n2..];
        trace.ops.push(match kind {
            1 => Op::Write { name, offset, data },
            2 => Op::Truncate { name, len: offset },
            3 => Op::Sync { name },
            4 => Op::DirSync,
            5 => Op::Create { name },
            6 => Op::Unlink { name },
            7 => Op::Rename {
                from: name,
                to: name2,
            },
            8 => Op::Armed,
            9 => Op::Untraceable { name, what: name2 },
            k => anyhow::bail!("trace record at byte {at} has unknown kind {k}"),
        });
        at = end;
    }
    Ok(trace)
}

/// The regular files of a directory, by name, with their contents. SQLite's
/// `-shm` files are never among them: a power cut loses them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Files(pub BTreeMap<String, Vec<u8>>);

impl Files {
    /// Reads the regular files of `dir` (not the `-shm` files).
    pub fn read(dir: &Path) -> anyhow::Result<Files> {
        let mut files = BTreeMap::new();
        for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
            let e = e?;
            if !e.file_type()?.is_file() {
                continue;
            }
            let name = e
                .file_name()
                .into_string()
                .map_err(|n| anyhow::anyhow!("a file name that is not UTF-8: {n:?}"))?;
            if name.ends_with("-shm") {
                continue;
            }
            files.insert(name, std::fs::read(e.path())?);
        }
        Ok(Files(files))
    }

    /// Makes `dir` hold exactly these files: every other regular file in it
    /// (`-shm` included) is removed.
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            if e.file_type()?.is_file() {
                std::fs::remove_file(e.path())?;
            }
        }
        for (name, bytes) in &self.0 {
            std::fs::write(dir.join(name), bytes)
                .with_context(|| format!("writing {}", dir.join(name).display()))?;
        }
        Ok(())
    }

    /// Total bytes.
    pub fn bytes(&self) -> u64 {
        self.0.values().map(|v| v.len() as u64).sum()
    }
}

/// What a power cut keeps of what was not flushed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CutMode {
    /// Nothing: every file as it was at its last flush, the directory as
    /// at its last flush.
    Synced,
    /// A random part: each unflushed write, cut into [`PIECE`]-byte pieces
    /// at page boundaries, reached the disk or not, each piece on its own
    /// (in order, so a later piece of the same page wins); each unflushed
    /// truncation likewise; and a random prefix of the unflushed changes to
    /// the directory.
    Reordered,
}

/// How to read a trace.
#[derive(Debug, Clone, Copy)]
pub struct CutOptions {
    /// What is kept of unflushed changes.
    pub mode: CutMode,
    /// Flushes of files whose name ends so make nothing durable: the model
    /// of a write path that answers before its WAL is on disk, to show the
    /// harness catches one (`Some("-wal")`).
    pub ignore_syncs_of: Option<&'static str>,
}

/// What one power cut did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CutStats {
    /// Records in the trace.
    pub records: u64,
    /// File flushes (`fsync`/`fdatasync`) recorded.
    pub syncs: u64,
    /// Of those, before the harness armed the counters (server start-up).
    pub syncs_before_armed: u64,
    /// Writes recorded after the counters were armed.
    pub writes_after_armed: u64,
    /// File flushes after the counters were armed, by file.
    pub syncs_after_armed_of: BTreeMap<String, u64>,
    /// Writes at offset 0 of a `-wal` file: SQLite writing a WAL's header,
    /// as it starts the WAL (over).
    pub wal_headers: u64,
    /// Of those, while the WAL's database file had writes not yet flushed.
    pub wal_headers_over_unflushed_db: u64,
    /// Directory flushes recorded.
    pub dir_syncs: u64,
    /// Bytes written in all.
    pub bytes_written: u64,
    /// Bytes written and not flushed at the cut.
    pub unsynced_bytes: u64,
    /// Of those, pieces kept / dropped (Reordered) — all dropped in Synced.
    pub pieces_kept: u64,
    /// Pieces dropped.
    pub pieces_dropped: u64,
    /// Changes to the directory not flushed at the cut, and of those dropped.
    pub dir_ops_unsynced: u64,
    /// Dropped.
    pub dir_ops_dropped: u64,
    /// Whether the kill cut the trace's last record short.
    pub torn_tail: bool,
}

#[derive(Debug, Clone)]
enum Pending<'a> {
    Write { offset: u64, data: &'a [u8] },
    Truncate(u64),
}

#[derive(Debug, Clone, Default)]
struct Inode<'a> {
    synced: Vec<u8>,
    pending: Vec<Pending<'a>>,
}

#[derive(Debug, Clone)]
enum DirOp {
    Link(String, usize),
    Unlink(String),
    Rename(String, String),
}

fn apply(file: &mut Vec<u8>, p: &Pending<'_>) {
    match *p {
        Pending::Write { offset, data } => {
            let start = offset as usize;
            let end = start + data.len();
            if file.len() < end {
                file.resize(end, 0);
            }
            file[start..end].copy_from_slice(data);
        }
        Pending::Truncate(len) => file.resize(len as usize, 0),
    }
}

fn apply_dir(entries: &mut BTreeMap<String, usize>, op: &DirOp) {
    match op {
        DirOp::Link(name, ino) => {
            entries.insert(name.clone(), *ino);
        }
        DirOp::Unlink(name) => {
            entries.remove(name);
        }
        DirOp::Rename(from, to) => {
            if let Some(ino) = entries.remove(from) {
                entries.insert(to.clone(), ino);
            }
        }
    }
}

/// The state a trace leaves, before a cut decides what survives.
struct Machine<'a> {
    inodes: Vec<Inode<'a>>,
    /// The directory as the process sees it.
    current: BTreeMap<String, usize>,
    /// The directory as last flushed.
    durable: BTreeMap<String, usize>,
    dir_pending: Vec<DirOp>,
    /// Files removed while open, by name: writes through an open handle
    /// still reach them.
    removed: HashMap<String, usize>,
    stats: CutStats,
}

impl<'a> Machine<'a> {
    fn new(base: &Files) -> Machine<'a> {
        let mut m = Machine {
            inodes: Vec::new(),
            current: BTreeMap::new(),
            durable: BTreeMap::new(),
            dir_pending: Vec::new(),
            removed: HashMap::new(),
            stats: CutStats::default(),
        };
        for (name, bytes) in &base.0 {
            m.inodes.push(Inode {
                synced: bytes.clone(),
                pending: Vec::new(),
            });
            m.current.insert(name.clone(), m.inodes.len() - 1);
            m.durable.insert(name.clone(), m.inodes.len() - 1);
        }
        m
    }

    fn inode(&mut self, name: &str) -> anyhow::Result<usize> {
        self.current
            .get(name)
            .or_else(|| self.removed.get(name))
            .copied()
            .ok_or_else(|| anyhow::anyhow!("the trace changes {name}, which it never created"))
    }

    fn run(&mut self, trace: &Trace<'a>, opts: &CutOptions) -> anyhow::Result<()> {
        let mut armed = false;
        self.stats.records = trace.ops.len() as u64;
        self.stats.torn_tail = trace.torn_tail;
        for op in &trace.ops {
            match *op {
                Op::Write { name, offset, data } => {
                    if let (0, Some(db)) = (offset, name.strip_suffix("-wal")) {
                        self.stats.wal_headers += 1;
                        let db = self.current.get(db).copied();
                        if db.is_some_and(|d| !self.inodes[d].pending.is_empty()) {
                            self.stats.wal_headers_over_unflushed_db += 1;
                        }
                    }
                    let i = self.inode(name)?;
                    self.stats.bytes_written += data.len() as u64;
                    if armed {
                        self.stats.writes_after_armed += 1;
                    }
                    self.inodes[i].pending.push(Pending::Write { offset, data });
                }
                Op::Truncate { name, len } => {
                    let i = self.inode(name)?;
                    self.inodes[i].pending.push(Pending::Truncate(len));
                }
                Op::Sync { name } => {
                    self.stats.syncs += 1;
                    if armed {
                        *self
                            .stats
                            .syncs_after_armed_of
                            .entry(name.to_owned())
                            .or_default() += 1;
                    } else {
                        self.stats.syncs_before_armed += 1;
                    }
                    if opts.ignore_syncs_of.is_some_and(|s| name.ends_with(s)) {
                        continue;
                    }
                    let i = self.inode(name)?;
                    let inode = &mut self.inodes[i];
                    for p in std::mem::take(&mut inode.pending) {
                        apply(&mut inode.synced, &p);
                    }
                }
                Op::DirSync => {
                    self.stats.dir_syncs += 1;
                    for op in std::mem::take(&mut self.dir_pending) {
                        apply_dir(&mut self.durable, &op);
                    }
                }
                Op::Create { name } => {
                    self.inodes.push(Inode::default());
                    let ino = self.inodes.len() - 1;
                    self.current.insert(name.to_owned(), ino);
                    self.removed.remove(name);
                    self.dir_pending.push(DirOp::Link(name.to_owned(), ino));
                }
                Op::Unlink { name } => {
                    if let Some(ino) = self.current.remove(name) {
                        self.removed.insert(name.to_owned(), ino);
                    }
                    self.dir_pending.push(DirOp::Unlink(name.to_owned()));
                }
                Op::Rename { from, to } => {
                    if let Some(ino) = self.current.remove(from) {
                        self.current.insert(to.to_owned(), ino);
                    }
                    self.dir_pending
                        .push(DirOp::Rename(from.to_owned(), to.to_owned()));
                }
                Op::Armed => armed = true,
                Op::Untraceable { name, what } => {
                    anyhow::bail!(
                        "the process changed {name} in a way the trace cannot follow ({what})"
                    )
                }
            }
        }
        Ok(())
    }

    /// The files a cut now leaves.
    fn cut(mut self, mode: CutMode, rng: &mut impl Rng) -> (Files, CutStats) {
        let mut durable = self.durable.clone();
        self.stats.dir_ops_unsynced = self.dir_pending.len() as u64;
        let kept_dir_ops = match mode {
            CutMode::Synced => 0,
            CutMode::Reordered => rng.gen_range(0..=self.dir_pending.len()),
        };
        for op in &self.dir_pending[..kept_dir_ops] {
            apply_dir(&mut durable, op);
        }
        self.stats.dir_ops_dropped = (self.dir_pending.len() - kept_dir_ops) as u64;
        let mut files = BTreeMap::new();
        for (name, ino) in durable {
            let inode = &self.inodes[ino];
            let mut bytes = inode.synced.clone();
            for p in &inode.pending {
                match *p {
                    Pending::Write { offset, data } => {
                        self.stats.unsynced_bytes += data.len() as u64;
                        let mut at = 0usize;
                        while at < data.len() {
                            let pos = offset + at as u64;
                            let room = (PIECE - pos % PIECE) as usize;
                            let piece = &data[at..data.len().min(at + room)];
                            if mode == CutMode::Reordered && rng.gen_bool(0.5) {
                                self.stats.pieces_kept += 1;
                                apply(
                                    &mut bytes,
                                    &Pending::Write {
                                        offset: pos,
                                        data: piece,
                                    },
                                );
                            } else {
                                self.stats.pieces_dropped += 1;
                            }
                            at += piece.len();
                        }
                    }
                    Pending::Truncate(_) => {
                        if mode == CutMode::Reordered && rng.gen_bool(0.5) {
                            apply(&mut bytes, p);
                        }
                    }
                }
            }
            files.insert(name, bytes);
        }
        (Files(files), self.stats)
    }

    /// Every change applied, flushed or not: what the files hold while the
    /// process runs.
    fn everything(self) -> Files {
        let mut files = BTreeMap::new();
        for (name, ino) in self.current {
            let inode = &self.inodes[ino];
            let mut bytes = inode.synced.clone();
            for p in &inode.pending {
                apply(&mut bytes, p);
            }
            files.insert(name, bytes);
        }
        Files(files)
    }
}

/// The files a power cut at the end of `trace` leaves of `base`, the files
/// as they were when the traced process started.
pub fn power_cut(
    base: &Files,
    trace: &Trace<'_>,
    opts: &CutOptions,
    rng: &mut impl Rng,
) -> anyhow::Result<(Files, CutStats)> {
    let mut m = Machine::new(base);
    m.run(trace, opts)?;
    Ok(m.cut(opts.mode, rng))
}

/// The files as the process left them, every change applied: equal to the
/// directory's real contents after a clean stop, which shows the trace
/// missed nothing.
pub fn replay_all(base: &Files, trace: &Trace<'_>) -> anyhow::Result<Files> {
    let mut m = Machine::new(base);
    m.run(
        trace,
        &CutOptions {
            mode: CutMode::Synced,
            ignore_syncs_of: None,
        },
    )?;
    Ok(m.everything())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng as _;

    fn rec(kind: u8, name: &str, name2: &str, offset: u64, len: u64, data: &[u8]) -> Vec<u8> {
        let mut v = MAGIC.to_le_bytes().to_vec();
        v.extend([kind, name.len() as u8, name2.len() as u8, 0]);
        v.extend(offset.to_le_bytes());
        v.extend(len.to_le_bytes());
        v.extend(name.as_bytes());
        v.extend(name2.as_bytes());
        v.extend(data);
        v
    }

    fn write(name: &str, offset: u64, data: &[u8]) -> Vec<u8> {
        rec(1, name, "", offset, data.len() as u64, data)
    }

    fn sync(name: &str) -> Vec<u8> {
        rec(3, name, "", 0, 0, &[])
    }

    fn base() -> Files {
        Files(BTreeMap::from([("db".to_owned(), vec![1u8; 8192])]))
    }

    const SYNCED: CutOptions = CutOptions {
        mode: CutMode::Synced,
        ignore_syncs_of: None,
    };

    fn cut(bytes: &[u8], opts: &CutOptions, seed: u64) -> (Files, CutStats) {
        let trace = parse(bytes).unwrap();
        power_cut(&base(), &trace, opts, &mut StdRng::seed_from_u64(seed)).unwrap()
    }

    #[test]
    fn a_synced_cut_keeps_flushed_writes_only() {
        let bytes = [
            write("db", 0, &[2; 10]),
            sync("db"),
            write("db", 4096, &[3; 10]),
            write("db", 8192, &[4; 100]),
        ]
        .concat();
        let (files, stats) = cut(&bytes, &SYNCED, 1);
        let db = &files.0["db"];
        assert_eq!(db.len(), 8192, "the unflushed extension is lost");
        assert_eq!(&db[..10], &[2; 10]);
        assert_eq!(&db[4096..4106], &[1; 10], "the unflushed write is lost");
        assert_eq!((stats.syncs, stats.unsynced_bytes), (1, 110));

        let everything = replay_all(&base(), &parse(&bytes).unwrap()).unwrap();
        assert_eq!(everything.0["db"].len(), 8292);
        assert_eq!(&everything.0["db"][4096..4106], &[3; 10]);
    }

    #[test]
    fn a_reordered_cut_keeps_some_pieces_of_unflushed_writes() {
        // 3 pieces: [4000, 4096), [4096, 8192), [8192, 8200).
        let bytes = write("db", 4000, &[9; 4200]);
        let mut seen = std::collections::BTreeSet::new();
        for seed in 0..64 {
            let (files, stats) = cut(
                &bytes,
                &CutOptions {
                    mode: CutMode::Reordered,
                    ignore_syncs_of: None,
                },
                seed,
            );
            assert_eq!(stats.pieces_kept + stats.pieces_dropped, 3);
            let db = &files.0["db"];
            let kept = (
                db[4000] == 9,
                db[4096] == 9,
                db.len() == 8200 && db[8192] == 9,
            );
            // Each piece is whole or absent.
            assert!(db[4000..4096].iter().all(|&b| b == db[4000]));
            assert!(db[4096..8192].iter().all(|&b| b == db[4096]));
            seen.insert(kept);
        }
        assert_eq!(seen.len(), 8, "every subset of the three pieces occurs");
    }

    #[test]
    fn a_new_file_survives_only_once_its_directory_is_flushed() {
        let created = [
            rec(5, "wal", "", 0, 0, &[]),
            write("wal", 0, &[5; 32]),
            sync("wal"),
        ]
        .concat();
        let (files, _) = cut(&created, &SYNCED, 1);
        assert!(!files.0.contains_key("wal"), "its entry was never flushed");

        let flushed = [created.clone(), rec(4, "", "", 0, 0, &[])].concat();
        let (files, stats) = cut(&flushed, &SYNCED, 1);
        assert_eq!(files.0["wal"], vec![5; 32]);
        assert_eq!(stats.dir_syncs, 1);

        // Removed but not flushed: still there after the cut.
        let removed = [flushed, rec(6, "wal", "", 0, 0, &[])].concat();
        let (files, _) = cut(&removed, &SYNCED, 1);
        assert_eq!(files.0["wal"], vec![5; 32]);
    }

    #[test]
    fn ignored_wal_syncs_make_nothing_of_the_wal_durable() {
        let bytes = [
            rec(5, "db-wal", "", 0, 0, &[]),
            rec(4, "", "", 0, 0, &[]),
            write("db-wal", 0, &[7; 64]),
            sync("db-wal"),
            write("db", 0, &[8; 16]),
            sync("db"),
        ]
        .concat();
        let broken = CutOptions {
            mode: CutMode::Synced,
            ignore_syncs_of: Some("-wal"),
        };
        let (files, _) = cut(&bytes, &broken, 1);
        assert!(files.0["db-wal"].is_empty());
        assert_eq!(&files.0["db"][..16], &[8; 16], "other files' flushes count");
        let (files, _) = cut(&bytes, &SYNCED, 1);
        assert_eq!(files.0["db-wal"], vec![7; 64]);
    }

    #[test]
    fn wal_headers_written_over_an_unflushed_database_are_counted() {
        let bytes = [
            rec(5, "db-wal", "", 0, 0, &[]),
            write("db-wal", 0, &[1; 32]),
            write("db", 0, &[2; 16]),
            write("db-wal", 0, &[3; 32]),
            sync("db"),
            write("db-wal", 0, &[4; 32]),
        ]
        .concat();
        let (_, stats) = cut(&bytes, &SYNCED, 1);
        assert_eq!(
            (stats.wal_headers, stats.wal_headers_over_unflushed_db),
            (3, 1)
        );
    }

    #[test]
    fn a_torn_last_record_is_the_end_and_garbage_is_an_error() {
        let mut bytes = [
            write("db", 0, &[2; 10]),
            sync("db"),
            write("db", 0, &[3; 10]),
        ]
        .concat();
        bytes.truncate(bytes.len() - 4);
        let trace = parse(&bytes).unwrap();
        assert!(trace.torn_tail);
        assert_eq!(trace.ops.len(), 2);

        let mut bad = write("db", 0, &[2; 10]);
        bad[0] ^= 1;
        assert!(parse(&bad).is_err());
        let untraceable = rec(9, "db", "mmap", 0, 0, &[]);
        assert!(power_cut(
            &base(),
            &parse(&untraceable).unwrap(),
            &SYNCED,
            &mut StdRng::seed_from_u64(0)
        )
        .is_err());
        let unknown = write("nowhere", 0, &[1]);
        assert!(replay_all(&base(), &parse(&unknown).unwrap()).is_err());
    }
}
