//! The man page csync(1) and the shell completions.
//!
//! OPTIONS comes from clap, so a new flag appears there by itself; the other
//! sections are prose written here, because a generated synopsis of forty
//! flags in one bracket list tells a reader nothing. `doc/csync.1` is this
//! function's output (a test compares them); csync.cfg(5) is hand-written in
//! `doc/csync.cfg.5`.

use std::io::Write;

use clap::CommandFactory;

use super::Args;

const SYNOPSIS: &str = r#".SH SYNOPSIS
.nf
\fBcsync \-x\fR [\fB\-r\fR] [\fB\-d\fR] [\fB\-v\fR] [\fB\-P\fR \fIPEERS\fR] [\fB\-G\fR \fIGROUPS\fR] [\fB\-\-json\fR] [\fIPATH\fR...]
\fBcsync \-c\fR [\fB\-u\fR] [\fB\-r\fR] [\fB\-I\fR] [\fIPATH\fR...]
\fBcsync \-u\fR [\fB\-P\fR \fIPEERS\fR] [\fB\-\-json\fR]
\fBcsync \-m\fR|\fB\-f\fR [\fB\-r\fR] \fIPATH\fR...
\fBcsync \-M\fR|\fB\-L\fR|\fB\-R\fR [\fB\-\-json\fR]
\fBcsync \-T\fR[\fBT\fR|\fBI\fR] [\fB\-\-json\fR] [\fIPATH\fR]
\fBcsync \-i\fR|\fB\-ii\fR [\fB\-p\fR \fIPORT\fR]
\fBcsync\fR [\fB\-ii\fR] \fB\-\-watch\fR [\fB\-\-watch\-delay\fR \fIMS\fR] [\fB\-\-full\-check\-every\fR \fISECS\fR]
\fBcsync \-\-status\fR [\fB\-\-json\fR|\fB\-\-prometheus\fR]
\fBcsync \-\-ping\fR \fIPEER\fR [\fB\-\-json\fR]
\fBcsync \-\-check\-config\fR|\fB\-\-explain\fR \fIPATH\fR [\fB\-\-json\fR]
\fBcsync \-k\fR \fIFILE\fR
\fBcsync \-\-new\-ca\fR \fIDIR\fR [\fB\-\-days\fR \fIN\fR]
\fBcsync \-\-new\-cert\fR \fINAME\fR \fB\-\-ca\fR \fIDIR\fR \fB\-\-out\fR \fIDIR\fR [\fB\-\-days\fR \fIN\fR]
\fBcsync \-\-import\-csync2\fR [\fIDB\fR]
.fi
"#;

const DESCRIPTION: &str = r#".SH DESCRIPTION
\fBcsync\fR keeps files identical across the servers of a cluster. It reads
csync2's configuration (\fBcsync.cfg\fR(5)) and accepts csync2's command-line
letters, so cron lines and units written for csync2 keep working.
.PP
A run (\fBcsync \-x\fR, typically from cron or a systemd timer) first
\fIchecks\fR: it walks the include roots, compares each entry with the index
(a SQLite file) by content, and marks what changed dirty for every peer of
every group that manages it. It then \fIupdates\fR: it connects to each peer
over mutual TLS, proves the group keys, and pushes the dirty entries, large
files as block deltas. A mark is cleared only once the peer confirmed the
entry durably applied. A peer that is down keeps its marks and catches up on
a later run.
.PP
When both sides changed a file, the group's \fBauto\fR rule decides; the
losing version is kept and listed by \fBcsync \-\-status\fR. Actions run
commands (a reload, a cache purge) on the hosts whose files changed.
.PP
Each node runs a listener for its peers: \fBcsync \-ii\fR as a daemon, or
\fBcsync \-i\fR per connection from inetd or a systemd socket. With
\fB\-\-watch\fR it also watches the include roots (inotify) and pushes each
burst of changes within about a second, without cron.
.PP
csync2's other letters (\fB\-h \-H \-S \-o \-W \-F \-U \-X \-B \-A \-t \-s \-l
\-iii\fR) are accepted so scripts keep working; \fBcsync \-\-help\fR says what
each does here, the README's "Migrating from csync2" why.
.PP
csync is silent on success. Errors go to stderr as one line each,
\fBcsync: ...\fR; logs never go to stdout. With \fB\-\-json\fR, reporting
modes print one JSON document on stdout (see \fI/usr/share/doc/csync/json-schema.md\fR).
On a terminal, long transfers show their progress on stderr.
"#;

