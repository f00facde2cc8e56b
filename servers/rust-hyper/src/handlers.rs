//! GET /hash and GET /health, and the answers to everything else: the Python servers' contract
//! (README.md, "The API"), answered from hyper's request head alone.

use std::time::{SystemTime, UNIX_EPOCH};

use hyper::header::{
    HeaderValue, ALLOW, CACHE_CONTROL, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, TRANSFER_ENCODING,
};
use hyper::{Body, Method, Request, Response, StatusCode};
use serde::ser::{Serialize, SerializeStruct, Serializer};

use crate::hashing::hash_chain;
use crate::settings::SERVER_NAME;

/// Nanoseconds since the Unix epoch; a parameter so that tests can fix the instant.
pub type Clock = fn() -> u128;

pub fn unix_nanos() -> u128 {
    // A clock set before 1970 hashes "input-0" rather than taking the server down.
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos())
}

const JSON: &str = "application/json";
const TEXT: &str = "text/plain; charset=utf-8";

/// The answer to `request`, whose /hash chain has `rounds` rounds and reads the time from `now`.
pub fn answer(request: &Request<Body>, rounds: u32, now: Clock) -> Response<Body> {
    let allowed = matches!(*request.method(), Method::GET | Method::HEAD);
    // HEAD gets GET's answer, body and all: hyper sends its head, Content-Length included, and
    // drops the body, as granian does for async-style.
    let mut response = match (request.uri().path(), allowed) {
        ("/hash", true) => hash(rounds, now()),
        ("/health", true) => fixed(StatusCode::OK, TEXT, "OK"),
        ("/hash" | "/health", false) => {
            let mut response = fixed(StatusCode::METHOD_NOT_ALLOWED, TEXT, "Method Not Allowed");
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            response
        }
        _ => fixed(StatusCode::NOT_FOUND, TEXT, "Not Found"),
    };
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // hyper 0.14.19 frames a request carrying both Content-Length and Transfer-Encoding by the
    // latter and keeps the connection open, so a request hidden in what a proxy read as the body
    // would be answered next. RFC 9112 section 6.1 wants the connection closed after such a
    // request; hyper drops a Content-Length that follows the Transfer-Encoding before we see the
    // head, so any request framed by Transfer-Encoding is closed (this API takes no bodies).
    if request.headers().contains_key(TRANSFER_ENCODING) {
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

struct HashAnswer<'a> {
    hash: &'a str,
    timestamp: u64,
}

// Written out rather than derived: #[derive(Serialize)] needs serde's derive macro, five more
// Debian packages (serde_derive, syn, quote, proc-macro2, unicode-ident) for three fields. The
// build takes as long either way (50 s on rustc 1.63 here, both ways).
impl Serialize for HashAnswer<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut fields = serializer.serialize_struct("HashAnswer", 3)?;
        fields.serialize_field("hash", self.hash)?;
        fields.serialize_field("timestamp", &self.timestamp)?;
        fields.serialize_field("source", SERVER_NAME)?;
        fields.end()
    }
}

fn hash(rounds: u32, now_ns: u128) -> Response<Body> {
    let hash = hash_chain(format!("input-{}", now_ns).as_bytes(), rounds);
    let timestamp = (now_ns / 1_000_000) as u64;
    let body = serde_json::to_vec(&HashAnswer {
        hash: &hash,
        timestamp,
    })
    .expect("a struct of a str and an integer serializes");
    with_body(StatusCode::OK, JSON, body)
}

fn fixed(status: StatusCode, content_type: &'static str, text: &'static str) -> Response<Body> {
    with_body(status, content_type, text.as_bytes().to_vec())
}

