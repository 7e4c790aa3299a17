//! The checks of the OCI distribution spec's conformance suite (pull, push,
//! content discovery, content management), status codes, headers and error
//! bodies included, against a hub started in-process: on the default
//! backends (SQLite and a data folder), and the same checks on PostgreSQL
//! and on S3 storage (moto), in each combination.

mod common;
mod peers;

use common::*;
use peers::{Backend, Blobs, Db};
use serde_json::json;

/// A check of a running hub, through a client holding a push token.
type Check = fn(&Client);

/// Every check, by name.
const CHECKS: &[(&str, Check)] = &[
    ("base_endpoint", checks::base_endpoint),
    ("monolithic_push_and_pull", checks::monolithic_push_and_pull),
    ("post_then_put", checks::post_then_put),
    ("chunked_push", checks::chunked_push),
    (
        "digest_mismatch_stores_nothing",
        checks::digest_mismatch_stores_nothing,
    ),
    ("cancel_upload", checks::cancel_upload),
    ("cross_repository_mount", checks::cross_repository_mount),
    (
        "manifests_push_pull_and_validation",
        checks::manifests_push_pull_and_validation,
    ),
    ("tags_list_pagination", checks::tags_list_pagination),
    ("referrers", checks::referrers),
    ("content_management", checks::content_management),
    (
        "names_tags_and_digests_are_checked",
        checks::names_tags_and_digests_are_checked,
    ),
];

/// Runs `check` against a fresh hub over the given backends; false when
/// a peer is missing (outside CI).
fn on(db: Db, blobs: Blobs, name: &str, check: Check) -> bool {
    let Some(backend) = Backend::new(db, blobs) else {
        return false;
    };
    let start = std::time::Instant::now();
    let server = Server::start_with(backend.config());
    check(&server.client());
    drop(server);
    eprintln!("{name} on {db:?} and {blobs:?}: {:?}", start.elapsed());
    true
}

/// Every check against PostgreSQL and S3 combinations: one test each, so
/// that the peers start once per combination (nextest runs each test in a
/// process of its own).
fn every_check(db: Db, blobs: Blobs) {
    // Held throughout, so that the peers run once for all the checks.
    let _peers = Backend::new(db, blobs);
    for (name, check) in CHECKS {
        if !on(db, blobs, name, *check) {
            return;
        }
    }
}

#[test]
fn every_check_on_postgres_and_local_storage() {
    every_check(Db::Postgres, Blobs::Local);
}

#[test]
fn every_check_on_sqlite_and_s3() {
    every_check(Db::Sqlite, Blobs::S3);
}

#[test]
fn every_check_on_postgres_and_s3() {
    every_check(Db::Postgres, Blobs::S3);
}

// The default backends (SQLite and the data folder), one test per check.

#[test]
fn base_endpoint() {
    on(
        Db::Sqlite,
        Blobs::Local,
        "base_endpoint",
        checks::base_endpoint,
    );
}

#[test]
fn monolithic_push_and_pull() {
    on(
        Db::Sqlite,
        Blobs::Local,
        "monolithic_push_and_pull",
        checks::monolithic_push_and_pull,
    );
}

#[test]
fn post_then_put() {
    on(
        Db::Sqlite,
        Blobs::Local,
        "post_then_put",
        checks::post_then_put,
    );
}

#[test]
fn chunked_push() {
    on(
        Db::Sqlite,
        Blobs::Local,
        "chunked_push",
        checks::chunked_push,
    );
}

#[test]
fn digest_mismatch_stores_nothing() {
    on(
        Db::Sqlite,
        Blobs::Local,
        "digest_mismatch_stores_nothing",
        checks::digest_mismatch_stores_nothing,
    );
}

#[test]
fn cancel_upload() {
    on(
        Db::Sqlite,
        Blobs::Local,
        "cancel_upload",
        checks::cancel_upload,
    );
}

#[test]
fn cross_repository_mount() {
    on(
        Db::Sqlite,
        Blobs::Local,
        "cross_repository_mount",
        checks::cross_repository_mount,
    );
}

