//! [`SourceFile`]: one file's text, parsed once, with everything lookups need.

use std::hash::Hasher;
use std::panic::{self, AssertUnwindSafe};

use ruff_python_ast::{self as ast, PythonVersion, Stmt};
use ruff_python_parser::{Mode, ParseOptions};
use ruff_text_size::Ranged;

use crate::lines::{LineColumn, LineIndex};
use crate::scopes::{self, Scope, ScopeKind, Span};
use crate::Error;

/// The largest text accepted, in bytes. Offsets are 32-bit in the parser; half of that
/// leaves room for arithmetic on offsets without overflow.
pub const MAX_SOURCE_BYTES: usize = (u32::MAX / 2) as usize;

/// The deepest nesting of statements, expressions and patterns accepted. CPython refuses to
/// compile far shallower nesting (its parser stops at 6000 levels, its compiler earlier).
pub const MAX_NESTING_DEPTH: usize = 10_000;

/// Stack budget per nesting level when dropping the syntax tree (dropping recurses; a
/// release build needs about 80 bytes a level, a debug build about 600).
const DROP_STACK_PER_LEVEL: usize = 1024;

/// The files are parsed for this version, so that every construct added since (walrus and
/// positional-only parameters in 3.8 onwards) is reported with the version it needs.
const PARSE_VERSION: PythonVersion = PythonVersion::PY37;

/// The version [`NewerSyntax::message`] is worded for: the oldest receiver `by_source` warns
/// about by default (PyPy 3.9).
const RECEIVER_VERSION: PythonVersion = PythonVersion::PY39;

/// A construct of a function's text that an older Python cannot parse: an interpreter older
/// than [`NewerSyntax::since`] fails to compile the function.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewerSyntax {
    /// What was found and since which version it exists, worded for Python 3.9, e.g.
    /// ``Cannot use `match` statement on Python 3.9 (syntax was added in Python 3.10)``.
    pub message: String,
    /// The construct alone, e.g. ``match` statement`` or `positional-only parameter separator`.
    pub construct: String,
    /// The first Python (major, minor) that parses it; `None` if the parser did not say (then
    /// no older target can be assumed to parse it).
    pub since: Option<(u8, u8)>,
    /// Where it starts.
    pub start: LineColumn,
}

/// A version-related construct found while parsing, before it is tied to a function.
#[derive(Clone, Debug)]
pub(crate) struct VersionedSyntax {
    pub(crate) span: Span,
    pub(crate) message: Box<str>,
    pub(crate) construct: Box<str>,
    pub(crate) since: Option<(u8, u8)>,
}

impl VersionedSyntax {
    fn of(error: &ruff_python_parser::UnsupportedSyntaxError) -> VersionedSyntax {
        let detected = error.to_string();
        let worded = ruff_python_parser::UnsupportedSyntaxError { target_version: RECEIVER_VERSION, ..error.clone() }
            .to_string();
        VersionedSyntax {
            span: Span::of(error.range()),
            message: worded.into_boxed_str(),
            construct: construct_of(&detected).into(),
            since: since_of(&detected),
        }
    }
}

/// `(3, 10)` from ``... (syntax was added in Python 3.10)``, the wording of every
/// `UnsupportedSyntaxError` of the pinned parser (a snapshot test guards it).
fn since_of(message: &str) -> Option<(u8, u8)> {
    let (_, rest) = message.rsplit_once("added in Python ")?;
    let version = rest.trim_end_matches(')');
    let (major, minor) = version.split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// ``match` statement` from ``Cannot use `match` statement on Python 3.7 (...)``.
fn construct_of(message: &str) -> &str {
    let head = message.split(" on Python ").next().unwrap_or(message);
    head.strip_prefix("Cannot use ").unwrap_or(head)
}

/// A Python file parsed once: its text, line index and a table of every scope that CPython
/// compiles to a code object (functions, lambdas, classes, comprehensions).
///
/// The syntax tree itself is not kept: parsing extracts what lookups need and drops it, so
/// a `SourceFile` is plain data, `Send + Sync`, and cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct SourceFile {
    name: Box<str>,
    text: Box<str>,
    content_hash: u64,
    lines: LineIndex,
    pub(crate) scopes: Vec<Scope>,
    /// `(co_firstlineno, scope index)` of every `def` and `lambda`, sorted.
    pub(crate) by_first_line: Vec<(u32, u32)>,
    /// The `from __future__ import ...` statements at the top of the module. They set
    /// compiler flags that end up in `co_flags`, so rebuilt sources keep them.
    pub(crate) future_imports: Vec<Span>,
    /// Syntax newer than Python 3.9, anywhere in the file.
    pub(crate) newer_syntax: Vec<VersionedSyntax>,
    /// Names bound by `import` statements of the module scope, sorted, each once.
    module_imports: Vec<Box<str>>,
}

