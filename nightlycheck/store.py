"""actions/cache's store: entries kept between checks like GitHub's cache, each
a folder named by its key."""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.util import safe_name

from .common import copy_tree


@dataclass
class Store:
    """actions/cache's entries, kept between runs like GitHub's cache."""

    root: Path

    def entries(self) -> list[dict[str, Any]]:
        out = []
        for meta in self.root.glob("*/meta.json"):
            out.append(json.loads(meta.read_text()))
        return sorted(out, key=lambda e: e["saved"], reverse=True)

    def find(self, key: str, restore_keys: list[str]) -> tuple[str | None, bool]:
        keys = [e["key"] for e in self.entries()]
        if key in keys:
            return key, True
        for prefix in restore_keys:
            hit = next((k for k in keys if k.startswith(prefix)), None)
            if hit:
                return hit, False
        return None, False

    def folder(self, key: str) -> Path:
        return self.root / safe_name(key)

    def save(self, key: str, paths: dict[str, Path], saved: float | None = None) -> bool:
        """Save each of `paths` (the workflow's path -> where it is here) under
        `key`; `restore` puts each back at its path."""
        dest = self.folder(key)
        if (dest / "meta.json").is_file():
            return False  # GitHub's cache keys are immutable
        tmp = dest.with_name(dest.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for path, src in paths.items():
            copy_tree(src, tmp / "data" / path)
        (tmp / "meta.json").write_text(json.dumps({"key": key, "saved": saved or time.time()}))
        tmp.rename(dest)
        return True

    def restore(self, key: str, paths: dict[str, Path]) -> None:
        for path, dest in paths.items():
            src = self.folder(key) / "data" / path
            if src.exists():
                copy_tree(src, dest)

    def drop(self, prefix: str) -> None:
        for e in self.entries():
            if e["key"].startswith(prefix):
                shutil.rmtree(self.folder(e["key"]))
