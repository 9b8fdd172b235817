// Analytics over a date range: versions of one agent compared (automation with confidence
// intervals, duration, sentiment, verdicts), their trends over time, and the per-variant results
// of an A/B test on one number.

import { api, listAll, query } from './api.js';
import { SERIES_COLOURS, durationChart, legend, rateChart, sentimentChart, trendChart } from './charts.js';
import { field, fill, h, versionLabel } from './dom.js';

const DAY_MS = 86_400_000;
// Without a chosen range the trends show the last 30 days (the totals above cover all time).
const DEFAULT_TREND_DAYS = 30;
// Up to this many days the trend is drawn per hour, beyond it per day.
const HOURLY_UP_TO_DAYS = 3;
const TREND_METRICS = {
  calls: { label: 'Calls', format: (v) => String(Math.round(v)) },
  automation_rate: { label: 'Automation rate', format: (v) => `${Math.round(v * 1000) / 10}%` },
  mean_duration_s: { label: 'Mean duration', format: (v) => `${Math.round(v)} s` },
};

const VERDICT_CLASS = { better: 'good', worse: 'bad', 'too few calls': 'warn' };

function rowsOf(data) {
  if (Array.isArray(data)) return data;
  return data?.items ?? data?.versions ?? data?.variants ?? data?.rows ?? [];
}

function labelOf(row) {
  const version = versionLabel(row.version) + (row.draft_revision ? ` r${row.draft_revision}` : '');
  if (!row.variant) return version;
  return `${row.variant} (${version}${row.weight !== null && row.weight !== undefined ? `, ${row.weight}%` : ''})`;
}

const percent = (v) => (v === null || v === undefined ? '—' : `${Math.round(v * 1000) / 10}%`);
const seconds = (v) => (v === null || v === undefined ? '—' : `${Math.round(v)} s`);
const signed = (v, digits = 1) => `${v > 0 ? '+' : v < 0 ? '−' : '±'}${Math.abs(v).toFixed(digits)}`;
const pValue = (p) => (p === null || p === undefined ? '' : ` (p ${p < 0.001 ? '< 0.001' : `= ${p.toFixed(3)}`})`);

function verdictOf(row) {
  const c = row.comparison;
  if (!c) return null;
  return typeof c === 'string' ? c : c.verdict ?? null;
}

/** The comparison in words: "vs V1: automation +25.0 pts (p = 0.206); duration −47.5 s (p < 0.001)". */
function comparisonDetail(row) {
  const c = row.comparison;
  if (!c || typeof c !== 'object') return '';
  const parts = [];
  if (c.automation_rate_diff !== null && c.automation_rate_diff !== undefined) {
    parts.push(`automation ${signed(c.automation_rate_diff * 100)} pts${pValue(c.automation_rate_p_value)}`);
  }
  if (c.mean_duration_diff_s !== null && c.mean_duration_diff_s !== undefined) {
    parts.push(`mean duration ${signed(c.mean_duration_diff_s)} s${pValue(c.mean_duration_p_value)}`);
  }
  const against = c.baseline === undefined || c.baseline === null ? ''
    : `vs ${typeof c.baseline === 'number' || c.baseline === 'draft' ? versionLabel(c.baseline) : c.baseline}: `;
  const few = c.verdict === 'too few calls' && c.min_sample_size ? ` — a verdict needs ${c.min_sample_size} analysed calls on each side` : '';
  return `${against}${parts.join('; ') || 'no comparable data'}${few}`;
}

function verdictBadge(row) {
  const verdict = verdictOf(row);
  if (!verdict) return h('span', { class: 'muted' }, 'baseline');
  return h('span', { class: `badge ${VERDICT_CLASS[String(verdict).toLowerCase()] ?? ''}` }, String(verdict).replaceAll('_', ' '));
}

