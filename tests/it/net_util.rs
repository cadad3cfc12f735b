//! A small cluster on loopback for transport tests: per-node system dir with
//! its own certificate, config and key; per-test addresses `127.X.Y.n` and a
//! port, so tests run in parallel without colliding.

use std::collections::hash_map::DefaultHasher;
use std::fs;
use std::hash::{Hash, Hasher};
use std::io::Read;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command as StdCommand, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::Command;

/// The csync binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(assert_cmd::cargo::cargo_bin!("csync"))
}

/// Nodes on loopback with real identities.
pub struct Net {
    /// Keeps everything alive.
    pub dir: tempfile::TempDir,
    /// The port every node listens on.
    pub port: u16,
    ab: (u8, u8),
    nodes: Vec<String>,
}

impl Net {
    /// `nodes` get identities from one cluster CA and share `config`, in which
    /// `@ADDR_name@` becomes the node's address and `@ROOT_name@` its tree.
    pub fn new(test: &str, nodes: &[&str], config: &str) -> Net {
        let mut h = DefaultHasher::new();
        test.hash(&mut h);
        std::process::id().hash(&mut h);
        let v = h.finish();
        let ab = (1 + (v % 250) as u8, 1 + ((v >> 8) % 250) as u8);
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let net = Net { dir, port, ab, nodes: nodes.iter().map(|s| s.to_string()).collect() };
        run_ok(StdCommand::new(bin()).arg("--new-ca").arg(net.path("ca")));
        run_ok(StdCommand::new(bin()).arg("-k").arg(net.path("group.key")));
        for n in nodes {
            net.identity(n, n, "ca");
            fs::copy(net.path("group.key"), net.sysdir(n).join("csync2.key")).unwrap();
        }
        net.write_config(config);
        net
    }

    /// A path under the test directory.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Node `n`'s system dir.
    pub fn sysdir(&self, node: &str) -> PathBuf {
        let p = self.path(&format!("etc-{node}"));
        fs::create_dir_all(&p).unwrap();
        p
    }

    /// Node `n`'s tree.
    pub fn root(&self, node: &str) -> PathBuf {
        let p = self.path(&format!("root-{node}"));
        fs::create_dir_all(&p).unwrap();
        p
    }

    /// Node `n`'s address (its index in the node list + 1).
    pub fn addr(&self, node: &str) -> String {
        let i = self.nodes.iter().position(|n| n == node).map_or(200, |i| i + 1);
        format!("127.{}.{}.{}", self.ab.0, self.ab.1, i)
    }

    /// Gives `node` a certificate for `cert_name` from the CA in `ca`
    /// (replacing what it had).
    pub fn identity(&self, node: &str, cert_name: &str, ca: &str) {
        let sys = self.sysdir(node);
        for f in ["csync2_ssl_cert.pem", "csync2_ssl_key.pem", "csync2_ssl_ca.pem"] {
            let _ = fs::remove_file(sys.join(f));
        }
        let out = self.path(&format!("certs-{node}-{cert_name}-{ca}"));
        let _ = fs::remove_dir_all(&out);
        run_ok(
            StdCommand::new(bin())
                .args(["--new-cert", cert_name, "--ca"])
                .arg(self.path(ca))
                .arg("--out")
                .arg(&out),
        );
        for f in ["csync2_ssl_cert.pem", "csync2_ssl_key.pem"] {
            fs::copy(out.join(f), sys.join(f)).unwrap();
        }
        // The node always trusts the cluster CA, whatever signed its own cert.
        fs::copy(self.path("ca/csync2_ssl_ca.pem"), sys.join("csync2_ssl_ca.pem")).unwrap();
    }

    /// Writes `config` into every node's system dir.
    pub fn write_config(&self, config: &str) {
        for n in &self.nodes {
            self.write_config_for(n, config);
        }
    }

    /// Writes `config` into one node's system dir.
    pub fn write_config_for(&self, node: &str, config: &str) {
        let mut t = config.to_string();
        for m in &self.nodes {
            t = t.replace(&format!("@ADDR_{m}@"), &self.addr(m));
            t = t.replace(&format!("@ROOT_{m}@"), self.root(m).to_str().unwrap());
        }
        fs::write(self.sysdir(node).join("csync2.cfg"), t).unwrap();
    }

    /// `csync -N node -D db -p port` with node's system dir.
    pub fn csync(&self, node: &str) -> Command {
        let mut c = Command::new(bin());
        self.prepare(&mut c, node);
        c
    }

    /// The same as [`Net::csync`], as a `std` command (to run in the background).
    pub fn csync_std(&self, node: &str) -> StdCommand {
        let mut c = StdCommand::new(bin());
        self.prepare(&mut c, node);
        c
    }

