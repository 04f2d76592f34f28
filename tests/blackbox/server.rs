//! Starts the real binary and stops it when dropped.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub struct Server {
    child: Child,
    pub base: String,
}

impl Server {
    /// `switchyard serve` on a free port with its data in `data_dir` (embedded mode).
    pub fn start(data_dir: &Path) -> Server {
        Self::start_with(data_dir, &[])
    }

    /// Without `SWITCHYARD_ADMIN_TOKEN` in the environment (unless `env` sets it).
    fn command(data_dir: &Path) -> Command {
        Self::wrapped_command(data_dir, &[])
    }

    /// `switchyard serve` run by `wrapper` (a program and its arguments, e.g. `strace -f`), which
    /// must pass its standard output through.
    fn wrapped_command(data_dir: &Path, wrapper: &[&str]) -> Command {
        let binary = env!("CARGO_BIN_EXE_switchyard");
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(binary);
                command
            }
            None => Command::new(binary),
        };
        command
            .arg("serve")
            .env("SWITCHYARD_LISTEN", "127.0.0.1:0")
            .env("SWITCHYARD_DATA_DIR", data_dir)
            .env_remove("SWITCHYARD_DATABASE_URL")
            .env_remove("SWITCHYARD_ADMIN_TOKEN")
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        command
    }

    pub fn start_with(data_dir: &Path, env: &[(&str, &str)]) -> Server {
        Self::start_args(data_dir, env, &[])
    }

    /// With the server's log (stderr) going to `stderr`.
    pub fn start_logged(data_dir: &Path, env: &[(&str, &str)], stderr: Stdio) -> Server {
        tls();
        let mut command = Self::command(data_dir);
        command.stderr(stderr);
        for (key, value) in env {
            command.env(key, value);
        }
        Self::spawn(command)
    }

    /// Run by `wrapper` (see [`Server::wrapped_command`]); the child is the wrapper.
    pub fn start_wrapped(data_dir: &Path, env: &[(&str, &str)], wrapper: &[&str]) -> Server {
        tls();
        let mut command = Self::wrapped_command(data_dir, wrapper);
        for (key, value) in env {
            command.env(key, value);
        }
        Self::spawn(command)
    }

    /// The process id of the child (the server, or its wrapper).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the child to end by itself.
    pub fn wait(&mut self) -> std::process::ExitStatus {
        self.child.wait().expect("wait for the server")
    }

    /// With extra `serve` arguments.
    pub fn start_args(data_dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Server {
        tls();
        let mut command = Self::command(data_dir);
        command.args(args);
        for (key, value) in env {
            command.env(key, value);
        }
        Self::spawn(command)
    }

    fn spawn(mut command: Command) -> Server {
        let mut child = command.spawn().expect("start switchyard");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the listening line");
        let base = line
            .trim()
            .strip_prefix("switchyard listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
            .to_owned();
        Server { child, base }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `kill -9`: the process dies between two instructions.
    pub fn kill(&mut self) {
        self.child.kill().expect("kill the server");
        self.child.wait().expect("reap the server");
    }

    /// A clean stop (SIGTERM), waited for: the server finishes what it answered.
    pub fn terminate(&mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
        let exit = self.child.wait().expect("reap the server");
        assert!(exit.success(), "the server stopped with {exit}");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The TLS crypto provider reqwest needs before it builds a client (the binary installs the same
/// one at start). Every test calls it through `data_dir` or `Server`.
pub fn tls() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A fresh directory for one test's data, under Cargo's temp dir (cleared by `scripts/test.sh`).
pub fn data_dir() -> PathBuf {
    tls();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("switchyard-tests")
        .join(switchyard_events::EventId::new().to_string());
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The mock OpenAI-compatible upstream (`benches/gateway/mock_upstream.rs`), stopped on drop.
pub struct Mock {
    child: Child,
    pub base: String,
}

impl Mock {
    pub fn start() -> Mock {
        tls();
        let mut child = Command::new(env!("CARGO_BIN_EXE_mock-upstream"))
            .env("MOCK_LISTEN", "127.0.0.1:0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the mock upstream");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("read the listening line");
        let base = line
            .trim()
            .strip_prefix("mock-upstream listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
            .to_owned();
        Mock { child, base }
    }
}

impl Drop for Mock {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The admin token the black-box tests give their servers.
pub const TOKEN: &str = "test-admin-token-0123456789";

/// A new tenant and an API key for it, through the admin API: (tenant id, key, key id).
pub async fn tenant_with_key(server: &Server) -> (String, String, String) {
    let client = reqwest::Client::new();
    let tenant: serde_json::Value = client
        .post(server.url("/v1/admin/tenants"))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"name": "Acme"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = tenant["id"].as_str().unwrap().to_owned();
    let key: serde_json::Value = client
        .post(server.url(&format!("/v1/admin/tenants/{id}/keys")))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"name": "app"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (
        id,
        key["key"].as_str().unwrap().to_owned(),
        key["id"].as_str().unwrap().to_owned(),
    )
}

/// The log's head as `node` sees it (`/readyz`).
pub async fn log_head(node: &Server) -> u64 {
    let ready: serde_json::Value = reqwest::get(node.url("/readyz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    ready["event_log_head"].as_u64().unwrap()
}

/// Waits (bounded) until `node`'s keys, limits and spend have folded the log up to `position`
/// (`followed` in `/readyz`): a write made elsewhere up to there is enforced on `node`.
pub async fn followed_to(node: &Server, position: u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let ready: serde_json::Value = reqwest::get(node.url("/readyz"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if ready["followed"].as_u64().is_some_and(|at| at >= position) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} never followed the log to {position}: {ready}",
            node.base
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// A GET with a tenant key: its status and JSON body.
pub async fn get(node: &Server, key: &str, path: &str) -> (u16, serde_json::Value) {
    let response = reqwest::Client::new()
        .get(node.url(path))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (
        status,
        response.json().await.unwrap_or(serde_json::Value::Null),
    )
}
