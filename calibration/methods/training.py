"""The training loop the trained heads share (Deep SVDD, autoencoder): seeded, deterministic,
Adam, mini-batches, early stopping on a held-out share of the golden data, best weights kept.
CPU here; CUDA where torch sees a GPU."""
from __future__ import annotations

import contextlib
import copy
import logging
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

import numpy as np
import torch

log = logging.getLogger(__name__)


def training_device() -> torch.device:
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    log.info("training on %s (%s)", dev, "CUDA available" if dev.type == "cuda" else "no CUDA device")
    return dev


@contextlib.contextmanager
def deterministic(seed: int, threads: int = 0) -> Iterator[None]:
    """Seed torch, switch on deterministic algorithms and (threads > 0) set the CPU thread
    count for the block; all restored after."""
    was = torch.are_deterministic_algorithms_enabled()
    was_threads = torch.get_num_threads()
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was)
        torch.set_num_threads(was_threads)


@dataclass
class TrainReport:
    epochs_run: int
    best_epoch: int
    best_val_loss: float
    train_loss: float

    def to_json(self) -> dict:
        return {"epochs_run": self.epochs_run, "best_epoch": self.best_epoch,
                "best_val_loss": round(self.best_val_loss, 6), "train_loss": round(self.train_loss, 6)}


def train(module: torch.nn.Module, loss_fn: Callable[[torch.nn.Module, torch.Tensor], torch.Tensor],
          train_x: torch.Tensor, val_x: torch.Tensor, config, seed: int, *,
          on_epoch_end: Optional[Callable[[torch.nn.Module, int], None]] = None,
          progress: Optional[Callable[[int], None]] = None,
          total: Optional[Callable[[int], None]] = None) -> TrainReport:
    """Minimise mean ``loss_fn(module, batch)`` over ``train_x`` rows (shuffled with ``seed``),
    stop after ``config.patience`` epochs without a lower validation loss, and leave ``module``
    holding the best weights. config: settings.TrainingConfig. progress counts epochs."""
    opt = torch.optim.Adam([p for p in module.parameters() if p.requires_grad], lr=config.lr,
                           weight_decay=config.weight_decay)
    gen = torch.Generator().manual_seed(seed)
    if total:
        total(config.epochs)
    best, best_epoch, best_state, since, epoch, train_loss = float("inf"), 0, None, 0, 0, float("nan")
    bs = config.batch_size
    for epoch in range(1, config.epochs + 1):
        module.train()
        order = torch.randperm(len(train_x), generator=gen)
        seen, acc = 0, 0.0
        for s in range(0, len(order), bs):
            batch = train_x[order[s:s + bs]]
            loss = loss_fn(module, batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            acc += float(loss.detach()) * len(batch)
            seen += len(batch)
        train_loss = acc / max(seen, 1)
        module.eval()
        if on_epoch_end:
            on_epoch_end(module, epoch)
        with torch.no_grad():
            val = (sum(float(loss_fn(module, val_x[s:s + bs])) * len(val_x[s:s + bs]) for s in range(0, len(val_x), bs))
                   / len(val_x)) if len(val_x) else train_loss
        if progress:
            progress(1)
        if best_state is None or val < best - 1e-7 * abs(best):
            best, best_epoch, since = val, epoch, 0
            best_state = copy.deepcopy(module.state_dict())
        else:
            since += 1
            if since >= config.patience:
                log.info("early stop at epoch %d (best %d, val loss %.5g)", epoch, best_epoch, best)
                break
    if best_state is not None:
        module.load_state_dict(best_state)
    module.eval()
    return TrainReport(epoch, best_epoch, best, train_loss)


def floor_std(std: np.ndarray) -> np.ndarray:
    """Per-channel std floored at max(1e-6, 1e-3 * its mean), so a constant channel does not
    divide by ~0 when standardising; keeps ``std``'s dtype."""
    return np.maximum(std, max(1e-6, 1e-3 * float(std.mean())))


def feature_stats(patches: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std (floored) of patches float32 [P, D], for the Standardise buffer."""
    mean = patches.mean(0, dtype=np.float64)
    std = floor_std(patches.std(0, dtype=np.float64))
    return mean.astype(np.float32), std.astype(np.float32)


def standardised_head(module: torch.nn.Module, mean: np.ndarray, std: np.ndarray,
                      dev: torch.device) -> torch.nn.Module:
    """Fill a head's input standardisation buffers (``module.norm``) and move it to ``dev``."""
    d = len(mean)
    module.norm.mean.copy_(torch.from_numpy(mean).view(1, d, 1, 1))
    module.norm.std.copy_(torch.from_numpy(std).view(1, d, 1, 1))
    return module.to(dev)


def train_val_tensors(data: np.ndarray, train_rows: np.ndarray, val_rows: np.ndarray,
                      dev: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The training and validation rows of ``data`` as tensors on ``dev``."""
    x = torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32)).to(dev)
    return x[torch.from_numpy(train_rows).to(dev)], x[torch.from_numpy(val_rows).to(dev)]
