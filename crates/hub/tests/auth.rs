//! Publishing tokens: the 401 challenge, Basic credentials and bearer tokens
//! from the token endpoint, 403 on a missing scope, expired and forged
//! tokens, anonymous pulls and a private hub.

mod common;

use common::*;
use serde_json::json;

fn setup_with(private: bool) -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = hub::Config::new(dir.path());
    config.private = private;
    let server = Server::start_with(config);
    (dir, server)
}

fn host(base: &str) -> &str {
    base.strip_prefix("http://").expect("http")
}

/// Pushes a small image to `repo:tag` with `c`; returns the manifest's answer.
fn push_image(c: &Client, repo: &str, tag: &str) -> Answer {
    let config = br#"{"name":"box"}"#;
    let layer = b"layer bytes";
    let a = c.send(
        "POST",
        &format!("/v2/{repo}/blobs/uploads/?digest={}", digest(config)),
        &[],
        Some(config),
    );
    if a.status != 201 {
        return a;
    }
    c.push_blob(repo, layer);
    let m = image_manifest(config, &[layer], json!({}));
    c.push_manifest(repo, tag, OCI_MANIFEST, &m)
}

fn token_for(c: &Client, scope: &str) -> Answer {
    c.get(&format!("/v2/token?service=vmhub&scope={scope}"))
}

#[test]
fn anonymous_push_gets_the_challenge() {
    let (_d, s) = setup_with(false);
    let c = Client::new(&s.base);
    let a = c.send("POST", "/v2/acme/box/blobs/uploads/", &[], Some(b""));
    assert_eq!((a.status, a.code().as_str()), (401, "UNAUTHORIZED"));
    assert_eq!(
        a.header("www-authenticate"),
        Some(
            format!(
                "Bearer realm=\"http://{}/v2/token\",service=\"vmhub\",scope=\"repository:acme/box:push,pull\"",
                host(&s.base)
            )
            .as_str()
        )
    );
    for (method, path) in [
        ("PUT", "/v2/acme/box/manifests/v1"),
        ("DELETE", "/v2/acme/box/manifests/v1"),
        ("DELETE", &format!("/v2/acme/box/blobs/{}", digest(b"x"))),
        ("PATCH", "/v2/acme/box/blobs/uploads/00ff"),
    ] {
        let a = c.send(method, path, &[], Some(b"{}"));
        assert_eq!(a.status, 401, "{method} {path}");
        assert!(a.header("www-authenticate").is_some());
    }
    // The base endpoint challenges anonymous clients (so `login` can test
    // credentials there) and answers authenticated ones.
    let b = c.get("/v2/");
    assert_eq!(b.status, 401);
    assert_eq!(
        b.header("www-authenticate"),
        Some(
            format!(
                "Bearer realm=\"http://{}/v2/token\",service=\"vmhub\"",
                host(&s.base)
            )
            .as_str()
        )
    );
    assert_eq!(s.client().get("/v2/").status, 200);
    // Nothing was stored.
    assert_eq!(c.get("/v2/acme/box/tags/list").status, 404);
}

#[test]
fn basic_credentials_push_within_their_scope() {
    let (d, s) = setup_with(false);
    let secret = mint(d.path(), "ann", &["push:acme"]);
    let c = Client::basic(&s.base, "ann", &secret);
    assert_eq!(push_image(&c, "acme/box", "v1").status, 201);
    assert_eq!(push_image(&c, "acme", "v1").status, 201);
    let a = push_image(&c, "acmeco/box", "v1");
    assert_eq!((a.status, a.code().as_str()), (403, "DENIED"));
    assert!(a.header("www-authenticate").is_none());
    // The wrong user, a wrong secret, garbage: 401 with the challenge.
    for bad in [
        Client::basic(&s.base, "bob", &secret),
        Client::basic(&s.base, "ann", "vmhub_0000"),
        Client::bearer(&s.base, "not-a-token"),
    ] {
        let a = bad.send("POST", "/v2/acme/box/blobs/uploads/", &[], Some(b""));
        assert_eq!((a.status, a.code().as_str()), (401, "UNAUTHORIZED"));
        assert!(a.header("www-authenticate").is_some());
        // Bad credentials are refused even where none are needed.
        assert_eq!(bad.get("/v2/acme/box/manifests/v1").status, 401);
        assert_eq!(bad.get("/v2/").status, 401);
    }
    // The database holds a hash, never the secret.
    let db = std::fs::read(d.path().join("hub.db")).expect("db");
    let needle = secret.as_bytes();
    assert!(!db.windows(needle.len()).any(|w| w == needle));
}

#[test]
fn bearer_tokens_from_the_token_endpoint() {
    let (d, s) = setup_with(false);
    let secret = mint(d.path(), "ann", &["push:acme"]);
    let basic = Client::basic(&s.base, "ann", &secret);
    let t = token_for(&basic, "repository:acme/box:push,pull");
    assert_eq!(t.status, 200, "{}", String::from_utf8_lossy(&t.body));
    let v = t.json();
    let token = v["token"].as_str().expect("token").to_string();
    assert_eq!(v["access_token"].as_str(), Some(token.as_str()));
    assert!(v["expires_in"].as_u64().expect("expires_in") > 0);
    let c = Client::bearer(&s.base, &token);
    assert_eq!(push_image(&c, "acme/box", "v1").status, 201);
    assert_eq!(c.get("/v2/").status, 200);
    // The token is for acme/box only.
    let a = push_image(&c, "acme/other", "v1");
    assert_eq!((a.status, a.code().as_str()), (403, "DENIED"));
    // Asking for more than the scope gives less: pull only, so pushes fail.
    let t = token_for(&basic, "repository:other/box:push,pull").json();
    let c = Client::bearer(&s.base, t["token"].as_str().expect("token"));
    let a = push_image(&c, "other/box", "v1");
    assert_eq!((a.status, a.code().as_str()), (403, "DENIED"));
    // The token endpoint refuses wrong credentials.
    let bad = Client::basic(&s.base, "ann", "vmhub_wrong");
    let a = token_for(&bad, "repository:acme/box:push");
    assert_eq!(a.status, 401);
    assert!(a
        .header("www-authenticate")
        .is_some_and(|h| h.starts_with("Basic ")));
    // Another hub over the same folder accepts the token.
    let s2 = Server::start(d.path());
    let c2 = Client::bearer(&s2.base, &token);
    assert_eq!(push_image(&c2, "acme/box", "v2").status, 201);
}

