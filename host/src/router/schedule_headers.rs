//! Reading a SEND's scheduling headers into a [`Schedule`], in the spellings of both peers:
//!
//! | header | peer | meaning |
//! |---|---|---|
//! | `AMQ_SCHEDULED_DELAY` | ActiveMQ | deliver this many ms from now |
//! | `x-delay` | RabbitMQ (delayed-message plugin) | the same |
//! | `AMQ_SCHEDULED_TIME`, `deliver-at`, `_AMQ_SCHED_DELIVERY` (Artemis) | | deliver at this unix time, in ms |
//! | `AMQ_SCHEDULED_PERIOD` | ActiveMQ | time between repeated deliveries, ms |
//! | `AMQ_SCHEDULED_REPEAT` | ActiveMQ | repeat N times: N + 1 deliveries in all |
//!
//! The first occurrence of a header counts (as for every STOMP header). An absolute time and a
//! delay together add up (the delay counts from that time). A negative delay, or a time in the
//! past, means now (RabbitMQ's plugin does the same). `AMQ_SCHEDULED_CRON` is refused rather
//! than ignored. The bounds come from `[schedule]` in the configuration.

use crate::codec::Header;
use crate::config::ScheduleConfig;

/// When a message is to be delivered, and how often.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// The first delivery (unix ms).
    pub deliver_at: u64,
    /// Time between deliveries, in ms (0 without repeats).
    pub period_ms: u64,
    /// Deliveries after the first.
    pub repeat: u32,
}

/// Why a SEND's scheduling headers were refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScheduleError {
    /// The header (named) does not hold a whole number; its value.
    #[error("header '{0}' must be a whole number of milliseconds, not '{1}'")]
    NotANumber(&'static str, String),
    /// The first delivery (or a repeat's period) is further ahead than `schedule.max_delay_ms`:
    /// the delay asked for and the limit.
    #[error("a delivery {0} ms ahead is beyond the limit of {1} ms (schedule.max_delay_ms)")]
    TooFar(u64, u64),
    /// `AMQ_SCHEDULED_REPEAT` without an `AMQ_SCHEDULED_PERIOD` of at least
    /// `schedule.min_period_ms`: the period given and the minimum.
    #[error("AMQ_SCHEDULED_REPEAT needs an AMQ_SCHEDULED_PERIOD of at least {1} ms (got {0})")]
    PeriodTooShort(u64, u64),
    /// `AMQ_SCHEDULED_REPEAT` is negative or above `schedule.max_repeat`: the value and the limit.
    #[error("AMQ_SCHEDULED_REPEAT must be between 0 and {1} (got {0})")]
    BadRepeat(i64, u32),
    /// Cron schedules are not supported.
    #[error("AMQ_SCHEDULED_CRON is not supported: use AMQ_SCHEDULED_DELAY, AMQ_SCHEDULED_PERIOD and AMQ_SCHEDULED_REPEAT")]
    Cron,
    /// The scheduler holds `schedule.max_messages` messages already (the limit).
    #[error("the scheduler holds the maximum of {0} scheduled messages")]
    Full(usize),
    /// The principal (named) has `schedule.max_per_principal` messages scheduled (the limit).
    #[error("'{0}' has the maximum of {1} scheduled messages")]
    PrincipalFull(String, usize),
}

/// The headers read, before they are checked against the configuration.
#[derive(Debug, Default)]
struct Asked {
    delay: Option<i64>,
    at: Option<i64>,
    period: Option<i64>,
    repeat: Option<i64>,
}

/// A header's value as a whole number (spaces around it allowed, as Java's clients write them).
fn number(name: &'static str, value: &[u8]) -> Result<i64, ScheduleError> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .ok_or_else(|| ScheduleError::NotANumber(name, crate::text::shown(value)))
}

