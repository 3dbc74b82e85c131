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
    // Refused when the database opens, by the key check, before anything is read or written.
    assert!(
        stderr(&out).contains("is not the one this database's data keys were wrapped with")
            && stderr(&out).contains("wrong key file"),
        "{}",
        stderr(&out)
    );
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

#[test]
fn a_borrowers_export_holds_their_data_in_clear_and_is_logged() {
    let s = Scratch::new();
    let book = s.gen("book", 5, 1, "jsonl");
    s.import_json(&book);
    let first: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(book.join("borrowers.jsonl"))
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    let id = first["external_id"].as_str().unwrap();
    let name = first["name"].as_str().unwrap();
    // A reason that could carry a number into the access log is refused before anything is read.
    let bad = s.run(&["borrower", "export", id, "--reason", "call from 13812345678"]);
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("six digits"), "{}", stderr(&bad));

    let out = s.path("export.json");
    s.ok(&[
        "borrower",
        "export",
        id,
        "--reason",
        "access request case AR-17",
        "--out",
        out.to_str().unwrap(),
    ]);
    let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(doc["format"], "reachline-borrower-export/1");
    assert_eq!(doc["borrower"]["name"], name, "in clear");
    assert_eq!(doc["borrower"]["masked"], false);
    let contacts = doc["contacts"].as_array().unwrap();
    assert!(!contacts.is_empty());
    assert!(
        contacts.iter().all(|c| !c["address"].as_str().unwrap().contains('*')),
        "{contacts:?}"
    );
    assert!(!doc["loans"].as_array().unwrap().is_empty());
    assert!(!doc["consents"].as_array().unwrap().is_empty());
    let log = doc["access_log"].as_array().unwrap();
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(
        (log[0]["action"].as_str(), log[0]["reason"].as_str()),
        (Some("borrower.export"), Some("access request case AR-17"))
    );
    assert!(log[0]["actor"].as_str().unwrap().starts_with("cli:"));
    // Someone else's id: a clear error.
    let none = s.run(&["borrower", "export", "NOBODY", "--reason", "access request"]);
    assert!(stderr(&none).contains("no borrower NOBODY"), "{}", stderr(&none));
}
