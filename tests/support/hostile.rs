//! A hostile stand-in for Cloudflare: a raw HTTP/1.1 server on 127.0.0.1:0 that sits in front of
//! a real simulator and, for the requests in its current [`Scope`], answers with one kind of
//! garbage ([`Misbehave`]) instead of forwarding. Requests outside the scope are forwarded to the
//! simulator unchanged, so the simulator stays the backing store the test can inspect.
//!
//! It is written on bare `tokio::net` rather than a framework so it can do what no well-behaved
//! server does: stall after the headers, cut a body short, send non-HTTP bytes, lie about the
//! length. Every response carries `Connection: close`, so each request uses a fresh connection.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Which requests get the hostile answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// None: everything is forwarded to the simulator.
    Nothing = 0,
    /// Writes (put, delete, batch_put, batch_delete); reads are forwarded.
    Writes = 1,
    /// Every API request.
    Everything = 2,
}

/// The one kind of bad answer a [`Hostile`] server gives.
#[derive(Debug, Clone)]
pub enum Misbehave {
    /// HTTP 200, JSON content type, a body that is not JSON (and not merely cut short).
    MalformedJson,
    /// HTTP 200 with an HTML page.
    WrongContentType,
    /// HTTP 200, JSON content type, no body at all.
    EmptyBody,
    /// `Content-Length` promises more bytes than are sent before the connection closes.
    TruncatedByLength,
    /// No length, `Connection: close`, and the JSON document ends in the middle.
    TruncatedJson,
    /// HTTP 200 with `success: false` and no errors.
    SuccessFalseOn200,
    /// HTTP 200 with `success: false` and an error code nobody knows.
    UnknownCodeOn200,
    /// HTTP 400 with an error code nobody knows.
    UnknownCodeOn400,
    /// HTTP 503 with an error code nobody knows.
    UnknownCodeOn503,
    /// A well-formed envelope whose `result` is a string.
    WrongShapeResult,
    /// A JSON body that is not an object (`null`).
    NullBody,
    /// `success` is the string "true" rather than a boolean.
    StringlySuccess,
    /// `Content-Length` of 9 MiB (more than the client's 8 MiB cap), body sent in full.
    HugeDeclared,
    /// 9 MiB streamed with chunked encoding, no length announced.
    HugeChunked,
    /// Status line and headers, then silence with the connection held open.
    StallAfterHeaders,
    /// Reads the request, then never answers (connection held open).
    NeverAnswer,
    /// Reads the request and closes the connection without a byte.
    CloseAtOnce,
    /// Answers with bytes that are not HTTP.
    NotHttp,
    /// A 307 redirect to another path of this server (which counts any visit as theft).
    RedirectElsewhere,
    /// HTTP 429 with a `Retry-After` of the given raw text.
    RateLimited(&'static str),
    /// HTTP 400 code 10001 whose message repeats the request's credential headers.
    EchoesCredentials,
    /// HTTP 400 code 1146 (Cloudflare's "invalid or missing origin IP address").
    InvalidIp,
    /// HTTP 502 with a proxy's HTML error page.
    ProxyHtml502,
}

/// A running hostile server; its accept loop stops when this is dropped.
pub struct Hostile {
    addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

struct State {
    scope: AtomicU8,
    behaviour: Misbehave,
    upstream: String,
    http: reqwest::Client,
    /// Hostile answers given, by operation.
    hostile: Mutex<BTreeMap<&'static str, u64>>,
    /// Requests forwarded to the simulator.
    forwarded: AtomicU64,
    /// Visits to the redirect target.
    stolen: AtomicU64,
}

/// A parsed request.
struct Request {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl Hostile {
    /// Starts the server in front of the simulator at `upstream` (`http://127.0.0.1:N`), with
    /// scope [`Scope::Nothing`].
    pub async fn start(upstream: &str, behaviour: Misbehave) -> Hostile {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind hostile");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            scope: AtomicU8::new(Scope::Nothing as u8),
            behaviour,
            upstream: upstream.trim_end_matches('/').to_string(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            hostile: Mutex::new(BTreeMap::new()),
            forwarded: AtomicU64::new(0),
            stolen: AtomicU64::new(0),
        });
        let st = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let st = st.clone();
                tokio::spawn(async move {
                    let _ = serve(st, stream).await;
                });
            }
        });
        Hostile { addr, state, task }
    }

    /// The API base to give the operator, `http://127.0.0.1:N/client/v4`.
    pub fn base_url(&self) -> String {
        format!("http://{}/client/v4", self.addr)
    }

    /// Changes which requests get the hostile answer.
    pub fn set_scope(&self, scope: Scope) {
        self.state.scope.store(scope as u8, Ordering::SeqCst);
    }

    /// Hostile answers given so far, by operation.
    pub fn hostile_counts(&self) -> BTreeMap<&'static str, u64> {
        self.state.hostile.lock().unwrap().clone()
    }

    /// Hostile answers given so far, all operations.
    pub fn hostile_total(&self) -> u64 {
        self.hostile_counts().values().sum()
    }

    /// Requests forwarded to the simulator so far.
    pub fn forwarded(&self) -> u64 {
        self.state.forwarded.load(Ordering::SeqCst)
    }

    /// Requests that followed the redirect (must stay 0: credentials must not follow one).
    pub fn stolen(&self) -> u64 {
        self.state.stolen.load(Ordering::SeqCst)
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The API operation a request is, from its method and path.
fn op_of(method: &str, path: &str) -> &'static str {
    let Some(rest) = path.strip_prefix("/client/v4/zones/") else {
        return "other";
    };
    let tail = rest
        .split_once("/origin/cloud_regions")
        .map(|(_, t)| t)
        .unwrap_or("?");
    match (method, tail) {
        ("GET", "") => "list",
        ("GET", "/supported_regions") => "supported_regions",
        ("PUT", "/batch") => "batch_put",
        ("DELETE", "/batch") => "batch_delete",
        ("GET", _) => "get",
        ("PUT", _) => "put",
        ("DELETE", _) => "delete",
        _ => "other",
    }
}

