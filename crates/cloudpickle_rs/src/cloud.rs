//! cloudpickle's semantics on top of the `_pickle.c` walk: what goes by value (functions and
//! classes of `__main__`, of dynamic modules, of modules registered by value) and how.
//!
//! Every reconstructor named in a stream comes from the configured reconstructor module
//! (`cloudpickle.cloudpickle` by default, `ray.cloudpickle.cloudpickle` for Ray workers) or the
//! standard library, so receivers need stock cloudpickle only (DESIGN.md §2).

use std::collections::HashMap;
use std::sync::Mutex;

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyModule, PyString, PyTuple, PyType};

use crate::lookup::lookup_attr;

/// The reconstructors and tables of one reconstructor module, looked up once per process.
pub(crate) struct Reconstructors {
    pub module_name: String,
    pub make_function: Py<PyAny>,
    pub make_empty_cell: Py<PyAny>,
    pub make_cell: Py<PyAny>,
    pub function_setstate: Py<PyAny>,
    pub make_skeleton_class: Py<PyAny>,
    pub make_skeleton_enum: Py<PyAny>,
    pub class_setstate: Py<PyAny>,
    pub builtin_type: Py<PyAny>,
    pub subimport: Py<PyAny>,
    pub dynamic_subimport: Py<PyAny>,
    /// cloudpickle's own reducers for the long tail of types (classmethod, property, files,
    /// loggers, dict views, ...): `Pickler._dispatch_table` of the reconstructor module, so a Ray
    /// stream names Ray's copies of the reconstructors.
    pub extra_reducers: Py<PyDict>,
    /// Addresses of the module's own functions (kept alive by the module): always written by
    /// reference, without asking the by-value rule or the user's callback.
    pub own_functions: crate::addr::AddrSet,
    pub by_value_modules: Py<PyAny>,
    pub tracker_by_class: Py<PyAny>,
    pub tracker_by_id: Py<PyAny>,
}

static RECONSTRUCTORS: PyOnceLock<Mutex<HashMap<String, &'static Reconstructors>>> = PyOnceLock::new();

/// The default module's entry of RECONSTRUCTORS, read on every `dumps` call without the lock.
static DEFAULT_RECONSTRUCTORS: PyOnceLock<&'static Reconstructors> = PyOnceLock::new();

impl Reconstructors {
    pub(crate) fn get<'py>(py: Python<'py>, module_name: &str) -> PyResult<&'static Reconstructors> {
        let is_default = module_name == DEFAULT_RECONSTRUCTOR_MODULE;
        if is_default {
            if let Some(r) = DEFAULT_RECONSTRUCTORS.get(py) {
                return Ok(r);
            }
        }
        let r = Self::get_cached(py, module_name)?;
        if is_default {
            let _ = DEFAULT_RECONSTRUCTORS.set(py, r);
        }
        Ok(r)
    }

    fn get_cached<'py>(py: Python<'py>, module_name: &str) -> PyResult<&'static Reconstructors> {
        let cache = RECONSTRUCTORS.get_or_init(py, || Mutex::new(HashMap::new()));
        if let Some(r) = cache.lock().ok().and_then(|m| m.get(module_name).copied()) {
            return Ok(r);
        }
        let m = py.import(module_name)?;
        let g = |name: &str| -> PyResult<Py<PyAny>> { Ok(m.getattr(name)?.unbind()) };
        let extra = extra_reducers(py, &m)?;
        let r = Reconstructors {
            module_name: module_name.to_owned(),
            make_function: g("_make_function")?,
            make_empty_cell: g("_make_empty_cell")?,
            make_cell: g("_make_cell")?,
            function_setstate: g("_function_setstate")?,
            make_skeleton_class: g("_make_skeleton_class")?,
            make_skeleton_enum: g("_make_skeleton_enum")?,
            class_setstate: g("_class_setstate")?,
            builtin_type: g("_builtin_type")?,
            subimport: g("subimport")?,
            dynamic_subimport: g("dynamic_subimport")?,
            extra_reducers: extra.unbind(),
            own_functions: {
                let ftype = py.import("types")?.getattr("FunctionType")?;
                let mut set = crate::addr::AddrSet::default();
                for (_, v) in m.getattr("__dict__")?.cast::<PyDict>()?.iter() {
                    if v.get_type().is(&ftype) {
                        set.insert(v.as_ptr() as usize);
                    }
                }
                set
            },
            by_value_modules: g("_PICKLE_BY_VALUE_MODULES")?,
            tracker_by_class: g("_DYNAMIC_CLASS_TRACKER_BY_CLASS")?,
            tracker_by_id: g("_DYNAMIC_CLASS_TRACKER_BY_ID")?,
        };
        // Leaked once per reconstructor module per process: a handful at most.
        let leaked: &'static Reconstructors = Box::leak(Box::new(r));
        if let Ok(mut map) = cache.lock() {
            map.insert(module_name.to_owned(), leaked);
        }
        Ok(leaked)
    }
}

