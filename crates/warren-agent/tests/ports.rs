//! `GET /ports` on the agent binary: what listens on the host's loopback shows up, the agent's
//! own port never does, and the route is token-checked and GET only.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::TcpListener;

use support::Agent;
use warren_agent::ListeningPort;

#[tokio::test]
async fn lists_a_listener_until_it_closes_and_never_the_agent() {
    let agent = Agent::spawn().await;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();

    let ports = agent.client.ports().await.unwrap();
    let mine = ListeningPort {
        port,
        address: "127.0.0.1".into(),
    };
    assert!(ports.contains(&mine), "{port} missing from {ports:?}");
    assert!(
        ports.iter().all(|p| p.port != agent.addr.port()),
        "the agent's own port {} is listed: {ports:?}",
        agent.addr.port()
    );
    assert!(ports.windows(2).all(|w| w[0] < w[1]), "{ports:?}");

    drop(listener);
    let ports = agent.client.ports().await.unwrap();
    assert!(!ports.contains(&mine), "{port} still listed: {ports:?}");
}

#[tokio::test]
async fn needs_the_token_and_get() {
    let agent = Agent::spawn().await;
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let url = format!("http://{}/ports", agent.addr);

    let resp = http.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let err = warren_agent::AgentClient::new(agent.addr, "wrong")
        .ports()
        .await
        .unwrap_err();
    assert_eq!(err.rpc_code(), Some("unauthenticated"));

    let resp = http
        .post(&url)
        .header("x-access-token", support::TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
    assert_eq!(resp.headers()["allow"], "GET");

    let resp = http
        .get(&url)
        .header("x-access-token", support::TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let body: serde_json::Value = resp.json().await.unwrap();
    assert!(body["ports"].is_array(), "{body}");
}
