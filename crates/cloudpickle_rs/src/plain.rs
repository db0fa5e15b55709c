//! Instances of plain classes without the `__reduce_ex__` call.
//!
//! For an instance of a class that changes nothing of pickling (no `__reduce__`,
//! `__reduce_ex__`, `__getstate__`, `__getnewargs__`, `__slots__` or C base of its own),
//! `object.__reduce_ex__(proto >= 2)` returns `(copyreg.__newobj__, (cls,), obj.__dict__ or
//! None, None, None)`: a bound method, an import of copyreg, three tuples and two attribute
//! lookups per object, which was half the time of dumping a list of such instances. The walk
//! writes what `save_reduce` makes of that tuple directly (`cls`, `EMPTY_TUPLE`, `NEWOBJ`, the
//! memo, the state and `BUILD`): the same bytes, checked against the C pickler in the tests.
//!
//! Whether a class is plain is decided once per class and version tag: CPython gives a class a
//! new `tp_version_tag` whenever it or one of its bases is modified, and never gives a tag twice,
//! so a cached verdict cannot outlive the definition it was made for.

use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;

extern "C" {
    /// The attribute lookup along a type's MRO, without descriptors or the metaclass: what
    /// `object.__reduce_ex__` and `copyreg` see. Exported by CPython (`cpython/object.h`),
    /// left out of pyo3's FFI as private.
    fn _PyType_Lookup(tp: *mut ffi::PyTypeObject, name: *mut ffi::PyObject) -> *mut ffi::PyObject;
}

/// `Py_TPFLAGS_MANAGED_DICT` (3.11+): the `__dict__` pointer lives before the object, outside
/// `tp_basicsize`. The bit is unused before 3.11, where no class has it set.
const MANAGED_DICT: std::os::raw::c_ulong = 1 << 4;

/// Verdicts of one dump, by type address.
#[derive(Default)]
pub(crate) struct PlainTypes {
    verdicts: Vec<(usize, std::os::raw::c_uint, bool)>,
}

/// Verdicts kept per dump; a dump meeting more classes than this decides the others each time.
const MAX_VERDICTS: usize = 64;

impl PlainTypes {
    /// Whether instances of `tp` pickle (at protocol 2 and above) exactly as
    /// `(copyreg.__newobj__, (tp,), state)` with state their `__dict__`, as far as the class
    /// decides; [`instance_state`] checks the instance's own part.
    #[inline]
    pub(crate) fn is_plain(&mut self, py: Python<'_>, tp: *mut ffi::PyTypeObject) -> bool {
        // SAFETY: `tp` is the live type of an object the walk holds.
        let (flags, tag) = unsafe { (ffi::PyType_GetFlags(tp), (*tp).tp_version_tag) };
        let tagged = flags & ffi::Py_TPFLAGS_VALID_VERSION_TAG != 0 && tag != 0;
        if tagged {
            if let Some(&(_, _, v)) = self.verdicts.iter().find(|(a, t, _)| *a == tp as usize && *t == tag) {
                return v;
            }
        }
        let verdict = decide(py, tp);
        // SAFETY: as above; the lookups of `decide` may have given the type its tag.
        let (flags, tag) = unsafe { (ffi::PyType_GetFlags(tp), (*tp).tp_version_tag) };
        if flags & ffi::Py_TPFLAGS_VALID_VERSION_TAG != 0 && tag != 0 && self.verdicts.len() < MAX_VERDICTS {
            self.verdicts.retain(|(a, _, _)| *a != tp as usize);
            self.verdicts.push((tp as usize, tag, verdict));
        }
        verdict
    }
}

