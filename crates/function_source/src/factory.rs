//! The reconstruction ("factory") source: text the receiver runs with plain
//! `exec(compile(source, co_filename, "exec"), namespace)` to get back a function whose code
//! object equals the original (on the same interpreter: `co_code`, `co_positions()`,
//! `co_freevars`, `co_varnames`, `co_qualname`, `co_firstlineno`, `co_flags`).
//!
//! # Shape
//!
//! The function's own lines keep their original text, line numbers and byte columns (after
//! [neutralisation](crate::neutralise)). Every scope that encloses it in the original file is
//! rebuilt around it, with the original names, so that CPython derives the same qualified
//! name, mangles `__private` names with the same class name, and creates the same
//! `__class__` cell for zero-argument `super()`:
//!
//! - each enclosing `def` becomes `def name():`, each enclosing `class` becomes `class name:`,
//!   on the lines just above the function (the original text there is blanked);
//! - an enclosing `lambda` becomes `(lambda: (...))()` and an enclosing comprehension
//!   `[(...) for () in [()]][0]` (or the set, dict or generator form), written around a
//!   lambda on the line above it and after its end;
//! - the function's free variables (`co_freevars`, minus `__class__` which an enclosing
//!   class provides) are bound in the innermost enclosing function-like scope: as parameters
//!   defaulting to `None` of a `def` or `lambda` wrapper (`def make_adder(k=None):`), or as
//!   the loop target of a comprehension wrapper (`for (k,) in [(None,)]`). Only their names
//!   matter: the pickler fills the cells;
//! - `global name` is repeated where the original declared an enclosing function `global`
//!   (CPython then drops the enclosing part of its qualified name);
//! - a `def` at module level but indented (inside `if`, `try`, ...) gets an `if 1:` opener;
//! - `from __future__` imports at the top of the file are kept: they set `co_flags`.
//!
//! After the function, each level hands the function up: `return name` in a `def`,
//! `__function_source_result__ = name` in a class body, and finally, at module level,
//! `__function_source_result__ = outer()` (or `= C.__function_source_result__`).
//! So the receiver always finds the function in `namespace[RESULT_NAME]`, whatever the
//! nesting; for a method it is the plain function from the class body, never a bound method.
//!
//! # Layout fallback
//!
//! The wrapper lines need room above the function: one line per enclosing `def`/`class`
//! (plus one per `global` line, plus one for a lambda at module level). The original file
//! always has that room for a `def` (each enclosing header is on its own line), and usually
//! for a lambda, whose innermost wrapper line may also go in the blank space before the
//! lambda on its own line. When there is no room (say `f = lambda: 0` on line 1 of a file)
//! the layout is [`FactoryLayout::Reparsed`]: the source embeds the wrapped text, placed
//! lower, as a string, and fixes the line numbers of the function's subtree with
//! `ast.increment_lineno` before compiling it with the same file name. Retrieval is the
//! same; compiling costs a few times more (an AST round trip), which is why it is only the
//! fallback. Both layouts use only the standard library and Python 3.9 syntax.
//!
//! # How exact
//!
//! On CPython 3.11 the rebuilt code object equals the original (`==`, plus `co_qualname`,
//! `co_positions()`, `co_freevars`) for every function of the test fixtures and of thousands
//! of generated programs. CPython 3.12+ inlines list, set and dict comprehensions, and its
//! symbol table then lets a function's compilation depend on names bound in enclosing
//! scopes that are not its free variables: about 1 function in 1600 of the generated
//! programs (none of the fixtures) rebuilds with a different cell layout there. A caller
//! that must be exact can compile the factory once on the sending side and compare
//! `__code__` with the original, falling back to bytecode when they differ.

use crate::locate::{CodeQuery, FunctionKind, LocatedFunction};
use crate::scopes::{ComprehensionKind, Scope, ScopeKind, Span};
use crate::source::NewerSyntax;
use crate::Error;

/// The name under which the rebuilt function is left in the namespace the factory source is
/// executed in: `namespace[RESULT_NAME]` is the function object.
pub const RESULT_NAME: &str = "__function_source_result__";

/// How the factory source places the function's lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FactoryLayout {
    /// The function's lines are at their original line numbers in the source itself.
    InPlace,
    /// There was no room above the function for its wrappers: the source compiles the
    /// wrapped text at a later line through the `ast` module and moves the function's
    /// subtree up by `line_shift` lines, so the result is the same.
    Reparsed {
        /// Lines the function was moved down by in the embedded text.
        line_shift: u32,
    },
}

