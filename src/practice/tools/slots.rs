//! `find_slots`, and the alternatives offered when a slot was just taken.

use jiff::civil::Date;

use super::context::{Ctx, Out, ts_of};
use super::error::ToolError;
use super::input::{FindSlotsInput, PartOfDay};
use super::outcome::{SlotView, SlotsFound, SlotsNote};
use crate::practice::calendar::{self, SlotCandidate};
use crate::practice::store::StoreResult;

/// Default search window of `find_slots`, in days.
pub const DEFAULT_SLOT_WINDOW_DAYS: i64 = 14;
/// Alternatives offered after `slot_taken`.
pub const ALTERNATIVES: usize = 3;
/// How far after a taken slot alternatives are searched, in days.
const ALTERNATIVES_WINDOW_DAYS: i64 = 7;
/// The earliest a slot is offered: this long from now. A slot starting in a minute cannot be
/// reached; offered, it would be booked and missed (practice-tools review).
pub const MIN_BOOKING_LEAD_SECS: i64 = 30 * 60;

impl Ctx<'_> {
    pub(super) fn find_slots(&mut self, i: FindSlotsInput) -> Out<SlotsFound> {
        let cfg = self.config;
        let Some(vt) = cfg.visit_type(&i.visit_type) else {
            return Err(ToolError::UnknownVisitType.into());
        };
        if !vt.phone_bookable {
            return Err(ToolError::NotPhoneBookable.into());
        }
        let today = calendar::local(cfg, self.now).date;
        let horizon = calendar::add_days(today, i64::from(cfg.booking_horizon_days));
        let (from, to) = if i.same_day {
            (today, today)
        } else {
            let from = i.earliest.filter(|d| *d > today).unwrap_or(today);
            let to = i
                .latest
                .unwrap_or_else(|| calendar::add_days(from, DEFAULT_SLOT_WINDOW_DAYS));
            (from, to.min(horizon))
        };
        let slots = if from <= to {
            let candidates = self.candidates(&i, from, to);
            self.store.free_slots(&candidates, i.limit)?
        } else {
            Vec::new()
        };
        let slots: Vec<SlotView> = slots.iter().map(|s| self.slot_view(s)).collect();
        let mut next_available = None;
        let mut note = None;
        if slots.is_empty() {
            if i.same_day {
                note = Some(SlotsNote::SameDayFull);
            } else {
                let after = calendar::next_day(to.max(from));
                if after <= horizon {
                    let candidates = self.candidates(&i, after, horizon);
                    if let Some(s) = self.store.free_slots(&candidates, 1)?.first() {
                        next_available = Some(self.slot_view(s));
                    }
                }
                if next_available.is_none() {
                    note = Some(SlotsNote::NothingFree);
                }
            }
        }
        Ok(SlotsFound {
            slots,
            next_available,
            note,
        })
    }

    /// The slot candidates of `[from, to]` that fit the search, after now.
    fn candidates(&self, i: &FindSlotsInput, from: Date, to: Date) -> Vec<SlotCandidate> {
        let cfg = self.config;
        let now = self.now.as_second();
        let any_weekday = !i.weekdays.iter().any(|d| *d);
        calendar::slot_candidates(cfg, from, to)
            .into_iter()
            .filter(|c| offerable(c, &i.visit_type, now))
            .filter(|c| i.practitioner.as_ref().is_none_or(|p| *p == c.practitioner))
            .filter(|c| {
                let l = calendar::local(cfg, ts_of(c.start));
                (any_weekday || i.weekdays[l.weekday])
                    && match i.part_of_day {
                        PartOfDay::Any => true,
                        PartOfDay::Morning => l.minute < 12 * 60,
                        PartOfDay::Afternoon => l.minute >= 12 * 60,
                    }
            })
            .collect()
    }

    /// Free slots of `visit_type` in the week from `from_secs`, to offer after `slot_taken`.
    pub(super) fn alternatives(
        &mut self,
        visit_type: &str,
        from_secs: i64,
    ) -> StoreResult<Vec<SlotView>> {
        let cfg = self.config;
        let start = calendar::local(cfg, ts_of(from_secs.max(self.now.as_second()))).date;
        let horizon = calendar::add_days(
            calendar::local(cfg, self.now).date,
            i64::from(cfg.booking_horizon_days),
        );
        let now = self.now.as_second();
        let end = calendar::add_days(start, ALTERNATIVES_WINDOW_DAYS).min(horizon);
        let cands: Vec<_> = calendar::slot_candidates(cfg, start, end)
            .into_iter()
            .filter(|c| offerable(c, visit_type, now))
            .collect();
        let slots = self.store.free_slots(&cands, ALTERNATIVES)?;
        Ok(slots.iter().map(|s| self.slot_view(s)).collect())
    }
}

/// Whether a candidate can be offered at `now` for `visit_type`: it takes that visit type
/// and starts at least [`MIN_BOOKING_LEAD_SECS`] ahead.
fn offerable(c: &SlotCandidate, visit_type: &str, now: i64) -> bool {
    c.start >= now + MIN_BOOKING_LEAD_SECS && c.visit_types.iter().any(|v| v == visit_type)
}
