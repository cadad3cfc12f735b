//! Issue 14, items 8 and 9: every `--json` output of a real two-node cluster
//! checked against the schema in doc/json-schema.md; `--prometheus` parsed;
//! log lines under journald carry priorities and no timestamps.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;

use serde_json::Value;

use crate::net_util::{Net, wait_until};
use crate::util::{repo, stderr, stdout};

const CFG: &str = "
group g {
    host n1@@ADDR_n1@ n2@@ADDR_n2@;
    key csync2.key;
    include %p%;
    exclude *~;
    auto younger;
    action { pattern %p%/hook; exec \"true\"; do-local; }
}
prefix p { on n1: @ROOT_n1@; on n2: @ROOT_n2@; }
";

/// The schemas of doc/json-schema.md, by `$id`.
fn schemas() -> BTreeMap<String, Value> {
    let text = std::fs::read_to_string(repo().join("doc/json-schema.md")).unwrap();
    let mut out = BTreeMap::new();
    for block in text.split("```json\n").skip(1) {
        let body = block.split("\n```").next().unwrap();
        let v: Value = serde_json::from_str(body).expect("a schema block is JSON");
        out.insert(v["$id"].as_str().expect("$id").to_string(), v);
    }
    out
}

/// The subset of JSON Schema the document uses; `Err` names where and why.
fn validate(schema: &Value, v: &Value, at: &str) -> Result<(), String> {
    if let Some(allowed) = schema.get("enum")
        && !allowed.as_array().unwrap().contains(v)
    {
        return Err(format!("{at}: {v} not in {allowed}"));
    }
    if let Some(t) = schema.get("type") {
        let types: Vec<&str> = match t {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().map(|x| x.as_str().unwrap()).collect(),
            _ => panic!("bad type in schema at {at}"),
        };
        let ok = types.iter().any(|t| match *t {
            "object" => v.is_object(),
            "array" => v.is_array(),
            "string" => v.is_string(),
            "boolean" => v.is_boolean(),
            "integer" => v.is_i64() || v.is_u64(),
            "number" => v.is_number(),
            "null" => v.is_null(),
            other => panic!("unknown type {other}"),
        });
        if !ok {
            return Err(format!("{at}: {v} is not {t}"));
        }
    }
    if let (Some(obj), Some(props)) = (v.as_object(), schema.get("properties")) {
        let props = props.as_object().unwrap();
        for r in schema.get("required").and_then(Value::as_array).into_iter().flatten() {
            let r = r.as_str().unwrap();
            if !obj.contains_key(r) {
                return Err(format!("{at}: required field {r} missing"));
            }
        }
        for (k, x) in obj {
            match props.get(k) {
                Some(s) => validate(s, x, &format!("{at}.{k}"))?,
                None if schema["additionalProperties"] == Value::Bool(false) => {
                    return Err(format!("{at}: undocumented field {k}"));
                }
                None => {}
            }
        }
    }
    if let (Some(items), Some(a)) = (schema.get("items"), v.as_array()) {
        for (i, x) in a.iter().enumerate() {
            validate(items, x, &format!("{at}[{i}]"))?;
        }
    }
    Ok(())
}

/// Runs `csync` on `node` with `args`, checks its stdout against schema `id`,
/// and returns the document and the exit code.
fn checked(net: &Net, node: &str, args: &[&str], id: &str) -> (Value, i32) {
    let out = net.csync(node).args(args).output().unwrap();
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 1, "{args:?}: one line of JSON: {text}{}", stderr(&out));
    let v: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {text}{}", stderr(&out)));
    let schemas = schemas();
    let schema = schemas.get(id).unwrap_or_else(|| panic!("no schema {id}"));
    if let Err(e) = validate(schema, &v, id) {
        panic!("{args:?}: output does not match schema {id}: {e}\n{v:#}");
    }
    (v, out.status.code().unwrap())
}

#[test]
fn the_schema_validator_rejects_what_it_should() {
    let s = &schemas()["dirty"];
    let row = |forced: Value| {
        serde_json::json!([{"path": "/a", "peer": "b", "myname": "a", "forced": forced,
            "changes": ["content"], "marked_at": 1}])
    };
    assert!(validate(s, &row(Value::Bool(true)), "t").is_ok());
    assert!(validate(s, &row(serde_json::json!(2)), "t").is_err(), "forced must stay a bool");
    let mut extra = row(Value::Bool(false));
    extra[0]["surprise"] = Value::Null;
    assert!(validate(s, &extra, "t").unwrap_err().contains("undocumented field surprise"));
}

