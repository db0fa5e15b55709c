//! `receiver=`: what the other side can import, refuses or accepts, checked during the walk.
//!
//! The description itself is Python (`cloudpickle_rs.Receiver`, in `_receiver.py`): per dump
//! the walk asks it for a session object and consults it at four places only, so a dump without
//! a receiver pays one branch:
//! - a function, class or module deciding by value or by reference: `session.by_reference`
//!   takes the place of the `pickle_by_reference` callback (it wraps the user's, if given).
//!   Functions, the bulk of shipped code, are decided by the walk when there is no user
//!   callback (`session.module_verdict` once per module name, `session.scan` only for a
//!   function [`ReceiverSession::function_suspect`] flags): the receiver's cost stays a few
//!   lookups per function, not a Python call;
//! - an object whose type (or a base) is in `session.catalogue` (a `{type: entry}` dict of
//!   things that cannot work on another machine): `session.refuse(obj)`, which raises, or in
//!   `check()`'s collecting mode returns what to write instead. The verdict is cached per type
//!   for the dump: one address lookup per object;
//! - every global written by reference: `session.check_global(obj, module, name)`;
//! - the end of the dump: `session.check_size(obj, nbytes)`, and on an error
//!   `session.finish_error(exc)` (which puts the object's path into a refusal's message).

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{
    PyBool, PyCFunction, PyDict, PyFloat, PyFrozenSet, PyFunction, PyInt, PyModule, PyString, PyTuple, PyType,
};

use crate::addr::AddrMap;

pub(crate) struct ReceiverSession<'py> {
    pub session: Bound<'py, PyAny>,
    catalogue: Bound<'py, PyDict>,
    /// Heap type address -> whether the type or one of its bases is in the catalogue, for this
    /// dump (a heap type may be freed after it and its address reused).
    verdicts: AddrMap<bool>,
    /// Direct-mapped memo in front of `verdicts` and the static cache: (type address, verdict).
    recent: [(usize, bool); RECENT_SLOTS],
    /// What outlives the dump (static type verdicts, module verdicts, passed globals' top-level
    /// modules): taken from the receiver's [`ReceiverCore`] and given back when the dump ends.
    caches: Caches,
    core: Option<Bound<'py, ReceiverCore>>,
    /// No user callback and not `check()`: functions are decided here (see
    /// `Cloud::function_by_reference`), the session consulted only for what it may refuse.
    pub fast: bool,
    /// The receiver's denied top-level modules and builtins (frozensets of str).
    deny_modules: Bound<'py, PyFrozenSet>,
    deny_builtins: Bound<'py, PyFrozenSet>,
    /// `__module__` string object or module object -> whether its top-level module is denied,
    /// for this dump.
    module_strings: RefCell<AddrMap<bool>>,
    /// Whether `check_size` has anything to do (a `max_bytes`, or `check()` recording).
    pub needs_size: bool,
}

/// Slots of [`ReceiverSession::prohibited`]'s direct-mapped memo.
const RECENT_SLOTS: usize = 8;

/// Verdicts that depend on the receiver and on what this process has imported only, so one
/// computed in a dump holds for the next ones while `sys.modules` keeps its size (the same
/// generation the catalogue is cached under).
#[derive(Default)]
struct Caches {
    /// Static type address -> catalogue verdict (static types are never freed).
    static_types: AddrMap<bool>,
    /// Module name -> the receiver's verdict on functions of that module.
    modules: RefCell<HashMap<String, Verdict>>,
    /// Top-level modules whose globals `check_global` passed.
    global_tops: RefCell<HashSet<String>>,
}

impl Caches {
    /// Past this many entries a cache starts again (a program that makes modules in a loop).
    const LIMIT: usize = 4096;

    fn trimmed(mut self) -> Self {
        if self.static_types.len() > Self::LIMIT {
            self.static_types.clear();
        }
        if self.modules.get_mut().len() > Self::LIMIT {
            self.modules.get_mut().clear();
        }
        if self.global_tops.get_mut().len() > Self::LIMIT {
            self.global_tops.get_mut().clear();
        }
        self
    }
}

