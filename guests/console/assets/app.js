// nnhost console: a playground, an embeddings explorer, a likelihood view (likelihood.js)
// and a status panel, all talking to the host's HTTP API on the same origin. Plain
// JavaScript, no dependencies.
'use strict';

const $ = (id) => document.getElementById(id);

/** Creates an element with properties and children (strings become text nodes). */
function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === 'dataset') Object.assign(node.dataset, value);
    else if (key in node) node[key] = value;
    else node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

/** Shows (or with null hides) an error message element. */
function showError(node, message) {
  node.textContent = message || '';
  node.hidden = !message;
}

/** The message of an OpenAI-style error body, or a description of the HTTP failure. */
async function errorMessage(response) {
  const text = await response.text().catch(() => '');
  try {
    const body = JSON.parse(text);
    if (body && body.error && body.error.message) return `${body.error.message} (HTTP ${response.status})`;
  } catch (_) { /* not JSON */ }
  return `HTTP ${response.status} ${response.statusText}${text ? ': ' + text.slice(0, 300) : ''}`;
}

/** fetch + JSON, throwing an Error with a readable message on failure. */
async function getJSON(path, body) {
  let response;
  try {
    response = await fetch(path, body === undefined ? {} : {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
  } catch (e) {
    throw new Error(`Could not reach the server (${e.message}).`);
  }
  if (!response.ok) throw new Error(await errorMessage(response));
  return response.json();
}

const fmt = {
  ms: (v) => (v === null || v === undefined ? '—' : v < 10 ? v.toFixed(2) : v.toFixed(0)),
  int: (v) => (v === null || v === undefined ? '—' : Number(v).toLocaleString('en-US')),
  duration(seconds) {
    const d = Math.floor(seconds / 86400), h = Math.floor(seconds / 3600) % 24;
    const m = Math.floor(seconds / 60) % 60, s = seconds % 60;
    return d ? `${d}d ${h}h` : h ? `${h}h ${m}m` : m ? `${m}m ${s}s` : `${s}s`;
  },
};

// ---------------------------------------------------------------------------------
// Tabs: the URL hash picks the section (#playground, #embeddings, #likelihood, #status).

const SECTIONS = ['playground', 'embeddings', 'likelihood', 'status'];

function showSection() {
  const name = SECTIONS.includes(location.hash.slice(1)) ? location.hash.slice(1) : 'playground';
  for (const section of SECTIONS) {
    $(section).hidden = section !== name;
    const tab = $('tab-' + section);
    tab.setAttribute('aria-selected', String(section === name));
  }
  if (name === 'status') drawLatencyChart();
}

// ---------------------------------------------------------------------------------
// Models: one GET /v1/models fills the pickers of both the playground and the explorer.

async function loadModels() {
  const chatSelect = $('chat-model'), embedSelect = $('embedding-model');
  let models;
  try {
    models = (await getJSON('/v1/models')).data || [];
  } catch (e) {
    for (const select of [chatSelect, embedSelect]) select.replaceChildren(el('option', { value: '' }, 'no models'));
    showError($('chat-error'), `Could not list the models: ${e.message}`);
    showError($('embeddings-error'), `Could not list the models: ${e.message}`);
    return;
  }
  const kindOf = (m) => (m.nnhost && m.nnhost.kind) || 'unknown';
  const generative = models.filter((m) => ['chat', 'completion'].includes(kindOf(m)));
  const embedding = models.filter((m) => kindOf(m) === 'embedding');

  chatSelect.replaceChildren(...generative.map((m) =>
    el('option', { value: m.id, dataset: { kind: kindOf(m) } }, `${m.id} (${kindOf(m)})`)));
  $('score-model').replaceChildren(...(generative.length ? generative.map((m) => el('option', { value: m.id }, m.id))
    : [el('option', { value: '' }, 'no chat or completion model available')]));
  if (!generative.length) {
    chatSelect.replaceChildren(el('option', { value: '' }, 'no chat model available'));
    $('send').disabled = true;
    showError($('chat-error'), 'This host serves no chat or completion model: add one to the configuration ' +
      '(e.g. smollm2-135m-instruct, prepared by `just models`) to use the playground.');
  }
  embedSelect.replaceChildren(...embedding.map((m) =>
    el('option', { value: m.id }, `${m.id} (${m.nnhost.dimensions || '?'} dims)`)));
  if (!embedding.length) {
    embedSelect.replaceChildren(el('option', { value: '' }, 'no embedding model available'));
    showError($('embeddings-error'), 'This host serves no embedding model.');
  }
  updateModelNote();
}

function selectedChatKind() {
  const option = $('chat-model').selectedOptions[0];
  return option ? option.dataset.kind : undefined;
}

function updateModelNote() {
  $('chat-model-note').textContent = selectedChatKind() === 'completion'
    ? 'A completion model continues text: the conversation so far is its prompt, without the system prompt (POST /v1/completions).'
    : '';
}

// ---------------------------------------------------------------------------------
// Playground: multi-turn chat, streamed over server-sent events.

const conversation = []; // {role, content} of the finished turns (user and assistant)
let inFlight = null; // the AbortController of the running request

function addBubble(role, text) {
  const placeholder = $('transcript').querySelector('.placeholder');
  if (placeholder) placeholder.remove();
  const body = el('div', { className: 'content' }, text);
  const bubble = el('div', { className: `bubble ${role}`, dataset: { role } }, el('div', { className: 'who' }, role), body);
  $('transcript').append(bubble);
  $('transcript').scrollTop = $('transcript').scrollHeight;
  return body;
}

/** Reads a text/event-stream body and calls onEvent with each `data:` payload. */
async function readSSE(response, onEvent) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    buffer += decoder.decode(value || new Uint8Array(), { stream: !done });
    let newline;
    while ((newline = buffer.indexOf('\n')) >= 0) {
      const line = buffer.slice(0, newline).replace(/\r$/, '');
      buffer = buffer.slice(newline + 1);
      if (line.startsWith('data:')) {
        if (onEvent(line.slice(5).trim()) === false) { reader.cancel().catch(() => {}); return; }
      }
    }
    if (done) return;
  }
}

