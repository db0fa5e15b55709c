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

mod class;
mod code;
pub(crate) mod function;
mod module;
pub(crate) mod options;
pub(crate) mod receiver;
pub(crate) mod source;
mod tracker;

use pickle_wire::opcodes::{POP, REDUCE};

use crate::dumper::Handled;
use crate::lookup::lookup_attr;
use class::{forwardref_reduce, portable_field_reduce};

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
            code_name_field: field_names.iter().position(|f| *f == "co_name").ok_or_else(|| {
                pyo3::exceptions::PyRuntimeError::new_err("the reconstructors' code fields have no co_name")
            })?,
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
    pub by_source: crate::cloud::options::BySource,
    /// The receiver's Python, when the caller named it: code it cannot load is refused.
    pub target_python: crate::cloud::options::TargetPython,
    /// Per-dump state of the source path (None in bytecode mode).
    pub source: Option<crate::cloud::source::SourceDump>,
    /// The `receiver=` session, when the caller described the other side.
    pub receiver: Option<crate::cloud::receiver::ReceiverSession<'py>>,
}

impl<'py> Cloud<'py> {
    pub(crate) fn new(
        py: Python<'py>,
        module_name: &str,
        globals_ref: Bound<'py, PyDict>,
        pickle_by_reference: Option<Bound<'py, PyAny>>,
        by_source: crate::cloud::options::BySource,
        target_python: crate::cloud::options::TargetPython,
        receiver: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Self> {
        let mut pickle_by_reference = pickle_by_reference.filter(|c| !c.is_none());
        let mut target_python = target_python;
        let mut session = None;
        if let Some(r) = receiver.filter(|r| !r.is_none()) {
            let begun = crate::cloud::receiver::ReceiverSession::begin(r, pickle_by_reference.as_ref())?;
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
            source: (by_source != crate::cloud::options::BySource::Off).then(crate::cloud::source::SourceDump::default),
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
                crate::cloud::receiver::Verdict::Reference => true,
                crate::cloud::receiver::Verdict::Value => false,
                // The session words the refusal (it raises).
                crate::cloud::receiver::Verdict::Refuse => return r.session_by_reference(obj),
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
/// (`function`, `class`, `code`, `module`, `source`) are methods of.
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
        if d.layer.by_source != crate::cloud::options::BySource::Off {
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
    pub(crate) fn receiver_size_check(&self) -> Option<crate::cloud::receiver::SizeCheck<'py>> {
        self.layer.receiver.as_ref().and_then(|r| r.size_check())
    }
}

impl<'py> CloudDumper<'py> {
    /// cloudpickle's `reducer_override`: classes and functions.
    pub(crate) fn cloud_override(
        &mut self,
        obj: &Bound<'py, PyAny>,
        tp: &Bound<'py, PyType>,
    ) -> PyResult<Handled<'py>> {
        let py = self.py;
        let cloud = &self.layer;
        let it = cloud.it;
        // SAFETY: `tp` is a live type object. (The flag test is `PyType_Check` on its instances,
        // a subclass test against `type` without walking the MRO.)
        if unsafe { pyo3::ffi::PyType_FastSubclass(tp.as_type_ptr(), pyo3::ffi::Py_TPFLAGS_TYPE_SUBCLASS) } != 0 {
            // A metaclass with a reducer of its own in a dispatch table decides how its classes
            // pickle (upstream's reducer_override shadows it: CPython's test_dynamic_class).
            if !tp.is(py.get_type::<PyType>()) && self.metaclass_has_reducer(tp)? {
                return Ok(Handled::Pass);
            }
            let Some(rv) = self.class_reduce(obj)? else {
                if let Some(alias) = self.c_class_alias(obj)? {
                    self.save_global(obj, Some(&alias))?;
                    return Ok(Handled::Done);
                }
                return Ok(Handled::Pass);
            };
            let post = self.regenerated_dataclass(obj)?;
            self.save_reduce_value(obj, &rv)?;
            if let Some(apply) = post {
                // dataclasses.dataclass(**params)(cls): regenerate the generated methods.
                self.save(&apply, false)?;
                self.save(obj, false)?;
                self.w.op(pickle_wire::opcodes::TUPLE1);
                self.w.op(REDUCE);
                self.w.op(POP);
            }
            return Ok(Handled::Done);
        }
        if tp.is(it.function_type.bind(py)) {
            let c = &self.layer;
            let by_ref = c.rec.own_functions.contains(&(obj.as_ptr() as usize)) || c.function_by_reference(obj)?;
            if by_ref {
                return Ok(Handled::Pass);
            }
            self.save_function_by_value(obj)?;
            return Ok(Handled::Done);
        }
        Ok(Handled::Pass)
    }

    fn metaclass_has_reducer(&self, meta: &Bound<'py, PyType>) -> PyResult<bool> {
        let py = self.py;
        if let Some(table) = &self.hooks.dispatch_table {
            return match table.get_item(meta) {
                Ok(_) => Ok(true),
                Err(e) if e.is_instance_of::<pyo3::exceptions::PyKeyError>(py) => Ok(false),
                Err(e) => Err(e),
            };
        }
        self.st.copyreg_dispatch_table.bind(py).contains(meta)
    }

    /// cloudpickle's dispatch table: native reducers for code, cells, modules and TypeVars, and
    /// the reconstructor module's own reducers for the rest.
    pub(crate) fn cloud_dispatch(
        &mut self,
        obj: &Bound<'py, PyAny>,
        tp: &Bound<'py, PyType>,
    ) -> PyResult<Handled<'py>> {
        let py = self.py;
        let cloud = &self.layer;
        let it = cloud.it;
        if tp.is(it.code_type.bind(py)) {
            // A code object met on its own (not as a function's): by source when asked.
            if self.by_source() == crate::cloud::options::BySource::Off || !self.save_code_by_source(obj, obj)? {
                self.save_code(obj)?;
            }
            return Ok(Handled::Done);
        }
        if tp.is(it.cell_type.bind(py)) {
            let rec = cloud.rec;
            let rv = match obj.getattr(intern!(py, "cell_contents")) {
                Ok(v) => {
                    self.layer.cells_filled.insert(obj.as_ptr() as usize);
                    (rec.make_cell.bind(py).clone(), (v,)).into_pyobject(py)?.into_any()
                }
                Err(_) => (rec.make_empty_cell.bind(py).clone(), PyTuple::empty(py)).into_pyobject(py)?.into_any(),
            };
            return Ok(Handled::Reduce(rv));
        }
        if tp.is(it.module_type.bind(py)) {
            return Ok(Handled::Reduce(self.module_reduce(obj)?));
        }
        if tp.is(it.typevar_type.bind(py)) {
            return Ok(match self.typevar_reduce(obj)? {
                Some(rv) => Handled::Reduce(rv),
                None => Handled::Pass,
            });
        }
        if tp.is(it.forwardref_type.bind(py)) {
            return Ok(Handled::Reduce(forwardref_reduce(obj, it.forwardref_type.bind(py))?));
        }
        if tp.is(it.dataclass_field_type.bind(py)) && cloud.by_source != crate::cloud::options::BySource::Off {
            return Ok(Handled::Reduce(portable_field_reduce(py, obj)?));
        }
        if obj.is(it.dataclasses_missing.bind(py)) {
            // The sentinel is compared by identity: keep it the receiver's own.
            self.save_named_global(obj, "dataclasses", "MISSING")?;
            return Ok(Handled::Done);
        }
        let extra = cloud.rec.extra_reducers.bind(py);
        if let Some(reducer) = extra.get_item(tp)? {
            return Ok(Handled::Reduce(reducer.call1((obj,))?));
        }
        Ok(Handled::Pass)
    }

    /// The reduce value cloudpickle's `reducer_override` returns for `obj`, for Python
    /// subclasses calling `super().reducer_override(obj)`. Functions get upstream's shape:
    /// fresh empty cells, contents in the state.
    pub(crate) fn reducer_override_value(&mut self, obj: &Bound<'py, PyAny>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let py = self.py;
        let tp = obj.get_type();
        if tp.is_subclass_of::<PyType>()? {
            return self.class_reduce(obj);
        }
        let (rec, it) = (self.layer.rec, self.layer.it);
        if !tp.is(it.function_type.bind(py)) || self.layer.should_pickle_by_reference(obj, None)? {
            return Ok(None);
        }
        let code = obj.getattr(intern!(py, "__code__"))?;
        let f_globals = obj.getattr(intern!(py, "__globals__"))?.cast_into::<PyDict>()?;
        let closure = obj.getattr(intern!(py, "__closure__"))?;
        let cells: Vec<Bound<'py, PyAny>> =
            if closure.is_none() { Vec::new() } else { closure.cast::<PyTuple>()?.iter().collect() };
        let base_globals = self.base_globals(&f_globals)?;
        let new_cells = if closure.is_none() {
            py.None().into_bound(py)
        } else {
            let mut v = Vec::with_capacity(cells.len());
            for _ in &cells {
                v.push(rec.make_empty_cell.bind(py).call0()?);
            }
            PyTuple::new(py, v)?.into_any()
        };
        let newargs = PyTuple::new(
            py,
            [code.clone(), base_globals, py.None().into_bound(py), py.None().into_bound(py), new_cells],
        )?;
        let state = self.function_state(obj, &code, &f_globals, &cells)?;
        state.get_item(1)?.set_item(intern!(py, "__closure__"), &closure)?;
        let rv = PyTuple::new(
            py,
            [
                rec.make_function.bind(py).clone(),
                newargs.into_any(),
                state,
                py.None().into_bound(py),
                py.None().into_bound(py),
                rec.function_setstate.bind(py).clone(),
            ],
        )?;
        Ok(Some(rv.into_any()))
    }
}
