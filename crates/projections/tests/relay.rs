//! The NATS relay against a real nats-server of the test's own (so that it can be killed and
//! restarted): every event reaches JetStream once per event id, also across a restart of NATS
//! while events keep being appended.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a panic is the failure report"
)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use switchyard_events::{EventStore, GlobalPosition, Scope, SqliteStore, TenantId};
use switchyard_projections::ReadDb;
use switchyard_projections::relay::{RelayConfig, run};
use switchyard_projections::testkit::traffic;

fn test_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("switchyard-tests")
        .join(uuid::Uuid::now_v7().simple().to_string());
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The nats-server binary (2.10 or later, for `sync_interval`): `SWITCHYARD_TEST_NATS_SERVER`
/// (set by scripts/test.sh), else the one scripts/services.sh installs, else the PATH's.
fn nats_binary() -> PathBuf {
    if let Ok(path) = std::env::var("SWITCHYARD_TEST_NATS_SERVER") {
        return PathBuf::from(path);
    }
    let venv = Path::new(&std::env::var("HOME").unwrap_or_default())
        .join(".cache/switchyard-tools/venv/bin/nats-server");
    if venv.is_file() {
        return venv;
    }
    for candidate in std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .chain(["/usr/sbin"])
    {
        let path = Path::new(candidate).join("nats-server");
        if path.is_file() {
            return path;
        }
    }
    panic!(
        "nats-server is required (scripts/services.sh installs it); set SWITCHYARD_TEST_NATS_SERVER"
    )
}

struct Nats {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Nats {
    fn start(dir: &Path, port: u16) -> Nats {
        // Every acknowledged message fsynced before the ack: what deploy/ configures.
        let config = dir.join("nats.conf");
        std::fs::write(
            &config,
            format!(
                "listen: 127.0.0.1:{port}\njetstream {{\n  store_dir: \"{}\"\n  sync_interval: always\n}}\n",
                dir.join("js").display()
            ),
        )
        .unwrap();
        let child = Command::new(nats_binary())
            .arg("-c")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "nats-server did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Nats {
            child,
            port,
            dir: dir.to_owned(),
        }
    }

    fn kill(mut self) -> (PathBuf, u16) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        (self.dir.clone(), self.port)
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn wait_for_checkpoint(db: &ReadDb, name: &str, target: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let at = db.checkpoint(name).await.unwrap();
        if at >= target {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "relay stuck at {at}, want {target}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn every_event_reaches_jetstream_once_across_a_nats_restart() {
    let dir = test_dir();
    let store: Arc<dyn EventStore> =
        Arc::new(SqliteStore::open(dir.join("events.db")).await.unwrap());
    let db = ReadDb::open_sqlite(dir.join("read.db")).await.unwrap();
    let nats = Nats::start(&dir, free_port());
    let url = format!("nats://127.0.0.1:{}", nats.port);
    let mut config = RelayConfig::new(url.clone());
    config.batch = 32;
    config.ack_timeout = Duration::from_secs(2);
    let name = config.checkpoint_name();

    let tenants = [TenantId::new(), TenantId::new()];
    traffic(store.as_ref(), &tenants, 40).await.unwrap();
    let relay = tokio::spawn(run(store.clone(), db.clone(), config.clone()));
    wait_for_checkpoint(&db, &name, store.head().await.unwrap().0).await;

    // NATS dies; events keep coming; NATS comes back on the same storage.
    let (nats_dir, port) = nats.kill();
    traffic(store.as_ref(), &tenants, 40).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _nats = Nats::start(&nats_dir, port);
    traffic(store.as_ref(), &tenants, 20).await.unwrap();
    let head = store.head().await.unwrap().0;
    wait_for_checkpoint(&db, &name, head).await;
    relay.abort();

    // Read the whole stream back: every event id of the log, each once.
    let client = async_nats::connect(url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream(&config.stream).await.unwrap();
    let messages_stored = stream.info().await.unwrap().state.messages;
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config::default())
        .await
        .unwrap();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut messages = consumer
        .fetch()
        .max_messages(usize::try_from(messages_stored).unwrap())
        .expires(Duration::from_secs(5))
        .messages()
        .await
        .unwrap();
    while let Some(message) = messages.next().await {
        let message = message.unwrap();
        let id = message
            .headers
            .as_ref()
            .unwrap()
            .get("Nats-Msg-Id")
            .unwrap()
            .as_str()
            .to_owned();
        assert!(
            message.subject.starts_with("events."),
            "{}",
            message.subject
        );
        *seen.entry(id).or_default() += 1;
    }
    let log = store
        .read_all(Scope::All, GlobalPosition(0), 100_000)
        .await
        .unwrap();
    assert_eq!(log.len() as u64, head);
    let expected: Vec<String> = log.iter().map(|e| e.event_id.to_string()).collect();
    let mut got: Vec<String> = seen.keys().cloned().collect();
    got.sort();
    let mut want = expected;
    want.sort();
    assert_eq!(
        got.len(),
        want.len(),
        "published {} of {} events",
        got.len(),
        want.len()
    );
    assert_eq!(got, want);
    assert!(
        seen.values().all(|n| *n == 1),
        "an event id was stored twice"
    );
}
