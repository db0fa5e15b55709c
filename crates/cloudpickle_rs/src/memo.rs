//! The memo: object identity -> memo index, holding a strong reference to every key so that an
//! id cannot be reused by another object while the memo lives (as `_pickle.c`'s PyMemoTable).
//!
//! Like PyMemoTable it is an open-addressing table keyed by address, at most 2/3 full, whose
//! slots own the references to their keys. The references are released in one pass under the GIL
//! (dropping each `Py` would go through pyo3's deferred-decref check per object).

use pyo3::ffi;
use pyo3::prelude::*;

/// Size of the table the first insertion allocates (a power of two).
const MIN_SLOTS: usize = 64;

thread_local! {
    /// An empty table of [`MIN_SLOTS`] slots left by the last small dump of this thread, for
    /// the next one: a `dumps` of a small object (one task, one message) otherwise allocates,
    /// clears and frees a 1 kB table per call.
    static SPARE: std::cell::Cell<(Vec<Slot>, Vec<u32>)> = const { std::cell::Cell::new((Vec::new(), Vec::new())) };
}

struct Slot {
    /// The memoized object (a strong reference), None for an empty slot.
    key: Option<Py<PyAny>>,
    value: usize,
}

impl Slot {
    const EMPTY: Slot = Slot { key: None, value: 0 };

    /// The key's address, 0 for an empty slot (no object lives at address 0).
    #[inline(always)]
    fn addr(&self) -> usize {
        self.key.as_ref().map_or(0, |k| k.as_ptr() as usize)
    }
}

#[derive(Default)]
pub(crate) struct Memo {
    /// Empty, or a power-of-two number of slots.
    slots: Vec<Slot>,
    /// Occupied slots.
    len: usize,
    /// `len` at which the table grows: 2/3 of the slots (0 before the first insertion).
    grow_at: usize,
    /// Indices given out by [`Memo::reserve`]: memoized values of the receiver's with no
    /// object here (by_source's intermediate values).
    reserved: usize,
    /// The occupied slots, in insertion order, while the table has [`MIN_SLOTS`] slots: a
    /// small table is released by visiting these rather than every slot.
    occupied: Vec<u32>,
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
            let slot = &self.slots[probe.i];
            let addr = slot.addr();
            if addr == key {
                return Some(slot.value);
            }
            if addr == 0 {
                return None;
            }
            probe.next();
        }
    }

    /// Memoize `obj` under the next index and return that index.
    #[inline]
    pub(crate) fn put(&mut self, obj: &Bound<'_, PyAny>) -> usize {
        let idx = self.len + self.reserved;
        self.insert_at(obj, idx);
        idx
    }

    /// Memoize `obj` under `idx` (replacing the index of an object already there).
    pub(crate) fn insert_at(&mut self, obj: &Bound<'_, PyAny>, idx: usize) {
        if self.len >= self.grow_at {
            self.grow();
        }
        let key = obj.as_ptr() as usize;
        let mut probe = Probe::new(key, self.slots.len() - 1);
        loop {
            let slot = &mut self.slots[probe.i];
            let addr = slot.addr();
            if addr == key {
                slot.value = idx;
                return;
            }
            if addr == 0 {
                *slot = Slot { key: Some(obj.clone().unbind()), value: idx };
                self.len += 1;
                if self.slots.len() == MIN_SLOTS {
                    self.occupied.push(probe.i as u32);
                }
                return;
            }
            probe.next();
        }
    }

    #[cold]
    #[inline(never)]
    fn grow(&mut self) {
        // Quadruple while small, then double, as PyMemoTable does.
        if self.slots.is_empty() {
            let (spare, occupied) = SPARE.take();
            self.slots = if spare.len() == MIN_SLOTS { spare } else { empty_table(MIN_SLOTS) };
            self.grow_at = MIN_SLOTS / 3 * 2;
            self.occupied = occupied;
            self.occupied.clear();
            return;
        }
        let new_size = if self.len < 50_000 { self.slots.len() * 4 } else { self.slots.len() * 2 };
        self.occupied = Vec::new();
        let table = empty_table(new_size);
        let old = std::mem::replace(&mut self.slots, table);
        self.grow_at = new_size / 3 * 2;
        let mask = new_size - 1;
        for slot in old.into_iter().filter(|s| s.key.is_some()) {
            let mut probe = Probe::new(slot.addr(), mask);
            while self.slots[probe.i].key.is_some() {
                probe.next();
            }
            self.slots[probe.i] = slot;
        }
    }

    /// The next index, for a value that has no object on this side.
    pub(crate) fn reserve(&mut self) -> usize {
        let idx = self.len + self.reserved;
        self.reserved += 1;
        idx
    }

    /// The index the next memoized value gets: a mark for [`Memo::rollback`].
    pub(crate) fn mark(&self) -> usize {
        self.len + self.reserved
    }

    /// Forget every entry given an index at or after `mark` (a dump whose stream was never
    /// written: a later dump must not refer to its values). Entries before the mark keep their
    /// indices, and the next index is `mark` again, so none is given twice.
    pub(crate) fn rollback(&mut self, py: Python<'_>, mark: usize) {
        if self.mark() == mark {
            return;
        }
        let old = std::mem::take(&mut self.slots);
        self.occupied.clear();
        self.len = 0;
        self.grow_at = 0;
        let (keep, drop): (Vec<Slot>, Vec<Slot>) =
            old.into_iter().filter(|s| s.key.is_some()).partition(|s| s.value < mark);
        for slot in &keep {
            if let Some(key) = &slot.key {
                self.insert_at(key.bind(py), slot.value);
            }
        }
        release(keep);
        release(drop);
        self.reserved = mark - self.len;
    }

    pub(crate) fn clear(&mut self) {
        self.release_table();
        self.len = 0;
        self.grow_at = 0;
        self.reserved = 0;
    }

    /// Every entry as (address, index, object), in index order, for `Pickler.memo`.
    pub(crate) fn entries<'py>(&self, py: Python<'py>) -> impl Iterator<Item = (usize, usize, Bound<'py, PyAny>)> {
        let mut all: Vec<(usize, usize, Bound<'py, PyAny>)> = self
            .slots
            .iter()
            .filter_map(|s| s.key.as_ref().map(|k| (k.as_ptr() as usize, s.value, k.bind(py).clone())))
            .collect();
        all.sort_by_key(|e| e.1);
        all.into_iter()
    }

    pub(crate) fn traverse(&self, visit: &pyo3::gc::PyVisit<'_>) -> Result<(), pyo3::PyTraverseError> {
        for key in self.slots.iter().filter_map(|s| s.key.as_ref()) {
            visit.call(key)?;
        }
        Ok(())
    }
}