#[test]
fn manifests_push_pull_and_validation() {
    on(
        Db::Sqlite,
        Blobs::Local,
        "manifests_push_pull_and_validation",
        checks::manifests_push_pull_and_validation,
    );
}

#[test]
fn tags_list_pagination() {
    on(
        Db::Sqlite,
        Blobs::Local,
        "tags_list_pagination",
        checks::tags_list_pagination,
    );
}

#[test]
fn referrers() {
    on(Db::Sqlite, Blobs::Local, "referrers", checks::referrers);
}

#[test]
fn content_management() {
    on(
        Db::Sqlite,
        Blobs::Local,
        "content_management",
        checks::content_management,
    );
}

#[test]
fn names_tags_and_digests_are_checked() {
    on(
        Db::Sqlite,
        Blobs::Local,
        "names_tags_and_digests_are_checked",
        checks::names_tags_and_digests_are_checked,
    );
}

mod checks {
    use super::*;

    pub fn base_endpoint(c: &Client) {
        let a = c.get("/v2/");
        assert_eq!(a.status, 200);
        assert_eq!(
            a.header("docker-distribution-api-version"),
            Some("registry/2.0")
        );
    }

    pub fn monolithic_push_and_pull(c: &Client) {
        let data = b"hello, registry".to_vec();
        let d = digest(&data);
        let a = c.send(
            "POST",
            &format!("/v2/a/b/blobs/uploads/?digest={d}"),
            &[("Content-Type", "application/octet-stream")],
            Some(&data),
        );
        assert_eq!(a.status, 201);
        assert_eq!(
            a.header("location"),
            Some(format!("/v2/a/b/blobs/{d}").as_str())
        );
        assert_eq!(a.header("docker-content-digest"), Some(d.as_str()));

        let g = c.get(&format!("/v2/a/b/blobs/{d}"));
        assert_eq!(g.status, 200);
        assert_eq!(g.body, data);
        assert_eq!(g.header("docker-content-digest"), Some(d.as_str()));

        let h = c.send("HEAD", &format!("/v2/a/b/blobs/{d}"), &[], None);
        assert_eq!(h.status, 200);
        assert_eq!(
            h.header("content-length"),
            Some(data.len().to_string().as_str())
        );

        let r = c.send(
            "GET",
            &format!("/v2/a/b/blobs/{d}"),
            &[("Range", "bytes=7-10")],
            None,
        );
        assert_eq!(r.status, 206);
        assert_eq!(r.body, b"regi");
        assert_eq!(r.header("content-range"), Some("bytes 7-10/15"));
        let r = c.send(
            "GET",
            &format!("/v2/a/b/blobs/{d}"),
            &[("Range", "bytes=-3")],
            None,
        );
        assert_eq!((r.status, r.body.as_slice()), (206, &b"try"[..]));
        let r = c.send(
            "GET",
            &format!("/v2/a/b/blobs/{d}"),
            &[("Range", "bytes=99-")],
            None,
        );
        assert_eq!(r.status, 416);
        assert_eq!(r.header("content-range"), Some("bytes */15"));

        // Another repository does not hold it.
        let other = c.get(&format!("/v2/other/blobs/{d}"));
        assert_eq!(other.status, 404);
        assert_eq!(other.code(), "BLOB_UNKNOWN");
    }

    pub fn post_then_put(c: &Client) {
        let a = c.send("POST", "/v2/r/blobs/uploads/", &[], Some(b""));
        assert_eq!(a.status, 202);
        let loc = a.header("location").expect("location").to_string();
        assert!(a.header("docker-upload-uuid").is_some());
        assert_eq!(a.header("range"), Some("0-0"));
        let data = vec![7u8; 100_000];
        let d = digest(&data);
        let p = c.send(
            "PUT",
            &format!("{loc}?digest={d}"),
            &[("Content-Type", "application/octet-stream")],
            Some(&data),
        );
        assert_eq!(p.status, 201);
        assert_eq!(p.header("docker-content-digest"), Some(d.as_str()));
        assert_eq!(c.get(&format!("/v2/r/blobs/{d}")).body, data);
        // The upload is over.
        assert_eq!(c.get(&loc).status, 404);
        assert_eq!(c.get(&loc).code(), "BLOB_UPLOAD_UNKNOWN");
    }

