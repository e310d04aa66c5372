#!/usr/bin/python3
"""tests/dashboard.py - the dm-serve dashboard in a real browser (headless Chromium).

    tests/dashboard.py --url http://127.0.0.1:8431 --token TOKEN --expect FILE SHOTS_DIR
        [--lock-dsn CONNINFO --lock-table TABLE [--psql PSQL]]

FILE is JSON written by the caller from psql (never from dm):
    {"entities": {"country": {"source": 109, "destination": 109}, ...},
     "inserts": {"actor": 1}, "deletes": {"payment": 1}}
"inserts" and "deletes" (optional): per entity, the source rows not in the destination
(the Plan table must show them as inserts) and the destination rows not in the source
(the confirmation of "Run with deletes" must show them as deletes).

Steps: open URL/#token=TOKEN; every entity of FILE is drawn with the source and
destination row counts of FILE; Run starts a run that is seen running and then
succeeding, live; Run with deletes shows the expected delete counts in its confirmation,
and after it every entity is in sync with the source counts of FILE. With --lock-dsn, a
psql session holds ACCESS EXCLUSIVE on --lock-table (so that a run stalls there), Run is
clicked, Cancel is clicked once the run is running, and the run must end cancelled; the
lock is then released. The page without a token must ask for it. Screenshots go to
SHOTS_DIR (NN-name.png). Exits 0 when every check passed, 1 with a message (and a
screenshot of the moment) otherwise. Replay: the same command line, with the
dm-serve and clusters of the caller (tests/dashboard.bats prints it on failure).
"""

import argparse
import json
import os
import subprocess
import sys
import time

try:
    from selenium import webdriver
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
except ImportError:  # the .bats file skips before this; run by hand, say why
    sys.stderr.write("dashboard.py: python3-selenium is not installed (apt-get install python3-selenium)\n")
    sys.exit(2)

# Deadlines, generous: the machine is shared and loaded. Every wait polls the page's
# state; none is a sleep standing in for synchronisation.
LOAD_S = 60
RUN_S = 240


class Failed(Exception):
    pass


class Dash:
    def __init__(self, args):
        self.args = args
        self.shots = args.shots
        self.n = 0
        opts = webdriver.ChromeOptions()
        for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                  "--window-size=1600,1300", "--force-device-scale-factor=1", "--lang=en-US"):
            opts.add_argument(a)
        if args.chromium:
            opts.binary_location = args.chromium
        self.d = webdriver.Chrome(service=Service(args.chromedriver), options=opts)
        self.d.set_page_load_timeout(LOAD_S)

    def shot(self, name):
        self.n += 1
        path = os.path.join(self.shots, "%02d-%s.png" % (self.n, name))
        # The whole page, not only the window: grow the window to the document.
        h = self.d.execute_script("return Math.max(document.body.scrollHeight, document.documentElement.scrollHeight)")
        self.d.set_window_size(1600, max(900, min(int(h) + 40, 4000)))
        self.d.save_screenshot(path)
        print("# screenshot %s" % path)
        return path

    def js(self, script, *a):
        return self.d.execute_script(script, *a)

    def wait(self, what, cond, timeout):
        """Poll cond() until it returns a true value; fail naming WHAT after TIMEOUT s."""
        end = time.monotonic() + timeout
        last = None
        while time.monotonic() < end:
            try:
                v = cond()
                if v:
                    return v
            except (StaleElementReferenceException, WebDriverException) as e:
                last = e
            time.sleep(0.2)  # polling interval, not a synchronisation
        errors = self.errors()
        raise Failed("timed out after %d s waiting for %s%s%s" % (
            timeout, what, "; page errors: %s" % errors if errors else "",
            "; last exception: %s" % str(last).split("\n")[0] if last else ""))

    def errors(self):
        return self.js("return [...document.querySelectorAll('#errors .msg')].map(e => e.textContent)")

    def no_errors(self, where):
        e = self.errors()
        if e:
            raise Failed("%s: the page shows API errors: %s" % (where, e))

    def click(self, elem_id):
        b = self.wait("button #%s to be enabled" % elem_id,
                      lambda: (lambda e: e if e.is_displayed() and e.is_enabled() else None)(self.d.find_element(By.ID, elem_id)),
                      LOAD_S)
        b.click()

    def nodes(self):
        return self.js("""return [...document.querySelectorAll('#graph g.node')].map(g => ({
            entity: g.dataset.entity, source: g.dataset.sourceRows, destination: g.dataset.destinationRows,
            counts: (g.querySelector('text.counts') || {}).textContent || '',
            gap: (g.querySelector('text.gap') || {}).textContent || ''}))""")

    def run_state(self):
        return self.js("const p = document.getElementById('run-state-pill'); return p ? p.textContent : null")

    def run_id(self):
        return self.js("return (document.getElementById('run-title').textContent || '').split(' ')[0]")

    def run_rows(self):
        return self.js("""return [...document.querySelectorAll('#run-table tr[data-entity]')].map(
            r => [r.dataset.entity, r.dataset.state])""")

    def wait_counts(self):
        self.wait("the row counts (GET /v1/baseline)",
                  lambda: self.nodes() and all(n["source"] is not None for n in self.nodes())
                  and not self.js("return document.getElementById('b-counts').disabled"), LOAD_S * 2)

    def refresh_counts(self):
        self.click("b-counts")
        self.wait("the counts to be refreshed",
                  lambda: not self.js("return document.getElementById('b-counts').disabled"), LOAD_S * 2)
        self.wait_counts()

    def wait_run_end(self, rid, shot_live=None):
        """Wait for run RID to end; its final state. With SHOT_LIVE, a screenshot of the
        first moment an entity shows as running, if the page is polled at such a moment
        (Pagila is small: a run may be over before)."""
        seen = []

        def ended():
            if shot_live and not seen and any(s == "running" for _, s in self.run_rows()):
                seen.append(self.shot(shot_live))
            return self.run_id() == rid and self.run_state() not in (None, "running") and self.run_state()
        return self.wait("run %s to end" % rid, ended, RUN_S)


