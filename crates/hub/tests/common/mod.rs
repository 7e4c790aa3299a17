//! A hub started in-process on a free port of 127.0.0.1, and a small HTTP
//! client for the tests.

#![allow(dead_code)]

use hub::{Config, Hub};
use std::path::Path;
use std::thread::JoinHandle;

/// A running hub; stopped when dropped.
pub struct Server {
    pub base: String,
    /// A token with `push:*`, minted at start for user `tester`.
    pub token: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    pub fn start(data: &Path) -> Server {
        Server::start_with(Config::new(data))
    }

    pub fn start_with(config: Config) -> Server {
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let hub = Hub::open(&config).await.expect("open the hub");
                let token = hub
                    .create_token("tester", &["push:*".parse().expect("scope")])
                    .await
                    .expect("a token");
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind");
                addr_tx
                    .send((listener.local_addr().expect("address"), token))
                    .expect("send the address");
                hub.serve(listener, async move {
                    let _ = stopped.await;
                })
                .await
                .expect("serve");
            });
        });
        let (addr, token) = addr_rx.recv().expect("the hub started");
        Server {
            base: format!("http://{addr}"),
            token,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Server {
    /// A client that sends the start token as Basic credentials.
    pub fn client(&self) -> Client {
        Client::basic(&self.base, "tester", &self.token)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// An answer.
pub struct Answer {
    pub status: u16,
    pub headers: ureq::http::HeaderMap,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn header(&self, k: &str) -> Option<&str> {
        self.headers.get(k).and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }

    /// The first error code of an error body.
    pub fn code(&self) -> String {
        self.json()["errors"][0]["code"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }
}

pub struct Client {
    pub base: String,
    agent: ureq::Agent,
    /// The `Authorization` header sent with every request, if any.
    pub auth: Option<String>,
}

impl Client {
    pub fn new(base: &str) -> Client {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .build()
            .into();
        Client {
            base: base.to_string(),
            agent,
            auth: None,
        }
    }

    /// A client sending Basic credentials.
    pub fn basic(base: &str, user: &str, secret: &str) -> Client {
        use base64::Engine as _;
        let raw = format!("{user}:{secret}");
        let mut c = Client::new(base);
        c.auth = Some(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        ));
        c
    }

    /// A client sending a bearer token.
    pub fn bearer(base: &str, token: &str) -> Client {
        let mut c = Client::new(base);
        c.auth = Some(format!("Bearer {token}"));
        c
    }

    /// Sends a request to `path` (or a full URL).
    pub fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Answer {
        let url = if path.starts_with("http") {
            path.to_string()
        } else {
            format!("{}{path}", self.base)
        };
        let mut b = ureq::http::Request::builder().method(method).uri(&url);
        let explicit = headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("authorization"));
        if let (Some(a), false) = (&self.auth, explicit) {
            b = b.header("Authorization", a.as_str());
        }
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let resp = match body {
            Some(data) => self.agent.run(b.body(data).expect("request")),
            None => self.agent.run(b.body(()).expect("request")),
        };
        let mut resp = resp.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = if method == "HEAD" {
            Vec::new()
        } else {
            resp.body_mut()
                .with_config()
                .limit(1 << 30)
                .read_to_vec()
                .expect("body")
        };
        Answer {
            status,
            headers,
            body,
        }
    }

    pub fn get(&self, path: &str) -> Answer {
        self.send("GET", path, &[], None)
    }

    /// Pushes a blob in one POST; returns its digest.
    pub fn push_blob(&self, repo: &str, data: &[u8]) -> String {
        let d = digest(data);
        let a = self.send(
            "POST",
            &format!("/v2/{repo}/blobs/uploads/?digest={d}"),
            &[("Content-Type", "application/octet-stream")],
            Some(data),
        );
        assert_eq!(a.status, 201, "{}", String::from_utf8_lossy(&a.body));
        d
    }

    /// Pushes a manifest under `reference`.
    pub fn push_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        data: &[u8],
    ) -> Answer {
        self.send(
            "PUT",
            &format!("/v2/{repo}/manifests/{reference}"),
            &[("Content-Type", media_type)],
            Some(data),
        )
    }
}

pub fn digest(data: &[u8]) -> String {
    hub::digest::Digest::of(data).to_string()
}

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// An image manifest over a config and layers already pushed.
pub fn image_manifest(config: &[u8], layers: &[&[u8]], extra: serde_json::Value) -> Vec<u8> {
    let layers: Vec<_> = layers
        .iter()
        .map(|l| {
            serde_json::json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": digest(l),
                "size": l.len(),
            })
        })
        .collect();
    let mut m = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": digest(config),
            "size": config.len(),
        },
        "layers": layers,
    });
    if let (Some(o), Some(e)) = (m.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            o.insert(k.clone(), v.clone());
        }
    }
    serde_json::to_vec(&m).expect("json")
}

/// Mints a token for `user` with `scopes` in the hub over `data` (which may
/// be serving meanwhile: the database is shared).
pub fn mint(data: &Path, user: &str, scopes: &[&str]) -> String {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let hub = Hub::open(&Config::new(data)).await.expect("open the hub");
        let scopes: Vec<hub::auth::Scope> =
            scopes.iter().map(|s| s.parse().expect("a scope")).collect();
        hub.create_token(user, &scopes).await.expect("a token")
    })
}
