//! The command line's contract: configuration, keys and exit codes.

use crate::helpers::*;

#[test]
fn config_example_is_valid_configuration() {
    let s = Scratch::new();
    let example = s.ok(&["config", "example"]);
    std::fs::write(s.path("reachline.toml"), &example).unwrap();
    let checked = s.ok(&[
        "--config",
        s.path("reachline.toml").to_str().unwrap(),
        "config",
        "check",
    ]);
    assert!(checked.contains("configuration is valid"));
}

#[test]
fn configuration_errors_name_the_setting() {
    let s = Scratch::new();
    std::fs::write(s.path("bad.toml"), "[book]\ndefault_time_zone = \"Mars/Base\"\n").unwrap();
    let out = s.run(&["--config", s.path("bad.toml").to_str().unwrap(), "config", "check"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("book.default_time_zone"), "{}", stderr(&out));

    std::fs::write(s.path("typo.toml"), "[database]\nurll = \"sqlite://x\"\n").unwrap();
    let out = s.run(&["--config", s.path("typo.toml").to_str().unwrap(), "config", "check"]);
    assert!(stderr(&out).contains("urll"), "{}", stderr(&out));

    let out = s.run(&["--database", "mysql://db/x", "summary"]);
    assert!(
        stderr(&out).contains("database.url must start with sqlite:// or postgres://"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn environment_overrides_the_file_and_secrets_stay_hidden() {
    let s = Scratch::new();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_reachline"))
        .args(["config", "check"])
        .current_dir(s.dir.path())
        .env("REACHLINE_DATABASE__URL", "postgres://rl:hunter2@db/rl")
        .env(
            "REACHLINE_KEYS__MASTER_KEY",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        )
        .env(
            "REACHLINE_KEYS__BLIND_INDEX_KEY",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        )
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(text.contains("postgres://rl:***@db/rl"), "{text}");
    assert!(!text.contains("hunter2") && !text.contains("AAAAAAAA"), "{text}");
}

#[test]
fn keys_init_never_overwrites() {
    let s = Scratch::new();
    let out = s.run(&["keys", "init", "--out", s.keys().to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("refusing to overwrite keys"));
}

#[test]
fn the_wrong_keys_cannot_read_the_database() {
    let s = Scratch::new();
    let book = s.gen("book", 3, 0, "csv");
    s.import_json(&book);
    s.ok(&["contacts", "history", "B00000001"]);
    std::fs::remove_file(s.keys()).unwrap();
    s.ok(&["keys", "init", "--out", s.keys().to_str().unwrap()]);
    let out = s.run(&["contacts", "history", "B00000001"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("sealed under another key"), "{}", stderr(&out));
}

#[test]
fn demo_runs_end_to_end() {
    let s = Scratch::new();
    let dir = s.path("demo");
    let out = s.ok(&["demo", "--dir", dir.to_str().unwrap(), "--borrowers", "120"]);
    assert!(out.contains("borrowers           120 created"), "{out}");
    // The engine ran: notices went out over SMPP, were deferred to contact hours, and the
    // lender's export arrived mid-run and retired the changed numbers.
    let sent = |kind: &str| -> u64 {
        out.lines()
            .find(|l| l.trim_start().starts_with(kind) && l.contains(" sms "))
            .and_then(|l| l.split_whitespace().nth(2))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    assert!(sent("pre_due") > 100, "{out}");
    assert!(sent("due_today") > 10, "{out}");
    assert!(out.contains("gate: quiet_hours"), "{out}");
    assert!(out.contains("retired: replaced by book"), "{out}");
    assert!(out.contains("nothing was imported"), "{out}");
    assert!(out.contains("database unchanged"), "{out}");
    // A second run recreates its own directory, and refuses a directory that is not a demo's.
    s.ok(&["demo", "--dir", dir.to_str().unwrap(), "--borrowers", "10"]);
    std::fs::create_dir_all(s.path("precious")).unwrap();
    std::fs::write(s.path("precious/data.txt"), "keep").unwrap();
    let out = s.run(&["demo", "--dir", s.path("precious").to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(s.path("precious/data.txt").exists());
}

#[test]
fn send_uses_the_configured_providers_and_prints_json() {
    let s = Scratch::new();
    std::fs::create_dir_all(s.path("mail")).unwrap();
    let peer = reachline_channels::peers::SmtpPeer::start(&s.path("mail")).unwrap();
    std::fs::write(
        s.path("reachline.toml"),
        format!("[smtp]\nport = {}\naccepted_is_delivered = true\n", peer.port),
    )
    .unwrap();
    let config = s.path("reachline.toml");
    let config = config.to_str().unwrap();
    let json = |out: &str| -> serde_json::Value { serde_json::from_str(out.trim()).unwrap() };

    let out = json(&s.ok(&[
        "--config",
        config,
        "send",
        "--channel",
        "email",
        "--to",
        "zhang.wei@example.com",
        "--text",
        "hello",
        "--wait-receipt",
        "5",
    ]));
    assert_eq!(
        (out["outcome"].as_str(), out["class"].as_str()),
        (Some("accepted"), Some("delivered")),
        "{out}"
    );
    assert_eq!(out["to"], "z***@example.com", "the address is masked");
    assert_eq!(peer.received()[0].text.trim_end(), "hello");

    // A refusal is an outcome too, with its class.
    let out = json(&s.ok(&[
        "--config",
        config,
        "send",
        "--channel",
        "email",
        "--to",
        "gone@example.com",
        "--text",
        "hello",
    ]));
    assert_eq!(
        (out["outcome"].as_str(), out["class"].as_str()),
        (Some("refused"), Some("dead")),
        "{out}"
    );
    assert_eq!(out["permanence"], "permanent");

    // No push provider configured: a clear error.
    let bad = s.run(&[
        "--config",
        config,
        "send",
        "--channel",
        "push",
        "--to",
        "tok-123456",
        "--text",
        "x",
    ]);
    assert!(!bad.status.success());
    assert!(
        stderr(&bad).contains("no push provider is configured"),
        "{}",
        stderr(&bad)
    );

    // SMS with nothing configured goes to the in-process sandbox SMSC.
    let out = json(&s.ok(&[
        "--config",
        config,
        "send",
        "--channel",
        "sms",
        "--to",
        "+8613812345670",
        "--text",
        "hi",
        "--wait-receipt",
        "5",
    ]));
    assert_eq!(
        (out["outcome"].as_str(), out["class"].as_str()),
        (Some("accepted"), Some("delivered")),
        "{out}"
    );
    assert_eq!(out["to"], "+86138****5670");
}
