//! Key-value databases behind one cursor/writer interface, as Caffe's `db::DB`: LMDB and LevelDB.
//!
//! LMDB is read and written here directly (the on-disk format of LMDB 0.9, the one Caffe's
//! liblmdb writes): readers map `data.mdb` read-only and never touch `lock.mdb` (like
//! `MDB_RDONLY | MDB_NOLOCK`), so databases on read-only media work. The writer bulk-loads a
//! B+tree from keys given in ascending order (what `convert_imageset` produces). LevelDB goes
//! through the pure-Rust `rusty-leveldb` crate (Snappy-compressed tables, like C++ LevelDB).
use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail, ensure};

use crate::proto::data_parameter::Db;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    LevelDb,
    Lmdb,
}

impl Backend {
    pub fn from_proto(db: Db) -> Self {
        match db {
            Db::Leveldb => Backend::LevelDb,
            Db::Lmdb => Backend::Lmdb,
        }
    }

    /// The `-backend` flag of Caffe's tools: "lmdb" or "leveldb".
    pub fn parse(name: &str) -> Result<Self> {
        match name.to_ascii_lowercase().as_str() {
            "lmdb" => Ok(Backend::Lmdb),
            "leveldb" => Ok(Backend::LevelDb),
            other => bail!("unknown database backend \"{other}\" (expected lmdb or leveldb)"),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Backend::LevelDb => "LevelDB",
            Backend::Lmdb => "LMDB",
        }
    }
}

/// Sequential access to a database in key order (Caffe's `db::Cursor`).
pub trait Cursor {
    /// Positions on the first record (the cursor is invalid afterwards when the database is empty).
    fn seek_to_first(&mut self) -> Result<()>;
    fn valid(&self) -> bool;
    /// The current key (empty when not valid).
    fn key(&self) -> &[u8];
    /// The current value (empty when not valid).
    fn value(&self) -> &[u8];
    /// Moves to the next record; the cursor becomes invalid after the last one.
    fn next(&mut self) -> Result<()>;
}

/// Writes a new database (Caffe's `db::Transaction`).
pub trait Writer {
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()>;
    /// Makes the puts so far durable as far as the backend allows.
    fn commit(&mut self) -> Result<()>;
    /// Finishes the database; nothing is readable before this.
    fn close(self: Box<Self>) -> Result<()>;
}

/// Opens `path` for reading, positioned on the first record. Errors start with
/// `data source "<path>"` so callers can tell a missing or unreadable database apart.
pub fn open_cursor(backend: Backend, path: &str) -> Result<Box<dyn Cursor>> {
    let name = backend.name();
    if path.is_empty() {
        bail!("data source is not set (the {name} database path is empty)");
    }
    if !Path::new(path).exists() {
        bail!("data source \"{path}\" ({name}) does not exist");
    }
    let mut cursor: Box<dyn Cursor> = match backend {
        Backend::Lmdb => Box::new(
            LmdbCursor::open(path)
                .map_err(|e| anyhow!("data source \"{path}\" ({name}): {e:#}"))?,
        ),
        Backend::LevelDb => Box::new(
            LevelDbCursor::open(path)
                .map_err(|e| anyhow!("data source \"{path}\" ({name}): {e:#}"))?,
        ),
    };
    cursor
        .seek_to_first()
        .map_err(|e| anyhow!("data source \"{path}\" ({name}): {e:#}"))?;
    Ok(cursor)
}

/// Creates a new database at `path` (an error if it already exists, as in Caffe).
pub fn create_writer(backend: Backend, path: &str) -> Result<Box<dyn Writer>> {
    if Path::new(path).exists() {
        bail!(
            "cannot create {} database \"{path}\": it already exists",
            backend.name()
        );
    }
    Ok(match backend {
        Backend::Lmdb => Box::new(LmdbWriter::create(path)?),
        Backend::LevelDb => Box::new(LevelDbWriter::create(path)?),
    })
}

// ---------------------------------------------------------------------------------------------
// LMDB on-disk format (liblmdb 0.9, 64-bit little-endian).

