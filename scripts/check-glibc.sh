#!/usr/bin/env bash
# Fails when an ELF binary needs a glibc symbol version newer than the limit (default 2.34, the
# glibc of AWS Lambda's provided.al2023 runtime); prints the newest version it needs.
#
#   scripts/check-glibc.sh BINARY [MAX_VERSION]
set -euo pipefail

binary=${1:?usage: check-glibc.sh BINARY [MAX_VERSION]}
limit=${2:-2.34}

# Versioned symbols the binary imports look like `memcpy@GLIBC_2.14 (3)`.
needed=$(readelf --dyn-syms --wide "$binary" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -u -V)
if [ -z "$needed" ]; then
    echo "$binary: links no glibc symbol (static?)" >&2
    exit 1
fi
newest=$(tail -n 1 <<<"$needed")
if [ "$(printf '%s\n%s\n' "$newest" "$limit" | sort -V | tail -n 1)" != "$limit" ]; then
    echo "$binary needs glibc $newest, newer than $limit:" >&2
    readelf --dyn-syms --wide "$binary" | grep -F "GLIBC_$newest " >&2
    exit 1
fi
echo "$binary: newest glibc symbol version $newest (limit $limit)"
