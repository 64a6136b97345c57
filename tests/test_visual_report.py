"""The visual report: ``lightsr.visual_report``, ``lightsr compare`` and ``lightsr eval --report``.

Fast tests read the page with ``html.parser``; one test loads it in headless Chromium, driven
over the DevTools protocol on a pipe (``--remote-debugging-pipe``: no driver package, no
port), and skips when no Chromium is installed (``apt-get install chromium``; or name a
binary with ``$LIGHTSR_CHROMIUM``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import select
import shutil
import signal
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
import torch
from conftest import synthetic_image

from lightsr.checkpoint import save
from lightsr.cli import main
from lightsr.data.benchmark import BenchmarkSet
from lightsr.data.io import read_image, write_image
from lightsr.errors import OutputExistsError, OutputPathError
from lightsr.evaluate import evaluate, super_resolve
from lightsr.registry import create_model
from lightsr.upscale import Upscaler
from lightsr.visual_report import (
    INDEX,
    Report,
    ReportImage,
    ReportModel,
    benchmark_inputs,
    check_report_dir,
    detail_crops,
    read_input,
    render_html,
    render_plot,
    write_report,
)

SCALE = 2
TINY_LABEL = "tiny (seeded)"


def _tiny_model():
    """A seeded FSRCNN x2 (16,960 parameters): fast, and unlike bicubic."""
    torch.manual_seed(0)
    return create_model("fsrcnn", scale=SCALE).eval()


def _make_set(folder: Path) -> Path:
    """A benchmark folder of two small HR images (LR made by imresize, as eval does)."""
    write_image(folder / "HR" / "ripple.png", synthetic_image(40, 48, seed=1))
    write_image(folder / "HR" / "wave.png", synthetic_image(36, 44, seed=2))
    return folder


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One report of two benchmark images x (bicubic + the seeded model)."""
    root = tmp_path_factory.mktemp("visual_report")
    data = _make_set(root / "tinyset")
    ds = BenchmarkSet.from_folder(data, scale=SCALE)
    out = root / "report"
    report = write_report(out, [(TINY_LABEL, _tiny_model())], benchmark_inputs(ds), inputs=[data])
    return report, out, data


class _Page(HTMLParser):
    """Tags, the files referenced, and nesting errors of a page."""

    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source"}

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.refs: list[str] = []
        self.tags: dict[str, list[dict[str, str | None]]] = {}
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.setdefault(tag, []).append(dict(attrs))
        self.refs += [v for k, v in attrs if k in ("src", "href", "data-src") and v]
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if tag in self.VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> where {self.stack[-1:]} is open")
        else:
            self.stack.pop()


# ---------------------------------------------------------------------------------------------
# The page, read as text
# ---------------------------------------------------------------------------------------------


def test_page_is_well_formed_and_self_contained(built):
    report, out, _data = built
    text = (out / INDEX).read_text(encoding="utf-8")
    page = _Page(text)
    assert page.errors == [] and page.stack == [], (page.errors, page.stack)
    assert not re.search(r"https?://", text), "the page must fetch nothing from anywhere"
    assert len(page.tags["section"]) == 2
    # Every reference is a file inside the report folder (relative, no scheme, no "..").
    assert page.refs
    for ref in page.refs:
        target = (out / unquote(ref)).resolve()
        assert target.is_file(), ref
        assert out.resolve() in target.parents, ref
    # Per image: the slider's two images, and 3 crops x (bicubic, model, LR, HR).
    views = {"m0", "m1", "lr", "hr"}
    for image in report.images:
        assert set(image.files) == views
        assert len(image.crops) >= 2
        assert all(set(c.files) == views for c in image.crops)
    n_img = sum(2 + 4 * len(im.crops) for im in report.images)
    assert len(page.tags["img"]) == n_img
    # The picker: the model, LR and HR on the right of each slider; the model first.
    radios = [a for a in page.tags["input"] if a.get("type") == "radio"]
    assert [r["value"] for r in radios] == ["m1", "lr", "hr"] * 2
    assert [("checked" in r) for r in radios] == [True, False, False] * 2
    assert "16.96 K" in text  # the seeded model's parameters, as in the models table


