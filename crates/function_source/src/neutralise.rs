//! The function's text with everything the receiver must not evaluate again taken out,
//! every other character keeping its line and byte column.
//!
//! Running a `def` or `lambda` evaluates its decorators, default values and annotations in
//! the enclosing scope. The pickler carries their real values in the function's state, so
//! the rebuilt text must not evaluate them (they may have side effects, be expensive, or
//! name things the receiver lacks). None of them is part of the function's own code object,
//! so taking them out leaves `co_code`, `co_positions()` and the rest unchanged:
//!
//! - decorators are blanked (with any comment lines between them), except that the first one
//!   becomes `@__function_source_keep__` ([`crate::KEEP_NAME`]), which the namespace the factory
//!   runs in binds to an identity (`copy.copy` returns a function unchanged): the line of the
//!   first decorator's expression is the code's `co_firstlineno`, which a decorator-less `def`
//!   would move to the `def` line. A plain name is Python 3.8 grammar; `@(lambda f: f)` (used
//!   before) needs 3.9's relaxed decorators. Only when the original decorator's `@` and its
//!   expression are on different lines (itself 3.9 syntax, `@(\n deco)`) is it `@(\n name)`;
//! - each default value becomes `None` (or `0` where fewer than 4 bytes are available on its
//!   first line) padded with spaces to the original width; a multi-line default keeps its
//!   line breaks, which are inside the parameter list's parentheses;
//! - parameter annotations are blanked from the end of the name (`x: int = 1` becomes
//!   `x      = 1`); the return annotation is blanked with its `->`. A return annotation that
//!   spans lines (outside the parameter list, so its line breaks need brackets) becomes `->(`,
//!   spaces and `)`: the annotation `()`, whose evaluation runs no user code.
//!
//! Lambdas have defaults but no annotations or decorators. A multi-line lambda only parses
//! inside brackets, as in its original context; the factory builder provides them.

use crate::lines::LineColumn;
use crate::locate::{FunctionKind, LocatedFunction};
use crate::scopes::{ParamKind, Span};
use crate::source::NewerSyntax;
use crate::Error;

/// The decorator written in place of the first one; see the module documentation.
const IDENTITY_DECORATOR: &str = "@__function_source_keep__";
/// The same, split where the expression may move to a later line.
const IDENTITY_DECORATOR_OPEN: &str = "@(";
const IDENTITY_DECORATOR_REST: &str = "__function_source_keep__)";

/// A default value that was replaced, so the caller can check it against the function's
/// `__defaults__` (positional) and `__kwdefaults__` (keyword-only).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DefaultValue {
    /// The parameter's name as written (not mangled).
    pub parameter: String,
    /// Keyword-only (`__kwdefaults__`) rather than positional (`__defaults__`).
    pub keyword_only: bool,
    /// Start of the original default expression.
    pub start: LineColumn,
    /// End of the original default expression (exclusive).
    pub end: LineColumn,
}

/// The located node's text with decorators, defaults and annotations neutralised.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NeutralisedFunction {
    /// Lines `first_line..=last_line` of the file, each ending in `\n`: the text before the
    /// node on its first line is replaced by spaces for a lambda and kept (it is indentation)
    /// for a `def`; the text after the node on its last line is dropped.
    pub text: String,
    /// Line of the node's start (the first decorator, if any).
    pub first_line: u32,
    /// Line of the node's end.
    pub last_line: u32,
    /// Byte column where the node starts on `first_line`.
    pub start_column: u32,
    /// The replaced default values: positional parameters first, then keyword-only ones.
    pub defaults: Vec<DefaultValue>,
    /// How many decorators the node had.
    pub decorator_count: usize,
    /// Syntax newer than Python 3.9 left in the text.
    pub newer_syntax: Vec<NewerSyntax>,
}