fn with_body(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Response<Body> {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
    *response.body_mut() = Body::from(body);
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::body::to_bytes;
    use hyper::HeaderMap;
    use sha2::{Digest, Sha256};

    // 2023-11-14T22:13:20.123456789Z: a fixed instant whose milliseconds are not a round number.
    const N: u128 = 1_700_000_000_123_456_789;

    fn fixed_clock() -> u128 {
        N
    }

    fn request(method: &str, path: &str) -> Request<Body> {
        Request::builder()
            .method(method)
            .uri(path)
            .body(Body::empty())
            .unwrap()
    }

    fn call(method: &str, path: &str, rounds: u32) -> (StatusCode, HeaderMap, Vec<u8>) {
        let response = answer(&request(method, path), rounds, fixed_clock);
        let (parts, body) = response.into_parts();
        let body = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(to_bytes(body))
            .unwrap();
        (parts.status, parts.headers, body.to_vec())
    }

    /// The chain computed here with sha2 directly, not through hashing.rs.
    fn independent_chain(data: &[u8], rounds: u32) -> String {
        let mut digest = Sha256::new().chain_update(data).finalize().to_vec();
        for _ in 1..rounds {
            let mut hasher = Sha256::new();
            hasher.update(&digest);
            digest = hasher.finalize().to_vec();
        }
        digest.iter().map(|byte| format!("{:02x}", byte)).collect()
    }

    #[test]
    fn hash_answers_the_chain_over_the_clocks_instant() {
        for rounds in [1, 100] {
            let (status, headers, body) = call("GET", "/hash", rounds);
            assert_eq!(status, StatusCode::OK);
            assert_eq!(headers[CONTENT_TYPE], "application/json");
            assert_eq!(headers[CACHE_CONTROL], "no-store");
            assert_eq!(headers[CONTENT_LENGTH], body.len().to_string().as_str());
            let payload: serde_json::Value = serde_json::from_slice(&body).unwrap();
            let expected = independent_chain(format!("input-{}", N).as_bytes(), rounds);
            assert_eq!(payload["hash"], expected.as_str(), "{} rounds", rounds);
            assert_eq!(
                payload["timestamp"],
                serde_json::json!(1_700_000_000_123u64)
            );
            assert!(payload["timestamp"].is_u64());
            assert_eq!(payload["source"], "rust-hyper");
            assert_eq!(payload.as_object().unwrap().len(), 3, "{}", payload);
        }
    }

    #[test]
    fn hash_keys_are_in_the_python_servers_order() {
        let (_, _, body) = call("GET", "/hash", 1);
        let text = String::from_utf8(body).unwrap();
        assert!(text.starts_with("{\"hash\":\""), "{}", text);
        assert!(
            text.ends_with(",\"timestamp\":1700000000123,\"source\":\"rust-hyper\"}"),
            "{}",
            text
        );
    }

    #[test]
    fn health_answers_ok() {
        let (status, headers, body) = call("GET", "/health", 100);
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[CONTENT_TYPE], "text/plain; charset=utf-8");
        assert_eq!(headers[CACHE_CONTROL], "no-store");
        assert_eq!(body, b"OK");
    }

    #[test]
    fn head_has_the_headers_of_get() {
        for path in ["/hash", "/health"] {
            let (get_status, get_headers, _) = call("GET", path, 100);
            let (head_status, head_headers, _) = call("HEAD", path, 100);
            assert_eq!(head_status, get_status);
            assert_eq!(head_headers, get_headers, "{}", path);
        }
    }

    #[test]
    fn other_methods_get_405_with_allow() {
        for path in ["/hash", "/health"] {
            for method in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "BREW"] {
                let (status, headers, _) = call(method, path, 100);
                assert_eq!(
                    status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{} {}",
                    method,
                    path
                );
                assert_eq!(headers[ALLOW], "GET, HEAD");
                assert_eq!(headers[CACHE_CONTROL], "no-store");
            }
        }
    }

    #[test]
    fn other_paths_get_404() {
        for (method, path) in [
            ("GET", "/"),
            ("GET", "/missing"),
            ("GET", "/hash/"),
            ("POST", "/nope"),
            ("HEAD", "/healthz"),
        ] {
            let (status, headers, _) = call(method, path, 100);
            assert_eq!(status, StatusCode::NOT_FOUND, "{} {}", method, path);
            assert_eq!(headers[CACHE_CONTROL], "no-store");
        }
    }

    #[test]
    fn the_query_string_does_not_change_the_route() {
        assert_eq!(call("GET", "/health?probe=1", 100).0, StatusCode::OK);
    }

    #[test]
    fn a_request_framed_by_transfer_encoding_closes_the_connection() {
        let mut framed = request("POST", "/hash");
        framed
            .headers_mut()
            .insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        framed
            .headers_mut()
            .insert(CONTENT_LENGTH, HeaderValue::from_static("5"));
        let response = answer(&framed, 1, fixed_clock);
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(response.headers()[CONNECTION], "close");
        assert!(answer(&request("GET", "/health"), 1, fixed_clock)
            .headers()
            .get(CONNECTION)
            .is_none());
    }
}
