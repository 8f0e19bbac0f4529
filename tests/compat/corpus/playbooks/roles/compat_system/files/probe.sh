#!/bin/sh
# a script module run: prints what it sees
echo "probe on $(hostname)"
