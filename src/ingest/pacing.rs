//! Pacing requests to one site so a CDN never sees us as a flood, and waiting out its block
//! when it does.
//!
//! The Met's Collection API and its image host sit behind Imperva, each with its own counter:
//! more than about 80 requests a minute from one address gets a 403 HTML page ("Request
//! unsuccessful. Incapsula incident ID ...") for every request for up to a minute, with no
//! Retry-After. One request at a time, a second apart, never tripped it in public probes. A
//! [`Pacer`] holds one site's rules: how many requests may be in flight, how far apart they
//! start, and whether the site is blocking us now. Written here rather than taken from a
//! rate-limiting crate (governor and friends) because the limiter must also pause every worker
//! on a block, slow down after it, and give up after a bound, which none of them do.
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// The longest a block may last, counted from its first 403, before the import stops (as a
/// multiple of the first wait: 15 minutes with the live one-minute wait).
pub const GIVE_UP_AFTER_WAITS: u32 = 15;
/// The pace never slows below one request every this many seconds.
pub const SLOWEST_INTERVAL_S: f64 = 4.0;
/// After this many requests in a row without a block, a slowed pace speeds up by a quarter
/// (never past the rules' own): a rare block costs a while, not the rest of a two-hour import.
pub const RECOVER_AFTER: u32 = 100;

/// A site's rules.
#[derive(Debug, Clone)]
pub struct PaceRules {
    /// A name for messages: "the API", "the image host".
    pub site: &'static str,
    /// Requests in flight at once.
    pub in_flight: usize,
    /// Starts at least this far apart.
    pub interval: Duration,
    /// The first wait after a block; each further block in a row waits twice as long.
    pub block_wait: Duration,
}

/// What a pacer tells its observer.
#[derive(Debug, Clone, PartialEq)]
pub enum PaceNotice {
    /// The site blocked us: every request to it waits `wait`, then goes on one every `interval`.
    Blocked { site: &'static str, wait: Duration, interval: Duration },
    /// The first request after a block went through.
    Lifted { site: &'static str, blocked_for: Duration },
}

/// Why a request was not let through.
#[derive(Debug, Clone, PartialEq)]
pub enum PaceStop {
    Cancelled,
    /// Blocked for longer than the bound: stop, and resume later.
    BlockedTooLong {
        site: &'static str,
        minutes: f64,
    },
}

#[derive(Debug)]
struct State {
    in_flight: usize,
    next_start: Instant,
    interval: Duration,
    blocked_until: Option<Instant>,
    /// When the current run of blocks began (cleared by a request that went through).
    block_began: Option<Instant>,
    blocks_in_row: u32,
    ok_in_row: u32,
}

pub struct Pacer {
    rules: PaceRules,
    state: Mutex<State>,
    changed: Condvar,
}

/// A request slot: dropping it frees the slot for the next request.
pub struct Slot<'a>(&'a Pacer);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut s = self.0.lock();
        s.in_flight = s.in_flight.saturating_sub(1);
        self.0.changed.notify_all();
    }
}

impl Pacer {
    pub fn new(rules: PaceRules) -> Self {
        let state = State {
            in_flight: 0,
            next_start: Instant::now(),
            interval: rules.interval,
            blocked_until: None,
            block_began: None,
            blocks_in_row: 0,
            ok_in_row: 0,
        };
        Self { rules, state: Mutex::new(state), changed: Condvar::new() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn site(&self) -> &'static str {
        self.rules.site
    }

    /// The current gap between request starts (longer after a block).
    pub fn interval(&self) -> Duration {
        self.lock().interval
    }

    /// Waits until a request may start: a slot is free, the last start is `interval` ago, and
    /// the site is not blocking us. Wakes at least every 100 ms to look at `cancel`.
    pub fn acquire(&self, cancel: &AtomicBool) -> Result<Slot<'_>, PaceStop> {
        let mut s = self.lock();
        loop {
            if cancel.load(Ordering::Relaxed) {
                return Err(PaceStop::Cancelled);
            }
            let now = Instant::now();
            let ready_at = s.blocked_until.map_or(s.next_start, |b| b.max(s.next_start));
            if s.in_flight < self.rules.in_flight.max(1) && now >= ready_at {
                s.in_flight += 1;
                s.next_start = now + s.interval;
                return Ok(Slot(self));
            }
            let wait = if now < ready_at { ready_at - now } else { Duration::from_millis(100) };
            s = self.changed.wait_timeout(s, wait.min(Duration::from_millis(100))).unwrap_or_else(|p| p.into_inner()).0;
        }
    }

    /// A request went through: a block, if there was one, is over.
    pub fn succeeded(&self) -> Option<PaceNotice> {
        let mut s = self.lock();
        s.blocks_in_row = 0;
        s.ok_in_row += 1;
        if s.ok_in_row >= RECOVER_AFTER && s.interval > self.rules.interval {
            s.interval = (s.interval * 3 / 4).max(self.rules.interval);
            s.ok_in_row = 0;
        }
        s.block_began.take().map(|began| PaceNotice::Lifted { site: self.rules.site, blocked_for: began.elapsed() })
    }

