//! Unit tests of the client against a tiny raw-TCP server that answers with hostile bytes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;

const ZONE: &str = "023e105f4ecef8ad9ca31a8372d0c353";
const TOKEN: &str = "tok-XYZZY-distinctive-4242";

/// What the server does with every connection.
#[derive(Clone)]
enum Reply {
    /// Write these bytes, then close.
    Bytes(Vec<u8>),
    /// Write these bytes, then keep the connection open without writing more.
    BytesThenHang(Vec<u8>),
    /// Close without writing anything.
    Close,
    /// Answer 400 with an error message that echoes the Authorization header.
    EchoAuth,
}

struct Server {
    base: String,
    hits: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<String>>>,
}

async fn serve(reply: Reply) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/client/v4", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(Mutex::new(Vec::new()));
    let (h, r) = (hits.clone(), requests.clone());
    tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                return;
            };
            h.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(handle(sock, reply.clone(), r.clone()));
        }
    });
    Server {
        base,
        hits,
        requests,
    }
}

async fn handle(mut sock: TcpStream, reply: Reply, requests: Arc<Mutex<Vec<String>>>) {
    let head = read_request(&mut sock).await;
    requests.lock().unwrap().push(head.clone());
    match reply {
        Reply::Bytes(b) => {
            let _ = sock.write_all(&b).await;
            let _ = sock.shutdown().await;
        }
        Reply::BytesThenHang(b) => {
            let _ = sock.write_all(&b).await;
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        Reply::Close => {}
        Reply::EchoAuth => {
            let auth = head
                .lines()
                .find(|l| l.to_ascii_lowercase().starts_with("authorization:"))
                .unwrap_or("")
                .to_string();
            let body = serde_json::json!({
                "success": false, "result": null, "messages": [],
                "errors": [{"code": 10000, "message": format!("bad header {auth}")}],
            })
            .to_string();
            let _ = sock
                .write_all(&response(403, "application/json", &body))
                .await;
            let _ = sock.shutdown().await;
        }
    }
}

/// Reads the request head and any Content-Length body, returning the head.
async fn read_request(sock: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                match sock.read(&mut tmp).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&tmp[..n]),
                }
            }
            return head;
        }
        match sock.read(&mut tmp).await {
            Ok(0) | Err(_) => return String::from_utf8_lossy(&buf).into_owned(),
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
        }
    }
}

