//! `save_global`: objects pickled as a reference `module.qualname`, looked up and checked the
//! way `_pickle.c` does (dotted `__qualname__`, `whichmodule`, the identity check), then written
//! as EXT, STACK_GLOBAL, GLOBAL or `getattr(parent, name)`.

use std::sync::{Arc, Mutex};

use pyo3::exceptions::{PyAttributeError, PyRuntimeError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyList, PyString, PyTuple};

use crate::dumper::{lookup_attr, safe_repr, Dumper};
use crate::statics::pickling_error;

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

/// Where a global was found last time: `save_global` of the same object (a reconstructor, a
/// class pickled by reference) costs one attribute lookup instead of whichmodule + import + path
/// walk. Entries hold their object (so its address cannot be reused) and are checked again on
/// every use (`getattr(parent, lastname) is obj`).
struct FoundGlobal {
    obj: Py<PyAny>,
    module_name: Py<PyString>,
    global_name: Py<PyString>,
    lastname: Py<PyString>,
    parent: Py<PyAny>,
    parent_is_module: bool,
}

const GLOBAL_CACHE_LIMIT: usize = 4096;
static GLOBAL_CACHE: PyOnceLock<Mutex<crate::addr::AddrMap<Arc<FoundGlobal>>>> = PyOnceLock::new();

pub(crate) fn save_global<'py>(
    d: &mut Dumper<'py>,
    obj: &Bound<'py, PyAny>,
    name: Option<&Bound<'py, PyString>>,
) -> PyResult<()> {
    let py = d.py;
    let cache = GLOBAL_CACHE.get_or_init(py, || Mutex::new(Default::default()));
    if name.is_none() {
        let hit = cache.lock().ok().and_then(|m| m.get(&(obj.as_ptr() as usize)).cloned());
        if let Some(found) = hit {
            let (parent, lastname) = (found.parent.bind(py), found.lastname.bind(py));
            if found.obj.is(obj) && parent.getattr(lastname).is_ok_and(|v| v.is(obj)) {
                return d.write_global_ref(
                    obj,
                    found.module_name.bind(py),
                    found.global_name.bind(py),
                    found.parent_is_module,
                    parent,
                    lastname,
                );
            }
        }
    }
    let global_name: Bound<'py, PyString> = match name {
        Some(n) => n.clone(),
        None => match lookup_attr(obj, intern!(py, "__qualname__"))? {
            Some(q) => q.cast_into::<PyString>().map_err(PyErr::from)?,
            None => obj.getattr(intern!(py, "__name__"))?.cast_into::<PyString>().map_err(PyErr::from)?,
        },
    };
    let path = dotted_path(&global_name)?;
    let module_name = whichmodule(obj, &path)?;
    let module = import_module(py, &module_name).map_err(|e| {
        let err = pickling_error(
            py,
            format!("Can't pickle {}: import of module {} failed", safe_repr(obj), safe_repr(&module_name)),
        );
        err.set_cause(py, Some(e));
        err
    })?;
    let (found, parent) = deep_attribute(&module, &path).map_err(|e| {
        let err = pickling_error(
            py,
            format!("Can't pickle {}: attribute lookup {} on {} failed", safe_repr(obj), global_name, module_name),
        );
        err.set_cause(py, Some(e));
        err
    })?;
    if !found.is(obj) {
        return Err(pickling_error(
            py,
            format!("Can't pickle {}: it's not the same object as {}.{}", safe_repr(obj), module_name, global_name),
        ));
    }
    let module_name = module_name.cast_into::<PyString>().map_err(PyErr::from)?;
    let lastname = match path.last() {
        Some(l) => l.clone(),
        None => global_name.clone(),
    };
    let parent_is_module = parent.is(&module);
    if name.is_none() {
        if let Ok(mut m) = cache.lock() {
            if m.len() >= GLOBAL_CACHE_LIMIT {
                m.clear();
            }
            m.insert(
                obj.as_ptr() as usize,
                Arc::new(FoundGlobal {
                    obj: obj.clone().unbind(),
                    module_name: module_name.clone().unbind(),
                    global_name: global_name.clone().unbind(),
                    lastname: lastname.clone().unbind(),
                    parent: parent.clone().unbind(),
                    parent_is_module,
                }),
            );
        }
    }
    d.write_global_ref(obj, &module_name, &global_name, parent_is_module, &parent, &lastname)
}

/// Protocol < 3 with fix_imports: Python 3 names back to their Python 2 spelling.
pub(crate) fn fix_imports<'py>(
    d: &Dumper<'py>,
    module: Bound<'py, PyString>,
    name: Bound<'py, PyString>,
) -> PyResult<(Bound<'py, PyString>, Bound<'py, PyString>)> {
    let py = d.py;
    let key = PyTuple::new(py, [module.as_any(), name.as_any()])?;
    let names = d.st.name_mapping_3to2.bind(py).cast::<PyDict>()?;
    if let Some(item) = names.get_item(&key)? {
        let pair = item.cast::<PyTuple>().ok().filter(|t| t.len() == 2).ok_or_else(|| {
            PyRuntimeError::new_err(format!(
                "_compat_pickle.REVERSE_NAME_MAPPING values should be 2-tuples, not {}",
                crate::errors::type_name(&item)
            ))
        })?;
        let (m, n) = (pair.get_item(0)?, pair.get_item(1)?);
        match (m.cast_into::<PyString>(), n.cast_into::<PyString>()) {
            (Ok(m), Ok(n)) => return Ok((m, n)),
            _ => {
                return Err(PyRuntimeError::new_err(
                    "_compat_pickle.REVERSE_NAME_MAPPING values should be pairs of str",
                ))
            }
        }
    }
    let imports = d.st.import_mapping_3to2.bind(py).cast::<PyDict>()?;
    if let Some(item) = imports.get_item(&module)? {
        let m = item.cast_into::<PyString>().map_err(|e| {
            PyRuntimeError::new_err(format!(
                "_compat_pickle.REVERSE_IMPORT_MAPPING values should be strings, not {}",
                crate::errors::type_name(&e.into_inner())
            ))
        })?;
        return Ok((m, name));
    }
    Ok((module, name))
}
