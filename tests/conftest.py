import warnings

import pytest

from attribution_nb.demo import tiny_model

PROMPT = "fact : the capital of the state containing dallas is"


@pytest.fixture(scope="session")
def llama():
    return tiny_model("llama", seed=0)


@pytest.fixture(scope="session")
def llama_graph(llama):
    import attribution_nb as anb

    return anb.attribute(llama, PROMPT, progress=False)


def pytest_configure(config):
    warnings.filterwarnings("ignore", message=".*demo model is not shipped.*")
