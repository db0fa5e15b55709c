//! `by_source`: code objects travel as source text and are compiled again on the receiver with
//! standard-library calls only (DESIGN.md §2), so a pickle made on CPython 3.11 loads on another
//! interpreter that has nothing but stock cloudpickle.
//!
//! For a code object the stream is, in Python terms:
//!
//! ```text
//! ORIG = ORIGINAL_LINES                               # memoized, popped
//! BODY = ''.join([TEXT, ORIG[a:b], TEXT])             # the factory source after its padding
//! exec(HELPER(KEY, co_filename, HEAD, PADDING, BODY), NS)
//! code = getattr(operator.getitem(NS, RESULT_NAME), '__code__')   # memoized as the code
//! ```
//!
//! with, once per stream, the factories' namespace `NS = {}` and the receiver's compile helper
//! (`HELPER_SOURCE`: it compiles `HEAD + PADDING blank lines + BODY` once per process, keeping
//! the code by KEY in `linecache._cloudpickle_rs_texts`, which is also what a receiver sends
//! on by source from):
//!
//! ```text
//! H = {}; exec(vars(linecache).setdefault('_cloudpickle_rs_compile',
//!                                         functools.lru_cache(16)(compile))(HELPER_SOURCE, ...), H)
//! HELPER = H['__cloudpickle_rs_compile__']
//! ```
//!
//! and, once per file after the object, the function's original lines into `linecache`.
//!
//! where the factory source (built by the `function_source` crate) keeps the function's own
//! lines at their original line numbers and columns, so the recompiled code has the original
//! positions, free variables and qualified name. The function itself is then built exactly as in
//! bytecode mode (`_make_function` + `_function_setstate`), except that its closure is assembled
//! by free-variable *name* on the receiver (`co_freevars` order is the receiver's business).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use function_source::stream::{merge_runs, padding_text, text_key, RunPiece, Span, PADDING_AS_STRING};
use function_source::{CodePosition, CodeQuery, ParseCache, SourceFile, RESULT_NAME};
use pickle_wire::opcodes::{MARK, POP, REDUCE, TUPLE, TUPLE2, TUPLE3};
use pyo3::exceptions::PyValueError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyString, PyTuple};

use super::options::{running_version, BySource};
use crate::cloud::CloudDumper;
use crate::lookup::lookup_attr;
use crate::statics::pickling_error;

/// `function 'f' (file.py, line 3)` as the receiver would first see it fail.
fn syntax_refusal(py: Python<'_>, func: &Bound<'_, PyAny>, built: &Built, target: (u8, u8)) -> Option<PyErr> {
    let too_new: Vec<&function_source::NewerSyntax> =
        built.syntax.iter().filter(|s| s.since.is_none_or(|v| v > target)).collect();
    if too_new.is_empty() {
        return None;
    }
    let file = built.filename.bind(py).to_string();
    let list: Vec<String> = too_new
        .iter()
        .map(|s| match s.since {
            Some((major, minor)) => format!("{} ({file}:{}): Python {major}.{minor}+", s.construct, s.start.line),
            None => format!("{} ({file}:{}): a Python newer than the parser knows", s.construct, s.start.line),
        })
        .collect();
    Some(pickling_error(
        py,
        format!(
            "cannot pickle {} by source for Python {}.{}: its text uses syntax that Python {}.{} cannot parse: {}. \
             Rewrite it without that syntax, or raise target_python.",
            describe(func),
            target.0,
            target.1,
            target.0,
            target.1,
            list.join("; ")
        ),
    ))
}

/// The oldest Python that parses the shipped text of a function whose constructs are `syntax`
/// (3.8, the oldest supported receiver, when nothing newer is used).
fn minimum_python(syntax: &[function_source::NewerSyntax]) -> (u8, u8) {
    syntax.iter().filter_map(|s| s.since).max().unwrap_or((3, 8)).max((3, 8))
}

/// The last line of a factory text whose function needs a Python newer than 3.8: a comment the
/// receiver ignores and `python -m cloudpickle_rs inspect` reads.
pub(crate) const REQUIRES_PREFIX: &str = "# cloudpickle-rs: requires Python ";

/// What the receiver needs to rebuild one code object.
struct Built {
    /// The factory source without its leading newlines (see `padding`).
    source: String,
    /// The line the receiver's text starts with, if any (see [`Layout`]).
    prelude: Option<String>,
    /// How many blank lines come before `source` (after the prelude).
    padding: usize,
    /// The receiver's cache key of the text ([`text_key`]).
    key: i64,
    filename: Py<PyString>,
    /// The function's lines in the original file, from `first_line` on, each ending in a
    /// newline (`line_count` of them), for the receiver's `linecache`.
    first_line: u32,
    line_count: u32,
    original_text: String,
    /// `original_text.chars().count()`.
    original_chars: usize,
    /// The factory text (`source`) as its own lines and slices of `original_text`.
    pieces: Vec<SrcPiece>,
    /// Constructs of the shipped text that Python 3.7 cannot parse, each with the version
    /// that added it (`target_python` is checked against these on every dump).
    syntax: Vec<function_source::NewerSyntax>,
}

/// The text the receiver compiles for a factory source: an import prelude on the first line
/// when the function uses names the module imports (`function_source::source::import_prelude`:
/// CPython 3.11+ then compiles `module.attr(...)` as the original was, and the check on this
/// side finds equal code without comparing instructions one by one), then the blank lines that
/// keep the function at its original line, then the rest.
struct Layout<'a> {
    prelude: Option<String>,
    padding: usize,
    body: &'a str,
}

impl<'a> Layout<'a> {
    fn of(file: &SourceFile, source: &'a str) -> Self {
        let body = source.trim_start_matches('\n');
        let padding = source.len() - body.len();
        // `from __future__` must stay the first statement: no prelude above it.
        let prelude = (padding >= 1 && !source.contains("from __future__"))
            .then(|| function_source::source::import_prelude(file.module_imports(), body))
            .flatten();
        Layout { padding: padding - usize::from(prelude.is_some()), prelude, body }
    }

