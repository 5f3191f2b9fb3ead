//! When each group of targets is synced, and the task that drives it.
//!
//! A schedule is either a fixed interval (`every 5m`) or a cron expression
//! with 5 fields (minute precision) or 6 fields (seconds first), evaluated in
//! an IANA time zone.
//!
//! This module deliberately does not use `tokio-cron-scheduler`: it rejects
//! 5-field expressions, ANDs day-of-month with day-of-week instead of
//! following Vixie cron, fixes a zone's UTC offset once so named-zone jobs
//! drift by an hour after a DST change, lets runs of one job overlap, and
//! repeated jobs can stop firing under load. Instead, `croner` computes the
//! occurrences (DST-correct through `chrono-tz`), and [`run_schedule`] is one
//! plain task per schedule that sleeps until the next occurrence and runs the
//! pass inline. Running inline means a pass can never overlap itself, and
//! computing the next occurrence only after a pass ends coalesces every tick
//! that was missed while it ran.
//!
//! A fleet whose hosts share a schedule would hit the server all at the same
//! moments. The splay spreads them: each host delays every scheduled tick by
//! a fixed offset in `[0, splay)` ([`splay_offset`]), derived from its
//! `/etc/machine-id` ([`host_identity`]), so the offset is the same on every
//! tick and after every restart, and a fleet spreads evenly over the splay.
//! Nothing here knows about the first pass at start-up or passes after a
//! config reload: the daemon runs those itself, undelayed.

use std::fmt;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::errors::CronError;
use croner::parser::{CronParser, Seconds, Year};
use tokio::sync::watch;

/// Shortest interval accepted from configuration. Anything faster would
/// hammer the passbolt server for no benefit.
pub const MIN_CONFIG_INTERVAL: Duration = Duration::from_secs(1);

/// Longest splay accepted from configuration. A day is more than any
/// schedule needs to spread a fleet; a larger value is more likely a typo.
pub const MAX_SPLAY: Duration = Duration::from_secs(24 * 60 * 60);

/// Where [`host_identity`] reads the host's id first (see machine-id(5)).
pub const MACHINE_ID_PATH: &str = "/etc/machine-id";

/// Longest single sleep of the driver. Tokio's timers run on the monotonic
/// clock, which stands still while the machine is suspended and ignores
/// wall-clock steps; waking at least this often lets the driver notice both
/// and fire (once) close to the wall-clock time that was due.
const MAX_SLEEP: Duration = Duration::from_secs(30);

/// How far the wall clock may appear to go backwards before the driver
/// treats it as a clock step and recomputes the next occurrence.
const CLOCK_STEP_TOLERANCE: TimeDelta = TimeDelta::seconds(1);

const NICKNAMES: &[(&str, &str)] = &[
    ("@yearly", "0 0 1 1 *"),
    ("@annually", "0 0 1 1 *"),
    ("@monthly", "0 0 1 * *"),
    ("@weekly", "0 0 * * 0"),
    ("@daily", "0 0 * * *"),
    ("@midnight", "0 0 * * *"),
    ("@hourly", "0 * * * *"),
];

