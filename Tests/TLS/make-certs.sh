#!/usr/bin/env bash
# Makes throwaway test certificates in $1 with the openssl command (P-256 keys):
#   ca.pem/ca.key            a test CA
#   server.pem/server.key    signed by it, for localhost and 127.0.0.1 (chain: leaf then CA)
#   expired.pem/expired.key  signed by it, valid only in January 2020
#   client.pem/client.key    a client certificate signed by it
#   ca2.pem, server2.pem/server2.key   a second CA and a server certificate from it (reload tests)
#   sni.pem/sni.key          from the second CA, for other.test and *.wild.test (SNI tests)
set -euo pipefail
dir=$1
mkdir -p "$dir"
cd "$dir"
[ -f done-2 ] && exit 0
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
ca() { # name subject
    key "$1.key"
    openssl req -x509 -new -key "$1.key" -out "$1.pem" -days 30 -subj "/CN=$2" \
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
}
leaf() { # name ca san [extra x509 args...]
    local name=$1 issuer=$2 san=$3
    shift 3
    key "$name.key"
    openssl req -new -key "$name.key" -out "$name.csr" -subj "/CN=$name" 2>/dev/null
    printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth,clientAuth\n' "$san" > "$name.ext"
    openssl x509 -req -in "$name.csr" -CA "$issuer.pem" -CAkey "$issuer.key" -CAcreateserial -out "$name.crt" \
        -extfile "$name.ext" "$@" 2>/dev/null
    cat "$name.crt" "$issuer.pem" > "$name.pem"
}
ca ca "Petrel Test CA"
ca ca2 "Petrel Test CA 2"
leaf server ca "DNS:localhost,IP:127.0.0.1" -days 30
leaf server2 ca2 "DNS:localhost,IP:127.0.0.1" -days 30
leaf client ca "DNS:client.test" -days 30
leaf sni ca2 "DNS:other.test,DNS:*.wild.test" -days 30
# Expired: signed with the CA's config, dates in the past (openssl ca takes explicit dates).
key expired.key
openssl req -new -key expired.key -out expired.csr -subj "/CN=expired" 2>/dev/null
mkdir -p db && : > db/index.txt && echo 1000 > db/serial
cat > ca.cnf <<CNF
[ca]
default_ca = test
[test]
database = db/index.txt
serial = db/serial
new_certs_dir = db
default_md = sha256
policy = any
copy_extensions = none
x509_extensions = ext
[any]
commonName = supplied
[ext]
subjectAltName = DNS:localhost,IP:127.0.0.1
basicConstraints = CA:FALSE
CNF
openssl ca -batch -config ca.cnf -cert ca.pem -keyfile ca.key -in expired.csr -out expired.crt \
    -startdate 20200101000000Z -enddate 20200102000000Z -notext 2>/dev/null
cat expired.crt ca.pem > expired.pem
touch done-2
