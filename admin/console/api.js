// The admin API client and the signed-in session (token in sessionStorage only).

import { limits } from './limits.js';

const TOKEN_KEY = 'agentver.token';

export const session = { token: sessionStorage.getItem(TOKEN_KEY), name: null, role: null, scopes: null };

const listeners = { unauthorized: [] };

export class ApiError extends Error {
  constructor(status, body) {
    const error = body?.error ?? {};
    super(error.message ?? `HTTP ${status}`);
    this.status = status;
    this.code = error.code ?? 'error';
    this.details = error.details ?? null;
  }

  /** Validation problems as [{path, message}]. */
  get problems() {
    return Array.isArray(this.details) ? this.details.filter((d) => d && d.path) : [];
  }
}

export function onUnauthorized(listener) {
  listeners.unauthorized.push(listener);
}

/** Call the admin API; resolves with the JSON body (null for 204), rejects with ApiError. */
export async function api(method, path, { body, ifMatch, token } = {}) {
  const headers = { Accept: 'application/json' };
  const secret = token ?? session.token;
  if (secret) headers.Authorization = `Bearer ${secret}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (ifMatch !== undefined) headers['If-Match'] = `"${ifMatch}"`;
  let response;
  try {
    response = await fetch(path, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store', credentials: 'omit',
    });
  } catch (cause) {
    throw new ApiError(0, { error: { code: 'network', message: `cannot reach the server (${cause.message})` } });
  }
  const text = response.status === 204 ? '' : await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) {
    const error = new ApiError(response.status, data);
    if (response.status === 401 && token === undefined) listeners.unauthorized.forEach((l) => l(error));
    throw error;
  }
  return data;
}

/** A query string from the non-empty entries of `params`. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== '' && v !== null && v !== undefined) q.set(k, v);
  const text = q.toString();
  return text ? `?${text}` : '';
}

/** Every item of a paginated list (bounded, for dropdowns). */
export async function listAll(path, params = {}, maxPages = 20) {
  const items = [];
  let cursor = null;
  for (let page = 0; page < maxPages; page += 1) {
    const data = await api('GET', path + query({ ...params, limit: limits.maxPageSize, cursor }));
    items.push(...data.items);
    cursor = data.next_cursor;
    if (!cursor) break;
  }
  return items;
}

export async function signIn(token) {
  const me = await api('GET', '/v1/whoami', { token });
  sessionStorage.setItem(TOKEN_KEY, token);
  Object.assign(session, { token, name: me.name, role: me.role, scopes: me.scopes ?? null });
  return me;
}

/** Re-check a token kept from earlier in this browser session. */
export async function resume() {
  if (!session.token) return null;
  try {
    return await signIn(session.token);
  } catch {
    signOut();
    return null;
  }
}

export function signOut() {
  sessionStorage.removeItem(TOKEN_KEY);
  Object.assign(session, { token: null, name: null, role: null, scopes: null });
}

/** True when the signed-in role is at least `needed`. */
export function can(needed) {
  return limits.roles.indexOf(session.role) >= limits.roles.indexOf(needed);
}

/** Why the current role cannot do something needing `needed` (null when it can). */
export function reasonFor(needed, what) {
  if (can(needed)) return null;
  return `${what} needs the ${needed} role; you are signed in as ${session.role ?? 'nobody'}.`;
}
