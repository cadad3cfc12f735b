//! The command line: csync2's single letters (so cron lines and units written
//! for csync2 keep working) plus our long options.

use std::path::PathBuf;

use clap::builder::TypedValueParser;
use clap::{ArgAction, Parser};

const AFTER_HELP: &str = "\
Identities: csync --new-ca DIR [--days N]; csync --new-cert NAME --ca DIR --out DIR2
[--days N] (validity: CA 7300 days, node certificates 3650 by default).
Each node needs csync2_ssl_ca.pem, csync2_ssl_cert.pem and csync2_ssl_key.pem
(0600) in the system dir.

Exit status: 0 success; 1 any error (failed peer, conflict, failed action, bad
config); 2 a listing found nothing, or -T found everything in sync.

csync2's other letters, accepted so scripts and units keep working:
  -h PATH...    csync2's hints (for -c without paths): csync has no hint table and
                -c always checks everything, so hints are accepted and dropped;
                -h alone prints this help (csync2 has no --help)
  -H            list hints: always empty (exit 2)
  -S NAME PEER  list the index entries NAME shares with PEER (as -L)
  -T NAME PEER [PATH]  the in-sync test against PEER, as this node NAME
  -o [-r] PATH  print the managed paths below PATH (-P: of groups with those peers)
  -iii          serve exactly one connection on the port, then exit (a first
                contact with a new peer takes two: use -ii for that one)
  -W FD         with -c/-x: write the managed directories the check recursed
                into (-r PATH, or every root) to FD, each NUL-terminated
  -F            with -m: the marks are forced (as -f); elsewhere ignored
  -U, -X        with -TI: csync marks differences for every peer (-U's one-peer
                limit is not needed: a peer that has the version costs nothing);
                -X's deletions on the peer are not made: delete there by hand
  -B -A -t -s F -l  accepted, nothing to do: the index commits small
                transactions in WAL mode (-B, -A); log lines carry their own
                time (-t, -s); csync logs to stderr, the journal under systemd (-l)
  --import-csync2 [DB]  reuse a csync2 database (README: Migrating from csync2)

Files: config <sysdir>/csync2.cfg (or csync2_NAME.cfg with -C NAME), where
sysdir is $CSYNC2_SYSTEM_DIR or /etc; index /var/lib/csync/<node>[_NAME].db.
More: man csync, man csync.cfg (config syntax, actions).";

