//! The README's examples, run: every ```` ```console ```` block of README.md is a command (`$ `
//! lines, run by bash from the repository root with the built `facedetect` first on PATH, stderr
//! merged into stdout) and what it prints, compared line by line in trycmd's notation: `[..]`
//! stands for any text within a line, a line `...` for any lines, and a last line `? failed`
//! (or `? N`) for a non-zero exit status (or that one); without it the command must succeed.
//!
//! A block preceded by `<!-- readme-test: needs curl boto3 moto -->` needs curl, Python's boto3
//! or moto's server: without them it is skipped with a message, unless `FACEDETECT_REQUIRE_BOTO3`
//! (curl, boto3) or `FACEDETECT_REQUIRE_MOTO` is set (CI). The README's curl example must be the one
//! scripts/local-demo runs, so the walkthrough's output shows what that command prints.

use crate::common;

use std::path::PathBuf;
use std::process::Command;

/// One ```` ```console ```` block: its command, what it prints, how it exits, what it needs.
#[derive(Debug)]
struct Example {
    /// The README's line number of the command.
    line: usize,
    command: String,
    expected: Vec<String>,
    /// `None`: success; `Some(None)`: any failure; `Some(Some(n))`: exit status n.
    failure: Option<Option<i32>>,
    needs: Vec<String>,
}

fn readme() -> String {
    std::fs::read_to_string(common::crate_dir().join("README.md")).unwrap()
}

/// The console blocks of `text`, which may be indented (inside a list item).
fn examples(text: &str) -> Vec<Example> {
    let lines: Vec<&str> = text.lines().collect();
    let mut examples = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let fence = lines[i].trim_start();
        if fence != "```console" {
            i += 1;
            continue;
        }
        let indent = lines[i].len() - fence.len();
        let needs: Vec<String> = i
            .checked_sub(1)
            .and_then(|previous| {
                lines[previous]
                    .trim()
                    .strip_prefix("<!-- readme-test: needs ")?
                    .strip_suffix("-->")
                    .map(|list| list.split_whitespace().map(str::to_string).collect())
            })
            .unwrap_or_default();
        let mut body = Vec::new();
        i += 1;
        while i < lines.len() && lines[i].trim_start() != "```" {
            body.push((i + 1, lines[i].get(indent..).unwrap_or("").to_string()));
            i += 1;
        }
        i += 1;
        let mut current: Option<Example> = None;
        for (number, line) in body {
            if let Some(command) = line.strip_prefix("$ ") {
                examples.extend(current.take());
                current = Some(Example {
                    line: number,
                    command: command.to_string(),
                    expected: Vec::new(),
                    failure: None,
                    needs: needs.clone(),
                });
            } else if let Some(example) = current.as_mut() {
                if let Some(status) = line.strip_prefix("? ") {
                    example.failure = Some(status.trim().parse().ok());
                } else {
                    example.expected.push(line);
                }
            }
        }
        examples.extend(current);
    }
    examples
}

