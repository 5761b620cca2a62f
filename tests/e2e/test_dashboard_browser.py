"""The web dashboard at `/`, driven as a person drives it, in headless Chromium against a live
server with the tiny model: key prompt → upload a file with a bad line (the validation report
lists the line, its token statistics and the trained-token preview) → upload good files → the
estimate shows what `auto` picks and how long it takes before launch → launch a job → the loss
curve gains points while the job runs (SSE) → export the GGUF and download it → the verdict
table → the playground streams answers from base and tuned → the queue lists it.
No response is a 5xx and the browser logs no console error.

Needs Debian packages `chromium` and `chromium-driver` plus the `selenium` Python package;
skips with that reason when they are missing. Screenshots of each page go to the test's temp
dir, and also to $TUNESMITH_DASHBOARD_SHOTS when that is set.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from live import Live
from train_helpers import write_chat

from browser import chromium, needs_browser

pytestmark = pytest.mark.filterwarnings("ignore")

BUDGET_S = 150.0  # the whole browser flow, training and an export included


@pytest.fixture
def browser():
    with chromium("1280,1400", logs=True) as driver:
        yield driver


class Shots:
    def __init__(self, driver, *dirs: Path) -> None:
        self.driver, self.dirs = driver, [d for d in dirs if d]
        for d in self.dirs:
            d.mkdir(parents=True, exist_ok=True)

    def __call__(self, name: str) -> None:
        for d in self.dirs:
            self.driver.save_screenshot(str(d / f"{name}.png"))


PAGE = {"driver": None}


def _until(fn, what: str, deadline: float, every: float = 0.1):
    while time.monotonic() < deadline:
        try:
            value = fn()
        except Exception:  # an element re-rendered under us: look again
            value = None
        if value:
            return value
        time.sleep(every)
    driver = PAGE["driver"]
    page = driver.find_element("tag name", "body").text if driver else ""
    raise AssertionError(f"timed out waiting for {what}; the page says:\n{page}")


def test_dashboard_is_served_from_the_package_without_a_key(tmp_path: Path) -> None:
    """Where no browser runs: `/` is the page (under a strict CSP) and its assets come from
    the package; serving them needs no key, while the API behind them still does."""
    from fastapi.testclient import TestClient

    from tunesmith.server import create_app
    from tunesmith.service import ServerSettings

    app = create_app(ServerSettings(home=tmp_path / "home", api_keys="p:k"))
    with TestClient(app) as client:
        page = client.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "connect-src 'self'" in csp
        assert 'src="/dashboard/app.js"' in page.text and "https://" not in page.text
        for asset, kind in (("app.js", "javascript"), ("app.css", "text/css")):
            got = client.get(f"/dashboard/{asset}")
            assert got.status_code == 200 and kind in got.headers["content-type"], asset
            text = got.text.replace("http://www.w3.org/2000/svg", "")  # a namespace, not a URL
            assert "https://" not in text and "http://" not in text  # offline: no CDN
        assert client.get("/dashboard/../app.py").status_code == 404
        assert client.get("/v1/models").status_code == 401


@needs_browser
def test_dashboard_from_upload_to_playground(
    live: Live, worker_thread, browser, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    deadline = time.monotonic() + BUDGET_S
    PAGE["driver"] = browser
    extra = os.environ.get("TUNESMITH_DASHBOARD_SHOTS")
    shot = Shots(browser, tmp_path / "shots", Path(extra) if extra else None)
    find = browser.find_element
    text_of = lambda css: find(By.CSS_SELECTOR, css).text  # noqa: E731

    bad = tmp_path / "bad <b>name<b>.jsonl"
    good_row = {
        "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}]
    }
    bad.write_text(
        json.dumps(good_row)
        + "\n"
        + json.dumps({"messages": [{"role": "robot", "content": "<img src=x onerror=alert(1)>"}]})
        + "\n"
        + json.dumps(good_row)
        + "\n"
    )
    train = write_chat(tmp_path / "train.jsonl", 32)
    deadline_upload = time.monotonic() + 20
    val = write_chat(tmp_path / "val.jsonl", 10, seed=1)

    # the page asks for the key first; nothing is called without it
    browser.get(live.url + "/")
    key = _until(lambda: (k := find(By.ID, "key-input")).is_displayed() and k, "key", deadline)
    shot("0-key-prompt")
    key.send_keys("key-a")
    find(By.ID, "key-save").click()
    upload = _until(lambda: find(By.ID, "file-input"), "files page", deadline)
    assert browser.execute_script("return sessionStorage.getItem('tunesmith.key')") == "key-a"

    # a file with a bad line: the line, field and reason are shown, the name as text
    upload.send_keys(str(bad))
    _until(lambda: find(By.CSS_SELECTOR, "#problems tbody tr"), "the bad line", deadline)
    cells = [
        c.text for c in find(By.CSS_SELECTOR, "#problems tbody tr").find_elements(By.TAG_NAME, "td")
    ]
    assert cells[0] == "2" and "role" in cells[1] + cells[2], cells
    assert cells[3] == "unknown_role" and "roles are" in cells[2]  # the code and the hint
    assert "bad <b>name<b>.jsonl" in text_of("#report-title")
    assert "bad <b>name<b>.jsonl" in text_of("#problems caption")
    assert "3 read" in text_of("#report-facts") and "1 rejected" in text_of("#report-facts")
    # the base model's tokenizer: token statistics and the trained tokens of the good first row
    _until(lambda: find(By.CSS_SELECTOR, "#token-stats tbody tr"), "token statistics", deadline)
    assert "trained" in text_of("#token-stats") and "total" in text_of("#token-stats")
    marks = _until(
        lambda: find(By.ID, "preview").find_elements(By.CSS_SELECTOR, "mark.trained"),
        "the trained-token preview",
        deadline,
    )
    assert [m.text for m in marks] == ["ok<|im_end|>"], [m.text for m in marks]
    assert "line 1" in text_of("#preview figcaption")
    assert (
        browser.execute_script("return document.querySelectorAll('main b, main img').length") == 0
    )
    shot("1-files-bad-line")
    browser.execute_script("document.getElementById('token-slot').scrollIntoView()")
    shot("1b-files-tokens-preview")
    browser.execute_script("window.scrollTo(0, 0)")

    # good files: processed
    for path in (train, val):
        find(By.ID, "file-input").send_keys(str(path))
        _until(
            lambda p=path: (
                p.name in text_of("#report-title") and "processed" in text_of("#file-report")
            ),
            f"{path.name} processed",
            deadline_upload,
        )
    shot("2-files-processed")

    # new job: model, files, method, hyperparameters
    browser.get(live.url + "/#/new")
    _until(lambda: find(By.ID, "job-model").text, "new-job form", deadline)
    Select(find(By.ID, "job-model")).select_by_value("tiny")
    by_name = lambda sel, name: next(  # noqa: E731
        o for o in Select(find(By.ID, sel)).options if o.text.startswith(name + " ")
    )
    by_name("job-train", "train.jsonl").click()
    by_name("job-val", "val.jsonl").click()
    epochs = find(By.ID, "hp-n_epochs")
    assert epochs.get_attribute("value") == "auto" and "auto" in text_of("#hp-n_epochs-help")

    # before launch: what auto picks, why, and how long it takes — for the files chosen above
    train_id = Select(find(By.ID, "job-train")).first_selected_option.get_attribute("value")
    val_id = Select(find(By.ID, "job-val")).first_selected_option.get_attribute("value")

    def estimate(epochs: str) -> dict | None:
        """The shown estimate's table rows once it answers this form (one script: the
        estimate is redrawn whenever the form changes)."""
        got = browser.execute_script(
            "const b = document.getElementById('estimate');"
            "const rows = {};"
            "for (const r of b.querySelectorAll('#estimate-hyper tbody tr'))"
            "  rows[r.dataset.key] = r.innerText;"
            "return {state: b.dataset.state, for: b.dataset.for || '{}', rows,"
            "        time: (document.getElementById('estimate-time') || {}).innerText,"
            "        text: b.innerText};"
        )
        assert got["state"] != "error", got["text"]
        asked = json.loads(got["for"])
        hyper = asked.get("method", {}).get("supervised", {}).get("hyperparameters", {})
        answers = (
            asked.get("training_file") == train_id
            and asked.get("validation_file") == val_id
            and str(hyper.get("n_epochs")) == epochs
        )
        return got if got["state"] == "ready" and answers else None

    shown = _until(lambda: estimate("auto"), "the estimate", deadline)
    assert "min" in shown["time"], shown
    rows = shown["rows"]
    assert "auto" in rows["epochs"] and "the server" in rows["grad_accum"], rows  # job_defaults
    assert "auto now:" in text_of("#hp-n_epochs-help")
    epochs.clear()
    # 3 epochs: the tiny model's job must last long enough for the curve to be seen growing
    # (1 epoch with 6 in-run validations ends within a poll or two)
    epochs.send_keys("3")
    shown = _until(lambda: estimate("3"), "the estimate with 3 epochs", deadline)
    assert "you" in shown["rows"]["epochs"] and "\t3\t" in shown["rows"]["epochs"], shown["rows"]
    find(By.ID, "job-suffix").send_keys("dash")
    shot("3-new-job")
    browser.execute_script("document.getElementById('estimate').scrollIntoView()")
    shot("3b-new-job-estimate")
    worker_thread()
    find(By.ID, "job-submit").click()
    _until(lambda: "#/jobs/ftjob" in browser.current_url, "the job page", deadline)
    job_id = browser.current_url.rsplit("/", 1)[-1]

    # the loss curve gains points while the job runs (metrics events over SSE)
    def points() -> int:  # read in one script: the chart is redrawn as events arrive
        return int(
            browser.execute_script(
                "const c = document.getElementById('chart-loss');return c ? c.dataset.points : 0"
            )
        )

    seen: set[int] = set()
    shot_running = False
    while True:
        status = browser.execute_script(
            "const f = document.getElementById('job-facts'); return f && f.dataset.status"
        )
        n = points()
        if n:
            seen.add(n)
        if len(seen) >= 2 and not shot_running:
            shot("4-job-running")
            shot_running = True
        if status in ("succeeded", "failed", "cancelled"):
            break
        assert time.monotonic() < deadline, f"job still {status} at the deadline"
        time.sleep(0.1)
    assert status == "succeeded", text_of("#job-head")
    assert len(seen) >= 2, f"the curve never grew while the job ran: {sorted(seen)}"
    _until(lambda: find(By.CSS_SELECTOR, "#checkpoints tbody td.num"), "checkpoints", deadline)
    assert "train_loss" in text_of("#checkpoints")
    assert find(By.ID, "job-cancel").get_attribute("disabled") is not None  # terminal: no cancel
    # the worker says "completed" just after the status changes: the stream may bring it a
    # moment after the page has seen the status
    _until(lambda: "completed" in text_of("#events"), "the completed event", deadline)
    assert "Checkpoint created" in text_of("#events")
    shot("5-job-done")

    # export: the GGUF is built in the background, then downloaded (the key as a header)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    browser.execute_cdp_cmd(
        "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
    )
    assert find(By.ID, "export-hf-start").is_displayed()
    find(By.ID, "export-gguf-start").click()
    _until(lambda: find(By.ID, "export-gguf-download"), "the GGUF export", deadline, every=0.3)
    find(By.ID, "export-gguf-download").click()
    got = _until(
        lambda: [p for p in downloads.iterdir() if p.suffix == ".gguf"], "the download", deadline
    )
    assert got[0].read_bytes()[:4] == b"GGUF" and job_id in got[0].name
    assert find(By.ID, "export-gguf-modelfile").is_displayed()
    assert "ollama create" in text_of("#export-gguf")
    shot("5b-job-export")

    # the verdict: base vs tuned with intervals and significance
    find(By.CSS_SELECTOR, "nav.tabs a[href$='/verdict']").click()
    rows = _until(
        lambda: find(By.ID, "verdict-table").find_elements(By.CSS_SELECTOR, "tbody tr"),
        "the verdict table",
        deadline,
    )
    assert rows and "(main)" in text_of("#verdict-table")
    assert "95% CI" in text_of("#verdict-table thead")
    assert text_of("#verdict")
    shot("6-verdict")

    # the playground streams answers from base and tuned side by side
    find(By.CSS_SELECTOR, "nav.tabs a[href^='#/playground/']").click()
    prompt = _until(lambda: find(By.ID, "pg-prompt"), "the playground", deadline)
    assert Select(find(By.ID, "pg-model-base")).first_selected_option.text == "tiny"
    tuned = Select(find(By.ID, "pg-model-tuned")).first_selected_option.text
    assert tuned == f"ft:tiny:dash:{job_id}"
    prompt.send_keys("Classify: refund please")
    find(By.ID, "pg-max").clear()
    find(By.ID, "pg-max").send_keys("8")
    find(By.ID, "pg-send").click()
    for slot in ("base", "tuned", "ckpt"):
        _until(
            lambda s=slot: find(By.ID, f"pg-out-{s}").get_attribute("data-done") == "1",
            f"the {slot} answer",
            deadline,
        )
    info = {s: text_of(f"#pg-info-{s}") for s in ("base", "tuned", "ckpt")}
    for slot in ("base", "tuned"):  # each answered: chunks streamed and a finish reason
        assert "finish: stop" in info[slot] or "finish: length" in info[slot], info
    shot("7-playground")

    # the queue lists the job; the filter hides it under another status
    browser.get(live.url + "/#/queue")
    _until(lambda: job_id in text_of("#queue"), "the queue", deadline)
    _until(lambda: "valid_loss" in text_of("#queue"), "the job's main metric", deadline)
    Select(find(By.ID, "queue-filter")).select_by_value("failed")
    assert job_id not in text_of("#queue")
    Select(find(By.ID, "queue-filter")).select_by_value("succeeded")
    assert job_id in text_of("#queue")
    shot("8-queue")

    # a phone-sized window still shows the job page
    browser.set_window_size(390, 1400)
    browser.get(live.url + f"/#/jobs/{job_id}")
    _until(lambda: points() > 0, "the job page on a phone", deadline)
    shot("9-job-phone")

    statuses = []
    for entry in browser.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.responseReceived":
            response = message["params"]["response"]
            statuses.append((response["status"], response["url"]))
    assert statuses and not [s for s in statuses if s[0] >= 500], statuses
    assert not any("key-a" in url for _, url in statuses)  # the key never travels in a URL
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors
