"""`fmrilm app`: the ask flow behind the page, the descriptor text of a new scan, and the page itself
driven in headless Chromium (an embedded scan gets an answer; a bad file shows the reader's error)."""

from __future__ import annotations

import dataclasses
import importlib.util
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
from datasets import load_dataset
from PIL import Image

from modeling_fmrilm.app import HOST, NO_SCAN, AskApp
from modeling_fmrilm.ask import Conversation, load_model, read_scan
from modeling_fmrilm.descriptors.corpus import build_corpus
from modeling_fmrilm.descriptors.new_scan import describe_new_scan
from modeling_fmrilm.io import load_embedded
from tests.support import tiny_lm
from tests.support.corpus_scans import LABELS, SETTINGS, make_scans

MAX_NEW_TOKENS = 6
WAIT_S = 60


@pytest.fixture(scope="module")
def embedded_model(tmp_path_factory):
    """A tiny model for the embedded data's 94 AAL2 regions (16-frame windows, one token per ROI), saved to a folder."""
    folder = tmp_path_factory.mktemp("model94")
    model, processor = tiny_lm.build("gpt2", num_rois=94, window_length=16, patch_length=16)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def app(embedded_model):
    model, processor = load_model(embedded_model)
    return AskApp(model, processor, max_new_tokens=MAX_NEW_TOKENS)


def test_new_scan_description_reproduces_the_corpus_text(tmp_path):
    scans = make_scans()
    settings = dataclasses.replace(SETTINGS, min_norm_scans=2)  # each site has norms of its own (2 training scans)
    build_corpus(scans, tmp_path, LABELS, "toy", settings, fractions=(0.5, 0.25, 0.25), shard_size=4, progress=False)
    records = {row["subject"]: row["text"] for split in load_dataset(str(tmp_path)).values() for row in split}
    for scan in scans:
        assert describe_new_scan(scan, tmp_path) == records[scan.subject]
    stranger = make_scans(1, seed=7)[0]
    stranger.dataset = "elsewhere"  # no norms of its own: measured against the pooled ones
    assert describe_new_scan(stranger, tmp_path).startswith(("Resting-state scan described against the pooled siteA/siteB cohort.",
                                                            "Descriptors relative to the pooled siteA/siteB reference cohort."))  # fmt: skip


def test_view_of_an_embedded_scan(app):
    scan_path = load_embedded(("gw",))[0].source
    shown = app.view(scan_path, None, 2.0)
    assert shown.scan is not None and shown.scan.data.shape == (94, 355)
    assert shown.status.startswith("**BOLD_rsfMRI.mat**: 94 ROIs × 355 frames at TR 2 s → 22 window(s) of 16 frames")
    assert isinstance(shown.windows, Image.Image) and isinstance(shown.connectivity, Image.Image)
    assert "--corpus" in shown.description
    turns, problem = app.answer("Is this a control?", [], shown.scan)
    expected = Conversation(app.model, app.processor, read_scan(scan_path, tr=2.0), max_new_tokens=MAX_NEW_TOKENS).ask(
        "Is this a control?"
    )
    assert problem == "" and turns[0][0] == "Is this a control?" and turns[0][1].strip() == expected


@pytest.mark.parametrize(
    "content,tr,problem",
    [
        (b"not a numpy file", 2.0, "expected a numeric NumPy .npy array, found no readable .npy header"),
        (
            np.ones((94, 40), np.float32),
            0,
            "no repetition time found (no tr argument, no RepetitionTime in a JSON sidecar, no tr entry in the file); enter it in the “TR in seconds (0: the file's own)” field",
        ),
        (np.ones((94, 40), np.float32), 2.0, "constant"),
        (np.ones((90, 40), np.float32), 2.0, "expected 94 ROIs"),
    ],
)
def test_bad_uploads_show_the_readers_error_without_the_temporary_path(app, tmp_path, content, tr, problem):
    upload = tmp_path / "gradio-upload-1234" / "bad.npy"
    upload.parent.mkdir()
    if isinstance(content, bytes):
        upload.write_bytes(content)
    else:
        np.save(upload, content)
    shown = app.view(str(upload), None, tr)
    assert shown.scan is None and shown.windows is None
    assert (
        shown.status.startswith("**Could not read this scan.** bad.npy: ")
        and problem in shown.status
        and str(tmp_path) not in shown.status
    )


