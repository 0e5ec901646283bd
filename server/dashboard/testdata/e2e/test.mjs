// Browser tests of kiln's dashboard, in headless Chromium driven by
// playwright-core. The Go test TestBrowser (browser_test.go) starts a
// server with a worker and a code runner, prepares a few tasks, and runs
// this script with:
//   KILN_URL          the server's URL
//   KILN_TOKEN        an admin token
//   KILN_PROJECT      the project
//   KILN_DEAD_ID      a dead task whose error holds HTML
//   KILN_CODE_ZIP     a code package zip to upload (run.sh prints lines slowly)
//   KILN_SHOTS        where to write the screenshots (empty: none)
//   CHROMIUM          the browser (default /usr/bin/chromium)
// Each step prints "ok <name>"; the first failure prints "FAIL <name>: ..."
// and exits 1.
import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const URL = process.env.KILN_URL;
const TOKEN = process.env.KILN_TOKEN;
const PROJECT = process.env.KILN_PROJECT || 'default';
const DEAD = process.env.KILN_DEAD_ID;
const ZIP = process.env.KILN_CODE_ZIP;
const SHOTS = process.env.KILN_SHOTS || '';
const XSS = '<script>window.__xss=1</script><img src=x onerror="window.__xss=2">';
const T = 20000; // generous waits: the machine may be busy

function check(cond, msg) { if (!cond) throw new Error(msg); }

const profile = mkdtempSync(join(tmpdir(), 'kiln-e2e-'));
const ctx = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  viewport: { width: 1280, height: 860 },
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync'],
});
const page = ctx.pages()[0] || await ctx.newPage();
const consoleErrors = [];
page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(m.text()); });
page.on('pageerror', (e) => consoleErrors.push(String(e)));
page.on('dialog', (d) => d.accept());

async function shot(name) {
  if (!SHOTS) return;
  mkdirSync(SHOTS, { recursive: true });
  await page.waitForTimeout(300); // let the last event's redraw land
  await page.screenshot({ path: join(SHOTS, name + '.png'), fullPage: false });
}

async function noXSS(where) {
  const v = await page.evaluate(() => window.__xss);
  check(v === undefined, `${where}: a script from a task ran (window.__xss = ${v})`);
}

async function go(hash) {
  await page.evaluate((h) => { location.hash = h; }, hash);
}

const steps = [];
function step(name, f) { steps.push([name, f]); }

step('sign-in refuses a wrong token', async () => {
  await page.goto(URL + '/');
  await page.waitForSelector('#signin', { timeout: T });
  await page.fill('#token', 'kiln_not-a-real-token-but-long-enough');
  await page.click('#signin button[type=submit]');
  await page.waitForFunction(() => document.getElementById('signin-msg').textContent.includes('Unknown'), null, { timeout: T });
  await shot('signin');
});

step('sign-in with a token sets a strict HttpOnly session cookie', async () => {
  await page.fill('#token', TOKEN);
  await page.click('#signin button[type=submit]');
  await page.waitForSelector('#overview .stat', { timeout: T });
  const cookies = await ctx.cookies(URL);
  const c = cookies.find((x) => x.name === 'kiln_session');
  check(c, 'no session cookie: ' + JSON.stringify(cookies.map((x) => x.name)));
  check(c.httpOnly, 'the session cookie is not HttpOnly');
  check(c.sameSite === 'Strict', 'the session cookie is SameSite=' + c.sameSite);
  check(!c.value.includes(TOKEN) && c.value !== TOKEN, 'the cookie holds the token');
  const inJS = await page.evaluate(() => document.cookie);
  check(!inJS.includes('kiln_session'), 'the session cookie is readable from JavaScript');
});

step('overview draws charts and queue depths', async () => {
  await page.waitForSelector('#overview svg rect', { timeout: T });
  await page.waitForSelector('#overview table', { timeout: T });
  await shot('overview');
});

let echoID = '';
step('enqueue a task and watch it reach succeeded (live)', async () => {
  await go('#/tasks');
  await page.waitForSelector('#enqueue', { state: 'attached', timeout: T });
  await page.click('details summary');
  await page.fill('#enqueue input[name=type]', 'echo');
  await page.fill('#enqueue textarea[name=payload]', XSS);
  await page.click('#enqueue button[type=submit]');
  await page.waitForSelector('#task #task-state', { timeout: T });
  echoID = decodeURIComponent(await page.evaluate(() => location.hash.split('/')[2]));
  await page.waitForSelector('#task-state [data-state=succeeded]', { timeout: T });
  // The progress bar got to 100 %.
  await page.waitForFunction(() => document.getElementById('progress-text').textContent.startsWith('100%'), null, { timeout: T });
  await shot('task');
});

