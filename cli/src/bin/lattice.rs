//! `lattice`: the server binary. `lattice bbs` runs the Bulletin Board System.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use lattice_bbs::server::{self, BbsConfig, StoreUrl};

#[derive(Parser)]
#[command(
    name = "lattice",
    version,
    about = "Lattice-rs: a container scheduler in the shape of Diego"
)]
struct Cli {
    /// Log filter (tracing's env-filter syntax), e.g. `info` or `lattice_bbs=debug`.
    #[arg(long, env = "LATTICE_LOG", default_value = "info", global = true)]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the BBS: the state store's only owner, its gRPC API and the public JSON API.
    Bbs(BbsArgs),
}

#[derive(clap::Args)]
struct BbsArgs {
    /// Where state lives: etcd://HOST:PORT[,HOST:PORT…] or file:PATH.
    #[arg(
        long,
        env = "LATTICE_BBS_STORE",
        default_value = "file:/var/lib/lattice/bbs.db"
    )]
    store: StoreUrl,
    /// Internal gRPC API address (for the brain, cells and router).
    #[arg(long, env = "LATTICE_BBS_LISTEN", default_value = "127.0.0.1:8889")]
    listen: SocketAddr,
    /// Public JSON API (receptor-shaped) and /metrics address.
    #[arg(long, env = "LATTICE_BBS_API_LISTEN", default_value = "127.0.0.1:8888")]
    api_listen: SocketAddr,
    /// Require HTTP Basic auth on the public API: USER:PASSWORD.
    #[arg(long, env = "LATTICE_BBS_BASIC_AUTH")]
    basic_auth: Option<String>,
    /// Fail a request as "store unavailable" when the store takes longer than this.
    #[arg(long, env = "LATTICE_BBS_STORE_TIMEOUT_MS", default_value_t = 2000)]
    store_timeout_ms: u64,
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

async fn run_bbs(a: BbsArgs) -> anyhow::Result<()> {
    if let Some(auth) = &a.basic_auth {
        anyhow::ensure!(auth.contains(':'), "--basic-auth must be USER:PASSWORD");
    }
    let bbs = server::start(BbsConfig {
        store: a.store.clone(),
        listen: a.listen,
        api_listen: a.api_listen,
        basic_auth: a.basic_auth,
        store_timeout: Duration::from_millis(a.store_timeout_ms),
    })
    .await
    .context("starting the BBS")?;
    // One machine-readable line for scripts and tests.
    println!(
        "lattice bbs ready grpc={} api={} store={:?}",
        bbs.grpc_addr, bbs.api_addr, a.store
    );
    shutdown_signal().await;
    tracing::info!("shutting down");
    bbs.shutdown().await;
    Ok(())
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&cli.log)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let r = match cli.command {
        Command::Bbs(a) => run_bbs(a).await,
    };
    if let Err(e) = r {
        eprintln!("lattice: {e:#}");
        std::process::exit(1);
    }
}
