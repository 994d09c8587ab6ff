#!/usr/bin/env python3
"""Loads the System Overview in headless Chromium and reads its DOM.

Usage: overview_browser.py URL SCREENSHOT TRIGGER SERVER STATE TIMEOUT
Prints one JSON line with every real-server row as the page first shows
it ({"rows": [...]}), then waits for the file TRIGGER to exist (the test
stops a real server then), and from that moment watches the same page,
which reloads itself, until the row of SERVER shows STATE; prints
{"rows": [...], "elapsed": seconds or null} and saves a screenshot."""
import json
import os
import sys
import tempfile
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

url, shot, trigger, server, want, timeout = sys.argv[1:7]
timeout = float(timeout)

opts = webdriver.ChromeOptions()
opts.binary_location = "/usr/bin/chromium"
for flag in [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1200,900",
    f"--user-data-dir={tempfile.mkdtemp(prefix='lbmed-chromium-')}",
]:
    opts.add_argument(flag)
driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)


def rows():
    found = []
    for tr in driver.find_elements(By.CSS_SELECTOR, "tr.rs"):
        try:
            found.append(
                {
                    "service": tr.get_attribute("data-service"),
                    "server": tr.get_attribute("data-server"),
                    "state": tr.get_attribute("data-state"),
                    "colour": tr.value_of_css_property("background-color"),
                    "reason": tr.find_element(By.CSS_SELECTOR, "td.reason").text,
                }
            )
        except Exception:
            return None  # the page reloaded under us: read again
    return found


try:
    driver.set_page_load_timeout(30)
    driver.get(url)
    first = None
    for _ in range(50):
        first = rows()
        if first:
            break
        time.sleep(0.2)
    print(json.dumps({"rows": first, "title": driver.title}), flush=True)
    while not os.path.exists(trigger):
        time.sleep(0.1)
    start = time.monotonic()
    elapsed, last = None, first
    while time.monotonic() - start < timeout:
        now = rows()
        if now:
            last = now
            if any(r["server"] == server and r["state"] == want for r in now):
                elapsed = time.monotonic() - start
                break
        time.sleep(0.2)
    driver.save_screenshot(shot)
    print(json.dumps({"rows": last, "elapsed": elapsed}), flush=True)
finally:
    driver.quit()