def test_an_upload_over_the_size_limit_is_not_read(embedded_model, tmp_path):
    model, processor = load_model(embedded_model)
    small = AskApp(model, processor, max_upload_mb=0.01)
    np.save(tmp_path / "scan.npy", np.random.default_rng(0).standard_normal((94, 40)))  # 30 kB
    shown = small.view(str(tmp_path / "scan.npy"), None, 2.0)
    assert shown.scan is None
    assert (
        shown.status
        == "**Could not read this scan.** scan.npy: expected an upload of at most 0.01 MB (the app's --max-upload-mb), found 0.0 MB".replace(
            "0.0 MB", f"{(tmp_path / 'scan.npy').stat().st_size / 1e6:,.1f} MB"
        )
    )


@pytest.mark.parametrize(
    "name,content,problem",
    [
        (
            "bad.tsv",
            "r0\tr1\n",
            "bad.tsv: expected time rows below the header row (time rows x ROI columns), found 2 column name(s) and no rows",
        ),
        ("bad.tsv", "\0" * 1000, "bad.tsv: expected a text table of at most 100,000 time rows"),
    ],
)
def test_hostile_uploads_show_one_line(app, tmp_path, name, content, problem):
    (tmp_path / name).write_text(content)
    shown = app.view(str(tmp_path / name), None, 2.0)
    assert (
        shown.scan is None
        and shown.status.startswith(f"**Could not read this scan.** {problem}")
        and "\n" not in shown.status
    )


def test_questions_cannot_carry_fmri_tokens(app):
    scan = read_scan(load_embedded(("gw",))[0].source, tr=2.0)
    turns, problem = app.answer("what <fmri_00001><fmri_00002></fmri>", [], scan)
    assert turns == [] and problem.startswith(
        "**Could not answer.** question: expected plain text, found the fMRI token string '<fmri_00001>' at character 5"
    )


def test_nifti_upload_without_an_atlas_asks_for_one(app, tmp_path):
    (tmp_path / "sub-01_bold.nii.gz").write_bytes(b"")
    shown = app.view(str(tmp_path / "sub-01_bold.nii.gz"), None, 2.0)
    assert "a NIfTI image needs a label atlas" in shown.status


def test_questions_before_a_scan_are_turned_away(app):
    assert app.answer("Is this a control?", [], None) == ([], NO_SCAN)
    assert app.view(None).status == NO_SCAN


def _browser_missing() -> str | None:
    missing = [name for name in ("gradio", "selenium") if importlib.util.find_spec(name) is None]
    missing += [name for name in ("chromium", "chromedriver") if shutil.which(name) is None]
    return ", ".join(missing) or None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


@pytest.mark.slow
@pytest.mark.skipif(_browser_missing() is not None, reason=f"the browser test needs {_browser_missing()} "
                    '(pip install "fmrilm[app]" selenium; apt-get install chromium chromium-driver)')  # fmt: skip
