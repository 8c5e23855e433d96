//! An axum HTTP service whose route handler is an async plugin function, upgraded and
//! downgraded under HTTP load with zero failed requests.
//!
//! ```sh
//! cargo xtask build
//! cargo run --example axum_service -- target/debug/libweb_routes_v1.so target/debug/libweb_routes_v2.so
//! ```
//!
//! The host owns the one tokio runtime; the plugin (`plugins/web-*`) links no tokio and
//! awaits the host's timer. Each request's future holds the version it entered until it
//! completes, so an upgrade never cuts a request short: before each move the old version is
//! soft-purged, which succeeds only once its last in-flight request finished (that is the
//! wait), and is then unloaded and gone from `/proc/self/maps`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use hotcode::{CodeServer, Handle, PurgeMethod::SoftPurge};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use plugin_api::interfaces::WebRoutes;

/// Client tasks of the load generator, each on its own keep-alive connection.
const CLIENTS: usize = 8;
/// Up/down moves made under load.
const MOVES: usize = 10;

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("axum_service: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn hello(
    State(routes): State<Handle<WebRoutes>>,
    Path(name): Path<String>,
) -> Result<String, (StatusCode, String)> {
    routes
        .call_async(|r| r.hello(name.as_str().into()))
        .await
        .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

async fn boom(
    State(routes): State<Handle<WebRoutes>>,
    Path(name): Path<String>,
) -> Result<String, (StatusCode, String)> {
    routes
        .call_async(|r| r.boom(name.as_str().into()))
        .await
        .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

/// One GET on a fresh connection: the status and the body.
async fn get_once(addr: std::net::SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
            .await
            .map_err(std::io::Error::other)?;
    tokio::spawn(conn);
    let request = hyper::Request::get(path)
        .header("host", "127.0.0.1")
        .body(Empty::<Bytes>::new())
        .map_err(std::io::Error::other)?;
    let response = sender.send_request(request).await.map_err(std::io::Error::other)?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.map_err(std::io::Error::other)?;
    Ok((status, String::from_utf8_lossy(&body.to_bytes()).into_owned()))
}

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
    v1: AtomicU64,
    v2: AtomicU64,
}

/// One client: GET /hello/<n> on one connection until `stop`, checking every reply.
async fn client(addr: std::net::SocketAddr, id: usize, stop: Arc<AtomicBool>, tally: Arc<Tally>) {
    let connect = async {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
            .await
            .map_err(std::io::Error::other)
    };
    let (mut sender, conn) = match connect.await {
        Ok(pair) => pair,
        Err(e) => {
            eprintln!("client {id}: cannot connect: {e}");
            tally.failed.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    tokio::spawn(conn);
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let name = format!("c{id}-{n}");
        let request = hyper::Request::get(format!("/hello/{name}"))
            .header("host", "127.0.0.1")
            .body(Empty::<Bytes>::new());
        let answer = async {
            let response = sender.send_request(request.map_err(std::io::Error::other)?).await;
            let response = response.map_err(std::io::Error::other)?;
            let status = response.status();
            let body = response.into_body().collect().await.map_err(std::io::Error::other)?;
            Ok::<_, std::io::Error>((
                status,
                String::from_utf8_lossy(&body.to_bytes()).into_owned(),
            ))
        };
        match answer.await {
            Ok((status, body)) if status.is_success() && body.contains(&name) => {
                tally.ok.fetch_add(1, Ordering::Relaxed);
                if body.ends_with("(v1)") {
                    tally.v1.fetch_add(1, Ordering::Relaxed);
                } else if body.ends_with("(v2)") {
                    tally.v2.fetch_add(1, Ordering::Relaxed);
                }
            }
            other => {
                eprintln!("client {id}: bad reply: {other:?}");
                tally.failed.fetch_add(1, Ordering::Relaxed);
                if sender.ready().await.is_err() {
                    return;
                }
            }
        }
    }
}

fn run() -> Result<bool, Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let v1 = args
        .next()
        .map_or_else(|| PathBuf::from("target/debug/libweb_routes_v1.so"), PathBuf::from);
    let v2 = args
        .next()
        .map_or_else(|| PathBuf::from("target/debug/libweb_routes_v2.so"), PathBuf::from);
    let server = CodeServer::new()?;
    server.load_object_code("web_routes", &v1)?;
    server.load("web_routes", SoftPurge, SoftPurge)?;
    let routes = server.handle::<WebRoutes>("web_routes")?;
    println!(
        "web_routes {} loaded from {}",
        server.current_vsn("web_routes").unwrap_or_default(),
        v1.display()
    );

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let addr = rt.block_on(async {
        let app = Router::new()
            .route("/hello/{name}", get(hello))
            .route("/boom/{name}", get(boom))
            .with_state(routes.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok::<_, std::io::Error>(addr)
    })?;
    println!("serving http://{addr}/hello/{{name}} on the host's tokio runtime");
    let clients: Vec<_> = (0..CLIENTS)
        .map(|id| rt.spawn(client(addr, id, Arc::clone(&stop), Arc::clone(&tally))))
        .collect();

    let started = Instant::now();
    std::thread::sleep(Duration::from_millis(200));
    // A handler that panics inside `poll`: that request gets an error, the rest go on.
    let (status, body) = rt.block_on(get_once(addr, "/boom/joe"))?;
    println!("GET /boom/joe (the handler panics inside poll): {status} {body}");
    let boom_answered_500 = status == 500 && body.contains("boom, joe");
    let mut last_old: Option<PathBuf> = None;
    for step in 0..MOVES {
        let (path, vsn) = if step % 2 == 0 { (&v2, "2") } else { (&v1, "1") };
        // Soft purge waits for the previous old version's last in-flight request.
        let waited = Instant::now();
        while server.soft_purge("web_routes").is_err() {
            std::thread::sleep(Duration::from_millis(1));
        }
        let waited = waited.elapsed();
        if let Some(old) = last_old.take() {
            let mapped = hotcode::code::maps::is_mapped(&old)?;
            if mapped {
                println!("  (the version before is still mapped: it leaked?)");
            }
        }
        let old = server.status().modules.into_iter().find(|m| m.name == "web_routes");
        server.load_object_code("web_routes", path)?;
        let purged = server.load("web_routes", SoftPurge, SoftPurge)?;
        last_old = old.and_then(|m| m.current).map(|v| v.copy);
        let in_flight = match &purged {
            hotcode::Purged::Pending { holders } => holders.len(),
            _ => 0,
        };
        println!(
            "move {:>2}: web_routes {vsn} current ({} in-flight requests finish in the old one; \
             waited {:.1} ms for the one before)",
            step + 1,
            in_flight,
            waited.as_secs_f64() * 1e3
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The last old version goes once its requests are done.
    while server.soft_purge("web_routes").is_err() {
        std::thread::sleep(Duration::from_millis(1));
    }
    stop.store(true, Ordering::Relaxed);
    rt.block_on(async {
        for c in clients {
            let _ = c.await;
        }
    });
    let gone = match &last_old {
        Some(copy) => !hotcode::code::maps::is_mapped(copy)?,
        None => true,
    };
    let (ok, failed) = (tally.ok.load(Ordering::Relaxed), tally.failed.load(Ordering::Relaxed));
    println!(
        "{ok} requests in {:.1} s, {failed} failed; answered by v1: {}, by v2: {}; {MOVES} \
         moves; the last old version {} mapped",
        started.elapsed().as_secs_f64(),
        tally.v1.load(Ordering::Relaxed),
        tally.v2.load(Ordering::Relaxed),
        if gone { "is no longer" } else { "is still" }
    );
    Ok(failed == 0
        && boom_answered_500
        && ok > 0
        && tally.v1.load(Ordering::Relaxed) > 0
        && tally.v2.load(Ordering::Relaxed) > 0
        && gone)
}
