//! The resolved configuration: what the rest of csync reads.
//!
//! `config::load` turns csync2 syntax into these plain data types. Nothing here
//! touches the filesystem or the network; the parser and the resolver fill them in.

use std::fmt;
use std::path::PathBuf;

use crate::diag::Span;
pub use crate::pattern::{Rule, RuleKind};

/// A fully parsed and resolved configuration, as seen from one node.
#[derive(Debug, Clone)]
pub struct Config {
    /// The main config file that was loaded.
    pub source: PathBuf,
    /// This node's name (lower-cased), from `-N` or the host name.
    pub myname: String,
    /// Every group of the file, in file order, members or not.
    pub groups: Vec<Group>,
    /// Every `prefix` block, in file order.
    pub prefixes: Vec<Prefix>,
    /// `nossl FROM TO;` rules: accepted for compatibility, never honoured.
    pub nossl: Vec<(String, String)>,
    /// Global `ignore uid|gid|mod;` flags.
    pub ignore: Ignore,
    /// `database STRING;` (used only when `-D` is not given).
    pub database: Option<String>,
    /// `tempdir DIR;`.
    pub tempdir: Option<PathBuf>,
    /// `lock-timeout SECONDS;`.
    pub lock_timeout: Option<u32>,
    /// Non-fatal findings (e.g. `nossl` ignored), already rendered as diagnostics.
    pub warnings: Vec<String>,
}

/// `ignore uid gid mod;`: fields left out of change detection and of apply.
/// The one struct for it everywhere (scan, version, apply): config only names it.
pub use crate::types::IgnoreFields as Ignore;

/// One `group NAME { … }` block.
#[derive(Debug, Clone)]
pub struct Group {
    /// The group's name; nameless groups get `group_1`, `group_2`, … as in csync2.
    pub name: String,
    /// Where the group was declared.
    pub span: Span,
    /// Hosts in file order, across all `host` statements.
    pub hosts: Vec<Host>,
    /// The key file as written, resolved against the system dir when relative.
    pub key_file: PathBuf,
    /// The key's content, validated (csync2 rules). Present whenever the group is usable.
    pub key: Option<GroupKey>,
    /// include/exclude/compare patterns, in file order, trailing slashes stripped.
    pub rules: Vec<Rule>,
    /// The `auto` conflict rule (default `none`).
    pub auto: AutoMethod,
    /// Actions in file order (csync2 reversed them; we do not).
    pub actions: Vec<Action>,
    /// `backup-directory DIR;`.
    pub backup_directory: Option<PathBuf>,
    /// `backup-generations N;` (default 3).
    pub backup_generations: u32,
    /// `allow-devices;` (our extension): peers may create device nodes here.
    /// Off by default: a device node is raw access to a disk or to memory, so
    /// whoever holds the group key would own this host.
    pub allow_devices: bool,
    /// `allow-setid;` (our extension): setuid/setgid bits from peers are kept.
    /// Off by default: they are stripped, so a pushed binary cannot become a
    /// way to root here.
    pub allow_setid: bool,
    /// `owners MIN-MAX;` (our extension): the numeric uids and gids peers may
    /// give files here, inclusive; a file owned outside it is refused. `None`
    /// (the default): any, because csync2 configs rely on syncing owners.
    pub owner_range: Option<(u32, u32)>,
    /// True when this node is one of `hosts` (and the group is active under `-G`).
    pub is_member: bool,
}

impl Group {
    /// This node's entry in the host list, when it is a member.
    pub fn me<'a>(&'a self, myname: &str) -> Option<&'a Host> {
        self.hosts.iter().find(|h| h.name == myname)
    }

    /// The other hosts of the group (this node excluded), in file order.
    pub fn peers<'a>(&'a self, myname: &'a str) -> impl Iterator<Item = &'a Host> + 'a {
        self.hosts.iter().filter(move |h| h.name != myname)
    }
}

/// One host of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// The host's name, lower-cased: what its certificate and `-N` say.
    pub name: String,
    /// `name@addr`: the address to connect to, when it differs from the name.
    pub addr: Option<String>,
    /// Written in parentheses: receives changes, never pushes, loses every conflict.
    pub receive_only: bool,
}

/// csync2's `auto` methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AutoMethod {
    /// Report the conflict, change nothing.
    #[default]
    None,
    /// The pushing node wins.
    First,
    /// Newer mtime wins.
    Younger,
    /// Older mtime wins.
    Older,
    /// Bigger size wins.
    Bigger,
    /// Smaller size wins.
    Smaller,
    /// The host further left in the host list wins.
    Left,
    /// The host further right in the host list wins.
    Right,
}

impl AutoMethod {
    /// Parses csync2's spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "none" => Self::None,
            "first" => Self::First,
            "younger" => Self::Younger,
            "older" => Self::Older,
            "bigger" => Self::Bigger,
            "smaller" => Self::Smaller,
            "left" => Self::Left,
            "right" => Self::Right,
            _ => return None,
        })
    }

    /// csync2's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::First => "first",
            Self::Younger => "younger",
            Self::Older => "older",
            Self::Bigger => "bigger",
            Self::Smaller => "smaller",
            Self::Left => "left",
            Self::Right => "right",
        }
    }
}

/// One `action { … }` block.
#[derive(Debug, Clone, Default)]
pub struct Action {
    /// `pattern P…;` in file order; empty means every file of the group.
    pub patterns: Vec<String>,
    /// `exec "CMD";` commands in file order.
    pub exec: Vec<String>,
    /// `logfile F;`.
    pub logfile: Option<PathBuf>,
    /// `do-local;` (also set by `do-local-only`).
    pub do_local: bool,
    /// `do-local-only;`.
    pub do_local_only: bool,
    /// `timeout SECONDS;` (our extension): a command still running after it
    /// is killed. `None`: [`Action::DEFAULT_TIMEOUT`].
    pub timeout: Option<u32>,
    /// Where the block starts.
    pub span: Span,
}

impl Action {
    /// Seconds an action may run when it sets no `timeout`.
    pub const DEFAULT_TIMEOUT: u32 = 60;

    /// The timeout in seconds, default applied.
    pub fn timeout_s(&self) -> u32 {
        self.timeout.unwrap_or(Self::DEFAULT_TIMEOUT)
    }
}

/// One `prefix NAME { on HOSTPATTERN: /path; … }` block.
#[derive(Debug, Clone)]
pub struct Prefix {
    /// The name used as `%NAME%`.
    pub name: String,
    /// `(host pattern, absolute path)` pairs in file order, trailing slashes stripped.
    pub entries: Vec<(String, PathBuf)>,
    /// The path of the first entry whose fnmatch pattern matches this node's name.
    pub local: Option<PathBuf>,
    /// Where the block starts.
    pub span: Span,
}

/// A group key: secret, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct GroupKey(pub String);

impl fmt::Debug for GroupKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("GroupKey(<redacted>)")
    }
}

impl Config {
    /// Groups this node is a member of, in file order.
    pub fn my_groups(&self) -> impl Iterator<Item = &Group> {
        self.groups.iter().filter(|g| g.is_member)
    }

    /// The local directory of prefix `name` on this node.
    pub fn prefix_root(&self, name: &str) -> Option<&PathBuf> {
        self.prefixes.iter().find(|p| p.name == name).and_then(|p| p.local.as_ref())
    }
}
