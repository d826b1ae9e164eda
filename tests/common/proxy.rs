//! A TCP proxy in front of ClickHouse that a test can cut and restore, to stage an outage
//! without disturbing the shared server that other tests are using. It can also lose the
//! answer to one request: the server has done the work, the client sees the connection drop.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct Proxy {
    pub addr: String,
    up: Arc<AtomicBool>,
    cut: Arc<watch::Sender<u64>>,
    lose: Arc<Loss>,
}

/// The request whose answer is to be lost: its text (URL-decoded) contains `marker`.
#[derive(Default)]
struct Loss {
    marker: Mutex<Option<String>>,
    lost: AtomicU32,
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
        let lose = Arc::new(Loss::default());
        let accept_up = up.clone();
        let accept_cut = cut.clone();
        let accept_lose = lose.clone();
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
                let armed = accept_lose.marker.lock().unwrap().is_some();
                let lose = accept_lose.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(&target).await else {
                        return;
                    };
                    let forward = async {
                        if armed {
                            forward_losing(&mut client, &mut server, &lose).await;
                        } else {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        }
                    };
                    tokio::select! {
                        _ = forward => {}
                        _ = cut_rx.changed() => {}
                    }
                });
            }
        });
        Proxy {
            addr,
            up,
            cut,
            lose,
        }
    }

    /// Loses the answer to the next request that mentions `marker` (URL-decoded), on
    /// connections opened from now on: the request reaches the server, and once the server
    /// answers, the connection is dropped instead.
    pub fn lose_answer_to(&self, marker: &str) {
        *self.lose.marker.lock().unwrap() = Some(marker.to_owned());
    }

    /// How many answers were lost.
    pub fn answers_lost(&self) -> u32 {
        self.lose.lost.load(Ordering::SeqCst)
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

/// Forwards both ways until either side closes; drops the connection at the first answer to a
/// request that mentioned the armed marker (and disarms it).
async fn forward_losing(client: &mut TcpStream, server: &mut TcpStream, lose: &Loss) {
    let (mut up, mut down) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    let mut marked = false;
    loop {
        tokio::select! {
            read = client.read(&mut up) => {
                let Ok(n @ 1..) = read else { return };
                if let Some(marker) = lose.marker.lock().unwrap().as_deref() {
                    marked |= url_decoded(&up[..n]).contains(marker);
                }
                if server.write_all(&up[..n]).await.is_err() {
                    return;
                }
            }
            read = server.read(&mut down) => {
                let Ok(n @ 1..) = read else { return };
                if marked && lose.marker.lock().unwrap().take().is_some() {
                    lose.lost.fetch_add(1, Ordering::SeqCst);
                    return;
                }
                if client.write_all(&down[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// `bytes` as text with `+` and `%XX` decoded (a query in a URL).
fn url_decoded(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(&String::from_utf8_lossy(&bytes[i + 1..i + 3]), 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
