//! Sentence embeddings in process: a BERT-family sentence-transformers model (all-MiniLM-L6-v2 by
//! default, installed by `scripts/fetch-model.sh`) run with candle on the CPU, mean-pooled and
//! L2-normalised as sentence-transformers computes them; and the small bounded pool of threads
//! that runs it, so that no Pingora worker ever waits on a model.

use candle_core::{Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config, DTYPE};
use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokenizers::{Tokenizer, TruncationParams};

/// Longer texts are cut here, as sentence-transformers does for this model family.
pub const MAX_TOKENS: usize = 256;

/// A loaded model: the tokenizer, the BERT weights and the width of its vectors.
pub struct Encoder {
    tokenizer: Tokenizer,
    model: BertModel,
    dims: usize,
}

impl Encoder {
    /// Loads a sentence-transformers directory (`config.json`, `tokenizer.json`,
    /// `model.safetensors`).
    pub fn load(dir: &Path) -> Result<Encoder, String> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read(&path)
                .map_err(|e| format!("{}: {}", path.display(), crate::text::io_reason(&e)))
        };
        let config: Config = serde_json::from_slice(&read("config.json")?).map_err(|e| {
            format!(
                "{}: not a BERT config ({e})",
                dir.join("config.json").display()
            )
        })?;
        let mut tokenizer = Tokenizer::from_bytes(read("tokenizer.json")?)
            .map_err(|e| format!("{}: {e}", dir.join("tokenizer.json").display()))?;
        // The file comes set to pad every text to 128 tokens: padding only costs time here,
        // and would change the mean of the token vectors.
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MAX_TOKENS,
                ..Default::default()
            }))
            .map_err(|e| format!("tokenizer: {e}"))?;
        let weights = read("model.safetensors")?;
        let vb = VarBuilder::from_buffered_safetensors(weights, DTYPE, &Device::Cpu)
            .map_err(|e| format!("{}: {e}", dir.join("model.safetensors").display()))?;
        let model = BertModel::load(vb, &config)
            .map_err(|e| format!("{}: not a BERT model ({e})", dir.display()))?;
        Ok(Encoder {
            tokenizer,
            model,
            dims: config.hidden_size,
        })
    }

    /// The width of the vectors (384 for all-MiniLM-L6-v2).
    pub fn dims(&self) -> usize {
        self.dims
    }

    /// The unit-length vector of a text.
    pub fn embed(&self, text: &str) -> Result<Vec<f32>, String> {
        let encoding = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| format!("tokenizer: {e}"))?;
        let run = || -> candle_core::Result<Vec<f32>> {
            let ids = Tensor::new(encoding.get_ids(), &Device::Cpu)?.unsqueeze(0)?;
            let types = ids.zeros_like()?;
            let tokens = self.model.forward(&ids, &types, None)?;
            tokens.mean(1)?.squeeze(0)?.to_vec1::<f32>()
        };
        let mut v = run().map_err(|e| format!("model: {e}"))?;
        normalise(&mut v);
        Ok(v)
    }
}

/// Scales `v` to unit length; false when it has none (zero, or not finite).
pub fn normalise(v: &mut [f32]) -> bool {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if !norm.is_finite() || norm == 0.0 {
        return false;
    }
    v.iter_mut().for_each(|x| *x /= norm);
    true
}

/// The cosine similarity of two unit vectors.
pub fn similarity(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Why no vector came back: each is a cache MISS, never an error to the client.
#[derive(Debug, PartialEq, Eq)]
pub enum Miss {
    /// Every thread is busy and the queue is full.
    Busy,
    /// The answer did not come within the timeout.
    Timeout,
    /// The model failed on this text (or the pool is gone).
    Failed,
}

struct Job {
    text: String,
    reply: tokio::sync::oneshot::Sender<Result<Vec<f32>, String>>,
}

/// A few threads of their own run the encoder; requests hand them texts through a bounded queue
/// and wait without blocking their thread.
pub struct Embedder {
    jobs: SyncSender<Job>,
    dims: usize,
}

impl Embedder {
    pub fn start(encoder: Encoder, threads: usize, queue: usize) -> Result<Embedder, String> {
        let dims = encoder.dims();
        let encoder = Arc::new(encoder);
        let (jobs, rx) = sync_channel::<Job>(queue);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads.max(1) {
            let (encoder, rx) = (encoder.clone(), rx.clone());
            std::thread::Builder::new()
                .name(format!("embed-{i}"))
                .spawn(move || work(&encoder, &rx))
                .map_err(|e| format!("cannot start an embedding thread: {e}"))?;
        }
        Ok(Embedder { jobs, dims })
    }

    pub fn dims(&self) -> usize {
        self.dims
    }

    /// The text's vector, or why not within `timeout`.
    pub async fn embed(&self, text: &str, timeout: Duration) -> Result<Vec<f32>, Miss> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job = Job {
            text: text.to_string(),
            reply,
        };
        match self.jobs.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(Miss::Busy),
            Err(TrySendError::Disconnected(_)) => return Err(Miss::Failed),
        }
        match tokio::time::timeout(timeout, answer).await {
            Err(_) => Err(Miss::Timeout),
            Ok(Ok(Ok(v))) => Ok(v),
            Ok(Ok(Err(e))) => {
                log::warn!("embedding failed: {e}");
                Err(Miss::Failed)
            }
            Ok(Err(_)) => Err(Miss::Failed),
        }
    }
}

/// One pool thread: takes jobs until the pool is dropped. A job whose requester already gave up
/// (timed out) is skipped.
fn work(encoder: &Encoder, jobs: &Mutex<Receiver<Job>>) {
    loop {
        let job = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(poisoned) => poisoned.into_inner().recv(),
        };
        let Ok(job) = job else { return };
        if job.reply.is_closed() {
            continue;
        }
        let _ = job.reply.send(encoder.embed(&job.text));
    }
}
