#!/usr/bin/env bash
# GPU checks for a machine with an NVIDIA GPU: run from the repo root as `bash eval/gpu_check.sh`.
#
# NOT RUN YET: written on a 2-core CPU box without a GPU, where only the skip path below was
# exercised. Each check prints what it measured; a failed check says FAILED and the script
# exits 1 after the others ran. Without a GPU (nvidia-smi missing or failing) it prints
# "skipped: no GPU (reason)" and exits 0.
#
#   1. FAISS GPU copy: faiss-gpu (the 'gpu' extra) flat search vs the CPU index, same top-10.
#   2. vLLM on the GPU: `python -m vllm.entrypoints.openai.api_server` on a small model folder
#      (MODEL_DIR; default: the smollm2-135m HF folder the local backend converts), one prompt
#      scored through our VLLMBackend.
#   3. Ray GPU actors: `behavior-rag batch embed --gpus 1` on a local Ray with one GPU
#      (embed.backend=auto picks torch on CUDA inside the actor), vectors vs in-process.
#
# Environment: PY (project python, default .venv/bin/python), VLLM_PY (a python with vLLM,
# default .cache/vllm-venv/bin/python, else PY), MODEL_DIR, PORT (vLLM, default 8011).
set -u
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}

if ! command -v nvidia-smi >/dev/null 2>&1; then
  echo "skipped: no GPU (nvidia-smi not found)"; exit 0
fi
if ! gpus=$(nvidia-smi -L 2>&1) || [ -z "$gpus" ]; then
  echo "skipped: no GPU (nvidia-smi -L failed: ${gpus:-no output})"; exit 0
fi
echo "GPU: $gpus"
failed=0
WORK=$(mktemp -d /tmp/gpuchk-XXXXXX)
cleanup() {  # only what this script started: the vLLM server and the Ray under $WORK
  [ -n "${VLLM_PID:-}" ] && kill "$VLLM_PID" 2>/dev/null
  for p in $(grep -l -a -s "$WORK/ray" /proc/[0-9]*/cmdline | cut -d/ -f3); do
    [ "$p" != "$$" ] && kill "$p" 2>/dev/null
  done
  sleep 2; rm -rf "$WORK"
}
trap cleanup EXIT

echo "== 1. FAISS GPU copy"
"$PY" - <<'EOF' || { echo "FAILED: faiss gpu"; failed=1; }
import time, numpy as np, faiss
if not hasattr(faiss, "StandardGpuResources") or faiss.get_num_gpus() < 1:
    raise SystemExit("no GPU FAISS: pip install 'behavior-rag[gpu]' (faiss-gpu-cu12)")
rng = np.random.default_rng(0)
x = rng.standard_normal((200_000, 384)).astype("f4"); x /= np.linalg.norm(x, axis=1, keepdims=True)
q = x[rng.choice(len(x), 1000, replace=False)] + 0.05 * rng.standard_normal((1000, 384)).astype("f4")
cpu = faiss.IndexFlatIP(384); cpu.add(x)
gpu = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, cpu)
t = time.perf_counter(); sc, ic = cpu.search(q, 10); tc = time.perf_counter() - t
gpu.search(q[:10], 10); t = time.perf_counter(); sg, ig = gpu.search(q, 10); tg = time.perf_counter() - t
same = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ic, ig)])
print(f"faiss: 200k x 384 flat, 1000 queries: cpu {tc*1e3:.1f} ms, gpu {tg*1e3:.1f} ms "
      f"({tc/tg:.1f}x); top-10 overlap {same:.4f}; max score diff {np.abs(sc-sg).max():.2e}")
assert same > 0.999, "GPU top-10 differs from CPU"
EOF

