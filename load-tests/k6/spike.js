// A quiet rate, a sudden spike to SPIKE requests a second, and back.
import { TREND_STATS } from './common.js';

const spike = Number(__ENV.SPIKE || 1500);
export const options = {
  summaryTrendStats: TREND_STATS,
  scenarios: {
    spike: {
      executor: 'ramping-arrival-rate',
      startRate: 50,
      timeUnit: '1s',
      preAllocatedVUs: 100,
      maxVUs: 400,
      stages: [
        { target: 50, duration: '5s' },
        { target: spike, duration: '2s' },
        { target: spike, duration: '10s' },
        { target: 50, duration: '2s' },
        { target: 50, duration: '5s' },
      ],
    },
  },
  thresholds: {
    http_req_failed: ['rate<0.01'],
    http_req_duration: ['p(95)<300', 'p(99)<1000'],
  },
};

export { agentCall as default, handleSummary } from './common.js';
