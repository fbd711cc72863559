#!/bin/bash
# The CUDA checks in one run on a GPU machine (the `device` tool lends one for minutes, so they run back to back):
#   1. the trainer on CUDA: ResNet-50 on real JPEGs, bf16 autocast, channels_last, --compile; artifact and metric lines checked
#   2. python -m bench gpu (synthetic, real JPEGs decoded on the GPU and on the CPU)
#   3. the same training under torchrun on one GPU (NCCL)
#   4. the test suite's training tests, which run on CUDA where there is one
# Usage (repo root): OUT=folder FASHION_MNIST_DIR=folder-with-the-4-gz-files bash bench/gpu_check.sh
# Logs and results go to $OUT (train_cuda.log, bench_gpu.log, torchrun.log, tests.log, summary.txt, bench/...).
set -u
export PYTHONUNBUFFERED=1 PYTHON=${PYTHON:-python3}
OUT=${OUT:-/tmp/gpu-check}
WORK=$(mktemp -d)
mkdir -p "$OUT"
SUMMARY="$OUT/summary.txt"

step() {  # step NAME SECONDS COMMAND...: run with a time box, log to $OUT/NAME.log, one summary line
    local name=$1 seconds=$2 t0=$SECONDS rc
    shift 2
    timeout "$seconds" "$@" > "$OUT/$name.log" 2>&1
    rc=$?
    echo "$name: exit $rc in $((SECONDS - t0)) s" | tee -a "$SUMMARY"
    tail -n 12 "$OUT/$name.log"
}

{ nvidia-smi -L; $PYTHON -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__, torch.cuda.get_device_name())"; } | tee -a "$SUMMARY"

$PYTHON - "$WORK/data" <<'PY'
"""3,000 train, 500 valid and 500 test real Fashion-MNIST photos as 256 px JPEGs (ImageFolder channels)."""
import io, sys
from pathlib import Path
sys.path.insert(0, "tests")
import fashion_mnist
from PIL import Image
images, labels = fashion_mnist.load("train")
root = Path(sys.argv[1])
for split, lo, hi in (("train", 0, 3000), ("valid", 3000, 3500), ("test", 3500, 4000)):
    for i in range(lo, hi):
        folder = root / split / fashion_mnist.CLASSES[labels[i]]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[i]).convert("RGB").resize((256, 256), Image.BICUBIC).save(folder / f"{i:05d}.jpg", quality=90)
print("wrote", root)
PY

TRAIN_ARGS=(--model resnet50 --pretrained none --image-size 224 --batch-size 128 --amp bf16 --channels-last true --compile true
            --debugger-rules none --workers 8 --train "$WORK/data/train" --valid "$WORK/data/valid" --test "$WORK/data/test")
check_artifact() {  # check_artifact OPT_ML LOG: model.json + model.onnx written, metric lines printed
    $PYTHON - "$1" "$2" <<'PY' | tee -a "$SUMMARY"
import json, re, sys
from pathlib import Path
model, log = Path(sys.argv[1]) / "model", Path(sys.argv[2]).read_text()
info = json.loads((model / "model.json").read_text())
lines = [l for l in log.splitlines() if re.match(r"^epoch=\d+ ", l)]
test = [l for l in log.splitlines() if "test_acc=" in l]
print(f"  artifact: {sorted(p.name for p in model.iterdir())}; {info.get('architecture')}, {len(info['classes'])} classes")
print(f"  metric lines: {len(lines)} epochs, last: {lines[-1] if lines else None}; test: {test[-1] if test else None}")
PY
}

SAGEMAKER_BASE_DIR="$WORK/opt_ml_cuda" step train_cuda 170 $PYTHON -m train "${TRAIN_ARGS[@]}" --epochs 2
check_artifact "$WORK/opt_ml_cuda" "$OUT/train_cuda.log"

BENCH_OUT="$OUT/bench" step bench_gpu 170 $PYTHON -m bench gpu --photos 3000 --steps 30 --warmup 15 --reps 2

SAGEMAKER_BASE_DIR="$WORK/opt_ml_ddp" step torchrun 120 $PYTHON -m torch.distributed.run --standalone --nproc_per_node 1 -m train "${TRAIN_ARGS[@]}" --epochs 1
check_artifact "$WORK/opt_ml_ddp" "$OUT/torchrun.log"
grep -m2 -i "nccl\|world size\|rank" "$OUT/torchrun.log" | tee -a "$SUMMARY"

step tests 80 $PYTHON -m pytest -q -p no:cacheprovider tests/test_training.py tests/test_resume.py tests/test_distributed.py --maxfail 5
echo "total ${SECONDS} s" | tee -a "$SUMMARY"
