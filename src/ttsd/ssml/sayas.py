"""SSML's ``say-as``: a span written out as the words the engine is to say, in English or Mandarin,
so "4521" said as digits and the same digits typed out as words reach one cached sentence."""

from __future__ import annotations

import re

from ..textnorm import en, zh

_LETTERS_ZH = {str(d): "零一二三四五六七八九"[d] for d in range(10)}


def _spell(text: str, chinese: bool) -> str:
    out = []
    for ch in text:
        if ch.isdigit():
            out.append(_LETTERS_ZH[ch] if chinese else en.digits(ch))
        elif ch.isalnum():
            out.append(ch.upper())
    return (" " if chinese else ", ").join(out)  # a beat between letters, as an agent spells


def _date(text: str, fmt: str, chinese: bool) -> str:
    """``format`` as SSML writes it (mdy, dmy, ymd, md, dm, ym, my, y, m, d): the order of the
    numbers in the text, whatever separates them."""
    numbers = re.findall(r"\d+", text)
    fmt = (fmt or "mdy").lower()
    if len(numbers) != len(fmt) or not set(fmt) <= set("ymd"):
        return text
    parts = dict(zip(fmt, numbers, strict=True))
    year, month, day = parts.get("y"), parts.get("m"), parts.get("d")
    if chinese:
        said = f"{zh._digits(year)}年" if year else ""
        said += f"{zh._cardinal(month)}月" if month else ""
        return said + (f"{zh._cardinal(day)}日" if day else "")
    if month and not 1 <= int(month) <= 12:
        return text
    words = []
    if month:
        words.append(en._MONTHS[int(month) - 1])
    if day:
        words.append(en._words(int(day), to="ordinal"))
    said = " ".join(words)
    if year:
        said = f"{said}, {en._year(year)}" if said else en._year(year)
    return said


def say_as(text: str, interpret_as: str, fmt: str, language: str) -> str | None:
    """The words for ``text`` read as ``interpret_as``; None when it is not a kind ttsd knows."""
    chinese = language == "cmn"
    kind = interpret_as.lower()
    digits = "".join(ch for ch in text if ch.isdigit())
    if kind in ("characters", "spell-out", "verbatim"):
        return _spell(text, chinese)
    if kind == "digits":
        return zh._digits(digits) if chinese else en.digits(digits)
    number = re.fullmatch(r"([\d,]+)(?:\.(\d+))?", text.strip())
    if kind in ("cardinal", "number") and number:
        if chinese:
            return zh.normalize(text.strip().replace(",", ""))
        whole = en._words(int(number.group(1).replace(",", "")))
        return f"{whole} point {en.digits(number.group(2), ' ')}" if number.group(2) else whole
    if kind == "ordinal" and digits:
        return f"第{zh._cardinal(digits)}" if chinese else en._words(int(digits), to="ordinal")
    if kind == "telephone" and digits:
        if chinese:
            return zh._digits(digits, zh._PHONE_DIGITS)
        return en.phone(re.findall(r"\d+", text))
    if kind == "currency":
        amount = text.strip()
        if chinese:
            return zh.normalize(amount if re.search(r"[¥￥$€£元]", amount) else f"{amount}元")
        return en.normalize(amount if re.search(r"[$€£¥]", amount) else f"${amount}")
    if kind == "date":
        return _date(text, fmt, chinese)
    if kind == "time" and re.search(r"\d", text):
        return zh.normalize(text) if chinese else en.normalize(text)
    return None
