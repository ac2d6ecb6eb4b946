"""A Flower client's FedAvg update, captured and attacked: the end-to-end example of `he-leak attack --update`.

A `flwr` NumPyClient (the optional extra `flower`: `pip install -e .[flower]`; `make flower` runs this example's
test in its own environment) trains a torch model locally the way Flower's tutorials do — plain SGD, a DataLoader
without shuffling, a number of local steps — and returns its weights from `fit()` as Flower transmits them (the
state_dict's arrays in order, through Flower's own Parameters serialisation). This script plays the server's side
once: it sends the global weights in a `FitIns`, receives the `FitRes`, and saves what a curious server holds:

* `global.pt` — the global model's state_dict (what the server sent: `--weights`);
* `fit.npz` — the client's `fit()` result, `arr_0 … arr_n` in state_dict order (`--update`, `--update-kind weights`).

It prints the `he-leak attack` command that attacks the update with the client's stated local-training
hyper-parameters; `--truth` scores the reconstruction against the client's batch (the samples `--data`, `--index`
and `--batch` select), which a real server would not have.

    python experiments/flower_fedavg.py --data digits --index 10 --batch 4 --steps 4 --lr 0.1 --local-batch 2 \\
        --out /tmp/flower
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from flwr.client import NumPyClient
from flwr.common import FitIns, ndarrays_to_parameters, parameters_to_ndarrays
from torch.utils.data import DataLoader, TensorDataset

from he_leak.data import load_dataset
from he_leak.models import ModelSpec, build_model

MODEL = f"{Path(__file__).with_name('flower_model.py')}:mlp"


class TorchClient(NumPyClient):
    """A Flower client with a torch model and its local data: `steps` SGD steps of `lr` on mini-batches of
    `local_batch`, its samples in order (epoch after epoch)."""

    def __init__(self, model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, *, steps: int, lr: float,
                 local_batch: int) -> None:  # fmt: skip
        self.model, self.steps, self.lr = model, steps, lr
        self.loader = DataLoader(TensorDataset(images, labels), batch_size=local_batch, shuffle=False)

    def get_parameters(self, config: dict) -> list[np.ndarray]:
        return [v.detach().cpu().numpy() for v in self.model.state_dict().values()]

    def set_parameters(self, parameters: list[np.ndarray]) -> None:
        keys = self.model.state_dict().keys()
        arrays = zip(keys, parameters, strict=True)
        self.model.load_state_dict(OrderedDict((k, torch.from_numpy(np.array(v))) for k, v in arrays))

    def fit(self, parameters: list[np.ndarray], config: dict) -> tuple[list[np.ndarray], int, dict]:
        self.set_parameters(parameters)
        self.model.train()
        opt = torch.optim.SGD(self.model.parameters(), lr=self.lr)
        done = 0
        while done < self.steps:
            for x, y in self.loader:
                opt.zero_grad()
                torch.nn.functional.cross_entropy(self.model(x), y).backward()
                opt.step()
                done += 1
                if done == self.steps:
                    break
        return self.get_parameters(config), len(self.loader.dataset), {"steps": done}


def capture(*, data: str, index: int, batch: int, steps: int, lr: float, local_batch: int, out: Path,
            model: str = MODEL, classes: int = 10, seed: int = 0) -> dict[str, Path]:  # fmt: skip
    """Run one Flower fit() round from a seeded global model and save global.pt and fit.npz in `out`."""
    ds = load_dataset(data)
    idx = (index + np.arange(batch)) % len(ds)
    images, labels = torch.from_numpy(ds.images[idx]), torch.from_numpy(ds.labels[idx])
    global_model = build_model(ModelSpec(name=model, input_shape=ds.shape, classes=classes, seed=seed))
    out.mkdir(parents=True, exist_ok=True)
    torch.save(global_model.state_dict(), out / "global.pt")
    client_model = build_model(ModelSpec(name=model, input_shape=ds.shape, classes=classes, seed=seed + 1))
    client = TorchClient(client_model, images, labels, steps=steps, lr=lr, local_batch=local_batch).to_client()
    sent = [v.numpy() for v in global_model.state_dict().values()]
    res = client.fit(FitIns(ndarrays_to_parameters(sent), {}))
    np.savez(out / "fit.npz", *parameters_to_ndarrays(res.parameters))
    return {"weights": out / "global.pt", "update": out / "fit.npz"}


def attack_args(paths: dict[str, Path], *, data: str, index: int, batch: int, steps: int, lr: float,
                local_batch: int, model: str = MODEL, attack: str = "dlg") -> list[str]:  # fmt: skip
    """The `he-leak attack` arguments that attack the captured update with the client's stated hyper-parameters."""
    return ["attack", "--model", model, "--weights", str(paths["weights"]), "--update", str(paths["update"]),
            "--update-kind", "weights", "--data", data, "--index", str(index), "--batch", str(batch),
            "--local-steps", str(steps), "--local-lr", str(lr), "--local-batch", str(local_batch),
            "--attack", attack, "--truth"]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="digits")
    p.add_argument("--index", type=int, default=0)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--local-batch", type=int, default=2)
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    common = dict(data=a.data, index=a.index, batch=a.batch, steps=a.steps, lr=a.lr, local_batch=a.local_batch)
    paths = capture(out=a.out, **common)
    print("he-leak " + shlex.join(attack_args(paths, **common)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
