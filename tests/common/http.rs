//! A small HTTP/1.1 server on 127.0.0.1 for tests: each connection gets one response from a
//! handler, which may fail, stall or rate-limit on purpose. It stops when dropped.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone, Default)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Wait this long before answering (to make the client time out).
    pub stall: Option<Duration>,
    /// Announce this Content-Length (more than the body: a connection dropped mid-body).
    pub declared_len: Option<usize>,
}

impl Response {
    pub fn ok(body: impl Into<Vec<u8>>) -> Self {
        Self { status: 200, body: body.into(), ..Default::default() }
    }
    pub fn status(status: u16) -> Self {
        Self { status, body: format!("status {status}").into_bytes(), ..Default::default() }
    }
    pub fn header(mut self, k: &str, v: &str) -> Self {
        self.headers.push((k.into(), v.into()));
        self
    }
}

pub struct Server {
    pub url: String,
    stop: Arc<AtomicBool>,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn handle(mut s: TcpStream, handler: &(dyn Fn(&Request) -> Response + Send + Sync), log: &Mutex<Vec<String>>) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let mut reader = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() || line.is_empty() {
        return;
    }
    let mut parts = line.split_whitespace();
    let mut req =
        Request { method: parts.next().unwrap_or("").into(), path: parts.next().unwrap_or("").into(), headers: vec![] };
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            req.headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; len];
    let _ = reader.read_exact(&mut body);
    log.lock().unwrap().push(format!("{} {}", req.method, req.path));
    let resp = handler(&req);
    if let Some(d) = resp.stall {
        std::thread::sleep(d);
    }
    let declared = resp.declared_len.unwrap_or(resp.body.len());
    let mut out = format!("HTTP/1.1 {} X\r\nConnection: close\r\nContent-Length: {declared}\r\n", resp.status);
    for (k, v) in &resp.headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    let _ = s.write_all(out.as_bytes());
    if req.method != "HEAD" {
        let _ = s.write_all(&resp.body);
    }
    let _ = s.flush();
}

/// Serves `handler` on a free port of 127.0.0.1 until the returned server is dropped.
pub fn serve(handler: impl Fn(&Request) -> Response + Send + Sync + 'static) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    listener.set_nonblocking(true).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let log = Arc::new(Mutex::new(Vec::new()));
    let handler: Arc<dyn Fn(&Request) -> Response + Send + Sync> = Arc::new(handler);
    let (stop2, log2) = (stop.clone(), log.clone());
    std::thread::spawn(move || {
        while !stop2.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((s, _)) => {
                    let _ = s.set_nonblocking(false);
                    let (h, l) = (handler.clone(), log2.clone());
                    std::thread::spawn(move || handle(s, &*h, &l));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    Server { url, stop, log }
}
