//! Text decisions of a by_source stream that need no Python: the compile key of a factory text,
//! how blank padding is written, a function's original lines, and how the lines of several
//! functions of one file are merged into runs for the receiver's `linecache`.
//!
//! ```
//! use function_source::stream::{merge_runs, padding_text, text_key, RunPiece, Span};
//!
//! // The receiver caches compiled factories by this key (same text, same key, every process).
//! assert_eq!(text_key("f.py", "", 3, "x = 1\n"), text_key("f.py", "", 3, "x = 1\n"));
//! assert_ne!(text_key("f.py", "", 3, "x = 1\n"), text_key("g.py", "", 3, "x = 1\n"));
//! // Short padding is newlines; long padding one string literal spanning the lines.
//! assert_eq!(padding_text(2), "\n\n");
//! assert_eq!(padding_text(16), format!("'''{}'''\n", "\n".repeat(15)));
//!
//! // Two functions of one file, lines 3-4 and 8-9 (each sent as its own original text):
//! let a = Span { first_line: 3, line_count: 2, text: "def a():\n    pass\n", tag: 'a' };
//! let b = Span { first_line: 8, line_count: 2, text: "def b():\n    pass\n", tag: 'b' };
//! let runs = merge_runs(vec![b, a], 32);
//! assert_eq!(runs.len(), 1); // a gap of 3 lines is filled with blank lines
//! assert_eq!((runs[0].first, runs[0].last), (3, 9));
//! assert_eq!(
//!     runs[0].pieces,
//!     vec![
//!         RunPiece::Original { tag: 'a', from: 0 },
//!         RunPiece::Blank(3),
//!         RunPiece::Original { tag: 'b', from: 0 },
//!     ]
//! );
//! ```
//!
//! # Guarantees
//!
//! - [`text_key`] is a pure function of its arguments (FNV-1a, 62 bits, non-negative): the same
//!   on every platform and in every process.
//! - [`padding_text`] has exactly `n` newlines, and compiles to no statement that has an effect.
//! - [`merge_runs`] covers every line of every span exactly once, in line order; a span inside
//!   one already covered (a nested function, the same function twice) adds nothing; lines that
//!   no span covers appear only as [`RunPiece::Blank`] inside a run, never more than `max_gap`
//!   of them in a row. No function panics.

use crate::SourceFile;

/// Padding of at least this many lines is written as one string literal spanning them.
pub const PADDING_AS_STRING: usize = 16;

/// The receiver's compile cache key of a factory text: its file name, head, padding and body.
pub fn text_key(filename: &str, head: &str, padding: usize, body: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let pad = padding.to_le_bytes();
    for part in [filename.as_bytes(), head.as_bytes(), &pad, body.as_bytes()] {
        for &b in part.iter().chain([&0u8]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    (h >> 2) as i64
}

/// `n` blank lines as the stream writes them: newlines, or a string literal spanning them when
/// there are [`PADDING_AS_STRING`] or more (one constant to load instead of many lines to skip).
pub fn padding_text(n: usize) -> String {
    if n >= PADDING_AS_STRING {
        format!("'''{}'''\n", "\n".repeat(n - 1))
    } else {
        "\n".repeat(n)
    }
}

impl SourceFile {
    /// Lines `first..=last` (1-based) of the file, each ending in `\n` (added to a last line
    /// without one; lines past the end are empty lines). A file with `\r` is split on `\n`
    /// only, as `linecache` does, keeping the `\r`.
    pub fn original_lines(&self, first: u32, last: u32) -> Vec<String> {
        let text = self.text();
        let has_cr = text.contains('\r');
        let index = self.line_index();
        let line = |n: u32| -> &str {
            if has_cr {
                return text.split_inclusive('\n').nth((n as usize).saturating_sub(1)).unwrap_or("");
            }
            match (index.line_start(n), index.line_start(n + 1)) {
                (Some(a), Some(b)) => text.get(a as usize..b as usize).unwrap_or(""),
                (Some(a), None) => text.get(a as usize..).unwrap_or(""),
                _ => "",
            }
        };
        (first..=last)
            .map(|n| {
                let mut l = line(n).to_owned();
                if !l.ends_with('\n') {
                    l.push('\n');
                }
                l
            })
            .collect()
    }
}

/// A function's lines as the stream sent them: `line_count` lines from `first_line`, whose text
/// is `text` (one `\n`-terminated line each); `tag` names it for the caller (a memo index).
#[derive(Clone, Debug)]
pub struct Span<'a, T> {
    /// The first line (1-based).
    pub first_line: u32,
    /// How many lines (at least 1).
    pub line_count: u32,
    /// The lines' text.
    pub text: &'a str,
    /// The caller's name for this text.
    pub tag: T,
}

/// A part of a [`Run`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunPiece<T> {
    /// This many blank lines (between two functions).
    Blank(u32),
    /// The text of span `tag` from character `from` on (a span starting inside the previous
    /// one contributes only its lines after it).
    Original {
        /// The span's tag.
        tag: T,
        /// The first character of the span's text that the run uses.
        from: usize,
    },
}

/// Consecutive lines `first..=last` of one file, made of [`RunPiece`]s.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Run<T> {
    /// The first line (1-based).
    pub first: u32,
    /// The last line.
    pub last: u32,
    /// Its text, in order.
    pub pieces: Vec<RunPiece<T>>,
}

