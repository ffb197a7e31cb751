//! How many positions a decode step checks drafts at. Each extra position costs
//! every row of the batch a position (the batch is rectangular; a row with a shorter
//! draft runs padding), and what a position costs depends on the model and the CPU:
//! measured on the 2-core Xeon, a SmolLM2 int4 step of 5 positions took 1.47x a
//! step of one, a Gemma 3 8-bit step 1.27x; four rows of 3 positions 1.59x and
//! 1.24x four rows of one. So the budget is learned as the worker runs: the time of
//! plain steps by batch size, the extra time per row-position of drafted steps, and
//! how often a drafted token is confirmed, for the model and for each generation (a
//! greedy answer quoting its prompt confirms most drafts, a sampled story few). A
//! step takes the number of positions that maximizes expected tokens per second.

/// Weight of the newest measurement in the running estimates.
const NEWEST: f64 = 0.2;
/// Until a drafted step has been timed: an extra row-position's cost as a share of
/// a row's in a plain step (the two models measured 0.06 and 0.12 on one row).
const FIRST_POSITION_SHARE: f64 = 0.08;
/// Decay of the confirmation counts per drafted step: about the last 50 steps count.
const KEEP: f64 = 0.98;
/// Weight, in drafted tokens, of the model's confirmation rate in a generation's own:
/// its first drafts are judged by the model's record, later ones mostly by its own.
const ROW_PRIOR: f64 = 4.0;
/// When the estimates advise against drafts that were found, every this many such
/// steps drafts one token per row anyway: estimates learned only from drafted steps
/// would otherwise never recover from a bad stretch (or a slow first run at a new
/// shape).
const EXPLORE_EVERY: u32 = 8;

/// One row's draft: its length and how likely each drafted token is to be confirmed
/// once the one before it was ([`DraftBudget::row_rate`]).
#[derive(Debug, Clone, Copy)]
pub struct Draft {
    pub len: usize,
    pub rate: f64,
}

pub struct DraftBudget {
    /// Seconds of a plain (one-position) step, by rows; None until one was timed.
    plain: Vec<Option<f64>>,
    /// Extra seconds per row per extra position; None until a drafted step was timed.
    per_position: Option<f64>,
    /// Drafted tokens confirmed, and drafts cut short by a mismatch (decayed counts):
    /// a drafted token follows a confirmed one with probability
    /// `confirmed / (confirmed + mismatched)`.
    confirmed: f64,
    mismatched: f64,
    /// Steps with drafts the estimates turned down since the last exploring one.
    declined: u32,
}

impl Default for DraftBudget {
    fn default() -> Self {
        Self {
            plain: Vec::new(),
            per_position: None,
            // An even prior, worth a few steps.
            confirmed: 3.0,
            mismatched: 3.0,
            declined: 0,
        }
    }
}

impl DraftBudget {
    /// Positions (1 = no drafts) for a step whose rows found these drafts.
    pub fn positions(&mut self, drafts: &[Draft]) -> usize {
        let best = self.best_positions(drafts);
        if best > 1 || drafts.iter().all(|d| d.len == 0) || !self.timed(drafts.len()) {
            return best;
        }
        self.declined += 1;
        if self.declined < EXPLORE_EVERY {
            return 1;
        }
        self.declined = 0;
        2
    }

    fn timed(&self, rows: usize) -> bool {
        self.plain.get(rows).copied().flatten().is_some()
    }

    /// The positions that maximize expected tokens per second.
    fn best_positions(&self, drafts: &[Draft]) -> usize {
        let rows = drafts.len();
        let longest = drafts.iter().map(|d| d.len).max().unwrap_or(0);
        let Some(plain) = self.plain.get(rows).copied().flatten() else {
            return 1; // a plain step first: it is what drafts are measured against
        };
        if longest == 0 {
            return 1;
        }
        let per_position = self
            .per_position
            .unwrap_or(FIRST_POSITION_SHARE * plain / rows as f64);
        let (mut best, mut best_rate) = (1, rows as f64 / plain);
        let mut expected = rows as f64;
        for extra in 1..=longest {
            // A row's `extra`-th drafted token counts if it and every one before it do.
            expected += drafts
                .iter()
                .filter(|d| d.len >= extra)
                .map(|d| d.rate.powi(extra as i32))
                .sum::<f64>();
            let rate = expected / (plain + per_position * (rows * extra) as f64);
            if rate > best_rate {
                (best, best_rate) = (extra + 1, rate);
            }
        }
        best
    }

    pub fn confirmation_rate(&self) -> f64 {
        self.confirmed / (self.confirmed + self.mismatched)
    }

    /// The rate for a generation whose drafts so far had `confirmed` tokens confirmed
    /// and `mismatched` cut short: its own record, drawn toward the model's.
    pub fn row_rate(&self, confirmed: usize, mismatched: usize) -> f64 {
        (confirmed as f64 + ROW_PRIOR * self.confirmation_rate())
            / ((confirmed + mismatched) as f64 + ROW_PRIOR)
    }

    /// A plain step of `rows` rows took `seconds`.
    pub fn plain_step(&mut self, rows: usize, seconds: f64) {
        if self.plain.len() <= rows {
            self.plain.resize(rows + 1, None);
        }
        let slot = &mut self.plain[rows];
        *slot = Some(slot.map_or(seconds, |old| blend(old, seconds)));
    }

