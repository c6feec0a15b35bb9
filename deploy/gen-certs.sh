#!/bin/sh
# Generates an M2M certificate authority and one certificate per node, for trace2ed's
# --m2m-tls-cert/--m2m-tls-key/--m2m-tls-ca (mutual TLS between nodes).
#
#   deploy/gen-certs.sh OUTDIR NODE...
#
# Writes OUTDIR/ca.pem (give it to every node), OUTDIR/NODE.pem and OUTDIR/NODE.key. A
# node's certificate names the node (DNS name = node name): peers check that name when
# they connect, so the node names here must be those given to --node and --peer.
set -eu
[ $# -ge 2 ] || { echo "usage: $0 OUTDIR NODE..." >&2; exit 2; }
out=$1
shift
mkdir -p "$out"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
    -keyout "$out/ca.key" -out "$out/ca.pem" -subj "/CN=trace2e M2M CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
for node in "$@"; do
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -keyout "$out/$node.key" -out "$out/$node.csr" -subj "/CN=$node" 2>/dev/null
    printf 'subjectAltName=DNS:%s\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n' \
        "$node" >"$out/$node.ext"
    openssl x509 -req -in "$out/$node.csr" -CA "$out/ca.pem" -CAkey "$out/ca.key" -CAcreateserial \
        -days 825 -out "$out/$node.pem" -extfile "$out/$node.ext" 2>/dev/null
    rm -f "$out/$node.csr" "$out/$node.ext"
done
chmod 600 "$out"/*.key
echo "wrote $out/ca.pem and a certificate and key per node: $*"