const PAGE_HDR: usize = 16;
const NODE_HDR: usize = 8;
const P_BRANCH: u16 = 0x01;
const P_LEAF: u16 = 0x02;
const P_OVERFLOW: u16 = 0x04;
const P_META: u16 = 0x08;
const F_BIGDATA: u16 = 0x01;
const F_SUBDATA: u16 = 0x02;
const F_DUPDATA: u16 = 0x04;
const MDB_DUPSORT: u16 = 0x04;
const MDB_INTEGERKEY: u16 = 0x08;
const MDB_MAGIC: u32 = 0xBEEF_C0DE;
const MDB_DATA_VERSION: u32 = 1;
const P_INVALID: u64 = u64::MAX;
const MAX_KEY_SIZE: usize = 511;
const WRITE_PAGE_SIZE: usize = 4096;

fn rd16(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}
fn rd32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap_or([0; 4]))
}
fn rd64(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap_or([0; 8]))
}

fn lmdb_data_file(path: &str) -> PathBuf {
    let p = Path::new(path);
    if p.is_dir() {
        p.join("data.mdb")
    } else {
        p.to_path_buf()
    }
}

/// Reads an LMDB without locking: the file is mapped read-only.
pub struct LmdbCursor {
    map: memmap2::Mmap,
    psize: usize,
    root: u64,
    /// Path from the root to the current leaf: (page number, node index, node count).
    stack: Vec<(u64, usize, usize)>,
    key: (usize, usize),
    value: (usize, usize),
    valid: bool,
}

impl LmdbCursor {
    pub fn open(path: &str) -> Result<Self> {
        let file_path = lmdb_data_file(path);
        let file = File::open(&file_path)
            .with_context(|| format!("cannot open {}", file_path.display()))?;
        let len = file.metadata()?.len() as usize;
        ensure!(
            len >= 2 * PAGE_HDR + 152,
            "{} is not an LMDB file (too short)",
            file_path.display()
        );
        // SAFETY: the map is read-only; a concurrent writer could change the bytes under us, which
        // is the same contract liblmdb readers have without a lock file.
        let map = unsafe { memmap2::Mmap::map(&file) }
            .with_context(|| format!("cannot map {}", file_path.display()))?;
        let check_meta = |off: usize| -> Result<()> {
            ensure!(off + 152 <= map.len(), "truncated meta page");
            ensure!(
                rd16(&map, off + 10) & P_META != 0,
                "not an LMDB file (no meta page)"
            );
            ensure!(
                rd32(&map, off + 16) == MDB_MAGIC,
                "not an LMDB file (bad magic)"
            );
            let version = rd32(&map, off + 20);
            ensure!(
                version == MDB_DATA_VERSION,
                "LMDB data version {version} is not supported (only the LMDB 0.9 format, version 1)"
            );
            Ok(())
        };
        check_meta(0)?;
        let psize = rd32(&map, 40) as usize;
        ensure!(
            (512..=65536).contains(&psize) && psize.is_power_of_two(),
            "bad LMDB page size {psize}"
        );
        let mut meta = 0;
        if psize + 152 <= map.len()
            && check_meta(psize).is_ok()
            && rd64(&map, psize + 144) > rd64(&map, 144)
        {
            meta = psize;
        }
        let flags = rd16(&map, meta + 88 + 4);
        ensure!(
            flags & MDB_DUPSORT == 0,
            "DUPSORT databases are not supported"
        );
        let root = rd64(&map, meta + 88 + 40);
        Ok(LmdbCursor {
            map,
            psize,
            root,
            stack: Vec::new(),
            key: (0, 0),
            value: (0, 0),
            valid: false,
        })
    }

    fn page(&self, pgno: u64) -> Result<usize> {
        let off = (pgno as usize)
            .checked_mul(self.psize)
            .filter(|o| o + self.psize <= self.map.len());
        let off =
            off.ok_or_else(|| anyhow!("corrupt LMDB: page {pgno} is beyond the end of the file"))?;
        ensure!(
            rd64(&self.map, off) == pgno,
            "corrupt LMDB: page {pgno} has the wrong page number"
        );
        Ok(off)
    }

