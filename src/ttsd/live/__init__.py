"""Live sessions: text in as it is written, audio out as it is made, contexts cancelled at once.

``events`` types what crosses the protocol boundary, ``context`` is one bot turn, ``session`` one
socket's contexts and outbox, ``limits`` their bounds. The protocols on the wire (ttsd's own,
ElevenLabs' stream-input) live in the API layer and only translate.
"""
