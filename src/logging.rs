//! Where log lines go: stderr normally; syslog when stderr is a socket (inetd
//! hands the connection on fds 0, 1 and 2, so writing there would corrupt the
//! protocol). Logs never go to stdout.

use std::io::{self, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixDatagram;

use tracing::Level;
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
    let _ = if stderr_is_socket() {
        builder.with_ansi(false).without_time().with_writer(Syslog).try_init()
    } else {
        builder.with_ansi(false).with_writer(io::stderr).try_init()
    };
}

fn stderr_is_socket() -> bool {
    rustix::fs::fstat(io::stderr().as_fd())
        .map(|st| rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Socket)
        .unwrap_or(false)
}

/// Writes each log event as one datagram to `/dev/log` (facility local0, as
/// csync2), dropping it silently when there is no syslog.
#[derive(Clone, Copy)]
struct Syslog;

/// One event's text, sent on drop.
struct SyslogLine(Vec<u8>);

impl Write for SyslogLine {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for SyslogLine {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.0);
        let msg = format!("<134>csync[{}]: {}", std::process::id(), text.trim_end());
        if let Ok(s) = UnixDatagram::unbound() {
            let _ = s.send_to(msg.as_bytes(), "/dev/log");
        }
    }
}

impl<'a> MakeWriter<'a> for Syslog {
    type Writer = SyslogLine;
    fn make_writer(&'a self) -> SyslogLine {
        SyslogLine(Vec::new())
    }
}
