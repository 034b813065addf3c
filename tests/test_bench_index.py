"""Smoke tests of bench.search and bench.embed at a tiny size: the rows and sane values, no timings."""

from __future__ import annotations

import json

from bench import embed, search


def test_search_benchmark_rows(tmp_path):
    out = tmp_path / "search.json"
    search.main(
        [
            "--preset",
            "cpu",
            "--sizes",
            "300,100G",
            "--dim",
            "32",
            "--centres",
            "16",
            "--single",
            "20",
            "--batch",
            "64",
            "--out",
            str(out),
        ]
    )
    result = json.loads(out.read_text())
    rows = {(r["size"], r["kind"]): r for r in result["rows"]}
    kinds = ["flat", "ivf", "ivfpq", "hnsw", "matmul"]
    assert list(rows) == [(n, k) for n in (300, 100 * 10**9) for k in kinds]
    assert all("do not fit" in rows[100 * 10**9, k]["skipped"] for k in kinds)  # skipped, not crashed
    small = [rows[300, k] for k in kinds]
    assert all(r["skipped"] is None and 0 <= r["p50_ms"] <= r["p99_ms"] and r["batch_qps"] > 0 for r in small)
    assert all(0 <= r["recall_at_10"] <= 1 for r in small)
    assert rows[300, "flat"]["recall_at_10"] == 1.0  # exact search agrees with the ground truth
    assert rows[300, "matmul"]["recall_at_10"] >= 0.99  # exact too, up to fp32 summation order
    assert {r["backend"] for r in small} == {"faiss-cpu", "torch-cpu"}
    assert rows[300, "ivf"]["params"]["nlist"] >= 1
    assert result["faiss_threads"] >= 1 and result["machine"]["command"]


def test_embed_benchmark_rows(tmp_path):
    out = tmp_path / "embed.json"
    embed.main(
        ["--preset", "cpu", "--images", "40", "--unique", "8", "--batch", "16", "--workers", "2", "--out", str(out)]
    )
    result = json.loads(out.read_text())
    rows = {r["stage"]: r for r in result["rows"]}
    assert list(rows) == ["end-to-end", "decode+prep", "encode", "index build"]
    assert rows["end-to-end"]["images"] == rows["decode+prep"]["images"] == rows["index build"]["images"] == 40
    assert rows["encode"]["images"] == 40
    assert all(r["seconds"] >= 0 and r["images_per_s"] > 0 for r in rows.values())
    assert result["index"] == {"kind": "flat", "backend": "faiss-cpu", "size": 40}
    components = [r for r in result["rows"] if r["stage"] != "end-to-end"]
    bound = next(r for r in components if r["stage"] == result["bound"])
    assert all(bound["images_per_s"] <= r["images_per_s"] for r in components)  # the bound is the slowest one
    target = result["target"]
    assert target["projected_s"] == rows["end-to-end"]["projected_1m_s"]
    assert target["met"] == (target["projected_s"] <= target["seconds"])
    assert result["machine"]["command"]


def test_embed_judge_names_the_slowest_component_and_projects_end_to_end():
    rows = [
        embed.stage_row("end-to-end", 1000, 0.5),
        embed.stage_row("decode+prep", 1000, 0.1),
        embed.stage_row("encode", 1000, 0.4),
        embed.stage_row("index build", 1000, 0.05),
    ]
    bound, target = embed.judge(rows)
    assert bound == "encode"  # 2500 images/s, the slowest component (end-to-end is no component)
    assert target["projected_s"] == 500.0 and target["met"] is False  # 1M images at 2000/s
    fast = [dict(r, images_per_s=1e5, projected_1m_s=10.0) for r in rows]
    assert embed.judge(fast)[1]["met"] is True
