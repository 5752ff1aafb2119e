//! `MetObjects.csv` is a Git LFS file: a clone or ZIP of metmuseum/openaccess without LFS holds
//! a pointer of ~134 bytes (`version https://git-lfs.github.com/spec/v1`, `oid sha256:...`,
//! `size ...`) where the ~300 MB CSV should be. This module names such a pointer for what it is
//! and downloads the real file from GitHub's LFS media URL: into a `.part` file that a later
//! run continues with an HTTP Range request, checked against the size (and, given the pointer,
//! the SHA-256) before it is renamed into place.
use sha2::Digest;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// GitHub's LFS media URL for the CSV (what `wget` users of metmuseum/openaccess fetch).
pub const MEDIA_URL: &str = "https://media.githubusercontent.com/media/metmuseum/openaccess/master/MetObjects.csv";
const POINTER_PREFIX: &[u8] = b"version https://git-lfs.github.com/spec/v1";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LfsPointer {
    /// Hex SHA-256 of the real file.
    pub sha256: String,
    pub size: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum LfsError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{url}: {detail}")]
    Http { url: String, detail: String },
    #[error(
        "{url}: the download is {got} bytes, the file should be {want}; the partial file was removed, run the command again"
    )]
    WrongSize { url: String, got: u64, want: u64 },
    #[error(
        "{url}: the download's SHA-256 is {got}, the Git LFS pointer says {want}; the file was removed, run the command again"
    )]
    WrongHash { url: String, got: String, want: String },
    #[error("download cancelled; run it again to continue from {done} bytes")]
    Cancelled { done: u64 },
}

/// Parses a Git LFS pointer file's text.
pub fn parse_pointer(bytes: &[u8]) -> Option<LfsPointer> {
    if !bytes.starts_with(POINTER_PREFIX) || bytes.len() > 1024 {
        return None;
    }
    let text = std::str::from_utf8(bytes).ok()?;
    let mut sha = None;
    let mut size = None;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("oid sha256:") {
            sha = Some(v.trim().to_ascii_lowercase());
        } else if let Some(v) = line.strip_prefix("size ") {
            size = v.trim().parse().ok();
        }
    }
    Some(LfsPointer { sha256: sha?, size: size? })
}

/// The pointer at `path`, if that file is one (reads at most 1 KiB).
pub fn read_pointer(path: &Path) -> Option<LfsPointer> {
    let mut head = Vec::new();
    std::fs::File::open(path).ok()?.take(1025).read_to_end(&mut head).ok()?;
    parse_pointer(&head)
}

/// What to tell a user who gave us a pointer instead of the CSV.
pub fn pointer_help(path: &Path, p: &LfsPointer) -> String {
    format!(
        "{} is a Git LFS pointer ({} bytes standing for the {:.0} MB MetObjects.csv), not the CSV itself: \
         a clone or ZIP of metmuseum/openaccess without Git LFS holds only this pointer. Get the file with \
         `artculture import met --fetch-csv` (downloads it from GitHub's LFS media URL into the workspace, \
         resumable, checked against this pointer's size and SHA-256 when you also pass --csv {}), or run \
         `git lfs pull` in your clone",
        path.display(),
        std::fs::metadata(path).map(|m| m.len()).unwrap_or(0),
        p.size as f64 / 1e6,
        path.display()
    )
}

/// How a download ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// The file was there, whole; nothing was asked.
    AlreadyThere,
    /// Downloaded; `resumed_from` bytes came from an earlier run.
    Downloaded { bytes: u64, resumed_from: u64 },
}

