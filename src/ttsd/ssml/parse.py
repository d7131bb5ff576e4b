"""Reading an XML document safely (SSML here, PLS lexicons in ``pls``): no DTD, no entities, no
external references ("billion laughs", file or network reads), bounded size; every error names
its line and column."""

from __future__ import annotations

import re
from typing import Any

from ..errors import InvalidSsml

MAX_CHARS = 64 * 1024


def parse(document: str) -> Any:
    """The document's root element (xml.etree), or InvalidSsml."""
    from xml.etree.ElementTree import ParseError

    import defusedxml.ElementTree as SafeTree
    from defusedxml import DefusedXmlException

    if len(document) > MAX_CHARS:
        raise InvalidSsml(f"the document is {len(document)} characters; the limit is {MAX_CHARS}")
    try:
        return SafeTree.fromstring(document, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as exc:
        raise InvalidSsml(
            f"the document declares a DTD or entities, which are refused ({type(exc).__name__})"
        ) from exc
    except ParseError as exc:
        line, column = exc.position
        reason = re.sub(r":? line \d+, column \d+$", "", str(exc))
        raise InvalidSsml(
            f"the SSML document is not well-formed at line {line}, column {column + 1}: {reason}",
            details={"line": line, "column": column + 1},
        ) from exc
