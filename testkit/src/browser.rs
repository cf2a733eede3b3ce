//! A real headless Chromium driven through chromedriver (WebDriver), for the
//! dashboard tests.
//!
//! [`Browser::start`] runs `chromedriver` on a free loopback port and opens
//! a headless Chromium session over the W3C WebDriver HTTP protocol; the
//! helpers cover what the tests need: navigate, find elements by CSS, read
//! text and attributes, click, run a script, wait for a condition (always
//! bounded), take a screenshot. Dropping the [`Browser`] ends the session
//! and kills chromedriver and whatever it started. When Chromium or
//! chromedriver is missing the harness panics with how to install them
//! (`scripts/install-test-tools`); it never skips a test.
//!
//! It knows nothing about Loom: it drives any page.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde_json::{Value, json};

/// The key of an element reference in the WebDriver protocol.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// How long chromedriver gets to start answering.
const DRIVER_START: Duration = Duration::from_secs(20);

/// How long one WebDriver command may take (a session start included).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// The size of the browser window, and whether it poses as a phone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Viewport width in CSS pixels.
    pub width: u32,
    /// Viewport height in CSS pixels.
    pub height: u32,
    /// Emulate a phone (touch, a device pixel ratio of 3, the meta viewport
    /// honoured) rather than a desktop window.
    pub mobile: bool,
}

impl Window {
    /// A desktop window, 1280×900.
    pub const DESKTOP: Window = Window {
        width: 1280,
        height: 900,
        mobile: false,
    };

    /// A phone, 390×844 (an iPhone 12 to 15).
    pub const PHONE: Window = Window {
        width: 390,
        height: 844,
        mobile: true,
    };
}

/// A WebDriver command that failed: its error code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebDriverError {
    /// The protocol's error code, e.g. `no such element`.
    pub error: String,
    /// The driver's message.
    pub message: String,
}

impl std::fmt::Display for WebDriverError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.error, self.message)
    }
}

/// A headless Chromium session, ended and cleaned up on drop.
pub struct Browser {
    agent: ureq::Agent,
    /// `http://127.0.0.1:<port>/session/<id>`.
    session_url: String,
    driver: Child,
    driver_log: PathBuf,
    // Declared last: removed once the processes are gone.
    _dir: tempfile::TempDir,
}

/// An element of the current page.
#[derive(Clone)]
pub struct Element<'b> {
    browser: &'b Browser,
    id: String,
}

impl Browser {
    /// Starts a desktop-sized headless Chromium.
    ///
    /// # Panics
    /// When Chromium or chromedriver is missing or does not start.
    pub fn start() -> Browser {
        Browser::start_with(Window::DESKTOP)
    }

