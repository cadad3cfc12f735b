//! Who wins a conflict: a pure decision over the two versions and the group's
//! `auto` rule. Both nodes compute it from the same facts, so they agree, and
//! ties break by host order, so a conflict is never left to "nobody wins".

use crate::config::AutoMethod;

/// One side of a conflict, as the rule sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Side<'a> {
    /// Host name.
    pub host: &'a str,
    /// Position in the group's host list (ties and left/right).
    pub position: usize,
    /// Receive-only in the group.
    pub receive_only: bool,
    /// Its version's time: mtime, or when the delete was seen (ns).
    pub time_ns: i64,
    /// Its size; -1 for a deletion.
    pub size: i64,
}

/// The decision from the pushing node's point of view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The pusher's version wins: push again with force.
    Win(String),
    /// The receiver's version wins: leave it; it reaches us from its side.
    Lose(String),
    /// `auto none`: report it; a person decides (`csync -f`).
    Unresolved,
}

/// Decides a conflict between `me` (pushing) and `peer` (receiving).
pub fn decide(rule: AutoMethod, me: Side<'_>, peer: Side<'_>) -> Decision {
    if peer.receive_only && !me.receive_only {
        return Decision::Win(format!("{} is receive-only", peer.host));
    }
    if me.receive_only && !peer.receive_only {
        return Decision::Lose(format!("{} is receive-only", me.host));
    }
    let by_order = |why: &str| {
        if me.position < peer.position {
            Decision::Win(format!("{why} (tie: {} is listed first)", me.host))
        } else {
            Decision::Lose(format!("{why} (tie: {} is listed first)", peer.host))
        }
    };
    let cmp = |mine: i64, theirs: i64, bigger_wins: bool, name: &str| {
        if mine == theirs {
            by_order(name)
        } else if (mine > theirs) == bigger_wins {
            Decision::Win(name.to_string())
        } else {
            Decision::Lose(name.to_string())
        }
    };
    match rule {
        AutoMethod::None => Decision::Unresolved,
        AutoMethod::First => Decision::Win("first".into()),
        AutoMethod::Left => {
            if me.position < peer.position {
                Decision::Win("left".into())
            } else {
                Decision::Lose("left".into())
            }
        }
        AutoMethod::Right => {
            if me.position > peer.position {
                Decision::Win("right".into())
            } else {
                Decision::Lose("right".into())
            }
        }
        AutoMethod::Younger => cmp(me.time_ns, peer.time_ns, true, "younger"),
        AutoMethod::Older => cmp(me.time_ns, peer.time_ns, false, "older"),
        AutoMethod::Bigger => cmp(me.size, peer.size, true, "bigger"),
        AutoMethod::Smaller => cmp(me.size, peer.size, false, "smaller"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn side(host: &str, position: usize, time_ns: i64, size: i64) -> Side<'_> {
        Side { host, position, receive_only: false, time_ns, size }
    }

    fn wins(d: &Decision) -> Option<bool> {
        match d {
            Decision::Win(_) => Some(true),
            Decision::Lose(_) => Some(false),
            Decision::Unresolved => None,
        }
    }

    /// Every rule, both directions: exactly one side wins (or neither, for none).
    #[test]
    fn both_sides_agree_for_every_rule() {
        use AutoMethod::*;
        let cases = [
            (side("a", 0, 100, 10), side("b", 1, 200, 5)),
            (side("a", 0, 200, 5), side("b", 1, 100, 10)),
            (side("a", 0, 100, 10), side("b", 1, 100, 10)),
            (side("a", 1, 100, -1), side("b", 0, 50, 3)),
        ];
        for rule in [First, Younger, Older, Bigger, Smaller, Left, Right] {
            for (x, y) in cases {
                let xy = wins(&decide(rule, x, y));
                let yx = wins(&decide(rule, y, x));
                if rule == First {
                    assert_eq!((xy, yx), (Some(true), Some(true)), "first: the pusher wins");
                } else {
                    assert_eq!(xy.map(|w| !w), yx, "{rule:?} {x:?} {y:?}");
                }
            }
        }
        assert_eq!(decide(None, cases[0].0, cases[0].1), Decision::Unresolved);
    }

    #[test]
    fn expected_winners() {
        let a = side("a", 0, 100, 10);
        let b = side("b", 1, 200, 5);
        assert!(matches!(decide(AutoMethod::Younger, a, b), Decision::Lose(_)));
        assert!(matches!(decide(AutoMethod::Older, a, b), Decision::Win(_)));
        assert!(matches!(decide(AutoMethod::Bigger, a, b), Decision::Win(_)));
        assert!(matches!(decide(AutoMethod::Smaller, a, b), Decision::Lose(_)));
        assert!(matches!(decide(AutoMethod::Left, a, b), Decision::Win(_)));
        assert!(matches!(decide(AutoMethod::Right, a, b), Decision::Lose(_)));
        // Ties: the host listed first wins, from either side.
        let t = side("b", 1, 100, 10);
        assert!(matches!(decide(AutoMethod::Younger, a, t), Decision::Win(_)));
        assert!(matches!(decide(AutoMethod::Younger, t, a), Decision::Lose(_)));
        // A deletion is the smallest.
        let del = side("b", 1, 300, -1);
        assert!(matches!(decide(AutoMethod::Bigger, a, del), Decision::Win(_)));
    }

    #[test]
    fn receive_only_always_loses() {
        let mut b = side("b", 1, 1, 1);
        b.receive_only = true;
        let a = side("a", 0, 0, 0);
        for rule in [AutoMethod::None, AutoMethod::Older, AutoMethod::Right] {
            assert!(matches!(decide(rule, a, b), Decision::Win(_)), "{rule:?}");
            assert!(matches!(decide(rule, b, a), Decision::Lose(_)), "{rule:?}");
        }
    }
}