async function sendMessage() {
  const text = $('message').value.trim();
  const model = $('chat-model').value;
  if (inFlight || !text) return;
  if (!model) { showError($('chat-error'), 'No chat model is available on this host.'); return; }
  showError($('chat-error'), null);

  const completion = selectedChatKind() === 'completion';
  const system = $('system-prompt').value.trim();
  const temperature = Number($('temperature').value);
  const maxTokens = parseInt($('max-tokens').value, 10);
  if (!(temperature >= 0 && temperature <= 2)) { showError($('chat-error'), 'Temperature must be between 0 and 2.'); return; }
  if (!(maxTokens >= 1)) { showError($('chat-error'), 'Max tokens must be a positive number.'); return; }
  const repetitionPenalty = Number($('repetition-penalty').value);
  const minP = Number($('min-p').value);
  if (!(repetitionPenalty > 0 && repetitionPenalty <= 10)) { showError($('chat-error'), 'Repetition penalty must be above 0 and at most 10 (1 is off).'); return; }
  if (!(minP >= 0 && minP <= 1)) { showError($('chat-error'), 'Min p must be between 0 and 1.'); return; }

  const turns = [...conversation, { role: 'user', content: text }];
  const request = {
    model, stream: true, stream_options: { include_usage: true },
    temperature, max_tokens: maxTokens,
  };
  // vLLM's sampling extensions; sent only when set, so the request stays plain OpenAI.
  if (repetitionPenalty !== 1) request.repetition_penalty = repetitionPenalty;
  if (minP > 0) request.min_p = minP;
  let path;
  if (completion) {
    path = '/v1/completions';
    request.prompt = turns.map((t) => t.content).join(''); // the system prompt is not used
  } else {
    path = '/v1/chat/completions';
    request.messages = (system ? [{ role: 'system', content: system }] : []).concat(turns);
  }

  $('message').value = '';
  const question = addBubble('user', text);
  const answer = addBubble('assistant', '');
  answer.parentElement.classList.add('streaming');
  inFlight = new AbortController();
  $('send').disabled = true;
  $('stop').disabled = false;
  $('chat-stats').textContent = 'waiting for the first token…';

  const started = performance.now();
  let firstAt = null, lastAt = null, chunks = 0, usage = null, finish = null, output = '';
  const updateStats = (final) => {
    const parts = [];
    if (firstAt !== null) parts.push(`first token ${fmt.ms(firstAt - started)} ms`);
    const tokens = usage && usage.completion_tokens ? usage.completion_tokens : chunks;
    parts.push(`${tokens} token${tokens === 1 ? '' : 's'}`);
    if (firstAt !== null && lastAt > firstAt && tokens > 1) {
      parts.push(`${((tokens - 1) / ((lastAt - firstAt) / 1000)).toFixed(1)} tokens/s`);
    }
    if (final) {
      parts.push(`total ${fmt.ms(performance.now() - started)} ms`);
      if (usage) parts.push(`prompt ${usage.prompt_tokens} tokens`);
      if (finish) parts.push(`finish: ${finish}`);
    }
    $('chat-stats').textContent = parts.join(' · ');
  };

  try {
    const response = await fetch(path, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(request),
      signal: inFlight.signal,
    });
    if (!response.ok) throw new Error(await errorMessage(response));
    let streamError = null;
    await readSSE(response, (data) => {
      if (data === '[DONE]') return false;
      let event;
      try { event = JSON.parse(data); } catch (_) { return true; }
      if (event.error) { streamError = event.error.message || JSON.stringify(event.error); return false; }
      if (event.usage) usage = event.usage;
      const choice = event.choices && event.choices[0];
      if (!choice) return true;
      const piece = completion ? choice.text : choice.delta && choice.delta.content;
      if (piece) {
        const now = performance.now();
        if (firstAt === null) firstAt = now;
        lastAt = now;
        chunks += 1;
        output += piece;
        answer.textContent = output;
        $('transcript').scrollTop = $('transcript').scrollHeight;
        updateStats(false);
      }
      if (choice.finish_reason) finish = choice.finish_reason;
      return true;
    });
    if (streamError) throw new Error(streamError);
    conversation.push({ role: 'user', content: text }, { role: 'assistant', content: output });
    if (!output) answer.textContent = '(empty answer)';
    updateStats(true);
  } catch (e) {
    const aborted = e.name === 'AbortError';
    if (output) {
      // A partial answer stays in the conversation: what is shown is what is sent next.
      answer.append(el('span', { className: 'dim' }, aborted ? ' [stopped]' : ' [cut off]'));
      conversation.push({ role: 'user', content: text }, { role: 'assistant', content: output });
    } else {
      // Nothing came back: take the turn out and give the message back to retry.
      answer.parentElement.remove();
      question.parentElement.remove();
      if (!$('message').value) $('message').value = text;
      if (!$('transcript').children.length) {
        $('transcript').append(el('p', { className: 'placeholder' }, 'No answer yet: see the message below.'));
      }
    }
    if (aborted) updateStats(true);
    else {
      showError($('chat-error'), e.message.startsWith('Failed to fetch') ? 'Could not reach the server.' : e.message);
      $('chat-stats').textContent = 'request failed';
    }
  } finally {
    answer.parentElement && answer.parentElement.classList.remove('streaming');
    inFlight = null;
    $('send').disabled = false;
    $('stop').disabled = true;
    $('message').focus();
  }
}