impl LocatedFunction<'_> {
    /// The node's text with decorators, defaults and annotations neutralised; see the
    /// [module documentation](crate::neutralise).
    pub fn neutralise(&self) -> Result<NeutralisedFunction, Error> {
        let lines = self.neutralised_lines()?;
        let mut text = String::new();
        for line in &lines.lines {
            text.push_str(line);
            text.push('\n');
        }
        let first_line = self.file.line_index().line_of(self.scope.range.start);
        Ok(NeutralisedFunction {
            text,
            first_line,
            last_line: self.file.line_index().line_of(self.scope.range.end),
            start_column: self.start().column,
            defaults: self.defaults(),
            decorator_count: self.scope.signature.as_deref().map_or(0, |s| s.decorators.len()),
            newer_syntax: self.newer_syntax(),
        })
    }

    fn defaults(&self) -> Vec<DefaultValue> {
        let Some(signature) = self.scope.signature.as_deref() else {
            return Vec::new();
        };
        let positional = signature.params.iter().filter(|p| p.kind != ParamKind::KeywordOnly);
        let keyword_only = signature.params.iter().filter(|p| p.kind == ParamKind::KeywordOnly);
        positional
            .chain(keyword_only)
            .filter_map(|p| {
                let span = p.default?;
                Some(DefaultValue {
                    parameter: p.name.to_string(),
                    keyword_only: p.kind == ParamKind::KeywordOnly,
                    start: self.file.line_column(span.start),
                    end: self.file.line_column(span.end),
                })
            })
            .collect()
    }

    /// The neutralised lines, without line breaks, starting at the node's first line.
    pub(crate) fn neutralised_lines(&self) -> Result<NeutralisedLines, Error> {
        let file = self.file;
        let scope = self.scope;
        let unsupported = |detail: &str| Error::UnsupportedLayout { detail: detail.to_owned() };
        let signature = scope.signature.as_deref().ok_or_else(|| unsupported("not a function node"))?;
        if signature.returns_unresolved {
            return Err(unsupported("the return annotation's `->` or `:` was not found"));
        }
        let first_line = file.line_index().line_of(scope.range.start);
        let line_start =
            file.line_index().line_start(first_line).ok_or_else(|| unsupported("node outside the text"))?;
        let mut window = Window::new(file.text(), Span::new(line_start, scope.range.end))
            .ok_or_else(|| unsupported("node not on character boundaries"))?;

        let is_lambda = self.kind() == FunctionKind::Lambda;
        if is_lambda {
            window.blank(Span::new(line_start, scope.range.start));
        }
        // All decorators go, with everything between them (comments): whole lines from the
        // first `@` to the `def` line, whose indentation stays as it is.
        let mut identity_decorator = None;
        if let Some(first) = signature.decorators.first() {
            let def_line = file.line_index().line_of(scope.statement_start);
            let def_line_start = file.line_index().line_start(def_line).unwrap_or(scope.statement_start);
            window.blank(Span::new(first.range.start, def_line_start));
            identity_decorator = Some((file.line_column(first.range.start), file.line_column(first.expression_start)));
        }
        for param in &signature.params {
            if let Some(annotation) = param.annotation {
                window.blank(annotation);
            }
            if let Some(default) = param.default {
                window.blank(default);
                let room = file.slice(default).map_or(0, |s| s.find(['\n', '\r']).unwrap_or(s.len()));
                window.write_ascii(default.start, if room >= 4 { "None" } else { "0" });
            }
        }
        if let Some(returns) = signature.returns {
            window.blank(returns);
            let multi_line = file.slice(returns).is_none_or(|s| s.contains(['\n', '\r']));
            if multi_line {
                // Keep `->` and make the annotation `()`, so its line breaks stay inside
                // brackets. The `(` goes right after `->` (never a line break: a bare line
                // break cannot follow `->`), the `)` on the annotation's last character.
                let open = returns.start.saturating_add(2);
                let close =
                    last_char_start(file.text(), returns.end).ok_or_else(|| unsupported("empty return annotation"))?;
                let open_is_break =
                    file.slice(Span::new(open, open.saturating_add(1))).is_none_or(|c| c == "\n" || c == "\r");
                if open_is_break || close <= open {
                    return Err(unsupported("unexpected return annotation layout"));
                }
                window.write_ascii(returns.start, "->");
                window.write_ascii(open, "(");
                window.write_ascii(close, ")");
            }
        }

        let mut lines = window.into_lines()?;
        if let Some((at_sign, expression)) = identity_decorator {
            // `@__function_source_keep__`, with the name on the line of the original decorator's
            // expression: that line is the function's `co_firstlineno`.
            let mut rewrite = |at: LineColumn, text: &str| -> Result<(), Error> {
                let line = lines
                    .get_mut(at.line.saturating_sub(first_line) as usize)
                    .ok_or_else(|| unsupported("decorator outside the node"))?;
                let cut = at.column as usize;
                if cut > line.len() || !line.is_char_boundary(cut) {
                    return Err(unsupported("decorator not on a character boundary"));
                }
                line.truncate(cut);
                line.push_str(text);
                Ok(())
            };
            if at_sign.line == expression.line {
                rewrite(at_sign, IDENTITY_DECORATOR)?;
            } else {
                rewrite(at_sign, IDENTITY_DECORATOR_OPEN)?;
                rewrite(expression, IDENTITY_DECORATOR_REST)?;
            }
        }
        Ok(NeutralisedLines { first_line, start_column: self.start().column, lines })
    }
}

/// Neutralised lines of a node, for the factory builder.
pub(crate) struct NeutralisedLines {
    pub first_line: u32,
    pub start_column: u32,
    pub lines: Vec<String>,
}

