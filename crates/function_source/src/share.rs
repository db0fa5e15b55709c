//! Sending a factory text without repeating the original lines it shares.
//!
//! A by-source stream carries two texts per function: the factory source the receiver compiles
//! and the function's original lines, which the receiver puts into `linecache` for tracebacks.
//! Most lines are the same in both (only the wrapper lines, a neutralised `def` line and the
//! hand-up lines differ), so the stream sends the original lines once and builds the factory
//! text from [`Piece`]s: its own lines where they differ, slices of the original elsewhere.
//!
//! ```
//! use function_source::share::{shared_pieces, Piece};
//!
//! let original = "def f(x, y=3):\n    z = x * 2\n    return z + y\n";
//! // The factory text: the def line neutralised, a hand-up line added; it starts at line 10,
//! // as the original does.
//! let factory = "def f(x, y=None):\n    z = x * 2\n    return z + y\nRESULT = f\n";
//! let pieces = shared_pieces(factory, 10, original, 10, 1);
//! assert_eq!(
//!     pieces,
//!     vec![
//!         Piece::Text("def f(x, y=None):\n"),
//!         Piece::Original { start: 15, end: 46 },
//!         Piece::Text("RESULT = f\n"),
//!     ]
//! );
//! let rebuilt: String = pieces
//!     .iter()
//!     .map(|p| match p {
//!         Piece::Text(t) => t.to_string(),
//!         Piece::Original { start, end } => original.chars().skip(*start).take(end - start).collect(),
//!     })
//!     .collect();
//! assert_eq!(rebuilt, factory);
//! ```
//!
//! # Guarantees
//!
//! - Concatenating the pieces in order, with each `Original` replaced by the characters
//!   `start..end` of `original`, gives `text` exactly.
//! - Offsets count Unicode scalar values (Python `str` indices), not bytes.
//! - A line is shared only when it is equal, line break included, to the original line of
//!   the same line number; shared runs shorter than `min_shared` characters stay text.
//! - Consecutive text lines form one `Text` piece; no two `Text` pieces are adjacent.

/// A part of a text rebuilt from its own lines and an original's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Piece<'a> {
    /// Lines of the text itself.
    Text(&'a str),
    /// Characters `start..end` of the original (whole lines).
    Original {
        /// First character (a Python `str` index).
        start: usize,
        /// One past the last character.
        end: usize,
    },
}

