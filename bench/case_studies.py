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
    rows = [
        ("two-hop state swap, capital frame", cases.two_hop_swap(model, "capital", args.folder)),
        ("two-hop state swap, nickname frame", cases.two_hop_swap(model, "nickname", args.folder)),
        ("poetry: suppress the plan", cases.rhyme_suppress(model, args.folder)),
        ("poetry: inject another class", cases.rhyme_inject(model, False, args.folder)),
        ("poetry: inject, line 2 teacher-forced", cases.rhyme_inject(model, True, args.folder)),
        ("diagnosis: condition swap", cases.condition_swap(model, args.folder)),
        ("diagnosis: condition inhibited", cases.condition_inhibit(model, args.folder)),
        ("multilingual: concept swap", cases.concept_swap(model, args.folder)),
    ]
    print("| experiment | hits | random same-size control |\n|---|---|---|")
    for name, r in rows:
        print(
            f"| {name} | {r.table.hit.sum()}/{r.n} ({r.rate:.0%}) | {r.table.control_hit.sum()}/{r.n} "
            f"({r.control_rate:.0%}) |"
        )
    inh = rows[6][1].table.after.str.strip()
    print(
        f"diagnosis inhibited: a test is still the answer in {inh.isin(set(W.TEST.values())).sum()}/{len(inh)}"
    )
    print(f"({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
