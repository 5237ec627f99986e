"""Small constructed networks and synthetic data for the filter-pruning tests (fast, CPU)."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torch_pruning")
nn = torch.nn

#: In the constructed layer ``conv1`` (8 filters): filter 5 duplicates filter 2, filter 7 is
#: inactive (all zero, bias 0 -> its ReLU map is 0).
DUPLICATE = {2, 5}
INACTIVE = 7


class Planted(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 6, 3, padding=1)
        self.fc = nn.Linear(6 * 4 * 4, 3)

    def forward(self, x):
        x = torch.relu(self.conv1(x))
        x = torch.max_pool2d(torch.relu(self.conv2(x)), 2)
        return self.fc(torch.flatten(x, 1))


def planted_model(seed: int = 0):
    torch.manual_seed(seed)
    m = Planted()
    with torch.no_grad():
        w, b = m.conv1.weight, m.conv1.bias
        w.copy_(torch.randn_like(w))
        b.fill_(0.05)
        w[5] = w[2]
        b[5] = b[2]
        w[INACTIVE] = 0
        b[INACTIVE] = 0
    return m.eval()


def synthetic_loaders(n=32, shape=(1, 8, 8), classes=3, batch=16, seed=0):
    from torch.utils.data import DataLoader, TensorDataset
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *shape, generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    ds = TensorDataset(x, y)
    return {"train": DataLoader(ds, batch_size=batch), "test": DataLoader(ds, batch_size=batch)}
