// Ramping arrival rate: up to RATE requests a second, held, then down.
import { TREND_STATS } from './common.js';

const rate = Number(__ENV.RATE || 500);
export const options = {
  summaryTrendStats: TREND_STATS,
  scenarios: {
    load: {
      executor: 'ramping-arrival-rate',
      startRate: Math.ceil(rate / 10),
      timeUnit: '1s',
      preAllocatedVUs: 50,
      maxVUs: 200,
      stages: [
        { target: rate, duration: __ENV.RAMP || '10s' },
        { target: rate, duration: __ENV.HOLD || '20s' },
        { target: 0, duration: '5s' },
      ],
    },
  },
  thresholds: {
    http_req_failed: ['rate<0.001'],
    http_req_duration: ['p(95)<100', 'p(99)<300'],
  },
};

export { agentCall as default, handleSummary } from './common.js';