    /// As the receiver's compile helper builds it from the stream's head, padding and body.
    fn render(&self) -> String {
        let mut text = self.prelude.clone().unwrap_or_default();
        text.push_str(&padding_text(self.padding));
        text.push_str(self.body);
        text
    }
}

/// Per-process caches: parsed files (by name and content) and the factory built for each code
/// object (held weakly, checked on use).
struct SourceCaches {
    files: ParseCache,
    /// filename -> (the `linecache` lines list last seen, the parsed file): when linecache hands
    /// back the same list object, the file has not changed and is not joined or hashed again.
    by_lines: HashMap<String, (Py<PyAny>, Arc<SourceFile>)>,
    built: crate::cloud::code::CodeCache<Arc<Built>>,
    /// One str object of ours per file name, shared by the builds of its functions: the stream
    /// memoizes it once per file. Never the user's own object (a module's `co_filename` is often
    /// its `__file__` too, and whether the stream then shares the two would depend on how the
    /// module came to be: loaded from a stream, it does not; a stream must not change after a
    /// load, Dask's tokenize checks that).
    names: HashMap<String, Py<PyString>>,
}

static CACHES: PyOnceLock<Mutex<SourceCaches>> = PyOnceLock::new();
/// Lines between two functions of one file that the linecache text of a stream fills with bare
/// newlines; a longer gap starts a new run.
const MAX_GAP: u32 = 32;

/// A part of a factory text, as [`function_source::share::Piece`] with owned positions.
enum SrcPiece {
    /// Bytes of the factory text (`Built::source`).
    Text(std::ops::Range<usize>),
    /// Characters of the original lines (`Built::original_text`).
    Original(usize, usize),
}

