//! `exit.json`: how the container ended, in the form the runtime reads back (its `Exited`). Written by hand so
//! that the monitor carries no serialisation crate; the runtime's tests read it with serde.

use std::io::Write;
use std::path::Path;

/// The file's name in the container's state directory.
pub const EXIT_FILE: &str = "exit.json";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExitRecord {
    pub exit_code: i32,
    /// `Completed`, `Error`, `OOMKilled` (Kubernetes' container state reasons), or `StartError`.
    pub reason: String,
    pub message: String,
    /// RFC 3339.
    pub finished_at: String,
}

/// A JSON string literal.
fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl ExitRecord {
    pub fn to_json(&self) -> String {
        format!(
            "{{\n  \"exit_code\": {},\n  \"reason\": {},\n  \"message\": {},\n  \"finished_at\": {}\n}}",
            self.exit_code,
            json_string(&self.reason),
            json_string(&self.message),
            json_string(&self.finished_at)
        )
    }

    /// Writes `dir/exit.json` whole or not at all (a temporary file renamed over it), so that a reader never
    /// sees half a record.
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        let path = dir.join(EXIT_FILE);
        let tmp = path.with_extension("tmp");
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(self.to_json().as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, &path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_whole_and_escaped() {
        let dir = tempfile::tempdir().unwrap();
        let record = ExitRecord {
            exit_code: 137,
            reason: "OOMKilled".into(),
            message: "quote \" backslash \\ newline \n bell \u{7} é".into(),
            finished_at: "2026-12-02T10:00:00.000000001Z".into(),
        };
        record.write(dir.path()).unwrap();
        let text = std::fs::read_to_string(dir.path().join(EXIT_FILE)).unwrap();
        assert_eq!(
            text,
            "{\n  \"exit_code\": 137,\n  \"reason\": \"OOMKilled\",\n  \"message\": \"quote \\\" backslash \\\\ newline \\n bell \\u0007 é\",\n  \"finished_at\": \"2026-12-02T10:00:00.000000001Z\"\n}"
        );
        assert!(!dir.path().join("exit.tmp").exists());
    }
}
