//! Progress of long transfers on a terminal: one line on stderr, redrawn
//! four times a second, per peer entries done of planned, bytes sent and
//! rate. Only when stderr is a terminal and the output is not JSON, and only
//! once a run has gone on for a second and its push started, so a quick run
//! and any run from cron or a unit print nothing extra. The line is erased
//! when the run ends.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The display while it runs; dropping it ends it and erases its line.
pub struct Display {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// How long a run goes on before its progress is shown. `CSYNC_PROGRESS_AFTER_MS`
/// overrides it (for the tests, which cannot make a transfer slow on cue).
fn delay() -> Duration {
    std::env::var("CSYNC_PROGRESS_AFTER_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(Duration::from_secs(1), Duration::from_millis)
}

impl Display {
    /// Starts the display if it belongs here (stderr a terminal, not `--json`).
    pub fn start(json: bool) -> Option<Display> {
        if json || !std::io::stderr().is_terminal() {
            return None;
        }
        crate::progress::enable();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("csync-progress".into())
            .spawn(move || draw(&flag))
            .ok()?;
        Some(Display { stop, thread: Some(thread) })
    }

    fn finish(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Display {
    fn drop(&mut self) {
        self.finish();
    }
}

fn draw(stop: &AtomicBool) {
    let started = Instant::now();
    let after = delay();
    let mut shown = false;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
        if started.elapsed() < after || stop.load(Ordering::Relaxed) {
            continue;
        }
        let line = render(&crate::progress::snapshot(), started.elapsed());
        if !line.is_empty() {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[K{line}");
            let _ = err.flush();
            shown = true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    if shown {
        let _ = write!(std::io::stderr().lock(), "\r\x1b[K");
    }
}

/// The progress line: `csync: beta 12/340 files 45.3 MiB 11.2 MiB/s | gamma …`.
pub fn render(peers: &[(String, u64, u64, u64)], elapsed: Duration) -> String {
    if peers.is_empty() {
        return String::new();
    }
    let secs = elapsed.as_secs_f64().max(0.001);
    let parts: Vec<String> = peers
        .iter()
        .map(|(peer, planned, done, bytes)| {
            format!(
                "{peer} {done}/{planned} files {} {}/s",
                size(*bytes as f64),
                size(*bytes as f64 / secs)
            )
        })
        .collect();
    format!("csync: {}", parts.join(" | "))
}

fn size(b: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{v:.0} {}", UNITS[u]) } else { format!("{v:.1} {}", UNITS[u]) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_names_each_peer_with_files_bytes_and_rate() {
        let line = render(
            &[("beta".into(), 340, 12, 47_500_000), ("gamma".into(), 340, 340, 0)],
            Duration::from_secs(4),
        );
        assert_eq!(
            line,
            "csync: beta 12/340 files 45.3 MiB 11.3 MiB/s | gamma 340/340 files 0 B 0 B/s"
        );
        assert_eq!(render(&[], Duration::from_secs(1)), "");
    }
}
