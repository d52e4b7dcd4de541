// A steady rate for a long time (DURATION, default 5m): no errors, no creeping latency.
import { TREND_STATS } from './common.js';

export const options = {
  summaryTrendStats: TREND_STATS,
  scenarios: {
    soak: {
      executor: 'constant-arrival-rate',
      rate: Number(__ENV.RATE || 200),
      timeUnit: '1s',
      duration: __ENV.DURATION || '5m',
      preAllocatedVUs: 50,
      maxVUs: 200,
    },
  },
  thresholds: {
    http_req_failed: ['rate<0.001'],
    http_req_duration: ['p(95)<100', 'p(99)<300'],
  },
};

export { agentCall as default, handleSummary } from './common.js';