impl SourceFile {
    /// Parses `text`, the full content of the file `name` (use the code object's
    /// `co_filename`: rebuilt sources name it in reparse mode).
    ///
    /// A leading byte-order mark is ignored, as CPython ignores it. Fails if the text is not
    /// valid Python, is larger than [`MAX_SOURCE_BYTES`], or nests deeper than
    /// [`MAX_NESTING_DEPTH`].
    pub fn parse(name: impl Into<String>, text: &str) -> Result<SourceFile, Error> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        if text.len() > MAX_SOURCE_BYTES {
            return Err(Error::SourceTooLarge { bytes: text.len(), limit: MAX_SOURCE_BYTES });
        }
        let lines = LineIndex::new(text);
        let options = ParseOptions::from(Mode::Module).with_target_version(PARSE_VERSION);
        // ruff is not known to panic, but this crate promises never to, whatever the input.
        let parsed = panic::catch_unwind(AssertUnwindSafe(|| {
            ruff_python_parser::parse_unchecked(text, options).try_into_module()
        }))
        .map_err(|payload| Error::ParserFailure { message: panic_message(payload.as_ref()) })?
        .ok_or_else(|| Error::ParserFailure { message: "the parser did not return a module".to_owned() })?;

        if let Some(error) = parsed.errors().first() {
            let at = lines.line_column(error.location.start().into());
            return Err(Error::Syntax { message: error.error.to_string(), line: at.line, column: at.column });
        }

        let table = scopes::build(parsed.syntax(), parsed.tokens());
        if table.max_depth > MAX_NESTING_DEPTH {
            // Dropping the tree recurses once per level and could overflow any stack we
            // are willing to allocate. CPython cannot compile such a file anyway, so the
            // tree is leaked (once per parse, bounded by the file size) rather than risk
            // aborting the process.
            std::mem::forget(parsed);
            return Err(Error::TooDeeplyNested { depth: table.max_depth });
        }

        let future_imports = future_import_spans(&parsed.syntax().body);
        let mut module_imports = Vec::new();
        collect_module_imports(&parsed.syntax().body, &mut module_imports);
        module_imports.sort_unstable();
        module_imports.dedup();
        let newer_syntax = parsed.unsupported_syntax_errors().iter().map(VersionedSyntax::of).collect();
        let stack = table.max_depth.saturating_mul(DROP_STACK_PER_LEVEL) + 64 * 1024;
        stacker::maybe_grow(stack, stack, move || drop(parsed));

        let mut by_first_line: Vec<(u32, u32)> = table
            .scopes
            .iter()
            .enumerate()
            .filter(|(_, s)| s.signature.is_some())
            .map(|(i, s)| {
                let index = u32::try_from(i).unwrap_or(u32::MAX);
                (lines.line_of(s.first_line_offset), index)
            })
            .collect();
        by_first_line.sort_unstable();

