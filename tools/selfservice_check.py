"""Drives the borrower's self-service pages in headless Chromium on a phone-sized viewport.

`reachline serve` runs its engine against `reachline sandbox-smsc`, which logs every message it
takes (--smsc-log). This script waits for the pre-due reminder to reach the borrower's mobile,
opens the notice's link (receipt confirmed), identifies with name and ID number, reads the
account page in zh-CN and en, changes the mobile number with the code the sandbox SMSC got
on the new number, and checks the pages' basics (every field labelled, tap targets of at least
44 px). Screenshots of each page in both languages go to --out.
"""

import argparse
import json
import pathlib
import re
import sys
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait


def messages(log, digits):
    """The whole texts the SMSC took for a number, long ones joined from their parts."""
    out, parts = [], {}
    try:
        lines = pathlib.Path(log).read_text().splitlines()
    except FileNotFoundError:
        return out
    for line in lines:
        m = json.loads(line)
        if not m["destination"].endswith(digits):
            continue
        if not m.get("concat"):
            out.append(m["text"])
            continue
        ref, total, seq = m["concat"]
        key = (m["session"], ref, total)
        parts.setdefault(key, {})[seq] = m["text"]
        if len(parts[key]) == total:
            got = parts.pop(key)
            out.append("".join(got[i] for i in range(1, total + 1)))
    return out


def wait_message(log, digits, pattern, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        for text in reversed(messages(log, digits)):
            found = re.search(pattern, text)
            if found:
                return found.group(0)
        time.sleep(0.5)
    raise SystemExit(f"no message matching {pattern!r} reached …{digits[-4:]} in {timeout} s")


def check_page(d, failures, name):
    """Every input, select and textarea has a label; every control is at least 44 px tall."""
    for el in d.find_elements(By.CSS_SELECTOR, "input:not([type=hidden]), select, textarea"):
        el_id = el.get_attribute("id")
        if not el_id or not d.find_elements(By.CSS_SELECTOR, f"label[for='{el_id}']"):
            failures.append(f"{name}: a field without a label ({el.get_attribute('name')})")
    for el in d.find_elements(By.CSS_SELECTOR, "button, input:not([type=hidden]), select"):
        h = d.execute_script("return arguments[0].getBoundingClientRect().height", el)
        if h < 44:
            failures.append(f"{name}: a control {h:.0f} px tall (under 44)")
    width = d.execute_script("return document.documentElement.scrollWidth")
    if width > 400:
        failures.append(f"{name}: the page scrolls sideways on a phone ({width} px)")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--base", required=True)
    p.add_argument("--smsc-log", required=True)
    p.add_argument("--mobile", required=True, help="the borrower's mobile, national digits")
    p.add_argument("--name", required=True)
    p.add_argument("--national-id", required=True)
    p.add_argument("--new-mobile", required=True)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    out = pathlib.Path(a.out)
    out.mkdir(parents=True, exist_ok=True)

    link = wait_message(a.smsc_log, a.mobile, r"https?://\S+/n/[A-Za-z0-9_-]+")
    print("the reminder reached the mobile with its link")

    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for arg in ["--headless=new", "--no-sandbox", "--disable-gpu"]:
        opts.add_argument(arg)
    opts.add_experimental_option(
        "mobileEmulation",
        {"deviceMetrics": {"width": 390, "height": 844, "pixelRatio": 3.0},
         "userAgent": "Mozilla/5.0 (Linux; Android 14) Mobile"},
    )
    d = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    failures = []
    try:
        d.get(link + "?lang=zh")
        body = d.find_element(By.TAG_NAME, "body").text
        if "已确认收到通知" not in body:
            failures.append("the notice page does not confirm receipt")
        check_page(d, failures, "notice zh-CN")
        d.save_screenshot(str(out / "notice-zh-CN.png"))
        d.get(link + "?lang=en")
        check_page(d, failures, "notice en")
        d.save_screenshot(str(out / "notice-en.png"))

        d.find_element(By.ID, "name").send_keys(a.name)
        d.find_element(By.ID, "national_id").send_keys(a.national_id)
        d.find_element(By.CSS_SELECTOR, "form[action*='/identify'] button").click()
        WebDriverWait(d, 15).until(lambda drv: "/me" in drv.current_url and "</html>" in drv.page_source)
        d.get(a.base + "/me?lang=zh")
        body = d.find_element(By.TAG_NAME, "body").text
        if "借款与还款计划" not in body:
            failures.append("the account page shows no schedule")
        if a.mobile in d.page_source:
            failures.append("the account page shows the mobile number unmasked")
        check_page(d, failures, "account zh-CN")
        d.save_screenshot(str(out / "account-zh-CN.png"))
        d.get(a.base + "/me?lang=en")
        check_page(d, failures, "account en")
        d.save_screenshot(str(out / "account-en.png"))

        # Preferences: email first, quiet from 21:00 to 09:00; the page says it saved them.
        Select(d.find_element(By.ID, "first")).select_by_value("email")
        Select(d.find_element(By.ID, "quiet_from")).select_by_value("21")
        Select(d.find_element(By.ID, "quiet_to")).select_by_value("9")
        d.find_element(By.CSS_SELECTOR, "form[action^='/me/preferences'] button").click()
        WebDriverWait(d, 15).until(lambda drv: "saved=1" in drv.current_url and "</html>" in drv.page_source)
        if "Saved." not in d.find_element(By.TAG_NAME, "body").text:
            failures.append("the preferences form did not say it saved")
        if Select(d.find_element(By.ID, "quiet_from")).first_selected_option.get_attribute("value") != "21":
            failures.append("the saved quiet hours are not shown")
        d.execute_script("document.getElementById('first').scrollIntoView()")
        d.save_screenshot(str(out / "preferences-en.png"))
        d.get(a.base + "/me?lang=en")

        d.find_element(By.ID, "number").send_keys(a.new_mobile)
        d.find_element(By.CSS_SELECTOR, "form[action^='/me/number'] button").click()
        WebDriverWait(d, 15).until(lambda drv: 'id="code"' in drv.page_source)
        check_page(d, failures, "code en")
        d.save_screenshot(str(out / "code-en.png"))
        code = wait_message(a.smsc_log, a.new_mobile, r"(?<!\d)\d{6}(?!\d)")
        d.find_element(By.ID, "code").send_keys(code)
        d.find_element(By.CSS_SELECTOR, "form[action$='/code?lang=en'] button").click()
        # Wait on the page's source: the body element goes stale while the redirect loads.
        WebDriverWait(d, 15).until(lambda drv: "number was changed" in drv.page_source)
        d.save_screenshot(str(out / "changed-en.png"))
        d.get(d.current_url.replace("lang=en", "lang=zh"))
        if "号码已更换" not in d.find_element(By.TAG_NAME, "body").text:
            failures.append("the change's page in zh-CN does not say the number was changed")
        d.save_screenshot(str(out / "changed-zh-CN.png"))
        told = wait_message(a.smsc_log, a.mobile, r"已更换|was changed", timeout=20)
        print(f"the old number was told: {told!r}")
    finally:
        d.quit()
    for f in failures:
        print("FAILED:", f)
    print(f"screenshots in {out}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
