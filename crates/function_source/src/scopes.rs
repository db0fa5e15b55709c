//! One pass over ruff's AST that records every scope CPython compiles into its own code
//! object: `def`/`async def`, `lambda`, `class` bodies and comprehensions.
//!
//! The table is plain owned data (offsets and names), so a [`crate::SourceFile`] keeps it and
//! drops the AST right after parsing: lookups never touch the AST again, and the cache holds
//! a fraction of the AST's memory.
//!
//! Scopes are numbered in pre-order, and every part of a scope's node that CPython evaluates
//! in the *enclosing* scope (decorators, defaults, annotations, class bases, a comprehension's
//! first iterable) is visited before the scope is opened. So the descendants of scope `i` are
//! exactly the scopes `i + 1 .. subtree_end`, and a lambda used as the default of another
//! lambda is correctly a sibling of it, not a child.

use ruff_python_ast::token::{Token, TokenKind};
use ruff_python_ast::visitor::{self, Visitor};
use ruff_python_ast::{self as ast, Expr, Pattern, Stmt};
use ruff_text_size::{Ranged, TextRange};

/// How deep the walk descends before giving up; see [`crate::MAX_NESTING_DEPTH`].
pub(crate) const MAX_DEPTH: usize = crate::MAX_NESTING_DEPTH;

/// Stack left before [`stacker`] switches the walk to a fresh heap-allocated segment.
const RED_ZONE: usize = 64 * 1024;
/// Size of each fresh stack segment.
const STACK_SEGMENT: usize = 1024 * 1024;

/// A half-open byte range `[start, end)` of the source text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Span {
    pub start: u32,
    pub end: u32,
}

impl Span {
    /// A span from two offsets; reversed offsets give an empty span at `start`.
    pub fn new(start: u32, end: u32) -> Span {
        Span { start, end: end.max(start) }
    }

    pub fn of(range: TextRange) -> Span {
        Span::new(range.start().into(), range.end().into())
    }

    pub fn contains(self, other: Span) -> bool {
        self.start <= other.start && other.end <= self.end
    }
}

/// The four comprehension forms, each compiled to its own code object on CPython <= 3.11.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ComprehensionKind {
    List,
    Set,
    Dict,
    Generator,
}

