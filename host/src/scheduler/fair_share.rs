//! Bounded capacity shared by tenants: the embedding queue's waiting inputs, a
//! graph's line of direct runs, a decoder's generations. A full one still takes a
//! tenant that holds less than an equal share of it, so one tenant's flood cannot
//! lock the others out (they would get busy errors while it holds every place). The
//! total stays under twice the bound.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

/// Whether a tenant holding `held` of `total` (of `capacity`) may add `amount`, with
/// `others` other tenants holding some: yes while there is room, and past the bound
/// (up to twice it) while the tenant stays within an equal share.
pub fn admits(capacity: usize, total: usize, held: usize, amount: usize, others: usize) -> bool {
    if total + amount <= capacity {
        return true;
    }
    total + amount <= 2 * capacity && held + amount <= capacity / (others + 1)
}

/// Places counted per tenant, each held by a [`Place`] until it drops.
pub struct Places {
    capacity: usize,
    held: Arc<Mutex<Held>>,
}

#[derive(Default)]
struct Held {
    total: usize,
    by_tenant: HashMap<Arc<str>, usize>,
}

/// One place, given back when dropped.
#[must_use]
pub struct Place {
    held: Arc<Mutex<Held>>,
    tenant: Arc<str>,
}

impl Places {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            held: Arc::default(),
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// A place for the tenant, if [`admits`] allows it.
    pub fn take(&self, tenant: &Arc<str>) -> Option<Place> {
        let mut held = self.held.lock();
        let mine = held.by_tenant.get(tenant).copied().unwrap_or(0);
        let others = held.by_tenant.len() - usize::from(mine > 0);
        if !admits(self.capacity, held.total, mine, 1, others) {
            return None;
        }
        held.total += 1;
        *held.by_tenant.entry(tenant.clone()).or_default() += 1;
        Some(Place {
            held: self.held.clone(),
            tenant: tenant.clone(),
        })
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut held = self.held.lock();
        held.total -= 1;
        if let Some(mine) = held.by_tenant.get_mut(&self.tenant) {
            *mine -= 1;
            if *mine == 0 {
                held.by_tenant.remove(&self.tenant);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_capacity_still_takes_a_tenant_below_its_share() {
        let places = Places::new(4);
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        let flood: Vec<Place> = (0..4).map(|_| places.take(&a).unwrap()).collect();
        assert!(places.take(&a).is_none(), "a holds every place");
        // b is within half of the capacity: two places, then no more.
        let b1 = places.take(&b).unwrap();
        let _b2 = places.take(&b).unwrap();
        assert!(places.take(&b).is_none());
        assert!(places.take(&a).is_none());
        // Places come back when dropped.
        drop(b1);
        assert!(places.take(&b).is_some());
        drop(flood);
        assert_eq!(places.held.lock().total, 1);
        assert!(places.held.lock().by_tenant.get(&a).is_none());
    }

    #[test]
    fn the_total_stays_under_twice_the_capacity() {
        let places = Places::new(4);
        let tenants: Vec<Arc<str>> = (0..20).map(|i| format!("t{i}").into()).collect();
        let mut taken = Vec::new();
        for tenant in &tenants {
            while let Some(place) = places.take(tenant) {
                taken.push(place);
            }
        }
        assert!(taken.len() <= 8, "{} places", taken.len());
        assert!(taken.len() > 4);
    }

    #[test]
    fn admits_amounts() {
        // Room: anything up to the capacity.
        assert!(admits(100, 40, 40, 60, 0));
        assert!(!admits(100, 40, 40, 61, 0));
        // Full, one other tenant: up to half of it.
        assert!(admits(100, 100, 0, 50, 1));
        assert!(!admits(100, 100, 0, 51, 1));
        assert!(!admits(100, 100, 30, 30, 1));
        // Never past twice the capacity.
        assert!(!admits(100, 180, 0, 25, 1));
    }
}
