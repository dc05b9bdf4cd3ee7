#!/usr/bin/env bash
# A SLURM array job: each task makes one shard of the dataset; no coordinator, and no two tasks write the same
# file. Edit the paths and resources, then:   sbatch scripts/cluster/slurm_array.sh
# When every task has ended:   .venv/bin/python scripts/batch_dataset.py merge --out "$OUT"
# A task that died (node lost, time limit) is finished by running the same array index again.
#SBATCH --job-name=triface-dataset
#SBATCH --array=0-15
#SBATCH --cpus-per-task=8
#SBATCH --mem=24G
#SBATCH --gres=gpu:1
#SBATCH --time=24:00:00
#SBATCH --output=logs/triface-%A_%a.out
set -euo pipefail
cd "${TRIFACE_ROOT:-$HOME/triface}"
IMAGES=${IMAGES:-/shared/photos}
OUT=${OUT:-/shared/datasets/faces-v1}   # a folder every node sees
# The shard comes from SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN, the count from SLURM_ARRAY_TASK_COUNT.
.venv/bin/python scripts/batch_dataset.py --images "$IMAGES" --out "$OUT" --config scripts/cluster/batch.toml \
    --device cuda --render-device GPU --progress jsonl
