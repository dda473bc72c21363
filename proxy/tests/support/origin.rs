//! A real HTTP/1.1 origin on loopback that echoes each request as JSON.
//!
//! It parses requests itself instead of using a server library, so that
//! tests see the request line and header bytes exactly as the proxy sent
//! them. `GET /slow?ms=N` waits N milliseconds before responding (and
//! counts the maximum of such requests waiting at once), and
//! `GET /redirect?to=URL` responds 302 with `Location: URL`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// A running origin; it stops when the test process ends.
pub struct Origin {
    pub port: u16,
    pub name: String,
    accepted: Arc<AtomicUsize>,
    max_slow: Arc<AtomicUsize>,
}

impl Origin {
    /// Starts an origin that marks its responses with `X-Origin: name`.
    pub fn start(name: &str) -> Self {
        let accepted = Arc::new(AtomicUsize::new(0));
        let max_slow = Arc::new(AtomicUsize::new(0));
        let slow = (Arc::new(AtomicUsize::new(0)), max_slow.clone());
        let (port_sender, port_receiver) = std::sync::mpsc::channel();
        let counter = accepted.clone();
        let origin_name = name.to_string();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("origin runtime");
            runtime.block_on(async move {
                let listener = TcpListener::bind("127.0.0.1:0").await.expect("origin bind");
                let port = listener.local_addr().expect("origin address").port();
                port_sender.send(port).expect("send origin port");
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let connection = counter.fetch_add(1, Ordering::SeqCst) + 1;
                    tokio::spawn(serve(stream, origin_name.clone(), connection, slow.clone()));
                }
            });
        });
        let port = port_receiver.recv().expect("origin port");
        Self {
            port,
            name: name.to_string(),
            accepted,
            max_slow,
        }
    }

    /// Number of TCP connections the origin has accepted.
    pub fn accepted_connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Most `/slow` requests that were waiting at the same time.
    pub fn max_slow_at_once(&self) -> usize {
        self.max_slow.load(Ordering::SeqCst)
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

async fn serve(
    stream: TcpStream,
    name: String,
    connection: usize,
    (in_flight, most_in_flight): (Arc<AtomicUsize>, Arc<AtomicUsize>),
) {
    let mut reader = BufReader::new(stream);
    loop {
        let mut head_lines: Vec<String> = Vec::new();
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let line = line.trim_end_matches(['\r', '\n']).to_string();
            if line.is_empty() {
                break;
            }
            head_lines.push(line);
        }
        let Some(request_line) = head_lines.first().cloned() else {
            return;
        };
        let mut parts = request_line.splitn(3, ' ');
        let method = parts.next().unwrap_or_default().to_string();
        let target = parts.next().unwrap_or_default().to_string();
        let headers: Vec<(String, String)> = head_lines[1..]
            .iter()
            .filter_map(|line| line.split_once(':'))
            .map(|(n, v)| (n.to_string(), v.trim().to_string()))
            .collect();
        let header = |wanted: &str| {
            headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(wanted))
                .map(|(_, v)| v.clone())
        };

        let mut body = Vec::new();
        if let Some(length) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
            body.resize(length, 0);
            if reader.read_exact(&mut body).await.is_err() {
                return;
            }
        } else if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            loop {
                let mut size_line = String::new();
                if reader.read_line(&mut size_line).await.is_err() {
                    return;
                }
                let size = usize::from_str_radix(size_line.trim(), 16).unwrap_or(0);
                let mut chunk = vec![0u8; size + 2];
                if reader.read_exact(&mut chunk).await.is_err() {
                    return;
                }
                if size == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..size]);
            }
        }

        if let Some(ms) = target
            .strip_prefix("/slow?ms=")
            .and_then(|v| v.split('&').next())
            .and_then(|v| v.parse::<u64>().ok())
        {
            let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            most_in_flight.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            in_flight.fetch_sub(1, Ordering::SeqCst);
        }

        if let Some(location) = target.strip_prefix("/redirect?to=") {
            let response = format!(
                "HTTP/1.1 302 Found\r\nLocation: {location}\r\nX-Origin: {name}\r\n\
                 Content-Length: 0\r\n\r\n"
            );
            if reader
                .get_mut()
                .write_all(response.as_bytes())
                .await
                .is_err()
            {
                return;
            }
            continue;
        }

        let echo = serde_json::json!({
            "origin": name,
            "connection": connection,
            "method": method,
            "target": target,
            "request_line": request_line,
            "headers": headers,
            "body": String::from_utf8_lossy(&body),
            "body_length": body.len(),
        })
        .to_string();
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Origin: {name}\r\n\
             Set-Cookie: a=1\r\nSet-Cookie: b=2\r\nContent-Length: {}\r\n\r\n{echo}",
            echo.len()
        );
        if reader
            .get_mut()
            .write_all(response.as_bytes())
            .await
            .is_err()
        {
            return;
        }
    }
}