impl Schedule {
    /// The schedule `headers` ask for, or `None` when they ask for none (or for a single
    /// delivery that is due already: the message is published as usual). The clock is read
    /// only when a scheduling header is there.
    pub fn from_headers(
        headers: &[Header],
        config: &ScheduleConfig,
    ) -> Result<Option<Schedule>, ScheduleError> {
        // The clock is read only for a SEND that asks for a schedule.
        match Asked::read(headers)? {
            Some(asked) => asked.check(super::message::now_ms(), config),
            None => Ok(None),
        }
    }

    /// [`Schedule::from_headers`] at `now` (unix ms).
    pub fn from_headers_at(
        headers: &[Header],
        now: u64,
        config: &ScheduleConfig,
    ) -> Result<Option<Schedule>, ScheduleError> {
        match Asked::read(headers)? {
            Some(asked) => asked.check(now, config),
            None => Ok(None),
        }
    }
}

impl Asked {
    /// The scheduling headers present, if any.
    fn read(headers: &[Header]) -> Result<Option<Asked>, ScheduleError> {
        let mut asked = Asked::default();
        for (name, value) in headers {
            // Cheap rejection of every other header: all of ours start with one of these.
            if !matches!(name.first(), Some(b'A' | b'x' | b'd' | b'_')) {
                continue;
            }
            let (slot, spelled) = match name.as_ref() {
                b"AMQ_SCHEDULED_DELAY" => (&mut asked.delay, "AMQ_SCHEDULED_DELAY"),
                b"x-delay" => (&mut asked.delay, "x-delay"),
                b"AMQ_SCHEDULED_TIME" => (&mut asked.at, "AMQ_SCHEDULED_TIME"),
                b"deliver-at" => (&mut asked.at, "deliver-at"),
                b"_AMQ_SCHED_DELIVERY" => (&mut asked.at, "_AMQ_SCHED_DELIVERY"),
                b"AMQ_SCHEDULED_PERIOD" => (&mut asked.period, "AMQ_SCHEDULED_PERIOD"),
                b"AMQ_SCHEDULED_REPEAT" => (&mut asked.repeat, "AMQ_SCHEDULED_REPEAT"),
                b"AMQ_SCHEDULED_CRON" => return Err(ScheduleError::Cron),
                _ => continue,
            };
            if slot.is_none() {
                *slot = Some(number(spelled, value)?);
            }
        }
        if asked.delay.is_none() && asked.at.is_none() && asked.repeat.is_none() {
            return Ok(None);
        }
        Ok(Some(asked))
    }