const MONTH_NAMES: &[&str] = &[
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const WEEKDAY_NAMES: &[&str] = &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// One cron field: its name in error messages and what it accepts.
struct FieldSpec {
    name: &'static str,
    allowed: &'static str,
}

const SECOND: FieldSpec = FieldSpec {
    name: "second",
    allowed: "0-59",
};
const MINUTE: FieldSpec = FieldSpec {
    name: "minute",
    allowed: "0-59",
};
const HOUR: FieldSpec = FieldSpec {
    name: "hour",
    allowed: "0-23",
};
const DAY_OF_MONTH: FieldSpec = FieldSpec {
    name: "day-of-month",
    allowed: "1-31, L, nW",
};
const MONTH: FieldSpec = FieldSpec {
    name: "month",
    allowed: "1-12 or JAN-DEC",
};
const DAY_OF_WEEK: FieldSpec = FieldSpec {
    name: "day-of-week",
    allowed: "0-7 or SUN-SAT, 0 and 7 both Sunday, n#k, nL",
};
const SIX_FIELDS: [&FieldSpec; 6] = [&SECOND, &MINUTE, &HOUR, &DAY_OF_MONTH, &MONTH, &DAY_OF_WEEK];

/// Why a schedule expression was rejected. Every variant quotes the
/// expression so a config error can be traced to its line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ScheduleError {
    #[error("empty schedule expression")]
    Empty,

    #[error("schedule {expr:?}: missing duration after \"every\" (for example \"every 5m\")")]
    MissingInterval { expr: String },

    #[error("schedule {expr:?}: invalid duration {duration:?}: {reason}")]
    InvalidInterval {
        expr: String,
        duration: String,
        reason: String,
    },

    #[error("schedule {expr:?}: interval must be at least {min}", min = humantime::format_duration(*.min))]
    IntervalTooShort { expr: String, min: Duration },

    #[error("schedule interval must not be zero")]
    ZeroInterval,

    #[error(
        "cron expression {expr:?} has {found} field(s); expected 5 \
         (minute hour day-of-month month day-of-week) or 6 (second first)"
    )]
    FieldCount { expr: String, found: usize },

    #[error(
        "{expr:?} is neither `every <duration>` (e.g. every 5m, every 1h 30m) \
         nor a cron expression (5 fields, e.g. \"*/15 * * * *\", or 6 with seconds first)"
    )]
    NotASchedule { expr: String },

    #[error(
        "cron expression {expr:?}: unknown nickname {nickname:?}; supported are \
         @yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly"
    )]
    UnknownNickname { expr: String, nickname: String },

    #[error(
        "cron expression {expr:?}: invalid {field} field {value:?} ({reason}; allowed: {allowed})"
    )]
    InvalidField {
        expr: String,
        field: &'static str,
        value: String,
        reason: String,
        allowed: &'static str,
    },

    #[error("cron expression {expr:?}: {reason}")]
    InvalidCron { expr: String, reason: String },

    #[error("cron expression {expr:?} never matches any date in time zone {tz}")]
    NeverFires { expr: String, tz: String },

    #[error(
        "schedule {expr:?}: unknown time zone {tz:?}; expected an IANA name such as \
         \"Europe/Berlin\" or \"UTC\""
    )]
    UnknownTimeZone { expr: String, tz: String },
}

/// A parsed schedule. Compare or hash it (or its [`key`](Self::key)) to group
/// targets that share one; two spellings of the same schedule (`every 90s`
/// and `every 1m 30s`, `0 * * * MON` and `0 0 * * * 1`) are equal.
#[derive(Debug, Clone)]
pub struct Schedule {
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    Every(Duration),
    Cron {
        /// Canonical expression, see [`canonical_cron`].
        expr: String,
        cron: Box<Cron>,
        tz: Tz,
    },
}

impl Schedule {
    /// Parses `every <duration>` (humantime syntax, at least
    /// [`MIN_CONFIG_INTERVAL`]) or a 5/6-field cron expression, evaluated in
    /// `timezone` (an IANA name; UTC when `None`).
    ///
    /// Day-of-month and day-of-week follow Vixie cron: when both are
    /// restricted a day matching either one fires; when either field starts
    /// with `*` (including steps such as `*/2`) both must match.
    pub fn parse(expr: &str, timezone: Option<&str>) -> Result<Schedule, ScheduleError> {
        let trimmed = expr.trim();
        if trimmed.is_empty() {
            return Err(ScheduleError::Empty);
        }
        let tz = parse_tz(trimmed, timezone)?;
        if let Some(rest) = strip_every(trimmed) {
            return parse_every(trimmed, rest);
        }
        parse_cron(trimmed, tz)
    }

    /// A fixed interval set from code rather than configuration. Any non-zero
    /// duration is accepted; the one-second floor applies only to
    /// [`parse`](Self::parse).
    pub fn every(interval: Duration) -> Result<Schedule, ScheduleError> {
        if interval.is_zero() {
            return Err(ScheduleError::ZeroInterval);
        }
        Ok(Schedule {
            kind: Kind::Every(interval),
        })
    }

