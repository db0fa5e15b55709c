//! Finding the `def` or `lambda` node a CPython code object was compiled from.
//!
//! The checks, in order (each one only narrows the candidates the previous left):
//!
//! 1. kind and name: `co_name` is the `def`'s name, or `<lambda>`;
//! 2. first line: `co_firstlineno` is the line of the first decorator's expression for a
//!    decorated `def`, else of the `def`/`async`/`lambda` keyword;
//! 3. qualified name, when given (`co_qualname`, CPython 3.11+), compared exactly or with the
//!    `<listcomp>`/`<setcomp>`/`<dictcomp>` segments that CPython 3.12 no longer emits
//!    removed from both sides;
//! 4. parameter names (`co_varnames[:n]`, private names mangled as CPython does);
//! 5. positions: every `co_positions()` span must lie inside the node, must not lie in a
//!    part of the node that the *enclosing* scope evaluates (decorators, defaults,
//!    annotations), must not lie inside the body of a scope nested in it (list, set and dict
//!    comprehensions may count as the node's own, as CPython 3.12 inlines them), and must
//!    not be the node's own full span (an enclosing code object positions its
//!    `MAKE_FUNCTION` on that span: this is what separates `lambda: lambda: 1` from its
//!    inner lambda when no qualified name is given). Positions without columns, and
//!    CPython's artificial `(line, line, 0, 0)`, only constrain lines;
//! 6. tie-break, when given: the `co_name`s of the code objects in `co_consts`, compared
//!    with the node's directly nested scopes (3.11 layout, or 3.12's with list, set and dict
//!    comprehensions inlined).
//!
//! Position checks are also what detects a file edited since the code was compiled.

use crate::error::NotFoundReason;
use crate::lines::LineColumn;
use crate::scopes::{Scope, ScopeKind, Span};
use crate::source::{mangle, NewerSyntax, SourceFile};
use crate::Error;

/// One entry of `code.co_positions()`: `(lineno, end_lineno, col_offset, end_col_offset)`,
/// any of which may be `None`. Columns are UTF-8 byte offsets, as CPython reports them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CodePosition {
    /// `lineno`.
    pub line: Option<u32>,
    /// `end_lineno`.
    pub end_line: Option<u32>,
    /// `col_offset` (bytes).
    pub column: Option<u32>,
    /// `end_col_offset` (bytes).
    pub end_column: Option<u32>,
}

/// What a CPython code object says about where it came from and what its factory must
/// reproduce. Fill it from the code object:
///
/// ```python
/// n = co.co_argcount + co.co_kwonlyargcount + bool(co.co_flags & 0x04) + bool(co.co_flags & 0x08)
/// CodeQuery(name=co.co_name, qualname=co.co_qualname, first_line=co.co_firstlineno,
///           arg_names=co.co_varnames[:n], positions=list(co.co_positions()),
///           nested_code_names=[c.co_name for c in co.co_consts if isinstance(c, CodeType)],
///           free_vars=co.co_freevars)
/// ```
///
/// [`SourceFile::locate`] uses all but `free_vars`; [`LocatedFunction::factory`] uses that.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CodeQuery {
    /// `co_name`: the function's name, or `<lambda>`.
    pub name: String,
    /// `co_qualname` (CPython 3.11+); `None` when unknown. Strongly recommended: it is what
    /// tells nested lambdas apart cheaply and methods of different classes apart.
    pub qualname: Option<String>,
    /// `co_firstlineno`.
    pub first_line: u32,
    /// The parameter names: `co_varnames[:n]` with `n = co_argcount + co_kwonlyargcount`,
    /// plus one for `*args` (`co_flags & 0x04`) and one for `**kwargs` (`co_flags & 0x08`).
    pub arg_names: Vec<String>,
    /// `list(co_positions())`; may be empty (then only lines and names are checked).
    pub positions: Vec<CodePosition>,
    /// `co_name` of every code object in `co_consts`, if known. Only used to break ties.
    pub nested_code_names: Option<Vec<String>>,
    /// `co_freevars`: bound in the factory's innermost enclosing function-like scope so that
    /// the rebuilt code has the same free variables.
    pub free_vars: Vec<String>,
}

