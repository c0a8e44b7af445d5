"""HAPI FHIR's R4 validator for the tests, offline: the classpath is resolved once from
Maven Central (tests/fhir/pom.xml, the project's Maven way, as for Kafka) into
``$RTM_CACHE_DIR/hapi-fhir-<version>/libs`` and the validator (FhirValidate.java) runs with
Java's single-file source launcher. Java and Maven are prerequisites of the test suite
(Kafka needs them); where either is missing the callers skip with that reason."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HAPI_VERSION = "8.8.0"
HERE = Path(__file__).resolve().parent
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies"


def missing_tools() -> str | None:
    for tool, hint in (
        ("java", "apt-get install openjdk-17-jre-headless"),
        ("mvn", "apt-get install maven"),
    ):
        if shutil.which(tool) is None:
            return f"{tool} not on PATH ({hint})"
    return None


def classpath() -> Path:
    cache = Path(os.environ.get("RTM_CACHE_DIR", Path.home() / ".cache" / "rtm-stream"))
    libs = cache / f"hapi-fhir-{HAPI_VERSION}" / "libs"
    stamp = libs.parent / ".complete"
    if stamp.exists():
        return libs
    tmp = libs.parent / f"libs.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    proc = subprocess.run(
        [
            "mvn",
            "-B",
            "-q",
            "-f",
            str(HERE / "pom.xml"),
            f"-Dhapi.version={HAPI_VERSION}",
            DEPENDENCY_PLUGIN,
            "-DincludeScope=runtime",
            f"-DoutputDirectory={tmp}",
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if proc.returncode != 0 or not any(tmp.glob("hapi-fhir-validation-*.jar")):
        raise RuntimeError(
            "maven could not resolve the HAPI validator:\n"
            + proc.stdout[-2000:]
            + proc.stderr[-2000:]
        )
    shutil.rmtree(libs, ignore_errors=True)
    tmp.rename(libs)
    stamp.write_text(HAPI_VERSION + "\n")
    return libs


@dataclass(frozen=True)
class Message:
    severity: str  # ERROR, WARNING, INFORMATION (FATAL counts as an error)
    location: str
    text: str


def validate(resources: dict[str, dict[str, Any]]) -> dict[str, list[Message]]:
    """HAPI's messages per resource (one JVM for all of them)."""
    libs = classpath()
    with tempfile.TemporaryDirectory() as tmp:
        files = {}
        for name, resource in resources.items():
            path = Path(tmp) / f"{name}.json"
            path.write_text(json.dumps(resource))
            files[str(path)] = name
        proc = subprocess.run(
            ["java", "-Xmx1g", "-cp", f"{libs}/*", str(HERE / "FhirValidate.java"), *files],
            capture_output=True,
            text=True,
            timeout=600,
        )
    if proc.returncode != 0 or not proc.stdout.rstrip().endswith("done"):
        raise RuntimeError("HAPI validator failed:\n" + proc.stdout[-2000:] + proc.stderr[-2000:])
    out: dict[str, list[Message]] = {name: [] for name in resources}
    for line in proc.stdout.splitlines():
        parts = line.split("\t")
        if len(parts) == 4:
            out[files[parts[0]]].append(Message(parts[1], parts[2], parts[3]))
    return out


def errors(messages: list[Message]) -> list[Message]:
    return [m for m in messages if m.severity in ("ERROR", "FATAL")]
