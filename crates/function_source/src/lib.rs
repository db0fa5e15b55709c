//! Locate the `def` or `lambda` a CPython code object was compiled from, and build the
//! source text that recompiles to an identical code object without re-running decorators,
//! default values or annotations.
//!
//! This is the source half of cloudpickle-rs's `by_source` mode (see `DESIGN.md`, section
//! 2): instead of a version-specific code object, the pickle carries this text, and the
//! receiver runs `exec(compile(source, co_filename, "exec"), ns)` with the standard library
//! only. The crate is pure Rust and knows nothing of the Python runtime: the caller reads
//! the code object's attributes and passes them in a [`CodeQuery`].
//!
//! # Per function
//!
//! ```
//! use function_source::{CodePosition, CodeQuery, ParseCache, RESULT_NAME};
//!
//! let text = "def make_adder(k):\n    return lambda x: x + k\n";
//! let mut cache = ParseCache::new(64);
//! // Once per file (cached by name and content): the text linecache has for co_filename.
//! // Parsing a 2000-line file takes about 1-3 ms; a cache hit about 2 µs.
//! let file = cache.get_or_parse("adder.py", text).expect("parses");
//!
//! // What `make_adder(5).__code__` says on CPython 3.11.
//! let pos = |line, column, end_column| CodePosition {
//!     line: Some(line), end_line: Some(line), column: Some(column), end_column: Some(end_column),
//! };
//! let query = CodeQuery {
//!     name: "<lambda>".into(),
//!     qualname: Some("make_adder.<locals>.<lambda>".into()),
//!     first_line: 2,
//!     arg_names: vec!["x".into()],
//!     positions: vec![pos(2, 0, 0), pos(2, 21, 22), pos(2, 25, 26), pos(2, 21, 26)],
//!     nested_code_names: Some(vec![]),
//!     free_vars: vec!["k".into()],
//! };
//! let function = file.locate(&query).expect("found");
//! let neutral = function.neutralise().expect("neutralised");
//! assert!(neutral.defaults.is_empty()); // compare with __defaults__ / __kwdefaults__
//! let factory = function.factory(&query).expect("built"); // uses query.free_vars
//! assert_eq!(
//!     factory.source,
//!     "def make_adder(k=None): return (\n           lambda x: x + k\n )\n\
//!      __function_source_result__ = make_adder()\n"
//! );
//! // Receiver: ns = {}; exec(compile(factory.source, co_filename, "exec"), ns)
//! //           code = ns[RESULT_NAME].__code__
//! assert_eq!(RESULT_NAME, "__function_source_result__");
//! assert!(factory.newer_syntax.is_empty()); // else warn: PyPy 3.9 cannot compile it
//! ```
//!
//! # Guarantees
//!
//! - No function panics, whatever the input text or query: failures are [`Error`]s.
//! - A node is returned only if it matches the code object's name, first line, qualified
//!   name (when given), parameter names and every position; a file edited since the code
//!   was compiled is reported ([`NotFoundReason::PositionMismatch`]), not guessed around.
//! - The factory source uses Python 3.8 syntax (the oldest receiver) and the standard library
//!   only; what it adds around the function never needs more than the function's own text
//!   (a decorator split as `@(\n deco)`, itself 3.9 syntax, stays split). Syntax newer than
//!   3.8 in the function itself is reported ([`LocatedFunction::syntax_since`]), not rewritten.
//!
//! # Modules
//!
//! - [`source`]: [`SourceFile`], a file parsed once (with [`lines`] for positions);
//! - [`cache`]: [`ParseCache`], bounded (LRU), keyed by file name and exact content;
//! - [`locate`]: [`CodeQuery`] to [`LocatedFunction`];
//! - [`neutralise`]: the node's text with decorators, defaults and annotations taken out;
//! - [`factory`]: the reconstruction source;
//! - [`stream`]: the text decisions of a by_source stream (compile key, padding, linecache runs).

#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::string_slice,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::unreachable,
        clippy::todo
    )
)]
#![warn(missing_docs)]

pub mod cache;
mod error;
pub mod factory;
pub mod lines;
pub mod locate;
pub mod neutralise;
mod scopes;
pub mod share;
pub mod source;
pub mod stream;

pub use cache::{CacheStats, ParseCache, ParseResult};
pub use error::{Error, NotFoundReason};
pub use factory::{Factory, FactoryLayout, RESULT_NAME};

/// The name a factory's text uses as the decorator of a decorated function (see
/// [`neutralise`]): the namespace the factory is executed in must bind it to an identity
/// function, e.g. `{KEEP_NAME: copy.copy}` (`copy.copy(f) is f` for every function) or
/// `lambda f: f`. Present in the text only when the function is decorated.
pub const KEEP_NAME: &str = "__function_source_keep__";
pub use lines::{LineColumn, LineIndex};
pub use locate::{CodePosition, CodeQuery, FunctionKind, LocatedFunction};
pub use neutralise::{DefaultValue, NeutralisedFunction};
pub use source::{NewerSyntax, SourceFile, MAX_NESTING_DEPTH, MAX_SOURCE_BYTES};
