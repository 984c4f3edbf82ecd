//! The deployment files. The Terraform in terraform/ is parsed with hcl-rs and checked for what
//! must hold for the system to run unattended: every queue has a dead-letter queue (or is one)
//! with an alarm on it, failed Lambda invocations have an on-failure destination, IAM policies
//! name the queues, repositories and log groups they act on instead of `*`, the GPU service and
//! its instances can scale to zero, and the worker's stop timeout is above its drain bound. Then
//! what a first apply on the original's account needs: the original's resources imported, VPC
//! and subnets given (no default VPC) with HTTPS-only egress, the GPU quota and instance type
//! checked at plan time, one repository's main branch trusted, spot draining allowed on container
//! instances; and what it costs: the scaling simulated minute by minute from the alarms and
//! policies (never in while messages remain), every alarm's boundary, the worker's memory budgets
//! from the task, the Lambda concurrency split, the registry's lifecycle simulated over a year of
//! pushes. The images' contexts, the worker image's compute capability and stripped binary, the
//! workflows' order and Terraform version. The Lambda build leaves out what only the command
//! line uses. The real linters (`terraform fmt`, checkov; hadolint is in `lint`) run when
//! installed: skipped with a message without them, a failure when `FACEDETECT_REQUIRE_LINTERS=1`
//! (as in CI).

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
    // Where the function consumes the backfill queue, its visibility timeout is at least 6
    // times the function's timeout (AWS's advice for an event source mapping): each stage
    // passes both from one local, and the mapping checks it at plan time.
    let mapping = one(&body, "aws_lambda_event_source_mapping");
    assert!(
        preconditions(mapping)
            .iter()
            .any(|(condition, _)| condition
                == "var.event_source.visibility_timeout >= 6 * var.timeout"),
        "{:?}",
        preconditions(mapping)
    );
    for name in ["staging", "production"] {
        let stage_body = stage(name);
        let call = |label: &str| {
            *stage_body
                .blocks()
                .filter(|b| b.identifier() == "module" && labels(b) == [label])
                .collect::<Vec<_>>()
                .first()
                .unwrap()
        };
        assert_eq!(
            text(expect_attr(call("lambda"), "timeout")),
            "local.lambda_timeout"
        );
        assert_eq!(
            text(expect_attr(call("backfill"), "visibility_timeout")),
            "var.backfill_on_lambda ? 6 * local.lambda_timeout : null",
            "{name}"
        );
        let lambda_timeout = number(local(&stage_body, "lambda_timeout"));
        assert!((1.0..=900.0).contains(&lambda_timeout));
        // Without the function on the queue, the module's default suits the worker.
        assert!(
            default_number(&module("backfill"), "visibility_timeout") >= lambda_timeout,
            "{name}"
        );
    }

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
    let body = module("gpu_workers");
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
    // An idle queue stops reporting: its counts are filled with 0 in the expression, and a
    // minute with no data at all (no worker reported either) is not idle but done.
    assert_eq!(
        text(expect_attr(idle, "treat_missing_data")),
        "\"notBreaching\""
    );
    let expression = nested(idle, "metric_query")
        .iter()
        .find_map(|query| attr(query.body(), "expression"))
        .map(text)
        .expect("the idle alarm has no expression");
    for id in ["FILL(visible, 0)", "FILL(in_flight, 0)", "${local.tasks}"] {
        assert!(expression.contains(id), "{expression}");
    }
    assert_eq!(
        unquote(local(&body, "tasks")),
        "FILL(FILL(tasks, REPEAT), 0)"
    );
    // Its metrics: the scaling metrics, visible, in flight and the service's task count.
    let Expression::Object(metrics) = local(&body, "scaling_metrics") else {
        panic!("scaling_metrics is not an object")
    };
    let names: Vec<String> = metrics
        .values()
        .map(|m| unquote(object_field(m, "metric_name").unwrap()))
        .collect();
    assert_eq!(
        names,
        [
            "ApproximateNumberOfMessagesVisible",
            "ApproximateNumberOfMessagesNotVisible",
            "DesiredTaskCount"
        ]
    );

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
    let body = module("gpu_workers");
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
    assert_eq!(queue_url.as_deref(), Some("var.queue.url"));

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
        assert_eq!(modules, ["alerts", "backfill", "gpu_workers", "lambda"]);
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

// ---------------------------------------------------------------------------------------------
// A first apply on the original's account, scaling, alarms, budgets, concurrency, the registry's
// lifecycle, the images and CI.

/// The names the original deployment (svthalia/concrexit-facedetection-lambda) owns in the
/// account: its ECR repository (made by hand), and per stage its function, log group, role
/// and logging policy (in its Terraform state).
const ORIGINAL_REPOSITORY: &str = "concrexit/facedetection-lambda";

fn original_function(stage: &str) -> String {
    format!("concrexit-{stage}-facedetection-lambda")
}

/// The `import` blocks of a stage, as (to, id).
fn imports(body: &Body) -> Vec<(String, String)> {
    body.blocks()
        .filter(|block| block.identifier() == "import")
        .map(|block| {
            let Expression::String(id) = expect_attr(block, "id") else {
                panic!("import id is not a literal string")
            };
            (text(expect_attr(block, "to")), id.clone())
        })
        .collect()
}

/// A string template such as `"concrexit-${var.stage}-facedetection-lambda"` with `var.stage`
/// set.
fn template_for_stage(expr: &Expression, stage: &str) -> String {
    let Expression::TemplateExpr(template) = expr else {
        panic!("expected a template, found {expr}")
    };
    template
        .to_string()
        .trim_matches('"')
        .replace("${var.stage}", stage)
}

fn readme() -> String {
    std::fs::read_to_string(repo_dir().join("README.md")).unwrap()
}

/// The text of one `## ` section of the README, its subsections included.
fn readme_section(title: &str) -> String {
    let readme = readme();
    let start = readme
        .find(&format!("\n## {title}\n"))
        .unwrap_or_else(|| panic!("README has no section {title}"));
    let rest = &readme[start + 1..];
    let end = rest[3..].find("\n## ").map_or(rest.len(), |i| i + 3);
    rest[..end].to_string()
}

fn position(haystack: &str, needle: &str) -> usize {
    haystack
        .find(needle)
        .unwrap_or_else(|| panic!("{needle:?} not found"))
}

#[test]
fn what_the_original_owns_is_imported_before_the_first_apply() {
    // The Lambda image's repository, adopted by the shared stage.
    let registry = module("registry");
    let Value::Object(repositories) = eval(
        &"var.repositories".parse::<Expression>().unwrap(),
        &variable_defaults(&registry),
    ) else {
        panic!()
    };
    assert_eq!(
        repositories["lambda"],
        Value::from(ORIGINAL_REPOSITORY),
        "the Lambda image keeps the original's repository"
    );
    assert_eq!(
        imports(&stage("shared")),
        [(
            "module.registry.aws_ecr_repository.this[\"lambda\"]".to_string(),
            ORIGINAL_REPOSITORY.to_string()
        )]
    );

    // Each stage's function and log group, under the names the lambda module gives them.
    let lambda = module("lambda");
    assert!(resources(&lambda, "aws_lambda_function").contains_key("this"));
    assert!(resources(&lambda, "aws_cloudwatch_log_group").contains_key("this"));
    for name in ["staging", "production"] {
        let function = template_for_stage(local(&lambda, "function_name"), name);
        assert_eq!(function, original_function(name));
        let log_group = text(local(&lambda, "log_group"));
        assert_eq!(log_group, "\"/aws/lambda/${local.function_name}\"");
        let mut found = imports(&stage(name));
        found.sort();
        assert_eq!(
            found,
            [
                (
                    "module.lambda.aws_cloudwatch_log_group.this".to_string(),
                    format!("/aws/lambda/{function}")
                ),
                (
                    "module.lambda.aws_lambda_function.this".to_string(),
                    function.clone()
                ),
            ],
            "{name}: the original's function and log group are adopted"
        );

        // The original's role and logging policy are not reused: other names, so the first
        // apply creates this stage's own and the original's destroy removes the old ones.
        let role = one(&lambda, "aws_iam_role");
        let role = template_for_stage(expect_attr(role, "name"), name);
        assert_ne!(role, format!("{function}-iam-role"));
        assert!(resources(&lambda, "aws_iam_policy").is_empty());
    }

    // The README has the handover and the imports before the first apply.
    let deployment = readme_section("Deployment");
    let first_apply = position(&deployment, "terraform apply");
    for step in [
        "imports.tf",
        "terraform state rm module.lambda.aws_lambda_function.this",
    ] {
        assert!(
            position(&deployment, step) < first_apply,
            "the README says {step:?} after the first apply"
        );
    }
}

#[test]
fn the_readme_deployment_section_is_in_the_order_that_works() {
    let deployment = readme_section("Deployment");
    // Adoption, quota, variables, apply (shared, images, stage), concrexit, backfill.
    let steps = [
        "### 1. What is adopted from the original",
        "### 2. GPU quota",
        "### 3. Variables",
        "### 4. Registries and the push role",
        "### 5. Images",
        "### 6. The stage",
        "### Pointing concrexit at it",
        "### Running a backfill",
        "### Cost and capacity",
    ];
    let positions: Vec<usize> = steps.iter().map(|s| position(&deployment, s)).collect();
    assert!(
        positions.windows(2).all(|pair| pair[0] < pair[1]),
        "the Deployment section's steps are out of order: {steps:?} at {positions:?}"
    );
    // The commands of each step are in it, in that order too.
    let commands = [
        "terraform state rm",
        "aws service-quotas get-service-quota",
        "request-service-quota-increase",
        "backfill_vpc_id",
        "cd terraform/stages/shared",
        "docker buildx build",
        "terraform plan",
        "FACEDETECTION_LAMBDA_ARN",
        "facedetect enqueue",
        "aws logs tail",
    ];
    let positions: Vec<usize> = commands.iter().map(|s| position(&deployment, s)).collect();
    assert!(
        positions.windows(2).all(|pair| pair[0] < pair[1]),
        "commands out of order: {commands:?} at {positions:?}"
    );
}