    pub fn chunked_push(c: &Client) {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let d = digest(&data);
        let (one, rest) = data.split_at(100_000);
        let (two, three) = rest.split_at(100_000);
        let a = c.send("POST", "/v2/r/blobs/uploads/", &[], Some(b""));
        let loc = a.header("location").expect("location").to_string();

        let p = c.send(
            "PATCH",
            &loc,
            &[
                ("Content-Type", "application/octet-stream"),
                ("Content-Range", "0-99999"),
            ],
            Some(one),
        );
        assert_eq!(p.status, 202);
        assert_eq!(p.header("range"), Some("0-99999"));
        let loc = p.header("location").expect("location").to_string();

        // A chunk out of order.
        let bad = c.send(
            "PATCH",
            &loc,
            &[
                ("Content-Type", "application/octet-stream"),
                ("Content-Range", "150000-249999"),
            ],
            Some(two),
        );
        assert_eq!(bad.status, 416);

        let s = c.get(&loc);
        assert_eq!(s.status, 204);
        assert_eq!(s.header("range"), Some("0-99999"));
        assert!(s.header("location").is_some());

        // A chunk without Content-Range (streamed).
        let p = c.send(
            "PATCH",
            &loc,
            &[("Content-Type", "application/octet-stream")],
            Some(two),
        );
        assert_eq!(p.status, 202);
        assert_eq!(p.header("range"), Some("0-199999"));

        // The last chunk with the PUT.
        let f = c.send(
            "PUT",
            &format!("{loc}?digest={d}"),
            &[
                ("Content-Type", "application/octet-stream"),
                ("Content-Range", "200000-299999"),
            ],
            Some(three),
        );
        assert_eq!(f.status, 201, "{}", String::from_utf8_lossy(&f.body));
        assert_eq!(
            f.header("location"),
            Some(format!("/v2/r/blobs/{d}").as_str())
        );
        assert_eq!(c.get(&format!("/v2/r/blobs/{d}")).body, data);
    }

    pub fn digest_mismatch_stores_nothing(c: &Client) {
        let wrong = digest(b"something else");
        let a = c.send(
            "POST",
            &format!("/v2/r/blobs/uploads/?digest={wrong}"),
            &[("Content-Type", "application/octet-stream")],
            Some(b"the bytes"),
        );
        assert_eq!(a.status, 400);
        assert_eq!(a.code(), "DIGEST_INVALID");
        assert_eq!(
            c.send("HEAD", &format!("/v2/r/blobs/{wrong}"), &[], None)
                .status,
            404
        );
        assert_eq!(
            c.send(
                "HEAD",
                &format!("/v2/r/blobs/{}", digest(b"the bytes")),
                &[],
                None
            )
            .status,
            404
        );

        let a = c.send("POST", "/v2/r/blobs/uploads/", &[], Some(b""));
        let loc = a.header("location").expect("location").to_string();
        let p = c.send(
            "PUT",
            &format!("{loc}?digest={wrong}"),
            &[],
            Some(b"the bytes"),
        );
        assert_eq!(p.status, 400);
        assert_eq!(p.code(), "DIGEST_INVALID");
        assert_eq!(
            c.send("HEAD", &format!("/v2/r/blobs/{wrong}"), &[], None)
                .status,
            404
        );

        // No digest at all.
        let a = c.send("POST", "/v2/r/blobs/uploads/", &[], Some(b""));
        let loc = a.header("location").expect("location").to_string();
        assert_eq!(
            c.send("PUT", &loc, &[], Some(b"x")).code(),
            "DIGEST_INVALID"
        );
    }