step('a <script> in a payload is shown as text and does not run', async () => {
  const text = await page.textContent('#payload');
  check(text.includes('<script>window.__xss=1</script>'), 'the payload is not shown as text: ' + text);
  check(await page.$('#payload script, #payload img') === null, 'the payload became HTML');
  await noXSS('payload');
});

step('a queue name with HTML is refused, and the refusal shown as text', async () => {
  // Names are [A-Za-z0-9._:-] only, so a queue cannot be called so; the
  // API's error echoes the name, and the page shows it as text.
  await go('#/tasks');
  await page.waitForSelector('#enqueue', { state: 'attached', timeout: T });
  await page.click('details summary');
  await page.fill('#enqueue input[name=type]', 'echo');
  await page.fill('#enqueue input[name=queue]', '<img src=x onerror="window.__xss=5">');
  await page.click('#enqueue button[type=submit]');
  await page.waitForFunction(() => [...document.querySelectorAll('#flash div.err')].some((d) => d.textContent.includes('<img src=x')), null, { timeout: T });
  check(await page.$('#flash img') === null, 'the error became HTML');
  await noXSS('queue name');
  await page.evaluate(() => document.getElementById('flash').replaceChildren());
});

step('the tasks list pages by cursor and filters by state', async () => {
  await go('#/tasks?state=succeeded');
  await page.waitForSelector(`#tasks tr[data-id="${echoID}"]`, { timeout: T });
  const states = await page.$$eval('#tasks td.st span', (els) => els.map((e) => e.dataset.state));
  check(states.length > 0 && states.every((x) => x === 'succeeded'), 'filter by state: ' + states);
  await go('#/tasks');
  await page.waitForSelector('#tasks tr[data-id]', { timeout: T });
  const first = await page.$$eval('#tasks tr[data-id]', (els) => els.map((e) => e.dataset.id));
  check(first.length === 50, 'a page holds 50 tasks, got ' + first.length);
  await page.click('#next');
  await page.waitForFunction((ids) => {
    const rows = [...document.querySelectorAll('#tasks tr[data-id]')].map((e) => e.dataset.id);
    return rows.length > 0 && !rows.some((x) => ids.includes(x));
  }, first, { timeout: T });
  await go('#/overview');
  await page.waitForSelector('#overview .stat', { timeout: T });
  await go('#/tasks');
  await page.waitForSelector('#tasks tr[data-id]', { timeout: T });
  await shot('tasks');
});

step('pause and resume a queue', async () => {
  await go('#/queues');
  const row = '#queues tr[data-queue="pausable"]';
  await page.waitForSelector(row, { timeout: T });
  await page.click(row + ' button.pause');
  await page.waitForFunction((r) => document.querySelector(r + ' .qstatus')?.textContent === 'paused', row, { timeout: T });
  const paused = await page.evaluate(async (p) => {
    const r = await fetch('/ui/api/v1/projects/' + p + '/queues?queue=pausable');
    return (await r.json()).queues[0].paused;
  }, PROJECT);
  check(paused === true, 'the server does not say paused');
  await shot('queues');
  await page.click(row + ' button.resume');
  await page.waitForFunction((r) => document.querySelector(r + ' .qstatus')?.textContent === 'running', row, { timeout: T });
});

step('the dead set shows an error as text; re-drive a dead task', async () => {
  await go('#/dead');
  const row = `#tasks tr[data-id="${DEAD}"]`;
  await page.waitForSelector(row, { timeout: T });
  const err = await page.textContent(row + ' td.err');
  check(err.includes('<img src=x onerror='), 'the error is not shown as text: ' + err);
  await noXSS('dead set');
  await shot('dead');
  await page.check(row + ' input.sel');
  await page.click('#bulk-retry');
  await go('#/task/' + encodeURIComponent(DEAD));
  await page.waitForSelector('#task-state [data-state=succeeded]', { timeout: T });
  // The attempts: the failed one with its error as text, the retry's
  // mark, then the run that succeeded.
  await page.waitForSelector('#attempts tr.current', { timeout: T });
  const rows = await page.$$eval('#attempts tr', (trs) => trs.map((tr) => tr.className + ': ' + tr.textContent));
  check(rows.length === 4 && rows[1].startsWith('failed: 1') && rows[1].includes('boom <img src=x onerror=') &&
    rows[2].startsWith('retried:') && rows[3].startsWith('current: 1') && rows[3].endsWith('succeeded'),
  'the attempts are not the failed one, the retry and the success: ' + JSON.stringify(rows));
  await noXSS('task attempts');
  await shot('task-attempts');
});

