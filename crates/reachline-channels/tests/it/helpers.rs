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

/// Checks the outcome of sending messages `tag0..tag{n-1}` across a dropped SMSC connection:
/// each send either was taken or came back in doubt (no other error); the SMSC got no tag twice
/// (nothing resubmitted); every taken one reached it; at most `max_in_doubt` are in doubt.
/// Returns how many were in doubt, and how many of those the SMSC had taken after all.
pub fn exactly_once_or_in_doubt(
    results: &[(u32, Result<reachline_channels::Accepted, reachline_channels::SendError>)],
    accepted_tags: &[String],
    n: u32,
    max_in_doubt: usize,
) -> (usize, usize) {
    assert_eq!(results.len(), n as usize);
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for t in accepted_tags {
        *seen.entry(t.as_str()).or_default() += 1;
    }
    let twice: Vec<&&str> = seen.iter().filter(|(_, c)| **c > 1).map(|(t, _)| t).collect();
    assert!(twice.is_empty(), "sent twice: {twice:?}");
    let (mut in_doubt, mut taken_anyway) = (0, 0);
    for (i, r) in results {
        let tag = format!("tag{i}");
        match r {
            Ok(_) => assert!(
                seen.contains_key(tag.as_str()),
                "{tag} was taken but never reached the SMSC"
            ),
            Err(e) => {
                assert!(e.is_in_doubt(), "{tag}: {e:?}");
                in_doubt += 1;
                taken_anyway += usize::from(seen.contains_key(tag.as_str()));
            }
        }
    }
    assert!(
        in_doubt <= max_in_doubt,
        "{in_doubt} in doubt, at most {max_in_doubt} were in flight"
    );
    (in_doubt, taken_anyway)
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
