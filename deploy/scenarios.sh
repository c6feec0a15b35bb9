#!/bin/sh
# Replays the federation scenarios in the docker-compose deployment (run from the
# repository root after `docker compose up -d --build`). Mirrors the integration tests
# daemon/tests/federation_{forwarding,confidentiality,deletion}.rs.
#
#   deploy/scenarios.sh [forwarding|confidentiality|deletion|all]
#
# Exits non-zero at the first step that does not behave as expected.
set -eu

A=172.28.0.2
B=172.28.0.3
C=172.28.0.4
PORT=9000

on() { node=$1; shift; docker compose exec -T "$node" "$@"; }
step() { printf '\n== %s\n' "$*"; }
expect_denied() {
    if "$@"; then echo "expected a denial: $*" >&2; exit 1; fi
    echo "(denied, as expected)"
}

# transfer FROM_NODE FILE TO_NODE TO_ADDR SAVED: TO_NODE receives FILE from FROM_NODE.
transfer() {
    on "$3" sh -c "rm -f $5; (trace2e-proc recv $4:$PORT $5 >/dev/null 2>/tmp/recv.log &) ; sleep 1"
    rc=0
    on "$1" trace2e-proc send "$4:$PORT" "$2" || rc=$?
    sleep 1
    return "$rc"
}

forwarding() {
    step "forwarding: node-a writes a file, sends it to node-b, which forwards it to node-c"
    on node-a trace2e-proc write /data/original.txt "payload from node-a"
    transfer node-a /data/original.txt node-b "$B" /data/from-a.txt
    transfer node-b /data/from-a.txt node-c "$C" /data/from-b.txt
    step "provenance of node-c's copy: node-a's file, node-a's and node-b's processes"
    on node-c trace2e provenance /data/from-b.txt
}

confidentiality() {
    step "confidentiality: node-a marks its original secret after the copies exist"
    on node-a trace2e policy set /data/original.txt --confidentiality secret
    step "node-c can no longer pass its copy on (to node-b, or to anything else)"
    expect_denied transfer node-c /data/from-b.txt node-b "$B" /data/back.txt
    step "node-a's own local copies still work"
    on node-a trace2e-proc cp /data/original.txt /data/local-copy.txt
    step "public again: the flow is allowed"
    on node-a trace2e policy set /data/original.txt --confidentiality public
    transfer node-c /data/from-b.txt node-b "$B" /data/back.txt
}

deletion() {
    step "deletion: node-a deletes its original; the peers learn it by broadcast"
    on node-a trace2e delete /data/original.txt
    for n in node-a node-b node-c; do
        src=/data/from-b.txt
        [ "$n" = node-a ] && src=/data/local-copy.txt
        [ "$n" = node-b ] && src=/data/from-a.txt
        step "$n: data derived from it is denied"
        expect_denied on "$n" trace2e-proc cp "$src" /data/again.txt
    done
    step "unrelated data still flows"
    on node-c trace2e-proc write /data/unrelated.txt "fresh"
    transfer node-c /data/unrelated.txt node-a "$A" /data/unrelated.txt
    on node-b trace2e audit --decision denied --limit 5
}

case "${1:-all}" in
    forwarding) forwarding ;;
    confidentiality) confidentiality ;;
    deletion) deletion ;;
    all) forwarding; confidentiality; deletion ;;
    *) echo "usage: $0 [forwarding|confidentiality|deletion|all]" >&2; exit 2 ;;
esac
echo "ok"
