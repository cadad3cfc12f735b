//! Every `auto` rule, from a real conflict between n1 and n2 pushed both ways:
//! all three nodes end up with the expected winner's bytes, and the loser's
//! bytes are kept on the node that lost them.

use std::fs;
use std::time::{Duration, SystemTime};

use crate::sync::{Cluster, find_conflict_copy};

const BASE: &[u8] = b"base\n";
const A: &[u8] = b"AAAAAAAAAAAAAAAAAAAA from n1\n";
const B: &[u8] = b"B from n2\n";

fn set_mtime(c: &Cluster, n: &str, t: SystemTime) {
    fs::File::options().write(true).open(c.root(n).join("a/f")).unwrap().set_modified(t).unwrap();
}

/// Both change `a/f` (or n1 deletes it); both check; then n1, n2, n1 push.
/// Returns the cluster for inspection.
fn conflict(
    test: &str,
    rule: &str,
    n1: Option<(&[u8], SystemTime)>,
    n2: (&[u8], SystemTime),
) -> Cluster {
    let c = Cluster::new(test, rule);
    c.write("n1", "a/f", BASE);
    c.x_ok("n1");
    match n1 {
        Some((data, t)) => {
            c.write("n1", "a/f", data);
            set_mtime(&c, "n1", t);
        }
        None => fs::remove_file(c.root("n1").join("a/f")).unwrap(),
    }
    c.write("n2", "a/f", n2.0);
    set_mtime(&c, "n2", n2.1);
    for n in ["n1", "n2"] {
        let (code, o, e) = c.run(n, &["-cr"]);
        assert_eq!(code, 0, "{o}{e}");
    }
    for n in ["n1", "n2", "n1"] {
        let _ = c.x(n);
    }
    c
}

fn content(c: &Cluster, n: &str) -> Option<Vec<u8>> {
    fs::read(c.root(n).join("a/f")).ok()
}

fn assert_winner(c: &Cluster, want: Option<&[u8]>, loser_node: &str, loser_bytes: Option<&[u8]>) {
    for n in ["n1", "n2", "n3"] {
        assert_eq!(content(c, n).as_deref(), want, "{n} has the wrong version");
    }
    if let Some(bytes) = loser_bytes {
        let kept = find_conflict_copy(&c.net.path(&format!("db-{loser_node}")), "f.conflict-")
            .unwrap_or_else(|| panic!("no kept copy of the loser on {loser_node}"));
        assert_eq!(fs::read(kept).unwrap(), bytes, "kept copy on {loser_node}");
    }
    c.assert_converged();
}

fn now() -> SystemTime {
    SystemTime::now()
}

fn hour_ago() -> SystemTime {
    SystemTime::now() - Duration::from_secs(3600)
}

#[test]
fn younger_wins_both_directions() {
    // n2 newer: n2 wins, n1 keeps its A as the loser.
    let c = conflict("younger_1", "younger", Some((A, hour_ago())), (B, now()));
    assert_winner(&c, Some(B), "n1", Some(A));
    // n1 newer: n1 wins.
    let c = conflict("younger_2", "younger", Some((A, now())), (B, hour_ago()));
    assert_winner(&c, Some(A), "n2", Some(B));
}

#[test]
fn older_wins_both_directions() {
    let c = conflict("older_1", "older", Some((A, hour_ago())), (B, now()));
    assert_winner(&c, Some(A), "n2", Some(B));
    let c = conflict("older_2", "older", Some((A, now())), (B, hour_ago()));
    assert_winner(&c, Some(B), "n1", Some(A));
}

#[test]
fn bigger_and_smaller() {
    let c = conflict("bigger", "bigger", Some((A, now())), (B, now()));
    assert_winner(&c, Some(A), "n2", Some(B));
    let c = conflict("smaller", "smaller", Some((A, now())), (B, now()));
    assert_winner(&c, Some(B), "n1", Some(A));
}

#[test]
fn left_right_and_first() {
    let c = conflict("left", "left", Some((A, hour_ago())), (B, now()));
    assert_winner(&c, Some(A), "n2", Some(B));
    let c = conflict("right", "right", Some((A, now())), (B, hour_ago()));
    assert_winner(&c, Some(B), "n1", Some(A));
    // first: the node that pushes first (n1 here) wins.
    let c = conflict("first", "first", Some((A, hour_ago())), (B, now()));
    assert_winner(&c, Some(A), "n2", Some(B));
}

