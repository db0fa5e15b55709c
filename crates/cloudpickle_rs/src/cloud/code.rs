//! Code objects: bytecode fields (`code_fields`), the names and imports a code object refers to
//! (`code_refs`), and the per-code-object caches both use.

use std::sync::Mutex;

use pickle_wire::opcodes::{POP, REDUCE};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyTuple;

use super::fresh_str;
use super::{CloudDumper, Interp};
use crate::dumper::SaveResult;

impl<'py> CloudDumper<'py> {
    // ----- code, modules, TypeVars -------------------------------------------------------------

    pub(super) fn save_code_memoized(&mut self, code: &Bound<'py, PyAny>) -> SaveResult {
        if let Some(idx) = self.memo.get(code) {
            return self.memo_get(idx);
        }
        self.save_code(code)
    }

    /// A code object as upstream writes it, `_builtin_type('CodeType')(*fields)`, with the
    /// constructor fields of this interpreter's version written straight to the stream.
    pub(super) fn save_code(&mut self, code: &Bound<'py, PyAny>) -> SaveResult {
        let py = self.py;
        if let Some(t) = self.layer.target_python.filter(|&t| t != crate::cloud::options::running_version(py)) {
            let name = code.getattr(intern!(py, "co_name")).map(|n| n.to_string()).unwrap_or_default();
            let file = code.getattr(intern!(py, "co_filename")).map(|n| n.to_string()).unwrap_or_default();
            let line = code.getattr(intern!(py, "co_firstlineno")).map(|n| n.to_string()).unwrap_or_default();
            let here = crate::cloud::options::running_version(py);
            return Err(crate::statics::pickling_error(
                py,
                format!(
                    "cannot pickle the code of '{name}' ({file}, line {line}) as bytecode for Python {}.{}: bytecode \
                     written by Python {}.{} loads only there. Use by_source=True.",
                    t.0, t.1, here.0, here.1
                ),
            ));
        }
        let it = self.layer.it;
        self.save(it.code_type.bind(py), false)?;
        self.w.op(pickle_wire::opcodes::MARK);
        for v in crate::cloud::code::code_fields(it, code)?.iter() {
            self.save(&v, false)?;
        }
        self.w.op(pickle_wire::opcodes::TUPLE);
        self.w.op(REDUCE);
        if let Some(idx) = self.memo.get(code) {
            self.w.op(POP);
            return self.memo_get(idx);
        }
        self.memo_put(code)
    }
}

/// (global names, imported modules) of a code object and the code objects nested in it: the
/// names of the globals it reads, writes or deletes in first-use order, and the modules it
/// imports (`IMPORT_NAME`). Cached per code object for the life of that code object, one entry
/// for both (a function under a `receiver=` asks for both: one lookup, not two).
pub(crate) fn code_refs<'py>(
    it: &Interp,
    code: &Bound<'py, PyAny>,
) -> PyResult<(Bound<'py, PyTuple>, Bound<'py, PyTuple>)> {
    let py = code.py();
    if let Some(hit) = code_cache_get(&NAMES_CACHE, py, code, |(n, i)| (n.bind(py).clone(), i.bind(py).clone())) {
        return Ok(hit);
    }
    let mut seen: Vec<Bound<'py, PyAny>> = Vec::new();
    collect_global_names(it, code, &mut seen)?;
    let names = PyTuple::new(py, seen)?;
    let mut seen: Vec<Bound<'py, PyAny>> = Vec::new();
    collect_names_of(it, code, &mut seen, &|op, arg| (op == it.import_name).then_some(arg))?;
    let imports = PyTuple::new(py, seen)?;
    code_cache_put(&NAMES_CACHE, py, code, (names.clone().unbind(), imports.clone().unbind()));
    Ok((names, imports))
}

