// A few requests a second for 10 s: everything answers, quickly.
import { sleep } from 'k6';
import { agentCall, TREND_STATS } from './common.js';

export const options = {
  summaryTrendStats: TREND_STATS,
  vus: 2,
  duration: __ENV.DURATION || '10s',
  thresholds: {
    http_req_failed: ['rate==0'],
    http_req_duration: ['p(95)<200', 'p(99)<500'],
  },
};

export default function () {
  agentCall();
  sleep(0.05);
}

export { handleSummary } from './common.js';
