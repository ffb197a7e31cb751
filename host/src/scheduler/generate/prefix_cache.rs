//! The KV caches of recent prompts, kept after their prefill so that a later prompt
//! starting with the same tokens (a shared system prompt, the earlier turns of a
//! conversation, an agent's tool definitions) prefills only what follows them.
//! Bounded in bytes; the least recently used prompt goes first.
//!
//! Entries are the tenant's own: a prompt never reuses another tenant's cache. Shared,
//! a reused prefix would tell one tenant what another sent: `cached_tokens` in the
//! usage (and the time to the first token) would grow token by token as a guess
//! matched someone else's system prompt. OpenAI scopes its prompt cache to an
//! organization for the same reason; vLLM salts its cache per user.

use std::sync::Arc;

use anyhow::{ensure, Result};
use ort::value::{DynValue, Tensor};

use super::decoder_graph::{DecoderShape, KvLayout};
use super::kv_batch::Prefilled;

/// Shorter shared prefixes are not worth copying their cache for.
pub const MIN_PREFIX: usize = 16;

/// Longer cached starts are not lined up with other prompts in one prefill: a joint
/// prefill copies each row's prefix into the batch and the row back into the cache
/// (a prompt prefilled alone is cached without a copy), and it was measured only up to
/// ~1,800 tokens, where it still paid (docs/PROVIDERS.md, prefix cache). Those go a
/// chunk per step.
pub const MAX_LINED_UP_PREFIX: usize = 2048;

/// Prompt tokens that always run after a cached prefix. One would do (its logits give
/// the next token), but on AVX2-only CPUs MatMulNBits runs a single row on another
/// kernel than several, which rounds differently; with two or more the rest of a prompt
/// gives bit for bit the logits of the whole prompt prefilled at once, so a repeated
/// prompt reads exactly as it did the first time.
pub const MIN_REST: usize = 2;

pub struct PrefixCache {
    /// Least recently used first.
    entries: Vec<Entry>,
    bytes: usize,
    max_bytes: usize,
    layout: KvLayout,
    shape: DecoderShape,
}

struct Entry {
    tenant: Arc<str>,
    tokens: Vec<u32>,
    /// Row `row` of `[rows, kv_heads, width, head_dim]` per past input, holding
    /// `tokens.len()` positions placed as `layout` places them.
    cache: Prefilled,
    bytes: usize,
}

/// A prompt's first `len` tokens, already computed: the `past` of its next chunk.
pub struct Hit {
    pub len: usize,
    pub past: Vec<DynValue>,
}

impl PrefixCache {
    pub fn new(max_bytes: usize, layout: KvLayout, shape: DecoderShape) -> Self {
        Self {
            entries: Vec::new(),
            bytes: 0,
            max_bytes,
            layout,
            shape,
        }
    }

    /// Bytes one cached token takes (keys and values of every layer).
    fn token_bytes(&self) -> usize {
        let DecoderShape {
            layers,
            kv_heads,
            head_dim,
        } = self.shape;
        2 * layers * kv_heads * head_dim * std::mem::size_of::<f32>()
    }

    /// The longest prefix of `prompt` that `tenant` has cached: at least [`MIN_PREFIX`]
    /// tokens, and never its last [`MIN_REST`].
    pub fn lookup(&mut self, tenant: &str, prompt: &[u32]) -> Result<Option<Hit>> {
        let Some((len, index)) = self.best(tenant, prompt) else {
            return Ok(None);
        };
        let entry = self.entries.remove(index);
        let past = copy_prefix(&entry.cache, len, self.layout, self.shape);
        self.entries.push(entry);
        Ok(Some(Hit { len, past: past? }))
    }

    /// How many of `prompt`'s tokens [`lookup`](Self::lookup) would give; 0 for none.
    pub fn usable_len(&self, tenant: &str, prompt: &[u32]) -> usize {
        self.best(tenant, prompt).map_or(0, |(len, _)| len)
    }

