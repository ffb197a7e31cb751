// Real-browser test of the web console: starts the release host with its embedded
// default config (the console tenant at /, the OpenAI router at /v1), drives Debian's
// Chromium with playwright-core, and checks the embeddings explorer, the status panel
// and the streaming playground. Screenshots go to tests/out/browser/ and one to
// docs/console.png.
//
//   cd tests/browser && npm ci && node --test console.test.mjs
//
// Needs: target/release/nnhost, guests/target/wasm32-wasip2/release/{console,openai_router}.wasm,
// the prepared models (`just build models`) and /usr/bin/chromium (`just browser-setup`).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const OUT = path.join(ROOT, 'tests', 'out', 'browser');
const HOST_BIN = path.join(ROOT, 'target', 'release', 'nnhost');
const GUESTS = path.join(ROOT, 'guests', 'target', 'wasm32-wasip2', 'release');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const EMBEDDING_MODEL = 'all-MiniLM-L6-v2';
const CHAT_MODEL = 'smollm2-135m-instruct';
// The sentence-transformers reference values for the three prefilled sentences.
const EXPECTED = { '0,1': 0.666, '0,2': 0.1046, '1,2': 0.1411 };
// Without the networking flags Chromium stalls on this machine's refused connections.
const CHROMIUM_FLAGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

let server, serverLog, base, context, page, userDataDir;
const pageErrors = [];
const consoleErrors = [];
const foreignRequests = [];
let chatPassed = false;

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

function logTail() {
  try {
    return fs.readFileSync(path.join(OUT, 'nnhost.log'), 'utf8').slice(-4000);
  } catch {
    return '(no log)';
  }
}

async function waitHealthy(url, ms) {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (server.exitCode !== null) throw new Error(`nnhost exited with ${server.exitCode}:\n${logTail()}`);
    try {
      if ((await fetch(url + '/health')).ok) return;
    } catch { /* not listening yet */ }
    await new Promise((r) => setTimeout(r, 150));
  }
  throw new Error(`nnhost did not become healthy in ${ms} ms:\n${logTail()}`);
}

async function shot(name) {
  const file = path.join(OUT, `${name}.png`);
  await page.screenshot({ path: file });
  return file;
}

async function openTab(name) {
  await page.click(`#tab-${name}`);
  await page.waitForSelector(`#${name}:not([hidden])`);
}

before(async () => {
  for (const [file, how] of [
    [HOST_BIN, 'cargo build --release'],
    [path.join(GUESTS, 'console.wasm'), 'just guests'],
    [path.join(GUESTS, 'openai_router.wasm'), 'just guests'],
    [CHROMIUM, 'just browser-setup'],
  ]) {
    if (!fs.existsSync(file)) throw new Error(`${file} is missing: run \`${how}\` first (or \`just test\`)`);
  }
  fs.mkdirSync(OUT, { recursive: true });
  const port = await freePort();
  base = `http://127.0.0.1:${port}`;
  serverLog = fs.openSync(path.join(OUT, 'nnhost.log'), 'w');
  // No --config: the embedded default config, exactly what `just run` serves.
  server = spawn(HOST_BIN, ['serve', '--listen', `127.0.0.1:${port}`], {
    cwd: ROOT, stdio: ['ignore', serverLog, serverLog],
  });
  await waitHealthy(base, 60_000);

  userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'nnhost-chromium-'));
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_FLAGS,
    viewport: { width: 1280, height: 800 },
  });
  page = context.pages()[0] || (await context.newPage());
  page.setDefaultTimeout(30_000);
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(m.text()); });
  page.on('request', (r) => {
    const url = r.url();
    if (!url.startsWith(base + '/') && !url.startsWith('data:')) foreignRequests.push(url);
  });
});

