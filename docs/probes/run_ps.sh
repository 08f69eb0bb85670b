#!/bin/bash
# usage: TF_PYTHON=... docs/probes/run_ps.sh OUTDIR none|worker1|ps0 [STEPS] [DELAY]
# 1 chief, 1 ps, 2 workers on 127.0.0.1; optionally kill -9 one task after step 60.
OUT=$1; KILL=$2; STEPS=${3:-300}; DELAY=${4:-0}
PY=${TF_PYTHON:-python3}   # an interpreter with tensorflow-cpu 2.21
PROBE=$(dirname "$0")/tf_ps_probe.py
rm -rf $OUT; mkdir -p $OUT
read C P W0 W1 < <($PY -c "
import socket
ss=[socket.socket() for _ in range(4)]
[s.bind(('127.0.0.1',0)) for s in ss]
print(*[s.getsockname()[1] for s in ss])")
CLUSTER="{\"chief\":[\"127.0.0.1:$C\"],\"ps\":[\"127.0.0.1:$P\"],\"worker\":[\"127.0.0.1:$W0\",\"127.0.0.1:$W1\"]}"
start() { TF_CONFIG="{\"cluster\":$CLUSTER,\"task\":{\"type\":\"$1\",\"index\":$2}}" OMP_NUM_THREADS=1 $PY $PROBE $STEPS $DELAY > $OUT/$1$2.log 2>&1 & echo $! > $OUT/$1$2.pid; }
start ps 0; start worker 0; start worker 1; start chief 0
T0=$(date +%s.%N)
if [ "$KILL" != none ]; then
  until grep -q "scheduled=60" $OUT/chief0.log 2>/dev/null; do sleep 0.2; kill -0 $(cat $OUT/chief0.pid) 2>/dev/null || break; done
  echo "killing $KILL at $(echo "$(date +%s.%N) - $T0" | bc) s"; kill -9 $(cat $OUT/${KILL/[0-9]/}${KILL//[a-z]/}.pid)
fi
wait $(cat $OUT/chief0.pid); echo "chief rc=$? after $(echo "$(date +%s.%N) - $T0" | bc) s"
grep "\[probe\]" $OUT/chief0.log | tail -6
for r in ps0 worker0 worker1; do kill -9 $(cat $OUT/$r.pid) 2>/dev/null; done; wait 2>/dev/null
