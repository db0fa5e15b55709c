//! `cloudpickle_rs._native`: the object walk and the `Pickler` class.
//!
//! The only crate of the workspace that touches Python objects. The byte encodings are in
//! `pickle_wire`; source slicing for by_source is in `function_source`.

mod addr;
mod cloud;
mod dumper;
mod errors;
mod layout;
mod lookup;
mod memo;
mod outbuf;
mod pickler;
mod plain;
mod statics;

use pyo3::prelude::*;
use pyo3::types::PyBytes;

use dumper::{Dumper, Hooks};
use memo::Memo;
use pickler::{check_buffer_callback, parse_protocol, Pickler, PicklerBase};

/// The arguments of the module-level `dumps`/`dump`: one dump, a fresh memo and globals map.
struct OneShot<'a, 'py> {
    protocol: Option<&'a Bound<'py, PyAny>>,
    buffer_callback: Option<Bound<'py, PyAny>>,
    by_source: Option<&'a Bound<'py, PyAny>>,
    pickle_by_reference: Option<Bound<'py, PyAny>>,
    fix_imports: bool,
    reconstructor_module: &'a str,
    target_python: Option<&'a Bound<'py, PyAny>>,
    receiver: Option<&'a Bound<'py, PyAny>>,
}

impl<'py> OneShot<'_, 'py> {
    /// Validate the arguments (in `_pickle.c`'s order) and make the Dumper. Inlined, as
    /// `Dumper::new` is: the Dumper is then built in the caller's frame instead of being
    /// copied out of two (900 bytes, twice, per `dumps` call).
    #[inline(always)]
    fn dumper(self, py: Python<'py>, file: Option<&Bound<'py, PyAny>>) -> PyResult<cloud::CloudDumper<'py>> {
        let by_source = cloud::options::BySource::parse(self.by_source)?;
        let target_python = cloud::options::parse_target_python(self.target_python)?;
        let proto = parse_protocol(self.protocol)?;
        let buffer_callback = self.buffer_callback.filter(|b| !b.is_none());
        check_buffer_callback(proto, &buffer_callback)?;
        let write = match file {
            Some(f) => Some(
                lookup::lookup_attr(f, pyo3::intern!(py, "write"))?
                    .ok_or_else(|| pyo3::exceptions::PyTypeError::new_err("file must have a 'write' attribute"))?,
            ),
            None => None,
        };
        let globals_ref = pyo3::types::PyDict::new(py);
        let cloud = cloud::Cloud::new(
            py,
            self.reconstructor_module,
            globals_ref,
            self.pickle_by_reference,
            by_source,
            target_python,
            self.receiver,
        )?;
        let buffer_callback = match (&cloud.receiver, buffer_callback) {
            (Some(r), Some(cb)) => Some(r.count_buffers(cb)?),
            (_, cb) => cb,
        };
        // With a receiver the stream is checked whole (its size budget) before a byte is written.
        let write = if cloud.receiver.is_some() { None } else { write };
        let hooks = Hooks { buffer_callback, ..Hooks::default() };
        Dumper::new(py, proto, self.fix_imports, write, hooks, Memo::default(), Box::new(cloud))
    }
}

/// Return the pickled representation of `obj` as bytes.
#[pyfunction]
#[pyo3(signature = (obj, protocol=None, buffer_callback=None, by_source=None, pickle_by_reference=None, *, fix_imports=true, reconstructor_module="cloudpickle.cloudpickle", target_python=None, receiver=None))]
#[allow(clippy::too_many_arguments)]
fn dumps<'py>(
    py: Python<'py>,
    obj: &Bound<'py, PyAny>,
    protocol: Option<&Bound<'py, PyAny>>,
    buffer_callback: Option<Bound<'py, PyAny>>,
    by_source: Option<&Bound<'py, PyAny>>,
    pickle_by_reference: Option<Bound<'py, PyAny>>,
    fix_imports: bool,
    reconstructor_module: &str,
    target_python: Option<&Bound<'py, PyAny>>,
    receiver: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyBytes>> {
    let options = OneShot {
        protocol,
        buffer_callback,
        by_source,
        pickle_by_reference,
        fix_imports,
        reconstructor_module,
        target_python,
        receiver,
    };
    let mut dumper = options.dumper(py, None)?;
    dumper.dump(obj)?;
    let size_check = dumper.receiver_size_check();
    let bytes = dumper.into_bytes()?;
    if let Some(s) = size_check {
        s.check(obj, bytes.as_bytes().len())?;
    }
    Ok(bytes)
}