    pub fn cancel_upload(c: &Client) {
        let a = c.send("POST", "/v2/r/blobs/uploads/", &[], Some(b""));
        let loc = a.header("location").expect("location").to_string();
        assert_eq!(c.send("DELETE", &loc, &[], None).status, 204);
        let s = c.get(&loc);
        assert_eq!(s.status, 404);
        assert_eq!(s.code(), "BLOB_UPLOAD_UNKNOWN");
        // An upload of one repository is unknown to another.
        let a = c.send("POST", "/v2/r/blobs/uploads/", &[], Some(b""));
        let loc = a.header("location").expect("location").to_string();
        let elsewhere = loc.replace("/v2/r/", "/v2/q/");
        assert_eq!(c.get(&elsewhere).status, 404);
        assert_eq!(
            c.get("/v2/r/blobs/uploads/nothex").code(),
            "BLOB_UPLOAD_UNKNOWN"
        );
    }

    pub fn cross_repository_mount(c: &Client) {
        let d = c.push_blob("src", b"shared layer");
        let m = c.send(
            "POST",
            &format!("/v2/dst/blobs/uploads/?mount={d}&from=src"),
            &[],
            Some(b""),
        );
        assert_eq!(m.status, 201);
        assert_eq!(
            m.header("location"),
            Some(format!("/v2/dst/blobs/{d}").as_str())
        );
        assert_eq!(c.get(&format!("/v2/dst/blobs/{d}")).body, b"shared layer");
        // Not there: an upload starts instead.
        let unknown = digest(b"nowhere");
        let m = c.send(
            "POST",
            &format!("/v2/dst/blobs/uploads/?mount={unknown}&from=src"),
            &[],
            Some(b""),
        );
        assert_eq!(m.status, 202);
        assert!(m.header("location").is_some());
    }

    pub fn manifests_push_pull_and_validation(c: &Client) {
        let config = b"{}".to_vec();
        let layer = b"layer bytes".to_vec();
        let m = image_manifest(&config, &[&layer], json!({}));
        let md = digest(&m);

        // Blobs first, or the manifest is refused.
        let a = c.push_manifest("app", "v1", OCI_MANIFEST, &m);
        assert_eq!(a.status, 400);
        assert_eq!(a.code(), "MANIFEST_BLOB_UNKNOWN");
        c.push_blob("app", &config);
        c.push_blob("app", &layer);

        let a = c.push_manifest("app", "v1", OCI_MANIFEST, &m);
        assert_eq!(a.status, 201);
        assert_eq!(
            a.header("location"),
            Some(format!("/v2/app/manifests/{md}").as_str())
        );
        assert_eq!(a.header("docker-content-digest"), Some(md.as_str()));

        for reference in ["v1", md.as_str()] {
            let g = c.send(
                "GET",
                &format!("/v2/app/manifests/{reference}"),
                &[("Accept", OCI_MANIFEST)],
                None,
            );
            assert_eq!(g.status, 200);
            assert_eq!(g.body, m);
            assert_eq!(g.header("content-type"), Some(OCI_MANIFEST));
            assert_eq!(g.header("docker-content-digest"), Some(md.as_str()));
            let h = c.send("HEAD", &format!("/v2/app/manifests/{reference}"), &[], None);
            assert_eq!(h.status, 200);
            assert_eq!(
                h.header("content-length"),
                Some(m.len().to_string().as_str())
            );
        }
        // A client that accepts only an index does not get a manifest.
        let g = c.send(
            "GET",
            "/v2/app/manifests/v1",
            &[("Accept", OCI_INDEX)],
            None,
        );
        assert_eq!(g.status, 404);

        // Pushed by digest.
        assert_eq!(c.push_manifest("app", &md, OCI_MANIFEST, &m).status, 201);
        let other = digest(b"other");
        let a = c.push_manifest("app", &other, OCI_MANIFEST, &m);
        assert_eq!((a.status, a.code().as_str()), (400, "DIGEST_INVALID"));

        let a = c.push_manifest("app", "v2", OCI_MANIFEST, b"{not json");
        assert_eq!((a.status, a.code().as_str()), (400, "MANIFEST_INVALID"));
        let a = c.push_manifest("app", "v2", OCI_INDEX, &m);
        assert_eq!((a.status, a.code().as_str()), (400, "MANIFEST_INVALID"));

        let u = c.get("/v2/app/manifests/nope");
        assert_eq!((u.status, u.code().as_str()), (404, "MANIFEST_UNKNOWN"));

        // An index over the manifest; then one over a manifest the repository lacks.
        let index = serde_json::to_vec(&json!({
            "schemaVersion": 2, "mediaType": OCI_INDEX,
            "manifests": [{"mediaType": OCI_MANIFEST, "digest": md, "size": m.len()}],
        }))
        .expect("json");
        assert_eq!(
            c.push_manifest("app", "multi", OCI_INDEX, &index).status,
            201
        );
        let g = c.get("/v2/app/manifests/multi");
        assert_eq!(g.header("content-type"), Some(OCI_INDEX));
        let bad = serde_json::to_vec(&json!({
            "schemaVersion": 2, "mediaType": OCI_INDEX,
            "manifests": [{"mediaType": OCI_MANIFEST, "digest": other, "size": 5}],
        }))
        .expect("json");
        assert_eq!(
            c.push_manifest("app", "bad", OCI_INDEX, &bad).code(),
            "MANIFEST_BLOB_UNKNOWN"
        );

        // Too large.
        let big = vec![b' '; (4 << 20) + 1];
        assert_eq!(
            c.push_manifest("app", "big", OCI_MANIFEST, &big).status,
            413
        );
    }