    /// The first occurrence strictly after `after`. For an interval that is
    /// simply `after + interval`: pass the start of the previous run.
    /// `None` only when the result is beyond what the date types can hold.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match &self.kind {
            Kind::Every(interval) => after.checked_add_signed(TimeDelta::from_std(*interval).ok()?),
            Kind::Cron { cron, tz, .. } => cron
                .find_next_occurrence(&after.with_timezone(tz), false)
                .ok()
                .map(|next| next.with_timezone(&Utc)),
        }
    }

    /// The interval of an `every` schedule.
    pub fn interval(&self) -> Option<Duration> {
        match &self.kind {
            Kind::Every(interval) => Some(*interval),
            Kind::Cron { .. } => None,
        }
    }

    /// The time zone a cron schedule is evaluated in.
    pub fn timezone(&self) -> Option<Tz> {
        match &self.kind {
            Kind::Every(_) => None,
            Kind::Cron { tz, .. } => Some(*tz),
        }
    }

    /// Canonical form, equal for equivalent spellings; same as `to_string()`.
    pub fn key(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Every(interval) => write!(f, "every {}", humantime::format_duration(*interval)),
            Kind::Cron { expr, tz, .. } => write!(f, "{expr} ({})", tz.name()),
        }
    }
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        match (&self.kind, &other.kind) {
            (Kind::Every(a), Kind::Every(b)) => a == b,
            (
                Kind::Cron {
                    expr: a, tz: a_tz, ..
                },
                Kind::Cron {
                    expr: b, tz: b_tz, ..
                },
            ) => a == b && a_tz == b_tz,
            _ => false,
        }
    }
}

impl Eq for Schedule {}

impl Hash for Schedule {
    fn hash<H: Hasher>(&self, state: &mut H) {
        match &self.kind {
            Kind::Every(interval) => {
                0u8.hash(state);
                interval.hash(state);
            }
            Kind::Cron { expr, tz, .. } => {
                1u8.hash(state);
                expr.hash(state);
                tz.name().hash(state);
            }
        }
    }
}

fn parse_tz(expr: &str, timezone: Option<&str>) -> Result<Tz, ScheduleError> {
    match timezone.map(str::trim) {
        None => Ok(Tz::UTC),
        Some(name) => name
            .parse::<Tz>()
            .map_err(|_| ScheduleError::UnknownTimeZone {
                expr: expr.to_owned(),
                tz: name.to_owned(),
            }),
    }
}

/// Returns the text after a leading `every` keyword, if there is one.
fn strip_every(expr: &str) -> Option<&str> {
    let head = expr.get(..5)?;
    if !head.eq_ignore_ascii_case("every") {
        return None;
    }
    let rest = &expr[5..];
    if rest.is_empty() || rest.starts_with(char::is_whitespace) {
        Some(rest.trim())
    } else {
        None
    }
}

fn parse_every(expr: &str, duration: &str) -> Result<Schedule, ScheduleError> {
    if duration.is_empty() {
        return Err(ScheduleError::MissingInterval {
            expr: expr.to_owned(),
        });
    }
    let interval =
        humantime::parse_duration(duration).map_err(|err| ScheduleError::InvalidInterval {
            expr: expr.to_owned(),
            duration: duration.to_owned(),
            reason: err.to_string(),
        })?;
    if interval < MIN_CONFIG_INTERVAL {
        return Err(ScheduleError::IntervalTooShort {
            expr: expr.to_owned(),
            min: MIN_CONFIG_INTERVAL,
        });
    }
    Ok(Schedule {
        kind: Kind::Every(interval),
    })
}

