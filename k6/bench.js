// The one load script for py-serving-bench: GET ${TARGET}/hash in a loop, one request per
// iteration, against whichever server the environment names.
//
// Environment (k6 -e NAME=value, or the TestRun's runner env):
//   TARGET    required  server base URL, no trailing slash, e.g. http://127.0.0.1:8080
//                       (in the cluster: http://<server>.py-bench.svc:8080)
//   SERVER    required  server name, e.g. async-style: the `server` tag on every metric and the
//                       `source` every response must carry
//   PROFILE   optional  smoke (default) | quick | standard | open | seed  (table below)
//   SUMMARY   optional  path handleSummary writes the JSON summary to; unset = stdout only
//   RATE      open only required  arrival rate in requests per second, e.g. 2000
//   DURATION  open only optional  how long the open profile runs, a k6 duration (default 60s)
// A missing TARGET/SERVER, an unknown PROFILE or a bad RATE/DURATION throws one sentence naming
// the variable and an example, so k6 exits non-zero before any request.
//
// Profiles (closed ones use ramping-vus with no sleep, like the seed: each VU sends its next
// request as soon as the previous one answers):
//   smoke     5 VUs for 10 s                     does the wiring work (tests, dashboard check)
//   quick     10 s ramp to 64 VUs, 20 s hold, 5 s down   one machine, ~35 s per server
//   standard  30 s ramp to 128 VUs, 2 min hold, 10 s down one machine, ~2.7 min per server
//   open      constant-arrival-rate: RATE req/s for DURATION (open model, no coordinated
//             omission: latency is measured against a fixed schedule; when the server falls
//             behind, k6 runs out of VUs and counts dropped_iterations instead of slowing down)
//   seed      2 min ramp to 15,000 VUs, 15 min hold, 30 s down   the seed benchmark's load
//
// Tags: options.tags sets `server` from SERVER. A command-line `--tag` REPLACES options.tags
// (k6 1.1.0, checked), so the TestRuns pass `--tag server=<SERVER> --tag testid=… --tag run=…`
// and setup() refuses to run when a --tag set lacks `server` or disagrees with SERVER.
//
// SUMMARY file (stable shape, version 1; durations in milliseconds):
//   { "version": 1, "server", "profile", "target", "tags": {…test-wide tags},
//     "rate": RATE|null, "duration": DURATION|null,          (open profile parameters)
//     "test_duration_s",
//     "http_reqs":          { "count", "rate" },               all requests, per second
//     "http_req_duration":  { "p50", "p90", "p95", "p99", "avg", "min", "max" }
//                            over SUCCESSFUL requests only (k6 expected_response:true), null if none
//     "http_req_failed":    { "rate", "passes", "fails" }     passes = failed requests
//     "checks":             { "rate", "passes", "fails" }     passes = checks that held
//     "iterations":         { "count", "rate" },
//     "dropped_iterations": { "count", "rate" },               zeros when none were dropped
//     "vus_max", "thresholds": { "<metric>": { "<expression>": true|false (held) } } }
// A short human summary goes to stdout; bench/cluster/results.py reads its duration, requests, failed
// requests and latency lines back from the runner pods' logs, so keep their format.
//
// What each request checks, and why not more: k6 is the load generator, and what it spends per
// request bounds what it can drive (on one core, k6 1.1.0 against a Go server that is never the
// limit: JSON.parse of every body plus three checks 5.9-7.0k req/s; a status check only 9.7-11.7k;
// docs/bench-local.md has the numbers before and after this script). So:
//   - every request: its status is checked ('status is 200') and k6 counts every failure
//     (http_req_failed: non-2xx, timeouts, resets), as before;
//   - the body (JSON whose `hash` is 64 hex and whose `source` is SERVER) on a deterministic
//     sample: each VU's first BODY_FIRST iterations (every connection's first answers), then about
//     one iteration in BODY_EVERY, chosen by a pseudo-random stream seeded by the VU's number (the
//     same choices every run) so the sample never falls into step with anything periodic a server
//     does. The other requests are read and discarded unparsed (responseType 'none'). A run of a few hundred thousand requests checks a few thousand bodies:
//     a server wrong in 1 answer of 100 shows tens of failed checks. bench/verify.py has already
//     checked each server's answers, its hash code and its work before it is measured.
//   The body checks carry the tag `body: sampled`, so their own threshold fails a run with a single
//   wrong sampled body, even while every status check holds.

import http from 'k6/http';
import { check } from 'k6';
import exec from 'k6/execution';

function fail(sentence) {
  throw new Error(sentence);
}

function required(name, example) {
  const value = __ENV[name];
  if (!value) fail(`${name} is not set: run k6 with -e ${name}=${example}.`);
  return value;
}

