//! The `Pickler` class: subclassable from Python the way `pickle.Pickler` is.

use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString, PyTuple, PyType};

use crate::cloud::options::BySource;
use crate::cloud::{Cloud, DEFAULT_RECONSTRUCTOR_MODULE};
use crate::dumper::{Dumper, Hooks};
use crate::dumper::{Layer, Plain};
use crate::lookup::lookup_attr;
use crate::memo::Memo;
use crate::statics::pickling_error;
use pickle_wire::{DEFAULT_PROTOCOL, HIGHEST_PROTOCOL};

/// `protocol` as `_pickle.c` reads it: None is the default, negative is the highest.
pub(crate) fn parse_protocol(protocol: Option<&Bound<'_, PyAny>>) -> PyResult<u8> {
    let Some(p) = protocol.filter(|p| !p.is_none()) else { return Ok(DEFAULT_PROTOCOL) };
    let v: i64 = match p.extract() {
        Ok(v) => v,
        Err(e) => protocol_via_int(p).ok_or(e)??,
    };
    if v < 0 {
        Ok(HIGHEST_PROTOCOL)
    } else if v > i64::from(HIGHEST_PROTOCOL) {
        Err(PyValueError::new_err(format!("pickle protocol must be <= {HIGHEST_PROTOCOL}")))
    } else {
        Ok(v as u8)
    }
}

/// CPython 3.9's `_pickle` reads the protocol with `PyLong_AsLong`, which still accepted any
/// object with `__int__` (a float: `protocol=2.0`) under a DeprecationWarning; 3.10 removed
/// that. None when that path does not apply (then the `__index__` error stands).
#[cfg(not(Py_3_10))]
fn protocol_via_int(p: &Bound<'_, PyAny>) -> Option<PyResult<i64>> {
    let py = p.py();
    if !p.hasattr(pyo3::intern!(py, "__int__")).unwrap_or(false) {
        return None;
    }
    let warn = || -> PyResult<i64> {
        let message = format!(
            "an integer is required (got type {}).  Implicit conversion to integers using __int__ is deprecated, \
             and may be removed in a future version of Python.",
            p.get_type().name()?
        );
        PyErr::warn(
            py,
            &py.get_type::<pyo3::exceptions::PyDeprecationWarning>(),
            &std::ffi::CString::new(message)?,
            1,
        )?;
        p.call_method0(pyo3::intern!(py, "__int__"))?.extract()
    };
    Some(warn())
}

#[cfg(Py_3_10)]
fn protocol_via_int(_p: &Bound<'_, PyAny>) -> Option<PyResult<i64>> {
    None
}

pub(crate) fn check_buffer_callback(proto: u8, cb: &Option<Bound<'_, PyAny>>) -> PyResult<()> {
    if proto < 5 && cb.as_ref().is_some_and(|c| !c.is_none()) {
        return Err(PyValueError::new_err("buffer_callback needs protocol >= 5"));
    }
    Ok(())
}

/// The `_pickle.Pickler`-compatible core: `_pickle.c`'s semantics, byte for byte, and no
/// by-value layer. [`Pickler`] adds cloudpickle's.
#[pyclass(subclass, dict, weakref, module = "cloudpickle_rs._native", name = "PicklerBase")]
pub struct PicklerBase {
    write: Option<Py<PyAny>>,
    proto: u8,
    fix_imports: bool,
    fast: bool,
    /// A dump is running on this pickler: a second one (re-entrant, or from another thread),
    /// `__init__` or a new memo would corrupt its stream, so they are refused.
    dumping: bool,
    buffer_callback: Option<Py<PyAny>>,
    /// None while a dump is running: a second dump on the same pickler (re-entrant from a
    /// reducer, or from another thread) is refused instead of corrupting the stream.
    memo: Option<Memo>,
    /// `id(module globals) -> base_globals`, kept across dumps like upstream's `globals_ref`.
    globals_ref: Py<PyDict>,
    pickle_by_reference: Option<Py<PyAny>>,
    reconstructor_module: String,
    /// cloudpickle's by-value layer (functions, classes, modules by value) is on.
    cloud_layer: bool,
    by_source: BySource,
    target_python: crate::cloud::options::TargetPython,
    /// `receiver=`: the other side's description (`cloudpickle_rs.Receiver`), or None.
    receiver: Option<Py<PyAny>>,
    /// Always true once the instance holds a `PicklerBase`. pyo3 (0.28 and later) makes the
    /// instance with `object.__new__`, which on CPython 3.11/3.12 allocates the instance
    /// `__dict__` before pyo3 writes these fields: a GC pass in that allocation calls
    /// `__traverse__` on the zeroed, still unwritten fields, where this reads false.
    constructed: bool,
}