/// Parsed command-line arguments.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "csync",
    version,
    about = "Keep files identical across the servers of a cluster (csync2 compatible).",
    after_help = AFTER_HELP,
    disable_help_flag = true,
    args_override_self = true
)]
pub struct Args {
    /// Check, then update: find local changes and push everything dirty to every peer.
    #[arg(short = 'x', help_heading = "Modes")]
    pub sync: bool,
    /// Check only: update the index and the dirty marks (no network).
    #[arg(short = 'c', help_heading = "Modes")]
    pub check: bool,
    /// Update only: push what is dirty (-cu = check, then update).
    #[arg(short = 'u', help_heading = "Modes")]
    pub update: bool,
    /// Mark PATHs dirty for every peer.
    #[arg(short = 'm', help_heading = "Modes")]
    pub mark: bool,
    /// Force: this node's version of PATHs wins the next push, even over a conflict.
    #[arg(short = 'f', help_heading = "Modes")]
    pub force: bool,
    /// List dirty entries: force|chary, this node, peer, path (tab-separated).
    #[arg(short = 'M', help_heading = "Modes")]
    pub list_dirty: bool,
    /// List the index: state and path (tab-separated).
    #[arg(short = 'L', help_heading = "Modes")]
    pub list: bool,
    /// In-sync test against peers (-TT: with unified diffs; -TI: mark what differs).
    #[arg(short = 'T', action = ArgAction::Count, help_heading = "Modes")]
    pub test: u8,
    /// Remove index rows that no longer match the config.
    #[arg(short = 'R', help_heading = "Modes")]
    pub prune: bool,
    /// Serve one connection on stdin/stdout (-ii: standalone listener daemon).
    #[arg(short = 'i', action = ArgAction::Count, help_heading = "Modes")]
    pub serve: u8,
    /// Create a new group key FILE (mode 0600, refuses to overwrite).
    #[arg(short = 'k', value_name = "FILE", help_heading = "Modes")]
    pub keygen: Option<PathBuf>,
    /// Parse and resolve the config, print a summary, check this node's identity
    /// and key files, and exit (1 when a run would fail; warnings otherwise).
    #[arg(long, help_heading = "Modes")]
    pub check_config: bool,
    /// Say which group and which pattern decide whether PATH is managed.
    #[arg(long, value_name = "PATH", help_heading = "Modes")]
    pub explain: Option<PathBuf>,
    /// Show what is pending per peer, every conflict met with where the
    /// losing version was kept, and every action that failed (here or on a
    /// peer this node pushed to) and has not worked since.
    #[arg(long, help_heading = "Modes")]
    pub status: bool,
    /// Acknowledge the conflicts recorded on the given paths (all without
    /// paths): `--status` no longer lists them as open. The kept copies stay.
    #[arg(long, help_heading = "Modes")]
    pub ack_conflicts: bool,
    /// Forget the failed actions --status lists, once dealt with by hand:
    /// all of them, or only those that ran on HOST (a peer, or this node's
    /// name). They are also forgotten when the same command succeeds later.
    #[arg(
        long,
        value_name = "HOST",
        num_args = 0..=1,
        default_missing_value = "",
        help_heading = "Modes"
    )]
    pub ack_failed: Option<String>,
    /// Connect to PEER over mutual TLS, prove the shared group keys, and report
    /// the protocol version, verified identity, round trip and clock offset.
    #[arg(long, value_name = "PEER", help_heading = "Modes")]
    pub ping: Option<String>,
    /// Create a cluster CA in DIR (csync2_ssl_ca.pem and csync2_ssl_ca.key, 0600).
    #[arg(long, value_name = "DIR", help_heading = "Identities")]
    pub new_ca: Option<PathBuf>,
    /// Create a certificate and key for host NAME, signed by the CA in --ca, into --out.
    #[arg(long, value_name = "NAME", requires_all = ["ca", "out"], help_heading = "Identities")]
    pub new_cert: Option<String>,
    /// The CA directory for --new-cert.
    #[arg(long, value_name = "DIR", help_heading = "Identities")]
    pub ca: Option<PathBuf>,
    /// The output directory for --new-cert (csync2_ssl_cert.pem, csync2_ssl_key.pem, CA copy).
    #[arg(long, value_name = "DIR", help_heading = "Identities")]
    pub out: Option<PathBuf>,
    /// Connect timeout in seconds: resolving, TCP, TLS and the handshake together
    /// (a dead peer costs at most this).
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    pub timeout: f64,
    /// Idle timeout in seconds for every later read and write.
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    pub idle_timeout: f64,
    /// Listener (-i, -ii): longest a peer's session may last, in seconds,
    /// however it stalls (14400: 4 hours).
    #[arg(long, value_name = "SECS", default_value_t = 14400.0)]
    pub session_timeout: f64,

    /// Watch mode: inotify on the include roots; each burst of changes is
    /// checked and pushed to every peer at once (with -ii: also serve peers).
    #[arg(long, help_heading = "Modes")]
    pub watch: bool,
    /// Watch mode: quiet time in ms that ends a burst (capped at 10x, >= 1 s).
    #[arg(long, value_name = "MS", default_value_t = crate::watch::DEFAULT_DELAY_MS)]
    pub watch_delay: u64,
    /// Watch mode: a full check runs this often anyway, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = crate::watch::DEFAULT_FULL_CHECK_SECS)]
    pub full_check_every: u64,

    /// Recurse into directories given as PATHs.
    #[arg(short = 'r')]
    pub recursive: bool,
    /// Init run: record the current state without marking anything dirty.
    #[arg(short = 'I')]
    pub init: bool,
    /// Dry run: say what would be sent, change nothing anywhere.
    #[arg(short = 'd')]
    pub dry_run: bool,
    /// More detail (-v, -vv, -vvv); silent on success by default.
    #[arg(short = 'v', action = ArgAction::Count)]
    pub verbose: u8,
    /// This node's name (default: the host name, lower-cased).
    #[arg(short = 'N', value_name = "NAME")]
    pub node: Option<String>,
    /// Config name: use <sysdir>/csync2_NAME.cfg and index <node>_NAME.db.
    #[arg(short = 'C', value_name = "NAME")]
    pub cfgname: Option<String>,
    /// Index location: a directory, or a file ending in .db.
    #[arg(short = 'D', value_name = "DIR")]
    pub database: Option<String>,
    /// TCP port (default 30865).
    #[arg(short = 'p', value_name = "PORT")]
    pub port: Option<u16>,
    /// Only these peers (comma-separated).
    #[arg(short = 'P', value_name = "PEERS", value_delimiter = ',')]
    pub peers: Vec<String>,
    /// Only these groups (comma-separated).
    #[arg(short = 'G', value_name = "GROUPS", value_delimiter = ',')]
    pub groups: Vec<String>,
    /// Use this config file (overrides -C and the system dir).
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Output one JSON document on stdout (listings, -x/-u/-c and -T reports,
    /// --status, --ping, --check-config, --explain, --import-csync2); see
    /// doc/json-schema.md.
    #[arg(long)]
    pub json: bool,
    /// Accepted for csync2 compatibility (-l: log to syslog); csync logs to stderr.
    #[arg(short = 'l', hide = true)]
    pub syslog: bool,
    /// Print help.
    #[arg(long, action = ArgAction::Help)]
    pub help: Option<bool>,
    /// csync2's `-h` (add hints; alone: print help). See the letters below.
    #[arg(short = 'h', hide = true)]
    pub hint: bool,
    /// csync2's `-H` (list hints): there are none.
    #[arg(short = 'H', hide = true)]
    pub list_hints: bool,
    /// csync2's `-S NAME PEER`: index entries relevant to that pair.
    #[arg(short = 'S', hide = true)]
    pub list_pair: bool,
    /// csync2's `-o`: the managed paths below the given PATHs.
    #[arg(short = 'o', hide = true)]
    pub compare: bool,
    /// csync2's `-B` (no big transactions): nothing to do.
    #[arg(short = 'B', hide = true)]
    pub no_big_transactions: bool,
    /// csync2's `-A` (sqlite synchronous=OFF): nothing to do.
    #[arg(short = 'A', hide = true)]
    pub db_async: bool,
    /// csync2's `-t` (timestamps in the debug output): nothing to do.
    #[arg(short = 't', hide = true)]
    pub timestamps: bool,
    /// csync2's `-s FILE` (timestamps into FILE): nothing to do.
    #[arg(short = 's', value_name = "FILE", hide = true)]
    pub stamps_file: Option<PathBuf>,
    /// csync2's `-X` (with -TI: mark remote-only entries for deletion).
    #[arg(short = 'X', hide = true)]
    pub mark_remote: bool,
    /// csync2's `-U` (with -TI: mark only towards the tested peer).
    #[arg(short = 'U', hide = true)]
    pub mark_one_peer: bool,
    /// csync2's `-F` (new dirty marks are forced).
    #[arg(short = 'F', hide = true)]
    pub forced_marks: bool,
    /// csync2's `-W FD`: after a check, the checked directories, NUL-terminated, to FD.
    #[arg(short = 'W', value_name = "FD", hide = true)]
    pub paths_fd: Option<u32>,
    /// Import a csync2 2.0 database (default /var/lib/csync2/<node>[_NAME].db3,
    /// only read): its agreed and dirty state becomes this index's.
    #[arg(
        long,
        value_name = "DB",
        num_args = 0..=1,
        default_missing_value = "",
        // PathBuf's own parser refuses the empty "no DB given" value.
        value_parser = clap::builder::OsStringValueParser::new().map(PathBuf::from),
        help_heading = "Modes"
    )]
    pub import_csync2: Option<PathBuf>,
    /// Validity in days of what --new-ca / --new-cert create.
    #[arg(long, value_name = "N", help_heading = "Identities",
          value_parser = clap::value_parser!(u32).range(1..=36500))]
    pub days: Option<u32>,
    /// Print the man page (roff) and exit: `csync --man > csync.1`.
    #[arg(long, hide = true)]
    pub man: bool,
    /// Print a completion script for SHELL and exit (used by packaging).
    #[arg(long, hide = true, value_name = "SHELL")]
    pub completions: Option<clap_complete::Shell>,
    /// `--status` as Prometheus text (node_exporter's textfile collector);
    /// exits 0 whenever the metrics were written.
    #[arg(long, help_heading = "Modes")]
    pub prometheus: bool,

    /// Paths to check, mark, force or explain.
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,
}

