"""The browser console in headless Chromium (Debian's chromium + chromium-driver, driven by Selenium) against a
real uvicorn, real Redis and a real worker with the real small models. Chromium's fake microphone plays a WAV of
the question spoken by the worker's Piper voice: the page signs in, talks over /v1/realtime, shows the partial
and final transcript and the cited answer, plays the answer's audio, and lists the turn among the
consultation's earlier turns. A screenshot is kept (the test's tmp dir, and $MEDVOICE_TEST_ARTIFACTS if set)."""

from __future__ import annotations

import io
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from tests.consultation.conftest import PASSWORD
from workers.core.db import session_scope
from workers.core.records import Turn

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (the dev extra has it)")
from selenium.common.exceptions import TimeoutException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

pytestmark = pytest.mark.slow
QUESTION = "How should an adult with a middle ear infection be treated, and for how many days?"
WAV_RATE = 48000  # what Chromium's fake capture device runs at: the file needs no resampling there
# Chromium loops the file: the silence after the question outlasts the answer, so the question is asked once.
TRAILING_SILENCE_S = 240
WAIT_S = 360  # generous: the pipeline shares two CPU cores with the rest of the suite


def _binaries() -> tuple[str, str]:
    chrome = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    if not chrome or not driver:
        pytest.skip(
            "headless Chromium is not installed (needs `chromium` and `chromedriver`): "
            "`make system-deps` installs Debian's chromium and chromium-driver when run as root"
        )
    return chrome, driver


@pytest.fixture(scope="module")
def question_wav(speech, knowledge, tmp_path_factory) -> Path:
    """The question in the worker's Piper voice, as 48 kHz mono PCM16, with silence before and a long one after."""
    samples, rate = sf.read(io.BytesIO(speech(QUESTION)), dtype="float32")
    voice = soxr.resample(samples, rate, WAV_RATE)
    audio = np.concatenate([np.zeros(WAV_RATE), voice, np.zeros(WAV_RATE * TRAILING_SILENCE_S)])
    path = tmp_path_factory.mktemp("browser") / "question.wav"
    sf.write(path, audio, WAV_RATE, subtype="PCM_16")
    return path


