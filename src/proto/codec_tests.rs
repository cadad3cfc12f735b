//! Tests of `proto/codec.rs` (kept apart so the module itself stays readable).

use super::*;
use proptest::prelude::*;

fn sample_entry() -> WireEntry {
    WireEntry {
        kind: 3,
        mode: 0o777,
        uid: 1000,
        gid: 100,
        size: 0,
        mtime_ns: -5,
        rdev: 0,
        target: Some(b"../x".to_vec()),
        hash: None,
        origin: Some("n2".into()),
    }
}

fn samples() -> Vec<Msg> {
    vec![
        Msg::Hello {
            min_version: 1,
            max_version: 3,
            node: "n1".into(),
            capabilities: 5,
            groups: vec![GroupProof { group: "web".into(), mac: [9; 32] }],
        },
        Msg::Welcome {
            version: 1,
            node: "n2".into(),
            capabilities: 0,
            groups: vec![],
            refused: vec![("db".into(), ErrorCode::BadKey)],
        },
        Msg::Error { code: ErrorCode::NotAHost, message: "n9 is not a host of web".into() },
        Msg::Ping { id: 7 },
        Msg::Pong { id: 7, time_ns: -3 },
        Msg::Data { stream: 3, bytes: b"hello".to_vec() },
        Msg::Data { stream: 4, bytes: vec![] },
        Msg::DataEnd { stream: 3, hash: [7; 32] },
        Msg::Push {
            id: 9,
            group: "web".into(),
            path: b"%www%/a b/\xff".to_vec(),
            entry: sample_entry(),
            base: Some([1; 32]),
            force: true,
            content: Content::Delta,
            parent_mtime: Some(-7),
        },
        Msg::Delete {
            id: 10,
            group: "web".into(),
            path: b"/etc/x".to_vec(),
            base: None,
            force: false,
            parent_mtime: None,
        },
        Msg::Sig { id: 11, group: "g".into(), path: b"%p%/big".to_vec() },
        Msg::SigReply { id: 11, block_size: 65536, size: 200, blocks: vec![[3; 16], [4; 16]] },
        Msg::List { id: 12, group: "g".into() },
        Msg::ListEntry { id: 12, path: b"%p%/l".to_vec(), entry: sample_entry() },
        Msg::ListEnd { id: 12 },
        Msg::Fetch { id: 13, group: "g".into(), path: b"%p%/f".to_vec() },
        Msg::Working,
        Msg::Yield { group: "g".into(), path: b"%p%/f".to_vec(), rule: "younger".into() },
        Msg::ActionResult {
            group: "web".into(),
            command: "nginx -s reload".into(),
            paths: 3,
            ok: false,
            status: "exit status 1".into(),
            logfile: Some(b"/var/log/csync-nginx.log".to_vec()),
        },
        Msg::ActionResult {
            group: "web".into(),
            command: "nginx -s reload".into(),
            paths: 1,
            ok: true,
            status: "exit status 0".into(),
            logfile: None,
        },
        Msg::Ack { id: 9, outcome: Outcome::Applied },
        Msg::Ack { id: 9, outcome: Outcome::Conflict(Some(sample_entry())) },
        Msg::Ack { id: 9, outcome: Outcome::Conflict(None) },
        Msg::Ack { id: 9, outcome: Outcome::ParentMissing },
        Msg::Ack {
            id: 9,
            outcome: Outcome::Failed { code: ErrorCode::PathRefused, message: "..".into() },
        },
        Msg::Bye,
        Msg::ByeAck,
    ]
}

#[test]
fn content_needed_travels_as_the_failed_reply_it_always_was() {
    let typed = encoded(&Msg::Ack { id: 3, outcome: Outcome::ContentNeeded }).unwrap();
    let old = Msg::Ack {
        id: 3,
        outcome: Outcome::Failed { code: ErrorCode::Protocol, message: CONTENT_NEEDED.into() },
    };
    assert_eq!(typed, encoded(&old).unwrap(), "same bytes as before");
    let (back, _) = decode(&typed).unwrap().unwrap();
    assert_eq!(back, Msg::Ack { id: 3, outcome: Outcome::ContentNeeded });
}

#[test]
fn every_message_round_trips() {
    for m in samples() {
        let f = encoded(&m).unwrap();
        assert_eq!(decode(&f).unwrap(), Some((m.clone(), f.len())), "{m:?}");
    }
}

