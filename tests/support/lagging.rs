//! A proxy in front of the test apiserver that delivers every watch event a fixed time late
//! while answering every other request at once: the operator behind it has a cache that lags
//! behind changes other clients make (and behind its own writes), the way a loaded apiserver,
//! a slow network or a busy process makes it lag in a real cluster.
//!
//! Plain HTTP on 127.0.0.1 towards the operator (a kubeconfig of its own), HTTPS to the
//! apiserver. Each watch chunk is held until `lag` after it arrived, so events keep their order
//! and their spacing.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

/// A running proxy; stops with the test's runtime.
pub struct LaggingWatch {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    kubeconfig: tempfile::NamedTempFile,
}

#[derive(Clone)]
struct Upstream {
    base: String,
    client: reqwest::Client,
    lag: Duration,
}

impl LaggingWatch {
    /// Starts a proxy to `upstream` (the apiserver URL) delaying watch events by `lag`, and
    /// writes a kubeconfig for it that authenticates with `token`.
    pub async fn start(upstream: &str, token: &str, lag: Duration) -> LaggingWatch {
        let client = reqwest::Client::builder()
            // Loopback to the test's own apiserver, whose CA this proxy does not load.
            .danger_accept_invalid_certs(true)
            .build()
            .expect("proxy client");
        let state = Upstream {
            base: upstream.trim_end_matches('/').to_string(),
            client,
            lag,
        };
        let app = axum::Router::new().fallback(forward).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let mut kubeconfig = tempfile::NamedTempFile::new().expect("kubeconfig file");
        let text = format!(
            "apiVersion: v1\nkind: Config\n\
             clusters:\n- name: lagging\n  cluster:\n    server: {url}\n\
             users:\n- name: admin\n  user:\n    token: {token}\n\
             contexts:\n- name: lagging\n  context:\n    cluster: lagging\n    user: admin\n\
             current-context: lagging\n"
        );
        std::io::Write::write_all(&mut kubeconfig, text.as_bytes()).expect("write kubeconfig");
        LaggingWatch { url, kubeconfig }
    }

    /// A kubeconfig that reaches the apiserver through this proxy.
    pub fn kubeconfig_path(&self) -> PathBuf {
        self.kubeconfig.path().to_path_buf()
    }
}

async fn forward(State(up): State<Upstream>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let watch = parts
        .uri
        .query()
        .is_some_and(|q| q.split('&').any(|kv| kv == "watch=true" || kv == "watch=1"));
    let body = match axum::body::to_bytes(body, 64 << 20).await {
        Ok(b) => b,
        Err(_) => return status(StatusCode::BAD_REQUEST),
    };
    let mut headers = HeaderMap::new();
    for (k, v) in &parts.headers {
        if k != "host" && k != "content-length" {
            headers.insert(k.clone(), v.clone());
        }
    }
    let sent = up
        .client
        .request(parts.method, format!("{}{path}", up.base))
        .headers(headers)
        .body(body)
        .send()
        .await;
    let mut answer = match sent {
        Ok(r) => r,
        Err(_) => return status(StatusCode::BAD_GATEWAY),
    };
    let mut out = Response::builder().status(answer.status());
    for (k, v) in answer.headers() {
        if k != "content-length" && k != "transfer-encoding" && k != "connection" {
            out = out.header(k, v);
        }
    }
    if !watch {
        let bytes = answer.bytes().await.unwrap_or_default();
        return out.body(Body::from(bytes)).unwrap();
    }
    // Watch: each chunk is released `lag` after it arrived.
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(Some(chunk)) = answer.chunk().await {
            if tx
                .send((tokio::time::Instant::now() + up.lag, chunk))
                .is_err()
            {
                return;
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        let (due, chunk) = rx.recv().await?;
        tokio::time::sleep_until(due).await;
        Some((Ok::<_, std::io::Error>(chunk), rx))
    });
    out.body(Body::from_stream(stream)).unwrap()
}

fn status(code: StatusCode) -> Response {
    Response::builder()
        .status(code)
        .body(Body::empty())
        .unwrap()
}
