"""Page mode of /go/{slug} in a real headless Chromium with no network (every host but
127.0.0.1 fails to resolve): the browser pixel fires PageView with the server's event id, the
cookie beacon reaches /t/{token}/cookies, and the visitor reaches "Telegram" (a local stand-in)
within 3.5 s even when the pixel script fails or never loads; <noscript> visitors too."""

from __future__ import annotations

import re
import shutil
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import support
from tracking_support import http_request, new_schema, server_env, unique_id, FakeMeta, wait_until

from pixtrack.v1 import tracking_pb2 as pb, tracking_pb2_grpc

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium missing: run scripts/pyenv")

FAKE_PIXEL = r"""
(function(){
  var base = document.currentScript.src.replace(/\/pixel\.js.*$/, '');
  var now = Date.now(), fbclid = (location.search.match(/[?&]fbclid=([^&]*)/) || [])[1];
  if (fbclid && document.cookie.indexOf('_fbc=') < 0) document.cookie = '_fbc=fb.1.' + now + '.' + fbclid + '; path=/';
  var q = (window.fbq && window.fbq.queue) || [];
  for (var i = 0; i < q.length; i++) {
    var a = q[i];
    if (a[0] === 'track') new Image().src = base + '/pixel-event?ev=' + encodeURIComponent(a[1]) + '&eid=' + encodeURIComponent((a[3] || {}).eventID || '');
  }
})();
"""


class Stand:
    """The local stand-ins: Telegram (/tg/…), the pixel script (/pixel.js) and its event sink."""

    def __init__(self):
        self.mode = "fail"
        self.arrivals: list[tuple[float, str]] = []
        self.pixel_events: list[dict] = []
        stand = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def send(self, status, body, ctype="text/html"):
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                u = urllib.parse.urlsplit(self.path)
                if u.path.startswith("/tg/"):
                    stand.arrivals.append((time.monotonic(), self.path))
                    return self.send(200, b"<html><body>telegram</body></html>")
                if u.path == "/pixel.js":
                    if stand.mode == "hang":
                        time.sleep(20)
                        return
                    if stand.mode == "fail":
                        return self.send(404, b"")
                    return self.send(200, FAKE_PIXEL.encode(), "application/javascript")
                if u.path == "/pixel-event":
                    stand.pixel_events.append({k: v[0] for k, v in urllib.parse.parse_qs(u.query).items()})
                    return self.send(200, b"", "image/gif")
                self.send(404, b"")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()


def chrome(javascript: bool = True, extra: list[str] | tuple[str, ...] = ()):
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not binary or not driver:
        pytest.fail("chromium / chromedriver missing: run scripts/deps (Debian packages chromium chromium-driver)")
    o = Options()
    o.binary_location = binary
    for arg in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1", "--disable-background-networking", *extra]:
        o.add_argument(arg)
    o.page_load_strategy = "none"
    if not javascript:
        o.add_experimental_option("prefs", {"profile.managed_default_content_settings.javascript": 2})
    return webdriver.Chrome(service=Service(driver), options=o)


@pytest.fixture(scope="module")
def env():
    stand = Stand()
    meta = FakeMeta()
    s = support.start_server(env=server_env(new_schema(), meta, PIXTRACK_META_SENDER="0",
                                            PIXTRACK_TELEGRAM_BASE_URL=f"http://127.0.0.1:{stand.port}/tg",
                                            PIXTRACK_PIXEL_SCRIPT_URL=f"http://127.0.0.1:{stand.port}/pixel.js"),
                             name="pixtrackd (page mode)")
    ch = support.channel(s.port)
    stub = tracking_pb2_grpc.TrackingServiceStub(ch)
    bid = unique_id()
    stub.UpsertBot(pb.UpsertBotRequest(id=bid, telegram_username=f"page{bid}", meta_pixel_id="1234567890", enabled=True), timeout=10)
    slug = f"page-{bid}"
    stub.UpsertSlug(pb.UpsertSlugRequest(slug=pb.Slug(slug=slug, mode=pb.SLUG_MODE_PAGE, enabled=True,
                                                      bots=[pb.SlugBot(bot_id=bid, enabled=True)])), timeout=10)
    browser = chrome()
    yield stand, s, stub, slug, browser, bid
    browser.quit()
    ch.close()
    support.stop_and_check(s)
    meta.stop()
    stand.close()


