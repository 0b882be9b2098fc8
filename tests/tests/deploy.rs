//! The deployment files, checked without a Docker engine (none runs here): the compose file
//! is loaded by compose-go (the loader of `docker compose config`: its schema, interpolation,
//! profiles) and the Dockerfile by BuildKit's parser and linter, both through
//! `tools/deploy-check` (built with Go); Prometheus' configuration and alerts by `promtool`
//! (Debian's package, `scripts/prometheus.sh`); the Grafana dashboard's queries against the
//! metrics the binaries really export.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use pipeline_tests::{binary, root};
use serde_json::Value;

/// `tools/deploy-check`, built once per test run into the target directory.
fn deploy_check() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let out = root().join("target/deploy-check");
            let status = Command::new("go")
                .args(["build", "-buildvcs=false", "-o"])
                .arg(&out)
                .arg(".")
                .current_dir(root().join("tools/deploy-check"))
                .status()
                .expect(
                    "the deployment tests build tools/deploy-check with Go: install it (https://go.dev/dl) and put `go` on PATH",
                );
            assert!(status.success(), "building tools/deploy-check failed");
            out
        })
        .clone()
}

fn run_deploy_check(args: &[&str]) -> Value {
    let out = Command::new(deploy_check())
        .args(args)
        .current_dir(root())
        .output()
        .expect("deploy-check runs");
    assert!(
        out.status.success(),
        "deploy-check {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("deploy-check prints JSON")
}

/// The compose project as Docker would run it, with these profiles.
fn compose(profiles: &[&str]) -> Value {
    let mut args = vec!["compose", "kafka-docker-compose.yml"];
    args.extend(profiles);
    run_deploy_check(&args)
}

fn service_names(project: &Value) -> BTreeSet<String> {
    project["services"]
        .as_object()
        .expect("services")
        .keys()
        .cloned()
        .collect()
}

fn env(service: &Value) -> HashMap<String, String> {
    service["environment"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

fn env_example() -> HashMap<String, String> {
    dotenvy::from_path_iter(root().join(".env.example"))
        .expect(".env.example")
        .map(|kv| kv.expect("KEY=VALUE"))
        .collect()
}

/// The environment variables a binary reads: the twins its `--help` lists.
fn env_twins(name: &str) -> HashSet<String> {
    let help = Command::new(binary(name))
        .arg("--help")
        .output()
        .expect("--help runs");
    let text = String::from_utf8_lossy(&help.stdout);
    text.split("[env: ")
        .skip(1)
        .map(|rest| {
            rest.chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect()
        })
        .collect()
}

#[test]
fn the_seed_demo_comes_up_alone_and_the_pipeline_profile_adds_the_rest() {
    let demo = compose(&[]);
    assert_eq!(
        service_names(&demo),
        ["kafdrop", "kafka", "kafka-postgres"]
            .map(String::from)
            .into()
    );
    let full = compose(&["pipeline"]);
    assert_eq!(
        service_names(&full),
        [
            "grafana",
            "kafdrop",
            "kafka",
            "kafka-postgres",
            "producer",
            "prometheus",
            "sink"
        ]
        .map(String::from)
        .into()
    );
    let s = &full["services"];
    assert!(
        s["kafka"]["image"]
            .as_str()
            .unwrap()
            .starts_with("apache/kafka:4.")
    );
    assert_eq!(s["kafka-postgres"]["image"].as_str(), Some("postgres:16"));
    for name in ["kafka", "kafka-postgres"] {
        assert!(
            s[name]["healthcheck"]["test"].is_array(),
            "{name} has a healthcheck"
        );
    }
    let condition = |service: &str, on: &str| {
        s[service]["depends_on"][on]["condition"]
            .as_str()
            .map(str::to_owned)
    };
    assert_eq!(
        condition("kafdrop", "kafka").as_deref(),
        Some("service_healthy")
    );
    assert_eq!(
        condition("producer", "kafka").as_deref(),
        Some("service_healthy")
    );
    assert_eq!(
        condition("sink", "kafka").as_deref(),
        Some("service_healthy")
    );
    assert_eq!(
        condition("sink", "kafka-postgres").as_deref(),
        Some("service_healthy")
    );
}

#[test]
fn every_port_is_published_on_loopback_only_at_its_documented_number() {
    let full = compose(&["pipeline"]);
    let mut published = HashMap::new();
    for (name, service) in full["services"].as_object().unwrap() {
        for p in service["ports"].as_array().cloned().unwrap_or_default() {
            // the demo's password is known and Kafdrop shows payloads: never beyond loopback
            assert_eq!(p["host_ip"].as_str(), Some("127.0.0.1"), "{name}: {p}");
            published.insert(
                name.clone(),
                (
                    p["published"].as_str().unwrap_or_default().to_owned(),
                    p["target"].as_u64().unwrap_or_default(),
                ),
            );
        }
    }
    let expect = |name: &str, port: u64| {
        assert_eq!(
            published.get(name),
            Some(&(port.to_string(), port)),
            "{name}"
        );
    };
    expect("kafka", 9092);
    expect("kafka-postgres", 5432);
    expect("kafdrop", 9000);
    expect("prometheus", 9090);
    expect("grafana", 3000);
    // the binaries' metrics stay inside the compose network
    assert!(!published.contains_key("sink") && !published.contains_key("producer"));
    let example = env_example();
    assert_eq!(example["POSTGRES_PORT"], "5432");
    assert!(example["KAFKA_BOOTSTRAP_SERVERS"].ends_with(":9092"));
}

/// The broker's listeners by name: protocol map, bound and advertised addresses.
struct Listeners {
    map: HashMap<String, String>,
    bound: HashMap<String, String>,
    advertised: HashMap<String, String>,
}

fn listeners(kafka: &HashMap<String, String>) -> Listeners {
    let pairs = |key: &str, sep: &str| -> HashMap<String, String> {
        kafka[key]
            .split(',')
            .map(|l| {
                let (a, b) = l.split_once(sep).unwrap();
                (a.to_owned(), b.to_owned())
            })
            .collect()
    };
    Listeners {
        map: pairs("KAFKA_LISTENER_SECURITY_PROTOCOL_MAP", ":"),
        bound: pairs("KAFKA_LISTENERS", "://"),
        advertised: pairs("KAFKA_ADVERTISED_LISTENERS", "://"),
    }
}

#[test]
fn listeners_wire_containers_and_host() {
    let full = compose(&["pipeline"]);
    let kafka = env(&full["services"]["kafka"]);
    let l = listeners(&kafka);
    for name in l.bound.keys().chain(l.advertised.keys()) {
        assert!(
            l.map.contains_key(name),
            "{name} missing from the protocol map"
        );
    }
    // the host reaches the broker on localhost:9092, published by the port mapping
    assert_eq!(l.advertised["PLAINTEXT_HOST"], "localhost:9092");
    assert!(l.bound["PLAINTEXT_HOST"].ends_with(":9092"));
    // containers (Kafdrop, the producer, the sink) use the internal listener
    let internal = &l.advertised[&kafka["KAFKA_INTER_BROKER_LISTENER_NAME"]];
    assert_eq!(internal, "kafka:19092");
    assert_eq!(
        &env(&full["services"]["kafdrop"])["KAFKA_BROKERCONNECT"],
        internal
    );
    for binary in ["producer", "sink"] {
        assert_eq!(
            &env(&full["services"][binary])["KAFKA_BOOTSTRAP_SERVERS"],
            internal,
            "{binary}"
        );
    }
    // KRaft: a controller listener that is bound but not advertised, and a voter on it
    let controller = &kafka["KAFKA_CONTROLLER_LISTENER_NAMES"];
    assert!(l.bound.contains_key(controller) && !l.advertised.contains_key(controller));
    let voter_port = kafka["KAFKA_CONTROLLER_QUORUM_VOTERS"]
        .rsplit(':')
        .next()
        .unwrap();
    assert!(l.bound[controller].ends_with(&format!(":{voter_port}")));
    assert_eq!(kafka["KAFKA_PROCESS_ROLES"], "broker,controller");
    assert_eq!(kafka["CLUSTER_ID"].len(), 22, "a base64 UUID");
    assert_eq!(kafka["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"], "1");
}

#[test]
fn postgres_follows_env_example_and_runs_only_the_schema_at_init() {
    let full = compose(&["pipeline"]);
    let pg = env(&full["services"]["kafka-postgres"]);
    let example = env_example();
    for key in ["POSTGRES_DB", "POSTGRES_USER", "POSTGRES_PASSWORD"] {
        assert_eq!(pg[key], example[key], "{key}");
    }
    assert_eq!(example["POSTGRES_DB"], "kafka_sink");
    let raw = std::fs::read_to_string(root().join("kafka-docker-compose.yml")).unwrap();
    for key in ["POSTGRES_DB", "POSTGRES_USER", "POSTGRES_PASSWORD"] {
        assert!(raw.contains(&format!("${{{key}:-")), "{key} follows .env");
    }
    // what runs at the database's first start: exactly the schema files, never
    // grants.sql (it needs a role name and fails by design without one)
    let init: BTreeSet<String> = full["services"]["kafka-postgres"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| {
            v["target"]
                .as_str()
                .is_some_and(|t| t.starts_with("/docker-entrypoint-initdb.d"))
        })
        .map(|v| {
            let source = PathBuf::from(v["source"].as_str().unwrap());
            assert!(source.is_file(), "{} exists", source.display());
            source.file_name().unwrap().to_string_lossy().into_owned()
        })
        .collect();
    let schema: BTreeSet<String> = std::fs::read_dir(root().join("sql"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".sql") && n.as_bytes()[0].is_ascii_digit())
        .collect();
    assert_eq!(init, schema);
    assert!(!init.contains("grants.sql"));
}

#[test]
fn the_pipeline_services_set_only_what_their_binary_reads_and_reach_the_stack() {
    let full = compose(&["pipeline"]);
    let s = &full["services"];
    let pg = env(&s["kafka-postgres"]);
    for name in ["producer", "sink"] {
        let service = &s[name];
        assert_eq!(service["command"], serde_json::json!([name]), "{name}");
        assert_eq!(service["image"].as_str(), Some("txn-pipeline:local"));
        let context = PathBuf::from(service["build"]["context"].as_str().unwrap());
        assert_eq!(
            context.canonicalize().unwrap(),
            root().canonicalize().unwrap()
        );
        assert_eq!(service["build"]["dockerfile"].as_str(), Some("Dockerfile"));
        let twins = env_twins(name);
        for key in env(service).keys() {
            assert!(
                key == "RUST_LOG" || twins.contains(key),
                "{name} sets {key}, which it does not read (its twins: {twins:?})"
            );
        }
    }
    let sink = env(&s["sink"]);
    assert_eq!(sink["POSTGRES_HOST"], "kafka-postgres");
    assert_eq!(sink["POSTGRES_PORT"], "5432");
    for key in ["POSTGRES_DB", "POSTGRES_USER", "POSTGRES_PASSWORD"] {
        assert_eq!(sink[key], pg[key], "{key}");
    }
    // Prometheus scrapes each binary where it serves its metrics
    let config: serde_yaml_ng::Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(root().join("deploy/prometheus/prometheus.yml")).unwrap(),
    )
    .unwrap();
    let targets: HashMap<String, String> = config["scrape_configs"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|job| {
            (
                job["job_name"].as_str().unwrap().to_owned(),
                job["static_configs"][0]["targets"][0]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            )
        })
        .collect();
    for (name, var) in [
        ("sink", "SINK_METRICS_ADDR"),
        ("producer", "PRODUCER_METRICS_ADDR"),
    ] {
        let addr = &env(&s[name])[var];
        let port = addr.rsplit_once(':').unwrap().1;
        assert!(
            addr.starts_with("0.0.0.0:"),
            "{name} listens in its container: {addr}"
        );
        assert_eq!(targets[name], format!("{name}:{port}"));
    }
    // Prometheus reads deploy/prometheus, Grafana its provisioning and the dashboards
    let mounts = |service: &str| -> HashMap<String, PathBuf> {
        s[service]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| {
                (
                    v["target"].as_str().unwrap().to_owned(),
                    PathBuf::from(v["source"].as_str().unwrap()),
                )
            })
            .collect()
    };
    assert!(
        mounts("prometheus")["/etc/prometheus"]
            .join("prometheus.yml")
            .is_file()
    );
    let grafana = mounts("grafana");
    let provisioning = &grafana["/etc/grafana/provisioning"];
    assert!(provisioning.join("datasources/prometheus.yml").is_file());
    let provider: serde_yaml_ng::Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(provisioning.join("dashboards/pipeline.yml")).unwrap(),
    )
    .unwrap();
    let path = provider["providers"][0]["options"]["path"]
        .as_str()
        .unwrap();
    assert!(grafana[path].join("pipeline.json").is_file(), "{path}");
}

