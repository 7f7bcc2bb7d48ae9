//! A fake Kubernetes API server for the agent's production kube-rs client:
//! the list and watch protocols over plain HTTP/1.1 on loopback, with the
//! `spec.nodeName` field selector applied, paged lists, resource versions,
//! bookmarks and `410 Expired` watch errors, and a plain-text 404 for
//! collections it does not serve (as an apiserver answers for a CRD that is
//! not installed). Tests drive failures through [`FakeApi::compact`],
//! [`FakeApi::drop_watches`] and [`FakeApi::set_down`].

use serde_json::{Value, json};
use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader, ErrorKind, Write as _},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    sync::{
        Arc, Condvar, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

/// The longest a watch stays open, whatever `timeoutSeconds` asks.
const MAX_WATCH: Duration = Duration::from_secs(30);
/// Idle time after which a watch that allows them gets a bookmark.
const BOOKMARK_EVERY: Duration = Duration::from_secs(1);

/// One recorded change of a collection.
struct Change {
    kind: &'static str,
    object: Value,
    rv: u64,
}

/// A collection's live objects by (namespace, name) and its full history.
#[derive(Default)]
struct Collection {
    objects: BTreeMap<(String, String), Value>,
    history: Vec<Change>,
}

impl Collection {
    /// The live objects as they were at resource version `rv`, in key order.
    fn at(&self, rv: u64) -> Vec<Value> {
        let mut live = BTreeMap::new();
        for change in self.history.iter().take_while(|c| c.rv <= rv) {
            let key = key_of(&change.object);
            if change.kind == "DELETED" {
                live.remove(&key);
            } else {
                live.insert(key, &change.object);
            }
        }
        live.into_values().cloned().collect()
    }
}

/// What the server's threads share under one lock.
struct State {
    /// The last resource version handed out (global, as etcd's revision).
    rv: u64,
    /// Watches from a resource version at or below this get `410 Expired`.
    compacted: u64,
    /// Bumped to end every open watch.
    epoch: u64,
    /// Set when the [`FakeApi`] is dropped.
    stopped: bool,
    collections: BTreeMap<String, Collection>,
}

/// An open client connection: a handle to shut it down, and whether it is watching.
struct Connection {
    stream: TcpStream,
    watching: bool,
}

/// Everything the server's threads share.
struct Shared {
    addr: SocketAddr,
    state: Mutex<State>,
    /// Notified on every change of `state`.
    changed: Condvar,
    /// `None` while the server is down (or dropped).
    listener: Mutex<Option<TcpListener>>,
    connections: Mutex<BTreeMap<u64, Connection>>,
    next_connection: AtomicU64,
}

impl Shared {
    /// Shuts down every open connection, or only the watching ones, and ends every watch.
    fn close_connections(&self, only_watches: bool) {
        for c in self.connections.lock().unwrap().values().filter(|c| c.watching || !only_watches) {
            let _ = c.stream.shutdown(Shutdown::Both);
        }
        self.state.lock().unwrap().epoch += 1;
        self.changed.notify_all();
    }

    /// Records whether connection `id` is streaming a watch.
    fn set_watching(&self, id: u64, watching: bool) {
        if let Some(c) = self.connections.lock().unwrap().get_mut(&id) {
            c.watching = watching;
        }
    }
}

/// A running fake API server; dropping it closes the listener and every
/// connection, and its threads end.
pub struct FakeApi {
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl FakeApi {
    /// Starts a server on 127.0.0.1 serving `collections` (each empty for now).
    pub fn start(collections: &[&str]) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let state = State {
            rv: 1,
            compacted: 0,
            epoch: 0,
            stopped: false,
            collections: collections.iter().map(|c| ((*c).to_owned(), Collection::default())).collect(),
        };
        let shared = Arc::new(Shared {
            addr: listener.local_addr()?,
            state: Mutex::new(state),
            changed: Condvar::new(),
            listener: Mutex::new(Some(listener)),
            connections: Mutex::new(BTreeMap::new()),
            next_connection: AtomicU64::new(0),
        });
        let accepting = shared.clone();
        let acceptor = std::thread::spawn(move || accept(&accepting));
        Ok(Self { shared, acceptor: Some(acceptor) })
    }

    /// The address it listens on (the same across [`FakeApi::set_down`]).
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// Creates or replaces `object` in the collection at `path` (keyed by
    /// `metadata.namespace` and `metadata.name`), stamping a new
    /// `metadata.resourceVersion`; watchers get ADDED or MODIFIED.
    pub fn add(&self, path: &str, mut object: Value) {
        let mut state = self.shared.state.lock().unwrap();
        state.rv += 1;
        let rv = state.rv;
        let key = key_of(&object);
        let collection = state.collections.entry(path.to_owned()).or_default();
        let previous = collection.objects.get(&key);
        let kind = if previous.is_some() { "MODIFIED" } else { "ADDED" };
        if object.pointer("/metadata/uid").is_none() {
            let uid = previous.and_then(|p| p.pointer("/metadata/uid")).cloned().unwrap_or_else(|| json!(format!("fake-uid-{rv}")));
            object["metadata"]["uid"] = uid;
        }
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        collection.objects.insert(key, object.clone());
        collection.history.push(Change { kind, object, rv });
        self.shared.changed.notify_all();
    }

    /// Deletes the object `namespace`/`name` (`namespace` empty for a
    /// cluster-scoped one) from the collection at `path`; watchers get DELETED
    /// with its last state under a new resource version. False if there was none.
    pub fn delete(&self, path: &str, namespace: &str, name: &str) -> bool {
        let mut state = self.shared.state.lock().unwrap();
        let next = state.rv + 1;
        let Some(collection) = state.collections.get_mut(path) else { return false };
        let Some(mut object) = collection.objects.remove(&(namespace.to_owned(), name.to_owned())) else { return false };
        object["metadata"]["resourceVersion"] = json!(next.to_string());
        collection.history.push(Change { kind: "DELETED", object, rv: next });
        state.rv = next;
        self.shared.changed.notify_all();
        true
    }

    /// Compacts the history: a watch from any resource version handed out so
    /// far, open or new, gets a `410 Expired` ERROR event and ends (so the
    /// client relists); lists and their continue tokens from now on carry newer versions.
    pub fn compact(&self) {
        let mut state = self.shared.state.lock().unwrap();
        state.compacted = state.rv;
        state.rv += 1;
        self.shared.changed.notify_all();
    }

    /// Abruptly closes every open watch connection, mid-stream (the client reconnects).
    pub fn drop_watches(&self) {
        self.shared.close_connections(true);
    }

    /// While down the server refuses connections (its listening socket is
    /// closed) and every open connection is closed; up again, it listens on the
    /// same address. Panics if that address cannot be bound again within 5 s.
    pub fn set_down(&self, down: bool) {
        let mut listener = self.shared.listener.lock().unwrap();
        if down {
            *listener = None;
            self.shared.close_connections(false);
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while listener.is_none() {
            match TcpListener::bind(self.shared.addr).and_then(|l| l.set_nonblocking(true).map(|()| l)) {
                Ok(l) => *listener = Some(l),
                Err(e) if Instant::now() > deadline => panic!("listening on {} again: {e}", self.shared.addr),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// Writes a kubeconfig for this server into `dir`; returns its path.
    pub fn kubeconfig(&self, dir: &Path) -> std::io::Result<PathBuf> {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\ncurrent-context: fake\n",
            self.shared.addr
        );
        std::fs::write(&path, text)?;
        Ok(path)
    }
}

impl Drop for FakeApi {
    /// Stops accepting, closes every connection and ends every watch.
    fn drop(&mut self) {
        self.shared.state.lock().unwrap().stopped = true;
        *self.shared.listener.lock().unwrap() = None;
        self.shared.close_connections(false);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

/// Accepts connections (polling the nonblocking listener, which may come and
/// go) until the server is dropped; one thread per connection.
fn accept(shared: &Arc<Shared>) {
    while !shared.state.lock().unwrap().stopped {
        let listener = shared.listener.lock().unwrap();
        // Registered under the listener lock, so `set_down` closes every accepted connection.
        let accepted = listener.as_ref().map(|l| l.accept().and_then(|(s, _)| s.set_nonblocking(false).and(s.set_nodelay(true)).and(s.try_clone()).map(|c| (s, c))));
        let Some(Ok((stream, handle))) = accepted else {
            drop(listener);
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        let id = shared.next_connection.fetch_add(1, Ordering::Relaxed);
        shared.connections.lock().unwrap().insert(id, Connection { stream: handle, watching: false });
        drop(listener);
        let shared = shared.clone();
        std::thread::spawn(move || {
            let _ = serve(stream, &shared, id);
            shared.connections.lock().unwrap().remove(&id);
        });
    }
}

/// Serves one connection's requests (HTTP/1.1 keep-alive).
fn serve(stream: TcpStream, shared: &Shared, id: u64) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut out = stream;
    loop {
        let mut request = String::new();
        if reader.read_line(&mut request)? == 0 {
            return Ok(());
        }
        // Headers: a GET has no body.
        let mut close = false;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 || line == "\r\n" {
                break;
            }
            close |= line.to_ascii_lowercase().replace(' ', "").starts_with("connection:close");
        }
        let target = request.split_whitespace().nth(1).unwrap_or("/");
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let params: BTreeMap<&str, String> = query.split('&').filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k, decode(v))).collect();
        let served = shared.state.lock().unwrap().collections.contains_key(path);
        let (status, content_type, body) = if !served {
            ("404 Not Found", "text/plain", "404 page not found".to_owned())
        } else if matches!(params.get("watch").map(String::as_str), Some("true" | "1")) {
            shared.set_watching(id, true);
            let watched = watch(&mut out, shared, path, &params);
            shared.set_watching(id, false);
            watched?;
            if close {
                return Ok(());
            }
            continue;
        } else {
            list(&shared.state.lock().unwrap(), path, &params)
        };
        respond(&mut out, status, content_type, &body)?;
        if close {
            return Ok(());
        }
    }
}

/// Answers a LIST of the (served) collection at `path`: one page of the
/// matching objects, consistent with the first page's resource version.
fn list(state: &State, path: &str, params: &BTreeMap<&str, String>) -> (&'static str, &'static str, String) {
    let (snapshot, offset) = match params.get("continue").filter(|t| !t.is_empty()) {
        None => (state.rv, 0),
        Some(token) => match token.split_once(':').and_then(|(rv, at)| Some((rv.parse::<u64>().ok()?, at.parse::<usize>().ok()?))) {
            Some((rv, _)) if rv <= state.compacted => {
                let message = "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.";
                return ("410 Gone", "application/json", status_json(410, "Expired", message).to_string());
            }
            Some(parsed) => parsed,
            None => return ("400 Bad Request", "application/json", status_json(400, "BadRequest", &format!("invalid continue token {token:?}")).to_string()),
        },
    };
    let selector = params.get("fieldSelector").map(String::as_str);
    let items: Vec<Value> = state.collections[path].at(snapshot).into_iter().filter(|o| matches_fields(o, selector)).collect();
    let limit = params.get("limit").and_then(|l| l.parse::<usize>().ok()).filter(|&l| l > 0).unwrap_or(usize::MAX);
    let page: Vec<Value> = items.iter().skip(offset).take(limit).cloned().collect();
    let end = offset + page.len();
    let next = if end < items.len() { format!("{snapshot}:{end}") } else { String::new() };
    let list = json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": snapshot.to_string(), "continue": next}, "items": page});
    ("200 OK", "application/json", list.to_string())
}

/// Streams a WATCH of the (served) collection at `path` as chunked JSON lines:
/// the recorded changes after `resourceVersion` (or the live objects as ADDED
/// for none or "0"), then new ones as they happen, with bookmarks when idle if
/// allowed, until `timeoutSeconds`. Errors when the client goes away or the
/// watch is cut (the connection is then closed).
fn watch(out: &mut TcpStream, shared: &Shared, path: &str, params: &BTreeMap<&str, String>) -> std::io::Result<()> {
    let since = match params.get("resourceVersion").map(String::as_str).unwrap_or("") {
        "" | "0" => None,
        rv => match rv.parse::<u64>() {
            Ok(rv) => Some(rv),
            Err(_) => {
                let body = status_json(400, "BadRequest", &format!("invalid resource version {rv:?}")).to_string();
                return respond(out, "400 Bad Request", "application/json", &body);
            }
        },
    };
    let timeout = params.get("timeoutSeconds").and_then(|t| t.parse().ok()).map_or(MAX_WATCH, Duration::from_secs).min(MAX_WATCH);
    let deadline = Instant::now() + timeout;
    let bookmarks = params.get("allowWatchBookmarks").is_some_and(|b| b == "true");
    let selector = params.get("fieldSelector").map(String::as_str);
    let (api_version, kind) = type_of(path, &shared.state.lock().unwrap().collections[path]);
    out.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")?;
    out.flush()?;
    let mut state = shared.state.lock().unwrap();
    let epoch = state.epoch;
    let (mut cursor, mut pending) = match since {
        Some(rv) => (rv, Vec::new()),
        None => {
            let live = state.collections[path].at(state.rv).into_iter().filter(|o| matches_fields(o, selector));
            (state.rv, live.map(|object| json!({"type": "ADDED", "object": object})).collect())
        }
    };
    let mut last_sent = Instant::now();
    loop {
        if state.stopped || state.epoch != epoch {
            return Err(ErrorKind::ConnectionAborted.into());
        }
        if cursor <= state.compacted {
            let message = format!("too old resource version: {cursor} ({})", state.compacted + 1);
            drop(state);
            send(out, &json!({"type": "ERROR", "object": status_json(410, "Expired", &message)}))?;
            return end(out);
        }
        let history = &state.collections[path].history;
        let fresh = history.iter().filter(|c| c.rv > cursor && matches_fields(&c.object, selector));
        pending.extend(fresh.map(|c| json!({"type": c.kind, "object": c.object})));
        cursor = cursor.max(state.rv);
        let now = Instant::now();
        let bookmark_due = bookmarks && now >= last_sent + BOOKMARK_EVERY;
        if !pending.is_empty() || bookmark_due || now >= deadline {
            drop(state);
            if pending.is_empty() && now < deadline {
                pending.push(json!({"type": "BOOKMARK", "object": {"apiVersion": api_version, "kind": kind, "metadata": {"resourceVersion": cursor.to_string()}}}));
            }
            for event in pending.drain(..) {
                send(out, &event)?;
            }
            if now >= deadline {
                return end(out);
            }
            last_sent = Instant::now();
            state = shared.state.lock().unwrap();
            continue;
        }
        if client_gone(out) {
            return Err(ErrorKind::ConnectionAborted.into());
        }
        let wait = (last_sent + BOOKMARK_EVERY).min(deadline).saturating_duration_since(now);
        state = shared.changed.wait_timeout(state, wait).unwrap().0;
    }
}

/// Sends a whole response in one write (several small writes would wait on
/// Nagle's algorithm and the client's delayed ACK).
fn respond(out: &mut TcpStream, status: &str, content_type: &str, body: &str) -> std::io::Result<()> {
    out.write_all(format!("HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}", body.len()).as_bytes())?;
    out.flush()
}

/// Sends one watch event as one chunk holding one JSON line.
fn send(out: &mut TcpStream, event: &Value) -> std::io::Result<()> {
    let line = format!("{event}\n");
    out.write_all(format!("{:x}\r\n{line}\r\n", line.len()).as_bytes())?;
    out.flush()
}

/// Ends a chunked watch response (the connection stays open for the next request).
fn end(out: &mut TcpStream) -> std::io::Result<()> {
    out.write_all(b"0\r\n\r\n")?;
    out.flush()
}

/// Whether the client closed its side of a connection it sends nothing on.
fn client_gone(stream: &TcpStream) -> bool {
    if stream.set_nonblocking(true).is_err() {
        return true;
    }
    let peeked = stream.peek(&mut [0u8; 1]);
    let gone = match peeked {
        Ok(n) => n == 0,
        Err(e) => e.kind() != ErrorKind::WouldBlock,
    };
    stream.set_nonblocking(false).is_err() || gone
}

/// A `metav1.Status` failure.
fn status_json(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message, "reason": reason, "code": code})
}

/// An object's (namespace, name); the namespace is empty for cluster-scoped objects.
fn key_of(object: &Value) -> (String, String) {
    let field = |f: &str| object.pointer(&format!("/metadata/{f}")).and_then(Value::as_str).unwrap_or("").to_owned();
    (field("namespace"), field("name"))
}

/// The apiVersion and kind of a collection's objects, for bookmarks: from its
/// path (`/api/v1/pods` -> `v1`, `/apis/kuma.io/v1alpha1/...` ->
/// `kuma.io/v1alpha1`) and its objects' `kind`, else the path's plural made singular.
fn type_of(path: &str, collection: &Collection) -> (String, String) {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let api_version = match segments.as_slice() {
        ["apis", group, version, ..] => format!("{group}/{version}"),
        [_, version, ..] => (*version).to_owned(),
        _ => "v1".to_owned(),
    };
    let named = collection.history.iter().find_map(|c| c.object.get("kind").and_then(Value::as_str).map(str::to_owned));
    let kind = named.unwrap_or_else(|| {
        let plural = segments.last().copied().unwrap_or("");
        let singular = plural.strip_suffix('s').unwrap_or(plural);
        let mut chars = singular.chars();
        chars.next().map(|c| c.to_ascii_uppercase().to_string() + chars.as_str()).unwrap_or_default()
    });
    (api_version, kind)
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read as _;

    const PODS: &str = "/api/v1/pods";

    /// A pod of `node` in namespace `shop`.
    fn pod(name: &str, node: &str) -> Value {
        json!({"metadata": {"name": name, "namespace": "shop"}, "spec": {"nodeName": node}})
    }

    /// One keep-alive client connection, speaking just enough HTTP/1.1.
    struct Client {
        reader: BufReader<TcpStream>,
        writer: TcpStream,
    }

    impl Client {
        fn connect(api: &FakeApi) -> Self {
            let writer = TcpStream::connect(api.addr()).unwrap();
            writer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            Self { reader: BufReader::new(writer.try_clone().unwrap()), writer }
        }

        /// Sends `GET target`; returns the status line and the headers.
        fn start(&mut self, target: &str) -> std::io::Result<(String, String)> {
            self.writer.write_all(format!("GET {target} HTTP/1.1\r\nhost: fake\r\n\r\n").as_bytes())?;
            let mut status = String::new();
            self.reader.read_line(&mut status)?;
            let mut headers = String::new();
            loop {
                let mut line = String::new();
                if self.reader.read_line(&mut line)? == 0 || line == "\r\n" {
                    return Ok((status.trim_end().to_owned(), headers.to_ascii_lowercase()));
                }
                headers.push_str(&line);
            }
        }

        /// `GET target` with a Content-Length answer: the status line and the body.
        fn get(&mut self, target: &str) -> (String, String) {
            let (status, headers) = self.start(target).unwrap();
            let length: usize = headers.lines().find_map(|l| l.strip_prefix("content-length: ")).unwrap().trim().parse().unwrap();
            let mut body = vec![0; length];
            self.reader.read_exact(&mut body).unwrap();
            (status, String::from_utf8(body).unwrap())
        }

        /// A LIST: its JSON body.
        fn list(&mut self, target: &str) -> Value {
            let (status, body) = self.get(target);
            assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
            serde_json::from_str(&body).unwrap()
        }

        /// The next chunk of a chunked answer; `None` for the terminating one.
        fn chunk(&mut self) -> std::io::Result<Option<Value>> {
            let mut size = String::new();
            if self.reader.read_line(&mut size)? == 0 {
                return Err(ErrorKind::UnexpectedEof.into());
            }
            let size = usize::from_str_radix(size.trim_end(), 16).unwrap();
            let mut data = vec![0; size + 2];
            self.reader.read_exact(&mut data)?;
            assert!(data.ends_with(b"\n\r\n") || size == 0, "one JSON line per chunk");
            Ok((size > 0).then(|| serde_json::from_slice(&data[..size]).unwrap()))
        }

        /// The next watch event other than a bookmark.
        fn event(&mut self) -> Value {
            loop {
                let event = self.chunk().unwrap().expect("an event, not the end of the watch");
                if event["type"] != "BOOKMARK" {
                    return event;
                }
            }
        }

        /// Opens a watch; panics unless it is a 200 chunked stream.
        fn watch(&mut self, query: &str) {
            let (status, headers) = self.start(&format!("{PODS}?watch=true&{query}")).unwrap();
            assert_eq!(status, "HTTP/1.1 200 OK");
            assert!(headers.contains("transfer-encoding: chunked") && headers.contains("content-type: application/json"), "{headers}");
        }
    }

    /// The names of a list's items.
    fn names(list: &Value) -> Vec<String> {
        list["items"].as_array().unwrap().iter().map(|o| o["metadata"]["name"].as_str().unwrap().to_owned()).collect()
    }

    #[test]
    fn lists_page_by_page_at_one_resource_version() {
        let api = FakeApi::start(&[PODS]).unwrap();
        for (name, node) in [("a", "node-1"), ("b", "node-1"), ("c", "node-2"), ("d", "node-1")] {
            api.add(PODS, pod(name, node));
        }
        let mut client = Client::connect(&api);
        let (status, body) = client.get("/apis/kuma.io/v1alpha1/meshhttproutes");
        assert_eq!((status.as_str(), body.as_str()), ("HTTP/1.1 404 Not Found", "404 page not found"));
        let query = "limit=1&fieldSelector=spec.nodeName%3Dnode-1";
        let mut page = client.list(&format!("{PODS}?{query}"));
        let version = page["metadata"]["resourceVersion"].clone();
        assert_eq!(version, "5");
        let mut listed = names(&page);
        // Changes between pages do not show in the pages still to come.
        api.delete(PODS, "shop", "b");
        api.add(PODS, pod("aa", "node-1"));
        while page["metadata"]["continue"] != "" {
            page = client.list(&format!("{PODS}?{query}&continue={}", page["metadata"]["continue"].as_str().unwrap()));
            assert_eq!(page["metadata"]["resourceVersion"], version);
            listed.extend(names(&page));
        }
        assert_eq!(listed, ["a", "b", "d"]);
        let now = client.list(PODS);
        assert_eq!(names(&now), ["a", "aa", "c", "d"]);
        assert_eq!(now["metadata"]["resourceVersion"], "7");
        assert_eq!(now["metadata"]["continue"], "");
        assert_eq!(now["items"][1]["metadata"]["resourceVersion"], "7");
    }

    #[test]
    fn watches_stream_changes_after_the_listed_version() {
        let api = Arc::new(FakeApi::start(&[PODS]).unwrap());
        api.add(PODS, json!({"metadata": {"name": "x", "namespace": "shop", "uid": "uid-x"}, "spec": {"nodeName": "node-1"}}));
        let mut client = Client::connect(&api);
        let version = client.list(PODS)["metadata"]["resourceVersion"].as_str().unwrap().to_owned();
        api.add(PODS, pod("before", "node-1"));
        client.watch(&format!("resourceVersion={version}&timeoutSeconds=2&allowWatchBookmarks=true&fieldSelector=spec.nodeName%3Dnode-1"));
        let writer = api.clone();
        let changes = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            writer.add(PODS, pod("y", "node-1"));
            writer.add(PODS, pod("z", "node-2"));
            writer.add(PODS, json!({"metadata": {"name": "x", "namespace": "shop", "labels": {"v": "2"}}, "spec": {"nodeName": "node-1"}}));
            writer.delete(PODS, "shop", "y");
        });
        let mut seen = Vec::new();
        for _ in 0..4 {
            let event = client.event();
            let meta = &event["object"]["metadata"];
            seen.push(format!("{} {} {}", event["type"].as_str().unwrap(), meta["name"].as_str().unwrap(), meta["resourceVersion"].as_str().unwrap()));
            if meta["name"] == "x" {
                assert_eq!(meta["uid"], "uid-x", "an update keeps the uid");
            }
        }
        changes.join().unwrap();
        assert_eq!(seen, ["ADDED before 3", "ADDED y 4", "MODIFIED x 6", "DELETED y 7"]);
        let bookmark = client.chunk().unwrap().unwrap();
        assert_eq!(bookmark, json!({"type": "BOOKMARK", "object": {"apiVersion": "v1", "kind": "Pod", "metadata": {"resourceVersion": "7"}}}));
        while client.chunk().unwrap().is_some() {}
        assert_eq!(client.list(PODS)["metadata"]["resourceVersion"], "7", "the connection outlives the watch");
        // From "0": the live objects first.
        client.watch("resourceVersion=0&timeoutSeconds=1");
        assert_eq!(client.event()["object"]["metadata"]["name"], "before");
        assert_eq!(client.event()["object"]["metadata"]["name"], "x");
        assert_eq!(client.event()["object"]["metadata"]["name"], "z");
        assert!(client.chunk().unwrap().is_none());
    }

    #[test]
    fn compaction_expires_new_and_open_watches() {
        let api = FakeApi::start(&[PODS]).unwrap();
        api.add(PODS, pod("a", "node-1"));
        let (mut old, mut open) = (Client::connect(&api), Client::connect(&api));
        let version = old.list(PODS)["metadata"]["resourceVersion"].as_str().unwrap().to_owned();
        open.watch(&format!("resourceVersion={version}&timeoutSeconds=5"));
        api.compact();
        let gone = json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": "too old resource version: 2 (3)", "reason": "Expired", "code": 410}});
        assert_eq!(open.chunk().unwrap().unwrap(), gone);
        assert!(open.chunk().unwrap().is_none());
        old.watch(&format!("resourceVersion={version}&timeoutSeconds=5"));
        assert_eq!(old.chunk().unwrap().unwrap(), gone);
        assert!(old.chunk().unwrap().is_none());
        let relisted = old.list(PODS);
        assert_eq!(relisted["metadata"]["resourceVersion"], "3");
        assert_eq!(names(&relisted), ["a"]);
        old.watch("resourceVersion=3&timeoutSeconds=1");
        assert!(old.chunk().unwrap().is_none(), "a watch from after the compaction just times out");
    }

    #[test]
    fn dropped_watches_are_cut_mid_stream_and_other_connections_stay() {
        let api = FakeApi::start(&[PODS]).unwrap();
        let (mut watching, mut idle) = (Client::connect(&api), Client::connect(&api));
        idle.list(PODS);
        watching.watch("resourceVersion=1&timeoutSeconds=5");
        std::thread::sleep(Duration::from_millis(50));
        api.drop_watches();
        let cut = watching.chunk();
        assert!(cut.as_ref().is_err_and(|e| e.kind() == ErrorKind::UnexpectedEof), "{cut:?}");
        assert_eq!(names(&idle.list(PODS)), Vec::<String>::new());
    }

    #[test]
    fn down_refuses_connections_and_up_serves_on_the_same_address() {
        let api = FakeApi::start(&[PODS]).unwrap();
        let dir = std::env::temp_dir().join(format!("fake-api-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let kubeconfig = std::fs::read_to_string(api.kubeconfig(&dir).unwrap()).unwrap();
        let (mut watching, mut idle) = (Client::connect(&api), Client::connect(&api));
        idle.list(PODS);
        watching.watch("resourceVersion=1&timeoutSeconds=5");
        std::thread::sleep(Duration::from_millis(50));
        api.set_down(true);
        let refused = TcpStream::connect(api.addr()).map(|_| ());
        assert!(refused.as_ref().is_err_and(|e| e.kind() == ErrorKind::ConnectionRefused), "{refused:?}");
        assert!(watching.chunk().is_err(), "the open watch is closed");
        assert_eq!(idle.reader.read(&mut [0; 1]).unwrap(), 0, "the idle connection is closed");
        api.set_down(false);
        api.add(PODS, pod("a", "node-1"));
        assert_eq!(names(&Client::connect(&api).list(PODS)), ["a"]);
        assert_eq!(std::fs::read_to_string(api.kubeconfig(&dir).unwrap()).unwrap(), kubeconfig);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn dropping_the_server_closes_everything() {
        let api = FakeApi::start(&[PODS]).unwrap();
        let addr = api.addr();
        let mut watching = Client::connect(&api);
        watching.watch("resourceVersion=1&timeoutSeconds=5&allowWatchBookmarks=true");
        let started = Instant::now();
        drop(api);
        assert!(started.elapsed() < Duration::from_secs(1));
        assert!(watching.chunk().is_err(), "the open watch is closed");
        assert!(TcpStream::connect(addr).is_err());
    }
}
