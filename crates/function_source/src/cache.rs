//! [`ParseCache`]: parse each file once, however many functions are looked up in it.

use std::collections::HashMap;
use std::sync::Arc;

use crate::{Error, SourceFile};

/// The outcome of parsing one file, shared by every lookup in it.
pub type ParseResult = Result<Arc<SourceFile>, Error>;

/// A bounded cache of parsed files, keyed by file name and content.
///
/// One entry per file name: when the text given for a name differs from the cached one (the
/// file was edited and reloaded), the entry is replaced. The content is compared byte for
/// byte: exact, and faster than hashing it (a memory comparison of a 90 kB file takes about
/// 2 µs, a fast hash of it about 6 µs). [`SourceFile::content_hash`] is there for callers
/// that want to key their own caches by content.
/// Failures are cached too, so a file that does not parse is parsed once, not once per
/// function. When full, the least recently used entry is evicted.
///
/// Not internally synchronised: share it behind a `Mutex`. To parse without holding the
/// lock, call [`ParseCache::get`], parse with [`SourceFile::parse`] outside the lock, then
/// [`ParseCache::insert`].
#[derive(Debug)]
pub struct ParseCache {
    capacity: usize,
    entries: HashMap<Box<str>, Entry>,
    clock: u64,
    stats: CacheStats,
}

#[derive(Debug)]
struct Entry {
    /// The text as given (a parsed file's text has its byte-order mark removed).
    text: Box<str>,
    result: ParseResult,
    last_used: u64,
}

/// Counters describing how a [`ParseCache`] has been used.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups that had to parse.
    pub misses: u64,
    /// Entries dropped to stay within capacity.
    pub evictions: u64,
}

impl ParseCache {
    /// A cache holding at most `capacity` files (at least one).
    pub fn new(capacity: usize) -> Self {
        ParseCache { capacity: capacity.max(1), entries: HashMap::new(), clock: 0, stats: CacheStats::default() }
    }

    /// The parsed file for `name` with content `text`, parsing it if it is not cached.
    pub fn get_or_parse(&mut self, name: &str, text: &str) -> ParseResult {
        if let Some(hit) = self.get(name, text) {
            return hit;
        }
        let result = SourceFile::parse(name, text).map(Arc::new);
        self.insert(name, text, result.clone());
        result
    }

    /// The cached result for `name` if it was parsed from exactly `text`.
    pub fn get(&mut self, name: &str, text: &str) -> Option<ParseResult> {
        self.clock += 1;
        let clock = self.clock;
        match self.entries.get_mut(name) {
            Some(entry) if entry.text.len() == text.len() && *entry.text == *text => {
                entry.last_used = clock;
                self.stats.hits += 1;
                Some(entry.result.clone())
            }
            _ => {
                self.stats.misses += 1;
                None
            }
        }
    }

    /// Stores the result of parsing `text` as `name`, replacing any entry for `name`.
    pub fn insert(&mut self, name: &str, text: &str, result: ParseResult) {
        if !self.entries.contains_key(name) && self.entries.len() >= self.capacity {
            self.evict_least_recently_used();
        }
        self.clock += 1;
        self.entries.insert(name.into(), Entry { text: text.into(), result, last_used: self.clock });
    }

    /// Drops every entry.
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// Number of cached files.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no file is cached.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Hit, miss and eviction counts since creation.
    pub fn stats(&self) -> CacheStats {
        self.stats
    }

    fn evict_least_recently_used(&mut self) {
        // Linear in the capacity, but only runs next to a parse, which costs far more.
        let oldest = self.entries.iter().min_by_key(|(_, entry)| entry.last_used).map(|(name, _)| name.clone());
        if let Some(name) = oldest {
            self.entries.remove(&name);
            self.stats.evictions += 1;
        }
    }
}

impl Default for ParseCache {
    /// A cache of 128 files.
    fn default() -> Self {
        ParseCache::new(128)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn parses_once_and_replaces_on_change() {
        let mut cache = ParseCache::new(2);
        let a1 = cache.get_or_parse("a.py", "x = 1\n").unwrap();
        let a2 = cache.get_or_parse("a.py", "x = 1\n").unwrap();
        assert!(Arc::ptr_eq(&a1, &a2));
        let a3 = cache.get_or_parse("a.py", "x = 2\n").unwrap();
        assert!(!Arc::ptr_eq(&a1, &a3));
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.stats().hits, 1);
        assert_eq!(cache.stats().misses, 2);
    }

    #[test]
    fn evicts_least_recently_used() {
        let mut cache = ParseCache::new(2);
        cache.get_or_parse("a.py", "a = 1\n").unwrap();
        cache.get_or_parse("b.py", "b = 1\n").unwrap();
        cache.get_or_parse("a.py", "a = 1\n").unwrap();
        cache.get_or_parse("c.py", "c = 1\n").unwrap();
        assert_eq!(cache.len(), 2);
        assert!(cache.get("a.py", "a = 1\n").is_some());
        assert!(cache.get("b.py", "b = 1\n").is_none());
        assert_eq!(cache.stats().evictions, 1);
    }

    #[test]
    fn failures_are_cached() {
        let mut cache = ParseCache::new(2);
        assert!(cache.get_or_parse("bad.py", "def (:\n").is_err());
        assert!(matches!(cache.get("bad.py", "def (:\n"), Some(Err(_))));
    }
}
