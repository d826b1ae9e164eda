//! The collector's clients: plain HTTP/1.1 requests, gzip, and a real LiteLLM proxy.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use super::*;

pub const TOKEN: &str = "e2e-collector-token-litellm-0123";

/// An HTTP answer.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 POST on its own connection.
pub async fn post(addr: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut conn = BufReader::new(stream);
    send_request(&mut conn, addr, path, headers, body, true).await;
    read_reply(&mut conn).await.expect("a reply")
}

pub async fn send_request(
    conn: &mut BufReader<tokio::net::TcpStream>,
    addr: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    close: bool,
) {
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: {}\r\n",
        body.len(),
        if close { "close" } else { "keep-alive" }
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let stream = conn.get_mut();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
}

/// Reads one reply: status, headers, and a body by Content-Length, chunks, or to the end.
pub async fn read_reply(conn: &mut BufReader<tokio::net::TcpStream>) -> Option<Reply> {
    let mut line = String::new();
    conn.read_line(&mut line).await.ok()?;
    let status = line.split_whitespace().nth(1)?.parse().ok()?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        conn.read_line(&mut line).await.ok()?;
        let trimmed = line.trim_end();
        if trimmed.is_empty() {
            break;
        }
        let (name, value) = trimmed.split_once(':')?;
        headers.push((name.trim().to_owned(), value.trim().to_owned()));
    }
    let get = |name: &str| {
        headers
            .iter()
            .find(|(k, _): &&(String, String)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let mut body = Vec::new();
    if let Some(len) = get("content-length") {
        body.resize(len.parse().ok()?, 0);
        conn.read_exact(&mut body).await.ok()?;
    } else if get("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        loop {
            line.clear();
            conn.read_line(&mut line).await.ok()?;
            let size = usize::from_str_radix(line.trim(), 16).ok()?;
            let mut chunk = vec![0; size + 2];
            conn.read_exact(&mut chunk).await.ok()?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    } else {
        conn.read_to_end(&mut body).await.ok()?;
    }
    Some(Reply {
        status,
        headers,
        body,
    })
}

pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// gzip through the system's `gzip`, as a gateway's HTTP client would compress.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = Command::new("gzip")
        .arg("-c")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("gzip");
    let mut stdin = child.stdin.take().unwrap();
    let input = bytes.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success());
    out.stdout
}

pub fn cache_dir() -> PathBuf {
    std::env::var_os("TRIPLINE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/tripline"))
}

pub const MASTER_KEY: &str = "sk-e2e-master-key-0123456789abcdef";

/// A LiteLLM proxy from PyPI (`litellm[proxy]==1.106.12`, installed by scripts/install.sh) on
/// loopback: mock_response models, no upstream provider, no network, no database.
pub struct LiteLlm {
    child: Child,
    pub addr: String,
}

impl LiteLlm {
    pub async fn start(env: &TestEnv, tripline_listen: &str) -> LiteLlm {
        let callback = format!(
            r#"  callbacks: ["tripline"]
callback_settings:
  tripline:
    callback_type: generic_api
    endpoint: http://{tripline_listen}/v1/logs/litellm
    headers: {{Authorization: os.environ/TRIPLINE_COLLECTOR_AUTH}}
    log_format: json_array
    max_retries: 5
    retry_delay: 1
"#
        );
        Self::start_with(env, &callback, &[]).await
    }

