//! A real OCI registry for tests: the Debian `docker-registry` binary (distribution 2.8) on a free
//! loopback port with a temporary storage directory, optionally behind htpasswd auth.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

const BINARY: &str = "docker-registry";

/// A running registry; stopped (killed) when dropped. Storage survives [`Registry::stop`] and
/// [`Registry::restart`], so tests can take the registry away mid-operation and bring it back.
pub struct Registry {
    child: Option<Child>,
    addr: String,
    dir: TempDir,
    auth: Option<(String, String)>,
}

impl Registry {
    /// Starts an anonymous registry.
    pub async fn start() -> Registry {
        Self::launch(None).await
    }

    /// Starts a registry that requires HTTP basic auth with this user and password.
    pub async fn start_with_auth(user: &str, password: &str) -> Registry {
        Self::launch(Some((user.to_string(), password.to_string()))).await
    }

    async fn launch(auth: Option<(String, String)>) -> Registry {
        let binary = find_binary();
        let dir = tempfile::Builder::new().prefix("kzo-registry-").tempdir().expect("temp dir for the registry");
        if let Some((user, password)) = &auth {
            let hash = bcrypt::hash(password, 5).expect("bcrypt hash");
            std::fs::write(dir.path().join("htpasswd"), format!("{user}:{hash}\n")).expect("write htpasswd");
        }
        // A port taken between probing and binding makes the registry exit; then try another.
        let mut registry = Registry { child: None, addr: String::new(), dir, auth };
        for _ in 0..5 {
            registry.addr = format!("127.0.0.1:{}", free_port());
            registry.spawn(&binary);
            if registry.wait_ready().await {
                return registry;
            }
            registry.kill();
            let log = registry.log();
            if !log.contains("address already in use") {
                panic!("docker-registry did not become ready on {}; its log:\n{log}", registry.addr);
            }
        }
        panic!("docker-registry could not bind a free port after 5 attempts");
    }

    fn spawn(&mut self, binary: &Path) {
        let config = self.dir.path().join("config.yml");
        std::fs::write(&config, self.config()).expect("write registry config");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("registry.log"))
            .expect("registry log file");
        let child = Command::new(binary)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        self.child = Some(child);
    }

    fn config(&self) -> String {
        let storage = self.dir.path().join("storage");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n  maintenance:\n    uploadpurging:\n      enabled: false\nhttp:\n  addr: {}\n",
            storage.display(),
            self.addr
        );
        if self.auth.is_some() {
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: kzo-test\n    path: {}\n",
                self.dir.path().join("htpasswd").display()
            ));
        }
        config
    }

    async fn wait_ready(&mut self) -> bool {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && child.try_wait().ok().flatten().is_some()
            {
                return false;
            }
            if let Ok(resp) = client.get(format!("http://{}/v2/", self.addr)).send().await {
                // 401 means the registry is up and asking for the credentials it was told to.
                let status = resp.status().as_u16();
                if status == 200 || (status == 401 && self.auth.is_some()) {
                    return true;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// `127.0.0.1:PORT`, the registry host part of image references.
    pub fn host(&self) -> &str {
        &self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Credentials, when the registry requires them.
    pub fn credentials(&self) -> Option<(&str, &str)> {
        self.auth.as_ref().map(|(u, p)| (u.as_str(), p.as_str()))
    }

    /// Directory that survives restarts (storage, config, log); tests may put files here.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A docker `config.json` for this registry's credentials, written into the registry's dir.
    pub fn docker_config(&self) -> PathBuf {
        let path = self.dir.path().join("docker-config.json");
        let auths = match self.credentials() {
            Some((user, password)) => {
                use base64::Engine as _;
                let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
                format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, self.addr)
            }
            None => r#"{"auths":{}}"#.to_string(),
        };
        std::fs::write(&path, auths).expect("write docker config");
        path
    }

    /// Stops the registry process (storage is kept).
    pub fn stop(&mut self) {
        self.kill();
    }

    /// Starts the registry again on the same port with the same storage.
    pub async fn restart(&mut self) {
        self.kill();
        let binary = find_binary();
        for _ in 0..50 {
            self.spawn(&binary);
            if self.wait_ready().await {
                return;
            }
            self.kill();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("docker-registry did not restart on {}; its log:\n{}", self.addr, self.log());
    }

    /// The registry's own log (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The registry binary. A missing binary fails the test with the fix, never skips it.
pub fn find_binary() -> PathBuf {
    find_tool(BINARY, "docker-registry")
}

/// A tool from PATH, or a panic naming the Debian package that provides it (CI installs it via
/// `ci/test`; a test that needs it must fail loudly rather than skip).
pub fn find_tool(name: &str, package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "`{name}` is not installed but this test needs it: run `apt-get install -y {package}` (ci/test does this){}",
        if std::env::var("CI").as_deref() == Ok("true") { " [CI=true]" } else { "" }
    );
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free loopback port").port()
}
