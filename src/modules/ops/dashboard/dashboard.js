// The Spate dashboard: frames from /dashboard/events (server-sent events, one a second) drawn as tiles, uPlot
// charts, a table of workers and one of recent job failures. Plain script, no build step; values only ever reach the page as textContent.
/* global uPlot, document, window, EventSource -- a browser script; eslint.config.js knows Node globals only */
'use strict';

const KEEP = 300; // points per chart: five minutes at one frame a second
const PALETTE = ['#2563eb', '#dc2626', '#16a34a', '#9333ea', '#ea580c', '#0891b2', '#ca8a04', '#db2777'];

const $ = (id) => document.getElementById(id);
const fixed = (x, digits = 1) => (Number.isFinite(x) ? x.toFixed(digits) : '–');
const percent = (ratio) => `${fixed(ratio * 100, 1)} %`;
// A ratio of nothing (no cache lookups in the frame) is shown as a dash, never as 0 % or 100 %.
const share = (ratio) => (ratio === null ? '–' : percent(ratio));
const hitPercent = (cache) => (cache === null || cache.hit_ratio === null ? null : cache.hit_ratio * 100);

/** One chart: its series are named by `labels()`, re-created when their number changes (a worker appears). */
function chart(id, unit) {
  const el = $(id);
  let plot;
  let names = [];
  const data = [[]];
  function build(labels) {
    plot?.destroy();
    names = labels;
    while (data.length > labels.length + 1) data.pop();
    while (data.length < labels.length + 1) data.push(data[0].map(() => null));
    plot = new uPlot({
      width: el.clientWidth || 420, height: 180,
      scales: { x: { time: true }, y: { range: (_u, min, max) => [0, Math.max(max, min + 1)] } },
      axes: [{}, { size: 50, values: (_u, ticks) => ticks.map((v) => `${v}${unit}`) }],
      series: [{}, ...labels.map((label, i) => ({ label, stroke: PALETTE[i % PALETTE.length], width: 2 }))],
    }, data, el);
  }
  return {
    push(t, labels, values) {
      if (plot === undefined || labels.join('\n') !== names.join('\n')) build(labels);
      data[0].push(t / 1000);
      values.forEach((v, i) => data[i + 1].push(v));
      if (data[0].length > KEEP) for (const s of data) s.shift();
      plot.setData(data);
    },
    resize() {
      plot?.setSize({ width: el.clientWidth, height: 180 });
    },
  };
}

const charts = {
  rate: chart('chart-rate', ''),
  latency: chart('chart-latency', ''),
  errors: chart('chart-errors', '%'),
  pool: chart('chart-pool', ''),
  cache: chart('chart-cache', '%'),
  jobs: chart('chart-jobs', ''),
};
window.addEventListener('resize', () => Object.values(charts).forEach((c) => c.resize()));

const workerName = (w) => (w.worker === null ? `pid ${w.pid}` : `worker ${w.worker}`);

function row(cells) {
  const tr = document.createElement('tr');
  for (const c of cells) {
    const td = document.createElement('td');
    td.textContent = String(c);
    tr.append(td);
  }
  return tr;
}

function show(frame) {
  $('rate').textContent = fixed(frame.rate_rps);
  $('total').textContent = String(frame.total_requests);
  $('in-flight').textContent = String(frame.in_flight);
  $('p50').textContent = fixed(frame.p50_ms, 2);
  $('p99').textContent = fixed(frame.p99_ms, 2);
  $('errors').textContent = percent(frame.error_ratio);
  $('client-errors').textContent = percent(frame.client_error_ratio);
  $('pool-active').textContent = String(frame.pool.active);
  $('pool-max').textContent = String(frame.pool.max);
  $('pool-waiting').textContent = String(frame.pool.waiting);
  showCache(frame.cache);
  showJobs(frame.jobs);

  const workers = frame.workers;
  $('workers-summary').textContent = frame.workers_expected > 1
    ? `${workers.length} of ${frame.workers_expected} workers reporting`
    : 'single process';
  $('workers').tBodies[0].replaceChildren(...workers.map((w) => row([
    workerName(w), w.pid, fixed(w.rate_rps), w.total_requests, w.in_flight, fixed(w.p50_ms, 2), fixed(w.p99_ms, 2),
    `${w.pool.active} / ${w.pool.max}`, w.cache === null ? 'n/a' : share(w.cache.hit_ratio),
  ])));

  // One line per worker when there are several, and the group's total.
  const several = workers.length > 1;
  const names = several ? ['all', ...workers.map(workerName)] : ['all'];
  const each = (pick) => (several ? [pick(frame), ...workers.map(pick)] : [pick(frame)]);
  charts.rate.push(frame.t, names, each((f) => f.rate_rps));
  charts.latency.push(frame.t, ['p50', 'p99'], [frame.p50_ms, frame.p99_ms]);
  charts.errors.push(frame.t, ['5xx', '4xx'], [frame.error_ratio * 100, frame.client_error_ratio * 100]);
  charts.pool.push(frame.t, ['active', 'waiting', 'max'], [frame.pool.active, frame.pool.waiting, frame.pool.max]);
  // No lookups in a frame is a gap in the line (null), not a fall to 0 %.
  if (frame.cache !== null) {
    charts.cache.push(frame.t, names, each((f) => hitPercent(f.cache)));
  }
  if (frame.jobs !== null) charts.jobs.push(frame.t, ['queued', 'running'], [frame.jobs.queued, frame.jobs.running]);
}

/** The cache tile: the hit ratio of the frame over every layer, and each layer's own. */
function showCache(cache) {
  $('chart-cache').closest('figure').hidden = cache === null;
  if (cache === null) {
    $('cache').textContent = 'n/a';
    $('cache-layers').textContent = 'no cache (CACHE_MODE=off)';
    return;
  }
  $('cache').textContent = share(cache.hit_ratio);
  $('cache-layers').textContent = cache.lookups === 0
    ? 'no lookups since the last frame'
    : `${cache.lookups} lookups since the last frame; ${cache.layers.map((l) => `${l.name} ${share(l.hit_ratio)}`).join(', ')}`;
}

/** The jobs tile and the table of recent failures. */
function showJobs(jobs) {
  const failures = $('failures').tBodies[0];
  $('chart-jobs').closest('figure').hidden = jobs === null;
  if (jobs === null) {
    $('jobs').textContent = 'n/a';
    $('jobs-finished').textContent = 'no job queue';
    failures.replaceChildren(row(['n/a', '', '', '']));
    return;
  }
  $('jobs').textContent = jobs.unavailable ? 'queue unavailable' : `${jobs.queued} queued · ${jobs.running} running`;
  $('jobs').dataset.state = jobs.unavailable ? 'unavailable' : 'ok';
  $('jobs-finished').textContent = Object.entries(jobs.finished).map(([outcome, n]) => `${outcome} ${n}`).join(' · ');
  if (jobs.recent_failures === null) failures.replaceChildren(row(['queue unavailable', '', '', '']));
  else if (jobs.recent_failures.length === 0) failures.replaceChildren(row(['none', '', '', '']));
  else failures.replaceChildren(...jobs.recent_failures.map((f) => row([f.finished_at ?? '', f.kind, f.id, f.error])));
}

const events = new EventSource('/dashboard/events');
events.addEventListener('frame', (e) => {
  $('status').dataset.state = 'live';
  $('status').textContent = 'live';
  show(JSON.parse(e.data));
});
events.addEventListener('error', () => {
  $('status').dataset.state = 'lost';
  $('status').textContent = 'reconnecting…';
});