    /// A step of `rows` rows and `positions` positions took `seconds`; its drafts had
    /// `confirmed` tokens confirmed and `mismatched` cut short by another sample.
    pub fn drafted_step(
        &mut self,
        rows: usize,
        positions: usize,
        seconds: f64,
        confirmed: usize,
        mismatched: usize,
    ) {
        self.confirmed = self.confirmed * KEEP + confirmed as f64;
        self.mismatched = self.mismatched * KEEP + mismatched as f64;
        let Some(plain) = self.plain.get(rows).copied().flatten() else {
            return;
        };
        let extra = (rows * positions.saturating_sub(1)) as f64;
        if extra == 0.0 {
            return;
        }
        // Bounded by what a row costs in a plain step, so that one slow run (ORT's
        // first at a new shape is) cannot rule drafts out for long; a drafted step
        // faster than a plain one (noise) still costs something.
        let per_row = plain / rows as f64;
        let measured = ((seconds - plain) / extra).clamp(per_row * 0.001, per_row);
        let old = self.per_position.unwrap_or(FIRST_POSITION_SHARE * per_row);
        self.per_position = Some(blend(old, measured));
    }
}

fn blend(old: f64, new: f64) -> f64 {
    old + NEWEST * (new - old)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(rate: f64, lens: &[usize]) -> Vec<Draft> {
        lens.iter().map(|&len| Draft { len, rate }).collect()
    }

    fn budget(plain: &[(usize, f64)], per_position: f64, rate: f64) -> DraftBudget {
        let mut b = DraftBudget::default();
        for &(rows, s) in plain {
            b.plain_step(rows, s);
        }
        b.per_position = Some(per_position);
        b.confirmed = rate * 100.0;
        b.mismatched = (1.0 - rate) * 100.0;
        b
    }

    #[test]
    fn no_drafts_before_a_plain_step_of_that_size_was_timed() {
        let mut b = DraftBudget::default();
        let p = b.confirmation_rate();
        assert_eq!(b.positions(&at(p, &[4])), 1);
        b.plain_step(1, 0.010);
        assert!(
            b.positions(&at(p, &[4])) > 1,
            "the first guess drafts on one row"
        );
        assert_eq!(b.positions(&at(p, &[4, 4])), 1, "two rows: not timed yet");
        assert_eq!(b.positions(&at(p, &[0])), 1, "nothing drafted");
    }

    #[test]
    fn cheap_positions_and_good_drafts_check_them_all() {
        // Gemma-like: 0.6 ms an extra position on a 19 ms step, 70 % confirmed.
        let b = budget(&[(1, 0.019)], 0.0006, 0.7);
        assert_eq!(b.best_positions(&at(0.7, &[4])), 5);
        assert!(b.best_positions(&at(0.7, &[8])) >= 7);
    }

    #[test]
    fn costly_positions_or_poor_drafts_check_fewer() {
        // SmolLM2-like: 1.4 ms an extra position on a 12 ms step.
        let b = budget(&[(1, 0.012)], 0.0014, 0.7);
        assert_eq!(b.best_positions(&at(0.7, &[8])), 5);
        assert_eq!(b.best_positions(&at(0.1, &[4])), 1);
    }

    #[test]
    fn declined_drafts_are_tried_now_and_then() {
        let mut b = budget(&[(1, 0.012)], 0.0014, 0.05);
        let tried: Vec<usize> = (0..16).map(|_| b.positions(&at(0.05, &[4]))).collect();
        assert_eq!(tried.iter().filter(|&&p| p == 2).count(), 2);
        assert!(tried.iter().all(|&p| p == 1 || p == 2));
        assert_eq!(
            b.positions(&at(0.05, &[0])),
            1,
            "nothing found: nothing tried"
        );
    }

    #[test]
    fn padding_for_rows_without_drafts_counts() {
        // Four rows, one with a draft: the other three pay for its positions too.
        let b = budget(&[(1, 0.012), (4, 0.019)], 0.0013, 0.6);
        assert_eq!(b.best_positions(&at(0.6, &[0, 0, 3, 0])), 1);
        assert!(b.best_positions(&at(0.6, &[3, 3, 3, 3])) > 1);
    }

    #[test]
    fn a_generation_is_judged_by_its_own_record_once_it_has_one() {
        let b = budget(&[(1, 0.012)], 0.0014, 0.6);
        assert!(
            (b.row_rate(0, 0) - 0.6).abs() < 1e-9,
            "no record: the model's"
        );
        assert!(b.row_rate(40, 2) > 0.9);
        assert!(b.row_rate(0, 12) < 0.2);
        // One row quoting its prompt, one sampling freely: the first's draft is worth
        // checking on its own, the second's is not worth its positions.
        let quoting = Draft {
            len: 4,
            rate: b.row_rate(40, 2),
        };
        let sampling = Draft {
            len: 4,
            rate: b.row_rate(0, 20),
        };
        assert_eq!(b.best_positions(&[quoting]), 5);
        assert_eq!(b.best_positions(&[sampling]), 1);
    }

    #[test]
    fn measurements_update_the_estimates() {
        let mut b = DraftBudget::default();
        b.plain_step(1, 0.010);
        for _ in 0..50 {
            b.drafted_step(1, 5, 0.014, 4, 0);
        }
        assert!((b.per_position.unwrap() - 0.001).abs() < 1e-6);
        b.drafted_step(1, 5, 0.009, 0, 1);
        assert!(
            b.per_position.unwrap() > 0.0,
            "noise never makes a position free"
        );
        b.drafted_step(1, 5, 1.0, 0, 1);
        assert!(
            b.per_position.unwrap() < 0.003,
            "one slow run moves the estimate by a fifth of a plain row at most"
        );
        assert!(b.confirmation_rate() > 0.5);
        for _ in 0..200 {
            b.drafted_step(1, 5, 0.014, 0, 1);
        }
        assert!(b.confirmation_rate() < 0.05, "old counts fade");
    }
}