/// The one thing a run does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `-x`.
    Sync,
    /// `-c` (and `-cu`, with `update`).
    Check {
        /// `-cu`: update afterwards.
        update: bool,
    },
    /// `-u`.
    Update,
    /// `-m`.
    Mark,
    /// `-f`.
    Force,
    /// `-M`.
    ListDirty,
    /// `-L`.
    List,
    /// `-T`/`-TT`.
    Test,
    /// `-R`.
    Prune,
    /// `-i`/`-ii`.
    Serve,
    /// `-k FILE`.
    Keygen,
    /// `--check-config`.
    CheckConfig,
    /// `--explain PATH`.
    Explain,
    /// `--ping PEER`.
    Ping,
    /// `--watch` (without `-ii`).
    Watch,
    /// `--status`.
    Status,
    /// `--ack-conflicts [PATH…]`.
    AckConflicts,
    /// `--ack-failed [HOST]`.
    AckFailed,
    /// `--new-ca DIR`.
    NewCa,
    /// `--new-cert NAME --ca DIR --out DIR`.
    NewCert,
    /// csync2's `-h PATH…` (alone: help).
    Hint,
    /// csync2's `-H`.
    ListHints,
    /// csync2's `-S NAME PEER`.
    ListPair,
    /// csync2's `-o PATH…`.
    Compare,
    /// `--import-csync2 [DB]`.
    ImportCsync2,
}

