//! How busy the other keys are ([`Crowd`]): the factor a key's expectation is scaled by, so that
//! a key doing what everyone does (a daily peak, a burst of the traffic's own rhythm) is not its
//! own incident. Counted per minute from the keys the engine tracks, each capped, against their
//! usual for the hour ([`UsualByHour`]) and against what they sent half an hour to an hour ago
//! ([`CrowdMarks`]).

use tripline_core::models::seasonal::{hour_of_week, Seasonal};
use tripline_core::models::spend::SpendParams;

use super::{rhythm, REFERENCE_WINDOWS};
use crate::data::KeyMinute;
use crate::engine::{CycleData, Engine, FxMap, KeyState};

/// How busy the other keys are, minute by minute, against their usual: the factor a key's
/// expectation is scaled by (never below 1, so a quiet crowd does not make anyone suspect).
///
/// Each tracked key counts for its billable requests, at most three times its usual plus
/// three: a key under an incident of its own does not make the crowd look busy, nor do ids the
/// engine has never accepted. The key judged is left out of its
/// own crowd. With fewer than [`Crowd::MIN_USUAL`] usual requests a minute among the others
/// there is no crowd to speak of, and the factor is 1.
pub(in crate::engine) struct Crowd {
    /// Per minute: the others' capped requests so far, and the share of the minute elapsed.
    minutes: FxMap<u32, (f64, f64)>,
    /// Every tracked key's usual requests per minute in each hour of the day, summed
    /// ([`UsualByHour`]).
    usual: UsualByHour,
    /// What every tracked key sent half an hour to an hour ago ([`CrowdMarks`]).
    reference: f64,
}

/// What every tracked key sent a minute (capped as the crowd counts), on average over each
/// half hour: the crowd's own reference, taken as a key's [`Reference`] is. A rise of
/// everyone's traffic over the last hour (a daily peak building) is a rise against it, however
/// much of it the keys' usuals have learnt meanwhile.
#[derive(Debug, Clone, Copy, Default)]
pub(in crate::engine) struct CrowdMarks {
    marks: [f64; 2],
    block: u32,
    sum: f64,
    minutes: u32,
}

impl CrowdMarks {
    const BLOCK_S: u32 = REFERENCE_WINDOWS as u32 * 60;

    /// Adds a folded minute's total; a minute of a new half hour closes the last one's mark.
    pub(in crate::engine) fn observe(&mut self, minute: u32, total: f64) {
        let block = minute / Self::BLOCK_S;
        if block != self.block {
            if self.minutes > 0 {
                self.marks = [self.marks[1], self.sum / f64::from(self.minutes)];
            }
            (self.block, self.sum, self.minutes) = (block, 0.0, 0);
        }
        self.sum += total;
        self.minutes += 1;
    }

    /// The older of the last two marks: half an hour to an hour ago.
    fn reference(&self) -> f64 {
        self.marks[0]
    }
}

/// How busy the other keys are in a minute (never below 1): against their usual, and against
/// their reference, which a rise of everyone's traffic over the last hour (a daily peak
/// building) has not taught. A key is judged against its usual times the first, and against
/// its [`Reference`] times the second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Crowding {
    pub usual: f64,
    pub reference: f64,
}

impl Crowding {
    /// A key judged alone (the console's chart of one key).
    pub const ALONE: Crowding = Crowding {
        usual: 1.0,
        reference: 1.0,
    };
}

/// Every tracked key's usual requests a minute, its daily rhythm included, summed for each of
/// the 24 hours after the last fold (indexed by hour of the day). The crowd is judged against
/// what it usually does at that hour: at an hour when most keys sleep, the others' usual
/// without their rhythm would be far above what they send, and a crowd at twice its usual
/// for the hour (a daily peak) would look quiet.
#[derive(Debug, Clone, Copy, Default)]
pub(in crate::engine) struct UsualByHour([f64; 24]);

impl UsualByHour {
    /// Adds a key with `usual` deseasonalised requests a minute and hour-of-day factors
    /// `season`, for the 24 hours from `from_s`.
    pub(in crate::engine) fn add(
        &mut self,
        usual: f64,
        season: Option<&Seasonal>,
        params: &SpendParams,
        from_s: u32,
    ) {
        if season.is_none() {
            self.0.iter_mut().for_each(|total| *total += usual);
            return;
        }
        for hour in 0..24u32 {
            let at = from_s + hour * 3600;
            let how = hour_of_week(i64::from(at) * 1000);
            self.0[(at / 3600 % 24) as usize] += usual * rhythm(season, params, how);
        }
    }

    fn at(&self, minute: u32) -> f64 {
        self.0[(minute / 3600 % 24) as usize]
    }
}

impl Crowd {
    const MIN_USUAL: f64 = 10.0;

    /// The crowd over `data`'s minutes from `from`, as of `now_s` (a minute still open counts
    /// for the share of it elapsed), against every key's usual as of the last fold. Empty (a
    /// factor of 1) when the sustained rule is off.
    pub(in crate::engine) fn new(
        engine: &Engine,
        data: &CycleData,
        known: &[Option<&KeyState>],
        from: u32,
        now_s: u32,
    ) -> Crowd {
        let mut minutes: FxMap<u32, (f64, f64)> = FxMap::default();
        if !engine.config.spend_spike.sustained.enabled {
            return Crowd {
                minutes,
                usual: UsualByHour::default(),
                reference: 0.0,
            };
        }
        // Ids the engine does not track yet add nothing: a spray of new (or refused) ids must
        // not make the crowd look busy and hide every key's rise.
        for (row, state) in Engine::unfolded(data, known, from) {
            let usual = state.usual_requests_at(&engine.spend_params, row.minute);
            let elapsed = elapsed_share(row.minute, now_s);
            let entry = minutes.entry(row.minute).or_insert((0.0, elapsed));
            entry.0 += capped(billable(row), usual);
        }
        Crowd {
            minutes,
            usual: engine.usual_requests,
            reference: engine.crowd_marks.reference(),
        }
    }

    /// The factors for a key that made `requests` in `minute`, against its `usual` for that
    /// minute's hour and the requests a minute of its `reference`.
    pub(in crate::engine) fn factors(
        &self,
        minute: u32,
        requests: u64,
        usual: f64,
        reference: f64,
    ) -> Crowding {
        let Some(&(capped_all, elapsed)) = self.minutes.get(&minute) else {
            return Crowding::ALONE;
        };
        let others = (capped_all - capped(requests, usual)).max(0.0) / elapsed;
        let against = |others_usual: f64| {
            if others_usual < Self::MIN_USUAL {
                1.0
            } else {
                (others / others_usual).max(1.0)
            }
        };
        Crowding {
            usual: against(self.usual.at(minute) - usual),
            reference: against(self.reference - reference),
        }
    }
}

/// The share of `minute` elapsed at `now_s` (1 once it has ended; at least 0.05, so that the
/// first seconds of a minute are not divided by nothing).
pub(in crate::engine) fn elapsed_share(minute: u32, now_s: u32) -> f64 {
    (f64::from(now_s.saturating_sub(minute)) / 60.0).clamp(0.05, 1.0)
}

/// A key's requests as the crowd counts them: at most three times its usual, plus three.
pub(in crate::engine) fn capped(requests: u64, usual: f64) -> f64 {
    (requests as f64).min(3.0 * usual + 3.0)
}

/// A minute's requests that were answered (no error of any kind): the ones a bill counts. A
/// key retrying 429s, or refused with a 401, sends more requests but not more billable ones.
pub(in crate::engine) fn billable(row: &KeyMinute) -> u64 {
    row.requests.saturating_sub(row.failures)
}
