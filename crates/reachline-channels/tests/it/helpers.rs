//! Test helpers: free ports, phone numbers by last digit, receipt collection, and the Python
//! environment that holds the peers we did not write.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use futures::StreamExt;
use reachline_channels::{MessageRef, Receipt, ReceiptStream};
use reachline_domain::{ContactAddress, PhoneNumber};

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A mainland mobile number ending in `digit` (the sandboxes script outcomes by it); `n`
/// varies the rest.
pub fn phone(n: u32, digit: u8) -> ContactAddress {
    let s = format!("+86138{:04}{:03}{}", n % 10_000, (n / 10_000) % 1_000, digit);
    ContactAddress::Phone(PhoneNumber::parse(&s).unwrap())
}

/// Collects receipts of references starting with `prefix` until `want` final ones have
/// arrived or the time runs out.
pub async fn collect(
    stream: &mut ReceiptStream,
    prefix: &str,
    want: usize,
    within: Duration,
) -> HashMap<MessageRef, Vec<Receipt>> {
    let mut out: HashMap<MessageRef, Vec<Receipt>> = HashMap::new();
    let mut finals = 0;
    let deadline = tokio::time::Instant::now() + within;
    while finals < want {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(r)) => {
                if let Some(reference) = r.reference.clone().filter(|m| m.0.starts_with(prefix)) {
                    finals += usize::from(r.is_final);
                    out.entry(reference).or_default().push(r);
                }
            }
            _ => break,
        }
    }
    out
}

pub use reachline_channels::peers::{interop_python, tools_dir};

/// The Python SMSC as a child process, killed on drop.
pub struct PySmsc {
    pub child: std::process::Child,

    pub log: PathBuf,
}

impl PySmsc {
    pub fn start(port: u16, log: &std::path::Path, extra: &[&str]) -> Self {
        let child = std::process::Command::new(interop_python())
            .arg(tools_dir().join("smsc.py"))
            .args(["--port", &port.to_string(), "--log"])
            .arg(log)
            .args(extra)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("start tools/smsc.py");
        // Wait until it listens.
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        PySmsc {
            child,
            log: log.to_path_buf(),
        }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Accepted parts, as `(dest, text, id)`.
    pub fn accepted(&self) -> Vec<(String, String, String)> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .map(|v| {
                (
                    v["dest"].as_str().unwrap_or("").into(),
                    v["text"].as_str().unwrap_or("").into(),
                    v["id"].as_str().unwrap_or("").into(),
                )
            })
            .collect()
    }
}

impl Drop for PySmsc {
    fn drop(&mut self) {
        self.kill();
    }
}
