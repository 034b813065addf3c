"""What operators see, on one live `modx up` stack (its own Tansu broker, started here so
the last test can stop it, and its own redis-server) while `modx demo` streams two phases:

- each role's /metrics port shows its series with real values that change during the demo;
- every metric the Grafana dashboard queries is one the roles export;
- the dashboard page in Debian's chromium (Playwright) draws every snapshot, searches, and
  is saved as a screenshot;
- the logs are JSON lines with the role, request ids (echoed in X-Request-ID) and phases;
- with the broker stopped, the API stays ready for search and says ingest is not.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from service import infra
from service.infra import free_port
from tests.helpers import ROOT, b64, bearer, make_png, pair_json, wait_for

pytestmark = pytest.mark.slow
ROLES = ("api", "consumer", "trainer", "indexer")
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def modx(*args: str) -> list[str]:
    return [sys.executable, "-m", "service.cli", *args]


def scrape(port: int) -> dict[str, float]:
    """`name{labels}` -> value of every sample a role's metrics port exports now."""
    out = {}
    for line in httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text.splitlines():
        m = SAMPLE.match(line)
        if m:
            out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


def exported_names(port: int) -> set[str]:
    """Every metric name a role exports, labelled ones without samples yet included (their TYPE line)."""
    names = set()
    for line in httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            names |= {name, *(f"{name}{s}" for s in ("_bucket", "_sum", "_count") if kind == "histogram")}
        elif SAMPLE.match(line):
            names.add(SAMPLE.match(line).group(1))
    return names


