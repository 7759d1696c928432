//! Daemons reaching a `ws://` host through a real nginx on loopback (`proxy_pass` with the
//! `Upgrade` and `Connection` headers): one front in plain `ws://`, one ending TLS (`wss://`) at
//! nginx. 1,000 tasks, then nginx restarts and the daemons (`autoexit = FALSE`) reconnect and
//! serve on. The test starts its own nginx, as a child in the foreground, with a configuration
//! in a temporary directory; it never touches a system service.

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use mirai_core::launch::{LocalDaemon, spawn_local};
use mirai_core::{Host, HostOptions, Url};

/// nginx is needed here: CI installs it, and a machine without it skips only knowingly.
fn nginx_available() -> bool {
    let found = Command::new("nginx").arg("-v").stderr(Stdio::null()).status().is_ok_and(|s| s.success());
    assert!(
        found || std::env::var("MIRAI_SKIP_SERVICES").is_ok(),
        "install nginx (apt-get install nginx), or set MIRAI_SKIP_SERVICES=1 to skip this test knowingly"
    );
    found
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// nginx in the foreground, stopped (with its workers) when dropped.
struct Nginx {
    child: Child,
}

impl Nginx {
    fn start(dir: &Path) -> Nginx {
        let child = Command::new("nginx")
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .arg("-e")
            .arg(dir.join("error.log"))
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .spawn()
            .expect("start nginx");
        Nginx { child }
    }

    /// Waits until nginx accepts connections on `port`.
    fn wait_listening(&self, port: u16) {
        let deadline = Instant::now() + PATIENCE;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nginx did not start listening on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM: fast shutdown of the master and its workers, closing every connection.
        // SAFETY: kill(2) on our own child, not yet reaped.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

/// Daemons that stay across disconnects: stopped when the test ends, whatever happens.
struct Daemons(Vec<LocalDaemon>);

impl Drop for Daemons {
    fn drop(&mut self) {
        for d in &self.0 {
            d.signal(libc::SIGKILL);
        }
    }
}

fn config(dir: &Path, ws_port: u16, wss_port: u16, host_port: u16) -> String {
    let d = dir.display();
    format!(
        "worker_processes 1;
pid {d}/nginx.pid;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {d}/tmp;
    proxy_temp_path {d}/tmp;
    fastcgi_temp_path {d}/tmp;
    uwsgi_temp_path {d}/tmp;
    scgi_temp_path {d}/tmp;
    map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
    server {{
        listen 127.0.0.1:{ws_port};
        listen 127.0.0.1:{wss_port} ssl;
        ssl_certificate {d}/cert.pem;
        ssl_certificate_key {d}/key.pem;
        location /mirai {{
            proxy_pass http://127.0.0.1:{host_port};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_read_timeout 1h;
        }}
    }}
}}
"
    )
}

fn run_tasks(host: &Host, n: usize, tag: &str) {
    let tasks: Vec<_> = (0..n).map(|i| submit(host, &format!("echo:{tag}{i}"))).collect();
    for (i, t) in tasks.iter().enumerate() {
        assert_eq!(value(t), format!("{tag}{i}"));
    }
}

#[test]
fn daemons_serve_through_nginx_and_reconnect_after_it_restarts() {
    if !nginx_available() {
        eprintln!("nginx not installed: skipped");
        return;
    }
    let host = Host::listen("ws://127.0.0.1:0/mirai", HostOptions::default()).unwrap();
    let host_port = port_of_url(&host.url());
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("tmp")).unwrap();
    // nginx's certificate: made like a wss:// host's own, for the name daemons dial.
    let identity = mirai_core::tls::generate(&Url::parse("wss://127.0.0.1:0").unwrap()).unwrap();
    std::fs::write(dir.path().join("cert.pem"), &identity.cert_chain_pem).unwrap();
    std::fs::write(dir.path().join("key.pem"), &identity.key_pem).unwrap();
    let (ws_port, wss_port) = (free_port(), free_port());
    std::fs::write(dir.path().join("nginx.conf"), config(dir.path(), ws_port, wss_port, host_port)).unwrap();
    let mut nginx = Nginx::start(dir.path());
    nginx.wait_listening(ws_port);

    // The daemons dial nginx, not the host: the URL the host listens at is not theirs.
    let mut t = template(&["--autoexit=false"]);
    t.env.extend(mirai_core::launch::daemon_env(&host));
    t.env.push((mirai_core::tls::CA_ENV.to_string(), identity.ca_pem.clone()));
    let mut daemons = Daemons(spawn_local(&format!("ws://127.0.0.1:{ws_port}/mirai"), &t, 2).unwrap());
    daemons.0.extend(spawn_local(&format!("wss://127.0.0.1:{wss_port}/mirai"), &t, 2).unwrap());
    assert!(host.wait_connections(4, Some(PATIENCE)), "{:?}", host.counters());
    run_tasks(&host, 1000, "a");

    drop(nginx);
    let deadline = Instant::now() + PATIENCE;
    while host.counters().connections > 0 {
        assert!(Instant::now() < deadline, "nginx's connections to the host did not close");
        std::thread::sleep(Duration::from_millis(20));
    }
    nginx = Nginx::start(dir.path());
    nginx.wait_listening(ws_port);
    assert!(host.wait_connections(4, Some(PATIENCE)), "daemons did not reconnect: {:?}", host.counters());
    run_tasks(&host, 1000, "b");
    // A large payload through the proxy, both fronts taking their share.
    let big = format!("echo:{}", "z".repeat(8 << 20));
    assert_eq!(value(&submit(&host, &big)).len(), 8 << 20);
    assert!(daemons.0.iter().all(|d| d.exit_status().is_none()), "every daemon still runs");
    drop(nginx);
}

fn port_of_url(url: &str) -> u16 {
    url.split(':').nth(2).unwrap().split('/').next().unwrap().parse().unwrap()
}
