"""bench.continual at its smoke size: every recipe of the quality-versus-compute table runs,
the report has the paper-style tables, the choice is made on validation, plots are drawn."""

import json

from bench import continual


def test_smoke_table(tmp_path):
    out = tmp_path / "out"
    result = continual.main(["--preset", "smoke", "--recipes", "ct,ct+r1,modx a5+r1 on replay,joint", "--seeds", "0",
                             "--work-dir", str(tmp_path / "cache"), "--out", str(out)])  # fmt: skip
    saved = json.loads((out / "results.json").read_text())
    assert set(saved["runs"]) == {"ct", "ct+r1", "modx a5+r1 on replay", "joint"}
    assert saved["machine"]["command"].startswith("python -m bench.continual --preset smoke")
    run = saved["runs"]["ct+r1"]["0"]
    assert [p["phase"] for p in run["phases"]] == [0, 1, 2]
    # one replayed pair per new pair: twice the samples, up to the ragged batches dropped at this tiny size
    assert all(1.5 < v <= 2.5 for v in run["summary"]["compute"]["vs_new"])
    assert saved["runs"]["ct"]["0"]["summary"]["compute"]["vs_new"] == [1.0, 1.0]
    assert result["choice"]["select_on"] == "validation" and result["choice"]["chosen"] != "joint"
    report = (out / "report.md").read_text()
    for heading in ("## Split `train`", "## Split `probe`", "## Split `validation`", "### Accuracy matrices (R@1)",
                    "% of `joint` average", "## Drift on the probes"):  # fmt: skip
        assert heading in report
    assert {p.name for p in out.glob("*.png")} == {f"r1_per_phase_{s}.png" for s in ("train", "probe", "validation")}
