"""An independent sentence encoder for all-MiniLM-L6-v2, in numpy: the reference the gateway's
candle encoder is checked against (tests/semantic_embed.rs holds the similarities it printed).

BERT as sentence-transformers runs it: WordPiece ids with [CLS]/[SEP], no padding, at most 256
tokens; embeddings (word + position + type 0) and LayerNorm; per layer self-attention (12 heads),
residual and LayerNorm, a GELU (erf) feed-forward, residual and LayerNorm; then the mean of the
token vectors, L2-normalised.

    python3 -m venv /tmp/ref && /tmp/ref/bin/pip install numpy safetensors tokenizers
    /tmp/ref/bin/python load-tests/semantic/reference.py models/all-MiniLM-L6-v2
"""

import json
import math
import sys

import numpy as np
from safetensors.numpy import load_file
from tokenizers import Tokenizer

PAIRS = [
    ("How do I reset my password?", "What is the way to reset my password?"),
    ("How do I reset my password?", "What is the weather in Paris tomorrow?"),
    ("A man is eating food.", "A man is eating a piece of bread."),
    ("Show the invoices of March 2024", "Show the invoices of April 2024"),
]


def layer_norm(x, w, b, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * w + b


def gelu(x):
    erf = np.vectorize(math.erf)
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


def encode(model_dir, text):
    cfg = json.load(open(f"{model_dir}/config.json"))
    w = load_file(f"{model_dir}/model.safetensors")
    # Checkpoints name tensors with or without a "bert." prefix.
    def t(name):
        return (w.get(name) if name in w else w[f"bert.{name}"]).astype(np.float64)
    tok = Tokenizer.from_file(f"{model_dir}/tokenizer.json")
    tok.no_padding()
    tok.enable_truncation(256)
    ids = tok.encode(text).ids
    n, eps = len(ids), cfg["layer_norm_eps"]
    h = t("embeddings.word_embeddings.weight")[ids]
    h = h + t("embeddings.position_embeddings.weight")[:n]
    h = h + t("embeddings.token_type_embeddings.weight")[0]
    h = layer_norm(h, t("embeddings.LayerNorm.weight"), t("embeddings.LayerNorm.bias"), eps)
    heads = cfg["num_attention_heads"]
    d = cfg["hidden_size"] // heads
    for i in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        lin = lambda x, name: x @ t(p + name + ".weight").T + t(p + name + ".bias")
        q = lin(h, "attention.self.query").reshape(n, heads, d).transpose(1, 0, 2)
        k = lin(h, "attention.self.key").reshape(n, heads, d).transpose(1, 0, 2)
        v = lin(h, "attention.self.value").reshape(n, heads, d).transpose(1, 0, 2)
        s = q @ k.transpose(0, 2, 1) / math.sqrt(d)
        s = np.exp(s - s.max(-1, keepdims=True))
        s = s / s.sum(-1, keepdims=True)
        a = (s @ v).transpose(1, 0, 2).reshape(n, heads * d)
        a = lin(a, "attention.output.dense")
        h = layer_norm(h + a, t(p + "attention.output.LayerNorm.weight"),
                       t(p + "attention.output.LayerNorm.bias"), eps)
        f = lin(gelu(lin(h, "intermediate.dense")), "output.dense")
        h = layer_norm(h + f, t(p + "output.LayerNorm.weight"), t(p + "output.LayerNorm.bias"), eps)
    v = h.mean(0)
    return v / np.linalg.norm(v)


def main():
    model_dir = sys.argv[1] if len(sys.argv) > 1 else "models/all-MiniLM-L6-v2"
    for a, b in PAIRS:
        sim = float(encode(model_dir, a) @ encode(model_dir, b))
        print(f"{sim:.5f}  {a!r} ~ {b!r}")
    first = encode(model_dir, PAIRS[0][0])
    print("first 4 dimensions of the first text:", [round(float(x), 5) for x in first[:4]])


if __name__ == "__main__":
    main()
