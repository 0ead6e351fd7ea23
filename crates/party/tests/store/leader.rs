//! `leader_elect` and `leader_resign`: one holder leads a maintenance service at a time; it
//! renews its term, and another takes over only once the term has ended or was given up.

use party::store::LeaderParams;

use crate::harness::{Backend, Harness, on_every_backend, secs, t0};

async fn one_holder_leads_a_service_until_its_term_ends(b: Backend) {
    let Some(h) = Harness::new(b).await else {
        return;
    };
    let elect = |name: &'static str, holder: &'static str, now: i64, until: i64| {
        let store = h.store.clone();
        async move {
            store
                .leader_elect(LeaderParams {
                    name,
                    holder,
                    now: t0() + secs(now),
                    until: t0() + secs(until),
                })
                .await
                .unwrap()
        }
    };
    assert!(elect("rescue", "a", 0, 30).await, "nobody held it");
    assert!(
        !elect("rescue", "b", 10, 40).await,
        "a's term runs to +30 s"
    );
    assert!(elect("rescue", "a", 20, 50).await, "the holder renews");
    assert!(
        !elect("rescue", "b", 50, 80).await,
        "a term ending exactly now still holds"
    );
    assert!(
        elect("rescue", "b", 51, 81).await,
        "the term ended: b takes over"
    );
    assert!(!elect("rescue", "a", 52, 82).await, "a lost it");
    // Services are led independently.
    assert!(elect("prune", "a", 52, 82).await);
    // Resigning gives up every leadership the holder has, at once.
    h.store.leader_resign("b").await.unwrap();
    assert!(elect("rescue", "a", 53, 83).await, "b resigned");
    assert!(!elect("prune", "b", 53, 83).await, "a still leads prune");
    h.store.leader_resign("nobody").await.unwrap();
    h.store.leader_resign("a").await.unwrap();
    assert!(elect("prune", "b", 54, 84).await);
}

on_every_backend!(one_holder_leads_a_service_until_its_term_ends);
