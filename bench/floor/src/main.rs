//! Benchmark floor: a bare Pingora HTTP app that returns `{"hello":"world"}`
//! to every request, on one worker thread.
//!
//! Usage: `actias-bench-floor ADDRESS`, for example `127.0.0.1:24603`.

use std::process::ExitCode;

use async_trait::async_trait;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{Response, StatusCode};
use pingora::apps::http_app::{HttpServer, ServeHttp};
use pingora::protocols::http::ServerSession;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::Server;
use pingora::services::listening::Service;

const BODY: &[u8] = br#"{"hello":"world"}"#;

/// An HTTP app with one fixed JSON response for every request.
struct FixedResponse;

#[async_trait]
impl ServeHttp for FixedResponse {
    async fn response(&self, _session: &mut ServerSession) -> Response<Vec<u8>> {
        Response::builder()
            .status(StatusCode::OK)
            .header(CONTENT_TYPE, "application/json")
            .header(CONTENT_LENGTH, BODY.len())
            .body(BODY.to_vec())
            .expect("a fixed response with valid headers")
    }
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (Some(address), None) = (args.next(), args.next()) else {
        eprintln!("usage: actias-bench-floor ADDRESS (for example 127.0.0.1:24603)");
        return ExitCode::FAILURE;
    };

    let conf = ServerConf {
        threads: 1,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(0),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(Opt::default(), conf);
    server.bootstrap();

    let mut service = Service::new("bench floor".to_string(), HttpServer::new_app(FixedResponse));
    service.add_tcp(&address);
    server.add_service(service);
    server.run_forever();
}