/** Charts, verdicts and a data table for rows of per-version (or per-variant) metrics. */
export function report(rows, subject) {
  if (!rows.length) return h('p', { class: 'muted' }, `No calls yet for ${subject}.`);
  const items = rows.map((r) => ({ row: r, label: labelOf(r) }));
  const sentimentKeys = [['sent-positive', 'positive'], ['sent-neutral', 'neutral'], ['sent-negative', 'negative']];
  return h('div', { class: 'report' },
    h('div', { class: 'charts' },
      h('figure', { class: 'card' },
        h('figcaption', {}, 'Automation rate, with 95% confidence interval'),
        rateChart(items.map(({ row, label }) => ({ label, rate: row.automation_rate, ci: row.automation_rate_ci })), {
          title: `Automation rate by ${subject}`, description: 'Dot: observed rate. Whiskers: confidence interval.',
        })),
      h('figure', { class: 'card' },
        h('figcaption', {}, 'Call duration: median to p90 (bar), mean (diamond)'),
        durationChart(items.map(({ row, label }) => ({ label, ...(row.duration_s ?? {}) })), {
          title: `Call duration by ${subject}`, description: 'Thin line up to the median, box from median to 90th percentile, diamond at the mean.',
        })),
      h('figure', { class: 'card' },
        h('figcaption', {}, 'Sentiment'),
        sentimentChart(items.map(({ row, label }) => ({ label, ...(row.sentiment ?? {}) })), {
          title: `Sentiment by ${subject}`, description: 'Share of positive, neutral and negative calls.',
        }),
        legend(sentimentKeys.map(([cls, text]) => [cls, text])))),
    h('div', { class: 'table-wrap' }, h('table', { class: 'table verdicts' },
      h('caption', {}, 'Verdicts and numbers'),
      h('thead', {}, h('tr', {}, ['', 'Calls', 'Completed', 'Analysed', 'Automation', '95% CI', 'Mean', 'p50', 'p90', 'Positive', 'Negative', 'Verdict', 'Test'].map((t) => h('th', { scope: 'col' }, t)))),
      h('tbody', {}, items.map(({ row, label }) => {
        const sent = row.sentiment ?? {};
        const total = (sent.positive ?? 0) + (sent.neutral ?? 0) + (sent.negative ?? 0);
        const share = (k) => (total ? percent((sent[k] ?? 0) / total) : '—');
        return h('tr', {},
          h('th', { scope: 'row' }, label),
          h('td', { class: 'num' }, String(row.calls ?? '—')),
          h('td', { class: 'num' }, String(row.completed ?? '—')),
          h('td', { class: 'num' }, String(row.analysed ?? '—')),
          h('td', { class: 'num' }, percent(row.automation_rate)),
          h('td', { class: 'num' }, row.automation_rate_ci ? `${percent(row.automation_rate_ci[0])}–${percent(row.automation_rate_ci[1])}` : '—'),
          h('td', { class: 'num' }, seconds(row.duration_s?.mean)),
          h('td', { class: 'num' }, seconds(row.duration_s?.p50)),
          h('td', { class: 'num' }, seconds(row.duration_s?.p90)),
          h('td', { class: 'num' }, share('positive')),
          h('td', { class: 'num' }, share('negative')),
          h('td', {}, verdictBadge(row)),
          h('td', { class: 'small-text' }, comparisonDetail(row)));
      })))));
}

/** The picked range as API bounds: `from` at 00:00 UTC up to the end of the day `to`. */
function bounds(from, to) {
  return {
    since: from ? `${from}T00:00:00Z` : '',
    until: to ? new Date(Date.parse(`${to}T00:00:00Z`) + DAY_MS).toISOString() : '',
  };
}

function rangeForm(search, go) {
  const from = h('input', { type: 'date', id: 'analytics-from', value: search.get('from') ?? '' });
  const to = h('input', { type: 'date', id: 'analytics-to', value: search.get('to') ?? '' });
  const error = h('p', { class: 'form-error', role: 'alert' });
  const form = h('form', { class: 'range card', 'aria-label': 'Date range' },
    field('From', from).row, field('To (inclusive)', to).row,
    h('div', { class: 'actions' },
      h('button', { type: 'submit', class: 'primary' }, 'Apply range'),
      h('button', { type: 'button', onclick: () => go({ from: '', to: '' }) }, 'All time')),
    error);
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    if (from.value && to.value && from.value > to.value) {
      error.textContent = '“From” must not be after “To”.';
      return;
    }
    go({ from: from.value, to: to.value });
  });
  return form;
}

