//! What a `TestServer` leaves behind when it goes, even from a failed test: its sandboxes are
//! deleted, the server stopped, and runsc's pinned namespace unmounted from its scratch dir.
use std::process::{Command, Stdio};

use serde_json::Value;

use super::TestServer;

impl Drop for TestServer {
    fn drop(&mut self) {
        // A failed test must not leak sandboxes onto the host: delete them from a thread of our
        // own (Drop may run inside the test's runtime, which cannot block).
        if self.child.is_some() {
            let url = self.url.clone();
            let key = self.key.clone();
            let _ = std::thread::spawn(move || {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                rt.block_on(async move {
                    let http = reqwest::Client::builder()
                        .no_proxy()
                        .build()
                        .unwrap_or_default();
                    let list = http
                        .get(format!("{url}/v1/sandboxes"))
                        .bearer_auth(&key)
                        .send()
                        .await;
                    let Ok(list) = list else { return };
                    let Ok(v) = list.json::<Value>().await else {
                        return;
                    };
                    for s in v["sandboxes"].as_array().cloned().unwrap_or_default() {
                        if let Some(id) = s["id"].as_str() {
                            let _ = http
                                .delete(format!("{url}/v1/sandboxes/{id}"))
                                .bearer_auth(&key)
                                .send()
                                .await;
                        }
                    }
                });
            })
            .join();
        }
        self.stop_graceful();
        // A server that did not stop gracefully (killed by a test, or by a failure) leaves
        // runsc's pinned empty network namespace mounted in its data dir, which then cannot be
        // removed: 43 MB of scratch per server, left on the host for good.
        let pin = self.data_dir.join("run/runsc/null-netns");
        for _ in 0..64 {
            let unmounted = Command::new("umount")
                .arg("-l")
                .arg(&pin)
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !unmounted {
                break;
            }
        }
    }
}
