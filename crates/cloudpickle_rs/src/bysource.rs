//! `by_source`: code objects travel as source text and are compiled again on the receiver with
//! standard-library calls only (DESIGN.md §2), so a pickle made on CPython 3.11 loads on another
//! interpreter that has nothing but stock cloudpickle.
//!
//! For a code object the stream is, in Python terms:
//!
//! ```text
//! ns = {}                                           # memoized, then popped
//! exec(compile(FACTORY_SOURCE, co_filename, 'exec'), ns)
//! code = getattr(operator.getitem(ns, RESULT_NAME), '__code__')   # memoized as the code
//! ```
//!
//! where the factory source (built by the `function_source` crate) keeps the function's own
//! lines at their original line numbers and columns, so the recompiled code has the original
//! positions, free variables and qualified name. The function itself is then built exactly as in
//! bytecode mode (`_make_function` + `_function_setstate`), except that its closure is assembled
//! by free-variable *name* on the receiver (`co_freevars` order is the receiver's business).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use function_source::{CodePosition, CodeQuery, ParseCache, SourceFile, RESULT_NAME};
use pickle_wire::opcodes::{MARK, POP, REDUCE, TUPLE, TUPLE2, TUPLE3};
use pyo3::exceptions::PyValueError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyList, PyString, PyTuple};

use crate::dumper::{lookup_attr, Dumper};
use crate::statics::pickling_error;

/// The `by_source` option.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BySource {
    /// Bytecode, as cloudpickle.
    Off,
    /// Source for every function pickled by value; a function without source is an error.
    On,
    /// Source where it can be found, bytecode (with a warning naming the function) elsewhere.
    Auto,
}

impl BySource {
    pub(crate) fn parse(value: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        let Some(v) = value.filter(|v| !v.is_none()) else { return Ok(BySource::Off) };
        if let Ok(s) = v.cast::<PyString>() {
            return match &*s.to_cow()? {
                "auto" => Ok(BySource::Auto),
                other => Err(PyValueError::new_err(format!("by_source must be True, False or 'auto', not {other:?}"))),
            };
        }
        Ok(if v.is_truthy()? { BySource::On } else { BySource::Off })
    }
}

/// What the receiver needs to rebuild one code object.
struct Built {
    /// The factory source without its leading newlines (see `padding`).
    source: Py<PyString>,
    /// How many newlines the factory source starts with.
    padding: usize,
    /// The receiver's `linecache` key for the factory text (see `received_factory_texts`).
    factory_key: Py<PyString>,
    filename: Py<PyString>,
    /// The function's lines in the original file: `first_line` and `line_count` of them,
    /// for the receiver's `linecache`.
    first_line: u32,
    line_count: usize,
    lines: LineSource,
}

/// Where the receiver takes the function's original lines from.
enum LineSource {
    /// The factory text, which has them at their own line numbers, except these (line number,
    /// original text).
    Factory { patches: Vec<(u32, Py<PyString>)> },
    /// The original lines themselves (the factory has the function elsewhere).
    Original(Py<PyList>),
}

/// Per-process caches: parsed files (by name and content) and the factory built for each code
/// object (held weakly, checked on use).
struct SourceCaches {
    files: ParseCache,
    /// filename -> (the `linecache` lines list last seen, the parsed file): when linecache hands
    /// back the same list object, the file has not changed and is not joined or hashed again.
    by_lines: HashMap<String, (Py<PyAny>, Arc<SourceFile>)>,
    built: HashMap<usize, (Py<PyAny>, Arc<Built>)>,
}

static CACHES: PyOnceLock<Mutex<SourceCaches>> = PyOnceLock::new();
const BUILT_LIMIT: usize = 4096;

