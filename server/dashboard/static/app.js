// The kiln dashboard: sign-in, a hash router and the pages. Every value
// that comes from the server is put in the page as text (lib.js h()).
import {
  h, s, replace, state, api, p, p2, flash, act, stateBadge, fmtTime, ago, fmtMs, decode, encode,
  debounce, onEvent, clearListeners, connectEvents, closeEvents, kv, qs, setUnauthorizedHandler,
} from './lib.js';

const main = document.getElementById('main');
const STATES = ['scheduled', 'pending', 'active', 'retry', 'succeeded', 'dead', 'cancelled'];

// ------------------------------------------------------------ session ----

async function loadSession() {
  const res = await fetch('/ui/session', { credentials: 'same-origin' });
  if (!res.ok) return false;
  applySession(await res.json());
  return true;
}

function applySession(j) {
  state.csrf = j.csrf;
  state.admin = j.admin;
  state.projects = (j.projects || []).map((x) => x.id);
  const saved = sessionStorage.getItem('kiln.project');
  state.project = state.projects.includes(saved) ? saved : (state.projects[0] || '');
  const sel = document.getElementById('project');
  replace(sel, state.projects.map((id) => h('option', { value: id }, id)));
  sel.value = state.project;
  document.getElementById('nav').hidden = false;
  document.getElementById('project-box').hidden = false;
  document.getElementById('logout').hidden = false;
}

function signIn() {
  closeEvents();
  clearListeners();
  document.getElementById('nav').hidden = true;
  document.getElementById('project-box').hidden = true;
  document.getElementById('logout').hidden = true;
  const input = h('input', { type: 'password', id: 'token', name: 'token', autocomplete: 'current-password', placeholder: 'kiln_…', required: true });
  const msg = h('p', { class: 'muted', id: 'signin-msg' }, 'Sign in with an admin token or a project token. The token stays on the server; the browser keeps a session cookie.');
  const form = h('form', {
    class: 'card signin', id: 'signin',
    onsubmit: async (e) => {
      e.preventDefault();
      const res = await fetch('/ui/login', {
        method: 'POST', credentials: 'same-origin', headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ token: input.value.trim() }),
      });
      if (!res.ok) {
        replace(msg, res.status === 401 ? 'Unknown or revoked token.' : 'Sign-in failed (' + res.status + ').');
        msg.className = 'err';
        return;
      }
      input.value = '';
      applySession(await res.json());
      if (!location.hash || location.hash === '#/signin') location.hash = '#/overview';
      else route();
    },
  }, h('h1', {}, 'Sign in to kiln'), msg, h('label', {}, 'Token', input), h('p', {}, h('button', { class: 'primary', type: 'submit' }, 'Sign in')));
  replace(main, form);
  input.focus();
}

setUnauthorizedHandler(() => signIn());

document.getElementById('logout').addEventListener('click', async () => {
  await fetch('/ui/logout', { method: 'POST', credentials: 'same-origin', headers: { 'X-CSRF-Token': state.csrf } });
  state.csrf = '';
  signIn();
});

document.getElementById('project').addEventListener('change', (e) => {
  state.project = e.target.value;
  sessionStorage.setItem('kiln.project', state.project);
  closeEvents();
  route();
});

// ------------------------------------------------------------- router ----

const pages = {
  overview: overviewPage, queues: queuesPage, tasks: tasksPage, task: taskPage, dead: deadPage,
  schedules: schedulesPage, code: codePage, workers: workersPage, workflows: workflowsPage,
  workflow: workflowPage, projects: projectsPage,
};

let timers = [];
function every(ms, f) { timers.push(setInterval(f, ms)); }

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, '');
  const [path, query] = raw.split('?');
  const parts = path.split('/').map(decodeURIComponent);
  return { name: parts[0] || 'overview', arg: parts.slice(1).join('/'), params: new URLSearchParams(query || '') };
}

async function route() {
  if (!state.csrf) return;
  clearListeners();
  timers.forEach(clearInterval);
  timers = [];
  const { name, arg, params } = parseHash();
  const page = pages[name] || overviewPage;
  for (const a of document.querySelectorAll('#nav a')) {
    a.classList.toggle('on', a.getAttribute('href') === '#/' + name);
  }
  if (!state.project && name !== 'projects') {
    replace(main, h('p', {}, 'This token has no project.'));
    return;
  }
  connectEvents();
  window.scrollTo(0, 0);
  replace(main, h('p', { class: 'muted' }, 'Loading…'));
  try {
    await page(arg, params);
  } catch (e) {
    if (e.status !== 401) replace(main, h('div', { class: 'card' }, h('h1', {}, 'Error'), h('p', {}, e.message)));
  }
}

window.addEventListener('hashchange', route);

// ----------------------------------------------------------- overview ----