fn parse_cron(expr: &str, tz: Tz) -> Result<Schedule, ScheduleError> {
    let expanded = if expr.starts_with('@') {
        let nickname = expr.to_ascii_lowercase();
        NICKNAMES
            .iter()
            .find(|(name, _)| *name == nickname)
            .map(|(_, fields)| *fields)
            .ok_or_else(|| ScheduleError::UnknownNickname {
                expr: expr.to_owned(),
                nickname: expr.to_owned(),
            })?
    } else {
        expr
    };

    let fields: Vec<&str> = expanded.split_whitespace().collect();
    // croner itself would also take a 7th (year) field; configs written for
    // other cron implementations should fail loudly instead.
    // A word where a cron field would start is a misspelt `every`, not a
    // cron expression with the wrong number of fields.
    if !(5..=6).contains(&fields.len())
        && fields
            .first()
            .is_some_and(|f| f.starts_with(|c: char| c.is_ascii_alphabetic()))
    {
        return Err(ScheduleError::NotASchedule {
            expr: expr.to_owned(),
        });
    }
    if !(5..=6).contains(&fields.len()) {
        return Err(ScheduleError::FieldCount {
            expr: expr.to_owned(),
            found: fields.len(),
        });
    }
    let specs = &SIX_FIELDS[6 - fields.len()..];

    check_names(expr, &fields, specs)?;

    let parser = parser_for(&fields);
    let cron = parser
        .parse(&fields.join(" "))
        .map_err(|err| attribute_error(expr, &fields, specs, err))?;

    // A pattern like `0 0 30 2 *` parses but can never fire; catching it here
    // turns a silently idle target into a config error.
    let probe = Utc::now().with_timezone(&tz);
    match cron.find_next_occurrence(&probe, false) {
        Ok(_) => {}
        Err(CronError::TimeSearchLimitExceeded) => {
            return Err(ScheduleError::NeverFires {
                expr: expr.to_owned(),
                tz: tz.name().to_owned(),
            });
        }
        Err(err) => {
            return Err(ScheduleError::InvalidCron {
                expr: expr.to_owned(),
                reason: cron_reason(&err),
            });
        }
    }

    Ok(Schedule {
        kind: Kind::Cron {
            expr: canonical_cron(&cron),
            cron: Box::new(cron),
            tz,
        },
    })
}

/// Vixie cron decides between OR and AND by the first character of the
/// day fields: a field starting with `*` counts as unrestricted even when it
/// is a step like `*/2`, and then both fields must match. croner only treats
/// a bare `*` that way, so the AND mode is requested explicitly for steps.
fn parser_for(fields: &[&str]) -> CronParser {
    let n = fields.len();
    let starred = |f: &str| f.starts_with('*') || f.starts_with('?');
    let bare = |f: &str| f == "*" || f == "?";
    let (dom, dow) = (fields[n - 3], fields[n - 1]);
    let vixie_and = (starred(dom) && !bare(dom)) || (starred(dow) && !bare(dow));
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .dom_and_dow(vixie_and)
        .build()
}

/// croner substitutes month and weekday names anywhere in the pattern, so
/// `* * * * JAN` would silently mean Monday. Names are only accepted in
/// their own field.
fn check_names(expr: &str, fields: &[&str], specs: &[&FieldSpec]) -> Result<(), ScheduleError> {
    for (field, spec) in fields.iter().zip(specs) {
        let upper = field.to_ascii_uppercase();
        let foreign: &[&str] = match spec.name {
            "month" => WEEKDAY_NAMES,
            "day-of-week" => MONTH_NAMES,
            _ => continue,
        };
        if let Some(name) = foreign.iter().find(|name| upper.contains(**name)) {
            return Err(ScheduleError::InvalidField {
                expr: expr.to_owned(),
                field: spec.name,
                value: (*field).to_owned(),
                reason: format!("{name} is not a {} name", spec.name),
                allowed: spec.allowed,
            });
        }
    }
    Ok(())
}

/// croner's errors do not say which field is wrong. Re-parsing each field
/// alone (all others `*`) finds the culprit; parsing happens once per config
/// load, so the extra work is irrelevant.
fn attribute_error(
    expr: &str,
    fields: &[&str],
    specs: &[&FieldSpec],
    err: CronError,
) -> ScheduleError {
    let offset = 6 - fields.len();
    for (i, (field, spec)) in fields.iter().zip(specs).enumerate() {
        let mut probe = ["*"; 6];
        probe[offset + i] = field;
        let probe_fields = &probe[offset..];
        if let Err(field_err) = parser_for(probe_fields).parse(&probe_fields.join(" ")) {
            return ScheduleError::InvalidField {
                expr: expr.to_owned(),
                field: spec.name,
                value: (*field).to_owned(),
                reason: cron_reason(&field_err),
                allowed: spec.allowed,
            };
        }
    }
    ScheduleError::InvalidCron {
        expr: expr.to_owned(),
        reason: cron_reason(&err),
    }
}

