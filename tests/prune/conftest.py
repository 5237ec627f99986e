from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")


@pytest.fixture(autouse=True)
def _two_threads():
    torch.set_num_threads(1)
    yield


@pytest.fixture(scope="session")
def digits_dense():
    """The digits CNN trained once per session (seeded): (model, loaders, accuracy)."""
    from kepsparse.nets.digits import train_digits_cnn
    torch.set_num_threads(1)
    return train_digits_cnn(seed=0, epochs=20, threads=1)
