// Steady load while load-tests/run.sh upgrades one instance, reloads another and kills a third:
// the failures are what an operator would see.
import { TREND_STATS } from './common.js';

export const options = {
  summaryTrendStats: TREND_STATS,
  scenarios: {
    steady: {
      executor: 'constant-arrival-rate',
      rate: Number(__ENV.RATE || 300),
      timeUnit: '1s',
      duration: __ENV.DURATION || '30s',
      preAllocatedVUs: 50,
      maxVUs: 200,
    },
  },
  thresholds: {
    http_req_failed: ['rate<0.001'],
    http_req_duration: ['p(95)<200', 'p(99)<1000'],
  },
};

export { agentCall as default, handleSummary } from './common.js';