// Throughput is drawn from the latest finished tasks (at most 1000 per
// state) in one-minute buckets over the last hour, and kept current by
// the event stream.
async function overviewPage() {
  const page = h('div', { id: 'overview' });
  replace(main, h('h1', {}, 'Overview — ', state.project), page);
  const buckets = 60;
  const width = 60e3;
  const ok = new Array(buckets).fill(0);
  const bad = new Array(buckets).fill(0);
  let origin = Math.floor(Date.now() / width) * width - (buckets - 1) * width;
  const shift = () => {
    const now = Math.floor(Date.now() / width) * width - (buckets - 1) * width;
    while (origin < now) { ok.shift(); ok.push(0); bad.shift(); bad.push(0); origin += width; }
  };
  const add = (arr, t) => {
    const i = Math.floor((new Date(t).getTime() - origin) / width);
    if (i >= 0 && i < buckets) arr[i]++;
  };
  const [succ, failed, started] = await Promise.all([
    api('GET', p('/tasks' + qs({ state: 'succeeded', order: 'newest', limit: 1000 }))),
    api('GET', p('/tasks' + qs({ state: 'dead,retry', order: 'newest', limit: 1000 }))),
    api('GET', p('/tasks' + qs({ state: 'active,succeeded,dead,retry', order: 'newest', limit: 200 }))),
  ]);
  for (const t of succ.tasks) add(ok, t.finished_at);
  for (const t of failed.tasks) add(bad, t.finished_at || t.run_at);
  const lat = [];
  for (const t of started.tasks) {
    if (t.started_at && (t.run_at || t.created_at)) {
      const from = Math.max(new Date(t.run_at || t.created_at).getTime(), new Date(t.created_at).getTime());
      lat.push(Math.max(0, new Date(t.started_at).getTime() - from));
    }
  }
  const counts = { enq: 0 };
  const statBox = h('div', { class: 'stats' });
  const chart = h('div', { class: 'card' });
  const queues = h('div', { class: 'card' });
  page.append(statBox, chart, queues);

  const drawStats = (qs2) => {
    const tot = {};
    for (const q of qs2) for (const [k, v] of Object.entries(q.counts || {})) tot[k] = (tot[k] || 0) + v;
    const sorted = [...lat].sort((a, b) => a - b);
    const pct = (f) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(f * sorted.length))] : null);
    replace(statBox,
      ['pending', 'active', 'retry', 'dead'].map((k) => h('div', { class: 'stat', 'data-stat': k }, h('b', {}, String(tot[k] || 0)), h('span', {}, k))),
      h('div', { class: 'stat' }, h('b', {}, String(ok.slice(-5).reduce((a, b) => a + b, 0))), h('span', {}, 'succeeded, last 5 min')),
      h('div', { class: 'stat' }, h('b', {}, fmtMs(pct(0.5))), h('span', {}, 'enqueue→start p50 (last ', String(sorted.length), ')')),
      h('div', { class: 'stat' }, h('b', {}, fmtMs(pct(0.95))), h('span', {}, 'enqueue→start p95')),
      h('div', { class: 'stat' }, h('b', {}, String(counts.enq)), h('span', {}, 'enqueued since page opened')));
    replace(queues, h('h2', {}, 'Queue depths'), qs2.length === 0 ? h('p', { class: 'muted' }, 'No queues yet.') :
      h('table', {}, h('tr', {}, h('th', {}, 'queue'), h('th', { class: 'num' }, 'pending'), h('th', { class: 'num' }, 'active'),
        h('th', { class: 'num' }, 'scheduled'), h('th', { class: 'num' }, 'retry'), h('th', { class: 'num' }, 'dead'), h('th', {}, 'depth')),
      qs2.map((q) => {
        const c = q.counts || {};
        const max = Math.max(1, ...qs2.map((x) => (x.counts?.pending || 0) + (x.counts?.active || 0)));
        const d = (c.pending || 0) + (c.active || 0);
        return h('tr', {}, h('td', {}, h('a', { href: '#/tasks' + qs({ queue: q.queue }) }, q.queue), q.paused ? ' (paused)' : ''),
          ['pending', 'active', 'scheduled', 'retry', 'dead'].map((k) => h('td', { class: 'num' }, String(c[k] || 0))),
          h('td', {}, h('div', { class: 'bar' }, h('div', { style: null, 'data-w': d }))));
      })));
    // widths through CSSOM (no inline style attribute: CSP)
    for (const el of queues.querySelectorAll('[data-w]')) {
      const max = Math.max(1, ...[...queues.querySelectorAll('[data-w]')].map((x) => +x.dataset.w));
      el.style.width = (100 * +el.dataset.w / max) + '%';
    }
  };
  const drawChart = () => {
    shift();
    const W = 900, H = 160, pad = 24;
    const max = Math.max(1, ...ok.map((v, i) => v + bad[i]));
    const bw = (W - pad) / buckets;
    const svg = s('svg', { viewBox: `0 0 ${W} ${H + 20}`, width: '100%', role: 'img', 'aria-label': 'tasks finished per minute, last hour' });
    svg.append(s('line', { class: 'axis', x1: pad, y1: H, x2: W, y2: H }));
    svg.append(s('text', { x: 0, y: 10 }, String(max)), s('text', { x: 0, y: H }, '0'));
    for (let i = 0; i < buckets; i++) {
      const hOk = (H - 10) * ok[i] / max, hBad = (H - 10) * bad[i] / max;
      const x = pad + i * bw;
      if (ok[i]) svg.append(s('rect', { class: 'ok', x, y: H - hOk, width: bw - 1, height: hOk }, s('title', {}, ok[i] + ' succeeded')));
      if (bad[i]) svg.append(s('rect', { class: 'bad', x, y: H - hOk - hBad, width: bw - 1, height: hBad }, s('title', {}, bad[i] + ' failed')));
    }
    svg.append(s('text', { x: pad, y: H + 14 }, '60 min ago'), s('text', { x: W - 30, y: H + 14 }, 'now'));
    replace(chart, h('h2', {}, 'Throughput per minute, last hour ', h('span', { class: 'muted' }, '(green succeeded, red failed)')), svg);
  };
  let qlist = (await api('GET', p('/queues'))).queues;
  drawStats(qlist);
  drawChart();
  const refreshQueues = debounce(async () => { qlist = (await api('GET', p('/queues'))).queues; drawStats(qlist); }, 500);
  onEvent((ev) => {
    if (ev.kind === 'task.succeeded') { shift(); ok[ok.length - 1]++; drawChart(); }
    if (ev.kind === 'task.failed' || ev.kind === 'task.dead') { shift(); bad[bad.length - 1]++; drawChart(); }
    if (ev.kind === 'task.enqueued') counts.enq++;
    if (ev.kind.startsWith('task.')) refreshQueues();
  });
  every(60e3, drawChart);
}

// ------------------------------------------------------------- queues ----