def fmt(n):
    return "{:,}".format(int(n))


def check_counts(dash, expect, after_sync=False):
    got = {n["entity"]: n for n in dash.nodes()}
    for ent, want in sorted(expect.items()):
        if ent not in got:
            raise Failed("entity %s is not drawn (drawn: %s)" % (ent, sorted(got)))
        n = got[ent]
        src = want["source"]
        dst = want["source"] if after_sync else want["destination"]
        if str(n["source"]) != str(src) or str(n["destination"]) != str(dst):
            raise Failed("entity %s: the page shows %s source / %s destination rows, psql counted %s / %s%s" % (
                ent, n["source"], n["destination"], src, dst, " (after the catch-up run)" if after_sync else ""))
        text = "%s → %s" % (fmt(src), fmt(dst))
        if n["counts"] != text:
            raise Failed("entity %s: the counts read %r, expected %r" % (ent, n["counts"], text))
        if src != dst and n["gap"] == "in sync":
            raise Failed("entity %s: %s source and %s destination rows, but the gap reads %r" % (ent, src, dst, n["gap"]))
    print("# counts ok for %d entities%s" % (len(expect), " (in sync)" if after_sync else ""))


def test_no_token(dash, url):
    dash.d.get(url + "/")
    dash.js("sessionStorage.clear()")
    dash.d.refresh()
    dash.wait("the token form", lambda: dash.d.find_element(By.ID, "login").is_displayed(), LOAD_S)
    if dash.d.find_element(By.ID, "app").is_displayed():
        raise Failed("without a token the dashboard is shown instead of the token form")
    dash.shot("no-token")
    # A wrong token comes back to the form with the server's message.
    dash.d.find_element(By.ID, "login-token").send_keys("wrong-token")
    dash.d.find_element(By.CSS_SELECTOR, "#login button").click()
    dash.wait("the form to say the token was refused",
              lambda: dash.d.find_element(By.ID, "login-err").is_displayed()
              and "refused" in dash.d.find_element(By.ID, "login-err").text, LOAD_S)
    dash.shot("wrong-token")
    print("# no token: the form asks for it; a wrong one is refused")


