//! Hybrid logical clocks: timestamps that follow the wall clock, never go
//! backwards, and totally order every event of every region.
//!
//! A timestamp is `(wall_ms, logical, origin, producer)`, compared in that
//! order. `producer` is the issuing clock's own random 64-bit id, so two
//! producer processes of one region that mint the same `(wall_ms, logical)`
//! still give different versions; events written before it existed carry 0.
//! The clock keeps the largest timestamp it has issued or seen; a new one is the
//! later of that and the wall clock, bumping the logical counter when the wall
//! clock has not moved past it. The clock refuses to run more than
//! `max_ahead_ms` ahead of its own wall clock: a remote timestamp from a region
//! whose clock is far in the future, or a local clock stepped far back, is an
//! error instead of silent drift.

use std::cmp::Ordering;
use std::fmt;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// Default bound on how far ahead of the wall clock a clock may run.
pub const DEFAULT_MAX_AHEAD_MS: u64 = 60_000;

/// A hybrid logical clock timestamp.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Hlc {
    /// Physical part, milliseconds since the Unix epoch.
    pub wall_ms: u64,
    /// Logical counter within one `wall_ms`.
    pub logical: u32,
    /// Region that issued the timestamp; breaks ties between regions.
    pub origin: String,
    /// Clock (one per producer process) that issued the timestamp; breaks
    /// ties within a region. 0 in events from before producers had one.
    pub producer: u64,
}

impl Hlc {
    /// A timestamp of producer 0 of `origin`; see [`Hlc::of_producer`].
    pub fn new(wall_ms: u64, logical: u32, origin: impl Into<String>) -> Self {
        Self {
            wall_ms,
            logical,
            origin: origin.into(),
            producer: 0,
        }
    }

    /// The same timestamp issued by clock `producer`.
    #[must_use]
    pub fn of_producer(mut self, producer: u64) -> Self {
        self.producer = producer;
        self
    }

    /// The `i`-th timestamp of the run [`HybridClock::reserve`] began with
    /// this one, or `None` past the logical counter's end.
    pub fn nth(&self, i: u32) -> Option<Self> {
        Some(Self {
            logical: self.logical.checked_add(i)?,
            ..self.clone()
        })
    }

    /// The smallest timestamp of a region, below anything it issues.
    pub fn zero(origin: impl Into<String>) -> Self {
        Self::new(0, 0, origin)
    }
}

impl Ord for Hlc {
    fn cmp(&self, other: &Self) -> Ordering {
        (
            self.wall_ms,
            self.logical,
            self.origin.as_str(),
            self.producer,
        )
            .cmp(&(
                other.wall_ms,
                other.logical,
                other.origin.as_str(),
                other.producer,
            ))
    }
}

impl PartialOrd for Hlc {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// `wall_ms.logical@origin`, then `/producer` in 16 hex digits unless the
/// producer is 0 (so versions stored before producer ids read the same).
impl fmt::Display for Hlc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}@{}", self.wall_ms, self.logical, self.origin)?;
        if self.producer != 0 {
            write!(f, "/{:016x}", self.producer)?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Hlc {
    type Err = String;
    /// Parses the form [`Hlc`]'s `Display` writes:
    /// `wall_ms.logical@origin[/producer]`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!("version {s:?} is not of the form <wall_ms>.<logical>@<origin>[/<producer>]")
        };
        let (clock, issuer) = s.split_once('@').ok_or_else(bad)?;
        let (wall, logical) = clock.split_once('.').ok_or_else(bad)?;
        let (origin, producer) = match issuer.split_once('/') {
            Some((origin, hex)) if hex.len() == 16 => {
                (origin, u64::from_str_radix(hex, 16).map_err(|_| bad())?)
            }
            Some(_) => return Err(bad()),
            None => (issuer, 0),
        };
        if origin.is_empty() {
            return Err(bad());
        }
        let wall_ms: u64 = wall.parse().map_err(|_| bad())?;
        // The wire holds the wall clock as an Avro long.
        if i64::try_from(wall_ms).is_err() {
            return Err(format!(
                "version {s:?}: wall_ms {wall_ms} is past the largest timestamp ({})",
                i64::MAX
            ));
        }
        Ok(Hlc::new(wall_ms, logical.parse().map_err(|_| bad())?, origin).of_producer(producer))
    }
}

/// Why a clock refused to issue a timestamp.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HlcError {
    #[error(
        "clock of region {origin} would run {ahead_ms} ms ahead of the wall clock \
         (bound {max_ahead_ms} ms): {cause}"
    )]
    TooFarAhead {
        origin: String,
        ahead_ms: u64,
        max_ahead_ms: u64,
        cause: &'static str,
    },
}