/// cloudpickle's reducers for the long tail of types, by name from the reconstructor module (not
/// from its `Pickler._dispatch_table`: a shim may have replaced that class with ours).
fn extra_reducers<'py>(py: Python<'py>, m: &Bound<'py, PyModule>) -> PyResult<Bound<'py, PyDict>> {
    let types = py.import("types")?;
    let builtins = py.import("builtins")?;
    let abc = py.import("abc")?;
    let logging = py.import("logging")?;
    let od = py.import("collections")?.getattr("OrderedDict")?.call0()?;
    let d = PyDict::new(py);
    let entries: Vec<(Bound<'py, PyAny>, &str)> = vec![
        (builtins.getattr("classmethod")?, "_classmethod_reduce"),
        (builtins.getattr("staticmethod")?, "_classmethod_reduce"),
        (py.import("io")?.getattr("TextIOWrapper")?, "_file_reduce"),
        (logging.getattr("Logger")?, "_logger_reduce"),
        (logging.getattr("RootLogger")?, "_root_logger_reduce"),
        (builtins.getattr("memoryview")?, "_memoryview_reduce"),
        (builtins.getattr("property")?, "_property_reduce"),
        (types.getattr("GetSetDescriptorType")?, "_getset_descriptor_reduce"),
        (types.getattr("MethodType")?, "_method_reduce"),
        (types.getattr("MappingProxyType")?, "_mappingproxy_reduce"),
        (py.import("weakref")?.getattr("WeakSet")?, "_weakset_reduce"),
        (d.call_method0("keys")?.get_type().into_any(), "_dict_keys_reduce"),
        (d.call_method0("values")?.get_type().into_any(), "_dict_values_reduce"),
        (d.call_method0("items")?.get_type().into_any(), "_dict_items_reduce"),
        (od.call_method0("keys")?.get_type().into_any(), "_odict_keys_reduce"),
        (od.call_method0("values")?.get_type().into_any(), "_odict_values_reduce"),
        (od.call_method0("items")?.get_type().into_any(), "_odict_items_reduce"),
        (abc.getattr("abstractmethod")?, "_classmethod_reduce"),
        (abc.getattr("abstractclassmethod")?, "_classmethod_reduce"),
        (abc.getattr("abstractstaticmethod")?, "_classmethod_reduce"),
        (abc.getattr("abstractproperty")?, "_property_reduce"),
        (py.import("dataclasses")?.getattr("_FIELD_BASE")?, "_dataclass_field_base_reduce"),
    ];
    for (tp, name) in entries {
        d.set_item(tp, m.getattr(name)?)?;
    }
    Ok(d)
}