#[test]
fn no_default_vpc_is_assumed_and_the_workers_only_reach_https() {
    for name in module_names() {
        let body = module(&name);
        for data in blocks(&body, "data", "aws_vpc").values() {
            assert!(
                attr(data.body(), "default").is_none(),
                "{name}: looks up the default VPC"
            );
        }
        for ty in ["aws_default_vpc", "aws_default_subnet"] {
            assert!(resources(&body, ty).is_empty(), "{name}: {ty}");
            assert!(blocks(&body, "data", ty).is_empty(), "{name}: data {ty}");
        }
        assert!(
            blocks(&body, "data", "aws_subnets").is_empty(),
            "{name}: takes every subnet of a VPC instead of the given ones"
        );
    }

    let body = module("gpu_workers");
    let variables: BTreeMap<&str, &Block> = body
        .blocks()
        .filter(|b| b.identifier() == "variable")
        .map(|b| (labels(b)[0], b))
        .collect();
    for (variable, stage_variable) in [
        ("vpc_id", "backfill_vpc_id"),
        ("subnet_ids", "backfill_subnet_ids"),
    ] {
        let block = variables[variable];
        // Unset, it is null, and the validation says what to give instead of a bare "required".
        assert!(
            matches!(attr(block.body(), "default"), None | Some(Expression::Null)),
            "{variable} has a default"
        );
        let validation = nested(block, "validation");
        assert_eq!(validation.len(), 1, "{variable} is not validated");
        let condition = text(expect_attr(validation[0], "condition"));
        assert!(
            condition.contains(&format!("var.{variable} != null")),
            "{variable}: unset must fail: {condition}"
        );
        let message = text(expect_attr(validation[0], "error_message"));
        assert!(
            message.contains("not set") && message.contains(stage_variable),
            "{variable}: {message}"
        );
        for name in ["staging", "production"] {
            let stage_body = stage(name);
            let module_block = stage_body
                .blocks()
                .find(|b| b.identifier() == "module" && labels(b) == ["gpu_workers"])
                .unwrap();
            assert_eq!(
                text(expect_attr(module_block, variable)),
                format!("var.{stage_variable}"),
                "{name}: {variable}"
            );
        }
    }
    let group = one(&body, "aws_autoscaling_group");
    assert_eq!(
        text(expect_attr(group, "vpc_zone_identifier")),
        "var.subnet_ids"
    );
    let security_group = one(&body, "aws_security_group");
    assert_eq!(text(expect_attr(security_group, "vpc_id")), "var.vpc_id");
    assert!(nested(security_group, "ingress").is_empty());
    assert!(nested(security_group, "egress").is_empty());
    assert!(resources(&body, "aws_vpc_security_group_ingress_rule").is_empty());
    assert!(resources(&body, "aws_security_group_rule").is_empty());
    let egress = resources(&body, "aws_vpc_security_group_egress_rule");
    assert!(!egress.is_empty());
    for (rule, block) in egress {
        assert_eq!(text(expect_attr(block, "ip_protocol")), "\"tcp\"", "{rule}");
        assert_eq!(number(expect_attr(block, "from_port")), 443.0, "{rule}");
        assert_eq!(number(expect_attr(block, "to_port")), 443.0, "{rule}");
    }
}

/// A module's preconditions on one resource, as (condition, error message) source text.
fn preconditions(block: &Block) -> Vec<(String, String)> {
    nested(block, "lifecycle")
        .iter()
        .flat_map(|lifecycle| nested(lifecycle, "precondition"))
        .map(|p| {
            (
                text(expect_attr(p, "condition")),
                text(expect_attr(p, "error_message")),
            )
        })
        .collect()
}

/// The `gpu_families` local of the backfill module: family, compute capability.
fn gpu_families(body: &Body) -> BTreeMap<String, f64> {
    let Expression::Object(families) = local(body, "gpu_families") else {
        panic!("gpu_families is not an object")
    };
    families
        .iter()
        .map(|(family, fields)| {
            let capability = object_field(fields, "compute_capability").unwrap();
            (text_key(family), number(capability))
        })
        .collect()
}

fn default_string(body: &Body, variable: &str) -> String {
    let value = eval(
        &format!("var.{variable}").parse::<Expression>().unwrap(),
        &variable_defaults(body),
    );
    match value {
        Value::String(s) => s,
        other => panic!("{variable}: {other}"),
    }
}

fn default_number(body: &Body, variable: &str) -> f64 {
    let value = eval(
        &format!("var.{variable}").parse::<Expression>().unwrap(),
        &variable_defaults(body),
    );
    value.as_number().unwrap().as_f64().unwrap()
}

/// `ARG NAME=VALUE` of a Dockerfile.
fn dockerfile_arg(dockerfile: &str, name: &str) -> String {
    let text = std::fs::read_to_string(repo_dir().join(dockerfile)).unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("ARG {name}=")))
        .unwrap_or_else(|| panic!("{dockerfile} has no ARG {name}=..."))
        .trim()
        .to_string()
}

#[test]
fn the_gpu_quota_instance_type_and_subnets_are_checked_at_plan_time() {
    let body = module("gpu_workers");
    let group = one(&body, "aws_autoscaling_group");
    let checks = preconditions(group);
    let find = |needle: &str| {
        checks
            .iter()
            .find(|(condition, _)| condition.contains(needle))
            .unwrap_or_else(|| panic!("no precondition on {needle}: {checks:#?}"))
    };
    // The quota, in vCPUs, against what max_tasks instances need.
    // The quota, in vCPUs, against what max_tasks instances need and the region's other
    // stages may take: the quota is per region.
    let (condition, message) = find("data.aws_servicequotas_service_quota.gpu.value");
    assert!(
        condition.contains(">= local.gpu_vcpus_region"),
        "{condition}"
    );
    assert_eq!(
        text(local(&body, "gpu_vcpus_region")),
        "local.gpu_vcpus_total + var.other_stages_gpu_vcpus"
    );
    for name in ["staging", "production"] {
        let stage_body = stage(name);
        let call = stage_body
            .blocks()
            .find(|b| b.identifier() == "module" && labels(b) == ["gpu_workers"])
            .unwrap();
        assert_eq!(
            text(expect_attr(call, "other_stages_gpu_vcpus")),
            "var.other_stages_gpu_vcpus"
        );
    }
    // Each stage's default is the other stage's most: staging 1 and production 2 g6.xlarge.
    let vcpus = |name: &str| default_number(&stage(name), "other_stages_gpu_vcpus");
    assert_eq!((vcpus("staging"), vcpus("production")), (8.0, 4.0));
    assert_eq!(
        text(local(&body, "gpu_vcpus_total")),
        "data.aws_ec2_instance_type.gpu.default_vcpus * var.max_tasks"
    );
    assert!(
        message.contains("request-service-quota-increase"),
        "{message}"
    );
    let quota = blocks(&body, "data", "aws_servicequotas_service_quota");
    assert_eq!(text(expect_attr(quota["gpu"], "service_code")), "\"ec2\"");
    assert_eq!(
        text(expect_attr(quota["gpu"], "quota_code")),
        "local.gpu_quota_code"
    );
    // On-demand "Running On-Demand G and VT instances", spot "All G and VT Spot Instance
    // Requests".
    assert_eq!(
        text(local(&body, "gpu_quota_code")),
        "var.spot ? \"L-3819A6DF\" : \"L-DB2E81BA\""
    );
    // The subnets, the zones that offer the type, the family's GPU.
    let (condition, _) = find("subnet.vpc_id == var.vpc_id");
    assert!(condition.contains("data.aws_subnet.gpu"), "{condition}");
    find("data.aws_ec2_instance_type_offerings.gpu.locations");
    find("contains(keys(local.gpu_families), local.instance_family)");
    find(">= var.image_compute_capability");

    // The README says how to check and request the quota, with the same code.
    let deployment = readme_section("Deployment");
    for needle in ["L-DB2E81BA", "L-3819A6DF", "request-service-quota-increase"] {
        assert!(deployment.contains(needle), "README: {needle}");
    }
}

#[test]
fn the_worker_image_runs_on_every_gpu_the_module_accepts() {
    let body = module("gpu_workers");
    let families = gpu_families(&body);
    let image_capability = default_number(&body, "image_compute_capability");
    let built_for: f64 = dockerfile_arg("Dockerfile.cuda", "CUDA_COMPUTE_CAP")
        .parse()
        .unwrap();
    assert_eq!(
        built_for, image_capability,
        "Dockerfile.cuda's default CUDA_COMPUTE_CAP and the module's image_compute_capability"
    );
    for (family, capability) in &families {
        assert!(
            *capability >= built_for,
            "{family} ({capability}) cannot run PTX built for {built_for}"
        );
    }
    // The default instance (g6, L4: 8.9) and the H200 (9.0) are at or above it.
    let default_family = default_string(&body, "instance_type");
    let default_family = default_family.split('.').next().unwrap();
    assert_eq!(families.get(default_family), Some(&89.0));
    assert!(90.0 >= built_for);

    // CI builds with the Dockerfile's default, not a capability of its own.
    let build = std::fs::read_to_string(repo_dir().join(".github/workflows/build.yaml")).unwrap();
    assert!(
        !build.contains("CUDA_COMPUTE_CAP="),
        "build.yaml overrides the image's compute capability"
    );
}

