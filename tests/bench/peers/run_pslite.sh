#!/bin/bash
# run_pslite.sh BIN: one scheduler, one server and one worker of pslite_bench on
# 127.0.0.1 (ps-lite's roles, as docs/BENCHMARKS.md describes). PSB_* variables
# pass through (PSB_KEYS, PSB_DIM, PSB_OPS, PSB_INFLIGHT, PSB_SECONDS, PSB_REPS).
BIN=${1:?usage: run_pslite.sh PATH_TO_pslite_bench}
export DMLC_NUM_SERVER=1 DMLC_NUM_WORKER=1
export DMLC_PS_ROOT_URI=127.0.0.1 DMLC_PS_ROOT_PORT=${PSB_PORT:-8123} DMLC_INTERFACE=lo
export DMLC_PS_VAN_TYPE=${DMLC_PS_VAN_TYPE:-zmq}
DMLC_ROLE=scheduler "$BIN" & SCHED=$!
DMLC_ROLE=server "$BIN" & SRV=$!
DMLC_ROLE=worker PSB_SERVER_PID=$SRV "$BIN"; RC=$?
wait $SCHED $SRV
exit $RC
