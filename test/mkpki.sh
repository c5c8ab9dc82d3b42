#!/bin/sh
# test/mkpki.sh DIR: a throwaway PKI for the TLS tests (openssl CLI).
#
#   ca.pem ca.key            test CA ("natwrp test CA")
#   other-ca.pem             a second CA that signed nothing we serve
#   server.pem server.key    leaf for DNS:localhost, IP:127.0.0.1, signed by ca
#   chain.pem                server.pem followed by ca.pem (a PEM chain)
#   server2.pem server2.key  a second leaf for the same names (SIGHUP reload)
#   expired.pem expired.key  leaf for localhost whose validity ended in 2020
#   other.pem other.key      leaf for other.example only (hostname mismatch)
#   wrong.key                a key that matches none of the certificates
#
# Idempotent: does nothing when DIR/done exists. Keys are EC P-256 so the
# whole set takes well under a second.
set -eu
d=${1:?usage: mkpki.sh DIR}
[ -e "$d/done" ] && exit 0
mkdir -p "$d"
cd "$d"

key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

ca() { # name subject
    key "$1.key"
    openssl req -x509 -new -key "$1.key" -subj "/CN=$2" -days 3650 -sha256 \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" -out "$1.pem" 2>/dev/null
}

leaf() { # name san [start end]
    key "$1.key"
    openssl req -new -key "$1.key" -subj "/CN=natwrp test $1" -out "$1.csr" 2>/dev/null
    printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=%s\n' \
        "$2" >"$1.ext"
    if [ $# -ge 4 ]; then
        # A fixed validity window in the past needs the 'ca' command;
        # 'x509 -req' only counts days from now.
        mkdir -p cadb
        : >cadb/index.txt
        [ -e cadb/serial ] || echo 1000 >cadb/serial
        cat >cadb/ca.cnf <<CNF
[ ca ]
default_ca = tca
[ tca ]
dir = cadb
database = cadb/index.txt
new_certs_dir = cadb
serial = cadb/serial
default_md = sha256
policy = anything
unique_subject = no
[ anything ]
commonName = supplied
CNF
        openssl ca -batch -config cadb/ca.cnf -cert ca.pem -keyfile ca.key -in "$1.csr" \
            -startdate "$3" -enddate "$4" -extfile "$1.ext" -notext -out "$1.pem" 2>/dev/null
    else
        openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial \
            -days 825 -sha256 -extfile "$1.ext" -out "$1.pem" 2>/dev/null
    fi
    rm -f "$1.csr" "$1.ext"
}

ca ca "natwrp test CA"
ca other-ca "natwrp other CA"
leaf server "DNS:localhost,IP:127.0.0.1"
leaf server2 "DNS:localhost,IP:127.0.0.1"
leaf expired "DNS:localhost,IP:127.0.0.1" 20190101000000Z 20200101000000Z
leaf other "DNS:other.example"
key wrong.key
cat server.pem ca.pem >chain.pem
touch done
