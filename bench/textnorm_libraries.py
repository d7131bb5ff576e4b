"""Text-normalisation libraries measured for issue 28 (results: bench/results/textnorm-libraries.md).
Each runs in a venv of its own (they pull in pynini, 0.6-1 GB), never in the service's:

    python3.11 -m venv /tmp/tn && /tmp/tn/bin/pip install wetext wetextprocessing nemo-text-processing psutil
    /tmp/tn/bin/python bench/textnorm_libraries.py wetext en warm /tmp/wetext-en.json

One library x one language per process, so import/load/RSS numbers are clean.

usage: python bench.py LIB LANG PHASE OUTJSON
  LIB   = wetextprocessing | wetext | nemo
  LANG  = en | zh
  PHASE = cold | warm | compile   (meaning depends on LIB, see load())
"""

import json
import math
import os
import pathlib
import sys
import time

T0 = time.perf_counter()

NET_EVENTS = []


def _audit(event, args):
    # Record every attempt to touch the network (DNS or connect) and url opens.
    if event in (
        "socket.connect",
        "socket.getaddrinfo",
        "socket.gethostbyname",
        "urllib.Request",
        "http.client.connect",
    ):
        NET_EVENTS.append([event, repr(args)[:200]])


sys.addaudithook(_audit)


def rss_kb():
    vals = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS", "VmHWM")):
                k, v = line.split(":")
                vals[k] = int(v.split()[0])
    return vals


LIB, LANG, PHASE, OUT = sys.argv[1:5]
CACHE = os.environ.get("TN_CACHE", "/tmp/tn-cache")

REPLY = {
    "en": (
        "Please call 400-820-8820. Your order #4521 ships on 12/03 at 3:30 pm. "
        "The total is $19.99, or 20% off. Visit acme.com or email help@acme.com."
    ),
    "zh": "请拨打400-820-8820，订单号4521，金额19.99元，12月3日15:30送达，优惠20%。",
}
CASES = {
    "en": [
        "Call 1-800-555-0199",
        "It costs €5.50",
        "the 3rd of May",
        "on 2026-12-03",
        "at 15:30",
        "1,234,567 items",
        "v2.0 released",
        "ticket #A12",
    ],
    "zh": ["拨打110", "电话13812345678", "¥99", "3.5%", "2026年12月3日", "第3名", "下午3:30"],
}

if os.environ.get("REPLY_OVERRIDE"):
    REPLY[LANG] = os.environ["REPLY_OVERRIDE"]
res = {"lib": LIB, "lang": LANG, "phase": PHASE, "hf_hub_offline": os.environ.get("HF_HUB_OFFLINE")}
res["rss_baseline_kb"] = rss_kb()

# ---- import ----
t = time.perf_counter()
if LIB == "wetextprocessing":
    if LANG == "en":
        from tn.english.normalizer import Normalizer as N
    else:
        from tn.chinese.normalizer import Normalizer as N
elif LIB == "wetext":
    from wetext import Normalizer as N
elif LIB == "nemo":
    from nemo_text_processing.text_normalization.normalize import Normalizer as N
else:
    raise SystemExit("bad lib")
res["import_s"] = time.perf_counter() - t
res["rss_after_import_kb"] = rss_kb()

# ---- build / load ----
t = time.perf_counter()
c0 = time.process_time()
if LIB == "wetextprocessing":
    if PHASE == "compile":
        # force a grammar compile from source into a scratch cache dir
        norm = N(cache_dir=f"{CACHE}/wetextprocessing_{LANG}", overwrite_cache=True)
    else:
        # default: loads the pre-built FSTs shipped inside the wheel (site-packages/tn/*.fst)
        norm = N()
    fn = norm.normalize
elif LIB == "wetext":
    norm = N(lang=LANG, operator="tn")
    fn = norm.normalize
elif LIB == "nemo":
    cd = f"{CACHE}/nemo"
    if PHASE == "nocache":
        cd = None
    norm = N(input_case="cased", lang=LANG, cache_dir=cd, overwrite_cache=(PHASE == "compile"))
    fn = norm.normalize  # defaults: punct_pre_process=False, punct_post_process=False
res["load_s"] = time.perf_counter() - t
res["load_cpu_s"] = time.process_time() - c0
res["rss_after_load_kb"] = rss_kb()

# ---- first call (lazy init) ----
t = time.perf_counter()
first = fn(REPLY[LANG])
res["first_call_s"] = time.perf_counter() - t
res["rss_after_first_call_kb"] = rss_kb()
res["time_to_first_output_s"] = time.perf_counter() - T0

# ---- latency: 200 calls ----
N_CALLS = int(os.environ.get("N_CALLS", "200"))
lat = []
cpu = []
res["loadavg_before_loop"] = pathlib.Path("/proc/loadavg").read_text().split()[:3]
for _ in range(N_CALLS):
    t = time.perf_counter()
    c = time.process_time()
    out = fn(REPLY[LANG])
    cpu.append(time.process_time() - c)
    lat.append(time.perf_counter() - t)
assert out == first
lat.sort()
cpu.sort()
res["cpu_median_ms"] = 1000 * cpu[len(cpu) // 2]
res["cpu_p99_ms"] = 1000 * cpu[math.ceil(0.99 * len(cpu)) - 1]
res["loadavg_after_loop"] = pathlib.Path("/proc/loadavg").read_text().split()[:3]
res["n_calls"] = N_CALLS
res["median_ms"] = (
    1000 * lat[len(lat) // 2] if len(lat) % 2 else 1000 * (lat[len(lat) // 2 - 1] + lat[len(lat) // 2]) / 2
)
res["p99_ms"] = 1000 * lat[math.ceil(0.99 * len(lat)) - 1]
res["max_ms"] = 1000 * lat[-1]
res["rss_after_loop_kb"] = rss_kb()

# ---- outputs ----
res["outputs"] = {REPLY[LANG]: first}
for c in CASES[LANG]:
    try:
        res["outputs"][c] = fn(c)
    except Exception as e:  # noqa: BLE001 - a library's failure on a case is a finding to record
        res["outputs"][c] = f"<ERROR {type(e).__name__}: {e}>"
res["net_events"] = NET_EVENTS
res["total_s"] = time.perf_counter() - T0
with open(OUT, "w") as f:
    json.dump(res, f, ensure_ascii=False, indent=1)
print(json.dumps({k: v for k, v in res.items() if k != "outputs"}, ensure_ascii=False))
for k, v in res["outputs"].items():
    print(repr(k), "->", repr(v))
