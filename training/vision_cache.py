"""The frozen vision tower's outputs, cached per image and geometry, so later epochs skip the tower.

With the vision tower and its merger frozen (the default, :mod:`training.params`), the same image
at the same size gives the same visual tokens every epoch. :class:`VisionCache` attaches to the
tower (``model.visual``) through PyTorch's module hooks (no wrapper: parameter names, and so
checkpoints, are unchanged):

* a forward pre-hook splits the batch's ``pixel_values`` per image (``t * h * w`` patch rows
  each, from ``grid_thw``), keys every image by a BLAKE2b digest of (tower weights, grid, dtype,
  pixel bytes), looks each up in memory then on disk, and hands the tower only the misses (when
  nothing is missing, one 2 x 2-patch placeholder image, since the tower cannot run on none);
* a forward hook stores the misses' merged outputs and returns every image's output in order.

Bounds: memory (``memory_bytes``, least recently used evicted) and disk (``disk_bytes``, oldest
files evicted; safetensors files, checked for shape and dtype when read, so a foreign or corrupt
file is recomputed, never trusted). Invalidation: the weights' digest is part of every key, and it
is recomputed whenever a parameter or buffer of the tower changed in place (PyTorch's version
counters: an optimizer step, ``load_state_dict``); a changed tower empties the memory cache.
The cache stands aside (the tower runs as usual) while any of its parameters requires a gradient.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from giraffe_core.errors import InputError

__all__ = ["CacheStats", "VisionCache"]

logger = logging.getLogger(__name__)


@dataclass
class CacheStats:
    """Counts since the cache was attached: images served from memory, from disk, and encoded."""

    memory_hits: int = 0
    disk_hits: int = 0
    misses: int = 0
    evictions: int = 0


class VisionCache:
    """Caches a frozen vision tower's merged outputs per image (see the module docstring).

    Args:
        tower: the vision tower (``model.visual`` of a Qwen2-VL model: ``forward(pixel_values,
            grid_thw=...)`` returning ``pooler_output`` of merged tokens, ``spatial_merge_size``).
        memory_bytes: bound on the tensors held in memory, bytes (0: none held).
        directory: where to keep entries on disk (``None``: memory only).
        disk_bytes: bound on the entries on disk, bytes.
    """

    def __init__(self, tower: torch.nn.Module, *, memory_bytes: int = 1 << 30, directory: str | Path | None = None,
                 disk_bytes: int = 4 << 30) -> None:
        if memory_bytes < 0 or disk_bytes < 0:
            raise InputError("vision cache bounds must be >= 0 bytes", hint="pass memory_bytes/disk_bytes >= 0")
        self.tower = tower
        self.merge = int(tower.spatial_merge_size)
        self.memory_bytes, self.disk_bytes = int(memory_bytes), int(disk_bytes)
        self.directory = Path(directory) if directory is not None else None
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
        self.stats = CacheStats()
        self._memory: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._held = 0
        self._versions: tuple[int, ...] | None = None
        self._weights = ""
        self._pending: dict[str, Any] | None = None
        self._handles = [tower.register_forward_pre_hook(self._before, with_kwargs=True),
                         tower.register_forward_hook(self._after, with_kwargs=True)]

    def close(self) -> None:
        """Detach from the tower (the memory cache is dropped; disk entries stay)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._memory.clear()
        self._held = 0

    # ------------------------------------------------------------------------------ keys

    def weights_digest(self) -> str:
        """Hex digest of the tower's parameters and buffers, recomputed only after one changed."""
        tensors = [*self.tower.parameters(), *self.tower.buffers()]
        versions = tuple(t._version for t in tensors) + tuple(t.data_ptr() for t in tensors)
        if versions != self._versions:
            digest = hashlib.blake2b(digest_size=16)
            for name, tensor in sorted(self.tower.state_dict().items()):
                digest.update(name.encode())
                digest.update(str(tensor.dtype).encode())
                digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
            if self._weights and digest.hexdigest() != self._weights:
                logger.info("vision tower weights changed: vision cache emptied")
                self._memory.clear()
                self._held = 0
            self._weights, self._versions = digest.hexdigest(), versions
        return self._weights

    @staticmethod
    def _key(weights: str, grid: torch.Tensor, pixels: torch.Tensor) -> str:
        digest = hashlib.blake2b(digest_size=20)
        digest.update(weights.encode())
        digest.update(repr((tuple(int(x) for x in grid), str(pixels.dtype), tuple(pixels.shape))).encode())
        digest.update(pixels.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()

    # ------------------------------------------------------------------------------ hooks

    def _active(self) -> bool:
        return not any(p.requires_grad for p in self.tower.parameters())

    def _before(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        self._pending = None
        pixels = args[0] if args else kwargs.get("hidden_states")
        grid = kwargs.get("grid_thw", args[1] if len(args) > 1 else None)
        if pixels is None or grid is None or not len(grid) or not self._active():
            return None
        weights = self.weights_digest()
        sizes = grid.prod(-1).tolist()
        images = torch.split(pixels, sizes)
        keys = [self._key(weights, g, p) for g, p in zip(grid, images, strict=True)]
        found = [self._lookup(k, int(n) // self.merge**2) for k, n in zip(keys, sizes, strict=True)]
        missing = [i for i, f in enumerate(found) if f is None]
        if missing:
            run_pixels, run_grid = torch.cat([images[i] for i in missing]), grid[missing]
        else:  # the tower cannot run on no image: one placeholder of merge x merge patches
            run_grid = torch.tensor([[1, self.merge, self.merge]], dtype=grid.dtype, device=grid.device)
            run_pixels = pixels.new_zeros((self.merge**2, pixels.shape[-1]))
        self._pending = {"keys": keys, "found": found, "missing": missing, "sizes": sizes}
        rest = {k: v for k, v in kwargs.items() if k not in ("grid_thw", "hidden_states")}
        return (run_pixels,), {**rest, "grid_thw": run_grid}

    def _after(self, module: torch.nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
        pending, self._pending = self._pending, None
        if pending is None:
            return None
        found = pending["found"]
        if pending["missing"]:
            tokens = [pending["sizes"][i] // self.merge**2 for i in pending["missing"]]
            for i, features in zip(pending["missing"], torch.split(output.pooler_output, tokens), strict=True):
                found[i] = features.detach()
                self._store(pending["keys"][i], found[i])
        output.pooler_output = torch.cat(found)
        output.last_hidden_state = None  # pre-merger states are not cached: none for a mixed batch
        return output

    # ------------------------------------------------------------------------------ storage

    def _lookup(self, key: str, tokens: int) -> torch.Tensor | None:
        """The cached output of ``key`` (``tokens`` merged tokens), from memory, then disk."""
        if key in self._memory:
            self._memory.move_to_end(key)
            self.stats.memory_hits += 1
            return self._memory[key]
        features = self._read(key, tokens)
        if features is None:
            self.stats.misses += 1
            return None
        self.stats.disk_hits += 1
        device = next(self.tower.parameters()).device
        features = features.to(device)
        self._remember(key, features)
        return features

    def _store(self, key: str, features: torch.Tensor) -> None:
        self._remember(key, features)
        if self.directory is not None and self.disk_bytes:
            self._write(key, features)

    def _remember(self, key: str, features: torch.Tensor) -> None:
        size = features.numel() * features.element_size()
        if size > self.memory_bytes:
            return
        self._memory[key] = features
        self._held += size
        while self._held > self.memory_bytes:
            _, old = self._memory.popitem(last=False)
            self._held -= old.numel() * old.element_size()
            self.stats.evictions += 1

    def _path(self, key: str) -> Path:
        assert self.directory is not None
        return self.directory / f"{key}.safetensors"

    def _read(self, key: str, tokens: int) -> torch.Tensor | None:
        """An entry from disk, or ``None`` (absent, unreadable, or not ``tokens`` rows of the
        tower's output dtype: such a file is deleted)."""
        if self.directory is None:
            return None
        path = self._path(key)
        if not path.is_file():
            return None
        from safetensors.torch import load_file

        dtype = next(self.tower.parameters()).dtype
        try:
            features = load_file(str(path))["features"]
        except Exception:  # any unreadable entry is recomputed, whatever the reason
            features = None
        if features is None or features.ndim != 2 or features.shape[0] != tokens or features.dtype != dtype:
            logger.warning("vision cache: dropping unusable entry %s", path.name)
            path.unlink(missing_ok=True)
            return None
        os.utime(path)  # recently used: evicted last
        return features

    def _write(self, key: str, features: torch.Tensor) -> None:
        from safetensors.torch import save_file

        size = features.numel() * features.element_size()
        if size > self.disk_bytes:
            return
        self._evict_disk(self.disk_bytes - size)
        path = self._path(key)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        save_file({"features": features.detach().cpu().contiguous()}, str(tmp))
        os.replace(tmp, path)

    def _evict_disk(self, budget: int) -> None:
        """Delete the least recently used entries until they take at most ``budget`` bytes."""
        assert self.directory is not None
        entries = []
        for path in self.directory.glob("*.safetensors"):
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            entries.append((stat.st_mtime, stat.st_size, path))
        total = sum(size for _, size, _ in entries)
        for _, size, path in sorted(entries):
            if total <= budget:
                break
            path.unlink(missing_ok=True)
            total -= size
            self.stats.evictions += 1

    def disk_usage(self) -> int:
        """Bytes of the entries on disk (0 without a directory)."""
        if self.directory is None:
            return 0
        return sum(p.stat().st_size for p in self.directory.glob("*.safetensors"))
