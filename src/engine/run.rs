//! One run: check, then push to every peer, then the actions owed here. The
//! CLI (`-x`, `-c`, `-u`, `-cu`) and the watcher call this one function, so a
//! run has one sequence and one outcome type wherever it starts.

use std::path::PathBuf;

use super::push::{UpdateOptions, UpdateReport};
use super::{CheckOptions, CheckReport, Error, Node};
use crate::actions::{self, Ran};
use crate::net::client::ClientSettings;

/// What a run does. Each phase is optional; they always run in this order.
#[derive(Clone, Default)]
pub struct RunRequest {
    /// Check the disk against the index (`-c`); `None` skips the check.
    pub check: Option<CheckOptions>,
    /// Push what is dirty (`-u`); `None` skips the push.
    pub push: Option<PushRequest>,
    /// Run the actions owed here at the end (never in a dry run, nor from a
    /// csync started by an action, which would wait on its parent's lock).
    pub actions: bool,
}

/// The push phase of a run.
#[derive(Clone, Default)]
pub struct PushRequest {
    /// Only these peers (`-P`); empty: every peer.
    pub peers: Vec<String>,
    /// Only these command-line paths; empty: everything dirty.
    pub paths: Vec<PathBuf>,
    /// Paths stand for what lies below them too.
    pub recursive: bool,
    /// Plan only: say what would be pushed, connect nowhere, change nothing.
    pub dry_run: bool,
    /// TLS and timeouts; `None` only in a dry run without an identity.
    pub client: Option<ClientSettings>,
    /// The peers' port.
    pub port: u16,
}

/// How the push phase went.
#[derive(Debug, Default)]
pub struct PushOutcome {
    /// Command-line paths no group manages (ignored, reported).
    pub ignored_args: Vec<PathBuf>,
    /// Paths were given and no group manages any of them: nothing was pushed.
    pub nothing_managed: bool,
    /// The per-peer report; `None` when nothing was dirty and every peer had
    /// been met before, so nothing connected.
    pub report: Option<UpdateReport>,
}

/// What a run did, phase by phase. A phase that failed as a whole holds its
/// error; later phases still ran (a failed check still pushes what was
/// already dirty, and owed actions run whatever happened before).
#[derive(Debug)]
pub struct RunOutcome {
    /// The check, when requested.
    pub check: Option<Result<CheckReport, Error>>,
    /// The push, when requested.
    pub push: Option<Result<PushOutcome, Error>>,
    /// The actions that ran here (empty when none were owed or none asked).
    pub actions: Result<Vec<Ran>, Error>,
}

impl RunOutcome {
    /// True when every phase succeeded: no per-path problem, no failed peer,
    /// no held-back delete, no failed action. What `-x` exits 0 on.
    pub fn is_clean(&self) -> bool {
        let check = match &self.check {
            None => true,
            Some(Ok(r)) => r.errors.is_empty() && r.ignored_args.is_empty(),
            Some(Err(_)) => false,
        };
        let push = match &self.push {
            None => true,
            Some(Ok(p)) => {
                !p.nothing_managed && p.report.as_ref().is_none_or(UpdateReport::is_clean)
            }
            Some(Err(_)) => false,
        };
        let actions = match &self.actions {
            Ok(ran) => ran.iter().all(|r| r.result.status.ok()),
            Err(_) => false,
        };
        check && push && actions
    }
}

impl Node {
    /// Performs one run as `req` says and returns what each phase did.
    pub fn run(&mut self, req: &RunRequest) -> RunOutcome {
        self.run_with(req, true)
    }

    /// [`Node::run`], with the check's changed paths listed only when
    /// `list_changed` is true (counted otherwise; see [`Node::check_with`]).
    pub fn run_with(&mut self, req: &RunRequest, list_changed: bool) -> RunOutcome {
        let mut out = RunOutcome {
            check: req.check.as_ref().map(|opts| self.check_with(opts, list_changed)),
            push: None,
            actions: Ok(Vec::new()),
        };
        if let Some(push) = &req.push {
            out.push = Some(self.push(push));
        }
        let dry_run = req.push.as_ref().is_some_and(|p| p.dry_run);
        if req.actions && !dry_run && std::env::var_os(crate::actions::IN_ACTION).is_none() {
            let owner = self.actions.owner().to_string();
            let host = self.config.myname.clone();
            out.actions =
                actions::run_owed(&mut self.index, &owner, &host, &mut || {}).map_err(Error::from);
        }
        out
    }

    /// The push phase: maps command-line paths, skips connecting when there
    /// is nothing to say to anyone, and pushes.
    fn push(&mut self, req: &PushRequest) -> Result<PushOutcome, Error> {
        let mut out = PushOutcome::default();
        let mut paths = Vec::new();
        for p in &req.paths {
            let forms = self.arg_forms(p, req.recursive);
            if forms.is_empty() {
                out.ignored_args.push(p.clone());
            }
            paths.extend(forms.into_iter().map(|(db, _)| (db, req.recursive)));
        }
        if !req.paths.is_empty() && paths.is_empty() {
            out.nothing_managed = true;
            return Ok(out);
        }
        let opts = UpdateOptions { peers: req.peers.clone(), paths, dry_run: req.dry_run };
        // Nothing dirty and every peer met before: nothing to connect for.
        if !self.index.has_dirty()? && self.new_peers(&opts.peers)?.is_empty() {
            return Ok(out);
        }
        let offline;
        let client = match &req.client {
            Some(c) => c,
            None => {
                // Planning needs no certificate; only connecting does.
                offline = ClientSettings::offline();
                &offline
            }
        };
        let port = if req.client.is_some() { req.port } else { 0 };
        out.report = Some(self.update(&opts, client, port)?);
        Ok(out)
    }
}