/// Downloads `url` to `dest` (via `dest.part`, continued where an earlier run stopped),
/// checking the size against the pointer or the server's length, and the SHA-256 against the
/// pointer. Reports (bytes so far, total if known). Network faults are retried `retries` times,
/// each continuing from the bytes already on disk.
pub fn fetch_csv(
    url: &str,
    dest: &Path,
    pointer: Option<&LfsPointer>,
    retries: u32,
    cancel: &AtomicBool,
    mut progress: impl FnMut(u64, Option<u64>),
) -> Result<Fetched, LfsError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| LfsError::Io { path, source }
    };
    if let Ok(m) = std::fs::metadata(dest)
        && pointer.is_none_or(|p| p.size == m.len())
        && read_pointer(dest).is_none()
    {
        return Ok(Fetched::AlreadyThere);
    }
    if let Some(dir) = dest.parent() {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    let part = PathBuf::from(format!("{}.part", dest.display()));
    let http = reqwest::blocking::Client::builder()
        .connect_timeout(Duration::from_secs(30))
        // Per read, not for the whole 300 MB.
        .timeout(Duration::from_secs(60))
        .user_agent(concat!("artculture/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| LfsError::Http { url: url.into(), detail: e.to_string() })?;
    let resumed_from = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
    let mut total = pointer.map(|p| p.size);
    let mut last = String::new();
    let mut delay = Duration::from_millis(500);
    for attempt in 0..=retries {
        if attempt > 0 {
            std::thread::sleep(delay);
            delay = (delay * 2).min(Duration::from_secs(30));
        }
        match fetch_once(&http, url, &part, &mut total, cancel, &mut progress) {
            Ok(()) => {
                let got = std::fs::metadata(&part).map_err(io(&part))?.len();
                if let Some(want) = total
                    && got != want
                {
                    let _ = std::fs::remove_file(&part);
                    return Err(LfsError::WrongSize { url: url.into(), got, want });
                }
                if let Some(p) = pointer {
                    let got = sha256_of(&part).map_err(io(&part))?;
                    if got != p.sha256 {
                        let _ = std::fs::remove_file(&part);
                        return Err(LfsError::WrongHash { url: url.into(), got, want: p.sha256.clone() });
                    }
                }
                std::fs::rename(&part, dest).map_err(io(dest))?;
                return Ok(Fetched::Downloaded { bytes: got, resumed_from });
            }
            Err(Once::Cancelled) => {
                return Err(LfsError::Cancelled { done: std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0) });
            }
            Err(Once::Fatal(e)) => return Err(e),
            Err(Once::Retry(d)) => last = d,
        }
    }
    Err(LfsError::Http {
        url: url.into(),
        detail: format!("{last} (gave up after {retries} retries; run it again to continue where it stopped)"),
    })
}

enum Once {
    Retry(String),
    Fatal(LfsError),
    Cancelled,
}

fn fetch_once(
    http: &reqwest::blocking::Client,
    url: &str,
    part: &Path,
    total: &mut Option<u64>,
    cancel: &AtomicBool,
    progress: &mut impl FnMut(u64, Option<u64>),
) -> Result<(), Once> {
    let fatal = |source| Once::Fatal(LfsError::Io { path: part.to_path_buf(), source });
    let have = std::fs::metadata(part).map(|m| m.len()).unwrap_or(0);
    if total.is_some_and(|t| have == t) {
        return Ok(());
    }
    let mut req = http.get(url);
    if have > 0 {
        req = req.header(reqwest::header::RANGE, format!("bytes={have}-"));
    }
    let mut resp = req.send().map_err(|e| Once::Retry(e.to_string()))?;
    let status = resp.status().as_u16();
    let header = |k: reqwest::header::HeaderName| {
        resp.headers().get(k).and_then(|v| v.to_str().ok()).map(str::to_string).unwrap_or_default()
    };
    let (mut file, mut done) = match status {
        206 => {
            // "bytes 100-999/1000": must start where our file ends.
            let range = header(reqwest::header::CONTENT_RANGE);
            let (span, size) = range.trim_start_matches("bytes ").split_once('/').unwrap_or(("", ""));
            if span.split('-').next().and_then(|s| s.parse::<u64>().ok()) != Some(have) {
                return Err(Once::Fatal(LfsError::Http {
                    url: url.into(),
                    detail: format!("asked for bytes from {have}, got \"{range}\""),
                }));
            }
            if let Ok(n) = size.parse::<u64>() {
                total.get_or_insert(n);
            }
            (std::fs::OpenOptions::new().append(true).open(part).map_err(fatal)?, have)
        }
        200 => {
            if let Ok(n) = header(reqwest::header::CONTENT_LENGTH).parse::<u64>() {
                total.get_or_insert(n);
            }
            (std::fs::File::create(part).map_err(fatal)?, 0)
        }
        // Asked past the end: what we have is all there is, or the file changed under us.
        416 => {
            let _ = std::fs::remove_file(part);
            return Err(Once::Retry("the server has fewer bytes than our partial file; starting over".into()));
        }
        s if s == 429 || s >= 500 => return Err(Once::Retry(format!("HTTP {s}"))),
        s => {
            return Err(Once::Fatal(LfsError::Http {
                url: url.into(),
                detail: format!("HTTP {s} (if GitHub moved the file, pass its URL with --csv-url)"),
            }));
        }
    };
    let mut buf = vec![0u8; 1 << 16];
    loop {
        if cancel.load(Ordering::Relaxed) {
            let _ = file.flush();
            return Err(Once::Cancelled);
        }
        let n = match resp.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                let _ = file.flush();
                return Err(Once::Retry(format!("connection dropped after {done} bytes: {e}")));
            }
        };
        file.write_all(&buf[..n]).map_err(fatal)?;
        done += n as u64;
        progress(done, *total);
    }
    file.sync_all().map_err(fatal)?;
    if total.is_some_and(|t| done < t) {
        return Err(Once::Retry(format!("connection closed after {done} of {} bytes", total.unwrap_or(0))));
    }
    Ok(())
}

fn sha256_of(path: &Path) -> std::io::Result<String> {
    let mut f = std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(path)?);
    let mut h = sha2::Sha256::new();
    std::io::copy(&mut f, &mut h)?;
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_real_pointer_is_recognised_and_a_csv_is_not() {
        let p = b"version https://git-lfs.github.com/spec/v1\noid sha256:AE65ED686b2ff727518dba12e3c0c3fa9eb925dc92367ce8557af52768eba08d\nsize 317650992\n";
        let ptr = parse_pointer(p).unwrap();
        assert_eq!(ptr.size, 317_650_992);
        assert_eq!(ptr.sha256, "ae65ed686b2ff727518dba12e3c0c3fa9eb925dc92367ce8557af52768eba08d");
        assert_eq!(parse_pointer(b"\xef\xbb\xbfObject Number,Is Highlight"), None);
        assert_eq!(parse_pointer(b"version https://git-lfs.github.com/spec/v1\nsize 3\n"), None, "no oid");
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("MetObjects.csv");
        std::fs::write(&f, p).unwrap();
        let help = pointer_help(&f, &read_pointer(&f).unwrap());
        assert!(help.contains("Git LFS pointer") && help.contains("318 MB") && help.contains("--fetch-csv"), "{help}");
    }
}