function clearConversation() {
  if (inFlight) inFlight.abort();
  conversation.length = 0;
  $('transcript').replaceChildren(el('p', { className: 'placeholder' }, 'New conversation. Type a message and press Enter.'));
  $('chat-stats').textContent = 'no request yet';
  showError($('chat-error'), null);
  $('message').focus();
}

// ---------------------------------------------------------------------------------
// Embeddings explorer: POST /v1/embeddings, then the pairwise cosine similarities.

function cosine(a, b) {
  let dot = 0, na = 0, nb = 0;
  for (let k = 0; k < a.length; k++) { dot += a[k] * b[k]; na += a[k] * a[k]; nb += b[k] * b[k]; }
  return na && nb ? dot / Math.sqrt(na * nb) : 0;
}

/** A color from white (0 or less) to the accent blue (1). */
function heat(value) {
  const t = Math.max(0, Math.min(1, value));
  const mix = (from, to) => Math.round(from + (to - from) * t);
  return `rgb(${mix(255, 37)}, ${mix(255, 99)}, ${mix(255, 235)})`;
}

async function compareSentences() {
  const sentences = $('sentences').value.split('\n').map((s) => s.trim()).filter(Boolean);
  const model = $('embedding-model').value;
  showError($('embeddings-error'), null);
  if (sentences.length < 2) { showError($('embeddings-error'), 'Write at least two sentences, one per line.'); return; }
  if (sentences.length > 64) { showError($('embeddings-error'), `At most 64 sentences (got ${sentences.length}).`); return; }
  if (!model) { showError($('embeddings-error'), 'No embedding model is available on this host.'); return; }

  $('compare').disabled = true;
  $('embeddings-stats').textContent = `embedding ${sentences.length} sentences…`;
  const started = performance.now();
  try {
    const body = await getJSON('/v1/embeddings', { model, input: sentences });
    const vectors = [];
    for (const item of body.data) vectors[item.index] = item.embedding;
    const n = sentences.length;
    const sim = Array.from({ length: n }, (_, i) => Array.from({ length: n }, (_, j) => cosine(vectors[i], vectors[j])));
    renderHeatmap(sentences, sim);
    let best = null;
    for (let i = 0; i < n; i++) for (let j = i + 1; j < n; j++) if (!best || sim[i][j] > best[2]) best = [i, j, sim[i][j]];
    $('embeddings-stats').textContent = `${n} sentences · ${vectors[0].length} dimensions · ` +
      `${body.usage ? body.usage.prompt_tokens : '?'} tokens · ${fmt.ms(performance.now() - started)} ms · ` +
      `most similar: ${best[0] + 1} & ${best[1] + 1} (${best[2].toFixed(4)})`;
  } catch (e) {
    showError($('embeddings-error'), e.message);
    $('embeddings-stats').textContent = '';
  } finally {
    $('compare').disabled = false;
  }
}

