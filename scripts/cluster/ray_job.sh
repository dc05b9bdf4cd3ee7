#!/usr/bin/env bash
# Run the batch on an existing Ray cluster: one driver, the items as Ray tasks, one GPU per Blender worker.
# Every node needs this repository set up at the same path (bash scripts/setup.sh) and the output folder shared.
#   RAY_ADDRESS=http://head:8265 bash scripts/cluster/ray_job.sh
# The driver's own progress and report land in OUT; resubmitting the same job finishes a stopped one.
set -euo pipefail
cd "$(dirname "$0")/../.."
ray job submit --address "${RAY_ADDRESS:?set RAY_ADDRESS to the cluster's dashboard address}" \
    --working-dir . --runtime-env-json '{"excludes": [".venv", "out", "bench"]}' -- \
    "$PWD/.venv/bin/python" scripts/batch_dataset.py --images "${IMAGES:-/shared/photos}" \
    --out "${OUT:-/shared/datasets/faces-v1}" --config scripts/cluster/batch.toml \
    --ray auto --ray-gpus 1 --ray-cpus 4 --device cuda --render-device GPU --progress jsonl
