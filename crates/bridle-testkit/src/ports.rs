//! Free loopback ports for servers that cannot bind port 0 themselves (redis-server, bao).
//! The port is found by binding port 0 and releasing it; callers retry on the rare race.

pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}
