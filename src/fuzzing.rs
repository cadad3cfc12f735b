//! Entry points for the fuzz targets in `fuzz/` and for the corpus replay in
//! `cargo test`: both call these same functions, so what the fuzzer finds is
//! what the stable test suite replays. Each takes arbitrary bytes and must
//! never panic, hang or allocate beyond the input's bounds; a panic here is a
//! bug in the code under test (the asserts state properties that hold for
//! every input).
//!
//! Not part of csync's API.

use std::io::{self, Cursor};
use std::path::Path;

use crate::{blockdelta, config, pattern, proto};

/// The wire codec: decodes frames one after another from `data` as a peer
/// could send them; every frame that decodes must re-encode and decode to the
/// same message, and consume between 5 bytes and `MAX_FRAME + 4`. Returns
/// how many frames decoded (the replay test checks that valid seeds do).
pub fn frame_decoder(data: &[u8]) -> usize {
    let mut buf = data;
    let mut frames = 0;
    while let Ok(Some((msg, used))) = proto::decode(buf) {
        assert!(used > 4 && used <= proto::MAX_FRAME + 4 && used <= buf.len());
        let again = proto::encoded(&msg).expect("a decoded message re-encodes");
        match proto::decode(&again) {
            Ok(Some((back, n))) => assert!(back == msg && n == again.len()),
            other => panic!("re-encoded {msg:?} decodes as {other:?}"),
        }
        buf = &buf[used..];
        frames += 1;
    }
    frames
}

/// A group key the in-memory reader hands out for any `key` file, so that
/// inputs get past key checks into resolution.
const KEY: &str = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ._";

/// The config loader (lexer, parser, resolution) on `data` as a config file,
/// for node `n1`. Files it names are never read: `config FILE;` includes are
/// missing and every key file holds a valid key, so no input can make the
/// fuzzer read `/dev/zero` or the host's files. Returns whether it loaded.
pub fn config_parser(data: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(data) else { return false };
    let opts = config::LoadOptions {
        myname: "n1".into(),
        sysdir: "/nonexistent-csync-fuzz".into(),
        active_groups: None,
    };
    let reader = |path: &Path| -> io::Result<String> {
        if path.extension().is_some_and(|e| e == "cfg") {
            Err(io::ErrorKind::NotFound.into())
        } else {
            Ok(format!("{KEY}\n"))
        }
    };
    match config::load_str_with("fuzz.cfg", text, &opts, &reader) {
        // Rendering must not panic either (spans point into the text).
        Err(diags) => {
            drop(crate::diag::render(&diags));
            false
        }
        Ok(cfg) => {
            drop(format!("{cfg:?}"));
            true
        }
    }
}

/// Takes `N` bytes from the front of `data`, zero-padded when it is shorter.
fn take<const N: usize>(data: &mut &[u8]) -> [u8; N] {
    let mut b = [0u8; N];
    let n = data.len().min(N);
    b[..n].copy_from_slice(&data[..n]);
    *data = &data[n..];
    b
}

/// The delta code a peer can reach: a signature as the sender receives it
/// (checked, then encoded against), and an op stream as the receiver's
/// decoder applies it to a small base file.
///
/// Layout of `data`: `u8` block-size selector, `u64` size, `u16` base
/// length, the base, then the op stream (split into chunks at every
/// `0xfe 0xfe`, so a target can also exercise ops spread over frames).
/// A selector below 12 picks a valid power of two block size from
/// [`blockdelta::MIN_BLOCK`] upwards; otherwise the next 4 bytes are the raw block
/// size, so hostile sizes are tried too. The size's top bit set: the
/// signature claims the rest as its size (hostile), else the base's true
/// size; the decoder's declared size is the size without its top bit.
/// Returns the bytes the decoder produced when it accepted every op.
pub fn delta_decoder(data: &[u8]) -> Option<u64> {
    let mut data = data;
    let [sel] = take::<1>(&mut data);
    let block_size = if sel < 12 {
        blockdelta::MIN_BLOCK << sel
    } else {
        u32::from_be_bytes(take::<4>(&mut data))
    };
    let size = u64::from_be_bytes(take::<8>(&mut data));
    let declared = size & (u64::MAX >> 1);
    let base_len = usize::from(u16::from_be_bytes(take::<2>(&mut data))).min(data.len());
    let (base, ops) = data.split_at(base_len);

    // The sender's side: the signature of `base` at this block size, as a
    // peer would claim it, then encoding `ops` (as the new file) against it.
    let blocks = blockdelta::signature(&mut Cursor::new(base), block_size).map(|(_, b)| b);
    let blocks = blocks.unwrap_or_default();
    let sig_size = if size >> 63 == 1 { declared } else { base.len() as u64 };
    let sig_ok = blockdelta::check_signature(block_size, sig_size, blocks.len()).is_ok();
    match blockdelta::Encoder::new(Cursor::new(ops), block_size, sig_size, blocks) {
        Ok(mut enc) => {
            assert!(sig_ok);
            let mut chunks = 0usize;
            while let Some(chunk) = enc.next_chunk().expect("reading memory") {
                assert!(!chunk.is_empty() && chunk.len() <= blockdelta::CHUNK);
                chunks += 1;
                assert!(chunks <= ops.len() + 1, "the encoder makes no progress");
            }
        }
        Err(_) => assert!(!sig_ok),
    }

    // The receiver's side: hostile ops against the base.
    let Ok(mut dec) = blockdelta::Decoder::new(Cursor::new(base), block_size, declared, Vec::new())
    else {
        return None;
    };
    for chunk in split_chunks(ops) {
        let ok = dec.apply(chunk).is_ok();
        assert!(dec.written() <= declared);
        assert!(dec.get_mut().len() as u64 <= dec.written());
        if !ok {
            return None;
        }
        assert!(dec.get_mut().len() as u64 == dec.written());
    }
    Some(dec.written())
}

