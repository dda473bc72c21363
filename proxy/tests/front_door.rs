//! Raw-socket requests that confuse framing, exceed size limits or send
//! their head slowly.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::{raw, Origin, Proxy, TestResult};

const ECHO: &str = r#"
add_event_listener("fetch", function(request)
    return {body = "body=" .. tostring(request.body and #request.body)}
end)
"#;

fn start(origin: &Origin) -> TestResult<Proxy> {
    let config = format!(
        "listeners:\n  - address: 127.0.0.1:{{port}}\nlimits:\n  header_timeout_ms: 1000\n  keepalive_timeout_ms: 1500\norigins:\n  - name: o\n    servers: [\"{}\"]\nroutes:\n  - name: lua\n    hosts: [lua.test]\n    script: echo.lua\n  - name: both\n    hosts: [both.test]\n    script: echo.lua\n    origin: o\n  - name: plain\n    hosts: [plain.test]\n    origin: o\n",
        origin.address()
    );
    Proxy::start(&config, &[("echo.lua", ECHO)])
}

/// Sends `request` and returns every byte until the server closes or goes
/// quiet for a second, and whether it closed.
fn exchange(port: u16, request: &[u8]) -> TestResult<(String, bool)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(1)))?;
    stream.write_all(request)?;
    let mut received = Vec::new();
    let mut buffer = [0u8; 65536];
    let closed = loop {
        match stream.read(&mut buffer) {
            Ok(0) => break true,
            Ok(n) => received.extend_from_slice(&buffer[..n]),
            Err(_) => break false,
        }
    };
    Ok((String::from_utf8_lossy(&received).into_owned(), closed))
}