/// A factory source and what the caller needs to know about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Factory {
    /// The Python source: `exec(compile(source, co_filename, "exec"), ns)` leaves the
    /// function in `ns[RESULT_NAME]`.
    pub source: String,
    /// Which layout was used.
    pub layout: FactoryLayout,
    /// First line of the function in the original file (its first decorator, if any), for
    /// registering its lines with `linecache`.
    pub first_line: u32,
    /// Last line of the function in the original file.
    pub last_line: u32,
    /// Syntax newer than Python 3.9 in the function's text: an older receiver will not
    /// compile the source.
    pub newer_syntax: Vec<NewerSyntax>,
}

impl LocatedFunction<'_> {
    /// Builds the factory source for this function, whose code object has the free
    /// variables `code.free_vars` (`co_freevars`; the other fields are not used).
    ///
    /// Fails if a name is not an identifier, if free variables have no enclosing function
    /// scope to come from (the source does not match the code), or for layouts outside what
    /// the builder supports (reported as [`Error::UnsupportedLayout`]).
    pub fn factory(&self, code: &CodeQuery) -> Result<Factory, Error> {
        for name in &code.free_vars {
            if !is_identifier(name) {
                return Err(Error::InvalidFreeVariable { name: name.clone() });
            }
        }
        let neutral = self.neutralised_lines()?;
        let chain: Vec<&Scope> =
            self.file.ancestors(self.index).into_iter().filter_map(|i| self.file.scope(i)).collect();
        let plan = Plan::new(self, &chain, code, neutral.start_column)?;

        let mut body = neutral.lines;
        let mut above = plan.above;
        if plan.fits_on_first_line {
            // The last wrapper line goes in the blank space before the lambda.
            let wrapper = above.pop().unwrap_or_default();
            if let Some(first) = body.first_mut() {
                let rest = first.get(wrapper.len()..).unwrap_or("");
                *first = format!("{wrapper}{rest}");
            }
        }
        let needed = above.len() as u32;

        let prologue = self.prologue_lines()?;
        let prologue_end = prologue.len() as u32;
        let first_line = neutral.first_line;
        let room = first_line.saturating_sub(1).checked_sub(prologue_end);

        let mut lines: Vec<String> = prologue;
        let layout = match room {
            Some(room) if room >= needed => {
                lines.extend(std::iter::repeat_n(String::new(), (room - needed) as usize));
                FactoryLayout::InPlace
            }
            _ => FactoryLayout::Reparsed {
                line_shift: prologue_end.saturating_add(needed).saturating_add(1).saturating_sub(first_line),
            },
        };
        lines.extend(above);
        lines.extend(body);
        lines.extend(plan.after);
        let wrapped = join_lines(&lines);

        let source = match layout {
            FactoryLayout::InPlace => wrapped,
            FactoryLayout::Reparsed { line_shift } => {
                let anchor = self.file.line_column(self.scope.statement_start);
                reparse_source(
                    &wrapped,
                    self.file.name(),
                    anchor.line.saturating_add(line_shift),
                    anchor.column,
                    line_shift,
                )
            }
        };
        Ok(Factory {
            source,
            layout,
            first_line,
            last_line: self.file.line_index().line_of(self.scope.range.end),
            newer_syntax: self.newer_syntax(),
        })
    }

    /// Lines 1 to the end of the last `from __future__` import, with everything but the
    /// imports blanked; empty if the file has none.
    fn prologue_lines(&self) -> Result<Vec<String>, Error> {
        let file = self.file;
        let Some(last) = file.future_imports.last() else {
            return Ok(Vec::new());
        };
        let end_line = file.line_index().line_of(last.end);
        let end = file.line_index().line_content_end(end_line).unwrap_or(last.end);
        let mut window = crate::neutralise::Window::new(file.text(), Span::new(0, end))
            .ok_or_else(|| Error::UnsupportedLayout { detail: "future imports outside the text".to_owned() })?;
        let mut kept_until = 0;
        for import in &file.future_imports {
            window.blank(Span::new(kept_until, import.start));
            kept_until = import.end;
        }
        window.blank(Span::new(kept_until, end));
        let mut lines = window.into_lines()?;
        for line in &mut lines {
            line.truncate(line.trim_end().len());
        }
        Ok(lines)
    }
}

/// The wrapper lines above and below the function.
struct Plan {
    above: Vec<String>,
    after: Vec<String>,
    /// The last line of `above` fits in the blank space before a lambda on its first line.
    fits_on_first_line: bool,
}

