"""Drives Reachline's operator dashboard in headless Chromium after a demo run.

Logs in as an operator, checks that the outcome chart shows exactly the counts the API's
summary report gives for the same database, that the demo's lost numbers and unreachable
borrowers appear, that "verify a notice" verifies the demo's notice, and keeps screenshots
(desktop and phone width) in --out.
"""

import argparse
import json
import pathlib
import sys
import urllib.request

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait


def api(base, token, path):
    req = urllib.request.Request(base + path, headers={"Authorization": "Bearer " + token})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.load(r)


def bars(driver, chart):
    out = {}
    for g in driver.find_elements(By.CSS_SELECTOR, f"#{chart} g.bar"):
        out[g.get_attribute("data-label")] = int(g.get_attribute("data-value"))
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--base", required=True)
    p.add_argument("--login", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--notice", required=True)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    out = pathlib.Path(a.out)
    out.mkdir(parents=True, exist_ok=True)

    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for arg in ["--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,2400"]:
        opts.add_argument(arg)
    d = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    failures = []
    try:
        d.get(a.base + "/")
        assert d.current_url.endswith("/login"), d.current_url
        d.find_element(By.ID, "login").send_keys(a.login)
        d.find_element(By.ID, "password").send_keys(a.password)
        d.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
        # The click returns before the browser has followed the redirect: wait for the overview.
        WebDriverWait(d, 15).until(lambda drv: drv.current_url == a.base + "/" and drv.find_elements(By.ID, "outcomes"))
        d.save_screenshot(str(out / "overview.png"))

        # The outcome chart against the API's report of the same outbox.
        summary = api(a.base, a.token, "/v1/reports/summary")
        expected = {}
        for row in summary["outbox"]:
            kind, channel, state, outcome, klass = row["keys"]
            if state in ("sent", "failed", "in_doubt"):
                label = (klass or "unknown") if outcome == "failed" else outcome
                expected[label] = expected.get(label, 0) + row["count"]
        shown = bars(d, "outcomes")
        if shown != expected:
            failures.append(f"outcome chart {shown} != report {expected}")
        else:
            print(f"outcome chart matches the report: {shown}")

        queue = bars(d, "queue")
        states = {}
        for row in summary["outbox"]:
            states[row["keys"][2]] = states.get(row["keys"][2], 0) + row["count"]
        if queue != states:
            failures.append(f"queue chart {queue} != report {states}")

        found = bars(d, "found")
        if found.get("dead", 0) <= 0:
            failures.append(f"the demo's dead numbers are not shown: {found}")
        exposure = bars(d, "exposure")
        if sum(exposure.values()) <= 0:
            failures.append(f"no unreachable borrowers shown: {exposure}")
        detect = d.find_elements(By.ID, "detect")
        if not detect or "median" not in detect[0].text:
            failures.append("no time to detect shown after a demo with lost numbers")
        else:
            print(detect[0].text)
        points = d.find_elements(By.CSS_SELECTOR, "#reach circle")
        if not points:
            failures.append("the reach chart has no points")
        print(f"found {found}; unreachable by DPD {exposure}; {len(points)} reach points")

        d.get(f"{a.base}/verify?notice={a.notice}")
        WebDriverWait(d, 15).until(lambda drv: drv.find_elements(By.ID, "verdict"))
        verdict = d.find_element(By.ID, "verdict").text
        d.save_screenshot(str(out / "verify.png"))
        if not verdict.startswith("Verified"):
            failures.append("verify page: " + verdict)
        else:
            print(verdict)

        # The work queue: the demo's borrowers nothing reached are operators' tasks.
        d.get(a.base + "/queue")
        WebDriverWait(d, 15).until(lambda drv: drv.find_elements(By.ID, "tasks"))
        tasks = d.find_elements(By.CSS_SELECTOR, "#tasks tbody tr")
        d.save_screenshot(str(out / "queue.png"))
        if not tasks or "nothing yet" in tasks[0].text:
            failures.append("the work queue shows no operator tasks after the demo")
        else:
            print(f"work queue: {len(tasks)} borrowers nothing reached")

        d.set_window_size(390, 2400)
        d.get(a.base + "/")
        d.save_screenshot(str(out / "overview-phone.png"))
    finally:
        d.quit()
    for f in failures:
        print("FAILED:", f, file=sys.stderr)
    print("screenshots in", out)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
