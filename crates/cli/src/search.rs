//! `vmhub search`: the machines a hub's catalogue holds.

use crate::img::Output;
use crate::library::finish;
use crate::size::human;
use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::Value;
use std::process::ExitCode;

/// The largest search answer read.
const MAX_ANSWER: u64 = 16 << 20;

/// `vmhub search` arguments.
#[derive(Args)]
pub struct SearchArgs {
    /// Words to look for in the machines' names, descriptions and OS (empty
    /// lists the newest machines).
    #[arg(default_value = "")]
    term: String,
    /// The hub's address.
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:8080")]
    hub: String,
    /// How to print the results.
    #[arg(long, value_enum, default_value = "human")]
    output: Output,
}

/// `vmhub search`.
pub fn run(a: SearchArgs) -> ExitCode {
    finish(search(a))
}

/// Percent-encodes a query parameter value.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn search(a: SearchArgs) -> Result<()> {
    let base = if a.hub.contains("://") {
        a.hub.trim_end_matches('/').to_string()
    } else {
        format!("http://{}", a.hub.trim_end_matches('/'))
    };
    let url = format!("{base}/api/search?q={}", encode(&a.term));
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut resp = agent
        .get(&url)
        .call()
        .with_context(|| format!("cannot reach the hub at {base}"))?;
    let status = resp.status();
    let body = resp
        .body_mut()
        .with_config()
        .limit(MAX_ANSWER)
        .read_to_vec()
        .with_context(|| format!("{url}: cannot read the answer"))?;
    if !status.is_success() {
        let message = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| {
                v.pointer("/errors/0/message")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .unwrap_or_default();
        bail!("{url}: the hub answered HTTP {status} {message}");
    }
    let v: Value =
        serde_json::from_slice(&body).with_context(|| format!("{url}: the answer is not JSON"))?;
    let Some(list) = v.as_array() else {
        bail!("{url}: the answer is not a list of machines");
    };
    if a.output == Output::Json {
        out!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let field = |m: &Value, k: &str| m.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let mut rows = vec![[
        "NAME".to_string(),
        "VERSION".to_string(),
        "OS".to_string(),
        "SIZE".to_string(),
        "UPDATED".to_string(),
    ]];
    for m in list {
        let size = m
            .get("compressed_size")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        // "2026-11-24T17:02:03Z" as "2026-11-24 17:02".
        let updated: String = field(m, "pushed")
            .replace('T', " ")
            .chars()
            .take(16)
            .collect();
        rows.push([
            format!("{}:{}", field(m, "repository"), field(m, "tag")),
            field(m, "version"),
            field(m, "os"),
            human(size),
            updated,
        ]);
    }
    if list.is_empty() {
        out!("no machine matches {:?}", a.term);
        return Ok(());
    }
    let mut widths = [0usize; 5];
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    for r in &rows {
        let cells: Vec<String> = r
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out!("{}", cells.join("  ").trim_end());
    }
    Ok(())
}