/// Per-process facts about the interpreter the walk consults.
pub(crate) struct Interp {
    pub function_type: Py<PyAny>,
    pub code_type: Py<PyAny>,
    pub cell_type: Py<PyAny>,
    pub method_type: Py<PyAny>,
    pub module_type: Py<PyAny>,
    pub typevar_type: Py<PyAny>,
    pub forwardref_type: Py<PyAny>,
    pub enum_type: Py<PyAny>,
    pub abcmeta: Py<PyAny>,
    pub abc_get_dump: Py<PyAny>,
    pub property_type: Py<PyAny>,
    pub builtins_setattr: Py<PyAny>,
    pub dataclass_field_type: Py<PyAny>,
    pub dataclasses_missing: Py<PyAny>,
    /// The types of the `types` module by address (cloudpickle's `_BUILTIN_TYPE_NAMES`), looked
    /// up by identity: a class whose metaclass is unhashable must not break the lookup.
    pub builtin_type_names: crate::addr::AddrMap<Py<PyString>>,
    /// `tp_dealloc` of classes made by a class statement (`type_new` always installs
    /// `subtype_dealloc`), read from `enum.Enum`: see [`is_c_defined`].
    pub subtype_dealloc: usize,
    pub load_global: u8,
    pub store_global: u8,
    pub delete_global: u8,
    pub extended_arg: u8,
    pub import_name: u8,
    pub have_argument: u8,
    /// From 3.11, LOAD_GLOBAL's argument is `namei << 1 | push_null`.
    pub load_global_shifted: bool,
    /// The fields of `CodeType(...)` on this interpreter, in constructor order (upstream's
    /// `_code_reduce`), interned; `code_name_field` is the index of `co_name`.
    pub code_fields: Vec<Py<PyString>>,
    pub code_name_field: usize,
    /// Indices of `co_names`, `co_varnames`, `co_freevars`, `co_cellvars` in `code_fields`.
    pub code_tuple_fields: Vec<usize>,
}

static INTERP: PyOnceLock<Interp> = PyOnceLock::new();

fn dealloc_of(t: &Bound<'_, PyType>) -> usize {
    // SAFETY: reading a field of a live type object.
    unsafe { (*t.as_type_ptr()).tp_dealloc.map_or(0, |f| f as usize) }
}

/// Whether a class was defined in C (a static type, or a heap type made by
/// `PyType_FromSpec`), not by a class statement or `type(name, bases, dict)`. Such a class has
/// no Python definition to send: it can only travel by reference, and where its module and
/// qualname do not find it (`type(iter([]))`, `zlib.Compress`, `type(sys.flags)`), pickling
/// it must fail here as the C pickler fails, not write a skeleton class that loads as an empty
/// Python class (upstream does; the receiver then fails, or worse, runs without the C state).
pub(crate) fn is_c_defined(it: &Interp, t: &Bound<'_, PyType>) -> bool {
    !is_heap_type(t) || dealloc_of(t) != it.subtype_dealloc
}

/// Whether a type was allocated on the heap (a class statement, `type(...)`, `PyType_FromSpec`).
/// The others are static: they live as long as the interpreter, so their address is a key that
/// stays valid across dumps.
pub(crate) fn is_heap_type(t: &Bound<'_, PyType>) -> bool {
    // SAFETY: reading the flags of a live type object.
    let flags = unsafe { pyo3::ffi::PyType_GetFlags(t.as_type_ptr()) };
    flags & pyo3::ffi::Py_TPFLAGS_HEAPTYPE != 0
}

