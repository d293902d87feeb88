//! The router-readiness probe behind `vip.track_router`: one HTTP/1.1 `GET` over a plain
//! `tokio::net::TcpStream`, bounded by a timeout. A 2xx status is success; any other status, a
//! refused connection, a timeout or a malformed answer is failure. The request text and the status
//! line parser are pure and unit-tested; [`probe`] is the adapter.

use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The request: HTTP/1.1 with `Connection: close`, so the server ends the answer by closing.
pub fn request(host: &str, port: u16, path: &str) -> String {
    let host_header = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: tandem-vip\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    )
}

/// The status code of an answer that starts with `HTTP/1.x NNN`, once the status line is complete.
pub fn parse_status(head: &[u8]) -> Option<u16> {
    let end = head.windows(2).position(|w| w == b"\r\n")?;
    let line = std::str::from_utf8(&head[..end]).ok()?;
    let mut parts = line.split(' ');
    let version = parts.next()?;
    if !version.starts_with("HTTP/1.") {
        return None;
    }
    let code = parts.next()?;
    if code.len() != 3 {
        return None;
    }
    code.parse().ok().filter(|c| (100..600).contains(c))
}

/// The first line of the body, cut to 200 characters: the reason a `/ready` gives when it is not.
pub fn body_line(answer: &[u8]) -> String {
    let text = String::from_utf8_lossy(answer);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    body.lines()
        .next()
        .unwrap_or("")
        .chars()
        .take(200)
        .collect()
}

/// `Ok(())` for a 2xx answer; otherwise why not (for the log).
pub async fn probe(host: &str, port: u16, path: &str, timeout: Duration) -> Result<(), String> {
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect((host, port))
            .await
            .map_err(|e| format!("cannot connect: {e}"))?;
        s.write_all(request(host, port, path).as_bytes())
            .await
            .map_err(|e| format!("cannot send the request: {e}"))?;
        // Read the status line and a little of the body (the reason); never more than 8 KiB.
        let mut buf = Vec::with_capacity(1024);
        let mut chunk = [0u8; 1024];
        loop {
            let n = s
                .read(&mut chunk)
                .await
                .map_err(|e| format!("cannot read the answer: {e}"))?;
            if n == 0 || buf.len() >= 8192 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        match parse_status(&buf) {
            Some(c) if (200..300).contains(&c) => Ok(()),
            Some(c) => Err(format!("answered {c} {}", body_line(&buf))
                .trim_end()
                .to_string()),
            None => Err("not an HTTP/1.x answer".to_string()),
        }
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_text() {
        assert_eq!(
            request("127.0.0.1", 8008, "/ready"),
            "GET /ready HTTP/1.1\r\nHost: 127.0.0.1:8008\r\nUser-Agent: tandem-vip\r\nAccept: */*\r\nConnection: close\r\n\r\n"
        );
        assert!(request("::1", 80, "/").contains("Host: [::1]:80\r\n"));
    }

    #[test]
    fn status_lines() {
        assert_eq!(parse_status(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(
            parse_status(b"HTTP/1.0 503 Service Unavailable\r\nx"),
            Some(503)
        );
        assert_eq!(parse_status(b"HTTP/1.1 204\r\n"), Some(204));
        assert_eq!(parse_status(b"HTTP/1.1 200 OK"), None, "incomplete line");
        assert_eq!(parse_status(b"HTTP/2 200\r\n"), None);
        assert_eq!(parse_status(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(parse_status(b"HTTP/1.1 2000 x\r\n"), None);
        assert_eq!(parse_status(b""), None);
        assert_eq!(
            body_line(b"HTTP/1.1 503 x\r\na: b\r\n\r\n{\"ready\":false}\nmore"),
            "{\"ready\":false}"
        );
    }

    /// Against a listener on loopback: 200 is success, 503 failure with its reason, a closed port
    /// is refused, a silent server times out.
    #[test]
    fn probe_outcomes() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let serve = |answer: &'static str| async move {
                let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let port = l.local_addr().unwrap().port();
                tokio::spawn(async move {
                    while let Ok((mut s, _)) = l.accept().await {
                        let mut b = [0u8; 1024];
                        let _ = s.read(&mut b).await;
                        if !answer.is_empty() {
                            let _ = s.write_all(answer.as_bytes()).await;
                            let _ = s.shutdown().await;
                        } else {
                            // Silent: hold the connection open.
                            tokio::time::sleep(Duration::from_secs(5)).await;
                        }
                    }
                });
                port
            };
            let t = Duration::from_millis(500);
            let ok = serve("HTTP/1.1 200 OK\r\ncontent-length: 15\r\n\r\n{\"ready\":true}\n").await;
            assert_eq!(probe("127.0.0.1", ok, "/ready", t).await, Ok(()));
            let down =
                serve("HTTP/1.1 503 Service Unavailable\r\n\r\n{\"ready\":false,\"reason\":\"no leader\"}\n")
                    .await;
            let e = probe("127.0.0.1", down, "/ready", t).await.unwrap_err();
            assert!(e.contains("503") && e.contains("no leader"), "{e}");
            let silent = serve("").await;
            let e = probe("127.0.0.1", silent, "/ready", t).await.unwrap_err();
            assert!(e.contains("no answer within"), "{e}");
            // A port nobody listens on: bind, note the port, close.
            let closed = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let e = probe("127.0.0.1", closed, "/ready", t).await.unwrap_err();
            assert!(e.contains("cannot connect"), "{e}");
        });
    }
}
