//! PostgreSQL going away under a running server and coming back (issue 15, item 12). The node
//! reaches PostgreSQL through a TCP proxy the test controls; "restarting" PostgreSQL is cutting
//! every connection and refusing new ones for a while, which is what a node sees when the
//! database restarts (the shared test server itself is not restarted: other tests use it).
//!
//! While it is cut off the node says so: `/readyz` answers 503 (the subscription's reads retry
//! with backoff from the same position; failures past those retries count in
//! `switchyard_log_follower_failures_total`). Meanwhile another node, still connected, revokes a key. Once the database is back
//! the node takes its subscription up again from where it was, is ready again, and refuses the
//! revoked key: nothing written meanwhile by another writer is lost to it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::cluster::{Recipe, database_url, until_key};
use crate::server::{Server, TOKEN, tenant_with_key};

/// A TCP proxy to `upstream`: `cut()` drops every connection and refuses new ones until
/// `restore()`.
struct Proxy {
    port: u16,
    up: Arc<AtomicBool>,
    generation: watch::Sender<u64>,
}

impl Proxy {
    async fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let (generation, _) = watch::channel(0u64);
        let (accept_up, accept_generation) = (up.clone(), generation.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                if !accept_up.load(Ordering::SeqCst) {
                    drop(client); // refused: the database is down
                    continue;
                }
                let upstream = upstream.clone();
                let mut cut = accept_generation.subscribe();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.changed() => {} // dropping both ends resets the connection
                    }
                });
            }
        });
        Proxy {
            port,
            up,
            generation,
        }
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

async fn ready(node: &Server) -> u16 {
    reqwest::get(node.url("/readyz"))
        .await
        .map_or(0, |r| r.status().as_u16())
}

async fn until_ready(node: &Server, status: u16, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let got = ready(node).await;
        if got == status {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{}: /readyz answered {got}, not {status}, within {within:?}",
            node.base
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_cut_off_from_postgres_is_unready_then_catches_up_with_what_others_wrote() {
    let url = database_url();
    let address = url
        .rsplit_once('@')
        .and_then(|(_, rest)| rest.split_once('/'))
        .map(|(host, _)| host.to_owned())
        .expect("host:port in the database URL");
    let proxy = Proxy::start(address.clone()).await;
    let proxied = url.replacen(&address, &format!("127.0.0.1:{}", proxy.port), 1);

    let recipe = Recipe::new();
    let direct = recipe.start();
    let node = recipe.start_via(&proxied);
    let (tenant, key, key_id) = tenant_with_key(&direct).await;
    until_key(&node, &key, 200).await;
    until_ready(&node, 200, Duration::from_secs(5)).await;

    proxy.cut();
    until_ready(&node, 503, Duration::from_secs(20)).await;
    // Another writer changes something this node must enforce.
    let revoked = reqwest::Client::new()
        .delete(direct.url(&format!("/v1/admin/tenants/{tenant}/keys/{key_id}")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert!(revoked.status().is_success(), "{}", revoked.status());
    // Still unready: the node cannot see that write yet, so it must not be in rotation.
    assert_eq!(ready(&node).await, 503);

    proxy.restore();
    until_ready(&node, 200, Duration::from_secs(30)).await;
    until_key(&node, &key, 401).await;
    // The subscription carried on from its place: the node follows the log to its head.
    let head = crate::server::log_head(&direct).await;
    crate::server::followed_to(&node, head).await;
}
