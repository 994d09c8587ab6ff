//! RFC 5424 syslog messages, one per UDP datagram (RFC 5426).
//!
//! `<PRI>1 TIMESTAMP HOSTNAME lbmed - MSGID [meta sequenceId=".." sysUpTime=".."] MSG`
//! with facility local0, the event's severity, a UTC timestamp when the
//! appliance knows the time of day (else the nil value `-`), the event's
//! category as MSGID, and the IANA-registered `meta` element (RFC 5424
//! §7.3) carrying the event's sequence number and the uptime in hundredths
//! of a second.

use alloc::format;
use alloc::string::String;

use super::events::Event;

/// local0.
pub const FACILITY: u8 = 16;
pub const APP_NAME: &str = "lbmed";
/// Longest message sent (RFC 5426: receivers must take 480 bytes, should
/// take 2048); longer text is cut at a character boundary.
pub const MAX_MESSAGE: usize = 2048;

/// Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// RFC 3339 UTC timestamp with milliseconds for Unix time in ms.
pub fn timestamp(unix_ms: u64) -> String {
    let secs = (unix_ms / 1000) as i64;
    let (y, mo, d) = civil(secs.div_euclid(86_400));
    let t = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        t / 3600,
        t / 60 % 60,
        t % 60,
        unix_ms % 1000
    )
}

/// PRINTUSASCII without space, at most `max` characters; `-` when empty.
fn header_field(text: &str, max: usize) -> String {
    let s: String = text
        .chars()
        .filter(|c| ('!'..='~').contains(c))
        .take(max)
        .collect();
    if s.is_empty() { "-".into() } else { s }
}

/// The datagram for `event` from `hostname`; `unix_ms` is the wall-clock
/// time of the event when known.
pub fn format(event: &Event, hostname: &str, unix_ms: Option<u64>) -> String {
    let pri = u32::from(FACILITY) * 8 + event.severity as u32;
    let ts = unix_ms.map_or_else(|| String::from("-"), timestamp);
    let mut out = format!(
        "<{pri}>1 {ts} {host} {APP_NAME} - {msgid} [meta sequenceId=\"{seq}\" sysUpTime=\"{up}\"] ",
        host = header_field(hostname, 255),
        msgid = header_field(event.category.name(), 32),
        // RFC 5424 §7.3.1: sequenceId is 1..2147483647, wrapping.
        seq = (event.seq - 1) % 2_147_483_647 + 1,
        up = event.at_ms / 10,
    );
    for c in event.text.chars() {
        if out.len() + c.len_utf8() > MAX_MESSAGE {
            break;
        }
        // No control characters in a one-line message.
        out.push(if c.is_control() { ' ' } else { c });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mgmt::events::{Category, Severity};

    fn event(text: &str) -> Event {
        Event {
            seq: 42,
            at_ms: 12_345,
            severity: Severity::Notice,
            category: Category::Health,
            text: text.into(),
        }
    }

    #[test]
    fn rfc5424_layout() {
        let m = format(
            &event("DICOM/PACS1 down (connection refused)"),
            "lbmed1",
            Some(1_764_600_000_123),
        );
        assert_eq!(
            m,
            "<133>1 2025-12-01T14:40:00.123Z lbmed1 lbmed - health [meta sequenceId=\"42\" sysUpTime=\"1234\"] DICOM/PACS1 down (connection refused)"
        );
        let nil = format(&event("x\ny"), "", None);
        assert!(nil.starts_with("<133>1 - - lbmed - health "), "{nil}");
        assert!(nil.ends_with("] x y"));
    }

    #[test]
    fn dates_are_civil() {
        assert_eq!(timestamp(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(timestamp(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(timestamp(4_102_444_799_999), "2099-12-31T23:59:59.999Z");
    }

    #[test]
    fn long_text_is_cut_to_the_limit() {
        let m = format(&event(&"é".repeat(3000)), "h", None);
        assert!(m.len() <= MAX_MESSAGE);
    }
}