        let mut hasher = rustc_hash::FxHasher::default();
        hasher.write(text.as_bytes());
        Ok(SourceFile {
            name: name.into().into_boxed_str(),
            text: text.into(),
            content_hash: hasher.finish(),
            lines,
            scopes: table.scopes,
            by_first_line,
            future_imports,
            newer_syntax,
            module_imports,
        })
    }

    /// The names that `import` statements bind in the module scope (at the top level or
    /// inside `if`, `try`, `with`, loops and `match` there; not in functions or classes),
    /// sorted. CPython 3.11+ compiles `name.attr(...)` differently when `name` is such an
    /// import of the same compilation unit, so a rebuilt source declares them to compile to
    /// the same code (see [`import_prelude`]).
    pub fn module_imports(&self) -> &[Box<str>] {
        &self.module_imports
    }

    /// The file name given to [`SourceFile::parse`].
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The text, without a leading byte-order mark.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// A fast 64-bit hash of [`SourceFile::text`] (not cryptographic).
    pub fn content_hash(&self) -> u64 {
        self.content_hash
    }

    /// The line index of [`SourceFile::text`].
    pub fn line_index(&self) -> &LineIndex {
        &self.lines
    }

    /// The byte offset of `position`, if it lies on a character boundary within a line.
    pub fn offset(&self, position: LineColumn) -> Option<u32> {
        let offset = self.lines.offset(position)?;
        self.text.is_char_boundary(offset as usize).then_some(offset)
    }

    /// Text of `line` (1-based) without its line break.
    pub fn line_text(&self, line: u32) -> Option<&str> {
        let start = self.lines.line_start(line)? as usize;
        let end = self.lines.line_content_end(line)? as usize;
        self.text.get(start..end)
    }

    pub(crate) fn scope(&self, index: u32) -> Option<&Scope> {
        self.scopes.get(index as usize)
    }

    pub(crate) fn slice(&self, span: Span) -> Option<&str> {
        self.text.get(span.start as usize..span.end as usize)
    }

    pub(crate) fn line_column(&self, offset: u32) -> LineColumn {
        self.lines.line_column(offset)
    }

    /// The qualified name CPython gives scope `index` (`f.<locals>.g`, `C.m`, ...).
    pub(crate) fn qualname(&self, index: u32) -> String {
        let mut parts: Vec<&str> = Vec::new();
        let mut current = self.scope(index);
        while let Some(scope) = current {
            parts.push(&scope.name);
            if scope.force_global {
                break;
            }
            let Some(parent) = scope.parent.and_then(|p| self.scope(p)) else {
                break;
            };
            if parent.kind.adds_locals_to_qualname() {
                parts.push("<locals>");
            }
            current = Some(parent);
        }
        parts.reverse();
        parts.join(".")
    }

    /// The innermost class enclosing scope `index`, whose name mangles `__private` names.
    pub(crate) fn mangling_class(&self, index: u32) -> Option<&str> {
        let mut current = self.scope(index)?.parent;
        while let Some(parent_index) = current {
            let parent = self.scope(parent_index)?;
            if parent.kind == ScopeKind::Class {
                return Some(&parent.name);
            }
            current = parent.parent;
        }
        None
    }

    /// Ancestors of scope `index`, outermost first.
    pub(crate) fn ancestors(&self, index: u32) -> Vec<u32> {
        let mut chain = Vec::new();
        let mut current = self.scope(index).and_then(|s| s.parent);
        while let Some(parent) = current {
            chain.push(parent);
            current = self.scope(parent).and_then(|s| s.parent);
        }
        chain.reverse();
        chain
    }
}

/// Applies CPython's private name mangling: `__x` inside class `_C` becomes `_C__x`.
pub(crate) fn mangle(class_name: Option<&str>, name: &str) -> String {
    let Some(class_name) = class_name else {
        return name.to_owned();
    };
    if !name.starts_with("__") || name.ends_with("__") || name.contains('.') {
        return name.to_owned();
    }
    let stripped = class_name.trim_start_matches('_');
    if stripped.is_empty() {
        return name.to_owned();
    }
    format!("_{stripped}{name}")
}

/// Adds the names bound by the imports of a module-scope block (see
/// [`SourceFile::module_imports`]).
fn collect_module_imports(body: &[Stmt], out: &mut Vec<Box<str>>) {
    for stmt in body {
        match stmt {
            Stmt::Import(ast::StmtImport { names, .. }) => {
                for alias in names {
                    let bound = match &alias.asname {
                        Some(a) => a.as_str(),
                        None => alias.name.as_str().split('.').next().unwrap_or(""),
                    };
                    out.push(bound.into());
                }
            }
            Stmt::ImportFrom(ast::StmtImportFrom { names, .. }) => {
                for alias in names {
                    let bound = alias.asname.as_ref().map_or(alias.name.as_str(), |a| a.as_str());
                    if bound != "*" {
                        out.push(bound.into());
                    }
                }
            }
            Stmt::If(s) => {
                collect_module_imports(&s.body, out);
                for clause in &s.elif_else_clauses {
                    collect_module_imports(&clause.body, out);
                }
            }
            Stmt::Try(s) => {
                collect_module_imports(&s.body, out);
                for handler in &s.handlers {
                    let ast::ExceptHandler::ExceptHandler(h) = handler;
                    collect_module_imports(&h.body, out);
                }
                collect_module_imports(&s.orelse, out);
                collect_module_imports(&s.finalbody, out);
            }
            Stmt::With(s) => collect_module_imports(&s.body, out),
            Stmt::For(s) => {
                collect_module_imports(&s.body, out);
                collect_module_imports(&s.orelse, out);
            }
            Stmt::While(s) => {
                collect_module_imports(&s.body, out);
                collect_module_imports(&s.orelse, out);
            }
            Stmt::Match(s) => {
                for case in &s.cases {
                    collect_module_imports(&case.body, out);
                }
            }
            _ => {}
        }
    }
}