    /// (flags, number of nodes) of the page at byte offset `off`.
    fn page_info(&self, off: usize, pgno: u64) -> Result<(u16, usize)> {
        let flags = rd16(&self.map, off + 10);
        let lower = rd16(&self.map, off + 12) as usize;
        ensure!(
            lower >= PAGE_HDR && lower <= self.psize,
            "corrupt LMDB: page {pgno} has a bad header"
        );
        Ok((flags, (lower - PAGE_HDR) / 2))
    }

    fn node(&self, page: usize, idx: usize, pgno: u64) -> Result<usize> {
        let ptr = rd16(&self.map, page + PAGE_HDR + 2 * idx) as usize;
        ensure!(
            ptr + NODE_HDR <= self.psize,
            "corrupt LMDB: bad node offset in page {pgno}"
        );
        Ok(page + ptr)
    }

    /// Child page number of branch node `idx`.
    fn child(&self, page: usize, idx: usize, pgno: u64) -> Result<u64> {
        let n = self.node(page, idx, pgno)?;
        let lo = rd16(&self.map, n) as u64;
        let hi = rd16(&self.map, n + 2) as u64;
        let top = rd16(&self.map, n + 4) as u64;
        Ok(lo | (hi << 16) | (top << 32))
    }

    /// Descends to the leftmost leaf under `pgno`, pushing the path.
    fn descend(&mut self, mut pgno: u64) -> Result<()> {
        for _ in 0..64 {
            let page = self.page(pgno)?;
            let (flags, n) = self.page_info(page, pgno)?;
            self.stack.push((pgno, 0, n));
            if flags & P_LEAF != 0 {
                return Ok(());
            }
            ensure!(
                flags & P_BRANCH != 0 && n > 0,
                "corrupt LMDB: page {pgno} is neither branch nor leaf"
            );
            pgno = self.child(page, 0, pgno)?;
        }
        bail!("corrupt LMDB: tree deeper than 64 levels")
    }

    /// Loads key/value of the leaf node under the top of the stack.
    fn load(&mut self) -> Result<()> {
        let Some(&(pgno, idx, _)) = self.stack.last() else {
            self.valid = false;
            return Ok(());
        };
        let page = self.page(pgno)?;
        let n = self.node(page, idx, pgno)?;
        let dsize = rd16(&self.map, n) as usize | ((rd16(&self.map, n + 2) as usize) << 16);
        let flags = rd16(&self.map, n + 4);
        let ksize = rd16(&self.map, n + 6) as usize;
        ensure!(
            flags & (F_SUBDATA | F_DUPDATA) == 0,
            "named sub-databases / duplicate keys are not supported"
        );
        let kstart = n + NODE_HDR;
        ensure!(
            kstart + ksize <= page + self.psize,
            "corrupt LMDB: key out of page {pgno}"
        );
        self.key = (kstart, kstart + ksize);
        if flags & F_BIGDATA != 0 {
            ensure!(
                kstart + ksize + 8 <= page + self.psize,
                "corrupt LMDB: overflow node out of page {pgno}"
            );
            let ov = rd64(&self.map, kstart + ksize);
            let ovp = self.page(ov)?;
            ensure!(
                rd16(&self.map, ovp + 10) & P_OVERFLOW != 0,
                "corrupt LMDB: page {ov} is not an overflow page"
            );
            let start = ovp + PAGE_HDR;
            ensure!(
                start + dsize <= self.map.len(),
                "corrupt LMDB: overflow value beyond the end of the file"
            );
            self.value = (start, start + dsize);
        } else {
            let start = kstart + ksize;
            ensure!(
                start + dsize <= page + self.psize,
                "corrupt LMDB: value out of page {pgno}"
            );
            self.value = (start, start + dsize);
        }
        self.valid = true;
        Ok(())
    }
}

impl Cursor for LmdbCursor {
    fn seek_to_first(&mut self) -> Result<()> {
        self.stack.clear();
        self.valid = false;
        if self.root == P_INVALID {
            return Ok(());
        }
        self.descend(self.root)?;
        if self.stack.last().is_some_and(|&(_, _, n)| n == 0) {
            self.stack.clear();
            return Ok(());
        }
        self.load()
    }

