"""English as a support line says it, written out before an engine reads it: engines' own front
ends read "#4521" as "hash four thousand…", "12/03" as "twelve oh three", "$19.99" as "ten ninety-nine"
(Piper, heard through Whisper) and "400-820-8820" as a subtraction.

Phone numbers are said digit by digit in their groups; order, case and card numbers digit by digit
(after "#", "No.", or words such as "order" and "ticket", and any run of five digits or more);
money as dollars and cents; percentages; dates (US order: 12/03 is December third) and clock
times; ordinals; email addresses and web addresses as they are read out; then the remaining
numbers as words (num2words). American English conventions.
"""

from __future__ import annotations

import datetime
import re

VERSION = "en-2"

_DIGIT = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_MONTHS = tuple(datetime.date(2000, m, 1).strftime("%B") for m in range(1, 13))
_CURRENCY = {"$": ("dollar", "cent"), "€": ("euro", "cent"), "£": ("pound", "penny"), "¥": ("yuan", "fen")}
_SYMBOLS = {"&": " and ", "+": " plus ", "=": " equals ", "@": " at "}

_APPLIES = re.compile(r"[\d@#$%€£¥&+=]|www\.|https?://|\.(?:com|org|net|io)\b", re.IGNORECASE)
# A number ends at a word boundary, or at a full stop that no digit follows (a sentence's end).
_PHONE = re.compile(r"(?<![\w.+])(?:\+?1[-.\s])?(?:\(\d{3}\)\s?|\d{3}[-.\s])\d{3}[-.\s]\d{4}(?!\w)(?!\.\d)")
_URL = re.compile(
    r"\b(?:https?://)?(?:www\.)?[a-z0-9-]+(?:\.[a-z0-9-]+)*\.(?:com|org|net|io|co|us|info|biz)(?:/[\w/-]*)?",
    re.IGNORECASE,
)
_EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b")
_CODE = re.compile(
    r"(?:#\s*|\bNo\.\s*|\b(?:order|ticket|case|account|reference|confirmation|tracking|invoice|"
    r"card ending(?: in)?|extension|ext\.|PIN|code)\s+(?:number\s+|#\s*)?)(\d{3,})\b",
    re.IGNORECASE,
)
_LONG = re.compile(r"(?<![\d,.])\d{5,}(?![\d,.])")
_MONEY = re.compile(r"([$€£¥])\s?(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d{2}))?\b")
_PERCENT = re.compile(r"(\d+)(?:\.(\d+))?\s?%")
_DATE = re.compile(r"\b(1[0-2]|0?[1-9])/(3[01]|[12]\d|0?[1-9])(?:/(\d{4}|\d{2}))?\b")
_ISO_DATE = re.compile(r"\b(\d{4})-(1[0-2]|0[1-9])-(3[01]|[12]\d|0[1-9])\b")
_TIME = re.compile(r"\b([01]?\d|2[0-3]):([0-5]\d)(?:\s?([ap])\.?m\.?\b)?", re.IGNORECASE)
_ORDINAL = re.compile(r"\b(\d+)(?:st|nd|rd|th)\b", re.IGNORECASE)
_NUMBER = re.compile(r"(?<![\w.])(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d+))?(?![\w])")


def applies(text: str) -> bool:
    """Whether normalising can change ``text`` (so other texts keep the keys they had)."""
    return _APPLIES.search(text) is not None


def _words(number: int | float | str, to: str = "cardinal") -> str:
    from num2words import num2words

    return str(num2words(number, lang="en", to=to)).replace(",", "").replace("-", " ")


def digits(run: str, between: str = ", ") -> str:
    """Digit by digit, a comma between each: so an agent reads a number out, and so it is heard
    (Whisper tiny.en heard Piper's "four zero zero, eight two zero, …" as 400-800-888 one take in
    five, and eSpeak's as "a near-of-0"; with commas, every digit on both)."""
    return between.join(_DIGIT[int(d)] for d in run if d.isdigit())


def phone(groups: list[str]) -> str:
    """A phone number's groups, digit by digit, a beat between groups."""
    return "; ".join(digits(g) for g in groups)


def _phone(match: re.Match[str]) -> str:
    return phone(re.findall(r"\d+", match.group()))


def _money(match: re.Match[str]) -> str:
    unit, small = _CURRENCY[match.group(1)]
    whole = int(match.group(2).replace(",", ""))
    cents = int(match.group(3) or 0)
    said = f"{_words(whole)} {unit}{'' if whole == 1 else 's'}"
    if cents:
        plural = "pence" if small == "penny" else f"{small}s"
        said += f" and {_words(cents)} {small if cents == 1 else plural}"
    return said


def _year(year: str) -> str:
    if len(year) == 2:
        year = f"20{year}"
    return _words(int(year), to="year")


def _date(month: int, day: int, year: str | None) -> str:
    said = f"{_MONTHS[month - 1]} {_words(day, to='ordinal')}"
    return f"{said}, {_year(year)}" if year else said


def _time(match: re.Match[str]) -> str:
    hour, minute, half = int(match.group(1)), int(match.group(2)), match.group(3)
    said = _words(hour)
    if minute:
        said += f" oh {_words(minute)}" if minute < 10 else f" {_words(minute)}"
    elif not half:
        said += " hundred" if hour > 12 else " o'clock"
    return f"{said} {half.lower()} m" if half else said


def _url(match: re.Match[str]) -> str:
    address = re.sub(r"^https?://", "", match.group(), flags=re.IGNORECASE)
    return " ".join(
        re.sub(r"^www\.", "w w w.", address, flags=re.IGNORECASE)
        .replace(".", " dot ")
        .replace("/", " slash ")
        .split()
    )


def _spell_address(address: str) -> str:
    return address.replace(".", " dot ").replace("/", " slash ").replace("-", " dash ").replace("@", " at ")


def _code(match: re.Match[str]) -> str:
    """What names the number (with "#" said as "number"), then its digits one by one."""
    before = match.group()[: match.start(1) - match.start()]
    return before.replace("#", "number ") + digits(match.group(1))


def _number(match: re.Match[str]) -> str:
    whole = match.group(1).replace(",", "")
    if match.group(2) is not None:
        return f"{_words(int(whole))} point {digits(match.group(2), ' ')}"
    if len(whole) == 4 and match.group(1) == whole and 1100 <= int(whole) <= 2099:
        return _year(whole)  # a bare four-digit number this side of 2100 is most often a year
    return _words(int(whole))


def normalize(sentence: str) -> str:
    """The sentence with its numbers, signs, codes and addresses written as they are said."""
    if not applies(sentence):
        return sentence
    text = _EMAIL.sub(lambda m: _spell_address(m.group()), sentence)
    text = _URL.sub(_url, text)
    text = _PHONE.sub(_phone, text)
    text = _CODE.sub(_code, text)
    text = _LONG.sub(lambda m: digits(m.group()), text)
    text = _MONEY.sub(_money, text)
    text = _PERCENT.sub(lambda m: f"{_number(m)} percent", text)
    text = _ISO_DATE.sub(lambda m: _date(int(m.group(2)), int(m.group(3)), m.group(1)), text)
    text = _DATE.sub(lambda m: _date(int(m.group(1)), int(m.group(2)), m.group(3)), text)
    text = _TIME.sub(_time, text)
    text = _ORDINAL.sub(lambda m: _words(int(m.group(1)), to="ordinal"), text)
    text = _NUMBER.sub(_number, text)
    for symbol, said in _SYMBOLS.items():
        text = text.replace(symbol, said)
    return " ".join(text.split())
