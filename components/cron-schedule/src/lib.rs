//! CronJob schedules as Kubernetes reads them: robfig/cron v3's standard parser (`cron.ParseStandard`: five
//! fields, ranges, lists, steps, month and weekday names, `?`, the `@yearly`... descriptors and `@every`, an
//! optional `TZ=`/`CRON_TZ=` prefix) with its error messages, and IANA time zones as Go's `time.LoadLocation`
//! names them, from a database compiled into the binary (so that a host without `/usr/share/zoneinfo`, such as
//! a minimal container image, schedules and validates the same as any other).
//!
//! The grammar is checked here, field by field, exactly as robfig/cron does it; each field is then handed to
//! croner in a plain numeric form, and croner computes the next times in the schedule's zone. The API server
//! (validation) and the CronJob controller (scheduling) both use this one parser.

use std::str::FromStr;

use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};

/// A parsed schedule, in its time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    kind: Kind,
    zone: TimeZone,
}

#[derive(Debug, Clone)]
enum Kind {
    /// Five fields (or a descriptor that stands for five fields).
    Fields(Box<Cron>),
    /// `@every <duration>`: a constant delay, whole seconds, at least one.
    Every(i64),
}

/// (minimum, maximum, names) of each field, as robfig/cron bounds them.
const MINUTES: (u32, u32, &[&str]) = (0, 59, &[]);
const HOURS: (u32, u32, &[&str]) = (0, 23, &[]);
const DAYS_OF_MONTH: (u32, u32, &[&str]) = (1, 31, &[]);
const MONTHS: (u32, u32, &[&str]) = (
    1,
    12,
    &[
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ],
);
const DAYS_OF_WEEK: (u32, u32, &[&str]) = (0, 6, &["sun", "mon", "tue", "wed", "thu", "fri", "sat"]);

impl Schedule {
    /// robfig/cron's `ParseStandard`: `spec` in `default_zone` unless it starts with `TZ=<zone> ` or
    /// `CRON_TZ=<zone> `. The error is robfig's message (what Kubernetes puts after the field name).
    pub fn parse(spec: &str, default_zone: &TimeZone) -> Result<Schedule, String> {
        if spec.is_empty() {
            return Err("empty spec string".into());
        }
        let mut zone = default_zone.clone();
        let mut spec = spec;
        if spec.starts_with("TZ=") || spec.starts_with("CRON_TZ=") {
            let (Some(space), Some(eq)) = (spec.find(' '), spec.find('=')) else {
                return Err(format!("provided bad location {spec}: missing schedule"));
            };
            let name = spec.get(eq + 1..space).unwrap_or_default();
            zone = load_location(name).map_err(|e| format!("provided bad location {name}: {e}"))?;
            spec = spec.get(space..).unwrap_or_default().trim();
        }
        if spec.starts_with('@') {
            return parse_descriptor(spec).map(|kind| Schedule { kind, zone });
        }
        let fields: Vec<&str> = spec.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(format!(
                "expected exactly 5 fields, found {}: [{}]",
                fields.len(),
                fields.join(" ")
            ));
        }
        let bounds = [MINUTES, HOURS, DAYS_OF_MONTH, MONTHS, DAYS_OF_WEEK];
        let mut croner_fields = Vec::with_capacity(5);
        for (i, (field, bound)) in fields.iter().zip(bounds).enumerate() {
            let day_field = i == 2 || i == 4;
            croner_fields.push(field_for_croner(field, bound, day_field)?);
        }
        Ok(Schedule {
            kind: Kind::Fields(Box::new(croner_cron(&croner_fields.join(" "))?)),
            zone,
        })
    }

    /// The first time of the schedule strictly after `after` (robfig's `Schedule.Next`), or `None` when
    /// there is none (a day that never comes, such as the 31st of February).
    pub fn next(&self, after: Timestamp) -> Option<Timestamp> {
        match &self.kind {
            Kind::Every(seconds) => {
                // robfig: t + delay - t's fraction of a second.
                let whole = Timestamp::from_second(after.as_second()).ok()?;
                whole.checked_add(jiff::SignedDuration::from_secs(*seconds)).ok()
            }
            Kind::Fields(cron) => next_wall_clock_match(cron, &self.zone, after),
        }
    }

    /// The zone the schedule's fields are read in.
    pub fn zone(&self) -> &TimeZone {
        &self.zone
    }
}