async function queuesPage() {
  const box = h('div', {});
  replace(main, h('h1', {}, 'Queues'), box);
  const draw = async () => {
    const { queues } = await api('GET', p('/queues'));
    replace(box, queues.length === 0 ? h('p', { class: 'muted' }, 'No queues yet: enqueue a task.') :
      h('table', { id: 'queues' }, h('tr', {}, h('th', {}, 'queue'), h('th', {}, 'status'), STATES.map((st) => h('th', { class: 'num' }, st)), h('th', { class: 'num' }, 'total'), h('th', {}, '')),
        queues.map((q) => h('tr', { 'data-queue': q.queue },
          h('td', {}, h('a', { href: '#/tasks' + qs({ queue: q.queue }) }, q.queue)),
          h('td', { class: 'qstatus' }, q.paused ? 'paused' : 'running'),
          STATES.map((st) => h('td', { class: 'num', 'data-count': st }, String(q.counts?.[st] || 0))),
          h('td', { class: 'num' }, String(q.total || 0)),
          h('td', {}, h('button', {
            type: 'button', class: q.paused ? 'resume' : 'pause',
            onclick: async () => {
              await act(q.paused ? 'resume' : 'pause', () => api('POST', p('/queues/' + encodeURIComponent(q.queue) + (q.paused ? '/resume' : '/pause'))));
              flash((q.paused ? 'Resumed ' : 'Paused ') + q.queue);
              draw();
            },
          }, q.paused ? 'Resume' : 'Pause'))))));
  };
  await draw();
  onEvent(debounce((ev) => { if (ev.kind.startsWith('task.')) draw(); }, 400));
}

// -------------------------------------------------------------- tasks ----

function taskRow(t, sel) {
  return h('tr', { 'data-id': t.id },
    sel ? h('td', {}, h('input', { type: 'checkbox', class: 'sel', value: t.id, 'aria-label': 'select ' + t.id })) : null,
    h('td', { class: 'mono' }, h('a', { href: '#/task/' + encodeURIComponent(t.id) }, t.id)),
    h('td', {}, t.type), h('td', {}, t.queue), h('td', { class: 'st' }, stateBadge(t.state)),
    h('td', { class: 'num' }, String(t.attempt)), h('td', {}, ago(t.created_at)),
    h('td', { class: 'err' }, (t.last_error || '').slice(0, 120)));
}

async function tasksPage(_, params, opts = {}) {
  const f = {
    state: params.get('state') || (opts.state || ''), queue: params.get('queue') || '', type: params.get('type') || '',
    created_after: params.get('after') || '', created_before: params.get('before') || '', order: params.get('order') || 'newest',
  };
  const title = opts.title || 'Tasks';
  const head = h('div', {});
  const body = h('div', {});
  replace(main, h('h1', {}, title), head, body);
  // Filters (kept in the URL, so a view can be bookmarked).
  const stateSel = h('select', { name: 'state' }, h('option', { value: '' }, 'any'), STATES.map((st) => h('option', { value: st }, st)));
  stateSel.value = f.state;
  const toLocal = (iso) => (iso ? new Date(iso).toISOString().slice(0, 16) : '');
  const inputs = {
    queue: h('input', { name: 'queue', value: f.queue, placeholder: 'any', size: 12 }),
    type: h('input', { name: 'type', value: f.type, placeholder: 'any', size: 14 }),
    after: h('input', { name: 'after', type: 'datetime-local', value: toLocal(f.created_after) }),
    before: h('input', { name: 'before', type: 'datetime-local', value: toLocal(f.created_before) }),
  };
  const search = h('input', { name: 'id', placeholder: 'task id', size: 24 });
  if (!opts.fixed) {
    head.append(h('form', {
      class: 'row card', id: 'filters',
      onsubmit: (e) => {
        e.preventDefault();
        const toISO = (v) => (v ? new Date(v).toISOString() : '');
        location.hash = '#/tasks' + qs({ state: stateSel.value, queue: inputs.queue.value.trim(), type: inputs.type.value.trim(), after: toISO(inputs.after.value), before: toISO(inputs.before.value) });
      },
    }, h('label', {}, 'State', stateSel), h('label', {}, 'Queue', inputs.queue), h('label', {}, 'Type', inputs.type),
    h('label', {}, 'Created after', inputs.after), h('label', {}, 'Created before', inputs.before), h('button', { type: 'submit' }, 'Filter')),
    h('form', {
      class: 'row', onsubmit: (e) => { e.preventDefault(); if (search.value.trim()) location.hash = '#/task/' + encodeURIComponent(search.value.trim()); },
    }, h('label', {}, 'Find by id', search), h('button', { type: 'submit' }, 'Open')),
    enqueueForm());
  }
  // The list, one page at a time by cursor.
  const cursors = [''];
  let page = 0;
  let shown = [];
  const table = h('table', { id: 'tasks' });
  const pager = h('div', { class: 'pager' });
  const bulk = h('div', { class: 'row' });
  const banner = h('div', {});
  body.append(banner, bulk, table, pager);
  const selected = () => [...table.querySelectorAll('input.sel:checked')].map((x) => x.value);
  const doBulk = (what, route) => async () => {
    const ids = selected();
    if (!ids.length) { flash('Select tasks first.', true); return; }
    if (what === 'delete' && !confirm('Delete ' + ids.length + ' task(s)?')) return;
    const r = await act(what, () => api('POST', p('/tasks:' + route), { ids }));
    const errs = r.items.filter((x) => x.error);
    flash(what + ': ' + (ids.length - errs.length) + ' done' + (errs.length ? ', ' + errs.length + ' refused (' + errs[0].error.message + ')' : ''), errs.length > 0);
    load();
  };
  replace(bulk,
    h('button', { type: 'button', id: 'bulk-retry', onclick: doBulk('retry', 'retry') }, opts.fixed ? 'Re-drive selected' : 'Retry selected'),
    h('button', { type: 'button', id: 'bulk-cancel', onclick: doBulk('cancel', 'cancel') }, 'Cancel selected'),
    h('button', { type: 'button', id: 'bulk-delete', class: 'danger', onclick: doBulk('delete', 'delete') }, 'Delete selected'));
  let newCount = 0;
  const load = async () => {
    const r = await api('GET', p('/tasks' + qs({ ...f, limit: 50, cursor: cursors[page] })));
    shown = r.tasks;
    cursors[page + 1] = r.next_cursor;
    const all = h('input', { type: 'checkbox', 'aria-label': 'select all', onchange: (e) => { for (const c of table.querySelectorAll('input.sel')) c.checked = e.target.checked; } });
    replace(table, h('tr', {}, h('th', {}, all), h('th', {}, 'id'), h('th', {}, 'type'), h('th', {}, 'queue'), h('th', {}, 'state'), h('th', { class: 'num' }, 'attempt'), h('th', {}, 'created'), h('th', {}, 'last error')),
      shown.map((t) => taskRow(t, true)));
    replace(pager,
      h('button', { type: 'button', disabled: page === 0, onclick: () => { page--; load().then(() => window.scrollTo(0, 0)); } }, '← Newer'),
      h('span', { class: 'muted' }, 'page ' + (page + 1) + (shown.length === 0 && r.next_cursor ? ' (no match in this stretch; keep going)' : '')),
      h('button', { type: 'button', id: 'next', disabled: !r.next_cursor, onclick: () => { page++; load().then(() => window.scrollTo(0, 0)); } }, 'Older →'));
    newCount = 0;
    replace(banner);
  };
  await load();
  // Live: rows on this page are re-read when an event names them; new
  // tasks are announced (the page is not reloaded under the reader).
  const pendingIds = new Set();
  const refreshRows = debounce(async () => {
    const ids = [...pendingIds];
    pendingIds.clear();
    if (!ids.length) return;
    const r = await api('POST', p('/tasks:batchGet'), { ids });
    for (const t of r.tasks) {
      if (!t) continue;
      const row = table.querySelector(`tr[data-id="${CSS.escape(t.id)}"]`);
      if (row) {
        const wasChecked = row.querySelector('input.sel')?.checked;
        const nr = taskRow(t, true);
        if (wasChecked) nr.querySelector('input.sel').checked = true;
        row.replaceWith(nr);
      }
    }
  }, 300);
  onEvent((ev) => {
    if (!ev.kind.startsWith('task.')) return;
    if (ev.kind === 'task.enqueued' && page === 0 && (!f.queue || f.queue === ev.queue) && (!f.type || f.type === ev.type)) {
      newCount++;
      replace(banner, h('div', { class: 'banner' }, String(newCount), ' new task(s). ', h('a', { href: '#', onclick: (e) => { e.preventDefault(); load(); } }, 'Show')));
    }
    if (shown.some((t) => t.id === ev.task_id)) { pendingIds.add(ev.task_id); refreshRows(); }
  });
}