#[pymethods]
impl PicklerBase {
    #[new]
    #[classmethod]
    #[pyo3(signature = (*args, **kwargs))]
    fn new(cls: &Bound<'_, PyType>, args: &Bound<'_, PyTuple>, kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        PicklerBase::make(cls, args, kwargs, false)
    }

    #[pyo3(signature = (*args, **kwargs))]
    fn __init__(&mut self, args: &Bound<'_, PyTuple>, kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<()> {
        if self.dumping {
            return Err(busy_error());
        }
        self.init_from(args, kwargs)
    }

    /// `fast` mode (no memo; cycles refused), as `_pickle.Pickler.fast`: any truth value.
    #[getter]
    fn get_fast(&self) -> bool {
        self.fast
    }

    #[setter]
    fn set_fast(&mut self, value: &Bound<'_, PyAny>) -> PyResult<()> {
        self.fast = value.is_truthy()?;
        Ok(())
    }

    /// Write the pickled representation of `obj` to the file.
    fn dump(slf: &Bound<'_, Self>, obj: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let (write, proto, fix_imports, fast, buffer_callback, memo, cloud) = {
            let mut me = slf.try_borrow_mut().map_err(|_| busy_error())?;
            let Some(write) = me.write.as_ref().map(|w| w.clone_ref(py)) else {
                let name = slf.get_type().name()?;
                return Err(pickling_error(py, format!("Pickler.__init__() was not called by {name}.__init__()")));
            };
            let cloud = (
                me.globals_ref.clone_ref(py),
                me.pickle_by_reference.as_ref().map(|c| c.clone_ref(py)),
                me.reconstructor_module.clone(),
                me.cloud_layer,
                me.by_source,
                me.target_python,
                me.receiver.as_ref().map(|r| r.clone_ref(py)),
            );
            if me.dumping {
                return Err(busy_error());
            }
            let memo = me.memo.take().ok_or_else(busy_error)?;
            me.dumping = true;
            (
                write,
                me.proto,
                me.fix_imports,
                me.fast,
                me.buffer_callback.as_ref().map(|b| b.clone_ref(py)),
                memo,
                cloud,
            )
        };
        // From here every way out hands the memo back and ends the dump.
        let give_back = |memo: Memo| {
            let mut me = slf.borrow_mut();
            me.memo = Some(memo);
            me.dumping = false;
        };
        let cloud = cloud
            .3
            .then(|| {
                let receiver = cloud.6.map(|r| r.into_bound(py));
                Cloud::new(
                    py,
                    &cloud.2,
                    cloud.0.into_bound(py),
                    cloud.1.map(|c| c.into_bound(py)),
                    cloud.4,
                    cloud.5,
                    receiver.as_ref(),
                )
            })
            .transpose();
        let prepared = cloud.and_then(|cloud| {
            let receiver = cloud.as_ref().and_then(|c| c.receiver.as_ref());
            let session = receiver.map(|r| r.size_check());
            let buffer_callback = buffer_callback.map(|b| b.into_bound(py));
            let buffer_callback = match (receiver, buffer_callback) {
                (Some(r), Some(cb)) => Some(r.count_buffers(cb)?),
                (_, cb) => cb,
            };
            let hooks = instance_hooks(slf, buffer_callback)?;
            Ok((cloud, session, hooks))
        });
        let (cloud, session, hooks) = match prepared {
            Ok(p) => p,
            Err(e) => {
                give_back(memo);
                return Err(e);
            }
        };
        let run = Run { py, proto, fix_imports, fast, write: write.into_bound(py), session, hooks };
        let (memo, outcome) = match cloud {
            Some(cloud) => run.dump(obj, memo, Box::new(cloud)),
            None => run.dump(obj, memo, Plain),
        };
        give_back(memo);
        outcome
    }

    /// `_pickle.Pickler.persistent_id` of CPython 3.13+: None for every object, so that a
    /// subclass can call `super().persistent_id(obj)`. Not called by the walk unless replaced.
    #[cfg(Py_3_13)]
    fn persistent_id(&self, obj: &Bound<'_, PyAny>) -> Option<()> {
        let _ = obj;
        None
    }

    /// Forget what was pickled so far: the next dump repeats objects instead of referencing them.
    fn clear_memo(&mut self) {
        if let Some(m) = self.memo.as_mut() {
            m.clear();
        }
    }

    /// The memo as `{id(obj): (index, obj)}` (a copy).
    #[getter]
    fn get_memo<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        if let Some(m) = &self.memo {
            for (addr, idx, obj) in m.entries(py) {
                d.set_item(addr, (idx, obj))?;
            }
        }
        Ok(d)
    }

    #[setter]
    fn set_memo(&mut self, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = value.py();
        if self.dumping {
            return Err(busy_error());
        }
        let dict = match value.cast::<PyDict>() {
            Ok(d) => d.clone(),
            Err(_) => match lookup_attr(value, intern!(py, "copy"))? {
                Some(copy) => copy.call0()?.cast_into::<PyDict>().map_err(PyErr::from)?,
                None => {
                    return Err(PyTypeError::new_err(format!(
                        "'memo' attribute must be a PicklerMemoProxy object or dict, not {}",
                        crate::errors::type_name(value)
                    )))
                }
            },
        };
        let mut memo = Memo::default();
        for (_, v) in dict.iter() {
            let t = v
                .cast::<PyTuple>()
                .ok()
                .filter(|t| t.len() == 2)
                .ok_or_else(|| PyTypeError::new_err("'memo' values must be 2-item tuples"))?;
            let idx: usize = t.get_item(0)?.extract()?;
            memo.insert_at(&t.get_item(1)?, idx);
        }
        self.memo = Some(memo);
        Ok(())
    }

    /// Protocol 1 and above are binary.
    #[getter]
    fn bin(&self) -> bool {
        self.proto >= 1
    }

    #[getter]
    fn protocol(&self) -> u8 {
        self.proto
    }

    fn __traverse__(&self, visit: pyo3::PyVisit<'_>) -> Result<(), pyo3::PyTraverseError> {
        if !self.constructed {
            // Zeroed memory of an instance still being made (see `constructed`): nothing to
            // visit yet, and `globals_ref` is null.
            return Ok(());
        }
        if let Some(w) = &self.write {
            visit.call(w)?;
        }
        if let Some(b) = &self.buffer_callback {
            visit.call(b)?;
        }
        if let Some(m) = &self.memo {
            m.traverse(&visit)?;
        }
        visit.call(&self.globals_ref)?;
        if let Some(c) = &self.pickle_by_reference {
            visit.call(c)?;
        }
        if let Some(r) = &self.receiver {
            visit.call(r)?;
        }
        Ok(())
    }

    fn __clear__(&mut self) {
        self.write = None;
        self.buffer_callback = None;
        self.pickle_by_reference = None;
        self.receiver = None;
        if let Some(m) = self.memo.as_mut() {
            m.clear();
        }
    }
}

