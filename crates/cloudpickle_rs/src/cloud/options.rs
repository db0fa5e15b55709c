//! The layer's options that more than one part reads: `by_source` and `target_python`.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyString, PyTuple};

/// The `by_source` option.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BySource {
    /// Bytecode, as cloudpickle.
    Off,
    /// Source for every function pickled by value; a function without source is an error.
    On,
    /// Source where it can be found, bytecode (with a warning naming the function) elsewhere.
    Auto,
}

impl BySource {
    pub(crate) fn parse(value: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        let Some(v) = value.filter(|v| !v.is_none()) else { return Ok(BySource::Off) };
        if let Ok(s) = v.cast::<PyString>() {
            return match &*s.to_cow()? {
                "auto" => Ok(BySource::Auto),
                other => Err(PyValueError::new_err(format!("by_source must be True, False or 'auto', not {other:?}"))),
            };
        }
        Ok(if v.is_truthy()? { BySource::On } else { BySource::Off })
    }
}

/// This interpreter's (major, minor), read once (`Py_GetVersion` formats a string each call:
/// it was 3% of a receiver-checked dump of 1000 functions, where every code object asks).
pub(crate) fn running_version(py: Python<'_>) -> (u8, u8) {
    static VERSION: std::sync::OnceLock<(u8, u8)> = std::sync::OnceLock::new();
    *VERSION.get_or_init(|| {
        let v = py.version_info();
        (v.major, v.minor)
    })
}

/// The `target_python` option: the (major, minor) of the receiver, checked at dump time.
pub(crate) type TargetPython = Option<(u8, u8)>;

/// Parse `target_python`: None, `"3.9"`, or a sequence whose first two items are ints
/// (`(3, 9)`, `sys.version_info`). Receivers older than 3.8 are not supported.
pub(crate) fn parse_target_python(value: Option<&Bound<'_, PyAny>>) -> PyResult<TargetPython> {
    use pyo3::exceptions::PyTypeError;
    let Some(v) = value.filter(|v| !v.is_none()) else { return Ok(None) };
    let bad = || {
        PyValueError::new_err(format!(
            "target_python must look like \"3.9\" or (3, 9), not {}",
            crate::errors::safe_repr(v)
        ))
    };
    let (major, minor): (i64, i64) = if let Ok(s) = v.cast::<PyString>() {
        let text = s.to_cow()?;
        let mut parts = text.trim().split('.');
        let major = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let minor = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        if parts.next().is_some_and(|p| p.parse::<u32>().is_err()) {
            return Err(bad());
        }
        (major, minor)
    } else if v.is_instance_of::<PyTuple>() || v.is_instance_of::<pyo3::types::PyList>() {
        let major = v.get_item(0).ok().and_then(|m| m.extract().ok()).ok_or_else(bad)?;
        let minor = v.get_item(1).ok().and_then(|m| m.extract().ok()).ok_or_else(bad)?;
        (major, minor)
    } else {
        return Err(PyTypeError::new_err(format!(
            "target_python must be a str like \"3.9\" or a tuple like (3, 9), not {}",
            crate::errors::type_name(v)
        )));
    };
    if major != 3 || !(8..=255).contains(&minor) {
        return Err(PyValueError::new_err(format!(
            "target_python {major}.{minor} is not supported: receivers run Python 3.8 or later"
        )));
    }
    Ok(Some((3, minor as u8)))
}