const TARGET = required('TARGET', 'http://127.0.0.1:8080').replace(/\/+$/, '');
const SERVER = required('SERVER', 'async-style');
const PROFILE = __ENV.PROFILE || 'smoke';
const SUMMARY = __ENV.SUMMARY || '';

function openScenario() {
  const rate = Number(required('RATE', '2000'));
  if (!Number.isInteger(rate) || rate < 1) {
    fail(`RATE must be a whole number of requests per second, got '${__ENV.RATE}': try -e RATE=2000.`);
  }
  const duration = __ENV.DURATION || '60s';
  if (!/^(?=.)(\d+h)?(\d+m)?(\d+s)?$/.test(duration)) {
    fail(`DURATION must be a k6 duration such as 60s or 2m30s, got '${duration}': try -e DURATION=60s.`);
  }
  return {
    executor: 'constant-arrival-rate',
    rate,
    timeUnit: '1s',
    duration,
    // Little's law: in-flight requests = rate x latency. Both servers answer in well under
    // 5 ms when not saturated (verified-here.md: 30-45 us of hashing per request), so VUs for
    // 20 ms of latency are allocated up front, and k6 may grow to 1 s worth of requests in
    // flight; past that the server is overloaded and the shortfall shows as dropped_iterations.
    preAllocatedVUs: Math.max(10, Math.ceil(rate * 0.02)),
    maxVUs: Math.max(50, Math.ceil(rate * 1.0)),
  };
}

function closed(stages) {
  return { executor: 'ramping-vus', startVUs: 0, stages, gracefulRampDown: '10s' };
}

const PROFILES = {
  smoke: () => ({ executor: 'constant-vus', vus: 5, duration: '10s' }),
  // One k6 process on one core drives ~8,400 req/s (verified-here.md); 64 VUs keep it busy
  // against either server on the other core while a local round of both servers stays under
  // 3 minutes including start-up.
  quick: () => closed([
    { duration: '10s', target: 64 },
    { duration: '20s', target: 64 },
    { duration: '5s', target: 0 },
  ]),
  standard: () => closed([
    { duration: '30s', target: 128 },
    { duration: '2m', target: 128 },
    { duration: '10s', target: 0 },
  ]),
  open: openScenario,
  // The seed's exact shape (huseyinbabal/benchmarks rust-server-vs-goserver k6 script).
  seed: () => ({
    executor: 'ramping-vus',
    startVUs: 0,
    stages: [
      { duration: '2m', target: 15000 },
      { duration: '15m', target: 15000 },
      { duration: '30s', target: 0 },
    ],
    gracefulRampDown: '30s',
  }),
};

if (!Object.prototype.hasOwnProperty.call(PROFILES, PROFILE)) {
  fail(`PROFILE '${PROFILE}' is unknown: use one of ${Object.keys(PROFILES).join(', ')}, e.g. -e PROFILE=quick.`);
}

export const options = {
  scenarios: { [PROFILE]: PROFILES[PROFILE]() },
  tags: { server: SERVER },
  summaryTrendStats: ['avg', 'min', 'p(50)', 'p(90)', 'p(95)', 'p(99)', 'max'],
  // Benchmarks report, they do not stop early: every threshold keeps abortOnFail false so a bad
  // run still completes and its numbers are kept (k6 then exits 99).
  thresholds: {
    http_req_failed: [{ threshold: 'rate<0.01', abortOnFail: false }],
    checks: [{ threshold: 'rate>0.99', abortOnFail: false }],
    // The sampled bodies are about 1 % of the checks, and a right server gets every one right:
    // a single wrong body fails this one (a server wrong in 1 answer of 100 gets ~1 % of its
    // sampled bodies wrong, which a rate>0.99 would let through).
    'checks{body:sampled}': [{ threshold: 'rate==1', abortOnFail: false }],
    // Always true; it exists so the summary carries this sub-metric: latency of successful
    // requests only, the figure the report compares.
    'http_req_duration{expected_response:true}': [{ threshold: 'max>=0', abortOnFail: false }],
  },
};

const URL = `${TARGET}/hash`;
const CHECKED = { tags: { name: 'hash' } };
const DISCARDED = { tags: { name: 'hash' }, responseType: 'none' };
const HEX64 = /^[0-9a-f]{64}$/;
const BODY_FIRST = 10;
const BODY_EVERY = 100;

export function setup() {
  const tags = exec.test.options.tags || {};
  if (tags.server !== SERVER) {
    fail(`The server tag is '${tags.server}' but SERVER is '${SERVER}': a --tag flag replaces the script's tags, so add --tag server=${SERVER}.`);
  }
}

// Each VU runs in a JS runtime of its own, so these are the VU's own: its iteration count and a
// linear congruential stream seeded by its number, whose high bits pick about one iteration in
// BODY_EVERY with no period a server could fall into step with. Inline arithmetic, because k6's
// JS engine is an interpreter: a hash function called per request, or k6/execution's iteration
// lookups, cost more than the body checks they spare (docs/bench-local.md has the measurements).
let iteration = -1;
let stream = Math.imul(__VU, 0x9e3779b1) >>> 0;

