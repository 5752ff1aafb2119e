//! Prediction over a manifest, split into deterministic shards for a scheduler's job array
//! (Slurm `--array`, a Kubernetes Indexed Job): each task predicts the I-th of N shards and
//! appends JSON Lines, skipping what its output already holds, so a preempted task that is run
//! again goes on where it stopped; [`merge`] joins the shards in manifest order.
//!
//! A path's shard is a hash of the path itself (FNV-1a), not its line number, so adding lines to
//! a manifest moves no path to another shard. Every image is predicted alone (batch 1), so its
//! line is the same bytes whichever shard, machine or order predicts it.
use crate::model::checkpoint::LoadedModel;
use candle_core::Device;
use std::collections::{HashMap, HashSet};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}, line {line}: {detail}")]
    Manifest { path: PathBuf, line: usize, detail: String },
    #[error(
        "--shard {0:?}: give I/N with 0 <= I < N (I counts from 0, as SLURM_ARRAY_TASK_ID and JOB_COMPLETION_INDEX do)"
    )]
    BadShard(String),
    #[error("{path}, line {line}: not a prediction line: {detail}")]
    BadLine { path: PathBuf, line: usize, detail: String },
    #[error(
        "{missing} of {total} manifest entries are in no shard output (first: {first}); run the shards that hold them again"
    )]
    Missing { missing: usize, total: usize, first: String },
}

/// One of N shards, counted from 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl std::str::FromStr for Shard {
    type Err = ShardError;
    fn from_str(s: &str) -> Result<Self, ShardError> {
        let bad = || ShardError::BadShard(s.to_string());
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count) = (i.trim().parse().map_err(|_| bad())?, n.trim().parse().map_err(|_| bad())?);
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

impl Shard {
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// FNV-1a (64 bit) of the entry: stable across runs, machines and Rust versions, which
    /// `std`'s hasher does not promise.
    pub fn holds(&self, entry: &str) -> bool {
        let mut h: u64 = 0xCBF2_9CE4_8422_2325;
        for b in entry.bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01B3);
        }
        (h % self.count as u64) as usize == self.index
    }
}

/// The manifest's entries: one path per line (or a `file://` URL), blank lines and `#` comments
/// skipped.
pub fn read_manifest(path: &Path) -> Result<Vec<String>, ShardError> {
    let io = |source| ShardError::Io { path: path.to_path_buf(), source };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(file).split(b'\n').enumerate() {
        let line = line.map_err(io)?;
        let text = String::from_utf8(line).map_err(|_| ShardError::Manifest {
            path: path.into(),
            line: i + 1,
            detail: "not UTF-8 text".into(),
        })?;
        let entry = text.trim_end_matches('\r').trim();
        if !entry.is_empty() && !entry.starts_with('#') {
            out.push(entry.to_string());
        }
    }
    Ok(out)
}

/// The local file an entry names.
fn local_path(entry: &str) -> Result<PathBuf, String> {
    if let Some(p) = entry.strip_prefix("file://") {
        return Ok(PathBuf::from(p));
    }
    if entry.starts_with("http://") || entry.starts_with("https://") {
        return Err("a URL: download it first and list the downloaded file".into());
    }
    Ok(PathBuf::from(entry))
}

/// The `image` of each whole line of an output file. A last line without its newline (a task
/// killed mid-write) is cut off, so it is predicted again; any other bad line is an error.
pub fn read_done(out: &Path) -> Result<HashMap<String, String>, ShardError> {
    let io = |source| ShardError::Io { path: out.to_path_buf(), source };
    let bytes = match std::fs::read(out) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashMap::new()),
        Err(e) => return Err(io(e)),
    };
    let whole = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    if whole < bytes.len() {
        let f = std::fs::OpenOptions::new().write(true).open(out).map_err(io)?;
        f.set_len(whole as u64).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    let mut done = HashMap::new();
    for (i, line) in bytes[..whole].split(|b| *b == b'\n').enumerate().filter(|(_, l)| !l.is_empty()) {
        let bad = |detail: String| ShardError::BadLine { path: out.to_path_buf(), line: i + 1, detail };
        let v: serde_json::Value = serde_json::from_slice(line).map_err(|e| bad(e.to_string()))?;
        let image = v.get("image").and_then(|x| x.as_str()).ok_or_else(|| bad("no \"image\"".into()))?;
        done.insert(image.to_string(), String::from_utf8_lossy(line).into_owned());
    }
    Ok(done)
}

