//! Free loopback ports for servers that cannot bind port 0 themselves (redis-server, bao).
//! The port is found by binding port 0 and releasing it; callers retry on the rare race.

pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// A loopback port that refuses connections, reserved for as long as this value lives.
///
/// The socket is bound but never listens, so a connection to it is refused, and no other
/// server can bind the port meanwhile. A port from [`free_port`] is released at once: another
/// test's server may take it, and a call meant to be refused then reaches that server.
pub struct RefusingPort {
    _socket: tokio::net::TcpSocket,
    pub port: u16,
}

pub fn refusing_port() -> anyhow::Result<RefusingPort> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))?;
    let port = socket.local_addr()?.port();
    Ok(RefusingPort {
        _socket: socket,
        port,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_refusing_port_refuses_and_stays_taken() {
        let p = super::refusing_port().unwrap();
        let e = std::net::TcpStream::connect(("127.0.0.1", p.port)).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
        assert!(std::net::TcpListener::bind(("127.0.0.1", p.port)).is_err());
    }
}
