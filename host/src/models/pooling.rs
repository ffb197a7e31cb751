//! Turning per-token hidden states into one vector per input.

use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    Mean,
    Cls,
    Max,
    LastToken,
}

impl FromStr for Pooling {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "mean" => Pooling::Mean,
            "cls" => Pooling::Cls,
            "max" => Pooling::Max,
            "lasttoken" | "last_token" => Pooling::LastToken,
            other => {
                return Err(format!(
                    "unknown pooling {other:?} (mean, cls, max, lasttoken)"
                ))
            }
        })
    }
}

impl Pooling {
    pub fn as_str(self) -> &'static str {
        match self {
            Pooling::Mean => "mean",
            Pooling::Cls => "cls",
            Pooling::Max => "max",
            Pooling::LastToken => "lasttoken",
        }
    }

    /// Pools one row of `hidden` ([seq, dim], row-major) whose first `len` tokens are
    /// real (the rest is padding) into `out` ([dim]).
    pub fn pool(self, hidden: &[f32], dim: usize, len: usize, out: &mut [f32]) {
        debug_assert!(len >= 1 && hidden.len() >= len * dim && out.len() == dim);
        let rows = hidden[..len * dim].chunks_exact(dim);
        match self {
            Pooling::Cls => out.copy_from_slice(&hidden[..dim]),
            Pooling::LastToken => out.copy_from_slice(&hidden[(len - 1) * dim..len * dim]),
            Pooling::Mean => {
                out.fill(0.0);
                for row in rows {
                    for (o, x) in out.iter_mut().zip(row) {
                        *o += x;
                    }
                }
                let n = len as f32;
                out.iter_mut().for_each(|o| *o /= n);
            }
            Pooling::Max => {
                out.fill(f32::NEG_INFINITY);
                for row in rows {
                    for (o, x) in out.iter_mut().zip(row) {
                        *o = o.max(*x);
                    }
                }
            }
        }
    }
}

/// Scales `v` to unit length (a zero vector stays zero).
pub fn normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HIDDEN: [f32; 6] = [1.0, 2.0, 3.0, 6.0, 100.0, 100.0]; // 3 tokens × dim 2, last is padding

    #[test]
    fn mean_ignores_padding() {
        let mut out = [0.0; 2];
        Pooling::Mean.pool(&HIDDEN, 2, 2, &mut out);
        assert_eq!(out, [2.0, 4.0]);
    }

    #[test]
    fn cls_max_and_last_token() {
        let mut out = [0.0; 2];
        Pooling::Cls.pool(&HIDDEN, 2, 2, &mut out);
        assert_eq!(out, [1.0, 2.0]);
        Pooling::Max.pool(&HIDDEN, 2, 2, &mut out);
        assert_eq!(out, [3.0, 6.0]);
        Pooling::LastToken.pool(&HIDDEN, 2, 2, &mut out);
        assert_eq!(out, [3.0, 6.0]);
    }

    #[test]
    fn normalize_gives_unit_length() {
        let mut v = [3.0, 4.0];
        normalize(&mut v);
        assert_eq!(v, [0.6, 0.8]);
        let mut zero = [0.0, 0.0];
        normalize(&mut zero);
        assert_eq!(zero, [0.0, 0.0]);
    }

    #[test]
    fn parses_names() {
        assert_eq!("cls".parse::<Pooling>().unwrap(), Pooling::Cls);
        assert!("median".parse::<Pooling>().is_err());
    }
}
