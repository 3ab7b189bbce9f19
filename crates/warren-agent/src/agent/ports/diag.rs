//! Listening TCP sockets by `NETLINK_SOCK_DIAG`, asking for the LISTEN state only, which the
//! kernel answers from its listening hash without walking established connections.
use std::io;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_sock_diag::constants::{AF_INET, AF_INET6, IPPROTO_TCP};
use netlink_packet_sock_diag::inet::{ExtensionFlags, InetRequest, SocketId, StateFlags};
use netlink_packet_sock_diag::SockDiagMessage;
use netlink_sys::{protocols::NETLINK_SOCK_DIAG, Socket, SocketAddr};
use warren_agent::protocol::ListeningPort;

/// Both families' listening sockets (duplicates and the agent's own included).
pub fn listening() -> io::Result<Vec<ListeningPort>> {
    let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
    // A kernel that takes the request and never answers must not hold the call: the tables
    // in /proc answer instead.
    nix::sys::socket::setsockopt(
        &socket,
        nix::sys::socket::sockopt::ReceiveTimeout,
        &nix::sys::time::TimeVal::new(1, 0),
    )
    .map_err(io::Error::from)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let mut found = Vec::new();
    for (family, id) in [
        (AF_INET, SocketId::new_v4()),
        (AF_INET6, SocketId::new_v6()),
    ] {
        dump(&socket, family, id, &mut found)?;
    }
    Ok(found)
}

fn bad(what: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("sock_diag: {what}"))
}

fn dump(
    socket: &Socket,
    family: u8,
    socket_id: SocketId,
    found: &mut Vec<ListeningPort>,
) -> io::Result<()> {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let mut request = NetlinkMessage::new(
        header,
        SockDiagMessage::InetRequest(InetRequest {
            family,
            protocol: IPPROTO_TCP,
            extensions: ExtensionFlags::empty(),
            states: StateFlags::LISTEN,
            socket_id,
        })
        .into(),
    );
    request.finalize();
    let mut buf = vec![0; request.buffer_len()];
    request.serialize(&mut buf);
    socket.send(&buf, 0)?;
    let mut answer = vec![0u8; 64 * 1024];
    loop {
        let size = socket.recv(&mut &mut answer[..], 0)?;
        let mut at = 0;
        while at < size {
            let msg =
                NetlinkMessage::<SockDiagMessage>::deserialize(&answer[at..size]).map_err(bad)?;
            let len = msg.header.length as usize;
            match msg.payload {
                NetlinkPayload::Done(_) => return Ok(()),
                NetlinkPayload::Error(e) => return Err(bad(format!("{e:?}"))),
                NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(r)) => {
                    found.push(ListeningPort {
                        port: r.header.socket_id.source_port,
                        address: r.header.socket_id.source_address.to_string(),
                    });
                }
                _ => {}
            }
            if len == 0 {
                return Err(bad("a message of no length"));
            }
            at += len;
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_a_listening_socket_of_each_family() {
        let v4 = std::net::TcpListener::bind("127.0.0.1:0").expect("bind v4");
        let v4_port = v4.local_addr().expect("addr").port();
        let v6 = std::net::TcpListener::bind("[::1]:0").ok();
        let found = super::listening().expect("sock_diag answers on Linux");
        assert!(
            found
                .iter()
                .any(|p| p.port == v4_port && p.address == "127.0.0.1"),
            "{found:?}"
        );
        if let Some(v6) = v6 {
            let port = v6.local_addr().expect("addr").port();
            assert!(
                found.iter().any(|p| p.port == port && p.address == "::1"),
                "{found:?}"
            );
        }
        // A connected socket is not listening.
        let _client =
            std::net::TcpStream::connect(v4.local_addr().expect("addr")).expect("connect");
        let again = super::listening().expect("again");
        assert_eq!(
            again.iter().filter(|p| p.port == v4_port).count(),
            1,
            "{again:?}"
        );
    }
}
