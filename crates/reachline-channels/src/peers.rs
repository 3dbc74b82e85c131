//! The peers the workspace's test suites and CI talk to that Reachline did not write: a
//! Python environment holding PyPI's `smpp34` (an SMSC) and `aiosmtpd` (an SMTP server), the
//! scripts in `tools/` that drive them, and [`SmtpPeer`], the SMTP server as a child process
//! that keeps what it received. Nothing here runs in production.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A Python with `smpp34` and `aiosmtpd`: `REACHLINE_INTEROP_PYTHON` when set (`.ci/run`
/// sets it), else a venv made once under the temp dir. Panics with the reason otherwise.
pub fn interop_python() -> PathBuf {
    if let Ok(p) = std::env::var("REACHLINE_INTEROP_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = std::env::temp_dir().join("reachline-interop-venv");
    let py = venv.join("bin/python");
    let ok = |p: &PathBuf| {
        Command::new(p)
            .args(["-c", "import smpp34, aiosmtpd"])
            .status()
            .is_ok_and(|s| s.success())
    };
    if ok(&py) {
        return py;
    }
    // Test binaries run one after another, so a lock inside the process is enough.
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if !ok(&py) {
        let st = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .expect("python3 is needed for interop tests");
        assert!(st.success(), "python3 -m venv failed");
        let st = Command::new(venv.join("bin/pip"))
            .args(["install", "-q", "smpp34==1.5.0", "aiosmtpd==1.4.6"])
            .status()
            .expect("pip");
        assert!(st.success(), "pip install smpp34 aiosmtpd failed");
    }
    py
}

pub fn tools_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tools")
}

/// One message the SMTP peer took, as its recipient would read it.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Received {
    pub to: String,
    pub from: String,
    pub subject: String,
    pub text: String,
}

/// `tools/smtp_peer.py` on `aiosmtpd` as a child process (killed on drop): it answers by the
/// recipient's local part (see the script), writes bounces to an mbox and keeps every message
/// it took in an inbox.
pub struct SmtpPeer {
    child: std::process::Child,
    pub port: u16,
    pub mbox: PathBuf,
    /// Bounces are also delivered here, as a mail system would.
    pub maildir: PathBuf,
    inbox: PathBuf,
}

impl SmtpPeer {
    /// Starts the peer on a free loopback port, its files under `dir`; waits until it listens.
    pub fn start(dir: &Path) -> std::io::Result<SmtpPeer> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let (mbox, inbox, maildir) = (dir.join("bounces.mbox"), dir.join("inbox.jsonl"), dir.join("bounces"));
        let child = Command::new(interop_python())
            .arg(tools_dir().join("smtp_peer.py"))
            .args(["--port", &port.to_string(), "--mbox"])
            .arg(&mbox)
            .arg("--inbox")
            .arg(&inbox)
            .arg("--maildir")
            .arg(&maildir)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.join("peer.log"))?)
            .spawn()?;
        let peer = SmtpPeer {
            child,
            port,
            mbox,
            maildir,
            inbox,
        };
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(peer);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the SMTP peer did not listen",
        ))
    }

    /// Every message taken so far, oldest first.
    pub fn received(&self) -> Vec<Received> {
        std::fs::read_to_string(&self.inbox)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The messages to `to`, waiting up to five seconds for at least `n` of them.
    pub async fn wait_for(&self, to: &str, n: usize) -> Vec<Received> {
        let mine = || -> Vec<Received> { self.received().into_iter().filter(|m| m.to == to).collect() };
        for _ in 0..100 {
            let got = mine();
            if got.len() >= n {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        mine()
    }
}

impl Drop for SmtpPeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
