//! Token management: listing shows who holds which scopes and since when,
//! never the secret; revoking a token refuses its Basic credentials at once,
//! and the bearer tokens traded for it too, while other tokens keep working.

mod common;

use common::*;
use hub::{Config, Hub};
use std::path::Path;

/// Runs `f` on a second handle of the hub's data folder, as another
/// `vmhub serve` process would.
fn with_hub<T>(data: &Path, f: impl AsyncFnOnce(&Hub) -> T) -> T {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let hub = Hub::open(&Config::new(data)).await.unwrap();
        f(&hub).await
    })
}

fn bearer(c: &Client) -> String {
    let a = c.get("/v2/token?service=vmhub&scope=repository:acme/box:push,pull");
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    a.json()["token"].as_str().unwrap().to_string()
}

fn start_upload(c: &Client) -> u16 {
    c.send("POST", "/v2/acme/box/blobs/uploads/", &[], Some(b""))
        .status
}

#[test]
fn list_and_revoke_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let secret = with_hub(dir.path(), async |h| {
        h.create_token("ann", &["push:acme".parse().unwrap()])
            .await
            .unwrap()
    });
    let ann = Client::basic(&server.base, "ann", &secret);
    assert_eq!(start_upload(&ann), 202);
    let ann_bearer = Client::bearer(&server.base, &bearer(&ann));
    assert_eq!(start_upload(&ann_bearer), 202);
    let tester_bearer = Client::bearer(&server.base, &bearer(&server.client()));

    let list = with_hub(dir.path(), async |h| h.list_tokens().await.unwrap());
    assert_eq!(list.len(), 2, "{list:?}");
    let ann_info = list.iter().find(|t| t.user == "ann").unwrap();
    assert_eq!(ann_info.scopes, ["push:acme"]);
    assert_eq!(ann_info.id.len(), 12);
    assert!(ann_info.created.ends_with('Z'), "{}", ann_info.created);
    let tester_info = list.iter().find(|t| t.user == "tester").unwrap();
    assert_eq!(tester_info.scopes, ["push:*"]);
    let shown = format!("{list:?}");
    assert!(!shown.contains(&secret[6..]) && !shown.contains(&server.token[6..]));

    // Nothing matches: nothing revoked, everything still works.
    let none = with_hub(dir.path(), async |h| {
        h.revoke_tokens("nobody").await.unwrap()
    });
    assert!(none.is_empty());
    assert_eq!(start_upload(&ann), 202);

    let revoked = with_hub(dir.path(), async |h| h.revoke_tokens("ann").await.unwrap());
    assert_eq!(revoked, vec![ann_info.clone()]);
    // At once, for the running hub: Basic and the bearer token traded for it.
    let a = ann.send("POST", "/v2/acme/box/blobs/uploads/", &[], Some(b""));
    assert_eq!((a.status, a.code().as_str()), (401, "UNAUTHORIZED"));
    assert_eq!(start_upload(&ann_bearer), 401);
    let a = ann.get("/v2/token?service=vmhub&scope=repository:acme/box:push");
    assert_eq!(a.status, 401);
    // The other token is untouched.
    assert_eq!(start_upload(&server.client()), 202);
    assert_eq!(start_upload(&tester_bearer), 202);

    // By id.
    let revoked = with_hub(dir.path(), async |h| {
        h.revoke_tokens(&tester_info.id).await.unwrap()
    });
    assert_eq!(revoked.len(), 1);
    assert_eq!(start_upload(&server.client()), 401);
    assert_eq!(start_upload(&tester_bearer), 401);
    assert!(with_hub(dir.path(), async |h| h.list_tokens().await.unwrap()).is_empty());
}