#[test]
fn the_push_role_trusts_one_repository_and_its_main_branch() {
    let registry = module("registry");
    let trust = blocks(&registry, "data", "aws_iam_policy_document")["github_trust"];
    let statement = nested(trust, "statement")[0];
    let conditions = nested(statement, "condition");
    let subject = conditions
        .iter()
        .find(|c| text(expect_attr(c, "variable")).contains(":sub"))
        .expect("no subject condition");
    assert_eq!(
        text(expect_attr(subject, "test")),
        "\"StringEquals\"",
        "a subject pattern (StringLike) would admit more than one repository or branch"
    );
    let values = strings(expect_attr(subject, "values"));
    assert_eq!(
        values,
        ["\"repo:${var.github_repository}:ref:refs/heads/main\""]
    );
    // The shared stage sets the repository from a variable whose default is the module's, the
    // repository that runs the workflow, with no wildcard in it.
    let shared = stage("shared");
    let module_block = shared
        .blocks()
        .find(|b| b.identifier() == "module" && labels(b) == ["registry"])
        .unwrap();
    assert_eq!(
        text(expect_attr(module_block, "github_repository")),
        "var.github_repository"
    );
    let repository = default_string(&shared, "github_repository");
    assert_eq!(repository, default_string(&registry, "github_repository"));
    assert!(!repository.contains('*') && repository.split('/').count() == 2);
    assert!(
        readme_section("Deployment").contains(&format!("`{repository}`")),
        "the README names the repository the role trusts"
    );
    // The workflow's jobs present that subject: no GitHub environment, and the role from the
    // AWS_ROLE_ARN variable.
    let build = std::fs::read_to_string(repo_dir().join(".github/workflows/build.yaml")).unwrap();
    assert!(!build.contains("environment:"));
    assert!(build.contains("role-to-assume: ${{ vars.AWS_ROLE_ARN }}"));
}

#[test]
fn spot_draining_may_act_on_the_clusters_container_instances() {
    let body = module("gpu_workers");
    let document = blocks(&body, "data", "aws_iam_policy_document")["instance"];
    let statements: Vec<&Block> = nested(document, "statement");
    let granting: Vec<&&Block> = statements
        .iter()
        .filter(|s| {
            strings(expect_attr(s, "actions"))
                .contains(&"ecs:UpdateContainerInstancesState".to_string())
        })
        .collect();
    assert_eq!(granting.len(), 1);
    let resources = strings(expect_attr(granting[0], "resources"));
    assert_eq!(resources.len(), 1);
    assert!(
        resources[0].contains(":container-instance/${aws_ecs_cluster.this.name}/"),
        "UpdateContainerInstancesState acts on container instances, not on {}",
        resources[0]
    );
    let condition = nested(granting[0], "condition")[0];
    assert_eq!(text(expect_attr(condition, "variable")), "\"ecs:cluster\"");
    assert_eq!(
        strings(expect_attr(condition, "values")),
        ["aws_ecs_cluster.this.arn"]
    );
    // The agent is told to drain on spot interruptions.
    let template = one(&body, "aws_launch_template");
    assert!(
        text(expect_attr(template, "user_data"))
            .contains("ECS_ENABLE_SPOT_INSTANCE_DRAINING=${var.spot}")
    );
}

// Alarms and scaling, evaluated from the HCL.

/// Whether one datapoint breaches an alarm's threshold.
fn breaches(operator: &str, value: f64, threshold: f64) -> bool {
    match operator {
        "GreaterThanThreshold" => value > threshold,
        "GreaterThanOrEqualToThreshold" => value >= threshold,
        "LessThanThreshold" => value < threshold,
        "LessThanOrEqualToThreshold" => value <= threshold,
        other => panic!("unexpected comparison {other}"),
    }
}

fn unquote(expr: &Expression) -> String {
    match expr {
        Expression::String(s) => s.clone(),
        other => text(other).trim_matches('"').to_string(),
    }
}

/// Evaluates the numeric expressions of the HCL and of CloudWatch's metric math (which share
/// their syntax for what these files use): arithmetic, comparisons, `&&`/`||`, conditionals,
/// `IF`, `FILL`, `floor`. A missing datapoint is `None`, and propagates as CloudWatch does.
fn numeric(expr: &Expression, lookup: &dyn Fn(&str) -> Option<f64>) -> Option<f64> {
    use hcl::expr::{BinaryOperator, Operation, UnaryOperator};
    let truth = |b: bool| Some(if b { 1.0 } else { 0.0 });
    match expr {
        Expression::Number(n) => n.as_f64(),
        Expression::Bool(b) => truth(*b),
        Expression::Parenthesis(inner) => numeric(inner, lookup),
        Expression::Variable(variable) => lookup(variable.as_str()),
        Expression::Traversal(traversal) => lookup(&path(traversal).join(".")),
        Expression::Conditional(conditional) => {
            if numeric(&conditional.cond_expr, lookup)? != 0.0 {
                numeric(&conditional.true_expr, lookup)
            } else {
                numeric(&conditional.false_expr, lookup)
            }
        }
        Expression::Operation(operation) => match operation.as_ref() {
            Operation::Unary(unary) => {
                let value = numeric(&unary.expr, lookup)?;
                match unary.operator {
                    UnaryOperator::Neg => Some(-value),
                    UnaryOperator::Not => truth(value == 0.0),
                }
            }
            Operation::Binary(binary) => {
                let lhs = numeric(&binary.lhs_expr, lookup)?;
                let rhs = numeric(&binary.rhs_expr, lookup)?;
                match binary.operator {
                    BinaryOperator::Plus => Some(lhs + rhs),
                    BinaryOperator::Minus => Some(lhs - rhs),
                    BinaryOperator::Mul => Some(lhs * rhs),
                    BinaryOperator::Div => Some(lhs / rhs),
                    BinaryOperator::Mod => Some(lhs % rhs),
                    BinaryOperator::Eq => truth(lhs == rhs),
                    BinaryOperator::NotEq => truth(lhs != rhs),
                    BinaryOperator::Less => truth(lhs < rhs),
                    BinaryOperator::LessEq => truth(lhs <= rhs),
                    BinaryOperator::Greater => truth(lhs > rhs),
                    BinaryOperator::GreaterEq => truth(lhs >= rhs),
                    BinaryOperator::And => truth(lhs != 0.0 && rhs != 0.0),
                    BinaryOperator::Or => truth(lhs != 0.0 || rhs != 0.0),
                }
            }
        },
        Expression::FuncCall(call) => {
            let args = &call.args;
            match call.name.to_string().as_str() {
                "IF" => {
                    // Both branches are series; a point takes the chosen one's value.
                    let condition = numeric(&args[0], lookup)?;
                    let chosen = if condition != 0.0 { &args[1] } else { &args[2] };
                    numeric(chosen, lookup)
                }
                "FILL" => numeric(&args[0], lookup).or_else(|| match &args[1] {
                    // The last value reported before, in the alarm's window.
                    Expression::Variable(fill) if fill.as_str() == "REPEAT" => {
                        lookup(&format!("REPEAT {}", text(&args[0])))
                    }
                    fill => numeric(fill, lookup),
                }),
                "floor" => numeric(&args[0], lookup).map(f64::floor),
                other => panic!("no evaluator for {other}()"),
            }
        }
        other => panic!("cannot evaluate {other} as a number"),
    }
}

/// One minute of the queue and the service, as the alarms see it.
#[derive(Clone, Copy, Debug)]
struct Minute {
    visible: Option<f64>,
    in_flight: Option<f64>,
    tasks: Option<f64>,
}

/// An alarm of the backfill module, reduced to what decides its state.
struct Alarm {
    name: String,
    expression: Expression,
    operator: String,
    threshold: f64,
    periods: usize,
    missing_breaches: bool,
    actions: Vec<String>,
}

impl Alarm {
    fn from_block(name: &str, block: &Block, context: &Context, body: &Body) -> Alarm {
        let returned: Vec<&Block> = nested(block, "metric_query")
            .into_iter()
            .filter(|q| attr(q.body(), "return_data") == Some(&Expression::Bool(true)))
            .collect();
        let expression = match returned.as_slice() {
            [query] => {
                // `${local.NAME}` in the expression's template: the local's text.
                let mut source = unquote(expect_attr(query, "expression"));
                while let Some(start) = source.find("${local.") {
                    let end = start + source[start..].find('}').unwrap();
                    let value = unquote(local(body, &source[start + 8..end]));
                    source.replace_range(start..=end, &value);
                }
                source.parse::<Expression>().unwrap()
            }
            [] => {
                // A single metric: its value (the queue's counts by their metric-math ids).
                let metric = unquote(expect_attr(block, "metric_name"));
                let id = match metric.as_str() {
                    "ApproximateNumberOfMessagesVisible" => "visible",
                    "ApproximateNumberOfMessagesNotVisible" => "in_flight",
                    _ => "metric",
                };
                id.parse::<Expression>().unwrap()
            }
            more => panic!("{name}: {} queries return data", more.len()),
        };
        let value = |key: &str| -> f64 {
            eval(expect_attr(block, key), context)
                .as_number()
                .unwrap()
                .as_f64()
                .unwrap()
        };
        let periods = value("evaluation_periods") as usize;
        if let Some(datapoints) = attr(block.body(), "datapoints_to_alarm") {
            let datapoints = eval(datapoints, context).as_number().unwrap().as_f64();
            assert_eq!(
                datapoints,
                Some(periods as f64),
                "{name}: every evaluated minute must breach"
            );
        }
        Alarm {
            name: name.to_string(),
            expression,
            operator: unquote(expect_attr(block, "comparison_operator")),
            threshold: value("threshold"),
            periods,
            missing_breaches: unquote(expect_attr(block, "treat_missing_data")) == "breaching",
            actions: strings(expect_attr(block, "alarm_actions")),
        }
    }