impl PicklerBase {
    fn make(
        cls: &Bound<'_, PyType>,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
        cloud_layer: bool,
    ) -> PyResult<Self> {
        let mut me = PicklerBase {
            write: None,
            proto: DEFAULT_PROTOCOL,
            fix_imports: true,
            fast: false,
            buffer_callback: None,
            memo: Some(Memo::default()),
            dumping: false,
            globals_ref: PyDict::new(cls.py()).unbind(),
            pickle_by_reference: None,
            reconstructor_module: DEFAULT_RECONSTRUCTOR_MODULE.to_owned(),
            cloud_layer,
            by_source: BySource::Off,
            target_python: None,
            receiver: None,
            constructed: true,
        };
        // A subclass may have an `__init__` of another signature: it calls ours through
        // super().__init__(); only the class itself is initialised from the constructor call.
        let py = cls.py();
        if cls.is(py.get_type::<Pickler>()) || cls.is(py.get_type::<PicklerBase>()) {
            me.init_from(args, kwargs)?;
        }
        Ok(me)
    }

    fn init_from(&mut self, args: &Bound<'_, PyTuple>, kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<()> {
        let py = args.py();
        let mut file: Option<Bound<'_, PyAny>> = None;
        let mut protocol: Option<Bound<'_, PyAny>> = None;
        let mut fix_imports = true;
        let mut buffer_callback: Option<Bound<'_, PyAny>> = None;
        // `_pickle.Pickler(file, protocol=None, fix_imports=True, buffer_callback=None)`: the four
        // may be positional; our own options are keyword-only.
        if args.len() > 4 {
            return Err(PyTypeError::new_err(format!("Pickler() takes at most 4 arguments ({} given)", args.len())));
        }
        if let Ok(f) = args.get_item(0) {
            file = Some(f);
        }
        if let Ok(p) = args.get_item(1) {
            protocol = Some(p);
        }
        if let Ok(fi) = args.get_item(2) {
            fix_imports = fi.is_truthy()?;
        }
        if let Ok(b) = args.get_item(3) {
            buffer_callback = Some(b).filter(|b| !b.is_none());
        }
        const POSITIONAL: [&str; 4] = ["file", "protocol", "fix_imports", "buffer_callback"];
        if let Some(kw) = kwargs {
            for (k, v) in kw.iter() {
                let key: String = k.extract()?;
                if let Some(pos) = POSITIONAL.iter().position(|n| *n == key) {
                    if pos < args.len() {
                        return Err(PyTypeError::new_err(format!(
                            "argument for Pickler() given by name ('{key}') and position ({})",
                            pos + 1
                        )));
                    }
                }
                match key.as_str() {
                    "file" => file = Some(v),
                    "protocol" => protocol = Some(v),
                    "fix_imports" => fix_imports = v.is_truthy()?,
                    "buffer_callback" => buffer_callback = Some(v).filter(|b| !b.is_none()),
                    "by_source" => self.by_source = BySource::parse(Some(&v))?,
                    "target_python" => self.target_python = crate::cloud::options::parse_target_python(Some(&v))?,
                    "pickle_by_reference" => {
                        self.pickle_by_reference = Some(v).filter(|c| !c.is_none()).map(Bound::unbind)
                    }
                    "reconstructor_module" => self.reconstructor_module = v.extract()?,
                    "receiver" => self.receiver = Some(v).filter(|r| !r.is_none()).map(Bound::unbind),
                    other => {
                        return Err(PyTypeError::new_err(format!(
                            "Pickler() got an unexpected keyword argument '{other}'"
                        )))
                    }
                }
            }
        }
        let Some(file) = file else {
            return Err(PyTypeError::new_err("Pickler() missing required argument 'file' (pos 1)"));
        };
        let proto = parse_protocol(protocol.as_ref())?;
        check_buffer_callback(proto, &buffer_callback)?;
        let write = lookup_attr(&file, intern!(py, "write"))?
            .ok_or_else(|| PyTypeError::new_err("file must have a 'write' attribute"))?;
        self.write = Some(write.unbind());
        self.proto = proto;
        self.fix_imports = fix_imports;
        self.buffer_callback = buffer_callback.map(Bound::unbind);
        self.memo = Some(Memo::default());
        Ok(())
    }
}

