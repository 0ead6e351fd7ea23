#![allow(missing_docs)]
//! A build that leaves a backend out says so, naming the feature, when a URL asks for it; the
//! backend it has still opens.

#[cfg(not(feature = "postgres"))]
#[tokio::test]
async fn a_postgres_url_needs_the_postgres_feature() {
    for url in [
        "postgres://app@localhost/app",
        "postgresql://app@localhost/app",
    ] {
        let Err(err) = party::open_store(url).await else {
            panic!("{url} opened without the backend built in")
        };
        assert!(matches!(err, party::TaskError::Invalid(_)), "{err:?}");
        assert_eq!(
            err.to_string(),
            "this build of party has no PostgreSQL support: enable the `postgres` feature of \
             the party crate"
        );
    }
}

#[cfg(not(feature = "sqlite"))]
#[tokio::test]
async fn a_sqlite_path_needs_the_sqlite_feature() {
    let dir = std::env::temp_dir().join(format!("party-features-{}", std::process::id()));
    for url in [
        dir.join("tasks.db").display().to_string(),
        format!("sqlite://{}", dir.join("tasks.db").display()),
    ] {
        let Err(err) = party::open_store(&url).await else {
            panic!("{url} opened without the backend built in")
        };
        assert!(matches!(err, party::TaskError::Invalid(_)), "{err:?}");
        assert_eq!(
            err.to_string(),
            "this build of party has no SQLite support: enable the `sqlite` feature of the \
             party crate"
        );
    }
    assert!(!dir.exists(), "nothing was written");
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn the_sqlite_backend_opens_when_built_in() {
    let path = std::env::temp_dir().join(format!(
        "party-features-{}-{:x}.db",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    let store = party::open_store(path.to_str().unwrap()).await.unwrap();
    assert_eq!(store.backend(), "sqlite");
    drop(store);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    // The store's threads, ending after it, never create the file again: its watcher of
    // other processes' commits used to open the path with create, and when it started after
    // the removal it left an empty file behind.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert!(!path.exists(), "{} was created again", path.display());
}
