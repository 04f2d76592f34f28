//! Billing a finance team can use (issue 19, item 7), through the real binary: price books per
//! plan published from TOML, the open month's invoice priced on the plan (the sum of its
//! inferences at the plan's prices), JSON and CSV export, credit notes refused on an open
//! invoice, what-if re-pricing that reproduces the invoice under its own book, and hostile
//! input. Closing a month needs the month to end: the invoicer's tests move a clock for that
//! (crates/inference/tests/invoicing.rs), here a close before the end is refused.

use std::process::Command;

use serde_json::{Value, json};

use crate::cluster::admin;
use crate::server::{Server, TOKEN, data_dir};

const BOOK: &str = r#"
[plans.pro]
discount_percent = 10
[plans.pro.models.sim-small]
input_usd_per_million = 0.333333
output_usd_per_million = 1.234567
included_input_tokens = 40
"#;

/// Runs the CLI against `server`; its stdout when it succeeded.
fn switchyard(server: &Server, args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .env("SWITCHYARD_ADMIN_TOKEN", TOKEN)
        .env("SWITCHYARD_SERVER", server.url(""))
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        output.status.success(),
        "{args:?}: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

fn this_month() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!("{:04}-{:02}", now.year(), u8::from(now.month()))
}

/// A tenant on `plan` with a key.
async fn tenant_on(server: &Server, plan: &str) -> (String, String) {
    let client = reqwest::Client::new();
    let (status, tenant) = admin(
        &client,
        reqwest::Method::POST,
        server,
        "/v1/admin/tenants",
        Some(json!({"name": format!("billing-{}", uuid::Uuid::now_v7().simple()), "plan": plan})),
    )
    .await;
    assert_eq!(status, 201, "{tenant}");
    let id = tenant["id"].as_str().unwrap().to_owned();
    let (status, key) = admin(
        &client,
        reqwest::Method::POST,
        server,
        &format!("/v1/admin/tenants/{id}/keys"),
        Some(json!({"name": "app"})),
    )
    .await;
    assert_eq!(status, 201, "{key}");
    (id, key["key"].as_str().unwrap().to_owned())
}