/// Runs `promtool` (from Debian's prometheus package) with `args` in `dir`.
fn promtool(dir: &std::path::Path, args: &[&str]) -> String {
    // installed once per run (two tests installing at once would fight over apt's lock)
    static PROMETHEUS: OnceLock<PathBuf> = OnceLock::new();
    let path = PROMETHEUS.get_or_init(|| {
        let out = Command::new(root().join("scripts/prometheus.sh"))
            .output()
            .expect("scripts/prometheus.sh runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    });
    let out = Command::new(path.with_file_name("promtool"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}: {text}");
    text
}

#[test]
fn prometheus_config_loads_and_each_alert_fires_when_it_should() {
    let dir = root().join("deploy/prometheus");
    promtool(&dir, &["check", "config", "prometheus.yml"]);
    let tested = promtool(&dir, &["test", "rules", "alerts_test.yml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");
    // every alert is shown both to fire and to stay quiet
    let yaml = |name: &str| -> serde_yaml_ng::Value {
        serde_yaml_ng::from_str(&std::fs::read_to_string(dir.join(name)).unwrap()).unwrap()
    };
    let (rules, tests) = (yaml("alerts.yml"), yaml("alerts_test.yml"));
    let cases: Vec<&serde_yaml_ng::Value> = tests["tests"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_sequence().unwrap())
        .collect();
    for group in rules["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            let alert = rule["alert"].as_str().unwrap();
            let fired: Vec<bool> = cases
                .iter()
                .filter(|c| c["alertname"].as_str() == Some(alert))
                .map(|c| c["exp_alerts"].as_sequence().is_some_and(|a| !a.is_empty()))
                .collect();
            assert!(
                fired.contains(&true) && fired.contains(&false),
                "{alert} is tested firing and quiet: {fired:?}"
            );
        }
    }
}

/// Every series name the two binaries export, as Prometheus stores them (a counter with
/// `_total`, a histogram's `_bucket`, `_sum`, `_count`).
fn exported_series() -> HashSet<String> {
    let mut registry = prometheus_client::registry::Registry::default();
    let sink = sink::metrics::SinkMetrics::default();
    sink.register(&mut registry);
    // a family without a series is not encoded: one partition's lag, as in a run
    sink.set_lag(
        "transactions",
        &[sink::consumer::Lag {
            partition: 0,
            messages: 1,
            seconds: Some(1.0),
        }],
    );
    registry.register_collector(Box::new(producer::metrics::ProducerCollector::new(
        std::sync::Arc::new(producer::stats::Stats::new()),
    )));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    let mut names = HashSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = rest.split_once(' ').unwrap();
        match kind {
            "counter" => {
                names.insert(format!("{name}_total"));
            }
            "histogram" => {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            }
            _ => {
                names.insert(name.to_owned());
            }
        }
    }
    names
}

#[test]
fn every_dashboard_query_parses_and_names_metrics_the_binaries_export() {
    let dashboards = root().join("deploy/grafana/dashboards");
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(dashboards.join("pipeline.json")).unwrap())
            .unwrap();
    let datasource: serde_yaml_ng::Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(
            root().join("deploy/grafana/provisioning/datasources/prometheus.yml"),
        )
        .unwrap(),
    )
    .unwrap();
    let uid = datasource["datasources"][0]["uid"].as_str().unwrap();
    let exported = exported_series();
    let mut used = BTreeSet::new();
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        let title = panel["title"].as_str().unwrap_or_default();
        assert_eq!(panel["datasource"]["uid"].as_str(), Some(uid), "{title}");
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title} has a query");
        for t in targets {
            let expr = t["expr"].as_str().unwrap();
            exprs.push(expr.to_owned());
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if word.starts_with("sink_") || word.starts_with("producer_") {
                    assert!(
                        exported.contains(word),
                        "panel {title:?} queries {word}, which neither binary exports"
                    );
                    used.insert(word.to_owned());
                }
            }
        }
    }
    // what the issue asks the dashboard to show
    for needed in [
        "sink_rows_inserted_total",
        "sink_consumer_lag_messages",
        "sink_consumer_lag_seconds",
        "sink_dead_letters_total",
        "sink_paused",
        "sink_batch_write_seconds_bucket",
    ] {
        assert!(used.contains(needed), "the dashboard shows {needed}");
    }
    // every query is valid PromQL: promtool parses each as a recording rule
    let dir = tempfile::tempdir().unwrap();
    let rules: String = exprs
        .iter()
        .enumerate()
        .map(|(i, e)| format!("      - record: dashboard:query_{i}\n        expr: {e:?}\n"))
        .collect();
    std::fs::write(
        dir.path().join("queries.yml"),
        format!("groups:\n  - name: dashboard\n    rules:\n{rules}"),
    )
    .unwrap();
    promtool(dir.path(), &["check", "rules", "queries.yml"]);
}

