//! MetObjects.csv rows as the real file has them (shared by the integration tests and the
//! app's inline tests, which include this file by path).
#![allow(dead_code)]

/// MetObjects.csv's real 54-column header (tests/fixtures/met_header.csv, BOM included).
pub const MET_HEADER: &str = include_str!("../fixtures/met_header.csv");

pub fn met_columns() -> Vec<String> {
    MET_HEADER.trim_start_matches('\u{feff}').trim().split(',').map(str::to_string).collect()
}

/// One MetObjects.csv row with the given fields set (others empty or a lone space, as in the
/// real file).
pub fn met_row(fields: &[(&str, &str)]) -> String {
    let cols = met_columns();
    let mut rec: Vec<String> = cols.iter().map(|_| " ".to_string()).collect();
    for (k, v) in fields {
        let i = cols.iter().position(|c| c == k).unwrap_or_else(|| panic!("no column {k}"));
        rec[i] = v.to_string();
    }
    let mut w = csv::WriterBuilder::new().terminator(csv::Terminator::CRLF).from_writer(Vec::new());
    w.write_record(&rec).unwrap();
    String::from_utf8(w.into_inner().unwrap()).unwrap()
}