    /// The alarm's value for one minute alone (`None` when a metric it needs is missing).
    fn value(&self, minute: &Minute) -> Option<f64> {
        self.value_at(std::slice::from_ref(minute), 0)
    }

    /// The alarm's value for minute `at` of `window` (the minutes the alarm evaluates):
    /// `FILL(x, REPEAT)` takes the last value of x reported before it in the window.
    fn value_at(&self, window: &[Minute], at: usize) -> Option<f64> {
        let metric = |minute: &Minute, id: &str| match id {
            "visible" => minute.visible,
            "in_flight" => minute.in_flight,
            "tasks" => minute.tasks,
            other => panic!("{}: unknown metric {other}", self.name),
        };
        numeric(&self.expression, &|id| match id.strip_prefix("REPEAT ") {
            Some(id) => window[..at].iter().rev().find_map(|m| metric(m, id)),
            None => metric(&window[at], id),
        })
    }

    /// In ALARM after the last `periods` minutes of `history`.
    fn in_alarm(&self, history: &[Minute]) -> bool {
        if history.len() < self.periods {
            return false;
        }
        let window = &history[history.len() - self.periods..];
        (0..window.len()).all(|at| match self.value_at(window, at) {
            Some(value) => breaches(&self.operator, value, self.threshold),
            None => self.missing_breaches,
        })
    }
}

/// A step scaling policy: how it changes the desired count for a breach of `above` over the
/// alarm's threshold.
struct Policy {
    exact: bool,
    steps: Vec<(Option<f64>, Option<f64>, f64)>,
    cooldown: f64,
}

impl Policy {
    fn from_block(block: &Block, locals: &dyn Fn(&str) -> Option<f64>) -> Self {
        let config = nested(block, "step_scaling_policy_configuration")[0];
        let kind = unquote(expect_attr(config, "adjustment_type"));
        let bound =
            |step: &Block, key: &str| attr(step.body(), key).map(|e| numeric(e, locals).unwrap());
        let steps = nested(config, "step_adjustment")
            .iter()
            .map(|step| {
                (
                    bound(step, "metric_interval_lower_bound"),
                    bound(step, "metric_interval_upper_bound"),
                    number(expect_attr(step, "scaling_adjustment")),
                )
            })
            .collect();
        let cooldown = numeric(expect_attr(config, "cooldown"), locals).unwrap();
        Policy {
            exact: kind == "ExactCapacity",
            steps,
            cooldown,
        }
    }

    /// The count after the policy acts on a breach of `difference` (metric minus threshold).
    /// As Application Auto Scaling reads step bounds: for an alarm above its threshold the
    /// lower bound is inclusive and the upper exclusive, for one below it the other way round.
    fn apply(&self, desired: f64, difference: f64, above: bool) -> f64 {
        let step = self.steps.iter().find(|(lower, upper, _)| {
            let over_lower = lower.is_none_or(|l| {
                if above {
                    difference >= l
                } else {
                    difference > l
                }
            });
            let under_upper = upper.is_none_or(|u| {
                if above {
                    difference < u
                } else {
                    difference <= u
                }
            });
            over_lower && under_upper
        });
        match step {
            Some((_, _, adjustment)) if self.exact => *adjustment,
            Some((_, _, adjustment)) => desired + adjustment,
            None => desired,
        }
    }
}

/// The backfill module's scaling: its alarms on the worker service, their policies, the target.
struct Scaling {
    alarms: Vec<(Alarm, Policy)>,
    max: f64,
}

impl Scaling {
    fn load() -> Scaling {
        let body = module("gpu_workers");
        let context = variable_defaults(&body);
        let locals = |name: &str| -> Option<f64> {
            let key = name.strip_prefix("local.")?;
            numeric(local(&body, key), &|_| None)
        };
        let policies = resources(&body, "aws_appautoscaling_policy");
        let mut alarms = Vec::new();
        for (name, block) in resources(&body, "aws_cloudwatch_metric_alarm") {
            let alarm = Alarm::from_block(&name, block, &context, &body);
            let [action] = alarm.actions.as_slice() else {
                continue;
            };
            let Some(policy) = action
                .strip_prefix("aws_appautoscaling_policy.")
                .and_then(|rest| rest.strip_suffix(".arn"))
            else {
                continue;
            };
            let policy = Policy::from_block(policies[policy], &locals);
            alarms.push((alarm, policy));
        }
        assert_eq!(
            alarms.len(),
            policies.len(),
            "every scaling policy has its alarm"
        );
        let target = one(&body, "aws_appautoscaling_target");
        let max = eval(expect_attr(target, "max_capacity"), &context);
        Scaling {
            alarms,
            max: max.as_number().unwrap().as_f64().unwrap(),
        }
    }

    /// Runs the alarms and policies minute by minute over a queue's history; the service's
    /// desired count is reported a minute late (Container Insights). Returns the desired count
    /// after each minute.
    fn run(&self, queue: &[(Option<f64>, Option<f64>)]) -> Vec<f64> {
        self.run_with(queue, &[], &[])
    }

    /// [`Scaling::run`], with the task count's point of the minutes in `late` missing when the
    /// alarms evaluate (Container Insights late), and the alarms named in `lagging` evaluated
    /// on the minutes before the current one and acting after the others (an alarm whose last
    /// evaluation came before the newest data, its repeated action landing just after another
    /// alarm's).
    fn run_with(
        &self,
        queue: &[(Option<f64>, Option<f64>)],
        late: &[usize],
        lagging: &[&str],
    ) -> Vec<f64> {
        let mut desired = 0.0;
        let mut reported = 0.0;
        let mut history = Vec::new();
        let mut last_acted = vec![f64::NEG_INFINITY; self.alarms.len()];
        let mut counts = Vec::new();
        let mut order: Vec<usize> = (0..self.alarms.len()).collect();
        order.sort_by_key(|&i| lagging.contains(&self.alarms[i].0.name.as_str()));
        for (minute, (visible, in_flight)) in queue.iter().enumerate() {
            history.push(Minute {
                visible: *visible,
                in_flight: *in_flight,
                tasks: (!late.contains(&minute)).then_some(reported),
            });
            let now = minute as f64 * 60.0;
            let mut next = desired;
            for &index in &order {
                let (alarm, policy) = &self.alarms[index];
                let seen = if lagging.contains(&alarm.name.as_str()) {
                    &history[..history.len() - 1]
                } else {
                    &history[..]
                };
                if !alarm.in_alarm(seen) {
                    continue;
                }
                if now - last_acted[index] < policy.cooldown {
                    continue;
                }
                let value = alarm.value_at(seen, seen.len() - 1).unwrap_or(0.0);
                let above = alarm.operator.starts_with("GreaterThan");
                let changed = policy
                    .apply(next, value - alarm.threshold, above)
                    .clamp(0.0, self.max);
                if changed != next {
                    last_acted[index] = now;
                    next = changed;
                }
            }
            reported = desired;
            desired = next;
            counts.push(desired);
        }
        counts
    }
}