/// One output line: the entry as listed, and its top cultures or why it has none.
pub fn prediction_line(entry: &str, result: Result<Vec<crate::predict::Ranked>, String>) -> String {
    let v = match result {
        Ok(top) => serde_json::json!({ "image": entry, "top": top }),
        Err(e) => serde_json::json!({ "image": entry, "error": e }),
    };
    v.to_string()
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ShardReport {
    /// Entries of this shard.
    pub entries: usize,
    pub already_done: usize,
    pub predicted: usize,
    /// Lines that say why an entry has no prediction (unreadable, not an image...).
    pub errors: usize,
}

/// Predicts this shard's entries that `out` does not hold yet, appending a line each.
pub fn run(
    model: &LoadedModel,
    entries: &[String],
    shard: Shard,
    out: &Path,
    top_k: usize,
    device: &Device,
    mut progress: impl FnMut(usize, usize),
) -> Result<ShardReport, ShardError> {
    let io = |source| ShardError::Io { path: out.to_path_buf(), source };
    let done = read_done(out)?;
    let mine: Vec<&String> = entries.iter().filter(|e| shard.holds(e)).collect();
    let todo: Vec<&String> = mine.iter().copied().filter(|e| !done.contains_key(e.as_str())).collect();
    let mut report = ShardReport { entries: mine.len(), already_done: mine.len() - todo.len(), ..Default::default() };
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(out).map_err(io)?;
    for (i, entry) in todo.iter().enumerate() {
        progress(i, todo.len());
        let result = local_path(entry).and_then(|p| {
            crate::predict::predict_file(model, &p, top_k, crate::predict::CamKind::Sum, None, device)
                .map(|(p, _)| p.top)
                .map_err(|e| e.to_string())
        });
        if result.is_err() {
            report.errors += 1;
        }
        // One write per line, straight to the file: a kill leaves whole lines and at most one
        // torn last line, which the next run cuts off.
        let mut line = prediction_line(entry, result);
        line.push('\n');
        file.write_all(line.as_bytes()).map_err(io)?;
        if i % 64 == 63 {
            file.sync_data().map_err(io)?;
        }
        report.predicted += 1;
    }
    file.sync_all().map_err(io)?;
    Ok(report)
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct MergeReport {
    pub lines: usize,
    pub errors: usize,
}

/// Joins shard outputs into one file in manifest order (written atomically). Every manifest
/// entry must be in some output.
pub fn merge(entries: &[String], outputs: &[PathBuf], dest: &Path) -> Result<MergeReport, ShardError> {
    let mut all: HashMap<String, String> = HashMap::new();
    for o in outputs {
        all.extend(read_done(o)?);
    }
    let missing: Vec<&String> = entries.iter().filter(|e| !all.contains_key(e.as_str())).collect();
    if let Some(first) = missing.first() {
        return Err(ShardError::Missing { missing: missing.len(), total: entries.len(), first: first.to_string() });
    }
    let mut seen = HashSet::new();
    let mut text = String::new();
    let mut report = MergeReport::default();
    for e in entries.iter().filter(|e| seen.insert(e.as_str())) {
        let line = &all[e.as_str()];
        report.errors += usize::from(line.contains("\"error\":"));
        report.lines += 1;
        text.push_str(line);
        text.push('\n');
    }
    crate::fsutil::write_bytes_atomic(dest, text.as_bytes())
        .map_err(|e| ShardError::Io { path: dest.to_path_buf(), source: e.source })?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_partition_a_manifest_and_parse_as_schedulers_count() {
        let entries: Vec<String> = (0..1000).map(|i| format!("/data/met/{i}.jpg")).collect();
        let shards: Vec<Shard> = (0..3).map(|i| format!("{i}/3").parse().unwrap()).collect();
        for e in &entries {
            assert_eq!(shards.iter().filter(|s| s.holds(e)).count(), 1, "{e}");
        }
        let sizes: Vec<usize> = shards.iter().map(|s| entries.iter().filter(|e| s.holds(e)).count()).collect();
        assert!(sizes.iter().all(|n| (250..420).contains(n)), "{sizes:?}");
        for bad in ["3/3", "1", "a/2", "0/0", "-1/2"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_torn_last_line_is_cut_off_and_other_bad_lines_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("o.jsonl");
        std::fs::write(&out, "{\"image\":\"a.jpg\",\"top\":[]}\n{\"image\":\"b.j").unwrap();
        let done = read_done(&out).unwrap();
        assert_eq!(done.keys().collect::<Vec<_>>(), ["a.jpg"]);
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "{\"image\":\"a.jpg\",\"top\":[]}\n");
        std::fs::write(&out, "{\"image\":\"a.jpg\"}\nnot json\n").unwrap();
        let err = read_done(&out).unwrap_err().to_string();
        assert!(err.contains("o.jsonl, line 2"), "{err}");
        let m = dir.path().join("m.txt");
        std::fs::write(&m, "# list\n\na.jpg\r\nfile:///x/b.jpg\n").unwrap();
        assert_eq!(read_manifest(&m).unwrap(), ["a.jpg", "file:///x/b.jpg"]);
        assert_eq!(local_path("file:///x/b.jpg").unwrap(), PathBuf::from("/x/b.jpg"));
        assert!(local_path("https://images.metmuseum.org/x.jpg").is_err());
    }
}
