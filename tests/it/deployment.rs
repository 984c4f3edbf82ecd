//! The deployment files. The Terraform in terraform/ is parsed with hcl-rs and checked for what
//! must hold for the system to run unattended: every queue has a dead-letter queue (or is one)
//! with an alarm on it, failed Lambda invocations have an on-failure destination, IAM policies
//! name the queues, repositories and log groups they act on instead of `*`, the GPU service and
//! its instances can scale to zero, and the worker's stop timeout is above its drain bound. The
//! Lambda build leaves out what only the command line uses. The real linters (`terraform fmt`,
//! checkov; hadolint is in `lint`) run when installed: skipped with a message without them, a
//! failure when `FACEDETECT_REQUIRE_LINTERS=1` (as in CI).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use hcl::eval::{Context, Evaluate};
use hcl::{Block, Body, Expression, Traversal, TraversalOperator, Value};

fn repo_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn terraform_dir() -> PathBuf {
    repo_dir().join("terraform")
}

/// The `.tf` files of one folder, parsed into one body.
fn parse_dir(dir: &Path) -> Body {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "tf"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .tf file in {}", dir.display());
    let mut structures = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let body = hcl::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        structures.extend(body.into_inner());
    }
    Body(structures)
}

fn module(name: &str) -> Body {
    parse_dir(&terraform_dir().join("modules").join(name))
}

fn stage(name: &str) -> Body {
    parse_dir(&terraform_dir().join("stages").join(name))
}

fn module_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(terraform_dir().join("modules"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn labels(block: &Block) -> Vec<&str> {
    block.labels().iter().map(|label| label.as_str()).collect()
}

/// The blocks `kind "type" "name"` of a body (`resource`, `data`), by name.
fn blocks<'a>(body: &'a Body, kind: &str, ty: &str) -> BTreeMap<String, &'a Block> {
    body.blocks()
        .filter(|block| block.identifier() == kind && labels(block).first() == Some(&ty))
        .map(|block| (labels(block)[1].to_string(), block))
        .collect()
}

fn resources<'a>(body: &'a Body, ty: &str) -> BTreeMap<String, &'a Block> {
    blocks(body, "resource", ty)
}

fn one<'a>(body: &'a Body, ty: &str) -> &'a Block {
    let found = resources(body, ty);
    assert_eq!(
        found.len(),
        1,
        "expected one {ty}, found {:?}",
        found.keys()
    );
    found.into_values().next().unwrap()
}

fn attr<'a>(body: &'a Body, key: &str) -> Option<&'a Expression> {
    body.attributes()
        .find(|attribute| attribute.key() == key)
        .map(|attribute| attribute.expr())
}

fn expect_attr<'a>(block: &'a Block, key: &str) -> &'a Expression {
    attr(block.body(), key)
        .unwrap_or_else(|| panic!("{} {:?} has no {key}", block.identifier(), labels(block)))
}

fn nested<'a>(block: &'a Block, identifier: &str) -> Vec<&'a Block> {
    block
        .body()
        .blocks()
        .filter(|inner| inner.identifier() == identifier)
        .collect()
}

fn text(expr: &Expression) -> String {
    expr.to_string()
}

/// `root.a.b` of a traversal as names (`aws_sqs_queue`, `failed`, `arn`).
fn path(traversal: &Traversal) -> Vec<String> {
    let mut names = vec![text(&traversal.expr)];
    for operator in &traversal.operators {
        match operator {
            TraversalOperator::GetAttr(name) => names.push(name.to_string()),
            other => names.push(format!("{other:?}")),
        }
    }
    names
}

/// The resource a reference expression points at: `aws_sqs_queue.failed.arn` gives
/// `("aws_sqs_queue", "failed")`.
fn referenced(expr: &Expression) -> Option<(String, String)> {
    match expr {
        Expression::Traversal(traversal) => {
            let names = path(traversal);
            (names.len() >= 3 && names[0].starts_with("aws_"))
                .then(|| (names[0].clone(), names[1].clone()))
        }
        _ => None,
    }
}

fn number(expr: &Expression) -> f64 {
    match expr {
        Expression::Number(n) => n.as_f64().unwrap(),
        other => panic!("expected a number, found {other}"),
    }
}

