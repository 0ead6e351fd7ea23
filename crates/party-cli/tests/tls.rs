//! TLS to PostgreSQL: `party` against a server of the test's own that serves TLS with a
//! certificate the test made (a CA of its own signs it for `localhost` and `127.0.0.1`), and
//! asks for a password. `sslmode` and `sslrootcert` are read as libpq reads them; a refused
//! certificate is explained, and the password never shows. Root only (the server runs as the
//! `postgres` user); skipped with a printed line elsewhere.

mod support;

use std::process::Output;

use support::{Cluster, PARTY, Setup};

const PASSWORD: &str = "Tls-s3cret-pw";

fn tls_cluster() -> Option<Cluster> {
    Cluster::start_with(Setup {
        tls: true,
        password: Some(PASSWORD.to_string()),
        log_connections: true,
        ..Setup::default()
    })
}

/// `party --db URL stats`, with a HOME of its own so no `~/.postgresql/root.crt` of the
/// machine's plays a part.
fn stats(cluster: &Cluster, url: &str) -> Output {
    let home = cluster.dir.join("home");
    std::fs::create_dir_all(&home).unwrap();
    std::process::Command::new(PARTY)
        .arg("--db")
        .arg(url)
        .arg("stats")
        .env_remove("PARTY_DATABASE_URL")
        .env("PARTY_LOG", "debug")
        .env("HOME", &home)
        .output()
        .unwrap()
}

/// Everything the process printed, checked never to show a password.
fn said(out: &Output) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains(PASSWORD), "the password was printed: {text}");
    assert!(
        !text.contains("Wrong-pw-0"),
        "the password was printed: {text}"
    );
    text
}

fn url(cluster: &Cluster, host: &str, params: &str) -> String {
    format!(
        "postgres://postgres:{PASSWORD}@{host}:{}/postgres?{params}",
        cluster.port
    )
}

#[test]
fn verify_full_connects_with_the_right_ca_and_refuses_a_wrong_name_or_an_untrusted_ca() {
    let Some(cluster) = tls_cluster() else { return };
    let ca = cluster.dir.join("ca.crt");
    let other = cluster.dir.join("other-ca.crt");

    // The right CA and a name the certificate lists: connected, over TLS.
    for host in ["localhost", "127.0.0.1"] {
        let out = stats(
            &cluster,
            &url(
                &cluster,
                host,
                &format!("sslmode=verify-full&sslrootcert={}", ca.display()),
            ),
        );
        let text = said(&out);
        assert!(out.status.success(), "verify-full to {host}: {text}");
    }
    assert!(
        cluster.log().contains("SSL enabled"),
        "the server saw no TLS connection: {}",
        cluster.log()
    );

    // A name the certificate does not list (the address is still the server's).
    let wrong_name = url(
        &cluster,
        "db.wrong-name.test",
        &format!(
            "sslmode=verify-full&sslrootcert={}&hostaddr=127.0.0.1",
            ca.display()
        ),
    );
    let out = stats(&cluster, &wrong_name);
    let text = said(&out);
    assert!(!out.status.success(), "a wrong host name was accepted");
    assert!(
        text.contains("not valid for the host name 'db.wrong-name.test'"),
        "{text}"
    );
    // verify-ca checks only the signer: the same name is fine there.
    let out = stats(&cluster, &wrong_name.replace("verify-full", "verify-ca"));
    let text = said(&out);
    assert!(out.status.success(), "verify-ca with another name: {text}");

    // A CA that did not sign the server's certificate.
    for mode in ["verify-full", "verify-ca", "require"] {
        let out = stats(
            &cluster,
            &url(
                &cluster,
                "localhost",
                &format!("sslmode={mode}&sslrootcert={}", other.display()),
            ),
        );
        let text = said(&out);
        assert!(
            !out.status.success(),
            "{mode}: an untrusted certificate was accepted"
        );
        assert!(
            text.contains("certificate is not trusted"),
            "{mode}: {text}"
        );
        assert!(
            text.contains(&other.display().to_string()),
            "{mode}: {text}"
        );
    }
}

#[test]
fn require_and_prefer_connect_without_a_root_certificate_and_verify_modes_ask_for_one() {
    let Some(cluster) = tls_cluster() else { return };
    for mode in ["require", "prefer"] {
        let out = stats(
            &cluster,
            &url(&cluster, "127.0.0.1", &format!("sslmode={mode}")),
        );
        let text = said(&out);
        assert!(out.status.success(), "sslmode={mode}: {text}");
    }
    let out = stats(&cluster, &url(&cluster, "localhost", "sslmode=verify-full"));
    let text = said(&out);
    assert!(!out.status.success());
    assert!(text.contains("sslrootcert=PATH"), "{text}");

    // A root certificate in ~/.postgresql makes require check the signer, as in libpq.
    let dot = cluster.dir.join("home").join(".postgresql");
    std::fs::create_dir_all(&dot).unwrap();
    std::fs::copy(cluster.dir.join("other-ca.crt"), dot.join("root.crt")).unwrap();
    let out = stats(&cluster, &url(&cluster, "127.0.0.1", "sslmode=require"));
    let text = said(&out);
    assert!(
        !out.status.success(),
        "require ignored ~/.postgresql/root.crt"
    );
    assert!(text.contains("certificate is not trusted"), "{text}");

    // disable: no TLS at all, which the server allows here.
    let out = stats(&cluster, &url(&cluster, "127.0.0.1", "sslmode=disable"));
    let text = said(&out);
    assert!(out.status.success(), "sslmode=disable: {text}");
}

#[test]
fn a_wrong_password_or_a_bad_tls_parameter_is_refused_without_showing_the_password() {
    let Some(cluster) = tls_cluster() else { return };
    let ca = cluster.dir.join("ca.crt");
    let wrong = format!(
        "postgres://postgres:Wrong-pw-0@localhost:{}/postgres?sslmode=verify-full&sslrootcert={}",
        cluster.port,
        ca.display()
    );
    let out = stats(&cluster, &wrong);
    let text = said(&out);
    assert!(!out.status.success());
    assert!(text.contains("password authentication failed"), "{text}");

    let out = stats(&cluster, &url(&cluster, "localhost", "sslmode=verify_full"));
    let text = said(&out);
    assert!(!out.status.success());
    assert!(
        text.contains("sslmode='verify_full' is not a mode"),
        "{text}"
    );

    let missing = cluster.dir.join("no-such-ca.crt");
    let out = stats(
        &cluster,
        &url(
            &cluster,
            "localhost",
            &format!("sslmode=verify-full&sslrootcert={}", missing.display()),
        ),
    );
    let text = said(&out);
    assert!(!out.status.success());
    assert!(text.contains("cannot be read"), "{text}");

    let out = stats(
        &cluster,
        &url(&cluster, "localhost", "sslmode=require&sslrootcert=system"),
    );
    let text = said(&out);
    assert!(!out.status.success());
    assert!(text.contains("needs sslmode=verify-full"), "{text}");
}