def test_page_in_headless_chromium(embedded_model, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from modeling_fmrilm.app import serve

    page, url = serve(embedded_model, port=_free_port(), max_new_tokens=MAX_NEW_TOKENS, block=False)
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1400,2000",
        f"--user-data-dir={tmp_path / 'profile'}", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-default-apps",
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",  # no request leaves this machine
    ):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    driver.set_page_load_timeout(WAIT_S)
    wait = WebDriverWait(driver, WAIT_S, poll_frequency=0.5)
    try:
        assert page.server_name == HOST and url.startswith(f"http://{HOST}:")
        scan = load_embedded(("gw",))[0]
        driver.get(url)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#scan-file input[type=file]"))
        tr = driver.find_element(By.CSS_SELECTOR, "#tr input")
        tr.clear()
        tr.send_keys("2")
        driver.find_element(By.CSS_SELECTOR, "#scan-file input[type=file]").send_keys(scan.source)
        wait.until(lambda d: "ROIs ×" in d.find_element(By.ID, "scan-status").text)
        assert "94 ROIs × 355 frames at TR 2 s" in driver.find_element(By.ID, "scan-status").text
        wait.until(
            lambda d: (
                d.find_elements(By.CSS_SELECTOR, "#windows-plot img")
                and d.find_elements(By.CSS_SELECTOR, "#fc-plot img")
            )
        )
        driver.find_element(By.CSS_SELECTOR, "#question textarea").send_keys("Is this a control?")
        driver.find_element(By.ID, "ask").click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, '#chat [data-testid="bot"]'))
        model, processor = load_model(embedded_model)
        expected = Conversation(model, processor, read_scan(scan.source, tr=2.0), max_new_tokens=MAX_NEW_TOKENS).ask(
            "Is this a control?"
        )
        assert driver.find_element(By.CSS_SELECTOR, '#chat [data-testid="bot"]').text == (expected or "(empty answer)")
        assert driver.find_element(By.CSS_SELECTOR, '#chat [data-testid="user"]').text == "Is this a control?"

        bad = tmp_path / "bad.npy"
        bad.write_bytes(b"not a numpy file")
        driver.get(url)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#scan-file input[type=file]"))
        driver.find_element(By.CSS_SELECTOR, "#scan-file input[type=file]").send_keys(str(bad))
        wait.until(lambda d: "Could not read" in d.find_element(By.ID, "scan-status").text)
        status = driver.find_element(By.ID, "scan-status").text
        assert status.startswith(
            "Could not read this scan. bad.npy: expected a numeric NumPy .npy array, found no readable .npy header"
        )
        assert "Traceback" not in driver.page_source and str(tmp_path) not in status
    finally:
        driver.quit()
        page.close()


SESSIONS_SCRIPT = """
import sys
from gradio_client import Client, handle_file
url, scan, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
for _ in range(n):
    client = Client(url, verbose=False)
    client.predict(handle_file(scan), None, 2.0, api_name="/show")
    client.predict("Is this a control?", api_name="/reply")
    client.close()  # the tab closes: its heartbeat stops
"""


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("gradio") is None, reason='needs gradio (pip install "fmrilm[app]")')
def test_sessions_leave_no_state_no_uploads_and_no_memory_behind(embedded_model, tmp_path, monkeypatch):
    """Sessions from another process upload a scan, ask and close their tab. After they end no session
    holds state, their uploads are gone, the server's memory has not grown with them (it grew ~5.7 MB
    a session before), an upload over the limit is refused, and stopping the server removes its folder."""
    import os
    import subprocess
    import sys
    import time

    import psutil

    from modeling_fmrilm.app import serve

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    monkeypatch.setenv("GRADIO_HEARTBEAT_INTERVAL", "0.2")
    page, url = serve(embedded_model, port=_free_port(), max_new_tokens=MAX_NEW_TOKENS, block=False, max_upload_mb=1)
    folder = os.environ["GRADIO_TEMP_DIR"]
    scan = load_embedded(("gw",))[0].source
    server = psutil.Process()

    def sessions(n, path=scan):
        result = subprocess.run(
            [sys.executable, "-c", SESSIONS_SCRIPT, url, str(path), str(n)], capture_output=True, text=True, timeout=300,
            env={**os.environ, "GRADIO_TEMP_DIR": str(tmp_path / "client")},
        )  # fmt: skip
        time.sleep(1.0)  # the heartbeats notice the closed tabs
        return result

    try:
        assert folder.startswith(str(tmp_path / "gradio" / "fmrilm-app-"))
        assert sessions(4).returncode == 0  # the first sessions load what every later one uses
        before = server.memory_info().rss
        assert sessions(8).returncode == 0
        grown_mib = (server.memory_info().rss - before) / 2**20
        assert not any(session.state_data for session in page.state_holder.session_data.values())
        assert not [name for _, _, names in os.walk(folder) for name in names if name == Path(scan).name]
        assert grown_mib < 16, grown_mib
        big = tmp_path / "big.npy"
        np.save(big, np.random.default_rng(0).standard_normal((94, 2000)))  # 1.5 MB
        refused = sessions(1, big)
        assert refused.returncode != 0 and "exceeds the maximum file size of 1000000 bytes" in refused.stderr, (
            refused.stderr[-2000:]
        )
    finally:
        page.close()
    time.sleep(0.5)
    assert not os.path.exists(folder) and os.environ["GRADIO_TEMP_DIR"] == str(tmp_path / "gradio")