echo "== 2. vLLM on the GPU"
VLLM_PY=${VLLM_PY:-$( [ -x .cache/vllm-venv/bin/python ] && echo .cache/vllm-venv/bin/python || echo "$PY")}
PORT=${PORT:-8011}
MODEL_DIR=${MODEL_DIR:-$("$PY" -c "from behavior_rag.llm.local import hf_folder; from behavior_rag.settings import Settings; print(hf_folder('smollm2-135m', Settings().home / 'models'))")}
if [ -z "$MODEL_DIR" ] || [ ! -d "$MODEL_DIR" ]; then
  echo "FAILED: vllm: no model folder (set MODEL_DIR)"; failed=1
else
  "$VLLM_PY" -m vllm.entrypoints.openai.api_server --model "$MODEL_DIR" --served-model-name smollm2 \
    --host 127.0.0.1 --port "$PORT" --max-model-len 2048 --gpu-memory-utilization 0.3 \
    >"$WORK/vllm.log" 2>&1 &
  VLLM_PID=$!
  t0=$(date +%s); up=0
  while [ $(( $(date +%s) - t0 )) -lt 600 ] && kill -0 "$VLLM_PID" 2>/dev/null; do
    curl -sf "http://127.0.0.1:$PORT/v1/models" >/dev/null && { up=1; break; }; sleep 3
  done
  if [ $up = 1 ]; then
    echo "vllm: up after $(( $(date +%s) - t0 )) s"
    "$PY" - "$PORT" <<'EOF' || { echo "FAILED: vllm scoring"; failed=1; }
import sys, time
from behavior_rag.llm.vllm import VLLMBackend
from behavior_rag.types import ChatMessage
b = VLLMBackend(f"http://127.0.0.1:{sys.argv[1]}/v1", model="smollm2")
msgs = [ChatMessage(role="user", content="A shopper viewed 12 cheap discounted items and bought "
                    "the cheapest. Label: deal_hunter or brand_loyal?")]
t = time.perf_counter(); s = b.score_options(msgs, ["deal_hunter", "brand_loyal"])
print(f"vllm: scored 2 labels in {time.perf_counter() - t:.2f} s: {s}")
EOF
  else
    echo "FAILED: vllm did not come up in 600 s; log tail:"; tail -20 "$WORK/vllm.log"; failed=1
  fi
  kill "$VLLM_PID" 2>/dev/null; wait "$VLLM_PID" 2>/dev/null; VLLM_PID=
fi

echo "== 3. Ray GPU actors (batch embed --gpus 1)"
RAY=$(dirname "$PY")/ray
RPORT=$("$PY" -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])")
if "$RAY" start --head --port "$RPORT" --num-cpus 2 --num-gpus 1 --temp-dir "$WORK/ray" \
     --include-dashboard false --disable-usage-stats >"$WORK/ray.log" 2>&1; then
  "$PY" - "$WORK" "127.0.0.1:$RPORT" <<'EOF' || { echo "FAILED: ray gpu actors"; failed=1; }
import sys, numpy as np
from pathlib import Path
from behavior_rag.batch import batch_embed, shard_vectors
from behavior_rag.embed import get_embedder
from behavior_rag.ingest.store import open_store, write_store
from behavior_rag.render import render
from behavior_rag.settings import Settings
from behavior_rag.synth import generate
work, addr = Path(sys.argv[1]), sys.argv[2]
write_store(generate(2000, seed=5).sessions, work / "store")
s = Settings(home=work / "home")
r = batch_embed(work / "store", work / "emb", settings=s, ray_address=addr, workers=1, num_gpus=1)
print(f"ray gpu: {r.sessions} sessions in {r.seconds:.1f} s ({r.sessions_per_s:.0f}/s), "
      f"backend {r.embedder.backend}")
ids, v = shard_vectors(work / "emb")
st = open_store(work / "store")
here = get_embedder(s, cache=False).embed([render(x, settings=s) for x in st.get_many(ids)])
print(f"ray gpu: max abs diff vs in-process {np.abs(v - here).max():.2e}")
assert r.embedder.backend == "torch", "auto did not pick torch on CUDA in the actor"
EOF
else
  echo "FAILED: ray start"; tail -20 "$WORK/ray.log"; failed=1
fi
exit $failed