fn is_write(op: &str) -> bool {
    matches!(op, "put" | "delete" | "batch_put" | "batch_delete")
}

async fn read_request(stream: &mut TcpStream) -> std::io::Result<Option<Request>> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = stream.read(&mut tmp).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&tmp[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or("").split(' ');
    let method = first.next().unwrap_or("").to_string();
    let target = first.next().unwrap_or("").to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        let n = stream.read(&mut tmp).await?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&tmp[..n]);
    }
    Ok(Some(Request {
        method,
        target,
        headers,
        body,
    }))
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        307 => "Temporary Redirect",
        400 => "Bad Request",
        404 => "Not Found",
        429 => "Too Many Requests",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Whatever",
    }
}

async fn respond(
    stream: &mut TcpStream,
    status: u16,
    extra: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {status} {}\r\n", reason_phrase(status));
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.flush().await?;
    stream.shutdown().await
}

const JSON: (&str, &str) = ("Content-Type", "application/json");

/// Holds a connection open without answering, for longer than any test runs.
async fn hold(stream: TcpStream) {
    tokio::time::sleep(Duration::from_secs(600)).await;
    drop(stream);
}

async fn serve(st: Arc<State>, mut stream: TcpStream) -> std::io::Result<()> {
    let Some(req) = read_request(&mut stream).await? else {
        return Ok(());
    };
    let path = req.target.split('?').next().unwrap_or("").to_string();
    if path == "/stolen" {
        st.stolen.fetch_add(1, Ordering::SeqCst);
        return respond(
            &mut stream,
            200,
            &[JSON],
            br#"{"success":true,"result":null}"#,
        )
        .await;
    }
    let op = op_of(&req.method, &path);
    let scope = st.scope.load(Ordering::SeqCst);
    let hostile = (scope == Scope::Everything as u8 && op != "other")
        || (scope == Scope::Writes as u8 && is_write(op));
    if !hostile {
        st.forwarded.fetch_add(1, Ordering::SeqCst);
        return forward(&st, &mut stream, &req).await;
    }
    *st.hostile.lock().unwrap().entry(op).or_default() += 1;
    misbehave(&st, stream, &req).await
}

async fn forward(st: &State, stream: &mut TcpStream, req: &Request) -> std::io::Result<()> {
    let method = reqwest::Method::from_bytes(req.method.as_bytes()).unwrap();
    let mut out = st
        .http
        .request(method, format!("{}{}", st.upstream, req.target));
    for name in [
        "authorization",
        "x-auth-email",
        "x-auth-key",
        "content-type",
    ] {
        if let Some(v) = req.header(name) {
            out = out.header(name, v);
        }
    }
    let resp = match out.body(req.body.clone()).send().await {
        Ok(r) => r,
        Err(_) => return respond(stream, 502, &[], b"upstream down").await,
    };
    let status = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_string();
    let ra = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = resp.bytes().await.unwrap_or_default();
    let mut extra = vec![("Content-Type", ct.as_str())];
    if let Some(ra) = &ra {
        extra.push(("Retry-After", ra.as_str()));
    }
    respond(stream, status, &extra, &body).await
}

