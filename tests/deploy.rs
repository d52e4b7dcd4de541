//! The shipped monitoring files: Prometheus configuration and alert rules pass promtool, and
//! every metric the alerts and the Grafana dashboard use is one a real gateway exports.

mod common;
use common::*;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

fn deploy(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(rel)
}

fn promtool(args: &[&str]) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(deploy("prometheus"))
        .output()
        .expect("promtool is installed by scripts/setup.sh");
    assert!(
        out.status.success(),
        "promtool {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn prometheus_files_pass_promtool() {
    promtool(&["check", "config", "prometheus.yml"]);
    promtool(&["check", "rules", "alerts.yml"]);
    promtool(&["test", "rules", "alerts_test.yml"]);
}

/// `openclaw_gateway_<name>` families named in a text (suffixes of histograms removed).
fn families(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("openclaw_gateway_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let family = ["_bucket", "_count", "_sum"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        if family != "openclaw_gateway_" {
            out.insert(family.to_string());
        }
        rest = &tail[end..];
    }
    out
}

#[tokio::test]
async fn the_dashboard_and_alerts_use_metrics_the_gateway_exports() {
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(deploy("grafana/clawgate-dashboard.json")).unwrap(),
    )
    .expect("the dashboard is JSON");
    let panels = dashboard["panels"].as_array().unwrap();
    assert_eq!(
        panels.len(),
        9,
        "the article's five panels, token budget use, and LLM TTFT, TPOT and tokens/s"
    );
    let exprs: String = panels
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().iter())
        .map(|t| t["expr"].as_str().unwrap().to_string())
        .collect::<Vec<_>>()
        .join("\n");
    let alerts = std::fs::read_to_string(deploy("prometheus/alerts.yml")).unwrap();
    let used: BTreeSet<String> = families(&exprs)
        .union(&families(&alerts))
        .cloned()
        .collect();

    let backend = mock_backend::spawn();
    let yaml = r#"
gateway: {listen: "{listen}", pid_file: "{dir}/p.pid", upgrade_sock: "{dir}/u.sock"}
agents:
  "bot": {api_key: "key-bot", rate_limit: "1/minute"}
  "big": {api_key: "key-big"}
rate_limiting:
  tokens: {default: "100000/day"}
backends:
  dead:
    url: "http://127.0.0.1:9"
    retries: {attempts: 0}
    circuit_breaker: {failures: 1}
  half:
    urls: ["http://127.0.0.1:9", "{backend}"]
    passive_health: {failures: 1}
routes:
  - {path: "/dead/*", backend: dead}
  - {path: "/half/*", backend: half}
  - {path: "/*", backend_url: "{backend}", auth_required: true}
monitoring:
  metrics:
    enabled: true
    custom_metrics:
      - {name: "agent_token_usage", type: counter, labels: ["agent_id", "model"]}