/// The default of every variable of a module, as an evaluation context `var.*`.
fn variable_defaults(body: &Body) -> Context<'static> {
    let mut defaults = hcl::Map::new();
    for block in body
        .blocks()
        .filter(|block| block.identifier() == "variable")
    {
        if let Some(default) = attr(block.body(), "default") {
            defaults.insert(labels(block)[0].to_string(), Value::from(default.clone()));
        }
    }
    let mut context = Context::new();
    context.declare_var("var", Value::Object(defaults));
    context
}

fn eval(expr: &Expression, context: &Context) -> Value {
    expr.evaluate(context)
        .unwrap_or_else(|e| panic!("cannot evaluate {expr}: {e}"))
}

fn local<'a>(body: &'a Body, name: &str) -> &'a Expression {
    body.blocks()
        .filter(|block| block.identifier() == "locals")
        .find_map(|block| attr(block.body(), name))
        .unwrap_or_else(|| panic!("no local {name}"))
}

/// The JSON-like object inside `jsonencode(...)`.
fn jsonencoded(expr: &Expression) -> &Expression {
    match expr {
        Expression::FuncCall(call) if call.name.to_string() == "jsonencode" => &call.args[0],
        other => panic!("expected jsonencode(...), found {other}"),
    }
}

fn object_field<'a>(object: &'a Expression, key: &str) -> Option<&'a Expression> {
    match object {
        Expression::Object(fields) => fields
            .iter()
            .find(|(k, _)| text_key(k) == key)
            .map(|(_, v)| v),
        other => panic!("expected an object, found {other}"),
    }
}

fn text_key(key: &hcl::ObjectKey) -> String {
    match key {
        hcl::ObjectKey::Identifier(identifier) => identifier.to_string(),
        hcl::ObjectKey::Expression(Expression::String(s)) => s.clone(),
        hcl::ObjectKey::Expression(other) => text(other),
        _ => unreachable!("ObjectKey has two variants"),
    }
}

fn strings(expr: &Expression) -> Vec<String> {
    match expr {
        Expression::Array(items) => items
            .iter()
            .map(|item| match item {
                Expression::String(s) => s.clone(),
                other => text(other),
            })
            .collect(),
        other => vec![text(other)],
    }
}

/// Queues that receive what failed elsewhere: redrive targets and on-failure destinations.
fn dead_letter_targets(body: &Body) -> Vec<String> {
    let mut targets = Vec::new();
    for queue in resources(body, "aws_sqs_queue").values() {
        if let Some(redrive) = attr(queue.body(), "redrive_policy") {
            let target = object_field(jsonencoded(redrive), "deadLetterTargetArn")
                .expect("redrive_policy without deadLetterTargetArn");
            let (ty, name) = referenced(target).expect("deadLetterTargetArn is not a reference");
            assert_eq!(ty, "aws_sqs_queue");
            targets.push(name);
        }
    }
    for config in resources(body, "aws_lambda_function_event_invoke_config").values() {
        for destination in nested(config, "destination_config") {
            for on_failure in nested(destination, "on_failure") {
                let (ty, name) = referenced(expect_attr(on_failure, "destination"))
                    .expect("on-failure destination is not a reference");
                assert_eq!(ty, "aws_sqs_queue");
                targets.push(name);
            }
        }
    }
    targets
}