fn status_of(response: &str) -> u16 {
    response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

#[test]
fn smuggling_requests_get_400_and_close() -> TestResult {
    let origin = Origin::start("o");
    let proxy = start(&origin)?;
    let cases: &[(&str, &str)] = &[
        ("both lengths", "POST / HTTP/1.1\r\nHost: {host}\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        ("different lengths", "POST / HTTP/1.1\r\nHost: {host}\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"),
        ("length list", "POST / HTTP/1.1\r\nHost: {host}\r\nContent-Length: 5, 6\r\n\r\nhello!"),
        ("same length listed twice", "POST / HTTP/1.1\r\nHost: {host}\r\nContent-Length: 5, 5\r\n\r\nhello"),
        ("same length on two lines", "POST / HTTP/1.1\r\nHost: {host}\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello"),
        ("gzip only", "POST / HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: gzip\r\n\r\nhello"),
        ("chunked not last", "POST / HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n"),
        ("chunked on 1.0", "POST / HTTP/1.0\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
        ("bad chunk size", "POST / HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"),
        ("huge chunk size", "POST / HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\nhello\r\n0\r\n\r\n"),
        ("line folding", "GET / HTTP/1.1\r\nHost: {host}\r\nX-A: one\r\n two\r\n\r\n"),
        ("space before colon", "POST / HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n"),
        ("absolute target without host", "GET http://{host}/ HTTP/1.1\r\n\r\n"),
        ("absolute target for another host", "GET http://other.test/ HTTP/1.1\r\nHost: {host}\r\n\r\n"),
        ("no host on 1.1", "GET / HTTP/1.1\r\nX-A: {host}\r\n\r\n"),
        ("two hosts", "GET / HTTP/1.1\r\nHost: {host}\r\nHost: other.test\r\n\r\n"),
        ("host with a path", "GET / HTTP/1.1\r\nHost: {host}/x?\r\n\r\n"),
        ("host with userinfo", "GET / HTTP/1.1\r\nHost: u@{host}\r\n\r\n"),
        ("host with a port past 65535", "GET / HTTP/1.1\r\nHost: {host}:99999\r\n\r\n"),
        ("asterisk target", "GET * HTTP/1.1\r\nHost: {host}\r\n\r\n"),
    ];
    for host in ["lua.test", "plain.test"] {
        for (name, request) in cases {
            if host == "plain.test" && name.contains("chunk size") {
                // An invalid chunk is found while the body streams, after the
                // head went to the origin; checked separately below.
                continue;
            }
            let request = request.replace("{host}", host);
            let (response, closed) = exchange(proxy.port, request.as_bytes())?;
            assert_eq!(status_of(&response), 400, "{name} on {host}: {response}");
            assert!(closed, "{name} on {host}: connection left open");
            assert!(
                !response
                    .to_ascii_lowercase()
                    .contains("connection: keep-alive"),
                "{name} on {host}: {response}"
            );
            assert_eq!(
                response.matches("HTTP/1.1 ").count(),
                1,
                "{name} on {host}: {response}"
            );
        }
    }
    assert_eq!(
        origin.accepted_connections(),
        0,
        "a rejected head reached the origin"
    );

    // The client still gets 400 and a closed connection; the origin
    // connection is dropped with the broken body, never reused.
    for (name, request) in cases.iter().filter(|(name, _)| name.contains("chunk size")) {
        let request = request.replace("{host}", "plain.test");
        let (response, closed) = exchange(proxy.port, request.as_bytes())?;
        assert_eq!(status_of(&response), 400, "{name}: {response}");
        assert!(closed, "{name}: connection left open");
        assert!(
            !response
                .to_ascii_lowercase()
                .contains("connection: keep-alive"),
            "{name}: {response}"
        );
    }
    Ok(())
}

#[test]
fn oversized_target_and_head_are_rejected() -> TestResult {
    let origin = Origin::start("o");
    let proxy = start(&origin)?;
    let long_target = format!(
        "GET /{} HTTP/1.1\r\nHost: lua.test\r\n\r\n",
        "a".repeat(9000)
    );
    let (response, closed) = exchange(proxy.port, long_target.as_bytes())?;
    assert_eq!(status_of(&response), 414, "{response}");
    assert!(closed);

    let big_head = format!(
        "GET / HTTP/1.1\r\nHost: lua.test\r\nX-Big: {}\r\n\r\n",
        "a".repeat(40_000)
    );
    let (response, closed) = exchange(proxy.port, big_head.as_bytes())?;
    assert_eq!(status_of(&response), 431, "{response}");
    assert!(closed);

    let fine = raw::send(
        proxy.port,
        b"GET / HTTP/1.1\r\nHost: lua.test\r\nConnection: close\r\n\r\n",
    )?;
    assert_eq!(fine.status, 200);
    Ok(())
}

#[test]
fn unread_body_is_never_parsed_as_a_request() -> TestResult {
    let origin = Origin::start("o");
    let proxy = start(&origin)?;
    let hidden = "GET /hidden HTTP/1.1\r\nHost: lua.test\r\n\r\n";
    // On a route with an origin, a chunked body is left for the origin. The
    // script responds without it, and the connection must not go on.
    let chunked = format!(
        "POST / HTTP/1.1\r\nHost: both.test\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{hidden}\r\n0\r\n\r\n",
        hidden.len()
    );
    let (response, _) = exchange(proxy.port, chunked.as_bytes())?;
    assert_eq!(response.matches("HTTP/1.1 ").count(), 1, "{response}");
    assert!(response.contains("body=nil"), "{response}");

    let large = format!(
        "POST / HTTP/1.1\r\nHost: both.test\r\nContent-Length: {}\r\n\r\n{}{hidden}",
        70_000 + hidden.len(),
        "a".repeat(70_000)
    );
    let (response, _) = exchange(proxy.port, large.as_bytes())?;
    assert_eq!(response.matches("HTTP/1.1 ").count(), 1, "{response}");

    // A body read for the script is consumed whole, so the next request on
    // the connection is the real next request.
    let read = format!(
        "POST / HTTP/1.1\r\nHost: lua.test\r\nContent-Length: {}\r\n\r\n{hidden}",
        hidden.len()
    );
    let (response, _) = exchange(proxy.port, read.as_bytes())?;
    assert_eq!(response.matches("HTTP/1.1 ").count(), 1, "{response}");
    assert!(
        response.contains(&format!("body={}", hidden.len())),
        "{response}"
    );
    Ok(())
}

#[test]
fn slow_head_is_cut_off_at_the_deadline() -> TestResult {
    let origin = Origin::start("o");
    let proxy = start(&origin)?;
    let mut stream = TcpStream::connect(("127.0.0.1", proxy.port))?;
    let started = Instant::now();
    let request = b"GET / HTTP/1.1\r\nHost: lua.test\r\nX-Slow: 1\r\n\r\n";
    let mut cut_off = false;
    for byte in request {
        if stream.write_all(&[*byte]).is_err() {
            cut_off = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(150));
        if started.elapsed() > Duration::from_secs(5) {
            break;
        }
    }
    if !cut_off {
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut buffer = [0u8; 1024];
        cut_off = matches!(stream.read(&mut buffer), Ok(0) | Err(_));
    }
    assert!(
        cut_off,
        "a head sent over {:?} was accepted",
        started.elapsed()
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "cut off only after {:?}",
        started.elapsed()
    );

    // A prompt client on another connection is served meanwhile and after.
    let fine = raw::send(
        proxy.port,
        b"GET / HTTP/1.1\r\nHost: lua.test\r\nConnection: close\r\n\r\n",
    )?;
    assert_eq!(fine.status, 200);
    Ok(())
}

#[test]
fn idle_keepalive_connection_is_closed() -> TestResult {
    let origin = Origin::start("o");
    let proxy = start(&origin)?;
    let mut stream = TcpStream::connect(("127.0.0.1", proxy.port))?;
    stream.write_all(b"GET / HTTP/1.1\r\nHost: lua.test\r\n\r\n")?;
    let first = raw::read_response(&mut stream)?;
    assert_eq!(first.status, 200);
    let idle_start = Instant::now();
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut buffer = [0u8; 16];
    let read = stream.read(&mut buffer)?;
    assert_eq!(read, 0, "expected the server to close the idle connection");
    let idle = idle_start.elapsed();
    assert!(
        idle >= Duration::from_millis(1300),
        "closed after only {idle:?}"
    );
    assert!(idle < Duration::from_millis(3000), "closed after {idle:?}");
    Ok(())
}

#[test]
fn padded_header_counts_its_spaces() -> TestResult {
    let origin = Origin::start("o");
    let proxy = start(&origin)?;
    let padded = format!(
        "GET / HTTP/1.1\r\nHost: lua.test\r\nX-Pad: {}x\r\n\r\n",
        " ".repeat(40_000)
    );
    let (response, closed) = exchange(proxy.port, padded.as_bytes())?;
    assert_eq!(status_of(&response), 431, "{response}");
    assert!(closed);
    Ok(())
}

#[test]
fn connections_past_the_cap_are_closed() -> TestResult {
    let proxy = Proxy::start(
        "listeners:\n  - address: 127.0.0.1:{port}\nlimits:\n  max_connections: 3\nroutes:\n  - name: lua\n    default: true\n    script: echo.lua\n",
        &[("echo.lua", ECHO)],
    )?;
    let request = b"GET / HTTP/1.1\r\nHost: lua.test\r\nConnection: close\r\n\r\n";
    let mut idle: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(("127.0.0.1", proxy.port)))
        .collect::<Result<_, _>>()?;
    // Let the proxy accept the three before the fourth arrives.
    std::thread::sleep(Duration::from_millis(300));

    // The proxy closes the fourth with the request unread, so the client
    // sees a reset or an end of stream, and never a response.
    let mut fourth = TcpStream::connect(("127.0.0.1", proxy.port))?;
    fourth.set_read_timeout(Some(Duration::from_secs(2)))?;
    let _ = fourth.write_all(request);
    let mut buffer = [0u8; 1024];
    match fourth.read(&mut buffer) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Ok(n) => panic!(
            "the fourth connection got a response: {}",
            String::from_utf8_lossy(&buffer[..n])
        ),
        Err(e) => panic!("the fourth connection was left open: {e}"),
    }
    let warned = proxy.wait_log_line(&["limits.max_connections are open", "\"max_connections\":3"]);
    assert!(warned.is_some(), "{}", proxy.log());

    // Once one closes, a new connection is served.
    drop(idle.pop());
    std::thread::sleep(Duration::from_millis(300));
    let (response, _) = exchange(proxy.port, request)?;
    assert_eq!(status_of(&response), 200, "{response}");

    let scrape = support::client()
        .get(proxy.admin_url("/metrics"))
        .send()?
        .text()?;
    assert!(
        scrape.contains("actias_connections_rejected_total 1"),
        "{scrape}"
    );
    assert!(scrape.contains("actias_connections_open 2"), "{scrape}");
    Ok(())
}

#[test]
fn expect_continue_gets_100_before_the_body() -> TestResult {
    let origin = Origin::start("o");
    let proxy = start(&origin)?;
    let mut stream = TcpStream::connect(("127.0.0.1", proxy.port))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.write_all(
        b"POST / HTTP/1.1\r\nHost: lua.test\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    )?;
    let mut buffer = [0u8; 1024];
    let read = stream.read(&mut buffer)?;
    let interim = String::from_utf8_lossy(&buffer[..read]).into_owned();
    assert!(
        interim.starts_with("HTTP/1.1 100 Continue\r\n"),
        "{interim}"
    );

    stream.write_all(b"hello")?;
    let mut rest = interim
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, after)| after.to_string());
    while !rest.contains("body=5") {
        let read = stream.read(&mut buffer)?;
        assert!(read > 0, "closed before the response: {rest}");
        rest.push_str(&String::from_utf8_lossy(&buffer[..read]));
    }
    assert_eq!(status_of(&rest), 200, "{rest}");
    Ok(())
}