    /// The site answered with its block page. The first worker to see a block sets the wait
    /// (one minute, then twice as long each time it repeats) and halves the pace; workers that
    /// see the same block while it lasts change nothing. Returns the notice to show, if this
    /// call started a wait, or why to stop.
    pub fn blocked(&self) -> Result<Option<PaceNotice>, PaceStop> {
        let mut s = self.lock();
        let now = Instant::now();
        if s.blocked_until.is_some_and(|u| u > now) {
            return Ok(None);
        }
        let began = *s.block_began.get_or_insert(now);
        let bound = self.rules.block_wait * GIVE_UP_AFTER_WAITS;
        let wait = self.rules.block_wait * 2u32.saturating_pow(s.blocks_in_row.min(10));
        if now + wait > began + bound + self.rules.block_wait / 2 {
            return Err(PaceStop::BlockedTooLong {
                site: self.rules.site,
                minutes: (now - began + wait).as_secs_f64() / 60.0,
            });
        }
        s.blocks_in_row += 1;
        s.ok_in_row = 0;
        s.interval = (s.interval * 2).min(Duration::from_secs_f64(SLOWEST_INTERVAL_S).max(self.rules.interval));
        s.blocked_until = Some(now + wait);
        s.next_start = now + wait;
        self.changed.notify_all();
        Ok(Some(PaceNotice::Blocked { site: self.rules.site, wait, interval: s.interval }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(in_flight: usize, interval_ms: u64, block_ms: u64) -> PaceRules {
        PaceRules {
            site: "test",
            in_flight,
            interval: Duration::from_millis(interval_ms),
            block_wait: Duration::from_millis(block_ms),
        }
    }

    #[test]
    fn starts_are_spaced_and_in_flight_is_bounded() {
        let p = Pacer::new(rules(1, 30, 1000));
        let cancel = AtomicBool::new(false);
        let t0 = Instant::now();
        for _ in 0..4 {
            drop(p.acquire(&cancel).unwrap());
        }
        assert!(t0.elapsed() >= Duration::from_millis(90), "{:?}", t0.elapsed());
        // One in flight: a second acquire waits for the first slot to go.
        let p = Pacer::new(rules(1, 0, 1000));
        let slot = p.acquire(&cancel).unwrap();
        std::thread::scope(|s| {
            let h = s.spawn(|| {
                let t = Instant::now();
                drop(p.acquire(&cancel).unwrap());
                t.elapsed()
            });
            std::thread::sleep(Duration::from_millis(60));
            drop(slot);
            assert!(h.join().unwrap() >= Duration::from_millis(50));
        });
    }

    #[test]
    fn a_block_pauses_slows_doubles_and_gives_up_after_the_bound() {
        let p = Pacer::new(rules(2, 10, 20));
        let cancel = AtomicBool::new(false);
        let n = p.blocked().unwrap().unwrap();
        assert_eq!(
            n,
            PaceNotice::Blocked { site: "test", wait: Duration::from_millis(20), interval: Duration::from_millis(20) }
        );
        // A second worker seeing the same block changes nothing.
        assert_eq!(p.blocked().unwrap(), None);
        let t = Instant::now();
        drop(p.acquire(&cancel).unwrap());
        assert!(t.elapsed() >= Duration::from_millis(15));
        // Repeats wait twice as long each time, until the bound (15 first waits) is passed.
        let mut waits = vec![];
        let stop = loop {
            std::thread::sleep(p.lock().blocked_until.unwrap().saturating_duration_since(Instant::now()));
            match p.blocked() {
                Ok(Some(PaceNotice::Blocked { wait, .. })) => waits.push(wait.as_millis()),
                Ok(_) => unreachable!(),
                Err(e) => break e,
            }
        };
        assert_eq!(waits, vec![40, 80, 160], "20 + 40 + 80 + 160 = 300 ms = 15 waits");
        assert!(matches!(stop, PaceStop::BlockedTooLong { site: "test", .. }), "{stop:?}");
        // A success ends the run of blocks.
        assert!(matches!(p.succeeded(), Some(PaceNotice::Lifted { .. })));
        assert_eq!(p.succeeded(), None);
        // The pace halved at each of the four blocks that started a wait...
        assert_eq!(p.interval(), Duration::from_millis(160));
        // ...and comes back a quarter at a time after runs of requests without a block.
        for _ in 0..RECOVER_AFTER {
            p.succeeded();
        }
        assert_eq!(p.interval(), Duration::from_millis(120));
        for _ in 0..10 * RECOVER_AFTER {
            p.succeeded();
        }
        assert_eq!(p.interval(), Duration::from_millis(10), "never faster than the rules");
    }

    #[test]
    fn cancel_ends_a_wait() {
        let p = Pacer::new(rules(1, 0, 60_000));
        p.blocked().unwrap();
        let cancel = AtomicBool::new(true);
        assert_eq!(p.acquire(&cancel).err(), Some(PaceStop::Cancelled));
    }
}