"#;
    let g = Gateway::start(yaml, &backend.url());
    let c = client();
    for _ in 0..2 {
        let _ = c
            .post(g.url("/v1/chat/completions"))
            .header("x-api-key", "key-bot")
            .body(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#)
            .header("content-type", "application/json")
            .send()
            .await
            .unwrap();
    }
    // A stream: LLM time to first token, per output token and tokens per second.
    let _ = c
        .post(g.url("/v1/chat/completions"))
        .header("x-api-key", "key-big")
        .body(r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}"#)
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap()
        .text()
        .await;
    // A reservation larger than the budget: a token refusal.
    let _ = c
        .post(g.url("/v1/chat/completions"))
        .header("x-api-key", "key-big")
        .body(r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":1000000}"#)
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    // A vector metric shows once it has a series: make a backend fail (its breaker opens), and
    // an address be ejected.
    let _ = c.get(g.url("/dead/x")).send().await.unwrap();
    for _ in 0..2 {
        let _ = c.get(g.url("/half/x")).send().await.unwrap();
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let exported = loop {
        let text = c
            .get(g.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let names: BTreeSet<String> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .map(str::to_string)
            .collect();
        let shown = [
            "rate_limited_total{",
            "upstream_errors_total{",
            "upstream_ejections_total{",
            "circuit_breaker_opens_total{",
            "token_quota_refused_total{",
            "token_budget_remaining{",
            "llm_time_to_first_token_seconds_bucket{",
            "llm_time_per_output_token_seconds_bucket{",
            "llm_tokens_per_second_bucket{",
        ];
        if shown.iter().all(|s| text.contains(s)) {
            break names;
        }
        assert!(std::time::Instant::now() < deadline, "{text}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let missing: Vec<&String> = used.iter().filter(|u| !exported.contains(*u)).collect();
    assert!(
        missing.is_empty(),
        "used but not exported: {missing:?} (exported: {exported:?})"
    );
}

/// The systemd unit passes `systemd-analyze verify` without a warning (with the binary path
/// pointed at the one just built: verify checks that the commands exist).
#[test]
fn the_systemd_unit_verifies() {
    let unit = std::fs::read_to_string(deploy("systemd/clawgate.service")).expect("unit");
    assert!(unit.contains("ExecReload=/usr/local/bin/clawgate reload"));
    assert!(unit.contains("Type=forking") && unit.contains("PIDFile=/run/clawgate/clawgate.pid"));
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("clawgate.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/clawgate", BIN)).expect("write");
    let out = Command::new("systemd-analyze")
        .args(["verify", path.to_str().expect("path")])
        .output()
        .expect("systemd-analyze is installed by scripts/setup.sh");
    let said =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}");
    assert!(said.trim().is_empty(), "warnings: {said}");
}

/// The Kubernetes manifests pass the API schemas (kubernetes-validate, strict), hold what the
/// deployment needs, and their configuration passes `clawgate check`.
#[test]
fn the_kubernetes_manifests_validate() {
    let dir = deploy("kubernetes");
    let tools = std::env::var("CLAWGATE_TOOLS").unwrap_or_else(|_| {
        format!(
            "{}/.cache/clawgate-tools",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    let files = [
        "namespace.yaml",
        "secret.yaml",
        "configmap.yaml",
        "redis.yaml",
        "deployment.yaml",
        "service.yaml",
        "pdb.yaml",
        "hpa.yaml",
    ];
    let out = Command::new(format!("{tools}/bin/kubernetes-validate"))
        .arg("--strict")
        .args(files)
        .current_dir(&dir)
        .output()
        .expect("kubernetes-validate is installed by scripts/setup.sh");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let kustomization = std::fs::read_to_string(dir.join("kustomization.yaml")).expect("read");
    for f in files {
        assert!(kustomization.contains(f), "{f} is in kustomization.yaml");
    }

    let doc = |name: &str| -> serde_yaml_ng::Value {
        serde_yaml_ng::from_str(&std::fs::read_to_string(dir.join(name)).expect("read"))
            .expect("yaml")
    };
    let d = doc("deployment.yaml");
    assert!(d["spec"]["replicas"].as_u64() >= Some(3));
    let c = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/api/v1/health");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/api/v1/health");
    assert_eq!(c["envFrom"][0]["secretRef"]["name"], "clawgate-secrets");
    assert!(doc("pdb.yaml")["spec"]["minAvailable"].as_u64() >= Some(2));
    let hpa = doc("hpa.yaml");
    assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], "clawgate");
    assert!(hpa["spec"]["minReplicas"].as_u64() >= Some(3));

    // The configuration in the ConfigMap is one clawgate accepts (with the Secret's variables).
    let config = doc("configmap.yaml")["data"]["clawgate.yaml"]
        .as_str()
        .expect("clawgate.yaml in the ConfigMap")
        .to_string();
    let secret = doc("secret.yaml");
    let tmp = tempfile::tempdir().expect("dir");
    let path = tmp.path().join("clawgate.yaml");
    std::fs::write(&path, config).expect("write");
    let mut check = Command::new(BIN);
    check.args(["check", "--config", path.to_str().expect("path")]);
    if let Some(vars) = secret["stringData"].as_mapping() {
        for (k, v) in vars {
            check.env(k.as_str().expect("name"), v.as_str().expect("value"));
        }
    }
    let out = check.output().expect("clawgate check");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The container recipe: a multi-stage build whose final image runs the binary as a non-root
/// user in the foreground (no container runtime here to build it).
#[test]
fn the_container_recipe_is_multi_stage_and_non_root() {
    let text = std::fs::read_to_string(deploy("container/Dockerfile")).expect("Dockerfile");
    let froms: Vec<&str> = text.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(froms.len(), 2, "{froms:?}");
    assert!(froms[0].ends_with(" AS build"));
    assert!(text.contains("COPY --from=build /src/target/release/clawgate /usr/local/bin/clawgate"));
    let user = text
        .lines()
        .rfind(|l| l.starts_with("USER "))
        .expect("a USER line");
    assert!(!user.contains("root") && !user.contains(" 0"), "{user}");
    assert!(text
        .contains(r#"CMD ["start", "--foreground", "--config", "/etc/clawgate/clawgate.yaml"]"#));
}