class Stack:
    def __init__(self, tmp: Path):
        self.tmp, self.port = tmp, free_port()
        self.metrics = {role: free_port() for role in ROLES}
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp / "up.log"
        self.broker = infra.kafka_broker(log_dir=tmp)
        self.kafka = self.broker.__enter__().address
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("MODX_")}
        self.env.update(
            PYTHONPATH=os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
            MODX_KAFKA_BOOTSTRAP=self.kafka,
            MODX_RECIPE__EPOCHS="2",
            MODX_WORKER_POLL_S="0.3",
            MODX_INDEX_POLL_S="0.3",
            MODX_TIMELINE_INTERVAL_S="0.5",
            MODX_SEAL_MIN_INTERVAL_S="0",
            **{f"MODX_{role.upper()}_METRICS_PORT": str(port) for role, port in self.metrics.items()},
        )
        with open(self.log, "wb") as out:
            self.up = subprocess.Popen(
                modx("up", "--port", str(self.port)), cwd=tmp, env=self.env, stdout=out, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 120
        while "modx is up" not in self.log.read_text():
            assert self.up.poll() is None and time.monotonic() < deadline, self.log.read_text()
            time.sleep(0.5)
        self.admin = (tmp / "data" / "admin.key").read_text().strip()
        self.before = {role: scrape(port) for role, port in self.metrics.items()}

    def demo(self) -> subprocess.Popen:
        argv = modx("demo", "--url", self.url, "--phases", "2", "--pairs", "60", "--timeout", "300")
        return subprocess.Popen(argv, cwd=self.tmp, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def stop_broker(self) -> None:
        if self.broker is not None:
            self.broker.__exit__(None, None, None)
            self.broker = None

    def close(self) -> None:
        self.up.send_signal(signal.SIGINT)
        try:
            self.up.wait(60)
        finally:
            if self.up.poll() is None:
                self.up.kill()
            self.stop_broker()


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = Stack(tmp_path_factory.mktemp("ops"))
    try:
        demo = s.demo()
        s.during = []  # scrapes while the demo streams
        while demo.poll() is None:
            s.during.append({role: scrape(port) for role, port in s.metrics.items()})
            time.sleep(0.2)
        s.demo_out = demo.stdout.read().decode()
        assert demo.returncode == 0, s.demo_out + s.log.read_text()[-3000:]
        s.after = {role: scrape(port) for role, port in s.metrics.items()}
        yield s
    finally:
        s.close()


def values(scrapes: list[dict], key: str) -> list[float]:
    return [s[key] for s in scrapes if key in s]


def test_each_role_exports_its_own_series_with_changing_values(stack):
    after, during = stack.after, stack.during
    consumer = [d["consumer"] for d in during] + [after["consumer"]]
    assert after["consumer"]["modx_consumer_written_pairs_total"] == 120  # 2 phases x 60 pairs
    assert values(consumer, "modx_phase_open")[0] == 1 and after["consumer"]["modx_phase_open"] == 3
    assert after["consumer"]['modx_phases_sealed_total{reason="request"}'] == 2
    assert 'modx_consumer_lag_messages{partition="0"}' in after["consumer"]

    trainer = after["trainer"]
    assert trainer["modx_train_steps_total"] > 0 and trainer["modx_train_step_seconds_count"] > 0
    assert len(set(values([d["trainer"] for d in during], "modx_train_loss"))) > 1  # a loss per step
    assert trainer["modx_snapshot_latest"] == 2 and trainer['modx_snapshots_total{status="accepted"}'] == 2
    for probe in ("1", "2"):
        for direction in ("i2t", "t2i"):
            assert 0 <= trainer[f'modx_snapshot_recall_r1{{direction="{direction}",probe="{probe}"}}'] <= 1

    indexer = after["indexer"]
    assert indexer['modx_index_vectors{modality="image"}'] == 120 and indexer["modx_index_snapshot"] == 2
    assert stack.before["indexer"].get('modx_index_vectors{modality="image"}', 0) < 120

    api = after["api"]
    assert api['modx_http_requests_total{method="POST",route="/v1/pairs",status="202"}'] >= 2
    assert api['modx_http_request_duration_seconds_count{method="GET",route="/v1/phases"}'] > 0
    assert api["modx_ingest_accepted_pairs_total"] == 120
    assert api['modx_search_encode_seconds_count{query="text"}'] >= 3  # the demo's searches
    assert api['modx_search_index_seconds_count{target="image"}'] >= 3
    assert api["modx_serving_snapshot"] == 2 and api["modx_serving_index_vectors"] == 120
    assert not any(k.startswith(("modx_shared", "modx_train", "modx_consumer", "modx_index_")) for k in api)
    assert not any(k.startswith(("modx_http", "modx_train", "modx_index_")) for k in after["consumer"])
    # the raw path never becomes a label: every image fetch counts under its route template
    image = httpx.get(f"{stack.url}/v1/images/nope", headers=bearer(stack.admin))
    assert image.status_code == 404
    assert 'route="/v1/images/{pair_id}"' in httpx.get(f"http://127.0.0.1:{stack.metrics['api']}/metrics").text
    admin = httpx.get(f"{stack.url}/metrics", headers=bearer(stack.admin))  # the API's own, behind the admin key
    assert admin.status_code == 200 and "modx_http_requests_total" in admin.text and "modx_train" not in admin.text

    pairs = [pair_json(f"extra-{i}", text=f"extra pair {i}", image=make_png(color=(i, 9, 9))) for i in range(5)]
    assert httpx.post(f"{stack.url}/v1/pairs", json={"pairs": pairs}, headers=bearer(stack.admin)).status_code == 202
    wait_for(
        lambda: scrape(stack.metrics["consumer"]).get("modx_phase_fill_pairs") == 5,
        message="the open phase's fill to count the 5 new pairs",
    )
    assert scrape(stack.metrics["consumer"])["modx_consumer_written_pairs_total"] == 125
    assert scrape(stack.metrics["api"])["modx_ingest_accepted_pairs_total"] == 125
    wait_for(
        lambda: scrape(stack.metrics["indexer"]).get('modx_index_vectors{modality="image"}') == 125,
        message="the indexer to embed them into a segment",
    )


PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "and", "or", "unless"}


def promql_metrics(expr: str) -> set[str]:
    """The metric names an expression reads: identifiers that are not functions, keywords,
    label names (inside {...} or by (...)), durations or strings."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    names = set()
    for m in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr):
        follows = expr[m.end() :].lstrip()[:1]
        if follows != "(" and m.group() not in PROMQL_WORDS and not expr[m.start() - 1 : m.start()].isdigit():
            names.add(m.group())
    return names


def test_promql_parser_finds_metric_names():
    expr = 'histogram_quantile(0.95, sum by (le, route) (rate(modx_http_request_duration_seconds_bucket{a="b"}[5m])))'
    assert promql_metrics(expr) == {"modx_http_request_duration_seconds_bucket"}
    assert promql_metrics("max(a_x) / on (job) b_total offset 5m") == {"a_x", "b_total"}


def test_every_metric_the_grafana_dashboard_queries_is_exported(stack):
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "dashboard.json").read_text())
    queried = {name for panel in dashboard["panels"] for t in panel["targets"] for name in promql_metrics(t["expr"])}
    assert len(queried) >= 20
    exported = set().union(*(exported_names(port) for port in stack.metrics.values()))
    assert queried - exported == set()
    for role in ROLES:  # each role's series reach the dashboard
        assert queried & {n for n in exported_names(stack.metrics[role]) if n.startswith("modx_")}, role


def test_the_dashboard_draws_every_snapshot_and_searches(stack, tmp_path):
    from playwright.sync_api import sync_playwright

    assert CHROMIUM, "chromium is not installed: scripts/setup installs it (apt-get install chromium)"
    read = httpx.post(f"{stack.url}/v1/keys", json={"scope": "read"}, headers=bearer(stack.admin)).json()["key"]
    recall = httpx.get(f"{stack.url}/v1/recall", headers=bearer(read)).json()["snapshots"]
    versions = sorted(s["snapshot"] for s in recall)
    transitions = httpx.get(f"{stack.url}/v1/drift", headers=bearer(read)).json()["transitions"]
    assert versions == [1, 2] and len(transitions) == 2
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{stack.url}/?key={read}")
        page.wait_for_function("window.modx && window.modx.updated && window.modx.drawn.timeline > 2", timeout=30_000)
        assert "key=" not in page.url  # taken into session storage, gone from the address bar
        assert page.evaluate("sessionStorage.getItem('modx.key')") == read
        drawn = page.evaluate("window.modx.drawn")
        assert drawn["heatmap"] == versions and drawn["lines"] == versions
        assert page.locator("#heatmap tbody tr").count() == len(versions)
        assert page.locator("#heatmap td[data-r1]").count() == 1 + 2  # v1 on probe 1; v2 on probes 1, 2
        rows = page.locator("#snapshots tbody tr td:first-child").all_inner_texts()
        assert rows == ["v0", "v1", "v2"]  # CLIP_0 and every trained snapshot, in order
        assert page.locator("#snapshots td.serving").inner_text().startswith("serving")
        assert page.locator("#phases tbody tr").count() >= 2
        for t in transitions:  # every transition's three histograms hold its counts
            page.select_option("#transition", str(t["to"]))
            page.select_option("#drift-probe", "pooled")
            drawn = page.evaluate("window.modx.drawn.drift")
            pooled = t["pooled"]
            counts = {
                "sam": sum(pooled["sam_change"]["image"]["counts"] + pooled["sam_change"]["text"]["counts"]),
                "ram": sum(pooled["ram"]["image"]["counts"] + pooled["ram"]["text"]["counts"]),
                "imav": sum(pooled["imav"]["counts"]),  # only pairs retrieved right by both snapshots: may be 0
            }
            assert drawn["to"] == t["to"] and drawn["totals"] == counts and counts["sam"] > 0 and counts["ram"] > 0
        page.check("#old-gallery")
        assert page.locator("#heatmap td[data-r1]").count() == 3
        page.uncheck("#old-gallery")
        painted = page.evaluate(
            """() => Object.entries(window.modx.charts).map(([name, u]) => {
                 const c = u.ctx.canvas, d = u.ctx.getImageData(0, 0, c.width, c.height).data;
                 let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i]) n++;
                 return [name, n];
               })"""
        )
        assert len(painted) == 7 and all(n > 0 for _, n in painted), painted
        page.fill("#query", "a large red circle at the top left")
        page.click("#search button[type=submit]")
        page.wait_for_function("document.querySelectorAll('#results img').length > 0", timeout=20_000)
        page.wait_for_function(
            "[...document.querySelectorAll('#results img')].every(i => i.complete && i.naturalWidth > 0)"
        )
        assert "snapshot v2" in page.locator("#search-info").inner_text()
        assert page.locator("#results figcaption").first.inner_text()[:1].isdigit()  # the score, then the caption
        query = next((stack.tmp / "data" / "images").rglob("demo-*"))  # a posted image: it finds itself first
        page.set_input_files("#query-image", {"name": "q.png", "mimeType": "image/png", "buffer": query.read_bytes()})
        page.click("#search button[type=submit]")
        first = httpx.post(
            f"{stack.url}/v1/search", json={"image": b64(query.read_bytes()), "k": 1}, headers=bearer(read)
        ).json()["results"][0]
        page.wait_for_function(f"document.querySelector('#results img').alt === {json.dumps(first['text'])}")
        assert page.input_value("#query") == ""  # an image query replaces the text one
        shot = Path(os.environ.get("MODX_DASHBOARD_SCREENSHOT", tmp_path / "dashboard.png"))
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000
        assert not errors, errors
        browser.close()


def test_logs_are_json_lines_with_role_request_id_and_phase(stack):
    resp = httpx.get(f"{stack.url}/v1/phases", headers={**bearer(stack.admin), "X-Request-ID": "ops-test-42"})
    assert resp.headers["x-request-id"] == "ops-test-42"
    fresh = httpx.get(f"{stack.url}/v1/phases", headers=bearer(stack.admin)).headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", fresh)
    logs = stack.tmp / "data" / "logs"

    def lines(role):
        return [json.loads(line) for line in (logs / f"{role}.log").read_text().splitlines() if line.startswith("{")]

    wait_for(lambda: any(r.get("request_id") == "ops-test-42" for r in lines("api")), message="the access line")
    access = next(r for r in lines("api") if r.get("request_id") == "ops-test-42")
    assert access["role"] == "api" and access["level"] == "info" and access["route"] == "/v1/phases"
    assert access["status"] == 200 and "GET /v1/phases 200" in access["message"] and access["ts"].endswith("+00:00")
    trained = [r for r in lines("trainer") if r.get("phase") == 2]
    assert trained and all(r["role"] == "trainer" and r["snapshot"] == 2 for r in trained)
    indexed = [r for r in lines("indexer") if r["message"].startswith("index v2:")]
    assert indexed and indexed[0]["snapshot"] == 2 and indexed[0]["role"] == "indexer"


def test_search_stays_ready_with_the_broker_stopped(stack):
    stack.stop_broker()
    wait_for(
        lambda: httpx.get(f"{stack.url}/readyz/ingest", timeout=10).status_code == 503,
        timeout_s=30,
        message="ingest to be unready without Kafka",
    )
    ingest = httpx.get(f"{stack.url}/readyz/ingest", timeout=10).json()
    assert ingest["failed"] == ["kafka"] and "kafka is not available" in ingest["message"]
    search = httpx.get(f"{stack.url}/readyz/search", timeout=10)
    assert search.status_code == 200 and search.json()["checks"] == {"redis": True, "snapshot_and_index": True}
    ready = httpx.get(f"{stack.url}/readyz", timeout=10)  # the load balancer's check
    assert ready.status_code == 200 and ready.json()["ingest"]["ready"] is False
    hits = httpx.post(f"{stack.url}/v1/search", json={"text": "a small blue star", "k": 3}, headers=bearer(stack.admin))
    assert hits.status_code == 200 and len(hits.json()["results"]) == 3
