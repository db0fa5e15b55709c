//! Objects looked up once per process: the exception types we raise and the stdlib callables
//! and tables the save path consults.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;

pub(crate) struct Statics {
    pub pickling_error: Py<PyType>,
    /// Both `pickle.PicklingError` (what cloudpickle raises for too deep a structure) and
    /// `RecursionError` (what pickle raises): callers written for either catch it.
    pub pickling_recursion_error: Py<PyType>,
    /// Warned when `by_source='auto'` sends a function as bytecode.
    pub source_fallback_warning: Py<PyType>,
    pub copyreg_dispatch_table: Py<PyAny>,
    pub extension_registry: Py<PyAny>,
    pub name_mapping_3to2: Py<PyAny>,
    pub import_mapping_3to2: Py<PyAny>,
    pub pickle_buffer_type: Py<PyAny>,
    pub functools_partial: Py<PyAny>,
    pub codecs_encode: Py<PyAny>,
    pub builtins_getattr: Py<PyAny>,
}

static STATICS: PyOnceLock<Statics> = PyOnceLock::new();

pub(crate) fn statics(py: Python<'_>) -> PyResult<&Statics> {
    STATICS.get_or_try_init(py, || {
        let copyreg = py.import("copyreg")?;
        let compat = py.import("_compat_pickle")?;
        let pickle = py.import("pickle")?;
        Ok(Statics {
            pickling_error: pickle.getattr("PicklingError")?.cast_into::<PyType>()?.unbind(),
            pickling_recursion_error: {
                let bases = pyo3::types::PyTuple::new(
                    py,
                    [pickle.getattr("PicklingError")?, py.get_type::<pyo3::exceptions::PyRecursionError>().into_any()],
                )?;
                let ns = pyo3::types::PyDict::new(py);
                ns.set_item("__module__", "cloudpickle_rs")?;
                ns.set_item(
                    "__doc__",
                    "Raised when an object is too deep to pickle: a pickle.PicklingError (as cloudpickle raises) and a RecursionError (as pickle raises).",
                )?;
                py.get_type::<PyType>().call1(("PicklingRecursionError", bases, ns))?.cast_into::<PyType>()?.unbind()
            },
            source_fallback_warning: {
                let bases = pyo3::types::PyTuple::new(py, [py.get_type::<pyo3::exceptions::PyUserWarning>()])?;
                let ns = pyo3::types::PyDict::new(py);
                ns.set_item("__module__", "cloudpickle_rs")?;
                ns.set_item("__doc__", "by_source='auto' found no usable source for a function and sent it as bytecode.")?;
                py.get_type::<PyType>().call1(("SourceFallbackWarning", bases, ns))?.cast_into::<PyType>()?.unbind()
            },
            copyreg_dispatch_table: copyreg.getattr("dispatch_table")?.unbind(),
            extension_registry: copyreg.getattr("_extension_registry")?.unbind(),
            name_mapping_3to2: compat.getattr("REVERSE_NAME_MAPPING")?.unbind(),
            import_mapping_3to2: compat.getattr("REVERSE_IMPORT_MAPPING")?.unbind(),
            pickle_buffer_type: pickle.getattr("PickleBuffer")?.unbind(),
            functools_partial: py.import("functools")?.getattr("partial")?.unbind(),
            codecs_encode: py.import("_codecs")?.getattr("encode")?.unbind(),
            builtins_getattr: py.import("builtins")?.getattr("getattr")?.unbind(),
        })
    })
}

/// `pickle.PicklingError(msg)`.
#[cold]
pub(crate) fn pickling_error(py: Python<'_>, msg: impl Into<String>) -> PyErr {
    match statics(py) {
        Ok(s) => PyErr::from_type(s.pickling_error.bind(py).clone(), msg.into()),
        Err(e) => e,
    }
}

/// What the byte level refused ([`pickle_wire::WireError`]) as the exception `_pickle.c` raises
/// for it: OverflowError for an int too large, PicklingError for the rest. The one mapping.
#[cold]
pub(crate) fn wire_error(py: Python<'_>, e: pickle_wire::WireError) -> PyErr {
    match e {
        pickle_wire::WireError::IntTooLarge => pyo3::exceptions::PyOverflowError::new_err(e.to_string()),
        _ => pickling_error(py, e.to_string()),
    }
}

/// cloudpickle's translation of a RecursionError, keeping the original as the cause.
#[cold]
pub(crate) fn deep_recursion_error(py: Python<'_>, err: PyErr) -> PyErr {
    if !err.is_instance_of::<pyo3::exceptions::PyRecursionError>(py) {
        return err;
    }
    match statics(py) {
        Ok(s) => {
            let e = PyErr::from_type(
                s.pickling_recursion_error.bind(py).clone(),
                "Could not pickle object as excessively deep recursion required.",
            );
            // The path notes were added as the RecursionError unwound: the caller sees this one.
            if let Ok(notes) = err.value(py).getattr("__notes__") {
                if let Ok(iter) = notes.try_iter() {
                    for note in iter.flatten() {
                        if let Ok(note) = note.extract::<String>() {
                            crate::errors::add_note(py, &e, &note);
                        }
                    }
                }
            }
            e.set_cause(py, Some(err));
            e
        }
        Err(e) => e,
    }
}
