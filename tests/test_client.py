"""service.client against a live stack, endpoint by endpoint, and the CLI verbs on it
(`modx post`, `search`, `seal`, `status`, `export`): answers parsed into the API's models,
errors raised as ApiError with the API's body."""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
import tarfile

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from service.cli import app
from service.client import ApiError, AsyncClient, Client
from tests.helpers import b64, make_image, wait_for

pytestmark = pytest.mark.slow
runner = CliRunner()
IDS = [f"client-{n}" for n in range(6)]

OPEN_CLIP_ONLY = """
import sys, open_clip, torch
model, _, preprocess = open_clip.create_model_and_transforms("local-dir:" + sys.argv[1])
tokenizer = open_clip.get_tokenizer("local-dir:" + sys.argv[1])
with torch.no_grad():
    assert model.encode_text(tokenizer(["a cat"]), normalize=True).shape[0] == 1
leaked = sorted(m for m in sys.modules if m.split(".")[0] in ("trainer", "service", "indexer"))
assert not leaked, leaked
"""


def modx(live, *args, code: int = 0) -> str:
    result = runner.invoke(app, list(map(str, args)), env={**live.env(), "COLUMNS": "200"})
    assert result.exit_code == code, result.output
    return result.output


@pytest.fixture(scope="module")
def client(live):
    """A client on the stack, holding six pairs (posted, searchable) and one trained phase."""
    with Client(live.url, live.key) as modx_client:
        pairs = [
            {"id": pid, "text": f"client caption {n}", "image": make_image(noise=True), "metadata": {"n": n}}
            for n, pid in enumerate(IDS)
        ]
        assert [a.status for a in modx_client.post(pairs).accepted] == ["queued"] * 6
        wait_for(lambda: _indexed(modx_client, IDS), 120, 0.3, "the pairs indexed")
        yield modx_client


def _indexed(client, ids) -> bool:
    return set(ids) <= {h.id for h in client.search(text="client caption", k=1000).results}


def test_health_ready_and_metrics(client):
    assert client.health() == {"status": "ok"}
    ready = client.ready()
    assert ready.status == "ready" and all(ready.checks.values()) and ready.serving["index"] is not None
    assert "modx_ingest_accepted_pairs" in client.metrics()
    assert client.ready("ingest").checks == {"kafka": True, "redis": True}
    assert client.ready("search").status == "ready"
    assert isinstance(client.timeline(), dict)


def test_post_and_upload_report_duplicates(client):
    again = client.post([{"id": IDS[0], "text": "x", "image": make_image()}])
    assert [(a.id, a.status) for a in again.accepted] == [(IDS[0], "duplicate")]
    up = client.upload(make_image(noise=True), "uploaded caption", id="client-upload", metadata={"via": "form"})
    assert [(a.id, a.status) for a in up.accepted] == [("client-upload", "queued")]


def test_errors_carry_status_and_the_api_body(client, live):
    with pytest.raises(ApiError) as e:
        client.post([{"id": "bad one", "text": "x", "image": make_image()}])
    assert e.value.status == 422 and e.value.error == "invalid_id" and e.value.detail["item"] == 0
    with Client(live.url, "not-a-key") as stranger, pytest.raises(ApiError) as e:
        stranger.phases()
    assert e.value.status == 401
    reader = client.create_key("read", name="client-reader")
    with Client(live.url, reader.key) as read_only:
        assert read_only.phases().phases
        with pytest.raises(ApiError) as e:
            read_only.download(0)
        assert e.value.status == 403 and e.value.error == "insufficient_scope"
    assert "client-reader" in {k.name for k in client.keys().keys}
    assert client.revoke_key("client-reader").revoked is not None


def test_search_by_text_image_and_id(client):
    by_id = client.search(id=IDS[2], k=3)
    assert by_id.results[0].id == IDS[2] and by_id.results[0].score == pytest.approx(1.0, abs=1e-4)
    assert by_id.results[0].metadata == {"n": 2}
    by_image = client.search(image=client.image(IDS[3]), k=1)
    assert by_image.results[0].id == IDS[3]
    assert client.search(text="client caption 1", target="text", k=1).target == "text"
    with pytest.raises(ApiError) as e:
        client.search(id="client-nope")
    assert e.value.status == 404 and e.value.detail["id"] == "client-nope"
    with pytest.raises(ValidationError, match="exactly one of"):
        client.search(text="a", id=IDS[0])  # the API's own request model refuses it before sending
    r = client.http.post("/v1/search", json={"text": "a", "id": IDS[0]})
    assert r.status_code == 422 and "exactly one of" in r.json()["detail"]["message"]


