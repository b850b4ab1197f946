#!/usr/bin/env bash
# Checks every record of this peerwatch evidence bundle with openssl only (see README.md).
# Exit status 0 when all records verify; prints the first failures otherwise.
set -u
cd "$(dirname "$0")" || exit 2
hex2bin() { printf '%b' "$(printf '%s' "$1" | sed 's/../\\x&/g')"; }
work=$(mktemp -d) || exit 2
trap 'rm -rf "$work"' EXIT
n=0; bad=0; prev_sensor=""; prev_seq=""; prev_link=""
while IFS= read -r rec <&3 && IFS=$'\t' read -r sensor seq plink link sig <&4; do
  n=$((n + 1))
  printf '%s' "$rec" > "$work/record.bin"
  hex2bin "$plink" > "$work/prev.bin"
  hex2bin "$link" > "$work/link.bin"
  hex2bin "$sig" > "$work/sig.bin"
  if [ "$sensor" = "$prev_sensor" ] && [ "$seq" = "$((prev_seq + 1))" ] && [ "$plink" != "$prev_link" ]; then
    echo "record $sensor/$seq: does not chain to record $prev_seq"; bad=$((bad + 1))
  fi
  openssl dgst -sha256 -binary "$work/record.bin" > "$work/record.hash"
  if ! cat "$work/prev.bin" "$work/record.hash" | openssl dgst -sha256 -binary | cmp -s - "$work/link.bin"; then
    echo "record $sensor/$seq: content does not match its link"; bad=$((bad + 1))
  fi
  if ! openssl pkeyutl -verify -pubin -inkey "keys/$sensor.pem" -rawin -in "$work/link.bin" \
      -sigfile "$work/sig.bin" > /dev/null 2>&1; then
    echo "record $sensor/$seq: bad signature"; bad=$((bad + 1))
  fi
  prev_sensor=$sensor; prev_seq=$seq; prev_link=$link
done 3< records.jsonl 4< <(tail -n +2 chain.tsv)
echo "$n records checked, $bad problems"
[ "$bad" -eq 0 ] && [ "$n" -gt 0 ]
