"""The HTML report as a person sees it: opened in headless Chromium, the rendered page must
show the verdict, the base-vs-tuned table and the plots (images decoded, not broken).

Needs Debian packages `chromium` and `chromium-driver` plus the `selenium` Python package;
skips with that reason when they are missing.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from browser import chromium, needs_browser

sys.path.insert(0, str(Path(__file__).parents[1] / "unit" / "eval"))  # sample_comparison

pytestmark = needs_browser


@pytest.fixture
def browser():
    with chromium("1280,2000") as driver:
        yield driver


def test_rendered_report_shows_plots_table_and_samples(browser, tmp_path) -> None:
    from sample_comparison import make_comparison
    from selenium.webdriver.common.by import By

    from tunesmith.eval.report import write_reports

    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text(
        "\n".join(f'{{"step": {s}, "loss": {2.0 / s}}}' for s in range(1, 30))
    )
    html = write_reports(make_comparison(run), tmp_path / "eval")["html"]
    browser.get(html.resolve().as_uri())

    verdict = browser.find_element(By.ID, "verdict")
    assert verdict.is_displayed()
    assert "significantly better" in verdict.text

    table = browser.find_element(By.ID, "metrics-table")
    assert table.is_displayed()
    rows = table.find_elements(By.CSS_SELECTOR, "tbody tr")
    cells = [r.find_elements(By.TAG_NAME, "td") for r in rows]
    by_metric = {c[0].text: [x.text for x in c] for c in cells}
    assert by_metric["json_match (main)"][1:4] == ["10.0%", "93.3%", "+83.3 pts"]
    assert "better" in by_metric["json_match (main)"][5]

    for ident in ("plot-bars", "plot-diffs", "plot-loss"):
        img = browser.find_element(By.ID, ident)
        assert img.is_displayed(), ident
        # naturalWidth > 0 only when the browser actually decoded the inline PNG.
        width = browser.execute_script(
            "return arguments[0].complete && arguments[0].naturalWidth", img
        )
        assert width and width > 100, ident
        assert img.size["height"] > 50, ident

    # Untrusted model output is shown as text, never executed or rendered as markup.
    assert browser.execute_script("return document.querySelectorAll('table b').length") == 0
    regressions = browser.find_element(By.ID, "regressions").text
    assert "not json" in regressions
    wins = browser.find_element(By.ID, "wins").text
    assert "<script>alert(3)</script>" in wins