/// The first instant after `after` whose wall-clock time in `zone` the fields match, as robfig/cron finds it by
/// walking absolute time: a wall time a spring-forward skips does not happen that day (croner would move it to
/// the first time after the gap), and one a fall-back repeats happens twice (croner would keep the first).
fn next_wall_clock_match(cron: &Cron, zone: &TimeZone, after: Timestamp) -> Option<Timestamp> {
    let matches = |at: Timestamp| cron.is_time_matching(&at.to_zoned(zone.clone())).unwrap_or(false);
    let mut from = after;
    let mut found = None;
    // A skipped wall time comes back moved past the gap, where the fields do not match it: look further.
    for _ in 0..64 {
        let next = cron
            .find_next_occurrence(&from.to_zoned(zone.clone()), false)
            .ok()?
            .timestamp();
        if matches(next) {
            found = Some(next);
            break;
        }
        from = next;
    }
    let found = found?;
    // Before it, the only other candidates are wall times repeated by a fall-back: [transition, + the step).
    let minute = SignedDuration::from_secs(60);
    for transition in zone.following(after) {
        let at = transition.timestamp();
        if at >= found {
            break;
        }
        let before = zone.to_offset(at.checked_sub(SignedDuration::from_secs(1)).ok()?);
        let step = i64::from(before.seconds()) - i64::from(transition.offset().seconds());
        if step <= 0 {
            continue;
        }
        let end = at.checked_add(SignedDuration::from_secs(step)).ok()?.min(found);
        // Whole minutes from the later of the transition and just after `after`.
        let start = at.max(after.checked_add(SignedDuration::from_secs(1)).ok()?);
        let mut candidate = Timestamp::from_second(start.as_second().div_euclid(60) * 60).ok()?;
        if candidate < start {
            candidate = candidate.checked_add(minute).ok()?;
        }
        while candidate < end {
            if matches(candidate) {
                return Some(candidate);
            }
            candidate = candidate.checked_add(minute).ok()?;
        }
    }
    Some(found)
}

/// robfig's descriptors (case-sensitive, as there).
fn parse_descriptor(spec: &str) -> Result<Kind, String> {
    let fields = match spec {
        "@yearly" | "@annually" => "0 0 1 1 *",
        "@monthly" => "0 0 1 * *",
        "@weekly" => "0 0 * * 0",
        "@daily" | "@midnight" => "0 0 * * *",
        "@hourly" => "0 * * * *",
        _ => {
            if let Some(duration) = spec.strip_prefix("@every ") {
                let nanos = parse_go_duration(duration)
                    .map_err(|e| format!("failed to parse duration {spec}: {e}"))?;
                // robfig: at least a second, and whole seconds only.
                let seconds = (nanos / 1_000_000_000).max(1);
                return i64::try_from(seconds)
                    .map(Kind::Every)
                    .map_err(|_| format!("failed to parse duration {spec}: too long"));
            }
            return Err(format!("unrecognized descriptor: {spec}"));
        }
    };
    croner_cron(fields).map(|c| Kind::Fields(Box::new(c)))
}

fn croner_cron(fields: &str) -> Result<Cron, String> {
    CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        // robfig: when either day field is `*`, both must match; otherwise either may (Vixie cron's rule).
        .dom_and_dow(false)
        .build()
        .parse(fields)
        .map_err(|e| e.to_string())
}

