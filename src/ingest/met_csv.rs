//! Streaming `MetObjects.csv`: keeps public-domain works classified as "Paintings" and maps
//! their location tags to culture groups. The file (~300 MB) is read record by record; bad
//! lines are skipped and reported with their line number.
use crate::catalog::NewArtwork;
use crate::culture::{CultureMapping, RawTags};
use std::io::Read;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum CsvError {
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}, line 1: the header lacks column(s) {missing:?}{hint}")]
    MissingColumns { path: PathBuf, missing: Vec<&'static str>, hint: String },
    #[error("{path}: {detail}")]
    Csv { path: PathBuf, detail: String },
    #[error("{help}")]
    LfsPointer { path: PathBuf, pointer: super::met_lfs::LfsPointer, help: String },
}

/// A line that was skipped, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SkippedLine {
    pub line: u64,
    pub reason: String,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CsvScan {
    pub rows: u64,
    pub paintings: u64,
    /// Rows whose Classification is not "Paintings".
    pub not_painting: u64,
    /// Paintings whose Is Public Domain is not "True".
    pub not_public_domain: u64,
    pub skipped: Vec<SkippedLine>,
    /// Lines skipped beyond the ones listed in `skipped`.
    pub skipped_unlisted: u64,
    pub bytes: u64,
}

/// How many skipped lines are listed one by one; the rest are counted.
const MAX_LISTED: usize = 1000;

/// The columns we read.
const COLUMNS: [&str; 11] = [
    "Object ID",
    "Is Public Domain",
    "Classification",
    "Culture",
    "Country",
    "Artist Nationality",
    "Title",
    "Artist Display Name",
    "Object Date",
    "Medium",
    "Link Resource",
];

struct CountingReader<R> {
    inner: R,
    count: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }
}

fn is_painting(classification: &str) -> bool {
    classification.split('|').any(|c| c.trim().eq_ignore_ascii_case("paintings"))
}

