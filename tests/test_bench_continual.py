"""bench.continual at its smoke size: every recipe of the quality-versus-compute table runs,
the report has the paper-style tables, the choice is made on retention against the
converged joint (on the tuning seed), plots are drawn."""

import hashlib
import json
import shutil

from bench import continual
from trainer.config import TrainConfig
from trainer.model import WEIGHTS
from trainer.snapshot import initial_snapshot


def test_smoke_table(tmp_path):
    out = tmp_path / "out"
    names = [continual.CONVERGED_JOINT, "ct", "ct + replay", continual.DEFAULT]
    result = continual.main(
        [
            "--preset",
            "smoke",
            "--recipes",
            ",".join(names),
            "--seeds",
            "0",
            "--work-dir",
            str(tmp_path / "cache"),
            "--out",
            str(out),
        ]
    )
    saved = json.loads((out / "results.json").read_text())
    assert set(saved["runs"]) == set(names)
    assert saved["machine"]["command"].startswith("python -m bench.continual --preset smoke")
    run = saved["runs"]["ct + replay"]["0"]
    assert [p["phase"] for p in run["phases"]] == [0, 1, 2]
    # one replayed pair per new pair: twice the samples, up to the ragged batches dropped at this tiny size
    assert all(1.5 < v <= 2.5 for v in run["summary"]["compute"]["vs_new"])
    assert saved["runs"]["ct"]["0"]["summary"]["compute"]["vs_new"] == [1.0, 1.0]
    expert = saved["runs"][continual.DEFAULT]["0"]["phases"][2]["train"]
    assert expert["expert_rows"] == expert["replayed"] > 0  # every replayed pair had a stored expert
    assert expert["teacher_forwards"] == expert["pairs"]  # ... so only the new pairs ran the parent
    choice = result["choice"]
    assert "min over domains" in choice["select_on"] and choice["chosen"] in names[1:]
    assert choice["chosen_modx"] == continual.DEFAULT
    report = (out / "report.md").read_text()
    for heading in (
        "## Split `train`",
        "## Split `probe`",
        "## Split `validation`",
        "### Accuracy matrices (R@1)",
        f"% of `{continual.CONVERGED_JOINT}` average",
        "## Drift on the probes",
        "first domain (basic)",
    ):
        assert heading in report
    assert {p.name for p in out.glob("*.png")} == {f"r1_per_phase_{s}.png" for s in ("train", "probe", "validation")}


def test_front_recipes_say_their_budget():
    """The `front` set: the converged joint first, then per method one recipe per budget, whose
    name's multiple of the new phase's samples is 1 + its replay_fraction (0 for the no-replay ones)."""
    front = continual.RECIPE_SETS["front"]
    assert next(iter(front)) == continual.CONVERGED_JOINT
    budgets = {}
    for name, fields in list(front.items())[1:]:
        nominal = float(name.rsplit(" ", 1)[1].removesuffix("x"))
        assert nominal == 1 + fields.get("replay_fraction", 1.0)
        budgets.setdefault(TrainConfig(**fields).method, set()).add(nominal)
    assert budgets == {"ct": {1, 1.5, 2, 3}, "modx": {1, 1.5, 2, 3}}
    assert continual.PRESETS["mini5"]["dataset_kw"]["n_domains"] == 5
    assert 0 not in continual.PRESETS["mini5"]["seeds"]  # seed 0 tuned the recipes


def test_combine_merges_seeds_and_keeps_every_part_of_an_earlier_combination():
    """A result combined from earlier combinations keeps each run's machine and command, and
    its runs are merged by recipe and seed."""

    def part(command, runs):
        return {"machine": {"command": command}, "args": {"seeds": []}, "recipes": dict.fromkeys(runs), "runs": runs}

    first = continual.combine([part("seed 1", {"ct": {"1": "a"}}), part("seed 2", {"ct": {"2": "b"}})], [0])
    again = continual.combine([first, part("seed 3", {"ct": {"3": "c"}, "ewc": {"3": "d"}})], [0])
    assert [m["command"] for m in again["parts"]] == ["seed 1", "seed 2", "seed 3"]
    assert again["runs"] == {"ct": {"1": "a", "2": "b", "3": "c"}, "ewc": {"3": "d"}}
    assert again["args"]["seeds"] == [1, 2, 3] and again["args"]["tune_seeds"] == [0]