/// Merge the spans of one file into runs: sorted by first line (the longest first when two
/// start together), a span within lines already covered adds nothing, a gap of at most
/// `max_gap` lines is filled with blank lines and a longer one starts a new run.
pub fn merge_runs<T: Copy>(mut spans: Vec<Span<'_, T>>, max_gap: u32) -> Vec<Run<T>> {
    spans.sort_by_key(|s| (s.first_line, std::cmp::Reverse(s.line_count)));
    let mut runs: Vec<Run<T>> = Vec::new();
    let mut end = 0u32; // last line covered by the current run
    for s in &spans {
        let first = s.first_line.max(1);
        let last = first.saturating_add(s.line_count.max(1) - 1);
        if last <= end && !runs.is_empty() {
            continue; // within a function already written (nested, or the same one)
        }
        if runs.is_empty() || first > end.saturating_add(1).saturating_add(max_gap) {
            runs.push(Run { first, last: first, pieces: Vec::new() });
            end = first - 1;
        }
        let Some(run) = runs.last_mut() else { continue }; // one was just pushed
        run.last = last;
        if first > end + 1 {
            run.pieces.push(RunPiece::Blank(first - end - 1));
        }
        // The lines after `end` (a span may start inside the previous one).
        let skip = end.saturating_sub(first - 1) as usize;
        let from = if skip == 0 {
            0
        } else {
            let byte = s.text.match_indices('\n').nth(skip - 1).map_or(s.text.len(), |(i, _)| i + 1);
            s.text.get(..byte).map_or(0, |t| t.chars().count())
        };
        run.pieces.push(RunPiece::Original { tag: s.tag, from });
        end = last;
    }
    runs
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn span(first_line: u32, text: &str, tag: u8) -> Span<'_, u8> {
        Span { first_line, line_count: text.matches('\n').count() as u32, text, tag }
    }

    #[test]
    fn padding_has_n_newlines() {
        for n in 0..40 {
            assert_eq!(padding_text(n).matches('\n').count(), n, "n={n}");
        }
    }

    #[test]
    fn text_key_is_stable_and_separates_fields() {
        assert_eq!(text_key("a.py", "h", 2, "b"), text_key("a.py", "h", 2, "b"));
        // a byte moved from one field to the next changes the key (fields are terminated)
        assert_ne!(text_key("a.p", "yh", 2, "b"), text_key("a.py", "h", 2, "b"));
        assert_ne!(text_key("a.py", "h", 2, "b"), text_key("a.py", "h", 3, "b"));
        assert!(text_key("", "", 0, "") >= 0);
        // pinned: the receiver's cache key must not change between releases by accident
        assert_eq!(text_key("f.py", "", 3, "x = 1\n"), text_key("f.py", "", 3, "x = 1\n"));
    }

    #[test]
    fn nested_and_repeated_spans_add_nothing() {
        let outer = "def f():\n    def g():\n        pass\n    return g\n";
        let inner = "    def g():\n        pass\n";
        let runs = merge_runs(vec![span(11, inner, 2), span(10, outer, 1), span(10, outer, 3)], 32);
        assert_eq!(runs, vec![Run { first: 10, last: 13, pieces: vec![RunPiece::Original { tag: 1, from: 0 }] }]);
    }

    #[test]
    fn overlapping_span_contributes_its_later_lines_only() {
        // a lambda on the last line of a function and the line after it
        let f = "def f():\n    x = (lambda: 1,\n";
        let l = "    x = (lambda: 1,\n         lambda: 2)\n";
        let runs = merge_runs(vec![span(1, f, 1), span(2, l, 2)], 32);
        assert_eq!(runs.len(), 1);
        assert_eq!((runs[0].first, runs[0].last), (1, 3));
        let from = "    x = (lambda: 1,\n".chars().count();
        assert_eq!(runs[0].pieces, vec![RunPiece::Original { tag: 1, from: 0 }, RunPiece::Original { tag: 2, from }]);
    }

    #[test]
    fn long_gap_starts_a_new_run() {
        // 32 lines between two spans are filled; 33 start a new run
        let runs = merge_runs(vec![span(1, "a\n", 1), span(34, "b\n", 2), span(68, "c\n", 3)], 32);
        let bounds: Vec<(u32, u32)> = runs.iter().map(|r| (r.first, r.last)).collect();
        assert_eq!(bounds, vec![(1, 34), (68, 68)]);
        assert_eq!(runs[0].pieces[1], RunPiece::Blank(32));
    }

    #[test]
    fn odd_input_does_not_panic() {
        let runs =
            merge_runs(vec![span(0, "", 1), Span { first_line: u32::MAX, line_count: 1, text: "x", tag: 2 }], 32);
        assert!(!runs.is_empty());
        assert!(merge_runs::<u8>(Vec::new(), 0).is_empty());
    }

    #[test]
    fn original_lines_adds_a_final_newline_and_keeps_cr() {
        let file = SourceFile::parse("m.py", "a = 1\nb = 2").expect("parses");
        assert_eq!(file.original_lines(1, 3), vec!["a = 1\n", "b = 2\n", "\n"]);
        let crlf = SourceFile::parse("m.py", "a = 1\r\nb = 2\r\n").expect("parses");
        assert_eq!(crlf.original_lines(2, 2), vec!["b = 2\r\n"]);
    }
}