    fn valid(&self) -> bool {
        self.valid
    }

    fn key(&self) -> &[u8] {
        if self.valid {
            &self.map[self.key.0..self.key.1]
        } else {
            &[]
        }
    }

    fn value(&self) -> &[u8] {
        if self.valid {
            &self.map[self.value.0..self.value.1]
        } else {
            &[]
        }
    }

    fn next(&mut self) -> Result<()> {
        if !self.valid {
            return Ok(());
        }
        while let Some(top) = self.stack.last_mut() {
            if top.1 + 1 < top.2 {
                top.1 += 1;
                let (pgno, idx, _) = *top;
                let page = self.page(pgno)?;
                let (flags, _) = self.page_info(page, pgno)?;
                if flags & P_LEAF == 0 {
                    let child = self.child(page, idx, pgno)?;
                    self.descend(child)?;
                }
                return self.load();
            }
            self.stack.pop();
        }
        self.valid = false;
        Ok(())
    }
}

/// One leaf or branch page being filled (nodes grow down from the end, pointers up from the header).
struct PageBuf {
    buf: Vec<u8>,
    nodes: usize,
    upper: usize,
}

impl PageBuf {
    fn new(psize: usize) -> Self {
        PageBuf {
            buf: vec![0; psize],
            nodes: 0,
            upper: psize,
        }
    }

    fn clear(&mut self) {
        self.buf.fill(0);
        self.nodes = 0;
        self.upper = self.buf.len();
    }

    fn fits(&self, node_size: usize) -> bool {
        PAGE_HDR + 2 * (self.nodes + 1) + node_size <= self.upper
    }

    /// Appends a node: header words (lo, hi, flags), key, then `data`.
    fn push(&mut self, lo_hi: u32, flags: u16, key: &[u8], data: &[u8]) {
        let size = (NODE_HDR + key.len() + data.len() + 1) & !1;
        let off = self.upper - size;
        let b = &mut self.buf;
        b[off..off + 2].copy_from_slice(&(lo_hi as u16).to_le_bytes());
        b[off + 2..off + 4].copy_from_slice(&((lo_hi >> 16) as u16).to_le_bytes());
        b[off + 4..off + 6].copy_from_slice(&flags.to_le_bytes());
        b[off + 6..off + 8].copy_from_slice(&(key.len() as u16).to_le_bytes());
        b[off + 8..off + 8 + key.len()].copy_from_slice(key);
        b[off + 8 + key.len()..off + 8 + key.len() + data.len()].copy_from_slice(data);
        let ptr = PAGE_HDR + 2 * self.nodes;
        b[ptr..ptr + 2].copy_from_slice(&(off as u16).to_le_bytes());
        self.nodes += 1;
        self.upper = off;
    }

    fn finish(&mut self, pgno: u64, flags: u16) -> &[u8] {
        let lower = (PAGE_HDR + 2 * self.nodes) as u16;
        let upper = self.upper as u16;
        let b = &mut self.buf;
        b[0..8].copy_from_slice(&pgno.to_le_bytes());
        b[8..10].copy_from_slice(&0u16.to_le_bytes());
        b[10..12].copy_from_slice(&flags.to_le_bytes());
        b[12..14].copy_from_slice(&lower.to_le_bytes());
        b[14..16].copy_from_slice(&upper.to_le_bytes());
        &self.buf
    }
}

/// Writes an LMDB (0.9 format) from records given in ascending key order.
pub struct LmdbWriter {
    path: PathBuf,
    out: BufWriter<File>,
    psize: usize,
    next_pgno: u64,
    leaf: PageBuf,
    leaf_first_key: Vec<u8>,
    /// (first key, page number) of every finished leaf page.
    leaves: Vec<(Vec<u8>, u64)>,
    last_key: Option<Vec<u8>>,
    entries: u64,
    overflow_pages: u64,
}