fn caches(py: Python<'_>) -> &'static Mutex<SourceCaches> {
    CACHES.get_or_init(py, || {
        Mutex::new(SourceCaches { files: ParseCache::new(256), by_lines: HashMap::new(), built: HashMap::new() })
    })
}

/// Per-dump state of the source path.
#[derive(Default)]
pub(crate) struct SourceDump {
    /// (filename, first line) already registered with the receiver's linecache in this stream.
    registered: HashSet<(String, u32)>,
    /// The memo index of the receiver's `linecache` list of each file, once fetched.
    line_lists: HashMap<String, usize>,
    /// Functions already warned about (auto mode), by address.
    warned: HashSet<usize>,
}

impl<'py> Dumper<'py> {
    pub(crate) fn by_source(&self) -> BySource {
        self.cloud.as_ref().map_or(BySource::Off, |c| c.by_source)
    }

    /// Write the code of `func` by source (memoized as the code object). Returns false when
    /// there is no source and the mode allows bytecode (auto), after warning once.
    pub(crate) fn save_code_by_source(&mut self, code: &Bound<'py, PyAny>, func: &Bound<'py, PyAny>) -> PyResult<bool> {
        let py = self.py;
        if let Some(idx) = self.memo.get(code) {
            self.w.memo_get(idx).map_err(|e| pickling_error(py, e.to_string()))?;
            return Ok(true);
        }
        let built = match build(py, code, func) {
            Ok(b) => b,
            Err(why) => {
                if self.by_source() == BySource::Auto {
                    self.warn_fallback(func, &why)?;
                    return Ok(false);
                }
                return Err(no_source_error(py, func, code, &why));
            }
        };
        let factory_lines = self.write_compiled_code(code, &built)?;
        self.register_lines(&built, factory_lines)?;
        Ok(true)
    }

    /// The factory text, its `linecache` entry, and the code compiled from it, memoized as the
    /// code object. Returns the memo index of the factory text's lines (`SRC.splitlines(True)`),
    /// which [`Dumper::register_lines`] takes the function's lines from.
    fn write_compiled_code(&mut self, code: &Bound<'py, PyAny>, built: &Built) -> PyResult<usize> {
        let py = self.py;
        let st = self.st;
        let b = builtins(py)?;
        // SRC (the padded factory text) and LINES = SRC.splitlines(True) are values of the
        // receiver only: memoized under reserved indices rather than keyed by throwaway Python
        // objects of ours (a list and a dict per function made the collector run every few
        // hundred functions).
        self.save(st.builtins_getattr.bind(py), false)?;
        self.save_padded_source(built)?;
        let src = self.memo_reserve()?;
        self.save(intern!(py, "splitlines").as_any(), false)?;
        self.w.op(TUPLE2);
        self.w.op(REDUCE);
        self.w.bool(true);
        self.w.op(pickle_wire::opcodes::TUPLE1);
        self.w.op(REDUCE);
        let lines = self.memo_reserve()?;
        self.w.op(POP);
        // linecache.cache[KEY] = (0, None, LINES, KEY): the receiver can send the function on
        // by source in turn (a Dask scheduler, a worker returning what it got).
        self.save(b.setitem.bind(py), false)?;
        self.w.op(MARK);
        self.save_named_global(b.linecache_cache.bind(py), "linecache", "cache")?;
        self.save(built.factory_key.bind(py).as_any(), false)?;
        self.w.op(MARK);
        self.w.int(0);
        self.w.none();
        self.memo_get(lines)?;
        self.save(built.factory_key.bind(py).as_any(), false)?;
        self.w.op(TUPLE);
        self.w.op(TUPLE);
        self.w.op(REDUCE);
        self.w.op(POP);
        // ns = {}
        self.w.empty_dict();
        let ns = self.memo_reserve()?;
        self.w.op(POP);
        // exec(compile(SRC, filename, 'exec'), ns)
        self.save(b.exec.bind(py), false)?;
        self.save(b.compile.bind(py), false)?;
        self.w.op(MARK);
        self.memo_get(src)?;
        self.save(built.filename.bind(py).as_any(), false)?;
        self.save(intern!(py, "exec").as_any(), false)?;
        self.w.op(TUPLE);
        self.w.op(REDUCE);
        self.memo_get(ns)?;
        self.w.op(TUPLE2);
        self.w.op(REDUCE);
        self.w.op(POP);
        // getattr(getitem(ns, RESULT_NAME), '__code__')
        self.save(st.builtins_getattr.bind(py), false)?;
        self.save(b.getitem.bind(py), false)?;
        self.memo_get(ns)?;
        self.save(b.result_name.bind(py).as_any(), false)?;
        self.w.op(TUPLE2);
        self.w.op(REDUCE);
        self.save(intern!(py, "__code__").as_any(), false)?;
        self.w.op(TUPLE2);
        self.w.op(REDUCE);
        self.memo_put_pub(code)?;
        Ok(lines)
    }

    /// Memoize the value on top of the receiver's stack under a new index, whatever the
    /// pickler's `fast` setting: the stream refers to it again.
    fn memo_reserve(&mut self) -> PyResult<usize> {
        let idx = self.memo.reserve();
        self.w.memo_put(idx).map_err(|e| pickling_error(self.py, e.to_string()))?;
        Ok(idx)
    }

    /// The factory source keeps the function at its original line by padding with newlines;
    /// a function deep in a file would cost one stream byte per line above it, so the padding
    /// is rebuilt on the receiver: `operator.add(operator.mul('\n', n), rest)`.
    fn save_padded_source(&mut self, built: &Built) -> PyResult<()> {
        let py = self.py;
        if built.padding == 0 {
            return self.save(built.source.bind(py).as_any(), false);
        }
        let b = builtins(py)?;
        self.save(b.add.bind(py), false)?;
        self.save(b.mul.bind(py), false)?;
        self.save(intern!(py, "\n").as_any(), false)?;
        self.w.int(built.padding as i64);
        self.w.op(TUPLE2);
        self.w.op(REDUCE);
        self.save(built.source.bind(py).as_any(), false)?;
        self.w.op(TUPLE2);
        self.w.op(REDUCE);
        Ok(())
    }

    /// Put the function's lines into the receiver's `linecache` under its original file name,
    /// so tracebacks there show them (the file usually does not exist on the receiver).
    /// Once per file and stream: `lst = linecache.cache.setdefault(fn, (0, None, [], fn))[2]`
    /// (an mtime of None, which `linecache.checkcache` leaves alone); per function: room made
    /// with `lst.extend(itertools.repeat('\n', last - len(lst)))` (a negative count repeats
    /// nothing), then `lst[first-1:last] = LINES[first-1:last]`, the factory text's own lines,
    /// and the few lines where the factory differs from the file (a `def` line whose defaults
    /// it neutralised, decorators) set one by one. A factory not at the original lines sends
    /// the original lines instead.
    fn register_lines(&mut self, built: &Built, factory_lines: usize) -> PyResult<()> {
        let py = self.py;
        let filename = built.filename.bind(py).to_cow()?.into_owned();
        let Some(source) = self.cloud.as_mut().and_then(|c| c.source.as_mut()) else { return Ok(()) };
        if !source.registered.insert((filename.clone(), built.first_line)) {
            return Ok(());
        }
        let known_list = source.line_lists.get(&filename).copied();
        let b = builtins(py)?;
        let fname = built.filename.bind(py).as_any().clone();
        let lst = match known_list {
            Some(idx) => idx,
            None => {
                // getitem(getattr(linecache.cache, 'setdefault')(fn, (0, None, [], fn)), 2)
                self.save(b.getitem.bind(py), false)?;
                self.save(self.st.builtins_getattr.bind(py), false)?;
                self.save_named_global(b.linecache_cache.bind(py), "linecache", "cache")?;
                self.save(intern!(py, "setdefault").as_any(), false)?;
                self.w.op(TUPLE2);
                self.w.op(REDUCE);
                self.save(&fname, false)?;
                self.w.op(MARK);
                self.w.int(0);
                self.w.none();
                self.w.empty_list();
                self.save(&fname, false)?;
                self.w.op(TUPLE);
                self.w.op(TUPLE2);
                self.w.op(REDUCE);
                self.w.int(2);
                self.w.op(TUPLE2);
                self.w.op(REDUCE);
                let idx = self.memo_reserve()?;
                self.w.op(POP);
                if let Some(s) = self.cloud.as_mut().and_then(|c| c.source.as_mut()) {
                    s.line_lists.insert(filename, idx);
                }
                idx
            }
        };
        let first = i64::from(built.first_line);
        let last = first - 1 + built.line_count as i64;
        // getattr(lst, 'extend')(repeat('\n', sub(last, len(lst))))
        self.save(self.st.builtins_getattr.bind(py), false)?;
        self.memo_get(lst)?;
        self.save(intern!(py, "extend").as_any(), false)?;
        self.w.op(TUPLE2);
        self.w.op(REDUCE);
        self.save(b.repeat.bind(py), false)?;
        self.save(intern!(py, "\n").as_any(), false)?;
        self.save(b.sub.bind(py), false)?;
        self.w.int(last);
        self.save(b.len.bind(py), false)?;
        self.memo_get(lst)?;
        self.w.op(pickle_wire::opcodes::TUPLE1);
        self.w.op(REDUCE);
        self.w.op(TUPLE2);
        self.w.op(REDUCE);
        self.w.op(TUPLE2);
        self.w.op(REDUCE);
        self.w.op(pickle_wire::opcodes::TUPLE1);
        self.w.op(REDUCE);
        self.w.op(POP);
        // setitem(lst, slice(first - 1, last), LINES[first-1:last] or the original lines)
        self.save(b.setitem.bind(py), false)?;
        self.memo_get(lst)?;
        self.save(b.slice.bind(py), false)?;
        self.w.int(first - 1);
        self.w.int(last);
        self.w.op(TUPLE2);
        self.w.op(REDUCE);
        match &built.lines {
            LineSource::Factory { patches } => {
                let span = self.memo_reserve()?;
                self.save(b.getitem.bind(py), false)?;
                self.memo_get(factory_lines)?;
                self.memo_get(span)?;
                self.w.op(TUPLE2);
                self.w.op(REDUCE);
                self.w.op(TUPLE3);
                self.w.op(REDUCE);
                self.w.op(POP);
                for (line, text) in patches {
                    self.save(b.setitem.bind(py), false)?;
                    self.memo_get(lst)?;
                    self.w.int(i64::from(*line) - 1);
                    self.save(text.bind(py).as_any(), false)?;
                    self.w.op(TUPLE3);
                    self.w.op(REDUCE);
                    self.w.op(POP);
                }
            }
            LineSource::Original(lines) => {
                self.save(lines.bind(py).as_any(), false)?;
                self.w.op(TUPLE3);
                self.w.op(REDUCE);
                self.w.op(POP);
            }
        }
        Ok(())
    }

    /// The closure of `_make_function` in by_source mode: `tuple(map({name: cell}.__getitem__,
    /// code.co_freevars))`, evaluated on the receiver against the code it compiled.
    pub(crate) fn save_closure_by_name(&mut self, code: &Bound<'py, PyAny>, cells: &[Bound<'py, PyAny>]) -> PyResult<()> {
        let py = self.py;
        let b = builtins(py)?;
        let freevars = code.getattr(intern!(py, "co_freevars"))?.cast_into::<PyTuple>()?;
        self.save(b.tuple.bind(py), false)?;
        self.save(b.map.bind(py), false)?;
        self.save(self.st.builtins_getattr.bind(py), false)?;
        self.w.empty_dict();
        self.w.op(MARK);
        for (name, cell) in freevars.iter().zip(cells) {
            self.save(&name, false)?;
            self.save_empty_cell_once(cell)?;
        }
        self.w.op(pickle_wire::opcodes::SETITEMS);
        self.save(intern!(py, "__getitem__").as_any(), false)?;
        self.w.op(TUPLE2);
        self.w.op(REDUCE);
        self.save(self.st.builtins_getattr.bind(py), false)?;
        self.save(code, false)?; // memoized: the compiled code
        self.save(intern!(py, "co_freevars").as_any(), false)?;
        self.w.op(TUPLE2);
        self.w.op(REDUCE);
        self.w.op(TUPLE2);
        self.w.op(REDUCE);
        self.w.op(pickle_wire::opcodes::TUPLE1);
        self.w.op(REDUCE);
        Ok(())
    }

    /// A reference to a module attribute that is not a class or function (here the dict
    /// `linecache.cache`), which `save` would otherwise write by value.
    pub(crate) fn save_named_global(&mut self, obj: &Bound<'py, PyAny>, module: &str, name: &str) -> PyResult<()> {
        let py = self.py;
        if let Some(idx) = self.memo.get(obj) {
            return self.w.memo_get(idx).map_err(|e| pickling_error(py, e.to_string()));
        }
        if self.proto >= 4 {
            self.save(PyString::new(py, module).as_any(), false)?;
            self.save(PyString::new(py, name).as_any(), false)?;
            self.w.op(pickle_wire::opcodes::STACK_GLOBAL);
        } else {
            self.w.global_text(module.as_bytes(), name.as_bytes());
        }
        self.memo_put_pub(obj)
    }

    #[cold]
    fn warn_fallback(&mut self, func: &Bound<'py, PyAny>, why: &str) -> PyResult<()> {
        let py = self.py;
        let first = self
            .cloud
            .as_mut()
            .and_then(|c| c.source.as_mut())
            .is_some_and(|s| s.warned.insert(func.as_ptr() as usize));
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
    mul: Py<PyAny>,
    add: Py<PyAny>,
    sub: Py<PyAny>,
    len: Py<PyAny>,
    repeat: Py<PyAny>,
    linecache_cache: Py<PyAny>,
    /// The factory's result name, one object so the stream memoizes it once.
    result_name: Py<PyString>,
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
            mul: op.getattr("mul")?.unbind(),
            add: op.getattr("add")?.unbind(),
            sub: op.getattr("sub")?.unbind(),
            len: b.getattr("len")?.unbind(),
            repeat: py.import("itertools")?.getattr("repeat")?.unbind(),
            result_name: PyString::new(py, RESULT_NAME).unbind(),
            linecache_cache: py.import("linecache")?.getattr("cache")?.unbind(),
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
    let key = code.as_ptr() as usize;
    // `__source__` is a function attribute: look in `__dict__` (a missing attribute would cost
    // an AttributeError per function).
    let own_source = func
        .getattr(intern!(py, "__dict__"))
        .ok()
        .and_then(|d| d.cast_into::<PyDict>().ok())
        .and_then(|d| d.get_item(intern!(py, "__source__")).ok().flatten())
        .filter(|s| !s.is_none());
    if own_source.is_none() {
        if let Some(hit) = cached_built(py, code, key) {
            return Ok(hit);
        }
    }
    let filename: String = code.getattr(intern!(py, "co_filename")).and_then(|f| f.extract()).map_err(|e| e.to_string())?;
    let query = code_query(py, code).map_err(|e| e.to_string())?;
    let attempt = |file: &Arc<SourceFile>| -> Result<function_source::Factory, String> {
        let located = file.locate(&query).map_err(|e| format!("its source in {filename} does not match the code: {e}"))?;
        let factory = located.factory(&query).map_err(|e| format!("cannot rebuild it from its source: {e}"))?;
        verify_factory(py, code, &factory.source, &filename)?;
        Ok(factory)
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
    let (factory, file) = outcome?;
    let text = file.text();
    let all_lines: Vec<&str> = text.split_inclusive('\n').collect();
    let first = factory.first_line.max(1);
    let mut lines: Vec<String> = Vec::new();
    for n in first..=factory.last_line {
        let line = all_lines.get(n as usize - 1).copied().unwrap_or("");
        let mut l = line.to_owned();
        if !l.ends_with('\n') {
            l.push('\n');
        }
        lines.push(l);
    }
    let line_count = lines.len();
    let factory_text: Vec<&str> = factory.source.split_inclusive('\n').collect();
    let in_place = matches!(factory.layout, function_source::FactoryLayout::InPlace)
        && factory_text.len() >= first as usize - 1 + line_count;
    let line_source = if in_place {
        let mut patches = Vec::new();
        for (i, original) in lines.iter().enumerate() {
            if factory_text[first as usize - 1 + i] != original {
                patches.push((first + i as u32, PyString::new(py, original).unbind()));
            }
        }
        if patches.len() * 2 <= line_count {
            LineSource::Factory { patches }
        } else {
            LineSource::Original(PyList::new(py, &lines).map_err(|e| e.to_string())?.unbind())
        }
    } else {
        LineSource::Original(PyList::new(py, &lines).map_err(|e| e.to_string())?.unbind())
    };
    let body = factory.source.trim_start_matches('\n');
    let built = Arc::new(Built {
        factory_key: PyString::new(py, &factory_key(&filename, &factory.source)).unbind(),
        padding: factory.source.len() - body.len(),
        source: PyString::new(py, body).unbind(),
        filename: PyString::new(py, &filename).unbind(),
        first_line: first,
        line_count,
        lines: line_source,
    });
    if let Ok(weak) = py.import("weakref").and_then(|w| w.getattr("ref")).and_then(|r| r.call1((code,))) {
        if let Ok(mut c) = caches(py).lock() {
            if c.built.len() >= BUILT_LIMIT {
                c.built.retain(|_, (w, _)| w.bind(py).call0().map(|o| !o.is_none()).unwrap_or(false));
            }
            c.built.insert(key, (weak.unbind(), built.clone()));
        }
    }
    Ok(built)
}

fn cached_built(py: Python<'_>, code: &Bound<'_, PyAny>, key: usize) -> Option<Arc<Built>> {
    let c = caches(py).lock().ok()?;
    let (weak, built) = c.built.get(&key)?;
    // SAFETY: a live weakref we own; the borrowed referent is only compared by address.
    let referent = unsafe { pyo3::ffi::PyWeakref_GetObject(weak.as_ptr()) };
    (referent == code.as_ptr()).then(|| built.clone())
}

const FACTORY_KEY_PREFIX: &str = "<cloudpickle-rs source of ";

/// Where a receiver keeps a factory text in `linecache`: by file name and text, so functions of
/// one file do not overwrite each other.
fn factory_key(filename: &str, source: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in source.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{FACTORY_KEY_PREFIX}{filename} {h:016x}>")
}

/// The factory texts a stream left in this process's `linecache` for `filename`, parsed.
fn received_factory_texts(py: Python<'_>, filename: &str) -> Vec<Arc<SourceFile>> {
    let prefix = format!("{FACTORY_KEY_PREFIX}{filename} ");
    let Ok(cache) = py.import("linecache").and_then(|l| l.getattr("cache")) else { return Vec::new() };
    let Ok(cache) = cache.cast_into::<PyDict>() else { return Vec::new() };
    let mut out = Vec::new();
    for (k, entry) in cache.iter() {
        let Ok(key) = k.extract::<String>() else { continue };
        if !key.starts_with(&prefix) {
            continue;
        }
        let Ok(lines) = entry.get_item(2).and_then(|l| l.extract::<Vec<String>>()) else { continue };
        let text: String = lines.concat();
        if let Ok(mut c) = caches(py).lock() {
            if let Ok(file) = c.files.get_or_parse(filename, &text) {
                out.push(file);
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
        b.exec.bind(py).call1((compiled, &ns))?;
        ns.get_item(RESULT_NAME)?
            .ok_or_else(|| PyValueError::new_err("factory left no result"))?
            .getattr(intern!(py, "__code__"))
    })()
    .map_err(|e| format!("its rebuilt source does not compile here: {e}"))?;
    let same = py
        .import("cloudpickle_rs._source_check")
        .and_then(|m| m.getattr("same_code"))
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
            let (line, end_line, column, end_column): (Option<u32>, Option<u32>, Option<u32>, Option<u32>) = p?.extract()?;
            positions.push(CodePosition { line, end_line, column, end_column });
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
        ..CodeQuery::default()
    })
}
