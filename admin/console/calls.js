// Calls, filtered by agent, version, variant and channel.

import { api, listAll, query } from './api.js';
import { field, fill, h, openDialog, time, versionLabel } from './dom.js';

const COLUMNS = ['Started', 'Channel', 'From', 'Agent', 'Version', 'Variant', 'Status', 'Duration', 'Sentiment', 'Automated', ''];

function filtersFromHash(params) {
  return {
    agent_id: params.get('agent_id') ?? '',
    version: params.get('version') ?? '',
    variant: params.get('variant') ?? '',
    channel: params.get('channel') ?? '',
  };
}

export async function render(main, _params, search) {
  const filters = filtersFromHash(search);
  const [agents, channels] = await Promise.all([listAll('/v1/agents'), listAll('/v1/channels')]);
  const names = new Map(agents.map((a) => [a.id, a.name]));

  const agent = h('select', { id: 'calls-agent' }, h('option', { value: '' }, 'Any agent'), agents.map((a) => h('option', { value: a.id }, a.name)));
  agent.value = filters.agent_id;
  const version = h('select', { id: 'calls-version' });
  const fillVersions = async () => {
    const versions = agent.value ? await listAll(`/v1/agents/${encodeURIComponent(agent.value)}/versions`) : [];
    fill(version, h('option', { value: '' }, 'Any version'), h('option', { value: 'draft' }, 'Draft'),
      versions.map((v) => h('option', { value: String(v.version) }, `V${v.version} — ${v.name}`)));
    version.value = [...version.options].some((o) => o.value === filters.version) ? filters.version : '';
  };
  await fillVersions();
  agent.addEventListener('change', () => { filters.version = ''; fillVersions(); });
  const variant = h('input', { type: 'text', id: 'calls-variant', value: filters.variant, placeholder: 'e.g. control', autocomplete: 'off' });
  const channel = h('select', { id: 'calls-channel' }, h('option', { value: '' }, 'Any number'), channels.map((c) => h('option', { value: c.number }, c.number)));
  channel.value = filters.channel;

  const form = h('form', { class: 'filters card', 'aria-label': 'Filter calls' },
    field('Agent', agent).row, field('Version', version).row, field('Variant', variant).row, field('Number', channel).row,
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Apply filters')));
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const next = query({ agent_id: agent.value, version: version.value, variant: variant.value.trim(), channel: channel.value });
    window.location.hash = `#/calls${next}`;
  });
  const results = h('section', { 'aria-labelledby': 'calls-title' });
  fill(main, h('div', { class: 'page-head' }, h('h1', { tabindex: '-1' }, 'Calls')), form, results);
  await renderResults(results, filters, names);
}

/** "12 calls", or "More than 100,000 calls" past the count's cap. */
function totalText(total, exact) {
  const count = total.toLocaleString('en-US');
  return `${exact ? count : `More than ${count}`} call${total === 1 && exact ? '' : 's'}`;
}

// The total is counted with the first page only (`count=true`); later pages reuse it.
async function renderResults(section, filters, names, cursor = null, rows = [], total = null) {
  const page = await api('GET', '/v1/calls' + query({ ...filters, cursor, count: cursor ? '' : 'true' }));
  rows.push(...page.items);
  const counted = total ?? { total: page.total, exact: page.total_exact };
  const described = Object.entries(filters).filter(([, v]) => v)
    .map(([k, v]) => `${k.replace('_id', '')} ${k === 'version' ? versionLabel(v === 'draft' ? null : v) : k === 'agent_id' ? names.get(v) ?? v : v}`);
  fill(section,
    h('h2', { id: 'calls-title' }, `${totalText(counted.total, counted.exact)}${described.length ? ` — ${described.join(', ')}` : ''}`),
    rows.length ? h('p', { class: 'calls-total muted', 'aria-live': 'polite' }, `Showing the newest ${rows.length.toLocaleString('en-US')}`) : null,
    rows.length ? h('div', { class: 'table-wrap' }, h('table', { class: 'table calls' },
      h('thead', {}, h('tr', {}, COLUMNS.map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', {}, rows.map((call) => h('tr', { dataset: { callId: call.call_id } },
        h('td', {}, time(call.started_at)),
        h('td', {}, h('code', {}, call.channel)),
        h('td', {}, call.from),
        h('td', {}, names.get(call.agent_id) ?? call.agent_id),
        h('td', {}, versionLabel(call.version), call.version === null && call.draft_revision ? h('span', { class: 'muted' }, ` r${call.draft_revision}`) : null),
        h('td', {}, call.variant),
        h('td', {}, call.status),
        h('td', { class: 'num' }, call.duration_s === null || call.duration_s === undefined ? '—' : `${Math.round(call.duration_s)} s`),
        h('td', {}, call.sentiment ?? '—'),
        h('td', {}, call.automated === null || call.automated === undefined ? '—' : call.automated ? 'yes' : 'no'),
        h('td', {}, h('button', { type: 'button', class: 'small', 'aria-label': `Details of call ${call.call_id}`, onclick: () => showCall(call, names) }, 'Details'))))))) : h('p', { class: 'muted' }, 'No calls match these filters.'),
    page.next_cursor ? h('button', { type: 'button', onclick: () => renderResults(section, filters, names, page.next_cursor, rows, counted) }, 'Load more') : null);
}

function showCall(call, names) {
  const entries = Object.entries(call).map(([k, v]) => [h('dt', {}, k), h('dd', {},
    k === 'agent_id' ? h('a', { href: `#/agents/${encodeURIComponent(v)}` }, `${names.get(v) ?? v} (${v})`)
      : v === null || v === undefined ? '—' : typeof v === 'object' ? JSON.stringify(v) : String(v))]);
  return openDialog({
    title: `Call ${call.call_id}`,
    body: h('div', {},
      h('p', {}, `Served ${versionLabel(call.version)} of ${names.get(call.agent_id) ?? call.agent_id} as variant “${call.variant}”.`),
      h('dl', { class: 'meta' }, entries)),
    actions: [{ label: 'Close', value: null }],
  });
}