impl LmdbWriter {
    pub fn create(path: &str) -> Result<Self> {
        std::fs::create_dir_all(path)
            .with_context(|| format!("cannot create LMDB directory {path}"))?;
        let file_path = Path::new(path).join("data.mdb");
        let file = File::create(&file_path)
            .with_context(|| format!("cannot create {}", file_path.display()))?;
        let psize = WRITE_PAGE_SIZE;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        // Meta pages are written at close; reserve them now.
        out.write_all(&vec![0u8; 2 * psize])?;
        Ok(LmdbWriter {
            path: file_path,
            out,
            psize,
            next_pgno: 2,
            leaf: PageBuf::new(psize),
            leaf_first_key: Vec::new(),
            leaves: Vec::new(),
            last_key: None,
            entries: 0,
            overflow_pages: 0,
        })
    }

    /// Largest inline node (liblmdb's me_nodemax).
    fn node_max(&self) -> usize {
        (((self.psize - PAGE_HDR) / 2) & !1) - 2
    }

    fn flush_leaf(&mut self) -> Result<()> {
        if self.leaf.nodes == 0 {
            return Ok(());
        }
        let pgno = self.next_pgno;
        self.next_pgno += 1;
        let page = self.leaf.finish(pgno, P_LEAF);
        self.out.write_all(page)?;
        self.leaves
            .push((std::mem::take(&mut self.leaf_first_key), pgno));
        self.leaf.clear();
        Ok(())
    }

    fn write_meta(&mut self, pgno: u64, txnid: u64, main: [u64; 7], last_pg: u64) -> Result<()> {
        let mut p = vec![0u8; self.psize];
        p[0..8].copy_from_slice(&pgno.to_le_bytes());
        p[10..12].copy_from_slice(&P_META.to_le_bytes());
        p[16..20].copy_from_slice(&MDB_MAGIC.to_le_bytes());
        p[20..24].copy_from_slice(&MDB_DATA_VERSION.to_le_bytes());
        let mapsize = ((last_pg + 1) * self.psize as u64).max(1 << 20);
        p[32..40].copy_from_slice(&mapsize.to_le_bytes());
        // Free-list DB: md_pad holds the page size.
        p[40..44].copy_from_slice(&(self.psize as u32).to_le_bytes());
        p[44..46].copy_from_slice(&MDB_INTEGERKEY.to_le_bytes());
        p[80..88].copy_from_slice(&P_INVALID.to_le_bytes());
        // Main DB: [depth, branch, leaf, overflow, entries, root] (+ flags 0).
        let [depth, branch, leaf, overflow, entries, root, _] = main;
        p[94..96].copy_from_slice(&(depth as u16).to_le_bytes());
        for (i, v) in [branch, leaf, overflow, entries, root].iter().enumerate() {
            p[96 + 8 * i..104 + 8 * i].copy_from_slice(&v.to_le_bytes());
        }
        p[136..144].copy_from_slice(&last_pg.to_le_bytes());
        p[144..152].copy_from_slice(&txnid.to_le_bytes());
        self.out.seek(SeekFrom::Start(pgno * self.psize as u64))?;
        self.out.write_all(&p)?;
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        self.flush_leaf()?;
        let leaf_pages = self.leaves.len() as u64;
        let mut level = std::mem::take(&mut self.leaves);
        let mut depth = u64::from(!level.is_empty());
        let mut branch_pages = 0u64;
        let mut page = PageBuf::new(self.psize);
        while level.len() > 1 {
            let mut up: Vec<(Vec<u8>, u64)> = Vec::new();
            let mut first_key: Vec<u8> = Vec::new();
            for (key, child) in &level {
                // The first node of a branch page carries no key (liblmdb ignores it).
                let key_here: &[u8] = if page.nodes == 0 { &[] } else { key };
                let size = (NODE_HDR + key_here.len() + 1) & !1;
                if !page.fits(size) {
                    let pgno = self.next_pgno;
                    self.next_pgno += 1;
                    self.out.write_all(page.finish(pgno, P_BRANCH))?;
                    branch_pages += 1;
                    up.push((std::mem::take(&mut first_key), pgno));
                    page.clear();
                }
                if page.nodes == 0 {
                    first_key = key.clone();
                    page.push(*child as u32, (*child >> 32) as u16, &[], &[]);
                } else {
                    page.push(*child as u32, (*child >> 32) as u16, key, &[]);
                }
            }
            let pgno = self.next_pgno;
            self.next_pgno += 1;
            self.out.write_all(page.finish(pgno, P_BRANCH))?;
            branch_pages += 1;
            up.push((std::mem::take(&mut first_key), pgno));
            page.clear();
            level = up;
            depth += 1;
        }
        let root = level.first().map_or(P_INVALID, |(_, p)| *p);
        let last_pg = self.next_pgno - 1;
        self.write_meta(0, 0, [0, 0, 0, 0, 0, P_INVALID, 0], 1)?;
        let main = [
            depth,
            branch_pages,
            leaf_pages,
            self.overflow_pages,
            self.entries,
            root,
            0,
        ];
        self.write_meta(1, 1, main, last_pg)?;
        self.out.flush()?;
        self.out.get_ref().sync_all()?;
        Ok(())
    }
}