/// The `co_names` entries the instructions of a code object (nested code included) name, in
/// first-use order: `index(opcode, full argument)` gives the `co_names` index an instruction
/// uses, or None for the instructions not wanted.
fn collect_names_of<'py>(
    it: &Interp,
    code: &Bound<'py, PyAny>,
    out: &mut Vec<Bound<'py, PyAny>>,
    index: &dyn Fn(u8, u32) -> Option<u32>,
) -> PyResult<()> {
    let py = code.py();
    let names = code.getattr(intern!(py, "co_names"))?.cast_into::<PyTuple>()?;
    let raw = code.getattr(intern!(py, "co_code"))?;
    let bytes: &[u8] = raw.cast::<pyo3::types::PyBytes>()?.as_bytes();
    let mut ext: u32 = 0;
    let mut i = 0;
    while i + 1 < bytes.len() {
        let (opc, arg) = (bytes[i], u32::from(bytes[i + 1]));
        i += 2;
        if opc == it.extended_arg {
            ext = (ext | arg) << 8;
            continue;
        }
        let full = if opc >= it.have_argument { ext | arg } else { 0 };
        ext = 0;
        if let Some(idx) = index(opc, full) {
            if let Ok(name) = names.get_item(idx as usize) {
                if !out.iter().any(|n| n.eq(&name).unwrap_or(false)) {
                    out.push(name);
                }
            }
        }
    }
    let code_type = code.get_type();
    for c in code.getattr(intern!(py, "co_consts"))?.cast_into::<PyTuple>()?.iter() {
        if c.get_type().is(&code_type) {
            collect_names_of(it, &c, out, index)?;
        }
    }
    Ok(())
}

fn collect_global_names<'py>(it: &Interp, code: &Bound<'py, PyAny>, out: &mut Vec<Bound<'py, PyAny>>) -> PyResult<()> {
    collect_names_of(it, code, out, &|op, arg| {
        if op == it.load_global {
            Some(if it.load_global_shifted { arg >> 1 } else { arg })
        } else if op == it.store_global || op == it.delete_global {
            Some(arg)
        } else {
            None
        }
    })
}

/// Facts derived from code objects (code objects are immutable), by address. Entries hold a weak
/// reference to their code object, so dynamic code (lambdas made in a loop) is not kept alive by
/// a cache, and an entry is used only while its code object is the one at that address; dead
/// entries are swept when a cache reaches [`CodeCache::SWEEP_AT`].
pub(crate) struct CodeCache<V> {
    entries: crate::addr::AddrMap<(Py<PyAny>, V)>,
}

impl<V> Default for CodeCache<V> {
    fn default() -> Self {
        CodeCache { entries: Default::default() }
    }
}

impl<V> CodeCache<V> {
    const SWEEP_AT: usize = 4096;

    pub(crate) fn get(&self, code: &Bound<'_, PyAny>) -> Option<&V> {
        let (weak, value) = self.entries.get(&(code.as_ptr() as usize))?;
        let mut referent: *mut pyo3::ffi::PyObject = std::ptr::null_mut();
        // SAFETY: `weak` is a live weakref object we own. PyWeakref_GetRef (pyo3's compat shim
        // over PyWeakref_GetObject before 3.13) stores a new strong reference, or NULL when the
        // referent is gone; the reference is released right after the address comparison.
        let rc = unsafe { pyo3::ffi::compat::PyWeakref_GetRef(weak.as_ptr(), &mut referent) };
        if rc < 0 {
            // Not a weakref: impossible for values made by `weak_ref`; treat as a miss.
            // SAFETY: clearing the error indicator the call set, under the GIL.
            unsafe { pyo3::ffi::PyErr_Clear() };
            return None;
        }
        let live = !referent.is_null() && referent == code.as_ptr();
        if !referent.is_null() {
            // SAFETY: `referent` is the strong reference PyWeakref_GetRef gave us.
            unsafe { pyo3::ffi::Py_DECREF(referent) };
        }
        live.then_some(value)
    }

