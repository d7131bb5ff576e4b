"""The soak's traffic model: a day of a support line's requests, compressed, and deterministic.

A catalogue of distinct replies (1 to 4 sentences) is built from the support bot's templates
(``bench/support_corpus.py``, English, spoken by Piper ``en-joe``) and from Mandarin ones below
(spoken by eSpeak NG ``zh-female``), their slots filled from the same kind of pools. Requests pick a
reply by a Zipf law over the catalogue's rank, with the exponent solved so that the run's share of
repeats (a request whose text was asked before) comes out at ``repeats`` (58 %: the original
service's day). Arrivals are an open loop: a Poisson stream at a base rate, with a burst at several
times that rate every so often (the lunch-hour and outage spikes of a real day).
"""

from __future__ import annotations

import math
import random
import string
from dataclasses import dataclass

import numpy as np

from ttsd.text import split_sentences

from . import support_corpus

# Mandarin support replies: openings and closings shared, one sentence carrying a slot.
_ZH_THANKS = "感谢您的来电。"
_ZH_SUPPORT = "您好，这里是客户服务中心。"
_ZH_ANYTHING = "还有什么可以帮您的吗？"
_ZH_DAY = "祝您生活愉快。"
ZH_TEMPLATES: tuple[tuple[str, ...], ...] = (
    (_ZH_THANKS, "您的订单{order}已经发货，预计{date}送达。", _ZH_ANYTHING),
    (_ZH_SUPPORT, "您的退款{amount}已经退回原支付账户。", "到账大约需要三到五个工作日。", _ZH_ANYTHING),
    (_ZH_THANKS, "订单{order}今天正在派送中。", _ZH_DAY),
    ("请您稍等，客服人员大约两分钟后为您服务。",),
    (_ZH_SUPPORT, "{name}，您的预约已确认在{date}。", "详细信息已发送到您的邮箱。"),
    (_ZH_THANKS, "您本期账单金额为{amount}，还款日是{date}。", _ZH_ANYTHING),
    (_ZH_SUPPORT, "订单{order}因天气原因延误，现在预计{date}送达。", "给您带来不便，我们深表歉意。",
     _ZH_ANYTHING),
    (_ZH_THANKS, "您的工单{order}已转交专家处理。", "他们会在一个工作日内联系您。"),
    (_ZH_SUPPORT, "您的会员将于{date}自动续费，费用为{amount}。", _ZH_DAY),
    (_ZH_THANKS, "订单{order}的收货地址已经更新。", _ZH_ANYTHING),
    (_ZH_SUPPORT, "您的付款{amount}被银行拒绝了。", "请核对银行卡信息后重试。", _ZH_ANYTHING),
    (_ZH_THANKS, "维修师傅将在{date}下午上门。", "请确保家中有人。", _ZH_DAY),
)  # fmt: skip
_ZH_NAMES = ("王先生", "李女士", "张先生", "刘女士", "陈先生", "杨女士", "赵先生", "黄女士", "周先生",
             "吴女士")  # fmt: skip

# Each reply is asked for in one format, as one channel (phone line or app) would.
FORMATS, FORMAT_WEIGHTS = ("mp3", "wav"), (0.7, 0.3)


@dataclass(frozen=True)
class Request:
    text: str
    voice: str
    format: str

    def body(self) -> dict[str, str]:
        return {"text": self.text, "voice": self.voice, "format": self.format}


@dataclass(frozen=True)
class Traffic:
    catalogue: int  # distinct replies the requests are drawn from
    zipf_s: float
    schedule: list[tuple[float, Request]]  # (seconds from the start, request), in order
    repeat_share: float  # requests whose exact request was made before, in this schedule
    sentences: dict[int, int]  # catalogue replies by number of sentences
    zh_share: float  # share of the requests in Mandarin


def _zh_pools(rng: random.Random) -> dict[str, tuple[str, ...]]:
    dates = tuple(f"{m}月{d}日" for m in (3, 4) for d in range(1, 31, 3))
    amounts = tuple(f"{rng.randint(5, 900)}元" for _ in range(60))
    orders = tuple(str(n) for n in rng.sample(range(10_000, 100_000), 400))
    return {"order": orders, "name": _ZH_NAMES, "date": dates, "amount": amounts}


def _fill(
    template: tuple[str, ...], pools: dict[str, tuple[str, ...]], rng: random.Random, joiner: str
) -> str:
    # Some replies are one sentence (the slot-bearing one when there is one), the bot's short
    # confirmations; some skip the closing line: so replies run from 1 to 4 sentences.
    sentences = template
    roll = rng.random()
    if len(template) > 1 and roll < 0.2:
        sentences = (next((s for s in template if "{" in s), template[0]),)
    elif len(template) > 2 and roll < 0.45:
        sentences = template[:-1]
    text = joiner.join(sentences)
    slots = [name for _, name, _, _ in string.Formatter().parse(text) if name]
    return text.format(**{slot: rng.choice(pools[slot]) for slot in slots})


