//! The hub's web pages, rendered on the server: the home page with a search
//! box and the newest machines, search results, and a page per machine.
//! Every value from the catalogue goes through [`esc`].

use crate::api::Query;
use crate::catalogue;
use crate::db::MachineRow;
use crate::error::ApiResult;
use crate::{auth, blobs::db_err, names, Hub};
use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use std::fmt::Write as _;

/// How many machines the home page lists.
const NEWEST: u32 = 20;

/// How many versions a machine page lists.
const VERSIONS: u32 = 100;

/// `s` with the characters that mean something in HTML escaped, for text
/// and for quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `s` percent-encoded for a URL query value or path (slashes kept).
fn url_part(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub(crate) fn human(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    match UNITS.get(unit) {
        Some(u) if unit == 0 => format!("{bytes} {u}"),
        Some(u) => format!("{v:.1} {u}"),
        None => format!("{bytes} B"),
    }
}

pub(crate) fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\">\
         <title>{} · vmhub</title>\
         <style>body{{font-family:sans-serif;max-width:60em;margin:auto;padding:1em}}\
         table{{border-collapse:collapse}}td,th{{padding:.2em .8em;text-align:left}}\
         code{{background:#eee;padding:.1em .3em}}</style></head><body>\
         <header><a href=\"/\">vmhub</a> {}</header>\n{body}\n</body></html>\n",
        esc(title),
        search_form("")
    );
    let mut r = Response::new(Body::from(html));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r.headers_mut().insert(
        "content-security-policy",
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'"),
    );
    r
}

fn search_form(q: &str) -> String {
    format!(
        "<form action=\"/search\" method=\"get\"><input type=\"search\" name=\"q\" value=\"{}\" \
         placeholder=\"Search machines\"> <button>Search</button></form>",
        esc(q)
    )
}

/// A table of machines, linking to their pages.
fn machine_list(rows: &[MachineRow]) -> String {
    if rows.is_empty() {
        return "<p>No machines.</p>".into();
    }
    let mut s = String::from(
        "<table><tr><th>Name</th><th>Version</th><th>OS</th><th>Size</th><th>Updated</th></tr>",
    );
    for m in rows {
        let _ = write!(
            s,
            "<tr><td><a href=\"/m/{}\">{}:{}</a><br><small>{}</small></td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td></tr>",
            esc(&url_part(&m.repository)),
            esc(&m.repository),
            esc(&m.tag),
            esc(&m.description),
            esc(&m.version),
            esc(&m.os),
            esc(&human(m.compressed_size)),
            esc(&m.pushed),
        );
    }
    s.push_str("</table>");
    s
}

/// `GET /`.
pub(crate) async fn home(hub: &Hub) -> ApiResult<Response> {
    let rows = catalogue::find(hub, "", NEWEST).await?;
    let body = format!(
        "<h1>Machines</h1>{}<h2>Newest</h2>{}",
        search_form(""),
        machine_list(&rows)
    );
    Ok(page(StatusCode::OK, "Machines", &body))
}

/// `GET /search?q=`.
pub(crate) async fn search(hub: &Hub, q: &Query) -> ApiResult<Response> {
    let term = catalogue::term(q)?;
    let rows = catalogue::find(hub, &term, catalogue::MAX_PAGE).await?;
    let body = format!(
        "<h1>Search</h1>{}<p>{} machine(s) match “{}”.</p>{}",
        search_form(&term),
        rows.len(),
        esc(&term),
        machine_list(&rows)
    );
    Ok(page(StatusCode::OK, &format!("Search: {term}"), &body))
}

/// `GET /m/<repository>`.
pub(crate) async fn machine(hub: &Hub, repo: &str, headers: &HeaderMap) -> ApiResult<Response> {
    if !names::valid_name(repo) {
        return Ok(page(
            StatusCode::NOT_FOUND,
            "No such machine",
            "<h1>No such machine</h1><p>That is not a repository name.</p>",
        ));
    }
    let rows = hub
        .meta
        .machines(repo, VERSIONS)
        .await
        .map_err(db_err("reading the catalogue"))?;
    let Some(latest) = rows.first() else {
        let body = format!("<h1>{}</h1><p>No machine here.</p>", esc(repo));
        return Ok(page(StatusCode::NOT_FOUND, repo, &body));
    };
    let host = auth::host(headers);
    let mut body = format!(
        "<h1>{}</h1><p class=\"description\">{}</p><table>\
         <tr><th>Name</th><td>{}</td></tr>\
         <tr><th>OS</th><td>{}</td></tr>\
         <tr><th>Architecture</th><td>{}</td></tr>\
         <tr><th>Firmware</th><td>{}</td></tr>\
         <tr><th>CPUs</th><td>{}</td></tr>\
         <tr><th>Memory</th><td>{}</td></tr>\
         <tr><th>Disks</th><td>{}</td></tr>\
         </table><h2>Pull</h2><p><code>vmhub pull {}/{}:{}</code></p>\
         <h2>Versions</h2><table><tr><th>Tag</th><th>Version</th><th>Size</th><th>Digest</th>\
         <th>Signature</th><th>Pushed</th></tr>",
        esc(repo),
        esc(&latest.description),
        esc(&latest.name),
        esc(&latest.os),
        esc(&latest.architecture),
        esc(&latest.firmware),
        latest.cpus,
        esc(&human(latest.memory)),
        esc(&latest
            .disks
            .iter()
            .map(|d| format!("{} ({})", d.name, human(d.size)))
            .collect::<Vec<_>>()
            .join(", ")),
        esc(&host),
        esc(repo),
        esc(&latest.tag),
    );
    for m in &rows {
        let signature = match &m.signed_by {
            Some(k) => format!("signed by {}", esc(k)),
            None => "unsigned".into(),
        };
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
            esc(&m.tag),
            esc(&m.version),
            esc(&human(m.compressed_size)),
            esc(&m.digest),
            signature,
            esc(&m.pushed),
        );
    }
    body.push_str("</table>");
    body.push_str(&crate::browse::machine_link(repo, &latest.tag));
    body.push_str(&download_links(repo, latest));
    Ok(page(StatusCode::OK, repo, &body))
}

/// The download links of `m`'s disks: one list per disk, a link per format
/// the hub converts to while streaming.
fn download_links(repo: &str, m: &MachineRow) -> String {
    let mut s = format!("<h2>Download</h2><p>Version {}, converted as it downloads; every format but VMDK can be resumed.</p><ul>", esc(&m.tag));
    for (n, d) in m.disks.iter().enumerate() {
        let _ = write!(s, "<li>{} ({}):", esc(&d.name), esc(&human(d.size)));
        for f in crate::download::Format::all() {
            let href = crate::download::link(&url_part(repo), &url_part(&m.tag), n, f);
            let _ = write!(
                s,
                " <a href=\"{}\" download>{}</a>",
                esc(&href),
                f.extension()
            );
        }
        s.push_str("</li>");
    }
    s.push_str("</ul>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping() {
        assert_eq!(
            esc("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
        assert_eq!(url_part("a/b c?"), "a/b%20c%3F");
        assert_eq!(human(512), "512 B");
        assert_eq!(human(3 << 20), "3.0 MiB");
    }
}
