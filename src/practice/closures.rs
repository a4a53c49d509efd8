//! Closures entered on the staff page (docs/practice-tools.md §2.7): a sick day or a short
//! holiday without editing `practice.toml` or restarting.
//!
//! The store keeps them ([`Store::staff_closures`]); [`Calendar`] holds the configuration with
//! them merged into [`PracticeConfig::closures`], so every calendar question (opening hours,
//! slots, the agent's notice, emergency advice) sees them as it sees the configured ones. It is
//! reloaded after a change on this replica and every [`CLOSURES_RELOAD_INTERVAL`] (changes made
//! on another replica).

use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use jiff::Timestamp;
use jiff::civil::Date;

use super::calendar;
use super::config::{Closure, PracticeConfig};
use super::store::{StaffClosure, Store, StoreResult};

/// How often the driver reloads the staff closures: how late another replica's change reaches
/// this one's calls.
pub const CLOSURES_RELOAD_INTERVAL: Duration = Duration::from_secs(30);
/// Longest closure entered on the staff page, in days (longer ones belong in `practice.toml`,
/// with their covering practice).
pub const MAX_CLOSURE_DAYS: i64 = 42;
/// How far ahead a closure may start, in days.
pub const MAX_CLOSURE_AHEAD_DAYS: i64 = 400;

/// Why a closure from the staff page is refused (the page says it in German).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClosureError {
    /// The last day is before the first.
    EndsBeforeStart,
    /// The first day is in the past.
    InThePast,
    /// Longer than [`MAX_CLOSURE_DAYS`].
    TooLong,
    /// Starts more than [`MAX_CLOSURE_AHEAD_DAYS`] ahead.
    TooFarAhead,
}

impl ClosureError {
    /// The German message for staff.
    pub fn message(self) -> &'static str {
        match self {
            ClosureError::EndsBeforeStart => "Der letzte Tag liegt vor dem ersten.",
            ClosureError::InThePast => {
                "Schließungen können nur für heute oder spätere Tage eingetragen werden."
            }
            ClosureError::TooLong => {
                "Eine Schließung hier dauert höchstens 42 Tage; längere gehören in practice.toml."
            }
            ClosureError::TooFarAhead => "Der erste Tag liegt mehr als 400 Tage in der Zukunft.",
        }
    }
}

/// Checks a closure's days against `today` (local).
pub fn check(from: Date, to: Date, today: Date) -> Result<(), ClosureError> {
    if to < from {
        return Err(ClosureError::EndsBeforeStart);
    }
    if from < today {
        return Err(ClosureError::InThePast);
    }
    let days = |a: Date, b: Date| b.since(a).map_or(i64::MAX, |s| i64::from(s.get_days()));
    if days(from, to) >= MAX_CLOSURE_DAYS {
        return Err(ClosureError::TooLong);
    }
    if days(today, from) > MAX_CLOSURE_AHEAD_DAYS {
        return Err(ClosureError::TooFarAhead);
    }
    Ok(())
}

/// A staff closure as the calendar takes it: no covering practice of its own (the default
/// one, else 116 117, `calendar::emergency_advice`).
fn as_closure(c: &StaffClosure) -> Closure {
    Closure {
        from: c.from,
        to: c.to,
        reason: c.reason.label().to_owned(),
        covering: None,
        staff_closure_id: Some(c.id),
    }
}

/// The practice configuration with the staff closures merged in (see the module docs).
#[derive(Debug)]
pub struct Calendar {
    base: Arc<PracticeConfig>,
    current: RwLock<Arc<PracticeConfig>>,
    /// Held from a reload's read to its swap: reloads run on several store workers, and one
    /// that read before a change committed must not replace the one that read after it. A
    /// hanging database holds it up to one operation's timeout; the reloads behind it wait on
    /// their workers, as their own reads would.
    reloading: Mutex<()>,
}

impl Calendar {
    /// A calendar of `base` alone (until the first [`Calendar::reload`]).
    pub fn new(base: PracticeConfig) -> Calendar {
        let base = Arc::new(base);
        Calendar {
            current: RwLock::new(Arc::clone(&base)),
            base,
            reloading: Mutex::new(()),
        }
    }

    /// The configuration as of the last reload.
    pub fn current(&self) -> Arc<PracticeConfig> {
        let c = self.current.read().unwrap_or_else(|p| p.into_inner());
        Arc::clone(&c)
    }

    /// Reads the staff closures that end today or later and merges them into the
    /// configuration; on an error the previous one stays.
    pub fn reload(&self, store: &mut dyn Store, now: Timestamp) -> StoreResult<()> {
        let _one_at_a_time = self.reloading.lock().unwrap_or_else(|p| p.into_inner());
        let today = calendar::local(&self.base, now).date;
        let staff = store.staff_closures(today)?;
        let mut config = PracticeConfig::clone(&self.base);
        config.closures.extend(staff.iter().map(as_closure));
        let mut c = self.current.write().unwrap_or_else(|p| p.into_inner());
        *c = Arc::new(config);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Date {
        s.parse().unwrap()
    }

    #[test]
    fn closure_days_are_checked_against_today() {
        let today = d("2026-12-02");
        assert_eq!(check(today, today, today), Ok(()));
        assert_eq!(check(d("2026-12-03"), d("2027-01-13"), today), Ok(()));
        assert_eq!(
            check(d("2026-12-04"), d("2026-12-03"), today),
            Err(ClosureError::EndsBeforeStart)
        );
        assert_eq!(
            check(d("2026-12-01"), d("2026-12-03"), today),
            Err(ClosureError::InThePast)
        );
        // 42 days inclusive is the most.
        assert_eq!(
            check(d("2026-12-03"), d("2027-01-14"), today),
            Err(ClosureError::TooLong)
        );
        assert_eq!(check(d("2028-01-06"), d("2028-01-06"), today), Ok(()));
        assert_eq!(
            check(d("2028-01-07"), d("2028-01-07"), today),
            Err(ClosureError::TooFarAhead)
        );
        // The messages name the limits.
        let says = |e: ClosureError, n: i64| e.message().contains(&format!(" {n} Tage"));
        assert!(says(ClosureError::TooLong, MAX_CLOSURE_DAYS));
        assert!(says(ClosureError::TooFarAhead, MAX_CLOSURE_AHEAD_DAYS));
    }
}
