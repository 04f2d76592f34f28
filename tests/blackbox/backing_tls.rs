//! TLS to the backing services (issue 17, item 3), each against the real server with a CA made
//! in the test: Redis on its TLS port with client certificates required, NATS with TLS, client
//! certificates and a password, and a PostgreSQL cluster of the test's own that accepts only
//! `hostssl` connections. A node reaches each only through a verified TLS session, and refuses
//! to start when the server's certificate is not from the CA it was given.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

use crate::server::{Server, TOKEN, data_dir, tenant_with_key};

/// A CA, a server certificate for 127.0.0.1 and localhost, and a client certificate, as PEM
/// files in `dir`; and a second CA that signed none of them.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn new(dir: &Path) -> Pki {
        use rcgen::{
            BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
            IsCa, KeyPair, KeyUsagePurpose,
        };
        let ca = |name: &str| {
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.distinguished_name.push(DnType::CommonName, name);
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
        };
        let authority = ca("Switchyard test CA");
        let stranger = ca("Someone else's CA");
        let leaf = |names: Vec<String>, purpose: ExtendedKeyUsagePurpose, stem: &str| {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(names).unwrap();
            params.distinguished_name.push(DnType::CommonName, stem);
            params.extended_key_usages = vec![purpose];
            let cert = params.signed_by(&key, &authority).unwrap();
            std::fs::write(dir.join(format!("{stem}.pem")), cert.pem()).unwrap();
            std::fs::write(dir.join(format!("{stem}.key")), key.serialize_pem()).unwrap();
        };
        leaf(
            vec!["127.0.0.1".into(), "localhost".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
            "server",
        );
        leaf(
            vec!["switchyard".into()],
            ExtendedKeyUsagePurpose::ClientAuth,
            "client",
        );
        std::fs::write(dir.join("ca.pem"), authority.pem()).unwrap();
        std::fs::write(dir.join("other-ca.pem"), stranger.pem()).unwrap();
        Pki {
            dir: dir.to_owned(),
        }
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A child process killed on drop.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `switchyard serve` that must fail to start: its log (stderr) once it has exited.
fn refused_start(dir: &Path, env: &[(&str, &str)]) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_switchyard"));
    command
        .arg("serve")
        .env("SWITCHYARD_LISTEN", "127.0.0.1:0")
        .env("SWITCHYARD_DATA_DIR", dir)
        .env("SWITCHYARD_ADMIN_TOKEN", TOKEN)
        .env_remove("SWITCHYARD_DATABASE_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(!status.success(), "switchyard started: {env:?}");
            let mut log = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut log).unwrap();
            return log;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("switchyard neither started nor failed within 60 s: {env:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test]
async fn redis_and_nats_are_reached_over_verified_tls_with_client_certificates() {
    let dir = data_dir();
    let pki = Pki::new(&dir);

    // Redis: TLS only (no plain port), client certificates required.
    let redis_port = free_port();
    let _redis = Daemon(
        Command::new("redis-server")
            .args([
                "--port",
                "0",
                "--tls-port",
                &redis_port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .args([
                "--tls-cert-file",
                &pki.path("server.pem"),
                "--tls-key-file",
                &pki.path("server.key"),
            ])
            .args([
                "--tls-ca-cert-file",
                &pki.path("ca.pem"),
                "--tls-auth-clients",
                "yes",
            ])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (scripts/services.sh installs it)"),
    );
    // NATS with JetStream: TLS with verified client certificates, and a password.
    let nats_port = free_port();
    let config = dir.join("nats.conf");
    std::fs::write(
        &config,
        format!(
            "listen: \"127.0.0.1:{nats_port}\"\njetstream {{ store_dir: \"{}\" }}\n\
             tls {{ cert_file: \"{}\", key_file: \"{}\", ca_file: \"{}\", verify: true, timeout: 2 }}\n\
             authorization {{ user: relay, password: \"s3cret-pw\" }}\n",
            dir.join("js").display(),
            pki.path("server.pem"),
            pki.path("server.key"),
            pki.path("ca.pem"),
        ),
    )
    .unwrap();
    let nats_binary =
        std::env::var("SWITCHYARD_TEST_NATS_SERVER").unwrap_or_else(|_| "nats-server".into());
    let _nats = Daemon(
        Command::new(&nats_binary)
            .arg("-c")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server (SWITCHYARD_TEST_NATS_SERVER)"),
    );
    wait_for_port(redis_port, "redis-server");
    wait_for_port(nats_port, "nats-server");

    let redis_url = format!("rediss://127.0.0.1:{redis_port}");
    let nats_url = format!("tls://relay:s3cret-pw@127.0.0.1:{nats_port}");
    let (ca, cert, key) = (
        pki.path("ca.pem"),
        pki.path("client.pem"),
        pki.path("client.key"),
    );
    let env = [
        ("SWITCHYARD_ADMIN_TOKEN", TOKEN),
        ("SWITCHYARD_REDIS_URL", redis_url.as_str()),
        ("SWITCHYARD_REDIS_CA_FILE", ca.as_str()),
        ("SWITCHYARD_REDIS_CLIENT_CERT", cert.as_str()),
        ("SWITCHYARD_REDIS_CLIENT_KEY", key.as_str()),
        ("SWITCHYARD_NATS_URL", nats_url.as_str()),
        ("SWITCHYARD_NATS_CA_FILE", ca.as_str()),
        ("SWITCHYARD_NATS_CLIENT_CERT", cert.as_str()),
        ("SWITCHYARD_NATS_CLIENT_KEY", key.as_str()),
    ];
    let server = Server::start_with(&dir.join("node"), &env);
    let (tenant, api_key, _) = tenant_with_key(&server).await;
    // One request a minute: the second is refused by the limiter in Redis (were Redis not
    // reached, the limiter would fail open and let it through).
    let client = reqwest::Client::new();
    let limited = client
        .put(server.url(&format!("/v1/admin/tenants/{tenant}/limits")))
        .bearer_auth(TOKEN)
        .json(&json!({"requests_per_minute": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(limited.status(), 200);
    let mut statuses = Vec::new();
    for _ in 0..2 {
        let answer = client
            .post(server.url("/v1/chat/completions"))
            .bearer_auth(&api_key)
            .json(&json!({"model": "sim-small", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        statuses.push(answer.status());
    }
    assert_eq!(statuses, [StatusCode::OK, StatusCode::TOO_MANY_REQUESTS]);
    let metrics = client
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !metrics.lines().any(
            |l| l.starts_with("switchyard_shared_state_unavailable_total") && !l.ends_with(" 0")
        ),
        "Redis was unavailable: {metrics}"
    );

    // The relay published the tenant's events to JetStream over TLS.
    let nats = async_nats::ConnectOptions::new()
        .add_root_certificates(ca.clone().into())
        .add_client_certificate(cert.clone().into(), key.clone().into())
        .user_and_password("relay".into(), "s3cret-pw".into())
        .connect(format!("tls://127.0.0.1:{nats_port}"))
        .await
        .unwrap();
    let js = async_nats::jetstream::new(nats);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(mut stream) = js.get_stream("SWITCHYARD_EVENTS").await
            && stream.info().await.unwrap().state.messages >= 3
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no events reached JetStream over TLS"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(server);

    // Given another CA, the node does not trust the servers: Redis refuses it at start.
    let other = pki.path("other-ca.pem");
    let mut wrong = env;
    wrong[2] = ("SWITCHYARD_REDIS_CA_FILE", other.as_str());
    let log = refused_start(&dir.join("wrong-ca"), &wrong);
    assert!(log.to_lowercase().contains("redis"), "{log}");
    // Without a client certificate, Redis refuses the handshake.
    let log = refused_start(&dir.join("no-client-cert"), &env[..3]);
    assert!(log.to_lowercase().contains("redis"), "{log}");
    // TLS files with a plain URL are a mistake, said at start.
    let plain = [
        ("SWITCHYARD_REDIS_URL", "redis://127.0.0.1:6379"),
        ("SWITCHYARD_REDIS_CA_FILE", ca.as_str()),
    ];
    let log = refused_start(&dir.join("plain"), &plain);
    assert!(log.contains("not rediss://"), "{log}");
}

/// Runs a PostgreSQL server program (`initdb`, `pg_ctl`) as [`as_postgres`] does.
fn pg(program: &str) -> Command {
    as_postgres(glob_pg_bin(program))
}

/// A command run as the `postgres` user when we are root (PostgreSQL refuses to run as root),
/// else as ourselves.
fn as_postgres(program: impl AsRef<std::ffi::OsStr>) -> Command {
    if nix_is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

fn nix_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// `/usr/lib/postgresql/<version>/bin/<program>` (Debian's layout), the newest version.
fn glob_pg_bin(program: &str) -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL's server binaries (scripts/services.sh installs them)")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin").join(program)))
        .filter(|p| p.exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .unwrap_or_else(|| panic!("no {program} under /usr/lib/postgresql"))
}

/// A PostgreSQL cluster of this test's own that accepts only TLS connections.
struct TlsPostgres {
    root: PathBuf,
    data: PathBuf,
    port: u16,
}

impl TlsPostgres {
    fn start(pki: &Pki) -> TlsPostgres {
        let root = PathBuf::from(format!(
            "/tmp/switchyard-pg-tls-{}",
            uuid::Uuid::now_v7().simple()
        ));
        std::fs::create_dir_all(&root).unwrap();
        if nix_is_root() {
            assert!(
                Command::new("chown")
                    .arg("postgres")
                    .arg(&root)
                    .status()
                    .unwrap()
                    .success()
            );
        }
        let data = root.join("data");
        let init = pg("initdb")
            .args(["-D"])
            .arg(&data)
            .args(["-A", "trust", "-U", "postgres", "--no-sync"])
            .stdout(Stdio::null())
            .output()
            .unwrap();
        assert!(
            init.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&init.stderr)
        );
        // The server's key must belong to the server's user with mode 0600.
        for file in ["server.pem", "server.key", "ca.pem"] {
            let copy = as_postgres("cp")
                .arg(pki.path(file))
                .arg(data.join(file))
                .status();
            assert!(
                copy.unwrap().success(),
                "copy {file} into the data directory"
            );
        }
        assert!(
            as_postgres("chmod")
                .arg("600")
                .arg(data.join("server.key"))
                .status()
                .unwrap()
                .success()
        );
        let port = free_port();
        let conf = format!(
            "\nport = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             ssl = on\nssl_cert_file = 'server.pem'\nssl_key_file = 'server.key'\nfsync = off\n",
            root.display()
        );
        let hba = "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 reject\n";
        let append = |file: &str, text: &str| {
            let mut write = as_postgres("sh")
                .args(["-c", &format!("cat >> '{}'", data.join(file).display())])
                .stdin(Stdio::piped())
                .spawn()
                .unwrap();
            std::io::Write::write_all(write.stdin.as_mut().unwrap(), text.as_bytes()).unwrap();
            drop(write.stdin.take());
            assert!(write.wait().unwrap().success());
        };
        append("postgresql.conf", &conf);
        let truncate = as_postgres("sh")
            .args([
                "-c",
                &format!(": > '{}'", data.join("pg_hba.conf").display()),
            ])
            .status()
            .unwrap();
        assert!(truncate.success());
        append("pg_hba.conf", hba);
        let started = pg("pg_ctl")
            .args(["start", "-w", "-t", "30", "-D"])
            .arg(&data)
            .args(["-l"])
            .arg(root.join("log"))
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(
            started.success(),
            "pg_ctl start: {}",
            std::fs::read_to_string(root.join("log")).unwrap_or_default()
        );
        TlsPostgres { root, data, port }
    }

    fn url(&self, query: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres?{query}",
            self.port
        )
    }
}

impl Drop for TlsPostgres {
    fn drop(&mut self) {
        let _ = pg("pg_ctl")
            .args(["stop", "-m", "immediate", "-D"])
            .arg(&self.data)
            .stdout(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

#[tokio::test]
async fn postgres_is_reached_with_sslmode_verify_full_against_a_private_ca() {
    let dir = data_dir();
    // The certificates go where the postgres user can read them (not under the target dir,
    // which may sit in a home directory closed to other users).
    let pki_dir = PathBuf::from(format!(
        "/tmp/switchyard-pg-tls-pki-{}",
        uuid::Uuid::now_v7().simple()
    ));
    std::fs::create_dir_all(&pki_dir).unwrap();
    let pki = Pki::new(&pki_dir);
    for file in ["server.pem", "server.key", "ca.pem"] {
        std::fs::set_permissions(
            pki_dir.join(file),
            std::os::unix::fs::PermissionsExt::from_mode(0o644),
        )
        .unwrap();
    }
    let postgres = TlsPostgres::start(&pki);
    let ca = pki.path("ca.pem");
    let url = postgres.url(&format!("sslmode=verify-full&sslrootcert={ca}"));
    let schema = format!("tls_{}", uuid::Uuid::now_v7().simple());
    let env = [
        ("SWITCHYARD_DATABASE_URL", url.as_str()),
        ("SWITCHYARD_DATABASE_SCHEMA", schema.as_str()),
        ("SWITCHYARD_ADMIN_TOKEN", TOKEN),
    ];
    let server = Server::start_with(&dir.join("node"), &env);
    let (_, key, _) = tenant_with_key(&server).await;
    let answer = reqwest::Client::new()
        .post(server.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&json!({"model": "sim-small", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let ready = reqwest::get(server.url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200);
    drop(server);

    // The server takes only TLS: without it the node cannot start; nor with another CA.
    let other = pki.path("other-ca.pem");
    for (query, reason) in [
        ("sslmode=disable".to_owned(), "no encryption"),
        (
            format!("sslmode=verify-full&sslrootcert={other}"),
            "certificate",
        ),
    ] {
        let url = postgres.url(&query);
        let log = refused_start(
            &dir.join(format!("refused-{}", uuid::Uuid::now_v7().simple())),
            &[
                ("SWITCHYARD_DATABASE_URL", url.as_str()),
                ("SWITCHYARD_DATABASE_SCHEMA", schema.as_str()),
            ],
        );
        assert!(log.to_lowercase().contains(reason), "{query}: {log}");
    }
    let _ = std::fs::remove_dir_all(&pki_dir);
}