    /// A proxy whose `litellm_settings` end with `callbacks` (YAML, indented under it), with
    /// `vars` in its environment.
    pub async fn start_with(env: &TestEnv, callbacks: &str, vars: &[(&str, &str)]) -> LiteLlm {
        let bin = std::env::var_os("TRIPLINE_VENV")
            .map(PathBuf::from)
            .unwrap_or_else(|| cache_dir().join("venv"))
            .join("bin/litellm");
        assert!(
            bin.exists(),
            "{} is missing: run scripts/install.sh (it installs litellm[proxy]==1.106.12)",
            bin.display()
        );
        let port = free_port();
        let config = format!(
            r#"model_list:
  - model_name: gpt-4o-mini
    litellm_params: {{model: openai/gpt-4o-mini, api_key: not-a-real-key, mock_response: "Hello from a mock."}}
  - model_name: rate-limited
    litellm_params: {{model: openai/gpt-4o-mini, api_key: not-a-real-key, mock_response: "litellm.RateLimitError"}}
  - model_name: broken
    litellm_params: {{model: openai/gpt-4o, api_key: not-a-real-key, mock_response: "litellm.InternalServerError"}}
router_settings:
  num_retries: 0
litellm_settings:
  num_retries: 0
{callbacks}"#
        );
        let path = env.dir.join("litellm.yaml");
        std::fs::write(&path, config).unwrap();
        let log = std::fs::File::create(env.dir.join("litellm.log")).unwrap();
        let mut command = Command::new(&bin);
        command
            .current_dir(&env.dir)
            .arg("--config")
            .arg(&path)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
            .env("LITELLM_MASTER_KEY", MASTER_KEY)
            // The README's setup: the whole header value comes from the environment.
            .env("TRIPLINE_COLLECTOR_AUTH", bearer(TOKEN))
            .env("DEFAULT_BATCH_SIZE", "2")
            .env("DEFAULT_FLUSH_INTERVAL_SECONDS", "3600")
            .env("NO_PROXY", "127.0.0.1,localhost")
            .env_remove("HTTP_PROXY")
            .env_remove("HTTPS_PROXY")
            .env_remove("DATABASE_URL")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null());
        for (name, value) in vars {
            command.env(name, value);
        }
        let child = command.spawn().expect("start litellm");
        let proxy = LiteLlm {
            child,
            addr: format!("127.0.0.1:{port}"),
        };
        // Its start-up imports a lot: allow two minutes on a busy 2-core machine.
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some((200, _)) = http_get(&proxy.addr, "/health/liveliness").await {
                return proxy;
            }
            assert!(
                Instant::now() < deadline,
                "litellm did not start; see {}",
                env.dir.join("litellm.log").display()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// One chat completion as an OpenAI client would send it.
    pub async fn chat(&self, model: &str, user: &str, prompt: &str, stream: bool) -> Reply {
        let body = serde_json::json!({
            "model": model,
            "user": user,
            "stream": stream,
            "messages": [{"role": "user", "content": prompt}],
        });
        let auth = bearer(MASTER_KEY);
        post(
            &self.addr,
            "/v1/chat/completions",
            &[
                ("Authorization", auth.as_str()),
                ("Content-Type", "application/json"),
                ("User-Agent", "tripline-e2e/1.0"),
            ],
            body.to_string().as_bytes(),
        )
        .await
    }
}

impl Drop for LiteLlm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `tripline <role>` on `config`, with `vars` in its environment (collector tokens); its
/// log goes to `env.log_path(tag)`.
pub fn spawn_role(
    env: &TestEnv,
    role: &str,
    config: &Path,
    tag: &str,
    vars: &[(&str, &str)],
) -> Tripline {
    let log = std::fs::File::create(env.log_path(tag)).unwrap();
    let mut command = tripline_command(role, config, log, "info,tripline_collector=debug", None);
    for (name, value) in vars {
        command.env(name, value);
    }
    Tripline {
        child: command.spawn().expect("start tripline"),
    }
}

/// Writes this test's config with `extra` appended to `<test dir>/<file>`; returns its path.
pub fn config_with(env: &TestEnv, file: &str, extra: &str) -> PathBuf {
    let base = std::fs::read_to_string(env.config_path()).unwrap();
    let path = env.dir.join(file);
    std::fs::write(&path, format!("{base}\n{extra}")).unwrap();
    path
}

/// Every row of `table`, as ClickHouse's TabSeparated text (to look for what must not be there).
pub async fn table_text(env: &TestEnv, table: &str) -> String {
    let rows = env
        .clickhouse()
        .query_raw(&format!("SELECT * FROM `{table}` FORMAT TabSeparated"))
        .fetch_bytes("TabSeparated")
        .unwrap()
        .collect()
        .await
        .unwrap();
    String::from_utf8_lossy(&rows).into_owned()
}