    fn check(self, now: u64, config: &ScheduleConfig) -> Result<Option<Schedule>, ScheduleError> {
        let start = self.at.map_or(now, |at| at.max(0) as u64);
        let deliver_at = start.saturating_add(self.delay.unwrap_or(0).max(0) as u64);
        let ahead = deliver_at.saturating_sub(now);
        if ahead > config.max_delay_ms {
            return Err(ScheduleError::TooFar(ahead, config.max_delay_ms));
        }
        let repeat = self.repeat.unwrap_or(0);
        if repeat < 0 || repeat > i64::from(config.max_repeat) {
            return Err(ScheduleError::BadRepeat(repeat, config.max_repeat));
        }
        let period = self.period.unwrap_or(0).max(0) as u64;
        if repeat > 0 && period < config.min_period_ms {
            return Err(ScheduleError::PeriodTooShort(period, config.min_period_ms));
        }
        // Each repeat is that far ahead of the one before: the same bound as the first.
        if repeat > 0 && period > config.max_delay_ms {
            return Err(ScheduleError::TooFar(period, config.max_delay_ms));
        }
        if repeat == 0 && ahead == 0 {
            return Ok(None);
        }
        Ok(Some(Schedule {
            deliver_at,
            period_ms: if repeat > 0 { period } else { 0 },
            repeat: repeat as u32,
        }))
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    const NOW: u64 = 1_000_000;

    fn read(headers: &[(&str, &str)]) -> Result<Option<Schedule>, ScheduleError> {
        let headers: Vec<Header> = headers
            .iter()
            .map(|(n, v)| (Bytes::from(n.to_string()), Bytes::from(v.to_string())))
            .collect();
        Schedule::from_headers_at(&headers, NOW, &ScheduleConfig::default())
    }

    fn at(deliver_at: u64) -> Option<Schedule> {
        Some(Schedule {
            deliver_at,
            period_ms: 0,
            repeat: 0,
        })
    }

    #[test]
    fn every_spelling_is_read() {
        assert_eq!(read(&[("AMQ_SCHEDULED_DELAY", "500")]), Ok(at(NOW + 500)));
        assert_eq!(read(&[("x-delay", " 700 ")]), Ok(at(NOW + 700)));
        assert_eq!(
            read(&[("AMQ_SCHEDULED_TIME", "1002000")]),
            Ok(at(NOW + 2000))
        );
        assert_eq!(read(&[("deliver-at", "1003000")]), Ok(at(NOW + 3000)));
        assert_eq!(
            read(&[("_AMQ_SCHED_DELIVERY", "1004000")]),
            Ok(at(NOW + 4000))
        );
        assert_eq!(
            read(&[
                ("AMQ_SCHEDULED_DELAY", "10"),
                ("AMQ_SCHEDULED_PERIOD", "1000"),
                ("AMQ_SCHEDULED_REPEAT", "3"),
            ]),
            Ok(Some(Schedule {
                deliver_at: NOW + 10,
                period_ms: 1000,
                repeat: 3
            }))
        );
    }

    #[test]
    fn no_schedule_or_due_now_is_none() {
        assert_eq!(read(&[("persistent", "true")]), Ok(None));
        assert_eq!(read(&[("x-delay", "0")]), Ok(None));
        assert_eq!(read(&[("x-delay", "-5000")]), Ok(None));
        assert_eq!(read(&[("deliver-at", "5")]), Ok(None));
        assert_eq!(read(&[("AMQ_SCHEDULED_PERIOD", "1000")]), Ok(None));
    }

    #[test]
    fn first_occurrence_wins_and_time_plus_delay_add_up() {
        assert_eq!(
            read(&[("x-delay", "100"), ("x-delay", "junk")]),
            Ok(at(NOW + 100))
        );
        assert_eq!(
            read(&[("deliver-at", "1001000"), ("AMQ_SCHEDULED_DELAY", "50")]),
            Ok(at(NOW + 1050))
        );
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(matches!(
            read(&[("x-delay", "soon")]),
            Err(ScheduleError::NotANumber("x-delay", _))
        ));
        assert!(matches!(
            read(&[("AMQ_SCHEDULED_DELAY", "99999999999999999999999")]),
            Err(ScheduleError::NotANumber(..))
        ));
        let max = ScheduleConfig::default().max_delay_ms;
        assert_eq!(
            read(&[("x-delay", &(max + 1).to_string())]),
            Err(ScheduleError::TooFar(max + 1, max))
        );
        assert_eq!(
            read(&[
                ("AMQ_SCHEDULED_REPEAT", "2"),
                ("AMQ_SCHEDULED_PERIOD", "4611686018427387904")
            ]),
            Err(ScheduleError::TooFar(1 << 62, max))
        );
        assert_eq!(
            read(&[("AMQ_SCHEDULED_REPEAT", "2")]),
            Err(ScheduleError::PeriodTooShort(0, 100))
        );
        assert_eq!(
            read(&[
                ("AMQ_SCHEDULED_REPEAT", "-1"),
                ("AMQ_SCHEDULED_PERIOD", "1000")
            ]),
            Err(ScheduleError::BadRepeat(-1, 10_000))
        );
        assert_eq!(
            read(&[("AMQ_SCHEDULED_CRON", "* * * * *")]),
            Err(ScheduleError::Cron)
        );
    }
}
