"""One pair: where it is (GET /v1/pairs/{id}), and delete (DELETE /v1/pairs/{id}, or many
by id or metadata filter with POST /v1/pairs/delete).

A delete writes the tombstones durably (service.tombstones), then answers: from then on
search never returns the ids, replay, reindexing and every later phase skip them, and their
images are gone. Deleting an unknown id is a 404; deleting twice is a no-op that says so.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path

from service import tombstones
from service.auth import AUTH_RESPONSES, ReadKey, WriteKey
from service.buffer import utc_now
from service.deps import get_pair_states, json_body
from service.errors import api_error, responses
from service.pair_state import PairStates
from service.schemas import PAIR_ID, Deleted, DeleteRequest, PairState
from service.serving import ServingState
from service.validation import check_json_values

router = APIRouter(prefix="/v1/pairs", tags=["pairs"], responses=AUTH_RESPONSES)
PairId = Annotated[str, Path(pattern=PAIR_ID, description="the pair's id")]


def known(pair_id: str, states: PairStates) -> PairState:
    state = states.of(pair_id)
    if state.state == "unknown":
        raise api_error(404, "not_found", f"no pair with id {pair_id!r}", id=pair_id)
    return state


def delete_ids(ids: list[str], serving: ServingState) -> Deleted:
    fresh = tombstones.delete(serving.data_dir, ids, utc_now())
    new = set(fresh)
    return Deleted(deleted=fresh, already_deleted=[i for i in dict.fromkeys(ids) if i not in new])


@router.get("/{pair_id}", response_model=PairState, responses=responses(401, 403, 404, 422, 429))
def get_pair(
    pair_id: PairId,
    _: ReadKey,
    states: Annotated[PairStates, Depends(get_pair_states)],
) -> PairState:
    """Where the pair is: queued, buffered (phase), searchable (snapshot, index), trained
    (snapshots), or deleted."""
    return known(pair_id, states)


@router.delete("/{pair_id}", response_model=Deleted, responses=responses(401, 403, 404, 422, 429))
def delete_pair(
    pair_id: PairId,
    _: WriteKey,
    states: Annotated[PairStates, Depends(get_pair_states)],
) -> Deleted:
    """Delete one pair (404 if the id was never posted)."""
    known(pair_id, states)
    return delete_ids([pair_id], states.serving)


@router.post(
    "/delete",
    response_model=Deleted,
    responses=responses(400, 401, 403, 404, 413, 415, 422, 429),
    dependencies=[Depends(json_body)],
)
def delete_pairs(
    body: DeleteRequest,
    _: WriteKey,
    states: Annotated[PairStates, Depends(get_pair_states)],
) -> Deleted:
    """Delete `{"ids": [...]}` (404 naming the first unknown id; nothing is deleted then) or
    every buffered pair matching `{"filter": {key: value}}`."""
    if body.filter is not None:
        check_json_values(body.filter, "filter")
        return delete_ids(states.serving.catalog.matching(body.filter), states.serving)
    for pair_id in body.ids:
        known(pair_id, states)
    return delete_ids(body.ids, states.serving)
