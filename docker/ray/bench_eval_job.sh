#!/bin/bash
# The Ray side of the project on a running Ray cluster: NewtonBench generation, reference features and evaluation
# as Ray jobs (one task per clip, spread over the cluster's CPUs). Every node needs the package (e.g. the image of
# docker/Dockerfile.cpu) and the same view of DATA (a shared filesystem); `--ray-address auto` makes each command join
# the cluster it runs in instead of starting a local Ray.
#
#   ray start --head --port 6379       # on the head node; `ray start --address HEAD:6379` on the others
#   RAY_ADDRESS=http://HEAD:8265 DATA=/data VIDEOS=/data/gen/wan-rw docker/ray/bench_eval_job.sh
#
# Environment: RAY_ADDRESS (the dashboard address jobs are submitted to), DATA (shared folder), PRESET (full),
# VIDEOS (generated clips to evaluate, e.g. written by `accelerate launch -m newtonrewards generate`; empty: skip eval).
set -euo pipefail

: "${RAY_ADDRESS:?set RAY_ADDRESS to the cluster dashboard, e.g. http://head:8265}"
: "${DATA:?set DATA to a folder every node sees}"
PRESET=${PRESET:-full}
BENCH=$DATA/nb-$PRESET
export RAY_ADDRESS

submit() { ray job submit --address "$RAY_ADDRESS" -- "$@"; }

submit newtonrewards bench generate --preset "$PRESET" --out "$BENCH" --ray-address auto
submit newtonrewards proxies extract --bench "$BENCH" --split train --ray-address auto
if [[ -n ${VIDEOS:-} ]]; then
  submit newtonrewards eval --bench "$BENCH" --split test --videos "$VIDEOS" --out "$VIDEOS-eval" --ray-address auto
fi