def test_report_figures_are_evaluate_s(built):
    """The page's PSNR/SSIM are `lightsr eval`'s numbers, image by image."""
    report, out, data = built
    ds = BenchmarkSet.from_folder(data, scale=SCALE)
    ours = evaluate(_tiny_model(), ds)
    bicubic = evaluate(create_model("bicubic", scale=SCALE, exact=True), ds)
    assert [im.name for im in report.images] == ["ripple", "wave"]
    for image, mine, ref in zip(report.images, ours.images, bicubic.images):
        assert image.metrics["m1"] == (mine.psnr, mine.ssim)
        assert image.metrics["m0"] == (ref.psnr, ref.ssim)
    by_key = {m.key: m for m in report.models}
    assert by_key["m1"].psnr == pytest.approx(ours.psnr, abs=1e-12)
    assert by_key["m0"].psnr == pytest.approx(bicubic.psnr, abs=1e-12)
    assert by_key["m0"].psnr > 25 > by_key["m1"].psnr  # random weights: far below bicubic
    assert (by_key["m0"].params, by_key["m1"].params) == (0, 16960)
    # The tiny model's Multi-Adds at 720p, as `lightsr profile fsrcnn --scale 2` counts them.
    assert (by_key["m0"].multi_adds, by_key["m1"].multi_adds) == (0, 3_865_190_400)
    text = (out / INDEX).read_text(encoding="utf-8")
    assert f"{ours.images[0].psnr:.2f}" in text