#[test]
fn every_json_output_matches_its_documented_schema() {
    let net = Net::new("every_json_output_matches_its_documented_schema", &["n1", "n2"], CFG);
    std::fs::write(net.root("n1").join("a.txt"), b"hello").unwrap();
    std::fs::write(net.root("n1").join("hook"), b"x").unwrap();

    let (v, code) = checked(&net, "n1", &["--check-config", "--json"], "check-config");
    assert_eq!(code, 0);
    assert_eq!(v["groups"][0]["actions"][0]["do_local"], true);
    let (v, code) = checked(
        &net,
        "n1",
        &["--explain", net.root("n1").join("a.txt").to_str().unwrap(), "--json"],
        "explain",
    );
    assert_eq!((code, v["managed"].as_bool()), (0, Some(true)), "{v}");

    // Peer down: -x reports it, the marks stay, --status says so.
    let (v, code) = checked(&net, "n1", &["-x", "--json", "--timeout", "1"], "run");
    assert_eq!(code, 1);
    assert_eq!(v["ok"], false);
    assert!(v["check"]["changed"].as_array().unwrap().len() >= 2, "{v}");
    assert!(v["update"]["peers"][0]["error"].is_string(), "{v}");
    assert_eq!(v["actions"][0]["ok"], true, "the do-local action ran: {v}");
    let (v, code) = checked(&net, "n1", &["-M", "--json"], "dirty");
    assert_eq!(code, 0);
    assert!(v.as_array().unwrap().iter().all(|r| r["forced"] == false));
    let (v, code) = checked(&net, "n1", &["--status", "--json"], "status");
    assert_eq!(code, 1);
    let peer = &v["peers"][0];
    assert_eq!(peer["peer"], "n2");
    assert!(peer["pending"].as_u64().unwrap() >= 2, "{v}");
    assert!(peer["last_failed_at"].is_i64() && peer["last_ok_at"].is_null(), "{v}");
    let days = v["certificate"]["days_left"].as_i64().unwrap();
    assert!(days > 300 && v["certificate"]["expires_soon"] == false, "{v}");
    let (v, code) = checked(&net, "n1", &["--ping", "n2", "--json", "--timeout", "1"], "ping");
    assert_eq!((code, v["ok"].as_bool()), (1, Some(false)));

    // Peer up: everything goes through.
    let _d = net.daemon("n2", &[]);
    let (v, code) = checked(&net, "n1", &["--ping", "n2", "--json"], "ping");
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["verified_name"], "n2");
    assert_eq!(v["groups"][0]["ok"], true);
    let (v, code) = checked(&net, "n1", &["-u", "--json"], "run");
    assert_eq!(code, 0, "{v}");
    assert!(v["update"]["peers"][0]["bytes"].as_u64().unwrap() >= 5, "{v}");
    assert_eq!(std::fs::read(net.root("n2").join("a.txt")).unwrap(), b"hello");
    let (v, code) = checked(&net, "n1", &["--status", "--json"], "status");
    assert_eq!(code, 0, "{v}");
    assert!(v["peers"][0]["last_ok_at"].is_i64() && v["peers"][0]["last_failed_at"].is_null());
    assert_eq!(v["peers"][0]["pending"], 0);
    let (v, code) = checked(&net, "n1", &["-T", "--json"], "test");
    assert_eq!((code, v["in_sync"].as_bool()), (2, Some(true)), "{v}");
    std::fs::write(net.root("n2").join("only-there"), b"x").unwrap();
    assert!(net.csync("n2").arg("-c").output().unwrap().status.success());
    let (v, code) = checked(&net, "n1", &["-T", "--json"], "test");
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["differences"][0]["kind"], "R", "{v}");
    let (v, code) = checked(&net, "n1", &["-L", "--json"], "list");
    assert_eq!(code, 0);
    assert!(v.as_array().unwrap().iter().any(|e| e["type"] == "reg"), "{v}");
}

