//! A real MariaDB server (`mariadbd`) for end-to-end tests: its own data directory (made by
//! `mariadb-install-db`), socket and free loopback port under a temp dir, a database and a user with a
//! password; stopped on drop. `scripts/test` installs Debian's mariadb-server; without it a test skips, or
//! fails when `GROK2API_REQUIRE_ALL=1` or `CI=true`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

pub const USER: &str = "g2a";
pub const PASSWORD: &str = "g2a-test-Pw";
pub const DATABASE: &str = "grok2api";

fn required() -> bool {
    std::env::var("GROK2API_REQUIRE_ALL").as_deref() == Ok("1")
        || std::env::var("CI").as_deref() == Ok("true")
}

fn find(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Whether mariadbd and its tools are there; `false` means skip, and panics when every test must run.
pub fn available() -> bool {
    if ["mariadbd", "mariadb-install-db", "mariadb"]
        .iter()
        .all(|b| find(b).is_some())
    {
        return true;
    }
    let msg = "mariadbd not installed (scripts/test installs it: apt-get install mariadb-server)";
    if required() {
        panic!("{msg}");
    }
    eprintln!("skipping: {msg}");
    false
}

fn as_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

pub struct MysqlServer {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl MysqlServer {
    /// A fresh server with an empty database `grok2api` that user `g2a` may use.
    pub fn start() -> MysqlServer {
        let dir = tempfile::tempdir().unwrap();
        let mut install = Command::new(find("mariadb-install-db").expect("mariadb-install-db"));
        install
            .arg("--no-defaults")
            .arg(format!("--datadir={}", dir.path().join("data").display()))
            .args([
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                // Small redo log and buffer pool: quick to create, enough for tests.
                "--innodb-log-file-size=8M",
                "--innodb-buffer-pool-size=32M",
            ]);
        if as_root() {
            install.arg("--user=root");
        }
        let out = install.output().expect("run mariadb-install-db");
        assert!(
            out.status.success(),
            "mariadb-install-db failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let mut s = MysqlServer {
            port: free_port(),
            dir,
            child: None,
        };
        s.spawn();
        s.sql(&format!(
            "CREATE DATABASE {DATABASE}; \
             CREATE USER '{USER}'@'127.0.0.1' IDENTIFIED BY '{PASSWORD}'; \
             GRANT ALL ON {DATABASE}.* TO '{USER}'@'127.0.0.1';"
        ));
        s
    }

    pub fn url(&self) -> String {
        format!(
            "mysql://{USER}:{PASSWORD}@127.0.0.1:{}/{DATABASE}",
            self.port
        )
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Runs SQL as root with the command-line client; panics on failure. Returns the output (tab-separated,
    /// no column names).
    pub fn sql(&self, sql: &str) -> String {
        let out = Command::new(find("mariadb").expect("mariadb client"))
            .args(["--no-defaults", "-h127.0.0.1", "-uroot", "-N", "-B"])
            .arg(format!("-P{}", self.port))
            .args(["-e", sql])
            .output()
            .expect("run mariadb");
        assert!(
            out.status.success(),
            "{sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A number the query answers (first column of the first row).
    pub fn count(&self, sql: &str) -> u64 {
        self.sql(&format!("USE {DATABASE}; {sql}"))
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// Starts it (again) on the same port with the same data.
    pub fn spawn(&mut self) {
        let d = self.dir.path();
        let log = std::fs::File::create(d.join("mariadbd.out")).unwrap();
        let mut cmd = Command::new(find("mariadbd").expect("mariadbd not installed"));
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", d.join("data").display()))
            .arg(format!("--socket={}", d.join("mysqld.sock").display()))
            .arg(format!("--pid-file={}", d.join("mysqld.pid").display()))
            .arg(format!("--log-error={}", d.join("error.log").display()))
            .arg(format!("--port={}", self.port))
            .args([
                "--bind-address=127.0.0.1",
                "--skip-name-resolve",
                "--innodb-log-file-size=8M",
                "--innodb-buffer-pool-size=64M",
                // Every commit on disk, so a restart keeps everything acknowledged.
                "--innodb-flush-log-at-trx-commit=1",
            ]);
        if as_root() {
            cmd.arg("--user=root");
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start mariadbd");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ok = Command::new(find("mariadb").unwrap())
                .args(["--no-defaults", "-h127.0.0.1", "-uroot"])
                .arg(format!("-P{}", self.port))
                .args(["-e", "SELECT 1"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ok {
                return;
            }
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    panic!(
                        "mariadbd exited ({st}): {}",
                        std::fs::read_to_string(d.join("error.log")).unwrap_or_default()
                    );
                }
            }
            assert!(Instant::now() < deadline, "mariadbd did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM and wait: a clean shutdown.
    pub fn stop(&mut self) {
        super::terminate(&mut self.child);
    }

    /// Starts it again on the same port with the same data.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for MysqlServer {
    fn drop(&mut self) {
        super::kill(&mut self.child);
    }
}