    pub fn tags_list_pagination(c: &Client) {
        let config = b"{}".to_vec();
        c.push_blob("t", &config);
        let m = image_manifest(&config, &[], json!({}));
        for tag in ["c", "a", "e", "b", "d"] {
            assert_eq!(c.push_manifest("t", tag, OCI_MANIFEST, &m).status, 201);
        }
        let all = c.get("/v2/t/tags/list");
        assert_eq!(all.status, 200);
        assert_eq!(
            all.json(),
            json!({"name": "t", "tags": ["a", "b", "c", "d", "e"]})
        );

        let p = c.get("/v2/t/tags/list?n=2");
        assert_eq!(p.json()["tags"], json!(["a", "b"]));
        assert_eq!(
            p.header("link"),
            Some("</v2/t/tags/list?n=2&last=b>; rel=\"next\"")
        );
        let p = c.get("/v2/t/tags/list?n=2&last=b");
        assert_eq!(p.json()["tags"], json!(["c", "d"]));
        let p = c.get("/v2/t/tags/list?n=2&last=d");
        assert_eq!(p.json()["tags"], json!(["e"]));
        assert_eq!(p.header("link"), None);
        let p = c.get("/v2/t/tags/list?n=0");
        assert_eq!(p.json()["tags"], json!([]));

        let u = c.get("/v2/unknown/tags/list");
        assert_eq!((u.status, u.code().as_str()), (404, "NAME_UNKNOWN"));
    }

    pub fn referrers(c: &Client) {
        let config = b"{}".to_vec();
        c.push_blob("ref", &config);
        let subject = image_manifest(&config, &[], json!({}));
        let sd = digest(&subject);
        assert_eq!(
            c.push_manifest("ref", "base", OCI_MANIFEST, &subject)
                .status,
            201
        );

        let sig = image_manifest(
            &config,
            &[],
            json!({
                "artifactType": "application/vnd.example.signature",
                "subject": {"mediaType": OCI_MANIFEST, "digest": sd, "size": subject.len()},
                "annotations": {"org.example.who": "tests"},
            }),
        );
        let a = c.push_manifest("ref", &digest(&sig), OCI_MANIFEST, &sig);
        assert_eq!(a.status, 201);
        assert_eq!(a.header("oci-subject"), Some(sd.as_str()));
        let sbom = image_manifest(
            &config,
            &[],
            json!({
                "artifactType": "application/vnd.example.sbom",
                "subject": {"mediaType": OCI_MANIFEST, "digest": sd, "size": subject.len()},
            }),
        );
        assert_eq!(
            c.push_manifest("ref", &digest(&sbom), OCI_MANIFEST, &sbom)
                .status,
            201
        );

        let r = c.get(&format!("/v2/ref/referrers/{sd}"));
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some(OCI_INDEX));
        let idx = r.json();
        assert_eq!(idx["mediaType"], OCI_INDEX);
        let list = idx["manifests"].as_array().expect("manifests");
        assert_eq!(list.len(), 2);
        let sig_entry = list
            .iter()
            .find(|e| e["digest"] == digest(&sig))
            .expect("the signature");
        assert_eq!(
            sig_entry["artifactType"],
            "application/vnd.example.signature"
        );
        assert_eq!(sig_entry["annotations"]["org.example.who"], "tests");
        assert_eq!(sig_entry["size"], sig.len());

