//! How verbs speak: a [`Printer`] that writes a verb's result either as
//! human text (its `Display`) or, with `--json`, as exactly one JSON document
//! (its `Serialize`), plus warnings and progress bars on stderr (progress
//! only on a terminal and never with `--json`), and [`Table`], the aligned
//! table of list verbs. Rendered output passes through a zeroizing buffer,
//! because one result (`tenant add`) carries a secret.

use std::fmt;
use std::io::Write;

use dzl_crypto::Zeroizing;
use serde::Serialize;
use unicode_width::UnicodeWidthStr;

use crate::error::CliError;

/// Where a verb's result and warnings go.
pub struct Printer<'a> {
    json: bool,
    progress: bool,
    out: &'a mut dyn Write,
    err: &'a mut dyn Write,
}

impl fmt::Debug for Printer<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Printer")
            .field("json", &self.json)
            .finish_non_exhaustive()
    }
}

impl<'a> Printer<'a> {
    /// A printer writing results to `out` and warnings to `err`.
    pub fn new(json: bool, out: &'a mut dyn Write, err: &'a mut dyn Write) -> Self {
        Printer {
            json,
            progress: false,
            out,
            err,
        }
    }

    /// Shows progress bars (on the process's stderr) when `on` and not
    /// printing JSON. The caller decides whether stderr is a terminal.
    pub fn with_progress(mut self, on: bool) -> Self {
        self.progress = on && !self.json;
        self
    }

    /// A progress bar of `len` steps saying `what`; hidden unless progress
    /// is on (see [`Printer::with_progress`]).
    pub fn progress_bar(&self, len: u64, what: &str) -> indicatif::ProgressBar {
        if !self.progress {
            return indicatif::ProgressBar::hidden();
        }
        let bar = indicatif::ProgressBar::with_draw_target(
            Some(len),
            indicatif::ProgressDrawTarget::stderr(),
        );
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{msg} [{bar:40}] {human_pos}/{human_len} ({per_sec}, {eta} left)",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(what.to_owned());
        bar
    }

    /// The result stream itself, for verbs that stream their result
    /// (`audit export`) instead of printing one value.
    pub fn out(&mut self) -> &mut dyn Write {
        self.out
    }

    /// Whether results are printed as JSON.
    pub fn json(&self) -> bool {
        self.json
    }

    /// Prints a verb's result: one JSON document with `--json`, else its text.
    pub fn print<R: Serialize + fmt::Display>(&mut self, result: &R) -> Result<(), CliError> {
        let text = Zeroizing::new(if self.json {
            serde_json::to_string_pretty(result)
                .map_err(|e| CliError::Output(std::io::Error::other(e)))?
        } else {
            result.to_string()
        });
        self.out.write_all(text.as_bytes())?;
        if !text.ends_with('\n') {
            self.out.write_all(b"\n")?;
        }
        self.out.flush()?;
        Ok(())
    }

    /// Prints `warning: <message>` on stderr (never on stdout, so `--json`
    /// output stays one document).
    pub fn warn(&mut self, message: &str) {
        // A warning that cannot be written is not worth failing the verb for.
        let _ = writeln!(self.err, "warning: {message}");
    }
}

/// A table of text, columns aligned by display width (CJK names included).
#[derive(Debug, Clone, Default)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new(headers: &[&str]) -> Self {
        Table {
            headers: headers.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (missing cells print empty, extra cells are dropped).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Whether the table has no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.headers.len();
        fn cell(row: &[String], i: usize) -> &str {
            row.get(i).map(String::as_str).unwrap_or("")
        }
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.width()).collect();
        for row in &self.rows {
            for (i, w) in widths.iter_mut().enumerate() {
                *w = (*w).max(cell(row, i).width());
            }
        }
        for row in std::iter::once(&self.headers).chain(&self.rows) {
            let mut line = String::new();
            for (i, width) in widths.iter().enumerate() {
                let text = cell(row, i);
                line.push_str(text);
                if i + 1 < n {
                    line.extend(std::iter::repeat_n(' ', width - text.width() + 2));
                }
            }
            writeln!(f, "{}", line.trim_end())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_by_display_width() {
        let mut t = Table::new(&["ID", "NAME", "STATE"]);
        t.row(vec!["a".into(), "银行".into(), "active".into()]);
        t.row(vec!["bb".into(), "x".into(), "suspended".into()]);
        assert_eq!(
            t.to_string(),
            "ID  NAME  STATE\na   银行  active\nbb  x     suspended\n"
        );
    }

    #[test]
    fn json_is_one_document_and_text_ends_with_a_newline() {
        #[derive(Serialize)]
        struct R {
            a: u8,
        }
        impl fmt::Display for R {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a = {}", self.a)
            }
        }
        let (mut out, mut err) = (Vec::new(), Vec::new());
        Printer::new(true, &mut out, &mut err)
            .print(&R { a: 1 })
            .unwrap_or_else(|e| panic!("{e}"));
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(v, serde_json::json!({"a": 1}));

        let mut out = Vec::new();
        Printer::new(false, &mut out, &mut err)
            .print(&R { a: 1 })
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(out, b"a = 1\n");
    }
}