pub(crate) fn interp(py: Python<'_>) -> PyResult<&Interp> {
    INTERP.get_or_try_init(py, || {
        let types = py.import("types")?;
        let opcode = py.import("opcode")?;
        let opmap = opcode.getattr("opmap")?;
        let op = |n: &str| -> PyResult<u8> { opmap.get_item(n)?.extract() };
        let mut names = crate::addr::AddrMap::default();
        let type_type = py.get_type::<PyType>();
        for (k, v) in types.getattr("__dict__")?.cast::<PyDict>()?.iter() {
            if v.get_type().is(&type_type) {
                // `types` holds these type objects for the life of the process.
                names.insert(v.as_ptr() as usize, k.cast_into::<PyString>()?.unbind());
            }
        }
        let version: (u8, u8) =
            py.import("sys")?.getattr("version_info")?.extract::<(u8, u8, u8, String, u8)>().map(|v| (v.0, v.1))?;
        let code_type = types.getattr("CodeType")?;
        let field_names: Vec<&str> = {
            let mut f: Vec<&str> = vec![
                "co_argcount",
                "co_posonlyargcount",
                "co_kwonlyargcount",
                "co_nlocals",
                "co_stacksize",
                "co_flags",
                "co_code",
                "co_consts",
                "co_names",
                "co_varnames",
                "co_filename",
                "co_name",
            ];
            if code_type.hasattr("co_exceptiontable")? {
                f.extend(["co_qualname", "co_firstlineno", "co_linetable", "co_exceptiontable"]);
            } else if code_type.hasattr("co_linetable")? {
                f.extend(["co_firstlineno", "co_linetable"]);
            } else {
                f.extend(["co_firstlineno", "co_lnotab"]);
            }
            f.extend(["co_freevars", "co_cellvars"]);
            f
        };
        Ok(Interp {
            function_type: types.getattr("FunctionType")?.unbind(),
            cell_type: types.getattr("CellType")?.unbind(),
            method_type: types.getattr("MethodType")?.unbind(),
            module_type: types.getattr("ModuleType")?.unbind(),
            typevar_type: py.import("typing")?.getattr("TypeVar")?.unbind(),
            forwardref_type: py.import("typing")?.getattr("ForwardRef")?.unbind(),
            enum_type: py.import("enum")?.getattr("Enum")?.unbind(),
            abcmeta: py.import("abc")?.getattr("ABCMeta")?.unbind(),
            abc_get_dump: py.import("abc")?.getattr("_get_dump")?.unbind(),
            property_type: py.import("builtins")?.getattr("property")?.unbind(),
            builtins_setattr: py.import("builtins")?.getattr("setattr")?.unbind(),
            dataclass_field_type: py.import("dataclasses")?.getattr("Field")?.unbind(),
            dataclasses_missing: py.import("dataclasses")?.getattr("MISSING")?.unbind(),
            builtin_type_names: names,
            subtype_dealloc: dealloc_of(py.import("enum")?.getattr("Enum")?.cast::<PyType>()?),
            load_global: op("LOAD_GLOBAL")?,
            store_global: op("STORE_GLOBAL")?,
            delete_global: op("DELETE_GLOBAL")?,
            extended_arg: op("EXTENDED_ARG")?,
            import_name: op("IMPORT_NAME")?,
            have_argument: opcode.getattr("HAVE_ARGUMENT")?.extract()?,
            load_global_shifted: version >= (3, 11),
            code_tuple_fields: ["co_names", "co_varnames", "co_freevars", "co_cellvars"]
                .iter()
                .filter_map(|n| field_names.iter().position(|f| f == n))
                .collect(),
            code_fields: field_names.iter().map(|n| PyString::intern(py, n).unbind()).collect(),
            code_name_field: field_names.iter().position(|f| *f == "co_name").unwrap_or(11),
            code_type: code_type.unbind(),
        })
    })
}

/// Options and per-dump state of the cloudpickle layer.
pub(crate) struct Cloud<'py> {
    pub rec: &'static Reconstructors,
    pub it: &'py Interp,
    /// `id(func.__globals__) -> base_globals`, so functions sharing a module namespace share one
    /// dict after loading. Lives on the Pickler across dumps, as upstream's `globals_ref`.
    pub globals_ref: Bound<'py, PyDict>,
    pub pickle_by_reference: Option<Bound<'py, PyAny>>,
    /// Closure cells whose contents are being or have been written in this dump.
    pub cells_filled: crate::addr::AddrSet,
    /// Sorted names of `sys.modules`, built once per dump when a package global needs its
    /// imported submodules (upstream scans `sys.modules` per function: #576).
    pub module_index: Option<(usize, Vec<String>)>,
    pub by_source: crate::bysource::BySource,
    /// The receiver's Python, when the caller named it: code it cannot load is refused.
    pub target_python: crate::bysource::TargetPython,
    /// Per-dump state of the source path (None in bytecode mode).
    pub source: Option<crate::bysource::SourceDump>,
    /// The `receiver=` session, when the caller described the other side.
    pub receiver: Option<crate::receiver::ReceiverSession<'py>>,
}