#[test]
fn the_workers_scale_on_the_backlog_and_never_in_while_messages_remain() {
    let body = module("gpu_workers");
    let idle = default_number(&body, "idle_minutes") as usize;
    let per_task = default_number(&body, "messages_per_task");
    let mut scaling = Scaling::load();
    assert_eq!(scaling.alarms.len(), 3, "start, scale out, to zero");

    // Every policy but one only adds workers; the one that lowers the count sets it to 0, and
    // its alarm needs both counts at zero for idle_minutes.
    let lowering: Vec<&(Alarm, Policy)> = scaling
        .alarms
        .iter()
        .filter(|(_, policy)| policy.exact || policy.steps.iter().any(|s| s.2 < 0.0))
        .collect();
    assert_eq!(lowering.len(), 1);
    let (to_zero, policy) = lowering[0];
    assert!(policy.exact && policy.steps.iter().all(|s| s.2 == 0.0));
    assert_eq!(to_zero.periods, idle);
    let to_zero_name = to_zero.name.clone();
    for (alarm, policy) in &scaling.alarms {
        if !policy.exact {
            assert!(
                policy.steps.iter().all(|s| s.2 > 0.0),
                "{}: a ChangeInCapacity step that is not an increase",
                alarm.name
            );
            assert!(
                !alarm.missing_breaches,
                "{}: missing data scales out",
                alarm.name
            );
        }
    }
    // The count of tasks comes from Container Insights, which the cluster enables.
    let cluster = one(&body, "aws_ecs_cluster");
    let setting = nested(cluster, "setting")[0];
    assert_eq!(text(expect_attr(setting, "value")), "\"enabled\"");

    // The scenario: 6 minutes of nothing (no data: SQS stops reporting an idle queue), then a
    // backfill of 3 workers' worth arrives and drains; for 30 minutes every remaining message
    // is in flight and none is visible; then the queue is empty.
    scaling.max = 3.0;
    let backlog = 3.0 * per_task;
    let mut queue: Vec<(Option<f64>, Option<f64>)> = vec![(None, None); 6];
    let arrives = queue.len();
    for minute in 0..20 {
        let left = backlog * (1.0 - minute as f64 / 25.0);
        queue.push((Some(left), Some(40.0)));
    }
    let in_flight_only = queue.len();
    queue.extend(std::iter::repeat_n((Some(0.0), Some(40.0)), 30));
    let empty = queue.len();
    queue.extend(std::iter::repeat_n((Some(0.0), Some(0.0)), idle + 5));
    let counts = scaling.run(&queue);

    assert!(counts[..arrives].iter().all(|&c| c == 0.0), "{counts:?}");
    let first = counts[arrives..]
        .iter()
        .position(|&c| c >= 1.0)
        .expect("no worker started");
    assert!(
        first <= 2,
        "the first worker is asked for {first} minutes after the messages"
    );
    assert_eq!(
        counts[arrives..in_flight_only]
            .iter()
            .cloned()
            .fold(0.0, f64::max),
        3.0,
        "a backlog of 3 x messages_per_task gets 3 workers: {counts:?}"
    );
    for minute in arrives + 1..empty + idle - 1 {
        assert!(
            counts[minute] >= counts[minute - 1],
            "minute {minute}: the count fell from {} to {} with messages visible or in flight: \
             {counts:?}",
            counts[minute - 1],
            counts[minute]
        );
    }
    assert!(counts[in_flight_only..empty].iter().all(|&c| c == 3.0));
    // Exactly idle_minutes of an empty queue, then none.
    assert_eq!(counts[empty + idle - 2], 3.0, "{counts:?}");
    assert_eq!(counts[empty + idle - 1], 0.0, "{counts:?}");
    assert_eq!(*counts.last().unwrap(), 0.0);

    // A small backfill gets one worker and keeps it while its last messages are in flight.
    scaling.max = 2.0;
    let mut queue = vec![(Some(10.0), Some(0.0)); 3];
    queue.extend(std::iter::repeat_n((Some(0.0), Some(10.0)), 40));
    queue.extend(std::iter::repeat_n((Some(0.0), Some(0.0)), idle));
    let counts = scaling.run(&queue);
    assert!(
        counts[1..queue.len() - 1].iter().all(|&c| c == 1.0),
        "{counts:?}"
    );
    assert_eq!(*counts.last().unwrap(), 0.0);

    // A late Container Insights point: while the first worker's instance boots (its messages
    // still visible), one minute's task count is missing when the alarms evaluate. It is not
    // read as "no worker": no second worker for a backlog one can take.
    let mut queue = vec![(Some(10.0), Some(0.0)); 12];
    queue.extend(std::iter::repeat_n((Some(0.0), Some(10.0)), 5));
    queue.extend(std::iter::repeat_n((Some(0.0), Some(0.0)), idle + 2));
    for late in [6, 8, 10] {
        let counts = scaling.run_with(&queue, &[late], &[]);
        assert_eq!(
            counts.iter().cloned().fold(0.0, f64::max),
            1.0,
            "a late point at minute {late} started a second worker: {counts:?}"
        );
        assert!(counts[1..17].iter().all(|&c| c == 1.0), "{counts:?}");
    }

    // start and to_zero in the same minute: the service has been at zero with the queue idle
    // for an hour, then a message arrives. The idle alarm evaluates before the message's point
    // and its action lands after start's, in the minute start fires; it must not undo the start.
    let mut queue = vec![(Some(0.0), Some(0.0)); 60];
    let arrives = queue.len();
    queue.extend(std::iter::repeat_n((Some(5.0), Some(0.0)), 10));
    queue.extend(std::iter::repeat_n((Some(0.0), Some(5.0)), 5));
    let empty = queue.len();
    queue.extend(std::iter::repeat_n((Some(0.0), Some(0.0)), idle + 3));
    let counts = scaling.run_with(&queue, &[], &[to_zero_name.as_str()]);
    let started = arrives
        + counts[arrives..]
            .iter()
            .position(|&c| c == 1.0)
            .expect("no worker started");
    assert!(started <= arrives + 2, "{counts:?}");
    assert!(
        counts[started..empty].iter().all(|&c| c == 1.0),
        "to_zero undid the start: {counts:?}"
    );
    assert_eq!(*counts.last().unwrap(), 0.0, "{counts:?}");
    // The same after a worker was just scaled to zero: the next backfill starts at once.
    let mut again = queue[arrives..].to_vec();
    again.extend(std::iter::repeat_n((Some(5.0), Some(0.0)), 10));
    let restart = queue.len() - arrives;
    let counts = scaling.run_with(&again, &[], &[to_zero_name.as_str()]);
    let restarted = restart
        + counts[restart..]
            .iter()
            .position(|&c| c == 1.0)
            .expect("no worker restarted");
    assert!(restarted <= restart + 3, "{counts:?}");
    assert!(counts[restarted..].iter().all(|&c| c == 1.0), "{counts:?}");

    // Once at zero, the idle alarm is OK again: no repeated to_zero waits for the next start.
    let to_zero = &scaling
        .alarms
        .iter()
        .find(|(alarm, _)| alarm.name == to_zero_name)
        .unwrap()
        .0;
    let at_zero = Minute {
        visible: None,
        in_flight: None,
        tasks: Some(0.0),
    };
    assert!(!to_zero.in_alarm(&vec![at_zero; idle]));
    let unreported = Minute {
        visible: None,
        in_flight: None,
        tasks: None,
    };
    assert!(!to_zero.in_alarm(&vec![unreported; idle]));
}

#[test]
fn every_alarm_compares_the_right_way() {
    let mut checked = 0;
    for name in module_names() {
        let body = module(&name);
        let context = variable_defaults(&body);
        for (alarm_name, block) in resources(&body, "aws_cloudwatch_metric_alarm") {
            checked += 1;
            let alarm = Alarm::from_block(&alarm_name, block, &context, &body);
            let notifies = alarm.actions.iter().all(|a| a == "var.alarm_topic_arn");
            let scales_in = alarm.actions == ["aws_appautoscaling_policy.to_zero.arn"];
            if notifies {
                // "Not empty" or "failed": one is too many, none is fine, no data is none.
                assert!(!alarm.missing_breaches, "{alarm_name}");
                assert!(
                    breaches(
                        &alarm.operator,
                        alarm.threshold.max(0.0) + 1.0,
                        alarm.threshold
                    ),
                    "{alarm_name}"
                );
                assert!(
                    !breaches(&alarm.operator, 0.0, alarm.threshold),
                    "{alarm_name}"
                );
                assert_eq!(
                    strings(expect_attr(block, "ok_actions")),
                    ["var.alarm_topic_arn"],
                    "{alarm_name}: says when it is over"
                );
            } else if scales_in {
                // Zero visible and zero in flight, and nothing else, is idle.
                let minute = |visible, in_flight| Minute {
                    visible: Some(visible),
                    in_flight: Some(in_flight),
                    tasks: Some(1.0),
                };
                let idle = |m: Minute| {
                    breaches(&alarm.operator, alarm.value(&m).unwrap(), alarm.threshold)
                };
                assert!(idle(minute(0.0, 0.0)), "{alarm_name}");
                assert!(
                    !idle(minute(0.0, 1.0)),
                    "{alarm_name}: in flight is not idle"
                );
                assert!(!idle(minute(1.0, 0.0)), "{alarm_name}: visible is not idle");
                let unused = Minute {
                    visible: None,
                    in_flight: None,
                    tasks: Some(1.0),
                };
                assert!(
                    idle(unused),
                    "{alarm_name}: an unused queue reports nothing"
                );
                let no_worker = Minute {
                    tasks: Some(0.0),
                    ..unused
                };
                assert!(!idle(no_worker), "{alarm_name}: at zero it returns to OK");
            } else {
                // Scale-out: from the threshold up, never on no data.
                assert!(!alarm.missing_breaches, "{alarm_name}");
                assert!(alarm.operator.starts_with("GreaterThan"), "{alarm_name}");
            }
        }
    }
    assert!(checked >= 6, "only {checked} alarms");

    // The boundaries of the scale-out alarms, evaluated on their expressions.
    let scaling = Scaling::load();
    let by_name = |name: &str| {
        &scaling
            .alarms
            .iter()
            .find(|(a, _)| a.name == name)
            .unwrap_or_else(|| panic!("no alarm {name}"))
            .0
    };
    let body = module("gpu_workers");
    let per_task = default_number(&body, "messages_per_task");
    let fires = |alarm: &Alarm, visible: f64, in_flight: f64, tasks: f64| {
        let m = Minute {
            visible: Some(visible),
            in_flight: Some(in_flight),
            tasks: Some(tasks),
        };
        breaches(&alarm.operator, alarm.value(&m).unwrap(), alarm.threshold)
    };
    let start = by_name("work_waiting");
    assert!(fires(start, 1.0, 0.0, 0.0), "one message and no worker");
    assert!(!fires(start, 0.0, 0.0, 0.0));
    assert!(!fires(start, 1000.0, 0.0, 1.0), "a worker runs or starts");
    let out = by_name("backlog_per_task");
    assert!(
        !fires(out, per_task, 0.0, 1.0),
        "exactly messages_per_task per worker"
    );
    assert!(fires(out, per_task, 1.0, 1.0), "one more, in flight");
    assert!(!fires(out, 2.0 * per_task, 0.0, 2.0));
    assert!(
        !fires(out, 1000.0, 0.0, 0.0),
        "no worker: the start alarm's case"
    );
}

