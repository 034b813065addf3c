"""Training configuration as data: one dataclass, recorded in every snapshot."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

METHODS = ("ct", "ewc", "lwf", "modx", "joint")
DISTILLING = ("lwf", "modx")


@dataclass(frozen=True)
class TrainConfig:
    method: str = "modx"  # ct | ewc | lwf | modx | joint
    epochs: int = 5
    batch_size: int = 64
    lr: float = 5e-4
    warmup_steps: int = 10
    weight_decay: float = 0.1
    seed: int = 0
    # Mod-X (paper defaults: raw cosines, KL summed over rows, alpha 20)
    alpha: float = 20.0
    temperature: float = 1.0
    kl_reduction: str = "sum"  # sum | mean
    distill_on: str = "all"  # all | replay: the KL's rows are every pair, or only the replayed ones
    cache_teacher: bool = True  # reuse teacher embeddings every epoch (augmentation off)
    augment: bool = False
    # EWC
    ewc_lambda: float = 1000.0
    fisher_batches: int = 16
    # replay of older pairs mixed into each phase
    replay_fraction: float = 0.0  # older pairs per new pair (0.25 = 25%)
    replay_policy: str = "uniform"  # uniform | balanced | reservoir
    replay_size: int = 2000  # reservoir capacity
    # WiSE-FT style weight averaging with the parent after the phase (0 = off)
    merge: float = 0.0
    # machinery
    device: str = "cpu"
    compile: bool = False
    checkpoint_every: int = 50  # steps between resumable checkpoints (0 = off)

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, not {self.method!r}")
        if self.kl_reduction not in ("sum", "mean"):
            raise ValueError(f"kl_reduction must be 'sum' or 'mean', not {self.kl_reduction!r}")
        if self.replay_policy not in ("uniform", "balanced", "reservoir"):
            raise ValueError(f"replay_policy must be uniform, balanced or reservoir, not {self.replay_policy!r}")
        if self.distill_on not in ("all", "replay"):
            raise ValueError(f"distill_on must be 'all' or 'replay', not {self.distill_on!r}")
        if self.temperature <= 0:
            raise ValueError("temperature must be > 0")

    @property
    def distills(self) -> bool:
        return self.method in DISTILLING

    @property
    def screening(self) -> bool:
        return self.method == "modx"

    def to_dict(self) -> dict:
        return asdict(self)

    def ignored(self) -> set[str]:
        """The fields this recipe's method does not use (and those that never change the model)."""
        ignored = {"cache_teacher", "checkpoint_every"}
        if not self.distills:
            ignored |= {"alpha", "temperature", "kl_reduction", "distill_on"}
        if self.method != "ewc":
            ignored |= {"ewc_lambda", "fisher_batches"}
        if self.method == "joint":
            ignored |= {"replay_fraction", "merge"}
        if self.method == "joint" or self.replay_fraction == 0:
            ignored |= {"replay_policy", "replay_size"}
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
        machinery = {"device", "compile", "seed"} | self.ignored()
        return {k: v for k, v in asdict(self).items() if k not in machinery}

    def with_(self, **changes) -> "TrainConfig":
        return replace(self, **changes)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})