#[test]
fn every_prefix_is_incomplete() {
    for m in samples() {
        let f = encoded(&m).unwrap();
        for cut in 0..f.len() {
            assert_eq!(decode(&f[..cut]).unwrap(), None, "{m:?} cut at {cut}");
        }
    }
}

#[test]
fn an_action_result_without_the_logfile_field_decodes_as_none() {
    // The frame an older build sends: everything up to the status.
    let m = Msg::ActionResult {
        group: "web".into(),
        command: "nginx -s reload".into(),
        paths: 2,
        ok: false,
        status: "exit status 1".into(),
        logfile: None,
    };
    let mut f = encoded(&m).unwrap();
    f.pop(); // the logfile flag
    let len = u32::try_from(f.len() - 4).unwrap();
    f[..4].copy_from_slice(&len.to_be_bytes());
    assert_eq!(decode(&f).unwrap(), Some((m, f.len())));
}

#[test]
fn huge_length_is_refused_before_buffering() {
    let mut f = vec![0xff, 0xff, 0xff, 0xff, 0x01];
    f.extend_from_slice(&MAGIC);
    assert!(matches!(decode(&f), Err(DecodeError::TooLarge(_))));
}

#[test]
fn wrong_magic_unknown_type_and_trailing_bytes_are_malformed() {
    let mut f = encoded(&samples()[0]).unwrap();
    f[5] = b'X';
    assert_eq!(decode(&f), Err(DecodeError::Malformed { what: "magic" }));
    assert_eq!(decode(&[0, 0, 0, 1, 0xee]), Err(DecodeError::UnknownType(0xee)));
    assert_eq!(
        decode(&[0, 0, 0, 2, 0x06, 0]),
        Err(DecodeError::Malformed { what: "trailing bytes" })
    );
    assert_eq!(decode(&[0, 0, 0, 0]), Err(DecodeError::Empty));
}

#[test]
fn a_full_size_chunk_fits_a_frame() {
    let m = Msg::Data { stream: 1, bytes: vec![0xab; MAX_CHUNK] };
    let f = encoded(&m).unwrap();
    assert_eq!(decode(&f).unwrap(), Some((m, f.len())));
    assert!(encoded(&Msg::Data { stream: 1, bytes: vec![0; MAX_CHUNK + 1] }).is_err());
}

#[test]
fn oversized_fields_are_refused_when_encoding() {
    let m = Msg::Hello {
        min_version: 1,
        max_version: 1,
        node: "x".repeat(MAX_NAME + 1),
        capabilities: 0,
        groups: vec![],
    };
    let mut out = vec![1, 2, 3];
    assert!(encode(&m, &mut out).is_err());
    assert_eq!(out, [1, 2, 3], "output untouched on error");
}

fn arb_name() -> impl Strategy<Value = String> {
    "[a-z0-9.\\-]{0,40}"
}

fn arb_code() -> impl Strategy<Value = ErrorCode> {
    (1u16..=15).prop_map(|v| ErrorCode::from_u16(v).unwrap())
}

fn arb_proof() -> impl Strategy<Value = GroupProof> {
    (arb_name(), any::<[u8; 32]>()).prop_map(|(group, mac)| GroupProof { group, mac })
}

fn arb_entry() -> impl Strategy<Value = WireEntry> {
    (
        any::<u8>(),
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
        any::<u64>(),
        any::<i64>(),
        any::<u64>(),
        prop::option::of(prop::collection::vec(any::<u8>(), 0..100)),
        (any::<Option<[u8; 32]>>(), prop::option::of(arb_name())),
    )
        .prop_map(|(kind, mode, uid, gid, size, mtime_ns, rdev, target, (hash, origin))| {
            WireEntry { kind, mode, uid, gid, size, mtime_ns, rdev, target, hash, origin }
        })
}

fn arb_msg() -> impl Strategy<Value = Msg> {
    prop_oneof![arb_basic(), arb_sync()]
}