    /// Whether a prompt of `len` tokens would be kept by [`insert`](Self::insert).
    pub fn would_keep(&self, len: usize) -> bool {
        len >= MIN_PREFIX && len * self.token_bytes() <= self.max_bytes
    }

    /// The usable length and index of `tenant`'s entry sharing the longest start with `prompt`.
    fn best(&self, tenant: &str, prompt: &[u32]) -> Option<(usize, usize)> {
        let usable = prompt.len().saturating_sub(MIN_REST);
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, e)| &*e.tenant == tenant)
            .map(|(i, e)| (common_prefix(&e.tokens, prompt).min(usable), i))
            .max() // ties go to the most recently used (the later index)
            .filter(|&(len, _)| len >= MIN_PREFIX)
    }

    /// The `past` of a prefill whose row r starts with the first `rows[r].2` tokens of
    /// its prompt (`rows[r]` = tenant, prompt, tokens to take; 0 for none): one
    /// `[rows, kv_heads, longest, head_dim]` value per past input, each prefix copied
    /// once, straight from its entry, right-aligned (concatenating caches only). Fails
    /// when the cache no longer holds a prefix that long.
    pub fn stacked(&mut self, rows: &[(&str, &[u32], usize)]) -> Result<Vec<DynValue>> {
        ensure!(
            self.layout == KvLayout::LeftPadded,
            "stacked prefixes are left-padded"
        );
        let sources = rows
            .iter()
            .map(|&(tenant, prompt, take)| match take {
                0 => Ok(None),
                _ => match self.best(tenant, prompt) {
                    Some((len, index)) if len >= take => Ok(Some(index)),
                    _ => anyhow::bail!("the cache no longer holds {take} tokens of a prompt"),
                },
            })
            .collect::<Result<Vec<Option<usize>>>>()?;
        let DecoderShape {
            kv_heads, head_dim, ..
        } = self.shape;
        let width = rows.iter().map(|r| r.2).max().unwrap_or(0);
        let inputs = sources
            .iter()
            .flatten()
            .next()
            .map_or(0, |&i| self.entries[i].cache.values.len());
        let mut values = Vec::with_capacity(inputs);
        for input in 0..inputs {
            let mut data = vec![0f32; rows.len() * kv_heads * width * head_dim];
            for (row, (source, &(_, _, take))) in sources.iter().zip(rows).enumerate() {
                let Some(entry) = source.map(|i| &self.entries[i]) else {
                    continue;
                };
                let cache = &entry.cache;
                let (dims, src) = cache.values[input].try_extract_tensor::<f32>()?;
                let src_width = dims[2] as usize;
                ensure!(
                    dims.len() == 4 && src_width >= cache.len && cache.len >= take,
                    "a cache of shape {dims:?} holding {} tokens",
                    cache.len
                );
                let start = src_width - cache.len;
                for head in 0..kv_heads {
                    let from = ((cache.row * kv_heads + head) * src_width + start) * head_dim;
                    let to = ((row * kv_heads + head) * width + width - take) * head_dim;
                    data[to..to + take * head_dim]
                        .copy_from_slice(&src[from..from + take * head_dim]);
                }
            }
            let dims = [rows.len(), kv_heads, width, head_dim];
            values.push(Tensor::from_array((dims, data))?.into_dyn());
        }
        // The entries read are the most recently used now.
        let mut used: Vec<usize> = sources.into_iter().flatten().collect();
        used.sort_unstable();
        used.dedup();
        let touched: Vec<Entry> = used.iter().rev().map(|&i| self.entries.remove(i)).collect();
        self.entries.extend(touched.into_iter().rev());
        Ok(values)
    }

    /// Keeps the cache of a prompt just prefilled. Shares `cache` when it is the
    /// prompt's alone; copies the row out of a batched prefill's padded values.
    pub fn insert(&mut self, tenant: &Arc<str>, prompt: &[u32], cache: &Prefilled) -> Result<()> {
        let bytes = prompt.len() * self.token_bytes();
        if !self.would_keep(prompt.len()) {
            return Ok(());
        }
        if let Some(i) = self
            .entries
            .iter()
            .position(|e| e.tenant == *tenant && e.tokens.starts_with(prompt))
        {
            let entry = self.entries.remove(i);
            self.entries.push(entry);
            return Ok(());
        }
        let (tight, _) = tight_shape(cache)?;
        let cache = match tight && cache.len == prompt.len() {
            true => Prefilled {
                values: cache.values.clone(),
                row: cache.row,
                len: cache.len,
            },
            false => Prefilled {
                values: Arc::new(copy_prefix(cache, prompt.len(), self.layout, self.shape)?),
                row: 0,
                len: prompt.len(),
            },
        };
        // A cached prompt this one extends is covered by it.
        let mut freed = 0;
        self.entries.retain(|e| {
            let covered = e.tenant == *tenant && prompt.starts_with(&e.tokens);
            if covered {
                freed += e.bytes;
            }
            !covered
        });
        self.bytes -= freed;
        while self.bytes + bytes > self.max_bytes && !self.entries.is_empty() {
            self.bytes -= self.entries.remove(0).bytes;
        }
        self.bytes += bytes;
        self.entries.push(Entry {
            tenant: tenant.clone(),
            tokens: prompt.to_vec(),
            cache,
            bytes,
        });
        Ok(())
    }

    #[cfg(test)]
    pub fn cached_tokens(&self) -> usize {
        self.entries.iter().map(|e| e.tokens.len()).sum()
    }
}

