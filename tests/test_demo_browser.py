"""The web demo in a real browser: ``diffusiongs demo`` on localhost with the shipped model, driven by headless
Chromium through Selenium (Debian's ``chromium`` and ``chromium-driver``, which ``.ci/run`` installs). Opt-in
(``-m browser``: 35-60 s on the 2-core project machine, over 2 minutes when it is busy); the README's test command
runs it after the default suite.

One page visit uploads the example image, sets the steps, generates, and checks that both 3D views drew something,
that the browser plays the turntable, that the downloads are a PLY, a GLB and an MP4 that load, and that the page
fetched nothing from any other host (it works offline). A second upload of a broken file must give a one-line
message in the page. ``DIFFUSIONGS_DEMO_SCREENSHOT=path.png`` also saves a screenshot of the finished page
(docs/images/demo_page.png was made this way).
"""

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
from PIL import Image

from diffusiongs.gaussians import load_ply

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "images" / "checker_cube.png"
STEPS = 2
FRAMES = 8
SERVER_START_S = 180
"""Importing gradio and loading the model; minutes on a busy 2-core machine."""
RESULT_S = 240
DRAW_S = 60
"""Software WebGL (SwiftShader) parses and draws a 2 MB GLB in seconds; allow for a loaded machine."""
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    # Without these Chromium keeps calling home, and on a closed network its connections fail.
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    # WebGL without a GPU: SwiftShader, which recent Chromium enables only when asked.
    "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--window-size=1400,1400",
]

selenium = pytest.importorskip("selenium", reason="needs selenium (the `test` extra)")
pytest.importorskip("gradio", reason="needs gradio (the `demo` extra)")
from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None,
                                 reason="needs Debian's chromium and chromium-driver "
                                        "(apt-get install chromium chromium-driver; .ci/run installs them)")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``diffusiongs demo`` on the shipped model, in its own process; yields its URL."""
    port, out = free_port(), tmp_path_factory.mktemp("demo")
    log = (out / "server.log").open("w")
    # Small mesh settings keep the test short; the page and the files are the same as with the defaults.
    process = subprocess.Popen(
        [sys.executable, "-m", "diffusiongs.cli.main", "demo", "--port", str(port), "--out", str(out / "results"),
         "--frames", str(FRAMES), "--mesh-options.resolution", "64", "--mesh-options.views", "16"],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"})
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"diffusiongs demo exited with {process.returncode}:\n"
                            f"{(out / 'server.log').read_text()[-3000:]}")
            try:
                urllib.request.urlopen(url, timeout=5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"diffusiongs demo did not answer on {url} within {SERVER_START_S} s")
                time.sleep(1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={tempfile.mkdtemp(prefix='chromium-')}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def drawn_fraction(png: bytes) -> float:
    """Share of a canvas screenshot's pixels that differ from its corner pixel (the background) by more than a few
    levels: 0 for a blank canvas."""
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    return float((np.abs(pixels - pixels[2, 2]).max(-1) > 8).mean())


def wait_until_drawn(driver, selector: str) -> float:
    """Poll the canvas until something is drawn on it; returns the drawn share."""
    deadline = time.monotonic() + DRAW_S
    while True:
        canvases = driver.find_elements(By.CSS_SELECTOR, f"{selector} canvas")
        drawn = drawn_fraction(canvases[0].screenshot_as_png) if canvases else 0.0
        if drawn > 0.02 or time.monotonic() > deadline:
            return drawn
        time.sleep(1)


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as response:
        return response.read()


def requested_hosts(driver) -> set[str]:
    """Hosts of every http(s) request the page made so far (Chrome's performance log)."""
    hosts = set()
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            url = message["params"]["request"]["url"]
            if url.startswith(("http://", "https://")):
                hosts.add(url.split("/")[2])
    return hosts


def test_demo_page_generates_shows_3d_and_serves_the_files(server, browser, tmp_path):
    browser.get(server)
    wait = WebDriverWait(browser, RESULT_S)
    upload = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#image-input input[type=file]"))
    upload.send_keys(str(EXAMPLE))
    # The segmented input appears as soon as the image is dropped.
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#segmented img"))
    steps = browser.find_element(By.CSS_SELECTOR, "#steps input[type=number]")
    steps.send_keys(Keys.CONTROL, "a", Keys.DELETE)
    steps.send_keys(str(STEPS), Keys.TAB)
    browser.find_element(By.CSS_SELECTOR, "#generate").click()
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#downloads a")) == 3)

    summary = browser.find_element(By.CSS_SELECTOR, "#summary").text
    assert f"ddim, {STEPS} steps, seed 0" in summary
    for view in ("#gaussians-view", "#mesh-view"):
        assert wait_until_drawn(browser, view) > 0.02, f"{view}: the 3D view stayed blank"
    # The browser decodes the turntable: it has the current frame (readyState 2) at the model's 128 px, no error.
    state = "const v = document.querySelector('#turntable video'); return v && [v.readyState, v.videoWidth, v.error];"
    WebDriverWait(browser, DRAW_S).until(lambda d: (d.execute_script(state) or [0])[0] >= 2)
    assert browser.execute_script(state)[1:] == [128, None]

    # One script call: while the 3D views redraw in software, every WebDriver round trip waits for the page.
    hrefs = browser.execute_script("return [...document.querySelectorAll('#downloads a')].map(a => a.href);")
    links = {Path(href).name: href for href in hrefs}
    assert requested_hosts(browser) == {server.split("/")[2]}, "the page fetched from another host"
    if os.environ.get("DIFFUSIONGS_DEMO_SCREENSHOT"):
        browser.save_screenshot(os.environ["DIFFUSIONGS_DEMO_SCREENSHOT"])
    # The 3D views redraw continuously in software: leave the page before loading the files on the same cores.
    browser.get("about:blank")

    assert set(links) == {"gaussians.ply", "mesh.glb", "turntable.mp4"}
    (tmp_path / "gaussians.ply").write_bytes(fetch(links["gaussians.ply"]))
    gaussians = load_ply(tmp_path / "gaussians.ply")
    assert gaussians.num_gaussians > 100 and summary.startswith(f"{gaussians.num_gaussians} Gaussians")
    trimesh = pytest.importorskip("trimesh")
    (mesh,) = trimesh.load(io.BytesIO(fetch(links["mesh.glb"])), file_type="glb").geometry.values()
    assert len(mesh.faces) > 100 and mesh.visual.vertex_attributes["color"].shape == (len(mesh.vertices), 4)
    assert len(iio.imread(fetch(links["turntable.mp4"]), index=None, extension=".mp4")) == FRAMES


def test_a_broken_upload_gets_a_one_line_message(server, browser, tmp_path):
    broken = tmp_path / "not_an_image.png"
    broken.write_text("this is text, not a picture")
    browser.get(server)
    wait = WebDriverWait(browser, RESULT_S)
    wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#image-input input[type=file]")).send_keys(str(broken))
    message = "not_an_image.png: not a readable image"
    wait.until(lambda d: message in d.find_element(By.TAG_NAME, "body").text)
    page = browser.find_element(By.TAG_NAME, "body").text
    assert "Traceback" not in page and "/tmp/gradio" not in page
