//! `tns serve`: runs the HTTP server until SIGTERM/SIGINT, then drains and exits.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use tns_serve::{Limits, ServeOptions};

/// Arguments of `tns serve`.
#[derive(Args)]
pub struct ServeArgs {
    /// Model files, as `NAME=PATH` or `PATH` (the name is then the file stem).
    #[arg(required = true)]
    models: Vec<String>,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// File holding the admin bearer token (else the TNS_ADMIN_TOKEN environment variable;
    /// with neither, admin routes answer 403).
    #[arg(long)]
    admin_token_file: Option<PathBuf>,
    /// Largest request body in bytes.
    #[arg(long, default_value_t = 1 << 20, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    max_body_bytes: usize,
    /// Most windows per request.
    #[arg(long, default_value_t = 1024, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    max_batch: usize,
    /// Most requests handled at once (more are answered 503).
    #[arg(long, default_value_t = 256, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    max_concurrent: usize,
    /// Requests per second per client IP (default: unlimited).
    #[arg(long)]
    rate_limit: Option<NonZeroU32>,
    /// Most open streaming sessions.
    #[arg(long, default_value_t = 10_000, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    max_sessions: usize,
    /// Most open streaming sessions per client (bearer token, or else IP address).
    #[arg(long, default_value_t = 64, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    max_sessions_per_client: usize,
    /// Most memory all open sessions may hold, in MiB (a session's size is fixed by its
    /// model when it opens).
    #[arg(long, default_value_t = 256, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    session_memory_mib: usize,
    /// Seconds without a post after which a session closes.
    #[arg(long, default_value_t = 300)]
    session_idle_seconds: u64,
    /// Seconds a connection has to send a request head, from its opening or its previous
    /// response (so also how long an idle keep-alive connection stays open).
    #[arg(long, default_value_t = 10, value_parser = clap::builder::RangedU64ValueParser::<u64>::new().range(1..))]
    header_timeout_seconds: u64,
    /// Seconds a request has to send its whole body (answered 408 after).
    #[arg(long, default_value_t = 10, value_parser = clap::builder::RangedU64ValueParser::<u64>::new().range(1..))]
    body_timeout_seconds: u64,
    /// Seconds a request may take once its body is read (answered 503 after).
    #[arg(long, default_value_t = 30, value_parser = clap::builder::RangedU64ValueParser::<u64>::new().range(1..))]
    request_timeout_seconds: u64,
    /// Most open connections; more are closed as soon as they are accepted.
    #[arg(long, default_value_t = 1024, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    max_connections: usize,
    /// On SIGTERM/SIGINT, seconds that requests in flight may take to finish before their
    /// connections are closed.
    #[arg(long, default_value_t = 10)]
    drain_seconds: u64,
    /// Seconds between checks of the model files for changes (0: off; SIGHUP and the
    /// reload route still work).
    #[arg(long, default_value_t = 2.0)]
    watch_seconds: f64,
    /// Worker threads of the async runtime (default: one per core).
    #[arg(long, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    workers: Option<usize>,
    /// Dynamic micro-batching: a predict request waits at most this many microseconds for
    /// concurrent ones, and all of them run through the batch engine together (off by
    /// default; every request still gets exactly its own predictions).
    #[arg(long)]
    micro_batch_us: Option<u64>,
    /// With --micro-batch-us: windows at which a batch runs without waiting longer.
    #[arg(long, default_value_t = 64, requires = "micro_batch_us", value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    micro_batch_windows: usize,
}

fn parse_model(arg: &str) -> Result<(String, PathBuf)> {
    if let Some((name, path)) = arg.split_once('=') {
        if name.is_empty() || name.contains('/') {
            bail!("model name {name:?} must be non-empty and without '/'");
        }
        return Ok((name.to_string(), PathBuf::from(path)));
    }
    let path = PathBuf::from(arg);
    let name = path
        .file_stem()
        .and_then(|s| s.to_str())
        .with_context(|| format!("cannot name model {arg:?}; use NAME=PATH"))?
        .to_string();
    Ok((name, path))
}

fn admin_token(args: &ServeArgs) -> Result<Option<String>> {
    let token = match &args.admin_token_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("reading the admin token from {}", path.display()))?,
        ),
        None => std::env::var("TNS_ADMIN_TOKEN").ok(),
    };
    match token.map(|t| t.trim().to_string()) {
        Some(t) if t.len() < 16 => bail!("the admin token must be at least 16 characters"),
        other => Ok(other),
    }
}

/// Runs `tns serve`.
pub fn run(args: ServeArgs) -> Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let models = args
        .models
        .iter()
        .map(|m| parse_model(m))
        .collect::<Result<Vec<_>>>()?;
    if !(args.watch_seconds >= 0.0 && args.watch_seconds.is_finite()) {
        bail!("--watch-seconds must be a non-negative number");
    }
    let options = ServeOptions {
        addr: args.addr,
        models,
        limits: Limits {
            body_bytes: args.max_body_bytes,
            batch: args.max_batch,
            concurrent: args.max_concurrent,
            rate_per_client: args.rate_limit,
            sessions: args.max_sessions,
            sessions_per_client: args.max_sessions_per_client,
            session_bytes: args.session_memory_mib.saturating_mul(1 << 20),
            session_idle: Duration::from_secs(args.session_idle_seconds),
            header_timeout: Duration::from_secs(args.header_timeout_seconds),
            body_timeout: Duration::from_secs(args.body_timeout_seconds),
            request_timeout: Duration::from_secs(args.request_timeout_seconds),
            connections: args.max_connections,
            drain: Duration::from_secs(args.drain_seconds),
        },
        admin_token: admin_token(&args)?,
        watch: (args.watch_seconds > 0.0).then(|| Duration::from_secs_f64(args.watch_seconds)),
        batching: args.micro_batch_us.map(|us| tns_serve::MicroBatching {
            max_delay: Duration::from_micros(us),
            max_windows: args.micro_batch_windows,
            queue: args.max_concurrent,
        }),
    };
    // One worker: a current-thread runtime, which polls sockets and runs handlers on one
    // thread with no cross-thread wake-ups (measurably cheaper per request on small VMs).
    let mut runtime = match args.workers {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    runtime.enable_all().build()?.block_on(async move {
        let mut server = tns_serve::start(options).await?;
        println!("tns serve listening on http://{}", server.local_addr());
        tokio::select! {
            () = tns_serve::termination_signal() => {
                tracing::info!("shutting down: finishing requests in flight");
                server.shutdown().await?;
            }
            result = server.wait() => result?,
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_arguments_name_models() {
        assert_eq!(
            parse_model("b=/m/x.tns").unwrap(),
            ("b".to_string(), PathBuf::from("/m/x.tns"))
        );
        assert_eq!(parse_model("/m/sys-b.tns").unwrap().0, "sys-b");
        assert!(parse_model("=x.tns").is_err());
        assert!(parse_model("a/b=x.tns").is_err());
    }
}