/// croner's message without its own prefix and trailing period, so it reads
/// as a clause inside ours.
fn cron_reason(err: &CronError) -> String {
    let raw = match err {
        CronError::InvalidPattern(msg)
        | CronError::IllegalCharacters(msg)
        | CronError::ComponentError(msg) => msg.clone(),
        other => other.to_string(),
    };
    let trimmed = raw.trim().trim_end_matches('.');
    let mut chars = trimmed.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// croner's normalised pattern (upper case, names replaced by numbers,
/// nicknames expanded) with single spaces, and a zero seconds field dropped
/// so that `0 */5 * * * *` and `*/5 * * * *` compare equal.
fn canonical_cron(cron: &Cron) -> String {
    let mut fields: Vec<&str> = cron.as_str().split_whitespace().collect();
    if fields.len() == 6 && fields[0] == "0" {
        fields.remove(0);
    }
    fields.join(" ")
}

/// The fixed delay of this host's scheduled ticks: `host_id` hashed and
/// mapped evenly onto `[0, splay)`. Zero when `splay` is zero.
///
/// The hash is FNV-1a (64 bit) followed by the SplitMix64 finalizer, written
/// out here because one id must get one offset on every build, Rust version
/// and architecture, which std's `DefaultHasher` does not promise. FNV-1a
/// alone leaves ids that differ only in their last characters (`web-0001`,
/// `web-0002`) close together in its high bits, the bits the multiply-shift
/// below reads; the finalizer spreads them.
pub fn splay_offset(splay: Duration, host_id: &str) -> Duration {
    // u64 nanoseconds reach 584 years: a longer splay saturates.
    let span = u64::try_from(splay.as_nanos()).unwrap_or(u64::MAX);
    let hash = splitmix64_finalize(fnv1a_64(host_id.as_bytes()));
    // (hash / 2^64) * span: uniform over [0, span) for a uniform hash,
    // without the bias of `hash % span`.
    let scaled = (u128::from(hash) * u128::from(span)) >> 64;
    Duration::from_nanos(u64::try_from(scaled).expect("below span, which fits in u64"))
}

fn fnv1a_64(bytes: &[u8]) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes.iter().fold(OFFSET_BASIS, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(PRIME)
    })
}

fn splitmix64_finalize(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Where [`identify_host`] found the id of this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostIdSource {
    /// The machine-id file.
    MachineId,
    /// The hostname, because the machine-id file was missing, empty or not
    /// yet initialized.
    Hostname,
    /// Neither: the id is empty, and every such host gets the same offset.
    Nothing,
}

/// The id that [`splay_offset`] hashes for this host: `/etc/machine-id`,
/// else the hostname, else empty. See [`identify_host`].
///
/// machine-id(5) asks that the id be treated as confidential: log the
/// offset, never the id.
pub fn host_identity() -> String {
    identify_host(Path::new(MACHINE_ID_PATH)).0
}

/// The id of this host, read from the machine-id file at `machine_id`
/// (trimmed), falling back to the hostname when that file is missing,
/// unreadable, empty or still `uninitialized` (systemd writes that during
/// the first boot, on every host alike), and to an empty id when the
/// hostname is unavailable too.
pub fn identify_host(machine_id: &Path) -> (String, HostIdSource) {
    if let Ok(bytes) = std::fs::read(machine_id) {
        let id = String::from_utf8_lossy(&bytes).trim().to_owned();
        if !id.is_empty() && id != "uninitialized" {
            return (id, HostIdSource::MachineId);
        }
    }
    match nix::unistd::gethostname() {
        Ok(name) if !name.is_empty() => {
            (name.to_string_lossy().into_owned(), HostIdSource::Hostname)
        }
        _ => (String::new(), HostIdSource::Nothing),
    }
}

/// Why the driver started a pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassReason {
    /// The schedule came due at `due`: an occurrence plus the splay offset.
    Scheduled { due: DateTime<Utc> },
    /// Someone asked for an immediate pass through the run-now channel.
    RunNow,
}

