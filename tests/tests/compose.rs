//! `kafka-docker-compose.yml` cannot run here (no Docker engine), so its wiring is checked
//! by reading it: services, ports, listeners, and credentials matching `.env.example`.

use std::collections::HashMap;

use pipeline_tests::root;
use serde_yaml_ng::Value;

fn compose() -> Value {
    let text =
        std::fs::read_to_string(root().join("kafka-docker-compose.yml")).expect("compose file");
    serde_yaml_ng::from_str(&text).expect("valid YAML")
}

fn env_example() -> HashMap<String, String> {
    dotenvy::from_path_iter(root().join(".env.example"))
        .expect(".env.example")
        .map(|kv| kv.expect("KEY=VALUE"))
        .collect()
}

fn env_of(service: &Value) -> HashMap<&str, String> {
    service["environment"]
        .as_mapping()
        .expect("environment as a mapping")
        .iter()
        .map(|(k, v)| {
            let v = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                other => panic!("unexpected value {other:?}"),
            };
            (k.as_str().unwrap(), v)
        })
        .collect()
}

fn ports(service: &Value) -> Vec<String> {
    service["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_owned())
        .collect()
}

/// `${VAR:-default}` → the default (what compose uses without a .env).
fn default_of(value: &str) -> &str {
    value
        .strip_prefix("${")
        .and_then(|v| v.strip_suffix('}'))
        .and_then(|v| v.split_once(":-"))
        .map_or(value, |(_, d)| d)
}

#[test]
fn has_kafka_postgres_and_kafdrop_with_healthchecks() {
    let c = compose();
    let services = c["services"].as_mapping().unwrap();
    let names: Vec<&str> = services.keys().map(|k| k.as_str().unwrap()).collect();
    assert_eq!(names, ["kafka", "kafka-postgres", "kafdrop"]);
    assert!(
        c["services"]["kafka"]["image"]
            .as_str()
            .unwrap()
            .starts_with("apache/kafka:4.")
    );
    assert_eq!(
        c["services"]["kafka-postgres"]["image"].as_str(),
        Some("postgres:16")
    );
    assert!(c["services"]["kafka"]["healthcheck"]["test"].is_sequence());
    assert!(c["services"]["kafka-postgres"]["healthcheck"]["test"].is_sequence());
    assert_eq!(
        c["services"]["kafdrop"]["depends_on"]["kafka"]["condition"].as_str(),
        Some("service_healthy")
    );
}

#[test]
fn ports_are_the_documented_ones() {
    let c = compose();
    // published on loopback only (the demo's password is known, Kafdrop shows payloads)
    assert_eq!(ports(&c["services"]["kafka"]), ["127.0.0.1:9092:9092"]);
    let pg: Vec<String> = ports(&c["services"]["kafka-postgres"]);
    assert_eq!(pg.len(), 1);
    let loopback = pg[0]
        .strip_prefix("127.0.0.1:")
        .expect("PostgreSQL on 127.0.0.1");
    let (host, container) = loopback.rsplit_once(':').unwrap();
    assert_eq!((default_of(host), container), ("5432", "5432"));
    assert_eq!(ports(&c["services"]["kafdrop"]), ["127.0.0.1:9000:9000"]);
    for (name, service) in c["services"].as_mapping().expect("services") {
        for p in ports(service) {
            assert!(
                p.starts_with("127.0.0.1:"),
                "{name:?} publishes {p} beyond loopback"
            );
        }
    }
    let example = env_example();
    assert_eq!(example["POSTGRES_PORT"], "5432");
    assert!(example["KAFKA_BOOTSTRAP_SERVERS"].ends_with(":9092"));
}

#[test]
fn listeners_wire_containers_and_host() {
    let c = compose();
    let kafka = env_of(&c["services"]["kafka"]);
    let map: HashMap<&str, &str> = kafka["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"]
        .split(',')
        .map(|p| p.split_once(':').unwrap())
        .collect();
    let advertised: HashMap<&str, &str> = kafka["KAFKA_ADVERTISED_LISTENERS"]
        .split(',')
        .map(|l| l.split_once("://").unwrap())
        .collect();
    let listeners: HashMap<&str, &str> = kafka["KAFKA_LISTENERS"]
        .split(',')
        .map(|l| l.split_once("://").unwrap())
        .collect();
    // every advertised and bound listener has a protocol
    for name in listeners.keys().chain(advertised.keys()) {
        assert!(
            map.contains_key(name),
            "{name} missing from the protocol map"
        );
    }
    // the host reaches the broker on localhost:9092, published by the port mapping
    assert_eq!(advertised["PLAINTEXT_HOST"], "localhost:9092");
    assert!(listeners["PLAINTEXT_HOST"].ends_with(":9092"));
    // containers (Kafdrop) use the internal listener, which the brokers also use
    let internal = advertised[kafka["KAFKA_INTER_BROKER_LISTENER_NAME"].as_str()];
    assert_eq!(internal, "kafka:19092");
    assert_eq!(
        env_of(&c["services"]["kafdrop"])["KAFKA_BROKERCONNECT"],
        internal
    );
    // KRaft: a controller listener that is bound but not advertised, and a voter on it
    let controller = kafka["KAFKA_CONTROLLER_LISTENER_NAMES"].as_str();
    assert!(listeners.contains_key(controller) && !advertised.contains_key(controller));
    let voter_port = kafka["KAFKA_CONTROLLER_QUORUM_VOTERS"]
        .rsplit(':')
        .next()
        .unwrap();
    assert!(listeners[controller].ends_with(&format!(":{voter_port}")));
    assert_eq!(kafka["KAFKA_PROCESS_ROLES"], "broker,controller");
    assert_eq!(kafka["CLUSTER_ID"].len(), 22, "a base64 UUID");
    assert_eq!(kafka["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"], "1");
}

#[test]
fn postgres_credentials_match_env_example_and_sql_is_mounted() {
    let c = compose();
    let pg = env_of(&c["services"]["kafka-postgres"]);
    let example = env_example();
    for key in ["POSTGRES_DB", "POSTGRES_USER", "POSTGRES_PASSWORD"] {
        assert_eq!(default_of(&pg[key]), example[key], "{key}");
        assert!(pg[key].contains(key), "{key} follows .env");
    }
    assert_eq!(example["POSTGRES_DB"], "kafka_sink");
    let volumes: Vec<&str> = c["services"]["kafka-postgres"]["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        volumes.contains(&"./sql:/docker-entrypoint-initdb.d:ro"),
        "{volumes:?}"
    );
    assert!(root().join("sql/001_transactions_sink.sql").exists());
}