fn decide(py: Python<'_>, tp: *mut ffi::PyTypeObject) -> bool {
    // SAFETY: `tp` is a live type object; every pointer read below is a field of it or a
    // borrowed reference it holds (the MRO tuple and the dicts of its classes), and nothing
    // here runs Python code that could drop them (dict lookups with exact str keys).
    unsafe {
        let object = std::ptr::addr_of_mut!(ffi::PyBaseObject_Type);
        let flags = ffi::PyType_GetFlags(tp);
        if flags & ffi::Py_TPFLAGS_HEAPTYPE == 0
            || (*tp).tp_itemsize != 0
            || (*tp).tp_new.is_none()
            || ffi::Py_TYPE(tp.cast()) != std::ptr::addr_of_mut!(ffi::PyType_Type)
            || (*tp).tp_getattro.map(|f| f as usize) != Some(ffi::PyObject_GenericGetAttr as *const () as usize)
        {
            return false;
        }
        // Every class of the MRO but `object` is a Python class without `__slots__`: the
        // instance layout is object's plus `__dict__` and `__weakref__`.
        let mro = (*tp).tp_mro;
        if mro.is_null() || ffi::PyTuple_Check(mro) == 0 {
            return false;
        }
        let n = ffi::PyTuple_GET_SIZE(mro);
        if n < 2 || ffi::PyTuple_GET_ITEM(mro, n - 1) != object.cast() {
            return false;
        }
        let slots = intern!(py, "__slots__").as_ptr();
        for i in 0..n - 1 {
            let c = ffi::PyTuple_GET_ITEM(mro, i).cast::<ffi::PyTypeObject>();
            if ffi::PyType_GetFlags(c) & ffi::Py_TPFLAGS_HEAPTYPE == 0 || (*c).tp_itemsize != 0 {
                return false;
            }
            let d = (*c).tp_dict;
            if d.is_null() || ffi::PyDict_Contains(d, slots) != 0 {
                ffi::PyErr_Clear();
                return false;
            }
        }
        // CPython's rule for `object.__reduce_ex__(2)` without `__getnewargs__`: an instance
        // larger than object plus its `__dict__` and `__weakref__` pointers holds C state a
        // `__dict__` cannot carry ("cannot pickle 'X' object"). A Python subclass of a heap C
        // type (`_random.Random`, `sqlite3.Connection`, `mmap.mmap`...) passes the MRO test
        // above and is caught here; the long way then raises as the C pickler does.
        let ptr = std::mem::size_of::<*mut ffi::PyObject>() as ffi::Py_ssize_t;
        let mut expected = (*object).tp_basicsize;
        if (*tp).tp_dictoffset != 0 && flags & MANAGED_DICT == 0 {
            expected += ptr;
        }
        if (*tp).tp_weaklistoffset > 0 {
            expected += ptr;
        }
        if (*tp).tp_basicsize > expected {
            return false;
        }
        // The pickling protocol is object's own throughout.
        for name in [
            intern!(py, "__reduce_ex__"),
            intern!(py, "__reduce__"),
            intern!(py, "__getstate__"),
            intern!(py, "__class__"),
        ] {
            let mine = _PyType_Lookup(tp, name.as_ptr());
            if mine.is_null() || mine != _PyType_Lookup(object, name.as_ptr()) {
                return false;
            }
        }
        for name in [intern!(py, "__getnewargs_ex__"), intern!(py, "__getnewargs__")] {
            if !_PyType_Lookup(tp, name.as_ptr()).is_null() {
                return false;
            }
        }
        // copyreg's slot names, cached in the class itself by the first `__reduce_ex__`: until
        // then (or if they are not empty) the instance goes the long way, which caches them.
        let slotnames = ffi::PyDict_GetItemWithError((*tp).tp_dict, intern!(py, "__slotnames__").as_ptr());
        if slotnames.is_null() {
            ffi::PyErr_Clear();
            return false;
        }
        slotnames == ffi::Py_None() || (ffi::PyList_CheckExact(slotnames) != 0 && ffi::PyList_GET_SIZE(slotnames) == 0)
    }
}

/// What `object.__getstate__` returns for an instance of a plain class, or Err(()) when the
/// instance itself overrides `__reduce_ex__` or `__getstate__` in its `__dict__` (the long way
/// then does what the instance asks).
pub(crate) fn instance_state<'py>(obj: &Bound<'py, PyAny>) -> PyResult<Result<Option<Bound<'py, PyAny>>, ()>> {
    let py = obj.py();
    // SAFETY: `obj` is an instance of a plain class, which has a `__dict__`; the call returns a
    // new reference or NULL with an exception set.
    let dict =
        unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyObject_GenericGetDict(obj.as_ptr(), std::ptr::null_mut()))? };
    let dict = dict.cast_into::<pyo3::types::PyDict>()?;
    if dict.is_empty() {
        return Ok(Ok(None));
    }
    if dict.contains(intern!(py, "__reduce_ex__"))? || dict.contains(intern!(py, "__getstate__"))? {
        return Ok(Err(()));
    }
    Ok(Ok(Some(dict.into_any())))
}
