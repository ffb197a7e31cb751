//! Generations waiting for a place in the decode batch. A free place goes to the
//! tenant with the fewest generations running, and among equals to the one served
//! least recently, so one tenant's flood of requests cannot keep another tenant's
//! single request waiting behind it.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

pub struct Admission<J> {
    waiting: VecDeque<(Arc<str>, J)>,
    /// When each tenant was last given a place (a counter; never served = 0).
    served: HashMap<Arc<str>, u64>,
    admissions: u64,
}

impl<J> Default for Admission<J> {
    fn default() -> Self {
        Self {
            waiting: VecDeque::new(),
            served: HashMap::new(),
            admissions: 0,
        }
    }
}

impl<J> Admission<J> {
    pub fn push(&mut self, tenant: Arc<str>, job: J) {
        self.waiting.push_back((tenant, job));
    }

    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// Every waiting job, oldest first.
    pub fn into_items(self) -> impl Iterator<Item = J> {
        self.waiting.into_iter().map(|(_, job)| job)
    }

    /// Keeps only the jobs for which `keep` is true (e.g. drops cancelled ones).
    pub fn retain(&mut self, mut keep: impl FnMut(&J) -> bool) {
        self.waiting.retain(|(_, job)| keep(job));
    }

    /// The oldest job of the tenant with the fewest `running` generations, ties going
    /// to the tenant served least recently.
    pub fn next(&mut self, running: impl Fn(&str) -> usize) -> Option<(Arc<str>, J)> {
        let mut best: Option<((usize, u64), usize)> = None; // ((running, last served), index)
        for (index, (tenant, _)) in self.waiting.iter().enumerate() {
            let rank = (
                running(tenant),
                self.served.get(tenant).copied().unwrap_or(0),
            );
            if best.is_none_or(|(least, _)| rank < least) {
                best = Some((rank, index));
            }
        }
        let (tenant, job) = self.waiting.remove(best?.1)?;
        self.admissions += 1;
        if self.served.len() > 4096 {
            // Tenants come and go at run time; forgetting old ones only loses a tie-break.
            self.served.clear();
        }
        self.served.insert(tenant.clone(), self.admissions);
        Some((tenant, job))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flooding_tenant_does_not_block_a_single_request() {
        let mut admission = Admission::default();
        let flood: Arc<str> = "flood".into();
        for i in 0..10 {
            admission.push(flood.clone(), i);
        }
        admission.push("quiet".into(), 99);
        let mut running = std::collections::HashMap::<String, usize>::new();
        let mut order = Vec::new();
        for _ in 0..3 {
            let (tenant, job) = admission
                .next(|t| running.get(t).copied().unwrap_or(0))
                .unwrap();
            *running.entry(tenant.to_string()).or_default() += 1;
            order.push(job);
        }
        // The flood's first request, then the quiet tenant's (it has none running), then the flood again.
        assert_eq!(order, [0, 99, 1]);
    }

    #[test]
    fn with_nothing_running_the_least_recently_served_tenant_goes_first() {
        let mut admission = Admission::default();
        for i in 0..3 {
            admission.push("flood".into(), i);
        }
        assert_eq!(admission.next(|_| 0).unwrap().1, 0);
        admission.push("quiet".into(), 99);
        let order: Vec<i32> =
            std::iter::from_fn(|| admission.next(|_| 0).map(|(_, j)| j)).collect();
        assert_eq!(order, [99, 1, 2]);
    }

    #[test]
    fn one_tenant_is_served_in_arrival_order() {
        let mut admission = Admission::default();
        for i in 0..3 {
            admission.push("a".into(), i);
        }
        admission.retain(|&j| j != 1);
        let order: Vec<i32> =
            std::iter::from_fn(|| admission.next(|_| 0).map(|(_, j)| j)).collect();
        assert_eq!(order, [0, 2]);
    }
}