after(async () => {
  if (context) await context.close().catch(() => {});
  if (server && server.exitCode === null) {
    const exited = new Promise((r) => server.once('exit', r));
    server.kill('SIGTERM');
    const timer = setTimeout(() => server.kill('SIGKILL'), 15_000);
    await exited;
    clearTimeout(timer);
  }
  if (serverLog !== undefined) fs.closeSync(serverLog);
  if (userDataDir) fs.rmSync(userDataDir, { recursive: true, force: true });
  // The README's screenshot: the playground when a chat ran, else the embeddings explorer.
  const pick = path.join(OUT, chatPassed ? 'playground.png' : 'embeddings.png');
  if (fs.existsSync(pick)) fs.copyFileSync(pick, path.join(ROOT, 'docs', 'console.png'));
});

test('the console tenant serves the page, its assets and 404s', async () => {
  const index = await fetch(base + '/');
  assert.equal(index.status, 200);
  assert.match(index.headers.get('content-type'), /^text\/html/);
  assert.equal(index.headers.get('cache-control'), 'no-cache');
  for (const [p, type] of [['/app.js', /^text\/javascript/], ['/likelihood.js', /^text\/javascript/],
    ['/style.css', /^text\/css/]]) {
    const r = await fetch(base + p);
    assert.equal(r.status, 200, p);
    assert.match(r.headers.get('content-type'), type, p);
    assert.equal(r.headers.get('cache-control'), 'no-cache', p);
  }
  assert.equal((await fetch(base + '/no-such-page')).status, 404);
  // /v1 still reaches the OpenAI router (longer prefix), not the console.
  const models = await fetch(base + '/v1/models');
  assert.equal(models.status, 200);
  assert.equal((await models.json()).object, 'list');

  await page.goto(base + '/');
  assert.equal(await page.title(), 'nnhost console');
  await page.waitForFunction(() => document.getElementById('health').textContent === 'healthy');
});

test('embeddings explorer: cosine similarities of the three sentences', async () => {
  await openTab('embeddings');
  await page.waitForSelector(`#embedding-model option[value="${EMBEDDING_MODEL}"]`, { state: 'attached' });
  await page.selectOption('#embedding-model', EMBEDDING_MODEL);
  const lines = (await page.inputValue('#sentences')).split('\n');
  assert.deepEqual(lines, ['The weather is lovely today.', "It's so sunny outside!", 'He drove to the stadium.']);
  // Keyboard: Ctrl+Enter in the textarea runs the comparison.
  await page.focus('#sentences');
  await page.keyboard.press('Control+Enter');
  await page.waitForSelector('#heatmap td[data-i="2"][data-j="2"]');
  const cells = await page.$$eval('#heatmap td[data-i]', (tds) =>
    tds.map((td) => ({ i: +td.dataset.i, j: +td.dataset.j, text: td.textContent })));
  assert.equal(cells.length, 9);
  const value = (i, j) => Number(cells.find((c) => c.i === i && c.j === j).text);
  for (const c of cells) assert.match(c.text, /^-?\d\.\d{4}$/, 'four decimals');
  for (const [key, expected] of Object.entries(EXPECTED)) {
    const [i, j] = key.split(',').map(Number);
    assert.ok(Math.abs(value(i, j) - expected) <= 0.001, `similarity ${i},${j} = ${value(i, j)}, expected ≈ ${expected}`);
    assert.equal(value(i, j), value(j, i), 'the matrix is symmetric');
  }
  for (let i = 0; i < 3; i++) assert.ok(Math.abs(value(i, i) - 1) <= 0.0001);
  assert.match(await page.textContent('#embeddings-stats'), /3 sentences · 384 dimensions/);
  await shot('embeddings');
});

test('errors from the API are shown as messages', async () => {
  // A model the picker does not offer: the router answers 404 with an OpenAI error.
  await page.evaluate(() => {
    const select = document.getElementById('embedding-model');
    select.append(new Option('no-such-model', 'no-such-model'));
    select.value = 'no-such-model';
  });
  await page.click('#compare');
  await page.waitForSelector('#embeddings-error:not([hidden])');
  const message = await page.textContent('#embeddings-error');
  assert.match(message, /The model 'no-such-model' does not exist \(HTTP 404\)/);
  await page.evaluate(() => document.querySelector('#embedding-model option[value="no-such-model"]').remove());
  await page.selectOption('#embedding-model', EMBEDDING_MODEL);
  await page.click('#compare');
  await page.waitForSelector('#embeddings-error', { state: 'hidden' });
  await page.waitForSelector('#heatmap td[data-i="0"][data-j="1"]');
});