    fn prepare<C: CommandLike>(&self, c: &mut C, node: &str) {
        c.env_("CSYNC2_SYSTEM_DIR", self.sysdir(node));
        c.args_(["-N", node, "-p", &self.port.to_string(), "-D"]);
        c.args_([self.path(&format!("db-{node}")).to_str().unwrap()]);
    }

    /// Starts `csync -ii` for `node`; stderr goes to a log file the test can read.
    pub fn daemon(&self, node: &str, extra: &[&str]) -> Daemon {
        let log = self.path(&format!("daemon-{node}.log"));
        let mut c = StdCommand::new(bin());
        self.prepare(&mut c, node);
        c.arg("-ii").args(extra);
        c.stdin(Stdio::null()).stdout(Stdio::null()).stderr(fs::File::create(&log).unwrap());
        let child = c.spawn().unwrap();
        let d = Daemon { child, log };
        wait_until(Duration::from_secs(10), || {
            TcpStream::connect((self.addr(node).as_str(), self.port)).ok().map(|_| ())
        })
        .unwrap_or_else(|| panic!("daemon {node} did not start listening: {}", d.log_text()));
        d
    }
}

/// A running daemon, killed when dropped.
pub struct Daemon {
    /// The process.
    pub child: Child,
    /// Its stderr.
    pub log: PathBuf,
}

impl Daemon {
    /// Everything it logged so far.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until its log contains `needle`; panics with the log otherwise.
    pub fn wait_log(&self, needle: &str) -> String {
        wait_until(Duration::from_secs(10), || {
            let t = self.log_text();
            t.contains(needle).then_some(t)
        })
        .unwrap_or_else(|| panic!("daemon log never said {needle:?}:\n{}", self.log_text()))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `f` until it yields `Some`/`true` or the deadline passes.
pub fn wait_until<T, F: FnMut() -> Option<T>>(limit: Duration, mut f: F) -> Option<T>
where
{
    let end = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

trait CommandLike {
    fn env_(&mut self, k: &str, v: PathBuf);
    fn args_<'a, I: IntoIterator<Item = &'a str>>(&mut self, a: I);
}

impl CommandLike for Command {
    fn env_(&mut self, k: &str, v: PathBuf) {
        self.env(k, v);
    }
    fn args_<'a, I: IntoIterator<Item = &'a str>>(&mut self, a: I) {
        self.args(a);
    }
}

impl CommandLike for StdCommand {
    fn env_(&mut self, k: &str, v: PathBuf) {
        self.env(k, v);
    }
    fn args_<'a, I: IntoIterator<Item = &'a str>>(&mut self, a: I) {
        self.args(a);
    }
}

fn run_ok(c: &mut StdCommand) {
    let out = c.output().unwrap();
    assert!(out.status.success(), "{c:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Reads whatever a socket yields until EOF or the timeout.
pub fn drain(s: &mut TcpStream, limit: Duration) -> Vec<u8> {
    s.set_read_timeout(Some(limit)).unwrap();
    let mut v = Vec::new();
    let _ = s.read_to_end(&mut v);
    v
}

/// A raw protocol client (a hostile peer built on our own codec) speaking
/// as `node`, with n1's identity and key, to n2's daemon.
pub fn raw(
    net: &Net,
    rt: &tokio::runtime::Runtime,
    node: &str,
    groups: &[&str],
) -> csync::net::client::Session {
    let id = csync::net::identity::Identity::load(&net.sysdir("n1")).unwrap();
    let settings = csync::net::client::ClientSettings {
        tls: csync::net::tls::client_config(&id).unwrap(),
        connect_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(10),
    };
    let key = fs::read_to_string(net.sysdir("n1").join("csync2.key")).unwrap();
    let key = key.trim().as_bytes().to_vec();
    let groups: Vec<(String, Vec<u8>)> =
        groups.iter().map(|g| (g.to_string(), key.clone())).collect();
    let target =
        csync::net::client::Target { name: "n2".into(), addr: net.addr("n2"), port: net.port };
    rt.block_on(csync::net::client::connect(&target, &settings, node, &groups)).unwrap()
}

/// Two nodes, separate trees through a prefix, `auto none`.
pub const TWO_NODES: &str = "
group g {
    host n1@@ADDR_n1@ n2@@ADDR_n2@;
    key csync2.key;
    include %p%;
    auto none;
}
prefix p { on n1: @ROOT_n1@; on n2: @ROOT_n2@; }
";

/// A regular file's state as a (hostile) peer announces it: `data`'s size
/// and hash, mode 0644, our own ids, modified now.
pub fn wire_file(data: &[u8]) -> csync::proto::WireEntry {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    csync::proto::WireEntry {
        kind: 1,
        mode: 0o644,
        uid: rustix::process::getuid().as_raw(),
        gid: rustix::process::getgid().as_raw(),
        size: data.len() as u64,
        mtime_ns: now.as_nanos() as i64,
        rdev: 0,
        target: None,
        hash: Some(*blake3::hash(data).as_bytes()),
        origin: None,
    }
}
