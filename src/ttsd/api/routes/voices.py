from __future__ import annotations

from fastapi import APIRouter

from ... import audio
from ..deps import ServiceDep
from ..models import VoiceInfo, VoicesResponse

router = APIRouter(tags=["voices"])


@router.get("/v1/voices", response_model=VoicesResponse)
async def list_voices(service: ServiceDep) -> VoicesResponse:
    catalogue = service.catalogue
    states = service.engine_states()
    voices = []
    for v in catalogue.listing():
        state = states.get(v["engine"], "ready")
        voices.append(VoiceInfo(**v, ready=state == "ready", engine_state=state))
    return VoicesResponse(
        voices=voices,
        languages=catalogue.languages,
        formats=list(audio.FORMATS),
        default=catalogue.default_voice.name,
        engines=states,
    )
