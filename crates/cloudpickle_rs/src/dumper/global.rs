//! Globals by reference: `save_global` (objects pickled as `module.qualname`, looked up and
//! checked the way `_pickle.c` does: dotted `__qualname__`, `whichmodule`, the identity check),
//! then written as EXT, STACK_GLOBAL, GLOBAL or `getattr(parent, name)`; types and singletons.

use pyo3::exceptions::PyRuntimeError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString, PyTuple, PyType};

use super::{Dumper, Layer, SaveResult};
use crate::errors::safe_repr;
use crate::lookup::lookup_attr;
use crate::lookup::{deep_attribute, dotted_path, import_module, whichmodule};
use crate::statics::pickling_error;
use pyo3::sync::PyOnceLock;
use std::sync::{Arc, Mutex};

impl<'py, L: Layer<'py>> Dumper<'py, L> {
    pub(super) fn save_type(&mut self, obj: &Bound<'py, PyAny>) -> SaveResult {
        let py = self.py;
        let singleton = if obj.is(py.None().into_bound(py).get_type()) {
            Some(py.None().into_bound(py))
        } else if obj.is(py.Ellipsis().into_bound(py).get_type()) {
            Some(py.Ellipsis().into_bound(py))
        } else if obj.is(py.NotImplemented().into_bound(py).get_type()) {
            Some(py.NotImplemented().into_bound(py))
        } else {
            None
        };
        if let Some(s) = singleton {
            let rv = PyTuple::new(py, [py.get_type::<PyType>().into_any(), PyTuple::new(py, [s])?.into_any()])?;
            return self.save_reduce(&rv, Some(obj));
        }
        self.save_global(obj, None)
    }

    /// A reference to a global: `module.qualname`, found by import, checked to be `obj`.
    pub(crate) fn save_global(&mut self, obj: &Bound<'py, PyAny>, name: Option<&Bound<'py, PyString>>) -> SaveResult {
        find_and_write(self, obj, name)
    }

    pub(crate) fn write_global_ref(
        &mut self,
        obj: &Bound<'py, PyAny>,
        module_name: &Bound<'py, PyString>,
        global_name: &Bound<'py, PyString>,
        parent_is_module: bool,
        parent: &Bound<'py, PyAny>,
        lastname: &Bound<'py, PyString>,
    ) -> SaveResult {
        use pickle_wire::opcodes::STACK_GLOBAL;
        let py = self.py;
        L::check_global(self, obj, module_name, global_name)?;
        let registry = self.st.extension_registry.bind(py).cast::<PyDict>()?;
        if self.proto() >= 2 && !registry.is_empty() {
            let key = PyTuple::new(py, [module_name.as_any(), global_name.as_any()])?;
            if let Some(code) = registry.get_item(&key)? {
                // `_pickle.c` reads the code with PyLong_AsLong: a huge int is its OverflowError on
                // every version; 3.13 also lets a non-int's TypeError through and reports a code
                // out of range as RuntimeError, where 3.9-3.12 raise PicklingError for both.
                let code_val = match code.extract::<i64>() {
                    Ok(v) => v,
                    Err(e) if code.is_instance_of::<pyo3::types::PyInt>() || cfg!(Py_3_13) => return Err(e),
                    Err(_) => {
                        return Err(pickling_error(
                            py,
                            format!(
                                "Can't pickle {}: extension code {} isn't an integer",
                                safe_repr(obj),
                                safe_repr(&code)
                            ),
                        ))
                    }
                };
                if code_val <= 0 || code_val > 0x7fff_ffff {
                    if cfg!(Py_3_13) {
                        return Err(pyo3::exceptions::PyRuntimeError::new_err(format!(
                            "extension code {code_val} is out of range"
                        )));
                    }
                    return Err(pickling_error(
                        py,
                        format!("Can't pickle {}: extension code {} is out of range", safe_repr(obj), code_val),
                    ));
                }
                self.w.ext(code_val as u32);
                return Ok(());
            }
        }
        let global_name = if parent_is_module { lastname } else { global_name };
        if self.proto() >= 4 {
            self.save(module_name.as_any(), false)?;
            self.save(global_name.as_any(), false)?;
            self.w.op(STACK_GLOBAL);
        } else if !parent_is_module && cfg!(Py_3_13) {
            // 3.13+: `getattr(getattr(module.top, a), b)` with the top-level name written by
            // name, so a qualname through the object itself (`C.ref` with `C.ref = C`) does not
            // recurse into saving its parent.
            let dotted = global_name.to_str()?.to_owned();
            let mut parts = dotted.split('.');
            let top = parts.next().unwrap_or("");
            let attrs: Vec<&str> = parts.collect();
            let getattr = self.st.builtins_getattr.bind(py).clone();
            for _ in &attrs {
                self.save(&getattr, false)?;
                if self.proto() < 2 {
                    self.w.op(pickle_wire::opcodes::MARK);
                }
            }
            self.write_toplevel_by_name(module_name, &PyString::new(py, top))?;
            for attr in &attrs {
                self.save(PyString::new(py, attr).as_any(), false)?;
                self.w.op(if self.proto() < 2 { pickle_wire::opcodes::TUPLE } else { pickle_wire::opcodes::TUPLE2 });
                self.w.op(pickle_wire::opcodes::REDUCE);
            }
        } else if !parent_is_module {
            let rv = PyTuple::new(
                py,
                [
                    self.st.builtins_getattr.bind(py).clone(),
                    PyTuple::new(py, [parent.clone(), lastname.clone().into_any()])?.into_any(),
                ],
            )?;
            self.save_reduce(&rv, None)?;
        } else {
            self.write_toplevel_by_name(module_name, global_name)?;
        }
        self.memo_put(obj)
    }

    /// `GLOBAL module\nname\n`, through fix_imports below protocol 3.
    pub(super) fn write_toplevel_by_name(
        &mut self,
        module_name: &Bound<'py, PyString>,
        global_name: &Bound<'py, PyString>,
    ) -> SaveResult {
        let py = self.py;
        {
            let (mut m, mut g) = (module_name.clone(), global_name.clone());
            if self.proto() < 3 && self.fix_imports {
                (m, g) = fix_imports(self, m, g)?;
            }
            let encode = |s: &Bound<'py, PyString>, what: &str| -> PyResult<Vec<u8>> {
                let text = s.to_cow().map_err(|_| {
                    pickling_error(
                        py,
                        format!("can't pickle {what} identifier '{}' using pickle protocol {}", s, self.proto()),
                    )
                })?;
                if self.proto() != 3 && !text.is_ascii() {
                    return Err(pickling_error(
                        py,
                        format!("can't pickle {what} identifier '{text}' using pickle protocol {}", self.proto()),
                    ));
                }
                Ok(text.as_bytes().to_vec())
            };
            let mb = encode(&m, "module")?;
            let gb = encode(&g, "global")?;
            self.w.global_text(&mb, &gb);
        }
        Ok(())
    }
}

/// Where a global was found last time: `save_global` of the same object (a reconstructor, a
/// class pickled by reference) costs one attribute lookup instead of whichmodule + import + path
/// walk. Entries hold their object (so its address cannot be reused) and are checked again on
/// every use (`getattr(parent, lastname) is obj`).
pub(super) struct FoundGlobal {
    obj: Py<PyAny>,
    module_name: Py<PyString>,
    global_name: Py<PyString>,
    lastname: Py<PyString>,
    parent: Py<PyAny>,
    parent_is_module: bool,
}

const GLOBAL_CACHE_LIMIT: usize = 4096;
static GLOBAL_CACHE: PyOnceLock<Mutex<crate::addr::AddrMap<Arc<FoundGlobal>>>> = PyOnceLock::new();

fn find_and_write<'py, L: Layer<'py>>(
    d: &mut Dumper<'py, L>,
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
fn fix_imports<'py, L: Layer<'py>>(
    d: &Dumper<'py, L>,
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
