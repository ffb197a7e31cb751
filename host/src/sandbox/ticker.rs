//! The epoch ticker. Wasmtime checks a guest's deadline only when the engine's epoch
//! moves, so a thread advances it every [`EPOCH_TICK`] — but only while some guest may
//! be running wasm. Otherwise the host is running graphs or is idle, and a thread
//! waking a thousand times a second only preempts ORT's threads.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use wasmtime::EngineWeak;

use super::engine::EPOCH_TICK;

/// Counts the guest requests that may be running wasm: alive and not waiting for
/// inference.
struct Gate {
    running: AtomicUsize,
    wake: Mutex<()>,
    woken: Condvar,
}

static GATE: Gate = Gate::new();

impl Gate {
    const fn new() -> Self {
        Self {
            running: AtomicUsize::new(0),
            wake: Mutex::new(()),
            woken: Condvar::new(),
        }
    }

    fn wait_for_a_guest(&self) {
        if self.running.load(Ordering::SeqCst) > 0 {
            return;
        }
        let mut guard = self.wake.lock().unwrap_or_else(|e| e.into_inner());
        while self.running.load(Ordering::SeqCst) == 0 {
            guard = self.woken.wait(guard).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn more(&self) {
        if self.running.fetch_add(1, Ordering::SeqCst) == 0 {
            // Under the lock, so the ticker is not between its check and its wait.
            let _guard = self.wake.lock().unwrap_or_else(|e| e.into_inner());
            self.woken.notify_one();
        }
    }

    fn fewer(&self) {
        self.running.fetch_sub(1, Ordering::SeqCst);
    }

    /// Calls `tick` every [`EPOCH_TICK`] while a guest runs, until it returns false.
    fn run(&self, tick: impl Fn() -> bool) {
        loop {
            self.wait_for_a_guest();
            if !tick() {
                return;
            }
            std::thread::sleep(EPOCH_TICK);
        }
    }
}

/// Advances the engine's epoch while guests run, until the engine is gone.
pub fn spawn(engine: EngineWeak) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("epoch".into())
        .spawn(move || {
            GATE.run(|| match engine.upgrade() {
                Some(engine) => {
                    engine.increment_epoch();
                    true
                }
                None => false,
            })
        })?;
    Ok(())
}

/// Held by a guest request from before it instantiates until it ends.
#[must_use]
pub struct Running(());

impl Running {
    pub fn start() -> Self {
        GATE.more();
        Self(())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        GATE.fewer();
    }
}

/// Held by a host call while its guest waits for inference: no wasm runs meanwhile,
/// and the time is not the guest's CPU time.
#[must_use]
pub struct Waiting(Instant);

impl Waiting {
    pub fn start() -> Self {
        GATE.fewer();
        Self(Instant::now())
    }

    /// How long the guest waited (for `ApiState::waited`); its wasm may run again.
    pub fn end(self) -> Duration {
        self.0.elapsed()
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        GATE.more();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;
    use std::sync::Arc;

    #[test]
    fn ticks_only_while_a_guest_runs() {
        static TEST_GATE: Gate = Gate::new();
        let ticks = Arc::new(AtomicU64::new(0));
        let counted = ticks.clone();
        std::thread::spawn(move || {
            TEST_GATE.run(|| {
                counted.fetch_add(1, Ordering::SeqCst);
                true
            })
        });
        let over = |ms| {
            let before = ticks.load(Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(ms));
            ticks.load(Ordering::SeqCst) - before
        };
        assert_eq!(over(30), 0, "no guest: no ticks");
        TEST_GATE.more();
        assert!(over(50) >= 5, "a running guest gets ticks");
        TEST_GATE.fewer(); // waiting for inference
        std::thread::sleep(Duration::from_millis(20)); // a tick under way lands
                                                       // At most one more: the ticker may have checked just before the count fell.
        assert!(over(30) <= 1, "a waiting guest: no ticks");
        TEST_GATE.more(); // the inference answered
        assert!(over(50) >= 5);
        TEST_GATE.fewer();
    }
}
