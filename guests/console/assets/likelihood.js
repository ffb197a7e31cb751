// nnhost console, likelihood view: how probable a model finds each token of a text,
// given the text before it (POST /v1/completions with echo, logprobs and max_tokens 0:
// prompt scoring). Uses app.js's helpers ($, el, getJSON, showError, fmt).
'use strict';

async function scoreText() {
  const text = $('score-text').value;
  const model = $('score-model').value;
  showError($('score-error'), null);
  if (!text.trim()) { showError($('score-error'), 'Write some text to score.'); return; }
  if (!model) { showError($('score-error'), 'No chat or completion model is available on this host.'); return; }
  $('score').disabled = true;
  $('score-stats').textContent = 'scoring…';
  const started = performance.now();
  try {
    const body = await getJSON('/v1/completions', { model, prompt: text, echo: true, logprobs: 5, max_tokens: 0 });
    const lp = body.choices[0].logprobs;
    renderScoredTokens(lp);
    const scored = lp.token_logprobs.filter((x) => x !== null);
    const total = scored.reduce((a, b) => a + b, 0);
    const perplexity = scored.length ? Math.exp(-total / scored.length) : NaN;
    $('score-stats').textContent = `${lp.tokens.length} tokens · log-likelihood ${total.toFixed(2)} · ` +
      `perplexity ${perplexity.toFixed(2)} · ${fmt.ms(performance.now() - started)} ms`;
  } catch (e) {
    showError($('score-error'), e.message);
    $('score-stats').textContent = '';
  } finally {
    $('score').disabled = false;
  }
}

/** One span per token, shaded by its probability; the title lists the model's top guesses. */
function renderScoredTokens(lp) {
  const spans = lp.tokens.map((token, i) => {
    const logprob = lp.token_logprobs[i];
    const p = logprob === null ? null : Math.exp(logprob);
    const top = lp.top_logprobs[i];
    const guesses = top ? Object.entries(top).sort((a, b) => b[1] - a[1])
      .map(([t, l]) => `${JSON.stringify(t)} ${(100 * Math.exp(l)).toFixed(1)}%`).join('\n') : '';
    const title = p === null ? 'first token: nothing before it to predict it from'
      : `${(100 * p).toFixed(1)}% likely\nthe model's top guesses here:\n${guesses}`;
    const span = el('span', { className: 'token', title, dataset: { p: p === null ? '' : p.toPrecision(4) } }, token);
    span.style.background = p === null ? 'transparent' : heat(0.15 + 0.85 * p);
    if (p !== null && p > 0.6) span.style.color = '#fff';
    return span;
  });
  $('scored-tokens').replaceChildren(...spans);
}

document.addEventListener('DOMContentLoaded', () => {
  $('score').addEventListener('click', scoreText);
  onKey($('score-text'), scoreText, false);
});