fn split_chunks(ops: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = ops;
    while let Some(i) = rest.windows(2).position(|w| w == [0xfe, 0xfe]) {
        out.push(&rest[..i]);
        rest = &rest[i + 2..];
    }
    out.push(rest);
    out
}

/// The pattern matcher: every line but the last is a rule (`-` exclude,
/// `=` compare, else include; patterns the config check refuses are skipped,
/// as the config parser refuses them), the last line is the path matched
/// against them as a group's patterns and as an action's. Returns how many
/// rules passed the check.
pub fn pattern_matcher(data: &[u8]) -> usize {
    let (rules_part, path) = match data.iter().rposition(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&data[..0], data),
    };
    let text = String::from_utf8_lossy(rules_part);
    let mut rules = Vec::new();
    let mut actions = Vec::new();
    for line in text.lines().take(64) {
        let (kind, pat) = match line.as_bytes().first() {
            Some(b'-') => (pattern::RuleKind::Exclude, &line[1..]),
            Some(b'=') => (pattern::RuleKind::Compare, &line[1..]),
            _ => (pattern::RuleKind::Include, line),
        };
        let _ = pattern::is_path_pattern(pat);
        let _ = pattern::walk_root(pat);
        if pattern::check(pat).is_err() {
            continue;
        }
        rules.push(pattern::Rule { kind, pattern: pat.to_owned(), span: Default::default() });
        actions.push(pat.to_owned());
    }
    if let Ok(m) = pattern::GroupMatcher::new(&rules) {
        let _ = m.is_managed(path);
        let _ = m.level(path);
        let _ = m.explain(path);
        let _ = m.walk_roots();
    }
    if let Ok(m) = pattern::ActionMatcher::new(&actions) {
        let _ = m.matches(path);
    }
    rules.len()
}

/// A fuzz target's entry point.
pub type Target = fn(&[u8]);

/// The fuzz targets by name (the names of `fuzz/fuzz_targets/*.rs` and of the
/// corpus directories under `fuzz/corpus/`).
pub const TARGETS: [(&str, Target); 4] = [
    ("frame_decoder", |d| {
        frame_decoder(d);
    }),
    ("config_parser", |d| {
        config_parser(d);
    }),
    ("delta_decoder", |d| {
        delta_decoder(d);
    }),
    ("pattern_matcher", |d| {
        pattern_matcher(d);
    }),
];

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    /// Replays the checked-in seed corpus (`fuzz/corpus/<target>/`, plus any
    /// crash the fuzzer found and someone added there) through the same
    /// functions the fuzz targets call, on stable, in every `cargo test`.
    #[test]
    fn corpus_replays_without_panics() {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
        let mut failed = Vec::new();
        for (name, run) in super::TARGETS {
            let dir = root.join(name);
            let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
                .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
                .map(|e| e.expect("a corpus entry").path())
                .collect();
            files.sort();
            assert!(files.len() >= 3, "{name}: a seed corpus of a few files");
            for f in files {
                let data = std::fs::read(&f).expect("a corpus file");
                if std::panic::catch_unwind(|| run(&data)).is_err() {
                    failed.push(f.display().to_string());
                }
            }
        }
        assert!(failed.is_empty(), "panicked on: {failed:?}");
    }

    fn seed(target: &str, name: &str) -> Vec<u8> {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
        std::fs::read(root.join(target).join(name)).expect("a seed file")
    }

    /// The valid seeds get past the checks into the code under test, so the
    /// corpus keeps meaning something when a format changes.
    #[test]
    fn valid_seeds_reach_the_code_under_test() {
        use super::*;
        assert_eq!(frame_decoder(&seed("frame_decoder", "ping_pong_bye")), 3);
        assert_eq!(frame_decoder(&seed("frame_decoder", "sig_reply_valid")), 1);
        assert_eq!(frame_decoder(&seed("frame_decoder", "hello")), 1);
        assert_eq!(frame_decoder(&seed("frame_decoder", "data_and_end")), 2);
        assert!(config_parser(&seed("config_parser", "minimal.cfg")));
        assert!(config_parser(&seed("config_parser", "actions_prefix.cfg")));
        assert!(!config_parser(&seed("config_parser", "unclosed.cfg")));
        assert_eq!(
            delta_decoder(&seed("delta_decoder", "valid_copy_and_literal")),
            Some(8192 + 15)
        );
        assert_eq!(
            delta_decoder(&seed("delta_decoder", "valid_two_chunks")),
            Some(4096 + 50 + 808)
        );
        assert_eq!(delta_decoder(&seed("delta_decoder", "copy_out_of_range")), None);
        assert_eq!(delta_decoder(&seed("delta_decoder", "more_than_declared")), None);
        assert_eq!(pattern_matcher(&seed("pattern_matcher", "include_exclude")), 3);
    }
}