def visit(stand, s, slug, browser, query="fbclid=IwAR_page_test"):
    n = len(stand.arrivals)
    t0 = time.monotonic()
    browser.get(f"http://127.0.0.1:{s.port}/go/{slug}?{query}")
    wait_until(lambda: len(stand.arrivals) > n, timeout=10, what="the visitor to reach Telegram")
    at, path = stand.arrivals[-1]
    token = urllib.parse.parse_qs(urllib.parse.urlsplit(path).query)["start"][0]
    return at - t0, path, token


@pytest.mark.parametrize("mode", ["fail", "hang"])
def test_visitor_reaches_telegram_within_3_5_s_without_the_pixel(env, mode):
    stand, s, stub, slug, browser, bid = env
    stand.mode = mode
    elapsed, path, token = visit(stand, s, slug, browser)
    assert path.startswith(f"/tg/page{bid}?start=") and len(token) == 32
    assert elapsed < 3.5, f"arrived after {elapsed:.2f} s with the pixel script {mode}ing"
    support.figure(f"page mode, pixel script {mode}: Telegram reached after {elapsed:.2f} s")


def test_browser_pixel_shares_the_event_id_and_cookies_come_back(env):
    stand, s, stub, slug, browser, bid = env
    stand.mode = "ok"
    fbclid = f"IwAR_browser_{bid}"
    elapsed, _, token = visit(stand, s, slug, browser, f"fbclid={fbclid}")
    assert elapsed < 3.5
    data = stub.GetTrackingData(pb.GetTrackingDataRequest(token=token), timeout=5)
    events = wait_until(lambda: stand.pixel_events, what="the browser PageView")
    assert events[-1] == {"ev": "PageView", "eid": data.pageview_event_id}
    # The beacon posted the browser's _fbc (set by the pixel from the fbclid), origin: cookie.
    merged = wait_until(lambda: (d := stub.GetTrackingData(pb.GetTrackingDataRequest(token=token), timeout=5)).fbc and d,
                        what="the cookie beacon")
    assert merged.fbc.endswith("." + fbclid) and merged.fbc_origin == pb.FBC_ORIGIN_COOKIE
    assert merged.fbp == data.fbp  # the browser kept the _fbp we set


def test_noscript_visitor_arrives_by_meta_refresh(env):
    stand, s, stub, slug, _, bid = env
    browser = chrome(javascript=False)
    try:
        elapsed, path, _ = visit(stand, s, slug, browser)
        assert path.startswith(f"/tg/page{bid}?start=") and elapsed < 3.5
    finally:
        browser.quit()


def test_the_page_carries_a_policy_that_allows_only_its_own_script(env):
    stand, s, stub, slug, browser, bid = env
    status, headers, body = http_request(s.port, "GET", f"/go/{slug}?fbclid=IwAR_csp_test", {"User-Agent": "Mozilla/5.0 Chrome/124.0"})
    h = dict(headers)
    assert status == 200 and h["x-content-type-options"] == "nosniff" and h["referrer-policy"] == "no-referrer"
    csp = h["content-security-policy"]
    nonce = re.search(r"'nonce-([0-9a-f]{32})'", csp).group(1)
    assert f'<script nonce="{nonce}">' in body.decode()
    assert f"script-src 'nonce-{nonce}' http://127.0.0.1:{stand.port};" in csp and "frame-ancestors 'none'" in csp
    # A new nonce each time.
    _, again, _ = http_request(s.port, "GET", f"/go/{slug}?fbclid=IwAR_csp_test2", {"User-Agent": "Mozilla/5.0 Chrome/124.0"})
    assert nonce not in dict(again)["content-security-policy"]
    # The message pages run no script at all.
    _, nf, _ = http_request(s.port, "GET", "/go/no-such-slug-here", {"User-Agent": "Mozilla/5.0"})
    assert dict(nf)["content-security-policy"].startswith("default-src 'none';")
