//! A fake Kubernetes API server for the agent's production kube-rs client:
//! the list protocol over plain HTTP/1.1 on loopback, with the
//! `spec.nodeName` field selector applied and a plain-text 404 for
//! collections it does not serve (as an apiserver answers for a CRD that is
//! not installed).

use serde_json::{Value, json};
use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

/// Objects by collection path (`/api/v1/pods`, `/apis/kuma.io/v1alpha1/meshtcproutes`, ...).
type Collections = Arc<Mutex<BTreeMap<String, Vec<Value>>>>;

/// A running fake API server; it stops serving when dropped (its threads end
/// with their connections).
pub struct FakeApi {
    addr: SocketAddr,
    collections: Collections,
}

impl FakeApi {
    /// Starts a server on 127.0.0.1 serving `collections` (each empty for now).
    pub fn start(collections: &[&str]) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let served: Collections = Arc::new(Mutex::new(collections.iter().map(|c| ((*c).to_owned(), Vec::new())).collect()));
        let shared = served.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let collections = shared.clone();
                std::thread::spawn(move || {
                    let _ = serve(stream, &collections);
                });
            }
        });
        Ok(Self { addr, collections: served })
    }

    /// Adds `object` to the collection at `path`.
    pub fn add(&self, path: &str, object: Value) {
        self.collections.lock().unwrap().entry(path.to_owned()).or_default().push(object);
    }

    /// Writes a kubeconfig for this server into `dir`; returns its path.
    pub fn kubeconfig(&self, dir: &Path) -> std::io::Result<PathBuf> {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\ncurrent-context: fake\n",
            self.addr
        );
        std::fs::write(&path, text)?;
        Ok(path)
    }
}

/// Serves one connection's requests (HTTP/1.1 keep-alive).
fn serve(stream: TcpStream, collections: &Collections) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut out = stream;
    loop {
        let mut request = String::new();
        if reader.read_line(&mut request)? == 0 {
            return Ok(());
        }
        // Headers: a GET has no body.
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 || line == "\r\n" {
                break;
            }
        }
        let target = request.split_whitespace().nth(1).unwrap_or("/");
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let params: BTreeMap<&str, String> = query.split('&').filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k, decode(v))).collect();
        let listed = collections.lock().unwrap().get(path).cloned();
        let (status, content_type, body) = match listed {
            Some(items) if !params.contains_key("watch") => {
                let items: Vec<Value> = items.into_iter().filter(|o| matches_fields(o, params.get("fieldSelector").map(String::as_str))).collect();
                let list = json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1", "continue": ""}, "items": items});
                ("200 OK", "application/json", list.to_string())
            }
            _ => ("404 Not Found", "text/plain", "404 page not found".to_owned()),
        };
        write!(out, "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}", body.len())?;
        out.flush()?;
    }
}

/// Whether `object` satisfies a field selector of `path=value` terms.
fn matches_fields(object: &Value, selector: Option<&str>) -> bool {
    selector.into_iter().flat_map(|s| s.split(',')).filter(|t| !t.is_empty()).all(|term| {
        let Some((field, want)) = term.split_once('=') else { return false };
        let pointer = format!("/{}", field.replace('.', "/"));
        object.pointer(&pointer).and_then(Value::as_str) == Some(want)
    })
}

/// Percent-decodes a query value.
fn decode(v: &str) -> String {
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], bytes.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok())) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