/// One chat request; its (prompt, completion) tokens.
async fn ask(server: &Server, key: &str, prompt: &str) -> (u64, u64) {
    let response = reqwest::Client::new()
        .post(server.url("/v1/chat/completions"))
        .bearer_auth(key)
        .json(&json!({"model": "sim-small", "messages": [{"role": "user", "content": prompt}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    (
        body["usage"]["prompt_tokens"].as_u64().unwrap(),
        body["usage"]["completion_tokens"].as_u64().unwrap(),
    )
}

/// The tenant's invoice for this month once it covers `records` inferences.
async fn invoice_of(server: &Server, key: &str, records: u64) -> Value {
    let client = reqwest::Client::new();
    for _ in 0..200 {
        let response = client
            .get(server.url(&format!("/v1/billing/invoices/{}", this_month())))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let invoice: Value = response.json().await.unwrap();
        if invoice["records"] == records {
            return invoice;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the invoice never covered {records} inferences");
}

/// What the book above charges for these inferences, priced one by one and rounded up.
fn at_plan_prices(usage: &[(u64, u64)]) -> u64 {
    let mut free = 40u64;
    let subtotal: u64 = usage
        .iter()
        .map(|&(tokens_in, tokens_out)| {
            let waived = tokens_in.min(free);
            free -= waived;
            let micros =
                u128::from(tokens_in - waived) * 333_333 + u128::from(tokens_out) * 1_234_567;
            u64::try_from(micros.div_ceil(1_000_000)).unwrap()
        })
        .sum();
    subtotal - subtotal / 10
}

#[tokio::test]
async fn the_open_month_is_priced_on_the_plan_exported_and_repriced_exactly() {
    let dir = data_dir();
    let server = Server::start_with(&dir, &[("SWITCHYARD_ADMIN_TOKEN", TOKEN)]);
    let book = dir.join("book.toml");
    std::fs::write(&book, BOOK).unwrap();
    let published: Value = serde_json::from_str(&switchyard(
        &server,
        &["billing", "publish", "--price-book", book.to_str().unwrap()],
    ))
    .unwrap();
    assert_eq!(published["published"][0]["plan"], "pro");
    assert_eq!(published["published"][0]["version"], 1);
    assert_eq!(published["published"][0]["effective_from"], this_month());

    let (pro, pro_key) = tenant_on(&server, "pro").await;
    let (_, free_key) = tenant_on(&server, "free").await;
    let mut usage = Vec::new();
    for i in 0..12 {
        usage.push(
            ask(
                &server,
                &pro_key,
                &format!("question number {i} about invoices"),
            )
            .await,
        );
    }
    ask(&server, &free_key, "hello").await;

    let invoice = invoice_of(&server, &pro_key, 12).await;
    assert_eq!(invoice["status"], "open");
    assert_eq!(invoice["plan"], "pro");
    assert_eq!(invoice["book_version"], 1);
    assert_eq!(invoice["total_micros"], at_plan_prices(&usage), "{invoice}");
    let line = &invoice["lines"][0];
    assert_eq!(line["model"], "sim-small");
    assert_eq!(line["tokens_in"], usage.iter().map(|u| u.0).sum::<u64>());
    // A plan without a book pays list prices: what its inference's event says it cost.
    let free = invoice_of(&server, &free_key, 1).await;
    assert_eq!(free["book_version"], Value::Null);
    assert_eq!(free["total_micros"], free["lines"][0]["list_micros"]);

    // CSV, from the tenant's API and from the CLI's export of every tenant.
    let csv = reqwest::Client::new()
        .get(server.url(&format!("/v1/billing/invoices/{}?format=csv", this_month())))
        .bearer_auth(&pro_key)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        csv.starts_with("tenant,period,status,plan,book_version,row,model"),
        "{csv}"
    );
    assert!(csv.contains(",line,sim-small,12,"), "{csv}");
    let export = switchyard(&server, &["billing", "export", "--month", &this_month()]);
    assert!(export.contains(&pro), "{export}");
    assert_eq!(
        export.lines().filter(|l| l.contains(",total,")).count(),
        2,
        "{export}"
    );

    // The JSON export holds every tenant's invoice, not only the first.
    let all: Value = reqwest::Client::new()
        .get(server.url(&format!("/v1/admin/invoices?period={}", this_month())))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let tenants: Vec<&str> = all["data"]
        .as_array()
        .unwrap_or_else(|| panic!("{all}"))
        .iter()
        .filter_map(|d| d["tenant"].as_str())
        .collect();
    assert_eq!(tenants.len(), 2, "{all}");
    assert!(tenants.contains(&pro.as_str()), "{all}");

    // Re-pricing under the same book reproduces the invoice; a bigger discount lowers it.
    let same = switchyard(
        &server,
        &[
            "billing",
            "reprice",
            "--price-book",
            book.to_str().unwrap(),
            "--month",
            &this_month(),
            "--json",
        ],
    );
    let same: Value = serde_json::from_str(&same).unwrap();
    let row = same["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["tenant"] == pro.as_str())
        .unwrap();
    assert_eq!(row["difference_micros"], 0, "{row}");
    assert_eq!(row["repriced"]["lines"], row["actual"]["lines"]);
    let cheaper = dir.join("cheaper.toml");
    std::fs::write(
        &cheaper,
        BOOK.replace("discount_percent = 10", "discount_percent = 50"),
    )
    .unwrap();
    let table = switchyard(
        &server,
        &[
            "billing",
            "reprice",
            "--price-book",
            cheaper.to_str().unwrap(),
            "--month",
            &this_month(),
        ],
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(&pro) && l.contains(" -")),
        "{table}"
    );
    // …and wrote nothing: the invoice is as it was.
    assert_eq!(
        invoice_of(&server, &pro_key, 12).await["total_micros"],
        at_plan_prices(&usage)
    );

    // The open month cannot be closed, paid or credited yet.
    let client = reqwest::Client::new();
    let month = this_month();
    for (path, body, status, code) in [
        (
            format!("/v1/admin/tenants/{pro}/invoices/{month}/close"),
            json!({}),
            409,
            "period_not_over",
        ),
        (
            format!("/v1/admin/tenants/{pro}/invoices/{month}/paid"),
            json!({}),
            409,
            "invoice_status",
        ),
        (
            format!("/v1/admin/tenants/{pro}/credit-notes"),
            json!({"period": month, "amount_usd": 1, "reason": "outage"}),
            409,
            "invoice_status",
        ),
        (
            format!("/v1/admin/tenants/{pro}/invoices/2019-01/close"),
            json!({}),
            404,
            "invoice_not_found",
        ),
    ] {
        let (got, answer) = admin(&client, reqwest::Method::POST, &server, &path, Some(body)).await;
        assert_eq!(
            (got, answer["error"]["code"].as_str()),
            (status, Some(code)),
            "{path}: {answer}"
        );
    }
    let (status, day) = admin(
        &client,
        reqwest::Method::PUT,
        &server,
        &format!("/v1/admin/tenants/{pro}/billing-day"),
        Some(json!({"billing_day": 15})),
    )
    .await;
    assert_eq!(status, 200, "{day}");
    assert!(
        day["from_period"].as_str().unwrap() > month.as_str(),
        "{day}"
    );
    let (status, books) = admin(
        &client,
        reqwest::Method::GET,
        &server,
        "/v1/admin/price-books",
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(books["plans"]["pro"][0]["prices"]["discount_bps"], 1_000);
}

#[tokio::test]
async fn hostile_billing_input_is_refused_and_changes_nothing() {
    let dir = data_dir();
    let server = Server::start_with(&dir, &[("SWITCHYARD_ADMIN_TOKEN", TOKEN)]);
    let (tenant, key) = tenant_on(&server, "pro").await;
    let client = reqwest::Client::new();
    let post = reqwest::Method::POST;
    for (body, status) in [
        (
            json!({"plans": {"pro": {"models": {"m": {"input_usd_per_million": -1}}}}}),
            422,
        ),
        (
            json!({"plans": {"pro": {"models": {"m": {"input_usd_per_million": 1e300}}}}}),
            422,
        ),
        (
            json!({"plans": {"pro": {"models": {"m": {"usd_per_request": 0.0000001}}}}}),
            422,
        ),
        (json!({"plans": {"pro": {"discount_percent": 120}}}), 422),
        (json!({"plans": {"": {}}}), 422),
        (json!({"plans": {}}), 422),
        (
            json!({"effective_from": "2026-13", "plans": {"pro": {}}}),
            422,
        ),
        (
            json!({"effective_from": "next month", "plans": {"pro": {}}}),
            422,
        ),
        (json!({"plans": {"pro": {"discount": 10}}}), 422),
        (json!("not a book"), 422),
    ] {
        let (got, answer) = admin(
            &client,
            post.clone(),
            &server,
            "/v1/admin/price-books",
            Some(body.clone()),
        )
        .await;
        assert_eq!(got, status, "{body}: {answer}");
        assert!(answer["error"]["message"].is_string(), "{answer}");
    }
    let (_, books) = admin(
        &client,
        reqwest::Method::GET,
        &server,
        "/v1/admin/price-books",
        None,
    )
    .await;
    assert_eq!(books["plans"], json!({}), "nothing was published");

    for (path, status) in [
        ("/v1/billing/invoices/2026-1".to_owned(), 422),
        (
            format!("/v1/billing/invoices/{}?format=xml", this_month()),
            400,
        ),
        (format!("/v1/billing/invoices/{}?nope=1", this_month()), 400),
    ] {
        let response = client
            .get(server.url(&path))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), status, "{path}");
    }
    for (body, status) in [
        (json!({"billing_day": 0}), 422),
        (json!({"billing_day": 29}), 422),
        (json!({"billing_day": 300}), 422),
        (json!({"day": 3}), 422),
    ] {
        let (got, answer) = admin(
            &client,
            reqwest::Method::PUT,
            &server,
            &format!("/v1/admin/tenants/{tenant}/billing-day"),
            Some(body.clone()),
        )
        .await;
        assert_eq!(got, status, "{body}: {answer}");
    }
    let (got, _) = admin(
        &client,
        post.clone(),
        &server,
        "/v1/admin/billing/reprice",
        Some(json!({"period": "2026-00", "book": {"plans": {"pro": {}}}})),
    )
    .await;
    assert_eq!(got, 422);
    // Billing needs an admin: a tenant's key is not one.
    let response = client
        .post(server.url("/v1/admin/price-books"))
        .bearer_auth(&key)
        .json(&json!({"plans": {"pro": {}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
}

#[tokio::test]
async fn any_node_prices_the_month_alike() {
    let nodes = crate::cluster::cluster(2);
    let client = reqwest::Client::new();
    let (status, answer) = admin(
        &client,
        reqwest::Method::POST,
        &nodes[0],
        "/v1/admin/price-books",
        Some(
            json!({"plans": {"pro": {"discount_percent": 10, "models": {"sim-small": {
            "input_usd_per_million": 0.333333, "output_usd_per_million": 1.234567,
            "included_input_tokens": 40}}}}}),
        ),
    )
    .await;
    assert_eq!(status, 201, "{answer}");
    let (_, key) = tenant_on(&nodes[0], "pro").await;
    crate::cluster::until_key(&nodes[1], &key, 200).await;
    let mut usage = Vec::new();
    for i in 0..8 {
        usage.push(ask(&nodes[i % 2], &key, &format!("node question {i}")).await);
    }
    let a = invoice_of(&nodes[0], &key, 8).await;
    let b = invoice_of(&nodes[1], &key, 8).await;
    assert_eq!(a, b);
    assert_eq!(a["total_micros"], at_plan_prices(&usage));
}