/// Splits `text`, whose first line is line `text_first_line` of its file, into pieces, sharing
/// the lines equal to those of `original` (first line `original_first_line`). Lines are split
/// after each `\n`.
pub fn shared_pieces<'a>(
    text: &'a str,
    text_first_line: u32,
    original: &str,
    original_first_line: u32,
    min_shared: usize,
) -> Vec<Piece<'a>> {
    // (byte range, first char) of each original line
    let mut orig_lines: Vec<(&str, usize)> = Vec::new();
    let mut chars = 0usize;
    for line in original.split_inclusive('\n') {
        orig_lines.push((line, chars));
        chars += line.chars().count();
    }
    let mut pieces: Vec<Piece<'a>> = Vec::new();
    // Byte offset where the pending text piece starts.
    let mut text_start: Option<usize> = None;
    // The pending shared run: (byte start in `text`, first char, one past the last char).
    let mut shared: Option<(usize, usize, usize)> = None;
    let flush =
        |pieces: &mut Vec<Piece<'a>>, text_start: &mut Option<usize>, shared: &mut Option<(usize, usize, usize)>| {
            let Some((b0, c0, c1)) = shared.take() else { return };
            if c1 - c0 < min_shared {
                // Too short to be worth a slice: it joins the text around it.
                text_start.get_or_insert(b0);
                return;
            }
            if let Some(t0) = text_start.take() {
                pieces.push(Piece::Text(text.get(t0..b0).unwrap_or_default()));
            }
            pieces.push(Piece::Original { start: c0, end: c1 });
        };
    let mut offset = 0usize;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let index = i64::from(text_first_line) + i as i64 - i64::from(original_first_line);
        let same = usize::try_from(index).ok().and_then(|k| orig_lines.get(k)).filter(|(l, _)| *l == line);
        match (same, shared.as_mut()) {
            // Consecutive lines of the text are consecutive lines of the original.
            (Some(&(l, _)), Some(run)) => run.2 += l.chars().count(),
            (Some(&(l, c)), None) => shared = Some((offset, c, c + l.chars().count())),
            (None, _) => {
                flush(&mut pieces, &mut text_start, &mut shared);
                text_start.get_or_insert(offset);
            }
        }
        offset += line.len();
    }
    flush(&mut pieces, &mut text_start, &mut shared);
    if let Some(t0) = text_start {
        pieces.push(Piece::Text(text.get(t0..).unwrap_or_default()));
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rebuild(pieces: &[Piece<'_>], original: &str) -> String {
        pieces
            .iter()
            .map(|p| match p {
                Piece::Text(t) => t.to_string(),
                Piece::Original { start, end } => original.chars().skip(*start).take(end - start).collect(),
            })
            .collect()
    }

    fn check<'a>(text: &'a str, tl: u32, original: &str, ol: u32, min: usize) -> Vec<Piece<'a>> {
        let pieces = shared_pieces(text, tl, original, ol, min);
        assert_eq!(rebuild(&pieces, original), text);
        for w in pieces.windows(2) {
            assert!(!matches!(w, [Piece::Text(_), Piece::Text(_)]), "{pieces:?}");
        }
        pieces
    }

    #[test]
    fn wrapper_lines_above_and_below() {
        let original = "    def m(self, k=1):\n        return self.__x + k\n";
        let text = "class C:\n    def m(self, k=None):\n        return self.__x + k\n    R = m\nR = C.R\n";
        let p = check(text, 4, original, 5, 1);
        assert_eq!(
            p,
            vec![
                Piece::Text("class C:\n    def m(self, k=None):\n"),
                Piece::Original { start: 22, end: 50 },
                Piece::Text("    R = m\nR = C.R\n"),
            ]
        );
    }

    #[test]
    fn non_ascii_offsets_are_characters() {
        let original = "def f():\n    s = 'é€😀'\n    return s\n";
        let text = "def f():\n    s = 'é€😀'\n    return s\nR = f\n";
        let p = check(text, 1, original, 1, 1);
        assert_eq!(p, vec![Piece::Original { start: 0, end: 36 }, Piece::Text("R = f\n")]);
    }

    #[test]
    fn short_runs_stay_text_and_merge() {
        let original = "a\nb\nc\n";
        let text = "x\nb\ny\n";
        assert_eq!(check(text, 1, original, 1, 5), vec![Piece::Text("x\nb\ny\n")]);
        assert_eq!(
            check(text, 1, original, 1, 1),
            vec![Piece::Text("x\n"), Piece::Original { start: 2, end: 4 }, Piece::Text("y\n")]
        );
    }

    #[test]
    fn lines_outside_the_original_and_no_final_newline() {
        let original = "def f():\n    return 1\n";
        let text = "def f():\n    return 1\nR = f";
        assert_eq!(check(text, 1, original, 1, 1), vec![Piece::Original { start: 0, end: 22 }, Piece::Text("R = f")]);
        // The text starts before the original and ends after it: nothing at a wrong line.
        assert_eq!(check("    return 1\n", 1, original, 1, 1), vec![Piece::Text("    return 1\n")]);
        assert_eq!(check("", 1, original, 1, 1), vec![]);
        assert_eq!(check("def f():\n", 1, "", 1, 1), vec![Piece::Text("def f():\n")]);
    }

    #[test]
    fn a_text_line_between_two_shared_runs() {
        let original = "a1\nb2\nc3\nd4\n";
        let text = "a1\nXX\nc3\nd4\n";
        assert_eq!(
            check(text, 7, original, 7, 1),
            vec![Piece::Original { start: 0, end: 3 }, Piece::Text("XX\n"), Piece::Original { start: 6, end: 12 },]
        );
    }
}