def catalogue(n: int, *, zh_share: float = 0.25, seed: int = 2025) -> list[Request]:
    """``n`` distinct requests, most popular first; a template's share of them follows its own Zipf
    rank, so the common templates (and their shared sentences) dominate, as in a bot's logs. The
    Mandarin ones are spread evenly over the ranks, so even a short run's requests (which the top
    ranks dominate) are about ``zh_share`` Mandarin."""
    rng = random.Random(seed)
    en_pools = support_corpus._pools(seed)
    zh_pools = _zh_pools(rng)
    en_weights = [1.0 / (rank + 1) for rank in range(len(support_corpus.TEMPLATES))]
    zh_weights = [1.0 / (rank + 1) for rank in range(len(ZH_TEMPLATES))]
    seen: set[str] = set()
    out: list[Request] = []
    while len(out) < n:
        if math.floor((len(out) + 1) * zh_share) > math.floor(len(out) * zh_share):
            template = rng.choices(ZH_TEMPLATES, weights=zh_weights)[0]
            text, voice = _fill(template, zh_pools, rng, ""), "zh-female"
        else:
            template = rng.choices(support_corpus.TEMPLATES, weights=en_weights)[0]
            text, voice = _fill(template, en_pools, rng, " "), "en-joe"
        if text not in seen:
            seen.add(text)
            out.append(Request(text, voice, rng.choices(FORMATS, weights=FORMAT_WEIGHTS)[0]))
    return out


def zipf_picks(n: int, draws: int, repeats: float, seed: int) -> tuple[float, np.ndarray]:
    """The Zipf exponent over ``n`` ranks at which ``draws`` draws (from fixed uniforms) repeat an
    earlier draw ``repeats`` of the time, and those draws' ranks. Bisection: a steeper law sends
    more draws to the top ranks, so the repeat share grows with the exponent."""
    uniforms = np.random.default_rng(seed).random(draws)
    ranks = np.arange(1, n + 1, dtype=float)

    def picks(s: float) -> np.ndarray:
        cdf = np.cumsum(ranks**-s)
        return np.minimum(np.searchsorted(cdf / cdf[-1], uniforms), n - 1)

    low, high = 0.0, 4.0
    for _ in range(40):
        s = (low + high) / 2
        if 1 - len(np.unique(picks(s))) / max(draws, 1) < repeats:
            low = s
        else:
            high = s
    return high, picks(high)


def arrivals(seconds: float, rate: float, *, burst_every: float, burst_seconds: float,
             burst_factor: float, seed: int = 7) -> list[float]:  # fmt: skip
    """Poisson arrival times over ``seconds``: ``rate`` per second, ``burst_factor`` times that for
    ``burst_seconds`` at the end of every ``burst_every`` seconds (so the first minute has one too)."""

    def rate_at(t: float) -> float:
        in_burst = burst_every > 0 and t % burst_every >= burst_every - burst_seconds
        return rate * (burst_factor if in_burst else 1.0)

    rng = random.Random(seed)
    peak = rate * max(burst_factor, 1.0)
    times: list[float] = []
    t = 0.0
    while True:
        # Thinning: candidates at the peak rate, kept with the rate's share of the peak.
        t += rng.expovariate(peak)
        if t >= seconds:
            return times
        if rng.random() * peak < rate_at(t):
            times.append(t)


def traffic(seconds: float, rate: float, *, catalogue_size: int, repeats: float = 0.58,
            burst_every: float = 60.0, burst_seconds: float = 5.0, burst_factor: float = 4.0,
            zh_share: float = 0.25, seed: int = 2025) -> Traffic:  # fmt: skip
    times = arrivals(
        seconds, rate, burst_every=burst_every, burst_seconds=burst_seconds, burst_factor=burst_factor,
        seed=seed + 1,
    )  # fmt: skip
    replies = catalogue(catalogue_size, zh_share=zh_share, seed=seed)
    s, ranks = zipf_picks(len(replies), len(times), repeats, seed + 2)
    picks = [replies[int(rank)] for rank in ranks]
    lengths: dict[int, int] = {}
    for reply in replies:
        count = len(split_sentences(reply.text))
        lengths[count] = lengths.get(count, 0) + 1
    return Traffic(
        catalogue=len(replies),
        zipf_s=s,
        schedule=list(zip(times, picks, strict=True)),
        repeat_share=1 - len(set(picks)) / len(picks) if picks else 0.0,
        sentences=dict(sorted(lengths.items())),
        zh_share=sum(p.voice.startswith("zh") for p in picks) / len(picks) if picks else 0.0,
    )