const REST: &str = r#".SH EXAMPLES
Check and push every change (the everyday command, silent on success):
.PP
.RS
.nf
csync \-x
.fi
.RE
.PP
First time on a node that already holds the files: record them without
marking anything, then compare with the peers:
.PP
.RS
.nf
csync \-cIr /
csync \-T
.fi
.RE
.PP
Make this node's version of a file win over a conflict, and push it:
.PP
.RS
.nf
csync \-f /etc/nginx/nginx.conf && csync \-u
.fi
.RE
.PP
A new cluster identity (run once), and a certificate for host beta:
.PP
.RS
.nf
csync \-\-new\-ca /root/csync\-ca
csync \-\-new\-cert beta \-\-ca /root/csync\-ca \-\-out /tmp/beta
.fi
.RE
.PP
Watch it: what is pending, conflicts, failed actions, certificate expiry;
for node_exporter's textfile collector:
.PP
.RS
.nf
csync \-\-status \-\-json
csync \-\-prometheus > /var/lib/prometheus/node\-exporter/csync.prom.tmp &&
  mv /var/lib/prometheus/node\-exporter/csync.prom.tmp /var/lib/prometheus/node\-exporter/csync.prom
.fi
.RE
.SH FILES
.TP
.I /etc/csync2.cfg
The configuration, \fB$CSYNC2_SYSTEM_DIR\fR/csync2.cfg; csync2_\fINAME\fR.cfg with \fB\-C\fR \fINAME\fR.
See \fBcsync.cfg\fR(5).
.TP
.I /etc/csync2.key_*
Group keys named by the config (mode 0600).
.TP
.I /etc/csync2_ssl_ca.pem, /etc/csync2_ssl_cert.pem, /etc/csync2_ssl_key.pem
The cluster CA, this node's certificate and its key (mode 0600).
.TP
.I /etc/csync2.lock
While it exists, csync refuses to run (a cluster-wide pause).
.TP
.I /var/lib/csync/NODE[_NAME].db
The index (unless \fB\-D\fR or the config's \fBdatabase\fR says otherwise),
created mode 0600.
.TP
.I /lib/systemd/system/csync\-sync.timer
Runs \fBcsync \-x\fR on a schedule; \fIcsync\-daemon.service\fR,
\fIcsync.socket\fR and \fIcsync@.service\fR run the listener;
\fIcsync\-watch.service\fR runs \fBcsync \-ii \-\-watch\fR (listener and watcher).
.SH ENVIRONMENT
.TP
.B CSYNC2_SYSTEM_DIR
The system directory holding the config, keys and identity (default \fI/etc\fR).
.TP
.B CSYNC_IN_ACTION
Set for every action command; a csync run inside an action leaves its own
actions to the next run.
.TP
.B JOURNAL_STREAM
Set by systemd when stderr is the journal: log lines then carry no timestamp
and start with a \fB<N>\fR priority prefix.
.TP
.B LISTEN_FDS, LISTEN_PID
systemd socket activation for \fBcsync \-ii\fR.
.SH EXIT STATUS
.TP
.B 0
Success.
.TP
.B 1
Any error: a bad config, a failed path or peer, an unresolved conflict, a
failed action; \fB\-\-status\fR: something is pending, open or failed.
.TP
.B 2
A listing (\fB\-L\fR, \fB\-M\fR) found nothing, or \fB\-T\fR found everything in sync.
.SH SEE ALSO
\fBcsync.cfg\fR(5), \fBcsync2\fR(1), \fBsystemd.timer\fR(5), \fBcron\fR(8)
"#;

/// csync(1) in roff: title and NAME from clap, SYNOPSIS and DESCRIPTION by
/// hand, OPTIONS from clap (one subsection per help heading), the rest by hand.
pub fn page() -> std::io::Result<Vec<u8>> {
    let man = clap_mangen::Man::new(Args::command());
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    out.write_all(SYNOPSIS.as_bytes())?;
    out.write_all(DESCRIPTION.as_bytes())?;
    let mut opts = Vec::new();
    man.render_options_section(&mut opts)?;
    out.write_all(options_with_subsections(&String::from_utf8_lossy(&opts)).as_bytes())?;
    out.write_all(REST.as_bytes())?;
    Ok(out)
}

/// clap_mangen writes each help heading as its own `.SH` after the plain
/// options; a reader wants one OPTIONS section, modes first.
fn options_with_subsections(roff: &str) -> String {
    let mut general = String::new();
    let mut headed = String::new();
    let mut in_general = true;
    for line in roff.lines() {
        if line == ".SH OPTIONS" {
            in_general = true;
            continue;
        }
        if let Some(h) = line.strip_prefix(".SH ") {
            in_general = false;
            let mut title = h.to_lowercase();
            if let Some(first) = title.get(0..1) {
                title.replace_range(0..1, &first.to_uppercase());
            }
            headed.push_str(&format!(".SS {title}\n"));
            continue;
        }
        let dest = if in_general { &mut general } else { &mut headed };
        dest.push_str(line);
        dest.push('\n');
    }
    format!(".SH OPTIONS\n{headed}.SS Other options\n{general}")
}

/// Completion script for `shell` (`csync --completions bash|zsh|fish|...`).
pub fn completions(shell: clap_complete::Shell) -> Vec<u8> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Args::command(), "csync", &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo_file(name: &str) -> String {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(name);
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    #[test]
    fn doc_csync_1_is_what_the_binary_renders() {
        let now = String::from_utf8(page().unwrap()).unwrap();
        assert!(
            now == repo_file("doc/csync.1"),
            "doc/csync.1 is stale: regenerate with `cargo run -- --man > doc/csync.1`"
        );
    }

    #[test]
    fn the_page_has_every_section_a_reader_looks_for() {
        let page = String::from_utf8(page().unwrap()).unwrap();
        for s in [
            "NAME",
            "SYNOPSIS",
            "DESCRIPTION",
            "OPTIONS",
            "EXAMPLES",
            "FILES",
            "ENVIRONMENT",
            "EXIT STATUS",
            "SEE ALSO",
        ] {
            assert_eq!(page.matches(&format!("\n.SH {s}\n")).count(), 1, "section {s}");
        }
        assert!(!page.contains(".SH EXTRA"), "after_help must not be dumped into the page");
        // Every visible flag is documented in OPTIONS.
        let cmd = Args::command();
        for a in cmd.get_arguments().filter(|a| !a.is_hide_set()) {
            let flag = match (a.get_long(), a.get_short()) {
                (Some(l), _) => format!("\\-\\-{}", l.replace('-', "\\-")),
                (None, Some(s)) => format!("\\fB\\-{s}"),
                _ => continue,
            };
            assert!(page.contains(&flag), "{flag} missing from the man page");
        }
    }

    #[test]
    fn csync_cfg_5_describes_every_config_keyword() {
        let page = repo_file("doc/csync.cfg.5");
        for kw in crate::config::keywords() {
            let roff = format!("\\fB{}", kw.replace('-', "\\-"));
            let plain = kw.replace('-', "\\-");
            assert!(
                page.contains(&roff) || page.contains(&format!("\\fB{plain};")),
                "doc/csync.cfg.5 does not describe `{kw}`"
            );
        }
        for s in ["NAME", "SYNOPSIS", "DESCRIPTION", "FILES", "SEE ALSO"] {
            assert!(page.contains(&format!("\n.SH {s}\n")), "section {s}");
        }
    }

    #[test]
    fn completions_cover_the_three_shells() {
        for (shell, marker) in [
            (clap_complete::Shell::Bash, "complete -F"),
            (clap_complete::Shell::Zsh, "#compdef csync"),
            (clap_complete::Shell::Fish, "complete -c csync"),
        ] {
            let text = String::from_utf8(completions(shell)).unwrap();
            assert!(text.contains(marker), "{shell}: {marker}");
            assert!(text.contains("check-config"), "{shell} completes long options");
        }
    }
}
