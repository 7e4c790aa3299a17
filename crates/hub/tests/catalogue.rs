//! The catalogue: machine manifests pushed to the hub are recorded from
//! their descriptions and found by `GET /api/search`.

mod common;

use common::*;
use serde_json::json;

const MACHINE: &str = "application/vnd.vmhub.machine.v1+json";

/// Pushes a machine to `repo:tag` whose description is `config`.
fn push_machine(
    c: &Client,
    repo: &str,
    tag: &str,
    config: serde_json::Value,
    signed: bool,
) -> String {
    let config = serde_json::to_vec(&config).expect("json");
    let index = format!("index of {repo}:{tag}").into_bytes();
    let chunk = vec![7u8; 1000];
    c.push_blob(repo, &config);
    c.push_blob(repo, &index);
    c.push_blob(repo, &chunk);
    let mut annotations = json!({});
    if signed {
        annotations = json!({
            "dev.vmhub.signature": "c2ln",
            "dev.vmhub.signature.key": "ed25519:S0VZ",
        });
    }
    let m = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": MACHINE,
        "config": {
            "mediaType": "application/vnd.vmhub.machine.config.v1+json",
            "digest": digest(&config),
            "size": config.len(),
        },
        "layers": [
            {"mediaType": "application/vnd.vmhub.disk.index.v1+json", "digest": digest(&index), "size": index.len()},
            {"mediaType": "application/vnd.vmhub.chunk.v1+zstd", "digest": digest(&chunk), "size": chunk.len()},
        ],
        "annotations": annotations,
    });
    let m = serde_json::to_vec(&m).expect("json");
    let a = c.push_manifest(repo, tag, OCI_MANIFEST, &m);
    assert_eq!(a.status, 201, "{}", String::from_utf8_lossy(&a.body));
    digest(&m)
}

pub fn description(name: &str, text: &str, os: &str) -> serde_json::Value {
    json!({
        "name": name,
        "version": "1.0",
        "description": text,
        "os": {"family": "linux", "name": os},
        "architecture": "x86_64",
        "firmware": "uefi",
        "cpus": 2,
        "memory": 1u64 << 30,
        "created": "2026-11-20T10:00:00Z",
        "disks": [{"name": "disk0", "size": 8u64 << 30, "format": "vhd", "index": "sha256:00"}],
    })
}

fn search(c: &Client, q: &str) -> Vec<serde_json::Value> {
    let a = c.get(&format!("/api/search?q={q}"));
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    assert_eq!(a.header("content-type"), Some("application/json"));
    a.json().as_array().expect("a list").clone()
}

fn names(list: &[serde_json::Value]) -> Vec<String> {
    list.iter()
        .map(|m| {
            format!(
                "{}:{}",
                m["repository"].as_str().unwrap_or(""),
                m["tag"].as_str().unwrap_or("")
            )
        })
        .collect()
}

#[test]
fn pushed_machines_are_found() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path());
    let c = s.client();
    let d1 = push_machine(
        &c,
        "acme/debian",
        "12",
        description("debian", "A small Debian server", "Debian GNU/Linux 12"),
        true,
    );
    push_machine(
        &c,
        "acme/alpine",
        "3",
        description("alpine", "Tiny 100% musl box", "Alpine Linux"),
        false,
    );
    push_machine(
        &c,
        "labs/dos",
        "6",
        description("freedos", "For old games", "FreeDOS"),
        false,
    );
    // Not a machine: not catalogued.
    let cfg = b"{}";
    c.push_blob("acme/other", cfg);
    let m = image_manifest(cfg, &[], json!({}));
    assert_eq!(
        c.push_manifest("acme/other", "1", OCI_MANIFEST, &m).status,
        201
    );

    // Anyone may search; newest first.
    let anon = Client::new(&s.base);
    assert_eq!(
        names(&search(&anon, "")),
        ["labs/dos:6", "acme/alpine:3", "acme/debian:12"]
    );
    // By name, description and OS, ignoring case.
    assert_eq!(names(&search(&anon, "debian")), ["acme/debian:12"]);
    assert_eq!(names(&search(&anon, "GAMES")), ["labs/dos:6"]);
    assert_eq!(names(&search(&anon, "alpine+linux")), ["acme/alpine:3"]);
    assert_eq!(
        names(&search(&anon, "linux")),
        ["acme/alpine:3", "acme/debian:12"]
    );
    // Wildcards are plain characters.
    assert_eq!(names(&search(&anon, "100%25")), ["acme/alpine:3"]);
    assert!(search(&anon, "%25%25%25").is_empty());
    assert!(search(&anon, "_").is_empty());

    let deb = &search(&anon, "debian")[0];
    assert_eq!(deb["digest"].as_str(), Some(d1.as_str()));
    assert_eq!(deb["name"], "debian");
    assert_eq!(deb["version"], "1.0");
    assert_eq!(deb["os"], "Debian GNU/Linux 12");
    assert_eq!(deb["architecture"], "x86_64");
    assert_eq!(deb["firmware"], "uefi");
    assert_eq!(deb["cpus"], 2);
    assert_eq!(deb["memory"], 1u64 << 30);
    assert_eq!(deb["disks"], json!([{"name": "disk0", "size": 8u64 << 30}]));
    assert_eq!(deb["created"], "2026-11-20T10:00:00Z");
    assert_eq!(deb["signed_by"], "ed25519:S0VZ");
    assert!(deb["compressed_size"].as_u64().expect("size") > 1000);
    assert!(deb["pushed"].as_str().expect("pushed").ends_with('Z'));
    assert_eq!(
        search(&anon, "alpine")[0]["signed_by"],
        serde_json::Value::Null
    );

    // A new push of a tag replaces its entry and comes first.
    push_machine(
        &c,
        "acme/debian",
        "12",
        description("debian", "Rebuilt", "Debian GNU/Linux 12"),
        false,
    );
    let all = search(&anon, "");
    assert_eq!(
        names(&all),
        ["acme/debian:12", "labs/dos:6", "acme/alpine:3"]
    );
    assert_eq!(all[0]["description"], "Rebuilt");

    // Pages are bounded.
    assert_eq!(
        anon.get("/api/search?n=1").json().as_array().map(Vec::len),
        Some(1)
    );
    assert_eq!(anon.get("/api/search?n=0").status, 400);
    assert_eq!(anon.get("/api/search?n=x").status, 400);
    let long = "a".repeat(500);
    assert_eq!(anon.get(&format!("/api/search?q={long}")).status, 400);
    assert_eq!(anon.send("POST", "/api/search", &[], Some(b"")).status, 405);

    // Deleting a tag or a manifest takes the machine out.
    assert_eq!(
        c.send("DELETE", "/v2/labs/dos/manifests/6", &[], None)
            .status,
        202
    );
    assert_eq!(
        names(&search(&anon, "")),
        ["acme/debian:12", "acme/alpine:3"]
    );
    let d = search(&anon, "alpine")[0]["digest"]
        .as_str()
        .expect("digest")
        .to_string();
    assert_eq!(
        c.send(
            "DELETE",
            &format!("/v2/acme/alpine/manifests/{d}"),
            &[],
            None
        )
        .status,
        202
    );
    assert_eq!(names(&search(&anon, "")), ["acme/debian:12"]);
}

