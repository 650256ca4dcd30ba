"""How much a shared machine slows ``attribute`` and circuit-tracer: each timed quiet, then
beside one busy foreign process (a Python loop, one core's worth), then beside two.

    python bench/contention.py [--model smollm2] [--features 2048] [--tokens 17] [--repeats 3]

On the real-size case of ``bench/compare_circuit_tracer.py`` (17 tokens of SmolLM2-135M with
2,048 random JumpReLU features per layer by default), each run in a fresh process, warmed up
once, then timed ``--repeats`` times; the first call (cold: the warm-up) is reported too.
Ours runs with its default threads and with ``torch.set_num_threads(1)``, circuit-tracer with
two threads as in the comparison.  Prints every time and each slowdown (busy / quiet median).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import compare_circuit_tracer as cct  # noqa: E402

_OURS = """
import json, sys, time, torch
threads, folder, ids, repeats = int(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4])
if threads:
    torch.set_num_threads(threads)
import attribution_nb as anb
model = anb.load_model(folder, transcoders=folder + "/transcoders")
times = []
for _ in range(repeats + 1):
    t = time.perf_counter()
    anb.attribute(model, ids, max_feature_nodes=None, progress=False)
    times.append(time.perf_counter() - t)
print(json.dumps({"threads": torch.get_num_threads(), "times": times}))
"""

_CT = """
import json, sys, time, torch
sys.path.insert(0, sys.argv[5])
import compare_circuit_tracer as cct
torch.set_num_threads(2)
folder, ids, repeats = sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4])
times = []
for _ in range(repeats + 1):
    t = time.perf_counter()
    cct.run_circuit_tracer_once(folder, torch.tensor(ids))
    times.append(time.perf_counter() - t)
print(json.dumps({"threads": 2, "times": times}))
"""


def busy(n: int) -> list[subprocess.Popen]:
    """``n`` foreign processes, each keeping one core busy."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def run(code: str, python: str, args: list[str]) -> dict:
    out = subprocess.run([python, "-c", code, *args], capture_output=True, text=True)
    if out.returncode != 0:
        return {"error": (out.stderr.strip().splitlines() or ["?"])[-1][:200]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", choices=sorted(cct.REAL_MODELS), default="smollm2")
    ap.add_argument("--features", type=int, default=2048)
    ap.add_argument("--tokens", type=int, default=17, choices=sorted(cct.REAL_PROMPTS))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--busy", type=int, nargs="+", default=[0, 1, 2], help="foreign busy processes per setting"
    )
    ap.add_argument("--no-ct", action="store_true", help="ours only")
    args = ap.parse_args()
    folder = cct.REAL_MODELS[args.model][1](args.features)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    ids = json.dumps([tok.bos_token_id, *tok(cct.REAL_PROMPTS[args.tokens])["input_ids"]])
    tools = {
        "ours, 2 threads": (_OURS, sys.executable, ["2"]),
        "ours, 1 thread": (_OURS, sys.executable, ["1"]),
    }
    if not args.no_ct:
        tools["circuit-tracer, 2 threads"] = (_CT, cct.ensure_venv(), ["2"])
    print(
        f"{args.model}, {args.tokens} tokens, {args.features} features per layer; first call, then "
        f"{args.repeats} timed calls, in one process per tool and setting"
    )
    results: dict = {}
    for n in args.busy:
        cct.quiet()
        procs = busy(n)
        time.sleep(1.0)
        try:
            for name, (code, python, extra) in tools.items():
                r = run(code, python, extra + [folder, ids, str(args.repeats), HERE])
                results[(name, n)] = r
                if "error" in r:
                    print(f"  {n} busy  {name:<28} failed: {r['error']}", flush=True)
                    continue
                t = r["times"]
                print(
                    f"  {n} busy  {name:<28} first {t[0]:7.1f} s, then "
                    + ", ".join(f"{x:.1f}" for x in t[1:])
                    + f" s (median {np.median(t[1:]):.1f})",
                    flush=True,
                )
        finally:
            for p in procs:
                p.kill()
    print("slowdown (median beside n busy processes / median quiet):")
    for name in tools:
        quiet_r = results.get((name, 0), {})
        if "times" not in quiet_r:
            continue
        base = float(np.median(quiet_r["times"][1:]))
        cells = [
            f"{n} busy {np.median(results[(name, n)]['times'][1:]) / base:.2f}×"
            for n in args.busy
            if n and "times" in results.get((name, n), {})
        ]
        print(f"  {name:<28} " + ", ".join(cells))


if __name__ == "__main__":
    main()