impl Plan {
    fn new(
        function: &LocatedFunction<'_>,
        chain: &[&Scope],
        code: &CodeQuery,
        start_column: u32,
    ) -> Result<Plan, Error> {
        let unsupported = |detail: &str| Error::UnsupportedLayout { detail: detail.to_owned() };
        let is_lambda = function.kind() == FunctionKind::Lambda;
        // Statement scopes (def, class) come first; once inside an expression scope
        // (lambda, comprehension) only expression scopes can follow.
        let split = chain
            .iter()
            .position(|s| matches!(s.kind, ScopeKind::Lambda | ScopeKind::Comprehension(_)))
            .unwrap_or(chain.len());
        let (statements, expressions) = chain.split_at(split);
        if expressions.iter().any(|s| matches!(s.kind, ScopeKind::Function { .. } | ScopeKind::Class))
            || (!is_lambda && !expressions.is_empty())
        {
            return Err(unsupported("statement scope inside an expression scope"));
        }

        // An enclosing class provides `__class__` (for zero-argument `super()`).
        let has_class = chain.iter().any(|s| s.kind == ScopeKind::Class);
        let implicit = |name: &&str| has_class && *name == "__class__";
        let declared: Vec<&str> = code.free_vars.iter().map(String::as_str).filter(|name| !implicit(name)).collect();
        let host = chain.iter().rposition(|s| s.kind.is_function_like());
        if host.is_none() && !declared.is_empty() {
            return Err(Error::UnboundFreeVariables { names: declared.iter().map(|s| s.to_string()).collect() });
        }

        let parameters = declared.iter().map(|name| format!("{name}=None")).collect::<Vec<_>>().join(", ");

        // Indentation of the header of statement wrapper `level`. A def keeps its original
        // indentation, so the wrappers use prefixes of it: shorter prefixes of the same
        // whitespace nest correctly whatever mix of tabs and spaces it has.
        let original_indent = if is_lambda {
            String::new()
        } else {
            let text = function.file.line_text(function.start().line).unwrap_or("");
            let indent = text.get(..start_column as usize).unwrap_or("");
            if !indent.bytes().all(|b| matches!(b, b' ' | b'\t' | b'\x0c')) {
                return Err(unsupported("text before the def on its first line"));
            }
            if indent.len() < statements.len() {
                return Err(unsupported("indentation shallower than the nesting"));
            }
            indent.to_owned()
        };
        let indent = |level: usize| -> String {
            if is_lambda {
                " ".repeat(level)
            } else {
                original_indent.get(..level).unwrap_or("").to_owned()
            }
        };

        let mut above = Vec::new();
        if !is_lambda && statements.is_empty() && !original_indent.is_empty() {
            above.push("if 1:".to_owned());
        }
        for (level, scope) in statements.iter().enumerate() {
            let ind = indent(level);
            if scope.force_global {
                above.push(format!("{ind}global {}", scope.name));
            }
            above.push(match scope.kind {
                ScopeKind::Class => format!("{ind}class {}:", scope.name),
                _ => {
                    let params = if host == Some(level) { parameters.as_str() } else { "" };
                    format!("{ind}def {}({params}):", scope.name)
                }
            });
        }

        let innermost_yield = statements.last().map_or(ASSIGN_RESULT, |s| yield_in(s));
        let mut after = Vec::new();
        if is_lambda {
            let mut opening = format!("{innermost_yield}(");
            let mut closing = String::new();
            for (offset, scope) in expressions.iter().enumerate() {
                let names: &[&str] = if host == Some(split + offset) { &declared } else { &[] };
                let (open, close) = expression_wrapper(scope.kind, names);
                opening.push_str(&open);
                closing.insert_str(0, &close);
            }
            closing.push(')');
            match above.last_mut() {
                Some(header) if !statements.is_empty() => {
                    header.push(' ');
                    header.push_str(&opening);
                }
                _ => above.push(opening),
            }
            after.push(format!("{}{closing}", indent(statements.len())));
        } else {
            if function.scope.force_global {
                above.push(format!("{original_indent}global {}", function.name()));
            }
            after.push(format!("{original_indent}{innermost_yield}{}", function.name()));
        }
        for level in (1..statements.len()).rev() {
            if let (Some(parent), Some(scope)) = (statements.get(level - 1), statements.get(level)) {
                after.push(format!("{}{}{}", indent(level), yield_in(parent), getter(scope)));
            }
        }
        if let Some(outermost) = statements.first() {
            after.push(format!("{ASSIGN_RESULT}{}", getter(outermost)));
        }

        let fits_on_first_line = is_lambda && above.last().is_some_and(|l| l.len() <= start_column as usize);
        Ok(Plan { above, after, fits_on_first_line })
    }
}

const ASSIGN_RESULT: &str = "__function_source_result__ = ";

/// How a scope hands a value to the level above.
fn yield_in(scope: &Scope) -> &'static str {
    match scope.kind {
        ScopeKind::Class => ASSIGN_RESULT,
        _ => "return ",
    }
}

