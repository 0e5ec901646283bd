#!/bin/sh
# The worker package of the fan-out example: one task per forecast area.
# Its payload is {"area": N, "of": M}; a real worker would fetch and parse
# the area's forecast here.
area=$(sed -n 's/.*"area" *: *\([0-9]*\).*/\1/p' "$PAYLOAD_FILE")
echo "forecast area ${area:-?} done"
