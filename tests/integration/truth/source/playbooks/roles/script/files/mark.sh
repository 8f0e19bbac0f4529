#!/bin/sh
[ -f /srv/case/script.txt ] || echo made-by-script > /srv/case/script.txt
