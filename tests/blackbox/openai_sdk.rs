//! The official `openai` Python SDK against the real binary, streaming and tool calls
//! included. The interpreter is `SWITCHYARD_TEST_PYTHON` (`scripts/test.sh` makes a venv with
//! the SDK); the test fails, never skips, without it. The script runs with `PYTHONOPTIMIZE=2`,
//! which strips `assert` statements: its checks must hold without them.

use crate::server::{Mock, Server, TOKEN, data_dir, tenant_with_key};

#[tokio::test]
async fn the_official_openai_sdk_works_unchanged() {
    let python = std::env::var("SWITCHYARD_TEST_PYTHON").expect(
        "SWITCHYARD_TEST_PYTHON must name a python with `openai` (scripts/test.sh sets it)",
    );
    let mock = Mock::start();
    let dir = data_dir();
    let config = dir.join("config.toml");
    // The built-in simulated models, without their latency, and the mock upstream, which
    // answers a request offering tools with a tool call (`auto` serves the default model).
    std::fs::write(
        &config,
        format!(
            "default_model = \"sim-small\"\n[[providers]]\nname = \"sim\"\nkind = \"sim\"\n\
             [[providers]]\nname = \"mock\"\nkind = \"openai\"\nbase_url = \"{}/v1\"\n\
             [[models]]\nname = \"sim-small\"\nprovider = \"sim\"\n\
             [[models]]\nname = \"sim-large\"\nprovider = \"sim\"\n\
             [[models]]\nname = \"mock-tools\"\nprovider = \"mock\"\n",
            mock.base
        ),
    )
    .unwrap();
    let server = Server::start_with(
        &dir,
        &[
            ("SWITCHYARD_ADMIN_TOKEN", TOKEN),
            ("SWITCHYARD_CONFIG", config.to_str().unwrap()),
        ],
    );
    let (_, key, _) = tenant_with_key(&server).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/sdk/openai_sdk.py");
    let output = tokio::process::Command::new(python)
        .env("PYTHONOPTIMIZE", "2")
        .arg(script)
        .arg(&server.base)
        .arg(&key)
        .output()
        .await
        .expect("run the SDK script");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "SDK script failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("all checks passed"), "{stdout}");
}
