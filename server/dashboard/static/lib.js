// Helpers of the kiln dashboard: DOM building (text only, never HTML),
// the API client (through the server's /ui/api proxy with the CSRF token)
// and the event stream.

const SVGNS = 'http://www.w3.org/2000/svg';

// h builds an element. attrs: on* are listeners, the rest attributes;
// children: strings become text nodes (so nothing from a task is ever
// parsed as HTML), null/false are skipped, arrays are flattened.
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  return fill(el, attrs, children);
}

// s builds an SVG element the same way.
export function s(tag, attrs, ...children) {
  return fill(document.createElementNS(SVGNS, tag), attrs, children);
}

function fill(el, attrs, children) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'value') el.value = v;
    else if (k === 'checked') el.checked = !!v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else if (c instanceof Node) el.appendChild(c);
    else el.appendChild(document.createTextNode(String(c)));
  }
}

// replace empties el and appends the children.
export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export const state = { csrf: '', admin: false, projects: [], project: '' };

// ApiError is a failed API call: the status and the catalogue's code.
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message || code || String(status));
    this.status = status;
    this.code = code;
  }
}

let onUnauthorized = () => {};
export function setUnauthorizedHandler(f) { onUnauthorized = f; }

// api calls the server's API through the dashboard's proxy. path is
// "/v1/..." or "/2/..."; body is JSON (or FormData).
export async function api(method, path, body, opts = {}) {
  const headers = {};
  if (method !== 'GET' && method !== 'HEAD') headers['X-CSRF-Token'] = state.csrf;
  let payload;
  if (body instanceof FormData) payload = body;
  else if (body !== undefined) { headers['Content-Type'] = 'application/json'; payload = JSON.stringify(body); }
  const res = await fetch('/ui/api' + path, { method, headers, body: payload, credentials: 'same-origin' });
  if (res.status === 401 && !opts.noRedirect) onUnauthorized();
  if (!res.ok) {
    let code = '', msg = res.statusText;
    try {
      const j = await res.json();
      if (j.error) { code = j.error.code; msg = j.error.message; } else if (j.msg) msg = j.msg;
    } catch { /* not JSON */ }
    throw new ApiError(res.status, code, msg);
  }
  if (opts.text) return res.text();
  if (res.status === 204) return null;
  const ct = res.headers.get('Content-Type') || '';
  return ct.includes('json') ? res.json() : res.text();
}

// p returns the current project's API prefix.
export function p(rest = '') { return '/v1/projects/' + encodeURIComponent(state.project) + rest; }
export function p2(rest = '') { return '/2/projects/' + encodeURIComponent(state.project) + rest; }

export function flash(msg, err) {
  const box = document.getElementById('flash');
  const d = h('div', { class: err ? 'err' : '' }, msg);
  box.appendChild(d);
  setTimeout(() => d.remove(), err ? 8000 : 4000);
}

// act runs an action, reports its failure, and returns its answer.
export async function act(what, f) {
  try {
    const r = await f();
    return r;
  } catch (e) {
    flash(what + ': ' + e.message, true);
    throw e;
  }
}

export function stateBadge(st) {
  return h('span', { class: 'state s-' + st, 'data-state': st }, st);
}

export function fmtTime(t) {
  if (!t) return '—';
  const d = new Date(t);
  if (isNaN(d)) return String(t);
  return d.toLocaleString();
}

export function ago(t) {
  if (!t) return '—';
  const ms = Date.now() - new Date(t).getTime();
  const f = (v, u) => Math.round(v) + ' ' + u;
  const a = Math.abs(ms);
  let r;
  if (a < 60e3) r = f(a / 1e3, 's');
  else if (a < 3600e3) r = f(a / 60e3, 'min');
  else if (a < 86400e3) r = f(a / 3600e3, 'h');
  else r = f(a / 86400e3, 'd');
  return ms >= 0 ? r + ' ago' : 'in ' + r;
}

export function fmtMs(ms) {
  if (ms === null || ms === undefined || isNaN(ms)) return '—';
  if (ms < 1000) return Math.round(ms) + ' ms';
  if (ms < 60e3) return (ms / 1000).toFixed(1) + ' s';
  return (ms / 60e3).toFixed(1) + ' min';
}

// decode turns a base64 payload or result into text: pretty JSON when it
// is JSON, else the UTF-8 text, else a hex dump.
export function decode(b64) {
  if (b64 === null || b64 === undefined || b64 === '') return '';
  let bytes;
  try {
    bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  } catch { return String(b64); }
  let text;
  try { text = new TextDecoder('utf-8', { fatal: true }).decode(bytes); } catch {
    return Array.from(bytes.slice(0, 4096), (b) => b.toString(16).padStart(2, '0')).join(' ');
  }
  try { return JSON.stringify(JSON.parse(text), null, 2); } catch { return text; }
}

export function encode(text) {
  const bytes = new TextEncoder().encode(text);
  let bin = '';
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin);
}

// debounce calls f at most once per ms, after the last call.
export function debounce(f, ms) {
  let t = null;
  return (...args) => {
    if (t) clearTimeout(t);
    t = setTimeout(() => { t = null; f(...args); }, ms);
  };
}

// The event stream of the current project: one EventSource, and the
// current page's listeners. The kinds are those of docs/api.md.
export const EVENT_KINDS = [
  'task.enqueued', 'task.started', 'task.succeeded', 'task.failed', 'task.retrying', 'task.dead',
  'task.timed_out', 'task.cancelled', 'task.lease_lost', 'task.progress', 'task.released',
  'worker.registered', 'worker.verified', 'worker.verify_failed', 'worker.work_taken', 'worker.no_work',
  'worker.work_complete', 'worker.work_timed_out', 'worker.revoked', 'worker.lease_abandoned',
];

const listeners = new Set();
let source = null;
let sourceProject = '';

export function onEvent(f) { listeners.add(f); return () => listeners.delete(f); }
export function clearListeners() { listeners.clear(); }

export function connectEvents() {
  if (source && sourceProject === state.project) return;
  if (source) source.close();
  sourceProject = state.project;
  const dot = document.getElementById('live');
  source = new EventSource('/ui/api' + p('/events'));
  source.onopen = () => { dot.classList.add('on'); dot.title = 'live: connected to the event stream'; };
  source.onerror = () => { dot.classList.remove('on'); dot.title = 'event stream: reconnecting'; };
  const dispatch = (kind) => (msg) => {
    let ev;
    try { ev = JSON.parse(msg.data); } catch { return; }
    ev.kind = ev.kind || kind;
    for (const f of listeners) {
      try { f(ev); } catch (e) { console.error(e); }
    }
  };
  for (const k of EVENT_KINDS) source.addEventListener(k, dispatch(k));
}

export function closeEvents() {
  if (source) source.close();
  source = null;
  sourceProject = '';
}

// kv renders a definition list of [label, value] pairs; values are text
// or nodes.
export function kv(pairs) {
  return h('dl', { class: 'kv' }, pairs.map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
}

export function qs(params) {
  const u = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') u.set(k, v);
  const t = u.toString();
  return t ? '?' + t : '';
}
