//! What a purge leaves in the stores. Stores have no index by route, so a route purge leaves a
//! watermark: entries of the route stored before it are not served any more (and are evicted or
//! expire in time); the Redis store also deletes them. The purge endpoint and the CLI's client
//! are in `admin/purge.rs`.

use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

/// Per route tag, the time of its last purge.
#[derive(Default)]
pub struct Watermarks(ArcSwap<HashMap<String, SystemTime>>);

impl Watermarks {
    /// An entry of route `tag` stored (or revalidated) at `stored` was purged since.
    pub fn hides(&self, tag: &str, stored: SystemTime) -> bool {
        let marks = self.0.load();
        !marks.is_empty() && marks.get(tag).is_some_and(|at| stored <= *at)
    }

    pub fn purge(&self, tag: &str) {
        let now = SystemTime::now();
        self.0.rcu(|m| {
            let mut m = HashMap::clone(m);
            m.insert(tag.to_string(), now);
            Arc::new(m)
        });
    }
}

/// The tag a route's entries carry (their key's `user_tag`, part of Redis key names): 16 hex
/// digits of a hash of the route's label.
pub fn route_tag(label: &str) -> String {
    let hash = pingora::cache::key::hash_key(label);
    let mut hex = Vec::with_capacity(16);
    crate::text::push_hex(&mut hex, &hash[..8]);
    String::from_utf8(hex).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_purge_hides_older_entries_of_its_route_only() {
        let w = Watermarks::default();
        let before = SystemTime::now() - Duration::from_secs(1);
        assert!(!w.hides("a", before));
        w.purge("a");
        assert!(w.hides("a", before));
        assert!(!w.hides("b", before));
        assert!(!w.hides("a", SystemTime::now() + Duration::from_secs(1)));
        assert_eq!(route_tag("/api/*").len(), 16);
        assert_ne!(route_tag("/api/*"), route_tag("/other/*"));
    }
}