/// One field checked as robfig/cron's `getField` checks it, rewritten as croner reads the same set: a
/// comma list of `start-end/step`, or `*` for a day field that robfig marks with its "star bit" (a `*` or
/// `?` without a step above one), which is what decides whether both day fields must match.
fn field_for_croner(field: &str, bound: (u32, u32, &[&str]), day_field: bool) -> Result<String, String> {
    let (min, max, names) = bound;
    let mut items = Vec::new();
    let mut star = false;
    for expr in field.split(',') {
        let range_and_step: Vec<&str> = expr.split('/').collect();
        let low_and_high: Vec<&str> = range_and_step.first().copied().unwrap_or("").split('-').collect();
        let single = low_and_high.len() == 1;
        let (start, mut end, mut item_star) = match low_and_high.as_slice() {
            ["*" | "?", ..] => (min, max, true),
            [one] => {
                let n = int_or_name(one, names)?;
                (n, n, false)
            }
            [low, high] => (int_or_name(low, names)?, int_or_name(high, names)?, false),
            _ => return Err(format!("too many hyphens: {expr}")),
        };
        let step = match range_and_step.as_slice() {
            [_] => 1,
            [_, step] => {
                let step = must_parse_int(step)?;
                // "N/step" means "N-max/step".
                if single {
                    end = max;
                }
                if step > 1 {
                    item_star = false;
                }
                step
            }
            _ => return Err(format!("too many slashes: {expr}")),
        };
        if start < min {
            return Err(format!(
                "beginning of range ({start}) below minimum ({min}): {expr}"
            ));
        }
        if end > max {
            return Err(format!("end of range ({end}) above maximum ({max}): {expr}"));
        }
        if start > end {
            return Err(format!(
                "beginning of range ({start}) beyond end of range ({end}): {expr}"
            ));
        }
        if step == 0 {
            return Err(format!("step of range should be a positive number: {expr}"));
        }
        star |= item_star;
        items.push(format!("{start}-{end}/{step}"));
    }
    if star && day_field {
        return Ok("*".into());
    }
    Ok(items.join(","))
}

fn int_or_name(expr: &str, names: &[&str]) -> Result<u32, String> {
    let lower = expr.to_ascii_lowercase();
    if let Some(i) = names.iter().position(|n| *n == lower) {
        // Month names count from 1, weekday names from 0.
        let first = if names.len() == 12 { 1 } else { 0 };
        return Ok(i as u32 + first);
    }
    must_parse_int(expr)
}

/// Go's `strconv.Atoi` as robfig uses it (negative numbers are refused).
fn must_parse_int(expr: &str) -> Result<u32, String> {
    let parsed: Result<i64, _> = expr.parse();
    match parsed {
        Ok(n) if n < 0 => Err(format!("negative number ({n}) not allowed: {expr}")),
        Ok(n) => u32::try_from(n).map_err(|_| {
            format!("failed to parse int from {expr}: strconv.Atoi: parsing \"{expr}\": value out of range")
        }),
        Err(_) => Err(format!(
            "failed to parse int from {expr}: strconv.Atoi: parsing \"{expr}\": invalid syntax"
        )),
    }
}

/// Go's `time.ParseDuration` (what `@every` takes), in nanoseconds; negative durations count as zero.
fn parse_go_duration(text: &str) -> Result<u128, String> {
    let invalid = || format!("time: invalid duration \"{text}\"");
    let mut rest = text;
    let mut negative = false;
    if let Some(r) = rest.strip_prefix('-') {
        negative = true;
        rest = r;
    } else if let Some(r) = rest.strip_prefix('+') {
        rest = r;
    }
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number = rest.get(..number_len).unwrap_or_default();
        if number.is_empty() || number == "." {
            return Err(invalid());
        }
        let value: f64 = number.parse().map_err(|_| invalid())?;
        rest = rest.get(number_len..).unwrap_or_default();
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = rest.get(..unit_len).unwrap_or_default();
        rest = rest.get(unit_len..).unwrap_or_default();
        let scale = match unit {
            "" => return Err(format!("time: missing unit in duration \"{text}\"")),
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(format!("time: unknown unit \"{unit}\" in duration \"{text}\"")),
        };
        total += value * scale;
    }
    if total > 9.223_372_036_854_776e18 {
        return Err(invalid());
    }
    if negative {
        return Ok(0);
    }
    Ok(total as u128)
}