function enqueueForm() {
  const type = h('input', { name: 'type', required: true, placeholder: 'email:send', size: 16 });
  const queue = h('input', { name: 'queue', placeholder: 'default', size: 12 });
  const payload = h('textarea', { name: 'payload', placeholder: '{"to":"a@example.com"}', rows: 2 });
  const delay = h('input', { name: 'delay', type: 'number', min: 0, placeholder: '0', size: 6 });
  return h('details', { class: 'card' }, h('summary', {}, 'Enqueue a task'),
    h('form', {
      id: 'enqueue', class: 'row',
      onsubmit: async (e) => {
        e.preventDefault();
        const opts = {};
        if (queue.value.trim()) opts.queue = queue.value.trim();
        // A code package's tasks wait in the queue named by their type.
        else if (type.value.trim().startsWith('code:')) opts.queue = type.value.trim();
        if (+delay.value > 0) opts.process_in_ms = +delay.value * 1000;
        const task = { type: type.value.trim(), options: opts };
        if (payload.value) task.payload = encode(payload.value);
        const r = await act('enqueue', () => api('POST', p('/tasks'), { tasks: [task] }));
        const it = r.tasks[0];
        if (it.error) { flash('enqueue: ' + it.error.message, true); return; }
        flash('Enqueued ' + it.id);
        location.hash = '#/task/' + encodeURIComponent(it.id);
      },
    }, h('label', {}, 'Type', type), h('label', {}, 'Queue', queue), h('label', {}, 'Delay (s)', delay),
    h('label', { class: 'wide' }, 'Payload (text or JSON)', payload), h('button', { class: 'primary', type: 'submit' }, 'Enqueue')));
}

async function deadPage(_, params) {
  return tasksPage(_, params, { state: 'dead', title: 'Dead set', fixed: true });
}

// --------------------------------------------------------------- task ----

// attemptsTable lists a task's attempts, oldest first: every failed one
// the store keeps (t.errors) with its time, worker and error as text, then
// the current one when it has not failed. An attempt number that does not
// grow means an operator retried the task (the count starts over).
function attemptsTable(t) {
  const errs = t.errors || [];
  if (t.attempt === 0 && errs.length === 0) return h('p', { class: 'muted' }, 'Not started yet.');
  const rows = [];
  let prev = 0;
  const retried = (n) => {
    if (n <= prev) rows.push(h('tr', { class: 'retried' }, h('td', { colspan: 4, class: 'muted' }, 'retried: the count of attempts started over')));
    prev = n;
  };
  for (const e of errs) {
    retried(e.attempt);
    rows.push(h('tr', { class: 'failed' }, h('td', {}, String(e.attempt)), h('td', {}, fmtTime(e.at)), h('td', { class: 'mono' }, e.worker_id || '—'),
      h('td', {}, h('pre', { class: 'err' }, e.error))));
  }
  const last = errs[errs.length - 1];
  const current = last && last.attempt === t.attempt && ['retry', 'dead', 'cancelled'].includes(t.state);
  if (!current && t.attempt > 0) {
    retried(t.attempt);
    // A task stored before the history was kept has its last error only.
    const outcome = errs.length === 0 && t.last_error && ['retry', 'dead', 'cancelled'].includes(t.state) ?
      h('pre', { class: 'err' }, t.last_error) : t.state;
    rows.push(h('tr', { class: 'current' }, h('td', {}, String(t.attempt)), h('td', {}, fmtTime(t.started_at)), h('td', { class: 'mono' }, t.worker_id || '—'), h('td', {}, outcome)));
  }
  return [
    t.errors_dropped ? h('p', { class: 'muted', id: 'errors-dropped' }, String(t.errors_dropped), t.errors_dropped === 1 ? ' earlier failed attempt is' : ' earlier failed attempts are', ' not kept (a task keeps its last ', String(errs.length), ').') : null,
    h('table', { id: 'attempts' }, h('tr', {}, h('th', {}, 'attempt'), h('th', {}, 'at'), h('th', {}, 'worker'), h('th', {}, 'outcome')), rows),
  ];
}