/// Drives one schedule until `shutdown` becomes `true` (or its sender is
/// dropped).
///
/// Each pass runs inline, so it never overlaps itself, and the next
/// occurrence is computed from the wall clock after the pass ends: ticks that
/// came due during a slow pass are skipped, not replayed. Waiting is checked
/// against the wall clock at least every 30 s, so after a suspend or a clock
/// step forward the overdue occurrence runs once, promptly, and a clock step
/// backward re-plans from the new time.
///
/// Every scheduled tick fires `offset` (see [`splay_offset`]) after its
/// occurrence; requested passes are never delayed. A cron tick fires at each
/// occurrence plus `offset`. An `every` schedule lays a grid when the driver
/// starts (and again after a requested pass or a clock step backward): its
/// first tick one interval plus `offset` later, the following ones one
/// interval apart. The grid keeps its phase however late a pass started or
/// long it ran (the next tick is the first grid point still ahead), so the
/// offset shifts the phase once instead of stretching every interval.
///
/// `run_now` requests an immediate pass: the daemon keeps the
/// `watch::Sender<()>`, hands each driver `sender.subscribe()`, and calls
/// `sender.send_replace(())` (after a config reload, say). Requests made
/// during a pass coalesce into one pass right after it. Call
/// `mark_changed()` on the receiver before handing it over to get a first
/// pass at start-up. Dropping the sender just disables run-now.
///
/// Shutdown is noticed immediately while waiting, but a pass already running
/// is not cancelled (cancelling in the middle of writing secrets would leave
/// a mess); the pass must bound its own duration.
pub async fn run_schedule<F, Fut>(
    schedule: Schedule,
    offset: Duration,
    mut shutdown: watch::Receiver<bool>,
    mut run_now: watch::Receiver<()>,
    mut pass: F,
) where
    F: FnMut(PassReason) -> Fut,
    Fut: Future<Output = ()>,
{
    let ticks = Ticks::new(schedule, offset);
    let mut run_now_open = true;
    let mut last_seen = Utc::now();
    let mut next = ticks.first(last_seen);
    ticks.log_next(next);

    loop {
        if *shutdown.borrow_and_update() {
            tracing::debug!(schedule = %ticks.schedule, "schedule driver stopping");
            return;
        }

        let now = Utc::now();
        if now + CLOCK_STEP_TOLERANCE < last_seen {
            tracing::debug!(schedule = %ticks.schedule, from = %last_seen, to = %now,
                "wall clock went backwards, recomputing next run");
            next = ticks.first(now);
            ticks.log_next(next);
        }
        last_seen = now;

        if let Some(due) = next.filter(|due| now >= *due) {
            next = run_pass(&ticks, &mut pass, PassReason::Scheduled { due }).await;
            last_seen = Utc::now();
            continue;
        }

        let wait = next
            .and_then(|due| (due - now).to_std().ok())
            .map_or(MAX_SLEEP, |until| until.min(MAX_SLEEP));

        tokio::select! {
            biased;
            changed = shutdown.changed() => {
                if changed.is_err() {
                    tracing::debug!(schedule = %ticks.schedule, "shutdown sender dropped, driver stopping");
                    return;
                }
            }
            changed = run_now.changed(), if run_now_open => {
                if changed.is_ok() {
                    next = run_pass(&ticks, &mut pass, PassReason::RunNow).await;
                    last_seen = Utc::now();
                } else {
                    run_now_open = false;
                }
            }
            () = tokio::time::sleep(wait) => {}
        }
    }
}

async fn run_pass<F, Fut>(ticks: &Ticks, pass: &mut F, reason: PassReason) -> Option<DateTime<Utc>>
where
    F: FnMut(PassReason) -> Fut,
    Fut: Future<Output = ()>,
{
    let started = Utc::now();
    if let PassReason::Scheduled { due } = reason {
        tracing::debug!(schedule = %ticks.schedule, %due, late_ms = (started - due).num_milliseconds(), "starting scheduled pass");
    } else {
        tracing::debug!(schedule = %ticks.schedule, "starting requested pass");
    }
    pass(reason).await;
    let ended = Utc::now();
    let next = ticks.after_pass(reason, started, ended);
    ticks.log_next(next);
    next
}

