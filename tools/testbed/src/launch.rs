//! Launching the project's own processes for tests and the benchmark: a free loopback port,
//! and the simulator's fixed start-up contract (its first stdout line is
//! `listening on http://ADDR/`).

use std::io::{BufRead, BufReader};
use std::process::Child;
use std::time::Duration;

/// A free loopback port (bound then released; the race is acceptable on a test host).
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Waits up to `timeout` for the child's `listening on URL` line and returns the URL without
/// its trailing slash. The child's stdout must be piped; a thread then keeps draining it so
/// the child never blocks on a full pipe. On failure the child is killed and reaped.
pub fn await_listening(child: &mut Child, timeout: Duration) -> Result<String, String> {
    let stdout = child
        .stdout
        .take()
        .ok_or("the child's stdout is not piped")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let _ = reader.read_line(&mut line);
        let _ = tx.send(line);
        let mut sink = String::new();
        while reader.read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {
            sink.clear();
        }
    });
    let line = rx.recv_timeout(timeout).unwrap_or_default();
    match line.trim().strip_prefix("listening on ") {
        Some(url) => Ok(url.trim_end_matches('/').to_string()),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            Err(format!(
                "no `listening on` line within {timeout:?}, got {line:?}"
            ))
        }
    }
}
