//! The documentation's examples, run: every ```` ```console ```` block of README.md,
//! CONTRIBUTING.md and the pages under docs/ is a command (`$ ` lines, run by bash from the
//! repository root with the built `facedetect` first on PATH, stderr merged into stdout) and what it prints, compared line by line in trycmd's notation: `[..]`
//! stands for any text within a line, a line `...` for any lines, and a last line `? failed`
//! (or `? N`) for a non-zero exit status (or that one); without it the command must succeed.
//!
//! A block preceded by `<!-- readme-test: needs curl boto3 moto -->` needs curl, Python's boto3
//! or moto's server: without them it is skipped with a message, unless `FACEDETECT_REQUIRE_BOTO3`
//! (curl, boto3) or `FACEDETECT_REQUIRE_MOTO` is set (CI). The README's curl example must be the one
//! scripts/local-demo runs, so the walkthrough's output shows what that command prints. Every
//! relative link between the pages leads to a file that exists and, with `#anchor`, to one of
//! its headings.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;

/// One ```` ```console ```` block: its command, what it prints, how it exits, what it needs.
#[derive(Debug)]
struct Example {
    /// The page, relative to the repository root, and the line number of the command.
    page: String,
    line: usize,
    command: String,
    expected: Vec<String>,
    /// `None`: success; `Some(None)`: any failure; `Some(Some(n))`: exit status n.
    failure: Option<Option<i32>>,
    needs: Vec<String>,
}

/// The documentation's pages, relative to the repository root, with their text: README.md,
/// CONTRIBUTING.md and every Markdown file under docs/.
fn pages() -> Vec<(String, String)> {
    let root = common::crate_dir();
    let mut names = vec!["README.md".to_string(), "CONTRIBUTING.md".to_string()];
    let mut docs: Vec<String> = std::fs::read_dir(root.join("docs"))
        .into_iter()
        .flatten()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".md"))
        .map(|name| format!("docs/{name}"))
        .collect();
    docs.sort();
    names.extend(docs);
    names
        .into_iter()
        .filter_map(|name| {
            let text = std::fs::read_to_string(root.join(&name)).ok()?;
            Some((name, text))
        })
        .collect()
}

/// The console blocks of `text`, the page `page`; they may be indented (inside a list item).
fn examples(page: &str, text: &str) -> Vec<Example> {
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
                    page: page.to_string(),
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
            other => panic!(
                "{} line {}: unknown need {other:?}",
                example.page, example.line
            ),
        };
        if !present {
            assert!(
                std::env::var_os(require).is_none(),
                "{} line {}: {need} is needed and {require} is set",
                example.page,
                example.line
            );
            eprintln!(
                "skipped: {} line {} ({}) needs {need}",
                example.page, example.line, example.command
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
        "{} line {}: `{}` exited with {} and printed\n{stdout}\ninstead of\n{}",
        example.page,
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
    let parsed = examples(
        "test.md",
        "<!-- readme-test: needs moto -->\n  ```console\n  $ a b\n  out\n  ? 2\n  ```\n",
    );
    assert_eq!(parsed.len(), 1);
    assert_eq!(parsed[0].command, "a b");
    assert_eq!(parsed[0].expected, ["out"]);
    assert_eq!(parsed[0].failure, Some(Some(2)));
    assert_eq!(parsed[0].needs, ["moto"]);
}

/// Every console example prints what its page shows. The walkthrough's servers use fixed
/// loopback ports (8000, 8001, 9000, 5000), so the examples run one after another.
#[test]
fn every_console_example_prints_what_the_page_shows() {
    let examples: Vec<Example> = pages()
        .iter()
        .flat_map(|(page, text)| examples(page, text))
        .collect();
    assert!(examples.len() >= 4, "{examples:?}");
    let mut ran = 0;
    for example in &examples {
        if available(example) {
            run(example);
            ran += 1;
        }
    }
    println!("ran {ran} of {} examples", examples.len());
}

/// The curl command the documentation shows is the one the walkthrough runs, so the
/// walkthrough's output is what it prints.
#[test]
fn the_curl_example_is_the_one_the_walkthrough_runs() {
    let pages = pages();
    let (page, start) = pages
        .iter()
        .find_map(|(_, text)| Some((text, text.find("curl -sS \"http://127.0.0.1:9000/")?)))
        .expect("a page shows the curl example");
    let end = start + page[start..].find("\n```").unwrap();
    let curl = &page[start..end];
    let script = std::fs::read_to_string(common::crate_dir().join("scripts/local-demo")).unwrap();
    assert!(
        script.contains(curl),
        "scripts/local-demo does not run the README's\n{curl}"
    );
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The anchors of a page's headings (outside code blocks).
fn anchors(text: &str) -> Vec<String> {
    let mut in_code = false;
    let mut anchors = Vec::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
        } else if !in_code && let Some(heading) = line.strip_prefix('#') {
            anchors.push(anchor(heading.trim_start_matches('#')));
        }
    }
    anchors
}

/// The targets of the Markdown links `[text](target)` of `text`, outside code.
fn link_targets(text: &str) -> Vec<String> {
    let mut in_code = false;
    let mut targets = Vec::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        let mut rest = line;
        while let Some(at) = rest.find("](") {
            rest = &rest[at + 2..];
            if let Some(end) = rest.find(')') {
                targets.push(rest[..end].to_string());
                rest = &rest[end..];
            }
        }
    }
    targets
}

#[test]
fn the_link_checker_reads_links_and_anchors() {
    assert_eq!(
        anchor(" The `cuda` build: on a GPU (CUDA 13)"),
        "the-cuda-build-on-a-gpu-cuda-13"
    );
    assert_eq!(anchors("# A\n```\n# not\n```\n## B c"), ["a", "b-c"]);
    assert_eq!(
        link_targets("see [a](docs/a.md#x) and [b](#y)\n```\n[c](z)\n```"),
        ["docs/a.md#x", "#y"]
    );
}

/// Every relative link of every page leads to a file of the repository and, with an anchor
/// into a page, to one of its headings.
#[test]
fn every_relative_link_between_the_pages_resolves() {
    let root = common::crate_dir();
    let mut checked = 0;
    for (page, text) in pages() {
        let dir = Path::new(&page).parent().unwrap_or(Path::new(""));
        for target in link_targets(&text) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (path, fragment) = match target.split_once('#') {
                Some((path, fragment)) => (path, Some(fragment)),
                None => (target.as_str(), None),
            };
            let file = if path.is_empty() {
                root.join(&page)
            } else {
                root.join(dir).join(path)
            };
            assert!(file.exists(), "{page}: the link {target} leads nowhere");
            if let Some(fragment) = fragment
                && file.extension().is_some_and(|ext| ext == "md")
            {
                let linked = std::fs::read_to_string(&file).unwrap();
                assert!(
                    anchors(&linked).iter().any(|a| a == fragment),
                    "{page}: the link {target} names no heading of {}",
                    file.display()
                );
            }
            checked += 1;
        }
    }
    assert!(checked > 0);
}
