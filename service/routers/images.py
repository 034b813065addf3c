"""The stored image of a pair."""

from fastapi import APIRouter, Depends, Response

from service.auth import AUTH_RESPONSES, require
from service.buffer import read_image
from service.deps import get_settings
from service.errors import api_error, responses
from service.settings import Settings

router = APIRouter(prefix="/v1/images", tags=["images"], dependencies=[require("read")], responses=AUTH_RESPONSES)


IMAGE_TYPES = {"image/png": {}, "image/jpeg": {}, "image/webp": {}}


@router.get("/{pair_id}", responses={200: {"content": IMAGE_TYPES}, **responses(401, 403, 404, 429)})
def get_image(pair_id: str, settings: Settings = Depends(get_settings)) -> Response:
    try:
        data, content_type = read_image(settings.data_dir, pair_id)
    except FileNotFoundError:
        raise api_error(404, "not_found", f"no image for pair id {pair_id!r}", id=pair_id) from None
    return Response(
        data,
        media_type=content_type,
        headers={"Cache-Control": "private, max-age=300", "X-Content-Type-Options": "nosniff"},
    )