/// Write the pickled representation of `obj` to the open file object `file`.
#[pyfunction]
#[pyo3(signature = (obj, file, protocol=None, buffer_callback=None, by_source=None, pickle_by_reference=None, *, fix_imports=true, reconstructor_module="cloudpickle.cloudpickle", target_python=None, receiver=None))]
#[allow(clippy::too_many_arguments)]
fn dump<'py>(
    py: Python<'py>,
    obj: &Bound<'py, PyAny>,
    file: &Bound<'py, PyAny>,
    protocol: Option<&Bound<'py, PyAny>>,
    buffer_callback: Option<Bound<'py, PyAny>>,
    by_source: Option<&Bound<'py, PyAny>>,
    pickle_by_reference: Option<Bound<'py, PyAny>>,
    fix_imports: bool,
    reconstructor_module: &str,
    target_python: Option<&Bound<'py, PyAny>>,
    receiver: Option<&Bound<'py, PyAny>>,
) -> PyResult<()> {
    let options = OneShot {
        protocol,
        buffer_callback,
        by_source,
        pickle_by_reference,
        fix_imports,
        reconstructor_module,
        target_python,
        receiver,
    };
    let mut dumper = options.dumper(py, Some(file))?;
    dumper.dump(obj)?;
    // With a receiver the dump went to memory: checked whole, then written in one call.
    if dumper.has_receiver() {
        let size_check = dumper.receiver_size_check();
        let bytes = dumper.into_bytes()?;
        if let Some(s) = size_check {
            s.check(obj, bytes.as_bytes().len())?;
        }
        lookup::lookup_attr(file, pyo3::intern!(py, "write"))?
            .ok_or_else(|| pyo3::exceptions::PyTypeError::new_err("file must have a 'write' attribute"))?
            .call1((bytes,))?;
    }
    Ok(())
}

/// `by_source` as every entry point reads it (`dumps`, `dump`, `Pickler(...)`): True, False or
/// `"auto"`. The integrations resolve their option through this, so they accept what the
/// pickler accepts (None and falsy values: False; `"auto"`; any other str: ValueError; any other
/// truthy value: True).
#[pyfunction]
#[pyo3(signature = (value))]
fn _by_source_value<'py>(py: Python<'py>, value: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    use cloud::options::BySource;
    Ok(match BySource::parse(Some(value))? {
        BySource::Off => pyo3::types::PyBool::new(py, false).to_owned().into_any(),
        BySource::On => pyo3::types::PyBool::new(py, true).to_owned().into_any(),
        BySource::Auto => pyo3::intern!(py, "auto").clone().into_any(),
    })
}

/// The code comparison by_source runs when a rebuilt code object is not `==` the original
/// (`same_code(original, rebuilt) -> bool`): the package registers it at import.
#[pyfunction]
fn _set_code_check(check: Bound<'_, PyAny>) -> PyResult<()> {
    if !check.is_callable() {
        return Err(pyo3::exceptions::PyTypeError::new_err("the code check must be callable"));
    }
    cloud::source::set_code_check(check.unbind());
    Ok(())
}

/// `gil_used = true`: on a free-threaded CPython (3.13t/3.14t) importing the module turns the GIL
/// back on. The walk relies on it: the memo elision of unshared items compares `Py_REFCNT`, and
/// the layout reads assume the GIL-ful object header (README, "Python versions").
#[pymodule(gil_used = true)]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PicklerBase>()?;
    m.add_class::<Pickler>()?;
    m.add_function(wrap_pyfunction!(dumps, m)?)?;
    m.add_function(wrap_pyfunction!(dump, m)?)?;
    m.add_function(wrap_pyfunction!(_by_source_value, m)?)?;
    m.add_function(wrap_pyfunction!(_set_code_check, m)?)?;
    m.add("HIGHEST_PROTOCOL", pickle_wire::HIGHEST_PROTOCOL)?;
    m.add("PicklingRecursionError", statics::statics(m.py())?.pickling_recursion_error.bind(m.py()))?;
    m.add("SourceFallbackWarning", statics::statics(m.py())?.source_fallback_warning.bind(m.py()))?;
    m.add("DEFAULT_PROTOCOL", pickle_wire::DEFAULT_PROTOCOL)?;
    Ok(())
}
