//! A TCP proxy in front of ClickHouse that a test can cut and restore, to stage an outage
//! without disturbing the shared server that other tests are using.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct Proxy {
    pub addr: String,
    up: Arc<AtomicBool>,
    cut: Arc<watch::Sender<u64>>,
}

impl Proxy {
    pub async fn start(target: String) -> Proxy {
        Proxy::start_on("127.0.0.1:0", target).await
    }

    /// A proxy listening on `bind` (e.g. "0.0.0.0:0" for other network namespaces).
    pub async fn start_on(bind: &str, target: String) -> Proxy {
        let listener = TcpListener::bind(bind).await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let up = Arc::new(AtomicBool::new(true));
        let cut = Arc::new(watch::channel(0u64).0);
        let accept_up = up.clone();
        let accept_cut = cut.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                if !accept_up.load(Ordering::SeqCst) {
                    drop(client); // refused: closed right away
                    continue;
                }
                let target = target.clone();
                // Subscribed now, so only cuts after this connection opened close it.
                let mut cut_rx = accept_cut.subscribe();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut_rx.changed() => {}
                    }
                });
            }
        });
        Proxy { addr, up, cut }
    }

    /// Drops every open connection and refuses new ones.
    pub fn go_down(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.cut.send_modify(|n| *n += 1);
    }

    pub fn come_back(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}