/// Streams the CSV at `path`, calling `keep` for each public-domain painting (in file order)
/// and `progress` with bytes read every few thousand rows. Stops early after `limit` kept works.
pub fn scan(
    path: &Path,
    mapping: &CultureMapping,
    limit: Option<usize>,
    mut keep: impl FnMut(NewArtwork),
    mut progress: impl FnMut(u64, u64),
) -> Result<CsvScan, CsvError> {
    let io = |source| CsvError::Io { path: path.to_path_buf(), source };
    let mut file = std::fs::File::open(path).map_err(io)?;
    if let Some(pointer) = super::met_lfs::read_pointer(path) {
        let help = super::met_lfs::pointer_help(path, &pointer);
        return Err(CsvError::LfsPointer { path: path.to_path_buf(), pointer, help });
    }
    let total = file.metadata().map_err(io)?.len();
    // The csv crate (1.x) numbers the lines after a CRLF-terminated header one too low
    // (MetObjects.csv ends its lines with CRLF; a BOM makes no difference, tests/bad_input.rs
    // found it), so look at how the first line ends and correct the numbers.
    let mut first_line = Vec::new();
    std::io::BufRead::read_until(
        &mut std::io::Read::take(std::io::BufReader::new(&mut file), 1 << 20),
        b'\n',
        &mut first_line,
    )
    .map_err(io)?;
    std::io::Seek::rewind(&mut file).map_err(io)?;
    let crlf_header = first_line.ends_with(b"\r\n");
    // The lag comes from a CRLF before the record: a record after a bare LF (a mixed file,
    // tests/bad_input.rs found it) is counted right. Only skipped lines are numbered, so
    // looking at the two bytes before such a record costs nothing in a clean file.
    let after_bare_lf = |byte: u64| -> bool {
        let mut two = [0u8; 2];
        byte >= 2
            && std::fs::File::open(path)
                .and_then(|mut f| {
                    std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(byte - 2))?;
                    std::io::Read::read_exact(&mut f, &mut two)
                })
                .is_ok()
            && two[1] == b'\n'
            && two[0] != b'\r'
    };
    let fix = |pos: Option<&csv::Position>, line: u64| match pos {
        Some(p) if crlf_header && !after_bare_lf(p.byte()) => p.line() + 1,
        Some(p) => p.line(),
        None if crlf_header => line + 1,
        None => line,
    };
    let count = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let reader = CountingReader { inner: std::io::BufReader::with_capacity(1 << 20, file), count: count.clone() };
    let mut rdr = csv::ReaderBuilder::new().flexible(true).has_headers(true).from_reader(reader);
    let header = rdr.byte_headers().map_err(|e| CsvError::Csv { path: path.into(), detail: e.to_string() })?.clone();
    let names: Vec<String> =
        header.iter().map(|h| String::from_utf8_lossy(h).trim_start_matches('\u{feff}').trim().to_string()).collect();
    let idx: Vec<Option<usize>> = COLUMNS.iter().map(|c| names.iter().position(|n| n == c)).collect();
    let missing: Vec<&'static str> = COLUMNS.iter().zip(&idx).filter(|(_, i)| i.is_none()).map(|(c, _)| *c).collect();
    if !missing.is_empty() {
        let hint = match names.as_slice() {
            [one] if one.contains(';') => {
                "; the file seems to use ';' as delimiter, MetObjects.csv uses ','".to_string()
            }
            [one] if one.contains('\t') => "; the file seems to be tab-separated, MetObjects.csv uses ','".to_string(),
            _ => String::new(),
        };
        return Err(CsvError::MissingColumns { path: path.into(), missing, hint });
    }
    let idx: Vec<usize> = idx.into_iter().map(|i| i.unwrap_or_default()).collect();
    let [id_i, pd_i, class_i, cul_i, cty_i, nat_i, title_i, artist_i, date_i, medium_i, link_i] = idx[..] else {
        unreachable!("COLUMNS has 11 entries")
    };
    let mut out = CsvScan::default();
    let mut record = csv::ByteRecord::new();
    let mut kept = 0usize;
    let skip = |out: &mut CsvScan, line: u64, reason: String| {
        if out.skipped.len() < MAX_LISTED {
            out.skipped.push(SkippedLine { line, reason });
        } else {
            out.skipped_unlisted += 1;
        }
    };
    loop {
        let line = rdr.position().line();
        match rdr.read_byte_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                let line = fix(e.position(), line);
                skip(&mut out, line, format!("unreadable CSV: {e}"));
                if matches!(e.kind(), csv::ErrorKind::Io(_)) {
                    break;
                }
                continue;
            }
        }
        out.rows += 1;
        if out.rows.is_multiple_of(4096) {
            progress(count.load(std::sync::atomic::Ordering::Relaxed), total);
        }
        let line = fix(record.position(), line);
        if record.len() != header.len() {
            skip(&mut out, line, format!("{} fields, the header has {}", record.len(), header.len()));
            continue;
        }
        let field = |i: usize| String::from_utf8_lossy(&record[i]).trim().to_string();
        // Cheap tests first: most of the 480k rows are not paintings.
        if !is_painting(&String::from_utf8_lossy(&record[class_i])) {
            out.not_painting += 1;
            continue;
        }
        if !String::from_utf8_lossy(&record[pd_i]).trim().eq_ignore_ascii_case("true") {
            out.not_public_domain += 1;
            continue;
        }
        let id = field(id_i);
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
            skip(&mut out, line, format!("Object ID {id:?} is not a number"));
            continue;
        }
        let tags = RawTags { culture: field(cul_i), country: field(cty_i), nationality: field(nat_i) };
        out.paintings += 1;
        keep(NewArtwork {
            source: "met".into(),
            link: Some(field(link_i)).filter(|l| !l.is_empty()),
            mapped_group: mapping.group_of(&tags).map(str::to_string),
            tags,
            title: field(title_i),
            artist: field(artist_i),
            date: field(date_i),
            medium: field(medium_i),
            image_url: None,
            source_id: id,
        });
        kept += 1;
        if limit.is_some_and(|l| kept >= l) {
            break;
        }
    }
    out.bytes = count.load(std::sync::atomic::Ordering::Relaxed);
    progress(out.bytes, total);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skipped_lines_carry_their_true_number_whatever_the_line_ends_and_bom() {
        let header = COLUMNS.join(",");
        let good = vec!["x"; COLUMNS.len()].join(",");
        for (bom, eol) in [(false, "\n"), (false, "\r\n"), (true, "\n"), (true, "\r\n")] {
            let body = [header.as_str(), &good, "1,2", &good].join(eol);
            let bytes = [if bom { &b"\xEF\xBB\xBF"[..] } else { b"" }, body.as_bytes()].concat();
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("MetObjects.csv");
            std::fs::write(&path, bytes).unwrap();
            let scan = scan(&path, &CultureMapping::study_default(), None, |_| {}, |_, _| {}).unwrap();
            let lines: Vec<u64> = scan.skipped.iter().map(|s| s.line).collect();
            assert_eq!(lines, [3], "bom {bom}, line end {eol:?}");
        }
    }

    /// A CRLF file with a bare LF inside one line (the case tests/bad_input.rs found): the
    /// skipped lines still carry their physical numbers.
    #[test]
    fn skipped_lines_keep_their_numbers_in_a_file_of_mixed_line_ends() {
        let header = COLUMNS.join(",");
        let good = vec!["x"; COLUMNS.len()].join(",");
        let body = format!("{header}\r\n{good}\r\n1,2\r\n{good}\r\n3\n4,5\r\n{good}\r\n6");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("MetObjects.csv");
        std::fs::write(&path, body).unwrap();
        let scan = scan(&path, &CultureMapping::study_default(), None, |_| {}, |_, _| {}).unwrap();
        let lines: Vec<u64> = scan.skipped.iter().map(|s| s.line).collect();
        assert_eq!(lines, [3, 5, 6, 8]);
    }
}
