//! `nnhost bench http`: a closed-loop HTTP/1.1 load client. C keep-alive connections,
//! each sending its next request as soon as the previous answer (body included) has
//! arrived. Everything runs on one thread (a current-thread tokio runtime) so the
//! client takes as little CPU as possible from the server it measures.
//!
//! A request counts when it started after the warm-up and finished before the
//! deadline (requests still in flight at the deadline are dropped, as wrk does).
//! Answers other than `--expect` (200) and transport failures are errors and excluded
//! from latencies.

use std::cell::{Cell, RefCell};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpStream;

use super::{round3, Summary};

#[derive(clap::Args, Debug)]
pub struct HttpArgs {
    /// Where to POST, e.g. http://127.0.0.1:8080/v1/embeddings
    #[arg(long)]
    url: String,
    /// The request body (JSON).
    #[arg(long, conflicts_with = "body_file")]
    body: Option<String>,
    /// Read the request body from a file.
    #[arg(long)]
    body_file: Option<PathBuf>,
    /// Concurrent keep-alive connections (each has one request in flight).
    #[arg(long, short = 'c', default_value_t = 1)]
    connections: usize,
    /// Measured seconds (after the warm-up).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Stop after this many measured requests (0 = run for --duration).
    #[arg(long, default_value_t = 0)]
    requests: u64,
    /// Seconds of load before measuring starts.
    #[arg(long, default_value_t = 0.0)]
    warmup: f64,
    /// Extra header, "Name: value" (repeatable), e.g. an Authorization header.
    #[arg(long = "header")]
    headers: Vec<String>,
    /// The status that counts as success (anything else is an error).
    #[arg(long, default_value_t = 200)]
    expect: u16,
    /// Per-request timeout in seconds (a timeout counts as an error).
    #[arg(long, default_value_t = 60.0)]
    timeout: f64,
    /// Also write every timed sample (ms, one per line) to this file.
    #[arg(long)]
    latencies_out: Option<PathBuf>,
}

struct Target {
    addr: String,
    host: String,
    path: String,
    body: Bytes,
    headers: Vec<(http::HeaderName, http::HeaderValue)>,
}

#[derive(Default)]
struct Tally {
    latencies: Vec<f64>,
    errors: u64,
    statuses: std::collections::BTreeMap<String, u64>,
    first_error: Option<String>,
}

impl Tally {
    fn error(&mut self, kind: String) {
        self.errors += 1;
        *self.statuses.entry(kind.clone()).or_default() += 1;
        self.first_error.get_or_insert(kind);
    }
}