        let f = c.get(&format!(
            "/v2/ref/referrers/{sd}?artifactType=application/vnd.example.sbom"
        ));
        assert_eq!(f.header("oci-filters-applied"), Some("artifactType"));
        let list = f.json()["manifests"].as_array().expect("manifests").clone();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0]["digest"], digest(&sbom));

        // No referrers: an empty index.
        let e = c.get(&format!("/v2/ref/referrers/{}", digest(b"none")));
        assert_eq!(e.status, 200);
        assert_eq!(e.json()["manifests"], json!([]));
        let bad = c.get("/v2/ref/referrers/sha256:zz");
        assert_eq!((bad.status, bad.code().as_str()), (400, "DIGEST_INVALID"));
    }

    pub fn content_management(c: &Client) {
        let config = b"{}".to_vec();
        let layer = b"to be deleted".to_vec();
        let cd = c.push_blob("del", &config);
        let ld = c.push_blob("del", &layer);
        let m = image_manifest(&config, &[&layer], json!({}));
        let md = digest(&m);
        assert_eq!(c.push_manifest("del", "one", OCI_MANIFEST, &m).status, 201);
        assert_eq!(c.push_manifest("del", "two", OCI_MANIFEST, &m).status, 201);

        // A tag.
        assert_eq!(
            c.send("DELETE", "/v2/del/manifests/one", &[], None).status,
            202
        );
        assert_eq!(c.get("/v2/del/manifests/one").status, 404);
        assert_eq!(c.get("/v2/del/manifests/two").status, 200);
        assert_eq!(c.get("/v2/del/tags/list").json()["tags"], json!(["two"]));

        // The manifest, and with it its tags.
        assert_eq!(
            c.send("DELETE", &format!("/v2/del/manifests/{md}"), &[], None)
                .status,
            202
        );
        let g = c.get(&format!("/v2/del/manifests/{md}"));
        assert_eq!((g.status, g.code().as_str()), (404, "MANIFEST_UNKNOWN"));
        assert_eq!(c.get("/v2/del/manifests/two").status, 404);
        let again = c.send("DELETE", &format!("/v2/del/manifests/{md}"), &[], None);
        assert_eq!(
            (again.status, again.code().as_str()),
            (404, "MANIFEST_UNKNOWN")
        );

        // Blobs.
        for d in [&cd, &ld] {
            assert_eq!(
                c.send("DELETE", &format!("/v2/del/blobs/{d}"), &[], None)
                    .status,
                202
            );
            let g = c.get(&format!("/v2/del/blobs/{d}"));
            assert_eq!((g.status, g.code().as_str()), (404, "BLOB_UNKNOWN"));
        }
        let again = c.send("DELETE", &format!("/v2/del/blobs/{ld}"), &[], None);
        assert_eq!((again.status, again.code().as_str()), (404, "BLOB_UNKNOWN"));
    }

    pub fn names_tags_and_digests_are_checked(c: &Client) {
        for path in [
            "/v2/UPPER/tags/list",
            "/v2/a/%2e%2e/b/tags/list",
            "/v2/a%20b/tags/list",
            "/v2/-a/blobs/uploads/",
            "/v2/a//b/tags/list",
        ] {
            let a = c.send("GET", path, &[], None);
            assert_eq!(
                (a.status, a.code().as_str()),
                (400, "NAME_INVALID"),
                "{path}"
            );
        }
        let long = "a".repeat(300);
        assert_eq!(
            c.get(&format!("/v2/{long}/tags/list")).code(),
            "NAME_INVALID"
        );

        let a = c.get("/v2/r/blobs/sha256:1234");
        assert_eq!((a.status, a.code().as_str()), (400, "DIGEST_INVALID"));
        let a = c.get(&format!("/v2/r/blobs/sha512:{}", "a".repeat(128)));
        assert_eq!((a.status, a.code().as_str()), (400, "UNSUPPORTED"));
        let a = c.get("/v2/r/blobs/not-a-digest");
        assert_eq!((a.status, a.code().as_str()), (400, "DIGEST_INVALID"));

        let config = b"{}".to_vec();
        c.push_blob("r", &config);
        let m = image_manifest(&config, &[], json!({}));
        let bad_tag = format!("/v2/r/manifests/{}", "t".repeat(200));
        let a = c.send("PUT", &bad_tag, &[("Content-Type", OCI_MANIFEST)], Some(&m));
        assert_eq!(a.status, 400);
        assert_eq!(c.get("/v2/nowhere/at/all").status, 404);
    }
}