test('likelihood view: each token of a text shaded by its probability', async () => {
  await openTab('likelihood');
  await page.waitForSelector(`#score-model option[value="${CHAT_MODEL}"]`, { state: 'attached' });
  await page.selectOption('#score-model', CHAT_MODEL);
  await page.click('#score');
  await page.waitForSelector('#scored-tokens .token');
  const tokens = await page.$$eval('#scored-tokens .token', (spans) =>
    spans.map((s) => ({ text: s.textContent, p: s.dataset.p, title: s.title })));
  const text = await page.inputValue('#score-text');
  assert.equal(tokens.map((t) => t.text).join(''), text, 'the tokens spell the text');
  assert.equal(tokens[0].p, '', 'the first token has no probability');
  const probabilities = tokens.slice(1).map((t) => Number(t.p));
  assert.ok(probabilities.every((p) => p > 0 && p <= 1), String(probabilities));
  // Second and third sentences repeat the pattern: " Rome" and " Madrid" are likely.
  const p = (word) => Number(tokens.find((t) => t.text === word).p);
  assert.ok(p(' Rome') > 0.2 && p(' Madrid') > 0.2, `${p(' Rome')} ${p(' Madrid')}`);
  assert.match(tokens[5].title, /likely\nthe model's top guesses here:\n"/);
  assert.match(await page.textContent('#score-stats'), /\d+ tokens · log-likelihood -\d+\.\d\d · perplexity \d+\.\d\d/);
  await shot('likelihood');
});

test('status panel lists the CPU provider, the models and the tenants', async () => {
  await openTab('status');
  await page.waitForFunction(() => /cpu-/.test(document.getElementById('providers').textContent));
  const providers = await page.textContent('#providers');
  assert.match(providers, new RegExp(`cpu-${process.arch === 'arm64' ? 'aarch64' : 'x86_64'}`));
  assert.match(providers, new RegExp(EMBEDDING_MODEL));
  const tenants = await page.$$eval('#tenants tbody tr td:first-child', (tds) => tds.map((td) => td.textContent));
  assert.ok(tenants.includes('console') && tenants.includes('default'), `tenants: ${tenants}`);
  assert.match(await page.textContent('#models'), new RegExp(EMBEDDING_MODEL));
  // The embedding requests above gave the CPU provider a p50; the chart plots it.
  await page.waitForFunction(() => /^now [\d.]+ ms/.test(document.getElementById('latency-note').textContent));
  const before = await page.textContent('#status-summary');
  await page.waitForFunction((b) => document.getElementById('status-summary').textContent !== b, before, { timeout: 6000 });
  await shot('status');
});

test('playground streams a chat answer and keeps the conversation', { timeout: 240_000 }, async () => {
  await openTab('playground');
  const models = (await (await fetch(base + '/v1/models')).json()).data;
  const chat = models.filter((m) => m.nnhost && ['chat', 'completion'].includes(m.nnhost.kind));
  if (!chat.some((m) => m.id === CHAT_MODEL)) {
    await page.waitForSelector('#chat-error:not([hidden])');
    await shot('playground');
    assert.fail(`GET /v1/models has no chat model ${CHAT_MODEL} (models: ${models.map((m) => `${m.id}/${m.nnhost && m.nnhost.kind}`).join(', ')}). ` +
      'The default config must serve it (prepared by `just models`) for the playground to be tested.');
  }
  await page.selectOption('#chat-model', CHAT_MODEL);
  await page.fill('#temperature', '0');
  await page.fill('#max-tokens', '48');

  const bodies = [];
  page.on('request', (r) => { if (r.url().endsWith('/v1/chat/completions')) bodies.push(JSON.parse(r.postData())); });
  // Count the text updates of assistant bubbles: one per streamed chunk.
  await page.evaluate(() => {
    window.streamUpdates = 0;
    window.sawStreamingText = false;
    new MutationObserver((records) => {
      for (const r of records) if (r.target.closest && r.target.closest('.bubble.assistant.streaming')) window.streamUpdates++;
      // Seen by the observer, not by polling: a short answer can finish between two polls.
      const node = document.querySelector('.bubble.assistant.streaming .content');
      if (node && node.textContent.length > 0) window.sawStreamingText = true;
    }).observe(document.getElementById('transcript'), { subtree: true, childList: true, characterData: true });
  });

  // Keyboard: Enter in the message box sends.
  await page.fill('#message', 'What is the capital of France?');
  await page.focus('#message');
  await page.keyboard.press('Enter');
  // Text shows up while the answer is still streaming...
  await page.waitForFunction(() => window.sawStreamingText, null, { timeout: 120_000 });
  // ...and the request finishes with timing figures.
  await page.waitForSelector('.bubble.assistant.streaming', { state: 'detached', timeout: 120_000 });
  assert.equal(await page.isHidden('#chat-error'), true, await page.textContent('#chat-error'));
  const first = await page.textContent('.bubble.assistant .content');
  assert.ok(first.trim().length > 0, 'the answer is not empty');
  const updates = await page.evaluate(() => window.streamUpdates);
  assert.ok(updates >= 2, `the answer arrived in ${updates} update(s): not streamed token by token`);
  const stats = await page.textContent('#chat-stats');
  assert.match(stats, /first token [\d.]+ ms · \d+ tokens · [\d.]+ tokens\/s/);

  // A second turn sends the whole conversation.
  await page.fill('#message', 'And of Italy?');
  await page.keyboard.press('Enter');
  await page.waitForFunction(() => document.querySelectorAll('.bubble.assistant').length === 2 &&
    !document.querySelector('.bubble.assistant.streaming'), null, { timeout: 120_000 });
  assert.equal(bodies.length, 2);
  assert.equal(bodies[1].stream, true);
  assert.deepEqual(bodies[1].stream_options, { include_usage: true });
  assert.deepEqual(bodies[1].messages.map((m) => m.role), ['system', 'user', 'assistant', 'user']);
  assert.equal(bodies[1].messages[2].content, first);
  // The sampling extensions are sent only when set.
  assert.equal(bodies[1].repetition_penalty, undefined);
  assert.equal(bodies[1].min_p, undefined);
  await page.fill('#repetition-penalty', '1.2');
  await page.fill('#min-p', '0.05');
  await page.fill('#message', 'And of Spain?');
  await page.keyboard.press('Enter');
  await page.waitForFunction(() => document.querySelectorAll('.bubble.assistant').length === 3 &&
    !document.querySelector('.bubble.assistant.streaming'), null, { timeout: 120_000 });
  assert.equal(await page.isHidden('#chat-error'), true, await page.textContent('#chat-error'));
  assert.equal(bodies[2].repetition_penalty, 1.2);
  assert.equal(bodies[2].min_p, 0.05);
  await shot('playground');
  await page.fill('#repetition-penalty', '0');
  await page.fill('#message', 'And of Portugal?');
  await page.keyboard.press('Enter');
  await page.waitForSelector('#chat-error:not([hidden])');
  assert.match(await page.textContent('#chat-error'), /Repetition penalty must be above 0/);
  assert.equal(bodies.length, 3, 'an invalid setting sends nothing');
  await page.fill('#repetition-penalty', '1');
  await page.fill('#min-p', '0');
  chatPassed = true;
});

test('no script errors and nothing loaded from elsewhere', () => {
  assert.deepEqual(pageErrors, []);
  // Failed-resource lines are the deliberate 404 of the error test.
  assert.deepEqual(consoleErrors.filter((m) => !m.startsWith('Failed to load resource')), []);
  assert.deepEqual(foreignRequests, []);
});