async function taskPage(id) {
  const box = h('div', { id: 'task' });
  replace(main, h('h1', {}, 'Task ', h('span', { class: 'mono' }, id)), box);
  let t;
  const logPre = h('pre', { class: 'log', id: 'log' });
  let logText = '';
  let logTried = false;
  const isCode = () => t && t.type.startsWith('code:');
  const readLog = async () => {
    if (!isCode()) return;
    try {
      const text = await api('GET', p2('/tasks/' + encodeURIComponent(id) + '/log'), undefined, { text: true, noRedirect: true });
      if (text.startsWith(logText)) {
        const add = text.slice(logText.length);
        if (add) logPre.append(document.createTextNode(add));
      } else {
        logPre.textContent = text;
      }
      logText = text;
      logPre.scrollTop = logPre.scrollHeight;
    } catch (e) {
      if (e.status !== 404) throw e;
    }
    logTried = true;
  };
  const draw = () => {
    // A task that succeeded is done, whatever progress it reported last.
    const pct = t.state === 'succeeded' ? 100 : (t.progress ? Math.max(0, Math.min(100, t.progress.percent)) : 0);
    const bar = h('div', { class: 'bar', role: 'progressbar', 'aria-valuenow': pct, 'aria-valuemin': 0, 'aria-valuemax': 100 }, h('div', { id: 'progress-fill' }));
    bar.firstChild.style.width = pct + '%';
    const actions = h('div', { class: 'row' },
      ['dead', 'cancelled'].includes(t.state) ? h('button', { type: 'button', id: 'retry', class: 'primary', onclick: () => one('retry', () => api('POST', p('/tasks/' + encodeURIComponent(id) + '/retry'))) }, 'Retry') : null,
      ['pending', 'scheduled', 'retry', 'active'].includes(t.state) ? h('button', { type: 'button', id: 'cancel', onclick: () => one('cancel', () => api('POST', p('/tasks/' + encodeURIComponent(id) + '/cancel'))) }, 'Cancel') : null,
      t.state !== 'active' ? h('button', {
        type: 'button', class: 'danger', id: 'delete',
        onclick: async () => { if (!confirm('Delete task ' + id + '?')) return; await act('delete', () => api('DELETE', p('/tasks/' + encodeURIComponent(id)))); flash('Deleted ' + id); location.hash = '#/tasks'; },
      }, 'Delete') : null);
    replace(box,
      h('div', { class: 'card' }, h('div', { class: 'row' }, h('span', { id: 'task-state' }, stateBadge(t.state)),
        h('span', {}, 'attempt ', String(t.attempt), ' of ', String(t.max_retries + 1)), t.cancel_requested ? h('span', { class: 'muted' }, 'cancel requested') : null), actions,
      h('div', { class: 'row' }, h('span', {}, 'Progress'), bar, h('span', { id: 'progress-text' }, pct + '%', t.progress?.message ? ' — ' + t.progress.message : ''))),
      isCode() ? h('div', { class: 'card' }, h('h2', {}, 'Log ', h('span', { class: 'muted', id: 'log-live' }, t.state === 'active' ? '(live)' : '')), logPre) : null,
      h('div', { class: 'card' }, h('h2', {}, 'Payload'), h('pre', { id: 'payload' }, decode(t.payload) || '(none)')),
      h('div', { class: 'grid' },
        h('div', { class: 'card' }, h('h2', {}, 'Options'), kv([
          ['type', t.type], ['queue', t.queue], ['priority', String(t.priority)], ['max retries', String(t.max_retries)],
          ['timeout', t.timeout_ms ? fmtMs(t.timeout_ms) : 'none'], ['deadline', fmtTime(t.deadline)], ['unique key', t.unique_key || '—'],
          ['retention', t.retention_ms ? fmtMs(t.retention_ms) : 'default'], ['worker', t.worker_id || '—'],
        ])),
        h('div', { class: 'card' }, h('h2', {}, 'Timeline'), kv([
          ['created', fmtTime(t.created_at)], ['run at', fmtTime(t.run_at)], ['started', fmtTime(t.started_at)],
          ['finished', fmtTime(t.finished_at)], ['expires', fmtTime(t.expires_at)],
          ['enqueue→start', t.started_at ? fmtMs(new Date(t.started_at) - new Date(t.run_at || t.created_at)) : '—'],
        ]))),
      h('div', { class: 'card' }, h('h2', {}, 'Attempts'), attemptsTable(t)),
      h('div', { class: 'card' }, h('h2', {}, 'Result'), h('pre', { id: 'result' }, decode(t.result) || '(none)')),
      null);
  };
  const one = async (what, f) => { await act(what, f); flash(what + ': done'); await reload(); };
  const reload = async () => { t = await api('GET', p('/tasks/' + encodeURIComponent(id))); draw(); await readLog(); };
  await reload();
  const again = debounce(reload, 150);
  onEvent((ev) => { if (ev.task_id === id) again(); });
  // While the task runs its log is read every second (the log has no
  // event of its own); the task's state comes from the event stream.
  every(1000, () => { if (t && (t.state === 'active' || !logTried)) readLog().catch(() => {}); });
}

// ---------------------------------------------------------- schedules ----