#[test]
fn prometheus_output_is_valid_text_format() {
    let net = Net::new("prometheus_output_is_valid_text_format", &["n1", "n2"], CFG);
    std::fs::write(net.root("n1").join("a.txt"), b"hello").unwrap();
    let out = net.csync("n1").arg("-c").output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let out = net.csync("n1").arg("--prometheus").output().unwrap();
    // Pending entries make --status exit 1; the metrics file is still good.
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let mut samples = BTreeMap::new();
    let mut typed = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert_eq!(kind, "gauge");
            typed.push(name.to_string());
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        // name{label="v",...} value
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad line {line}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value in {line}"));
        let (name, labels) = series.split_once('{').unwrap();
        assert!(labels.ends_with('}'), "{line}");
        for pair in labels.trim_end_matches('}').split(',') {
            let (k, v) = pair.split_once('=').unwrap();
            assert!(k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "{line}");
            assert!(v.starts_with('"') && v.ends_with('"'), "{line}");
        }
        assert!(typed.iter().any(|t| t == name), "{name} has no TYPE line before it");
        samples.insert(series.to_string(), value);
    }
    assert!(samples[r#"csync_pending_entries{node="n1",peer="n2"}"#] >= 1.0, "{text}");
    assert_eq!(samples[r#"csync_last_success_timestamp_seconds{node="n1",peer="n2"}"#], 0.0);
    assert_eq!(samples[r#"csync_open_conflicts{node="n1"}"#], 0.0);
    let expiry = samples[r#"csync_certificate_expiry_timestamp_seconds{node="n1"}"#];
    assert!(expiry > 1.7e9, "{text}");
}

#[test]
fn under_journald_log_lines_carry_priorities_and_no_timestamps() {
    let net = Net::new("under_journald_log_lines", &["n1", "n2"], CFG);
    let log = net.path("journal.log");
    let file = std::fs::File::create(&log).unwrap();
    let md = file.metadata().unwrap();
    let mut c = net.csync_std("n2");
    c.arg("-ii")
        .env("JOURNAL_STREAM", format!("{}:{}", md.dev(), md.ino()))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(file);
    let mut child = c.spawn().unwrap();
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    let pinged = wait_until(std::time::Duration::from_secs(10), || {
        let out = net.csync("n1").args(["--ping", "n2"]).output().unwrap();
        out.status.success().then_some(())
    });
    let text = wait_until(std::time::Duration::from_secs(10), || {
        let t = read();
        t.contains("session open").then_some(t)
    });
    let _ = child.kill();
    let _ = child.wait();
    assert!(pinged.is_some(), "ping never worked: {}", read());
    let text = text.unwrap_or_else(|| panic!("no session line: {}", read()));
    for line in text.lines() {
        let pri = line.strip_prefix('<').and_then(|l| l.split_once('>')).map(|(p, _)| p);
        assert!(
            matches!(pri, Some("3" | "4" | "6" | "7")),
            "line without a priority prefix: {line}"
        );
        assert!(!line.contains("INFO") && !line.contains("WARN"), "level text doubled: {line}");
        let stamped = line.as_bytes().windows(11).any(|w| {
            w[4] == b'-' && w[7] == b'-' && w[10] == b'T' && w[..4].iter().all(u8::is_ascii_digit)
        });
        assert!(!stamped, "timestamp in {line}");
    }
    assert!(text.lines().any(|l| l.starts_with("<6>") && l.contains("session open")), "{text}");
}

#[test]
fn a_push_shows_progress_on_a_terminal_and_nothing_elsewhere() {
    let net = Net::new("a_push_shows_progress_on_a_terminal", &["n1", "n2"], CFG);
    let _d = net.daemon("n2", &[]);
    let big: Vec<u8> =
        (0..32u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(net.root("n1").join("big"), &big).unwrap();
    let out = net.csync("n1").arg("-c").output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    // Not a terminal (cron, units, pipes): silent, even when told to show at once.
    let out = net.csync("n1").arg("-u").env("CSYNC_PROGRESS_AFTER_MS", "0").output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stderr(&out), "", "nothing but errors on a non-terminal");
    assert_eq!(std::fs::read(net.root("n2").join("big")).unwrap().len(), big.len());

    if std::process::Command::new("script").arg("--version").output().is_err() {
        println!("skipped the terminal half: script(1) is not installed");
        return;
    }
    let mut changed = big;
    changed.reverse();
    std::fs::write(net.root("n1").join("big"), &changed).unwrap();
    assert!(net.csync("n1").arg("-c").output().unwrap().status.success());
    let cmd = format!(
        "CSYNC2_SYSTEM_DIR='{}' CSYNC_PROGRESS_AFTER_MS=0 '{}' -N n1 -p {} -D '{}' -u",
        net.sysdir("n1").display(),
        crate::net_util::bin().display(),
        net.port,
        net.path("db-n1").display()
    );
    // script(1) gives csync a pseudo-terminal and copies what it wrote.
    let out =
        std::process::Command::new("script").args(["-qefc", &cmd, "/dev/null"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    assert!(text.contains("csync: n2 "), "no progress line on the terminal: {text:?}");
    assert!(text.contains("files") && text.contains("/s"), "{text:?}");
    assert!(text.ends_with("\r\x1b[K"), "the line is erased at the end: {text:?}");
    assert_eq!(std::fs::read(net.root("n2").join("big")).unwrap(), changed);
}

/// `--import-csync2 --json` prints its counts as one JSON document (it
/// printed its sentence whatever `--json` said).
#[test]
fn the_csync2_import_reports_in_json() {
    let net = Net::new("the_csync2_import_reports_in_json", &["n1", "n2"], CFG);
    let f = net.root("n1").join("f");
    std::fs::write(&f, b"one\n").unwrap();
    let db = net.path("n1.db3");
    let c2 = rusqlite::Connection::open(&db).unwrap();
    c2.execute_batch(
        "CREATE TABLE file (filename, checktxt, UNIQUE (filename) ON CONFLICT REPLACE);
         CREATE TABLE dirty (filename, forced, myname, peername,
                             UNIQUE (filename, peername) ON CONFLICT IGNORE);",
    )
    .unwrap();
    let name = f.to_str().unwrap();
    c2.execute("INSERT INTO file VALUES (?1, 'v1%3Atype=reg')", [name]).unwrap();
    c2.execute("INSERT INTO dirty VALUES (?1, 0, 'n1', 'n2')", [name]).unwrap();
    drop(c2);
    let (v, code) =
        checked(&net, "n1", &["--import-csync2", db.to_str().unwrap(), "--json"], "import");
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["db"], db.to_str().unwrap());
    // The root and f, neither as csync2 recorded them: marked for the peer.
    assert_eq!((v["scanned"].as_u64(), v["changed"].as_u64()), (Some(2), Some(2)), "{v}");
    assert_eq!(v["peers"], serde_json::json!(["n2"]), "{v}");
}
