//! A team of the pool's threads for a long run of short parallel steps: one image through
//! ResNet-50 is ~70 of them (a convolution each, ~0.1-2 ms), each of which every thread must
//! finish before the next can read its output.
//!
//! Why not rayon alone: each `par_iter` is a fork and a join, and between two steps the other
//! workers find nothing to do, spin briefly and go to sleep, to be woken by the next step
//! (~130 context switches an image; `bench --child forward1`, two threads, ran 1.2-1.4 times
//! faster than one). Here the helpers stay on their threads for the whole run, spinning on one
//! word between steps, and a step is handed over with a single store. rayon still starts the
//! helpers (as scope tasks), so a pool busy with other work costs nothing: whatever parts of a
//! step no helper has claimed, the leader runs itself.
use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::Mutex;
use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};

/// A step: runs part `part` of `parts`.
pub type Step<'a> = dyn Fn(usize, usize) + Sync + 'a;

/// The leader's handle on its helpers, passed down to the code that has parallel steps.
pub struct Team {
    parts: usize,
    /// `generation << 32 | next unclaimed part`; [`STOP`] once the leader is done.
    ticket: AtomicU64,
    /// Parts of the current step finished.
    done: AtomicUsize,
    /// The current step: a `*const &Step`, valid while its parts are unfinished.
    step: AtomicPtr<()>,
    /// A part's panic, passed on by the leader once every part has ended.
    panic: Mutex<Option<Box<dyn Any + Send>>>,
}

const STOP: u64 = u64::MAX;
/// Spins a helper waits for the next step before it starts yielding its core between checks
/// (~50 us: longer than any gap between two steps of an image).
const SPINS_BEFORE_YIELD: u32 = 1 << 14;

impl Team {
    /// A team of one: every step runs whole on the calling thread.
    pub fn solo() -> &'static Team {
        static SOLO: Team = Team::new(1);
        &SOLO
    }

    const fn new(parts: usize) -> Self {
        // Generation 0 has no step: all of its parts claimed already.
        let ticket = AtomicU64::new(parts as u64);
        Self {
            parts,
            ticket,
            done: AtomicUsize::new(0),
            step: AtomicPtr::new(std::ptr::null_mut()),
            panic: Mutex::new(None),
        }
    }

    /// Into how many parts each step is cut.
    pub fn parts(&self) -> usize {
        self.parts
    }

    /// Runs `step` for every part, on this thread and whichever helpers claim parts, and
    /// returns once all are done. Only the leader calls this.
    pub fn run(&self, step: &Step) {
        if self.parts == 1 {
            return step(0, 1);
        }
        let handle: &Step = step;
        self.step.store(&handle as *const &Step as *mut (), Ordering::Release);
        self.done.store(0, Ordering::Relaxed);
        let generation = (self.ticket.load(Ordering::Relaxed) >> 32).wrapping_add(1) & 0xffff_ffff;
        self.ticket.store(generation << 32, Ordering::Release);
        while let Some(part) = self.claim() {
            self.run_part(step, part);
        }
        // The helpers' parts are running: they end in about the time the leader's took.
        while self.done.load(Ordering::Acquire) < self.parts {
            std::hint::spin_loop();
        }
        // Only now, with no part left that borrows the step.
        if let Some(panic) = self.panic.lock().unwrap_or_else(|p| p.into_inner()).take() {
            resume_unwind(panic);
        }
    }

    /// Runs one part and counts it done, even if it panics (its panic kept for the leader).
    fn run_part(&self, step: &Step, part: usize) {
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| step(part, self.parts))) {
            self.panic.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(panic);
        }
        self.done.fetch_add(1, Ordering::Release);
    }

    /// The next unclaimed part of the current step, now claimed by this thread.
    fn claim(&self) -> Option<usize> {
        let mut t = self.ticket.load(Ordering::Acquire);
        loop {
            let part = (t & 0xffff_ffff) as usize;
            if t == STOP || part >= self.parts {
                return None;
            }
            match self.ticket.compare_exchange_weak(t, t + 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Some(part),
                Err(now) => t = now,
            }
        }
    }

    /// A helper's loop: claims and runs parts until the leader stops the team.
    fn serve(&self) {
        let mut idle = 0u32;
        while self.ticket.load(Ordering::Acquire) != STOP {
            match self.claim() {
                Some(part) => {
                    // SAFETY: `run` published the step before the ticket this claim took, and
                    // does not return (ending the step's borrow) until this part is done.
                    let step = unsafe { *(self.step.load(Ordering::Acquire) as *const &Step) };
                    self.run_part(step, part);
                    idle = 0;
                }
                None if idle < SPINS_BEFORE_YIELD => {
                    idle += 1;
                    std::hint::spin_loop();
                }
                None => std::thread::yield_now(),
            }
        }
    }
}

