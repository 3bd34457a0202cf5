//! The OpenAPI document tells the truth: schemathesis (PyPI, installed by `scripts/test-all.sh`
//! into `.venv`) generates requests from it against a real controller process and checks every
//! answer: no server error, every status code documented, content types, headers and bodies as
//! the document says.
//!
//! One operation is left out: `DELETE /v1/tokens/{id}`. The stateful phase creates admin tokens
//! (whose secrets it does not keep) and would then delete the run's own token, locking the run
//! out; deleting the last admin token is refused, and that is tested in `hardening.rs`.

use tessera_tests::Controller;

#[test]
fn schemathesis_finds_no_server_error_and_no_undocumented_answer() {
    let venv = concat!(env!("CARGO_MANIFEST_DIR"), "/../.venv/bin/schemathesis");
    assert!(std::path::Path::new(venv).exists(), "{venv} is missing: run scripts/test-all.sh, which installs it");
    let c = Controller::start(&[]);
    let reports = tempfile::tempdir().expect("tmp");
    let out = std::process::Command::new(venv)
        .current_dir(reports.path())
        .args(["run", &format!("{}/v1/openapi.json", c.url), "--url", &c.url])
        .args(["-H", &format!("Authorization: Bearer {}", c.token)])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance",
        ])
        .args(["--phases", "examples,coverage,fuzzing,stateful", "--max-examples", "40", "--seed", "7743"])
        .args(["--exclude-name", "DELETE /v1/tokens/{id}"])
        .args(["--request-timeout", "10", "--generation-database", "none", "--no-color", "--workers", "2"])
        .env("SCHEMATHESIS_TELEMETRY", "false")
        .output()
        .expect("run schemathesis");
    let text = String::from_utf8_lossy(&out.stdout);
    let summary: String = text.lines().rev().take(30).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
    println!("{summary}");
    assert!(out.status.success(), "schemathesis found problems:\n{text}\n{}", String::from_utf8_lossy(&out.stderr));
    // "Selected: 38/39" then "Tested: 38": every operation but the excluded one ran.
    let selected = text.lines().find_map(|l| l.trim().strip_prefix("Selected: ")).expect("a Selected line");
    let (picked, total) = selected.split_once('/').expect("N/M");
    assert_eq!(picked.parse::<usize>().expect("N") + 1, total.parse::<usize>().expect("M"), "{summary}");
    assert!(text.contains(&format!("Tested: {picked}")), "every selected operation was tested:\n{summary}");
}