fn arb_sync() -> impl Strategy<Value = Msg> {
    let outcome = prop_oneof![
        Just(Outcome::Applied),
        Just(Outcome::InSync),
        prop::option::of(arb_entry()).prop_map(Outcome::Conflict),
        Just(Outcome::ParentMissing),
        Just(Outcome::NotEmpty),
        (arb_code(), ".{0,50}").prop_map(|(code, message)| Outcome::Failed { code, message }),
    ];
    let path = || prop::collection::vec(any::<u8>(), 0..300);
    prop_oneof![
        (
            any::<u32>(),
            arb_name(),
            path(),
            arb_entry(),
            any::<Option<[u8; 32]>>(),
            any::<bool>(),
            0u8..3
        )
            .prop_map(|(id, group, path, entry, base, force, c)| Msg::Push {
                id,
                group,
                path,
                entry,
                base,
                force,
                content: [Content::None, Content::Whole, Content::Delta][c as usize],
                parent_mtime: Some(id as i64 - 5),
            }),
        (any::<u32>(), arb_name(), path(), any::<Option<[u8; 32]>>(), any::<bool>()).prop_map(
            |(id, group, path, base, force)| Msg::Delete {
                id,
                group,
                path,
                base,
                force,
                parent_mtime: None
            }
        ),
        (any::<u32>(), path(), arb_entry()).prop_map(|(id, path, entry)| Msg::ListEntry {
            id,
            path,
            entry
        }),
        (any::<u32>(), any::<u32>(), any::<u64>(), prop::collection::vec(any::<[u8; 16]>(), 0..50))
            .prop_map(|(id, block_size, size, blocks)| Msg::SigReply {
                id,
                block_size,
                size,
                blocks
            }),
        (any::<u32>(), outcome).prop_map(|(id, outcome)| Msg::Ack { id, outcome }),
    ]
}

fn arb_basic() -> impl Strategy<Value = Msg> {
    prop_oneof![
        (
            any::<u16>(),
            any::<u16>(),
            arb_name(),
            any::<u64>(),
            prop::collection::vec(arb_proof(), 0..5)
        )
            .prop_map(|(a, b, node, capabilities, groups)| Msg::Hello {
                min_version: a,
                max_version: b,
                node,
                capabilities,
                groups
            }),
        (
            any::<u16>(),
            arb_name(),
            any::<u64>(),
            prop::collection::vec(arb_proof(), 0..5),
            prop::collection::vec((arb_name(), arb_code()), 0..5)
        )
            .prop_map(|(version, node, capabilities, groups, refused)| {
                Msg::Welcome { version, node, capabilities, groups, refused }
            }),
        (arb_code(), ".{0,100}").prop_map(|(code, message)| Msg::Error { code, message }),
        any::<u32>().prop_map(|id| Msg::Ping { id }),
        (any::<u32>(), any::<i64>()).prop_map(|(id, time_ns)| Msg::Pong { id, time_ns }),
        (any::<u32>(), prop::collection::vec(any::<u8>(), 0..2000))
            .prop_map(|(stream, bytes)| Msg::Data { stream, bytes }),
        (any::<u32>(), any::<[u8; 32]>()).prop_map(|(stream, hash)| Msg::DataEnd { stream, hash }),
        Just(Msg::Bye),
        Just(Msg::ByeAck),
        Just(Msg::Working),
        (
            arb_name(),
            ".{0,100}",
            any::<u32>(),
            any::<bool>(),
            ".{0,50}",
            prop::option::of(prop::collection::vec(any::<u8>(), 0..100))
        )
            .prop_map(|(group, command, paths, ok, status, logfile)| {
                Msg::ActionResult { group, command, paths, ok, status, logfile }
            }),
    ]
}

proptest! {
    #[test]
    fn round_trip(m in arb_msg()) {
        let f = encoded(&m).unwrap();
        prop_assert_eq!(decode(&f).unwrap(), Some((m, f.len())));
    }

    #[test]
    fn truncated_input_is_incomplete(m in arb_msg(), cut in any::<prop::sample::Index>()) {
        let f = encoded(&m).unwrap();
        let cut = cut.index(f.len());
        prop_assert_eq!(decode(&f[..cut]).unwrap(), None);
    }

    #[test]
    fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = decode(&bytes);
    }

    #[test]
    fn garbage_after_a_valid_header_never_panics(t in any::<u8>(), body in prop::collection::vec(any::<u8>(), 0..200)) {
        let mut f = ((body.len() + 1) as u32).to_be_bytes().to_vec();
        f.push(t);
        f.extend_from_slice(&body);
        let _ = decode(&f);
    }

    #[test]
    fn two_frames_back_to_back_decode_in_order(a in arb_msg(), b in arb_msg()) {
        let mut f = encoded(&a).unwrap();
        let first = f.len();
        encode(&b, &mut f).unwrap();
        let (m1, n1) = decode(&f).unwrap().unwrap();
        prop_assert_eq!(n1, first);
        prop_assert_eq!(m1, a);
        let (m2, _) = decode(&f[n1..]).unwrap().unwrap();
        prop_assert_eq!(m2, b);
    }
}