#[test]
fn other_transfer_codings_get_501() -> TestResult {
    let origin = Origin::start("o");
    let proxy = start(&origin)?;
    for host in ["lua.test", "plain.test"] {
        let request = format!(
            "POST / HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"
        );
        let (response, closed) = exchange(proxy.port, request.as_bytes())?;
        assert_eq!(status_of(&response), 501, "{host}: {response}");
        assert!(closed, "{host}: connection left open");
    }
    assert_eq!(origin.accepted_connections(), 0);
    Ok(())
}

#[test]
fn stalled_reader_is_cut_off_at_send_timeout() -> TestResult {
    let script = r#"
local big = string.rep("x", 32 * 1024 * 1024)
add_event_listener("fetch", function(request) return {body = big} end)
"#;
    let proxy = Proxy::start(
        "listeners:\n  - address: 127.0.0.1:{port}\nlimits:\n  send_timeout_ms: 1000\nroutes:\n  - name: big\n    default: true\n    script: big.lua\n",
        &[("big.lua", script)],
    )?;
    let mut stream = TcpStream::connect(("127.0.0.1", proxy.port))?;
    stream.write_all(b"GET / HTTP/1.1\r\nHost: big.test\r\n\r\n")?;
    // The client reads nothing while the socket buffers fill and the
    // proxy's write waits past its timeout.
    std::thread::sleep(Duration::from_secs(4));

    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut received = 0usize;
    let mut buffer = vec![0u8; 1 << 20];
    let ended = loop {
        match stream.read(&mut buffer) {
            Ok(0) => break "closed",
            Ok(n) => received += n,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break "reset",
            Err(_) => break "still open",
        }
    };
    assert_ne!(ended, "still open", "received {received} bytes");
    assert!(
        received < 32 * 1024 * 1024,
        "the whole body arrived ({received} bytes), so the write never timed out"
    );
    Ok(())
}