def test_counts(dash, url, token, expect):
    dash.d.get(url + "/#token=" + token)
    dash.wait("the dashboard", lambda: dash.d.find_element(By.ID, "app").is_displayed(), LOAD_S)
    if "token=" in dash.d.current_url:
        raise Failed("the token stays in the address bar: %s" % dash.d.current_url)
    if dash.js("return sessionStorage.getItem('dm-serve-token')") != token:
        raise Failed("the token is not kept in sessionStorage")
    dash.wait_counts()
    dash.no_errors("first load")
    check_counts(dash, expect["entities"])
    dash.shot("entities")


def test_plan(dash, expect):
    dash.click("b-plan")
    dash.wait("the plan table", lambda: dash.js("return !!document.querySelector('#plan-table')"), RUN_S)
    rows = dash.js("""return Object.fromEntries([...document.querySelectorAll('#plan-table tr[data-entity]')].map(
        r => [r.dataset.entity, [...r.children].map(c => c.textContent)]))""")
    if sorted(rows) != sorted(expect["entities"]):
        raise Failed("the plan lists %s, expected the entities %s" % (sorted(rows), sorted(expect["entities"])))
    for ent, cells in rows.items():
        # Entity, Mode, Insert, Update, Delete, Only in destination, ...
        ins = fmt(expect.get("inserts", {}).get(ent, 0))
        only_dst = fmt(expect.get("deletes", {}).get(ent, 0))
        if cells[2] != ins or cells[4] != "0" or (cells[5] not in (only_dst, "–")):
            raise Failed("plan row %s reads insert %s, delete %s, only in destination %s; expected %s, 0, %s" % (
                ent, cells[2], cells[4], cells[5], ins, only_dst))
    dash.no_errors("after the plan")
    dash.shot("plan")
    dash.click("b-plan-close")
    print("# plan: inserts %s, no delete" % expect.get("inserts", {}))


def test_run(dash, expect):
    before = len(dash.js("return [...document.querySelectorAll('#history g.hrun')]"))
    old = dash.run_id()
    dash.click("b-run")
    rid = dash.wait("a new run in the run panel", lambda: dash.run_id() != old and dash.run_id(), LOAD_S)
    seen_running = dash.run_state() == "running"
    if seen_running:
        dash.shot("run-started")
    state = dash.wait_run_end(rid, "run-live")
    if state != "succeeded":
        raise Failed("run %s ended %s (page errors: %s)" % (rid, state, dash.errors()))
    rows = dash.run_rows()
    if sorted(e for e, _ in rows) != sorted(expect["entities"]):
        raise Failed("run %s lists entities %s, expected %s" % (rid, sorted(e for e, _ in rows), sorted(expect["entities"])))
    bad = [(e, s) for e, s in rows if s != "ok"]
    if bad:
        raise Failed("run %s succeeded but entities are not ok: %s" % (rid, bad))
    dash.wait("the history chart to show run %s" % rid,
              lambda: len(dash.js("return [...document.querySelectorAll('#history g.hrun')]")) > before
              or dash.js("return !!document.querySelector('#history g.hrun[data-run=\"' + arguments[0] + '\"]')", rid), LOAD_S)
    dash.no_errors("after the run")
    dash.shot("run-done")
    print("# run %s: %s live, then succeeded with %d entities ok" % (rid, "seen running" if seen_running else "finished at once", len(rows)))


def test_run_with_deletes(dash, expect):
    dash.click("b-rundel")
    dash.wait("the delete confirmation", lambda: dash.js("return document.getElementById('confirm').open"), RUN_S)
    shown = dash.js("""return Object.fromEntries([...document.querySelectorAll('#confirm-body tr[data-entity]')].map(
        r => [r.dataset.entity, r.children[1].textContent]))""")
    want = {e: fmt(n) for e, n in expect.get("deletes", {}).items() if n}
    if shown != want:
        raise Failed("the confirmation shows deletes %s, psql expects %s" % (shown, want))
    dash.shot("confirm-deletes")
    old = dash.run_id()
    dash.d.find_element(By.ID, "confirm-yes").click()
    rid = dash.wait("the run with deletes in the run panel", lambda: dash.run_id() != old and dash.run_id(), LOAD_S)
    state = dash.wait_run_end(rid)
    if state != "succeeded":
        raise Failed("run with deletes %s ended %s" % (rid, state))
    dash.refresh_counts()
    check_counts(dash, expect["entities"], after_sync=True)
    gaps = [(n["entity"], n["gap"]) for n in dash.nodes() if n["gap"] != "in sync"]
    if gaps:
        raise Failed("after the run with deletes, entities still show gaps: %s" % gaps)
    dash.no_errors("after the run with deletes")
    dash.shot("in-sync")
    print("# run with deletes %s: confirmation showed %s, then every entity in sync" % (rid, want or "no deletes"))