/// The kind of function node found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FunctionKind {
    /// `def`.
    Def,
    /// `async def`.
    AsyncDef,
    /// `lambda`.
    Lambda,
}

/// A `def`, `async def` or `lambda` node located in a [`SourceFile`].
#[derive(Clone, Copy, Debug)]
pub struct LocatedFunction<'a> {
    pub(crate) file: &'a SourceFile,
    pub(crate) index: u32,
    pub(crate) scope: &'a Scope,
}

impl<'a> LocatedFunction<'a> {
    /// The file the function was found in.
    pub fn file(&self) -> &'a SourceFile {
        self.file
    }

    /// `def`, `async def` or `lambda`.
    pub fn kind(&self) -> FunctionKind {
        match self.scope.kind {
            ScopeKind::Function { is_async: true } => FunctionKind::AsyncDef,
            ScopeKind::Lambda => FunctionKind::Lambda,
            _ => FunctionKind::Def,
        }
    }

    /// The name (`<lambda>` for a lambda).
    pub fn name(&self) -> &'a str {
        &self.scope.name
    }

    /// The qualified name CPython gives it, computed from the source.
    pub fn qualname(&self) -> String {
        self.file.qualname(self.index)
    }

    /// Where the node starts: the first decorator's `@`, or the `def`/`async`/`lambda`.
    pub fn start(&self) -> LineColumn {
        self.file.line_column(self.scope.range.start)
    }

    /// Where the node ends (exclusive).
    pub fn end(&self) -> LineColumn {
        self.file.line_column(self.scope.range.end)
    }

    /// The line CPython reports as `co_firstlineno`.
    pub fn first_line(&self) -> u32 {
        self.file.line_index().line_of(self.scope.first_line_offset)
    }

    /// The parameter names as CPython lists them first in `co_varnames`: positional-only,
    /// positional, keyword-only, `*args`, `**kwargs`, with `__private` names mangled.
    pub fn arg_names(&self) -> Vec<String> {
        let class = self.file.mangling_class(self.index);
        self.scope
            .signature
            .as_deref()
            .map(|s| s.params.iter().map(|p| mangle(class, &p.name)).collect())
            .unwrap_or_default()
    }

    /// A query with what the source alone says about this function (no positions): what
    /// [`SourceFile::locate`] needs at least. Mostly useful for tests and tools.
    pub fn query(&self) -> CodeQuery {
        CodeQuery {
            name: self.name().to_owned(),
            qualname: Some(self.qualname()),
            first_line: self.first_line(),
            arg_names: self.arg_names(),
            positions: Vec::new(),
            nested_code_names: None,
            free_vars: Vec::new(),
        }
    }

    /// The node's original text, unmodified.
    pub fn original_text(&self) -> &'a str {
        self.file.slice(self.scope.range).unwrap_or("")
    }

    /// Syntax newer than Python 3.9 in the node, outside the parts the rebuilt source
    /// blanks (decorators, defaults, annotations). Warn: an older receiver cannot compile it.
    pub fn newer_syntax(&self) -> Vec<NewerSyntax> {
        self.syntax_since((3, 9))
    }

    /// Every construct of the node's shipped text (outside decorators, defaults and
    /// annotations, which the rebuilt source blanks) that Python `oldest` cannot parse: those
    /// whose [`NewerSyntax::since`] is later than `oldest`, or unknown. Constructs added in
    /// Python 3.8 and later are known (files are parsed for 3.7).
    ///
    /// ```
    /// use function_source::SourceFile;
    ///
    /// let file = SourceFile::parse("m.py", "def f(x):\n    match x:\n        case 1: return (y := 2)\n").unwrap();
    /// let f = file.functions().next().unwrap();
    /// let needs: Vec<_> = f.syntax_since((3, 9)).into_iter().map(|s| (s.construct, s.since)).collect();
    /// assert_eq!(needs, [("`match` statement".to_owned(), Some((3, 10)))]);
    /// assert_eq!(f.syntax_since((3, 7)).len(), 2); // the walrus needs 3.8
    /// ```
    pub fn syntax_since(&self, oldest: (u8, u8)) -> Vec<NewerSyntax> {
        let blanked: Vec<Span> =
            self.scope.signature.as_deref().map(|s| s.outer_regions().collect()).unwrap_or_default();
        self.file
            .newer_syntax
            .iter()
            .filter(|v| self.scope.range.contains(v.span) && !blanked.iter().any(|b| b.contains(v.span)))
            .filter(|v| v.since.is_none_or(|since| since > oldest))
            .map(|v| NewerSyntax {
                message: v.message.to_string(),
                construct: v.construct.to_string(),
                since: v.since,
                start: self.file.line_column(v.span.start),
            })
            .collect()
    }
}