/// Polls the admin endpoint until `line` is in the scrape, for up to 10 s.
fn wait_for_metric(proxy: &Proxy, line: &str) -> TestResult<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let scrape = support::client()
            .get(proxy.admin_url("/metrics"))
            .send()?
            .text()?;
        if scrape.contains(line) {
            return Ok(());
        }
        assert!(Instant::now() < deadline, "no `{line}` in {scrape}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sets the socket's receive buffer to 64 KiB, which also stops the kernel
/// from growing it.
fn cap_receive_buffer(stream: &TcpStream) -> TestResult {
    use std::os::fd::AsRawFd;
    let size: libc::c_int = 64 * 1024;
    // SAFETY: the descriptor is open for the life of `stream`, and the
    // option value is a c_int of the length passed.
    let result = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if result != 0 {
        return Err(format!("setsockopt: {}", std::io::Error::last_os_error()).into());
    }
    Ok(())
}

#[test]
fn unread_responses_count_toward_the_process_limit() -> TestResult {
    // The readers cap their receive buffers at 64 KiB, so a 32 MiB response
    // that they do not read cannot fit in the socket buffers and its write
    // stays unfinished.
    let script = r#"
local big
add_event_listener("fetch", function(request)
    big = big or string.rep("x", 32 * 1024 * 1024)
    return {body = big}
end)
"#;
    let config = "listeners:\n  - address: 127.0.0.1:{port}\nlimits:\n  max_request_body_bytes: 1000\n  max_buffered_body_bytes: 80000000\nroutes:\n  - name: big\n    default: true\n    script: big.lua\n    limits:\n      cpu_ms: 5000\n";
    let proxy = Proxy::start(config, &[("big.lua", script)])?;
    let request = b"GET / HTTP/1.1\r\nHost: big.test\r\nConnection: close\r\n\r\n";

    let mut readers = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(("127.0.0.1", proxy.port))?;
        cap_receive_buffer(&stream)?;
        stream.write_all(request)?;
        readers.push(stream);
    }
    wait_for_metric(&proxy, "actias_buffered_body_bytes 67108864")?;

    let (response, closed) = exchange(proxy.port, request)?;
    assert_eq!(
        status_of(&response),
        503,
        "{}",
        &response[..response.len().min(400)]
    );
    assert!(response.contains("max_buffered_body_bytes"), "{response}");
    assert!(
        response.to_ascii_lowercase().contains("retry-after: 1"),
        "{response}"
    );
    assert!(closed, "connection left open");
    let line = proxy.wait_log_line(&["script response dropped", "33554432"]);
    assert!(line.is_some(), "{}", proxy.log());

    // Clients that go away release what their responses held.
    drop(readers);
    wait_for_metric(&proxy, "actias_buffered_body_bytes 0")?;
    let mut stream = TcpStream::connect(("127.0.0.1", proxy.port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(request)?;
    let mut received = Vec::new();
    stream.read_to_end(&mut received)?;
    let head = String::from_utf8_lossy(&received[..received.len().min(200)]).into_owned();
    assert_eq!(status_of(&head), 200, "{head}");
    assert!(received.ends_with(&[b'x'; 1024]), "{head}");
    assert!(
        received.len() > 32 * 1024 * 1024,
        "{} bytes",
        received.len()
    );
    Ok(())
}

#[test]
fn bodies_past_the_process_limit_get_503() -> TestResult {
    let config = "listeners:\n  - address: 127.0.0.1:{port}\nlimits:\n  max_request_body_bytes: 600\n  max_buffered_body_bytes: 1000\nroutes:\n  - name: lua\n    hosts: [lua.test]\n    script: echo.lua\n";
    let proxy = Proxy::start(config, &[("echo.lua", ECHO)])?;
    let body = "x".repeat(600);
    let whole = format!(
        "POST / HTTP/1.1\r\nHost: lua.test\r\nContent-Length: 600\r\nConnection: close\r\n\r\n{body}"
    );
    let chunked = format!(
        "POST / HTTP/1.1\r\nHost: lua.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n258\r\n{body}\r\n0\r\n\r\n"
    );

    // A client that sends half of its body keeps its reservation.
    let mut holder = TcpStream::connect(("127.0.0.1", proxy.port))?;
    holder.set_read_timeout(Some(Duration::from_secs(5)))?;
    holder.write_all(&whole.as_bytes()[..whole.len() - 300])?;
    wait_for_metric(&proxy, "actias_buffered_body_bytes 600")?;

    for (name, request) in [("length", &whole), ("chunked", &chunked)] {
        let (response, closed) = exchange(proxy.port, request.as_bytes())?;
        assert_eq!(status_of(&response), 503, "{name}: {response}");
        assert!(
            response.contains("max_buffered_body_bytes"),
            "{name}: {response}"
        );
        assert!(
            response.to_ascii_lowercase().contains("retry-after: 1"),
            "{name}: {response}"
        );
        assert!(closed, "{name}: connection left open");
    }

    holder.write_all(&whole.as_bytes()[whole.len() - 300..])?;
    let mut response = String::new();
    holder.read_to_string(&mut response)?;
    assert_eq!(status_of(&response), 200, "{response}");
    assert!(response.contains("body=600"), "{response}");
    wait_for_metric(&proxy, "actias_buffered_body_bytes 0")?;

    for (name, request) in [("length", &whole), ("chunked", &chunked)] {
        let (response, _) = exchange(proxy.port, request.as_bytes())?;
        assert_eq!(status_of(&response), 200, "{name}: {response}");
    }
    Ok(())
}
