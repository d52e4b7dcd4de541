//! `embedder.kind: openai`: vectors from an OpenAI-compatible embeddings API (`POST
//! {url}/embeddings` with `{"model", "input"}`), through the gateway's own HTTP client. Any
//! failure or a late answer is a MISS, never an error to the client.

use super::embed::Miss;
use crate::http_client::{exchange, Call, Target};
use bytes::Bytes;
use pingora::connectors::http::Connector;
use std::time::Duration;

/// The largest answer read (a 3,072-dimension vector in JSON is about 70 KB).
const MAX_ANSWER: usize = 1 << 20;

pub struct Remote {
    /// `{url}/embeddings`.
    endpoint: String,
    model: Option<String>,
    /// `Bearer <api_key>`, when there is one.
    authorization: Option<String>,
    connector: Connector,
}

impl Remote {
    pub fn new(url: &str, model: Option<String>, api_key: Option<&str>) -> Remote {
        Remote {
            endpoint: format!("{}/embeddings", url.trim_end_matches('/')),
            model,
            authorization: api_key.map(|k| format!("Bearer {k}")),
            connector: Connector::new(None),
        }
    }

    /// The text's unit vector, or why not within `timeout`.
    pub async fn embed(&self, text: &str, timeout: Duration) -> Result<Vec<f32>, Miss> {
        let work = async {
            let target = Target::resolve(&self.endpoint, timeout)
                .await
                .map_err(|e| self.failed(&e))?;
            let mut body = serde_json::json!({"input": text});
            if let Some(m) = &self.model {
                body["model"] = m.as_str().into();
            }
            let mut headers = vec![("content-type", "application/json")];
            if let Some(a) = &self.authorization {
                headers.push(("authorization", a.as_str()));
            }
            let call = Call {
                method: "POST",
                headers: &headers,
                body: Some(Bytes::from(body.to_string())),
                max_answer: MAX_ANSWER,
            };
            match exchange(&self.connector, &target, call, timeout).await {
                Ok((200, answer)) => vector_of(&answer).map_err(|e| self.failed(&e)),
                Ok((status, _)) => Err(self.failed(&format!("answered {status}"))),
                Err(e) => Err(self.failed(&e)),
            }
        };
        tokio::time::timeout(timeout, work)
            .await
            .unwrap_or(Err(Miss::Timeout))
    }

    fn failed(&self, why: &str) -> Miss {
        // The endpoint holds no secret (the key travels in a header).
        log::warn!("embeddings from {}: {why}", self.endpoint);
        Miss::Failed
    }
}

/// The first vector of an embeddings answer, normalised to unit length (not every API
/// returns unit vectors, and the index compares by dot product).
fn vector_of(answer: &[u8]) -> Result<Vec<f32>, String> {
    #[derive(serde::Deserialize)]
    struct Answer {
        data: Vec<Item>,
    }
    #[derive(serde::Deserialize)]
    struct Item {
        embedding: Vec<f32>,
    }
    let a: Answer =
        serde_json::from_slice(answer).map_err(|e| format!("not an embeddings answer ({e})"))?;
    let mut v = a
        .data
        .into_iter()
        .next()
        .map(|i| i.embedding)
        .filter(|v| !v.is_empty())
        .ok_or("the answer holds no vector")?;
    if !super::embed::normalise(&mut v) {
        return Err("the vector is zero or not finite".into());
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_and_normalised() {
        let v = vector_of(br#"{"data": [{"embedding": [3.0, 4.0]}]}"#).unwrap();
        assert_eq!(v, [0.6, 0.8]);
        for bad in [
            &b"nope"[..],
            br#"{"data": []}"#,
            br#"{"data": [{"embedding": []}]}"#,
            br#"{"data": [{"embedding": [0.0, 0.0]}]}"#,
            br#"{"error": {"message": "x"}}"#,
        ] {
            assert!(vector_of(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
