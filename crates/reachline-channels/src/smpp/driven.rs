//! Drives `rusmppc`'s connection future so that no request waits on it.
//!
//! `rusmppc` 0.4's connection task reads at most five client actions (a `submit_sm`, a
//! `deliver_sm_resp`, …) each time it is woken and, when more are queued, returns without
//! waking itself; the channel they wait in wakes it only when it was found empty. The rest wait
//! until something else wakes it: a PDU from the SMSC, or the `enquire_link` timer (30 s by
//! default). A burst whose last actions draw no answer (`deliver_sm_resp`s, say) then stalls the
//! session for up to that long, every send on it with it — seen as 10–26 s freezes of a node
//! under load. The library has no setting for this, so the connection future is spawned here
//! (`no_spawn`) inside [`Driven`], which polls it a few times per wake-up and, while any request
//! of this process is still waiting on it ([`Session::call`]), again every millisecond.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::task::AtomicWaker;

/// Polls of the connection per wake-up: each takes up to five queued actions.
const POLLS_PER_WAKE: usize = 4;
/// How soon the connection is polled again while a request waits on it.
const NUDGE: Duration = Duration::from_millis(1);

/// What a session's callers and its driver share: how many requests wait, and the driver's
/// waker.
#[derive(Default)]
struct Shared {
    waiting: AtomicUsize,
    driver: AtomicWaker,
}

/// A bound session: the `rusmppc` client and its driver's state.
#[derive(Clone)]
pub(crate) struct Session {
    pub(crate) client: rusmppc::Client,
    shared: Arc<Shared>,
}

impl Session {
    /// Runs one request on this session (`f` is the client call), counted as waiting until it
    /// ends, so that the driver keeps polling the connection meanwhile.
    pub(crate) async fn call<T>(&self, f: impl Future<Output = T>) -> T {
        struct Waiting<'a>(&'a Shared);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.waiting.fetch_sub(1, Ordering::AcqRel);
            }
        }
        self.shared.waiting.fetch_add(1, Ordering::AcqRel);
        let _waiting = Waiting(&self.shared);
        // The driver may be asleep with actions queued that nothing will announce.
        self.shared.driver.wake();
        f.await
    }

    /// Whether the connection is still running (unlike `rusmppc`'s `is_active`, this sends
    /// it nothing).
    pub(crate) fn is_open(&self) -> bool {
        !self.client.is_closed()
    }
}

/// Starts a connection on `stream` (a TCP or TLS stream), built by `builder`, under a
/// [`Driven`] task: the session and the SMSC's events.
pub(crate) fn start<S>(
    builder: rusmppc::ConnectionBuilder,
    stream: S,
) -> (Session, futures::stream::BoxStream<'static, rusmppc::Event>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    use futures::StreamExt;
    let (client, events, connection) = builder.no_spawn().connected(stream);
    let (session, driven) = Driven::new(client, connection);
    tokio::spawn(driven);
    (session, events.boxed())
}

/// The connection future, polled as the module's documentation says.
pub(crate) struct Driven<F> {
    connection: Pin<Box<F>>,
    shared: Arc<Shared>,
    nudge: Pin<Box<tokio::time::Sleep>>,
}

impl<F: Future<Output = ()>> Driven<F> {
    /// The session for `client` and the future to spawn for its `connection`.
    pub(crate) fn new(client: rusmppc::Client, connection: F) -> (Session, Driven<F>) {
        let shared = Arc::new(Shared::default());
        let driven = Driven {
            connection: Box::pin(connection),
            shared: shared.clone(),
            nudge: Box::pin(tokio::time::sleep(NUDGE)),
        };
        (Session { client, shared }, driven)
    }
}

impl<F: Future<Output = ()>> Future for Driven<F> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.shared.driver.register(cx.waker());
        for _ in 0..POLLS_PER_WAKE {
            if self.connection.as_mut().poll(cx).is_ready() {
                return Poll::Ready(());
            }
        }
        if self.shared.waiting.load(Ordering::Acquire) > 0 {
            // Re-armed until it is pending, so that it will wake this task.
            while self.nudge.as_mut().poll(cx).is_ready() {
                let next = tokio::time::Instant::now() + NUDGE;
                self.nudge.as_mut().reset(next);
            }
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use rusmpp::pdus::DeliverSmResp;

    use crate::smpp::client::bind;
    use crate::smpp::sandbox::Sandbox;
    use crate::smpp::SmppConfig;

    /// Two hundred requests that draw no answer from the SMSC (as `deliver_sm_resp`s do), all
    /// at once on an idle session: each goes out at once. Left to itself, `rusmppc` sends five
    /// and leaves the rest for the `enquire_link` timer, a minute away here.
    #[tokio::test]
    async fn a_burst_of_requests_without_answers_goes_out_at_once() {
        let sandbox = Sandbox::start("127.0.0.1:0").await.unwrap();
        let config = SmppConfig {
            port: sandbox.addr().port(),
            enquire_link_ms: 60_000,
            ..SmppConfig::default()
        };
        let (session, _events) = bind(&config).await.unwrap();
        for round in 0..3u32 {
            let burst = futures::future::join_all((0..200u32).map(|i| {
                let seq = 2 * (round * 200 + i) + 1;
                session.call(session.client.deliver_sm_resp(seq, DeliverSmResp::default()))
            }));
            let sent = tokio::time::timeout(std::time::Duration::from_secs(5), burst)
                .await
                .unwrap_or_else(|_| panic!("round {round}: 200 requests still waiting after 5 s"));
            assert!(sent.iter().all(Result::is_ok), "round {round}: {sent:?}");
        }
        assert!(session.is_open());
    }
}