/// The expression, in the enclosing scope, that yields what wrapper `scope` handed up.
fn getter(scope: &Scope) -> String {
    match scope.kind {
        ScopeKind::Class => format!("{}.{RESULT_NAME}", scope.name),
        _ => format!("{}()", scope.name),
    }
}

/// Opening and closing text of an expression scope wrapper, binding `names` if given.
fn expression_wrapper(kind: ScopeKind, names: &[&str]) -> (String, String) {
    let target = match names {
        [] => "()".to_owned(),
        [one] => format!("({one},)"),
        _ => format!("({})", names.join(", ")),
    };
    let values = match names.len() {
        0 => "[()]".to_owned(),
        1 => "[(None,)]".to_owned(),
        n => format!("[({})]", vec!["None"; n].join(", ")),
    };
    let generators = format!(" for {target} in {values}");
    match kind {
        ScopeKind::Lambda => {
            let params = names.iter().map(|name| format!(" {name}=None")).collect::<Vec<_>>().join(",");
            (format!("(lambda{params}: "), ")()".to_owned())
        }
        ScopeKind::Comprehension(ComprehensionKind::List) => ("[(".to_owned(), format!("){generators}][0]")),
        ScopeKind::Comprehension(ComprehensionKind::Set) => ("[*{(".to_owned(), format!("){generators}}}][0]")),
        ScopeKind::Comprehension(ComprehensionKind::Dict) => ("[*{(".to_owned(), format!("): None{generators}}}][0]")),
        ScopeKind::Comprehension(ComprehensionKind::Generator) => ("[*((".to_owned(), format!("){generators})][0]")),
        ScopeKind::Function { .. } | ScopeKind::Class => (String::new(), String::new()),
    }
}

fn join_lines(lines: &[String]) -> String {
    let mut text = String::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
    for line in lines {
        text.push_str(line);
        text.push('\n');
    }
    text
}

/// The fallback source: parse `wrapped`, move the function node found at
/// `(line, column)` up by `shift` lines, compile with the original file name.
fn reparse_source(wrapped: &str, filename: &str, line: u32, column: u32, shift: u32) -> String {
    let ast = "__function_source_ast__";
    let tree = "__function_source_tree__";
    let node = "__function_source_node__";
    let text = python_string(wrapped);
    let filename = python_string(filename);
    format!(
        "import ast as {ast}\n\
         {tree} = {ast}.parse({text}, {filename})\n\
         for {node} in {ast}.walk({tree}):\n\
         \x20   if isinstance({node}, ({ast}.FunctionDef, {ast}.AsyncFunctionDef, {ast}.Lambda)) \
         and ({node}.lineno, {node}.col_offset) == ({line}, {column}):\n\
         \x20       {ast}.increment_lineno({node}, -{shift})\n\
         \x20       break\n\
         exec(compile({tree}, {filename}, 'exec'))\n"
    )
}

/// A Python string literal for `text`.
pub(crate) fn python_string(text: &str) -> String {
    let mut literal = String::with_capacity(text.len() + 2);
    literal.push('\'');
    for c in text.chars() {
        match c {
            '\\' => literal.push_str("\\\\"),
            '\'' => literal.push_str("\\'"),
            '\n' => literal.push_str("\\n"),
            '\r' => literal.push_str("\\r"),
            '\t' => literal.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\x7f' => {
                literal.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => literal.push(c),
        }
    }
    literal.push('\'');
    literal
}

const KEYWORDS: &[&str] = &[
    "False", "None", "True", "and", "as", "assert", "async", "await", "break", "class", "continue", "def", "del",
    "elif", "else", "except", "finally", "for", "from", "global", "if", "import", "in", "is", "lambda", "nonlocal",
    "not", "or", "pass", "raise", "return", "try", "while", "with", "yield",
];

/// Whether `name` can be written as a Python identifier.
pub(crate) fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    (first == '_' || unicode_ident::is_xid_start(first))
        && chars.all(unicode_ident::is_xid_continue)
        && !KEYWORDS.contains(&name)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn string_literal_escapes() {
        assert_eq!(python_string("a'b\\c\nd\x00é"), "'a\\'b\\\\c\\nd\\x00é'");
    }

    #[test]
    fn identifiers() {
        assert!(is_identifier("k"));
        assert!(is_identifier("_C__x"));
        assert!(is_identifier("été"));
        assert!(!is_identifier(""));
        assert!(!is_identifier("a b"));
        assert!(!is_identifier("1a"));
        assert!(!is_identifier("lambda"));
        assert!(!is_identifier("x=1; import os"));
    }
}
