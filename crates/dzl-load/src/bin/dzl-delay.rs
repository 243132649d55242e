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
//! Only loopback addresses are accepted on either side. Each direction is
//! an OS thread that sleeps with `nanosleep`: an async timer's 1 ms ticks
//! would round a 500 µs hold up to 1–2 ms.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use clap::Parser;

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

/// Forwards `from` to `to`, each chunk no sooner than `delay` after it was
/// read. One thread per direction reads, sleeps and writes: a database
/// client sends a statement and waits for its answer, so nothing arrives
/// while a chunk is held; what does (a pipelining client's next message)
/// is held a little longer, never shorter.
fn pump(mut from: TcpStream, mut to: TcpStream, delay: Duration) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                std::thread::sleep(delay);
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

fn serve(client: TcpStream, to: SocketAddr, delay: Duration) -> std::io::Result<()> {
    let upstream = TcpStream::connect(to)?;
    client.set_nodelay(true)?;
    upstream.set_nodelay(true)?;
    let (cr, uw) = (client.try_clone()?, upstream.try_clone()?);
    let back = std::thread::spawn(move || pump(upstream, client, delay));
    pump(cr, uw, delay);
    let _ = back.join();
    Ok(())
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if !cli.listen.ip().is_loopback() || !cli.to.ip().is_loopback() {
        eprintln!("dzl-delay: --listen and --to must be loopback addresses");
        return std::process::ExitCode::from(2);
    }
    let delay = Duration::from_micros(cli.delay_us);
    let listener = match TcpListener::bind(cli.listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("dzl-delay: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    eprintln!(
        "dzl-delay: {} -> {}, {} us each way",
        cli.listen, cli.to, cli.delay_us
    );
    for client in listener.incoming() {
        match client {
            Ok(client) => {
                let to = cli.to;
                std::thread::spawn(move || {
                    if let Err(e) = serve(client, to, delay) {
                        eprintln!("dzl-delay: {e}");
                    }
                });
            }
            Err(e) => eprintln!("dzl-delay: {e}"),
        }
    }
    std::process::ExitCode::SUCCESS
}