async function schedulesPage() {
  const box = h('div', {});
  const id = h('input', { name: 'id', placeholder: 'nightly (optional)', size: 14 });
  const type = h('input', { name: 'type', required: true, placeholder: 'report', size: 14 });
  const queue = h('input', { name: 'queue', placeholder: 'default', size: 10 });
  const cron = h('input', { name: 'cron', placeholder: '30 2 * * *', size: 12 });
  const tz = h('input', { name: 'tz', placeholder: 'UTC', size: 12 });
  const everyS = h('input', { name: 'every', type: 'number', min: 1, placeholder: 'or every N s', size: 8 });
  const payload = h('input', { name: 'payload', placeholder: 'payload', size: 20 });
  const title = h('span', { class: 'muted', id: 'schedule-form-title' }, 'New schedule');
  const stopEditing = h('button', { type: 'button', id: 'schedule-edit-cancel', hidden: true, onclick: () => setEditing(null) }, 'Cancel edit');
  // editing is the schedule the form changes in place (PATCH), or null
  // for a new one (POST).
  let editing = null;
  const setEditing = (sc) => {
    editing = sc;
    id.disabled = !!sc;
    stopEditing.hidden = !sc;
    replace(title, sc ? 'Editing ' + sc.id + ' (same id, runs kept)' : 'New schedule');
    if (!sc) { form.reset(); return; }
    id.value = sc.id; type.value = sc.task.type; queue.value = sc.task.options?.queue || '';
    cron.value = sc.cron || ''; tz.value = sc.time_zone || ''; everyS.value = sc.every_ms ? sc.every_ms / 1000 : '';
    payload.value = decode(sc.task.payload);
  };
  const form = h('form', {
    class: 'row card', id: 'schedule-form',
    onsubmit: async (e) => {
      e.preventDefault();
      const q = queue.value.trim() || (type.value.trim().startsWith('code:') ? type.value.trim() : '');
      // An edit replaces the task whole: keep the options the form does not show.
      const options = { ...(editing?.task.options || {}), queue: q };
      if (!q) delete options.queue;
      const body = { task: { type: type.value.trim(), options } };
      if (payload.value) body.task.payload = encode(payload.value);
      if (cron.value.trim()) { body.cron = cron.value.trim(); body.time_zone = tz.value.trim(); }
      if (+everyS.value > 0) body.every_ms = +everyS.value * 1000;
      if (editing) {
        await act('edit', () => api('PATCH', p('/schedules/' + encodeURIComponent(editing.id)), body));
        flash('Schedule ' + editing.id + ' saved');
      } else {
        if (id.value.trim()) body.id = id.value.trim();
        if (!body.time_zone) delete body.time_zone;
        await act('schedule', () => api('POST', p('/schedules'), body));
        flash('Schedule created');
      }
      setEditing(null);
      draw();
    },
  }, title, h('label', {}, 'Id', id), h('label', {}, 'Task type', type), h('label', {}, 'Queue', queue), h('label', {}, 'Cron', cron),
  h('label', {}, 'Time zone', tz), h('label', {}, 'Every (s)', everyS), h('label', {}, 'Payload', payload),
  h('button', { class: 'primary', type: 'submit' }, 'Save'), stopEditing);
  replace(main, h('h1', {}, 'Schedules'), form, box);
  const change = async (sc, verb) => {
    await act(verb, () => api('POST', p('/schedules/' + encodeURIComponent(sc.id) + '/' + verb)));
    flash(sc.id + ': ' + verb + 'd');
    draw();
  };
  // nextRuns shows the next run and the two after it; a paused schedule
  // has none until it is resumed.
  const nextRuns = (sc) => {
    if (sc.status === 'paused') return h('span', { class: 'muted' }, 'paused: none until resumed');
    if (!sc.next_start) return '—';
    const later = (sc.next_runs || []).slice(1);
    return h('span', { class: 'next-runs' }, fmtTime(sc.next_start) + ' (' + ago(sc.next_start) + ')',
      later.length ? h('div', { class: 'muted' }, 'then ' + later.map(fmtTime).join(', ')) : null);
  };
  const draw = async () => {
    const { schedules } = await api('GET', p('/schedules?next_runs=3'));
    replace(box, schedules.length === 0 ? h('p', { class: 'muted' }, 'No schedules.') :
      h('table', { id: 'schedules' }, h('tr', {}, ['id', 'task', 'when', 'status', 'next runs', 'runs', 'last run', 'last error', ''].map((x) => h('th', {}, x))),
        schedules.map((sc) => h('tr', { 'data-id': sc.id, 'data-status': sc.status }, h('td', { class: 'mono' }, sc.id), h('td', {}, sc.task.type, ' → ', sc.task.options?.queue || 'default'),
          h('td', {}, sc.cron ? sc.cron + ' (' + (sc.time_zone || 'UTC') + ')' : 'every ' + fmtMs(sc.every_ms)),
          h('td', {}, stateBadge(sc.status)), h('td', { class: 'next' }, nextRuns(sc)),
          h('td', { class: 'num' }, String(sc.run_count) + (sc.max_runs ? ' / ' + sc.max_runs : '')),
          h('td', {}, sc.last_task_id ? h('a', { href: '#/task/' + encodeURIComponent(sc.last_task_id) }, ago(sc.last_run_time)) : '—'),
          h('td', {}, sc.last_error || ''),
          h('td', {},
            ['active', 'paused'].includes(sc.status) ? h('button', { type: 'button', 'data-act': 'edit', onclick: () => { setEditing(sc); flash('Editing ' + sc.id + ': Save changes it in place'); } }, 'Edit') : null,
            sc.status === 'active' ? h('button', { type: 'button', 'data-act': 'pause', onclick: () => change(sc, 'pause') }, 'Pause') : null,
            sc.status === 'paused' ? h('button', { type: 'button', 'data-act': 'resume', onclick: () => change(sc, 'resume') }, 'Resume') : null,
            h('button', { type: 'button', class: 'danger', 'data-act': 'delete', onclick: async () => { if (!confirm('Delete schedule ' + sc.id + '?')) return; await act('delete', () => api('DELETE', p('/schedules/' + encodeURIComponent(sc.id)))); draw(); } }, 'Delete'))))));
  };
  await draw();
  every(30e3, draw);
}

// --------------------------------------------------------------- code ----