/// A code position converted to the file's offsets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Place {
    /// Only lines are known (no columns, or CPython's artificial zero-width `(l, l, 0, 0)`).
    Lines { first: u32, last: u32 },
    /// An exact byte span.
    Bytes(Span),
    /// A position that does not exist in this text: the file does not match the code.
    Outside,
}

impl SourceFile {
    /// Every `def`, `async def` and `lambda` in the file, in source order.
    pub fn functions(&self) -> impl Iterator<Item = LocatedFunction<'_>> + '_ {
        self.scopes.iter().enumerate().filter_map(move |(index, scope)| {
            scope.signature.as_ref()?;
            Some(LocatedFunction { file: self, index: u32::try_from(index).ok()?, scope })
        })
    }

    /// Finds the node `query` was compiled from.
    ///
    /// Fails with [`Error::NotFound`] (with the check that eliminated the last candidate) or
    /// [`Error::Ambiguous`]; never picks a node that contradicts the code's positions.
    pub fn locate(&self, query: &CodeQuery) -> Result<LocatedFunction<'_>, Error> {
        let mut candidates = self.locate_candidates(query)?;
        match candidates.len() {
            1 => candidates.pop().ok_or_else(|| Error::Ambiguous {
                name: query.name.clone(),
                first_line: query.first_line,
                candidates: 0,
            }),
            n => Err(Error::Ambiguous { name: query.name.clone(), first_line: query.first_line, candidates: n }),
        }
    }

    /// Every node that passes all the checks of [`SourceFile::locate`], in source order;
    /// never empty.
    ///
    /// More than one means the code object does not say which: two lambdas on one line whose
    /// code carries no columns (CPython 3.12 positions `lambda: "v"` on its line only, and
    /// `python -X no_debug_ranges` drops all columns). The caller can then build each
    /// candidate's factory, compile it, and keep the first whose code object equals the
    /// original; candidates with equal code are interchangeable.
    pub fn locate_candidates(&self, query: &CodeQuery) -> Result<Vec<LocatedFunction<'_>>, Error> {
        let not_found = |reason| Error::NotFound { name: query.name.clone(), first_line: query.first_line, reason };
        let is_lambda = query.name == "<lambda>";
        let from = self.by_first_line.partition_point(|&(line, _)| line < query.first_line);
        let mut candidates: Vec<u32> = self
            .by_first_line
            .get(from..)
            .unwrap_or_default()
            .iter()
            .take_while(|&&(line, _)| line == query.first_line)
            .map(|&(_, index)| index)
            .filter(|&index| {
                self.scope(index).is_some_and(|s| match s.kind {
                    ScopeKind::Lambda => is_lambda,
                    ScopeKind::Function { .. } => !is_lambda && *s.name == *query.name,
                    _ => false,
                })
            })
            .collect();
        if candidates.is_empty() {
            return Err(not_found(NotFoundReason::NoNodeOnFirstLine));
        }

        if let Some(wanted) = &query.qualname {
            candidates.retain(|&index| qualnames_match(&self.qualname(index), wanted));
            if candidates.is_empty() {
                return Err(not_found(NotFoundReason::QualnameMismatch));
            }
        }

        candidates.retain(|&index| self.arg_names_match(index, &query.arg_names));
        if candidates.is_empty() {
            return Err(not_found(NotFoundReason::ArgumentMismatch));
        }

        let places = self.places(&query.positions);
        candidates
            .retain(|&index| self.positions_fit(index, &places, false) || self.positions_fit(index, &places, true));
        if candidates.is_empty() {
            return Err(not_found(NotFoundReason::PositionMismatch));
        }

        if candidates.len() > 1 {
            if let Some(names) = &query.nested_code_names {
                let matching: Vec<u32> =
                    candidates.iter().copied().filter(|&index| self.nested_names_match(index, names)).collect();
                if !matching.is_empty() {
                    candidates = matching;
                }
            }
        }
        candidates.sort_unstable_by_key(|&index| self.scope(index).map(|s| s.range.start));
        Ok(candidates
            .into_iter()
            .filter_map(|index| Some(LocatedFunction { file: self, index, scope: self.scope(index)? }))
            .collect())
    }

    fn arg_names_match(&self, index: u32, wanted: &[String]) -> bool {
        let Some(signature) = self.scope(index).and_then(|s| s.signature.as_deref()) else {
            return false;
        };
        let class = self.mangling_class(index);
        signature.params.len() == wanted.len()
            && signature.params.iter().zip(wanted).all(|(param, name)| mangle(class, &param.name) == *name)
    }

    /// Converts positions to offsets once, deduplicated (a code object repeats most spans).
    fn places(&self, positions: &[CodePosition]) -> Vec<Place> {
        let mut places: Vec<Place> = positions
            .iter()
            .filter_map(|p| {
                let line = p.line?;
                let end_line = p.end_line.unwrap_or(line).max(line);
                let lines = Place::Lines { first: line, last: end_line };
                let (Some(column), Some(end_column)) = (p.column, p.end_column) else {
                    return Some(lines);
                };
                if line == end_line && column == end_column {
                    return Some(lines);
                }
                let start = self.offset(LineColumn { line, column });
                let end = self.offset(LineColumn { line: end_line, column: end_column });
                Some(match (start, end) {
                    (Some(start), Some(end)) if start <= end => Place::Bytes(Span { start, end }),
                    _ => Place::Outside,
                })
            })
            .collect();
        places.sort_unstable();
        places.dedup();
        places
    }

    /// Whether every position lies in the code of scope `index`. With `inline`, positions
    /// inside list, set and dict comprehensions count as the scope's own, as CPython 3.12+
    /// compiles them inline (PEP 709).
    fn positions_fit(&self, index: u32, places: &[Place], inline: bool) -> bool {
        let Some(scope) = self.scope(index) else {
            return false;
        };
        let first_line = self.line_index().line_of(scope.range.start);
        let last_line = self.line_index().line_of(scope.range.end);
        let own_statement = Span::new(scope.statement_start, scope.range.end);
        let outer: Vec<Span> = scope.signature.as_deref().map(|s| s.outer_regions().collect()).unwrap_or_default();
        let descendants = self.scopes.get(index as usize + 1..scope.subtree_end as usize).unwrap_or_default();
        places.iter().all(|place| match *place {
            Place::Outside => false,
            Place::Lines { first, last } => first_line <= first && last <= last_line,
            Place::Bytes(span) => {
                scope.range.contains(span)
                    && span != scope.range
                    && span != own_statement
                    && !outer.iter().any(|o| o.contains(span))
                    && !descendants.iter().any(|d| {
                        let inlined = matches!(d.kind, ScopeKind::Comprehension(k) if inline && k.inlined_since_312());
                        !inlined && d.private.iter().any(|p| p.contains(span))
                    })
            }
        })
    }

    fn nested_names_match(&self, index: u32, wanted: &[String]) -> bool {
        let mut wanted: Vec<&str> = wanted.iter().map(String::as_str).collect();
        wanted.sort_unstable();
        [false, true].iter().any(|&inline| {
            let mut names = Vec::new();
            self.collect_child_code_names(index, inline, &mut names);
            names.sort_unstable();
            names == wanted
        })
    }

    /// Names of the code objects CPython puts in the `co_consts` of scope `index`:
    /// its direct child scopes, looking through comprehensions that 3.12 inlines.
    fn collect_child_code_names<'s>(&'s self, index: u32, inline: bool, out: &mut Vec<&'s str>) {
        let Some(scope) = self.scope(index) else {
            return;
        };
        let mut child = index + 1;
        while child < scope.subtree_end {
            let Some(c) = self.scope(child) else {
                return;
            };
            match c.kind {
                ScopeKind::Comprehension(kind) if inline && kind.inlined_since_312() => {
                    self.collect_child_code_names(child, inline, out)
                }
                _ => out.push(&c.name),
            }
            child = c.subtree_end.max(child + 1);
        }
    }
}

