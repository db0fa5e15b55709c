//! Maps and sets keyed by object address. The standard library's SipHash (built against
//! collision attacks on untrusted keys) showed in profiles of the per-function paths; addresses
//! are not chosen by an attacker, and one multiply spreads them well enough.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

#[derive(Default, Clone, Copy)]
pub(crate) struct AddrHasher(u64);

impl Hasher for AddrHasher {
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }

    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        // Objects are 16-byte aligned: the low bits carry nothing. The multiply moves the
        // varying middle bits into the high bits hashbrown takes its control bytes from.
        self.0 = ((n as u64) >> 4 ^ self.0).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

pub(crate) type AddrMap<V> = HashMap<usize, V, BuildHasherDefault<AddrHasher>>;
pub(crate) type AddrSet = HashSet<usize, BuildHasherDefault<AddrHasher>>;