fn empty_table(size: usize) -> Vec<Slot> {
    let mut table = Vec::with_capacity(size);
    table.resize_with(size, || Slot::EMPTY);
    table
}

impl Memo {
    /// Drop the table's references; a small table, emptied, goes back to [`SPARE`].
    fn release_table(&mut self) {
        let mut slots = std::mem::take(&mut self.slots);
        if slots.len() != MIN_SLOTS {
            release(slots);
            return;
        }
        Python::attach(|_py| {
            for &i in &self.occupied {
                if let Some(key) = slots.get_mut(i as usize).and_then(|s| s.key.take()) {
                    // SAFETY: `into_ptr` hands us the one strong reference the slot owned;
                    // the GIL is held.
                    unsafe { ffi::Py_DECREF(key.into_ptr()) };
                }
            }
        });
        let mut occupied = std::mem::take(&mut self.occupied);
        occupied.clear();
        // Every slot is empty again (`occupied` listed each insertion into this table).
        SPARE.set((slots, occupied));
    }
}

/// Drop the strong references of a table: one GIL check for all of them.
fn release(slots: Vec<Slot>) {
    if slots.is_empty() {
        return;
    }
    Python::attach(|_py| {
        for key in slots.into_iter().filter_map(|s| s.key) {
            // SAFETY: `into_ptr` hands us the one strong reference the slot owned; the GIL is
            // held.
            unsafe { ffi::Py_DECREF(key.into_ptr()) };
        }
    });
}

impl Drop for Memo {
    fn drop(&mut self) {
        self.release_table();
    }
}