#[test]
fn ties_break_by_host_order() {
    let t = hour_ago();
    let c = conflict("tie_younger", "younger", Some((A, t)), (B, t));
    assert_winner(&c, Some(A), "n2", Some(B));
    let same = b"same size A\n";
    let other = b"same size B\n";
    let c = conflict("tie_bigger", "bigger", Some((same, now())), (other, now()));
    assert_winner(&c, Some(same), "n2", Some(other));
}

#[test]
fn none_leaves_both_versions_and_reports() {
    let c = Cluster::new("none_leaves_both_versions_and_reports", "none");
    c.write("n1", "a/f", BASE);
    c.x_ok("n1");
    c.write("n1", "a/f", A);
    c.write("n2", "a/f", B);
    let (code, _, e) = c.run("n2", &["-cr"]);
    assert_eq!(code, 0, "{e}");
    let (code, _, e) = c.run("n1", &["-x", "-P", "n2"]);
    assert_eq!(code, 1);
    assert!(e.contains("peer n2: %p%/a/f: conflict"), "{e}");
    assert_eq!(content(&c, "n1").as_deref(), Some(A));
    assert_eq!(content(&c, "n2").as_deref(), Some(B));
    // -f on n2 settles it for n2's version.
    let (code, o, e) = c.run("n2", &["-f", c.root("n2").join("a/f").to_str().unwrap()]);
    assert_eq!(code, 0, "{o}{e}");
    c.x_ok("n2");
    c.x_ok("n1");
    assert_winner(&c, Some(B), "n1", Some(A));
}

#[test]
fn delete_against_modify() {
    // n1 deletes (now), n2's modification is an hour old: the delete is younger.
    let c = conflict("delete_wins", "younger", None, (B, hour_ago()));
    assert_winner(&c, None, "n2", Some(B));
    // n2's modification is newer than the delete: the file comes back.
    let c = conflict("modify_wins", "younger", None, (B, now() + Duration::from_secs(3600)));
    assert_winner(&c, Some(B), "n1", None);
}

/// `csync -x -P peer` on node `n`: the update goes to that peer only.
fn x_to(c: &Cluster, n: &str, peer: &str) -> (i32, String, String) {
    c.run(n, &["-x", "-P", peer])
}

/// Dirty marks left in node `n`'s index.
fn dirty(c: &Cluster, n: &str) -> i64 {
    let db = c.net.path(&format!("db-{n}")).join(format!("{n}.db"));
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row("SELECT count(*) FROM dirty", [], |r| r.get(0)).unwrap()
}

/// Every node runs `-x` until no node has marks left (at most `rounds`).
fn settle(c: &Cluster, rounds: usize) {
    for _ in 0..rounds {
        if ["n1", "n2", "n3"].iter().all(|n| dirty(c, n) == 0) {
            return;
        }
        for n in ["n1", "n2", "n3"] {
            let _ = c.x(n);
        }
    }
    let left: Vec<i64> = ["n1", "n2", "n3"].iter().map(|n| dirty(c, n)).collect();
    panic!("marks left after {rounds} rounds: {left:?}");
}

/// A base every node holds, after every node's first contact with every
/// other (so no later listing re-marks what the test sets up).
fn based(test: &str) -> Cluster {
    let c = Cluster::new(test, "younger");
    c.write("n1", "a/f", BASE);
    for n in ["n1", "n2", "n3"] {
        c.x_ok(n);
    }
    for n in ["n1", "n2", "n3"] {
        assert_eq!(content(&c, n).as_deref(), Some(BASE), "{n}");
    }
    c
}