#[test]
fn blob_size_cap() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = hub::Config::new(dir.path());
    config.max_blob_size = 1000;
    let s = Server::start_with(config);
    let c = s.client();
    let data = vec![1u8; 2000];
    let d = digest(&data);
    let a = c.send(
        "POST",
        &format!("/v2/r/blobs/uploads/?digest={d}"),
        &[],
        Some(&data),
    );
    assert_eq!((a.status, a.code().as_str()), (413, "SIZE_INVALID"));
    assert_eq!(
        c.send("HEAD", &format!("/v2/r/blobs/{d}"), &[], None)
            .status,
        404
    );
    // Chunk by chunk too.
    let a = c.send("POST", "/v2/r/blobs/uploads/", &[], Some(b""));
    let loc = a.header("location").expect("location").to_string();
    assert_eq!(c.send("PATCH", &loc, &[], Some(&data[..600])).status, 202);
    let p = c.send("PATCH", &loc, &[], Some(&data[600..1200]));
    assert_eq!((p.status, p.code().as_str()), (413, "SIZE_INVALID"));
    assert_eq!(c.get(&loc).header("range"), Some("0-599"));
}

#[test]
fn uploads_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data: Vec<u8> = (0..50_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let d = digest(&data);
    let (loc, id) = {
        let s = Server::start(dir.path());
        let c = s.client();
        let a = c.send("POST", "/v2/r/blobs/uploads/", &[], Some(b""));
        let loc = a.header("location").expect("location").to_string();
        let id = a.header("docker-upload-uuid").expect("uuid").to_string();
        assert_eq!(
            c.send("PATCH", &loc, &[], Some(&data[..20_000])).status,
            202
        );
        (loc, id)
    };
    // An interrupted request left stray bytes after the recorded ones.
    let upload = dir.path().join("uploads").join(&id);
    let mut held = std::fs::read(&upload).expect("the upload file");
    assert_eq!(held.len(), 20_000);
    held.extend_from_slice(b"garbage from a request that never finished");
    std::fs::write(&upload, &held).expect("write");

    let s = Server::start(dir.path());
    let c = s.client();
    let st = c.get(&loc);
    assert_eq!((st.status, st.header("range")), (204, Some("0-19999")));
    assert_eq!(
        c.send("HEAD", &format!("/v2/r/blobs/{d}"), &[], None)
            .status,
        404
    );
    assert_eq!(
        c.send("PATCH", &loc, &[], Some(&data[20_000..])).status,
        202
    );
    let f = c.send("PUT", &format!("{loc}?digest={d}"), &[], Some(b""));
    assert_eq!(f.status, 201, "{}", String::from_utf8_lossy(&f.body));
    assert_eq!(c.get(&format!("/v2/r/blobs/{d}")).body, data);
}
