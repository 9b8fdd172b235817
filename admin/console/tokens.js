// API tokens (admin role, tokens not limited to some agents): the list, never with secrets;
// issuing one, whose secret is shown once; revoking one.

import { api, can, listAll, query, session } from './api.js';
import {
  announce, clearFieldErrors, field, fill, h, nextId, openDialog, showFieldError, time,
} from './dom.js';
import { limits } from './limits.js';

// What each of the server's roles (limits.js) may do; one the console does not know shows as it is.
const ROLE_NAMES = {
  runtime: 'runtime — a voice runtime: configs of its calls only',
  viewer: 'viewer — reads everything',
  editor: 'editor — also edits drafts',
  publisher: 'publisher — also publishes, restores and routes numbers',
  admin: 'admin — also manages tokens',
};
const HOUR = 3600;
const DAY = 24 * HOUR;
const UNITS = [[HOUR, 'hours'], [DAY, 'days']];

/** Whether the signed-in token may manage tokens (the API answers 403 to a scoped one). */
export function manageable() {
  return can('admin') && session.scopes === null;
}

export async function render(main) {
  if (!manageable()) {
    const why = session.scopes === null ? `you are signed in as ${session.role}` : 'your token is limited to some agents';
    fill(main, h('h1', { tabindex: '-1' }, 'Tokens'),
      h('p', { class: 'notice' }, `Managing tokens needs the admin role and a token not limited to some agents; ${why}.`));
    return;
  }
  const page = new TokensPage(main, await listAll('/v1/agents'));
  await page.render();
}

class TokensPage {
  constructor(main, agents) {
    this.main = main;
    this.agents = agents;
    this.names = new Map(agents.map((a) => [a.id, a.name]));
    this.list = h('section', { 'aria-labelledby': 'tokens-list-title' });
  }

  async render() {
    fill(this.main,
      h('div', { class: 'page-head' }, h('h1', { tabindex: '-1' }, 'Tokens')),
      h('div', { class: 'columns' }, this.list, this.createForm()));
    await this.renderList();
  }

  async renderList(cursor = null, rows = []) {
    const data = await api('GET', '/v1/tokens' + query({ cursor }));
    rows.push(...data.items);
    const now = Date.now();
    const more = data.next_cursor
      ? h('button', { type: 'button', onclick: () => this.renderList(data.next_cursor, rows) }, 'Load more')
      : null;
    fill(this.list,
      h('table', { class: 'table tokens' },
        h('caption', { id: 'tokens-list-title' }, `${rows.length} token${rows.length === 1 ? '' : 's'}, newest first (secrets are never shown again)`),
        h('thead', {}, h('tr', {}, ['Name', 'Role', 'Agents', 'Created', 'Expires', 'Last used', 'Status', ''].map((t) => h('th', { scope: 'col' }, t)))),
        h('tbody', {}, rows.length
          ? rows.map((token) => this.row(token, now))
          : h('tr', {}, h('td', { colspan: '8', class: 'muted' }, 'No tokens yet.')))),
      more);
  }

  row(token, now) {
    const expired = token.expires_at !== null && Date.parse(token.expires_at) <= now;
    const status = token.revoked_at
      ? [h('span', { class: 'badge bad' }, 'revoked'), ' ', time(token.revoked_at)]
      : h('span', { class: `badge ${expired ? 'warn' : 'good'}` }, expired ? 'expired' : 'active');
    return h('tr', { dataset: { tokenId: String(token.id) } },
      h('th', { scope: 'row' }, token.name, h('div', { class: 'muted' }, `#${token.id}`)),
      h('td', {}, token.role),
      h('td', {}, token.scopes === null
        ? h('span', { class: 'muted' }, 'all')
        : h('ul', { class: 'plain' }, token.scopes.map((id) => h('li', {}, this.names.has(id)
          ? h('a', { href: `#/agents/${encodeURIComponent(id)}` }, this.names.get(id))
          : h('code', {}, id))))),
      h('td', {}, time(token.created_at)),
      h('td', {}, token.expires_at ? time(token.expires_at) : h('span', { class: 'muted' }, 'never')),
      h('td', {}, token.last_used_at ? time(token.last_used_at) : h('span', { class: 'muted' }, 'never')),
      h('td', {}, status),
      h('td', {}, token.revoked_at ? null : h('button', {
        type: 'button', class: 'small danger-text', 'aria-label': `Revoke ${token.name} (#${token.id})`,
        onclick: () => this.revoke(token),
      }, 'Revoke…')));
  }

  async revoke(token) {
    const error = h('p', { class: 'form-error', role: 'alert' });
    const choice = await openDialog({
      title: `Revoke ${token.name}?`,
      body: h('div', {},
        h('p', {}, `Every router and admin worker refuses this ${token.role} token within seconds, even while the database is down. `,
          'Whatever still uses it stops working. This cannot be undone.'),
        error),
      actions: [{ label: 'Cancel', value: null }, { label: 'Revoke', value: 'revoke', kind: 'danger' }],
      onAction: async () => {
        try {
          await api('POST', `/v1/tokens/${token.id}/revoke`);
          return true;
        } catch (e) {
          error.textContent = `Not revoked: ${e.message}`;
          return false;
        }
      },
    });
    // Refreshed either way: a failure (revoked meanwhile) is best explained by the current list.
    await this.renderList();
    if (choice === 'revoke') announce(`${token.name} (#${token.id}) revoked.`, 'success');
  }

