//! Conversion between byte offsets and the `(line, column)` positions CPython reports.
//!
//! CPython numbers lines from 1 and measures columns in UTF-8 **bytes** from the start of
//! the line, both in AST nodes and in `code.co_positions()`. Line breaks are `\n`, `\r\n`
//! and a lone `\r` (the tokenizer's universal newlines); nothing else ends a line, so this
//! index deliberately differs from `str::lines` and from Python's `str.splitlines`.

/// A position as CPython reports it: 1-based line, 0-based column in UTF-8 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LineColumn {
    /// 1-based line number.
    pub line: u32,
    /// Byte offset from the start of the line (UTF-8), as in `co_positions()`.
    pub column: u32,
}

/// Maps byte offsets to [`LineColumn`]s and back for one text.
#[derive(Clone, Debug)]
pub struct LineIndex {
    /// Byte offset where each line starts; `starts[0] == 0`.
    starts: Vec<u32>,
    /// Byte offset where each line's content ends (its line break excluded).
    content_ends: Vec<u32>,
}

impl LineIndex {
    /// Indexes `text`. Texts longer than `u32::MAX` bytes are indexed up to that length;
    /// [`crate::SourceFile`] refuses such texts before getting here.
    pub fn new(text: &str) -> Self {
        let bytes = text.as_bytes();
        let limit = bytes.len().min(u32::MAX as usize);
        let mut starts = vec![0u32];
        let mut content_ends = Vec::new();
        let mut i = 0usize;
        while i < limit {
            let b = bytes.get(i).copied().unwrap_or(b'\n');
            if b == b'\n' || b == b'\r' {
                content_ends.push(i as u32);
                let crlf = b == b'\r' && bytes.get(i + 1) == Some(&b'\n');
                i += if crlf { 2 } else { 1 };
                starts.push(i.min(limit) as u32);
            } else {
                i += 1;
            }
        }
        content_ends.push(limit as u32);
        LineIndex { starts, content_ends }
    }

    /// Number of lines; a text ending in a line break has an empty last line.
    pub fn line_count(&self) -> u32 {
        self.starts.len() as u32
    }

    /// Byte offset where `line` (1-based) starts.
    pub fn line_start(&self, line: u32) -> Option<u32> {
        let index = usize::try_from(line.checked_sub(1)?).ok()?;
        self.starts.get(index).copied()
    }

    /// Byte offset where the content of `line` ends, before its line break.
    pub fn line_content_end(&self, line: u32) -> Option<u32> {
        let index = usize::try_from(line.checked_sub(1)?).ok()?;
        self.content_ends.get(index).copied()
    }

    /// Byte offset of `position`, if the line exists and the column is not past the end of
    /// its content. Whether the offset is a character boundary is the caller's concern
    /// ([`crate::SourceFile::offset`] checks it).
    pub fn offset(&self, position: LineColumn) -> Option<u32> {
        let start = self.line_start(position.line)?;
        let end = self.line_content_end(position.line)?;
        let offset = start.checked_add(position.column)?;
        (offset <= end).then_some(offset)
    }

    /// The line containing byte `offset`, 1-based. Offsets past the end map to the last line.
    pub fn line_of(&self, offset: u32) -> u32 {
        // `starts` is sorted and starts with 0, so the partition point is at least 1.
        self.starts.partition_point(|&start| start <= offset) as u32
    }

    /// Line and byte column of `offset`.
    pub fn line_column(&self, offset: u32) -> LineColumn {
        let line = self.line_of(offset);
        let start = self.line_start(line).unwrap_or(0);
        LineColumn { line, column: offset.saturating_sub(start) }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn universal_newlines() {
        let index = LineIndex::new("a\nbc\r\nd\re");
        assert_eq!(index.line_count(), 4);
        assert_eq!(index.line_start(2), Some(2));
        assert_eq!(index.line_content_end(2), Some(4));
        assert_eq!(index.line_start(3), Some(6));
        assert_eq!(index.line_start(4), Some(8));
        assert_eq!(index.offset(LineColumn { line: 2, column: 2 }), Some(4), "end of content is addressable");
        assert_eq!(index.offset(LineColumn { line: 2, column: 3 }), None);
        assert_eq!(index.offset(LineColumn { line: 0, column: 0 }), None);
        assert_eq!(index.offset(LineColumn { line: 9, column: 0 }), None);
        assert_eq!(index.line_column(5), LineColumn { line: 2, column: 3 });
        assert_eq!(index.line_column(8), LineColumn { line: 4, column: 0 });
    }

    #[test]
    fn trailing_newline_makes_empty_last_line() {
        let index = LineIndex::new("x\n");
        assert_eq!(index.line_count(), 2);
        assert_eq!(index.offset(LineColumn { line: 2, column: 0 }), Some(2));
    }

    #[test]
    fn columns_are_bytes() {
        let index = LineIndex::new("é = lambda: 1\n");
        // 'é' is two bytes: `lambda` starts at byte 5, character 4.
        assert_eq!(index.offset(LineColumn { line: 1, column: 5 }), Some(5));
    }
}