/// The worker's container definition in the task definition.
fn worker_container(body: &Body) -> &Expression {
    let task = one(body, "aws_ecs_task_definition");
    let Expression::Array(containers) = jsonencoded(expect_attr(task, "container_definitions"))
    else {
        panic!("container_definitions is not a list")
    };
    &containers[0]
}

/// The value expression of one environment variable of a container.
fn environment<'a>(container: &'a Expression, name: &str) -> Option<&'a Expression> {
    let Expression::Array(entries) = object_field(container, "environment").unwrap() else {
        panic!("environment is not a list")
    };
    entries
        .iter()
        .find(|entry| unquote(object_field(entry, "name").unwrap()) == name)
        .and_then(|entry| object_field(entry, "value"))
}

/// `ENV` values of a Dockerfile (`ENV A=1 B=2`, continued lines included).
fn dockerfile_env(dockerfile: &str) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(repo_dir().join(dockerfile)).unwrap();
    let joined = text.replace("\\\n", " ");
    let mut env = BTreeMap::new();
    for line in joined.lines() {
        if let Some(rest) = line.trim().strip_prefix("ENV ") {
            for pair in rest.split_whitespace() {
                if let Some((key, value)) = pair.split_once('=') {
                    env.insert(key.to_string(), value.to_string());
                }
            }
        }
    }
    env
}

#[test]
fn the_workers_memory_budgets_come_from_the_task() {
    let body = module("gpu_workers");
    let worker = worker_container(&body);
    let var = |name: &str| -> Option<f64> {
        let key = name.strip_prefix("var.")?;
        Some(default_number(&body, key))
    };

    // The host memory: a hard limit from the task's memory, and the worker's budget a share of
    // it, neither the worker's 2048 MiB default nor more than the container may use.
    assert_eq!(
        text(object_field(worker, "memory").unwrap()),
        "var.task_memory"
    );
    assert!(object_field(worker, "memoryReservation").is_none());
    assert_eq!(
        environment(worker, "FACEDETECT_MEMORY_MB")
            .map(text)
            .as_deref(),
        Some("tostring(local.worker_memory_mb)")
    );
    let budget = numeric(local(&body, "worker_memory_mb"), &var).unwrap();
    let task_memory = default_number(&body, "task_memory");
    assert!(
        budget > 2048.0 && budget < task_memory,
        "FACEDETECT_MEMORY_MB {budget} with a {task_memory} MiB container"
    );
    // g6.xlarge: 16 GiB, of which about 1 GiB stays with the system and the agent.
    assert!(task_memory <= 16384.0 - 1024.0);
    let task = one(&body, "aws_ecs_task_definition");
    assert!(
        preconditions(task)
            .iter()
            .any(|(c, _)| c
                == "var.task_memory <= data.aws_ec2_instance_type.gpu.memory_size - 1024"),
        "the task's memory is checked against the instance type's"
    );

    // The GPU memory: FACEDETECT_DEVICE_MEMORY_MB from a variable, by default a share of one of
    // the instance type's GPUs.
    assert_eq!(
        environment(worker, "FACEDETECT_DEVICE_MEMORY_MB")
            .map(text)
            .as_deref(),
        Some("tostring(local.device_memory_mb)")
    );
    let device = text(local(&body, "device_memory_mb"));
    assert!(
        device.starts_with("coalesce(var.device_memory_mb,")
            && device.contains("local.gpu_memory_mb"),
        "{device}"
    );
    assert!(text(local(&body, "gpu_memory_mb")).contains("data.aws_ec2_instance_type.gpu.gpus"));
    let gpu_memory = 23034.0; // an L4, as EC2 reports it
    let share = numeric(
        &"floor(local.gpu_memory_mb * var.memory_budget_percent / 100)"
            .parse::<Expression>()
            .unwrap(),
        &|name| match name {
            "local.gpu_memory_mb" => Some(gpu_memory),
            other => var(other),
        },
    )
    .unwrap();
    assert!(share > 0.0 && share < gpu_memory);
    assert!(
        attr(
            body.blocks()
                .find(|b| b.identifier() == "variable" && labels(b) == ["device_memory_mb"])
                .unwrap()
                .body(),
            "default"
        )
        .is_some_and(|d| *d == Expression::Null)
    );

    // The read-only root file system keeps a writable CUDA JIT cache: the image's
    // CUDA_CACHE_PATH is under the task's tmpfs.
    // (On unless the stage turns it off, should NVIDIA's container hooks fail on it.)
    assert_eq!(
        object_field(worker, "readonlyRootFilesystem").map(text),
        Some("var.read_only_root_filesystem".to_string())
    );
    assert!(default_bool(&body, "read_only_root_filesystem"));
    let linux = object_field(worker, "linuxParameters").unwrap();
    let tmpfs = text(object_field(linux, "tmpfs").unwrap());
    assert!(
        tmpfs.contains("containerPath = local.tmpfs_path"),
        "{tmpfs}"
    );
    let tmpfs_path = unquote(local(&body, "tmpfs_path"));
    let image_env = dockerfile_env("Dockerfile.cuda");
    let cache = &image_env["CUDA_CACHE_PATH"];
    assert!(
        cache.starts_with(&format!("{tmpfs_path}/")),
        "CUDA_CACHE_PATH {cache} is not on the tmpfs {tmpfs_path}"
    );
    let cache_max: f64 = image_env["CUDA_CACHE_MAXSIZE"].parse().unwrap();
    let tmpfs_size = numeric(local(&body, "tmpfs_size_mb"), &var).unwrap();
    assert!(cache_max < tmpfs_size * 1024.0 * 1024.0);
}

/// The arguments of a stage's `module "lambda"` block, evaluated for one value of
/// `var.backfill_on_lambda`, with the module's defaults for the rest.
fn lambda_concurrency(stage_name: &str, backfill_on_lambda: bool) -> (f64, f64, f64) {
    let body = stage(stage_name);
    let module_block = body
        .blocks()
        .find(|b| b.identifier() == "module" && labels(b) == ["lambda"])
        .unwrap();
    let lambda = module("lambda");
    let lookup = |name: &str| match name {
        "var.backfill_on_lambda" => Some(if backfill_on_lambda { 1.0 } else { 0.0 }),
        _ => None,
    };
    let argument = |key: &str| match attr(module_block.body(), key) {
        Some(expr) => numeric(expr, &lookup).unwrap(),
        None => default_number(&lambda, key),
    };
    (
        argument("reserved_concurrency"),
        argument("event_source_max_concurrency"),
        argument("min_live_concurrency"),
    )
}

#[test]
fn a_backfill_on_lambda_never_takes_the_concurrency_of_live_uploads() {
    for name in ["staging", "production"] {
        for backfill_on_lambda in [false, true] {
            let (reserved, queue, live) = lambda_concurrency(name, backfill_on_lambda);
            assert!(queue >= 2.0, "{name}: an SQS event source needs at least 2");
            assert!(live >= 1.0, "{name}");
            if backfill_on_lambda {
                assert!(
                    queue + live <= reserved,
                    "{name}: the queue may take {queue} and uploads need {live} of {reserved}"
                );
            }
        }
        // Without the backfill on Lambda, staging keeps its reservation of 2.
        let (reserved, _, _) = lambda_concurrency(name, false);
        assert!(reserved >= 2.0);
    }
    // The module itself refuses a split that starves uploads.
    let lambda = module("lambda");
    let mapping = one(&lambda, "aws_lambda_event_source_mapping");
    let scaling = nested(mapping, "scaling_config")[0];
    assert_eq!(
        text(expect_attr(scaling, "maximum_concurrency")),
        "var.event_source_max_concurrency"
    );
    assert!(preconditions(mapping).iter().any(|(condition, _)| condition
        == "var.event_source_max_concurrency + var.min_live_concurrency <= var.reserved_concurrency"));
    let function = one(&lambda, "aws_lambda_function");
    assert_eq!(
        text(expect_attr(function, "reserved_concurrent_executions")),
        "var.reserved_concurrency"
    );
}

/// An image in an ECR repository, for the lifecycle simulation.
#[derive(Clone, Debug)]
struct Image {
    pushed_day: u32,
    tags: Vec<String>,
}

/// One rule of an ECR lifecycle policy.
#[derive(Debug)]
struct LifecycleRule {
    priority: f64,
    tagged: Option<bool>,
    prefixes: Vec<String>,
    count_more_than: Option<f64>,
    days_since_push: Option<f64>,
}

impl LifecycleRule {
    fn selects(&self, image: &Image) -> bool {
        match self.tagged {
            Some(false) => image.tags.is_empty(),
            Some(true) => image
                .tags
                .iter()
                .any(|tag| self.prefixes.iter().any(|p| tag.starts_with(p.as_str()))),
            None => true,
        }
    }
}

/// The images ECR expires under `rules` on `today`: rules in priority order, an image that a
/// higher-priority rule selects is never expired by a lower one.
fn expired(rules: &[LifecycleRule], images: &[Image], today: u32) -> Vec<usize> {
    let mut claimed = vec![false; images.len()];
    let mut expire = Vec::new();
    for rule in rules {
        let mut selected: Vec<usize> = (0..images.len())
            .filter(|&i| !claimed[i] && rule.selects(&images[i]))
            .collect();
        for &i in &selected {
            claimed[i] = true;
        }
        // Newest first.
        selected.sort_by_key(|&i| std::cmp::Reverse(images[i].pushed_day));
        if let Some(count) = rule.count_more_than {
            expire.extend(selected.iter().skip(count as usize));
        }
        if let Some(days) = rule.days_since_push {
            expire.extend(
                selected
                    .iter()
                    .filter(|&&i| f64::from(today - images[i].pushed_day) > days),
            );
        }
    }
    expire.sort();
    expire.dedup();
    expire
}

