"""Neuronpedia labels and contexts, offline: a response in Neuronpedia's feature format
(``tests/fixtures/neuronpedia_feature.json``), served by a fake fetch, then from the cache."""

import json
from pathlib import Path

import pytest

import attribution_nb as anb
from attribution_nb.dashboards import API, parse_feature

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "neuronpedia_feature.json").read_text())


def test_a_response_becomes_a_label_and_marked_contexts():
    label, contexts = parse_feature(FIXTURE, n_contexts=2)
    assert label == "the state of Texas"
    assert contexts == [
        ["<bos>Dallas is a city in [Texas]", 9.52],
        ["<bos>The capital of [Texas]", 8.25],
    ]


def test_features_are_fetched_once_then_read_from_the_cache(llama, llama_graph, tmp_path):
    asked = []

    def fetch(url):
        asked.append(url)
        return FIXTURE

    pairs = [(1, 5), (2, 7)]
    table = anb.neuronpedia_features(
        llama,
        pairs,
        model_id="gemma-2-2b",
        source="{layer}-gemmascope-transcoder-16k",
        cache_dir=tmp_path,
        fetch=fetch,
    )
    assert asked == [
        API.format(model="gemma-2-2b", source="1-gemmascope-transcoder-16k", index=5),
        API.format(model="gemma-2-2b", source="2-gemmascope-transcoder-16k", index=7),
    ]
    assert table.label.tolist() == ["the state of Texas"] * 2 and not table.from_cache.any()
    assert llama.feature_labels[(1, 5)] == "the state of Texas"
    assert llama.feature_contexts[(2, 7)][0] == ["<bos>Dallas is a city in [Texas]", 9.52]
    assert (tmp_path / "gemma-2-2b" / "1-gemmascope-transcoder-16k" / "5.json").is_file()

    def offline(url):
        raise AssertionError(f"fetched {url} although it is cached")

    again = anb.neuronpedia_features(
        llama,
        pairs,
        model_id="gemma-2-2b",
        source="{layer}-gemmascope-transcoder-16k",
        cache_dir=tmp_path,
        fetch=offline,
    )
    assert again.from_cache.all()
    # a graph's features are the default list
    first = llama_graph.nodes[llama_graph.nodes.kind == "feature"].head(3)
    table = anb.neuronpedia_features(
        llama,
        llama_graph.subgraph(llama_graph.nodes.index.isin(first.index)),
        model_id="m",
        source="{layer}-s",
        cache_dir=tmp_path,
        fetch=lambda url: FIXTURE,
    )
    assert list(zip(table.layer, table.feature)) == list(zip(first.layer, first.feature))
    for key in zip(
        first.layer, first.feature
    ):  # (the fixture filled them; leave the model as it was)
        llama.feature_labels.pop(key, None)
        llama.feature_contexts.pop(key, None)
    llama.feature_labels.pop((1, 5)), llama.feature_labels.pop((2, 7))
    llama.feature_contexts.pop((1, 5)), llama.feature_contexts.pop((2, 7))


def test_bad_arguments_and_files_are_named(llama, tmp_path):
    with pytest.raises(ValueError, match=r"source must contain '\{layer\}'"):
        anb.neuronpedia_features(
            llama, [(0, 1)], model_id="m", source="transcoders", cache_dir=tmp_path
        )
    with pytest.raises(ValueError, match="no path separators, got '../x'"):
        anb.neuronpedia_features(
            llama, [(0, 1)], model_id="../x", source="{layer}", cache_dir=tmp_path
        )
    with pytest.raises(ValueError, match=r"\(layer, feature\) pairs .* got \(0, -1\)"):
        anb.neuronpedia_features(
            llama, [(0, -1)], model_id="m", source="{layer}", cache_dir=tmp_path
        )
    bad = tmp_path / "m" / "0-s" / "1.json"
    bad.parent.mkdir(parents=True)
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="1.json: not a readable cached Neuronpedia response"):
        anb.neuronpedia_features(
            llama, [(0, 1)], model_id="m", source="{layer}-s", cache_dir=tmp_path
        )