/// Whether `actual` matches `pattern`, where `[..]` stands for any text.
fn line_matches(pattern: &str, actual: &str) -> bool {
    let mut parts = pattern.split("[..]");
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = actual.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    for (i, part) in parts.iter().enumerate() {
        if i + 1 == parts.len() {
            return rest.ends_with(part);
        }
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.is_empty()
}

/// Whether the lines of `actual` match those of `expected`, where a line `...` stands for any
/// lines.
fn lines_match(expected: &[String], actual: &[&str]) -> bool {
    match expected.split_first() {
        None => actual.is_empty(),
        Some((first, rest)) if first == "..." => {
            (0..=actual.len()).any(|skip| lines_match(rest, &actual[skip..]))
        }
        Some((first, rest)) => actual
            .split_first()
            .is_some_and(|(line, after)| line_matches(first, line) && lines_match(rest, after)),
    }
}

/// Whether what `example` needs is here; `false` (with a message) skips it, unless CI
/// requires it.
fn available(example: &Example) -> bool {
    for need in &example.needs {
        let (present, require) = match need.as_str() {
            "boto3" => (
                Command::new("python3")
                    .args(["-c", "import boto3"])
                    .env("PATH", search_path())
                    .status()
                    .is_ok_and(|s| s.success()),
                "FACEDETECT_REQUIRE_BOTO3",
            ),
            "curl" => (
                Command::new("curl")
                    .arg("--version")
                    .output()
                    .is_ok_and(|o| o.status.success()),
                "FACEDETECT_REQUIRE_BOTO3",
            ),
            "moto" => (
                std::env::split_paths(&search_path()).any(|dir| dir.join("moto_server").is_file()),
                "FACEDETECT_REQUIRE_MOTO",
            ),
            other => panic!("README line {}: unknown need {other:?}", example.line),
        };
        if !present {
            assert!(
                std::env::var_os(require).is_none(),
                "README line {}: {need} is needed and {require} is set",
                example.line
            );
            eprintln!(
                "skipped: README line {} ({}) needs {need}",
                example.line, example.command
            );
            return false;
        }
    }
    true
}

/// PATH with the built `facedetect` first, then the directory of `FACEDETECT_TEST_PYTHON`
/// (a Python with boto3) when set.
fn search_path() -> std::ffi::OsString {
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_facedetect"));
    let mut dirs = vec![binary.parent().unwrap().to_path_buf()];
    if let Some(python) = std::env::var_os("FACEDETECT_TEST_PYTHON")
        && let Some(dir) = PathBuf::from(python).parent()
    {
        dirs.push(dir.to_path_buf());
    }
    dirs.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    std::env::join_paths(dirs).unwrap()
}

fn run(example: &Example) {
    let output = Command::new("bash")
        .args(["-c", &format!("{} 2>&1", example.command)])
        .current_dir(common::crate_dir())
        .env("PATH", search_path())
        .env_remove("FACEDETECT_WEIGHTS")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let actual: Vec<&str> = stdout.lines().collect();
    let status_ok = match example.failure {
        None => output.status.success(),
        Some(None) => !output.status.success(),
        Some(Some(code)) => output.status.code() == Some(code),
    };
    assert!(
        status_ok && lines_match(&example.expected, &actual),
        "README line {}: `{}` exited with {} and printed\n{stdout}\ninstead of\n{}",
        example.line,
        example.command,
        output.status,
        example.expected.join("\n")
    );
}

#[test]
fn the_matcher_understands_the_notation() {
    assert!(line_matches("a[..]c", "abbbc"));
    assert!(line_matches("[..]", ""));
    assert!(!line_matches("a[..]c", "abbbd"));
    assert!(!line_matches("abc", "abcd"));
    let expected: Vec<String> = ["x", "...", "z"].map(String::from).to_vec();
    assert!(lines_match(&expected, &["x", "y", "y", "z"]));
    assert!(lines_match(&expected, &["x", "z"]));
    assert!(!lines_match(&expected, &["x", "y"]));
    let parsed =
        examples("<!-- readme-test: needs moto -->\n  ```console\n  $ a b\n  out\n  ? 2\n  ```\n");
    assert_eq!(parsed.len(), 1);
    assert_eq!(parsed[0].command, "a b");
    assert_eq!(parsed[0].expected, ["out"]);
    assert_eq!(parsed[0].failure, Some(Some(2)));
    assert_eq!(parsed[0].needs, ["moto"]);
}

/// Every console example prints what the README shows. The walkthrough's servers use fixed
/// loopback ports (8000, 8001, 9000, 5000), so the examples run one after another.
#[test]
fn every_console_example_prints_what_the_readme_shows() {
    let examples = examples(&readme());
    assert!(examples.len() >= 4, "{examples:?}");
    let mut ran = 0;
    for example in &examples {
        if available(example) {
            run(example);
            ran += 1;
        }
    }
    println!("ran {ran} of {} README examples", examples.len());
}

/// The curl command the README shows is the one the walkthrough runs, so the walkthrough's
/// output above is what it prints.
#[test]
fn the_readme_curl_example_is_the_one_the_walkthrough_runs() {
    let readme = readme();
    let start = readme
        .find("curl -sS \"http://127.0.0.1:9000/")
        .expect("the README's curl example");
    let end = start + readme[start..].find("\n```").unwrap();
    let curl = &readme[start..end];
    let script = std::fs::read_to_string(common::crate_dir().join("scripts/local-demo")).unwrap();
    assert!(
        script.contains(curl),
        "scripts/local-demo does not run the README's\n{curl}"
    );
}