/// Where a clock reads physical time; a seam so tests can step time at will.
pub trait WallClock: Send + Sync {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
}

/// The operating system's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl WallClock for SystemClock {
    fn now_ms(&self) -> u64 {
        // A clock before 1970 reads as 0; the HLC stays monotonic regardless.
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

/// A hybrid logical clock for one producer of a region. Cheap to share
/// behind an `Arc`; every clock has its own producer id.
#[derive(Debug)]
pub struct HybridClock<C: WallClock = SystemClock> {
    origin: String,
    producer: u64,
    max_ahead_ms: u64,
    wall: C,
    /// Largest (wall_ms, logical) issued or seen.
    last: Mutex<(u64, u32)>,
}

impl HybridClock<SystemClock> {
    /// A clock on the system time with the default bound.
    pub fn system(origin: impl Into<String>) -> Self {
        Self::new(origin, SystemClock, DEFAULT_MAX_AHEAD_MS)
    }
}

impl<C: WallClock> HybridClock<C> {
    /// A clock with a random producer id, never 0.
    pub fn new(origin: impl Into<String>, wall: C, max_ahead_ms: u64) -> Self {
        let producer = loop {
            let id = rand::random::<u64>();
            if id != 0 {
                break id;
            }
        };
        Self {
            origin: origin.into(),
            producer,
            max_ahead_ms,
            wall,
            last: Mutex::new((0, 0)),
        }
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// This clock's producer id, the last tie-break of its timestamps.
    pub fn producer(&self) -> u64 {
        self.producer
    }

    /// A timestamp for a local event, later than every one issued or seen.
    pub fn now(&self) -> Result<Hlc, HlcError> {
        self.reserve(1)
    }

    /// The first of `n` timestamps on one wall tick, `first.nth(0)` to
    /// `first.nth(n - 1)`, all later than every one issued or seen; the
    /// clock moves past the last. A run stated by its first timestamp can
    /// be recorded, and the same events sent again with the same versions.
    pub fn reserve(&self, n: u32) -> Result<Hlc, HlcError> {
        let span = n.saturating_sub(1);
        let pt = self.wall.now_ms();
        let mut last = self.lock();
        let mut first = if pt > last.0 { (pt, 0) } else { bump(*last) };
        if first.1.checked_add(span).is_none() {
            first = (first.0 + 1, 0);
        }
        self.check_ahead(first.0, pt, "the wall clock stepped backwards")?;
        *last = (first.0, first.1 + span);
        Ok(Hlc::new(first.0, first.1, self.origin.clone()).of_producer(self.producer))
    }

    /// Merges a timestamp received from another region, so that every later
    /// local timestamp orders after it. Refuses timestamps too far ahead of
    /// this region's wall clock and leaves the clock untouched then.
    pub fn observe(&self, remote: &Hlc) -> Result<(), HlcError> {
        let pt = self.wall.now_ms();
        self.check_ahead(remote.wall_ms, pt, "a remote timestamp is in the future")?;
        let mut last = self.lock();
        if (remote.wall_ms, remote.logical) > *last {
            *last = (remote.wall_ms, remote.logical);
        }
        Ok(())
    }

    fn check_ahead(&self, wall_ms: u64, pt: u64, cause: &'static str) -> Result<(), HlcError> {
        let ahead_ms = wall_ms.saturating_sub(pt);
        if ahead_ms > self.max_ahead_ms {
            return Err(HlcError::TooFarAhead {
                origin: self.origin.clone(),
                ahead_ms,
                max_ahead_ms: self.max_ahead_ms,
                cause,
            });
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (u64, u32)> {
        // The guarded pair is always consistent, so a poisoned lock is safe to reuse.
        self.last.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The next timestamp after `last` on the same wall tick, carrying into the
/// next millisecond if the logical counter is exhausted.
fn bump((wall, logical): (u64, u32)) -> (u64, u32) {
    match logical.checked_add(1) {
        Some(l) => (wall, l),
        None => (wall + 1, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};

    #[test]
    fn versions_print_and_parse_back() {
        let v = Hlc::new(1_763_700_000_123, 4, "eu-west");
        assert_eq!(v.to_string(), "1763700000123.4@eu-west");
        assert_eq!(v.to_string().parse::<Hlc>().unwrap(), v);
        for producer in [1, 0x5eed, u64::MAX] {
            let v = v.clone().of_producer(producer);
            assert_eq!(v.to_string().parse::<Hlc>().unwrap(), v);
        }
        assert_eq!(
            v.clone().of_producer(0xab).to_string(),
            "1763700000123.4@eu-west/00000000000000ab"
        );
        for bad in [
            "",
            "12@x",
            "12.3",
            "12.3@",
            "a.3@x",
            "12.-1@x",
            "12.3@x/",
            "12.3@x/ab",
            "12.3@/00000000000000ab",
            "12.3@x/0000000000000zab",
        ] {
            assert!(
                bad.parse::<Hlc>().unwrap_err().contains("<wall_ms>"),
                "{bad}"
            );
        }
        // Found by fuzzing the ingest API: a base_version past an Avro long
        // was written as a negative wall clock no reader accepts.
        let last = format!("{}.0@x", i64::MAX);
        assert_eq!(last.parse::<Hlc>().unwrap().wall_ms, i64::MAX as u64);
        let past = format!("{}.0@x", i64::MAX as u64 + 1);
        assert!(
            past.parse::<Hlc>()
                .unwrap_err()
                .contains("largest timestamp"),
            "{past}"
        );
    }

    #[derive(Debug, Default)]
    struct ManualClock(AtomicU64);

    impl ManualClock {
        fn set(&self, ms: u64) {
            self.0.store(ms, AtomicOrdering::SeqCst);
        }
    }

    impl WallClock for &ManualClock {
        fn now_ms(&self) -> u64 {
            self.0.load(AtomicOrdering::SeqCst)
        }
    }

    #[test]
    fn follows_the_wall_clock_when_it_moves() {
        let wall = ManualClock::default();
        wall.set(1_000);
        let clock = HybridClock::new("us-east", &wall, 100);
        assert_eq!(
            clock.now().unwrap(),
            Hlc::new(1_000, 0, "us-east").of_producer(clock.producer())
        );
        assert_eq!(
            clock.now().unwrap(),
            Hlc::new(1_000, 1, "us-east").of_producer(clock.producer())
        );
        wall.set(1_005);
        assert_eq!(
            clock.now().unwrap(),
            Hlc::new(1_005, 0, "us-east").of_producer(clock.producer())
        );
    }

    #[test]
    fn stays_monotonic_when_the_wall_clock_steps_back_within_the_bound() {
        let wall = ManualClock::default();
        wall.set(10_000);
        let clock = HybridClock::new("us-east", &wall, 100);
        let before = clock.now().unwrap();
        wall.set(9_950);
        let after = clock.now().unwrap();
        assert!(after > before);
        assert_eq!(after.wall_ms, 10_000);
    }

    #[test]
    fn refuses_to_run_past_the_bound_after_a_large_step_back() {
        let wall = ManualClock::default();
        wall.set(10_000);
        let clock = HybridClock::new("us-east", &wall, 100);
        clock.now().unwrap();
        wall.set(5_000);
        let err = clock.now().unwrap_err();
        assert!(err.to_string().contains("5000 ms ahead"), "{err}");
        wall.set(10_001);
        assert_eq!(
            clock.now().unwrap(),
            Hlc::new(10_001, 0, "us-east").of_producer(clock.producer())
        );
    }

    #[test]
    fn observed_remote_timestamps_order_before_later_local_ones() {
        let wall = ManualClock::default();
        wall.set(1_000);
        let clock = HybridClock::new("eu-west", &wall, 100);
        let remote = Hlc::new(1_050, 7, "us-east");
        clock.observe(&remote).unwrap();
        let local = clock.now().unwrap();
        assert!(local > remote);
        assert_eq!((local.wall_ms, local.logical), (1_050, 8));
    }

    #[test]
    fn refuses_remote_timestamps_beyond_the_bound_and_keeps_its_state() {
        let wall = ManualClock::default();
        wall.set(1_000);
        let clock = HybridClock::new("eu-west", &wall, 100);
        let err = clock.observe(&Hlc::new(2_000, 0, "us-east")).unwrap_err();
        assert!(matches!(
            err,
            HlcError::TooFarAhead {
                ahead_ms: 1_000,
                ..
            }
        ));
        assert_eq!(
            clock.now().unwrap(),
            Hlc::new(1_000, 0, "eu-west").of_producer(clock.producer())
        );
    }

    /// Two producers of one region on the same wall clock mint the same
    /// `(wall_ms, logical)`; their versions still differ, and order.
    #[test]
    fn two_clocks_of_one_region_never_issue_the_same_version() {
        let wall = ManualClock::default();
        wall.set(1_000);
        let (a, b) = (
            HybridClock::new("us-east", &wall, 100),
            HybridClock::new("us-east", &wall, 100),
        );
        assert_ne!(a.producer(), b.producer());
        assert!(a.producer() != 0 && b.producer() != 0);
        for _ in 0..100 {
            let (x, y) = (a.now().unwrap(), b.now().unwrap());
            assert_eq!((x.wall_ms, x.logical), (y.wall_ms, y.logical));
            assert_ne!(x, y);
            assert_ne!(x.cmp(&y), Ordering::Equal);
        }
    }

    #[test]
    fn logical_overflow_carries_into_the_next_millisecond() {
        assert_eq!(bump((5, u32::MAX)), (6, 0));
    }

    #[test]
    fn a_reserved_run_is_contiguous_and_the_clock_moves_past_it() {
        let wall = ManualClock::default();
        wall.set(1_000);
        let clock = HybridClock::new("us-east", &wall, 100);
        let first = clock.reserve(3).unwrap();
        assert_eq!(
            first,
            Hlc::new(1_000, 0, "us-east").of_producer(clock.producer())
        );
        assert_eq!(first.nth(2).unwrap().logical, 2);
        assert_eq!(clock.now().unwrap().logical, 3);
        // A run that would pass the logical counter's end starts on the
        // next tick instead.
        clock
            .observe(&Hlc::new(1_000, u32::MAX - 1, "eu-west"))
            .unwrap();
        let run = clock.reserve(3).unwrap();
        assert_eq!((run.wall_ms, run.logical), (1_001, 0));
        assert_eq!(Hlc::new(1, u32::MAX, "x").nth(1), None);
    }

    #[test]
    fn origin_then_producer_break_ties() {
        let a = Hlc::new(5, 1, "eu-west");
        let b = Hlc::new(5, 1, "us-east");
        assert!(a < b);
        assert!(a.clone().of_producer(u64::MAX) < b);
        assert!(b.clone().of_producer(1) > b);
        assert!(Hlc::new(5, 2, "a") > b.clone().of_producer(u64::MAX));
        assert!(Hlc::new(5, 2, "a") > b);
        assert!(Hlc::new(6, 0, "a") > Hlc::new(5, 9, "z"));
    }

    proptest! {
        /// Whatever the wall clock does, every timestamp a clock issues (in
        /// runs of one to three) is strictly greater than the previous one
        /// and greater than every remote timestamp it accepted; refusals
        /// only happen past the bound.
        #[test]
        fn monotonic_under_random_clock_steps(
            steps in proptest::collection::vec((-500i64..500, any::<bool>(), 0u32..3, 1u32..4), 1..200)
        ) {
            let wall = ManualClock::default();
            let mut pt: i64 = 1_000_000;
            wall.set(pt as u64);
            let clock = HybridClock::new("r1", &wall, 300);
            let mut last: Option<Hlc> = None;
            for (step, remote, logical, run) in steps {
                pt = (pt + step).max(0);
                wall.set(pt as u64);
                if remote {
                    let r = Hlc::new((pt + step / 2).max(0) as u64, logical, "r2");
                    match clock.observe(&r) {
                        Ok(()) => last = last.max(Some(r)),
                        Err(HlcError::TooFarAhead { ahead_ms, .. }) => prop_assert!(ahead_ms > 300),
                    }
                }
                match clock.reserve(run) {
                    Ok(t) => {
                        if let Some(prev) = &last {
                            prop_assert!(&t > prev, "{t} after {prev}");
                        }
                        prop_assert!(t.wall_ms <= pt as u64 + 300);
                        last = t.nth(run - 1);
                    }
                    Err(HlcError::TooFarAhead { ahead_ms, .. }) => prop_assert!(ahead_ms > 300),
                }
            }
        }

        /// The order is total: exactly one of <, ==, > holds, consistently.
        #[test]
        fn order_is_total(
            a in (0u64..4, 0u32..4, "[ab]", 0u64..3), b in (0u64..4, 0u32..4, "[ab]", 0u64..3), c in (0u64..4, 0u32..4, "[ab]", 0u64..3)
        ) {
            let hlc = |(w, l, o, p): (u64, u32, String, u64)| Hlc::new(w, l, o).of_producer(p);
            let (a, b, c) = (hlc(a), hlc(b), hlc(c));
            prop_assert_eq!(a.cmp(&b), b.cmp(&a).reverse());
            prop_assert_eq!(a.cmp(&b) == Ordering::Equal, a == b);
            if a <= b && b <= c {
                prop_assert!(a <= c);
            }
        }
    }
}
