//! Finding things by name, as `_pickle.c` does: attributes (`_PyObject_LookupAttr`), dotted
//! qualnames, `whichmodule`, `sys.modules`, imports. Used by the core walk's globals and by the
//! cloudpickle layer; knows nothing of either.

use pyo3::exceptions::{PyAttributeError, PyRuntimeError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString, PyTuple};

use crate::errors::safe_repr;

/// `name.split('.')`, refusing `<locals>` components as `_pickle.c` does.
pub(crate) fn dotted_path<'py>(name: &Bound<'py, PyString>) -> PyResult<Vec<Bound<'py, PyString>>> {
    let py = name.py();
    let parts = name.call_method1(intern!(py, "split"), (".",))?;
    let parts = parts.cast::<PyList>()?;
    let mut out = Vec::with_capacity(parts.len());
    for p in parts.iter() {
        let s = p.cast_into::<PyString>()?;
        if s.to_cow()? == "<locals>" {
            // `_pickle.c`'s wording, which 3.13 changed.
            let verb = if cfg!(Py_3_13) { "get" } else { "pickle" };
            return Err(PyAttributeError::new_err(format!("Can't {verb} local object {}", safe_repr(name.as_any()))));
        }
        out.push(s);
    }
    Ok(out)
}

/// Follow `path` from `module`; returns (object, parent).
pub(crate) fn deep_attribute<'py>(
    module: &Bound<'py, PyAny>,
    path: &[Bound<'py, PyString>],
) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
    let mut parent = module.clone();
    let mut obj = module.clone();
    for part in path {
        parent = obj;
        obj = parent.getattr(part)?;
    }
    Ok((obj, parent))
}

/// The module name of a global: its `__module__`, else a search of `sys.modules`, else
/// `__main__`.
pub(crate) fn whichmodule<'py>(obj: &Bound<'py, PyAny>, path: &[Bound<'py, PyString>]) -> PyResult<Bound<'py, PyAny>> {
    let py = obj.py();
    if let Some(m) = lookup_attr(obj, intern!(py, "__module__"))? {
        if !m.is_none() {
            return Ok(m);
        }
    }
    let sys = py.import("sys")?;
    let modules = sys.getattr("modules").map_err(|_| PyRuntimeError::new_err("unable to get sys.modules"))?;
    // Iterate over a snapshot: importing during the search may change sys.modules.
    let items: Vec<(Bound<'py, PyAny>, Bound<'py, PyAny>)> = match modules.cast::<PyDict>() {
        Ok(d) => d.copy()?.iter().collect(),
        Err(_) => {
            let mut v = Vec::new();
            for item in modules.call_method0("items")?.try_iter()? {
                let t = item?.cast_into::<PyTuple>()?;
                v.push((t.get_item(0)?, t.get_item(1)?));
            }
            v
        }
    };
    for (name, module) in items {
        if module.is_none() {
            continue;
        }
        if let Ok(s) = name.cast::<PyString>() {
            if s.to_cow()? == "__main__" {
                continue;
            }
        }
        match deep_attribute(&module, path) {
            Ok((candidate, _)) if candidate.is(obj) => return Ok(name),
            Ok(_) => {}
            Err(e) if e.is_instance_of::<PyAttributeError>(py) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(intern!(py, "__main__").clone().into_any())
}

/// `sys.modules`, without the import machinery.
pub(crate) fn sys_modules(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    // SAFETY: borrowed reference owned by the interpreter; we take a strong one at once.
    let p = unsafe { pyo3::ffi::PyImport_GetModuleDict() };
    if p.is_null() {
        return Err(PyRuntimeError::new_err("unable to get sys.modules"));
    }
    // SAFETY: `p` is non-null (checked above): a borrowed reference into `sys.modules`, made strong
    // at once.
    Ok(unsafe { Bound::from_borrowed_ptr(py, p) })
}

/// Import a module by name: `sys.modules` first (no import machinery for what is loaded), then
/// `__import__` as `PyImport_Import` does.
pub(crate) fn import_module<'py>(py: Python<'py>, name: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    // SAFETY: the module dict is borrowed from the interpreter; the lookup returns a borrowed
    // reference that we turn into a strong one before anything else runs.
    let modules = unsafe { pyo3::ffi::PyImport_GetModuleDict() };
    // SAFETY: `PyImport_GetModuleDict` returns the interpreter's borrowed `sys.modules` (or NULL);
    // the GIL is held.
    if !modules.is_null() && unsafe { pyo3::ffi::PyDict_Check(modules) } != 0 {
        // SAFETY: `modules` is non-null and a dict (checked before); the result is borrowed from
        // it.
        let p = unsafe { pyo3::ffi::PyDict_GetItemWithError(modules, name.as_ptr()) };
        // SAFETY: `Py_None` only returns the None singleton's address.
        if !p.is_null() && p != unsafe { pyo3::ffi::Py_None() } {
            // SAFETY: `p` is non-null and borrowed from `sys.modules`: made strong at once.
            return Ok(unsafe { Bound::from_borrowed_ptr(py, p) });
        }
        if let Some(e) = PyErr::take(py) {
            return Err(e);
        }
    }
    // SAFETY: `name` is a live str; the GIL is held. NULL means an exception is set (checked
    // below).
    let p = unsafe { pyo3::ffi::PyImport_Import(name.as_ptr()) };
    if p.is_null() {
        return Err(PyErr::fetch(py));
    }
    // SAFETY: `p` is a new (owned) reference, checked non-null above.
    Ok(unsafe { Bound::from_owned_ptr(py, p) })
}

/// `_PyObject_LookupAttr`: Ok(None) when the attribute is missing (AttributeError swallowed).
pub(crate) fn lookup_attr<'py>(
    obj: &Bound<'py, PyAny>,
    name: &Bound<'py, PyString>,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    match obj.getattr(name) {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.is_instance_of::<pyo3::exceptions::PyAttributeError>(obj.py()) => Ok(None),
        Err(e) => Err(e),
    }
}
