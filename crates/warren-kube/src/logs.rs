//! A sandbox's output from its Pod's log (`pods/log`, followed, with the kubelet's
//! timestamps): split into lines no longer than the log keeps, so a sandbox writing one
//! endless line costs the server a bounded buffer.
use futures::{AsyncBufRead, AsyncBufReadExt, Stream, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::LogParams;
use kube::Api;
use warren_backend::{LogLines, TimedLine};

/// Longest line kept (the server's log cap); the rest of a longer line is dropped.
pub(crate) const MAX_LINE: usize = 16 * 1024;
/// Room for the timestamp before each line.
const STAMP: usize = 40;

/// The followed log of Pod `ns/name`'s sandbox container, after `since_ns`.
pub(crate) async fn follow(
    client: &kube::Client,
    ns: &str,
    name: &str,
    since_ns: Option<i64>,
) -> Result<LogLines, kube::Error> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let lp = LogParams {
        container: Some(crate::objects::CONTAINER.to_owned()),
        follow: true,
        timestamps: true,
        // Whole seconds, rounded down (the client rounds to the nearest, which may skip lines
        // of the second's second half); what was stored is skipped by time after.
        since_time: since_ns
            .and_then(|n| jiff::Timestamp::from_second(n.div_euclid(1_000_000_000)).ok()),
        ..Default::default()
    };
    let reader = pods.log_stream(name, &lp).await?;
    Ok(lines(Box::pin(reader)).boxed())
}

/// Timed lines of a log with kubelet timestamps (`2026-12-06T18:00:00.123456789Z text`).
fn lines<R: AsyncBufRead + Unpin + Send + 'static>(
    reader: R,
) -> impl Stream<Item = std::io::Result<TimedLine>> + Send {
    futures::stream::unfold((reader, Vec::new()), |(mut r, mut buf)| async move {
        loop {
            let avail = match r.fill_buf().await {
                Ok(b) => b,
                Err(e) => return Some((Err(e), (r, buf))),
            };
            if avail.is_empty() {
                return None; // the API let go; a partial line waits for the next call
            }
            let (take, done) = match avail.iter().position(|&b| b == b'\n') {
                Some(i) => (i, i + 1),
                None => (avail.len(), avail.len()),
            };
            let room = (MAX_LINE + STAMP).saturating_sub(buf.len());
            buf.extend_from_slice(&avail[..take.min(room)]);
            let ended = done > take;
            r.consume_unpin(done);
            if ended {
                let line = timed(&buf);
                buf.clear();
                return Some((Ok(line), (r, buf)));
            }
        }
    })
}

fn timed(raw: &[u8]) -> TimedLine {
    let text = String::from_utf8_lossy(raw);
    let (stamp, rest) = text.split_once(' ').unwrap_or((&text, ""));
    match stamp.parse::<jiff::Timestamp>() {
        Ok(t) => TimedLine {
            at_ns: i64::try_from(t.as_nanosecond()).unwrap_or(i64::MAX),
            text: rest.trim_end_matches('\r').chars().take(MAX_LINE).collect(),
        },
        // Not the kubelet's stamp: the line as it is, timed now.
        Err(_) => TimedLine {
            at_ns: i64::try_from(jiff::Timestamp::now().as_nanosecond()).unwrap_or(i64::MAX),
            text: text.trim_end_matches('\r').chars().take(MAX_LINE).collect(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_are_timed_and_bounded() {
        let long = "x".repeat(100_000);
        let log = format!(
            "2026-12-06T18:00:00.000000001Z hello\n2026-12-06T18:00:01Z {long}\nnot stamped\r\npartial"
        );
        let got: Vec<TimedLine> = lines(futures::io::Cursor::new(log.into_bytes()))
            .map(|l| l.expect("a line"))
            .collect()
            .await;
        assert_eq!(got.len(), 3, "the partial last line waits");
        assert_eq!(got[0].text, "hello");
        assert_eq!(got[0].at_ns, 1_796_580_000_000_000_001);
        assert_eq!(got[1].text.len(), MAX_LINE);
        assert_eq!(got[2].text, "not stamped");
    }
}