export default function () {
  iteration += 1;
  stream = (Math.imul(stream, 1103515245) + 12345) >>> 0;
  if (iteration >= BODY_FIRST && (stream >>> 16) % BODY_EVERY !== 0) {
    const res = http.get(URL, DISCARDED);
    check(res, { 'status is 200': (r) => r.status === 200 });
    return;
  }
  const res = http.get(URL, CHECKED);
  let body = null;
  try {
    body = JSON.parse(res.body);
  } catch (_) {
    // Not JSON (an error page, a timeout): the hash and source checks below fail.
  }
  check(res, { 'status is 200': (r) => r.status === 200 });
  check(res, {
    'hash is 64 hex': () => body !== null && typeof body.hash === 'string' && HEX64.test(body.hash),
    'source is SERVER': () => body !== null && body.source === SERVER,
  }, { body: 'sampled' });
}

function values(data, name) {
  const metric = data.metrics[name];
  return metric ? metric.values : null;
}

function pick(v, keys, fallback) {
  if (!v) return fallback;
  const out = {};
  for (const [to, from] of Object.entries(keys)) out[to] = v[from] === undefined ? null : v[from];
  return out;
}

function summarize(data) {
  const thresholds = {};
  for (const [name, metric] of Object.entries(data.metrics)) {
    if (!metric.thresholds) continue;
    thresholds[name] = {};
    for (const [expr, result] of Object.entries(metric.thresholds)) thresholds[name][expr] = result.ok;
  }
  const counter = { count: 'count', rate: 'rate' };
  const rate = { rate: 'rate', passes: 'passes', fails: 'fails' };
  const vusMax = values(data, 'vus_max');
  return {
    version: 1,
    server: SERVER,
    profile: PROFILE,
    target: TARGET,
    tags: exec.test.options.tags || {},
    rate: PROFILE === 'open' ? Number(__ENV.RATE) : null,
    duration: PROFILE === 'open' ? (__ENV.DURATION || '60s') : null,
    test_duration_s: data.state.testRunDurationMs / 1000,
    http_reqs: pick(values(data, 'http_reqs'), counter, { count: 0, rate: 0 }),
    http_req_duration: pick(values(data, 'http_req_duration{expected_response:true}'), {
      p50: 'p(50)', p90: 'p(90)', p95: 'p(95)', p99: 'p(99)', avg: 'avg', min: 'min', max: 'max',
    }, null),
    http_req_failed: pick(values(data, 'http_req_failed'), rate, { rate: 0, passes: 0, fails: 0 }),
    checks: pick(values(data, 'checks'), rate, { rate: 0, passes: 0, fails: 0 }),
    iterations: pick(values(data, 'iterations'), counter, { count: 0, rate: 0 }),
    dropped_iterations: pick(values(data, 'dropped_iterations'), counter, { count: 0, rate: 0 }),
    vus_max: vusMax ? vusMax.max : 0,
    thresholds,
  };
}

function ms(x) {
  return x === null || x === undefined ? '-' : `${x.toFixed(2)} ms`;
}

function text(s) {
  const d = s.http_req_duration;
  const lines = [
    '',
    `py-serving-bench k6: server=${s.server} profile=${s.profile} target=${s.target}`,
    `  duration            ${s.test_duration_s.toFixed(1)} s, max VUs ${s.vus_max}`,
    `  requests            ${s.http_reqs.count} (${s.http_reqs.rate.toFixed(1)}/s)`,
    `  failed requests     ${s.http_req_failed.passes} (${(100 * s.http_req_failed.rate).toFixed(3)} %)`,
    `  checks held         ${s.checks.passes} of ${s.checks.passes + s.checks.fails}`,
    `  dropped iterations  ${s.dropped_iterations.count}`,
    d
      ? `  latency (ok only)   p50 ${ms(d.p50)}  p90 ${ms(d.p90)}  p95 ${ms(d.p95)}  p99 ${ms(d.p99)}  avg ${ms(d.avg)}  max ${ms(d.max)}`
      : '  latency (ok only)   no successful request',
  ];
  for (const metric of Object.keys(s.thresholds).sort()) {
    for (const [expr, ok] of Object.entries(s.thresholds[metric])) lines.push(`  threshold ${ok ? 'held  ' : 'FAILED'} ${metric} ${expr}`);
  }
  return lines.join('\n') + '\n';
}

export function handleSummary(data) {
  const s = summarize(data);
  const out = { stdout: text(s) };
  if (SUMMARY) out[SUMMARY] = JSON.stringify(s, null, 2) + '\n';
  return out;
}