pub fn run(args: HttpArgs) -> Result<()> {
    if args.connections == 0 {
        bail!("--connections must be at least 1");
    }
    let uri: http::Uri = args
        .url
        .parse()
        .with_context(|| format!("URL {:?}", args.url))?;
    if uri.scheme_str() != Some("http") {
        bail!("only http:// URLs are supported");
    }
    let authority = uri.authority().context("the URL has no host")?;
    let port = authority.port_u16().unwrap_or(80);
    let body = match (&args.body, &args.body_file) {
        (Some(b), _) => Bytes::from(b.clone()),
        (None, Some(path)) => {
            Bytes::from(std::fs::read(path).with_context(|| format!("reading {}", path.display()))?)
        }
        (None, None) => bail!("give --body or --body-file"),
    };
    let mut headers = Vec::new();
    for h in &args.headers {
        let (name, value) = h
            .split_once(':')
            .with_context(|| format!("header {h:?} is not \"Name: value\""))?;
        headers.push((
            name.trim().parse::<http::HeaderName>()?,
            value.trim().parse::<http::HeaderValue>()?,
        ));
    }
    let target = Rc::new(Target {
        addr: format!("{}:{port}", authority.host()),
        host: authority.as_str().to_string(),
        path: uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into()),
        body,
        headers,
    });

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    let report = local.block_on(&runtime, async move {
        let start = Instant::now();
        let measure_from = start + Duration::from_secs_f64(args.warmup.max(0.0));
        let deadline = measure_from + Duration::from_secs_f64(args.duration.max(0.0));
        let tally = Rc::new(RefCell::new(Tally::default()));
        // Requests left to start in --requests mode (measured ones only).
        let left = Rc::new(Cell::new(if args.requests > 0 {
            args.requests
        } else {
            u64::MAX
        }));
        let timeout = Duration::from_secs_f64(args.timeout);
        let mut tasks = Vec::new();
        for _ in 0..args.connections {
            let (target, tally, left) = (target.clone(), tally.clone(), left.clone());
            let deadline = if args.requests > 0 {
                None
            } else {
                Some(deadline)
            };
            let expect = args.expect;
            tasks.push(tokio::task::spawn_local(connection(
                target,
                tally,
                left,
                measure_from,
                deadline,
                timeout,
                expect,
            )));
        }
        for task in tasks {
            task.await.map_err(|e| anyhow!("client task: {e}"))??;
        }
        let measured = if args.requests > 0 {
            Instant::now().saturating_duration_since(measure_from)
        } else {
            deadline - measure_from
        };
        let tally = std::mem::take(&mut *tally.borrow_mut());
        Ok::<_, anyhow::Error>((tally, measured))
    })?;
    let (mut tally, measured) = report;
    if let Some(path) = &args.latencies_out {
        super::write_samples(path, &tally.latencies)?;
    }
    let summary = Summary::of(&mut tally.latencies);
    let secs = measured.as_secs_f64();
    let out = json!({
        "url": args.url,
        "connections": args.connections,
        "duration_s": round3(secs),
        "warmup_s": args.warmup,
        "requests": summary.count,
        "errors": tally.errors,
        "error_kinds": tally.statuses,
        "first_error": tally.first_error,
        "mean_ms": round3(summary.mean_ms),
        "min_ms": round3(summary.min_ms),
        "p50_ms": round3(summary.p50_ms),
        "p90_ms": round3(summary.p90_ms),
        "p99_ms": round3(summary.p99_ms),
        "max_ms": round3(summary.max_ms),
        "req_per_s": round3(if secs > 0.0 { summary.count as f64 / secs } else { 0.0 }),
    });
    println!("{out}");
    Ok(())
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn connect(target: &Target) -> Result<Sender> {
    let stream = TcpStream::connect(&target.addr)
        .await
        .with_context(|| format!("connecting to {}", target.addr))?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::task::spawn_local(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// One connection's closed loop. `deadline = None` means "until `left` runs out".
async fn connection(
    target: Rc<Target>,
    tally: Rc<RefCell<Tally>>,
    left: Rc<Cell<u64>>,
    measure_from: Instant,
    deadline: Option<Instant>,
    timeout: Duration,
    expect: u16,
) -> Result<()> {
    let mut sender: Option<Sender> = None;
    let mut consecutive_failures = 0u32;
    loop {
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            return Ok(());
        }
        let measured = now >= measure_from;
        if measured {
            if left.get() == 0 {
                return Ok(());
            }
            left.set(left.get() - 1);
        }
        if sender.is_none() {
            match connect(&target).await {
                Ok(s) => sender = Some(s),
                Err(e) => {
                    consecutive_failures += 1;
                    if consecutive_failures >= 50 {
                        return Err(e.context("giving up after 50 failed connection attempts"));
                    }
                    if measured {
                        tally.borrow_mut().error(format!("connect: {e:#}"));
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            }
        }
        let mut request = http::Request::builder()
            .method(http::Method::POST)
            .uri(target.path.as_str())
            .header(http::header::HOST, target.host.as_str())
            .header(http::header::CONTENT_TYPE, "application/json");
        for (name, value) in &target.headers {
            request = request.header(name, value);
        }
        let request = request.body(Full::new(target.body.clone()))?;
        let started = Instant::now();
        let exchange = async {
            let s = sender.as_mut().expect("connected");
            s.ready().await?;
            let response = s.send_request(request).await?;
            let status = response.status();
            response.into_body().collect().await?;
            Ok::<_, hyper::Error>(status)
        };
        let limit = match deadline {
            Some(d) => (started + timeout).min(d),
            None => started + timeout,
        };
        let outcome = tokio::time::timeout_at(limit.into(), exchange).await;
        let finished = Instant::now();
        match outcome {
            Ok(Ok(status)) => {
                consecutive_failures = 0;
                if measured {
                    let mut t = tally.borrow_mut();
                    if status.as_u16() == expect {
                        t.latencies.push((finished - started).as_secs_f64());
                    } else {
                        t.error(format!("status {}", status.as_u16()));
                    }
                }
            }
            Ok(Err(e)) => {
                sender = None;
                if measured {
                    tally.borrow_mut().error(format!("transport: {e}"));
                }
            }
            Err(_) => {
                // Cut off by the deadline: not an outcome, just the end of the run.
                if deadline.is_some_and(|d| finished >= d) {
                    return Ok(());
                }
                sender = None;
                if measured {
                    tally.borrow_mut().error("timeout".into());
                }
            }
        }
    }
}
