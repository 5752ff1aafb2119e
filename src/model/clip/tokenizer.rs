//! CLIP's tokenizer: byte-level BPE with an end-of-word suffix, read from the checkpoint's
//! `vocab.json` and `merges.txt`, giving the ids `CLIPTokenizerFast` gives (NFC, whitespace runs
//! to one space, lower case; CLIP's split pattern; bytes mapped to printable characters; merges
//! by rank; `<|startoftext|>` ... `<|endoftext|>`, cut at 77 tokens).
//!
//! Written here rather than taken from the `tokenizers` crate: that crate's build (onig's C
//! sources or a wasm-only regex backend, esaxx, and the whole training side) costs the test
//! suite more than a minute of compiling on two cores, which the suite's 15-minute budget does
//! not have, for 150 lines of a fixed, published algorithm. `tests/clip.rs` checks it against
//! `CLIPTokenizerFast` (fixtures by `scripts/make_clip_fixtures.py`).
use std::collections::HashMap;
use std::path::Path;
use unicode_normalization::UnicodeNormalization;

pub const START_OF_TEXT: &str = "<|startoftext|>";
pub const END_OF_TEXT: &str = "<|endoftext|>";
/// CLIP's context length: the text tower's learned positions.
pub const CONTEXT_LENGTH: usize = 77;

/// The pre-tokenizer's pattern, as the published `tokenizer.json` has it. (Its byte-level step
/// splits again with GPT-2's pattern, which leaves these pieces whole: none holds whitespace.)
const PATTERN: &str = r"'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("{path}: {detail}")]
    File { path: std::path::PathBuf, detail: String },
}

#[derive(Debug, Clone)]
pub struct Tokenizer {
    vocab: HashMap<String, u32>,
    /// (left id, right id) -> (rank, merged id).
    merges: HashMap<(u32, u32), (usize, u32)>,
    byte_chars: [char; 256],
    pattern: regex::Regex,
    whitespace: regex::Regex,
    pub start: u32,
    pub end: u32,
}