let codeTask = '';
step('upload a code package', async () => {
  await go('#/code');
  await page.waitForSelector('#upload', { timeout: T });
  await page.fill('#upload input[name=name]', 'logger');
  await page.fill('#upload input[name=file]', 'run.sh');
  await page.selectOption('#upload select[name=runtime]', 'sh');
  await page.setInputFiles('#upload input[name=zip]', ZIP);
  await page.click('#upload button[type=submit]');
  await page.waitForSelector('#codes tr[data-name="logger"]', { timeout: T });
  await shot('code');
});

step('download a code package and list its revisions', async () => {
  const row = '#codes tr[data-name="logger"]';
  const dl = await page.evaluate(async (r) => {
    const a = document.querySelector(r + ' a[download]');
    const res = await fetch(a.getAttribute('href'));
    const b = new Uint8Array(await res.arrayBuffer());
    return { status: res.status, zip: b[0] === 0x50 && b[1] === 0x4b, size: b.length };
  }, row);
  check(dl.status === 200 && dl.zip, 'download: ' + JSON.stringify(dl));
  await page.click(row + ' button:has-text("Revisions")');
  await page.waitForFunction(() => document.querySelector('#codes').textContent.includes('rev 1'), null, { timeout: T });
});

step('follow a live log; a <script> in a log line is shown as text', async () => {
  await go('#/tasks');
  await page.waitForSelector('#enqueue', { state: 'attached', timeout: T });
  await page.click('details summary');
  await page.fill('#enqueue input[name=type]', 'code:logger');
  await page.fill('#enqueue textarea[name=payload]', '{}');
  await page.click('#enqueue button[type=submit]');
  await page.waitForSelector('#task #task-state', { timeout: T });
  codeTask = decodeURIComponent(await page.evaluate(() => location.hash.split('/')[2]));
  // The first line shows while the task still runs...
  await page.waitForFunction(() => (document.getElementById('log')?.textContent || '').includes('line 1'), null, { timeout: T });
  const whileRunning = await page.$eval('#task-state span', (e) => e.dataset.state);
  const logNow = await page.textContent('#log');
  check(whileRunning === 'active' && !logNow.includes('line 3'), `the log was not live: state ${whileRunning}, log ${logNow}`);
  await shot('task-log');
  // ...and the rest follows without a reload.
  await page.waitForFunction(() => document.getElementById('log').textContent.includes('line 3'), null, { timeout: T });
  await page.waitForSelector('#task-state [data-state=succeeded]', { timeout: T });
  const log = await page.textContent('#log');
  check(log.includes('<script>window.__xss=3</script>'), 'the log line is not shown as text: ' + log);
  check(await page.$('#log script') === null, 'the log became HTML');
  await noXSS('log');
});

step('a request without the CSRF token is refused', async () => {
  const r = await page.evaluate(async (p) => {
    const no = await fetch('/ui/api/v1/projects/' + p + '/queues/pausable/pause', { method: 'POST' });
    const wrong = await fetch('/ui/api/v1/projects/' + p + '/queues/pausable/pause', { method: 'POST', headers: { 'X-CSRF-Token': 'nope' } });
    const q = await (await fetch('/ui/api/v1/projects/' + p + '/queues?queue=pausable')).json();
    return { no: no.status, wrong: wrong.status, paused: q.queues[0].paused };
  }, PROJECT);
  check(r.no === 403 && r.wrong === 403, 'statuses ' + JSON.stringify(r));
  check(r.paused === false, 'the refused request paused the queue');
});

step('the page has a strict Content-Security-Policy', async () => {
  const res = await page.goto(URL + '/');
  const csp = res.headers()['content-security-policy'] || '';
  check(csp.includes("script-src 'self'") && !csp.includes('unsafe-inline') && !csp.includes('unsafe-eval'), 'CSP: ' + csp);
  // An inline script is refused by the browser itself, which says so.
  const before = consoleErrors.length;
  const ran = await page.evaluate(() => {
    const el = document.createElement('script');
    el.textContent = 'window.__inline = 1';
    document.body.appendChild(el);
    return window.__inline;
  });
  check(ran === undefined, 'an inline script ran despite the CSP');
  await page.waitForTimeout(200);
  const blocked = consoleErrors.splice(before);
  check(blocked.some((e) => e.includes('Content Security Policy')), 'no CSP violation was reported: ' + blocked);
});

