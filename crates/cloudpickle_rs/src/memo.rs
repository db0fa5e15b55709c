//! The memo: object identity -> memo index, holding a strong reference to every key so that an
//! id cannot be reused by another object while the memo lives (as `_pickle.c`'s PyMemoTable).
//!
//! Like PyMemoTable it is an open-addressing table keyed by address (linear probing, at most
//! 2/3 full), so a lookup is a multiply and usually one cache line; the references are plain
//! owned pointers released in one pass under the GIL, not `Py<T>`s that each go through pyo3's
//! deferred-decref check when dropped.

use pyo3::ffi;
use pyo3::prelude::*;

/// Size of the table the first insertion allocates (a power of two).
const MIN_SLOTS: usize = 16;

/// `[key, value]`: the address of the key object (0 marks an empty slot: no object lives at
/// address 0) and its memo index. An array, so a table of empty slots is all zeros and comes
/// from the allocator already zeroed (for large tables: fresh pages, no memset).
type Slot = [usize; 2];

#[derive(Default)]
pub(crate) struct Memo {
    /// Empty, or a power-of-two number of slots.
    slots: Vec<Slot>,
    /// Distinct keys in `slots`.
    len: usize,
    /// `len` at which the table grows: 2/3 of the slots (0 before the first insertion).
    grow_at: usize,
    /// One strong reference per insertion, in insertion order (`insert_at` may repeat a key);
    /// released by `clear` / `Drop` in one pass under the GIL.
    objects: Vec<Py<PyAny>>,
}

/// The probe sequence of a key. The first slot keeps the address order: objects made one after
/// another, and so usually pickled one after another, sit in neighbouring slots, and a walk over
/// a large structure touches the table in order rather than at random (2-3x faster on 100k-item
/// payloads than a scrambling hash). A collision is resolved in the next few slots (the same
/// cache line, usually), then, as CPython's dict and `_pickle.c`'s PyMemoTable probe, with the
/// high bits of the address: regularly spaced addresses cannot pile up into long runs, which
/// plain linear probing on such keys does (15x slower on a list of datetimes).
struct Probe {
    i: usize,
    perturb: usize,
    mask: usize,
    linear: u8,
}

/// Probes after the first that go to the next slot before the sequence scatters.
const LINEAR_PROBES: u8 = 3;

impl Probe {
    #[inline]
    fn new(key: usize, mask: usize) -> Self {
        // Addresses are 16-byte aligned: drop the bits that are always zero.
        let h = key >> 4;
        Probe { i: h & mask, perturb: h, mask, linear: LINEAR_PROBES }
    }

    /// The next slot. Once `perturb` is spent, `i -> 5i + 1 (mod 2^k)` visits every slot, so a
    /// probe always reaches an empty slot (the table is never full).
    #[inline]
    fn next(&mut self) {
        if self.linear > 0 {
            self.linear -= 1;
            self.i = (self.i + 1) & self.mask;
        } else {
            self.perturb >>= 5;
            self.i = self.i.wrapping_mul(5).wrapping_add(self.perturb).wrapping_add(1) & self.mask;
        }
    }
}

impl Memo {
    #[inline]
    pub(crate) fn get(&self, obj: &Bound<'_, PyAny>) -> Option<usize> {
        if self.len == 0 {
            return None;
        }
        let key = obj.as_ptr() as usize;
        let mut probe = Probe::new(key, self.slots.len() - 1);
        loop {
            let slot = self.slots[probe.i];
            if slot[0] == key {
                return Some(slot[1]);
            }
            if slot[0] == 0 {
                return None;
            }
            probe.next();
        }
    }

    /// Memoize `obj` under the next index and return that index.
    #[inline]
    pub(crate) fn put(&mut self, obj: &Bound<'_, PyAny>) -> usize {
        let idx = self.len;
        self.insert_at(obj, idx);
        idx
    }

    pub(crate) fn insert_at(&mut self, obj: &Bound<'_, PyAny>, idx: usize) {
        // Keep the table at most 2/3 full (after this insertion), so probes end quickly.
        if self.len >= self.grow_at {
            self.grow();
        }
        let key = obj.as_ptr() as usize;
        let mut probe = Probe::new(key, self.slots.len() - 1);
        loop {
            let slot = &mut self.slots[probe.i];
            if slot[0] == key {
                slot[1] = idx;
                break;
            }
            if slot[0] == 0 {
                *slot = [key, idx];
                self.len += 1;
                break;
            }
            probe.next();
        }
        self.objects.push(obj.clone().unbind());
    }

    #[cold]
    #[inline(never)]
    fn grow(&mut self) {
        // Quadruple while small, then double, as PyMemoTable does.
        let new_size = if self.slots.is_empty() {
            self.objects.reserve(MIN_SLOTS);
            MIN_SLOTS
        } else if self.len < 50_000 {
            self.slots.len() * 4
        } else {
            self.slots.len() * 2
        };
        let old = std::mem::replace(&mut self.slots, vec![[0; 2]; new_size]);
        self.grow_at = new_size / 3 * 2;
        let mask = new_size - 1;
        for slot in old.into_iter().filter(|s| s[0] != 0) {
            let mut probe = Probe::new(slot[0], mask);
            while self.slots[probe.i][0] != 0 {
                probe.next();
            }
            self.slots[probe.i] = slot;
        }
    }

    pub(crate) fn clear(&mut self) {
        self.slots = Vec::new();
        self.len = 0;
        self.grow_at = 0;
        let objects = std::mem::take(&mut self.objects);
        release(objects);
    }

    /// Every entry as (address, index, object), for `Pickler.memo`.
    pub(crate) fn entries<'a, 'py>(&'a self, py: Python<'py>) -> impl Iterator<Item = (usize, usize, Bound<'py, PyAny>)> + 'a
    where
        'py: 'a,
    {
        self.objects.iter().filter_map(move |o| {
            let obj = o.bind(py).clone();
            self.get(&obj).map(|i| (obj.as_ptr() as usize, i, obj))
        })
    }

    pub(crate) fn traverse(&self, visit: &pyo3::gc::PyVisit<'_>) -> Result<(), pyo3::PyTraverseError> {
        for o in &self.objects {
            visit.call(o)?;
        }
        Ok(())
    }
}

/// Drop the strong references of a memo: one GIL check for all of them, where dropping each
/// `Py` would check per object.
fn release(objects: Vec<Py<PyAny>>) {
    if objects.is_empty() {
        return;
    }
    Python::with_gil(|_py| {
        for o in objects {
            // SAFETY: `into_ptr` hands us the one strong reference `o` owned; the GIL is held.
            unsafe { ffi::Py_DECREF(o.into_ptr()) };
        }
    });
}

impl Drop for Memo {
    fn drop(&mut self) {
        release(std::mem::take(&mut self.objects));
    }
}