def test_seal_then_snapshots_recall_drift_and_pages(client):
    sealed = client.seal()
    assert sealed.status == "sealed" and sealed.phase.phase == 1 and sealed.phase.status == "sealed"
    wait_for(lambda: any(s.snapshot == 1 and s.status for s in client.snapshots().snapshots), 300, 0.5, "snapshot 1")
    wait_for(lambda: client.recall().snapshots, 60, 0.5, "recall of snapshot 1")
    assert [s.snapshot for s in client.snapshots().snapshots] == [0, 1]
    first = client.snapshots(limit=1)
    assert [s.snapshot for s in first.snapshots] == [0] and first.next_cursor == 0
    rest = client.snapshots(limit=1, cursor=first.next_cursor)
    assert [s.snapshot for s in rest.snapshots] == [1] and rest.next_cursor is None
    phases = client.phases()
    assert [p.phase for p in phases.phases][:2] == [1, 2] and phases.open == 2 and phases.lag is not None
    assert [p.phase for p in client.phases(limit=1, cursor=1).phases] == [2]
    trained = client.pair(IDS[0])
    assert trained.state == "trained" and trained.trained_in == [1] and trained.phase == 1
    row = client.recall().snapshots[-1]
    assert row.snapshot == 1 and "1" in row.recall
    assert [t.to for t in client.drift().transitions] == [1]
    assert client.drift(cursor=1).transitions == []
    r = client.http.get("/v1/phases", params={"limit": 0})
    assert r.status_code == 422


def test_wait_searchable_and_pair_states(client):
    pair = {"id": "client-wait", "text": "waited for", "image": make_image(noise=True)}
    r = client.http.post(
        "/v1/pairs",
        params={"wait": "searchable", "timeout": 0.01},
        json={"pairs": [{**pair, "image": b64(pair["image"])}]},
    )
    assert r.status_code == 202 and r.json()["states"][0]["state"] in ("queued", "buffered")
    answer = client.post([pair], wait="searchable", timeout=60)  # queued again (not buffered yet) or a duplicate
    assert answer.accepted[0].status in ("queued", "duplicate")
    [state] = answer.states
    assert state.state == "searchable" and state.searchable.model_dump() == client.snapshots().serving
    r = client.http.post(
        "/v1/pairs", params={"wait": "searchable"}, json={"pairs": [{**pair, "image": b64(pair["image"])}]}
    )
    assert r.status_code == 200
    assert client.pair("client-wait").phase == client.phases().open
    with pytest.raises(ApiError) as e:
        client.pair("client-never-posted")
    assert e.value.status == 404


def test_delete_by_id_and_filter(client):
    pairs = [
        {
            "id": f"client-del-{n}",
            "text": f"to delete {n}",
            "image": make_image(noise=True),
            "metadata": {"batch": "del"},
        }
        for n in range(3)
    ]
    client.post(pairs, wait="searchable", timeout=60)
    assert client.delete("client-del-0").deleted == ["client-del-0"]
    assert client.delete("client-del-0").already_deleted == ["client-del-0"]
    assert client.pair("client-del-0").state == "deleted"
    assert sorted(client.delete_many(filter={"batch": "del"}).deleted) == ["client-del-1", "client-del-2"]
    with pytest.raises(ApiError) as e:
        client.delete_many(ids=["client-del-1", "client-never-posted"])
    assert e.value.status == 404 and e.value.detail["id"] == "client-never-posted"
    hits = {h.id for h in client.search(text="to delete", k=1000).results}
    assert not hits & {p["id"] for p in pairs}


def test_async_twin(client, live):
    async def calls():
        async with AsyncClient(live.url, live.key) as a:
            return await a.search(id=IDS[1], k=1), await a.phases(limit=1), await a.snapshots()

    hit, phases, snapshots = asyncio.run(calls())
    assert hit.results[0].id == IDS[1] and len(phases.phases) == 1 and snapshots.serving == client.snapshots().serving


def test_download_and_export_load_with_open_clip_alone(client, live, tmp_path):
    tar = tarfile.open(fileobj=io.BytesIO(client.download(1)))
    assert {"v000001/model.safetensors", "v000001/open_clip_config.json"} <= set(tar.getnames())
    with pytest.raises(ApiError) as e:
        client.download(99)
    assert e.value.status == 404
    assert "404 not_found" in modx(live, "export", "99", tmp_path / "none", code=1)
    out = tmp_path / "exported"
    assert "local-dir:" in modx(live, "export", "1", out)
    assert (out / "model.safetensors").read_bytes() == (
        live.data_dir / "snapshots/v000001/model.safetensors"
    ).read_bytes()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-c", OPEN_CLIP_ONLY, str(out)], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]


def test_cli_post_search_status(client, live, tmp_path):
    image = tmp_path / "me.png"
    image.write_bytes(make_image(noise=True))
    assert modx(live, "post", image, "--text", "a photo of me", "--id", "client-cli").strip() == "client-cli queued"
    wait_for(lambda: _indexed(client, ["client-cli"]), 120, 0.3, "the posted pair indexed")
    out = modx(live, "search", "--id", "client-cli", "-k", "2")
    serving = client.snapshots().serving
    assert f"snapshot v{serving['snapshot']}, index v{serving['index']}" in out
    first = next(line for line in out.splitlines() if "client-" in line)
    assert "client-cli" in first and "1.000" in first and "a photo of me" in first
    assert "client-" in modx(live, "search", "client caption", "-k", "3")
    status = modx(live, "status")
    assert f"serving: snapshot v{serving['snapshot']}, index v{serving['index']}" in status
    assert "consumer lag: " in status and "phases" in status and "snapshots" in status
    assert "last recall row" in status and "v1 (" in status
    assert "404 not_found" in modx(live, "search", "--id", "client-nope", code=1)
    assert modx(live, "seal").startswith("sealed phase 2 (")  # the upload and client-cli
