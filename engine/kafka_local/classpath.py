"""The broker's classpath: Apache Kafka's jars resolved from Maven Central once per
version into ``<cache>/<version>/lib`` (``engine/kafka_files/pom.xml``)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

from engine.exceptions import KafkaBrokerError
from engine.kafka_local.config import DEFAULT_VERSION, Progress, cache_root

KAFKA_FILES = Path(__file__).resolve().parent.parent / "kafka_files"
POM_FILE = KAFKA_FILES / "pom.xml"
_STAMP_NAME = ".complete"


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_kafka_libs(version: str = DEFAULT_VERSION, *, progress: Progress | None = None) -> Path:
    """Return ``<cache>/<version>/lib`` holding the broker's jars, downloading them once.

    A stamp file marks a complete download; a lock file keeps two processes from
    downloading into the same place at once.
    """
    version_dir = cache_root() / version
    lib_dir = version_dir / "lib"
    stamp = version_dir / _STAMP_NAME
    if stamp.is_file():
        return lib_dir
    with file_lock(version_dir / ".lock"):
        if stamp.is_file():
            return lib_dir
        mvn = shutil.which("mvn")
        if mvn is None:
            raise KafkaBrokerError(
                "cannot download Apache Kafka: the 'mvn' command was not found",
                hint="install Maven (apt-get install maven) or use docker-compose.kafka.yml",
            )
        if progress is not None:
            progress(f"downloading Apache Kafka {version} from Maven Central into {lib_dir} (once)")
        staging = version_dir / f"lib.partial-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        command = [
            mvn,
            "-q",
            "-B",
            "-Dstyle.color=never",
            "-f",
            str(POM_FILE),
            f"-Dkafka.version={version}",
            "dependency:copy-dependencies",
            f"-DoutputDirectory={staging}",
        ]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        jar = staging / f"kafka_2.13-{version}.jar"
        if result.returncode != 0 or not jar.is_file():
            shutil.rmtree(staging, ignore_errors=True)
            tail = _maven_error(result.stdout + result.stderr)
            raise KafkaBrokerError(
                f"downloading Apache Kafka {version} with Maven failed (exit {result.returncode}):\n{tail}",
                hint=f"check that org.apache.kafka:kafka_2.13:{version} exists; the pom is {POM_FILE}",
            )
        shutil.rmtree(lib_dir, ignore_errors=True)
        staging.rename(lib_dir)
        jars = sorted(p.name for p in lib_dir.glob("*.jar"))
        stamp.write_text("\n".join(jars) + "\n")
    return lib_dir


def _maven_error(output: str) -> str:
    """The lines of Maven's output that say what failed (colour codes and advice removed)."""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in output.splitlines()]
    errors = [
        line
        for line in lines
        if line.startswith("[ERROR]")
        and len(line) > 8
        and not any(word in line for word in ("re-run Maven", "Re-run Maven", "[ERROR] [Help", "For more information"))
    ]
    return "\n".join(errors or [line for line in lines if line][-15:])