async fn misbehave(st: &State, mut stream: TcpStream, req: &Request) -> std::io::Result<()> {
    let s = &mut stream;
    match &st.behaviour {
        Misbehave::MalformedJson => {
            respond(s, 200, &[JSON], br#"{"success": tru, "result": {]}"#).await
        }
        Misbehave::WrongContentType => {
            respond(
                s,
                200,
                &[("Content-Type", "text/html; charset=utf-8")],
                b"<html><body><h1>It works!</h1></body></html>",
            )
            .await
        }
        Misbehave::EmptyBody => respond(s, 200, &[JSON], b"").await,
        Misbehave::TruncatedByLength => {
            let body = br#"{"success":true,"errors":[],"messages":[],"result":{"origin_ip":"#;
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                body.len() + 200
            );
            s.write_all(head.as_bytes()).await?;
            s.write_all(body).await?;
            s.shutdown().await
        }
        Misbehave::TruncatedJson => {
            let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n";
            s.write_all(head.as_bytes()).await?;
            s.write_all(br#"{"success":true,"errors":[],"messages":[],"result":{"origin_ip":"19"#)
                .await?;
            s.shutdown().await
        }
        Misbehave::SuccessFalseOn200 => {
            respond(
                s,
                200,
                &[JSON],
                br#"{"success":false,"errors":[],"messages":[],"result":null}"#,
            )
            .await
        }
        Misbehave::UnknownCodeOn200 => {
            respond(
                s,
                200,
                &[JSON],
                br#"{"success":false,"errors":[{"code":48879,"message":"the moon is in the wrong phase"}],"messages":[],"result":null}"#,
            )
            .await
        }
        Misbehave::UnknownCodeOn400 => {
            respond(
                s,
                400,
                &[JSON],
                br#"{"success":false,"errors":[{"code":48879,"message":"the moon is in the wrong phase"}],"messages":[],"result":null}"#,
            )
            .await
        }
        Misbehave::UnknownCodeOn503 => {
            respond(
                s,
                503,
                &[JSON],
                br#"{"success":false,"errors":[{"code":48879,"message":"the moon is in the wrong phase"}],"messages":[],"result":null}"#,
            )
            .await
        }
        Misbehave::WrongShapeResult => {
            respond(
                s,
                200,
                &[JSON],
                br#"{"success":true,"errors":[],"messages":[],"result":"surprise","result_info":"also wrong"}"#,
            )
            .await
        }
        Misbehave::NullBody => respond(s, 200, &[JSON], b"null").await,
        Misbehave::StringlySuccess => {
            respond(
                s,
                200,
                &[JSON],
                br#"{"success":"true","errors":[],"messages":[],"result":[]}"#,
            )
            .await
        }
        Misbehave::HugeDeclared => {
            let body = vec![b' '; 9 << 20];
            // The client may hang up as soon as it sees the length; that is its right.
            let _ = respond(s, 200, &[JSON], &body).await;
            Ok(())
        }
        Misbehave::HugeChunked => {
            let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
            s.write_all(head.as_bytes()).await?;
            let chunk = vec![b' '; 64 << 10];
            let framed = [format!("{:x}\r\n", chunk.len()).as_bytes(), &chunk, b"\r\n"].concat();
            for _ in 0..(9 << 4) {
                if s.write_all(&framed).await.is_err() {
                    return Ok(());
                }
            }
            let _ = s.write_all(b"0\r\n\r\n").await;
            s.shutdown().await
        }
        Misbehave::StallAfterHeaders => {
            let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"success\":";
            s.write_all(head.as_bytes()).await?;
            s.flush().await?;
            hold(stream).await;
            Ok(())
        }
        Misbehave::NeverAnswer => {
            hold(stream).await;
            Ok(())
        }
        Misbehave::CloseAtOnce => {
            drop(stream);
            Ok(())
        }
        Misbehave::NotHttp => {
            s.write_all(b"SSH-2.0-OpenSSH_9.6\r\n\x00\x01\x02garbage\r\n\r\n")
                .await?;
            s.shutdown().await
        }
        Misbehave::RedirectElsewhere => {
            let addr = s.local_addr()?;
            let location = format!("http://{addr}/stolen");
            respond(
                s,
                307,
                &[JSON, ("Location", location.as_str())],
                br#"{"success":false,"errors":[],"messages":[],"result":null}"#,
            )
            .await
        }
        Misbehave::RateLimited(retry_after) => {
            respond(
                s,
                429,
                &[JSON, ("Retry-After", retry_after)],
                br#"{"success":false,"errors":[{"code":10013,"message":"Rate limited"}],"messages":[],"result":null}"#,
            )
            .await
        }
        Misbehave::EchoesCredentials => {
            let seen = ["authorization", "x-auth-key", "x-auth-email"]
                .iter()
                .filter_map(|h| req.header(h))
                .collect::<Vec<_>>()
                .join(" / ");
            let body = serde_json::json!({
                "success": false,
                "errors": [{"code": 10001, "message": format!("bad request; you sent {seen}")}],
                "messages": [],
                "result": null,
            });
            respond(s, 400, &[JSON], body.to_string().as_bytes()).await
        }
        Misbehave::InvalidIp => {
            respond(
                s,
                400,
                &[JSON],
                br#"{"success":false,"errors":[{"code":1146,"message":"Invalid or missing origin IP address."}],"messages":[],"result":null}"#,
            )
            .await
        }
        Misbehave::ProxyHtml502 => {
            respond(
                s,
                502,
                &[("Content-Type", "text/html")],
                b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>",
            )
            .await
        }
    }
}