#[test]
fn a_bad_description_leaves_the_machine_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path());
    let c = s.client();
    push_machine(&c, "x/y", "1", json!(["not", "a", "description"]), false);
    push_machine(&c, "x/z", "1", json!({"description": "no name"}), false);
    assert!(search(&c, "").is_empty());
    // The pushes themselves went through.
    assert_eq!(c.get("/v2/x/y/manifests/1").status, 200);
}

fn html(c: &Client, path: &str) -> (u16, String) {
    let a = c.get(path);
    if a.status == 200 {
        assert_eq!(a.header("content-type"), Some("text/html; charset=utf-8"));
    }
    (a.status, String::from_utf8(a.body).expect("utf-8"))
}

#[test]
fn web_pages_show_machines_escaped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path());
    let c = s.client();
    push_machine(
        &c,
        "acme/evil",
        "0",
        description("evil", "older", "Evil OS"),
        false,
    );
    let d = push_machine(
        &c,
        "acme/evil",
        "1",
        description("evil", "<script>alert('x')</script> & more", "Evil \"OS\""),
        true,
    );
    push_machine(
        &c,
        "acme/plain",
        "2",
        description("plain", "A plain box", "Debian"),
        false,
    );
    let anon = Client::new(&s.base);

    let (status, home) = html(&anon, "/");
    assert_eq!(status, 200);
    assert!(home.contains("<form action=\"/search\""), "{home}");
    assert!(home.contains("href=\"/m/acme/plain\""), "{home}");
    assert!(home.contains("href=\"/m/acme/evil\""), "{home}");
    assert!(!home.contains("<script>"), "{home}");
    assert!(home.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; more"));
    // Newest first.
    let plain = home.find("/m/acme/plain").expect("plain");
    let evil = home.find("/m/acme/evil").expect("evil");
    assert!(plain < evil);

    let (status, found) = html(&anon, "/search?q=plain");
    assert_eq!(status, 200);
    assert!(found.contains("acme/plain:2"), "{found}");
    assert!(!found.contains("acme/evil"), "{found}");
    // The term is echoed escaped.
    let (_, echoed) = html(&anon, "/search?q=%3Cb%3Ex%22");
    assert!(echoed.contains("&lt;b&gt;x&quot;"), "{echoed}");
    assert!(!echoed.contains("<b>x"), "{echoed}");

    let (status, page) = html(&anon, "/m/acme/evil");
    assert_eq!(status, 200);
    assert!(!page.contains("<script>"), "{page}");
    assert!(page.contains("&lt;script&gt;"), "{page}");
    assert!(page.contains("Evil &quot;OS&quot;"), "{page}");
    for want in [
        "x86_64",
        "uefi",
        "<td>2</td>",
        "1.0 GiB",
        "disk0 (8.0 GiB)",
        &format!("vmhub pull {}/acme/evil:1", host(&s.base)),
        d.as_str(),
        "signed by ed25519:S0VZ",
        "unsigned",
    ] {
        assert!(page.contains(want), "{want} missing from {page}");
    }
    let (status, _) = html(&anon, "/m/acme/none");
    assert_eq!(status, 404);
    let (status, _) = html(&anon, "/m/NOT%20A%20NAME");
    assert_eq!(status, 404);
}

fn host(base: &str) -> &str {
    base.strip_prefix("http://").expect("http")
}

#[test]
fn a_private_hub_publishes_no_catalogue() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = hub::Config::new(dir.path());
    config.private = true;
    let s = Server::start_with(config);
    push_machine(
        &s.client(),
        "a/b",
        "1",
        description("b", "secret", "x"),
        false,
    );
    let anon = Client::new(&s.base);
    for path in ["/", "/search?q=b", "/m/a/b", "/api/search?q=b"] {
        assert_eq!(anon.get(path).status, 404, "{path}");
    }
}