impl ComprehensionKind {
    /// `co_name` of the comprehension's code object.
    pub fn code_name(self) -> &'static str {
        match self {
            ComprehensionKind::List => "<listcomp>",
            ComprehensionKind::Set => "<setcomp>",
            ComprehensionKind::Dict => "<dictcomp>",
            ComprehensionKind::Generator => "<genexpr>",
        }
    }

    /// Whether CPython 3.12+ inlines it into the enclosing code (PEP 709).
    pub fn inlined_since_312(self) -> bool {
        !matches!(self, ComprehensionKind::Generator)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ScopeKind {
    Function { is_async: bool },
    Lambda,
    Class,
    Comprehension(ComprehensionKind),
}

impl ScopeKind {
    /// Scopes whose local variables nested functions can close over.
    pub fn is_function_like(self) -> bool {
        !matches!(self, ScopeKind::Class)
    }

    /// Scopes under which CPython adds `.<locals>` to nested qualified names.
    pub fn adds_locals_to_qualname(self) -> bool {
        matches!(self, ScopeKind::Function { .. } | ScopeKind::Lambda)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ParamKind {
    PositionalOnly,
    Positional,
    VarPositional,
    KeywordOnly,
    VarKeyword,
}

#[derive(Clone, Debug)]
pub(crate) struct Param {
    pub name: Box<str>,
    pub kind: ParamKind,
    /// From the end of the name to the end of the annotation (`: int`, parentheses included).
    pub annotation: Option<Span>,
    /// The default value expression (enclosing parentheses excluded, as in ruff's AST).
    pub default: Option<Span>,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct DecoratorSpan {
    /// From the `@` to the end of the expression.
    pub range: Span,
    /// Start of the decorator expression: its line is the function's `co_firstlineno`.
    pub expression_start: u32,
}

/// What the neutraliser needs about a `def` or `lambda` signature.
#[derive(Clone, Debug, Default)]
pub(crate) struct Signature {
    /// Parameters in `co_varnames` order: positional-only, positional, keyword-only, then
    /// `*args`, then `**kwargs`.
    pub params: Vec<Param>,
    pub decorators: Vec<DecoratorSpan>,
    /// From `->` to the end of the annotation's last token (closing parentheses included).
    pub returns: Option<Span>,
    /// The return annotation exists but its `->` or `:` could not be found in the tokens.
    pub returns_unresolved: bool,
}

impl Signature {
    /// Parts of the node that CPython evaluates in the enclosing scope, not in the function.
    pub fn outer_regions(&self) -> impl Iterator<Item = Span> + '_ {
        let decorators = self.decorators.iter().map(|d| d.range);
        let params = self.params.iter().flat_map(|p| p.annotation.into_iter().chain(p.default));
        decorators.chain(params).chain(self.returns)
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Scope {
    pub kind: ScopeKind,
    /// The `def`/`class` name, or `<lambda>`, `<listcomp>`, ...
    pub name: Box<str>,
    pub parent: Option<u32>,
    /// One past the index of the last descendant scope.
    pub subtree_end: u32,
    /// The whole node; for a decorated `def` or `class` it starts at the first `@`.
    pub range: Span,
    /// Where CPython's statement span starts: the `def`/`async`/`class` keyword.
    pub statement_start: u32,
    /// An offset on the line CPython reports as `co_firstlineno`.
    pub first_line_offset: u32,
    /// The parts compiled into this scope's own code object (the body). A code position
    /// inside one of them belongs to this scope, not to its parent.
    pub private: Vec<Span>,
    /// Its name is declared `global` in the enclosing (non-module) scope, which makes
    /// CPython drop the enclosing qualified name.
    pub force_global: bool,
    /// `Some` for `def` and `lambda`.
    pub signature: Option<Box<Signature>>,
}

pub(crate) struct ScopeTable {
    pub scopes: Vec<Scope>,
    /// Deepest statement/expression/pattern nesting met (capped just above [`MAX_DEPTH`]).
    pub max_depth: usize,
}

/// Builds the scope table of a parsed module.
pub(crate) fn build(module: &ast::ModModule, tokens: &[Token]) -> ScopeTable {
    let mut builder =
        Builder { tokens, scopes: Vec::new(), stack: Vec::new(), globals: vec![Vec::new()], depth: 0, max_depth: 0 };
    builder.visit_body(&module.body);
    ScopeTable { scopes: builder.scopes, max_depth: builder.max_depth }
}

struct Builder<'t> {
    tokens: &'t [Token],
    scopes: Vec<Scope>,
    /// Indices of the open scopes, innermost last.
    stack: Vec<u32>,
    /// Names declared `global` so far, per open scope; index 0 is the module.
    globals: Vec<Vec<Box<str>>>,
    depth: usize,
    max_depth: usize,
}

impl Builder<'_> {
    /// Runs `walk` one level deeper, on a fresh stack segment when the current one runs low,
    /// and not at all past [`MAX_DEPTH`] (the caller then rejects the file).
    fn nested(&mut self, walk: impl FnOnce(&mut Self)) {
        self.depth += 1;
        self.max_depth = self.max_depth.max(self.depth);
        if self.depth <= MAX_DEPTH {
            stacker::maybe_grow(RED_ZONE, STACK_SEGMENT, || walk(self));
        }
        self.depth -= 1;
    }

    fn open(&mut self, mut scope: Scope) -> u32 {
        scope.parent = self.stack.last().copied();
        let index = u32::try_from(self.scopes.len()).unwrap_or(u32::MAX);
        self.scopes.push(scope);
        self.stack.push(index);
        self.globals.push(Vec::new());
        index
    }

    fn close(&mut self, index: u32) {
        self.stack.pop();
        self.globals.pop();
        let end = u32::try_from(self.scopes.len()).unwrap_or(u32::MAX);
        if let Some(scope) = self.scopes.get_mut(index as usize) {
            scope.subtree_end = end;
        }
    }

    /// CPython consults `global` declarations of the enclosing scope for qualified names only
    /// when that scope is not the module.
    fn declared_global(&self, name: &str) -> bool {
        !self.stack.is_empty() && self.globals.last().is_some_and(|names| names.iter().any(|n| &**n == name))
    }

    /// Index of the first token starting at or after `offset`.
    fn token_index_at(&self, offset: u32) -> usize {
        self.tokens.partition_point(|token| u32::from(token.start()) < offset)
    }

    fn token(&self, index: usize) -> Option<&Token> {
        self.tokens.get(index)
    }

    /// Start of the `def` keyword (or of `async` before it) preceding the name at `name_start`.
    fn def_keyword_start(&self, name_start: u32) -> Option<u32> {
        let name_index = self.token_index_at(name_start);
        let def_index = name_index.checked_sub(1)?;
        let def = self.token(def_index)?;
        if def.kind() != TokenKind::Def {
            return None;
        }
        let is_async = def_index.checked_sub(1).and_then(|i| self.token(i)).filter(|t| t.kind() == TokenKind::Async);
        Some(is_async.unwrap_or(def).start().into())
    }

    /// Start of the `class` keyword preceding the name at `name_start`.
    fn class_keyword_start(&self, name_start: u32) -> Option<u32> {
        let index = self.token_index_at(name_start).checked_sub(1)?;
        let class = self.token(index)?;
        (class.kind() == TokenKind::Class).then(|| class.start().into())
    }

    /// The span from `->` to the end of the return annotation's last token, found from the
    /// tokens because ruff's annotation range leaves out enclosing parentheses.
    fn return_annotation_span(&self, parameters_end: u32, returns_end: u32) -> Option<Span> {
        let arrow =
            self.tokens.get(self.token_index_at(parameters_end)..)?.iter().find(|t| t.kind() == TokenKind::Rarrow)?;
        let after_annotation = self.token_index_at(returns_end);
        let colon = after_annotation
            + self.tokens.get(after_annotation..)?.iter().position(|t| t.kind() == TokenKind::Colon)?;
        // The last token before the colon: the annotation's own, or a closing parenthesis.
        let last = self
            .tokens
            .get(..colon)?
            .iter()
            .rev()
            .find(|t| !matches!(t.kind(), TokenKind::Comment | TokenKind::NonLogicalNewline))?;
        let span = Span::new(arrow.start().into(), last.end().into());
        (span.end > span.start).then_some(span)
    }

    fn function_def(&mut self, def: &ast::StmtFunctionDef) {
        for decorator in &def.decorator_list {
            self.visit_decorator(decorator);
        }
        if let Some(type_params) = &def.type_params {
            self.visit_type_params(type_params);
        }
        self.visit_parameters(&def.parameters);
        if let Some(returns) = &def.returns {
            self.visit_annotation(returns);
        }

        let range = Span::of(def.range);
        let name_start: u32 = def.name.range.start().into();
        let statement_start = self.def_keyword_start(name_start).unwrap_or(name_start);
        let decorators: Vec<DecoratorSpan> = def
            .decorator_list
            .iter()
            .map(|d| DecoratorSpan { range: Span::of(d.range), expression_start: d.expression.start().into() })
            .collect();
        let first_line_offset = decorators.first().map_or(statement_start, |d| d.expression_start);
        let (returns, returns_unresolved) = match &def.returns {
            None => (None, false),
            Some(annotation) => {
                match self.return_annotation_span(def.parameters.range.end().into(), annotation.end().into()) {
                    Some(span) => (Some(span), false),
                    None => (None, true),
                }
            }
        };
        let signature = Signature { params: params_of(&def.parameters), decorators, returns, returns_unresolved };
        let index = self.open(Scope {
            kind: ScopeKind::Function { is_async: def.is_async },
            name: def.name.as_str().into(),
            parent: None,
            subtree_end: 0,
            range,
            statement_start,
            first_line_offset,
            private: vec![body_span(&def.body, range.end)],
            force_global: self.declared_global(def.name.as_str()),
            signature: Some(Box::new(signature)),
        });
        self.visit_body(&def.body);
        self.close(index);
    }

    fn class_def(&mut self, class: &ast::StmtClassDef) {
        for decorator in &class.decorator_list {
            self.visit_decorator(decorator);
        }
        if let Some(type_params) = &class.type_params {
            self.visit_type_params(type_params);
        }
        if let Some(arguments) = &class.arguments {
            self.visit_arguments(arguments);
        }
        let range = Span::of(class.range);
        let name_start: u32 = class.name.range.start().into();
        let statement_start = self.class_keyword_start(name_start).unwrap_or(name_start);
        let index = self.open(Scope {
            kind: ScopeKind::Class,
            name: class.name.as_str().into(),
            parent: None,
            subtree_end: 0,
            range,
            statement_start,
            first_line_offset: statement_start,
            private: vec![body_span(&class.body, range.end)],
            force_global: self.declared_global(class.name.as_str()),
            signature: None,
        });
        self.visit_body(&class.body);
        self.close(index);
    }

    fn lambda(&mut self, lambda: &ast::ExprLambda) {
        if let Some(parameters) = &lambda.parameters {
            self.visit_parameters(parameters);
        }
        let range = Span::of(lambda.range);
        let signature = Signature {
            params: lambda.parameters.as_deref().map(params_of).unwrap_or_default(),
            ..Signature::default()
        };
        let index = self.open(Scope {
            kind: ScopeKind::Lambda,
            name: "<lambda>".into(),
            parent: None,
            subtree_end: 0,
            range,
            statement_start: range.start,
            first_line_offset: range.start,
            private: vec![Span::of(lambda.body.range())],
            force_global: false,
            signature: Some(Box::new(signature)),
        });
        self.visit_expr(&lambda.body);
        self.close(index);
    }

    fn comprehension(
        &mut self,
        kind: ComprehensionKind,
        range: TextRange,
        elements: &[&Expr],
        generators: &[ast::Comprehension],
    ) {
        // The first iterable is evaluated in the enclosing scope and passed in as `.0`.
        if let Some(first) = generators.first() {
            self.visit_expr(&first.iter);
        }
        let mut private: Vec<Span> = elements.iter().map(|e| Span::of(e.range())).collect();
        for (i, generator) in generators.iter().enumerate() {
            private.push(Span::of(generator.target.range()));
            if i > 0 {
                private.push(Span::of(generator.iter.range()));
            }
            private.extend(generator.ifs.iter().map(|e| Span::of(e.range())));
        }
        let range = Span::of(range);
        let index = self.open(Scope {
            kind: ScopeKind::Comprehension(kind),
            name: kind.code_name().into(),
            parent: None,
            subtree_end: 0,
            range,
            statement_start: range.start,
            first_line_offset: range.start,
            private,
            force_global: false,
            signature: None,
        });
        for (i, generator) in generators.iter().enumerate() {
            self.visit_expr(&generator.target);
            if i > 0 {
                self.visit_expr(&generator.iter);
            }
            for condition in &generator.ifs {
                self.visit_expr(condition);
            }
        }
        for element in elements {
            self.visit_expr(element);
        }
        self.close(index);
    }
}

impl<'a> Visitor<'a> for Builder<'_> {
    fn visit_stmt(&mut self, stmt: &'a Stmt) {
        self.nested(|this| match stmt {
            Stmt::FunctionDef(def) => this.function_def(def),
            Stmt::ClassDef(class) => this.class_def(class),
            Stmt::Global(global) => {
                if let Some(names) = this.globals.last_mut() {
                    names.extend(global.names.iter().map(|n| Box::from(n.as_str())));
                }
            }
            _ => visitor::walk_stmt(this, stmt),
        });
    }

    fn visit_expr(&mut self, expr: &'a Expr) {
        self.nested(|this| match expr {
            Expr::Lambda(lambda) => this.lambda(lambda),
            Expr::ListComp(c) => this.comprehension(ComprehensionKind::List, c.range, &[&c.elt], &c.generators),
            Expr::SetComp(c) => this.comprehension(ComprehensionKind::Set, c.range, &[&c.elt], &c.generators),
            Expr::Generator(c) => this.comprehension(ComprehensionKind::Generator, c.range, &[&c.elt], &c.generators),
            Expr::DictComp(c) => {
                let mut elements: Vec<&Expr> = c.key.as_deref().into_iter().collect();
                elements.push(&c.value);
                this.comprehension(ComprehensionKind::Dict, c.range, &elements, &c.generators)
            }
            _ => visitor::walk_expr(this, expr),
        });
    }

    fn visit_pattern(&mut self, pattern: &'a Pattern) {
        self.nested(|this| visitor::walk_pattern(this, pattern));
    }
}

/// The statements of a body, from the first one to the end of the node.
fn body_span(body: &[Stmt], node_end: u32) -> Span {
    match body.first() {
        Some(first) => Span::new(first.start().into(), node_end),
        None => Span::new(node_end, node_end),
    }
}

fn params_of(parameters: &ast::Parameters) -> Vec<Param> {
    fn param(p: &ast::Parameter, kind: ParamKind, default: Option<&Expr>) -> Param {
        Param {
            name: p.name.as_str().into(),
            kind,
            annotation: p.annotation.as_ref().map(|_| Span::new(p.name.range.end().into(), p.range.end().into())),
            default: default.map(|d| Span::of(d.range())),
        }
    }
    let with_defaults = |list: &[ast::ParameterWithDefault], kind: ParamKind| {
        list.iter().map(move |p| param(&p.parameter, kind, p.default.as_deref())).collect::<Vec<_>>()
    };
    let mut params = with_defaults(&parameters.posonlyargs, ParamKind::PositionalOnly);
    params.extend(with_defaults(&parameters.args, ParamKind::Positional));
    params.extend(with_defaults(&parameters.kwonlyargs, ParamKind::KeywordOnly));
    if let Some(vararg) = &parameters.vararg {
        params.push(param(vararg, ParamKind::VarPositional, None));
    }
    if let Some(kwarg) = &parameters.kwarg {
        params.push(param(kwarg, ParamKind::VarKeyword, None));
    }
    params
}