impl Writer for LmdbWriter {
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        ensure!(
            !key.is_empty() && key.len() <= MAX_KEY_SIZE,
            "LMDB keys must have 1 to 511 bytes"
        );
        if let Some(last) = &self.last_key {
            ensure!(
                key > last.as_slice(),
                "LMDB writer needs keys in ascending order (\"{}\" after \"{}\")",
                String::from_utf8_lossy(key),
                String::from_utf8_lossy(last)
            );
        }
        ensure!(value.len() < 1 << 32, "value too large for LMDB");
        let big = NODE_HDR + key.len() + value.len() > self.node_max();
        let node_size = (NODE_HDR + key.len() + if big { 8 } else { value.len() } + 1) & !1;
        if !self.leaf.fits(node_size) {
            self.flush_leaf()?;
        }
        if self.leaf.nodes == 0 {
            self.leaf_first_key = key.to_vec();
        }
        if big {
            let pages = (PAGE_HDR - 1 + value.len()) / self.psize + 1;
            let pgno = self.next_pgno;
            self.next_pgno += pages as u64;
            self.overflow_pages += pages as u64;
            let mut hdr = [0u8; PAGE_HDR];
            hdr[0..8].copy_from_slice(&pgno.to_le_bytes());
            hdr[10..12].copy_from_slice(&P_OVERFLOW.to_le_bytes());
            hdr[12..16].copy_from_slice(&(pages as u32).to_le_bytes());
            self.out.write_all(&hdr)?;
            self.out.write_all(value)?;
            self.out
                .write_all(&vec![0u8; pages * self.psize - PAGE_HDR - value.len()])?;
            self.leaf
                .push(value.len() as u32, F_BIGDATA, key, &pgno.to_le_bytes());
        } else {
            self.leaf.push(value.len() as u32, 0, key, value);
        }
        self.entries += 1;
        self.last_key = Some(key.to_vec());
        Ok(())
    }

    fn commit(&mut self) -> Result<()> {
        self.out
            .flush()
            .with_context(|| format!("writing {}", self.path.display()))
    }

    fn close(mut self: Box<Self>) -> Result<()> {
        let path = self.path.clone();
        self.finish()
            .with_context(|| format!("writing {}", path.display()))
    }
}

// ---------------------------------------------------------------------------------------------
// LevelDB through rusty-leveldb.

fn ldb_err(e: rusty_leveldb::Status) -> anyhow::Error {
    anyhow!("{e}")
}

pub struct LevelDbCursor {
    // Keeps the database open while the iterator is in use.
    _db: rusty_leveldb::DB,
    iter: rusty_leveldb::DBIterator,
    current: Option<(Vec<u8>, Vec<u8>)>,
}

