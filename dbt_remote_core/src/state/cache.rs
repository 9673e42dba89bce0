//! Cache entries: what the runner keeps between jobs so that the next matching job starts
//! from it (dbt's partial parse state, an installed `dbt_packages/`), by [`CacheKey`].
//!
//! A cache entry is not job data: it belongs to no job, [`retention`](crate::retention)
//! leaves it, and losing one only costs the next job a full parse or a `dbt deps`. Its key
//! is a SHA-256 over the inputs that select it, so a job only ever gets an entry its own
//! inputs name.

use std::fmt;

use crate::{Error, Result};

/// Default largest cache entry a store keeps (64 MiB): a larger one is refused, not stored.
pub const DEFAULT_MAX_CACHE_ENTRY_BYTES: u64 = 64 * 1024 * 1024;

/// What a cache entry holds; each kind has its own namespace of keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CacheKind {
    /// dbt's `target/partial_parse.msgpack`.
    PartialParse,
    /// A zip of the `dbt_packages/` that `dbt deps` installed.
    Deps,
}

impl CacheKind {
    /// Every kind.
    pub const ALL: [CacheKind; 2] = [CacheKind::PartialParse, CacheKind::Deps];

    /// Its stable name, used in store paths and object names.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheKind::PartialParse => "partial-parse",
            CacheKind::Deps => "deps",
        }
    }
}

impl fmt::Display for CacheKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The key of a cache entry: its kind and a SHA-256 over what selects it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CacheKey {
    pub kind: CacheKind,
    pub hash: [u8; 32],
}

impl CacheKey {
    pub fn new(kind: CacheKind, hash: [u8; 32]) -> Self {
        CacheKey { kind, hash }
    }

    /// The hash as 64 lowercase hex digits.
    pub fn hex(&self) -> String {
        hex::encode(self.hash)
    }

    /// The entry's path relative to a store's root or prefix: `cache/<kind>/<hex>`.
    pub fn path(&self) -> String {
        format!("cache/{}/{}", self.kind, self.hex())
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} cache entry {}", self.kind, self.hex())
    }
}

/// Fails with [`Error::TooLarge`] when an entry of `size` bytes is past `max`: stores refuse
/// it rather than keep it.
pub fn check_size(key: &CacheKey, size: u64, max: u64) -> Result<()> {
    if size > max {
        return Err(Error::TooLarge {
            what: key.to_string(),
            size,
            limit: max,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_their_kind_and_hash() {
        let key = CacheKey::new(CacheKind::Deps, [0xab; 32]);
        assert_eq!(key.path(), format!("cache/deps/{}", "ab".repeat(32)));
        let other = CacheKey::new(CacheKind::PartialParse, [0xab; 32]);
        assert_ne!(key.path(), other.path());
        assert!(check_size(&key, 10, 10).is_ok());
        assert!(matches!(
            check_size(&key, 11, 10),
            Err(Error::TooLarge { size: 11, .. })
        ));
    }
}