fn caches(py: Python<'_>) -> &'static Mutex<SourceCaches> {
    CACHES.get_or_init(py, || {
        Mutex::new(SourceCaches {
            files: ParseCache::new(256),
            by_lines: HashMap::new(),
            built: Default::default(),
            names: HashMap::new(),
        })
    })
}

/// A file's functions whose lines the stream owes the receiver, each with the memo index of
/// its original lines.
type PendingFile = (Py<PyString>, Vec<(Arc<Built>, usize)>);

/// Per-dump state of the source path.
#[derive(Default)]
pub(crate) struct SourceDump {
    /// The functions whose lines the stream gives the receiver's linecache, by file, the files
    /// in the order first met (the stream stays deterministic).
    pending_lines: Vec<PendingFile>,
    /// Functions already warned about (auto mode), by address.
    warned: crate::addr::AddrSet,
}

impl<'py> CloudDumper<'py> {
    pub(crate) fn by_source(&self) -> BySource {
        self.layer.by_source
    }

    /// Write the code of `func` by source (memoized as the code object). Returns false when
    /// there is no source and the mode allows bytecode (auto), after warning once.
    pub(crate) fn save_code_by_source(&mut self, code: &Bound<'py, PyAny>, func: &Bound<'py, PyAny>) -> PyResult<bool> {
        let py = self.py;
        if let Some(idx) = self.memo.get(code) {
            self.memo_get(idx)?;
            return Ok(true);
        }
        let target = self.layer.target_python;
        let built = match build(py, code, func) {
            Ok(b) => b,
            Err(why) => {
                if let Some(t) = target.filter(|&t| t != running_version(py)) {
                    // Bytecode would not load there: no fallback, whatever the mode.
                    return Err(no_source_error(
                        py,
                        func,
                        code,
                        &format!("{why}; with target_python={}.{} its bytecode would not load either", t.0, t.1),
                    ));
                }
                if self.by_source() == BySource::Auto {
                    self.warn_fallback(func, &why)?;
                    return Ok(false);
                }
                return Err(no_source_error(py, func, code, &why));
            }
        };
        if let Some(t) = target {
            if let Some(err) = syntax_refusal(py, func, &built, t) {
                return Err(err);
            }
        }
        let orig = self.write_compiled_code(code, &built)?;
        self.note_lines(&built, orig)?;
        Ok(true)
    }

    /// The function's original lines, the factory text, its `linecache` entry, and the code
    /// compiled from it, memoized as the code object. Returns the memo index of the original
    /// lines.
    fn write_compiled_code(&mut self, code: &Bound<'py, PyAny>, built: &Built) -> PyResult<usize> {
        let py = self.py;
        let st = self.st;
        let b = builtins(py)?;
        // ORIG, the function's original lines (for the receiver's linecache, written after the
        // object), then SRC, the factory text built from ORIG's lines where the two agree. Both
        // are values of the receiver only: memoized under reserved indices rather than keyed
        // by throwaway Python objects of ours (a str per function made the collector run every
        // few hundred functions).
        self.save_text(&built.original_text)?;
        let orig = self.memo_reserve()?;
        self.w.op(POP);
        if built.source.contains(function_source::KEEP_NAME) {
            // setitem(NS, KEEP_NAME, copy.copy): the decorator the factory puts in place of the
            // real ones (only then: `copy` is not in the stream otherwise).
            self.save_named_global(b.setitem.bind(py), "_operator", "setitem")?;
            self.save_scratch_ns()?;
            self.save(b.keep_name.bind(py).as_any(), false)?;
            self.save_named_global(b.copy.bind(py), "copy", "copy")?;
            self.call_with(3);
            self.w.op(POP);
        }
        // exec(COMPILE(KEY, filename, HEAD, PADDING, BODY), NS), COMPILE being the receiver's
        // cached compile (see HELPER_SOURCE)
        self.save_named_global(b.exec.bind(py), "builtins", "exec")?;
        self.save_compile_helper()?;
        self.w.op(MARK);
        self.w.int(built.key);
        self.save(built.filename.bind(py).as_any(), false)?;
        let head = built.prelude.as_deref().unwrap_or("");
        self.save_text(head)?;
        self.w.int(built.padding as i64);
        self.save_factory_body(built, orig)?;
        self.call_marked();
        self.save_scratch_ns()?;
        self.call_with(2);
        self.w.op(POP);
        // getattr(getitem(NS, RESULT_NAME), '__code__')
        self.save_named_global(st.builtins_getattr.bind(py), "builtins", "getattr")?;
        self.save_named_global(b.getitem.bind(py), "_operator", "getitem")?;
        self.save_scratch_ns()?;
        self.save(b.result_name.bind(py).as_any(), false)?;
        self.call_with(2);
        self.save(intern!(py, "__code__").as_any(), false)?;
        self.call_with(2);
        self.memo_put(code)?;
        Ok(orig)
    }

    /// A str the stream builds something from (not memoized).
    fn save_text(&mut self, text: &str) -> PyResult<()> {
        self.w.unicode(text.as_bytes()).map_err(|e| crate::statics::wire_error(self.py, e))
    }

    /// A value of the receiver's that each stream writes once: `write` the first time (it leaves
    /// the value on the stack), memoized under `key`, a private object of ours; a memo reference
    /// afterwards.
    fn once_per_stream(&mut self, key: &Py<PyAny>, write: impl FnOnce(&mut Self) -> PyResult<()>) -> PyResult<()> {
        let py = self.py;
        if let Some(idx) = self.memo.get(key.bind(py)) {
            return self.memo_get(idx);
        }
        write(self)?;
        self.memo_put(key.bind(py))
    }

    /// Memoize the value on top of the receiver's stack under a new index, whatever the
    /// pickler's `fast` setting: the stream refers to it again.
    fn memo_reserve(&mut self) -> PyResult<usize> {
        let idx = self.memo.reserve();
        self.w.memo_put(idx).map_err(|e| crate::statics::wire_error(self.py, e))?;
        Ok(idx)
    }

    /// The receiver's compile of factory texts (see [`HELPER_SOURCE`]), memoized once per
    /// stream:
    /// `H = {}; exec(COMPILE(HELPER_SOURCE, '<cloudpickle-rs>', 'exec'), H); H[HELPER_NAME]`,
    /// COMPILE being `vars(linecache).setdefault('_cloudpickle_rs_compile',
    /// functools.lru_cache(N)(compile))`, so the helper's source is compiled once per process.
    /// Only the standard library is named (DESIGN.md §2).
    fn save_compile_helper(&mut self) -> PyResult<()> {
        let b = builtins(self.py)?;
        self.once_per_stream(&b.compile_key, |d| d.write_compile_helper(b))
    }

    fn write_compile_helper(&mut self, b: &Builtins) -> PyResult<()> {
        let py = self.py;
        self.w.empty_dict();
        let h = self.memo_reserve()?;
        self.w.op(POP);
        self.save_named_global(b.exec.bind(py), "builtins", "exec")?;
        // vars(__import__('linecache')).setdefault(NAME, functools.lru_cache(N)(compile))
        self.save_named_global(self.st.builtins_getattr.bind(py), "builtins", "getattr")?;
        self.save_named_global(b.vars.bind(py), "builtins", "vars")?;
        self.save_named_global(b.linecache.bind(py), "builtins", "__import__")?;
        self.save(intern!(py, "linecache").as_any(), false)?;
        self.call_with(1);
        self.call_with(1);
        self.save(intern!(py, "setdefault").as_any(), false)?;
        self.call_with(2);
        self.save_text(COMPILE_CACHE_NAME)?;
        self.save_named_global(b.lru_cache.bind(py), "functools", "lru_cache")?;
        self.w.int(COMPILE_CACHE_SIZE);
        self.call_with(1);
        self.save_named_global(b.compile.bind(py), "builtins", "compile")?;
        self.call_with(1);
        self.call_with(2);
        // (HELPER_SOURCE, '<cloudpickle-rs>', 'exec')
        self.save_text(&b.helper_source)?;
        self.save_text("<cloudpickle-rs>")?;
        self.save(intern!(py, "exec").as_any(), false)?;
        self.call_with(3);
        self.memo_get(h)?;
        self.call_with(2);
        self.w.op(POP);
        self.save_named_global(b.getitem.bind(py), "_operator", "getitem")?;
        self.memo_get(h)?;
        self.save_text(HELPER_NAME)?;
        self.call_with(2);
        Ok(())
    }

    /// The namespace every factory of the stream runs in (a dict, memoized once per stream;
    /// `KEEP_NAME` is put in it before a factory that needs it). One for
    /// all: a factory defines only its own wrappers and function, the receiver takes the code
    /// it needs from `NS[RESULT_NAME]` right after each `exec`, and the functions are built
    /// with their own globals. (A namespace per function cost a memo entry each, and past 256
    /// entries every later reference in the stream takes 5 bytes instead of 2.)
    fn save_scratch_ns(&mut self) -> PyResult<()> {
        let b = builtins(self.py)?;
        self.once_per_stream(&b.ns_key, |d| {
            d.w.empty_dict();
            Ok(())
        })
    }

    /// `''.join([...])` of the `n` items `item(self, i)` writes, `''.join` being memoized once
    /// per stream.
    fn save_joined(&mut self, n: usize, mut item: impl FnMut(&mut Self, usize) -> PyResult<()>) -> PyResult<()> {
        let py = self.py;
        let b = builtins(py)?;
        self.once_per_stream(&b.join_key, |d| {
            d.save_named_global(d.st.builtins_getattr.bind(py), "builtins", "getattr")?;
            d.save(intern!(py, "").as_any(), false)?;
            d.save(intern!(py, "join").as_any(), false)?;
            d.call_with(2);
            Ok(())
        })?;
        self.w.empty_list();
        self.w.op(MARK);
        for i in 0..n {
            item(self, i)?;
        }
        self.w.op(pickle_wire::opcodes::APPENDS);
        self.call_with(1);
        Ok(())
    }

    /// `getitem(ORIG, slice(start, end))`, ORIG being memoized at `orig` (`orig_chars`
    /// characters long); ORIG itself when the slice is all of it.
    fn save_original_slice(
        &mut self,
        orig: usize,
        start: usize,
        end: Option<usize>,
        orig_chars: usize,
    ) -> PyResult<()> {
        let py = self.py;
        if start == 0 && end.is_none_or(|e| e >= orig_chars) {
            return self.memo_get(orig);
        }
        let b = builtins(py)?;
        self.save_named_global(b.getitem.bind(py), "_operator", "getitem")?;
        self.memo_get(orig)?;
        self.save_named_global(b.slice.bind(py), "builtins", "slice")?;
        self.w.int(start as i64);
        match end {
            Some(e) => self.w.int(e as i64),
            None => self.w.none(),
        }
        self.call_with(2);
        self.call_with(2);
        Ok(())
    }

    /// The factory text after its head and padding (which the receiver's compile helper adds):
    /// `''.join([...])` of its own lines where they differ from the original (memoized at
    /// `orig`) and slices of the original where they agree (see `function_source::share`); one
    /// literal when nothing is shared.
    fn save_factory_body(&mut self, built: &Built, orig: usize) -> PyResult<()> {
        let body = built.source.as_str();
        if let [SrcPiece::Text(r)] = built.pieces.as_slice() {
            return self.save_text(&body[r.clone()]);
        }
        if let [SrcPiece::Original(a, z)] = built.pieces.as_slice() {
            return self.save_original_slice(orig, *a, Some(*z), built.original_chars);
        }
        self.save_joined(built.pieces.len(), |d, i| match &built.pieces[i] {
            SrcPiece::Text(r) => d.save_text(&body[r.clone()]),
            SrcPiece::Original(a, z) => d.save_original_slice(orig, *a, Some(*z), built.original_chars),
        })
    }

    /// Remember the function's lines for [`CloudDumper::write_source_lines`].
    fn note_lines(&mut self, built: &Arc<Built>, orig: usize) -> PyResult<()> {
        let py = self.py;
        let Some(source) = self.layer.source.as_mut() else { return Ok(()) };
        let filename = built.filename.bind(py);
        // Usually the very same string object (one per file in the parse cache's builds).
        for (f, list) in source.pending_lines.iter_mut() {
            if f.is(filename) || f.bind(py).to_cow()? == filename.to_cow()? {
                list.push((built.clone(), orig));
                return Ok(());
            }
        }
        source.pending_lines.push((filename.clone().unbind(), vec![(built.clone(), orig)]));
        Ok(())
    }

    /// After the object: put the lines of the functions the stream sent into the receiver's
    /// `linecache` under their original file names, so tracebacks there show them (the file
    /// usually does not exist on the receiver). Once per file:
    /// `lst = linecache.cache.setdefault(fn, (0, None, [], fn))[2]` (an mtime of None, which
    /// `linecache.checkcache` leaves alone), room made with
    /// `lst.extend(itertools.repeat('\n', last - len(lst)))` (a negative count repeats nothing),
    /// then `lst[a-1:b] = TEXT.splitlines(True)` for each run of lines, where TEXT has the
    /// functions' lines and a bare newline for each line between two of them (a gap of more
    /// than [`MAX_GAP`] lines starts a new run: no other line of the file is sent).
    /// Written after the object (the stack then holds it, and each call here is popped), so
    /// one dump of many functions from one file fetches the list once and sends one text.
    pub(crate) fn write_source_lines(&mut self) -> PyResult<()> {
        let py = self.py;
        let Some(pending) = self.layer.source.as_mut().map(|s| std::mem::take(&mut s.pending_lines)) else {
            return Ok(());
        };
        let b = builtins(py)?;
        for (_, functions) in pending {
            // the runs of lines to give the receiver's linecache (function_source::stream);
            // a piece's tag is the memo index of the original lines the stream sent, and their
            // length in characters
            let spans = functions
                .iter()
                .map(|(f, orig)| Span {
                    first_line: f.first_line,
                    line_count: f.line_count,
                    text: &f.original_text,
                    tag: (*orig, f.original_chars),
                })
                .collect();
            let runs = merge_runs(spans, MAX_GAP);
            let end = runs.last().map_or(0, |r| r.last);
            let fname = functions[0].0.filename.bind(py).as_any().clone();
            // lst = getitem(getattr(linecache.cache, 'setdefault')(fn, (0, None, [], fn)), 2)
            self.save_named_global(b.getitem.bind(py), "_operator", "getitem")?;
            self.save_named_global(self.st.builtins_getattr.bind(py), "builtins", "getattr")?;
            self.save_named_global(b.linecache_cache.bind(py), "linecache", "cache")?;
            self.save(intern!(py, "setdefault").as_any(), false)?;
            self.call_with(2);
            self.save(&fname, false)?;
            self.w.op(MARK);
            self.w.int(0);
            self.w.none();
            self.w.empty_list();
            self.save(&fname, false)?;
            self.w.op(TUPLE);
            self.call_with(2);
            self.w.int(2);
            self.call_with(2);
            let lst = self.memo_reserve()?;
            self.w.op(POP);
            // getattr(lst, 'extend')(repeat('\n', sub(last, len(lst))))
            self.save_named_global(self.st.builtins_getattr.bind(py), "builtins", "getattr")?;
            self.memo_get(lst)?;
            self.save(intern!(py, "extend").as_any(), false)?;
            self.call_with(2);
            self.save_named_global(b.repeat.bind(py), "itertools", "repeat")?;
            self.save(intern!(py, "\n").as_any(), false)?;
            self.save_named_global(b.sub.bind(py), "_operator", "sub")?;
            self.w.int(i64::from(end));
            self.save_named_global(b.len.bind(py), "builtins", "len")?;
            self.memo_get(lst)?;
            self.call_with(1);
            self.call_with(2);
            self.call_with(2);
            self.call_with(1);
            self.w.op(POP);
            for run in runs {
                let (first, pieces, last) = (run.first, run.pieces, i64::from(run.last));
                // setitem(lst, slice(first - 1, last), getattr(TEXT, 'splitlines')(True)), TEXT
                // being ''.join of the run's pieces
                self.save_named_global(b.setitem.bind(py), "_operator", "setitem")?;
                self.memo_get(lst)?;
                self.save_named_global(b.slice.bind(py), "builtins", "slice")?;
                self.w.int(i64::from(first) - 1);
                self.w.int(last);
                self.call_with(2);
                self.save_named_global(self.st.builtins_getattr.bind(py), "builtins", "getattr")?;
                self.save_run_text(&pieces)?;
                self.save(intern!(py, "splitlines").as_any(), false)?;
                self.call_with(2);
                self.w.bool(true);
                self.call_with(1);
                self.call_with(3);
                self.w.op(POP);
            }
        }
        Ok(())
    }

    /// The text of a run of lines for [`CloudDumper::write_source_lines`]: the original lines the
    /// stream sent with each function, by memo reference, and blank lines between them.
    fn save_run_text(&mut self, pieces: &[RunPiece<(usize, usize)>]) -> PyResult<()> {
        if let [RunPiece::Original { tag: (memo, chars), from }] = pieces {
            return self.save_original_slice(*memo, *from, None, *chars);
        }
        self.save_joined(pieces.len(), |d, i| match &pieces[i] {
            RunPiece::Blank(n) => d.save_text(&"\n".repeat(*n as usize)),
            RunPiece::Original { tag: (memo, chars), from } => d.save_original_slice(*memo, *from, None, *chars),
        })
    }

    /// The closure of `_make_function` in by_source mode: `tuple(map({name: cell}.__getitem__,
    /// code.co_freevars))`, evaluated on the receiver against the code it compiled.
    pub(crate) fn save_closure_by_name(
        &mut self,
        code: &Bound<'py, PyAny>,
        cells: &[Bound<'py, PyAny>],
    ) -> PyResult<()> {
        let py = self.py;
        let b = builtins(py)?;
        let freevars = code.getattr(intern!(py, "co_freevars"))?.cast_into::<PyTuple>()?;
        self.save_named_global(b.tuple.bind(py), "builtins", "tuple")?;
        self.save_named_global(b.map.bind(py), "builtins", "map")?;
        self.save_named_global(self.st.builtins_getattr.bind(py), "builtins", "getattr")?;
        self.w.empty_dict();
        self.w.op(MARK);
        for (name, cell) in freevars.iter().zip(cells) {
            self.save(&name, false)?;
            self.save_empty_cell_once(cell)?;
        }
        self.w.op(pickle_wire::opcodes::SETITEMS);
        self.save(intern!(py, "__getitem__").as_any(), false)?;
        self.call_with(2);
        self.save_named_global(self.st.builtins_getattr.bind(py), "builtins", "getattr")?;
        self.save(code, false)?; // memoized: the compiled code
        self.save(intern!(py, "co_freevars").as_any(), false)?;
        self.call_with(2);
        self.call_with(2);
        self.call_with(1);
        Ok(())
    }

    /// Close a call's argument tuple of `n` items (1 to 3) and apply REDUCE.
    fn call_with(&mut self, n: usize) {
        self.w.op([pickle_wire::opcodes::TUPLE1, TUPLE2, TUPLE3][n - 1]);
        self.w.op(REDUCE);
    }

    /// Close a call's argument tuple opened with MARK and apply REDUCE.
    fn call_marked(&mut self) {
        self.w.op(TUPLE);
        self.w.op(REDUCE);
    }

    /// A reference to a module attribute we name ourselves: the dict `linecache.cache` (which
    /// `save` would write by value), and the standard-library functions the by_source stream
    /// calls (through `save` each would cost a `__reduce_ex__` call and an import check per
    /// dump).
    pub(crate) fn save_named_global(&mut self, obj: &Bound<'py, PyAny>, module: &str, name: &str) -> PyResult<()> {
        if let Some(idx) = self.memo.get(obj) {
            return self.memo_get(idx);
        }
        if self.proto() >= 4 {
            // Plain strings, not memoized: a module name memoized per reference, as a fresh
            // `str` would be, costs a memo entry and saves nothing.
            self.save_text(module)?;
            self.save_text(name)?;
            self.w.op(pickle_wire::opcodes::STACK_GLOBAL);
        } else {
            self.w.global_text(module.as_bytes(), name.as_bytes());
        }
        self.memo_put(obj)
    }

    #[cold]
    fn warn_fallback(&mut self, func: &Bound<'py, PyAny>, why: &str) -> PyResult<()> {
        let py = self.py;
        let first = self.layer.source.as_mut().is_some_and(|s| s.warned.insert(func.as_ptr() as usize));
        if !first {
            return Ok(());
        }
        let category = crate::statics::statics(py)?.source_fallback_warning.bind(py).clone();
        let msg = format!("by_source='auto': {} travels as bytecode: {why}", describe(func));
        // stacklevel 1: `dumps` is a native function, so level 1 is its caller's line.
        PyErr::warn(py, &category, &std::ffi::CString::new(msg).unwrap_or_default(), 1)
    }
}

struct Builtins {
    exec: Py<PyAny>,
    compile: Py<PyAny>,
    tuple: Py<PyAny>,
    map: Py<PyAny>,
    slice: Py<PyAny>,
    getitem: Py<PyAny>,
    setitem: Py<PyAny>,
    sub: Py<PyAny>,
    len: Py<PyAny>,
    repeat: Py<PyAny>,
    linecache_cache: Py<PyAny>,
    vars: Py<PyAny>,
    /// `builtins.__import__`, called with "linecache" for its module (the stream names it).
    linecache: Py<PyAny>,
    lru_cache: Py<PyAny>,
    /// A private object the stream's cached `compile` is memoized under.
    compile_key: Py<PyAny>,
    /// Likewise for `''.join`.
    join_key: Py<PyAny>,
    /// Likewise for the factories' namespace.
    ns_key: Py<PyAny>,
    /// [`HELPER_SOURCE`] with its constants filled in.
    helper_source: String,
    /// The factory's result name, one object so the stream memoizes it once.
    result_name: Py<PyString>,
    /// `function_source::KEEP_NAME`, the identity decorator of decorated functions' factories.
    keep_name: Py<PyString>,
    /// `copy.copy`, which returns a function unchanged: what KEEP_NAME is bound to.
    copy: Py<PyAny>,
}

static BUILTINS: PyOnceLock<Builtins> = PyOnceLock::new();

fn builtins(py: Python<'_>) -> PyResult<&Builtins> {
    BUILTINS.get_or_try_init(py, || {
        let b = py.import("builtins")?;
        let op = py.import("operator")?;
        Ok(Builtins {
            exec: b.getattr("exec")?.unbind(),
            compile: b.getattr("compile")?.unbind(),
            tuple: b.getattr("tuple")?.unbind(),
            map: b.getattr("map")?.unbind(),
            slice: b.getattr("slice")?.unbind(),
            getitem: op.getattr("getitem")?.unbind(),
            setitem: op.getattr("setitem")?.unbind(),
            sub: op.getattr("sub")?.unbind(),
            len: b.getattr("len")?.unbind(),
            repeat: py.import("itertools")?.getattr("repeat")?.unbind(),
            result_name: PyString::new(py, RESULT_NAME).unbind(),
            keep_name: PyString::new(py, function_source::KEEP_NAME).unbind(),
            copy: py.import("copy")?.getattr("copy")?.unbind(),
            linecache_cache: py.import("linecache")?.getattr("cache")?.unbind(),
            vars: b.getattr("vars")?.unbind(),
            linecache: b.getattr("__import__")?.unbind(),
            lru_cache: py.import("functools")?.getattr("lru_cache")?.unbind(),
            compile_key: b.getattr("object")?.call0()?.unbind(),
            join_key: b.getattr("object")?.call0()?.unbind(),
            ns_key: b.getattr("object")?.call0()?.unbind(),
            helper_source: HELPER_SOURCE
                .replace("PADDING_AS_STRING", &PADDING_AS_STRING.to_string())
                .replace("COMPILED_TEXTS", &COMPILED_TEXTS.to_string()),
        })
    })
}

/// `'f' (module.py, line 12)` for messages.
fn describe(func: &Bound<'_, PyAny>) -> String {
    let py = func.py();
    let name = func.getattr(intern!(py, "__qualname__")).map(|q| q.to_string()).unwrap_or_else(|_| "?".into());
    match func.getattr(intern!(py, "__code__")) {
        Ok(code) => {
            let file = code.getattr(intern!(py, "co_filename")).map(|f| f.to_string()).unwrap_or_default();
            let line = code.getattr(intern!(py, "co_firstlineno")).map(|f| f.to_string()).unwrap_or_default();
            format!("function '{name}' ({file}, line {line})")
        }
        Err(_) => format!("'{name}'"),
    }
}

#[cold]
fn no_source_error(py: Python<'_>, func: &Bound<'_, PyAny>, _code: &Bound<'_, PyAny>, why: &str) -> PyErr {
    let name = func.getattr(intern!(py, "__name__")).map(|q| q.to_string()).unwrap_or_else(|_| "f".into());
    pickling_error(
        py,
        format!(
            "cannot pickle {} by source: {why}. Attach its source text as `{name}.__source__ = \"\"\"...\"\"\"` \
             (the text of the file or string it was compiled from), or use by_source='auto' to send it as bytecode.",
            describe(func)
        ),
    )
}

/// Build (or fetch from the cache) what the receiver needs for `code`. Err is the reason there
/// is no usable source, for the message.
fn build(py: Python<'_>, code: &Bound<'_, PyAny>, func: &Bound<'_, PyAny>) -> Result<Arc<Built>, String> {
    // `__source__` is a function attribute: look in `__dict__` (a missing attribute would cost
    // an AttributeError per function).
    let own_source = crate::cloud::function::function_dict(func)
        .and_then(|d| d.get_item(intern!(py, "__source__")).ok().flatten())
        .filter(|s| !s.is_none());
    if own_source.is_none() {
        if let Some(hit) = cached_built(py, code) {
            return Ok(hit);
        }
    }
    let filename: String =
        code.getattr(intern!(py, "co_filename")).and_then(|f| f.extract()).map_err(|e| e.to_string())?;
    let query = code_query(py, code).map_err(|e| e.to_string())?;
    // Every node the code object could come from (several when it carries no columns: two
    // lambdas on a line on 3.9/3.10, which have no co_positions); each is rebuilt, compiled and
    // compared with the running code, and only a match is sent. Candidates that all match have
    // equal code and are interchangeable; none matching is an error, never a guess.
    type Found = (function_source::Factory, Option<String>, usize, Vec<function_source::NewerSyntax>);
    let attempt = |file: &Arc<SourceFile>| -> Result<Found, String> {
        let candidates = file
            .locate_candidates(&query)
            .map_err(|e| format!("its source in {filename} does not match the code: {e}"))?;
        let many = candidates.len() > 1;
        let mut last_err = String::new();
        for located in &candidates {
            let factory = match located.factory(&query) {
                Ok(f) => f,
                Err(e) => {
                    last_err = format!("cannot rebuild it from its source: {e}");
                    continue;
                }
            };
            // The very text the receiver will compile.
            let layout = Layout::of(file, &factory.source);
            let rendered = layout.render();
            let (prelude, padding) = (layout.prelude, layout.padding);
            match verify_factory(py, code, &rendered, &filename) {
                Ok(()) => return Ok((factory, prelude, padding, located.syntax_since((3, 7)))),
                Err(e) => last_err = e,
            }
        }
        if many {
            return Err(format!(
                "{} candidates for it start on line {} of {filename} and none compiles to its code ({last_err})",
                candidates.len(),
                query.first_line
            ));
        }
        Err(last_err)
    };
    let primary = match own_source {
        Some(src) => {
            let text: String = src.extract().map_err(|_| "its __source__ is not a str".to_owned())?;
            let mut c = caches(py).lock().map_err(|_| "source cache poisoned".to_owned())?;
            c.files.get_or_parse(&filename, &text).map_err(|e| format!("its __source__ does not parse: {e}"))
        }
        None => file_text(py, &filename, func),
    };
    let mut outcome = primary.and_then(|file| attempt(&file).map(|f| (f, file)));
    if outcome.is_err() {
        // A function this process received by source: its file is not here, but the factory
        // texts the stream registered are (see `register_factory_text`).
        for file in received_factory_texts(py, &filename) {
            if let Ok(found) = attempt(&file) {
                outcome = Ok((found, file));
                break;
            }
        }
    }
    let ((factory, prelude, padding, syntax), file) = outcome?;
    let first = factory.first_line.max(1);
    let lines = file.original_lines(first, factory.last_line);
    let mut text = factory.source.clone();
    if !text.ends_with('\n') {
        text.push('\n');
    }
    let needs = minimum_python(&syntax);
    if needs > (3, 8) {
        text.push_str(&format!("{REQUIRES_PREFIX}{}.{}+\n", needs.0, needs.1));
    }
    let body = text.trim_start_matches('\n');
    let original_text = lines.concat();
    let body_line = (padding + usize::from(prelude.is_some())) as u32 + 1;
    let pieces = function_source::share::shared_pieces(body, body_line, &original_text, first, MIN_SHARED)
        .into_iter()
        .map(|p| match p {
            function_source::share::Piece::Text(t) => {
                let at = t.as_ptr() as usize - body.as_ptr() as usize;
                SrcPiece::Text(at..at + t.len())
            }
            function_source::share::Piece::Original { start, end } => SrcPiece::Original(start, end),
        })
        .collect();
    let key = text_key(&filename, prelude.as_deref().unwrap_or(""), padding, body);
    let built = Arc::new(Built {
        key,
        prelude,
        padding,
        source: body.to_owned(),
        filename: file_name_object(py, &filename),
        first_line: first,
        line_count: lines.len() as u32,
        original_chars: original_text.chars().count(),
        original_text,
        pieces,
        syntax,
    });
    if let Some(weak) = crate::cloud::code::weak_ref(code) {
        if let Ok(mut c) = caches(py).lock() {
            c.built.insert(py, code, weak, built.clone());
        }
    }
    Ok(built)
}

/// Our str object for `filename` (see `SourceCaches::names`).
fn file_name_object(py: Python<'_>, filename: &str) -> Py<PyString> {
    let Ok(mut c) = caches(py).lock() else { return PyString::new(py, filename).unbind() };
    if c.names.len() > 4096 {
        c.names.clear();
    }
    c.names.entry(filename.to_owned()).or_insert_with(|| PyString::new(py, filename).unbind()).clone_ref(py)
}

fn cached_built(py: Python<'_>, code: &Bound<'_, PyAny>) -> Option<Arc<Built>> {
    caches(py).lock().ok()?.built.get(code).cloned()
}

/// Shared runs of the factory text shorter than this stay literal text: a slice of the original
/// costs about 14 stream bytes.
const MIN_SHARED: usize = 24;

/// The attribute of the receiver's `linecache` module that holds its cached `compile` (for
/// [`HELPER_SOURCE`]: the factory texts have their own cache).
const COMPILE_CACHE_NAME: &str = "_cloudpickle_rs_compile";
const COMPILE_CACHE_SIZE: i64 = 16;

/// The receiver's compile of factory texts, run once per stream (its code compiled once per
/// process through `functools.lru_cache`): a function that keeps the compiled code of each text
/// in a dict on the receiver's `linecache` module, keyed by a 62-bit hash the sender computed
/// of (file name, head, padding, body) and checked against them on a hit (arguments `k, f,
/// h, p, b`; short names and one-space indents because every stream carries this text). Padding is a count,
/// not text: hashing and building thousands of newlines per function per load cost more than
/// the rest of a cached load. Its defaults bind everything it uses: the namespace the
/// factories run in cannot shadow a name of it. Python 3.8+ and PyPy syntax; bounded at
/// [`COMPILED_TEXTS`] texts. The entries are also what a receiver sends on by source from
/// (`received_factory_texts`).
const HELPER_SOURCE: &str = "\
def __cloudpickle_rs_compile__(k,f,h,p,b,c=compile,n=len,\
t=vars(__import__('linecache')).setdefault('_cloudpickle_rs_texts',{})):
 e=t.get(k)
 if e is None or e[0]!=b or e[1]!=p or e[2]!=h or e[3]!=f:
  e=(b,p,h,f,c(h+(\"'''\"+'\\n'*(p-1)+\"'''\\n\" if p>=PADDING_AS_STRING else '\\n'*p)+b,f,'exec'))
  if n(t)>=COMPILED_TEXTS:t.clear()
  t[k]=e
 return e[4]
";
/// The helper's name in the namespace its source runs in.
const HELPER_NAME: &str = "__cloudpickle_rs_compile__";
/// Factory texts a receiver keeps compiled (the text and its code, a few kB each).
const COMPILED_TEXTS: usize = 4096;
/// The attribute of the receiver's `linecache` module that holds those texts.
const TEXTS_ATTRIBUTE: &str = "_cloudpickle_rs_texts";

/// The factory texts streams left in this process (the receiver's compile helper keeps them,
/// see [`HELPER_SOURCE`]) for `filename`, parsed.
fn received_factory_texts(py: Python<'_>, filename: &str) -> Vec<Arc<SourceFile>> {
    let Ok(texts) = py.import("linecache").and_then(|l| l.getattr(TEXTS_ATTRIBUTE)) else { return Vec::new() };
    let Ok(texts) = texts.cast_into::<PyDict>() else { return Vec::new() };
    let mut out = Vec::new();
    for entry in texts.values() {
        let Ok((body, pad, head, file)) = entry
            .get_item(0)
            .and_then(|b| Ok((b, entry.get_item(1)?, entry.get_item(2)?, entry.get_item(3)?)))
            .and_then(|(b, p, h, f)| {
                Ok((b.extract::<String>()?, p.extract::<usize>()?, h.extract::<String>()?, f.extract::<String>()?))
            })
        else {
            continue;
        };
        if file != filename {
            continue;
        }
        let text = format!("{head}{}{body}", padding_text(pad));
        if let Ok(mut c) = caches(py).lock() {
            if let Ok(parsed) = c.files.get_or_parse(filename, &text) {
                out.push(parsed);
            }
        }
    }
    out
}

/// The text of `filename` as `linecache` has it (files, IPython cells, anything registered),
/// parsed once per content.
fn file_text(py: Python<'_>, filename: &str, func: &Bound<'_, PyAny>) -> Result<Arc<SourceFile>, String> {
    let linecache = py.import("linecache").map_err(|e| e.to_string())?;
    let globals = func.getattr(intern!(py, "__globals__")).ok();
    let lines = linecache
        .call_method1(intern!(py, "getlines"), (filename, globals))
        .map_err(|e| format!("linecache failed for {filename}: {e}"))?;
    let n = lines.len().unwrap_or(0);
    if n == 0 {
        return Err(format!("no source text is available for {filename}"));
    }
    let mut c = caches(py).lock().map_err(|_| "source cache poisoned".to_owned())?;
    if let Some((seen, file)) = c.by_lines.get(filename) {
        if seen.bind(py).is(&lines) {
            return Ok(file.clone());
        }
    }
    let mut text = String::new();
    for line in lines.try_iter().map_err(|e| e.to_string())? {
        let line = line.map_err(|e| e.to_string())?;
        let s: String = line.extract::<String>().map_err(|e| e.to_string())?;
        text.push_str(&s);
    }
    let file = c.files.get_or_parse(filename, &text).map_err(|e| format!("{filename} does not parse: {e}"))?;
    c.by_lines.insert(filename.to_owned(), (lines.unbind(), file.clone()));
    Ok(file)
}

/// Compile the factory here and check that it gives back the same code (bytecode, names,
/// constants, nested code): a file edited after it was imported would otherwise send text that
/// no longer is the function. Once per code object (the result is cached).
fn verify_factory(py: Python<'_>, code: &Bound<'_, PyAny>, source: &str, filename: &str) -> Result<(), String> {
    let b = builtins(py).map_err(|e| e.to_string())?;
    let rebuilt = (|| -> PyResult<Bound<'_, PyAny>> {
        let compiled = b.compile.bind(py).call1((source, filename, "exec"))?;
        let ns = PyDict::new(py);
        ns.set_item(b.keep_name.bind(py), b.copy.bind(py))?;
        b.exec.bind(py).call1((compiled, &ns))?;
        ns.get_item(RESULT_NAME)?
            .ok_or_else(|| PyValueError::new_err("factory left no result"))?
            .getattr(intern!(py, "__code__"))
    })()
    .map_err(|e| format!("its rebuilt source does not compile here: {e}"))?;
    // Equal code objects (bytecode, constants, names, line table) are the common case where
    // the factory keeps the original lines (CPython 3.11: every function of the fixtures); the
    // instruction-by-instruction comparison (`dis`, ~0.3 ms a function) is for the rest.
    if code.eq(&rebuilt).unwrap_or(false) {
        return Ok(());
    }
    let same = code_check(py)
        .ok_or_else(|| {
            PyValueError::new_err("no code comparison was registered (cloudpickle_rs._native._set_code_check)")
        })
        .and_then(|f| f.call1((code, &rebuilt)))
        .and_then(|r| r.is_truthy());
    match same {
        Ok(true) => Ok(()),
        Ok(false) => Err(format!(
            "its source in {filename} no longer matches its code (was the file edited after it was imported?)"
        )),
        Err(e) => Err(format!("cannot compare its rebuilt code: {e}")),
    }
}

/// `same_code(original, rebuilt) -> bool`, the instruction-by-instruction comparison, handed
/// over by the Python package when it is imported (`_source_check.same_code`, loaded lazily):
/// the extension does not import a module of the package by name.
static CODE_CHECK: Mutex<Option<Py<PyAny>>> = Mutex::new(None);

/// Register the code comparison (see [`CODE_CHECK`]); a later call replaces it.
pub(crate) fn set_code_check(check: Py<PyAny>) {
    if let Ok(mut slot) = CODE_CHECK.lock() {
        *slot = Some(check);
    }
}

fn code_check(py: Python<'_>) -> Option<Bound<'_, PyAny>> {
    CODE_CHECK.lock().ok()?.as_ref().map(|f| f.bind(py).clone())
}

/// What the code object says about where it came from (see `function_source::CodeQuery`).
fn code_query(py: Python<'_>, code: &Bound<'_, PyAny>) -> PyResult<CodeQuery> {
    let argcount: usize = code.getattr(intern!(py, "co_argcount"))?.extract()?;
    let kwonly: usize = code.getattr(intern!(py, "co_kwonlyargcount"))?.extract()?;
    let flags: u32 = code.getattr(intern!(py, "co_flags"))?.extract()?;
    let n = argcount + kwonly + usize::from(flags & 0x04 != 0) + usize::from(flags & 0x08 != 0);
    let varnames: Vec<String> = code.getattr(intern!(py, "co_varnames"))?.extract()?;
    let mut positions = Vec::new();
    if let Ok(pos) = code.call_method0(intern!(py, "co_positions")) {
        for p in pos.try_iter()? {
            let (line, end_line, column, end_column): (Option<u32>, Option<u32>, Option<u32>, Option<u32>) =
                p?.extract()?;
            positions.push(CodePosition { line, end_line, column, end_column });
        }
    } else {
        // CPython 3.9 and 3.10 have no co_positions: the line table alone (through
        // `dis.findlinestarts`, which reads co_lnotab on 3.9 and co_lines() on 3.10) still
        // rules out candidates whose lines do not hold the code.
        let starts = py.import("dis")?.call_method1(intern!(py, "findlinestarts"), (code,))?;
        for item in starts.try_iter()? {
            let (_offset, line): (usize, Option<u32>) = item?.extract()?;
            if let Some(line) = line {
                positions.push(CodePosition { line: Some(line), end_line: Some(line), column: None, end_column: None });
            }
        }
    }
    let code_type = code.get_type();
    let mut nested = Vec::new();
    for c in code.getattr(intern!(py, "co_consts"))?.try_iter()? {
        let c = c?;
        if c.get_type().is(&code_type) {
            nested.push(c.getattr(intern!(py, "co_name"))?.extract::<String>()?);
        }
    }
    Ok(CodeQuery {
        name: code.getattr(intern!(py, "co_name"))?.extract()?,
        qualname: lookup_attr(code, intern!(py, "co_qualname"))?.map(|q| q.extract()).transpose()?,
        first_line: code.getattr(intern!(py, "co_firstlineno"))?.extract()?,
        arg_names: varnames.into_iter().take(n).collect(),
        positions,
        nested_code_names: Some(nested),
        free_vars: code.getattr(intern!(py, "co_freevars"))?.extract()?,
    })
}