def test_the_images_written_are_the_models_outputs(built):
    report, out, data = built
    ds = BenchmarkSet.from_folder(data, scale=SCALE)
    first = report.images[0]
    hr = ds[0].hr
    sr = super_resolve(_tiny_model(), ds[0].lr)
    assert np.array_equal(read_image(out / first.files["m1"]), sr)
    assert np.array_equal(read_image(out / first.files["hr"]), hr)
    assert np.array_equal(read_image(out / first.files["lr"]), ds[0].lr)
    t, left, h, w = first.crops[0].box
    assert (h, w) == (12, 12) and t % SCALE == 0 and left % SCALE == 0
    assert np.array_equal(
        read_image(out / first.crops[0].files["hr"]), hr[t : t + h, left : left + w]
    )
    assert np.array_equal(
        read_image(out / first.crops[0].files["m1"]), sr[t : t + h, left : left + w]
    )
    lr_crop = ds[0].lr[t // SCALE : (t + h) // SCALE, left // SCALE : (left + w) // SCALE]
    assert np.array_equal(read_image(out / first.crops[0].files["lr"]), lr_crop)


def test_plain_image_is_upscaled_without_metrics_or_plot(tmp_path):
    lr = synthetic_image(18, 22, seed=4)
    write_image(tmp_path / "photo.png", lr)
    model = _tiny_model()
    report = write_report(tmp_path / "rep", [("tiny", model)], [read_input(tmp_path / "photo.png")])
    (image,) = report.images
    assert image.metrics == {} and "hr" not in image.files
    assert image.sr_size == (36, 44)
    # The Upscaler's output, bit for bit (plain images go through the inference contract).
    expected = Upscaler(_tiny_model(), device="cpu")(lr)
    assert np.array_equal(read_image(tmp_path / "rep" / image.files["m1"]), expected)
    assert all(m.psnr is None for m in report.models)
    text = (tmp_path / "rep" / INDEX).read_text(encoding="utf-8")
    assert "<svg" not in text and "no ground truth for this image" in text
    # The first view on the right is the model, not bicubic.
    page = _Page(text)
    after = next(a for a in page.tags["img"] if a.get("class") == "after")
    assert after["src"] == image.files["m1"]


def test_read_input_names_the_problem(tmp_path):
    with pytest.raises(Exception, match="does not exist"):
        read_input(tmp_path / "missing.png")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(Exception, match="not an image file"):
        read_input(tmp_path / "notes.txt")


# ---------------------------------------------------------------------------------------------
# Pure parts
# ---------------------------------------------------------------------------------------------


def test_detail_crops_find_the_texture_and_do_not_overlap():
    img = np.full((64, 64), 128, dtype=np.uint8)
    yy, xx = np.mgrid[0:16, 0:16]
    img[40:56, 8:24] = np.where((yy + xx) % 2, 255, 0)  # a checkerboard at (40, 8)
    img[4:20, 44:60] = np.where((yy // 2 + xx // 2) % 2, 200, 60)  # coarser, less detail
    crops = detail_crops(img, size=16, count=3, step=2)
    assert crops[:2] == [(40, 8), (4, 44)]
    assert len(crops) == 3
    for i, (a, b) in enumerate(crops):
        assert a % 2 == 0 and b % 2 == 0
        for c, d in crops[:i]:
            assert abs(a - c) >= 24 or abs(b - d) >= 24, "crops closer than the default gap"
    assert detail_crops(img, size=65) == []
    # On one large texture: without a gap the second crop touches the first; by default it
    # keeps half a crop clear of it.
    wide = np.full((64, 64), 128, dtype=np.uint8)
    yy, xx = np.mgrid[0:32, 0:48]
    wide[:32, :48] = np.where((yy + xx) % 2, 255, 0)
    assert detail_crops(wide, size=16, count=2, step=2, gap=0) == [(4, 4), (4, 20)]
    assert detail_crops(wide, size=16, count=2, step=2) == [(4, 4), (4, 28)]


def _models() -> list[ReportModel]:
    return [
        ReportModel(key="m0", label="bicubic", params=0, multi_adds=0, psnr=30.0),
        ReportModel(key="m1", label="small", params=10_000, multi_adds=1_000_000_000, psnr=31.0),
        ReportModel(key="m2", label="big", params=900_000, multi_adds=4_000_000_000, psnr=32.5),
        ReportModel(key="m3", label="unmeasured", params=5, multi_adds=5, psnr=None),
    ]


def test_plot_places_one_point_per_measured_model():
    svg = render_plot(_models())
    page = _Page(svg)
    points = {a["data-model"]: a for a in page.tags["circle"]}
    assert set(points) == {"m0", "m1", "m2"}  # m3 has no PSNR
    cx = {k: float(a["cx"]) for k, a in points.items()}
    cy = {k: float(a["cy"]) for k, a in points.items()}
    assert cx["m0"] < cx["m1"] < cx["m2"]  # more Multi-Adds to the right
    assert cy["m0"] > cy["m1"] > cy["m2"]  # higher PSNR higher up (SVG y grows downwards)
    # Linear axes: 1 G is a quarter of the way from 0 to 4 G.
    assert (cx["m1"] - cx["m0"]) * 4 == pytest.approx(cx["m2"] - cx["m0"], rel=1e-3)
    assert render_plot([m for m in _models() if m.psnr is None]) == ""


def test_render_html_escapes_names_and_encodes_file_names():
    image = ReportImage(
        name='<b>"odd" & name',
        group="set",
        lr_size=(4, 4),
        sr_size=(8, 8),
        files={"m0": "images/a b/m0.png", "m1": "images/a b/m1.png", "lr": "images/a b/lr.png"},
    )
    report = Report(title="t <i>", scale=2, models=tuple(_models()[:2]), images=(image,))
    text = render_html(report)
    assert '<b>"odd"' not in text and "&lt;b&gt;&quot;odd&quot; &amp; name" in text
    assert "t &lt;i&gt;" in text
    assert 'src="images/a%20b/m1.png"' in text
    assert render_html(report) == text  # pure: the same report, the same page
    assert _Page(text).errors == []


def test_report_folder_rules(tmp_path):
    check_report_dir(tmp_path / "new")  # new: fine
    (tmp_path / "empty").mkdir()
    check_report_dir(tmp_path / "empty")  # empty: fine
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "keep.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        check_report_dir(tmp_path / "used")
    check_report_dir(tmp_path / "used", overwrite=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputPathError, match="is a file"):
        check_report_dir(tmp_path / "file", overwrite=True)
    (tmp_path / "data").mkdir()
    with pytest.raises(OutputPathError, match="overlaps the data folder"):
        check_report_dir(tmp_path / "data" / "report", inputs=[tmp_path / "data"])


# ---------------------------------------------------------------------------------------------
# The commands
# ---------------------------------------------------------------------------------------------


def test_cli_compare_and_eval_report(tmp_path, capsys):
    data = _make_set(tmp_path / "tinyset")
    write_image(tmp_path / "photo.png", synthetic_image(18, 22, seed=4))
    ckpt = tmp_path / "tiny_x2.safetensors"
    save(_tiny_model(), ckpt)
    out = tmp_path / "cmp"
    args = ["compare", str(tmp_path / "photo.png"), str(data), "--checkpoint", str(ckpt)]
    assert main([*args, "--report", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "bicubic" in printed and "fsrcnn (tiny_x2.safetensors)" in printed
    assert "3 image(s)" in printed
    page = _Page((out / INDEX).read_text(encoding="utf-8"))
    assert len(page.tags["section"]) == 3
    assert len([a for a in page.tags["circle"] if "point" in (a.get("class") or "")]) == 2
    # A non-empty report folder is refused without --overwrite, and nothing is replaced.
    before = (out / INDEX).stat().st_mtime_ns
    assert main([*args, "--report", str(out), "--quiet"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (out / INDEX).stat().st_mtime_ns == before
    assert main([*args, "--report", str(out), "--quiet", "--overwrite"]) == 0
    capsys.readouterr()
    # Models of two scales are refused, naming both.
    assert main(["compare", str(data), "--checkpoint", str(ckpt), "--weights", "a2f_sd_x4",
                 "--report", str(tmp_path / "mixed")]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "different factors" in err and "(x2)" in err and "(x4)" in err
    assert not (tmp_path / "mixed").exists()
    # eval --report: the evaluated model against bicubic, on the evaluated images.
    rep = tmp_path / "evalrep"
    assert main(["eval", str(data), "--checkpoint", str(ckpt), "--report", str(rep)]) == 0
    text = (rep / INDEX).read_text(encoding="utf-8")
    assert "fsrcnn (tiny_x2.safetensors)" in text and len(_Page(text).tags["section"]) == 2
    assert (
        main(["eval", str(data), "--model", "bicubic", "--scale", "2", "--report", str(rep)]) == 2
    )
    assert "--overwrite" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# In a real browser
# ---------------------------------------------------------------------------------------------

_CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1200,900",
    "--remote-debugging-pipe",
)


# Runs before any script of every page: console.error calls, uncaught errors and rejections,
# and resources that fail to load (error events of <img> etc. reach window when captured).
_RECORD_ERRORS = """
window.__errors = [];
window.addEventListener('error', function (e) {
  var t = e.target;
  var what = t && t !== window ? 'failed to load ' + (t.src || t.href || t.tagName) : e.message;
  window.__errors.push(String(what));
}, true);
window.addEventListener('unhandledrejection', function (e) {
  window.__errors.push('unhandled rejection: ' + e.reason);
});
var consoleError = console.error;
console.error = function () {
  window.__errors.push(Array.prototype.join.call(arguments, ' '));
  return consoleError.apply(console, arguments);
};
"""


def _chromium() -> str | None:
    for name in (os.environ.get("LIGHTSR_CHROMIUM"), "chromium", "chromium-browser"):
        path = shutil.which(name) if name else None
        if path:
            return path
    return None


class _Browser:
    """Headless Chromium over the DevTools protocol on a pipe: commands go to the browser's
    fd 3 and replies come from its fd 4, as NUL-terminated JSON."""

    def __init__(self, binary: str, workdir: Path) -> None:
        cmd_r, self._cmd_w = os.pipe()
        self._reply_r, reply_w = os.pipe()
        # Out of the way of 3 and 4 so the two dup2s below cannot clobber each other.
        high_r = fcntl.fcntl(cmd_r, fcntl.F_DUPFD_CLOEXEC, 10)
        high_w = fcntl.fcntl(reply_w, fcntl.F_DUPFD_CLOEXEC, 10)
        os.close(cmd_r)
        os.close(reply_w)
        self.log = workdir / "chromium.log"
        actions = [
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, str(self.log), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644),
            (os.POSIX_SPAWN_DUP2, 1, 2),
            (os.POSIX_SPAWN_DUP2, high_r, 3),
            (os.POSIX_SPAWN_DUP2, high_w, 4),
        ]
        argv = [binary, *_CHROMIUM_FLAGS, f"--user-data-dir={workdir / 'profile'}", "about:blank"]
        # Its own session: the browser's helper processes can be ended with it, by its id.
        self.pid = os.posix_spawn(binary, argv, dict(os.environ), file_actions=actions, setsid=True)
        os.close(high_r)
        os.close(high_w)
        self._buffer = b""
        self._next_id = 0
        self.session: str | None = None
        self.events: list[dict] = []
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        attached = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})
        self.session = attached["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable")
        # The protocol's console/log events can be lost across a navigation that changes the
        # renderer process on a busy machine: every page also records its own errors.
        self.send("Page.addScriptToEvaluateOnNewDocument", {"source": _RECORD_ERRORS})

    def _messages(self, deadline: float, waiting_for: str) -> list[dict]:
        left = deadline - time.monotonic()
        ready, _, _ = select.select([self._reply_r], [], [], max(0.0, left))
        if not ready:
            raise TimeoutError(f"no {waiting_for} from Chromium in time (log: {self.log})")
        chunk = os.read(self._reply_r, 1 << 20)
        if not chunk:
            raise RuntimeError(f"Chromium closed the pipe (log: {self.log})")
        self._buffer += chunk
        *complete, self._buffer = self._buffer.split(b"\0")
        return [json.loads(m) for m in complete if m]

    def send(self, method: str, params: dict | None = None, timeout: float = 120.0) -> dict:
        self._next_id += 1
        message: dict = {"id": self._next_id, "method": method, "params": params or {}}
        if self.session and not method.startswith(("Target.", "Browser.")):
            message["sessionId"] = self.session
        data = json.dumps(message).encode() + b"\0"
        while data:
            data = data[os.write(self._cmd_w, data) :]
        deadline = time.monotonic() + timeout
        while True:
            for m in self._messages(deadline, f"reply to {method}"):
                if m.get("id") == self._next_id:
                    if "error" in m:
                        raise AssertionError(f"{method}: {m['error']}")
                    return m.get("result", {})
                self.events.append(m)

    def settle(self, seconds: float = 1.0) -> list[str]:
        """Collect the protocol's events for ``seconds`` more (a console or network message
        can arrive after the page is complete), then return the errors seen."""
        deadline = time.monotonic() + seconds
        with contextlib.suppress(TimeoutError):
            while True:
                self.events.extend(self._messages(deadline, "event"))
        return self.errors()

    def open(self, url: str, timeout: float = 120.0) -> None:
        """Navigate and wait until the page has loaded (images included). Polled, not the
        load event: on a busy machine that event can be missed across the first navigation
        of a new tab."""
        self.events.clear()
        self.send("Page.navigate", {"url": url})
        check = f"location.href === {json.dumps(url)} && document.readyState === 'complete'"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.js(check):
                    return
            except AssertionError:
                pass  # the old document went away mid-call: ask the new one
            time.sleep(0.05)
        raise TimeoutError(f"{url} did not finish loading (log: {self.log})")

    def js(self, expression: str):
        result = self.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
        )
        if "exceptionDetails" in result:
            raise AssertionError(f"script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions and failed loads of the page (recorded by the
        page itself, and by the protocol's events since the last open())."""
        found = list(self.js("window.__errors || ['the error recorder did not run']"))
        for m in self.events:
            params = m.get("params", {})
            if m.get("method") == "Runtime.exceptionThrown":
                found.append(str(params["exceptionDetails"].get("text")))
            elif m.get("method") == "Runtime.consoleAPICalled" and params["type"] in (
                "error",
                "assert",
            ):
                found.append(" ".join(str(a.get("value")) for a in params.get("args", [])))
            elif m.get("method") == "Log.entryAdded" and params["entry"]["level"] == "error":
                found.append(params["entry"]["text"])
        return found

    def mouse(self, kind: str, x: float, y: float) -> None:
        self.send(
            "Input.dispatchMouseEvent",
            {"type": kind, "x": x, "y": y, "button": "left", "buttons": 1, "clickCount": 1},
        )

    def close(self) -> None:
        with contextlib.suppress(AssertionError, RuntimeError, TimeoutError, OSError):
            self.send("Browser.close", timeout=10)  # it may exit before it answers
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if os.waitpid(self.pid, os.WNOHANG)[0]:
                break
            time.sleep(0.1)
        else:
            os.killpg(self.pid, signal.SIGKILL)  # the session started above, ours alone
            os.waitpid(self.pid, 0)
        os.close(self._cmd_w)
        os.close(self._reply_r)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    binary = _chromium()
    if binary is None:
        pytest.skip(
            "no Chromium found: install it (Debian/Ubuntu: apt-get install chromium) or set "
            "$LIGHTSR_CHROMIUM to a Chromium/Chrome binary to run the in-browser test"
        )
    b = _Browser(binary, tmp_path_factory.mktemp("chromium"))
    yield b
    b.close()


def _clip_shown(b: _Browser) -> float:
    """The share of the width (in %) where bicubic shows, read from the overlay's computed
    clip-path (inset(0px R% 0px 0px): the right R% is cut away)."""
    clip = b.js("getComputedStyle(document.querySelector('section.image img.before')).clipPath")
    m = re.fullmatch(r"inset\(0px ([\d.]+)% 0px 0px\)", clip)
    assert m, clip
    return 100 - float(m.group(1))


def test_the_page_works_in_a_browser(built, browser, tmp_path):
    # The error collector itself: a broken image and a console error are seen.
    bad = tmp_path / "bad.html"
    bad.write_text('<img src="missing.png"><script>console.error("boom")</script>')
    browser.open(bad.as_uri())
    seen = browser.errors()
    assert "boom" in seen and f"failed to load {(tmp_path / 'missing.png').as_uri()}" in seen

    report, out, _data = built
    browser.open((out / INDEX).as_uri())
    images = browser.js(
        "Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, i.naturalWidth])"
    )
    assert len(images) == sum(2 + 4 * len(im.crops) for im in report.images)
    unloaded = [src for src, complete, width in images if not (complete and width > 0)]
    assert unloaded == []

    # Moving the slider by script (value + input event) moves the clip and the divider.
    assert _clip_shown(browser) == pytest.approx(50)
    browser.js(
        "(() => { const r = document.querySelector('section.image input.split');"
        " r.value = 20; r.dispatchEvent(new Event('input', {bubbles: true})); })()"
    )
    assert _clip_shown(browser) == pytest.approx(20)
    divider = browser.js(
        "(() => { const s = document.querySelector('section.image');"
        " const box = s.querySelector('.compare').getBoundingClientRect();"
        " const d = s.querySelector('.divider').getBoundingClientRect();"
        " return (d.left + d.width / 2 - box.left) / box.width; })()"
    )
    assert divider == pytest.approx(0.20, abs=0.01)

    # Dragging it with the mouse, as a person would.
    rect = browser.js(
        "(() => { const r = document.querySelector('section.image input.split');"
        " r.scrollIntoView({block: 'center'}); const b = r.getBoundingClientRect();"
        " return [b.left, b.top, b.width, b.height]; })()"
    )
    left, top, width, height = rect
    y = top + height / 2
    browser.mouse("mousePressed", left + 0.6 * width, y)
    browser.mouse("mouseMoved", left + 0.7 * width, y)
    browser.mouse("mouseMoved", left + 0.8 * width, y)
    browser.mouse("mouseReleased", left + 0.8 * width, y)
    shown = _clip_shown(browser)
    assert shown == pytest.approx(80, abs=5)  # the thumb's width makes it a little off
    value = browser.js("Number(document.querySelector('section.image input.split').value)")
    assert shown == pytest.approx(value)

    # The picker puts the ground truth on the right, and it loads.
    after = browser.js(
        "new Promise(done => { const s = document.querySelector('section.image');"
        " const a = s.querySelector('img.after');"
        " s.querySelector('input.pick[value=hr]').click();"
        " const report = () => done([a.getAttribute('src'), a.naturalWidth,"
        " s.querySelector('.tag.right').textContent]);"
        " if (a.complete) report(); else a.addEventListener('load', report); })"
    )
    assert after[0] == report.images[0].files["hr"] and after[1] > 0
    assert after[2] == "HR (ground truth)"

    # The plot: one point per model; bicubic (no Multi-Adds, higher PSNR here) upper left.
    points = browser.js(
        "Array.from(document.querySelectorAll('svg.plot circle.point')).map(c =>"
        " [c.dataset.model, c.getBoundingClientRect().x, c.getBoundingClientRect().y])"
    )
    assert sorted(p[0] for p in points) == ["m0", "m1"]
    where = {k: (x, y) for k, x, y in points}
    assert where["m0"][0] < where["m1"][0] and where["m0"][1] < where["m1"][1]

    assert browser.settle(1.0) == []
