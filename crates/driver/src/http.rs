//! `/metrics`, `/healthz` and `/readyz` over a deliberately tiny HTTP/1.1 responder:
//! one GET per connection, `Connection: close`, no keep-alive, no request body. That
//! is all Prometheus and the kubelet's probes need, and it keeps a web framework out
//! of the build.
//!
//! Health: `/healthz` answers 200 while the loop makes progress (a pass, or a
//! follower's idle tick, within 3 × the scan interval, or 3 × the error backoff while
//! the cloud is unavailable; the process start counts as progress), 500 otherwise. `/readyz` answers 200 once leadership is known and, on
//! the leader, the caches have synced; a follower that knows it is a follower is
//! ready (it plans nothing, so its caches do not matter yet). Not ready is 503.

use crate::clock::Clock;
use crate::metrics::Metrics;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Largest request head read.
const MAX_REQUEST: usize = 8 * 1024;
/// How long a client may take to send its request head.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// What the probes report, updated by the loop.
pub struct Health {
    clock: Arc<dyn Clock>,
    scan_interval: Duration,
    last_progress_ms: AtomicU64,
    /// How long until the loop expects its next pass, when longer than the scan
    /// interval (the error backoff while the cloud is unavailable).
    expected_gap_ms: AtomicU64,
    synced: AtomicBool,
    leader_known: AtomicBool,
    leader: AtomicBool,
}

impl Health {
    /// Health starting now: the start counts as progress.
    pub fn new(clock: Arc<dyn Clock>, scan_interval: Duration) -> Self {
        let now = clock.now();
        Self {
            clock,
            scan_interval,
            last_progress_ms: AtomicU64::new(now.0),
            expected_gap_ms: AtomicU64::new(0),
            synced: AtomicBool::new(false),
            leader_known: AtomicBool::new(false),
            leader: AtomicBool::new(false),
        }
    }

    /// The loop made progress (a pass completed, or a follower ticked).
    pub fn progress(&self) {
        self.progress_expecting(Duration::ZERO);
    }

    /// The loop made progress and will wait `next_in` before the next pass (an error
    /// backoff longer than the scan interval must not look like a stuck loop).
    pub fn progress_expecting(&self, next_in: Duration) {
        self.expected_gap_ms
            .store(next_in.as_millis() as u64, Ordering::SeqCst);
        self.last_progress_ms
            .store(self.clock.now().0, Ordering::SeqCst);
    }

    /// Whether the last view had every watch synced.
    pub fn set_synced(&self, synced: bool) {
        self.synced.store(synced, Ordering::SeqCst);
    }

    /// The leader election's verdict is in: this replica leads or follows.
    pub fn set_leader(&self, leader: bool) {
        self.leader.store(leader, Ordering::SeqCst);
        self.leader_known.store(true, Ordering::SeqCst);
    }

    /// `/healthz`.
    pub fn live(&self) -> bool {
        let last = model::Time(self.last_progress_ms.load(Ordering::SeqCst));
        let gap = Duration::from_millis(self.expected_gap_ms.load(Ordering::SeqCst))
            .max(self.scan_interval);
        self.clock.now().saturating_since(last) <= gap * 3
    }

    /// `/readyz`.
    pub fn ready(&self) -> bool {
        self.leader_known.load(Ordering::SeqCst)
            && (!self.leader.load(Ordering::SeqCst) || self.synced.load(Ordering::SeqCst))
    }
}

/// What the HTTP endpoints read.
#[derive(Clone)]
pub struct HttpState {
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
}

/// Binds `addr` and serves until the task is dropped or accepting fails.
pub async fn serve_http(addr: SocketAddr, state: HttpState) -> io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
    serve_listener(listener, state).await
}

/// Serves on an already bound listener (tests bind port 0 and read the address).
pub async fn serve_listener(listener: TcpListener, state: HttpState) -> io::Result<()> {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            // Per-connection failures (the peer reset before accept, fd exhaustion for
            // a moment) must not stop the server.
            Err(error) => {
                tracing::warn!(%error, "http: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let state = state.clone();
        tokio::spawn(async move {
            if let Err(error) = handle(stream, &state).await {
                tracing::debug!(%peer, %error, "http: connection failed");
            }
        });
    }
}

async fn handle(mut stream: TcpStream, state: &HttpState) -> io::Result<()> {
    let head = match tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream)).await {
        Ok(head) => head?,
        Err(_) => return Ok(()),
    };
    let (status, content_type, body) = respond(&head, state);
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    if !head.starts_with("HEAD ") {
        stream.write_all(body.as_bytes()).await?;
    }
    stream.shutdown().await
}

/// Reads up to the end of the request head (or the size limit).
async fn read_head(stream: &mut TcpStream) -> io::Result<String> {
    let mut buffer = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !buffer.windows(4).any(|w| w == b"\r\n\r\n") && buffer.len() < MAX_REQUEST {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
    Ok(String::from_utf8_lossy(&buffer).into_owned())
}

const TEXT: &str = "text/plain; charset=utf-8";
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

fn respond(head: &str, state: &HttpState) -> (&'static str, &'static str, String) {
    let mut words = head.lines().next().unwrap_or("").split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    if method != "GET" && method != "HEAD" {
        return ("405 Method Not Allowed", TEXT, "only GET and HEAD\n".into());
    }
    let path = target.split('?').next().unwrap_or("");
    match path {
        "/metrics" => ("200 OK", OPENMETRICS, state.metrics.encode()),
        "/healthz" if state.health.live() => ("200 OK", TEXT, "ok\n".into()),
        "/healthz" => (
            "500 Internal Server Error",
            TEXT,
            "no loop progress within 3 scan intervals\n".into(),
        ),
        "/readyz" if state.health.ready() => ("200 OK", TEXT, "ok\n".into()),
        "/readyz" => (
            "503 Service Unavailable",
            TEXT,
            "caches not synced or leadership unknown\n".into(),
        ),
        _ => ("404 Not Found", TEXT, "not found\n".into()),
    }
}
