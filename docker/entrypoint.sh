#!/bin/sh
# Entry point of the newtonrewards images: `docker run IMAGE train sft ...` runs a newtonrewards verb; any other
# command runs as given (`docker run IMAGE accelerate launch --config_file ... -m newtonrewards train sft ...`).
set -e
: "${OMP_NUM_THREADS:=1}"  # one thread per process unless told otherwise: tiny models and many ranks per node
export OMP_NUM_THREADS
case "${1:-}" in
  bench | proxies | score | eval | generate | train | demo | --help | -h | --version)
    exec newtonrewards "$@" ;;
esac
exec "$@"
