#!/usr/bin/env bash
# Quickstart: builds clawgate and the mock backend, starts both (conf/quickstart.yaml), prints
# requests to try, and runs until Ctrl-C, which stops both.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup.sh
echo "Building (the first build takes a few minutes)..." >&2
cargo build --release -p clawgate -p mock-backend --bins
bin=target/release

"$bin/mock-backend" 127.0.0.1:3000 &
backend=$!
trap 'kill $backend 2>/dev/null; wait 2>/dev/null' EXIT INT TERM
for _ in $(seq 1 100); do
  curl -fs http://127.0.0.1:3000/__stats >/dev/null 2>&1 && break
  if ! kill -0 $backend 2>/dev/null; then echo "the mock backend did not start (is port 3000 taken?)" >&2; exit 1; fi
  sleep 0.1
done

"$bin/clawgate" start --foreground --config conf/quickstart.yaml &
gateway=$!
trap 'kill $gateway $backend 2>/dev/null; wait 2>/dev/null' EXIT INT TERM

for _ in $(seq 1 100); do
  curl -fs http://127.0.0.1:8080/api/v1/health >/dev/null 2>&1 && break
  if ! kill -0 $gateway 2>/dev/null; then echo "clawgate did not start" >&2; exit 1; fi
  sleep 0.1
done

cat <<'TXT'

clawgate is running on http://127.0.0.1:8080 in front of the mock backend (127.0.0.1:3000).
Try, from another terminal:

  curl http://127.0.0.1:8080/api/v1/health
  curl http://127.0.0.1:8080/api/v1/tools/search?q=weather
  curl http://127.0.0.1:8080/api/v1/llm/v1/chat/completions -H 'content-type: application/json' \
       -d '{"model":"mock-gpt","messages":[{"role":"user","content":"hello"}]}'
  curl -N http://127.0.0.1:8080/api/v1/llm/v1/chat/completions \
       -d '{"model":"mock-gpt","stream":true,"messages":[{"role":"user","content":"hello"}]}'
  curl http://127.0.0.1:8080/api/v1/nowhere        # a JSON 404
  curl -i http://127.0.0.1:8080/api/v1/agents/hello                              # 401
  curl -i http://127.0.0.1:8080/api/v1/agents/hello -H 'X-API-Key: demo-agent-key'  # as demo-agent
  curl http://127.0.0.1:8080/metrics          # Prometheus metrics (the access log is this terminal)
  target/release/clawgate status --config conf/quickstart.yaml

Press Ctrl-C to stop.
TXT
wait $gateway
