// Drives the admin console in headless Chromium against a running gateway (started by tests/ui.rs).
// Env: GATEWAY_URL, ADMIN_PASSWORD, API_KEY, SCREENSHOT_DIR, MEDIA_ORIGIN, CHROMIUM (default /usr/bin/chromium).
// Steps whose API is not in this build (404) are skipped with a note. A failure saves failure-<step>.png.
import { chromium } from 'playwright-core';
import { mkdirSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';

const BASE = process.env.GATEWAY_URL;
const PASSWORD = process.env.ADMIN_PASSWORD;
const API_KEY = process.env.API_KEY;
const SHOTS = process.env.SCREENSHOT_DIR || 'ui-screenshots';
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const DESKTOP = { width: 1280, height: 860 };
const PHONE = { width: 375, height: 812 };
mkdirSync(SHOTS, { recursive: true });
for (const f of readdirSync(SHOTS)) if (f.startsWith('failure-')) rmSync(join(SHOTS, f));

setTimeout(() => { console.error('browser test timed out'); process.exit(2); }, 240_000).unref();

let passed = 0, failed = 0, skipped = 0;
const pageErrors = [];

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage'],
});
const context = await browser.newContext({ viewport: DESKTOP, locale: 'zh-CN', colorScheme: 'light' });
const page = await context.newPage();
page.setDefaultTimeout(10_000);
page.on('pageerror', (e) => pageErrors.push(String(e)));
page.on('console', (m) => { if (m.type() === 'error' && /Content Security Policy|Uncaught/.test(m.text())) pageErrors.push(m.text()); });
// Every request the page makes must stay on the gateway (no CDN, no outside host), but for the media
// previews the operator opens, which load from the upstream that made them (MEDIA_ORIGIN, the mock).
const outside = [];
const allowed = [BASE, 'data:', 'blob:', process.env.MEDIA_ORIGIN].filter(Boolean);
page.on('request', (r) => { if (!allowed.some((a) => r.url().startsWith(a))) outside.push(r.url()); });

async function step(name, fn) {
  const t0 = Date.now();
  try {
    const r = await fn();
    if (r === 'skip') { skipped++; console.log(`SKIP ${name}`); return; }
    passed++;
    console.log(`ok   ${name} (${Date.now() - t0} ms)`);
  } catch (e) {
    failed++;
    const file = join(SHOTS, `failure-${name.replace(/[^a-z0-9]+/gi, '-')}.png`);
    await page.screenshot({ path: file, fullPage: true }).catch(() => {});
    console.log(`FAIL ${name}: ${e.stack || e}\n     screenshot: ${file}`);
  }
}

function expect(cond, msg) { if (!cond) throw new Error(msg); }

async function api(path, opts = {}) {
  const token = await page.evaluate(() => localStorage.getItem('adminToken'));
  const r = await fetch(BASE + path, { ...opts, headers: { authorization: 'Bearer ' + token, 'content-type': 'application/json', ...(opts.headers || {}) } });
  return { status: r.status, body: await r.json().catch(() => null) };
}

async function shot(name) {
  for (const [label, vp] of [['desktop', DESKTOP], ['phone', PHONE]]) {
    await page.setViewportSize(vp);
    await page.evaluate(() => window.scrollTo(0, 0));
    await page.waitForTimeout(350);
    // Phones: the first screens only, so the picture stays legible.
    const height = await page.evaluate(() => document.documentElement.scrollHeight);
    const clip = label === 'phone' ? { x: 0, y: 0, width: vp.width, height: Math.min(height, 1800) } : undefined;
    await page.screenshot({ path: join(SHOTS, `${name}-${label}.png`), fullPage: true, clip });
  }
  await page.setViewportSize(DESKTOP);
}

async function toastSays(re) {
  await page.locator('.toast', { hasText: re }).first().waitFor();
}

const tab = (name) => page.locator(`#tab-${name}`);

await step('unauthenticated /manage goes to /login', async () => {
  await page.goto(BASE + '/');
  await page.waitForURL('**/login');
  expect(await page.locator('h1').textContent() === '登录管理后台', 'Chinese by default');
});

await step('wrong password shows the API message', async () => {
  await page.fill('#username', 'admin');
  await page.fill('#password', 'wrong');
  await page.click('#login-submit');
  await page.locator('#login-error', { hasText: '用户名或密码错误' }).waitFor();
  await shot('login');
});