  createForm() {
    const name = field('Name', h('input', { type: 'text', autocomplete: 'off', maxlength: String(limits.tokenNameChars) }), {
      hint: 'Who or what will use it, e.g. “support-runtime” or “ci”.',
    });
    const role = field('Role', h('select', {}, limits.roles.map((r) => h('option', { value: r }, ROLE_NAMES[r] ?? r))));
    role.input.value = 'viewer';
    const amount = field('Expires in', h('input', { type: 'number', min: '1', step: '1', class: 'short' }), {
      hint: 'Leave empty for a token that never expires.',
    });
    const unit = h('select', { 'aria-label': 'Expiry unit' }, UNITS.map(([seconds, label]) => h('option', { value: String(seconds) }, label)));
    unit.value = String(DAY);
    amount.input.after(unit);
    amount.input.parentElement.classList.add('expiry');
    const boxes = this.agents.map((a) => h('input', { type: 'checkbox', value: a.id }));
    const scopes = h('fieldset', { class: 'radios', id: 'token-scopes' },
      h('legend', {}, 'Limit to agents (optional)'),
      h('p', { class: 'hint' }, 'None ticked: the token sees every agent. Ticked: only those; anything about other agents answers 404 to it.'),
      this.agents.length
        ? h('div', { class: 'scope-list' }, this.agents.map((a, i) => h('label', {}, boxes[i], ' ', a.name, ' ', h('code', {}, a.id))))
        : h('p', { class: 'muted' }, 'No agents yet.'));
    const general = h('p', { class: 'form-error', role: 'alert' });
    const form = h('form', { class: 'card', 'aria-labelledby': 'new-token-title', novalidate: true },
      h('h2', { id: 'new-token-title' }, 'New token'),
      name.row, role.row, amount.row, h('div', { class: 'field' }, scopes), general,
      h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Create token')));
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      clearFieldErrors(form);
      general.textContent = '';
      const expiresIn = expirySeconds(amount.input, Number(unit.value));
      if (expiresIn === undefined) return amount.input.focus();
      const chosen = boxes.filter((box) => box.checked);
      const body = {
        name: name.input.value, role: role.input.value, expires_in: expiresIn,
        scopes: chosen.length ? chosen.map((box) => box.value) : null,
      };
      let made;
      try {
        made = await api('POST', '/v1/tokens', { body });
      } catch (error) {
        const inputs = { name: name.input, role: role.input, expires_in: amount.input, scopes };
        const at = (path) => {
          const item = /^scopes\[(\d+)\]$/.exec(path);
          return item ? chosen[Number(item[1])] : inputs[path];
        };
        error.problems.forEach((p) => at(p.path) && showFieldError(at(p.path), p.message));
        const paths = error.problems.map((p) => `${p.path}: ${p.message}`);
        general.textContent = `Not created: ${[error.message, ...paths].join(' — ')}`;
        (error.problems.map((p) => at(p.path)).find(Boolean) ?? name.input).focus();
        return;
      }
      form.reset();
      role.input.value = 'viewer';
      unit.value = String(DAY);
      await this.renderList();
      await showSecret(made, this.names);
      announce(`Token ${made.name} (#${made.id}) created.`, 'success');
    });
    return form;
  }
}

/** Seconds from the expiry inputs: null for never; undefined (with the error shown) when invalid. */
function expirySeconds(input, unitSeconds) {
  if (input.value === '' && !input.validity.badInput) return null;
  const amount = Number(input.value);
  const max = limits.tokenMaxExpiresIn;
  if (!Number.isInteger(amount) || amount < 1) {
    showFieldError(input, 'A whole number, 1 or more; or leave it empty for a token that never expires.');
    return undefined;
  }
  if (amount * unitSeconds > max) {
    showFieldError(input, `At most ${Math.floor(max / unitSeconds)} ${unitSeconds === DAY ? 'days' : 'hours'}.`);
    return undefined;
  }
  return amount * unitSeconds;
}

/** The new token's secret, in a dialog that is its only appearance. */
async function showSecret(token, names) {
  const secret = h('input', { type: 'text', readonly: true, value: token.token, spellcheck: 'false', onfocus: (e) => e.target.select() });
  const row = field('Secret', secret);
  const copied = h('output', { id: nextId('copied'), 'aria-live': 'polite' });
  row.row.append(h('div', { class: 'actions' }, h('button', { type: 'button', onclick: () => copy(secret, copied) }, 'Copy secret'), copied));
  row.row.classList.add('secret');
  await openDialog({
    title: `Token ${token.name} created`,
    body: h('div', {},
      h('div', { class: 'banner warning', role: 'note' },
        h('strong', {}, 'Shown once. '),
        'Copy the secret now: it is not stored and cannot be shown again. If it is lost, revoke the token and create another.'),
      row.row,
      h('dl', { class: 'meta' },
        h('dt', {}, 'Role'), h('dd', {}, token.role),
        h('dt', {}, 'Expires'), h('dd', {}, token.expires_at ? time(token.expires_at) : 'never'),
        h('dt', {}, 'Agents'), h('dd', {}, token.scopes === null ? 'all' : token.scopes.map((id) => names.get(id) ?? id).join(', ')))),
    actions: [{ label: 'I have copied it', value: 'done', kind: 'primary' }],
  });
}

async function copy(input, note) {
  try {
    await navigator.clipboard.writeText(input.value);
    note.textContent = 'Copied to the clipboard.';
  } catch {
    input.focus();
    note.textContent = 'Could not copy: the secret is selected, press Ctrl+C (⌘C on a Mac).';
  }
}
