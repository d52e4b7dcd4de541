"""The admin console in a real headless Chromium (Debian's chromium + chromium-driver, driven by
Selenium): run by tests/console_browser.rs against a running gateway.

    browser.py --console URL --gateway URL --token T --api-key K --shots DIR

Checks: the console asks for the token and opens with it; every page loads without a console
error; the overview and the agents page show the API's numbers; the tail shows a new request
within 2 s; the purge button empties the route's cache. Saves a screenshot of each page in DIR.
Exits non-zero with a message on the first failure.
"""

import argparse
import json
import os
import sys
import time
import urllib.request

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

PAGES = ["overview", "agents", "routes", "backends", "cache", "tail"]


def fail(message):
    print(f"browser: {message}", file=sys.stderr)
    sys.exit(1)


def get(url, headers=None):
    req = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status, dict(r.headers), r.read()


def api(args, path):
    _, _, body = get(args.console + path, {"Authorization": "Bearer " + args.token})
    return json.loads(body)


def gateway(args, path):
    status, headers, _ = get(args.gateway + path, {"x-api-key": args.api_key})
    lower = {k.lower(): v for k, v in headers.items()}
    return status, lower


def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def console_errors(driver):
    return [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]


def text_of(driver, css):
    """The element's text, read in one step (the console redraws its tables every second, so
    an element found before may be gone a moment later)."""
    return driver.execute_script(
        "const e = document.querySelector(arguments[0]); return e ? e.innerText : null;", css
    )


def rows_of(driver, css):
    """A table's rows as lists of cell texts, read in one step."""
    return driver.execute_script(
        "return [...document.querySelectorAll(arguments[0] + ' tr')]"
        ".map(r => [...r.cells].map(c => c.innerText));",
        css,
    )


def wait_text(driver, css, predicate, what, timeout=5):
    def ok(d):
        t = text_of(d, css)
        return t is not None and predicate(t)

    try:
        WebDriverWait(driver, timeout, poll_frequency=0.1).until(ok)
    except Exception:
        fail(f"{what}: {css} shows {text_of(driver, css)!r}")


def open_page(driver, args, page):
    driver.get(f"{args.console}/#{page}")
    WebDriverWait(driver, 5).until(ec.visibility_of_element_located((By.ID, page)))


def login(driver, args):
    driver.get(args.console + "/")
    WebDriverWait(driver, 5).until(ec.visibility_of_element_located((By.ID, "login")))
    driver.find_element(By.ID, "token").send_keys("not-the-token")
    driver.find_element(By.CSS_SELECTOR, "#login button").click()
    wait_text(driver, "#login-error", lambda t: "refused" in t, "a wrong token is refused")
    field = driver.find_element(By.ID, "token")
    field.clear()
    field.send_keys(args.token)
    driver.find_element(By.CSS_SELECTOR, "#login button").click()
    WebDriverWait(driver, 5).until(ec.visibility_of_element_located((By.ID, "overview")))


def check_numbers(driver, args):
    overview = api(args, "/api/overview")
    wait_text(driver, "#t-requests", lambda t: t == str(overview["requests"]), "overview requests")
    open_page(driver, args, "agents")
    agents = api(args, "/api/agents")["agents"]
    for agent in agents:
        want = str(agent.get("requests", 0))

        def row_ok(text, agent=agent, want=want):
            return agent["id"] in text

        wait_text(driver, "#agents-rows", row_ok, f"agent {agent['id']} listed")
        cells = next((r for r in rows_of(driver, "#agents-rows") if r[0] == agent["id"]), None)
        if cells is None:
            fail(f"agent {agent['id']} is not in the table")
        if cells[4] != want:
            fail(f"agent {agent['id']}: the page shows {cells[4]} requests, the API {want}")
        keys = ", ".join(agent["keys"]) or "–"
        if cells[1] != keys:
            fail(f"agent {agent['id']}: keys {cells[1]!r}, the API {keys!r}")


def check_tail(driver, args):
    open_page(driver, args, "tail")
    wait_text(driver, "#tail-state", lambda t: t.startswith("Following"), "the tail following")
    status, headers = gateway(args, "/v1/models")
    sent = time.monotonic()
    rid = headers["x-request-id"]
    wait_text(driver, "#tail-lines", lambda t: rid in t, "the new request in the tail", timeout=2)
    print(f"browser: tail showed {rid} after {time.monotonic() - sent:.3f} s (status {status})")


def check_purge(driver, args):
    gateway(args, "/cache/browser")
    _, h = gateway(args, "/cache/browser")
    if h.get("x-cache") != "HIT":
        fail(f"no HIT before the purge: {h.get('x-cache')}")
    open_page(driver, args, "cache")
    css = "#cache-rows button[data-route='/cache/*']"
    WebDriverWait(driver, 5).until(ec.element_to_be_clickable((By.CSS_SELECTOR, css)))
    driver.find_element(By.CSS_SELECTOR, css).click()
    WebDriverWait(driver, 5).until(ec.alert_is_present())
    driver.switch_to.alert.accept()
    wait_text(driver, "#purge-result", lambda t: t.startswith("Purged"), "the purge")
    _, h = gateway(args, "/cache/browser")
    if h.get("x-cache") != "MISS":
        fail(f"after the purge: {h.get('x-cache')}")


def main():
    p = argparse.ArgumentParser()
    for a in ["--console", "--gateway", "--token", "--api-key", "--shots"]:
        p.add_argument(a, required=True)
    args = p.parse_args()
    os.makedirs(args.shots, exist_ok=True)
    driver = browser()
    try:
        login(driver, args)
        check_numbers(driver, args)
        for page in PAGES:
            open_page(driver, args, page)
            time.sleep(1.2)  # a refresh or two: charts drawn, tables filled
            driver.save_screenshot(os.path.join(args.shots, f"{page}.png"))
        check_tail(driver, args)
        check_purge(driver, args)
        driver.save_screenshot(os.path.join(args.shots, "cache-purged.png"))
        errors = console_errors(driver)
        if errors:
            fail(f"console errors: {errors}")
        print("browser: ok")
    finally:
        driver.quit()


if __name__ == "__main__":
    main()