pub fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Whether `cache` is one row exactly `len` positions wide (then both layouts agree
/// on where its tokens are), and that width.
fn tight_shape(cache: &Prefilled) -> Result<(bool, usize)> {
    let value = cache
        .values
        .first()
        .ok_or_else(|| anyhow::anyhow!("a prefilled cache without values"))?;
    let (shape, _) = value.try_extract_tensor::<f32>()?;
    ensure!(shape.len() == 4, "a cache of shape {shape:?}");
    let width = shape[2] as usize;
    Ok((shape[0] == 1 && width == cache.len, width))
}

/// `[1, kv_heads, len, head_dim]` per past input: the first `len` cached tokens of
/// `cache`'s row.
fn copy_prefix(
    cache: &Prefilled,
    len: usize,
    layout: KvLayout,
    shape: DecoderShape,
) -> Result<Vec<DynValue>> {
    ensure!(len <= cache.len, "{len} of {} cached tokens", cache.len);
    let (_, width) = tight_shape(cache)?;
    ensure!(
        width >= cache.len,
        "{} tokens in {width} positions",
        cache.len
    );
    let start = match layout {
        KvLayout::LeftPadded => width - cache.len,
        KvLayout::Ragged => 0,
    };
    copy_row(&cache.values, cache.row, start, len, shape)
}

/// `[1, kv_heads, len, head_dim]` per value of `[rows, kv_heads, width, head_dim]`:
/// positions `start..start + len` of row `row`.
fn copy_row(
    values: &[DynValue],
    row: usize,
    start: usize,
    len: usize,
    shape: DecoderShape,
) -> Result<Vec<DynValue>> {
    let DecoderShape {
        kv_heads, head_dim, ..
    } = shape;
    values
        .iter()
        .map(|value| {
            let (dims, src) = value.try_extract_tensor::<f32>()?;
            ensure!(
                dims.len() == 4
                    && (row as i64) < dims[0]
                    && dims[1] as usize == kv_heads
                    && dims[2] as usize >= start + len
                    && dims[3] as usize == head_dim,
                "a cache of shape {dims:?} for positions {start}..{} of row {row}",
                start + len
            );
            let width = dims[2] as usize;
            let mut data = Vec::with_capacity(kv_heads * len * head_dim);
            for head in 0..kv_heads {
                let from = ((row * kv_heads + head) * width + start) * head_dim;
                data.extend_from_slice(&src[from..from + len * head_dim]);
            }
            Ok(Tensor::from_array(([1usize, kv_heads, len, head_dim], data))?.into_dyn())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHAPE: DecoderShape = DecoderShape {
        layers: 1,
        kv_heads: 2,
        head_dim: 1,
    };

    /// One layer's key and value for `rows` rows `width` wide: entry (row, head, pos) = 100r + 10h + pos.
    fn values(rows: usize, width: usize) -> Arc<Vec<DynValue>> {
        crate::providers::ort_env::init("").expect("ONNX Runtime from the project's .venv");
        let data: Vec<f32> = (0..rows)
            .flat_map(|r| {
                (0..2).flat_map(move |h| (0..width).map(move |p| (100 * r + 10 * h + p) as f32))
            })
            .collect();
        Arc::new(
            (0..2)
                .map(|_| {
                    Tensor::from_array(([rows, 2, width, 1], data.clone()))
                        .unwrap()
                        .into_dyn()
                })
                .collect(),
        )
    }

    fn alone(len: usize) -> Prefilled {
        Prefilled {
            values: values(1, len),
            row: 0,
            len,
        }
    }

    fn data(past: &[DynValue]) -> Vec<f32> {
        past[0].try_extract_tensor::<f32>().unwrap().1.to_vec()
    }

    fn t() -> Arc<str> {
        Arc::from("t")
    }

    fn cache(max_tokens: usize) -> PrefixCache {
        let layout = KvLayout::LeftPadded;
        PrefixCache::new(max_tokens * 2 * 2 * 4, layout, SHAPE)
    }

    #[test]
    fn a_prompt_reuses_the_longest_cached_prefix_but_runs_its_last_tokens() {
        let mut cache = cache(1000);
        let system: Vec<u32> = (0..20).collect();
        let turn: Vec<u32> = (0..30).collect();
        cache.insert(&t(), &system, &alone(20)).unwrap();
        cache.insert(&t(), &turn, &alone(30)).unwrap();
        assert_eq!(cache.entries.len(), 1, "the turn covers the system prompt");
        let next: Vec<u32> = (0..25).chain([99, 98]).collect();
        let hit = cache.lookup("t", &next).unwrap().unwrap();
        assert_eq!(hit.len, 25);
        assert_eq!(data(&hit.past)[..3], [0., 1., 2.]);
        assert_eq!(
            data(&hit.past)[25..28],
            [10., 11., 12.],
            "head 1 follows head 0"
        );
        assert_eq!(cache.lookup("t", &turn).unwrap().unwrap().len, 28);
        assert!(
            cache.lookup("t", &[0, 1, 2]).unwrap().is_none(),
            "too short"
        );
        assert!(cache
            .lookup("t", &(50..90).collect::<Vec<_>>())
            .unwrap()
            .is_none());
    }

    #[test]
    fn prefixes_are_stacked_right_aligned_for_a_joint_prefill() {
        let mut cache = cache(1000);
        let a: Vec<u32> = (0..20).collect();
        let b: Vec<u32> = (100..130).collect();
        cache.insert(&t(), &a, &alone(20)).unwrap();
        cache.insert(&t(), &b, &alone(30)).unwrap();
        let (pa, pb): (Vec<u32>, Vec<u32>) = ((0..24).collect(), (100..140).collect());
        // Row 0 takes 17 of a's tokens, row 1 none, row 2 all 28 it may of b's.
        let rows: [(&str, &[u32], usize); 3] = [("t", &pa, 17), ("t", &[7; 5], 0), ("t", &pb, 28)];
        let past = cache.stacked(&rows).unwrap();
        let (dims, values) = past[0].try_extract_tensor::<f32>().unwrap();
        assert_eq!(&dims[..], [3, 2, 28, 1]);
        let at = |row: usize, head: usize| &values[(row * 2 + head) * 28..][..28];
        let expected_a: Vec<f32> = [vec![0.; 11], (0..17).map(|p| p as f32).collect()].concat();
        assert_eq!(at(0, 0), expected_a);
        assert_eq!(at(0, 1)[11], 10., "head 1 follows head 0");
        assert!(at(1, 0).iter().chain(at(1, 1)).all(|&v| v == 0.));
        assert_eq!(at(2, 0), (0..28).map(|p| p as f32).collect::<Vec<_>>());
        assert_eq!(
            cache.entries.last().unwrap().tokens,
            b,
            "read entries are recent"
        );
        // A prefix the cache no longer holds that long fails rather than leaving a gap.
        assert!(cache.stacked(&[("t", &pa, 21)]).is_err());
        assert!(
            cache.stacked(&[("u", &pa, 17)]).is_err(),
            "another tenant's"
        );
    }

    #[test]
    fn rows_of_a_padded_batch_are_copied_out() {
        let mut cache = cache(1000);
        // Row 1 of a left-padded batch 24 wide holds a 20-token prompt at positions 4..24.
        let batch = Prefilled {
            values: values(2, 24),
            row: 1,
            len: 20,
        };
        let prompt: Vec<u32> = (0..20).collect();
        cache.insert(&t(), &prompt, &batch).unwrap();
        let hit = cache
            .lookup("t", &(0..22).collect::<Vec<_>>())
            .unwrap()
            .unwrap();
        assert_eq!(hit.len, 20);
        assert_eq!(data(&hit.past)[..2], [104., 105.]);
        assert_eq!(data(&hit.past)[20..22], [114., 115.]);
    }

    #[test]
    fn the_least_recently_used_prompt_leaves_first() {
        let mut cache = cache(50);
        let a: Vec<u32> = (0..20).collect();
        let b: Vec<u32> = (100..120).collect();
        let c: Vec<u32> = (200..220).collect();
        cache.insert(&t(), &a, &alone(20)).unwrap();
        cache.insert(&t(), &b, &alone(20)).unwrap();
        assert!(cache
            .lookup("t", &[a.clone(), vec![7]].concat())
            .unwrap()
            .is_some());
        cache.insert(&t(), &c, &alone(20)).unwrap();
        assert_eq!(cache.cached_tokens(), 40);
        assert!(
            cache.lookup("t", &[b, vec![7]].concat()).unwrap().is_none(),
            "b went"
        );
        assert!(cache.lookup("t", &[a, vec![7]].concat()).unwrap().is_some());
        let too_big: Vec<u32> = (0..60).collect();
        cache.insert(&t(), &too_big, &alone(60)).unwrap();
        assert_eq!(
            cache.cached_tokens(),
            40,
            "larger than the whole cache: not kept"
        );
    }

    #[test]
    fn a_tenant_never_reuses_another_tenants_prompt() {
        let mut cache = cache(1000);
        let system: Vec<u32> = (0..20).collect();
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("b"));
        cache.insert(&a, &system, &alone(20)).unwrap();
        let question: Vec<u32> = (0..20).chain([7, 8]).collect();
        assert!(cache.lookup("b", &question).unwrap().is_none());
        assert_eq!(cache.lookup("a", &question).unwrap().unwrap().len, 20);
        // b's own copy of the same prompt is b's entry; a's longer prompt covers only a's.
        cache.insert(&b, &system, &alone(20)).unwrap();
        cache.insert(&a, &question, &alone(22)).unwrap();
        assert_eq!(cache.entries.len(), 2);
        assert_eq!(cache.lookup("b", &question).unwrap().unwrap().len, 20);
    }

    #[test]
    fn usable_len_tells_what_a_lookup_would_give_without_taking_it() {
        let mut cache = cache(30);
        let prompt: Vec<u32> = (0..20).collect();
        assert_eq!(cache.usable_len("t", &prompt), 0);
        cache.insert(&t(), &prompt, &alone(20)).unwrap();
        assert_eq!(cache.usable_len("t", &prompt), 18, "never the last two");
        assert_eq!(
            cache.usable_len("t", &[prompt.clone(), vec![5, 6]].concat()),
            20
        );
        assert_eq!(cache.usable_len("other", &prompt), 0);
        assert!(cache.would_keep(30) && !cache.would_keep(31) && !cache.would_keep(MIN_PREFIX - 1));
    }
}