/// What a receiver's plain dumps (no user callback, no size budget, not `check()`) share: its
/// reusable session and the parts of it the walk reads, fetched from Python once per
/// generation of `sys.modules` instead of once per dump, and the verdict caches. Stored on the
/// `Receiver` as `_cprs_core`.
#[pyclass(frozen, module = "cloudpickle_rs._native", name = "_ReceiverCore")]
pub(crate) struct ReceiverCore {
    session: Py<PyAny>,
    catalogue: Py<PyDict>,
    by_reference: Py<PyAny>,
    target_python: crate::cloud::options::TargetPython,
    deny_modules: Py<PyFrozenSet>,
    deny_builtins: Py<PyFrozenSet>,
    /// `len(sys.modules)` when it was built.
    generation: usize,
    /// Taken by a dump for its duration (a second dump running at the same time on another
    /// thread starts with empty caches).
    caches: Mutex<Option<Caches>>,
}

impl Drop for ReceiverSession<'_> {
    fn drop(&mut self) {
        if let Some(core) = &self.core {
            let caches = std::mem::take(&mut self.caches).trimmed();
            if let Ok(mut slot) = core.get().caches.lock() {
                *slot = Some(caches);
            }
        }
    }
}

/// The end-of-dump size check of a session (see [`ReceiverSession::size_check`]).
pub(crate) struct SizeCheck<'py> {
    session: Bound<'py, PyAny>,
}

impl<'py> SizeCheck<'py> {
    /// `session.check_size(obj, nbytes)`: raises PayloadTooLargeError over the budget.
    pub(crate) fn check(&self, obj: &Bound<'py, PyAny>, nbytes: usize) -> PyResult<()> {
        self.session.call_method1(intern!(obj.py(), "check_size"), (obj, nbytes)).map(drop)
    }
}

/// What the receiver makes of a function its module and qualname find on this side.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Verdict {
    /// The receiver imports the module: by reference.
    Reference,
    /// The receiver lacks it but it is the user's own code: by value.
    Value,
    /// An installed library the receiver lacks (or denies): refused.
    Refuse,
}

/// What [`ReceiverSession::begin`] hands to the cloud layer besides the session.
pub(crate) struct Begun<'py> {
    pub session: ReceiverSession<'py>,
    pub by_reference: Bound<'py, PyAny>,
    /// The receiver's Python (parsed as `target_python` is).
    pub target_python: crate::cloud::options::TargetPython,
}

