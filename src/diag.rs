//! Positioned diagnostics: `file:line:col: message`, the source line, carets.
//!
//! This is the only code that formats source positions, so every config error
//! looks the same and golden tests can pin the format.

use std::fmt;
use std::sync::Arc;

/// A position in a config file (1-based line and column, column in characters).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Span {
    /// The file as the user named it (or as an include resolved it).
    pub file: Arc<str>,
    /// 1-based line.
    pub line: u32,
    /// 1-based column, counted in characters.
    pub col: u32,
    /// Width of the offending text in characters (at least 1 when rendered).
    pub len: u32,
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Line 0 means "the file as a whole" (e.g. "this node is in no group").
        if self.line == 0 {
            write!(f, "{}", self.file)
        } else {
            write!(f, "{}:{}:{}", self.file, self.line, self.col)
        }
    }
}

/// How serious a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The config cannot be used.
    Error,
    /// Accepted, but the user should know (e.g. `nossl` is ignored).
    Warning,
}

/// One finding about a config file, with the text needed to render it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// Where.
    pub span: Span,
    /// What is wrong, one line, no trailing period.
    pub message: String,
    /// The full source line the span points into (without the newline).
    pub source_line: String,
    /// An optional hint shown as `help: …`.
    pub help: Option<String>,
}

impl Diagnostic {
    /// An error at `span`.
    pub fn error(span: Span, source_line: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Error,
            span,
            message: message.into(),
            source_line: source_line.into(),
            help: None,
        }
    }

    /// A warning at `span`.
    pub fn warning(span: Span, source_line: impl Into<String>, message: impl Into<String>) -> Self {
        Self { severity: Severity::Warning, ..Self::error(span, source_line, message) }
    }

    /// Adds a `help:` line.
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

impl fmt::Display for Diagnostic {
    /// Renders as
    /// ```text
    /// file:line:col: error: message
    ///   12 |     auto youngest;
    ///      |          ^^^^^^^^
    ///   help: …
    /// ```
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        writeln!(f, "{}: {sev}: {}", self.span, self.message)?;
        if self.span.line > 0 {
            let num = self.span.line.to_string();
            let pad = " ".repeat(num.len());
            // Tabs are shown as single spaces so the carets line up.
            let line: String =
                self.source_line.chars().map(|c| if c == '\t' { ' ' } else { c }).collect();
            writeln!(f, " {num} | {line}")?;
            let col = self.span.col.max(1) as usize - 1;
            let width = self.span.len.max(1) as usize;
            writeln!(f, " {pad} | {}{}", " ".repeat(col), "^".repeat(width))?;
        }
        if let Some(help) = &self.help {
            writeln!(f, " help: {help}")?;
        }
        Ok(())
    }
}

/// Renders a list of diagnostics, in order, as one block of text.
pub fn render(diags: &[Diagnostic]) -> String {
    diags.iter().map(ToString::to_string).collect()
}
