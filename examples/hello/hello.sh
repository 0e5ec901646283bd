#!/bin/sh
# A code package for kiln's hosted runner: it reads its payload file (the
# path comes in PAYLOAD_FILE, and as -payload among its arguments) and greets.
name=$(sed -n 's/.*"name" *: *"\([^"]*\)".*/\1/p' "$PAYLOAD_FILE")
echo "Hello ${name:-world}!"
