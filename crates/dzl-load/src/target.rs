//! The vault to drive: an `http://` URL whose host is on this machine's
//! loopback. Anything else is refused before a single byte is sent.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// A loopback HTTP endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Where to connect.
    pub addr: SocketAddr,
    /// The `Host` header to send.
    pub host_header: String,
}

impl Target {
    /// The endpoint of a server this process bound on `addr` (must be loopback).
    pub fn local(addr: SocketAddr) -> anyhow::Result<Self> {
        anyhow::ensure!(is_loopback(addr.ip()), "{addr} is not a loopback address");
        Ok(Target {
            addr,
            host_header: addr.to_string(),
        })
    }

    /// Parses `http://HOST[:PORT][/]`. HOST must be an address in
    /// 127.0.0.0/8, `[::1]`, or `localhost` (taken as 127.0.0.1 without
    /// asking any resolver).
    pub fn parse(url: &str) -> anyhow::Result<Self> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| anyhow::anyhow!("--url must start with http:// (got {url:?})"))?;
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        anyhow::ensure!(
            !authority.is_empty() && !authority.contains(['/', '?', '#', '@']),
            "--url must be http://HOST[:PORT] with no path, query or user (got {url:?})"
        );
        let (host, port) = split_host_port(authority)?;
        let ip = if host.eq_ignore_ascii_case("localhost") {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            IpAddr::V6(
                v6.parse()
                    .map_err(|_| anyhow::anyhow!("--url: {host:?} is not an IPv6 address"))?,
            )
        } else {
            IpAddr::V4(host.parse().map_err(|_| {
                anyhow::anyhow!(
                    "--url: the host must be a loopback address (127.0.0.0/8, [::1]) or localhost, not {host:?}"
                )
            })?)
        };
        anyhow::ensure!(
            is_loopback(ip),
            "--url: {ip} is not on loopback; dzl-load only targets 127.0.0.0/8, ::1 or localhost"
        );
        Ok(Target {
            addr: SocketAddr::new(ip, port),
            host_header: authority.to_owned(),
        })
    }
}

fn split_host_port(authority: &str) -> anyhow::Result<(&str, u16)> {
    // `[v6]:port`, `[v6]`, `host:port`, `host`.
    let (host, port) = if authority.starts_with('[') {
        match authority.rfind("]:") {
            Some(i) => (&authority[..=i], Some(&authority[i + 2..])),
            None => (authority, None),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let port = match port {
        None => 80,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| anyhow::anyhow!("--url: bad port {p:?}"))?,
    };
    Ok((host, port))
}

/// 127.0.0.0/8 or ::1.
pub fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.octets()[0] == 127,
        IpAddr::V6(v6) => v6 == std::net::Ipv6Addr::LOCALHOST,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn accepts_loopback_forms() {
        let t = Target::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!(t.addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(t.host_header, "127.0.0.1:8080");
        let t = Target::parse("http://127.9.8.7:1/").unwrap();
        assert_eq!(t.addr, "127.9.8.7:1".parse().unwrap());
        let t = Target::parse("http://[::1]:9000").unwrap();
        assert_eq!(t.addr, "[::1]:9000".parse().unwrap());
        let t = Target::parse("http://LocalHost:8080/").unwrap();
        assert_eq!(t.addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(t.host_header, "LocalHost:8080");
        let t = Target::parse("http://localhost").unwrap();
        assert_eq!(t.addr.port(), 80);
    }

    #[test]
    fn refuses_everything_else() {
        for url in [
            "http://10.0.0.1:8080",
            "http://192.168.1.2",
            "http://172.16.0.1:80",
            "http://8.8.8.8",
            "http://0.0.0.0:8080",
            "http://[::]:8080",
            "http://[::ffff:127.0.0.1]:8080",
            "http://[fe80::1]:8080",
            "http://example.com",
            "http://localhost.example.com:8080",
            "http://127.0.0.1.nip.io",
            "https://127.0.0.1:8443",
            "127.0.0.1:8080",
            "http://127.0.0.1:8080/v1",
            "http://user@127.0.0.1:8080",
            "http://127.0.0.1:0",
            "http://127.0.0.1:99999",
            "http://",
        ] {
            assert!(Target::parse(url).is_err(), "{url} must be refused");
        }
    }

    #[test]
    fn local_requires_loopback() {
        assert!(Target::local("127.0.0.1:5".parse().unwrap()).is_ok());
        assert!(Target::local("10.1.2.3:5".parse().unwrap()).is_err());
    }
}
