//! The hit and miss handlers both stores use: a hit serves one `Bytes` (no copy, seekable for
//! ranges); a miss buffers the body, bounded, and hands it to the store when complete.

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use pingora::cache::storage::{HandleHit, HandleMiss, MissFinishType, Storage};
use pingora::cache::trace::SpanHandle;
use pingora::cache::CacheKey;
use pingora::{Error, ErrorType, Result};
use std::any::Any;
use std::future::Future;
use std::pin::Pin;

pub struct BodyHit {
    body: Bytes,
    done: bool,
    range: (usize, usize),
}

impl BodyHit {
    pub fn new(body: Bytes) -> BodyHit {
        let len = body.len();
        BodyHit {
            body,
            done: false,
            range: (0, len),
        }
    }
}

#[async_trait]
impl HandleHit for BodyHit {
    async fn read_body(&mut self) -> Result<Option<Bytes>> {
        if self.done {
            return Ok(None);
        }
        self.done = true;
        Ok(Some(self.body.slice(self.range.0..self.range.1)))
    }

    async fn finish(
        self: Box<Self>,
        _storage: &'static (dyn Storage + Sync),
        _key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<()> {
        Ok(())
    }

    fn can_seek(&self) -> bool {
        true
    }

    fn seek(&mut self, start: usize, end: Option<usize>) -> Result<()> {
        let len = self.body.len();
        let end = end.map_or(len, |e| e.min(len));
        if start > end {
            return Error::e_explain(ErrorType::InternalError, "seek past the end of the body");
        }
        self.range = (start, end);
        self.done = false;
        Ok(())
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync) {
        self
    }

    fn as_any_mut(&mut self) -> &mut (dyn Any + Send + Sync) {
        self
    }
}

pub type Store = Box<dyn FnOnce(Bytes) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// Buffers a response body up to `max` bytes, then `store`s it; a larger body is dropped
/// (Pingora's `max_file_size` normally stops it first).
pub struct Buffered {
    body: BytesMut,
    max: usize,
    too_big: bool,
    store: Option<Store>,
}

impl Buffered {
    pub fn new(max: usize, store: Store) -> Buffered {
        Buffered {
            body: BytesMut::new(),
            max,
            too_big: false,
            store: Some(store),
        }
    }
}

#[async_trait]
impl HandleMiss for Buffered {
    async fn write_body(&mut self, data: Bytes, _eof: bool) -> Result<()> {
        if self.too_big || self.body.len() + data.len() > self.max {
            self.too_big = true;
            self.body = BytesMut::new();
            return Ok(());
        }
        self.body.extend_from_slice(&data);
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<MissFinishType> {
        if self.too_big {
            return Ok(MissFinishType::Created(0));
        }
        let size = self.body.len();
        // The buffer grew by doubling: a stored entry keeps exactly its bytes (the memory
        // bound counts bodies, not the buffers they were read into).
        let body = if self.body.capacity() > size + size / 16 {
            Bytes::copy_from_slice(&self.body)
        } else {
            std::mem::take(&mut self.body).freeze()
        };
        if let Some(store) = self.store.take() {
            store(body).await;
        }
        Ok(MissFinishType::Created(size))
    }
}