function renderHeatmap(sentences, sim) {
  const n = sentences.length;
  const head = el('tr', {}, el('th', { scope: 'col' }, ''),
    sentences.map((s, j) => el('th', { scope: 'col', title: s }, String(j + 1))));
  const rows = sentences.map((s, i) => el('tr', {},
    el('th', { scope: 'row', title: s }, el('span', { className: 'idx' }, `${i + 1}`), ' ', s),
    Array.from({ length: n }, (_, j) => {
      const value = sim[i][j];
      const cell = el('td', {
        className: 'sim' + (i === j ? ' diag' : ''),
        title: `${i + 1} · ${j + 1}: ${value.toFixed(4)}`,
        dataset: { i: String(i), j: String(j), value: String(value) },
      }, value.toFixed(4));
      if (i !== j) { // the diagonal (always 1) stays grey so the pairs stand out
        cell.style.background = heat(value);
        cell.style.color = value > 0.55 ? '#fff' : '#111827';
      }
      return cell;
    })));
  $('heatmap').replaceChildren(el('table', { className: 'matrix' }, el('thead', {}, head), el('tbody', {}, rows)));
}

// ---------------------------------------------------------------------------------
// Status: GET /status and /health every 2 s.

const latency = []; // {t, p50} of the CPU provider, one per refresh
const LATENCY_POINTS = 90; // 3 minutes

/** A table; columns whose cells are numbers (or '—') are right-aligned, header included. */
function table(headers, rows, empty) {
  if (!rows.length) return el('p', { className: 'placeholder' }, empty);
  const isNumber = (c) => typeof c === 'number' || /^[\d.,]+$/.test(c);
  const numeric = headers.map((_, k) => rows.some((r) => isNumber(r[k])) && rows.every((r) => isNumber(r[k]) || r[k] === '—'));
  const cls = (k) => (numeric[k] ? 'num' : '');
  return el('table', { className: 'grid' },
    el('thead', {}, el('tr', {}, headers.map((h, k) => el('th', { scope: 'col', className: cls(k) }, h)))),
    el('tbody', {}, rows.map((cells) => el('tr', {}, cells.map((c, k) =>
      c instanceof Node ? el('td', {}, c) : el('td', { className: cls(k) }, typeof c === 'number' ? fmt.int(c) : String(c)))))));
}