await step('log in', async () => {
  await page.fill('#password', PASSWORD);
  await page.press('#password', 'Enter');
  await page.waitForURL('**/manage');
  await page.locator('#page-overview').waitFor();
  expect(await tab('overview').getAttribute('aria-selected') === 'true', 'overview tab selected');
});

await step('add tokens with progress', async () => {
  await tab('tokens').click();
  await page.click('#tok-add');
  const secrets = Array.from({ length: 250 }, (_, i) => `ui-test-token-${String(i).padStart(4, '0')}-abcdefghijkl`);
  await page.fill('#add-tokens', secrets.join('\n') + '\n\n' + secrets[0]);
  expect(await page.locator('#add-tokens.secret').count() === 1, 'typed tokens masked by default');
  await page.check('#add-reveal');
  expect(await page.locator('#add-tokens.secret').count() === 0, 'reveal shows the typed tokens');
  await page.click('#add-submit');
  await toastSays(/新增 250 个/);
  await page.locator('#tok-table tbody tr[data-token-id]').first().waitFor();
  const pagerText = await page.locator('#tok-pager .pager-info').textContent();
  expect(pagerText.includes('250'), 'pager counts 250 tokens: ' + pagerText);
  const html = await page.content();
  expect(!html.includes('ui-test-token-0001-abcdefghijkl'), 'no secret in the page after adding');
});

let tokenId = '';
await step('edit tags and filter by tag', async () => {
  const row = page.locator('#tok-table tbody tr[data-token-id]').first();
  tokenId = await row.getAttribute('data-token-id');
  await row.getByRole('button', { name: '编辑' }).click();
  await page.fill('#edit-tags', 'vip, ui');
  await page.fill('#edit-note', 'from the browser test');
  await page.click('#edit-save');
  await toastSays('备注更新成功');
  await page.locator('#tok-tag option[value="vip"]').waitFor({ state: 'attached' });
  await page.selectOption('#tok-tag', 'vip');
  await page.waitForFunction(() => document.querySelectorAll('#tok-table tbody tr[data-token-id]').length === 1);
  expect((await page.locator('#tok-table tbody tr[data-token-id]').getAttribute('data-token-id')) === tokenId, 'filtered row is the tagged token');
  await page.locator('#tok-table .chip', { hasText: 'vip' }).waitFor();
  await page.selectOption('#tok-tag', '');
  await page.waitForFunction(() => document.querySelectorAll('#tok-table tbody tr[data-token-id]').length === 20);
  await shot('tokens');
});

await step('delete a token with confirmation', async () => {
  const row = page.locator('#tok-table tbody tr[data-token-id]').nth(1);
  const id = await row.getAttribute('data-token-id');
  await row.getByRole('button', { name: '删除' }).click();
  await page.click('#dlg-ok');
  await toastSays('成功删除 1 个Token');
  await page.locator(`#tok-table tr[data-token-id="${id}"]`).waitFor({ state: 'detached' });
});

await step('a call through the gateway appears in the call log', async () => {
  for (const [text, model] of [['draw a cat', 'grok-4-fast'], ['hello', 'grok-3-fast']]) {
    const r = await fetch(BASE + '/v1/chat/completions', {
      method: 'POST',
      headers: { authorization: 'Bearer ' + API_KEY, 'content-type': 'application/json' },
      body: JSON.stringify({ model, messages: [{ role: 'user', content: text }] }),
    });
    expect(r.status === 200, 'chat status ' + r.status);
    await r.text();
  }
  await tab('logs').click();
  // The call log writer is asynchronous: refresh until both calls are listed.
  for (let i = 0; i < 50; i++) {
    if ((await page.locator('#log-table tbody tr[data-log-id]').count()) >= 2) break;
    await page.waitForTimeout(200);
    await page.click('#log-refresh');
  }
  expect((await page.locator('#log-table tbody tr[data-log-id]').count()) === 2, 'two calls listed');
  await page.locator('#log-cards .card-value', { hasText: '100.00%' }).waitFor();
});