impl Args {
    /// The mode asked for.
    ///
    /// # Errors
    /// When no mode or more than one is given (csync2 printed its help then).
    pub fn mode(&self) -> Result<Mode, String> {
        let mut modes = Vec::new();
        let mut add = |on: bool, m: Mode, flag: &'static str| {
            if on {
                modes.push((m, flag));
            }
        };
        add(self.sync, Mode::Sync, "-x");
        add(self.check, Mode::Check { update: self.update }, "-c");
        add(self.update && !self.check, Mode::Update, "-u");
        add(self.mark, Mode::Mark, "-m");
        add(self.force, Mode::Force, "-f");
        add(self.list_dirty, Mode::ListDirty, "-M");
        add(self.list, Mode::List, "-L");
        add(self.test > 0, Mode::Test, "-T");
        add(self.prune, Mode::Prune, "-R");
        add(self.serve > 0, Mode::Serve, "-i");
        add(self.watch && self.serve == 0, Mode::Watch, "--watch");
        add(self.keygen.is_some(), Mode::Keygen, "-k");
        add(self.check_config, Mode::CheckConfig, "--check-config");
        add(self.explain.is_some(), Mode::Explain, "--explain");
        add(self.ping.is_some(), Mode::Ping, "--ping");
        add(self.status || self.prometheus, Mode::Status, "--status");
        add(self.ack_conflicts, Mode::AckConflicts, "--ack-conflicts");
        add(self.ack_failed.is_some(), Mode::AckFailed, "--ack-failed");
        add(self.new_ca.is_some(), Mode::NewCa, "--new-ca");
        add(self.new_cert.is_some(), Mode::NewCert, "--new-cert");
        add(self.list_hints, Mode::ListHints, "-H");
        add(self.list_pair, Mode::ListPair, "-S");
        add(self.compare, Mode::Compare, "-o");
        add(self.import_csync2.is_some(), Mode::ImportCsync2, "--import-csync2");
        // csync2's -h is a mode of its own; beside another mode it changes nothing.
        if self.hint && modes.is_empty() {
            modes.push((Mode::Hint, "-h"));
        }
        match modes.as_slice() {
            [] => {
                Err("no mode given: use one of -x -c -u -m -f -M -L -T -R -i -k (see --help)"
                    .into())
            }
            [(m, _)] => Ok(*m),
            many => Err(format!(
                "only one mode at a time, got {} (only -c and -u combine)",
                many.iter().map(|(_, f)| *f).collect::<Vec<_>>().join(" ")
            )),
        }
    }
}
