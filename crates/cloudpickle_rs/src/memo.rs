//! The memo: object identity -> memo index, holding a strong reference to every key so that an
//! id cannot be reused by another object while the memo lives (as `_pickle.c`'s PyMemoTable).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use pyo3::prelude::*;

/// Hashes an object address: addresses are 16-byte aligned, so shift the zero bits away and
/// spread the rest with one multiplication (Fibonacci hashing).
#[derive(Default)]
pub(crate) struct AddressHasher(u64);

impl Hasher for AddressHasher {
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8 | u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    #[inline]
    fn write_usize(&mut self, addr: usize) {
        self.0 = ((addr as u64) >> 4).wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(29);
    }
}

pub(crate) type AddressMap<V> = HashMap<usize, V, BuildHasherDefault<AddressHasher>>;

#[derive(Default)]
pub(crate) struct Memo {
    index: AddressMap<usize>,
    /// Strong references to every memoized object, in insertion order.
    objects: Vec<Py<PyAny>>,
}

impl Memo {
    #[inline]
    pub(crate) fn get(&self, obj: &Bound<'_, PyAny>) -> Option<usize> {
        self.index.get(&(obj.as_ptr() as usize)).copied()
    }

    pub(crate) fn with_capacity(n: usize) -> Self {
        Memo { index: AddressMap::with_capacity_and_hasher(n, Default::default()), objects: Vec::with_capacity(n) }
    }

    /// Memoize `obj` under the next index and return that index.
    #[inline]
    pub(crate) fn put(&mut self, obj: &Bound<'_, PyAny>) -> usize {
        let idx = self.index.len();
        self.insert_at(obj, idx);
        idx
    }

    pub(crate) fn insert_at(&mut self, obj: &Bound<'_, PyAny>, idx: usize) {
        self.index.insert(obj.as_ptr() as usize, idx);
        self.objects.push(obj.clone().unbind());
    }

    pub(crate) fn clear(&mut self) {
        self.index.clear();
        self.objects.clear();
    }

    /// Every entry as (address, index, object), for `Pickler.memo`.
    pub(crate) fn entries<'a, 'py>(&'a self, py: Python<'py>) -> impl Iterator<Item = (usize, usize, Bound<'py, PyAny>)> + 'a
    where
        'py: 'a,
    {
        self.objects.iter().filter_map(move |o| {
            let addr = o.as_ptr() as usize;
            self.index.get(&addr).map(|&i| (addr, i, o.bind(py).clone()))
        })
    }

    pub(crate) fn traverse(&self, visit: &pyo3::gc::PyVisit<'_>) -> Result<(), pyo3::PyTraverseError> {
        for o in &self.objects {
            visit.call(o)?;
        }
        Ok(())
    }
}
