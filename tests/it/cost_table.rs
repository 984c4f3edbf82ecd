//! The README's cost and capacity tables are what `scripts/cost-table` prints from the committed
//! bench results, and the script's assumptions about the deployment are the Terraform's. Needs
//! python3: skipped with a message without it, a failure when FACEDETECT_REQUIRE_LINTERS is set
//! (as in CI).

use std::path::{Path, PathBuf};
use std::process::Command;

const BEGIN: &str = "<!-- cost-table: begin (scripts/cost-table) -->\n";
const END: &str = "<!-- cost-table: end -->";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `scripts/cost-table ARGS` run by python3, or `None` (with a message) without python3.
fn cost_table(args: &[&str]) -> Option<String> {
    let output = match Command::new("python3")
        .arg(repo().join("scripts/cost-table"))
        .args(args)
        .output()
    {
        Ok(output) => output,
        Err(error) => {
            assert!(
                std::env::var_os("FACEDETECT_REQUIRE_LINTERS").is_none(),
                "python3: {error}"
            );
            eprintln!("SKIPPED: python3 is not on PATH ({error})");
            return None;
        }
    };
    assert!(
        output.status.success(),
        "scripts/cost-table {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Some(String::from_utf8(output.stdout).unwrap())
}

fn read(path: impl AsRef<Path>) -> String {
    let path: PathBuf = repo().join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn the_readmes_cost_tables_are_what_the_script_prints() {
    let Some(printed) = cost_table(&[]) else {
        return;
    };
    let readme = read("README.md");
    let start = readme.find(BEGIN).expect("README has no cost-table block") + BEGIN.len();
    let end = start
        + readme[start..]
            .find(END)
            .expect("the cost-table block has no end");
    assert_eq!(
        &readme[start..end],
        printed,
        "README's cost tables differ from scripts/cost-table's output: regenerate them"
    );
    // Inside the Deployment section's "Cost and capacity".
    let section = readme.find("### Cost and capacity").unwrap();
    assert!(section < start && start < readme.find("\n## Speed").unwrap());

    // What is not measured says so: every GPU figure is assumed until measured.
    let gpu: serde_json::Value = serde_json::from_str(&read("benches/results/gpu.json")).unwrap();
    let assumed = ["boot_minutes", "image_pull_minutes", "usd_per_hour"]
        .iter()
        .map(|key| &gpu[key])
        .chain([&gpu["hog"]["photos_per_s"], &gpu["cnn"]["photos_per_s"]])
        .filter(|figure| figure["assumed"] == serde_json::Value::Bool(true))
        .count();
    if assumed > 0 {
        assert!(printed.contains("(assumed)"));
    }
    for figure in [&gpu["hog"]["photos_per_s"], &gpu["cnn"]["photos_per_s"]] {
        if figure["assumed"] == serde_json::Value::Bool(true) {
            let value = figure["value"].as_f64().unwrap();
            assert!(
                printed.contains(&format!("| {value} (assumed) |")),
                "the GPU throughput {value} is not marked assumed"
            );
        }
    }
}

#[test]
fn the_bench_results_are_the_readmes_speed_figures() {
    let cpu: serde_json::Value = serde_json::from_str(&read("benches/results/cpu.json")).unwrap();
    let readme = read("README.md");
    let speed = &readme[readme.find("\n## Speed\n").unwrap()..];
    let speed = &speed[..speed[1..].find("\n## ").map_or(speed.len(), |i| i + 1)];
    let row = |label: &str| -> &str {
        speed
            .lines()
            .find(|line| line.starts_with('|') && line.contains(label))
            .unwrap_or_else(|| panic!("the Speed table has no row {label:?}"))
    };
    let value = |path: &[&str]| {
        let mut figure = &cpu;
        for key in path {
            figure = &figure[key];
        }
        figure["value"].as_f64().unwrap()
    };
    // "this project" is the fourth column of the Speed table.
    let cell = |line: &str| line.split('|').map(str::trim).nth(4).unwrap().to_string();
    let lines: Vec<&str> = speed.lines().collect();
    let after = |label: &str, offset: usize| -> String {
        let index = lines.iter().position(|l| l.contains(label)).unwrap();
        cell(lines[index + offset])
    };
    assert_eq!(
        after("default path (HOG", 1),
        format!("{}", value(&["hog", "cpu_s_per_photo"]))
    );
    assert_eq!(
        after("default path (HOG", 2),
        format!("{} MiB", value(&["hog", "peak_mib"]))
    );
    assert_eq!(
        cell(row("same, one core")),
        format!("{}", value(&["hog", "cpu_s_per_photo_one_core"]))
    );
    assert_eq!(
        after("CNN detector", 1),
        format!("{} s", value(&["cnn", "cpu_s_per_photo"]))
    );
    assert_eq!(
        after("CNN detector", 2),
        format!("{} MiB", value(&["cnn", "peak_mib"]))
    );
    assert_eq!(
        cell(row("worker (HOG")),
        format!("{}", value(&["worker", "photos_per_s"]))
    );
}

/// The default of `variable` in the HCL of a folder of terraform/, as its source text.
fn default_of(folder: &str, variable: &str) -> String {
    let dir = repo().join("terraform").join(folder);
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|ext| ext != "tf") {
            continue;
        }
        let body = hcl::parse(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for block in body.blocks() {
            if block.identifier() == "variable"
                && block.labels().first().map(|l| l.as_str()) == Some(variable)
            {
                let default = block
                    .body()
                    .attributes()
                    .find(|a| a.key() == "default")
                    .unwrap_or_else(|| panic!("{folder}: {variable} has no default"));
                return default.expr().to_string();
            }
        }
    }
    panic!("{folder}: no variable {variable}")
}

/// An argument of a stage's module block, as source text.
fn module_argument(stage: &str, module: &str, key: &str) -> String {
    let text = read(format!("terraform/stages/{stage}/main.tf"));
    let body = hcl::parse(&text).unwrap();
    let block = body
        .blocks()
        .find(|b| b.identifier() == "module" && b.labels()[0].as_str() == module)
        .unwrap();
    block
        .body()
        .attributes()
        .find(|a| a.key() == key)
        .unwrap_or_else(|| panic!("{stage}: module {module} has no {key}"))
        .expr()
        .to_string()
}

#[test]
fn the_cost_tables_assume_what_the_terraform_deploys() {
    let Some(printed) = cost_table(&["--parameters"]) else {
        return;
    };
    let parameters: serde_json::Value = serde_json::from_str(&printed).unwrap();
    let number = |key: &str| parameters[key].as_f64().unwrap().to_string();
    assert_eq!(
        default_of("modules/lambda", "memory_size"),
        number("lambda_memory_mb")
    );
    assert_eq!(
        module_argument("production", "lambda", "event_source_max_concurrency"),
        number("backfill_lambda_concurrency")
    );
    assert_eq!(
        default_of("modules/gpu_workers", "idle_minutes"),
        number("idle_minutes")
    );
    assert_eq!(
        default_of("modules/gpu_workers", "instance_type"),
        format!("\"{}\"", parameters["instance_type"].as_str().unwrap())
    );
    let gpu: serde_json::Value = serde_json::from_str(&read("benches/results/gpu.json")).unwrap();
    assert_eq!(gpu["instance_type"], parameters["instance_type"]);
    // A message holds at most 20 sources (facedetect enqueue's default), as an invocation.
    assert_eq!(number("photos_per_invocation"), "20");
    assert!(read("README.md").contains("`--sources-per-message` sources (default 20"));
}