export async function render(main, _params, search) {
  const agents = await listAll('/v1/agents');
  const channels = await listAll('/v1/channels');
  const agent = h('select', { id: 'analytics-agent' }, h('option', { value: '' }, '— choose an agent —'), agents.map((a) => h('option', { value: a.id }, a.name)));
  agent.value = search.get('agent_id') ?? agents[0]?.id ?? '';
  const channel = h('select', { id: 'analytics-channel' }, h('option', { value: '' }, '— choose a number —'),
    channels.filter((c) => c.variants.length > 1).map((c) => h('option', { value: c.number }, `${c.number} (${c.variants.map((v) => v.label).join(' / ')})`)));
  channel.value = search.get('channel') ?? '';
  const metric = h('select', { id: 'analytics-metric' }, Object.entries(TREND_METRICS).map(([value, m]) => h('option', { value }, m.label)));
  metric.value = TREND_METRICS[search.get('metric')] ? search.get('metric') : 'calls';
  const state = {
    agent_id: agent.value, channel: channel.value, metric: metric.value, from: search.get('from') ?? '', to: search.get('to') ?? '',
  };
  const go = (change) => {
    window.location.hash = `#/analytics${query({ ...state, ...change })}`;
  };
  agent.addEventListener('change', () => go({ agent_id: agent.value }));
  channel.addEventListener('change', () => go({ channel: channel.value }));
  metric.addEventListener('change', () => go({ metric: metric.value }));
  const range = bounds(state.from, state.to);
  const versionsOut = h('div', { 'aria-live': 'polite' });
  const trendOut = h('div', { 'aria-live': 'polite' });
  const abOut = h('div', { 'aria-live': 'polite' });
  fill(main,
    h('div', { class: 'page-head' }, h('h1', { tabindex: '-1' }, 'Analytics')),
    rangeForm(search, go),
    h('section', { 'aria-labelledby': 'by-version' },
      h('div', { class: 'section-head' }, h('h2', { id: 'by-version' }, 'Versions compared'), field('Agent', agent).row),
      versionsOut),
    h('section', { 'aria-labelledby': 'trends' },
      h('div', { class: 'section-head' }, h('h2', { id: 'trends' }, 'Trends by version'), field('Metric', metric).row),
      trendOut),
    h('section', { 'aria-labelledby': 'by-variant' },
      h('div', { class: 'section-head' }, h('h2', { id: 'by-variant' }, 'A/B tests'), field('Number', channel).row),
      abOut));
  const chooseAgent = h('p', { class: 'muted' }, 'Choose an agent.');
  await Promise.all([
    agent.value ? load(versionsOut, '/v1/analytics/versions' + query({ agent_id: agent.value, ...range }), 'version')
      : fill(versionsOut, chooseAgent),
    agent.value ? loadTrend(trendOut, agent.value, state) : fill(trendOut, chooseAgent.cloneNode(true)),
    channel.value ? load(abOut, '/v1/analytics/ab' + query({ channel: channel.value, ...range }), 'variant')
      : fill(abOut, h('p', { class: 'muted' }, channel.options.length > 1 ? 'Choose a number with an A/B test.' : 'No number runs an A/B test.')),
  ]);
}

async function load(out, path, subject) {
  fill(out, h('p', { class: 'muted' }, 'Loading…'));
  try {
    const data = await api('GET', path);
    fill(out, report(rowsOf(data), subject), data?.verdict ? h('p', { class: 'verdict' }, h('strong', {}, 'Verdict: '), String(data.verdict)) : null);
  } catch (error) {
    fill(out, h('p', { class: 'form-error' }, error.message));
  }
}

/** One line per version (and the draft) of the chosen metric over the range. */
async function loadTrend(out, agentId, state) {
  const { since, until } = bounds(state.from, state.to);
  const end = until ? new Date(until) : new Date();
  const start = since ? new Date(since) : new Date(end.getTime() - DEFAULT_TREND_DAYS * DAY_MS);
  const interval = end - start <= HOURLY_UP_TO_DAYS * DAY_MS ? 'hour' : 'day';
  const { label, format } = TREND_METRICS[state.metric];
  fill(out, h('p', { class: 'muted' }, 'Loading…'));
  try {
    const data = await api('GET', '/v1/analytics/timeseries' + query({
      agent_id: agentId, metric: state.metric, interval, since: start.toISOString(), until: end.toISOString(),
    }));
    const series = data.series.map((line) => ({ ...line, label: line.draft ? 'Draft' : versionLabel(line.version) }));
    if (!series.length) {
      fill(out, h('p', { class: 'muted' }, 'No calls in this range.'));
      return;
    }
    const span = `${start.toISOString().slice(0, 10)} to ${new Date(end - 1).toISOString().slice(0, 10)}`;
    fill(out, h('figure', { class: 'card' },
      h('figcaption', {}, `${label} per ${interval}, ${span}${since ? '' : ` (last ${DEFAULT_TREND_DAYS} days)`}`),
      trendChart(series, {
        title: `${label} by version over time`, description: `One line per version, one point per ${interval} with calls.`, since: start, until: end, format,
      }),
      legend(series.map((line, i) => [`series-${i % SERIES_COLOURS}`, line.label])),
      h('details', {}, h('summary', {}, 'Trend data'), h('div', { class: 'table-wrap' }, h('table', { class: 'table trend-data' },
        h('thead', {}, h('tr', {}, ['Version', `Start of ${interval} (UTC)`, label, 'Calls'].map((t) => h('th', { scope: 'col' }, t)))),
        h('tbody', {}, series.flatMap((line) => line.points.filter((p) => p.calls > 0).map((p) => h('tr', {},
          h('th', { scope: 'row' }, line.label), h('td', {}, p.t), h('td', { class: 'num' }, p.value === null ? '—' : format(p.value)),
          h('td', { class: 'num' }, String(p.calls)))))))))));
  } catch (error) {
    fill(out, h('p', { class: 'form-error' }, `Trends unavailable: ${error.message}`));
  }
}