#[test]
fn expired_and_forged_bearer_tokens_are_refused() {
    let (d, s) = setup_with(false);
    let key = hub::auth::TokenKey::load(d.path()).expect("key");
    let access = vec![hub::auth::Access {
        name: "acme/box".into(),
        actions: vec!["push".into(), "pull".into()],
    }];
    // A user's bearer token names the publishing token it was traded for.
    let tok = hub::digest::Digest::of(s.token.as_bytes()).hex();
    let claims = |exp| hub::auth::Claims {
        sub: "tester".into(),
        exp,
        access: access.clone(),
        tok: tok.clone(),
    };
    let far = 4_000_000_000;
    // The hub's own key, in date: accepted.
    let good = key.sign(&claims(far));
    assert_eq!(
        push_image(&Client::bearer(&s.base, &good), "acme/box", "v1").status,
        201
    );
    // Expired.
    let expired = key.sign(&claims(1));
    // Signed with another key.
    let other = tempfile::tempdir().expect("tempdir");
    let forged = hub::auth::TokenKey::load(other.path())
        .expect("key")
        .sign(&claims(far));
    // The claims changed under a good signature.
    let (_, sig) = good.split_once('.').expect("dot");
    let (body, _) = key
        .sign(&hub::auth::Claims {
            sub: "tester".into(),
            exp: far,
            access: vec![hub::auth::Access {
                name: "victim/box".into(),
                actions: vec!["push".into()],
            }],
            tok: tok.clone(),
        })
        .split_once('.')
        .map(|(b, s)| (b.to_string(), s.to_string()))
        .expect("dot");
    let spliced = format!("{body}.{sig}");
    // Well signed and in date, but naming no publishing token.
    let orphan = key.sign(&hub::auth::Claims {
        tok: String::new(),
        ..claims(far)
    });
    for t in [expired, forged, spliced, orphan] {
        let c = Client::bearer(&s.base, &t);
        let a = c.send("POST", "/v2/acme/box/blobs/uploads/", &[], Some(b""));
        assert_eq!((a.status, a.code().as_str()), (401, "UNAUTHORIZED"), "{t}");
        let a = c.send("POST", "/v2/victim/box/blobs/uploads/", &[], Some(b""));
        assert_eq!(a.status, 401);
    }
}

#[test]
fn pulls_are_anonymous_on_a_public_hub() {
    let (_d, s) = setup_with(false);
    assert_eq!(push_image(&s.client(), "acme/box", "v1").status, 201);
    let c = Client::new(&s.base);
    let m = c.get("/v2/acme/box/manifests/v1");
    assert_eq!(m.status, 200);
    assert_eq!(c.get("/v2/acme/box/tags/list").status, 200);
    // An anonymous token grants pull and nothing more.
    let t = token_for(&c, "repository:acme/box:push,pull");
    assert_eq!(t.status, 200);
    let anon = Client::bearer(&s.base, t.json()["token"].as_str().expect("token"));
    assert_eq!(anon.get("/v2/acme/box/manifests/v1").status, 200);
    let a = anon.send("POST", "/v2/acme/box/blobs/uploads/", &[], Some(b""));
    assert_eq!(a.status, 401);
}

#[test]
fn a_private_hub_needs_a_token_to_pull() {
    let (d, s) = setup_with(true);
    assert_eq!(push_image(&s.client(), "acme/box", "v1").status, 201);
    let anon = Client::new(&s.base);
    let a = anon.get("/v2/acme/box/manifests/v1");
    assert_eq!((a.status, a.code().as_str()), (401, "UNAUTHORIZED"));
    assert_eq!(
        a.header("www-authenticate"),
        Some(
            format!(
                "Bearer realm=\"http://{}/v2/token\",service=\"vmhub\",scope=\"repository:acme/box:pull\"",
                host(&s.base)
            )
            .as_str()
        )
    );
    assert_eq!(token_for(&anon, "repository:acme/box:pull").status, 401);

    let reader = mint(d.path(), "rita", &["pull:acme"]);
    let r = Client::basic(&s.base, "rita", &reader);
    assert_eq!(r.get("/v2/acme/box/manifests/v1").status, 200);
    let a = push_image(&r, "acme/box", "v2");
    assert_eq!((a.status, a.code().as_str()), (403, "DENIED"));
    // Pull scope on one namespace says nothing of another.
    assert_eq!(push_image(&s.client(), "other/box", "v1").status, 201);
    assert_eq!(r.get("/v2/other/box/manifests/v1").status, 403);
    // Through the token endpoint too.
    let t = token_for(&r, "repository:acme/box:pull").json();
    let b = Client::bearer(&s.base, t["token"].as_str().expect("token"));
    assert_eq!(b.get("/v2/acme/box/manifests/v1").status, 200);
    // A push token implies pull.
    let w = mint(d.path(), "wes", &["push:acme"]);
    assert_eq!(
        Client::basic(&s.base, "wes", &w)
            .get("/v2/acme/box/manifests/v1")
            .status,
        200
    );
}