await step('filter the call log by model and status', async () => {
  await page.locator('#log-model option[value="grok-3-fast"]').waitFor({ state: 'attached' });
  await page.selectOption('#log-model', 'grok-3-fast');
  await page.click('#log-apply');
  await page.waitForFunction(() => document.querySelectorAll('#log-table tbody tr[data-log-id]').length === 1);
  expect((await page.locator('#log-table tbody tr[data-log-id] td').nth(2).textContent()) === 'grok-3-fast', 'model column');
  await page.selectOption('#log-success', 'false');
  await page.click('#log-apply');
  await page.locator('#log-table .empty-row').waitFor();
  await page.click('#log-reset');
  await page.waitForFunction(() => document.querySelectorAll('#log-table tbody tr[data-log-id]').length === 2);
});

await step('call detail previews media', async () => {
  const row = page.locator('#log-table tbody tr[data-log-id]', { hasText: 'grok-4-fast' });
  await row.locator('button.link').click();
  await page.locator('#dlg[open] .media img').waitFor();
  await page.waitForFunction(() => { const i = document.querySelector('#dlg .media img'); return i && i.complete && i.naturalWidth > 0; });
  await page.screenshot({ path: join(SHOTS, 'log-detail-desktop.png') });
  await page.keyboard.press('Escape');
  await page.locator('#dlg[open]').waitFor({ state: 'detached' });
  await shot('logs');
});

await step('export CSV downloads the log', async () => {
  const dl = page.waitForEvent('download');
  await page.click('#log-export');
  const d = await dl;
  expect(/\.csv$/.test(d.suggestedFilename()), 'csv file name');
  await toastSays('已导出');
});

await step('bind a token to a proxy and unbind it', async () => {
  const probe = await api('/api/proxies');
  if (probe.status === 404) { console.log('     note: /api/proxies is not in this build; proxy steps skipped'); await tab('proxies').click(); await shot('proxies'); return 'skip'; }
  await tab('proxies').click();
  await page.fill('#px-url', 'http://127.0.0.1:9');
  await page.click('#px-add');
  await page.locator('#px-table tbody tr[data-proxy]').first().waitFor();
  await page.fill('#px-token-filter', tokenId);
  await page.locator(`#px-bind-tokens input[value="${tokenId}"]`).check();
  await page.click('#px-bind');
  await page.locator(`#px-bindings tr[data-binding="${tokenId}"]`).waitFor();
  await shot('proxies');
  await page.locator(`#px-bindings tr[data-binding="${tokenId}"] button`).click();
  await toastSays('解绑成功');
  await page.locator(`#px-bindings tr[data-binding="${tokenId}"]`).waitFor({ state: 'detached' });
});

await step('plugins page lists the published plugin', async () => {
  const want = process.env.EXPECT_PLUGIN;
  expect(want, 'EXPECT_PLUGIN not set: tests/ui.rs publishes a built plugin and names it');
  await tab('plugins').click();
  await page.locator('#pl-reload').waitFor();
  await page.locator(`#pl-list [data-plugin="${want}"]`).waitFor();
  await shot('plugins');
});

await step('settings page: change a value, save, see success', async () => {
  await tab('settings').click();
  await page.locator('#set-form').waitFor();
  const html = await page.content();
  expect(!html.includes(PASSWORD), 'admin password never reaches the page');
  expect(!html.includes(API_KEY), 'API key never reaches the page');
  // Secrets: write-only password inputs, never prefilled.
  const key = page.locator('#set-grok-api_key');
  expect(await key.getAttribute('type') === 'password', 'api_key is a password input');
  expect(await key.inputValue() === '', 'api_key is not prefilled');
  expect(await page.locator('label[for="set-grok-max_retries"]').count() === 1, 'inputs have labels');
  expect(await page.locator('[data-key="global.port"] [data-restart]').count() === 1, 'restart-only keys are marked');
  expect(await page.locator('[data-key="grok.max_retries"] [data-restart]').count() === 0, 'live keys are not');
  // A bad value: the API's error is shown and the field marked.
  await page.fill('#set-grok-max_retries', '99');
  await page.click('#set-save');
  await toastSays('grok.max_retries');
  expect(await page.locator('#set-grok-max_retries').getAttribute('aria-invalid') === 'true', 'bad field marked');
  // A good one: saved, applied, shown.
  await page.fill('#set-grok-max_retries', '3');
  await page.click('#set-save');
  await toastSays('设置已保存');
  const r = await api('/api/settings');
  expect(r.body.data.grok.max_retries === 3, 'saved value is live: ' + JSON.stringify(r.body.data.grok));
  await page.locator('#set-grok-max_retries').waitFor();
  expect(await page.locator('#set-grok-max_retries').inputValue() === '3', 'form shows the new value');
  await shot('settings');
});

