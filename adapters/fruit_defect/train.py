"""Train the fruit classifier on generated images and save it as a state dict (with its metadata inside).

    python -m adapters.fruit_defect.train            (writes weights/<WEIGHTS_FILE>)

Deterministic: fixed seeds for the images, the initialisation and the order of the batches. The result is
cached under `$IMAGERY_CACHE_DIR/weights/fruit-<hash>/` (default ~/.cache/imagery), keyed by a hash of the
code that determines it (this package, adapters/imaging.py, the torch version and the arguments), so a second
run, or a fresh clone on the same machine, only copies. `--out` is left alone when it already holds a model
made by the same code. Those checks need no torch; the training itself is in fit.py.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import importlib.metadata
import io
import json
import os
import pickle
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

from adapters.fruit_defect import DEFAULT_WEIGHTS, META_NAME, WEIGHTS_FILE, WEIGHTS_FORMAT

# the code that determines the weights (torch is imported only when training is really needed)
_HERE = Path(__file__).resolve().parent
_CODE_FILES = [
    _HERE / "__init__.py",
    _HERE / "train.py",
    _HERE / "fit.py",
    _HERE / "model.py",
    _HERE / "samples.py",
    _HERE.parent / "imaging.py",
]


def code_hash(args: argparse.Namespace) -> str:
    digest = hashlib.sha256()
    for path in _CODE_FILES:
        digest.update(path.read_bytes())
    digest.update(f"torch={importlib.metadata.version('torch').split('+')[0]}".encode())
    settings = {name: str(value) for name, value in sorted(vars(args).items()) if name not in ("out", "force")}
    digest.update(json.dumps(settings).encode())
    return digest.hexdigest()[:16]


def read_meta(path: Path) -> dict | None:
    """The metadata stored inside a weights file, read without torch (torch.save and TorchScript both write zip
    archives): a state-dict file's pickle read with its tensors left out, or a TorchScript archive's extra file."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            extra = next((n for n in names if n.endswith(f"/extra/{META_NAME}")), None)
            if extra is not None:
                return json.loads(archive.read(extra))
            saved = _TensorlessUnpickler(io.BytesIO(archive.read(next(n for n in names if n.endswith("/data.pkl")))))
            loaded = saved.load()
            if isinstance(loaded, dict) and loaded.get("format") == WEIGHTS_FORMAT:
                return json.loads(loaded["meta"])
            return None
    except (OSError, zipfile.BadZipFile, StopIteration, ValueError, pickle.UnpicklingError):
        return None


class _TensorlessUnpickler(pickle.Unpickler):
    """Unpickles torch.save's data.pkl without torch: every torch object (tensors, their storages) becomes None,
    and nothing outside torch but OrderedDict is accepted, so no code from the file runs."""

    def find_class(self, module: str, name: str) -> Callable[..., object]:
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch" or module.startswith("torch."):
            return _nothing
        raise pickle.UnpicklingError(f"{module}.{name} is not expected in a weights file")

    def persistent_load(self, pid: object) -> None:
        return None


def _nothing(*args: object, **kwargs: object) -> None:
    return None


def cache_dir() -> Path:
    return Path(os.environ.get("IMAGERY_CACHE_DIR", Path.home() / ".cache" / "imagery")) / "weights"


def _save_atomically(write: Callable[[Path], object], dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        # mkstemp makes the file 0600: the compose service (a user of its own) could not read the weights
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, dest)
    finally:
        Path(tmp).unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_WEIGHTS)
    parser.add_argument("--force", action="store_true", help="train even if a matching model exists")
    parser.add_argument("--train-count", type=int, default=1000)
    parser.add_argument("--val-count", type=int, default=300)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    key = code_hash(args)
    cached = cache_dir() / f"fruit-{key}" / WEIGHTS_FILE
    if not args.force:
        if (read_meta(args.out) or {}).get("code_hash") == key:
            print(f"{args.out} is up to date (code hash {key})")
            return 0
        if (read_meta(cached) or {}).get("code_hash") == key:
            _save_atomically(lambda tmp: shutil.copyfile(cached, tmp), args.out)
            print(f"copied the cached model {cached} to {args.out}")
            return 0

    print(f"training the fruit classifier (code hash {key}) ...", flush=True)
    from adapters.fruit_defect import fit  # torch, only now

    net, meta = fit.train(args, log=lambda line: print(line, flush=True))
    meta["code_hash"] = key
    _save_atomically(lambda tmp: fit.save(net, meta, tmp), cached)
    _save_atomically(lambda tmp: shutil.copyfile(cached, tmp), args.out)
    print(
        f"saved {args.out} (validation accuracy {meta['val_accuracy']:.4f}, {meta['train_seconds']}s); "
        f"cached at {cached}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