impl<'py> ReceiverSession<'py> {
    /// The session of one dump: from the receiver's [`ReceiverCore`] when the dump can share
    /// it (no user callback; the core is made on first use and when `sys.modules` changed
    /// size), else `receiver._session(user_callback)` read afresh.
    pub(crate) fn begin(
        receiver: &Bound<'py, PyAny>,
        user_callback: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Begun<'py>> {
        let py = receiver.py();
        let generation = crate::lookup::sys_modules(py)?.len()?;
        if user_callback.is_none() {
            if let Some(core) = crate::lookup::lookup_attr(receiver, intern!(py, "_cprs_core"))? {
                if let Ok(core) = core.cast_into::<ReceiverCore>() {
                    if core.get().generation == generation {
                        return Ok(Self::from_core(core));
                    }
                }
            }
        }
        let cb = match user_callback {
            Some(c) => c.clone(),
            None => py.None().into_bound(py),
        };
        let session = receiver.call_method1(intern!(py, "_session"), (cb,))?;
        let catalogue = session.getattr(intern!(py, "catalogue"))?.cast_into::<PyDict>()?;
        let by_reference = session.getattr(intern!(py, "by_reference"))?;
        let target_python =
            crate::cloud::options::parse_target_python(Some(&session.getattr(intern!(py, "target_python"))?))?;
        let fast = session.getattr(intern!(py, "fast_functions"))?.is_truthy()?;
        let deny_modules = session.getattr(intern!(py, "deny_modules"))?.cast_into::<PyFrozenSet>()?;
        let deny_builtins = session.getattr(intern!(py, "deny_builtins"))?.cast_into::<PyFrozenSet>()?;
        let needs_size = session.getattr(intern!(py, "needs_size"))?.is_truthy()?;
        // No user callback, not check(), no size budget: the session keeps no per-dump state
        // (`Receiver._session` hands out one shared session), so the walk keeps what it read.
        if fast && !needs_size {
            let core = ReceiverCore {
                session: session.clone().unbind(),
                catalogue: catalogue.clone().unbind(),
                by_reference: by_reference.clone().unbind(),
                target_python,
                deny_modules: deny_modules.clone().unbind(),
                deny_builtins: deny_builtins.clone().unbind(),
                generation,
                caches: Mutex::new(Some(Caches::default())),
            };
            let core = Bound::new(py, core)?;
            receiver.setattr(intern!(py, "_cprs_core"), &core)?;
            return Ok(Self::from_core(core));
        }
        Ok(Begun {
            session: ReceiverSession {
                session,
                catalogue,
                verdicts: AddrMap::default(),
                recent: [(0, false); RECENT_SLOTS],
                caches: Caches::default(),
                core: None,
                fast,
                deny_modules,
                deny_builtins,
                module_strings: RefCell::new(AddrMap::default()),
                needs_size,
            },
            by_reference,
            target_python,
        })
    }

    fn from_core(core: Bound<'py, ReceiverCore>) -> Begun<'py> {
        let py = core.py();
        let c = core.get();
        let caches = c.caches.lock().ok().and_then(|mut slot| slot.take()).unwrap_or_default();
        Begun {
            session: ReceiverSession {
                session: c.session.bind(py).clone(),
                catalogue: c.catalogue.bind(py).clone(),
                verdicts: AddrMap::default(),
                recent: [(0, false); RECENT_SLOTS],
                caches,
                fast: true,
                deny_modules: c.deny_modules.bind(py).clone(),
                deny_builtins: c.deny_builtins.bind(py).clone(),
                module_strings: RefCell::new(AddrMap::default()),
                needs_size: false,
                core: Some(core.clone()),
            },
            by_reference: c.by_reference.bind(py).clone(),
            target_python: c.target_python,
        }
    }

    /// Whether instances of `tp` are refused (the type or a base is in the catalogue).
    pub(crate) fn prohibited(&mut self, tp: &Bound<'py, PyType>) -> PyResult<bool> {
        let key = tp.as_ptr() as usize;
        // A few types make up most of a stream (function, code, cell, the classes of its
        // instances): the last type seen per slot answers without hashing.
        let slot = (key >> 4) % RECENT_SLOTS;
        if self.recent[slot].0 == key {
            return Ok(self.recent[slot].1);
        }
        let heap = crate::cloud::is_heap_type(tp);
        let cached = if heap { self.verdicts.get(&key) } else { self.caches.static_types.get(&key) };
        if let Some(&v) = cached {
            self.recent[slot] = (key, v);
            return Ok(v);
        }
        let mut hit = false;
        if !self.catalogue.is_empty() {
            let mro = tp.getattr(intern!(tp.py(), "__mro__"))?;
            for base in mro.cast::<PyTuple>()?.iter() {
                if self.catalogue.contains(&base)? {
                    hit = true;
                    break;
                }
            }
        }
        // A heap type outlives the dump's use of the address: the object being saved holds it.
        self.recent[slot] = (key, hit);
        if heap {
            self.verdicts.insert(key, hit);
        } else {
            self.caches.static_types.insert(key, hit);
        }
        Ok(hit)
    }

    /// `session.refuse(obj)`: raises, or returns the object to write in its place.
    #[cold]
    pub(crate) fn refuse(&self, obj: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        self.session.call_method1(intern!(obj.py(), "refuse"), (obj,))
    }

    /// `session.check_global(obj, module, name)` for a global written by reference. Its verdict
    /// depends on the top-level module only, so outside `check()` it is asked once per
    /// top-level module and dump; builtins and the stream's own reconstructors (`module` is
    /// `reconstructors`) are not the user's references and are not asked about.
    pub(crate) fn check_global(
        &self,
        obj: &Bound<'py, PyAny>,
        module: &Bound<'py, PyString>,
        name: &Bound<'py, PyString>,
        reconstructors: &str,
    ) -> PyResult<()> {
        if self.fast {
            let m = module.to_cow()?;
            if m == reconstructors {
                return Ok(());
            }
            let top = m.as_bytes().iter().position(|&b| b == b'.').map_or(&*m, |i| &m[..i]);
            if top == "builtins" || self.caches.global_tops.borrow().contains(top) {
                return Ok(());
            }
            self.session.call_method1(intern!(obj.py(), "check_global"), (obj, module, name))?;
            self.caches.global_tops.borrow_mut().insert(top.to_owned());
            return Ok(());
        }
        self.session.call_method1(intern!(obj.py(), "check_global"), (obj, module, name)).map(drop)
    }

    /// The size check to run on the finished stream, when there is one to run.
    pub(crate) fn size_check(&self) -> Option<SizeCheck<'py>> {
        self.needs_size.then(|| SizeCheck { session: self.session.clone() })
    }