/// The tick a driver fires next after a pass that ran from `started` (its
/// tick, offset included) to `ended`: what the driver itself computes, for
/// those that report it (the status file).
pub fn next_tick(
    schedule: &Schedule,
    offset: Duration,
    started: DateTime<Utc>,
    ended: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let ticks = Ticks::new(schedule.clone(), offset);
    match schedule.interval() {
        Some(interval) => grid_after(interval, started, ended).map(|(next, _)| next),
        None => ticks.cron_after(ended),
    }
}

/// The first tick after `ended` on the grid of `interval` that starts at
/// `grid_start`, and how many grid ticks before it were skipped.
fn grid_after(
    interval: Duration,
    grid_start: DateTime<Utc>,
    ended: DateTime<Utc>,
) -> Option<(DateTime<Utc>, i64)> {
    let step = TimeDelta::from_std(interval).ok()?;
    let next = grid_start.checked_add_signed(step)?;
    if next > ended {
        return Some((next, 0));
    }
    // Jump straight to the first tick on the grid that is still ahead;
    // looping would spin after a long suspend with a short interval.
    let elapsed = (ended - grid_start).num_nanoseconds()?;
    let step_ns = step.num_nanoseconds()?.max(1);
    let skipped = elapsed / step_ns;
    let next =
        grid_start.checked_add_signed(TimeDelta::nanoseconds(step_ns.checked_mul(skipped + 1)?))?;
    Some((next, skipped))
}

/// The wall-clock times a driver fires at: the schedule's occurrences, each
/// delayed by the splay offset.
struct Ticks {
    schedule: Schedule,
    offset: TimeDelta,
}

impl Ticks {
    fn new(schedule: Schedule, offset: Duration) -> Ticks {
        // Beyond what TimeDelta holds (292 million years) nothing would fire
        // anyway; the checked arithmetic below then finds no next tick.
        let offset = TimeDelta::from_std(offset).unwrap_or(TimeDelta::MAX);
        Ticks { schedule, offset }
    }

    /// The first tick when planning starts afresh at `now`.
    fn first(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self.schedule.interval() {
            // The grid starts now: one interval, then the offset.
            Some(_) => self
                .schedule
                .next_after(now)?
                .checked_add_signed(self.offset),
            None => self.cron_after(now),
        }
    }

    /// The first cron tick strictly after `t`. An occurrence already past
    /// whose delayed tick is still ahead counts: the occurrences are searched
    /// from `t - offset`.
    fn cron_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.schedule
            .next_after(t.checked_sub_signed(self.offset)?)?
            .checked_add_signed(self.offset)
    }

    /// The next tick after a pass that ran from `started` to `ended`.
    fn after_pass(
        &self,
        reason: PassReason,
        started: DateTime<Utc>,
        ended: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        let Some(interval) = self.schedule.interval() else {
            if self
                .cron_after(started)
                .is_some_and(|missed| missed <= ended)
            {
                tracing::debug!(schedule = %self.schedule, "pass outlasted the next cron tick, skipping missed ticks");
            }
            return self.cron_after(ended);
        };
        // A scheduled tick is on the grid, offset included, so the grid goes
        // on from it: from the pass's start plus the offset, each tick would
        // come one offset (and one wake-up latency) later than the last. A
        // requested pass starts a new grid, delayed like the first one.
        let grid_start = match reason {
            PassReason::Scheduled { due } => due,
            PassReason::RunNow => started.checked_add_signed(self.offset)?,
        };
        let (next, skipped) = grid_after(interval, grid_start, ended)?;
        if skipped > 0 {
            tracing::debug!(schedule = %self.schedule, skipped, "pass outlasted its interval, skipping missed ticks");
        }
        Some(next)
    }

    fn log_next(&self, next: Option<DateTime<Utc>>) {
        match next {
            Some(next) => tracing::debug!(schedule = %self.schedule, %next, "next scheduled pass"),
            None => {
                tracing::warn!(schedule = %self.schedule, "schedule has no future occurrence; only run-now requests will trigger passes")
            }
        }
    }
}