#[test]
fn every_queue_has_a_dead_letter_queue_or_is_one_and_those_raise_alarms() {
    let mut queues = 0;
    for name in module_names() {
        let body = module(&name);
        let all = resources(&body, "aws_sqs_queue");
        let targets = dead_letter_targets(&body);
        let alarms = resources(&body, "aws_cloudwatch_metric_alarm");
        for (queue, block) in &all {
            queues += 1;
            let is_target = targets.contains(queue);
            let has_redrive = attr(block.body(), "redrive_policy").is_some();
            assert!(
                is_target != has_redrive,
                "{name}: queue {queue} must either send its failures to a dead-letter queue or \
                 be one (redrive policy: {has_redrive}, dead-letter target: {is_target})"
            );
            assert_eq!(
                attr(block.body(), "sqs_managed_sse_enabled"),
                Some(&Expression::Bool(true)),
                "{name}: queue {queue} is not encrypted"
            );
            if is_target {
                let alarmed = alarms.values().any(|alarm| {
                    let on_queue = attr(alarm.body(), "dimensions")
                        .and_then(|d| object_field(d, "QueueName"))
                        .and_then(referenced)
                        == Some(("aws_sqs_queue".to_string(), queue.clone()));
                    on_queue
                        && text(expect_attr(alarm, "metric_name"))
                            == "\"ApproximateNumberOfMessagesVisible\""
                        && text(expect_attr(alarm, "comparison_operator"))
                            == "\"GreaterThanThreshold\""
                        && number(expect_attr(alarm, "threshold")) == 0.0
                        && !strings(expect_attr(alarm, "alarm_actions")).is_empty()
                });
                assert!(alarmed, "{name}: no alarm when {queue} is not empty");
            }
        }
        for block in all.values() {
            if let Some(redrive) = attr(block.body(), "redrive_policy") {
                let redrive = jsonencoded(redrive);
                let receives = object_field(redrive, "maxReceiveCount").unwrap();
                let context = variable_defaults(&body);
                let receives = eval(receives, &context);
                assert!(
                    matches!(receives, Value::Number(ref n) if n.as_f64().unwrap() >= 2.0),
                    "{name}: a message should get more than one try, maxReceiveCount {receives}"
                );
                // A moved message keeps its enqueue time: the dead-letter queue must keep it longer.
                let (_, target) =
                    referenced(object_field(redrive, "deadLetterTargetArn").unwrap()).unwrap();
                let retention = |b: &Block| number(expect_attr(b, "message_retention_seconds"));
                assert!(retention(all[&target]) > retention(block));
            }
        }
    }
    assert!(queues >= 3, "only {queues} queues found");
}

#[test]
fn failed_lambda_invocations_go_to_an_on_failure_destination_the_role_may_write() {
    let body = module("lambda");
    let function = one(&body, "aws_lambda_function");
    let config = one(&body, "aws_lambda_function_event_invoke_config");
    assert_eq!(
        text(expect_attr(config, "function_name")),
        "aws_lambda_function.this.function_name"
    );
    let context = variable_defaults(&body);
    let retries = eval(expect_attr(config, "maximum_retry_attempts"), &context);
    let age = eval(
        expect_attr(config, "maximum_event_age_in_seconds"),
        &context,
    );
    assert!(matches!(retries, Value::Number(ref n) if (0.0..=2.0).contains(&n.as_f64().unwrap())));
    assert!(matches!(age, Value::Number(ref n) if (60.0..=21600.0).contains(&n.as_f64().unwrap())));

    let targets = dead_letter_targets(&body);
    assert_eq!(targets.len(), 1, "one on-failure destination: {targets:?}");
    let destination = format!("aws_sqs_queue.{}.arn", targets[0]);

    // The function's role may send to it (Lambda delivers the record with that role).
    let role = text(expect_attr(function, "role"));
    assert_eq!(role, "aws_iam_role.this.arn");
    let statements = policy_statements(&body);
    assert!(
        statements
            .iter()
            .any(|s| s.actions == ["sqs:SendMessage"] && s.resources == [destination.clone()]),
        "no statement lets the function send to {destination}"
    );

    // Memory, timeout and concurrency are set, and the timeout fits the backfill queue.
    assert!(attr(function.body(), "reserved_concurrent_executions").is_some());
    let memory = eval(expect_attr(function, "memory_size"), &context);
    let timeout = eval(expect_attr(function, "timeout"), &context);
    let memory = memory.as_number().unwrap().as_f64().unwrap();
    let timeout = timeout.as_number().unwrap().as_f64().unwrap();
    assert!((128.0..=10240.0).contains(&memory));
    assert!((1.0..=900.0).contains(&timeout));
    let backfill = module("backfill");
    let visibility = eval(
        &"var.visibility_timeout".parse::<Expression>().unwrap(),
        &variable_defaults(&backfill),
    );
    assert!(
        visibility.as_number().unwrap().as_f64().unwrap() >= timeout,
        "the backfill queue's visibility timeout must cover the function's timeout"
    );

    let mapping = one(&body, "aws_lambda_event_source_mapping");
    assert_eq!(
        strings(expect_attr(mapping, "function_response_types")),
        ["ReportBatchItemFailures"]
    );
}

/// One statement of a `data "aws_iam_policy_document"`, dynamic ones included.
#[derive(Debug)]
struct Statement {
    document: String,
    /// A statement with principals belongs to a resource's own policy (a repository policy, a
    /// trust policy): it applies to that resource and names no other.
    resource_policy: bool,
    actions: Vec<String>,
    resources: Vec<String>,
    resource_exprs: Vec<Expression>,
}