/// Start of the last character before `end`.
fn last_char_start(text: &str, end: u32) -> Option<u32> {
    let head = text.get(..end as usize)?;
    let (index, _) = head.char_indices().next_back()?;
    u32::try_from(index).ok()
}

/// A copy of part of the text, edited in place without moving any byte.
///
/// Every edit keeps the buffer valid UTF-8: [`Window::blank`] replaces whole characters
/// (spans come from the parser, so they start and end on character boundaries) and
/// [`Window::write_ascii`] writes ASCII over bytes already blanked.
pub(crate) struct Window {
    start: u32,
    bytes: Vec<u8>,
}

impl Window {
    pub fn new(text: &str, span: Span) -> Option<Window> {
        let slice = text.get(span.start as usize..span.end as usize)?;
        Some(Window { start: span.start, bytes: slice.as_bytes().to_vec() })
    }

    /// Replaces every byte of `span` (clipped to the window) by a space, except line breaks.
    pub fn blank(&mut self, span: Span) {
        let from = span.start.saturating_sub(self.start) as usize;
        let to = span.end.saturating_sub(self.start) as usize;
        let to = to.min(self.bytes.len());
        if let Some(bytes) = self.bytes.get_mut(from..to) {
            for byte in bytes.iter_mut().filter(|b| !matches!(b, b'\n' | b'\r')) {
                *byte = b' ';
            }
        }
    }

    /// Writes `ascii` at text offset `at` if it fits in the window and covers only blanks.
    pub fn write_ascii(&mut self, at: u32, ascii: &str) {
        let from = at.saturating_sub(self.start) as usize;
        let Some(target) = self.bytes.get_mut(from..from.saturating_add(ascii.len())) else {
            return;
        };
        if ascii.is_ascii() && target.iter().all(|&b| b == b' ') {
            target.copy_from_slice(ascii.as_bytes());
        }
    }

    /// Splits into lines at `\n`, `\r\n` and `\r`, dropping the line breaks.
    pub fn into_lines(self) -> Result<Vec<String>, Error> {
        let text = String::from_utf8(self.bytes)
            .map_err(|_| Error::UnsupportedLayout { detail: "an edit split a character".to_owned() })?;
        let mut lines = Vec::new();
        let mut rest = text.as_str();
        loop {
            match rest.find(['\n', '\r']) {
                Some(at) => {
                    let (line, tail) = rest.split_at(at);
                    lines.push(line.to_owned());
                    rest = tail.strip_prefix("\r\n").or_else(|| tail.get(1..)).unwrap_or("");
                }
                None => {
                    lines.push(rest.to_owned());
                    break;
                }
            }
        }
        Ok(lines)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::{CodeQuery, SourceFile};

    fn neutralise(src: &str, name: &str, first_line: u32, args: &[&str]) -> NeutralisedFunction {
        let file = SourceFile::parse("t.py", src).unwrap();
        let query = CodeQuery {
            name: name.into(),
            first_line,
            arg_names: args.iter().map(|s| s.to_string()).collect(),
            ..CodeQuery::default()
        };
        file.locate(&query).unwrap().neutralise().unwrap()
    }

    #[test]
    fn def_signature() {
        let n = neutralise(
            "class C:\n    @a.b(1)\n    @c\n    def f(self, x: int = 10, *a: 'A', y=f(2), **k: int) -> dict:\n        return x\n",
            "f",
            2,
            &["self", "x", "y", "a", "k"],
        );
        assert_eq!(
            n.text,
            "    @__function_source_keep__\n      \n    def f(self, x      = 0 , *a     , y=None, **k     )        :\n        return x\n"
        );
        assert_eq!(n.defaults.len(), 2);
        assert!(n.defaults[1].keyword_only);
        assert_eq!(n.decorator_count, 2);
    }

    #[test]
    fn lambda_prefix_and_short_default() {
        let n = neutralise("xs = sorted(ys, key=lambda v, d=1: v + d)\n", "<lambda>", 1, &["v", "d"]);
        assert_eq!(n.text, "                    lambda v, d=0: v + d\n");
        assert_eq!(n.start_column, 20);
    }

    #[test]
    fn multi_line_return_annotation_becomes_empty_tuple() {
        let n = neutralise("def f(\n    x,\n) -> Dict[\n    str, int\n]:\n    pass\n", "f", 1, &["x"]);
        assert_eq!(n.text, "def f(\n    x,\n) ->(     \n            \n):\n    pass\n");
    }

    #[test]
    fn non_ascii_keeps_byte_columns() {
        let n = neutralise("s = 'é'; f = lambda q='é': q + 'é'\n", "<lambda>", 1, &["q"]);
        // `'é'` is 4 bytes: room for `None`.
        assert_eq!(n.text, "              lambda q=None: q + 'é'\n");
    }
}
