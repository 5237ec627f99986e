from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")


@pytest.fixture(autouse=True)
def _threads():
    old = torch.get_num_threads()
    torch.set_num_threads(1)  # 2 OpenMP threads on a busy 2-core box can be 100x slower
    yield
    torch.set_num_threads(old)