    /// `session.module_verdict(module)`, once per module name and dump.
    pub(crate) fn module_verdict(&self, module: &str) -> PyResult<Verdict> {
        if let Some(&v) = self.caches.modules.borrow().get(module) {
            return Ok(v);
        }
        let py = self.session.py();
        let code: u8 = self.session.call_method1(intern!(py, "module_verdict"), (module,))?.extract()?;
        let v = match code {
            0 => Verdict::Reference,
            1 => Verdict::Value,
            _ => Verdict::Refuse,
        };
        self.caches.modules.borrow_mut().insert(module.to_owned(), v);
        Ok(v)
    }

    /// `session.by_reference(obj)`: the session's own decision (and refusal).
    #[cold]
    pub(crate) fn session_by_reference(&self, obj: &Bound<'py, PyAny>) -> PyResult<bool> {
        self.session.call_method1(intern!(obj.py(), "by_reference"), (obj,))?.is_truthy()
    }

    /// `session.scan(obj)`: refuses what a by-value function uses that the receiver denies or
    /// lacks (raises), with the message naming function, name and module.
    #[cold]
    pub(crate) fn scan(&self, obj: &Bound<'py, PyAny>) -> PyResult<()> {
        self.session.call_method1(intern!(obj.py(), "scan"), (obj,)).map(drop)
    }

