"""The API's request and response models, shared by the routers and by service.client (so
the client cannot drift from the API). Pydantic only: importing this loads no model code.

Listings keep fields they do not name (`extra="allow"`): a phase's or a snapshot's record
can grow without breaking older clients.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, model_validator

# ---------------------------------------------------------------- pairs


class PairIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    id: str | None = Field(None, description="1-128 of A-Z a-z 0-9 . _ : - ; generated when absent")
    text: str = Field(description="the caption")
    image: str = Field(description="PNG, JPEG or WebP bytes, standard base64")
    metadata: dict[str, Any] | None = None


class PairsIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    pairs: list[PairIn]


PAIR_ID = r"^[A-Za-z0-9._:-]{1,128}$"
PairStep = Literal["unknown", "queued", "buffered", "searchable", "trained", "deleted"]


class Searchable(BaseModel):
    snapshot: int
    index: int


class PairState(BaseModel):
    """Where a pair is (service.pair_state): `state` is the furthest step reached."""

    id: str
    state: PairStep
    phase: int | None = Field(None, description="the phase buffer it was written to")
    searchable: Searchable | None = Field(None, description="the served (snapshot, index) that holds it")
    trained_in: list[int] = Field([], description="snapshots whose phase trained on it (its own, or as replay)")


class Accepted(BaseModel):
    id: str
    status: Literal["queued", "duplicate", "deleted"]


class AcceptedOut(BaseModel):
    accepted: list[Accepted]
    states: list[PairState] | None = Field(None, description="with `wait`: where each pair is when this answers")


class DeleteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    ids: list[Annotated[str, Field(pattern=PAIR_ID)]] | None = Field(
        None, max_length=10_000, description="pair ids to delete"
    )
    filter: dict[str, Any] | None = Field(None, description="delete every buffered pair whose metadata matches")

    @model_validator(mode="after")
    def one_selector(self):
        if (self.ids is None) == (self.filter is None):
            raise ValueError("give exactly one of 'ids' or 'filter'")
        if self.filter is not None and not self.filter:
            raise ValueError("an empty filter would delete everything: name at least one metadata key")
        return self


class Deleted(BaseModel):
    deleted: list[str] = Field(description="ids deleted by this request")
    already_deleted: list[str] = Field(description="ids that were deleted before (nothing changed)")


# ---------------------------------------------------------------- search


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    text: str | None = Field(None, min_length=1, max_length=1000, description="text query")
    image: str | None = Field(None, description="base64 PNG/JPEG/WebP query")
    id: str | None = Field(
        None, min_length=1, max_length=128, description="an existing pair's id: its stored image is the query"
    )
    target: Literal["image", "text"] = Field("image", description="rank the gallery's images or its captions")
    k: int = Field(10, ge=1, le=1000)
    min_score: float | None = Field(None, ge=-1.0, le=1.0)
    filter: dict[str, Any] | None = Field(None, description="metadata key -> required value")

    @model_validator(mode="after")
    def one_query(self):
        if [self.text, self.image, self.id].count(None) != 2:
            raise ValueError("give exactly one of 'text', 'image' or 'id'")
        return self


class Hit(BaseModel):
    id: str
    score: float
    text: str
    metadata: dict


class SearchResponse(BaseModel):
    snapshot: int
    index: int
    target: Literal["image", "text"]
    results: list[Hit]


# ---------------------------------------------------------------- phases


class Loose(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class PhaseOut(Loose):
    phase: int
    status: str = Field(description="open / sealed / training / trained / retry / failed")
    n: int | None = Field(None, description="pairs in the phase")


class PhasesOut(BaseModel):
    phases: list[PhaseOut]
    open: int | None = Field(description="the open phase's number")
    lag: int | None = Field(None, description="messages the consumer group is behind the topic (None: unknown)")
    next_cursor: int | None = Field(None, description="pass as `cursor` for the next page; None: the last page")


class SealOut(BaseModel):
    status: Literal["sealed", "requested"]
    request: str
    phase: PhaseOut | None = Field(None, description="the phase sealed (its record)")
    joined: bool | None = None
    message: str | None = None


# ---------------------------------------------------------------- snapshots, recall, drift


class SnapshotOut(Loose):
    snapshot: int = Field(validation_alias=AliasChoices("snapshot", "version"))
    parent: int | None = None
    phase: int | None = None
    status: str | None = Field(None, description="accepted / rejected / superseded; None until judged")


class SnapshotsOut(BaseModel):
    serving: dict = Field(description="the serving pointer: {snapshot, index}")
    snapshots: list[SnapshotOut]
    next_cursor: int | None = None


class RecallRow(Loose):
    snapshot: int
    parent: int | None
    status: str
    recall: dict = Field(description="phase probe -> {i2t, t2i} -> {r1, r5, r10}")
    mean_r1_old: float | None = None
    mean_r1_all: float | None = None


class RecallOut(BaseModel):
    snapshots: list[RecallRow]
    next_cursor: int | None = None


class Transition(Loose):
    to: int = Field(description="the snapshot; `from` is its parent")


class DriftOut(BaseModel):
    transitions: list[Transition]
    next_cursor: int | None = None


# ---------------------------------------------------------------- keys


class KeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    scope: Literal["read", "write", "admin"]
    name: str | None = Field(None, description="1-64 of A-Z a-z 0-9 . _ - ; default <scope>-<n>")
    rate: float | None = Field(None, gt=0, description="requests/s; default the key_rate setting")


class KeyOut(BaseModel):
    name: str
    scope: str
    rate: float | None
    created: float
    last_used: float | None
    revoked: float | None


class NewKey(KeyOut):
    key: str = Field(description="the secret: shown this once, stored only as a hash")


class KeysOut(BaseModel):
    keys: list[KeyOut]


# ---------------------------------------------------------------- health


class Ready(Loose):
    status: str = Field(description="ready / not ready")
    checks: dict[str, bool]
    serving: dict | None = Field(None, description="{snapshot, index, size} the API has loaded")