#[cold]
fn busy_error() -> PyErr {
    PyRuntimeError::new_err(
        "Pickler.dump() is already running on this pickler (called again from inside a reducer, or from another thread); use a separate Pickler",
    )
}

/// Whether `bound`, found as attribute `name` of the pickler `slf`, is `T`'s own native method
/// bound to `slf` (neither replaced in a subclass nor set on the instance).
fn is_own_method<T: pyo3::PyTypeInfo>(
    slf: &Bound<'_, PicklerBase>,
    bound: &Bound<'_, PyAny>,
    name: &Bound<'_, PyString>,
) -> PyResult<bool> {
    let py = slf.py();
    let ours = py.get_type::<T>().getattr(name)?;
    let from_class = lookup_attr(slf.get_type().as_any(), name)?;
    // SAFETY: PyCFunction_Check only reads the type; PyCFunction_GetSelf returns a borrowed
    // pointer we only compare.
    let bound_native = unsafe {
        pyo3::ffi::PyCFunction_Check(bound.as_ptr()) != 0
            && pyo3::ffi::PyCFunction_GetSelf(bound.as_ptr()) == slf.as_ptr()
    };
    Ok(from_class.is_some_and(|c| c.is(&ours)) && bound_native)
}

/// The hooks a Pickler instance (or its Python subclass) brings: looked up once per dump, as
/// `_pickle.c` looks up `reducer_override` once per dump.
fn instance_hooks<'py>(
    slf: &Bound<'py, PicklerBase>,
    buffer_callback: Option<Bound<'py, PyAny>>,
) -> PyResult<Hooks<'py>> {
    let py = slf.py();
    let obj = slf.as_any();
    let persistent_id = match lookup_attr(obj, intern!(py, "persistent_id"))? {
        // 3.13+: our own `persistent_id` (always None), bound to this pickler, is no hook.
        Some(pid) if cfg!(Py_3_13) && is_own_method::<PicklerBase>(slf, &pid, intern!(py, "persistent_id"))? => None,
        other => other,
    };
    let dispatch_table = lookup_attr(obj, intern!(py, "dispatch_table"))?;
    // Our own reducer_override is the native cloudpickle layer: call it only when a subclass
    // or the instance replaced it.
    let reducer_override = match lookup_attr(obj, intern!(py, "reducer_override"))? {
        Some(ro) if is_own_method::<Pickler>(slf, &ro, intern!(py, "reducer_override"))? => None,
        other => other,
    };
    Ok(Hooks { persistent_id, reducer_override, dispatch_table, buffer_callback })
}