fn lifecycle_rules() -> Vec<LifecycleRule> {
    let registry = module("registry");
    let context = variable_defaults(&registry);
    let policy = one(&registry, "aws_ecr_lifecycle_policy");
    let policy = eval(jsonencoded(expect_attr(policy, "policy")), &context);
    let policy = serde_json::to_value(&policy).unwrap();
    let mut parsed: Vec<LifecycleRule> = policy["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|rule| {
            let selection = &rule["selection"];
            let count = selection["countNumber"].as_f64().unwrap();
            let kind = selection["countType"].as_str().unwrap();
            assert_eq!(rule["action"]["type"], "expire");
            LifecycleRule {
                priority: rule["rulePriority"].as_f64().unwrap(),
                tagged: match selection["tagStatus"].as_str().unwrap() {
                    "tagged" => Some(true),
                    "untagged" => Some(false),
                    _ => None,
                },
                prefixes: selection["tagPrefixList"]
                    .as_array()
                    .map(|list| {
                        list.iter()
                            .map(|p| p.as_str().unwrap().to_string())
                            .collect()
                    })
                    .unwrap_or_default(),
                count_more_than: (kind == "imageCountMoreThan").then_some(count),
                days_since_push: (kind == "sinceImagePushed").then_some(count),
            }
        })
        .collect();
    parsed.sort_by(|a, b| a.priority.total_cmp(&b.priority));
    parsed
}

#[test]
fn the_registry_never_expires_an_image_a_stage_runs() {
    let registry = module("registry");
    let prefix = default_string(&registry, "release_tag_prefix");
    let keep_images = default_number(&registry, "keep_images") as usize;
    let rules = lifecycle_rules();
    assert!(
        rules
            .iter()
            .any(|r| r.tagged == Some(false) && r.days_since_push.is_some()),
        "untagged images expire"
    );

    // A year of CI: a push a day (sha-<n>, `latest` moving), staging applied on day 3 and
    // never again, production on day 40; every day's push also leaves an untagged build layer.
    let mut images: Vec<Image> = Vec::new();
    for day in 0..365 {
        for image in &mut images {
            image.tags.retain(|tag| tag != "latest");
        }
        images.push(Image {
            pushed_day: day,
            tags: vec![format!("sha-{day}"), "latest".to_string()],
        });
        images.push(Image {
            pushed_day: day,
            tags: Vec::new(),
        });
        for (stage_name, applied) in [("staging", 3), ("production", 40)] {
            if day == applied {
                let tag = format!("{prefix}{stage_name}");
                for image in &mut images {
                    image.tags.retain(|t| *t != tag);
                }
                images
                    .iter_mut()
                    .rev()
                    .find(|i| !i.tags.is_empty())
                    .unwrap()
                    .tags
                    .push(tag);
            }
        }
        let gone = expired(&rules, &images, day);
        images = images
            .into_iter()
            .enumerate()
            .filter(|(i, _)| !gone.contains(i))
            .map(|(_, image)| image)
            .collect();
    }
    for stage_name in ["staging", "production"] {
        assert!(
            images
                .iter()
                .any(|i| i.tags.contains(&format!("{prefix}{stage_name}"))),
            "the image {stage_name} runs was expired: {images:?}"
        );
    }
    let ci_only = images
        .iter()
        .filter(|i| !i.tags.iter().any(|t| t.starts_with(&prefix)) && !i.tags.is_empty())
        .count();
    assert_eq!(ci_only, keep_images, "CI-only images kept");
    assert!(
        images.iter().filter(|i| i.tags.is_empty()).count() <= 15,
        "untagged images pile up"
    );

    // Each stage's apply moves its release tag to the images it runs.
    for name in ["staging", "production"] {
        let body = stage(name);
        let release = resources(&body, "terraform_data");
        let release = release.get("release_tags").expect("no release_tags");
        let triggers = text(expect_attr(release, "triggers_replace"));
        assert!(
            triggers.contains("module.lambda.image_digest"),
            "{triggers}"
        );
        assert!(
            triggers.contains("module.gpu_workers[*].image_digest"),
            "{triggers}"
        );
        let provisioner = nested(release, "provisioner")[0];
        let command = text(expect_attr(provisioner, "command"));
        assert!(command.contains("scripts/tag-release.sh"), "{command}");
        assert!(
            command.contains(&format!("\"{prefix}${{local.stage}}\"")),
            "{name}: the tag is {prefix}<stage>: {command}"
        );
    }
    let script = repo_dir().join("scripts/tag-release.sh");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&script).unwrap().permissions());
    assert!(
        mode & 0o111 != 0,
        "scripts/tag-release.sh is not executable"
    );
}

/// Whether a Docker build context leaves `path` out, by .dockerignore's rules: the last
/// matching pattern decides, `!` re-includes, a pattern that matches a folder matches
/// everything in it, `*` matches within one path element and `**` any number of them.
fn docker_ignores(patterns: &str, path: &str) -> bool {
    fn matches(pattern: &[&str], path: &[&str]) -> bool {
        match (pattern.first(), path.first()) {
            (None, None) => true,
            (Some(&"**"), _) => {
                matches(&pattern[1..], path) || (!path.is_empty() && matches(pattern, &path[1..]))
            }
            (Some(p), Some(element)) => glob(p, element) && matches(&pattern[1..], &path[1..]),
            _ => false,
        }
    }
    fn glob(pattern: &str, text: &str) -> bool {
        match pattern.split_once('*') {
            None => pattern == text,
            Some((head, tail)) => {
                text.starts_with(head)
                    && (0..=text.len() - head.len())
                        .any(|skip| glob(tail, &text[head.len() + skip..]))
            }
        }
    }
    let elements: Vec<&str> = path.split('/').collect();
    let mut ignored = false;
    for line in patterns.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (include, pattern) = match line.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, line),
        };
        let pattern: Vec<&str> = pattern.trim_matches('/').split('/').collect();
        if (1..=elements.len()).any(|n| matches(&pattern, &elements[..n])) {
            ignored = !include;
        }
    }
    ignored
}

#[test]
fn image_contexts_hold_what_the_builds_copy_and_nothing_else() {
    for (file, dockerfile) in [
        (".dockerignore", "Dockerfile.cuda"),
        ("Dockerfile.cpu.dockerignore", "Dockerfile.cpu"),
    ] {
        let patterns = std::fs::read_to_string(repo_dir().join(file)).unwrap();
        for kept in [
            "Cargo.toml",
            "Cargo.lock",
            "src/main.rs",
            "src/service/mod.rs",
            "benches/pipeline.rs",
            "benches/support/mod.rs",
            "weights/face_recognition_resnet.safetensors",
        ] {
            assert!(!docker_ignores(&patterns, kept), "{file} leaves out {kept}");
        }
        for left_out in [
            "target/release/facedetect",
            "target/cuda/release/facedetect",
            "terraform/stages/staging/.terraform/providers/aws",
            "terraform/stages/staging/terraform.tfstate",
            "tests/fixtures/pkg/images/large/t1.webp",
            "benches/results/cpu.json",
            ".git/HEAD",
            "README.md",
        ] {
            assert!(
                docker_ignores(&patterns, left_out),
                "{file} sends {left_out}"
            );
        }
        // Everything the Dockerfile copies from the context is kept.
        let text = std::fs::read_to_string(repo_dir().join(dockerfile)).unwrap();
        for line in text
            .lines()
            .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
        {
            let sources: Vec<&str> = line.split_whitespace().skip(1).collect();
            for source in &sources[..sources.len() - 1] {
                let source = source
                    .trim_end_matches('/')
                    .replace("*.safetensors", "x.safetensors");
                let probe = if source.contains('.') {
                    source.clone()
                } else {
                    format!("{source}/x.rs")
                };
                let probe = if source == "weights" {
                    "weights/x.safetensors".to_string()
                } else {
                    probe
                };
                assert!(
                    !docker_ignores(&patterns, &probe),
                    "{file}: {dockerfile} copies {source}"
                );
            }
        }
    }
    // The matcher itself: the last match wins, folders match what is in them.
    assert!(docker_ignores("*\n!src/\n", "benches/x.rs"));
    assert!(!docker_ignores("*\n!src/\n", "src/a/b.rs"));
    assert!(docker_ignores(
        "**/.terraform\n",
        "terraform/stages/x/.terraform/y"
    ));
    assert!(!docker_ignores("target\n", "src/target.rs"));
}

#[test]
fn the_worker_image_ships_a_stripped_binary() {
    let env = dockerfile_env("Dockerfile.cuda");
    assert_eq!(
        env.get("CARGO_PROFILE_RELEASE_STRIP").map(String::as_str),
        Some("symbols")
    );
    // Set before the dependencies are cooked, so that cook's layer serves the build.
    let text = std::fs::read_to_string(repo_dir().join("Dockerfile.cuda")).unwrap();
    assert!(position(&text, "CARGO_PROFILE_RELEASE_STRIP") < position(&text, "cargo chef cook"));
}