/// Go's `time.LoadLocation`: "" and "UTC" are UTC, "Local" is this process's zone, anything else an IANA
/// name in the compiled-in database, spelt exactly (Go reads files, so case matters).
pub fn load_location(name: &str) -> Result<TimeZone, String> {
    match name {
        "" | "UTC" => return Ok(TimeZone::UTC),
        "Local" => return Ok(local_time_zone()),
        _ => {}
    }
    let unknown = || format!("unknown time zone {name}");
    let zone = TimeZone::get(name).map_err(|_| unknown())?;
    if zone.iana_name() != Some(name) {
        return Err(unknown());
    }
    Ok(zone)
}

/// The zone schedules without `spec.timeZone` are read in (kube-controller-manager's `time.Local`): the one
/// `TZ` names (with or without Go's leading `:`), else UTC. Unlike Go, `/etc/localtime` is not read: a
/// server's schedules do not move with the host's configured zone unless `TZ` says so.
pub fn local_time_zone() -> TimeZone {
    match std::env::var("TZ") {
        Ok(tz) if !tz.is_empty() => {
            let name = tz.strip_prefix(':').unwrap_or(&tz);
            TimeZone::get(name).unwrap_or(TimeZone::UTC)
        }
        _ => TimeZone::UTC,
    }
}

/// kube-apiserver's `validateTimeZone` for `spec.timeZone`: the message of the first problem, if any.
pub fn time_zone_error(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("timeZone must be nil or non-empty string".into());
    }
    let valid_part = |part: &str| {
        part != "."
            && part != ".."
            && !part.starts_with('-')
            && (1..=14).contains(&part.len())
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '+'))
    };
    if !name.split('/').all(valid_part) {
        return Some(format!("unknown time zone {name}"));
    }
    if name.eq_ignore_ascii_case("Local") {
        return Some(
            "timeZone must be an explicit time zone as defined in https://www.iana.org/time-zones".into(),
        );
    }
    load_location(name).err()
}

/// kube-apiserver's `validateScheduleFormat` on a new object: robfig's parse error, and no `TZ` in the
/// schedule (the `timeZone` field is the way). Each message is one error on `spec.schedule`.
pub fn schedule_errors(schedule: &str, time_zone: Option<&str>) -> Vec<String> {
    let mut errors = Vec::new();
    if let Err(e) = Schedule::parse(schedule, &TimeZone::UTC) {
        errors.push(e);
    }
    if schedule.contains("TZ") {
        errors.push(if time_zone.is_some() {
            "cannot use both timeZone field and TZ or CRON_TZ in schedule".into()
        } else {
            "cannot use TZ or CRON_TZ in schedule, use timeZone field instead".into()
        });
    }
    errors
}

