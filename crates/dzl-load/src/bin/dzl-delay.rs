//! `dzl-delay`: a TCP proxy on loopback that holds every byte for a fixed
//! time in each direction, to measure replicas as if their database were a
//! network hop away.
//!
//! ```text
//! dzl-delay --listen 127.0.0.1:15432 --to 127.0.0.1:5432 --delay-us 500   # 1 ms round trip
//! ```
//!
//! Each direction of each connection forwards what it reads, in order, no
//! sooner than `--delay-us` after it was read; bandwidth is not limited.
//! Only loopback addresses are accepted on either side.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Delaying TCP proxy (loopback only).
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// Where to listen.
    #[arg(long)]
    listen: SocketAddr,
    /// Where to forward.
    #[arg(long)]
    to: SocketAddr,
    /// Microseconds each byte is held in each direction.
    #[arg(long, default_value_t = 500)]
    delay_us: u64,
}

/// Forwards `from` to `to`, each chunk no sooner than `delay` after it was read.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let writer = tokio::spawn(async move {
        while let Some((read_at, chunk)) = rx.recv().await {
            tokio::time::sleep_until(read_at + delay).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    });
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if tx.send((Instant::now(), buf[..n].to_vec())).is_err() {
                    break;
                }
            }
        }
    }
    drop(tx);
    let _ = writer.await;
}

async fn serve(client: TcpStream, to: SocketAddr, delay: Duration) {
    let Ok(upstream) = TcpStream::connect(to).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (cr, cw) = client.into_split();
    let (ur, uw) = upstream.into_split();
    tokio::join!(pump(cr, uw, delay), pump(ur, cw, delay));
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if !cli.listen.ip().is_loopback() || !cli.to.ip().is_loopback() {
        eprintln!("dzl-delay: --listen and --to must be loopback addresses");
        return std::process::ExitCode::from(2);
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("dzl-delay: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let delay = Duration::from_micros(cli.delay_us);
    let served = rt.block_on(async {
        let listener = TcpListener::bind(cli.listen).await?;
        eprintln!(
            "dzl-delay: {} -> {}, {} us each way",
            cli.listen, cli.to, cli.delay_us
        );
        loop {
            let (client, _) = listener.accept().await?;
            tokio::spawn(serve(client, cli.to, delay));
        }
        #[allow(unreachable_code)]
        Ok::<(), std::io::Error>(())
    });
    match served {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dzl-delay: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
