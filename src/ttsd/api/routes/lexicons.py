from __future__ import annotations

from fastapi import APIRouter

from ..deps import ServiceDep
from ..models import LexiconInfo, LexiconsResponse

router = APIRouter(tags=["voices"])


@router.get("/v1/lexicons", response_model=LexiconsResponse)
async def list_lexicons(service: ServiceDep) -> LexiconsResponse:
    """The pronunciation lexicons requests may name (``"lexicons": [...]``), from TTSD_LEXICON_DIR."""
    catalogue = service.catalogue
    return LexiconsResponse(
        lexicons=[LexiconInfo(**info) for info in catalogue.lexicons.listing()],
        alphabets={name: list(spec.alphabets) for name, spec in catalogue.specs.items()},
    )
