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