    /// Store `value` for `code`, given `weak`, a weak reference to it (made by [`weak_ref`]
    /// before the cache's lock is taken: it calls into Python).
    pub(crate) fn insert(&mut self, py: Python<'_>, code: &Bound<'_, PyAny>, weak: Py<PyAny>, value: V) {
        if self.entries.len() >= Self::SWEEP_AT {
            self.entries.retain(|_, (w, _)| w.bind(py).call0().map(|o| !o.is_none()).unwrap_or(false));
        }
        self.entries.insert(code.as_ptr() as usize, (weak, value));
    }
}

/// `weakref.ref(obj)`, None if that fails (the value is then not cached).
pub(crate) fn weak_ref(obj: &Bound<'_, PyAny>) -> Option<Py<PyAny>> {
    let py = obj.py();
    py.import("weakref").and_then(|w| w.getattr("ref")).and_then(|r| r.call1((obj,))).ok().map(Bound::unbind)
}

/// [`code_refs`] of each code object.
static NAMES_CACHE: PyOnceLock<Mutex<CodeCache<CodeRefs>>> = PyOnceLock::new();

/// One [`NAMES_CACHE`] entry: (global names, imported modules).
type CodeRefs = (Py<PyTuple>, Py<PyTuple>);
/// [`code_fields`] of each code object.
static FIELDS_CACHE: PyOnceLock<Mutex<CodeCache<Py<PyTuple>>>> = PyOnceLock::new();

/// `read` of the entry for `code`, when the cache has a live one.
fn code_cache_get<V, R>(
    cache: &PyOnceLock<Mutex<CodeCache<V>>>,
    py: Python<'_>,
    code: &Bound<'_, PyAny>,
    read: impl FnOnce(&V) -> R,
) -> Option<R> {
    let cache = cache.get_or_init(py, || Mutex::new(CodeCache::default()));
    let guard = cache.lock().ok()?;
    guard.get(code).map(read)
}

fn code_cache_put<V>(cache: &PyOnceLock<Mutex<CodeCache<V>>>, py: Python<'_>, code: &Bound<'_, PyAny>, value: V) {
    let Some(cache) = cache.get(py) else { return };
    let Some(weak) = weak_ref(code) else { return };
    if let Ok(mut guard) = cache.lock() {
        guard.insert(py, code, weak, value);
    }
}

/// The constructor fields of a code object in `_code_reduce`'s order, `co_name` as a fresh
/// string: read once per code object (sixteen attribute lookups, some of which build a tuple
/// each time), not once per dump.
pub(crate) fn code_fields<'py>(it: &Interp, code: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyTuple>> {
    let py = code.py();
    if let Some(hit) = code_cache_get(&FIELDS_CACHE, py, code, |v| v.bind(py).clone()) {
        return Ok(hit);
    }
    let mut fields = Vec::with_capacity(it.code_fields.len());
    for (i, name) in it.code_fields.iter().enumerate() {
        let v = code.getattr(name.bind(py))?;
        // Upstream's `"".join(co_name)`: a fresh string, so memo sharing (and the bytes) do
        // not depend on interning.
        // And upstream's shallow copies of the four name tuples: the compiler of 3.8-3.10 shares
        // equal ones between the code objects of a unit, the `CodeType` constructor copies them,
        // so without copies a loaded function would pickle with different memo references (and
        // bytes) than the original: cloudpickle's `..._subworker_tuple_memoization` test.
        let v = if i == it.code_name_field {
            fresh_str(&v)?
        } else if it.code_tuple_fields.contains(&i) {
            PyTuple::new(py, v.cast::<PyTuple>()?.iter())?.into_any()
        } else {
            v
        };
        fields.push(v);
    }
    let tuple = PyTuple::new(py, fields)?;
    code_cache_put(&FIELDS_CACHE, py, code, tuple.clone().unbind());
    Ok(tuple)
}
