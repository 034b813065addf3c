"""The training recipe as data: one dataclass, the only place recipe fields and defaults live.

`TrainConfig()` is THE default recipe: the service's trainer worker runs it (service.settings
holds one nested `recipe`, read from `MODX_RECIPE__<FIELD>`), and `modx simulate` with no
recipe flags runs it too (its options are generated from these fields, help included).
Adding an option is one field here (with `opt(default, help)`) plus its use.
It is recorded in every snapshot.

The default is expert-embedding Mod-X with full-coverage replay (chosen on seed 0 of two
streams by the minimum over domains of final retention against a converged joint; see
docs/results.md): replayed pairs are distilled against the snapshot that last trained them,
new pairs against the parent, each teacher's softmax at its own logit scale, and only the
rows the student has forgotten. PAPER_MODX is the paper's Mod-X exactly, kept as the
reference.
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields, replace

METHODS = ("ct", "ewc", "lwf", "modx", "joint")
DISTILLING = ("lwf", "modx")
CHOICES = {
    "method": METHODS,
    "kl_reduction": ("sum", "mean"),
    "distill_on": ("all", "replay"),
    "replay_policy": ("uniform", "balanced", "reservoir"),
    "replay_draw": ("epoch", "phase"),
}
MACHINERY = ("device", "compile", "seed", "cache_teacher", "checkpoint_every")  # never change what is learnt


def opt(default, help: str):
    """A recipe field: its default and the help text `modx simulate --help` shows."""
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class TrainConfig:
    method: str = opt("modx", "ct | ewc | lwf | modx | joint")
    epochs: int = opt(10, "epochs per phase")
    batch_size: int = opt(64, "pairs per step")
    lr: float = opt(5e-4, "peak learning rate (AdamW, warmup then cosine)")
    warmup: float = opt(0.2, "warmup over this fraction of the phase's steps (the Mod-X authors' 20%)")
    lr_image: float = opt(1.0, "learning-rate multiplier of the image tower")
    lr_text: float = opt(1.0, "learning-rate multiplier of the text tower")
    weight_decay: float = opt(0.1, "AdamW weight decay (not on gains, biases, embeddings, logit scale)")
    seed: int = opt(0, "seed of init, batches, replay draws")
    # Mod-X (the paper's form is PAPER_MODX: raw cosines, KL summed over rows, alpha 20, no replay)
    alpha: float = opt(0.5, "Mod-X / LwF distillation weight (the paper's form, raw cosines summed over rows: 20)")
    temperature: float = opt(1.0, "distillation temperature (1: raw cosines, the paper)")
    kl_reduction: str = opt("mean", "sum (paper) | mean over rows")
    distill_on: str = opt(
        "all", "all | replay: the KL's rows are every pair, or only the replayed ones (new rows learn freely)"
    )
    forgotten_only: bool = opt(
        True,
        "Mod-X screening also drops the rows whose match the student already gives at least "
        "the teacher's probability: the KL restores what was forgotten, never holds back what was learnt",
    )
    teacher_scale: bool = opt(
        True,
        "softmax each teacher's similarities at that teacher's own logit scale (the retrieval "
        "distribution it served), the student's alike, instead of `temperature`",
    )
    expert: bool = opt(
        True,
        "replayed rows are distilled against their stored expert embeddings (per source "
        "snapshot), new rows against the parent; old rows cost no teacher forward",
    )
    beta: float = opt(0.0, "expert feature term beta * (1 - cos(student, stored)), both towers, replayed rows")
    expert_refresh: bool = opt(
        True, "a replayed pair's stored embeddings are replaced by the snapshot that replayed it"
    )
    cache_teacher: bool = opt(True, "reuse teacher embeddings every epoch (augmentation off)")
    augment: bool = opt(False, "random 2-pixel translation of each batch")
    # EWC
    ewc_lambda: float = opt(1000.0, "EWC penalty weight")
    fisher_batches: int = opt(16, "batches of the diagonal Fisher estimate")
    # replay of older pairs mixed into each phase
    replay_fraction: float = opt(1.0, "older pairs per new pair, per epoch (0.25 = 25%)")
    replay_policy: str = opt("balanced", "uniform | balanced (equal share per older phase) | reservoir")
    replay_draw: str = opt(
        "epoch",
        "epoch: each epoch takes the next pairs of a cycled permutation of the whole "
        "store, so every stored pair comes back about equally often | phase: one fixed subset",
    )
    replay_size: int = opt(2000, "reservoir capacity")
    # WiSE-FT style weight averaging with the parent after the phase (0 = off)
    merge: float = opt(0.0, "WiSE-FT weight of the parent after each phase (0 = off)")
    # machinery
    device: str = opt("cpu", "cpu | cuda")
    compile: bool = opt(False, "torch.compile the student (GPU hosts)")
    checkpoint_every: int = opt(50, "steps between resumable checkpoints (0 = off)")

    def __post_init__(self):
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, not {getattr(self, name)!r}")
        positive = ("epochs", "temperature", "lr_image", "lr_text", "fisher_batches", "replay_size")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, not {getattr(self, name)!r}")
        if self.batch_size < 2:
            raise ValueError("batch_size must be >= 2")
        if not 0 <= self.warmup < 1:
            raise ValueError("warmup is a fraction of the phase's steps: 0 <= warmup < 1")
        if not 0 <= self.merge <= 1:
            raise ValueError("merge must be within [0, 1]")
        for name in ("lr", "alpha", "beta", "weight_decay", "ewc_lambda", "replay_fraction", "checkpoint_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, not {getattr(self, name)!r}")

    @property
    def distills(self) -> bool:
        return self.method in DISTILLING

    @property
    def experts(self) -> bool:
        """Expert-embedding Mod-X is on (method modx with `expert`; other methods ignore it)."""
        return self.method == "modx" and self.expert and self.replay_fraction > 0

    @property
    def screening(self) -> bool:
        return self.method == "modx"

    def to_dict(self) -> dict:
        return asdict(self)

    def ignored(self) -> set[str]:
        """The fields this recipe's method does not use (and those that never change the model)."""
        ignored = {"cache_teacher", "checkpoint_every"}
        if not self.distills:
            ignored |= {"alpha", "temperature", "kl_reduction", "distill_on", "teacher_scale", "forgotten_only"}
        if not self.screening:
            ignored.add("forgotten_only")
        if self.teacher_scale:
            ignored.add("temperature")
        if not self.experts:
            ignored |= {"expert", "beta", "expert_refresh"}
        if self.method != "ewc":
            ignored |= {"ewc_lambda", "fisher_batches"}
        if self.method == "joint":
            ignored |= {"replay_fraction", "merge"}
        if self.method == "joint" or self.replay_fraction == 0:
            ignored |= {"replay_policy", "replay_size", "replay_draw"}
        if self.replay_policy != "reservoir":
            ignored.add("replay_size")
        return ignored

    def canonical(self) -> "TrainConfig":
        """The same recipe with the ignored fields set to their defaults, so two configs that
        train the same model compare equal (e.g. ct with alpha 5 and with alpha 20)."""
        default = TrainConfig()
        return replace(self, **{name: getattr(default, name) for name in self.ignored()})

    def key(self) -> dict:
        """What identifies the recipe: the fields that differ from the defaults, after
        `canonical()` (so adding a new option with a default changes no existing key)."""
        default = asdict(TrainConfig())
        return {k: v for k, v in asdict(self.canonical()).items() if v != default[k]}

    def recipe(self) -> dict:
        """The fields that shape what this method learns, as /v1/snapshots shows them."""
        machinery = set(MACHINERY) | self.ignored()
        return {k: v for k, v in asdict(self).items() if k not in machinery}

    def with_(self, **changes) -> "TrainConfig":
        return replace(self, **changes)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


# Ni et al. (ICML 2023) exactly: the screened KL of raw cosines against the parent, summed over
# rows, alpha 20, no replay and none of the controls beyond the paper
PAPER_LOSS = dict(
    alpha=20.0,
    temperature=1.0,
    kl_reduction="sum",
    distill_on="all",
    teacher_scale=False,
    forgotten_only=False,
    expert=False,
    beta=0.0,
    expert_refresh=False,
)
PAPER_MODX = dict(method="modx", replay_fraction=0.0, **PAPER_LOSS)


def recipe_fields() -> list[tuple[str, type, object, str]]:
    """(name, type, default, help) of every recipe field, for generated CLI options."""
    types = {"str": str, "int": int, "float": float, "bool": bool}
    out = []
    for f in fields(TrainConfig):
        assert f.default is not MISSING
        kind = types[f.type] if isinstance(f.type, str) else f.type
        out.append((f.name, kind, f.default, f.metadata.get("help", "")))
    return out