impl<'py> Cloud<'py> {
    pub(crate) fn new(
        py: Python<'py>,
        module_name: &str,
        globals_ref: Bound<'py, PyDict>,
        pickle_by_reference: Option<Bound<'py, PyAny>>,
        by_source: crate::bysource::BySource,
        target_python: crate::bysource::TargetPython,
        receiver: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Self> {
        let mut pickle_by_reference = pickle_by_reference.filter(|c| !c.is_none());
        let mut target_python = target_python;
        let mut session = None;
        if let Some(r) = receiver.filter(|r| !r.is_none()) {
            let begun = crate::receiver::ReceiverSession::begin(r, pickle_by_reference.as_ref())?;
            pickle_by_reference = Some(begun.by_reference);
            if target_python.is_none() {
                target_python = begun.target_python;
            }
            session = Some(begun.session);
        }
        Ok(Cloud {
            rec: Reconstructors::get(py, module_name)?,
            it: interp(py)?,
            globals_ref,
            pickle_by_reference,
            cells_filled: Default::default(),
            module_index: None,
            by_source,
            target_python,
            source: (by_source != crate::bysource::BySource::Off).then(crate::bysource::SourceDump::default),
            receiver: session,
        })
    }

    /// Whether `module` (a module object) or a parent package is registered by value.
    pub(crate) fn is_registered_by_value(&self, py: Python<'py>, module_name: &str) -> PyResult<bool> {
        let registry = self.rec.by_value_modules.bind(py);
        if registry.len()? == 0 {
            return Ok(false);
        }
        let mut name = module_name;
        loop {
            if registry.contains(name)? {
                return Ok(true);
            }
            match name.rfind('.') {
                Some(i) => name = &name[..i],
                None => return Ok(false),
            }
        }
    }

    /// cloudpickle's `_lookup_module_and_qualname`: Some(module name) when `obj` is reachable
    /// as `module.qualname` in an imported module other than `__main__`.
    pub(crate) fn lookup_module_and_qualname(
        &self,
        obj: &Bound<'py, PyAny>,
        name: Option<&Bound<'py, PyString>>,
    ) -> PyResult<Option<String>> {
        let py = obj.py();
        let qualname = match name {
            Some(n) => Some(n.clone()),
            None => match lookup_attr(obj, intern!(py, "__qualname__"))? {
                Some(q) => q.cast_into::<PyString>().ok(),
                None => lookup_attr(obj, intern!(py, "__name__"))?.and_then(|n| n.cast_into::<PyString>().ok()),
            },
        };
        let Some(qualname) = qualname else { return Ok(None) };
        let module_name = match lookup_attr(obj, intern!(py, "__module__"))? {
            Some(m) if !m.is_none() => m,
            _ => match self.search_sys_modules(obj, &qualname)? {
                Some(m) => m,
                None => return Ok(None),
            },
        };
        let Ok(module_name) = module_name.cast_into::<PyString>() else { return Ok(None) };
        let mname = module_name.to_cow()?.into_owned();
        if mname == "__main__" {
            return Ok(None);
        }
        let modules = crate::lookup::sys_modules(py)?;
        let Ok(Some(module)) = modules.cast::<PyDict>().map(|d| d.get_item(&module_name).ok().flatten()) else {
            return Ok(None);
        };
        if module.is_none() {
            return Ok(None);
        }
        let mut cur = module;
        for part in qualname.to_cow()?.split('.') {
            if part == "<locals>" {
                return Ok(None);
            }
            match self.qualname_step(&cur, part)? {
                Some(v) => cur = v,
                None => return Ok(None),
            }
        }
        Ok(if cur.is(obj) { Some(mname) } else { None })
    }

    /// `getattr(cur, part)` for one segment of a qualname; None where that raises AttributeError.
    /// A plain module without a module-level `__getattr__` answers a non-dunder name from its
    /// `__dict__` alone (ModuleType's own attributes are all dunders): a lambda's `<lambda>` then
    /// costs one dict lookup instead of a formatted AttributeError, which was a quarter of the
    /// time of dumping one lambda.
    fn qualname_step(&self, cur: &Bound<'py, PyAny>, part: &str) -> PyResult<Option<Bound<'py, PyAny>>> {
        let py = cur.py();
        if cur.get_type().is(self.it.module_type.bind(py)) && !part.starts_with("__") {
            // SAFETY: `cur` is exactly a module; PyModule_GetDict returns a borrowed reference
            // (never NULL for a module object) that lives as long as `cur`.
            let dict = unsafe { Bound::from_borrowed_ptr(py, pyo3::ffi::PyModule_GetDict(cur.as_ptr())) };
            let dict = dict.cast_into::<PyDict>()?;
            if let Some(v) = dict.get_item(part)? {
                return Ok(Some(v));
            }
            if !dict.contains(intern!(py, "__getattr__"))? {
                return Ok(None);
            }
        }
        match cur.getattr(part) {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.is_instance_of::<pyo3::exceptions::PyAttributeError>(py) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `_whichmodule`'s fallback when `__module__` is None: errors during the search are
    /// ignored, `__main__` and `__mp_main__` skipped.
    fn search_sys_modules(
        &self,
        obj: &Bound<'py, PyAny>,
        qualname: &Bound<'py, PyString>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let py = obj.py();
        let modules = crate::lookup::sys_modules(py)?.cast_into::<PyDict>()?.copy()?;
        let module_type = self.it.module_type.bind(py);
        let parts: Vec<String> = qualname.to_cow()?.split('.').map(str::to_owned).collect();
        for (name, module) in modules.iter() {
            let Ok(n) = name.extract::<String>() else { continue };
            if n == "__main__" || n == "__mp_main__" || module.is_none() || !module.is_instance(module_type)? {
                continue;
            }
            let mut cur = module;
            let mut ok = true;
            for p in &parts {
                match cur.getattr(p.as_str()) {
                    Ok(v) => cur = v,
                    Err(_) => {
                        ok = false;
                        break;
                    }
                }
            }
            if ok && cur.is(obj) {
                return Ok(Some(name));
            }
        }
        Ok(None)
    }

    /// Functions and classes: import path (true) or by value (false). The user's
    /// `pickle_by_reference` callback decides when given; its exceptions propagate unchanged.
    pub(crate) fn should_pickle_by_reference(
        &self,
        obj: &Bound<'py, PyAny>,
        name: Option<&Bound<'py, PyString>>,
    ) -> PyResult<bool> {
        if let Some(cb) = &self.pickle_by_reference {
            // C types (static or heap) can only be referenced: their definition is not Python data.
            if let Ok(t) = obj.cast::<PyType>() {
                if is_c_defined(self.it, t) {
                    return Ok(true);
                }
            }
            return cb.call1((obj,))?.is_truthy();
        }
        match self.lookup_module_and_qualname(obj, name)? {
            None => Ok(false),
            Some(module) => Ok(!self.is_registered_by_value(obj.py(), &module)?),
        }
    }

    /// A function: by reference or by value. Under a receiver without a user callback the
    /// walk decides itself (cloudpickle's rule, then the receiver's verdict on the module,
    /// cached per dump), and calls into the session only for what it may refuse: one Python
    /// call per module, not per function.
    pub(crate) fn function_by_reference(&self, obj: &Bound<'py, PyAny>) -> PyResult<bool> {
        let Some(r) = self.receiver.as_ref().filter(|r| r.fast) else {
            return self.should_pickle_by_reference(obj, None);
        };
        let py = obj.py();
        let by_ref = match self.lookup_module_and_qualname(obj, None)? {
            Some(m) if !self.is_registered_by_value(py, &m)? => match r.module_verdict(&m)? {
                crate::receiver::Verdict::Reference => true,
                crate::receiver::Verdict::Value => false,
                // The session words the refusal (it raises).
                crate::receiver::Verdict::Refuse => return r.session_by_reference(obj),
            },
            _ => false,
        };
        // By value: what the function uses is checked as its state is written
        // (`ReceiverSession::function_suspect`).
        Ok(by_ref)
    }

    /// Modules: by reference when importable by name (in `sys.modules`) and not registered.
    pub(crate) fn should_pickle_module_by_reference(&self, module: &Bound<'py, PyAny>) -> PyResult<bool> {
        let py = module.py();
        if let Some(cb) = &self.pickle_by_reference {
            return cb.call1((module,))?.is_truthy();
        }
        let name: String = module.getattr(intern!(py, "__name__"))?.extract()?;
        if self.is_registered_by_value(py, &name)? {
            return Ok(false);
        }
        let modules = crate::lookup::sys_modules(py)?;
        modules.contains(name)
    }

    /// Loaded submodules of `package` (names with its prefix), from a per-dump index.
    pub(crate) fn loaded_submodules(&mut self, py: Python<'py>, package: &str) -> PyResult<Vec<String>> {
        let modules = crate::lookup::sys_modules(py)?.cast_into::<PyDict>()?;
        let size = modules.len();
        let stale = !matches!(&self.module_index, Some((n, _)) if *n == size);
        if stale {
            let mut names: Vec<String> = modules.keys().iter().filter_map(|k| k.extract::<String>().ok()).collect();
            names.sort_unstable();
            self.module_index = Some((size, names));
        }
        let Some((_, names)) = &self.module_index else { return Ok(Vec::new()) };
        let prefix = format!("{package}.");
        let start = names.partition_point(|n| n.as_str() < prefix.as_str());
        Ok(names[start..].iter().take_while(|n| n.starts_with(&prefix)).cloned().collect())
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

/// A fresh (not interned) copy of a str, as upstream's `"".join(s)`: keeps memo sharing, and
/// therefore the bytes, the same whether the name was interned here or rebuilt by a loader.
pub(crate) fn fresh_str<'py>(s: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = s.py();
    match s.cast::<PyString>() {
        Ok(text) => {
            let cow = text.to_cow()?;
            Ok(PyString::new(py, &cow).into_any())
        }
        Err(_) => Ok(s.clone()),
    }
}

/// `{fresh(k): v}` for every item of a mapping, in its order.
pub(crate) fn fresh_keys<'py>(d: &Bound<'py, PyDict>) -> PyResult<Bound<'py, PyDict>> {
    let out = PyDict::new(d.py());
    for (k, v) in d.iter() {
        out.set_item(fresh_str(&k)?, v)?;
    }
    Ok(out)
}

/// Streams name the reconstructors of stock cloudpickle unless a pickler says otherwise.
pub(crate) const DEFAULT_RECONSTRUCTOR_MODULE: &str = "cloudpickle.cloudpickle";

/// A dumper with the cloudpickle layer: the type the by-value and by-source save paths
/// ([`crate::byvalue`], [`crate::bysource`]) are methods of.
pub(crate) type CloudDumper<'py> = crate::dumper::Dumper<'py, Box<Cloud<'py>>>;

/// cloudpickle's pickler as a layer of the core walk: its `reducer_override` (classes and
/// functions by value), its dispatch table (code, cells, modules, TypeVars, ...), the receiver's
/// checks, the by_source linecache lines after the object, and deterministic bytes.
impl<'py> crate::dumper::Layer<'py> for Box<Cloud<'py>> {
    const ELIDE_UNSHARED: bool = true;
    const SORT_STR_SETS: bool = true;

    #[inline]
    fn substitute(
        d: &mut CloudDumper<'py>,
        obj: &Bound<'py, PyAny>,
        tp: &Bound<'py, PyType>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let Some(r) = d.layer.receiver.as_mut() else { return Ok(None) };
        if r.prohibited(tp)? {
            return Ok(Some(r.refuse(obj)?));
        }
        Ok(None)
    }

    #[inline]
    fn reducer_override(
        d: &mut CloudDumper<'py>,
        obj: &Bound<'py, PyAny>,
        tp: &Bound<'py, PyType>,
    ) -> PyResult<crate::dumper::Handled<'py>> {
        d.cloud_override(obj, tp)
    }

    #[inline]
    fn dispatch(
        d: &mut CloudDumper<'py>,
        obj: &Bound<'py, PyAny>,
        tp: &Bound<'py, PyType>,
    ) -> PyResult<crate::dumper::Handled<'py>> {
        d.cloud_dispatch(obj, tp)
    }

