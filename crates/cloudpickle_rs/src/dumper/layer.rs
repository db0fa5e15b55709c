//! The seam between the core walk ([`crate::dumper`]) and what is layered on it.
//!
//! The core walk is `_pickle.c`'s `save()`: it knows atoms, containers, reductions and globals
//! by reference, and nothing of cloudpickle. A [`Layer`] is what a pickler adds on top of it:
//! the walk calls the layer's hooks at the points where `_pickle.c` consults a pickler's
//! `reducer_override` and dispatch table, and at the start and end of a dump. The dumper is
//! generic over its layer, so each layer gets its own monomorphized walk: the plain layer's
//! hooks compile to nothing, and the cloudpickle layer's state is the layer itself (no
//! `Option`, no "layer disabled" error path).
//!
//! Two layers exist: [`Plain`] (`PicklerBase`, `_pickle.Pickler` byte for byte) and the
//! cloudpickle layer, `Box<crate::cloud::Cloud>` (boxed: the dumper is built per `dumps` call
//! and its size shows in small dumps).
//!
//! # Guarantees
//! - The core calls each hook at one place, in `_pickle.c`'s order: [`Layer::substitute`],
//!   then the pickler's own `reducer_override` or else [`Layer::reducer_override`], then the
//!   built-in type/function paths, then the pickler's `dispatch_table` or else
//!   [`Layer::dispatch`], then `copyreg`'s table and `__reduce_ex__`.
//! - With [`Plain`], every hook is the identity: the walk writes what `_pickle.c` writes.

use pyo3::prelude::*;
use pyo3::types::{PyString, PyType};

use super::Dumper;

/// What a layer did with an object.
pub(crate) enum Handled<'py> {
    /// Written.
    Done,
    /// Not the layer's: continue down the `_pickle.c` path.
    Pass,
    /// A reduce value for the core to write with `save_reduce_value`.
    Reduce(Bound<'py, PyAny>),
}

/// The hooks the core walk calls. Each has a default that does nothing, so a layer names only
/// the ones it uses. Hooks are associated functions taking the whole dumper: a hook may save
/// objects through the core walk (and the core may call hooks again, re-entrantly).
pub(crate) trait Layer<'py>: Sized {
    /// Leave unmemoized the container items nothing else references (protocol 3+, no
    /// `persistent_id`, not fast mode): see `Dumper::save_item`. Off for `_pickle`'s bytes.
    const ELIDE_UNSHARED: bool = false;
    /// Write the elements of an all-`str` set sorted (their order otherwise follows
    /// PYTHONHASHSEED). Off for `_pickle`'s bytes.
    const SORT_STR_SETS: bool = false;

    /// Before anything else for an object that is not an exact built-in: another object to
    /// write in its place (a receiver's refusal), or None.
    #[inline(always)]
    fn substitute(
        _d: &mut Dumper<'py, Self>,
        _obj: &Bound<'py, PyAny>,
        _tp: &Bound<'py, PyType>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        Ok(None)
    }

    /// The layer's `reducer_override` (used when the pickler has no Python one).
    #[inline(always)]
    fn reducer_override(
        _d: &mut Dumper<'py, Self>,
        _obj: &Bound<'py, PyAny>,
        _tp: &Bound<'py, PyType>,
    ) -> PyResult<Handled<'py>> {
        Ok(Handled::Pass)
    }

    /// The layer's dispatch table (used when the pickler has no `dispatch_table`).
    #[inline(always)]
    fn dispatch(
        _d: &mut Dumper<'py, Self>,
        _obj: &Bound<'py, PyAny>,
        _tp: &Bound<'py, PyType>,
    ) -> PyResult<Handled<'py>> {
        Ok(Handled::Pass)
    }

    /// A global about to be written by reference as `module.name`: an error refuses it.
    #[inline(always)]
    fn check_global(
        _d: &Dumper<'py, Self>,
        _obj: &Bound<'py, PyAny>,
        _module: &Bound<'py, PyString>,
        _name: &Bound<'py, PyString>,
    ) -> PyResult<()> {
        Ok(())
    }

    /// After the object was written, before STOP: what the layer appends to the stream.
    #[inline(always)]
    fn after_walk(_d: &mut Dumper<'py, Self>) -> PyResult<()> {
        Ok(())
    }

    /// The dump failed with `err` (its error path already added): the error to raise.
    #[inline(always)]
    fn failed(_d: &Dumper<'py, Self>, err: PyErr) -> PyErr {
        err
    }
}

/// `_pickle.Pickler`'s semantics: no hooks.
pub(crate) struct Plain;

impl<'py> Layer<'py> for Plain {}
