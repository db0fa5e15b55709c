//! `receiver=`: what the other side can import, refuses or accepts, checked during the walk.
//!
//! The description itself is Python (`cloudpickle_rs.Receiver`, in `_receiver.py`): per dump
//! the walk asks it for a session object and consults it at four places only, so a dump without
//! a receiver pays one branch:
//! - a function, class or module deciding by value or by reference: `session.by_reference`
//!   takes the place of the `pickle_by_reference` callback (it wraps the user's, if given);
//! - an object whose type (or a base) is in `session.catalogue` (a `{type: entry}` dict of
//!   things that cannot work on another machine): `session.refuse(obj)`, which raises, or in
//!   `check()`'s collecting mode returns what to write instead. The verdict is cached per type
//!   for the dump: one address lookup per object;
//! - every global written by reference: `session.check_global(obj, module, name)`;
//! - the end of the dump: `session.check_size(obj, nbytes)`, and on an error
//!   `session.finish_error(exc)` (which puts the object's path into a refusal's message).

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString, PyTuple, PyType};

use crate::addr::AddrMap;

pub(crate) struct ReceiverSession<'py> {
    pub session: Bound<'py, PyAny>,
    catalogue: Bound<'py, PyDict>,
    /// Type address -> whether the type or one of its bases is in the catalogue.
    verdicts: AddrMap<bool>,
}

/// What [`ReceiverSession::begin`] hands to the cloud layer besides the session.
pub(crate) struct Begun<'py> {
    pub session: ReceiverSession<'py>,
    pub by_reference: Bound<'py, PyAny>,
    pub target_python: Option<Bound<'py, PyAny>>,
}

impl<'py> ReceiverSession<'py> {
    /// `receiver._session(user_callback)`, read once per dump.
    pub(crate) fn begin(
        receiver: &Bound<'py, PyAny>,
        user_callback: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Begun<'py>> {
        let py = receiver.py();
        let cb = match user_callback {
            Some(c) => c.clone(),
            None => py.None().into_bound(py),
        };
        let session = receiver.call_method1(intern!(py, "_session"), (cb,))?;
        let catalogue = session.getattr(intern!(py, "catalogue"))?.cast_into::<PyDict>()?;
        let by_reference = session.getattr(intern!(py, "by_reference"))?;
        let target_python = Some(session.getattr(intern!(py, "target_python"))?).filter(|t| !t.is_none());
        Ok(Begun {
            session: ReceiverSession { session, catalogue, verdicts: AddrMap::default() },
            by_reference,
            target_python,
        })
    }

    /// Whether instances of `tp` are refused (the type or a base is in the catalogue).
    pub(crate) fn prohibited(&mut self, tp: &Bound<'py, PyType>) -> PyResult<bool> {
        let key = tp.as_ptr() as usize;
        if let Some(&v) = self.verdicts.get(&key) {
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
        // The type outlives the dump's use of the address: the object being saved holds it.
        self.verdicts.insert(key, hit);
        Ok(hit)
    }

    /// `session.refuse(obj)`: raises, or returns the object to write in its place.
    #[cold]
    pub(crate) fn refuse(&self, obj: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        self.session.call_method1(intern!(obj.py(), "refuse"), (obj,))
    }

    pub(crate) fn check_global(
        &self,
        obj: &Bound<'py, PyAny>,
        module: &Bound<'py, PyString>,
        name: &Bound<'py, PyString>,
    ) -> PyResult<()> {
        self.session.call_method1(intern!(obj.py(), "check_global"), (obj, module, name)).map(drop)
    }

    /// A buffer callback that counts out-of-band bytes for the size budget.
    pub(crate) fn count_buffers(&self, callback: Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        self.session.call_method1(intern!(callback.py(), "count_buffers"), (callback,))
    }

    /// Let the session word its refusal with the path the walk recorded; never fails.
    #[cold]
    pub(crate) fn finish_error(&self, err: &PyErr) {
        let py = self.session.py();
        let _ = self.session.call_method1(intern!(py, "finish_error"), (err.value(py),));
    }
}