def test_combined_report_names_the_machine_of_each_part(tmp_path):
    """Seeds run on different machines are combined into one report that says where each ran."""
    parts = []
    for seed, cpu in ((1, "CPU one"), (2, "CPU two")):
        out = tmp_path / f"seed{seed}"
        continual.main(
            ["--preset", "smoke", "--recipes", "ct", "--seeds", str(seed)]
            + ["--work-dir", str(tmp_path / "cache"), "--out", str(out)]
        )
        saved = json.loads((out / "results.json").read_text())
        saved["machine"]["cpu"] = cpu
        (out / "results.json").write_text(json.dumps(saved))
        parts.append(str(out))
    continual.main(["--combine", ",".join(parts), "--tune-seeds", "0", "--out", str(tmp_path / "all")])
    combined = [line for line in (tmp_path / "all" / "report.md").read_text().splitlines() if "combined from" in line]
    assert [("--seeds 1" in line, "CPU one" in line, "CPU two" in line) for line in combined] == [
        (True, True, False),
        (False, False, True),
    ]


def test_combined_report_names_the_clip0_checkpoint_of_each_part(tmp_path):
    """Two parts that ran with the same --pretrained path but different checkpoints at it are
    told apart by the digest of the weights each one read."""
    parts, digests = [], []
    for seed in (1, 2):
        checkpoint = initial_snapshot("modx-tiny", tmp_path / "pt", seed=seed)  # the same path, rewritten
        digests.append(hashlib.sha256((checkpoint / WEIGHTS).read_bytes()).hexdigest()[:12])
        out = tmp_path / f"seed{seed}"
        continual.main(
            ["--preset", "smoke", "--recipes", "ct", "--seeds", str(seed), "--pretrained", str(checkpoint)]
            + ["--work-dir", str(tmp_path / f"cache{seed}"), "--out", str(out)]
        )
        shutil.rmtree(checkpoint)
        parts.append(str(out))
    continual.main(["--combine", ",".join(parts), "--tune-seeds", "0", "--out", str(tmp_path / "all")])
    combined = [line for line in (tmp_path / "all" / "report.md").read_text().splitlines() if "combined from" in line]
    assert digests[0] != digests[1]
    assert [(digests[0] in line, digests[1] in line) for line in combined] == [(True, False), (False, True)]


def test_a_combined_report_gives_each_clip0_its_own_row():
    """Recipes of a seed that started from one CLIP_0 share its row; a part that started from
    another checkpoint (seed 2's joint here) gets a row of its own, named by its recipes."""

    def cell(r1):
        return {d: {"r1": r1, "r5": r1, "r10": r1} for d in ("i2t", "t2i")}

    def run(clip0, last):
        phases = [{"recall": {"d": cell(r1)}, "splits": {"test": {"d": cell(r1)}}} for r1 in (clip0, last)]
        return {"domains": ["d"], "phases": phases}

    def rows(runs):  # recipe -> i2t R@1 after the last phase
        return {line.split(" | ")[0][2:]: line.split(" | ")[2] for line in continual.final_table(runs, "test")[2:]}

    runs = {"ct": {"1": run(0.1, 0.5), "2": run(0.2, 0.6)}, "ct + replay": {"1": run(0.1, 0.7), "2": run(0.2, 0.8)}}
    assert rows(runs) == {
        "CLIP_0": continual.fmt([0.1, 0.2]),
        "ct": continual.fmt([0.5, 0.6]),
        "ct + replay": continual.fmt([0.7, 0.8]),
    }
    joint = {"joint (converged)": {"1": run(0.1, 0.9), "2": run(0.4, 0.9)}}
    assert rows(joint | runs) == {
        "CLIP_0 of joint (converged)": continual.fmt([0.1, 0.4]),
        "CLIP_0 of ct, ct + replay": continual.fmt([0.1, 0.2]),
        "joint (converged)": continual.fmt([0.9, 0.9]),
        "ct": continual.fmt([0.5, 0.6]),
        "ct + replay": continual.fmt([0.7, 0.8]),
    }