/// A Rust version `1.95` or `1.95.0` as (major, minor).
fn rust_version(v: &str) -> (u32, u32) {
    let mut parts = v.split('.').map(|p| p.parse::<u32>().unwrap());
    (parts.next().unwrap(), parts.next().unwrap())
}

#[test]
fn the_dockerfile_builds_both_binaries_into_a_small_non_root_image() {
    let parsed = run_deploy_check(&["dockerfile", "Dockerfile"]);
    assert_eq!(
        parsed["warnings"],
        Value::Null,
        "BuildKit's linter: {}",
        parsed["warnings"]
    );
    let stages = parsed["stages"].as_array().unwrap();
    assert!(stages.len() >= 2, "multi-stage");
    let (build, runtime) = (&stages[0], stages.last().unwrap());
    // the build: release binaries of both, from the lock file, with a Rust new enough for
    // the workspace's rust-version
    assert!(
        build["runs"].as_array().unwrap().iter().any(|r| r
            .as_str()
            .unwrap()
            .contains("cargo build --release --locked -p producer -p sink")),
        "{build}"
    );
    let image = build["base"].as_str().unwrap();
    let tag = image
        .strip_prefix("rust:")
        .unwrap()
        .split('-')
        .next()
        .unwrap();
    let manifest = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    let needed = manifest
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .unwrap()
        .trim_matches('"');
    assert!(
        rust_version(tag) >= rust_version(needed),
        "{image} builds a workspace needing Rust {needed}"
    );
    // the runtime: a slim base, a user that is not root, both binaries from the build
    assert!(
        runtime["base"].as_str().unwrap().contains("slim"),
        "{runtime}"
    );
    let user = runtime["user"].as_str().unwrap();
    let uid = user.split(':').next().unwrap();
    assert!(
        !uid.is_empty() && uid != "root" && uid != "0",
        "USER {user:?}"
    );
    let copied: Vec<String> = runtime["copies"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["from"] == build["name"])
        .flat_map(|c| c["sources"].as_array().unwrap().clone())
        .map(|s| s.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(copied, ["/usr/local/bin/producer", "/usr/local/bin/sink"]);
    assert_eq!(runtime["cmd"], serde_json::json!(["sink"]));
    // what the image sets in its environment, the binaries read
    let twins: HashSet<String> = env_twins("producer")
        .union(&env_twins("sink"))
        .cloned()
        .collect();
    for kv in runtime["env"].as_array().unwrap() {
        let key = kv[0].as_str().unwrap();
        assert!(
            twins.contains(key),
            "the image sets {key}, which no binary reads"
        );
    }
    // files copied from the context exist, and .dockerignore keeps them in it
    let ignored: Vec<String> = std::fs::read_to_string(root().join(".dockerignore"))
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect();
    for stage in stages {
        for copy in stage["copies"].as_array().unwrap() {
            if copy["from"].as_str().is_some_and(|f| !f.is_empty()) {
                continue;
            }
            for source in copy["sources"].as_array().unwrap() {
                let source = source.as_str().unwrap();
                assert!(root().join(source).exists(), "COPY {source}");
                let first = source.split('/').next().unwrap();
                assert!(!ignored.iter().any(|i| i == first), "{source} is ignored");
            }
        }
    }
    assert!(ignored.contains(&"target".to_owned()) && ignored.contains(&".env".to_owned()));
}
