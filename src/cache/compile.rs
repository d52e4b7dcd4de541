//! The cache's part of the configuration: the gateway-wide store settings and each route's
//! rules (`caching`, the route's over the gateway's, field by field).

use super::{RouteCache, Settings};
use crate::at;
use crate::config::schema;
use crate::config::Problem;
use std::time::Duration;

impl Settings {
    /// The gateway-wide store settings (defaults: 256 MiB, objects up to 4 MiB, 10 s lock wait).
    pub fn compile(c: Option<&schema::Caching>) -> Result<Settings, Problem> {
        let max_size = c.and_then(|c| c.max_size).map_or(256 << 20, |s| s.0);
        let max_object_size = c.and_then(|c| c.max_object_size).map_or(4 << 20, |s| s.0);
        if max_size == 0 {
            return Err(Problem::new(
                at!("caching", "max_size"),
                "must be larger than 0",
            ));
        }
        // The memory store weighs entries in KiB in a u16.
        if max_object_size == 0 || max_object_size > 64 << 20 {
            return Err(Problem::new(
                at!("caching", "max_object_size"),
                "must be between 1 byte and 64MB",
            ));
        }
        let store = c
            .and_then(|c| c.store.as_deref())
            .filter(|s| *s != "memory");
        if let Some(url) = store {
            let shown = crate::redis_link::redact(url);
            let schemes = [
                "redis://",
                "rediss://",
                "redis+cluster://",
                "rediss+cluster://",
            ];
            if !schemes.iter().any(|s| url.starts_with(s)) {
                return Err(Problem::new(
                    at!("caching", "store"),
                    format!("{shown:?} is not a store; use memory or a redis:// URL"),
                ));
            }
            crate::redis_link::check(url).map_err(|m| Problem::new(at!("caching", "store"), m))?;
        }
        let mut admin_networks = Vec::new();
        match c.and_then(|c| c.admin_networks.as_ref()) {
            Some(list) => {
                for (i, n) in list.iter().enumerate() {
                    admin_networks.push(
                        crate::client_addr::Cidr::parse(n)
                            .map_err(|m| Problem::new(at!("caching", "admin_networks", i), m))?,
                    );
                }
            }
            None => {
                for n in ["127.0.0.0/8", "::1/128"] {
                    admin_networks.push(
                        crate::client_addr::Cidr::parse(n)
                            .map_err(|m| Problem::new(at!("caching", "admin_networks"), m))?,
                    );
                }
            }
        }
        Ok(Settings {
            admin_networks,
            redis: store.map(str::to_string),
            store_timeout: c
                .and_then(|c| c.store_timeout)
                .map_or(Duration::from_millis(100), |d| d.0),
            max_size,
            max_object_size: max_object_size.min(max_size),
            lock_timeout: c
                .and_then(|c| c.lock_timeout)
                .map_or(Duration::from_secs(10), |d| d.0),
        })
    }
}

impl RouteCache {
    /// A route's `caching` over the gateway-wide one, field by field; `None` when it does not cache.
    pub fn compile(
        global: Option<&schema::Caching>,
        own: Option<&schema::Caching>,
        i: usize,
        label: &str,
    ) -> Result<Option<RouteCache>, Problem> {
        let pick = |f: fn(&schema::Caching) -> bool| own.is_some_and(f);
        let enabled = own
            .and_then(|c| c.enabled)
            .or_else(|| global.and_then(|c| c.enabled))
            .is_some_and(|f| f.0);
        if !enabled {
            return Ok(None);
        }
        let (key_list, key_at) = if pick(|c| c.cache_key.is_some()) {
            (
                own.and_then(|c| c.cache_key.as_ref()),
                at!("routes", i, "caching", "cache_key"),
            )
        } else {
            (
                global.and_then(|c| c.cache_key.as_ref()),
                at!("caching", "cache_key"),
            )
        };
        let mut key = Vec::new();
        for (j, part) in key_list.into_iter().flatten().enumerate() {
            let mut at = key_at.clone();
            at.push(crate::config::locate::IntoSeg::into_seg(j));
            key.push(super::key::KeyPart::parse(part).map_err(|m| Problem::new(at, m))?);
        }
        let ttl = own
            .and_then(|c| c.ttl)
            .or_else(|| global.and_then(|c| c.ttl))
            .map_or(Duration::from_secs(300), |d| d.0);
        if ttl.is_zero() {
            let at = if pick(|c| c.ttl.is_some()) {
                at!("routes", i, "caching", "ttl")
            } else {
                at!("caching", "ttl")
            };
            return Err(Problem::new(at, "must be longer than 0"));
        }
        for (field, set) in [
            ("store", pick(|c| c.store.is_some())),
            ("max_size", pick(|c| c.max_size.is_some())),
            ("max_object_size", pick(|c| c.max_object_size.is_some())),
            ("lock_timeout", pick(|c| c.lock_timeout.is_some())),
            ("store_timeout", pick(|c| c.store_timeout.is_some())),
            ("admin_networks", pick(|c| c.admin_networks.is_some())),
        ] {
            if set {
                return Err(Problem::new(
                    at!("routes", i, "caching", field),
                    "is a setting of the gateway-wide caching section, not of a route",
                ));
            }
        }
        Ok(Some(RouteCache {
            ttl,
            shared: own
                .and_then(|c| c.shared)
                .or_else(|| global.and_then(|c| c.shared))
                .is_some_and(|f| f.0),
            key,
            tag: super::purge::route_tag(label),
        }))
    }
}
