#!/usr/bin/env python3
"""Build clawrouter's test token, ``clawrouter/evm/contracts/TestUSDC.sol``.

Compiles it with the solcjs that ``npm ci`` installs (the exact version pinned in
package.json) and fixed settings, and writes the committed artifact
``clawrouter/evm/contracts/TestUSDC.json``::

    python scripts/build_contracts.py          # rebuild the artifact
    python scripts/build_contracts.py --check  # rebuild in a temp dir; fail if it differs

Standard library only; needs ``node`` and ``node_modules/.bin/solcjs``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CONTRACTS = ROOT / "clawrouter" / "evm" / "contracts"
CONTRACT = "TestUSDC"
SOURCE = CONTRACTS / f"{CONTRACT}.sol"
ARTIFACT = CONTRACTS / f"{CONTRACT}.json"
SOLCJS = ROOT / "node_modules" / ".bin" / "solcjs"

# Fixed compiler settings: changing any of them changes the committed bytecode.
SETTINGS: dict[str, Any] = {
    "optimizer": {"enabled": True, "runs": 200},
    # cancun: understood by py-evm (eth-tester), anvil and Base; no newer opcodes.
    "evmVersion": "cancun",
    # no IPFS/Swarm hash of the metadata in the bytecode (it would embed source
    # comments); the artifact's sourceSha256 pins the exact source instead.
    "metadata": {"bytecodeHash": "none"},
    "outputSelection": {"*": {"*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"]}},
}


def pinned_solc_version() -> str:
    package = json.loads((ROOT / "package.json").read_text())
    version = package.get("devDependencies", {}).get("solc", "")
    if not isinstance(version, str) or not version[:1].isdigit():
        raise SystemExit(f"package.json must pin an exact solc version in devDependencies (found {version!r})")
    return version


def solcjs_version() -> str:
    out = subprocess.run([str(SOLCJS), "--version"], capture_output=True, text=True, check=True).stdout
    return out.strip().splitlines()[-1].strip()


def compile_source(source: str) -> dict[str, Any]:
    request = {"language": "Solidity", "sources": {f"{CONTRACT}.sol": {"content": source}}, "settings": SETTINGS}
    proc = subprocess.run(
        [str(SOLCJS), "--standard-json"],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    # solcjs may print a ">>> ..." note about SMT solvers before the JSON document
    text = proc.stdout[proc.stdout.find("{") :] if "{" in proc.stdout else ""
    if proc.returncode != 0 or not text:
        raise SystemExit(f"solcjs failed (exit {proc.returncode}):\n{proc.stderr or proc.stdout}")
    output: dict[str, Any] = json.loads(text)
    problems = [e for e in output.get("errors", []) if e.get("severity") != "info"]
    for problem in problems:
        print(problem.get("formattedMessage") or problem.get("message"), file=sys.stderr)
    if problems:
        raise SystemExit(f"{SOURCE.relative_to(ROOT)}: compiler errors or warnings (see above); fix them")
    return output


def build() -> dict[str, Any]:
    """The artifact as it should be committed."""
    if not SOLCJS.exists():
        raise SystemExit(f"{SOLCJS.relative_to(ROOT)} is missing: run `npm ci` at the repository root first")
    pinned = pinned_solc_version()
    version = solcjs_version()
    if not version.startswith(pinned + "+"):
        raise SystemExit(f"solcjs is {version}, package.json pins solc {pinned}: run `npm ci`")
    source_bytes = SOURCE.read_bytes()
    output = compile_source(source_bytes.decode())
    contract = output["contracts"][f"{CONTRACT}.sol"][CONTRACT]
    return {
        "contractName": CONTRACT,
        "compiler": {
            "name": "solcjs",
            "version": version.removesuffix(".Emscripten.clang"),
            "settings": {k: v for k, v in SETTINGS.items() if k != "outputSelection"},
        },
        "sourceSha256": hashlib.sha256(source_bytes).hexdigest(),
        "abi": contract["abi"],
        "bytecode": "0x" + contract["evm"]["bytecode"]["object"],
        "deployedBytecode": "0x" + contract["evm"]["deployedBytecode"]["object"],
    }


def render(artifact: dict[str, Any]) -> str:
    return json.dumps(artifact, indent=2) + "\n"


def check() -> int:
    with tempfile.TemporaryDirectory(prefix="clawrouter-contracts-") as tmp:
        fresh_path = Path(tmp) / ARTIFACT.name
        fresh_path.write_text(render(build()))
        fresh = json.loads(fresh_path.read_text())
        if not ARTIFACT.exists():
            print(f"{ARTIFACT.relative_to(ROOT)} is missing: run `python scripts/build_contracts.py`", file=sys.stderr)
            return 1
        committed = json.loads(ARTIFACT.read_text())
        differing = sorted(k for k in fresh.keys() | committed.keys() if fresh.get(k) != committed.get(k))
        if differing:
            kept = Path(tempfile.gettempdir()) / f"{CONTRACT}.fresh.json"
            shutil.copyfile(fresh_path, kept)
            print(
                f"{ARTIFACT.relative_to(ROOT)} is stale: {', '.join(differing)} "
                f"{'differs' if len(differing) == 1 else 'differ'} from a fresh build of "
                f"{SOURCE.relative_to(ROOT)} (fresh build kept at {kept}).\n"
                "Run `python scripts/build_contracts.py` and commit the result.",
                file=sys.stderr,
            )
            return 1
    print(f"{ARTIFACT.relative_to(ROOT)} is up to date")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="fail if the committed artifact differs from a rebuild")
    args = parser.parse_args(argv)
    if args.check:
        return check()
    ARTIFACT.write_text(render(build()))
    print(f"wrote {ARTIFACT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
