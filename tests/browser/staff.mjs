// The staff page in a real headless Chromium (issue 14 point 6), driven by tests/staff_browser.rs.
//
// Environment: STAFF_URL (http://127.0.0.1:PORT), STAFF_USER, STAFF_PASSWORD, SCREENSHOT_DIR,
// CHROMIUM (default /usr/bin/chromium). Talks to the Rust test in lines:
//   node → `READY logged-in`           rust → `DAY YYYY-MM-DD` (the day the call will book on)
//   node → `READY page-open`           rust → `CALL-DONE` (booked, requested, reported)
//   node → `APPEARED ms=N` … `OUTAGE …`
//   node → `CLOSED YYYY-MM-DD`         rust → `AGENT-SAW-CLOSED` (no slots that day)
//   node → `REOPENED`                  rust → `AGENT-SAW-OPEN` (slots again)
//   node → … `PASS`                    (or `FAIL reason`, exit 1)
// Every check is a wait for what the page shows, never a timing assertion.
import { chromium } from 'playwright-core';
import { createInterface } from 'node:readline';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

const base = need('STAFF_URL');
const user = need('STAFF_USER');
const password = need('STAFF_PASSWORD');
const shots = need('SCREENSHOT_DIR');
const APPEAR_TIMEOUT_MS = 15000;

function need(name) {
  const v = process.env[name];
  if (!v) { fail(`${name} is not set`); }
  return v;
}

function say(line) { process.stdout.write(`${line}\n`); }

function fail(why) {
  say(`FAIL ${why}`);
  process.exit(1);
}

function check(cond, why) { if (!cond) { throw new Error(why); } }

// Lines from the Rust test, one at a time.
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
async function expectLine(prefix) {
  const { value, done } = await lines.next();
  check(!done, `stdin closed while waiting for ${prefix}`);
  check(value.startsWith(prefix), `expected ${prefix}, got ${value}`);
  return value.slice(prefix.length).trim();
}

// The headers every /staff reply carries (docs/staff.md); `patient` adds no-store.
async function checkHeaders(resp, what, patient) {
  check(resp, `${what}: no response`);
  const h = await resp.allHeaders();
  const csp = h['content-security-policy'] || '';
  for (const part of ["default-src 'none'", "script-src 'self'", "frame-ancestors 'none'"]) {
    check(csp.includes(part), `${what}: CSP lacks ${part}: ${csp}`);
  }
  check(h['x-frame-options'] === 'DENY', `${what}: X-Frame-Options ${h['x-frame-options']}`);
  check(h['x-content-type-options'] === 'nosniff', `${what}: nosniff missing`);
  check(h['referrer-policy'] === 'same-origin', `${what}: Referrer-Policy missing`);
  if (patient) {
    check(h['cache-control'] === 'no-store', `${what}: Cache-Control ${h['cache-control']}`);
  }
  say(`HEADERS ok ${what}`);
}

async function shot(page, name) {
  const path = join(shots, `${name}.png`);
  await page.screenshot({ path, fullPage: false });
  say(`SCREENSHOT ${path}`);
}

// Submits the login form; the response of the POST.
async function login(page, name, pass) {
  await page.fill('input[name="name"]', name);
  await page.fill('input[name="password"]', pass);
  const [resp] = await Promise.all([
    page.waitForResponse((r) => r.url().endsWith('/staff/login') && r.request().method() === 'POST'),
    page.click('button[type="submit"]'),
  ]);
  await page.waitForLoadState('load');
  return resp;
}

// Waits until an element matching `selector` shows every one of `needles` (polled by the
// browser; the page itself is never reloaded here).
async function shows(page, needles, selector, what) {
  try {
    await page.waitForFunction(([sel, want]) => [...document.querySelectorAll(sel)]
      .some((el) => want.every((n) => el.innerText.includes(n))), [selector, needles],
    { timeout: APPEAR_TIMEOUT_MS, polling: 100 });
  } catch (e) {
    current = page;
    throw new Error(`${what} did not appear within ${APPEAR_TIMEOUT_MS} ms`);
  }
  say(`SEEN ${what}`);
}

async function refusedText(page) {
  const note = page.locator('[role="alert"]');
  await note.waitFor({ timeout: 5000 });
  return (await note.innerText()).trim();
}

let current = null;

