//! Real forward proxies for end-to-end tests: `tinyproxy` (HTTP) and `microsocks` (SOCKS5), each on a free
//! loopback port, its outgoing connections bound to its own loopback address (127.0.0.2, .3, …) so the mock
//! upstream's `x-mock-peer` tells which proxy carried a request. `scripts/test` installs both; without them a
//! test skips, or fails when `GROK2API_REQUIRE_ALL=1`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Http,
    Socks,
}

impl Kind {
    fn binary(self) -> &'static str {
        match self {
            Kind::Http => "tinyproxy",
            Kind::Socks => "microsocks",
        }
    }
}

fn find_binary(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Whether the proxy binaries are there; `false` means skip, and panics when every test must run.
pub fn available() -> bool {
    let missing: Vec<&str> = [Kind::Http, Kind::Socks]
        .iter()
        .map(|k| k.binary())
        .filter(|b| find_binary(b).is_none())
        .collect();
    if missing.is_empty() {
        return true;
    }
    let msg = format!(
        "{} not installed (scripts/test installs them: apt-get install tinyproxy-bin microsocks)",
        missing.join(", ")
    );
    if std::env::var("GROK2API_REQUIRE_ALL").as_deref() == Ok("1") {
        panic!("{msg}");
    }
    eprintln!("skipping: {msg}");
    false
}

pub struct ForwardProxy {
    pub kind: Kind,
    pub port: u16,
    /// Outgoing address: what the mock upstream sees as the peer.
    pub bind: String,
    creds: Option<(String, String)>,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl ForwardProxy {
    /// Starts a proxy whose outgoing connections leave from `bind` (e.g. "127.0.0.2").
    pub fn start(kind: Kind, bind: &str, creds: Option<(&str, &str)>) -> ForwardProxy {
        let mut p = ForwardProxy {
            kind,
            port: free_port(),
            bind: bind.to_string(),
            creds: creds.map(|(u, p)| (u.to_string(), p.to_string())),
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        p.spawn();
        p
    }

    /// The proxy URL the gateway should use, with credentials.
    pub fn url(&self) -> String {
        let scheme = match self.kind {
            Kind::Http => "http",
            Kind::Socks => "socks5",
        };
        let creds = match &self.creds {
            Some((u, p)) => format!("{u}:{p}@"),
            None => String::new(),
        };
        format!("{scheme}://{creds}127.0.0.1:{}", self.port)
    }

    /// The URL as the gateway normalises it (socks5 → socks5h).
    pub fn normalized_url(&self) -> String {
        self.url().replacen("socks5://", "socks5h://", 1)
    }

    fn spawn(&mut self) {
        let bin = find_binary(self.kind.binary())
            .unwrap_or_else(|| panic!("{} not installed", self.kind.binary()));
        let log = std::fs::File::create(self.dir.path().join("proxy.log")).unwrap();
        let mut cmd = Command::new(bin);
        match self.kind {
            Kind::Http => {
                let mut conf = format!(
                    "Port {}\nListen 127.0.0.1\nBind {}\nTimeout 60\nMaxClients 512\nLogLevel Notice\n\
                     DisableViaHeader Yes\n",
                    self.port, self.bind
                );
                if let Some((u, p)) = &self.creds {
                    conf.push_str(&format!("BasicAuth {u} {p}\n"));
                }
                let path = self.dir.path().join("tinyproxy.conf");
                std::fs::write(&path, conf).unwrap();
                cmd.arg("-d").arg("-c").arg(path);
            }
            Kind::Socks => {
                cmd.args([
                    "-i",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "-b",
                    &self.bind,
                ]);
                if let Some((u, p)) = &self.creds {
                    cmd.args(["-u", u, "-P", p]);
                }
            }
        }
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        self.child = Some(cmd.spawn().expect("start forward proxy"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "{:?} proxy did not listen on {}: {}",
                self.kind,
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("proxy.log")).unwrap_or_default()
    }

    /// SIGKILL, as a crash: open connections are reset.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for ForwardProxy {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A TCP port on loopback where nothing listens (a dead proxy).
pub fn dead_port() -> u16 {
    free_port()
}