impl FromStr for Schedule {
    type Err = String;
    /// A schedule in UTC (tests and tools; the controller passes its zone to `parse`).
    fn from_str(spec: &str) -> Result<Schedule, String> {
        Schedule::parse(spec, &TimeZone::UTC)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn next(spec: &str, after: &str) -> String {
        let schedule: Schedule = spec.parse().unwrap();
        schedule.next(at(after)).unwrap().to_string()
    }

    #[test]
    fn fields_ranges_lists_steps_and_names() {
        assert_eq!(next("* * * * *", "2026-01-01T10:00:30Z"), "2026-01-01T10:01:00Z");
        assert_eq!(next("* * * * *", "2026-01-01T10:01:00Z"), "2026-01-01T10:02:00Z");
        assert_eq!(
            next("*/15 * * * *", "2026-01-01T10:16:00Z"),
            "2026-01-01T10:30:00Z"
        );
        assert_eq!(
            next("5/20 * * * *", "2026-01-01T10:26:00Z"),
            "2026-01-01T10:45:00Z"
        );
        assert_eq!(
            next("0 9-17/4 * * *", "2026-01-01T10:00:00Z"),
            "2026-01-01T13:00:00Z"
        );
        assert_eq!(
            next("0 0 1,15 * *", "2026-01-02T00:00:00Z"),
            "2026-01-15T00:00:00Z"
        );
        // 2026-01-01 is a Thursday.
        assert_eq!(
            next("30 6 * * MON-fri", "2026-01-02T07:00:00Z"),
            "2026-01-05T06:30:00Z"
        );
        assert_eq!(
            next("0 0 1 JUN ?", "2026-01-01T00:00:00Z"),
            "2026-06-01T00:00:00Z"
        );
        assert_eq!(next("? ? * * *", "2026-01-01T00:00:00Z"), "2026-01-01T00:01:00Z");
    }

    #[test]
    fn both_day_fields_restricted_means_either_matches() {
        // Vixie cron's and robfig's rule: the 13th, or any Friday (2026-01-02 is the first Friday).
        assert_eq!(next("0 0 13 * 5", "2026-01-01T00:00:00Z"), "2026-01-02T00:00:00Z");
        assert_eq!(next("0 0 13 * 5", "2026-01-10T00:00:00Z"), "2026-01-13T00:00:00Z");
        // With one of them `*` (or `?`), both must: Fridays only.
        assert_eq!(next("0 0 * * 5", "2026-01-10T00:00:00Z"), "2026-01-16T00:00:00Z");
        assert_eq!(next("0 0 ? * 5", "2026-01-10T00:00:00Z"), "2026-01-16T00:00:00Z");
        // A step above one drops the star: "*/2" days or Fridays.
        assert_eq!(
            next("0 0 */2 * 5", "2026-01-01T00:00:00Z"),
            "2026-01-02T00:00:00Z"
        );
    }

    #[test]
    fn descriptors() {
        assert_eq!(next("@yearly", "2026-03-01T00:00:00Z"), "2027-01-01T00:00:00Z");
        assert_eq!(next("@annually", "2026-03-01T00:00:00Z"), "2027-01-01T00:00:00Z");
        assert_eq!(next("@monthly", "2026-03-05T00:00:00Z"), "2026-04-01T00:00:00Z");
        // 2026-03-08 is a Sunday.
        assert_eq!(next("@weekly", "2026-03-05T00:00:00Z"), "2026-03-08T00:00:00Z");
        assert_eq!(next("@daily", "2026-03-05T10:00:00Z"), "2026-03-06T00:00:00Z");
        assert_eq!(next("@midnight", "2026-03-05T10:00:00Z"), "2026-03-06T00:00:00Z");
        assert_eq!(next("@hourly", "2026-03-05T10:20:00Z"), "2026-03-05T11:00:00Z");
        assert_eq!(
            next("@every 1h30m", "2026-03-05T10:20:00.5Z"),
            "2026-03-05T11:50:00Z"
        );
        assert_eq!(
            next("@every 100ms", "2026-03-05T10:20:00Z"),
            "2026-03-05T10:20:01Z"
        );
        assert_eq!(
            "@Daily".parse::<Schedule>().unwrap_err(),
            "unrecognized descriptor: @Daily"
        );
        assert_eq!(
            "@every 5".parse::<Schedule>().unwrap_err(),
            "failed to parse duration @every 5: time: missing unit in duration \"5\""
        );
    }

    #[test]
    fn robfig_error_messages() {
        let err = |s: &str| s.parse::<Schedule>().unwrap_err();
        assert_eq!(err(""), "empty spec string");
        assert_eq!(
            err("not a schedule"),
            "expected exactly 5 fields, found 3: [not a schedule]"
        );
        assert_eq!(
            err("0 * * * * *"),
            "expected exactly 5 fields, found 6: [0 * * * * *]"
        );
        assert_eq!(err("60 * * * *"), "end of range (60) above maximum (59): 60");
        assert_eq!(err("* * 0 * *"), "beginning of range (0) below minimum (1): 0");
        assert_eq!(err("* * * * 7"), "end of range (7) above maximum (6): 7");
        assert_eq!(
            err("5-1 * * * *"),
            "beginning of range (5) beyond end of range (1): 5-1"
        );
        assert_eq!(
            err("*/0 * * * *"),
            "step of range should be a positive number: */0"
        );
        assert_eq!(err("1-2-3 * * * *"), "too many hyphens: 1-2-3");
        assert_eq!(
            err("* * L * *"),
            "failed to parse int from L: strconv.Atoi: parsing \"L\": invalid syntax"
        );
        assert!(err("0 0 * * 1#2").starts_with("failed to parse int from 1#2"));
    }

    #[test]
    fn a_day_that_never_comes_has_no_next_time() {
        let schedule: Schedule = "0 0 31 2 *".parse().unwrap();
        assert_eq!(schedule.next(at("2026-01-01T00:00:00Z")), None);
    }

    #[test]
    fn time_zones() {
        let tokyo = load_location("Asia/Tokyo").unwrap();
        let schedule = Schedule::parse("0 9 * * *", &tokyo).unwrap();
        // 09:00 in Tokyo is 00:00 UTC.
        assert_eq!(
            schedule.next(at("2026-01-01T01:00:00Z")).unwrap().to_string(),
            "2026-01-02T00:00:00Z"
        );
        let prefixed = Schedule::parse("CRON_TZ=America/New_York 0 9 * * *", &TimeZone::UTC).unwrap();
        assert_eq!(
            prefixed.next(at("2026-07-01T00:00:00Z")).unwrap().to_string(),
            "2026-07-01T13:00:00Z"
        );
        assert_eq!(
            Schedule::parse("TZ=Mars/Olympus 0 9 * * *", &TimeZone::UTC).unwrap_err(),
            "provided bad location Mars/Olympus: unknown time zone Mars/Olympus"
        );
        assert!(load_location("US/Eastern").is_ok(), "links are names too");
        // Daylight saving time, as robfig/cron walks it: 02:30 does not exist on 2026-03-08 in New York, so
        // that day has no run; 01:30 happens twice on 2026-11-01 (EDT, then EST), so that day has two.
        let new_york = load_location("America/New_York").unwrap();
        let runs = |spec: &str, from: &str| {
            let schedule = Schedule::parse(spec, &new_york).unwrap();
            let mut t = at(from);
            (0..3)
                .map(|_| {
                    t = schedule.next(t).unwrap();
                    t.to_string()
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(
            runs("30 2 * * *", "2026-03-07T12:00:00Z"),
            [
                "2026-03-09T06:30:00Z",
                "2026-03-10T06:30:00Z",
                "2026-03-11T06:30:00Z"
            ]
        );
        assert_eq!(
            runs("30 1 * * *", "2026-10-31T12:00:00Z"),
            [
                "2026-11-01T05:30:00Z",
                "2026-11-01T06:30:00Z",
                "2026-11-02T06:30:00Z"
            ]
        );
        assert_eq!(
            runs("0 * * * *", "2026-03-08T06:30:00Z"),
            [
                "2026-03-08T07:00:00Z",
                "2026-03-08T08:00:00Z",
                "2026-03-08T09:00:00Z"
            ],
            "an hourly schedule goes on through the gap"
        );
        assert!(
            load_location("asia/tokyo").is_err(),
            "Go's names are case-sensitive"
        );
        assert_eq!(load_location("").unwrap(), TimeZone::UTC);
    }

    #[test]
    fn api_server_validation() {
        assert_eq!(time_zone_error("Europe/Paris"), None);
        assert_eq!(
            time_zone_error("Mars/Olympus").unwrap(),
            "unknown time zone Mars/Olympus"
        );
        assert_eq!(
            time_zone_error("../etc/passwd").unwrap(),
            "unknown time zone ../etc/passwd"
        );
        assert_eq!(
            time_zone_error("").unwrap(),
            "timeZone must be nil or non-empty string"
        );
        assert!(
            time_zone_error("Local")
                .unwrap()
                .starts_with("timeZone must be an explicit")
        );
        assert!(schedule_errors("*/5 * * * *", None).is_empty());
        assert_eq!(
            schedule_errors("TZ=UTC * * * * *", None),
            ["cannot use TZ or CRON_TZ in schedule, use timeZone field instead"]
        );
        assert_eq!(
            schedule_errors("bad", None),
            ["expected exactly 5 fields, found 1: [bad]"]
        );
    }
}