fn statement(document: &str, block: &Block) -> Statement {
    let body = match block.identifier() {
        "statement" => block.body(),
        "dynamic" => nested(block, "content")[0].body(),
        other => panic!("unexpected block {other}"),
    };
    let actions = attr(body, "actions").map(strings).unwrap_or_default();
    let principals = body.blocks().any(|b| b.identifier() == "principals");
    let resource_exprs = match attr(body, "resources") {
        Some(Expression::Array(items)) => items.clone(),
        Some(other) => vec![other.clone()],
        None => Vec::new(),
    };
    Statement {
        document: document.to_string(),
        resource_policy: principals,
        actions,
        resources: resource_exprs.iter().map(text).collect(),
        resource_exprs,
    }
}

fn policy_statements(body: &Body) -> Vec<Statement> {
    blocks(body, "data", "aws_iam_policy_document")
        .iter()
        .flat_map(|(name, document)| {
            document
                .body()
                .blocks()
                .filter(|b| {
                    b.identifier() == "statement"
                        || (b.identifier() == "dynamic" && labels(b) == ["statement"])
                })
                .map(|b| statement(name, b))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Whether a resource names one resource of this configuration (a reference, or a template that
/// starts with one, such as `"${aws_cloudwatch_log_group.this.arn}:*"`), or is a loop over them.
fn names_a_resource(expr: &Expression) -> bool {
    match expr {
        Expression::Traversal(traversal) => {
            let names = path(traversal);
            names[0].starts_with("aws_")
                || names[0] == "data"
                || names[0] == "statement"
                || names[0] == "var"
        }
        Expression::TemplateExpr(template) => {
            let source = template.to_string();
            let first = source.trim_start_matches('"');
            first.starts_with("${aws_") || first.starts_with("${data.aws_")
        }
        Expression::ForExpr(for_expr) => names_a_resource(&for_expr.collection_expr),
        _ => false,
    }
}

#[test]
fn queue_registry_and_log_permissions_name_their_resources() {
    let mut checked = 0;
    for name in module_names() {
        let body = module(&name);
        // Every policy attached anywhere is one of the documents checked below.
        for ty in ["aws_iam_role_policy", "aws_iam_policy"] {
            for (policy, block) in resources(&body, ty) {
                let source = text(expect_attr(block, "policy"));
                assert!(
                    source.starts_with("data.aws_iam_policy_document.")
                        && source.ends_with(".json"),
                    "{name}: {ty}.{policy} is not built from a policy document: {source}"
                );
            }
        }
        assert!(
            resources(&body, "aws_iam_role_policy_attachment").is_empty(),
            "{name}: managed policies (AmazonEC2ContainerServiceforEC2Role and the like) grant \
             ECR and log actions on \"*\""
        );
        for statement in policy_statements(&body) {
            let guarded: Vec<&String> = statement
                .actions
                .iter()
                .filter(|a| ["sqs:", "ecr:", "logs:"].iter().any(|p| a.starts_with(p)))
                .collect();
            for action in &statement.actions {
                assert!(
                    !action.contains('*'),
                    "{name}/{}: wildcard action {action}",
                    statement.document
                );
            }
            if guarded.is_empty() {
                continue;
            }
            checked += 1;
            // ecr:GetAuthorizationToken has no resource-level permissions: "*" is the only value
            // AWS accepts, so it stands alone in its statement.
            if statement.actions == ["ecr:GetAuthorizationToken"] {
                assert_eq!(statement.resources, ["\"*\""]);
                continue;
            }
            if statement.resource_policy {
                assert!(
                    statement.resource_exprs.is_empty(),
                    "{name}/{}: a resource policy applies to its own resource",
                    statement.document
                );
                continue;
            }
            assert!(
                !statement.resource_exprs.is_empty(),
                "{name}/{}: {guarded:?} without resources",
                statement.document
            );
            for (resource, source) in statement.resource_exprs.iter().zip(&statement.resources) {
                assert!(
                    names_a_resource(resource),
                    "{name}/{}: {guarded:?} on {source}, not on a named resource",
                    statement.document
                );
            }
        }
    }
    assert!(checked >= 6, "only {checked} statements checked");
}

#[test]
fn the_gpu_service_and_its_instances_scale_to_zero() {
    let body = module("backfill");
    let context = variable_defaults(&body);

    let group = one(&body, "aws_autoscaling_group");
    assert_eq!(number(expect_attr(group, "min_size")), 0.0);
    assert_eq!(
        attr(group.body(), "protect_from_scale_in"),
        Some(&Expression::Bool(true))
    );
    let provider = one(&body, "aws_ecs_capacity_provider");
    let asg = nested(provider, "auto_scaling_group_provider")[0];
    assert_eq!(
        text(expect_attr(asg, "managed_termination_protection")),
        "\"ENABLED\""
    );
    let scaling = nested(asg, "managed_scaling")[0];
    assert_eq!(text(expect_attr(scaling, "status")), "\"ENABLED\"");

    // The AMI is ECS's GPU-optimised Amazon Linux 2023, looked up from its public parameter.
    let ami = blocks(&body, "data", "aws_ssm_parameter");
    assert_eq!(
        text(expect_attr(ami["gpu_ami"], "name")),
        "\"/aws/service/ecs/optimized-ami/amazon-linux-2023/gpu/recommended/image_id\""
    );

    let target = one(&body, "aws_appautoscaling_target");
    assert_eq!(number(expect_attr(target, "min_capacity")), 0.0);
    assert_eq!(
        text(expect_attr(target, "scalable_dimension")),
        "\"ecs:service:DesiredCount\""
    );

    // A policy that sets the count to 0, fired by an alarm on an empty queue with nothing in
    // flight (an idle queue stops reporting, which counts as empty).
    let policies = resources(&body, "aws_appautoscaling_policy");
    let (to_zero, _) = policies
        .iter()
        .find(|(_, policy)| {
            let config = nested(policy, "step_scaling_policy_configuration")[0];
            text(expect_attr(config, "adjustment_type")) == "\"ExactCapacity\""
                && nested(config, "step_adjustment")
                    .iter()
                    .any(|step| number(expect_attr(step, "scaling_adjustment")) == 0.0)
        })
        .expect("no scaling policy sets the worker count to 0");
    let policy_arn = format!("aws_appautoscaling_policy.{to_zero}.arn");
    let alarms = resources(&body, "aws_cloudwatch_metric_alarm");
    let idle = alarms
        .values()
        .find(|alarm| strings(expect_attr(alarm, "alarm_actions")) == [policy_arn.clone()])
        .expect("no alarm triggers the scale-to-zero policy");
    assert_eq!(
        text(expect_attr(idle, "comparison_operator")),
        "\"LessThanOrEqualToThreshold\""
    );
    assert_eq!(number(expect_attr(idle, "threshold")), 0.0);
    assert_eq!(
        text(expect_attr(idle, "treat_missing_data")),
        "\"breaching\""
    );
    let metrics: Vec<String> = nested(idle, "metric_query")
        .iter()
        .flat_map(|query| nested(query, "metric"))
        .map(|metric| text(expect_attr(metric, "metric_name")))
        .collect();
    assert_eq!(
        metrics.len(),
        2,
        "the idle alarm counts visible and in-flight messages"
    );
    assert!(metrics.contains(&"\"ApproximateNumberOfMessagesVisible\"".to_string()));
    assert!(metrics.contains(&"\"ApproximateNumberOfMessagesNotVisible\"".to_string()));

    // The service starts at zero and leaves the count to the policies.
    let service = one(&body, "aws_ecs_service");
    assert_eq!(number(expect_attr(service, "desired_count")), 0.0);
    let lifecycle = nested(service, "lifecycle")[0];
    assert_eq!(
        strings(expect_attr(lifecycle, "ignore_changes")),
        ["desired_count"]
    );
    let max = eval(expect_attr(target, "max_capacity"), &context);
    assert!(max.as_number().unwrap().as_f64().unwrap() >= 1.0);
}

#[test]
fn the_worker_task_runs_the_contract_command_on_a_gpu_and_stops_after_draining() {
    let body = module("backfill");
    let context = variable_defaults(&body);
    let task = one(&body, "aws_ecs_task_definition");
    let containers = jsonencoded(expect_attr(task, "container_definitions"));
    let Expression::Array(containers) = containers else {
        panic!("container_definitions is not a list")
    };
    assert_eq!(containers.len(), 1);
    let worker = &containers[0];

    // `facedetect worker --queue-url URL [--detector hog|cnn] [--upsample N] [--device
    // cpu|cuda] [--weights DIR|hf://...]`, the queue URL from FACEDETECT_QUEUE_URL.
    let command = strings(object_field(worker, "command").unwrap());
    let flags: Vec<&String> = command.iter().filter(|a| a.starts_with("--")).collect();
    for flag in &flags {
        assert!(
            [
                "--queue-url",
                "--detector",
                "--upsample",
                "--device",
                "--weights"
            ]
            .contains(&flag.as_str()),
            "{flag} is not part of the worker's command line"
        );
    }
    let device = command.iter().position(|a| a == "--device").unwrap();
    assert_eq!(command[device + 1], "cuda");
    let Expression::Array(environment) = object_field(worker, "environment").unwrap() else {
        panic!("environment is not a list")
    };
    let queue_url = environment
        .iter()
        .find(|entry| text(object_field(entry, "name").unwrap()) == "\"FACEDETECT_QUEUE_URL\"")
        .and_then(|entry| object_field(entry, "value"))
        .map(text);
    assert_eq!(queue_url.as_deref(), Some("aws_sqs_queue.backfill.url"));

    let gpu = text(object_field(worker, "resourceRequirements").unwrap());
    assert!(gpu.contains("\"GPU\""), "{gpu}");

    // ECS waits stopTimeout after SIGTERM before SIGKILL: above the worker's drain bound and
    // within ECS's limit of 120 s.
    let drain = eval(
        &"var.worker_drain_seconds".parse::<Expression>().unwrap(),
        &context,
    );
    let drain = drain.as_number().unwrap().as_f64().unwrap();
    let stop = text(object_field(worker, "stopTimeout").unwrap());
    assert_eq!(stop, "local.stop_timeout");
    let stop = eval(local(&body, "stop_timeout"), &context);
    let stop = stop.as_number().unwrap().as_f64().unwrap();
    assert_eq!(
        drain, 90.0,
        "the worker's drain bound agreed with its author"
    );
    assert!(stop > drain && stop <= 120.0, "stop timeout {stop}");

    let logs = object_field(worker, "logConfiguration").unwrap();
    assert_eq!(
        text(object_field(logs, "logDriver").unwrap()),
        "\"awslogs\""
    );
}

#[test]
fn logs_are_kept_for_a_while_and_registries_expire_old_images() {
    let mut groups = 0;
    for name in module_names() {
        let body = module(&name);
        let context = variable_defaults(&body);
        for (group, block) in resources(&body, "aws_cloudwatch_log_group") {
            groups += 1;
            let days = eval(expect_attr(block, "retention_in_days"), &context);
            let days = days.as_number().unwrap().as_f64().unwrap();
            assert!(
                (1.0..=365.0).contains(&days),
                "{name}: {group} keeps logs {days} days"
            );
        }
    }
    assert_eq!(groups, 2, "the function's and the worker's log groups");

    let registry = module("registry");
    let repositories = one(&registry, "aws_ecr_repository");
    let lifecycle = one(&registry, "aws_ecr_lifecycle_policy");
    assert_eq!(
        text(expect_attr(lifecycle, "for_each")),
        "aws_ecr_repository.this"
    );
    let names = eval(
        &"var.repositories".parse::<Expression>().unwrap(),
        &variable_defaults(&registry),
    );
    let Value::Object(names) = names else {
        panic!()
    };
    assert_eq!(
        names.keys().collect::<Vec<_>>(),
        ["lambda", "worker"],
        "one repository per image"
    );
    assert_eq!(
        text(expect_attr(repositories, "for_each")),
        "var.repositories"
    );

    // Lambda pulls with the repository's policy: its pattern must match the function's name.
    let pattern = eval(
        &"var.lambda_function_name_pattern"
            .parse::<Expression>()
            .unwrap(),
        &variable_defaults(&registry),
    );
    let Value::String(pattern) = pattern else {
        panic!()
    };
    let lambda = module("lambda");
    let Expression::TemplateExpr(name) = local(&lambda, "function_name") else {
        panic!()
    };
    let name = name.to_string().replace("${var.stage}", "staging");
    let (prefix, suffix) = pattern.split_once('*').unwrap();
    let name = name.trim_matches('"');
    assert!(
        name.starts_with(prefix) && name.ends_with(suffix),
        "{pattern} does not match {name}"
    );
}

#[test]
fn stages_have_the_originals_shape() {
    for name in ["staging", "production"] {
        let body = stage(name);
        let terraform = body
            .blocks()
            .find(|b| b.identifier() == "terraform")
            .unwrap();
        let backend = nested(terraform, "backend")[0];
        assert_eq!(labels(backend), ["s3"]);
        assert_eq!(
            text(expect_attr(backend, "key")),
            format!("\"concrexit-facedetection/{name}.tfstate\"")
        );
        let provider = body
            .blocks()
            .find(|b| b.identifier() == "provider")
            .unwrap();
        assert_eq!(text(expect_attr(provider, "profile")), "var.aws_profile");
        assert_eq!(text(expect_attr(provider, "region")), "var.aws_region");
        let tags = local(&body, "tags");
        for key in ["Category", "Owner", "Environment", "Terraform"] {
            assert!(object_field(tags, key).is_some(), "{name}: tag {key}");
        }
        let modules: Vec<&str> = body
            .blocks()
            .filter(|b| b.identifier() == "module")
            .map(|b| labels(b)[0])
            .collect();
        assert_eq!(modules, ["alerts", "backfill", "lambda"]);
        let outputs: Vec<&str> = body
            .blocks()
            .filter(|b| b.identifier() == "output")
            .map(|b| labels(b)[0])
            .collect();
        for output in ["lambda_arn", "backfill_queue_url"] {
            assert!(outputs.contains(&output), "{name}: output {output}");
        }
    }
    let shared = stage("shared");
    assert!(
        shared
            .blocks()
            .any(|b| b.identifier() == "output" && labels(b) == ["repository_urls"])
    );
}

/// Every `checkov:skip` says why.
#[test]
fn every_skipped_checkov_check_gives_a_reason() {
    let mut skips = 0;
    let mut stack = vec![terraform_dir()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|ext| ext != "tf") {
                continue;
            }
            for line in std::fs::read_to_string(&path).unwrap().lines() {
                let Some((_, skip)) = line.split_once("checkov:skip=") else {
                    continue;
                };
                skips += 1;
                let (id, reason) = skip
                    .split_once(':')
                    .unwrap_or_else(|| panic!("{}: skip without a reason", path.display()));
                assert!(id.starts_with("CKV"), "{}: {id}", path.display());
                assert!(
                    reason.split_whitespace().count() >= 6,
                    "{}: {id} needs a reason, not {reason:?}",
                    path.display()
                );
            }
        }
    }
    assert!(skips > 0);
}

/// The Lambda binary's build (`--no-default-features --features lambda`, as Dockerfile.cpu and
/// scripts/build-lambda-zip.sh build it) carries only what the function needs: no HTTP server,
/// progress bar, argument parser, SQS client or CUDA.
#[test]
fn the_lambda_build_leaves_out_what_only_the_command_uses() {
    let output = Command::new(option_env!("CARGO").unwrap_or("cargo"))
        .current_dir(repo_dir())
        .args(["tree", "--locked", "--edges", "normal", "--prefix", "none"])
        .args([
            "--format",
            "{p}",
            "--no-default-features",
            "--features",
            "lambda",
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let tree = String::from_utf8(output.stdout).unwrap();
    let packages: Vec<&str> = tree
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    for needed in [
        "lambda_runtime",
        "aws_lambda_events",
        "candle-core",
        "reqwest",
    ] {
        assert!(packages.contains(&needed), "{needed} missing: {packages:?}");
    }
    for left_out in [
        "axum",
        "indicatif",
        "clap",
        "aws-sdk-sqs",
        "aws-config",
        "cudarc",
    ] {
        assert!(
            !packages.contains(&left_out),
            "the Lambda build depends on {left_out}"
        );
    }
}

/// Finds a linter on PATH; `None` (with a message) when it is absent and not required.
fn linter(program: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|candidate| candidate.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var("FACEDETECT_REQUIRE_LINTERS").as_deref() != Ok("1"),
            "{program} not found on PATH, and FACEDETECT_REQUIRE_LINTERS=1"
        );
        eprintln!("SKIPPED: {program} not found on PATH (.ci/run installs it)");
    }
    found
}

fn run(command: &mut Command) {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn terraform_files_are_formatted() {
    let Some(terraform) = linter("terraform") else {
        return;
    };
    run(Command::new(terraform)
        .args(["fmt", "-check", "-recursive", "-diff"])
        .arg(terraform_dir())
        .env("CHECKPOINT_DISABLE", "1"));
}

#[test]
fn checkov_passes_on_the_terraform() {
    let Some(checkov) = linter("checkov") else {
        return;
    };
    run(Command::new(checkov)
        .args([
            "--framework",
            "terraform",
            "--quiet",
            "--compact",
            "--skip-download",
        ])
        .arg("-d")
        .arg(terraform_dir()));
}
