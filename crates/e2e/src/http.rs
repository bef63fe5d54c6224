//! A tiny HTTP/1.1 client for plain-HTTP endpoints on 127.0.0.1: moto's control
//! endpoints (`/moto-api/reset`, `/batch-autoscaler/faults`) and the autoscaler's
//! `/metrics`, `/healthz`, `/readyz`. Not for AWS APIs (those go through the SDK).

use anyhow::{bail, Context};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Status code and body.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

/// One request with `Connection: close`, bounded by `timeout`.
pub async fn request(
    base: &str,
    method: &str,
    path: &str,
    body: &str,
    timeout: Duration,
) -> anyhow::Result<Response> {
    let authority = base
        .trim_end_matches('/')
        .strip_prefix("http://")
        .with_context(|| format!("{base} is not http://"))?
        .to_owned();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(&authority).await?;
        stream.write_all(request.as_bytes()).await?;
        let mut bytes = Vec::new();
        stream.read_to_end(&mut bytes).await?;
        anyhow::Ok(bytes)
    };
    let bytes = tokio::time::timeout(timeout, exchange)
        .await
        .with_context(|| format!("{method} {base}{path}: timed out"))??;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("{method} {path}: bad response {head:?}"))?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase().starts_with("transfer-encoding:")
            && l.to_ascii_lowercase().contains("chunked")
    });
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_owned()
    };
    Ok(Response { status, body })
}

pub async fn get(base: &str, path: &str) -> anyhow::Result<Response> {
    request(base, "GET", path, "", Duration::from_secs(10)).await
}

/// POST that must answer 200.
pub async fn post_ok(base: &str, path: &str, body: &str) -> anyhow::Result<String> {
    let response = request(base, "POST", path, body, Duration::from_secs(30)).await?;
    if response.status != 200 {
        bail!("POST {path}: HTTP {}: {}", response.status, response.body);
    }
    Ok(response.body)
}

fn dechunk(mut body: &str) -> anyhow::Result<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").context("chunk size")?;
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
            .context("chunk size")?;
        if size == 0 {
            return Ok(out);
        }
        out.push_str(rest.get(..size).context("short chunk")?);
        body = rest.get(size + 2..).unwrap_or("");
    }
}
