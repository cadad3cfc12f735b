//! Warnings that need the resolved config: include roots that nest.
//!
//! Nesting is allowed (§3.3), but it is rarely what the author meant: a file
//! below both roots is managed twice, with two host lists and two keys, and an
//! include inside its own group's root adds nothing. Each case is reported once,
//! naming both roots, as a warning (`--check-config` and `-v` print it).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::lexer::{Diags, Sources};
use super::model::{Config, Rule, RuleKind};
use crate::diag::Span;
use crate::pattern::{GroupMatcher, walk_root};

/// After every positioned diagnostic, before the file-level ones.
const ORDER: u32 = u32::MAX - 1;

/// One include root of a member group, on this node.
struct Root<'a> {
    group: usize,
    rule: usize,
    /// As written (DB form): `/etc/nginx` or `%www%/htdocs`.
    db: String,
    /// Where it is here.
    real: PathBuf,
    span: &'a Span,
    /// Not inside another root of its own group (the first to name a place):
    /// only these are compared across groups, so a nesting is reported once,
    /// not once per level.
    top: bool,
}

/// Warns about every include root that lies inside (or on) another one and is
/// managed by it.
pub(crate) fn nested_roots(config: &Config, src: &Sources, diags: &mut Diags) {
    // Warnings about a config that does not load are noise next to its errors.
    if diags.has_errors() {
        return;
    }
    let mut roots = Vec::new();
    let mut matchers = Vec::new();
    for (gi, g) in config.groups.iter().enumerate() {
        matchers.push(GroupMatcher::new(&g.rules).ok());
        if !g.is_member {
            continue;
        }
        for (ri, r) in g.rules.iter().enumerate() {
            if r.kind != RuleKind::Include {
                continue;
            }
            let Some(db) = walk_root(&r.pattern) else { continue };
            let Some(real) = real_path(config, &db) else { continue };
            roots.push(Root { group: gi, rule: ri, db, real, span: &r.span, top: true });
        }
    }
    // By local path, so that two prefixes (or a prefix and a plain path) that
    // nest count as nested.
    for i in 0..roots.len() {
        let below = roots.iter().enumerate().any(|(j, o)| {
            j != i
                && o.group == roots[i].group
                && roots[i].real.starts_with(&o.real)
                && (o.real != roots[i].real || j < i)
        });
        roots[i].top = !below;
    }
    for (i, outer) in roots.iter().enumerate() {
        for (j, inner) in roots.iter().enumerate() {
            // The same text twice (a file included twice) is not two roots.
            if i == j || inner.span == outer.span || !inner.real.starts_with(&outer.real) {
                continue;
            }
            let same_place = inner.real == outer.real;
            let outer_g = &config.groups[outer.group];
            let inner_g = &config.groups[inner.group];
            if outer.group == inner.group {
                // Report the later rule, once; an include that re-includes
                // something an exclude took out is the usual idiom, not a mistake.
                if same_place && j < i {
                    continue;
                }
                let without: Vec<Rule> = outer_g
                    .rules
                    .iter()
                    .enumerate()
                    .filter(|(k, _)| *k != inner.rule)
                    .map(|(_, r)| r.clone())
                    .collect();
                let Ok(m) = GroupMatcher::new(&without) else { continue };
                if !db_forms(config, &inner.real).iter().any(|f| m.is_managed(f)) {
                    continue;
                }
                let msg = format!(
                    "include root '{}' lies inside include root '{}' ({}) of the same group '{}', which already manages it",
                    inner.db, outer.db, outer.span, outer_g.name
                );
                let help = "drop the inner include, or exclude it from the outer one if it was meant to be separate";
                diags.push(ORDER, src.warning(inner.span, msg).with_help(help));
            } else {
                // One warning per pair of places; the outer group must really
                // manage the inner root (an exclude there is a deliberate split).
                if !inner.top || !outer.top || (same_place && inner.group < outer.group) {
                    continue;
                }
                let Some(m) = &matchers[outer.group] else { continue };
                if !db_forms(config, &inner.real).iter().any(|f| m.is_managed(f)) {
                    continue;
                }
                let relation = if same_place { "is the same directory as" } else { "lies inside" };
                let msg = format!(
                    "include root '{}' of group '{}' {relation} include root '{}' ({}) of group '{}'",
                    inner.db, inner_g.name, outer.db, outer.span, outer_g.name
                );
                let help = format!(
                    "files below it are managed by both groups; make the roots disjoint, or exclude it in group '{}'",
                    outer_g.name
                );
                diags.push(ORDER, src.warning(inner.span, msg).with_help(help));
            }
        }
    }
}

/// The local path of a DB-form root (`None`: its prefix has no root here).
fn real_path(config: &Config, db: &str) -> Option<PathBuf> {
    let Some(rest) = db.strip_prefix('%') else { return Some(PathBuf::from(db)) };
    let (name, tail) = rest.split_once('%')?;
    let root = config.prefix_root(name)?;
    Some(PathBuf::from(format!("{}{tail}", root.display())))
}

/// A real path's DB forms here: `%NAME%/rest` for each prefix containing it,
/// then the path itself (the same rule as `paths::db_forms`).
fn db_forms(config: &Config, real: &Path) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for p in &config.prefixes {
        let Some(root) = &p.local else { continue };
        if let Ok(rest) = real.strip_prefix(root) {
            let mut db = format!("%{}%", p.name).into_bytes();
            if !rest.as_os_str().is_empty() {
                db.push(b'/');
                db.extend_from_slice(rest.as_os_str().as_bytes());
            }
            out.push(db);
        }
    }
    out.push(OsStr::new(real).as_bytes().to_vec());
    out
}