/// The watch churn's case, step by step: n1's version reaches n3 only; n2's
/// younger version beats it on n1; n2 deletes, and n1 applies the delete
/// (it holds what n2 deleted). On n3 the delete meets n1's version, which
/// the rule finds younger than the delete: n2 yields, and n3 (which did not
/// make that version) pushes it to n2 alone. n2, whose delete lost, must
/// pass the winner on to n1, which applied the delete: one winner, on
/// every node.
#[test]
fn a_delete_that_loses_to_a_received_copy_is_undone_everywhere() {
    let c = based("delete_loses_to_received_copy");
    let hour = Duration::from_secs(3600);
    c.write("n1", "a/f", A);
    set_mtime(&c, "n1", now() + hour);
    let (code, o, e) = x_to(&c, "n1", "n3");
    assert_eq!(code, 0, "{o}{e}");
    assert_eq!(content(&c, "n3").as_deref(), Some(A));
    c.write("n2", "a/f", B);
    set_mtime(&c, "n2", now() + 2 * hour);
    let (code, o, e) = x_to(&c, "n2", "n1");
    assert_eq!(code, 0, "{o}{e}");
    assert_eq!(content(&c, "n1").as_deref(), Some(B), "n2's younger version won on n1");
    fs::remove_file(c.root("n2").join("a/f")).unwrap();
    let (code, o, e) = x_to(&c, "n2", "n1");
    assert_eq!(code, 0, "{o}{e}");
    assert_eq!(content(&c, "n1"), None, "n1 held what n2 deleted: applied");
    // On n3 the delete (dated now) meets A (an hour ahead): A wins.
    let (code, o, e) = x_to(&c, "n2", "n3");
    assert_eq!(code, 0, "{o}{e}");
    assert_eq!(content(&c, "n3").as_deref(), Some(A), "the delete lost on n3");
    settle(&c, 4);
    for n in ["n1", "n2", "n3"] {
        assert_eq!(content(&c, n).as_deref(), Some(A), "{n} has the wrong version");
    }
    // n2's younger B, which lost to nothing but its own delete, is no
    // conflict's loser; n1's A lost to B on n1 and was kept there.
    let kept = find_conflict_copy(&c.net.path("db-n1"), "f.conflict-").expect("A kept on n1");
    assert_eq!(fs::read(kept).unwrap(), A);
    c.assert_converged();
}

/// n1 deletes `a/f` while n2 edits it (its mtime `edit`), both check, then
/// `first` pushes before the other. Under `younger` the delete is dated when
/// n1 saw it, by both nodes: one winner, whichever node pushes first.
fn edit_against_delete(test: &str, edit: SystemTime, first: &str) -> Cluster {
    let c = based(test);
    fs::remove_file(c.root("n1").join("a/f")).unwrap();
    c.write("n2", "a/f", B);
    set_mtime(&c, "n2", edit);
    for n in ["n1", "n2"] {
        let (code, o, e) = c.run(n, &["-cr"]);
        assert_eq!(code, 0, "{o}{e}");
    }
    let second = if first == "n1" { "n2" } else { "n1" };
    let _ = x_to(&c, first, second);
    let _ = x_to(&c, second, first);
    settle(&c, 4);
    c
}

#[test]
fn an_edit_against_a_simultaneous_delete_has_one_winner_whoever_pushes_first() {
    let hour = Duration::from_secs(3600);
    for first in ["n1", "n2"] {
        // The edit is an hour old: the delete (now) is younger and wins.
        let c = edit_against_delete(&format!("old_edit_{first}"), hour_ago(), first);
        assert_winner(&c, None, "n2", Some(B));
        // The edit is an hour ahead: it wins and the file comes back.
        let c = edit_against_delete(&format!("new_edit_{first}"), now() + hour, first);
        assert_winner(&c, Some(B), "n1", None);
    }
}

/// n2 replaces the directory `a` (holding `a/f`) with a file `a` while n1
/// edits `a/f`: a type change against a change below it. Whatever the rule
/// makes of it, the three trees end the same with no marks left.
///
/// Not yet: n1's push of `a/f` is refused on n2 (`a` is a file there, "a
/// non-directory on the way") and n2's file `a` is refused on n1 and n3
/// (the directory still holds `a/f`); the delete of `a/f` that went with
/// the type change lost to the edit, so neither side ever gives way. A
/// type change needs settling as one conflict with the entries below it.
#[test]
#[ignore = "a type change against an edit below it never settles (engine)"]
fn a_directory_replaced_by_a_file_against_an_edit_below_it_settles() {
    for first in ["n1", "n2"] {
        let c = based(&format!("dir_to_file_{first}"));
        c.write("n1", "a/f", A);
        fs::remove_dir_all(c.root("n2").join("a")).unwrap();
        c.write("n2", "a", B);
        for n in ["n1", "n2"] {
            let (code, o, e) = c.run(n, &["-cr"]);
            assert_eq!(code, 0, "{o}{e}");
        }
        let second = if first == "n1" { "n2" } else { "n1" };
        let _ = x_to(&c, first, second);
        let _ = x_to(&c, second, first);
        settle(&c, 4);
        c.assert_converged();
    }
}
