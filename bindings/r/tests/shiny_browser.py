#!/usr/bin/env python3
"""The Shiny app in tests/shiny, driven in two real (headless) Chromium sessions.

Session A starts a 2-second mirai; while it is pending, session B's quick output must keep
answering within 200 ms; then A shows the result, and a failing mirai shows Shiny's error.

Run from the repository root with the mirai R package on R_LIBS:
    R_LIBS=/path/to/lib python3 bindings/r/tests/shiny_browser.py
Needs Debian's chromium and chromium-driver, and selenium (tests/requirements.txt).
Prints `shiny-browser: N passed, M failed`; exits non-zero on any failure.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.request

# No usage statistics and no downloads: there is no network but the package registries.
os.environ["SE_AVOID_STATS"] = "true"
os.environ["SE_OFFLINE"] = "true"

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common import selenium_manager  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
APP_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "shiny")
QUICK_LIMIT_MS = 200.0
SLOW_TEXT = "slow result 10 (on daemon: TRUE) - delivered by a promise"
ERROR_TEXT = "deliberate failure in the mirai"


def no_selenium_manager(*args, **kwargs):
    # The driver path is always given; reaching Selenium Manager would mean a download attempt.
    raise RuntimeError("Selenium Manager was called: the chromedriver path was not used")


selenium_manager.SeleniumManager.binary_paths = no_selenium_manager

passed = 0
failed = 0


def check(what, ok, detail=""):
    global passed, failed
    if ok:
        passed += 1
    else:
        failed += 1
        print(f"FAILED: {what}" + (f" ({detail})" if detail else ""), flush=True)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(port, log):
    expr = f'shiny::runApp("{APP_DIR}", port = {port}, host = "127.0.0.1", launch.browser = FALSE)'
    # A session of its own, so the app and the daemons it starts are stopped as one group.
    return subprocess.Popen(["Rscript", "-e", expr], stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)


def wait_for_app(app, url, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if app.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return True
        except OSError:
            time.sleep(0.2)
    return False


def stop_app(app):
    if app.poll() is not None:
        return
    for sig, wait in ((signal.SIGINT, 5), (signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        try:
            os.killpg(app.pid, sig)
        except ProcessLookupError:
            return
        try:
            app.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            pass


def new_browser(profile_dir):
    opts = Options()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", "--window-size=1000,700", f"--user-data-dir={profile_dir}"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    driver.set_script_timeout(15)
    return driver


def text_of(driver, element_id):
    return driver.find_element(By.ID, element_id).text


def open_session(driver, url):
    driver.get(url)
    # "session ready" is rendered by the server: the websocket is up and the inputs are bound.
    WebDriverWait(driver, 20).until(lambda d: text_of(d, "ready") == "session ready")


# Clicks a button and times, in the page, until the output shows `expected` (a MutationObserver,
# so the measure is the browser's own round trip, without selenium's overhead).
CLICK_AND_TIME = """
const [buttonId, outputId, expected, limitMs, done] = arguments;
const out = document.getElementById(outputId);
const t0 = performance.now();
let timer = null;
const finish = (ok) => {
  observer.disconnect();
  clearTimeout(timer);
  done({ok: ok, ms: performance.now() - t0, text: out.textContent});
};
const observer = new MutationObserver(() => { if (out.textContent === expected) finish(true); });
observer.observe(out, {childList: true, characterData: true, subtree: true});
timer = setTimeout(() => finish(false), limitMs);
document.getElementById(buttonId).click();
"""


def main():
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    tmp = tempfile.mkdtemp(prefix="shiny-browser-")
    log_path = os.path.join(tmp, "app.log")
    log = open(log_path, "w")
    app = start_app(port, log)
    browsers = []
    try:
        up = wait_for_app(app, url)
        check("the app answers on 127.0.0.1", up, f"exit code {app.poll()}")
        if not up:
            return
        a = new_browser(os.path.join(tmp, "profile-a"))
        browsers.append(a)
        b = new_browser(os.path.join(tmp, "profile-b"))
        browsers.append(b)
        open_session(a, url)
        open_session(b, url)
        check("both sessions start with no slow result", text_of(a, "slow_out") == "" and text_of(b, "slow_out") == "")

        # One quick answer first, untimed: the app's first render of an output pays R's one-off
        # costs (byte-compiling the render function), which have nothing to do with the mirai.
        warm = b.execute_async_script(CLICK_AND_TIME, "quick", "quick_out", "quick answer 1", 5000)
        check("session B's first quick answer", warm["ok"], f"text {warm['text']!r}")
        print(f"session B's first (warm-up) quick answer: {warm['ms']:.0f} ms", flush=True)

        # Session A starts the 2-second task.
        a.find_element(By.ID, "slow").click()
        clicked = time.monotonic()

        # Session B, meanwhile: each quick answer within 200 ms, and A still without its result.
        answers = []
        while time.monotonic() - clicked < 1.2 and len(answers) < 8:
            n = len(answers) + 2
            res = b.execute_async_script(CLICK_AND_TIME, "quick", "quick_out", f"quick answer {n}", 5000)
            # Still blank in A: its output has not been given the result yet.
            pending = text_of(a, "slow_out") == ""
            answers.append((res, pending, time.monotonic() - clicked))
        check("session B got at least 4 quick answers", len(answers) >= 4, f"{len(answers)}")
        for i, (res, pending, at) in enumerate(answers, 1):
            check(f"quick answer {i} arrived", res["ok"], f"text {res['text']!r}")
            check(f"quick answer {i} within {QUICK_LIMIT_MS:.0f} ms", res["ok"] and res["ms"] < QUICK_LIMIT_MS,
                  f"{res['ms']:.1f} ms")
            check(f"quick answer {i} came while A's task was pending", pending and at < 1.9, f"at {at:.2f} s")
        times = ", ".join(f"{r['ms']:.0f}" for r, _, _ in answers)
        print(f"quick answers in session B while A waited (ms): {times}", flush=True)

        # Session A's page then shows the result, no sooner than the task's 2 seconds.
        try:
            WebDriverWait(a, 15, poll_frequency=0.05).until(lambda d: text_of(d, "slow_out") == SLOW_TEXT)
            shown = time.monotonic() - clicked
        except Exception:
            shown = None
        check("session A shows the mirai's result", shown is not None, f"text {text_of(a, 'slow_out')!r}")
        if shown is not None:
            check("the result took the task's 2 seconds", 1.9 <= shown < 10, f"{shown:.2f} s")
            print(f"session A's result shown after {shown:.2f} s", flush=True)
        check("session B never saw A's result", text_of(b, "slow_out") == "")

        # A failing mirai: the promise rejects and Shiny shows the error message.
        a.find_element(By.ID, "fail").click()
        try:
            WebDriverWait(a, 15, poll_frequency=0.05).until(
                lambda d: "shiny-output-error" in d.find_element(By.ID, "fail_out").get_attribute("class"))
            errored = True
        except Exception:
            errored = False
        fail_out = a.find_element(By.ID, "fail_out")
        check("the failing mirai marks its output as a Shiny error", errored, f"class {fail_out.get_attribute('class')!r}")
        check("the error's message is on the page", ERROR_TEXT in fail_out.text, f"text {fail_out.text!r}")
        check("the error is shown in red", fail_out.value_of_css_property("color") in ("rgb(255, 0, 0)", "rgba(255, 0, 0, 1)"),
              fail_out.value_of_css_property("color"))
        check("no success text for the failing mirai", "unexpected success" not in fail_out.text)
        # An error in an output must not end the session (Shiny greys out a disconnected page).
        check("session A is still connected after the error",
              a.execute_script("return !!(window.Shiny && Shiny.shinyapp && Shiny.shinyapp.isConnected());"))
        # The app still serves after the error.
        res = b.execute_async_script(CLICK_AND_TIME, "quick", "quick_out", f"quick answer {len(answers) + 2}", 5000)
        check("session B still answers after A's error", res["ok"], f"text {res['text']!r}")
        shot = os.environ.get("SHINY_SCREENSHOT")
        if shot:
            a.save_screenshot(shot)
    except Exception:
        traceback.print_exc()
        check("the browser test ran to its end", False)
    finally:
        for driver in browsers:
            try:
                driver.quit()
            except Exception:
                pass
        stop_app(app)
        log.close()
        if failed:
            with open(log_path) as f:
                print("--- app log ---\n" + f.read(), flush=True)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
    print(f"shiny-browser: {passed} passed, {failed} failed", flush=True)
    sys.exit(1 if failed else 0)