/// Runs `leader` on this thread with a team of the pool's threads (one, with no helpers,
/// where the pool has a single thread).
pub fn with_team<R: Send>(leader: impl FnOnce(&Team) -> R + Send) -> R {
    let parts = rayon::current_num_threads();
    if parts <= 1 {
        return leader(Team::solo());
    }
    let team = Team::new(parts);
    rayon::in_place_scope(|s| {
        for _ in 1..parts {
            s.spawn(|_| team.serve());
        }
        // Stops the helpers however the leader ends: the scope waits for them before it
        // returns or passes a panic on.
        struct Stop<'a>(&'a Team);
        impl Drop for Stop<'_> {
            fn drop(&mut self) {
                self.0.ticket.store(STOP, Ordering::Release);
            }
        }
        let _stop = Stop(&team);
        leader(&team)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Every part of every step runs exactly once, each step's parts all finish before the
    /// next step starts, and the helpers take some of them.
    #[test]
    fn a_team_runs_every_part_of_every_step_once_in_order() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
        let log = Mutex::new(Vec::new());
        let finished = AtomicUsize::new(0);
        let threads = Mutex::new(std::collections::HashSet::new());
        pool.install(|| {
            with_team(|team| {
                assert_eq!(team.parts(), 3);
                for step in 0..200 {
                    team.run(&|part, parts| {
                        assert_eq!(parts, 3);
                        // Every part of the previous step had finished (and none of the next).
                        let f = finished.load(Ordering::SeqCst);
                        assert!((step * 3..step * 3 + 3).contains(&f), "step {step} started after {f} parts");
                        std::thread::sleep(std::time::Duration::from_micros(50));
                        log.lock().unwrap().push((step, part));
                        threads.lock().unwrap().insert(std::thread::current().id());
                        finished.fetch_add(1, Ordering::SeqCst);
                    });
                }
            })
        });
        let mut log = log.into_inner().unwrap();
        log.sort();
        assert_eq!(log, (0..200).flat_map(|s| (0..3).map(move |p| (s, p))).collect::<Vec<_>>());
        assert!(threads.into_inner().unwrap().len() > 1, "no helper took a part");
    }

    /// A leader whose helpers cannot start (the pool's only other thread is busy) runs every
    /// part itself rather than waiting for them.
    #[test]
    fn a_leader_without_helpers_runs_the_steps_alone() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        let (hold, release) = std::sync::mpsc::channel::<()>();
        let parts_run = AtomicUsize::new(0);
        pool.scope(|s| {
            // Keeps one worker busy until the team is done.
            s.spawn(move |_| {
                let _ = release.recv();
            });
            s.spawn(|_| {
                with_team(|team| {
                    for _ in 0..10 {
                        team.run(&|_, _| {
                            parts_run.fetch_add(1, Ordering::SeqCst);
                        });
                    }
                });
                drop(hold);
            });
        });
        assert_eq!(parts_run.load(Ordering::SeqCst), 20);
    }

    /// A part that panics, on a helper or on the leader, fails the step on the leader once
    /// the other parts are done, and the team stops.
    #[test]
    fn a_panicking_part_fails_the_step_on_the_leader() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        for bad in [0, 1] {
            let ran = AtomicUsize::new(0);
            let result = pool.install(|| {
                catch_unwind(AssertUnwindSafe(|| {
                    with_team(|team| {
                        team.run(&|part, _| {
                            ran.fetch_add(1, Ordering::SeqCst);
                            assert_ne!(part, bad, "part {bad} fails");
                        })
                    })
                }))
            });
            let panic = result.unwrap_err();
            assert_eq!(
                panic.downcast_ref::<String>().map(String::as_str),
                Some(
                    format!("assertion `left != right` failed: part {bad} fails\n  left: {bad}\n right: {bad}")
                        .as_str()
                )
            );
            assert_eq!(ran.load(Ordering::SeqCst), 2);
        }
    }

    /// A team of one runs each step whole, on the calling thread.
    #[test]
    fn a_solo_team_runs_each_step_whole() {
        let calls = Mutex::new(Vec::new());
        Team::solo().run(&|part, parts| calls.lock().unwrap().push((part, parts)));
        assert_eq!(calls.into_inner().unwrap(), [(0, 1)]);
    }
}