async function codePage() {
  const box = h('div', {});
  const name = h('input', { name: 'name', required: true, placeholder: 'hello', size: 14 });
  const file = h('input', { name: 'file', required: true, placeholder: 'hello.sh', size: 14 });
  const runtime = h('select', { name: 'runtime' }, ['sh', 'python', 'node', 'ruby', 'binary'].map((r) => h('option', { value: r }, r)));
  const zip = h('input', { name: 'zip', type: 'file', accept: '.zip,application/zip', required: true });
  const form = h('form', {
    class: 'row card', id: 'upload',
    onsubmit: async (e) => {
      e.preventDefault();
      const fd = new FormData();
      fd.append('data', JSON.stringify({ name: name.value.trim(), file_name: file.value.trim(), runtime: runtime.value }));
      fd.append('file', zip.files[0]);
      await act('upload', () => api('POST', p2('/codes'), fd));
      flash('Uploaded ' + name.value.trim());
      draw();
    },
  }, h('label', {}, 'Name', name), h('label', {}, 'File to run', file), h('label', {}, 'Runtime', runtime), h('label', {}, 'Zip', zip),
  h('button', { class: 'primary', type: 'submit' }, 'Upload'));
  replace(main, h('h1', {}, 'Code packages'), form, box);
  const draw = async () => {
    const { codes } = await api('GET', p2('/codes' + qs({ per_page: 100 })));
    replace(box, codes.length === 0 ? h('p', { class: 'muted' }, 'No code packages.') :
      h('table', { id: 'codes' }, h('tr', {}, ['name', 'runtime', 'file', 'revision', 'updated', ''].map((x) => h('th', {}, x))),
        codes.map((c) => {
          const revs = h('td', {});
          return [h('tr', { 'data-name': c.name }, h('td', {}, h('a', { href: '#/tasks' + qs({ type: 'code:' + c.name }) }, c.name)), h('td', {}, c.runtime || ''), h('td', {}, c.file_name || ''),
            h('td', { class: 'num' }, String(c.rev)), h('td', {}, ago(c.latest_change)),
            h('td', {},
              h('a', { href: '/ui/api' + p2('/codes/' + encodeURIComponent(c.id) + '/download'), download: c.name + '.zip' }, 'Download'), ' ',
              h('button', { type: 'button', onclick: async () => {
                const r = await api('GET', p2('/codes/' + encodeURIComponent(c.id) + '/revisions'));
                replace(revs, h('table', {}, r.revisions.map((v) => h('tr', {}, h('td', {}, 'rev ' + v.rev), h('td', {}, fmtTime(v.created_at)), h('td', { class: 'mono' }, (v.checksum || '').slice(0, 16)),
                  h('td', {}, h('a', { href: '/ui/api' + p2('/codes/' + encodeURIComponent(c.id) + '/download' + qs({ revision: v.rev })), download: c.name + '-' + v.rev + '.zip' }, 'Download'))))));
              } }, 'Revisions'), ' ',
              h('button', { type: 'button', onclick: async () => { await act('enqueue', () => api('POST', p('/tasks'), { tasks: [{ type: 'code:' + c.name, payload: encode('{}'), options: { queue: 'code:' + c.name } }] })); flash('Enqueued code:' + c.name); } }, 'Run'))),
          h('tr', {}, h('td', { colspan: 6 }, revs))];
        })));
  };
  await draw();
}

// ------------------------------------------------------------ workers ----

async function workersPage() {
  const box = h('div', {});
  replace(main, h('h1', {}, 'Remote workers'), box);
  const draw = async () => {
    const { workers } = await api('GET', p('/workers'));
    replace(box, workers.length === 0 ? h('p', { class: 'muted' }, 'No remote workers.') :
      h('table', { id: 'workers' }, h('tr', {}, ['id', 'name', 'state', 'registered', 'last seen', 'session expires', ''].map((x) => h('th', {}, x))),
        workers.map((w) => h('tr', { 'data-id': w.id }, h('td', { class: 'mono' }, w.id), h('td', {}, w.name), h('td', {}, stateBadge(w.state)),
          h('td', {}, ago(w.created_at)), h('td', {}, ago(w.last_seen_at)), h('td', {}, fmtTime(w.session_expires_at)),
          h('td', {}, w.state !== 'revoked' ? h('button', { type: 'button', class: 'danger', onclick: async () => {
            if (!confirm('Revoke worker ' + w.id + '? Its session keys stop working at once.')) return;
            await act('revoke', () => api('POST', p('/workers/' + encodeURIComponent(w.id) + '/revoke'))); flash('Revoked ' + w.id); draw();
          } }, 'Revoke') : null)))));
  };
  await draw();
  onEvent(debounce((ev) => { if (ev.kind.startsWith('worker.')) draw(); }, 500));
}

// ---------------------------------------------------------- workflows ----

async function workflowsPage(_, params) {
  const box = h('div', {});
  replace(main, h('h1', {}, 'Workflows'), box);
  const r = await api('GET', p('/workflows' + qs({ after: params.get('after') || '', limit: 50 })));
  replace(box, r.workflows.length === 0 ? h('p', { class: 'muted' }, 'No workflows.') :
    h('table', { id: 'workflows' }, h('tr', {}, ['id', 'state', 'tasks', 'waiting', 'created'].map((x) => h('th', {}, x))),
      r.workflows.map((w) => h('tr', {}, h('td', { class: 'mono' }, h('a', { href: '#/workflow/' + encodeURIComponent(w.id) }, w.id)),
        h('td', {}, stateBadge(w.state || '?')), h('td', { class: 'num' }, String(w.size || 0)), h('td', { class: 'num' }, String((w.held || []).length)), h('td', {}, ago(w.created_at))))),
    r.next_cursor ? h('p', {}, h('a', { href: '#/workflows' + qs({ after: r.next_cursor }) }, 'More →')) : null);
}