const plural = (n, word) => `${n} ${word}${n === 1 ? '' : 's'}`;

function badge(text, good) {
  return el('span', { className: `badge ${good ? 'ok' : 'bad'}` }, text);
}

async function refreshStatus() {
  if (document.hidden) return; // a background browser tab does not poll
  let status;
  try {
    const [health, body] = await Promise.all([
      fetch('/health').then((r) => r.ok).catch(() => false),
      getJSON('/status'),
    ]);
    status = body;
    setHealth(health ? 'healthy' : 'unhealthy', health);
    showError($('status-error'), null);
  } catch (e) {
    setHealth('unreachable', false);
    showError($('status-error'), `Could not load the status: ${e.message} (retrying every 2 s; the tables show the last answer)`);
    return;
  }

  $('status-summary').textContent = `nnhost ${status.version || ''} · status ${status.status} · up ${fmt.duration(status.uptime_seconds || 0)} · ` +
    `${plural((status.models || []).length, 'model')} · ${plural((status.tenants || []).length, 'tenant')} · updated ${new Date().toLocaleTimeString()}`;

  const providerRows = [];
  let cpuP50 = null;
  for (const model of status.models || []) {
    const providers = (model.routing && model.routing.providers) || [];
    for (const p of providers) {
      const lat = p.latency_ms || {};
      providerRows.push([p.name, model.id, p.kind, badge(p.state, p.state === 'ready'),
        p.breaker ? badge(p.breaker, p.breaker === 'closed') : '—',
        Number(p.requests), Number(p.errors), fmt.ms(lat.p50), fmt.ms(lat.p95)]);
      if (p.kind === 'cpu' && cpuP50 === null && typeof lat.p50 === 'number') cpuP50 = lat.p50;
    }
  }
  $('providers').replaceChildren(table(
    ['provider', 'model', 'kind', 'state', 'breaker', 'requests', 'errors', 'p50 ms', 'p95 ms'],
    providerRows, 'No model reports provider routing.'));

  $('models').replaceChildren(table(['model', 'kind', 'routing'], (status.models || []).map((m) => [
    m.id, m.kind, m.routing ? `${m.routing.policy || '—'} (${(m.routing.providers || []).map((p) => p.name).join(', ')})` : 'generation worker',
  ]), 'No models are configured.'));

  $('tenants').replaceChildren(table(
    ['tenant', 'public', 'requests', 'errors', 'limit hits', 'prompt tokens', 'completion tokens'],
    (status.tenants || []).map((t) => {
      const u = t.usage || {};
      return [t.name, t.public ? 'yes' : 'no', Number(u.requests || 0), Number(u.errors || 0), Number(u.limit_hits || 0),
        Number(u.prompt_tokens || 0), Number(u.completion_tokens || 0)];
    }), 'No tenants.'));

  latency.push({ t: Date.now(), p50: cpuP50 });
  if (latency.length > LATENCY_POINTS) latency.shift();
  drawLatencyChart();
}

function setHealth(text, good) {
  const node = $('health');
  node.textContent = text;
  node.className = `health ${good ? 'ok' : 'bad'}`;
}

/** The smallest 1, 2 or 5 times a power of ten that is at least v (an axis maximum). */
function niceCeiling(v) {
  const power = 10 ** Math.floor(Math.log10(v || 1));
  return [1, 2, 5, 10].map((m) => m * power).find((c) => c >= v);
}

