//! `GET /ports`: the TCP sockets in LISTEN state in the sandbox's network namespace, asked of
//! the kernel by netlink (`diag`), else read from its `/proc/net/tcp` and `/proc/net/tcp6`
//! tables. Those tables cost a walk of the host's whole connection hash, every namespace's:
//! ~6 ms each on a 24 GiB host, against a walk of the listening sockets alone.

mod diag;

use std::collections::BTreeSet;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};

use hyper::StatusCode;
use warren_agent::connect::{self, code, ConnectError};
use warren_agent::protocol::{ListeningPort, PortsResponse};

use super::body::AgentBody;
use super::rpc;

const TCP4: &str = "/proc/net/tcp";
const TCP6: &str = "/proc/net/tcp6";
/// `TCP_LISTEN` in the kernel's state numbering (`st` column).
const STATE_LISTEN: &str = "0A";

/// The answer to `GET /ports`, leaving out `own_port` (the agent's).
pub async fn response(own_port: u16) -> hyper::Response<AgentBody> {
    let body = match listening(own_port).await {
        Ok(ports) => serde_json::to_vec(&PortsResponse { ports }),
        Err(e) => {
            return rpc::unary_error(&ConnectError::new(
                code::INTERNAL,
                format!("cannot read the socket tables: {e}"),
            ))
        }
    };
    match body {
        Ok(body) => rpc::response(
            StatusCode::OK,
            connect::CONTENT_TYPE_UNARY,
            AgentBody::full(body),
        ),
        Err(e) => rpc::unary_error(&ConnectError::new(code::INTERNAL, e.to_string())),
    }
}

/// Listening sockets, sorted and without duplicates (`SO_REUSEPORT` gives several per port):
/// from the kernel's sock_diag, or where there is none (gVisor's netstack) its tables.
async fn listening(own_port: u16) -> io::Result<Vec<ListeningPort>> {
    if let Ok(Ok(found)) = tokio::task::spawn_blocking(diag::listening).await {
        let ports: BTreeSet<ListeningPort> =
            found.into_iter().filter(|p| p.port != own_port).collect();
        return Ok(ports.into_iter().collect());
    }
    let v4 = tokio::fs::read_to_string(TCP4).await?;
    // A kernel without IPv6 has no tcp6 table: nothing listens there.
    let v6 = match tokio::fs::read_to_string(TCP6).await {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e),
    };
    let ports: BTreeSet<ListeningPort> = parse(&v4)
        .chain(parse(&v6))
        .filter(|p| p.port != own_port)
        .collect();
    Ok(ports.into_iter().collect())
}

/// The listening sockets in one table (either family); the header and odd lines are skipped.
pub fn parse(table: &str) -> impl Iterator<Item = ListeningPort> + '_ {
    table.lines().filter_map(|line| {
        // sl local_address rem_address st ...
        let mut fields = line.split_whitespace();
        let local = fields.nth(1)?;
        if fields.nth(1)? != STATE_LISTEN {
            return None;
        }
        let (addr, port) = local.split_once(':')?;
        Some(ListeningPort {
            port: u16::from_str_radix(port, 16).ok()?,
            address: address(addr)?,
        })
    })
}

/// The kernel prints an address as its 32-bit words in host byte order (`%08X` of each word as
/// it sits in memory), so each word's bytes come back with `to_ne_bytes`.
fn address(hex: &str) -> Option<String> {
    let word = |i: usize| {
        hex.get(i * 8..i * 8 + 8)
            .and_then(|w| u32::from_str_radix(w, 16).ok())
            .map(u32::to_ne_bytes)
    };
    match hex.len() {
        8 => Some(Ipv4Addr::from(word(0)?).to_string()),
        32 => {
            let mut bytes = [0u8; 16];
            for (i, chunk) in bytes.chunks_exact_mut(4).enumerate() {
                chunk.copy_from_slice(&word(i)?);
            }
            Some(Ipv6Addr::from(bytes).to_string())
        }
        _ => None,
    }
}

// The samples are as a little-endian kernel prints them.
#[cfg(all(test, target_endian = "little"))]
mod tests {
    use super::*;

    const TCP4_SAMPLE: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 31327 1 0000000000000000 100 0 0 10 0
   1: 00000000:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 31328 1 0000000000000000 100 0 0 10 0
   2: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000  1000        0 31329 1 0000000000000000 20 4 30 10 -1
   3: 0A4D000A:C350 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 31330 1 0000000000000000 100 0 0 10 0
";

    const TCP6_SAMPLE: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:1F40 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 41 1 0000000000000000 100 0 0 10 0
   1: 00000000000000000000000001000000:0035 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 42 1 0000000000000000 100 0 0 10 0
   2: 0000000000000000FFFF00000100007F:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 43 1 0000000000000000 100 0 0 10 0
   3: B80D0120000000000000000001000000:01BB 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 44 1 0000000000000000 100 0 0 10 0
   4: 00000000000000000000000001000000:1F90 00000000000000000000000001000000:9C41 01 00000000:00000000 00:00000000 00000000     0        0 45 1 0000000000000000 20 4 30 10 -1
";

    fn port(port: u16, address: &str) -> ListeningPort {
        ListeningPort {
            port,
            address: address.into(),
        }
    }

    #[test]
    fn ipv4_listeners_only() {
        let found: Vec<ListeningPort> = parse(TCP4_SAMPLE).collect();
        assert_eq!(
            found,
            [
                port(8080, "127.0.0.1"),
                port(8000, "0.0.0.0"),
                port(50000, "10.0.77.10"),
            ]
        );
    }

    #[test]
    fn ipv6_words_are_host_order() {
        let found: Vec<ListeningPort> = parse(TCP6_SAMPLE).collect();
        assert_eq!(
            found,
            [
                port(8000, "::"),
                port(53, "::1"),
                port(80, "::ffff:127.0.0.1"),
                port(443, "2001:db8::1"),
            ]
        );
    }

    #[test]
    fn junk_is_skipped() {
        let junk = "\n   0: 0100007F 00000000:0000 0A\n   1: 0100007F:ZZZZ 00000000:0000 0A\n   2: 01007F:0050 00000000:0000 0A\n   3:";
        assert_eq!(parse(junk).count(), 0);
        assert_eq!(parse("").count(), 0);
    }

    #[tokio::test]
    async fn own_port_is_left_out_and_list_is_sorted() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let mine = listener.local_addr().expect("addr").port();
        let all = listening(0).await.expect("read tables");
        assert!(all.contains(&port(mine, "127.0.0.1")), "{all:?}");
        assert!(all.windows(2).all(|w| w[0] < w[1]), "{all:?}");
        let without = listening(mine).await.expect("read tables");
        assert!(without.iter().all(|p| p.port != mine), "{without:?}");
    }
}