/// A line for the top of a rebuilt source, `if 0: import a, b\n`, declaring the module
/// imports among `names` that `body` mentions as a word: never run, it makes CPython 3.11+'s
/// compiler see them as imports of the compilation unit, as it saw them in the original file,
/// so `a.f(...)` compiles to the same instructions (`LOAD_ATTR` rather than `LOAD_METHOD`).
/// `None` when `body` mentions none of them.
///
/// ```
/// use function_source::source::import_prelude;
///
/// let names: Vec<Box<str>> = vec!["math".into(), "np".into(), "os".into()];
/// let body = "def f(x):\n    return math.sqrt(x) + np.pi\n";
/// assert_eq!(import_prelude(&names, body).as_deref(), Some("if 0: import math, np\n"));
/// assert_eq!(import_prelude(&names, "def g():\n    return cosmos\n"), None);
/// ```
pub fn import_prelude(names: &[Box<str>], body: &str) -> Option<String> {
    let is_ident = |c: char| c == '_' || c.is_alphanumeric();
    let mentioned: Vec<&str> = names
        .iter()
        .map(|n| &**n)
        .filter(|name| {
            body.match_indices(name).any(|(at, _)| {
                let before = body.get(..at).and_then(|b| b.chars().next_back());
                let after = body.get(at + name.len()..).and_then(|a| a.chars().next());
                !before.is_some_and(is_ident) && !after.is_some_and(is_ident)
            })
        })
        .collect();
    if mentioned.is_empty() {
        return None;
    }
    Some(format!("if 0: import {}\n", mentioned.join(", ")))
}

/// Spans of the `from __future__ import` statements that open the module (after an
/// optional docstring), the only place they are legal.
fn future_import_spans(body: &[Stmt]) -> Vec<Span> {
    let mut spans = Vec::new();
    for (i, stmt) in body.iter().enumerate() {
        match stmt {
            Stmt::Expr(expr) if i == 0 && expr.value.is_string_literal_expr() => {}
            Stmt::ImportFrom(ast::StmtImportFrom { module: Some(module), level: 0, range, .. })
                if module.as_str() == "__future__" =>
            {
                spans.push(Span::of(*range))
            }
            _ => break,
        }
    }
    spans
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_owned()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn module_imports_of_every_module_scope_block() {
        let text = "import os.path, numpy as np\nfrom a import (b, c as d)\nfrom e import *\n\
                    try:\n    import ujson as json\nexcept ImportError:\n    import json\n\
                    if 1:\n    import x1\nelif 2:\n    import x2\nelse:\n    import x3\n\
                    with open('f') as f:\n    import w\nfor i in ():\n    import l1\nelse:\n    import l2\n\
                    while 0:\n    import l3\n\
                    def f():\n    import inside_def\nclass C:\n    import inside_class\n";
        let file = SourceFile::parse("m.py", text).unwrap();
        let names: Vec<&str> = file.module_imports().iter().map(|n| &**n).collect();
        assert_eq!(names, ["b", "d", "json", "l1", "l2", "l3", "np", "os", "w", "x1", "x2", "x3"]);
    }

    #[test]
    fn mangling_follows_cpython() {
        assert_eq!(mangle(Some("C"), "__x"), "_C__x");
        assert_eq!(mangle(Some("__C"), "__x"), "_C__x");
        assert_eq!(mangle(Some("___"), "__x"), "__x");
        assert_eq!(mangle(Some("C"), "__x__"), "__x__");
        assert_eq!(mangle(Some("C"), "_x"), "_x");
        assert_eq!(mangle(None, "__x"), "__x");
    }

    #[test]
    fn syntax_error_is_reported_with_position() {
        let err = SourceFile::parse("bad.py", "x = 1\ndef f(:\n").unwrap_err();
        assert!(matches!(err, Error::Syntax { line: 2, .. }), "{err:?}");
    }

    #[test]
    fn deep_nesting_is_refused_without_overflow() {
        let deep = format!("x = 1{}\n", "+1".repeat(MAX_NESTING_DEPTH + 10));
        let err = SourceFile::parse("deep.py", &deep).unwrap_err();
        assert!(matches!(err, Error::TooDeeplyNested { .. }), "{err:?}");
        // Deep but acceptable nesting is dropped on a grown stack.
        let ok = format!("x = 1{}\n", "+1".repeat(MAX_NESTING_DEPTH - 10));
        assert!(SourceFile::parse("ok.py", &ok).is_ok());
    }

    #[test]
    fn qualnames() {
        let src = "def f():\n    class C:\n        def m(self):\n            return lambda: [lambda: 1 for _ in ()]\n";
        let file = SourceFile::parse("q.py", src).unwrap();
        let names: Vec<String> = (0..file.scopes.len() as u32).map(|i| file.qualname(i)).collect();
        assert_eq!(
            names,
            [
                "f",
                "f.<locals>.C",
                "f.<locals>.C.m",
                "f.<locals>.C.m.<locals>.<lambda>",
                "f.<locals>.C.m.<locals>.<lambda>.<locals>.<listcomp>",
                "f.<locals>.C.m.<locals>.<lambda>.<locals>.<listcomp>.<lambda>",
            ]
        );
    }
}