step('schedules: create, pause, resume and edit in place', async () => {
  await page.waitForSelector('#overview .stat', { timeout: T });
  await go('#/schedules');
  await page.waitForSelector('#schedule-form', { timeout: T });
  await page.fill('#schedule-form input[name=id]', 'nightly');
  await page.fill('#schedule-form input[name=type]', 'report');
  await page.fill('#schedule-form input[name=cron]', '30 2 * * *');
  await page.click('#schedule-form button[type=submit]');
  const row = '#schedules tr[data-id="nightly"]';
  await page.waitForSelector(row, { timeout: T });
  const get = () => page.evaluate(async (p) => (await fetch('/ui/api/v1/projects/' + encodeURIComponent(p) + '/schedules/nightly')).json(), PROJECT);
  const created = await get();
  check(created.status === 'active' && created.next_start, 'created: ' + JSON.stringify(created));
  // The next run and the two after it.
  await page.waitForFunction((sel) => document.querySelector(sel + ' td.next')?.textContent.includes('then'), row, { timeout: T });

  await page.click(row + ' button[data-act=pause]');
  await page.waitForSelector(row + '[data-status=paused]', { timeout: T });
  check((await page.textContent(row + ' td.next')).includes('paused'), 'a paused schedule shows next runs');
  check(!(await page.$(row + ' button[data-act=pause]')) && await page.$(row + ' button[data-act=resume]'), 'a paused schedule offers Pause, or no Resume');
  const paused = await get();
  check(paused.status === 'paused' && paused.next_start === null, 'paused: ' + JSON.stringify(paused));

  await page.click(row + ' button[data-act=resume]');
  await page.waitForSelector(row + '[data-status=active]', { timeout: T });
  const resumed = await get();
  check(resumed.status === 'active' && resumed.next_start, 'resumed: ' + JSON.stringify(resumed));

  await page.click(row + ' button[data-act=edit]');
  check(await page.isDisabled('#schedule-form input[name=id]'), 'the id can be changed while editing');
  check(await page.inputValue('#schedule-form input[name=cron]') === '30 2 * * *', 'the form does not hold the schedule');
  await page.fill('#schedule-form input[name=cron]', '15 4 * * *');
  await page.fill('#schedule-form input[name=tz]', 'Europe/London');
  await page.fill('#schedule-form input[name=payload]', '{"edited":true}');
  await page.click('#schedule-form button[type=submit]');
  await page.waitForFunction((sel) => document.querySelector(sel)?.textContent.includes('15 4 * * * (Europe/London)'), row, { timeout: T });
  const edited = await get();
  check(edited.id === 'nightly' && edited.created_at === created.created_at && edited.cron === '15 4 * * *' &&
    edited.time_zone === 'Europe/London' && atob(edited.task.payload) === '{"edited":true}' && edited.status === 'active' &&
    edited.run_count === created.run_count, 'edited in place: ' + JSON.stringify(edited));
  check(await page.$$eval('#schedules tr[data-id="nightly"]', (r) => r.length) === 1, 'the edit made a second schedule');
  check(!(await page.isDisabled('#schedule-form input[name=id]')), 'the form is still editing after the save');
  await shot('schedules');
});

step('workers, workflows and projects pages', async () => {
  await go('#/workers');
  await page.waitForSelector('#workers tr[data-id]', { timeout: T });
  await shot('workers');
  await go('#/workflows');
  await page.waitForSelector('#workflows a', { timeout: T });
  await page.click('#workflows a');
  await page.waitForSelector('#graph g.node', { timeout: T });
  await shot('workflow');
  await go('#/projects');
  await page.waitForSelector('#tokens', { timeout: T });
  await shot('projects');
  await noXSS('pages');
});

step('sign out ends the session', async () => {
  await page.click('#logout');
  await page.waitForSelector('#signin', { timeout: T });
  const st = await page.evaluate(async () => (await fetch('/ui/session')).status);
  check(st === 401, 'session after sign-out: ' + st);
});

let failed = false;
for (const [name, f] of steps) {
  const t0 = Date.now();
  try {
    await f();
    console.log(`ok ${name} (${Date.now() - t0} ms)`);
  } catch (e) {
    failed = true;
    console.log(`FAIL ${name}: ${e.message}`);
    const fp = join(tmpdir(), 'kiln-dashboard-failure.png');
    await page.screenshot({ path: fp }).catch(() => {});
    console.log('screenshot of the failure: ' + fp);
    break;
  }
}
const errs = consoleErrors.filter((e) => !e.includes('Failed to load resource'));
if (!failed && errs.length) {
  failed = true;
  console.log('FAIL the page logged errors:\n' + errs.join('\n'));
}
await ctx.close();
rmSync(profile, { recursive: true, force: true });
process.exit(failed ? 1 : 0);
