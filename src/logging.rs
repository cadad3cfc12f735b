//! Where log lines go, and with which priority:
//!
//! - under systemd (stderr is the journal stream named by `JOURNAL_STREAM`):
//!   to stderr, each line prefixed with its sd-daemon priority (`<3>` error
//!   … `<7>` debug) and without a timestamp, since the journal adds its own;
//! - when stderr is some other socket (inetd hands the connection on fds 0, 1
//!   and 2, so writing there would corrupt the protocol): to syslog, facility
//!   local0 as csync2, the severity following the level;
//! - otherwise to stderr, with a timestamp and the level.
//!
//! Logs never go to stdout.

use std::io::{self, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixDatagram;

use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

/// Sets up logging for this process. `verbosity` is the number of `-v`;
/// `daemon` raises the floor to info so refusals are always logged.
pub fn init(verbosity: u8, daemon: bool) {
    let level = match (verbosity, daemon) {
        (0, false) => Level::WARN,
        (0, true) | (1, _) => Level::INFO,
        (2, _) => Level::DEBUG,
        _ => Level::TRACE,
    };
    let builder = tracing_subscriber::fmt().with_max_level(level).with_target(false);
    let _ = match sink() {
        // The priority prefix says the level; the journal stamps the time.
        Sink::Journal => builder
            .with_ansi(false)
            .without_time()
            .with_level(false)
            .with_writer(Prefixed)
            .try_init(),
        Sink::Syslog => {
            builder.with_ansi(false).without_time().with_level(false).with_writer(Syslog).try_init()
        }
        Sink::Stderr => builder.with_ansi(false).with_writer(io::stderr).try_init(),
    };
}

/// Where this process's log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sink {
    Journal,
    Syslog,
    Stderr,
}

fn sink() -> Sink {
    let Ok(st) = rustix::fs::fstat(io::stderr().as_fd()) else {
        return Sink::Stderr;
    };
    let journal = std::env::var("JOURNAL_STREAM").ok();
    if journal.as_deref().is_some_and(|j| is_stream(j, st.st_dev, st.st_ino)) {
        Sink::Journal
    } else if rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Socket {
        Sink::Syslog
    } else {
        Sink::Stderr
    }
}

/// Whether `JOURNAL_STREAM` (`DEV:INODE`, decimal) names the file stderr
/// is: systemd's documented test, since the variable is inherited by
/// children whose stderr was redirected elsewhere.
fn is_stream(var: &str, dev: u64, ino: u64) -> bool {
    match var.split_once(':') {
        Some((d, i)) => d.parse() == Ok(dev) && i.parse() == Ok(ino),
        None => false,
    }
}

/// The syslog severity of a level (RFC 5424; sd-daemon uses the same numbers).
fn severity(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// syslog facility local0, as csync2 logged.
const LOCAL0: u8 = 16;

/// One event's text, written whole when dropped (one `write` per line, so
/// lines of concurrent sessions never interleave).
struct Line {
    text: Vec<u8>,
    severity: u8,
    to_syslog: bool,
}

impl Write for Line {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.text.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.text);
        if self.to_syslog {
            let msg = syslog_message(self.severity, std::process::id(), &text);
            // No syslog: the line is dropped (stderr is the peer's connection).
            if let Ok(s) = UnixDatagram::unbound() {
                let _ = s.send_to(msg.as_bytes(), "/dev/log");
            }
        } else {
            let _ = io::stderr().lock().write_all(journal_line(self.severity, &text).as_bytes());
        }
    }
}

/// `<PRI>csync[PID]: message` for /dev/log.
fn syslog_message(severity: u8, pid: u32, text: &str) -> String {
    format!("<{}>csync[{pid}]: {}", LOCAL0 * 8 + severity, text.trim_end())
}

/// `<N>message\n` for the journal; every line of a multi-line message gets
/// the prefix, or the journal would file the rest at info.
fn journal_line(severity: u8, text: &str) -> String {
    text.trim_end().lines().map(|l| format!("<{severity}>{l}\n")).collect()
}

/// Writes events to syslog.
#[derive(Clone, Copy)]
struct Syslog;

impl<'a> MakeWriter<'a> for Syslog {
    type Writer = Line;
    fn make_writer(&'a self) -> Line {
        Line { text: Vec::new(), severity: 6, to_syslog: true }
    }
    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Line {
        Line { text: Vec::new(), severity: severity(meta.level()), to_syslog: true }
    }
}

/// Writes events to stderr with sd-daemon priority prefixes.
#[derive(Clone, Copy)]
struct Prefixed;

impl<'a> MakeWriter<'a> for Prefixed {
    type Writer = Line;
    fn make_writer(&'a self) -> Line {
        Line { text: Vec::new(), severity: 6, to_syslog: false }
    }
    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Line {
        Line { text: Vec::new(), severity: severity(meta.level()), to_syslog: false }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_follow_the_level() {
        assert_eq!(syslog_message(severity(&Level::ERROR), 7, "x\n"), "<131>csync[7]: x");
        assert_eq!(syslog_message(severity(&Level::WARN), 7, "x"), "<132>csync[7]: x");
        assert_eq!(syslog_message(severity(&Level::INFO), 7, "x"), "<134>csync[7]: x");
        assert_eq!(syslog_message(severity(&Level::DEBUG), 7, "x"), "<135>csync[7]: x");
        assert_eq!(journal_line(severity(&Level::WARN), "refused\n"), "<4>refused\n");
        assert_eq!(journal_line(3, "a\nb\n"), "<3>a\n<3>b\n");
    }

    #[test]
    fn journal_stream_must_name_stderr_itself() {
        assert!(is_stream("64768:12345", 64768, 12345));
        assert!(!is_stream("64768:12345", 64768, 12346));
        assert!(!is_stream("garbage", 1, 2));
        assert!(!is_stream("", 1, 2));
    }
}