fn response(status: u16, content_type: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn raw(head_and_body: &str) -> Vec<u8> {
    head_and_body.as_bytes().to_vec()
}

fn config(base: &str) -> ClientConfig {
    ClientConfig {
        base_url: base.to_string(),
        max_attempts: 1,
        min_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(20),
        request_timeout: Duration::from_millis(500),
        max_body_bytes: 4096,
        ..ClientConfig::default()
    }
}

fn client_with(cfg: ClientConfig) -> Client {
    Clients::new(cfg, None).client(Credentials::ApiToken(TOKEN.into()))
}

const MAPPING: &str = r#"{"success":true,"errors":[],"messages":[],"result":{"origin_ip":"192.0.2.1","vendor":"aws","region":"us-east-1"}}"#;

#[tokio::test]
async fn hostile_responses_are_classified() {
    let big = format!(
        r#"{{"success":true,"errors":[],"messages":[],"result":{{"origin_ip":"192.0.2.1","vendor":"aws","region":"{}"}}}}"#,
        "x".repeat(10_000)
    );
    let chunked_big = {
        let chunk = "y".repeat(1000);
        let mut s = String::from(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\
             connection: close\r\n\r\n",
        );
        for _ in 0..10 {
            s.push_str(&format!("{:x}\r\n{chunk}\r\n", chunk.len()));
        }
        s.push_str("0\r\n\r\n");
        s
    };
    let cases: Vec<(&str, Reply, ErrorKind, bool)> = vec![
        (
            "malformed JSON",
            Reply::Bytes(response(200, "application/json", "{not json at all}")),
            ErrorKind::BadResponse,
            false,
        ),
        (
            "wrong content type",
            Reply::Bytes(response(200, "text/html", "<html>captive portal</html>")),
            ErrorKind::BadResponse,
            false,
        ),
        (
            "empty body",
            Reply::Bytes(response(200, "application/json", "")),
            ErrorKind::BadResponse,
            true,
        ),
        (
            "truncated JSON, close-delimited",
            Reply::Bytes(raw(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n\
                 {\"success\":true,\"result\":{\"origin_ip\":\"19",
            )),
            ErrorKind::BadResponse,
            true,
        ),
        (
            "truncated body, short of Content-Length",
            Reply::Bytes(raw(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 500\r\n\
                 connection: close\r\n\r\n{\"success\":true,",
            )),
            ErrorKind::Transport,
            true,
        ),
        (
            "success:false with HTTP 200 and no errors",
            Reply::Bytes(response(
                200,
                "application/json",
                r#"{"success":false,"errors":[],"messages":[],"result":null}"#,
            )),
            ErrorKind::BadResponse,
            false,
        ),
        (
            "success:false with HTTP 200 and a known code",
            Reply::Bytes(response(
                200,
                "application/json",
                r#"{"success":false,"errors":[{"code":1164,"message":"full"}],"messages":[],"result":null}"#,
            )),
            ErrorKind::ZoneLimit,
            false,
        ),
        (
            "unknown error code",
            Reply::Bytes(response(
                400,
                "application/json",
                r#"{"success":false,"errors":[{"code":987654,"message":"new thing"}],"messages":[],"result":null}"#,
            )),
            ErrorKind::BadRequest,
            false,
        ),
        (
            "result of the wrong shape",
            Reply::Bytes(response(
                200,
                "application/json",
                r#"{"success":true,"errors":[],"messages":[],"result":[1,2,3]}"#,
            )),
            ErrorKind::BadResponse,
            false,
        ),
        (
            "success:true without result",
            Reply::Bytes(response(200, "application/json", r#"{"success":true}"#)),
            ErrorKind::BadResponse,
            false,
        ),
        (
            "JSON that is not an object",
            Reply::Bytes(response(200, "application/json", "[]")),
            ErrorKind::BadResponse,
            false,
        ),
        (
            "envelope without success",
            Reply::Bytes(response(200, "application/json", r#"{"result":{}}"#)),
            ErrorKind::BadResponse,
            false,
        ),
        (
            "body larger than max_body_bytes (Content-Length)",
            Reply::Bytes(response(200, "application/json", &big)),
            ErrorKind::BadResponse,
            false,
        ),
        (
            "body larger than max_body_bytes (chunked)",
            Reply::Bytes(raw(&chunked_big)),
            ErrorKind::BadResponse,
            false,
        ),
        (
            "body that never ends",
            Reply::BytesThenHang(raw(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\
                 \r\n{\"success\":true,",
            )),
            ErrorKind::Transport,
            true,
        ),
        (
            "no response at all",
            Reply::BytesThenHang(Vec::new()),
            ErrorKind::Transport,
            true,
        ),
        (
            "connection closed",
            Reply::Close,
            ErrorKind::Transport,
            true,
        ),
        (
            "garbage instead of HTTP",
            Reply::Bytes(raw("SSH-2.0-OpenSSH\r\n\r\n")),
            ErrorKind::Transport,
            true,
        ),
        (
            "HTML 502 from a proxy",
            Reply::Bytes(response(502, "text/html", "<html>Bad gateway</html>")),
            ErrorKind::Server,
            true,
        ),
        (
            "429 in plain text",
            Reply::Bytes(raw(
                "HTTP/1.1 429 Too Many\r\ncontent-type: text/plain\r\nretry-after: 7\r\n\
                 content-length: 4\r\nconnection: close\r\n\r\nslow",
            )),
            ErrorKind::RateLimited,
            true,
        ),
        (
            "401 without body",
            Reply::Bytes(response(401, "application/json", "")),
            ErrorKind::Unauthorized,
            false,
        ),
        (
            "redirect (not followed)",
            Reply::Bytes(raw(
                "HTTP/1.1 302 Found\r\nlocation: http://example.invalid/\r\n\
                 content-length: 0\r\nconnection: close\r\n\r\n",
            )),
            ErrorKind::BadResponse,
            false,
        ),
    ];
    for (name, reply, kind, retryable) in cases {
        let server = serve(reply).await;
        let client = client_with(config(&server.base));
        let started = std::time::Instant::now();
        let err = client
            .put(
                ZONE,
                &MappingInput {
                    origin_ip: "192.0.2.1".into(),
                    vendor: "aws".into(),
                    region: "us-east-1".into(),
                },
            )
            .await
            .expect_err(name);
        assert_eq!(err.kind(), kind, "{name}: {err}");
        assert_eq!(err.is_retryable(), retryable, "{name}: {err}");
        assert_eq!(server.hits.load(Ordering::SeqCst), 1, "{name}: one attempt");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{name}: took too long"
        );
        let text = err.to_string();
        assert!(
            text.contains("put") && text.contains(ZONE) && text.contains("192.0.2.1"),
            "{name}: {text}"
        );
        assert!(!text.contains(TOKEN), "{name}: {text}");
        if name.contains("never ends") || name.contains("no response") {
            assert!(matches!(err, Error::Timeout { .. }), "{name}: {err:?}");
        }
        if name.contains("429") {
            assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));
        }
    }
}

#[tokio::test]
async fn good_response_and_auth_headers() {
    let server = serve(Reply::Bytes(response(
        200,
        "application/json; charset=utf-8",
        MAPPING,
    )))
    .await;
    let clients = Clients::new(config(&server.base), None);
    let m = clients
        .client(Credentials::ApiToken(format!("{TOKEN}\n")))
        .get(ZONE, "192.0.2.1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m.region, "us-east-1");
    clients
        .client(Credentials::ApiKey {
            email: "ops@example.com".into(),
            key: "key-123456".into(),
        })
        .get(ZONE, "2001:0DB8:0:0::1")
        .await
        .unwrap();
    let reqs = server.requests.lock().unwrap().clone();
    let first = reqs[0].to_ascii_lowercase();
    assert!(
        first.starts_with(&format!(
            "get /client/v4/zones/{ZONE}/origin/cloud_regions/192.0.2.1 "
        )),
        "{first}"
    );
    assert!(
        first.contains(&format!(
            "authorization: bearer {}",
            TOKEN.to_ascii_lowercase()
        )),
        "{first}"
    );
    let second = reqs[1].to_ascii_lowercase();
    // The IP is canonicalised before it goes into the URL.
    assert!(
        second.starts_with(&format!(
            "get /client/v4/zones/{ZONE}/origin/cloud_regions/2001:db8::1 "
        )),
        "{second}"
    );
    assert!(second.contains("x-auth-email: ops@example.com"), "{second}");
    assert!(second.contains("x-auth-key: key-123456"), "{second}");
    assert!(!second.contains("authorization:"), "{second}");
}

#[tokio::test]
async fn server_echo_of_the_secret_is_scrubbed() {
    let server = serve(Reply::EchoAuth).await;
    let client = client_with(config(&server.base));
    assert!(!format!("{client:?}").contains(TOKEN));
    let err = client.delete(ZONE, "192.0.2.1").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized);
    let text = format!("{err} {err:?}");
    assert!(!text.contains(TOKEN), "{text}");
    assert!(text.contains("<redacted>"), "{text}");
}

#[tokio::test]
async fn not_found_semantics() {
    let body = r#"{"success":false,"errors":[{"code":1142,"message":"not found"}],"messages":[],"result":null}"#;
    let server = serve(Reply::Bytes(response(404, "application/json", body))).await;
    let c = client_with(config(&server.base));
    assert_eq!(c.get(ZONE, "192.0.2.1").await.unwrap(), None);
    let e = c.delete(ZONE, "192.0.2.1").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert_eq!(e.code(), Some(1142));

    // 404 with a routing code (malformed zone) must not read as "no mapping".
    let body = r#"{"success":false,"errors":[{"code":7003,"message":"Could not route"}],"messages":[],"result":null}"#;
    let server = serve(Reply::Bytes(response(404, "application/json", body))).await;
    let e = client_with(config(&server.base))
        .get(ZONE, "192.0.2.1")
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadRequest);
}

#[tokio::test]
async fn invalid_input_makes_no_request() {
    let server = serve(Reply::Bytes(response(200, "application/json", MAPPING))).await;
    let c = client_with(config(&server.base));
    for ip in [
        "192.0.02.1",
        "",
        "1.2.3",
        "::1%eth0",
        "10.0.0.0/8",
        "../../x",
    ] {
        let e = c.get(ZONE, ip).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{ip}");
        assert!(
            e.to_string().contains(&format!("{ip:?}")) || ip.is_empty(),
            "{e}"
        );
    }
    for zone in ["", "a/b", "zone?x=1", &"a".repeat(33)] {
        let e = c.supported_regions(zone).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{zone}");
    }
    let items: Vec<MappingInput> = (0..101)
        .map(|i| MappingInput {
            origin_ip: format!("10.0.0.{i}"),
            vendor: "aws".into(),
            region: "us-east-1".into(),
        })
        .collect();
    let e = c.batch_put(ZONE, &items).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    let ips: Vec<String> = (0..101).map(|i| format!("10.0.0.{i}")).collect();
    assert_eq!(
        c.batch_delete(ZONE, &ips).await.unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    assert_eq!(
        c.batch_put(ZONE, &[]).await.unwrap(),
        BatchResult::default()
    );
    assert!(matches!(
        c.list_page(ZONE, 0, 10).await,
        Err(Error::InvalidInput { .. })
    ));
    assert!(matches!(
        c.list_page(ZONE, 1, 101).await,
        Err(Error::InvalidInput { .. })
    ));
    let bad_creds =
        Clients::new(config(&server.base), None).client(Credentials::ApiToken("a\nb".into()));
    assert_eq!(
        bad_creds.get(ZONE, "192.0.2.1").await.unwrap_err().kind(),
        ErrorKind::Unauthorized
    );
    let bad_base = client_with(config("not a url"));
    assert_eq!(
        bad_base.get(ZONE, "192.0.2.1").await.unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    assert_eq!(server.hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn transient_failures_are_retried_up_to_max_attempts() {
    let server = serve(Reply::Bytes(response(200, "application/json", ""))).await;
    let cfg = ClientConfig {
        max_attempts: 3,
        ..config(&server.base)
    };
    let e = client_with(cfg).get(ZONE, "192.0.2.1").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadResponse);
    assert_eq!(server.hits.load(Ordering::SeqCst), 3);

    let server = serve(Reply::Bytes(response(400, "application/json", "{}"))).await;
    let cfg = ClientConfig {
        max_attempts: 3,
        ..config(&server.base)
    };
    let e = client_with(cfg).get(ZONE, "192.0.2.1").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadRequest);
    assert_eq!(
        server.hits.load(Ordering::SeqCst),
        1,
        "terminal errors are not retried"
    );
}

#[tokio::test]
async fn long_retry_after_is_returned_not_slept() {
    let server = serve(Reply::Bytes(raw(
        "HTTP/1.1 429 Too Many\r\nretry-after: 3600\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
    )))
    .await;
    let cfg = ClientConfig {
        max_attempts: 5,
        ..config(&server.base)
    };
    let started = std::time::Instant::now();
    let e = client_with(cfg).get(ZONE, "192.0.2.1").await.unwrap_err();
    assert_eq!(e.retry_after(), Some(Duration::from_secs(3600)));
    assert_eq!(server.hits.load(Ordering::SeqCst), 1);
    assert!(started.elapsed() < Duration::from_secs(2));
}
