//! The official `openai` Python SDK against the real binary, streaming and tool calls
//! included. The interpreter is `SWITCHYARD_TEST_PYTHON` (`scripts/test.sh` makes a venv with
//! the SDK); the test fails, never skips, without it. The script runs with `PYTHONOPTIMIZE=2`,
//! which strips `assert` statements: its checks must hold without them.
//!
//! The second test runs LangChain and the SDK's `parse` helpers against the simulated models
//! alone: structured output and tool calls (issue 19, item 6).

use crate::server::{Mock, Server, TOKEN, data_dir, tenant_with_key};

#[tokio::test]
async fn the_official_openai_sdk_works_unchanged() {
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
    run_script("openai_sdk.py", &server.base, &key).await;
    // The Responses API (issue 19, item 3), whole and streamed, against the same server.
    run_script("responses.py", &server.base, &key).await;
}

/// Issue 19, item 6: LangChain's `ChatOpenAI` (`with_structured_output`, `bind_tools` and an
/// agent loop, streamed tool calls, async batches) and the SDK's `parse` helpers work against
/// the simulated models.
#[tokio::test]
async fn agent_frameworks_get_structured_output_and_tool_calls_from_the_simulator() {
    let dir = data_dir();
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        "default_model = \"sim-small\"\n[[providers]]\nname = \"sim\"\nkind = \"sim\"\n\
         [[models]]\nname = \"sim-small\"\nprovider = \"sim\"\n\
         [[models]]\nname = \"sim-large\"\nprovider = \"sim\"\n",
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
    run_script("frameworks.py", &server.base, &key).await;
}

/// Runs `tests/sdk/NAME` with the test's interpreter against `base`, and fails unless it
/// printed "all checks passed".
async fn run_script(name: &str, base: &str, key: &str) {
    let python = std::env::var("SWITCHYARD_TEST_PYTHON").expect(
        "SWITCHYARD_TEST_PYTHON must name a python with `openai` (scripts/test.sh sets it)",
    );
    let script = format!("{}/../../tests/sdk/{name}", env!("CARGO_MANIFEST_DIR"));
    let output = tokio::process::Command::new(python)
        .env("PYTHONOPTIMIZE", "2")
        .arg(script)
        .arg(base)
        .arg(key)
        .output()
        .await
        .expect("run the SDK script");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{name} failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("all checks passed"), "{stdout}");
}
