// Shared by the scenarios: the gateway's address and the article's agents (finance-agent with
// an API key, data-agent with a JWT), from the environment load-tests/run.sh sets.
import http from 'k6/http';
import { check } from 'k6';

export const TREND_STATS = ['avg', 'min', 'med', 'max', 'p(90)', 'p(95)', 'p(99)'];

export const BASE = `${__ENV.BASE_URL || 'http://127.0.0.1:8080'}/api/v1`;
const API_KEY = __ENV.API_KEY || '';
const JWT = __ENV.JWT || '';

// One request as one of the two agents, alternating; a tool call, sometimes a cached one.
export function agentCall() {
  const asFinance = __ITER % 2 === 0;
  const headers = asFinance ? { 'x-api-key': API_KEY } : { authorization: `Bearer ${JWT}` };
  const path = __ITER % 5 === 0 ? '/cached/popular' : `/tools/lookup?n=${__ITER % 100}`;
  const r = http.get(`${BASE}${path}`, { headers, tags: { agent: asFinance ? 'finance' : 'data' } });
  check(r, { 'status 200': (res) => res.status === 200 });
  return r;
}

// The summary file named by SUMMARY (and the usual text on stdout); every scenario exports it.
export function handleSummary(data) {
  const out = { stdout: textSummary(data) };
  if (__ENV.SUMMARY) out[__ENV.SUMMARY] = JSON.stringify(data, null, 2);
  return out;
}

function textSummary(data) {
  const m = data.metrics;
  const d = m.http_req_duration ? m.http_req_duration.values : {};
  const f = m.http_req_failed ? m.http_req_failed.values : {};
  const reqs = m.http_reqs ? m.http_reqs.values.count : 0;
  const lines = [
    `requests: ${reqs}`,
    `failed: ${(f.passes || 0)} (${((f.rate || 0) * 100).toFixed(3)} %)`,
    `p95: ${(d['p(95)'] || 0).toFixed(2)} ms, p99: ${(d['p(99)'] || 0).toFixed(2)} ms, max: ${(d.max || 0).toFixed(2)} ms`,
  ];
  for (const [name, t] of Object.entries(data.metrics)) {
    if (t.thresholds) {
      for (const [expr, r] of Object.entries(t.thresholds)) {
        lines.push(`threshold ${name} ${expr}: ${r.ok ? 'ok' : 'FAILED'}`);
      }
    }
  }
  return lines.join('\n') + '\n';
}
