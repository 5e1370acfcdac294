"""The Flink connector jars the dispatcher needs (connectors.txt beside this file), fetched from Maven Central.

Standard library only: the Flink image runs this at build time (`python -m streaming.flink.connectors
/opt/flink/lib`) and the local stack calls `fetch` with its cache folder and a progress bar.
"""

from __future__ import annotations

import hashlib
import sys
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

CONNECTORS_LIST = Path(__file__).with_name("connectors.txt")
MAVEN_CENTRAL = "https://repo1.maven.org/maven2"
# (name of the file being fetched, its URL, where to write it): writes the file, showing progress as it likes
Download = Callable[[str, str, Path], None]


class ConnectorError(RuntimeError):
    """A connector jar could not be fetched or did not match Maven Central's checksum."""


@dataclass(frozen=True)
class Connector:
    group: str
    artifact: str
    version: str

    @property
    def jar_name(self) -> str:
        return f"{self.artifact}-{self.version}.jar"

    def url(self, repository: str = MAVEN_CENTRAL) -> str:
        return f"{repository}/{self.group.replace('.', '/')}/{self.artifact}/{self.version}/{self.jar_name}"


def connectors(listing: Path = CONNECTORS_LIST) -> list[Connector]:
    """The pinned connectors, one `group:artifact:version` per line of connectors.txt."""
    found = []
    for line in listing.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            group, artifact, version = line.split(":")
            found.append(Connector(group, artifact, version))
    return found


def jar_paths(folder: Path) -> list[Path]:
    return [folder / c.jar_name for c in connectors()]


def _plain_download(name: str, url: str, dest: Path) -> None:
    print(f"fetching {name} from Maven Central", file=sys.stderr, flush=True)
    with urllib.request.urlopen(url, timeout=60) as resp, dest.open("wb") as out:
        while chunk := resp.read(1 << 16):
            out.write(chunk)


def fetch(folder: Path, download: Download = _plain_download) -> list[Path]:
    """Every pinned jar in FOLDER (those already there are kept), each checked against Maven Central's SHA-1."""
    folder.mkdir(parents=True, exist_ok=True)
    jars = []
    for connector in connectors():
        jar = folder / connector.jar_name
        jars.append(jar)
        if jar.exists():
            continue
        with urllib.request.urlopen(connector.url() + ".sha1", timeout=60) as resp:
            expected = resp.read().decode().split()[0].strip()
        part = jar.with_name(jar.name + ".download")
        download(connector.jar_name, connector.url(), part)
        actual = hashlib.sha1(part.read_bytes()).hexdigest()
        if actual != expected:
            part.unlink()
            raise ConnectorError(f"{jar.name}: SHA-1 {actual} does not match Maven Central's {expected}")
        part.rename(jar)
    return jars


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m streaming.flink.connectors FOLDER")
    for path in fetch(Path(sys.argv[1])):
        print(path)
