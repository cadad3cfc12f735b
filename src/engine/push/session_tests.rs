//! Unit tests of one peer's session (`session.rs`).
use super::*;
use crate::config::AutoMethod;
use crate::engine::push::replies::tests::{item, meta};
use crate::proto::Outcome;

#[test]
fn a_metadata_change_travels_without_content_when_the_peer_has_the_old_one() {
    let mut it = item(AutoMethod::None);
    it.changes = Changes::MODE;
    assert_eq!(request(&it, 1).1, Content::None);
    // Unless the peer asked for it, the push is forced, or the peer may lack it.
    for change in [
        |i: &mut Item| i.need_content = true,
        |i: &mut Item| i.forced = true,
        |i: &mut Item| i.peer_has_old = false,
        |i: &mut Item| i.changes = Changes::CONTENT,
    ] {
        let mut it = item(AutoMethod::None);
        it.changes = Changes::MODE;
        change(&mut it);
        assert_eq!(request(&it, 1).1, Content::Whole);
    }
}

#[test]
fn a_delete_is_a_delete_request_and_directories_carry_no_content() {
    let mut it = item(AutoMethod::None);
    it.local = None;
    assert!(matches!(request(&it, 7), (Msg::Delete { id: 7, .. }, Content::None)));
    it.local = Some(meta(FileKind::Dir, 1));
    let (msg, content) = request(&it, 8);
    assert_eq!(content, Content::None);
    let Msg::Push { entry, .. } = msg else { panic!("{msg:?}") };
    assert_eq!(entry.origin.as_deref(), Some("me"), "the version says who made it");
}

#[test]
fn only_large_content_changes_with_an_older_version_there_go_as_deltas() {
    let mut it = item(AutoMethod::None);
    it.local.as_mut().unwrap().size = blockdelta::DELTA_MIN;
    assert!(wants_delta(&it));
    it.forced = true;
    assert!(!wants_delta(&it), "a forced push replaces whatever is there");
    let mut small = item(AutoMethod::None);
    small.local.as_mut().unwrap().size = blockdelta::DELTA_MIN - 1;
    assert!(!wants_delta(&small));
    let mut new = item(AutoMethod::None);
    new.local.as_mut().unwrap().size = blockdelta::DELTA_MIN;
    new.peer_has_old = false;
    assert!(!wants_delta(&new));
}

#[tokio::test]
async fn requests_are_pipelined_and_each_reply_is_handled_as_it_comes() {
    use std::time::Duration;
    let t = Duration::from_secs(30);
    // Two one-way pipes: ours to the peer, the peer's to us.
    let (to_peer, peer_in) = tokio::io::duplex(1 << 16);
    let (peer_out, from_peer) = tokio::io::duplex(1 << 16);
    let (mut wr, mut rd) = (Conn::new(to_peer, t), Conn::new(from_peer, t));
    let peer = tokio::spawn(async move {
        let (mut pin, mut pout) = (Conn::new(peer_in, t), Conn::new(peer_out, t));
        // Both requests arrive before any reply is sent.
        let mut ids = Vec::new();
        for _ in 0..2 {
            match pin.recv().await.unwrap().unwrap() {
                Msg::Delete { id, .. } | Msg::Push { id, .. } => ids.push(id),
                other => panic!("{other:?}"),
            }
        }
        pout.send(&Msg::Ack { id: ids[1], outcome: Outcome::ContentNeeded }).await.unwrap();
        pout.send(&Msg::Ack { id: ids[0], outcome: Outcome::Applied }).await.unwrap();
    });
    let mut gone = item(AutoMethod::None);
    gone.local = None;
    gone.path = b"/srv/gone".to_vec();
    let mut touched = item(AutoMethod::None);
    touched.changes = Changes::MODE;
    let mut report = PeerReport { peer: "peer".into(), ..PeerReport::default() };
    let (mut next_id, mut retry) = (1, Vec::new());
    let ign = IgnoreFields::default();
    let items = Source::List(vec![gone, touched].into_iter());
    pipeline(&mut rd, &mut wr, items, &mut next_id, ign, &mut report, &mut retry).await.unwrap();
    peer.await.unwrap();
    assert_eq!(next_id, 3);
    // The delete is done (counted, not listed); the touched file is retried.
    assert_eq!((report.done, report.paths.len()), (1, 0));
    assert_eq!(retry.len(), 1, "the metadata-only push is retried with content");
    assert!(retry[0].need_content);
}

#[tokio::test]
async fn a_reply_to_no_request_ends_the_session() {
    use std::time::Duration;
    let t = Duration::from_secs(30);
    let (to_peer, _peer_in) = tokio::io::duplex(1 << 16);
    let (peer_out, from_peer) = tokio::io::duplex(1 << 16);
    let (mut wr, mut rd) = (Conn::new(to_peer, t), Conn::new(from_peer, t));
    let mut pout = Conn::new(peer_out, t);
    pout.send(&Msg::Ack { id: 99, outcome: Outcome::Applied }).await.unwrap();
    let mut it = item(AutoMethod::None);
    it.local = None;
    let mut report = PeerReport::default();
    let (mut next_id, mut retry) = (1, Vec::new());
    let ign = IgnoreFields::default();
    let items = Source::List(vec![it].into_iter());
    let err = pipeline(&mut rd, &mut wr, items, &mut next_id, ign, &mut report, &mut retry)
        .await
        .unwrap_err();
    assert!(matches!(err, SessionError::UnknownReply(99)), "{err}");
    assert_eq!(err.to_string(), "reply for an unknown request 99");
}
