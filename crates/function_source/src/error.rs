//! The crate's error type.

use std::fmt;

/// Why a file could not be used, or a function could not be found or rebuilt.
///
/// Every fallible function of this crate returns this type; nothing in the crate panics on
/// any input. The `Display` text is written for an end user and names the cause.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The text is larger than this crate handles (offsets are 32-bit, as in the parser).
    SourceTooLarge {
        /// Size of the text in bytes.
        bytes: usize,
        /// The largest accepted size in bytes.
        limit: usize,
    },
    /// The file is not valid Python (for the parser used: ruff's, which accepts the syntax of
    /// every Python 3 version). Nothing can be located in such a file.
    Syntax {
        /// The parser's message.
        message: String,
        /// 1-based line of the error.
        line: u32,
        /// Byte column of the error.
        column: u32,
    },
    /// The parser failed internally (it panicked); treated like a file that does not parse.
    ParserFailure {
        /// The panic message, if it was a string.
        message: String,
    },
    /// Expressions or statements nest more deeply than [`crate::MAX_NESTING_DEPTH`]. CPython
    /// itself refuses far shallower nesting, so no function of such a file can be rebuilt.
    TooDeeplyNested {
        /// The nesting depth reached.
        depth: usize,
    },
    /// No `def`/`lambda` in the file matches the code object.
    NotFound {
        /// `co_name` looked for.
        name: String,
        /// `co_firstlineno` looked for.
        first_line: u32,
        /// Which check eliminated the last candidates.
        reason: NotFoundReason,
    },
    /// Several nodes match the code object equally well (for example two identical lambdas
    /// on one line when the code object carries no column information).
    Ambiguous {
        /// `co_name` looked for.
        name: String,
        /// `co_firstlineno` looked for.
        first_line: u32,
        /// How many nodes matched.
        candidates: usize,
    },
    /// A free variable name passed to the factory builder is not a Python identifier.
    InvalidFreeVariable {
        /// The offending name.
        name: String,
    },
    /// The function has free variables but no enclosing function-like scope in the source
    /// could provide them (the source does not match the code object).
    UnboundFreeVariables {
        /// The free variables with no enclosing function scope.
        names: Vec<String>,
    },
    /// The function's layout is outside what the factory builder supports (for example a
    /// `def` whose first line holds something other than indentation before it).
    UnsupportedLayout {
        /// What is unsupported.
        detail: String,
    },
}

/// The check that eliminated the last candidate node in [`Error::NotFound`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum NotFoundReason {
    /// No `def` with that name (or no `lambda`, for `<lambda>`) starts on `co_firstlineno`.
    /// Usually the file changed since the code was compiled, or the code was not compiled
    /// from this file.
    NoNodeOnFirstLine,
    /// Nodes on that line have the wrong qualified name (`co_qualname`).
    QualnameMismatch,
    /// Nodes on that line have different parameter names than `co_varnames`.
    ArgumentMismatch,
    /// Nodes on that line do not cover the code's `co_positions()`: the function's text
    /// changed since it was compiled.
    PositionMismatch,
}

impl fmt::Display for NotFoundReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NotFoundReason::NoNodeOnFirstLine => "no definition of that name starts on that line",
            NotFoundReason::QualnameMismatch => "the qualified name differs",
            NotFoundReason::ArgumentMismatch => "the parameter names differ",
            NotFoundReason::PositionMismatch => {
                "the source text does not cover the code's positions (was the file edited?)"
            }
        })
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::SourceTooLarge { bytes, limit } => {
                write!(f, "source of {bytes} bytes exceeds the limit of {limit} bytes")
            }
            Error::Syntax { message, line, column } => {
                write!(f, "source does not parse at line {line}, byte column {column}: {message}")
            }
            Error::ParserFailure { message } => write!(f, "the Python parser failed: {message}"),
            Error::TooDeeplyNested { depth } => {
                write!(f, "source nests {depth} levels deep, more than supported")
            }
            Error::NotFound { name, first_line, reason } => {
                write!(f, "cannot find `{name}` defined at line {first_line}: {reason}")
            }
            Error::Ambiguous { name, first_line, candidates } => {
                write!(f, "{candidates} definitions match `{name}` at line {first_line} equally well")
            }
            Error::InvalidFreeVariable { name } => {
                write!(f, "free variable name {name:?} is not a Python identifier")
            }
            Error::UnboundFreeVariables { names } => {
                write!(f, "no enclosing function in the source binds the free variables {}", names.join(", "))
            }
            Error::UnsupportedLayout { detail } => {
                write!(f, "cannot rebuild this function from source: {detail}")
            }
        }
    }
}

impl std::error::Error for Error {}