def test_cancel(dash, psql, dsn, table):
    # A session holding the lock stalls the run at TABLE; psql says 'locked' once held.
    lock = subprocess.Popen([psql, "-X", "-qAt", "-v", "ON_ERROR_STOP=1", "-d", dsn],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        lock.stdin.write("BEGIN;\nLOCK TABLE %s IN ACCESS EXCLUSIVE MODE;\nSELECT 'locked';\n" % table)
        lock.stdin.flush()
        line = lock.stdout.readline().strip()
        if line != "locked":
            raise Failed("could not lock %s for the cancel test (psql said %r)" % (table, line))
        old = dash.run_id()
        dash.click("b-run")
        rid = dash.wait("a new run in the run panel", lambda: dash.run_id() != old and dash.run_id(), LOAD_S)
        # The lock holds the run (dm-migrate's first look at the table already waits
        # for it): running it stays until cancelled.
        dash.wait("run %s to be running" % rid, lambda: dash.run_id() == rid and dash.run_state() == "running", LOAD_S)
        dash.shot("cancel-before")
        dash.click("b-cancel")
        state = dash.wait_run_end(rid)
        if state != "cancelled":
            raise Failed("run %s ended %s after Cancel, expected cancelled" % (rid, state))
        if not dash.js("return document.getElementById('b-run').disabled === false"):
            raise Failed("after the cancel, the Run button stays disabled")
        dash.shot("cancelled")
        print("# cancel: run %s stalled on %s, cancelled from the page" % (rid, table))
    finally:
        try:
            lock.stdin.write("ROLLBACK;\n")
            lock.stdin.close()
        except OSError:
            pass
        lock.wait(timeout=60)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", required=True)
    ap.add_argument("--token", required=True)
    ap.add_argument("--expect", required=True, help="JSON file of psql counts")
    ap.add_argument("--lock-dsn")
    ap.add_argument("--lock-table")
    ap.add_argument("--psql", default="psql")
    ap.add_argument("--chromedriver", default="/usr/bin/chromedriver")
    ap.add_argument("--chromium", default=None)
    ap.add_argument("shots")
    args = ap.parse_args()
    with open(args.expect) as f:
        expect = json.load(f)
    os.makedirs(args.shots, exist_ok=True)
    url = args.url.rstrip("/")
    dash = Dash(args)
    try:
        test_no_token(dash, url)
        test_counts(dash, url, args.token, expect)
        test_plan(dash, expect)
        test_run(dash, expect)
        test_run_with_deletes(dash, expect)
        if args.lock_dsn and args.lock_table:
            test_cancel(dash, args.psql, args.lock_dsn, args.lock_table)
        # Script errors only: the refused token of test_no_token logs its 401 too.
        logs = [e for e in dash.d.get_log("browser") if e.get("level") == "SEVERE"
                and "Failed to load resource" not in e.get("message", "")]
        if logs:
            msgs = sorted(set(e["message"] for e in logs))
            raise Failed("the browser console has %d errors: %s" % (len(logs), msgs[:3]))
        print("# dashboard: all checks passed")
        return 0
    except (Failed, WebDriverException) as e:
        if isinstance(e, WebDriverException):
            e = Failed("the browser failed: %s" % str(e).split("\n")[0])
        try:
            dash.shot("FAILED")
        except WebDriverException:
            pass
        sys.stderr.write("dashboard.py: %s\n" % e)
        return 1
    finally:
        dash.d.quit()


if __name__ == "__main__":
    sys.exit(main())
