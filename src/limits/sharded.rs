//! Shared values by key, in shards that each have their own lock: the request limits' buckets
//! and lease mode's slices. Keys are reduced to a keyed 64-bit hash (collisions cannot be
//! crafted from outside).

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::{Arc, RwLock, RwLockWriteGuard};

const SHARDS: usize = 64;

pub type Shard<V> = RwLock<HashMap<u64, Arc<V>>>;

pub struct Sharded<V> {
    shards: Box<[Shard<V>]>,
    hasher: RandomState,
}

impl<V> Default for Sharded<V> {
    fn default() -> Self {
        Sharded {
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
            hasher: RandomState::default(),
        }
    }
}

impl<V> Sharded<V> {
    /// The value of `key`, found under the shard's read lock; else the key's hash and its
    /// shard, write-locked, for the caller to add it.
    #[allow(clippy::type_complexity)]
    pub fn find(
        &self,
        key: impl Hash,
    ) -> Result<Arc<V>, (u64, RwLockWriteGuard<'_, HashMap<u64, Arc<V>>>)> {
        let k = self.hasher.hash_one(key);
        let shard = &self.shards[(k as usize) % SHARDS];
        if let Some(v) = shard.read().unwrap_or_else(|p| p.into_inner()).get(&k) {
            return Ok(v.clone());
        }
        Err((k, shard.write().unwrap_or_else(|p| p.into_inner())))
    }

    pub fn shards(&self) -> impl Iterator<Item = &Shard<V>> {
        self.shards.iter()
    }

    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().map_or(0, |m| m.len()))
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
