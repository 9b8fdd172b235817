// The console shell: sign-in, navigation and a hash router over the page modules.

import * as agent from './agent.js';
import * as agents from './agents.js';
import * as analytics from './analytics.js';
import { onUnauthorized, resume, session, signIn, signOut } from './api.js';
import * as calls from './calls.js';
import * as channels from './channels.js';
import { field, fill, h, showFieldError } from './dom.js';
import { loadLimits } from './limits.js';
import * as tokens from './tokens.js';

const ROUTES = [
  [/^\/agents\/?$/, agents.render, 'agents'],
  [/^\/agents\/(?<id>[^/]+)$/, agent.render, 'agents'],
  [/^\/channels\/?$/, channels.render, 'channels'],
  [/^\/calls\/?$/, calls.render, 'calls'],
  [/^\/analytics\/?$/, analytics.render, 'analytics'],
  [/^\/tokens\/?$/, tokens.render, 'tokens'],
];

const main = document.getElementById('main');
let renderSeq = 0;

function parseHash() {
  const raw = window.location.hash.replace(/^#/, '') || '/agents';
  const [path, search = ''] = raw.split('?');
  return { path, search: new URLSearchParams(search) };
}

function showChrome(signedIn) {
  document.getElementById('nav').hidden = !signedIn;
  document.getElementById('whoami').hidden = !signedIn;
  document.getElementById('nav-tokens').hidden = !(signedIn && tokens.manageable());
  if (signedIn) document.getElementById('whoami-text').textContent = `${session.name} · ${session.role}`;
}

function markCurrent(section) {
  for (const link of document.querySelectorAll('#nav a')) {
    if (link.dataset.section === section) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
}

async function route() {
  if (!session.role) return renderLogin();
  const seq = ++renderSeq;
  const { path, search } = parseHash();
  const match = ROUTES.map(([re, view, section]) => [re.exec(path), view, section]).find(([m]) => m);
  if (!match) {
    fill(main, h('h1', { tabindex: '-1' }, 'Not found'), h('p', {}, h('a', { href: '#/agents' }, 'Go to the agents')));
    return focusHeading();
  }
  const [m, view, section] = match;
  markCurrent(section);
  main.setAttribute('aria-busy', 'true');
  try {
    const params = Object.fromEntries(Object.entries(m.groups ?? {}).map(([k, v]) => [k, decodeURIComponent(v)]));
    await view(main, params, search);
  } catch (error) {
    if (seq !== renderSeq || error.status === 401) return;
    fill(main, h('h1', { tabindex: '-1' }, 'Something went wrong'),
      h('p', { class: 'form-error', role: 'alert' }, error.status === 404 ? `Not found: ${error.message}` : error.message));
  } finally {
    main.removeAttribute('aria-busy');
  }
  if (seq === renderSeq) focusHeading();
}

function focusHeading() {
  const heading = main.querySelector('h1');
  document.title = `${heading?.textContent ?? 'Console'} · agentver`;
  heading?.focus({ preventScroll: true });
}

function renderLogin(message) {
  showChrome(false);
  const token = field('Admin API token', h('input', { type: 'password', id: 'token', autocomplete: 'off', required: true, spellcheck: 'false' }), {
    hint: 'Kept in this browser tab only (session storage); closing the tab signs you out.',
  });
  const form = h('form', { class: 'card login', 'aria-labelledby': 'login-title', novalidate: true },
    h('h1', { id: 'login-title', tabindex: '-1' }, 'Sign in'),
    message ? h('p', { class: 'notice', role: 'alert' }, message) : null,
    token.row,
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Sign in')));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const secret = token.input.value.trim();
    if (!secret) {
      showFieldError(token.input, 'Paste a token issued by POST /v1/tokens (or AGENTVER_BOOTSTRAP_TOKEN).');
      token.input.focus();
      return;
    }
    try {
      await signIn(secret);
      showChrome(true);
      await route();
    } catch (error) {
      showFieldError(token.input, error.status === 401 ? 'This token is not valid (unknown or revoked).' : error.message);
      token.input.focus();
    }
  });
  fill(main, form);
  token.input.focus();
}

onUnauthorized(() => {
  signOut();
  renderLogin('Your token is no longer valid. Sign in again.');
});

document.getElementById('sign-out').addEventListener('click', () => {
  signOut();
  renderLogin('Signed out.');
});

// Leaving a page with unsaved edits asks first (pages set `main.dataset.unsaved`).
let currentHash = window.location.hash;
window.addEventListener('hashchange', () => {
  if (main.dataset.unsaved && !window.confirm(main.dataset.unsaved)) {
    window.history.replaceState(null, '', currentHash || '#/agents');
    return;
  }
  delete main.dataset.unsaved;
  currentHash = window.location.hash;
  route();
});
window.addEventListener('beforeunload', (event) => {
  if (main.dataset.unsaved) event.preventDefault();
});

(async () => {
  try {
    await loadLimits();
  } catch (error) {
    fill(main, h('h1', { tabindex: '-1' }, 'Cannot start'), h('p', { class: 'form-error', role: 'alert' }, error.message));
    return;
  }
  const me = await resume();
  showChrome(Boolean(me));
  await route();
})();
