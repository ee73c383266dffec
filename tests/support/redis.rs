//! A real `redis-server` for end-to-end tests: its own port and data directory under a temp dir, append-only
//! file with fsync on every write (so a restart keeps everything), stopped on drop. `scripts/test` installs
//! Debian's redis-server; without it a test skips, or fails when `GROK2API_REQUIRE_ALL=1` or `CI=true`.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

fn required() -> bool {
    std::env::var("GROK2API_REQUIRE_ALL").as_deref() == Ok("1")
        || std::env::var("CI").as_deref() == Ok("true")
}

fn binary() -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([std::path::PathBuf::from("/usr/bin")])
        .map(|d| d.join("redis-server"))
        .find(|p| p.is_file())
}

/// Whether redis-server is there; `false` means skip, and panics when every test must run.
pub fn available() -> bool {
    if binary().is_some() {
        return true;
    }
    let msg = "redis-server not installed (scripts/test installs it: apt-get install redis-server)";
    if required() {
        panic!("{msg}");
    }
    eprintln!("skipping: {msg}");
    false
}

pub struct RedisServer {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        let mut s = RedisServer {
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        s.spawn();
        s
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Starts it (again) on the same port with the same data.
    pub fn spawn(&mut self) {
        let bin = binary().expect("redis-server not installed");
        let log = std::fs::File::create(self.dir.path().join("redis.log")).unwrap();
        let child = Command::new(bin)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(self.dir.path())
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .args(["--daemonize", "no", "--protected-mode", "no"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut c) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                use std::io::{Read, Write};
                let _ = c.set_read_timeout(Some(Duration::from_millis(500)));
                let mut buf = [0u8; 64];
                if c.write_all(b"PING\r\n").is_ok() {
                    if let Ok(n) = c.read(&mut buf) {
                        if buf[..n].starts_with(b"+PONG") {
                            return;
                        }
                    }
                }
            }
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM and wait: a clean stop (the append-only file is already on disk).
    pub fn stop(&mut self) {
        super::terminate(&mut self.child);
    }

    /// Starts it again on the same port with the same data.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        super::kill(&mut self.child);
    }
}
