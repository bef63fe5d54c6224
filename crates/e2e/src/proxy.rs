//! A TCP proxy the test controls, to cut one process off from the apiserver: while
//! cut, bytes stop flowing both ways on every connection and new connections are
//! accepted and left hanging — a partition, not a refusal (nothing is reset, so the
//! client learns of it only from its own timeouts, as on a real network). Healing
//! drops what was held: clients reconnect.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub struct Proxy {
    pub addr: SocketAddr,
    cut: watch::Sender<bool>,
    /// Connections held while cut (dropped on heal).
    held: Arc<Mutex<Vec<TcpStream>>>,
    task: JoinHandle<()>,
}

impl Proxy {
    /// Listens on 127.0.0.1 (a free port) and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (cut, cut_rx) = watch::channel(false);
        let held: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let held_by_task = held.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if *cut_rx.borrow() {
                    held_by_task.lock().expect("held").push(client);
                    continue;
                }
                let mut cut_rx = cut_rx.clone();
                let held = held_by_task.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (mut client, mut server) = (client, server);
                    let cut_now = tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => false,
                        _ = cut_rx.wait_for(|cut| *cut) => true,
                    };
                    if cut_now {
                        // Stop forwarding but keep both ends open: a silent partition.
                        let mut held = held.lock().expect("held");
                        held.push(client);
                        held.push(server);
                    }
                });
            }
        });
        Ok(Self {
            addr,
            cut,
            held,
            task,
        })
    }

    /// Cuts every connection, present and future.
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    /// Forwards again; the connections held while cut are dropped.
    pub fn heal(&self) {
        self.cut.send_replace(false);
        self.held.lock().expect("held").clear();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