/// GPT-2's reversible map from bytes to printable characters (printable Latin-1 map to
/// themselves, the rest to code points from 256 up).
fn bytes_to_chars() -> [char; 256] {
    let mut out = ['\0'; 256];
    let mut extra = 0;
    for b in 0..=255u32 {
        let printable = (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || (0xae..=0xff).contains(&b);
        out[b as usize] = if printable {
            char::from_u32(b).unwrap_or('\0')
        } else {
            extra += 1;
            char::from_u32(255 + extra).unwrap_or('\0')
        };
    }
    out
}

/// The printable character byte `b` stands for in the vocabulary.
pub fn byte_char(b: u8) -> char {
    bytes_to_chars()[b as usize]
}

impl Tokenizer {
    pub fn from_files(vocab: &Path, merges: &Path) -> Result<Self, TokenizerError> {
        let read = |p: &Path| {
            std::fs::read_to_string(p).map_err(|e| TokenizerError::File { path: p.into(), detail: e.to_string() })
        };
        Self::from_strs(&read(vocab)?, &read(merges)?).map_err(|(which, detail)| TokenizerError::File {
            path: if which == "vocab" { vocab.into() } else { merges.into() },
            detail,
        })
    }

    /// `Err(("vocab" | "merges", what is wrong))`.
    pub fn from_strs(vocab: &str, merges: &str) -> Result<Self, (&'static str, String)> {
        let vocab: HashMap<String, u32> =
            serde_json::from_str(vocab).map_err(|e| ("vocab", format!("not a JSON map of token to id: {e}")))?;
        let id = |tok: &str, line: usize| {
            vocab.get(tok).copied().ok_or_else(|| ("merges", format!("line {line}: {tok:?} is not in the vocabulary")))
        };
        let mut table = HashMap::new();
        let lines = merges.lines().enumerate().filter(|(i, l)| !(l.is_empty() || *i == 0 && l.starts_with("#version")));
        for (rank, (i, line)) in lines.enumerate() {
            let Some((a, b)) = line.split_once(' ') else {
                return Err(("merges", format!("line {}: {line:?} is not two symbols", i + 1)));
            };
            table.insert((id(a, i + 1)?, id(b, i + 1)?), (rank, id(&format!("{a}{b}"), i + 1)?));
        }
        let special = |t: &str| vocab.get(t).copied().ok_or_else(|| ("vocab", format!("{t} is missing")));
        let (start, end) = (special(START_OF_TEXT)?, special(END_OF_TEXT)?);
        Ok(Self {
            merges: table,
            byte_chars: bytes_to_chars(),
            pattern: regex::Regex::new(PATTERN).map_err(|e| ("vocab", e.to_string()))?,
            whitespace: regex::Regex::new(r"\s+").map_err(|e| ("vocab", e.to_string()))?,
            vocab,
            start,
            end,
        })
    }

    /// The BPE ids of one pre-tokenized word.
    fn word(&self, word: &str, out: &mut Vec<u32>) {
        let chars: Vec<char> = word.bytes().map(|b| self.byte_chars[b as usize]).collect();
        let mut ids: Vec<u32> = chars
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let s = if i + 1 == chars.len() { format!("{c}</w>") } else { c.to_string() };
                self.vocab.get(&s).copied().unwrap_or(self.end)
            })
            .collect();
        // The lowest-ranked adjacent pair merges first (leftmost on ties), as `tokenizers` does.
        while let Some((at, merged)) = ids
            .windows(2)
            .enumerate()
            .filter_map(|(i, w)| self.merges.get(&(w[0], w[1])).map(|&(rank, id)| (rank, i, id)))
            .min()
            .map(|(_, i, id)| (i, id))
        {
            ids[at] = merged;
            ids.remove(at + 1);
        }
        out.extend(ids);
    }

    /// Ids of `text`, without the start and end tokens and without cutting.
    pub fn encode_plain(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::new();
        // The special tokens are matched in the raw text, before normalisation.
        let mut rest = text;
        while !rest.is_empty() {
            let next = [(START_OF_TEXT, self.start), (END_OF_TEXT, self.end)]
                .into_iter()
                .filter_map(|(s, id)| rest.find(s).map(|at| (at, s.len(), id)))
                .min();
            let (plain, special) = match next {
                Some((at, len, id)) => (&rest[..at], Some((len, id, at))),
                None => (rest, None),
            };
            let normal: String = plain.nfc().collect::<String>();
            let normal = self.whitespace.replace_all(&normal, " ");
            let lower: String = normal.chars().flat_map(char::to_lowercase).collect();
            for m in self.pattern.find_iter(&lower) {
                self.word(m.as_str(), &mut out);
            }
            match special {
                Some((len, id, at)) => {
                    out.push(id);
                    rest = &rest[at + len..];
                }
                None => rest = "",
            }
        }
        out
    }

    /// `<|startoftext|>` ids `<|endoftext|>`, the ids cut so that the whole fits `max_len`.
    pub fn encode(&self, text: &str, max_len: usize) -> Vec<u32> {
        let mut ids = self.encode_plain(text);
        ids.truncate(max_len.saturating_sub(2));
        let mut out = Vec::with_capacity(ids.len() + 2);
        out.push(self.start);
        out.extend(ids);
        out.push(self.end);
        out
    }

    /// Texts as one batch tensor (texts x longest), each cut at [`CONTEXT_LENGTH`] and padded
    /// after its end token with more end tokens (as `CLIPTokenizerFast` pads).
    pub fn batch(&self, texts: &[&str], device: &candle_core::Device) -> candle_core::Result<candle_core::Tensor> {
        let rows: Vec<Vec<u32>> = texts.iter().map(|t| self.encode(t, CONTEXT_LENGTH)).collect();
        let len = rows.iter().map(Vec::len).max().unwrap_or(2);
        let flat: Vec<u32> = rows
            .into_iter()
            .flat_map(|mut r| {
                r.resize(len, self.end);
                r
            })
            .collect();
        candle_core::Tensor::from_vec(flat, (texts.len(), len), device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_map_is_a_bijection_onto_printable_characters() {
        let m = bytes_to_chars();
        let set: std::collections::HashSet<char> = m.iter().copied().collect();
        assert_eq!(set.len(), 256);
        assert_eq!(m[b'a' as usize], 'a');
        assert_eq!(m[b' ' as usize], '\u{120}');
        assert!(m.iter().all(|c| !c.is_whitespace() && !c.is_control()));
    }

    #[test]
    fn broken_files_are_named_with_the_line() {
        let vocab = r#"{"a": 0, "b": 1, "<|startoftext|>": 2, "<|endoftext|>": 3}"#;
        let err = Tokenizer::from_strs(vocab, "#version: 0.2\na b\n").unwrap_err();
        assert_eq!(err.0, "merges");
        assert!(err.1.contains("line 2") && err.1.contains("\"ab\""), "{}", err.1);
        let err = Tokenizer::from_strs(r#"{"a": 0}"#, "").unwrap_err();
        assert!(err.1.contains("<|startoftext|> is missing"), "{}", err.1);
        assert!(Tokenizer::from_strs("[1, 2]", "").unwrap_err().1.contains("not a JSON map"));
    }
}
