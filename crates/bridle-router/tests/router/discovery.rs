//! Calls to a service that runs as several replicas: real router processes on loopback, and
//! a client built the way the services build theirs (`bridle_core::client::peer`). Which
//! replica served a call is read from the replica's own log (a line per call received).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bridle_core::client::{Outgoing, Traced};
use bridle_core::config::ServerOptions;
use bridle_core::peers::{Peer, Resolve, SystemResolver};
use bridle_proto::ListModelsRequest;
use bridle_proto::router_client::RouterClient;
use tonic::Code;

use crate::helpers::{Harness, WAIT, route_with};
use crate::replicas::Replica;

const LIST: &str = "/bridle.v1.Router/ListModels";

/// Records a test sets and changes, in place of DNS.
#[derive(Default)]
struct Records(Mutex<Vec<SocketAddr>>);

impl Records {
    fn set(&self, addrs: &[&Replica]) {
        *self.0.lock().unwrap() = addrs.iter().map(|r| r.grpc.parse().unwrap()).collect();
    }
}

impl Resolve for Records {
    fn resolve(
        &self,
        _host: &str,
        _port: u16,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<Vec<SocketAddr>>> + Send>>
    {
        let v = self.0.lock().unwrap().clone();
        Box::pin(async move { Ok(v) })
    }
}

fn client(url: &str, resolver: Arc<dyn Resolve>) -> (Peer, RouterClient<Traced>) {
    let opts = ServerOptions {
        // Quick re-resolution, so a changed record shows within the test's patience.
        peer_resolve_interval: Duration::from_millis(300),
        ..Default::default()
    };
    let out = Outgoing::new("test", &opts);
    let peer = bridle_core::client::peer("router", url, WAIT, &out, resolver).unwrap();
    let svc = tonic::codegen::InterceptedService::new(peer.clone(), out);
    (peer, RouterClient::new(svc))
}

async fn ready(peer: &Peer, n: usize) {
    bridle_testkit::wait_for(&format!("{n} router replicas in use"), WAIT, || async {
        (peer.ready_endpoints() == Some(n)).then_some(())
    })
    .await
    .unwrap();
}

async fn list(c: &mut RouterClient<Traced>) -> Result<(), tonic::Status> {
    c.list_models(ListModelsRequest::default())
        .await
        .map(|_| ())
}

/// Calls received by each replica since `before`.
fn served(rs: &[&Replica], before: &[usize]) -> Vec<usize> {
    rs.iter()
        .zip(before)
        .map(|(r, b)| r.calls(LIST) - b)
        .collect()
}

fn counts(rs: &[&Replica]) -> Vec<usize> {
    rs.iter().map(|r| r.calls(LIST)).collect()
}

/// The replicas log asynchronously to a file: wait until `total` calls show.
async fn logged(rs: &[&Replica], before: &[usize], total: usize) -> Vec<usize> {
    bridle_testkit::wait_for("the replicas' logs to show every call", WAIT, || async {
        let v = served(rs, before);
        (v.iter().sum::<usize>() == total).then_some(v)
    })
    .await
    .unwrap()
}

fn free_port() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

#[tokio::test]
async fn a_fixed_list_spreads_calls_over_every_replica_and_a_killed_one_is_taken_out_and_probed_back_in()
 {
    let h = Harness::start().await;
    let addr0 = free_port();
    let mut r0 = Replica::start_at(&h, &[], &addr0).await;
    let r1 = Replica::start(&h, &[]).await;
    let r2 = Replica::start(&h, &[]).await;
    let url = format!("http://{}, http://{},http://{}", r0.grpc, r1.grpc, r2.grpc);
    let (peer, mut c) = client(&url, Arc::new(SystemResolver));
    ready(&peer, 3).await;

    for _ in 0..60 {
        list(&mut c).await.unwrap();
    }
    let all = [&r0, &r1, &r2];
    let by = logged(&all, &[0, 0, 0], 60).await;
    assert!(
        by.iter().all(|n| *n > 0),
        "60 calls over 3 replicas: {by:?}"
    );

    // SIGKILL one. Calls made before discovery has noticed may fail, but only as UNAVAILABLE
    // (the caller's retry signal), never hang or fail otherwise.
    r0.child.kill().await.unwrap();
    for _ in 0..20 {
        if let Err(s) = list(&mut c).await {
            assert_eq!(s.code(), Code::Unavailable, "{s:?}");
        }
    }
    ready(&peer, 2).await;
    let before = counts(&[&r1, &r2]);
    for i in 0..40 {
        list(&mut c)
            .await
            .unwrap_or_else(|s| panic!("call {i} after the kill was noticed: {s:?}"));
    }
    let by = logged(&[&r1, &r2], &before, 40).await;
    assert!(
        by.iter().all(|n| *n > 0),
        "40 calls over the 2 left: {by:?}"
    );

    // A replica back at the dead one's address is probed back in and gets calls again.
    let back = Replica::start_at(&h, &[], &addr0).await;
    ready(&peer, 3).await;
    let before = counts(&[&back, &r1, &r2]);
    for _ in 0..60 {
        list(&mut c).await.unwrap();
    }
    let by = logged(&[&back, &r1, &r2], &before, 60).await;
    assert!(by[0] > 0, "the replica back at {addr0} got no call: {by:?}");
}

#[tokio::test]
async fn a_dns_name_that_resolves_to_nothing_fails_unavailable_naming_it_and_recovers_when_it_resolves_again()
 {
    let h = Harness::start().await;
    let (a, b) = (Replica::start(&h, &[]).await, Replica::start(&h, &[]).await);
    let records = Arc::new(Records::default());
    let (peer, mut c) = client("dns:///routers.bridle.test:50052", records.clone());

    let e = list(&mut c).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(
        e.message().contains("router")
            && e.message()
                .contains("dns:///routers.bridle.test:50052 resolved to no address"),
        "{}",
        e.message()
    );

    // The name resolves: calls recover by themselves and use both addresses.
    records.set(&[&a, &b]);
    ready(&peer, 2).await;
    let before = counts(&[&a, &b]);
    for _ in 0..40 {
        list(&mut c).await.unwrap();
    }
    let by = logged(&[&a, &b], &before, 40).await;
    assert!(by.iter().all(|n| *n > 0), "40 calls over 2 records: {by:?}");

    // Gone again, then back with one record only: only that one is used.
    records.set(&[]);
    let e = bridle_testkit::wait_for(
        "calls to fail once the name resolves to nothing",
        WAIT,
        || {
            let mut c = c.clone();
            async move { list(&mut c).await.err() }
        },
    )
    .await
    .unwrap();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(
        e.message().contains("resolved to no address"),
        "{}",
        e.message()
    );
    records.set(&[&b]);
    ready(&peer, 1).await;
    let before = counts(&[&a, &b]);
    for _ in 0..20 {
        list(&mut c).await.unwrap();
    }
    assert_eq!(logged(&[&a, &b], &before, 20).await, vec![0, 20]);
}

#[tokio::test]
async fn a_dns_name_is_resolved_by_the_systems_resolver() {
    let h = Harness::start().await;
    let r = Replica::start(&h, &[]).await;
    let port = r.grpc.rsplit_once(':').unwrap().1;
    // localhost is 127.0.0.1 (and maybe ::1, where nothing listens: that one is not used).
    let (peer, mut c) = client(
        &format!("dns:///localhost:{port}"),
        Arc::new(SystemResolver),
    );
    ready(&peer, 1).await;
    let before = counts(&[&r]);
    for _ in 0..5 {
        list(&mut c).await.unwrap();
    }
    assert_eq!(logged(&[&r], &before, 5).await, vec![5]);
}

/// SIGSTOP: the replica's sockets stay open and the kernel still accepts connections, but
/// nothing answers.
fn signal(r: &Replica, sig: &str) {
    let pid = r.child.id().unwrap().to_string();
    let st = std::process::Command::new("kill")
        .args([sig, &pid])
        .status()
        .unwrap();
    assert!(st.success(), "kill {sig} {pid}");
}

#[tokio::test]
async fn a_replica_that_stops_answering_holds_no_call_past_its_deadline_and_is_taken_out() {
    let h = Harness::start().await;
    let (a, b) = (Replica::start(&h, &[]).await, Replica::start(&h, &[]).await);
    let (peer, mut c) = client(
        &format!("http://{},http://{}", a.grpc, b.grpc),
        Arc::new(SystemResolver),
    );
    ready(&peer, 2).await;
    signal(&a, "-STOP");
    // Each call carries a 2 s deadline; the client's own limit is a minute. A call that goes
    // to the frozen replica ends at its deadline, not the minute.
    let mut timed_out = 0;
    for _ in 0..40 {
        if timed_out == 3 {
            break;
        }
        let mut req = tonic::Request::new(ListModelsRequest::default());
        req.set_timeout(Duration::from_secs(2));
        let r = tokio::time::timeout(Duration::from_secs(30), c.list_models(req))
            .await
            .expect("a call outlived its deadline by far");
        if let Err(s) = r {
            // tonic reports a call's expired deadline as CANCELLED ("Timeout expired").
            assert_eq!(s.code(), Code::Cancelled, "{s:?}");
            timed_out += 1;
        }
    }
    assert!(timed_out > 0, "no call went to the frozen replica");
    // Its unanswered keep-alive pings take it out.
    ready(&peer, 1).await;
    let before = counts(&[&b]);
    for _ in 0..10 {
        list(&mut c).await.unwrap();
    }
    assert_eq!(logged(&[&b], &before, 10).await, vec![10]);
    // Thawed, it answers its probe and is back.
    signal(&a, "-CONT");
    ready(&peer, 2).await;
}

#[tokio::test]
async fn a_listener_that_never_answers_is_never_used() {
    let h = Harness::start().await;
    let r = Replica::start(&h, &[]).await;
    // Accepts connections and keeps them, saying nothing.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let _hold = bridle_core::Shutdown::new().spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let (peer, mut c) = client(
        &format!("http://{silent_addr},http://{}", r.grpc),
        Arc::new(SystemResolver),
    );
    ready(&peer, 1).await;
    let before = counts(&[&r]);
    for _ in 0..10 {
        list(&mut c).await.unwrap();
    }
    assert_eq!(logged(&[&r], &before, 10).await, vec![10]);

