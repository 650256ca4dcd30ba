"""Bad inputs, tried as an adversarial user would, and how each ends: a clear error, silent
acceptance, or a crash.

    python bench/bad_inputs.py [--verbose]

A *clear* error is one of the package's own error types (ValueError, KeyError, TypeError or an
OSError such as FileNotFoundError) whose message names the bad value or argument (the
``names`` text given with each case).  *Silent*: no error at all.  *Crash*: any other exception,
or a clear type whose message names nothing.  Runs on a tiny random Llama and its graph (CPU,
seconds).  Prints one line per failure and the totals.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile

import torch

PROMPT = "fact : the capital of the state containing dallas is"


def cases(model, graph, tmp):
    """(description, thunk, text the message must contain)."""
    import attribution_nb as anb
    from attribution_nb.transcoders import load_transcoder, load_transcoders

    feat = graph.top_features(1).node_id[0]
    a = lambda **kw: lambda: anb.attribute(model, PROMPT, progress=False, **kw)  # noqa: E731
    iv = lambda x, **kw: lambda: model.intervene(PROMPT, x, **kw)  # noqa: E731
    tc = lambda **kw: (
        lambda: anb.Transcoder(
            torch.zeros(8, 16),
            torch.zeros(16),
            torch.zeros(16, 8),  # noqa: E731
            torch.zeros(8),
            **kw,
        )
    )
    os.makedirs(os.path.join(tmp, "dir.graph"), exist_ok=True)
    with open(os.path.join(tmp, "junk.graph"), "wb") as f:
        f.write(b"\x00" * 64)
    out = [
        ("empty prompt", lambda: anb.attribute(model, ""), "prompt is empty"),
        ("blank prompt", lambda: anb.attribute(model, "   "), "prompt is empty"),
        ("empty id list", lambda: anb.attribute(model, []), "prompt is empty"),
        ("float token ids", lambda: anb.attribute(model, [1.0, 2.0]), "token ids must be integers"),
        ("2-D token ids", lambda: anb.attribute(model, [[1, 2], [3, 4]]), "1-D"),
        ("token id outside vocab", lambda: anb.attribute(model, [1, 10**6]), "1000000"),
        ("negative token id", lambda: anb.attribute(model, [1, -3]), "-3"),
        ("unknown word", lambda: anb.attribute(model, "the capital of zanzibar"), "zanzibar"),
        (
            "unknown word beside <unk>",
            lambda: anb.attribute(model, "<unk> zanzibar is"),
            "zanzibar",
        ),
        (
            "prompt too long",
            lambda: anb.attribute(model, " ".join(["the"] * 400)),
            "longer than the model's context",
        ),
        ("batch_size 0", a(batch_size=0), "batch_size"),
        ("batch_size 2.5", a(batch_size=2.5), "batch_size"),
        ("batch_size '32'", a(batch_size="32"), "batch_size"),
        ("batch_size True", a(batch_size=True), "batch_size"),
        ("max_feature_nodes -1", a(max_feature_nodes=-1), "max_feature_nodes"),
        ("max_feature_nodes 10.5", a(max_feature_nodes=10.5), "max_feature_nodes"),
        ("max_n_logits 0", a(max_n_logits=0), "max_n_logits"),
        ("max_n_logits 2.5", a(max_n_logits=2.5), "max_n_logits"),
        ("desired_logit_prob nan", a(desired_logit_prob=math.nan), "desired_logit_prob"),
        ("desired_logit_prob -1", a(desired_logit_prob=-1), "desired_logit_prob"),
        ("desired_logit_prob 7", a(desired_logit_prob=7), "desired_logit_prob"),
        ("targets 3.7", a(targets=3.7), "3.7"),
        ("targets True", a(targets=True), "True"),
        ("targets []", a(targets=[]), "targets is empty"),
        ("target split in two", a(targets=["austin texas"]), "not a single token"),
        ("target not in vocab", a(targets=["zanzibar"]), "zanzibar"),
        ("target id out of range", a(targets=[10**6]), "1000000"),
        ("node_threshold 1.5", lambda: graph.prune(1.5), "node_threshold"),
        ("node_threshold nan", lambda: graph.prune(math.nan), "node_threshold"),
        ("node_threshold '0.5'", lambda: graph.prune("0.5"), "node_threshold"),
        ("node_threshold True", lambda: graph.prune(True), "node_threshold"),
        ("edge_threshold -0.1", lambda: graph.prune(0.8, -0.1), "edge_threshold"),
        ("top_features(-1)", lambda: graph.top_features(-1), "n must be"),
        ("top_features('3')", lambda: graph.top_features("3"), "n must be"),
        ("unknown node id", lambda: graph.node("f:L9:P9:9"), "f:L9:P9:9"),
        ("edge with unknown id", lambda: graph.edge("nope", feat), "nope"),
        ("logit_node of a non-logit", lambda: graph.logit_node("zanzibar"), "zanzibar"),
        ("set_label non-string", lambda: graph.set_label(feat, 3), "label"),
        ("supernode empty name", lambda: graph.add_supernode("", [feat]), "name"),
        ("supernode no members", lambda: graph.add_supernode("x", []), "no members"),
        ("supernode unknown member", lambda: graph.add_supernode("x", ["f:L9:P9:9"]), "f:L9:P9:9"),
        ("interventions as a string", iv(feat), "interventions must be"),
        ("intervention pair of 1", iv([(feat,)]), "pairs"),
        ("intervention value nan", iv({feat: math.nan}), "nan"),
        ("intervention value 1e308", iv({feat: 1e308}), "1e+308"),
        ("intervention value 'double'", iv({feat: "double"}), "double"),
        ("intervention on a token", iv({"t:P3:5": 0}), "token node"),
        ("intervention on a logit", iv({graph.logits.node_id[0]: 0}), "logit node"),
        ("intervention unknown id", iv({"x:1": 0}), "x:1"),
        ("intervention feature out of range", iv({"f:L0:P1:99999": 0}), "99999"),
        ("intervention layer out of range", iv({"f:L9:P1:1": 0}), "layer 9"),
        ("intervention position out of range", iv({"f:L0:P99:1": 0}), "position 99"),
        ("error node clamped to 2", iv({"e:L0:P1": 2.0}), "can only be ablated"),
        ("top_k -1", iv({}, top_k=-1), "top_k"),
        ("mode 'warm'", iv({}, mode="warm"), "warm"),
        ("Multiply('2')", lambda: anb.Multiply("2"), "'2'"),
        ("Multiply(inf)", lambda: anb.Multiply(math.inf), "inf"),
        ("Steer(None)", lambda: anb.Steer(None), "None"),
        (
            "generate max_new_tokens -5",
            lambda: model.generate(PROMPT, {}, max_new_tokens=-5),
            "max_new_tokens",
        ),
        (
            "generate temperature nan",
            lambda: model.generate(PROMPT, {}, temperature=math.nan),
            "temperature",
        ),
        (
            "swap across positions",
            lambda: model.swap(PROMPT, ["f:L0:P1:1", "f:L0:P2:1"], PROMPT, []),
            "positions",
        ),
        ("Transcoder bad activation", tc(activation="gelu"), "gelu"),
        ("Transcoder jumprelu without threshold", tc(activation="jumprelu"), "threshold"),
        ("Transcoder threshold nan", tc(activation="jumprelu", threshold=math.nan), "NaN"),
        ("Transcoder threshold shape", tc(activation="jumprelu", threshold=torch.ones(3)), "(3,)"),
        ("Transcoder topk k=2.5", tc(activation="topk", k=2.5), "2.5"),
        ("Transcoder topk k=99", tc(activation="topk", k=99), "99"),
        ("Transcoder k for relu", tc(k=3), "k="),
        (
            "Transcoder W_dec wrong shape",
            lambda: anb.Transcoder(
                torch.zeros(8, 16), torch.zeros(16), torch.zeros(15, 8), torch.zeros(8)
            ),
            "W_dec",
        ),
        (
            "Transcoder integer weights",
            lambda: anb.Transcoder(
                torch.zeros(8, 16, dtype=torch.long),
                torch.zeros(16),
                torch.zeros(16, 8),
                torch.zeros(8),
            ),
            "W_enc",
        ),
        (
            "Transcoder inf weight",
            lambda: anb.Transcoder(
                torch.full((8, 16), math.inf), torch.zeros(16), torch.zeros(16, 8), torch.zeros(8)
            ),
            "W_enc",
        ),
        (
            "wrong number of transcoders",
            lambda: anb.ReplacementModel(
                model.hf_model, model.tokenizer, list(model.transcoders)[:2]
            ),
            "2 transcoders",
        ),
        ("load_transcoders([])", lambda: load_transcoders([]), "no transcoders"),
        (
            "load_transcoder missing",
            lambda: load_transcoder(os.path.join(tmp, "nope.safetensors")),
            "nope",
        ),
        ("load_transcoder bad layout name", lambda: load_transcoder(tmp, layout="nope"), "nope"),
        (
            "load graph missing",
            lambda: anb.AttributionGraph.load(os.path.join(tmp, "nope.graph")),
            "nope.graph",
        ),
        (
            "load graph junk",
            lambda: anb.AttributionGraph.load(os.path.join(tmp, "junk.graph")),
            "junk.graph",
        ),
        (
            "save graph onto a folder",
            lambda: graph.save(os.path.join(tmp, "dir.graph")),
            "dir.graph",
        ),
        (
            "save graph, missing folder",
            lambda: graph.save(os.path.join(tmp, "no", "x.graph")),
            "does not exist",
        ),
        (
            "to_html threshold 1.5",
            lambda: graph.to_html(os.path.join(tmp, "g.html"), edge_threshold=1.5),
            "edge_threshold",
        ),
        ("to_neuronpedia slug ../x", lambda: graph.to_neuronpedia(tmp, slug="../x"), "slug"),
        (
            "to_neuronpedia slug graph-metadata",
            lambda: graph.to_neuronpedia(tmp, slug="graph-metadata"),
            "slug",
        ),
        ("feature_top_tokens bad feature", lambda: model.feature_top_tokens(0, 10**6), "1000000"),
        (
            "feature_contexts one string",
            lambda: anb.feature_contexts(model, "a text"),
            "list of strings",
        ),
        (
            "neuronpedia source without {layer}",
            lambda: anb.neuronpedia_features(
                model, [(0, 1)], model_id="m", source="s", cache_dir=tmp
            ),
            "{layer}",
        ),
        ("load_model unknown name", lambda: anb.load_model("no/such-model"), "no/such-model"),
        (
            "remote=1",
            lambda: anb.ReplacementModel(
                model.hf_model, model.tokenizer, list(model.transcoders), remote=1
            ),
            "remote",
        ),
        # issue 31's classes: prompts, flags, loaders, special files, widget state, templates
        ("prompt 123", lambda: anb.attribute(model, 123), "got int: 123"),
        ("prompt None", lambda: anb.attribute(model, None), "NoneType"),
        (
            "prompt of 50M characters",
            lambda: anb.attribute(model, "the " * 12_500_000),
            "50,000,000 characters",
        ),
        (
            "prompt with a lone surrogate",
            lambda: anb.attribute(model, "the \ud800 capital"),
            "lone surrogate",
        ),
        (
            "token id 2**70",
            lambda: anb.attribute(model, [1, 2**70]),
            "token ids must be whole numbers",
        ),
        ("prune_thresholds (2, -1)", a(prune_thresholds=(2, -1)), "prune_thresholds[0]"),
        ("prune_thresholds (nan, nan)", a(prune_thresholds=(math.nan, math.nan)), "nan"),
        ("prune_thresholds 0.8", a(prune_thresholds=0.8), "prune_thresholds must be"),
        ("bos_features 'yes'", a(bos_features="yes"), "bos_features"),
        ("progress 'no'", a(progress="no"), "progress"),
        (
            "load_model demo with transcoders",
            lambda: anb.load_model("demo", transcoders="/x"),
            "transcoders='/x'",
        ),
        ("load_model device bogus", lambda: anb.load_model("demo", device="bogus"), "bogus"),
        ("load_model demo float16", lambda: anb.load_model("demo", dtype=torch.float16), "float16"),
        ("load_model int dtype", lambda: anb.load_model("demo", dtype=torch.int64), "int64"),
        ("load_model name 123", lambda: anb.load_model(123), "123"),
        ("save graph onto a FIFO", lambda: graph.save(_fifo(tmp)), "FIFO"),
        ("save graph onto a symlink", lambda: graph.save(_link(tmp)), "symlink"),
        ("label with a lone surrogate", lambda: graph.set_label(feat, "x\udc80"), "lone surrogate"),
        ("label with a NUL", lambda: graph.set_label(feat, "a\x00b"), "NUL"),
        (
            "supernode name with a lone surrogate",
            lambda: graph.add_supernode("\ud800", [feat]),
            "lone surrogate",
        ),
        (
            "load a graph index as a graph",
            lambda: anb.AttributionGraph.load(_index(tmp)),
            "graph index",
        ),
        ("load a zip as a graph", lambda: anb.AttributionGraph.load(_zip(tmp)), "never unpickles"),
        (
            "to_neuronpedia features without model",
            lambda: graph.to_neuronpedia(tmp, features=True),
            "needs model=",
        ),
        ("to_neuronpedia slug 'abc\\n'", lambda: graph.to_neuronpedia(tmp, slug="abc\n"), "slug"),
        (
            "neuronpedia source with a format spec",
            lambda: anb.neuronpedia_features(
                model,
                [(0, 1)],
                model_id="m",
                source="{layer}{layer:>1000000000}",
                cache_dir=tmp,
                fetch=lambda u: {},
            ),
            "no other braces",
        ),
        (
            "widget state with an unknown member",
            lambda: _widget(model, graph).__setattr__("state", {"supernodes": {"bad": ["nope"]}}),
            "nope",
        ),
        (
            "widget state threshold 7",
            lambda: _widget(model, graph).__setattr__("state", {"node_threshold": 7}),
            "node_threshold",
        ),
        ("Direction of zeros", lambda: anb.Direction(torch.zeros(8), layer=0), "all zeros"),
        (
            "Direction complex",
            lambda: anb.Direction(torch.ones(8, dtype=torch.complex64), layer=0),
            "real numbers",
        ),
        (
            "validate another model's graph",
            lambda: anb.load_model().validate(graph),
            "validate it with its own model",
        ),
        (
            "edge_heads wrong token id",
            lambda: anb.edge_heads(model, PROMPT, "t:P1:9999", feat),
            "holds token id",
        ),
        (
            "edge_heads logit not last",
            lambda: anb.edge_heads(
                model, PROMPT, "t:P1:" + str(graph.token_ids[1]), "l:P5:" + str(graph.token_ids[1])
            ),
            "last position",
        ),
        (
            "edge_heads layer order",
            lambda: anb.edge_heads(model, PROMPT, "f:L3:P1:1", "f:L1:P5:1"),
            "not below",
        ),
        (
            "feature_contexts window past context",
            lambda: anb.feature_contexts(model, ["a b"], window=10**6),
            "longer than the model's context",
        ),
        ("widget select 5", lambda: _widget(model, graph).select(5), "got 5"),
        (
            "to_html height 0",
            lambda: graph.to_html(os.path.join(tmp, "h.html"), height=0),
            "height",
        ),
        ("intervention key (0, 1, 5.0)", iv({(0, 1, 5.0): 0}), "(0, 1, 5.0)"),
        (
            "attribute_attention batch_size 0",
            lambda: anb.attribute_attention(
                model, PROMPT, layer=0, head=0, key_pos=1, batch_size=0
            ),
            "batch_size",
        ),
        (
            "GemmaScope npz of garbage",
            lambda: load_transcoder(_garbage_npz(tmp)),
            "not a readable .npz",
        ),
        (
            "transcoders on the meta device",
            lambda: anb.ReplacementModel(model.hf_model, model.tokenizer, _meta_transcoders(model)),
            "meta device",
        ),
        (
            "generate seed 2**64",
            lambda: model.generate(PROMPT, {}, max_new_tokens=2, temperature=1.0, seed=2**64),
            "seed",
        ),
        (
            "a truncated model.safetensors",
            lambda: anb.load_model(
                _truncated_model(tmp),
                transcoders=os.path.join(_truncated_model(tmp), "transcoders"),
            ),
            "cannot be read",
        ),
        (
            "widget state not a dict",
            lambda: _widget(model, graph).__setattr__("state", [1]),
            "state must be a dict",
        ),
    ]

    def in_training_mode():
        model.hf_model.train()  # (classify puts it back in eval mode)
        anb.attribute(model, PROMPT, progress=False)

    out.append(("model in training mode", in_training_mode, "training mode"))
    return out


def _fifo(tmp: str) -> str:
    path = os.path.join(tmp, "fifo.graph")
    if not os.path.exists(path):
        os.mkfifo(path)
    return path


def _link(tmp: str) -> str:
    path = os.path.join(tmp, "link.graph")
    if not os.path.lexists(path):
        os.symlink(os.path.join(tmp, "victim"), path)
    return path


def _index(tmp: str) -> str:
    path = os.path.join(tmp, "index", "graph-metadata.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write('{"graphs": []}')
    return path


def _zip(tmp: str) -> str:
    import zipfile

    path = os.path.join(tmp, "g.pt")
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("data.pkl", b"x")
    return path


def _garbage_npz(tmp: str) -> str:
    path = os.path.join(tmp, "params.npz")
    with open(path, "wb") as f:
        f.write(b"PK\x03\x04 not really a zip")
    return path


def _meta_transcoders(model):
    import copy

    tcs = [copy.deepcopy(tc) for tc in model.transcoders]
    tcs[0].to("meta")
    return tcs


def _truncated_model(tmp: str) -> str:
    import shutil

    import attribution_nb as anb

    folder = os.path.join(tmp, "truncated")
    if not os.path.exists(folder):
        shutil.copytree(os.path.join(os.path.dirname(anb.__file__), "demo_model"), folder)
        path = os.path.join(folder, "model.safetensors")
        data = open(path, "rb").read()
        with open(path, "wb") as f:
            f.write(data[: len(data) // 2])
    return folder


def _widget(model, graph):
    import attribution_nb as anb

    return anb.GraphWidget(graph, model)


def classify(thunk, names: str, model) -> tuple[str, str]:
    clear_types = (ValueError, KeyError, TypeError, OSError, RuntimeError)
    try:
        thunk()
    except clear_types as err:  # noqa: PERF203
        message = str(err)
        ok = (
            names in message
            and not isinstance(err, RuntimeError)
            or (isinstance(err, RuntimeError) and "remote server" in message)
        )
        return ("clear" if ok else "crash"), f"{type(err).__name__}: {message[:160]}"
    except Exception as err:  # noqa: BLE001  (anything else is the finding)
        return "crash", f"{type(err).__name__}: {str(err)[:160]}"
    finally:
        model.hf_model.eval()
    return "silent", "no error"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()
    import warnings

    warnings.filterwarnings("ignore")
    torch.set_num_threads(2)
    import attribution_nb as anb
    from attribution_nb.demo import tiny_model

    model = tiny_model("llama", seed=0, d_features=64)
    graph = anb.attribute(model, PROMPT, progress=False)
    totals = {"clear": 0, "silent": 0, "crash": 0}
    with tempfile.TemporaryDirectory() as tmp:
        for name, thunk, names in cases(model, graph, tmp):
            outcome, detail = classify(thunk, names, model)
            totals[outcome] += 1
            if outcome != "clear" or args.verbose:
                print(f"{outcome:<6} {name:<40} {detail}")
    n = sum(totals.values())
    print(
        f"{n} bad inputs: {totals['clear']} clear errors, {totals['silent']} silent, {totals['crash']} crashes"
    )
    return 0 if totals["clear"] == n else 1


if __name__ == "__main__":
    sys.exit(main())