function drawLatencyChart() {
  const canvas = $('latency-chart');
  if (canvas.offsetParent === null) return; // hidden: drawn when shown
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth, height = canvas.clientHeight;
  canvas.width = Math.round(width * ratio);
  canvas.height = Math.round(height * ratio);
  const ctx = canvas.getContext('2d');
  ctx.scale(ratio, ratio);
  ctx.clearRect(0, 0, width, height);

  const pad = { left: 44, right: 10, top: 10, bottom: 22 };
  const w = width - pad.left - pad.right, h = height - pad.top - pad.bottom;
  const values = latency.map((p) => p.p50).filter((v) => v !== null);
  const max = niceCeiling(values.length ? Math.max(...values) * 1.1 : 1);
  ctx.font = '11px system-ui, sans-serif';
  ctx.fillStyle = '#6b7280';
  ctx.strokeStyle = '#e5e7eb';
  ctx.lineWidth = 1;
  for (let k = 0; k <= 4; k++) { // horizontal grid with labels
    const y = pad.top + h - (h * k) / 4;
    ctx.beginPath(); ctx.moveTo(pad.left, y); ctx.lineTo(pad.left + w, y); ctx.stroke();
    ctx.textAlign = 'right'; ctx.textBaseline = 'middle';
    ctx.fillText(String(+((max * k) / 4).toPrecision(3)), pad.left - 6, y);
  }
  ctx.textAlign = 'left'; ctx.textBaseline = 'alphabetic';
  ctx.fillText(`last ${Math.round((LATENCY_POINTS * 2) / 60)} min, every 2 s →`, pad.left, height - 6);

  const x = (i) => pad.left + (LATENCY_POINTS <= 1 ? 0 : (w * (LATENCY_POINTS - latency.length + i)) / (LATENCY_POINTS - 1));
  const y = (v) => pad.top + h - (h * v) / max;
  ctx.strokeStyle = '#2563eb';
  ctx.fillStyle = '#2563eb';
  ctx.lineWidth = 2;
  ctx.beginPath();
  let drawing = false;
  latency.forEach((p, i) => {
    if (p.p50 === null) { drawing = false; return; }
    if (drawing) ctx.lineTo(x(i), y(p.p50)); else ctx.moveTo(x(i), y(p.p50));
    drawing = true;
  });
  ctx.stroke();
  if (latency.length && latency[latency.length - 1].p50 !== null) {
    const last = latency[latency.length - 1];
    ctx.beginPath(); ctx.arc(x(latency.length - 1), y(last.p50), 3, 0, 2 * Math.PI); ctx.fill();
  }
  $('latency-note').textContent = values.length
    ? `now ${fmt.ms(values[values.length - 1])} ms (p50 of the CPU provider's recent requests)`
    : 'no CPU provider latency yet: it appears after the first embedding request';
}

// ---------------------------------------------------------------------------------
// Wiring.

/** Enter sends (Shift+Enter is a new line); Ctrl/Cmd+Enter works in every textarea. */
function onKey(node, action, plainEnter) {
  node.addEventListener('keydown', (e) => {
    if (e.key !== 'Enter' || e.isComposing) return;
    if (e.ctrlKey || e.metaKey || (plainEnter && !e.shiftKey && !e.altKey)) {
      e.preventDefault();
      action();
    }
  });
}

document.addEventListener('DOMContentLoaded', () => {
  window.addEventListener('hashchange', showSection);
  showSection();
  // Left/Right arrows move between the tabs (Tab and Enter work as on any link).
  document.querySelector('nav').addEventListener('keydown', (e) => {
    if (e.key !== 'ArrowLeft' && e.key !== 'ArrowRight') return;
    const tabs = [...document.querySelectorAll('nav a')];
    const next = tabs[(tabs.indexOf(document.activeElement) + (e.key === 'ArrowRight' ? 1 : tabs.length - 1)) % tabs.length];
    next.focus();
    next.click();
  });

  $('chat-form').addEventListener('submit', (e) => { e.preventDefault(); sendMessage(); });
  $('stop').addEventListener('click', () => inFlight && inFlight.abort());
  $('clear-chat').addEventListener('click', clearConversation);
  $('chat-model').addEventListener('change', updateModelNote);
  onKey($('message'), sendMessage, true);
  onKey($('system-prompt'), sendMessage, false);
  $('compare').addEventListener('click', compareSentences);
  onKey($('sentences'), compareSentences, false);
  window.addEventListener('resize', drawLatencyChart);

  loadModels();
  refreshStatus();
  setInterval(refreshStatus, 2000);
});