async function run(browser) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, locale: 'de-DE' });
  const page = await context.newPage();
  page.on('pageerror', (e) => say(`PAGE-ERROR ${e.message}`));
  // Failed requests by URL (the console's own message does not name it); /favicon.ico is
  // outside /staff and expected to be missing.
  page.on('response', (r) => {
    if (r.status() >= 400 && !r.url().endsWith('/favicon.ico')) {
      say(`HTTP ${r.status()} ${r.request().method()} ${r.url()}`);
    }
  });
  current = page;
  // The live fragment's polls (fetch, so no navigation response): keep one full answer.
  let liveReply = null;
  page.on('response', (r) => {
    if (!liveReply && r.status() === 200 && new URL(r.url()).pathname === '/staff/live') {
      liveReply = r;
    }
  });

  // Not logged in: /staff leads to the login form.
  const first = await page.goto(`${base}/staff`);
  check(new URL(page.url()).pathname === '/staff/login', `not sent to the login: ${page.url()}`);
  await checkHeaders(first, 'login page', false);
  await shot(page, 'login');

  // Wrong password, then an unknown user: refused, with the same words.
  const wrong = await login(page, user, `${password}-falsch`);
  check(wrong.status() === 403, `wrong password answered ${wrong.status()}`);
  const wrongText = await refusedText(page);
  const unknown = await login(page, 'niemand', password);
  check(unknown.status() === 403, `unknown user answered ${unknown.status()}`);
  const unknownText = await refusedText(page);
  check(wrongText === unknownText, `different answers: "${wrongText}" / "${unknownText}"`);
  check(!(await context.cookies()).some((c) => c.name === 'ignis_staff'), 'cookie after refusal');
  say(`REFUSED same message: ${wrongText}`);

  // The right one: in, on the day page.
  await login(page, user, password);
  check(new URL(page.url()).pathname === '/staff', `not on the page after login: ${page.url()}`);
  const cookie = (await context.cookies()).find((c) => c.name === 'ignis_staff');
  check(cookie && cookie.httpOnly && cookie.sameSite === 'Strict', `session cookie ${JSON.stringify(cookie)}`);
  const home = await page.reload();
  await checkHeaders(home, 'day page', true);
  say('READY logged-in');

  // A second tab on the day the call will book (the appointment timeline is per day).
  const day = await expectLine('DAY');
  const dayPage = await context.newPage();
  await dayPage.goto(`${base}/staff?day=${day}`);
  // Marks that survive only as long as neither page is reloaded.
  for (const p of [page, dayPage]) { await p.evaluate(() => { window.__noReload = true; }); }
  say('READY page-open');

  await expectLine('CALL-DONE');
  const t0 = Date.now();
  const live = page.locator('#live');
  // Today's page: the emergency and the request; the booking's day: its timeline row marked
  // as booked by the AI (the legend always names that colour, so look for the row).
  await shows(page, ['Brustschmerzen', 'Ramipril'], '#live', 'emergency and request');
  await shows(dayPage, ['von der KI gebucht', 'Weber'], '#live tr.ai-booked', 'booking');
  const ms = Date.now() - t0;
  for (const p of [page, dayPage]) {
    check(await p.evaluate(() => window.__noReload === true), 'the page was reloaded');
  }
  check((await page.title()).startsWith('(1 Notfall, 1 offen)'), `title: ${await page.title()}`);
  say(`APPEARED ms=${ms} (emergency, prescription request, booking; no reload)`);
  await shot(page, 'day-page');
  await checkHeaders(liveReply, 'live fragment (poll)', true);
  await shot(dayPage, 'appointments');

  // Mark the prescription request done while a poll that started before it is held back with
  // the old state (a full 200, no If-None-Match), released only after the POST's answer is
  // shown: staff.js must not paste the old state back (review point 7).
  let held = false;
  let fetched;
  const heldFetched = new Promise((r) => { fetched = r; });
  let release;
  const released = new Promise((r) => { release = r; });
  await page.route('**/staff/live*', async (route) => {
    if (held) { await route.continue(); return; }
    held = true;
    const headers = { ...route.request().headers() };
    delete headers['if-none-match'];
    const old = await route.fetch({ headers });
    fetched();
    await released;
    await route.fulfill({ response: old });
  });
  await heldFetched;
  const row = live.locator('tr', { hasText: 'Ramipril' }).first();
  await row.locator('form.act button').first().click();
  await shows(page, [`Erledigt von ${user}`, 'Ramipril'], '#live tr', 'done by');
  await page.evaluate(() => {
    window.__sawOld = false;
    const old = () => [...document.querySelectorAll('#live tr')]
      .some((tr) => tr.innerText.includes('Ramipril') && !tr.innerText.includes('Erledigt von'));
    new MutationObserver(() => { if (old()) { window.__sawOld = true; } })
      .observe(document.getElementById('live'), { childList: true, subtree: true });
  });
  release();
  // Two later polls: the held answer has long been handled by then.
  for (let i = 0; i < 2; i++) {
    await page.waitForRequest((r) => new URL(r.url()).pathname === '/staff/live', { timeout: APPEAR_TIMEOUT_MS });
  }
  await page.unroute('**/staff/live*');
  check(!(await page.evaluate(() => window.__sawOld)), 'a poll from before the POST pasted back the old state');
  say('STALE poll answer ignored');
  const again = await page.reload();
  await checkHeaders(again, 'day page after done', true);
  await shows(page, [`Erledigt von ${user}`, 'Ramipril'], '#live tr', 'done after reload');
  say('DONE persisted after reload');
  await shot(page, 'after-done');

  // The server unreachable for a while (nginx's 502 during a restart): the page stays, marked
  // stale, with its content; once answers come back it is live again, never reloaded.
  await page.evaluate(() => { window.__noReload = true; });
  let outage = 0;
  await page.route('**/staff/live*', async (route) => {
    outage += 1;
    await route.fulfill({ status: 502, contentType: 'text/html', body: '<h1>502 Bad Gateway</h1>' });
  });
  await page.waitForFunction(() => document.body.classList.contains('stale'), null, { timeout: APPEAR_TIMEOUT_MS });
  await page.waitForTimeout(3000);
  const during = outage;
  check(during >= 1 && during <= 3, `polls during a 3 s outage: ${during} (no backoff?)`);
  check((await live.innerText()).includes('Ramipril'), 'the content went away during the outage');
  await page.unroute('**/staff/live*');
  await page.waitForFunction(() => !document.body.classList.contains('stale'), null, { timeout: 40000 });
  check(await page.evaluate(() => window.__noReload === true), 'the page was reloaded during the outage');
  say('OUTAGE page kept, stale, then live again');

  // Close the booked day for illness with the page's own form (plain HTML, prefilled with the
  // shown day): the banner names the reason and the appointment still booked on it. The Rust
  // side then asks the agent's slot tool for that day; "Wieder öffnen" undoes it.
  await dayPage.selectOption('form.close select[name="reason"]', 'illness');
  await Promise.all([
    dayPage.waitForURL(/#schliessungen$/),
    dayPage.click('form.close button[type="submit"]'),
  ]);
  await shows(dayPage, ['Praxis an diesem Tag geschlossen: Krankheit', '1 Termin an diesem Tag bleibt'],
    '#live p.closed', 'closed banner');
  await shows(dayPage, ['Krankheit', user, 'Wieder öffnen'], '#schliessungen tr', 'closure listed');
  await shot(dayPage, 'closed');
  say(`CLOSED ${day}`);
  await expectLine('AGENT-SAW-CLOSED');
  await Promise.all([
    dayPage.waitForURL(/#schliessungen$/),
    dayPage.click('#schliessungen form[action$="/remove"] button'),
  ]);
  check(await dayPage.locator('#live p.closed').count() === 0, 'still closed after "Wieder öffnen"');
  say('REOPENED');
  await expectLine('AGENT-SAW-OPEN');

  // A POST without the CSRF token, from the page itself (same origin, with the cookie).
  const csrf = await page.evaluate(async () => {
    const form = document.querySelector('form.act');
    const body = new URLSearchParams();
    body.set('reply', 'fragment');
    const r = await fetch(form.action, { method: 'POST', body, credentials: 'same-origin' });
    return r.status;
  });
  check(csrf === 403, `POST without CSRF token answered ${csrf}`);
  say('CSRF refused 403');

  // Logout: back to the login form, and the page is closed to this browser.
  await Promise.all([page.waitForURL(/\/staff\/login/), page.click('form.logout button')]);
  const after = await page.goto(`${base}/staff`);
  check(new URL(page.url()).pathname === '/staff/login', `after logout: ${page.url()}`);
  await checkHeaders(after, 'login after logout', false);
  say('LOGOUT back to the login');
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  // Chromium's sandbox refuses to start as root (CI containers).
  args: process.getuid && process.getuid() === 0 ? ['--no-sandbox'] : [],
}).catch((e) => fail(`cannot start Chromium: ${e.message.split('\n')[0]}`));
try {
  mkdirSync(shots, { recursive: true });
  await run(browser);
  say('PASS');
} catch (e) {
  if (current) {
    const text = await current.locator('body').innerText().catch(() => '');
    say(`PAGE ${current.url()}: ${text.replace(/\s+/g, ' ').slice(0, 300)}`);
    await shot(current, 'failure').catch(() => {});
  }
  say(`FAIL ${e.message.split('\n')[0]}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
process.exit(process.exitCode || 0);