@pytest.fixture
def browser(question_wav, tmp_path):
    chrome, driver_path = _binaries()
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chrome
    for arg in (
        "--headless=new",
        "--no-sandbox",  # root in CI containers
        "--disable-dev-shm-usage",
        "--window-size=1100,1400",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--use-fake-ui-for-media-stream",  # grants the microphone as a clinician's click would
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={question_wav}",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _keep(driver, tmp_path: Path, name: str) -> Path:
    shot = tmp_path / name
    driver.save_screenshot(str(shot))
    artifacts = os.environ.get("MEDVOICE_TEST_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(artifacts) / name)
    return shot


def _logs(driver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser")]


class Page:
    """The console in the browser: waits that report the page's state and console when they time out."""

    def __init__(self, driver, tmp_path: Path) -> None:
        self.driver, self.tmp_path = driver, tmp_path
        self.console: list[str] = []

    def wait(self, what: str, predicate, timeout: float = WAIT_S, poll: float = 0.5):
        def check(d):
            self.console.extend(_logs(d))
            return predicate(d)

        try:
            return WebDriverWait(self.driver, timeout, poll_frequency=poll).until(check)
        except TimeoutException:
            _keep(self.driver, self.tmp_path, "console-failed.png")
            state = self.driver.find_element(By.TAG_NAME, "body").get_attribute("data-state")
            error = self.driver.find_element(By.ID, "error").text
            raise AssertionError(
                f"waiting for {what}: page state {state!r}, error {error!r}, console {self.console}"
            ) from None

    def sign_in(self, server: str, user: str) -> None:
        self.driver.get(f"http://{server}/console")
        assert self.driver.current_url.endswith("/console/")
        self.driver.find_element(By.ID, "username").send_keys(user)
        self.driver.find_element(By.ID, "password").send_keys(PASSWORD)
        self.driver.find_element(By.ID, "sign-in-button").click()
        self.wait("the signed-in workspace", lambda d: d.find_element(By.ID, "workspace").is_displayed())
        assert user in self.driver.find_element(By.ID, "who").text

    def no_console_errors(self) -> None:
        """Nothing the strict CSP refused, and no script error."""
        self.console.extend(_logs(self.driver))
        assert not [m for m in self.console if "Content Security Policy" in m or "Uncaught" in m], self.console


def _turn(settings, turn_id: str) -> Turn:
    with session_scope(settings.resolved_database_url) as db:
        turn = db.get(Turn, turn_id)
        assert turn is not None, turn_id
        db.expunge(turn)
        return turn


def test_the_console_signs_in_talks_and_shows_and_plays_the_cited_answer(
    browser, server, tokens, knowledge, settings, tmp_path
) -> None:
    driver = browser
    page = Page(driver, tmp_path)
    wait = page.wait
    page.sign_in(server, "ann")
    Select(driver.find_element(By.ID, "language")).select_by_value("en")

    driver.find_element(By.ID, "talk").click()
    wait("the live session", lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state") != "connecting")
    transcript = driver.find_element(By.ID, "transcript")
    wait("the final transcript", lambda d: transcript.get_attribute("data-final") == "true")
    heard = set(re.findall(r"[a-z]+", transcript.text.lower()))
    assert {"adult", "ear", "infection"} <= heard, transcript.text

    answer = driver.find_element(By.ID, "answer")
    wait("the answer", lambda d: answer.get_attribute("data-status") not in (None, "", "in_progress"))
    assert answer.get_attribute("data-status") == "completed", answer.text
    assert "amoxicillin" in answer.text.lower() and "[1]" in answer.text, answer.text
    cited = driver.find_elements(By.CSS_SELECTOR, "#citations li")
    assert cited and cited[0].get_attribute("data-n") == "1", [c.text for c in cited]
    assert "Otitis media in adults" in cited[0].text and "formulary" in cited[0].text, cited[0].text
    assert driver.find_element(By.ID, "disclaimer").text.strip()

    played = driver.find_element(By.ID, "played")
    wait("the answer's audio played", lambda d: float(played.get_attribute("data-played-seconds")) > 1.0)
    turn_id = answer.get_attribute("data-turn-id")
    row = f'#history li[data-turn-id="{turn_id}"]'
    wait("the turn among the earlier turns", lambda d: d.find_elements(By.CSS_SELECTOR, row))
    earlier = driver.find_element(By.CSS_SELECTOR, row).text.lower()
    assert "amoxicillin" in earlier and "infection" in earlier, earlier
    shot = _keep(driver, tmp_path, "console.png")
    assert shot.stat().st_size > 10_000

    # The page's capture made a real live turn, recorded like any other.
    turn = _turn(settings, turn_id)
    assert turn.status.value == "done" and turn.input_kind == "audio"
    assert turn.live and turn.live.get("session_id") and "amoxicillin" in (turn.answer or "").lower()
    page.no_console_errors()


def test_a_typed_question_is_answered_aloud_and_stop_silences_it_at_once(
    browser, server, tokens, knowledge, settings, tmp_path
) -> None:
    driver = browser
    page = Page(driver, tmp_path)
    page.sign_in(server, "ben")
    question = driver.find_element(By.ID, "question")
    question.send_keys("Which drug is given to patients allergic to penicillin?")
    question.submit()
    answer, played = driver.find_element(By.ID, "answer"), driver.find_element(By.ID, "played")
    page.wait("the answer's audio", lambda d: played.get_attribute("data-playing") == "true", poll=0.05)
    turn_id = answer.get_attribute("data-turn-id")
    driver.find_element(By.ID, "stop-answer").click()
    # Local playback stops in the click itself, not when the server answers.
    assert played.get_attribute("data-playing") == "false"
    assert driver.find_element(By.ID, "stop-answer").get_attribute("disabled")
    page.wait("the server's record of the stop", lambda d: (_turn(settings, turn_id).live or {}).get("truncated"))
    turn = _turn(settings, turn_id)
    assert turn.interrupted is True and turn.input_kind == "text"
    assert turn.live["heard_s"] <= turn.live["sent_audio_s"], turn.live
    assert "azithromycin" in answer.text.lower(), answer.text  # each sentence's text comes before its audio
    if answer.get_attribute("data-status") == "cancelled":
        assert "(interrupted)" in answer.text
    _keep(driver, tmp_path, "console-stopped.png")
    page.no_console_errors()