/// The lines of a workflow job: from `  JOB:` to the next key at that indentation.
fn workflow_job(workflow: &str, job: &str) -> String {
    let text =
        std::fs::read_to_string(repo_dir().join(".github/workflows").join(workflow)).unwrap();
    let is_key = |line: &str| {
        line.starts_with("  ") && !line.starts_with("   ") && line.trim_end().ends_with(':')
    };
    let mut lines = text.lines().skip_while(|line| *line != format!("  {job}:"));
    let first = lines
        .next()
        .unwrap_or_else(|| panic!("{workflow} has no job {job}"));
    let mut out = vec![first];
    out.extend(lines.take_while(|line| !is_key(line)));
    out.join("\n")
}

/// The `X.Y.Z` after `needle` in `text`.
fn version_after(text: &str, needle: &str) -> String {
    let rest = &text[position(text, needle) + needle.len()..];
    rest.chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect::<String>()
        .trim_end_matches('.')
        .to_string()
}

fn version_parts(version: &str) -> Vec<u32> {
    version.split('.').map(|p| p.parse().unwrap()).collect()
}

#[test]
fn images_are_pushed_only_after_the_tests_and_with_the_readmes_terraform() {
    let build = workflow_job("build.yaml", "build");
    assert!(build.contains("needs: checks"), "{build}");
    let checks = workflow_job("build.yaml", "checks");
    assert!(
        checks.contains("uses: ./.github/workflows/ci.yaml"),
        "{checks}"
    );
    let ci = std::fs::read_to_string(repo_dir().join(".github/workflows/ci.yaml")).unwrap();
    let triggers = &ci[position(&ci, "\non:\n")..position(&ci, "\npermissions:")];
    assert!(
        triggers.contains("workflow_call:"),
        "ci.yaml cannot be called"
    );
    assert!(
        !triggers.contains("push:"),
        "ci.yaml runs on pushes by itself as well as from build.yaml"
    );
    // One cache per image; a failing cache export does not fail the push.
    assert!(build.contains("cache-from: type=gha,scope=${{ matrix.image.name }}"));
    assert!(
        build.contains(
            "cache-to: type=gha,mode=max,scope=${{ matrix.image.name }},ignore-error=true"
        )
    );

    // CI's Terraform is the README's, and the stages accept it.
    let pinned = version_after(&ci, "terraform_version: ");
    let deployment = readme_section("Deployment");
    assert_eq!(version_after(&deployment, "You need Terraform "), pinned);
    for name in ["shared", "staging", "production"] {
        let body = stage(name);
        let terraform = body
            .blocks()
            .find(|b| b.identifier() == "terraform")
            .unwrap();
        let required = unquote(expect_attr(terraform, "required_version"));
        let minimum = required.trim_start_matches(">=").trim();
        assert!(
            version_parts(&pinned) >= version_parts(minimum),
            "{name} requires {required}, CI runs {pinned}"
        );
        // Import blocks need 1.5.
        assert!(version_parts(minimum) >= vec![1, 5, 0]);
    }
}

// ---------------------------------------------------------------------------------------------
// Day one without GPU workers.

#[test]
fn gpu_workers_are_opt_in_and_without_them_nothing_needs_a_vpc_or_the_quota() {
    for name in ["staging", "production"] {
        let body = stage(name);
        assert!(
            !default_bool(&body, "gpu_workers"),
            "{name}: GPU workers on by default"
        );
        let calls: BTreeMap<&str, &Block> = body
            .blocks()
            .filter(|b| b.identifier() == "module")
            .map(|b| (labels(b)[0], b))
            .collect();
        // Every GPU resource is in the module the stage calls only with gpu_workers on.
        let count = expect_attr(calls["gpu_workers"], "count");
        for (on, instances) in [(false, 0.0), (true, 1.0)] {
            let lookup = |id: &str| (id == "var.gpu_workers").then_some(f64::from(u8::from(on)));
            assert_eq!(numeric(count, &lookup), Some(instances), "{name}: count");
        }
        // The VPC, subnets and quota reach that module alone; the function's event source is
        // the queue's module, not the workers'.
        for (module_name, call) in &calls {
            let source = hcl::to_string(call.body()).unwrap();
            if *module_name != "gpu_workers" {
                for variable in ["backfill_vpc_id", "backfill_subnet_ids", "gpu_workers"] {
                    assert!(
                        !source.contains(variable),
                        "{name}: module {module_name} reads {variable}"
                    );
                }
            }
        }
        let lambda = hcl::to_string(calls["lambda"].body()).unwrap();
        assert!(lambda.contains("module.backfill.queue_arn"), "{lambda}");
        assert!(!lambda.contains("module.gpu_workers"), "{lambda}");
    }
    // What is planned without the workers needs no VPC, subnet, GPU quota or ECS.
    for name in module_names().into_iter().filter(|n| n != "gpu_workers") {
        let source = hcl::to_string(&module(&name)).unwrap();
        for needle in [
            "vpc",
            "subnet",
            "aws_servicequotas",
            "aws_ecs_",
            "aws_autoscaling",
        ] {
            assert!(!source.contains(needle), "module {name} uses {needle}");
        }
    }
    // The backfill queue, its dead-letter queue and their alarms stay.
    let backfill = module("backfill");
    let queues = resources(&backfill, "aws_sqs_queue");
    assert!(queues.contains_key("backfill") && queues.contains_key("dead_letter"));
    let alarms = resources(&backfill, "aws_cloudwatch_metric_alarm");
    let stuck = alarms.get("stuck").expect("no alarm on a stuck backlog");
    assert_eq!(
        strings(expect_attr(stuck, "alarm_actions")),
        ["var.alarm_topic_arn"]
    );
    let stuck = hcl::to_string(stuck.body()).unwrap();
    assert!(stuck.contains("ApproximateAgeOfOldestMessage"), "{stuck}");
    assert_eq!(default_number(&backfill, "stuck_after_seconds"), 3600.0);
    // With the workers: tasks desired but not running for 15 minutes reach the topic.
    let workers = module("gpu_workers");
    let alarms = resources(&workers, "aws_cloudwatch_metric_alarm");
    let not_running = alarms["tasks_not_running"];
    assert_eq!(number(expect_attr(not_running, "evaluation_periods")), 15.0);
    assert_eq!(
        strings(expect_attr(not_running, "alarm_actions")),
        ["var.alarm_topic_arn"]
    );
    let text_of = hcl::to_string(not_running.body()).unwrap();
    for metric in ["DesiredTaskCount", "RunningTaskCount"] {
        assert!(text_of.contains(metric), "{text_of}");
    }
}

fn default_bool(body: &Body, variable: &str) -> bool {
    match eval(
        &format!("var.{variable}").parse::<Expression>().unwrap(),
        &variable_defaults(body),
    ) {
        Value::Bool(b) => b,
        other => panic!("{variable}: {other}"),
    }
}

/// `terraform test` of the stages and the GPU workers' module: real plans against the AWS
/// provider with its API mocked (terraform/**/tests/*.tftest.hcl): without GPU workers no VPC,
/// no subnet and a quota of 0 plan; with them the quota (every stage of the region counted), the
/// VPC and the subnets are checked. Needs Terraform 1.7 or later and the AWS provider (`terraform
/// init` downloads it; `TF_CLI_ARGS_init=-plugin-dir=DIR` points it at a local copy); skipped
/// with a message without them, a failure when `FACEDETECT_REQUIRE_TERRAFORM_TEST=1`.
#[test]
fn terraform_test_plans_the_stages_with_and_without_gpu_workers() {
    let required = std::env::var("FACEDETECT_REQUIRE_TERRAFORM_TEST").as_deref() == Ok("1");
    let skip = |why: &str| {
        assert!(!required, "{why}, and FACEDETECT_REQUIRE_TERRAFORM_TEST=1");
        eprintln!("SKIPPED: {why}");
    };
    let version = Command::new("terraform").arg("version").output();
    let Ok(version) = version else {
        return skip("terraform not found on PATH");
    };
    let version = String::from_utf8_lossy(&version.stdout).to_string();
    let found = version_after(&version, "Terraform v");
    if version_parts(&found) < vec![1, 7, 0] {
        return skip(&format!("terraform {found} has no mock providers (1.7)"));
    }
    // A copy without imports.tf: a mocked provider imports nothing (as on an account without the
    // original deployment).
    let dir = std::env::temp_dir().join(format!("facedetect-tftest-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let copy = Command::new("cp")
        .arg("-r")
        .arg(terraform_dir())
        .arg(&dir)
        .status()
        .unwrap();
    assert!(copy.success());
    for name in ["shared", "staging", "production"] {
        let _ = std::fs::remove_file(dir.join("stages").join(name).join("imports.tf"));
    }
    for folder in ["stages/staging", "stages/production", "modules/gpu_workers"] {
        let folder = dir.join(folder);
        let init = Command::new("terraform")
            .args(["init", "-backend=false", "-input=false", "-no-color"])
            .current_dir(&folder)
            .output()
            .unwrap();
        if !init.status.success() {
            let _ = std::fs::remove_dir_all(&dir);
            return skip(&format!(
                "terraform init could not install the AWS provider: {}",
                String::from_utf8_lossy(&init.stderr)
                    .lines()
                    .find(|l| l.contains("Error"))
                    .unwrap_or("")
            ));
        }
        let test = Command::new("terraform")
            .args(["test", "-no-color"])
            .current_dir(&folder)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&test.stdout);
        assert!(
            test.status.success() && stdout.contains("0 failed"),
            "terraform test in {}:\n{stdout}\n{}",
            folder.display(),
            String::from_utf8_lossy(&test.stderr)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