    // Alone, it gives an UNAVAILABLE that says why, once its probe has given up.
    let (_p, alone) = client(
        &format!("http://{silent_addr},http://{silent_addr}"),
        Arc::new(SystemResolver),
    );
    let e = bridle_testkit::wait_for("the silent listener's probe to give up", WAIT, || {
        let mut c = alone.clone();
        async move {
            list(&mut c)
                .await
                .err()
                .filter(|s| s.code() == Code::Unavailable)
        }
    })
    .await
    .unwrap();
    assert!(
        e.message().contains("gave no health answer"),
        "{}",
        e.message()
    );
}

#[tokio::test]
async fn the_gateway_resolves_its_keys_through_a_secrets_broker_found_by_dns_name() {
    use bridle_testkit::mock_openai::{MockOpenAi, Reply};
    let h = Harness::start().await;
    let mock = MockOpenAi::start().await.unwrap();
    mock.set_default(Some(Reply::text("ok")));
    h.put_secret("openai-key", "sk-test-discovery").await;
    h.apply(&route_with(
        "found",
        "",
        &[("a", "gpt-4o-mini", &mock.base_url())],
        "",
    ))
    .await;
    let port = h.secrets_url.rsplit_once(':').unwrap().1;
    let url = format!("dns:///localhost:{port}");
    let r = Replica::start(&h, &[("BRIDLE_ROUTER_SECRETS_URL", url.as_str())]).await;
    let (status, _, body) = crate::limits::chat(&r.http, "found", None).await;
    assert_eq!(status, 200, "{body}");
}