    #[inline]
    fn check_global(
        d: &CloudDumper<'py>,
        obj: &Bound<'py, PyAny>,
        module: &Bound<'py, PyString>,
        name: &Bound<'py, PyString>,
    ) -> PyResult<()> {
        match d.layer.receiver.as_ref() {
            Some(r) => r.check_global(obj, module, name, &d.layer.rec.module_name),
            None => Ok(()),
        }
    }

    fn after_walk(d: &mut CloudDumper<'py>) -> PyResult<()> {
        if d.layer.by_source != crate::bysource::BySource::Off {
            d.write_source_lines()?;
        }
        Ok(())
    }

    #[cold]
    fn failed(d: &CloudDumper<'py>, err: PyErr) -> PyErr {
        if let Some(r) = d.layer.receiver.as_ref() {
            r.finish_error(&err);
        }
        crate::statics::deep_recursion_error(d.py, err)
    }
}

impl<'py> CloudDumper<'py> {
    /// Whether this dump has a `receiver=` (its stream then goes to memory first).
    pub(crate) fn has_receiver(&self) -> bool {
        self.layer.receiver.is_some()
    }

    /// The `receiver=` size check to run on this dump's stream, if any.
    pub(crate) fn receiver_size_check(&self) -> Option<crate::receiver::SizeCheck<'py>> {
        self.layer.receiver.as_ref().and_then(|r| r.size_check())
    }
}
