//! Error context: as an error unwinds out of the walk, each level adds a note saying where it
//! happened (`when serializing list item 3`, as Python 3.14's pickle does) and records a path
//! segment; at the top one more note spells the whole path from the pickled object.

use pyo3::prelude::*;

/// Deeper paths are cut: a 100 000-deep RecursionError needs no 100 000 notes.
const MAX_SEGMENTS: usize = 48;

#[derive(Default)]
pub(crate) struct ErrorPath {
    /// Innermost first.
    segments: Vec<String>,
    truncated: bool,
}

pub(crate) fn type_name(obj: &Bound<'_, PyAny>) -> String {
    match obj.get_type().name() {
        Ok(n) => n.to_string(),
        Err(_) => "object".to_owned(),
    }
}

fn short_repr(obj: &Bound<'_, PyAny>) -> String {
    let r = match obj.repr() {
        Ok(r) => r.to_string_lossy().into_owned(),
        Err(_) => format!("<{}>", type_name(obj)),
    };
    if r.chars().count() > 60 {
        let cut: String = r.chars().take(57).collect();
        format!("{cut}...")
    } else {
        r
    }
}

/// `exc.add_note(note)`; a failure to annotate never replaces the real error.
///
/// Before Python 3.11 (no `BaseException.add_note`, PEP 678) the note is appended to the
/// exception's `__notes__` list all the same, as the `exceptiongroup` backport does: callers
/// read the same attribute on every version (the interpreter's own traceback printer shows
/// notes from 3.11 on only).
pub(crate) fn add_note(py: Python<'_>, err: &PyErr, note: &str) {
    let value = err.value(py);
    if value.call_method1(pyo3::intern!(py, "add_note"), (note,)).is_ok() {
        return;
    }
    let notes = match value.getattr(pyo3::intern!(py, "__notes__")) {
        Ok(n) => n,
        Err(_) => {
            let fresh = pyo3::types::PyList::empty(py);
            if value.setattr(pyo3::intern!(py, "__notes__"), &fresh).is_err() {
                return;
            }
            fresh.into_any()
        }
    };
    let _ = notes.call_method1(pyo3::intern!(py, "append"), (note,));
}

impl ErrorPath {
    #[cold]
    fn push(&mut self, py: Python<'_>, err: PyErr, note: String, segment: String) -> PyErr {
        if self.segments.len() < MAX_SEGMENTS {
            add_note(py, &err, &note);
            self.segments.push(segment);
        } else {
            self.truncated = true;
        }
        err
    }

    #[cold]
    pub(crate) fn list_item(&mut self, py: Python<'_>, err: PyErr, list: &Bound<'_, PyAny>, i: usize) -> PyErr {
        self.push(py, err, format!("when serializing {} item {i}", type_name(list)), format!("[{i}]"))
    }

    #[cold]
    pub(crate) fn tuple_item(&mut self, py: Python<'_>, err: PyErr, tuple: &Bound<'_, PyAny>, i: usize) -> PyErr {
        self.push(py, err, format!("when serializing {} item {i}", type_name(tuple)), format!("[{i}]"))
    }

    #[cold]
    pub(crate) fn iter_item(&mut self, py: Python<'_>, err: PyErr, i: usize) -> PyErr {
        self.push(py, err, format!("when serializing list item {i}"), format!("[{i}]"))
    }

    #[cold]
    pub(crate) fn dict_key(&mut self, py: Python<'_>, err: PyErr, key: &Bound<'_, PyAny>) -> PyErr {
        // A failing key and a failing value are told apart by which save failed; the caller maps
        // both through here or `dict_value`.
        let k = short_repr(key);
        self.push(py, err, format!("when serializing dict key {k}"), format!(" key {k}"))
    }

    #[cold]
    pub(crate) fn dict_value(&mut self, py: Python<'_>, err: PyErr, key: &Bound<'_, PyAny>) -> PyErr {
        let k = short_repr(key);
        self.push(py, err, format!("when serializing dict item {k}"), format!("[{k}]"))
    }

    #[cold]
    pub(crate) fn set_element(&mut self, py: Python<'_>, err: PyErr, set: &Bound<'_, PyAny>) -> PyErr {
        let t = type_name(set);
        self.push(py, err, format!("when serializing {t} element"), format!(" ({t} element)"))
    }

    #[cold]
    pub(crate) fn reduce_args(&mut self, py: Python<'_>, err: PyErr, obj: &Bound<'_, PyAny>) -> PyErr {
        let t = type_name(obj);
        self.push(
            py,
            err,
            format!("when serializing {t} reconstructor arguments"),
            format!(" ({t} reconstructor arguments)"),
        )
    }

    #[cold]
    pub(crate) fn reduce_state(&mut self, py: Python<'_>, err: PyErr, obj: &Bound<'_, PyAny>) -> PyErr {
        let t = type_name(obj);
        self.push(py, err, format!("when serializing {t} state"), format!(" ({t} state)"))
    }

    /// A named part of an object (`.__closure__ cell 'lock'`, `.__globals__['x']`).
    #[cold]
    pub(crate) fn attribute(&mut self, py: Python<'_>, err: PyErr, obj: &Bound<'_, PyAny>, what: &str) -> PyErr {
        self.push(py, err, format!("when serializing {} {what}", type_name(obj)), format!(".{what}"))
    }

    /// Add the path note at the top of the walk and reset for the next dump.
    #[cold]
    pub(crate) fn finish(&mut self, py: Python<'_>, err: PyErr, root: &Bound<'_, PyAny>) -> PyErr {
        if !self.segments.is_empty() {
            let mut path = String::from("obj");
            if self.truncated {
                path.push_str("...");
            }
            for seg in self.segments.iter().rev() {
                path.push_str(seg);
            }
            add_note(
                py,
                &err,
                &format!("path to the object that failed, from the {} being pickled: {path}", type_name(root)),
            );
        }
        self.segments.clear();
        self.truncated = false;
        err
    }
}

/// `repr(obj)` for an error message; never fails.
pub(crate) fn safe_repr(obj: &Bound<'_, PyAny>) -> String {
    match obj.repr() {
        Ok(r) => r.to_string_lossy().into_owned(),
        Err(_) => format!("<{} object at {:p}>", type_name(obj), obj.as_ptr()),
    }
}