// workflowPage draws a workflow as a graph: one column per top-level step
// (a chain's steps in order, a group's tasks one above the other), edges
// from each step to the next, each node coloured by its task's state.
async function workflowPage(id) {
  const box = h('div', {});
  replace(main, h('h1', {}, 'Workflow ', h('span', { class: 'mono' }, id)), box);
  const draw = async () => {
    const w = await api('GET', p('/workflows/' + encodeURIComponent(id)));
    let spec = null;
    try { spec = JSON.parse(atob(w.spec || '')); } catch { spec = null; }
    const members = w.members || [];
    const byId = Object.fromEntries(members.map((m) => [m.id, m]));
    const flat = (sh) => (!sh ? [] : sh.id ? [sh.id] : (sh.items || sh.list || []).flatMap(flat));
    // Columns in build order: each top-level step is a column; members
    // built before a step that are no step themselves (a chord's group)
    // form the column before it.
    const top = spec?.top || [];
    const stepOf = {};
    top.forEach((sh, i) => flat(sh).forEach((x) => { stepOf[x] = i; }));
    const cols = [];
    const placed = new Set();
    let pending = [];
    for (const m of members) {
      if (placed.has(m.id)) continue;
      if (stepOf[m.id] === undefined) { pending.push(m.id); placed.add(m.id); continue; }
      if (pending.length) { cols.push(pending); pending = []; }
      const ids = flat(top[stepOf[m.id]]).filter((x) => byId[x] && !placed.has(x));
      ids.forEach((x) => placed.add(x));
      cols.push(ids);
    }
    if (pending.length) cols.push(pending);
    const NW = 170, NH = 44, GX = 60, GY = 14;
    const W = Math.max(1, cols.length) * (NW + GX);
    const H = Math.max(1, ...cols.map((c) => c.length)) * (NH + GY) + 10;
    const svg = s('svg', { viewBox: `0 0 ${W} ${H}`, width: Math.min(W, 1250), role: 'img', 'aria-label': 'workflow graph', id: 'graph' });
    const pos = {};
    cols.forEach((c, i) => c.forEach((mid, j) => { pos[mid] = { x: i * (NW + GX) + 4, y: j * (NH + GY) + 4 }; }));
    for (let i = 0; i + 1 < cols.length; i++) {
      for (const a of cols[i]) for (const b of cols[i + 1]) {
        const A = pos[a], B = pos[b];
        svg.append(s('path', { class: 'edge', d: `M${A.x + NW},${A.y + NH / 2} C${A.x + NW + GX / 2},${A.y + NH / 2} ${B.x - GX / 2},${B.y + NH / 2} ${B.x},${B.y + NH / 2}` }));
      }
    }
    for (const m of members) {
      const P = pos[m.id];
      if (!P) continue;
      const g = s('g', { class: 'node s-' + m.state, 'data-id': m.id, transform: `translate(${P.x},${P.y})` },
        s('rect', { width: NW, height: NH, rx: 6 }),
        s('rect', { width: 5, height: NH, rx: 2, fill: 'currentColor' }),
        s('text', { class: 'id', x: 10, y: 17 }, m.type.length > 24 ? m.type.slice(0, 23) + '…' : m.type),
        s('text', { x: 10, y: 33 }, m.state + (m.error ? ' — ' + m.error.slice(0, 20) : '')),
        s('title', {}, m.id + ' (' + m.type + '): ' + m.state + (m.error ? '\n' + m.error : '')));
      g.addEventListener('click', () => { location.hash = '#/task/' + encodeURIComponent(m.id); });
      svg.append(g);
    }
    replace(box, h('div', { class: 'card' }, h('p', {}, 'State: ', stateBadge(w.state || '?'), ' · ', String(members.length), ' tasks · created ', fmtTime(w.created_at)), svg),
      h('table', {}, h('tr', {}, ['task', 'type', 'state', 'error'].map((x) => h('th', {}, x))),
        members.map((m) => h('tr', {}, h('td', { class: 'mono' }, h('a', { href: '#/task/' + encodeURIComponent(m.id) }, m.id)), h('td', {}, m.type), h('td', {}, stateBadge(m.state)), h('td', {}, m.error || '')))));
  };
  await draw();
  const ids = new Set();
  const again = debounce(draw, 400);
  onEvent((ev) => { if (ev.task_id && (ids.size === 0 || ids.has(ev.task_id))) again(); });
}

// ----------------------------------------------------------- projects ----

async function projectsPage() {
  const box = h('div', {});
  replace(main, h('h1', {}, 'Projects and tokens'), box);
  const draw = async () => {
    const { projects } = await api('GET', '/v1/projects');
    const tokBox = h('div', {});
    const newId = h('input', { name: 'id', required: true, placeholder: 'acme', size: 14 });
    const tokName = h('input', { name: 'name', required: true, placeholder: 'ci', size: 14 });
    replace(box,
      h('table', { id: 'projects' }, h('tr', {}, ['id', 'name', 'created'].map((x) => h('th', {}, x))),
        projects.map((pr) => h('tr', {}, h('td', { class: 'mono' }, pr.id), h('td', {}, pr.name), h('td', {}, fmtTime(pr.created_at))))),
      state.admin ? h('form', {
        class: 'row card', onsubmit: async (e) => {
          e.preventDefault();
          const r = await act('create project', () => api('POST', '/v1/projects', { id: newId.value.trim(), name: newId.value.trim() }));
          flash('Created project ' + r.project.id + '. Its worker secret is shown once below.');
          box.prepend(h('div', { class: 'card' }, 'Worker secret of ', r.project.id, ' (shown once): ', h('code', {}, r.worker_secret)));
        },
      }, h('label', {}, 'New project id', newId), h('button', { type: 'submit' }, 'Create project')) : null,
      h('h2', {}, 'Tokens of ', state.project),
      h('form', {
        class: 'row', onsubmit: async (e) => {
          e.preventDefault();
          const r = await act('create token', () => api('POST', p('/tokens'), { name: tokName.value.trim() }));
          tokBox.prepend(h('div', { class: 'card' }, 'New token ', r.id, ' (shown once; copy it now): ', h('code', {}, r.token)));
          drawTokens();
        },
      }, h('label', {}, 'Token name', tokName), h('button', { type: 'submit' }, 'Create token')),
      tokBox);
    const list = h('div', {});
    tokBox.append(list);
    const drawTokens = async () => {
      const { tokens } = await api('GET', p('/tokens'));
      replace(list, h('table', { id: 'tokens' }, h('tr', {}, ['id', 'name', 'created', ''].map((x) => h('th', {}, x))),
        tokens.map((t) => h('tr', {}, h('td', { class: 'mono' }, t.id), h('td', {}, t.name), h('td', {}, fmtTime(t.created_at)),
          h('td', {}, h('button', { type: 'button', class: 'danger', onclick: async () => {
            if (!confirm('Delete token ' + t.name + '?')) return;
            await act('delete token', () => api('DELETE', p('/tokens/' + encodeURIComponent(t.id)))); drawTokens();
          } }, 'Delete'))))));
    };
    await drawTokens();
  };
  await draw();
}

// -------------------------------------------------------------- start ----

(async () => {
  if (await loadSession()) route();
  else signIn();
})();