/// cloudpickle's pickler: the core plus the by-value layer. `CloudPickler is Pickler`.
#[pyclass(extends = PicklerBase, subclass, module = "cloudpickle_rs._native", name = "Pickler")]
pub struct Pickler;

#[pymethods]
impl Pickler {
    #[new]
    #[classmethod]
    #[pyo3(signature = (*args, **kwargs))]
    fn new(
        cls: &Bound<'_, PyType>,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<PyClassInitializer<Self>> {
        Ok(PyClassInitializer::from(PicklerBase::make(cls, args, kwargs, true)?).add_subclass(Pickler))
    }

    /// cloudpickle's hook for classes and functions, for subclasses that override
    /// `reducer_override` and call `super().reducer_override(obj)`: the reduce tuple upstream
    /// returns, or NotImplemented. (When nobody overrides it, the walk calls it natively.)
    fn reducer_override<'py>(slf: &Bound<'py, Self>, obj: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let slf = slf.as_super();
        let (proto, globals_ref, pbr, module) = {
            let me = slf.try_borrow().map_err(|_| busy_error())?;
            (
                me.proto,
                me.globals_ref.clone_ref(py),
                me.pickle_by_reference.as_ref().map(|c| c.clone_ref(py)),
                me.reconstructor_module.clone(),
            )
        };
        // Upstream's reduce tuples carry code objects: this hook is bytecode-only.
        let cloud = Cloud::new(
            py,
            &module,
            globals_ref.into_bound(py),
            pbr.map(|c| c.into_bound(py)),
            BySource::Off,
            None,
            None,
        )?;
        let mut d = Dumper::new(py, proto, true, None, Hooks::default(), Memo::default(), Box::new(cloud))?;
        Ok(d.reducer_override_value(obj)?.unwrap_or_else(|| py.NotImplemented().into_bound(py)))
    }
}

/// One `Pickler.dump` call once its options are read: the same steps for either layer.
struct Run<'py> {
    py: Python<'py>,
    proto: u8,
    fix_imports: bool,
    fast: bool,
    write: Bound<'py, PyAny>,
    /// With a receiver: its size check (the stream then goes to memory and is checked whole
    /// before a byte is written).
    session: Option<Option<crate::cloud::receiver::SizeCheck<'py>>>,
    hooks: Hooks<'py>,
}

impl<'py> Run<'py> {
    /// Dump `obj` with `memo` (the Pickler's, across dumps); the memo comes back whatever
    /// happens. With a receiver, a dump that fails or is refused writes nothing and the memo
    /// forgets what it added, or the next dump would refer to values the file never got.
    fn dump<L: Layer<'py>>(self, obj: &Bound<'py, PyAny>, memo: Memo, layer: L) -> (Memo, PyResult<()>) {
        let Run { py, proto, fix_imports, fast, write, session, hooks } = self;
        let sink = if session.is_some() { None } else { Some(write.clone()) };
        // The user's memo goes in once the Dumper exists: a failed construction gives it back
        // unchanged.
        let mut dumper = match Dumper::new(py, proto, fix_imports, sink, hooks, Memo::default(), layer) {
            Ok(d) => d,
            Err(e) => return (memo, Err(e)),
        };
        dumper.memo = memo;
        dumper.fast = fast;
        let mark = dumper.memo_mark();
        let result = dumper.dump(obj);
        let (mut memo, bytes) = dumper.into_memo_and_bytes();
        let outcome = result.and_then(|()| match &session {
            Some(size_check) => {
                let bytes = bytes?;
                if let Some(s) = size_check {
                    s.check(obj, bytes.as_bytes().len())?;
                }
                write.call1((bytes,)).map(drop)
            }
            None => Ok(()),
        });
        if outcome.is_err() && session.is_some() {
            memo.rollback(py, mark);
        }
        (memo, outcome)
    }
}
