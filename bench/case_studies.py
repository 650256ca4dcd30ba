"""The case studies' held-out measurements on the shipped demo model (the README's table).

    python bench/case_studies.py [--folder attribution_nb/demo_model]

Every rate is over all held-out items of its case, with a random control of the same size run
on each item (see :mod:`attribution_nb.demo.cases` for the protocol).
"""

import argparse
import json
import os
import time

import attribution_nb as anb
from attribution_nb.demo import DEMO_DIR, cases, load_demo_model
from attribution_nb.demo import world as W


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--folder", default=DEMO_DIR)
    args = ap.parse_args(argv)
    t0 = time.time()
    model = load_demo_model(args.folder)
    with open(os.path.join(args.folder, "world.json"), encoding="utf-8") as f:
        report = json.load(f)
    print("held-out accuracy:", {k: round(v, 3) for k, v in report["accuracy"]["all"].items()})
    for name, table in (
        (
            "among all probes (the labels)",
            anb.latent_labels(model, W.probes(cases.split(args.folder))),
        ),
        ("within each case study (the supernodes)", cases.latent_table(model, args.folder)),
    ):
        best = anb.best_per_value(table)
        print(
            f"best feature's F1 per latent value, {name}: median {best.f1.median():.2f} over {len(best)} values;",
            best.groupby("latent").f1.median().round(2).to_dict(),
        )
    f = args.folder
    experiments = [
        ("two-hop state swap, capital frame", lambda w: cases.two_hop_swap(model, "capital", f, w)),
        (
            "two-hop state swap, nickname frame",
            lambda w: cases.two_hop_swap(model, "nickname", f, w),
        ),
        ("poetry: suppress the plan (mean ablation)", lambda w: cases.rhyme_suppress(model, f, w)),
        (
            "poetry: suppress the plan (own supernode × −2)",
            lambda w: cases.rhyme_suppress(model, f, w, suppress="inhibit", inhibit=2.0),
        ),
        ("poetry: inject another class", lambda w: cases.rhyme_inject(model, False, f, w)),
        ("poetry: inject, line 2 teacher-forced", lambda w: cases.rhyme_inject(model, True, f, w)),
        ("diagnosis: condition swap", lambda w: cases.condition_swap(model, f, w)),
        (
            "diagnosis: condition suppressed (mean ablation)",
            lambda w: cases.condition_inhibit(model, f, w),
        ),
        (
            "diagnosis: condition suppressed (own supernode × −1)",
            lambda w: cases.condition_inhibit(model, f, w, suppress="inhibit", inhibit=1.0),
        ),
        ("multilingual: concept swap", lambda w: cases.concept_swap(model, f, w)),
    ]
    print(
        "| experiment | held-out hits | random same-size control | training items (where the protocol was chosen) |"
        "\n|---|---|---|---|"
    )
    held = {}
    for name, run in experiments:
        r, t = run("heldout"), run("train")
        held[name] = r
        print(
            f"| {name} | {r.table.hit.sum()}/{r.n} ({r.rate:.0%}) | {r.table.control_hit.sum()}/{r.n} "
            f"({r.control_rate:.0%}) | {t.table.hit.sum()}/{t.n} ({t.rate:.0%}) |"
        )
    ends = held["poetry: suppress the plan (mean ablation)"].table
    ends = ends.after.map(lambda x: (W.read_line2(x) or {}).get("class")).value_counts()
    print("poetry suppressed (mean ablation): line 2 ends in", ends.to_dict())
    for name in ("mean ablation", "own supernode × −1"):
        inh = held[f"diagnosis: condition suppressed ({name})"].table.after.str.strip()
        print(f"diagnosis suppressed ({name}): answers", inh.value_counts().to_dict())
    print(f"({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