    /// Whether a function going by value may use something the receiver denies or lacks: it
    /// imports a module, or a global, builtin, closure value or default it reads belongs to a
    /// denied module or is a denied builtin. A superset of what `scan` refuses, checked on the
    /// values the walk has already read for the function's state (`imports`: the modules its code
    /// imports, `names`: its global names,
    /// `values`: the globals found and the closure contents), without a Python call; only then
    /// does the session look.
    pub(crate) fn function_suspect(
        &self,
        it: &crate::cloud::Interp,
        func: &Bound<'py, PyAny>,
        imports: &Bound<'py, PyTuple>,
        names: &Bound<'py, PyTuple>,
        f_globals: &Bound<'py, PyDict>,
        values: &[Bound<'py, PyAny>],
    ) -> PyResult<bool> {
        if !imports.is_empty() {
            return Ok(true);
        }
        if self.deny_modules.is_empty() && self.deny_builtins.is_empty() {
            return Ok(false);
        }
        for name in names.iter() {
            if self.deny_builtins.contains(&name)? && !f_globals.contains(&name)? {
                return Ok(true);
            }
        }
        for v in values {
            if self.value_suspect(it, v)? {
                return Ok(true);
            }
        }
        // `func` is an exact function: the caller writes its state.
        let defaults = crate::cloud::function::function_slot(func, pyo3::ffi::PyFunction_GetDefaults);
        if let Ok(t) = defaults.cast::<PyTuple>() {
            for v in t.iter() {
                if self.value_suspect(it, &v)? {
                    return Ok(true);
                }
            }
        }
        let kwdefaults = crate::cloud::function::function_slot(func, pyo3::ffi::PyFunction_GetKwDefaults);
        if let Ok(d) = kwdefaults.cast::<PyDict>() {
            for (_, v) in d.iter() {
                if self.value_suspect(it, &v)? {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    /// A module of a denied top-level name, or a function, builtin, method or class defined in
    /// one, or a denied builtin.
    fn value_suspect(&self, it: &crate::cloud::Interp, v: &Bound<'py, PyAny>) -> PyResult<bool> {
        let py = v.py();
        // The common globals and defaults (constants) first: one type comparison each.
        if v.is_none()
            || v.is_exact_instance_of::<PyInt>()
            || v.is_exact_instance_of::<PyString>()
            || v.is_exact_instance_of::<PyFloat>()
            || v.is_exact_instance_of::<PyBool>()
            || v.is_exact_instance_of::<PyTuple>()
        {
            return Ok(false);
        }
        let denied_top = |name: &str| self.deny_modules.contains(name.split('.').next().unwrap_or(name));
        if let Ok(m) = v.cast::<PyModule>() {
            // A module global: one verdict per module object and dump (the globals hold it).
            let key = m.as_ptr() as usize;
            if let Some(&hit) = self.module_strings.borrow().get(&key) {
                return Ok(hit);
            }
            let verdict = denied_top(&m.name()?.to_cow()?)?;
            self.module_strings.borrow_mut().insert(key, verdict);
            return Ok(verdict);
        }
        let callable_kind = v.cast::<PyFunction>().is_ok()
            || v.cast::<PyCFunction>().is_ok()
            || v.cast::<PyType>().is_ok()
            || v.get_type().is(it.method_type.bind(py));
        if !callable_kind {
            return Ok(false);
        }
        if v.cast::<PyCFunction>().is_ok() {
            if let Some(n) = crate::lookup::lookup_attr(v, intern!(py, "__name__"))? {
                if self.deny_builtins.contains(&n)? {
                    return Ok(true);
                }
            }
        }
        let module = match v.cast::<PyFunction>() {
            Ok(_) => Some(crate::cloud::function::function_slot(v, pyo3::ffi::PyFunction_GetModule)),
            Err(_) => crate::lookup::lookup_attr(v, intern!(py, "__module__"))?,
        };
        let Some(module) = module else { return Ok(false) };
        let Ok(module) = module.cast::<PyString>() else { return Ok(false) };
        // Functions of one module share its `__module__` string: one verdict per string object
        // (alive for the dump: the functions it belongs to are held by the walk).
        let key = module.as_ptr() as usize;
        if let Some(&hit) = self.module_strings.borrow().get(&key) {
            return Ok(hit);
        }
        let verdict = denied_top(&module.to_cow()?)?;
        self.module_strings.borrow_mut().insert(key, verdict);
        Ok(verdict)
    }

    /// A buffer callback that counts out-of-band bytes for the size budget (the caller's own
    /// when there is no budget).
    pub(crate) fn count_buffers(&self, callback: Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        if !self.needs_size {
            return Ok(callback);
        }
        self.session.call_method1(intern!(callback.py(), "count_buffers"), (callback,))
    }

    /// Let the session word its refusal with the path the walk recorded; never fails.
    #[cold]
    pub(crate) fn finish_error(&self, err: &PyErr) {
        let py = self.session.py();
        let _ = self.session.call_method1(intern!(py, "finish_error"), (err.value(py),));
    }
}