    /// Starts a headless Chromium with the given window.
    ///
    /// # Panics
    /// When Chromium or chromedriver is missing or does not start.
    pub fn start_with(window: Window) -> Browser {
        let chromedriver = chromedriver_binary();
        let chromium = chromium_binary();
        let dir = tempfile::Builder::new()
            .prefix("loom-browser-")
            .tempdir()
            .unwrap_or_else(|error| panic!("cannot create a browser profile dir: {error}"));
        let driver_log = dir.path().join("chromedriver.log");
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(COMMAND_TIMEOUT))
            .http_status_as_error(false)
            .build()
            .into();
        let (driver, base) = start_driver(&chromedriver, &driver_log, &agent);
        let mut browser = Browser {
            agent,
            session_url: String::new(),
            driver,
            driver_log,
            _dir: dir,
        };
        let profile = browser._dir.path().join("profile");
        let mut args = vec![
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--disable-extensions".to_owned(),
            "--no-first-run".to_owned(),
            "--no-default-browser-check".to_owned(),
            "--hide-scrollbars".to_owned(),
            format!("--user-data-dir={}", profile.display()),
            format!("--window-size={},{}", window.width, window.height),
        ];
        if !window.mobile {
            args.push("--force-device-scale-factor=1".to_owned());
        }
        let mut chrome_options = json!({
            "binary": chromium.display().to_string(),
            "args": args,
        });
        if window.mobile {
            chrome_options["mobileEmulation"] = json!({
                "deviceMetrics": { "width": window.width, "height": window.height, "pixelRatio": 3.0, "touch": true, "mobile": true },
                "userAgent": "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Mobile Safari/537.36",
            });
        }
        let capabilities = json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": chrome_options,
                    "goog:loggingPrefs": { "browser": "ALL" },
                }
            }
        });
        let created = browser
            .request("POST", &format!("{base}/session"), Some(capabilities))
            .unwrap_or_else(|error| {
                panic!(
                    "chromedriver could not start {} ({error}); chromedriver log:\n{}",
                    chromium.display(),
                    browser.log()
                )
            });
        let session = created["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("chromedriver answered no session id: {created}"))
            .to_owned();
        browser.session_url = format!("{base}/session/{session}");
        browser.command(
            "POST",
            "/timeouts",
            json!({ "script": 30_000, "pageLoad": 30_000, "implicit": 0 }),
        );
        browser
    }

    /// Opens `url` and waits for the page to load.
    pub fn goto(&self, url: &str) {
        self.command("POST", "/url", json!({ "url": url }));
    }

    /// The current page's URL.
    pub fn current_url(&self) -> String {
        self.command("GET", "/url", Value::Null)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Resizes the window (desktop sessions).
    pub fn set_window_size(&self, width: u32, height: u32) {
        self.command(
            "POST",
            "/window/rect",
            json!({ "width": width, "height": height }),
        );
    }

    /// The first element matching the CSS `selector`, if any.
    pub fn find(&self, selector: &str) -> Option<Element<'_>> {
        match self.try_command(
            "POST",
            "/element",
            json!({ "using": "css selector", "value": selector }),
        ) {
            Ok(value) => Some(self.element(&value)),
            Err(error) if error.error == "no such element" => None,
            Err(error) => panic!("finding {selector:?} failed: {error}"),
        }
    }

    /// Every element matching the CSS `selector`, in document order.
    pub fn find_all(&self, selector: &str) -> Vec<Element<'_>> {
        self.command(
            "POST",
            "/elements",
            json!({ "using": "css selector", "value": selector }),
        )
        .as_array()
        .map(|found| found.iter().map(|value| self.element(value)).collect())
        .unwrap_or_default()
    }

    /// Runs `script` (a function body; `arguments[i]` are `args`, elements
    /// passed with [`Element::to_json`]) and returns what it returns.
    pub fn execute(&self, script: &str, args: &[Value]) -> Value {
        self.command(
            "POST",
            "/execute/sync",
            json!({ "script": script, "args": args }),
        )
    }

    /// Calls `check` every 100 ms until it returns `Some`, for at most
    /// `within`.
    ///
    /// # Panics
    /// After `within`, naming `what` and showing the page's URL and text.
    pub fn wait_until<'b, T>(
        &'b self,
        within: Duration,
        what: &str,
        mut check: impl FnMut(&'b Browser) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + within;
        loop {
            if let Some(value) = check(self) {
                return value;
            }
            if Instant::now() > deadline {
                let text = self
                    .try_command(
                        "POST",
                        "/execute/sync",
                        json!({ "script": "return document.body ? document.body.innerText : ''", "args": [] }),
                    )
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                let text: String = text.chars().take(3000).collect();
                panic!(
                    "timed out after {within:?} waiting for {what}; page {}:\n{text}",
                    self.current_url()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until an element matches `selector`; that element.
    ///
    /// # Panics
    /// When none does within `within`.
    pub fn wait_for(&self, selector: &str, within: Duration) -> Element<'_> {
        self.wait_until(within, &format!("an element matching {selector:?}"), |b| {
            b.find(selector)
        })
    }

    /// Saves a PNG of the viewport at `path` (directories are created).
    pub fn screenshot(&self, path: &Path) {
        let encoded = self.command("GET", "/screenshot", Value::Null);
        let png = base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().unwrap_or_default())
            .unwrap_or_else(|error| panic!("the screenshot is not base64: {error}"));
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .unwrap_or_else(|error| panic!("cannot create {}: {error}", parent.display()));
        }
        std::fs::write(path, png)
            .unwrap_or_else(|error| panic!("cannot write {}: {error}", path.display()));
    }

    /// The page's console messages at level SEVERE since the last call
    /// (script errors, failed loads, refused content), as chromedriver
    /// reports them.
    pub fn console_errors(&self) -> Vec<String> {
        let Ok(entries) = self.try_command("POST", "/se/log", json!({ "type": "browser" })) else {
            return Vec::new();
        };
        entries
            .as_array()
            .map(|entries| {
                entries
                    .iter()
                    .filter(|entry| entry["level"] == "SEVERE")
                    .map(|entry| entry["message"].as_str().unwrap_or_default().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// chromedriver's log, for failure messages.
    pub fn log(&self) -> String {
        let log = std::fs::read_to_string(&self.driver_log).unwrap_or_default();
        let start = log.len().saturating_sub(20_000);
        log.get(start..).unwrap_or(&log).to_owned()
    }

    /// Runs a command of this session; its `value`.
    ///
    /// # Panics
    /// When the driver reports an error.
    pub fn command(&self, method: &str, path: &str, body: Value) -> Value {
        self.try_command(method, path, body)
            .unwrap_or_else(|error| panic!("WebDriver {method} {path} failed: {error}"))
    }

    /// Runs a command of this session; its `value` or the driver's error.
    pub fn try_command(
        &self,
        method: &str,
        path: &str,
        body: Value,
    ) -> Result<Value, WebDriverError> {
        let body = (method == "POST").then_some(body);
        self.request(method, &format!("{}{path}", self.session_url), body)
    }

    fn request(
        &self,
        method: &str,
        url: &str,
        body: Option<Value>,
    ) -> Result<Value, WebDriverError> {
        let sent = match (method, body) {
            ("GET", _) => self.agent.get(url).call(),
            ("DELETE", _) => self.agent.delete(url).call(),
            (_, Some(body)) => self.agent.post(url).send_json(body),
            (_, None) => self.agent.post(url).send_json(json!({})),
        };
        let mut response = sent.map_err(|error| WebDriverError {
            error: "unreachable".to_owned(),
            message: format!("{method} {url}: {error}"),
        })?;
        let status = response.status();
        let answer: Value = response
            .body_mut()
            .with_config()
            .limit(64 * 1024 * 1024)
            .read_json()
            .map_err(|error| WebDriverError {
                error: "bad answer".to_owned(),
                message: format!("{method} {url} answered {status} without JSON: {error}"),
            })?;
        let value = answer.get("value").cloned().unwrap_or(Value::Null);
        if status.is_success() {
            Ok(value)
        } else {
            Err(WebDriverError {
                error: value["error"]
                    .as_str()
                    .unwrap_or("unknown error")
                    .to_owned(),
                message: value["message"].as_str().unwrap_or_default().to_owned(),
            })
        }
    }

    fn element(&self, value: &Value) -> Element<'_> {
        let id = value[ELEMENT_KEY]
            .as_str()
            .unwrap_or_else(|| panic!("not an element reference: {value}"))
            .to_owned();
        Element { browser: self, id }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session_url.is_empty() {
            // Ends Chromium; chromedriver itself is killed below either way.
            let _ = self.request("DELETE", &self.session_url, None);
        }
        // chromedriver leads its own process group: killing the group takes
        // any Chromium process the session left behind with it.
        if let Ok(group) = i32::try_from(self.driver.id()) {
            let _ = killpg(Pid::from_raw(group), Signal::SIGKILL);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl<'b> Element<'b> {
    /// The element's rendered text.
    pub fn text(&self) -> String {
        self.call("GET", "/text", Value::Null)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Clicks it, as a pointer would (scrolled into view first).
    ///
    /// # Panics
    /// When the driver cannot click it (hidden, covered, gone).
    pub fn click(&self) {
        self.call("POST", "/click", json!({}));
    }

    /// The value of its attribute `name`, if it has one.
    pub fn attribute(&self, name: &str) -> Option<String> {
        self.call("GET", &format!("/attribute/{name}"), Value::Null)
            .as_str()
            .map(str::to_owned)
    }

    /// Whether it is enabled (a form control that is not disabled).
    pub fn is_enabled(&self) -> bool {
        self.call("GET", "/enabled", Value::Null) == Value::Bool(true)
    }

    /// Whether it is displayed.
    pub fn is_displayed(&self) -> bool {
        self.call("GET", "/displayed", Value::Null) == Value::Bool(true)
    }

    /// The first element inside this one matching `selector`, if any.
    pub fn find(&self, selector: &str) -> Option<Element<'b>> {
        match self.browser.try_command(
            "POST",
            &format!("/element/{}/element", self.id),
            json!({ "using": "css selector", "value": selector }),
        ) {
            Ok(value) => Some(self.browser.element(&value)),
            Err(error) if error.error == "no such element" => None,
            Err(error) => panic!("finding {selector:?} failed: {error}"),
        }
    }

    /// The reference to pass it to [`Browser::execute`].
    pub fn to_json(&self) -> Value {
        json!({ ELEMENT_KEY: self.id })
    }

    fn call(&self, method: &str, path: &str, body: Value) -> Value {
        self.browser
            .command(method, &format!("/element/{}{path}", self.id), body)
    }
}

impl std::fmt::Debug for Element<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Element").field("id", &self.id).finish()
    }
}

/// Where tests put screenshots and other artefacts:
/// `<target>/test-artifacts/<name>`, `<target>` being `CARGO_TARGET_DIR`
/// or the workspace's `target/`. The directory is created.
pub fn artifact_path(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let dir = target.join("test-artifacts");
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|error| panic!("cannot create {}: {error}", dir.display()));
    dir.join(name)
}

/// The chromedriver to run: `$CHROMEDRIVER`, else `chromedriver` on PATH or
/// in /usr/bin.
///
/// # Panics
/// When there is none, saying how to install it.
pub fn chromedriver_binary() -> PathBuf {
    find_program("CHROMEDRIVER", &["chromedriver"]).unwrap_or_else(|| {
        panic!(
            "chromedriver not found ($CHROMEDRIVER unset, no chromedriver on PATH or in /usr/bin); install it with `scripts/install-test-tools` (Debian package chromium-driver)"
        )
    })
}

/// The Chromium to drive: `$CHROME_BIN`, else `chromium`,
/// `chromium-browser` or `google-chrome` on PATH or in /usr/bin.
///
/// # Panics
/// When there is none, saying how to install it.
pub fn chromium_binary() -> PathBuf {
    find_program("CHROME_BIN", &["chromium", "chromium-browser", "google-chrome"]).unwrap_or_else(
        || {
            panic!(
                "chromium not found ($CHROME_BIN unset, no chromium, chromium-browser or google-chrome on PATH or in /usr/bin); install it with `scripts/install-test-tools` (Debian package chromium)"
            )
        },
    )
}

fn find_program(variable: &str, names: &[&str]) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(variable).map(PathBuf::from) {
        return path.is_file().then_some(path);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs: Vec<PathBuf> = std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin")])
        .collect();
    names
        .iter()
        .flat_map(|name| dirs.iter().map(move |dir| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

/// Starts chromedriver on a free port (trying again if the port was taken
/// meanwhile) and waits until it answers; the process and its base URL.
fn start_driver(chromedriver: &Path, log: &Path, agent: &ureq::Agent) -> (Child, String) {
    let mut last_failure = String::new();
    for _ in 0..3 {
        let port = crate::free_port();
        let mut child = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|error| panic!("cannot run {}: {error}", chromedriver.display()));
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + DRIVER_START;
        loop {
            if let Ok(mut response) = agent.get(format!("{base}/status")).call()
                && let Ok(status) = response.body_mut().read_json::<Value>()
                && status["value"]["ready"] == Value::Bool(true)
            {
                return (child, base);
            }
            if let Ok(Some(exit)) = child.try_wait() {
                last_failure = format!(
                    "chromedriver on port {port} exited with {exit}: {}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                last_failure = format!(
                    "chromedriver on port {port} did not answer within {DRIVER_START:?}: {}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    panic!("chromedriver did not start: {last_failure}");
}