// Until the proxy and plugin APIs are in this build, their pages are also checked against stand-ins that answer
// in the shapes of those APIs (in the browser only, via page.route), so layout and flows are exercised and
// screenshotted. These steps are labelled "stand-in" and never replace the real-API steps above.
async function withStandIn(pattern, handler, fn) {
  await page.route(pattern, handler);
  try { return await fn(); } finally { await page.unroute(pattern, handler); }
}
const json = (route, body, status = 200) => route.fulfill({ status, contentType: 'application/json', body: JSON.stringify(body) });

await step('proxy page against a stand-in API: bind and unbind', async () => {
  if ((await api('/api/proxies')).status !== 404) return 'skip';
  const pool = [
    { url: 'http://127.0.0.1:3128', healthy: true, fail_count: 0, last_used: Date.now(), assigned_sso: [], total_requests: 120, success_requests: 117, source: 'static', last_error: null, ewma_latency_ms: 84.2 },
    { url: 'socks5://user:****@127.0.0.2:1080', healthy: false, fail_count: 3, last_used: 0, assigned_sso: [], total_requests: 9, success_requests: 2, source: 'pool', last_error: 'connect timed out', ewma_latency_ms: null },
  ];
  const assignments = {};
  const handler = async (route) => {
    const req = route.request();
    const path = new URL(req.url()).pathname;
    const body = req.postDataJSON ? (() => { try { return req.postDataJSON(); } catch { return null; } })() : null;
    if (path === '/api/proxies' && req.method() === 'GET') {
      for (const p of pool) p.assigned_sso = Object.keys(assignments).filter((k) => assignments[k] === p.url);
      return json(route, { success: true, data: { proxies: pool, assignments, total: pool.length } });
    }
    if (path === '/api/proxies' && req.method() === 'POST') {
      if (!/^(https?|socks5h?):\/\//.test(body.url)) return json(route, { success: false, message: '代理格式无效' });
      if (!pool.some((p) => p.url === body.url)) pool.push({ url: body.url, healthy: true, fail_count: 0, last_used: 0, assigned_sso: [], total_requests: 0, success_requests: 0, source: 'admin', last_error: null, ewma_latency_ms: null });
      return json(route, { success: true, message: '代理添加成功' });
    }
    if (path === '/api/proxies/assign') { assignments[body.sso] = body.proxy_url; return json(route, { success: true, message: '绑定成功' }); }
    if (path === '/api/proxies/unassign') { delete assignments[body.sso]; return json(route, { success: true, message: '解绑成功' }); }
    if (path === '/api/proxies/test') return json(route, { success: true, message: '代理连通正常', data: { status_code: 200, response_time: 0.12 } });
    if (path === '/api/proxies/refresh') { await new Promise((r) => setTimeout(r, 300)); return json(route, { success: true, message: '代理池已刷新: 新增 0 个, 移除 0 个' }); }
    return json(route, { success: true, message: 'ok' });
  };
  await withStandIn('**/api/proxies**', handler, async () => {
    await tab('overview').click();
    await tab('proxies').click();
    await page.locator('#px-table tbody tr[data-proxy]').first().waitFor();
    await page.fill('#px-url', 'http://127.0.0.1:8888');
    await page.click('#px-add');
    await page.locator('#px-table tr[data-proxy="http://127.0.0.1:8888"]').waitFor();
    await page.click('#px-import');
    await page.fill('#px-import-text', 'http://127.0.0.3:1\nhttp://127.0.0.3:1\nnot a proxy\n');
    await page.click('#px-import-go');
    await toastSays(/成功 1 个，失败 1 个/);
    await page.selectOption('#px-bind-proxy', 'http://127.0.0.1:3128');
    await page.fill('#px-token-filter', tokenId);
    await page.locator(`#px-bind-tokens input[value="${tokenId}"]`).check();
    await page.click('#px-bind');
    await page.locator(`#px-bindings tr[data-binding="${tokenId}"]`).waitFor();
    await page.click('#px-refresh-pool');
    await toastSays('代理池已刷新');
    await page.locator('#px-search').fill(tokenId.slice(0, 6));
    await shot('proxies-standin');
    await tab('tokens').click();
    await page.locator(`#tok-table tr[data-token-id="${tokenId}"] code`, { hasText: '127.0.0.1:3128' }).waitFor();
    await tab('proxies').click();
    await page.locator(`#px-bindings tr[data-binding="${tokenId}"] button`).click();
    await toastSays('解绑成功');
    await page.locator(`#px-bindings tr[data-binding="${tokenId}"]`).waitFor({ state: 'detached' });
  });
});

await step('plugin page against a stand-in API: loaded and failed plugins', async () => {
  if ((await api('/api/plugins')).status !== 404) return 'skip';
  const data = {
    dir: 'plugins', hooks: { selector: 'least-latency', pool_parser: null, webhooks: ['audit'] },
    plugins: [
      { name: 'least-latency', kind: 'selector', hook: 'selector', file: 'least-latency.wasm', sha256: 'a3f1c9e4b2d87f60a3f1c9e4b2d87f60a3f1c9e4b2d87f60a3f1c9e4b2d87f60', version: '0.1.0', state: 'loaded', loaded_at_ms: Date.now() - 3_600_000, calls: 1532, errors: 2, last_error: 'timeout after 50 ms', load_error: null, p50_us: 41.5, p99_us: 310.2 },
      { name: 'audit', kind: 'log_webhook', hook: 'webhook', file: 'audit.wasm', sha256: null, version: null, state: 'failed', loaded_at_ms: null, calls: 0, errors: 0, last_error: null, load_error: 'component imports `wasi:http/outgoing-handler`, which plugins may not use', p50_us: null, p99_us: null },
    ],
  };
  const handler = (route) => json(route, { success: true, data });
  await withStandIn('**/api/plugins**', handler, async () => {
    await tab('plugins').click();
    await page.locator('#pl-list [data-plugin="least-latency"]').waitFor();
    await page.locator('#pl-list [data-plugin="audit"] .alert', { hasText: 'wasi:http' }).waitFor();
    await page.click('#pl-reload');
    await toastSays('插件已重新加载');
    await shot('plugins-standin');
  });
});

await step('overview chart shows the calls', async () => {
  await tab('overview').click();
  await page.locator('#ov-chart svg rect.bar-ok').first().waitFor();
  await page.locator('#ov-health .card').nth(2).waitFor();
  await shot('overview');
});

await step('keyboard moves between tabs', async () => {
  await tab('overview').focus();
  await page.keyboard.press('ArrowRight');
  await page.waitForURL('**#tokens');
  expect(await tab('tokens').evaluate((e) => e === document.activeElement), 'focus follows');
});

await step('switch language, remembered after reload', async () => {
  await page.selectOption('#lang', 'en');
  await page.locator('#tab-logs', { hasText: 'Call log' }).waitFor();
  expect(await page.evaluate(() => document.documentElement.lang) === 'en', 'html lang');
  await page.reload();
  await page.locator('#tab-logs', { hasText: 'Call log' }).waitFor();
  await page.locator('#tok-table th', { hasText: 'Status' }).first().waitFor();
  await shot('tokens-en');
  await page.emulateMedia({ colorScheme: 'dark' });
  await tab('overview').click();
  await page.locator('#ov-chart svg').waitFor();
  await shot('overview-dark-en');
  await page.emulateMedia({ colorScheme: 'light' });
  await page.selectOption('#lang', 'zh');
});

await step('an invalid session returns to /login', async () => {
  await page.evaluate(() => localStorage.setItem('adminToken', 'not-a-session'));
  await page.reload();
  await page.waitForURL('**/login');
  expect(await page.evaluate(() => localStorage.getItem('adminToken')) === null, 'token dropped');
});

await step('no page errors and no outside requests', async () => {
  expect(pageErrors.length === 0, 'page errors: ' + pageErrors.join('\n'));
  expect(outside.length === 0, 'requests to outside hosts: ' + outside.join(', '));
});

await browser.close();
console.log(`${passed} passed, ${failed} failed, ${skipped} skipped`);
process.exit(failed ? 1 : 0);
