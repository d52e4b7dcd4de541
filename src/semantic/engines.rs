//! The embedders the running configuration uses, one per distinct `embedder` block, made when the
//! gateway starts or a reload first names one (a model directory is read once, not per route).

use super::embed::{Embedder, Encoder, Miss};
use super::remote::Remote;
use super::settings::EmbedderSettings;
use arc_swap::ArcSwap;
use std::sync::Arc;
use std::time::Duration;

/// Questions waiting for an embedding thread before a new one is a MISS (`Busy`): at ~10 ms
/// each, a queue this long is already more than `embed_timeout`'s default worth of work.
const QUEUE: usize = 32;

/// One embedder: the model in process, or an embeddings API.
pub enum Embedding {
    Local(Embedder),
    Remote(Box<Remote>),
}

impl Embedding {
    pub async fn embed(&self, text: &str, timeout: Duration) -> Result<Vec<f32>, Miss> {
        match self {
            Embedding::Local(e) => e.embed(text, timeout).await,
            Embedding::Remote(r) => r.embed(text, timeout).await,
        }
    }

    fn start(s: &EmbedderSettings) -> Result<Embedding, String> {
        Ok(match s {
            EmbedderSettings::Local { model_dir } => {
                let encoder = Encoder::load(model_dir)?;
                // Half the cores: the other half keep proxying while questions are embedded.
                let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
                Embedding::Local(Embedder::start(encoder, (cores / 2).max(1), QUEUE)?)
            }
            EmbedderSettings::OpenAi {
                url,
                model,
                api_key,
            } => Embedding::Remote(Box::new(Remote::new(
                url,
                model.clone(),
                api_key.as_deref(),
            ))),
        })
    }
}

type Started = Vec<(EmbedderSettings, Arc<Embedding>)>;

/// The embedders made so far (a handful at most: looked up by a linear scan).
#[derive(Default)]
pub struct Engines {
    started: ArcSwap<Started>,
}

impl Engines {
    /// Makes the embedders of `wanted` not made yet (loading a model takes a fraction of a
    /// second: call this before the configuration that needs them is swapped in). Embedders no
    /// longer named stay until the process ends: a reload back to them is then instant.
    pub fn prepare<'a>(
        &self,
        wanted: impl IntoIterator<Item = &'a EmbedderSettings>,
    ) -> Result<(), String> {
        let mut started: Started = (*self.started.load_full()).clone();
        let before = started.len();
        for s in wanted {
            if !started.iter().any(|(have, _)| have == s) {
                let e = Embedding::start(s).map_err(|e| format!("semantic cache: {e}"))?;
                started.push((s.clone(), Arc::new(e)));
            }
        }
        if started.len() != before {
            self.started.store(Arc::new(started));
        }
        Ok(())
    }

    pub fn get(&self, s: &EmbedderSettings) -> Option<Arc<Embedding>> {
        let started = self.started.load();
        started
            .iter()
            .find(|(have, _)| have == s)
            .map(|(_, e)| e.clone())
    }
}