/// Compares qualified names exactly, or without the comprehension segments that CPython
/// 3.12 inlines (so a 3.12 `f.<locals>.<lambda>` matches a lambda in a list comprehension).
fn qualnames_match(computed: &str, wanted: &str) -> bool {
    fn without_inlined(q: &str) -> impl Iterator<Item = &str> {
        q.split('.').filter(|s| !matches!(*s, "<listcomp>" | "<setcomp>" | "<dictcomp>"))
    }
    computed == wanted || without_inlined(computed).eq(without_inlined(wanted))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn lambda_query(first_line: u32, positions: &[(u32, u32, u32, u32)]) -> CodeQuery {
        CodeQuery {
            name: "<lambda>".into(),
            qualname: None,
            first_line,
            arg_names: vec![],
            positions: positions
                .iter()
                .map(|&(l, el, c, ec)| CodePosition {
                    line: Some(l),
                    end_line: Some(el),
                    column: Some(c),
                    end_column: Some(ec),
                })
                .collect(),
            ..CodeQuery::default()
        }
    }

    #[test]
    fn nested_lambdas_without_qualname() {
        // Positions taken from CPython 3.11 for `outer = lambda: lambda: 1`.
        let file = SourceFile::parse("n.py", "outer = lambda: lambda: 1\n").unwrap();
        let outer = file.locate(&lambda_query(1, &[(1, 1, 0, 0), (1, 1, 16, 25), (1, 1, 16, 25)])).unwrap();
        assert_eq!(outer.original_text(), "lambda: lambda: 1");
        let inner = file.locate(&lambda_query(1, &[(1, 1, 0, 0), (1, 1, 24, 25)])).unwrap();
        assert_eq!(inner.original_text(), "lambda: 1");
    }

    #[test]
    fn lambda_default_of_lambda() {
        let file = SourceFile::parse("d.py", "dflt = lambda f=lambda: 1: f()\n").unwrap();
        let inner = file.locate(&lambda_query(1, &[(1, 1, 0, 0), (1, 1, 24, 25)])).unwrap();
        assert_eq!(inner.original_text(), "lambda: 1");
        let mut q = lambda_query(1, &[(1, 1, 27, 28), (1, 1, 27, 30)]);
        q.arg_names = vec!["f".into()];
        assert_eq!(file.locate(&q).unwrap().original_text(), "lambda f=lambda: 1: f()");
    }

    #[test]
    fn stale_source_is_rejected() {
        let file = SourceFile::parse("s.py", "f = lambda: 1\n").unwrap();
        let err = file.locate(&lambda_query(1, &[(1, 1, 30, 31)])).unwrap_err();
        assert!(matches!(err, Error::NotFound { reason: NotFoundReason::PositionMismatch, .. }));
    }

    #[test]
    fn identical_lambdas_without_columns_are_ambiguous() {
        let file = SourceFile::parse("a.py", "x = (lambda: 1, lambda: 1)\n").unwrap();
        let q = CodeQuery { name: "<lambda>".into(), first_line: 1, ..CodeQuery::default() };
        assert!(matches!(file.locate(&q), Err(Error::Ambiguous { candidates: 2, .. })));
    }

    #[test]
    fn qualname_comparison_tolerates_inlined_comprehensions() {
        assert!(qualnames_match("f.<locals>.<listcomp>.<lambda>", "f.<locals>.<lambda>"));
        assert!(qualnames_match("<genexpr>.<lambda>", "<genexpr>.<lambda>"));
        assert!(!qualnames_match("<genexpr>.<lambda>", "<lambda>"));
    }
}
