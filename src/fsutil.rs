//! Atomic file writes: a temporary file in the same folder, flushed to disk, then renamed over
//! the target, so a crash leaves the old file or the new one, never a torn one.
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
#[error("cannot write {path}: {source}")]
pub struct WriteError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

/// Writes through `fill` into a temporary file next to `path`, then renames it into place.
pub fn write_atomic(
    path: &Path,
    fill: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> Result<(), WriteError> {
    let wrap = |source| WriteError { path: path.to_path_buf(), source };
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(wrap)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{}.", path.file_name().and_then(|n| n.to_str()).unwrap_or("file")))
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(wrap)?;
    fill(tmp.as_file_mut()).map_err(wrap)?;
    tmp.as_file_mut().flush().map_err(wrap)?;
    tmp.as_file().sync_all().map_err(wrap)?;
    tmp.persist(path).map_err(|e| wrap(e.error))?;
    Ok(())
}

pub fn write_bytes_atomic(path: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    write_atomic(path, |f| write_chunked(f, bytes))
}

/// Bytes written per `write` call by [`write_chunked`].
const WRITE_CHUNK: usize = 1 << 20;

/// `out.write_all(bytes)` one MiB at a time. On Linux (ext4 here) one `write` of a whole
/// checkpoint copied it into the page cache at ~400 MB/s, in 1 MiB calls at ~4 GB/s (a 200 MB
/// file: 0.50 s against 0.05 s, Python's `os.write` and `strace -T` of `train` alike): 0.8 s of
/// every training epoch went to writing its two checkpoints.
pub fn write_chunked(out: &mut impl Write, bytes: &[u8]) -> std::io::Result<()> {
    bytes.chunks(WRITE_CHUNK).try_for_each(|c| out.write_all(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_write_leaves_old_file_and_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.txt");
        write_bytes_atomic(&p, b"old").unwrap();
        let err = write_atomic(&p, |f| {
            f.write_all(b"half")?;
            Err(std::io::Error::other("disk full"))
        })
        .unwrap_err();
        assert!(err.to_string().contains("a.txt"));
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
