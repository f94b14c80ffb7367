//! The CRI log format containerd writes and the kubelet, `kubectl logs` and log shippers (Fluent Bit, Vector)
//! read: `<RFC 3339 nano time> <stream> <F|P> <text>` per line, long lines split into partial (`P`) lines.

/// containerd's default longest log line; longer lines are split into partial (`P`) lines.
pub const MAX_LINE: usize = 16 * 1024;

/// Now, as RFC 3339 with nanoseconds in UTC (`2025-11-25T10:00:00.000000001Z`).
pub fn now_rfc3339() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        now.subsec_nanos()
    )
}

/// Howard Hinnant's days-to-civil: the monitor stays free of date crates.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
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

/// One CRI log line.
pub fn cri_line(stream: &str, text: &[u8], complete: bool) -> Vec<u8> {
    let mut line = format!("{} {stream} {} ", now_rfc3339(), if complete { "F" } else { "P" }).into_bytes();
    line.extend_from_slice(text);
    line.push(b'\n');
    line
}

/// The CRI log lines for `data` arriving on `stream`, given the unfinished line before it; `partial` keeps what
/// is left unfinished. At the end of the stream (`data` empty, `eof`), the rest is written as a full line, as
/// containerd does.
pub fn log_lines(stream: &str, partial: &mut Vec<u8>, data: &[u8], eof: bool) -> Vec<u8> {
    partial.extend_from_slice(data);
    let mut out = Vec::new();
    let mut start = 0;
    while let Some(newline) = partial[start..].iter().position(|b| *b == b'\n') {
        let end = start + newline;
        let line = &partial[start..end];
        if line.is_empty() {
            out.extend(cri_line(stream, b"", true));
        }
        let mut pieces = line.chunks(MAX_LINE).peekable();
        while let Some(piece) = pieces.next() {
            out.extend(cri_line(stream, piece, pieces.peek().is_none()));
        }
        start = end + 1;
    }
    partial.drain(..start);
    while partial.len() >= MAX_LINE {
        out.extend(cri_line(stream, &partial[..MAX_LINE], false));
        partial.drain(..MAX_LINE);
    }
    if eof && !partial.is_empty() {
        out.extend(cri_line(stream, partial, true));
        partial.clear();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(out: &[u8]) -> Vec<(String, String)> {
        String::from_utf8(out.to_vec())
            .unwrap()
            .lines()
            .map(|l| {
                let parts: Vec<&str> = l.splitn(4, ' ').collect();
                (parts[2].to_string(), parts[3].to_string())
            })
            .collect()
    }

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_417), (2025, 11, 25));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        let now = now_rfc3339();
        assert!(now.ends_with('Z') && now.len() == 30, "{now}");
    }

    #[test]
    fn cri_log_lines() {
        let line = String::from_utf8(cri_line("stdout", b"hello", true)).unwrap();
        let parts: Vec<&str> = line.splitn(4, ' ').collect();
        assert_eq!(parts[1..], ["stdout", "F", "hello\n"]);
        assert!(parts[0].ends_with('Z') && parts[0].len() == 30, "{}", parts[0]);
        assert!(
            String::from_utf8(cri_line("stderr", b"part", false))
                .unwrap()
                .contains(" stderr P part\n")
        );
    }

    #[test]
    fn whole_lines_partial_lines_and_the_end_of_the_stream() {
        let mut partial = Vec::new();
        assert!(log_lines("stdout", &mut partial, b"hel", false).is_empty());
        let out = log_lines("stdout", &mut partial, b"lo\n\nwor", false);
        assert_eq!(
            lines(&out),
            [("F".into(), "hello".into()), ("F".into(), "".into())]
        );
        let out = log_lines("stdout", &mut partial, b"ld", true);
        assert_eq!(lines(&out), [("F".into(), "world".into())]);
        assert!(partial.is_empty());
    }

    #[test]
    fn long_lines_are_split_into_partial_lines() {
        let mut partial = Vec::new();
        let mut data = vec![b'a'; MAX_LINE * 2 + 10];
        data.push(b'\n');
        let out = lines(&log_lines("stderr", &mut partial, &data, false));
        let tags: Vec<&str> = out.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(tags, ["P", "P", "F"]);
        assert_eq!(out[2].1.len(), 10);
        // Without a newline, a full buffer is written as a partial line at once.
        let out = lines(&log_lines(
            "stderr",
            &mut partial,
            &vec![b'b'; MAX_LINE + 1],
            false,
        ));
        assert_eq!(out.len(), 1);
        assert_eq!(partial.len(), 1);
    }
}
