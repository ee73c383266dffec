//! The command line: subcommands, exit codes and messages scripts rely on.

use std::process::Command;

fn grok2api(args: &[&str], data_dir: &std::path::Path) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_grok2api"))
        .args(args)
        .env_clear()
        .env("DATA_DIR", data_dir)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn version_and_help() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, _) = grok2api(&["--version"], dir.path());
    assert_eq!(code, 0);
    assert!(out.starts_with("grok2api "), "{out}");
    let (code, out, _) = grok2api(&["--help"], dir.path());
    assert_eq!(code, 0);
    assert!(
        out.contains("check-config") && out.contains("tokens"),
        "{out}"
    );
    let (code, _, err) = grok2api(&["no-such-command"], dir.path());
    assert_eq!(code, 2, "{err}");
}

#[test]
fn check_config_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "[grok]\napi_key = \"k\"\ncf_clearance = \"x\"\n").unwrap();
    let (code, out, _) = grok2api(&["check-config", good.to_str().unwrap()], dir.path());
    assert_eq!(code, 0);
    assert!(out.contains("ok:") && out.contains("cf_clearance"), "{out}");

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[global]\nport = \"eighty\"\n").unwrap();
    let (code, _, err) = grok2api(&["check-config", bad.to_str().unwrap()], dir.path());
    assert_eq!(code, 2);
    assert!(err.contains("bad.toml") && err.contains("port"), "{err}");

    let (code, _, err) = grok2api(&["check-config", "/nonexistent/setting.toml"], dir.path());
    assert_eq!(code, 2, "{err}");
    // Without a path: the file `serve` would read (missing → defaults, still valid).
    let (code, out, _) = grok2api(&["check-config"], dir.path());
    assert_eq!(code, 0, "{out}");
    let (code, _, err) = grok2api(
        &["--config", bad.to_str().unwrap(), "check-config"],
        dir.path(),
    );
    assert_eq!(code, 2, "{err}");
}

#[test]
fn tokens_import_lines_and_grok2api_file() {
    let dir = tempfile::tempdir().unwrap();
    let lines = dir.path().join("tokens.txt");
    std::fs::write(
        &lines,
        "tok-line-aaaaaaaaaaaa\n\n tok-line-bbbbbbbbbbbb \ntok-line-aaaaaaaaaaaa\n",
    )
    .unwrap();
    let (code, out, err) = grok2api(&["tokens", "import", lines.to_str().unwrap()], dir.path());
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("imported 2 tokens"), "{out}");

    let g2a = dir.path().join("old-token.json");
    std::fs::write(
        &g2a,
        r#"{"ssoNormal": {"tok-line-aaaaaaaaaaaa": {}}, "ssoSuper": {"tok-super-cccccccccccc": {"note": "x"}}}"#,
    )
    .unwrap();
    let (code, out, err) = grok2api(&["tokens", "import", g2a.to_str().unwrap()], dir.path());
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("imported 1 tokens (1 already present)"),
        "{out}"
    );
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("token.json")).unwrap())
            .unwrap();
    assert_eq!(saved["ssoNormal"].as_object().unwrap().len(), 2);
    assert!(saved["ssoSuper"].get("tok-super-cccccccccccc").is_some());

    let (code, _, err) = grok2api(
        &[
            "tokens",
            "import",
            "--token-type",
            "gold",
            lines.to_str().unwrap(),
        ],
        dir.path(),
    );
    assert_eq!(code, 2, "{err}");
}

mod support;

#[test]
fn plugin_check_reports_world_metadata_and_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let ok = |name: &str, world: &str| {
        let Some(path) = support::plugins::built(name) else {
            return;
        };
        let (code, out, err) = grok2api(&["plugin", "check", path.to_str().unwrap()], dir.path());
        assert_eq!(code, 0, "{name}: {out}{err}");
        assert!(out.contains(&format!("world: {world}")), "{out}");
        assert!(
            out.contains("trial call: ok") && out.contains("version: "),
            "{out}"
        );
        assert!(out.trim_end().ends_with("ok"), "{out}");
    };
    ok("least-latency", "proxy-selector (hook: plugins.selector)");
    ok("json-pool", "pool-parser (hook: plugins.pool_parser)");

    if let Some(sandbox) = support::plugins::built("tg-sandbox") {
        let sandbox = sandbox.to_str().unwrap();
        let (code, out, _) = grok2api(&["plugin", "check", sandbox], dir.path());
        assert_eq!(code, 0, "{out}");
        // Its `init` refuses an unknown mode: the plugin failed.
        let (code, out, err) = grok2api(
            &[
                "plugin",
                "check",
                sandbox,
                "--init-config",
                r#"{"mode": "nope"}"#,
            ],
            dir.path(),
        );
        assert_eq!(code, 1, "{out}{err}");
        assert!(err.contains("unknown mode nope"), "{err}");
        // Not JSON: bad usage.
        let (code, _, err) = grok2api(
            &["plugin", "check", sandbox, "--init-config", "{mode"],
            dir.path(),
        );
        assert_eq!(code, 2, "{err}");
    }
    if let Some(p) = support::plugins::built("tg-no-world") {
        let (code, _, err) = grok2api(&["plugin", "check", p.to_str().unwrap()], dir.path());
        assert_eq!(code, 1, "{err}");
        assert!(err.contains("matches no plugin world"), "{err}");
    }

    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"\0asm not really a component \xff\xfe").unwrap();
    let (code, _, err) = grok2api(&["plugin", "check", garbage.to_str().unwrap()], dir.path());
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("not a valid component"), "{err}");

    let (code, _, err) = grok2api(&["plugin", "check", "/nonexistent/x.wasm"], dir.path());
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = grok2api(&["plugin", "check"], dir.path());
    assert_eq!(code, 2, "{err}");
}

#[test]
fn global_options_data_dir_and_config() {
    let dir = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    let cfg = other.path().join("elsewhere.toml");
    std::fs::write(&cfg, "[global]\nmax_connections = 10\n").unwrap();
    // --data-dir wins over DATA_DIR; the settings file is read from it.
    std::fs::write(
        other.path().join("setting.toml"),
        "[global]\nheader_read_timeout = -1\n",
    )
    .unwrap();
    let (code, _, err) = grok2api(
        &["--data-dir", other.path().to_str().unwrap(), "check-config"],
        dir.path(),
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("header_read_timeout"), "{err}");
    // --config names another file, after the subcommand as well.
    let (code, out, err) = grok2api(
        &[
            "--data-dir",
            other.path().to_str().unwrap(),
            "check-config",
            "--config",
            cfg.to_str().unwrap(),
        ],
        dir.path(),
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("elsewhere.toml"), "{out}");
}