impl LevelDbCursor {
    pub fn open(path: &str) -> Result<Self> {
        ensure!(
            Path::new(path).join("CURRENT").exists(),
            "not a LevelDB database (no CURRENT file)"
        );
        let opts = rusty_leveldb::Options {
            create_if_missing: false,
            ..Default::default()
        };
        let mut db = rusty_leveldb::DB::open(path, opts).map_err(ldb_err)?;
        let iter = db.new_iter().map_err(ldb_err)?;
        Ok(LevelDbCursor {
            _db: db,
            iter,
            current: None,
        })
    }

    fn load(&mut self) {
        use rusty_leveldb::LdbIterator;
        self.current = self.iter.current().map(|(k, v)| (k.to_vec(), v.to_vec()));
    }
}

impl Cursor for LevelDbCursor {
    fn seek_to_first(&mut self) -> Result<()> {
        use rusty_leveldb::LdbIterator;
        self.iter.seek_to_first();
        self.load();
        Ok(())
    }

    fn valid(&self) -> bool {
        self.current.is_some()
    }

    fn key(&self) -> &[u8] {
        self.current.as_ref().map_or(&[], |(k, _)| k)
    }

    fn value(&self) -> &[u8] {
        self.current.as_ref().map_or(&[], |(_, v)| v)
    }

    fn next(&mut self) -> Result<()> {
        use rusty_leveldb::LdbIterator;
        if self.current.is_some() {
            if self.iter.advance() {
                self.load();
            } else {
                self.current = None;
            }
        }
        Ok(())
    }
}

pub struct LevelDbWriter {
    db: rusty_leveldb::DB,
    batch: rusty_leveldb::WriteBatch,
}

impl LevelDbWriter {
    pub fn create(path: &str) -> Result<Self> {
        use rusty_leveldb::CompressorId;
        let opts = rusty_leveldb::Options {
            create_if_missing: true,
            compressor: rusty_leveldb::compressor::SnappyCompressor::ID,
            write_buffer_size: 64 << 20,
            block_size: 65536,
            ..Default::default()
        };
        let db = rusty_leveldb::DB::open(path, opts)
            .map_err(|e| anyhow!("cannot create LevelDB database {path}: {e}"))?;
        Ok(LevelDbWriter {
            db,
            batch: rusty_leveldb::WriteBatch::default(),
        })
    }
}

impl Writer for LevelDbWriter {
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        self.batch.put(key, value);
        Ok(())
    }

    fn commit(&mut self) -> Result<()> {
        let batch = std::mem::take(&mut self.batch);
        self.db.write(batch, false).map_err(ldb_err)?;
        self.db.flush().map_err(ldb_err)
    }

    fn close(mut self: Box<Self>) -> Result<()> {
        self.commit()?;
        self.db.close().map_err(ldb_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(backend: Backend, path: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut c = open_cursor(backend, path).unwrap();
        let mut out = Vec::new();
        while c.valid() {
            out.push((c.key().to_vec(), c.value().to_vec()));
            c.next().unwrap();
        }
        out
    }

    fn records(n: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
        (0..n)
            .map(|i| {
                let len = [0, 5, 1200, 2030, 2100, 9000, 196_608][i % 7];
                (
                    format!("{i:08}_file_{i}.png").into_bytes(),
                    (0..len).map(|j| (i * 31 + j) as u8).collect(),
                )
            })
            .collect()
    }

    #[test]
    fn lmdb_round_trip_many_sizes() {
        let dir = std::env::temp_dir().join(format!("caffe_rs_lmdb_rt_{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for n in [0usize, 1, 2, 3, 50, 700] {
            let path = dir.join(format!("db{n}"));
            let path = path.to_str().unwrap();
            let recs = records(n);
            let mut w = create_writer(Backend::Lmdb, path).unwrap();
            for (k, v) in &recs {
                w.put(k, v).unwrap();
            }
            w.close().unwrap();
            assert_eq!(read_all(Backend::Lmdb, path), recs, "n = {n}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn lmdb_rejects_unsorted_keys() {
        let dir =
            std::env::temp_dir().join(format!("caffe_rs_lmdb_unsorted_{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut w = create_writer(Backend::Lmdb, dir.to_str().unwrap()).unwrap();
        w.put(b"b", b"1").unwrap();
        assert!(w.put(b"a", b"2").is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
